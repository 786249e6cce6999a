#!/usr/bin/env bash
# Load benchmark: how close does change-password get to the machine's raw argon2id rate?
#
#   bash bench/run.sh                   # 10 s per wrk run, production hash
#   BENCH_DURATION=30s bash bench/run.sh
#   BENCH_HASH=trivial bash bench/run.sh  # the same with argon2id m=8 KiB, t=1
#   BENCH_SCENARIOS="admin overload" bash bench/run.sh
#
# One run: a scratch database, `identity serve --workers 2` on a free port with the default
# argon2id parameters (m=19456, t=2, p=1), an organization, a token and users made through
# the CLI and HTTP, then
#   (i)   the raw argon2id hash rate of this machine (bench/hashrate.py, 1 and N threads),
#         with the same parameters as the server,
#   (ii)  wrk on POST /v2/users/{id}/password, admin set (1 hash per request),
#   (iii) wrk on the current-password branch (verify + hash: 2 hashes per request),
#   (iv)  wrk on the reset-code branch (`code`: 1 hash; users of a pool of their own, one
#         code issued to each beforehand and each used once),
#   (v)   wrk on GET /healthz and GET /v2/users/{id} (no hash),
#   (vi)  SetPassword (admin set) over Connect JSON (wrk) and over gRPC (h2load, h2c),
#   (vii) `healthz-saturated`: the admin-set load with light /healthz and /readyz probes
#         beside it (their latency while every hash thread is busy),
#   (viii) `overload`: admin sets offered at 3 x the admin scenario's rate for 20 s by an
#         open-loop generator (bench/overload.py): what is admitted, how fast, and whether
#         the rest is refused with the contract's 503,
# and tables of requests/s, p50/p99, req/s x hashes ÷ raw hash rate, and the overload and
# probe figures. Every result is one JSON line; the lines of a run are kept in
# bench/results/<date>-<hash>-<server>.jsonl, whose path is printed at the end.
# BENCH_SCENARIOS picks the runs (default: all of admin current code get healthz connect
# grpc healthz-saturated overload); BENCH_SERVER the server (`identity serve --server`:
# uvicorn, uvicorn-h2, hypercorn); BENCH_HASH=trivial sets argon2id m=8 KiB, t=1 for
# everything (the server, the users' hashes and the raw rate), to show the cost of the rest
# of the request path.
# Other knobs: BENCH_CODE_USERS (the code pool, sized below when unset), BENCH_OVERLOAD_S
# (20), BENCH_OVERLOAD_FACTOR (3), BENCH_OVERLOAD_RATE (the sustainable rate, instead of the
# admin scenario's), BENCH_OVERLOAD_CONNECTIONS (500), BENCH_PROBE_CONNECTIONS (2) and BENCH_PROBE_DELAY_MS (10) for the
# probes, BENCH_RESULTS_DIR (bench/results), BENCH_KEEP_WORK=1 (keep the scratch directory:
# server log, wrk outputs).
# BENCH_SOCKETS=unix: Postgres over its Unix socket and a Redis of the run's own on a Unix
# socket instead of loopback TCP. BENCH_DELAY_MS: each wrk connection waits this long between
# requests (a given rate, e.g. the trivial hash at the production hash's rate).
# Every closed-loop scenario records CPU per request from /proc (``cpu_ms_per_req``: the API
# with its hashing threads apart as ``api_hash``, Postgres, Redis, and in the whole system
# the worker, relay, beat and sink).
# BENCH_SYSTEM=1 runs the whole system on the same cores: a Celery worker, the relay
# (`identity relay`), beat and the SMTP sink, and the scenario `code` (the reset-code
# branch, on its pool of users with one code each, each used once); it reports per-process
# CPU per change read from /proc over the load and until every e-mail is out, and the delay
# from a change's commit to its e-mail's (p50/p99). `bash bench/system.sh` is that run.
# Everything it starts is stopped and the scratch database dropped on exit.
# Needs local Postgres and Redis (scripts/ensure-services), wrk and h2load (installed if
# missing).
# Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${BENCH_DURATION:-10s}
THREADS=${BENCH_THREADS:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
USERS=${BENCH_USERS:-1000}
WORKERS=${BENCH_SERVER_WORKERS:-0} # 0: identity serve's default (one process per four cores)
SERVER=${BENCH_SERVER:-uvicorn-h2}
SCENARIOS=" ${BENCH_SCENARIOS:-admin current code get healthz connect grpc healthz-saturated overload} "
# The probes of healthz-saturated: a light load (each connection waits between requests), so
# that they measure the answer's latency, not take CPU from the load they sit beside.
PROBE_CONNECTIONS=${BENCH_PROBE_CONNECTIONS:-2}
PROBE_DELAY_MS=${BENCH_PROBE_DELAY_MS:-10}
OVERLOAD_S=${BENCH_OVERLOAD_S:-20}
OVERLOAD_FACTOR=${BENCH_OVERLOAD_FACTOR:-3}
OVERLOAD_CONNECTIONS=${BENCH_OVERLOAD_CONNECTIONS:-500}
# BENCH_HASH: production (the default settings) or trivial. A hash set by hand through
# IDENTITY_ARGON2_* (bench/servers.sh) is "custom"; the parameters are in the table either way.
case "${BENCH_HASH:-}" in
trivial)
    export IDENTITY_ARGON2_MEMORY_KIB=8 IDENTITY_ARGON2_TIME_COST=1
    HASH=trivial
    ;;
