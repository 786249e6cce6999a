"""The whole path in one test: create, log in, change, read, log out."""

from __future__ import annotations

from tests.support import STRONG_PASSWORD, World, assert_error, bearer


async def test_create_login_change_and_logout(world: World) -> None:
    org_id, admin = await world.admin()
    alice = await world.human(admin, org_id)
    session_id, session_token = await world.login(alice)

    response = await world.set_password(
        session_token,
        alice.user_id,
        {"newPassword": {"password": "N3w!Password"}, "currentPassword": STRONG_PASSWORD},
    )
    assert response.status_code == 200, response.text
    assert response.json()["details"]["sequence"] == "2"
    assert response.json()["details"]["resourceOwner"] == org_id

    read = await world.client.get(f"/v2/users/{alice.user_id}", headers=bearer(session_token))
    assert read.status_code == 200
    assert read.json()["user"]["state"] == "USER_STATE_ACTIVE"

    gone = await world.client.delete(f"/v2/sessions/{session_id}", headers=bearer(session_token))
    assert gone.status_code == 200
    after = await world.client.get(f"/v2/users/{alice.user_id}", headers=bearer(session_token))
    assert_error(after, 401, 16, "AUTH-7fs1e", "Errors.Token.Invalid")
