"""Running `process_images` on several machines: Dagster's Celery executor, and the worker it needs.

With `IMAGO_EXECUTOR=celery` a run no longer executes its steps in its own process: it submits each step
(EXIF, thumbnails, OCR, embedding, classification, vision, the summary) as a Celery task to the broker
(RabbitMQ), and `imago worker` processes on any machine take them, each executing one step at a time with
its images spread over its own `IMAGO_WORKERS` processes, then report the step's events back. Every
worker reaches what a run reaches: the catalog and Dagster's storage on Postgres, blobs and the lake on S3
(or a shared volume), the broker.

Tasks are acknowledged when they finish, not when they start (`task_acks_late`), and a task whose worker
dies is given back to the broker (`task_reject_on_worker_lost`): RabbitMQ hands it to another worker as
soon as the dead worker's connection drops, and the step runs again there. A step is safe to run twice:
its results are written per image (upserts) and its lake files are named after the run.

Workers run Celery's `solo` pool: one step at a time in the worker's main process, so the step can start
its own pool of processes (Celery's prefork children are daemonic and may not).
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.dagster_internals import in_process_step_executor, no_retries

QUEUE = "dagster"

#: Celery settings shared by the runs (which submit) and the workers (which execute)
CELERY_SETTINGS: dict[str, Any] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,  # a worker holds only the step it executes
    "broker_connection_retry_on_startup": True,
    "worker_cancel_long_running_tasks_on_connection_loss": True,
}


def celery_app_args(settings: ImagoSettings) -> dict[str, Any]:
    """What dagster-celery's `make_app` and `CeleryExecutor` take: broker, result backend, settings."""
    from dagster_celery.config import DEFAULT_CONFIG, dict_wrapper

    return {"broker": settings.celery_broker_url, "backend": "rpc://", "include": [],
            "config_source": dict_wrapper({**DEFAULT_CONFIG, **CELERY_SETTINGS})}


@dg.executor(name="imago_executor", requirements=dg.multiple_process_executor_requirements())
def imago_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    """The run's own process (the default), or Celery workers with `IMAGO_EXECUTOR=celery`; read from the
    environment when the run starts, like the resources."""
    settings = ImagoSettings()
    if settings.executor == "celery":
        from dagster_celery.executor import CeleryExecutor

        args = celery_app_args(settings)
        return CeleryExecutor(retries=no_retries(), broker=args["broker"], backend=args["backend"],
                              include=args["include"], config_source=args["config_source"].__dict__)
    return in_process_step_executor()


def run_worker(settings: ImagoSettings, name: str, *, loglevel: str = "INFO") -> None:
    """A Celery worker taking the steps of `process_images` runs from the broker until stopped."""
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    app = make_app(celery_app_args(settings))
    create_task(app)
    app.worker_main(["worker", "--pool", "solo", "--concurrency", "1", "--queues", QUEUE, "--hostname",
                     f"{name}@%h", "--loglevel", loglevel, "--without-gossip", "--without-mingle"])
