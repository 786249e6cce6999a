"""E-mail in batches, with the real SMTP code and a real SMTP server that refuses one
mailbox: the rest of the batch is delivered, the refused row counts its attempts and is dead
after the retry budget, and a dead row is never published again."""

from __future__ import annotations

import contextlib
import email.generator
import email.policy
import io
import socket
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from api.domain import notifications
from api.domain.context import Context, context
from api.errors import UNAVAILABLE_ERRORS
from api.repositories import outbox
from api.settings import Settings
from tests.support import REFUSED_ADDRESS, World
from workers import mail
from workers.smtp_sink import MailSink, _StoreHandler

REFUSED = REFUSED_ADDRESS  # the sink fixture refuses it (550)


@pytest.fixture
async def ctx(make_settings: Callable[..., Settings], sink: MailSink) -> AsyncIterator[Context]:
    async with context(make_settings(smtp_url=sink.url, mail_max_attempts=2)) as opened:
        yield opened


async def test_a_refused_address_ends_dead_and_the_rest_is_delivered(
    world: World, ctx: Context, sink: MailSink
) -> None:
    org_id, admin = await world.admin()
    people = [
        await world.human(admin, org_id, email=email)
        for email in ("first@example.com", REFUSED, "last@example.com")
    ]
    for person in people:  # no relay runs here: the rows wait
        response = await world.set_password(
            admin, person.user_id, {"newPassword": {"password": "N3w!Passw0rd-batch"}}
        )
        assert response.status_code == 200, response.text
    rows = {
        r["aggregate_id"]: r["id"]
        for r in await world.db.fetch(
            "SELECT id, aggregate_id FROM outbox WHERE aggregate_id = ANY($1::text[])",
            [p.user_id for p in people],
        )
    }
    ids = [rows[p.user_id] for p in people]
    deliver = mail.deliverer(ctx.settings)

    first = await notifications.deliver_batch(ctx=ctx, outbox_ids=ids, deliver=deliver)

    assert first == "sent 2, refused 1, dead 0, skipped 0"
    assert sorted(m["To"] for m in sink.messages()) == ["first@example.com", "last@example.com"]
    assert all(m["Date"] for m in sink.messages())  # RFC 5322: every message has a Date
    refused = await world.db.fetchrow("SELECT * FROM outbox WHERE id = $1", ids[1])
    assert (refused["attempts"], refused["last_error"]) == (1, "smtp-550")
    assert refused["processed_at"] is None and refused["dead_at"] is None

    # Delivered again (the relay re-publishes unprocessed rows): the sent ones are done,
    # the refused one fails its last allowed attempt and is dead.
    second = await notifications.deliver_batch(ctx=ctx, outbox_ids=ids, deliver=deliver)

    assert second == "sent 0, refused 1, dead 1, skipped 0"
    assert len(sink.messages()) == 2
    dead = await world.db.fetchrow("SELECT * FROM outbox WHERE id = $1", ids[1])
    assert dead["attempts"] == 2 and dead["dead_at"] is not None
    sent_events = await world.db.fetchval(
        "SELECT count(*) FROM events WHERE aggregate_id = ANY($1::text[])",
        [f"notification-{i}" for i in ids],
    )
    assert sent_events == 2

    # Never published again, however long it waits.
    async with ctx.pool.acquire() as conn, conn.transaction():
        due = await outbox.lock_due_for_relay(conn, min_age_s=0, redeliver_after_s=0, limit=100_000)
    assert ids[1] not in {row.id for row in due}


