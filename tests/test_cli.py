"""The real ``identity`` console script, run as subprocesses against databases of its own.

Each test that needs the command line's database makes a uniquely named one and drops it at
the end; the Redis keys live under a prefix of their own. Tokens the command line prints are
tried against the app (in process) built on the same database.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis as sync_redis
from litestar.testing import AsyncTestClient

from api.domain.policies import POLICY_KEYS
from api.http.app import create_app
from api.migrate import MIGRATIONS_DIR, MigrationError, ensure_database, migrate
from api.settings import Settings
from tests.support import STRONG_PASSWORD, assert_error, bearer

ADMIN_URL = os.environ.get(
    "IDENTITY_TEST_DATABASE_ADMIN_URL", "postgresql://root@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("IDENTITY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IDENTITY = str(Path(sys.executable).with_name("identity"))
CLI_SECRET = "cli-test-secret-0123456789abcdef0123456789"
MIGRATION_NAMES = sorted(p.name for p in MIGRATIONS_DIR.glob("*.sql"))


# --- helpers ----------------------------------------------------------------------------


def db_url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def unique_name(kind: str) -> str:
    return f"identity_cli_{kind}_{uuid.uuid4().hex[:10]}"


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_db(name: str) -> None:
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))


def drop_db(name: str) -> None:
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def cli_env(url: str, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDENTITY_")}
    env.update(
        IDENTITY_DATABASE_URL=url,
        IDENTITY_REDIS_URL=REDIS_URL,
        IDENTITY_REDIS_PREFIX=prefix,
        IDENTITY_SECRET_KEY=CLI_SECRET,
        IDENTITY_BROKER_URL="memory://",
    )
    return env


def identity(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [IDENTITY, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def identity_many(
    env: dict[str, str], commands: list[tuple[str, ...]]
) -> list[subprocess.CompletedProcess[str]]:
    """Run independent commands at the same time (each one is mostly start-up)."""
    procs = [
        subprocess.Popen(
            [IDENTITY, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
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


class CliDb:
    def __init__(self, name: str, prefix: str) -> None:
        self.name = name
        self.url = db_url(name)
        self.prefix = prefix
        self.env = cli_env(self.url, prefix)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return identity(self.env, *args)

    def run_many(self, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
        return identity_many(self.env, list(commands))


@pytest.fixture
def fresh_db() -> Iterator[CliDb]:
    """A database name that does not exist yet (``identity migrate`` creates it)."""
    prefix = f"test-cli-{uuid.uuid4().hex[:8]}:"
    db = CliDb(unique_name("fresh"), prefix)
    yield db
    drop_db(db.name)


@pytest.fixture(scope="module")
def cli_db() -> Iterator[CliDb]:
    """A database set up by ``identity migrate``, shared by this module's command tests."""
    prefix = f"test-cli-{uuid.uuid4().hex[:8]}:"
    db = CliDb(unique_name("shared"), prefix)
    one_json_line(db.run("migrate"))
    yield db
    drop_db(db.name)
    client = sync_redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@asynccontextmanager
async def app_for(
    db: CliDb, make_settings: Callable[..., Settings]
) -> AsyncIterator[AsyncTestClient[Any]]:
    settings = make_settings(database_url=db.url, redis_prefix=db.prefix, secret_key=CLI_SECRET)
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


def human_body(org_id: str, username: str, password: str = STRONG_PASSWORD) -> dict[str, Any]:
    return {
        "username": username,
        "organization": {"orgId": org_id},
        "profile": {"givenName": "Cli", "familyName": "User"},
        "email": {"email": f"{username}@example.com"},
        "password": {"password": password},
    }


# --- migrate ----------------------------------------------------------------------------


