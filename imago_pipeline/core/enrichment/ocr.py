"""OCR with Tesseract: upright pages, line strips, and a cheap pass for photos that hold no text.

How a file is read (see docs/ocr.md for the measurements behind each choice):
1. EXIF orientation is applied and the image goes to 8-bit grayscale.
2. **Is a full pass worth it?** A page-like image (mostly light background, strong dark/light contrast after
   an Otsu split, computed on a 512 px copy in a few milliseconds) always is. Anything else, photos above
   all, gets a *probe*: one fast Tesseract pass on a copy of at most 800 px in sparse-text mode. Only when the
   probe finds at least two confident words does the full pass run; otherwise the image is recorded as
   `has_text = false` at the probe's cost.
3. **Orientation**: Tesseract's OSD finds pages turned by 90, 180 or 270 degrees; the page is rotated
   before recognition (plain `tesseract` reads an upside-down page as nothing).
4. **Layout**: a strip (height under 160 px and at least 4 times as wide as high) is one text line
   (`--psm 7`), upscaled when its height is under 48 px; everything else is automatic page segmentation.
5. **Language**: Tesseract recognises with every configured language (default `eng+fra`); the language of
   the text is then identified by py3langid restricted to those languages.

Tesseract is run with OMP_THREAD_LIMIT=1: the pipeline runs one Tesseract per core instead (2.7x faster on
2 cores than Tesseract's own threading).
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pytesseract
from PIL import Image, ImageFilter, ImageOps

from imago_pipeline.core.enrichment.decode import open_image
from imago_pipeline.core.limits import MAX_PIXELS, OCR_LANGUAGES

os.environ.setdefault("OMP_THREAD_LIMIT", "1")

TESSERACT_TO_ISO = {"eng": "en", "fra": "fr", "deu": "de", "spa": "es", "ita": "it", "por": "pt", "nld": "nl"}
OCR_LOGIC_VERSION = "ocr-v1"
PROBE_SIZE = 800
OSD_SIZE = 1600
MIN_OSD_CONFIDENCE = 1.0  # below this OSD is guessing
SURE_OSD_CONFIDENCE = 5.0  # turned test pages score 6 to 12; a dense upright table scored 1.02
# Formats Tesseract (leptonica) decodes itself: when nothing needs turning, it reads the original file, so
# its own decoder sees exactly what the plain `tesseract` command sees.
TESSERACT_READS = {"JPEG", "PNG", "TIFF"}
MIN_PROBE_WORDS = 2
TESSERACT_TIMEOUT_S = 120


@dataclass(frozen=True)
class OcrWord:
    text: str
    confidence: float
    left: int
    top: int
    width: int
    height: int


@dataclass(frozen=True)
class OcrResult:
    text: str
    confidence: float | None  # mean word confidence, 0-100
    language: str | None  # ISO 639-1 of the text, among the configured languages
    has_text: bool
    words: list[OcrWord] = field(default_factory=list)
    rotation: int = 0  # degrees the page was turned (clockwise) before recognition
    mode: str = "page"  # page | line | probe (the probe found nothing worth a full pass)
    engine: str = "tesseract"

    def to_dict(self, *, with_words: bool = True) -> dict[str, Any]:
        data = asdict(self)
        if not with_words:
            data.pop("words")
        return data


def looks_like_a_page(gray: Image.Image) -> bool:
    """Paper with ink: most pixels sit close to the local background (a 7 px max filter removes thin dark
    strokes), and a few percent are much darker than it. Photos are textured; blank areas have no ink."""
    small = gray.copy()
    small.thumbnail((768, 768))
    pixels = np.asarray(small, dtype=np.int16)
    background = np.asarray(small.filter(ImageFilter.MaxFilter(7)), dtype=np.int16)
    ink = float(((background - pixels) > 60).mean())
    flat = float((np.abs(background - pixels) < 12).mean())
    return flat >= 0.74 and ink >= 0.02


def is_text_line(gray: Image.Image) -> bool:
    return gray.height < 160 and gray.width >= 4 * gray.height


def _recognise(image: Image.Image | str, languages: str, psm: int,
               decoded: Image.Image | None = None) -> tuple[list[OcrWord], str]:
    """One Tesseract pass (over an image or a file path): the words with boxes, and the text with its line
    and paragraph breaks. When leptonica cannot decode a file that Pillow could (a damaged JPEG segment),
    the pass is made over Pillow's `decoded` image instead."""
    try:
        data = pytesseract.image_to_data(image, lang=languages, config=f"--oem 1 --psm {psm}",
                                         output_type=pytesseract.Output.DICT, timeout=TESSERACT_TIMEOUT_S)
    except pytesseract.TesseractError:
        if isinstance(image, str) and decoded is not None:
            return _recognise(decoded, languages, psm)
        raise
    words: list[OcrWord] = []
    lines: dict[tuple[int, int, int], list[str]] = {}
    paragraph_of_line: dict[tuple[int, int, int], tuple[int, int]] = {}
    for i, text in enumerate(data["text"]):
        conf = float(data["conf"][i])
        if not text.strip() or conf < 0:
            continue
        words.append(OcrWord(text.strip(), conf, data["left"][i], data["top"][i], data["width"][i],
                             data["height"][i]))
        line = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
        lines.setdefault(line, []).append(text.strip())
        paragraph_of_line[line] = line[:2]
    out, previous = [], None
    for line, texts in lines.items():
        if previous is not None and paragraph_of_line[line] != previous:
            out.append("")
        out.append(" ".join(texts))
        previous = paragraph_of_line[line]
    return words, "\n".join(out)


