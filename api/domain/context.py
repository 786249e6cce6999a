"""The context every domain service takes: the stores of one process, opened once.

The API opens it in the app's lifespan, the CLI per command, a Celery worker and the relay
per process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from api.db import Pool, create_pool, ping
from api.errors import UNAVAILABLE_ERRORS, StoreUnavailable
from api.hashing import PasswordHasher
from api.kv import BlockingRedis, Keys, Redis, create_blocking_redis, create_redis
from api.outages import OUTAGES, reachable
from api.settings import Settings


@dataclass(frozen=True)
class Context:
    settings: Settings
    pool: Pool
    redis: Redis
    keys: Keys
    hasher: PasswordHasher
    # For a thread that must not wait for the loop (the mailer's journal); unused elsewhere,
    # and it connects only on first use.
    blocking_redis: BlockingRedis


async def open_context(settings: Settings, **pool_options: Any) -> Context:
    pool = await create_pool(settings, **pool_options)
    return Context(
        settings=settings,
        pool=pool,
        redis=create_redis(settings),
        keys=Keys(settings.redis_prefix),
        hasher=PasswordHasher(settings),
        blocking_redis=create_blocking_redis(settings),
    )


async def close_context(ctx: Context) -> None:
    ctx.hasher.close()
    await ctx.redis.aclose()
    ctx.blocking_redis.close()
    await ctx.pool.close()


@asynccontextmanager
async def context(settings: Settings, **pool_options: Any) -> AsyncIterator[Context]:
    ctx = await open_context(settings, **pool_options)
    try:
        yield ctx
    finally:
        await close_context(ctx)


STORES = ("postgres", "redis")


async def store_status(*, ctx: Context) -> dict[str, bool]:
    """Whether each store answers within its timeout (both asked at once)."""

    async def postgres() -> None:
        await ping(ctx.pool, timeout_s=ctx.settings.db_connect_timeout_s)

    async def redis() -> None:
        await asyncio.wait_for(ctx.redis.ping(), ctx.settings.redis_timeout_s * 2)

    results = await asyncio.gather(postgres(), redis(), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(
            result, (*UNAVAILABLE_ERRORS, asyncio.TimeoutError)
        ):
            raise result
    return {
        name: not isinstance(result, BaseException)
        for name, result in zip(STORES, results, strict=True)
    }


async def readiness(*, ctx: Context) -> dict[str, str]:
    """``/readyz``: Postgres and Redis must answer (else ``StoreUnavailable`` naming the ones
    that did not: an operator reads which dependency is down); the broker is reported, not
    required: a change commits its e-mail to the outbox whether or not the broker is up, and
    the relay publishes it when it is back."""
    stores, broker = await asyncio.gather(
        store_status(ctx=ctx),
        reachable(ctx.settings.broker_url, timeout_s=ctx.settings.broker_timeout_s),
    )
    down = [name for name, up in stores.items() if not up]
    if down:
        OUTAGES.noticed()
        raise StoreUnavailable(f"Not ready: {' and '.join(down)} unavailable", retry_after=1)
    state = {None: "not checked", True: "ok", False: "unreachable"}[broker]
    return {"status": "ok", "postgres": "ok", "redis": "ok", "broker": state}
