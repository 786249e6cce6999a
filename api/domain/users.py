"""Users: create, read, and the state changes that are not password changes (lock, unlock,
deactivate, reactivate, remove)."""

from __future__ import annotations

import msgspec

from api.db import Connection, Pool
from api.domain import emails
from api.domain.auth import (
    Principal,
    forget_user_tokens,
    require_self_or_write_on,
    require_write,
    require_write_on,
)
from api.domain.context import Context
from api.domain.policies import check_new_password, get_policy
from api.errors import (
    HashInvalid,
    UserLocked,
    UserNotActive,
    UserNotFound,
    UserNotInactive,
    UserNotLocked,
)
from api.hashing import is_supported_hash
from api.ids import new_id
from api.repositories import events, users
from api.repositories.events import Details
from api.repositories.users import (
    ACTIVE,
    HUMAN,
    INACTIVE,
    LOCKED,
    MACHINE,
    Command,
    NewUserRow,
    User,
)

WIRE_STATES = {
    ACTIVE: "USER_STATE_ACTIVE",
    INACTIVE: "USER_STATE_INACTIVE",
    LOCKED: "USER_STATE_LOCKED",
}


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


async def create_human(*, ctx: Context, principal: Principal, new: NewHuman) -> tuple[str, Details]:
    """Create a human user with a password (checked against the organization's policy), an
    imported hash, or neither. The e-mail address is stored normalized (``emails``)."""
    require_write(principal, new.org_id)
    email = emails.normalize(new.email)
    password_hash: str | None = None
    if new.password is not None:
        policy = await get_policy(ctx=ctx, org_id=new.org_id)
        await check_new_password(ctx=ctx, policy=policy, password=new.password)
        password_hash = await ctx.hasher.hash(new.password)
    elif new.hashed_password is not None:
        if not is_supported_hash(new.hashed_password):
            raise HashInvalid()
        password_hash = new.hashed_password
    user_id = new.user_id or new_id()
    details = await users.insert(
        ctx.pool,
        NewUserRow(
            id=user_id,
            org_id=new.org_id,
            kind=HUMAN,
            username=new.username or email,
            given_name=new.given_name,
            family_name=new.family_name,
            display_name=new.display_name,
            email=email,
            email_verified=new.email_verified,
            password_hash=password_hash,
            password_change_required=new.change_required,
        ),
        creator=principal.user_id,
    )
    return user_id, details


async def create_machine_user(
    *,
    ctx: Context,
    org_id: str,
    role: str,
    username: str,
    user_id: str | None = None,
    db: Pool | Connection | None = None,
) -> str:
    """A machine user with a role (made by the CLI; it authenticates with a PAT)."""
    user_id = user_id or new_id()
    await users.insert(
        db or ctx.pool,
        NewUserRow(id=user_id, org_id=org_id, kind=MACHINE, role=role, username=username),
        creator="cli",
    )
    return user_id


async def get_user(*, ctx: Context, principal: Principal, user_id: str) -> User:
    user = await users.get(ctx.pool, user_id)
    require_self_or_write_on(principal, user)
    return user


# action -> (states it may leave, state it enters, event)
_TRANSITIONS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "lock": ((ACTIVE,), LOCKED, events.USER_LOCKED),
    "unlock": ((LOCKED,), ACTIVE, events.USER_UNLOCKED),
    "deactivate": ((ACTIVE, LOCKED), INACTIVE, events.USER_DEACTIVATED),
    "reactivate": ((INACTIVE,), ACTIVE, events.USER_REACTIVATED),
    "remove": ((ACTIVE, LOCKED, INACTIVE), INACTIVE, events.USER_REMOVED),
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


async def change_state(*, ctx: Context, principal: Principal, user_id: str, action: str) -> Details:
    """Lock, unlock, deactivate, reactivate or remove a user (``action``)."""
    from_states, to_state, event_type = _TRANSITIONS[action]
    for _ in range(3):  # the row may change between the read and the guarded write
        user = await users.get(ctx.pool, user_id)
        require_write_on(principal, user)
        if user.state not in from_states:
            _refuse_transition(action, user.state)
        command = Command(user_id=user_id, states=from_states, creator=principal.user_id)
        details = await users.change_state(
            ctx.pool, command, to_state=to_state, event_type=event_type
        )
        if details is not None:
            if action != "lock":
                # Deactivated or removed: tokens stop working; reactivated or unlocked: forget
                # the answers cached before.
                await forget_user_tokens(ctx=ctx, user_id=user_id)
            return details
    raise UserNotFound()
