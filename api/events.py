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

# Appends an event to a user and bumps the user's sequence; used by side effects that change
# nothing else on the row (notifications sent).
APPEND_USER_EVENT = """
WITH target AS (
    SELECT id, org_id, sequence FROM users WHERE id = $1 FOR UPDATE
), ev AS (
    INSERT INTO events (aggregate_id, sequence, aggregate_type, event_type, payload, creator,
                        resource_owner, created_at)
    SELECT id, sequence + 1, 'user', $2, $3::jsonb, $4, org_id, clock_timestamp() FROM target
    RETURNING aggregate_id, sequence, created_at, resource_owner
), upd AS (
    UPDATE users u SET sequence = ev.sequence FROM ev WHERE u.id = ev.aggregate_id
)
SELECT sequence, created_at, resource_owner FROM ev
"""


def details_from(row: Any) -> Details:
    return Details(row["sequence"], row["created_at"], row["resource_owner"])


async def list_events(db: Pool | Connection, aggregate_id: str) -> list[Event]:
    rows = await db.fetch(_LIST_EVENTS, aggregate_id)
    return [Event(**dict(r)) for r in rows]


async def append_user_event(
    conn: Connection, *, user_id: str, event_type: str, payload: dict[str, Any], creator: str
) -> Details | None:
    row = await conn.fetchrow(APPEND_USER_EVENT, user_id, event_type, payload, creator)
    return details_from(row) if row else None
