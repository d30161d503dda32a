"""The offline default: honest tags and a short description from what the pipeline measured.

It never guesses content it cannot see: tags come from EXIF (camera, flash, night exposure, GPS), OCR (text,
language), the classifier when it has run, and pixels (orientation, brightness, dominant colours).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from imago_pipeline.core.vision.base import VisionContext, VisionOutput, VisionProvider

# Named colours to map dominant pixels onto (sRGB).
_PALETTE = {
    "black": (20, 20, 20), "white": (240, 240, 240), "gray": (128, 128, 128), "red": (200, 40, 40),
    "orange": (230, 130, 40), "yellow": (230, 210, 60), "green": (70, 150, 60), "blue": (50, 90, 200),
    "sky blue": (135, 190, 230), "purple": (130, 60, 160), "pink": (230, 150, 180), "brown": (130, 90, 50),
    "beige": (210, 190, 150),
}
_NAMES = list(_PALETTE)
_COLOURS = np.array([_PALETTE[n] for n in _NAMES], dtype=np.float32)


def dominant_colours(image: Image.Image, top: int = 3, min_share: float = 0.12) -> list[tuple[str, float]]:
    small = image.convert("RGB")
    small.thumbnail((96, 96))
    pixels = np.asarray(small, dtype=np.float32).reshape(-1, 3)
    nearest = np.argmin(((pixels[:, None, :] - _COLOURS[None, :, :]) ** 2).sum(axis=2), axis=1)
    counts = np.bincount(nearest, minlength=len(_NAMES)) / len(nearest)
    ranked = sorted(((float(share), _NAMES[i]) for i, share in enumerate(counts)), reverse=True)
    return [(name, share) for share, name in ranked[:top] if share >= min_share]


def brightness(image: Image.Image) -> float:
    small = image.convert("L")
    small.thumbnail((96, 96))
    return float(np.asarray(small, dtype=np.float32).mean() / 255)


class LocalVisionProvider(VisionProvider):
    name = "local-heuristics-v1"

    def describe(self, context: VisionContext) -> VisionOutput:
        image = Image.open(io.BytesIO(context.image_jpeg))
        tags: list[str] = []
        width, height = context.width, context.height
        shape = "square" if 0.9 <= width / height <= 1.1 else ("landscape" if width > height else "portrait")
        tags.append(shape)
        light = brightness(image)
        tone = "dark" if light < 0.3 else ("bright" if light > 0.7 else None)
        if tone:
            tags.append(tone)
        colours = dominant_colours(image)
        tags += [name for name, _ in colours]
        if context.has_text:
            tags.append("text")
            if context.ocr_language:
                tags.append({"en": "english", "fr": "french"}.get(context.ocr_language, context.ocr_language))
        exif = context.exif or {}
        camera = exif.get("model") or exif.get("make")
        if exif.get("make"):
            tags.append(str(exif["make"]).split()[0].lower())
        if exif.get("gps_latitude") is not None:
            tags.append("geotagged")
        if (exif.get("exposure_time") or 0) >= 0.25:
            tags.append("long exposure")
        label = (context.classification or {}).get("label")
        if label:
            tags.append(label)

        kind = "document" if context.has_text and not camera else "photo"
        parts = [f"A {tone + ' ' if tone else ''}{shape} {kind}"]
        if label:
            parts.append(f"classified as a {label}")
        if camera:
            parts.append(f"taken with a {camera}")
        if exif.get("datetime_original"):
            parts.append(f"on {exif['datetime_original'][:10]}")
        description = " ".join(parts)
        if colours:
            description += "; mostly " + " and ".join(name for name, _ in colours[:2])
        if context.has_text:
            lang = {"en": "English", "fr": "French"}.get(context.ocr_language or "", "")
            description += f"; it contains {lang + ' ' if lang else ''}text"
        # Measurements are certain; the description says nothing it did not measure.
        return VisionOutput(description=description + ".", tags=tags, confidence=1.0 if not label else 0.9)
