"""Upload to `done` for the person waiting for one image, and where the time goes.

Starts the service in a fresh home (the embedded default, every stage: `imago serve`; or the production
shape with `--production`: Postgres storage, `dagster-daemon` + a gRPC code server + the API as separate
processes), creates an enterprise client, uploads real images one at a time and waits for each to be
`done` over the image's event stream (`GET /images/{id}/events`, or polling `GET /images/{id}` with
`--poll`). For each image it prints the total and its parts, read from the run's Dagster events:

- upload:    the `POST /images` request
- sensor:    upload answered -> the run created by `upload_sensor`
- queue:     run created -> dequeued by the run coordinator
- start:     dequeued -> the run's process started executing (launch, code load)
- <asset>:   each step, start to success (`lake` = the stages' lake writes, inside their steps)
- finish:    last step -> the run marked successful
- seen:      the image marked `done` in the catalog (summary step) -> the client knew

With `--bulk N`, the same is measured again while `imago ingest` processes N other photos (bulk work,
niced, for another tenant), and the ratio of the two p50s is printed.

    .venv/bin/python bench/latency.py [--images 8] [--production] [--poll] [--bulk 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services import free_port, stop_groups, wait_for_http

SAMPLES = REPO / "tests" / "data" / "samples"
CLEANUP: list = []  # what to undo at the end (the production shape's databases)
STEPS = ("exif", "thumbnail", "ocr", "embedding", "classification", "vision", "image_summary")


def wait_for_grpc(port: int, env: dict[str, str], timeout: float = 120) -> None:
    deadline = time.time() + timeout
    dagster = str(Path(sys.executable).with_name("dagster"))
    while subprocess.run([dagster, "api", "grpc-health-check", "-p", str(port)], env=env,
                         capture_output=True).returncode:
        if time.time() > deadline:
            raise TimeoutError("the code server")
        time.sleep(0.5)


def images(count: int, offset: int = 0) -> list[Path]:
    shared = REPO.parent / "shared" / "data"
    pool = sorted(SAMPLES.glob("*.jpg")) + sorted((shared / "catsdogs" / "val").glob("*/*.jpg"))[::10]
    if len(pool) < offset + count + 1:
        raise SystemExit(f"only {len(pool)} sample images")
    return pool[offset: offset + count + 1]


def wait_done(client: httpx.Client, image_id: int, poll: bool, timeout: float = 120) -> tuple[str, float]:
    """Block until the image is done or failed; returns (status, when the client knew)."""
    if not poll:
        with client.stream("GET", f"/images/{image_id}/events", timeout=timeout) as stream:
            event = None
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event == "status":
                    status = json.loads(line[5:])["status"]
                    if status in ("done", "failed"):
                        return status, time.time()
        raise RuntimeError("the event stream ended before the image was done")
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.get(f"/images/{image_id}").json()["status"]
        if status in ("done", "failed"):
            return status, time.time()
        time.sleep(0.1)
    raise TimeoutError(f"image {image_id}")


def measure(api: str, key: str, paths: list[Path], catalog, instance, poll: bool,
            first_counts: bool = False) -> list:
    rows = []
    with httpx.Client(base_url=api, headers={"X-API-Key": key}, timeout=60) as client:
        for n, path in enumerate(paths):
            started = time.time()
            answer = client.post("/images", files={"file": (path.name, path.read_bytes())})
            uploaded = time.time()
            if answer.status_code != 201:
                raise SystemExit(f"upload refused: {answer.text}")
            image_id = answer.json()["id"]
            status, seen = wait_done(client, image_id, poll)
            parts = {"upload": uploaded - started, **breakdown(instance, image_id, uploaded, seen)}
            rows.append((n + first_counts, path.name, status, seen - started, parts))
            time.sleep(0.5)
    return rows


def report(rows: list, title: str) -> float:
    """Print the table; returns the p50 of the counted images."""
    columns = ["upload", "sensor", "queue", "start", *STEPS, "lake", "finish", "seen"]
    short = {"classification": "classify", "image_summary": "summary", "thumbnail": "thumb", "embedding": "embed"}
    print(f"{title}:")
    print(f"{'#':>2} {'image':28s} {'status':6s} {'total':>6s} " + " ".join(f"{short.get(c, c):>7s}" for c in columns))
    for n, name, status, total, parts in rows:
        print(f"{n:>2} {name[:28]:28s} {status:6s} {total:6.2f} "
              + " ".join(f"{parts.get(c, 0.0):7.2f}" for c in columns) + ("  (first, not counted)" if not n else ""))
    totals = [total for n, _, _, total, _ in rows if n]
    p50 = statistics.median(totals)
    first = [total for n, _, _, total, _ in rows if not n]
    print(f"upload to done over {len(totals)} images: p50 {p50:.2f} s, max {max(totals):.2f} s"
          + (f" (first {first[0]:.2f} s)" if first else ""))
    return p50


def start_bulk_ingest(home: Path, env: dict[str, str], count: int, log) -> subprocess.Popen:
    """`imago ingest` of `count` distinct photos (catsdogs, then mirrored copies) for another tenant."""
    from PIL import Image, ImageOps

    folder = home / "bulk"
    folder.mkdir()
    shared = REPO.parent / "shared" / "data" / "catsdogs"
    sources = sorted(shared.glob("*/*/*.jpg"))
    for n in range(count):
        source = sources[n % len(sources)]
        target = folder / f"{n:05d}-{source.name}"
        if n < len(sources):
            shutil.copy(source, target)
        else:
            ImageOps.mirror(Image.open(source).convert("RGB")).save(target, "JPEG", quality=90 - n // len(sources))
    return subprocess.Popen([sys.executable, "-m", "imago_pipeline", "ingest", str(folder), "--tenant", "bulk"],
                            env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_until_processing(catalog, count: int, timeout: float = 900) -> None:
    """Until the ingest registered its images and its runs are processing them."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len(catalog.work.ids_with_status("done", limit=100_000)) >= 20:
            return
        time.sleep(1)
    raise TimeoutError("the bulk ingest never started processing")


