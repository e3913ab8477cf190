#!/usr/bin/env bash
# up.sh: runs the local stack on loopback, no containers: PostgreSQL and Redis
# from their Debian binaries in a folder of their own (STACK_DIR), then the
# services. Safe to run twice: what already runs is left alone.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

# The port variables, and which of them this run was given: a port given
# moves a running service there; a port not given keeps the running one's.
PORT_VARS=(PG_PORT REDIS_PORT LOCK_PORT BALANCE_PORT RESERVATION_PORT
    LOCK_METRICS_PORT BALANCE_METRICS_PORT RESERVATION_METRICS_PORT)
# With --ha also these: the second instance of each service, a Redis replica, three Sentinels.
HA_PORT_VARS=(LOCK_PORT_2 BALANCE_PORT_2 RESERVATION_PORT_2 LOCK_METRICS_PORT_2
    BALANCE_METRICS_PORT_2 RESERVATION_METRICS_PORT_2 REDIS_REPLICA_PORT SENTINEL_PORT_1
    SENTINEL_PORT_2 SENTINEL_PORT_3)
declare -A PORT_GIVEN=()
for v in "${PORT_VARS[@]}" "${HA_PORT_VARS[@]}"; do
    if [[ -n "${!v:-}" ]]; then PORT_GIVEN[$v]=1; fi
done
unset v

PG_PORT=${PG_PORT:-55432}
REDIS_PORT=${REDIS_PORT:-56379}
LOCK_PORT=${LOCK_PORT:-50051}
BALANCE_PORT=${BALANCE_PORT:-50052}
RESERVATION_PORT=${RESERVATION_PORT:-50053}
LOCK_METRICS_PORT=${LOCK_METRICS_PORT:-50151}
BALANCE_METRICS_PORT=${BALANCE_METRICS_PORT:-50152}
RESERVATION_METRICS_PORT=${RESERVATION_METRICS_PORT:-50153}
LOCK_PORT_2=${LOCK_PORT_2:-50061}
BALANCE_PORT_2=${BALANCE_PORT_2:-50062}
RESERVATION_PORT_2=${RESERVATION_PORT_2:-50063}
LOCK_METRICS_PORT_2=${LOCK_METRICS_PORT_2:-50161}
BALANCE_METRICS_PORT_2=${BALANCE_METRICS_PORT_2:-50162}
RESERVATION_METRICS_PORT_2=${RESERVATION_METRICS_PORT_2:-50163}
REDIS_REPLICA_PORT=${REDIS_REPLICA_PORT:-56380}
SENTINEL_PORT_1=${SENTINEL_PORT_1:-56381}
SENTINEL_PORT_2=${SENTINEL_PORT_2:-56382}
SENTINEL_PORT_3=${SENTINEL_PORT_3:-56383}
SENTINEL_MASTER=ticketing
HA=0
TLS=0
LOG_LEVEL=${LOG_LEVEL:-info}
BUILD_DIR=${BUILD_DIR:-$ROOT/build/release}
BUF=$ROOT/.tools/node_modules/.bin/buf
STACK_DIR=${STACK_DIR:-$ROOT/.stack}
# Seconds to wait for a server to answer after starting it.
START_TIMEOUT=${START_TIMEOUT:-30}

usage() {
    cat <<EOF
Usage: deploy/local/up.sh [--no-deps] [--no-build] [--ha] [--tls] [--help]

Starts PostgreSQL and Redis on 127.0.0.1 in STACK_DIR, then the services, and
prints how to reach them. Runs deploy/local/deps.sh first unless --no-deps is
given, and builds the services (Release) in BUILD_DIR unless --no-build is
given (then the binaries already in BUILD_DIR are used as they are).

--ha runs the stack as a small cluster on this machine: a second instance
of each service (its callers spread calls over both, round robin), a Redis
replica and three Sentinels; lock-svc finds the Redis primary through the
Sentinels (master name ticketing), so it follows a failover. STACK_DIR/env
then lists both instances in LOCK_ADDR, BALANCE_ADDR and RESERVATION_ADDR.
A stack started with --ha stays one on later runs (STACK_DIR/ha) until
down.sh --purge.

--tls makes a private CA and certificates with openssl in STACK_DIR/tls
(deploy/local/certs.sh: ca.pem; lock-svc, balance-svc, reservation-svc and
the client-only client, each NAME.pem with key NAME-key.pem, mode 0600) and runs every
service with TLS only, requiring client certificates of that CA (mTLS),
also between the services. STACK_DIR/env then exports TLS_CA_FILE,
TLS_CERT_FILE and TLS_KEY_FILE (the client certificate) for tools such as
the conformance suite; buf curl takes them as --cacert, --cert and --key
with https:// addresses. A stack started with --tls stays one (STACK_DIR/tls)
until down.sh --purge.

Environment:
  STACK_DIR   data, logs and pid files (default: <repo>/.stack)
              now: $STACK_DIR
  PG_PORT     PostgreSQL port (default 55432; now $PG_PORT)
  REDIS_PORT  Redis port (default 56379; now $REDIS_PORT)
  LOCK_PORT   lock-svc port (default 50051; now $LOCK_PORT)
  BALANCE_PORT balance-svc port (default 50052; now $BALANCE_PORT)
  RESERVATION_PORT reservation-svc port (default 50053; now $RESERVATION_PORT)
  LOCK_METRICS_PORT, BALANCE_METRICS_PORT, RESERVATION_METRICS_PORT
              where each service serves GET /metrics (Prometheus; default
              50151, 50152, 50153; now $LOCK_METRICS_PORT, $BALANCE_METRICS_PORT, $RESERVATION_METRICS_PORT)
  With --ha: LOCK_PORT_2, BALANCE_PORT_2, RESERVATION_PORT_2 (50061-50063),
              LOCK_METRICS_PORT_2, BALANCE_METRICS_PORT_2,
              RESERVATION_METRICS_PORT_2 (50161-50163), REDIS_REPLICA_PORT
              (56380), SENTINEL_PORT_1, SENTINEL_PORT_2, SENTINEL_PORT_3
              (56381-56383)
  HOLD_TTL_MS how long a hold lasts in reservation-svc (its default 300000 when unset)
  ADMIN_TOKEN for CreateConcert (default: a random one kept in STACK_DIR/admin-token)
  ADMISSION_KEY_FILE key that signs waiting-room admissions (default:
              STACK_DIR/admission-key, made once with a random key)
  LOG_LEVEL   services' log level (default info)
  BUILD_DIR   where the services are built (default <repo>/build/release)
  PG_BIN      PostgreSQL binaries (default: newest /usr/lib/postgresql/<ver>/bin)

Running it again is safe: what runs with the same settings is left alone.
  - Ports: a port variable that is set moves a running service to that port
    (it is restarted there, and the services that call it are restarted
    with its new address); one that is not set keeps the port the service
    runs on. PostgreSQL and Redis are not moved: a port set for them that
    differs from the running one is refused (run down.sh first).
  - A service whose binary is newer than the running process (rebuilt), or
    whose settings differ from this run's (LOG_LEVEL, HOLD_TTL_MS,
    ADMIN_TOKEN, the addresses of its peers), is restarted.
  - Every port is checked before anything starts: a port taken by another
    program stops up.sh with the variable to set.
  STACK_DIR/env always names the ports the services listen on.

