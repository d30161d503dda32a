"""Labelled image folders (`DIR/cat/*.jpg`, `DIR/dog/*.jpg`) as arrays, and their fingerprint."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from training.model import CLASS_NAMES

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


@dataclass(frozen=True)
class LabelledImage:
    data: bytes
    label: int  # index into CLASS_NAMES
    name: str


def load_folder(folder: Path) -> list[LabelledImage]:
    items = []
    for label, name in enumerate(CLASS_NAMES):
        for path in sorted((folder / name).glob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                items.append(LabelledImage(path.read_bytes(), label, f"{name}/{path.name}"))
    if not items:
        raise ValueError(f"no images under {folder}/cat or {folder}/dog")
    return items


def fingerprint(items: list[LabelledImage]) -> str:
    """SHA-256 over the sorted (label, content hash) pairs: the same data gives the same fingerprint."""
    digest = hashlib.sha256()
    for entry in sorted(f"{i.label}:{hashlib.sha256(i.data).hexdigest()}" for i in items):
        digest.update(entry.encode())
    return digest.hexdigest()


def to_pixels(data: bytes, size: int) -> np.ndarray:
    """Upright RGB, squeezed to size x size (the same function serves training, evaluation and inference)."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (size * 2, size * 2))
        image = ImageOps.exif_transpose(image).convert("RGB")
        image = image.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def to_arrays(items: list[LabelledImage], size: int) -> tuple[np.ndarray, np.ndarray]:
    pixels = np.stack([to_pixels(i.data, size) for i in items])
    labels = np.array([i.label for i in items], dtype=np.float32)
    return pixels, labels
