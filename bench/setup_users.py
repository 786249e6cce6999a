"""Create benchmark users over HTTP and write their IDs, one a line.

The token (user.write on ``--org``) comes from ``BENCH_TOKEN``, never from the command line.

Users are created with ``hashedPassword`` (an argon2id hash of ``--password`` computed once
here, with the server's parameters), so creating thousands of them costs no hashing on the
server. Requests go through bench/rawhttp.py: with httpx this client, not the server, was
the bottleneck (~190 users/s at 94 % of a core).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import uuid

import argon2

from api.settings import get_settings
from bench.rawhttp import RawConnection


async def create(args: argparse.Namespace, encoded: str) -> list[str]:
    headers = {
        "Authorization": f"Bearer {os.environ['BENCH_TOKEN']}",
        "Content-Type": "application/json",
    }
    run = uuid.uuid4().hex[:8]
    ids: list[str] = [""] * args.count
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(args.count):
        queue.put_nowait(i)

    async def worker() -> None:
        connection = RawConnection(args.api, headers)
        while not queue.empty():
            i = queue.get_nowait()
            body = {
                "username": f"{args.prefix}-{run}-{i}",
                "organization": {"orgId": args.org},
                "profile": {"givenName": "Bench", "familyName": f"User {i}"},
                "email": {"email": f"{args.prefix}-{run}-{i}@bench.example", "isVerified": True},
                "hashedPassword": {"hash": encoded, "changeRequired": False},
            }
            answer = await asyncio.wait_for(
                connection.request("POST", "/v2/users/human", json.dumps(body).encode()), 30
            )
            answer.raise_for_status(f"creating user {i}")
            ids[i] = answer.json()["userId"]
        await connection.aclose()

    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api", required=True)
    parser.add_argument("--org", required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--password", required=True)
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    settings = get_settings()
    encoded = argon2.PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
        type=argon2.Type.ID,
    ).hash(args.password)
    ids = asyncio.run(create(args, encoded))
    with open(args.out, "w", encoding="utf-8") as out:
        out.write("\n".join(ids) + "\n")


if __name__ == "__main__":
    main()