production | "")
    HASH=production
    if [ -n "${IDENTITY_ARGON2_MEMORY_KIB:-}${IDENTITY_ARGON2_TIME_COST:-}${IDENTITY_ARGON2_PARALLELISM:-}" ]; then
        [ -z "${BENCH_HASH:-}" ] || {
            echo "bench: BENCH_HASH=production with IDENTITY_ARGON2_* set" >&2
            exit 2
        }
        HASH=custom
    fi
    ;;
*)
    echo "bench: BENCH_HASH is production or trivial, not ${BENCH_HASH}" >&2
    exit 2
    ;;
esac
# The code scenario needs one unused code per request of the whole run: wrk would otherwise
# wrap around its users and send used codes (errors, not a measure; wrk.lua stops a thread
# whose codes are all used instead, and the row says so). Unless BENCH_CODE_USERS is set,
# the pool covers 1.5 x the admin scenario's rate over the duration when that ran first (a
# code change costs what an admin set does, plus a Redis script), and at least
# max(BENCH_USERS, 3000) with the production hash; without an admin rate, 25,000 with the
# trivial hash (the server may do ~2,000 changes/s). Users and codes cost the server no
# hash but take time to make: ~400 users and ~300 codes a second on this machine.
CODE_USERS=${BENCH_CODE_USERS:-}
RESULTS_DIR=${BENCH_RESULTS_DIR:-$ROOT/bench/results}
STAMP=$(date +%Y-%m-%d-%H%M%S)
BROKER_DB=${BENCH_BROKER_DB:-13} # a Redis database for the run's Celery messages, flushed
PASSWORD_A='Bench-Passw0rd-A!'
PASSWORD_B='Bench-Passw0rd-B!'

say() { echo "bench: $*" >&2; }
has() { case "$SCENARIOS" in *" $1 "*) return 0 ;; esac; return 1; }
seconds() { # a wrk duration (10, 10s, 2m, 1h) in seconds
    case "$1" in
    *h) echo $((${1%h} * 3600)) ;;
    *m) echo $((${1%m} * 60)) ;;
    *s) echo "${1%s}" ;;
    *) echo "$1" ;;
    esac
}

bash scripts/test --setup-only
if ! command -v wrk >/dev/null || ! command -v h2load >/dev/null; then
    say "installing wrk and h2load"
    [ "$(id -u)" -eq 0 ] || {
        say "wrk or h2load is missing: apt-get install -y wrk nghttp2-client"
        exit 1
    }
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nghttp2-client >/dev/null
fi

