"""Sessions: log in with a password check (counts toward lockout), read, terminate, and
revoke a user's other sessions after a password change (run by a worker)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import msgspec

from api import auth, events, policies, ratelimit, users
from api.auth import Principal
from api.db import Connection, Pool
from api.errors import (
    NoPermission,
    PasswordInvalid,
    PasswordNotSet,
    SessionNotFound,
    UserLocked,
    UserNotActive,
    UserNotFound,
)
from api.events import Details
from api.ids import new_id
from api.kv import Keys, Redis
from api.stores import Stores

log = logging.getLogger("identity.sessions")


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


class NewSession(msgspec.Struct, frozen=True):
    session_id: str
    token: str
    details: Details


_INSERT_SESSION = """
WITH s AS (
    INSERT INTO sessions (id, user_id, token_hash, sequence)
    VALUES ($1, $2, $3, 1)
    RETURNING id, created_at
)
INSERT INTO events (aggregate_id, sequence, aggregate_type, event_type, payload, creator,
                    resource_owner, created_at)
SELECT s.id, 1, 'session', 'session.added', jsonb_build_object('userId', $2::text), $2, $4,
       s.created_at
FROM s
RETURNING sequence, created_at, resource_owner
"""

_GET_SESSION = """
SELECT s.id, s.user_id, u.org_id, u.username, o.domain AS org_domain, u.display_name,
       s.sequence, s.created_at,
       (SELECT max(created_at) FROM events e WHERE e.aggregate_id = s.id) AS changed_at
FROM sessions s JOIN users u ON u.id = s.user_id JOIN organizations o ON o.id = u.org_id
WHERE s.id = $1 AND s.revoked_at IS NULL AND u.deleted_at IS NULL
"""

# Terminates sessions in one statement: revoke, append one event each, return the token
# digests whose cache entries must go.
_TERMINATE = """
WITH gone AS (
    UPDATE sessions s SET revoked_at = clock_timestamp(), sequence = s.sequence + 1
    FROM users u
    WHERE u.id = s.user_id AND s.revoked_at IS NULL AND s.id = ANY($1::text[])
    RETURNING s.id, s.sequence, s.token_hash, s.revoked_at, u.org_id
), ev AS (
    INSERT INTO events (aggregate_id, sequence, aggregate_type, event_type, payload, creator,
                        resource_owner, created_at)
    SELECT id, sequence, 'session', 'session.terminated', $2::jsonb, $3, org_id, revoked_at
    FROM gone
)
SELECT id, sequence, token_hash, revoked_at, org_id FROM gone ORDER BY id
"""

_SESSIONS_BEFORE = """
SELECT id FROM sessions
WHERE user_id = $1 AND revoked_at IS NULL AND created_at < $2
  AND ($3::text IS NULL OR id <> $3::text)
"""


async def create_session(
    stores: Stores,
    *,
    login_name: str | None,
    user_id: str | None,
    password: str,
    client_ip: str,
) -> NewSession:
    if user_id is not None:
        user = await users.get_user(stores.pool, user_id)
    else:
        user = await users.find_by_login_name(stores.pool, login_name or "")
    if user.kind != "human":
        raise UserNotFound()  # machine users authenticate with tokens, not passwords
    await ratelimit.before_verification(
        stores.redis, stores.keys, stores.settings, user_id=user.id, client_ip=client_ip
    )
    if user.state == users.LOCKED:
        raise UserLocked()
    if user.state == users.INACTIVE:
        raise UserNotActive()
    if user.password_hash is None:
        raise PasswordNotSet()
    if not await stores.hasher.verify(user.password_hash, password):
        policy = policies.effective_policy(stores.settings, user.policy_overrides)
        await users.record_failed_password(
            stores.pool, user_id=user.id, max_attempts=policy.max_password_attempts
        )
        await ratelimit.after_failed_verification(
            stores.redis, stores.keys, stores.settings, client_ip=client_ip
        )
        raise PasswordInvalid()
    if user.failed_password_attempts:
        await users.reset_failed_passwords(stores.pool, user.id)
    if stores.hasher.needs_rehash(user.password_hash):
        new_hash = await stores.hasher.hash(password)
        await users.replace_hash(
            stores.pool, user_id=user.id, new_hash=new_hash, old_hash=user.password_hash
        )

    token = auth.new_token()
    session_id = new_id()
    row = await stores.pool.fetchrow(
        _INSERT_SESSION,
        session_id,
        user.id,
        auth.token_digest(stores.settings.secret_key, token),
        user.org_id,
    )
    return NewSession(session_id, token, events.details_from(row))


async def get_session(stores: Stores, *, principal: Principal, session_id: str) -> Session:
    row = await stores.pool.fetchrow(_GET_SESSION, session_id)
    if row is None:
        raise SessionNotFound()
    session = Session(**dict(row))
    if not (principal.user_id == session.user_id or principal.may_write(session.org_id)):
        raise NoPermission()
    return session


async def terminate(
    conn: Pool | Connection,
    redis: Redis,
    keys: Keys,
    *,
    session_ids: list[str],
    reason: str,
    creator: str,
) -> list[Any]:
    rows = await conn.fetch(_TERMINATE, session_ids, {"reason": reason}, creator)
    await auth.forget_digests(redis, keys, [r["token_hash"] for r in rows])
    return list(rows)


async def delete_session(stores: Stores, *, principal: Principal, session_id: str) -> Details:
    session = await get_session(stores, principal=principal, session_id=session_id)
    rows = await terminate(
        stores.pool,
        stores.redis,
        stores.keys,
        session_ids=[session.id],
        reason="deleted",
        creator=principal.user_id,
    )
    if not rows:
        raise SessionNotFound()
    return Details(rows[0]["sequence"], rows[0]["revoked_at"], rows[0]["org_id"])


async def revoke_sessions_before(
    conn: Pool | Connection,
    redis: Redis,
    keys: Keys,
    *,
    user_id: str,
    before: datetime,
    except_session_id: str | None,
) -> list[bytes]:
    """Revoke every live session of the user created before ``before``, except one; return
    the revoked sessions' token digests."""
    ids = [r["id"] for r in await conn.fetch(_SESSIONS_BEFORE, user_id, before, except_session_id)]
    if not ids:
        return []
    rows = await terminate(
        conn, redis, keys, session_ids=ids, reason="password changed", creator="system"
    )
    return [r["token_hash"] for r in rows]
