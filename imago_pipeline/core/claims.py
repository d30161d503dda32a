"""Who is working on which image, and what to do when that worker is gone.

Work is found by status, never by "ids after the last one seen" (ids commit out of order on Postgres and
were reused on SQLite). The upload sensor takes `pending` and `requeued` images into runs in one
transaction and stamps each with a claim token; a run carries its token as a tag. `imago ingest` claims
its images for its own process. An image is finished (done or failed) by its run's `image_summary`, which
clears the claim.

A claim is *dead* when nothing will ever finish it: its runs all ended (and no automatic retry is coming),
it never became a run, or the process that owned it is gone. `reconcile` requeues the images of dead claims
with only their unfinished stages, counting an attempt each time; past the retry limit an image is
dead-lettered (failed, with the reason), like a failed image of the nightly reprocessing.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psutil

from imago_pipeline.core.enrichment.batch import STAGES, SUMMARY, with_downstream

CLAIM_TAG = "imago/claim"  # on every run that processes claimed images
OWNER_TAG = "imago/owner"  # on in-process runs: the process that executes them
PRIORITY_TAG = "dagster/priority"  # the run queue dequeues higher values first
LANE_TAG = "imago/lane"  # interactive (uploads through the API) or bulk (drops, `imago ingest`, reprocessing)
BULK_PRIORITY = 0  # the priority of bulk work; an API upload has its plan's (above 0)
BULK_NICENESS = 10  # bulk processes run niced, so the kernel gives interactive runs the cores first


def lane(priority: int) -> str:
    """The run-queue lane of work at this priority."""
    return "bulk" if priority <= BULK_PRIORITY else "interactive"
def retry_batch_size(batch_size: int, attempts: int) -> int:
    """How many images a run takes on an image's `attempts`-th retry: the whole batch on the first, a tenth
    of it on the second, one at a time from the third.

    Why: a run that died may have died of one of its images (a file that trips a stage's batch-wide code,
    and fails the same way on every retry). Retried in the same batch, all of its images would be
    dead-lettered with it; in ever smaller runs, the others finish and only the one that kills its run
    runs out of retries (with the default 3). A first retry keeps the batch: a killed worker or a database
    gone for a moment is the usual cause, and the batch is the cheap way."""
    return max(1, batch_size // 10 ** max(0, attempts - 1))


RUN_PREFIX, PROCESS_PREFIX = "run:", "proc:"


def run_claim() -> str:
    """A fresh token for one run's images."""
    return RUN_PREFIX + uuid.uuid4().hex


def process_claim(pid: int | None = None) -> str:
    """A token naming this process (host, pid and start time, so a reused pid is not mistaken for it)."""
    process = psutil.Process(pid or os.getpid())
    return f"{PROCESS_PREFIX}{socket.gethostname()}:{process.pid}:{process.create_time():.2f}"


def process_alive(token: str) -> bool | None:
    """Whether the process a `process_claim` names still runs; None when it ran on another host."""
    host, pid, started = token.removeprefix(PROCESS_PREFIX).rsplit(":", 2)
    if host != socket.gethostname():
        return None
    try:
        return abs(psutil.Process(int(pid)).create_time() - float(started)) < 1.0
    except (psutil.NoSuchProcess, ValueError):
        return False


def unfinished_stages(stage_status: dict[str, str]) -> tuple[str, ...]:
    """The stages not done yet (missing or failed) and what depends on them, in pipeline order; just the
    summary when every stage is done."""
    return with_downstream([SUMMARY, *(stage for stage in STAGES if stage_status.get(stage) != "done")])


@dataclass
class Reconciliation:
    requeued: dict[int, tuple[str, ...]] = field(default_factory=dict)  # image id -> stages to redo
    dead_lettered: list[int] = field(default_factory=list)
    alive_claims: int = 0  # claims examined and found alive

    @property
    def images(self) -> int:
        return len(self.requeued) + len(self.dead_lettered)


def plan_reconciliation(in_progress: Iterable[tuple[int, str | None, int, dict[str, str]]],
                        claim_alive: Callable[[str], bool], *, max_retries: int) -> Reconciliation:
    """`in_progress`: (image id, claim, attempts so far, {stage: status}) of images taken into work long
    enough ago. Images of dead claims are requeued with their unfinished stages, or dead-lettered once
    `max_retries` attempts were made."""
    plan = Reconciliation()
    verdicts: dict[str | None, bool] = {}
    for image_id, claim, attempts, stages in in_progress:
        if claim not in verdicts:
            verdicts[claim] = claim is not None and claim_alive(claim)
            plan.alive_claims += verdicts[claim]
        if verdicts[claim]:
            continue
        if attempts >= max_retries:
            plan.dead_lettered.append(image_id)
        else:
            plan.requeued[image_id] = unfinished_stages(stages)
    return plan


def reconcile(catalog, claim_alive: Callable[[str], bool], *, max_retries: int, grace_s: float,
              dry_run: bool = False, now: datetime | None = None) -> Reconciliation:
    """Find images whose claim is dead and requeue (or dead-letter) them; `grace_s` leaves young claims
    alone (a run request takes a moment to become a run)."""
    now = now or datetime.now(UTC)
    plan = plan_reconciliation(catalog.work.in_progress(claimed_before=now - timedelta(seconds=grace_s)),
                               claim_alive, max_retries=max_retries)
    if not dry_run and plan.images:
        catalog.work.requeue_stranded(plan.requeued, plan.dead_lettered)
    return plan

