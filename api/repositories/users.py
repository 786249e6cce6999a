"""The ``users`` and ``password_history`` tables: every SQL statement that reads or writes them.

A command on a user is one statement built by ``_command``: lock the user's row (guarded by
the states it may be in and, optionally, the password hash the caller checked), append one
event with sequence + 1, update the row, add its outbox rows, and return the new sequence,
the commit time, the owner and the outbox ids. A new kind of change is a few lines here: its
event type (``api.repositories.events``) and what it sets on the row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from api import tracing
from api.db import Connection, Pool
from api.errors import (
    OrganizationNotFound,
    UserIdTaken,
    UsernameDomainReserved,
    UsernameTaken,
    UserNotFound,
)
from api.repositories import events, outbox
from api.repositories.events import Details
from api.repositories.outbox import NewOutboxRow

ACTIVE, INACTIVE, LOCKED = "active", "inactive", "locked"
HUMAN, MACHINE = "human", "machine"


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
    # Moves with every password change (sessions and reset codes made before are void).
    credentials_version: int = 0
    # When the lockout's lock ends by itself (None: it does not).
    locked_until: datetime | None = None
    policy_overrides: dict[str, Any] | None = None

    @property
    def preferred_login_name(self) -> str:
        return f"{self.username}@{self.org_domain}"


class NewUserRow(msgspec.Struct, frozen=True, kw_only=True):
    """The columns of a new ``users`` row that the caller chooses (the rest are derived)."""

    id: str
    org_id: str
    kind: str
    role: str | None = None
    username: str
    given_name: str = ""
    family_name: str = ""
    display_name: str = ""
    email: str = ""
    email_verified: bool = False
    password_hash: str | None = None
    password_change_required: bool = False


class UserChange(msgspec.Struct, frozen=True):
    """A command's result: its details, and for a password change the user's new credentials
    version."""

    details: Details
    credentials_version: int = 0


# --- reads ------------------------------------------------------------------------------------

_COLUMNS = """
u.id, u.org_id, o.domain AS org_domain, u.kind, u.role, u.username, u.given_name,
u.family_name, u.display_name, u.email, u.email_verified, u.state, u.password_hash,
u.password_change_required, u.password_changed_at, u.failed_password_attempts, u.sequence,
u.created_at, u.updated_at, u.credentials_version, u.locked_until,
p.settings AS policy_overrides
"""
# The organization's policy overrides come with the user: a change needs both, in one read.
_FROM = """
users u JOIN organizations o ON o.id = u.org_id LEFT JOIN policies p ON p.org_id = u.org_id
"""
_GET_BY_ID = f"""
SELECT {_COLUMNS} FROM {_FROM}
WHERE u.id = $1 AND u.deleted_at IS NULL
"""
_GET_MANY_BY_ID = f"""
SELECT {_COLUMNS} FROM {_FROM}
WHERE u.id = ANY($1::text[]) AND u.deleted_at IS NULL
"""
# A login name resolves in one organization at most (case-insensitively). When the text after
# its last "@" is an organization's domain, it resolves in that organization only: the user
# whose username is the text before (the preferred login name "username@domain"), else the one
# whose username is the whole name (a username ending in its own organization's domain). A
# user of another organization never answers to it. Otherwise the name is a bare username
# (which may hold "@", e.g. "alice@example.com"): unique per organization, so ambiguous across
# organizations (two rows: not found; then it must be qualified). Domains are stored in lower
# case (``api.domain.orgs``), so the domain's unique index finds the organization.
_GET_BY_LOGIN_NAME = f"""
WITH login AS (
    SELECT lower($1::text) AS whole,
           substring(lower($1::text) from '^(.*)@[^@]+$') AS local_part,
           substring(lower($1::text) from '@([^@]+)$') AS domain_part
), org AS (
    SELECT o.id, login.whole, login.local_part
    FROM login JOIN organizations o ON o.domain = login.domain_part
), candidates AS (
    (SELECT u.id FROM users u JOIN org ON u.org_id = org.id
     WHERE u.deleted_at IS NULL AND lower(u.username) IN (org.local_part, org.whole)
     ORDER BY lower(u.username) = org.local_part DESC
     LIMIT 1)
    UNION ALL
    (SELECT u.id FROM users u, login
     WHERE u.deleted_at IS NULL AND lower(u.username) = login.whole
       AND NOT EXISTS (SELECT 1 FROM org)
     LIMIT 2)
)
SELECT {_COLUMNS} FROM {_FROM}
WHERE u.id IN (SELECT id FROM candidates)
"""
# The live one first; else the latest removed one (``identity bootstrap`` restores it).
_FIND_MACHINE_USER = """
SELECT id, state, deleted_at IS NOT NULL AS removed FROM users
WHERE org_id = $1 AND kind = 'machine' AND role = $2 AND username = $3
ORDER BY deleted_at IS NULL DESC, deleted_at DESC
LIMIT 1
"""
_RECENT_HASHES = """
SELECT password_hash FROM password_history WHERE user_id = $1 ORDER BY sequence DESC LIMIT $2
"""


def _user(row: Any) -> User:
    return User(**dict(row))


async def get(db: Pool | Connection, user_id: str) -> User:
    row = await db.fetchrow(_GET_BY_ID, user_id)
    if row is None:
        raise UserNotFound()
    return _user(row)


async def get_many(db: Pool | Connection, user_ids: Sequence[str]) -> dict[str, User]:
    """The users of ``user_ids`` that exist (not removed), by ID, in one query."""
    rows = await db.fetch(_GET_MANY_BY_ID, list(set(user_ids)))
    return {row["id"]: _user(row) for row in rows}


async def find_by_login_name(db: Pool | Connection, login_name: str) -> User:
    rows = await db.fetch(_GET_BY_LOGIN_NAME, login_name)
    if len(rows) != 1:
        raise UserNotFound()
    return _user(rows[0])


class MachineUser(msgspec.Struct, frozen=True):
    id: str
    state: str
    removed: bool


async def find_machine_user(
    db: Pool | Connection, *, org_id: str, role: str, username: str
) -> MachineUser | None:
    """The organization's machine user with that role and username, removed or not."""
    row = await db.fetchrow(_FIND_MACHINE_USER, org_id, role, username)
    return MachineUser(row["id"], row["state"], row["removed"]) if row else None


