"""Raw argon2id hash rate of this machine, with the server's own hashing parameters.

Prints one JSON line: hashes per second with 1 thread and with N threads (default: the
number of cores), each measured for a fixed time. argon2-cffi releases the GIL, so threads
hash in parallel, as the server's hash pool does.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import argon2

from api.settings import get_settings


def rate(hasher: argon2.PasswordHasher, threads: int, seconds: float) -> tuple[float, int]:
    deadline = time.perf_counter() + seconds

    def work(i: int) -> int:
        n = 0
        password = f"Bench-Passw0rd-{i}!"
        while time.perf_counter() < deadline:
            hasher.hash(password)
            n += 1
        return n

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(work, range(threads)))
    return total / (time.perf_counter() - start), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--name", default="argon2id raw", help="the result line's name")
    args = parser.parse_args()
    settings = get_settings()
    hasher = argon2.PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
        type=argon2.Type.ID,
    )
    hasher.hash("warm-up")
    one, _ = rate(hasher, 1, args.seconds)
    many, count = rate(hasher, args.threads, args.seconds)
    print(
        json.dumps(
            {
                "name": args.name,
                "params": f"m={settings.argon2_memory_kib},t={settings.argon2_time_cost},"
                f"p={settings.argon2_parallelism}",
                "threads": args.threads,
                "hashes_per_s": round(many, 1),
                "hashes_per_s_1_thread": round(one, 1),
                # Four decimals for a trivial hash (m=8, t=1: some 0.04 ms).
                "ms_per_hash_1_thread": round(1000 / one, 2 if one < 1000 else 4),
                "hashes": count,
            }
        )
    )


if __name__ == "__main__":
    main()
