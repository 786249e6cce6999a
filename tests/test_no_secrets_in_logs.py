"""No password, reset code or token used in a run of the password endpoints appears in any
log line (every logger at DEBUG, plus whatever reaches stdout/stderr), in any event or outbox
payload, or in any error body."""

from __future__ import annotations

import json
import logging
import re
import secrets

import httpx
import pytest

from api import crypto
from api.settings import Settings
from tests.change_password_support import change, reset
from tests.support import World

# Every password the run uses, right or wrong (ASCII, so no escaping hides one).
P0 = "Init!al-Passw0rd-" + secrets.token_hex(4)
P1 = "F1rst!change-" + secrets.token_hex(4)
P2 = "Sec0nd!code-" + secrets.token_hex(4)
P3 = "Th1rd!link-" + secrets.token_hex(4)
P4 = "F0urth!admin-" + secrets.token_hex(4)
P5 = "F1fth!crash-" + secrets.token_hex(4)
WRONG = "Wr0ng!guess-" + secrets.token_hex(4)
WEAK = "weakling" + secrets.token_hex(3)
TOO_LONG = "L0ng!" + secrets.token_hex(98)  # 201 characters
BAD_TOKEN = "bad-token-" + secrets.token_urlsafe(24)


def _code_pattern(code: str) -> re.Pattern[str]:
    # A code is 6 characters from A-Z0-9: match it as a whole word, in any case, so that a
    # code made of digits only is not "found" inside a numeric ID.
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(code)}(?![A-Za-z0-9])", re.IGNORECASE)


async def _code_with_a_letter(world: World, admin: str, user_id: str) -> str:
    code = await world.reset_code(admin, user_id)
    if not re.search(r"[A-Z]", code):  # 1 in 2,000: make the search below unambiguous
        code = await world.reset_code(admin, user_id)
    return code


async def test_no_secret_in_logs_payloads_or_error_bodies(
    world: World,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    error_bodies: list[str] = []

    async def keep_errors(response: httpx.Response) -> None:
        await response.aread()
        if response.status_code >= 400:
            error_bodies.append(response.text)

    world.client.event_hooks["response"].append(keep_errors)
    statuses: list[int] = []

    def expect(response: httpx.Response, status: int) -> None:
        statuses.append(response.status_code)
        assert response.status_code == status, response.text

    org_id, admin = await world.admin()
    alice = await world.human(admin, org_id, password=P0)
    uid = alice.user_id

    # Logins: right and wrong.
    _, session = await world.login(alice, P0)
    expect(await world.try_login(alice.username, WRONG), 400)

    # Branch 1, current password: failures, then a change.
    expect(await change(world, session, uid, P1, current=WRONG), 400)
    expect(await change(world, session, uid, WRONG, current=WRONG), 400)  # new == current
    expect(await change(world, session, uid, WEAK, current=P0), 400)
    expect(await change(world, session, uid, TOO_LONG, current=P0), 400)
    expect(await change(world, session, uid, P1, current=TOO_LONG), 400)
    expect(await change(world, BAD_TOKEN, uid, P1, current=P0), 401)
    expect(await change(world, session, uid, P1, current=P0), 200)

    # Branch 2, a returned code: wrong code, weak password, then the change.
    code1 = await _code_with_a_letter(world, admin, uid)
    wrong_code = "".join("Z" if c != "Z" else "Y" for c in code1)
    expect(await change(world, admin, uid, P2, code=wrong_code), 400)
    expect(await change(world, admin, uid, WEAK, code=code1), 400)
    expect(await change(world, admin, uid, P2, code=code1.lower()), 200)
    expect(await change(world, admin, uid, P2, code=code1), 400)  # used

    # Branch 2 again, the code sent as a link (read back from the outbox, as the worker does);
    # the change above ended alice's sessions, so she logs in again to ask for it.
    _, session = await world.login(alice, P2)
    response = await reset(world, session, uid, {"sendLink": {}})
    expect(response, 200)
    sequence = int(response.json()["details"]["sequence"])
    payload = await world.db.fetchval(
        "SELECT payload FROM outbox WHERE aggregate_id = $1 AND event_sequence = $2", uid, sequence
    )
    code2 = crypto.decrypt(settings.secret_key, payload["encryptedCode"])
    expect(await change(world, admin, uid, P3, code=code2), 200)

    # Branch 3, admin set; then the logins that prove it.
    expect(await change(world, admin, uid, P4), 200)
    _, session2 = await world.login(alice, P4)
    expect(await world.try_login(alice.username, P3), 400)
    expect(await reset(world, BAD_TOKEN, uid, {"returnCode": {}}), 401)

    # A 500: a broken policy row makes the change fail unexpectedly, mid-request.
    org2, admin2 = await world.admin()
    bob = await world.human(admin2, org2, password=P0)
    await world.db.execute(
        "INSERT INTO policies (org_id, settings) VALUES ($1, $2::jsonb)",
        org2,
        {"min_length": "not a number"},
    )
    crash = await change(world, admin2, bob.user_id, P5, current=P0)
    expect(crash, 500)
    assert crash.json()["details"][0]["id"] == "SERVER-Int3r"

    # --- collect everything that was written -------------------------------------------------
    log_lines = [caplog.text]
    for record in caplog.records:
        log_lines.append(record.getMessage())
        log_lines.append(repr(record.args))
        if record.exc_info:
            log_lines.append(logging.Formatter().formatException(record.exc_info))
        if record.exc_text:
            log_lines.append(record.exc_text)
    captured = capfd.readouterr()
    log_lines += [captured.out, captured.err]
    logs = "\n".join(log_lines)
    # The capture works: the 500 was logged (by exception type, without its text).
    assert "unexpected ValidationError" in logs

    payloads = [
        json.dumps(r["payload"]) for r in await world.db.fetch("SELECT payload FROM events")
    ] + [json.dumps(r["payload"]) for r in await world.db.fetch("SELECT payload FROM outbox")]
    assert any(uid in p for p in payloads)  # this run's rows are among them
    assert len(error_bodies) == sum(status >= 400 for status in statuses)  # the hook saw them

    places: dict[str, str] = {
        "logs": logs,
        "event/outbox payloads": "\n".join(payloads),
        "error bodies": "\n".join(error_bodies),
    }
    plain_secrets = {
        "password": [P0, P1, P2, P3, P4, P5, WRONG, WEAK, TOO_LONG],
        "token": [admin, admin2, session, session2, BAD_TOKEN],
    }
    leaks: list[str] = []
    for where, text in places.items():
        for kind, values in plain_secrets.items():
            leaks += [f"a {kind} in {where}" for value in values if value in text]
        for code in (code1, code2, wrong_code):
            if _code_pattern(code).search(text):
                leaks.append(f"a code in {where}")
    assert not leaks, leaks  # the secrets themselves are never printed
