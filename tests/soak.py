"""The soak: the whole system under mixed load for many minutes, a fault every few minutes.

``./scripts/soak [--minutes 30] [--fault-every 165]`` runs ``python -m tests.soak`` (a module,
not collected by pytest). It builds the fault matrix's ``Rig`` (``tests/fault_rig.py``: a
private Postgres cluster, application Redis, broker and SMTP sink; ``identity serve``, a prefork
worker, the relay and beat), then drives a moderate mixed load through the real API from
several clients, each owning its own users (so it always knows their passwords):

- ``admin``: an administrator sets the password (``newPassword``);
- ``current``: the user logs in (``POST /v2/sessions``) and changes its own password with its
  session token and ``currentPassword``;
- ``code``: ``password_reset`` with ``returnCode``, then the change with ``verificationCode``;
- ``link``: ``password_reset`` with ``sendLink`` (an e-mail);
- ``login``: ``POST /v2/sessions`` with the current password.

Every ``--fault-every`` seconds one fault of ``tests/test_fault_matrix.py``'s ``FAULTS`` is
injected for ``IDENTITY_FAULT_SECONDS`` (20 s here), in turn. Every answer is recorded: 2xx,
503 with the contract's body and ``Retry-After``, no answer only while the API is down; anything
else (a 500, an unexpected 4xx, an answer slower than 10 s) is a failure. At the end the outbox
must drain and every committed e-mail row must have been delivered exactly once, none dead; the
RSS of every long-running process is read after the warm-up and at the end. One JSON line goes
to ``test-artifacts/soak.jsonl``; the exit code is 1 when an invariant failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

# The fault functions read their duration at import: set it first.
os.environ.setdefault("IDENTITY_FAULT_SECONDS", "20")

import asyncpg
import httpx
import msgspec

from api.domain import policies
from tests.fault_rig import Load, Rig, settle
from tests.support import World
from tests.test_fault_matrix import FAULT_S, FAULTS, Fault
from tests.workers_support import ROOT, Proc

ARTIFACTS = Path(os.environ.get("IDENTITY_TEST_ARTIFACTS", ROOT / "test-artifacts"))
SLOW_ANSWER_S = 10.0
UNAVAILABLE_IDS = {"SERVER-Unav1", "SERVER-0verl"}
CODE_NOT_FOUND = "COMMAND-2M9fs"
# Operations (a current-password change and a reset-code change are two requests each).
BRANCH_WEIGHTS = {"admin": 25, "current": 20, "code": 20, "link": 10, "login": 25}
REQUEST_KINDS = ("login", "set_admin", "set_current", "reset_code", "set_code", "reset_link")


def new_password() -> str:
    return f"Soak!{uuid.uuid4().hex[:12]}-Xy9"


@dataclass
class Answer:
    kind: str
    at: float
    status: int | None
    error_id: str | None = None
    retry_after: str | None = None
    elapsed: float = 0.0
    verdict: str = ""  # ok, unavailable, no_answer, rate_limited, fault_4xx, other
    code_issued_at: float | None = None  # set_code: when its code was issued


@dataclass
class Person:
    user_id: str
    username: str
    email: str
    password: str
    certain: bool = True  # False: the last change's outcome is unknown (no answer, a 503)


@dataclass
class Windows:
    """Times (seconds since the load started) when faults held parts of the system down."""

    api_down: list[tuple[float, float]] = field(default_factory=list)
    redis_down: list[tuple[float, float]] = field(default_factory=list)

    @staticmethod
    def inside(spans: list[tuple[float, float]], at: float, margin: float = 0.5) -> bool:
        return any(lo - margin <= at <= hi + margin for lo, hi in spans)


@dataclass
class Soak:
    rig: Rig
    admin_token: str
    people: list[list[Person]]  # per client
    rate: float  # requests per second, all clients together
    started: float = 0.0
    started_wall: float = 0.0  # time.time() when the load started
    answers: list[Answer] = field(default_factory=list)
    ok_changes: int = 0  # 200s of password changes
    ok_links: int = 0  # 200s of sendLink resets
    windows: Windows = field(default_factory=Windows)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    _by_client: dict[int, list[Answer]] = field(default_factory=dict)  # one client's answers

    def now(self) -> float:
        return time.monotonic() - self.started

    async def _request(
        self, client: httpx.AsyncClient, kind: str, path: str, body: Any, token: str | None
    ) -> tuple[Answer, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        answer = Answer(kind=kind, at=self.now(), status=None)
        started = time.monotonic()
        decoded: Any = None
        try:
            response = await client.post(path, json=body, headers=headers)
            answer.status = response.status_code
            with contextlib.suppress(ValueError, msgspec.DecodeError):
                decoded = msgspec.json.decode(response.content)
            if response.status_code >= 400 and isinstance(decoded, dict):
                details = decoded.get("details") or [{}]
                answer.error_id = details[0].get("id") or decoded.get("message")
            answer.retry_after = response.headers.get("retry-after")
        except httpx.TransportError as exc:
            answer.error_id = type(exc).__name__
        answer.elapsed = time.monotonic() - started
        self.answers.append(answer)
        self._by_client.setdefault(id(client), []).append(answer)
        return answer, decoded

    async def _login(self, client: httpx.AsyncClient, person: Person) -> str | None:
        body = {
            "checks": {
                "user": {"loginName": person.username},
                "password": {"password": person.password},
            }
        }
        answer, decoded = await self._request(client, "login", "/v2/sessions", body, None)
        if answer.status == 201 and isinstance(decoded, dict):
            token: str = decoded["sessionToken"]
            return token
        return None

    async def _change(
        self,
        client: httpx.AsyncClient,
        kind: str,
        person: Person,
        token: str,
        extra: dict[str, Any],
    ) -> Answer:
        password = new_password()
        body = {"newPassword": {"password": password}, **extra}
        answer, _ = await self._request(
            client, kind, f"/v2/users/{person.user_id}/password", body, token
        )
        if answer.status == 200:
            person.password, person.certain = password, True
            self.ok_changes += 1
        elif answer.status is None or answer.status >= 500:
            person.certain = False  # it may or may not have been committed
        return answer

    async def _operation(self, client: httpx.AsyncClient, branch: str, person: Person) -> None:
        if not person.certain and branch in ("current", "login"):
            branch = "admin"  # an unknown password: the administrator sets a known one
        if branch == "admin":
            await self._change(client, "set_admin", person, self.admin_token, {})
        elif branch == "current":
            session = await self._login(client, person)
            if session is not None:
                await self._change(
                    client, "set_current", person, session, {"currentPassword": person.password}
                )
        elif branch == "code":
            answer, decoded = await self._request(
                client,
                "reset_code",
                f"/v2/users/{person.user_id}/password_reset",
                {"returnCode": {}},
                self.admin_token,
            )
            if answer.status == 200 and isinstance(decoded, dict):
                issued = self.now()
                set_answer = await self._change(
                    client,
                    "set_code",
                    person,
                    self.admin_token,
                    {"verificationCode": decoded["verificationCode"]},
                )
                set_answer.code_issued_at = issued
        elif branch == "link":
            answer, _ = await self._request(
                client,
                "reset_link",
                f"/v2/users/{person.user_id}/password_reset",
                {"sendLink": {"notificationType": "NOTIFICATION_TYPE_Email"}},
                self.admin_token,
            )
            if answer.status == 200:
                self.ok_links += 1
        else:
            await self._login(client, person)

    async def client_loop(self, n: int) -> None:
        mine = self.people[n]
        rng = random.Random(n)
        branches = list(BRANCH_WEIGHTS)
        weights = list(BRANCH_WEIGHTS.values())
        per_request_s = len(self.people) / self.rate
        async with httpx.AsyncClient(base_url=self.rig.base, timeout=15) as client:
            for i in itertools.count():
                if self.stop.is_set():
                    return
                person = mine[i % len(mine)]
                sent = self._by_client.setdefault(id(client), [])
                sent.clear()
                started = time.monotonic()
                await self._operation(client, rng.choices(branches, weights)[0], person)
                requests = max(1, len(sent))
                if sent and sent[-1].status is None:
                    await asyncio.sleep(0.1)  # the API is down: do not spin
                left = requests * per_request_s - (time.monotonic() - started)
                await asyncio.sleep(max(0.0, left) * rng.uniform(0.8, 1.2))

    def _code_lost_with_redis(self, a: Answer) -> bool:
        """A code issued before the application Redis was restarted (empty: it has no
        persistence) and used after: "not found" is the right answer."""
        issued = a.code_issued_at
        return (
            a.kind == "set_code"
            and issued is not None
            and a.status is not None
            and 400 <= a.status < 500
            and a.error_id == CODE_NOT_FOUND
            and any(issued <= hi and a.at >= lo for lo, hi in self.windows.redis_down)
        )

    def judge(self) -> None:
        """A verdict for every answer."""
        for a in self.answers:
            if a.verdict:
                continue
            if a.elapsed >= SLOW_ANSWER_S:
                a.verdict = "other"
            elif a.status is not None and 200 <= a.status < 300:
                a.verdict = "ok"
            elif a.status == 503 and a.error_id in UNAVAILABLE_IDS and a.retry_after:
                a.verdict = "unavailable"
            elif a.status is None and Windows.inside(self.windows.api_down, a.at):
                a.verdict = "no_answer"
            elif a.status == 429:
                a.verdict = "rate_limited"
            elif self._code_lost_with_redis(a):
                a.verdict = "fault_4xx"
            else:
                a.verdict = "other"


# --- processes and their memory --------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, VmRSS in KiB) of every process."""
    table: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid, rss = 0, 0
        for line in status.splitlines():
            if line.startswith("PPid:"):
                ppid = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        table[int(entry.name)] = (ppid, rss)
    return table


