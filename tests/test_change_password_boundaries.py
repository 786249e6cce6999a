"""Length boundaries (counted in characters), Unicode passwords end to end, and codes that
compare case-insensitively."""

from __future__ import annotations

import httpx
import pytest

from tests.change_password_support import (
    NEW_PASSWORD,
    STRONG_PASSWORD,
    change,
    logs_in,
    set_org_policy,
    setup_user,
)
from tests.support import Human, World, assert_error, bearer

BRANCHES = ["admin", "currentPassword", "verificationCode"]


def _length_error(field: str, high: int) -> str:
    return (
        f"invalid SetPasswordRequest.{field}: value length must be between 1 and {high} runes, "
        "inclusive"
    )


NEW_PASSWORD_LENGTH = (
    "invalid SetPasswordRequest.NewPassword: embedded message failed validation | "
    "caused by: invalid Password.Password: value length must be between 1 and 200 runes, "
    "inclusive"
)


async def _set_via(
    world: World, branch: str, admin: str, user: Human, old: str, new: str
) -> httpx.Response:
    if branch == "admin":
        return await change(world, admin, user.user_id, new)
    if branch == "currentPassword":
        _, session = await world.login(user, old)
        return await change(world, session, user.user_id, new, current=old)
    code = await world.reset_code(admin, user.user_id)
    return await change(world, admin, user.user_id, new, code=code)


def _strong(length: int, filler: str = "x") -> str:
    """A password of exactly ``length`` characters that meets the default policy."""
    head = "Aa1!"
    return head + filler * (length - len(head))


# --- new password ---------------------------------------------------------------------------


@pytest.mark.parametrize("branch", BRANCHES)
@pytest.mark.parametrize("password", ["", _strong(201), "😀" * 201, "漢" * 201])
async def test_new_password_outside_1_to_200_characters(
    world: World, branch: str, password: str
) -> None:
    _, admin, user = await setup_user(world)
    body: dict[str, object] = {"newPassword": {"password": password}}
    if branch == "currentPassword":
        body["currentPassword"] = STRONG_PASSWORD
    elif branch == "verificationCode":
        body["verificationCode"] = await world.reset_code(admin, user.user_id)
    response = await world.set_password(admin, user.user_id, body)
    assert_error(response, 400, 3, None, NEW_PASSWORD_LENGTH)
    assert await logs_in(world, user, STRONG_PASSWORD)


@pytest.mark.parametrize("branch", BRANCHES)
async def test_one_character_passes_validation_then_fails_the_default_policy(
    world: World, branch: str
) -> None:
    _, admin, user = await setup_user(world)
    body: dict[str, object] = {"newPassword": {"password": "x"}}
    if branch == "currentPassword":
        body["currentPassword"] = STRONG_PASSWORD
    elif branch == "verificationCode":
        body["verificationCode"] = await world.reset_code(admin, user.user_id)
    response = await world.set_password(admin, user.user_id, body)
    assert_error(response, 400, 3, "DOMAIN-HuJf6", "Password is too short")


@pytest.mark.parametrize("branch", BRANCHES)
async def test_one_character_password_under_a_permissive_policy(world: World, branch: str) -> None:
    org_id, admin, user = await setup_user(world)
    await set_org_policy(
        world,
        org_id,
        min_length=1,
        has_lowercase=False,
        has_uppercase=False,
        has_number=False,
        has_symbol=False,
        blocklist=False,
    )
    response = await _set_via(world, branch, admin, user, STRONG_PASSWORD, "7")
    assert response.status_code == 200, response.text
    assert await logs_in(world, user, "7")
    assert not await logs_in(world, user, STRONG_PASSWORD)


