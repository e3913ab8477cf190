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
BUILD_DIR=${BUILD_DIR:-$ROOT/build/release}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
BUF=${BUF:-$ROOT/.tools/node_modules/.bin/buf}
lock_svc=$BUILD_DIR/lock-svc/lock-svc
lock_bench=$BUILD_DIR/tests/bench/lock-bench

usage() {
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

for arg in "$@"; do
    if [[ $arg == --help || $arg == -h ]]; then
        usage
        if [[ -x $lock_bench ]]; then
            echo
            "$lock_bench" --help
        fi
        exit 0
    fi
done

say() { printf '%s\n' "$*" >&2; }
die() { say "lock_bench.sh: $*"; exit 1; }

# A free port below the ephemeral range (nothing answers a connect there), not in $1.
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 12000))
        [[ $p == "${1:-}" ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

build_if_missing() {
    if [[ -x $lock_svc && -x $lock_bench ]]; then
        return 0
    fi
    say "building lock-svc and lock-bench (Release) in $BUILD_DIR"
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$BUILD_DIR" -j "$(nproc)" --target lock-svc lock-bench >&2
    [[ -x $lock_svc && -x $lock_bench ]] || die "build did not produce $lock_svc and $lock_bench"
}

print_machine() {
    local model build_type commit
    model=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
    build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null || true)
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
    if ! git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null; then
        commit="$commit + uncommitted changes"
    fi
    echo "machine: $(nproc) CPUs, ${model:-unknown CPU}, Linux $(uname -r)," \
        "load average $(cut -d' ' -f1-3 /proc/loadavg) (other work skews the numbers)"
    echo "redis:   $("$REDIS_SERVER" --version | sed 's/ sha=.*//')"
    echo "build:   ${build_type:-unknown} in $BUILD_DIR (source tree: commit $commit)"
    if [[ ${build_type:-} != Release ]]; then
        echo "WARNING: not a Release build; numbers are not representative"
    fi
    if [[ -n $(find "$ROOT/libsvc" "$ROOT/lock-svc" -name '*.[ch]' -newer "$lock_svc" -print \
        -quit) || -n $(find "$ROOT/libsvc" "$ROOT/lock-svc" "$ROOT/tests/bench" -name '*.[ch]' \
        -newer "$lock_bench" -print -quit) ]]; then
        echo "WARNING: sources changed since the binaries were built; to rebuild:" \
            "cmake --build $BUILD_DIR --target lock-svc lock-bench"
    fi
}

tmp=""
redis_pid=""
lock_pid=""

# Stops what we started, by pid, and shows lock-svc's warnings if it wrote any.
cleanup() {
    local rc=$?
    set +e
    trap '' PIPE # a reader that went away (| head) must not stop the clean-up
    if [[ -n $lock_pid ]]; then
        kill -TERM "$lock_pid" 2>/dev/null || true
        wait "$lock_pid" 2>/dev/null || true
    fi
    if [[ -n $redis_pid ]]; then
        kill -TERM "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
    if [[ -n $tmp && -s $tmp/lock-svc.log ]]; then
        say "--- lock-svc log (last 20 lines) ---"
        tail -n 20 "$tmp/lock-svc.log" >&2
    fi
    if ((rc != 0)) && [[ -n $tmp && -s $tmp/redis.log ]]; then
        say "--- redis log (last 20 lines) ---"
        tail -n 20 "$tmp/redis.log" >&2
    fi
    [[ -n $tmp ]] && rm -rf "$tmp"
    exit "$rc"
}

start_redis() {
    redis_port=$(free_port) || die "no free port for redis"
    "$REDIS_SERVER" --bind 127.0.0.1 --port "$redis_port" --dir "$tmp" --save '' \
        --appendonly no --daemonize no --logfile "$tmp/redis.log" &
    redis_pid=$!
    for _ in $(seq 100); do
        if [[ $(redis-cli -p "$redis_port" ping 2>/dev/null) == PONG ]]; then
            return 0
        fi
        kill -0 "$redis_pid" 2>/dev/null || die "redis-server exited"
        sleep 0.1
    done
    die "redis-server did not answer on port $redis_port"
}

lock_svc_serving() {
    if [[ -x $BUF ]]; then
        "$BUF" curl --protocol grpc --http2-prior-knowledge -d '{}' \
            "http://127.0.0.1:$lock_port/grpc.health.v1.Health/Check" 2>/dev/null |
            grep -q SERVING
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$lock_port") 2>/dev/null
    fi
}

start_lock_svc() {
    lock_port=$(free_port "$redis_port") || die "no free port for lock-svc"
    REDIS_URL="redis://127.0.0.1:$redis_port/0" LOG_LEVEL=warn \
        LISTEN_ADDR="127.0.0.1:$lock_port" "$lock_svc" 2>"$tmp/lock-svc.log" &
    lock_pid=$!
    [[ -x $BUF ]] || say "buf not found at $BUF: waiting for the port only"
    for _ in $(seq 100); do
        if lock_svc_serving; then
            return 0
        fi
        kill -0 "$lock_pid" 2>/dev/null || die "lock-svc exited"
        sleep 0.1
    done
    die "lock-svc did not become SERVING on port $lock_port"
}

command -v "$REDIS_SERVER" >/dev/null || die "redis-server not found (run deploy/local/deps.sh)"
command -v redis-cli >/dev/null || die "redis-cli not found (run deploy/local/deps.sh)"
build_if_missing
print_machine
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lock-bench.XXXXXX")
trap cleanup EXIT
trap 'exit 130' INT TERM
start_redis
start_lock_svc
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
