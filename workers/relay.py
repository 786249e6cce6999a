"""The outbox relay, its own process (``identity relay``, the Procfile's ``relay``).

It publishes committed outbox rows as batched ``identity.deliver_emails`` tasks, so the API
only commits its rows and answers. It is woken by Postgres (``LISTEN identity_outbox``, sent
by a trigger at each commit that adds rows), then gathers the commits of the next
``relay_gather_s`` without listening (it looks every ``GATHER_POLL_S`` whether a task's worth
is waiting), and sweeps every ``relay_interval_s`` anyway, for
a notification missed while it was not listening and for rows published long ago but never
processed. Several relays may run at once: each locks the rows it publishes and skips rows
another holds (``SKIP LOCKED``), so none is published twice by them. Postgres or the broker
out of reach: it logs once, retries with backoff, and goes on when they are back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

import asyncpg

from api import logs
from api.db import Pool
from api.domain.context import context
from api.domain.outbox import batch_waiting, relay_due
from api.settings import Settings, get_settings
from workers import metrics
from workers.celery_app import create_celery, publish_outbox_rows
from workers.runtime import new_event_loop

log = logging.getLogger("identity.relay")
CHANNEL = "identity_outbox"


# While gathering, how often the relay looks whether a task's worth of rows is waiting.
GATHER_POLL_S = 0.25


async def relay_forever(settings: Settings, stop: asyncio.Event) -> None:
    celery = create_celery(settings)
    woken = asyncio.Event()  # Postgres announced a commit since the sweep began

    def announced(*_: object) -> None:  # asyncpg's listener callback
        woken.set()

    listener: asyncpg.Connection | None = None
    listening = False
    backoff = 0.0
    try:
        async with context(settings, min_size=0, max_size=2) as ctx:
            while not stop.is_set():
                try:
                    if listener is None or listener.is_closed():
                        listener = await asyncpg.connect(settings.database_url)
                        listening = False
                    # Listening before the sweep reads: a commit after its snapshot wakes it.
                    if not listening:
                        await listener.add_listener(CHANNEL, announced)
                        listening = True
                    woken.clear()
                    published = await relay_due(
                        ctx.pool,
                        lambda rows: publish_outbox_rows(
                            celery, rows, batch_size=settings.mail_batch_size
                        ),
                        min_age_s=0,
                        redeliver_after_s=settings.relay_redeliver_after_s,
                    )
                    # One INFO line for a sweep that published; an idle one is DEBUG.
                    if published:
                        log.info("published %d outbox rows", published)
                    else:
                        log.debug("sweep: nothing due")
                    metrics.RELAY_SWEEPS.labels("published" if published else "idle").inc()
                    if backoff:
                        log.warning("relay publishing again")
                    backoff = 0.0
                    wait = settings.relay_interval_s
                except Exception as exc:  # Postgres or the broker out of reach
                    metrics.RELAY_SWEEPS.labels("failed").inc()
                    if not backoff:
                        log.warning("relay cannot publish (%s), retrying", type(exc).__name__)
                    backoff = min(30.0, max(0.5, backoff * 2))
                    wait = backoff
                    if listener is not None and not listener.is_closed():
                        listener.terminate()
                    listener = None
                await _first_of(woken, stop, wait_s=wait)
                if woken.is_set() and settings.relay_gather_s > 0:
                    # Let the commits of the next moments join this one's batch: fewer,
                    # larger tasks for the worker, at the cost of this much delay (less
                    # once a task's worth is waiting). Not listening meanwhile: a wake-up of
                    # the relay and of its Postgres backend for every commit cost more than
                    # a look every GATHER_POLL_S; the sweep above listens again first.
                    try:
                        if listener is not None and listening:
                            listening = False
                            await listener.remove_listener(CHANNEL, announced)
                        await _gather(ctx.pool, stop, settings)
                    except Exception:  # Postgres out of reach: the sweep will say so
                        if listener is not None and not listener.is_closed():
                            listener.terminate()
                        listener = None
    finally:
        if listener is not None and not listener.is_closed():
            await listener.close()
        celery.close()


async def _gather(pool: Pool, stop: asyncio.Event, settings: Settings) -> None:
    """Until ``relay_gather_s`` has passed, the relay is stopped, or a task's worth of rows
    (``mail_batch_size``) waits to be published."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.relay_gather_s
    while (left := deadline - loop.time()) > 0 and not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), min(GATHER_POLL_S, left))
        if await batch_waiting(pool, batch_size=settings.mail_batch_size):
            return


async def _first_of(woken: asyncio.Event, stop: asyncio.Event, *, wait_s: float) -> None:
    """Until rows are committed, the relay is stopped, or ``wait_s`` has passed."""
    waiters = {asyncio.ensure_future(woken.wait()), asyncio.ensure_future(stop.wait())}
    _, pending = await asyncio.wait(waiters, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
    for waiter in pending:
        waiter.cancel()


async def listening(settings: Settings) -> bool:
    """Some relay is connected and listening, or gathering (its last statement then
    ``UNLISTEN``; it listens again before its next sweep): the container's health check."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND query ILIKE $1",
            f"%LISTEN%{CHANNEL}%",
        )
    finally:
        await conn.close()
    return count > 0


def main() -> None:
    settings = get_settings()
    settings.require_secret_key("relay")
    if sys.argv[1:] == ["--check"]:
        raise SystemExit(0 if asyncio.run(listening(settings)) else 1)
    logs.configure(settings, process="relay")
    metrics.serve_relay(settings)  # IDENTITY_RELAY_METRICS_PORT (0: none)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("relay listening on %s", CHANNEL)
        await relay_forever(settings, stop)

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(run())


if __name__ == "__main__":
    main()
