"""Which outbox rows' e-mails the SMTP server has accepted, kept in Redis until the delivery
that sent them commits.

A delivery sends a batch while its rows stay locked in one Postgres transaction, and marks
them processed when it commits. If that commit never happens (Postgres restarted, the
connection killed, the worker killed), the rows are delivered again later. Without a record
outside that transaction, the next delivery would send every e-mail of the batch a second
time. So each acceptance is written here before the next message is sent, and the next
delivery of a row found here records it as sent without sending it.

Redis is not Postgres: a row's acceptance is lost only if Redis loses it too (a Redis
restart without persistence in the same window), and then that e-mail may go out twice, as
before. Keys expire after a day; a successful commit deletes them at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from api.kv import Keys, Redis

EXPIRY_S = 24 * 3600


async def record_accepted(redis: Redis, keys: Keys, outbox_id: int) -> None:
    await redis.set(keys.mailed(outbox_id), b"1", ex=EXPIRY_S)


async def accepted(redis: Redis, keys: Keys, outbox_ids: Sequence[int]) -> set[int]:
    """The rows among ``outbox_ids`` whose e-mail an earlier delivery had sent."""
    if not outbox_ids:
        return set()
    found = await redis.mget([keys.mailed(i) for i in outbox_ids])
    return {i for i, value in zip(outbox_ids, found, strict=True) if value is not None}


async def forget(redis: Redis, keys: Keys, outbox_ids: Sequence[int]) -> None:
    if outbox_ids:
        await redis.delete(*(keys.mailed(i) for i in outbox_ids))