PY=$ROOT/.venv/bin/python
IDENTITY=$ROOT/.venv/bin/identity
# The number identity serve starts for --workers 0, so that the tables say it.
[ "$WORKERS" != 0 ] || WORKERS=$("$PY" -c 'from api.serve import default_workers; print(default_workers())')
RUN=bench_$(date +%s)_$$
WORK=$(mktemp -d "/tmp/identity-bench.XXXXXX")
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
API=http://127.0.0.1:$PORT
# uvicorn (httptools) serves native gRPC from a Hypercorn child on its own port; the h2c
# servers serve it on the main port.
if [ "$SERVER" = uvicorn ]; then GRPC_PORT=$(free_port); else GRPC_PORT=0; fi
GRPC=http://127.0.0.1:$([ "$GRPC_PORT" = 0 ] && echo "$PORT" || echo "$GRPC_PORT")

# BENCH_SOCKETS=unix: Postgres over its Unix socket and a Redis of the run's own on a Unix
# socket (what a host running the service beside its stores would configure), instead of
# loopback TCP.
SOCKETS=${BENCH_SOCKETS:-tcp}
REDIS_SERVER_PID=""
if [ "$SOCKETS" = unix ]; then
    PG_SOCKET_DIR=${BENCH_PG_SOCKET_DIR:-/var/run/postgresql}
    export IDENTITY_DATABASE_URL="postgresql://root@/$RUN?host=$PG_SOCKET_DIR"
    redis-server --port 0 --unixsocket "$WORK/redis.sock" --unixsocketperm 700 --save "" \
        --appendonly no --dir "$WORK" --daemonize no >"$WORK/redis.log" 2>&1 &
    REDIS_SERVER_PID=$!
    for _ in $(seq 50); do [ -S "$WORK/redis.sock" ] && break; sleep 0.1; done
    export IDENTITY_REDIS_URL="unix://$WORK/redis.sock?db=0"
    export IDENTITY_BROKER_URL="redis+socket://$WORK/redis.sock?virtual_host=$BROKER_DB"
    BROKER_REDIS_URL="unix://$WORK/redis.sock?db=$BROKER_DB"
else
    export IDENTITY_DATABASE_URL=postgresql://root@127.0.0.1:5432/$RUN
    export IDENTITY_BROKER_URL=redis://127.0.0.1:6379/$BROKER_DB
    BROKER_REDIS_URL=$IDENTITY_BROKER_URL
fi
export IDENTITY_REDIS_PREFIX="$RUN:"
export IDENTITY_LOG_LEVEL=WARNING
# Production mode, with a key of the run's own (every process refuses the public default).
export IDENTITY_ENV=production
export IDENTITY_SECRET_KEY=${IDENTITY_SECRET_KEY:-$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')}
# The benchmark measures hashing, not the per-user and per-address verification limits.
export IDENTITY_RATE_VERIFICATIONS_PER_USER_PER_MINUTE=1000000
export IDENTITY_RATE_FAILED_VERIFICATIONS_PER_IP_PER_MINUTE=1000000
export PYTHONPATH=$ROOT

SERVER_PID=""
SYSTEM_PIDS=()
cleanup() {
    set +e
    for pid in "${SYSTEM_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    if [ -n "$SERVER_PID" ]; then
        kill -TERM "$SERVER_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$SERVER_PID" 2>/dev/null
    fi
    psql -X -q -h 127.0.0.1 -d postgres -c "DROP DATABASE IF EXISTS \"$RUN\" WITH (FORCE)" >/dev/null 2>&1 ||
        "$PY" -c "import asyncio, asyncpg
async def main():
    c = await asyncpg.connect('postgresql://root@127.0.0.1:5432/postgres')
    await c.execute('DROP DATABASE IF EXISTS \"$RUN\" WITH (FORCE)')
    await c.close()
asyncio.run(main())"
    "$PY" - <<PYEOF
import redis
r = redis.Redis.from_url("${IDENTITY_REDIS_URL:-redis://127.0.0.1:6379/0}")
keys = list(r.scan_iter(match="$RUN:*", count=1000))
for i in range(0, len(keys), 500):
    r.delete(*keys[i:i + 500])
redis.Redis.from_url("$BROKER_REDIS_URL").flushdb()
PYEOF
    [ -z "$REDIS_SERVER_PID" ] || kill -TERM "$REDIS_SERVER_PID" 2>/dev/null
    case "${SINK_DIR:-}" in /dev/shm/identity-bench-mail.*) rm -rf "$SINK_DIR" ;; esac
    if [ "${BENCH_KEEP_WORK:-0}" = 1 ]; then
        echo "bench: kept $WORK (server log, wrk outputs)" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), load $(cut -d' ' -f1-3 /proc/loadavg)"
