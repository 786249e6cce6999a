"""Sonyflake-style IDs: decimal strings of 17-19 digits, time-ordered, unique per process."""

from __future__ import annotations

import os
import secrets
import threading
import time

_EPOCH_MS = 1_400_000_000_000  # 2014-05-13, as Sonyflake
_lock = threading.Lock()
_machine = (os.getpid() ^ secrets.randbits(16)) & 0xFFFF
_last_tick = 0
_seq = 0


def new_id() -> str:
    """Return a new ID: 39 bits of 10 ms ticks, 8 bits of sequence, 16 bits of machine."""
    global _last_tick, _seq
    with _lock:
        tick = (int(time.time() * 1000) - _EPOCH_MS) // 10
        if tick <= _last_tick:
            tick = _last_tick
            _seq = (_seq + 1) & 0xFF
            if _seq == 0:  # 256 IDs in one tick: borrow the next tick
                tick += 1
        else:
            _seq = 0
        _last_tick = tick
        return str((tick << 24) | (_seq << 16) | _machine)
