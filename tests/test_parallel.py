"""The worker pool: order kept, and a worker that dies costs only its own item."""

from __future__ import annotations

import os

from imago_pipeline.core.parallel import map_in_processes


def square_or_die(n: int) -> int:
    if n == 13:
        os._exit(1)  # what a segfaulting C decoder looks like from the pool
    return n * n


def test_results_keep_their_order():
    assert map_in_processes(square_or_die, list(range(10)), workers=2) == [n * n for n in range(10)]


def test_a_crashing_item_gets_its_own_error_and_the_rest_finish():
    items = list(range(20))
    results = map_in_processes(square_or_die, items, workers=2, on_crash=lambda n: f"crashed on {n}")
    assert results[13] == "crashed on 13"
    assert [r for i, r in enumerate(results) if i != 13] == [n * n for n in items if n != 13]
    assert map_in_processes(square_or_die, [2, 3], workers=2) == [4, 9]  # the pool recovered


def crash_first(n: int) -> int:
    if n == 0:
        os._exit(1)
    return n


def test_a_crash_while_items_are_still_being_handed_out_costs_only_its_item():
    """The first item kills its worker while thousands are still being submitted: the pool is broken before
    the last ones are handed out, and they are retried like the ones in flight (a suite run once failed
    here with `BrokenProcessPool` raised by `submit`)."""
    from imago_pipeline.core.parallel import WorkerPool

    items = list(range(5000))
    pool = WorkerPool(2)
    try:
        pool.start()  # workers already waiting: the first item dies while the rest are being submitted
        results = pool.map(crash_first, items, on_crash=lambda n: f"crashed on {n}")
    finally:
        pool.close()
    assert results[0] == "crashed on 0" and results[1:] == items[1:]


def test_an_item_the_broken_pool_forgot_is_retried_instead_of_waited_for_forever():
    """CPython's pool fails the items it holds when a worker dies; an item submitted at that very moment is
    added after, and its future never completes (a suite run hung in `map` for ten minutes). Here the first
    pool "forgets" item 5 (its submit returns a future nothing will complete) and item 0 breaks it: `map`
    must stop waiting once the pool is broken and run item 5 again."""
    import threading
    from concurrent.futures import Future

    from imago_pipeline.core.parallel import WorkerPool

    pool = WorkerPool(2)
    first = pool._get()
    real_submit = first.submit

    def forgetful_submit(fn, item):
        return Future() if item == 5 else real_submit(fn, item)

    first.submit = forgetful_submit  # type: ignore[method-assign]
    outcome: list = []
    mapping = threading.Thread(target=lambda: outcome.append(
        pool.map(crash_first, list(range(10)), on_crash=lambda n: f"crashed on {n}")), daemon=True)
    try:
        mapping.start()
        mapping.join(120)
        assert not mapping.is_alive(), "map is still waiting for the forgotten item"
    finally:
        pool.close()
    assert outcome == [["crashed on 0", *range(1, 10)]]


def _readers_state(_item: int) -> tuple[int, bool, bool]:
    from imago_pipeline.core.enrichment import exiftool, scene_text

    helper = exiftool._helper
    return os.getpid(), helper is not None and helper.running, scene_text._make_engine.cache_info().currsize == 1


def test_a_new_worker_starts_its_readers_in_the_background_and_they_end_with_it():
    """ExifTool and RapidOCR start while the run starts, not at the first image; ExifTool keeps running after
    the warm-up (its parent thread stays: Linux would signal it when that thread ends) and ends with the pool."""
    import time

    import psutil

    from imago_pipeline.core.enrichment.exiftool import exiftool_version
    from imago_pipeline.core.parallel import WorkerPool

    pool = WorkerPool(1)
    try:
        pool.start()
        time.sleep(3)  # the warm-up: about 0.3 s for each reader on an idle machine
        [(pid, exiftool_running, ocr_ready)] = pool.map(_readers_state, [0])
        assert ocr_ready
        helpers = [p for p in psutil.Process(pid).children() if "-stay_open" in " ".join(p.cmdline())]
        if exiftool_version() is not None:
            assert exiftool_running and len(helpers) == 1
    finally:
        pool.close()
    _, alive = psutil.wait_procs(helpers, timeout=10)
    assert not alive, "exiftool outlived its worker"


def _hang_ignoring_sigterm(_item: int) -> int:
    import signal
    import time

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(3600)
    return 0


def test_stopping_a_pool_never_hangs_on_a_worker_that_does_not_stop():
    """The shutdown's last resort: a worker that neither finishes nor ends on SIGTERM is killed after the
    grace period (the executor's own shutdown would wait for it forever)."""
    import multiprocessing
    import time
    from concurrent.futures import ProcessPoolExecutor

    import psutil

    from imago_pipeline.core.parallel import stop_executor

    executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("forkserver"))
    future = executor.submit(_hang_ignoring_sigterm, 0)
    time.sleep(1.0)  # the worker is in the item
    workers = [p.pid for p in executor._processes.values()]
    assert workers and not future.done()
    began = time.monotonic()
    stop_executor(executor, grace_s=1.0)
    assert time.monotonic() - began < 10
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                   for pid in workers)


def _pid(_item: int) -> int:
    import time

    time.sleep(0.2)  # long enough for the pool to start both workers
    return os.getpid()


def test_workers_end_when_the_pools_owner_is_killed():
    """A run's process killed with SIGKILL (no `finally`, no shutdown): its workers must not live on. They
    come from the forkserver, so Linux's parent-death signal would point at it, and the forkserver stays
    while they hold its liveness pipe: each watches the pool's owner instead."""
    import json
    import subprocess
    import sys
    import time

    import psutil

    from tests.conftest import REPO

    owner = subprocess.Popen([sys.executable, "-c", (
        "import json, os, signal\n"
        "from imago_pipeline.core.parallel import WorkerPool\n"
        "from tests.test_parallel import _pid\n"
        "pool = WorkerPool(2)\n"
        "print(json.dumps(sorted(set(pool.map(_pid, range(6))))), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")], cwd=REPO, stdout=subprocess.PIPE, text=True)
    workers = [psutil.Process(pid) for pid in json.loads(owner.stdout.readline())]
    assert owner.wait(60) == -9 and workers
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE
                                              for w in workers):
        time.sleep(0.1)
    alive = [w.pid for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    for worker in alive:
        psutil.Process(worker).kill()
    assert not alive, "workers outlived their pool's owner"
