"""Classifier speed: decode + embedding (EfficientNet-Lite0, onnxruntime) + head, batched and one at a time.

Prints (asserts nothing):
- start-up: building the encoder from the weights file (what a fresh process pays once), and the head;
- batched throughput, decode in this process: images/s for the whole path, and the backbone alone;
- batched throughput, decode on a pool of one process per core (what the pipeline's embedding stage does);
- single-image latency (decode + embedding + head), median and p90, on a warm encoder.

    .venv/bin/python bench/classifier.py [--data ../shared/data] [--limit 400]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np

from imago_pipeline.core.embedding.encoder import Encoder, pixels
from imago_pipeline.core.embedding.head import Head
from training.registry import BASELINE


def collect(data: Path, limit: int) -> list[bytes]:
    """A mix like real uploads: pet photos (~250 px), larger camera photos, licensed photos and screenshots."""
    paths = sorted((data / "catsdogs" / "val").glob("*/*.jpg"))[: limit // 2]
    paths += sorted((data / "exif" / "exif-samples" / "jpg").rglob("*.jpg"))
    paths += sorted((REPO / "training" / "data" / "other").rglob("*.jpg"))
    return [p.read_bytes() for p in paths[:limit]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    images = collect(args.data, args.limit)
    cores = len(os.sched_getaffinity(0))
    print(f"{len(images)} images ({sum(map(len, images)) / 1e6:.1f} MB), {cores} cores, batch {args.batch}, "
          f"load average {os.getloadavg()[0]:.1f}")

    started = time.perf_counter()
    encoder = Encoder()
    built = time.perf_counter() - started
    started = time.perf_counter()
    head = Head.load(BASELINE.model)
    loaded = time.perf_counter() - started
    print(f"start-up: encoder (sha256 + restricted unpickle + ONNX graph + session) {built:.2f} s, head {loaded:.3f} s")
    encoder.encode(np.stack([pixels(images[0])] * 8))  # warm-up

    started = time.perf_counter()
    backbone_s = 0.0
    for start in range(0, len(images), args.batch):
        batch = np.stack([pixels(data) for data in images[start:start + args.batch]])
        t = time.perf_counter()
        found = encoder.encode(batch)
        backbone_s += time.perf_counter() - t
        head.predict(np.stack([f.vector for f in found]))
    total = time.perf_counter() - started
    print(f"batched, decode here: {len(images) / total:.1f} images/s (decode + embedding + head); "
          f"backbone alone {len(images) / backbone_s:.1f} images/s")

    with ProcessPoolExecutor(cores) as pool:
        list(pool.map(pixels, images[:cores]))  # start the workers
        started = time.perf_counter()
        for start in range(0, len(images), args.batch):
            batch = np.stack(list(pool.map(pixels, images[start:start + args.batch], chunksize=4)))
            head.predict(np.stack([f.vector for f in encoder.encode(batch)]))
        total = time.perf_counter() - started
    print(f"batched, decode on {cores} worker processes: {len(images) / total:.1f} images/s")

    latencies = []
    for data in images[:60]:
        t = time.perf_counter()
        found = encoder.encode(pixels(data)[None])
        head.predict(found[0].vector[None])
        latencies.append((time.perf_counter() - t) * 1000)
    latencies.sort()
    p90 = latencies[int(len(latencies) * 0.9)]
    print(f"single image: median {statistics.median(latencies):.1f} ms, p90 {p90:.1f} ms (decode + embedding + head, "
          "warm)")


if __name__ == "__main__":
    main()