Layout: STACK_DIR/data/{postgres,redis}, STACK_DIR/logs/, STACK_DIR/pids/
({postgres,redis}.pid, <service>.pid, and <service>.binary: its pid and the
binary's mtime when it started), STACK_DIR/env (export lines: source it),
STACK_DIR/admin-token and STACK_DIR/admission-key (mode 0600, made when
missing and then kept).
Databases 'balance' and 'reservation' are created, superuser 'postgres',
trust authentication on loopback. deploy/local/down.sh stops everything.
EOF
}

log() { echo "up.sh: $*"; }
die() {
    echo "up.sh: $*" >&2
    exit 1
}

# ---------------------------------------------------------------------------
# Paths and users

# Makes STACK_DIR absolute (servers get absolute paths) and sets the paths below.
setup_paths() {
    mkdir -p "$STACK_DIR"
    STACK_DIR=$(cd "$STACK_DIR" && pwd)
    PID_DIR="$STACK_DIR/pids"
    LOG_DIR="$STACK_DIR/logs"
    PG_DATA="$STACK_DIR/data/postgres"
    REDIS_DATA="$STACK_DIR/data/redis"
    SOCK_DIR="$STACK_DIR/run"
    mkdir -p "$PID_DIR" "$LOG_DIR" "$PG_DATA" "$REDIS_DATA" "$SOCK_DIR"
}

# Finds the PostgreSQL server binaries: PG_BIN, else the newest installed version.
find_pg_bin() {
    if [[ -z "${PG_BIN:-}" ]]; then
        local found
        found=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' \
            2>/dev/null | sort -V | tail -n 1)
        [[ -n "$found" ]] || die "no PostgreSQL server under /usr/lib/postgresql/*/bin (package postgresql)"
        PG_BIN=$(dirname "$found")
    fi
    [[ -x "$PG_BIN/postgres" ]] || die "PG_BIN=$PG_BIN has no postgres binary"
}

# PostgreSQL refuses to run as root. As root, use the 'postgres' system user
# (created by the Debian package; created here when missing).
setup_pg_user() {
    PG_USER=""
    [[ $(id -u) -eq 0 ]] || return 0
    PG_USER=postgres
    if ! id "$PG_USER" >/dev/null 2>&1; then
        log "creating system user $PG_USER"
        useradd --system --user-group --no-create-home --shell /usr/sbin/nologin "$PG_USER"
    fi
    command -v runuser >/dev/null 2>&1 || die "runuser not found (package util-linux)"
}

# Runs a command as the PostgreSQL user (see setup_pg_user), from / so that an
# unreadable working directory does not bother it.
as_pg() {
    if [[ -n "$PG_USER" ]]; then
        (cd / && runuser -u "$PG_USER" -- "$@")
    else
        "$@"
    fi
}

# ---------------------------------------------------------------------------
# PostgreSQL

pg_running() {
    [[ -f "$PG_DATA/postmaster.pid" ]] && as_pg "$PG_BIN/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1
}

# initdb into an empty data folder; an existing cluster is kept as it is.
pg_init() {
    if [[ -f "$PG_DATA/PG_VERSION" ]]; then
        return 0
    fi
    if [[ -n "$(ls -A "$PG_DATA")" ]]; then
        die "$PG_DATA is neither empty nor a PostgreSQL data folder"
    fi
    log "initialising PostgreSQL cluster in $PG_DATA"
    [[ -z "$PG_USER" ]] || chown "$PG_USER:" "$PG_DATA"
    as_pg test -w "$PG_DATA" ||
        die "user ${PG_USER:-$(id -un)} cannot write $PG_DATA (choose a STACK_DIR it can reach)"
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust \
        --encoding=UTF8 --no-locale >"$LOG_DIR/initdb.log" 2>&1 ||
        die "initdb failed, see $LOG_DIR/initdb.log"
    # Our settings live in stack.conf, rewritten at each start.
    echo "include_if_exists = 'stack.conf'" >>"$PG_DATA/postgresql.conf"
}

