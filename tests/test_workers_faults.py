"""Fault injection: no committed change loses its e-mail, and none sends two.

Each test counts the e-mails received against the changes that answered 200 and asserts
equality, with real processes: a private broker (redis-server), Celery worker and beat
subprocesses, an SMTP server, and the API in process or as ``identity serve``.

Once an outbox row is processed, no further e-mail can come for it (a sender holds the row
lock and checks ``processed_at`` first), so counting after every row is processed is final.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator

import asyncpg
import httpx
import pytest

from api.http.app import create_app
from api.repositories.outbox import TASK_PASSWORD_CHANGED_EMAIL, OutboxRow
from api.settings import Settings
from tests.support import Human, World
from tests.workers_support import (
    Stack,
    app_client,
    await_until,
    free_port,
    notification_events,
    outbox_rows,
    stack_for,
    wait_processed,
)
from workers.celery_app import create_celery, publish_outbox_rows
from workers.relay import CHANNEL
from workers.relay import listening as relay_listening

pytestmark = pytest.mark.slow

SETTLE_S = 40.0  # bound for e-mails after a fault is over


@pytest.fixture(scope="module")
def module_stack(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with stack_for(base_settings, tmp_path_factory.mktemp("workers-faults")) as s:
        yield s


@pytest.fixture
def stack(module_stack: Stack) -> Iterator[Stack]:
    module_stack.fresh()
    try:
        yield module_stack
    finally:
        module_stack.stop_procs()


def api_settings(stack: Stack, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(broker_url=stack.broker.url, smtp_url=stack.sink.url, broker_timeout_s=1)


async def change(world: World, token: str, user: Human, n: int) -> None:
    """One admin change, bounded: it must answer 200 within 5 s whatever the broker does."""
    started = time.monotonic()
    response = await asyncio.wait_for(
        world.set_password(token, user.user_id, {"newPassword": {"password": f"N3w!Passw0rd{n}"}}),
        timeout=5,
    )
    assert response.status_code == 200, response.text
    assert time.monotonic() - started < 5


async def assert_one_mail_per_change(
    stack: Stack, db: asyncpg.Connection, committed: Counter[str], people: list[Human]
) -> None:
    for person in people:
        await stack.wait_for_mails(person.email, committed[person.email], SETTLE_S)
    await wait_processed(db, [p.user_id for p in people], SETTLE_S)
    received = Counter(
        m["To"] for m in stack.sink.messages() if m["To"] in {p.email for p in people}
    )
    assert received == committed, stack.logs()
    outbox_ids = [
        m["X-Identity-Outbox-Id"]
        for m in stack.sink.messages()
        if m["To"] in {p.email for p in people}
    ]
    assert len(set(outbox_ids)) == len(outbox_ids) == sum(committed.values())


async def test_broker_down_during_a_burst(
    stack: Stack, make_settings: Callable[..., Settings]
) -> None:
    """(a) While the broker is down every change answers 200 at once; after it returns, the
    relay publishes what waited, and what the dead broker lost, and every e-mail arrives
    exactly once."""
    worker = stack.start_worker()
    stack.start_beat()
    stack.start_relay()
    settings = api_settings(stack, make_settings)
    committed: Counter[str] = Counter()
    async with app_client(create_app(settings)) as client:
        world = World(client, settings)
        await world.open()
        try:
            org_id, admin = await world.admin()
            people = [await world.human(admin, org_id) for _ in range(4)]
            ids = [p.user_id for p in people]

            async def published(flag: bool) -> int:
                n: int = await world.db.fetchval(
                    "SELECT count(*) FROM outbox WHERE aggregate_id = ANY($1::text[]) "
                    "AND (published_at IS NOT NULL) = $2",
                    ids,
                    flag,
                )
                return n

            # 1. All up: the normal path.
            for n, person in enumerate(people):
                await change(world, admin, person, n)
                committed[person.email] += 1
            for person in people:
                await stack.wait_for_mails(person.email, 1)

            # 2. No worker: these are published and wait in the broker, which then dies
            #    with them (no persistence): marked published, yet lost.
            worker.stop()
            for n, person in enumerate(people):
                await change(world, admin, person, 10 + n)
                committed[person.email] += 1

            async def round_two_published() -> bool:
                return await published(True) == 8  # one row (the e-mail) per change

            await await_until(round_two_published, 10, "the API to publish round 2")
            stack.broker.stop()

            # 3. Broker down: a burst, each change answered at once; nothing is published.
            for n in range(2):
                for person in people:
                    await change(world, admin, person, 20 + n)
                    committed[person.email] += 1
            await asyncio.sleep(2)  # beat ticks against the dead broker meanwhile
            assert await published(False) == 8
            assert [len(stack.mails_to(p.email)) for p in people] == [1] * 4  # round 1 only

            # 4. Broker back, empty; a worker again.
            stack.broker.start()
            stack.start_worker()
            await assert_one_mail_per_change(stack, world.db, committed, people)
        finally:
            await world.close()
    assert sum(committed.values()) == 16


async def test_worker_killed_in_the_middle_of_a_task(
    stack: Stack, make_settings: Callable[..., Settings]
) -> None:
    """(b) SIGKILL while the worker holds the row and has not sent yet: the message is
    redelivered after the visibility timeout and the e-mail arrives exactly once. No beat
    runs, so the broker's redelivery alone brings it back."""
    worker = stack.start_worker(mail_task_delay_s=3)
    # The relay publishes the change at once; a row published and unprocessed is its to
    # publish again only much later, so the broker's redelivery is what this test sees.
    stack.start_relay(relay_redeliver_after_s=300)
    settings = api_settings(stack, make_settings)
    async with app_client(create_app(settings)) as client:
        world = World(client, settings)
        await world.open()
        try:
            org_id, admin = await world.admin()
            erin = await world.human(admin, org_id)
            await change(world, admin, erin, 1)
            [mail_row] = [
                r for r in await outbox_rows(world.db, erin.user_id)
                if r["task"] == TASK_PASSWORD_CHANGED_EMAIL
            ]  # fmt: skip

            async def row_locked() -> bool:
                async with world.db.transaction():
                    try:
                        await world.db.execute(
                            "SELECT 1 FROM outbox WHERE id = $1 FOR UPDATE NOWAIT", mail_row["id"]
                        )
                    except asyncpg.LockNotAvailableError:
                        return True
                return False

            async def worker_holds_it() -> bool:  # (the relay, too, holds it while publishing)
                return stack.broker.unacked() == 1 and await row_locked()

            await await_until(worker_holds_it, 15, "the worker to start the mail task")
            worker.kill()
            assert stack.mails_to(erin.email) == []
            assert stack.broker.unacked() == 1  # left for redelivery

            stack.start_worker(mail_task_delay_s=3)
            await assert_one_mail_per_change(stack, world.db, Counter({erin.email: 1}), [erin])
            assert (await outbox_rows(world.db, erin.user_id))[0]["publish_count"] == 1
        finally:
            await world.close()


