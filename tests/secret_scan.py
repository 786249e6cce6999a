"""An opt-in pytest plugin: one whole test run scanned for the secrets it used.

``IDENTITY_SECRET_SCAN=1`` (``scripts/scan-secrets``) turns it on. Unset, every hook returns
at once, nothing is patched and its fixture is not even defined. ``tests/conftest.py`` loads it.

Recorded, in this process: every password, reset code and token the run handled.

- Requests and responses of every ``httpx`` client (the in-process ``AsyncTestClient`` and
  real HTTP to subprocesses): the strings under ``password``, ``currentPassword`` and
  ``verificationCode`` in JSON bodies (never under ``hashedPassword``: a hash), the
  ``Authorization: Bearer`` token, and ``sessionToken``, ``verificationCode`` and ``token`` in
  JSON responses. A body that is not JSON (the malformed-JSON tests) is searched for
  ``"password": "..."`` pairs.
- The same fields in the protobuf messages of the ``grpcio`` stubs and of connectrpc's
  clients (its ``compat`` codecs), and in the bodies of the ZITADEL Python SDK.
- Every token (``api.domain.auth.new_token``: sessions and PATs) and reset code
  (``api.repositories.codes.generate_code``) made in this process, returned to a test or not:
  a code sent as a link never is.

Tokens that ``identity`` subprocesses print are recorded when the tests use them as Bearer
tokens. Values shorter than ``MIN_LENGTH`` characters, and those ``not_a_secret`` names, are
counted but not looked for.

Scanned at the end of the session:

- every log record of this process, formatted: message, exception, stack and extra fields.
  The ``identity``, ``api``, ``workers``, ``celery`` and ``kombu`` loggers are read at DEBUG
  whatever their level: a record below the level it would have had is kept here and goes no
  further, so ``caplog`` and every handler see exactly what they would have;
- the logs of subprocesses: every ``*.log`` under pytest's base temporary directory (the
  worker stacks' of ``tests/workers_support.py``, honcho's, Flower's), the log of each
  ``identity serve`` of ``tests/rpc_support.py`` (handed in by ``keep_log`` before it is
  deleted), and what any subprocess wrote to a captured stderr (the CLI's);
- the run's database, every row of every table as text (``events``, ``outbox``, and the
  rest: sessions and PATs hold digests), read before ``database_url`` drops it, and the
  values of the run's Redis keys;
- broker messages: every task published in this process (Celery's ``before_task_publish``:
  body, headers, properties), and every write command any client (relay, beat, worker) sent
  to a private broker of ``tests/workers_support.Broker``, read with ``MONITOR`` from the
  moment it starts, with the messages' base64 bodies decoded.

A plain secret is looked for as is, URL-encoded and JSON-escaped; a code (6 letters or
digits) as a word in any case (also right after a ``%XX`` escape). The report
(``var/secret-scan.json``, or ``IDENTITY_SECRET_SCAN_REPORT``) holds the counts and the
findings: where, which kind, in which form, and a masked prefix, never a secret. A finding
fails the session.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

ENABLE_ENV = "IDENTITY_SECRET_SCAN"
REPORT_ENV = "IDENTITY_SECRET_SCAN_REPORT"
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REPORT = ROOT / "var" / "secret-scan.json"

MIN_LENGTH = 6
# Values the tests send that are not secrets although they sit where secrets go. Every other
# value of MIN_LENGTH or more sent as a password, code or token is looked for, the
# placeholders of the negative tests included ("not-a-token", "ABC123", "Wr0ng!Passw0rd": one
# of them in a log would be a request's secret logged). Add a value here only with the reason
# it appears in the service's output legitimately.
NOT_SECRETS: frozenset[str] = frozenset()


def not_a_secret(value: str) -> bool:
    """``NOT_SECRETS``, and one character repeated: the policy and length probes
    (``"--------"``, ``"x" * 201``), which banners and separators contain (Celery's banner is
    a row of dashes)."""
    return value in NOT_SECRETS or (len(value) >= MIN_LENGTH and len(set(value)) == 1)


# Keys of JSON bodies and protobuf fields whose string value is a secret, and its kind.
SECRET_FIELDS: dict[str, str] = {
    "password": "password",
    "currentPassword": "password",
    "current_password": "password",
    "verificationCode": "code",
    "verification_code": "code",
    "sessionToken": "token",
    "session_token": "token",
    "token": "token",
}
# A hash, not a secret to look for.
SKIPPED_FIELDS = frozenset({"hashedPassword", "hashed_password"})
KINDS = ("password", "code", "token")

# The loggers read at DEBUG whatever their level (prefixes of logger names).
DEBUG_LOGGERS = ("identity", "api", "workers", "celery", "kombu")

_CODE_SHAPE = re.compile(r"[A-Za-z0-9]{6}")
_CODE_WORD = re.compile(r"(?:(?<![A-Za-z0-9])|(?<=%[0-9A-Fa-f]{2}))([A-Za-z0-9]{6})(?![A-Za-z0-9])")
# In bodies that are not JSON: "password": "...", 'currentPassword': '...'.
_LOOSE_FIELD = re.compile(
    r"""["'](password|currentPassword|verificationCode)["']\s*:\s*(["'])((?:(?!\2).){1,512})\2"""
)


def active() -> bool:
    return os.environ.get(ENABLE_ENV, "") == "1"


# --- what is looked for, and how --------------------------------------------------------------


def mask(value: str, kind: str) -> str:
    """What a report may show of a secret: a code's first character, three of the others."""
    shown = 1 if kind == "code" else 3
    prefix = value[:shown].encode("utf-8", "backslashreplace").decode("utf-8")
    return f"{prefix}… ({len(value)} chars)"


