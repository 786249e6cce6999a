#!/usr/bin/env bash
# Which ASGI server for `identity serve`? REST change-password throughput and p99 on the
# cheap-hash path (where the server's own cost shows most), for each server, in interleaved
# rounds so that drift of the machine hits all of them alike.
#
#   bash bench/servers.sh                 # 3 rounds x (uvicorn, uvicorn-h2, hypercorn)
#   BENCH_ROUNDS=5 bash bench/servers.sh
#
# Each round is bench/run.sh with BENCH_SCENARIOS="admin healthz" (admin set: one hash;
# /healthz: the server and framework alone) and argon2id m=64 t=1 (a trivial hash).
# The rounds' JSON lines stay in the scratch directory, not in bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${BENCH_ROUNDS:-3}
SERVERS=${BENCH_SERVERS:-uvicorn uvicorn-h2 hypercorn}
out=$(mktemp -d /tmp/identity-servers.XXXXXX)
for round in $(seq "$ROUNDS"); do
    for server in $SERVERS; do
        echo "bench/servers.sh: round $round, $server" >&2
        IDENTITY_ARGON2_MEMORY_KIB=64 IDENTITY_ARGON2_TIME_COST=1 BENCH_SERVER=$server \
            BENCH_SCENARIOS="admin healthz" BENCH_USERS=${BENCH_USERS:-500} \
            BENCH_RESULTS_DIR="$out/results" \
            bash bench/run.sh 2>/dev/null | grep '^| POST\|^| GET' |
            sed "s/^/$server /" >>"$out/rows.txt"
    done
done
.venv/bin/python - "$out/rows.txt" "$ROUNDS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    server, rest = line.split(" ", 1)
    cells = [c.strip() for c in rest.strip().strip("|").split("|")]
    # req/s may read "40.0 (2xx: 25.8)" when some requests failed: the first number.
    rows.setdefault((server, cells[0]), []).append((float(cells[2].split()[0]), float(cells[4])))
print(f"bench/servers.sh: {sys.argv[2]} rounds, median (min-max) of each")
print("| server | scenario | req/s | p99 ms |")
print("|---|---|---|---|")
for (server, scenario), values in rows.items():
    rps = [v[0] for v in values]
    p99 = [v[1] for v in values]
    print(f"| {server} | {scenario} | {statistics.median(rps):.1f} ({min(rps):.0f}-{max(rps):.0f}) "
          f"| {statistics.median(p99):.1f} ({min(p99):.0f}-{max(p99):.0f}) |")
PY
