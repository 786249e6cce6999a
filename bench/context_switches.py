"""Context switches and CPU per process over a few seconds, from /proc: how often each
process was woken (voluntary) or preempted (involuntary), e.g. beside a load.

    BENCH_DURATION=20s bash bench/system.sh &   # then, once its log says "wrk:":
    .venv/bin/python bench/context_switches.py 10

Prints one line per process (threads summed; the hashing threads apart by their name,
``identity-hash``), busiest first. Divide by the changes of the window for per-change figures.
"""

from __future__ import annotations

import os
import sys
import time

Sample = dict[str, tuple[str, str, int, int, int]]


def sample() -> Sample:
    """Per thread: command line, thread name, voluntary and involuntary switches, CPU ticks."""
    found: Sample = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
            for tid in os.listdir(f"/proc/{pid}/task"):
                base = f"/proc/{pid}/task/{tid}"
                status = open(f"{base}/status").read()
                name = open(f"{base}/comm").read().strip()
                voluntary = int(status.split("\nvoluntary_ctxt_switches:")[1].split()[0])
                involuntary = int(status.split("nonvoluntary_ctxt_switches:")[1].split()[0])
                fields = open(f"{base}/stat").read().rsplit(")", 1)[1].split()
                found[f"{pid}/{tid}"] = (
                    command[:60],
                    name,
                    voluntary,
                    involuntary,
                    int(fields[11]) + int(fields[12]),
                )
        except (OSError, IndexError):  # a thread that ended meanwhile
            continue
    return found


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    before = sample()
    time.sleep(seconds)
    after = sample()
    totals: dict[tuple[str, str], list[float]] = {}
    for key, (command, name, voluntary, involuntary, ticks) in after.items():
        if key not in before:
            continue
        _, _, v0, i0, t0 = before[key]
        row = totals.setdefault((name if name == "identity-hash" else "", command), [0, 0, 0.0])
        row[0] += voluntary - v0
        row[1] += involuntary - i0
        row[2] += (ticks - t0) * tick_ms
    print(f"over {seconds:g} s: CPU ms, voluntary, involuntary switches, process")
    for (name, command), (voluntary, involuntary, cpu) in sorted(
        totals.items(), key=lambda item: -item[1][2]
    ):
        if voluntary + involuntary + cpu:
            print(f"{cpu:8.0f} {voluntary:8.0f} {involuntary:8.0f}  {name or command}")


if __name__ == "__main__":
    main()
