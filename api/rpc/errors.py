"""The one place where errors become RPC errors (Connect, gRPC-Web and gRPC alike).

A ``ServiceError`` becomes a ``ConnectError`` with its gRPC code, the message
``"<message> (<id>)"`` as in the REST body, and one ``zitadel.v1.ErrorDetail{id, message}``
as its detail (connectrpc carries it as the Connect error JSON's ``details``, in the gRPC-Web
trailer and in gRPC's ``grpc-status-details-bin``). Anything else is ``INTERNAL`` or
``UNAVAILABLE`` exactly as over REST (``api.errors.as_service_error``): never ``UNKNOWN``
with an exception's text.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from connectrpc.code import Code
from connectrpc.errors import ConnectError, ErrorDetail
from connectrpc.request import RequestContext
from protobuf.wkt import Any as AnyMessage

from api.errors import ServiceError, as_service_error
from api.rpc.gen.zitadel.message_pb2 import ErrorDetail as ErrorDetailMessage

REQ = TypeVar("REQ")
RES = TypeVar("RES")

_CODES = {
    3: Code.INVALID_ARGUMENT,
    5: Code.NOT_FOUND,
    6: Code.ALREADY_EXISTS,
    7: Code.PERMISSION_DENIED,
    8: Code.RESOURCE_EXHAUSTED,
    9: Code.FAILED_PRECONDITION,
    12: Code.UNIMPLEMENTED,
    13: Code.INTERNAL,
    14: Code.UNAVAILABLE,
    16: Code.UNAUTHENTICATED,
}
_DETAIL_TYPE_URL = "type.googleapis.com/zitadel.v1.ErrorDetail"


def connect_error(error: ServiceError) -> ConnectError:
    details = []
    if error.error_id:
        detail = ErrorDetailMessage(id=error.error_id, message=error.message)
        details.append(
            ErrorDetail(AnyMessage(type_url=_DETAIL_TYPE_URL, value=detail.SerializeToString()))
        )
    return ConnectError(_CODES.get(error.grpc_code, Code.INTERNAL), error.wire_message, details)


class ServiceErrors:
    """Interceptor: every exception a method raises leaves as the contract's RPC error."""

    async def intercept_unary(
        self,
        call_next: Callable[[Any, RequestContext[Any, Any]], Awaitable[Any]],
        request: Any,
        ctx: RequestContext[Any, Any],
        /,
    ) -> Any:
        try:
            return await call_next(request, ctx)
        except ConnectError:
            raise
        except Exception as exc:
            error = as_service_error(exc)
            if error.retry_after is not None:  # 429 and 503: when to try again, as over REST
                ctx.response_headers["retry-after"] = str(error.retry_after)
            raise connect_error(error) from None
