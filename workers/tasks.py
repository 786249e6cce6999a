"""Celery tasks: ``identity.deliver_emails`` delivers a batch of outbox rows through
``api.domain.notifications.deliver_batch``; ``identity.relay_outbox`` publishes due rows.

What a delivery does, and that it does it once, is the domain's; this module adds what
Celery needs: the task names, retries with backoff when the SMTP server or a store is out of
reach (past the budget the relay re-publishes later), and the mailer that turns notices into
e-mails over one SMTP connection.
"""

from __future__ import annotations

import logging
import random
import smtplib
import time

from celery import Celery, Task
from celery.exceptions import Ignore

from api.domain import notifications
from api.domain.outbox import relay_due
from api.errors import UNAVAILABLE_ERRORS
from api.repositories.outbox import (
    TASK_DELIVER_EMAILS,
    TASK_PASSWORD_CHANGED_EMAIL,
    TASK_PASSWORD_RESET_EMAIL,
    TASK_RELAY_OUTBOX,
)
from workers import mail
from workers.celery_app import publish_outbox_rows
from workers.runtime import run, runtime

log = logging.getLogger("identity.tasks")

# What the API answers 503 for (a store out of reach), and the SMTP server's failures.
TRANSIENT: tuple[type[Exception], ...] = (*UNAVAILABLE_ERRORS, smtplib.SMTPException)


class _Outage:
    """Deliveries failing for want of a store or the SMTP server, said once per outage in
    this process (the first failure at WARNING, the retries at DEBUG, the first success
    after them at WARNING), not once per retried batch."""

    def __init__(self) -> None:
        self.since: float | None = None

    def failed(self, task: str, rows: int, kind: str) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.warning("deliveries are failing (%s): retrying with backoff until it is back", kind)
        log.debug("%s for %d outbox rows failed (%s), retrying", task, rows, kind)

    def succeeded(self) -> None:
        if self.since is not None:
            lasted = time.monotonic() - self.since
            self.since = None
            log.warning("deliveries succeed again (they failed for about %.0f s)", lasted)


_OUTAGE = _Outage()


def _deliver(task: Task, outbox_ids: list[int]) -> str:  # type: ignore[type-arg]
    rt = runtime()
    try:
        deliver = mail.deliverer(rt.ctx.settings)
        summary = run(
            notifications.deliver_batch(ctx=rt.ctx, outbox_ids=outbox_ids, deliver=deliver)
        )
    except TRANSIENT as exc:
        # The SMTP server or a store is out of reach: nothing of the batch was committed.
        # Exponential backoff with jitter; past max_retries the relay re-publishes later.
        _OUTAGE.failed(task.name, len(outbox_ids), type(exc).__name__)
        retries = task.request.retries
        if retries >= rt.ctx.settings.task_max_retries:
            raise Ignore() from None
        countdown = min(rt.ctx.settings.task_retry_backoff_max_s, 2**retries)
        jitter = random.uniform(0, countdown / 2)
        raise task.retry(countdown=countdown + jitter, exc=exc) from None
    _OUTAGE.succeeded()
    return summary


def register(app: Celery) -> None:
    """Register the tasks on ``app``."""

    @app.task(name=TASK_DELIVER_EMAILS, bind=True)
    def deliver_emails(self: Task, outbox_ids: list[int]) -> str:  # type: ignore[type-arg]
        return _deliver(self, outbox_ids)

    # One row a message, as published before batches: messages still in a broker at upgrade.
    @app.task(name=TASK_PASSWORD_CHANGED_EMAIL, bind=True)
    def send_password_changed_email(self: Task, outbox_id: int) -> str:  # type: ignore[type-arg]
        return _deliver(self, [outbox_id])

    @app.task(name=TASK_PASSWORD_RESET_EMAIL, bind=True)
    def send_password_reset_email(self: Task, outbox_id: int) -> str:  # type: ignore[type-arg]
        return _deliver(self, [outbox_id])

    @app.task(name=TASK_RELAY_OUTBOX, ignore_result=True)
    def relay_outbox() -> int:
        ctx = runtime().ctx
        published = run(
            relay_due(
                ctx.pool,
                lambda rows: publish_outbox_rows(
                    app, rows, batch_size=ctx.settings.mail_batch_size
                ),
                min_age_s=ctx.settings.relay_min_age_s,
                redeliver_after_s=ctx.settings.relay_redeliver_after_s,
            )
        )
        # Celery's lines about this task are DEBUG (workers.sweep_logs): one INFO line for
        # a sweep that published, none for an idle one.
        if published:
            log.info("beat's sweep published %d outbox rows", published)
        return published
