"""The one place that builds the HTTP app: routes, error mapping, stores, OpenAPI, metrics."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController

from api.db import create_pool
from api.hashing import PasswordHasher
from api.http.errors import handle_exception
from api.http.openapi import add_body_schemas
from api.http.routes import ROUTES
from api.kv import Keys, create_redis
from api.outbox import OutboxDispatcher, OutboxRow
from api.settings import Settings, get_settings
from api.stores import Stores

log = logging.getLogger("identity")

Publisher = Callable[[Sequence[OutboxRow]], None]


def celery_publisher(settings: Settings) -> Publisher:
    """Publish outbox rows to Celery by task name, carrying only the outbox id."""
    from workers.celery_app import create_celery, publish_outbox_rows

    celery = create_celery(settings)

    def publish(rows: Sequence[OutboxRow]) -> None:
        publish_outbox_rows(celery, rows)

    return publish


class IdentityPrometheusController(PrometheusController):
    path = "/metrics"


def create_app(
    settings: Settings | None = None, *, publisher: Publisher | bool | None = True
) -> Litestar:
    """Build the app. ``publisher``: True for Celery, None/False to leave rows to the relay."""
    settings = settings or get_settings()
    if settings.uses_dev_secret:
        log.warning("IDENTITY_SECRET_KEY is the development default; set it in production")

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = await create_pool(settings)
        redis = create_redis(settings)
        hasher = PasswordHasher(settings)
        publish: Publisher | None
        if publisher is True:
            publish = celery_publisher(settings)
        else:
            publish = publisher or None
        dispatcher = OutboxDispatcher(pool, publish)
        app.state.stores = Stores(
            settings=settings,
            pool=pool,
            redis=redis,
            keys=Keys(settings.redis_prefix),
            hasher=hasher,
            outbox=dispatcher,
        )
        try:
            yield
        finally:
            await dispatcher.drain()
            hasher.close()
            await redis.aclose()
            await pool.close()

    prometheus = PrometheusConfig(app_name="identity", prefix="identity", group_path=True)
    app = Litestar(
        route_handlers=[*ROUTES, IdentityPrometheusController],
        lifespan=[lifespan],
        exception_handlers={Exception: handle_exception},
        middleware=[prometheus.middleware],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Identity: ZITADEL v2 User Service (password endpoints)",
            version="2",
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        ),
        debug=False,
        # Logging is configured once by the process (``identity serve``), not by the app.
        logging_config=None,
    )
    add_body_schemas(app)
    return app
