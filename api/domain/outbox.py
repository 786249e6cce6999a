"""Publishing the outbox: committed side effects reach Celery, none is lost.

A command only commits its outbox rows. The relay (``workers.relay``, woken by Postgres at
each commit, and beat's ``relay_outbox`` task as a second sweep) publishes them with
``relay_due``: rows not yet published, and again rows published long ago but never processed
(a lost broker message). Tasks receive only outbox ids and deliver each row once, so
publishing twice is harmless.

The publisher itself (Celery's ``send_task``) is handed in by the worker side: the domain
knows only that it publishes rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from api.db import Pool
from api.repositories import outbox
from api.repositories.outbox import OutboxRow

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


async def batch_waiting(pool: Pool, *, batch_size: int) -> bool:
    """At least ``batch_size`` committed rows wait to be published (a task's worth)."""
    return await outbox.count_unpublished(pool, up_to=batch_size) >= batch_size
