"""Bearer tokens, the principal behind them, and who may act on which user.

Tokens are random (and name their user: ``new_token``), shown once, stored only as
HMAC-SHA256 digests keyed by the server secret. The principal for a digest is cached in
Redis, tagged with its user's credentials version: an entry is served only while that
version is still the user's (a password change moves it before it commits), so a revoked
session is refused from the moment the change answers, whatever Redis did with the entry
(docs/DECISIONS.md, "Revocation"). Deactivating or removing a user deletes the entries of
its tokens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from datetime import datetime
from typing import Any

import msgspec

from api.db import Connection, Pool
from api.domain.context import Context
from api.errors import AuthHeaderMissing, NoPermission, TokenInvalid
from api.ids import new_id
from api.repositories import tokens
from api.repositories.users import User

ROLES = ("IAM_OWNER", "ORG_OWNER", "ORG_USER_MANAGER")
# A caller acts on a user only if its role outranks the user's: an organization's managers
# cannot lock out its owners, nor anyone the instance's owner.
_RANK = {"IAM_OWNER": 3, "ORG_OWNER": 2, "ORG_USER_MANAGER": 1}


def role_rank(role: str | None) -> int:
    return _RANK.get(role or "", 0)


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    org_id: str
    role: str | None = None
    session_id: str | None = None

    def may_write(self, org_id: str, target: User | None = None) -> bool:
        """``user.write`` on the organization (``user.read`` comes with it); on ``target``,
        only if the caller's role outranks the target's (or the target is the caller)."""
        if (
            target is not None
            and target.id != self.user_id
            and role_rank(self.role) <= role_rank(target.role)
        ):
            return False
        if self.role == "IAM_OWNER":
            return True
        return self.role in ("ORG_OWNER", "ORG_USER_MANAGER") and self.org_id == org_id

    def is_self(self, user_id: str) -> bool:
        return self.session_id is not None and self.user_id == user_id


def require_write(principal: Principal, org_id: str) -> None:
    """``user.write`` on the organization (to create a user in it)."""
    if not principal.may_write(org_id):
        raise NoPermission()


def require_write_on(principal: Principal, target: User) -> None:
    """``user.write`` on the target's organization, and a role that outranks the target's."""
    if not principal.may_write(target.org_id, target):
        raise NoPermission()


def require_self_or_write_on(principal: Principal, target: User) -> None:
    """The target's own session, or ``require_write_on``."""
    if not (principal.is_self(target.id) or principal.may_write(target.org_id, target)):
        raise NoPermission()


def new_token(user_id: str) -> str:
    """A random bearer token that names its user after a dot (unpadded base64url of the ID,
    when the whole stays within ``_MAX_TOKEN_LENGTH``), so that a cache hit reads the
    token's entry and that user's credentials version in one round trip. The name is not
    trusted: it only says which version to read along, and the entry must be that user's.
    Clients treat tokens as opaque, as ZITADEL's are."""
    secret = secrets.token_urlsafe(32)  # [A-Za-z0-9_-]: no dot
    token = f"{secret}.{base64.urlsafe_b64encode(user_id.encode()).rstrip(b'=').decode()}"
    return token if len(token) <= _MAX_TOKEN_LENGTH else secret


def _named_user(token: str) -> str | None:
    """The user a token names (``new_token``), or None (a token made before tokens named
    their users, or one that is not ours)."""
    _, dot, name = token.rpartition(".")
    if not dot or not name:
        return None
    try:
        return base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
    except ValueError:  # binascii.Error, UnicodeDecodeError
        return None


def token_digest(secret_key: str, token: str) -> bytes:
    return hmac.new(secret_key.encode(), b"token:" + token.encode(), hashlib.sha256).digest()


class _CacheEntry(msgspec.Struct, frozen=True, array_like=True):
    principal: Principal
    credentials_version: int
    # Unix times: when the token stops working whatever its use (a session's absolute
    # lifetime, a PAT's expiry, as Postgres has them; None: never), and a session's last
    # recorded use (None: a PAT; as read from Postgres, or this clock's time of the touch
    # that wrote it, so that a clock a little ahead of Postgres's cannot make every hit
    # touch). A hit re-checks both, so an expired token is never served from the cache
    # (docs/DECISIONS.md, "Session and token lifetimes (issue 10)").
    expires_at: float | None = None
    last_used_at: float | None = None


_entry_decoder = msgspec.json.Decoder(_CacheEntry)
# A session's use is written to Postgres at most this often (and at most a tenth of the idle
# timeout), not on every request.
_TOUCH_INTERVAL_S = 60.0
_MAX_TOKEN_LENGTH = 512


async def authenticate(*, ctx: Context, authorization: str | None) -> Principal:
    """The principal of an ``authorization`` header or metadata value (``Bearer <token>``):
    401 when it is missing, not a bearer token, or not a live token."""
    if not authorization:
        raise AuthHeaderMissing()
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > _MAX_TOKEN_LENGTH:
        raise TokenInvalid()
    return await resolve_principal(ctx=ctx, token=token)


def _touch_interval_s(ctx: Context) -> float:
    idle = ctx.settings.session_idle_timeout_s
    return min(_TOUCH_INTERVAL_S, idle / 10) if idle > 0 else _TOUCH_INTERVAL_S


def _expired(ctx: Context, entry: _CacheEntry, now: float) -> bool:
    if entry.expires_at is not None and now >= entry.expires_at:
        return True
    idle = ctx.settings.session_idle_timeout_s
    return entry.last_used_at is not None and idle > 0 and now - entry.last_used_at > idle


