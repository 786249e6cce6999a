"""A running ``identity serve`` for the RPC clients, and what the RPC tests share.

The server is a subprocess on free ports with the test run's database and Redis prefix, so
the in-process ``world`` makes the organizations, tokens and users it serves.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from api.settings import Settings
from tests import secret_scan
from tests.workers_support import free_port

IDENTITY = str(Path(sys.executable).parent / "identity")


@dataclass(frozen=True)
class Server:
    http: str  # REST, Connect and gRPC-Web: http://127.0.0.1:<port>
    grpc: str  # native gRPC (h2c): 127.0.0.1:<port>


def serve(settings: Settings, *, server: str = "uvicorn-h2", **extra: str) -> Iterator[Server]:
    """``identity serve --server <server>``; gRPC on its own port for uvicorn, else on the
    main port (the servers that speak h2c)."""
    port = free_port()
    grpc_port = free_port() if server == "uvicorn" else 0
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("IDENTITY_")},
        "IDENTITY_DATABASE_URL": settings.database_url,
        "IDENTITY_REDIS_URL": settings.redis_url,
        "IDENTITY_REDIS_PREFIX": settings.redis_prefix,
        "IDENTITY_BROKER_URL": "memory://",
        "IDENTITY_SECRET_KEY": settings.secret_key,
        "IDENTITY_ARGON2_TIME_COST": str(settings.argon2_time_cost),
        "IDENTITY_ARGON2_MEMORY_KIB": str(settings.argon2_memory_kib),
        "IDENTITY_RATE_FAILED_VERIFICATIONS_PER_IP_PER_MINUTE": "100000",
        "IDENTITY_RATE_VERIFICATIONS_PER_USER_PER_MINUTE": "100000",
        "IDENTITY_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    log = tempfile.NamedTemporaryFile(prefix="identity-serve-", suffix=".log", delete=False)
    args = [IDENTITY, "serve", "--host", "127.0.0.1", "--port", str(port), "--server", server]
    args += ["--workers", "1"]
    args += ["--grpc-port", str(grpc_port)]
    process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    running = Server(f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port or port}")
    try:
        deadline = time.monotonic() + 30
        while not _ready(running):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"identity serve did not start:\n{_tail(log.name)}")
            time.sleep(0.1)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if grpc_port:  # the gRPC child goes with its parent (it once outlived it)
            deadline = time.monotonic() + 10
            while _listening(grpc_port):
                assert time.monotonic() < deadline, f"the gRPC child on :{grpc_port} outlived serve"
                time.sleep(0.1)
        if re.search(r"Traceback|ERROR", Path(log.name).read_text(errors="replace")):
            print(f"--- identity serve log\n{_tail(log.name)}", file=sys.stderr)
        secret_scan.keep_log(Path(log.name), "identity serve")  # IDENTITY_SECRET_SCAN=1 only
        os.unlink(log.name)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _ready(server: Server) -> bool:
    host, _, port = server.grpc.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return httpx.get(f"{server.http}/readyz", timeout=1).status_code == 200
    except (OSError, httpx.TransportError):
        return False


def _tail(path: str, lines: int = 60) -> str:
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
