"""CPU time of processes from /proc, for per-process CPU per change.

``proc_cpu.py snapshot GROUP=PATTERN ...`` prints JSON {group: cpu seconds} summed over the
processes whose command line matches PATTERN (a regular expression), children included by
matching; ``proc_cpu.py diff BEFORE AFTER CHANGES`` prints the table of ms per change;
``proc_cpu.py per BEFORE AFTER COUNT`` prints JSON {group: ms per unit} (``bench/run.sh``
puts it in each scenario's JSON line as ``cpu_ms_per_req``).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _processes() -> list[tuple[int, str, float]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime and stime are fields 14 and 15 of stat; after ")" they are at 11 and 12.
        seconds = (int(fields[11]) + int(fields[12])) / TICKS
        found.append((int(entry.name), cmdline, seconds))
    return found


# The API's hashing threads name themselves (``api.hashing.HASH_THREAD_NAME``): their CPU is
# reported apart, as "<group>_hash", so the rest is the request path's own.
_HASH_THREAD = "identity-hash"


def _thread_cpu(pid: int, name: str) -> float:
    seconds = 0.0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0.0
    for task in tasks:
        try:
            if (task / "comm").read_text().strip() != name:
                continue
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds += (int(fields[11]) + int(fields[12])) / TICKS
    return seconds


def snapshot(groups: dict[str, str]) -> dict[str, float]:
    totals = dict.fromkeys(groups, 0.0)
    hashing = dict.fromkeys(groups, 0.0)
    for pid, cmdline, seconds in _processes():
        if pid == os.getpid():
            continue
        for group, pattern in groups.items():
            if re.search(pattern, cmdline):
                hashed = _thread_cpu(pid, _HASH_THREAD)
                totals[group] += seconds - hashed
                hashing[group] += hashed
                break
    for group, seconds in hashing.items():
        if seconds:
            totals[f"{group}_hash"] = seconds
    return totals


def main() -> None:
    if sys.argv[1] == "snapshot":
        groups = dict(arg.split("=", 1) for arg in sys.argv[2:])
        print(json.dumps(snapshot(groups)))
        return
    before = json.loads(Path(sys.argv[2]).read_text())
    after = json.loads(Path(sys.argv[3]).read_text())
    changes = int(sys.argv[4])
    if sys.argv[1] == "per":
        per = {g: round(1000 * (after[g] - before.get(g, 0.0)) / max(changes, 1), 2) for g in after}
        per["all"] = round(sum(per.values()), 2)
        print(json.dumps(per))
        return
    print(f"| process | CPU s | ms per change ({changes} changes) |")
    print("|---|---|---|")
    total = 0.0
    for group in after:
        used = after[group] - before.get(group, 0.0)
        total += used
        print(f"| {group} | {used:.2f} | {1000 * used / max(changes, 1):.1f} |")
    print(f"| all | {total:.2f} | {1000 * total / max(changes, 1):.1f} |")


if __name__ == "__main__":
    main()
