"""OCR accuracy and speed on ../shared/data/ocr: our `ocr` vs the plain `tesseract` command.

    .venv/bin/python bench/ocr_accuracy.py [--data ../shared/data/ocr] [--details]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from imago_pipeline.core.enrichment.ocr_eval import evaluate, load_samples, summarise


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ocr")
    parser.add_argument("--details", action="store_true")
    args = parser.parse_args()
    scores = evaluate(load_samples(args.data))
    print("| set | images | metric | ours | plain tesseract | ours s/image | plain s/image |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for subset, row in summarise(scores).items():
        print(f"| {subset} | {row['images']} | {row['metric']} | {row['ours']:.4f} | {row['plain']:.4f} | "
              f"{row['ours_s']:.2f} | {row['plain_s']:.2f} |")
    if args.details:
        for score in scores:
            print(f"{score.sample.image.name:50} ours {score.ours:.3f}  plain {score.plain:.3f}")


if __name__ == "__main__":
    main()