async def test_api_killed_after_commit_before_publishing(stack: Stack) -> None:
    """(c) ``identity serve`` commits and answers, but never publishes (its broker is a
    closed port) and is then SIGKILLed; the periodic relay delivers every e-mail."""
    closed = f"redis://127.0.0.1:{free_port()}/0"
    api, base = stack.start_api(broker_url=closed)
    committed: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        world = World(http, stack.settings)
        await world.open()
        try:
            org_id, admin = await world.admin()
            people = [await world.human(admin, org_id) for _ in range(3)]
            for n in range(2):
                for person in people:
                    await change(world, admin, person, n)
                    committed[person.email] += 1
            api.kill()
            rows = await world.db.fetch(
                "SELECT published_at FROM outbox WHERE aggregate_id = ANY($1::text[])",
                [p.user_id for p in people],
            )
            assert len(rows) == 6 and all(r["published_at"] is None for r in rows)
            assert not any(stack.mails_to(p.email) for p in people)

            stack.start_worker()
            stack.start_beat()
            await assert_one_mail_per_change(stack, world.db, committed, people)
        finally:
            await world.close()


async def test_second_delivery_sends_no_second_email(
    stack: Stack, world: World, make_settings: Callable[..., Settings]
) -> None:
    """(d) The same outbox id delivered four times, two workers racing: one e-mail, the
    row processed once, one ``change.sent`` event; three deliveries send nothing."""
    workers = [stack.start_worker(mail_task_delay_s=1), stack.start_worker(mail_task_delay_s=1)]
    org_id, admin = await world.admin()
    frank = await world.human(admin, org_id)
    # No relay and no beat run here: the rows wait.
    response = await world.set_password(
        admin, frank.user_id, {"newPassword": {"password": "N3w!Passw0rd"}}
    )
    assert response.status_code == 200, response.text
    [row] = [
        r for r in await outbox_rows(world.db, frank.user_id)
        if r["task"] == TASK_PASSWORD_CHANGED_EMAIL
    ]  # fmt: skip

    celery = create_celery(make_settings(broker_url=stack.broker.url))
    try:
        same = [OutboxRow(row["id"], row["task"])]
        await asyncio.to_thread(publish_outbox_rows, celery, same, batch_size=100)
        await asyncio.to_thread(publish_outbox_rows, celery, same, batch_size=100)
        for _ in range(2):  # the task called again, under fresh task ids
            await asyncio.to_thread(celery.send_task, row["task"], args=[row["id"]])
    finally:
        celery.close()

    [mail] = await stack.wait_for_mails(frank.email, 1)
    assert mail["X-Identity-Outbox-Id"] == str(row["id"])
    processed_at = await world.db.fetchval(
        "SELECT processed_at FROM outbox WHERE id = $1", row["id"]
    )
    assert processed_at is not None

    # Published twice as a batch (identity.deliver_emails) and twice one row a message (the
    # per-row task names still accepted): each delivery reports how many it sent.
    done = re.compile(
        r"(?:deliver_emails|send_password_changed_email)\[[^\]]+\] succeeded in [\d.]+s: "
        r"'sent (\d+),"
    )

    def outcomes() -> list[str]:
        return [m for w in workers for m in done.findall(w.text())]

    async def all_delivered() -> bool:
        return len(outcomes()) >= 4

    await await_until(all_delivered, 20, "four deliveries to finish")
    assert sorted(outcomes()) == ["0", "0", "0", "1"]
    assert all(done.findall(w.text()) for w in workers), "both workers took a delivery"
    assert len(stack.mails_to(frank.email)) == 1
    again = await world.db.fetchval("SELECT processed_at FROM outbox WHERE id = $1", row["id"])
    assert again == processed_at
    assert (await notification_events(world.db, frank.user_id)).count(
        "user.human.password.change.sent"
    ) == 1


