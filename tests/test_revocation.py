"""Revocation inside the change: the moment a change answers 200, the user's other sessions
are refused (401 ``AUTH-7fs1e``), with no worker running, whatever the principal cache holds;
and a login that checked the old password cannot leave a working session behind."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis.exceptions

from api.repositories import tokens
from api.settings import Settings
from tests.change_password_support import change, redis_client
from tests.rpc_support import Server, serve
from tests.support import STRONG_PASSWORD, World, assert_error, bearer

NEW = "N3w!Passw0rd-rev"


async def works(world: World, token: str, user_id: str) -> bool:
    """A request with ``token``: True on 200, False on the contract's 401 for a dead token."""
    response = await world.client.get(f"/v2/users/{user_id}", headers=bearer(token))
    if response.status_code == 200:
        return True
    assert_error(response, 401, 16, "AUTH-7fs1e", "Errors.Token.Invalid")
    return False


async def test_current_password_change_ends_the_other_sessions_at_once(world: World) -> None:
    org_id, admin = await world.admin()
    user = await world.human(admin, org_id)
    _, changing = await world.login(user)
    _, other = await world.login(user)
    # Both work, and both principals are now in the cache.
    assert await works(world, changing, user.user_id)
    assert await works(world, other, user.user_id)

    response = await change(world, changing, user.user_id, NEW, current=STRONG_PASSWORD)
    assert response.status_code == 200, response.text

    assert not await works(world, other, user.user_id)
    assert await works(world, changing, user.user_id)


async def test_admin_set_ends_every_session(world: World) -> None:
    org_id, admin = await world.admin()
    user = await world.human(admin, org_id)
    sessions = [(await world.login(user))[1] for _ in range(3)]
    for token in sessions:
        assert await works(world, token, user.user_id)

    response = await change(world, admin, user.user_id, NEW)
    assert response.status_code == 200, response.text

    assert [await works(world, token, user.user_id) for token in sessions] == [False] * 3
    # The administrator's token is not the user's: it goes on working.
    assert await works(world, admin, user.user_id)


async def test_a_stale_cache_entry_is_not_served(world: World, settings: Settings) -> None:
    """Even if the cache entry of a revoked session came back (a delete that never reached
    Redis, a request that cached it in between), the version check refuses it."""
    org_id, admin = await world.admin()
    user = await world.human(admin, org_id)
    _, other = await world.login(user)
    assert await works(world, other, user.user_id)
    from api.domain.auth import token_digest

    key = world.ctx.keys.token(token_digest(settings.secret_key, other).hex())
    client = redis_client(settings)
    try:
        entry = await client.get(key)
        assert entry is not None  # cached by the request above

        response = await change(world, admin, user.user_id, NEW)
        assert response.status_code == 200, response.text
        await client.set(key, entry, ex=300)  # as if it had never been deleted

        assert not await works(world, other, user.user_id)
    finally:
        await client.aclose()


async def test_no_version_in_redis_no_change(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """If Redis cannot take the new credentials version, nothing is committed: a 503 and the
    old sessions still valid, never a change that a stale cache entry could undercut."""
    org_id, admin = await world.admin()
    user = await world.human(admin, org_id)
    _, other = await world.login(user)
    before = await world.db.fetchval("SELECT sequence FROM users WHERE id = $1", user.user_id)

    async def unreachable(*_: Any, **__: Any) -> None:
        raise redis.exceptions.ConnectionError("Redis is down")

    monkeypatch.setattr(tokens, "raise_credentials_version", unreachable)
    response = await change(world, admin, user.user_id, NEW)
    assert_error(response, 503, 14, "SERVER-Unav1", "Service unavailable")
    monkeypatch.undo()

    after = await world.db.fetchval("SELECT sequence FROM users WHERE id = $1", user.user_id)
    assert after == before
    assert await works(world, other, user.user_id)
    await world.login(user)  # the old password still logs in


async def test_logins_racing_a_change_leave_no_session_of_the_old_password(
    world: World,
) -> None:
    """Logins with the old password run concurrently with a change: whichever way each one
    interleaves, none of the sessions they got works after the change."""
    org_id, admin = await world.admin()
    user = await world.human(admin, org_id)

    async def login() -> str | None:
        response = await world.try_login(user.username, STRONG_PASSWORD)
        if response.status_code == 201:
            token: str = response.json()["sessionToken"]
            return token
        # Checked the old password, then found it changed (or checked after the change).
        assert_error(response, 400, 3, "COMMAND-3M0fs", "Password is invalid")
        return None

    async def change_in_the_middle() -> None:
        await asyncio.sleep(0.05)
        response = await change(world, admin, user.user_id, NEW)
        assert response.status_code == 200, response.text

    logins = [login() for _ in range(24)]
    results = await asyncio.gather(*logins[:12], change_in_the_middle(), *logins[12:])
    got = [token for token in results if isinstance(token, str)]
    assert got, "some logins finished before the change"
    assert [await works(world, token, user.user_id) for token in got] == [False] * len(got)
    # The new password logs in, and that session works.
    _, fresh = await world.login(user, NEW)
    assert await works(world, fresh, user.user_id)


@pytest.fixture(scope="module")
def server(base_settings: Settings) -> Iterator[Server]:
    """A real server: the race needs requests truly in flight at once."""
    yield from serve(base_settings)


async def _waiting_on_locks(world: World) -> int:
    count: int = await world.db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock'"
    )
    return count


