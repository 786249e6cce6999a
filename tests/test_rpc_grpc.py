"""Native gRPC (HTTP/2 cleartext) with ``grpcio`` stubs generated from our .proto files,
against a running ``identity serve``: every branch, the other RPCs, and errors with the same
status code, message and ``zitadel.v1.ErrorDetail`` as REST."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from google.rpc import status_pb2

from api.rpc.gen.zitadel.message_pb2 import ErrorDetail
from api.rpc.gen.zitadel.object.v2 import object_pb2
from api.rpc.gen.zitadel.session.v2 import session_service_pb2 as session_pb
from api.rpc.gen.zitadel.session.v2 import session_service_pb2_grpc as session_grpc
from api.rpc.gen.zitadel.user.v2 import email_pb2, password_pb2, user_pb2
from api.rpc.gen.zitadel.user.v2 import user_service_pb2 as user_pb
from api.rpc.gen.zitadel.user.v2 import user_service_pb2_grpc as user_grpc
from api.settings import Settings
from tests.rpc_support import Server, serve
from tests.support import World, bearer

NEW = "N3w!Passw0rd-grpc"
OTHER = "0ther!Passw0rd-grpc"
GRPC_CODES = {
    3: grpc.StatusCode.INVALID_ARGUMENT,
    5: grpc.StatusCode.NOT_FOUND,
    7: grpc.StatusCode.PERMISSION_DENIED,
    9: grpc.StatusCode.FAILED_PRECONDITION,
    16: grpc.StatusCode.UNAUTHENTICATED,
}


@pytest.fixture(scope="module", params=["uvicorn-h2", "uvicorn"])
def server(base_settings: Settings, request: pytest.FixtureRequest) -> Iterator[Server]:
    """The default server (gRPC on the main port) and the fallback (httptools, with gRPC
    from a Hypercorn child on ``--grpc-port``)."""
    yield from serve(base_settings, server=request.param)


@pytest.fixture
async def channel(server: Server) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.grpc) as channel:
        yield channel


def auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def password(value: str) -> password_pb2.Password:
    return password_pb2.Password(password=value)


async def test_every_branch_of_set_password(world: World, channel: grpc.aio.Channel) -> None:
    org_id, token = await world.admin()
    user = await world.human(token, org_id)
    users = user_grpc.UserServiceStub(channel)

    admin = await users.SetPassword(
        user_pb.SetPasswordRequest(user_id=user.user_id, new_password=password(NEW)),
        metadata=auth(token),
    )
    assert (admin.details.sequence, admin.details.resource_owner) == (2, org_id)
    assert admin.details.change_date.seconds > 0

    _, session_token = await world.login(user, NEW)
    current = await users.SetPassword(
        user_pb.SetPasswordRequest(
            user_id=user.user_id, new_password=password(OTHER), current_password=NEW
        ),
        metadata=auth(session_token),
    )
    assert current.details.sequence == 3

    reset = await users.PasswordReset(
        user_pb.PasswordResetRequest(
            user_id=user.user_id, return_code=password_pb2.ReturnPasswordResetCode()
        ),
        metadata=auth(token),
    )
    assert reset.details.sequence == 4 and len(reset.verification_code) == 6
    with_code = await users.SetPassword(
        user_pb.SetPasswordRequest(
            user_id=user.user_id,
            new_password=password(NEW),
            verification_code=reset.verification_code,
        ),
        metadata=auth(token),
    )
    assert with_code.details.sequence == 5
    await world.login(user, NEW)


async def test_reset_link_is_sent_not_returned(world: World, channel: grpc.aio.Channel) -> None:
    org_id, token = await world.admin()
    user = await world.human(token, org_id)
    reset = await user_grpc.UserServiceStub(channel).PasswordReset(
        user_pb.PasswordResetRequest(
            user_id=user.user_id,
            send_link=password_pb2.SendPasswordResetLink(
                notification_type=password_pb2.NOTIFICATION_TYPE_Email
            ),
        ),
        metadata=auth(token),
    )
    assert not reset.HasField("verification_code")
    assert reset.details.sequence == 2


async def test_users_and_sessions(world: World, channel: grpc.aio.Channel) -> None:
    org_id, token = await world.admin()
    users = user_grpc.UserServiceStub(channel)
    added = await users.AddHumanUser(
        user_pb.AddHumanUserRequest(
            username="grpc-alice",
            organization=object_pb2.Organization(org_id=org_id),
            profile=user_pb2.SetHumanProfile(given_name="Alice", family_name="Grpc"),
            email=email_pb2.SetHumanEmail(email="grpc-alice@example.com", is_verified=True),
            password=password(NEW),
        ),
        metadata=auth(token),
    )
    assert added.details.sequence == 1 and added.details.resource_owner == org_id

    got = await users.GetUserByID(
        user_pb.GetUserByIDRequest(user_id=added.user_id), metadata=auth(token)
    )
    assert got.user.username == "grpc-alice"
    assert got.user.state == user_pb2.USER_STATE_ACTIVE
    assert got.user.human.profile.display_name == "Alice Grpc"
    assert got.user.human.email.email == "grpc-alice@example.com"

    for rpc, request, state in [
        (users.LockUser, user_pb.LockUserRequest, user_pb2.USER_STATE_LOCKED),
        (users.UnlockUser, user_pb.UnlockUserRequest, user_pb2.USER_STATE_ACTIVE),
        (users.DeactivateUser, user_pb.DeactivateUserRequest, user_pb2.USER_STATE_INACTIVE),
        (users.ReactivateUser, user_pb.ReactivateUserRequest, user_pb2.USER_STATE_ACTIVE),
    ]:
        await rpc(request(user_id=added.user_id), metadata=auth(token))
        now = await users.GetUserByID(
            user_pb.GetUserByIDRequest(user_id=added.user_id), metadata=auth(token)
        )
        assert now.user.state == state

    sessions = session_grpc.SessionServiceStub(channel)
    created = await sessions.CreateSession(
        session_pb.CreateSessionRequest(
            checks=session_pb.Checks(
                user=session_pb.CheckUser(user_id=added.user_id),
                password=session_pb.CheckPassword(password=NEW),
            )
        )
    )
    assert created.session_id and created.session_token
    deleted = await sessions.DeleteSession(
        session_pb.DeleteSessionRequest(session_id=created.session_id),
        metadata=auth(created.session_token),
    )
    assert deleted.details.sequence == 2

    removed = await users.DeleteUser(
        user_pb.DeleteUserRequest(user_id=added.user_id), metadata=auth(token)
    )
    assert removed.details.resource_owner == org_id


def decoded(error: grpc.aio.AioRpcError) -> tuple[Any, str, list[tuple[str, str]]]:
    """The status code, message and ``ErrorDetail``s of a gRPC error."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    details = []
    if raw:
        status = status_pb2.Status.FromString(raw)
        assert status.message == error.details()
        for any_detail in status.details:
            assert any_detail.type_url == "type.googleapis.com/zitadel.v1.ErrorDetail"
            detail = ErrorDetail.FromString(any_detail.value)
            details.append((detail.id, detail.message))
    return error.code(), error.details() or "", details


