"""Soak benchmark: `imago serve` left alone under a steady stream of uploads, memory and images watched.

Starts the service on a fresh home (embedded default, every stage), uploads `--images` real photos at an
even pace over `--minutes` (over HTTP, on loopback), samples the summed RSS of the service's whole process
tree every `--sample-s` seconds, then waits for every image to finish. Prints the images lost (not `done` or
`failed` at the end), the RSS at start, after the first 100 images, at its peak, at the end (once the last
runs are over) and the lowest of each minute (the service between runs), the runs and the RSS per run.
Targets: 0 lost, final RSS within 20% of the RSS after the first 100 images.

Photos come from `../shared/data` (cats and dogs, EXIF, OCR) and `samples/`; past their number, copies with
a few bytes appended after the image data (a new SHA-256, the same pixels) keep every upload a new image.

    .venv/bin/python bench/soak.py [--images 2000] [--minutes 20] [--sample-s 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from itertools import cycle
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import dagster as dg

from tests.serve_harness import FINISHED, Serve

SHARED = REPO.parent / "shared" / "data"
SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".heic", ".gif"}


def photos() -> list[Path]:
    folders = [SHARED / "catsdogs", SHARED / "exif", SHARED / "ocr", REPO / "samples"]
    return sorted(p for folder in folders if folder.is_dir() for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES)


def upload_stream(service: Serve, total: int, seconds: float, ids: list[int], errors: list[str]) -> None:
    pace = seconds / total
    started = time.time()
    source = cycle(photos())
    with service.client() as client:
        for n in range(total):
            path = next(source)
            data = path.read_bytes()
            if n >= len(photos()):
                data += f"\0soak copy {n}".encode()  # after the image data: same pixels, new content hash
            answer = client.post("/images", files={"file": (path.name, data)})
            if answer.status_code in (200, 201):
                ids.append(answer.json()["id"])
            else:
                errors.append(f"{path.name}: {answer.status_code} {answer.text[:120]}")
            time.sleep(max(0.0, started + (n + 1) * pace - time.time()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--sample-s", type=float, default=5)
    parser.add_argument("--finish-timeout-s", type=float, default=1800)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="imago-soak-")) / "home"
    service = Serve(home).start()
    ids: list[int] = []
    errors: list[str] = []
    samples: list[tuple[float, int, float]] = []  # (seconds since start, images uploaded, RSS MiB)
    started = time.time()
    uploader = threading.Thread(target=upload_stream, args=(service, args.images, args.minutes * 60, ids, errors))
    uploader.start()
    try:
        with service.client() as client:
            finished_at = None
            while True:
                samples.append((time.time() - started, len(ids), service.rss_mb()))
                if not uploader.is_alive():
                    statuses = service.statuses(client, ids)
                    if all(s in FINISHED for s in statuses.values()) and len(statuses) == len(set(ids)):
                        finished_at = time.time()
                        break
                    if time.time() - started > args.minutes * 60 + args.finish_timeout_s:
                        break
                time.sleep(args.sample_s)
            statuses = service.statuses(client, ids)
        # the final figure is the service at rest: wait for the last runs (SQL models rebuilt by automation)
        deadline = time.time() + 300
        while service.run_workers() and time.time() < deadline:
            time.sleep(2)
        samples.append((time.time() - started, len(ids), service.rss_mb()))
        with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
            runs = instance.get_runs(dg.RunsFilter(job_name="process_images"))
            run_statuses = [r.status.value for r in runs]
        leftover = len(service.run_workers())
    finally:
        uploader.join()
        service.stop()

    lost = [i for i in set(ids) if statuses.get(i) not in FINISHED]
    after_100 = next((rss for _, uploaded, rss in samples if uploaded >= 100), samples[0][2])
    peak, final = max(rss for *_, rss in samples), samples[-1][2]
    minutes = {}
    for seconds, _, rss in samples:  # the lowest RSS of each minute: the service between runs
        minutes[int(seconds // 60)] = min(rss, minutes.get(int(seconds // 60), rss))
    figures = {
        "rss_at_start_mb": round(samples[0][2], 1),
        "rss_lowest_per_minute_mb": [round(v) for _, v in sorted(minutes.items())],
        "images_uploaded": len(ids), "upload_errors": len(errors), "images_lost": len(lost),
        "done": sum(s == "done" for s in statuses.values()), "failed": sum(s == "failed" for s in statuses.values()),
        "runs": len(runs), "runs_succeeded": run_statuses.count("SUCCESS"),
        "images_per_run_mean": round(len(ids) / max(1, len(runs)), 1),
        "rss_after_100_images_mb": round(after_100, 1), "rss_peak_mb": round(peak, 1),
        "rss_final_mb": round(final, 1), "final_vs_after_100": round(final / after_100, 3),
        "rss_growth_per_run_kb": round((final - after_100) * 1024 / max(1, len(runs)), 1),
        "run_processes_left": leftover,
        "wall_s": round((finished_at or time.time()) - started, 1),
    }
    for name, value in figures.items():
        print(f"{name:28} {value}")
    for error in errors[:10]:
        print(f"upload error: {error}")
    if args.json:
        args.json.write_text(json.dumps({"figures": figures, "samples": samples}, indent=1))
    ok = not lost and final <= after_100 * 1.2
    print("target met: 0 lost, final RSS within 20% of the RSS after 100 images" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