@pytest.mark.parametrize("first", ["login", "change"])
async def test_a_login_racing_a_change_gets_no_working_session(
    world: World, server: Server, first: str
) -> None:
    """The race the issue names: a login checks the old password, and its session insert
    waits on the user's row while a change is queued on the same row. The test holds that row
    so both are in flight, then lets them go in either order. Login first: its session is
    committed before the change writes, unseen by the change's snapshot, and dead all the
    same (its credentials version is old). Change first: the login finds the new hash and is
    refused. Either way no session of the old password works."""
    org_id, admin = await world.admin()
    user = await world.human(admin, org_id)
    async with httpx.AsyncClient(base_url=server.http, timeout=30) as http:
        hold = world.db.transaction()
        await hold.start()
        await world.db.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user.user_id)
        requests: dict[str, asyncio.Task[httpx.Response]] = {}

        def send(name: str) -> None:
            if name == "login":
                body: dict[str, Any] = {
                    "checks": {
                        "user": {"loginName": user.username},
                        "password": {"password": STRONG_PASSWORD},
                    }
                }
                requests[name] = asyncio.create_task(http.post("/v2/sessions", json=body))
            else:
                requests[name] = asyncio.create_task(
                    http.post(
                        f"/v2/users/{user.user_id}/password",
                        json={"newPassword": {"password": NEW}},
                        headers=bearer(admin),
                    )
                )

        try:
            second = "change" if first == "login" else "login"
            for n, name in enumerate((first, second), start=1):
                send(name)
                # Each request queues on the held row in turn (the second one may still be
                # on its way when the row is let go: then it simply comes after the first,
                # which is the order this case means anyway).
                for _ in range(120):
                    if await _waiting_on_locks(world) >= n:
                        break
                    await asyncio.sleep(0.025)
                assert await _waiting_on_locks(world) >= 1, f"{first} never waited on the row"
        finally:
            await hold.rollback()
        login, changed = await requests["login"], await requests["change"]

    assert changed.status_code == 200, changed.text
    if first == "login":
        assert login.status_code == 201, login.text
        assert not await works(world, login.json()["sessionToken"], user.user_id)
    else:
        assert_error(login, 400, 3, "COMMAND-3M0fs", "Password is invalid")


class _RoundTrips:
    """Counts the Redis round trips of the app's client (each command or pipeline takes a
    connection from the pool once)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, world: World) -> None:
        self.count = 0
        pool = world.client.app.state.ctx.redis.connection_pool
        take = pool.get_connection

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await take(*args, **kwargs)

        monkeypatch.setattr(pool, "get_connection", counted)

    async def of(self, request: Any) -> int:
        before = self.count
        await request
        return self.count - before


@pytest.mark.parametrize("kind", ["session", "machine"])
async def test_a_cached_token_costs_one_redis_round_trip(
    world: World, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A token names its user, so a cache hit reads the entry and that user's credentials
    version together; and it is refused all the same once the version moves."""
    org_id, admin = await world.admin()
    user = await world.human(admin, org_id)
    if kind == "session":
        _, token = await world.login(user)
    else:
        token = await world.token(org_id, "ORG_OWNER")
    assert await works(world, token, user.user_id)  # cached now
    trips = _RoundTrips(monkeypatch, world)
    assert await trips.of(works(world, token, user.user_id)) == 1
    response = await change(world, admin, user.user_id, NEW)
    assert response.status_code == 200, response.text
    assert await works(world, token, user.user_id) is (kind == "machine")


async def test_a_token_made_before_tokens_named_their_users_still_works(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token without a name (as every token made before 2026-11-30): two round trips on a
    cache hit (the entry, then its user's version), and revoked like any other."""
    import secrets

    from api.domain import sessions

    monkeypatch.setattr(sessions, "new_token", lambda _user_id: secrets.token_urlsafe(32))
    org_id, admin = await world.admin()
    user = await world.human(admin, org_id)
    _, legacy = await world.login(user)
    assert "." not in legacy
    assert await works(world, legacy, user.user_id)
    trips = _RoundTrips(monkeypatch, world)
    assert await trips.of(works(world, legacy, user.user_id)) == 2
    response = await change(world, admin, user.user_id, NEW)
    assert response.status_code == 200, response.text
    assert not await works(world, legacy, user.user_id)


async def test_a_token_naming_another_user_is_unknown(world: World) -> None:
    """The name is part of the token (its digest covers it): a token with another user's
    name is another token, unknown."""
    import base64

    org_id, admin = await world.admin()
    user = await world.human(admin, org_id)
    other = await world.human(admin, org_id)
    _, token = await world.login(user)
    secret, dot, _ = token.rpartition(".")
    assert dot
    forged = f"{secret}.{base64.urlsafe_b64encode(other.user_id.encode()).decode().rstrip('=')}"
    assert not await works(world, forged, user.user_id)
    assert await works(world, token, user.user_id)
