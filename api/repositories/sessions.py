"""The ``sessions`` table: every SQL statement that reads or writes it.

A session is an aggregate of its own (``session.added`` at sequence 1, ``session.terminated``
next), so logging in does not move the user's sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from api.db import Connection, Pool
from api.repositories import events
from api.repositories.events import Details


class Session(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    user_id: str
    org_id: str
    username: str
    org_domain: str
    display_name: str
    sequence: int
    created_at: datetime
    changed_at: datetime


class Terminated(msgspec.Struct, frozen=True):
    """A session that was ended: its details and its token's digest (to forget its cache)."""

    session_id: str
    details: Details
    token_digest: bytes


_INSERT = f"""
WITH s AS (
    INSERT INTO sessions (id, user_id, token_hash, sequence)
    VALUES ($1, $2, $3, 1)
    RETURNING id AS aggregate_id, sequence, $4::text AS resource_owner, created_at,
              jsonb_build_object('userId', user_id) AS payload, user_id AS creator
), {events.append("s", events.SESSION, events.SESSION_ADDED)}
SELECT sequence, created_at, resource_owner FROM ev
"""

_GET = """
SELECT s.id, s.user_id, u.org_id, u.username, o.domain AS org_domain, u.display_name,
       s.sequence, s.created_at,
       (SELECT max(created_at) FROM events e WHERE e.aggregate_id = s.id) AS changed_at
FROM sessions s JOIN users u ON u.id = s.user_id JOIN organizations o ON o.id = u.org_id
WHERE s.id = $1 AND s.revoked_at IS NULL AND u.deleted_at IS NULL
"""

# Ends sessions in one statement: revoke each, append one event each, return the token
# digests whose cache entries must go.
_TERMINATE = f"""
WITH gone AS (
    UPDATE sessions s SET revoked_at = clock_timestamp(), sequence = s.sequence + 1
    FROM users u
    WHERE u.id = s.user_id AND s.revoked_at IS NULL AND s.id = ANY($1::text[])
    RETURNING s.id AS aggregate_id, s.sequence, u.org_id AS resource_owner,
              s.revoked_at AS created_at, $2::jsonb AS payload, $3::text AS creator,
              s.token_hash
), {events.append("gone", events.SESSION, events.SESSION_TERMINATED)}
SELECT aggregate_id, sequence, created_at, resource_owner, token_hash FROM gone
ORDER BY aggregate_id
"""

_LIVE_BEFORE = """
SELECT id FROM sessions
WHERE user_id = $1 AND revoked_at IS NULL AND created_at < $2
  AND ($3::text IS NULL OR id <> $3::text)
"""


async def insert(
    db: Pool | Connection, *, session_id: str, user_id: str, org_id: str, token_digest: bytes
) -> Details:
    row = await db.fetchrow(_INSERT, session_id, user_id, token_digest, org_id)
    return events.details_from(row)


async def get(db: Pool | Connection, session_id: str) -> Session | None:
    row = await db.fetchrow(_GET, session_id)
    return Session(**dict(row)) if row else None


async def terminate(
    db: Pool | Connection, *, session_ids: Sequence[str], reason: str, creator: str
) -> list[Terminated]:
    """End the sessions that are still live among ``session_ids``."""
    rows = await db.fetch(_TERMINATE, list(session_ids), {"reason": reason}, creator)
    return [Terminated(r["aggregate_id"], events.details_from(r), r["token_hash"]) for r in rows]


async def live_before(
    db: Pool | Connection, *, user_id: str, before: datetime, except_session_id: str | None
) -> list[str]:
    """Ids of the user's live sessions created before ``before``, but one."""
    rows = await db.fetch(_LIVE_BEFORE, user_id, before, except_session_id)
    return [r["id"] for r in rows]
