"""OpenTelemetry tracing (issue 12): one trace from the HTTP request through the change's
statement to the worker's span for the e-mail it caused, exported over OTLP/HTTP to a
receiver in this test; and nothing at all without the ``OTEL_*`` variables.

The API (``identity serve``), the relay and a Celery worker are real processes (``Stack``);
the receiver is a plain HTTP server decoding ``ExportTraceServiceRequest`` protobufs.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from api import tracing
from api.rpc.gen.zitadel.user.v2 import password_pb2
from api.rpc.gen.zitadel.user.v2 import user_service_pb2 as user_pb
from api.rpc.gen.zitadel.user.v2 import user_service_pb2_grpc as user_grpc
from api.settings import Settings
from tests.support import STRONG_PASSWORD, World, bearer
from tests.workers_support import ROOT, Stack, await_until, stack_for

pytestmark = pytest.mark.slow

NEW_PASSWORD = "Traced-Pa55word!"


@dataclass
class Exported:
    """One span as the receiver got it, with its resource's service name."""

    service: str
    span: Span

    @property
    def attributes(self) -> dict[str, Any]:
        return {kv.key: _value(kv.value) for kv in self.span.attributes}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def _strings(values: Any) -> Iterator[str]:
    if isinstance(values, dict):
        for key, value in values.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(values, list):
        for value in values:
            yield from _strings(value)
    else:
        yield str(values)


