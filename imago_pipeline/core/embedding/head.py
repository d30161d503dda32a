"""The classification head, served without TensorFlow: `cat`, `dog` or `other` from an image's embedding.

The head is trained with Keras (`training/`) and exported as a portable `.npz`: its dense layers' weights and
activations, the labels, and the embedding version it was trained on. Inference is a few matrix products in
numpy (microseconds per image), so neither a pipeline run nor the API imports TensorFlow to classify, and a
promoted head re-classifies stored embeddings without running the backbone again. `np.load` reads it with
`allow_pickle=False`: a model file cannot run code.
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imago_pipeline.core.embedding import lite0

HEAD_FORMAT = "imago-head-v1"
LABELS = ("cat", "dog", "other")
_ACTIVATIONS = ("linear", "relu", "softmax")


class HeadFormatError(ValueError):
    """The file is not a head this code can serve."""


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float  # of `label`
    probabilities: dict[str, float]


@dataclass(frozen=True)
class Dense:
    kernel: np.ndarray  # (inputs, outputs)
    bias: np.ndarray
    activation: str


def _activate(x: np.ndarray, activation: str) -> np.ndarray:
    if activation == "relu":
        return np.maximum(x, 0.0)
    if activation == "softmax":
        shifted = np.exp(x - x.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    return x


@dataclass(frozen=True)
class ImageNetPrior:
    """What the backbone's own ImageNet classifier says, as features: the log of the probability mass of
    each group of classes (domestic cats, dog breeds, everything else). Frozen; appended to the embedding.
    With few `other` examples to learn from, this is what tells a street sign or a lizard from a dog.

    Its ImageNet layer is the backbone's own (from the checked weights file), so a head file stores only the
    group membership and names the weights it expects."""

    kernel: np.ndarray  # (1280, 1000): the ImageNet layer
    bias: np.ndarray  # (1000,)
    groups: np.ndarray  # (1000, groups): 1 where a class belongs to a group
    epsilon: float = 1e-4

    @classmethod
    def from_backbone(cls, groups: np.ndarray, epsilon: float) -> ImageNetPrior:
        weights = lite0.load_weights()
        return cls(weights["_fc.weight"].T.astype(np.float32), weights["_fc.bias"].astype(np.float32),
                   np.asarray(groups, dtype=np.float32), epsilon)

    def features(self, x: np.ndarray) -> np.ndarray:
        probabilities = _activate(x @ self.kernel + self.bias, "softmax")
        return np.log(probabilities @ self.groups + self.epsilon)


class Head:
    def __init__(self, layers: list[Dense], labels: tuple[str, ...], embedding_version: str,
                 prior: ImageNetPrior | None = None):
        if not layers or layers[-1].activation != "softmax" or layers[-1].kernel.shape[1] != len(labels):
            raise HeadFormatError("a head ends in a softmax over its labels")
        for before, after in itertools.pairwise(layers):
            if before.kernel.shape[1] != after.kernel.shape[0]:
                raise HeadFormatError("layer shapes do not chain")
        extra = prior.groups.shape[1] if prior is not None else 0
        if prior is not None and prior.kernel.shape[0] + extra != layers[0].kernel.shape[0]:
            raise HeadFormatError("the prior's features do not fit the first layer")
        self.layers, self.labels, self.embedding_version = layers, tuple(labels), embedding_version
        self.prior = prior

    @property
    def inputs(self) -> int:
        return int(self.layers[0].kernel.shape[0]) - (self.prior.groups.shape[1] if self.prior is not None else 0)

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if x.shape[1] != self.inputs:
            raise ValueError(f"the head takes {self.inputs}-d embeddings, not {x.shape[1]}-d")
        if self.prior is not None:
            x = np.concatenate([x, self.prior.features(x)], axis=1)
        for layer in self.layers:
            x = _activate(x @ layer.kernel + layer.bias, layer.activation)
        return x

    def predict(self, vectors: np.ndarray) -> list[Prediction]:
        out = []
        for row in self.probabilities(vectors):
            best = int(np.argmax(row))
            out.append(Prediction(self.labels[best], float(row[best]),
                                  {label: round(float(p), 4) for label, p in zip(self.labels, row)}))
        return out

    def to_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {"format": np.array(HEAD_FORMAT), "labels": np.array(self.labels),
                                         "embedding_version": np.array(self.embedding_version),
                                         "activations": np.array([layer.activation for layer in self.layers])}
        for i, layer in enumerate(self.layers):
            arrays[f"kernel_{i}"], arrays[f"bias_{i}"] = layer.kernel, layer.bias
        if self.prior is not None:
            arrays.update(prior_weights=np.array(lite0.weights_tag()), prior_groups=self.prior.groups,
                          prior_epsilon=np.array(self.prior.epsilon))
        out = io.BytesIO()
        np.savez(out, **arrays)  # type: ignore[arg-type]
        return out.getvalue()

    def save(self, path: Path) -> None:
        path.write_bytes(self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> Head:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as f:
                if "format" not in f or str(f["format"]) != HEAD_FORMAT:
                    raise HeadFormatError(f"not an {HEAD_FORMAT} file")
                activations = [str(a) for a in f["activations"]]
                if any(a not in _ACTIVATIONS for a in activations):
                    raise HeadFormatError(f"unknown activation in {activations}")
                layers = [Dense(f[f"kernel_{i}"].astype(np.float32), f[f"bias_{i}"].astype(np.float32), a)
                          for i, a in enumerate(activations)]
                prior = None
                if "prior_weights" in f:
                    if str(f["prior_weights"]) != lite0.weights_tag():
                        raise HeadFormatError(f"the head's prior needs backbone weights {f['prior_weights']}, "
                                              f"not {lite0.weights_tag()}")
                    prior = ImageNetPrior.from_backbone(f["prior_groups"], float(f["prior_epsilon"]))
                return cls(layers, tuple(str(label) for label in f["labels"]), str(f["embedding_version"]), prior)
        except HeadFormatError:
            raise
        except Exception as exc:  # a truncated or foreign file
            raise HeadFormatError(f"unreadable head file: {type(exc).__name__}: {exc}") from exc

    @classmethod
    def load(cls, path: Path) -> Head:
        return cls.from_bytes(Path(path).read_bytes())
