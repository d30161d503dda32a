"""A real S3-compatible server on loopback for the tests: moto's standalone server (`moto_server`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.http_server import free_port

CREDENTIALS = {"access_key_id": "imago-test", "secret_access_key": "imago-test-secret"}


def _binary() -> str:
    local = Path(sys.executable).with_name("moto_server")
    return str(local) if local.exists() else (shutil.which("moto_server") or "moto_server")


@contextmanager
def moto_server(host: str = "127.0.0.1"):
    """Yield the endpoint URL of a fresh moto server listening on `host`; stop it afterwards."""
    port = free_port()
    process = subprocess.Popen([_binary(), "-H", host, "-p", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    endpoint = f"http://{host}:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                httpx.get(endpoint, timeout=1)
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.time() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
