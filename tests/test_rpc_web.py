"""Connect (JSON and proto) and gRPC-Web (binary) with a real client (``connectrpc``'s), one
gRPC-Web request framed by hand over plain HTTP/1.1, compressed requests, and CORS, against a
running ``identity serve``."""

from __future__ import annotations

import base64
import gzip
import json
import struct
from collections.abc import Iterator

import httpx
import pytest
from connectrpc.code import Code
from connectrpc.compat import google_protobuf_binary_codec, google_protobuf_json_codec
from connectrpc.errors import ConnectError
from connectrpc.protocol import ProtocolType
from litestar.testing import AsyncTestClient

from api.domain import users
from api.main import compose
from api.rpc.gen.zitadel.message_pb2 import ErrorDetail
from api.rpc.gen.zitadel.user.v2 import password_pb2
from api.rpc.gen.zitadel.user.v2 import user_service_pb2 as user_pb
from api.rpc.gen.zitadel.user.v2.user_service_connect import UserServiceClient
from api.settings import Settings
from tests.rpc_support import Server, serve
from tests.support import World

NEW = "N3w!Passw0rd-web"
ORIGIN = "https://app.example.com"
SET_PASSWORD = "/zitadel.user.v2.UserService/SetPassword"
SECRET = "Leak3d!Secret"


@pytest.fixture(scope="module")
def server(base_settings: Settings) -> Iterator[Server]:
    yield from serve(base_settings, IDENTITY_CORS_ALLOWED_ORIGINS=ORIGIN)


CLIENTS = [
    pytest.param(ProtocolType.CONNECT, "json", id="connect-json"),
    pytest.param(ProtocolType.CONNECT, "proto", id="connect-proto"),
    pytest.param(ProtocolType.GRPC_WEB, "proto", id="grpc-web-proto"),
]


def client(server: Server, protocol: ProtocolType, codec: str) -> UserServiceClient:
    return UserServiceClient(
        server.http,
        protocol=protocol,
        codec=google_protobuf_json_codec() if codec == "json" else google_protobuf_binary_codec(),
    )


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.mark.parametrize(("protocol", "codec"), CLIENTS)
async def test_set_password_and_reset(
    world: World, server: Server, protocol: ProtocolType, codec: str
) -> None:
    org_id, token = await world.admin()
    user = await world.human(token, org_id)
    async with client(server, protocol, codec) as users:
        reset = await users.password_reset(
            user_pb.PasswordResetRequest(
                user_id=user.user_id, return_code=password_pb2.ReturnPasswordResetCode()
            ),
            headers=auth(token),
        )
        changed = await users.set_password(
            user_pb.SetPasswordRequest(
                user_id=user.user_id,
                new_password=password_pb2.Password(password=NEW),
                verification_code=reset.verification_code,
            ),
            headers=auth(token),
        )
    assert (reset.details.sequence, changed.details.sequence) == (2, 3)
    assert changed.details.resource_owner == org_id
    await world.login(user, NEW)


@pytest.mark.parametrize(("protocol", "codec"), CLIENTS)
async def test_an_error_carries_the_rest_code_message_and_detail(
    world: World, server: Server, protocol: ProtocolType, codec: str
) -> None:
    _, token = await world.admin()
    async with client(server, protocol, codec) as users:
        with pytest.raises(ConnectError) as raised:
            await users.set_password(
                user_pb.SetPasswordRequest(
                    user_id="no-such-user", new_password=password_pb2.Password(password=NEW)
                ),
                headers=auth(token),
            )
    error = raised.value
    assert error.code == Code.NOT_FOUND
    assert error.message == "User could not be found (COMMAND-SAF4f)"
    (detail,) = error.details
    assert detail.type_name == "zitadel.v1.ErrorDetail"
    decoded = ErrorDetail.FromString(detail.message_bytes)
    assert (decoded.id, decoded.message) == ("COMMAND-SAF4f", "User could not be found")


def grpc_web_frame(message: bytes) -> bytes:
    return struct.pack(">BI", 0, len(message)) + message


def grpc_web_frames(body: bytes) -> list[tuple[int, bytes]]:
    """(flags, payload) of each frame; flag 0x80 is the trailer frame."""
    frames, at = [], 0
    while at < len(body):
        flags, length = struct.unpack(">BI", body[at : at + 5])
        frames.append((flags, body[at + 5 : at + 5 + length]))
        at += 5 + length
    return frames


def trailers(payload: bytes) -> dict[str, str]:
    lines = payload.decode().strip().split("\r\n")
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


