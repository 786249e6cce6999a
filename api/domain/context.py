"""The context every domain service takes: the stores of one process, opened once.

The API opens it in the app's lifespan, the CLI per command, a Celery worker and the relay
per process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from api.db import Pool, create_pool, ping
from api.hashing import PasswordHasher
from api.kv import Keys, Redis, create_redis
from api.settings import Settings


@dataclass(frozen=True)
class Context:
    settings: Settings
    pool: Pool
    redis: Redis
    keys: Keys
    hasher: PasswordHasher


async def open_context(settings: Settings, **pool_options: Any) -> Context:
    pool = await create_pool(settings, **pool_options)
    return Context(
        settings=settings,
        pool=pool,
        redis=create_redis(settings),
        keys=Keys(settings.redis_prefix),
        hasher=PasswordHasher(settings),
    )


async def close_context(ctx: Context) -> None:
    ctx.hasher.close()
    await ctx.redis.aclose()
    await ctx.pool.close()


@asynccontextmanager
async def context(settings: Settings, **pool_options: Any) -> AsyncIterator[Context]:
    ctx = await open_context(settings, **pool_options)
    try:
        yield ctx
    finally:
        await close_context(ctx)


async def check_stores(*, ctx: Context) -> None:
    """Postgres and Redis answer (readiness), within the connect timeout."""
    await ping(ctx.pool, timeout_s=ctx.settings.db_connect_timeout_s)
    await ctx.redis.ping()
