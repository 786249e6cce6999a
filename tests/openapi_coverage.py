"""Every status the tests see a REST endpoint answer is in the OpenAPI document (issue 12).

A pytest plugin (``tests/conftest.py`` loads it): it records, for every response an httpx
client of the tests receives, the request's method and path and the status; at the end of
the session it matches each path to the document's path templates and fails the session if
an operation answered a status its ``responses`` do not list. Paths the document does not
have (unknown routes, the RPC services, ``/metrics``, ``/schema``) and 405s (a method the
path does not have) are not operations of the document and are left out. The document is
also validated against the OpenAPI 3.1 specification (openapi-spec-validator).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

_SEEN: set[tuple[str, str, int]] = set()


def _record(response: httpx.Response) -> None:
    request = response.request
    _SEEN.add((request.method.lower(), request.url.path, response.status_code))


def _wrap_sync(send: Callable[..., httpx.Response]) -> Callable[..., httpx.Response]:
    @functools.wraps(send)
    def wrapped(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        response = send(self, request, **kwargs)
        _record(response)
        return response

    return wrapped


def _wrap_async(send: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(send)
    async def wrapped(
        self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any
    ) -> httpx.Response:
        response: httpx.Response = await send(self, request, **kwargs)
        _record(response)
        return response

    return wrapped


def pytest_configure(config: pytest.Config) -> None:
    httpx.Client.send = _wrap_sync(httpx.Client.send)  # type: ignore[method-assign]
    httpx.AsyncClient.send = _wrap_async(httpx.AsyncClient.send)  # type: ignore[method-assign]


def document() -> dict[str, Any]:
    from api.http.app import create_app
    from api.settings import settings_from_env

    app = create_app(settings_from_env({}, env="development"))
    schema: dict[str, Any] = app.openapi_schema.to_schema()
    return schema


def undocumented(seen: set[tuple[str, str, int]], doc: dict[str, Any]) -> list[str]:
    """``method path status`` of each answer whose operation does not list its status."""
    templates = [
        (re.compile("^" + re.sub(r"\{[^/]+\}", "[^/]+", path) + "$"), path, operations)
        for path, operations in doc["paths"].items()
    ]
    missing = set()
    for method, path, status in seen:
        for pattern, template, operations in templates:
            if pattern.match(path) and method in operations:
                if str(status) not in operations[method].get("responses", {}):
                    missing.add(f"{method.upper()} {template} {status}")
                break
    return sorted(missing)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _SEEN or exitstatus not in (0, 1):
        return
    from openapi_spec_validator import validate

    doc = document()
    validate(doc)  # raises on an invalid document
    missing = undocumented(_SEEN, doc)
    if missing:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        text = "answers whose status the OpenAPI document does not list:\n  " + "\n  ".join(missing)
        if reporter is not None:
            reporter.write_line(text, red=True)
        session.exitstatus = 1
