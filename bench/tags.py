"""Offline tag quality: what the local vision provider's content tags say, against what a person sees.

Two measurements, printed (nothing asserted):

1. On `catsdogs/val` (270 photos): is the first tag `cat` for a cat photo and `dog` for a dog photo? (The
   provider puts the head's label first, then the ImageNet content tags.) Also reported: the same with the
   ImageNet content tags alone, without the head.
2. On 30 shared photos checked by hand (camera samples, street photos, scans, logos, HEIC phone photos): is
   the first content tag one of the words a person would accept for the picture (listed below), and is any
   content tag? Images with no content tag above the threshold are counted apart (the provider then says
   nothing about content rather than guess).

    .venv/bin/python bench/tags.py [--data ../shared/data] [--details]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np

from imago_pipeline.core.embedding.encoder import Encoder
from imago_pipeline.core.embedding.head import Head
from imago_pipeline.core.embedding.imagenet import classes, content_tags
from imago_pipeline.core.vision.local import CONTENT_THRESHOLD
from training.registry import BASELINE

# Checked by looking at each picture (2026-11-28); acceptable words for its main content, in the tags'
# vocabulary (ImageNet describes people by what they wear).
HAND_CHECKED: dict[str, set[str]] = {
    "exif/exif-samples/jpg/Canon_40D.jpg": {"lizard", "common iguana", "reptile"},  # an iguana's head
    "exif/exif-samples/jpg/Canon_40D_photoshop_import.jpg": {"lizard", "common iguana", "american chameleon",
                                                             "green lizard"},  # a green anole on bark
    "exif/exif-samples/jpg/Canon_DIGITAL_IXUS_400.jpg": {"moped", "motor scooter", "vehicle", "crash helmet",
                                                         "motorcycle"},  # a yellow sports motorcycle
    "exif/exif-samples/jpg/Canon_PowerShot_S40.jpg": {"flowers", "plant", "daisy", "pot", "vase"},  # frangipani
    "exif/exif-samples/jpg/Fujifilm_FinePix6900ZOOM.jpg": {"plant", "pot", "banana", "leaf"},  # big leaves
    "exif/exif-samples/jpg/Fujifilm_FinePix_E500.jpg": {"feather boa", "bird", "jay", "quill", "magpie"},  # a feather
    "exif/exif-samples/jpg/Konica_Minolta_DiMAGE_Z3.jpg": {"person", "cardigan", "sweatshirt", "jersey", "desk",
                                                           "wig", "suit", "stole", "fur coat"},  # a woman at a desk
    "exif/exif-samples/jpg/Nikon_COOLPIX_P1.jpg": {"vehicle", "minibus", "school bus", "trolleybus",
                                                   "passenger car", "recreational vehicle"},  # a coach
    "exif/exif-samples/jpg/Nikon_D70.jpg": {"lizard", "american chameleon", "green lizard", "plant"},  # anole, leaves
    "exif/exif-samples/jpg/PaintTool_sample.jpg": {"comic", "kimono", "cloak", "wig", "person", "book", "cover"},
    "exif/exif-samples/jpg/Panasonic_DMC-FZ30.jpg": {"prayer rug", "tile roof", "quilt", "book", "cover",
                                                     "envelope", "altar", "vault"},  # painted tiles with letters
    "exif/exif-samples/jpg/Reconyx_HC500_Hyperfire.jpg": {"scenery", "valley", "mountain", "alps", "ski",
                                                          "dogsled", "snowplow", "cliff"},  # snowy forest
    "exif/exif-samples/jpg/long_description.jpg": {"military uniform", "aircraft", "warplane", "assault rifle",
                                                   "rifle", "half track", "tank"},  # soldiers, helicopter
    "exif/exif-samples/jpg/gps/DSCN0010.jpg": {"scenery", "valley", "building", "cliff dwelling", "monastery",
                                               "tile roof", "alps", "mountain"},  # village among trees
    "exif/exif-samples/jpg/gps/DSCN0012.jpg": {"park bench", "scenery", "valley", "worm fence", "lakeside"},
    "exif/exif-samples/jpg/gps/DSCN0021.jpg": {"park bench", "fountain", "scenery", "obelisk", "pedestal"},
    "exif/exif-samples/jpg/gps/DSCN0025.jpg": {"building", "street", "monastery", "palace", "church", "prison",
                                               "bell cote", "vault", "patio"},  # a narrow street
    "exif/exif-samples/jpg/gps/DSCN0027.jpg": {"building", "church", "monastery", "bell cote", "palace"},
    "exif/exif-samples/jpg/gps/DSCN0029.jpg": {"building", "street", "vehicle", "cab", "monastery", "palace",
                                               "prison", "church"},
    "exif/exif-samples/jpg/gps/DSCN0038.jpg": {"building", "street", "monastery", "palace", "prison", "church",
                                               "patio", "tile roof"},
    "exif/exif-samples/jpg/gps/DSCN0040.jpg": {"building", "church", "monastery", "bell cote", "palace"},
    "exif/exif-samples/jpg/gps/DSCN0042.jpg": {"building", "church", "bell cote", "monastery", "palace", "prison"},
    "exif/exif-samples/tiff/Arbitro.tiff": {"document", "website", "screenshot", "street sign", "sign",
                                            "scoreboard", "book", "cover"},  # a text logo
    "exif/exif-samples/tiff/BSG1.tiff": {"stage", "spotlight", "theater curtain", "trombone", "brass",
                                         "cornet", "sax", "french horn"},  # a brass band on stage
    "exif/exif-samples/tiff/Cremieux11.tiff": {"document", "envelope", "letter opener", "fountain pen",
                                               "quill", "binder"},  # a handwritten signature
    "exif/exif-samples/tiff/DudleyLeavittUtah.tiff": {"person", "suit", "wig", "bow tie", "windsor tie",
                                                      "military uniform", "cloak", "fur coat"},  # old portrait
    "exif/exif-samples/tiff/Jobagent.tiff": {"document", "website", "screenshot", "sign", "street sign", "book",
                                             "cover", "scoreboard"},  # a text logo
    "exif/exif-samples/heic/IMG_5195.HEIC": {"flowers", "plant", "daisy", "orchid", "rapeseed", "pot"},
    "exif/exif-samples/heic/mobile/iphone_13_pro_max.HEIC": {"dining table", "china cabinet", "dishwasher",
                                                             "refrigerator", "microwave", "stove", "wok",
                                                             "building", "restaurant", "desk"},  # a kitchen
    "exif/exif-samples/heic/samplefilehub.heif": {"scenery", "valley", "cliff", "volcano", "mountain", "alps",
                                                  "geyser", "promontory", "coast", "headland"},  # Monument Valley
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--details", action="store_true", help="print each hand-checked image's tags")
    args = parser.parse_args()
    encoder, head = Encoder(), Head.load(BASELINE.model)

    paths = sorted((args.data / "catsdogs" / "val").glob("*/*.jpg"))
    found = encoder.encode_images([p.read_bytes() for p in paths])
    labels = [p.label for p in head.predict(np.stack([f.vector for f in found]))]
    truth = [p.parent.name for p in paths]
    first = [label if label in ("cat", "dog") else
             next(iter(t for t, _ in content_tags(f.imagenet, min_score=CONTENT_THRESHOLD)), "")
             for label, f in zip(labels, found)]
    imagenet_only = [next(iter(t for t, _ in content_tags(f.imagenet, min_score=CONTENT_THRESHOLD)), "")
                     for f in found]
    print(f"catsdogs/val, {len(paths)} photos: first tag is the right pet for "
          f"{sum(a == b for a, b in zip(first, truth))}/{len(paths)} "
          f"({np.mean([a == b for a, b in zip(first, truth)]):.1%}); "
          f"with ImageNet content tags alone {sum(a == b for a, b in zip(imagenet_only, truth))}/{len(paths)} "
          f"({np.mean([a == b for a, b in zip(imagenet_only, truth)]):.1%}, "
          f"{sum(not t for t in imagenet_only)} with no content tag)")

    names = classes()
    top_ok = any_ok = untagged = 0
    for relative, accepted in HAND_CHECKED.items():
        result = encoder.encode_images([(args.data / relative).read_bytes()])[0]
        tags = [t for t, _ in content_tags(result.imagenet, min_score=CONTENT_THRESHOLD)]
        untagged += not tags
        top_ok += bool(tags) and tags[0] in accepted
        any_ok += bool(set(tags) & accepted)
        if args.details:
            top = ", ".join(f"{names[i].name} {p:.2f}" for i, p in result.imagenet[:3])
            verdict = "ok" if tags and tags[0] in accepted else ("some" if set(tags) & accepted else "miss")
            print(f"  {verdict:4s} {relative}: tags {tags} (ImageNet: {top})")
    n = len(HAND_CHECKED)
    print(f"hand-checked photos, {n}: first content tag acceptable {top_ok}/{n} ({top_ok / n:.0%}), some content tag "
          f"acceptable {any_ok}/{n} ({any_ok / n:.0%}), no content tag {untagged}/{n}; "
          f"threshold {CONTENT_THRESHOLD}")


if __name__ == "__main__":
    main()
