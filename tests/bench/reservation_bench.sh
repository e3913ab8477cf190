#!/usr/bin/env bash
# tests/bench/reservation_bench.sh: benchmarks reservation-svc's HoldSeats in
# one command. Starts a throwaway PostgreSQL (max_connections sized for the
# storm's twin), Redis, lock-svc, balance-svc and reservation-svc on free
# loopback ports in a temp dir, runs reservation-bench (a storm of --users
# holding one seat at once, --storms times; then distinct seats at
# --concurrency for --seconds), each next to the same SQL run directly
# against the same database in the same run, prints one table per scenario,
# the ratios and targets, checks that no seat is in two live holds, and stops
# everything.
#
#   tests/bench/reservation_bench.sh [flags]   e.g. --seconds 5 --users 1000 --storms 5
#   tests/bench/reservation_bench.sh --help    this text and reservation-bench's flags
#
# Flags go to reservation-bench (this script sets --rsv-addr, --database-url,
# --admin-token and the --*-pid ones). BUILD_DIR (default build/release) must
# hold lock-svc/lock-svc, balance-svc/balance-svc,
# reservation-svc/reservation-svc and tests/bench/reservation-bench; when one
# is missing, they are built there (Release). PostgreSQL runs with fsync=off
# and full_page_writes=off (commits stay synchronous); the services run with
# LOG_LEVEL=warn and otherwise take their settings from the environment
# (DB_POOL, WORKERS, MAX_WORKERS, LOCK_WAIT_MS, ...). PG_BIN, REDIS_SERVER,
# BUF name the binaries.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build/release}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
BUF=${BUF:-$ROOT/.tools/node_modules/.bin/buf}
lock_svc=$BUILD_DIR/lock-svc/lock-svc
balance_svc=$BUILD_DIR/balance-svc/balance-svc
reservation_svc=$BUILD_DIR/reservation-svc/reservation-svc
reservation_bench=$BUILD_DIR/tests/bench/reservation-bench

usage() {
    sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

users=1000
sql_conns=0
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    arg=${args[i]}
    next=${args[i + 1]:-}
    case $arg in
    --help | -h)
        usage
        if [[ -x $reservation_bench ]]; then
            echo
            "$reservation_bench" --help
        fi
        exit 0
        ;;
    --users) users=$next ;;
    --users=*) users=${arg#*=} ;;
    --sql-storm-conns) sql_conns=$next ;;
    --sql-storm-conns=*) sql_conns=${arg#*=} ;;
    --rsv-addr* | --database-url* | --admin-token* | --*-pid*)
        echo "reservation_bench.sh: ${arg%%=*} is set by this script" >&2
        exit 2
        ;;
    esac
done

say() { printf '%s\n' "$*" >&2; }
die() {
    say "reservation_bench.sh: $*"
    exit 1
}

[[ $users =~ ^[1-9][0-9]*$ ]] || die "--users must be a positive number: $users"
[[ $sql_conns =~ ^[0-9]+$ ]] || die "--sql-storm-conns must be a number: $sql_conns"
# The storm's twin holds one connection per user (unless --sql-storm-conns says fewer), the
# distinct-seat twin up to 1024 more after those closed, the services their pools.
storm_conns=$users
if ((sql_conns > 0 && sql_conns < users)); then
    storm_conns=$sql_conns
fi
max_connections=$((storm_conns > 1024 ? storm_conns + 100 : 1124))

