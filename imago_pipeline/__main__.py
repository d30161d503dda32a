from imago_pipeline.cli import app

app(prog_name="imago")
