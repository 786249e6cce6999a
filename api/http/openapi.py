"""Request and response schemas in the OpenAPI document.

Routes read raw bodies (for strict decoding and the contract's validation messages), so
Litestar cannot see their types. This module adds them from the msgspec structs, once, when
the app starts.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, RequestBody

from api.http import wire
from api.http.errors import ErrorBody

JSON = "application/json"

# (path, method) -> (request struct or None, response struct, success status)
ROUTE_SCHEMAS: dict[tuple[str, str], tuple[type[Any] | None, type[Any], str]] = {
    ("/v2/users/{user_id}/password", "post"): (
        wire.SetPasswordRequest,
        wire.DetailsResponse,
        "200",
    ),
    ("/v2/users/{user_id}/password_reset", "post"): (
        wire.PasswordResetRequest,
        wire.PasswordResetResponse,
        "200",
    ),
    ("/v2/users/human", "post"): (wire.AddHumanUserRequest, wire.AddHumanUserResponse, "201"),
    ("/v2/users/{user_id}", "get"): (None, wire.GetUserResponse, "200"),
    ("/v2/users/{user_id}", "delete"): (None, wire.DetailsResponse, "200"),
    ("/v2/users/{user_id}/lock", "post"): (None, wire.DetailsResponse, "200"),
    ("/v2/users/{user_id}/unlock", "post"): (None, wire.DetailsResponse, "200"),
    ("/v2/users/{user_id}/deactivate", "post"): (None, wire.DetailsResponse, "200"),
    ("/v2/users/{user_id}/reactivate", "post"): (None, wire.DetailsResponse, "200"),
    ("/v2/sessions", "post"): (wire.CreateSessionRequest, wire.CreateSessionResponse, "201"),
    ("/v2/sessions/{session_id}", "get"): (None, wire.GetSessionResponse, "200"),
    ("/v2/sessions/{session_id}", "delete"): (None, wire.DetailsResponse, "200"),
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def add_body_schemas(app: Litestar) -> None:
    document = app.openapi_schema
    structs = {s for key in ROUTE_SCHEMAS.values() for s in key[:2] if s is not None}
    _, components = msgspec.json.schema_components(
        [*sorted(structs, key=lambda s: s.__name__), ErrorBody],
        ref_template="#/components/schemas/{name}",
    )
    if document.components.schemas is None:
        document.components.schemas = {}
    document.components.schemas.update(components)
    for (path, method), (request, response, status) in ROUTE_SCHEMAS.items():
        item = document.paths.get(path) if document.paths else None
        operation = getattr(item, method, None) if item else None
        if operation is None:
            continue
        if request is not None:
            operation.request_body = RequestBody(
                content={JSON: OpenAPIMediaType(schema=_ref(request.__name__))},  # type: ignore[arg-type]
                required=True,
            )
        operation.responses = {
            status: OpenAPIResponse(
                description="OK",
                content={JSON: OpenAPIMediaType(schema=_ref(response.__name__))},  # type: ignore[arg-type]
            ),
            "default": OpenAPIResponse(
                description="Error: code, message, details (see the error table)",
                content={JSON: OpenAPIMediaType(schema=_ref("ErrorBody"))},  # type: ignore[arg-type]
            ),
        }
