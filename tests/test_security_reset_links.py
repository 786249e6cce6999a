"""Issue 10, item 2: reset-link poisoning.

The attack: with a stolen session of the victim, ask for the victim's reset link with a
``sendLink.urlTemplate`` pointing at the thief (``https://evil.example/?c={{.Code}}``,
``javascript:``, ``data:``, ``http://trusted@evil.example/``): the real user is e-mailed a
genuine link that hands the code over. Now: ``http(s)`` only, no user info, no placeholder in
the origin; a user acting on itself may name only the trusted origins (default: the origin of
``IDENTITY_PUBLIC_URL``); an administrator (``user.write``) also any ``https`` origin; values
are URL-encoded into the link.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest

from api.domain import notifications
from api.domain.context import Context
from api.settings import Settings
from tests.support import STRONG_PASSWORD, World, assert_error, bearer
from workers import mail
from workers.smtp_sink import MailSink

POISONED = [
    "https://evil.example/?c={{.Code}}",
    "javascript:alert(document.cookie)//{{.Code}}",
    "data:text/html,<a href=x>{{.Code}}</a>",
    "http://127.0.0.1:8080@evil.example/reset?code={{.Code}}",
    "https://{{.Code}}.evil.example/reset",
    "myapp://reset?code={{.Code}}",
    "http://evil.example/reset?code={{.Code}}",
]


async def _send_link(world: World, token: str, user_id: str, template: str) -> Any:
    return await world.client.post(
        f"/v2/users/{quote(user_id, safe='')}/password_reset",
        json={"sendLink": {"urlTemplate": template}},
        headers=bearer(token),
    )


@pytest.mark.parametrize("template", POISONED)
async def test_a_stolen_session_cannot_poison_the_users_reset_link(
    world: World, template: str
) -> None:
    org, admin = await world.admin()
    victim = await world.human(admin, org)
    _, stolen = await world.login(victim)
    response = await _send_link(world, stolen, victim.user_id, template)
    assert_error(response, 400, 3, "DOMAIN-oGh5e", "URL Template is invalid")
    queued = await world.db.fetchval(
        "SELECT count(*) FROM outbox WHERE aggregate_id = $1 AND task LIKE '%reset%'",
        victim.user_id,
    )
    assert queued == 0


async def test_a_user_may_use_the_services_own_origin(world: World, settings: Settings) -> None:
    org, admin = await world.admin()
    user = await world.human(admin, org)
    _, session = await world.login(user)
    own = settings.public_url.rstrip("/") + "/ui/password/reset?code={{.Code}}&u={{.UserID}}"
    response = await _send_link(world, session, user.user_id, own)
    assert response.status_code == 200, response.text
    # An https origin is an administrator's choice, not the user's.
    elsewhere = await _send_link(world, session, user.user_id, "https://app.example.com/{{.Code}}")
    assert_error(elsewhere, 400, 3, "DOMAIN-oGh5e", "URL Template is invalid")


async def test_configured_origins_are_trusted_for_users(
    make_settings: Callable[..., Settings],
) -> None:
    from tests.support import world_with

    settings = make_settings(reset_link_origins="https://login.example.com, http://localhost:3000")
    async with world_with(settings) as world:
        org, admin = await world.admin()
        user = await world.human(admin, org)
        _, session = await world.login(user)
        for template in (
            "https://login.example.com/reset?code={{.Code}}",
            "http://localhost:3000/reset/{{.UserID}}/{{.Code}}",
        ):
            ok = await _send_link(world, session, user.user_id, template)
            assert ok.status_code == 200, ok.text
        # The public URL's origin is no longer implied once origins are listed.
        refused = await _send_link(
            world, session, user.user_id, settings.public_url + "/ui/password/reset?c={{.Code}}"
        )
        assert_error(refused, 400, 3, "DOMAIN-oGh5e", "URL Template is invalid")


async def test_an_administrator_may_use_any_https_origin_but_no_other_scheme(world: World) -> None:
    org, admin = await world.admin()
    user = await world.human(admin, org)
    ok = await _send_link(world, admin, user.user_id, "https://app.example.com/r?c={{.Code}}")
    assert ok.status_code == 200, ok.text
    for template in POISONED[1:]:
        if template.startswith("https://app"):
            continue
        refused = await _send_link(world, admin, user.user_id, template)
        if template == "http://evil.example/reset?code={{.Code}}":
            # plain http is allowed only for the trusted origins
            assert_error(refused, 400, 3, "DOMAIN-oGh5e", "URL Template is invalid")
        else:
            assert_error(refused, 400, 3, "DOMAIN-oGh5e", "URL Template is invalid")


async def test_substituted_values_are_url_encoded(
    world: World, mail_ctx: Context, sink: MailSink
) -> None:
    org, admin = await world.admin()
    # A caller-chosen user id with URL syntax in it must not add parameters to the link.
    user_id = f"u&code=EVIL#{uuid.uuid4().hex[:6]}"
    created = await world.client.post(
        "/v2/users/human",
        json={
            "userId": user_id,
            "username": f"enc-{uuid.uuid4().hex[:6]}",
            "organization": {"orgId": org},
            "profile": {"givenName": "En", "familyName": "Coded"},
            "email": {"email": f"enc-{uuid.uuid4().hex[:6]}@example.com"},
            "password": {"password": STRONG_PASSWORD},
        },
        headers=bearer(admin),
    )
    assert created.status_code == 201, created.text
    template = "https://app.example.com/reset?user={{.UserID}}&code={{.Code}}"
    response = await _send_link(world, admin, user_id, template)
    assert response.status_code == 200, response.text
    ids = [
        r["id"]
        for r in await world.db.fetch(
            "SELECT id FROM outbox WHERE aggregate_id = $1 AND task LIKE '%reset%'", user_id
        )
    ]
    result = await notifications.deliver_batch(
        ctx=mail_ctx, outbox_ids=ids, deliver=mail.deliverer(mail_ctx.settings)
    )
    assert result.startswith("sent 1"), result
    body = sink.messages()[-1].get_body(preferencelist=("plain",))
    assert body is not None
    links = re.findall(r"https://app\.example\.com/reset\?\S+", body.get_content())
    assert links, body.get_content()
    expected_user = "u%26code%3DEVIL%23" + user_id.rsplit("#", 1)[1]
    assert links[0].startswith(f"https://app.example.com/reset?user={expected_user}&code="), links
    assert re.fullmatch(r".*&code=[A-Z0-9]{6}", links[0]), links
