"""Orientation-corrected JPEG thumbnails."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps

from imago_pipeline.core.enrichment.decode import open_image
from imago_pipeline.core.limits import MAX_PIXELS, THUMBNAIL_SIZE


@dataclass(frozen=True)
class ThumbnailData:
    jpeg: bytes
    width: int
    height: int


def make_thumbnail(data: bytes, *, size: int = THUMBNAIL_SIZE, max_pixels: int = MAX_PIXELS) -> ThumbnailData:
    """Fit the image in a `size` square, upright according to its EXIF orientation."""
    image = open_image(data, max_pixels)
    if image.format == "JPEG":
        image.draft("RGB", (size * 2, size * 2))  # JPEG DCT scaling: decode far fewer pixels
    image = ImageOps.exif_transpose(image)
    if image.mode not in ("RGB", "L"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        rgba = image.convert("RGBA")
        background.paste(rgba, mask=rgba.getchannel("A"))
        image = background
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85, optimize=True)
    return ThumbnailData(jpeg=out.getvalue(), width=image.width, height=image.height)
