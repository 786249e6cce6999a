"""The contract's messages as typed structs, and their strict decoding: every transport
(REST bodies, the RPC layer's protobuf messages) validates requests here, so a bad request
gets the same answer however it arrives.

Inputs accept lowerCamelCase and snake_case and ignore unknown fields; types are strict (a
number where a string belongs is a 400). Failures are reported in protoc-gen-validate's
words, as ZITADEL does: ``invalid SetPasswordRequest.NewPassword: embedded message failed
validation | caused by: invalid Password.Password: value length must be between 1 and 200
runes, inclusive``.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, TypeVar, cast

import msgspec
import msgspec.inspect as mi
from msgspec import Meta, Struct

from api.domain.users import WIRE_STATES, NewHuman
from api.errors import NotificationTypeUnsupported, RequestInvalid
from api.repositories.events import Details
from api.repositories.sessions import Session
from api.repositories.users import User

S = TypeVar("S", bound="WireIn")

Text200 = Annotated[str, Meta(min_length=1, max_length=200)]
Text20 = Annotated[str, Meta(min_length=1, max_length=20)]


class WireIn(Struct, rename="camel", kw_only=True):
    """A request message: ``proto_name`` names it in validation messages; ``check`` holds
    the rules that span fields (a oneof set twice, a member required in practice)."""

    proto_name: ClassVar[str] = ""

    def check(self) -> None:
        return None


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

    def check(self) -> None:
        refuse_two_of_oneof(
            "SetPasswordRequest",
            "Verification",
            ["currentPassword", "verificationCode"],
            [self.current_password, self.verification_code],
        )


# --- reset ----------------------------------------------------------------------------------

EMAIL_NOTIFICATIONS = ("NOTIFICATION_TYPE_Unspecified", "NOTIFICATION_TYPE_Email", 0, 1)
SMS_NOTIFICATIONS = ("NOTIFICATION_TYPE_SMS", 2)
NotificationType = Annotated[
    str | int,
    Meta(
        description="NOTIFICATION_TYPE_Email (or Unspecified); SMS is refused",
        extra={"enum": EMAIL_NOTIFICATIONS + SMS_NOTIFICATIONS},
    ),
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

    def check(self) -> None:
        refuse_two_of_oneof(
            "PasswordResetRequest",
            "Medium",
            ["sendLink", "returnCode"],
            [self.send_link, self.return_code],
        )
        if self.send_link is not None and self.send_link.notification_type in SMS_NOTIFICATIONS:
            raise NotificationTypeUnsupported()


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

    def check(self) -> None:
        refuse_two_of_oneof(
            "AddHumanUserRequest",
            "PasswordType",
            ["password", "hashedPassword"],
            [self.password, self.hashed_password],
        )


def new_human(data: AddHumanUserRequest, *, default_org_id: str) -> NewHuman:
    """The domain's ``NewHuman`` of a request (the caller's organization unless named)."""
    profile, password, hashed = data.profile, data.password, data.hashed_password
    return NewHuman(
        org_id=(data.organization.org_id if data.organization else None) or default_org_id,
        user_id=data.user_id,
        username=data.username,
        given_name=profile.given_name,
        family_name=profile.family_name,
        display_name=profile.display_name or f"{profile.given_name} {profile.family_name}",
        email=data.email.email,
        email_verified=data.email.is_verified,
        password=password.password if password else None,
        hashed_password=hashed.hash if hashed else None,
        change_required=(password.change_required if password else False)
        or (hashed.change_required if hashed else False),
    )


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

    def check(self) -> None:
        checks, user = self.checks, self.checks.user if self.checks else None
        to_checks = [(CreateSessionRequest, "checks")]
        if checks is None or user is None:
            raise invalid([*to_checks, (ChecksIn, "user")], "value is required")
        refuse_two_of_oneof(
            "CheckUser", "Search", ["userId", "loginName"], [user.user_id, user.login_name]
        )
        if user.user_id is None and user.login_name is None:
            raise invalid(
                [*to_checks, (ChecksIn, "user"), (CheckUserIn, "search")], "value is required"
            )
        if checks.password is None:
            raise invalid([*to_checks, (ChecksIn, "password")], "value is required")


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
#
# A body is decoded in three steps: JSON to Python values (msgspec), keys to camelCase, then
# a walk over the request struct's type information (``msgspec.inspect``) that finds the
# first problem and names it in protoc-gen-validate's words: the field path and the kind of
# failure come from the walk itself, never from another library's error text. Only then does
# ``msgspec.convert`` build the struct, which can no longer fail.

_json_decoder = msgspec.json.Decoder()
_SNAKE = re.compile(r"_([a-z0-9])")
# Our structs nest four deep; a body nested deeper than this is refused before it is walked.
MAX_DEPTH = 64
ENUM_MESSAGE = "value must be one of the defined enum values"
UNSTORABLE_MESSAGE = "value must be valid UTF-8 without NUL characters"
TOO_DEEP_MESSAGE = "the body is nested too deeply"


class _Failure(Exception):
    """The first problem found: the fields leading to it and what is wrong there (a field
    name of ``""`` is the message itself, e.g. for a value in a field it does not have)."""

    def __init__(self, path: list[tuple[type[WireIn], str]], leaf: str) -> None:
        super().__init__(leaf)
        self.path = path
        self.leaf = leaf

    def message(self, root: type[WireIn]) -> str:
        """``invalid A.B: embedded message failed validation | caused by: invalid C.D: leaf``."""
        if not self.path:
            return f"invalid {root.proto_name}: {self.leaf}"
        parts = [
            f"invalid {struct.proto_name}.{_go_name(field)}: embedded message failed validation"
            for struct, field in self.path[:-1]
        ]
        struct, field = self.path[-1]
        name = f"{struct.proto_name}.{_go_name(field)}" if field else struct.proto_name
        parts.append(f"invalid {name}: {self.leaf}")
        return " | caused by: ".join(parts)


def invalid(path: list[tuple[type[WireIn], str]], leaf: str) -> RequestInvalid:
    """The 400 for ``leaf`` at the end of ``path`` (struct, field name) from the root."""
    return RequestInvalid(_Failure(path, leaf).message(path[0][0]))


def _go_name(python_name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in python_name.split("_"))


def _camel(key: str) -> str:
    return _SNAKE.sub(lambda m: m.group(1).upper(), key) if "_" in key else key


def _normalize_keys(value: Any, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise _Failure([], TOO_DEEP_MESSAGE)
    if isinstance(value, dict):
        return {_camel(k): _normalize_keys(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalize_keys(v, depth + 1) for v in value]
    return value


def length_message(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"value length must be between {low} and {high} runes, inclusive"
    if high is not None:
        return f"value length must be at most {high} runes"
    return f"value length must be at least {low} runes"


def _leaf_problem(info: mi.Type, value: Any) -> str | None:
    """What is wrong with ``value`` for a field of type ``info`` (not a nested struct)."""
    if isinstance(info, mi.Metadata):
        allowed = (info.extra or {}).get("enum")
        if allowed is not None:
            ok = type(value) in (str, int) and value in allowed
            return None if ok else ENUM_MESSAGE
        return _leaf_problem(info.type, value)
    if isinstance(info, mi.StrType):
        if not isinstance(value, str):
            return "value must be a string"
        if (info.min_length is not None and len(value) < info.min_length) or (
            info.max_length is not None and len(value) > info.max_length
        ):
            return length_message(info.min_length, info.max_length)
        return None
    if isinstance(info, mi.BoolType):
        return None if isinstance(value, bool) else "value must be a boolean"
    if isinstance(info, mi.IntType):
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "value must be a number"
    raise TypeError(f"the wire decoder does not know {info!r}")  # a struct field we never use


def _check_struct(info: mi.StructType, value: dict[str, Any], path: list[Any]) -> None:
    """Fields in the order the body has them (as msgspec reports), then missing ones."""
    struct = cast(type[WireIn], info.cls)
    fields = {f.encode_name: f for f in info.fields}
    for key, item in value.items():
        field = fields.get(key)
        if field is not None:
            _check_field(field.type, item, [*path, (struct, field.name)])
    for field in info.fields:
        if field.required and field.encode_name not in value:
            raise _Failure([*path, (struct, field.name)], "value is required")


def _check_field(info: mi.Type, value: Any, path: list[Any]) -> None:
    if isinstance(info, mi.UnionType):  # ``X | None``: null is "not set"
        if value is None and any(isinstance(t, mi.NoneType) for t in info.types):
            return
        (info,) = [t for t in info.types if not isinstance(t, mi.NoneType)]
    if isinstance(info, mi.StructType):
        if not isinstance(value, dict):
            raise _Failure(path, "value must be an object")
        _check_struct(info, value, path)
        return
    problem = _leaf_problem(info, value)
    if problem is not None:
        raise _Failure(path, problem)


@functools.cache
def _type_info(struct: type[WireIn]) -> mi.StructType:
    info = mi.type_info(struct)
    assert isinstance(info, mi.StructType)
    return info


def decode(body: bytes, struct: type[S]) -> S:
    """Decode a body strictly into ``struct``; an empty body is ``{}``."""
    proto: str = getattr(struct, "proto_name", struct.__name__)
    if not body.strip():
        raw: Any = {}
    else:
        try:
            raw = _json_decoder.decode(body)
        except RecursionError:  # msgspec's parser is recursive: a body nested thousands deep
            raise RequestInvalid(f"invalid {proto}: {TOO_DEEP_MESSAGE}") from None
        except msgspec.DecodeError as exc:
            reason = str(exc)  # where the syntax breaks; the prefix is ours
            if not reason.startswith("JSON is malformed"):
                reason = f"JSON is malformed: {reason}"
            raise RequestInvalid(f"invalid {proto}: {reason}") from None
    if not isinstance(raw, dict):
        raise RequestInvalid(f"invalid {proto}: the body must be a JSON object")
    return convert(raw, struct)


def convert(raw: dict[str, Any], struct: type[S]) -> S:
    """Validate decoded values (a JSON object, or a protobuf message as a dict) strictly
    into ``struct``, with the contract's messages; keys may be camelCase or snake_case."""
    root: type[WireIn] = struct
    try:
        normalized = _normalize_keys(raw)
        _check_struct(_type_info(root), normalized, [])
    except _Failure as failure:
        raise RequestInvalid(failure.message(root)) from None
    bad = _unstorable_string_path(normalized, [])
    if bad is not None:
        raise RequestInvalid(_unstorable_message(root, bad))
    decoded = msgspec.convert(normalized, struct, strict=True)
    decoded.check()
    return decoded


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


def _unstorable_message(root: type[WireIn], keys: list[str]) -> str:
    """Name the fields down to the bad string, as far as they are fields of the request."""
    path: list[tuple[type[WireIn], str]] = []
    info: mi.Type = _type_info(root)
    for key in keys:
        if isinstance(info, mi.UnionType):
            info = next(t for t in info.types if not isinstance(t, mi.NoneType))
        if not isinstance(info, mi.StructType):
            break
        field = next((f for f in info.fields if f.encode_name == key), None)
        if field is None:  # an unknown field: name the message that holds it
            path.append((cast(type[WireIn], info.cls), ""))
            break
        path.append((cast(type[WireIn], info.cls), field.name))
        info = field.type
    return _Failure(path, UNSTORABLE_MESSAGE).message(root)


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


def user_response(user: User) -> GetUserResponse:
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


def session_response(session: Session) -> GetSessionResponse:
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
