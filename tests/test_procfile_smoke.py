"""``honcho start`` runs the Procfile: web, worker, beat, flower and the mail sink come up, and
a password change made through the live API reaches the sink as one e-mail.

Honcho runs in a temporary directory with ``-f <project>/Procfile``, so the Procfile's
relative paths (``var/mail``, ``var/celerybeat-schedule``) land there, not in the project;
``scripts`` there links to the project's (``scripts/flower``, ``scripts/dev-only``); the
package is installed (editable), so ``celery -A workers`` and ``python -m`` find it. As in
``scripts/dev``, ``IDENTITY_ENV=development``: the mail sink runs only then, and Flower
listens on 127.0.0.1. The broker is a private ``redis-server``; the database is the test run's.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from api.settings import Settings
from tests.conftest import TEST_OVERRIDES
from tests.support import World
from tests.test_ops_exposure import listening_addresses
from tests.workers_support import BIN, ROOT, Broker, await_until, free_port, wait_until

pytestmark = pytest.mark.slow

PROCESSES = ("web", "worker", "relay", "beat", "flower", "mail")
START_BOUND_S = 40.0
MAIL_BOUND_S = 30.0


class Honcho:
    """``honcho start`` in its own session; its output in a log file."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.log = cwd / "honcho.log"
        args = [str(BIN / "honcho"), "-f", str(ROOT / "Procfile"), "start", "--no-colour"]
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(
                [*args, *PROCESSES],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def children(self) -> list[int]:
        """Honcho starts each process in a session of its own: their pids are their groups."""
        return [int(pid) for pid in re.findall(r"\| \w+\.1 started \(pid=(\d+)\)", self.text())]

    def stop(self) -> None:
        """SIGTERM (honcho passes it to every process), bounded wait, then SIGKILL what is left."""
        children = self.children()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)
        for pid in children:  # only the groups honcho reported starting
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    started = Broker(tmp_path).start()
    try:
        yield started
    finally:
        started.stop()


def procfile_env(settings: Settings, broker: Broker, ports: dict[str, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDENTITY_", "FLOWER_"))}
    identity: dict[str, object] = {
        "database_url": settings.database_url,
        "redis_url": settings.redis_url,
        "redis_prefix": settings.redis_prefix,
        "secret_key": settings.secret_key,
        "broker_url": broker.url,
        "smtp_url": f"smtp://127.0.0.1:{ports['MAIL_PORT']}",
        **{k: v for k, v in TEST_OVERRIDES.items() if k != "secret_key"},
    }
    env.update({f"IDENTITY_{k.upper()}": str(v) for k, v in identity.items()})
    env["IDENTITY_ENV"] = "development"  # as scripts/dev: the mail sink is development-only
    env.update({name: str(port) for name, port in ports.items()})
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def mails_to(directory: Path, address: str) -> list[EmailMessage]:
    found = []
    for path in sorted(directory.glob("*.eml")):
        parsed = message_from_bytes(path.read_bytes(), policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        if parsed["To"] == address:
            found.append(parsed)
    return found


async def test_honcho_runs_the_procfile_and_a_change_sends_its_email(
    base_settings: Settings, broker: Broker, tmp_path: Path
) -> None:
    ports = {"PORT": free_port(), "FLOWER_PORT": free_port(), "MAIL_PORT": free_port()}
    (tmp_path / "var").mkdir()
    (tmp_path / "scripts").symlink_to(ROOT / "scripts")
    honcho = Honcho(tmp_path, procfile_env(base_settings, broker, ports))
    api = f"http://127.0.0.1:{ports['PORT']}"
    try:
        deadline = time.monotonic() + START_BOUND_S

        def answers(url: str) -> bool:
            if not honcho.alive():
                raise AssertionError(f"honcho exited:\n{honcho.tail()}")
            try:
                return httpx.get(url, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            for url in (f"{api}/readyz", f"http://127.0.0.1:{ports['FLOWER_PORT']}/healthcheck"):
                wait_until(functools.partial(answers, url), deadline - time.monotonic(), url, 0.3)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{honcho.tail()}") from None
        assert listening_addresses(ports["FLOWER_PORT"]) == {"127.0.0.1"}

        async with httpx.AsyncClient(base_url=api, timeout=10) as http:
            world = World(http, base_settings)
            await world.open()
            try:
                org_id, admin = await world.admin()
                grace = await world.human(admin, org_id)
                response = await world.set_password(
                    admin, grace.user_id, {"newPassword": {"password": "N3w!Passw0rd"}}
                )
                assert response.status_code == 200, response.text
            finally:
                await world.close()

        mail_dir = tmp_path / "var" / "mail"

        async def delivered() -> list[EmailMessage]:
            return mails_to(mail_dir, grace.email)

        try:
            [mail] = await await_until(delivered, MAIL_BOUND_S, f"an e-mail to {grace.email}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{honcho.tail()}") from None
        assert "password was changed" in mail["Subject"]

        log = honcho.text()
        for name in PROCESSES:
            assert re.search(rf"\| {name}\.1 started \(pid=\d+\)", log), f"{name}:\n{log}"
            assert re.search(rf"^\S+ {name}\.1 +\| \S", log, re.M), f"no output of {name}"
    finally:
        honcho.stop()
    assert not honcho.alive()
    assert len(mails_to(tmp_path / "var" / "mail", grace.email)) == 1
