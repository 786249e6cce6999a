"""Session and token lifetimes (issue 10): a session past its absolute lifetime or idle for
too long, and a PAT past its ``--expires-in``, are unknown tokens (401 ``AUTH-7fs1e``), from
Postgres as from the principal cache; a session in use outlives the idle timeout without a
write per request; ``identity token list`` and ``identity token revoke``."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from api.domain.tokens import parse_duration
from api.repositories import tokens
from api.settings import Settings
from tests.support import World, assert_error, bearer, world_with

IDENTITY = str(Path(sys.executable).with_name("identity"))
PAT_FIELDS = {"id", "userId", "orgId", "role", "createdAt", "expiresAt", "revokedAt"}


# --- helpers ----------------------------------------------------------------------------


async def works(world: World, token: str, user_id: str) -> bool:
    """A request with ``token``: True on 200, False on the contract's 401 for a dead token."""
    response = await world.client.get(f"/v2/users/{user_id}", headers=bearer(token))
    if response.status_code == 200:
        return True
    assert_error(response, 401, 16, "AUTH-7fs1e", "Errors.Token.Invalid")
    return False


async def session_key(world: World, session_id: str) -> str:
    """The Redis key of the session's cached principal."""
    digest = await world.db.fetchval("SELECT token_hash FROM sessions WHERE id = $1", session_id)
    return world.ctx.keys.token(digest.hex())


async def pat_of(world: World, user_id: str) -> tuple[str, str]:
    """(id, Redis key of the cached principal) of the machine user's one PAT."""
    row = await world.db.fetchrow(
        "SELECT id, token_hash FROM personal_access_tokens WHERE user_id = $1", user_id
    )
    return row["id"], world.ctx.keys.token(row["token_hash"].hex())


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDENTITY_")}
    env.update(
        IDENTITY_DATABASE_URL=settings.database_url,
        IDENTITY_REDIS_URL=settings.redis_url,
        IDENTITY_REDIS_PREFIX=settings.redis_prefix,
        IDENTITY_SECRET_KEY=settings.secret_key,
        IDENTITY_BROKER_URL="memory://",
    )
    return env


