"""Issue 10, item 11: the lockout's lock may end by itself.

Ten anonymous wrong logins lock a user (the contract's default, kept: until an administrator
unlocks). An organization may prefer a timed lock: policy key ``lockout_duration_seconds``.
"""

from __future__ import annotations

import asyncio

from api.domain import policies
from tests.support import STRONG_PASSWORD, World, assert_error

WRONG = "Wr0ng!Passw0rd"


async def _lock_out(world: World, login_name: str, attempts: int) -> None:
    for _ in range(attempts):
        response = await world.try_login(login_name, WRONG)
        assert response.status_code == 400, response.text
    locked = await world.try_login(login_name, STRONG_PASSWORD)
    assert_error(locked, 400, 9, "COMMAND-JLK35", "User is locked")


async def test_a_timed_lockout_ends_by_itself(world: World) -> None:
    org, admin = await world.admin()
    await policies.set_policy(
        ctx=world.ctx,
        org_id=org,
        updates={"max_password_attempts": 3, "lockout_duration_seconds": 2},
    )
    user = await world.human(admin, org)
    await _lock_out(world, user.username, 3)
    until = await world.db.fetchval("SELECT locked_until FROM users WHERE id = $1", user.user_id)
    assert until is not None

    await asyncio.sleep(2.2)
    # Over: the next login unlocks (user.unlocked, by the lockout) and goes on.
    session = await world.try_login(user.username, STRONG_PASSWORD)
    assert session.status_code == 201, session.text
    row = await world.db.fetchrow(
        "SELECT state, locked_until, failed_password_attempts FROM users WHERE id = $1",
        user.user_id,
    )
    assert (row["state"], row["locked_until"], row["failed_password_attempts"]) == (
        "active",
        None,
        0,
    )
    last = await world.db.fetchrow(
        "SELECT event_type, creator FROM events WHERE aggregate_id = $1 "
        "AND event_type LIKE 'user.%lock%' ORDER BY sequence DESC LIMIT 1",
        user.user_id,
    )
    assert (last["event_type"], last["creator"]) == ("user.unlocked", "lockout")
    # And the count starts again: three more wrong tries lock it again.
    await _lock_out(world, user.username, 3)


async def test_the_default_lockout_lasts_until_an_administrator_unlocks(world: World) -> None:
    org, admin = await world.admin()
    await policies.set_policy(ctx=world.ctx, org_id=org, updates={"max_password_attempts": 2})
    user = await world.human(admin, org)
    await _lock_out(world, user.username, 2)
    assert (
        await world.db.fetchval("SELECT locked_until FROM users WHERE id = $1", user.user_id)
    ) is None
    await asyncio.sleep(1.1)
    still = await world.try_login(user.username, STRONG_PASSWORD)
    assert_error(still, 400, 9, "COMMAND-JLK35", "User is locked")
    unlocked = await world.client.post(
        f"/v2/users/{user.user_id}/unlock", json={}, headers={"Authorization": f"Bearer {admin}"}
    )
    assert unlocked.status_code == 200, unlocked.text
    assert (await world.try_login(user.username, STRONG_PASSWORD)).status_code == 201


async def test_an_administrators_lock_never_ends_by_itself(world: World) -> None:
    org, admin = await world.admin()
    await policies.set_policy(ctx=world.ctx, org_id=org, updates={"lockout_duration_seconds": 1})
    user = await world.human(admin, org)
    locked = await world.client.post(
        f"/v2/users/{user.user_id}/lock", json={}, headers={"Authorization": f"Bearer {admin}"}
    )
    assert locked.status_code == 200, locked.text
    await asyncio.sleep(1.2)
    still = await world.try_login(user.username, STRONG_PASSWORD)
    assert_error(still, 400, 9, "COMMAND-JLK35", "User is locked")
