"""The stores a request needs, opened once per process (in the app's lifespan)."""

from __future__ import annotations

from dataclasses import dataclass

from api.db import Pool
from api.hashing import PasswordHasher
from api.kv import Keys, Redis
from api.outbox import OutboxDispatcher
from api.settings import Settings


@dataclass(frozen=True)
class Stores:
    settings: Settings
    pool: Pool
    redis: Redis
    keys: Keys
    hasher: PasswordHasher
    outbox: OutboxDispatcher
