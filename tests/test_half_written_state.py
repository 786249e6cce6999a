"""A failure half-way leaves no half-written state.

The failure is real: a Postgres trigger, installed for one user only, makes the change's
single statement fail at the moment it appends its event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import redis.asyncio as aioredis

from api.settings import Settings
from tests.support import STRONG_PASSWORD, World, assert_error, bearer


@asynccontextmanager
async def failing_event(world: World, user_id: str, event_type: str) -> AsyncIterator[None]:
    name = f"fail_{abs(hash((user_id, event_type)))}"
    await world.db.execute(
        f"""CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'injected failure'; END $$;
            CREATE TRIGGER {name} BEFORE INSERT ON events FOR EACH ROW
            WHEN (NEW.aggregate_id = '{user_id}' AND NEW.event_type = '{event_type}')
            EXECUTE FUNCTION {name}();"""
    )
    try:
        yield
    finally:
        await world.db.execute(f"DROP TRIGGER {name} ON events; DROP FUNCTION {name}();")


async def _state(world: World, user_id: str) -> tuple[int, str | None, int]:
    row = await world.db.fetchrow(
        "SELECT sequence, password_hash, (SELECT count(*) FROM outbox WHERE aggregate_id = $1)"
        " AS outbox FROM users WHERE id = $1",
        user_id,
    )
    return row["sequence"], row["password_hash"], row["outbox"]


async def test_failed_write_after_a_claim_releases_the_code(world: World) -> None:
    org_id, admin = await world.admin()
    alice = await world.human(admin, org_id)
    code = await world.reset_code(admin, alice.user_id)
    before = await _state(world, alice.user_id)
    body = {"newPassword": {"password": "Fresh!Passw0rd"}, "verificationCode": code}

    async with failing_event(world, alice.user_id, "user.human.password.changed"):
        failed = await world.set_password(admin, alice.user_id, body)
    assert_error(failed, 500, 13, "SERVER-Int3r", "Internal error")
    assert "injected" not in failed.text
    # Nothing was written: same sequence, same hash, no outbox rows, old password works.
    assert await _state(world, alice.user_id) == before
    await world.login(alice)

    # The claim was released: the same code works now, once.
    retried = await world.set_password(admin, alice.user_id, body)
    assert retried.status_code == 200, retried.text
    assert int(retried.json()["details"]["sequence"]) == before[0] + 1
    again = await world.set_password(admin, alice.user_id, body)
    assert_error(again, 400, 9, "COMMAND-2M9fs", "Code not found")


async def test_failed_current_password_change_writes_nothing(world: World) -> None:
    org_id, admin = await world.admin()
    alice = await world.human(admin, org_id)
    _, session = await world.login(alice)
    before = await _state(world, alice.user_id)
    body = {"newPassword": {"password": "Fresh!Passw0rd"}, "currentPassword": STRONG_PASSWORD}

    async with failing_event(world, alice.user_id, "user.human.password.changed"):
        failed = await world.set_password(session, alice.user_id, body)
    assert failed.status_code == 500
    assert await _state(world, alice.user_id) == before
    history = await world.db.fetchval(
        "SELECT count(*) FROM password_history WHERE user_id = $1", alice.user_id
    )
    assert history == 1  # only the initial password

    assert (await world.set_password(session, alice.user_id, body)).status_code == 200


async def test_failed_reset_request_leaves_no_usable_code(
    world: World, settings: Settings, make_settings: Callable[..., Settings]
) -> None:
    org_id, admin = await world.admin()
    alice = await world.human(admin, org_id)
    redis = aioredis.Redis.from_url(settings.redis_url)
    key = f"{settings.redis_prefix}code:{{{alice.user_id}}}"
    try:
        async with failing_event(world, alice.user_id, "user.human.password.code.added"):
            failed = await world.client.post(
                f"/v2/users/{alice.user_id}/password_reset",
                json={"sendLink": {}},
                headers=bearer(admin),
            )
        assert failed.status_code == 500
        assert await redis.exists(key) == 0
        assert (
            await world.db.fetchval(
                "SELECT count(*) FROM outbox WHERE aggregate_id = $1", alice.user_id
            )
            == 0
        )
        # A code requested now works as usual.
        code = await world.reset_code(admin, alice.user_id)
        done = await world.set_password(
            admin,
            alice.user_id,
            {"newPassword": {"password": "Fresh!Passw0rd"}, "verificationCode": code},
        )
        assert done.status_code == 200, done.text
    finally:
        await redis.aclose()
