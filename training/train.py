"""Train the classification head on labelled images: embeddings once, then seconds of Keras.

Model selection (the best epoch) uses a stratified slice of the training data, never the evaluation set, so
the figures reported on the evaluation set are on photos the head has never seen in any way. The head is
evaluated as it is served: the exported portable head, in numpy.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from imago_pipeline.core.embedding import encoder as embedding_encoder
from imago_pipeline.core.embedding.head import HEAD_FORMAT, LABELS, Head
from training.data import LabelledImage, fingerprint, label_counts
from training.evaluate import GATE_METRIC, metrics
from training.features import embeddings
from training.head import HeadConfig, make_head, to_portable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclass(frozen=True)
class TrainConfig:
    head: HeadConfig = field(default_factory=HeadConfig)
    epochs: int = 150
    patience: int = 30  # epochs without a better selection loss before stopping (the best epoch is kept)
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    selection_share: float = 0.1  # of the training data, held out to pick the best epoch
    seed: int = 1337


@dataclass
class TrainResult:
    head: Head
    head_path: Path
    keras_path: Path
    card_path: Path
    curve_path: Path
    card: dict


def stratified_split(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out), each label in its training proportion, so a head that answers one label
    everywhere cannot look good on the held-out slice."""
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for label in np.unique(labels):
        group = rng.permutation(np.flatnonzero(labels == label))
        cut = max(1, round(len(group) * share)) if share > 0 and len(group) > 1 else 0
        held += group[:cut].tolist()
        kept += group[cut:].tolist()
    return np.array(sorted(kept), dtype=int), np.array(sorted(held), dtype=int)


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Each label weighs as much in the loss as the others, however many images it has."""
    present = np.unique(labels)
    return {int(label): float(len(labels) / (len(present) * (labels == label).sum())) for label in present}


def fit_head(x: np.ndarray, y: np.ndarray, config: TrainConfig, *, verbose: int = 0):
    """A Keras head fitted on embeddings; returns (model, history, selection size)."""
    import keras

    keras.utils.set_random_seed(config.seed)
    fit_idx, select_idx = stratified_split(y, config.selection_share, config.seed)
    model = make_head(config.head)
    model.compile(optimizer=keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay),
                  steps_per_execution=16,  # a small model: Keras' per-step overhead dominates (14.1 → 12.6 s)
                  loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience,
                                               restore_best_weights=True)]
    history = model.fit(x[fit_idx].astype(np.float32), y[fit_idx], validation_data=(
        x[select_idx].astype(np.float32), y[select_idx]), epochs=config.epochs, batch_size=config.batch_size,
        class_weight=class_weights(y[fit_idx]), callbacks=callbacks, shuffle=True, verbose=verbose)
    return model, history.history, len(fit_idx), len(select_idx)


def train(train_items: list[LabelledImage], eval_items: list[LabelledImage], out_dir: Path,
          config: TrainConfig = TrainConfig(), *, name: str = "head", cache_dir: Path | None = None,
          verbose: int = 0, extra: tuple[np.ndarray, np.ndarray] | None = None) -> TrainResult:
    """Train, export, evaluate and document a head. `extra`: more (embeddings, labels) to train on, e.g.
    feedback images whose embeddings the catalog already holds."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    x = embeddings(train_items, cache_dir)
    y = np.array([i.label for i in train_items], dtype=int)
    if extra is not None and len(extra[0]):
        x, y = np.concatenate([x, extra[0].astype(x.dtype)]), np.concatenate([y, extra[1].astype(int)])
    x_eval = embeddings(eval_items, cache_dir)
    y_eval = np.array([i.label for i in eval_items], dtype=int)
    embed_seconds = time.perf_counter() - started

    started = time.perf_counter()
    model, history, fitted, selected = fit_head(x, y, config, verbose=verbose)
    train_seconds = time.perf_counter() - started
    head = to_portable(model, embedding_encoder.code_version())
    started = time.perf_counter()
    probabilities = head.probabilities(x_eval)
    predict_seconds = time.perf_counter() - started
    evaluation = metrics(y_eval, probabilities)
    by_source = {source: metrics(y_eval[idx], probabilities[idx])
                 for source, idx in _by_source([i.name for i in eval_items]).items()}
    wrong = [{"name": item.name, "label": LABELS[item.label], "predicted": LABELS[int(p.argmax())],
              "probability": round(float(p.max()), 3)}
             for item, p in zip(eval_items, probabilities) if int(p.argmax()) != item.label]

    head_path, keras_path = out_dir / f"{name}.npz", out_dir / f"{name}.keras"
    head.save(head_path)
    model.save(keras_path)
    curve_path = out_dir / f"{name}.curve.png"
    _plot(history, curve_path)
    card = {
        "name": name,
        "format": HEAD_FORMAT,
        "task": "what is in the picture: a cat, a dog, or neither ('other')",
        "labels": list(LABELS),
        "architecture": "EfficientNet-Lite0 (ImageNet weights, frozen, served by onnxruntime) → 1280-d embedding "
                        f"→ Keras head: Dropout({config.head.dropout})"
                        + (f" → Dense({config.head.hidden}, relu) → Dropout" if config.head.hidden else "")
                        + f" → Dense({len(LABELS)}, softmax)",
        "embedding_version": head.embedding_version,
        "parameters": int(model.count_params()),
        "trainable_parameters": int(sum(int(np.prod(w.shape)) for w in model.trainable_weights)),
        "config": asdict(config),
        "training_data": {"images": len(y), "per_label": {lb: int((y == i).sum()) for i, lb in enumerate(LABELS)},
                          "fit": fitted, "selection": selected, "from_feedback": len(y) - len(train_items),
                          "fingerprint": fingerprint(train_items)},
        "evaluation_data": {"images": len(eval_items), "per_label": label_counts(eval_items),
                            "fingerprint": fingerprint(eval_items)},
        "metrics": evaluation,
        "metrics_by_source": {source: {k: m[k] for k in ("images", "accuracy", "pet_accuracy", "other_recall")}
                              for source, m in by_source.items()},
        "gate_metric": GATE_METRIC,
        "misclassified": wrong[:50],
        "epochs_run": len(history["loss"]),
        "best_epoch": int(np.argmin(history["val_loss"])) + 1,
        "embed_seconds": round(embed_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "head_predict_ms_per_1000": round(predict_seconds * 1000 / max(1, len(y_eval)) * 1000, 2),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    card_path = out_dir / f"{name}.card.json"
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return TrainResult(head, head_path, keras_path, card_path, curve_path, card)


def _by_source(names: list[str]) -> dict[str, np.ndarray]:
    """Evaluation items grouped by where they come from: the folder under a `data` folder
    (`shared/data/catsdogs/val/cat/x.jpg` → `data/catsdogs`), so a card shows each set's figures apart."""
    groups: dict[str, list[int]] = {}
    for n, name in enumerate(names):
        parts = [p for p in Path(name).parts if p not in ("..", ".")]
        key = "/".join(parts[parts.index("data"):parts.index("data") + 2]) if "data" in parts[:-1] else "other"
        groups.setdefault(key, []).append(n)
    return {key: np.array(idx) for key, idx in sorted(groups.items())}


def _plot(history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history["loss"]) + 1)
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for axis, key, title in ((loss_axis, "loss", "loss"), (accuracy_axis, "accuracy", "accuracy")):
        axis.plot(epochs, history[key], label="training")
        axis.plot(epochs, history[f"val_{key}"], label="selection split")
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