say "scratch database $RUN, API on $API ($SERVER, $WORKERS workers), gRPC on $GRPC, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $HASH hash"
"$IDENTITY" migrate >/dev/null
"$IDENTITY" serve --host 127.0.0.1 --port "$PORT" --workers "$WORKERS" --server "$SERVER" \
    --grpc-port "$GRPC_PORT" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
    curl -sf "$API/readyz" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || {
        cat "$WORK/server.log" >&2
        exit 1
    }
    sleep 0.2
done
curl -sf "$API/readyz" >/dev/null

ORG=$("$IDENTITY" org create "Bench $RUN" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["organizationId"])')
TOKEN=$("$IDENTITY" token create --org "$ORG" --role ORG_OWNER | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["token"])')
say "creating 2 x $USERS users over HTTP"
BENCH_TOKEN=$TOKEN "$PY" bench/setup_users.py --api "$API" --org "$ORG" --count "$USERS" \
    --password "$PASSWORD_A" --prefix admin --out "$WORK/users-admin.txt"
BENCH_TOKEN=$TOKEN "$PY" bench/setup_users.py --api "$API" --org "$ORG" --count "$USERS" \
    --password "$PASSWORD_A" --prefix current --out "$WORK/users-current.txt"

RESULTS=$WORK/results.jsonl
# First line: what this run was, so that a kept results file says it on its own.
BENCH_META_HASH=$HASH BENCH_META_SERVER=$SERVER BENCH_META_WORKERS=$WORKERS \
    BENCH_META_WRK="-t$THREADS -c$CONNECTIONS -d$DURATION" BENCH_META_USERS=$USERS \
    BENCH_META_CPU="$(lscpu | sed -n 's/^Model name: *//p')" \
    BENCH_META_COMMIT="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
    BENCH_META_SCENARIOS="$SCENARIOS" "$PY" - >"$RESULTS" <<'PYEOF'
