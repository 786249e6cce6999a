"""The outbox in /metrics (issue 12): rows waiting, the oldest one's age, dead rows and the
e-mails sent, read from Postgres so every process reports the same truth, whichever worker
sent what."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable

import pytest

from api.domain import notifications
from api.domain.context import Context, context
from api.http.app import refresh_outbox_metrics
from api.settings import Settings
from tests.support import REFUSED_ADDRESS, STRONG_PASSWORD, World
from workers import mail
from workers.smtp_sink import MailSink

REFUSED = REFUSED_ADDRESS  # the sink fixture refuses it (550)


@pytest.fixture
async def mail_ctx(
    make_settings: Callable[..., Settings], sink: MailSink
) -> AsyncIterator[Context]:
    async with context(make_settings(smtp_url=sink.url, mail_max_attempts=1)) as opened:
        yield opened


def _gauge(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


async def test_metrics_show_the_backlog_the_dead_and_the_emails_sent(
    world: World, mail_ctx: Context, sink: MailSink
) -> None:
    org_id, admin = await world.admin()
    people = [
        await world.human(admin, org_id, email=email)
        for email in ("sent-a@example.com", "sent-b@example.com", REFUSED)
    ]
    for person in people:  # no relay runs here: the rows wait
        answer = await world.set_password(
            admin, person.user_id, {"newPassword": {"password": STRONG_PASSWORD + "-m"}}
        )
        assert answer.status_code == 200, answer.text

    await refresh_outbox_metrics(world.ctx)
    before = (await world.client.get("/metrics")).text
    assert _gauge(before, "identity_outbox_backlog") >= 3
    assert _gauge(before, "identity_outbox_oldest_unsent_age_seconds") > 0
    sent_before = _gauge(before, "identity_emails_sent")
    dead_before = _gauge(before, "identity_outbox_dead_rows")

    ids = [
        r["id"]
        for r in await world.db.fetch(
            "SELECT id FROM outbox WHERE aggregate_id = ANY($1::text[])",
            [p.user_id for p in people],
        )
    ]
    result = await notifications.deliver_batch(
        ctx=mail_ctx, outbox_ids=ids, deliver=mail.deliverer(mail_ctx.settings)
    )
    assert result == "sent 2, refused 1, dead 1, skipped 0"

    await refresh_outbox_metrics(world.ctx)
    after = (await world.client.get("/metrics")).text
    assert _gauge(after, "identity_emails_sent") == sent_before + 2
    assert _gauge(after, "identity_outbox_dead_rows") == dead_before + 1
    waiting = await world.db.fetchval(
        "SELECT count(*) FROM outbox WHERE processed_at IS NULL AND dead_at IS NULL"
    )
    assert _gauge(after, "identity_outbox_backlog") == waiting
