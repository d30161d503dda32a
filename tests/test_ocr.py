"""OCR with the real Tesseract on ../shared/data/ocr, against the plain `tesseract` command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from imago_pipeline.core.enrichment.ocr import ocr_image
from imago_pipeline.core.enrichment.ocr_eval import evaluate, load_samples, summarise
from tests.conftest import REPO, SAMPLES, shared

# Measured on this data (docs/ocr.md). CER: lower is better; word recall: higher is better.
THRESHOLDS = {
    "ocr17-xix": ("CER", 0.065),
    "uw3-lines": ("CER", 0.010),
    "tapuscorpus": ("word recall", 0.91),
    "tesseract-test": ("word recall", 0.97),
}


@pytest.fixture(scope="module")
def scores():
    return evaluate(load_samples(shared("ocr")))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_accuracy_meets_the_measured_thresholds_and_is_never_below_plain_tesseract(scores, capsys):
    summary = summarise(scores)
    with capsys.disabled():
        print("\nset              metric       ours    plain")
        for subset, row in summary.items():
            print(f"{subset:16} {row['metric']:12} {row['ours']:.4f}  {row['plain']:.4f}")
    assert set(summary) == set(THRESHOLDS)
    for subset, (metric, bound) in THRESHOLDS.items():
        row = summary[subset]
        assert row["metric"] == metric
        if metric == "CER":
            assert row["ours"] <= bound and row["ours"] <= row["plain"] + 1e-9, (subset, row)
        else:
            assert row["ours"] >= bound and row["ours"] >= row["plain"] - 1e-9, (subset, row)


@pytest.mark.slow
def test_rotated_page_reads_where_plain_tesseract_reads_nothing(scores):
    rotated = [s for s in scores if "rotated" in s.sample.image.name]
    assert rotated and all(s.ours >= 0.95 and s.plain <= 0.2 for s in rotated)


def test_page_gets_text_words_boxes_confidence_and_language():
    result = ocr_image((SAMPLES / "phototest.tif").read_bytes())
    assert result.has_text and result.mode == "page" and result.language == "en"
    assert "quick brown dog" in result.text
    assert 80 <= result.confidence <= 100
    first = result.words[0]
    assert first.width > 0 and first.height > 0 and first.text


def test_upside_down_page_is_turned_before_reading():
    result = ocr_image(shared("ocr", "tesseract-test", "phototest-rotated-180.png").read_bytes())
    assert result.rotation == 180 and "quick brown dog" in result.text


def test_french_page_is_identified_as_french():
    pages = sorted(shared("ocr", "tapuscorpus").glob("tapus_lettre*.jpg"))
    result = ocr_image(pages[0].read_bytes())
    assert result.has_text and result.language == "fr"


def test_a_photo_without_text_costs_only_the_probe():
    photo = next(iter(sorted(shared("catsdogs", "val", "cat").glob("*.jpg"))))
    result = ocr_image(photo.read_bytes())
    assert result == result.__class__(text="", confidence=None, language=None, has_text=False, mode="probe")


def test_cli_prints_text_confidence_language_has_text():
    result = subprocess.run([sys.executable, "-m", "imago_pipeline", "ocr", str(SAMPLES / "eurotext.tif"), "--json"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert set(record) == {"text", "confidence", "language", "has_text"}
    assert record["has_text"] is True and "renard" in record["text"]