def _unix(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


async def _touch(ctx: Context, entry: _CacheEntry, now: float) -> _CacheEntry | None:
    """Record the session's use in Postgres (only if it is still live there): the entry with
    its new ``last_used_at`` (``now``), or None when the session is no longer live."""
    session_id = entry.principal.session_id
    if session_id is None:  # a PAT: no use to record
        return entry
    used = await tokens.touch_session(
        ctx.pool,
        session_id,
        max_age_s=ctx.settings.session_max_age_s,
        idle_timeout_s=ctx.settings.session_idle_timeout_s,
    )
    return None if used is None else msgspec.structs.replace(entry, last_used_at=now)


def _touch_due(ctx: Context, entry: _CacheEntry, now: float) -> bool:
    return entry.last_used_at is not None and now - entry.last_used_at >= _touch_interval_s(ctx)


async def resolve_principal(*, ctx: Context, token: str) -> Principal:
    """The principal of a bearer token (Redis cache first, then Postgres), or 401.

    A session past its absolute lifetime or unused for longer than the idle timeout, and a
    PAT past its expiry, are unknown tokens, from the cache as from Postgres. A session's use
    is recorded in Postgres at most once per touch interval; the hit that does it re-caches
    the entry with the new time (keeping its expiry)."""
    digest = token_digest(ctx.settings.secret_key, token)
    named = _named_user(token)
    named_version: int | None = None
    if named is None:
        cached = await tokens.cached(ctx.redis, ctx.keys, digest)
    else:
        cached, named_version = await tokens.cached_with_version(ctx.redis, ctx.keys, digest, named)
    if cached == tokens.NEGATIVE:
        raise TokenInvalid()
    if cached is not None:
        entry = _entry_decoder.decode(cached)
        if entry.principal.user_id == named:
            current = named_version
        else:
            current = await tokens.credentials_version(ctx.redis, ctx.keys, entry.principal.user_id)
        if current == entry.credentials_version:
            now = time.time()
            if _expired(ctx, entry, now):
                raise TokenInvalid()
            if not _touch_due(ctx, entry, now):
                return entry.principal
            touched = await _touch(ctx, entry, now)
            if touched is None:
                await tokens.forget(ctx.redis, ctx.keys, [digest])
                raise TokenInvalid()
            await tokens.recache(
                ctx.redis, ctx.keys, digest, old=cached, new=msgspec.json.encode(touched)
            )
            return touched.principal
    row = await tokens.owner_by_digest(
        ctx.pool,
        digest,
        max_age_s=ctx.settings.session_max_age_s,
        idle_timeout_s=ctx.settings.session_idle_timeout_s,
    )
    if row is None and len(ctx.settings.secret_keys) > 1:
        row = await _under_previous_key(ctx=ctx, token=token, digest=digest)
    if row is None:
        await tokens.cache_unknown(ctx.redis, ctx.keys, digest)
        raise TokenInvalid()
    principal = Principal(
        user_id=row["user_id"], org_id=row["org_id"], role=row["role"], session_id=row["session_id"]
    )
    version = row["credentials_version"]
    entry = _CacheEntry(principal, version, _unix(row["expires_at"]), _unix(row["last_used_at"]))
    now = time.time()
    if _touch_due(ctx, entry, now):
        touched = await _touch(ctx, entry, now)
        if touched is None:
            raise TokenInvalid()
        entry = touched
    ttl_s: float = ctx.settings.token_cache_ttl_s
    if entry.expires_at is not None:
        # The entry never outlives the token (and this clock may be a little behind or ahead
        # of Postgres's).
        ttl_s = min(ttl_s, entry.expires_at - now)
        if ttl_s <= 0:
            raise TokenInvalid()
    await tokens.remember_credentials_version(ctx.redis, ctx.keys, principal.user_id, version)
    await tokens.cache(ctx.redis, ctx.keys, digest, msgspec.json.encode(entry), ttl_s=ttl_s)
    return principal


async def _under_previous_key(*, ctx: Context, token: str, digest: bytes) -> Any:
    """After a key rotation: the owner of a token made under the previous key, which is then
    re-keyed (stored under ``digest``, the current key's), or None."""
    old_digest = token_digest(ctx.settings.secret_keys[1], token)
    if not await tokens.rekey(ctx.pool, old_digest=old_digest, new_digest=digest):
        return None
    await tokens.forget(ctx.redis, ctx.keys, [old_digest])
    return await tokens.owner_by_digest(
        ctx.pool,
        digest,
        max_age_s=ctx.settings.session_max_age_s,
        idle_timeout_s=ctx.settings.session_idle_timeout_s,
    )


async def forget_user_tokens(*, ctx: Context, user_id: str) -> None:
    """Drop every cached principal of the user (after deactivation or removal)."""
    digests = await tokens.digests_of_user(ctx.pool, user_id)
    await tokens.forget(ctx.redis, ctx.keys, digests)


async def create_personal_access_token(
    *,
    ctx: Context,
    user_id: str,
    expires_at: datetime | None = None,
    db: Pool | Connection | None = None,
) -> str:
    """A new PAT for a machine user, refused from ``expires_at`` on (None: until revoked);
    the token is returned once and stored as a digest."""
    token = new_token(user_id)
    await tokens.insert_personal_access_token(
        db or ctx.pool,
        token_id=new_id(),
        user_id=user_id,
        digest=token_digest(ctx.settings.secret_key, token),
        expires_at=expires_at,
    )
    return token
