"""The request id: one per HTTP request (the caller's ``X-Request-Id`` when it is a sane
token, else a new one), answered in ``X-Request-Id``, written into the access log line and
into the outbox rows the request commits, so the worker's line for the e-mail it sends names
the same id (``api.main`` sets it, ``api.repositories.outbox`` stores it,
``api.domain.notifications`` logs it)."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

CURRENT: ContextVar[str | None] = ContextVar("request_id", default=None)
# What a caller may choose: short, and nothing that could forge a log line or a header.
_ACCEPTED = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def accept(header: str | None) -> str:
    """The caller's id if it is acceptable, else a new one (32 hex digits)."""
    if header is not None and _ACCEPTED.fullmatch(header):
        return header
    return uuid.uuid4().hex
