"""OpenTelemetry tracing: off unless the standard ``OTEL_*`` variables turn it on.

**On** when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``, or any other
of the SDK's ``opentelemetry_traces_exporter`` entry points; comma-separated for several)
and ``OTEL_SDK_DISABLED`` is not ``true``. Unset, empty or ``none``: off, whatever else is
set (the specification's default exporter is ``otlp``; this service's is none, so a process
never sends spans nobody asked for). ``otlp`` speaks ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``
or ``OTEL_EXPORTER_OTLP_PROTOCOL``, ``http/protobuf`` by default (the specification's
default, and the exporter the ``otel`` extra installs); ``grpc`` needs
``opentelemetry-exporter-otlp-proto-grpc`` installed beside it. The rest is the SDK's own
reading of the environment: the exporter's endpoint, headers, timeout and compression
(``OTEL_EXPORTER_OTLP_*``), the resource (``OTEL_SERVICE_NAME``, default
``identity-<process>``, and ``OTEL_RESOURCE_ATTRIBUTES``), the sampler
(``OTEL_TRACES_SAMPLER``/``_ARG``), the batch processor (``OTEL_BSP_*``), the span limits
(``OTEL_SPAN_*``) and the propagators of incoming requests (``OTEL_PROPAGATORS``).

Off, nothing of OpenTelemetry is imported: ``span`` hands out one shared no-op context
manager, ``carrier`` an empty dict, and ``api.main`` installs no middleware.

The spans (docs/DECISIONS.md, *Tracing*): the HTTP server span of each request (``asgi``),
the span of a change's one statement (``span``, in ``api.repositories.users``), and, in the
worker, one span per e-mail delivered, each the child of the trace context stored with its
outbox row (``carrier`` writes it, ``Deliveries`` reads it). No attribute carries a secret,
a body, a query string, a header or an exception's text.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from api import request_ids

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer
    from opentelemetry.util.types import AttributeValue

log = logging.getLogger("identity.tracing")

Kind = Literal["internal", "server", "client", "producer", "consumer"]
ASGIApp = TypeVar("ASGIApp", bound=Callable[..., Awaitable[None]])

# The keys a stored trace context has in an outbox row's payload (W3C Trace Context).
TRACEPARENT, TRACESTATE = "traceparent", "tracestate"

_provider: TracerProvider | None = None
_tracer: Tracer | None = None
_NOOP: AbstractContextManager[None] = contextlib.nullcontext()
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "PATCH"})
_OTLP_BY_PROTOCOL = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The trace exporters ``environ`` asks for; none means tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [n for n in names if n]
    return [] if "none" in names else names


def enabled() -> bool:
    return _tracer is not None


def configure(*, process: str) -> bool:
    """Turn tracing on in this process if the environment asks for it (once; later calls
    answer whether it is on). A requested exporter that is not installed leaves tracing off
    with an error line rather than stopping the service."""
    global _provider, _tracer
    if _tracer is not None:
        return True
    names = exporter_names(os.environ)
    if not names:
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        exporters = [_exporter(name) for name in names]
    except (ImportError, LookupError, ValueError) as exc:
        log.error(
            "tracing is off: OTEL_TRACES_EXPORTER=%s cannot be served (%s); the otel extra "
            "(pip install 'identity[otel]') provides otlp over http/protobuf, and console",
            ",".join(names),
            exc,
        )
        return False
    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "unknown_service")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: f"identity-{process}"}))
    provider = TracerProvider(resource=resource)  # OTEL_TRACES_SAMPLER, OTEL_SPAN_*
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_*
    trace.set_tracer_provider(provider)
    _provider, _tracer = provider, provider.get_tracer("identity")
    log.info(
        "tracing on: spans of %s to %s",
        resource.attributes.get(SERVICE_NAME),
        ",".join(names),
    )
    return True


def _exporter(name: str) -> Any:
    """The exporter an ``OTEL_TRACES_EXPORTER`` name stands for, made with no argument (it
    reads its own ``OTEL_EXPORTER_*`` variables): the SDK's entry point of that name."""
    if name == "otlp":
        protocol = (
            os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        ).strip()
        if protocol not in _OTLP_BY_PROTOCOL:
            raise ValueError(f"OTLP protocol {protocol!r} is not one of http/protobuf, grpc")
        name = _OTLP_BY_PROTOCOL[protocol]
    found = importlib.metadata.entry_points(group="opentelemetry_traces_exporter", name=name)
    for entry_point in found:
        return entry_point.load()()
    raise LookupError(f"no trace exporter named {name!r} is installed")


