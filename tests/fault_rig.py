"""A whole system of private, breakable parts for the fault matrix (tests/test_fault_matrix.py).

Everything the service depends on runs privately here, so a fault can be injected without
touching the machine's shared servers (or another test run using them):

- Postgres: a cluster of its own (``initdb`` into a temporary directory, its own port), that
  the matrix restarts with ``pg_ctl restart`` and whose connections it kills with
  ``pg_terminate_backend``;
- the application Redis and the Celery broker: one ``redis-server`` each (``RedisServer``);
- the SMTP server: the aiosmtpd sink, stopped and started again on the same port;
- the service's processes as production runs them: ``identity serve``, a prefork Celery
  worker, ``identity relay`` and Celery beat (``tests.workers_support.Stack``).

``Load`` drives admin password changes (each commits one event and one e-mail outbox row)
from several concurrent clients and records every answer, so a scenario can assert what
each answer was during the fault and count what was committed against what was delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec

from api.migrate import migrate
from api.settings import Settings, settings_from_env
from tests.conftest import TEST_OVERRIDES
from tests.support import Human, World
from tests.workers_support import (
    CELERY,
    Proc,
    RedisServer,
    Stack,
    await_until,
    free_port,
)


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found (Debian's postgresql package has it)")
    return path


def _as_postgres(args: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; Debian's cluster user is 'postgres'.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class PrivatePostgres:
    """A Postgres cluster in a temporary directory, on its own port, trust auth."""

    def __init__(self) -> None:
        self.port = free_port()
        # Not under pytest's tmp_path: the postgres user cannot enter root's 0700 directory.
        self.directory = Path(tempfile.mkdtemp(prefix="identity-pg-"))
        self.data = self.directory / "data"
        self.log = self.directory / "postgres.log"
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        initdb = [
            _pg_bin("initdb"), "-D", str(self.data), "-U", "root", "--auth=trust",
            "-E", "UTF8", "--no-sync", "--no-instructions",
        ]  # fmt: skip
        subprocess.run(_as_postgres(initdb), check=True, capture_output=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://root@127.0.0.1:{self.port}/{database}"

    def _ctl(self, *args: str) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        pg_ctl = [
            _pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
            "-w", "-t", "60", *args,
        ]  # fmt: skip
        subprocess.run(_as_postgres(pg_ctl), check=True, capture_output=True)

    def start(self) -> PrivatePostgres:
        self._ctl("start")
        return self

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ctl("stop", "-m", "fast")

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")

    async def create_database(self, name: str) -> str:
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        url = self.url(name)
        await migrate(url)
        return url

    async def terminate_backends(self, database: str) -> int:
        """Kill every connection to ``database`` (the service's pools, the relay's LISTEN)."""
        conn = await asyncpg.connect(self.url())
        try:
            killed: int = await conn.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
        finally:
            await conn.close()
        return killed

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class Rig:
    """Private Postgres, application Redis, broker, SMTP sink, and the service's processes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.postgres = PrivatePostgres().start()
        self.redis = RedisServer("app-redis", directory).start()
        database_url = asyncio.run(self.postgres.create_database("identity"))
        self.settings: Settings = settings_from_env(
            {},
            database_url=database_url,
            redis_url=self.redis.url,
            redis_prefix="faults:",
            **TEST_OVERRIDES,
        )
        self.stack = Stack(self.settings, directory)
        self.worker: Proc | None = None
        self.relay: Proc | None = None
        self.beat: Proc | None = None
        self.api: Proc | None = None
        self.base = ""
        # A process the fault itself killed, and its replacement: not an exit by itself.
        self.killed_by_fault: list[Proc] = []

    # --- processes -----------------------------------------------------------------------

    def start_worker(self) -> Proc:
        """A prefork worker with two children, as the Procfile runs it."""
        name = f"w{len(self.stack.procs) + 1}"
        args = [
            CELERY, "-A", "workers", "worker", "--concurrency", "2", "-Q", "identity",
            "--loglevel", "INFO", "--without-mingle", "--without-gossip",
            "--hostname", f"{name}@%h",
        ]  # fmt: skip
        proc = self.stack._start("worker", args)
        proc.wait_for_log(rf"{name}@\S+ ready\.", 30)
        self.worker = proc
        return proc

    def start_all(self) -> None:
        self.start_worker()
        self.relay = self.stack.start_relay()
        self.beat = self.stack.start_beat()
        self.api, self.base = self.stack.start_api()

    def restart_api(self) -> None:
        """A new ``identity serve`` on the same port (as a supervisor would)."""
        self.api, _ = self.stack.start_api(port=int(self.base.rsplit(":", 1)[1]))

    def processes(self) -> list[Proc]:
        return [p for p in (self.api, self.worker, self.relay, self.beat) if p is not None]

    def exited_by_themselves(self) -> list[str]:
        """Processes of the system that are not running and were not killed by a fault."""
        return [
            f"{p.name} (exit {p.popen.returncode if p.popen else '?'})"
            for p in self.stack.procs
            if not p.alive and p not in self.killed_by_fault
        ]

    def close(self) -> None:
        try:
            self.stack.close()
        finally:
            self.redis.stop()
            self.postgres.close()


