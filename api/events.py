"""The append-only event log: event types, the ``details`` of a change, and reads.

Each state change of an aggregate appends exactly one event with ``sequence`` = previous + 1,
in the same statement that updates the aggregate's row (see the owning module's SQL).
Payloads never hold a password, hash, code or token.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from api.db import Connection, Pool

USER_ADDED = "user.human.added"
MACHINE_USER_ADDED = "user.machine.added"
PASSWORD_CHANGED = "user.human.password.changed"
PASSWORD_CODE_ADDED = "user.human.password.code.added"
PASSWORD_CODE_SENT = "user.human.password.code.sent"
PASSWORD_CHANGE_SENT = "user.human.password.change.sent"
USER_LOCKED = "user.locked"
USER_UNLOCKED = "user.unlocked"
USER_DEACTIVATED = "user.deactivated"
USER_REACTIVATED = "user.reactivated"
USER_REMOVED = "user.removed"
SESSION_ADDED = "session.added"
SESSION_TERMINATED = "session.terminated"
ORG_ADDED = "org.added"


class Details(msgspec.Struct, frozen=True):
    """What a change returns: the aggregate's new sequence, commit time and owner."""

    sequence: int
    change_date: datetime
    resource_owner: str


class Event(msgspec.Struct, frozen=True):
    aggregate_id: str
    sequence: int
    aggregate_type: str
    event_type: str
    payload: dict[str, Any]
    creator: str
    resource_owner: str
    created_at: datetime


_LIST_EVENTS = """
SELECT aggregate_id, sequence, aggregate_type, event_type, payload, creator, resource_owner,
       created_at
FROM events WHERE aggregate_id = $1 ORDER BY sequence
"""

# A notification that went out is an aggregate of its own, one event long, keyed by the
# outbox row that caused it: it is not a state change of the user, so it leaves the user's
# sequence alone (the contract's sequence counts state changes only), and a second delivery
# of the same task cannot record it twice.
_RECORD_NOTIFICATION = """
INSERT INTO events (aggregate_id, sequence, aggregate_type, event_type, payload, creator,
                    resource_owner, created_at)
VALUES ($1, 1, 'notification', $2, $3::jsonb, $4, $5, clock_timestamp())
ON CONFLICT (aggregate_id, sequence) DO NOTHING
"""


def notification_aggregate(outbox_id: int) -> str:
    return f"notification-{outbox_id}"


def details_from(row: Any) -> Details:
    return Details(row["sequence"], row["created_at"], row["resource_owner"])


async def list_events(db: Pool | Connection, aggregate_id: str) -> list[Event]:
    rows = await db.fetch(_LIST_EVENTS, aggregate_id)
    return [Event(**dict(r)) for r in rows]


async def record_notification(
    conn: Connection,
    *,
    outbox_id: int,
    event_type: str,
    user_id: str,
    resource_owner: str,
    payload: dict[str, Any],
) -> None:
    """Record that a notification about ``user_id`` was sent (payload carries ``userId``)."""
    await conn.execute(
        _RECORD_NOTIFICATION,
        notification_aggregate(outbox_id),
        event_type,
        {"userId": user_id, "outboxId": outbox_id, **payload},
        "system",
        resource_owner,
    )
