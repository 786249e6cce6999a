"""The RPC transport as one ASGI application: ZITADEL's services over Connect (JSON and
proto), gRPC-Web and gRPC, served by connectrpc, with CORS for browsers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.rpc.errors import ServiceErrors
from api.rpc.gen.zitadel.session.v2.session_service_connect import (
    SessionServiceASGIApplication,
)
from api.rpc.gen.zitadel.user.v2.user_service_connect import UserServiceASGIApplication
from api.rpc.services import Contexts, SessionService, UserService

# Headers a browser's gRPC-Web or Connect client sends, and the ones its code may read.
_ALLOW_HEADERS = (
    "authorization, content-type, x-grpc-web, x-user-agent, grpc-timeout, grpc-accept-encoding, "
    "connect-protocol-version, connect-timeout-ms, connect-accept-encoding, "
    "connect-content-encoding, content-encoding, accept-encoding"
)
_EXPOSE_HEADERS = (
    "grpc-status, grpc-message, grpc-status-details-bin, connect-content-encoding, "
    "grpc-encoding, content-encoding"
)


def rpc_app(contexts: Contexts, *, max_body_bytes: int) -> dict[str, ASGIApp]:
    """The services' ASGI applications by path prefix (``/<package>.<Service>/``)."""
    interceptors = [ServiceErrors()]
    apps: list[UserServiceASGIApplication | SessionServiceASGIApplication] = [
        UserServiceASGIApplication(
            UserService(contexts), interceptors=interceptors, read_max_bytes=max_body_bytes
        ),
        SessionServiceASGIApplication(
            SessionService(contexts), interceptors=interceptors, read_max_bytes=max_body_bytes
        ),
    ]
    return {f"{app.path}/": app for app in apps}


def with_cors(app: ASGIApp, allowed_origins: Iterable[str]) -> ASGIApp:
    """CORS for the RPC paths: preflights answered here, the origin echoed on answers when it
    is one of ``allowed_origins`` (none: browsers get no CORS permission at all).

    Litestar's CORS applies to its own routes only; the RPC applications are not Litestar's.
    """
    allowed = frozenset(allowed_origins)

    async def cors(scope: Scope, receive: Receive, send: Send) -> None:
        origin = _header(scope, b"origin")
        if origin is None or origin not in allowed:
            await app(scope, receive, send)
            return
        grant = [
            (b"access-control-allow-origin", origin.encode()),
            (b"vary", b"origin"),
        ]
        if scope.get("method") == "OPTIONS":
            preflight: Any = {
                "type": "http.response.start",
                "status": 204,
                "headers": [
                    *grant,
                    (b"access-control-allow-methods", b"POST, GET, OPTIONS"),
                    (b"access-control-allow-headers", _ALLOW_HEADERS.encode()),
                    (b"access-control-max-age", b"7200"),
                ],
            }
            empty: Any = {"type": "http.response.body", "body": b""}
            await send(preflight)
            await send(empty)
            return

        async def send_with_grant(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *grant]
                headers.append((b"access-control-expose-headers", _EXPOSE_HEADERS.encode()))
                message = cast(Message, {**message, "headers": headers})
            await send(message)

        await app(scope, receive, send_with_grant)

    return cors


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None
