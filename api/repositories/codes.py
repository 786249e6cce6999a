"""Password reset codes, kept in Redis only as an HMAC.

A code is 6 characters from ``A-Z0-9`` drawn with ``secrets`` (no modulo bias), valid for
the policy's expiry, compared case-insensitively. One Lua script checks it, counts wrong
tries (the policy's limit burns it), tells expired from missing and *claims* it, so that of
many concurrent requests with one valid code exactly one goes on. The claimer then either
consumes the code (after the password change commits) or releases it (weak new password,
failed write), so the user can retry. A claim left behind by a crashed process lapses
(``IDENTITY_CODE_CLAIM_TTL_MS``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from collections.abc import Sequence
from enum import Enum

from api.errors import CodeExpired, CodeInvalid, CodeNotFound
from api.kv import Keys, LuaScript, Redis, ScriptCall

CODE_ALPHABET = string.ascii_uppercase + string.digits
CODE_LENGTH = 6
# Remember an expired code this long, so a late try says "expired", not "not found".
_EXPIRED_MEMORY_MS = 24 * 3600 * 1000


class CodeCheck(Enum):
    OK = "ok"
    MISSING = "missing"
    EXPIRED = "expired"
    INVALID = "invalid"


_ISSUE = LuaScript(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'mac', ARGV[1], 'exp', now + ttl, 'tries', 0, 'version', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ttl + tonumber(ARGV[3]))
return now
"""
)

# ARGV: candidate mac, max tries, claim id, claim ttl ms, the user's credentials version now,
# the candidate's mac under the previous secret key ('' if none: a code issued before a key
# rotation still works)
# (a code issued at another version, i.e. before a password change since, is void). Only
# Redis's clock judges expiry and claims; Postgres's state judges staleness.
_CHECK_AND_CLAIM = LuaScript(
    """
local h = redis.call('HMGET', KEYS[1], 'mac', 'exp', 'tries', 'claim', 'claim_until', 'version')
if not h[1] then return 'missing' end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if h[6] ~= ARGV[5] then
  redis.call('DEL', KEYS[1])
  return 'missing'
end
if h[4] and tonumber(h[5]) > now then return 'missing' end
if tonumber(h[2]) <= now then return 'expired' end
if h[1] == ARGV[1] or (ARGV[6] ~= '' and h[1] == ARGV[6]) then
  redis.call('HSET', KEYS[1], 'claim', ARGV[3], 'claim_until', now + tonumber(ARGV[4]))
  return 'ok'
end
local tries = redis.call('HINCRBY', KEYS[1], 'tries', 1)
if tries >= tonumber(ARGV[2]) then redis.call('DEL', KEYS[1]) end
return 'invalid'
"""
)

_RELEASE = LuaScript(
    """
if redis.call('HGET', KEYS[1], 'claim') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'claim', 'claim_until')
  return 1
end
return 0
"""
)


def generate_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def code_mac(secret_key: str, user_id: str, code: str) -> str:
    message = f"reset-code:{user_id}:{code.strip().upper()}".encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()


async def store_code(
    redis: Redis,
    keys: Keys,
    *,
    secret_key: str,
    user_id: str,
    code: str,
    expiry_s: int,
    credentials_version: int,
) -> None:
    """Store a new code for the user, replacing any earlier one, bound to the user's
    credentials version (a password change moves it: the code is void after)."""
    mac = code_mac(secret_key, user_id, code)
    await _ISSUE(
        redis,
        [keys.reset_code(user_id)],
        (mac, expiry_s * 1000, _EXPIRED_MEMORY_MS, str(credentials_version)),
    )


def claim_call(
    keys: Keys,
    *,
    secret_keys: Sequence[str],
    user_id: str,
    code: str,
    max_tries: int,
    credentials_version: int,
    claim_ttl_ms: int,
) -> tuple[ScriptCall, str]:
    """The check and claim of the user's code (valid only at ``credentials_version``, the
    user's as just read) as a script call for ``eval_many``, and its claim id; the script's
    answer goes to ``claimed``. The claim lapses: the write that follows must still find the
    user at that version (``Command``'s ``expected_version``), so a claimer stalled past the
    lapse cannot use a code that a second claimer used meanwhile."""
    claim_id = secrets.token_hex(16)
    args = (
        code_mac(secret_keys[0], user_id, code),
        max(1, max_tries),
        claim_id,
        max(1, claim_ttl_ms),
        str(credentials_version),
        code_mac(secret_keys[1], user_id, code) if len(secret_keys) > 1 else "",
    )
    return (_CHECK_AND_CLAIM, [keys.reset_code(user_id)], args), claim_id


def check_of(answer: object) -> CodeCheck:
    return CodeCheck(answer.decode() if isinstance(answer, bytes) else str(answer))


def claimed(answer: object, claim_id: str) -> str:
    """The claim id if the script's answer says the code was claimed, else the contract's
    error."""
    outcome = check_of(answer)
    if outcome is CodeCheck.OK:
        return claim_id
    if outcome is CodeCheck.EXPIRED:
        raise CodeExpired()
    if outcome is CodeCheck.INVALID:
        raise CodeInvalid()
    raise CodeNotFound()


async def release_claim(redis: Redis, keys: Keys, *, user_id: str, claim_id: str) -> None:
    await _RELEASE(redis, [keys.reset_code(user_id)], (claim_id,))


async def burn_code(redis: Redis, keys: Keys, *, user_id: str) -> None:
    """Any password change ends the user's code (used, or made stale)."""
    await redis.delete(keys.reset_code(user_id))
