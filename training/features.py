"""Embeddings of labelled images, computed once: the head trains on these, never on pixels.

The encoder is the one the pipeline serves (`imago_pipeline.core.embedding.encoder`), so the head trains on
exactly the vectors it will see. Vectors are cached by content hash in one file per embedding version
(`<cache>/embeddings-<version hash>.npz`): the second training on the same images skips the backbone.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from imago_pipeline.core.embedding import encoder as embedding_encoder
from imago_pipeline.core.embedding.lite0 import FEATURE_DIM
from training.data import LabelledImage


def _cache_file(cache_dir: Path) -> Path:
    version = hashlib.sha256(embedding_encoder.code_version().encode()).hexdigest()[:12]
    return cache_dir / f"embeddings-{version}.npz"


def _read(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as f:
            return dict(zip(f["keys"].tolist(), f["vectors"]))
    except Exception:  # a damaged cache is recomputed, not trusted
        return {}


def _write(path: Path, cached: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        np.savez(f, keys=np.array(list(cached)), vectors=np.stack(list(cached.values())))
    tmp.replace(path)


def embeddings(items: list[LabelledImage], cache_dir: Path | None = None) -> np.ndarray:
    """(N, 1280) float16 embeddings of the items, in order; new ones are computed and added to the cache."""
    path = _cache_file(cache_dir) if cache_dir else None
    cached = _read(path) if path else {}
    missing = list({i.sha256: i for i in items if i.sha256 not in cached}.values())
    if missing:
        encoder = embedding_encoder.shared_encoder()
        for start in range(0, len(missing), 64):
            chunk = missing[start:start + 64]
            for item, result in zip(chunk, encoder.encode_images([i.data for i in chunk])):
                cached[item.sha256] = result.vector
        if path:
            _write(path, cached)
    if not items:
        return np.zeros((0, FEATURE_DIM), dtype=embedding_encoder.VECTOR_DTYPE)
    return np.stack([cached[i.sha256] for i in items]).astype(embedding_encoder.VECTOR_DTYPE)
