"""One test (or a few) per error kind of the contract: the status, the gRPC code, the id and
the message, from every layer: validation, malformed JSON, routing, body size, auth,
permission, not found, conflict, unexpected exceptions and unreachable stores."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from api.domain import users
from api.http.app import create_app
from api.settings import Settings
from tests import foundation_support
from tests.foundation_support import Actors
from tests.support import STRONG_PASSWORD, World, assert_error, bearer

# One app, one event loop and one set of organizations and tokens for the whole module;
# tests that change users make their own.
pytestmark = pytest.mark.asyncio(loop_scope="module")
mworld = foundation_support.mworld
actors = foundation_support.actors

DETAIL_TYPE = "type.googleapis.com/zitadel.v1.ErrorDetail"
LENGTH_1_200 = "value length must be between 1 and 200 runes, inclusive"


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


def human_body(org_id: str, username: str | None = None) -> dict[str, Any]:
    username = username or unique("someone")
    return {
        "username": username,
        "organization": {"orgId": org_id},
        "profile": {"givenName": "Some", "familyName": "One"},
        "email": {"email": f"{username}@example.com"},
        "password": {"password": STRONG_PASSWORD},
    }


async def user_count(world: World, username: str) -> int:
    count: int = await world.db.fetchval("SELECT count(*) FROM users WHERE username = $1", username)
    return count


def login_body(login_name: str, password: str = STRONG_PASSWORD) -> dict[str, Any]:
    return {"checks": {"user": {"loginName": login_name}, "password": {"password": password}}}


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (
            "/v2/users/human",
            {"email": {"email": "x@example.com"}},
            "invalid AddHumanUserRequest.Profile: value is required",
        ),
        (
            "/v2/users/human",
            {
                "profile": {"givenName": "A", "familyName": "B"},
                "email": {"email": "x@example.com"},
                "password": {"password": "x" * 201},
            },
            "invalid AddHumanUserRequest.Password: embedded message failed validation"
            f" | caused by: invalid Password.Password: {LENGTH_1_200}",
        ),
        (
            "/v2/users/human",
            {
                "profile": {"givenName": "A", "familyName": "B"},
                "email": {"email": "x@example.com"},
                "password": {"password": STRONG_PASSWORD, "changeRequired": "true"},
            },
            "invalid AddHumanUserRequest.Password: embedded message failed validation"
            " | caused by: invalid Password.ChangeRequired: value must be a boolean",
        ),
        (
            "/v2/users/human",
            {
                "profile": {"givenName": "A", "familyName": "B"},
                "email": {"email": "x@example.com"},
                "password": {"password": STRONG_PASSWORD},
                "hashedPassword": {"hash": "$2b$10$abc"},
            },
            "invalid AddHumanUserRequest.PasswordType: only one of password, hashedPassword"
            " may be set",
        ),
        (
            "/v2/users/human",
            [1, 2, 3],
            "invalid AddHumanUserRequest: the body must be a JSON object",
        ),
        (
            "/v2/sessions",
            {"checks": {"user": {"loginName": "someone"}, "password": {"password": ""}}},
            "invalid CreateSessionRequest.Checks: embedded message failed validation"
            " | caused by: invalid Checks.Password: embedded message failed validation"
            f" | caused by: invalid CheckPassword.Password: {LENGTH_1_200}",
        ),
        (
            "/v2/sessions",
            {"checks": {"user": {"loginName": "someone"}, "password": {"password": 12345678}}},
            "invalid CreateSessionRequest.Checks: embedded message failed validation"
            " | caused by: invalid Checks.Password: embedded message failed validation"
            " | caused by: invalid CheckPassword.Password: value must be a string",
        ),
        (
            "/v2/sessions",
            {"checks": {"password": {"password": STRONG_PASSWORD}}},
            "invalid CreateSessionRequest.Checks: embedded message failed validation"
            " | caused by: invalid Checks.User: value is required",
        ),
    ],
    ids=[
        "missing-profile",
        "password-too-long",
        "bool-as-string",
        "both-of-oneof",
        "not-an-object",
        "empty-login-password",
        "number-as-password",
        "missing-user-check",
    ],
)
async def test_validation_error(
    mworld: World, actors: Actors, path: str, body: Any, message: str
) -> None:
    owner = actors.owner
    response = await mworld.client.post(path, json=body, headers=bearer(owner))
    assert_error(response, 400, 3, None, message)
    assert "details" not in response.json()


async def test_path_id_too_long(mworld: World, actors: Actors) -> None:
    owner = actors.owner
    response = await mworld.client.get("/v2/users/" + "1" * 201, headers=bearer(owner))
    assert_error(response, 400, 3, None, f"invalid GetUserByIDRequest.UserId: {LENGTH_1_200}")


async def test_validation_error_changes_nothing(mworld: World, actors: Actors) -> None:
    org_id, owner = actors.org_id, actors.owner
    name = unique("valid-name")
    body = human_body(org_id, name)
    body["password"]["password"] = ""
    response = await mworld.client.post("/v2/users/human", json=body, headers=bearer(owner))
    assert response.status_code == 400
    assert await user_count(mworld, name) == 0


# --- malformed JSON ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b'{"checks": {"password": {"password": "Leak3d!Secret" x}}}', "JSON is malformed: "),
        (b"{'password': 'Leak3d!Secret'}", "JSON is malformed: "),
        (
            b'{"checks": {"password": {"password": "Leak3d!Secret"',
            "JSON is malformed: Input data was truncated",
        ),
    ],
    ids=["garbage", "single-quotes", "truncated"],
)
@pytest.mark.parametrize(
    ("path", "proto"),
    [("/v2/users/human", "AddHumanUserRequest"), ("/v2/sessions", "CreateSessionRequest")],
)
async def test_malformed_json(
    mworld: World, actors: Actors, path: str, proto: str, content: bytes, words: str
) -> None:
    owner = actors.owner
    response = await mworld.client.post(
        path, content=content, headers={**bearer(owner), "Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == 3
    # msgspec's words, never the body itself.
    assert body["message"].startswith(f"invalid {proto}: {words}"), body
    assert "details" not in body
    assert "Leak3d" not in response.text


async def test_empty_body_is_an_empty_object(mworld: World, actors: Actors) -> None:
    owner = actors.owner
    response = await mworld.client.post("/v2/users/human", content=b"", headers=bearer(owner))
    assert_error(response, 400, 3, None, "invalid AddHumanUserRequest.Profile: value is required")


# --- routing ----------------------------------------------------------------------------


@pytest.mark.parametrize("token_kind", ["none", "valid", "bad"])
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v2/nothing"), ("POST", "/v2/users/123/frobnicate"), ("GET", "/")],
)
async def test_unknown_route(
    mworld: World, actors: Actors, token_kind: str, method: str, path: str
) -> None:
    owner = actors.owner
    headers = {"none": {}, "valid": bearer(owner), "bad": bearer("not-a-token")}[token_kind]
    response = await mworld.client.request(method, path, headers=headers)
    assert_error(response, 404, 5, None, "Not Found")


@pytest.mark.parametrize("token_kind", ["none", "valid", "bad"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v2/users/123"),
        ("GET", "/v2/sessions"),
        ("PATCH", "/v2/users/human"),
        ("GET", "/v2/users/123/lock"),
        ("POST", "/healthz"),
    ],
)
async def test_wrong_method(
    mworld: World, actors: Actors, token_kind: str, method: str, path: str
) -> None:
    owner = actors.owner
    headers = {"none": {}, "valid": bearer(owner), "bad": bearer("not-a-token")}[token_kind]
    response = await mworld.client.request(method, path, headers=headers)
    assert_error(response, 405, 12, None, "Method Not Allowed")


# --- body size --------------------------------------------------------------------------


def padded(body: dict[str, Any], size: int) -> bytes:
    """``body`` as JSON with a ``pad`` field making it exactly ``size`` bytes."""
    base = json.dumps({**body, "pad": ""}).encode()
    raw = json.dumps({**body, "pad": "x" * (size - len(base))}).encode()
    assert len(raw) == size
    return raw


async def test_body_over_64_kib(mworld: World, actors: Actors) -> None:
    org_id, owner = actors.org_id, actors.owner
    name = unique("too-big")
    big = padded(human_body(org_id, name), 64 * 1024 + 1)
    headers = {**bearer(owner), "Content-Type": "application/json"}
    response = await mworld.client.post("/v2/users/human", content=big, headers=headers)
    assert_error(response, 413, 3, None, "request body too large")
    assert await user_count(mworld, name) == 0
    # The login needs no token and is refused just the same.
    login = await mworld.client.post(
        "/v2/sessions",
        content=padded(login_body("someone"), 100 * 1024),
        headers={"Content-Type": "application/json"},
    )
    assert_error(login, 413, 3, None, "request body too large")


async def test_body_of_exactly_64_kib_is_read(mworld: World, actors: Actors) -> None:
    org_id, owner = actors.org_id, actors.owner
    exact = padded(human_body(org_id), 64 * 1024)
    headers = {**bearer(owner), "Content-Type": "application/json"}
    response = await mworld.client.post("/v2/users/human", content=exact, headers=headers)
    assert response.status_code == 201, response.text


async def test_bad_token_with_huge_body_is_401(mworld: World, actors: Actors) -> None:
    org_id = actors.org_id
    big = padded(human_body(org_id), 200 * 1024)
    headers = {**bearer("not-a-token"), "Content-Type": "application/json"}
    response = await mworld.client.post("/v2/users/human", content=big, headers=headers)
    assert_error(response, 401, 16, "AUTH-7fs1e", "Errors.Token.Invalid")


# --- authentication, permission, not found, conflict ------------------------------------


async def test_auth_missing_and_invalid(mworld: World, actors: Actors) -> None:
    org_id, owner = actors.org_id, actors.owner
    alice = await mworld.human(owner, org_id)
    missing = await mworld.client.get(f"/v2/users/{alice.user_id}")
    assert_error(missing, 401, 16, None, "auth header missing")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    invalid = await mworld.client.get(f"/v2/users/{alice.user_id}", headers=bearer("nope"))
    assert_error(invalid, 401, 16, "AUTH-7fs1e", "Errors.Token.Invalid")
    assert invalid.headers["www-authenticate"].startswith("Bearer")
    # An unknown token is remembered as unknown; it stays a 401 on the second try.
    again = await mworld.client.get(f"/v2/users/{alice.user_id}", headers=bearer("nope"))
    assert_error(again, 401, 16, "AUTH-7fs1e", "Errors.Token.Invalid")


@pytest.mark.parametrize("token", ["bad", "none"])
@pytest.mark.parametrize(
    "content", [b"{not json", b'{"profile": 5}', b"[]"], ids=["malformed", "invalid", "array"]
)
async def test_auth_comes_before_validation(
    mworld: World, actors: Actors, token: str, content: bytes
) -> None:
    org_id, owner = actors.org_id, actors.owner
    alice = await mworld.human(owner, org_id)
    headers = {"Content-Type": "application/json"}
    if token == "bad":
        headers.update(bearer("not-a-token"))
    for path in ("/v2/users/human", f"/v2/users/{alice.user_id}/password"):
        response = await mworld.client.post(path, content=content, headers=headers)
        if token == "bad":
            assert_error(response, 401, 16, "AUTH-7fs1e", "Errors.Token.Invalid")
        else:
            assert_error(response, 401, 16, None, "auth header missing")


async def test_permission_denied(mworld: World, actors: Actors) -> None:
    org_id, owner = actors.org_id, actors.owner
    alice = await mworld.human(owner, org_id)
    stranger = actors.other_owner
    response = await mworld.client.post(f"/v2/users/{alice.user_id}/lock", headers=bearer(stranger))
    assert_error(response, 403, 7, "AUTH-AWfge", "No matching permissions found")
    create = await mworld.client.post(
        "/v2/users/human", json=human_body(org_id), headers=bearer(stranger)
    )
    assert_error(create, 403, 7, "AUTH-AWfge", "No matching permissions found")


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("GET", ""),
        ("DELETE", ""),
        ("POST", "/lock"),
        ("POST", "/unlock"),
        ("POST", "/deactivate"),
        ("POST", "/reactivate"),
    ],
)
async def test_user_not_found(mworld: World, actors: Actors, method: str, suffix: str) -> None:
    owner = actors.owner
    response = await mworld.client.request(
        method, f"/v2/users/123456789012345678{suffix}", headers=bearer(owner)
    )
    assert_error(response, 404, 5, "COMMAND-SAF4f", "User could not be found")


async def test_login_unknown_user_not_found(mworld: World, actors: Actors) -> None:
    response = await mworld.client.post("/v2/sessions", json=login_body("nobody-at-all"))
    assert_error(response, 404, 5, "COMMAND-SAF4f", "User could not be found")
    by_id = await mworld.client.post(
        "/v2/sessions",
        json={"checks": {"user": {"userId": "999"}, "password": {"password": STRONG_PASSWORD}}},
    )
    assert_error(by_id, 404, 5, "COMMAND-SAF4f", "User could not be found")


async def test_missing_user_is_404_even_for_another_org(mworld: World, actors: Actors) -> None:
    stranger = actors.other_owner
    response = await mworld.client.get("/v2/users/123456789012345678", headers=bearer(stranger))
    assert_error(response, 404, 5, "COMMAND-SAF4f", "User could not be found")


async def test_duplicate_username_in_org_is_409(mworld: World, actors: Actors) -> None:
    org_id, owner = await mworld.admin()
    taken = unique("taken")
    first = await mworld.client.post(
        "/v2/users/human", json=human_body(org_id, taken), headers=bearer(owner)
    )
    assert first.status_code == 201, first.text
    for name in (taken, taken.upper()):
        again = await mworld.client.post(
            "/v2/users/human", json=human_body(org_id, name), headers=bearer(owner)
        )
        assert_error(again, 409, 6, "COMMAND-k2un8", "Username is already taken")
    # The same name in another organization is fine.
    other_org, other_owner = actors.other_org_id, actors.other_owner
    elsewhere = await mworld.client.post(
        "/v2/users/human", json=human_body(other_org, taken), headers=bearer(other_owner)
    )
    assert elsewhere.status_code == 201, elsewhere.text
    # The refused attempts appended nothing.
    count = await mworld.db.fetchval(
        "SELECT count(*) FROM events e JOIN users u ON u.id = e.aggregate_id"
        " WHERE u.org_id = $1 AND e.event_type = 'user.human.added'",
        org_id,
    )
    assert count == 1


async def test_duplicate_user_id_is_409(mworld: World, actors: Actors) -> None:
    org_id, owner = actors.org_id, actors.owner
    user_id = unique("fixed")
    body = {**human_body(org_id), "userId": user_id}
    assert (
        await mworld.client.post("/v2/users/human", json=body, headers=bearer(owner))
    ).status_code == 201
    body = {**human_body(org_id), "userId": user_id}
    again = await mworld.client.post("/v2/users/human", json=body, headers=bearer(owner))
    assert again.status_code == 409, again.text
    assert again.json()["code"] == 6


# --- unexpected exceptions --------------------------------------------------------------

SECRET = "pg-password-hunter2-$argon2id$v=19$SECRETHASH"


async def test_unexpected_exception_is_a_bare_500(
    mworld: World,
    actors: Actors,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    org_id, owner = actors.org_id, actors.owner
    alice = await mworld.human(owner, org_id)

    async def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError(f"could not talk to the database with {SECRET}")

    monkeypatch.setattr(users, "get_user", boom)
    caplog.set_level(logging.DEBUG)
    async with app_client(settings) as client:
        response = await client.get(f"/v2/users/{alice.user_id}", headers=bearer(owner))
        assert response.status_code == 500
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == {
            "code": 13,
            "message": "Internal error (SERVER-Int3r)",
            "details": [{"@type": DETAIL_TYPE, "id": "SERVER-Int3r", "message": "Internal error"}],
        }
        assert SECRET not in response.text
        assert "Traceback" not in response.text and "RuntimeError" not in response.text
        # The app keeps serving.
        assert (await client.get("/healthz")).status_code == 200
    # Logged by type and frames, never by the exception's text. (Litestar's logging setup
    # may replace the root handlers, so look at stderr as well as at caplog.)
    captured = capfd.readouterr()
    logged = caplog.text + captured.out + captured.err
    assert "unexpected RuntimeError" in logged
    assert "SECRETHASH" not in logged
    assert "hunter2" not in logged


# --- unreachable stores -----------------------------------------------------------------


def assert_unavailable(response: httpx.Response) -> None:
    assert_error(response, 503, 14, "SERVER-Unav1", "Service unavailable")
    assert response.headers["retry-after"] == "1"


def assert_not_ready(response: httpx.Response, store: str) -> None:
    """``/readyz`` names the store that is out of reach."""
    message = f"Not ready: {store} unavailable"
    assert_error(response, 503, 14, "SERVER-Unav1", message)
    assert response.headers["retry-after"] == "1"


async def test_postgres_unreachable(
    mworld: World,
    actors: Actors,
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    org_id, owner = actors.org_id, actors.owner
    alice = await mworld.human(owner, org_id)
    down = make_settings(database_url="postgresql://root@127.0.0.1:1/nope")
    caplog.set_level(logging.WARNING, logger="identity.outages")
    async with app_client(down) as client:
        health = await client.get("/healthz")
        assert health.status_code == 200
        assert_not_ready(await client.get("/readyz"), "postgres")
        assert_unavailable(await client.post("/v2/sessions", json=login_body(alice.username)))
        # A token never seen before must be looked up in Postgres.
        assert_unavailable(
            await client.get(f"/v2/users/{alice.user_id}", headers=bearer(uuid.uuid4().hex))
        )
        # A cached token gets through auth; reading the user then needs Postgres.
        cached = await mworld.client.get(f"/v2/users/{alice.user_id}", headers=bearer(owner))
        assert cached.status_code == 200
        assert_unavailable(await client.get(f"/v2/users/{alice.user_id}", headers=bearer(owner)))
        assert_unavailable(
            await client.post("/v2/users/human", json=human_body(org_id), headers=bearer(owner))
        )
        # Said once for the outage, however many requests it failed.
        for _ in range(20):
            await asyncio.sleep(0.1)
            if "postgres is out of reach" in caplog.text:
                break
        assert caplog.text.count("postgres is out of reach") == 1, caplog.text
        metrics_text = (await client.get("/metrics")).text
        assert 'identity_dependency_up{dependency="postgres"} 0.0' in metrics_text
        assert 'identity_dependency_up{dependency="redis"} 1.0' in metrics_text


async def test_redis_unreachable(
    mworld: World, actors: Actors, make_settings: Callable[..., Settings]
) -> None:
    org_id, owner = actors.org_id, actors.owner
    alice = await mworld.human(owner, org_id)
    down = make_settings(redis_url="redis://127.0.0.1:1/0")
    async with app_client(down) as client:
        health = await client.get("/healthz")
        assert health.status_code == 200
        assert_not_ready(await client.get("/readyz"), "redis")
        assert_unavailable(await client.get(f"/v2/users/{alice.user_id}", headers=bearer(owner)))
        assert_unavailable(await client.post("/v2/sessions", json=login_body(alice.username)))
    # Nothing was half-written: no session exists for the user.
    assert (
        await mworld.db.fetchval("SELECT count(*) FROM sessions WHERE user_id = $1", alice.user_id)
        == 0
    )
