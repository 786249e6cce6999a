"""Every row of the contract's error table that the two password endpoints can produce, the
order of checks, and body validation, through HTTP against the real stores.

Not here: "overloaded" (SERVER-0verl) and "database / Redis unreachable" (SERVER-Unav1) are
covered by the fault tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from api.settings import Settings
from tests.change_password_support import (
    NEW_PASSWORD,
    OTHER_PASSWORD,
    STRONG_PASSWORD,
    change,
    expire_code,
    failed_attempts,
    logs_in,
    post_state,
    reset,
    set_org_policy,
    setup_user,
    world_with,
)
from tests.support import World, assert_error, bearer

ENDPOINTS = ["password", "password_reset"]
VALID_BODY: dict[str, dict[str, Any]] = {
    "password": {"newPassword": {"password": NEW_PASSWORD}},
    "password_reset": {"returnCode": {}},
}
# A body that is wrong in shape for either endpoint.
BAD_BODY = {"newPassword": {"password": 5}, "sendLink": {"urlTemplate": 7}}
NEW_PASSWORD_LENGTH = (
    "invalid SetPasswordRequest.NewPassword: embedded message failed validation | "
    "caused by: invalid Password.Password: value length must be between 1 and 200 runes, "
    "inclusive"
)


# --- authentication (401) -------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_no_authorization_header(world: World, endpoint: str) -> None:
    _, _, user = await setup_user(world)
    response = await world.client.post(
        f"/v2/users/{user.user_id}/{endpoint}", json=VALID_BODY[endpoint]
    )
    assert_error(response, 401, 16, None, "auth header missing")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("kind", ["unknown", "revoked-session", "not-bearer", "empty"])
async def test_bad_token(world: World, endpoint: str, kind: str) -> None:
    _, admin, user = await setup_user(world)
    if kind == "unknown":
        header = "Bearer this-token-does-not-exist-0123456789abcdef"
    elif kind == "revoked-session":
        session_id, session_token = await world.login(user)
        gone = await world.client.delete(
            f"/v2/sessions/{session_id}", headers=bearer(session_token)
        )
        assert gone.status_code == 200, gone.text
        header = f"Bearer {session_token}"
    elif kind == "not-bearer":
        header = f"Basic {admin}"
    else:
        header = "Bearer "
    response = await world.client.post(
        f"/v2/users/{user.user_id}/{endpoint}",
        json=VALID_BODY[endpoint],
        headers={"Authorization": header},
    )
    assert_error(response, 401, 16, "AUTH-7fs1e", "Errors.Token.Invalid")
    assert "www-authenticate" in response.headers


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_401_comes_before_400(world: World, endpoint: str) -> None:
    _, _, user = await setup_user(world)
    url = f"/v2/users/{user.user_id}/{endpoint}"
    bad_token = await world.client.post(url, json=BAD_BODY, headers=bearer("nope-" * 8))
    assert_error(bad_token, 401, 16, "AUTH-7fs1e", "Errors.Token.Invalid")
    no_header = await world.client.post(url, content=b"{not json")
    assert_error(no_header, 401, 16, None, "auth header missing")
    # The same bad body with a good token is a 400: the 401 above was not luck.
    _, admin, _ = await setup_user(world)
    good_token = await world.client.post(url, json=BAD_BODY, headers=bearer(admin))
    assert good_token.status_code == 400, good_token.text


# --- permissions (403) ----------------------------------------------------------------------


async def test_forbidden_callers(world: World) -> None:
    _, admin, alice = await setup_user(world)
    bob = await world.human(admin, alice.org_id)
    _, bob_session = await world.login(bob)
    _, alice_session = await world.login(alice)
    _, stranger_admin = await world.admin()

    def forbidden(response: Any) -> None:
        assert_error(response, 403, 7, "AUTH-AWfge", "No matching permissions found")

    # Admin set: needs user.write on the user's organization, even for oneself.
    forbidden(await change(world, stranger_admin, alice.user_id, NEW_PASSWORD))
    forbidden(await change(world, bob_session, alice.user_id, NEW_PASSWORD))
    forbidden(await change(world, alice_session, alice.user_id, NEW_PASSWORD))
    # Current password: self or user.write, nobody else, even with the right password.
    forbidden(
        await change(world, stranger_admin, alice.user_id, NEW_PASSWORD, current=STRONG_PASSWORD)
    )
    forbidden(
        await change(world, bob_session, alice.user_id, NEW_PASSWORD, current=STRONG_PASSWORD)
    )
    # Reset: self or user.write; returnCode needs user.write.
    forbidden(await reset(world, stranger_admin, alice.user_id, {}))
    forbidden(await reset(world, bob_session, alice.user_id, {"returnCode": {}}))
    forbidden(await reset(world, alice_session, alice.user_id, {"returnCode": {}}))
    forbidden(await reset(world, stranger_admin, alice.user_id, {"returnCode": {}}))
    # Nothing of the above changed the password.
    assert await logs_in(world, alice, STRONG_PASSWORD)
    # ...and the allowed callers are allowed (so the 403s are about the caller).
    assert (await reset(world, alice_session, alice.user_id, {})).status_code == 200
    assert (
        await change(world, alice_session, alice.user_id, NEW_PASSWORD, current=STRONG_PASSWORD)
    ).status_code == 200
    assert (await change(world, admin, alice.user_id, OTHER_PASSWORD)).status_code == 200


async def test_code_branch_accepts_any_authenticated_caller(world: World) -> None:
    _, admin, alice = await setup_user(world)
    _, stranger_admin = await world.admin()
    code = await world.reset_code(admin, alice.user_id)
    response = await change(world, stranger_admin, alice.user_id, NEW_PASSWORD, code=code)
    assert response.status_code == 200, response.text
    assert await logs_in(world, alice, NEW_PASSWORD)


# --- unknown user (404) ---------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_unknown_or_deleted_user(world: World, endpoint: str) -> None:
    _, admin, user = await setup_user(world)
    removed = await world.client.delete(f"/v2/users/{user.user_id}", headers=bearer(admin))
    assert removed.status_code == 200, removed.text
    for user_id in ("123456789012345678", user.user_id):
        response = await world.client.post(
            f"/v2/users/{user_id}/{endpoint}", json=VALID_BODY[endpoint], headers=bearer(admin)
        )
        assert_error(response, 404, 5, "COMMAND-SAF4f", "User could not be found")


async def test_404_comes_before_every_other_check(world: World) -> None:
    _, admin, user = await setup_user(world)
    _, stranger = await world.admin()
    missing = "999999999999999999"

    def not_found(response: Any) -> None:
        assert_error(response, 404, 5, "COMMAND-SAF4f", "User could not be found")

    not_found(await change(world, stranger, missing, NEW_PASSWORD))  # before 403
    not_found(await change(world, admin, missing, "weak"))  # before policy
    not_found(await change(world, admin, missing, NEW_PASSWORD, code="ABC123"))  # before code
    not_found(await change(world, admin, missing, NEW_PASSWORD, current=NEW_PASSWORD))  # Aesh5
    not_found(await change(world, admin, missing, NEW_PASSWORD, current="wrong"))  # 3M0fs
    not_found(await reset(world, stranger, missing, {"returnCode": {}}))
    not_found(await reset(world, admin, missing, {"sendLink": {"urlTemplate": "no url"}}))
    # The same requests against an existing user give their own errors.
    assert (await change(world, stranger, user.user_id, NEW_PASSWORD)).status_code == 403


# --- state ----------------------------------------------------------------------------------


async def test_locked_user_current_password_branch(world: World) -> None:
    _, admin, user = await setup_user(world)
    code = await world.reset_code(admin, user.user_id)
    await post_state(world, admin, user.user_id, "lock")
    response = await change(world, admin, user.user_id, NEW_PASSWORD, current=STRONG_PASSWORD)
    assert_error(response, 400, 9, "COMMAND-JLK35", "User is locked")
    # The other branches still work for a locked user (recovery), and it stays locked.
    by_code = await change(world, admin, user.user_id, NEW_PASSWORD, code=code)
    assert by_code.status_code == 200, by_code.text
    by_admin = await change(world, admin, user.user_id, OTHER_PASSWORD)
    assert by_admin.status_code == 200, by_admin.text
    # A locked user may request a code.
    assert (await reset(world, admin, user.user_id, {"returnCode": {}})).status_code == 200


async def test_deactivated_user(world: World) -> None:
    _, admin, user = await setup_user(world)
    code = await world.reset_code(admin, user.user_id)
    await post_state(world, admin, user.user_id, "deactivate")

    def inactive(response: Any) -> None:
        assert_error(response, 400, 9, "COMMAND-Sfe4g", "User is not active")

    inactive(await change(world, admin, user.user_id, NEW_PASSWORD, current=STRONG_PASSWORD))
    inactive(await change(world, admin, user.user_id, NEW_PASSWORD, code=code))
    inactive(await reset(world, admin, user.user_id, {"returnCode": {}}))
    inactive(await reset(world, admin, user.user_id, {}))
    # The admin branch succeeds on a deactivated user.
    by_admin = await change(world, admin, user.user_id, NEW_PASSWORD)
    assert by_admin.status_code == 200, by_admin.text
    await post_state(world, admin, user.user_id, "reactivate")
    assert await logs_in(world, user, NEW_PASSWORD)


# --- current password -----------------------------------------------------------------------


async def test_wrong_current_password(world: World) -> None:
    _, admin, user = await setup_user(world)
    _, session = await world.login(user)
    for token in (session, admin):
        response = await change(world, token, user.user_id, NEW_PASSWORD, current="Wr0ng!pass")
        assert_error(response, 400, 3, "COMMAND-3M0fs", "Password is invalid")
    assert await failed_attempts(world, user.user_id) == 2
    assert await logs_in(world, user, STRONG_PASSWORD)


async def test_new_equals_current(world: World) -> None:
    _, admin, user = await setup_user(world)
    response = await change(world, admin, user.user_id, STRONG_PASSWORD, current=STRONG_PASSWORD)
    assert_error(
        response,
        400,
        9,
        "COMMAND-Aesh5",
        "New password cannot be the same as your current password",
    )


async def test_user_without_password(world: World) -> None:
    _, admin, user = await setup_user(world, password=None)
    response = await change(world, admin, user.user_id, NEW_PASSWORD, current=STRONG_PASSWORD)
    assert_error(response, 400, 9, "COMMAND-Fds3s", "User has not set a password")
    # An admin can give it one.
    assert (await change(world, admin, user.user_id, NEW_PASSWORD)).status_code == 200
    assert await logs_in(world, user, NEW_PASSWORD)


# --- codes ----------------------------------------------------------------------------------


def _code_not_found(response: Any) -> None:
    assert_error(response, 400, 9, "COMMAND-2M9fs", "Code not found")


def _code_invalid(response: Any) -> None:
    assert_error(response, 400, 3, "CODE-woT0xc", "Code is invalid")


async def test_code_never_requested(world: World) -> None:
    _, admin, user = await setup_user(world)
    _code_not_found(await change(world, admin, user.user_id, NEW_PASSWORD, code="ABC123"))


async def test_code_already_used(world: World) -> None:
    _, admin, user = await setup_user(world)
    code = await world.reset_code(admin, user.user_id)
    first = await change(world, admin, user.user_id, NEW_PASSWORD, code=code)
    assert first.status_code == 200, first.text
    _code_not_found(await change(world, admin, user.user_id, OTHER_PASSWORD, code=code))
    assert await logs_in(world, user, NEW_PASSWORD)


async def test_code_burnt_after_five_wrong_tries(world: World) -> None:
    _, admin, user = await setup_user(world)
    code = await world.reset_code(admin, user.user_id)
    wrong = "ZZZZZZ" if code != "ZZZZZZ" else "YYYYYY"
    for _ in range(4):
        _code_invalid(await change(world, admin, user.user_id, NEW_PASSWORD, code=wrong))
    # The fifth wrong try burns it (four do not: see the next test); then even the right
    # code is "not found".
    _code_invalid(await change(world, admin, user.user_id, NEW_PASSWORD, code=wrong))
    _code_not_found(await change(world, admin, user.user_id, NEW_PASSWORD, code=code))
    assert await logs_in(world, user, STRONG_PASSWORD)


async def test_code_survives_four_wrong_tries(world: World) -> None:
    _, admin, user = await setup_user(world)
    code = await world.reset_code(admin, user.user_id)
    wrong = "ZZZZZZ" if code != "ZZZZZZ" else "YYYYYY"
    for _ in range(4):
        _code_invalid(await change(world, admin, user.user_id, NEW_PASSWORD, code=wrong))
    response = await change(world, admin, user.user_id, NEW_PASSWORD, code=code)
    assert response.status_code == 200, response.text


async def test_code_expired(world: World, settings: Settings) -> None:
    _, admin, user = await setup_user(world)
    code = await world.reset_code(admin, user.user_id)
    await expire_code(settings, user.user_id)
    response = await change(world, admin, user.user_id, NEW_PASSWORD, code=code)
    assert_error(response, 400, 9, "CODE-QvUQ4P", "Code is expired")
    assert await logs_in(world, user, STRONG_PASSWORD)


async def test_wrong_code(world: World) -> None:
    _, admin, user = await setup_user(world)
    code = await world.reset_code(admin, user.user_id)
    wrong = "ABCDEF" if code != "ABCDEF" else "FEDCBA"
    _code_invalid(await change(world, admin, user.user_id, NEW_PASSWORD, code=wrong))
    assert (await change(world, admin, user.user_id, NEW_PASSWORD, code=code)).status_code == 200


# --- password policy ------------------------------------------------------------------------

# Each password breaks exactly one rule of the default policy.
COMPLEXITY = [
    ("Ab1!xyz", "DOMAIN-HuJf6", "Password is too short"),
    ("ABCDEFG1!", "DOMAIN-co3Xw", "Password must contain lower case"),
    ("abcdefg1!", "DOMAIN-VoaRj", "Password must contain upper case"),
    ("Abcdefgh!", "DOMAIN-ZBv4H", "Password must contain number"),
    ("Abcdefg12", "DOMAIN-ZDLwA", "Password must contain symbol"),
    ("Password1!", "DOMAIN-Bl0ck", "Password is too common"),
    ("pASSWORD1!", "DOMAIN-Bl0ck", "Password is too common"),  # blocklist ignores case
]


@pytest.mark.parametrize(("password", "error_id", "message"), COMPLEXITY)
async def test_each_complexity_rule(
    world: World, password: str, error_id: str, message: str
) -> None:
    _, admin, user = await setup_user(world)
    response = await change(world, admin, user.user_id, password)
    assert_error(response, 400, 3, error_id, message)
    response = await change(world, admin, user.user_id, password, current=STRONG_PASSWORD)
    assert_error(response, 400, 3, error_id, message)
    assert await logs_in(world, user, STRONG_PASSWORD)


# Each password breaks every rule from its row on: the first failing rule is reported.
COMPLEXITY_ORDER = [
    ("a", "DOMAIN-HuJf6"),  # too short, and no upper/number/symbol
    ("--------", "DOMAIN-co3Xw"),  # no lower, upper, number
    ("abcdefgh", "DOMAIN-VoaRj"),  # no upper, number, symbol
    ("abcdEFGH", "DOMAIN-ZBv4H"),  # no number, symbol
    ("Password1", "DOMAIN-ZDLwA"),  # no symbol, and common
]


@pytest.mark.parametrize(("password", "error_id"), COMPLEXITY_ORDER)
async def test_complexity_rules_report_the_first_failure(
    world: World, password: str, error_id: str
) -> None:
    _, admin, user = await setup_user(world)
    response = await change(world, admin, user.user_id, password)
    assert response.status_code == 400, response.text
    assert response.json()["details"][0]["id"] == error_id, response.text


async def test_history_reuse(world: World) -> None:
    org_id, admin, user = await setup_user(world)
    await set_org_policy(world, org_id, history=3)
    steps = ["H1st!ory-one", "H1st!ory-two"]
    for password in steps:
        assert (await change(world, admin, user.user_id, password)).status_code == 200

    def reused(response: Any) -> None:
        assert_error(response, 400, 3, "DOMAIN-H1st0", "Password was used before")

    # History 3: the current password and the two before it (the initial one counts).
    reused(await change(world, admin, user.user_id, STRONG_PASSWORD))
    reused(await change(world, admin, user.user_id, "H1st!ory-one"))
    reused(await change(world, admin, user.user_id, "H1st!ory-two"))
    code = await world.reset_code(admin, user.user_id)
    reused(await change(world, admin, user.user_id, STRONG_PASSWORD, code=code))
    reused(await change(world, admin, user.user_id, "H1st!ory-one", current="H1st!ory-two"))
    # One more change pushes the initial password out of the window.
    assert (
        await change(world, admin, user.user_id, "H1st!ory-three", code=code)
    ).status_code == 200
    back = await change(world, admin, user.user_id, STRONG_PASSWORD)
    assert back.status_code == 200, back.text


@pytest.mark.parametrize(
    "template",
    [
        "https://example.com/reset?code={{.Secret}}",  # unknown placeholder
        "https://example.com/reset?code={{.Code}",  # unbalanced
        "https://example.com/reset?code={{.Code}}&x=}}",  # stray braces
        "https://example.com/reset ?code={{.Code}}",  # whitespace
        "example.com/reset?code={{.Code}}",  # no scheme
        "https:///reset?code={{.Code}}",  # http(s) without a host
        "{{.Code}}",  # not a URL at all
        "myapp://reset?code={{.Code}}",  # only http(s) (issue 10)
        "https://example.com:99999/reset?code={{.Code}}",  # a port out of range
    ],
)
async def test_bad_url_template(world: World, template: str) -> None:
    _, admin, user = await setup_user(world)
    response = await reset(world, admin, user.user_id, {"sendLink": {"urlTemplate": template}})
    assert_error(response, 400, 3, "DOMAIN-oGh5e", "URL Template is invalid")


@pytest.mark.parametrize(
    "template",
    [
        "https://example.com/reset?user={{.UserID}}&code={{.Code}}&org={{.OrgID}}",
        "https://example.com:8443/{{.OrgID}}/reset#{{.Code}}",
    ],
)
async def test_good_url_template(world: World, template: str) -> None:
    _, admin, user = await setup_user(world)
    response = await reset(world, admin, user.user_id, {"sendLink": {"urlTemplate": template}})
    assert response.status_code == 200, response.text
    assert "verificationCode" not in response.json()


async def test_sms_is_refused(world: World) -> None:
    _, admin, user = await setup_user(world)
    body = {"sendLink": {"notificationType": "NOTIFICATION_TYPE_SMS"}}
    response = await reset(world, admin, user.user_id, body)
    assert_error(response, 400, 9, "NOTIFY-Sms0n", "SMS notifications are not supported")


# --- rate limits (429) ----------------------------------------------------------------------


def _rate_limited(response: Any, max_wait_s: int) -> None:
    assert_error(response, 429, 8, "LIMIT-R4te1", "Too many requests")
    wait = int(response.headers["retry-after"])
    assert 1 <= wait <= max_wait_s, wait


async def test_reset_requests_are_rate_limited(world: World) -> None:
    _, admin, user = await setup_user(world)
    for _ in range(5):
        assert (await reset(world, admin, user.user_id, {"returnCode": {}})).status_code == 200
    _rate_limited(await reset(world, admin, user.user_id, {"returnCode": {}}), 3600)
    _rate_limited(await reset(world, admin, user.user_id, {}), 3600)
    # The limit is per user: another user of the same caller is not affected.
    other = await world.human(admin, user.org_id)
    assert (await reset(world, admin, other.user_id, {"returnCode": {}})).status_code == 200


async def test_verification_attempts_are_rate_limited(
    make_settings: Callable[..., Settings],
) -> None:
    async with world_with(make_settings(rate_verifications_per_user_per_minute=3)) as world:
        _, admin, user = await setup_user(world)
        for _ in range(3):
            response = await change(world, admin, user.user_id, NEW_PASSWORD, current="Wr0ng!")
            assert response.status_code == 400, response.text
        # Even the right password is refused now, before it is checked.
        _rate_limited(
            await change(world, admin, user.user_id, NEW_PASSWORD, current=STRONG_PASSWORD), 60
        )
        assert await failed_attempts(world, user.user_id) == 3

        # Codes count too (per user): three tries, the fourth is refused.
        other = await world.human(admin, user.org_id)
        code = await world.reset_code(admin, other.user_id)
        for _ in range(3):
            response = await change(world, admin, other.user_id, NEW_PASSWORD, code="WRONG1")
            assert response.status_code == 400, response.text
        _rate_limited(await change(world, admin, other.user_id, NEW_PASSWORD, code=code), 60)
        # Checked in the limits' round trip, the right code was claimed and given back: it
        # stays usable, with the three wrong tries counted. A wrong code refused by the
        # limit counts as a try, as it would have within the limit.
        code_key = world.ctx.keys.reset_code(other.user_id)
        assert await world.ctx.redis.hget(code_key, "claim") is None
        assert await world.ctx.redis.hget(code_key, "tries") == b"3"
        wrong = "WRONG1" if code != "WRONG1" else "WRONG2"
        _rate_limited(await change(world, admin, other.user_id, NEW_PASSWORD, code=wrong), 60)
        assert await world.ctx.redis.hget(code_key, "tries") == b"4"
        # The admin branch verifies nothing and is not limited.
        assert (await change(world, admin, other.user_id, NEW_PASSWORD)).status_code == 200


# --- order of checks --------------------------------------------------------------------------


async def test_new_equals_current_is_checked_before_verification(world: World) -> None:
    _, admin, user = await setup_user(world)
    assert await failed_attempts(world, user.user_id) == 0
    # Wrong current password, and the new password equals it: Aesh5, not 3M0fs.
    response = await change(world, admin, user.user_id, "Wr0ng!Passw0rd", current="Wr0ng!Passw0rd")
    assert_error(
        response,
        400,
        9,
        "COMMAND-Aesh5",
        "New password cannot be the same as your current password",
    )
    assert await failed_attempts(world, user.user_id) == 0
    # Same request with different passwords does count: the counter is the one that moves.
    wrong = await change(world, admin, user.user_id, NEW_PASSWORD, current="Wr0ng!Passw0rd")
    assert_error(wrong, 400, 3, "COMMAND-3M0fs", "Password is invalid")
    assert await failed_attempts(world, user.user_id) == 1


async def test_wrong_current_password_is_reported_before_a_weak_new_one(world: World) -> None:
    _, admin, user = await setup_user(world)
    response = await change(world, admin, user.user_id, "weak", current="Wr0ng!Passw0rd")
    assert_error(response, 400, 3, "COMMAND-3M0fs", "Password is invalid")
    # With the right current password the same weak one is a policy error.
    response = await change(world, admin, user.user_id, "weak", current=STRONG_PASSWORD)
    assert_error(response, 400, 3, "DOMAIN-HuJf6", "Password is too short")


async def test_code_errors_are_reported_before_a_weak_new_password(world: World) -> None:
    _, admin, user = await setup_user(world)
    _code_not_found(await change(world, admin, user.user_id, "weak", code="ABC123"))
    code = await world.reset_code(admin, user.user_id)
    wrong = "ABC123" if code != "ABC123" else "321CBA"
    _code_invalid(await change(world, admin, user.user_id, "weak", code=wrong))


async def test_weak_password_with_a_valid_code_does_not_spend_it(world: World) -> None:
    _, admin, user = await setup_user(world)
    code = await world.reset_code(admin, user.user_id)
    # Five weak attempts: were any of them a wrong try, the fifth would burn the code.
    weak = ["short", "nouppercase1!", "NOLOWERCASE1!", "NoNumber!!", "Password1!"]
    for password in weak:
        response = await change(world, admin, user.user_id, password, code=code)
        assert response.status_code == 400, response.text
        assert response.json()["details"][0]["id"].startswith("DOMAIN-"), response.text
    response = await change(world, admin, user.user_id, NEW_PASSWORD, code=code)
    assert response.status_code == 200, response.text
    assert await logs_in(world, user, NEW_PASSWORD)


# --- body validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"newPassword": {"password": ""}}, NEW_PASSWORD_LENGTH),
        ({"newPassword": {"password": "x" * 201}}, NEW_PASSWORD_LENGTH),
        (
            {"newPassword": {"password": 12345678}},
            "invalid SetPasswordRequest.NewPassword: embedded message failed validation | "
            "caused by: invalid Password.Password: value must be a string",
        ),
        (
            {"newPassword": {"password": NEW_PASSWORD, "changeRequired": "true"}},
            "invalid SetPasswordRequest.NewPassword: embedded message failed validation | "
            "caused by: invalid Password.ChangeRequired: value must be a boolean",
        ),
        (
            {"newPassword": {"password": NEW_PASSWORD}, "currentPassword": 1234},
            "invalid SetPasswordRequest.CurrentPassword: value must be a string",
        ),
        (
            {"newPassword": {"password": NEW_PASSWORD}, "currentPassword": ""},
            "invalid SetPasswordRequest.CurrentPassword: value length must be between 1 and "
            "200 runes, inclusive",
        ),
        (
            {"newPassword": {"password": NEW_PASSWORD}, "verificationCode": ""},
            "invalid SetPasswordRequest.VerificationCode: value length must be between 1 and "
            "20 runes, inclusive",
        ),
        ({}, "invalid SetPasswordRequest.NewPassword: value is required"),
        (
            {"newPassword": {}},
            "invalid SetPasswordRequest.NewPassword: embedded message failed validation | "
            "caused by: invalid Password.Password: value is required",
        ),
        (
            {
                "newPassword": {"password": NEW_PASSWORD},
                "currentPassword": STRONG_PASSWORD,
                "verificationCode": "ABC123",
            },
            "invalid SetPasswordRequest.Verification: only one of currentPassword, "
            "verificationCode may be set",
        ),
    ],
)
async def test_set_password_validation(world: World, body: Any, message: str) -> None:
    _, admin, user = await setup_user(world)
    response = await world.set_password(admin, user.user_id, body)
    assert_error(response, 400, 3, None, message)
    assert await logs_in(world, user, STRONG_PASSWORD)


async def test_both_oneof_members_refused_even_in_snake_case(world: World) -> None:
    _, admin, user = await setup_user(world)
    code = await world.reset_code(admin, user.user_id)
    body = {
        "new_password": {"password": NEW_PASSWORD},
        "current_password": STRONG_PASSWORD,
        "verification_code": code,
    }
    response = await world.set_password(admin, user.user_id, body)
    assert_error(
        response,
        400,
        3,
        None,
        "invalid SetPasswordRequest.Verification: only one of currentPassword, "
        "verificationCode may be set",
    )
    # null counts as unset.
    body["current_password"] = None
    ok = await world.set_password(admin, user.user_id, body)
    assert ok.status_code == 200, ok.text


async def test_reset_validation(world: World) -> None:
    _, admin, user = await setup_user(world)
    both = await reset(world, admin, user.user_id, {"sendLink": {}, "returnCode": {}})
    assert_error(
        both,
        400,
        3,
        None,
        "invalid PasswordResetRequest.Medium: only one of sendLink, returnCode may be set",
    )
    long_template = "https://example.com/" + "x" * 181
    too_long = await reset(world, admin, user.user_id, {"sendLink": {"urlTemplate": long_template}})
    assert_error(
        too_long,
        400,
        3,
        None,
        "invalid PasswordResetRequest.SendLink: embedded message failed validation | caused "
        "by: invalid SendPasswordResetLink.UrlTemplate: value length must be between 1 and "
        "200 runes, inclusive",
    )
    not_object = await reset(world, admin, user.user_id, [])
    assert_error(
        not_object, 400, 3, None, "invalid PasswordResetRequest: the body must be a JSON object"
    )


async def test_snake_case_body_is_accepted(world: World) -> None:
    _, admin, user = await setup_user(world)
    code = await world.reset_code(admin, user.user_id)
    body = {
        "new_password": {"password": NEW_PASSWORD, "change_required": True},
        "verification_code": code,
    }
    response = await world.set_password(admin, user.user_id, body)
    assert response.status_code == 200, response.text
    read = await world.client.get(f"/v2/users/{user.user_id}", headers=bearer(admin))
    assert read.json()["user"]["human"]["passwordChangeRequired"] is True
    snake_reset = await reset(world, admin, user.user_id, {"return_code": {}})
    assert snake_reset.status_code == 200
    assert len(snake_reset.json()["verificationCode"]) == 6


async def test_unknown_fields_are_ignored(world: World) -> None:
    _, admin, user = await setup_user(world)
    body = {
        "newPassword": {"password": NEW_PASSWORD, "someday": [1, 2]},
        "currentPassword": STRONG_PASSWORD,
        "notAField": {"nested": True},
        "extra_snake": 5,
    }
    response = await world.set_password(admin, user.user_id, body)
    assert response.status_code == 200, response.text
    assert await logs_in(world, user, NEW_PASSWORD)


async def test_malformed_json(world: World) -> None:
    _, admin, user = await setup_user(world)
    for raw in (b'{"newPassword": {"password": "Secr3t!secret"} x', b'{"newPassword": "Secr3t!'):
        response = await world.client.post(
            f"/v2/users/{user.user_id}/password",
            content=raw,
            headers={**bearer(admin), "content-type": "application/json"},
        )
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["code"] == 3
        assert body["message"].startswith("invalid SetPasswordRequest: "), body
        assert "Secr3t!" not in response.text
    # (msgspec's own words: "JSON is malformed: ..." or "Input data was truncated".)
