"""Bearer tokens: the ``personal_access_tokens`` table, the lookup of a token's owner (a
session's or a PAT's), and the Redis cache of that lookup.

Tokens are stored only as digests (``api.domain.auth`` makes them); a cached entry is the
encoded principal, or a short-lived negative mark for an unknown token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from api.db import Connection, Pool
from api.kv import Keys, Redis

_INSERT_PAT = """
INSERT INTO personal_access_tokens (id, user_id, token_hash) VALUES ($1, $2, $3)
"""
# A session is live while it carries its user's credentials version (a password change moves
# it); the version comes with the owner, to tag its cache entry.
_OWNER_BY_DIGEST = """
SELECT u.id AS user_id, u.org_id, u.role, s.id AS session_id, u.credentials_version
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.token_hash = $1 AND s.revoked_at IS NULL
  AND s.credentials_version = u.credentials_version
  AND u.deleted_at IS NULL AND u.state <> 'inactive'
UNION ALL
SELECT u.id, u.org_id, u.role, NULL, u.credentials_version
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


async def insert_personal_access_token(
    db: Pool | Connection, *, token_id: str, user_id: str, digest: bytes
) -> None:
    await db.execute(_INSERT_PAT, token_id, user_id, digest)


async def owner_by_digest(db: Pool | Connection, digest: bytes) -> Any:
    """``user_id, org_id, role, session_id`` (None for a PAT) and the user's
    ``credentials_version`` of a live token, or None."""
    return await db.fetchrow(_OWNER_BY_DIGEST, digest)


async def digests_of_user(db: Pool | Connection, user_id: str) -> list[bytes]:
    return [r["token_hash"] for r in await db.fetch(_DIGESTS_OF_USER, user_id)]


# --- the cache ----------------------------------------------------------------------------
#
# An entry holds the principal and the credentials version of its user when it was read; it
# is served only while Redis's ``cred:{user}`` says that version is still the user's. A
# password change writes the new version there before it commits (see
# ``api.domain.passwords``), so no entry read before the change can be served after it.

NEGATIVE = b"-"
_NEGATIVE_TTL_S = 30


async def cached(redis: Redis, keys: Keys, digest: bytes) -> bytes | None:
    value = await redis.get(keys.token(digest.hex()))
    return cast(bytes | None, value)  # the client is made with decode_responses=False


async def cache(redis: Redis, keys: Keys, digest: bytes, value: bytes, *, ttl_s: int) -> None:
    await redis.set(keys.token(digest.hex()), value, ex=ttl_s)


async def cache_unknown(redis: Redis, keys: Keys, digest: bytes) -> None:
    await redis.set(keys.token(digest.hex()), NEGATIVE, ex=_NEGATIVE_TTL_S)


async def credentials_version(redis: Redis, keys: Keys, user_id: str) -> int | None:
    value = await redis.get(keys.credentials(user_id))
    return int(value) if value is not None else None


async def set_credentials_version(redis: Redis, keys: Keys, user_id: str, version: int) -> None:
    """The user's current version: entries tagged with another are no longer served."""
    await redis.set(keys.credentials(user_id), version)


async def remember_credentials_version(
    redis: Redis, keys: Keys, user_id: str, version: int
) -> None:
    """Record the version read from Postgres where Redis has none (never over a newer one a
    change wrote meanwhile)."""
    await redis.set(keys.credentials(user_id), version, nx=True)


async def forget(redis: Redis, keys: Keys, digests: Sequence[bytes]) -> None:
    if digests:
        await redis.delete(*(keys.token(d.hex()) for d in digests))
