"""Bearer tokens, the principal behind them, and who may act on which user.

Tokens are random, shown once, stored only as HMAC-SHA256 digests keyed by the server
secret. The principal for a digest is cached in Redis, tagged with its user's credentials
version: an entry is served only while that version is still the user's (a password change
moves it before it commits), so a revoked session is refused from the moment the change
answers, whatever Redis did with the entry (docs/DECISIONS.md, "Revocation"). Deactivating
or removing a user deletes the entries of its tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import msgspec

from api.db import Connection, Pool
from api.domain.context import Context
from api.errors import AuthHeaderMissing, NoPermission, TokenInvalid
from api.ids import new_id
from api.repositories import tokens

ROLES = ("IAM_OWNER", "ORG_OWNER", "ORG_USER_MANAGER")


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    org_id: str
    role: str | None = None
    session_id: str | None = None

    def may_write(self, org_id: str) -> bool:
        """``user.write`` on the organization (``user.read`` comes with it)."""
        if self.role == "IAM_OWNER":
            return True
        return self.role in ("ORG_OWNER", "ORG_USER_MANAGER") and self.org_id == org_id

    def is_self(self, user_id: str) -> bool:
        return self.session_id is not None and self.user_id == user_id


def require_write(principal: Principal, org_id: str) -> None:
    if not principal.may_write(org_id):
        raise NoPermission()


def require_self_or_write(principal: Principal, user_id: str, org_id: str) -> None:
    if not (principal.is_self(user_id) or principal.may_write(org_id)):
        raise NoPermission()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_digest(secret_key: str, token: str) -> bytes:
    return hmac.new(secret_key.encode(), b"token:" + token.encode(), hashlib.sha256).digest()


class _CacheEntry(msgspec.Struct, frozen=True, array_like=True):
    principal: Principal
    credentials_version: int


_entry_decoder = msgspec.json.Decoder(_CacheEntry)
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


async def resolve_principal(*, ctx: Context, token: str) -> Principal:
    """The principal of a bearer token (Redis cache first, then Postgres), or 401."""
    digest = token_digest(ctx.settings.secret_key, token)
    cached = await tokens.cached(ctx.redis, ctx.keys, digest)
    if cached == tokens.NEGATIVE:
        raise TokenInvalid()
    if cached is not None:
        entry = _entry_decoder.decode(cached)
        current = await tokens.credentials_version(ctx.redis, ctx.keys, entry.principal.user_id)
        if current == entry.credentials_version:
            return entry.principal
    row = await tokens.owner_by_digest(ctx.pool, digest)
    if row is None:
        await tokens.cache_unknown(ctx.redis, ctx.keys, digest)
        raise TokenInvalid()
    principal = Principal(
        user_id=row["user_id"], org_id=row["org_id"], role=row["role"], session_id=row["session_id"]
    )
    version = row["credentials_version"]
    await tokens.remember_credentials_version(ctx.redis, ctx.keys, principal.user_id, version)
    await tokens.cache(
        ctx.redis,
        ctx.keys,
        digest,
        msgspec.json.encode(_CacheEntry(principal, version)),
        ttl_s=ctx.settings.token_cache_ttl_s,
    )
    return principal


async def forget_user_tokens(*, ctx: Context, user_id: str) -> None:
    """Drop every cached principal of the user (after deactivation or removal)."""
    digests = await tokens.digests_of_user(ctx.pool, user_id)
    await tokens.forget(ctx.redis, ctx.keys, digests)


async def create_personal_access_token(
    *, ctx: Context, user_id: str, db: Pool | Connection | None = None
) -> str:
    """A new PAT for a machine user; the token is returned once and stored as a digest."""
    token = new_token()
    await tokens.insert_personal_access_token(
        db or ctx.pool,
        token_id=new_id(),
        user_id=user_id,
        digest=token_digest(ctx.settings.secret_key, token),
    )
    return token
