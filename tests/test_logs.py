"""Log lines (issue 12): JSON in production, text in development, both with the request id.

``identity serve`` in a process of its own: every line it writes in production is one JSON
object (uvicorn's own lines included), the access line of a request carries its id; in
development the same line is text with the id in brackets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from api.settings import Settings
from tests.workers_support import free_port

IDENTITY = str(Path(sys.executable).with_name("identity"))


def _serve_once(settings: Settings, tmp_path: Path, env_name: str, request_id: str) -> str:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDENTITY_", "PROMETHEUS"))}
    env.update(
        IDENTITY_ENV=env_name,
        IDENTITY_SECRET_KEY="k" * 40,
        IDENTITY_DATABASE_URL=settings.database_url,
        IDENTITY_REDIS_PREFIX=settings.redis_prefix,
        IDENTITY_LOG_LEVEL="INFO",
    )
    log = tmp_path / f"{env_name}.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [IDENTITY, "serve", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                assert server.poll() is None, log.read_text()
                try:
                    answer = httpx.get(
                        f"http://127.0.0.1:{port}/healthz",
                        headers={"X-Request-Id": request_id},
                        timeout=1,
                    )
                    if answer.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            assert answer.headers["x-request-id"] == request_id
        finally:
            server.terminate()
            server.wait(20)
    return log.read_text()


@pytest.mark.parametrize("env_name", ["production", "development"])
def test_log_lines_by_environment(base_settings: Settings, tmp_path: Path, env_name: str) -> None:
    request_id = f"log-{env_name}-1"
    text = _serve_once(base_settings, tmp_path, env_name, request_id)
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, text
    if env_name == "production":
        records = [json.loads(line) for line in lines]  # every line is one JSON object
        assert all({"time", "level", "logger", "message", "process"} <= set(r) for r in records)
        access = [r for r in records if r["logger"] == "identity.access"]
        assert any(
            r.get("request_id") == request_id and r["message"].startswith("GET /healthz 200 ")
            for r in access
        ), records
        assert any(r["logger"].startswith("uvicorn") for r in records), records
    else:
        assert any(
            "identity.access" in line and f"[{request_id}]" in line and "GET /healthz 200" in line
            for line in lines
        ), text
        with pytest.raises(json.JSONDecodeError):
            json.loads(lines[0])
