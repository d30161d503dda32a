"""`imago serve`: the Dagster UI (webserver + daemon, through `dagster dev`) and the API, together.

Both run as children in their own process groups. Ctrl-C or SIGTERM is forwarded to each group as
SIGINT (what `dagster dev` expects for a clean shutdown of its webserver, daemon and code server), and
anything still alive after a grace period is killed, so nothing is left behind. If this supervisor is
killed outright, the kernel sends each child SIGTERM (`PR_SET_PDEATHSIG`), and they shut down too.

One home, one service: a lock in the home is held by this process and its children, so a second start
against a home still in use says so instead of failing on a port. At start, runs a previous crash left
STARTED (their worker process is gone) are failed, so they are retried instead of holding run slots forever.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.dagster_instance import prepare_dagster_home

GRACE_SECONDS = 20


class HomeInUse(RuntimeError):
    pass


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def commands(host: str, api_port: int, dagster_port: int) -> dict[str, list[str]]:
    return {
        "dagster": [_bin("dagster"), "dev", "-m", "imago_pipeline.definitions", "-h", host, "-p", str(dagster_port)],
        "api": [_bin("uvicorn"), "imago_api.main:create_app", "--factory", "--host", host, "--port", str(api_port),
                "--no-access-log",  # the API logs each request itself, without query strings
                "--timeout-graceful-shutdown", "3"],  # open event streams do not hold up a stop
    }


def lock_home(home: Path) -> int:
    """Hold `<home>/serve.lock` (released by the kernel when every holder is gone); HomeInUse otherwise."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "serve.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = path.read_text().strip() or "unknown"
        os.close(fd)
        raise HomeInUse(f"{home} is in use by a running imago serve (pid {holder}); stop it first") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def _child_setup() -> None:
    from imago_pipeline.core.parallel import die_with_parent

    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background launch would otherwise ignore it
    die_with_parent(signal.SIGTERM)  # a graceful stop when this supervisor dies, even by kill -9


def fail_runs_left_behind(settings: ImagoSettings) -> list[str]:
    """Runs a crash left unfinished in this home's Dagster instance, failed so they are retried."""
    import dagster as dg

    from imago_pipeline.dagster_internals import fail_orphaned_runs

    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        return fail_orphaned_runs(instance)


def serve(host: str = "127.0.0.1", api_port: int = 8000, dagster_port: int = 3000) -> int:
    settings = ImagoSettings()
    try:
        lock = lock_home(settings.resolved_home)
    except HomeInUse as exc:
        print(f"imago serve: {exc}", file=sys.stderr, flush=True)
        return 1
    busy = [str(port) for port in (api_port, dagster_port) if _port_taken(host, port)]
    if busy:
        print(f"imago serve: port {' and '.join(busy)} on {host} is already in use", file=sys.stderr, flush=True)
        return 1
    prepare_dagster_home(settings)
    settings.drop_root.mkdir(parents=True, exist_ok=True)
    failed = fail_runs_left_behind(settings)
    if failed:
        print(f"failed {len(failed)} run{'s' if len(failed) != 1 else ''} a previous stop or crash left "
              "unfinished; they will be retried", flush=True)
    env = {**os.environ, "DAGSTER_HOME": str(settings.dagster_home)}
    env.setdefault("IMAGO_LOG_FORMAT", "console")  # a person reads these; production keeps JSON
    children: dict[str, subprocess.Popen] = {}
    stopping = False

    def stop(_signum=None, _frame=None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for name, command in commands(host, api_port, dagster_port).items():
        # the children hold the home's lock too: while any of them lives, the home is in use
        children[name] = subprocess.Popen(command, env=env, start_new_session=True, pass_fds=(lock,),
                                          preexec_fn=_child_setup)
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
    fail_runs_left_behind(settings)  # a run interrupted by the stop is failed now, and retried at next start
    return exit_code
