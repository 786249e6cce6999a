"""The ``organizations`` table: every SQL statement that reads or writes it."""

from __future__ import annotations

import msgspec

from api.db import Connection, Pool
from api.repositories import events


class Organization(msgspec.Struct, frozen=True):
    id: str
    name: str
    domain: str
    is_default: bool


_INSERT = f"""
WITH org AS (
    INSERT INTO organizations (id, name, domain, is_default) VALUES ($1, $2, $3, $4)
    RETURNING id AS aggregate_id, 1 AS sequence, id AS resource_owner, created_at,
              jsonb_build_object('name', name) AS payload, $5::text AS creator
), {events.append("org", events.ORG, events.ORG_ADDED)}
SELECT sequence FROM ev
"""
_GET = "SELECT id, name, domain, is_default FROM organizations WHERE id = $1"
_GET_DEFAULT = "SELECT id, name, domain, is_default FROM organizations WHERE is_default"
_DOMAIN_TAKEN = "SELECT 1 FROM organizations WHERE domain = $1"
# Held by ``identity bootstrap`` until its transaction ends: concurrent runs make one default.
_BOOTSTRAP_LOCK = "SELECT pg_advisory_xact_lock(490385415)"


async def insert(db: Pool | Connection, org: Organization, *, creator: str) -> None:
    await db.execute(_INSERT, org.id, org.name, org.domain, org.is_default, creator)


async def get(db: Pool | Connection, org_id: str) -> Organization | None:
    row = await db.fetchrow(_GET, org_id)
    return Organization(**dict(row)) if row else None


async def get_default(db: Pool | Connection) -> Organization | None:
    row = await db.fetchrow(_GET_DEFAULT)
    return Organization(**dict(row)) if row else None


async def lock_for_bootstrap(conn: Connection) -> None:
    await conn.execute(_BOOTSTRAP_LOCK)


async def domain_taken(db: Pool | Connection, domain: str) -> bool:
    return bool(await db.fetchval(_DOMAIN_TAKEN, domain))
