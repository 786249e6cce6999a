"""The ``outbox`` table: side effects written with the change that causes them.

A command's statement adds its outbox rows with ``insert`` (the CTE ``side_effects``), in
the same statement that appends its event; after commit they are published to Celery
by the relay (``api.domain.outbox``), and a task delivers each row once (``lock_batch``,
``mark_many_processed`` in its transaction). Tasks receive only row ids.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

import msgspec

from api import request_ids, tracing
from api.db import Connection, Pool

# Task names: what an outbox row asks a worker to do.
TASK_PASSWORD_CHANGED_EMAIL = "identity.send_password_changed_email"
TASK_PASSWORD_RESET_EMAIL = "identity.send_password_reset_email"
TASK_RELAY_OUTBOX = "identity.relay_outbox"
# The Celery task that delivers a batch of e-mail rows (of either kind above) in one go.
TASK_DELIVER_EMAILS = "identity.deliver_emails"


class OutboxRow(msgspec.Struct, frozen=True):
    """A committed row to publish: its id and the task that processes it."""

    id: int
    task: str


class NewOutboxRow(msgspec.Struct, frozen=True):
    """A row for a command to add: the task and its payload (no secret in clear)."""

    task: str
    payload: dict[str, Any]


class OutboxItem(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    task: str
    aggregate_id: str
    event_sequence: int
    payload: dict[str, Any]
    created_at: datetime
    processed_at: datetime | None


def insert(*, tasks: str, payloads: str) -> str:
    """The CTE ``side_effects``: one outbox row per (task, payload) for the event in ``ev``.

    ``tasks`` and ``payloads`` are parameters of the statement (``$n::text[]``, payloads as
    JSON text), in the order the rows get their ids.
    """
    return f"""side_effects AS (
    INSERT INTO outbox (task, aggregate_id, event_sequence, payload, created_at)
    SELECT t.task, ev.aggregate_id, ev.sequence, t.payload::jsonb, ev.created_at
    FROM ev, unnest({tasks}, {payloads}) WITH ORDINALITY AS t(task, payload, n)
    ORDER BY t.n
    RETURNING id, task
)"""


def arguments(rows: Sequence[NewOutboxRow]) -> tuple[list[str], list[str]]:
    """The ``tasks`` and ``payloads`` parameters of ``insert`` for ``rows``; each payload
    carries the id of the request that made it (``requestId``), for the worker's log, and,
    when tracing is on, the trace context of the change (``traceparent``), the parent of the
    worker's span for the row."""
    request_id = request_ids.CURRENT.get()
    extra: dict[str, str] = tracing.carrier()
    if request_id:
        extra["requestId"] = request_id
    payloads = [msgspec.json.encode({**r.payload, **extra} if extra else r.payload) for r in rows]
    return [r.task for r in rows], [p.decode() for p in payloads]


_MARK_PUBLISHED = """
UPDATE outbox SET published_at = clock_timestamp(), publish_count = publish_count + 1
WHERE id = ANY($1::bigint[])
"""
_DUE_FOR_RELAY = """
SELECT id, task FROM outbox
WHERE processed_at IS NULL AND dead_at IS NULL
  AND ((published_at IS NULL AND created_at < clock_timestamp() - make_interval(secs => $1))
       OR published_at < clock_timestamp() - make_interval(secs => $2))
ORDER BY id
LIMIT $3
FOR UPDATE SKIP LOCKED
"""
# A batch: the rows still to do, locked until the transaction ends, in id order (so that two
# batches sharing rows cannot deadlock). A row another delivery holds is waited for, then
# left out if that one processed it.
_LOCK_BATCH = """
SELECT id, task, aggregate_id, event_sequence, payload, created_at, processed_at
FROM outbox WHERE id = ANY($1::bigint[]) AND processed_at IS NULL AND dead_at IS NULL
ORDER BY id
FOR UPDATE
"""
_MARK_MANY_PROCESSED = """
UPDATE outbox SET processed_at = clock_timestamp() WHERE id = ANY($1::bigint[])
"""
# One more failed attempt each; past the budget ($3), or failed in a way no retry can cure
# (an error kind in $4), the row is dead.
_RECORD_FAILURES = """
UPDATE outbox o SET attempts = o.attempts + 1, last_error = f.error,
       dead_at = CASE WHEN o.attempts + 1 >= $3 OR f.error = ANY($4::text[])
                      THEN clock_timestamp() END
FROM unnest($1::bigint[], $2::text[]) AS f(id, error)
WHERE o.id = f.id
RETURNING o.id, o.dead_at IS NOT NULL AS dead
"""


