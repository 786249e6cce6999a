"""End to end with a real Celery worker (subprocess), a real broker and a real SMTP server.

The API is the in-process app: it commits its outbox rows and answers. The relay process
(``identity relay``), woken by Postgres at the commit, publishes them; no beat runs here, so
every e-mail below went through that relay.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from api.domain import policies
from api.http.app import create_app
from api.settings import Settings
from tests.support import STRONG_PASSWORD, World, bearer
from tests.workers_support import (
    Stack,
    app_client,
    await_until,
    event_types,
    notification_events,
    outbox_rows,
    stack_for,
    wait_processed,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack_for(base_settings, tmp_path_factory.mktemp("workers-e2e")) as s:
        s.start_worker()
        s.start_relay()
        yield s


@pytest.fixture
async def wworld(stack: Stack, make_settings: Callable[..., Settings]) -> AsyncIterator[World]:
    settings = make_settings(broker_url=stack.broker.url, smtp_url=stack.sink.url)
    async with app_client(create_app(settings)) as client:
        w = World(client, settings)
        await w.open()
        try:
            yield w
        finally:
            await w.close()


def parts(message: Any) -> dict[str, str]:
    return {
        part.get_content_type(): part.get_content()
        for part in message.walk()
        if not part.is_multipart()
    }


async def test_change_sends_one_email_and_revokes_other_sessions(
    stack: Stack, wworld: World
) -> None:
    org_id, admin = await wworld.admin()
    alice = await wworld.human(admin, org_id)
    changing_id, changing = await wworld.login(alice)
    other_id, other = await wworld.login(alice)
    for token in (changing, other):  # both sessions work, and are cached
        assert (
            await wworld.client.get(f"/v2/users/{alice.user_id}", headers=bearer(token))
        ).status_code == 200

    response = await wworld.set_password(
        changing,
        alice.user_id,
        {"newPassword": {"password": "N3w!Password"}, "currentPassword": STRONG_PASSWORD},
    )
    assert response.status_code == 200, response.text

    [mail] = await stack.wait_for_mails(alice.email, 1)
    assert mail["To"] == alice.email
    assert "password was changed" in mail["Subject"]
    body = parts(mail)
    assert "password of your account was changed" in body["text/plain"]
    assert "password of your account was changed" in body["text/html"]

    async def other_rejected() -> bool:
        got = await wworld.client.get(f"/v2/users/{alice.user_id}", headers=bearer(other))
        return got.status_code == 401

    await await_until(other_rejected, 20, "the other session to be revoked")
    still = await wworld.client.get(f"/v2/users/{alice.user_id}", headers=bearer(changing))
    assert still.status_code == 200, still.text

    await wait_processed(wworld.db, [alice.user_id], 20)
    assert len(stack.mails_to(alice.email)) == 1
    rows = await outbox_rows(wworld.db, alice.user_id)
    assert all(r["published_at"] is not None for r in rows)  # by the relay
    assert "user.human.password.change.sent" in await notification_events(wworld.db, alice.user_id)
    # A notification is not a state change: the user's sequence stays that of the change.
    assert (await event_types(wworld.db, alice.user_id))[-1] == "user.human.password.changed"
    assert (await event_types(wworld.db, other_id))[-1] == "session.terminated"
    assert "session.terminated" not in await event_types(wworld.db, changing_id)


async def test_reset_link_carries_a_code_that_works(stack: Stack, wworld: World) -> None:
    org_id, admin = await wworld.admin()
    bob = await wworld.human(admin, org_id)
    template = "https://app.example.com/reset?user={{.UserID}}&code={{.Code}}&org={{.OrgID}}"
    response = await wworld.client.post(
        f"/v2/users/{bob.user_id}/password_reset",
        json={"sendLink": {"notificationType": "NOTIFICATION_TYPE_Email", "urlTemplate": template}},
        headers=bearer(admin),
    )
    assert response.status_code == 200, response.text
    assert "verificationCode" not in response.json()

    [mail] = await stack.wait_for_mails(bob.email, 1)
    assert "reset" in mail["Subject"].lower()
    text = parts(mail)["text/plain"]
    assert "text/html" in parts(mail)
    link = re.search(r"https://app\.example\.com/reset\?\S+", text)
    assert link, text
    query = parse_qs(urlsplit(link.group(0)).query)
    assert query["user"] == [bob.user_id]
    assert query["org"] == [org_id]
    [code] = query["code"]
    assert re.fullmatch(r"[A-Z0-9]{6}", code)

    changed = await wworld.set_password(
        admin,
        bob.user_id,
        {"newPassword": {"password": "Res3t!Password"}, "verificationCode": code},
    )
    assert changed.status_code == 200, changed.text
    await wworld.login(bob.username, "Res3t!Password")
    assert "user.human.password.code.sent" in await notification_events(wworld.db, bob.user_id)
    # The change itself is notified too: the reset e-mail and the "changed" e-mail.
    mails = await stack.wait_for_mails(bob.email, 2)
    await wait_processed(wworld.db, [bob.user_id], 20)
    assert sorted("changed" in m["Subject"] for m in mails) == [False, True]


async def test_no_email_when_the_policy_says_so(stack: Stack, wworld: World) -> None:
    org_id, admin = await wworld.admin()
    await policies.set_policy(
        ctx=wworld.ctx, org_id=org_id, updates={"notify_password_change": False}
    )
    carol = await wworld.human(admin, org_id)
    _, other = await wworld.login(carol)
    response = await wworld.set_password(
        admin, carol.user_id, {"newPassword": {"password": "N3w!Password"}}
    )
    assert response.status_code == 200, response.text

    # The change ended the other session itself; no outbox row, so no e-mail, ever.
    gone = await wworld.client.get(f"/v2/users/{carol.user_id}", headers=bearer(other))
    assert gone.status_code == 401
    assert await outbox_rows(wworld.db, carol.user_id) == []
    await asyncio.sleep(2)  # a worker and the relay are running: still nothing is sent
    assert stack.mails_to(carol.email) == []


async def test_creating_a_user_sends_no_email(stack: Stack, wworld: World) -> None:
    org_id, admin = await wworld.admin()
    dave = await wworld.human(admin, org_id)
    assert await outbox_rows(wworld.db, dave.user_id) == []
    # A change afterwards sends its one e-mail: the only one dave ever gets.
    response = await wworld.set_password(
        admin, dave.user_id, {"newPassword": {"password": "N3w!Password"}}
    )
    assert response.status_code == 200, response.text
    await stack.wait_for_mails(dave.email, 1)
    await wait_processed(wworld.db, [dave.user_id], 20)
    [mail] = stack.mails_to(dave.email)
    assert "password was changed" in mail["Subject"]
