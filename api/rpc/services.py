"""ZITADEL's UserService and SessionService over Connect, gRPC-Web and gRPC: decode, call one
domain function, encode; the same domain functions, checks and errors as the REST routes.

Each method runs in the order the REST routes do: the bearer token (401), the request's ID
(``wire.check_path_id``: 400), the message (``wire.convert``, from the protobuf message as a
dict: the same 400 messages as a JSON body), then the domain. Errors leave through
``api.rpc.errors.ServiceErrors``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from connectrpc.request import RequestContext
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from api import wire
from api.domain import auth, passwords, sessions, users
from api.domain.auth import Principal
from api.domain.context import Context
from api.repositories.events import Details
from api.repositories.users import User
from api.rpc.gen.zitadel.object.v2 import object_pb2
from api.rpc.gen.zitadel.session.v2 import session_service_pb2 as session_pb
from api.rpc.gen.zitadel.user.v2 import email_pb2, user_pb2
from api.rpc.gen.zitadel.user.v2 import user_service_pb2 as user_pb

S = TypeVar("S", bound=wire.WireIn)
Contexts = Callable[[], Context]
"""The process's domain context (opened by the app's lifespan, so looked up per call)."""


def _as_struct(message: Message, struct: type[S]) -> S:
    """Validate a protobuf message as the contract's struct (unset fields are absent)."""
    return wire.convert(MessageToDict(message), struct)


def _client_ip(ctx: RequestContext[Any, Any]) -> str:
    """The peer's address without its port (``1.2.3.4:5678``, ``[::1]:5678``)."""
    address = ctx.client_address or ""
    host, _, port = address.rpartition(":")
    return (host or port).strip("[]") if port.isdigit() else address


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _details(details: Details) -> object_pb2.Details:
    return object_pb2.Details(
        sequence=details.sequence,
        change_date=_timestamp(details.change_date),
        resource_owner=details.resource_owner,
    )


_USER_STATES = {
    "active": user_pb2.USER_STATE_ACTIVE,
    "inactive": user_pb2.USER_STATE_INACTIVE,
    "locked": user_pb2.USER_STATE_LOCKED,
}


def _user(user: User) -> user_pb2.User:
    message = user_pb2.User(
        user_id=user.id,
        details=_details(Details(user.sequence, user.updated_at, user.org_id)),
        state=_USER_STATES[user.state],
        username=user.username,
        login_names=[user.preferred_login_name],
        preferred_login_name=user.preferred_login_name,
    )
    if user.kind == "human":
        message.human.profile.CopyFrom(
            user_pb2.HumanProfile(
                given_name=user.given_name,
                family_name=user.family_name,
                display_name=user.display_name,
            )
        )
        message.human.email.CopyFrom(
            email_pb2.HumanEmail(email=user.email, is_verified=user.email_verified)
        )
        message.human.password_change_required = user.password_change_required
        if user.password_changed_at is not None:
            message.human.password_changed.CopyFrom(_timestamp(user.password_changed_at))
    else:
        message.machine.name = user.username
    return message


class _Service:
    def __init__(self, contexts: Contexts) -> None:
        self._contexts = contexts

    async def _caller(self, ctx: RequestContext[Any, Any]) -> tuple[Context, Principal]:
        domain = self._contexts()
        principal = await auth.authenticate(
            ctx=domain, authorization=ctx.request_headers.get("authorization")
        )
        return domain, principal


def _state_change(action: str, request: type[Message], response: type[Message]) -> Any:
    """``LockUser`` and its kind: the user's ID in, ``Details`` out, one ``users.change_state``."""
    proto = request.DESCRIPTOR.name

    async def method(self: UserService, message: Any, ctx: RequestContext[Any, Any]) -> Any:
        return response(details=await self._change_state(action, proto, message.user_id, ctx))

    return method