# A free port below the ephemeral range (nothing answers a connect there), not in taken.
taken=" "
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 12000))
        [[ $taken == *" $p "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            taken="$taken$p "
            echo "$p"
            return 0
        fi
    done
    return 1
}

find_pg_bin() {
    if [[ -z ${PG_BIN:-} ]]; then
        local found
        found=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' \
            2>/dev/null | sort -V | tail -n 1)
        [[ -n $found ]] || die "no PostgreSQL under /usr/lib/postgresql/*/bin (package postgresql)"
        PG_BIN=$(dirname "$found")
    fi
    [[ -x $PG_BIN/postgres && -x $PG_BIN/psql ]] || die "PG_BIN=$PG_BIN lacks postgres or psql"
}

binaries_present() {
    [[ -x $lock_svc && -x $balance_svc && -x $reservation_svc && -x $reservation_bench ]]
}

build_if_missing() {
    if binaries_present; then
        return 0
    fi
    say "building lock-svc, balance-svc, reservation-svc and reservation-bench (Release) in $BUILD_DIR"
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$BUILD_DIR" -j "$(nproc)" \
        --target lock-svc balance-svc reservation-svc reservation-bench >&2
    binaries_present || die "build did not produce the binaries in $BUILD_DIR"
}

print_machine() {
    local model build_type commit
    model=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
    build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null || true)
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
    if ! git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null; then
        commit="$commit + uncommitted changes"
    fi
    echo "machine:  $(nproc) CPUs, ${model:-unknown CPU}, Linux $(uname -r)," \
        "load average $(cut -d' ' -f1-3 /proc/loadavg) (other work skews the numbers)"
    echo "postgres: $("$PG_BIN/postgres" --version)"
    echo "redis:    $("$REDIS_SERVER" --version | sed 's/ sha=.*//')"
    echo "build:    ${build_type:-unknown} in $BUILD_DIR (source tree: commit $commit)"
    if [[ ${build_type:-} != Release ]]; then
        echo "WARNING: not a Release build; numbers are not representative"
    fi
    if [[ -n $(find "$ROOT/libsvc" "$ROOT/lock-svc" "$ROOT/reservation-svc" -name '*.[ch]' \
        -newer "$reservation_svc" -print -quit) || -n $(find "$ROOT/libsvc" "$ROOT/tests/bench" \
        -name '*.[ch]' -newer "$reservation_bench" -print -quit) ]]; then
        echo "WARNING: sources changed since the binaries were built; to rebuild:" \
            "cmake --build $BUILD_DIR --target lock-svc balance-svc reservation-svc reservation-bench"
    fi
}

# ---------------------------------------------------------------- processes

tmp=""
pg_data=""
pg_pid=""
redis_pid=""
lock_pid=""
balance_pid=""
reservation_pid=""
PG_USER=""

# PostgreSQL refuses to run as root: then it runs as the system user postgres.
as_pg() {
    if [[ -n $PG_USER ]]; then
        (cd / && runuser -u "$PG_USER" -- "$@")
    else
        "$@"
    fi
}