# Counted up to $1 only: a backlog of published rows waiting for a worker costs nothing more.
_UNPUBLISHED = """
SELECT count(*) FROM (
  SELECT 1 FROM outbox
  WHERE processed_at IS NULL AND dead_at IS NULL AND published_at IS NULL
  LIMIT $1
) AS waiting
"""


async def count_unpublished(db: Pool | Connection, *, up_to: int) -> int:
    """Committed rows never published, counted up to ``up_to``."""
    count: int = await db.fetchval(_UNPUBLISHED, up_to)
    return count


async def mark_published(db: Pool | Connection, ids: Sequence[int]) -> None:
    await db.execute(_MARK_PUBLISHED, list(ids))


async def lock_due_for_relay(
    conn: Connection, *, min_age_s: float, redeliver_after_s: float, limit: int
) -> list[OutboxRow]:
    """Rows never published after ``min_age_s``, or published ``redeliver_after_s`` ago and
    still unprocessed; locked (skipping rows another relay holds) until the transaction ends."""
    records = await conn.fetch(_DUE_FOR_RELAY, min_age_s, redeliver_after_s, limit)
    return [OutboxRow(r["id"], r["task"]) for r in records]


async def lock_batch(conn: Connection, outbox_ids: Sequence[int]) -> list[OutboxItem]:
    """The rows among ``outbox_ids`` still to do, locked until the transaction ends."""
    rows = await conn.fetch(_LOCK_BATCH, list(outbox_ids))
    return [OutboxItem(**dict(r)) for r in rows]


async def mark_many_processed(conn: Connection, outbox_ids: Sequence[int]) -> None:
    if outbox_ids:
        await conn.execute(_MARK_MANY_PROCESSED, list(outbox_ids))


async def record_failures(
    conn: Connection,
    failures: Sequence[tuple[int, str]],
    *,
    max_attempts: int,
    permanent: Collection[str] = (),
) -> list[int]:
    """Count a failed attempt for each (id, error kind); return the ids of the rows now dead.
    A row whose error kind is in ``permanent`` is dead at once, whatever its attempts."""
    if not failures:
        return []
    rows = await conn.fetch(
        _RECORD_FAILURES,
        [f[0] for f in failures],
        [f[1] for f in failures],
        max_attempts,
        list(permanent),
    )
    return [int(r["id"]) for r in rows if r["dead"]]


class OutboxHealth(msgspec.Struct, frozen=True):
    """What the outbox says about the side effects: rows waiting, the age of the oldest,
    dead rows, and e-mails sent so far (their events)."""

    backlog: int
    oldest_unsent_s: float
    dead: int
    emails_sent: int


_HEALTH = """
SELECT
  (SELECT count(*) FROM outbox WHERE processed_at IS NULL AND dead_at IS NULL) AS backlog,
  (SELECT coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)
     FROM outbox WHERE processed_at IS NULL AND dead_at IS NULL) AS oldest_unsent_s,
  (SELECT count(*) FROM outbox WHERE dead_at IS NOT NULL) AS dead,
  (SELECT count(*) FROM events WHERE event_type = ANY($1::text[])) AS emails_sent
"""


async def health(db: Pool | Connection, *, sent_event_types: Sequence[str]) -> OutboxHealth:
    row = await db.fetchrow(_HEALTH, list(sent_event_types))
    assert row is not None  # one row, always
    return OutboxHealth(
        int(row["backlog"]),
        float(row["oldest_unsent_s"]),
        int(row["dead"]),
        int(row["emails_sent"]),
    )