import datetime, json, os
e = os.environ
print(json.dumps({
    "name": "run", "kind": "run",
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "hash": e["BENCH_META_HASH"], "server": e["BENCH_META_SERVER"],
    "workers": int(e["BENCH_META_WORKERS"]), "cores": os.cpu_count(), "cpu": e["BENCH_META_CPU"],
    "load": os.getloadavg()[0], "wrk": e["BENCH_META_WRK"], "users": int(e["BENCH_META_USERS"]),
    "system": e.get("BENCH_SYSTEM", "0") == "1", "scenarios": e["BENCH_META_SCENARIOS"].split(),
    "commit": e["BENCH_META_COMMIT"],
}))
PYEOF
rps_of() { # scenario [ok]: its req/s in this run ("" if it did not run); with ok, 2xx only
    "$PY" - "$RESULTS" "$@" <<'PYEOF'
import json, sys
for r in map(json.loads, open(sys.argv[1], encoding="utf-8")):
    if r.get("scenario") == sys.argv[2]:
        ok = 1 - r["errors"].get("status", 0) / r["requests"] if len(sys.argv) > 3 else 1
        print(round(r["rps"] * ok, 1))
        break
PYEOF
}
code_pool() { # users of their own, one reset code each: $WORK/users-codes.txt
    local n=$CODE_USERS admin_rps need
    if [ -z "$n" ]; then
        admin_rps=$(rps_of admin)
        if [ "$HASH" = trivial ]; then
            n=$([ -n "$admin_rps" ] && echo "$USERS" || echo 25000)
        else
            n=$((USERS > 3000 ? USERS : 3000))
        fi
        if [ -n "$admin_rps" ]; then
            need=$("$PY" -c "import math; print(math.ceil($admin_rps * $(seconds "$DURATION") * 1.5))")
            [ "$need" -le "$n" ] || n=$need
        fi
    fi
    say "creating $n users for the reset-code branch and issuing one code to each"
    local started=$SECONDS
    BENCH_TOKEN=$TOKEN "$PY" bench/setup_users.py --api "$API" --org "$ORG" --count "$n" \
        --password "$PASSWORD_A" --prefix code --out "$WORK/users-code-ids.txt"
    say "  users made in $((SECONDS - started)) s"
    started=$SECONDS
    BENCH_TOKEN=$TOKEN "$PY" bench/setup_codes.py --api "$API" --users "$WORK/users-code-ids.txt" \
        --out "$WORK/users-codes.txt"
    say "  codes issued in $((SECONDS - started)) s"
}
if [ "${BENCH_SYSTEM:-0}" = 1 ]; then
    SINK_PORT=$(free_port)
    export IDENTITY_SMTP_URL=smtp://127.0.0.1:$SINK_PORT
    say "whole system: worker, beat and the SMTP sink on $IDENTITY_SMTP_URL"
    # The sink stands in for a mail server: it stores each message in a file, on tmpfs where
    # there is one (a file on this disk costs its journal ~0.15 ms a message; the service's
    # own cost is not the sink's disk).
    SINK_DIR=$WORK/mail
    if [ -d /dev/shm ] && [ -w /dev/shm ]; then SINK_DIR=$(mktemp -d /dev/shm/identity-bench-mail.XXXXXX); fi
    "$PY" -m workers.smtp_sink --port "$SINK_PORT" --dir "$SINK_DIR" >"$WORK/sink.log" 2>&1 &
    SYSTEM_PIDS+=($!)
    "$ROOT/.venv/bin/celery" -A workers worker --pool solo --concurrency 1 -Q identity \
        --loglevel WARNING --without-mingle --without-gossip >"$WORK/worker.log" 2>&1 &
    SYSTEM_PIDS+=($!)
    "$ROOT/.venv/bin/celery" -A workers beat --loglevel WARNING \
        --schedule "$WORK/celerybeat-schedule" >"$WORK/beat.log" 2>&1 &
    SYSTEM_PIDS+=($!)
    "$IDENTITY" relay >"$WORK/relay.log" 2>&1 &
    SYSTEM_PIDS+=($!)
    sleep 5
    ! has code || code_pool
fi
say "(i) raw argon2id hash rate"
"$PY" bench/hashrate.py --threads "$(nproc)" --seconds 5 >>"$RESULTS"