@dataclass
class Answer:
    at: float  # seconds since the load started
    status: int | None  # None: no HTTP answer (connection refused or reset)
    code: str | None = None  # the contract body's ZITADEL id, for a 503
    retry_after: str | None = None
    elapsed: float = 0.0


@dataclass
class Load:
    """Admin password changes from ``clients`` concurrent loops until stopped."""

    rig: Rig
    admin_token: str
    people: list[Human]
    clients: int = 4
    pause_s: float = 0.02
    answers: list[Answer] = field(default_factory=list)
    committed: Counter[str] = field(default_factory=Counter)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _started: float = 0.0

    def now(self) -> float:
        return time.monotonic() - self._started

    async def _loop(self, n: int) -> None:
        async with httpx.AsyncClient(base_url=self.rig.base, timeout=15) as client:
            i = 0
            while not self._stop.is_set():
                person = self.people[(n + i * self.clients) % len(self.people)]
                i += 1
                started = time.monotonic()
                answer = Answer(at=self.now(), status=None)
                try:
                    response = await client.post(
                        f"/v2/users/{person.user_id}/password",
                        json={"newPassword": {"password": f"Fault!Passw0rd{n}-{i}"}},
                        headers={"Authorization": f"Bearer {self.admin_token}"},
                    )
                    answer.status = response.status_code
                    if response.status_code == 200:
                        self.committed[person.user_id] += 1
                    else:
                        with contextlib.suppress(ValueError, msgspec.DecodeError):
                            body: Any = msgspec.json.decode(response.content)
                            answer.code = body.get("details", [{}])[0].get("id") or body.get(
                                "message"
                            )
                        answer.retry_after = response.headers.get("retry-after")
                except httpx.TransportError:
                    await asyncio.sleep(0.1)  # the API is down: do not spin
                answer.elapsed = time.monotonic() - started
                self.answers.append(answer)
                await asyncio.sleep(self.pause_s)

    async def run_while(self, scenario: Any) -> None:
        """Run the load while ``scenario`` (a coroutine) injects and heals its fault."""
        self._started = time.monotonic()
        loops = [asyncio.create_task(self._loop(n)) for n in range(self.clients)]
        try:
            await scenario
        finally:
            self._stop.set()
            await asyncio.gather(*loops)


async def make_people(rig: Rig, count: int) -> tuple[str, list[Human]]:
    """An organization, its owner's token and ``count`` users, through the real API."""
    async with httpx.AsyncClient(base_url=rig.base, timeout=15) as client:
        world = World(client, rig.settings)
        await world.open()
        try:
            org_id, admin = await world.admin()
            people = [await world.human(admin, org_id) for _ in range(count)]
        finally:
            await world.close()
    return admin, people


async def settle(rig: Rig, timeout: float) -> None:
    """Wait until every outbox row is processed or dead."""

    async def done() -> bool:
        conn = await asyncpg.connect(rig.settings.database_url)
        try:
            left: int = await conn.fetchval(
                "SELECT count(*) FROM outbox WHERE processed_at IS NULL AND dead_at IS NULL"
            )
        finally:
            await conn.close()
        return left == 0

    try:
        await await_until(done, timeout, "every outbox row to be processed", interval=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{rig.stack.logs()}") from None
