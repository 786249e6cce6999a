"""Hostile input, performed through HTTP (REST and Connect) and through the mailer.

Deeply nested JSON (security review item 7): thousands of levels in a few KB, on every route
that takes a body and every RPC method over Connect JSON, is the contract's 400 (code 3) or
``invalid_argument``, never a 500, and nothing is logged at ERROR or with a traceback.

E-mail addresses (item 8): an address that is not one mailbox (``a@x, evil@y``, a CR/LF, a
space, a display name, no ``@``) is refused at creation, over REST and RPC alike, with
ZITADEL's ``EMAIL-599BI``; a good one is stored normalized. A row stored before the rule (its
address written in SQL here) is dead at its first delivery, with a plain ``last_error``, while
the rest of its batch is delivered.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from api.domain import notifications
from api.domain.context import Context, context
from api.domain.notifications import Notice
from api.main import compose
from api.repositories import outbox
from api.rpc.gen.zitadel.session.v2 import session_service_pb2
from api.rpc.gen.zitadel.user.v2 import user_service_pb2
from api.settings import Settings
from tests.support import STRONG_PASSWORD, World, assert_error, bearer
from workers import mail
from workers.smtp_sink import MailSink

TOO_DEEP = "the body is nested too deeply"


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing at ERROR or above, and no record carrying a traceback."""
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [(r.name, r.levelname, r.getMessage()[:200]) for r in bad]


# --- deeply nested JSON -------------------------------------------------------------------

# Each a few KB at most (the body limit is 64 KB): unterminated, balanced, objects and arrays.
NESTED = {
    "objects-open-2000": b'{"a":' * 2000,
    "arrays-open-2000": b"[" * 2000,
    "arrays-open-4k": b"[" * 4096,
    "objects-2000": b'{"a":' * 2000 + b"1" + b"}" * 2000,
    "arrays-2000": b"[" * 2000 + b"]" * 2000,
    "arrays-in-a-field-2000": b'{"checks":' + b"[" * 2000 + b"]" * 2000 + b"}",
    "objects-70": b'{"a":' * 70 + b"1" + b"}" * 70,
}

# Every REST route that decodes a body: (path with {user}, request message, needs a token).
BODY_ROUTES = {
    "set-password": ("/v2/users/{user}/password", "SetPasswordRequest", True),
    "password-reset": ("/v2/users/{user}/password_reset", "PasswordResetRequest", True),
    "add-human-user": ("/v2/users/human", "AddHumanUserRequest", True),
    "create-session": ("/v2/sessions", "CreateSessionRequest", False),
}


@pytest.mark.parametrize("body_name", list(NESTED))
@pytest.mark.parametrize("route", list(BODY_ROUTES))
async def test_deeply_nested_json_is_a_400_on_every_rest_route(
    world: World, caplog: pytest.LogCaptureFixture, route: str, body_name: str
) -> None:
    org_id, token = await world.admin()
    user = await world.human(token, org_id)
    path, proto, protected = BODY_ROUTES[route]
    headers = {"Content-Type": "application/json", **(bearer(token) if protected else {})}
    caplog.set_level(logging.DEBUG)

    response = await world.client.post(
        path.format(user=user.user_id), content=NESTED[body_name], headers=headers
    )

    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == 3 and not body.get("details"), body
    # Objects nested past the walk's limit are "nested too deeply" however far the JSON
    # parser goes; the other shapes are that here (the parser stops at Python's recursion
    # limit), or, with an interpreter whose parser goes deeper, truncated or not an object.
    if body_name in ("objects-2000", "objects-70"):
        assert_error(response, 400, 3, None, f"invalid {proto}: {TOO_DEEP}")
    else:
        assert body["message"].startswith(f"invalid {proto}: "), body
    assert "Traceback" not in response.text and "RecursionError" not in response.text
    no_errors_logged(caplog)


