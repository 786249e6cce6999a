"""Per-process stores for tasks: one event loop, one asyncpg pool, one Redis client.

Created lazily in the process that runs tasks (after a prefork fork, never before), so
each pool child has its own connections.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from api.db import Pool, create_pool
from api.kv import Keys, Redis, create_redis
from api.settings import Settings, get_settings

T = TypeVar("T")


@dataclass
class Runtime:
    settings: Settings
    loop: asyncio.AbstractEventLoop
    pool: Pool
    redis: Redis
    keys: Keys
    pid: int


_runtime: Runtime | None = None


def runtime() -> Runtime:
    global _runtime
    if _runtime is None or _runtime.pid != os.getpid():
        settings = get_settings()
        loop = asyncio.new_event_loop()
        pool = loop.run_until_complete(create_pool(settings, min_size=0, max_size=2))
        _runtime = Runtime(
            settings=settings,
            loop=loop,
            pool=pool,
            redis=create_redis(settings),
            keys=Keys(settings.redis_prefix),
            pid=os.getpid(),
        )
    return _runtime


def run(coro: Coroutine[Any, Any, T]) -> T:
    return runtime().loop.run_until_complete(coro)


def close() -> None:
    global _runtime
    if _runtime is not None and _runtime.pid == os.getpid():
        rt = _runtime
        rt.loop.run_until_complete(rt.pool.close())
        rt.loop.run_until_complete(rt.redis.aclose())
        rt.loop.close()
    _runtime = None
