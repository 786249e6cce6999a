"""Print the benchmark's table from the JSON lines that bench/run.sh collected."""

from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    raw = next(r for r in rows if r["name"] == "argon2id raw")
    hash_rate = raw["hashes_per_s"]
    print(
        f"argon2id {raw['params']}: {raw['ms_per_hash_1_thread']} ms per hash on 1 thread; "
        f"raw rate {raw['hashes_per_s_1_thread']}/s on 1 thread, "
        f"{hash_rate}/s on {raw['threads']} threads"
    )
    print()
    header = (
        "scenario",
        "hashes/req",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "req/s / raw hash rate",
    )
    table = [header]
    for r in rows:
        if r["name"] == "argon2id raw":
            continue
        hashes = r.get("hashes", 0)
        errors = sum(r["errors"].values())
        ratio = f"{r['rps'] / hash_rate:.2f}" if hashes else "-"
        if hashes:
            ratio += f" (ideal {1 / hashes:.2f})"
        table.append(
            (
                r["name"],
                str(hashes),
                f"{r['rps']:.1f}",
                f"{r['p50_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
                str(errors),
                ratio,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for n, row in enumerate(table):
        print("| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


if __name__ == "__main__":
    main(sys.argv[1])
