"""Redis: the client, key names and Lua-script calls that survive a Redis restart.

Every key starts with the configured prefix; keys of one user share the hash tag
``{user_id}`` so the scripts run unchanged on Redis Cluster.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from api.settings import Settings

Redis = aioredis.Redis
BlockingRedis = redis.Redis


def _options(settings: Settings) -> dict[str, Any]:
    """What both clients of one Redis share: its timeouts, raw bytes."""
    return {
        "socket_timeout": settings.redis_timeout_s,
        "socket_connect_timeout": settings.redis_timeout_s,
        "health_check_interval": 30,
        "decode_responses": False,
    }


def create_redis(settings: Settings) -> aioredis.Redis:
    return aioredis.Redis.from_url(settings.redis_url, **_options(settings))


def create_blocking_redis(settings: Settings) -> redis.Redis:
    """The same Redis for code that runs in a thread of its own and must not wait for the
    event loop (the mailer's journal writes, ``api.repositories.mail_journal``). It connects
    on first use."""
    return redis.Redis.from_url(settings.redis_url, **_options(settings))


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def token(self, digest_hex: str) -> str:
        return f"{self.prefix}tok:{digest_hex}"

    def credentials(self, user_id: str) -> str:
        return f"{self.prefix}cred:{{{user_id}}}"

    def reset_code(self, user_id: str) -> str:
        return f"{self.prefix}code:{{{user_id}}}"

    def user_limit(self, name: str, user_id: str) -> str:
        return f"{self.prefix}rl:{name}:{{{user_id}}}"

    def address_limit(self, name: str, address: str) -> str:
        return f"{self.prefix}rl:{name}:{{ip:{address}}}"

    def mailed(self, outbox_id: int) -> str:
        """An outbox row whose e-mail the SMTP server accepted (``mail_journal``)."""
        return f"{self.prefix}mailed:{{outbox}}:{outbox_id}"  # one slot: one MGET


class LuaScript:
    """A script called by SHA, loaded again on NOSCRIPT (after a Redis restart or flush)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(
        self, client: aioredis.Redis, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)


ScriptCall = tuple[LuaScript, Sequence[str], Sequence[Any]]


async def eval_many(client: aioredis.Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    """Run several script calls in one round trip (a non-transactional pipeline).

    The keys of different calls may live in different cluster slots; each call's own keys
    share one slot.
    """
    async with client.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
    if not any(isinstance(r, NoScriptError) for r in results):
        for r in results:
            if isinstance(r, Exception):
                raise r
        return results
    for script, _, _ in calls:
        await client.script_load(script.source)
    async with client.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        retried: list[Any] = await pipe.execute()
    return retried
