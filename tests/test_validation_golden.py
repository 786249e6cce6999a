"""Golden values of the contract's request-validation failures, exactly as they go on the wire.

Every row is one kind of malformed request and the full answer it gets today: HTTP status and
the whole JSON body (``code``, ``message`` and ``details`` if any). The messages are in
protoc-gen-validate's words, as ZITADEL answers (``invalid X.Y: embedded message failed
validation | caused by: ...``). The expected values were recorded from the running code and
are written literally, so any change to how requests are decoded shows up here as a diff.

Recorded before the decoder was rewritten to walk the request structs' type information
instead of parsing msgspec's error strings; every row kept its value except those where
msgspec's own English had leaked through, now in the contract's words: a wrong-typed optional
message says ``value must be an object`` (it said ``Expected `object | null`, got `str` ``),
a wrong-typed enum ``value must be one of the defined enum values``.

A row whose expected body is ``None`` is accepted (not a validation error): only the success
status is checked. A body given as ``bytes`` is sent verbatim; anything else is sent as JSON.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support import World, bearer

NEW_PASSWORD = "N3w!Passw0rd-golden"
EXISTING = "<the existing user>"  # path placeholder: the user made for the test

Expected = dict[str, Any] | None


def case(
    case_id: str, body: Any, status: int, expected: Expected, *, user_id: str = EXISTING
) -> Any:
    """One row; ``user_id`` is the path's user for the ``/v2/users/{userId}/...`` endpoints."""
    return pytest.param(user_id, body, status, expected, id=case_id)


async def post(world: World, path: str, body: Any, token: str | None = None) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers.update(bearer(token))
    return await world.client.post(path, content=content, headers=headers)


def check(response: Any, status: int, expected: Expected) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    if expected is None:
        assert set(response.json()) == {"details"}, response.text
    else:
        assert response.json() == expected


async def iam_owner_and_user(world: World) -> tuple[str, str]:
    """An IAM_OWNER token (allowed everywhere) and an existing human user."""
    org_id = await world.org()
    token = await world.token(org_id, "IAM_OWNER")
    user = await world.human(token, org_id)
    return token, user.user_id


# --- POST /v2/users/{userId}/password -------------------------------------------------------

