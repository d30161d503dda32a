"""Run per-image work on every core, and survive a worker that crashes.

Dagster runs one step at a time in a process; the images of a batch are spread over a pool of worker
processes so a 2-core machine does twice the work. The pool lives as long as the process (a CLI ingest or a
run reuses it across batches and steps) and its workers come from a forkserver (not a plain fork of a process
that holds Dagster's threads and locks), preloaded with the imaging code so they start warm.

Hostile files can crash a C decoder and take the worker with it. Then the pool is replaced, the unfinished
items are tried again, and an item that kills a worker on its own gets `on_crash(item)` as its result: one
bad image never costs the rest of its batch.
"""

from __future__ import annotations

import atexit
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_PRELOAD = ["imago_pipeline.stages", "imago_pipeline.registration", "imago_pipeline.imaging.ocr"]
_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_pool_workers = 0


def _get_pool(workers: int) -> ProcessPoolExecutor:
    global _pool, _pool_workers
    with _lock:
        if _pool is None or _pool_workers != workers:
            if _pool is not None:
                _pool.shutdown(cancel_futures=True)
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(_PRELOAD)
            _pool, _pool_workers = ProcessPoolExecutor(max_workers=workers, mp_context=context), workers
        return _pool


def _discard_pool() -> None:
    global _pool
    with _lock:
        if _pool is not None:
            _pool.shutdown(wait=False, cancel_futures=True)
            _pool = None


atexit.register(_discard_pool)


def _crashed(item: T, on_crash: Callable[[T], R] | None) -> R:
    if on_crash is None:
        raise BrokenProcessPool("a worker process died")
    return on_crash(item)


def map_in_processes(fn: Callable[[T], R], items: Sequence[T], workers: int,
                     on_crash: Callable[[T], R] | None = None) -> list[R]:
    """`[fn(item) for item in items]`, computed on `workers` processes."""
    results: dict[int, R] = {}
    remaining = list(range(len(items)))
    for attempt in range(2):  # the whole batch once more after a crash
        if not remaining:
            break
        pool = _get_pool(workers)
        futures = {index: pool.submit(fn, items[index]) for index in remaining}
        broken = []
        for index, future in futures.items():
            try:
                results[index] = future.result()
            except BrokenProcessPool:
                broken.append(index)
        if broken:
            _discard_pool()
        remaining = broken
    for index in remaining:  # crashed twice along with others: isolate each to find the culprit
        pool = _get_pool(1)
        try:
            results[index] = pool.submit(fn, items[index]).result()
        except BrokenProcessPool:
            _discard_pool()
            results[index] = _crashed(items[index], on_crash)
    return [results[index] for index in range(len(items))]