async def test_a_batch_whose_commit_fails_after_sending_is_not_sent_again(
    world: World, ctx: Context, sink: MailSink
) -> None:
    """Postgres drops the delivery's connection after the SMTP server accepted the batch
    (a restart, ``pg_terminate_backend``): the rows are unprocessed, yet the next delivery
    finds them in the mail journal, records them as sent and sends nothing twice."""
    org_id, admin = await world.admin()
    people = [await world.human(admin, org_id) for _ in range(3)]
    for person in people:
        response = await world.set_password(
            admin, person.user_id, {"newPassword": {"password": "N3w!Passw0rd-journal"}}
        )
        assert response.status_code == 200, response.text
    ids = [
        r["id"]
        for r in await world.db.fetch(
            "SELECT id FROM outbox WHERE aggregate_id = ANY($1::text[]) ORDER BY id",
            [p.user_id for p in people],
        )
    ]
    real = mail.deliverer(ctx.settings)

    async def deliver_then_lose_the_connection(
        notices: list[notifications.Notice], on_accepted: Callable[[int], None]
    ) -> list[str | None]:
        outcomes = await real(notices, on_accepted)
        # The delivery's transaction is the one holding these rows' locks.
        await world.db.execute(
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_class c "
            "ON c.oid = l.relation WHERE c.relname = 'outbox' AND l.mode = 'RowShareLock' "
            "AND l.pid <> pg_backend_pid()"
        )
        return outcomes

    with pytest.raises(UNAVAILABLE_ERRORS):
        await notifications.deliver_batch(
            ctx=ctx, outbox_ids=ids, deliver=deliver_then_lose_the_connection
        )
    mine = {p.email for p in people}
    assert sorted(m["To"] for m in sink.messages() if m["To"] in mine) == sorted(mine)
    unprocessed = await world.db.fetchval(
        "SELECT count(*) FROM outbox WHERE id = ANY($1::bigint[]) AND processed_at IS NULL", ids
    )
    assert unprocessed == 3

    again = await notifications.deliver_batch(ctx=ctx, outbox_ids=ids, deliver=real)

    assert again == "sent 3, refused 0, dead 0, skipped 0"
    assert sorted(m["To"] for m in sink.messages() if m["To"] in mine) == sorted(mine)
    processed = await world.db.fetchval(
        "SELECT count(*) FROM outbox WHERE id = ANY($1::bigint[]) AND processed_at IS NOT NULL",
        ids,
    )
    assert processed == 3
    assert await ctx.redis.exists(*(ctx.keys.mailed(i) for i in ids)) == 0  # forgotten


def test_every_sending_of_a_row_has_the_same_message_id(
    make_settings: Callable[..., Settings],
) -> None:
    """The copy a worker killed mid-send can leave (the one window the journal cannot
    close) is the same message to mail systems that collapse duplicates by Message-ID; no
    two rows, and no two deployments, share one."""
    settings = make_settings(mail_from="Accounts <accounts@example.org>")
    other = make_settings(secret_key="another-deployment-key-0123456789abcdef")

    def message_id(s: Settings, outbox_id: int) -> str:
        built = mail.password_changed_message(
            settings=s, to="someone@example.com", name="Someone", outbox_id=outbox_id
        )
        return str(built["Message-ID"])

    first = message_id(settings, 41)
    assert message_id(settings, 41) == first
    assert first.startswith("<outbox-41.") and first.endswith("@example.org>")
    assert message_id(settings, 42) != first
    assert message_id(other, 41) != first


