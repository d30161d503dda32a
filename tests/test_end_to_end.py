"""The whole path under `imago serve`: HTTP upload, upload-sensor tick in the real daemon, a run, GET.

Also what an operator relies on: an image uploaded alone is done within about 10 seconds, and Ctrl-C
stops every process that was started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from tests.conftest import REPO, SAMPLES
from tests.http_server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _wait_for(url: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(url)


def test_upload_is_processed_by_the_daemon_and_serve_stops_cleanly(tmp_path, capsys):
    env = {**os.environ, "IMAGO_HOME": str(tmp_path / "imago")}
    env.pop("DAGSTER_HOME", None)
    env.pop("IMAGO_DATABASE_URL", None)
    imago = [sys.executable, "-m", "imago_pipeline"]
    key = subprocess.run([*imago, "admin", "create-client", "e2e"], env=env, cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.strip()
    api_port, dagster_port = free_port(), free_port()
    serve = subprocess.Popen([*imago, "serve", "--api-port", str(api_port), "--dagster-port", str(dagster_port)],
                             env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        api = f"http://127.0.0.1:{api_port}"
        _wait_for(f"{api}/health", 60)
        _wait_for(f"http://127.0.0.1:{dagster_port}/server_info", 120)
        # the first sensor tick after start-up is slower (code server warm-up): prime it with one image
        headers = {"X-API-Key": key}
        with httpx.Client(base_url=api, headers=headers, timeout=30) as client:
            latencies = []
            for name in ("Nikon_D70.jpg", "Canon_40D.jpg"):
                started = time.time()
                upload = client.post("/images", files={"file": (name, (SAMPLES / name).read_bytes())})
                assert upload.status_code == 201, upload.text
                image_id = upload.json()["id"]
                while client.get(f"/images/{image_id}").json()["status"] not in ("done", "failed"):
                    assert time.time() - started < 120, "image not processed within 2 minutes"
                    time.sleep(0.25)
                latencies.append(time.time() - started)
            exif = client.get(f"/images/{image_id}/exif").json()
        assert exif["make"] == "Canon" and exif["model"] == "Canon EOS 40D"
        with capsys.disabled():
            print(f"\nupload-to-done under imago serve: first {latencies[0]:.1f} s, then {latencies[1]:.1f} s")
        assert latencies[1] < 30  # about 10 s is the target; the benchmark reports the figure
    finally:
        children = psutil.Process(serve.pid).children(recursive=True)
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(timeout=60)
        finally:
            output = serve.stdout.read() if serve.stdout else ""
    assert serve.returncode == 0, output[-3000:]
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"
