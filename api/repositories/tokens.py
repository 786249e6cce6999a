"""Bearer tokens: the ``personal_access_tokens`` table, the lookup of a token's owner (a
session's or a PAT's), and the Redis cache of that lookup.

Tokens are stored only as digests (``api.domain.auth`` makes them); a cached entry is the
encoded principal, or a short-lived negative mark for an unknown token. A session's lifetimes
(idle and absolute, in seconds, 0: off) are parameters of the statements that find or touch
it; a PAT's expiry is its ``expires_at`` (docs/DECISIONS.md, "Session and token lifetimes").
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import msgspec

from api.db import Connection, Pool
from api.kv import Keys, LuaScript, Redis, ScriptCall, eval_many

_INSERT_PAT = """
INSERT INTO personal_access_tokens (id, user_id, token_hash, expires_at) VALUES ($1, $2, $3, $4)
"""
# A session (``s``, its user ``u``) is live while it carries its user's credentials version (a
# password change moves it), is younger than the absolute lifetime ($2 seconds) and was last
# used within the idle timeout ($3 seconds); 0 disables a lifetime. A NULL ``last_used_at``
# (a session older than migration 0005) counts from the session's creation.
_SESSION_LIVE = """
s.revoked_at IS NULL
  AND s.credentials_version = u.credentials_version
  AND ($2::bigint <= 0 OR s.created_at > now() - $2::bigint * interval '1 second')
  AND ($3::bigint <= 0
       OR coalesce(s.last_used_at, s.created_at) > now() - $3::bigint * interval '1 second')
  AND u.deleted_at IS NULL AND u.state <> 'inactive'
"""
# The version comes with the owner, to tag its cache entry; ``expires_at`` (the end of a
# session's absolute lifetime, a PAT's expiry; NULL: none) and a session's ``last_used_at``
# come with it too, so that the cache entry refuses the token once it has expired.
_OWNER_BY_DIGEST = f"""
SELECT u.id AS user_id, u.org_id, u.role, s.id AS session_id, u.credentials_version,
       CASE WHEN $2::bigint > 0 THEN s.created_at + $2::bigint * interval '1 second' END
           AS expires_at,
       coalesce(s.last_used_at, s.created_at) AS last_used_at
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.token_hash = $1 AND {_SESSION_LIVE}
UNION ALL
SELECT u.id, u.org_id, u.role, NULL, u.credentials_version, p.expires_at, NULL
FROM personal_access_tokens p JOIN users u ON u.id = p.user_id
WHERE p.token_hash = $1 AND p.revoked_at IS NULL
  AND (p.expires_at IS NULL OR p.expires_at > now())
  AND u.deleted_at IS NULL AND u.state <> 'inactive'
LIMIT 1
"""
# A live session's use, written at most once per refresh interval (``api.domain.auth``); no
# row when the session is no longer live.
_TOUCH_SESSION = f"""
UPDATE sessions s SET last_used_at = now()
FROM users u
WHERE s.id = $1 AND u.id = s.user_id AND {_SESSION_LIVE}
RETURNING s.last_used_at
"""
_DIGESTS_OF_USER = """
SELECT token_hash FROM sessions WHERE user_id = $1
UNION ALL
SELECT token_hash FROM personal_access_tokens WHERE user_id = $1
"""


_LIST_PATS = """
SELECT p.id, p.user_id, u.org_id, u.role, p.created_at, p.expires_at, p.revoked_at
FROM personal_access_tokens p JOIN users u ON u.id = p.user_id
WHERE $1::text IS NULL OR u.org_id = $1
ORDER BY p.created_at, p.id
"""
# Revoking a revoked token keeps its first revocation time.
_REVOKE_PAT = """
UPDATE personal_access_tokens SET revoked_at = coalesce(revoked_at, clock_timestamp())
WHERE id = $1
RETURNING token_hash, revoked_at
"""


class PersonalAccessToken(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A PAT as ``identity token list`` shows it: never the token or its digest."""

    id: str
    user_id: str
    org_id: str
    role: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class RevokedToken(msgspec.Struct, frozen=True):
    token_digest: bytes
    revoked_at: datetime


async def insert_personal_access_token(
    db: Pool | Connection,
    *,
    token_id: str,
    user_id: str,
    digest: bytes,
    expires_at: datetime | None = None,
) -> None:
    await db.execute(_INSERT_PAT, token_id, user_id, digest, expires_at)


