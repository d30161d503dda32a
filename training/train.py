"""Train the CNN on a labelled folder (plus optional extra labelled images), with fixed seeds.

Model selection uses a slice of the training data (never the evaluation set), so the accuracy reported on
the evaluation folder is on photos the model has never seen in any way.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from training.data import LabelledImage, fingerprint, to_arrays
from training.evaluate import metrics
from training.model import CLASS_NAMES, ModelConfig, make_model

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 60
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    selection_share: float = 0.1  # of the training data, held out to pick the best epoch
    seed: int = 1337


@dataclass
class TrainResult:
    model_path: Path
    card_path: Path
    curve_path: Path
    card: dict


def _split(items: list[LabelledImage], share: float, seed: int) -> tuple[list, list]:
    """Stratified: the selection split has the classes in the training proportions, so a model that answers
    one class everywhere cannot look good on it and be picked as the best epoch."""
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for label in sorted({i.label for i in items}):
        group = [i for i in items if i.label == label]
        order = rng.permutation(len(group))
        cut = max(1, round(len(group) * share)) if share > 0 else 0
        held += [group[i] for i in order[:cut]]
        kept += [group[i] for i in order[cut:]]
    return kept, held


def train(train_items: list[LabelledImage], eval_items: list[LabelledImage], out_dir: Path,
          config: TrainConfig = TrainConfig(), *, name: str = "model", verbose: int = 1) -> TrainResult:
    import keras
    import tensorflow as tf

    from training.predict import dog_probabilities

    keras.utils.set_random_seed(config.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    size = config.model.image_size
    fit_items, select_items = _split(train_items, config.selection_share, config.seed)
    x_fit, y_fit = to_arrays(fit_items, size)
    x_sel, y_sel = to_arrays(select_items, size)
    x_eval, y_eval = to_arrays(eval_items, size)

    fit_data = (tf.data.Dataset.from_tensor_slices((x_fit, y_fit))
                .shuffle(len(x_fit), seed=config.seed, reshuffle_each_iteration=True)
                .batch(config.batch_size).prefetch(tf.data.AUTOTUNE))
    model = make_model(config.model)
    steps = config.epochs * int(np.ceil(len(x_fit) / config.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=steps, alpha=0.02,
                                                      warmup_target=None)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True),
                  metrics=[keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)])
    best_path = out_dir / f".{name}.best.keras"
    callbacks = [keras.callbacks.ModelCheckpoint(best_path, monitor="val_accuracy", mode="max",
                                                 save_best_only=True, verbose=0)]
    started = time.perf_counter()
    history = model.fit(fit_data, validation_data=(x_sel, y_sel), epochs=config.epochs, callbacks=callbacks,
                        verbose=verbose, shuffle=False)  # the dataset shuffles itself, with the seed
    train_seconds = time.perf_counter() - started
    model = keras.models.load_model(best_path, compile=False)
    best_path.unlink(missing_ok=True)

    dog_probabilities(model, x_eval[:8])  # warm-up: the first call traces the graph
    started = time.perf_counter()
    probabilities = dog_probabilities(model, x_eval)
    predict_seconds = time.perf_counter() - started
    evaluation = metrics(y_eval, probabilities)

    model_path = out_dir / f"{name}.keras"
    model.save(model_path)
    curve_path = out_dir / f"{name}.curve.png"
    _plot(history.history, curve_path)
    card = {
        "name": name,
        "task": "cats vs dogs (label 'dog' is positive)",
        "classes": list(CLASS_NAMES),
        "architecture": "keras.io image_classification_from_scratch style: separable-conv residual CNN",
        "parameters": int(model.count_params()),
        "config": {**asdict(config), "model": asdict(config.model)},
        "training_data": {"images": len(train_items), "fit": len(fit_items), "selection": len(select_items),
                          "fingerprint": fingerprint(train_items)},
        "evaluation_data": {"images": len(eval_items), "fingerprint": fingerprint(eval_items)},
        "metrics": evaluation,
        "best_epoch": int(np.argmax(history.history["val_accuracy"])) + 1,
        "train_seconds": round(train_seconds, 1),
        "train_images_per_second": round(len(fit_items) * config.epochs / train_seconds, 1),
        "predict_images_per_second": round(len(eval_items) / predict_seconds, 1),
        "test_time_augmentation": "mean logit of the image and its mirror image",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    card_path = out_dir / f"{name}.card.json"
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return TrainResult(model_path, card_path, curve_path, card)


def _plot(history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history["loss"]) + 1)
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axis.plot(epochs, history["loss"], label="training")
    loss_axis.plot(epochs, history["val_loss"], label="selection split")
    loss_axis.set_title("loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.legend()
    accuracy_axis.plot(epochs, history["accuracy"], label="training")
    accuracy_axis.plot(epochs, history["val_accuracy"], label="selection split")
    accuracy_axis.set_title("accuracy")
    accuracy_axis.set_xlabel("epoch")
    accuracy_axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
