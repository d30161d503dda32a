"""The code version of each enrichment stage: its logic version and what else changes its output (the
Tesseract build, the RapidOCR release and the languages, the backbone and its preprocessing, the vision model
and prompt, the production classification head). A change makes
exactly the results made with the old version stale (`imago reprocess --stale`, `stale_reprocess_sensor`)."""

from __future__ import annotations

from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.core.embedding import encoder as embedding_encoder
from imago_pipeline.core.enrichment.exiftool import exiftool_version
from imago_pipeline.core.enrichment.ocr import OCR_LOGIC_VERSION, tesseract_version
from imago_pipeline.core.enrichment.places import places_version
from imago_pipeline.core.enrichment.scene_text import rapidocr_version
from imago_pipeline.core.vision.base import PROMPT_VERSION
from imago_pipeline.core.vision.factory import provider_model

EXIF_VERSION = "exif-v3"  # v2: ExifTool when installed; v3: places and time zones
THUMBNAIL_VERSION = "thumbnail-v1"
VISION_VERSION = "vision-v1"
CLASSIFY_VERSION = "classify-v2"  # v2: a head on the embedding, cat | dog | other
SUMMARY_VERSION = "image-summary-v1"


def exif_code_version() -> str:
    """The EXIF logic and its reader (ExifTool's version, or Pillow when ExifTool is not installed), and the
    place data (GeoNames cities, time-zone polygons)."""
    version = exiftool_version()
    return f"{EXIF_VERSION}|" + (f"exiftool-{version}" if version else "pillow") + f"|{places_version()}"


def ocr_code_version(settings: ImagoSettings) -> str:
    """The OCR logic (routing included), both engines (RapidOCR's version names the models in its wheel) and
    the languages."""
    return (f"{OCR_LOGIC_VERSION}|tesseract-{tesseract_version()}|rapidocr-{rapidocr_version()}|"
            f"{settings.ocr_languages}")


def vision_code_version(settings: ImagoSettings) -> str:
    return f"{VISION_VERSION}|{provider_model(settings)}|{PROMPT_VERSION}"


def classification_code_version(model_tag: str) -> str:
    return f"{CLASSIFY_VERSION}|{model_tag}"


def stage_code_versions(settings: ImagoSettings, production_model_tag: str) -> dict[str, str]:
    """Every stage's current code version; the classifier's follows the production model's tag."""
    return {"exif": exif_code_version(), "thumbnail": THUMBNAIL_VERSION, "ocr": ocr_code_version(settings),
            "embedding": embedding_encoder.code_version(),
            "classification": classification_code_version(production_model_tag),
            "vision": vision_code_version(settings)}