SET_PASSWORD_CASES = [
    case(
        "missing-newPassword",
        {},
        400,
        {"code": 3, "message": "invalid SetPasswordRequest.NewPassword: value is required"},
    ),
    case(
        "missing-newPassword.password",
        {"newPassword": {}},
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest.NewPassword: embedded message failed "
            "validation | caused by: invalid Password.Password: value is required",
        },
    ),
    case(
        "password-empty",
        {"newPassword": {"password": ""}},
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest.NewPassword: embedded message failed "
            "validation | caused by: invalid Password.Password: value length must be between "
            "1 and 200 runes, inclusive",
        },
    ),
    case(
        "password-201-chars",
        {"newPassword": {"password": "a" * 201}},
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest.NewPassword: embedded message failed "
            "validation | caused by: invalid Password.Password: value length must be between "
            "1 and 200 runes, inclusive",
        },
    ),
    case(
        "password-201-multibyte-runes",
        {"newPassword": {"password": "\u00e9" * 201}},
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest.NewPassword: embedded message failed "
            "validation | caused by: invalid Password.Password: value length must be between "
            "1 and 200 runes, inclusive",
        },
    ),
    case(
        "password-number",
        {"newPassword": {"password": 12345678}},
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest.NewPassword: embedded message failed "
            "validation | caused by: invalid Password.Password: value must be a string",
        },
    ),
    case(
        "password-null",
        {"newPassword": {"password": None}},
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest.NewPassword: embedded message failed "
            "validation | caused by: invalid Password.Password: value must be a string",
        },
    ),
    case(
        "changeRequired-string",
        {"newPassword": {"password": NEW_PASSWORD, "changeRequired": "yes"}},
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest.NewPassword: embedded message failed "
            "validation | caused by: invalid Password.ChangeRequired: value must be a boolean",
        },
    ),
    case(
        "newPassword-string",
        {"newPassword": "x"},
        400,
        {"code": 3, "message": "invalid SetPasswordRequest.NewPassword: value must be an object"},
    ),
    case(
        "newPassword-array",
        {"newPassword": [NEW_PASSWORD]},
        400,
        {"code": 3, "message": "invalid SetPasswordRequest.NewPassword: value must be an object"},
    ),
    case(
        "newPassword-null",
        {"newPassword": None},
        400,
        {"code": 3, "message": "invalid SetPasswordRequest.NewPassword: value must be an object"},
    ),
    case(
        "currentPassword-empty",
        {"newPassword": {"password": NEW_PASSWORD}, "currentPassword": ""},
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest.CurrentPassword: value length must be "
            "between 1 and 200 runes, inclusive",
        },
    ),
    case(
        "currentPassword-201-chars",
        {"newPassword": {"password": NEW_PASSWORD}, "currentPassword": "a" * 201},
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest.CurrentPassword: value length must be "
            "between 1 and 200 runes, inclusive",
        },
    ),
    case(
        "currentPassword-number",
        {"newPassword": {"password": NEW_PASSWORD}, "currentPassword": 1},
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest.CurrentPassword: value must be a string",
        },
    ),
    case(
        "verificationCode-21-chars",
        {"newPassword": {"password": NEW_PASSWORD}, "verificationCode": "A" * 21},
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest.VerificationCode: value length must be "
            "between 1 and 20 runes, inclusive",
        },
    ),
    case(
        "verificationCode-empty",
        {"newPassword": {"password": NEW_PASSWORD}, "verificationCode": ""},
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest.VerificationCode: value length must be "
            "between 1 and 20 runes, inclusive",
        },
    ),
    case(
        "oneof-currentPassword-and-verificationCode",
        {
            "newPassword": {"password": NEW_PASSWORD},
            "currentPassword": "x",
            "verificationCode": "ABC",
        },
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest.Verification: only one of currentPassword, "
            "verificationCode may be set",
        },
    ),
    case(
        "two-failures-first-field-answers",
        {"newPassword": {"password": ""}, "currentPassword": ""},
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest.NewPassword: embedded message failed "
            "validation | caused by: invalid Password.Password: value length must be between "
            "1 and 200 runes, inclusive",
        },
    ),
    case(
        "snake-case-keys-accepted",
        {"new_password": {"password": NEW_PASSWORD, "change_required": False}},
        200,
        None,
    ),
    case(
        "snake-case-keys-validated",
        {"new_password": {"password": ""}},
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest.NewPassword: embedded message failed "
            "validation | caused by: invalid Password.Password: value length must be between "
            "1 and 200 runes, inclusive",
        },
    ),
    case(
        # Both spellings of one field: keys are normalized in order, so the last one wins.
        "camel-and-snake-of-one-field-last-wins",
        b'{"new_password": {"password": "N3w!Passw0rd-golden"}, "newPassword": {"password": ""}}',
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest.NewPassword: embedded message failed "
            "validation | caused by: invalid Password.Password: value length must be between "
            "1 and 200 runes, inclusive",
        },
    ),
    case(
        "unknown-fields-ignored",
        {"newPassword": {"password": NEW_PASSWORD, "foo": 1}, "bar": [1, {"x": None}]},
        200,
        None,
    ),
    case(
        "malformed-json-truncated",
        b'{"newPassword": ',
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest: JSON is malformed: Input data was truncated",
        },
    ),
    case(
        "malformed-json-trailing",
        b'{"newPassword": {"password": "x"}}}',
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest: JSON is malformed: trailing characters "
            "(byte 35)",
        },
    ),
    case(
        "malformed-json-not-json",
        b"hello",
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest: JSON is malformed: invalid character (byte 0)",
        },
    ),
    case(
        "body-array",
        b"[]",
        400,
        {"code": 3, "message": "invalid SetPasswordRequest: the body must be a JSON object"},
    ),
    case(
        "body-null",
        b"null",
        400,
        {"code": 3, "message": "invalid SetPasswordRequest: the body must be a JSON object"},
    ),
    case(
        "body-string",
        b'"x"',
        400,
        {"code": 3, "message": "invalid SetPasswordRequest: the body must be a JSON object"},
    ),
    case(
        "body-number",
        b"1",
        400,
        {"code": 3, "message": "invalid SetPasswordRequest: the body must be a JSON object"},
    ),
    case(
        "body-empty-is-an-empty-object",
        b"",
        400,
        {"code": 3, "message": "invalid SetPasswordRequest.NewPassword: value is required"},
    ),
    case(
        "body-whitespace-is-an-empty-object",
        b"  \n",
        400,
        {"code": 3, "message": "invalid SetPasswordRequest.NewPassword: value is required"},
    ),
    case(
        "nul-escaped-in-string",
        b'{"newPassword": {"password": "Good!Passw0rd\\u0000"}}',
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest.NewPassword: embedded message failed "
            "validation | caused by: invalid Password.Password: value must be valid UTF-8 "
            "without NUL characters",
        },
    ),
    case(
        "nul-raw-control-byte-in-string",
        b'{"newPassword": {"password": "Good!Passw0rd\x00"}}',
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest: JSON is malformed: invalid character (byte 43)",
        },
    ),
    case(
        # Unknown fields are ignored, yet a NUL inside one is refused (with no field named).
        "nul-in-unknown-field",
        b'{"newPassword": {"password": "N3w!Passw0rd-golden"}, "foo": "\\u0000"}',
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest: value must be valid UTF-8 without NUL "
            "characters",
        },
    ),
    case(
        "nul-in-unknown-nested-field",
        b'{"newPassword": {"password": "N3w!Passw0rd-golden", "x": "\\u0000"}}',
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest.NewPassword: embedded message failed "
            "validation | caused by: invalid Password: value must be valid UTF-8 without NUL "
            "characters",
        },
    ),
    case(
        # msgspec refuses lone surrogates while parsing, so this is a JSON error, not a field's.
        "lone-high-surrogate-in-string",
        b'{"newPassword": {"password": "Good!Passw0rd\\ud800"}}',
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest: JSON is malformed: Input data was truncated",
        },
    ),
    case(
        "lone-low-surrogate-in-string",
        b'{"newPassword": {"password": "Good!Passw0rd\\udc00"}}',
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest: JSON is malformed: invalid utf-16 "
            "surrogate pair (byte 49)",
        },
    ),
    case(
        "invalid-utf8-byte-in-string",
        b'{"newPassword": {"password": "Good!Passw0rd\xff"}}',
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest: JSON is malformed: Invalid UTF-8 encoded "
            "string",
        },
    ),
    case(
        "path-user-id-201-chars",
        {"newPassword": {"password": NEW_PASSWORD}},
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest.UserId: value length must be between 1 and "
            "200 runes, inclusive",
        },
        user_id="a" * 201,
    ),
    case(
        "path-user-id-checked-before-body",
        b"[]",
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest.UserId: value length must be between 1 and "
            "200 runes, inclusive",
        },
        user_id="a" * 201,
    ),
    case(
        "path-user-id-nul",
        {"newPassword": {"password": NEW_PASSWORD}},
        400,
        {
            "code": 3,
            "message": "invalid SetPasswordRequest.UserId: value must be valid UTF-8 without "
            "NUL characters",
        },
        user_id="12%0034",
    ),
]


