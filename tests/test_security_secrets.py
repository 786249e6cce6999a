"""Issue 10, item 3: the development secret in production, and key rotation.

The misuse: ``IDENTITY_SECRET_KEY`` left unset in production, so every HMAC of a reset code
in Redis is keyed with a key published in this repository (brute-forced offline in seconds)
and every code in the outbox can be decrypted. Now every process refuses to start in
production (``IDENTITY_ENV``, default ``production``) without a key of 32 bytes or more,
naming the variable. Rotation: ``IDENTITY_SECRET_KEY_PREVIOUS`` still verifies what the old
key made (sessions, PATs, reset codes, queued e-mails), and tokens are re-keyed on use.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from api.domain import notifications
from api.domain.auth import token_digest
from api.domain.context import context
from api.settings import Settings
from tests.support import STRONG_PASSWORD, assert_error, bearer, world_with
from tests.workers_support import free_port
from workers import mail
from workers.smtp_sink import MailSink

BIN = Path(sys.executable).parent
SHORT_KEY = "x" * 31
GOOD_KEY = "k" * 32

PROCESSES = {
    "api": [str(BIN / "identity"), "serve", "--port", "0"],
    "relay": [str(BIN / "identity"), "relay"],
    "worker": [str(BIN / "celery"), "-A", "workers", "worker", "--pool", "solo"],
    "beat": [
        str(BIN / "celery"),
        "-A",
        "workers",
        "beat",
        "--schedule",
        str(Path(tempfile.gettempdir()) / f"identity-beat-refusal-{os.getpid()}"),
    ],
    "bootstrap": [str(BIN / "identity"), "bootstrap"],
}


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDENTITY_")}
    # Nothing the refusal needs: no database, no broker (it must come before connecting).
    env.update(
        IDENTITY_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none",
        IDENTITY_BROKER_URL="memory://",
        PYTHONUNBUFFERED="1",
    )
    env.update(values)
    return env


@pytest.mark.parametrize("process", sorted(PROCESSES))
@pytest.mark.parametrize(
    "secret",
    [
        {},
        {"IDENTITY_SECRET_KEY": SHORT_KEY},
        {"IDENTITY_SECRET_KEY": GOOD_KEY, "IDENTITY_SECRET_KEY_PREVIOUS": "old"},
    ],
    ids=["unset", "short", "short-previous"],
)
def test_production_processes_refuse_a_missing_or_short_key(
    process: str, secret: dict[str, str]
) -> None:
    result = subprocess.run(
        PROCESSES[process], env=_env(**secret), capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "IDENTITY_SECRET_KEY" in result.stderr, result.stderr
    assert "refusing to start in production" in result.stderr
    # The refusal never echoes a key.
    for value in secret.values():
        assert value not in result.stderr


def test_unknown_environment_is_refused() -> None:
    result = subprocess.run(
        PROCESSES["relay"],
        env=_env(IDENTITY_ENV="staging", IDENTITY_SECRET_KEY=GOOD_KEY),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "IDENTITY_ENV" in result.stderr


def test_production_api_starts_with_a_real_key(base_settings: Settings) -> None:
    port = free_port()
    env = _env(
        IDENTITY_ENV="production",
        IDENTITY_SECRET_KEY=GOOD_KEY,
        IDENTITY_DATABASE_URL=base_settings.database_url,
        IDENTITY_REDIS_PREFIX=base_settings.redis_prefix,
    )
    process = subprocess.Popen(
        [str(BIN / "identity"), "serve", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        import time

        import httpx

        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(10)


def test_development_allows_the_default_key() -> None:
    settings = msgspec.convert({"env": "development"}, Settings)
    settings.require_secret_key("api")  # no exit
    with pytest.raises(SystemExit, match="IDENTITY_SECRET_KEY is not set"):
        Settings().require_secret_key("api")


# --- rotation -------------------------------------------------------------------------------

OLD_KEY = "old-secret-key-0123456789abcdef0123456789"
NEW_KEY = "new-secret-key-0123456789abcdef0123456789"


async def test_rotation_keeps_what_the_old_key_made_working(
    make_settings: Callable[..., Settings], sink: MailSink
) -> None:
    old = make_settings(secret_key=OLD_KEY, smtp_url=sink.url)
    async with world_with(old) as world:
        org, admin = await world.admin()
        user = await world.human(admin, org)
        mailed = await world.human(admin, org)
        _, session = await world.login(user)
        code = await world.reset_code(admin, user.user_id)
        queued = await world.client.post(
            f"/v2/users/{mailed.user_id}/password_reset",
            json={"sendLink": {"urlTemplate": "https://app.example.com/r?c={{.Code}}"}},
            headers=bearer(admin),
        )
        assert queued.status_code == 200, queued.text

    # Without the old key, none of it works any more.
    async with world_with(make_settings(secret_key=NEW_KEY)) as world:
        me = await world.client.get(f"/v2/users/{user.user_id}", headers=bearer(session))
        assert me.status_code == 401, me.text
        assert (
            await world.client.get(f"/v2/users/{user.user_id}", headers=bearer(admin))
        ).status_code == 401

    rotated = make_settings(secret_key=NEW_KEY, secret_key_previous=OLD_KEY, smtp_url=sink.url)
    async with world_with(rotated) as world:
        # Tokens made with the old key authenticate (the negative cache entries of the
        # refused tries above are keyed by the new key's digest: forget them first).
        for token in (session, admin):
            await world.ctx.redis.delete(world.ctx.keys.token(token_digest(NEW_KEY, token).hex()))
        me = await world.client.get(f"/v2/users/{user.user_id}", headers=bearer(session))
        assert me.status_code == 200, me.text
        # ... and are re-keyed: stored under the new key's digest now.
        stored = await world.db.fetchval(
            "SELECT count(*) FROM sessions WHERE token_hash = $1", token_digest(NEW_KEY, session)
        )
        assert stored == 1
        # A code issued under the old key changes the password.
        changed = await world.set_password(
            admin,
            user.user_id,
            {"verificationCode": code, "newPassword": {"password": STRONG_PASSWORD + "2"}},
        )
        assert changed.status_code == 200, changed.text
        # The e-mail queued under the old key is delivered with its code.
        ids = [
            r["id"]
            for r in await world.db.fetch(
                "SELECT id FROM outbox WHERE aggregate_id = $1 AND task LIKE '%reset%'",
                mailed.user_id,
            )
        ]
        async with context(rotated) as ctx:
            result = await notifications.deliver_batch(
                ctx=ctx, outbox_ids=ids, deliver=mail.deliverer(rotated)
            )
        assert result.startswith("sent 1"), result
        body = sink.messages()[-1].get_body(preferencelist=("plain",))
        assert body is not None
        assert re.search(r"https://app\.example\.com/r\?c=[A-Z0-9]{6}", body.get_content())

    # Once the previous key is dropped, the re-keyed PAT still works (the session ended with
    # the password change).
    async with world_with(make_settings(secret_key=NEW_KEY)) as world:
        me = await world.client.get(f"/v2/users/{user.user_id}", headers=bearer(admin))
        assert me.status_code == 200, me.text
        wrong = await world.client.get(f"/v2/users/{user.user_id}", headers=bearer("nope"))
        assert_error(wrong, 401, 16, "AUTH-7fs1e", "Errors.Token.Invalid")