def forms(value: str) -> dict[str, str]:
    """The forms a plain secret is looked for in, each with its name."""
    found: dict[str, str] = {value: "as is"}
    for name, form in (
        ("URL-encoded", quote(value, safe="", errors="surrogatepass")),
        ("URL-encoded", quote(value, errors="surrogatepass")),
        ("URL-encoded", quote_plus(value, errors="surrogatepass")),
        ("JSON-escaped", json.dumps(value)[1:-1]),
        ("JSON-escaped", json.dumps(value, ensure_ascii=False)[1:-1]),
    ):
        found.setdefault(form, name)
    return {form: name for form, name in found.items() if len(form) >= MIN_LENGTH}


@dataclass(frozen=True)
class Finding:
    where: str
    kind: str
    form: str
    secret: str  # masked

    def as_dict(self) -> dict[str, str]:
        return {"where": self.where, "kind": self.kind, "form": self.form, "secret": self.secret}

    def __str__(self) -> str:
        return f"a {self.kind} ({self.secret}, {self.form}) in {self.where}"


class Secrets:
    """The secrets recorded: plain ones (passwords, tokens) and codes, upper-cased."""

    def __init__(self) -> None:
        self.plain: dict[str, str] = {}
        self.codes: dict[str, str] = {}
        self.too_short: set[str] = set()
        self.not_secrets: set[str] = set()

    def add(self, kind: str, value: object) -> None:
        if not isinstance(value, str):
            return
        if not_a_secret(value):
            self.not_secrets.add(value)
        elif len(value) < MIN_LENGTH:
            self.too_short.add(value)
        elif kind == "code" and _CODE_SHAPE.fullmatch(value):
            self.codes.setdefault(value.upper(), kind)
        else:
            self.plain.setdefault(value, kind)

    def counts(self) -> dict[str, int]:
        by_kind = Counter([*self.plain.values(), *self.codes.values()])
        counts = {kind: by_kind.get(kind, 0) for kind in KINDS}
        counts["total"] = sum(counts.values())
        counts["ignored_shorter_than_6"] = len(self.too_short)
        counts["ignored_not_secrets"] = len(self.not_secrets)
        return counts


