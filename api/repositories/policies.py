"""The ``policies`` table: an organization's overrides of the instance's password policy.

The overrides are also read with the user (``api.repositories.users``), in one query.
"""

from __future__ import annotations

from typing import Any

from api.db import Connection, Pool

_GET_OVERRIDES = "SELECT settings FROM policies WHERE org_id = $1"
_UPSERT = """
INSERT INTO policies (org_id, settings) VALUES ($1, $2::jsonb)
ON CONFLICT (org_id) DO UPDATE
SET settings = policies.settings || EXCLUDED.settings, updated_at = clock_timestamp()
"""


async def get_overrides(db: Pool | Connection, org_id: str) -> dict[str, Any] | None:
    overrides: dict[str, Any] | None = await db.fetchval(_GET_OVERRIDES, org_id)
    return overrides


async def merge_overrides(db: Pool | Connection, org_id: str, updates: dict[str, Any]) -> None:
    await db.execute(_UPSERT, org_id, updates)
