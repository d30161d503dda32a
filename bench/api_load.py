"""Upload overhead under load: the API's `POST /images` against a bare FastAPI app, same load, same run.

Both servers run under uvicorn (one process each, loopback). The load is bounded: `--clients` concurrent
clients (20) each upload `--requests` real photos one after another (distinct files, so every upload is
sniffed, decoded, checked against the pixel cap, deduplicated, counted against the quota and stored). The
bare app accepts the same multipart files and answers 201 with a small JSON body, doing nothing else. The
API runs on Postgres (a fresh database on the local server) unless `--sqlite`, and keeps the originals in a
local folder unless `--s3` (a moto S3 server on loopback; `--s3-rtt-ms 10` puts it 10 ms away, as a cloud
store is). Prints p50/p95/p99 per server and the API's ratio to the bare app, the CPU each side spent per
upload (servers with their workers, the database, the clients) and how busy the machine was. The clients
are threads in 4 processes. With `--profile`, py-spy samples the API process during its load and the top
functions (by own time and by total time) are printed.

    .venv/bin/python bench/api_load.py [--clients 20] [--requests 15] [--sqlite] [--s3 [--s3-rtt-ms 10]]
                                       [--profile [--all-frames]]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services import free_port, stop_groups, wait_for_http

BARE_APP = '''
from fastapi import FastAPI, File, UploadFile, status

app = FastAPI()


@app.post("/images", status_code=status.HTTP_201_CREATED)
def upload(file: UploadFile = File(...)) -> dict:
    data = file.file.read()
    return {"id": 1, "bytes": len(data), "name": file.filename}
'''


def photos(count: int) -> list[tuple[str, bytes]]:
    root = REPO.parent / "shared" / "data" / "catsdogs"
    paths = sorted(root.glob("*/*/*.jpg"))[:count]
    if len(paths) < count:
        raise SystemExit(f"only {len(paths)} photos under {root}")
    return [(p.name, p.read_bytes()) for p in paths]


def load(url: str, key: str | None, files: list[tuple[str, bytes]], clients: int,
         processes: int = 4) -> list[float]:
    """`clients` clients, each uploading its share of `files` one after another; returns latencies (s).

    The clients are threads spread over `processes` processes: in one process, 20 threads wait for each
    other's interpreter lock and the latencies measured include that wait (most for the faster server)."""
    processes = max(1, min(processes, clients))
    if processes == 1:
        latencies, errors = _client_threads(url, key, [files[i::clients] for i in range(clients)], False)
        return _checked(latencies, errors)
    global _START
    context = multiprocessing.get_context("fork")
    _START = context.Barrier(clients)  # inherited by the forked clients (a barrier cannot be sent to them)
    groups = [[files[i::clients] for i in range(clients) if i % processes == p] for p in range(processes)]
    pool = context.Pool(processes)
    try:
        results = pool.starmap(_client_threads, [(url, key, shares, True) for shares in groups])
    finally:
        pool.close()
        pool.join()
    return _checked([latency for part, _ in results for latency in part], [e for _, part in results for e in part])


def _checked(latencies: list[float], errors: list[str]) -> list[float]:
    if errors:
        raise SystemExit(f"{len(errors)} uploads failed, e.g. {errors[0]}")
    return latencies


_START = None
PROFILE_RATE = 1000  # samples a second: a load of a few seconds needs many to rank the functions


