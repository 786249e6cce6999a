"""Celery workers: ``celery -A workers worker`` and ``celery -A workers beat``."""

from __future__ import annotations

# First of all: in a worker, the Prometheus multiprocess directory is chosen before any
# metric exists (api.metrics, workers.metrics).
from workers import multiprocess  # noqa: F401  # isort: skip

import logging

from celery.signals import (
    after_setup_logger,
    beat_init,
    celeryd_init,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_shutdown,
    worker_ready,
)

from api import logs
from api.settings import get_settings
from workers import metrics, runtime, sweep_logs
from workers.celery_app import create_celery
from workers.tasks import register

app = create_celery(get_settings())
register(app)
sweep_logs.install()  # beat's idle sweeps: DEBUG lines, not INFO


@celeryd_init.connect
def _refuse_dev_secret_worker(**_: object) -> None:
    # Before the worker connects to anything (a SystemExit passes through Celery's signal
    # dispatch, which only logs Exceptions).
    get_settings().require_secret_key("worker")


@beat_init.connect
def _refuse_dev_secret_beat(**_: object) -> None:
    get_settings().require_secret_key("beat")


@after_setup_logger.connect
def _our_log_lines(logger: logging.Logger, **_: object) -> None:
    # Celery set up its handlers; they write our lines (JSON in production, request ids).
    for handler in logger.handlers:
        logs.adopt(handler, get_settings(), process="celery")


@worker_process_shutdown.connect
def _close_runtime(**_: object) -> None:
    runtime.close()


# The worker's metrics (workers.metrics): its endpoint, started in the main process before
# the pool forks (a port in use stops the worker); each task's outcome and duration, in the
# process that ran it; a pool process's exit.
@worker_init.connect
def _serve_metrics(**_: object) -> None:
    metrics.serve_worker(get_settings())


worker_ready.connect(metrics.announce_worker)
task_prerun.connect(metrics.task_started)
task_postrun.connect(metrics.task_ended)
worker_process_shutdown.connect(metrics.child_exited)


__all__ = ["app"]
