"""Run per-image work on every core.

Dagster runs one step at a time in a process; the images of a batch are spread over a pool of worker
processes so a 2-core machine does twice the work. Workers come from a forkserver (not a plain fork of a
process that holds Dagster's threads and locks), preloaded with the imaging code so they start warm.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_PRELOAD = ["imago_pipeline.stages", "imago_pipeline.registration"]


def map_in_processes(fn: Callable[[T], R], items: Sequence[T], workers: int) -> Iterable[R]:
    """`map(fn, items)` in order; inline when a pool would cost more than it saves."""
    if workers <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=context) as pool:
        yield from pool.map(fn, items, chunksize=max(1, len(items) // (workers * 8)))