stop_pid() {
    local pid=$1
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

show_log() {
    local name=$1 file=$2
    if [[ -s $file ]]; then
        say "--- $name log (last 20 lines) ---"
        tail -n 20 "$file" >&2
    fi
}

# Stops what we started, by pid, and shows the services' warnings if they wrote any.
cleanup() {
    local rc=$?
    set +e
    trap '' PIPE # a reader that went away (| head) must not stop the clean-up
    stop_pid "$reservation_pid"
    stop_pid "$balance_pid"
    stop_pid "$lock_pid"
    stop_pid "$redis_pid"
    if [[ -n $pg_pid ]]; then
        as_pg "$PG_BIN/pg_ctl" stop -D "$pg_data" -m fast -w >/dev/null 2>&1 ||
            kill -TERM "$pg_pid" 2>/dev/null
    fi
    if [[ -n $tmp ]]; then
        show_log reservation-svc "$tmp/reservation-svc.log"
        show_log balance-svc "$tmp/balance-svc.log"
        show_log lock-svc "$tmp/lock-svc.log"
        if ((rc != 0)); then
            show_log postgres "$tmp/pg/postgres.log"
            show_log redis "$tmp/redis.log"
        fi
        rm -rf "$tmp"
    fi
    exit "$rc"
}

# Runs SQL on database reservation; prints the unaligned result.
psql_reservation() {
    "$PG_BIN/psql" -X -q -t -A -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres \
        -d reservation -c "$1"
}

start_pg() {
    local conf
    pg_port=$(free_port) || die "no free port for postgres"
    if [[ $(id -u) -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || die "running as root and there is no user postgres"
        PG_USER=postgres
    fi
    mkdir "$tmp/pg"
    chmod 711 "$tmp" # the postgres user must reach its folder
    [[ -z $PG_USER ]] || chown "$PG_USER:" "$tmp/pg"
    pg_data=$tmp/pg/data
    as_pg "$PG_BIN/initdb" -D "$pg_data" -U postgres --auth=trust --encoding=UTF8 --no-locale \
        --no-sync >"$tmp/initdb.log" 2>&1 || {
        cat "$tmp/initdb.log" >&2
        die "initdb failed"
    }
    conf=$pg_data/postgresql.conf
    cat >>"$conf" <<EOF
# reservation_bench.sh: a throwaway cluster; fast test settings, commits stay synchronous.
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$tmp/pg'
max_connections = $max_connections
fsync = off
full_page_writes = off
EOF
    as_pg "$PG_BIN/pg_ctl" start -D "$pg_data" -l "$tmp/pg/postgres.log" -w -t 60 >/dev/null ||
        die "postgres did not start"
    pg_pid=$(head -n 1 "$pg_data/postmaster.pid")
    "$PG_BIN/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres reservation
    "$PG_BIN/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres balance
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

serving() {
    local port=$1
    if [[ -x $BUF ]]; then
        "$BUF" curl --protocol grpc --http2-prior-knowledge -d '{}' \
            "http://127.0.0.1:$port/grpc.health.v1.Health/Check" 2>/dev/null | grep -q SERVING
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
    fi
}

# wait_serving NAME PID PORT
wait_serving() {
    for _ in $(seq 300); do
        if serving "$3"; then
            return 0
        fi
        kill -0 "$2" 2>/dev/null || die "$1 exited"
        sleep 0.1
    done
    die "$1 did not become SERVING on port $3"
}

start_services() {
    [[ -x $BUF ]] || say "buf not found at $BUF: waiting for the ports only"
    lock_port=$(free_port) || die "no free port for lock-svc"
    REDIS_URL="redis://127.0.0.1:$redis_port/0" LOG_LEVEL=warn LISTEN_ADDR="127.0.0.1:$lock_port" \
        "$lock_svc" 2>"$tmp/lock-svc.log" &
    lock_pid=$!
    wait_serving lock-svc "$lock_pid" "$lock_port"
    balance_port=$(free_port) || die "no free port for balance-svc"
    DATABASE_URL="postgresql://postgres@127.0.0.1:$pg_port/balance" LOG_LEVEL=warn \
        LOCK_SVC_ADDR="127.0.0.1:$lock_port" LISTEN_ADDR="127.0.0.1:$balance_port" \
        "$balance_svc" 2>"$tmp/balance-svc.log" &
    balance_pid=$!
    wait_serving balance-svc "$balance_pid" "$balance_port"
    reservation_port=$(free_port) || die "no free port for reservation-svc"
    DATABASE_URL="postgresql://postgres@127.0.0.1:$pg_port/reservation" LOG_LEVEL=warn \
        LOCK_SVC_ADDR="127.0.0.1:$lock_port" BALANCE_SVC_ADDR="127.0.0.1:$balance_port" \
        LISTEN_ADDR="127.0.0.1:$reservation_port" ADMIN_TOKEN="$admin_token" \
        "$reservation_svc" 2>"$tmp/reservation-svc.log" &
    reservation_pid=$!
    wait_serving reservation-svc "$reservation_pid" "$reservation_port"
}

# ---------------------------------------------------------------- after the run

# No seat in two live holds (also what the partial unique index guarantees), and every seat
# marked held belongs to a live hold that lists it.
db_check() {
    local out
    out=$(psql_reservation "
        SELECT (SELECT count(*) FROM (SELECT rs.schedule_id, rs.number FROM reservation_seats rs
                  JOIN reservations r ON r.id = rs.reservation_id WHERE r.status IN (1, 2)
                  GROUP BY 1, 2 HAVING count(*) > 1) x),
               (SELECT count(*) FROM seats s WHERE s.status = 2 AND NOT EXISTS
                  (SELECT 1 FROM reservation_seats rs JOIN reservations r ON r.id = rs.reservation_id
                    WHERE rs.reservation_id = s.hold_reservation_id AND rs.number = s.number
                      AND rs.schedule_id = s.schedule_id AND r.status = 1)),
               (SELECT count(*) FROM reservations WHERE status = 1),
               (SELECT count(*) FROM seats WHERE status = 2)")
    IFS='|' read -r n_double n_orphan n_live n_held <<<"$out"
    echo
    echo "database check: $n_live live holds, $n_held seats held; seats in two live holds:" \
        "$n_double; held seats without their live hold: $n_orphan"
    if ((n_double == 0 && n_orphan == 0)); then
        echo "database check: OK"
    else
        echo "database check: FAILED (the numbers above do not come from correct work)"
    fi
}

# ---------------------------------------------------------------- main

command -v "$REDIS_SERVER" >/dev/null || die "redis-server not found (run deploy/local/deps.sh)"
command -v redis-cli >/dev/null || die "redis-cli not found (run deploy/local/deps.sh)"
find_pg_bin
build_if_missing
print_machine
tmp=$(mktemp -d "${TMPDIR:-/tmp}/reservation-bench.XXXXXX")
trap cleanup EXIT
trap 'exit 130' INT TERM
admin_token=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
start_pg
start_redis
start_services
echo "started:  postgres pid $pg_pid port $pg_port (max_connections=$max_connections," \
    "fsync=off, full_page_writes=off, synchronous_commit=on), redis pid $redis_pid port" \
    "$redis_port, lock-svc pid $lock_pid port $lock_port, balance-svc pid $balance_pid port" \
    "$balance_port, reservation-svc pid $reservation_pid port $reservation_port" \
    "(DB_POOL=${DB_POOL:-default 16}, WORKERS=${WORKERS:-default 16}," \
    "MAX_WORKERS=${MAX_WORKERS:-default 256}, LOCK_WAIT_MS=${LOCK_WAIT_MS:-default 2000})"
echo "direct SQL: reservation-bench runs hold_tx's statements from reservation_store.c (BEGIN;" \
    "SELECT ... FOR UPDATE; the seat checked in the client, ROLLBACK when taken; expire old" \
    "holds; INSERT reservation; INSERT reservation_seats + UPDATE seats; COMMIT) with libpq," \
    "parameters, one statement at a time, on the same database. Storm twin: one connection" \
    "per user, opened beforehand (pgbench cannot start N clients once each at the same moment)," \
    "every BEGIN sent before any answer is read; also over a pool of DB_POOL's size," \
    "as reservation-svc itself can only use that many. reservation-svc additionally runs a" \
    "lock-free precheck (2 statements) and takes/gives back a lock-svc token per hold."
echo
echo "cpu: CPUs busy: machine = all CPUs, irq = interrupts and softirqs (loopback TCP)," \
    "other = processes not named (balance-svc is idle); bench = reservation-bench (client and" \
    "libpq driver), rsv = reservation-svc, lock = lock-svc, redis, pg = PostgreSQL (all" \
    "backends); then CPU us per request (all = machine)."
ADMIN_TOKEN="$admin_token" "$reservation_bench" --rsv-addr "127.0.0.1:$reservation_port" \
    --database-url "postgresql://postgres@127.0.0.1:$pg_port/reservation" --rsv-pid "$reservation_pid" --lock-pid "$lock_pid" \
    --redis-pid "$redis_pid" --pg-pid "$pg_pid" "$@"
db_check
# A service that died mid-run shows up above as UNAVAILABLE errors; say why.
for svc in reservation balance lock; do
    pid_var=${svc}_pid
    if ! kill -0 "${!pid_var}" 2>/dev/null; then
        die "$svc-svc exited during the run"
    fi
done
