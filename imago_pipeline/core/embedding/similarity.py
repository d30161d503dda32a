"""Similar and near-duplicate images.

*Similar* is what the backbone sees: the cosine similarity of two embeddings (1 for the same picture; two
photos of cats of one breed score high, a cat and a chart low).

*Near-duplicate* is stricter: the same picture stored differently (re-encoded, resized, converted). Exact
copies are already refused per tenant (same SHA-256). The embedding alone cannot tell near-duplicates: two
different typed pages, or two screenshots of one application, score as high as a re-encoded copy. So two
images are near-duplicates when their 64×64 grey fingerprints correlate at `DUPLICATE_THRESHOLD` or more
*and* their embeddings agree (cosine ≥ `DUPLICATE_MIN_COSINE`). Measured on 2,099 real images (docs/
classifier.md, `bench/similarity.py`): re-encoded (JPEG quality 20–75, PNG) and resized (½, ¼) copies
correlate at ≥ 0.997; of 2.2 million pairs of different images, those correlating at ≥ 0.99 were the same
picture in two files.

Finding the pairs costs a block-wise product of coarse 16×16 fingerprints over all images (candidates at
≥ 0.95), then the exact check on the candidates only; memory stays at one block whatever the number of
images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DUPLICATE_THRESHOLD = 0.99
DUPLICATE_MIN_COSINE = 0.6
_CANDIDATE = 0.95  # coarse (16×16) correlation of every true pair measured ≥ 0.998
_FLAT = 2.0  # a fingerprint this even (grey-level standard deviation) has no layout to correlate
_CHUNK = 2048


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (float32), so a dot product is the cosine similarity."""
    matrix = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


@dataclass(frozen=True)
class Match:
    image_id: int
    score: float


def most_similar(query: np.ndarray, ids: Sequence[int], vectors: np.ndarray, *, limit: int,
                 exclude: int | None = None) -> list[Match]:
    """The `limit` images whose embeddings are closest to `query`, best first (the query image excluded)."""
    if len(ids) == 0:
        return []
    scores = unit_rows(vectors) @ unit_rows(query[None, :])[0]
    if exclude is not None:
        scores = np.where(np.asarray(ids) == exclude, -np.inf, scores)
    limit = min(limit, len(ids))
    best = np.argpartition(-scores, limit - 1)[:limit]
    best = best[np.argsort(-scores[best], kind="stable")]
    return [Match(int(ids[i]), round(float(scores[i]), 4)) for i in best if np.isfinite(scores[i])]


def _centred(fingerprints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean-centred unit rows (correlation = dot product), and which fingerprints are flat."""
    x = fingerprints.reshape(len(fingerprints), -1).astype(np.float32)
    x -= x.mean(axis=1, keepdims=True)
    flat = x.std(axis=1) < _FLAT
    return unit_rows(x), flat


def _coarse(fingerprints: np.ndarray) -> np.ndarray:
    n, size = len(fingerprints), fingerprints.shape[1]
    return fingerprints.reshape(n, 16, size // 16, 16, size // 16).mean(axis=(2, 4))


@dataclass(frozen=True)
class DuplicateGroup:
    image_ids: list[int]  # oldest (smallest id) first
    min_score: float  # the weakest fingerprint correlation that joined the group


def duplicate_pairs(vectors: np.ndarray, fingerprints: np.ndarray, *, threshold: float = DUPLICATE_THRESHOLD,
                    min_cosine: float = DUPLICATE_MIN_COSINE) -> list[tuple[int, int, float]]:
    """(row i, row j, fingerprint correlation) of every near-duplicate pair, i < j."""
    n = len(vectors)
    if n < 2:
        return []
    fingerprints = np.asarray(fingerprints).reshape(n, 64, 64)
    fine, flat = _centred(fingerprints)
    coarse, _ = _centred(_coarse(fingerprints))
    embeddings = unit_rows(vectors)
    means = fingerprints.reshape(n, -1).mean(axis=1)
    pairs = []
    for start in range(0, n, _CHUNK):
        block = coarse[start:start + _CHUNK] @ coarse.T
        for r, j in zip(*np.nonzero(block >= _CANDIDATE)):
            i = start + int(r)
            j = int(j)
            if j <= i or flat[i] or flat[j]:
                continue
            score = float(fine[i] @ fine[j])
            if score >= threshold and float(embeddings[i] @ embeddings[j]) >= min_cosine:
                pairs.append((i, j, score))
    # two flat images (blank pages) do not reach the coarse stage: compare them by mean and embedding
    flat_rows = [int(row) for row in np.flatnonzero(flat)]
    for a, first in enumerate(flat_rows):
        for second in flat_rows[a + 1:]:
            if abs(means[first] - means[second]) < _FLAT and \
                    float(embeddings[first] @ embeddings[second]) >= max(min_cosine, 0.95):
                pairs.append((first, second, 1.0))
    return sorted(set(pairs))


def duplicate_groups(ids: Sequence[int], vectors: np.ndarray, fingerprints: np.ndarray, *,
                     threshold: float = DUPLICATE_THRESHOLD,
                     min_cosine: float = DUPLICATE_MIN_COSINE) -> list[DuplicateGroup]:
    """Groups of images linked by near-duplicate pairs (single linkage), largest groups first."""
    parent = list(range(len(ids)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    weakest: dict[int, float] = {}
    for i, j, score in duplicate_pairs(vectors, fingerprints, threshold=threshold, min_cosine=min_cosine):
        a, b = root(i), root(j)
        if a != b:
            parent[b] = a
            weakest[a] = min(weakest.get(a, 1.0), weakest.pop(b, 1.0), score)
    members: dict[int, list[int]] = {}
    for i in range(len(ids)):
        members.setdefault(root(i), []).append(int(ids[i]))
    groups = [DuplicateGroup(sorted(group), round(weakest.get(r, 1.0), 4))
              for r, group in members.items() if len(group) > 1]
    return sorted(groups, key=lambda g: (-len(g.image_ids), g.image_ids[0]))