@pytest.mark.parametrize("branch", BRANCHES)
@pytest.mark.parametrize(
    "new",
    [
        _strong(200),
        "Aa1" + "😀" * 197,  # 200 characters, 791 bytes
        "Aa1" + "漢" * 197,
        "Pässwörd1 😀🔐 ✨",
        "Zz9密码安全很重要🙂",
        "Ω≈ç√∫µ≤≥÷ Aa1",
    ],
    ids=["ascii-200", "emoji-200", "cjk-200", "emoji", "cjk", "symbols"],
)
async def test_long_and_unicode_passwords_work_end_to_end(
    world: World, branch: str, new: str
) -> None:
    _, admin, user = await setup_user(world)
    response = await _set_via(world, branch, admin, user, STRONG_PASSWORD, new)
    assert response.status_code == 200, response.text
    assert await logs_in(world, user, new)
    assert not await logs_in(world, user, STRONG_PASSWORD)
    # And it is the current password for the next change (round trip of the exact string).
    back = await change(world, admin, user.user_id, NEW_PASSWORD, current=new)
    assert back.status_code == 200, back.text
    assert await logs_in(world, user, NEW_PASSWORD)
    assert not await logs_in(world, user, new)


# --- current password -----------------------------------------------------------------------


async def test_current_password_of_201_characters_is_a_validation_error(world: World) -> None:
    _, admin, user = await setup_user(world)
    response = await change(world, admin, user.user_id, NEW_PASSWORD, current=_strong(201))
    assert_error(response, 400, 3, None, _length_error("CurrentPassword", 200))
    # 200 characters pass validation and are simply wrong.
    response = await change(world, admin, user.user_id, NEW_PASSWORD, current=_strong(200))
    assert_error(response, 400, 3, "COMMAND-3M0fs", "Password is invalid")


# --- verification code ----------------------------------------------------------------------


async def test_code_of_20_characters_is_a_wrong_code(world: World) -> None:
    _, admin, user = await setup_user(world)
    code = await world.reset_code(admin, user.user_id)
    response = await change(world, admin, user.user_id, NEW_PASSWORD, code=code + "A" * 14)
    assert_error(response, 400, 3, "CODE-woT0xc", "Code is invalid")
    # It was a wrong try, not the end of the code.
    ok = await change(world, admin, user.user_id, NEW_PASSWORD, code=code)
    assert ok.status_code == 200, ok.text


async def test_code_of_21_characters_is_a_validation_error(world: World) -> None:
    _, admin, user = await setup_user(world)
    code = await world.reset_code(admin, user.user_id)
    response = await change(world, admin, user.user_id, NEW_PASSWORD, code=code + "A" * 15)
    assert_error(response, 400, 3, None, _length_error("VerificationCode", 20))
    # Validation happens before the code is looked at: five of these burn nothing.
    for _ in range(5):
        again = await change(world, admin, user.user_id, NEW_PASSWORD, code="B" * 21)
        assert again.status_code == 400
    ok = await change(world, admin, user.user_id, NEW_PASSWORD, code=code)
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("transform", ["lower", "mixed"])
async def test_codes_compare_case_insensitively(world: World, transform: str) -> None:
    _, admin, user = await setup_user(world)
    code = await world.reset_code(admin, user.user_id)
    assert code == code.upper()
    if transform == "lower":
        given = code.lower()
    else:
        given = "".join(c.lower() if i % 2 else c for i, c in enumerate(code))
    response = await change(world, admin, user.user_id, NEW_PASSWORD, code=given)
    assert response.status_code == 200, response.text
    assert await logs_in(world, user, NEW_PASSWORD)


# --- path -----------------------------------------------------------------------------------


async def test_user_id_of_201_characters(world: World) -> None:
    _, admin, _ = await setup_user(world)
    response = await world.client.post(
        f"/v2/users/{'1' * 201}/password",
        json={"newPassword": {"password": NEW_PASSWORD}},
        headers=bearer(admin),
    )
    assert_error(response, 400, 3, None, _length_error("UserId", 200))
    response = await world.client.post(
        f"/v2/users/{'1' * 200}/password",
        json={"newPassword": {"password": NEW_PASSWORD}},
        headers=bearer(admin),
    )
    assert_error(response, 404, 5, "COMMAND-SAF4f", "User could not be found")
