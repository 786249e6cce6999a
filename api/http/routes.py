"""Routes: decode, call one domain function, encode. Nothing else happens here."""

from typing import Annotated, Any

from litestar import Request, Response, delete, get, post
from litestar.di import Dependency, Provide
from litestar.params import PathParameter

from api import auth, passwords, sessions, users
from api.auth import Principal
from api.errors import AuthHeaderMissing, NotificationTypeUnsupported, RequestInvalid, TokenInvalid
from api.events import Details
from api.http import wire
from api.stores import Stores

JSON = "application/json"
UserId = Annotated[str, PathParameter(description="the user's ID (1..200 characters)")]
SessionId = Annotated[str, PathParameter(description="the session's ID")]
Caller = Annotated[Principal, Dependency(kind="named")]


def _stores(request: Request[Any, Any, Any]) -> Stores:
    stores: Stores = request.app.state.stores
    return stores


async def _principal(request: Request[Any, Any, Any]) -> Principal:
    header = request.headers.get("authorization")
    if not header:
        raise AuthHeaderMissing()
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 512:
        raise TokenInvalid()
    stores = _stores(request)
    return await auth.resolve_principal(
        pool=stores.pool,
        redis=stores.redis,
        keys=stores.keys,
        secret_key=stores.settings.secret_key,
        token=token,
        cache_ttl_s=stores.settings.token_cache_ttl_s,
    )


