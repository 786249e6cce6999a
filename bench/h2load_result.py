"""Turn h2load's output and its per-request log into bench/run.sh's JSON line.

Usage: ``h2load_result.py NAME LOG < h2load-output``. The log (``h2load --log-file``) has
one line per request: start time, HTTP status, latency in microseconds.
"""

from __future__ import annotations

import json
import re
import sys


def main(name: str, log_path: str) -> None:
    output = sys.stdin.read()
    finished = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", output)
    if finished is None:
        raise SystemExit(f"h2load output not understood:\n{output}")
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    latencies, failed = [], 0
    with open(log_path, encoding="utf-8") as log:
        for line in log:
            parts = line.split()
            if len(parts) < 3:
                continue
            latencies.append(int(parts[2]) / 1000)
            failed += parts[1] != "200"
    latencies.sort()

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] if latencies else 0.0

    print(
        json.dumps(
            {
                "name": name,
                "requests": len(latencies),
                "duration_s": seconds,
                "rps": round(float(finished.group(3)), 1),
                "p50_ms": percentile(0.50),
                "p90_ms": percentile(0.90),
                "p99_ms": percentile(0.99),
                "max_ms": latencies[-1] if latencies else 0.0,
                "errors": {"status": failed},
                "hashes": 1,
                "scenario": "grpc",
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
