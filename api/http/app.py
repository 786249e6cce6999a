"""The one place that builds the HTTP app: routes, the hosted pages, error mapping, the
context, OpenAPI, metrics. Commands only commit their outbox rows; the relay
(``workers.relay``) publishes."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Response, Router
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.static_files import create_static_files_router

from api import metrics
from api.domain import notifications
from api.domain.context import STORES, Context, close_context, open_context, store_status
from api.http import pages
from api.http.errors import handle_exception
from api.http.plugin import (
    WirePlugin,
    empty_body_is_an_empty_object,
    refuse_hashing_when_overloaded,
)
from api.http.routes import BEARER, DEPENDENCIES, ROUTES
from api.outages import OUTAGES
from api.settings import Settings, get_settings

log = logging.getLogger("identity")


class IdentityPrometheusController(PrometheusController):
    path = "/metrics"


SWAGGER_ASSETS = "/schema/assets"


def swagger_assets() -> Router:
    """Swagger UI's files, from the swagger-ui-py package (located, not imported)."""
    spec = importlib.util.find_spec("swagger_ui")
    assert spec is not None and spec.submodule_search_locations, "swagger-ui-py is a dependency"
    static = Path(next(iter(spec.submodule_search_locations))) / "static"
    return create_static_files_router(
        path=SWAGGER_ASSETS, directories=[static], include_in_schema=False
    )


def handle_any_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The hosted pages (``/ui/``) answer every error with a page; the rest with the
    contract's JSON body (``api.http.errors``)."""
    if pages.is_page(request.url.path):
        return pages.page_exception(request, exc)
    return handle_exception(request, exc)


async def refresh_outbox_metrics(ctx: Context) -> None:
    health = await notifications.outbox_health(ctx=ctx)
    metrics.OUTBOX_BACKLOG.set(health.backlog)
    metrics.OUTBOX_OLDEST_UNSENT_SECONDS.set(health.oldest_unsent_s)
    metrics.OUTBOX_DEAD.set(health.dead)
    metrics.EMAILS_SENT.set(health.emails_sent)


async def watch_outbox(ctx: Context) -> None:
    """Keep the outbox gauges current (every ``metrics_refresh_s``); a store that does not
    answer leaves them as they were (``/readyz`` says so)."""
    while True:
        try:
            await refresh_outbox_metrics(ctx)
        except Exception as exc:  # Postgres away: try again next time
            log.debug("outbox metrics not refreshed: %s", type(exc).__name__)
        await asyncio.sleep(ctx.settings.metrics_refresh_s)


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the app."""
    settings = settings or get_settings()
    settings.require_secret_key("api")
    if settings.uses_dev_secret:
        log.warning("IDENTITY_SECRET_KEY is the development default (IDENTITY_ENV=development)")

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.ctx = ctx = await open_context(settings)
        watcher = asyncio.create_task(watch_outbox(ctx))
        OUTAGES.watch_with(lambda: store_status(ctx=ctx), STORES)
        try:
            yield
        finally:
            OUTAGES.watch_with(None)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await close_context(app.state.ctx)

    prometheus = PrometheusConfig(app_name="identity", prefix="identity", group_path=True)
    return Litestar(
        route_handlers=[*ROUTES, *pages.PAGES, IdentityPrometheusController, swagger_assets()],
        dependencies=DEPENDENCIES,
        plugins=[WirePlugin()],
        lifespan=[lifespan],
        exception_handlers={Exception: handle_any_exception},
        # The hosted reset pages (``api.http.pages``).
        template_config=pages.template_config(),
        middleware=[
            refuse_hashing_when_overloaded,
            prometheus.middleware,
            empty_body_is_an_empty_object,
        ],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Identity: ZITADEL v2 User Service (password endpoints)",
            version="2",
            components=Components(
                security_schemes={
                    BEARER: SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="a session token (POST /v2/sessions) or a personal "
                        "access token (identity token create)",
                    )
                }
            ),
            path="/schema",
            # Swagger UI from the service itself (swagger-ui-py's files): nothing from a CDN,
            # so the page works offline and loads no third party's script.
            render_plugins=[
                SwaggerRenderPlugin(
                    path=["/", "/swagger"],
                    js_url=f"{SWAGGER_ASSETS}/swagger-ui-bundle.js",
                    css_url=f"{SWAGGER_ASSETS}/swagger-ui.css",
                    standalone_preset_js_url=f"{SWAGGER_ASSETS}/swagger-ui-standalone-preset.js",
                    favicon=f'<link rel="icon" href="{SWAGGER_ASSETS}/favicon-32x32.png">',
                )
            ],
        ),
        debug=False,
        # Logging is configured once by the process (``identity serve``), not by the app.
        logging_config=None,
    )
