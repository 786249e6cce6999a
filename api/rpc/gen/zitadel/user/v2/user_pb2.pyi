import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from api.rpc.gen.zitadel.object.v2 import object_pb2 as _object_pb2
from api.rpc.gen.zitadel.user.v2 import email_pb2 as _email_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UserState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USER_STATE_UNSPECIFIED: _ClassVar[UserState]
    USER_STATE_ACTIVE: _ClassVar[UserState]
    USER_STATE_INACTIVE: _ClassVar[UserState]
    USER_STATE_DELETED: _ClassVar[UserState]
    USER_STATE_LOCKED: _ClassVar[UserState]
    USER_STATE_INITIAL: _ClassVar[UserState]
USER_STATE_UNSPECIFIED: UserState
USER_STATE_ACTIVE: UserState
USER_STATE_INACTIVE: UserState
USER_STATE_DELETED: UserState
USER_STATE_LOCKED: UserState
USER_STATE_INITIAL: UserState

class SetHumanProfile(_message.Message):
    __slots__ = ("given_name", "family_name", "nick_name", "display_name")
    GIVEN_NAME_FIELD_NUMBER: _ClassVar[int]
    FAMILY_NAME_FIELD_NUMBER: _ClassVar[int]
    NICK_NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    given_name: str
    family_name: str
    nick_name: str
    display_name: str
    def __init__(self, given_name: _Optional[str] = ..., family_name: _Optional[str] = ..., nick_name: _Optional[str] = ..., display_name: _Optional[str] = ...) -> None: ...

class HumanProfile(_message.Message):
    __slots__ = ("given_name", "family_name", "display_name")
    GIVEN_NAME_FIELD_NUMBER: _ClassVar[int]
    FAMILY_NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    given_name: str
    family_name: str
    display_name: str
    def __init__(self, given_name: _Optional[str] = ..., family_name: _Optional[str] = ..., display_name: _Optional[str] = ...) -> None: ...

class HumanUser(_message.Message):
    __slots__ = ("user_id", "state", "username", "login_names", "preferred_login_name", "profile", "email", "password_change_required", "password_changed")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    LOGIN_NAMES_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_LOGIN_NAME_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_CHANGE_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_CHANGED_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    state: UserState
    username: str
    login_names: _containers.RepeatedScalarFieldContainer[str]
    preferred_login_name: str
    profile: HumanProfile
    email: _email_pb2.HumanEmail
    password_change_required: bool
    password_changed: _timestamp_pb2.Timestamp
    def __init__(self, user_id: _Optional[str] = ..., state: _Optional[_Union[UserState, str]] = ..., username: _Optional[str] = ..., login_names: _Optional[_Iterable[str]] = ..., preferred_login_name: _Optional[str] = ..., profile: _Optional[_Union[HumanProfile, _Mapping]] = ..., email: _Optional[_Union[_email_pb2.HumanEmail, _Mapping]] = ..., password_change_required: _Optional[bool] = ..., password_changed: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class User(_message.Message):
    __slots__ = ("user_id", "details", "state", "username", "login_names", "preferred_login_name", "human", "machine")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    LOGIN_NAMES_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_LOGIN_NAME_FIELD_NUMBER: _ClassVar[int]
    HUMAN_FIELD_NUMBER: _ClassVar[int]
    MACHINE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    details: _object_pb2.Details
    state: UserState
    username: str
    login_names: _containers.RepeatedScalarFieldContainer[str]
    preferred_login_name: str
    human: HumanUser
    machine: MachineUser
    def __init__(self, user_id: _Optional[str] = ..., details: _Optional[_Union[_object_pb2.Details, _Mapping]] = ..., state: _Optional[_Union[UserState, str]] = ..., username: _Optional[str] = ..., login_names: _Optional[_Iterable[str]] = ..., preferred_login_name: _Optional[str] = ..., human: _Optional[_Union[HumanUser, _Mapping]] = ..., machine: _Optional[_Union[MachineUser, _Mapping]] = ...) -> None: ...

class MachineUser(_message.Message):
    __slots__ = ("name", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...
