"""Scene text (signs, labels, posters) with RapidOCR: PP-OCRv6 detection and recognition run by onnxruntime.

The models ship inside the `rapidocr` wheel (`rapidocr/models/`): the engine is given their paths, so nothing
is downloaded at run time, and a missing file is an error instead of a download. The recognition model is
multilingual (its character set holds ç, é, è, à, œ, € and the other Latin accents).

How an image is read (see docs/ocr.md for the measurements behind each choice):
1. At most 2000 px per side (RapidOCR's own limit, reached here with Pillow's better resampling).
2. Two passes, one on the colour image and one on its luminance (a gray image is read once): text stands out
   in one and not the other (a small word on a coloured plate). The luminance pass runs only when the colour
   pass found a line, so an image without text costs one detection. Detection sees the image at its own size
   up to 960 px per side; smaller images are not upscaled (faster, and fewer false detections on texture).
3. The passes are merged line by line: of two lines that overlap (half of the smaller box), the one
   recognised with the higher score is kept; lines found by one pass only are kept. Lines scoring under 0.5
   are dropped (RapidOCR's default), and, when every configured language is written in Latin script, so are
   lines whose letters are mostly of another script (a Chinese character read in fur).
4. Lines are put in reading order (rows top to bottom, left to right in a row); each line's words get the
   line's score (0-100, Tesseract's scale) and a share of its quadrilateral proportional to their characters.

One engine per process, made on first use (importing RapidOCR takes over a second and loads OpenCV), with one
onnxruntime thread: the pipeline runs one OCR process per core.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import threading
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imago_pipeline.core.enrichment.ocr import OcrWord

MODEL_FILES = {"Det": "PP-OCRv6_det_small.onnx", "Cls": "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
               "Rec": "PP-OCRv6_rec_small.onnx"}
MAX_SIDE = 2000  # RapidOCR's own ceiling for the image it crops lines from
DETECTION_SIDE = 960  # detection input, longest side; never upscaled
MIN_LINE_SCORE = 0.5
SAME_LINE_OVERLAP = 0.5  # intersection over the smaller box
LATIN_SCRIPT_LANGUAGES = {"eng", "fra", "deu", "spa", "ita", "por", "nld"}


@dataclass(frozen=True)
class TextLine:
    text: str
    score: float  # 0-1
    quad: np.ndarray  # 4x2: top-left, top-right, bottom-right, bottom-left, in the image's pixels

    @property
    def rect(self) -> tuple[float, float, float, float]:
        return (float(self.quad[:, 0].min()), float(self.quad[:, 1].min()), float(self.quad[:, 0].max()),
                float(self.quad[:, 1].max()))


def models_dir() -> Path:
    """The models bundled in the installed wheel, found without importing rapidocr."""
    spec = importlib.util.find_spec("rapidocr")
    if spec is None or spec.origin is None:
        raise RuntimeError("rapidocr is not installed")
    return Path(spec.origin).parent / "models"


@lru_cache(maxsize=1)
def rapidocr_version() -> str:
    """Part of the `ocr` asset's code version (the models ship in the wheel, so its version names them)."""
    try:
        return importlib.metadata.version("rapidocr")
    except importlib.metadata.PackageNotFoundError:
        return "missing"


_engine_lock = threading.Lock()


def engine() -> Any:
    """This process's RapidOCR (made once, also when a warm-up thread and a reading ask at the same time)."""
    with _engine_lock:
        return _make_engine()


@lru_cache(maxsize=1)
def _make_engine() -> Any:
    """RapidOCR on the bundled models, one onnxruntime thread, quiet when it finds nothing."""
    from rapidocr import RapidOCR

    paths = {task: models_dir() / name for task, name in MODEL_FILES.items()}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise RuntimeError(f"rapidocr's bundled models are missing (nothing is downloaded): {missing}")
    params: dict[str, Any] = {f"{task}.model_path": str(path) for task, path in paths.items()}
    params.update({
        "Global.log_level": "error",
        "Global.text_score": MIN_LINE_SCORE,
        "Global.max_side_len": MAX_SIDE,
        "Det.limit_type": "max",
        "Det.limit_side_len": DETECTION_SIDE,
        "EngineConfig.onnxruntime.intra_op_num_threads": 1,
        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
    })
    return RapidOCR(params=params)


