"""Users: the current state of each user, its SQL, and the state changes that are not
password changes (create, lock, unlock, deactivate, reactivate, remove, lockout)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from api import auth, events
from api.auth import Principal
from api.db import Connection, Pool
from api.errors import (
    HashInvalid,
    OrganizationNotFound,
    UserIdTaken,
    UserLocked,
    UsernameTaken,
    UserNotActive,
    UserNotFound,
    UserNotInactive,
    UserNotLocked,
)
from api.events import Details
from api.hashing import PasswordHasher, is_supported_hash
from api.ids import new_id
from api.kv import Keys, Redis

ACTIVE, INACTIVE, LOCKED = "active", "inactive", "locked"
WIRE_STATES = {
    ACTIVE: "USER_STATE_ACTIVE",
    INACTIVE: "USER_STATE_INACTIVE",
    LOCKED: "USER_STATE_LOCKED",
}


class User(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    org_id: str
    org_domain: str
    kind: str
    role: str | None
    username: str
    given_name: str
    family_name: str
    display_name: str
    email: str
    email_verified: bool
    state: str
    password_hash: str | None
    password_change_required: bool
    password_changed_at: datetime | None
    failed_password_attempts: int
    sequence: int
    created_at: datetime
    updated_at: datetime
    policy_overrides: dict[str, Any] | None = None

    @property
    def preferred_login_name(self) -> str:
        return f"{self.username}@{self.org_domain}"

    @property
    def password_changed_ms(self) -> int:
        changed = self.password_changed_at
        return int(changed.timestamp() * 1000) if changed else 0


class NewHuman(msgspec.Struct, frozen=True, kw_only=True):
    org_id: str
    user_id: str | None = None
    username: str | None = None
    given_name: str = ""
    family_name: str = ""
    display_name: str = ""
    email: str = ""
    email_verified: bool = False
    password: str | None = None
    hashed_password: str | None = None
    change_required: bool = False


_COLUMNS = """
u.id, u.org_id, o.domain AS org_domain, u.kind, u.role, u.username, u.given_name,
u.family_name, u.display_name, u.email, u.email_verified, u.state, u.password_hash,
u.password_change_required, u.password_changed_at, u.failed_password_attempts, u.sequence,
u.created_at, u.updated_at, p.settings AS policy_overrides
"""
# The organization's policy overrides come with the user: a change needs both, in one read.
_FROM = """
users u JOIN organizations o ON o.id = u.org_id LEFT JOIN policies p ON p.org_id = u.org_id
"""
_GET_BY_ID = f"""
SELECT {_COLUMNS} FROM {_FROM}
WHERE u.id = $1 AND u.deleted_at IS NULL
"""
# A login name is "username@org-domain" (unique) or a bare username (unique per organization;
# ambiguous across organizations, so then it must be qualified).
_GET_BY_LOGIN_NAME = f"""
SELECT {_COLUMNS} FROM {_FROM}
WHERE u.deleted_at IS NULL AND (
    (lower(u.username) = lower($1))
    OR (lower(u.username) || '@' || o.domain = lower($1)))
