"""Our ``proto/`` files are wire-identical to ZITADEL's v2 API, field by field.

The ``.proto`` files under ``proto/`` are our own, written to match ZITADEL's package, message,
field, enum and method names and numbers, so that ZITADEL clients talk to us unchanged. The
tables below are the golden copy of those names and numbers (checked against ZITADEL's
protos once, by hand): this test compiles our files with ``grpc_tools.protoc`` into a
``FileDescriptorSet`` and requires every message, field, oneof, enum value and RPC to be
exactly as listed, with nothing missing and nothing extra. A field we add later must come
with its row here, taken from ZITADEL's numbering, never picked freely.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import pytest
from google.protobuf.descriptor_pb2 import FieldDescriptorProto, FileDescriptorSet
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "proto"

FILES = {
    "zitadel/message.proto": "zitadel.v1",
    "zitadel/object/v2/object.proto": "zitadel.object.v2",
    "zitadel/session/v2/session_service.proto": "zitadel.session.v2",
    "zitadel/user/v2/email.proto": "zitadel.user.v2",
    "zitadel/user/v2/password.proto": "zitadel.user.v2",
    "zitadel/user/v2/user.proto": "zitadel.user.v2",
    "zitadel/user/v2/user_service.proto": "zitadel.user.v2",
}

# Every message of our files, including those without fields.
MESSAGES = {
    "zitadel.v1.ErrorDetail",
    "zitadel.object.v2.Details",
    "zitadel.object.v2.Organization",
    "zitadel.user.v2.Password",
    "zitadel.user.v2.HashedPassword",
    "zitadel.user.v2.SendPasswordResetLink",
    "zitadel.user.v2.ReturnPasswordResetCode",
    "zitadel.user.v2.SetHumanEmail",
    "zitadel.user.v2.HumanEmail",
    "zitadel.user.v2.SendEmailVerificationCode",
    "zitadel.user.v2.ReturnEmailVerificationCode",
    "zitadel.user.v2.SetHumanProfile",
    "zitadel.user.v2.HumanProfile",
    "zitadel.user.v2.HumanUser",
    "zitadel.user.v2.User",
    "zitadel.user.v2.MachineUser",
    "zitadel.user.v2.AddHumanUserRequest",
    "zitadel.user.v2.AddHumanUserResponse",
    "zitadel.user.v2.GetUserByIDRequest",
    "zitadel.user.v2.GetUserByIDResponse",
    "zitadel.user.v2.DeactivateUserRequest",
    "zitadel.user.v2.DeactivateUserResponse",
    "zitadel.user.v2.ReactivateUserRequest",
    "zitadel.user.v2.ReactivateUserResponse",
    "zitadel.user.v2.LockUserRequest",
    "zitadel.user.v2.LockUserResponse",
    "zitadel.user.v2.UnlockUserRequest",
    "zitadel.user.v2.UnlockUserResponse",
    "zitadel.user.v2.DeleteUserRequest",
    "zitadel.user.v2.DeleteUserResponse",
    "zitadel.user.v2.PasswordResetRequest",
    "zitadel.user.v2.PasswordResetResponse",
    "zitadel.user.v2.SetPasswordRequest",
    "zitadel.user.v2.SetPasswordResponse",
    "zitadel.session.v2.CreateSessionRequest",
    "zitadel.session.v2.CreateSessionResponse",
    "zitadel.session.v2.DeleteSessionRequest",
    "zitadel.session.v2.DeleteSessionResponse",
    "zitadel.session.v2.Checks",
    "zitadel.session.v2.CheckUser",
    "zitadel.session.v2.CheckPassword",
}

TS = "google.protobuf.Timestamp"
DETAILS = "zitadel.object.v2.Details"

# (message, field, number, type, label, oneof). The type is a scalar's proto name or a full
# message/enum name; the label is "optional" (proto3 optional), "repeated" or "" (singular);
# the oneof is the name of the real oneof holding the field, or None.
FIELDS = [
    ("zitadel.v1.ErrorDetail", "id", 1, "string", "", None),
    ("zitadel.v1.ErrorDetail", "message", 2, "string", "", None),
    (DETAILS, "sequence", 1, "uint64", "", None),
    (DETAILS, "change_date", 2, TS, "", None),
    (DETAILS, "resource_owner", 3, "string", "", None),
    (DETAILS, "creation_date", 4, TS, "", None),
    ("zitadel.object.v2.Organization", "org_id", 1, "string", "", "org"),
    ("zitadel.object.v2.Organization", "org_domain", 2, "string", "", "org"),
    ("zitadel.user.v2.Password", "password", 1, "string", "", None),
    ("zitadel.user.v2.Password", "change_required", 2, "bool", "", None),
    ("zitadel.user.v2.HashedPassword", "hash", 1, "string", "", None),
    ("zitadel.user.v2.HashedPassword", "change_required", 2, "bool", "", None),
    (
        "zitadel.user.v2.SendPasswordResetLink",
        "notification_type",
        1,
        "zitadel.user.v2.NotificationType",
        "",
        None,
    ),
    ("zitadel.user.v2.SendPasswordResetLink", "url_template", 2, "string", "optional", None),
    ("zitadel.user.v2.SetHumanEmail", "email", 1, "string", "", None),
    (
        "zitadel.user.v2.SetHumanEmail",
        "send_code",
        2,
        "zitadel.user.v2.SendEmailVerificationCode",
        "",
        "verification",
    ),
    (
        "zitadel.user.v2.SetHumanEmail",
        "return_code",
        3,
        "zitadel.user.v2.ReturnEmailVerificationCode",
        "",
        "verification",
    ),
    ("zitadel.user.v2.SetHumanEmail", "is_verified", 4, "bool", "", "verification"),
    ("zitadel.user.v2.HumanEmail", "email", 1, "string", "", None),
    ("zitadel.user.v2.HumanEmail", "is_verified", 2, "bool", "", None),
    ("zitadel.user.v2.SendEmailVerificationCode", "url_template", 1, "string", "optional", None),
    ("zitadel.user.v2.SetHumanProfile", "given_name", 1, "string", "", None),
    ("zitadel.user.v2.SetHumanProfile", "family_name", 2, "string", "", None),
    ("zitadel.user.v2.SetHumanProfile", "nick_name", 3, "string", "optional", None),
    ("zitadel.user.v2.SetHumanProfile", "display_name", 4, "string", "optional", None),
    ("zitadel.user.v2.HumanProfile", "given_name", 1, "string", "", None),
    ("zitadel.user.v2.HumanProfile", "family_name", 2, "string", "", None),
    ("zitadel.user.v2.HumanProfile", "display_name", 4, "string", "optional", None),
    ("zitadel.user.v2.HumanUser", "user_id", 1, "string", "", None),
    ("zitadel.user.v2.HumanUser", "state", 2, "zitadel.user.v2.UserState", "", None),
    ("zitadel.user.v2.HumanUser", "username", 3, "string", "", None),
    ("zitadel.user.v2.HumanUser", "login_names", 4, "string", "repeated", None),
    ("zitadel.user.v2.HumanUser", "preferred_login_name", 5, "string", "", None),
    ("zitadel.user.v2.HumanUser", "profile", 6, "zitadel.user.v2.HumanProfile", "", None),
    ("zitadel.user.v2.HumanUser", "email", 7, "zitadel.user.v2.HumanEmail", "", None),
    ("zitadel.user.v2.HumanUser", "password_change_required", 9, "bool", "", None),
    ("zitadel.user.v2.HumanUser", "password_changed", 10, TS, "", None),
    ("zitadel.user.v2.User", "user_id", 1, "string", "", None),
    ("zitadel.user.v2.User", "details", 8, DETAILS, "", None),
    ("zitadel.user.v2.User", "state", 2, "zitadel.user.v2.UserState", "", None),
    ("zitadel.user.v2.User", "username", 3, "string", "", None),
    ("zitadel.user.v2.User", "login_names", 4, "string", "repeated", None),
    ("zitadel.user.v2.User", "preferred_login_name", 5, "string", "", None),
    ("zitadel.user.v2.User", "human", 6, "zitadel.user.v2.HumanUser", "", "type"),
    ("zitadel.user.v2.User", "machine", 7, "zitadel.user.v2.MachineUser", "", "type"),
    ("zitadel.user.v2.MachineUser", "name", 1, "string", "", None),
    ("zitadel.user.v2.MachineUser", "description", 2, "string", "", None),
    ("zitadel.user.v2.AddHumanUserRequest", "user_id", 1, "string", "optional", None),
    ("zitadel.user.v2.AddHumanUserRequest", "username", 2, "string", "optional", None),
    (
        "zitadel.user.v2.AddHumanUserRequest",
        "organization",
        11,
        "zitadel.object.v2.Organization",
        "",
        None,
    ),
    (
        "zitadel.user.v2.AddHumanUserRequest",
        "profile",
        4,
        "zitadel.user.v2.SetHumanProfile",
        "",
        None,
    ),
    ("zitadel.user.v2.AddHumanUserRequest", "email", 5, "zitadel.user.v2.SetHumanEmail", "", None),
    (
        "zitadel.user.v2.AddHumanUserRequest",
        "password",
        7,
        "zitadel.user.v2.Password",
        "",
        "password_type",
    ),
    (
        "zitadel.user.v2.AddHumanUserRequest",
        "hashed_password",
        8,
        "zitadel.user.v2.HashedPassword",
        "",
        "password_type",
    ),
    ("zitadel.user.v2.AddHumanUserResponse", "user_id", 1, "string", "", None),
    ("zitadel.user.v2.AddHumanUserResponse", "details", 2, DETAILS, "", None),
    ("zitadel.user.v2.AddHumanUserResponse", "email_code", 3, "string", "optional", None),
    ("zitadel.user.v2.GetUserByIDRequest", "user_id", 1, "string", "", None),
    ("zitadel.user.v2.GetUserByIDResponse", "details", 1, DETAILS, "", None),
    ("zitadel.user.v2.GetUserByIDResponse", "user", 2, "zitadel.user.v2.User", "", None),
    ("zitadel.user.v2.DeactivateUserRequest", "user_id", 1, "string", "", None),
    ("zitadel.user.v2.DeactivateUserResponse", "details", 1, DETAILS, "", None),
    ("zitadel.user.v2.ReactivateUserRequest", "user_id", 1, "string", "", None),
    ("zitadel.user.v2.ReactivateUserResponse", "details", 1, DETAILS, "", None),
    ("zitadel.user.v2.LockUserRequest", "user_id", 1, "string", "", None),
    ("zitadel.user.v2.LockUserResponse", "details", 1, DETAILS, "", None),
    ("zitadel.user.v2.UnlockUserRequest", "user_id", 1, "string", "", None),
    ("zitadel.user.v2.UnlockUserResponse", "details", 1, DETAILS, "", None),
    ("zitadel.user.v2.DeleteUserRequest", "user_id", 1, "string", "", None),
    ("zitadel.user.v2.DeleteUserResponse", "details", 1, DETAILS, "", None),
    ("zitadel.user.v2.PasswordResetRequest", "user_id", 1, "string", "", None),
    (
        "zitadel.user.v2.PasswordResetRequest",
        "send_link",
        2,
        "zitadel.user.v2.SendPasswordResetLink",
        "",
        "medium",
    ),
    (
        "zitadel.user.v2.PasswordResetRequest",
        "return_code",
        3,
        "zitadel.user.v2.ReturnPasswordResetCode",
        "",
        "medium",
    ),
    ("zitadel.user.v2.PasswordResetResponse", "details", 1, DETAILS, "", None),
    ("zitadel.user.v2.PasswordResetResponse", "verification_code", 2, "string", "optional", None),
    ("zitadel.user.v2.SetPasswordRequest", "user_id", 1, "string", "", None),
    ("zitadel.user.v2.SetPasswordRequest", "new_password", 2, "zitadel.user.v2.Password", "", None),
    (
        "zitadel.user.v2.SetPasswordRequest",
        "current_password",
        3,
        "string",
        "",
        "verification",
    ),
    (
        "zitadel.user.v2.SetPasswordRequest",
        "verification_code",
        4,
        "string",
        "",
        "verification",
    ),
    ("zitadel.user.v2.SetPasswordResponse", "details", 1, DETAILS, "", None),
    (
        "zitadel.session.v2.CreateSessionRequest",
        "checks",
        1,
        "zitadel.session.v2.Checks",
        "",
        None,
    ),
    ("zitadel.session.v2.CreateSessionResponse", "details", 1, DETAILS, "", None),
    ("zitadel.session.v2.CreateSessionResponse", "session_id", 2, "string", "", None),
    ("zitadel.session.v2.CreateSessionResponse", "session_token", 3, "string", "", None),
    ("zitadel.session.v2.DeleteSessionRequest", "session_id", 1, "string", "", None),
    ("zitadel.session.v2.DeleteSessionRequest", "session_token", 2, "string", "optional", None),
    ("zitadel.session.v2.DeleteSessionResponse", "details", 1, DETAILS, "", None),
    ("zitadel.session.v2.Checks", "user", 1, "zitadel.session.v2.CheckUser", "optional", None),
    (
        "zitadel.session.v2.Checks",
        "password",
        2,
        "zitadel.session.v2.CheckPassword",
        "optional",
        None,
    ),
    ("zitadel.session.v2.CheckUser", "user_id", 1, "string", "", "search"),
    ("zitadel.session.v2.CheckUser", "login_name", 2, "string", "", "search"),
    ("zitadel.session.v2.CheckPassword", "password", 1, "string", "", None),
]

# (enum, value, number)
ENUM_VALUES = [
    ("zitadel.user.v2.NotificationType", "NOTIFICATION_TYPE_Unspecified", 0),
    ("zitadel.user.v2.NotificationType", "NOTIFICATION_TYPE_Email", 1),
    ("zitadel.user.v2.NotificationType", "NOTIFICATION_TYPE_SMS", 2),
    ("zitadel.user.v2.UserState", "USER_STATE_UNSPECIFIED", 0),
    ("zitadel.user.v2.UserState", "USER_STATE_ACTIVE", 1),
    ("zitadel.user.v2.UserState", "USER_STATE_INACTIVE", 2),
    ("zitadel.user.v2.UserState", "USER_STATE_DELETED", 3),
    ("zitadel.user.v2.UserState", "USER_STATE_LOCKED", 4),
    ("zitadel.user.v2.UserState", "USER_STATE_INITIAL", 5),
]

# (service, method, input, output); the gRPC path is /<service>/<method>.
_U = "zitadel.user.v2."
_S = "zitadel.session.v2."
METHODS = [
    (_U + "UserService", "AddHumanUser", _U + "AddHumanUserRequest", _U + "AddHumanUserResponse"),
    (_U + "UserService", "GetUserByID", _U + "GetUserByIDRequest", _U + "GetUserByIDResponse"),
    (
        _U + "UserService",
        "DeactivateUser",
        _U + "DeactivateUserRequest",
        _U + "DeactivateUserResponse",
    ),
    (
        _U + "UserService",
        "ReactivateUser",
        _U + "ReactivateUserRequest",
        _U + "ReactivateUserResponse",
    ),
    (_U + "UserService", "LockUser", _U + "LockUserRequest", _U + "LockUserResponse"),
    (_U + "UserService", "UnlockUser", _U + "UnlockUserRequest", _U + "UnlockUserResponse"),
    (_U + "UserService", "DeleteUser", _U + "DeleteUserRequest", _U + "DeleteUserResponse"),
    (
        _U + "UserService",
        "PasswordReset",
        _U + "PasswordResetRequest",
        _U + "PasswordResetResponse",
    ),
    (_U + "UserService", "SetPassword", _U + "SetPasswordRequest", _U + "SetPasswordResponse"),
    (
        _S + "SessionService",
        "CreateSession",
        _S + "CreateSessionRequest",
        _S + "CreateSessionResponse",
    ),
    (
        _S + "SessionService",
        "DeleteSession",
        _S + "DeleteSessionRequest",
        _S + "DeleteSessionResponse",
    ),
]

# (message, reserved number): numbers ZITADEL retired; they must never be given a new field.
RESERVED = [
    ("zitadel.user.v2.AddHumanUserRequest", 3),
    ("zitadel.user.v2.GetUserByIDRequest", 2),
]

_SCALARS = {
    FieldDescriptorProto.TYPE_STRING: "string",
    FieldDescriptorProto.TYPE_BOOL: "bool",
    FieldDescriptorProto.TYPE_UINT64: "uint64",
    FieldDescriptorProto.TYPE_UINT32: "uint32",
    FieldDescriptorProto.TYPE_INT64: "int64",
    FieldDescriptorProto.TYPE_INT32: "int32",
    FieldDescriptorProto.TYPE_BYTES: "bytes",
}


@pytest.fixture(scope="module")
def descriptors(tmp_path_factory: pytest.TempPathFactory) -> FileDescriptorSet:
    """Our proto files, compiled (with their imports) into one descriptor set."""
    out = tmp_path_factory.mktemp("proto") / "set.binpb"
    well_known = files("grpc_tools") / "_proto"
    sources = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in PROTO_ROOT.rglob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--descriptor_set_out={out}",
        "--include_imports",
        *sources,
    ]
    assert protoc.main(args) == 0, "protoc failed on proto/ (see the output above)"
    fds = FileDescriptorSet()
    fds.ParseFromString(out.read_bytes())
    return fds


def _ours(fds: FileDescriptorSet) -> list:
    return [f for f in fds.file if not f.name.startswith("google/")]


def _type(field: FieldDescriptorProto) -> str:
    if field.type in (FieldDescriptorProto.TYPE_MESSAGE, FieldDescriptorProto.TYPE_ENUM):
        return field.type_name.lstrip(".")
    return _SCALARS[field.type]


def _label(field: FieldDescriptorProto) -> str:
    if field.label == FieldDescriptorProto.LABEL_REPEATED:
        return "repeated"
    return "optional" if field.proto3_optional else ""


def test_files_and_packages(descriptors: FileDescriptorSet) -> None:
    ours = _ours(descriptors)
    assert {f.name: f.package for f in ours} == FILES
    assert all(f.syntax == "proto3" for f in ours)
    imported = {dep for f in ours for dep in f.dependency if dep.startswith("google/")}
    assert imported == {"google/protobuf/timestamp.proto"}


def test_every_message_is_listed(descriptors: FileDescriptorSet) -> None:
    found = {f"{f.package}.{m.name}" for f in _ours(descriptors) for m in f.message_type}
    assert found == MESSAGES


def test_fields_match_zitadel(descriptors: FileDescriptorSet) -> None:
    rows = []
    for f in _ours(descriptors):
        for m in f.message_type:
            assert not m.nested_type, f"{m.name}: nested messages are not expected"
            for field in m.field:
                oneof = None
                if field.HasField("oneof_index") and not field.proto3_optional:
                    oneof = m.oneof_decl[field.oneof_index].name
                rows.append(
                    (
                        f"{f.package}.{m.name}",
                        field.name,
                        field.number,
                        _type(field),
                        _label(field),
                        oneof,
                    )
                )
    assert len(FIELDS) == len(set(FIELDS)), "duplicate row in FIELDS"
    missing = sorted(set(FIELDS) - set(rows), key=str)
    extra = sorted(set(rows) - set(FIELDS), key=str)
    assert (missing, extra) == ([], [])


def test_retired_numbers_stay_reserved(descriptors: FileDescriptorSet) -> None:
    rows = [
        (f"{f.package}.{m.name}", n)
        for f in _ours(descriptors)
        for m in f.message_type
        for r in m.reserved_range
        for n in range(r.start, r.end)
    ]
    assert sorted(rows) == sorted(RESERVED)


def test_enum_values_match_zitadel(descriptors: FileDescriptorSet) -> None:
    rows = [
        (f"{f.package}.{e.name}", v.name, v.number)
        for f in _ours(descriptors)
        for e in f.enum_type
        for v in e.value
    ]
    assert sorted(rows) == sorted(ENUM_VALUES)


def test_methods_match_zitadel(descriptors: FileDescriptorSet) -> None:
    rows = [
        (
            f"{f.package}.{s.name}",
            m.name,
            m.input_type.lstrip("."),
            m.output_type.lstrip("."),
        )
        for f in _ours(descriptors)
        for s in f.service
        for m in s.method
    ]
    assert sorted(rows) == sorted(METHODS)
    assert not any(
        m.client_streaming or m.server_streaming
        for f in _ours(descriptors)
        for s in f.service
        for m in s.method
    )
