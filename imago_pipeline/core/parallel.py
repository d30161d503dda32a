"""Run per-image work on every core, survive a worker that crashes, and leave no process behind.

Dagster runs one step at a time in a process; the images of a batch are spread over a pool of worker
processes so a 2-core machine does twice the work. Workers come from a forkserver (not a plain fork of a
process that holds Dagster's threads and locks), preloaded with the imaging code so they start warm.

A pool lives exactly as long as the `worker_pool()` block that opened it: a Dagster run opens one for the
whole run (the `worker_pool` resource), `imago ingest` one for all its batches, and a call outside any block
gets a pool of its own for that call. The pool is shut down in a `finally`, because a run's process is a
multiprocessing child: it never runs `atexit` handlers, and at exit it joins every non-daemonic child, so a
pool left open keeps the whole run process (and TensorFlow's memory) alive forever. Each worker also asks
the kernel to kill it when its parent dies (`PR_SET_PDEATHSIG`), so a `kill -9` of a run leaves no worker.

Hostile files can crash a C decoder and take the worker with it. Then the pool is replaced, the unfinished
items are tried again, and an item that kills a worker on its own gets `on_crash(item)` as its result: one
bad image never costs the rest of its batch.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_PRELOAD = ["imago_pipeline.core.enrichment.stages.exif", "imago_pipeline.core.enrichment.stages.thumbnail",
            "imago_pipeline.core.enrichment.stages.ocr", "imago_pipeline.core.enrichment.stages.embedding",
            "imago_pipeline.core.ingest",
            "rapidocr.main"]  # 1.4 s to import (OpenCV, onnxruntime): once per host or forkserver, not per worker
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send `sig` to this process when its parent exits (a no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


def preload_modules() -> list[str]:
    """The modules a worker needs (what the forkserver imports once for every worker it forks)."""
    return list(_PRELOAD)


def set_process_name(name: str) -> None:
    """Name this process as `ps -o comm` and `top` show it (Linux; at most 15 bytes; a no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


class WorkerPool:
    """A process pool that is replaced when a worker dies and closed by its owner.

    Workers come from a forkserver. `start_method="fork"` forks them from this process instead, which is
    instant when it already imported the stages, and safe only while it runs no other thread: the run host's
    children fork their pool first (`start()`), before Dagster starts any thread. A pool replaced after a
    crash comes from the forkserver again."""

    def __init__(self, workers: int, start_method: str = "forkserver"):
        self.workers = workers
        self._start_method = start_method
        self._executor: ProcessPoolExecutor | None = None
        self._executor_workers = 0
        self._lock = threading.Lock()

    def _get(self, workers: int | None = None) -> ProcessPoolExecutor:
        with self._lock:
            wanted = workers or self.workers
            if self._executor is not None and self._executor_workers != wanted:
                stop_executor(self._executor)
                self._executor = None
            if self._executor is None:
                context = multiprocessing.get_context(self._start_method)
                self._start_method = "forkserver"  # threads may run by the next time
                if context.get_start_method() == "forkserver":
                    context.set_forkserver_preload(_PRELOAD)
                self._executor = ProcessPoolExecutor(max_workers=wanted, mp_context=context,
                                                     initializer=_start_worker, initargs=(os.getpid(),))
                self._executor_workers = wanted
            return self._executor

    def start(self) -> None:
        """Start every worker now (a pool otherwise starts at its first map)."""
        executor = self._get()
        for future in [executor.submit(_ready) for _ in range(self.workers)]:
            future.result()

    def _discard(self) -> None:
        """Drop a broken pool: its surviving workers are stopped, killed if they do not stop at once."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            stop_executor(executor, grace_s=1.0)

    def close(self) -> None:
        """Stop every worker and wait for them (idempotent)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            stop_executor(executor)

    def map(self, fn: Callable[[T], R], items: Sequence[T], on_crash: Callable[[T], R] | None = None) -> list[R]:
        """`[fn(item) for item in items]`, computed on the pool's workers."""
        results: dict[int, R] = {}
        remaining = list(range(len(items)))
        for _attempt in range(2):  # the whole batch once more after a crash
            if not remaining:
                break
            executor = self._get()
            futures = {}
            broken = []
            for index in remaining:
                try:
                    futures[index] = executor.submit(fn, items[index])
                except BrokenProcessPool:  # an item handed out earlier crashed its worker already
                    broken.append(index)
            for index, future in futures.items():
                try:
                    results[index] = _result(executor, future)
                except BrokenProcessPool:
                    broken.append(index)
            if broken:
                self._discard()
            remaining = broken
        for index in remaining:  # crashed twice along with others: isolate each to find the culprit
            try:
                alone = self._get(1)
                results[index] = _result(alone, alone.submit(fn, items[index]))
            except BrokenProcessPool:
                self._discard()
                if on_crash is None:
                    raise
                results[index] = on_crash(items[index])
        return [results[index] for index in range(len(items))]


def _result(executor: ProcessPoolExecutor, future: Future[R]) -> R:
    """`future.result()`, or `BrokenProcessPool` for a future the broken pool forgot. When a worker dies,
    the pool's manager thread marks the pool broken, then fails every item it holds, running or waiting; an
    item submitted at that very moment is added after, and its future never completes (CPython's
    `ProcessPoolExecutor`: `submit` checks the mark under a lock the manager thread does not take; seen, a
    suite run stuck in `map` for ten minutes). So a future still pending half a second after the pool was
    seen broken is given up (the manager thread itself may never end: see `stop_executor`)."""
    broken_seen = False
    while True:
        try:
            return future.result(timeout=0.5)
        except TimeoutError:
            if getattr(executor, "_broken", False):  # private: the mark the manager thread sets first
                if broken_seen:
                    raise BrokenProcessPool("the pool broke before this item ran") from None
                broken_seen = True


def _ready() -> bool:
    return True


def stop_executor(executor: ProcessPoolExecutor, grace_s: float = 60.0) -> None:
    """`shutdown(wait=True)` that cannot hang. When a worker dies, the executor's manager thread signals the
    workers it knows and joins them; a worker started by a `submit` racing with that (workers start on
    demand) is never signalled, and the join waits forever (seen: a test stuck for minutes on an idle
    worker). So: wait for the manager thread up to `grace_s` (running items finish), then kill whatever
    worker is still alive, and wait again."""
    # private, read before shutdown(wait=False) forgets them: the manager thread and its own dict of workers
    # (where workers started later appear too)
    manager: threading.Thread | None = getattr(executor, "_executor_manager_thread", None)
    processes = getattr(executor, "_processes", None) or {}
    executor.shutdown(wait=False, cancel_futures=True)
    if manager is None:
        return
    deadline = time.monotonic() + grace_s
    while manager.is_alive():
        manager.join(0.05)
        if time.monotonic() >= deadline:
            for process in list(processes.values()):
                if process.is_alive():
                    process.kill()
            deadline = time.monotonic() + 1.0


def _start_worker(owner: int) -> None:
    """A new worker ends with the pool's owner, and starts its readers (ExifTool, RapidOCR's sessions: about
    0.3 s each) in a background thread, so they are ready by the time its run's steps begin."""
    die_with_parent()  # the owner, for a forked worker
    _exit_with(owner)
    threading.Thread(target=_warm_readers, name="imago-warm-readers", daemon=True).start()


def _exit_with(owner: int) -> None:
    """End this worker when `owner` ends, even by SIGKILL. A worker from the forkserver is the forkserver's
    child (the parent-death signal points there), holds the forkserver's liveness pipe (so it never exits)
    and both ends of its own call queue (so it never reads an end of file): without this it would wait for
    work for ever (seen: workers of a killed test process, alive twenty minutes later). Linux only."""
    try:
        handle = os.pidfd_open(owner)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # not Linux (5.3 or newer)
        return

    def watch() -> None:
        select.select([handle], [], [])  # readable once the owner has exited
        os._exit(1)

    threading.Thread(target=watch, name="imago-owner-watch", daemon=True).start()


def _warm_readers() -> None:
    from imago_pipeline.core.enrichment import exiftool, scene_text

    for warm in (exiftool.warm, scene_text.engine):
        with contextlib.suppress(Exception):  # a reader that cannot start says so when it is used
            warm()
    # Linux signals a child (ExifTool, started with PR_SET_PDEATHSIG) when the *thread* that started it
    # ends: this one stays, idle, until the worker exits.
    threading.Event().wait()


_current: WorkerPool | None = None
_current_lock = threading.Lock()


@contextmanager
def worker_pool(workers: int, start_method: str = "forkserver") -> Iterator[WorkerPool]:
    """The pool for everything inside the block (an enclosing block's pool is reused); closed at the end."""
    global _current
    with _current_lock:
        outer = _current
        pool = outer if outer is not None else WorkerPool(workers, start_method)
        _current = pool
    try:
        yield pool
    finally:
        if outer is None:
            with _current_lock:
                _current = None
            pool.close()


def map_in_processes(fn: Callable[[T], R], items: Sequence[T], workers: int,
                     on_crash: Callable[[T], R] | None = None) -> list[R]:
    """`[fn(item) for item in items]` on `workers` processes: the enclosing `worker_pool()`'s, else a pool
    opened and closed for this call."""
    with worker_pool(workers) as pool:
        return pool.map(fn, items, on_crash)