LIMIT 2
"""

_INSERT_USER = """
WITH org AS (
    SELECT id, clock_timestamp() AS ts FROM organizations WHERE id = $2
), u AS (
    INSERT INTO users (id, org_id, kind, role, username, given_name, family_name, display_name,
                       email, email_verified, password_hash, password_change_required,
                       password_changed_at, sequence, created_at, updated_at)
    SELECT $1, org.id, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
           CASE WHEN $11::text IS NULL THEN NULL ELSE org.ts END, 1, org.ts, org.ts
    FROM org
    RETURNING id, org_id, password_hash, created_at
), ev AS (
    INSERT INTO events (aggregate_id, sequence, aggregate_type, event_type, payload, creator,
                        resource_owner, created_at)
    SELECT id, 1, 'user', $13, $14::jsonb, $15, org_id, created_at FROM u
    RETURNING sequence, created_at, resource_owner
), history AS (
    INSERT INTO password_history (user_id, sequence, password_hash, created_at)
    SELECT id, 1, password_hash, created_at FROM u WHERE password_hash IS NOT NULL
)
SELECT sequence, created_at, resource_owner FROM ev
"""

# Moves a user between states, guarded by the states it may leave: one statement that locks
# the row, appends the event and updates the row.
_CHANGE_STATE = """
WITH target AS (
    SELECT id, org_id, sequence FROM users
    WHERE id = $1 AND deleted_at IS NULL AND state = ANY($2::text[])
    FOR UPDATE
), ev AS (
    INSERT INTO events (aggregate_id, sequence, aggregate_type, event_type, payload, creator,
                        resource_owner, created_at)
    SELECT id, sequence + 1, 'user', $3, '{}'::jsonb, $4, org_id, clock_timestamp() FROM target
    RETURNING aggregate_id, sequence, created_at, resource_owner
), upd AS (
    UPDATE users u
    SET state = $5, sequence = ev.sequence, updated_at = ev.created_at,
        failed_password_attempts =
            CASE WHEN $5 = 'active' THEN 0 ELSE u.failed_password_attempts END,
        deleted_at = CASE WHEN $6 THEN ev.created_at ELSE NULL END
    FROM ev WHERE u.id = ev.aggregate_id
)
SELECT sequence, created_at, resource_owner FROM ev
"""

_COUNT_FAILED_PASSWORD = """
UPDATE users SET failed_password_attempts = failed_password_attempts + 1
WHERE id = $1 AND deleted_at IS NULL
RETURNING failed_password_attempts, state
"""
_RESET_FAILED_PASSWORD = """
UPDATE users SET failed_password_attempts = 0 WHERE id = $1 AND failed_password_attempts <> 0
"""
_REHASH = "UPDATE users SET password_hash = $2 WHERE id = $1 AND password_hash = $3"


def _user(row: Any) -> User:
    return User(**dict(row))


async def get_user(db: Pool | Connection, user_id: str) -> User:
    row = await db.fetchrow(_GET_BY_ID, user_id)
    if row is None:
        raise UserNotFound()
    return _user(row)


async def get_human(db: Pool | Connection, user_id: str) -> User:
    """A human user: machine users have no password and are not found by password calls."""
    user = await get_user(db, user_id)
    if user.kind != "human":
        raise UserNotFound()
    return user


async def find_by_login_name(db: Pool | Connection, login_name: str) -> User:
    rows = await db.fetch(_GET_BY_LOGIN_NAME, login_name)
    if len(rows) != 1:
        raise UserNotFound()
    return _user(rows[0])


# --- creation -------------------------------------------------------------------------------


async def insert_user(
    conn: Connection,
    *,
    user_id: str,
    org_id: str,
    kind: str,
    role: str | None,
    username: str,
    profile: tuple[str, str, str] = ("", "", ""),
    email: str = "",
    email_verified: bool = False,
    password_hash: str | None = None,
    change_required: bool = False,
    creator: str = "",
) -> Details:
    event_type = events.USER_ADDED if kind == "human" else events.MACHINE_USER_ADDED
    payload: dict[str, Any] = {"userName": username, "email": email}
    if role:
        payload["role"] = role
    try:
        row = await conn.fetchrow(
            _INSERT_USER,
            user_id,
            org_id,
            kind,
            role,
            username,
            *profile,
            email,
            email_verified,
            password_hash,
            change_required,
            event_type,
            payload,
            creator,
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "users_pkey":
            raise UserIdTaken() from None
        raise UsernameTaken() from None
    if row is None:
        raise OrganizationNotFound()
    return events.details_from(row)


async def create_human(
    pool: Pool,
    hasher: PasswordHasher,
    *,
    principal: Principal,
    new: NewHuman,
    check_password: Callable[[str, str], Awaitable[None]],
) -> tuple[str, Details]:
    """Create a human user; ``check_password`` applies the organization's policy."""
    auth.require_write(principal, new.org_id)
    password_hash: str | None = None
    if new.password is not None:
        await check_password(new.org_id, new.password)
        password_hash = await hasher.hash(new.password)
    elif new.hashed_password is not None:
        if not is_supported_hash(new.hashed_password):
            raise HashInvalid()
        password_hash = new.hashed_password
    user_id = new.user_id or new_id()
    async with pool.acquire() as conn:
        details = await insert_user(
            conn,
            user_id=user_id,
            org_id=new.org_id,
            kind="human",
            role=None,
            username=new.username or new.email or user_id,
            profile=(new.given_name, new.family_name, new.display_name),
            email=new.email,
            email_verified=new.email_verified,
            password_hash=password_hash,
            change_required=new.change_required,
            creator=principal.user_id,
        )
    return user_id, details


