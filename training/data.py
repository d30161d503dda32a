"""Labelled image sets: a folder with one sub-folder per label, or a CSV manifest; and their fingerprint.

A folder holds `cat/`, `dog/` and/or `other/` (any of them may be absent). A manifest (`.csv`, columns
`label,path`, paths relative to the manifest) can gather images from several places without copying them:
`training/sets/` describes the baseline's training and validation sets that way.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from imago_pipeline.core.embedding.head import LABELS

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".gif", ".bmp", ".heic"}


@dataclass(frozen=True)
class LabelledImage:
    data: bytes
    label: int  # index into LABELS
    name: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def load_set(path: Path) -> list[LabelledImage]:
    """Every labelled image of a folder or a manifest, in a stable order."""
    path = Path(path)
    if path.is_dir():
        items = [LabelledImage(file.read_bytes(), index, f"{label}/{file.name}")
                 for index, label in enumerate(LABELS)
                 for file in sorted((path / label).glob("*")) if file.suffix.lower() in IMAGE_SUFFIXES]
        where = f"{path}/{{{','.join(LABELS)}}}"
    elif path.suffix == ".csv" and path.is_file():
        items = []
        with path.open(newline="") as f:
            for line, row in enumerate(csv.DictReader(f), start=2):
                if row["label"] not in LABELS:
                    raise ValueError(f"{path}:{line}: label {row['label']!r} is not one of {', '.join(LABELS)}")
                file = path.parent / row["path"]
                if not file.is_file():
                    raise FileNotFoundError(f"{path}:{line}: {file} does not exist")
                items.append(LabelledImage(file.read_bytes(), LABELS.index(row["label"]), row["path"]))
        where = str(path)
    else:
        raise FileNotFoundError(f"{path} is neither a folder of labelled sub-folders nor a .csv manifest")
    if not items:
        raise ValueError(f"no images under {where}")
    return items


def label_counts(items: list[LabelledImage]) -> dict[str, int]:
    counts = Counter(LABELS[i.label] for i in items)
    return {label: counts[label] for label in LABELS}


def fingerprint(items: list[LabelledImage]) -> str:
    """SHA-256 over the sorted (label, content hash) pairs: the same data gives the same fingerprint."""
    digest = hashlib.sha256()
    for entry in sorted(f"{i.label}:{i.sha256}" for i in items):
        digest.update(entry.encode())
    return digest.hexdigest()
