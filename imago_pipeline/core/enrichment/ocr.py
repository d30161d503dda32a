"""OCR with two engines, each on the text it reads best: Tesseract for pages and line strips, RapidOCR
(`scene_text.py`) for text in photos (signs, labels, posters).

How a file is read (see docs/ocr.md for the measurements behind each choice):
1. EXIF orientation is applied; Tesseract reads 8-bit grayscale, RapidOCR the colour image.
2. **Which engine?** A strip (height under 160 px and at least 4 times as wide as high) is a *line*; a
   page-like image (most pixels close to a light local background, a few percent much darker: ink on paper,
   computed on a 768 px copy in a few milliseconds) is a *page*; anything else is a *photo*.
   - Lines and pages go to Tesseract (steps 3 and 4). When it reads little or is unsure there (no confident
     word on a line; on a page, fewer than 10 confident words, as on a sign against a plain wall, which looks
     like a page, or a mean word confidence under 90, as on tables and typewriting), RapidOCR reads the
     image too, turned as OSD turned it, and its reading is kept when it has at least as many confident
     words (and at least one).
   - Photos go to RapidOCR only: its text detection is the probe. When it finds no confident word the image
     is recorded as `has_text = false, mode = probe` at the cost of detection alone.
   A confident word has 3 or more letters or digits and a confidence of 70 or more (both engines' scores are
   on Tesseract's 0-100 scale); an image has text when it has one.
3. **Orientation** (Tesseract): OSD finds pages turned by 90, 180 or 270 degrees; the page is rotated before
   recognition (plain `tesseract` reads an upside-down page as nothing).
4. **Layout** (Tesseract): a line strip is read as one line (`--psm 7`), upscaled when its height is under
   48 px; a page gets automatic page segmentation.
5. **Language**: both engines' text goes to py3langid, restricted to the configured languages (default
   `eng+fra`, which Tesseract also recognises with).

`ocr_image(..., engine="tesseract")` is the Tesseract-only reading (photos then get a fast Tesseract probe:
a sparse-text pass on a copy of at most 800 px, and a full pass only when it finds two confident words) and
`engine="rapidocr"` reads everything with RapidOCR; the benchmark compares the three.

Tesseract is run with OMP_THREAD_LIMIT=1 and RapidOCR with one onnxruntime thread: the pipeline runs one OCR
process per core instead (2.7x faster on 2 cores than Tesseract's own threading).
"""

from __future__ import annotations

import os
import re
import statistics
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pytesseract
from PIL import Image, ImageFilter, ImageOps

from imago_pipeline.core.enrichment.decode import open_image
from imago_pipeline.core.limits import MAX_PIXELS, OCR_LANGUAGES
from imago_pipeline.core.stores.scratch import scratch_dir

os.environ.setdefault("OMP_THREAD_LIMIT", "1")

TESSERACT_TO_ISO = {"eng": "en", "fra": "fr", "deu": "de", "spa": "es", "ita": "it", "por": "pt", "nld": "nl"}
OCR_LOGIC_VERSION = "ocr-v2"  # v2: photos read by RapidOCR, sparse pages and lines re-read by it
ENGINES = ("auto", "tesseract", "rapidocr")
PROBE_SIZE = 800
OSD_SIZE = 1600
MIN_OSD_CONFIDENCE = 1.0  # below this OSD is guessing
SURE_OSD_CONFIDENCE = 5.0  # turned test pages score 6 to 12; a dense upright table scored 1.02
# Formats Tesseract (leptonica) decodes itself: when nothing needs turning, it reads the original file, so
# its own decoder sees exactly what the plain `tesseract` command sees.
TESSERACT_READS = {"JPEG", "PNG", "TIFF"}
COLOUR_MODES = {"CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"}
MIN_PROBE_WORDS = 2
# Tesseract "reads little" below these confident-word counts; RapidOCR then reads the image too
SPARSE_WORDS = {"line": 1, "page": 10}
UNSURE_PAGE_CONFIDENCE = 90.0  # Tesseract's mean word confidence on a page under which RapidOCR reads it too
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
    mode: str = "page"  # page | line | scene (a photo) | probe (nothing worth a full reading was found)
    engine: str = "tesseract"  # tesseract | rapidocr: the engine whose reading this is

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


def _prepare(data: bytes, max_pixels: int) -> tuple[Image.Image, Image.Image, bool]:
    """The image upright (RGB, or L when it is gray; transparency flattened onto white), its 8-bit grayscale,
    and whether Tesseract may read the original bytes instead."""
    image = open_image(data, max_pixels)
    original_is_fine = _needs_no_transform(image)
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
    elif image.mode not in ("L", "RGB"):
        image = image.convert("RGB" if image.mode in COLOUR_MODES else "L")
    return image, image if image.mode == "L" else image.convert("L"), original_is_fine


def kind_of_image(gray: Image.Image) -> str:
    """line | page | photo: what decides the engine."""
    if is_text_line(gray):
        return "line"
    return "page" if looks_like_a_page(gray) else "photo"