wrk_run() { # mode label users-file threads connections duration delay-ms output
    BENCH_MODE=$1 BENCH_LABEL=$2 BENCH_TOKEN=$TOKEN BENCH_USERS_FILE=$3 BENCH_THREADS=$4 \
        BENCH_DELAY_MS=$7 BENCH_PASSWORD_A=$PASSWORD_A BENCH_PASSWORD_B=$PASSWORD_B \
        wrk -t"$4" -c"$5" -d"$6" --timeout 10s -s bench/wrk.lua "$API/" >"$8"
}
bench() { # label mode hashes users-file
    local label=$1 mode=$2 hashes=$3 users=${4:-}
    say "wrk: $label"
    "$PY" bench/proc_cpu.py snapshot "${CPU_GROUPS[@]}" >"$WORK/cpu-$mode-before.json"
    wrk_run "$mode" "$label" "$users" "$THREADS" "$CONNECTIONS" "$DURATION" "${BENCH_DELAY_MS:-0}" "$WORK/wrk-$mode.txt"
    "$PY" bench/proc_cpu.py snapshot "${CPU_GROUPS[@]}" >"$WORK/cpu-$mode-after.json"
    local requests
    requests=$(grep '^BENCH ' "$WORK/wrk-$mode.txt" | sed 's/^BENCH //' | "$PY" -c "import json,sys; print(json.load(sys.stdin)['requests'])")
    # Per-process CPU per request over the wrk run (API alone: the worker groups read ~0).
    "$PY" bench/proc_cpu.py per "$WORK/cpu-$mode-before.json" "$WORK/cpu-$mode-after.json" "$requests" >"$WORK/cpu-$mode.json"
    grep '^BENCH ' "$WORK/wrk-$mode.txt" | sed 's/^BENCH //' |
        "$PY" -c "import json,sys; r=json.load(sys.stdin); r['hashes']=$hashes; r['scenario']='$mode'; r['cpu_ms_per_req']=json.load(open('$WORK/cpu-$mode.json')); print(json.dumps(r))" >>"$RESULTS"
    if [ "$mode" = code ] && grep -q '"codes_exhausted_threads":[1-9]' "$WORK/wrk-$mode.txt"; then
        say "the code pool ran out before the end: raise BENCH_CODE_USERS (req/s is a lower bound)"
    fi
}
run() { # scenario label hashes users-file
    if has "$1"; then bench "$2" "$1" "$3" "${4:-}"; fi
}
CPU_GROUPS=(
    "api=identity serve|api.main|multiprocessing.spawn"
    "worker=celery -A workers worker"
    "beat=celery -A workers beat"
    "relay=identity relay"
    "postgres=^postgres"
    "redis=redis-server"
    "smtp_sink=workers.smtp_sink"
)
if [ "${BENCH_SYSTEM:-0}" = 1 ]; then
    groups=("${CPU_GROUPS[@]}")
    "$PY" bench/proc_cpu.py snapshot "${groups[@]}" >"$WORK/cpu-before.json"
    SINCE=$("$PY" -c 'import datetime; print(datetime.datetime.now(datetime.timezone.utc).isoformat())')
    run code "POST password (reset code, whole system)" 1 "$WORK/users-codes.txt"
    say "waiting for every e-mail of the run"
    "$PY" - <<PYEOF
import asyncio, asyncpg, time
async def main():
    conn = await asyncpg.connect("$IDENTITY_DATABASE_URL")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        left = await conn.fetchval("SELECT count(*) FROM outbox WHERE processed_at IS NULL AND dead_at IS NULL")
        if left == 0:
            break
        await asyncio.sleep(0.5)
    await conn.close()
asyncio.run(main())
PYEOF
    "$PY" bench/proc_cpu.py snapshot "${groups[@]}" >"$WORK/cpu-after.json"
    CHANGES=$("$PY" - <<PYEOF
import asyncio, asyncpg
async def main():
    conn = await asyncpg.connect("$IDENTITY_DATABASE_URL")
    print(await conn.fetchval("SELECT count(*) FROM events WHERE event_type = 'user.human.password.changed' AND created_at >= '$SINCE'"))
    await conn.close()
asyncio.run(main())
PYEOF
)
    "$PY" bench/proc_cpu.py diff "$WORK/cpu-before.json" "$WORK/cpu-after.json" "$CHANGES" >"$WORK/cpu.md"
    "$PY" - >"$WORK/delay.txt" <<PYEOF