def _pass(pixels: np.ndarray, scale: float) -> list[TextLine]:
    out = engine()(pixels)
    txts, scores, boxes = getattr(out, "txts", None), getattr(out, "scores", None), getattr(out, "boxes", None)
    if not txts or scores is None or boxes is None:
        return []
    return [TextLine(text.strip(), float(score), np.asarray(box, dtype=np.float64) / scale)
            for text, score, box in zip(txts, scores, boxes) if text.strip()]


def _overlap(a: TextLine, b: TextLine) -> float:
    ax0, ay0, ax1, ay1 = a.rect
    bx0, by0, bx1, by1 = b.rect
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    smaller = min((ax1 - ax0) * (ay1 - ay0), (bx1 - bx0) * (by1 - by0))
    return inter / smaller if smaller > 0 else 0.0


def merge(passes: list[list[TextLine]]) -> list[TextLine]:
    """Best score first; a line is dropped when a kept line of another pass covers the same place."""
    kept: list[tuple[int, TextLine]] = []
    ranked = sorted(((i, line) for i, lines in enumerate(passes) for line in lines), key=lambda item: -item[1].score)
    for i, line in ranked:
        if all(j == i or _overlap(line, other) < SAME_LINE_OVERLAP for j, other in kept):
            kept.append((i, line))
    return [line for _, line in kept]


def mostly_latin(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    latin = sum(1 for c in letters if unicodedata.name(c, "").startswith("LATIN"))
    return not letters or latin * 2 >= len(letters)


def reading_order(lines: list[TextLine]) -> list[list[TextLine]]:
    """Rows top to bottom (a line joins a row when its vertical centre lies within the row's first line),
    each row left to right."""
    rows: list[list[TextLine]] = []
    for line in sorted(lines, key=lambda item: (item.rect[1] + item.rect[3]) / 2):
        centre = (line.rect[1] + line.rect[3]) / 2
        if rows and rows[-1][0].rect[1] <= centre <= rows[-1][0].rect[3]:
            rows[-1].append(line)
        else:
            rows.append([line])
    return [sorted(row, key=lambda item: item.rect[0]) for row in rows]


def line_words(line: TextLine) -> list[OcrWord]:
    """The line's words, each with the line's score (0-100) and the part of its quadrilateral that its
    characters span (interpolated along the top and bottom edges)."""
    words: list[OcrWord] = []
    n = max(1, len(line.text))
    top_left, top_right, bottom_right, bottom_left = line.quad
    position = 0
    for token in line.text.split():
        start = line.text.index(token, position)
        position = start + len(token)
        a, b = start / n, position / n
        corners = np.array([top_left + (top_right - top_left) * a, top_left + (top_right - top_left) * b,
                            bottom_left + (bottom_right - bottom_left) * a,
                            bottom_left + (bottom_right - bottom_left) * b])
        left, top = np.floor(corners.min(axis=0))
        right, bottom = np.ceil(corners.max(axis=0))
        words.append(OcrWord(token, round(line.score * 100, 2), max(0, int(left)), max(0, int(top)),
                             max(1, int(right - left)), max(1, int(bottom - top))))
    return words


def read_lines(image: Image.Image, languages: str) -> list[TextLine]:
    """The merged, filtered lines of an upright image (RGB or L), in the image's own pixels."""
    scale = 1.0
    if max(image.size) > MAX_SIDE:
        scale = MAX_SIDE / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
    luminance = np.asarray(image.convert("L"))
    if image.mode == "L":
        lines = _pass(luminance, scale)
    else:
        colour = _pass(np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1]), scale)
        lines = merge([colour, _pass(luminance, scale)]) if colour else []
    if set(languages.split("+")) <= LATIN_SCRIPT_LANGUAGES:
        lines = [line for line in lines if mostly_latin(line.text)]
    return lines


def read_scene_text(image: Image.Image, languages: str) -> tuple[list[OcrWord], str]:
    """Words with boxes and confidence (0-100), and the text: one line per row, lines of a row joined by a
    space."""
    rows = reading_order(read_lines(image, languages))
    words = [word for row in rows for line in row for word in line_words(line)]
    return words, "\n".join(" ".join(line.text for line in row) for row in rows)
