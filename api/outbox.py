"""The transactional outbox: side effects written with the change, published after commit.

Rows are inserted by the statement that makes the change (see ``passwords``). After the
commit, ``OutboxDispatcher`` publishes them to Celery from a worker thread (publishing blocks,
and blocks long when the broker is down) and marks them published. The periodic relay
(``workers.tasks.relay_outbox``) publishes rows still unpublished after a few seconds, and
again rows published long ago but never processed (a lost broker message). Tasks receive only
the outbox id and are idempotent by it, so publishing twice is harmless; processing takes
the row lock and sets ``processed_at``, so a second delivery does nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import msgspec

from api import metrics
from api.db import Connection, Pool

log = logging.getLogger("identity.outbox")

TASK_PASSWORD_CHANGED_EMAIL = "identity.send_password_changed_email"
TASK_PASSWORD_RESET_EMAIL = "identity.send_password_reset_email"
TASK_REVOKE_SESSIONS = "identity.revoke_sessions"
TASK_RELAY_OUTBOX = "identity.relay_outbox"


class OutboxRow(msgspec.Struct, frozen=True):
    id: int
    task: str


class OutboxItem(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    task: str
    aggregate_id: str
    event_sequence: int
    payload: dict[str, Any]
    created_at: datetime
    processed_at: datetime | None


Publish = Callable[[Sequence[OutboxRow]], None]

_MARK_PUBLISHED = """
UPDATE outbox SET published_at = clock_timestamp(), publish_count = publish_count + 1
WHERE id = ANY($1::bigint[])
"""
_DUE_FOR_RELAY = """
SELECT id, task FROM outbox
WHERE processed_at IS NULL
  AND ((published_at IS NULL AND created_at < clock_timestamp() - make_interval(secs => $1))
       OR published_at < clock_timestamp() - make_interval(secs => $2))
ORDER BY id
LIMIT $3
FOR UPDATE SKIP LOCKED
"""
_LOCK_FOR_PROCESSING = """
SELECT id, task, aggregate_id, event_sequence, payload, created_at, processed_at
FROM outbox WHERE id = $1 FOR UPDATE
"""
_MARK_PROCESSED = "UPDATE outbox SET processed_at = clock_timestamp() WHERE id = $1"


async def mark_published(db: Pool | Connection, ids: Sequence[int]) -> None:
    await db.execute(_MARK_PUBLISHED, list(ids))


async def relay_due(
    pool: Pool, publish: Publish, *, min_age_s: float, redeliver_after_s: float, batch: int = 500
) -> int:
    """Publish due rows, holding their row locks so concurrent relays skip them."""
    total = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = [
                OutboxRow(r["id"], r["task"])
                for r in await conn.fetch(_DUE_FOR_RELAY, min_age_s, redeliver_after_s, batch)
            ]
            if not rows:
                return total
            await asyncio.to_thread(publish, rows)
            await mark_published(conn, [r.id for r in rows])
        total += len(rows)
        if len(rows) < batch:
            return total


async def lock_for_processing(conn: Connection, outbox_id: int) -> OutboxItem | None:
    row = await conn.fetchrow(_LOCK_FOR_PROCESSING, outbox_id)
    return OutboxItem(**dict(row)) if row else None


async def mark_processed(conn: Connection, outbox_id: int) -> None:
    await conn.execute(_MARK_PROCESSED, outbox_id)


class OutboxDispatcher:
    """Publishes committed outbox rows in the background, off the event loop.

    ``dispatch`` returns at once. Rows of concurrent changes are coalesced: one flusher task
    publishes whatever is queued in batches (one executor hop and one ``UPDATE`` per batch,
    not per change). A failure (broker down) is logged and those rows wait for the periodic
    relay; so do rows beyond ``max_queued``. One publishing thread keeps Celery's producer
    use single-threaded.
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
            await mark_published(self._pool, [r.id for r in rows])
        except Exception as exc:
            log.warning("outbox mark-published failed: %s", type(exc).__name__)

    async def drain(self, timeout_s: float = 5.0) -> None:
        if self._flusher is not None and not self._flusher.done():
            await asyncio.wait({self._flusher}, timeout=timeout_s)
        self._executor.shutdown(wait=False, cancel_futures=True)
