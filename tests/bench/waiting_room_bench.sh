#!/usr/bin/env bash
# tests/bench/waiting_room_bench.sh: benchmarks reservation-svc's waiting room
# in one command. Starts a throwaway PostgreSQL, Redis, lock-svc, balance-svc
# and reservation-svc on free loopback ports in a temp dir, and runs
# waiting-room-bench: --watchers users (10 000) wait in line for a room of
# --limit (100), each watching its ticket over WatchWaitingRoom, while the
# admitted ones leave, first one at a time (freed slot to next admission,
# p50/p99), then all at once (admissions per second with the room always
# full); every update a watcher hears is timed against the leave that caused
# it. Prints entries and admissions per second next to the same lock-svc
# scripts run on Redis directly, the delays, memory per 1 000 watchers and at
# the peak, and checks (holders sampled in Redis never above the limit,
# nobody overtaken or sent back, everyone admitted, no failed call). Then
# stops everything.
#
#   tests/bench/waiting_room_bench.sh [flags]   e.g. --watchers 2000 --limit 50
#   tests/bench/waiting_room_bench.sh --help    this text and waiting-room-bench's flags
#
# --out-dir DIR (BENCH_OUT_DIR; default BUILD_DIR/bench-out/waiting-room-<time>)
# gets waiting-room-bench.txt (what it printed). Other flags go to
# waiting-room-bench (this script sets --rsv-addr, --admin-token, --redis-url
# and the --*-pid ones). BUILD_DIR (default build/release) must hold
# lock-svc/lock-svc, balance-svc/balance-svc, reservation-svc/reservation-svc
# and tests/bench/waiting-room-bench; when one is missing, they are built
# there (Release). The services run with LOG_LEVEL=warn and otherwise take
# their settings from the environment; ADMISSION_KEY_FILE is a key made for
# the run. PG_BIN, REDIS_SERVER, BUF name the binaries.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_NAME=waiting_room_bench.sh
# shellcheck source=bench_lib.sh source-path=SCRIPTDIR
. "$ROOT/tests/bench/bench_lib.sh"

lock_svc=$BUILD_DIR/lock-svc/lock-svc
balance_svc=$BUILD_DIR/balance-svc/balance-svc
reservation_svc=$BUILD_DIR/reservation-svc/reservation-svc
bench=$BUILD_DIR/tests/bench/waiting-room-bench

out_dir=${BENCH_OUT_DIR:-}
args=("$@")
bench_args=()
for ((i = 0; i < ${#args[@]}; i++)); do
    arg=${args[i]}
    next=${args[i + 1]:-}
    case $arg in
    --help | -h)
        bench_usage "${BASH_SOURCE[0]}" 27
        if [[ -x $bench ]]; then
            echo
            "$bench" --help
        fi
        exit 0
        ;;
    --out-dir)
        out_dir=$next
        i=$((i + 1))
        continue
        ;;
    --out-dir=*)
        out_dir=${arg#*=}
        continue
        ;;
    --rsv-addr* | --admin-token* | --redis-url* | --*-pid*)
        echo "$BENCH_NAME: ${arg%%=*} is set by this script" >&2
        exit 2
        ;;
    esac
    bench_args+=("$arg")
done
out_dir=${out_dir:-$BUILD_DIR/bench-out/waiting-room-$(date +%Y%m%d-%H%M%S)}

reservation_port=""
start_reservation_svc() {
    bench_free_port reservation_port || die "no free port for reservation-svc"
    (umask 077 && head -c 32 /dev/urandom >"$tmp/admission-key")
    DATABASE_URL="postgresql://postgres@127.0.0.1:$pg_port/reservation" LOG_LEVEL=warn \
        LOCK_SVC_ADDR="127.0.0.1:$lock_port" BALANCE_SVC_ADDR="127.0.0.1:$balance_port" \
        LISTEN_ADDR="127.0.0.1:$reservation_port" ADMIN_TOKEN="$admin_token" \
        ADMISSION_KEY_FILE="$tmp/admission-key" \
        ${RESERVATION_WRAP:-} "$reservation_svc" 2>"$tmp/reservation-svc.log" &
    reservation_pid=$!
    bench_wait_serving reservation-svc "$reservation_pid" "$reservation_port" 300
}

bench_require_redis
bench_find_pg_bin psql
bench_build_if_missing "lock-svc balance-svc reservation-svc waiting-room-bench" "$lock_svc" \
    "$balance_svc" "$reservation_svc" "$bench"
mkdir -p "$out_dir" || die "cannot make the output directory $out_dir"
out_dir=$(cd "$out_dir" && pwd)
bench_print_machine 10 "$("$PG_BIN/postgres" --version)"
bench_warn_stale "lock-svc balance-svc reservation-svc waiting-room-bench" \
    "$reservation_svc" "libsvc lock-svc reservation-svc" "$bench" "libsvc lock-svc tests/bench"
bench_make_tmp waiting-room-bench
admin_token=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
bench_start_pg 200 60 reservation balance
bench_start_redis
[[ -x $BUF ]] || say "buf not found at $BUF: waiting for the ports only"
bench_start_lock_svc "$lock_svc" 300
bench_start_balance_svc "$balance_svc" 300
start_reservation_svc
echo "started:  postgres pid $pg_pid port $pg_port, redis pid $redis_pid port $redis_port," \
    "lock-svc pid $lock_pid port $lock_port, balance-svc pid $balance_pid port $balance_port," \
    "reservation-svc pid $reservation_pid port $reservation_port"
echo
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ADMIN_TOKEN="$admin_token" "$bench" --rsv-addr "127.0.0.1:$reservation_port" \
    --redis-url "redis://127.0.0.1:$redis_port" --rsv-pid "$reservation_pid" \
    --lock-pid "$lock_pid" --redis-pid "$redis_pid" "${bench_args[@]}" |
    tee "$out_dir/waiting-room-bench.txt"
echo
echo "output:   $out_dir/waiting-room-bench.txt (what waiting-room-bench printed)"
# A service that died mid-run shows up above as UNAVAILABLE errors; say why.
bench_check_alive reservation lock
