"""The append-only event log: event types, the ``Details`` of a change, and the one
statement fragment that appends events.

Every state change of an aggregate appends exactly one event with ``sequence`` = previous + 1
in the same statement that changes the aggregate's row. That statement is built by the
repository owning the row with ``append``: the row's own CTE selects the new event's
``aggregate_id, sequence, resource_owner, created_at, payload, creator``; ``append`` turns
each of its rows into one event, so no other module writes to ``events``. Payloads never
hold a password, hash, code or token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from api.db import Connection

# Event types, by aggregate type.
USER = "user"
USER_ADDED = "user.human.added"
MACHINE_USER_ADDED = "user.machine.added"
PASSWORD_CHANGED = "user.human.password.changed"
PASSWORD_CODE_ADDED = "user.human.password.code.added"
USER_LOCKED = "user.locked"
USER_UNLOCKED = "user.unlocked"
USER_DEACTIVATED = "user.deactivated"
USER_REACTIVATED = "user.reactivated"
USER_REMOVED = "user.removed"

SESSION = "session"
SESSION_ADDED = "session.added"
SESSION_TERMINATED = "session.terminated"

ORG = "org"
ORG_ADDED = "org.added"

NOTIFICATION = "notification"
PASSWORD_CODE_SENT = "user.human.password.code.sent"
PASSWORD_CHANGE_SENT = "user.human.password.change.sent"

# What ``append`` returns for each event; a statement ends with ``SELECT ... FROM ev``.
APPENDED_COLUMNS = "aggregate_id, sequence, created_at, resource_owner"

_NAME = re.compile(r"^[a-z][a-z_.]*$")


def _literal(name: str) -> str:
    """An event or aggregate type as a SQL literal (they are this module's constants)."""
    if not _NAME.match(name):
        raise ValueError(f"not an event or aggregate type: {name!r}")
    return f"'{name}'"


def append(
    source: str, aggregate_type: str, event_type: str, *, once: bool = False, name: str = "ev"
) -> str:
    """The CTE ``name`` (``ev``) that appends one event of ``event_type`` for each row of the
    CTE ``source`` (which selects ``aggregate_id, sequence, resource_owner, created_at,
    payload`` (jsonb) and ``creator`` (text)); it returns ``APPENDED_COLUMNS``.

    ``aggregate_type`` and ``event_type`` are this module's constants. ``once``: a second
    append of the same (aggregate, sequence) is skipped (a task run twice) instead of failing
    on the primary key. ``name``: for a statement that appends events of two aggregates.
    """
    conflict = "ON CONFLICT (aggregate_id, sequence) DO NOTHING" if once else ""
    return f"""{name} AS (
    INSERT INTO events (aggregate_id, sequence, aggregate_type, event_type, payload, creator,
                        resource_owner, created_at)
    SELECT aggregate_id, sequence, {_literal(aggregate_type)}, {_literal(event_type)},
           payload, creator, resource_owner, created_at
    FROM {source}
    {conflict}
    RETURNING {APPENDED_COLUMNS}
)"""


class Details(msgspec.Struct, frozen=True):
    """What a change returns: the aggregate's new sequence, commit time and owner."""

    sequence: int
    change_date: datetime
    resource_owner: str


def details_from(row: Any) -> Details:
    """``Details`` of a row holding ``sequence, created_at, resource_owner``."""
    return Details(row["sequence"], row["created_at"], row["resource_owner"])


# A notification that went out is an aggregate of its own, one event long, keyed by the
# outbox row that caused it: it is not a state change of the user, so it leaves the user's
# sequence alone (the contract's sequence counts state changes only), and a second delivery
# of the same task cannot record it twice. A delivered batch records its notifications of one
# type in one statement.
_NOTIFICATIONS = """
SELECT aggregate_id, 1 AS sequence, resource_owner, clock_timestamp() AS created_at,
       payload::jsonb AS payload, 'system'::text AS creator
FROM unnest($1::text[], $2::text[], $3::text[]) AS n(aggregate_id, resource_owner, payload)
"""


def _record_notifications(event_type: str) -> str:
    ev = append("n", NOTIFICATION, event_type, once=True)
    return f"WITH n AS ({_NOTIFICATIONS}), {ev}\nSELECT count(*) FROM ev"


_RECORD_NOTIFICATIONS = {
    event_type: _record_notifications(event_type)
    for event_type in (PASSWORD_CODE_SENT, PASSWORD_CHANGE_SENT)
}


def notification_aggregate(outbox_id: int) -> str:
    return f"notification-{outbox_id}"


class Notification(msgspec.Struct, frozen=True):
    """A notification that went out: its outbox row, its type (``PASSWORD_*_SENT``), the
    user it was about and what the event says besides ``userId`` and ``outboxId``."""

    outbox_id: int
    event_type: str
    user_id: str
    resource_owner: str
    payload: dict[str, Any]


async def record_notifications(conn: Connection, notifications: Sequence[Notification]) -> None:
    """Record that these notifications were sent: one statement per event type."""
    by_type: dict[str, list[Notification]] = {}
    for notification in notifications:
        by_type.setdefault(notification.event_type, []).append(notification)
    for event_type, batch in by_type.items():
        await conn.fetchval(
            _RECORD_NOTIFICATIONS[event_type],
            [notification_aggregate(n.outbox_id) for n in batch],
            [n.resource_owner for n in batch],
            [
                msgspec.json.encode(
                    {"userId": n.user_id, "outboxId": n.outbox_id, **n.payload}
                ).decode()
                for n in batch
            ],
        )
