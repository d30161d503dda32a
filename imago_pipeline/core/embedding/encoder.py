"""Image → embedding: the upright image squashed to 224×224, through EfficientNet-Lite0 (onnxruntime).

One pass gives the 1280-d pooled features (the *embedding*: what the classification head and similar-image
search use) and the ImageNet-1k probabilities (what the offline vision provider turns into content tags).
The same pixels also give a 64×64 grey *fingerprint*, which near-duplicate detection compares (the
embedding says what is in a picture; two different typed pages look alike to it). The encoder loads once
per process (~0.3 s) and runs batched.

The embedding is kept as float16 (2.5 KB per image): training, stored results and re-classification all
use the same rounded vector, so an image classified at upload and re-classified later from its stored
embedding gets the same answer.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

from imago_pipeline.core.embedding import lite0
from imago_pipeline.core.enrichment.decode import upright_rgb
from imago_pipeline.core.limits import MAX_PIXELS

EMBEDDING_VERSION = "embedding-v1"
# Squash (not crop): the whole picture counts (a crop measured 98.9% vs 99.6% on catsdogs/val).
PREPROCESSING = f"upright-squash{lite0.IMAGE_SIZE}-bicubic-rgb(x-127)/128"
VECTOR_DTYPE = np.dtype("<f2")
FINGERPRINT_SIZE = 64
TOP_CLASSES = 5
BATCH = 8  # per image, batches of 8 cost less CPU than 32 (cache), and less pooled memory


def code_version() -> str:
    """Names the backbone, its weights and the preprocessing: a change to any makes embeddings stale."""
    return f"{EMBEDDING_VERSION}|{lite0.weights_tag()}|{PREPROCESSING}"


def pixels(data: bytes, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The model's input for one image: upright RGB, (224, 224, 3) uint8. Raises `InvalidImage`."""
    size = lite0.IMAGE_SIZE
    image = upright_rgb(data, max_pixels=max_pixels, at_least=size * 2)
    return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)


def fingerprint(rgb: np.ndarray) -> np.ndarray:
    """(64, 64) uint8 grey of the model's input: robust to re-encoding and resizing, sensitive to layout."""
    grey = Image.fromarray(rgb).convert("L").resize((FINGERPRINT_SIZE, FINGERPRINT_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(grey, dtype=np.uint8)


def to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=VECTOR_DTYPE).tobytes()


def from_bytes(data: bytes) -> np.ndarray:
    vector = np.frombuffer(data, dtype=VECTOR_DTYPE)
    if vector.shape != (lite0.FEATURE_DIM,):
        raise ValueError(f"an embedding has {lite0.FEATURE_DIM} values, not {vector.size}")
    return vector


@dataclass(frozen=True)
class Embedding:
    vector: np.ndarray  # (1280,) float16
    imagenet: tuple[tuple[int, float], ...]  # the top ImageNet classes: (index, probability)
    fingerprint: np.ndarray  # (64, 64) uint8 grey


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Encoder:
    """An onnxruntime session over the Lite0 graph (built in memory from the checked weights)."""

    def __init__(self, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1  # the graph is a chain
        # Idle threads otherwise spin after each call, taking the cores the next decode needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = ort.InferenceSession(lite0.build_onnx(), options, providers=["CPUExecutionProvider"])
        self.version = code_version()
        self._lock = threading.Lock()  # one call at a time: the session's threads are the parallelism

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 224, 224, 3) uint8 → (features (N, 1280) float32, ImageNet logits (N, 1000))."""
        batch = np.ascontiguousarray(batch)
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (lite0.IMAGE_SIZE, lite0.IMAGE_SIZE, 3):
            raise ValueError(f"expected uint8 (N, {lite0.IMAGE_SIZE}, {lite0.IMAGE_SIZE}, 3), got {batch.dtype} "
                             f"{batch.shape}")
        with self._lock:
            features, logits = self.session.run([lite0.FEATURES, lite0.LOGITS], {lite0.INPUT: batch})
        return features, logits

    def encode(self, batch: np.ndarray) -> list[Embedding]:
        out: list[Embedding] = []
        for start in range(0, len(batch), BATCH):
            chunk = batch[start:start + BATCH]
            features, logits = self.run(chunk)
            probabilities = softmax(logits.astype(np.float64))
            best = np.argsort(-probabilities, axis=1)[:, :TOP_CLASSES]
            out += [Embedding(vector.astype(VECTOR_DTYPE), tuple((int(j), round(float(row[j]), 4)) for j in top),
                              fingerprint(rgb))
                    for vector, row, top, rgb in zip(features, probabilities, best, chunk)]
        return out

    def encode_images(self, images: list[bytes], *, max_pixels: int = MAX_PIXELS) -> list[Embedding]:
        return self.encode(np.stack([pixels(data, max_pixels=max_pixels) for data in images])) if images else []


@cache
def shared_encoder() -> Encoder:
    """One encoder per process (a pipeline run, the API, the CLI)."""
    return Encoder()