pg_start() {
    local sock="$SOCK_DIR/.s.PGSQL.$PG_PORT" conf="$PG_DATA/stack.conf"
    # The kernel limits a Unix socket path to 107 bytes.
    ((${#sock} <= 100)) || die "socket path $sock is too long; use a shorter STACK_DIR"

    # Written by up.sh; the port may change between runs. ' is doubled for the
    # config file's quoting.
    cat >"$conf" <<EOF
# Written by deploy/local/up.sh at each start; edits are lost.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '${SOCK_DIR//\'/\'\'}'
EOF
    touch "$LOG_DIR/postgres.log"
    if [[ -n "$PG_USER" ]]; then
        chown "$PG_USER:" "$conf" "$SOCK_DIR" "$LOG_DIR/postgres.log"
    fi

    port_in_use "$PG_PORT" && die "127.0.0.1:$PG_PORT is taken by another program; set PG_PORT to a free port"
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    if ! as_pg "$PG_BIN/pg_ctl" start -D "$PG_DATA" -l "$LOG_DIR/postgres.log" \
        -w -t "$START_TIMEOUT" >/dev/null; then
        tail -n 20 "$LOG_DIR/postgres.log" >&2 || true
        die "PostgreSQL did not start, see $LOG_DIR/postgres.log"
    fi
}

# Starts PostgreSQL unless it runs, waits until it answers, makes the databases.
pg_up() {
    pg_init
    if pg_running; then
        # check_ports made PG_PORT the port it listens on.
        log "PostgreSQL already running (pid $(head -n 1 "$PG_DATA/postmaster.pid"), port $PG_PORT)"
    else
        pg_start
    fi
    # Our own pid file, the one down.sh reads.
    head -n 1 "$PG_DATA/postmaster.pid" >"$PID_DIR/postgres.pid"

    wait_for "PostgreSQL" "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres

    local db
    for db in balance reservation; do
        if [[ -z "$(pg_sql "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]]; then
            log "creating database $db"
            "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$db"
        fi
    done
}

# Runs one SQL statement in database postgres; prints the unaligned result.
pg_sql() {
    "$PG_BIN/psql" -X -q -t -A -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres \
        -d postgres -c "$1"
}

# ---------------------------------------------------------------------------
# Redis

# True when the pid in STACK_DIR/pids/redis.pid is a live redis-server (not a
# stale file naming a reused pid, nor an exited process not yet reaped).
redis_running() {
    local pid stat comm
    pid=$(head -n 1 "$PID_DIR/redis.pid" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    read -r stat comm < <(ps -o stat=,comm= -p "$pid" 2>/dev/null) || return 1
    [[ "$stat" != Z* && "$comm" == redis-server* ]]
}

# Starts Redis unless it runs, and waits until it answers PING.
redis_up() {
    local conf="$STACK_DIR/redis.conf"
    if redis_running; then
        # check_ports made REDIS_PORT the port it listens on.
        log "Redis already running (pid $(cat "$PID_DIR/redis.pid"), port $REDIS_PORT)"
    else
        rm -f "$PID_DIR/redis.pid"
        port_in_use "$REDIS_PORT" && die "127.0.0.1:$REDIS_PORT is taken by another program; set REDIS_PORT to a free port"
        # Rewritten at each start. Locks are short-lived: no persistence.
        cat >"$conf" <<EOF
# Written by deploy/local/up.sh at each start; edits are lost.
port $REDIS_PORT
bind 127.0.0.1
protected-mode yes
daemonize yes
dir "$REDIS_DATA"
pidfile "$PID_DIR/redis.pid"
logfile "$LOG_DIR/redis.log"
appendonly no
save ""
EOF
        log "starting Redis on 127.0.0.1:$REDIS_PORT"
        if ! redis-server "$conf"; then
            die "Redis did not start, see $LOG_DIR/redis.log"
        fi
    fi
    # The pid file appears once Redis listens; a failed start never writes it.
    wait_for "Redis (see $LOG_DIR/redis.log)" redis_ready
}

redis_ready() {
    redis_running && [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]
}

# ---------------------------------------------------------------------------
# With --ha: a Redis replica of the primary and three Sentinels watching it
# (master name $SENTINEL_MASTER); lock-svc finds the primary through them.

# pidfile_live FILE COMM: the pid in FILE when it is a live COMM process.
pidfile_live() {
    local pid stat comm
    pid=$(head -n 1 "$1" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    read -r stat comm < <(ps -o stat=,comm= -p "$pid" 2>/dev/null) || return 1
    [[ "$stat" != Z* && "$comm" == "$2"* ]] && echo "$pid"
}

redis_replica_up() {
    local conf="$STACK_DIR/redis-replica.conf" dir="$STACK_DIR/data/redis-replica"
    if pidfile_live "$PID_DIR/redis-replica.pid" redis-server >/dev/null; then
        log "Redis replica already running (port $REDIS_REPLICA_PORT)"
        return 0
    fi
    mkdir -p "$dir"
    printf '%s\n' "# Written by deploy/local/up.sh --ha at each start; edits are lost." \
        "port $REDIS_REPLICA_PORT" "bind 127.0.0.1" "daemonize yes" "dir \"$dir\"" \
        "pidfile \"$PID_DIR/redis-replica.pid\"" "logfile \"$LOG_DIR/redis-replica.log\"" \
        "appendonly no" 'save ""' "replicaof 127.0.0.1 $REDIS_PORT" >"$conf"
    log "starting a Redis replica on 127.0.0.1:$REDIS_REPLICA_PORT"
    redis-server "$conf" || die "the Redis replica did not start, see $LOG_DIR/redis-replica.log"
    wait_for "the Redis replica (see $LOG_DIR/redis-replica.log)" replica_ready
}

replica_ready() {
    redis-cli -h 127.0.0.1 -p "$REDIS_REPLICA_PORT" info replication 2>/dev/null |
        grep -q '^master_link_status:up'
}

# sentinel_port I: the port of Sentinel I (1 to 3).
sentinel_port() {
    local var=SENTINEL_PORT_$1
    echo "${!var}"
}

# Sentinels rewrite their own configuration: it is written once, kept after.
sentinels_up() {
    local i port conf
    command -v redis-sentinel >/dev/null ||
        die "redis-sentinel not found (package redis-sentinel; deploy/local/deps.sh)"
    for i in 1 2 3; do
        port=$(sentinel_port "$i")
        conf="$STACK_DIR/sentinel-$i.conf"
        if pidfile_live "$PID_DIR/sentinel-$i.pid" redis-s >/dev/null; then
            log "Sentinel $i already running (port $port)"
            continue
        fi
        printf '%s\n' "# Written by deploy/local/up.sh --ha; Redis Sentinel adds what it learns." \
            "port $port" "bind 127.0.0.1" "daemonize yes" "dir \"$STACK_DIR\"" \
            "pidfile \"$PID_DIR/sentinel-$i.pid\"" "logfile \"$LOG_DIR/sentinel-$i.log\"" \
            "sentinel monitor $SENTINEL_MASTER 127.0.0.1 $REDIS_PORT 2" \
            "sentinel down-after-milliseconds $SENTINEL_MASTER 2000" \
            "sentinel failover-timeout $SENTINEL_MASTER 10000" \
            "sentinel parallel-syncs $SENTINEL_MASTER 1" >"$conf"
        log "starting Sentinel $i on 127.0.0.1:$port"
        redis-sentinel "$conf" || die "Sentinel $i did not start, see $LOG_DIR/sentinel-$i.log"
    done
    wait_for "the Sentinels (see $LOG_DIR/sentinel-*.log)" sentinels_ready
}

sentinels_ready() {
    local i
    for i in 1 2 3; do
        redis-cli -h 127.0.0.1 -p "$(sentinel_port "$i")" \
            sentinel get-master-addr-by-name "$SENTINEL_MASTER" 2>/dev/null | grep -q . || return 1
    done
}

# The REDIS_URL lock-svc gets with --ha.
sentinel_url() {
    echo "redis-sentinel://127.0.0.1:$SENTINEL_PORT_1,127.0.0.1:$SENTINEL_PORT_2,127.0.0.1:$SENTINEL_PORT_3/$SENTINEL_MASTER"
}

# ---------------------------------------------------------------------------
# Services

# The services: built here (Release, in BUILD_DIR), then started with pid
# files in PID_DIR and logs in LOG_DIR; each must report SERVING on
# grpc.health.v1.Health before the next one starts.
SERVICES=(lock-svc balance-svc reservation-svc)

build_services() {
    log "building the services in $BUILD_DIR"
    if ! cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >"$LOG_DIR/build.log" 2>&1 ||
        ! cmake --build "$BUILD_DIR" -j "$(nproc)" --target "${SERVICES[@]}" >>"$LOG_DIR/build.log" 2>&1; then
        die "build failed, see $LOG_DIR/build.log"
    fi
}

# An instance is NAME (the first) or NAME-2 (the second, with --ha); both run NAME's binary.
service_binary() {
    echo "${1%-2}"
}

service_port() {
    local var
    var=$(port_var "$1")
    echo "${!var}"
}

service_running() {
    local pid stat comm bin
    bin=$(service_binary "$1")
    pid=$(head -n 1 "$PID_DIR/$1.pid" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    read -r stat comm < <(ps -o stat=,comm= -p "$pid" 2>/dev/null) || return 1
    [[ "$stat" != Z* && "$comm" == "${bin:0:15}"* ]]
}

# bcurl ARGS... URL-PATH: buf curl to 127.0.0.1, over mTLS with the client
# certificate when the stack runs --tls; the last argument is PORT/PATH.
bcurl() {
    local where=${*: -1} args=("${@:1:$#-1}")
    if ((TLS)); then
        "$BUF" curl --protocol grpc --cacert "$TLS_DIR/ca.pem" --cert "$TLS_DIR/client.pem" \
            --key "$TLS_DIR/client-key.pem" "${args[@]}" "https://127.0.0.1:$where"
    else
        "$BUF" curl --protocol grpc --http2-prior-knowledge "${args[@]}" "http://127.0.0.1:$where"
    fi
}

# True once the service on port $1 answers Health/Check with SERVING.
service_serving() {
    bcurl -d '{}' "$1/grpc.health.v1.Health/Check" 2>/dev/null | grep -q '"SERVING"'
}

# tls_env NAME: the TLS settings of NAME (NAME-2 uses NAME's certificate);
# all empty (unset) without --tls, so a switch either way restarts it.
tls_env() {
    local base=${1%-2}
    if ((TLS)); then
        echo "TLS_CERT_FILE=$TLS_DIR/$base.pem" "TLS_KEY_FILE=$TLS_DIR/$base-key.pem" \
            "TLS_CLIENT_CA_FILE=$TLS_DIR/ca.pem" "TLS_CA_FILE=$TLS_DIR/ca.pem"
    else
        echo TLS_CERT_FILE= TLS_KEY_FILE= TLS_CLIENT_CA_FILE= TLS_CA_FILE=
    fi
}

# metrics_port NAME: the port NAME serves /metrics on.
metrics_port() {
    local var
    var=$(metrics_port_var "$1")
    echo "${!var}"
}

# port_var NAME / metrics_port_var NAME: the variable that sets NAME's port.
port_var() {
    case $1 in
    lock-svc) echo LOCK_PORT ;;
    balance-svc) echo BALANCE_PORT ;;
    reservation-svc) echo RESERVATION_PORT ;;
    lock-svc-2) echo LOCK_PORT_2 ;;
    balance-svc-2) echo BALANCE_PORT_2 ;;
    reservation-svc-2) echo RESERVATION_PORT_2 ;;
    esac
}
metrics_port_var() {
    case $1 in
    lock-svc) echo LOCK_METRICS_PORT ;;
    balance-svc) echo BALANCE_METRICS_PORT ;;
    reservation-svc) echo RESERVATION_METRICS_PORT ;;
    lock-svc-2) echo LOCK_METRICS_PORT_2 ;;
    balance-svc-2) echo BALANCE_METRICS_PORT_2 ;;
    reservation-svc-2) echo RESERVATION_METRICS_PORT_2 ;;
    esac
}