def tree_rss_kib(root: int, table: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """VmRSS of ``root`` and all its descendants (prefork children, uvicorn's, backends)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, count, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            total += table[pid][1]
            count += 1
        todo.extend(children.get(pid, []))
    return total, count


def _postmaster_pid(rig: Rig) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((rig.postgres.data / "postmaster.pid").read_text().splitlines()[0])
    return None


def _pid(proc: Proc | None) -> int | None:
    return proc.popen.pid if proc is not None and proc.popen is not None and proc.alive else None


def long_running(rig: Rig) -> dict[str, int | None]:
    """The root pid of each long-running process of the system (None: not running)."""
    return {
        "api": _pid(rig.api),
        "worker": _pid(rig.worker),
        "relay": _pid(rig.relay),
        "beat": _pid(rig.beat),
        "postgres": _postmaster_pid(rig),
        "app_redis": _pid(rig.redis.proc),
        "broker": _pid(rig.stack.broker.proc),
        "soak_driver_and_smtp_sink": os.getpid(),
    }


def memory(rig: Rig) -> dict[str, dict[str, int | None]]:
    table = _proc_table()
    found: dict[str, dict[str, int | None]] = {}
    for name, pid in long_running(rig).items():
        if name.startswith("soak_driver"):
            # Every other process but Postgres is its child: itself only.
            rss, count = (table[pid][1], 1) if pid in table else (0, 0)
        else:
            rss, count = tree_rss_kib(pid, table) if pid else (0, 0)
        found[name] = {"pid": pid, "processes": count, "rss_kib": rss if pid else None}
    return found


# --- the run ---------------------------------------------------------------------------------


async def make_world(rig: Rig, clients: int, per_client: int) -> tuple[str, list[list[Person]]]:
    """An organization whose users may ask for many reset codes, its owner, the users."""
    async with httpx.AsyncClient(base_url=rig.base, timeout=15) as client:
        world = World(client, rig.settings)
        await world.open()
        try:
            org_id, admin = await world.admin()
            # The default (5 reset codes per user per hour) is a limit a soak would hit.
            await policies.set_policy(
                ctx=world.ctx, org_id=org_id, updates={"reset_requests_per_hour": 10_000}
            )
            people: list[list[Person]] = []
            for _ in range(clients):
                mine = []
                for _ in range(per_client):
                    password = new_password()
                    human = await world.human(admin, org_id, password=password)
                    mine.append(Person(human.user_id, human.username, human.email, password))
                people.append(mine)
        finally:
            await world.close()
    return admin, people


async def inject(soak: Soak, name: str, fault: Fault) -> dict[str, Any]:
    """One fault of the matrix, as the matrix runs it; its record."""
    rig = soak.rig
    # The matrix clears this list between scenarios, and its SIGTERM fault checks the exit
    # status of every process in it: hand it only this fault's processes.
    earlier = list(rig.killed_by_fault)
    rig.killed_by_fault.clear()
    marker = Load(rig, soak.admin_token, [])
    marker._started = soak.started  # its now() is the soak's clock
    began = soak.now()
    record: dict[str, Any] = {"fault": name, "at_s": round(began, 1)}
    print(f"[{began:7.1f} s] fault: {name}", flush=True)
    try:
        window = await fault(rig, marker)
        if window is not None:
            soak.windows.api_down.append(window)
    except Exception as exc:
        record["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        traceback.print_exc()
    finally:
        if "Redis" in name:
            soak.windows.redis_down.append((began, soak.now()))
        record["killed"] = [p.name for p in rig.killed_by_fault]
        rig.killed_by_fault[:0] = earlier
    record["took_s"] = round(soak.now() - began, 1)
    print(f"[{soak.now():7.1f} s] healed: {name} ({record['took_s']} s)", flush=True)
    return record


async def run(rig: Rig, args: argparse.Namespace) -> dict[str, Any]:
    admin, people = await make_world(rig, args.clients, args.users_per_client)
    soak = Soak(rig, admin, people, args.rate)
    total_s = args.minutes * 60.0
    warmup_s = min(60.0, args.fault_every / 2, total_s / 3)
    faults = [(k, f) for k, f in FAULTS.items() if args.faults.lower() in k.lower()]
    if not faults:
        raise SystemExit(f"no fault matches {args.faults!r}: {', '.join(FAULTS)}")
    fault_records: list[dict[str, Any]] = []
    rss: dict[str, Any] = {}
    restarts: Counter[str] = Counter()

    async def conductor() -> None:
        await asyncio.sleep(warmup_s)
        rss["start"] = memory(rig)
        rss["start_at_s"] = round(soak.now(), 1)
        for k in itertools.count():
            at = (k + 1) * args.fault_every
            # Each fault must be over (and the system back) well before the end.
            if at + FAULT_S + 30 > total_s:
                break
            await asyncio.sleep(max(0.0, at - soak.now()))
            name, fault = faults[(k + args.first_fault) % len(faults)]
            record = await inject(soak, name, fault)
            for proc_name in record["killed"]:
                restarts[proc_name] += 1
            fault_records.append(record)
        await asyncio.sleep(max(0.0, total_s - soak.now()))

    soak.started, soak.started_wall = time.monotonic(), time.time()
    loops = [asyncio.create_task(soak.client_loop(n)) for n in range(args.clients)]
    progress = asyncio.create_task(_progress(soak))
    try:
        await conductor()
    finally:
        soak.stop.set()
        await asyncio.gather(*loops)
        progress.cancel()
    load_s = soak.now()
    rss["end_before_drain"] = memory(rig)
    print(f"[{load_s:7.1f} s] load stopped; waiting for the outbox to drain", flush=True)
    drained = True
    try:
        await settle(rig, args.settle_s)
    except AssertionError as exc:
        drained = False
        print(str(exc).splitlines()[0], flush=True)
    drain_s = soak.now() - load_s
    rss["end"] = memory(rig)
    soak.judge()
    mail = await count_mail(rig, soak, fault_records)
    exited = rig.exited_by_themselves()
    for name in ("app_redis", "broker", "postgres"):
        if rss["end"][name]["pid"] is None:
            exited.append(f"{name} (not running)")
    return summarize(
        args, soak, fault_records, rss, restarts, mail, exited, drained, load_s, drain_s
    )


async def _progress(soak: Soak) -> None:
    while True:
        await asyncio.sleep(30)
        recent = [a for a in soak.answers if a.at > soak.now() - 30]
        statuses = Counter(str(a.status) for a in recent)
        print(
            f"[{soak.now():7.1f} s] {len(recent) / 30:.1f} req/s over 30 s "
            f"{dict(sorted(statuses.items()))}; {soak.ok_changes} changes, "
            f"{soak.ok_links} links so far",
            flush=True,
        )


async def count_mail(rig: Rig, soak: Soak, fault_records: list[dict[str, Any]]) -> dict[str, Any]:
    """Committed e-mail rows against the e-mails the SMTP sink received; for an e-mail
    received twice, when each copy arrived and the fault last injected before the first."""
    conn = await asyncpg.connect(rig.settings.database_url)
    try:
        rows = await conn.fetch(
            "SELECT id, task, processed_at IS NOT NULL AS processed, "
            "dead_at IS NOT NULL AS dead FROM outbox WHERE task LIKE '%email%'"
        )
        changed_events: int = await conn.fetchval(
            "SELECT count(*) FROM events WHERE event_type = 'user.human.password.changed'"
        )
    finally:
        await conn.close()
    parser = BytesHeaderParser()
    delivered: Counter[str] = Counter()
    received: dict[str, list[float]] = {}  # soak seconds of each copy (the sink's file name)
    unnamed = 0
    for path in rig.stack.sink.directory.glob("*.eml"):
        with path.open("rb") as fp:
            outbox_id = parser.parse(fp)["X-Identity-Outbox-Id"]
        if outbox_id is None:
            unnamed += 1
            continue
        delivered[str(outbox_id)] += 1
        with contextlib.suppress(ValueError):
            at = int(path.name.split("-", 1)[0]) / 1e9 - soak.started_wall
            received.setdefault(str(outbox_id), []).append(round(at, 3))
    doubled_ids = []
    for outbox_id, n in delivered.items():
        if n < 2:
            continue
        copies = sorted(received.get(outbox_id, []))
        before = [f for f in fault_records if copies and f["at_s"] <= copies[0] + 0.5]
        doubled_ids.append(
            {
                "outbox_id": int(outbox_id),
                "copies_at_s": copies,
                "last_fault_before": (
                    f"{before[-1]['fault']} at {before[-1]['at_s']} s" if before else None
                ),
            }
        )
    row_ids = {str(r["id"]) for r in rows}
    changed_rows = sum("changed" in r["task"] for r in rows)
    return {
        "committed": len(rows),
        "committed_changed": changed_rows,
        "committed_reset_links": len(rows) - changed_rows,
        "password_changed_events": changed_events,
        "emails": sum(delivered.values()) + unnamed,
        "lost": len(row_ids - set(delivered)),
        "doubled": sum(n - 1 for n in delivered.values() if n > 1),
        "doubled_ids": doubled_ids,
        "unknown_emails": len(set(delivered) - row_ids) + unnamed,
        "dead": sum(r["dead"] for r in rows),
        "unprocessed": sum(not r["processed"] and not r["dead"] for r in rows),
    }


def summarize(
    args: argparse.Namespace,
    soak: Soak,
    fault_records: list[dict[str, Any]],
    rss: dict[str, Any],
    restarts: Counter[str],
    mail: dict[str, Any],
    exited: list[str],
    drained: bool,
    load_s: float,
    drain_s: float,
) -> dict[str, Any]:
    answers = soak.answers
    verdicts = Counter(a.verdict for a in answers)
    by_kind = {k: sum(a.kind == k for a in answers) for k in REQUEST_KINDS}
    others = [a for a in answers if a.verdict == "other"]
    other_kinds = Counter(
        f"{a.kind} {a.status if a.status is not None else 'no answer'} {a.error_id or ''}".strip()
        + (" slow" if a.elapsed >= SLOW_ANSWER_S else "")
        for a in others
    )
    processes: dict[str, Any] = {}
    for name, end in rss["end"].items():
        start = rss.get("start", {}).get(name, {})
        processes[name] = {
            "rss_start_kib": start.get("rss_kib"),
            "rss_end_kib": end["rss_kib"],
            "processes_end": end["processes"],
            "restarted": start.get("pid") is not None and start.get("pid") != end["pid"],
        }
    failures: list[str] = []
    if others:
        failures.append(f"{len(others)} unexpected answers: {dict(other_kinds.most_common(8))}")
    if not drained or mail["unprocessed"]:
        failures.append(f"outbox did not drain: {mail['unprocessed']} rows unprocessed")
    for key in ("lost", "dead", "unknown_emails"):
        if mail[key]:
            failures.append(f"{mail[key]} e-mails {key}")
    # The one window the mail journal cannot close (docs/DECISIONS.md, "Exactly one e-mail"):
    # a worker SIGKILLed between the SMTP server's acceptance and the journal write, at most
    # one message per pool process (two) killed. Any other copy is a failure.
    worker_kills = sum("worker SIGKILLed" in r["fault"] for r in fault_records)
    for double in mail["doubled_ids"]:
        if not (double["last_fault_before"] or "").startswith("worker SIGKILLed"):
            failures.append(
                f"outbox row {double['outbox_id']}: e-mails at {double['copies_at_s']} s, "
                f"last fault before: {double['last_fault_before']}"
            )
    if mail["doubled"] > 2 * worker_kills:
        failures.append(f"{mail['doubled']} e-mails doubled for {worker_kills} worker SIGKILLs")
    if mail["emails"] - mail["doubled"] != mail["committed"]:
        failures.append(f"{mail['emails']} e-mails for {mail['committed']} committed rows")
    if mail["committed_changed"] != mail["password_changed_events"]:
        failures.append(
            f"{mail['password_changed_events']} password events but "
            f"{mail['committed_changed']} 'changed' e-mail rows"
        )
    if mail["committed_changed"] < soak.ok_changes:
        failures.append(f"{soak.ok_changes} changes answered 200, {mail['committed_changed']} rows")
    if mail["committed_reset_links"] < soak.ok_links:
        failures.append(f"{soak.ok_links} links answered 200, {mail['committed_reset_links']} rows")
    if exited:
        failures.append(f"exited by themselves: {exited}")
    for record in fault_records:
        if "error" in record:
            failures.append(f"fault {record['fault']!r} failed: {record['error']}")
    for record in fault_records:
        # The answers from the fault's start to 5 s after it was healed.
        lo, hi = record["at_s"], record["at_s"] + record["took_s"] + 5
        during = Counter(a.verdict for a in answers if lo <= a.at <= hi)
        record["answers"] = {
            "ok": during["ok"],
            "503": during["unavailable"],
            "no_answer": during["no_answer"],
            "other": sum(
                n for v, n in during.items() if v not in ("ok", "unavailable", "no_answer")
            ),
        }
    slowest = max((a.elapsed for a in answers), default=0.0)
    return {
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{os.cpu_count()} cores",
        "minutes": args.minutes,
        "fault_every_s": args.fault_every,
        "fault_s": FAULT_S,
        "clients": args.clients,
        "users": sum(len(p) for p in soak.people),
        "target_rate": args.rate,
        "load_s": round(load_s, 1),
        "requests": len(answers),
        "requests_per_s": round(len(answers) / load_s, 1) if load_s else 0,
        "requests_by_kind": by_kind,
        "ok_2xx": verdicts["ok"],
        "unavailable_503": verdicts["unavailable"],
        "no_answer": verdicts["no_answer"],
        "rate_limited_429": verdicts["rate_limited"],
        "fault_4xx": verdicts["fault_4xx"],
        "other": verdicts["other"],
        "other_kinds": dict(other_kinds.most_common(10)),
        "slowest_answer_s": round(slowest, 3),
        "p99_answer_s": round(_quantile([a.elapsed for a in answers], 0.99), 3),
        "changes_200": soak.ok_changes,
        "links_200": soak.ok_links,
        **mail,
        "drain_s": round(drain_s, 1),
        "faults": fault_records,
        "restarts": dict(restarts),
        "exited_by_themselves": exited,
        "rss_start_at_s": rss.get("start_at_s"),
        "processes": processes,
        "failures": failures,
        "ok": not failures,
    }


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def print_table(result: dict[str, Any]) -> None:
    r = result
    lines = [
        "",
        f"soak {r['at']}: {r['minutes']} min on {r['machine']}, {r['clients']} clients, "
        f"{r['users']} users, a fault every {r['fault_every_s']} s for {r['fault_s']:.0f} s",
        "",
        "| requests | 2xx | 503 | no answer | 429 | 4xx from a fault | other | req/s | p99 s "
        "| slowest s |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {r['requests']} | {r['ok_2xx']} | {r['unavailable_503']} | {r['no_answer']} "
        f"| {r['rate_limited_429']} | {r['fault_4xx']} | {r['other']} | {r['requests_per_s']} "
        f"| {r['p99_answer_s']} | {r['slowest_answer_s']} |",
        "",
        "requests by kind: " + ", ".join(f"{k} {v}" for k, v in r["requests_by_kind"].items()),
        "",
        "| committed e-mail rows | (changed / reset link) | e-mails | lost | doubled | dead "
        "| drain s |",
        "|---|---|---|---|---|---|---|",
        f"| {r['committed']} | {r['committed_changed']} / {r['committed_reset_links']} "
        f"| {r['emails']} | {r['lost']} | {r['doubled']} | {r['dead']} | {r['drain_s']} |",
        "",
        "| fault | at s | took s | killed | 2xx / 503 / no answer / other until 5 s after "
        "| error |",
        "|---|---|---|---|---|---|",
        *(
            f"| {f['fault']} | {f['at_s']} | {f['took_s']} | {', '.join(f['killed']) or '-'} "
            f"| {' / '.join(str(n) for n in f['answers'].values())} | {f.get('error', '-')} |"
            for f in r["faults"]
        ),
        "",
        f"| process | RSS MiB at {r['rss_start_at_s']} s | RSS MiB at the end | processes "
        "| restarted |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {_mib(p['rss_start_kib'])} | {_mib(p['rss_end_kib'])} "
            f"| {p['processes_end']} | {'yes' if p['restarted'] else 'no'} |"
            for name, p in r["processes"].items()
        ),
        "",
        f"exited by themselves: {r['exited_by_themselves'] or 'none'}",
        "result: " + ("OK" if r["ok"] else "FAILED"),
        *(f"  - {f}" for f in r["failures"]),
    ]
    print("\n".join(lines), flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument(
        "--fault-every", type=float, default=165.0, help="seconds between faults (default 165)"
    )
    parser.add_argument("--rate", type=float, default=40.0, help="requests/s, all clients")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--users-per-client", type=int, default=6)
    parser.add_argument("--settle-s", type=float, default=300.0, help="bound for the drain")
    parser.add_argument("--keep", action="store_true", help="keep the e-mails too")
    parser.add_argument(
        "--faults", default="", help="only the faults whose name contains this (e.g. worker)"
    )
    parser.add_argument(
        "--first-fault", type=int, default=0, help="index in FAULTS of the first fault"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="identity-soak-"))
    print(f"soak: {args.minutes} min, logs in {directory}", flush=True)
    rig = Rig(directory)
    try:
        rig.start_all()
        result = asyncio.run(run(rig, args))
    finally:
        rig.close()
    print_table(result)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with (ARTIFACTS / "soak.jsonl").open("a") as out:
        out.write(json.dumps({**result, "logs": str(directory)}) + "\n")
    if result["ok"] and not args.keep:
        shutil.rmtree(directory / "mail", ignore_errors=True)  # tens of thousands of files
    print(f"logs in {directory}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
