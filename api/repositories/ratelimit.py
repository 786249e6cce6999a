"""Rate limits in Redis: GCRA, one Lua call per check, several checks in one round trip.

GCRA ("limit per period, bursts up to limit") keeps one integer per key and answers with
the exact wait, which becomes the 429's ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import msgspec

from api.errors import RateLimited
from api.kv import Keys, LuaScript, Redis, ScriptCall, eval_many
from api.settings import Settings

Mode = Literal["hit", "peek", "record", "refund"]

# KEYS[1] the limit's key. ARGV: emission interval (ms), burst, mode.
#   hit: take one unit if it fits; peek: only ask; record: take one unit regardless;
#   refund: give back a unit taken by a hit (the attempt it reserved did not count).
# Returns 0 when allowed (or recorded, or refunded), else the milliseconds until one unit fits.
_GCRA = LuaScript(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local mode = ARGV[3]
local tat = tonumber(redis.call('GET', KEYS[1]))
if mode == 'refund' then
  if not tat then return 0 end
  tat = tat - interval
  if tat <= now then redis.call('DEL', KEYS[1])
  else redis.call('SET', KEYS[1], tat, 'PX', tat - now) end
  return 0
end
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
    """Check every limit in one round trip; raise ``RateLimited`` with the longest wait.

    All or nothing: when one limit refuses, the units the others took are given back (the
    keys live in different cluster slots, so one script cannot hold them all)."""
    active = active_limits(limits)
    if active:
        await settle(redis, active, await eval_many(redis, calls(active)))


def active_limits(limits: list[Limit]) -> list[Limit]:
    """The limits that are on (a limit of 0 per period is off)."""
    return [limit for limit in limits if limit.per_period > 0]


def calls(active: list[Limit]) -> list[ScriptCall]:
    """``enforce``'s script calls, for a round trip shared with other calls; their answers go
    to ``settle``."""
    return [_call(limit) for limit in active]


async def settle(redis: Redis, active: list[Limit], answers: Sequence[Any]) -> None:
    """``enforce`` after its round trip: raise ``RateLimited`` with the longest wait, the
    units taken by the limits that allowed given back."""
    waits = [int(w) for w in answers]
    longest = max(waits, default=0)
    if longest > 0:
        taken = [lim for lim, wait in zip(active, waits, strict=True) if wait == 0]
        await refund(redis, [lim for lim in taken if lim.mode in ("hit", "record")])
        raise RateLimited(retry_after=max(1, math.ceil(longest / 1000)))


async def refund(redis: Redis, limits: list[Limit]) -> None:
    """Give back the units ``enforce`` took for these limits."""
    active = [replace(lim, mode="refund") for lim in limits if lim.per_period > 0]
    if active:
        await eval_many(redis, [_call(lim) for lim in active])


def _call(limit: Limit) -> ScriptCall:
    return _GCRA, [limit.key], limit.args()


def address_bucket(client_ip: str) -> str:
    """What one client's address limits are keyed by: the IPv4 address, or the IPv6 /64 (one
    subscriber's network; an attacker holds a whole /64 as easily as one address)."""
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return client_ip or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


# --- the service's named limits ------------------------------------------------------------


def failed_verifications_by_address(
    keys: Keys, client_ip: str, per_minute: int, mode: Mode = "hit"
) -> Limit:
    return Limit(keys.address_limit("fail", address_bucket(client_ip)), per_minute, 60, mode)


def verifications_by_user(keys: Keys, user_id: str, per_minute: int) -> Limit:
    return Limit(keys.user_limit("verify", user_id), per_minute, 60, "hit")


def reset_requests_by_user(keys: Keys, user_id: str, per_hour: int) -> Limit:
    return Limit(keys.user_limit("reset", user_id), per_hour, 3600, "hit")


def reset_requests_by_address(keys: Keys, client_ip: str, per_hour: int) -> Limit:
    """Reset e-mails asked for by login name (the hosted "forgot password" page), per
    client address."""
    return Limit(keys.address_limit("reset", address_bucket(client_ip)), per_hour, 3600, "hit")


def reset_requests_by_login_name(keys: Keys, login_name: str, per_hour: int) -> Limit:
    """... and per login name, whether or not it names anyone (so the limit says nothing
    about the account). Login names resolve case-insensitively; the key holds a digest, not
    the name."""
    digest = hashlib.sha256(login_name.strip().lower().encode()).hexdigest()[:32]
    return Limit(keys.user_limit("reset-name", digest), per_hour, 3600, "hit")


class Verification(msgspec.Struct, frozen=True):
    """The units one password or code check reserved: the user's attempt, and a failure of
    the caller's address taken in advance (so that concurrent wrong tries cannot all pass a
    check that only counts failures afterwards)."""

    address_failure: Limit

    async def succeeded(self, redis: Redis) -> None:
        """The check passed: the address's failure unit goes back."""
        await refund(redis, [self.address_failure])

    def refund_calls(self) -> list[ScriptCall]:
        """``succeeded`` as script calls for ``eval_many``."""
        limit = self.address_failure
        return [_call(replace(limit, mode="refund"))] if limit.per_period > 0 else []


def verification_limits(
    keys: Keys, settings: Settings, *, user_id: str, client_ip: str
) -> tuple[list[Limit], Verification]:
    """What a check of a password or code reserves: one of the user's attempts and one failure
    of the address (``before_verification``, or in a round trip shared with the check)."""
    address_failure = failed_verifications_by_address(
        keys, client_ip, settings.rate_failed_verifications_per_ip_per_minute
    )
    user_attempt = verifications_by_user(
        keys, user_id, settings.rate_verifications_per_user_per_minute
    )
    return [user_attempt, address_failure], Verification(address_failure)


async def before_verification(
    redis: Redis, keys: Keys, settings: Settings, *, user_id: str, client_ip: str
) -> Verification:
    """Before checking a password or code, in one round trip: one of the user's attempts, and
    one failure of the address, reserved (429 if either is exhausted). A failed check keeps
    both; a passed one gives the failure back (``Verification.succeeded``)."""
    limits, verification = verification_limits(keys, settings, user_id=user_id, client_ip=client_ip)
    await enforce(redis, limits)
    return verification


async def unknown_login_name(
    redis: Redis, keys: Keys, settings: Settings, *, client_ip: str
) -> None:
    """A login named nobody: it counts as a failure of the address (429 once exhausted), so
    guessing login names costs what guessing passwords does."""
    await enforce(
        redis,
        [
            failed_verifications_by_address(
                keys, client_ip, settings.rate_failed_verifications_per_ip_per_minute
            )
        ],
    )
