"""OCR accuracy against ground truth: character error rate for line images, word recall for pages and photos.

Page ground truth follows the annotators' zone order, not the reading order, so pages are compared as bags
of words (order-insensitive recall). Photos of signs (`shared/data/ocr-photos`) are scored the same way:
their labels are the street names in map form (title case, without the plate's other text), so the recall
is case-insensitive and order-insensitive, the fraction of ground-truth words found among the words read.

Each image can be read by several readers: `ours` (the routed OCR), `tesseract` and `rapidocr` (our OCR with
that engine alone), `plain` (the `tesseract` command: `--psm 3`, its default, or `--psm 11`, sparse text, for
photos) and `plain_rapidocr` (RapidOCR with its default settings on its bundled models). Shared by the
accuracy tests, `bench/ocr_accuracy.py` and the docs.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from rapidfuzz.distance import Levenshtein

from imago_pipeline.core.enrichment.ocr import ocr_image
from imago_pipeline.core.parallel import map_in_processes


def normalise(text: str) -> str:
    return " ".join(text.split())


def character_error_rate(truth: str, hypothesis: str) -> float:
    truth, hypothesis = normalise(truth), normalise(hypothesis)
    return Levenshtein.distance(truth, hypothesis) / max(1, len(truth))


def _bag(text: str) -> Counter:
    return Counter(re.findall(r"\w+", text.lower()))


def word_recall(truth: str, hypothesis: str) -> float:
    expected, found = _bag(truth), _bag(hypothesis)
    return sum(min(count, found[word]) for word, count in expected.items()) / max(1, sum(expected.values()))


READERS = ("ours", "tesseract", "rapidocr", "plain", "plain_rapidocr")
PHOTO_SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclass(frozen=True)
class Sample:
    image: Path
    truth: str
    granularity: str  # line | page | photo
    subset: str


@dataclass(frozen=True)
class Score:
    sample: Sample
    metric: dict[str, float]  # per reader
    seconds: dict[str, float]  # per reader

    @property
    def ours(self) -> float:
        return self.metric["ours"]

    @property
    def plain(self) -> float:
        return self.metric["plain"]


def load_samples(root: Path) -> list[Sample]:
    """The OCR set described by `root/manifest.csv` (paths there are relative to the data root)."""
    samples = []
    with (root / "manifest.csv").open() as handle:
        for row in csv.DictReader(handle):
            image = root / Path(row["image"]).relative_to("shared/data/ocr")
            truth = (root / Path(row["gt"]).relative_to("shared/data/ocr")).read_text()
            samples.append(Sample(image, truth, row["granularity"], image.parent.name))
    return samples


def load_photo_samples(root: Path) -> list[Sample]:
    """The photos of `root` (`NAME.png|jpg` with its `NAME.gt.txt`), as one subset named after the folder."""
    return [Sample(image, image.with_suffix(".gt.txt").read_text(), "photo", root.name)
            for image in sorted(root.iterdir())
            if image.suffix.lower() in PHOTO_SUFFIXES and image.with_suffix(".gt.txt").exists()]


def plain_tesseract(image: Path, languages: str, psm: int = 3) -> str:
    return subprocess.run(["tesseract", str(image), "-", "-l", languages, "--psm", str(psm)],  # noqa: S603, S607  (the tesseract program, the baseline measured against)
                          capture_output=True, text=True, env={**os.environ, "OMP_THREAD_LIMIT": "1"},
                          timeout=300).stdout


@lru_cache(maxsize=1)
def _plain_rapidocr() -> Any:
    """RapidOCR as it comes (its defaults resolve to the models in its wheel), quiet and on one thread like
    every other reader here."""
    from rapidocr import RapidOCR

    return RapidOCR(params={"Global.log_level": "error", "EngineConfig.onnxruntime.intra_op_num_threads": 1,
                            "EngineConfig.onnxruntime.inter_op_num_threads": 1})


def plain_rapidocr(image: Path) -> str:
    out = _plain_rapidocr()(str(image))
    return "\n".join(getattr(out, "txts", None) or ())


def read(reader: str, sample: Sample, languages: str) -> str:
    if reader == "plain":
        return plain_tesseract(sample.image, languages, psm=11 if sample.granularity == "photo" else 3)
    if reader == "plain_rapidocr":
        return plain_rapidocr(sample.image)
    return ocr_image(sample.image.read_bytes(), languages=languages,
                     engine="auto" if reader == "ours" else reader).text


def _score(job: tuple[Sample, str, tuple[str, ...]]) -> Score:
    sample, languages, readers = job
    metric = character_error_rate if sample.granularity == "line" else word_recall
    values, seconds = {}, {}
    for reader in readers:
        started = time.perf_counter()
        text = read(reader, sample, languages)
        seconds[reader] = time.perf_counter() - started
        values[reader] = metric(sample.truth, text)
    return Score(sample, values, seconds)


def evaluate(samples: list[Sample], languages: str = "eng+fra", workers: int = os.cpu_count() or 1,
             readers: tuple[str, ...] = ("ours", "plain")) -> list[Score]:
    unknown = set(readers) - set(READERS)
    if unknown:
        raise ValueError(f"unknown readers {sorted(unknown)} (expected some of {READERS})")
    return map_in_processes(_score, [(s, languages, readers) for s in samples], workers)


@dataclass(frozen=True)
class Reading:
    image: Path
    reader: str
    has_text: bool
    text: str
    seconds: float


def _read_for_text(job: tuple[Path, str, str]) -> Reading:
    image, reader, languages = job
    started = time.perf_counter()
    result = ocr_image(image.read_bytes(), languages=languages, engine="auto" if reader == "ours" else reader)
    return Reading(image, reader, result.has_text, result.text, time.perf_counter() - started)


def photos_without_text(images: list[Path], languages: str = "eng+fra", workers: int = os.cpu_count() or 1,
                        readers: tuple[str, ...] = ("ours", "tesseract")) -> list[Reading]:
    """Photos expected to hold no text (pets): whether each reader finds text, and how long it takes."""
    return map_in_processes(_read_for_text, [(image, r, languages) for r in readers for image in images], workers)


def summarise(scores: list[Score]) -> dict[str, dict[str, Any]]:
    """Per subset: the metric's name, the number of images, and per reader the metric's mean (key: the
    reader) and the mean seconds per image (key: reader + `_s`)."""
    groups: dict[str, list[Score]] = defaultdict(list)
    for score in scores:
        groups[score.sample.subset].append(score)
    summary: dict[str, dict[str, Any]] = {}
    for subset, group in sorted(groups.items()):
        n = len(group)
        row: dict[str, Any] = {"metric": "CER" if group[0].sample.granularity == "line" else "word recall",
                               "images": n}
        for reader in group[0].metric:
            row[reader] = sum(s.metric[reader] for s in group) / n
            row[f"{reader}_s"] = sum(s.seconds[reader] for s in group) / n
        summary[subset] = row
    return summary
