"""Change a user's password (three branches) and request a reset code.

The flow of ``change_password``, in the contract's order:

    rate limit (verification branches) → load user (404) → permission (403) → state (400)
    → verify: ``new == current`` before any hashing, then the current password (hash pool)
      or the reset code (one Lua call: check, count, claim)
    → policy: complexity, blocklist, history, breach → hash the new password (hash pool)
    → ONE statement: lock the user row, append the event, update the row, record history,
      insert the outbox rows; RETURNING sequence, commit time, resource owner
    → after commit: burn the code, publish the outbox rows, answer.

A policy failure or a failed write after a successful code claim releases the claim.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import re
from typing import Any
from urllib.parse import urlsplit

import msgspec

from api import auth, codes, crypto, events, metrics, outbox, policies, ratelimit, users
from api.auth import Principal
from api.errors import (
    CodeInvalid,
    CodeNotFound,
    PasswordInvalid,
    PasswordNotSet,
    PasswordUnchanged,
    UrlTemplateInvalid,
    UserLocked,
    UserNotActive,
    UserNotFound,
)
from api.events import Details
from api.outbox import OutboxRow
from api.policies import Policy
from api.stores import Stores
from api.users import INACTIVE, LOCKED, User

log = logging.getLogger("identity.passwords")


class Branch(enum.Enum):
    CURRENT_PASSWORD = "currentPassword"
    VERIFICATION_CODE = "verificationCode"
    ADMIN = "admin"


# States a user may be in for each branch to proceed (checked again inside the write).
_ALLOWED_STATES = {
    Branch.CURRENT_PASSWORD: ["active"],
    Branch.VERIFICATION_CODE: ["active", "locked"],
    Branch.ADMIN: ["active", "locked", "inactive"],
}

_WRITE_PASSWORD_CHANGE = """
WITH target AS (
    SELECT id, org_id, sequence FROM users
    WHERE id = $1 AND deleted_at IS NULL AND state = ANY($2::text[])
      AND ($3::text IS NULL OR password_hash = $3::text)
    FOR UPDATE
), ev AS (
    INSERT INTO events (aggregate_id, sequence, aggregate_type, event_type, payload, creator,
                        resource_owner, created_at)
    SELECT id, sequence + 1, 'user', 'user.human.password.changed', $6::jsonb, $7, org_id,
           clock_timestamp()
    FROM target
    RETURNING aggregate_id, sequence, created_at, resource_owner
), upd AS (
    UPDATE users u
    SET password_hash = $4, password_change_required = $5, password_changed_at = ev.created_at,
        failed_password_attempts = 0, sequence = ev.sequence, updated_at = ev.created_at
    FROM ev WHERE u.id = ev.aggregate_id
), history AS (
    INSERT INTO password_history (user_id, sequence, password_hash, created_at)
    SELECT aggregate_id, sequence, $4, created_at FROM ev
), side_effects AS (
    INSERT INTO outbox (task, aggregate_id, event_sequence, payload, created_at)
    SELECT t.task, ev.aggregate_id, ev.sequence, t.payload::jsonb, ev.created_at
    FROM ev, unnest($8::text[], $9::text[]) WITH ORDINALITY AS t(task, payload, n)
    ORDER BY t.n
    RETURNING id, task
)
SELECT ev.sequence, ev.created_at, ev.resource_owner,
       (SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM side_effects) AS outbox_ids,
       (SELECT coalesce(array_agg(task ORDER BY id), '{}') FROM side_effects) AS outbox_tasks
FROM ev
"""

_WRITE_CODE_ADDED = """
WITH target AS (
    SELECT id, org_id, sequence FROM users
    WHERE id = $1 AND deleted_at IS NULL AND state <> 'inactive'
    FOR UPDATE
), ev AS (
    INSERT INTO events (aggregate_id, sequence, aggregate_type, event_type, payload, creator,
                        resource_owner, created_at)
    SELECT id, sequence + 1, 'user', 'user.human.password.code.added', $2::jsonb, $3, org_id,
           clock_timestamp()
    FROM target
    RETURNING aggregate_id, sequence, created_at, resource_owner
), upd AS (
    UPDATE users u SET sequence = ev.sequence, updated_at = ev.created_at
    FROM ev WHERE u.id = ev.aggregate_id
), side_effects AS (
    INSERT INTO outbox (task, aggregate_id, event_sequence, payload, created_at)
    SELECT $4::text, ev.aggregate_id, ev.sequence, $5::jsonb, ev.created_at
    FROM ev WHERE $4::text IS NOT NULL
    RETURNING id, task
)
SELECT ev.sequence, ev.created_at, ev.resource_owner,
       (SELECT coalesce(array_agg(id), '{}') FROM side_effects) AS outbox_ids,
       (SELECT coalesce(array_agg(task), '{}') FROM side_effects) AS outbox_tasks
