"""Races with real concurrency against the real stores.

Litestar's ``AsyncTestClient`` hands each request to a blocking portal and waits for it, so
``asyncio.gather`` over it runs the requests one after another. These tests therefore start
the real server (``identity serve``, uvicorn) on a free port, pointed at this run's database
and Redis prefix, and send the concurrent requests with ``httpx.AsyncClient``. Setup and the
checks afterwards go through the usual in-process client on the same stores.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from api.settings import Settings
from tests.change_password_support import STRONG_PASSWORD, logs_in, set_org_policy, setup_user
from tests.rpc_support import serve
from tests.support import World, assert_error, bearer

TIMEOUT = httpx.Timeout(60.0)


@pytest.fixture(scope="module")
def server(base_settings: Settings) -> Iterator[str]:
    """``identity serve`` in a subprocess on this run's database and Redis prefix."""
    for running in serve(base_settings, IDENTITY_DB_POOL_MAX="10"):
        yield running.http


async def _concurrently(
    base_url: str, requests: list[tuple[str, str, dict[str, object]]]
) -> list[httpx.Response]:
    """Send (path, token, body) POSTs all at once, each on its own connection."""
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT, limits=limits) as http:
        start = asyncio.Event()

        async def one(path: str, token: str, body: dict[str, object]) -> httpx.Response:
            await start.wait()
            return await http.post(path, json=body, headers=bearer(token))

        tasks = [asyncio.create_task(one(*r)) for r in requests]
        await asyncio.sleep(0)
        start.set()
        return list(await asyncio.gather(*tasks))


async def _sequence(world: World, token: str, user_id: str) -> int:
    response = await world.client.get(f"/v2/users/{user_id}", headers=bearer(token))
    assert response.status_code == 200, response.text
    return int(response.json()["details"]["sequence"])


async def test_50_concurrent_admin_changes(world: World, server: str) -> None:
    org_id, admin, user = await setup_user(world)
    await set_org_policy(world, org_id, max_password_attempts=0)  # many wrong logins below
    before = await _sequence(world, admin, user.user_id)
    passwords = [f"Race!{i:02d}-Passw0rd" for i in range(50)]
    path = f"/v2/users/{user.user_id}/password"
    responses = await _concurrently(
        server, [(path, admin, {"newPassword": {"password": p}}) for p in passwords]
    )

    assert [r.status_code for r in responses] == [200] * 50, [r.text for r in responses]
    sequences = [int(r.json()["details"]["sequence"]) for r in responses]
    assert sorted(sequences) == list(range(before + 1, before + 51))
    assert await _sequence(world, admin, user.user_id) == before + 50

    # The change with the highest sequence committed last: its password is the one.
    by_sequence = dict(zip(sequences, passwords, strict=True))
    winner = by_sequence[before + 50]
    assert await logs_in(world, user, winner)
    for password in passwords:
        if password != winner:
            assert not await logs_in(world, user, password), password
    assert not await logs_in(world, user, STRONG_PASSWORD)

    # The event log agrees: one change event per response, same sequences and times.
    rows = await world.db.fetch(
        "SELECT sequence, created_at FROM events WHERE aggregate_id = $1 "
        "AND event_type = 'user.human.password.changed' ORDER BY sequence",
        user.user_id,
    )
    assert [r["sequence"] for r in rows] == list(range(before + 1, before + 51))
    times = [r["created_at"] for r in rows]
    assert times == sorted(times)


@pytest.mark.parametrize("round_", range(3))
async def test_20_concurrent_uses_of_one_code(world: World, server: str, round_: int) -> None:
    org_id, admin, user = await setup_user(world)
    await set_org_policy(world, org_id, max_password_attempts=0)
    code = await world.reset_code(admin, user.user_id)
    passwords = [f"C0de!{round_}-{i:02d}-race" for i in range(20)]
    path = f"/v2/users/{user.user_id}/password"
    responses = await _concurrently(
        server,
        [
            (path, admin, {"newPassword": {"password": p}, "verificationCode": code})
            for p in passwords
        ],
    )

    winners = [i for i, r in enumerate(responses) if r.status_code == 200]
    assert len(winners) == 1, [r.text for r in responses]
    for i, response in enumerate(responses):
        if i != winners[0]:
            assert_error(response, 400, 9, "COMMAND-2M9fs", "Code not found")
    winner = passwords[winners[0]]
    assert await logs_in(world, user, winner)
    for password in passwords:
        if password != winner:
            assert not await logs_in(world, user, password), password
    # The code is spent for good.
    again = await world.set_password(
        admin, user.user_id, {"newPassword": {"password": "After!race-1"}, "verificationCode": code}
    )
    assert_error(again, 400, 9, "COMMAND-2M9fs", "Code not found")


async def test_concurrent_changes_with_the_same_current_password(world: World, server: str) -> None:
    _, admin, user = await setup_user(world)
    _, session = await world.login(user)
    passwords = [f"Curr3nt!race-{i}" for i in range(8)]
    path = f"/v2/users/{user.user_id}/password"
    responses = await _concurrently(
        server,
        [
            (path, session, {"newPassword": {"password": p}, "currentPassword": STRONG_PASSWORD})
            for p in passwords
        ],
    )

    winners = [i for i, r in enumerate(responses) if r.status_code == 200]
    assert len(winners) == 1, [r.text for r in responses]
    for i, response in enumerate(responses):
        if i != winners[0]:
            # The password it proved is no longer current.
            assert_error(response, 400, 3, "COMMAND-3M0fs", "Password is invalid")
    winner = passwords[winners[0]]
    assert await logs_in(world, user, winner)
    assert not await logs_in(world, user, STRONG_PASSWORD)
    read = await world.client.get(f"/v2/users/{user.user_id}", headers=bearer(admin))
    assert read.json()["user"]["state"] == "USER_STATE_ACTIVE"