# proc_env PID VAR: VAR's value in the environment PID was started with
# (empty when it had none). up.sh starts the services with their settings in
# the environment, so this is what a running service was told.
proc_env() {
    { tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null || true; } | sed -n "s/^$2=//p" | head -n 1
}

# binary_mtime NAME: the modification time of NAME's binary (seconds, with
# fractions); start_service records it in PID_DIR/NAME.binary.
binary_mtime() {
    local bin
    bin=$(service_binary "$1")
    stat -L -c %.9Y "$BUILD_DIR/$bin/$bin"
}

# restart_reason NAME PID VAR=value...: prints why the running NAME (PID) must
# be restarted to serve this run: a setting it was started with differs, or its
# binary changed since it started. Prints nothing when it may keep running.
restart_reason() {
    local name=$1 pid=$2 kv key want have
    shift 2
    for kv in "$@"; do
        key=${kv%%=*} want=${kv#*=}
        have=$(proc_env "$pid" "$key")
        [[ "$have" == "$want" ]] && continue
        case $key in
        ADMIN_TOKEN) echo "ADMIN_TOKEN changed" ;;
        *) echo "$key is ${have:-unset}, this run wants ${want:-it unset}" ;;
        esac
        return 0
    done
    local recorded started mtime
    mtime=$(binary_mtime "$name")
    if read -r recorded 2>/dev/null <"$PID_DIR/$name.binary" &&
        [[ "$(head -n 1 "$PID_DIR/$name.pid")" == "$pid" && "$recorded" == "${pid}:"* ]]; then
        [[ "${recorded#*:}" == "$mtime" ]] || echo "its binary was rebuilt after it started"
        return 0
    fi
    # Started by an older up.sh that kept no record: compare with its start time.
    started=$(($(date +%s) - $(ps -o etimes= -p "$pid")))
    ((${mtime%.*} <= started)) || echo "its binary was rebuilt after it started"
}

