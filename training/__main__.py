"""`python -m training train|evaluate`: train a classification head on a labelled set, or evaluate one.

    python -m training train --data training/sets/train.csv --eval-data training/sets/validation.csv \\
        --out training/baseline --name head
    python -m training evaluate --model training/baseline/head.npz --data training/sets/validation.csv

A set is a folder with `cat/`, `dog/`, `other/` sub-folders or a CSV manifest (`training/data.py`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from training.data import load_set

DEFAULT_CACHE = Path(".imago/models/embeddings")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train_cmd = commands.add_parser("train", help="train a head on a labelled set")
    train_cmd.add_argument("--data", type=Path, required=True, help="training set (folder or .csv)")
    train_cmd.add_argument("--eval-data", type=Path, required=True, help="evaluation set, never trained on")
    train_cmd.add_argument("--out", type=Path, default=Path("training/artifacts"))
    train_cmd.add_argument("--name", default="head")
    train_cmd.add_argument("--epochs", type=int)
    train_cmd.add_argument("--hidden", type=int)
    train_cmd.add_argument("--seed", type=int)
    train_cmd.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="embedding cache folder")
    eval_cmd = commands.add_parser("evaluate", help="evaluate a head (.npz) on a labelled set")
    eval_cmd.add_argument("--model", type=Path, required=True)
    eval_cmd.add_argument("--data", type=Path, required=True)
    eval_cmd.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)

    if args.command == "train":
        from training.head import HeadConfig
        from training.train import TrainConfig, train

        config = TrainConfig()
        if args.epochs:
            config = replace(config, epochs=args.epochs)
        if args.seed is not None:
            config = replace(config, seed=args.seed)
        if args.hidden is not None:
            config = replace(config, head=replace(HeadConfig(), hidden=args.hidden))
        started = time.perf_counter()
        result = train(load_set(args.data), load_set(args.eval_data), args.out, config, name=args.name,
                       cache_dir=args.cache)
        print(json.dumps({"head": str(result.head_path), "keras": str(result.keras_path),
                          "card": str(result.card_path), "curve": str(result.curve_path),
                          "seconds": round(time.perf_counter() - started, 1), "metrics": result.card["metrics"]},
                         indent=2))
        return 0

    import numpy as np

    from imago_pipeline.core.embedding.head import Head
    from training.evaluate import metrics
    from training.features import embeddings

    items = load_set(args.data)
    head = Head.load(args.model)
    x = embeddings(items, args.cache)
    started = time.perf_counter()
    probabilities = head.probabilities(x)
    result = metrics(np.array([i.label for i in items]), probabilities)
    result["head_ms_per_1000_images"] = round((time.perf_counter() - started) * 1000 / len(items) * 1000, 2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
