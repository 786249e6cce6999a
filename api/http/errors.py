"""The one place where errors become HTTP answers.

``{"code", "message", "details": [{"@type", "id", "message"}]}`` with the HTTP status of the
gRPC code (``HTTP_STATUS``, as grpc-gateway maps them), ``Retry-After`` on 429/503 and
``WWW-Authenticate`` on 401. The errors only HTTP has (413, an unknown route, a wrong
method) are defined here. Unexpected errors are logged by type and stack frames only (an
exception's text may carry a parameter value) and answered with a bare 500.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, MethodNotAllowedException, NotFoundException
from litestar.types import Send

from api.errors import (
    InvalidArgument,
    NotFound,
    RequestInvalid,
    ServiceError,
    Unauthenticated,
    as_service_error,
)

DETAIL_TYPE = "type.googleapis.com/zitadel.v1.ErrorDetail"

# gRPC code -> HTTP status.
HTTP_STATUS = {3: 400, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 12: 405, 13: 500, 14: 503, 16: 401}


class RequestTooLarge(InvalidArgument):
    default_message = "request body too large"


class RouteNotFound(NotFound):
    default_message = "Not Found"


class MethodNotAllowed(ServiceError):
    grpc_code = 12
    default_message = "Method Not Allowed"


def http_status(error: ServiceError) -> int:
    if isinstance(error, RequestTooLarge):
        return 413
    return HTTP_STATUS.get(error.grpc_code, 500)


class ErrorDetail(msgspec.Struct):
    type: str = msgspec.field(name="@type")
    id: str = ""
    message: str = ""


class ErrorBody(msgspec.Struct, omit_defaults=True):
    code: int
    message: str
    details: list[ErrorDetail] = []


def error_body(error: ServiceError) -> bytes:
    details = [ErrorDetail(DETAIL_TYPE, error.error_id, error.message)] if error.error_id else []
    return msgspec.json.encode(ErrorBody(error.grpc_code, error.wire_message, details))


def http_service_error(exc: BaseException) -> ServiceError:
    """Litestar's own exceptions (routing, body size, its validation) in the contract's
    terms; everything else as every transport sees it."""
    if isinstance(exc, NotFoundException):
        return RouteNotFound()
    if isinstance(exc, MethodNotAllowedException):
        return MethodNotAllowed()
    if isinstance(exc, HTTPException):
        if exc.status_code == 413:
            return RequestTooLarge()
        if exc.status_code == 404:
            return RouteNotFound()
        if exc.status_code == 405:
            return MethodNotAllowed()
        if 400 <= exc.status_code < 500:
            return RequestInvalid(f"invalid request: {exc.detail}")
    return as_service_error(exc)


def error_response(error: ServiceError) -> Response[bytes]:
    return Response(
        content=error_body(error),
        status_code=http_status(error),
        media_type="application/json",
        headers=error_headers(error),
    )


async def send_error(send: Send, error: ServiceError) -> None:
    """``error_response`` as raw ASGI messages, for middleware that answers before Litestar."""
    body = error_body(error)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in error_headers(error).items()),
    ]
    await send({"type": "http.response.start", "status": http_status(error), "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def error_headers(error: ServiceError) -> dict[str, str]:
    status = http_status(error)
    headers: dict[str, str] = {}
    if status in (429, 503):
        headers["Retry-After"] = str(error.retry_after or 1)
    if isinstance(error, Unauthenticated):
        headers["WWW-Authenticate"] = (
            'Bearer realm="identity", error="invalid_token"'
            if error.error_id
            else 'Bearer realm="identity"'
        )
    return headers


def handle_exception(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    return error_response(http_service_error(exc))
