"""Which outbox rows' e-mails the SMTP server has accepted, kept in Redis until the delivery
that sent them commits.

A delivery sends a batch while its rows stay locked in one Postgres transaction, and marks
them processed when it commits. If that commit never happens (Postgres restarted, the
connection killed, the worker killed), the rows are delivered again later. Without a record
outside that transaction, the next delivery would send every e-mail of the batch a second
time. So each acceptance is written here before the next message is sent, and the next
delivery of a row found here records it as sent without sending it.

The mailer writes each entry from its sending thread (``AcceptanceLog``), without waiting for
Redis's answer: the ``SET`` is on its way before the next message is sent, and the answers
are read once the batch is sent.

Redis is not Postgres: a row's acceptance is lost only if Redis loses it too (a Redis
restart without persistence in the same window), and then that e-mail may go out twice, as
before. Keys expire after a day; a successful commit deletes them at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.connection import Connection

from api.kv import BlockingRedis, Keys, Redis

EXPIRY_S = 24 * 3600


class AcceptanceLog:
    """The entries of one batch, written from the thread that sends its e-mails on a
    connection of their own: ``record`` writes the ``SET`` to the socket and returns (once
    written, a killed worker no longer stops Redis from running it); ``confirm`` reads the
    answers, at the end of the batch."""

    def __init__(self, redis: BlockingRedis, keys: Keys) -> None:
        self._pool = redis.connection_pool
        self._keys = keys
        self._connection: Connection | None = None
        self._unanswered = 0

    def record(self, outbox_id: int) -> None:
        if self._connection is None:
            self._connection = self._pool.get_connection()
        # A health check (a PING read back) only while no answer is pending: it would read
        # one of theirs.
        self._connection.send_command(  # type: ignore[no-untyped-call]  # redis-py: untyped
            "SET",
            self._keys.mailed(outbox_id),
            b"1",
            "EX",
            EXPIRY_S,
            check_health=self._unanswered == 0,
        )
        self._unanswered += 1

    def confirm(self) -> None:
        """Reads the answers to every ``record``; raises if one failed (its entry may be
        missing). The connection goes back to the pool either way."""
        connection, self._connection = self._connection, None
        unanswered, self._unanswered = self._unanswered, 0
        if connection is None:
            return
        try:
            for _ in range(unanswered):
                connection.read_response()
        except BaseException:
            connection.disconnect()  # type: ignore[no-untyped-call]  # answers may be unread
            raise
        finally:
            self._pool.release(connection)


async def accepted(redis: Redis, keys: Keys, outbox_ids: Sequence[int]) -> set[int]:
    """The rows among ``outbox_ids`` whose e-mail an earlier delivery had sent."""
    if not outbox_ids:
        return set()
    found = await redis.mget([keys.mailed(i) for i in outbox_ids])
    return {i for i, value in zip(outbox_ids, found, strict=True) if value is not None}


async def forget(redis: Redis, keys: Keys, outbox_ids: Sequence[int]) -> None:
    if outbox_ids:
        await redis.delete(*(keys.mailed(i) for i in outbox_ids))
