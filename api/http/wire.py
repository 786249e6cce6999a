"""Request and response bodies of the JSON API, and their strict decoding.

Inputs accept lowerCamelCase and snake_case and ignore unknown fields; types are strict (a
number where a string belongs is a 400). Failures are reported in protoc-gen-validate's
words, as ZITADEL does: ``invalid SetPasswordRequest.NewPassword: embedded message failed
validation | caused by: invalid Password.Password: value length must be between 1 and 200
runes, inclusive``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, TypeVar, get_args, get_type_hints

import msgspec
from msgspec import Meta, Struct

from api.errors import RequestInvalid
from api.events import Details

S = TypeVar("S", bound=Struct)

Text200 = Annotated[str, Meta(min_length=1, max_length=200)]
Text20 = Annotated[str, Meta(min_length=1, max_length=20)]
Text1000 = Annotated[str, Meta(min_length=1, max_length=1000)]


class WireIn(Struct, rename="camel", kw_only=True):
    proto_name: ClassVar[str] = ""


# --- change password ------------------------------------------------------------------------


class PasswordIn(WireIn, kw_only=True):
    proto_name = "Password"
    password: Text200
    change_required: bool = False


class SetPasswordRequest(WireIn, kw_only=True):
    proto_name = "SetPasswordRequest"
    new_password: PasswordIn
    current_password: Text200 | None = None
    verification_code: Text20 | None = None


# --- reset ----------------------------------------------------------------------------------

NotificationType = Annotated[
    str | int, Meta(description="NOTIFICATION_TYPE_Email (or Unspecified); SMS is refused")
]


class SendPasswordResetLink(WireIn, kw_only=True):
    proto_name = "SendPasswordResetLink"
    notification_type: NotificationType = "NOTIFICATION_TYPE_Unspecified"
    url_template: Text200 | None = None


class ReturnPasswordResetCode(WireIn, kw_only=True):
    proto_name = "ReturnPasswordResetCode"


class PasswordResetRequest(WireIn, kw_only=True):
    proto_name = "PasswordResetRequest"
    send_link: SendPasswordResetLink | None = None
    return_code: ReturnPasswordResetCode | None = None


# --- users ----------------------------------------------------------------------------------


class OrganizationIn(WireIn, kw_only=True):
    proto_name = "Organization"
    org_id: Text200 | None = None


class ProfileIn(WireIn, kw_only=True):
    proto_name = "SetHumanProfile"
    given_name: Text200
    family_name: Text200
    nick_name: Annotated[str, Meta(max_length=200)] | None = None
    display_name: Annotated[str, Meta(max_length=200)] | None = None


class EmailIn(WireIn, kw_only=True):
    proto_name = "SetHumanEmail"
    email: Text200
    is_verified: bool = False


class HashedPasswordIn(WireIn, kw_only=True):
    proto_name = "HashedPassword"
    hash: Text200
    change_required: bool = False


class AddHumanUserRequest(WireIn, kw_only=True):
    proto_name = "AddHumanUserRequest"
    user_id: Text200 | None = None
    username: Text200 | None = None
    organization: OrganizationIn | None = None
    profile: ProfileIn
    email: EmailIn
    password: PasswordIn | None = None
    hashed_password: HashedPasswordIn | None = None


# --- sessions -------------------------------------------------------------------------------


class CheckUserIn(WireIn, kw_only=True):
    proto_name = "CheckUser"
    user_id: Text200 | None = None
    login_name: Text200 | None = None


class CheckPasswordIn(WireIn, kw_only=True):
    proto_name = "CheckPassword"
    password: Text200


class ChecksIn(WireIn, kw_only=True):
    proto_name = "Checks"
    user: CheckUserIn | None = None
    password: CheckPasswordIn | None = None


class CreateSessionRequest(WireIn, kw_only=True):
    proto_name = "CreateSessionRequest"
    checks: ChecksIn | None = None


# --- responses ------------------------------------------------------------------------------


class WireOut(Struct, rename="camel", omit_defaults=True, kw_only=True):
    pass


class DetailsOut(WireOut, kw_only=True):
    sequence: str
    change_date: str
    resource_owner: str


class DetailsResponse(WireOut, kw_only=True):
    details: DetailsOut


class PasswordResetResponse(WireOut, kw_only=True):
    details: DetailsOut
    verification_code: str | None = None


class AddHumanUserResponse(WireOut, kw_only=True):
    user_id: str
    details: DetailsOut


class CreateSessionResponse(WireOut, kw_only=True):
    details: DetailsOut
    session_id: str
    session_token: str


def timestamp(value: datetime) -> str:
    """RFC 3339, UTC, ``Z``, microseconds."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def details_out(details: Details) -> DetailsOut:
    return DetailsOut(
        sequence=str(details.sequence),
        change_date=timestamp(details.change_date),
        resource_owner=details.resource_owner,
    )