class Scanner:
    """Every recorded secret in every form, the plain ones indexed by their first characters
    so that one pass over a text finds them all."""

    def __init__(self, secrets: Secrets) -> None:
        self._index: dict[str, list[tuple[str, str, str, str]]] = {}
        for value, kind in list(secrets.plain.items()):
            for form, name in forms(value).items():
                entry = (form, name, value, kind)
                self._index.setdefault(form[:MIN_LENGTH], []).append(entry)
        self._codes = dict(secrets.codes)

    def scan(self, where: str, text: str) -> list[Finding]:
        found: dict[tuple[str, str], Finding] = {}
        index = self._index
        if index:
            get = index.get
            for i in range(len(text) - MIN_LENGTH + 1):
                candidates = get(text[i : i + MIN_LENGTH])
                if candidates is None:
                    continue
                for form, name, value, kind in candidates:
                    if text.startswith(form, i):
                        found[(value, name)] = Finding(where, kind, name, mask(value, kind))
        if self._codes:
            for match in _CODE_WORD.finditer(text):
                code = match.group(1).upper()
                code_kind = self._codes.get(code)
                if code_kind is not None:
                    finding = Finding(where, code_kind, "any case", mask(code, code_kind))
                    found[(code, "code")] = finding
        return list(found.values())


# --- recording secrets from requests and responses --------------------------------------------


