"""Shared fixtures: one Postgres database and one Redis key prefix per test run.

Everything is real: Postgres and Redis on localhost (``IDENTITY_TEST_DATABASE_ADMIN_URL`` and
``IDENTITY_TEST_REDIS_URL`` point elsewhere). The run's database is created and migrated at
the start and dropped at the end, so concurrent runs never collide.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis as sync_redis
from litestar.testing import AsyncTestClient

from api.domain.context import Context, context
from api.http.app import create_app
from api.migrate import migrate
from api.settings import Settings, settings_from_env
from tests.support import REFUSED_ADDRESS, World
from workers.smtp_sink import MailSink

# The opt-in scan of a whole run for the secrets it used (IDENTITY_SECRET_SCAN=1).
pytest_plugins = ["tests.secret_scan", "tests.openapi_coverage"]

ADMIN_URL = os.environ.get(
    "IDENTITY_TEST_DATABASE_ADMIN_URL", "postgresql://root@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("IDENTITY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_ID = uuid.uuid4().hex[:10]


async def _create_database(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    name = f"identity_test_{RUN_ID}"
    asyncio.run(_create_database(name))
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    asyncio.run(migrate(url))
    yield url
    asyncio.run(_drop_database(name))


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    prefix = f"test-{RUN_ID}:"
    yield prefix
    client = sync_redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    client.close()


# Test defaults: fast argon2 parameters (hash cost is measured in bench/, not in tests) and
# address limits high enough that one test's failures never throttle another's.
TEST_OVERRIDES: dict[str, Any] = {
    # The development environment, as ./scripts/dev's (tests of production set it themselves).
    "env": "development",
    "argon2_time_cost": 1,
    "argon2_memory_kib": 1024,
    "rate_failed_verifications_per_ip_per_minute": 100_000,
    "rate_verifications_per_user_per_minute": 1_000,
    "secret_key": "test-secret-key-0123456789abcdef0123456789",
}


@pytest.fixture(scope="session")
def base_settings(database_url: str, redis_prefix: str) -> Settings:
    return settings_from_env(
        {},
        database_url=database_url,
        redis_url=REDIS_URL,
        redis_prefix=redis_prefix,
        broker_url="memory://",
        **TEST_OVERRIDES,
    )


@pytest.fixture
def make_settings(base_settings: Settings) -> Callable[..., Settings]:
    """Settings with overrides, e.g. ``make_settings(policy_history=3)``."""

    def build(**overrides: Any) -> Settings:
        import msgspec

        return msgspec.structs.replace(base_settings, **overrides)

    return build


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    return base_settings


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    """The app over HTTP (ASGI, in process); no relay runs, so outbox rows stay put."""
    app = create_app(settings)
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


@pytest.fixture
async def world(client: AsyncTestClient[Any], settings: Settings) -> AsyncIterator[World]:
    """Organizations, tokens and users made for one test; see ``tests/support.py``."""
    w = World(client, settings)
    await w.open()
    try:
        yield w
    finally:
        await w.close()


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[MailSink]:
    """A real SMTP server (aiosmtpd) that stores what it receives; it refuses
    ``REFUSED_ADDRESS`` (550), for the tests of undeliverable mail."""
    server = MailSink(tmp_path / "mail", refuse=frozenset({REFUSED_ADDRESS})).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def mail_ctx(
    make_settings: Callable[..., Settings], sink: MailSink
) -> AsyncIterator[Context]:
    """The domain's context of a worker that sends through ``sink``."""
    async with context(make_settings(smtp_url=sink.url)) as opened:
        yield opened
