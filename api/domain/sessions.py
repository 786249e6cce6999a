"""Sessions: log in with a password check (counts toward lockout), read, terminate. (A
password change ends the user's other sessions itself: ``users.change_password``.)"""

from __future__ import annotations

import msgspec

from api.domain import credentials
from api.domain.auth import Principal, new_token, token_digest
from api.domain.context import Context
from api.errors import NoPermission, PasswordInvalid, SessionNotFound, UserNotFound
from api.ids import new_id
from api.repositories import ratelimit, sessions, tokens, users
from api.repositories.events import Details
from api.repositories.sessions import Session
from api.repositories.users import ACTIVE


class NewSession(msgspec.Struct, frozen=True):
    session_id: str
    token: str
    details: Details


async def create_session(
    *,
    ctx: Context,
    login_name: str | None,
    user_id: str | None,
    password: str,
    client_ip: str,
) -> NewSession:
    """Log in: check the password, then a new session and its token (shown once)."""
    ctx.hasher.admit()  # an overload is refused before any other work (503, Retry-After)
    try:
        if user_id is not None:
            user = await users.get(ctx.pool, user_id)
        else:
            user = await users.find_by_login_name(ctx.pool, login_name or "")
        credentials.require_human(user)
    except UserNotFound:
        await ratelimit.unknown_login_name(ctx.redis, ctx.keys, ctx.settings, client_ip=client_ip)
        raise
    verification = await ratelimit.before_verification(
        ctx.redis, ctx.keys, ctx.settings, user_id=user.id, client_ip=client_ip
    )
    user = await credentials.end_timed_lock(ctx=ctx, user=user)
    credentials.require_state(user, (ACTIVE,))
    encoded = credentials.password_hash_of(user)
    await credentials.verify_password(ctx=ctx, user=user, encoded=encoded, password=password)
    await verification.succeeded(ctx.redis)
    if user.failed_password_attempts:
        await users.reset_failed_passwords(ctx.pool, user.id)
    if ctx.hasher.needs_rehash(encoded):
        new_hash = await ctx.hasher.hash(password)
        await users.replace_hash(ctx.pool, user_id=user.id, new_hash=new_hash, old_hash=encoded)
        encoded = new_hash  # the same password, as the session below checks

    token = new_token(user.id)
    session_id = new_id()
    details = await sessions.insert(
        ctx.pool,
        session_id=session_id,
        user_id=user.id,
        token_digest=token_digest(ctx.settings.secret_key, token),
        password_hash=encoded,
    )
    if details is None:  # the password changed since it was checked
        raise PasswordInvalid()
    return NewSession(session_id, token, details)


async def get_session(*, ctx: Context, principal: Principal, session_id: str) -> Session:
    session = await sessions.get(ctx.pool, session_id)
    if session is None:
        raise SessionNotFound()
    if not (principal.user_id == session.user_id or principal.may_write(session.org_id)):
        raise NoPermission()
    return session


async def delete_session(*, ctx: Context, principal: Principal, session_id: str) -> Details:
    session = await get_session(ctx=ctx, principal=principal, session_id=session_id)
    ended = await sessions.terminate(
        ctx.pool, session_ids=[session.id], reason="deleted", creator=principal.user_id
    )
    await tokens.forget(ctx.redis, ctx.keys, [s.token_digest for s in ended])
    if not ended:
        raise SessionNotFound()
    return ended[0].details
