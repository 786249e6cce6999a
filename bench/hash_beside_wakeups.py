"""How much a memory-hard hash slows down beside processes that only wake up often.

Two threads hash (argon2id at the service's default parameters) for a few seconds alone, then
while two small processes ping-pong a byte over a socket pair (each wake-up does next to
nothing); each time it prints the hashing threads' CPU per hash (``time.thread_time``), so
the difference is what the wake-ups cost the hash, not the CPU they took from it.

    .venv/bin/python bench/hash_beside_wakeups.py [--seconds 6] [--threads 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import threading
import time

import argon2

from api.settings import Settings


def _cpu_ms_per_hash(settings: Settings, threads: int, seconds: float) -> list[float]:
    hasher = argon2.PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
        type=argon2.Type.ID,
    )
    results: list[float] = []

    def work() -> None:
        count, started, end = 0, time.thread_time(), time.monotonic() + seconds
        while time.monotonic() < end:
            hasher.hash("x")
            count += 1
        results.append((time.thread_time() - started) / count * 1000)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results


def _echo(sock: socket.socket) -> None:
    while data := sock.recv(1):
        sock.send(data)


def _ping(sock: socket.socket, seconds: float, pause_s: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sock.send(b"x")
        sock.recv(1)
        time.sleep(pause_s)
    sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pause-ms", type=float, default=0.5, help="between two ping-pongs")
    args = parser.parse_args()
    settings = Settings()
    alone = _cpu_ms_per_hash(settings, args.threads, args.seconds)
    left, right = socket.socketpair()
    echo = multiprocessing.Process(target=_echo, args=(right,), daemon=True)
    ping = multiprocessing.Process(
        target=_ping, args=(left, args.seconds + 1, args.pause_ms / 1000), daemon=True
    )
    echo.start()
    ping.start()
    time.sleep(0.5)
    beside = _cpu_ms_per_hash(settings, args.threads, args.seconds)
    ping.join()
    echo.terminate()
    fmt = ", ".join
    print(f"CPU ms per hash, alone: {fmt(f'{v:.2f}' for v in alone)}")
    print(f"CPU ms per hash, beside the ping-pong: {fmt(f'{v:.2f}' for v in beside)}")
    print(f"slower by {(sum(beside) / sum(alone) - 1) * 100:.1f} %")


if __name__ == "__main__":
    main()