class UserService(_Service):
    """``zitadel.user.v2.UserService``."""

    async def set_password(
        self, request: user_pb.SetPasswordRequest, ctx: RequestContext[Any, Any]
    ) -> user_pb.SetPasswordResponse:
        domain, principal = await self._caller(ctx)
        wire.check_path_id("SetPasswordRequest", "UserId", request.user_id)
        data = _as_struct(request, wire.SetPasswordRequest)
        details = await passwords.change_password(
            ctx=domain,
            principal=principal,
            user_id=request.user_id,
            new_password=data.new_password.password,
            change_required=data.new_password.change_required,
            current_password=data.current_password,
            verification_code=data.verification_code,
            client_ip=_client_ip(ctx),
        )
        return user_pb.SetPasswordResponse(details=_details(details))

    async def password_reset(
        self, request: user_pb.PasswordResetRequest, ctx: RequestContext[Any, Any]
    ) -> user_pb.PasswordResetResponse:
        domain, principal = await self._caller(ctx)
        wire.check_path_id("PasswordResetRequest", "UserId", request.user_id)
        data = _as_struct(request, wire.PasswordResetRequest)
        details, code = await passwords.request_password_reset(
            ctx=domain,
            principal=principal,
            user_id=request.user_id,
            return_code=data.return_code is not None,
            url_template=data.send_link.url_template if data.send_link else None,
        )
        response = user_pb.PasswordResetResponse(details=_details(details))
        if code is not None:
            response.verification_code = code
        return response

    async def add_human_user(
        self, request: user_pb.AddHumanUserRequest, ctx: RequestContext[Any, Any]
    ) -> user_pb.AddHumanUserResponse:
        domain, principal = await self._caller(ctx)
        data = _as_struct(request, wire.AddHumanUserRequest)
        user_id, details = await users.create_human(
            ctx=domain,
            principal=principal,
            new=wire.new_human(data, default_org_id=principal.org_id),
        )
        return user_pb.AddHumanUserResponse(user_id=user_id, details=_details(details))

    async def get_user_by_id(
        self, request: user_pb.GetUserByIDRequest, ctx: RequestContext[Any, Any]
    ) -> user_pb.GetUserByIDResponse:
        domain, principal = await self._caller(ctx)
        wire.check_path_id("GetUserByIDRequest", "UserId", request.user_id)
        user = await users.get_user(ctx=domain, principal=principal, user_id=request.user_id)
        message = _user(user)
        return user_pb.GetUserByIDResponse(details=message.details, user=message)

    async def _change_state(
        self, action: str, proto: str, user_id: str, ctx: RequestContext[Any, Any]
    ) -> object_pb2.Details:
        domain, principal = await self._caller(ctx)
        wire.check_path_id(proto, "UserId", user_id)
        details = await users.change_state(
            ctx=domain, principal=principal, user_id=user_id, action=action
        )
        return _details(details)

    lock_user = _state_change("lock", user_pb.LockUserRequest, user_pb.LockUserResponse)
    unlock_user = _state_change("unlock", user_pb.UnlockUserRequest, user_pb.UnlockUserResponse)
    deactivate_user = _state_change(
        "deactivate", user_pb.DeactivateUserRequest, user_pb.DeactivateUserResponse
    )
    reactivate_user = _state_change(
        "reactivate", user_pb.ReactivateUserRequest, user_pb.ReactivateUserResponse
    )
    delete_user = _state_change("remove", user_pb.DeleteUserRequest, user_pb.DeleteUserResponse)


class SessionService(_Service):
    """``zitadel.session.v2.SessionService``: log in with a password, and log out."""

    async def create_session(
        self, request: session_pb.CreateSessionRequest, ctx: RequestContext[Any, Any]
    ) -> session_pb.CreateSessionResponse:
        data = _as_struct(request, wire.CreateSessionRequest)
        checks = data.checks
        assert checks is not None and checks.user is not None and checks.password is not None
        created = await sessions.create_session(
            ctx=self._contexts(),
            login_name=checks.user.login_name,
            user_id=checks.user.user_id,
            password=checks.password.password,
            client_ip=_client_ip(ctx),
        )
        return session_pb.CreateSessionResponse(
            details=_details(created.details),
            session_id=created.session_id,
            session_token=created.token,
        )

    async def delete_session(
        self, request: session_pb.DeleteSessionRequest, ctx: RequestContext[Any, Any]
    ) -> session_pb.DeleteSessionResponse:
        domain, principal = await self._caller(ctx)
        wire.check_path_id("DeleteSessionRequest", "SessionId", request.session_id)
        details = await sessions.delete_session(
            ctx=domain, principal=principal, session_id=request.session_id
        )
        return session_pb.DeleteSessionResponse(details=_details(details))
