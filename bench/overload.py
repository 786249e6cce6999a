"""Overload: admin sets offered at a fixed rate above what the server sustains (open loop).

wrk is a closed loop: each connection waits for its answer before it sends again, so a slow
server slows its own load down and is never overloaded. Here requests leave on a fixed
schedule, ``--rate`` a second for ``--seconds``, whatever the answers, each on a connection
of its own when none is free (up to ``--connections``), as independent clients would send
them. The server should admit about what it can hash (200s at close to the sustainable
rate, none of them waiting long) and refuse the rest at once with 503 ``SERVER-0verl`` and
``Retry-After``.

Each request sets the password of the next user of ``--users`` (round-robin, as wrk.lua
does), alternating two strong passwords per user. Latency is measured from the request's
scheduled send time, so a generator running late counts against the answer rather than
hiding it (no coordinated omission); how late the generator itself was is reported apart
(``generator_lag_*``, ``sent_rps``): if it fell behind, the figures are the generator's.

HTTP/1.1, keep-alive, one request at a time per connection. ``--client raw`` (the default)
speaks it over asyncio streams (bench/rawhttp.py); ``--client httpx`` sends through httpx,
one client per connection. httpx costs ~2-3 ms of CPU per request here: about enough for
the production hash (~200 req/s offered, p99 +0.2 s of its own), not for the trivial hash's
thousands on a shared 2-core machine, where it measured its own queue (a server answering
in 50 ms at 900 req/s: p50 1.3 s; the raw client: 52 ms at 1,800 req/s). A single httpx
client with a pool of 500 is worse still: its pool scans every waiting request and
connection at each step (a server answering in 1 s measured as 7-12 s at 160 req/s).

Prints one JSON line (bench/run.sh's results file); the token comes from ``BENCH_TOKEN``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import ssl
import time
from collections import Counter
from typing import Any, Protocol

import httpx

from bench.rawhttp import Answer, RawConnection

DETAIL_TYPE = "type.googleapis.com/zitadel.v1.ErrorDetail"
OVERLOAD_ID = "SERVER-0verl"  # api/errors.py, Overloaded


class Connection(Protocol):
    async def post(self, path: str, body: bytes) -> Answer: ...

    async def aclose(self) -> None: ...


class RawPost:
    """bench/rawhttp.py's connection."""

    def __init__(self, api: str, headers: dict[str, str]) -> None:
        self._connection = RawConnection(api, headers)

    async def post(self, path: str, body: bytes) -> Answer:
        return await self._connection.request("POST", path, body)

    async def aclose(self) -> None:
        await self._connection.aclose()


class HttpxConnection:
    """httpx, one client (so one connection) per connection slot."""

    def __init__(self, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self._client, self._headers = client, headers

    async def post(self, path: str, body: bytes) -> Answer:
        response = await self._client.post(path, content=body, headers=self._headers)
        return Answer(response.status_code, dict(response.headers), response.content)

    async def aclose(self) -> None:
        await self._client.aclose()


def percentile(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(len(values) * p))] if values else 0.0


def is_contract_503(answer: Answer) -> tuple[bool, bool]:
    """(Retry-After is a whole number of seconds >= 1, the body is the contract's)."""
    retry_after = answer.headers.get("retry-after", "")
    retry_ok = retry_after.isdigit() and int(retry_after) >= 1
    try:
        body = json.loads(answer.body)
        details = body.get("details") or []
        body_ok = (
            body.get("code") == 14
            and str(body.get("message", "")).endswith(f"({OVERLOAD_ID})")
            and len(details) >= 1
            and details[0].get("@type") == DETAIL_TYPE
            and details[0].get("id") == OVERLOAD_ID
        )
    except (ValueError, AttributeError):
        body_ok = False
    return retry_ok, body_ok