# stop_service NAME PID: SIGTERM (in-flight calls finish within the service's
# grace period), then SIGKILL if it still runs after 30 s.
stop_service() {
    local name=$1 pid=$2 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        service_running "$name" || return 0
        sleep 0.2
    done
    log "$name (pid $pid) still runs after 30s: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
}

# start_service NAME VAR=value...: starts NAME with that environment (an empty
# value: unset) unless it runs with the same settings and binary; restarts it
# when they differ.
start_service() {
    local name=$1 port mport pid reason kv
    shift
    port=$(service_port "$name")
    mport=$(metrics_port "$name")
    local tls
    read -r -a tls <<<"$(tls_env "$name")"
    local want=("$@" "${tls[@]}" LISTEN_ADDR="127.0.0.1:$port" METRICS_ADDR="127.0.0.1:$mport")
    if service_running "$name"; then
        pid=$(head -n 1 "$PID_DIR/$name.pid")
        reason=$(restart_reason "$name" "$pid" "${want[@]}")
        if [[ -z "$reason" ]]; then
            log "$name already running (pid $pid, port $port)"
            return 0
        fi
        log "restarting $name (pid $pid): $reason"
        stop_service "$name" "$pid"
    fi
    port_in_use "$port" &&
        die "127.0.0.1:$port is taken by another program; set $(port_var "$name") to a free port"
    port_in_use "$mport" &&
        die "127.0.0.1:$mport (metrics of $name) is taken by another program; set $(metrics_port_var "$name") to a free port"
    local args=()
    for kv in "${want[@]}"; do
        if [[ -n "${kv#*=}" ]]; then args+=("$kv"); else args=(-u "${kv%%=*}" "${args[@]}"); fi
    done
    log "starting $name on 127.0.0.1:$port (metrics on 127.0.0.1:$mport)"
    local mtime bin
    mtime=$(binary_mtime "$name")
    bin=$(service_binary "$name")
    env "${args[@]}" setsid "$BUILD_DIR/$bin/$bin" \
        >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$PID_DIR/$name.pid"
    echo "$!:$mtime" >"$PID_DIR/$name.binary"
    wait_for "$name (see $LOG_DIR/$name.log)" service_serving "$port"
}

