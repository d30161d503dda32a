"""`imago serve`: the Dagster UI (webserver + daemon, through `dagster dev`) and the API, together.

Both run as children in their own process groups. Ctrl-C or SIGTERM is forwarded to each group as
SIGINT (what `dagster dev` expects for a clean shutdown of its webserver, daemon and code server), and
anything still alive after a grace period is killed, so nothing is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from imago_pipeline.config import ImagoSettings
from imago_pipeline.runner import prepare_dagster_home

GRACE_SECONDS = 20


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def commands(host: str, api_port: int, dagster_port: int) -> dict[str, list[str]]:
    return {
        "dagster": [_bin("dagster"), "dev", "-m", "imago_pipeline.definitions", "-h", host, "-p", str(dagster_port)],
        "api": [_bin("uvicorn"), "imago_api.main:create_app", "--factory", "--host", host, "--port", str(api_port),
                "--no-access-log"],  # the API logs each request itself, without query strings
    }


def serve(host: str = "127.0.0.1", api_port: int = 8000, dagster_port: int = 3000) -> int:
    settings = ImagoSettings()
    prepare_dagster_home(settings)
    settings.drop_root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DAGSTER_HOME": str(settings.dagster_home)}
    children: dict[str, subprocess.Popen] = {}
    stopping = False

    def stop(_signum=None, _frame=None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for name, command in commands(host, api_port, dagster_port).items():
        # restore default SIGINT handling in the child (a background launch would otherwise ignore it)
        children[name] = subprocess.Popen(command, env=env, start_new_session=True,
                                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    print(f"Dagster UI: http://{host}:{dagster_port}   API: http://{host}:{api_port}/docs   "
          f"drop folder: {settings.drop_root}   (Ctrl-C stops both)", flush=True)
    exit_code = 0
    while not stopping:
        for name, child in children.items():
            if child.poll() is not None:
                print(f"{name} exited with {child.returncode}; stopping", file=sys.stderr, flush=True)
                exit_code, stopping = child.returncode or 1, True
        time.sleep(0.5)
    for child in children.values():
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGINT)
    deadline = time.time() + GRACE_SECONDS
    for child in children.values():
        try:
            child.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(child.pid, signal.SIGKILL)  # the group: also any grandchild the child left behind
        except ProcessLookupError:
            pass
    return exit_code
