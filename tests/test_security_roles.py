"""Issue 10, item 1: a caller acts on a user only when its role outranks the user's
(IAM_OWNER > ORG_OWNER > ORG_USER_MANAGER > no role), and ``identity bootstrap`` brings the
instance's owner back, whatever was done to it.

The attack: an ORG_USER_MANAGER (or ORG_OWNER) of the default organization deactivates,
locks or deletes the IAM_OWNER machine user, after which every IAM_OWNER token is a 401.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from api.settings import Settings
from tests.support import STRONG_PASSWORD, assert_error, bearer
from tests.test_cli import CliDb, app_for, drop_db, fetch, human_body, one_json_line, unique_name

# (action, method, path suffix): every way to put a user out of action.
ATTACKS = [
    ("deactivate", "POST", "/deactivate"),
    ("lock", "POST", "/lock"),
    ("remove", "DELETE", ""),
]


@pytest.fixture
def instance() -> Iterator[CliDb]:
    """A bootstrapped instance of its own (the attacks change its owner)."""
    db = CliDb(unique_name("roles"), f"test-roles-{unique_name('p')[-10:]}:")
    one_json_line(db.run("migrate"))
    yield db
    drop_db(db.name)


async def _act(client: Any, token: str, method: str, path: str) -> httpx.Response:
    response: httpx.Response = await client.request(method, path, headers=bearer(token), json={})
    return response


async def test_org_admins_cannot_disable_the_iam_owner(
    instance: CliDb, make_settings: Callable[..., Settings]
) -> None:
    boot = one_json_line(instance.run("bootstrap"))
    org, iam_user, iam_token = boot["organizationId"], boot["userId"], boot["token"]
    owner = one_json_line(instance.run("token", "create", "--org", org, "--role", "ORG_OWNER"))
    manager = one_json_line(
        instance.run("token", "create", "--org", org, "--role", "ORG_USER_MANAGER")
    )
    async with app_for(instance, make_settings) as client:
        for caller in (owner, manager):
            for _action, method, suffix in ATTACKS:
                refused = await _act(
                    client, caller["token"], method, f"/v2/users/{iam_user}{suffix}"
                )
                assert_error(refused, 403, 7, "AUTH-AWfge", "No matching permissions found")
            # Nor read it, nor reset it.
            seen = await client.get(f"/v2/users/{iam_user}", headers=bearer(caller["token"]))
            assert_error(seen, 403, 7, "AUTH-AWfge", "No matching permissions found")

        # A manager cannot touch the owner of its organization either ...
        for _action, method, suffix in ATTACKS:
            refused = await _act(
                client, manager["token"], method, f"/v2/users/{owner['userId']}{suffix}"
            )
            assert_error(refused, 403, 7, "AUTH-AWfge", "No matching permissions found")
        # ... nor a peer manager (equal rank does not outrank).
        peer = one_json_line(
            instance.run("token", "create", "--org", org, "--role", "ORG_USER_MANAGER")
        )
        refused = await _act(client, manager["token"], "POST", f"/v2/users/{peer['userId']}/lock")
        assert_error(refused, 403, 7, "AUTH-AWfge", "No matching permissions found")

        # The owner is untouched: its token works and it is active.
        rows = await fetch(
            instance.url, "SELECT state, deleted_at FROM users WHERE id = $1", iam_user
        )
        assert (rows[0]["state"], rows[0]["deleted_at"]) == ("active", None)
        made = await client.post(
            "/v2/users/human", json=human_body(org, "still-works"), headers=bearer(iam_token)
        )
        assert made.status_code == 201, made.text

        # Legitimate uses still work: an owner acts on a manager, a manager on a human, the
        # IAM owner on an organization's owner.
        locked = await _act(client, owner["token"], "POST", f"/v2/users/{manager['userId']}/lock")
        assert locked.status_code == 200, locked.text
        human = made.json()["userId"]
        human_locked = await _act(client, peer["token"], "POST", f"/v2/users/{human}/lock")
        assert human_locked.status_code == 200, human_locked.text
        reset = await client.post(
            f"/v2/users/{human}/password",
            json={"newPassword": {"password": STRONG_PASSWORD + "x"}},
            headers=bearer(peer["token"]),
        )
        assert reset.status_code == 200, reset.text
        deactivated = await _act(
            client, iam_token, "POST", f"/v2/users/{owner['userId']}/deactivate"
        )
        assert deactivated.status_code == 200, deactivated.text


@pytest.mark.parametrize(
    "damage",
    [
        "UPDATE users SET state = 'inactive' WHERE id = $1",
        "UPDATE users SET state = 'locked' WHERE id = $1",
        "UPDATE users SET state = 'inactive', deleted_at = now() WHERE id = $1",
    ],
    ids=["deactivated", "locked", "removed"],
)
async def test_bootstrap_restores_the_iam_owner(
    instance: CliDb, make_settings: Callable[..., Settings], damage: str
) -> None:
    first = one_json_line(instance.run("bootstrap"))
    # As an attacker could before the fix (or an operator by mistake).
    await fetch(instance.url, damage, first["userId"])
    async with app_for(instance, make_settings) as client:
        if "inactive" in damage:  # a locked machine user's token still authenticates
            dead = await client.post(
                "/v2/users/human",
                json=human_body(first["organizationId"], "while-dead"),
                headers=bearer(first["token"]),
            )
            assert dead.status_code == 401, dead.text

        second = one_json_line(instance.run("bootstrap"))
        assert (second["organizationId"], second["userId"]) == (
            first["organizationId"],
            first["userId"],
        )
        rows = await fetch(
            instance.url,
            "SELECT state, deleted_at, sequence FROM users WHERE id = $1",
            first["userId"],
        )
        assert (rows[0]["state"], rows[0]["deleted_at"]) == ("active", None)
        events = await fetch(
            instance.url,
            "SELECT event_type, creator FROM events WHERE aggregate_id = $1 ORDER BY sequence",
            first["userId"],
        )
        assert (events[-1]["event_type"], events[-1]["creator"]) == (
            "user.reactivated",
            "bootstrap",
        )
        for token in (second["token"], first["token"]):
            made = await client.post(
                "/v2/users/human",
                json=human_body(first["organizationId"], f"after-{token[:6]}".lower()),
                headers=bearer(token),
            )
            assert made.status_code == 201, made.text
        # Bootstrapping an active owner changes nothing.
        third = one_json_line(instance.run("bootstrap"))
        assert third["userId"] == first["userId"]
        again = await fetch(
            instance.url, "SELECT sequence FROM users WHERE id = $1", first["userId"]
        )
        assert again[0]["sequence"] == rows[0]["sequence"]
