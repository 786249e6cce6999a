"""Strings Postgres cannot store (NUL, lone surrogates) are a 400, never a 500."""

from __future__ import annotations

from tests.support import World, assert_error, bearer


async def test_nul_in_a_body_string_is_a_400_not_a_500(world: World) -> None:
    """Found by ./scripts/fuzz: a NUL in a stored field reached Postgres and became a 500."""
    org_id, admin = await world.admin()
    response = await world.client.post(
        "/v2/users/human",
        content=b'{"profile": {"givenName": "A", "familyName": "B"},'
        b' "email": {"email": "a\\u0000b@example.com"}}',
        headers={**bearer(admin), "Content-Type": "application/json"},
    )
    assert_error(
        response,
        400,
        3,
        None,
        "invalid AddHumanUserRequest.Email: embedded message failed validation | caused by: "
        "invalid SetHumanEmail.Email: value must be valid UTF-8 without NUL characters",
    )
    alice = await world.human(admin, org_id)
    weak = await world.set_password(
        admin, alice.user_id, {"newPassword": {"password": "Good!Passw0rd\u0000"}}
    )
    assert weak.status_code == 400


async def test_nul_in_a_path_id_is_a_400_not_a_500(world: World) -> None:
    _, admin = await world.admin()
    response = await world.client.get("/v2/users/12%0034", headers=bearer(admin))
    assert_error(
        response,
        400,
        3,
        None,
        "invalid GetUserByIDRequest.UserId: value must be valid UTF-8 without NUL characters",
    )