start_services() {
    if ((build)); then
        build_services
    else
        local name
        for name in "${SERVICES[@]}"; do
            [[ -x "$BUILD_DIR/$name/$name" ]] || die "--no-build: $BUILD_DIR/$name/$name is not built"
        done
    fi
    local redis_url="redis://127.0.0.1:$REDIS_PORT/0" suffixes=("")
    if ((HA)); then
        redis_url=$(sentinel_url)
        suffixes=("" -2)
    fi
    local lock_addrs bal_addrs s
    lock_addrs=$(addrs lock-svc) bal_addrs=$(addrs balance-svc)
    for s in "${suffixes[@]}"; do
        start_service "lock-svc$s" REDIS_URL="$redis_url" LOG_LEVEL="$LOG_LEVEL"
    done
    for s in "${suffixes[@]}"; do
        start_service "balance-svc$s" DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/balance" \
            LOCK_SVC_ADDR="$lock_addrs" LOG_LEVEL="$LOG_LEVEL"
    done
    admin_token
    admission_key
    for s in "${suffixes[@]}"; do
        start_service "reservation-svc$s" \
            DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/reservation" \
            LOCK_SVC_ADDR="$lock_addrs" BALANCE_SVC_ADDR="$bal_addrs" \
            ADMIN_TOKEN="$ADMIN_TOKEN" ADMISSION_KEY_FILE="$ADMISSION_KEY_FILE" \
            LOG_LEVEL="$LOG_LEVEL" HOLD_TTL_MS="${HOLD_TTL_MS:-}"
    done
    seed_demo
}

# addrs NAME: NAME's address, or with --ha both instances' (the clients' round robin).
addrs() {
    if ((HA)); then
        echo "127.0.0.1:$(service_port "$1"),127.0.0.1:$(service_port "$1-2")"
    else
        echo "127.0.0.1:$(service_port "$1")"
    fi
}

# ADMIN_TOKEN from the environment, else the one kept in STACK_DIR/admin-token,
# else a new random one written there.
admin_token() {
    local file="$STACK_DIR/admin-token"
    if [[ -z "${ADMIN_TOKEN:-}" ]]; then
        if [[ ! -s "$file" ]]; then
            (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$file")
        fi
        ADMIN_TOKEN=$(cat "$file")
    fi
}

# ADMISSION_KEY_FILE from the environment, else STACK_DIR/admission-key, made
# once with 64 hex digits (32 random bytes) and kept: every reservation-svc
# instance must sign admissions with the same key, and a key that changed at a
# restart would refuse the tokens already given out. Hex, because the service
# drops one trailing newline, which a raw random key could end with.
admission_key() {
    if [[ -z "${ADMISSION_KEY_FILE:-}" ]]; then
        ADMISSION_KEY_FILE="$STACK_DIR/admission-key"
        if [[ ! -s "$ADMISSION_KEY_FILE" ]]; then
            (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$ADMISSION_KEY_FILE")
        fi
    fi
    [[ -r "$ADMISSION_KEY_FILE" ]] || die "ADMISSION_KEY_FILE=$ADMISSION_KEY_FILE cannot be read"
    ADMISSION_KEY_FILE=$(cd "$(dirname "$ADMISSION_KEY_FILE")" && pwd)/$(basename "$ADMISSION_KEY_FILE")
}

# A demo concert and a few funded users, only when the database has no concert.
seed_demo() {
    local n
    n=$("$PG_BIN/psql" -X -q -t -A -h 127.0.0.1 -p "$PG_PORT" -U postgres -d reservation \
        -c "SELECT count(*) FROM concerts" 2>/dev/null || echo 1)
    [[ "$n" == 0 ]] || return 0
    log "seeding a demo concert and users 1-3 with 100000 points each"
    bcurl -H "authorization: Bearer $ADMIN_TOKEN" \
        -d '{"title":"Demo Night","schedules":[{"starts_at_ms":1893456000000,"seat_count":50,"seat_price":15000},{"starts_at_ms":1893542400000,"seat_count":50,"seat_price":15000}]}' \
        "$RESERVATION_PORT/reservation.v1.ReservationService/CreateConcert" >/dev/null
    local u
    for u in 1 2 3; do
        bcurl -d "{\"user_id\":$u,\"amount\":100000,\"idempotency_key\":\"demo-seed-$u\"}" \
            "$BALANCE_PORT/balance.v1.BalanceService/TopUp" >/dev/null
    done
}

# ---------------------------------------------------------------------------
# Ports, all settled before anything starts

# running_port VAR: the port the running component behind VAR listens on;
# prints nothing when that component does not run.
running_port() {
    local name pid addr
    case $1 in
    PG_PORT)
        pg_running && sed -n 4p "$PG_DATA/postmaster.pid"
        return 0
        ;;
    REDIS_PORT)
        redis_running && awk '$1 == "port" { print $2 }' "$STACK_DIR/redis.conf" 2>/dev/null
        return 0
        ;;
    REDIS_REPLICA_PORT)
        pidfile_live "$PID_DIR/redis-replica.pid" redis-server >/dev/null &&
            awk '$1 == "port" { print $2 }' "$STACK_DIR/redis-replica.conf" 2>/dev/null
        return 0
        ;;
    SENTINEL_PORT_[123])
        pidfile_live "$PID_DIR/sentinel-${1##*_}.pid" redis-s >/dev/null &&
            awk '$1 == "port" { print $2 }' "$STACK_DIR/sentinel-${1##*_}.conf" 2>/dev/null
        return 0
        ;;
    LOCK_PORT | LOCK_METRICS_PORT) name=lock-svc ;;
    BALANCE_PORT | BALANCE_METRICS_PORT) name=balance-svc ;;
    RESERVATION_PORT | RESERVATION_METRICS_PORT) name=reservation-svc ;;
    LOCK_PORT_2 | LOCK_METRICS_PORT_2) name=lock-svc-2 ;;
    BALANCE_PORT_2 | BALANCE_METRICS_PORT_2) name=balance-svc-2 ;;
    RESERVATION_PORT_2 | RESERVATION_METRICS_PORT_2) name=reservation-svc-2 ;;
    esac
    service_running "$name" || return 0
    pid=$(head -n 1 "$PID_DIR/$name.pid")
    case $1 in
    *_METRICS_PORT | *_METRICS_PORT_2) addr=$(proc_env "$pid" METRICS_ADDR) ;;
    *) addr=$(proc_env "$pid" LISTEN_ADDR) ;;
    esac
    [[ -z "$addr" ]] || echo "${addr##*:}"
}

