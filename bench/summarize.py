"""Print the benchmark's tables from the JSON lines that bench/run.sh collected.

The first table has one row per closed-loop scenario (wrk, h2load): hashes per request,
req/s (and the 2xx rate when some failed), p50/p99, errors and ``req/s x hashes / raw hash
rate`` on the 2xx, the share of the machine's raw argon2id rate that the requests turn into
hashes (ideal 1.00 for every branch: the current-password branch counts its two hashes).
The second, when there are such records, has the overload run (open loop) and the probes of
/healthz and /readyz while the hash pool is saturated, with their must-show checks.

Usage: ``summarize.py RESULTS.jsonl``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

SECOND_TABLE = ("overload", "healthz-saturated")


def markdown(table: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for n, row in enumerate(table):
        print("| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def closed_loop(rows: list[dict[str, Any]], hash_rate: float) -> None:
    table = [
        (
            "scenario",
            "hashes/req",
            "req/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "req/s x hashes / raw hash rate",
        )
    ]
    for r in rows:
        hashes = r.get("hashes", 0)
        errors = str(sum(r["errors"].values()))
        if r.get("statuses"):  # which statuses the errors were
            errors += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items())) + ")"
        # An error answer (a quick 503, a 400) hashed nothing: the ratio counts the 2xx only.
        failed = r["errors"].get("status", 0)
        ok_rps = r["rps"] * (1 - failed / r["requests"]) if r["requests"] else 0.0
        ratio = f"{ok_rps * hashes / hash_rate:.2f} (ideal 1.00)" if hashes else "-"
        rps = f"{r['rps']:.1f}" + (f" (2xx: {ok_rps:.1f})" if failed else "")
        if r.get("codes_exhausted_threads"):
            # A wrk thread ran out of codes and stopped: the rate is over the whole duration.
            rps = f">= {rps} (codes ran out)"
            ratio = ">= " + ratio
        table.append(
            (
                r["name"],
                str(hashes),
                rps,
                f"{r['p50_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
                errors,
                ratio,
            )
        )
    markdown(table)


def second(rows: list[dict[str, Any]]) -> None:
    table = [("scenario", "load", "answered", "p50/p99/max ms", "errors", "must-show")]
    for r in rows:
        if r["kind"] == "overload":
            s503 = r["s503"]
            if not s503["count"]:
                contract = ""
            elif s503["all_ok"]:
                contract = " (all with Retry-After and SERVER-0verl)"
            else:
                bad = s503["count"] - s503["ok"]
                contract = f" ({bad} without Retry-After or the contract's body)"
            waits = r.get("connection_waits", 0)
            waits_note = f", {waits} waited for one of {r['connections']} conns" if waits else ""
            others = {**r["other_statuses"], **r["connection_errors"]}
            errors = ", ".join(f"{k}: {v}" for k, v in sorted(others.items())) or "0"
            checks = r["checks"]
            table.append(
                (
                    r["name"],
                    f"offered {r['offered_rps']:.1f} req/s for {r['duration_s']:g} s "
                    f"({r['factor']:g} x {r['sustainable_rps']:.1f}, {r['sustainable_from']}); "
                    f"{r['sent']} sent, at {r['sent_rps']:.1f}/s{waits_note}",
                    f"200: {r['admitted']} ({r['admitted_rps']:.1f}/s = "
                    f"{r['admitted_ratio']:.2f} of sustainable); "
                    f"503: {s503['count']}{contract}",
                    f"{r['p50_ms']:.0f}/{r['p99_ms']:.0f}/{r['max_ms']:.0f} (200s, from send)",
                    errors,
                    f"max wait {r['max_ms']:.0f} ms <= 2000: {yes(checks['max_wait_le_2s'])}; "
                    f"admitted/sustainable >= 0.90: {yes(checks['admitted_ratio_ge_0_90'])}",
                )
            )
        else:  # healthz-saturated
            load = r["load"]
            load_cell = (
                f"admin set -c{r['load_connections']}: {load['rps']:.1f} req/s, "
                f"p99 {load['p99_ms']:.0f} ms, {sum(load['errors'].values())} errors"
            ) + "".join(f", {k}: {v}" for k, v in sorted(load.get("statuses", {}).items()))
            for probe in ("healthz", "readyz"):
                p = r.get(probe)
                if p is None:
                    continue
                must = (
                    f"p99 < 10 ms: {yes(r['checks']['healthz_p99_lt_10ms'])}"
                    if probe == "healthz"
                    else "-"
                )
                table.append(
                    (
                        f"/{probe} while the hash pool is saturated",
                        load_cell,
                        f"{p['requests']} ({p['rps']:.0f}/s, -c{r['probe_connections']})",
                        f"{p['p50_ms']:.1f}/{p['p99_ms']:.1f}/{p['max_ms']:.1f}",
                        str(sum(p["errors"].values())),
                        must,
                    )
                )
    markdown(table)


def cpu_table(rows: list[dict[str, Any]]) -> None:
    """Per-process CPU per request over each closed-loop run (wrk's own CPU not counted)."""
    measured = [r for r in rows if r.get("cpu_ms_per_req")]
    if not measured:
        return
    groups = [g for g in measured[0]["cpu_ms_per_req"] if g != "all"]
    shown = [g for g in groups if any(r["cpu_ms_per_req"].get(g, 0) >= 0.05 for r in measured)]
    print()
    print("CPU per request from /proc over each run, ms:")
    table = [("scenario", *shown, "all")]
    for r in measured:
        cpu = r["cpu_ms_per_req"]
        table.append((r["name"], *(f"{cpu.get(g, 0):.2f}" for g in shown), f"{cpu['all']:.2f}"))
    markdown(table)


RAW_AFTER = "argon2id raw (after)"


def main(path: str) -> None:
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    meta: dict[str, Any] = next((r for r in rows if r["name"] == "run"), {})
    raw = next(r for r in rows if r["name"] == "argon2id raw")
    hash_rate = raw["hashes_per_s"]
    print(
        f"hash: {meta.get('hash', raw.get('hash', '?'))}, "
        f"argon2id {raw['params']}: {raw['ms_per_hash_1_thread']} ms per hash on 1 thread; "
        f"raw rate {raw['hashes_per_s_1_thread']}/s on 1 thread, "
        f"{hash_rate}/s on {raw['threads']} threads"
    )
    # The whole-system run measures the raw rate before and after its load.
    after = next((r for r in rows if r["name"] == RAW_AFTER), None)
    if after is not None:
        hash_rate = round((hash_rate + after["hashes_per_s"]) / 2, 1)
        print(
            f"raw rate after the load: {after['hashes_per_s']}/s on {after['threads']} threads; "
            f"the ratios below use the mean, {hash_rate}/s"
        )
    table_rows = [
        r
        for r in rows
        if r["name"] not in ("run", "argon2id raw", RAW_AFTER) and r.get("kind") not in SECOND_TABLE
    ]
    if table_rows:
        print()
        closed_loop(table_rows, hash_rate)
        cpu_table(table_rows)
    others = [r for r in rows if r.get("kind") in SECOND_TABLE]
    if others:
        print()
        second(others)


if __name__ == "__main__":
    main(sys.argv[1])
