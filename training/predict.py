"""Batched inference with a saved model: one load, many images, horizontal-flip test-time augmentation."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data import to_pixels
from training.model import CLASS_NAMES

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float  # of `label`
    dog_probability: float


def dog_probabilities(model, pixels: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Mean of the logits for the image and its mirror image, as a probability of 'dog'."""
    logits = model.predict(pixels, batch_size=batch_size, verbose=0).reshape(-1)
    mirrored = model.predict(pixels[:, :, ::-1, :], batch_size=batch_size, verbose=0).reshape(-1)
    return 1.0 / (1.0 + np.exp(-(logits + mirrored) / 2))


class Classifier:
    """A loaded model; TensorFlow is imported here, never at module level (it costs every process ~2 s)."""

    def __init__(self, model_path: Path | str, version: str | None = None):
        import keras

        self.model = keras.models.load_model(model_path, compile=False)
        self.image_size = int(self.model.input_shape[1])
        self.version = version or Path(model_path).stem

    def pixels(self, data: bytes) -> np.ndarray:
        return to_pixels(data, self.image_size)

    def predict_pixels(self, pixels: np.ndarray) -> list[Prediction]:
        out = []
        for p in dog_probabilities(self.model, pixels):
            label = CLASS_NAMES[1] if p >= 0.5 else CLASS_NAMES[0]
            out.append(Prediction(label, float(p if p >= 0.5 else 1 - p), float(p)))
        return out

    def predict(self, images: list[bytes]) -> list[Prediction]:
        if not images:
            return []
        return self.predict_pixels(np.stack([to_pixels(data, self.image_size) for data in images]))