# --- state changes ----------------------------------------------------------------------------

# (allowed from-states, to-state, event, removes the user)
_TRANSITIONS: dict[str, tuple[tuple[str, ...], str, str, bool]] = {
    "lock": ((ACTIVE,), LOCKED, events.USER_LOCKED, False),
    "unlock": ((LOCKED,), ACTIVE, events.USER_UNLOCKED, False),
    "deactivate": ((ACTIVE, LOCKED), INACTIVE, events.USER_DEACTIVATED, False),
    "reactivate": ((INACTIVE,), ACTIVE, events.USER_REACTIVATED, False),
    "remove": ((ACTIVE, LOCKED, INACTIVE), INACTIVE, events.USER_REMOVED, True),
}


def _refuse_transition(action: str, state: str) -> None:
    if action == "lock":
        raise UserLocked() if state == LOCKED else UserNotActive()
    if action == "unlock":
        raise UserNotLocked()
    if action == "deactivate":
        raise UserNotActive()
    if action == "reactivate":
        raise UserNotInactive()


async def change_state(
    pool: Pool, redis: Redis, keys: Keys, *, principal: Principal, user_id: str, action: str
) -> Details:
    from_states, to_state, event_type, removes = _TRANSITIONS[action]
    for _ in range(3):  # the row may change between the read and the guarded write
        user = await get_user(pool, user_id)
        auth.require_write(principal, user.org_id)
        if user.state not in from_states:
            _refuse_transition(action, user.state)
        row = await pool.fetchrow(
            _CHANGE_STATE,
            user_id,
            list(from_states),
            event_type,
            principal.user_id,
            to_state,
            removes,
        )
        if row is not None:
            if action != "lock":
                # Deactivated or removed: tokens stop working; reactivated or unlocked: forget
                # the answers cached before.
                await auth.forget_user_tokens(pool, redis, keys, user_id)
            return events.details_from(row)
    raise UserNotFound()


async def record_failed_password(
    conn: Pool | Connection, *, user_id: str, max_attempts: int
) -> None:
    """Count a wrong password; the policy's limit locks the user (one ``user.locked`` event)."""
    row = await conn.fetchrow(_COUNT_FAILED_PASSWORD, user_id)
    if row is None or max_attempts <= 0:
        return
    if row["state"] == ACTIVE and row["failed_password_attempts"] >= max_attempts:
        await conn.fetchrow(
            _CHANGE_STATE, user_id, [ACTIVE], events.USER_LOCKED, "lockout", LOCKED, False
        )


async def reset_failed_passwords(conn: Pool | Connection, user_id: str) -> None:
    await conn.execute(_RESET_FAILED_PASSWORD, user_id)


async def replace_hash(
    conn: Pool | Connection, *, user_id: str, new_hash: str, old_hash: str
) -> None:
    """Re-hash to current parameters after a successful check (no event: same password)."""
    await conn.execute(_REHASH, user_id, new_hash, old_hash)
