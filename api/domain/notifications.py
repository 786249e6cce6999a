"""The e-mails of changes, delivered from their outbox rows in batches, each at most once.

``deliver_batch`` locks the batch's rows that are still to do, sends their e-mails over one
connection while they stay locked, and in the same transaction records and marks processed
the ones sent, and counts a failed attempt for each refused one. Two deliveries racing each
other cannot both send a row; a worker killed before the commit leaves the rows unprocessed,
so the next delivery sends them again (the documented at-most-once-more window).

Sending is handed in (``DeliverBatch``): the domain says what to tell whom, the worker's
mailer composes and sends it.

A row no retry can deliver is dead at once rather than failing every attempt (and being
republished by the relay every few minutes): an address ``api.domain.emails`` refuses (a row
stored before addresses were validated, e.g. ``a@x, evil@y`` or one with a CR/LF), or a
message the mailer cannot build. Its ``last_error`` says which (``address-invalid``,
``message-invalid``), never the address or any text of the row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from api import crypto, metrics, request_ids, tracing
from api.domain import emails
from api.domain.context import Context
from api.domain.reset_links import render_url_template
from api.errors import UNAVAILABLE_ERRORS
from api.repositories import events, mail_journal, outbox, users
from api.repositories.outbox import OutboxItem
from api.repositories.users import User

log = logging.getLogger("identity.notifications")

PASSWORD_CHANGED = "password_changed"
PASSWORD_RESET = "password_reset"

# Refusals no retry can cure: the row is dead at once.
ADDRESS_INVALID = "address-invalid"  # the user's address is not one we send to
MESSAGE_INVALID = "message-invalid"  # the mailer could not build the e-mail
PERMANENT_REFUSALS = frozenset({ADDRESS_INVALID, MESSAGE_INVALID})


class Notice(msgspec.Struct, frozen=True, kw_only=True):
    """One e-mail to send: what it says (``kind``), to whom, and what it carries."""

    kind: str
    to: str
    name: str
    outbox_id: int
    link: str = ""
    code: str = ""


DeliverBatch = Callable[[list[Notice], Callable[[int], None]], Awaitable[list[str | None]]]
"""Sends notices (one connection for all); for each, None when accepted, or the kind of the
refusal (``smtp-550``; ``MESSAGE_INVALID`` when no e-mail could be built for it). Raises when
nothing could be sent (the connection failed). Calls ``on_accepted(outbox_id)`` (its second
argument, from any thread; it does not wait for Redis) after each message the server
accepted and before sending the next: the mail journal (``api.repositories.mail_journal``)."""

# The event recorded for each kind of row once its e-mail went out, and the payload key that
# names the change it belongs to.
_SENT = {
    outbox.TASK_PASSWORD_CHANGED_EMAIL: (events.PASSWORD_CHANGE_SENT, "changeSequence"),
    outbox.TASK_PASSWORD_RESET_EMAIL: (events.PASSWORD_CODE_SENT, "codeSequence"),
}


async def deliver_batch(*, ctx: Context, outbox_ids: Sequence[int], deliver: DeliverBatch) -> str:
    """Deliver the e-mails of ``outbox_ids`` in one transaction, each at most once.

    The rows stay locked while their e-mails are sent, so a second delivery of the same ids
    skips them (or, after a crash before the commit, sends them once more); sent rows are
    recorded and marked processed together; a refused address counts a failed attempt for
    its row alone, and past ``mail_max_attempts`` the row is dead; a row that can never be
    delivered (``PERMANENT_REFUSALS``) is dead at once. Returns a summary (what Flower shows
    as the task's result)."""
    # One span per row when tracing is on, the child of the change that added the row
    # (its stored trace context), ended after the commit (docs/DECISIONS.md, *Tracing*).
    async with (
        tracing.Deliveries(DELIVERY_SPAN) as spans,
        ctx.pool.acquire() as conn,
        conn.transaction(),
    ):
        items = await outbox.lock_batch(conn, outbox_ids)
        for item in items:
            spans.start(item.id, item.payload, _span_attributes(item))
        people = await users.get_many(conn, [item.payload["userId"] for item in items])
        to_send: list[tuple[OutboxItem, User, Notice]] = []
        skipped: list[int] = []
        sent: list[int] = []
        recorded: list[events.Notification] = []
        failures: list[tuple[int, str]] = []
        for item in items:
            try:
                notice = _notice(ctx, item, people.get(item.payload["userId"]))
            except _Undeliverable:
                failures.append((item.id, ADDRESS_INVALID))
                continue
            if notice is None:
                skipped.append(item.id)
            else:
                to_send.append((item, *notice))
        # Sent by a delivery whose commit failed: recorded as sent now, not sent again.
        journal = _Journal(ctx)
        journaled = await journal.sent_before([item.id for item, _, _ in to_send])
        fresh = [n for item, _, n in to_send if item.id not in journaled]
        try:
            fresh_outcomes = iter(await deliver(fresh, journal.on_accepted) if fresh else [])
        finally:
            await journal.confirm()
        outcomes = [
            None if item.id in journaled else next(fresh_outcomes) for item, _, _ in to_send
        ]
        accepted_at = time.time()  # the batch went over one connection: its messages' time
        for (item, user, _), outcome in zip(to_send, outcomes, strict=True):
            if outcome is None:
                sent.append(item.id)
                if item.id not in journaled:  # else counted by the delivery that sent it
                    _count_sent(item, accepted_at)
                request_id = item.payload.get("requestId")
                bound = request_ids.CURRENT.set(request_id)  # the line's request_id field too
                log.info(
                    "e-mail sent: outbox row %d (%s), request %s",
                    item.id,
                    item.task,
                    request_id or "-",
                )
                request_ids.CURRENT.reset(bound)
                event_type, key = _SENT[item.task]
                recorded.append(
                    events.Notification(
                        outbox_id=item.id,
                        event_type=event_type,
                        user_id=user.id,
                        resource_owner=user.org_id,
                        payload={key: item.event_sequence},
                    )
                )
            else:
                failures.append((item.id, outcome))
        await events.record_notifications(conn, recorded)
        spans.set(
            "identity.mail.outcome",
            {**dict.fromkeys(sent, "sent"), **dict.fromkeys(skipped, "skipped"), **dict(failures)},
        )
        await outbox.mark_many_processed(conn, [*sent, *skipped])
        dead_ids = await outbox.record_failures(
            conn,
            failures,
            max_attempts=ctx.settings.mail_max_attempts,
            permanent=PERMANENT_REFUSALS,
        )
    dead = len(dead_ids)
    # Committed: the journal's entries for these rows are of no further use.
    with contextlib.suppress(*UNAVAILABLE_ERRORS):
        await mail_journal.forget(ctx.redis, ctx.keys, sent)
    if journaled:
        log.warning(
            "%d e-mails sent before a failed commit recorded, not sent again", len(journaled)
        )
    _count_failures(items, failures, dead_ids)
    if failures:
        log.warning("%d of %d e-mails refused, %d rows now dead", len(failures), len(items), dead)
    return f"sent {len(sent)}, refused {len(failures)}, dead {dead}, skipped {len(skipped)}"


class _Journal:
    """The mail journal as one delivery uses it: read at the start, written after each
    acceptance, given up for the rest of the batch at its first failure (a silent Redis
    would otherwise cost a timeout per message). Its outage is said once per process."""

    down_since: float | None = None  # this process's outage, for saying it once

    def __init__(self, ctx: Context) -> None:
        self.ctx, self.usable = ctx, True
        self.writes = mail_journal.AcceptanceLog(ctx.blocking_redis, ctx.keys)

    async def sent_before(self, outbox_ids: list[int]) -> set[int]:
        """Rows an earlier delivery sent but could not record (its commit failed)."""
        if not outbox_ids:
            return set()
        try:
            found = await mail_journal.accepted(self.ctx.redis, self.ctx.keys, outbox_ids)
        except UNAVAILABLE_ERRORS as exc:
            # Redis out of reach: deliver anyway (late or twice beats never; a row is in the
            # journal only if an earlier delivery's commit failed, which Redis being down
            # now does not make more likely).
            self._failed(exc)
            return set()
        self._answered()
        return found

    def on_accepted(self, outbox_id: int) -> None:
        """For the mailer: called from its sending thread after each message the server
        accepted; the entry is written before the next message is sent. Neither the event
        loop nor Redis's answer is waited for (two thread hand-offs and a round trip per
        e-mail): the answers are read by ``confirm``."""
        if not self.usable:
            return
        try:
            self.writes.record(outbox_id)
        except Exception as exc:  # the e-mail is sent; only a second one is no longer ruled out
            self._failed(exc)

    async def confirm(self) -> None:
        """Once the batch is sent: Redis's answers to the entries written."""
        try:
            await asyncio.to_thread(self.writes.confirm)
        except Exception as exc:
            if self.usable:
                self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        self.usable = False
        if _Journal.down_since is None:
            _Journal.down_since = time.monotonic()
            log.warning("mail journal out of reach (%s): delivering without it", type(exc).__name__)

    def _answered(self) -> None:
        if _Journal.down_since is not None:
            _Journal.down_since = None
            log.warning("mail journal back")


# The worker's span for each e-mail it delivers (tracing on).
DELIVERY_SPAN = "deliver e-mail"


def _span_attributes(item: OutboxItem) -> dict[str, str | int]:
    """What a delivery's span says: the row, its kind, the request that caused it (never an
    address, a code or a link)."""
    attributes: dict[str, str | int] = {"identity.outbox.id": item.id, "identity.task": item.task}
    if isinstance(request_id := item.payload.get("requestId"), str):
        attributes["identity.request_id"] = request_id
    return attributes


class _Undeliverable(Exception):
    """The row's address is not one any attempt could send to."""


def _notice(ctx: Context, item: OutboxItem, user: User | None) -> tuple[User, Notice] | None:
    """What to tell whom for a row (about ``user``, None if removed since); None when there is
    no one to tell any more; ``_Undeliverable`` when the address is not one we send to."""
    if user is None or not user.email:
        return None
    to = emails.mail_address(user.email)
    if to is None:
        raise _Undeliverable()
    name = user.display_name or user.username
    if item.task == outbox.TASK_PASSWORD_RESET_EMAIL:
        code = crypto.decrypt(ctx.settings.secret_keys, item.payload["encryptedCode"])
        link = render_url_template(
            item.payload["urlTemplate"], user_id=user.id, code=code, org_id=user.org_id
        )
        notice = Notice(
            kind=PASSWORD_RESET, to=to, name=name, outbox_id=item.id, link=link, code=code
        )
    else:
        notice = Notice(kind=PASSWORD_CHANGED, to=to, name=name, outbox_id=item.id)
    return user, notice


async def outbox_health(*, ctx: Context) -> outbox.OutboxHealth:
    """The outbox's backlog, oldest unsent row, dead rows and e-mails sent (for /metrics):
    read from Postgres, so every process and every worker count is the same truth."""
    return await outbox.health(ctx.pool, sent_event_types=[t for t, _ in _SENT.values()])


# The e-mail series (api.metrics), by the kind of notice a row is for.
_KINDS = {
    outbox.TASK_PASSWORD_CHANGED_EMAIL: PASSWORD_CHANGED,
    outbox.TASK_PASSWORD_RESET_EMAIL: PASSWORD_RESET,
}


def _count_sent(item: OutboxItem, accepted_at: float) -> None:
    kind = _KINDS.get(item.task, "other")
    metrics.MAIL_SENT.labels(kind).inc()
    delay = max(0.0, accepted_at - item.created_at.timestamp())
    metrics.MAIL_DELAY.labels(kind).observe(delay)


def _count_failures(
    items: Sequence[OutboxItem], failures: Sequence[tuple[int, str]], dead_ids: Sequence[int]
) -> None:
    """Refusals (by their kind: ``smtp-550``, ``address-invalid``…) and rows now dead, once
    committed."""
    kinds = {item.id: _KINDS.get(item.task, "other") for item in items}
    for outbox_id, reason in failures:
        metrics.MAIL_FAILED.labels(kinds[outbox_id], reason).inc()
    for outbox_id in dead_ids:
        metrics.MAIL_DEAD.labels(kinds[outbox_id]).inc()
