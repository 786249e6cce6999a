"""Password hashing: never on the event loop, imported argon2/bcrypt hashes, re-hash on login,
the overload guard, and a responsive ``/healthz`` while the hash pool is saturated."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import argon2
import bcrypt
import httpx
import pytest

from api.hashing import HashingOnEventLoop, PasswordHasher
from api.http.app import create_app
from api.settings import Settings
from tests.support import World, assert_error, bearer

PASSWORD = "Imp0rted!Secret"
# Over 72 bytes, and the 72nd byte falls inside a three-byte character.
LONG_PASSWORD = "L0ng!" + "p" * 41 + "€" * 20 + "tail-ignored-by-bcrypt"
HEAVY = {"argon2_memory_kib": 65536, "argon2_time_cost": 3}


def argon2_hash(password: str, kind: argon2.Type, **params: Any) -> str:
    return argon2.PasswordHasher(type=kind, **params).hash(password)


def bcrypt_hash(password: str, prefix: bytes = b"2b") -> str:
    secret = password.encode()[:72]
    return bcrypt.hashpw(secret, bcrypt.gensalt(rounds=4, prefix=prefix)).decode()


IMPORTED: dict[str, Callable[[str], str]] = {
    "argon2id": lambda pw: argon2_hash(pw, argon2.Type.ID, time_cost=2, memory_cost=8192),
    "argon2i": lambda pw: argon2_hash(pw, argon2.Type.I, time_cost=2, memory_cost=8192),
    "bcrypt-2b": lambda pw: bcrypt_hash(pw),
    "bcrypt-2a": lambda pw: bcrypt_hash(pw, b"2a"),
    "bcrypt-2y": lambda pw: "$2y$" + bcrypt_hash(pw).removeprefix("$2b$"),
}


@asynccontextmanager
async def concurrent_client(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The app on this test's event loop, so that requests really overlap.

    (Litestar's ``AsyncTestClient`` hands each request to a blocking portal and waits for it:
    through it, a burst is a queue.) This is what one server worker does.
    """
    app = create_app(settings)
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client, app


def login(client: Any, login_name: str, password: str) -> Any:
    return client.post(
        "/v2/sessions",
        json={"checks": {"user": {"loginName": login_name}, "password": {"password": password}}},
    )


async def import_user(world: World, org_id: str, token: str, encoded: str) -> str:
    body = {
        "username": f"imported-{time.monotonic_ns()}",
        "organization": {"orgId": org_id},
        "profile": {"givenName": "Imp", "familyName": "Orted"},
        "email": {"email": "imported@example.com"},
        "hashedPassword": {"hash": encoded},
    }
    response = await world.client.post("/v2/users/human", json=body, headers=bearer(token))
    assert response.status_code == 201, response.text
    username: str = body["username"]
    return username


# --- the event loop never hashes ----------------------------------------------------------


async def test_sync_entry_points_refuse_the_event_loop_thread(settings: Settings) -> None:
    hasher = PasswordHasher(settings)
    try:
        encoded = argon2_hash(PASSWORD, argon2.Type.ID)
        with pytest.raises(HashingOnEventLoop):
            hasher.hash_sync(PASSWORD)
        with pytest.raises(HashingOnEventLoop):
            hasher.verify_sync(encoded, PASSWORD)
        with pytest.raises(HashingOnEventLoop):
            hasher.verify_sync(bcrypt_hash(PASSWORD), PASSWORD)

        # The same calls work in a thread without an event loop.
        made = await asyncio.to_thread(hasher.hash_sync, PASSWORD)
        assert made.startswith("$argon2id$")
        assert await asyncio.to_thread(hasher.verify_sync, made, PASSWORD)
        assert not await asyncio.to_thread(hasher.verify_sync, made, PASSWORD + "x")
        assert await asyncio.to_thread(hasher.verify_sync, encoded, PASSWORD)
    finally:
        hasher.close()