ERROR_CASES = [
    pytest.param("unknown-user", id="unknown user: 404"),
    pytest.param("wrong-current", id="wrong current password: 400"),
    pytest.param("no-permission", id="no permission: 403"),
    pytest.param("bad-token", id="unknown token: 401"),
    pytest.param("invalid-request", id="invalid request: 400 without an id"),
    pytest.param("user-id-too-long", id="user id too long: 400 without an id"),
]


@pytest.mark.parametrize("case", ERROR_CASES)
async def test_errors_are_the_rest_errors(
    world: World, channel: grpc.aio.Channel, case: str
) -> None:
    org_id, token = await world.admin()
    user = await world.human(token, org_id)
    user_id, body = user.user_id, {"newPassword": {"password": NEW}}
    if case == "unknown-user":
        user_id = "no-such-user"
    elif case == "wrong-current":
        body["currentPassword"] = OTHER
    elif case == "no-permission":
        _, token = await world.admin()  # an owner of another organization
    elif case == "bad-token":
        token = "not-a-token"
    elif case == "invalid-request":
        body = {"newPassword": {"password": "x" * 201}}
    elif case == "user-id-too-long":
        user_id = "u" * 201

    rest = await world.client.post(
        f"/v2/users/{user_id}/password", json=body, headers=bearer(token)
    )
    expected = rest.json()

    request = user_pb.SetPasswordRequest(
        user_id=user_id,
        new_password=password(body["newPassword"]["password"]),
        current_password=body.get("currentPassword", ""),
    )
    if "currentPassword" not in body:
        request.ClearField("current_password")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await user_grpc.UserServiceStub(channel).SetPassword(request, metadata=auth(token))

    code, message, details = decoded(raised.value)
    assert code == GRPC_CODES[expected["code"]]
    assert message == expected["message"]
    assert details == [(d["id"], d["message"]) for d in expected.get("details", [])]


async def test_missing_metadata_is_the_rest_401(world: World, channel: grpc.aio.Channel) -> None:
    rest = await world.client.post("/v2/users/x/password", json={})
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await user_grpc.UserServiceStub(channel).SetPassword(
            user_pb.SetPasswordRequest(user_id="x", new_password=password(NEW))
        )
    code, message, details = decoded(raised.value)
    assert (code, message, details) == (grpc.StatusCode.UNAUTHENTICATED, rest.json()["message"], [])
