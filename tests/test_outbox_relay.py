"""The outbox relay: several relays at once never publish a row twice, and nothing is lost.

``relay_due`` publishes every due row of the table, so these tests run on a database of their
own (created and migrated here, dropped after): rows of other tests are neither published
nor counted, and the totals below are exact.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import asyncpg
import pytest

from api.db import Pool, create_pool, init_connection
from api.domain.outbox import relay_due
from api.migrate import migrate
from api.repositories.outbox import (
    TASK_PASSWORD_CHANGED_EMAIL,
    TASK_PASSWORD_RESET_EMAIL,
    OutboxRow,
)
from api.settings import Settings
from tests.conftest import ADMIN_URL, RUN_ID

RELAYS = 4
ROWS = 200
BATCH = 25


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def relay_database_url() -> Iterator[str]:
    name = f"identity_test_{RUN_ID}_relay"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        asyncio.run(migrate(url))
        yield url
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def db(relay_database_url: str) -> AsyncIterator[asyncpg.Connection[Any]]:
    conn: asyncpg.Connection[Any] = await asyncpg.connect(relay_database_url)
    await init_connection(conn)
    await conn.execute("TRUNCATE outbox")
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def pools(
    relay_database_url: str, make_settings: Callable[..., Settings]
) -> AsyncIterator[list[Pool]]:
    """One asyncpg pool per relay, as separate worker processes would have."""
    settings = make_settings(database_url=relay_database_url)
    made = [await create_pool(settings) for _ in range(RELAYS)]
    try:
        yield made
    finally:
        for pool in made:
            await pool.close()


class Recorder:
    """A publisher that records the ids it got (from several threads) and takes its time."""

    def __init__(self, delay_s: float = 0.02) -> None:
        self.delay_s = delay_s
        self.ids: list[int] = []
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, rows: Sequence[OutboxRow]) -> None:
        time.sleep(self.delay_s)  # widens the window in which another relay could take them
        with self._lock:
            self.calls += 1
            self.ids.extend(row.id for row in rows)


async def run_relays(pools: list[Pool], publish: Recorder, **options: float) -> list[int]:
    params: dict[str, float] = {"min_age_s": 0.5, "redeliver_after_s": 3600.0, **options}
    return list(
        await asyncio.gather(*(relay_due(pool, publish, batch=BATCH, **params) for pool in pools))
    )


async def insert_rows(db: asyncpg.Connection[Any], count: int, **columns: str) -> list[int]:
    """``count`` rows created a minute ago; ``columns`` are SQL expressions for the rest."""
    names = ", ".join(columns)
    values = ", ".join(columns.values())
    rows = await db.fetch(
        f"INSERT INTO outbox (task, aggregate_id, event_sequence, created_at"
        f"{', ' + names if names else ''}) "
        f"SELECT $2, 'relay-test', g, clock_timestamp() - interval '1 minute'"
        f"{', ' + values if values else ''} FROM generate_series(1, $1) AS g RETURNING id",
        count,
        TASK_PASSWORD_RESET_EMAIL,
    )
    return [r["id"] for r in rows]


async def test_several_relays_never_double_publish(
    db: asyncpg.Connection[Any], pools: list[Pool]
) -> None:
    ids = await insert_rows(db, ROWS)
    publish = Recorder()

    counts = await run_relays(pools, publish)

    assert sorted(publish.ids) == sorted(ids)  # every row, once
    assert max(Counter(publish.ids).values()) == 1
    assert sum(counts) == ROWS
    assert sum(1 for n in counts if n) >= 2, counts  # the relays did run side by side
    rows = await db.fetch("SELECT published_at, publish_count, processed_at FROM outbox")
    assert len(rows) == ROWS
    assert all(r["published_at"] is not None for r in rows)
    assert {r["publish_count"] for r in rows} == {1}
    assert all(r["processed_at"] is None for r in rows)

    # A second round finds nothing due: published rows wait for a worker, not the relay.
    again = Recorder()
    assert await run_relays(pools, again) == [0] * RELAYS
    assert again.calls == 0


async def test_lost_messages_are_published_again_processed_rows_never(
    db: asyncpg.Connection[Any], pools: list[Pool]
) -> None:
    long_ago = "clock_timestamp() - interval '2 hours'"
    [lost] = await insert_rows(db, 1, published_at=long_ago, publish_count="1")
    [done] = await insert_rows(db, 1, published_at=long_ago, processed_at=long_ago)
    [done_unpublished] = await insert_rows(db, 1, processed_at=long_ago)
    [recent] = await insert_rows(db, 1, published_at="clock_timestamp()", publish_count="1")
    [waiting] = await insert_rows(db, 1)
    await db.execute(
        "UPDATE outbox SET task = $1 WHERE id = $2", TASK_PASSWORD_CHANGED_EMAIL, waiting
    )

    publish = Recorder()
    counts = await run_relays(pools, publish)

    # The lost message (published two hours ago, never processed) is the safety net's case;
    # the row never published is the usual case; processed or freshly published rows wait.
    assert sorted(publish.ids) == sorted([lost, waiting])
    assert sum(counts) == 2
    got = {
        r["id"]: r
        for r in await db.fetch("SELECT id, task, published_at, publish_count FROM outbox")
    }
    assert got[lost]["publish_count"] == 2
    assert got[waiting]["publish_count"] == 1
    assert got[done]["publish_count"] == 0 and got[done_unpublished]["publish_count"] == 0
    assert got[recent]["publish_count"] == 1
    assert await db.fetchval(
        "SELECT published_at > clock_timestamp() - interval '1 minute' FROM outbox WHERE id = $1",
        lost,
    )

    # Once republished, the lost row is not due again until ``redeliver_after_s`` passes.
    again = Recorder()
    assert sum(await run_relays(pools, again)) == 0 and again.ids == []


async def test_a_failed_publish_leaves_the_rows_for_the_next_relay(
    db: asyncpg.Connection[Any], pools: list[Pool]
) -> None:
    """The broker refuses: the relay's transaction rolls back, nothing is marked published,
    and the next run takes the same rows."""
    ids = await insert_rows(db, 3)

    def refuse(rows: Sequence[OutboxRow]) -> None:
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        await relay_due(pools[0], refuse, min_age_s=0.5, redeliver_after_s=3600.0, batch=BATCH)
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 3

    publish = Recorder(delay_s=0)
    assert await run_relays(pools[:1], publish) == [3]
    assert sorted(publish.ids) == sorted(ids)
