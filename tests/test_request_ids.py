"""One request id from the HTTP request to the log line of the task that sends its e-mail
(issue 12): taken from ``X-Request-Id`` (or made), answered in ``X-Request-Id``, written in
the API's access line, stored in the outbox row, named in the worker's line for the e-mail.
"""

from __future__ import annotations

import logging
import re

import pytest
from litestar.testing import AsyncTestClient

from api import request_ids
from api.domain import notifications
from api.domain.context import Context
from api.main import compose
from api.settings import Settings
from tests.support import STRONG_PASSWORD, World, bearer
from workers import mail
from workers.smtp_sink import MailSink


async def test_a_change_and_its_email_share_the_request_id(
    world: World,
    settings: Settings,
    mail_ctx: Context,
    sink: MailSink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    org_id, admin = await world.admin()
    user = await world.human(admin, org_id)
    caplog.set_level(logging.INFO, logger="identity")
    # The whole application (api.main): the request id is set around both transports.
    async with AsyncTestClient(app=compose(settings)) as client:  # type: ignore[arg-type]
        answer = await client.post(
            f"/v2/users/{user.user_id}/password",
            json={"newPassword": {"password": STRONG_PASSWORD + "-rid"}},
            headers={**bearer(admin), "X-Request-Id": "req-7f3a.change"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-request-id"] == "req-7f3a.change"

        # Without one, or with one that could forge a line, the service makes its own.
        for given in (None, "bad id;X-Evil=1", "x" * 65):
            headers = {} if given is None else {"X-Request-Id": given}
            health = await client.get("/healthz", headers=headers)
            made = health.headers["x-request-id"]
            assert re.fullmatch(r"[0-9a-f]{32}", made), made

    access = [r.getMessage() for r in caplog.records if r.name == "identity.access"]
    assert any(
        line.startswith(f"POST /v2/users/{user.user_id}/password 200 ")
        and line.endswith("request req-7f3a.change")
        for line in access
    ), access

    row = await world.db.fetchrow(
        "SELECT id, payload FROM outbox WHERE aggregate_id = $1 ORDER BY id DESC LIMIT 1",
        user.user_id,
    )
    assert row["payload"]["requestId"] == "req-7f3a.change"
    caplog.clear()
    result = await notifications.deliver_batch(
        ctx=mail_ctx, outbox_ids=[row["id"]], deliver=mail.deliverer(mail_ctx.settings)
    )
    assert result.startswith("sent 1"), result
    worker_lines = [r.getMessage() for r in caplog.records if r.name.startswith("identity")]
    assert any(
        f"outbox row {row['id']}" in line and line.endswith("request req-7f3a.change")
        for line in worker_lines
    ), worker_lines
    assert request_ids.CURRENT.get() is None  # nothing leaks out of the request
