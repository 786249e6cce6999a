"""Logging of every process (API, relay, worker, beat, CLI): one line per record on stderr,
JSON in production (a field per fact, for a log pipeline), text in development (for a
terminal); both carry the request id of the request being served, if any
(``api.request_ids``). ``IDENTITY_LOG_FORMAT`` chooses (``auto``: by ``IDENTITY_ENV``).

No secret can be logged by construction, in three parts:

- every log call of the service passes a literal format and only arguments that are not
  secrets by name (ids, counts, types): ``tests/test_logs_by_construction.py`` reads every
  call in ``api/`` and ``workers/`` and fails on a formatted string, an f-string or an
  argument named like a password, code, token, key, link or payload;
- an exception is written as its type and stack frames, never its text: a library's
  message may quote what it was given (a parameter, a header, a URL with a code);
- nothing here looks at bodies, headers or query strings; the access line has the path
  template's values only (``api.main``).

``tests/test_no_secrets_in_logs.py`` and ``./scripts/scan-secrets`` check the outcome: no
password, code or token of a run appears in its logs.
"""

from __future__ import annotations

import logging
import sys
import traceback
from datetime import UTC, datetime
from types import TracebackType
from typing import TypeAlias

import msgspec

from api import request_ids
from api.settings import Settings

_ExcInfo: TypeAlias = (
    "tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]"
)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


class _RequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_ids.CURRENT.get() or "-"
        return True


def safe_exception_text(exc_info: _ExcInfo) -> str:
    """An exception as its stack frames and its type (with its causes'), never its text."""
    kind, exc, tb = exc_info
    lines = ["Traceback (most recent call last):\n", *traceback.format_tb(tb)]
    names = [kind.__name__ if kind is not None else "?"]
    cause = exc.__cause__ or exc.__context__ if exc is not None else None
    while cause is not None and len(names) < 10:
        names.append(type(cause).__name__)
        cause = cause.__cause__ or cause.__context__
    lines.append(" <- ".join(names) + " (message not logged)")
    return "".join(lines)


class TextFormatter(logging.Formatter):
    """A line for a terminal: time, level, logger, request id, message."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatException(self, ei: _ExcInfo) -> str:
        return safe_exception_text(ei)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, process,
    request_id (when serving one), and the exception's frames and type when there is one."""

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

    def formatException(self, ei: _ExcInfo) -> str:
        return safe_exception_text(ei)


def json_logs(settings: Settings) -> bool:
    if settings.log_format == "auto":
        return settings.env == "production"
    return settings.log_format == "json"


def formatter(settings: Settings, *, process: str) -> logging.Formatter:
    return JsonFormatter(process) if json_logs(settings) else TextFormatter()


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
