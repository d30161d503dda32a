"""`imago exif`, `imago ocr`, `imago classify`: one file (or a folder) at a time, nothing stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from imago_pipeline.cli.app import app, console
from imago_pipeline.core.config import ImagoSettings


@app.command()
def exif(file: Path, as_json: Annotated[bool, typer.Option("--json", help="One JSON object")] = False) -> None:
    """Print the EXIF record of one image file, with the place and time zone of its GPS position and its
    capture time in UTC (null for absent fields; nothing leaves the machine)."""
    from imago_pipeline.core.enrichment.decode import InvalidImage
    from imago_pipeline.core.enrichment.exif import extract_exif
    from imago_pipeline.core.enrichment.places import place_fields

    settings = ImagoSettings()
    try:
        data = file.read_bytes()
        if len(data) > settings.max_upload_bytes:
            raise InvalidImage(f"{len(data)} bytes is over the limit of {settings.max_upload_bytes} bytes")
        record = extract_exif(data, max_pixels=settings.max_pixels).to_dict()
        record.update(place_fields([record])[0])
    except (OSError, InvalidImage) as exc:
        typer.echo(f"imago exif: {file}: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(record, ensure_ascii=False))
    else:
        table = Table(show_header=False)
        for key, value in record.items():
            table.add_row(key, "" if value is None else str(value))
        Console().print(table)

@app.command()
def ocr(
    file: Path,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object")] = False,
    languages: Annotated[str | None, typer.Option(help="Tesseract languages, e.g. eng+fra")] = None,
) -> None:
    """Print the text Tesseract reads in one image file."""
    from imago_pipeline.core.enrichment.decode import InvalidImage
    from imago_pipeline.core.enrichment.ocr import ocr_image

    settings = ImagoSettings()
    try:
        result = ocr_image(file.read_bytes(), languages=languages or settings.ocr_languages,
                           max_pixels=settings.max_pixels)
    except (OSError, InvalidImage) as exc:
        typer.echo(f"imago ocr: {file}: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps({"text": result.text, "confidence": result.confidence, "language": result.language,
                               "has_text": result.has_text}, ensure_ascii=False))
    else:
        typer.echo(result.text if result.has_text else "(no text found)")
        console.print(f"confidence {result.confidence}, language {result.language}, mode {result.mode}, "
                      f"rotation {result.rotation}")

@app.command()
def classify(path: Path, as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False) -> None:
    """Cat, dog or other (neither) for an image file, or every image under a folder (one JSON object per
    line), with what the backbone sees."""
    from imago_pipeline.core.catalog import Catalog
    from imago_pipeline.core.classifier import classify as classify_images
    from imago_pipeline.core.embedding.imagenet import class_tags
    from imago_pipeline.core.enrichment.decode import InvalidImage, inspect_image, sniff_media_type
    from imago_pipeline.core.stores.blobs import build_blob_store
    from training.registry import open_model_store

    settings = ImagoSettings()
    if not path.exists():
        typer.echo(f"imago classify: {path} does not exist", err=True)
        raise typer.Exit(2)
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and sniff_media_type(p.open("rb").read(16)))
    registry = open_model_store(Catalog.connect(settings.catalog_url), build_blob_store(settings),
                                settings.models_dir)
    failed = 0
    for start in range(0, len(files), 64):
        chunk, datas = [], []
        for file in files[start:start + 64]:
            try:
                data = file.read_bytes()
                inspect_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
                chunk.append(file)
                datas.append(data)
            except (OSError, InvalidImage) as exc:
                failed += 1
                typer.echo(f"imago classify: {file}: {exc}", err=True)
        if not datas:
            continue
        model, answers = classify_images(datas, registry, max_pixels=settings.max_pixels)
        for file, answer in zip(chunk, answers):
            p = answer.prediction
            content = list(dict.fromkeys(t for i, prob in answer.embedding.imagenet[:3] if prob >= 0.1
                                         for t in class_tags(i)))
            record = {"path": str(file), "label": p.label, "probability": round(p.probability, 4),
                      "probabilities": p.probabilities, "model_version": model.version, "content": content}
            typer.echo(json.dumps(record) if as_json else
                       f"{file}\t{p.label}\t{p.probability:.3f}\t{model.version}\t{', '.join(content)}")
    if failed and path.is_file():
        raise typer.Exit(1)
