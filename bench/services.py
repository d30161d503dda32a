"""What the benchmarks that start services share: a free port, waiting for an HTTP answer, stopping the
process groups they started (a signal, a grace period, then SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.http_server import free_port, wait_for_http

__all__ = ["free_port", "stop_groups", "wait_for_http"]


def stop_groups(processes: Iterable[subprocess.Popen], sig: int = signal.SIGTERM, grace: float = 30) -> None:
    """Signal each process's group, wait up to `grace` seconds for each, then kill what is left."""
    processes = list(processes)
    for process in processes:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
    for process in processes:
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
