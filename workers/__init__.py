"""Celery workers: ``celery -A workers worker`` and ``celery -A workers beat``."""

from __future__ import annotations

import logging

from celery.signals import (
    after_setup_logger,
    beat_init,
    celeryd_init,
    worker_process_shutdown,
)

from api import logs
from api.settings import get_settings
from workers import runtime
from workers.celery_app import create_celery
from workers.tasks import register

app = create_celery(get_settings())
register(app)


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


__all__ = ["app"]
