"""Retraining from feedback: a candidate trained on the base data plus feedback-labelled images, and the gate
that compares it with production on the same fixed validation set."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.core.model_store import ModelStore, RegisteredModel


@dataclass(frozen=True)
class GateDecision:
    candidate: RegisteredModel
    production: RegisteredModel
    candidate_accuracy: float
    production_accuracy: float
    margin: float
    feedback_images: int
    training_images: int
    validation_images: int
    validation_fingerprint: str
    train_seconds: float

    @property
    def gain(self) -> float:
        return self.candidate_accuracy - self.production_accuracy

    @property
    def passed(self) -> bool:
        return self.production.version != self.candidate.version and self.gain >= self.margin


def train_config(settings: ImagoSettings):
    """The retraining configuration from the settings (`IMAGO_TRAIN_*`)."""
    from training.model import ModelConfig
    from training.train import TrainConfig

    widths = tuple(int(w) for w in settings.train_widths.split(","))
    model = ModelConfig(image_size=settings.train_image_size, widths=widths)
    if not settings.train_augment:
        model = ModelConfig(image_size=model.image_size, widths=model.widths, dropout=0.1, rotation=0.0, zoom=0.0,
                            translation=0.0, contrast=0.0)
    return TrainConfig(model=model, epochs=settings.train_epochs, batch_size=settings.train_batch_size)


def train_candidate(models: ModelStore, settings: ImagoSettings) -> GateDecision:
    """Train and register a candidate, record which feedback it used, and weigh it against production."""
    from training.data import LabelledImage, fingerprint, load_folder
    from training.evaluate import metrics
    from training.model import CLASS_NAMES
    from training.registry import load_classifier
    from training.train import train

    catalog, store = models.catalog, models.store
    base = load_folder(Path(settings.training_data or ""))
    validation = load_folder(Path(settings.validation_data or ""))
    feedback = catalog.feedback.for_training()
    extra = [LabelledImage(store.get(image.blob_key), CLASS_NAMES.index(row.label), f"feedback/{row.id}")
             for row, image in feedback]
    with tempfile.TemporaryDirectory(prefix="imago-train-") as tmp:
        result = train(base + extra, validation, Path(tmp), train_config(settings), name="candidate", verbose=0)
        candidate = models.register(result.model_path, result.card)
    catalog.feedback.mark_used([row.id for row, _ in feedback], candidate.version)
    production = models.production()
    labels = np.array([i.label for i in validation])
    classifier = load_classifier(models, production)
    production_metrics = metrics(labels, np.array([p.dog_probability for p in classifier.predict(
        [i.data for i in validation])]))
    return GateDecision(candidate=candidate, production=production,
                        candidate_accuracy=result.card["metrics"]["accuracy"],
                        production_accuracy=production_metrics["accuracy"], margin=settings.promotion_margin,
                        feedback_images=len(extra), training_images=len(base) + len(extra),
                        validation_images=len(validation), validation_fingerprint=fingerprint(validation),
                        train_seconds=result.card["train_seconds"])
