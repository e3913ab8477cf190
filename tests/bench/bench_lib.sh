# shellcheck shell=bash
# tests/bench/bench_lib.sh: what the benchmark scripts in tests/bench share.
# Sourced, not run. It starts throwaway PostgreSQL, Redis and services on free
# loopback ports in a temp dir, waits until they serve, and stops them (by pid)
# on exit. Before sourcing, the script sets ROOT (the source tree) and
# BENCH_NAME (its own file name, for messages). BUILD_DIR, REDIS_SERVER and BUF
# keep what the environment says, else get their defaults; PG_BIN is found by
# bench_find_pg_bin unless set. It sets and reads: tmp, pg_data, pg_port,
# pg_pid, redis_port, redis_pid, lock_port, lock_pid, balance_port,
# balance_pid, reservation_pid, PG_USER.

BUILD_DIR=${BUILD_DIR:-$ROOT/build/release}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
BUF=${BUF:-$ROOT/.tools/node_modules/.bin/buf}

tmp=""
pg_data=""
pg_port=""
pg_pid=""
redis_port=""
redis_pid=""
lock_port=""
lock_pid=""
balance_port=""
balance_pid=""
reservation_pid=""
PG_USER=""
bench_taken=" "

say() { printf '%s\n' "$*" >&2; }
die() {
    say "$BENCH_NAME: $*"
    exit 1
}

# bench_usage FILE LAST: the script's header comment (lines 2..LAST) without the "# ".
bench_usage() {
    sed -n "2,$2p" "$1" | sed 's/^# \{0,1\}//'
}

