"""The one module that relies on Dagster beyond its public API (`dagster._…`). Each use is here, with why,
and `tests/test_dagster_internals.py` fails when a Dagster upgrade breaks one of them.

- **Run-worker health.** Dagster's `DefaultRunLauncher` cannot tell whether a run's worker process is still
  alive, so its run monitoring never notices a `kill -9` of a run worker whose code server died with it:
  the run stays STARTED forever, holds a run slot, and its images wait. `ImagoRunLauncher` adds that check,
  so the daemon's run monitoring fails such runs (and run retries re-execute them); `imago serve` uses the
  same check at start for runs a previous crash left behind (`fail_orphaned_runs`), and the claims of the
  catalog ask it whether a run will still finish its images (`claim_alive`).
- **Erasure.** Dagster's `wipe_asset_partitions` is not implemented by its SQL event logs, so erasing an
  image deletes its partition's rows from the event log tables directly (`erase_dagster_partition`).
- **A fast SQLite event log** for the embedded default (`FastSqliteEventLogStorage`).
- **Partition-range tags**, with which one run materializes a range of image partitions.
- **Warm runs.** `ImagoRunLauncher` starts runs from the run host (`imago_pipeline.run_host`), which
  executes them as `dagster api execute_run` does (`execute_run_here`).
- **The sensor daemon's loop** wakes every `SENSOR_LOOP_SECONDS` instead of every 5 s, so an upload waits
  for `upload_sensor` about half a second, not 2.5 s (`tick_sensors_often`, applied when this module is
  loaded: the daemon loads it with the instance's run launcher and event log).
- **The step executor chosen when a run starts** (`defs/execution.py`): Dagster's in-process executor is
  made directly (`in_process_step_executor`), as its executor definition would with no config.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import psutil
from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus, EventLogEntry, RunsFilter
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, LaunchRunContext, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.event_log import ConsolidatedSqliteEventLogStorage, SqlEventLogStorageTable
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable, AssetEventTagsTable, AssetKeyTable
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    AUTO_RETRY_RUN_ID_TAG,
    GRPC_INFO_TAG,
    PARTITION_NAME_TAG,
    WILL_RETRY_TAG,
)
from dagster._serdes import deserialize_value, serialize_value
from sqlalchemy import create_engine, delete, event, select, update

from imago_pipeline.core.claims import CLAIM_TAG, LANE_TAG, OWNER_TAG, process_alive

__all__ = ["ASSET_PARTITION_RANGE_END_TAG", "ASSET_PARTITION_RANGE_START_TAG", "FastSqliteEventLogStorage",
           "ImagoRunLauncher", "claim_alive", "erase_dagster_partition", "fail_orphaned_runs",
           "forget_erased_partitions", "partition_still_named"]

UNFINISHED = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
              DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", socket.gethostname()}
# A failed run marked "will retry" whose retry has not appeared after this long is given up on, and its
# images go back to the queue: the retry daemon normally launches it within seconds, but was seen (once in
# a fault test) never to retry one of two runs failed at the same moment, which left its images waiting.
RETRY_PATIENCE_S = 120
SENSOR_LOOP_SECONDS = 1  # how often the sensor daemon looks (`tick_sensors_often`)


def tick_sensors_often(seconds: float = SENSOR_LOOP_SECONDS) -> None:
    """Let the sensor daemon look at its sensors every `seconds` (Dagster: every 5 s at most); each sensor's
    own `minimum_interval_seconds` still applies."""
    import dagster._daemon.sensor as sensor_daemon

    if hasattr(sensor_daemon, "MIN_INTERVAL_LOOP_TIME"):
        sensor_daemon.MIN_INTERVAL_LOOP_TIME = seconds  # type: ignore[attr-defined]


tick_sensors_often()


def run_worker_pid(instance: DagsterInstance, run: DagsterRun) -> tuple[int, float] | None:
    """(pid, when it was reported) of the process executing a launched run, from Dagster's own engine
    events ("Started process for run", "Executing steps in process"), which carry it as metadata."""
    for record in instance.get_records_for_run(run.run_id, of_type=DagsterEventType.ENGINE_EVENT,
                                               limit=20).records:
        entry = record.event_log_entry
        metadata = entry.dagster_event.engine_event_data.metadata if entry.dagster_event else {}
        pid = metadata.get("pid")
        if pid is not None and str(pid.value).isdigit():
            return int(pid.value), entry.timestamp
    return None


def _pid_started_before(pid: int, reported_at: float) -> bool:
    try:
        return psutil.Process(pid).create_time() <= reported_at + 1.0  # not a newer process with the same pid
    except psutil.NoSuchProcess:
        return False


def local_worker_alive(instance: DagsterInstance, run: DagsterRun) -> bool | None:
    """Whether the run's worker process on this host lives; None when this host cannot tell."""
    owner = run.tags.get(OWNER_TAG)
    if owner:  # an in-process run (`imago ingest`, `imago reprocess`): its owner is the worker
        return process_alive(owner)
    grpc = json.loads(run.tags.get(GRPC_INFO_TAG) or "{}")
    if grpc and not grpc.get("socket") and grpc.get("host") not in _LOCAL_HOSTS:
        return None  # launched by a code server on another host
    found = run_worker_pid(instance, run)
    if found is None:
        return None
    return _pid_started_before(*found)


