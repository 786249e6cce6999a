"""Issue 10, item 10: a reset code is judged by one clock (Redis's, for its expiry and claim)
and bound to the user's state (its credentials version at issue), not by comparing Redis's
clock with Postgres's; and the claim is fenced, so a request stalled past the claim's
lifetime cannot use a code that another request used meanwhile.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.change_password_support import NEW_PASSWORD, OTHER_PASSWORD, change, setup_user
from tests.rpc_support import serve
from tests.support import World, assert_error, bearer

running = contextmanager(serve)  # ``identity serve`` in a process of its own


async def _events(world: World, user_id: str, event_type: str) -> int:
    count: int = await world.db.fetchval(
        "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = $2",
        user_id,
        event_type,
    )
    return count


async def _logs_in(world: World, login_name: str, password: str) -> bool:
    return (await world.try_login(login_name, password)).status_code == 201


async def test_a_postgres_clock_ahead_of_redis_does_not_void_a_fresh_code(world: World) -> None:
    _, admin, user = await setup_user(world)
    code = await world.reset_code(admin, user.user_id)
    # Postgres's clock an hour ahead of Redis's: the last change looks newer than the code.
    await world.db.execute(
        "UPDATE users SET password_changed_at = now() + interval '1 hour' WHERE id = $1",
        user.user_id,
    )
    response = await change(world, admin, user.user_id, NEW_PASSWORD, code=code)
    assert response.status_code == 200, response.text


async def test_a_postgres_clock_behind_redis_does_not_revive_a_voided_code(world: World) -> None:
    _, admin, user = await setup_user(world)
    code = await world.reset_code(admin, user.user_id)
    # An administrator sets the password after the code was issued ...
    assert (await change(world, admin, user.user_id, OTHER_PASSWORD)).status_code == 200
    # ... and the code is void, whatever Postgres's clock said about that change, and even
    # if the cleanup after that change never reached Redis (put the code back as it was).
    await world.db.execute(
        "UPDATE users SET password_changed_at = now() - interval '1 day' WHERE id = $1",
        user.user_id,
    )
    response = await change(world, admin, user.user_id, NEW_PASSWORD, code=code)
    assert_error(response, 400, 9, "COMMAND-2M9fs", "Code not found")
    assert await _logs_in(world, user.username, OTHER_PASSWORD)


async def test_a_code_survives_a_lost_cleanup_only_until_the_next_change(world: World) -> None:
    """The code's binding is the version, not the cleanup: re-store a used code's Redis entry
    (as if ``burn_code`` had failed) and it is still refused."""
    _, admin, user = await setup_user(world)
    code = await world.reset_code(admin, user.user_id)
    key = world.ctx.keys.reset_code(user.user_id)
    saved = await world.ctx.redis.hgetall(key)
    assert (await change(world, admin, user.user_id, NEW_PASSWORD, code=code)).status_code == 200
    await world.ctx.redis.hset(key, mapping=saved)
    await world.ctx.redis.hdel(key, "claim", "claim_until")
    again = await change(world, admin, user.user_id, OTHER_PASSWORD, code=code)
    assert_error(again, 400, 9, "COMMAND-2M9fs", "Code not found")
    assert await _events(world, user.user_id, "user.human.password.changed") == 1


class _StallFirst(BaseHTTPRequestHandler):
    """A breach-check range API whose first answer waits until released: the first password
    change stalls between its code claim and its write."""

    arrived = threading.Event()
    release = threading.Event()
    calls = 0

    def do_GET(self) -> None:
        cls = type(self)
        cls.calls += 1
        if cls.calls == 1:
            cls.arrived.set()
            cls.release.wait(10)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stalling_range_api() -> Iterator[str]:
    _StallFirst.arrived = threading.Event()
    _StallFirst.release = threading.Event()
    _StallFirst.calls = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StallFirst)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/range"
    _StallFirst.release.set()
    server.shutdown()
    server.server_close()


async def test_a_request_stalled_past_its_claim_cannot_reuse_a_used_code(
    world: World, stalling_range_api: str
) -> None:
    _, admin, user = await setup_user(world)
    code = await world.reset_code(admin, user.user_id)
    settings = world.settings
    with running(
        settings,
        server="uvicorn",
        IDENTITY_BREACH_CHECK_URL=stalling_range_api,
        IDENTITY_BREACH_CHECK_TIMEOUT_S="30",
        IDENTITY_CODE_CLAIM_TTL_MS="300",
    ) as api:
        async with httpx.AsyncClient(base_url=api.http, timeout=30) as client:

            def body(password: str) -> dict[str, Any]:
                return {"verificationCode": code, "newPassword": {"password": password}}

            path = f"/v2/users/{user.user_id}/password"
            stalled = asyncio.ensure_future(
                client.post(path, json=body(NEW_PASSWORD), headers=bearer(admin))
            )
            # The first request claimed the code and is stuck before its write ...
            assert await asyncio.to_thread(_StallFirst.arrived.wait, 10)
            await asyncio.sleep(0.6)  # ... past its claim's lifetime
            second = await client.post(path, json=body(OTHER_PASSWORD), headers=bearer(admin))
            assert second.status_code == 200, second.text

            _StallFirst.release.set()
            late = await stalled
    assert_error(late, 400, 9, "COMMAND-2M9fs", "Code not found")
    assert await _events(world, user.user_id, "user.human.password.changed") == 1
    assert await _logs_in(world, user.username, OTHER_PASSWORD)
    assert not await _logs_in(world, user.username, NEW_PASSWORD)
