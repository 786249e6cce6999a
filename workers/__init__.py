"""Celery workers: ``celery -A workers worker`` and ``celery -A workers beat``."""

from __future__ import annotations

from celery.signals import worker_process_shutdown

from api.settings import get_settings
from workers import runtime
from workers.celery_app import create_celery
from workers.tasks import register

app = create_celery(get_settings())
register(app)


@worker_process_shutdown.connect
def _close_runtime(**_: object) -> None:
    runtime.close()


__all__ = ["app"]
