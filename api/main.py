"""The API server's entry point: the HTTP app, publishing to Celery.

``identity serve`` runs ``api.main:create_app`` under uvicorn (one call per server process).
This is the one place where the app and the Celery publisher meet: the app itself only
knows it is handed a publisher.
"""

from __future__ import annotations

from litestar import Litestar

from api.http.app import create_app as create_http_app
from api.settings import get_settings
from workers.celery_app import celery_publisher


def create_app() -> Litestar:
    settings = get_settings()
    return create_http_app(settings, publisher=celery_publisher(settings))
