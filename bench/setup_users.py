"""Create benchmark users over HTTP and write their IDs, one a line.

The token (user.write on ``--org``) comes from ``BENCH_TOKEN``, never from the command line.

Users are created with ``hashedPassword`` (an argon2id hash of ``--password`` computed once
here, with the server's parameters), so creating thousands of them costs no hashing on the
server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import uuid

import argon2
import httpx

from api.settings import get_settings


async def create(args: argparse.Namespace, encoded: str) -> list[str]:
    headers = {"Authorization": f"Bearer {os.environ['BENCH_TOKEN']}"}
    run = uuid.uuid4().hex[:8]
    ids: list[str] = [""] * args.count
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(args.count):
        queue.put_nowait(i)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            body = {
                "username": f"{args.prefix}-{run}-{i}",
                "organization": {"orgId": args.org},
                "profile": {"givenName": "Bench", "familyName": f"User {i}"},
                "email": {"email": f"{args.prefix}-{run}-{i}@bench.example", "isVerified": True},
                "hashedPassword": {"hash": encoded, "changeRequired": False},
            }
            response = await client.post("/v2/users/human", json=body, headers=headers)
            response.raise_for_status()
            ids[i] = response.json()["userId"]

    async with httpx.AsyncClient(base_url=args.api, timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(args.concurrency)))
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
