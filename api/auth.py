"""Bearer tokens, the principal behind them, and who may act on which user.

Tokens are random, shown once, stored only as HMAC-SHA256 digests keyed by the server
secret. The principal for a digest is cached in Redis; revoking a session or removing a
user deletes the cache entries, so the next call is a 401.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import msgspec

from api.db import Connection, Pool
from api.errors import NoPermission, TokenInvalid
from api.kv import Keys, Redis

ROLES = ("IAM_OWNER", "ORG_OWNER", "ORG_USER_MANAGER")
_NEGATIVE = b"-"
_NEGATIVE_TTL_S = 30


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


_PRINCIPAL_BY_DIGEST = """
SELECT u.id AS user_id, u.org_id, u.role, s.id AS session_id
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.token_hash = $1 AND s.revoked_at IS NULL
  AND u.deleted_at IS NULL AND u.state <> 'inactive'
UNION ALL
SELECT u.id, u.org_id, u.role, NULL
FROM personal_access_tokens p JOIN users u ON u.id = p.user_id
WHERE p.token_hash = $1 AND p.revoked_at IS NULL
  AND (p.expires_at IS NULL OR p.expires_at > now())
  AND u.deleted_at IS NULL AND u.state <> 'inactive'
LIMIT 1
"""

_DIGESTS_OF_USER = """
SELECT token_hash FROM sessions WHERE user_id = $1
UNION ALL
SELECT token_hash FROM personal_access_tokens WHERE user_id = $1
"""

_principal_decoder = msgspec.json.Decoder(Principal)


async def resolve_principal(
    *, pool: Pool, redis: Redis, keys: Keys, secret_key: str, token: str, cache_ttl_s: int
) -> Principal:
    digest = token_digest(secret_key, token)
    cache_key = keys.token(digest.hex())
    cached = await redis.get(cache_key)
    if cached == _NEGATIVE:
        raise TokenInvalid()
    if cached is not None:
        return _principal_decoder.decode(cached)
    row = await pool.fetchrow(_PRINCIPAL_BY_DIGEST, digest)
    if row is None:
        await redis.set(cache_key, _NEGATIVE, ex=_NEGATIVE_TTL_S)
        raise TokenInvalid()
    principal = Principal(
        user_id=row["user_id"], org_id=row["org_id"], role=row["role"], session_id=row["session_id"]
    )
    await redis.set(cache_key, msgspec.json.encode(principal), ex=cache_ttl_s)
    return principal


async def forget_digests(redis: Redis, keys: Keys, digests: list[bytes]) -> None:
    if digests:
        await redis.delete(*(keys.token(d.hex()) for d in digests))


async def forget_user_tokens(
    conn: Pool | Connection, redis: Redis, keys: Keys, user_id: str
) -> None:
    """Drop every cached principal of the user (after deactivation or removal)."""
    rows = await conn.fetch(_DIGESTS_OF_USER, user_id)
    await forget_digests(redis, keys, [r["token_hash"] for r in rows])


_INSERT_PAT = """
INSERT INTO personal_access_tokens (id, user_id, token_hash) VALUES ($1, $2, $3)
"""


async def create_personal_access_token(conn: Connection, *, secret_key: str, user_id: str) -> str:
    """A new PAT for a machine user; the token is returned once and stored as a digest."""
    from api.ids import new_id

    token = new_token()
    await conn.execute(_INSERT_PAT, new_id(), user_id, token_digest(secret_key, token))
    return token
