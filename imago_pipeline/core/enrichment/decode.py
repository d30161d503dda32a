"""Decide whether some bytes are an image we accept, from their content only.

The extension and the client's media type are never trusted: the magic bytes pick the format, the pixel
count is checked from the header before anything is decoded (decompression bombs), and a full decode
proves the file is not truncated or corrupt.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import pillow_heif
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

pillow_heif.register_heif_opener()
# Our own pixel limit is checked before decoding; Pillow's stays as a second line of defence.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class InvalidImage(ValueError):
    """The bytes are not an image we accept; the message is safe to show to the uploader.

    `kind` says which rule was broken, so the API can answer with the right status code.
    """

    def __init__(self, message: str, kind: str = "corrupt"):
        super().__init__(message)
        self.kind = kind  # empty | too_large | too_many_pixels | unsupported_type | corrupt


@dataclass(frozen=True)
class ImageInfo:
    media_type: str
    width: int
    height: int


_ISO_BMFF_BRANDS = {
    b"heic": "image/heic", b"heix": "image/heic", b"heim": "image/heic", b"heis": "image/heic",
    b"hevc": "image/heic", b"mif1": "image/heif", b"msf1": "image/heif", b"avif": "image/avif",
    b"avis": "image/avif",
}

ACCEPTED_MEDIA_TYPES = ("image/jpeg", "image/png", "image/webp", "image/tiff", "image/gif",
                        "image/heic", "image/heif", "image/avif")


def sniff_media_type(data: bytes) -> str | None:
    """Media type from the file signature, or None when it is not an accepted image format."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[4:8] == b"ftyp":
        return _ISO_BMFF_BRANDS.get(data[8:12])
    return None


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Open (header only) with the pixel limit enforced; raise InvalidImage on anything unexpected."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(f"image too large to decode safely ({exc})", "too_many_pixels") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage("not a decodable image") from exc
    except Exception as exc:  # Pillow raises many types for hostile headers
        raise InvalidImage(f"unreadable image header: {type(exc).__name__}: {exc}") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidImage(f"invalid dimensions {width}x{height}")
    if width * height > max_pixels:
        raise InvalidImage(f"{width}x{height} pixels is over the limit of {max_pixels} pixels", "too_many_pixels")
    return image


def inspect_image(data: bytes, *, max_bytes: int, max_pixels: int) -> ImageInfo:
    """Validate uploaded bytes and return what the catalog records about them."""
    if not data:
        raise InvalidImage("empty file", "empty")
    if len(data) > max_bytes:
        raise InvalidImage(f"{len(data)} bytes is over the limit of {max_bytes} bytes", "too_large")
    media_type = sniff_media_type(data)
    if media_type is None:
        raise InvalidImage("unsupported or unrecognised file type (accepted: JPEG, PNG, WebP, TIFF, GIF, "
                           "HEIC/HEIF, AVIF)", "unsupported_type")
    if media_type in ("image/heic", "image/heif", "image/avif") and (cut := _cut_box(data)):
        # libheif decodes what it has of a truncated file without an error (a half-copied photo passed)
        raise InvalidImage(f"corrupt image data: the file ends inside its '{cut}' box (truncated)")
    image = open_image(data, max_pixels)
    width, height = image.size
    try:
        if image.format == "JPEG":
            # Decoding at 1/8 scale still reads every entropy-coded segment, so truncation is caught.
            image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
        image.load()
    except Exception as exc:
        raise InvalidImage(f"corrupt image data: {type(exc).__name__}: {exc}") from exc
    finally:
        image.close()
    return ImageInfo(media_type=media_type, width=width, height=height)


def _cut_box(data: bytes) -> str | None:
    """The type of the top-level ISO BMFF box (HEIC, HEIF, AVIF) that runs past the end of `data`, if one
    does: a file cut short ends inside its last box, usually `mdat`, whose declared size says so."""
    at = 0
    while at + 8 <= len(data):
        size, kind = int.from_bytes(data[at:at + 4], "big"), data[at + 4:at + 8]
        if size == 1 and at + 16 <= len(data):  # a 64-bit size follows
            size = int.from_bytes(data[at + 8:at + 16], "big")
        elif size == 0:  # to the end of the file
            return None
        if size < 8:
            return None  # not a box structure we can judge; the decoder decides
        if at + size > len(data):
            return kind.decode("latin-1")
        at += size
    return None


def upright_rgb(data: bytes, *, max_pixels: int, at_least: int, keep_gray: bool = False) -> Image.Image:
    """The image upright (its EXIF orientation applied) in RGB (or gray, if it is and `keep_gray`),
    transparency flattened onto white. A JPEG is decoded at the smallest DCT scale that still gives
    `at_least` pixels per side (far fewer pixels to decode); callers resize from there."""
    image = open_image(data, max_pixels)
    if image.format == "JPEG":
        image.draft("RGB", (at_least, at_least))
    image = ImageOps.exif_transpose(image)
    if image.mode not in ("RGB", "L"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        rgba = image.convert("RGBA")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image if image.mode == "L" and keep_gray else image.convert("RGB")
