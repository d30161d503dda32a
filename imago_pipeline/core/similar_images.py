"""Similar images and near-duplicates within one tenant, from the stored embeddings and fingerprints.

The tenant's vectors are read once into matrices and kept while they do not change (same count and newest
embedding), so repeated searches cost a matrix-vector product, not a catalog scan. Only embeddings of the
current version are compared: vectors of two backbones do not live in the same space.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from imago_pipeline.core.catalog.tenant import TenantCatalog
from imago_pipeline.core.embedding import encoder as embedding_encoder
from imago_pipeline.core.embedding.similarity import (
    DUPLICATE_THRESHOLD,
    DuplicateGroup,
    Match,
    duplicate_groups,
    most_similar,
)

_CACHED_TENANTS = 8
_SIZE = embedding_encoder.FINGERPRINT_SIZE


@dataclass(frozen=True)
class TenantVectors:
    ids: list[int]
    vectors: np.ndarray  # (n, 1280) float16
    fingerprints: np.ndarray  # (n, 64, 64) uint8


_cache: OrderedDict[tuple[str, int, str], tuple[object, TenantVectors]] = OrderedDict()
_lock = threading.Lock()


class NoEmbedding(LookupError):
    """The image has no embedding of the current version yet (not processed, or its embedding failed)."""


def tenant_vectors(tenant: TenantCatalog) -> TenantVectors:
    """The tenant's image ids with their embeddings and fingerprints, cached while unchanged."""
    model = embedding_encoder.code_version()
    state = tenant.embeddings_state(model)
    key = (tenant.catalog.engine.url.render_as_string(hide_password=True), tenant.tenant_id, model)
    with _lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] == state:
            _cache.move_to_end(key)
            return hit[1]
    rows = tenant.embeddings(model)
    found = TenantVectors(
        ids=[r[0] for r in rows],
        vectors=np.stack([embedding_encoder.from_bytes(r[1]) for r in rows]) if rows else
        np.zeros((0, 1280), dtype=embedding_encoder.VECTOR_DTYPE),
        fingerprints=np.stack([np.frombuffer(r[2], dtype=np.uint8).reshape(_SIZE, _SIZE) if r[2] else
                               np.zeros((_SIZE, _SIZE), dtype=np.uint8) for r in rows]) if rows else
        np.zeros((0, _SIZE, _SIZE), dtype=np.uint8))
    with _lock:
        _cache[key] = (state, found)
        _cache.move_to_end(key)
        while len(_cache) > _CACHED_TENANTS:
            _cache.popitem(last=False)
    return found


def similar(tenant: TenantCatalog, image_id: int, *, limit: int = 10) -> list[Match]:
    """The tenant's images most like this one, best first, with their cosine similarity."""
    row = tenant.get_embedding(image_id)
    if row is None or row.model != embedding_encoder.code_version():
        raise NoEmbedding(image_id)
    found = tenant_vectors(tenant)
    return most_similar(embedding_encoder.from_bytes(row.vector), found.ids, found.vectors, limit=limit,
                        exclude=image_id)


def duplicates(tenant: TenantCatalog, *, threshold: float = DUPLICATE_THRESHOLD) -> list[DuplicateGroup]:
    found = tenant_vectors(tenant)
    return duplicate_groups(found.ids, found.vectors, found.fingerprints, threshold=threshold)