def _client_ip(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else ""


def _json(value: Any, status: int = 200) -> Response[bytes]:
    return Response(content=wire.encode(value), status_code=status, media_type=JSON)


def _details(details: Details, status: int = 200) -> Response[bytes]:
    return _json(wire.DetailsResponse(details=wire.details_out(details)), status)


DEPENDENCIES = {"principal": Provide(_principal)}


# --- passwords --------------------------------------------------------------------------


@post(
    "/v2/users/{user_id:str}/password",
    dependencies=DEPENDENCIES,
    tags=["passwords"],
    summary="Change password",
    status_code=200,
)
async def set_password(
    request: Request[Any, Any, Any], user_id: UserId, principal: Principal
) -> Response[bytes]:
    """Change a user's password with the current password, a reset code, or as an admin."""
    wire.check_path_id("SetPasswordRequest", "UserId", user_id)
    body = wire.decode(await request.body(), wire.SetPasswordRequest)
    wire.refuse_two_of_oneof(
        "SetPasswordRequest",
        "Verification",
        ["currentPassword", "verificationCode"],
        [body.current_password, body.verification_code],
    )
    details = await passwords.change_password(
        _stores(request),
        principal=principal,
        user_id=user_id,
        new_password=body.new_password.password,
        change_required=body.new_password.change_required,
        current_password=body.current_password,
        verification_code=body.verification_code,
        client_ip=_client_ip(request),
    )
    return _details(details)


_EMAIL_TYPES = {"NOTIFICATION_TYPE_Unspecified", "NOTIFICATION_TYPE_Email", 0, 1}
_SMS_TYPES = {"NOTIFICATION_TYPE_SMS", 2}


@post(
    "/v2/users/{user_id:str}/password_reset",
    dependencies=DEPENDENCIES,
    tags=["passwords"],
    summary="Request a password reset code",
    status_code=200,
)
async def password_reset(
    request: Request[Any, Any, Any], user_id: UserId, principal: Principal
) -> Response[bytes]:
    """Issue a reset code: e-mailed as a link (``sendLink``) or returned (``returnCode``)."""
    wire.check_path_id("PasswordResetRequest", "UserId", user_id)
    body = wire.decode(await request.body(), wire.PasswordResetRequest)
    wire.refuse_two_of_oneof(
        "PasswordResetRequest",
        "Medium",
        ["sendLink", "returnCode"],
        [body.send_link, body.return_code],
    )
    url_template = body.send_link.url_template if body.send_link else None
    if body.send_link is not None:
        kind = body.send_link.notification_type
        if kind in _SMS_TYPES:
            raise NotificationTypeUnsupported()
        if kind not in _EMAIL_TYPES:
            raise RequestInvalid(
                "invalid PasswordResetRequest.SendLink: embedded message failed validation | "
                "caused by: invalid SendPasswordResetLink.NotificationType: value must be one "
                "of the defined enum values"
            )
    details, code = await passwords.request_password_reset(
        _stores(request),
        principal=principal,
        user_id=user_id,
        return_code=body.return_code is not None,
        url_template=url_template,
    )
    return _json(
        wire.PasswordResetResponse(details=wire.details_out(details), verification_code=code)
    )


# --- users ------------------------------------------------------------------------------


@post(
    "/v2/users/human",
    dependencies=DEPENDENCIES,
    tags=["users"],
    summary="Create a human user",
    status_code=201,
)
async def add_human_user(request: Request[Any, Any, Any], principal: Caller) -> Response[bytes]:
    body = wire.decode(await request.body(), wire.AddHumanUserRequest)
    wire.refuse_two_of_oneof(
        "AddHumanUserRequest",
        "PasswordType",
        ["password", "hashedPassword"],
        [body.password, body.hashed_password],
    )
    stores = _stores(request)
    org_id = (body.organization.org_id if body.organization else None) or principal.org_id
    new = users.NewHuman(
        org_id=org_id,
        user_id=body.user_id,
        username=body.username,
        given_name=body.profile.given_name,
        family_name=body.profile.family_name,
        display_name=body.profile.display_name
        or f"{body.profile.given_name} {body.profile.family_name}",
        email=body.email.email,
        email_verified=body.email.is_verified,
        password=body.password.password if body.password else None,
        hashed_password=body.hashed_password.hash if body.hashed_password else None,
        change_required=(body.password.change_required if body.password else False)
        or (body.hashed_password.change_required if body.hashed_password else False),
    )

    async def check_password(org: str, password: str) -> None:
        await passwords.check_password_for_org(stores, org, password)

    user_id, details = await users.create_human(
        stores.pool, stores.hasher, principal=principal, new=new, check_password=check_password
    )
    return _json(wire.AddHumanUserResponse(user_id=user_id, details=wire.details_out(details)), 201)


@get("/v2/users/{user_id:str}", dependencies=DEPENDENCIES, tags=["users"], summary="Get a user")
async def get_user(
    request: Request[Any, Any, Any], user_id: UserId, principal: Principal
) -> Response[bytes]:
    wire.check_path_id("GetUserByIDRequest", "UserId", user_id)
    user = await users.get_user(_stores(request).pool, user_id)
    auth.require_self_or_write(principal, user.id, user.org_id)
    return _json(wire.user_response(user))


def _state_route(action: str, path: str, summary: str) -> Any:
    @post(
        path,
        dependencies=DEPENDENCIES,
        tags=["users"],
        summary=summary,
        status_code=200,
        name=f"user-{action}",
        operation_id=f"user_{action}",
    )
    async def handler(
        request: Request[Any, Any, Any], user_id: UserId, principal: Principal
    ) -> Response[bytes]:
        wire.check_path_id(f"{action.capitalize()}UserRequest", "UserId", user_id)
        stores = _stores(request)
        details = await users.change_state(
            stores.pool,
            stores.redis,
            stores.keys,
            principal=principal,
            user_id=user_id,
            action=action,
        )
        return _details(details)

    return handler


lock_user = _state_route("lock", "/v2/users/{user_id:str}/lock", "Lock a user")
unlock_user = _state_route("unlock", "/v2/users/{user_id:str}/unlock", "Unlock a user")
deactivate_user = _state_route(
    "deactivate", "/v2/users/{user_id:str}/deactivate", "Deactivate a user"
)
reactivate_user = _state_route(
    "reactivate", "/v2/users/{user_id:str}/reactivate", "Reactivate a user"
)


@delete(
    "/v2/users/{user_id:str}",
    dependencies=DEPENDENCIES,
    tags=["users"],
    summary="Delete a user",
    status_code=200,
)
async def delete_user(
    request: Request[Any, Any, Any], user_id: UserId, principal: Principal
) -> Response[bytes]:
    wire.check_path_id("DeleteUserRequest", "UserId", user_id)
    stores = _stores(request)
    details = await users.change_state(
        stores.pool,
        stores.redis,
        stores.keys,
        principal=principal,
        user_id=user_id,
        action="remove",
    )
    return _details(details)


# --- sessions ---------------------------------------------------------------------------


@post("/v2/sessions", tags=["sessions"], summary="Log in (create a session)", status_code=201)
async def create_session(request: Request[Any, Any, Any]) -> Response[bytes]:
    body = wire.decode(await request.body(), wire.CreateSessionRequest)
    checks = body.checks
    if checks is None or checks.user is None:
        raise RequestInvalid(
            "invalid CreateSessionRequest.Checks: embedded message failed "
            "validation | caused by: invalid Checks.User: value is required"
        )
    wire.refuse_two_of_oneof(
        "CheckUser",
        "Search",
        ["userId", "loginName"],
        [checks.user.user_id, checks.user.login_name],
    )
    if checks.user.user_id is None and checks.user.login_name is None:
        raise RequestInvalid(
            "invalid CreateSessionRequest.Checks: embedded message failed "
            "validation | caused by: invalid Checks.User: embedded message "
            "failed validation | caused by: invalid CheckUser.Search: value "
            "is required"
        )
    if checks.password is None:
        raise RequestInvalid(
            "invalid CreateSessionRequest.Checks: embedded message failed "
            "validation | caused by: invalid Checks.Password: value is required"
        )
    created = await sessions.create_session(
        _stores(request),
        login_name=checks.user.login_name,
        user_id=checks.user.user_id,
        password=checks.password.password,
        client_ip=_client_ip(request),
    )
    return _json(
        wire.CreateSessionResponse(
            details=wire.details_out(created.details),
            session_id=created.session_id,
            session_token=created.token,
        ),
        201,
    )


@get(
    "/v2/sessions/{session_id:str}",
    dependencies=DEPENDENCIES,
    tags=["sessions"],
    summary="Get a session",
)
async def get_session(
    request: Request[Any, Any, Any], session_id: SessionId, principal: Principal
) -> Response[bytes]:
    wire.check_path_id("GetSessionRequest", "SessionId", session_id)
    session = await sessions.get_session(
        _stores(request), principal=principal, session_id=session_id
    )
    return _json(wire.session_response(session))


@delete(
    "/v2/sessions/{session_id:str}",
    dependencies=DEPENDENCIES,
    tags=["sessions"],
    summary="Terminate a session",
    status_code=200,
)
async def delete_session(
    request: Request[Any, Any, Any], session_id: SessionId, principal: Principal
) -> Response[bytes]:
    wire.check_path_id("DeleteSessionRequest", "SessionId", session_id)
    details = await sessions.delete_session(
        _stores(request), principal=principal, session_id=session_id
    )
    return _details(details)


# --- health -----------------------------------------------------------------------------


@get("/healthz", tags=["health"], summary="The process is up")
async def healthz() -> Response[bytes]:
    return _json({"status": "ok"})


@get("/readyz", tags=["health"], summary="Postgres and Redis are reachable")
async def readyz(request: Request[Any, Any, Any]) -> Response[bytes]:
    stores = _stores(request)
    async with stores.pool.acquire(timeout=stores.settings.db_connect_timeout_s) as conn:
        await conn.fetchval("SELECT 1", timeout=stores.settings.db_connect_timeout_s)
    await stores.redis.ping()
    return _json({"status": "ok", "postgres": "ok", "redis": "ok"})


ROUTES = [
    set_password,
    password_reset,
    add_human_user,
    get_user,
    lock_user,
    unlock_user,
    deactivate_user,
    reactivate_user,
    delete_user,
    create_session,
    get_session,
    delete_session,
    healthz,
    readyz,
]
