"""Organizations, and the instance's first one: the tenants that own users and policies.
Made from the command line (``identity bootstrap``, ``org create``, ``token create``)."""

from __future__ import annotations

import re
from datetime import datetime

import msgspec

from api.db import Connection, Pool
from api.domain.auth import create_personal_access_token, forget_user_tokens
from api.domain.context import Context
from api.domain.users import create_machine_user
from api.errors import InvalidArgument, OrganizationNotFound
from api.ids import new_id
from api.repositories import orgs, users
from api.repositories.orgs import Organization
from api.repositories.users import ACTIVE, INACTIVE, LOCKED, Command

_IAM_OWNER = "IAM_OWNER"
_IAM_OWNER_USERNAME = "iam-owner"
_MAX_NAME = 200


def _domain_for(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "org"
    return f"{slug}.localhost"


async def create_org(
    *,
    ctx: Context,
    name: str,
    is_default: bool = False,
    creator: str = "cli",
    db: Pool | Connection | None = None,
) -> Organization:
    """A new organization; its domain comes from the name (made unique when taken)."""
    name = name.strip()
    if not 1 <= len(name) <= _MAX_NAME or not name.isprintable():
        raise InvalidArgument(f"organization name must be 1..{_MAX_NAME} printable characters")
    db = db or ctx.pool
    org_id = new_id()
    domain = _domain_for(name)
    if await orgs.domain_taken(db, domain):
        domain = f"{domain.removesuffix('.localhost')}-{org_id[-6:]}.localhost"
    org = Organization(org_id, name, domain, is_default)
    await orgs.insert(db, org, creator=creator)
    return org


class Bootstrapped(msgspec.Struct, frozen=True, rename="camel"):
    organization_id: str
    user_id: str
    token: str


async def bootstrap(*, ctx: Context) -> Bootstrapped:
    """The default organization and its IAM_OWNER machine user (made once), and a new PAT.

    Safe to run concurrently: the first run creates, the others find."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        await orgs.lock_for_bootstrap(conn)
        org = await orgs.get_default(conn)
        if org is None:
            org = await create_org(ctx=ctx, name="Default", is_default=True, db=conn)
        owner = await users.find_machine_user(
            conn, org_id=org.id, role=_IAM_OWNER, username=_IAM_OWNER_USERNAME
        )
        restored = False
        if owner is None:
            user_id = await create_machine_user(
                ctx=ctx, org_id=org.id, role=_IAM_OWNER, username=_IAM_OWNER_USERNAME, db=conn
            )
        else:
            user_id = owner.id
            if owner.removed or owner.state != ACTIVE:
                # Locked, deactivated or removed (by whoever could): the instance's owner is
                # the way back in, so bootstrap makes it active again.
                await users.restore(
                    conn,
                    Command(
                        user_id=user_id,
                        states=(ACTIVE, INACTIVE, LOCKED),
                        creator="bootstrap",
                        payload={"reason": "bootstrap"},
                    ),
                )
                restored = True
        token = await create_personal_access_token(ctx=ctx, user_id=user_id, db=conn)
    if restored:
        await forget_user_tokens(ctx=ctx, user_id=user_id)
    return Bootstrapped(org.id, user_id, token)


async def create_machine_token(
    *, ctx: Context, org_id: str, role: str, expires_at: datetime | None = None
) -> tuple[str, str]:
    """A new machine user with ``role`` in the organization, and its PAT (refused from
    ``expires_at`` on; None: until revoked)."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        if await orgs.get(conn, org_id) is None:
            raise OrganizationNotFound()
        user_id = new_id()
        username = f"{role.lower().replace('_', '-')}-{user_id}"
        await create_machine_user(
            ctx=ctx, org_id=org_id, role=role, username=username, user_id=user_id, db=conn
        )
        token = await create_personal_access_token(
            ctx=ctx, user_id=user_id, expires_at=expires_at, db=conn
        )
    return user_id, token