class ImagoRunLauncher(DefaultRunLauncher):
    """Dagster's default launcher with two additions:

    - Runs of this code location start from the warm run host (`imago_pipeline.run_host`), a process of
      this launcher's host that has imported everything once, instead of a fresh process of the code
      server: about 4 s less per run. `IMAGO_WARM_RUNS=0` (or a run of another code location, or a host
      that cannot start) launches through the code server as Dagster does.
    - A worker health check: a run whose worker process is gone is reported FAILED to run monitoring.
    """

    _host: subprocess.Popen | None = None
    _host_lock = threading.Lock()

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        if warm_runs_enabled() and _is_ours(run):
            try:
                self._send_to_host(run)
                return
            except OSError as error:  # the host died and could not be restarted: the code server's way
                self._instance.report_engine_event(f"run host unavailable ({error}); launching through the "
                                                   "code server", run, cls=self.__class__)
        super().launch_run(context)

    def _send_to_host(self, run: DagsterRun) -> None:
        from imago_pipeline.core.config import ImagoSettings

        origin = run.job_code_origin
        request = {"run_id": run.run_id, "instance_ref": serialize_value(self._instance.get_ref()),
                   "job_name": run.job_name, "lane": run.tags.get(LANE_TAG, "interactive"),
                   "workers": ImagoSettings().workers,
                   "working_directory": getattr(origin.repository_origin.code_pointer, "working_directory", None)
                   if origin else None}
        line = (json.dumps(request) + "\n").encode()
        with self._host_lock:
            for attempt in range(2):
                host = self._running_host(restart=attempt > 0)
                try:
                    if host.stdin is None:
                        raise ValueError("no pipe to the run host")
                    host.stdin.write(line)
                    host.stdin.flush()
                    return
                except (BrokenPipeError, ValueError):
                    continue
        raise OSError("the run host does not answer")

    def _running_host(self, restart: bool = False) -> subprocess.Popen:
        host = type(self)._host
        if host is None or host.poll() is not None or restart:
            if host is not None and host.poll() is None:
                host.kill()
            host = subprocess.Popen([sys.executable, "-m", "imago_pipeline.run_host"], stdin=subprocess.PIPE,
                                    preexec_fn=_host_setup)
            type(self)._host = host
        return host

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished or GRPC_INFO_TAG in run.tags:
            return super().terminate(run_id)
        self._instance.report_run_canceling(run)
        found = run_worker_pid(self._instance, run)
        if found is None or not _pid_started_before(*found):
            return False
        os.kill(found[0], signal.SIGTERM)
        return True

    def dispose(self) -> None:
        host, type(self)._host = type(self)._host, None
        if host is not None and host.poll() is None:
            host.stdin.close() if host.stdin else None
        super().dispose()

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        alive = local_worker_alive(self._instance, run)
        if alive is None:
            alive = _code_server_runs_it(run)
        if alive is False:
            return CheckRunHealthResult(WorkerStatus.FAILED, "the run's worker process is gone")
        return CheckRunHealthResult(WorkerStatus.RUNNING)


