"""Password hashing in a bounded thread pool; the event loop never hashes.

argon2-cffi and bcrypt release the GIL, so a pool with one thread per core hashes in
parallel. Admission is bounded twice, and a refusal is immediate (503 ``SERVER-0verl`` with
``Retry-After``) rather than a queue without bound: by count (``hash_queue_limit`` waiting),
and by time — a hash whose expected wait (the hashes ahead of it per thread times the recent
hash time, an exponential average) exceeds ``hash_max_wait_s`` is refused, so admitted
requests wait a bounded time whatever the hash parameters. The synchronous entry points
refuse to run on an event-loop thread, so a slip is a loud error, not a stalled server.
"""

from __future__ import annotations

import asyncio
import ctypes
import math
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import argon2
import bcrypt

from api import metrics
from api.errors import HashInvalid, Overloaded
from api.settings import Settings

T = TypeVar("T")
_BCRYPT_MAX_BYTES = 72


# The OS name of the hashing threads (``bench/proc_cpu.py`` looks for it).
HASH_THREAD_NAME = "identity-hash"


def _name_hash_thread() -> None:
    """Give the hashing thread an OS name (``top -H``, ``/proc/<pid>/task/*/comm``), so its
    CPU can be told from the event loop's (``bench/proc_cpu.py``)."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, HASH_THREAD_NAME.encode(), 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


class HashingOnEventLoop(RuntimeError):
    """A hash was computed on an event-loop thread; use ``PasswordHasher``'s async methods."""


def _refuse_event_loop_thread() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise HashingOnEventLoop("password hashing must not run on the event-loop thread")


# Imported hashes are verified at every login: refuse parameters that would let one hash
# cost seconds or gigabytes.
MAX_IMPORTED_ARGON2_MEMORY_KIB = 256 * 1024
MAX_IMPORTED_ARGON2_TIME_COST = 10
MAX_IMPORTED_ARGON2_PARALLELISM = 16
MAX_IMPORTED_BCRYPT_COST = 14


def is_supported_hash(encoded: str) -> bool:
    """An argon2 (PHC) or bcrypt (MCF) hash whose cost is within bounds."""
    if encoded.startswith(("$argon2id$", "$argon2i$", "$argon2d$")):
        try:
            params = argon2.extract_parameters(encoded)
        except argon2.exceptions.InvalidHashError:
            return False
        return (
            params.memory_cost <= MAX_IMPORTED_ARGON2_MEMORY_KIB
            and params.time_cost <= MAX_IMPORTED_ARGON2_TIME_COST
            and params.parallelism <= MAX_IMPORTED_ARGON2_PARALLELISM
        )
    if encoded.startswith(("$2a$", "$2b$", "$2y$")) and len(encoded) == 60:
        cost = encoded[4:6]
        return cost.isdigit() and 4 <= int(cost) <= MAX_IMPORTED_BCRYPT_COST
    return False


class PasswordHasher:
    """argon2id for new hashes; argon2 (any variant) and bcrypt verification of imports."""

    def __init__(self, settings: Settings) -> None:
        self._argon2 = argon2.PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            type=argon2.Type.ID,
        )
        self._threads = settings.hash_threads
        self._executor = ThreadPoolExecutor(
            self._threads, thread_name_prefix="hash", initializer=_name_hash_thread
        )
        # In flight = running + waiting; more than threads + queue limit is an overload.
        self._capacity = self._threads + settings.hash_queue_limit
        self._max_wait_s = settings.hash_max_wait_s
        self._in_flight = 0
        # Recent seconds per hash (exponential average), updated by the hashing threads;
        # started from one hash now, so the first burst is judged too.
        started = time.perf_counter()
        self._argon2.hash("calibration")
        self._hash_s = time.perf_counter() - started
        self._guard = threading.Lock()

    # --- synchronous primitives (worker threads only) ------------------------------------

    def hash_sync(self, password: str) -> str:
        _refuse_event_loop_thread()
        return self._argon2.hash(password)

    def verify_sync(self, encoded: str, password: str) -> bool:
        _refuse_event_loop_thread()
        if encoded.startswith("$argon2"):
            try:
                return self._argon2.verify(encoded, password)
            except argon2.exceptions.VerificationError:
                return False
            except argon2.exceptions.InvalidHashError:
                raise HashInvalid() from None
        if encoded.startswith(("$2a$", "$2b$", "$2y$")):
            # bcrypt 5 raises past 72 bytes; the hash was made from the first 72, as bcrypt does.
            secret = password.encode()[:_BCRYPT_MAX_BYTES]
            try:
                return bcrypt.checkpw(secret, encoded.encode())
            except ValueError:
                raise HashInvalid() from None
        raise HashInvalid()

    def needs_rehash(self, encoded: str) -> bool:
        if not encoded.startswith("$argon2id$"):
            return True
        return self._argon2.check_needs_rehash(encoded)

    # --- async entry points --------------------------------------------------------------

    async def hash(self, password: str) -> str:
        return await self._submit(self.hash_sync, password)

    async def verify(self, encoded: str, password: str) -> bool:
        return await self._submit(self.verify_sync, encoded, password)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def expected_wait_s(self) -> float:
        """How long a hash submitted now would wait for a thread."""
        ahead = self._in_flight - self._threads + 1
        return max(0, ahead) / self._threads * self._hash_s

    def _timed(self, fn: Callable[..., T], *args: str) -> T:
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            elapsed = time.perf_counter() - started
            with self._guard:
                self._hash_s = 0.8 * self._hash_s + 0.2 * elapsed

    def _refuse_if_full(self) -> None:
        if self._in_flight >= self._capacity or self.expected_wait_s() > self._max_wait_s:
            metrics.HASH_OVERLOAD_REJECTIONS.inc()
            raise Overloaded(retry_after=max(1, math.ceil(self.expected_wait_s())))

    def admit(self) -> None:
        """Refuse now (``Overloaded``) a request that will need a hash the pool cannot take
        in time: called before the request's other work, so that a refusal costs next to
        nothing and the admitted requests keep the CPU (the hash's own submission checks
        again)."""
        with self._guard:
            self._refuse_if_full()

    async def _submit(self, fn: Callable[..., T], *args: str) -> T:
        with self._guard:
            self._refuse_if_full()
            self._in_flight += 1
        metrics.HASHES_IN_FLIGHT.inc()
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._timed, fn, *args)
        finally:
            metrics.HASHES_IN_FLIGHT.dec()
            with self._guard:
                self._in_flight -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
