"""``identity``: migrate, bootstrap, organizations, tokens, policies and the HTTP server.

Commands that the contract says print JSON print exactly one JSON line on stdout; errors go
to stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
import msgspec

from api import logs
from api.domain import orgs, policies, tokens
from api.domain.auth import ROLES
from api.domain.context import Context, context
from api.errors import OrganizationNotFound, ServiceError
from api.migrate import MigrationError, ensure_database, migrate
from api.serve import SERVERS, serve
from api.settings import Settings, get_settings

Command = Callable[[Context, argparse.Namespace], Coroutine[Any, Any, None]]


def _print(value: Any) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")
    sys.stdout.flush()


async def cmd_migrate(settings: Settings, _: argparse.Namespace) -> None:
    created = await ensure_database(settings.database_url)
    applied = await migrate(settings.database_url)
    _print({"databaseCreated": created, "applied": applied})


async def cmd_bootstrap(ctx: Context, _: argparse.Namespace) -> None:
    _print(await orgs.bootstrap(ctx=ctx))


async def cmd_org_create(ctx: Context, args: argparse.Namespace) -> None:
    org = await orgs.create_org(ctx=ctx, name=args.name)
    _print({"organizationId": org.id})


async def cmd_token_create(ctx: Context, args: argparse.Namespace) -> None:
    if args.expires_in is None:
        user_id, token = await orgs.create_machine_token(ctx=ctx, org_id=args.org, role=args.role)
        _print({"userId": user_id, "token": token})
        return
    expires_at = tokens.expiry_after(args.expires_in)
    user_id, token = await orgs.create_machine_token(
        ctx=ctx, org_id=args.org, role=args.role, expires_at=expires_at
    )
    _print({"userId": user_id, "token": token, "expiresAt": expires_at})


async def cmd_token_list(ctx: Context, args: argparse.Namespace) -> None:
    _print(await tokens.list_personal_access_tokens(ctx=ctx, org_id=args.org))


async def cmd_token_revoke(ctx: Context, args: argparse.Namespace) -> None:
    _print(await tokens.revoke_personal_access_token(ctx=ctx, token_id=args.token_id))


def _duration(text: str) -> int:
    try:
        return tokens.parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


async def cmd_policy_show(ctx: Context, args: argparse.Namespace) -> None:
    policy = await policies.get_policy(ctx=ctx, org_id=args.org)
    _print(msgspec.structs.asdict(policy))


async def cmd_policy_set(ctx: Context, args: argparse.Namespace) -> None:
    updates = policies.parse_policy_updates(args.pairs)
    policy = await policies.set_policy(ctx=ctx, org_id=args.org, updates=updates)
    _print(msgspec.structs.asdict(policy))


async def _with_context(settings: Settings, command: Command, args: argparse.Namespace) -> None:
    async with context(settings, min_size=0, max_size=1) as ctx:
        await command(ctx, args)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    serve(
        settings,
        host=args.host or settings.host,
        port=args.port,
        workers=args.workers,
        server=args.server,
        grpc_port=args.grpc_port,
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
    token_create.add_argument("--role", required=True, choices=ROLES)
    token_create.add_argument(
        "--expires-in",
        type=_duration,
        metavar="DURATION",
        help="the PAT stops working after this long: seconds, or e.g. 15m, 12h, 90d, 2w "
        "(default: until revoked)",
    )
    token_list = token.add_parser("list", help="the PATs, without their secrets → {tokens}")
    token_list.add_argument("--org", help="only the PATs of this organization's machine users")
    token_revoke = token.add_parser("revoke", help="revoke a PAT: refused at once")
    token_revoke.add_argument("token_id", metavar="TOKEN_ID", help="its id (see token list)")

    policy = sub.add_parser("policy", help="password policies").add_subparsers(
        dest="policy_command", required=True
    )
    show = policy.add_parser("show", help="the organization's effective policy")
    show.add_argument("--org", required=True)
    set_ = policy.add_parser("set", help="set policy keys: " + ", ".join(policies.POLICY_KEYS))
    set_.add_argument("--org", required=True)
    set_.add_argument("pairs", nargs="+", metavar="KEY=VALUE")

    sub.add_parser("relay", help="publish committed outbox rows to Celery (woken by Postgres)")
    serve = sub.add_parser("serve", help="run the API: REST, Connect, gRPC-Web and gRPC")
    serve.add_argument("--host", default=None, help="default: IDENTITY_HOST (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--workers",
        type=int,
        default=0,
        help="server processes (0, the default: one per four cores, at least one; the cores'"
        " hash threads are shared among them)",
    )
    serve.add_argument("--server", choices=SERVERS, default=SERVERS[0])
    serve.add_argument(
        "--grpc-port",
        type=int,
        default=0,
        help="with --server uvicorn (HTTP/1.1 only): serve native gRPC on this port (0: none)",
    )
    return parser


_COMMANDS: dict[tuple[str, str | None], Command] = {
    ("bootstrap", None): cmd_bootstrap,
    ("org", "create"): cmd_org_create,
    ("token", "create"): cmd_token_create,
    ("token", "list"): cmd_token_list,
    ("token", "revoke"): cmd_token_revoke,
    ("policy", "show"): cmd_policy_show,
    ("policy", "set"): cmd_policy_set,
}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    logs.configure(settings, process=args.command)
    if args.command != "migrate":  # migrations hold no secret
        settings.require_secret_key(args.command)
    if args.command == "serve":
        cmd_serve(settings, args)
        return
    if args.command == "relay":
        from workers.relay import main as relay

        relay()
        return
    sub = getattr(args, f"{args.command}_command", None)
    try:
        if args.command == "migrate":
            asyncio.run(cmd_migrate(settings, args))
        else:
            asyncio.run(_with_context(settings, _COMMANDS[(args.command, sub)], args))
    except OrganizationNotFound:
        sys.stderr.write(f"identity: organization {getattr(args, 'org', '')} not found\n")
        raise SystemExit(2) from None
    except (MigrationError, ServiceError) as exc:
        sys.stderr.write(f"identity: {exc}\n")
        raise SystemExit(2) from None
    except (OSError, asyncpg.PostgresError) as exc:
        sys.stderr.write(f"identity: database error: {type(exc).__name__}: {exc}\n")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