async def recent_password_hashes(db: Pool | Connection, user_id: str, limit: int) -> list[str]:
    """The user's last ``limit`` password hashes, newest first (the current one included)."""
    return [r["password_hash"] for r in await db.fetch(_RECENT_HASHES, user_id, limit)]


# --- creation ---------------------------------------------------------------------------------


# A username may not end in "@<domain of another organization>": as a login name it would be
# that organization's (see ``_GET_BY_LOGIN_NAME``). Its own organization's domain is allowed.
# Checked in the insert's statement against the organizations committed when it runs: one
# created afterwards with such a domain takes the login name over (``docs/DECISIONS.md``).
def _insert(event_type: str) -> str:
    return f"""
WITH org AS (
    SELECT id, clock_timestamp() AS ts FROM organizations WHERE id = $1::jsonb->>'org_id'
), reserved AS (
    SELECT o.id FROM organizations o, org
    WHERE o.domain = substring(lower($1::jsonb->>'username') from '@([^@]+)$')
      AND o.id <> org.id
), u AS (
    INSERT INTO users (id, org_id, kind, role, username, given_name, family_name, display_name,
                       email, email_verified, password_hash, password_change_required,
                       password_changed_at, sequence, created_at, updated_at)
    SELECT n.id, org.id, n.kind, n.role, n.username, n.given_name, n.family_name,
           n.display_name, n.email, n.email_verified, n.password_hash,
           n.password_change_required,
           CASE WHEN n.password_hash IS NULL THEN NULL ELSE org.ts END, 1, org.ts, org.ts
    FROM jsonb_populate_record(NULL::users, $1::jsonb) AS n, org
    WHERE NOT EXISTS (SELECT 1 FROM reserved)
    RETURNING id AS aggregate_id, sequence, org_id AS resource_owner, created_at,
              $2::jsonb AS payload, $3::text AS creator, password_hash
), {events.append("u", events.USER, event_type)}, history AS (
    INSERT INTO password_history (user_id, sequence, password_hash, created_at)
    SELECT aggregate_id, sequence, password_hash, created_at FROM u
    WHERE password_hash IS NOT NULL
)
SELECT sequence, created_at, resource_owner, false AS domain_reserved FROM ev
UNION ALL
SELECT NULL, NULL, NULL, true FROM reserved
"""


_INSERT = {HUMAN: _insert(events.USER_ADDED), MACHINE: _insert(events.MACHINE_USER_ADDED)}


async def insert(db: Pool | Connection, row: NewUserRow, *, creator: str) -> Details:
    """Add a user (``user.human.added`` or ``user.machine.added``, sequence 1)."""
    payload: dict[str, Any] = {"userName": row.username, "email": row.email}
    if row.role:
        payload["role"] = row.role
    try:
        record = await db.fetchrow(_INSERT[row.kind], row, payload, creator)
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "users_pkey":
            raise UserIdTaken() from None
        raise UsernameTaken() from None
    if record is None:
        raise OrganizationNotFound()
    if record["domain_reserved"]:
        raise UsernameDomainReserved()
    return events.details_from(record)


