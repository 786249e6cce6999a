"""``/metrics`` adds up with several server processes (issue 12).

Before, each scrape of ``identity serve --workers 2`` landed on one process and read only its
own counts (30 scrapes after 12 changes read 5 thirteen times and 7 seventeen times). Now the
processes share prometheus_client's multiprocess directory, and every scrape reads the sum.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from api.settings import Settings
from tests.support import STRONG_PASSWORD, World, bearer
from tests.workers_support import free_port

IDENTITY = str(Path(sys.executable).with_name("identity"))
CHANGES = 12
_COUNTER = re.compile(r'^identity_password_changes_total\{verification="admin"\} (\S+)$', re.M)


def _changes_counted(base: str) -> float:
    # A new connection each time, so the kernel may hand it to either process.
    with httpx.Client(base_url=base, timeout=5) as client:
        text = client.get("/metrics").text
    found = _COUNTER.findall(text)
    return sum(float(v) for v in found)


async def test_every_scrape_of_two_processes_reads_the_sum(
    world: World, base_settings: Settings, tmp_path: Path
) -> None:
    org_id, admin = await world.admin()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDENTITY_", "PROMETHEUS"))}
    env.update(
        IDENTITY_DATABASE_URL=base_settings.database_url,
        IDENTITY_REDIS_URL=base_settings.redis_url,
        IDENTITY_REDIS_PREFIX=base_settings.redis_prefix,
        IDENTITY_SECRET_KEY=base_settings.secret_key,
        IDENTITY_ENV="development",
        IDENTITY_BROKER_URL="memory://",
        IDENTITY_ARGON2_MEMORY_KIB="1024",
        IDENTITY_ARGON2_TIME_COST="1",
        IDENTITY_LOG_LEVEL="WARNING",
    )
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [IDENTITY, "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert _changes_counted(base) == 0

        users = [await world.human(admin, org_id) for _ in range(CHANGES)]
        for n, user in enumerate(users):
            with httpx.Client(base_url=base, timeout=10) as client:  # either process
                changed = client.post(
                    f"/v2/users/{user.user_id}/password",
                    json={"newPassword": {"password": f"{STRONG_PASSWORD}-{n}"}},
                    headers=bearer(admin),
                )
            assert changed.status_code == 200, changed.text

        readings = [_changes_counted(base) for _ in range(20)]
        assert readings == [CHANGES] * 20, readings
    finally:
        server.terminate()
        server.wait(20)
        log.close()
