"""A warm process that runs start from: imports paid once, not once per run.

A Dagster run normally starts in a fresh Python process (Dagster's code server spawns one per run), which
imports Dagster and the code location and loads the models again: about 3 s per run, then about 1.5 s for
the run's worker pool to start its own processes and import the stages again. For the person waiting for
one image, that was most of the wait.

The run host is started once by the run launcher (`dagster_internals.ImagoRunLauncher`, in the process
that launches runs: the daemon). It imports Dagster, the code location and the stages, builds the
backbone's graph, and then waits, with no thread running, for run ids on its standard input. For each, it
forks a child, the run's own process (like a forkserver, the way Android's zygote starts apps): the child
forks its worker pool right away, before Dagster starts any thread, executes the run and exits. A run
still has a process of its own that ends with it; only the imports are shared.

Bulk runs (`imago/lane=bulk`) are niced, so an interactive upload's run gets the cores first.
Protocol: one JSON object per line, `{"run_id", "instance_ref", "job_name", "lane", "workers",
"working_directory"}`. The host exits when its standard input closes or the launcher's process dies.
"""

from __future__ import annotations

import json
import os
import signal
import sys

POOLED_JOBS = {"process_images"}
RUN_PROCESS_NAME = "imago-run"  # the jobs whose steps use the worker pool


def preload() -> None:
    """What every run would import or load: Dagster, the code location (built once), the stages, the
    backbone's graph, the place data."""
    import importlib

    from imago_pipeline import definitions
    from imago_pipeline.core.embedding import lite0
    from imago_pipeline.core.enrichment import places
    from imago_pipeline.core.parallel import preload_modules
    from imago_pipeline.dagster_instance import use_batched_dagster_events

    use_batched_dagster_events()  # a run's events in few transactions, on every storage (not only embedded)
    # Dagster imports some modules only when a run executes: its CLI's run command (0.5 s, the largest part
    # of a run's start when measured with py-spy), the instance's state storage, the production shape's
    # Postgres storages.
    dagster_lazy = ("dagster._cli.api", "upath", "dagster._core.storage.defs_state.blob_storage_state_storage",
                    "dagster_postgres")
    for module in ("imago_pipeline.dagster_internals", *dagster_lazy, *preload_modules()):
        importlib.import_module(module)
    # Built once here so the run's own build (Dagster loads the code location in each run) finds every lazy
    # import and cache warm: 0.6 s -> 0.15 s.
    definitions.defs().get_repository_def().get_job("process_images")
    lite0.build_onnx()  # cached: the run builds its onnxruntime session from it
    places.warm()


def _reap(*_args) -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run_child(request: dict) -> int:
    """The run's process: nice when bulk, worker pool forked first, then the run."""
    from imago_pipeline.core.claims import BULK_NICENESS
    from imago_pipeline.core.parallel import die_with_parent, set_process_name, worker_pool
    from imago_pipeline.dagster_internals import execute_run_here

    set_process_name(RUN_PROCESS_NAME)  # `ps -o pid,comm`: each run and its pool workers show as imago-run
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # Dagster turns it into a clean interruption
    die_with_parent(signal.SIGTERM)
    if request.get("working_directory") and os.path.isdir(request["working_directory"]):
        os.chdir(request["working_directory"])
    if request.get("lane") == "bulk":
        os.nice(BULK_NICENESS)
    if request.get("job_name") in POOLED_JOBS:
        with worker_pool(int(request.get("workers") or 1), start_method="fork") as pool:
            pool.start()  # forked now, while this process has no other thread
            return execute_run_here(request["run_id"], request["instance_ref"])
    return execute_run_here(request["run_id"], request["instance_ref"])


def main() -> None:
    from imago_pipeline.core.parallel import die_with_parent, set_process_name

    set_process_name("imago-run-host")
    die_with_parent(signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C of the service reaches the runs, not the host
    preload()
    signal.signal(signal.SIGCHLD, _reap)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                sys.stdin.close()
                signal.signal(signal.SIGINT, signal.default_int_handler)
                code = run_child(request)
            except BaseException:  # the run's own failures are in its event log; this is the last resort
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)


if __name__ == "__main__":
    main()
