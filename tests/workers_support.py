"""Real processes for the worker tests: a private Redis broker, Celery worker and beat, the API.

Each test module gets its own ``redis-server`` on a free port as the Celery broker, so a test
can stop and restart it without touching the shared Redis (codes, rate limits, token cache).
Workers, beat and ``identity serve`` run as subprocesses with the test run's database; their
output goes to a log file that is printed when a wait times out. Every process started here
is killed by ``Stack.close()``, which the fixtures call at teardown, even after a failure.
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import redis as sync_redis
from litestar.testing import AsyncTestClient

from api.settings import Settings
from tests.conftest import TEST_OVERRIDES
from workers.smtp_sink import MailSink

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CELERY = str(BIN / "celery")
IDENTITY = str(BIN / "identity")
MAIL_WAIT_S = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


async def await_until(
    predicate: Callable[[], Awaitable[T]], timeout: float, what: str, interval: float = 0.1
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


class Proc:
    """A subprocess in its own process group, its stdout and stderr in one log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.args, self.env, self.log = name, args, env, log
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log.open("ab") as out:
            out.write(f"\n--- start {self.name}: {' '.join(self.args)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                self.args,
                env=self.env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for_log(self, pattern: str, timeout: float) -> re.Match[str]:
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            if not self.alive:
                raise AssertionError(f"{self.name} exited:\n{self.tail()}")
            return regex.search(self.text())

        try:
            return wait_until(found, timeout, f"{pattern!r} in {self.name}'s log")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.tail()}") from None

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL, no chance to clean up (the crash the fault tests simulate)."""
        self._signal(signal.SIGKILL)
        self._reap(5)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
        if not self.alive:
            self._reap(1)
            return
        self._signal(signal.SIGTERM)
        try:
            self._reap(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def _signal(self, sig: signal.Signals) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)  # the group is this process and its children

    def _reap(self, timeout: float) -> None:
        if self.popen is not None:
            self.popen.wait(timeout)


class RedisServer:
    """A private ``redis-server`` on a free port; stop and start it at will."""

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.port = free_port()
        self.directory = directory
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.directory),
        ]  # fmt: skip
        log = self.directory / f"{self.name}.log"
        self.proc = Proc(self.name, args, dict(os.environ), log).start()
        try:
            wait_until(self.ping, 10, f"{self.name} to answer PING")
        except AssertionError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def client(self) -> sync_redis.Redis:
        return sync_redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def ping(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except sync_redis.ConnectionError:
            return False


class Broker(RedisServer):
    """A private ``redis-server`` used only as the Celery broker."""

    def __init__(self, directory: Path) -> None:
        super().__init__("broker", directory)

    def start(self) -> Broker:
        super().start()
        return self

    def unacked(self) -> int:
        """Messages delivered to a worker and not yet acknowledged (kombu's ``unacked`` hash)."""
        with self.client() as client:
            return int(client.hlen("unacked"))


class Stack:
    """The broker, an SMTP sink and the processes started for one test module."""

    def __init__(self, settings: Settings, directory: Path) -> None:
        self.settings = settings
        self.directory = directory
        self.broker = Broker(directory).start()
        try:
            self.sink = MailSink(directory / "mail").start()
        except BaseException:
            self.broker.stop()
            raise
        self.procs: list[Proc] = []
        self._count = 0

    def env(self, **extra: object) -> dict[str, str]:
        """A subprocess environment for the run's database, Redis prefix, broker and sink."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("IDENTITY_")}
        values: dict[str, object] = {
            "database_url": self.settings.database_url,
            "redis_url": self.settings.redis_url,
            "redis_prefix": self.settings.redis_prefix,
            "secret_key": self.settings.secret_key,
            "broker_url": self.broker.url,
            "smtp_url": self.sink.url,
            "relay_interval_s": 1,
            # The tests wait for e-mails: gather briefly (the default, 1 s, is for load).
            "relay_gather_s": 0.2,
            "relay_min_age_s": 1,
            "relay_redeliver_after_s": 5,
            "broker_visibility_timeout_s": 5,
            "broker_timeout_s": 1,
            "log_level": "INFO",
            **{k: v for k, v in TEST_OVERRIDES.items() if k != "secret_key"},
            **extra,
        }
        for key, value in values.items():
            env[f"IDENTITY_{key.upper()}"] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _start(self, name: str, args: list[str], **extra: object) -> Proc:
        self._count += 1
        proc = Proc(name, args, self.env(**extra), self.directory / f"{self._count:02d}-{name}.log")
        self.procs.append(proc.start())
        return proc

    def start_worker(self, *, pool: str = "solo", concurrency: int = 1, **extra: object) -> Proc:
        args = [
            CELERY, "-A", "workers", "worker", "--pool", pool, "--concurrency", str(concurrency),
            "-Q", "identity", "--loglevel", "INFO", "--without-mingle", "--without-gossip",
            "--hostname", f"w{self._count + 1}@%h",
        ]  # fmt: skip
        proc = self._start("worker", args, **extra)
        proc.wait_for_log(r"w\d+@\S+ ready\.", 30)
        return proc

    def start_beat(self, **extra: object) -> Proc:
        schedule = self.directory / f"celerybeat-schedule-{self._count + 1}"
        args = [
            CELERY, "-A", "workers", "beat", "--loglevel", "INFO", "--schedule", str(schedule),
        ]  # fmt: skip
        proc = self._start("beat", args, **extra)
        proc.wait_for_log(r"beat: Starting", 30)
        return proc

    def start_relay(self, **extra: object) -> Proc:
        proc = self._start("relay", [IDENTITY, "relay"], **extra)
        proc.wait_for_log(r"relay listening", 30)
        return proc

    def start_api(
        self, port: int | None = None, *, own_public_url: bool = False, **extra: object
    ) -> tuple[Proc, str]:
        """``identity serve`` (one process) on ``port`` (a free one by default), once its
        ``/readyz`` answers 200. ``own_public_url``: its URL is its public URL (the links it
        mails point at it)."""
        port = port or free_port()
        base = f"http://127.0.0.1:{port}"
        if own_public_url:
            extra["public_url"] = base
        proc = self._start(
            "api",
            [IDENTITY, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            **extra,
        )

        def ready() -> bool:
            if not proc.alive:
                raise AssertionError(f"identity serve exited:\n{proc.tail()}")
            try:
                return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 30, "identity serve to be ready")
        return proc, base

    def logs(self) -> str:
        return "\n\n".join(f"=== {p.log.name}\n{p.tail(60)}" for p in self.procs)

    def stop_procs(self) -> None:
        """Stop every worker, beat and API started so far (the broker keeps running)."""
        for proc in reversed(self.procs):
            proc.stop(timeout=5)
        self.procs.clear()

    def fresh(self) -> None:
        """Between tests: the broker up and empty, no process of an earlier test alive."""
        self.stop_procs()
        if self.broker.proc is None or not self.broker.proc.alive:
            self.broker.stop()
            self.broker.start()
        with self.broker.client() as client:
            client.flushall()

    def close(self) -> None:
        try:
            self.stop_procs()
        finally:
            self.sink.stop()
            self.broker.stop()

    # --- mail ----------------------------------------------------------------------------

    def mails_to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.sink.messages() if m["To"] == address]

    async def wait_for_mails(
        self, address: str, count: int, timeout: float = MAIL_WAIT_S
    ) -> list[EmailMessage]:
        """Wait until ``address`` has at least ``count`` messages; return all of them.

        Async on purpose: the in-process API publishes from the test's event loop."""

        async def enough() -> list[EmailMessage]:
            found = self.mails_to(address)
            return found if len(found) >= count else []

        try:
            return await await_until(enough, timeout, f"{count} e-mail(s) to {address}", 0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None


@contextlib.contextmanager
def stack_for(settings: Settings, directory: Path) -> Iterator[Stack]:
    stack = Stack(settings, directory)
    try:
        yield stack
    finally:
        stack.close()


# --- database checks -------------------------------------------------------------------------


async def outbox_rows(conn: asyncpg.Connection[Any], user_id: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT id, task, published_at, publish_count, processed_at FROM outbox "
            "WHERE aggregate_id = $1 ORDER BY id",
            user_id,
        )
    )


async def wait_processed(
    conn: asyncpg.Connection[Any], user_ids: list[str], timeout: float
) -> None:
    """Wait until every outbox row of these users has been processed by a worker."""

    async def done() -> bool:
        left = await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE aggregate_id = ANY($1::text[]) "
            "AND processed_at IS NULL",
            user_ids,
        )
        return bool(left == 0)

    await await_until(done, timeout, "every outbox row to be processed", interval=0.2)


async def event_types(conn: asyncpg.Connection[Any], aggregate_id: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT event_type FROM events WHERE aggregate_id = $1 ORDER BY sequence", aggregate_id
    )
    return [r["event_type"] for r in rows]


async def notification_events(conn: asyncpg.Connection[Any], user_id: str) -> list[str]:
    """The notifications recorded as sent about a user (their own aggregates)."""
    rows = await conn.fetch(
        "SELECT event_type FROM events WHERE aggregate_type = 'notification' "
        "AND payload->>'userId' = $1 ORDER BY created_at",
        user_id,
    )
    return [r["event_type"] for r in rows]


def app_client(app: Any) -> AsyncTestClient[Any]:
    return AsyncTestClient(app=app, timeout=10)