_encoder = msgspec.json.Encoder()


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


# --- decoding -------------------------------------------------------------------------------

_json_decoder = msgspec.json.Decoder()
_SNAKE = re.compile(r"_([a-z0-9])")
_PATH = re.compile(r"\.(\w+)|\[(\d+)\]")
_MISSING_FIELD = re.compile(r"Object missing required field `(\w+)`")


def _camel(key: str) -> str:
    return _SNAKE.sub(lambda m: m.group(1).upper(), key) if "_" in key else key


def _normalize_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {_camel(k): _normalize_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalize_keys(v) for v in value]
    return value


def _go_name(python_name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in python_name.split("_"))


def _struct_in(annotation: Any) -> type[WireIn] | None:
    """The request struct inside ``Annotated[...]`` / ``X | None``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, WireIn):
        return annotation
    for arg in get_args(annotation):  # Annotated's first argument, or a union's members
        found = _struct_in(arg)
        if found is not None:
            return found
    return None


def _length_bounds(annotation: Any) -> tuple[int | None, int | None]:
    """The ``Meta(min_length, max_length)`` of a field, looking through unions."""
    for arg in get_args(annotation):
        if isinstance(arg, Meta):
            return arg.min_length, arg.max_length
        low, high = _length_bounds(arg)
        if low is not None or high is not None:
            return low, high
    return None, None


def _field_by_wire_name(struct: type[WireIn], wire_name: str) -> tuple[str, Any] | None:
    hints = get_type_hints(struct, include_extras=True)
    for field in msgspec.structs.fields(struct):
        if field.encode_name == wire_name:
            return field.name, hints[field.name]
    return None


def length_message(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"value length must be between {low} and {high} runes, inclusive"
    if high is not None:
        return f"value length must be at most {high} runes"
    return f"value length must be at least {low} runes"


def _chain(root: type[WireIn], path: list[str], leaf: str) -> str:
    """Turn a JSON path into PGV's nested 'embedded message failed validation' chain."""
    parts: list[str] = []
    struct: type[WireIn] | None = root
    for i, wire_name in enumerate(path):
        if struct is None:
            break
        found = _field_by_wire_name(struct, wire_name)
        if found is None:
            break
        name, annotation = found
        prefix = f"invalid {struct.proto_name}.{_go_name(name)}: "
        if i == len(path) - 1:
            parts.append(prefix + leaf)
            return " | caused by: ".join(parts)
        parts.append(prefix + "embedded message failed validation")
        struct = _struct_in(annotation)
    parts.append(f"invalid {(struct or root).proto_name}: {leaf}")
    return " | caused by: ".join(parts)


def _leaf_message(root: type[WireIn], path: list[str], raw: str) -> str:
    if "of length" in raw:
        struct: type[WireIn] | None = root
        annotation: Any = None
        for wire_name in path:
            found = _field_by_wire_name(struct, wire_name) if struct else None
            if found is None:
                break
            annotation = found[1]
            struct = _struct_in(annotation)
        low, high = _length_bounds(annotation) if annotation is not None else (None, None)
        return length_message(low, high)
    if raw.startswith(("Expected `str`", "Expected `str | null`")):
        return "value must be a string"
    if raw.startswith("Expected `bool`"):
        return "value must be a boolean"
    if raw.startswith("Expected `object`"):
        return "value must be an object"
    if raw.startswith("Expected `int`"):
        return "value must be a number"
    return raw.split(" - at ", 1)[0]


def validation_message(root: type[WireIn], error: msgspec.ValidationError) -> str:
    raw = str(error)
    message, _, at = raw.partition(" - at `")
    path = [m.group(1) or m.group(2) for m in _PATH.finditer(at.rstrip("`"))]
    missing = _MISSING_FIELD.match(message)
    if missing:
        return _chain(root, [*path, missing.group(1)], "value is required")
    return _chain(root, path, _leaf_message(root, path, raw))


def decode(body: bytes, struct: type[S]) -> S:
    """Decode a body strictly into ``struct``; an empty body is ``{}``."""
    proto = getattr(struct, "proto_name", struct.__name__)
    if not body.strip():
        raw: Any = {}
    else:
        try:
            raw = _json_decoder.decode(body)
        except msgspec.DecodeError as exc:
            reason = str(exc)
            if not reason.startswith("JSON is malformed"):
                reason = f"JSON is malformed: {reason}"
            raise RequestInvalid(f"invalid {proto}: {reason}") from None
    if not isinstance(raw, dict):
        raise RequestInvalid(f"invalid {proto}: the body must be a JSON object")
    normalized = _normalize_keys(raw)
    try:
        decoded = msgspec.convert(normalized, struct, strict=True)
    except msgspec.ValidationError as exc:
        raise RequestInvalid(validation_message(struct, exc)) from None  # type: ignore[arg-type]
    bad = _unstorable_string_path(normalized, [])
    if bad is not None:
        raise RequestInvalid(_chain(struct, bad, UNSTORABLE_MESSAGE))  # type: ignore[arg-type]
    return decoded