def warm_runs_enabled() -> bool:
    return os.environ.get("IMAGO_WARM_RUNS", "1").strip().lower() not in ("0", "false", "no", "off")


def _is_ours(run: DagsterRun) -> bool:
    """A run of this package's code location, executed by the same Python (the run host can load it)."""
    origin = run.job_code_origin
    if origin is None:
        return False
    pointer = origin.repository_origin.code_pointer
    return (getattr(pointer, "module", None) == "imago_pipeline.definitions"
            and os.path.realpath(origin.repository_origin.executable_path or "") == os.path.realpath(sys.executable))


def _host_setup() -> None:
    from imago_pipeline.core.parallel import die_with_parent

    die_with_parent(signal.SIGTERM)


def execute_run_here(run_id: str, instance_ref: str) -> int:
    """Execute a launched run in this process, as `dagster api execute_run` does (the run host's children)."""
    from dagster._cli.api import _execute_run_command_body
    from dagster._core.instance import InstanceRef
    from dagster._utils.interrupts import capture_interrupts

    with capture_interrupts(), DagsterInstance.from_ref(deserialize_value(instance_ref, InstanceRef)) as instance:
        # Dagster's Postgres storages connect anew for every statement (NullPool): about 20 connections per
        # step. Its webserver switch keeps one pooled connection per storage instead (statement timeout off);
        # measured on the production shape: about 0.3 s less per step. A no-op on SQLite.
        instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=4)
        return _execute_run_command_body(run_id, instance, lambda _event: None, set_exit_code_on_failure=True)


def _code_server_runs_it(run: DagsterRun) -> bool | None:
    """Ask the code server that launched the run whether it still executes it (None: unreachable)."""
    from dagster._grpc.client import DagsterGrpcClient
    from dagster._grpc.types import CanCancelExecutionRequest, CanCancelExecutionResult

    info = json.loads(run.tags.get(GRPC_INFO_TAG) or "{}")
    if not info:
        return None
    client = DagsterGrpcClient(port=info.get("port"), socket=info.get("socket"), host=info.get("host"),
                               use_ssl=bool(info.get("use_ssl", False)))
    try:
        result = deserialize_value(client.can_cancel_execution(CanCancelExecutionRequest(run_id=run.run_id),
                                                               timeout=10), CanCancelExecutionResult)
    except Exception:  # unreachable (restarting): cannot tell
        return None
    return bool(result.can_cancel)


def fail_orphaned_runs(instance: DagsterInstance) -> list[str]:
    """Fail the unfinished runs whose worker process on this host is gone (what a crash of the whole
    service leaves: STARTED forever, holding run slots). Queued runs are left to the queue; a run that never
    got a process (STARTING, NOT_STARTED) counts as orphaned, as nothing of this home runs any more when
    this is called. Returns the run ids failed; run retries re-execute them."""
    failed = []
    for run in instance.get_runs(RunsFilter(statuses=[s for s in UNFINISHED if s != DagsterRunStatus.QUEUED])):
        alive = local_worker_alive(instance, run)
        if alive or (alive is None and run.status == DagsterRunStatus.STARTED):
            continue  # alive, or launched elsewhere / its process never recorded: run monitoring's call
        instance.report_run_failed(run, "its worker process is gone (the service stopped or crashed while it "
                                        "ran); failed so that it can be retried")
        failed.append(run.run_id)
    return failed