FROM ev
"""

_RECENT_HASHES = """
SELECT password_hash FROM password_history WHERE user_id = $1 ORDER BY sequence DESC LIMIT $2
"""


def _json(value: dict[str, Any]) -> str:
    return msgspec.json.encode(value).decode()


def _outbox_rows(row: Any) -> list[OutboxRow]:
    return [OutboxRow(i, t) for i, t in zip(row["outbox_ids"], row["outbox_tasks"], strict=True)]


# --- policy ---------------------------------------------------------------------------------


async def check_new_password(
    stores: Stores, *, policy: Policy, password: str, user_id: str | None = None
) -> None:
    """Complexity and blocklist, then history (needs hashing), then the breach API."""
    policies.check_complexity(policy, password)
    if user_id is not None and policy.history > 0:
        recent = [
            r["password_hash"]
            for r in await stores.pool.fetch(_RECENT_HASHES, user_id, policy.history)
        ]
        await policies.check_history(policy, password, recent, stores.hasher.verify)
    await policies.check_breached(stores.settings, password)


async def check_password_for_org(stores: Stores, org_id: str, password: str) -> None:
    policy = await policies.get_policy(stores.pool, stores.settings, org_id)
    await check_new_password(stores, policy=policy, password=password)


# --- change ---------------------------------------------------------------------------------


def _require_state(branch: Branch, user: User) -> None:
    if branch is Branch.ADMIN:
        return
    if branch is Branch.CURRENT_PASSWORD and user.state == LOCKED:
        raise UserLocked()
    if user.state == INACTIVE:
        raise UserNotActive()


async def change_password(
    stores: Stores,
    *,
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

    if branch is not Branch.ADMIN:
        await ratelimit.before_verification(
            stores.redis, stores.keys, stores.settings, user_id=user_id, client_ip=client_ip
        )
    user = await users.get_human(stores.pool, user_id)
    if branch is Branch.CURRENT_PASSWORD:
        auth.require_self_or_write(principal, user.id, user.org_id)
    elif branch is Branch.ADMIN:
        auth.require_write(principal, user.org_id)
    _require_state(branch, user)
    policy = policies.effective_policy(stores.settings, user.policy_overrides)

    claim_id: str | None = None
    expected_hash: str | None = None
    if current_password is not None:
        if user.password_hash is None:
            raise PasswordNotSet()
        if new_password == current_password:
            raise PasswordUnchanged()
        if not await stores.hasher.verify(user.password_hash, current_password):
            await users.record_failed_password(
                stores.pool, user_id=user.id, max_attempts=policy.max_password_attempts
            )
            await ratelimit.after_failed_verification(
                stores.redis, stores.keys, stores.settings, client_ip=client_ip
            )
            raise PasswordInvalid()
        expected_hash = user.password_hash
    elif verification_code is not None:
        try:
            claim_id = await codes.claim_code(
                stores.redis,
                stores.keys,
                secret_key=stores.settings.secret_key,
                user_id=user.id,
                code=verification_code,
                max_tries=policy.max_code_attempts,
                not_before_ms=user.password_changed_ms,
            )
        except (CodeInvalid, CodeNotFound) as exc:
            await ratelimit.after_failed_verification(
                stores.redis, stores.keys, stores.settings, client_ip=client_ip
            )
            raise exc from None

    try:
        await check_new_password(stores, policy=policy, password=new_password, user_id=user.id)
        new_hash = await stores.hasher.hash(new_password)
        row = await _write_change(
            stores,
            branch=branch,
            principal=principal,
            user=user,
            policy=policy,
            new_hash=new_hash,
            change_required=change_required,
            expected_hash=expected_hash,
        )
    except BaseException:
        if claim_id is not None:
            await codes.release_claim(stores.redis, stores.keys, user_id=user.id, claim_id=claim_id)
        raise

    try:
        await codes.burn_code(stores.redis, stores.keys, user_id=user.id)
    except Exception as exc:  # the code is void anyway: it predates the change
        log.warning("could not delete a used reset code: %s", type(exc).__name__)
    stores.outbox.dispatch(_outbox_rows(row))
    metrics.PASSWORD_CHANGES.labels(branch.value).inc()
    return events.details_from(row)


async def _write_change(
    stores: Stores,
    *,
    branch: Branch,
    principal: Principal,
    user: User,
    policy: Policy,
    new_hash: str,
    change_required: bool,
    expected_hash: str | None,
) -> Any:
    tasks: list[str] = []
    payloads: list[str] = []
    if policy.notify_password_change and user.email:
        tasks.append(outbox.TASK_PASSWORD_CHANGED_EMAIL)
        payloads.append(_json({"userId": user.id}))
    tasks.append(outbox.TASK_REVOKE_SESSIONS)
    payloads.append(_json({"userId": user.id, "exceptSessionId": principal.session_id}))
    event_payload = {"changeRequired": change_required, "verification": branch.value}
    if principal.session_id:
        event_payload["sessionId"] = principal.session_id

    row = await stores.pool.fetchrow(
        _WRITE_PASSWORD_CHANGE,
        user.id,
        _ALLOWED_STATES[branch],
        expected_hash,
        new_hash,
        change_required,
        event_payload,
        principal.user_id,
        tasks,
        payloads,
    )
    if row is not None:
        return row
    # The user changed between the checks and the write: say what changed.
    current = await users.get_user(stores.pool, user.id)
    _require_state(branch, current)
    if expected_hash is not None and current.password_hash != expected_hash:
        raise PasswordInvalid()
    raise UserNotFound()


# --- reset codes ----------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")
_PLACEHOLDERS = frozenset({"UserID", "Code", "OrgID"})
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")


def render_url_template(template: str, *, user_id: str, code: str, org_id: str) -> str:
    values = {"UserID": user_id, "Code": code, "OrgID": org_id}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def validate_url_template(template: str) -> None:
    """Known placeholders only, and the rendered result must be a URL."""
    if any(name not in _PLACEHOLDERS for name in _PLACEHOLDER.findall(template)):
        raise UrlTemplateInvalid()
    rest = _PLACEHOLDER.sub("", template)
    if "{{" in rest or "}}" in rest or any(c.isspace() or ord(c) < 32 for c in template):
        raise UrlTemplateInvalid()
    parts = urlsplit(render_url_template(template, user_id="1", code="ABC123", org_id="2"))
    if not _SCHEME.match(parts.scheme or ""):
        raise UrlTemplateInvalid()
    if parts.scheme.lower() in ("http", "https") and not parts.hostname:
        raise UrlTemplateInvalid()
    if not (parts.netloc or parts.path):
        raise UrlTemplateInvalid()


async def request_password_reset(
    stores: Stores,
    *,
    principal: Principal,
    user_id: str,
    return_code: bool,
    url_template: str | None = None,
) -> tuple[Details, str | None]:
    """Issue a new code (replacing the old); return it only for ``returnCode``."""
    user = await users.get_human(stores.pool, user_id)
    if return_code:
        auth.require_write(principal, user.org_id)
    else:
        auth.require_self_or_write(principal, user.id, user.org_id)
    if user.state == INACTIVE:
        raise UserNotActive()
    if url_template is not None:
        validate_url_template(url_template)
    policy = policies.effective_policy(stores.settings, user.policy_overrides)
    await ratelimit.enforce(
        stores.redis,
        [ratelimit.reset_requests_by_user(stores.keys, user.id, policy.reset_requests_per_hour)],
    )

    code = codes.generate_code()
    # Redis first: if the write below fails, an unsent, unknown code simply expires.
    await codes.store_code(
        stores.redis,
        stores.keys,
        secret_key=stores.settings.secret_key,
        user_id=user.id,
        code=code,
        expiry_s=policy.code_expiry_seconds,
    )
    task: str | None = None
    task_payload: dict[str, Any] = {}
    event_payload: dict[str, Any] = {
        "medium": "returnCode" if return_code else "email",
        "expirySeconds": policy.code_expiry_seconds,
    }
    if not return_code:
        template = url_template or stores.settings.reset_url_template
        task = outbox.TASK_PASSWORD_RESET_EMAIL
        task_payload = {
            "userId": user.id,
            "urlTemplate": template,
            "encryptedCode": crypto.encrypt(stores.settings.secret_key, code),
        }
        event_payload["urlTemplate"] = template
    try:
        row = await stores.pool.fetchrow(
            _WRITE_CODE_ADDED, user.id, event_payload, principal.user_id, task, task_payload
        )
    except BaseException:
        # No event, no e-mail, no answer: the code must not stay usable either.
        with contextlib.suppress(Exception):
            await codes.burn_code(stores.redis, stores.keys, user_id=user.id)
        raise
    if row is None:
        await codes.burn_code(stores.redis, stores.keys, user_id=user.id)
        current = await users.get_user(stores.pool, user.id)
        _require_state(Branch.VERIFICATION_CODE, current)
        raise UserNotFound()
    stores.outbox.dispatch(_outbox_rows(row))
    return events.details_from(row), (code if return_code else None)
