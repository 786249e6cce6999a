"""Module-scoped fixtures for the foundation tests (roles, error kinds): one app, one event
loop and one set of organizations and tokens per test module, so that a large matrix of small
tests does not start an app per test. Each test still makes the users it changes.

A module using them sets ``pytestmark = pytest.mark.asyncio(loop_scope="module")`` and
imports ``mworld`` and ``actors``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest_asyncio

from api.settings import Settings
from tests.support import World, world_with


@dataclass(frozen=True)
class Actors:
    org_id: str
    owner: str  # ORG_OWNER of org_id
    manager: str  # ORG_USER_MANAGER of org_id
    iam_elsewhere: str  # IAM_OWNER whose own organization is another one
    other_org_id: str
    other_owner: str  # ORG_OWNER of other_org_id


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mworld(base_settings: Settings) -> AsyncIterator[World]:
    async with world_with(base_settings) as world:
        yield world


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def actors(mworld: World) -> Actors:
    org_id, owner = await mworld.admin()
    elsewhere = await mworld.org()
    other_org_id, other_owner = await mworld.admin()
    return Actors(
        org_id=org_id,
        owner=owner,
        manager=await mworld.token(org_id, "ORG_USER_MANAGER"),
        iam_elsewhere=await mworld.token(elsewhere, "IAM_OWNER"),
        other_org_id=other_org_id,
        other_owner=other_owner,
    )