def claim_alive(instance: DagsterInstance, claim: str) -> bool:
    """Whether something will still finish the images of `claim`: an unfinished run carries it (and its
    worker lives, where this host can tell), or its last run failed and Dagster's automatic retry of it is
    on its way. A process claim (`imago ingest`) lives as long as its process."""
    if claim.startswith("proc:"):
        return process_alive(claim) is not False
    runs = instance.get_runs(RunsFilter(tags={CLAIM_TAG: claim}))  # newest first
    if not runs:
        return False
    for run in runs:
        if not run.is_finished and local_worker_alive(instance, run) is not False:
            return True
    return _retry_coming(instance, runs[0])


def _retry_coming(instance: DagsterInstance, run: DagsterRun) -> bool:
    """A failed run that Dagster's automatic retry will run again (within `RETRY_PATIENCE_S`)."""
    if not (run.status == DagsterRunStatus.FAILURE and run.tags.get(WILL_RETRY_TAG) == "true"
            and AUTO_RETRY_RUN_ID_TAG not in run.tags
            and OWNER_TAG not in run.tags):  # an in-process run is never retried by the daemon
        return False
    record = instance.get_run_record_by_id(run.run_id)
    ended = (record.end_time if record is not None else None) or time.time()
    return time.time() - ended < RETRY_PATIENCE_S


# --- erasure -------------------------------------------------------------------------------------------

def erase_dagster_partition(instance: DagsterInstance, partitions_def_name: str, partition_key: str) -> int:
    """Delete a dynamic partition and every event recorded for it; returns the events deleted.

    Dagster's own `wipe_asset_partitions` is not implemented by its SQL event logs (SQLite, Postgres), so
    this deletes the partition's rows from the event log tables directly, then drops the cached asset
    status (Dagster recomputes it from what is left).
    """
    events = SqlEventLogStorageTable
    with instance.event_log_storage.index_connection() as connection:
        ids = [row[0] for row in connection.execute(select(events.c.id).where(events.c.partition == partition_key))]
        asset_keys = {row[0] for row in connection.execute(
            select(events.c.asset_key).where(events.c.partition == partition_key).distinct())}
        if ids:
            connection.execute(delete(AssetEventTagsTable).where(AssetEventTagsTable.c.event_id.in_(ids)))
            connection.execute(delete(events).where(events.c.id.in_(ids)))
        connection.execute(delete(AssetCheckExecutionsTable)
                           .where(AssetCheckExecutionsTable.c.partition == partition_key))
        # The asset row caches its latest materialization: forget it when it was this partition's.
        for row in connection.execute(select(AssetKeyTable.c.id, AssetKeyTable.c.last_materialization)
                                      .where(AssetKeyTable.c.asset_key.in_(asset_keys))):
            if row.last_materialization and _partition_of(row.last_materialization) == partition_key:
                connection.execute(update(AssetKeyTable).where(AssetKeyTable.c.id == row.id)
                                   .values(last_materialization=None, cached_status_data=None))
    if (instance.has_dynamic_partition(partitions_def_name, partition_key)
            and not partition_still_named(instance, partition_key)):
        instance.delete_dynamic_partition(partitions_def_name, partition_key)
    instance.wipe_asset_cached_status([AssetKey.from_db_string(key) for key in asset_keys if key])
    return len(ids)


def partition_still_named(instance: DagsterInstance, partition_key: str) -> bool:
    """Whether a run not yet ended, or a failed one whose retry is coming, names `partition_key` as its
    partition or an end of its range.

    Why: Dagster refuses to start or retry a run whose range ends at a partition that no longer exists.
    Erasing the first image of a queued batch deleted its key; the run failed, its retry was left
    `NOT_STARTED` until run monitoring gave up (2 × 180 s), and the upload sensor, waiting for it, took no
    upload of any tenant meanwhile. Such a key is left for `forget_erased_partitions`; its events are wiped
    at once (a key inside a range is no end: it goes at once, as the run skips erased images)."""
    for tag in (ASSET_PARTITION_RANGE_START_TAG, ASSET_PARTITION_RANGE_END_TAG, PARTITION_NAME_TAG):
        for run in instance.get_runs(RunsFilter(tags={tag: partition_key}), limit=20):
            if not run.is_finished or _retry_coming(instance, run):
                return True
    return False


