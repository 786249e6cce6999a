"""Checks every password verification shares (a login, a change with the current password):
human users only, the states a user may be in, and a wrong password counted toward lockout
and the caller's address limit."""

from __future__ import annotations

from collections.abc import Collection

from api.domain.context import Context
from api.domain.policies import effective_policy
from api.errors import PasswordInvalid, PasswordNotSet, UserLocked, UserNotActive, UserNotFound
from api.repositories import users
from api.repositories.users import ACTIVE, HUMAN, LOCKED, Command, User


def require_human(user: User) -> User:
    """Machine users have no password: password calls and logins do not find them."""
    if user.kind != HUMAN:
        raise UserNotFound()
    return user


def require_state(user: User, allowed: Collection[str]) -> None:
    """``allowed`` holds the user's state, or the call is refused: locked, or not active."""
    if user.state in allowed:
        return
    if user.state == LOCKED:
        raise UserLocked()
    raise UserNotActive()


async def end_timed_lock(*, ctx: Context, user: User) -> User:
    """The user, unlocked if it was locked out for a time that is over (``user.unlocked``)."""
    if user.state != LOCKED or user.locked_until is None:
        return user
    unlock = Command(user_id=user.id, states=[LOCKED], creator="lockout")
    if await users.unlock_expired(ctx.pool, unlock) is None:
        return user  # not over yet (or changed meanwhile: the caller's checks say how)
    return await users.get(ctx.pool, user.id)


def password_hash_of(user: User) -> str:
    if user.password_hash is None:
        raise PasswordNotSet()
    return user.password_hash


async def verify_password(*, ctx: Context, user: User, encoded: str, password: str) -> None:
    """``password`` matches ``encoded`` (the user's hash), or it counts as a wrong try and the
    call is refused (``COMMAND-3M0fs``). The policy's limit of wrong tries locks the user.
    (The caller's address was charged a failure before: ``ratelimit.before_verification``.)"""
    if await ctx.hasher.verify(encoded, password):
        return
    policy = effective_policy(ctx.settings, user.policy_overrides)
    counted = await users.count_failed_password(ctx.pool, user.id)
    if counted is not None and policy.max_password_attempts > 0:
        attempts, state = counted
        if state == ACTIVE and attempts >= policy.max_password_attempts:
            lock = Command(user_id=user.id, states=[ACTIVE], creator="lockout")
            await users.lock_out(ctx.pool, lock, duration_s=policy.lockout_duration_seconds)
    raise PasswordInvalid()
