"""Routes: decode (the typed ``data``), call one domain function, encode (the return type).

Before a handler runs, in this order: the route and method (404, 405), the bearer token
(guard ``authenticated``: 401), the path's IDs (the same guard: 400), then the body
(``data``, decoded by ``api.http.plugin``: 400, 413). The OpenAPI document is generated from
these signatures.
"""

from dataclasses import dataclass
from typing import Annotated, Any

from litestar import HttpMethod, Request, delete, get, post, route
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.handlers import BaseRouteHandler, HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import JSONBody, PathParameter, SkipValidation

from api import wire
from api.domain import auth, passwords, sessions, users
from api.domain.auth import Principal
from api.domain.context import Context, readiness
from api.http.errors import DETAIL_TYPE, ErrorBody
from api.repositories.events import Details


# The one value every handler takes besides its path and body (one dependency, so Litestar
# resolves it without a task group per request): made by us per request, not re-validated.
@dataclass(frozen=True, slots=True)
class Call:
    ctx: Context
    client_ip: str
    caller: Principal | None

    @property
    def principal(self) -> Principal:
        """The bearer token's principal (set by the ``authenticated`` guard)."""
        assert self.caller is not None, "a protected route without the authenticated guard"
        return self.caller


Req = SkipValidation[Call]
UserId = Annotated[str, PathParameter(description="the user's ID (1..200 characters)")]
SessionId = Annotated[str, PathParameter(description="the session's ID")]

# Path parameter -> its name in the request messages' validation errors.
_PATH_FIELDS = {"user_id": "UserId", "session_id": "SessionId"}


def provide_call(request: Request[Any, Any, Any]) -> Call:
    return Call(
        request.app.state.ctx,
        request.client.host if request.client else "",
        getattr(request.state, "principal", None),
    )


async def authenticated(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Guard, in this order: the bearer token's principal, or 401; then the IDs in the path,
    checked as the request message's fields, or 400 — both before the body is read. (One
    guard: Litestar copies the handler for each guard of each request.)"""
    ctx: Context = connection.app.state.ctx
    connection.state.principal = await auth.authenticate(
        ctx=ctx, authorization=connection.headers.get("authorization")
    )
    for name, value in connection.path_params.items():
        wire.check_path_id(handler.opt["proto"], _PATH_FIELDS[name], value)


DEPENDENCIES = {"call": Provide(provide_call, sync_to_thread=False)}
# The OpenAPI security scheme of the routes that take a token (``api.http.app`` declares it).
BEARER = "BearerToken"
_ERROR_EXAMPLES: dict[int, tuple[str, int, str, str]] = {
    # status: (when, gRPC code, error id, message)
    400: ("invalid request, or a state that forbids it", 3, "COMMAND-3M0fs", "Password is invalid"),
    401: ("missing or unknown token", 16, "AUTH-7fs1e", "Errors.Token.Invalid"),
    403: ("not allowed", 7, "AUTH-AWfge", "No matching permissions found"),
    404: ("not found", 5, "COMMAND-SAF4f", "User could not be found"),
    409: ("already exists", 6, "COMMAND-k2un8", "Username is already taken"),
    413: ("request body too large", 3, "", "request body too large"),
    429: ("too many requests (Retry-After)", 8, "LIMIT-R4te1", "Too many requests"),
    500: (
        "a fault of the service (never the request's: no input causes it)",
        13,
        "SERVER-Int3r",
        "Internal error",
    ),
    503: (
        "overloaded or a store unavailable (Retry-After)",
        14,
        "SERVER-0verl",
        "Service is overloaded",
    ),
}


def _errors(*statuses: int) -> dict[int, ResponseSpec]:
    """The contract's error body for each status a route can answer, with an example."""
    specs = {}
    for status in statuses:
        when, code, error_id, message = _ERROR_EXAMPLES[status]
        details = [{"@type": DETAIL_TYPE, "id": error_id, "message": message}] if error_id else []
        example = {"code": code, "message": f"{message} ({error_id})" if error_id else message}
        if details:
            example["details"] = details
        specs[status] = ResponseSpec(
            data_container=ErrorBody,
            description=f"{when} (see README's error table)",
            examples=[Example(summary=message, value=example)],
        )
    return specs


# Every route with a token and IDs in its path can answer these; each adds its own.
_BASE_ERRORS = (400, 401, 403, 404, 500, 503)


def _protected(proto: str, *errors: int) -> dict[str, Any]:
    """Options of a route that needs a token and has IDs in its path (``errors``: the
    statuses it answers besides ``_BASE_ERRORS``)."""
    return {
        "guards": [authenticated],
        "opt": {"proto": proto},
        "responses": _errors(*sorted({*_BASE_ERRORS, *errors})),
        "security": [{BEARER: []}],
    }


def _details(details: Details) -> wire.DetailsResponse:
    return wire.DetailsResponse(details=wire.details_out(details))


# --- passwords --------------------------------------------------------------------------


@post(
    "/v2/users/{user_id:str}/password",
    tags=["passwords"],
    summary="Change password",
    status_code=200,
    **_protected("SetPasswordRequest", 413, 429),
)
async def set_password(
    call: Req,
    user_id: UserId,
    data: JSONBody[wire.SetPasswordRequest],
) -> wire.DetailsResponse:
    """Change a user's password with the current password, a reset code, or as an admin."""
    details = await passwords.change_password(
        ctx=call.ctx,
        principal=call.principal,
        user_id=user_id,
        new_password=data.new_password.password,
        change_required=data.new_password.change_required,
        current_password=data.current_password,
        verification_code=data.verification_code,
        client_ip=call.client_ip,
    )
    return _details(details)


