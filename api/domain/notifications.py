"""The side effects of a change, carried out from its outbox rows, each at most once.

``process`` is the protocol every task follows: take the outbox row's lock, return at once
if the row is already processed (a second delivery), do the work, record it, mark the row
processed, all in one transaction; steps that must follow the commit run after it. A mail is
sent while the row is locked, so two deliveries racing each other cannot both send; a worker
killed before the commit leaves the row unprocessed, so the next delivery sends it again.

Sending is handed in (``Deliver``): the domain says what to tell whom, the worker's mailer
composes and sends it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from api import crypto
from api.db import Connection
from api.domain.context import Context
from api.domain.reset_links import render_url_template
from api.errors import UserNotFound
from api.repositories import events, outbox, users
from api.repositories.outbox import OutboxItem
from api.repositories.users import User

log = logging.getLogger("identity.notifications")

PASSWORD_CHANGED = "password_changed"
PASSWORD_RESET = "password_reset"


class Notice(msgspec.Struct, frozen=True, kw_only=True):
    """One e-mail to send: what it says (``kind``), to whom, and what it carries."""

    kind: str
    to: str
    name: str
    outbox_id: int
    link: str = ""
    code: str = ""


Deliver = Callable[[Notice], Awaitable[None]]
AfterCommit = list[Callable[[], Awaitable[object]]]
# A handler does the work inside the row's transaction and may add steps to run after commit.
Handler = Callable[[Context, Connection, OutboxItem, AfterCommit], Awaitable[str]]


async def process(*, ctx: Context, outbox_id: int, handler: Handler) -> str:
    """Carry out one outbox row with ``handler``, once; say what happened."""
    after_commit: AfterCommit = []
    async with ctx.pool.acquire() as conn, conn.transaction():
        item = await outbox.lock_for_processing(conn, outbox_id)
        if item is None:
            return "missing"
        if item.processed_at is not None:
            return "duplicate"
        outcome = await handler(ctx, conn, item, after_commit)
        await outbox.mark_processed(conn, outbox_id)
    for step in after_commit:
        try:
            await step()
        except Exception as exc:  # the committed work stands; this step was a safeguard
            log.warning("after-commit step for outbox %s failed: %s", outbox_id, type(exc).__name__)
    return outcome


async def _notify_user(
    conn: Connection,
    item: OutboxItem,
    deliver: Deliver,
    *,
    notice: Callable[[User], Notice],
    sent_event: str,
    sent_payload: dict[str, Any],
) -> str:
    """Send one e-mail to the user of an outbox row and record it as sent."""
    try:
        user = await users.get(conn, item.payload["userId"])
    except UserNotFound:
        return "skipped: user removed"
    if not user.email:
        return "skipped: no e-mail address"
    await deliver(notice(user))
    await events.record_notification(
        conn,
        outbox_id=item.id,
        event_type=sent_event,
        user_id=user.id,
        resource_owner=user.org_id,
        payload=sent_payload,
    )
    return "sent"


def _name(user: User) -> str:
    return user.display_name or user.username


def password_changed_email(deliver: Deliver) -> Handler:
    async def handle(ctx: Context, conn: Connection, item: OutboxItem, _: AfterCommit) -> str:
        return await _notify_user(
            conn,
            item,
            deliver,
            notice=lambda user: Notice(
                kind=PASSWORD_CHANGED, to=user.email, name=_name(user), outbox_id=item.id
            ),
            sent_event=events.PASSWORD_CHANGE_SENT,
            sent_payload={"changeSequence": item.event_sequence},
        )

    return handle


def password_reset_email(deliver: Deliver) -> Handler:
    async def handle(ctx: Context, conn: Connection, item: OutboxItem, _: AfterCommit) -> str:
        def notice(user: User) -> Notice:
            code = crypto.decrypt(ctx.settings.secret_key, item.payload["encryptedCode"])
            link = render_url_template(
                item.payload["urlTemplate"], user_id=user.id, code=code, org_id=user.org_id
            )
            return Notice(
                kind=PASSWORD_RESET,
                to=user.email,
                name=_name(user),
                outbox_id=item.id,
                link=link,
                code=code,
            )

        return await _notify_user(
            conn,
            item,
            deliver,
            notice=notice,
            sent_event=events.PASSWORD_CODE_SENT,
            sent_payload={"codeSequence": item.event_sequence},
        )

    return handle
