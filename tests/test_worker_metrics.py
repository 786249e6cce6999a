"""The worker's and the relay's Prometheus endpoints (issue 12), read from real processes.

A real Celery worker (solo, then a prefork pool of two) and a real ``identity relay``, each
with its metrics port, a private broker and an SMTP sink (``tests.workers_support.Stack``),
on a database of this module's own: every outbox row is one of these tests', so the counts
are exact. The API is the in-process app; it commits rows and the relay publishes them.

Also here: the relay's and beat's idle sweeps log at DEBUG, a sweep that published logs one
INFO line.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from api.migrate import migrate
from api.settings import Settings
from tests.conftest import RUN_ID, _create_database, _drop_database
from tests.metrics_support import Scrape, scrape, scrape_until
from tests.support import World, bearer, world_with
from tests.workers_support import (
    Proc,
    Stack,
    await_until,
    free_port,
    stack_for,
    wait_processed,
    wait_until,
)
from workers.multiprocess import is_worker

pytestmark = pytest.mark.slow

N = 5
DELIVER = "identity.deliver_emails"
RESET = "password_reset"
# prometheus_client's file of one process's counters in a multiprocess directory.
COUNTER_FILE = re.compile(r"^counter_(\d+)\.db$")


@pytest.fixture(scope="module")
def own_settings(base_settings: Settings) -> Iterator[Settings]:
    """The run's settings on a database of this module's alone (the relay publishes every
    due row of its database: nothing of another module's may be among them)."""
    name = f"identity_test_{RUN_ID}_wmetrics"
    asyncio.run(_create_database(name))
    url = base_settings.database_url.rsplit("/", 1)[0] + "/" + name
    try:
        asyncio.run(migrate(url))
        yield msgspec.structs.replace(base_settings, database_url=url)
    finally:
        asyncio.run(_drop_database(name))


@pytest.fixture(scope="module")
def module_stack(
    own_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with stack_for(own_settings, tmp_path_factory.mktemp("worker-metrics")) as s:
        yield s


@pytest.fixture
def stack(module_stack: Stack) -> Iterator[Stack]:
    module_stack.fresh()  # no process of an earlier test, an empty broker
    yield module_stack
    module_stack.stop_procs()


@pytest.fixture
async def mworld(stack: Stack, own_settings: Settings) -> AsyncIterator[World]:
    settings = msgspec.structs.replace(
        own_settings, broker_url=stack.broker.url, smtp_url=stack.sink.url
    )
    async with world_with(settings) as world:
        yield world


def endpoint(port: int) -> str:
    return f"http://127.0.0.1:{port}/metrics"


async def ask_resets(world: World, count: int, *, one_by_one: bool = False) -> list[str]:
    """``count`` users each ask for a reset link through the API; their e-mail addresses.
    ``one_by_one``: each row is published (a task of its own) before the next is asked."""
    org_id, admin = await world.admin()
    addresses = []
    for _ in range(count):
        user = await world.human(admin, org_id)
        answer = await world.client.post(
            f"/v2/users/{user.user_id}/password_reset",
            json={"sendLink": {"notificationType": "NOTIFICATION_TYPE_Email"}},
            headers=bearer(admin),
        )
        assert answer.status_code == 200, answer.text
        addresses.append(user.email)
        if one_by_one:

            async def published(user_id: str = user.user_id) -> bool:
                return bool(
                    await world.db.fetchval(
                        "SELECT bool_and(published_at IS NOT NULL) FROM outbox"
                        " WHERE aggregate_id = $1",
                        user_id,
                    )
                )

            await await_until(published, 10, "the relay to publish the row")
    return addresses


async def deliver_all(stack: Stack, world: World, addresses: list[str]) -> None:
    for address in addresses:
        await stack.wait_for_mails(address, 1)
    user_ids = [r["id"] for r in await world.db.fetch("SELECT id FROM users")]
    await wait_processed(world.db, user_ids, 20)


def assert_counts(worker: Scrape, relay: Scrape, n: int) -> None:
    """What N reset e-mails sent and nothing else make the worker and the relay show."""
    tasks = worker.value("identity_tasks_total", task=DELIVER, outcome="success")
    batches = relay.value("identity_relay_batches_published_total")
    assert worker.value("identity_mail_sent_total", kind=RESET) == n, worker.text
    assert worker.value("identity_mail_sent_total") == n
    assert worker.value("identity_mail_delay_seconds_count", kind=RESET) == n
    assert worker.value("identity_mail_delay_seconds_sum", kind=RESET) > 0
    # Every e-mail within a minute of its commit.
    assert worker.value("identity_mail_delay_seconds_bucket", kind=RESET, le="60.0") == n
    assert worker.value("identity_mail_failed_total") == 0
    assert worker.value("identity_mail_dead_total") == 0
    # One successful task per batch the relay published, and nothing else ran.
    assert 1 <= tasks == batches <= n, (tasks, batches)
    assert worker.value("identity_tasks_total") == tasks
    assert worker.value("identity_task_duration_seconds_count", task=DELIVER) == tasks
    assert relay.value("identity_relay_rows_published_total") == n, relay.text
    assert relay.value("identity_relay_publish_failures_total") == 0
    assert relay.value("identity_relay_sweeps_total", result="published") >= 1
    assert relay.value("identity_relay_sweeps_total", result="failed") == 0


def assert_own_series_only(worker: Scrape, relay: Scrape) -> None:
    """Each endpoint serves its own series: none of the API's (which the domain imports)."""
    for name in worker.names | relay.names:
        own = name.startswith(("identity_task", "identity_mail_", "identity_relay_"))
        assert own or (name in relay.names and name.startswith(("process_", "python_"))), name
    assert "process_resident_memory_bytes" in relay.names


async def test_the_worker_and_the_relay_count_n_reset_emails(stack: Stack, mworld: World) -> None:
    worker_port, relay_port = free_port(), free_port()
    worker_proc = stack.start_worker(worker_metrics_port=worker_port)
    worker_proc.wait_for_log(
        rf"INFO identity\.metrics .*: worker metrics on {endpoint(worker_port)}", 5
    )
    stack.start_relay(relay_metrics_port=relay_port, relay_redeliver_after_s=300)
    before = scrape(endpoint(worker_port))
    assert before.value("identity_mail_sent_total") == 0
    assert "identity_outbox_backlog" not in before.text  # the API's, not the worker's

    addresses = await ask_resets(mworld, N)
    await deliver_all(stack, mworld, addresses)

    worker = scrape_until(
        endpoint(worker_port),
        lambda s: s.value("identity_tasks_total") >= 1 and s.value("identity_mail_sent_total") >= N,
        f"{N} e-mails in the worker's metrics",
    )
    relay = scrape(endpoint(relay_port))
    worker = scrape_until(
        endpoint(worker_port),
        lambda s: (
            s.value("identity_tasks_total") >= relay.value("identity_relay_batches_published_total")
        ),
        "every published task's outcome",
    )
    assert_counts(worker, relay, N)
    assert_own_series_only(worker, relay)
    assert len(stack.sink.messages()) == N


async def test_a_prefork_pool_of_two_adds_up(stack: Stack, mworld: World, tmp_path: Path) -> None:
    """Two pool processes deliver (each task waits a little, so they overlap); the main
    process's endpoint reads their sum. The directory given is emptied at start."""
    directory = tmp_path / "worker-metrics"
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"a stale file of an earlier run")
    worker_port, relay_port = free_port(), free_port()
    worker = stack.start_worker(
        pool="prefork",
        concurrency=2,
        worker_metrics_port=worker_port,
        worker_metrics_dir=directory,
        mail_task_delay_s=1.5,  # long enough for the next task to come while one waits
    )
    assert not (directory / "counter_999999.db").exists()
    stack.start_relay(relay_metrics_port=relay_port, relay_redeliver_after_s=300)

    count = 6
    addresses = await ask_resets(mworld, count, one_by_one=True)
    await deliver_all(stack, mworld, addresses)
    relay = scrape(endpoint(relay_port))
    assert relay.value("identity_relay_batches_published_total") == count  # a task each
    scraped = scrape_until(
        endpoint(worker_port),
        lambda s: s.value("identity_tasks_total") >= count,
        "every task's outcome",
    )
    assert_counts(scraped, relay, count)

    assert worker.popen is not None
    pids = {int(m.group(1)) for f in directory.iterdir() if (m := COUNTER_FILE.match(f.name))}
    children = pids - {worker.popen.pid}
    assert len(children) >= 2, f"the pool's two processes did not both count: {sorted(pids)}"


def log_lines(proc: Proc, start: int, logger: str) -> list[tuple[str, str]]:
    """(level, message) of ``logger``'s lines written after offset ``start`` (text format:
    ``time LEVEL logger [request id]: message``)."""
    found = []
    for line in proc.text()[start:].splitlines():
        match = re.match(r"^\S+ \S+ (\w+) (\S+) \[[^\]]*\]: (.*)$", line)
        if match and match.group(2) == logger:
            found.append((match.group(1), match.group(3)))
    return found


async def test_idle_sweeps_log_at_debug_and_a_sweep_that_published_once_at_info(
    stack: Stack, mworld: World
) -> None:
    # The relay at DEBUG: its idle sweeps are there, all DEBUG.
    relay = stack.start_relay(log_level="DEBUG", relay_interval_s=0.5)
    relay.wait_for_log(r"DEBUG identity\.relay \[-\]: sweep: nothing due", 10)
    start = len(relay.text())
    wait_until(lambda: len(log_lines(relay, start, "identity.relay")) >= 4, 10, "four idle sweeps")
    idle = log_lines(relay, start, "identity.relay")
    assert all(line == ("DEBUG", "sweep: nothing due") for line in idle), idle

    # One reset: one sweep published it, one INFO line; then idle again, at DEBUG.
    start = len(relay.text())
    await ask_resets(mworld, 1)
    relay.wait_for_log(r"INFO identity\.relay \[-\]: published 1 outbox rows", 10)
    wait_until(lambda: len(log_lines(relay, start, "identity.relay")) >= 4, 10, "more sweeps")
    lines = log_lines(relay, start, "identity.relay")
    assert [line for line in lines if line[0] != "DEBUG"] == [
        ("INFO", "published 1 outbox rows")
    ], lines
    relay.stop()

    # At INFO (as deployed): no line at all for an idle sweep.
    quiet = stack.start_relay(relay_interval_s=0.3)
    start = len(quiet.text())
    await asyncio.sleep(2)  # about six sweeps
    assert log_lines(quiet, start, "identity.relay") == [], quiet.tail()


async def test_beats_idle_sweeps_are_quiet_at_info(stack: Stack, mworld: World) -> None:
    """Beat sends ``identity.relay_outbox`` every second here; at INFO neither beat's log
    nor the worker's shows an idle one; a sweep that published is one INFO line."""
    worker = stack.start_worker()
    beat = stack.start_beat()

    async def outbox_done() -> bool:  # an earlier test's row is beat's to publish again
        left = await mworld.db.fetchval(
            "SELECT count(*) FROM outbox WHERE processed_at IS NULL AND dead_at IS NULL"
        )
        return bool(left == 0)

    await await_until(outbox_done, 20, "every outbox row to be processed")
    await asyncio.sleep(0.5)  # the last sweep's lines written
    w_start, b_start = len(worker.text()), len(beat.text())
    await asyncio.sleep(3.5)  # three sweeps or so, all idle

    def sweep_lines(proc: Proc, start: int) -> list[str]:
        return [
            line
            for line in proc.text()[start:].splitlines()
            if "relay_outbox" in line or "relay-outbox" in line or "sweep" in line
        ]

    assert sweep_lines(beat, b_start) == [], beat.tail()
    assert sweep_lines(worker, w_start) == [], worker.tail()
    assert "Sending due task" not in beat.text()

    [address] = await ask_resets(mworld, 1)  # no relay runs: beat's sweep publishes it
    await stack.wait_for_mails(address, 1)
    [line] = sweep_lines(worker, w_start)
    assert "INFO identity.tasks [-]: beat's sweep published 1 outbox rows" in line, line
    assert sweep_lines(beat, b_start) == [], beat.tail()


def test_a_metrics_port_in_use_stops_the_worker_and_the_relay(stack: Stack) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = f"cannot serve metrics on 127.0.0.1:{port}"
        with pytest.raises(AssertionError, match=f"worker exited(.|\n)*{refused}"):
            stack.start_worker(worker_metrics_port=port)
        with pytest.raises(AssertionError, match=f"relay exited(.|\n)*{refused}"):
            stack.start_relay(relay_metrics_port=port)


@pytest.mark.parametrize(
    ("argv", "worker"),
    [
        (["/venv/bin/celery", "-A", "workers", "worker", "--pool", "solo"], True),
        (["celery", "--app=workers", "worker", "--loglevel=INFO"], True),
        (["/usr/lib/python3/celery/__main__.py", "-A", "workers", "worker"], True),
        (["celery", "-A", "workers", "beat", "--schedule", "worker"], False),
        (["celery", "-A", "workers", "inspect", "ping", "--destination", "worker"], False),
        (["celery", "-A", "workers", "flower"], False),
        (["/venv/bin/pytest", "-k", "worker"], False),
        (["/venv/bin/identity", "relay"], False),
        ([], False),
    ],
)
def test_only_a_celery_worker_takes_a_metrics_directory(argv: list[str], worker: bool) -> None:
    """Beat, ``celery inspect`` (compose's health check, in the worker's container) and the
    rest must not write into a running worker's directory, nor empty it."""
    assert is_worker(argv) is worker


async def test_the_relay_counts_publishes_the_broker_refused(stack: Stack, mworld: World) -> None:
    """The broker down: the relay's sweeps fail and its publishes are counted as failures;
    back up, the row is published once."""
    relay_port = free_port()
    stack.start_relay(relay_metrics_port=relay_port, relay_redeliver_after_s=300)
    stack.broker.stop()
    try:
        await ask_resets(mworld, 1)
        down = scrape_until(
            endpoint(relay_port),
            lambda s: s.value("identity_relay_sweeps_total", result="failed") >= 1,
            "a failed sweep",
        )
        assert down.value("identity_relay_publish_failures_total") >= 1
        assert down.value("identity_relay_rows_published_total") == 0
    finally:
        stack.broker.start()
    up = scrape_until(
        endpoint(relay_port),
        lambda s: s.value("identity_relay_rows_published_total") >= 1,
        "the row published once the broker is back",
        timeout=40,
    )
    assert up.value("identity_relay_rows_published_total") == 1
    assert up.value("identity_relay_batches_published_total") == 1
