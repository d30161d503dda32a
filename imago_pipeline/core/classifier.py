"""Classify images on demand (`POST /api/predict`, `imago classify`): their embedding, then the production
head. The same encoder and head as the pipeline's stages, so an answer here is the answer a stored image
gets; nothing is stored."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from imago_pipeline.core.embedding.encoder import Embedding, shared_encoder
from imago_pipeline.core.embedding.head import Prediction
from imago_pipeline.core.limits import MAX_PIXELS
from imago_pipeline.core.model_store import ModelStore, RegisteredModel


@dataclass(frozen=True)
class Classified:
    prediction: Prediction
    embedding: Embedding


def classify(images: Sequence[bytes], models: ModelStore, *, max_pixels: int = MAX_PIXELS
             ) -> tuple[RegisteredModel, list[Classified]]:
    """The production model and each image's answer; an undecodable image raises `InvalidImage`."""
    model = models.production()
    head = models.head(model)
    embeddings = shared_encoder().encode_images(list(images), max_pixels=max_pixels)
    if not embeddings:
        return model, []
    predictions = head.predict(np.stack([e.vector for e in embeddings]))
    return model, [Classified(p, e) for p, e in zip(predictions, embeddings)]