def _tesseract_words(image: Image.Image, languages: str, psm: int) -> list[OcrWord]:
    return _recognise(image, languages, psm)[0]


def detect_rotation(gray: Image.Image) -> tuple[int, float]:
    """Clockwise degrees to turn the page upright and Tesseract's OSD confidence in it ((0, 0) when it
    cannot tell). OSD needs only a few dozen characters, so it reads a copy of at most 1600 px."""
    if max(gray.size) > OSD_SIZE:
        gray = gray.copy()
        gray.thumbnail((OSD_SIZE, OSD_SIZE))
    try:
        osd = pytesseract.image_to_osd(gray, config="--psm 0 -c min_characters_to_try=20",
                                       timeout=TESSERACT_TIMEOUT_S)
    except pytesseract.TesseractError:
        return 0, 0.0  # too little text to decide: leave the page as it is
    rotate = re.search(r"Rotate: (\d+)", osd)
    confidence = re.search(r"Orientation confidence: ([\d.]+)", osd)
    if not rotate or not confidence:
        return 0, 0.0
    return int(rotate.group(1)) % 360, float(confidence.group(1))


def _confident_words(words: list[OcrWord]) -> int:
    return sum(1 for w in words if w.confidence >= 70 and len(re.sub(r"\W", "", w.text)) >= 3)


@lru_cache(maxsize=4)
def _language_identifier(languages: str):
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    iso = [TESSERACT_TO_ISO[code] for code in languages.split("+") if code in TESSERACT_TO_ISO]
    if iso:
        identifier.set_languages(iso)
    return identifier, len(iso)


def identify_language(text: str, languages: str) -> str | None:
    letters = re.sub(r"[^\w]+", " ", text).strip()
    if len(letters) < 12:
        return None
    identifier, count = _language_identifier(languages)
    if count == 1:
        return next(TESSERACT_TO_ISO[c] for c in languages.split("+") if c in TESSERACT_TO_ISO)
    language, _probability = identifier.classify(letters)
    return language


def _needs_no_transform(image: Image.Image) -> bool:
    orientation = image.getexif().get(0x0112, 1)
    return image.format in TESSERACT_READS and orientation in (None, 1) and image.mode in ("1", "L", "RGB")


def _prepare(data: bytes, max_pixels: int) -> tuple[Image.Image, bool]:
    """Upright 8-bit grayscale, and whether Tesseract may read the original bytes instead."""
    image = open_image(data, max_pixels)
    original_is_fine = _needs_no_transform(image)
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("L"), original_is_fine


def ocr_image(data: bytes, *, languages: str = OCR_LANGUAGES, max_pixels: int = MAX_PIXELS) -> OcrResult:
    gray, original_is_fine = _prepare(data, max_pixels)
    with tempfile.TemporaryDirectory(prefix="imago-ocr-") as tmp:
        original = Path(tmp) / "page"
        if original_is_fine:
            original.write_bytes(data)
        return _ocr(gray, str(original) if original_is_fine else None, languages)


def _ocr(gray: Image.Image, original: str | None, languages: str) -> OcrResult:
    if is_text_line(gray):
        line = gray
        if gray.height < 48:
            scale = 48 / gray.height
            line, original = gray.resize((round(gray.width * scale), 48), Image.Resampling.LANCZOS), None
        words, text = _recognise(original or line, languages, psm=7, decoded=line)
        return _result(text, words, languages, rotation=0, mode="line")
    if not looks_like_a_page(gray):
        probe = gray.copy()
        probe.thumbnail((PROBE_SIZE, PROBE_SIZE))
        if _confident_words(_tesseract_words(probe, languages, psm=11)) < MIN_PROBE_WORDS:
            return OcrResult(text="", confidence=None, language=None, has_text=False, mode="probe")
    rotation, confidence = detect_rotation(gray)
    if rotation == 0 or confidence < MIN_OSD_CONFIDENCE:
        words, text = _recognise(original or gray, languages, psm=3, decoded=gray)
        return _result(text, words, languages, rotation=0, mode="page")
    words, text = _recognise(gray.rotate(-rotation, expand=True), languages, psm=3)
    if confidence < SURE_OSD_CONFIDENCE:
        # OSD is unsure (dense tables fool it): keep whichever reading finds more confident words
        as_is, as_is_text = _recognise(original or gray, languages, psm=3, decoded=gray)
        if _confident_words(as_is) >= _confident_words(words):
            return _result(as_is_text, as_is, languages, rotation=0, mode="page")
    return _result(text, words, languages, rotation=rotation, mode="page")


def _result(text: str, words: list[OcrWord], languages: str, *, rotation: int, mode: str) -> OcrResult:
    confidence = round(statistics.fmean(w.confidence for w in words), 2) if words else None
    has_text = bool(words) and _confident_words(words) >= 1
    return OcrResult(text=text if has_text else "", confidence=confidence,
                     language=identify_language(text, languages) if has_text else None, has_text=has_text,
                     words=words if has_text else [], rotation=rotation, mode=mode)


@lru_cache(maxsize=1)
def tesseract_version() -> str:
    """Part of the `ocr` asset's code version: a new Tesseract can read differently."""
    try:
        return str(pytesseract.get_tesseract_version())
    except (pytesseract.TesseractNotFoundError, OSError):
        return "missing"
