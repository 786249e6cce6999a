"""Celery tasks: each carries out one outbox row through ``api.domain.notifications``.

What a task does, and that it does it once, is the domain's (``notifications.process``);
this module adds what Celery needs: the task names, retries with backoff for transient
failures (past the budget the relay re-publishes later), and the mailer that turns a
``Notice`` into an e-mail over SMTP.
"""

from __future__ import annotations

import asyncio
import logging
import random
import smtplib

import asyncpg
import redis.exceptions
from celery import Celery, Task
from celery.exceptions import Ignore

from api.domain import notifications
from api.domain.notifications import Handler, Notice
from api.domain.outbox import relay_due
from api.repositories.outbox import (
    TASK_PASSWORD_CHANGED_EMAIL,
    TASK_PASSWORD_RESET_EMAIL,
    TASK_RELAY_OUTBOX,
)
from workers import mail
from workers.celery_app import publish_outbox_rows
from workers.runtime import run, runtime

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


async def deliver(notice: Notice) -> None:
    """Compose and send one e-mail (SMTP blocks: off the loop)."""
    settings = runtime().ctx.settings
    message = mail.compose(settings, notice)
    if settings.mail_task_delay_s > 0:  # fault tests kill a worker mid-send
        await asyncio.sleep(settings.mail_task_delay_s)
    await asyncio.to_thread(mail.send, settings, message)


def _run_handler(task: Task, outbox_id: int, handler: Handler) -> str:  # type: ignore[type-arg]
    rt = runtime()
    try:
        return run(notifications.process(ctx=rt.ctx, outbox_id=outbox_id, handler=handler))
    except TRANSIENT as exc:
        # Exponential backoff with jitter; past max_retries the relay re-publishes later.
        log.warning(
            "%s for outbox %s failed (%s), retrying", task.name, outbox_id, type(exc).__name__
        )
        retries = task.request.retries
        if retries >= rt.ctx.settings.task_max_retries:
            raise Ignore() from None
        countdown = min(rt.ctx.settings.task_retry_backoff_max_s, 2**retries)
        jitter = random.uniform(0, countdown / 2)
        raise task.retry(countdown=countdown + jitter, exc=exc) from None


def register(app: Celery) -> None:
    """Register the tasks on ``app`` under the outbox's task names."""
    password_changed = notifications.password_changed_email(deliver)
    password_reset = notifications.password_reset_email(deliver)

    @app.task(name=TASK_PASSWORD_CHANGED_EMAIL, bind=True)
    def send_password_changed_email(self: Task, outbox_id: int) -> str:  # type: ignore[type-arg]
        return _run_handler(self, outbox_id, password_changed)

    @app.task(name=TASK_PASSWORD_RESET_EMAIL, bind=True)
    def send_password_reset_email(self: Task, outbox_id: int) -> str:  # type: ignore[type-arg]
        return _run_handler(self, outbox_id, password_reset)

    @app.task(name=TASK_RELAY_OUTBOX, ignore_result=True)
    def relay_outbox() -> int:
        ctx = runtime().ctx
        return run(
            relay_due(
                ctx.pool,
                lambda rows: publish_outbox_rows(app, rows),
                min_age_s=ctx.settings.relay_min_age_s,
                redeliver_after_s=ctx.settings.relay_redeliver_after_s,
            )
        )