class _CountingProxy:
    """A TCP relay to ``target`` that counts the reads of what the client sent: one read per
    write of the client, on loopback, unless the client writes again before the server
    side answered (which is the point of pipelining)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.client_reads = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        upstream = socket.create_connection(self.target)
        threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()
        self._pump(client, upstream, True)

    def _pump(self, source: socket.socket, sink: socket.socket, count: bool) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                if count:
                    self.client_reads += 1
                sink.sendall(chunk)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._listener.close()


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_batch_takes_one_round_trip_per_message_where_the_server_pipelines(
    make_settings: Callable[..., Settings], tmp_path: Path, pipelining: bool
) -> None:
    """RFC 2920: with a server that says PIPELINING, a message's MAIL, RCPT and DATA go out
    together after the previous message's content; a refused recipient in the middle still
    leaves the rest delivered, with the same outcomes as one command at a time."""
    sink = MailSink(tmp_path / "mail", refuse=frozenset({REFUSED}), pipelining=pipelining)
    sink.start()
    proxy = _CountingProxy((sink.host, sink.port))
    try:
        settings = make_settings(smtp_url=f"smtp://127.0.0.1:{proxy.port}")
        addresses = [f"p{i}@example.com" for i in range(3)] + [REFUSED]
        addresses += [f"q{i}@example.com" for i in range(4)]
        messages = [
            mail.password_changed_message(settings=settings, to=to, name="Someone", outbox_id=i)
            for i, to in enumerate(addresses)
        ]
        accepted: list[int] = []

        outcomes = mail.send_batch(settings, messages, accepted.append)

        assert outcomes == [None, None, None, "smtp-550", None, None, None, None]
        assert accepted == [0, 1, 2, 4, 5, 6, 7]
        delivered = sorted(m["To"] for m in sink.messages())
        assert delivered == sorted(a for a in addresses if a != REFUSED)
        # EHLO, then one write per message (with the refused one's RSET), the last
        # content and QUIT; four per message without pipelining.
        if pipelining:
            assert proxy.client_reads <= len(messages) + 4
        else:
            assert proxy.client_reads >= 4 * len(messages)
    finally:
        proxy.close()
        sink.stop()


@pytest.mark.parametrize(
    ("name", "to"),
    [
        ("Someone", "someone@example.com"),
        (
            "Jürgen Größe-Überlänge " * 6,
            "a.very.long.local.part.of.an.address." * 3 + "@example.com",
        ),
        ("tab\tand  spaces ", "x@example.com"),
    ],
)
def test_an_e_mail_is_written_byte_for_byte_as_compat32_writes_it(
    make_settings: Callable[..., Settings], name: str, to: str
) -> None:
    """The mailer's header folding takes a short cut for headers that fit on their line: the
    messages it writes are the ones compat32 writes, folded headers and encoded bodies
    included."""
    settings = make_settings(mail_from="Accounts Team <accounts@example.org>")
    for message in (
        mail.password_changed_message(settings=settings, to=to, name=name, outbox_id=7),
        mail.password_reset_message(
            settings=settings,
            to=to,
            name=name,
            link="https://accounts.example.org/reset?code=" + "C" * 120,
            code="ABC123",
            outbox_id=8,
        ),
    ):
        message.set_boundary("boundary")
        ours, reference = io.BytesIO(), io.BytesIO()
        email.generator.BytesGenerator(ours).flatten(message, linesep="\r\n")
        email.generator.BytesGenerator(reference, policy=email.policy.compat32).flatten(
            message, linesep="\r\n"
        )
        assert message.policy is not email.policy.compat32
        assert ours.getvalue() == reference.getvalue()


def test_a_recipient_the_server_will_forward_is_accepted_as_smtplib_takes_it(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """RFC 5321's 251 (user not local; will forward) to RCPT is a success, pipelined too."""

    class Forwarding(_StoreHandler):
        async def handle_RCPT(
            self, server: Any, session: Any, envelope: Any, address: str, options: Any
        ) -> str:
            envelope.rcpt_tos.append(address)
            return "251 2.1.5 User not local; will forward"

    directory = tmp_path / "forwarded"
    directory.mkdir()
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    controller = Controller(Forwarding(directory), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        settings = make_settings(smtp_url=f"smtp://127.0.0.1:{port}")
        messages = [
            mail.password_changed_message(settings=settings, to=to, name="Someone", outbox_id=i)
            for i, to in enumerate(["a@example.com", "b@example.com"])
        ]

        assert mail.send_batch(settings, messages) == [None, None]
        assert len(list(directory.glob("*.eml"))) == 2
    finally:
        controller.stop()