@pytest.mark.parametrize(("user_id", "body", "status", "expected"), SET_PASSWORD_CASES)
async def test_set_password_validation(
    world: World, user_id: str, body: Any, status: int, expected: Expected
) -> None:
    token, existing = await iam_owner_and_user(world)
    user_id = existing if user_id == EXISTING else user_id
    response = await post(world, f"/v2/users/{user_id}/password", body, token)
    check(response, status, expected)


# --- POST /v2/users/{userId}/password_reset -------------------------------------------------

PASSWORD_RESET_CASES = [
    case(
        "notificationType-unknown-number",
        {"sendLink": {"notificationType": 7}},
        400,
        {
            "code": 3,
            "message": "invalid PasswordResetRequest.SendLink: embedded message failed "
            "validation | caused by: invalid SendPasswordResetLink.NotificationType: value "
            "must be one of the defined enum values",
        },
    ),
    case(
        "notificationType-unknown-name",
        {"sendLink": {"notificationType": "FOO"}},
        400,
        {
            "code": 3,
            "message": "invalid PasswordResetRequest.SendLink: embedded message failed "
            "validation | caused by: invalid SendPasswordResetLink.NotificationType: value "
            "must be one of the defined enum values",
        },
    ),
    case(
        "notificationType-float",
        {"sendLink": {"notificationType": 1.5}},
        400,
        {
            "code": 3,
            "message": "invalid PasswordResetRequest.SendLink: embedded message failed "
            "validation | caused by: invalid SendPasswordResetLink.NotificationType: "
            "value must be one of the defined enum values",
        },
    ),
    case(
        "notificationType-null",
        {"sendLink": {"notificationType": None}},
        400,
        {
            "code": 3,
            "message": "invalid PasswordResetRequest.SendLink: embedded message failed "
            "validation | caused by: invalid SendPasswordResetLink.NotificationType: "
            "value must be one of the defined enum values",
        },
    ),
    case(
        "notificationType-sms-name",
        {"sendLink": {"notificationType": "NOTIFICATION_TYPE_SMS"}},
        400,
        {
            "code": 9,
            "message": "SMS notifications are not supported (NOTIFY-Sms0n)",
            "details": [
                {
                    "@type": "type.googleapis.com/zitadel.v1.ErrorDetail",
                    "id": "NOTIFY-Sms0n",
                    "message": "SMS notifications are not supported",
                }
            ],
        },
    ),
    case(
        "notificationType-sms-number",
        {"sendLink": {"notificationType": 2}},
        400,
        {
            "code": 9,
            "message": "SMS notifications are not supported (NOTIFY-Sms0n)",
            "details": [
                {
                    "@type": "type.googleapis.com/zitadel.v1.ErrorDetail",
                    "id": "NOTIFY-Sms0n",
                    "message": "SMS notifications are not supported",
                }
            ],
        },
    ),
    case(
        "urlTemplate-201-chars",
        {"sendLink": {"urlTemplate": "h" * 201}},
        400,
        {
            "code": 3,
            "message": "invalid PasswordResetRequest.SendLink: embedded message failed "
            "validation | caused by: invalid SendPasswordResetLink.UrlTemplate: value length "
            "must be between 1 and 200 runes, inclusive",
        },
    ),
    case(
        "urlTemplate-empty",
        {"sendLink": {"urlTemplate": ""}},
        400,
        {
            "code": 3,
            "message": "invalid PasswordResetRequest.SendLink: embedded message failed "
            "validation | caused by: invalid SendPasswordResetLink.UrlTemplate: value length "
            "must be between 1 and 200 runes, inclusive",
        },
    ),
    case(
        "urlTemplate-number",
        {"sendLink": {"urlTemplate": 5}},
        400,
        {
            "code": 3,
            "message": "invalid PasswordResetRequest.SendLink: embedded message failed "
            "validation | caused by: invalid SendPasswordResetLink.UrlTemplate: value must be "
            "a string",
        },
    ),
    case(
        "oneof-sendLink-and-returnCode",
        {"sendLink": {}, "returnCode": {}},
        400,
        {
            "code": 3,
            "message": "invalid PasswordResetRequest.Medium: only one of sendLink, returnCode "
            "may be set",
        },
    ),
    case(
        "sendLink-string",
        {"sendLink": "x"},
        400,
        {
            "code": 3,
            "message": "invalid PasswordResetRequest.SendLink: value must be an object",
        },
    ),
    case(
        "sendLink-array",
        {"sendLink": []},
        400,
        {
            "code": 3,
            "message": "invalid PasswordResetRequest.SendLink: value must be an object",
        },
    ),
    case(
        "returnCode-string",
        {"returnCode": "x"},
        400,
        {
            "code": 3,
            "message": "invalid PasswordResetRequest.ReturnCode: value must be an object",
        },
    ),
    case(
        "snake-case-keys-validated",
        {"send_link": {"notification_type": 7}},
        400,
        {
            "code": 3,
            "message": "invalid PasswordResetRequest.SendLink: embedded message failed "
            "validation | caused by: invalid SendPasswordResetLink.NotificationType: value "
            "must be one of the defined enum values",
        },
    ),
    case(
        "body-array",
        b"[]",
        400,
        {"code": 3, "message": "invalid PasswordResetRequest: the body must be a JSON object"},
    ),
    case(
        "path-user-id-201-chars",
        {"returnCode": {}},
        400,
        {
            "code": 3,
            "message": "invalid PasswordResetRequest.UserId: value length must be between 1 "
            "and 200 runes, inclusive",
        },
        user_id="a" * 201,
    ),
]