async def offer(args: argparse.Namespace, users: list[str]) -> dict[str, Any]:
    headers = {
        "Authorization": f"Bearer {os.environ['BENCH_TOKEN']}",
        "Content-Type": "application/json",
    }
    passwords = (args.password_a, args.password_b)
    flips = [0] * len(users)
    total = round(args.rate * args.seconds)
    admitted: list[tuple[float, float]] = []  # (completed at, latency ms), from t0
    lag: list[float] = []
    statuses: Counter[str] = Counter()
    connection_errors: Counter[str] = Counter()
    s503 = {"count": 0, "retry_after_ok": 0, "body_ok": 0, "ok": 0}
    bad_example: dict[str, Any] = {}
    waited = 0  # requests that found every connection busy (the open loop closed a little)
    loop = asyncio.get_running_loop()

    idle: list[Connection] = []
    opened: list[Connection] = []
    freed = asyncio.Condition()
    tls = ssl.create_default_context()  # made once: each httpx client would load the CA bundle

    def connect() -> Connection:
        if args.client == "raw":
            return RawPost(args.api, headers)
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        client = httpx.AsyncClient(
            base_url=args.api, limits=limits, timeout=args.timeout, verify=tls
        )
        return HttpxConnection(client, headers)

    async def take() -> Connection:
        nonlocal waited
        if idle:
            return idle.pop()
        if len(opened) < args.connections:
            opened.append(connect())
            return opened[-1]
        waited += 1
        async with freed:
            await freed.wait_for(lambda: bool(idle) or len(opened) < args.connections)
        return await take()

    async def give(connection: Connection, broken: bool = False) -> None:
        if broken:  # closed and forgotten: a fresh connection takes its place
            opened.remove(connection)
            await connection.aclose()
        else:
            idle.append(connection)
        async with freed:
            freed.notify()

    async def one(i: int, scheduled: float) -> None:
        lag.append((loop.time() - scheduled) * 1000)
        n = i % len(users)
        flips[n] ^= 1
        body = ('{"newPassword":{"password":"' + passwords[flips[n]] + '"}}').encode()
        connection = await take()
        try:
            answer = await asyncio.wait_for(
                connection.post(f"/v2/users/{users[n]}/password", body), args.timeout
            )
        except (
            OSError,
            asyncio.IncompleteReadError,
            TimeoutError,
            ValueError,  # an answer that is not HTTP
            httpx.HTTPError,
        ) as exc:
            connection_errors[type(exc).__name__] += 1
            await give(connection, broken=True)
            return
        done = loop.time()
        await give(connection)
        statuses[str(answer.status)] += 1
        if answer.status == 200:
            admitted.append((done - t0, (done - scheduled) * 1000))
        elif answer.status == 503:
            retry_ok, body_ok = is_contract_503(answer)
            s503["count"] += 1
            s503["retry_after_ok"] += retry_ok
            s503["body_ok"] += body_ok
            s503["ok"] += retry_ok and body_ok
            if not (retry_ok and body_ok) and not bad_example:
                bad_example.update(
                    retry_after=answer.headers.get("retry-after"),
                    body=answer.body[:300].decode("utf-8", "replace"),
                )

    tasks: list[asyncio.Task[None]] = []
    t0 = loop.time() + 0.1
    sent = 0
    try:
        while sent < total:
            # Launch every request whose time has come, then sleep until the next one: a
            # late wake-up sends a burst, so the average rate holds.
            due = min(total, math.floor((loop.time() - t0) * args.rate) + 1)
            while sent < due:
                tasks.append(asyncio.create_task(one(sent, t0 + sent / args.rate)))
                sent += 1
            await asyncio.sleep(max(0.0, t0 + sent / args.rate - loop.time()))
        sending_s = loop.time() - t0
        await asyncio.gather(*tasks)
        drained_s = loop.time() - t0
    finally:
        await asyncio.gather(*(connection.aclose() for connection in opened))

    in_window = [latency for at, latency in admitted if at <= args.seconds]
    latencies = sorted(latency for _, latency in admitted)
    lag.sort()
    admitted_rps = len(in_window) / args.seconds
    others = {k: v for k, v in statuses.items() if k not in ("200", "503")}
    max_ms = latencies[-1] if latencies else 0.0
    return {
        "name": args.name,
        "kind": "overload",
        "scenario": "overload",
        "client": args.client,
        "factor": args.factor,
        "sustainable_rps": args.sustainable,
        "sustainable_from": args.sustainable_from,
        "offered_rps": round(args.rate, 1),
        "duration_s": args.seconds,
        "sent": total,
        # Below the offered rate when the generator could not keep up (see lag).
        "sent_rps": round(total / sending_s, 1) if sending_s > 0 else 0.0,
        "drained_s": round(drained_s, 2),
        "connections": args.connections,
        "connections_opened": len(opened),
        # Requests that waited for a connection (latency counts the wait; past the limit
        # the load is no longer fully open-loop).
        "connection_waits": waited,
        "admitted": len(admitted),
        # 200s completed within the offered window, per second of it.
        "admitted_in_window": len(in_window),
        "admitted_rps": round(admitted_rps, 1),
        "admitted_ratio": round(admitted_rps / args.sustainable, 3),
        "p50_ms": round(percentile(latencies, 0.50), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "max_ms": round(max_ms, 1),
        "statuses": dict(statuses),
        "s503": {**s503, "all_ok": s503["ok"] == s503["count"], "bad_example": bad_example},
        "other_statuses": others,
        "connection_errors": dict(connection_errors),
        "generator_lag_p99_ms": round(percentile(lag, 0.99), 1),
        "generator_lag_max_ms": round(lag[-1], 1) if lag else 0.0,
        "checks": {
            "max_wait_le_2s": bool(latencies) and max_ms <= 2000,
            "admitted_ratio_ge_0_90": admitted_rps / args.sustainable >= 0.90,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api", required=True)
    parser.add_argument("--users", required=True, help="file with one user id a line")
    parser.add_argument("--sustainable", type=float, required=True, help="req/s, measured")
    parser.add_argument("--sustainable-from", default="admin", help="where that rate came from")
    parser.add_argument("--factor", type=float, default=3.0, help="offered = factor x sustainable")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    parser.add_argument("--password-a", default="Bench-Passw0rd-A!")
    parser.add_argument("--password-b", default="Bench-Passw0rd-B!")
    parser.add_argument("--name", default="overload: admin set, open loop")
    args = parser.parse_args()
    if args.sustainable <= 0:
        parser.error("--sustainable must be a positive rate")
    args.rate = args.sustainable * args.factor
    with open(args.users, encoding="utf-8") as f:
        users = [line.split()[0] for line in f if line.strip()]
    started = time.time()
    record = asyncio.run(offer(args, users))
    record["started_at"] = round(started, 3)
    print(json.dumps(record))


if __name__ == "__main__":
    main()
