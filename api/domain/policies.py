"""Password policies per organization, with instance defaults from settings.

Checks of a new password run in the contract's order and report the first failure:
length (in characters), lower case, upper case, number, symbol (any character that is not
an ASCII letter or digit), the common-password blocklist, history, then the optional
breached-password range API.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import urllib.request
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import msgspec

from api.db import Connection, Pool
from api.domain.context import Context
from api.errors import (
    InvalidArgument,
    OrganizationNotFound,
    PasswordBreached,
    PasswordNoLowercase,
    PasswordNoNumber,
    PasswordNoSymbol,
    PasswordNoUppercase,
    PasswordReused,
    PasswordTooCommon,
    PasswordTooShort,
    StoreUnavailable,
)
from api.repositories import orgs, users
from api.repositories import policies as overrides_store
from api.settings import Settings


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    min_length: int
    has_lowercase: bool
    has_uppercase: bool
    has_number: bool
    has_symbol: bool
    blocklist: bool
    history: int
    max_password_attempts: int
    max_code_attempts: int
    code_expiry_seconds: int
    notify_password_change: bool
    reset_requests_per_hour: int
    # How long the lockout's lock lasts (0: until an administrator unlocks).
    lockout_duration_seconds: int


POLICY_KEYS: tuple[str, ...] = Policy.__struct_fields__
_LIMITS: dict[str, tuple[int, int]] = {
    "min_length": (1, 200),
    "history": (0, 100),
    "max_password_attempts": (0, 1000),
    "max_code_attempts": (1, 100),
    "code_expiry_seconds": (60, 7 * 24 * 3600),
    "reset_requests_per_hour": (0, 10_000),
    "lockout_duration_seconds": (0, 365 * 24 * 3600),
}


def default_policy(settings: Settings) -> Policy:
    return Policy(**{key: getattr(settings, f"policy_{key}") for key in POLICY_KEYS})


def effective_policy(settings: Settings, overrides: dict[str, Any] | None) -> Policy:
    """The instance defaults with an organization's overrides (its ``policies.settings``)."""
    base = default_policy(settings)
    if not overrides:
        return base
    merged = msgspec.structs.asdict(base) | {k: v for k, v in overrides.items() if k in POLICY_KEYS}
    return msgspec.convert(merged, Policy)


async def get_policy(*, ctx: Context, org_id: str, db: Pool | Connection | None = None) -> Policy:
    """The organization's effective policy (404 for an unknown organization)."""
    db = db or ctx.pool
    if await orgs.get(db, org_id) is None:
        raise OrganizationNotFound()
    return effective_policy(ctx.settings, await overrides_store.get_overrides(db, org_id))


def parse_policy_updates(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings from the command line, typed and range-checked."""
    types = {f.name: f.type for f in msgspec.structs.fields(Policy)}
    updates: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or key not in types:
            raise InvalidArgument(f"unknown policy key {key!r}; keys: {', '.join(POLICY_KEYS)}")
        value: Any
        if types[key] is bool:
            lowered = raw.strip().lower()
            if lowered in ("true", "on", "yes", "1"):
                value = True
            elif lowered in ("false", "off", "no", "0"):
                value = False
            else:
                raise InvalidArgument(f"{key} must be true or false, not {raw!r}")
        else:
            try:
                value = int(raw)
            except ValueError:
                raise InvalidArgument(f"{key} must be a whole number, not {raw!r}") from None
            low, high = _LIMITS[key]
            if not low <= value <= high:
                raise InvalidArgument(f"{key} must be between {low} and {high}")
        updates[key] = value
    return updates


async def set_policy(*, ctx: Context, org_id: str, updates: dict[str, Any]) -> Policy:
    """Merge ``updates`` (from ``parse_policy_updates``) into the organization's overrides."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        if await orgs.get(conn, org_id) is None:
            raise OrganizationNotFound()
        await overrides_store.merge_overrides(conn, org_id, updates)
        return await get_policy(ctx=ctx, org_id=org_id, db=conn)


async def check_new_password(
    *, ctx: Context, policy: Policy, password: str, user_id: str | None = None
) -> None:
    """Is ``password`` acceptable as the new password (of ``user_id``, for the history)?

    Complexity and blocklist first (cheap), then the history (hashes), then the breach API.
    """
    check_complexity(policy, password)
    if user_id is not None and policy.history > 0:
        recent = await users.recent_password_hashes(ctx.pool, user_id, policy.history)
        await check_history(policy, password, recent, ctx.hasher.verify)
    await check_breached(ctx.settings, password)


# --- checks -------------------------------------------------------------------------------


@functools.cache
def common_passwords() -> frozenset[str]:
    text = resources.files("api").joinpath("data/common-passwords.txt").read_text("utf-8")
    # Only "# " starts a comment: a few real entries begin with '#'.
    return frozenset(line for line in text.splitlines() if line and not line.startswith("# "))


def check_complexity(policy: Policy, password: str) -> None:
    if len(password) < policy.min_length:
        raise PasswordTooShort()
    if policy.has_lowercase and not any("a" <= c <= "z" for c in password):
        raise PasswordNoLowercase()
    if policy.has_uppercase and not any("A" <= c <= "Z" for c in password):
        raise PasswordNoUppercase()
    if policy.has_number and not any("0" <= c <= "9" for c in password):
        raise PasswordNoNumber()
    if policy.has_symbol and all(c.isascii() and c.isalnum() for c in password):
        raise PasswordNoSymbol()
    if policy.blocklist and password.lower() in common_passwords():
        raise PasswordTooCommon()


async def check_history(
    policy: Policy,
    password: str,
    recent_hashes: list[str],
    verify: Callable[[str, str], Awaitable[bool]],
) -> None:
    """``history`` N forbids the current password and the N-1 before it."""
    for encoded in recent_hashes[: policy.history]:
        if await verify(encoded, password):
            raise PasswordReused()


def _range_query(url: str, prefix: str, timeout: float) -> str:
    if not url.startswith(("https://", "http://")):
        raise ValueError("breach check URL must be http(s)")
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        url.rstrip("/") + "/" + prefix, headers={"Add-Padding": "true", "User-Agent": "identity"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (configured URL)
        body: bytes = response.read()
    return body.decode("ascii", "replace")


async def check_breached(settings: Settings, password: str) -> None:
    """k-anonymity: only the first 5 hex digits of the SHA-1 leave the process."""
    if not settings.breach_check_url:
        return
    digest = hashlib.sha1(password.encode(), usedforsecurity=False).hexdigest().upper()
    prefix, suffix = digest[:5], digest[5:]
    try:
        body = await asyncio.to_thread(
            _range_query, settings.breach_check_url, prefix, settings.breach_check_timeout_s
        )
    except (OSError, ValueError):
        if settings.breach_check_fail_closed:
            raise StoreUnavailable() from None
        return
    for line in body.splitlines():
        candidate, _, count = line.strip().partition(":")
        if candidate.upper() == suffix and count.strip() not in ("", "0"):
            raise PasswordBreached()
