"""Machine users authenticate with tokens: password calls do not find them."""

from __future__ import annotations

from api.domain.users import create_machine_user
from api.ids import new_id
from tests.support import World, assert_error, bearer


async def _machine_user(world: World, org_id: str) -> str:
    user_id = new_id()
    await create_machine_user(
        ctx=world.ctx, org_id=org_id, role=None, username=user_id, user_id=user_id
    )
    return user_id


async def test_password_endpoints_do_not_find_machine_users(world: World) -> None:
    org_id, admin = await world.admin()
    machine_id = await _machine_user(world, org_id)

    change = await world.set_password(admin, machine_id, {"newPassword": {"password": "N3w!Pass"}})
    assert_error(change, 404, 5, "COMMAND-SAF4f", "User could not be found")
    reset = await world.client.post(
        f"/v2/users/{machine_id}/password_reset", json={"returnCode": {}}, headers=bearer(admin)
    )
    assert_error(reset, 404, 5, "COMMAND-SAF4f", "User could not be found")
    login = await world.client.post(
        "/v2/sessions",
        json={"checks": {"user": {"userId": machine_id}, "password": {"password": "x"}}},
    )
    assert_error(login, 404, 5, "COMMAND-SAF4f", "User could not be found")

    # Nothing was written: the machine user's only event is its creation.
    sequence = await world.db.fetchval("SELECT sequence FROM users WHERE id = $1", machine_id)
    assert sequence == 1
    # It can still be read by an admin, as a machine.
    read = await world.client.get(f"/v2/users/{machine_id}", headers=bearer(admin))
    assert read.status_code == 200
    assert read.json()["user"]["machine"] == {"name": machine_id}
