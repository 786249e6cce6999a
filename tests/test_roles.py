"""Who may call what: every endpoint that needs a token, for every kind of caller.

Callers: an IAM_OWNER of another organization (allowed anywhere), ORG_OWNER and
ORG_USER_MANAGER of the user's organization (allowed), ORG_OWNER of another organization
(403), the user's own session (allowed only where the contract lets a user act on itself),
another user's session in the same organization (403), no token (401 without details) and a
bad token (401 AUTH-7fs1e).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests import foundation_support
from tests.foundation_support import Actors
from tests.support import STRONG_PASSWORD, Human, World, assert_error, bearer

# Module-scoped fixtures: one app and one set of organizations and tokens for this module.
mworld = foundation_support.mworld
actors = foundation_support.actors

# One app, one event loop and one set of organizations and tokens for the whole module;
# every test still gets users and sessions of its own.
pytestmark = pytest.mark.asyncio(loop_scope="module")

NEW_PASSWORD = "N3w!Passw0rd-x"

IAM = "iam_owner_of_other_org"
OWNER = "org_owner"
MANAGER = "org_user_manager"
OTHER_OWNER = "org_owner_of_other_org"
SELF = "self_session"
PEER = "peer_session_same_org"
NO_TOKEN = "no_token"
BAD_TOKEN = "bad_token"
CALLERS = [IAM, OWNER, MANAGER, OTHER_OWNER, SELF, PEER, NO_TOKEN, BAD_TOKEN]
ADMINS = frozenset({IAM, OWNER, MANAGER})


@dataclass
class Scene:
    org_id: str
    owner: str
    target: Human
    session_id: str  # the target's own session
    tokens: dict[str, str | None]


@dataclass(frozen=True)
class Op:
    name: str
    method: str
    path: Callable[[Scene], str]
    allowed: frozenset[str]
    status: int = 200
    body: Callable[[Scene], dict[str, Any]] | None = None
    # A state change made by the owner before the call ("lock", "deactivate").
    setup: str | None = None
    # Bumps the user's sequence when it succeeds.
    user_change: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _user_path(suffix: str = "") -> Callable[[Scene], str]:
    return lambda s: f"/v2/users/{s.target.user_id}{suffix}"


def _new_user_body(s: Scene) -> dict[str, Any]:
    return {
        "username": f"new-{s.target.username}",
        "organization": {"orgId": s.org_id},
        "profile": {"givenName": "New", "familyName": "User"},
        "email": {"email": f"new-{s.target.email}"},
        "password": {"password": STRONG_PASSWORD},
    }


OPS = [
    Op("create_user", "POST", lambda s: "/v2/users/human", ADMINS, 201, _new_user_body),
    Op("get_user", "GET", _user_path(), ADMINS | {SELF}),
    Op("lock", "POST", _user_path("/lock"), ADMINS, user_change=True),
    Op("unlock", "POST", _user_path("/unlock"), ADMINS, setup="lock", user_change=True),
    Op("deactivate", "POST", _user_path("/deactivate"), ADMINS, user_change=True),
    # A deactivated user's own token no longer works (401, tested below), so the self case
    # runs against an active user: the permission check comes before the state check.
    Op(
        "reactivate",
        "POST",
        _user_path("/reactivate"),
        ADMINS,
        setup="deactivate",
        user_change=True,
    ),
    Op("delete_user", "DELETE", _user_path(), ADMINS, user_change=True),
    Op(
        "password_with_current",
        "POST",
        _user_path("/password"),
        ADMINS | {SELF},
        body=lambda s: {
            "newPassword": {"password": NEW_PASSWORD},
            "currentPassword": STRONG_PASSWORD,
        },
        user_change=True,
    ),
    Op(
        "password_admin_set",
        "POST",
        _user_path("/password"),
        ADMINS,
        body=lambda s: {"newPassword": {"password": NEW_PASSWORD}},
        user_change=True,
    ),
    Op("get_session", "GET", lambda s: f"/v2/sessions/{s.session_id}", ADMINS | {SELF}),
    Op("delete_session", "DELETE", lambda s: f"/v2/sessions/{s.session_id}", ADMINS | {SELF}),
]


async def build_scene(world: World, actors: Actors, caller: str) -> Scene:
    target = await world.human(actors.owner, actors.org_id)
    session_id, self_token = await world.login(target)
    peer_token = None
    if caller == PEER:
        peer = await world.human(actors.owner, actors.org_id)
        _, peer_token = await world.login(peer)
    tokens: dict[str, str | None] = {
        IAM: actors.iam_elsewhere,
        OWNER: actors.owner,
        MANAGER: actors.manager,
        OTHER_OWNER: actors.other_owner,
        SELF: self_token,
        PEER: peer_token,
        NO_TOKEN: None,
        BAD_TOKEN: "this-is-not-a-valid-token",
    }
    return Scene(actors.org_id, actors.owner, target, session_id, tokens)


async def user_sequence(world: World, user_id: str) -> int:
    value: int = await world.db.fetchval("SELECT sequence FROM users WHERE id = $1", user_id)
    return value


async def call(world: World, op: Op, scene: Scene, token: str | None) -> httpx.Response:
    headers = bearer(token) if token is not None else {}
    body = op.body(scene) if op.body else None
    response: httpx.Response = await world.client.request(
        op.method, op.path(scene), json=body, headers=headers
    )
    return response


def assert_success(op: Op, scene: Scene, response: httpx.Response, before: int) -> None:
    assert response.status_code == op.status, response.text
    body = response.json()
    if op.name == "create_user":
        assert body["details"]["resourceOwner"] == scene.org_id
        assert body["details"]["sequence"] == "1"
    elif op.name == "get_user":
        assert body["user"]["userId"] == scene.target.user_id
    elif op.name == "get_session":
        assert body["session"]["id"] == scene.session_id
        assert body["session"]["factors"]["user"]["id"] == scene.target.user_id
    elif op.name == "delete_session":
        assert body["details"]["sequence"] == "2"
        assert body["details"]["resourceOwner"] == scene.org_id
    else:
        assert op.user_change
        assert body["details"]["sequence"] == str(before + 1)
        assert body["details"]["resourceOwner"] == scene.org_id


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("op", OPS, ids=[op.name for op in OPS])
async def test_role_matrix(mworld: World, actors: Actors, op: Op, caller: str) -> None:
    world = mworld
    scene = await build_scene(world, actors, caller)
    if op.setup and caller != SELF:
        prepared = await world.client.post(
            f"/v2/users/{scene.target.user_id}/{op.setup}", headers=bearer(scene.owner)
        )
        assert prepared.status_code == 200, prepared.text
    before = await user_sequence(world, scene.target.user_id)

    response = await call(world, op, scene, scene.tokens[caller])

    if caller == NO_TOKEN:
        assert_error(response, 401, 16, None, "auth header missing")
        assert "details" not in response.json()
        assert response.headers["www-authenticate"].startswith("Bearer")
    elif caller == BAD_TOKEN:
        assert_error(response, 401, 16, "AUTH-7fs1e", "Errors.Token.Invalid")
        assert response.headers["www-authenticate"].startswith("Bearer")
    elif caller in op.allowed:
        assert_success(op, scene, response, before)
    else:
        assert_error(response, 403, 7, "AUTH-AWfge", "No matching permissions found")
    if not (caller in op.allowed and op.user_change):
        # A refused call changes nothing.
        assert await user_sequence(world, scene.target.user_id) == before
    if op.name == "delete_session" and caller not in op.allowed:
        still = await world.client.get(
            f"/v2/sessions/{scene.session_id}", headers=bearer(scene.owner)
        )
        assert still.status_code == 200, still.text


async def test_deactivated_user_cannot_reactivate_itself(mworld: World, actors: Actors) -> None:
    """The own token of a deactivated user stops working: 401, not a way back in."""
    world = mworld
    org_id, owner = actors.org_id, actors.owner
    alice = await world.human(owner, org_id)
    _, self_token = await world.login(alice)
    cached = await world.client.get(f"/v2/users/{alice.user_id}", headers=bearer(self_token))
    assert cached.status_code == 200
    gone = await world.client.post(f"/v2/users/{alice.user_id}/deactivate", headers=bearer(owner))
    assert gone.status_code == 200
    response = await world.client.post(
        f"/v2/users/{alice.user_id}/reactivate", headers=bearer(self_token)
    )
    assert_error(response, 401, 16, "AUTH-7fs1e", "Errors.Token.Invalid")
    assert await user_sequence(world, alice.user_id) == 2


async def test_locked_user_keeps_session_but_cannot_unlock_itself(
    mworld: World, actors: Actors
) -> None:
    world = mworld
    org_id, owner = actors.org_id, actors.owner
    alice = await world.human(owner, org_id)
    _, self_token = await world.login(alice)
    locked = await world.client.post(f"/v2/users/{alice.user_id}/lock", headers=bearer(owner))
    assert locked.status_code == 200
    read = await world.client.get(f"/v2/users/{alice.user_id}", headers=bearer(self_token))
    assert read.status_code == 200
    assert read.json()["user"]["state"] == "USER_STATE_LOCKED"
    response = await world.client.post(
        f"/v2/users/{alice.user_id}/unlock", headers=bearer(self_token)
    )
    assert_error(response, 403, 7, "AUTH-AWfge", "No matching permissions found")


async def test_machine_token_of_a_user_does_not_act_as_self(mworld: World, actors: Actors) -> None:
    """Self means a session token: a PAT without a role may not even read its own user."""
    world = mworld
    org_id = actors.org_id
    token = await world.token(org_id, "ORG_OWNER")
    machine_id = await world.db.fetchval(
        "SELECT user_id FROM personal_access_tokens ORDER BY created_at DESC LIMIT 1"
    )
    await world.db.execute("UPDATE users SET role = NULL WHERE id = $1", machine_id)
    response = await world.client.get(f"/v2/users/{machine_id}", headers=bearer(token))
    assert_error(response, 403, 7, "AUTH-AWfge", "No matching permissions found")


@pytest.mark.parametrize(
    "header",
    ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "Token abc", "Bearer " + "x" * 600],
)
async def test_malformed_authorization_header_is_token_invalid(
    mworld: World, actors: Actors, header: str
) -> None:
    world = mworld
    org_id, owner = actors.org_id, actors.owner
    alice = await world.human(owner, org_id)
    response = await world.client.get(
        f"/v2/users/{alice.user_id}", headers={"Authorization": header}
    )
    assert_error(response, 401, 16, "AUTH-7fs1e", "Errors.Token.Invalid")


async def test_empty_authorization_header_is_missing(mworld: World, actors: Actors) -> None:
    world = mworld
    org_id, owner = actors.org_id, actors.owner
    alice = await world.human(owner, org_id)
    response = await world.client.get(f"/v2/users/{alice.user_id}", headers={"Authorization": ""})
    assert_error(response, 401, 16, None, "auth header missing")


@pytest.mark.parametrize("header", [None, "Bearer not-a-valid-token"], ids=["none", "bad"])
async def test_open_endpoints_need_no_token(
    mworld: World, actors: Actors, header: str | None
) -> None:
    """The login, health, metrics and the OpenAPI document ignore the Authorization header."""
    world = mworld
    alice = await world.human(actors.owner, actors.org_id)
    headers = {"Authorization": header} if header else {}
    login = await world.client.post(
        "/v2/sessions",
        json={
            "checks": {
                "user": {"loginName": alice.username},
                "password": {"password": alice.password},
            }
        },
        headers=headers,
    )
    assert login.status_code == 201, login.text
    for path in ("/healthz", "/readyz", "/metrics", "/schema/openapi.json"):
        response = await world.client.get(path, headers=headers)
        assert response.status_code == 200, (path, response.text)
