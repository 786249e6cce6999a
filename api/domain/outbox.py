"""Publishing the outbox: committed side effects reach Celery, none is lost.

After a command commits, ``OutboxDispatcher.dispatch`` publishes its rows from a worker
thread (publishing blocks, and blocks long when the broker is down) and marks them
published. The periodic relay (``relay_due``, run by the beat's ``relay_outbox`` task)
publishes rows still unpublished after a few seconds, and again rows published long ago but
never processed (a lost broker message). Tasks receive only the outbox id and are idempotent
by it, so publishing twice is harmless.

The publisher itself (Celery's ``send_task``) is handed in by the entry point
(``api.main``, ``workers``): the domain knows only that it publishes rows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from api import metrics
from api.db import Pool
from api.repositories import outbox
from api.repositories.outbox import OutboxRow

log = logging.getLogger("identity.outbox")

Publish = Callable[[Sequence[OutboxRow]], None]
"""Publishes rows to the broker, each as a task carrying only its id; blocks."""


async def relay_due(
    pool: Pool, publish: Publish, *, min_age_s: float, redeliver_after_s: float, batch: int = 500
) -> int:
    """Publish due rows, holding their row locks so concurrent relays skip them."""
    total = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await outbox.lock_due_for_relay(
                conn, min_age_s=min_age_s, redeliver_after_s=redeliver_after_s, limit=batch
            )
            if not rows:
                return total
            await asyncio.to_thread(publish, rows)
            await outbox.mark_published(conn, [r.id for r in rows])
        total += len(rows)
        if len(rows) < batch:
            return total


class OutboxDispatcher:
    """Publishes committed outbox rows in the background, off the event loop.

    ``dispatch`` returns at once. Rows of concurrent changes are coalesced: one flusher task
    publishes whatever is queued in batches (one executor hop and one ``UPDATE`` per batch,
    not per change). A failure (broker down) is logged and those rows wait for the periodic
    relay; so do rows beyond ``max_queued``, and every row when there is no publisher. One
    publishing thread keeps Celery's producer use single-threaded.
    """

    def __init__(
        self, pool: Pool, publish: Publish | None, *, batch: int = 200, max_queued: int = 10_000
    ) -> None:
        self._pool = pool
        self._publish = publish
        self._batch = batch
        self._max_queued = max_queued
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="outbox-publish")
        self._queued: list[OutboxRow] = []
        self._flusher: asyncio.Task[None] | None = None

    def dispatch(self, rows: Sequence[OutboxRow]) -> None:
        if not rows or self._publish is None:
            return
        if len(self._queued) < self._max_queued:
            self._queued.extend(rows)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._queued:
            batch, self._queued = self._queued[: self._batch], self._queued[self._batch :]
            await self._publish_rows(batch)

    async def _publish_rows(self, rows: list[OutboxRow]) -> None:
        assert self._publish is not None
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._publish, rows)
        except Exception as exc:  # broker down: the relay publishes later
            metrics.OUTBOX_PUBLISH_FAILURES.inc(len(rows))
            log.warning("outbox publish failed, relay will retry: %s", type(exc).__name__)
            return
        metrics.OUTBOX_PUBLISHED.inc(len(rows))
        try:
            await outbox.mark_published(self._pool, [r.id for r in rows])
        except Exception as exc:
            log.warning("outbox mark-published failed: %s", type(exc).__name__)

    async def drain(self, timeout_s: float = 5.0) -> None:
        if self._flusher is not None and not self._flusher.done():
            await asyncio.wait({self._flusher}, timeout=timeout_s)
        self._executor.shutdown(wait=False, cancel_futures=True)
