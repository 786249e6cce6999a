"""Every endpoint of the foundation through HTTP: exact success shapes, the user's sequence
moving by exactly one per state change, and the event row each change appends."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from api.settings import Settings
from tests.support import STRONG_PASSWORD, World, bearer, world_with

RFC3339_MICROS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
DECIMAL_ID = re.compile(r"^\d{17,19}$")


def wire_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_details(details: dict[str, Any], sequence: int, owner: str) -> str:
    """``details`` exactly: sequence as a string, RFC 3339 microsecond Z time, owner."""
    assert set(details) == {"sequence", "changeDate", "resourceOwner"}, details
    assert details["sequence"] == str(sequence), details
    assert isinstance(details["sequence"], str)
    assert RFC3339_MICROS.match(details["changeDate"]), details
    assert details["resourceOwner"] == owner, details
    change_date: str = details["changeDate"]
    return change_date


async def events_of(world: World, aggregate_id: str) -> list[dict[str, Any]]:
    rows = await world.db.fetch(
        "SELECT sequence, aggregate_type, event_type, payload, creator, resource_owner,"
        " created_at FROM events WHERE aggregate_id = $1 ORDER BY sequence",
        aggregate_id,
    )
    return [dict(r) for r in rows]


async def assert_last_event(
    world: World,
    aggregate_id: str,
    *,
    sequence: int,
    aggregate_type: str,
    event_type: str,
    owner: str,
    change_date: str,
    creator: str | None = None,
) -> None:
    rows = await events_of(world, aggregate_id)
    # Gap-free: the aggregate's events are numbered 1..sequence.
    assert [r["sequence"] for r in rows] == list(range(1, sequence + 1)), rows
    last = rows[-1]
    assert last["aggregate_type"] == aggregate_type
    assert last["event_type"] == event_type
    assert last["resource_owner"] == owner
    assert wire_time(last["created_at"]) == change_date
    if creator is not None:
        assert last["creator"] == creator


async def user_sequence(world: World, user_id: str) -> int:
    value: int = await world.db.fetchval("SELECT sequence FROM users WHERE id = $1", user_id)
    return value


# --- users ------------------------------------------------------------------------------


async def test_create_human_user_shape_and_event(world: World) -> None:
    org_id, admin = await world.admin()
    admin_id = await world.db.fetchval(
        "SELECT u.id FROM users u WHERE u.org_id = $1 AND u.kind = 'machine'", org_id
    )
    body = {
        "username": "ada",
        "organization": {"orgId": org_id},
        "profile": {"givenName": "Ada", "familyName": "Lovelace"},
        "email": {"email": "ada@example.com", "isVerified": True},
        "password": {"password": STRONG_PASSWORD, "changeRequired": False},
    }
    response = await world.client.post("/v2/users/human", json=body, headers=bearer(admin))
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/json")
    out = response.json()
    assert set(out) == {"userId", "details"}
    assert DECIMAL_ID.match(out["userId"]), out
    change_date = check_details(out["details"], 1, org_id)
    await assert_last_event(
        world,
        out["userId"],
        sequence=1,
        aggregate_type="user",
        event_type="user.human.added",
        owner=org_id,
        change_date=change_date,
        creator=admin_id,
    )
    # The payload never carries the password or its hash.
    rows = await events_of(world, out["userId"])
    assert STRONG_PASSWORD not in str(rows[0]["payload"])
    assert "argon2" not in str(rows[0]["payload"])
    stored = await world.db.fetchval("SELECT password_hash FROM users WHERE id = $1", out["userId"])
    assert stored.startswith("$argon2id$") and STRONG_PASSWORD not in stored


async def test_create_human_user_with_caller_chosen_id_snake_case_and_no_password(
    world: World,
) -> None:
    org_id, admin = await world.admin()
    body = {
        "user_id": "my-own-id-42",
        "profile": {"given_name": "Grace", "family_name": "Hopper"},
        "email": {"email": "grace@example.com"},
        "unknownField": {"ignored": True},
    }
    response = await world.client.post("/v2/users/human", json=body, headers=bearer(admin))
    assert response.status_code == 201, response.text
    out = response.json()
    # No organization: the caller's; no username: the e-mail address.
    assert out["userId"] == "my-own-id-42"
    check_details(out["details"], 1, org_id)
    read = await world.client.get("/v2/users/my-own-id-42", headers=bearer(admin))
    assert read.status_code == 200, read.text
    user = read.json()["user"]
    assert user["username"] == "grace@example.com"
    assert "passwordChanged" not in user["human"]
    assert user["human"]["email"] == {"email": "grace@example.com"}


async def test_get_user_shape(world: World) -> None:
    org_id, admin = await world.admin()
    domain = await world.db.fetchval("SELECT domain FROM organizations WHERE id = $1", org_id)
    alice = await world.human(admin, org_id, username="alice", change_required=True)
    response = await world.client.get(f"/v2/users/{alice.user_id}", headers=bearer(admin))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"details", "user"}
    created_at = await world.db.fetchval(
        "SELECT created_at FROM events WHERE aggregate_id = $1 AND sequence = 1", alice.user_id
    )
    change_date = check_details(body["details"], 1, org_id)
    assert change_date == wire_time(created_at)
    user = body["user"]
    assert user["userId"] == alice.user_id
    assert user["state"] == "USER_STATE_ACTIVE"
    assert user["username"] == "alice"
    assert user["preferredLoginName"] == f"alice@{domain}"
    assert user["loginNames"] == [f"alice@{domain}"]
    human = user["human"]
    assert human["profile"]["givenName"] == "Given"
    assert human["profile"]["familyName"].startswith("Family")
    assert human["profile"]["displayName"] == f"Given {human['profile']['familyName']}"
    assert human["email"] == {"email": alice.email, "isVerified": True}
    assert human["passwordChangeRequired"] is True
    assert human["passwordChanged"] == change_date
    assert set(human) == {"profile", "email", "passwordChangeRequired", "passwordChanged"}


async def test_state_changes_bump_sequence_by_one_and_append_events(world: World) -> None:
    org_id, admin = await world.admin()
    alice = await world.human(admin, org_id)
    steps = [
        ("post", "lock", "user.locked", "USER_STATE_LOCKED"),
        ("post", "unlock", "user.unlocked", "USER_STATE_ACTIVE"),
        ("post", "deactivate", "user.deactivated", "USER_STATE_INACTIVE"),
        ("post", "reactivate", "user.reactivated", "USER_STATE_ACTIVE"),
        ("post", "lock", "user.locked", "USER_STATE_LOCKED"),
        ("post", "deactivate", "user.deactivated", "USER_STATE_INACTIVE"),
    ]
    previous = ""
    for number, (method, action, event_type, state) in enumerate(steps, start=2):
        response = await world.client.request(
            method.upper(), f"/v2/users/{alice.user_id}/{action}", headers=bearer(admin)
        )
        assert response.status_code == 200, (action, response.text)
        body = response.json()
        assert set(body) == {"details"}
        change_date = check_details(body["details"], number, org_id)
        assert change_date > previous
        previous = change_date
        await assert_last_event(
            world,
            alice.user_id,
            sequence=number,
            aggregate_type="user",
            event_type=event_type,
            owner=org_id,
            change_date=change_date,
        )
        assert await user_sequence(world, alice.user_id) == number
        read = await world.client.get(f"/v2/users/{alice.user_id}", headers=bearer(admin))
        assert read.status_code == 200
        assert read.json()["user"]["state"] == state
        assert read.json()["details"] == body["details"]


async def test_delete_user_shape_event_and_afterwards(world: World) -> None:
    org_id, admin = await world.admin()
    alice = await world.human(admin, org_id)
    _, session_token = await world.login(alice)
    lock = await world.client.post(f"/v2/users/{alice.user_id}/lock", headers=bearer(admin))
    assert lock.json()["details"]["sequence"] == "2"

    response = await world.client.delete(f"/v2/users/{alice.user_id}", headers=bearer(admin))
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"details"}
    change_date = check_details(response.json()["details"], 3, org_id)
    await assert_last_event(
        world,
        alice.user_id,
        sequence=3,
        aggregate_type="user",
        event_type="user.removed",
        owner=org_id,
        change_date=change_date,
    )
    # Gone: a 404 for every caller, the user's tokens stop working, the name is free again.
    again = await world.client.get(f"/v2/users/{alice.user_id}", headers=bearer(admin))
    assert again.status_code == 404 and again.json()["details"][0]["id"] == "COMMAND-SAF4f"
    twice = await world.client.delete(f"/v2/users/{alice.user_id}", headers=bearer(admin))
    assert twice.status_code == 404
    own = await world.client.get(f"/v2/users/{alice.user_id}", headers=bearer(session_token))
    assert own.status_code == 401 and own.json()["details"][0]["id"] == "AUTH-7fs1e"
    reuse = await world.human(admin, org_id, username=alice.username)
    assert reuse.user_id != alice.user_id
    # Failed attempts appended nothing.
    assert len(await events_of(world, alice.user_id)) == 3


async def test_failed_state_changes_append_nothing(world: World) -> None:
    org_id, admin = await world.admin()
    alice = await world.human(admin, org_id)
    unlock = await world.client.post(f"/v2/users/{alice.user_id}/unlock", headers=bearer(admin))
    assert unlock.status_code == 400
    reactivate = await world.client.post(
        f"/v2/users/{alice.user_id}/reactivate", headers=bearer(admin)
    )
    assert reactivate.status_code == 400
    wrong = await world.try_login(alice.username, "Wr0ng!Password")
    assert wrong.status_code == 400
    assert await user_sequence(world, alice.user_id) == 1
    assert len(await events_of(world, alice.user_id)) == 1


# --- sessions ---------------------------------------------------------------------------


async def test_create_session_shape_and_event(world: World) -> None:
    org_id, admin = await world.admin()
    alice = await world.human(admin, org_id)
    response = await world.client.post(
        "/v2/sessions",
        json={
            "checks": {
                "user": {"loginName": alice.username},
                "password": {"password": alice.password},
            }
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"details", "sessionId", "sessionToken"}
    assert DECIMAL_ID.match(body["sessionId"])
    assert len(body["sessionToken"]) >= 32
    change_date = check_details(body["details"], 1, org_id)
    await assert_last_event(
        world,
        body["sessionId"],
        sequence=1,
        aggregate_type="session",
        event_type="session.added",
        owner=org_id,
        change_date=change_date,
        creator=alice.user_id,
    )
    # The session is its own aggregate: a login does not move the user's sequence.
    assert await user_sequence(world, alice.user_id) == 1
    # The token is stored only as a digest.
    stored = await world.db.fetchval(
        "SELECT token_hash FROM sessions WHERE id = $1", body["sessionId"]
    )
    assert isinstance(stored, bytes) and len(stored) == 32
    assert body["sessionToken"].encode() not in stored


async def test_create_session_by_user_id_and_preferred_login_name(world: World) -> None:
    org_id, admin = await world.admin()
    alice = await world.human(admin, org_id)
    by_id = await world.client.post(
        "/v2/sessions",
        json={
            "checks": {"user": {"userId": alice.user_id}, "password": {"password": alice.password}}
        },
    )
    assert by_id.status_code == 201, by_id.text
    read = await world.client.get(f"/v2/users/{alice.user_id}", headers=bearer(admin))
    preferred = read.json()["user"]["preferredLoginName"]
    by_name = await world.client.post(
        "/v2/sessions",
        json={
            "checks": {"user": {"login_name": preferred}, "password": {"password": alice.password}}
        },
    )
    assert by_name.status_code == 201, by_name.text
    assert by_name.json()["sessionId"] != by_id.json()["sessionId"]


async def test_get_session_shape(world: World) -> None:
    org_id, admin = await world.admin()
    domain = await world.db.fetchval("SELECT domain FROM organizations WHERE id = $1", org_id)
    alice = await world.human(admin, org_id)
    session_id, session_token = await world.login(alice)
    created = await world.db.fetchval(
        "SELECT created_at FROM events WHERE aggregate_id = $1 AND sequence = 1", session_id
    )
    for token in (session_token, admin):
        response = await world.client.get(f"/v2/sessions/{session_id}", headers=bearer(token))
        assert response.status_code == 200, response.text
        session = response.json()["session"]
        assert set(response.json()) == {"session"}
        assert session["id"] == session_id
        assert session["sequence"] == "1"
        assert session["creationDate"] == wire_time(created)
        assert session["changeDate"] == wire_time(created)
        user = session["factors"]["user"]
        assert user["id"] == alice.user_id
        assert user["loginName"] == f"{alice.username}@{domain}"
        assert user["organizationId"] == org_id
        assert RFC3339_MICROS.match(user["verifiedAt"])
        assert RFC3339_MICROS.match(session["factors"]["password"]["verifiedAt"])


async def test_delete_session_shape_event_and_token_revoked(world: World) -> None:
    org_id, admin = await world.admin()
    alice = await world.human(admin, org_id)
    session_id, session_token = await world.login(alice)
    # Used once so that the principal is cached in Redis: the delete must drop it.
    warm = await world.client.get(f"/v2/users/{alice.user_id}", headers=bearer(session_token))
    assert warm.status_code == 200

    response = await world.client.delete(
        f"/v2/sessions/{session_id}", headers=bearer(session_token)
    )
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"details"}
    change_date = check_details(response.json()["details"], 2, org_id)
    await assert_last_event(
        world,
        session_id,
        sequence=2,
        aggregate_type="session",
        event_type="session.terminated",
        owner=org_id,
        change_date=change_date,
        creator=alice.user_id,
    )
    after = await world.client.get(f"/v2/users/{alice.user_id}", headers=bearer(session_token))
    assert after.status_code == 401
    assert after.json()["details"][0]["id"] == "AUTH-7fs1e"
    gone = await world.client.get(f"/v2/sessions/{session_id}", headers=bearer(admin))
    assert gone.status_code == 404
    assert await user_sequence(world, alice.user_id) == 1


# --- health, metrics, OpenAPI -----------------------------------------------------------


async def test_healthz_and_readyz(world: World) -> None:
    health = await world.client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    ready = await world.client.get("/readyz")
    assert ready.status_code == 200
    # The tests' broker is in memory: nothing to connect to.
    assert ready.json() == {
        "status": "ok",
        "postgres": "ok",
        "redis": "ok",
        "broker": "not checked",
    }


@pytest.mark.parametrize(
    ("broker_url", "state"),
    [
        ("amqp://guest:guest@127.0.0.1:5672//", "ok"),  # the machine's RabbitMQ
        ("redis://127.0.0.1:1/0", "unreachable"),
    ],
)
async def test_readyz_reports_the_broker_without_requiring_it(
    make_settings: Callable[..., Settings], broker_url: str, state: str
) -> None:
    """A broker down does not take the API out of rotation: changes still commit (their
    e-mails wait in the outbox); ``/readyz`` says so for the operator."""
    async with world_with(make_settings(broker_url=broker_url)) as world:
        ready = await world.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["broker"] == state


async def test_metrics_is_prometheus_text(world: World) -> None:
    await world.client.get("/healthz")
    response = await world.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE identity_" in response.text
    assert "identity_requests_total" in response.text


async def test_openapi_document_lists_every_endpoint(world: World) -> None:
    response = await world.client.get("/schema/openapi.json")
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    expected = {
        "/v2/users/human": {"post"},
        "/v2/users/{user_id}": {"get", "delete"},
        "/v2/users/{user_id}/lock": {"post"},
        "/v2/users/{user_id}/unlock": {"post"},
        "/v2/users/{user_id}/deactivate": {"post"},
        "/v2/users/{user_id}/reactivate": {"post"},
        "/v2/users/{user_id}/password": {"post"},
        "/v2/users/{user_id}/password_reset": {"post"},
        "/v2/sessions": {"post"},
        "/v2/sessions/{session_id}": {"get", "delete"},
        "/healthz": {"get"},
        "/readyz": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, sorted(paths)
        assert methods <= set(paths[path]), (path, paths[path])


async def test_openapi_browsable_ui(world: World) -> None:
    for path in ("/schema", "/schema/swagger"):
        response = await world.client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        assert response.headers["content-type"].startswith("text/html")
        assert "<html" in response.text.lower()


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_password_changes_and_hashes(world: World) -> None:
    org_id, admin = await world.admin()
    alice = await world.human(admin, org_id)
    name = 'identity_password_changes_total{verification="admin"}'
    before = _sample((await world.client.get("/metrics")).text, name)
    response = await world.set_password(
        admin, alice.user_id, {"newPassword": {"password": "Fresh!Passw0rd"}}
    )
    assert response.status_code == 200
    text = (await world.client.get("/metrics")).text
    assert _sample(text, name) == before + 1
    assert "identity_hashes_in_flight" in text
    # The API publishes nothing (the relay does): no publish counters here any more.
    assert "identity_outbox_publish" not in text
