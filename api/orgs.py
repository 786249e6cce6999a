"""Organizations: the tenants that own users and policies."""

from __future__ import annotations

import re

import msgspec

from api import events
from api.db import Connection, Pool
from api.ids import new_id


class Organization(msgspec.Struct, frozen=True):
    id: str
    name: str
    domain: str
    is_default: bool


_INSERT = """
WITH org AS (
    INSERT INTO organizations (id, name, domain, is_default) VALUES ($1, $2, $3, $4)
    RETURNING id, created_at
)
INSERT INTO events (aggregate_id, sequence, aggregate_type, event_type, payload, creator,
                    resource_owner, created_at)
SELECT id, 1, 'org', $5, jsonb_build_object('name', $2::text), $6, id, created_at FROM org
"""
_GET = "SELECT id, name, domain, is_default FROM organizations WHERE id = $1"
_GET_DEFAULT = "SELECT id, name, domain, is_default FROM organizations WHERE is_default"
_DOMAIN_TAKEN = "SELECT 1 FROM organizations WHERE domain = $1"


def _domain_for(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "org"
    return f"{slug}.localhost"


async def create_org(
    conn: Connection, *, name: str, is_default: bool = False, creator: str = ""
) -> Organization:
    org_id = new_id()
    domain = _domain_for(name)
    if await conn.fetchval(_DOMAIN_TAKEN, domain):
        domain = f"{domain.removesuffix('.localhost')}-{org_id[-6:]}.localhost"
    await conn.execute(_INSERT, org_id, name, domain, is_default, events.ORG_ADDED, creator)
    return Organization(org_id, name, domain, is_default)


async def get_org(db: Pool | Connection, org_id: str) -> Organization | None:
    row = await db.fetchrow(_GET, org_id)
    return Organization(**dict(row)) if row else None


async def get_default_org(db: Pool | Connection) -> Organization | None:
    row = await db.fetchrow(_GET_DEFAULT)
    return Organization(**dict(row)) if row else None
