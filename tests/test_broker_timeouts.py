"""A silent broker never hangs a caller.

The broker here is a TCP server that accepts connections and never sends a byte: the worst
case, since the connection itself succeeds and only the socket timeouts can end the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from api.db import create_pool
from api.domain.outbox import relay_due
from api.http.app import create_app
from api.repositories.outbox import TASK_PASSWORD_RESET_EMAIL, OutboxRow
from api.settings import Settings
from tests.support import World
from tests.workers_support import app_client, outbox_rows
from workers.celery_app import create_celery, publish_outbox_rows

BOUND_S = 15.0


class SilentBroker:
    """Accepts every connection on 127.0.0.1 and never answers; counts the connections."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self._closing = threading.Event()
        self.port: int = self._server.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="silent-broker", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            self.accepted.append(conn)

    def close(self) -> None:
        self._closing.set()
        self._thread.join(5)
        self._server.close()
        for conn in self.accepted:
            with contextlib.suppress(OSError):
                conn.close()


@pytest.fixture
def silent_broker() -> Iterator[SilentBroker]:
    broker = SilentBroker()
    try:
        yield broker
    finally:
        broker.close()


def test_publishing_to_a_silent_broker_fails_fast(
    silent_broker: SilentBroker, make_settings: Callable[..., Settings]
) -> None:
    app = create_celery(make_settings(broker_url=silent_broker.url, broker_timeout_s=1.0))
    outcome: list[BaseException | None] = []

    def publish() -> None:
        try:
            publish_outbox_rows(app, [OutboxRow(1, TASK_PASSWORD_RESET_EMAIL)], batch_size=100)
        except Exception as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    started = time.monotonic()
    thread = threading.Thread(target=publish, name="publish", daemon=True)
    thread.start()
    thread.join(BOUND_S)
    try:
        assert not thread.is_alive(), f"publish still blocked after {BOUND_S:.0f} s"
        assert time.monotonic() - started < BOUND_S
        [error] = outcome
        assert error is not None, "a broker that never answers cannot have taken the message"
        assert silent_broker.accepted, "the publish reached the silent broker"
    finally:
        app.close()


async def test_a_change_answers_and_the_relay_gives_up_fast_on_a_silent_broker(
    silent_broker: SilentBroker, make_settings: Callable[..., Settings]
) -> None:
    """The change answers 200 at once (the API publishes nothing); the relay's publish to a
    silent broker fails within the bound, its transaction rolls back, and the rows stay
    unpublished for its next round."""
    settings = make_settings(broker_url=silent_broker.url, broker_timeout_s=1.0)
    async with app_client(create_app(settings)) as client:
        world = World(client, settings)
        await world.open()
        try:
            org_id, admin = await world.admin()
            alice = await world.human(admin, org_id)
            started = time.monotonic()
            response = await asyncio.wait_for(
                world.set_password(
                    admin, alice.user_id, {"newPassword": {"password": "N3w!Passw0rd"}}
                ),
                timeout=5,
            )
            assert response.status_code == 200, response.text
            assert time.monotonic() - started < 5
            rows = await outbox_rows(world.db, alice.user_id)
            assert [r["task"] for r in rows] == ["identity.send_password_changed_email"]
            assert all(r["published_at"] is None and r["processed_at"] is None for r in rows)

            app = create_celery(settings)
            pool = await create_pool(settings)
            try:
                started = time.monotonic()
                with pytest.raises(Exception):  # noqa: B017 (kombu's own timeout error types)
                    await relay_due(
                        pool,
                        lambda batch: publish_outbox_rows(app, batch, batch_size=100),
                        min_age_s=0,
                        redeliver_after_s=3600.0,
                        batch=1_000_000,
                    )
                assert time.monotonic() - started < BOUND_S
            finally:
                await pool.close()
                app.close()
            assert silent_broker.accepted
            again = await outbox_rows(world.db, alice.user_id)
            assert all(r["published_at"] is None for r in again)
        finally:
            await world.close()
