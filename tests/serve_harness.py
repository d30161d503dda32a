"""`imago serve` as a real process tree, for the fault suite and the soak benchmark.

Starts the service on a home of its own and free loopback ports, uploads over HTTP, reads image statuses
from the API, finds the processes of the tree (run workers, pools), and can kill them with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from tests.http_server import free_port

REPO = Path(__file__).resolve().parents[1]
FINISHED = ("done", "failed")


def wait_until(condition, timeout: float, what: str, interval: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = condition()
        except (httpx.HTTPError, OSError):
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Serve:
    """One `imago serve` on `home` (a client key made first), restartable."""

    def __init__(self, home: Path, env: dict[str, str] | None = None, plan: str = "enterprise"):
        self.home = home
        self.env = {**os.environ, "IMAGO_HOME": str(home), "IMAGO_LOG_FORMAT": "text", **(env or {})}
        for name in ("DAGSTER_HOME", "DAGSTER_EVENT_BATCH_SIZE", "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"):
            self.env.pop(name, None)
        if "IMAGO_DATABASE_URL" not in (env or {}):
            self.env.pop("IMAGO_DATABASE_URL", None)
        home.mkdir(parents=True, exist_ok=True)
        self.key = subprocess.run([sys.executable, "-m", "imago_pipeline", "admin", "create-client", "harness",
                                   "--plan", plan], env=self.env, cwd=REPO, capture_output=True, text=True,
                                  check=True).stdout.strip()
        self.api_port, self.dagster_port = free_port(), free_port()
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, timeout: float = 180) -> Serve:
        self.starts += 1
        self.log = (self.home / f"serve-{self.starts}.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "imago_pipeline", "serve", "--api-port", str(self.api_port), "--dagster-port",
             str(self.dagster_port)], env=self.env, cwd=self.home, stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(lambda: httpx.get(f"{self.api}/health", timeout=2).status_code == 200, timeout, "the API")
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{self.dagster_port}/server_info", timeout=2).status_code
                   == 200, timeout, "the Dagster webserver")
        return self

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api, headers={"X-API-Key": self.key}, timeout=60)

    def upload(self, client: httpx.Client, path: Path, name: str | None = None) -> int:
        answer = client.post("/images", files={"file": (name or path.name, path.read_bytes())})
        assert answer.status_code in (200, 201), answer.text
        return answer.json()["id"]

    def statuses(self, client: httpx.Client, ids) -> dict[int, str]:
        wanted, found, offset = set(ids), {}, 0
        while True:
            page = client.get("/images", params={"limit": 200, "offset": offset}).json()
            found.update({i["id"]: i["status"] for i in page["items"] if i["id"] in wanted})
            offset += 200
            if offset >= page["total"]:
                return found

    def wait_finished(self, client: httpx.Client, ids, timeout: float) -> dict[int, str]:
        def finished():
            statuses = self.statuses(client, ids)
            return statuses if len(statuses) == len(set(ids)) and all(s in FINISHED for s in statuses.values()) \
                else None
        return wait_until(finished, timeout, f"{len(set(ids))} images to finish", interval=1)

    def tree(self) -> list[psutil.Process]:
        if self.process is None or self.process.poll() is not None:
            return []
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def run_workers(self) -> list[psutil.Process]:
        """Processes executing runs: a run forked by the run host and its pool workers (named imago-run), or
        Dagster's spawned run worker (IMAGO_WARM_RUNS=0), its forkserver and pool workers."""
        found = []
        for process in self.tree():
            try:
                command, name = " ".join(process.cmdline()), process.name()
            except psutil.NoSuchProcess:
                continue
            if name == "imago-run" or "multiprocessing.spawn" in command or "multiprocessing.forkserver" in command:
                found.append(process)
        return found

    def rss_mb(self) -> float:
        total = 0
        for process in self.tree():
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total / 2**20

    def kill_everything(self) -> None:
        """SIGKILL to every process of the tree at once: a power cut, as far as processes can tell."""
        processes = self.tree()
        for process in processes:
            try:
                process.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(processes, timeout=10)
        self.process.wait(timeout=10)
        self.log.close()

    def stop(self) -> int:
        """Ctrl-C, and every process of the tree gone."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        processes = self.tree()
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=90)
        _, alive = psutil.wait_procs(processes, timeout=15)
        self.log.close()
        assert not alive, f"left running: {[p.cmdline() for p in alive]}"
        return self.process.returncode

    def output(self) -> str:
        return "".join(path.read_text(errors="replace") for path in sorted(self.home.glob("serve-*.log")))