@pytest.fixture
async def rpc(settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    """The whole ASGI app (REST and the RPC services), in process."""
    async with AsyncTestClient(app=compose(settings)) as client:
        yield client


def _rpc_paths() -> list[str]:
    services = [
        user_service_pb2.DESCRIPTOR.services_by_name["UserService"],
        session_service_pb2.DESCRIPTOR.services_by_name["SessionService"],
    ]
    return [f"/{s.full_name}/{m.name}" for s in services for m in s.methods]


RPC_PATHS = _rpc_paths()


def test_the_rpc_paths_cover_the_services() -> None:
    assert "/zitadel.session.v2.SessionService/CreateSession" in RPC_PATHS
    assert "/zitadel.user.v2.UserService/AddHumanUser" in RPC_PATHS
    assert len(RPC_PATHS) >= 10


@pytest.mark.parametrize("body_name", ["objects-open-2000", "arrays-open-4k", "objects-2000"])
@pytest.mark.parametrize("path", RPC_PATHS)
async def test_deeply_nested_connect_json_is_invalid_argument(
    world: World,
    rpc: AsyncTestClient[Any],
    caplog: pytest.LogCaptureFixture,
    path: str,
    body_name: str,
) -> None:
    _, token = await world.admin()
    caplog.set_level(logging.DEBUG)

    response = await rpc.post(
        path,
        content=NESTED[body_name],
        headers={"Content-Type": "application/json", **bearer(token)},
    )

    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_argument", response.text
    assert "Traceback" not in response.text
    no_errors_logged(caplog)


async def test_deeply_nested_grpc_web_json_is_invalid_argument(
    rpc: AsyncTestClient[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    data = NESTED["objects-open-2000"]
    response = await rpc.post(
        "/zitadel.session.v2.SessionService/CreateSession",
        content=b"\x00" + struct.pack(">I", len(data)) + data,
        headers={"Content-Type": "application/grpc-web+json"},
    )
    assert response.status_code == 200  # gRPC-Web: the status is in the trailers
    assert b"grpc-status: 3\r\n" in response.content, response.content[-300:]
    no_errors_logged(caplog)


async def test_ordinary_bodies_still_log_in_over_rest_and_connect(
    world: World, rpc: AsyncTestClient[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The legitimate use: a body of the contract's own depth, with an unknown field holding a
    little nesting (ignored, as ZITADEL ignores unknown fields)."""
    org_id, token = await world.admin()
    user = await world.human(token, org_id)
    caplog.set_level(logging.DEBUG)
    body = {
        "checks": {"user": {"loginName": user.username}, "password": {"password": user.password}},
        "metadata": {"a": {"b": {"c": [[1, 2], {"d": None}]}}},
    }

    rest = await world.client.post("/v2/sessions", json=body)
    connect = await rpc.post("/zitadel.session.v2.SessionService/CreateSession", json=body)

    assert rest.status_code == 201, rest.text
    assert rest.json()["sessionToken"]
    assert connect.status_code == 200, connect.text
    assert connect.json()["sessionToken"]
    no_errors_logged(caplog)


# --- e-mail addresses at creation ---------------------------------------------------------

EMAIL_INVALID = ("EMAIL-599BI", "Email is invalid")

BAD_ADDRESSES = {
    "second-recipient": "a@x, evil@y",
    "second-recipient-dotted": "victim@example.com, evil@example.net",
    "crlf-header-injection": "victim@example.com\r\nBcc: evil@example.net",
    "trailing-lf": "victim@example.com\n",
    "space": "vic tim@example.com",
    "comma-in-local-part": "a,b@example.com",
    "display-name": "Victim <victim@example.com>",
    "missing-at": "victim.example.com",
    "missing-domain": "victim@",
    "missing-local-part": "@example.com",
    "no-dot-in-domain": "a@x",
    "ip-literal": "victim@[127.0.0.1]",
    "quoted-local-part": '"a@b"@example.com',
    "reserved-invalid-domain": "victim@example.invalid",
}


def _human_body(org_id: str, email: str, **extra: Any) -> dict[str, Any]:
    return {
        "organization": {"orgId": org_id},
        "profile": {"givenName": "Mallory", "familyName": "Example"},
        "email": {"email": email, "isVerified": True},
        "password": {"password": STRONG_PASSWORD},
        **extra,
    }


async def _humans_in(world: World, org_id: str) -> int:
    count: int = await world.db.fetchval(
        "SELECT count(*) FROM users WHERE org_id = $1 AND kind = 'human'", org_id
    )
    return count


@pytest.mark.parametrize("address", list(BAD_ADDRESSES.values()), ids=list(BAD_ADDRESSES))
async def test_an_address_that_is_not_one_mailbox_is_refused_over_rest(
    world: World, address: str
) -> None:
    org_id, token = await world.admin()

    response = await world.client.post(
        "/v2/users/human", json=_human_body(org_id, address), headers=bearer(token)
    )

    assert_error(response, 400, 3, *EMAIL_INVALID)
    assert await _humans_in(world, org_id) == 0


@pytest.mark.parametrize("name", ["second-recipient", "crlf-header-injection", "display-name"])
async def test_an_address_that_is_not_one_mailbox_is_refused_over_connect(
    world: World, rpc: AsyncTestClient[Any], name: str
) -> None:
    org_id, token = await world.admin()

    response = await rpc.post(
        "/zitadel.user.v2.UserService/AddHumanUser",
        json=_human_body(org_id, BAD_ADDRESSES[name]),
        headers=bearer(token),
    )

    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "invalid_argument"
    assert body["message"] == "Email is invalid (EMAIL-599BI)"
    assert await _humans_in(world, org_id) == 0


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("Ada.Lovelace@Example.COM", "Ada.Lovelace@example.com"),  # the domain in lower case
        ("ada+tag@mail.example.org", "ada+tag@mail.example.org"),
        ("ada@sec-input.localhost", "ada@sec-input.localhost"),  # development domains
        ("ada@Sec-Input.LocalHost", "ada@sec-input.localhost"),
        ("ada@lab.test", "ada@lab.test"),
        ("ada@bücher.example", "ada@bücher.example"),  # mailed to its ASCII form
    ],
)
async def test_a_good_address_is_accepted_and_stored_normalized(
    world: World, rpc: AsyncTestClient[Any], given: str, stored: str
) -> None:
    org_id, token = await world.admin()

    rest = await world.client.post(
        "/v2/users/human", json=_human_body(org_id, given), headers=bearer(token)
    )
    connect = await rpc.post(
        "/zitadel.user.v2.UserService/AddHumanUser",
        json=_human_body(org_id, given, username="by-rpc"),
        headers=bearer(token),
    )

    assert rest.status_code == 201, rest.text
    assert connect.status_code == 200, connect.text
    read = await world.client.get(f"/v2/users/{rest.json()['userId']}", headers=bearer(token))
    user = read.json()["user"]
    assert user["human"]["email"]["email"] == stored
    assert user["username"] == stored  # no username given: the (normalized) address
    by_rpc = await world.db.fetchval(
        "SELECT email FROM users WHERE id = $1", connect.json()["userId"]
    )
    assert by_rpc == stored


# --- e-mail addresses at delivery ---------------------------------------------------------

OLD_BAD_ROWS = {
    "second-recipient": "victim@example.com, evil@example.net",
    "crlf-header-injection": "victim@example.com\r\nBcc: evil@example.net",
}


@pytest.fixture
async def ctx(make_settings: Callable[..., Settings], sink: MailSink) -> AsyncIterator[Context]:
    # A retry budget of 5: a dead row after one attempt is dead "at once", not by the budget.
    async with context(make_settings(smtp_url=sink.url, mail_max_attempts=5)) as opened:
        yield opened


async def _outbox_rows(world: World, user_ids: list[str]) -> dict[str, int]:
    rows = await world.db.fetch(
        "SELECT id, aggregate_id FROM outbox WHERE aggregate_id = ANY($1::text[])", user_ids
    )
    return {r["aggregate_id"]: r["id"] for r in rows}


async def test_a_stored_bad_address_is_dead_at_once_and_the_batch_is_delivered(
    world: World, ctx: Context, sink: MailSink, caplog: pytest.LogCaptureFixture
) -> None:
    org_id, admin = await world.admin()
    first = await world.human(admin, org_id, email="first@example.com")
    comma = await world.human(admin, org_id, email="comma@example.com")
    crlf = await world.human(admin, org_id, email="crlf@example.com")
    last = await world.human(admin, org_id, email="last@example.com")
    idn = await world.human(admin, org_id, email="idn@bücher.example")
    # As rows written before addresses were validated would be.
    for person, address in (
        (comma, OLD_BAD_ROWS["second-recipient"]),
        (crlf, OLD_BAD_ROWS["crlf-header-injection"]),
    ):
        await world.db.execute("UPDATE users SET email = $2 WHERE id = $1", person.user_id, address)
    for person in (first, comma, last, idn):
        changed = await world.set_password(
            admin, person.user_id, {"newPassword": {"password": "N3w!Passw0rd-secure"}}
        )
        assert changed.status_code == 200, changed.text
    reset = await world.client.post(  # a reset link: a row that carries a secret (the code)
        f"/v2/users/{crlf.user_id}/password_reset", json={"sendLink": {}}, headers=bearer(admin)
    )
    assert reset.status_code == 200, reset.text
    people = (first, comma, crlf, last, idn)
    rows = await _outbox_rows(world, [p.user_id for p in people])
    ids = [rows[p.user_id] for p in people]
    caplog.set_level(logging.DEBUG)

    summary = await notifications.deliver_batch(
        ctx=ctx, outbox_ids=ids, deliver=mail.deliverer(ctx.settings)
    )

    assert summary == "sent 3, refused 2, dead 2, skipped 0"
    messages = sink.messages()
    assert sorted(m["To"] for m in messages) == [
        "first@example.com",
        "idn@xn--bcher-kva.example",  # the ASCII form: no SMTPUTF8 needed
        "last@example.com",
    ]
    assert not any("evil" in m.as_string() for m in messages)
    for person in (comma, crlf):
        row = await world.db.fetchrow("SELECT * FROM outbox WHERE id = $1", rows[person.user_id])
        assert row is not None and row["dead_at"] is not None and row["processed_at"] is None
        assert (row["attempts"], row["last_error"]) == (1, "address-invalid")
    for person in (first, last, idn):
        row = await world.db.fetchrow("SELECT * FROM outbox WHERE id = $1", rows[person.user_id])
        assert row is not None and row["processed_at"] is not None and row["dead_at"] is None
    # Never published again, and a delivery of the same ids does nothing more.
    async with ctx.pool.acquire() as conn, conn.transaction():
        due = await outbox.lock_due_for_relay(conn, min_age_s=0, redeliver_after_s=0, limit=100_000)
    assert not set(ids) & {row.id for row in due}
    again = await notifications.deliver_batch(
        ctx=ctx, outbox_ids=ids, deliver=mail.deliverer(ctx.settings)
    )
    assert again == "sent 0, refused 0, dead 0, skipped 0"
    assert len(sink.messages()) == 3
    no_errors_logged(caplog)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "evil@" not in logged and "victim@" not in logged


async def test_a_message_that_cannot_be_built_is_refused_alone(
    ctx: Context, sink: MailSink, caplog: pytest.LogCaptureFixture
) -> None:
    """The mailer's own safety net (a notice built without the domain's address check): the
    bad one is ``message-invalid``, the others go out on the same connection."""
    caplog.set_level(logging.DEBUG)
    notices = [
        Notice(kind=notifications.PASSWORD_CHANGED, to="one@example.com", name="One", outbox_id=1),
        Notice(
            kind=notifications.PASSWORD_CHANGED,
            to=OLD_BAD_ROWS["crlf-header-injection"],
            name="Victim",
            outbox_id=2,
        ),
        Notice(kind=notifications.PASSWORD_CHANGED, to="two@example.com", name="Two", outbox_id=3),
    ]

    outcomes = await mail.deliverer(ctx.settings)(notices)

    assert outcomes == [None, notifications.MESSAGE_INVALID, None]
    assert sorted(m["To"] for m in sink.messages()) == ["one@example.com", "two@example.com"]
    no_errors_logged(caplog)
