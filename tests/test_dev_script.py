"""``./scripts/dev | tee dev.log`` and Ctrl-C: every process it started stops (issue 12).

Before, honcho, writing to the pipe whose reader Ctrl-C had killed, died without stopping
its children, and the next start refused with "port 8080 is already in use". The test runs
the real script in a pipeline of its own process group (as a terminal runs a foreground
job), waits for the API, sends SIGINT to the whole group (what Ctrl-C does), and then finds
no process left that the script started: each carries a marker in its environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import ADMIN_URL
from tests.workers_support import ROOT, Broker, free_port

pytestmark = pytest.mark.slow

START_BOUND_S = 90.0
STOP_BOUND_S = 30.0


def _marked(marker: str) -> list[int]:
    """Processes whose environment holds the marker (everything the script started)."""
    found = []
    needle = f"DEV_SCRIPT_TEST={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _command_lines(pids: list[int]) -> list[str]:
    """What each process left behind is, for the failure message."""
    lines = []
    for pid in pids:
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            lines.append(f"{pid}: {cmdline.decode(errors='replace')[:120]}")
    return lines


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    started = Broker(tmp_path).start()
    try:
        yield started
    finally:
        started.stop()


def test_ctrl_c_with_output_piped_to_tee_stops_every_process(
    tmp_path: Path, broker: Broker
) -> None:
    marker = uuid.uuid4().hex
    database = f"identity_dev_{marker[:10]}"
    ports = {"PORT": free_port(), "FLOWER_PORT": free_port(), "MAIL_PORT": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDENTITY_", "FLOWER_"))}
    env.update({name: str(port) for name, port in ports.items()})
    env.update(
        DEV_SCRIPT_TEST=marker,
        IDENTITY_DATABASE_URL=ADMIN_URL.rsplit("/", 1)[0] + "/" + database,
        IDENTITY_REDIS_PREFIX=f"test-dev-{marker[:8]}:",
        IDENTITY_BROKER_URL=broker.url,
        IDENTITY_ARGON2_MEMORY_KIB="1024",
        IDENTITY_ARGON2_TIME_COST="1",
    )
    log = tmp_path / "dev.log"
    pipeline = subprocess.Popen(
        ["bash", "-c", f"./scripts/dev 2>&1 | tee {log}"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        deadline = time.monotonic() + START_BOUND_S
        while True:
            assert pipeline.poll() is None, log.read_text(errors="replace")[-3000:]
            try:
                url = f"http://127.0.0.1:{ports['PORT']}/healthz"
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.5)
        time.sleep(3)  # the worker, relay, beat and Flower finish starting too
        started = _marked(marker)
        assert len(started) >= 6, started  # bash, honcho and its processes at least
        # The e-mailed links point at the API this run serves, on whatever PORT it was given.
        public_url = f"IDENTITY_PUBLIC_URL=http://127.0.0.1:{ports['PORT']}".encode()
        environments = []
        for pid in started:
            with contextlib.suppress(OSError):
                environments.append(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
        given = {v for e in environments for v in e if v.startswith(b"IDENTITY_PUBLIC_URL=")}
        assert given == {public_url}  # set by the script, the same for every process

        os.killpg(pipeline.pid, signal.SIGINT)  # Ctrl-C: the script and tee alike

        deadline = time.monotonic() + STOP_BOUND_S
        while _marked(marker) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = _marked(marker)
        assert not left, (_command_lines(left), log.read_text(errors="replace")[-3000:])
        # The ports are free again: the next ./scripts/dev would start.
        for port in ports.values():
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        for pid in _marked(marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pipeline.wait(10)
        asyncio.run(_drop(database))


async def _drop(database: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await conn.close()