import asyncio, asyncpg
async def main():
    conn = await asyncpg.connect("$IDENTITY_DATABASE_URL")
    rows = await conn.fetch("""
        SELECT extract(epoch FROM n.created_at - c.created_at) * 1000 AS ms
        FROM events c JOIN events n
          ON n.event_type = 'user.human.password.change.sent'
         AND n.payload->>'userId' = c.aggregate_id
         AND (n.payload->>'changeSequence')::bigint = c.sequence
        WHERE c.event_type = 'user.human.password.changed' AND c.created_at >= '$SINCE'
        ORDER BY 1""")
    ms = [r["ms"] for r in rows]
    def pct(p): return ms[min(len(ms) - 1, int(len(ms) * p))] if ms else float("nan")
    print(f"commit to e-mail: {len(ms)} e-mails, p50 {pct(0.5):.0f} ms, p99 {pct(0.99):.0f} ms, max {ms[-1] if ms else float('nan'):.0f} ms")
    await conn.close()
asyncio.run(main())
PYEOF
    # The host's speed drifts (runs a few minutes apart differ by up to 10 %): the raw rate
    # once more, right after the load, and the ratios use the mean of both.
    say "(i) raw argon2id hash rate again, after the load"
    "$PY" bench/hashrate.py --threads "$(nproc)" --seconds 5 --name "argon2id raw (after)" >>"$RESULTS"
fi
run admin "POST password (admin set)" 1 "$WORK/users-admin.txt"
run current "POST password (currentPassword)" 2 "$WORK/users-current.txt"
if has code && [ "${BENCH_SYSTEM:-0}" != 1 ]; then
    # API alone. Codes are issued now, after the admin scenario (whose rate sizes the pool),
    # to users no other scenario changes: a change voids the user's code.
    code_pool
    bench "POST password (reset code)" code 1 "$WORK/users-codes.txt"
fi
run get "GET /v2/users/{id}" 0 "$WORK/users-admin.txt"
run healthz "GET /healthz" 0
run connect "Connect JSON SetPassword (admin set)" 1 "$WORK/users-admin.txt"
if has grpc; then
    # h2load sends one framed request again and again (one user: admin set needs no
    # current password); it sees HTTP statuses only, so the events counted below show the
    # changes really happened.
    say "h2load: gRPC SetPassword (admin set)"
    "$PY" bench/grpc_request.py --user "$(head -n1 "$WORK/users-admin.txt")" \
        --password "$PASSWORD_B" >"$WORK/grpc-body.bin"
    h2load -c "$CONNECTIONS" -m 1 -t "$THREADS" -D "${DURATION%s}" \
        -H 'content-type: application/grpc' -H 'te: trailers' -H "authorization: Bearer $TOKEN" \
        --log-file="$WORK/h2load.log" -d "$WORK/grpc-body.bin" \
        "$GRPC/zitadel.user.v2.UserService/SetPassword" >"$WORK/h2load.txt"
    "$PY" bench/h2load_result.py "gRPC SetPassword (admin set)" "$WORK/h2load.log" \
        <"$WORK/h2load.txt" >>"$RESULTS"
fi

if has healthz-saturated; then
    # The probes start a second after the load (every hash thread busy by then) and stop a
    # second before it, so that all they see is the saturated server.
    probe_s=$(($(seconds "$DURATION") - 2))
    [ "$probe_s" -ge 1 ] || probe_s=1
    say "wrk: admin set (-c$CONNECTIONS) with /healthz and /readyz probes beside it" \
        "(-c$PROBE_CONNECTIONS each, ${PROBE_DELAY_MS} ms between requests, ${probe_s}s)"
    wrk_run admin "POST password (admin set, probed)" "$WORK/users-admin.txt" "$THREADS" \
        "$CONNECTIONS" "$DURATION" 0 "$WORK/sat-load.txt" &
    load_pid=$!
    sleep 1
    wrk_run healthz "GET /healthz (probe)" "" 1 "$PROBE_CONNECTIONS" "${probe_s}s" \
        "$PROBE_DELAY_MS" "$WORK/sat-healthz.txt" &
    healthz_pid=$!
    wrk_run readyz "GET /readyz (probe)" "" 1 "$PROBE_CONNECTIONS" "${probe_s}s" \
        "$PROBE_DELAY_MS" "$WORK/sat-readyz.txt" &
    readyz_pid=$!
    wait "$load_pid"
    wait "$healthz_pid"
    wait "$readyz_pid"
    "$PY" - "$WORK/sat-load.txt" "$WORK/sat-healthz.txt" "$WORK/sat-readyz.txt" >>"$RESULTS" <<PYEOF