def test_migrate_creates_database_prints_one_line_and_is_idempotent(fresh_db: CliDb) -> None:
    first = one_json_line(fresh_db.run("migrate"))
    assert first == {"databaseCreated": True, "applied": MIGRATION_NAMES}
    second = one_json_line(fresh_db.run("migrate"))
    assert second == {"databaseCreated": False, "applied": []}
    rows = asyncio.run(
        fetch(fresh_db.url, "SELECT version, name, checksum FROM schema_migrations ORDER BY 1")
    )
    assert [r["name"] for r in rows] == MIGRATION_NAMES
    for row in rows:
        sql = (MIGRATIONS_DIR / row["name"]).read_bytes()
        assert row["checksum"] == hashlib.sha256(sql).hexdigest()
    tables = asyncio.run(
        fetch(fresh_db.url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    )
    assert {
        "organizations",
        "users",
        "events",
        "sessions",
        "personal_access_tokens",
        "outbox",
        "password_history",
        "policies",
        "schema_migrations",
    } <= {r["tablename"] for r in tables}


PG_SOCKET_DIR = "/var/run/postgresql"


@pytest.mark.skipif(
    not Path(PG_SOCKET_DIR, ".s.PGSQL.5432").exists(), reason="no Postgres socket here"
)
def test_migrate_creates_a_database_named_in_a_unix_socket_url() -> None:
    """``?host=/dir`` names a socket directory: the database to create is the path's, and
    the server the same socket (an earlier version cut the URL at the query's last '/')."""
    name = unique_name("socket")
    url = f"postgresql://root@/{name}?host={PG_SOCKET_DIR}"
    try:
        assert asyncio.run(ensure_database(url)) is True
        assert asyncio.run(migrate(url)) == MIGRATION_NAMES
        assert asyncio.run(ensure_database(url)) is False
        rows = asyncio.run(fetch(url, "SELECT current_database() AS db"))
        assert rows[0]["db"] == name
    finally:
        drop_db(name)


def test_concurrent_migrate_applies_each_migration_once() -> None:
    """Two ``identity migrate`` started together, on an empty database and on one that does
    not exist yet, several rounds: both succeed and each file is applied exactly once."""
    for database_exists in (True, False, True, False):
        name = unique_name("race")
        if database_exists:
            create_db(name)
        env = cli_env(db_url(name), f"test-cli-race-{uuid.uuid4().hex[:8]}:")
        try:
            results = identity_many(env, [("migrate",), ("migrate",)])
            outputs = [one_json_line(result) for result in results]
            applied = [name for output in outputs for name in output["applied"]]
            assert sorted(applied) == MIGRATION_NAMES, outputs
            created = sorted(output["databaseCreated"] for output in outputs)
            assert created == ([False, False] if database_exists else [False, True]), outputs
            rows = asyncio.run(fetch(db_url(name), "SELECT name FROM schema_migrations"))
            assert sorted(r["name"] for r in rows) == MIGRATION_NAMES
        finally:
            drop_db(name)


async def test_edited_migration_is_a_clear_error(tmp_path: Path) -> None:
    name = unique_name("edit")
    await _admin(f'CREATE DATABASE "{name}"')
    url = db_url(name)
    try:
        directory = tmp_path / "migrations"
        shutil.copytree(MIGRATIONS_DIR, directory)
        assert await migrate(url, directory) == MIGRATION_NAMES
        # A new file is applied on its own; the applied ones are left alone.
        (directory / "9001_extra.sql").write_text("CREATE TABLE extra (id int);\n")
        assert await migrate(url, directory) == ["9001_extra.sql"]
        first = directory / MIGRATION_NAMES[0]
        first.write_text(first.read_text() + "\n-- an edit after the fact\n")
        with pytest.raises(MigrationError, match=rf"{MIGRATION_NAMES[0]} was edited after it"):
            await migrate(url, directory)
        # Nothing was applied twice and the lock was released: the next run still answers.
        rows = await fetch(url, "SELECT name FROM schema_migrations ORDER BY version")
        assert [r["name"] for r in rows] == [*MIGRATION_NAMES, "9001_extra.sql"]
        with pytest.raises(MigrationError, match="was edited after it was applied"):
            await migrate(url, directory)
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_cli_migrate_reports_an_edited_migration(fresh_db: CliDb) -> None:
    one_json_line(fresh_db.run("migrate"))
    asyncio.run(
        fetch(fresh_db.url, "UPDATE schema_migrations SET checksum = 'deadbeef' || checksum")
    )
    result = fresh_db.run("migrate")
    assert result.returncode != 0
    assert result.stdout == ""
    assert "was edited after it was applied" in result.stderr
    assert "Traceback" not in result.stderr


# --- bootstrap, organizations, tokens ---------------------------------------------------


async def test_bootstrap_twice_same_org_and_user_new_tokens(
    cli_db: CliDb, make_settings: Callable[..., Settings]
) -> None:
    first = one_json_line(cli_db.run("bootstrap"))
    second = one_json_line(cli_db.run("bootstrap"))
    assert set(first) == {"organizationId", "userId", "token"}
    assert first["organizationId"] == second["organizationId"]
    assert first["userId"] == second["userId"]
    assert first["token"] != second["token"]
    # Tokens are stored only as digests.
    stored = await fetch(
        cli_db.url,
        "SELECT token_hash FROM personal_access_tokens WHERE user_id = $1",
        first["userId"],
    )
    assert len(stored) == 2
    assert all(first["token"].encode() not in r["token_hash"] for r in stored)

    other_org = one_json_line(cli_db.run("org", "create", "Elsewhere"))["organizationId"]
    async with app_for(cli_db, make_settings) as client:
        for n, result in enumerate((first, second)):
            me = await client.get(f"/v2/users/{result['userId']}", headers=bearer(result["token"]))
            assert me.status_code == 200, me.text
            assert me.json()["user"]["username"] == "iam-owner"
            # IAM_OWNER: it may create users in any organization.
            for org in (first["organizationId"], other_org):
                created = await client.post(
                    "/v2/users/human",
                    json=human_body(org, f"boot-{n}"),
                    headers=bearer(result["token"]),
                )
                assert created.status_code == 201, created.text


async def test_org_create_and_token_create(
    cli_db: CliDb, make_settings: Callable[..., Settings]
) -> None:
    org = one_json_line(cli_db.run("org", "create", "Acme Widgets"))
    assert set(org) == {"organizationId"}
    rows = await fetch(
        cli_db.url, "SELECT name, domain FROM organizations WHERE id = $1", org["organizationId"]
    )
    assert [(r["name"], r["domain"]) for r in rows] == [("Acme Widgets", "acme-widgets.localhost")]
    other = one_json_line(cli_db.run("org", "create", "Other Org"))["organizationId"]

    made = one_json_line(
        cli_db.run("token", "create", "--org", org["organizationId"], "--role", "ORG_OWNER")
    )
    assert set(made) == {"userId", "token"}
    role = await fetch(
        cli_db.url, "SELECT role, kind, org_id FROM users WHERE id = $1", made["userId"]
    )
    assert [tuple(r) for r in role] == [("ORG_OWNER", "machine", org["organizationId"])]

    async with app_for(cli_db, make_settings) as client:
        inside = await client.post(
            "/v2/users/human",
            json=human_body(org["organizationId"], "acme-user"),
            headers=bearer(made["token"]),
        )
        assert inside.status_code == 201, inside.text
        outside = await client.post(
            "/v2/users/human", json=human_body(other, "not-mine"), headers=bearer(made["token"])
        )
        assert_error(outside, 403, 7, "AUTH-AWfge", "No matching permissions found")


async def test_org_create_refuses_a_name_that_is_blank_too_long_or_unprintable(
    cli_db: CliDb,
) -> None:
    before = await fetch(cli_db.url, "SELECT count(*) AS n FROM organizations")
    for name in ("", "   ", "x" * 201, "tab\there"):
        result = cli_db.run("org", "create", name)
        assert result.returncode == 2, (name, result)
        assert result.stdout == ""
        assert "organization name must be 1..200 printable characters" in result.stderr
    after = await fetch(cli_db.url, "SELECT count(*) AS n FROM organizations")
    assert after[0]["n"] == before[0]["n"]
    # Surrounding blanks are trimmed; a 200-character name is fine.
    made = one_json_line(cli_db.run("org", "create", "  Trimmed Org  "))
    rows = await fetch(
        cli_db.url, "SELECT name FROM organizations WHERE id = $1", made["organizationId"]
    )
    assert rows[0]["name"] == "Trimmed Org"
    assert cli_db.run("org", "create", "y" * 200).returncode == 0


def test_token_create_refuses_unknown_role_and_org(cli_db: CliDb) -> None:
    org = one_json_line(cli_db.run("org", "create", "Role Test"))["organizationId"]
    bad_role, no_org = cli_db.run_many(
        ("token", "create", "--org", org, "--role", "SUPERUSER"),
        ("token", "create", "--org", "123", "--role", "ORG_OWNER"),
    )
    assert bad_role.returncode != 0
    assert bad_role.stdout == ""
    assert "SUPERUSER" in bad_role.stderr
    assert no_org.returncode != 0
    assert no_org.stdout == ""
    assert "not found" in no_org.stderr


# --- policies ---------------------------------------------------------------------------


async def test_policy_show_and_set(cli_db: CliDb, make_settings: Callable[..., Settings]) -> None:
    org = one_json_line(cli_db.run("org", "create", "Policy Org"))["organizationId"]
    defaults = Settings()
    expected = {key: getattr(defaults, f"policy_{key}") for key in POLICY_KEYS}
    shown = one_json_line(cli_db.run("policy", "show", "--org", org))
    assert shown == expected
    assert set(shown) == {
        "min_length",
        "has_lowercase",
        "has_uppercase",
        "has_number",
        "has_symbol",
        "blocklist",
        "history",
        "max_password_attempts",
        "max_code_attempts",
        "code_expiry_seconds",
        "notify_password_change",
        "reset_requests_per_hour",
        "lockout_duration_seconds",
    }

    changed = one_json_line(cli_db.run("policy", "set", "--org", org, "min_length=12", "history=3"))
    assert changed == {**expected, "min_length": 12, "history": 3}
    assert one_json_line(cli_db.run("policy", "show", "--org", org)) == changed
    # A later set keeps the earlier keys.
    again = one_json_line(cli_db.run("policy", "set", "--org", org, "has_symbol=false"))
    assert again == {**changed, "has_symbol": False}

    # The app applies it: 11 characters are too short in this organization now.
    token = one_json_line(cli_db.run("token", "create", "--org", org, "--role", "ORG_OWNER"))
    async with app_for(cli_db, make_settings) as client:
        short = await client.post(
            "/v2/users/human",
            json=human_body(org, "short-pw", "Sh0rtPassw1"),
            headers=bearer(token["token"]),
        )
        assert_error(short, 400, 3, "DOMAIN-HuJf6", "Password is too short")
        enough = await client.post(
            "/v2/users/human",
            json=human_body(org, "long-pw", "L0ngEnoughPw"),
            headers=bearer(token["token"]),
        )
        assert enough.status_code == 201, enough.text


BAD_PAIRS = [
    ("nonsense=1", "unknown policy key 'nonsense'"),
    ("min_length", "unknown policy key 'min_length'"),
    ("min_length=abc", "min_length must be a whole number"),
    ("min_length=0", "min_length must be between 1 and 200"),
    ("has_symbol=maybe", "has_symbol must be true or false"),
]


def test_policy_set_bad_input(cli_db: CliDb) -> None:
    org = one_json_line(cli_db.run("org", "create", "Bad Input"))["organizationId"]
    results = cli_db.run_many(
        *[("policy", "set", "--org", org, pair) for pair, _ in BAD_PAIRS],
        # One good key with a bad one: nothing of it is stored either.
        ("policy", "set", "--org", org, "history=5", "bogus=1"),
        ("policy", "show", "--org", "404"),
        ("policy", "set", "--org", "404", "history=2"),
    )
    expected = [words for _, words in BAD_PAIRS] + ["unknown policy key 'bogus'"]
    for result, words in zip(results, expected, strict=False):
        assert result.returncode != 0, result.args
        assert result.stdout == ""
        assert words in result.stderr, (result.args, result.stderr)
        assert "Traceback" not in result.stderr
    for result in results[-2:]:
        assert result.returncode != 0, result.args
        assert result.stdout == ""
        assert re.search(r"not (be )?found", result.stderr.lower()), result.stderr
    shown = one_json_line(cli_db.run("policy", "show", "--org", org))
    defaults = Settings()
    assert shown == {key: getattr(defaults, f"policy_{key}") for key in POLICY_KEYS}
