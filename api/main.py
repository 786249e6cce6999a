"""The server's entry point: one ASGI application on one port.

Paths of ZITADEL's RPC services (``/zitadel.user.v2.UserService/SetPassword`` and the like)
go to the RPC transport (Connect, gRPC-Web, gRPC); everything else to the HTTP app
(REST/JSON, OpenAPI, health, metrics), whose lifespan opens the domain context both use.
Neither transport publishes to Celery: commands commit their outbox rows, and the relay
(``identity relay``) publishes them. Around both: the request id (``api.request_ids``), the
access log and, when tracing is on, the HTTP server span (``api.tracing``).
"""

from __future__ import annotations

import logging
import time

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api import logs, request_ids, tracing
from api.domain.context import Context
from api.http.app import create_app as create_http_app
from api.rpc.app import rpc_app, with_cors
from api.settings import Settings, get_settings

# One line per request at INFO (method, path, status, duration, request id; never a body,
# a query string or a header): off when the level is WARNING, as in bench/.
access_log = logging.getLogger("identity.access")


def compose(settings: Settings) -> ASGIApp:
    """The HTTP app and the RPC services behind one ASGI callable."""
    http = create_http_app(settings)

    def contexts() -> Context:
        ctx: Context = http.state.ctx
        return ctx

    services = rpc_app(contexts, max_body_bytes=settings.max_body_bytes)
    rpc = {prefix: with_cors(app, settings.cors_origins) for prefix, app in services.items()}

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == ScopeType.HTTP and path.startswith("/zitadel."):
            for prefix, service in rpc.items():
                if path.startswith(prefix):
                    await service(scope, receive, send)
                    return
        await http(scope, receive, send)

    # The HTTP server span (OpenTelemetry) when tracing is on; off, ``route`` itself.
    traced = tracing.asgi(route)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await route(scope, receive, send)
            return
        request_id = request_ids.accept(_header(scope, b"x-request-id"))
        token = request_ids.CURRENT.set(request_id)
        status = 0
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await traced(scope, receive, send_with_id)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "%s %s %d %.1f ms request %s",
                    scope.get("method", ""),
                    scope.get("path", ""),
                    status,
                    (time.perf_counter() - started) * 1000,
                    request_id,
                )
            request_ids.CURRENT.reset(token)

    app.http = http  # type: ignore[attr-defined]  # the Litestar app (tests reach its state)
    return app


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def create_app() -> ASGIApp:
    """The factory ``identity serve`` runs (in each server process)."""
    settings = get_settings()
    logs.configure(settings, process="api")
    tracing.configure(process="api")
    return compose(settings)
