"""``identity``: migrate, bootstrap, organizations, tokens, policies and the HTTP server.

Commands that the contract says print JSON print exactly one JSON line on stdout; errors go
to stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine
from typing import Any

import asyncpg
import msgspec

from api import auth, orgs, policies, users
from api.errors import ServiceError
from api.ids import new_id
from api.migrate import MigrationError, ensure_database, migrate
from api.settings import Settings, get_settings

_BOOTSTRAP_LOCK = 0x1D3A_B007


def _print(value: Any) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")
    sys.stdout.flush()


async def _connect(settings: Settings) -> asyncpg.Connection:
    from api.db import init_connection

    conn = await asyncpg.connect(settings.database_url)
    await init_connection(conn)
    return conn


async def cmd_migrate(settings: Settings, _: argparse.Namespace) -> None:
    created = await ensure_database(settings.database_url)
    applied = await migrate(settings.database_url)
    _print({"databaseCreated": created, "applied": applied})


async def _create_machine_user(
    conn: asyncpg.Connection, *, org_id: str, role: str, username: str
) -> str:
    user_id = new_id()
    await users.insert_user(
        conn,
        user_id=user_id,
        org_id=org_id,
        kind="machine",
        role=role,
        username=username,
        creator="cli",
    )
    return user_id


async def cmd_bootstrap(settings: Settings, _: argparse.Namespace) -> None:
    conn = await _connect(settings)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _BOOTSTRAP_LOCK)
            org = await orgs.get_default_org(conn)
            if org is None:
                org = await orgs.create_org(conn, name="Default", is_default=True, creator="cli")
            user_id = await conn.fetchval(
                "SELECT id FROM users WHERE org_id = $1 AND role = 'IAM_OWNER' "
                "AND kind = 'machine' AND username = 'iam-owner' AND deleted_at IS NULL",
                org.id,
            )
            if user_id is None:
                user_id = await _create_machine_user(
                    conn, org_id=org.id, role="IAM_OWNER", username="iam-owner"
                )
            token = await auth.create_personal_access_token(
                conn, secret_key=settings.secret_key, user_id=user_id
            )
    finally:
        await conn.close()
    _print({"organizationId": org.id, "userId": user_id, "token": token})


async def cmd_org_create(settings: Settings, args: argparse.Namespace) -> None:
    conn = await _connect(settings)
    try:
        org = await orgs.create_org(conn, name=args.name, creator="cli")
    finally:
        await conn.close()
    _print({"organizationId": org.id})


async def cmd_token_create(settings: Settings, args: argparse.Namespace) -> None:
    conn = await _connect(settings)
    try:
        async with conn.transaction():
            if await orgs.get_org(conn, args.org) is None:
                raise SystemExit(f"identity: organization {args.org} not found")
            user_id = new_id()
            await users.insert_user(
                conn,
                user_id=user_id,
                org_id=args.org,
                kind="machine",
                role=args.role,
                username=f"{args.role.lower().replace('_', '-')}-{user_id}",
                creator="cli",
            )
            token = await auth.create_personal_access_token(
                conn, secret_key=settings.secret_key, user_id=user_id
            )
    finally:
        await conn.close()
    _print({"userId": user_id, "token": token})


async def cmd_policy_show(settings: Settings, args: argparse.Namespace) -> None:
    conn = await _connect(settings)
    try:
        if await orgs.get_org(conn, args.org) is None:
            raise SystemExit(f"identity: organization {args.org} not found")
        policy = await policies.get_policy(conn, settings, args.org)
    finally:
        await conn.close()
    _print(msgspec.structs.asdict(policy))


async def cmd_policy_set(settings: Settings, args: argparse.Namespace) -> None:
    updates = policies.parse_policy_updates(args.pairs)
    conn = await _connect(settings)
    try:
        policy = await policies.set_policy(conn, settings, args.org, updates)
    finally:
        await conn.close()
    _print(msgspec.structs.asdict(policy))


def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    import os

    import uvicorn

    if args.workers > 1 and settings.hash_workers == 0:
        # Each server process has its own hash pool: share the cores between them rather
        # than run processes times cores hashing threads that only contend.
        cores = os.cpu_count() or 1
        os.environ["IDENTITY_HASH_WORKERS"] = str(max(1, cores // args.workers))

    uvicorn.run(
        "api.http.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.log_level.lower(),
        loop="uvloop",
        http="httptools",
        access_log=False,
        timeout_graceful_shutdown=10,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="identity", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create the database if needed and apply migrations")
    sub.add_parser("bootstrap", help="default organization + IAM_OWNER machine user + new PAT")

    org = sub.add_parser("org", help="organizations").add_subparsers(
        dest="org_command", required=True
    )
    org_create = org.add_parser("create", help="create an organization")
    org_create.add_argument("name")

    token = sub.add_parser("token", help="tokens").add_subparsers(
        dest="token_command", required=True
    )
    token_create = token.add_parser("create", help="machine user with a role, and its PAT")
    token_create.add_argument("--org", required=True)
    token_create.add_argument("--role", required=True, choices=auth.ROLES)

    policy = sub.add_parser("policy", help="password policies").add_subparsers(
        dest="policy_command", required=True
    )
    show = policy.add_parser("show", help="the organization's effective policy")
    show.add_argument("--org", required=True)
    set_ = policy.add_parser("set", help="set policy keys: " + ", ".join(policies.POLICY_KEYS))
    set_.add_argument("--org", required=True)
    set_.add_argument("pairs", nargs="+", metavar="KEY=VALUE")

    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1)
    return parser


_ASYNC = {
    ("migrate", None): cmd_migrate,
    ("bootstrap", None): cmd_bootstrap,
    ("org", "create"): cmd_org_create,
    ("token", "create"): cmd_token_create,
    ("policy", "show"): cmd_policy_show,
    ("policy", "set"): cmd_policy_set,
}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "serve":
        cmd_serve(settings, args)
        return
    sub = getattr(args, f"{args.command}_command", None)
    command = _ASYNC[(args.command, sub)]
    try:
        coroutine: Coroutine[Any, Any, None] = command(settings, args)
        asyncio.run(coroutine)
    except (MigrationError, ServiceError) as exc:
        sys.stderr.write(f"identity: {exc}\n")
        raise SystemExit(2) from None
    except (OSError, asyncpg.PostgresError) as exc:
        sys.stderr.write(f"identity: database error: {type(exc).__name__}: {exc}\n")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
