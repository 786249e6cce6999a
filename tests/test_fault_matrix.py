"""The fault matrix: every process rides out each dependency's outage, and nothing is lost.

Under a steady load of admin password changes (each commits one event and one e-mail outbox
row), each scenario injects one fault into a system of private parts (``tests/fault_rig.py``:
its own Postgres cluster, application Redis, broker, SMTP server, and the service's API,
prefork worker, relay and beat as production runs them), heals it, and asserts:

- every answer was a 200, a 503 with the contract's body (``SERVER-Unav1`` or
  ``SERVER-0verl``) and ``Retry-After``, or, only while the API itself was down, no answer;
  none took longer than ``SLOW_ANSWER_S``;
- changes answered again after the fault;
- committed changes (outbox rows in Postgres, at least the 200s) = e-mails delivered, none
  lost, none twice (each e-mail names its outbox row) except in the one window a SIGKILL can
  hit (the SMTP server's acceptance of a message and its mail journal entry: at most one
  message per pool process killed, with the same Message-ID), no row left unprocessed or
  dead, and one outbox row for each password event (no half-written state);
- no process exited by itself (a process the fault killed was restarted, as a supervisor
  would).

``IDENTITY_FAULT_SECONDS`` is how long each fault lasts: CI's short run uses the default
(6 s); ``./scripts/faults`` runs the full matrix with 30 s outages and writes the table the
README shows. Each scenario appends one JSON line to ``test-artifacts/fault-matrix.jsonl``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.fault_rig import Load, Rig, make_people, settle
from tests.workers_support import ROOT, await_until
from workers.smtp_sink import MailSink

pytestmark = [pytest.mark.slow, pytest.mark.faults]

FAULT_S = float(os.environ.get("IDENTITY_FAULT_SECONDS", "6"))
LEAD_S = 3.0  # steady load before the fault
TAIL_S = 6.0  # load after the fault is healed: the system must answer 200s again
SETTLE_S = 90.0  # bound for the backlog to drain afterwards
SLOW_ANSWER_S = 10.0
PEOPLE = 8
ARTIFACTS = Path(os.environ.get("IDENTITY_TEST_ARTIFACTS", ROOT / "test-artifacts"))


@dataclass
class Row:
    fault: str
    seconds: float  # from the fault's injection to its healing (a restart is seconds)
    requests: int
    ok: int
    unavailable: int
    no_answer: int
    committed: int
    emails: int
    lost: int
    doubled: int
    exited: int
    slowest_answer_s: float


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    rig = Rig(tmp_path_factory.mktemp("fault-matrix"))
    try:
        yield rig
    finally:
        rig.close()


@pytest.fixture
def fresh(rig: Rig) -> Iterator[Rig]:
    rig.stack.fresh()
    rig.killed_by_fault.clear()
    rig.start_all()
    try:
        yield rig
    finally:
        rig.stack.stop_procs()


Fault = Callable[[Rig, Load], Awaitable[tuple[float, float] | None]]


async def run_scenario(rig: Rig, name: str, fault: Fault) -> Row:
    """Load, fault, heal, load; then drain and count. Returns the scenario's row."""
    admin, people = await make_people(rig, PEOPLE)
    load = Load(rig, admin, people)
    api_down: list[tuple[float, float]] = []
    healed_at = 0.0

    fault_at = 0.0

    async def scenario() -> None:
        nonlocal healed_at, fault_at
        await asyncio.sleep(LEAD_S)
        fault_at = load.now()
        window = await fault(rig, load)
        if window is not None:
            api_down.append(window)
        healed_at = load.now()
        await asyncio.sleep(TAIL_S)

    await load.run_while(scenario())
    await settle(rig, SETTLE_S)

    answers = load.answers
    bad = [
        a
        for a in answers
        if not (
            a.status == 200
            or (
                a.status == 503
                and a.code in {"SERVER-Unav1", "SERVER-0verl"}
                and a.retry_after is not None
            )
            or (a.status is None and any(lo - 0.5 <= a.at <= hi + 0.5 for lo, hi in api_down))
        )
    ]
    assert not bad, f"{name}: unexpected answers {bad[:5]}\n{rig.stack.logs()}"
    slowest = max(a.elapsed for a in answers)
    assert slowest < SLOW_ANSWER_S, f"{name}: an answer took {slowest:.1f} s"
    assert any(a.status == 200 and a.at > healed_at + 1 for a in answers), (
        f"{name}: no change answered after the fault was healed\n{rig.stack.logs()}"
    )

    ids = [p.user_id for p in people]
    conn = await asyncpg.connect(rig.settings.database_url)
    try:
        rows = await conn.fetch(
            "SELECT id, processed_at IS NOT NULL AS processed, dead_at IS NOT NULL AS dead "
            "FROM outbox WHERE aggregate_id = ANY($1::text[]) AND task LIKE '%email%'",
            ids,
        )
        events: int = await conn.fetchval(
            "SELECT count(*) FROM events WHERE aggregate_id = ANY($1::text[]) "
            "AND event_type = 'user.human.password.changed'",
            ids,
        )
    finally:
        await conn.close()
    committed = len(rows)
    assert committed == events, f"{name}: {events} password events but {committed} outbox rows"
    assert committed >= sum(load.committed.values())
    assert all(r["processed"] and not r["dead"] for r in rows)

    by_outbox = Counter(
        m["X-Identity-Outbox-Id"]
        for m in rig.stack.sink.messages()
        if m["To"] in {p.email for p in people}
    )
    row_ids = {str(r["id"]) for r in rows}
    emails = sum(by_outbox.values())
    lost = len(row_ids - set(by_outbox))
    doubled = sum(n - 1 for n in by_outbox.values() if n > 1)
    exited = rig.exited_by_themselves()
    result = Row(
        fault=name,
        seconds=round(healed_at - fault_at, 1),  # from injected to healed
        requests=len(answers),
        ok=sum(a.status == 200 for a in answers),
        unavailable=sum(a.status == 503 for a in answers),
        no_answer=sum(a.status is None for a in answers),
        committed=committed,
        emails=emails,
        lost=lost,
        doubled=doubled,
        exited=len(exited),
        slowest_answer_s=round(slowest, 3),
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with (ARTIFACTS / "fault-matrix.jsonl").open("a") as out:
        out.write(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ"), **asdict(result)}) + "\n")
    print(f"\n{result}")
    assert set(by_outbox) <= row_ids
    # The one window the mail journal cannot close: a worker SIGKILLed after the SMTP server
    # accepted a message and before its journal entry was written leaves that message to be
    # sent again, at most one per pool process (docs/DECISIONS.md, "Exactly one e-mail").
    # Such a copy carries the same Message-ID, so mail systems can collapse it.
    sigkilled_workers = sum(
        p.name == "worker" and p.popen is not None and p.popen.returncode == -signal.SIGKILL
        for p in rig.killed_by_fault
    )
    window = 2 * sigkilled_workers
    assert lost == 0 and doubled <= window, f"{name}: {result}\n{rig.stack.logs()}"
    for outbox_id, copies in by_outbox.items():
        if copies > 1:
            ids = {
                m["Message-ID"]
                for m in rig.stack.sink.messages()
                if m["X-Identity-Outbox-Id"] == outbox_id
            }
            assert len(ids) == 1, f"outbox row {outbox_id}: copies with Message-IDs {ids}"
    if name in ONE_OUTAGE:
        # Said once per outage, however long: at most one line per pool process (two) of a
        # worker, one per relay.
        for proc in rig.stack.procs:
            said = {"worker": ("deliveries are failing", 2), "relay": ("relay cannot publish", 1)}
            if proc.name in said:
                line, most = said[proc.name]
                assert proc.text().count(line) <= most, f"{name}: {proc.tail()}"
    assert not exited, f"{name}: exited by themselves: {exited}\n{rig.stack.logs()}"
    return result


# --- the faults -------------------------------------------------------------------------------

# One outage, held for FAULT_S (the others are instants, or repeated: a connection killed
# every second is an outage a second).
ONE_OUTAGE = {
    "broker stopped",
    "Postgres stopped",
    "application Redis restarted",
    "SMTP server refusing",
    "broker stopped 30 s",
}


async def broker_stopped(rig: Rig, load: Load) -> None:
    rig.stack.broker.stop()
    await asyncio.sleep(FAULT_S)
    await asyncio.to_thread(rig.stack.broker.start)


async def worker_killed_mid_batch(rig: Rig, load: Load) -> None:
    async def busy() -> bool:
        return rig.stack.broker.unacked() > 0

    await await_until(busy, 10, "the worker to hold a batch", interval=0.01)
    assert rig.worker is not None
    rig.worker.kill()
    rig.killed_by_fault.append(rig.worker)
    await asyncio.sleep(FAULT_S)
    await asyncio.to_thread(rig.start_worker)


async def relay_killed(rig: Rig, load: Load) -> None:
    assert rig.relay is not None
    rig.relay.kill()
    rig.killed_by_fault.append(rig.relay)
    await asyncio.sleep(FAULT_S)
    rig.relay = await asyncio.to_thread(rig.stack.start_relay)


async def api_killed(rig: Rig, load: Load) -> tuple[float, float]:
    assert rig.api is not None
    down_at = load.now()
    rig.api.kill()
    rig.killed_by_fault.append(rig.api)
    await asyncio.sleep(min(FAULT_S, 3))
    await asyncio.to_thread(rig.restart_api)
    return down_at, load.now()


async def postgres_restarted(rig: Rig, load: Load) -> None:
    await asyncio.to_thread(rig.postgres.restart)


async def postgres_stopped(rig: Rig, load: Load) -> None:
    await asyncio.to_thread(rig.postgres.stop)
    await asyncio.sleep(FAULT_S)
    await asyncio.to_thread(rig.postgres.start)


async def postgres_connections_killed(rig: Rig, load: Load) -> None:
    deadline = time.monotonic() + FAULT_S
    while time.monotonic() < deadline:
        await rig.postgres.terminate_backends("identity")
        await asyncio.sleep(1)


async def app_redis_restarted(rig: Rig, load: Load) -> None:
    rig.redis.stop()
    await asyncio.sleep(FAULT_S)
    await asyncio.to_thread(rig.redis.start)


async def smtp_refusing(rig: Rig, load: Load) -> None:
    sink = rig.stack.sink
    sink.stop()  # connections refused
    await asyncio.sleep(FAULT_S)
    rig.stack.sink = MailSink(sink.directory, sink.host, sink.port).start()


FAULTS: dict[str, Fault] = {
    "broker stopped": broker_stopped,  # type: ignore[dict-item]
    "worker SIGKILLed mid-batch": worker_killed_mid_batch,  # type: ignore[dict-item]
    "relay SIGKILLed": relay_killed,  # type: ignore[dict-item]
    "API SIGKILLed": api_killed,
    "Postgres restarted": postgres_restarted,  # type: ignore[dict-item]
    "Postgres stopped": postgres_stopped,  # type: ignore[dict-item]
    "Postgres connections killed": postgres_connections_killed,  # type: ignore[dict-item]
    "application Redis restarted": app_redis_restarted,  # type: ignore[dict-item]
    "SMTP server refusing": smtp_refusing,  # type: ignore[dict-item]
}


async def sigterm_every_process(rig: Rig, load: Load) -> tuple[float, float]:
    """A deploy: each process is sent SIGTERM, must exit cleanly within its bound, and is
    started again; in-flight requests and tasks finish or are handed back."""
    down_at = load.now()
    for proc in rig.processes():
        rig.killed_by_fault.append(proc)
    assert rig.api is not None and rig.worker is not None and rig.relay is not None
    await asyncio.to_thread(rig.api.stop, 15)
    await asyncio.to_thread(rig.restart_api)
    api_back = load.now()
    await asyncio.to_thread(rig.worker.stop, 30)
    await asyncio.to_thread(rig.start_worker)
    await asyncio.to_thread(rig.relay.stop, 15)
    rig.relay = await asyncio.to_thread(rig.stack.start_relay)
    assert rig.beat is not None
    await asyncio.to_thread(rig.beat.stop, 15)
    rig.beat = await asyncio.to_thread(rig.stack.start_beat)
    for proc in rig.killed_by_fault:
        # 0, or uvicorn's way: after its graceful shutdown it re-raises the signal it got.
        # Not SIGKILL: Proc.stop sends that only when the bound has passed.
        assert proc.popen is not None and proc.popen.returncode in (0, -signal.SIGTERM), (
            f"{proc.name} exited {proc.popen.returncode if proc.popen else '?'} on SIGTERM:\n"
            f"{proc.tail()}"
        )
    return down_at, api_back


FAULTS["every process SIGTERMed (a deploy)"] = sigterm_every_process


@pytest.mark.parametrize("name", list(FAULTS))
async def test_fault(fresh: Rig, name: str) -> None:
    await run_scenario(fresh, name, FAULTS[name])


async def test_worker_and_relay_ride_out_a_30s_broker_outage(fresh: Rig) -> None:
    """Under load, the broker is gone for 30 s: the worker and the relay stay up, the API
    answers 200 throughout (the outbox takes the e-mails), and the backlog drains after."""

    async def outage(rig: Rig, load: Load) -> None:
        rig.stack.broker.stop()
        await asyncio.sleep(30)
        assert rig.worker is not None and rig.worker.alive, rig.worker.tail() if rig.worker else ""
        assert rig.relay is not None and rig.relay.alive, rig.relay.tail() if rig.relay else ""
        await asyncio.to_thread(rig.stack.broker.start)

    row = await run_scenario(fresh, "broker stopped 30 s", outage)  # type: ignore[arg-type]
    assert row.ok == row.requests  # the change never needs the broker
    assert fresh.relay is not None
    assert "relay cannot publish" in fresh.relay.text()  # said so, once
    assert fresh.relay.text().count("relay cannot publish") == 1


async def test_api_answers_fast_503s_while_postgres_is_down(fresh: Rig) -> None:
    """Postgres stopped: every change is a 503 ``SERVER-Unav1`` with ``Retry-After`` and
    p99 under 100 ms, ``/readyz`` names Postgres, ``/healthz`` stays 200; after Postgres
    returns, changes succeed again within 5 s, and no request was left hanging."""
    admin, people = await make_people(fresh, 2)
    person = people[0]
    async with httpx.AsyncClient(base_url=fresh.base, timeout=10) as client:

        async def change(n: int) -> tuple[httpx.Response, float]:
            started = time.monotonic()
            r = await client.post(
                f"/v2/users/{person.user_id}/password",
                json={"newPassword": {"password": f"Pg!Down-Passw0rd{n}"}},
                headers={"Authorization": f"Bearer {admin}"},
            )
            return r, time.monotonic() - started

        assert (await change(0))[0].status_code == 200
        await asyncio.to_thread(fresh.postgres.stop)
        latencies: list[float] = []
        deadline = time.monotonic() + 8
        n = 0
        while time.monotonic() < deadline:
            n += 1
            # Four at once: the pool's connections all fail together, none waits.
            results = await asyncio.gather(*(change(n * 10 + k) for k in range(4)))
            for r, elapsed in results:
                assert r.status_code == 503, r.text
                assert r.json()["details"][0]["id"] == "SERVER-Unav1"
                assert r.headers["retry-after"]
                latencies.append(elapsed)
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert "postgres" in ready.json()["message"] and "redis" not in ready.json()["message"]
        assert (await client.get("/healthz")).status_code == 200
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        assert p99 < 0.1, f"p99 {p99 * 1000:.0f} ms over {len(latencies)} requests"

        await asyncio.to_thread(fresh.postgres.start)
        back = time.monotonic()
        while True:
            r, _ = await change(10_000 + n)
            n += 1
            if r.status_code == 200:
                break
            assert r.status_code == 503, r.text
            assert time.monotonic() - back < 5, "changes did not succeed within 5 s of Postgres"
            await asyncio.sleep(0.05)
        recovered_s = time.monotonic() - back
        assert (await client.get("/readyz")).status_code == 200
    print(
        f"\nPostgres down: {len(latencies)} answers, p99 {p99 * 1000:.1f} ms;"
        f" recovered {recovered_s:.2f} s after its return"
    )
