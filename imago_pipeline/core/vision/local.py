"""The offline default: tags and a description from what the pipeline measured and what the backbone sees.

Content comes from the backbone's ImageNet classes (readable tags: "tabby" → `cat`, `tabby`; "seashore" →
`beach`, `sea`) and the classification head (`cat`, `dog`, or neither: then no pet tag survives, even if an
ImageNet class hinted at one). Then what is measured, not guessed: colours and brightness, orientation, text
(OCR), camera, night exposure, GPS.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from imago_pipeline.core.embedding.imagenet import CAT_CLASSES, DOG_CLASSES, class_tags, content_tags, subject
from imago_pipeline.core.vision.base import VisionContext, VisionOutput, VisionProvider

# Content tags whose summed ImageNet probability is at least this. On 30 photos checked by hand
# (`bench/tags.py`): at 0.15 the first content tag was acceptable for 20, wrong for 3, absent for 7; at 0.1
# 21 / 6 / 3; at 0.2 18 / 3 / 9.
CONTENT_THRESHOLD = 0.15
# The main subject is named when its class is at least this probable (or the head says cat or dog).
SUBJECT_THRESHOLD = 0.25
PET_CLASSES = {"cat": CAT_CLASSES, "dog": DOG_CLASSES}
TAGS_OF = {label: {tag for index in pets for tag in class_tags(index)} for label, pets in PET_CLASSES.items()}
PET_TAGS = set().union(*TAGS_OF.values())

# Named colours to map dominant pixels onto (sRGB), and whether each reads warm or cool.
_PALETTE = {
    "black": (20, 20, 20), "white": (240, 240, 240), "gray": (128, 128, 128), "red": (200, 40, 40),
    "orange": (230, 130, 40), "yellow": (230, 210, 60), "green": (70, 150, 60), "blue": (50, 90, 200),
    "sky blue": (135, 190, 230), "purple": (130, 60, 160), "pink": (230, 150, 180), "brown": (130, 90, 50),
    "beige": (210, 190, 150),
}
_WARM = {"red", "orange", "yellow", "pink", "brown", "beige"}
_COOL = {"green", "blue", "sky blue", "purple"}
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


def _with_article(phrase: str) -> str:
    return f"{'an' if phrase[:1].lower() in 'aeiou' else 'a'} {phrase}"


def main_subject(context: VisionContext) -> tuple[str | None, float]:
    """The subject a description names, and how sure of it we are: the pet the head found (with its breed
    when ImageNet agrees), else the most probable ImageNet class when it is probable enough."""
    label = (context.classification or {}).get("label")
    if label in PET_CLASSES:
        breeds = [(i, p) for i, p in context.imagenet if i in PET_CLASSES[label]]
        name = subject(breeds[0][0]) if breeds and breeds[0][1] >= 0.1 else label
        return name, float((context.classification or {}).get("probability", 0.5))
    for index, probability in context.imagenet[:1]:
        if probability >= SUBJECT_THRESHOLD and not (label == "other" and class_tags(index)[0] in PET_TAGS):
            return subject(index), probability
    return None, 0.0


class LocalVisionProvider(VisionProvider):
    name = "local-content-v2"

    def describe(self, context: VisionContext) -> VisionOutput:
        image = Image.open(io.BytesIO(context.image_jpeg))
        label = (context.classification or {}).get("label")
        tags: list[str] = [label] if label in PET_CLASSES else []
        allowed = TAGS_OF.get(label or "", set())
        for tag, _ in content_tags(context.imagenet, min_score=CONTENT_THRESHOLD):
            # the head decides about pets: no `dog` or breed on a picture it calls a cat or `other`
            if tag not in PET_TAGS or tag in allowed:
                tags.append(tag)
        width, height = context.width, context.height
        shape = "square" if 0.9 <= width / height <= 1.1 else ("landscape" if width > height else "portrait")
        light = brightness(image)
        tone = "dark" if light < 0.3 else ("bright" if light > 0.7 else None)
        colours = dominant_colours(image)
        tags += [*(name for name, _ in colours), *([tone] if tone else []), shape]
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

        name, confidence = main_subject(context)
        document = context.has_text and not camera and name is None
        kind = "document" if document else "photo"
        description = f"A {kind}" + (f" of {_with_article(name)}" if name else "")
        if camera:
            description += f", taken with {_with_article(str(camera))}"
            if exif.get("datetime_original"):
                description += f" on {exif['datetime_original'][:10]}"
        names = {name for name, _ in colours}
        warmth = "warm" if names & _WARM and not names & _COOL else "cool" if names & _COOL and not names & _WARM \
            else None
        mood = ", ".join(word for word in (warmth, tone) if word)
        if colours:
            description += f"; {mood + ' ' if mood else ''}colours, mostly " + " and ".join(n for n, _ in colours[:2])
        if context.has_text:
            language = {"en": "English", "fr": "French"}.get(context.ocr_language or "", "")
            description += f"; {language + ' ' if language else ''}text"
        else:
            description += "; no text"
        return VisionOutput(description=description + ".", tags=list(dict.fromkeys(tags))[:20],
                            confidence=round(confidence if name else 0.3, 3))