@post(
    "/v2/users/{user_id:str}/password_reset",
    tags=["passwords"],
    summary="Request a password reset code",
    status_code=200,
    **_protected("PasswordResetRequest", 413, 429),
)
async def password_reset(
    call: Req, user_id: UserId, data: JSONBody[wire.PasswordResetRequest]
) -> wire.PasswordResetResponse:
    """Issue a reset code: e-mailed as a link (``sendLink``) or returned (``returnCode``)."""
    details, code = await passwords.request_password_reset(
        ctx=call.ctx,
        principal=call.principal,
        user_id=user_id,
        return_code=data.return_code is not None,
        url_template=data.send_link.url_template if data.send_link else None,
    )
    return wire.PasswordResetResponse(details=wire.details_out(details), verification_code=code)


# --- users ------------------------------------------------------------------------------


@post(
    "/v2/users/human",
    tags=["users"],
    summary="Create a human user",
    status_code=201,
    **_protected("AddHumanUserRequest", 409, 413),
)
async def add_human_user(
    call: Req, data: JSONBody[wire.AddHumanUserRequest]
) -> wire.AddHumanUserResponse:
    user_id, details = await users.create_human(
        ctx=call.ctx,
        principal=call.principal,
        new=wire.new_human(data, default_org_id=call.principal.org_id),
    )
    return wire.AddHumanUserResponse(user_id=user_id, details=wire.details_out(details))


@get(
    "/v2/users/{user_id:str}",
    tags=["users"],
    summary="Get a user",
    **_protected("GetUserByIDRequest"),
)
async def get_user(call: Req, user_id: UserId) -> wire.GetUserResponse:
    user = await users.get_user(ctx=call.ctx, principal=call.principal, user_id=user_id)
    return wire.user_response(user)


def _state_route(
    action: str, method: HttpMethod, path: str, summary: str, proto: str
) -> HTTPRouteHandler:
    @route(
        path,
        http_method=method,
        tags=["users"],
        summary=summary,
        status_code=200,
        name=f"user-{action}",
        operation_id=f"user_{action}",
        **_protected(proto, 413),
    )
    async def handler(call: Req, user_id: UserId) -> wire.DetailsResponse:
        details = await users.change_state(
            ctx=call.ctx, principal=call.principal, user_id=user_id, action=action
        )
        return _details(details)

    return handler


lock_user = _state_route(
    "lock", HttpMethod.POST, "/v2/users/{user_id:str}/lock", "Lock a user", "LockUserRequest"
)
unlock_user = _state_route(
    "unlock",
    HttpMethod.POST,
    "/v2/users/{user_id:str}/unlock",
    "Unlock a user",
    "UnlockUserRequest",
)
deactivate_user = _state_route(
    "deactivate",
    HttpMethod.POST,
    "/v2/users/{user_id:str}/deactivate",
    "Deactivate a user",
    "DeactivateUserRequest",
)
reactivate_user = _state_route(
    "reactivate",
    HttpMethod.POST,
    "/v2/users/{user_id:str}/reactivate",
    "Reactivate a user",
    "ReactivateUserRequest",
)
delete_user = _state_route(
    "remove", HttpMethod.DELETE, "/v2/users/{user_id:str}", "Delete a user", "DeleteUserRequest"
)


# --- sessions ---------------------------------------------------------------------------


@post(
    "/v2/sessions",
    tags=["sessions"],
    summary="Log in (create a session)",
    status_code=201,
    responses=_errors(400, 404, 413, 429, 500, 503),
)
async def create_session(
    call: Req, data: JSONBody[wire.CreateSessionRequest]
) -> wire.CreateSessionResponse:
    checks = data.checks
    assert checks is not None and checks.user is not None and checks.password is not None
    created = await sessions.create_session(
        ctx=call.ctx,
        login_name=checks.user.login_name,
        user_id=checks.user.user_id,
        password=checks.password.password,
        client_ip=call.client_ip,
    )
    return wire.CreateSessionResponse(
        details=wire.details_out(created.details),
        session_id=created.session_id,
        session_token=created.token,
    )


@get(
    "/v2/sessions/{session_id:str}",
    tags=["sessions"],
    summary="Get a session",
    **_protected("GetSessionRequest"),
)
async def get_session(call: Req, session_id: SessionId) -> wire.GetSessionResponse:
    session = await sessions.get_session(
        ctx=call.ctx, principal=call.principal, session_id=session_id
    )
    return wire.session_response(session)


@delete(
    "/v2/sessions/{session_id:str}",
    tags=["sessions"],
    summary="Terminate a session",
    status_code=200,
    **_protected("DeleteSessionRequest"),
)
async def delete_session(call: Req, session_id: SessionId) -> wire.DetailsResponse:
    details = await sessions.delete_session(
        ctx=call.ctx, principal=call.principal, session_id=session_id
    )
    return _details(details)


# --- health -----------------------------------------------------------------------------


@get("/healthz", tags=["health"], summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get(
    "/readyz",
    tags=["health"],
    summary="Postgres and Redis are reachable",
    description=(
        "200 when both answer; otherwise 503 `SERVER-Unav1` whose message names the stores"
        " that did not (`Not ready: postgres unavailable`). The broker is reported"
        " (`broker`: `ok`, `unreachable`, or `not checked` for an in-memory one) but not"
        " required: a change commits its e-mail to the outbox whether or not the broker is"
        " up, and the relay publishes it when it is back."
    ),
    responses=_errors(503),
)
async def readyz(call: Req) -> dict[str, str]:
    return await readiness(ctx=call.ctx)


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
