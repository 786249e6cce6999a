"""The secret scan's own detection (``tests/secret_scan.py``, on with IDENTITY_SECRET_SCAN=1):
what it records from requests and responses, and that it finds a recorded secret in any of
the forms it looks for, reporting it masked."""

from __future__ import annotations

import base64
import json
import logging
import sys
from urllib.parse import quote, quote_plus

from tests.secret_scan import (
    Finding,
    Scanner,
    Secrets,
    broker_text,
    parse_monitor_line,
    record_body,
    record_text,
)

PASSWORD = 'S3cret!"pass word/é'
TOKEN = "tGq2Hh7Zy1x-Kd0_aP4eVw3nB8sLm5oQrT6uJ9iC2fE"
CODE = "K7Q2ZD"


def recorded() -> Secrets:
    secrets = Secrets()
    secrets.add("password", PASSWORD)
    secrets.add("token", TOKEN)
    secrets.add("code", CODE.lower())  # a test may send a code in lower case
    return secrets


def found(text: str) -> list[Finding]:
    return Scanner(recorded()).scan("somewhere", text)


def test_nothing_is_found_in_clean_text() -> None:
    text = "user 312345678901234567 changed the password; code K7Q2Z, K7Q2ZDX, XK7Q2ZD\n" * 50
    assert found(text) == []


def test_each_secret_is_found_as_is_and_reported_masked() -> None:
    text = f"INFO login {PASSWORD} with Bearer {TOKEN} and code {CODE}"
    findings = found(text)
    assert {(f.kind, f.form) for f in findings} == {
        ("password", "as is"),
        ("token", "as is"),
        ("code", "any case"),
    }
    report = json.dumps([f.as_dict() for f in findings]) + " ".join(map(str, findings))
    for secret in (PASSWORD, TOKEN, CODE, json.dumps(PASSWORD)[1:-1]):
        assert secret not in report
    assert {f.secret for f in findings} == {"S3c… (19 chars)", "tGq… (43 chars)", "K… (6 chars)"}
    assert all(f.where == "somewhere" for f in findings)


def test_url_encoded_and_json_escaped_forms_are_found() -> None:
    for text, form in [
        (f"GET /reset?p={quote(PASSWORD, safe='')}", "URL-encoded"),
        (f"GET /reset?p={quote(PASSWORD)}", "URL-encoded"),
        (f"body p={quote_plus(PASSWORD)}&x=1", "URL-encoded"),
        (json.dumps({"p": PASSWORD}), "JSON-escaped"),
        (json.dumps({"p": PASSWORD}, ensure_ascii=False), "JSON-escaped"),
    ]:
        assert [(f.kind, f.form) for f in found(text)] == [("password", form)], text


def test_a_code_is_found_in_any_case_as_a_word_even_url_encoded() -> None:
    for text in [
        f"code={CODE}",
        f"code={CODE.lower()}.",
        f"code%3D{CODE}%26org=1",
        f'"{CODE[:3].lower()}{CODE[3:]}"',
    ]:
        assert [(f.kind, f.form) for f in found(text)] == [("code", "any case")], text
    for text in [f"x{CODE}", f"{CODE}1", f"id 9{CODE}"]:  # inside a longer word: not this code
        assert found(text) == [], text


def test_short_values_and_non_strings_are_not_looked_for() -> None:
    secrets = Secrets()
    for value in ("x", "nope", "", "12345", None, 123456):
        secrets.add("password", value)
    assert secrets.counts()["total"] == 0
    assert secrets.counts()["ignored_shorter_than_6"] == 4
    assert Scanner(secrets).scan("somewhere", "x nope 12345 123456") == []


def test_unencodable_strings_are_looked_for_too() -> None:
    secrets = Secrets()
    secrets.add("password", "Good!Passw0rd\ud800")  # a lone surrogate, as a test sends it
    findings = Scanner(secrets).scan("log", "got Good%21Passw0rd%ED%A0%80 and Good!Passw0rd\\ud800")
    assert sorted(f.form for f in findings) == ["JSON-escaped", "URL-encoded"]


def test_one_character_repeated_is_a_probe_not_a_secret() -> None:
    secrets = Secrets()
    for value in ("--------", "x" * 201, "aaaaaa"):
        secrets.add("password", value)
    secrets.add("password", "-------a")
    assert secrets.plain == {"-------a": "password"}
    assert secrets.counts()["ignored_not_secrets"] == 3
    assert Scanner(secrets).scan("log", "-------------- celery@host v5.4") == []


def test_secrets_are_recorded_from_bodies_but_not_hashes() -> None:
    secrets = Secrets()
    record_body(
        secrets,
        json.dumps(
            {
                "newPassword": {"password": "N3w!Passw0rd"},
                "currentPassword": "0ld!Passw0rd",
                "verificationCode": "ab12cd",
                "hashedPassword": {"hash": "$argon2id$v=19$m=1024,t=1,p=1$c2FsdA$aGFzaA"},
                "checks": [{"password": {"password": "L0gin!Passw0rd"}}],
            }
        ).encode(),
    )
    record_body(secrets, b'{"sessionToken": "session-token-1234", "token": "pat-token-5678"}')
    record_body(secrets, b'{"checks": {"password": {"password": "Malf0rmed!json" x}}}')
    assert secrets.plain == {
        "N3w!Passw0rd": "password",
        "0ld!Passw0rd": "password",
        "L0gin!Passw0rd": "password",
        "session-token-1234": "token",
        "pat-token-5678": "token",
        "Malf0rmed!json": "password",
    }
    assert secrets.codes == {"AB12CD": "code"}


def test_a_log_record_is_scanned_with_its_exception_and_extra_fields() -> None:
    try:
        raise ValueError(f"bad {TOKEN}")
    except ValueError:
        record = logging.LogRecord(
            "identity", logging.DEBUG, __file__, 1, "user %s", ("alice",), sys.exc_info()
        )
    record.__dict__["attempt"] = PASSWORD  # as logger.debug(..., extra={"attempt": ...})
    text = record_text(record)
    assert text.startswith("user alice")
    assert {f.kind for f in Scanner(recorded()).scan("log", text)} == {"token", "password"}


def test_broker_monitor_lines_are_unescaped_and_bodies_decoded() -> None:
    body = base64.b64encode(json.dumps([[[1, 2]], {"code": CODE}, {}]).encode()).decode()
    message = json.dumps({"body": body, "properties": {"body_encoding": "base64"}})
    escaped = message.replace("\\", "\\\\").replace('"', '\\"')
    line = f'1712345678.123456 [0 127.0.0.1:40000] "LPUSH" "identity" "{escaped}"'.encode()
    args = parse_monitor_line(line)
    assert args == [b"LPUSH", b"identity", message.encode()]
    text = broker_text(args)
    assert text is not None
    assert [f.kind for f in found(text)] == ["code"]
    assert broker_text(parse_monitor_line(b'1.0 [0 127.0.0.1:1] "BRPOP" "identity" "1"')) is None
    assert parse_monitor_line(b'1.0 [0 lua] "SET" "k" "a\\x00\\"b\\n"') == [
        b"SET",
        b"k",
        b'a\0"b\n',
    ]
