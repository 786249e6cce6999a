"""The server's entry point: one ASGI application on one port.

Paths of ZITADEL's RPC services (``/zitadel.user.v2.UserService/SetPassword`` and the like)
go to the RPC transport (Connect, gRPC-Web, gRPC); everything else to the HTTP app
(REST/JSON, OpenAPI, health, metrics), whose lifespan opens the domain context both use.
Neither transport publishes to Celery: commands commit their outbox rows, and the relay
(``identity relay``) publishes them.
"""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from api.domain.context import Context
from api.http.app import create_app as create_http_app
from api.rpc.app import rpc_app, with_cors
from api.settings import Settings, get_settings


def compose(settings: Settings) -> ASGIApp:
    """The HTTP app and the RPC services behind one ASGI callable."""
    http = create_http_app(settings)

    def contexts() -> Context:
        ctx: Context = http.state.ctx
        return ctx

    services = rpc_app(contexts, max_body_bytes=settings.max_body_bytes)
    rpc = {prefix: with_cors(app, settings.cors_origins) for prefix, app in services.items()}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == ScopeType.HTTP and path.startswith("/zitadel."):
            for prefix, service in rpc.items():
                if path.startswith(prefix):
                    await service(scope, receive, send)
                    return
        await http(scope, receive, send)

    app.http = http  # type: ignore[attr-defined]  # the Litestar app (tests reach its state)
    return app


def create_app() -> ASGIApp:
    return compose(get_settings())