# --- commands ---------------------------------------------------------------------------------


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """Who changes which user, provided it is in one of ``states`` (and, when given, its
    password hash is still ``expected_hash``), with what event payload and side effects."""

    user_id: str
    states: Sequence[str]
    creator: str
    payload: dict[str, Any] = {}
    expected_hash: str | None = None
    # The credentials version the caller's check was made at (a reset code's): a password
    # change since then voids the command.
    expected_version: int | None = None
    side_effects: Sequence[NewOutboxRow] = ()


# Parameters of every command's statement: $1 user id, $2 states, $3 expected hash (NULL: any),
# $4 event payload, $5 creator, $6 and $7 the outbox rows' tasks and payloads, $8 expected
# credentials version (NULL: any); the command's own values follow from $9.
def _command(
    event_type: str,
    *,
    sets: str = "",
    also: str = "",
    removed_too: bool = False,
    where: str = "",
) -> str:
    side_effects = outbox.insert(tasks="$6::text[]", payloads="$7::text[]")
    live = ("" if removed_too else " AND deleted_at IS NULL") + where
    statement = f"""
WITH target AS (
    SELECT id, org_id, sequence FROM users
    WHERE id = $1{live} AND state = ANY($2::text[])
      AND ($3::text IS NULL OR password_hash = $3::text)
      AND ($8::bigint IS NULL OR credentials_version = $8::bigint)
    FOR UPDATE
), next AS (
    SELECT id AS aggregate_id, sequence + 1 AS sequence, org_id AS resource_owner,
           clock_timestamp() AS created_at, $4::jsonb AS payload, $5::text AS creator
    FROM target
), {events.append("next", events.USER, event_type)}, updated AS (
    UPDATE users u SET sequence = ev.sequence, updated_at = ev.created_at{sets}
    FROM ev WHERE u.id = ev.aggregate_id
    RETURNING u.id, u.credentials_version
), {side_effects}{also}
SELECT ev.sequence, ev.created_at, ev.resource_owner,
       (SELECT credentials_version FROM updated) AS credentials_version
FROM ev
"""
    _EVENT_TYPES[statement] = event_type
    return statement


# The event type of each command's statement: the name of its span when tracing is on.
_EVENT_TYPES: dict[str, str] = {}


# A password change also ends the user's sessions ($11: but the one that made the change,
# which moves to the new credentials version; a session on an older version is no longer
# accepted, so one inserted concurrently and missed here is dead all the same).
_ENDED_SESSIONS = events.append(
    "ended", events.SESSION, events.SESSION_TERMINATED, name="ended_events"
)
_CHANGE_PASSWORD = _command(
    events.PASSWORD_CHANGED,
    sets="""
        , password_hash = $9, password_change_required = $10,
        password_changed_at = ev.created_at, failed_password_attempts = 0,
        credentials_version = u.credentials_version + 1""",
    also=f"""
, history AS (
    INSERT INTO password_history (user_id, sequence, password_hash, created_at)
    SELECT aggregate_id, sequence, $9, created_at FROM ev
), kept AS (
    UPDATE sessions s SET credentials_version = updated.credentials_version
    FROM updated
    WHERE s.id = $11::text AND s.user_id = updated.id AND s.revoked_at IS NULL
), ended AS (
    UPDATE sessions s SET revoked_at = ev.created_at, sequence = s.sequence + 1
    FROM ev
    WHERE s.user_id = ev.aggregate_id AND s.revoked_at IS NULL
      AND s.id IS DISTINCT FROM $11::text
    RETURNING s.id AS aggregate_id, s.sequence, ev.resource_owner, ev.created_at,
              '{{"reason": "password changed"}}'::jsonb AS payload, 'system'::text AS creator
), {_ENDED_SESSIONS}""",
)
_ADD_PASSWORD_CODE = _command(events.PASSWORD_CODE_ADDED)


def _state_change(event_type: str) -> str:
    removed_at = "ev.created_at" if event_type == events.USER_REMOVED else "NULL"
    return _command(
        event_type,
        sets=f"""
        , state = $9::text, deleted_at = {removed_at}, locked_until = NULL,
        failed_password_attempts =
            CASE WHEN $9::text = 'active' THEN 0 ELSE u.failed_password_attempts END""",
    )


_STATE_CHANGES = {
    event_type: _state_change(event_type)
    for event_type in (
        events.USER_LOCKED,
        events.USER_UNLOCKED,
        events.USER_DEACTIVATED,
        events.USER_REACTIVATED,
        events.USER_REMOVED,
    )
}


