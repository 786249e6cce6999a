"""Postgres access: the asyncpg pool with JSON codecs, and a ping. SQL of a table lives in
its repository (``api.repositories``)."""

from __future__ import annotations

from typing import Any, TypeAlias

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from api.settings import Settings

Record = asyncpg.Record
Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
# A plain connection or one borrowed from the pool: the repositories take either.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


def _encode_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


async def init_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, encoder=_encode_json, decoder=msgspec.json.decode, schema="pg_catalog"
        )


async def reset_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Before a connection goes back to the pool: a full reset only if it is left inside a
    transaction (a request cancelled mid-way). asyncpg's default resets every time (advisory
    locks, cursors, LISTEN, settings: a round trip per release), and this service keeps no
    session state on pooled connections (its one advisory lock is transaction-scoped, the
    relay LISTENs on a connection of its own)."""
    if conn.is_in_transaction():
        await conn.reset()


async def ping(pool: Pool, *, timeout_s: float) -> None:
    """Postgres answers within ``timeout_s`` (getting a connection included)."""
    async with pool.acquire(timeout=timeout_s) as conn:
        await conn.fetchval("SELECT 1", timeout=timeout_s)


async def create_pool(settings: Settings, **overrides: Any) -> Pool:
    """A pool that opens connections lazily (min 0 by default), so the API starts while
    Postgres is down and answers 503 until it is back."""
    options: dict[str, Any] = {
        "min_size": settings.db_pool_min,
        "max_size": settings.db_pool_max,
        "timeout": settings.db_connect_timeout_s,
        "command_timeout": settings.db_command_timeout_s,
        "init": init_connection,
        "reset": reset_connection,
        "max_inactive_connection_lifetime": 300.0,
    }
    options.update(overrides)
    pool: Pool = await asyncpg.create_pool(settings.database_url, **options)
    return pool
