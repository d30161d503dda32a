"""`python -m training train --data DIR` and `python -m training evaluate --model FILE --data DIR`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from training.data import load_folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train_cmd = commands.add_parser("train", help="train a model on DIR/cat and DIR/dog")
    train_cmd.add_argument("--data", type=Path, required=True)
    train_cmd.add_argument("--eval-data", type=Path, help="evaluation folder (default: DIR/../val)")
    train_cmd.add_argument("--out", type=Path, default=Path("training/artifacts"))
    train_cmd.add_argument("--name", default="model")
    train_cmd.add_argument("--epochs", type=int)
    train_cmd.add_argument("--image-size", type=int)
    train_cmd.add_argument("--seed", type=int)
    eval_cmd = commands.add_parser("evaluate", help="evaluate a saved model on DIR/cat and DIR/dog")
    eval_cmd.add_argument("--model", type=Path, required=True)
    eval_cmd.add_argument("--data", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.command == "train":
        from training.model import ModelConfig
        from training.train import TrainConfig, train

        config = TrainConfig()
        if args.epochs:
            config = replace(config, epochs=args.epochs)
        if args.seed is not None:
            config = replace(config, seed=args.seed)
        if args.image_size:
            config = replace(config, model=replace(ModelConfig(), image_size=args.image_size))
        eval_dir = args.eval_data or args.data.parent / "val"
        result = train(load_folder(args.data), load_folder(eval_dir), args.out, config, name=args.name)
        print(json.dumps({"model": str(result.model_path), "card": str(result.card_path),
                          "curve": str(result.curve_path), "metrics": result.card["metrics"]}, indent=2))
        return 0

    from training.evaluate import metrics
    from training.predict import Classifier

    items = load_folder(args.data)
    classifier = Classifier(args.model)
    started = time.perf_counter()
    predictions = classifier.predict([i.data for i in items])
    seconds = time.perf_counter() - started
    import numpy as np

    result = metrics(np.array([i.label for i in items]), np.array([p.dog_probability for p in predictions]))
    result["predict_images_per_second"] = round(len(items) / seconds, 1)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