def _attrs(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


class Receiver:
    """An OTLP/HTTP trace receiver (``POST /v1/traces``, protobuf) on a free port."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.lock:
                    receiver.requests.append(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self) -> list[Exported]:
        with self.lock:
            requests = list(self.requests)
        found = []
        for request in requests:
            for resource_spans in request.resource_spans:
                service = str(_attrs(resource_spans.resource.attributes).get("service.name"))
                for scope_spans in resource_spans.scope_spans:
                    found.extend(Exported(service, s) for s in scope_spans.spans)
        return found

    def all_strings(self) -> list[str]:
        """Every string a span or its resource carries: names, attribute keys and values,
        events, links, status messages."""
        with self.lock:
            requests = list(self.requests)
        out: list[str] = []
        for request in requests:
            for resource_spans in request.resource_spans:
                out.extend(_strings(_attrs(resource_spans.resource.attributes)))
                for scope_spans in resource_spans.scope_spans:
                    for s in scope_spans.spans:
                        out.append(s.name)
                        out.append(s.status.message)
                        out.append(s.trace_state)
                        out.extend(_strings(_attrs(s.attributes)))
                        for event in s.events:
                            out.append(event.name)
                            out.extend(_strings(_attrs(event.attributes)))
                        for link in s.links:
                            out.extend(_strings(_attrs(link.attributes)))
        return out


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


@contextlib.contextmanager
def _otel_environment(**values: str) -> Iterator[None]:
    """Exactly these OTEL_* variables for the processes started inside (each copies the
    environment when it starts)."""
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("OTEL_")]:
            mp.delenv(key)
        for key, value in values.items():
            mp.setenv(key, value)
        yield


def _traced(receiver: Receiver) -> contextlib.AbstractContextManager[None]:
    return _otel_environment(
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="100",  # export within a tenth of a second
    )


@pytest.fixture(scope="module")
def stack(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory, receiver: Receiver
) -> Iterator[Stack]:
    """Worker and relay with tracing on (the OTEL_* variables of their environment)."""
    with stack_for(base_settings, tmp_path_factory.mktemp("tracing")) as s:
        with _traced(receiver):
            s.start_worker()
            s.start_relay()
        yield s


@pytest.fixture(scope="module")
def api_base(stack: Stack, receiver: Receiver) -> str:
    """The base URL of an ``identity serve`` with tracing on."""
    with _traced(receiver):
        _, base = stack.start_api()
    return base


@pytest.fixture
async def tworld(
    stack: Stack, api_base: str, make_settings: Callable[..., Settings]
) -> AsyncIterator[World]:
    """A world whose HTTP calls go to the traced API process."""
    settings = make_settings(broker_url=stack.broker.url, smtp_url=stack.sink.url)
    async with httpx.AsyncClient(base_url=api_base, timeout=15) as client:
        w = World(client, settings)
        await w.open()
        try:
            yield w
        finally:
            await w.close()


def _hex(raw: bytes) -> str:
    return raw.hex()


async def _spans_where(
    receiver: Receiver, what: str, predicate: Callable[[Exported], bool]
) -> Exported:
    async def find() -> Exported | None:
        return next((e for e in receiver.spans() if predicate(e)), None)

    found = await await_until(find, 20, what, interval=0.2)
    assert found is not None
    return found


async def test_one_trace_from_request_to_email(
    stack: Stack, tworld: World, receiver: Receiver
) -> None:
    org_id, admin = await tworld.admin()
    user = await tworld.human(admin, org_id)

    # The reset: request → its statement → the worker's e-mail, one trace.
    reset = await tworld.client.post(
        f"/v2/users/{user.user_id}/password_reset",
        json={"sendLink": {"notificationType": "NOTIFICATION_TYPE_Email"}},
        headers={**bearer(admin), "X-Request-Id": "trace-reset-1"},
    )
    assert reset.status_code == 200, reset.text
    (mail,) = await stack.wait_for_mails(user.email, 1)
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    code = re.search(r"Or enter this code: (\S+)", text).group(1)  # type: ignore[union-attr]

    row = await tworld.db.fetchrow(
        "SELECT id, payload FROM outbox WHERE aggregate_id = $1 ORDER BY id DESC LIMIT 1",
        user.user_id,
    )
    payload = row["payload"]
    assert payload["requestId"] == "trace-reset-1"
    traceparent = payload[tracing.TRACEPARENT]
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", traceparent), traceparent

    server = await _spans_where(
        receiver,
        "the API's server span of the reset",
        lambda e: (
            e.span.kind == Span.SPAN_KIND_SERVER
            and e.attributes.get("identity.request_id") == "trace-reset-1"
        ),
    )
    assert server.service == "identity-api"
    assert server.span.name == "POST /v2/users/{user_id}/password_reset"
    assert server.attributes["http.route"] == "/v2/users/{user_id}/password_reset"
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["url.path"] == f"/v2/users/{user.user_id}/password_reset"
    trace_id = server.span.trace_id

    command = await _spans_where(
        receiver,
        "the span of the reset's statement",
        lambda e: e.span.trace_id == trace_id and e.span.parent_span_id == server.span.span_id,
    )
    assert command.service == "identity-api"
    assert command.span.name == "command user.human.password.code.added"
    assert command.span.kind == Span.SPAN_KIND_CLIENT
    assert command.attributes["db.system.name"] == "postgresql"
    # The row stores the statement's context: the worker's span is the statement's child.
    assert traceparent.startswith(f"00-{_hex(trace_id)}-{_hex(command.span.span_id)}-")
    assert int(traceparent[-2:], 16) & 1  # sampled

    delivery = await _spans_where(
        receiver,
        "the worker's span of the reset e-mail",
        lambda e: (
            e.span.name == "deliver e-mail" and e.attributes.get("identity.outbox.id") == row["id"]
        ),
    )
    assert delivery.service == "identity-worker"
    assert delivery.span.kind == Span.SPAN_KIND_CONSUMER
    assert delivery.span.trace_id == trace_id
    assert delivery.span.parent_span_id == command.span.span_id
    assert delivery.attributes["identity.mail.outcome"] == "sent"
    assert delivery.attributes["identity.request_id"] == "trace-reset-1"
    assert delivery.attributes["identity.task"] == "identity.send_password_reset_email"
    # The e-mail span lies within the trace's time: after the statement began.
    assert delivery.span.start_time_unix_nano >= command.span.start_time_unix_nano

    # A query string never reaches a span (the reset page's links carry the code there).
    probe = await tworld.client.get("/healthz", params={"code": code, "userID": user.user_id})
    assert probe.status_code == 200
    healthz = await _spans_where(
        receiver,
        "the server span of the probe",
        lambda e: e.attributes.get("identity.request_id") == probe.headers["x-request-id"],
    )
    assert healthz.attributes["url.path"] == "/healthz"
    assert healthz.span.name == "GET /healthz"

    # Redeem the code: a second trace, ending in the "password changed" e-mail.
    change = await tworld.client.post(
        f"/v2/users/{user.user_id}/password",
        json={"newPassword": {"password": NEW_PASSWORD}, "verificationCode": code},
        headers={**bearer(admin), "X-Request-Id": "trace-change-1"},
    )
    assert change.status_code == 200, change.text
    await stack.wait_for_mails(user.email, 2)
    changed = await _spans_where(
        receiver,
        "the worker's span of the change e-mail",
        lambda e: (
            e.span.name == "deliver e-mail"
            and e.attributes.get("identity.request_id") == "trace-change-1"
        ),
    )
    change_server = await _spans_where(
        receiver,
        "the API's server span of the change",
        lambda e: (
            e.span.kind == Span.SPAN_KIND_SERVER
            and e.attributes.get("identity.request_id") == "trace-change-1"
        ),
    )
    assert change_server.span.name == "POST /v2/users/{user_id}/password"
    assert changed.span.trace_id == change_server.span.trace_id != trace_id
    change_command = next(
        e for e in receiver.spans() if e.span.span_id == changed.span.parent_span_id
    )
    assert change_command.span.name == "command user.human.password.changed"
    assert change_command.span.parent_span_id == change_server.span.span_id

    # Secrets stay secret: no span, attribute, event or resource carries the code, a
    # password, the token, the encrypted code or the address.
    secrets = {
        "code": code,
        "password": STRONG_PASSWORD,
        "new password": NEW_PASSWORD,
        "token": admin,
        "encrypted code": payload["encryptedCode"],
        "address": user.email,
    }
    strings = receiver.all_strings()
    assert len(strings) > 50
    for what, secret in secrets.items():
        leaks = [s for s in strings if secret in s]
        assert not leaks, f"the {what} is in a span: {leaks}"


async def test_a_grpc_call_has_its_server_span(
    tworld: World, api_base: str, receiver: Receiver
) -> None:
    """Native gRPC (h2c, on the API's port): the span is named by the RPC path and says the
    call's ``grpc-status``; the token in its metadata is in no span."""
    token = "not-a-token-but-secret-all-the-same"
    async with grpc.aio.insecure_channel(api_base.removeprefix("http://")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await user_grpc.UserServiceStub(channel).SetPassword(
                user_pb.SetPasswordRequest(
                    user_id="1", new_password=password_pb2.Password(password=NEW_PASSWORD)
                ),
                metadata=[("authorization", f"Bearer {token}"), ("x-request-id", "trace-grpc")],
            )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    rpc = await _spans_where(
        receiver,
        "the server span of the gRPC call",
        lambda e: e.attributes.get("identity.request_id") == "trace-grpc",
    )
    assert rpc.span.name == "POST /zitadel.user.v2.UserService/SetPassword"
    assert rpc.span.kind == Span.SPAN_KIND_SERVER
    assert rpc.attributes["rpc.grpc.status_code"] == 16
    assert rpc.attributes["http.route"] == "/zitadel.user.v2.UserService/SetPassword"
    assert not [s for s in receiver.all_strings() if token in s or NEW_PASSWORD in s]


async def test_off_without_otel_variables(
    stack: Stack, tworld: World, receiver: Receiver, tmp_path: Path
) -> None:
    """No ``OTEL_TRACES_EXPORTER``: an API process installs nothing and exports nothing,
    even with an endpoint and a service name set; its rows carry no trace context, so the
    (traced) worker's span for the e-mail starts a trace of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    # (redis-py imports opentelemetry.sdk.metrics when it is installed: the SDK's tracing,
    # the global tracer provider and an exporter's thread are what tracing would install.)
    probe = (
        "import json, sys, threading\n"
        "from api import main, tracing\n"
        "app = main.create_app()\n"
        "def route(scope, receive, send): ...\n"
        "found = {'enabled': tracing.enabled(),"
        " 'sdk_trace': 'opentelemetry.sdk.trace' in sys.modules,"
        " 'threads': [t.name for t in threading.enumerate()],"
        " 'middleware': tracing.asgi(route) is not route,"
        " 'span_is_noop': tracing.span('x') is tracing.span('y'),"
        " 'carrier': tracing.carrier()}\n"
        "from opentelemetry import trace\n"
        "found['provider'] = type(trace.get_tracer_provider()).__name__\n"
        "print(json.dumps(found))\n"
    )
    for extra in (
        {},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_SERVICE_NAME": "x"},
        {"OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"},
    ):
        done = subprocess.run(
            [sys.executable, "-c", probe],
            env={**stack.env(), **env, **extra},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert json.loads(done.stdout.splitlines()[-1]) == {
            "enabled": False,
            "sdk_trace": False,
            "threads": ["MainThread"],
            "provider": "ProxyTracerProvider",
            "middleware": False,
            "span_is_noop": True,
            "carrier": {},
        }, (extra, done.stderr)

    # A real API process with an endpoint but no exporter named: no span leaves it.
    with _otel_environment(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_SERVICE_NAME="identity-untraced"
    ):
        api, base = stack.start_api()
    org_id, admin = await tworld.admin()
    user = await tworld.human(admin, org_id)
    async with httpx.AsyncClient(base_url=base, timeout=15) as client:
        reset = await client.post(
            f"/v2/users/{user.user_id}/password_reset",
            json={"sendLink": {"notificationType": "NOTIFICATION_TYPE_Email"}},
            headers={**bearer(admin), "X-Request-Id": "untraced-reset-1"},
        )
    assert reset.status_code == 200, reset.text
    await stack.wait_for_mails(user.email, 1)
    row = await tworld.db.fetchrow(
        "SELECT id, payload FROM outbox WHERE aggregate_id = $1 ORDER BY id DESC LIMIT 1",
        user.user_id,
    )
    assert tracing.TRACEPARENT not in row["payload"]
    delivery = await _spans_where(
        receiver,
        "the worker's span of the untraced reset's e-mail",
        lambda e: e.attributes.get("identity.outbox.id") == row["id"],
    )
    assert delivery.span.parent_span_id == b""  # a trace of its own
    assert not [
        e
        for e in receiver.spans()
        if e.service == "identity-untraced"
        or (
            e.attributes.get("identity.request_id") == "untraced-reset-1"
            and e.span.name != "deliver e-mail"
        )
    ]
    assert "tracing on" not in api.text()


def test_exporter_names_follow_the_environment() -> None:
    assert tracing.exporter_names({}) == []
    assert tracing.exporter_names({"OTEL_TRACES_EXPORTER": ""}) == []
    assert tracing.exporter_names({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert tracing.exporter_names({"OTEL_TRACES_EXPORTER": "otlp, Console"}) == [
        "otlp",
        "console",
    ]
    assert (
        tracing.exporter_names({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "TRUE"}) == []
    )
    assert tracing.exporter_names(
        {"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "false"}
    ) == ["console"]


def test_runs_without_the_otel_packages(stack: Stack) -> None:
    """Without OpenTelemetry installed (imports refused here), asking for tracing leaves it
    off with one error line, and the service and the workers work as ever."""
    probe = (
        "import importlib.abc, sys\n"
        "class Refuse(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'opentelemetry':\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Refuse())\n"
        "from litestar.testing import TestClient\n"
        "from api import main, tracing\n"
        "import workers\n"
        "with TestClient(app=main.create_app()) as client:\n"
        "    assert client.get('/healthz').status_code == 200\n"
        "assert not tracing.enabled() and tracing.carrier() == {}\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')]\n"
        "print('served')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={**stack.env(), **env, "OTEL_TRACES_EXPORTER": "otlp"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "served"
    assert "tracing is off: OTEL_TRACES_EXPORTER=otlp cannot be served" in done.stderr