def identity(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The real console script on the test's database and Redis prefix."""
    return subprocess.run(
        [IDENTITY, *args],
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def identity_many(
    settings: Settings, *commands: tuple[str, ...]
) -> list[subprocess.CompletedProcess[str]]:
    procs = [
        subprocess.Popen(
            [IDENTITY, *args],
            env=_env(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    results = []
    for args, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=60)
        results.append(subprocess.CompletedProcess([IDENTITY, *args], proc.returncode, out, err))
    return results


def one_json_line(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    value: dict[str, Any] = json.loads(lines[0])
    return value


def refused(result: subprocess.CompletedProcess[str], words: str) -> None:
    assert result.returncode == 2, (result.args, result.stdout, result.stderr)
    assert result.stdout == ""
    assert words in result.stderr, (result.args, result.stderr)
    assert "Traceback" not in result.stderr


# --- sessions ---------------------------------------------------------------------------


def test_defaults() -> None:
    assert Settings().session_idle_timeout_s == 86400
    assert Settings().session_max_age_s == 2592000


async def test_session_past_its_absolute_lifetime_is_refused_although_cached(
    make_settings: Callable[..., Settings],
) -> None:
    """Aged behind the cache's back (in SQL): the cached entry is served until its next touch
    (here after a second: a tenth of the idle timeout), which finds it dead in Postgres."""
    settings = make_settings(session_max_age_s=3600, session_idle_timeout_s=10)
    async with world_with(settings) as world:
        org_id, admin = await world.admin()
        user = await world.human(admin, org_id)
        session_id, token = await world.login(user)
        assert await works(world, token, user.user_id)
        key = await session_key(world, session_id)
        assert await world.ctx.redis.exists(key)

        await world.db.execute(
            "UPDATE sessions SET created_at = created_at - interval '2 hours' WHERE id = $1",
            session_id,
        )
        await asyncio.sleep(1.2)
        assert await world.ctx.redis.exists(key)  # still cached when the request comes
        assert not await works(world, token, user.user_id)
        assert not await world.ctx.redis.exists(key) or (await world.ctx.redis.get(key) == b"-")
        assert not await works(world, token, user.user_id)


async def test_session_past_its_absolute_lifetime_is_refused_by_postgres(
    make_settings: Callable[..., Settings],
) -> None:
    """Not cached, recently used (no touch due): the principal query itself refuses it."""
    settings = make_settings(session_max_age_s=3600)
    async with world_with(settings) as world:
        org_id, admin = await world.admin()
        user = await world.human(admin, org_id)
        young_id, young = await world.login(user)
        old_id, old = await world.login(user)
        for session_id, age in ((young_id, "59 minutes"), (old_id, "61 minutes")):
            await world.db.execute(
                "UPDATE sessions SET created_at = now() - $2::text::interval,"
                " last_used_at = now() WHERE id = $1",
                session_id,
                age,
            )
        assert await works(world, young, user.user_id)
        assert not await works(world, old, user.user_id)
        # The principal query refuses it on its own.
        for session_id, live in ((young_id, True), (old_id, False)):
            digest = await world.db.fetchval(
                "SELECT token_hash FROM sessions WHERE id = $1", session_id
            )
            row = await tokens.owner_by_digest(world.db, digest, max_age_s=3600, idle_timeout_s=0)
            assert (row is not None) is live
        # The young one's entry ends with its lifetime (a minute from now), not in 300 s.
        assert 0 < await world.ctx.redis.pttl(await session_key(world, young_id)) <= 61_000


async def test_cached_entry_past_the_absolute_lifetime_is_refused(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(session_max_age_s=2, session_idle_timeout_s=0)
    async with world_with(settings) as world:
        org_id, admin = await world.admin()
        user = await world.human(admin, org_id)
        session_id, token = await world.login(user)
        assert await works(world, token, user.user_id)
        key = await session_key(world, session_id)
        # The entry does not outlive the session.
        assert 0 < await world.ctx.redis.pttl(key) <= 2000

        # As if Redis had kept the entry longer, and Postgres alone would take the session
        # now: only the entry's own expiry can refuse it.
        await world.ctx.redis.persist(key)
        await world.db.execute(
            "UPDATE sessions SET created_at = now() + interval '1 hour' WHERE id = $1",
            session_id,
        )
        await asyncio.sleep(2.3)
        assert await world.ctx.redis.exists(key)
        assert not await works(world, token, user.user_id)
        assert not await works(world, token, user.user_id)

        # It was the entry: without it, Postgres answers (with the moved creation time).
        await world.ctx.redis.delete(key)
        assert await works(world, token, user.user_id)


async def test_idle_session_is_refused_cached_or_not(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(session_idle_timeout_s=2, session_max_age_s=0)
    async with world_with(settings) as world:
        org_id, admin = await world.admin()
        user = await world.human(admin, org_id)
        used_id, used = await world.login(user)
        _, unused = await world.login(user)
        assert await works(world, used, user.user_id)
        key = await session_key(world, used_id)

        await asyncio.sleep(2.5)
        assert await world.ctx.redis.exists(key)  # cached for token_cache_ttl_s
        assert not await works(world, used, user.user_id)  # refused by the entry
        assert not await works(world, unused, user.user_id)  # refused by Postgres
        await world.ctx.redis.delete(key)
        assert not await works(world, used, user.user_id)  # and by Postgres


async def test_session_in_use_outlives_the_idle_timeout(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(session_idle_timeout_s=2, session_max_age_s=0)
    async with world_with(settings) as world:
        org_id, admin = await world.admin()
        user = await world.human(admin, org_id)
        session_id, token = await world.login(user)
        start = time.monotonic()
        while time.monotonic() - start < 5:
            assert await works(world, token, user.user_id)
            await asyncio.sleep(0.5)
        row = await world.db.fetchrow(
            "SELECT created_at, last_used_at FROM sessions WHERE id = $1", session_id
        )
        assert (row["last_used_at"] - row["created_at"]).total_seconds() > 4

        await asyncio.sleep(2.5)
        assert not await works(world, token, user.user_id)


async def test_requests_do_not_write_the_last_use_each_time(world: World) -> None:
    """Default settings: the last use is written at most once a minute."""
    org_id, admin = await world.admin()
    user = await world.human(admin, org_id)
    session_id, token = await world.login(user)
    query = "SELECT last_used_at FROM sessions WHERE id = $1"
    at_login = await world.db.fetchval(query, session_id)
    assert at_login is not None
    for _ in range(10):
        assert await works(world, token, user.user_id)
    assert await world.db.fetchval(query, session_id) == at_login


async def test_a_pre_migration_session_counts_from_its_creation(
    make_settings: Callable[..., Settings],
) -> None:
    """``last_used_at`` NULL (a session older than the migration) reads as ``created_at``."""
    settings = make_settings(session_idle_timeout_s=3600, session_max_age_s=0)
    async with world_with(settings) as world:
        org_id, admin = await world.admin()
        user = await world.human(admin, org_id)
        fresh_id, fresh = await world.login(user)
        old_id, old = await world.login(user)
        for session_id, age in ((fresh_id, "5 minutes"), (old_id, "2 hours")):
            await world.db.execute(
                "UPDATE sessions SET last_used_at = NULL, created_at = now() - $2::text::interval"
                " WHERE id = $1",
                session_id,
                age,
            )
        assert await works(world, fresh, user.user_id)
        assert not await works(world, old, user.user_id)


# --- personal access tokens -------------------------------------------------------------


def test_parse_duration() -> None:
    assert parse_duration("3600") == 3600
    assert parse_duration("90s") == 90
    assert parse_duration("15m") == 900
    assert parse_duration("12h") == 43200
    assert parse_duration("90d") == 90 * 86400
    assert parse_duration("2w") == 14 * 86400
    for bad in ("", "0", "0d", "-5", "10x", "1.5h", "12 h", "h", "3651d"):
        with pytest.raises(ValueError, match="invalid duration"):
            parse_duration(bad)


async def test_pat_with_expires_in_stops_working_after_it_also_when_cached(
    world: World,
) -> None:
    org_id, admin = await world.admin()
    human = await world.human(admin, org_id)
    made = one_json_line(
        identity(
            world.settings,
            *("token", "create", "--org", org_id, "--role", "ORG_OWNER", "--expires-in", "6"),
        )
    )
    assert set(made) == {"userId", "token", "expiresAt"}
    expires_at = datetime.fromisoformat(made["expiresAt"])
    stored = await world.db.fetchval(
        "SELECT expires_at FROM personal_access_tokens WHERE user_id = $1", made["userId"]
    )
    assert stored == expires_at
    left = expires_at.timestamp() - time.time()
    assert 1 < left <= 6

    assert await works(world, made["token"], human.user_id)
    _, key = await pat_of(world, made["userId"])
    assert 0 < await world.ctx.redis.pttl(key) <= left * 1000  # not past the expiry
    await world.ctx.redis.persist(key)  # as if Redis had kept it longer

    await asyncio.sleep(expires_at.timestamp() - time.time() + 0.3)
    assert await world.ctx.redis.exists(key)
    assert not await works(world, made["token"], human.user_id)  # refused by the entry
    await world.ctx.redis.delete(key)
    assert not await works(world, made["token"], human.user_id)  # and by Postgres


async def test_token_list_shows_pats_without_secrets(world: World) -> None:
    org_id = await world.org()
    other = await world.org()
    plain, expiring, elsewhere = (
        one_json_line(result)
        for result in identity_many(
            world.settings,
            ("token", "create", "--org", org_id, "--role", "ORG_OWNER"),
            (
                "token",
                "create",
                "--org",
                org_id,
                "--role",
                "ORG_USER_MANAGER",
                "--expires-in",
                "90d",
            ),
            ("token", "create", "--org", other, "--role", "ORG_OWNER"),
        )
    )
    assert set(plain) == {"userId", "token"}

    result = identity(world.settings, "token", "list", "--org", org_id)
    listed = one_json_line(result)
    assert set(listed) == {"tokens"}
    rows = {row["userId"]: row for row in listed["tokens"]}
    assert set(rows) == {plain["userId"], expiring["userId"]}
    for made, role in ((plain, "ORG_OWNER"), (expiring, "ORG_USER_MANAGER")):
        row = rows[made["userId"]]
        assert set(row) == PAT_FIELDS
        token_id, _ = await pat_of(world, made["userId"])
        assert row["id"] == token_id
        assert (row["orgId"], row["role"], row["revokedAt"]) == (org_id, role, None)
        assert datetime.fromisoformat(row["createdAt"]).timestamp() <= time.time()
    assert rows[plain["userId"]]["expiresAt"] is None
    assert datetime.fromisoformat(rows[expiring["userId"]]["expiresAt"]) == (
        datetime.fromisoformat(expiring["expiresAt"])
    )
    # Neither the tokens nor their digests, in any spelling.
    digests = await world.db.fetch(
        "SELECT token_hash FROM personal_access_tokens WHERE user_id = ANY($1::text[])",
        [plain["userId"], expiring["userId"]],
    )
    for secret in (plain["token"], expiring["token"]):
        assert secret not in result.stdout
    for row in digests:
        digest = row["token_hash"]
        for spelling in (digest.hex(), base64.b64encode(digest).decode()):
            assert spelling not in result.stdout

    everything = one_json_line(identity(world.settings, "token", "list"))
    users = {row["userId"] for row in everything["tokens"]}
    assert {plain["userId"], expiring["userId"], elsewhere["userId"]} <= users


async def test_token_revoke_stops_a_cached_pat_at_once(world: World) -> None:
    org_id, admin = await world.admin()
    human = await world.human(admin, org_id)
    made = one_json_line(
        identity(world.settings, "token", "create", "--org", org_id, "--role", "ORG_OWNER")
    )
    assert await works(world, made["token"], human.user_id)
    token_id, key = await pat_of(world, made["userId"])
    assert await world.ctx.redis.exists(key)

    revoked = one_json_line(identity(world.settings, "token", "revoke", token_id))
    assert set(revoked) == {"tokenId", "revokedAt"}
    assert revoked["tokenId"] == token_id
    assert not await world.ctx.redis.exists(key)
    assert not await works(world, made["token"], human.user_id)
    # The administrator's PAT is another one: untouched.
    assert await works(world, admin, human.user_id)

    listed = one_json_line(identity(world.settings, "token", "list", "--org", org_id))
    row = next(r for r in listed["tokens"] if r["id"] == token_id)
    assert row["revokedAt"] == revoked["revokedAt"]
    # Revoking again keeps the first time.
    again = one_json_line(identity(world.settings, "token", "revoke", token_id))
    assert again == revoked


async def test_cli_refuses_bad_expires_in_and_unknown_ids(world: World) -> None:
    org_id = await world.org()
    bad = ("0", "-5", "10x", "abc", "1.5h", "3651d", "")
    results = identity_many(
        world.settings,
        *[
            ("token", "create", "--org", org_id, "--role", "ORG_OWNER", "--expires-in", value)
            for value in bad
        ],
        ("token", "revoke", "no-such-token"),
        ("token", "list", "--org", "no-such-org"),
    )
    for result in results[: len(bad)]:
        refused(result, "--expires-in")
        assert "invalid duration" in result.stderr
    refused(results[-2], "personal access token no-such-token not found")
    refused(results[-1], "organization no-such-org not found")
    # Nothing was made for the bad durations.
    assert await world.db.fetchval("SELECT count(*) FROM users WHERE org_id = $1", org_id) == 0