# bench_free_port VAR: a free port below the ephemeral range (nothing answers a
# connect there), none this script took before, into the variable VAR.
bench_free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 12000))
        [[ $bench_taken == *" $p "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            bench_taken="$bench_taken$p "
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    return 1
}

bench_require_redis() {
    command -v "$REDIS_SERVER" >/dev/null || die "redis-server not found (run deploy/local/deps.sh)"
    command -v redis-cli >/dev/null || die "redis-cli not found (run deploy/local/deps.sh)"
}

# bench_find_pg_bin TOOL: sets PG_BIN (newest under /usr/lib/postgresql unless
# set) and checks it holds postgres and TOOL.
bench_find_pg_bin() {
    if [[ -z ${PG_BIN:-} ]]; then
        local found
        found=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' \
            2>/dev/null | sort -V | tail -n 1)
        [[ -n $found ]] || die "no PostgreSQL under /usr/lib/postgresql/*/bin (package postgresql)"
        PG_BIN=$(dirname "$found")
    fi
    [[ -x $PG_BIN/postgres && -x $PG_BIN/$1 ]] || die "PG_BIN=$PG_BIN lacks postgres or $1"
}

# bench_build_if_missing "TARGET..." BINARY...: builds the targets (Release) in
# BUILD_DIR unless every binary is there.
bench_build_if_missing() {
    local targets=$1 bin missing="" list
    shift
    for bin in "$@"; do
        [[ -x $bin ]] || missing=1
    done
    [[ -n $missing ]] || return 0
    list=${targets// /, }
    if [[ $list == *", "* ]]; then
        list="${list%, *} and ${list##*, }"
    fi
    say "building $list (Release) in $BUILD_DIR"
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
    # shellcheck disable=SC2086 # targets is a list of words
    cmake --build "$BUILD_DIR" -j "$(nproc)" --target $targets >&2
    for bin in "$@"; do
        [[ -x $bin ]] || die "build did not produce the binaries in $BUILD_DIR"
    done
}

# bench_print_machine WIDTH [POSTGRES]: machine, postgres (when given), redis
# and build lines, labels padded to WIDTH; warns when the build is not Release.
bench_print_machine() {
    local w=$1 model build_type commit
    model=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
    build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null || true)
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
    if ! git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null; then
        commit="$commit + uncommitted changes"
    fi
    printf '%-*s%s\n' "$w" machine: "$(nproc) CPUs, ${model:-unknown CPU}, Linux $(uname -r),\
 load average $(cut -d' ' -f1-3 /proc/loadavg) (other work skews the numbers)"
    if [[ -n ${2:-} ]]; then
        printf '%-*s%s\n' "$w" postgres: "$2"
    fi
    printf '%-*s%s\n' "$w" redis: "$("$REDIS_SERVER" --version | sed 's/ sha=.*//')"
    printf '%-*s%s\n' "$w" build: "${build_type:-unknown} in $BUILD_DIR (source tree: commit $commit)"
    if [[ ${build_type:-} != Release ]]; then
        echo "WARNING: not a Release build; numbers are not representative"
    fi
}

# bench_warn_stale "TARGET..." BINARY "DIR..." [BINARY "DIR..."]...: warns when
# a .c/.h under one of the DIRs (relative to ROOT) is newer than its BINARY.
bench_warn_stale() {
    local targets=$1 bin dirs d stale=""
    local -a paths
    shift
    while (($# >= 2)); do
        bin=$1 dirs=$2
        shift 2
        paths=()
        for d in $dirs; do
            paths+=("$ROOT/$d")
        done
        if [[ -n $(find "${paths[@]}" -name '*.[ch]' -newer "$bin" -print -quit) ]]; then
            stale=1
        fi
    done
    if [[ -n $stale ]]; then
        echo "WARNING: sources changed since the binaries were built; to rebuild:" \
            "cmake --build $BUILD_DIR --target $targets"
    fi
}

# ---------------------------------------------------------------- processes

# PostgreSQL refuses to run as root: then it runs as the system user postgres.
as_pg() {
    if [[ -n $PG_USER ]]; then
        (cd / && runuser -u "$PG_USER" -- "$@")
    else
        "$@"
    fi
}

bench_stop_pid() {
    local pid=$1
    [[ -n $pid ]] || return 0
    pkill -TERM -P "$pid" 2>/dev/null || true # what a wrapper (RESERVATION_WRAP) started
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

bench_show_log() {
    local name=$1 file=$2
    if [[ -s $file ]]; then
        say "--- $name log (last 20 lines) ---"
        tail -n 20 "$file" >&2
    fi
}

# The EXIT trap: stops what we started, by pid, shows the services' warnings
# if they wrote any (and the servers' logs after a failure), removes tmp.
bench_cleanup() {
    local rc=$?
    set +e
    trap '' PIPE # a reader that went away (| head) must not stop the clean-up
    bench_stop_pid "$reservation_pid"
    bench_stop_pid "$balance_pid"
    bench_stop_pid "$lock_pid"
    bench_stop_pid "$redis_pid"
    if [[ -n $pg_pid ]]; then
        as_pg "$PG_BIN/pg_ctl" stop -D "$pg_data" -m fast -w >/dev/null 2>&1 ||
            kill -TERM "$pg_pid" 2>/dev/null
    fi
    if [[ -n $tmp ]]; then
        bench_show_log reservation-svc "$tmp/reservation-svc.log"
        bench_show_log balance-svc "$tmp/balance-svc.log"
        bench_show_log lock-svc "$tmp/lock-svc.log"
        if ((rc != 0)); then
            bench_show_log postgres "$tmp/pg/postgres.log"
            bench_show_log redis "$tmp/redis.log"
        fi
        rm -rf "$tmp"
    fi
    exit "$rc"
}

# bench_make_tmp PREFIX: the temp dir, and the traps that clean up after it.
bench_make_tmp() {
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

# bench_psql DB SQL: runs SQL on database DB; prints the unaligned result.
bench_psql() {
    "$PG_BIN/psql" -X -q -t -A -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres \
        -d "$1" -c "$2"
}

# bench_start_pg MAX_CONNECTIONS START_TIMEOUT DB...: a throwaway cluster in
# tmp (fsync and full_page_writes off, commits synchronous) with databases DB.
bench_start_pg() {
    local max_conn=$1 timeout=$2 db
    shift 2
    bench_free_port pg_port || die "no free port for postgres"
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
    cat >>"$pg_data/postgresql.conf" <<EOF
# $BENCH_NAME: a throwaway cluster; fast test settings, commits stay synchronous.
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$tmp/pg'
max_connections = $max_conn
fsync = off
full_page_writes = off
EOF
    as_pg "$PG_BIN/pg_ctl" start -D "$pg_data" -l "$tmp/pg/postgres.log" -w -t "$timeout" \
        >/dev/null || die "postgres did not start"
    pg_pid=$(head -n 1 "$pg_data/postmaster.pid")
    for db in "$@"; do
        "$PG_BIN/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres "$db"
    done
}

bench_start_redis() {
    bench_free_port redis_port || die "no free port for redis"
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

# Whether the gRPC health check on PORT answers SERVING (without buf: whether it accepts).
bench_serving() {
    local port=$1
    if [[ -x $BUF ]]; then
        "$BUF" curl --protocol grpc --http2-prior-knowledge -d '{}' \
            "http://127.0.0.1:$port/grpc.health.v1.Health/Check" 2>/dev/null | grep -q SERVING
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
    fi
}

# bench_wait_serving NAME PID PORT TRIES: waits up to TRIES tenths of a second.
bench_wait_serving() {
    for _ in $(seq "$4"); do
        if bench_serving "$3"; then
            return 0
        fi
        kill -0 "$2" 2>/dev/null || die "$1 exited"
        sleep 0.1
    done
    die "$1 did not become SERVING on port $3"
}

# bench_start_lock_svc BINARY TRIES: lock-svc on the Redis started before.
bench_start_lock_svc() {
    bench_free_port lock_port || die "no free port for lock-svc"
    REDIS_URL="redis://127.0.0.1:$redis_port/0" LOG_LEVEL=warn LISTEN_ADDR="127.0.0.1:$lock_port" \
        "$1" 2>"$tmp/lock-svc.log" &
    lock_pid=$!
    bench_wait_serving lock-svc "$lock_pid" "$lock_port" "$2"
}

# bench_start_balance_svc BINARY TRIES: balance-svc on database balance and lock-svc.
bench_start_balance_svc() {
    bench_free_port balance_port || die "no free port for balance-svc"
    DATABASE_URL="postgresql://postgres@127.0.0.1:$pg_port/balance" LOG_LEVEL=warn \
        LOCK_SVC_ADDR="127.0.0.1:$lock_port" LISTEN_ADDR="127.0.0.1:$balance_port" \
        "$1" 2>"$tmp/balance-svc.log" &
    balance_pid=$!
    bench_wait_serving balance-svc "$balance_pid" "$balance_port" "$2"
}

# bench_check_alive SVC...: dies when one of SVC-svc (its SVC_pid) exited during the run.
bench_check_alive() {
    local svc pid_var
    for svc in "$@"; do
        pid_var=${svc}_pid
        if ! kill -0 "${!pid_var}" 2>/dev/null; then
            die "$svc-svc exited during the run"
        fi
    done
}
