"""Change a user's password (three branches) and request a reset code (by user id, or by
login name from the hosted "forgot password" page).

The flow of ``change_password``, in the contract's order:

    load user (404) → permission (403) → state (400) → rate limit (verification branches:
      the user's attempts, and a failure of the address reserved, given back on success)
    → verify: ``new == current`` before any hashing, then the current password (hash pool)
      or the reset code (one Lua call: check, count, claim; in the rate limits' round trip)
    → policy: complexity, blocklist, history, breach → hash the new password (hash pool)
    → in one Redis round trip: the next credentials version (forward only), and the
      address's failure unit back (the proof passed)
    → ONE autocommit statement (``users.change_password``), guarded by the version the
      checks read: lock the user row, append the event, update the row and move its
      credentials version, record history, end the user's other sessions, insert the outbox
      rows; RETURNING sequence, commit time, resource owner
    → answer (the relay publishes the outbox rows). Nothing is left to clean up: the code
      and the ended sessions' cache entries are void from the commit on (their version is
      past) and expire in Redis on their own.

A policy failure or a failed write after a successful code claim releases the claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import time
from typing import Any

import msgspec

from api import crypto, metrics
from api.domain import credentials
from api.domain.auth import Principal, require_self_or_write_on, require_write_on
from api.domain.context import Context
from api.domain.policies import check_new_password, effective_policy
from api.domain.reset_links import validate_url_template
from api.errors import (
    CodeNotFound,
    PasswordInvalid,
    PasswordUnchanged,
    RateLimited,
    UserLocked,
    UserNotActive,
    UserNotFound,
)
from api.kv import eval_many
from api.repositories import codes, outbox, ratelimit, tokens, users
from api.repositories.events import Details
from api.repositories.outbox import NewOutboxRow
from api.repositories.users import ACTIVE, INACTIVE, LOCKED, Command, User, UserChange

log = logging.getLogger("identity.passwords")


class Branch(enum.Enum):
    CURRENT_PASSWORD = "currentPassword"
    VERIFICATION_CODE = "verificationCode"
    ADMIN = "admin"


# The states a user may be in for each branch (checked before, and again inside, the write).
_ALLOWED_STATES = {
    Branch.CURRENT_PASSWORD: (ACTIVE,),
    Branch.VERIFICATION_CODE: (ACTIVE, LOCKED),
    Branch.ADMIN: (ACTIVE, LOCKED, INACTIVE),
}
# A reset code may be requested for a user who may then use it.
_RESET_STATES = _ALLOWED_STATES[Branch.VERIFICATION_CODE]


async def change_password(
    *,
    ctx: Context,
    principal: Principal,
    user_id: str,
    new_password: str,
    change_required: bool = False,
    current_password: str | None = None,
    verification_code: str | None = None,
    client_ip: str = "",
) -> Details:
    if current_password is not None:
        branch = Branch.CURRENT_PASSWORD
    elif verification_code is not None:
        branch = Branch.VERIFICATION_CODE
    else:
        branch = Branch.ADMIN

    ctx.hasher.admit()  # an overload is refused before any other work (503, Retry-After)
    user = credentials.require_human(await users.get(ctx.pool, user_id))
    if branch is Branch.CURRENT_PASSWORD:
        require_self_or_write_on(principal, user)
    elif branch is Branch.ADMIN:
        require_write_on(principal, user)
    if branch is Branch.CURRENT_PASSWORD:
        user = await credentials.end_timed_lock(ctx=ctx, user=user)
    credentials.require_state(user, _ALLOWED_STATES[branch])
    policy = effective_policy(ctx.settings, user.policy_overrides)
    # Charged only now: a caller refused above cannot spend the user's allowance.
    verification: ratelimit.Verification | None = None
    claim_id: str | None = None
    expected_hash: str | None = None
    if current_password is not None:
        verification = await ratelimit.before_verification(
            ctx.redis, ctx.keys, ctx.settings, user_id=user.id, client_ip=client_ip
        )
        expected_hash = credentials.password_hash_of(user)
        if new_password == current_password:
            raise PasswordUnchanged()
        await credentials.verify_password(
            ctx=ctx, user=user, encoded=expected_hash, password=current_password
        )
    elif verification_code is not None:
        # A wrong, unknown or expired code keeps the address's failure unit.
        verification, claim_id = await _limit_and_claim_code(
            ctx=ctx,
            user=user,
            code=verification_code,
            max_tries=policy.max_code_attempts,
            client_ip=client_ip,
        )

    try:
        await check_new_password(ctx=ctx, policy=policy, password=new_password, user_id=user.id)
        new_hash = await ctx.hasher.hash(new_password)
        side_effects = []
        if policy.notify_password_change and user.email:
            side_effects.append(
                NewOutboxRow(outbox.TASK_PASSWORD_CHANGED_EMAIL, {"userId": user.id})
            )
        payload: dict[str, Any] = {"changeRequired": change_required, "verification": branch.value}
        if principal.session_id:
            payload["sessionId"] = principal.session_id
        command = Command(
            user_id=user.id,
            states=_ALLOWED_STATES[branch],
            creator=principal.user_id,
            payload=payload,
            expected_hash=expected_hash,
            side_effects=side_effects,
        )
        # Before the write: once the change answers, no principal cached before it is
        # served (docs/DECISIONS.md, "Revocation"). The proof passed, so the address's
        # failure unit goes back in the same round trip, whatever the write does next.
        await tokens.raise_credentials_version(
            ctx.redis,
            ctx.keys,
            user.id,
            user.credentials_version + 1,
            along=verification.refund_calls() if verification is not None else (),
        )
        verification = None
        change = await _write_change(
            ctx=ctx,
            user=user,
            branch=branch,
            command=command,
            new_hash=new_hash,
            change_required=change_required,
            keep_session_id=principal.session_id,
        )
    except BaseException:
        if claim_id is not None:
            await codes.release_claim(ctx.redis, ctx.keys, user_id=user.id, claim_id=claim_id)
        if verification is not None:
            with contextlib.suppress(Exception):
                await verification.succeeded(ctx.redis)
        raise

    metrics.PASSWORD_CHANGES.labels(branch.value).inc()
    return change.details


async def _limit_and_claim_code(
    *, ctx: Context, user: User, code: str, max_tries: int, client_ip: str
) -> tuple[ratelimit.Verification, str]:
    """The verification limits (the user's attempt, the address's failure reserved) and the
    code's check and claim, in one Redis round trip; the limits judge first. A refused
    request gets the 429 whatever the code: a right code's claim is released (still
    usable), a wrong one has counted as one of the code's tries, as a wrong try within the
    limit would have."""
    limits, verification = ratelimit.verification_limits(
        ctx.keys, ctx.settings, user_id=user.id, client_ip=client_ip
    )
    active = ratelimit.active_limits(limits)
    claim, claim_id = codes.claim_call(
        ctx.keys,
        secret_keys=ctx.settings.secret_keys,
        user_id=user.id,
        code=code,
        max_tries=max_tries,
        credentials_version=user.credentials_version,
        claim_ttl_ms=ctx.settings.code_claim_ttl_ms,
    )
    *waits, answer = await eval_many(ctx.redis, [*ratelimit.calls(active), claim])
    try:
        await ratelimit.settle(ctx.redis, active, waits)
    except RateLimited:
        if codes.check_of(answer) is codes.CodeCheck.OK:
            await codes.release_claim(ctx.redis, ctx.keys, user_id=user.id, claim_id=claim_id)
        raise
    return verification, codes.claimed(answer, claim_id)


async def _write_change(
    *,
    ctx: Context,
    user: User,
    branch: Branch,
    command: Command,
    new_hash: str,
    change_required: bool,
    keep_session_id: str | None,
) -> UserChange:
    """The change's one statement, after Redis has the user's next credentials version
    (``change_password`` sent it; if Redis could not take it, nothing is written: a 503).

    Usually one round trip: the statement in autocommit, guarded by the version the checks
    read. If the user changed meanwhile, it writes nothing: the verification branches answer
    that their proof is stale; an administrator's set is made again inside a transaction
    that holds the row while Redis learns the version it actually made."""
    version = user.credentials_version
    write = functools.partial(
        users.change_password,
        new_hash=new_hash,
        change_required=change_required,
        keep_session_id=keep_session_id,
    )
    change = await write(ctx.pool, msgspec.structs.replace(command, expected_version=version))
    if change is None and branch is Branch.ADMIN:
        async with ctx.pool.acquire() as conn, conn.transaction():
            change = await write(conn, command)
            if change is not None:
                await tokens.raise_credentials_version(
                    ctx.redis, ctx.keys, user.id, change.credentials_version
                )
    if change is not None:
        return change
    current = await users.get(ctx.pool, user.id)
    credentials.require_state(current, _ALLOWED_STATES[branch])
    if command.expected_hash is not None and current.password_hash != command.expected_hash:
        raise PasswordInvalid()  # another change came first: the current password is stale
    if branch is Branch.VERIFICATION_CODE:
        raise CodeNotFound()  # the code was claimed at a version that is gone
    raise UserNotFound()


def code_holder(user_id: str) -> Principal:
    """Who changes a password with a reset code and no token (the hosted reset page,
    ``api.http.pages``): the user the code was issued to, as the code proves. It may use the
    code branch of ``change_password`` only: it holds no session and no role, so the other
    branches refuse it."""
    return Principal(user_id=user_id, org_id="")


async def request_password_reset(
    *,
    ctx: Context,
    principal: Principal,
    user_id: str,
    return_code: bool,
    url_template: str | None = None,
) -> tuple[Details, str | None]:
    """Issue a new code (replacing the old); return it only for ``returnCode``."""
    user = credentials.require_human(await users.get(ctx.pool, user_id))
    if return_code:
        require_write_on(principal, user)
    else:
        require_self_or_write_on(principal, user)
    credentials.require_state(user, _RESET_STATES)
    if url_template is not None:
        validate_url_template(
            url_template,
            trusted_origins=ctx.settings.trusted_reset_link_origins,
            # An administrator's application may send its users anywhere https; a user
            # acting on itself only to this service's own pages.
            any_https=principal.may_write(user.org_id, user),
        )
    return await _issue_code(
        ctx=ctx,
        user=user,
        creator=principal.user_id,
        return_code=return_code,
        url_template=url_template,
    )


async def request_password_reset_by_login_name(
    *, ctx: Context, login_name: str, client_ip: str
) -> None:
    """The hosted "forgot password" page: e-mail the user that ``login_name`` names a reset
    link (the default one, to this service's reset page), as ``request_password_reset`` with
    ``sendLink`` does.

    The answer is the same whether or not the account exists: nothing, after at least
    ``reset_request_min_duration_s``. Only the limits per client address and per login name
    (checked first, for any name) refuse, with ``RateLimited``; an unknown name, a machine
    user, a user who may not reset, one without an e-mail address, or one past its own
    hourly limit simply get no e-mail."""
    started = time.monotonic()
    settings = ctx.settings
    await ratelimit.enforce(
        ctx.redis,
        [
            ratelimit.reset_requests_by_address(
                ctx.keys, client_ip, settings.rate_reset_requests_per_ip_per_hour
            ),
            ratelimit.reset_requests_by_login_name(
                ctx.keys, login_name, settings.rate_reset_requests_per_login_name_per_hour
            ),
        ],
    )
    try:
        user = credentials.require_human(await users.find_by_login_name(ctx.pool, login_name))
        credentials.require_state(user, _RESET_STATES)
        if not user.email:
            raise UserNotFound()
        await _issue_code(ctx=ctx, user=user, creator=user.id, return_code=False, url_template=None)
    except (UserNotFound, UserLocked, UserNotActive, RateLimited) as quiet:
        # Said to nobody (the answer must not tell), logged by kind only.
        log.info("reset by login name: no e-mail (%s)", type(quiet).__name__)
    finally:
        left = settings.reset_request_min_duration_s - (time.monotonic() - started)
        if left > 0:
            await asyncio.sleep(left)


async def _issue_code(
    *,
    ctx: Context,
    user: User,
    creator: str,
    return_code: bool,
    url_template: str | None,
) -> tuple[Details, str | None]:
    """The user's new code (its own hourly limit first), stored in Redis and, for an e-mail,
    its outbox row with the link's template, in one command; the code only for
    ``return_code``."""
    policy = effective_policy(ctx.settings, user.policy_overrides)
    await ratelimit.enforce(
        ctx.redis,
        [ratelimit.reset_requests_by_user(ctx.keys, user.id, policy.reset_requests_per_hour)],
    )

    code = codes.generate_code()
    # Redis first: if the write below fails, an unsent, unknown code simply expires.
    await codes.store_code(
        ctx.redis,
        ctx.keys,
        secret_key=ctx.settings.secret_key,
        user_id=user.id,
        code=code,
        expiry_s=policy.code_expiry_seconds,
        credentials_version=user.credentials_version,
    )
    side_effects: list[NewOutboxRow] = []
    payload: dict[str, Any] = {
        "medium": "returnCode" if return_code else "email",
        "expirySeconds": policy.code_expiry_seconds,
    }
    if not return_code:
        template = url_template or ctx.settings.reset_url_template
        side_effects.append(
            NewOutboxRow(
                outbox.TASK_PASSWORD_RESET_EMAIL,
                {
                    "userId": user.id,
                    "urlTemplate": template,
                    "encryptedCode": crypto.encrypt(ctx.settings.secret_key, code),
                },
            )
        )
        payload["urlTemplate"] = template
    try:
        command = Command(
            user_id=user.id,
            states=_RESET_STATES,
            creator=creator,
            payload=payload,
            side_effects=side_effects,
        )
        change = await users.add_password_code(ctx.pool, command)
    except BaseException:
        # No event, no e-mail, no answer: the code must not stay usable either.
        with contextlib.suppress(Exception):
            await codes.burn_code(ctx.redis, ctx.keys, user_id=user.id)
        raise
    if change is None:
        await codes.burn_code(ctx.redis, ctx.keys, user_id=user.id)
        credentials.require_state(await users.get(ctx.pool, user.id), _RESET_STATES)
        raise UserNotFound()
    return change.details, (code if return_code else None)
