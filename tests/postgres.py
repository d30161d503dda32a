"""Find or start a Postgres server for the tests.

Order: `IMAGO_TEST_POSTGRES_URL`; else the server on 127.0.0.1:5432 when it answers; else a throwaway
cluster started from the installed PostgreSQL binaries (as the `postgres` user when we are root, because
initdb refuses to run as root). Never skipped: the Postgres tests are part of the contract.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2


def _answers(url: str) -> bool:
    try:
        psycopg2.connect(url, connect_timeout=3).close()
        return True
    except psycopg2.OperationalError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return found


class ThrowawayCluster:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="imago-pg-"))
        self.port = _free_port()
        as_root = os.geteuid() == 0
        self.prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
        if as_root:
            shutil.chown(self.dir, "postgres")
        data = self.dir / "data"
        subprocess.run([*self.prefix, _pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
                       check=True, capture_output=True)
        self.data = data
        self.start()
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        subprocess.run([*self.prefix, _pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w",
                        "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True)

    def halt(self, mode: str = "immediate") -> None:
        """Stop the server and keep its data (`immediate`: as a crash would, without a clean shutdown)."""
        subprocess.run([*self.prefix, _pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
                       check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run([*self.prefix, _pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"],
                       capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def server_url() -> tuple[str, ThrowawayCluster | None]:
    """An admin URL (to the `postgres` database) and the cluster to stop afterwards, if we started one."""
    url = os.environ.get("IMAGO_TEST_POSTGRES_URL")
    if url:
        return url, None
    local = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
    if _answers(local.replace("+psycopg2", "")):
        return local, None
    cluster = ThrowawayCluster()
    for _ in range(50):
        if _answers(cluster.url.replace("+psycopg2", "")):
            break
        time.sleep(0.2)
    return cluster.url, cluster


def create_database(admin_url: str, name: str) -> str:
    connection = psycopg2.connect(admin_url.replace("+psycopg2", ""))
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(admin_url: str, name: str) -> None:
    connection = psycopg2.connect(admin_url.replace("+psycopg2", ""))
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    connection.close()
