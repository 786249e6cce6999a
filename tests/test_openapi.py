"""The OpenAPI document is generated from the typed handlers: each body's schema is the struct
the handler decodes, each success response the struct it returns, each error the contract's
error body. There is no second table of routes to keep in step."""

from __future__ import annotations

import re
import typing
from typing import Any

import pytest

from api import wire
from api.http.routes import ROUTES
from tests.support import World

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _struct_of(annotation: Any) -> type[Any] | None:
    """The wire struct in ``JSONBody[X]`` (an ``Annotated``), or the return type itself."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, wire.WireIn | wire.WireOut):
            return candidate
    return None


@pytest.fixture
async def document(world: World) -> dict[str, Any]:
    response = await world.client.get("/schema/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _operations() -> list[Any]:
    found = []
    for handler in ROUTES:
        hints = typing.get_type_hints(handler.fn, include_extras=True)
        for path in handler.paths:
            for method in handler.http_methods:
                found.append(
                    pytest.param(
                        path.replace(":str", ""),
                        method.lower(),
                        _struct_of(hints.get("data")),
                        _struct_of(hints.get("return")),
                        handler.status_code,
                        id=f"{method} {path}",
                    )
                )
    return found


@pytest.mark.parametrize(
    ("path", "method", "request_struct", "response_struct", "status"), _operations()
)
async def test_each_operation_is_described_by_its_handler(
    document: dict[str, Any],
    path: str,
    method: str,
    request_struct: type[Any] | None,
    response_struct: type[Any] | None,
    status: int,
) -> None:
    operation = document["paths"][path][method]
    if request_struct is None:
        assert "requestBody" not in operation
    else:
        assert operation["requestBody"]["content"][JSON]["schema"] == _ref(request_struct.__name__)
    if response_struct is not None:
        success = operation["responses"][str(status)]
        assert success["content"][JSON]["schema"] == _ref(response_struct.__name__)
        assert response_struct.__name__ in document["components"]["schemas"]
    if path.startswith("/v2/"):
        for code in ("400", "404", "503"):
            assert operation["responses"][code]["content"][JSON]["schema"] == _ref("ErrorBody")


async def test_request_schemas_carry_the_wire_names_and_limits(document: dict[str, Any]) -> None:
    schema = document["components"]["schemas"]["SetPasswordRequest"]
    assert schema["required"] == ["newPassword"]
    assert schema["properties"]["newPassword"] == _ref("PasswordIn")
    assert schema["properties"]["verificationCode"]["maxLength"] == 20
    password = document["components"]["schemas"]["PasswordIn"]["properties"]["password"]
    assert (password["minLength"], password["maxLength"]) == (1, 200)


async def test_token_routes_declare_the_bearer_scheme(world: World) -> None:
    """Issue 12: the UIs' "try it" can send a token: every route that needs one declares the
    bearer scheme; logging in and the health checks do not."""
    document = (await world.client.get("/schema/openapi.json")).json()
    scheme = document["components"]["securitySchemes"]["BearerToken"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    open_paths = {("post", "/v2/sessions"), ("get", "/healthz"), ("get", "/readyz")}
    seen = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if not path.startswith("/v2/") and (method, path) not in open_paths:
                continue
            if (method, path) in open_paths:
                assert not operation.get("security"), (method, path)
            else:
                assert operation.get("security") == [{"BearerToken": []}], (method, path)
                seen += 1
    assert seen >= 10, seen


def test_the_document_is_valid_openapi_and_lists_each_routes_errors() -> None:
    """Issue 12: the document validates (openapi-spec-validator), every error status an
    operation answers has the contract's body and an example, and the session-end check
    (``tests/openapi_coverage.py``) would catch a status the document does not list."""
    from openapi_spec_validator import validate

    from tests.openapi_coverage import document, undocumented

    doc = document()
    validate(doc)
    change = doc["paths"]["/v2/users/{user_id}/password"]["post"]["responses"]
    assert {"200", "400", "401", "403", "404", "413", "429", "503"} <= set(change)
    example = next(iter(change["429"]["content"]["application/json"]["examples"].values()))
    assert example["value"]["details"][0]["id"] == "LIMIT-R4te1"
    assert "409" in doc["paths"]["/v2/users/human"]["post"]["responses"]
    seen = {
        ("post", "/v2/users/123/password", 429),  # listed
        ("post", "/v2/users/123/password", 418),  # not listed: caught
        ("get", "/v2/users/123/password", 405),  # not an operation of the document
        ("get", "/nowhere", 404),  # not a path of the document
    }
    assert undocumented(seen, doc) == ["POST /v2/users/{user_id}/password 418"]


@pytest.mark.parametrize("page", ["/schema", "/schema/swagger"])
async def test_the_ui_loads_nothing_from_elsewhere(world: World, page: str) -> None:
    """Issue 12: the OpenAPI UI's scripts and styles come from the service itself (the
    swagger-ui-py package's files), so it works offline and runs no third party's code."""
    html = (await world.client.get(page)).text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets, html
    assert not [a for a in assets if a.startswith(("http://", "https://", "//"))], assets
    for asset in assets:
        if asset.startswith("/schema/assets/"):
            loaded = await world.client.get(asset)
            assert loaded.status_code == 200, asset
            assert len(loaded.content) > 100, asset
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets), assets
