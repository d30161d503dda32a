"""The 1,000 ImageNet-1k classes as data, and readable content tags for them.

Keras' `decode_predictions` downloads its class index at run time, which the product may not do, so the class
list ships here (`imagenet_classes.json`, model output order: sorted WordNet ids, as in ILSVRC-2012).

ImageNet names are precise but not what people search for ("tabby", "seashore", "tusker"). Each class gets
readable tags: the general word(s) of its group first (`cat`, `dog`, `bird`, `beach`…), then its own name
when that says more ("tabby"). Groups are index ranges, because ImageNet orders classes by the WordNet
hierarchy (all dog breeds are 151–268); the exceptions and renames are a small table.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

_DATA = Path(__file__).with_name("imagenet_classes.json")

DOG_CLASSES = range(151, 269)  # Chihuahua … Mexican hairless: domestic dog breeds
CAT_CLASSES = range(281, 286)  # tabby … Egyptian cat: domestic cats (286–293 are wild cats)


@dataclass(frozen=True)
class ImageNetClass:
    index: int
    wnid: str
    name: str
    lemmas: str


@cache
def classes() -> tuple[ImageNetClass, ...]:
    rows = json.loads(_DATA.read_text(encoding="utf-8"))
    if len(rows) != 1000:
        raise ValueError(f"{_DATA} has {len(rows)} classes, not 1000")
    return tuple(ImageNetClass(i, r["wnid"], r["name"], r["lemmas"]) for i, r in enumerate(rows))


# (first index, last index, general tags) along the WordNet order of the classes.
_GROUPS: tuple[tuple[int, int, tuple[str, ...]], ...] = (
    (0, 6, ("fish",)), (7, 24, ("bird",)), (25, 29, ("salamander",)), (30, 32, ("frog",)), (33, 37, ("turtle",)),
    (38, 48, ("lizard",)), (49, 50, ("crocodile",)), (52, 68, ("snake",)), (70, 77, ("spider",)),
    (80, 100, ("bird",)), (104, 106, ("marsupial",)), (107, 126, ("sea life",)), (127, 146, ("bird",)),
    (147, 150, ("sea mammal",)), (151, 268, ("dog",)), (269, 275, ("wild dog",)), (276, 276, ("hyena",)),
    (277, 280, ("fox",)), (281, 285, ("cat",)), (286, 293, ("wild cat",)), (294, 297, ("bear",)),
    (300, 326, ("insect",)), (321, 326, ("butterfly",)), (330, 332, ("rabbit",)), (333, 338, ("rodent",)),
    (340, 354, ("hoofed animal",)), (356, 362, ("mustelid",)), (365, 382, ("monkey",)), (383, 384, ("lemur",)),
    (385, 386, ("elephant",)), (387, 388, ("panda",)), (389, 397, ("fish",)),
    (923, 969, ("food",)), (936, 957, ("fruit and vegetables",)), (966, 969, ("drink",)), (998, 998, ("plant",)),
    (970, 970, ("scenery",)), (972, 980, ("scenery",)), (984, 990, ("plant",)), (991, 997, ("mushroom",)),
)
_VEHICLES = {407, 436, 468, 511, 555, 569, 573, 575, 609, 627, 654, 656, 661, 675, 717, 734, 751, 757, 779, 864,
             866, 867, 874}  # road vehicles
_BOATS = {403, 472, 484, 510, 554, 576, 625, 628, 694, 724, 780, 814, 833, 871, 914}
_AIRCRAFT = {404, 405, 895, 908}
_TRAINS = {466, 547, 565, 705, 820, 829}
_BUILDINGS = {410, 415, 424, 425, 449, 454, 467, 483, 497, 498, 500, 509, 580, 582, 624, 634, 663, 668, 698, 727,
              743, 762, 788, 832, 853, 860, 865, 915}
_DOCUMENTS = {446, 549, 916, 917, 918, 921, 922}
# Renames (an ImageNet name that misleads or says little) and extra words, by class index.
_TAGS: dict[int, tuple[str, ...]] = {
    7: ("chicken", "rooster"), 8: ("chicken",), 97: ("duck",), 98: ("duck",), 99: ("goose",), 101: ("elephant",),
    281: ("tabby",), 282: ("tabby",), 283: ("persian",), 284: ("siamese",), 285: ("egyptian mau",),
    291: ("lion",), 292: ("tiger",), 330: ("rabbit",), 332: ("rabbit",), 339: ("horse",), 341: ("pig",),
    345: ("cattle",), 348: ("sheep",), 383: ("lemur",),
    134: ("crane",), 517: ("construction crane",), 638: ("swimsuit",), 639: ("swimsuit",), 726: ("hand plane",),
    881: ("piano",), 998: ("corn",), 989: ("rose hip",), 608: ("jeans",), 836: ("sunglasses",), 837: ("sunglasses",),
    737: ("bottle",), 412: ("trash can",), 468: ("taxi",), 436: ("station wagon",), 751: ("race car",),
    612: ("rickshaw",), 628: ("ocean liner",), 914: ("sailboat",), 780: ("sailboat",), 404: ("airliner",),
    981: ("person", "baseball"), 982: ("person", "wedding"), 983: ("person", "diving"),
    916: ("screenshot", "website"), 917: ("comic",), 918: ("crossword",), 921: ("book", "cover"),
    922: ("document", "menu"), 446: ("document", "binder"), 549: ("envelope",), 919: ("street sign", "sign"),
    970: ("mountain", "alps"), 972: ("cliff",), 973: ("coral reef", "underwater"), 974: ("geyser",),
    975: ("lake", "shore"), 976: ("coast", "headland"), 977: ("beach", "sand"), 978: ("beach", "sea"),
    979: ("valley",), 980: ("volcano",), 984: ("rapeseed", "flowers"), 985: ("daisy", "flowers"),
    986: ("orchid", "flowers"), 999: ("toilet paper",), 850: ("teddy bear",), 487: ("mobile phone",),
    590: ("handheld computer",), 664: ("monitor", "screen"), 782: ("screen",), 851: ("television", "screen"),
    620: ("laptop", "computer"), 527: ("desktop computer", "computer"), 508: ("keyboard", "computer"),
    878: ("typewriter",), 458: ("trombone", "brass"),
}


@cache
def class_tags(index: int) -> tuple[str, ...]:
    """Readable tags of one class, the general words first: 281 "tabby" → ("cat", "tabby")."""
    general = [tag for first, last, tags in _GROUPS if first <= index <= last for tag in tags]
    for members, tag in ((_VEHICLES, "vehicle"), (_BOATS, "boat"), (_AIRCRAFT, "aircraft"), (_TRAINS, "train"),
                         (_BUILDINGS, "building"), (_DOCUMENTS, "document")):
        if index in members:
            general.append(tag)
    own = _TAGS.get(index) or (classes()[index].name.lower(),)
    return tuple(dict.fromkeys([*general, *own]))


def subject(index: int) -> str:
    """What a description calls the main subject: "tabby cat", "golden retriever dog", "beach"."""
    own = (_TAGS.get(index) or (classes()[index].name.lower(),))[0]
    for pets, word in ((CAT_CLASSES, "cat"), (DOG_CLASSES, "dog")):
        if index in pets and not own.endswith(word):
            return f"{own} {word}"
    return own


def content_tags(top: Iterable[tuple[int, float]], *, min_score: float = 0.2) -> list[tuple[str, float]]:
    """Tags for an image's top ImageNet classes: each tag scores the summed probability of the classes that
    carry it (twenty dog breeds at 4% each still say `dog`), and tags under `min_score` are dropped."""
    scores: dict[str, float] = {}
    for index, probability in top:
        for tag in class_tags(index):
            scores[tag] = scores.get(tag, 0.0) + probability
    return sorted(((t, round(s, 4)) for t, s in scores.items() if s >= min_score), key=lambda ts: -ts[1])


def pet_probabilities(top: Iterable[tuple[int, float]]) -> tuple[float, float]:
    """ImageNet's own (cat, dog) probability mass among the top classes."""
    cat = dog = 0.0
    for index, probability in top:
        cat += probability if index in CAT_CLASSES else 0.0
        dog += probability if index in DOG_CLASSES else 0.0
    return cat, dog


def pet_groups() -> np.ndarray:
    """(1000, 3) membership of each class in: domestic cats, dog breeds, everything else."""
    groups = np.zeros((1000, 3), dtype=np.float32)
    groups[list(CAT_CLASSES), 0] = 1.0
    groups[list(DOG_CLASSES), 1] = 1.0
    groups[:, 2] = 1.0 - groups[:, 0] - groups[:, 1]
    return groups