async def test_async_entry_points_hash_in_the_pool(settings: Settings) -> None:
    threads: list[str] = []

    class Spy(PasswordHasher):
        def hash_sync(self, password: str) -> str:
            threads.append(threading.current_thread().name)
            return super().hash_sync(password)

        def verify_sync(self, encoded: str, password: str) -> bool:
            threads.append(threading.current_thread().name)
            return super().verify_sync(encoded, password)

    hasher = Spy(settings)
    try:
        encoded = await hasher.hash(PASSWORD)
        assert await hasher.verify(encoded, PASSWORD)
        assert not await hasher.verify(encoded, "wrong")
    finally:
        hasher.close()
    assert len(threads) == 3
    assert all(name.startswith("hash") for name in threads), threads
    assert threading.main_thread().name not in threads


def test_sync_entry_points_work_without_a_loop(settings: Settings) -> None:
    hasher = PasswordHasher(settings)
    try:
        encoded = hasher.hash_sync(PASSWORD)
        assert hasher.verify_sync(encoded, PASSWORD)
    finally:
        hasher.close()


# --- imported hashes ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(IMPORTED))
async def test_verify_imported_hash(settings: Settings, kind: str) -> None:
    encoded = IMPORTED[kind](PASSWORD)
    hasher = PasswordHasher(settings)
    try:
        assert await hasher.verify(encoded, PASSWORD)
        assert not await hasher.verify(encoded, PASSWORD.lower())
        assert hasher.needs_rehash(encoded)
    finally:
        hasher.close()


async def test_verify_bcrypt_hash_of_password_over_72_bytes(settings: Settings) -> None:
    assert len(LONG_PASSWORD.encode()) > 72
    encoded = bcrypt_hash(LONG_PASSWORD)
    hasher = PasswordHasher(settings)
    try:
        assert await hasher.verify(encoded, LONG_PASSWORD)
        assert not await hasher.verify(encoded, "X" + LONG_PASSWORD[1:])
    finally:
        hasher.close()


@pytest.mark.parametrize("kind", list(IMPORTED))
async def test_login_with_imported_hash_rehashes_to_argon2id(
    world: World, settings: Settings, kind: str
) -> None:
    org_id, owner = await world.admin()
    encoded = IMPORTED[kind](PASSWORD)
    username = await import_user(world, org_id, owner, encoded)
    user_id = await world.db.fetchval("SELECT id FROM users WHERE username = $1", username)
    assert await world.db.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id) == (
        encoded
    )

    wrong = await login(world.client, username, PASSWORD + "!")
    assert_error(wrong, 400, 3, "COMMAND-3M0fs", "Password is invalid")
    # A failed check never rewrites the hash.
    assert await world.db.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id) == (
        encoded
    )

    ok = await login(world.client, username, PASSWORD)
    assert ok.status_code == 201, ok.text
    stored: str = await world.db.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id)
    assert stored.startswith("$argon2id$")
    params = argon2.extract_parameters(stored)
    assert params.time_cost == settings.argon2_time_cost
    assert params.memory_cost == settings.argon2_memory_kib
    assert params.parallelism == settings.argon2_parallelism
    # Same password, so no event and no new sequence; it still logs in.
    assert await world.db.fetchval("SELECT sequence FROM users WHERE id = $1", user_id) == 1
    again = await login(world.client, username, PASSWORD)
    assert again.status_code == 201, again.text
    assert await world.db.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id) == (
        stored
    )


async def test_login_with_long_password_and_imported_bcrypt(world: World) -> None:
    org_id, owner = await world.admin()
    username = await import_user(world, org_id, owner, bcrypt_hash(LONG_PASSWORD))
    ok = await login(world.client, username, LONG_PASSWORD)
    assert ok.status_code == 201, ok.text
    stored = await world.db.fetchval(
        "SELECT password_hash FROM users WHERE username = $1", username
    )
    assert stored.startswith("$argon2id$")
    # Re-hashed from the whole password: argon2id has no 72-byte limit.
    assert (await login(world.client, username, LONG_PASSWORD)).status_code == 201
    cut = LONG_PASSWORD.encode()[:72].decode(errors="ignore")
    assert (await login(world.client, username, cut)).status_code == 400


# --- the overload guard and a responsive loop ----------------------------------------------


