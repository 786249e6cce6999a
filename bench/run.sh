#!/usr/bin/env bash
# Load benchmark: how close does change-password get to the machine's raw argon2id rate?
#
#   bash bench/run.sh                   # 10 s per wrk run
#   BENCH_DURATION=30s bash bench/run.sh
#
# One run: a scratch database, `identity serve --workers 2` on a free port with the default
# argon2id parameters (m=19456, t=2, p=1), an organization, a token and users made through
# the CLI and HTTP, then
#   (i)   the raw argon2id hash rate of this machine (bench/hashrate.py, 1 and N threads),
#   (ii)  wrk on POST /v2/users/{id}/password, admin set (1 hash per request),
#   (iii) wrk on the current-password branch (verify + hash: 2 hashes per request),
#   (iv)  wrk on GET /healthz and GET /v2/users/{id} (no hash),
#   (v)   SetPassword (admin set) over Connect JSON (wrk) and over gRPC (h2load, h2c),
# and a table of requests/s, p50/p99 and change-password req/s ÷ raw hash rate.
# BENCH_SCENARIOS picks the runs (default: all of admin current get healthz connect grpc);
# BENCH_SERVER the server (`identity serve --server`: uvicorn, uvicorn-h2, hypercorn).
# BENCH_SYSTEM=1 runs the whole system on the same cores: a Celery worker, the relay
# (`identity relay`), beat and the SMTP sink, and the scenario `code` (the reset-code branch: one code issued
# per user beforehand, each used once); it reports per-process CPU per change read from
# /proc over the load and until every e-mail is out, and the delay from a change's commit to
# its e-mail's (p50/p99). `bash bench/system.sh` is that run.
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
WORKERS=${BENCH_SERVER_WORKERS:-2}
SERVER=${BENCH_SERVER:-uvicorn-h2}
SCENARIOS=" ${BENCH_SCENARIOS:-admin current get healthz connect grpc} "
BROKER_DB=${BENCH_BROKER_DB:-13} # a Redis database for the run's Celery messages, flushed
PASSWORD_A='Bench-Passw0rd-A!'
PASSWORD_B='Bench-Passw0rd-B!'

say() { echo "bench: $*" >&2; }

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
RUN=bench_$(date +%s)_$$
WORK=$(mktemp -d "/tmp/identity-bench.XXXXXX")
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
API=http://127.0.0.1:$PORT
# uvicorn (httptools) serves native gRPC from a Hypercorn child on its own port; the h2c
# servers serve it on the main port.
if [ "$SERVER" = uvicorn ]; then GRPC_PORT=$(free_port); else GRPC_PORT=0; fi
GRPC=http://127.0.0.1:$([ "$GRPC_PORT" = 0 ] && echo "$PORT" || echo "$GRPC_PORT")

export IDENTITY_DATABASE_URL=postgresql://root@127.0.0.1:5432/$RUN
export IDENTITY_REDIS_PREFIX="$RUN:"
export IDENTITY_BROKER_URL=redis://127.0.0.1:6379/$BROKER_DB
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
r = redis.Redis.from_url("redis://127.0.0.1:6379/0")
keys = list(r.scan_iter(match="$RUN:*", count=1000))
for i in range(0, len(keys), 500):
    r.delete(*keys[i:i + 500])
redis.Redis.from_url("$IDENTITY_BROKER_URL").flushdb()
PYEOF
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), load $(cut -d' ' -f1-3 /proc/loadavg)"
say "scratch database $RUN, API on $API ($SERVER, $WORKERS workers), gRPC on $GRPC, wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
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
if [ "${BENCH_SYSTEM:-0}" = 1 ]; then
    SINK_PORT=$(free_port)
    export IDENTITY_SMTP_URL=smtp://127.0.0.1:$SINK_PORT
    say "whole system: worker, beat and the SMTP sink on $IDENTITY_SMTP_URL"
    "$PY" -m workers.smtp_sink --port "$SINK_PORT" --dir "$WORK/mail" >"$WORK/sink.log" 2>&1 &
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
    say "issuing one reset code per user of the admin pool"
    BENCH_TOKEN=$TOKEN "$PY" bench/setup_codes.py --api "$API" --users "$WORK/users-admin.txt" \
        --out "$WORK/users-codes.txt"
fi
say "(i) raw argon2id hash rate"
"$PY" bench/hashrate.py --threads "$(nproc)" --seconds 5 >>"$RESULTS"

bench() { # label mode hashes users-file [path]
    local label=$1 mode=$2 hashes=$3 users=${4:-} path=${5:-/}
    say "wrk: $label"
    BENCH_MODE=$mode BENCH_LABEL=$label BENCH_TOKEN=$TOKEN BENCH_USERS_FILE=$users \
        BENCH_THREADS=$THREADS BENCH_PASSWORD_A=$PASSWORD_A BENCH_PASSWORD_B=$PASSWORD_B \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 10s -s bench/wrk.lua \
        "$API$path" >"$WORK/wrk-$mode.txt"
    grep '^BENCH ' "$WORK/wrk-$mode.txt" | sed 's/^BENCH //' |
        "$PY" -c "import json,sys; r=json.load(sys.stdin); r['hashes']=$hashes; print(json.dumps(r))" >>"$RESULTS"
}
run() { # scenario label hashes users-file
    case "$SCENARIOS" in *" $1 "*) bench "$2" "$1" "$3" "${4:-}" ;; esac
}
if [ "${BENCH_SYSTEM:-0}" = 1 ]; then
    groups=(
        "api=identity serve|api.main|multiprocessing.spawn"
        "worker=celery -A workers worker"
        "beat=celery -A workers beat"
        "relay=identity relay"
        "postgres=^postgres"
        "redis=redis-server"
        "smtp_sink=workers.smtp_sink"
    )
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
fi
run admin "POST password (admin set)" 1 "$WORK/users-admin.txt"
run current "POST password (currentPassword)" 2 "$WORK/users-current.txt"
run get "GET /v2/users/{id}" 0 "$WORK/users-admin.txt"
run healthz "GET /healthz" 0
run connect "Connect JSON SetPassword (admin set)" 1 "$WORK/users-admin.txt"
if [ "${SCENARIOS#* grpc }" != "$SCENARIOS" ]; then
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

echo
echo "bench/run.sh on $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p')), wrk -t$THREADS -c$CONNECTIONS -d$DURATION, identity serve --workers $WORKERS --server $SERVER"
"$PY" bench/summarize.py "$RESULTS"
if [ "${BENCH_SYSTEM:-0}" = 1 ]; then
    echo
    echo "per-process CPU from /proc, from the start of the load until every e-mail was sent:"
    cat "$WORK/cpu.md"
    echo
    cat "$WORK/delay.txt"
fi
