"""Orientation-corrected JPEG thumbnails."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from imago_pipeline.core.enrichment.decode import upright_rgb
from imago_pipeline.core.limits import MAX_PIXELS, THUMBNAIL_SIZE


@dataclass(frozen=True)
class ThumbnailData:
    jpeg: bytes
    width: int
    height: int


def make_thumbnail(data: bytes, *, size: int = THUMBNAIL_SIZE, max_pixels: int = MAX_PIXELS) -> ThumbnailData:
    """Fit the image in a `size` square, upright according to its EXIF orientation."""
    image = upright_rgb(data, max_pixels=max_pixels, at_least=size * 2, keep_gray=True)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85, optimize=True)
    return ThumbnailData(jpeg=out.getvalue(), width=image.width, height=image.height)