def ocr_image(data: bytes, *, languages: str = OCR_LANGUAGES, max_pixels: int = MAX_PIXELS,
              engine: str = "auto") -> OcrResult:
    """The text of an image file. `engine`: `auto` (the routing of this module's docstring), `tesseract` or
    `rapidocr` (that engine alone)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown OCR engine {engine!r} (expected one of {ENGINES})")
    upright, gray, original_is_fine = _prepare(data, max_pixels)
    if engine == "rapidocr":
        return _scene(upright, languages)
    kind = kind_of_image(gray)
    if engine == "auto" and kind == "photo":
        return _scene(upright, languages)
    with scratch_dir("imago-ocr-") as tmp:
        original = Path(tmp) / "page"
        if original_is_fine:
            original.write_bytes(data)
        read = _tesseract(gray, str(original) if original_is_fine else None, languages, kind)
    if read is None:  # the Tesseract-only reading of a photo: its probe found nothing
        return OcrResult(text="", confidence=None, language=None, has_text=False, mode="probe")
    words, text, rotation, mode = read
    confident = _confident_words(words)
    if engine == "auto" and _reads_little(words, kind):
        # a second opinion, on the image as Tesseract saw it (turned upright by OSD)
        scene = _scene(upright.rotate(-rotation, expand=True) if rotation else upright, languages,
                       mode=mode, rotation=rotation)
        if _confident_words(scene.words) >= max(1, confident):
            return scene
    return _result(text, words, languages, rotation=rotation, mode=mode)


def _reads_little(words: list[OcrWord], kind: str) -> bool:
    """Tesseract reads little: fewer confident words than a line or a page has, or a page read with a mean
    confidence under 90 (tables, typewriting: where RapidOCR often reads better)."""
    if _confident_words(words) < SPARSE_WORDS[kind]:
        return True
    return kind == "page" and statistics.fmean(w.confidence for w in words) < UNSURE_PAGE_CONFIDENCE


def _scene(upright: Image.Image, languages: str, *, mode: str = "scene", rotation: int = 0) -> OcrResult:
    from imago_pipeline.core.enrichment.scene_text import read_scene_text

    words, text = read_scene_text(upright, languages)
    result = _result(text, words, languages, rotation=rotation, mode=mode, engine="rapidocr")
    if not result.has_text:  # like Tesseract's probe: nothing worth recording, not even a confidence
        return OcrResult(text="", confidence=None, language=None, has_text=False, mode="probe", engine="rapidocr")
    return result


def _tesseract(gray: Image.Image, original: str | None, languages: str,
               kind: str) -> tuple[list[OcrWord], str, int, str] | None:
    """Tesseract's reading (words, text, rotation applied, mode); None when the image is a photo and the
    probe finds fewer than two confident words."""
    if kind == "line":
        line = gray
        if gray.height < 48:
            scale = 48 / gray.height
            line, original = gray.resize((round(gray.width * scale), 48), Image.Resampling.LANCZOS), None
        words, text = _recognise(original or line, languages, psm=7, decoded=line)
        return words, text, 0, "line"
    if kind == "photo":
        probe = gray.copy()
        probe.thumbnail((PROBE_SIZE, PROBE_SIZE))
        if _confident_words(_tesseract_words(probe, languages, psm=11)) < MIN_PROBE_WORDS:
            return None
    rotation, confidence = detect_rotation(gray)
    if rotation == 0 or confidence < MIN_OSD_CONFIDENCE:
        words, text = _recognise(original or gray, languages, psm=3, decoded=gray)
        return words, text, 0, "page"
    words, text = _recognise(gray.rotate(-rotation, expand=True), languages, psm=3)
    if confidence < SURE_OSD_CONFIDENCE:
        # OSD is unsure (dense tables fool it): keep whichever reading finds more confident words
        as_is, as_is_text = _recognise(original or gray, languages, psm=3, decoded=gray)
        if _confident_words(as_is) >= _confident_words(words):
            return as_is, as_is_text, 0, "page"
    return words, text, rotation, "page"


def _result(text: str, words: list[OcrWord], languages: str, *, rotation: int, mode: str,
            engine: str = "tesseract") -> OcrResult:
    confidence = round(statistics.fmean(w.confidence for w in words), 2) if words else None
    has_text = bool(words) and _confident_words(words) >= 1
    return OcrResult(text=text if has_text else "", confidence=confidence,
                     language=identify_language(text, languages) if has_text else None, has_text=has_text,
                     words=words if has_text else [], rotation=rotation, mode=mode, engine=engine)


@lru_cache(maxsize=1)
def tesseract_version() -> str:
    """Part of the `ocr` asset's code version: a new Tesseract can read differently."""
    try:
        return str(pytesseract.get_tesseract_version())
    except (pytesseract.TesseractNotFoundError, OSError):
        return "missing"
