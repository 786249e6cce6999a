"""ZITADEL's official Python SDK (``zitadel-client`` from PyPI, unchanged) against a running
``identity serve``: it speaks Connect unary JSON (``POST /zitadel.user.v2.UserService/...``,
``userId`` in the body, no ``Connect-Protocol-Version`` header).

Every branch succeeds, and its errors carry the HTTP status and the Connect code and message
of the REST error for the same situation.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from zitadel_client import ApiError, Zitadel
from zitadel_client.models import (
    UserServiceNotificationType,
    UserServicePassword,
    UserServicePasswordResetRequest,
    UserServiceSendPasswordResetLink,
    UserServiceSetPasswordRequest,
)

from api.settings import Settings
from tests.rpc_support import Server, serve
from tests.support import World, bearer

T = TypeVar("T")
NEW = "N3w!Passw0rd-sdk"
OTHER = "0ther!Passw0rd-sdk"
CONNECT_CODES = {
    3: "invalid_argument",
    5: "not_found",
    9: "failed_precondition",
    16: "unauthenticated",
}


@pytest.fixture(scope="module")
def server(base_settings: Settings) -> Iterator[Server]:
    yield from serve(base_settings)


async def sdk(fn: Callable[[], T]) -> T:
    """The SDK is synchronous (urllib3): call it off the event loop."""
    return await asyncio.to_thread(fn)


def set_password(
    user_id: str, password: str, *, current: str | None = None, code: str | None = None
) -> UserServiceSetPasswordRequest:
    return UserServiceSetPasswordRequest(
        user_id=user_id,
        new_password=UserServicePassword(password=password),
        current_password=current,
        verification_code=code,
    )


def assert_details(details: Any, sequence: int, org_id: str) -> None:
    assert details.sequence == str(sequence)  # proto3 JSON: uint64 as a string
    assert details.resource_owner == org_id
    assert details.change_date is not None


async def test_set_password_as_admin(world: World, server: Server) -> None:
    org_id, token = await world.admin()
    user = await world.human(token, org_id)
    client = Zitadel.with_access_token(server.http, token)

    response = await sdk(lambda: client.users.set_password(set_password(user.user_id, NEW)))

    assert_details(response.details, 2, org_id)
    await world.login(user, NEW)


async def test_set_password_with_the_current_password_of_the_users_own_session(
    world: World, server: Server
) -> None:
    org_id, token = await world.admin()
    user = await world.human(token, org_id)
    _, session_token = await world.login(user)
    client = Zitadel.with_access_token(server.http, session_token)

    request = set_password(user.user_id, NEW, current=user.password)
    response = await sdk(lambda: client.users.set_password(request))

    assert_details(response.details, 2, org_id)
    await world.login(user, NEW)


async def test_reset_code_returned_then_used(world: World, server: Server) -> None:
    org_id, token = await world.admin()
    user = await world.human(token, org_id)
    client = Zitadel.with_access_token(server.http, token)

    reset = await sdk(
        lambda: client.users.password_reset(
            UserServicePasswordResetRequest(user_id=user.user_id, return_code={})
        )
    )
    assert reset.verification_code and len(reset.verification_code) == 6
    assert_details(reset.details, 2, org_id)

    request = set_password(user.user_id, NEW, code=reset.verification_code)
    changed = await sdk(lambda: client.users.set_password(request))
    assert_details(changed.details, 3, org_id)
    await world.login(user, NEW)


async def test_reset_link_sent(world: World, server: Server) -> None:
    org_id, token = await world.admin()
    user = await world.human(token, org_id)
    client = Zitadel.with_access_token(server.http, token)

    reset = await sdk(
        lambda: client.users.password_reset(
            UserServicePasswordResetRequest(
                user_id=user.user_id,
                send_link=UserServiceSendPasswordResetLink(
                    notification_type=UserServiceNotificationType.NOTIFICATION_TYPE_EMAIL,
                    url_template="https://login.example.com/reset?u={{.UserID}}&c={{.Code}}",
                ),
            )
        )
    )

    assert reset.verification_code is None  # e-mailed, never returned
    assert_details(reset.details, 2, org_id)
    row = await world.db.fetchrow(
        "SELECT task, payload FROM outbox WHERE aggregate_id = $1 ORDER BY id DESC LIMIT 1",
        user.user_id,
    )
    assert row["task"] == "identity.send_password_reset_email"
    assert row["payload"]["urlTemplate"].startswith("https://login.example.com/reset")


async def _same_error_as_rest(
    world: World, server: Server, token: str, request: UserServiceSetPasswordRequest
) -> None:
    """The SDK's ApiError for ``request`` and the REST answer for the same change agree."""
    body = json.loads(request.to_json())
    user_id = body.pop("userId")
    rest = await world.client.post(
        f"/v2/users/{user_id}/password", json=body, headers=bearer(token)
    )
    rest_body = rest.json()

    client = Zitadel.with_access_token(server.http, token)
    with pytest.raises(ApiError) as raised:
        await sdk(lambda: client.users.set_password(request))
    error = raised.value

    assert error.code == rest.status_code
    body = error.response_body
    connect = body if isinstance(body, dict) else json.loads(body)
    assert connect["code"] == CONNECT_CODES[rest_body["code"]]
    assert connect["message"] == rest_body["message"]
    if rest_body.get("details"):
        assert connect["details"][0]["type"] == "zitadel.v1.ErrorDetail"


async def test_unknown_user_is_the_rest_404(world: World, server: Server) -> None:
    _, token = await world.admin()
    await _same_error_as_rest(world, server, token, set_password("no-such-user", NEW))


async def test_wrong_current_password_is_the_rest_400(world: World, server: Server) -> None:
    org_id, token = await world.admin()
    user = await world.human(token, org_id)
    request = set_password(user.user_id, NEW, current=OTHER)
    await _same_error_as_rest(world, server, token, request)


async def test_missing_token_is_the_rest_401(world: World, server: Server) -> None:
    org_id, token = await world.admin()
    user = await world.human(token, org_id)
    # The SDK always sends "Bearer <token>": with no token that is "Bearer ", as over REST.
    await _same_error_as_rest(world, server, "", set_password(user.user_id, NEW))