def _client_threads(url: str, key: str | None, shares: list[list[tuple[str, bytes]]], shared_start: bool
                    ) -> tuple[list[float], list[str]]:
    """Latencies and failures, returned rather than raised: a pool whose worker exits never answers."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = _START if shared_start else threading.Barrier(len(shares))

    def client(share):
        headers = {"X-API-Key": key} if key else {}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            start.wait()
            for name, data in share:
                began = time.perf_counter()
                try:
                    answer = http.post("/images", files={"file": (name, data, "image/jpeg")})
                except httpx.HTTPError as error:
                    with lock:
                        errors.append(f"{type(error).__name__}: {error}")
                    continue
                elapsed = time.perf_counter() - began
                with lock:
                    latencies.append(elapsed)
                    if answer.status_code != 201:
                        errors.append(f"{answer.status_code} {answer.text[:120]}")

    threads = [threading.Thread(target=client, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors


def cpu_seconds(pids: list[tuple[str, int]]) -> dict[str, float]:
    """CPU time (user + system) used so far by each server, the database's processes and this process (the
    clients). Under a closed load a server's latency follows its CPU per request, so this says where the
    time goes."""
    used = {}
    for name, pid in pids:
        server = psutil.Process(pid)
        used[name] = 0.0
        for process in (server, *server.children(recursive=True)):  # with --workers, the workers
            times = process.cpu_times()
            used[name] += times.user + times.system
    database = 0.0
    for process in psutil.process_iter(["name", "cpu_times"]):
        if process.info["name"] == "postgres" and process.info["cpu_times"] is not None:
            database += process.info["cpu_times"].user + process.info["cpu_times"].system
    used["postgres"] = database
    machine = psutil.cpu_times()
    used["machine busy"] = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
    own = psutil.Process().cpu_times()
    used["clients"] = own.user + own.system + own.children_user + own.children_system  # children: the clients' pool
    return used


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": statistics.median(ordered) * 1000, "p95": pick(0.95) * 1000, "p99": pick(0.99) * 1000}


def profile_top(pid: int, seconds: float, out: Path, idle: bool = False) -> subprocess.Popen | None:
    """py-spy on the API: threads holding the GIL (CPU work), or every thread, waiting ones too (`idle`)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy not installed: no profile")
        return None
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                             "--rate", str(PROFILE_RATE),
                             "--format", "raw", "--output", str(out), "--nonblocking",
                             "--idle" if idle else "--gil"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarise_profile(path: Path, top: int = 25, all_frames: bool = False) -> None:
    """py-spy's raw (collapsed stacks) output -> the functions with most own and total samples."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f]
        samples += n
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + n
    print(f"profile of the API during its load: {samples} samples")
    print("  own time:")
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {n / samples:6.1%}  {frame[:150]}")
    print("  total time" + ("" if all_frames else " (frames of this repository)") + ":")
    ours = [(f, n) for f, n in total.items() if all_frames or "imago" in f]
    for frame, n in sorted(ours, key=lambda kv: -kv[1])[:top]:
        print(f"    {n / samples:6.1%}  {frame[:150]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=15, help="uploads per client")
    parser.add_argument("--sqlite", action="store_true", help="the embedded catalog instead of Postgres")
    parser.add_argument("--s3", action="store_true", help="originals on S3 (a moto server) instead of a folder")
    parser.add_argument("--s3-rtt-ms", type=float, default=0.0,
                        help="with --s3: the S3 server this much further away (a delaying relay in front of it)")
    parser.add_argument("--profile", action="store_true", help="sample the API with py-spy during its load")
    parser.add_argument("--profile-waits", action="store_true", help="with --profile: every thread, waiting too")
    parser.add_argument("--all-frames", action="store_true", help="with --profile: total time of every frame")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes, for both servers")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="imago-api-load-"))
    (work / "bare_app.py").write_text(BARE_APP)
    files = photos(args.clients * args.requests * 2 + 1)
    warmup, bare_files, api_files = files[0], files[1::2], files[2::2]
    env = {**os.environ, "IMAGO_HOME": str(work / "imago"), "IMAGO_LOG_FORMAT": "text"}
    env.pop("DAGSTER_HOME", None)
    cleanup = []
    stack = contextlib.ExitStack()
    if not args.sqlite:
        from tests import postgres

        admin = os.environ.get("IMAGO_BENCH_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
        name = f"imago_api_load_{uuid.uuid4().hex[:8]}"
        env["IMAGO_DATABASE_URL"] = postgres.create_database(admin, name)
        cleanup.append(lambda: postgres.drop_database(admin, name))
    else:
        env.pop("IMAGO_DATABASE_URL", None)
    if args.s3:
        from tests.s3_server import CREDENTIALS, moto_server

        endpoint = stack.enter_context(moto_server())
        if args.s3_rtt_ms:
            from tests.netns import forward

            relay_port = free_port()
            stack.enter_context(forward("127.0.0.1", relay_port, "127.0.0.1", int(endpoint.rsplit(":", 1)[1]),
                                        delay_s=args.s3_rtt_ms / 2000))
            endpoint = f"http://127.0.0.1:{relay_port}"
        env.update(IMAGO_BLOB_BACKEND="s3", IMAGO_S3_ENDPOINT_URL=endpoint, IMAGO_S3_BUCKET="imago-load",
                   IMAGO_S3_ACCESS_KEY_ID=CREDENTIALS["access_key_id"],
                   IMAGO_S3_SECRET_ACCESS_KEY=CREDENTIALS["secret_access_key"])
        httpx.put(f"{endpoint}/imago-load", timeout=10).raise_for_status()  # the bucket
    uvicorn = str(Path(sys.executable).with_name("uvicorn"))
    log = (work / "servers.log").open("w")
    servers = {}
    try:
        key = subprocess.run([sys.executable, "-m", "imago_pipeline", "admin", "create-client", "load", "--plan",
                              "enterprise"], env=env, capture_output=True, text=True, check=True).stdout.strip()
        ports = {"bare": free_port(), "api": free_port()}
        workers = ["--workers", str(args.workers)] if args.workers > 1 else []
        servers["bare"] = subprocess.Popen([uvicorn, "bare_app:app", "--port", str(ports["bare"]), "--no-access-log",
                                            "--log-level", "warning", *workers], cwd=work, env=env, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True)
        servers["api"] = subprocess.Popen([uvicorn, "imago_api.main:create_app", "--factory", "--port",
                                           str(ports["api"]), "--no-access-log", "--log-level", "warning", *workers],
                                          cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        for port in ports.values():
            wait_for_http(f"http://127.0.0.1:{port}/docs", 60)
        api_url, bare_url = (f"http://127.0.0.1:{ports[n]}" for n in ("api", "bare"))
        # warm both (first-request imports), with a file not used in the measured load
        load(bare_url, None, [warmup], 1)
        load(api_url, key, [warmup], 1)
        watched = [("bare", servers["bare"].pid), ("api", servers["api"].pid)]
        cpu_before = cpu_seconds(watched)
        began = time.perf_counter()
        results = {"bare": load(bare_url, None, bare_files[: args.clients * args.requests], args.clients)}
        bare_seconds = time.perf_counter() - began
        cpu_mid = cpu_seconds(watched)
        spy = profile_top(servers["api"].pid, 600, work / "profile.txt", args.profile_waits) if args.profile else None
        began = time.perf_counter()
        results["api"] = load(api_url, key, api_files[: args.clients * args.requests], args.clients)
        api_seconds = time.perf_counter() - began
        cpu_after = cpu_seconds(watched)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        shape = ("SQLite" if args.sqlite else "Postgres") + (
            f", originals on S3 (moto, {args.s3_rtt_ms:g} ms away)" if args.s3 else "")
        print(f"{args.clients} clients x {args.requests} uploads of real photos, loopback; API on {shape}; ms")
        figures = {name: percentiles(values) for name, values in results.items()}
        for name in ("bare", "api"):
            f = figures[name]
            print(f"  {name:5s} p50 {f['p50']:7.1f}  p95 {f['p95']:7.1f}  p99 {f['p99']:7.1f}  "
                  f"({len(results[name])} uploads)")
        ratio = {q: figures["api"][q] / figures["bare"][q] for q in ("p50", "p95", "p99")}
        print(f"  ratio api/bare: p50 {ratio['p50']:.2f}x  p95 {ratio['p95']:.2f}x  p99 {ratio['p99']:.2f}x; "
              f"throughput: bare {len(results['bare']) / bare_seconds:.0f}, "
              f"API {len(results['api']) / api_seconds:.0f} uploads/s")
        per_upload = {name: 1000 * (cpu_mid[name] - cpu_before[name]) / len(results["bare"]) for name in cpu_mid}
        per_api_upload = {name: 1000 * (cpu_after[name] - cpu_mid[name]) / len(results["api"]) for name in cpu_mid}
        print(f"  CPU per upload, ms: bare app {per_upload['bare']:.2f}; API {per_api_upload['api']:.2f} "
              f"+ its database {per_api_upload['postgres']:.2f}; the load's clients {per_upload['clients']:.2f} "
              f"(bare) and {per_api_upload['clients']:.2f} (API), their connection setup included")
        cores = psutil.cpu_count()
        busy = {"bare": (cpu_mid["machine busy"] - cpu_before["machine busy"]) / (cores * bare_seconds),
                "api": (cpu_after["machine busy"] - cpu_mid["machine busy"]) / (cores * api_seconds)}
        print(f"  the machine's {cores} cores were busy {busy['bare']:.0%} (bare) and {busy['api']:.0%} (API) of "
              f"the load's time: at 100% the clients and the server share out the CPU")
        if spy is not None and (work / "profile.txt").exists():
            summarise_profile(work / "profile.txt", all_frames=args.all_frames)
    finally:
        stop_groups(servers.values(), grace=15)
        log.close()
        stack.close()
        for undo in cleanup:
            try:
                undo()
            except Exception as error:
                print(f"cleanup: {error}")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