def breakdown(instance, image_id: int, uploaded: float, seen: float) -> dict[str, float]:
    """The run that processed the image and its events -> seconds per part."""
    import dagster as dg

    run = next(r for r in instance.get_runs(dg.RunsFilter(job_name="process_images"), limit=50)
               if int(r.tags.get("dagster/asset_partition_range_start", -1)) <= image_id
               <= int(r.tags.get("dagster/asset_partition_range_end", -1)))
    record = instance.get_run_record_by_id(run.run_id)
    events: dict[str, float] = {}
    steps: dict[str, list[float]] = {}
    lake = 0.0
    for entry in instance.all_logs(run.run_id):
        event = entry.dagster_event
        if event is None:
            continue
        kind = event.event_type.name
        events.setdefault(kind, entry.timestamp)
        if kind == "RUN_SUCCESS":
            events[kind] = entry.timestamp
        if event.step_key and kind in ("STEP_START", "STEP_SUCCESS"):
            steps.setdefault(event.step_key, [0.0, 0.0])[kind == "STEP_SUCCESS"] = entry.timestamp
        if kind == "ASSET_MATERIALIZATION":
            value = event.event_specific_data.materialization.metadata.get("lake_write_s")
            lake += float(value.value) if value is not None else 0.0
    created = record.create_timestamp.timestamp()
    parts = {"sensor": created - uploaded,
             "queue": events.get("RUN_DEQUEUED", created) - created,
             "start": events["RUN_START"] - events.get("RUN_DEQUEUED", created)}
    last_step = events["RUN_START"]
    for step in STEPS:
        if step in steps and all(steps[step]):
            parts[step] = steps[step][1] - steps[step][0]
            last_step = max(last_step, steps[step][1])
    parts["lake"] = lake
    parts["finish"] = events.get("RUN_SUCCESS", last_step) - last_step
    summary_done = steps.get("image_summary", [0, last_step])[1] or last_step
    parts["seen"] = seen - summary_done
    return parts


def start_embedded(home: Path, env: dict[str, str], api_port: int, dagster_port: int, log) -> list[subprocess.Popen]:
    imago = [sys.executable, "-m", "imago_pipeline"]
    return [subprocess.Popen([*imago, "serve", "--api-port", str(api_port), "--dagster-port", str(dagster_port)],
                             env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)]