def flush(timeout_ms: int = 5000) -> None:
    """Export the spans still buffered (before a process ends without its exit handlers,
    as a Celery pool child does)."""
    if _provider is not None:
        _provider.force_flush(timeout_ms)


def span(
    name: str, *, kind: Kind = "internal", attributes: Mapping[str, AttributeValue] | None = None
) -> AbstractContextManager[Any]:
    """A span around a block, the child of the current one; a shared no-op when off."""
    if _tracer is None:
        return _NOOP
    return _span(_tracer, name, kind, attributes)


@contextlib.contextmanager
def _span(
    tracer: Tracer, name: str, kind: Kind, attributes: Mapping[str, AttributeValue] | None
) -> Iterator[Span]:
    from opentelemetry.trace import SpanKind

    with tracer.start_as_current_span(
        name,
        kind=SpanKind[kind.upper()],
        attributes=attributes,
        record_exception=False,  # an exception's text may carry a value: its type only
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            _failed(current, type(exc).__qualname__)
            raise


def _failed(span: Span, error_type: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, error_type))


def carrier() -> dict[str, str]:
    """The current span's W3C trace context (``traceparent``, and ``tracestate`` when it has
    one) to store with work another process does later; empty when off or outside a span."""
    if _tracer is None:
        return {}
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    stored: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(stored)
    return stored


class Deliveries:
    """One span per outbox row a batch delivers, each the child of the trace context stored
    in its row (a row without one starts a trace of its own), all ended when the batch's
    transaction is over; on an exception each says its type. No-op when off."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._spans: dict[int, Span] = {}

    def start(
        self, key: int, payload: Mapping[str, Any], attributes: Mapping[str, AttributeValue]
    ) -> None:
        if _tracer is None:
            return
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        stored = {k: v for k in (TRACEPARENT, TRACESTATE) if isinstance(v := payload.get(k), str)}
        parent = TraceContextTextMapPropagator().extract(stored)  # empty: a new trace
        self._spans[key] = _tracer.start_span(
            self._name,
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )

    def set(self, attribute: str, values: Mapping[int, AttributeValue]) -> None:
        """Set ``attribute`` on the span of each key of ``values``."""
        for key, value in values.items():
            if (current := self._spans.get(key)) is not None:
                current.set_attribute(attribute, value)

    async def __aenter__(self) -> Deliveries:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        spans, self._spans = self._spans, {}
        for current in spans.values():
            if exc_type is not None:
                _failed(current, exc_type.__qualname__)
            current.end()


def asgi(app: ASGIApp) -> ASGIApp:
    """``app`` with an HTTP server span around each request: the caller's trace context
    (``OTEL_PROPAGATORS``) as parent, named ``METHOD route`` (Litestar's path template, or
    the RPC path), with the method, path (never the query string), route, status (and a
    native gRPC call's ``grpc-status``) and request id; 5xx and exceptions are errors. Only
    installed when tracing is on."""
    tracer = _tracer
    if tracer is None:
        return app
    from opentelemetry import context, propagate
    from opentelemetry.trace import SpanKind, set_span_in_context

    async def traced(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = {
            bytes(k).decode("latin-1"): bytes(v).decode("latin-1")
            for k, v in scope.get("headers", ())
        }
        parent = propagate.extract(headers)
        method = scope.get("method", "")
        method = method if method in _METHODS else "_OTHER"
        path = scope.get("path", "")
        route = path if path.startswith("/zitadel.") else None  # an RPC: its path is its name
        attributes: dict[str, AttributeValue] = {
            "http.request.method": method,
            "url.path": path,
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", ""),
        }
        current = tracer.start_span(
            f"{method} {route}" if route else method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        token = context.attach(set_span_in_context(current, parent))
        status = 0

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            if message["type"] in ("http.response.start", "http.response.trailers"):
                for key, value in message.get("headers", ()):
                    if key == b"grpc-status" and bytes(value).isdigit():  # native gRPC
                        current.set_attribute("rpc.grpc.status_code", int(value))
            await send(message)

        try:
            await app(scope, receive, send_status)
        except BaseException as exc:
            _failed(current, type(exc).__qualname__)
            raise
        finally:
            template = scope.get("path_template")  # set by Litestar's router on this scope
            if route is None and isinstance(template, str):
                route = template
            if route:
                current.update_name(f"{method} {route}")
                current.set_attribute("http.route", route)
            if status:
                current.set_attribute("http.response.status_code", status)
                if status >= 500:
                    _failed(current, str(status))
            if (request_id := request_ids.CURRENT.get()) is not None:
                current.set_attribute("identity.request_id", request_id)
            context.detach(token)
            current.end()

    return cast(ASGIApp, traced)
