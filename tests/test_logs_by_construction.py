"""No secret can be logged by construction (``api/logs.py``): every log call of the service
has a literal format and arguments that are not secrets by name, and an exception is logged
as its frames and type, never its text."""

from __future__ import annotations

import ast
import logging
import re
import sys
from pathlib import Path

import msgspec

from api.logs import JsonFormatter, TextFormatter

ROOT = Path(__file__).resolve().parents[1]
LEVELS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "log"}
# What a secret is called in this code base, or what may carry one (a link carries a code,
# a payload an encrypted code, a header a token).
SECRET_NAME = re.compile(
    r"password|passwd|secret|token|code|encrypted|link|template|authorization|cookie|csrf"
    r"|body|payload|header|query|key|credential",
    re.IGNORECASE,
)
# Names that match the pattern yet are never secrets: numbers and ids.
NOT_SECRET = {"status_code", "error_id", "grpc_code", "outbox_id", "token_id", "exit_code"}


def log_calls(tree: ast.AST) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in LEVELS
        and "log" in ast.unparse(node.func.value).lower()
    ]


def problems_in(tree: ast.AST, where: str) -> list[str]:
    problems = []
    for call in log_calls(tree):
        at = f"{where}:{call.lineno}"
        assert isinstance(call.func, ast.Attribute)
        args = call.args[1:] if call.func.attr == "log" else call.args
        if not args or not (isinstance(args[0], ast.Constant) and isinstance(args[0].value, str)):
            problems.append(f"{at}: the format is not a literal string")
            continue
        for arg in [*args[1:], *(k.value for k in call.keywords)]:
            for node in ast.walk(arg):
                name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
                if isinstance(name, str) and SECRET_NAME.search(name) and name not in NOT_SECRET:
                    problems.append(f"{at}: logs {name!r}")
                if isinstance(node, ast.JoinedStr):
                    problems.append(f"{at}: an f-string argument")
    return problems


def service_modules() -> list[Path]:
    return [
        path
        for package in ("api", "workers")
        for path in sorted((ROOT / package).rglob("*.py"))
        if "gen" not in path.relative_to(ROOT).parts  # generated protobuf code logs nothing
    ]


def test_every_log_call_has_a_literal_format_and_no_secret_argument() -> None:
    problems: list[str] = []
    calls = 0
    for path in service_modules():
        tree = ast.parse(path.read_text(), str(path))
        calls += len(log_calls(tree))
        problems += problems_in(tree, str(path.relative_to(ROOT)))
    assert calls >= 20  # the scan finds the calls it is meant to check
    assert not problems, "\n".join(problems)


def test_the_check_refuses_what_could_log_a_secret() -> None:
    source = """
log.info(f"user {user_id}")
log.warning("code %s", code)
log.info(message)
logger.error("changed %s", request.new_password)
log.info("link %s", f"{base}/x")
log.info("row %d of %s", outbox_id, task)
"""
    problems = problems_in(ast.parse(source), "example.py")
    assert problems == [
        "example.py:2: the format is not a literal string",
        "example.py:3: logs 'code'",
        "example.py:4: the format is not a literal string",
        "example.py:5: logs 'new_password'",
        "example.py:6: an f-string argument",
    ]


def _record_with(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        info = sys.exc_info()
    record = logging.LogRecord("identity.test", logging.ERROR, __file__, 1, "failed", (), info)
    record.request_id = "-"
    return record


def test_an_exception_is_logged_by_type_and_frames_never_its_text() -> None:
    secret = "hunter2-Passw0rd!-ABC123"
    try:
        try:
            raise KeyError(secret)
        except KeyError as inner:
            raise ValueError(f"could not use {secret}") from inner
    except ValueError as exc:
        record = _record_with(exc)
    for formatter in (TextFormatter(), JsonFormatter("api")):
        line = formatter.format(record)
        assert secret not in line
        assert "ValueError <- KeyError" in line
        assert "test_logs_by_construction.py" in line  # the frames are there
    parsed = msgspec.json.decode(JsonFormatter("api").format(record))
    assert parsed["message"] == "failed" and "ValueError" in parsed["exception"]