def forget_erased_partitions(instance: DagsterInstance, partitions_def_name: str,
                             existing: Callable[[list[int]], set[int]]) -> int:
    """Erase (`erase_dagster_partition`) the partitions of images no longer in the catalog that no run
    names any more: those an erasure had to leave to a run, with the events that run recorded for them
    after the erasure. `existing` says which of some image ids the catalog holds. Returns the partitions
    erased."""
    keys = [key for key in instance.get_dynamic_partitions(partitions_def_name) if key.isdigit()]
    kept = existing([int(key) for key in keys])  # a key is added after its image's row: none is new here
    erased = 0
    for key in keys:
        if int(key) not in kept and not partition_still_named(instance, key):
            erase_dagster_partition(instance, partitions_def_name, key)
            erased += 1
    return erased


def _partition_of(serialized: str) -> str | None:
    try:
        entry = deserialize_value(serialized)
        dagster_event = getattr(entry, "dagster_event", None)
        return dagster_event.partition if dagster_event is not None else None
    except Exception:  # an older or unknown record shape: leave it
        return None


# --- a faster SQLite event log for the embedded default ----------------------------------------------------

SQLITE_BUSY_TIMEOUT_SECONDS = 30


def _event_log_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class FastSqliteEventLogStorage(ConsolidatedSqliteEventLogStorage):
    """Dagster's consolidated SQLite event log, with one engine per process and WAL commits.

    Dagster's SQLite storages open a new engine for every event and commit with a full fsync. A ranged run
    writes two events per image and per asset (planned, then materialized), so on a 2-core machine that
    cost dominated a batch of small images (measured: 73 s of a 74 s run for 500 images; 8 s with this).
    WAL with `synchronous=NORMAL`: a crash of the process loses nothing, a power cut may lose the last
    events. Production runs Dagster on Postgres (dagster.yaml) and does not use this.
    """

    _engine = None

    @property
    def engine(self):
        if self._engine is None:
            self._engine = create_engine(self._conn_string, pool_size=4, max_overflow=8,
                                         connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS,
                                                       "check_same_thread": False})
            event.listen(self._engine, "connect", _event_log_pragmas)
        return self._engine

    @contextmanager
    def _connect(self):
        with self.engine.connect() as connection, connection.begin():
            yield connection

    @property
    def supports_partition_subset_in_asset_materialization_planned_events(self) -> bool:
        # One planned event per asset for a ranged run instead of one per image. Dagster's caveat: a
        # failed run does not mark its partitions failed; per-image failures live in our catalog anyway.
        return True

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """The materializations of a ranged run in one transaction (Dagster's Postgres storage does the same)."""
        kinds = {e.get_dagster_event().event_type for e in events}
        if kinds != {DagsterEventType.ASSET_MATERIALIZATION}:
            return super().store_event_batch(events)
        events = [e for e in events if not e.get_dagster_event().is_asset_failed_to_materialize]
        if not events:
            return None
        with self._connect() as connection:
            ids = [row[0] for row in connection.execute(
                self.prepare_insert_event_batch(events).returning(SqlEventLogStorageTable.c.id))]
            self._store_asset_event_tags(connection, events, ids)
            self._store_asset_event(connection, events[-1], ids[-1])
        return None


def no_retries():
    """Step retries off (an executor's own retries; runs are retried whole by the run-retry daemon)."""
    from dagster._core.execution.retries import RetryMode

    return RetryMode(RetryMode.DISABLED)


def in_process_step_executor():
    """Dagster's in-process executor, made directly: `imago_executor` picks it or Celery when a run starts."""
    from dagster._core.executor.in_process import InProcessExecutor

    return InProcessExecutor(retries=no_retries(), marker_to_close=None)
