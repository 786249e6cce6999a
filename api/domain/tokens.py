"""Personal access tokens from the command line (``identity token …``): their lifetime
(``--expires-in``), the list of them without secrets, and revocation, which stops a token at
once, cached or not (docs/DECISIONS.md, "Session and token lifetimes (issue 10)")."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import msgspec

from api.domain.context import Context
from api.errors import NotFound, OrganizationNotFound
from api.repositories import orgs, tokens
from api.repositories.tokens import PersonalAccessToken

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d{1,12})([smhdw]?)")
# Longer is "never": leave ``--expires-in`` out.
MAX_EXPIRES_IN_S = 3650 * 86400


def parse_duration(text: str) -> int:
    """Seconds of ``3600``, ``90s``, ``15m``, ``12h``, ``90d`` or ``2w``; ValueError with a
    message for the command line otherwise."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(
            f"invalid duration {text!r}: a whole number of seconds, or a number followed by "
            "s, m, h, d or w (e.g. 3600, 12h, 90d)"
        )
    seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not 0 < seconds <= MAX_EXPIRES_IN_S:
        raise ValueError(
            f"invalid duration {text!r}: must be more than 0 and at most 3650d "
            "(leave --expires-in out for a token that does not expire)"
        )
    return seconds


def expiry_after(seconds: int) -> datetime:
    """The moment ``seconds`` from now (a PAT's ``expires_at``)."""
    return datetime.now(UTC) + timedelta(seconds=seconds)


class Tokens(msgspec.Struct, frozen=True):
    tokens: list[PersonalAccessToken]


class Revoked(msgspec.Struct, frozen=True, rename="camel"):
    token_id: str
    revoked_at: datetime


async def list_personal_access_tokens(*, ctx: Context, org_id: str | None = None) -> Tokens:
    """Every PAT (of one organization's machine users), oldest first: ids, owner, role and
    times, never the token or its digest."""
    if org_id is not None and await orgs.get(ctx.pool, org_id) is None:
        raise OrganizationNotFound()
    return Tokens(await tokens.list_personal_access_tokens(ctx.pool, org_id=org_id))


async def revoke_personal_access_token(*, ctx: Context, token_id: str) -> Revoked:
    """Revoke a PAT and drop its cached principal, so it is refused from now on (revoking a
    revoked one keeps its first time)."""
    revoked = await tokens.revoke_personal_access_token(ctx.pool, token_id)
    if revoked is None:
        raise NotFound(f"personal access token {token_id} not found")
    await tokens.forget(ctx.redis, ctx.keys, [revoked.token_digest])
    return Revoked(token_id, revoked.revoked_at)
