from api.rpc.gen.zitadel.object.v2 import object_pb2 as _object_pb2
from api.rpc.gen.zitadel.user.v2 import email_pb2 as _email_pb2
from api.rpc.gen.zitadel.user.v2 import password_pb2 as _password_pb2
from api.rpc.gen.zitadel.user.v2 import user_pb2 as _user_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AddHumanUserRequest(_message.Message):
    __slots__ = ("user_id", "username", "organization", "profile", "email", "password", "hashed_password")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    HASHED_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    username: str
    organization: _object_pb2.Organization
    profile: _user_pb2.SetHumanProfile
    email: _email_pb2.SetHumanEmail
    password: _password_pb2.Password
    hashed_password: _password_pb2.HashedPassword
    def __init__(self, user_id: _Optional[str] = ..., username: _Optional[str] = ..., organization: _Optional[_Union[_object_pb2.Organization, _Mapping]] = ..., profile: _Optional[_Union[_user_pb2.SetHumanProfile, _Mapping]] = ..., email: _Optional[_Union[_email_pb2.SetHumanEmail, _Mapping]] = ..., password: _Optional[_Union[_password_pb2.Password, _Mapping]] = ..., hashed_password: _Optional[_Union[_password_pb2.HashedPassword, _Mapping]] = ...) -> None: ...

class AddHumanUserResponse(_message.Message):
    __slots__ = ("user_id", "details", "email_code")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    EMAIL_CODE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    details: _object_pb2.Details
    email_code: str
    def __init__(self, user_id: _Optional[str] = ..., details: _Optional[_Union[_object_pb2.Details, _Mapping]] = ..., email_code: _Optional[str] = ...) -> None: ...

class GetUserByIDRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class GetUserByIDResponse(_message.Message):
    __slots__ = ("details", "user")
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    details: _object_pb2.Details
    user: _user_pb2.User
    def __init__(self, details: _Optional[_Union[_object_pb2.Details, _Mapping]] = ..., user: _Optional[_Union[_user_pb2.User, _Mapping]] = ...) -> None: ...

class DeactivateUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class DeactivateUserResponse(_message.Message):
    __slots__ = ("details",)
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    details: _object_pb2.Details
    def __init__(self, details: _Optional[_Union[_object_pb2.Details, _Mapping]] = ...) -> None: ...

class ReactivateUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ReactivateUserResponse(_message.Message):
    __slots__ = ("details",)
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    details: _object_pb2.Details
    def __init__(self, details: _Optional[_Union[_object_pb2.Details, _Mapping]] = ...) -> None: ...

class LockUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class LockUserResponse(_message.Message):
    __slots__ = ("details",)
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    details: _object_pb2.Details
    def __init__(self, details: _Optional[_Union[_object_pb2.Details, _Mapping]] = ...) -> None: ...

class UnlockUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class UnlockUserResponse(_message.Message):
    __slots__ = ("details",)
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    details: _object_pb2.Details
    def __init__(self, details: _Optional[_Union[_object_pb2.Details, _Mapping]] = ...) -> None: ...

class DeleteUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class DeleteUserResponse(_message.Message):
    __slots__ = ("details",)
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    details: _object_pb2.Details
    def __init__(self, details: _Optional[_Union[_object_pb2.Details, _Mapping]] = ...) -> None: ...

class PasswordResetRequest(_message.Message):
    __slots__ = ("user_id", "send_link", "return_code")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SEND_LINK_FIELD_NUMBER: _ClassVar[int]
    RETURN_CODE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    send_link: _password_pb2.SendPasswordResetLink
    return_code: _password_pb2.ReturnPasswordResetCode
    def __init__(self, user_id: _Optional[str] = ..., send_link: _Optional[_Union[_password_pb2.SendPasswordResetLink, _Mapping]] = ..., return_code: _Optional[_Union[_password_pb2.ReturnPasswordResetCode, _Mapping]] = ...) -> None: ...

class PasswordResetResponse(_message.Message):
    __slots__ = ("details", "verification_code")
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_CODE_FIELD_NUMBER: _ClassVar[int]
    details: _object_pb2.Details
    verification_code: str
    def __init__(self, details: _Optional[_Union[_object_pb2.Details, _Mapping]] = ..., verification_code: _Optional[str] = ...) -> None: ...

class SetPasswordRequest(_message.Message):
    __slots__ = ("user_id", "new_password", "current_password", "verification_code")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    CURRENT_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_CODE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    new_password: _password_pb2.Password
    current_password: str
    verification_code: str
    def __init__(self, user_id: _Optional[str] = ..., new_password: _Optional[_Union[_password_pb2.Password, _Mapping]] = ..., current_password: _Optional[str] = ..., verification_code: _Optional[str] = ...) -> None: ...

class SetPasswordResponse(_message.Message):
    __slots__ = ("details",)
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    details: _object_pb2.Details
    def __init__(self, details: _Optional[_Union[_object_pb2.Details, _Mapping]] = ...) -> None: ...