@pytest.mark.parametrize(("user_id", "body", "status", "expected"), PASSWORD_RESET_CASES)
async def test_password_reset_validation(
    world: World, user_id: str, body: Any, status: int, expected: Expected
) -> None:
    token, existing = await iam_owner_and_user(world)
    user_id = existing if user_id == EXISTING else user_id
    response = await post(world, f"/v2/users/{user_id}/password_reset", body, token)
    check(response, status, expected)


# --- POST /v2/users/human -------------------------------------------------------------------

PROFILE = {"givenName": "Given", "familyName": "Family"}
EMAIL = {"email": "golden@example.com"}

ADD_HUMAN_CASES = [
    case(
        "missing-profile",
        {"email": EMAIL},
        400,
        {"code": 3, "message": "invalid AddHumanUserRequest.Profile: value is required"},
    ),
    case(
        "missing-email",
        {"profile": PROFILE},
        400,
        {"code": 3, "message": "invalid AddHumanUserRequest.Email: value is required"},
    ),
    case(
        "missing-profile-and-email",
        {},
        400,
        {"code": 3, "message": "invalid AddHumanUserRequest.Profile: value is required"},
    ),
    case(
        "profile-givenName-empty",
        {"profile": {"givenName": "", "familyName": "Family"}, "email": EMAIL},
        400,
        {
            "code": 3,
            "message": "invalid AddHumanUserRequest.Profile: embedded message failed "
            "validation | caused by: invalid SetHumanProfile.GivenName: value length must be "
            "between 1 and 200 runes, inclusive",
        },
    ),
    case(
        "profile-givenName-missing",
        {"profile": {"familyName": "Family"}, "email": EMAIL},
        400,
        {
            "code": 3,
            "message": "invalid AddHumanUserRequest.Profile: embedded message failed "
            "validation | caused by: invalid SetHumanProfile.GivenName: value is required",
        },
    ),
    case(
        "profile-familyName-201-chars",
        {"profile": {"givenName": "Given", "familyName": "f" * 201}, "email": EMAIL},
        400,
        {
            "code": 3,
            "message": "invalid AddHumanUserRequest.Profile: embedded message failed "
            "validation | caused by: invalid SetHumanProfile.FamilyName: value length must be "
            "between 1 and 200 runes, inclusive",
        },
    ),
    case(
        "profile-nickName-201-chars",
        {"profile": {**PROFILE, "nickName": "n" * 201}, "email": EMAIL},
        400,
        {
            "code": 3,
            "message": "invalid AddHumanUserRequest.Profile: embedded message failed "
            "validation | caused by: invalid SetHumanProfile.NickName: value length must be at "
            "most 200 runes",
        },
    ),
    case(
        "profile-array",
        {"profile": [], "email": EMAIL},
        400,
        {"code": 3, "message": "invalid AddHumanUserRequest.Profile: value must be an object"},
    ),
    case(
        "oneof-password-and-hashedPassword",
        {
            "profile": PROFILE,
            "email": EMAIL,
            "password": {"password": NEW_PASSWORD},
            "hashedPassword": {"hash": "$2a$x"},
        },
        400,
        {
            "code": 3,
            "message": "invalid AddHumanUserRequest.PasswordType: only one of password, "
            "hashedPassword may be set",
        },
    ),
    case(
        "hashedPassword-hash-missing",
        {"profile": PROFILE, "email": EMAIL, "hashedPassword": {}},
        400,
        {
            "code": 3,
            "message": "invalid AddHumanUserRequest.HashedPassword: embedded message failed "
            "validation | caused by: invalid HashedPassword.Hash: value is required",
        },
    ),
    case(
        "password-string",
        {"profile": PROFILE, "email": EMAIL, "password": "x"},
        400,
        {
            "code": 3,
            "message": "invalid AddHumanUserRequest.Password: value must be an object",
        },
    ),
    case(
        "organization-orgId-number",
        {"profile": PROFILE, "email": EMAIL, "organization": {"orgId": 5}},
        400,
        {
            "code": 3,
            "message": "invalid AddHumanUserRequest.Organization: embedded message failed "
            "validation | caused by: invalid Organization.OrgId: value must be a string",
        },
    ),
    case(
        "organization-string",
        {"profile": PROFILE, "email": EMAIL, "organization": "x"},
        400,
        {
            "code": 3,
            "message": "invalid AddHumanUserRequest.Organization: value must be an object",
        },
    ),
    case(
        "email-isVerified-string",
        {"profile": PROFILE, "email": {**EMAIL, "isVerified": "true"}},
        400,
        {
            "code": 3,
            "message": "invalid AddHumanUserRequest.Email: embedded message failed validation "
            "| caused by: invalid SetHumanEmail.IsVerified: value must be a boolean",
        },
    ),
    case(
        "email-empty",
        {"profile": PROFILE, "email": {"email": ""}},
        400,
        {
            "code": 3,
            "message": "invalid AddHumanUserRequest.Email: embedded message failed validation "
            "| caused by: invalid SetHumanEmail.Email: value length must be between 1 and 200 "
            "runes, inclusive",
        },
    ),
    case(
        "email-nul",
        b'{"profile": {"givenName": "A", "familyName": "B"},'
        b' "email": {"email": "a\\u0000b@example.com"}}',
        400,
        {
            "code": 3,
            "message": "invalid AddHumanUserRequest.Email: embedded message failed validation "
            "| caused by: invalid SetHumanEmail.Email: value must be valid UTF-8 without NUL "
            "characters",
        },
    ),
    case(
        "username-201-chars",
        {"profile": PROFILE, "email": EMAIL, "username": "u" * 201},
        400,
        {
            "code": 3,
            "message": "invalid AddHumanUserRequest.Username: value length must be between 1 "
            "and 200 runes, inclusive",
        },
    ),
    case(
        "userId-number",
        {"profile": PROFILE, "email": EMAIL, "userId": 1},
        400,
        {"code": 3, "message": "invalid AddHumanUserRequest.UserId: value must be a string"},
    ),
]


