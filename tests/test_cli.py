"""The command line's own promises: `imago sql` stays light (no orchestrator, no OCR engine, no TensorFlow)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

HEAVY = ("dagster", "pytesseract", "tensorflow", "keras", "fastapi")


def test_imago_sql_tables_imports_neither_dagster_nor_tesseract_nor_tensorflow(tmp_path):
    probe = (
        "import json, sys\n"
        "from typer.testing import CliRunner\n"
        "from imago_pipeline.cli import app\n"
        "result = CliRunner().invoke(app, ['sql', '--tables'])\n"
        "project = [m for m in sys.modules if m.split('.')[0] in ('imago_pipeline', 'imago_api', 'training')]\n"
        f"print(json.dumps({{'exit': result.exit_code, 'output': result.output, 'heavy': [m for m in {HEAVY!r} "
        "if m in sys.modules], 'project_modules': len(project), 'modules': len(sys.modules)}))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True,
                          env={"PATH": "/usr/bin:/bin", "IMAGO_HOME": str(tmp_path / "imago")})
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["exit"] == 0 and "exif" in report["output"] and "classification" in report["output"]
    assert report["heavy"] == []
    print(f"\nimago sql --tables: {report['project_modules']} project modules, {report['modules']} modules in all")