import json, sys
def bench(path):
    for line in open(path, encoding="utf-8"):
        if line.startswith("BENCH "):
            return json.loads(line[len("BENCH "):])
    raise SystemExit(f"bench: no result in {path}")
load, healthz, readyz = (bench(p) for p in sys.argv[1:4])
print(json.dumps({
    "name": "healthz-saturated", "kind": "healthz-saturated", "scenario": "healthz-saturated",
    "load": load, "load_connections": $CONNECTIONS,
    "probe_connections": $PROBE_CONNECTIONS, "probe_delay_ms": $PROBE_DELAY_MS,
    "healthz": healthz, "readyz": readyz,
    "checks": {"healthz_p99_lt_10ms": healthz["p99_ms"] < 10},
}))
PYEOF
fi
if has overload; then
    # The sustainable rate: BENCH_OVERLOAD_RATE, else this run's admin scenario, else measured
    # now (which adds the admin row to the table); its 2xx only, since a quick 503 is no
    # sustained change.
    rate=${BENCH_OVERLOAD_RATE:-}
    from=BENCH_OVERLOAD_RATE
    if [ -z "$rate" ]; then
        from="admin scenario"
        [ -n "$(rps_of admin)" ] || bench "POST password (admin set)" admin 1 "$WORK/users-admin.txt"
        rate=$(rps_of admin ok)
    fi
    say "overload: admin set offered at $OVERLOAD_FACTOR x $rate req/s for ${OVERLOAD_S}s (open loop)"
    BENCH_TOKEN=$TOKEN "$PY" bench/overload.py --api "$API" --users "$WORK/users-admin.txt" \
        --sustainable "$rate" --sustainable-from "$from" --factor "$OVERLOAD_FACTOR" \
        --seconds "$OVERLOAD_S" --connections "$OVERLOAD_CONNECTIONS" \
        --password-a "$PASSWORD_A" --password-b "$PASSWORD_B" >>"$RESULTS"
fi

# A wrong request would hide in the rates: check that the changes really happened.
"$PY" - "$WORK/users-current.txt" <<PYEOF
import asyncio, sys, asyncpg
async def main():
    conn = await asyncpg.connect("$IDENTITY_DATABASE_URL")
    n = await conn.fetchval(
        "SELECT count(*) FROM events WHERE event_type = 'user.human.password.changed'")
    await conn.close()
    print(f"bench: {n} password.changed events committed", file=sys.stderr)
asyncio.run(main())
PYEOF
if grep -qiE "error|traceback" "$WORK/server.log"; then
    say "server log has errors:"
    grep -iE -m5 "error|traceback" "$WORK/server.log" >&2
fi

# Kept beside the table (the scratch directory goes at exit): one JSON line per scenario.
mkdir -p "$RESULTS_DIR"
SAVED=$RESULTS_DIR/$STAMP-$HASH-$SERVER.jsonl
[ "${BENCH_SYSTEM:-0}" != 1 ] || SAVED=${SAVED%.jsonl}-system.jsonl
cp "$RESULTS" "$SAVED"

echo
echo "bench/run.sh on $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p')), wrk -t$THREADS -c$CONNECTIONS -d$DURATION, identity serve --workers $WORKERS --server $SERVER, $HASH hash"
"$PY" bench/summarize.py "$RESULTS"
if [ "${BENCH_SYSTEM:-0}" = 1 ]; then
    echo
    echo "per-process CPU from /proc, from the start of the load until every e-mail was sent:"
    cat "$WORK/cpu.md"
    echo
    cat "$WORK/delay.txt"
fi
echo
echo "results (one JSON line per scenario): ${SAVED#"$ROOT"/}"
