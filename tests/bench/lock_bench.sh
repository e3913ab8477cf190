#!/usr/bin/env bash
# tests/bench/lock_bench.sh: benchmarks lock-svc in one command. Starts a
# throwaway redis-server (no persistence) and lock-svc on free loopback ports
# in a temp dir, runs lock-bench against them, and stops both on exit.
#
#   tests/bench/lock_bench.sh [lock-bench flags]     e.g. --seconds 5 --concurrency 1,16,64
#   tests/bench/lock_bench.sh --help                 this text and lock-bench's flags
#
# BUILD_DIR (default build/release) must hold lock-svc/lock-svc and
# tests/bench/lock-bench; when one is missing, it is built there (Release).
# lock-svc runs with LOG_LEVEL=warn and otherwise takes its settings from
# the environment (REDIS_POOL, WORKERS, ...). REDIS_SERVER and BUF name the
# redis-server and buf binaries.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_NAME=lock_bench.sh
# shellcheck source=bench_lib.sh source-path=SCRIPTDIR
. "$ROOT/tests/bench/bench_lib.sh"

lock_svc=$BUILD_DIR/lock-svc/lock-svc
lock_bench=$BUILD_DIR/tests/bench/lock-bench

for arg in "$@"; do
    if [[ $arg == --help || $arg == -h ]]; then
        bench_usage "${BASH_SOURCE[0]}" 13
        if [[ -x $lock_bench ]]; then
            echo
            "$lock_bench" --help
        fi
        exit 0
    fi
done

bench_require_redis
bench_build_if_missing "lock-svc lock-bench" "$lock_svc" "$lock_bench"
bench_print_machine 9
bench_warn_stale "lock-svc lock-bench" "$lock_svc" "libsvc lock-svc" \
    "$lock_bench" "libsvc lock-svc tests/bench"
bench_make_tmp lock-bench
bench_start_redis
[[ -x $BUF ]] || say "buf not found at $BUF: waiting for the port only"
bench_start_lock_svc "$lock_svc" 100
echo "started: redis-server pid $redis_pid on port $redis_port," \
    "lock-svc pid $lock_pid on port $lock_port (REDIS_POOL=${REDIS_POOL:-default}," \
    "WORKERS=${WORKERS:-default})"
"$lock_bench" --lock-addr "127.0.0.1:$lock_port" --redis-url "redis://127.0.0.1:$redis_port/0" \
    --lock-pid "$lock_pid" --redis-pid "$redis_pid" "$@"
# A lock-svc that died mid-run shows up above as UNAVAILABLE errors; say why.
if ! kill -0 "$lock_pid" 2>/dev/null; then
    status=0
    wait "$lock_pid" || status=$?
    lock_pid=""
    die "lock-svc exited during the run (status $status$( ((status > 128)) &&
        echo ", signal $((status - 128))"))"
fi
