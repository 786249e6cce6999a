#!/usr/bin/env bash
# The whole system under load on the same two cores (issue 9's measure): the reset-code
# branch with the production hash, a Celery worker, the relay, beat and the SMTP sink
# running; per-process CPU per change from /proc, and commit-to-e-mail delay.
#   bash bench/system.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_SYSTEM=1 BENCH_SCENARIOS="${BENCH_SCENARIOS:-code}" exec bash bench/run.sh "$@"