# ``identity bootstrap``: the instance's owner, whatever was done to it, is active again.
_RESTORE = _command(
    events.USER_REACTIVATED,
    sets="""
        , state = 'active', deleted_at = NULL, failed_password_attempts = 0,
        locked_until = NULL""",
    removed_too=True,
)
# The lockout's lock ($9: its duration in seconds, 0 = until an administrator unlocks).
_LOCK_OUT = _command(
    events.USER_LOCKED,
    sets="""
        , state = 'locked',
        locked_until = CASE WHEN $9::int > 0
                            THEN ev.created_at + make_interval(secs => $9::int) END""",
)
# A timed lock whose time is up ends at the next attempt (Postgres's clock judges both ends).
_UNLOCK_EXPIRED = _command(
    events.USER_UNLOCKED,
    sets="""
        , state = 'active', locked_until = NULL, failed_password_attempts = 0""",
    where=" AND locked_until <= clock_timestamp()",
)


async def _run(
    db: Pool | Connection, statement: str, command: Command, *values: Any
) -> UserChange | None:
    """Run a command; ``None`` if the user is gone or no longer in ``command.states`` (or its
    hash is no longer ``expected_hash``): the caller re-reads the user to say which.

    When tracing is on, the statement (the change's write and, in autocommit, its commit)
    has its span; the outbox rows store its trace context."""
    event_type = _EVENT_TYPES.get(statement, "command")
    attributes = {"db.system.name": "postgresql", "identity.event_type": event_type}
    with tracing.span(f"command {event_type}", kind="client", attributes=attributes):
        record = await db.fetchrow(
            statement,
            command.user_id,
            list(command.states),
            command.expected_hash,
            command.payload,
            command.creator,
            *outbox.arguments(command.side_effects),
            command.expected_version,
            *values,
        )
    if record is None:
        return None
    return UserChange(events.details_from(record), record["credentials_version"])


async def change_password(
    db: Pool | Connection,
    command: Command,
    *,
    new_hash: str,
    change_required: bool,
    keep_session_id: str | None,
) -> UserChange | None:
    """``user.human.password.changed``: set the hash, record it in the history, move the
    credentials version and end every session of the user but ``keep_session_id``."""
    return await _run(db, _CHANGE_PASSWORD, command, new_hash, change_required, keep_session_id)


async def lock_out(db: Pool | Connection, command: Command, *, duration_s: int) -> Details | None:
    """``user.locked`` by the lockout, for ``duration_s`` (0: until an administrator unlocks)."""
    change = await _run(db, _LOCK_OUT, command, duration_s)
    return change.details if change else None


async def unlock_expired(db: Pool | Connection, command: Command) -> Details | None:
    """``user.unlocked`` if the user's timed lock is over (None: locked still, or not)."""
    change = await _run(db, _UNLOCK_EXPIRED, command)
    return change.details if change else None


async def restore(db: Pool | Connection, command: Command) -> Details | None:
    """Make a locked, inactive or removed user active again (``user.reactivated``)."""
    change = await _run(db, _RESTORE, command)
    return change.details if change else None


async def add_password_code(db: Pool | Connection, command: Command) -> UserChange | None:
    """``user.human.password.code.added`` (the code itself lives in Redis)."""
    return await _run(db, _ADD_PASSWORD_CODE, command)


async def change_state(
    db: Pool | Connection, command: Command, *, to_state: str, event_type: str
) -> Details | None:
    """Lock, unlock, deactivate, reactivate or remove (``event_type`` says which)."""
    change = await _run(db, _STATE_CHANGES[event_type], command, to_state)
    return change.details if change else None


# --- bookkeeping without an event (not a state change of the contract) -----------------------

_COUNT_FAILED_PASSWORD = """
UPDATE users SET failed_password_attempts = failed_password_attempts + 1
WHERE id = $1 AND deleted_at IS NULL
RETURNING failed_password_attempts, state
"""
_RESET_FAILED_PASSWORDS = """
UPDATE users SET failed_password_attempts = 0 WHERE id = $1 AND failed_password_attempts <> 0
"""
_REPLACE_HASH = "UPDATE users SET password_hash = $2 WHERE id = $1 AND password_hash = $3"


async def count_failed_password(db: Pool | Connection, user_id: str) -> tuple[int, str] | None:
    """Count one wrong password; the new count and the user's state (None: user gone)."""
    row = await db.fetchrow(_COUNT_FAILED_PASSWORD, user_id)
    return (row["failed_password_attempts"], row["state"]) if row else None


async def reset_failed_passwords(db: Pool | Connection, user_id: str) -> None:
    await db.execute(_RESET_FAILED_PASSWORDS, user_id)


async def replace_hash(
    db: Pool | Connection, *, user_id: str, new_hash: str, old_hash: str
) -> None:
    """Re-hash to current parameters after a successful check (no event: same password)."""
    await db.execute(_REPLACE_HASH, user_id, new_hash, old_hash)
