"""The ``sessions`` table: every SQL statement that reads or writes it.

A session is an aggregate of its own (``session.added`` at sequence 1, ``session.terminated``
next), so logging in does not move the user's sequence. A session carries its user's
credentials version and is live only while that version is current.
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


# A login's session, only if the password hash it checked ($4) is still the user's, at the
# user's current credentials version: a login racing a password change either waits for the
# change and finds the new hash (no session), or gets a session the change's new version
# refuses. FOR SHARE makes the login wait for a change in progress.
_INSERT = f"""
WITH u AS (
    SELECT id, org_id, credentials_version FROM users
    WHERE id = $2 AND password_hash = $4 AND deleted_at IS NULL
    FOR SHARE
), s AS (
    INSERT INTO sessions (id, user_id, token_hash, sequence, credentials_version)
    SELECT $1, u.id, $3, 1, u.credentials_version FROM u
    RETURNING id AS aggregate_id, sequence, (SELECT org_id FROM u) AS resource_owner,
              created_at, jsonb_build_object('userId', user_id) AS payload,
              user_id AS creator
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


async def insert(
    db: Pool | Connection,
    *,
    session_id: str,
    user_id: str,
    token_digest: bytes,
    password_hash: str,
) -> Details | None:
    """A new session (``session.added``); None if ``password_hash`` is no longer the user's."""
    row = await db.fetchrow(_INSERT, session_id, user_id, token_digest, password_hash)
    return events.details_from(row) if row else None


async def get(db: Pool | Connection, session_id: str) -> Session | None:
    row = await db.fetchrow(_GET, session_id)
    return Session(**dict(row)) if row else None


async def terminate(
    db: Pool | Connection, *, session_ids: Sequence[str], reason: str, creator: str
) -> list[Terminated]:
    """End the sessions that are still live among ``session_ids``."""
    rows = await db.fetch(_TERMINATE, list(session_ids), {"reason": reason}, creator)
    return [Terminated(r["aggregate_id"], events.details_from(r), r["token_hash"]) for r in rows]