@pytest.mark.parametrize(("user_id", "body", "status", "expected"), ADD_HUMAN_CASES)
async def test_add_human_user_validation(
    world: World, user_id: str, body: Any, status: int, expected: Expected
) -> None:
    token, _ = await iam_owner_and_user(world)
    response = await post(world, "/v2/users/human", body, token)
    check(response, status, expected)


# --- POST /v2/sessions ----------------------------------------------------------------------

CREATE_SESSION_CASES = [
    case(
        "body-empty",
        b"",
        400,
        {
            "code": 3,
            "message": "invalid CreateSessionRequest.Checks: embedded message failed "
            "validation | caused by: invalid Checks.User: value is required",
        },
    ),
    case(
        "no-checks",
        {},
        400,
        {
            "code": 3,
            "message": "invalid CreateSessionRequest.Checks: embedded message failed "
            "validation | caused by: invalid Checks.User: value is required",
        },
    ),
    case(
        "checks-null",
        {"checks": None},
        400,
        {
            "code": 3,
            "message": "invalid CreateSessionRequest.Checks: embedded message failed "
            "validation | caused by: invalid Checks.User: value is required",
        },
    ),
    case(
        "checks-empty",
        {"checks": {}},
        400,
        {
            "code": 3,
            "message": "invalid CreateSessionRequest.Checks: embedded message failed "
            "validation | caused by: invalid Checks.User: value is required",
        },
    ),
    case(
        "checks-without-user",
        {"checks": {"password": {"password": "x"}}},
        400,
        {
            "code": 3,
            "message": "invalid CreateSessionRequest.Checks: embedded message failed "
            "validation | caused by: invalid Checks.User: value is required",
        },
    ),
    case(
        "checks-user-neither-userId-nor-loginName",
        {"checks": {"user": {}, "password": {"password": "x"}}},
        400,
        {
            "code": 3,
            "message": "invalid CreateSessionRequest.Checks: embedded message failed "
            "validation | caused by: invalid Checks.User: embedded message failed validation "
            "| caused by: invalid CheckUser.Search: value is required",
        },
    ),
    case(
        "oneof-userId-and-loginName",
        {"checks": {"user": {"userId": "1", "loginName": "a"}, "password": {"password": "x"}}},
        400,
        {
            "code": 3,
            "message": "invalid CheckUser.Search: only one of userId, loginName may be set",
        },
    ),
    case(
        "oneof-userId-and-loginName-before-missing-password",
        {"checks": {"user": {"userId": "1", "loginName": "a"}}},
        400,
        {
            "code": 3,
            "message": "invalid CheckUser.Search: only one of userId, loginName may be set",
        },
    ),
    case(
        "checks-without-password",
        {"checks": {"user": {"loginName": "a"}}},
        400,
        {
            "code": 3,
            "message": "invalid CreateSessionRequest.Checks: embedded message failed "
            "validation | caused by: invalid Checks.Password: value is required",
        },
    ),
    case(
        "checks-password-password-empty",
        {"checks": {"user": {"loginName": "a"}, "password": {"password": ""}}},
        400,
        {
            "code": 3,
            "message": "invalid CreateSessionRequest.Checks: embedded message failed "
            "validation | caused by: invalid Checks.Password: embedded message failed "
            "validation | caused by: invalid CheckPassword.Password: value length must be "
            "between 1 and 200 runes, inclusive",
        },
    ),
    case(
        "checks-password-password-missing",
        {"checks": {"user": {"loginName": "a"}, "password": {}}},
        400,
        {
            "code": 3,
            "message": "invalid CreateSessionRequest.Checks: embedded message failed "
            "validation | caused by: invalid Checks.Password: embedded message failed "
            "validation | caused by: invalid CheckPassword.Password: value is required",
        },
    ),
    case(
        "checks-user-loginName-empty",
        {"checks": {"user": {"loginName": ""}, "password": {"password": "x"}}},
        400,
        {
            "code": 3,
            "message": "invalid CreateSessionRequest.Checks: embedded message failed "
            "validation | caused by: invalid Checks.User: embedded message failed validation "
            "| caused by: invalid CheckUser.LoginName: value length must be between 1 and 200 "
            "runes, inclusive",
        },
    ),
    case(
        "checks-user-loginName-201-chars",
        {"checks": {"user": {"loginName": "a" * 201}, "password": {"password": "x"}}},
        400,
        {
            "code": 3,
            "message": "invalid CreateSessionRequest.Checks: embedded message failed "
            "validation | caused by: invalid Checks.User: embedded message failed validation "
            "| caused by: invalid CheckUser.LoginName: value length must be between 1 and 200 "
            "runes, inclusive",
        },
    ),
    case(
        "checks-user-userId-number",
        {"checks": {"user": {"userId": 5}}},
        400,
        {
            "code": 3,
            "message": "invalid CreateSessionRequest.Checks: embedded message failed "
            "validation | caused by: invalid Checks.User: embedded message failed validation "
            "| caused by: invalid CheckUser.UserId: value must be a string",
        },
    ),
    case(
        "checks-string",
        {"checks": "x"},
        400,
        {
            "code": 3,
            "message": "invalid CreateSessionRequest.Checks: value must be an object",
        },
    ),
    case(
        "checks-user-string",
        {"checks": {"user": "x"}},
        400,
        {
            "code": 3,
            "message": "invalid CreateSessionRequest.Checks: embedded message failed "
            "validation | caused by: invalid Checks.User: value must be an object",
        },
    ),
    case(
        "body-array",
        b"[]",
        400,
        {"code": 3, "message": "invalid CreateSessionRequest: the body must be a JSON object"},
    ),
]


