"""Logging of every process (API, relay, worker, beat, CLI): one line per record on stderr,
JSON in production (a field per fact, for a log pipeline), text in development (for a
terminal); both carry the request id of the request being served, if any
(``api.request_ids``). ``IDENTITY_LOG_FORMAT`` chooses (``auto``: by ``IDENTITY_ENV``).

Messages are formatted from their arguments by the standard library; nothing here looks at
bodies or headers (the code never logs a password, code or token: ``tests/test_no_secrets_in
_logs.py`` and ``./scripts/scan-secrets`` check it).
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import msgspec

from api import request_ids
from api.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


class _RequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_ids.CURRENT.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, process,
    request_id (when serving one), and the exception's text when there is one."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": self.process,
        }
        request_id = getattr(record, "request_id", "-")
        if request_id != "-":
            line["request_id"] = request_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(line).decode()


def json_logs(settings: Settings) -> bool:
    if settings.log_format == "auto":
        return settings.env == "production"
    return settings.log_format == "json"


def formatter(settings: Settings, *, process: str) -> logging.Formatter:
    return JsonFormatter(process) if json_logs(settings) else logging.Formatter(TEXT_FORMAT)


def adopt(handler: logging.Handler, settings: Settings, *, process: str) -> logging.Handler:
    """Make ``handler`` (ours, or one Celery set up) write our lines."""
    handler.setFormatter(formatter(settings, process=process))
    handler.addFilter(_RequestId())
    return handler


def handler(settings: Settings, *, process: str) -> logging.Handler:
    """The stderr handler of ``process``, formatted as the settings say."""
    return adopt(logging.StreamHandler(sys.stderr), settings, process=process)


def configure(settings: Settings, *, process: str) -> None:
    """Make the root logger write through ``handler`` at ``IDENTITY_LOG_LEVEL``."""
    root = logging.getLogger()
    root.handlers[:] = [handler(settings, process=process)]
    root.setLevel(settings.log_level.upper())
