"""Per-process context for tasks: one event loop and the domain's ``Context`` on it.

Created lazily in the process that runs tasks (after a prefork fork, never before), so
each pool child has its own connections (and, when the ``OTEL_*`` variables turn tracing on,
its own span exporter).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from api import tracing
from api.domain.context import Context, close_context, open_context
from api.settings import get_settings

T = TypeVar("T")


@dataclass
class Runtime:
    loop: asyncio.AbstractEventLoop
    ctx: Context
    pid: int


_runtime: Runtime | None = None


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's where it is installed (as the API's server uses): the worker, the relay and
    the development SMTP sink spend less CPU per message on it than on asyncio's own."""
    try:
        import uvloop
    except ImportError:  # no uvloop on this platform (Windows, PyPy)
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def runtime() -> Runtime:
    global _runtime
    if _runtime is None or _runtime.pid != os.getpid():
        tracing.configure(process="worker")  # when the OTEL_* variables ask for it
        loop = new_event_loop()
        # Tasks publish nothing after commit: the relay publishes what they add.
        ctx = loop.run_until_complete(open_context(get_settings(), min_size=0, max_size=2))
        _runtime = Runtime(loop=loop, ctx=ctx, pid=os.getpid())
    return _runtime


def run(coro: Coroutine[Any, Any, T]) -> T:
    return runtime().loop.run_until_complete(coro)


def close() -> None:
    global _runtime
    if _runtime is not None and _runtime.pid == os.getpid():
        rt = _runtime
        rt.loop.run_until_complete(close_context(rt.ctx))
        rt.loop.close()
        tracing.flush()  # a pool child ends without its exit handlers
    _runtime = None