async def test_the_relay_is_woken_by_the_commit(stack: Stack, world: World) -> None:
    """With its periodic sweep a minute away, the relay still publishes a change at once:
    Postgres tells it (LISTEN/NOTIFY) when outbox rows are committed."""
    stack.start_worker()
    stack.start_relay(relay_interval_s=60)
    org_id, admin = await world.admin()
    grace = await world.human(admin, org_id)
    await asyncio.sleep(1)  # the relay's first sweep is over: only a notification wakes it
    started = time.monotonic()
    await change(world, admin, grace, 1)
    await stack.wait_for_mails(grace.email, 1, 15)
    assert time.monotonic() - started < 15


async def test_the_relay_stops_gathering_once_a_task_is_full(stack: Stack, world: World) -> None:
    """Woken by a commit, the relay lets further commits join its batch for up to
    ``relay_gather_s``, but no longer once ``mail_batch_size`` commits have come: three
    changes with a gather of a minute and tasks of three ids are e-mailed at once, by one
    task."""
    stack.start_worker()
    stack.start_relay(relay_interval_s=60, relay_gather_s=60, mail_batch_size=3)
    org_id, admin = await world.admin()
    people = [await world.human(admin, org_id) for _ in range(3)]
    await asyncio.sleep(1)  # the relay's first sweep is over: only a notification wakes it
    started = time.monotonic()
    for n, person in enumerate(people):
        await change(world, admin, person, n)
    for person in people:
        await stack.wait_for_mails(person.email, 1, 20)
    assert time.monotonic() - started < 20

    async def one_task_sent_all() -> bool:
        return "sent 3, refused 0" in stack.logs()

    await await_until(one_task_sent_all, 10, "the worker's line for one task of three")


async def test_a_gathering_relay_does_not_listen_and_its_check_still_finds_it(
    stack: Stack, world: World
) -> None:
    """Woken by a commit, the relay gathers without listening (a look every
    ``GATHER_POLL_S``, not a wake-up per commit); its health check (``identity relay
    --check``) finds it all the same, and the commits of that time join the batch."""
    stack.start_worker()
    stack.start_relay(relay_interval_s=60, relay_gather_s=4, mail_batch_size=100)
    org_id, admin = await world.admin()
    people = [await world.human(admin, org_id) for _ in range(2)]
    await asyncio.sleep(1)  # the relay's first sweep is over: only a notification wakes it
    await change(world, admin, people[0], 1)

    async def gathering() -> bool:
        statement = await world.db.fetchval(
            "SELECT query FROM pg_stat_activity WHERE datname = current_database()"
            " AND query ILIKE $1",
            f"%LISTEN%{CHANNEL}%",
        )
        return bool(statement) and statement.upper().startswith("UNLISTEN")

    await await_until(gathering, 3, "the relay gathering, not listening")
    assert await relay_listening(stack.settings)
    await change(world, admin, people[1], 1)  # while it gathers: no notification, same batch
    for person in people:
        await stack.wait_for_mails(person.email, 1, 20)

    async def one_task_sent_both() -> bool:
        return "sent 2, refused 0" in stack.logs()

    await await_until(one_task_sent_both, 10, "the worker's line for one task of two")


async def test_relay_killed_and_two_relays_at_once(stack: Stack, world: World) -> None:
    """(e) A relay SIGKILLed: changes committed meanwhile wait, and the next relays publish
    them; two relays running at once publish each row once: one e-mail per change."""
    stack.start_worker()
    relay = stack.start_relay()
    org_id, admin = await world.admin()
    people = [await world.human(admin, org_id) for _ in range(3)]
    committed: Counter[str] = Counter()
    await change(world, admin, people[0], 1)
    committed[people[0].email] += 1
    await stack.wait_for_mails(people[0].email, 1, SETTLE_S)

    relay.kill()
    for n, person in enumerate(people):
        await change(world, admin, person, 10 + n)
        committed[person.email] += 1
    await asyncio.sleep(1)
    waiting = await world.db.fetchval(
        "SELECT count(*) FROM outbox WHERE aggregate_id = ANY($1::text[]) AND published_at IS NULL",
        [p.user_id for p in people],
    )
    assert waiting == 3

    stack.start_relay()
    stack.start_relay()
    await assert_one_mail_per_change(stack, world.db, committed, people)
