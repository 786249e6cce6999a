"""A store out of reach, said once: one log line when it goes away, one when it is back, and
the ``identity_dependency_up`` gauge, instead of a line for every request it fails.

A request that fails because Postgres or Redis is out of reach answers 503 and calls
``OUTAGES.noticed()``; that starts (at most) one watcher in the process, which probes the
stores every second, says which is down, and ends once every store answers again. Nothing
runs while everything is up: the success path pays nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from api import metrics

log = logging.getLogger("identity.outages")

Probe = Callable[[], Awaitable[dict[str, bool]]]
"""Which stores answer, by name (``postgres``, ``redis``)."""


class Outages:
    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._probe: Probe | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._down: dict[str, float] = {}

    def watch_with(self, probe: Probe | None, stores: tuple[str, ...] = ()) -> None:
        """The app's lifespan hands in its probe (None at shutdown)."""
        self._probe = probe
        for store in stores:
            metrics.DEPENDENCY_UP.labels(store).set(1)
        if probe is None and self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    @property
    def down(self) -> list[str]:
        return sorted(self._down)

    def noticed(self) -> None:
        """A store did not answer a request: find out which (once, in the background)."""
        if self._probe is None or (self._watcher is not None and not self._watcher.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._watcher = loop.create_task(self._watch(self._probe))

    async def _watch(self, probe: Probe) -> None:
        while True:
            for store, up in (await probe()).items():
                metrics.DEPENDENCY_UP.labels(store).set(1 if up else 0)
                if not up and store not in self._down:
                    self._down[store] = time.monotonic()
                    log.warning(
                        "%s is out of reach: what needs it answers 503 until it is back", store
                    )
                elif up and store in self._down:
                    lasted = time.monotonic() - self._down.pop(store)
                    log.warning("%s is back (out of reach for about %.0f s)", store, lasted)
            if not self._down:
                return
            await asyncio.sleep(self.interval_s)


OUTAGES = Outages()


async def reachable(url: str, *, timeout_s: float) -> bool | None:
    """Whether something accepts TCP connections at ``url``'s host and port (None when the
    URL names none, e.g. ``memory://``). For a dependency this process does not otherwise
    talk to (the broker, for ``/readyz``): no protocol, no client library."""
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    if port is None:
        return None
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), timeout_s)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


_DEFAULT_PORTS = {"amqp": 5672, "pyamqp": 5672, "amqps": 5671, "redis": 6379, "rediss": 6380}
