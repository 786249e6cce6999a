"""The side effects of a password change, each idempotent by outbox id.

Every task takes the outbox row's lock, returns at once if the row is already processed (a
second delivery), does its work, appends its audit event and marks the row processed, all in
one transaction. A mail is sent while the row is locked, so two deliveries racing each other
cannot both send; a worker killed before the commit leaves the row unprocessed and the
message unacknowledged, so the mail is sent again by the next delivery.
"""

from __future__ import annotations

import asyncio
import logging
import random
import smtplib
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from typing import Any

import asyncpg
import redis.exceptions
from celery import Celery, Task
from celery.exceptions import Ignore

from api import auth, crypto, events, outbox, sessions, users
from api.db import Connection
from api.errors import UserNotFound
from api.outbox import OutboxItem
from api.passwords import render_url_template
from workers import mail
from workers.runtime import Runtime, run, runtime

log = logging.getLogger("identity.tasks")

TRANSIENT = (
    OSError,
    smtplib.SMTPException,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)

AfterCommit = list[Callable[[], Awaitable[object]]]
# A handler does the work inside the row's transaction and may add steps to run after commit.
Handler = Callable[[Runtime, Connection, OutboxItem, AfterCommit], Awaitable[str]]


async def process(outbox_id: int, handler: Handler) -> str:
    rt = runtime()
    after_commit: AfterCommit = []
    async with rt.pool.acquire() as conn, conn.transaction():
        item = await outbox.lock_for_processing(conn, outbox_id)
        if item is None:
            return "missing"
        if item.processed_at is not None:
            return "duplicate"
        outcome = await handler(rt, conn, item, after_commit)
        await outbox.mark_processed(conn, outbox_id)
    for step in after_commit:
        try:
            await step()
        except Exception as exc:  # the committed work stands; this step was a safeguard
            log.warning("after-commit step for outbox %s failed: %s", outbox_id, type(exc).__name__)
    return outcome


async def _pause_for_fault_tests(rt: Runtime) -> None:
    if rt.settings.mail_task_delay_s > 0:
        await asyncio.sleep(rt.settings.mail_task_delay_s)


async def _mail_user(
    rt: Runtime,
    conn: Connection,
    item: OutboxItem,
    *,
    compose: Callable[[users.User], EmailMessage],
    sent_event: str,
    sent_payload: dict[str, Any],
) -> str:
    """Send one e-mail to the user of an outbox row and record it as sent."""
    try:
        user = await users.get_user(conn, item.payload["userId"])
    except UserNotFound:
        return "skipped: user removed"
    if not user.email:
        return "skipped: no e-mail address"
    message = compose(user)
    await _pause_for_fault_tests(rt)
    await asyncio.to_thread(mail.send, rt.settings, message)
    await events.record_notification(
        conn,
        outbox_id=item.id,
        event_type=sent_event,
        user_id=user.id,
        resource_owner=user.org_id,
        payload=sent_payload,
    )
    return "sent"


async def password_changed_email(
    rt: Runtime, conn: Connection, item: OutboxItem, _: AfterCommit
) -> str:
    def compose(user: users.User) -> EmailMessage:
        return mail.password_changed_message(
            settings=rt.settings,
            to=user.email,
            name=user.display_name or user.username,
            outbox_id=item.id,
        )

    return await _mail_user(
        rt,
        conn,
        item,
        compose=compose,
        sent_event=events.PASSWORD_CHANGE_SENT,
        sent_payload={"changeSequence": item.event_sequence},
    )


async def password_reset_email(
    rt: Runtime, conn: Connection, item: OutboxItem, _: AfterCommit
) -> str:
    def compose(user: users.User) -> EmailMessage:
        code = crypto.decrypt(rt.settings.secret_key, item.payload["encryptedCode"])
        link = render_url_template(
            item.payload["urlTemplate"], user_id=user.id, code=code, org_id=user.org_id
        )
        return mail.password_reset_message(
            settings=rt.settings,
            to=user.email,
            name=user.display_name or user.username,
            link=link,
            code=code,
            outbox_id=item.id,
        )

    return await _mail_user(
        rt,
        conn,
        item,
        compose=compose,
        sent_event=events.PASSWORD_CODE_SENT,
        sent_payload={"codeSequence": item.event_sequence},
    )


async def revoke_other_sessions(
    rt: Runtime, conn: Connection, item: OutboxItem, after_commit: AfterCommit
) -> str:
    user_id = item.payload["userId"]
    digests = await sessions.revoke_sessions_before(
        conn,
        rt.redis,
        rt.keys,
        user_id=user_id,
        before=item.created_at,
        except_session_id=item.payload.get("exceptSessionId"),
    )
    if digests:
        # The cache entries were deleted inside the transaction (a Redis failure there rolls
        # the revocation back for a retry); a request in between may have cached a principal
        # from the not-yet-revoked row, so delete them again once the revocation is visible.
        after_commit.append(lambda: auth.forget_digests(rt.redis, rt.keys, digests))
    return f"revoked {len(digests)}"


def _run_handler(task: Task, outbox_id: int, handler: Handler) -> str:  # type: ignore[type-arg]
    try:
        return run(process(outbox_id, handler))
    except TRANSIENT as exc:
        # Exponential backoff with jitter; past max_retries the relay re-publishes later.
        log.warning(
            "%s for outbox %s failed (%s), retrying", task.name, outbox_id, type(exc).__name__
        )
        rt = runtime()
        retries = task.request.retries
        if retries >= rt.settings.task_max_retries:
            raise Ignore() from None
        countdown = min(rt.settings.task_retry_backoff_max_s, 2**retries)
        jitter = random.uniform(0, countdown / 2)
        raise task.retry(countdown=countdown + jitter, exc=exc) from None


def register(app: Celery) -> None:
    """Register the tasks on ``app`` under the outbox's task names."""

    @app.task(name=outbox.TASK_PASSWORD_CHANGED_EMAIL, bind=True)
    def send_password_changed_email(self: Task, outbox_id: int) -> str:  # type: ignore[type-arg]
        return _run_handler(self, outbox_id, password_changed_email)

    @app.task(name=outbox.TASK_PASSWORD_RESET_EMAIL, bind=True)
    def send_password_reset_email(self: Task, outbox_id: int) -> str:  # type: ignore[type-arg]
        return _run_handler(self, outbox_id, password_reset_email)

    @app.task(name=outbox.TASK_REVOKE_SESSIONS, bind=True)
    def revoke_sessions(self: Task, outbox_id: int) -> str:  # type: ignore[type-arg]
        return _run_handler(self, outbox_id, revoke_other_sessions)

    @app.task(name=outbox.TASK_RELAY_OUTBOX, ignore_result=True)
    def relay_outbox() -> int:
        rt = runtime()
        from workers.celery_app import publish_outbox_rows

        return run(
            outbox.relay_due(
                rt.pool,
                lambda rows: publish_outbox_rows(app, rows),
                min_age_s=rt.settings.relay_min_age_s,
                redeliver_after_s=rt.settings.relay_redeliver_after_s,
            )
        )
