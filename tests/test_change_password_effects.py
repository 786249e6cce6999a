"""What a change leaves behind: the password that logs in, the user's read model, the event,
the outbox rows, reset codes and their lifecycle, lockout, and the breached-password check."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from api import crypto
from api.settings import Settings
from api.wire import timestamp
from tests.change_password_support import (
    NEW_PASSWORD,
    OTHER_PASSWORD,
    STRONG_PASSWORD,
    change,
    failed_attempts,
    logs_in,
    post_state,
    reset,
    set_org_policy,
    setup_user,
    user_state,
    world_with,
)
from tests.support import World, assert_error, bearer

CHANGED = "user.human.password.changed"
CODE_ADDED = "user.human.password.code.added"
MAIL_CHANGED = "identity.send_password_changed_email"
MAIL_RESET = "identity.send_password_reset_email"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


async def _event(world: World, user_id: str, sequence: int) -> Any:
    return await world.db.fetchrow(
        "SELECT * FROM events WHERE aggregate_id = $1 AND sequence = $2", user_id, sequence
    )


async def _outbox(world: World, user_id: str, sequence: int) -> list[Any]:
    return list(
        await world.db.fetch(
            "SELECT * FROM outbox WHERE aggregate_id = $1 AND event_sequence = $2 ORDER BY id",
            user_id,
            sequence,
        )
    )


async def _read_user(world: World, token: str, user_id: str) -> Any:
    response = await world.client.get(f"/v2/users/{user_id}", headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json()["user"]


# --- the change and its records ---------------------------------------------------------------


async def test_new_password_logs_in_and_old_does_not(world: World) -> None:
    _, _, user = await setup_user(world)
    _, session = await world.login(user)
    response = await change(world, session, user.user_id, NEW_PASSWORD, current=STRONG_PASSWORD)
    assert response.status_code == 200, response.text
    assert await logs_in(world, user, NEW_PASSWORD)
    assert not await logs_in(world, user, STRONG_PASSWORD)
    # The response is exactly the contract's shape.
    body = response.json()
    assert set(body) == {"details"}
    assert set(body["details"]) == {"sequence", "changeDate", "resourceOwner"}
    assert body["details"]["resourceOwner"] == user.org_id
    assert TIMESTAMP.match(body["details"]["changeDate"]), body


@pytest.mark.parametrize("branch", ["admin", "currentPassword", "verificationCode"])
async def test_password_change_required_follows_the_request(world: World, branch: str) -> None:
    _, admin, user = await setup_user(world, change_required=True)
    assert (await _read_user(world, admin, user.user_id))["human"]["passwordChangeRequired"]
    steps = [(NEW_PASSWORD, STRONG_PASSWORD, False), (OTHER_PASSWORD, NEW_PASSWORD, True)]
    steps.append((STRONG_PASSWORD + "#", OTHER_PASSWORD, None))  # omitted means false
    for new, old, required in steps:
        if branch == "admin":
            response = await change(world, admin, user.user_id, new, change_required=required)
        elif branch == "currentPassword":
            response = await change(
                world, admin, user.user_id, new, current=old, change_required=required
            )
        else:
            code = await world.reset_code(admin, user.user_id)
            response = await change(
                world, admin, user.user_id, new, code=code, change_required=required
            )
        assert response.status_code == 200, response.text
        human = (await _read_user(world, admin, user.user_id))["human"]
        assert human.get("passwordChangeRequired", False) is bool(required), human
        assert human["passwordChanged"] == response.json()["details"]["changeDate"]
        row = await _event(world, user.user_id, int(response.json()["details"]["sequence"]))
        assert row["payload"]["changeRequired"] is bool(required)


@pytest.mark.parametrize("branch", ["admin", "currentPassword", "verificationCode"])
async def test_event_and_outbox_rows_of_a_change(world: World, branch: str) -> None:
    _, admin, user = await setup_user(world)
    session_id, session = await world.login(user)
    other_id, _ = await world.login(user)
    code = None
    if branch == "admin":
        response = await change(world, admin, user.user_id, NEW_PASSWORD)
    elif branch == "currentPassword":
        response = await change(world, session, user.user_id, NEW_PASSWORD, current=STRONG_PASSWORD)
    else:
        code = await world.reset_code(admin, user.user_id)
        response = await change(world, session, user.user_id, NEW_PASSWORD, code=code)
    assert response.status_code == 200, response.text
    details = response.json()["details"]
    sequence = int(details["sequence"])

    event = await _event(world, user.user_id, sequence)
    assert event is not None
    assert event["event_type"] == CHANGED
    assert timestamp(event["created_at"]) == details["changeDate"]
    assert event["resource_owner"] == details["resourceOwner"] == user.org_id
    # It is the newest event of the user and nothing else was appended with it.
    latest = await world.db.fetchval(
        "SELECT max(sequence) FROM events WHERE aggregate_id = $1", user.user_id
    )
    assert latest == sequence
    stored_hash = await world.db.fetchval(
        "SELECT password_hash FROM users WHERE id = $1", user.user_id
    )
    text = json.dumps(event["payload"])
    for secret in (
        NEW_PASSWORD,
        STRONG_PASSWORD,
        stored_hash,
        "$argon2",
        *([code] if code else []),
    ):
        assert secret not in text, (secret, text)
    assert event["payload"]["verification"] == branch

    rows = await _outbox(world, user.user_id, sequence)
    assert [r["task"] for r in rows] == [MAIL_CHANGED], rows
    for row in rows:
        assert row["processed_at"] is None  # no worker in this test: the rows wait
        assert row["created_at"] == event["created_at"]
        assert row["payload"]["userId"] == user.user_id
        text = json.dumps(row["payload"])
        assert NEW_PASSWORD not in text and stored_hash not in text
    # The change ended the user's other sessions in the same statement (no task for it):
    # one session.terminated event each, at the change's time; the session that made the
    # change (an admin's PAT has none) is still live.
    ended = await world.db.fetch(
        "SELECT e.aggregate_id, e.created_at, e.payload FROM events e JOIN sessions s"
        " ON s.id = e.aggregate_id WHERE s.user_id = $1 AND e.event_type = 'session.terminated'",
        user.user_id,
    )
    live = await world.db.fetch(
        "SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL", user.user_id
    )
    expected_keep = session_id if branch != "admin" else None
    assert [r["id"] for r in live] == ([expected_keep] if expected_keep else [])
    expected_ended = {other_id} if expected_keep else {session_id, other_id}
    assert {r["aggregate_id"] for r in ended} == expected_ended
    assert all(r["created_at"] == event["created_at"] for r in ended)
    assert all(r["payload"] == {"reason": "password changed"} for r in ended)


async def test_no_notification_row_when_the_policy_says_so(world: World) -> None:
    org_id, admin, user = await setup_user(world)
    await set_org_policy(world, org_id, notify_password_change=False)
    response = await change(world, admin, user.user_id, NEW_PASSWORD)
    assert response.status_code == 200, response.text
    rows = await _outbox(world, user.user_id, int(response.json()["details"]["sequence"]))
    assert rows == []
    # Back on: the row again (so no row above was the policy's doing).
    await set_org_policy(world, org_id, notify_password_change=True)
    response = await change(world, admin, user.user_id, OTHER_PASSWORD)
    rows = await _outbox(world, user.user_id, int(response.json()["details"]["sequence"]))
    assert [r["task"] for r in rows] == [MAIL_CHANGED]


# --- reset codes ------------------------------------------------------------------------------


async def test_send_link_queues_an_encrypted_code(world: World, settings: Settings) -> None:
    _, admin, user = await setup_user(world)
    template = "https://app.example.com/reset?user={{.UserID}}&code={{.Code}}"
    response = await reset(world, admin, user.user_id, {"sendLink": {"urlTemplate": template}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"details"}  # no code in the answer for sendLink
    sequence = int(body["details"]["sequence"])

    event = await _event(world, user.user_id, sequence)
    assert event["event_type"] == CODE_ADDED
    assert timestamp(event["created_at"]) == body["details"]["changeDate"]
    rows = await _outbox(world, user.user_id, sequence)
    assert [r["task"] for r in rows] == [MAIL_RESET]
    payload = rows[0]["payload"]
    assert payload["userId"] == user.user_id
    assert payload["urlTemplate"] == template
    code = crypto.decrypt(settings.secret_key, payload["encryptedCode"])
    assert re.fullmatch(r"[A-Z0-9]{6}", code), "decrypted code has the wrong form"
    assert payload["encryptedCode"] != code
    for text in (json.dumps(payload), json.dumps(event["payload"])):
        assert code not in text and code.lower() not in text
    # The decrypted code is the one that works.
    ok = await change(world, admin, user.user_id, NEW_PASSWORD, code=code)
    assert ok.status_code == 200, ok.text
    assert await logs_in(world, user, NEW_PASSWORD)


async def test_default_medium_is_a_link_with_the_default_template(
    world: World, settings: Settings
) -> None:
    _, _, user = await setup_user(world)
    _, session = await world.login(user)
    response = await reset(world, session, user.user_id, {})
    assert response.status_code == 200, response.text
    rows = await _outbox(world, user.user_id, int(response.json()["details"]["sequence"]))
    assert [r["task"] for r in rows] == [MAIL_RESET]
    assert rows[0]["payload"]["urlTemplate"] == settings.reset_url_template


async def test_return_code(world: World) -> None:
    _, admin, user = await setup_user(world)
    response = await reset(world, admin, user.user_id, {"returnCode": {}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"details", "verificationCode"}
    code = body["verificationCode"]
    assert re.fullmatch(r"[A-Z0-9]{6}", code), "code has the wrong form"
    sequence = int(body["details"]["sequence"])
    event = await _event(world, user.user_id, sequence)
    assert event["event_type"] == CODE_ADDED
    assert code not in json.dumps(event["payload"])
    assert await _outbox(world, user.user_id, sequence) == []  # nothing to send


async def test_a_new_code_replaces_the_old(world: World) -> None:
    _, admin, user = await setup_user(world)
    old = await world.reset_code(admin, user.user_id)
    new = await world.reset_code(admin, user.user_id)
    if old == new:  # 1 in 36**6: draw once more
        new = await world.reset_code(admin, user.user_id)
    assert old != new
    response = await change(world, admin, user.user_id, NEW_PASSWORD, code=old)
    assert_error(response, 400, 3, "CODE-woT0xc", "Code is invalid")
    response = await change(world, admin, user.user_id, NEW_PASSWORD, code=new)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("how", ["admin", "currentPassword", "otherCode"])
async def test_any_password_change_burns_the_code(world: World, how: str) -> None:
    _, admin, user = await setup_user(world)
    code = await world.reset_code(admin, user.user_id)
    if how == "admin":
        response = await change(world, admin, user.user_id, NEW_PASSWORD)
    elif how == "currentPassword":
        response = await change(world, admin, user.user_id, NEW_PASSWORD, current=STRONG_PASSWORD)
    else:
        # The code itself changes the password; a code issued before that change is void.
        response = await change(world, admin, user.user_id, NEW_PASSWORD, code=code)
    assert response.status_code == 200, response.text
    again = await change(world, admin, user.user_id, OTHER_PASSWORD, code=code)
    assert_error(again, 400, 9, "COMMAND-2M9fs", "Code not found")
    assert await logs_in(world, user, NEW_PASSWORD)


# --- lockout ----------------------------------------------------------------------------------


async def _wrong_current(world: World, admin: str, user_id: str, times: int) -> None:
    for _ in range(times):
        response = await change(world, admin, user_id, NEW_PASSWORD, current="Wr0ng!Passw0rd")
        assert_error(response, 400, 3, "COMMAND-3M0fs", "Password is invalid")


async def test_ten_wrong_current_passwords_lock_the_user(world: World) -> None:
    _, admin, user = await setup_user(world)
    await _wrong_current(world, admin, user.user_id, 9)
    assert await user_state(world, admin, user.user_id) == "USER_STATE_ACTIVE"
    await _wrong_current(world, admin, user.user_id, 1)  # the tenth still says 3M0fs...
    assert await user_state(world, admin, user.user_id) == "USER_STATE_LOCKED"  # ...and locks
    locked = await world.db.fetch(
        "SELECT sequence FROM events WHERE aggregate_id = $1 AND event_type = 'user.locked'",
        user.user_id,
    )
    assert len(locked) == 1
    # Now even the right password is refused, in the branch and at login.
    response = await change(world, admin, user.user_id, NEW_PASSWORD, current=STRONG_PASSWORD)
    assert_error(response, 400, 9, "COMMAND-JLK35", "User is locked")
    login = await world.try_login(user.username, STRONG_PASSWORD)
    assert_error(login, 400, 9, "COMMAND-JLK35", "User is locked")


@pytest.mark.parametrize("recovery", ["verificationCode", "admin"])
async def test_locked_user_recovers_without_being_unlocked(world: World, recovery: str) -> None:
    _, admin, user = await setup_user(world)
    await _wrong_current(world, admin, user.user_id, 10)
    assert await user_state(world, admin, user.user_id) == "USER_STATE_LOCKED"
    assert await failed_attempts(world, user.user_id) == 10
    if recovery == "verificationCode":
        code = await world.reset_code(admin, user.user_id)
        response = await change(world, admin, user.user_id, NEW_PASSWORD, code=code)
    else:
        response = await change(world, admin, user.user_id, NEW_PASSWORD)
    assert response.status_code == 200, response.text
    assert await user_state(world, admin, user.user_id) == "USER_STATE_LOCKED"
    assert await failed_attempts(world, user.user_id) == 0
    await post_state(world, admin, user.user_id, "unlock")
    assert await logs_in(world, user, NEW_PASSWORD)


async def test_a_change_resets_the_failed_count(world: World) -> None:
    _, admin, user = await setup_user(world)
    await _wrong_current(world, admin, user.user_id, 9)
    assert await failed_attempts(world, user.user_id) == 9
    assert (await change(world, admin, user.user_id, NEW_PASSWORD)).status_code == 200
    assert await failed_attempts(world, user.user_id) == 0
    # Nine more wrong ones do not lock: the count started again at zero.
    await _wrong_current(world, admin, user.user_id, 9)
    assert await user_state(world, admin, user.user_id) == "USER_STATE_ACTIVE"


# --- breached passwords (a local k-anonymity range server) -------------------------------------

BREACHED = "Br3ached!Passw0rd"


class RangeServer:
    """A HIBP-compatible range API: ``GET /range/<5 hex>`` → ``SUFFIX:COUNT`` lines."""

    def __init__(self, entries: dict[str, int]) -> None:
        self.table: dict[str, list[str]] = {}
        for password, count in entries.items():
            digest = hashlib.sha1(password.encode(), usedforsecurity=False).hexdigest().upper()
            self.table.setdefault(digest[:5], []).append(f"{digest[5:]}:{count}")
        self.paths: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.paths.append(self.path)
                prefix = self.path.rsplit("/", 1)[-1].upper()
                lines = [*owner.table.get(prefix, []), "0" * 35 + ":3", "F" * 35 + ":0"]
                body = "\r\n".join(lines).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/range"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def range_server() -> Iterator[RangeServer]:
    server = RangeServer({BREACHED: 42, "Padd3d!Passw0rd": 0})
    yield server
    server.close()


def _closed_port_url() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    return f"http://127.0.0.1:{port}/range"


async def test_breached_password_is_refused(
    world: World, make_settings: Callable[..., Settings], range_server: RangeServer
) -> None:
    _, admin, user = await setup_user(world)
    settings = make_settings(breach_check_url=range_server.url)
    async with world_with(settings) as checked:
        for body in (
            {"newPassword": {"password": BREACHED}},
            {"newPassword": {"password": BREACHED}, "currentPassword": STRONG_PASSWORD},
            {
                "newPassword": {"password": BREACHED},
                "verificationCode": await checked.reset_code(admin, user.user_id),
            },
        ):
            response = await checked.set_password(admin, user.user_id, body)
            assert_error(response, 400, 3, "DOMAIN-Br3ch", "Password has appeared in a data breach")
        # A count of 0 is HIBP's padding, not a hit; an unknown password passes.
        for password in ("Padd3d!Passw0rd", NEW_PASSWORD):
            response = await change(checked, admin, user.user_id, password)
            assert response.status_code == 200, response.text
        assert await logs_in(checked, user, NEW_PASSWORD)
    # Only five hex digits of the SHA-1 ever left the process.
    assert range_server.paths
    for path in range_server.paths:
        assert re.fullmatch(r"/range/[0-9A-F]{5}", path), path


async def test_breach_check_unreachable_fails_open(
    world: World, make_settings: Callable[..., Settings]
) -> None:
    _, admin, user = await setup_user(world)
    settings = make_settings(breach_check_url=_closed_port_url(), breach_check_timeout_s=1.0)
    async with world_with(settings) as checked:
        response = await change(checked, admin, user.user_id, BREACHED)
        assert response.status_code == 200, response.text


async def test_breach_check_unreachable_fails_closed(
    world: World, make_settings: Callable[..., Settings]
) -> None:
    _, admin, user = await setup_user(world)
    settings = make_settings(
        breach_check_url=_closed_port_url(),
        breach_check_timeout_s=1.0,
        breach_check_fail_closed=True,
    )
    async with world_with(settings) as checked:
        response = await change(checked, admin, user.user_id, NEW_PASSWORD)
        assert_error(response, 503, 14, "SERVER-Unav1", "Service unavailable")
        assert int(response.headers["retry-after"]) >= 1
    assert await logs_in(world, user, STRONG_PASSWORD)