UNSTORABLE_MESSAGE = "value must be valid UTF-8 without NUL characters"


def is_storable(text: str) -> bool:
    """Postgres text holds no NUL, and a lone UTF-16 surrogate (JSON allows one) is no UTF-8."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unstorable_string_path(value: Any, path: list[str]) -> list[str] | None:
    if isinstance(value, str):
        return None if is_storable(value) else path
    if isinstance(value, dict):
        for key, item in value.items():
            found = _unstorable_string_path(item, [*path, key])
            if found is not None:
                return found
    elif isinstance(value, list):
        for item in value:
            found = _unstorable_string_path(item, path)
            if found is not None:
                return found
    return None


def check_path_id(proto: str, field: str, value: str) -> None:
    if not 1 <= len(value) <= 200:
        raise RequestInvalid(f"invalid {proto}.{field}: {length_message(1, 200)}")
    if not is_storable(value):
        raise RequestInvalid(f"invalid {proto}.{field}: {UNSTORABLE_MESSAGE}")


def refuse_two_of_oneof(proto: str, oneof: str, names: list[str], values: list[Any]) -> None:
    if sum(v is not None for v in values) > 1:
        raise RequestInvalid(f"invalid {proto}.{oneof}: only one of {', '.join(names)} may be set")


# --- read models --------------------------------------------------------------------------


class ProfileOut(WireOut, kw_only=True):
    given_name: str = ""
    family_name: str = ""
    display_name: str = ""


class EmailOut(WireOut, kw_only=True):
    email: str = ""
    is_verified: bool = False


class HumanOut(WireOut, kw_only=True):
    profile: ProfileOut
    email: EmailOut
    password_change_required: bool = False
    password_changed: str | None = None


class MachineOut(WireOut, kw_only=True):
    name: str = ""


class UserOut(WireOut, kw_only=True):
    user_id: str
    state: str
    username: str
    login_names: list[str]
    preferred_login_name: str
    human: HumanOut | None = None
    machine: MachineOut | None = None


class GetUserResponse(WireOut, kw_only=True):
    details: DetailsOut
    user: UserOut


def user_response(user: Any) -> GetUserResponse:
    from api.users import WIRE_STATES

    human = machine = None
    if user.kind == "human":
        human = HumanOut(
            profile=ProfileOut(
                given_name=user.given_name,
                family_name=user.family_name,
                display_name=user.display_name,
            ),
            email=EmailOut(email=user.email, is_verified=user.email_verified),
            password_change_required=user.password_change_required,
            password_changed=timestamp(user.password_changed_at)
            if user.password_changed_at
            else None,
        )
    else:
        machine = MachineOut(name=user.username)
    return GetUserResponse(
        details=details_out(Details(user.sequence, user.updated_at, user.org_id)),
        user=UserOut(
            user_id=user.id,
            state=WIRE_STATES[user.state],
            username=user.username,
            login_names=[user.preferred_login_name],
            preferred_login_name=user.preferred_login_name,
            human=human,
            machine=machine,
        ),
    )


class SessionUserOut(WireOut, kw_only=True):
    verified_at: str
    id: str
    login_name: str
    display_name: str = ""
    organization_id: str


class SessionPasswordOut(WireOut, kw_only=True):
    verified_at: str


class FactorsOut(WireOut, kw_only=True):
    user: SessionUserOut
    password: SessionPasswordOut


class SessionOut(WireOut, kw_only=True):
    id: str
    creation_date: str
    change_date: str
    sequence: str
    factors: FactorsOut


class GetSessionResponse(WireOut, kw_only=True):
    session: SessionOut


def session_response(session: Any) -> GetSessionResponse:
    created = timestamp(session.created_at)
    return GetSessionResponse(
        session=SessionOut(
            id=session.id,
            creation_date=created,
            change_date=timestamp(session.changed_at),
            sequence=str(session.sequence),
            factors=FactorsOut(
                user=SessionUserOut(
                    verified_at=created,
                    id=session.user_id,
                    login_name=f"{session.username}@{session.org_domain}",
                    display_name=session.display_name,
                    organization_id=session.org_id,
                ),
                password=SessionPasswordOut(verified_at=created),
            ),
        )
    )