def start_production(home: Path, env: dict[str, str], api_port: int, dagster_port: int, log) -> list[subprocess.Popen]:
    """Postgres storage for Dagster and the catalog (fresh databases), the daemon, a gRPC code server, the API."""
    import uuid

    from sqlalchemy import make_url

    from tests import postgres

    admin = os.environ.get("IMAGO_BENCH_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    suffix = uuid.uuid4().hex[:8]
    env["IMAGO_DATABASE_URL"] = postgres.create_database(admin, f"imago_bench_catalog_{suffix}")
    dagster_url = make_url(postgres.create_database(admin, f"imago_bench_dagster_{suffix}"))
    CLEANUP.extend(lambda name=name: postgres.drop_database(admin, name)
                   for name in (f"imago_bench_catalog_{suffix}", f"imago_bench_dagster_{suffix}"))
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    env.update(DAGSTER_HOME=str(dagster_home), DAGSTER_PG_HOST=dagster_url.host or "127.0.0.1",
               DAGSTER_PG_USER=dagster_url.username or "postgres", DAGSTER_PG_PASSWORD=dagster_url.password or "",
               DAGSTER_PG_DB=dagster_url.database or "")
    grpc_port = free_port()
    (home / "workspace.yaml").write_text(
        f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {grpc_port}\n      location_name: imago\n")
    bin_dir = Path(sys.executable).parent
    procs = [subprocess.Popen([str(bin_dir / "dagster"), "api", "grpc", "-m", "imago_pipeline.definitions",
                               "-h", "127.0.0.1", "-p", str(grpc_port)], env=env, cwd=home, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)]
    wait_for_grpc(grpc_port, env)
    procs.append(subprocess.Popen([str(bin_dir / "dagster-daemon"), "run", "-w", str(home / "workspace.yaml")],
                                  env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    procs.append(subprocess.Popen([str(bin_dir / "uvicorn"), "imago_api.main:create_app", "--factory",
                                   "--host", "127.0.0.1", "--port", str(api_port)], env=env, cwd=home, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True))
    return procs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8, help="images uploaded one at a time (after a first one)")
    parser.add_argument("--production", action="store_true", help="Postgres, dagster-daemon, gRPC code server")
    parser.add_argument("--poll", action="store_true", help="poll GET /images/{id} instead of the event stream")
    parser.add_argument("--keep", action="store_true", help="keep the home (its path is printed)")
    parser.add_argument("--bulk", type=int, default=0, metavar="N",
                        help="then measure again while `imago ingest` processes N other photos")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="imago-latency-"))
    env = {**os.environ, "IMAGO_HOME": str(home / "imago")}
    for name in ("DAGSTER_HOME", "IMAGO_DATABASE_URL"):
        env.pop(name, None)
    api_port, dagster_port = free_port(), free_port()
    log = (home / "service.log").open("w")
    procs = (start_production if args.production else start_embedded)(home, env, api_port, dagster_port, log)
    try:
        imago = [sys.executable, "-m", "imago_pipeline"]
        key = subprocess.run([*imago, "admin", "create-client", "latency", "--plan", "enterprise"], env=env,
                             cwd=home, capture_output=True, text=True, check=True).stdout.strip()
        api = f"http://127.0.0.1:{api_port}"
        wait_for_http(f"{api}/health", 90)
        if not args.production:
            wait_for_http(f"http://127.0.0.1:{dagster_port}/server_info", 120)
        os.environ.update({k: v for k, v in env.items() if k.startswith(("IMAGO_", "DAGSTER_"))})
        from imago_pipeline.core.config import ImagoSettings
        from imago_pipeline.dagster_instance import get_instance

        settings = ImagoSettings()
        instance = get_instance(settings) if not args.production else __import__("dagster").DagsterInstance.get()
        from imago_pipeline.core.catalog import Catalog

        catalog = Catalog.connect(settings.catalog_url)
        rows = measure(api, key, images(args.images), catalog, instance, args.poll)
        shape = "production shape (daemon + gRPC code server, Postgres)" if args.production else "imago serve"
        print(f"{shape}, {'polling' if args.poll else 'event stream'}; seconds")
        idle = report(rows, "idle")
        if args.bulk:
            ingest = start_bulk_ingest(home, env, args.bulk, log)
            procs.append(ingest)
            try:
                wait_until_processing(catalog, args.bulk)
                busy = report(measure(api, key, images(args.images, offset=args.images + 1), catalog, instance,
                                      args.poll, first_counts=True),
                              f"while `imago ingest` processes {args.bulk} images")
                done = catalog.work.ids_with_status("done", limit=100_000)
                print(f"under bulk load: p50 {busy / idle:.2f}x idle ({len(done)} images done by then)")
            finally:
                ingest.send_signal(signal.SIGINT)
    finally:
        stop_groups(procs, signal.SIGINT)  # what `imago serve` and dagster expect for a clean stop
        log.close()
        for undo in CLEANUP:
            try:
                undo()
            except Exception as error:  # still in use: say so, do not hide the figures
                print(f"cleanup: {error}")
        if args.keep:
            print(f"home kept: {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
