"""Wiring the wire structs into Litestar: a handler declares ``data: SetPasswordRequest``
and this plugin decodes it with ``wire.decode`` (strict, snake_case accepted, the contract's
400 messages) and describes it in the OpenAPI document from the same struct."""

from __future__ import annotations

import re
from collections.abc import Generator
from typing import Any, TypeVar

from litestar.dto import AbstractDTO, DTOFieldDefinition
from litestar.openapi.spec import Reference, Schema
from litestar.plugins import SerializationPlugin
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send
from litestar.typing import FieldDefinition

from api import wire
from api.errors import Overloaded
from api.http.errors import send_error

T = TypeVar("T", bound=wire.WireIn)


class WireDTO(AbstractDTO[T]):
    """Decodes a request body into the handler's ``WireIn`` struct with ``wire.decode``."""

    def decode_bytes(self, value: bytes) -> Any:
        return wire.decode(value, self.model_type)

    def decode_builtins(self, value: dict[str, Any]) -> Any:  # a form body: not offered
        raise NotImplementedError("wire structs are decoded from JSON bytes")

    @classmethod
    def create_for_field_definition(
        cls, field_definition: FieldDefinition, handler_id: str, backend_cls: Any = None
    ) -> None:
        """Nothing to prepare: ``wire.decode`` reads the struct's own type information."""

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: Any
    ) -> Reference | Schema:
        schema: Reference | Schema = schema_creator.for_field_definition(
            FieldDefinition.from_annotation(cls.model_type)
        )
        return schema

    @classmethod
    def generate_field_definitions(
        cls, model_type: type[Any]
    ) -> Generator[DTOFieldDefinition, None, None]:
        yield from ()

    @classmethod
    def detect_nested_field(cls, field_definition: FieldDefinition) -> bool:
        return False


def empty_body_is_an_empty_object(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: a POST without a body reaches its handler as ``{}``, as it does in
    ZITADEL (Litestar would otherwise leave ``data`` unset)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") != "POST":  # HTTP only: a websocket scope has no method
            await app(scope, receive, send)
            return
        first = True

        async def receive_body() -> ReceiveMessage:
            nonlocal first
            message = await receive()
            if first and message["type"] == "http.request":
                first = False
                if not message.get("body") and not message.get("more_body"):
                    return {**message, "body": b"{}"}
            return message

        await app(scope, receive_body, send)

    return middleware


# The REST requests that hash (a password change, a login): under overload they are refused
# before anything else, so a refusal costs next to nothing and the admitted ones keep the CPU.
_HASHING_ROUTES = re.compile(r"^/v2/(users/[^/]+/password|sessions)$")


def refuse_hashing_when_overloaded(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: when the hash pool cannot take another hash in time
    (``PasswordHasher.admit``), a request that would hash is answered 503 ``SERVER-0verl``
    with ``Retry-After`` at once — before its token, body or user are read. (The domain
    checks again, for the RPC transports and for what this path test misses.)"""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") == "POST" and _HASHING_ROUTES.match(scope["path"]):
            try:
                scope["app"].state.ctx.hasher.admit()
            except Overloaded as refused:
                await send_error(send, refused)
                return
        await app(scope, receive, send)

    return middleware


class WirePlugin(SerializationPlugin):
    """Every ``WireIn`` request body goes through ``WireDTO``."""

    def supports_type(self, field_definition: FieldDefinition) -> bool:
        return field_definition.is_subclass_of(wire.WireIn)

    def create_dto_for_type(self, field_definition: FieldDefinition) -> type[AbstractDTO[Any]]:
        return WireDTO[field_definition.annotation]  # type: ignore[name-defined]