@pytest.mark.parametrize(("user_id", "body", "status", "expected"), CREATE_SESSION_CASES)
async def test_create_session_validation(
    world: World, user_id: str, body: Any, status: int, expected: Expected
) -> None:
    response = await post(world, "/v2/sessions", body)  # no token: login is anonymous
    check(response, status, expected)


# --- body size ------------------------------------------------------------------------------

MAX_BODY_BYTES = 64 * 1024
BODY_PATHS = [
    "/v2/users/{user_id}/password",
    "/v2/users/{user_id}/password_reset",
    "/v2/users/human",
    "/v2/sessions",
]


@pytest.mark.parametrize("path", BODY_PATHS)
async def test_body_over_the_limit(world: World, path: str) -> None:
    assert world.settings.max_body_bytes == MAX_BODY_BYTES
    token, user_id = await iam_owner_and_user(world)
    body = b"{}" + b" " * (MAX_BODY_BYTES - 1)  # one byte over
    response = await post(world, path.format(user_id=user_id), body, token)
    check(response, 413, {"code": 3, "message": "request body too large"})


async def test_body_at_the_limit_is_decoded(world: World) -> None:
    token, user_id = await iam_owner_and_user(world)
    body = b"{}" + b" " * (MAX_BODY_BYTES - 2)  # exactly the limit
    response = await post(world, f"/v2/users/{user_id}/password", body, token)
    check(
        response,
        400,
        {"code": 3, "message": "invalid SetPasswordRequest.NewPassword: value is required"},
    )


# --- nesting --------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [70, 2000], ids=["past-the-walk-limit", "past-the-parser"])
async def test_deeply_nested_body_is_a_400(world: World, depth: int) -> None:
    """Nested far deeper than any request message (within the size limit): a 400, not a
    RecursionError and a 500 (as it was before the decoder was rewritten)."""
    token, user_id = await iam_owner_and_user(world)
    body = b'{"a":' * depth + b"1" + b"}" * depth
    response = await post(world, f"/v2/users/{user_id}/password", body, token)
    check(
        response,
        400,
        {"code": 3, "message": "invalid SetPasswordRequest: the body is nested too deeply"},
    )