# port_owner VAR: what listens on VAR's port, for messages.
port_owner() {
    case $1 in
    PG_PORT) echo PostgreSQL ;;
    REDIS_PORT) echo Redis ;;
    LOCK_PORT) echo lock-svc ;;
    BALANCE_PORT) echo balance-svc ;;
    RESERVATION_PORT) echo reservation-svc ;;
    LOCK_PORT_2) echo "lock-svc's second instance" ;;
    BALANCE_PORT_2) echo "balance-svc's second instance" ;;
    RESERVATION_PORT_2) echo "reservation-svc's second instance" ;;
    REDIS_REPLICA_PORT) echo "the Redis replica" ;;
    SENTINEL_PORT_*) echo "Sentinel ${1##*_}" ;;
    *_METRICS_PORT) echo "the metrics of $(port_owner "${1%_METRICS_PORT}_PORT")" ;;
    *_METRICS_PORT_2) echo "the metrics of $(port_owner "${1%_METRICS_PORT_2}_PORT_2")" ;;
    esac
}

# check_ports: for each port variable, a running component keeps its port
# unless the variable was given (a service is then restarted on the new port,
# PostgreSQL and Redis are refused), and every port that something will start
# on must be free. Dies naming the variable to set; starts nothing.
check_ports() {
    local var port running free=() seen=() moves=()
    for var in "${PORT_VARS[@]}"; do
        port=${!var}
        if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
            die "$var=$port is not a port number"
        fi
        running=$(running_port "$var")
        if [[ -n "$running" && "$running" != "$port" ]]; then
            if [[ -z "${PORT_GIVEN[$var]:-}" ]]; then
                printf -v "$var" %s "$running" # not asked for: keep the running one's
                port=$running
            elif [[ $var == PG_PORT || $var == REDIS_PORT ]]; then
                die "$(port_owner "$var") runs on 127.0.0.1:$running but $var=$port: PostgreSQL and Redis are not moved while they run; run deploy/local/down.sh first, or unset $var"
            else
                moves+=("$var=$port: $(port_owner "$var") on 127.0.0.1:$running moves there (it is restarted)")
                running=""
            fi
        fi
        [[ -n "$running" ]] || free+=("$var")
        seen+=("$var=$port")
    done
    local a b
    for a in "${seen[@]}"; do
        for b in "${seen[@]}"; do
            if [[ "${a%%=*}" < "${b%%=*}" && "${a#*=}" == "${b#*=}" ]]; then
                die "${a%%=*} and ${b%%=*} are both ${a#*=}; give each its own port"
            fi
        done
    done
    for var in "${free[@]}"; do
        if port_in_use "${!var}"; then
            die "127.0.0.1:${!var} is taken by another program; set $var to a free port"
        fi
    done
    for var in "${moves[@]}"; do log "$var"; done
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# wait_for NAME COMMAND...: retries COMMAND until it succeeds or START_TIMEOUT.
wait_for() {
    local name=$1 i
    shift
    for ((i = 0; i < START_TIMEOUT * 5; i++)); do
        "$@" && return 0
        sleep 0.2
    done
    die "$name does not answer after ${START_TIMEOUT}s"
}

# Writes STACK_DIR/env (export lines) and prints how to connect. Mode 0600,
# like admin-token: it carries ADMIN_TOKEN.
write_env() {
    local env_file="$STACK_DIR/env"
    (umask 077 && : >"$env_file")
    chmod 600 "$env_file"
    cat >"$env_file" <<EOF
# Written by deploy/local/up.sh: source it to reach the local stack.
export PG_PORT=$PG_PORT
export REDIS_PORT=$REDIS_PORT
export BALANCE_DATABASE_URL=postgresql://postgres@127.0.0.1:$PG_PORT/balance
export RESERVATION_DATABASE_URL=postgresql://postgres@127.0.0.1:$PG_PORT/reservation
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
export LOCK_ADDR=$(addrs lock-svc)
export BALANCE_ADDR=$(addrs balance-svc)
export RESERVATION_ADDR=$(addrs reservation-svc)
export LOCK_METRICS_ADDR=127.0.0.1:$LOCK_METRICS_PORT
export BALANCE_METRICS_ADDR=127.0.0.1:$BALANCE_METRICS_PORT
export RESERVATION_METRICS_ADDR=127.0.0.1:$RESERVATION_METRICS_PORT
export ADMIN_TOKEN=$ADMIN_TOKEN
export ADMISSION_KEY_FILE=$(printf %q "$ADMISSION_KEY_FILE")
EOF
    if ((TLS)); then
        {
            echo "# --tls: every service requires a client certificate of this CA (mTLS)."
            echo "export TLS_CA_FILE=$(printf %q "$TLS_DIR/ca.pem")"
            echo "export TLS_CERT_FILE=$(printf %q "$TLS_DIR/client.pem")"
            echo "export TLS_KEY_FILE=$(printf %q "$TLS_DIR/client-key.pem")"
        } >>"$env_file"
    fi
    if ((HA)); then
        {
            echo "# --ha: lock-svc finds the Redis primary through these Sentinels."
            echo "export REDIS_SENTINEL_URL=$(sentinel_url)"
            echo "export LOCK_METRICS_ADDR_2=127.0.0.1:$LOCK_METRICS_PORT_2"
            echo "export BALANCE_METRICS_ADDR_2=127.0.0.1:$BALANCE_METRICS_PORT_2"
            echo "export RESERVATION_METRICS_ADDR_2=127.0.0.1:$RESERVATION_METRICS_PORT_2"
        } >>"$env_file"
        log "--ha: second instances on $LOCK_PORT_2, $BALANCE_PORT_2, $RESERVATION_PORT_2; Redis replica on $REDIS_REPLICA_PORT; Sentinels on $SENTINEL_PORT_1, $SENTINEL_PORT_2, $SENTINEL_PORT_3"
    fi
    cat <<EOF

Stack is up in $STACK_DIR (logs in $LOG_DIR/)
  PostgreSQL  127.0.0.1:$PG_PORT  pid $(cat "$PID_DIR/postgres.pid")
  Redis       127.0.0.1:$REDIS_PORT  pid $(cat "$PID_DIR/redis.pid")
  lock-svc    127.0.0.1:$LOCK_PORT  pid $(cat "$PID_DIR/lock-svc.pid")
  balance-svc 127.0.0.1:$BALANCE_PORT  pid $(cat "$PID_DIR/balance-svc.pid")
  reservation-svc 127.0.0.1:$RESERVATION_PORT  pid $(cat "$PID_DIR/reservation-svc.pid")
  admin token: $STACK_DIR/admin-token (or ADMIN_TOKEN)
  admission key: $ADMISSION_KEY_FILE
  metrics:    http://127.0.0.1:$LOCK_METRICS_PORT/metrics (lock-svc), :$BALANCE_METRICS_PORT (balance-svc), :$RESERVATION_METRICS_PORT (reservation-svc)

  DATABASE_URL=postgresql://postgres@127.0.0.1:$PG_PORT/balance       (balance-svc)
  DATABASE_URL=postgresql://postgres@127.0.0.1:$PG_PORT/reservation   (reservation-svc)
  REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0                            (lock-svc)

  source $env_file   # exports BALANCE_DATABASE_URL, RESERVATION_DATABASE_URL, REDIS_URL
  $PG_BIN/psql -h 127.0.0.1 -p $PG_PORT -U postgres -d balance
  redis-cli -h 127.0.0.1 -p $REDIS_PORT
  $(if ((TLS)); then
        echo "$BUF curl --protocol grpc --cacert $TLS_DIR/ca.pem --cert $TLS_DIR/client.pem --key $TLS_DIR/client-key.pem --list-services https://127.0.0.1:$LOCK_PORT"
    else
        echo "$BUF curl --protocol grpc --http2-prior-knowledge --list-services http://127.0.0.1:$LOCK_PORT"
    fi)
Stop with deploy/local/down.sh (--purge also deletes $STACK_DIR).
EOF
}

main() {
    local deps=1
    build=1
    while (($# > 0)); do
        case "$1" in
        -h | --help)
            usage
            return 0
            ;;
        --no-deps) deps=0 ;;
        --no-build) build=0 ;;
        --ha) HA=1 ;;
        --tls) TLS=1 ;;
        *)
            usage >&2
            return 2
            ;;
        esac
        shift
    done
    if ((deps)); then
        "$HERE/deps.sh"
    fi
    find_pg_bin
    setup_pg_user
    setup_paths
    # A stack started with --ha stays one: STACK_DIR/ha says so (down.sh --purge forgets it).
    if ((HA)); then
        : >"$STACK_DIR/ha"
    elif [[ -f "$STACK_DIR/ha" ]]; then
        HA=1
        log "this stack was started with --ha: two instances of each service"
    fi
    if ((HA)); then
        PORT_VARS+=("${HA_PORT_VARS[@]}")
    fi
    # Likewise --tls (STACK_DIR/tls holds its CA and certificates).
    TLS_DIR="$STACK_DIR/tls"
    if ((TLS)); then
        "$HERE/certs.sh" "$TLS_DIR" lock-svc balance-svc reservation-svc --client client |
            sed 's/^certs.sh: /up.sh: --tls: /'
    elif [[ -s "$TLS_DIR/ca.pem" ]]; then
        TLS=1
        log "this stack was started with --tls: mTLS everywhere (certificates in $TLS_DIR)"
    fi
    check_ports

    pg_up
    redis_up
    if ((HA)); then
        redis_replica_up
        sentinels_up
    fi
    start_services
    write_env
}

main "$@"
