"""Retraining from feedback, timed: a candidate head trained on the base set plus a few thousand
feedback-labelled images, evaluated on the fixed validation set and gated against production.

The feedback images are registered in a fresh catalog with their embeddings stored, as the pipeline's
embedding stage leaves them (the cat and dog photos of `catsdogs/train`, the training side of the licensed
non-pet images, and re-encoded copies of them up to `--feedback` images); each gets a labelled feedback row.
Then `train_candidate` runs twice: with the base and validation embeddings not yet cached (the first
retraining of an install) and cached (every later one). Prints figures; asserts nothing.

    .venv/bin/python bench/retrain.py [--data ../shared/data] [--feedback 3000]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image

from imago_pipeline.core.catalog import Catalog, StageOutcome
from imago_pipeline.core.catalog.models import ImageEmbedding
from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.core.embedding import encoder as embedding_encoder
from imago_pipeline.core.ingest import register_image
from imago_pipeline.core.stores.blobs import LocalBlobStore
from training.registry import open_model_store
from training.retrain import train_candidate


def labelled_files(data: Path) -> list[tuple[str, bytes]]:
    """Training-side images only, so the validation set stays unseen and the gate's figures mean something."""
    files = [(p.parent.name, p.read_bytes()) for p in sorted((data / "catsdogs" / "train").glob("*/*.jpg"))]
    return files + [("other", p.read_bytes()) for p in sorted((REPO / "training" / "data" / "other").glob("*/train/*"))]


def reencoded(data: bytes, quality: int) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--feedback", type=int, default=3000)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="imago-retrain-"))
    try:
        settings = ImagoSettings(home=home, training_data=REPO / "training" / "sets" / "train.csv",
                                 validation_data=REPO / "training" / "sets" / "validation.csv")
        catalog = Catalog.connect(settings.catalog_url)
        store = LocalBlobStore(settings.blob_root)
        tenant = catalog.clients.get_or_create("bench").id
        files = labelled_files(args.data)
        quality, items = 90, []
        while len(items) < args.feedback:
            items += [(label, data if quality == 90 else reencoded(data, quality)) for label, data in files]
            quality -= 10
        items = items[: args.feedback]
        encoder = embedding_encoder.shared_encoder()
        started = time.perf_counter()
        for start in range(0, len(items), 64):
            chunk = items[start:start + 64]
            ids = [register_image(catalog, store, settings, tenant_id=tenant, filename=f"{start + n}.jpg", data=data,
                                  status="done").image.id for n, (_, data) in enumerate(chunk)]
            found = encoder.encode_images([data for _, data in chunk])
            catalog.results.save_stage("embedding", [StageOutcome(i, tenant, "done") for i in ids], ImageEmbedding, [
                {"image_id": i, "tenant_id": tenant, "vector": embedding_encoder.to_bytes(f.vector),
                 "fingerprint": f.fingerprint.tobytes(), "imagenet": [list(p) for p in f.imagenet],
                 "model": encoder.version} for i, f in zip(ids, found)])
            scoped = catalog.for_tenant(tenant)
            for image_id, (label, _) in zip(ids, chunk):
                scoped.add_feedback(image_id, correct=False, label=label)
        print(f"{len(items)} feedback images registered with their embeddings in {time.perf_counter() - started:.0f} s "
              f"(setup, not part of retraining); {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")

        models = open_model_store(catalog, store, settings.models_dir)
        for run in ("first retraining (base and validation embeddings computed)", "next retraining (cached)"):
            started = time.perf_counter()
            gate = train_candidate(models, settings)
            seconds = time.perf_counter() - started
            print(f"{run}: {seconds:.1f} s in all; {gate.training_images} training images "
                  f"({gate.feedback_images} from feedback), {gate.validation_images} validation images; "
                  f"head training {gate.train_seconds:.1f} s; {gate.metric} candidate {gate.candidate_accuracy:.4f} "
                  f"vs production {gate.production_accuracy:.4f}: {'promote' if gate.passed else 'keep'}")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
