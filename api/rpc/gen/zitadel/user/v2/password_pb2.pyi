from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NotificationType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NOTIFICATION_TYPE_Unspecified: _ClassVar[NotificationType]
    NOTIFICATION_TYPE_Email: _ClassVar[NotificationType]
    NOTIFICATION_TYPE_SMS: _ClassVar[NotificationType]
NOTIFICATION_TYPE_Unspecified: NotificationType
NOTIFICATION_TYPE_Email: NotificationType
NOTIFICATION_TYPE_SMS: NotificationType

class Password(_message.Message):
    __slots__ = ("password", "change_required")
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    CHANGE_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    password: str
    change_required: bool
    def __init__(self, password: _Optional[str] = ..., change_required: _Optional[bool] = ...) -> None: ...

class HashedPassword(_message.Message):
    __slots__ = ("hash", "change_required")
    HASH_FIELD_NUMBER: _ClassVar[int]
    CHANGE_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    hash: str
    change_required: bool
    def __init__(self, hash: _Optional[str] = ..., change_required: _Optional[bool] = ...) -> None: ...

class SendPasswordResetLink(_message.Message):
    __slots__ = ("notification_type", "url_template")
    NOTIFICATION_TYPE_FIELD_NUMBER: _ClassVar[int]
    URL_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    notification_type: NotificationType
    url_template: str
    def __init__(self, notification_type: _Optional[_Union[NotificationType, str]] = ..., url_template: _Optional[str] = ...) -> None: ...

class ReturnPasswordResetCode(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
