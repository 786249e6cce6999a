"""Helpers shared by the change-password tests (issue 3): apps with custom settings, direct
looks at the real stores (Postgres rows, the Redis code key), and small request shortcuts."""

from __future__ import annotations

import time
from typing import Any

import httpx
import redis.asyncio as aioredis

from api.domain import policies
from api.kv import Keys
from api.settings import Settings
from tests.support import STRONG_PASSWORD, Human, World, bearer, world_with

# Strong passwords (default policy: 8+ characters, lower, upper, digit, symbol; not common).
NEW_PASSWORD = "N3w!Passw0rd-x"
OTHER_PASSWORD = "0ther!Passw0rd-y"


async def change(
    world: World,
    token: str,
    user_id: str,
    new_password: str,
    *,
    current: str | None = None,
    code: str | None = None,
    change_required: bool | None = None,
) -> httpx.Response:
    new: dict[str, Any] = {"password": new_password}
    if change_required is not None:
        new["changeRequired"] = change_required
    body: dict[str, Any] = {"newPassword": new}
    if current is not None:
        body["currentPassword"] = current
    if code is not None:
        body["verificationCode"] = code
    return await world.set_password(token, user_id, body)


async def reset(world: World, token: str, user_id: str, body: Any) -> httpx.Response:
    response: httpx.Response = await world.client.post(
        f"/v2/users/{user_id}/password_reset", json=body, headers=bearer(token)
    )
    return response


async def logs_in(world: World, user: Human, password: str) -> bool:
    """True on 201; False on the contract's wrong-password answer; anything else fails."""
    response = await world.try_login(user.username, password)
    if response.status_code == 201:
        return True
    assert response.status_code == 400, response.text
    assert response.json()["details"][0]["id"] == "COMMAND-3M0fs", response.text
    return False


async def set_org_policy(world: World, org_id: str, **updates: Any) -> None:
    await policies.set_policy(ctx=world.ctx, org_id=org_id, updates=updates)


async def user_row(world: World, user_id: str) -> Any:
    return await world.db.fetchrow("SELECT * FROM users WHERE id = $1", user_id)


async def failed_attempts(world: World, user_id: str) -> int:
    value = await world.db.fetchval(
        "SELECT failed_password_attempts FROM users WHERE id = $1", user_id
    )
    return int(value)


async def user_state(world: World, token: str, user_id: str) -> str:
    response = await world.client.get(f"/v2/users/{user_id}", headers=bearer(token))
    assert response.status_code == 200, response.text
    state: str = response.json()["user"]["state"]
    return state


async def post_state(world: World, token: str, user_id: str, action: str) -> None:
    response = await world.client.post(f"/v2/users/{user_id}/{action}", headers=bearer(token))
    assert response.status_code == 200, response.text


def redis_client(settings: Settings) -> aioredis.Redis:
    return aioredis.Redis.from_url(settings.redis_url)


async def expire_code(settings: Settings, user_id: str) -> None:
    """Move the stored code's expiry into the past (the real store's field, not a mock)."""
    key = Keys(settings.redis_prefix).reset_code(user_id)
    client = redis_client(settings)
    try:
        assert await client.exists(key), "no code stored"
        await client.hset(key, "exp", int(time.time() * 1000) - 60_000)
    finally:
        await client.aclose()


async def setup_user(world: World, **kwargs: Any) -> tuple[str, str, Human]:
    """A fresh organization, its ORG_OWNER token and one human in it."""
    org_id, admin = await world.admin()
    user = await world.human(admin, org_id, **kwargs)
    return org_id, admin, user


__all__ = [
    "NEW_PASSWORD",
    "OTHER_PASSWORD",
    "STRONG_PASSWORD",
    "change",
    "expire_code",
    "failed_attempts",
    "logs_in",
    "post_state",
    "redis_client",
    "reset",
    "set_org_policy",
    "setup_user",
    "user_row",
    "user_state",
    "world_with",
]
