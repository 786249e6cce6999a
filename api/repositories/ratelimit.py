"""Rate limits in Redis: GCRA, one Lua call per check, several checks in one round trip.

GCRA ("limit per period, bursts up to limit") keeps one integer per key and answers with
the exact wait, which becomes the 429's ``Retry-After``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from api.errors import RateLimited
from api.kv import Keys, LuaScript, Redis, eval_many
from api.settings import Settings

Mode = Literal["hit", "peek", "record"]

# KEYS[1] the limit's key. ARGV: emission interval (ms), burst, mode.
#   hit: take one unit if it fits; peek: only ask; record: take one unit regardless.
# Returns 0 when allowed (or recorded), else the milliseconds until one unit fits.
_GCRA = LuaScript(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local mode = ARGV[3]
local tat = tonumber(redis.call('GET', KEYS[1]))
if (not tat) or tat < now then tat = now end
if mode ~= 'record' then
  local allow_at = tat + interval - interval * burst
  if allow_at > now then return allow_at - now end
  if mode == 'peek' then return 0 end
end
tat = tat + interval
redis.call('SET', KEYS[1], tat, 'PX', math.max(1, tat - now))
return 0
"""
)


@dataclass(frozen=True)
class Limit:
    key: str
    per_period: int
    period_s: int
    mode: Mode = "hit"

    def args(self) -> tuple[int, int, str]:
        interval_ms = max(1, (self.period_s * 1000) // max(1, self.per_period))
        return interval_ms, max(1, self.per_period), self.mode


async def enforce(redis: Redis, limits: list[Limit]) -> None:
    """Check every limit in one round trip; raise ``RateLimited`` with the longest wait."""
    active = [limit for limit in limits if limit.per_period > 0]
    if not active:
        return
    waits = await eval_many(redis, [(_GCRA, [lim.key], lim.args()) for lim in active])
    longest = max(int(w) for w in waits)
    if longest > 0:
        raise RateLimited(retry_after=max(1, math.ceil(longest / 1000)))


async def record(redis: Redis, limit: Limit) -> None:
    if limit.per_period > 0:
        await _GCRA(redis, [limit.key], (*limit.args()[:2], "record"))


# --- the service's named limits ------------------------------------------------------------


def failed_verifications_by_address(keys: Keys, address: str, per_minute: int, mode: Mode) -> Limit:
    return Limit(keys.address_limit("fail", address), per_minute, 60, mode)


def verifications_by_user(keys: Keys, user_id: str, per_minute: int) -> Limit:
    return Limit(keys.user_limit("verify", user_id), per_minute, 60, "hit")


def reset_requests_by_user(keys: Keys, user_id: str, per_hour: int) -> Limit:
    return Limit(keys.user_limit("reset", user_id), per_hour, 3600, "hit")


async def before_verification(
    redis: Redis, keys: Keys, settings: Settings, *, user_id: str, client_ip: str
) -> None:
    """Before checking a password or code: the user's attempts and the address's failures,
    in one round trip."""
    await enforce(
        redis,
        [
            verifications_by_user(keys, user_id, settings.rate_verifications_per_user_per_minute),
            failed_verifications_by_address(
                keys, client_ip, settings.rate_failed_verifications_per_ip_per_minute, "peek"
            ),
        ],
    )


async def after_failed_verification(
    redis: Redis, keys: Keys, settings: Settings, *, client_ip: str
) -> None:
    await record(
        redis,
        failed_verifications_by_address(
            keys, client_ip, settings.rate_failed_verifications_per_ip_per_minute, "record"
        ),
    )
