"""Where Imago relies on Dagster beyond its public API: run-worker health and claims of runs.

Dagster's `DefaultRunLauncher` cannot tell whether a run's worker process is still alive, so its run
monitoring never notices a `kill -9` of a run worker whose code server died with it: the run stays STARTED
forever, holds a `max_concurrent_runs` slot, and its images wait. `ImagoRunLauncher` adds that check, so
the daemon's run monitoring fails such runs (and run retries re-execute them). `imago serve` uses the same
check at start for runs a previous crash left behind.
"""

from __future__ import annotations

import json
import socket
import time

import psutil
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.events import DagsterEventType
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.tags import AUTO_RETRY_RUN_ID_TAG, GRPC_INFO_TAG, WILL_RETRY_TAG

from imago_pipeline.core.claims import CLAIM_TAG, OWNER_TAG, process_alive

UNFINISHED = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
              DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", socket.gethostname()}
RETRY_PATIENCE_S = 600  # a failed run marked "will retry" whose retry never came is given up after this


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
    """Dagster's default launcher (runs start in the code server's processes), with worker health checks:
    a run whose worker process is gone is reported FAILED to run monitoring."""

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


def _code_server_runs_it(run: DagsterRun) -> bool | None:
    """Ask the code server that launched the run whether it still executes it (None: unreachable)."""
    from dagster._grpc.client import DagsterGrpcClient
    from dagster._grpc.types import CanCancelExecutionRequest, CanCancelExecutionResult
    from dagster._serdes import deserialize_value

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
    newest = runs[0]
    retry_coming = (newest.status == DagsterRunStatus.FAILURE and newest.tags.get(WILL_RETRY_TAG) == "true"
                    and AUTO_RETRY_RUN_ID_TAG not in newest.tags
                    and OWNER_TAG not in newest.tags)  # an in-process run is never retried by the daemon
    if retry_coming:
        ended = instance.get_run_record_by_id(newest.run_id).end_time or time.time()
        return time.time() - ended < RETRY_PATIENCE_S
    return False
