"""Issue one reset code per user (``returnCode``), for the reset-code branch of the load:
writes ``<user id> <code>`` lines. No hashing on the server: a code is a Redis write and an
event. Requests go through bench/rawhttp.py (httpx was slower than the server here)."""

from __future__ import annotations

import argparse
import asyncio
import os

from bench.rawhttp import RawConnection


async def issue(api: str, token: str, user_ids: list[str], concurrency: int) -> list[str]:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for user_id in user_ids:
        queue.put_nowait(user_id)
    lines: list[str] = []

    async def worker() -> None:
        connection = RawConnection(
            api, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        )
        while not queue.empty():
            user_id = queue.get_nowait()
            answer = await asyncio.wait_for(
                connection.request(
                    "POST", f"/v2/users/{user_id}/password_reset", b'{"returnCode":{}}'
                ),
                30,
            )
            answer.raise_for_status(f"issuing a code to {user_id}")
            lines.append(f"{user_id} {answer.json()['verificationCode']}")
        await connection.aclose()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api", required=True)
    parser.add_argument("--users", required=True, help="file with one user id a line")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(args.users, encoding="utf-8") as f:
        user_ids = [line.strip() for line in f if line.strip()]
    lines = asyncio.run(issue(args.api, os.environ["BENCH_TOKEN"], user_ids, 16))
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