def record_json(secrets: Secrets, value: Any) -> None:
    """The secrets of a decoded JSON body: strings under ``SECRET_FIELDS`` keys, anywhere
    (iteratively: the nesting tests send bodies thousands of levels deep)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if key in SKIPPED_FIELDS:
                    continue
                if isinstance(child, str) and key in SECRET_FIELDS:
                    secrets.add(SECRET_FIELDS[key], child)
                elif isinstance(child, dict | list):
                    stack.append(child)
        elif isinstance(item, list):
            stack.extend(child for child in item if isinstance(child, dict | list))


def record_body(secrets: Secrets, body: bytes | str | None) -> None:
    if not body:
        return
    try:
        decoded = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        for match in _LOOSE_FIELD.finditer(text):
            secrets.add(SECRET_FIELDS[match.group(1)], match.group(3))
    else:
        record_json(secrets, decoded)


def record_authorization(secrets: Secrets, header: str | None) -> None:
    if header and header[:7].lower() == "bearer ":
        secrets.add("token", header[7:].strip())


def record_proto(secrets: Secrets, message: Any) -> None:
    """The secrets of a protobuf message (``SECRET_FIELDS`` by field name), recursively."""
    list_fields = getattr(message, "ListFields", None)
    if list_fields is None:
        return
    for field, value in list_fields():
        if field.name in SKIPPED_FIELDS:
            continue
        values = value if _is_repeated(field) else [value]
        for item in values:
            if isinstance(item, str) and field.name in SECRET_FIELDS:
                secrets.add(SECRET_FIELDS[field.name], item)
            else:
                record_proto(secrets, item)


def _is_repeated(field: Any) -> bool:
    repeated = getattr(field, "is_repeated", None)
    if isinstance(repeated, bool):
        return repeated
    return bool(getattr(field, "label", 0) == 3)  # LABEL_REPEATED


# --- where secrets may be: sources -----------------------------------------------------------


@dataclass
class Source:
    category: str
    where: str
    text: str


# Celery's and kombu's writes to a broker that carry data (reads, pings and polls carry none).
_BROKER_WRITES = frozenset(
    {b"LPUSH", b"RPUSH", b"LSET", b"PUBLISH", b"SET", b"SETEX", b"HSET", b"HMSET", b"SADD",
     b"ZADD", b"XADD", b"EVAL", b"EVALSHA"}
)  # fmt: skip
_MONITOR_ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"', re.S)
_MONITOR_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|.)", re.S)
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b"}


def parse_monitor_line(line: bytes) -> list[bytes]:
    """The arguments of one line of Redis ``MONITOR``:
    ``<time> [<db> <client>] "ARG" "ARG" ...``, each unescaped."""
    _, _, command = line.partition(b"] ")

    def unescape(match: re.Match[bytes]) -> bytes:
        escaped = match.group(1)
        if escaped[:1] == b"x" and len(escaped) == 3:
            return bytes([int(escaped[1:], 16)])
        return _ESCAPES.get(escaped, escaped)

    return [_MONITOR_ESCAPE.sub(unescape, arg) for arg in _MONITOR_ARG.findall(command)]


def broker_text(args: list[bytes]) -> str | None:
    """The text of a broker write command, with the base64 bodies of kombu's messages
    decoded; None for a command that carries no data."""
    if not args or args[0].upper() not in _BROKER_WRITES:
        return None
    parts = [arg.decode("utf-8", "replace") for arg in args]
    for part in parts[1:]:
        if not part.startswith("{"):
            continue
        try:
            message = json.loads(part)
        except ValueError:
            continue
        body = message.get("body") if isinstance(message, dict) else None
        if isinstance(body, str):
            try:
                parts.append(base64.b64decode(body, validate=True).decode("utf-8", "replace"))
            except (binascii.Error, ValueError):
                pass
    return " ".join(parts)


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=repr)


# --- the run -------------------------------------------------------------------------------

_STANDARD_RECORD_KEYS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)
_FORMATTER = logging.Formatter()


def record_text(record: logging.LogRecord) -> str:
    """A log record as a handler could write it: message, exception, stack, extra fields."""
    try:
        parts = [record.getMessage()]
    except Exception:
        parts = [f"{record.msg!r} {record.args!r}"]
    if record.exc_info:
        parts.append(_FORMATTER.formatException(record.exc_info))
    if record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(record.stack_info)
    extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_RECORD_KEYS}
    if extra:
        parts.append(_json_text(extra))
    return "\n".join(parts)


class _Run:
    """Everything recorded during one active session."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.secrets = Secrets()
        self.sources: list[Source] = []
        self.test = "(collection)"
        self.basetemp: Path | None = None
        self.kept_logs: set[Path] = set()
        self.monitors: list[threading.Thread] = []
        self.monitor_errors = 0
        self.recorder_errors = 0
        self.stores_read = False
        self.started = time.time()
        self.report: dict[str, Any] | None = None
        self.findings: list[Finding] = []
        self.undo: list[Callable[[], None]] = []  # run in reverse at unconfigure

    def patch(self, owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        """``owner.name = make(original)``, undone at unconfigure."""
        original = getattr(owner, name)
        self.undo.append(lambda: setattr(owner, name, original))
        setattr(owner, name, make(original))

    def record(self, function: Callable[..., None], *args: Any) -> None:
        """``function(self.secrets, *args)``; a recorder's bug is counted, never a test's."""
        try:
            function(self.secrets, *args)
        except Exception:
            self.recorder_errors += 1
            if self.recorder_errors <= 5:
                traceback.print_exc()

    def add(self, category: str, where: str, text: str) -> None:
        self.sources.append(Source(category, where, text))

    def where(self, what: str) -> str:
        return f"{what} [{self.test}]"


_RUN: _Run | None = None


def keep_log(path: Path, name: str) -> None:
    """Called with a subprocess's log file before it is deleted: kept for the scan (when
    active; a no-op otherwise)."""
    run = _RUN
    if run is None or not path.exists():
        return
    run.kept_logs.add(path.resolve())
    run.add("subprocess log", run.where(f"{name} log {path.name}"), _read(path))


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8", "replace")


# --- installing the recorders ---------------------------------------------------------------


def _install(run: _Run) -> None:
    _install_logging(run)
    _install_httpx(run)
    _install_rpc_clients(run)
    _install_celery(run)
    _install_subprocess(run)
    _install_broker_monitor(run)


def _install_logging(run: _Run) -> None:
    enabled = logging.Logger.isEnabledFor
    handle = logging.Logger.handle

    forced_names: dict[str, bool] = {}

    def forced(name: str) -> bool:
        known = forced_names.get(name)
        if known is None:
            known = any(name == p or name.startswith(p + ".") for p in DEBUG_LOGGERS)
            forced_names[name] = known
        return known

    def is_enabled_for(self: logging.Logger, level: int) -> bool:
        if forced(self.name) and self.manager.disable < level:
            return True
        return enabled(self, level)

    def handle_record(self: logging.Logger, record: logging.LogRecord) -> None:
        if not self.disabled:
            level = record.levelname
            run.add("log", run.where(f"log record {record.name} {level}"), record_text(record))
        # A record made only because of is_enabled_for above stops here.
        if record.name == self.name and not enabled(self, record.levelno):
            return
        handle(self, record)

    run.patch(logging.Logger, "isEnabledFor", lambda _: is_enabled_for)
    run.patch(logging.Logger, "handle", lambda _: handle_record)


def _install_httpx(run: _Run) -> None:
    import httpx

    def see_request(request: httpx.Request) -> None:
        run.record(record_authorization, request.headers.get("authorization"))
        try:
            run.record(record_body, request.content)
        except httpx.RequestNotRead:
            pass

    def see_response(response: httpx.Response) -> None:
        try:
            content = response.content
        except httpx.ResponseNotRead:
            return
        if "json" in response.headers.get("content-type", ""):
            run.record(record_body, content)

    def async_send(original: Any) -> Any:
        async def send(self: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> Any:
            see_request(request)
            response = await original(self, request, **kw)
            see_response(response)
            return response

        return send

    def sync_send(original: Any) -> Any:
        def send(self: httpx.Client, request: httpx.Request, **kw: Any) -> Any:
            see_request(request)
            response = original(self, request, **kw)
            see_response(response)
            return response

        return send

    run.patch(httpx.AsyncClient, "send", async_send)
    run.patch(httpx.Client, "send", sync_send)


def _install_rpc_clients(run: _Run) -> None:
    """grpcio channels (serializers wrapped), connectrpc's ``compat`` codecs, the SDK's
    ``ApiClient``: each is optional."""

    def serializer(function: Any) -> Any:
        if function is None:
            return None

        def serialize(message: Any) -> Any:
            run.record(record_proto, message)
            return function(message)

        return serialize

    def deserializer(function: Any) -> Any:
        if function is None:
            return None

        def deserialize(data: Any) -> Any:
            message = function(data)
            run.record(record_proto, message)
            return message

        return deserialize

    def unary_unary(original: Any) -> Any:
        def method(
            self: Any,
            path: str,
            request_serializer: Any = None,
            response_deserializer: Any = None,
            *args: Any,
            **kw: Any,
        ) -> Any:
            return original(
                self, path, serializer(request_serializer), deserializer(response_deserializer),
                *args, **kw,
            )  # fmt: skip

        return method

    try:
        import grpc._channel
        import grpc.aio._channel
    except ImportError:
        pass
    else:
        run.patch(grpc.aio._channel.Channel, "unary_unary", unary_unary)
        run.patch(grpc._channel.Channel, "unary_unary", unary_unary)

    def encode(original: Any) -> Any:
        def method(self: Any, message: Any) -> Any:
            run.record(record_proto, message)
            return original(self, message)

        return method

    def decode(original: Any) -> Any:
        def method(self: Any, data: Any, message_class: Any) -> Any:
            message = original(self, data, message_class)
            run.record(record_proto, message)
            return message

        return method

    try:
        from connectrpc.compat import _codec as compat
    except ImportError:
        pass
    else:
        for codec in (compat.ProtoBinaryCodec, compat.ProtoJSONCodec):
            run.patch(codec, "encode", encode)
            run.patch(codec, "decode", decode)

    def call_api(original: Any) -> Any:
        def method(self: Any, method_: str, url: str, header_params: Any = None,
                   body: Any = None, *args: Any, **kw: Any) -> Any:  # fmt: skip
            for key, value in (header_params or {}).items():
                if str(key).lower() == "authorization":
                    run.record(record_authorization, str(value))
            if isinstance(body, dict | list):
                run.record(record_json, body)
            elif isinstance(body, str | bytes):
                run.record(record_body, body)
            return original(self, method_, url, header_params, body, *args, **kw)

        return method

    def response_deserialize(original: Any) -> Any:
        def method(self: Any, response_data: Any, *args: Any, **kw: Any) -> Any:
            data = getattr(response_data, "data", None)
            if isinstance(data, bytes | str):
                run.record(record_body, data)
            return original(self, response_data, *args, **kw)

        return method

    try:
        from zitadel_client.api_client import ApiClient
    except ImportError:
        pass
    else:
        run.patch(ApiClient, "call_api", call_api)
        run.patch(ApiClient, "response_deserialize", response_deserialize)


def _install_generators(run: _Run) -> None:
    """Every token and code made in this process, wherever a module holds the function.
    After collection: the test modules are imported by then."""
    from api.domain import auth
    from api.repositories import codes

    for module, name, kind in ((auth, "new_token", "token"), (codes, "generate_code", "code")):
        original = getattr(module, name)
        if getattr(original, "_secret_scan", False):
            continue

        def make(function: Callable[..., str], kind: str = kind) -> Callable[..., str]:
            def generate(*args: Any, **kwargs: Any) -> str:
                value = function(*args, **kwargs)
                run.secrets.add(kind, value)
                return value

            generate._secret_scan = True  # type: ignore[attr-defined]
            return generate

        wrapper = make(original)

        def replace(_original: object, w: Callable[..., str] = wrapper) -> Callable[..., str]:
            return w

        for holder in _modules_holding(original):
            run.patch(holder, name, replace)


def _modules_holding(function: object) -> Iterator[ModuleType]:
    for module_name, module in list(sys.modules.items()):
        if module is None or not module_name.startswith(("api.", "workers.", "tests.")):
            continue
        for value in list(vars(module).values()):
            if value is function:
                yield module
                break


def _install_celery(run: _Run) -> None:
    try:
        from celery.signals import before_task_publish
    except ImportError:
        return

    def published(
        sender: Any = None,
        body: Any = None,
        headers: Any = None,
        properties: Any = None,
        exchange: Any = None,
        routing_key: Any = None,
        **_: Any,
    ) -> None:
        text = _json_text(
            {"task": sender, "body": body, "headers": headers, "properties": properties,
             "exchange": exchange, "routing_key": routing_key}
        )  # fmt: skip
        run.add("publish", run.where(f"in-process publish of {sender}"), text)

    before_task_publish.connect(published, weak=False)

    def disconnect() -> None:
        before_task_publish.disconnect(published)

    run.undo.append(disconnect)


def _install_subprocess(run: _Run) -> None:
    def communicate(original: Any) -> Any:
        def method(self: subprocess.Popen[Any], *args: Any, **kw: Any) -> Any:
            out, err = original(self, *args, **kw)
            if err:
                text = err.decode("utf-8", "replace") if isinstance(err, bytes) else str(err)
                program = self.args[0] if isinstance(self.args, list | tuple) else self.args
                name = Path(str(program)).name
                run.add("subprocess stderr", run.where(f"stderr of {name}"), text)
            return out, err

        return method

    run.patch(subprocess.Popen, "communicate", communicate)


def _install_broker_monitor(run: _Run) -> None:
    from tests import workers_support

    def start(original: Any) -> Any:
        def method(self: workers_support.Broker) -> Any:
            started = original(self)
            _monitor(run, self.port)
            return started

        return method

    run.patch(workers_support.Broker, "start", start)


def _monitor(run: _Run, port: int) -> None:
    """Every command sent to the broker on ``port`` from now on, until it stops."""
    import redis

    connection = redis.Connection(  # type: ignore[no-untyped-call]
        host="127.0.0.1", port=port, socket_connect_timeout=5
    )
    connection.connect()  # type: ignore[no-untyped-call]
    connection.send_command("MONITOR")  # type: ignore[no-untyped-call]
    connection.read_response()  # OK: from here on, nothing is missed

    def read() -> None:
        try:
            while True:
                line = connection.read_response()
                if not isinstance(line, bytes):
                    continue
                args = parse_monitor_line(line)
                text = broker_text(args)
                if text is not None:
                    verb = args[0].decode("ascii", "replace").upper()
                    run.add("broker", run.where(f"broker :{port} {verb}"), text)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            pass  # the broker stopped
        except Exception:
            run.monitor_errors += 1
            traceback.print_exc()
        finally:
            connection.disconnect()  # type: ignore[no-untyped-call]

    thread = threading.Thread(target=read, name=f"secret-scan-broker-{port}", daemon=True)
    thread.start()
    run.monitors.append(thread)


# --- the stores, read before the fixtures that made them clean up ----------------------------


async def _database_sources(url: str) -> list[Source]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        tables = await conn.fetch(
            "SELECT schemaname, tablename FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        )
        found: list[Source] = []
        for table in tables:
            schema, name = table["schemaname"], table["tablename"]
            quoted = '"{}"."{}"'.format(schema.replace('"', '""'), name.replace('"', '""'))
            rows = await conn.fetch(f"SELECT t::text AS row FROM {quoted} AS t")
            found += [Source(f"db {name}", f"{name} row {i}", r["row"]) for i, r in enumerate(rows)]
        return found
    finally:
        await conn.close()


def _redis_sources(url: str, prefix: str) -> list[Source]:
    import redis

    found: list[Source] = []
    with redis.Redis.from_url(url) as client:
        for key in client.scan_iter(match=prefix + "*", count=1000):
            kind = client.type(key).decode()
            value: Any
            if kind == "string":
                value = client.get(key)
            elif kind == "hash":
                value = client.hgetall(key)
            elif kind == "list":
                value = client.lrange(key, 0, -1)
            elif kind == "set":
                value = client.smembers(key)
            elif kind == "zset":
                value = client.zrange(key, 0, -1, withscores=True)
            else:
                value = kind
            text = _json_text(_decoded(value))
            found.append(Source("redis", f"redis key {key.decode('utf-8', 'replace')}", text))
    return found


def _decoded(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {_decoded(k): _decoded(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_decoded(v) for v in value]
    return value


if active():

    @pytest.fixture(scope="session", autouse=True)
    def _secret_scan_stores(
        database_url: str, redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[None]:
        """Torn down before ``database_url`` and ``redis_prefix``, which it depends on."""
        from tests.conftest import REDIS_URL

        run = _RUN
        assert run is not None
        run.basetemp = tmp_path_factory.getbasetemp()
        yield
        run.sources += asyncio.run(_database_sources(database_url))
        run.sources += _redis_sources(REDIS_URL, redis_prefix)
        run.stores_read = True


# --- the scan and its report ----------------------------------------------------------------


def scan(run: _Run) -> dict[str, Any]:
    if run.basetemp is not None and run.basetemp.is_dir():
        for path in sorted(run.basetemp.rglob("*.log")):
            if path.is_file() and path.resolve() not in run.kept_logs:
                relative = path.relative_to(run.basetemp)
                run.add("subprocess log", f"subprocess log {relative}", _read(path))
    for thread in run.monitors:
        thread.join(timeout=2)

    secrets = run.secrets
    scanner = Scanner(secrets)
    started = time.monotonic()
    sources = list(run.sources)
    findings: list[Finding] = []
    sizes: Counter[str] = Counter()
    items: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    for source in sources:
        items[source.category] += 1
        sizes[source.category] += len(source.text.encode("utf-8", "replace"))
        lines[source.category] += source.text.count("\n") + 1
        findings += scanner.scan(source.where, source.text)
    run.findings = findings

    tables = {c.removeprefix("db "): n for c, n in sorted(items.items()) if c.startswith("db ")}
    db_bytes = sum(n for c, n in sizes.items() if c.startswith("db "))
    report: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(run.started)),
        "scan_seconds": round(time.monotonic() - started, 1),
        "secrets_recorded": secrets.counts(),
        "scanned": {
            "log_records": items["log"],
            "log_lines": lines["log"],
            "log_bytes": sizes["log"],
            "subprocess_log_files": items["subprocess log"],
            "subprocess_log_lines": lines["subprocess log"],
            "subprocess_log_bytes": sizes["subprocess log"],
            "subprocess_stderr_captures": items["subprocess stderr"],
            "subprocess_stderr_bytes": sizes["subprocess stderr"],
            "database_read": run.stores_read,
            "events": tables.get("events", 0),
            "outbox_rows": tables.get("outbox", 0),
            "database_rows_by_table": tables,
            "database_bytes": db_bytes,
            "redis_keys": items["redis"],
            "broker_messages_published_in_process": items["publish"],
            "broker_write_commands_monitored": items["broker"],
            "broker_bytes": sizes["broker"] + sizes["publish"],
            "broker_monitor_errors": run.monitor_errors,
            "recorder_errors": run.recorder_errors,
        },
        "findings": [f.as_dict() for f in findings],
        "ok": not findings,
    }
    run.report = report
    path = Path(os.environ.get(REPORT_ENV) or DEFAULT_REPORT)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    report["path"] = str(path)
    return report


# --- hooks ----------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    global _RUN
    if not active() or _RUN is not None:
        return
    _RUN = _Run(config)
    _install(_RUN)


def pytest_collection_finish(session: pytest.Session) -> None:
    if _RUN is not None:
        _install_generators(_RUN)


def pytest_runtest_logstart(nodeid: str) -> None:
    if _RUN is not None:
        _RUN.test = nodeid


def pytest_runtest_logfinish(nodeid: str) -> None:
    if _RUN is not None:
        _RUN.test = f"after {nodeid}"


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _RUN is None or _RUN.report is not None:
        return
    _RUN.test = "(session end)"
    try:
        scan(_RUN)
    except Exception:
        traceback.print_exc()
        print("secret scan: the scan itself failed; no verdict", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
        return
    if _RUN.findings and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    run = _RUN
    if run is None or run.report is None:
        return
    report = run.report
    write = terminalreporter.write_line
    terminalreporter.section("secret scan", sep="=", bold=True, red=bool(run.findings))
    write(f"secrets recorded: {_pairs(report['secrets_recorded'])}")
    scanned = {k: v for k, v in report["scanned"].items() if not isinstance(v, dict)}
    write(f"scanned: {_pairs(scanned)}")
    write(f"database rows by table: {_pairs(report['scanned']['database_rows_by_table'])}")
    for finding in run.findings[:200]:
        write(f"FOUND {finding}", red=True)
    if len(run.findings) > 200:
        write(f"... and {len(run.findings) - 200} more findings", red=True)
    verdict = f"{len(run.findings)} finding(s)" if run.findings else "no secret found"
    write(f"{verdict}; report: {report['path']}", red=bool(run.findings), green=not run.findings)


def _pairs(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def pytest_unconfigure(config: pytest.Config) -> None:
    global _RUN
    if _RUN is not None and _RUN.config is config:
        for undo in reversed(_RUN.undo):
            undo()
        _RUN = None