async def test_a_hand_framed_grpc_web_request_over_http_1_1(world: World, server: Server) -> None:
    """No ``x-grpc-web`` header (the Python gRPC-Web client sends none), HTTP/1.1."""
    org_id, token = await world.admin()
    user = await world.human(token, org_id)
    request = user_pb.SetPasswordRequest(
        user_id=user.user_id, new_password=password_pb2.Password(password=NEW)
    )
    headers = {"content-type": "application/grpc-web+proto", "authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(http2=False) as http:
        ok = await http.post(
            f"{server.http}{SET_PASSWORD}",
            content=grpc_web_frame(request.SerializeToString()),
            headers=headers,
        )
        request.user_id = "no-such-user"
        failed = await http.post(
            f"{server.http}{SET_PASSWORD}",
            content=grpc_web_frame(request.SerializeToString()),
            headers=headers,
        )

    assert ok.http_version == "HTTP/1.1" and ok.status_code == 200
    (message, trailer) = grpc_web_frames(ok.content)
    assert message[0] == 0 and trailer[0] == 0x80
    assert user_pb.SetPasswordResponse.FromString(message[1]).details.sequence == 2
    assert trailers(trailer[1])["grpc-status"] == "0"

    assert failed.status_code == 200  # gRPC-Web carries the error in the trailer frame
    ((flags, payload),) = grpc_web_frames(failed.content)
    assert flags == 0x80
    fields = trailers(payload)
    assert fields["grpc-status"] == "5"
    assert httpx.URL(f"/?m={fields['grpc-message']}").params["m"] == (
        "User could not be found (COMMAND-SAF4f)"
    )
    from google.rpc import status_pb2

    status = status_pb2.Status.FromString(
        base64.b64decode(fields["grpc-status-details-bin"] + "==")
    )
    detail = ErrorDetail.FromString(status.details[0].value)
    assert (detail.id, detail.message) == ("COMMAND-SAF4f", "User could not be found")


async def test_connect_json_as_the_python_sdk_sends_it(world: World, server: Server) -> None:
    """Without ``Connect-Protocol-Version``, with snake_case names, enums by name or number,
    gzip-compressed; both members of a oneof refused."""
    org_id, token = await world.admin()
    user = await world.human(token, org_id)
    url = f"{server.http}/zitadel.user.v2.UserService/PasswordReset"
    headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
    async with httpx.AsyncClient() as http:
        by_name = await http.post(
            url,
            headers=headers,
            json={
                "user_id": user.user_id,
                "send_link": {"notification_type": "NOTIFICATION_TYPE_Email"},
            },
        )
        by_number = await http.post(
            url,
            headers={**headers, "content-encoding": "gzip"},
            content=gzip.compress(
                json.dumps({"userId": user.user_id, "sendLink": {"notificationType": 1}}).encode()
            ),
        )
        sms = await http.post(
            url,
            headers=headers,
            json={
                "userId": user.user_id,
                "sendLink": {"notificationType": "NOTIFICATION_TYPE_SMS"},
            },
        )
        both = await http.post(
            url, headers=headers, json={"userId": user.user_id, "sendLink": {}, "returnCode": {}}
        )
    assert by_name.status_code == 200, by_name.text
    assert by_number.status_code == 200, by_number.text
    assert by_number.json()["details"]["sequence"] == "3"
    assert sms.status_code == 400
    assert sms.json()["code"] == "failed_precondition"
    assert sms.json()["message"] == "SMS notifications are not supported (NOTIFY-Sms0n)"
    assert both.status_code == 400 and both.json()["code"] == "invalid_argument"


async def test_validation_messages_are_the_rest_ones(world: World, server: Server) -> None:
    org_id, token = await world.admin()
    user = await world.human(token, org_id)
    body = {"newPassword": {"password": "x" * 201}}
    rest = await world.client.post(
        f"/v2/users/{user.user_id}/password",
        json=body,
        headers={"authorization": f"Bearer {token}"},
    )
    async with httpx.AsyncClient() as http:
        connect = await http.post(
            f"{server.http}{SET_PASSWORD}",
            json={"userId": user.user_id, **body},
            headers={"authorization": f"Bearer {token}"},
        )
    assert (rest.status_code, connect.status_code) == (400, 400)
    assert connect.json() == {"code": "invalid_argument", "message": rest.json()["message"]}


async def test_an_unexpected_exception_is_internal_without_its_text(
    world: World, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never ``unknown`` with the exception's text (connectrpc's default): ``internal`` with
    the contract's message, as REST's 500."""
    org_id, token = await world.admin()
    user = await world.human(token, org_id)

    async def boom(**_: object) -> None:
        raise RuntimeError(f"could not talk to the database with {SECRET}")

    monkeypatch.setattr(users, "get_user", boom)
    app = compose(settings)
    async with AsyncTestClient(app=app) as http:  # type: ignore[arg-type]
        response = await http.post(
            "/zitadel.user.v2.UserService/GetUserByID",
            json={"userId": user.user_id},
            headers={"authorization": f"Bearer {token}"},
        )
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == "internal"
    assert body["message"] == "Internal error (SERVER-Int3r)"
    assert SECRET not in response.text and "RuntimeError" not in response.text


async def test_cors_for_browsers_of_allowed_origins_only(server: Server) -> None:
    async with httpx.AsyncClient() as http:
        preflight = await http.options(
            f"{server.http}{SET_PASSWORD}",
            headers={
                "origin": ORIGIN,
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type,x-grpc-web,authorization",
            },
        )
        answer = await http.post(
            f"{server.http}{SET_PASSWORD}",
            json={},
            headers={"origin": ORIGIN},
        )
        stranger = await http.options(
            f"{server.http}{SET_PASSWORD}",
            headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
        )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "x-grpc-web" in preflight.headers["access-control-allow-headers"]
    assert answer.status_code == 401  # CORS grants reading the answer, not the call
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    exposed = answer.headers["access-control-expose-headers"]
    assert {"grpc-status", "grpc-message", "grpc-status-details-bin"} <= {
        h.strip() for h in exposed.split(",")
    }
    assert "access-control-allow-origin" not in stranger.headers


async def test_rate_limit_is_resource_exhausted_with_retry_after(
    world: World, server: Server
) -> None:
    """The per-user reset limit (5 an hour by default), as over REST: 429 with Retry-After."""
    org_id, token = await world.admin()
    user = await world.human(token, org_id)
    url = f"{server.http}/zitadel.user.v2.UserService/PasswordReset"
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient() as http:
        answers = [
            await http.post(url, headers=headers, json={"userId": user.user_id, "returnCode": {}})
            for _ in range(6)
        ]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    limited = answers[-1]
    assert limited.json()["code"] == "resource_exhausted"
    assert limited.json()["message"] == "Too many requests (LIMIT-R4te1)"
    assert int(limited.headers["retry-after"]) >= 1
