"""OCR accuracy against ground truth: character error rate for line images, word recall for pages.

Page ground truth follows the annotators' zone order, not the reading order, so pages are compared as bags
of words (order-insensitive recall). Shared by the accuracy test, `bench/ocr_accuracy.py` and the docs.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Sample:
    image: Path
    truth: str
    granularity: str  # line | page
    subset: str


@dataclass(frozen=True)
class Score:
    sample: Sample
    ours: float
    plain: float
    ours_seconds: float
    plain_seconds: float


def load_samples(root: Path) -> list[Sample]:
    """The OCR set described by `root/manifest.csv` (paths there are relative to the data root)."""
    samples = []
    with (root / "manifest.csv").open() as handle:
        for row in csv.DictReader(handle):
            image = root / Path(row["image"]).relative_to("shared/data/ocr")
            truth = (root / Path(row["gt"]).relative_to("shared/data/ocr")).read_text()
            samples.append(Sample(image, truth, row["granularity"], image.parent.name))
    return samples


def plain_tesseract(image: Path, languages: str) -> str:
    return subprocess.run(["tesseract", str(image), "-", "-l", languages], capture_output=True, text=True,  # noqa: S603, S607  (the tesseract program, the baseline measured against)
                          env={**os.environ, "OMP_THREAD_LIMIT": "1"}, timeout=300).stdout


def _score(job: tuple[Sample, str]) -> Score:
    sample, languages = job
    metric = character_error_rate if sample.granularity == "line" else word_recall
    started = time.perf_counter()
    ours = ocr_image(sample.image.read_bytes(), languages=languages).text
    middle = time.perf_counter()
    plain = plain_tesseract(sample.image, languages)
    done = time.perf_counter()
    return Score(sample, metric(sample.truth, ours), metric(sample.truth, plain), middle - started, done - middle)


def evaluate(samples: list[Sample], languages: str = "eng+fra", workers: int = os.cpu_count() or 1) -> list[Score]:
    return map_in_processes(_score, [(s, languages) for s in samples], workers)


def summarise(scores: list[Score]) -> dict[str, dict[str, float]]:
    """Per subset: the metric's mean for ours and plain, and mean seconds per image."""
    groups: dict[str, list[Score]] = defaultdict(list)
    for score in scores:
        groups[score.sample.subset].append(score)
    summary: dict[str, dict[str, Any]] = {}
    for subset, group in sorted(groups.items()):
        n = len(group)
        summary[subset] = {
            "metric": "CER" if group[0].sample.granularity == "line" else "word recall",
            "images": n,
            "ours": sum(s.ours for s in group) / n,
            "plain": sum(s.plain for s in group) / n,
            "ours_s": sum(s.ours_seconds for s in group) / n,
            "plain_s": sum(s.plain_seconds for s in group) / n,
        }
    return summary