async def owner_by_digest(
    db: Pool | Connection, digest: bytes, *, max_age_s: int, idle_timeout_s: int
) -> Any:
    """``user_id, org_id, role, session_id`` (None for a PAT), the user's
    ``credentials_version``, ``expires_at`` and ``last_used_at`` (None for a PAT) of a live
    token, or None."""
    return await db.fetchrow(_OWNER_BY_DIGEST, digest, max_age_s, idle_timeout_s)


# After a key rotation: a token found under the previous key's digest is stored under the
# current key's from then on (in whichever table holds it).
_REKEY = """
WITH s AS (UPDATE sessions SET token_hash = $2 WHERE token_hash = $1 RETURNING 1),
     p AS (UPDATE personal_access_tokens SET token_hash = $2 WHERE token_hash = $1 RETURNING 1)
SELECT (SELECT count(*) FROM s) + (SELECT count(*) FROM p)
"""


async def rekey(db: Pool | Connection, *, old_digest: bytes, new_digest: bytes) -> bool:
    """Store a token under ``new_digest`` instead of ``old_digest``; False if not found."""
    return bool(await db.fetchval(_REKEY, old_digest, new_digest))


async def touch_session(
    db: Pool | Connection, session_id: str, *, max_age_s: int, idle_timeout_s: int
) -> datetime | None:
    """Record a use of a live session: its new ``last_used_at``, or None if it is not live."""
    value = await db.fetchval(_TOUCH_SESSION, session_id, max_age_s, idle_timeout_s)
    return cast(datetime | None, value)


async def list_personal_access_tokens(
    db: Pool | Connection, *, org_id: str | None = None
) -> list[PersonalAccessToken]:
    return [PersonalAccessToken(**dict(r)) for r in await db.fetch(_LIST_PATS, org_id)]


async def revoke_personal_access_token(db: Pool | Connection, token_id: str) -> RevokedToken | None:
    row = await db.fetchrow(_REVOKE_PAT, token_id)
    return RevokedToken(row["token_hash"], row["revoked_at"]) if row else None


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


async def cache(redis: Redis, keys: Keys, digest: bytes, value: bytes, *, ttl_s: float) -> None:
    await redis.set(keys.token(digest.hex()), value, px=max(1, int(ttl_s * 1000)))


# Replace an entry only if it is still the one read (not deleted, not refused, not replaced
# meanwhile), keeping its expiry: a touch never revives a forgotten token nor extends an entry.
_REPLACE = LuaScript("""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
return 1
""")


async def recache(redis: Redis, keys: Keys, digest: bytes, *, old: bytes, new: bytes) -> bool:
    return bool(await _REPLACE(redis, [keys.token(digest.hex())], [old, new]))


async def cache_unknown(redis: Redis, keys: Keys, digest: bytes) -> None:
    await redis.set(keys.token(digest.hex()), NEGATIVE, ex=_NEGATIVE_TTL_S)


async def cached_with_version(
    redis: Redis, keys: Keys, digest: bytes, user_id: str
) -> tuple[bytes | None, int | None]:
    """``cached`` and ``credentials_version`` in one round trip (a pipeline: the two keys
    live in different cluster slots)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.token(digest.hex()))
        pipe.get(keys.credentials(user_id))
        entry, version = await pipe.execute()
    return cast(bytes | None, entry), int(version) if version is not None else None


async def credentials_version(redis: Redis, keys: Keys, user_id: str) -> int | None:
    value = await redis.get(keys.credentials(user_id))
    return int(value) if value is not None else None


# Only ever forward: a late writer of an older version must not make entries of a version
# a newer change revoked servable again.
_RAISE_VERSION = LuaScript(
    """
local current = tonumber(redis.call('GET', KEYS[1]))
if (not current) or current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 0
"""
)


async def raise_credentials_version(
    redis: Redis, keys: Keys, user_id: str, version: int, *, along: Sequence[ScriptCall] = ()
) -> None:
    """The user's version from now on (unless Redis already has a newer one): entries tagged
    with an older one are no longer served. ``along``: other script calls made in the same
    round trip (an error in any of them raises, as the version's own would)."""
    key = keys.credentials(user_id)
    if along:
        await eval_many(redis, [(_RAISE_VERSION, [key], (version,)), *along])
    else:
        await _RAISE_VERSION(redis, [key], (version,))


async def remember_credentials_version(
    redis: Redis, keys: Keys, user_id: str, version: int
) -> None:
    """Record the version read from Postgres where Redis has none (never over a newer one a
    change wrote meanwhile)."""
    await redis.set(keys.credentials(user_id), version, nx=True)


async def forget(redis: Redis, keys: Keys, digests: Sequence[bytes]) -> None:
    if digests:
        await redis.delete(*(keys.token(d.hex()) for d in digests))