async def test_burst_beyond_the_hash_queue_is_refused_with_503(
    world: World, make_settings: Callable[..., Settings]
) -> None:
    org_id, owner = await world.admin()
    settings = make_settings(hash_workers=1, hash_queue_limit=2, hash_max_wait_s=60, **HEAVY)
    async with concurrent_client(settings) as (client, _):
        created = await client.post(
            "/v2/users/human",
            json={
                "username": "burst",
                "organization": {"orgId": org_id},
                "profile": {"givenName": "Bu", "familyName": "Rst"},
                "email": {"email": "burst@example.com"},
                "password": {"password": PASSWORD},
            },
            headers=bearer(owner),
        )
        assert created.status_code == 201, created.text
        responses: list[httpx.Response] = await asyncio.gather(
            *(login(client, "burst", PASSWORD) for _ in range(20))
        )
    statuses = [r.status_code for r in responses]
    refused = [r for r in responses if r.status_code == 503]
    assert refused and statuses.count(201) >= 3, statuses
    assert statuses.count(201) + len(refused) == 20, statuses
    for response in refused:
        assert_error(response, 503, 14, "SERVER-0verl", "Service is overloaded")
        # About when a thread would be free: the expected wait, in whole seconds.
        assert int(response.headers["retry-after"]) >= 1
    # A refused check is not a wrong password.
    attempts = await world.db.fetchval(
        "SELECT failed_password_attempts FROM users WHERE org_id = $1 AND username = 'burst'",
        org_id,
    )
    assert attempts == 0


async def test_a_hash_expected_to_wait_too_long_is_refused_at_once(
    world: World, make_settings: Callable[..., Settings]
) -> None:
    """Admission by time, not only by count: with room for 1,000 waiting hashes but a wait
    bound of 0.3 s, a burst of logins is partly refused at once (503 with Retry-After), and
    every admitted one is checked."""
    org_id, owner = await world.admin()
    settings = make_settings(hash_workers=1, hash_queue_limit=1000, hash_max_wait_s=0.3, **HEAVY)
    async with concurrent_client(settings) as (client, app):
        created = await client.post(
            "/v2/users/human",
            json={
                "username": "waits",
                "organization": {"orgId": org_id},
                "profile": {"givenName": "Wa", "familyName": "Its"},
                "email": {"email": "waits@example.com"},
                "password": {"password": PASSWORD},
            },
            headers=bearer(owner),
        )
        assert created.status_code == 201, created.text
        hasher: PasswordHasher = app.state.ctx.hasher
        assert hasher.expected_wait_s() == 0  # idle
        responses: list[httpx.Response] = await asyncio.gather(
            *(login(client, "waits", PASSWORD) for _ in range(30))
        )
    statuses = [r.status_code for r in responses]
    assert 0 < statuses.count(201) < 30 and statuses.count(503) > 0, statuses
    assert statuses.count(201) + statuses.count(503) == 30, statuses
    for response in (r for r in responses if r.status_code == 503):
        assert_error(response, 503, 14, "SERVER-0verl", "Service is overloaded")
        assert int(response.headers["retry-after"]) >= 1


async def test_healthz_answers_while_the_hash_pool_is_saturated(
    world: World, make_settings: Callable[..., Settings]
) -> None:
    org_id, owner = await world.admin()
    settings = make_settings(hash_workers=1, hash_queue_limit=64, hash_max_wait_s=60, **HEAVY)
    async with concurrent_client(settings) as (client, app):
        hasher: PasswordHasher = app.state.ctx.hasher
        created = await client.post(
            "/v2/users/human",
            json={
                "username": "saturate",
                "organization": {"orgId": org_id},
                "profile": {"givenName": "Sat", "familyName": "Urate"},
                "email": {"email": "saturate@example.com"},
                "password": {"password": PASSWORD},
            },
            headers=bearer(owner),
        )
        assert created.status_code == 201, created.text

        burst = asyncio.gather(*(login(client, "saturate", PASSWORD) for _ in range(8)))
        latencies: list[float] = []
        while not burst.done():
            await asyncio.sleep(0.05)
            if hasher.in_flight <= settings.hash_threads:
                continue  # not saturated (yet, or any more)
            started = time.perf_counter()
            health = await client.get("/healthz")
            latencies.append(time.perf_counter() - started)
            assert health.status_code == 200
        responses: list[httpx.Response] = await burst
    assert [r.status_code for r in responses] == [201] * 8
    # The pool was busy with a queue behind it while /healthz was asked, several times.
    assert len(latencies) >= 3, latencies
    assert max(latencies) < 1.0, latencies
