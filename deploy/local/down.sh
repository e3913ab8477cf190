#!/usr/bin/env bash
# down.sh: stops the local stack that deploy/local/up.sh started in STACK_DIR,
# gracefully and through its pid files. Safe when nothing runs.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

STACK_DIR=${STACK_DIR:-$ROOT/.stack}
# Seconds to wait for a server to exit before killing it.
STOP_TIMEOUT=${STOP_TIMEOUT:-30}

usage() {
    cat <<EOF
Usage: deploy/local/down.sh [--purge] [--help]

Stops the services, Redis and PostgreSQL started by deploy/local/up.sh, waits
until they have exited and removes their pid files.

  --purge   then delete STACK_DIR (all data, logs and settings)

Environment:
  STACK_DIR   the stack's folder (default: <repo>/.stack)
              now: $STACK_DIR
  PG_BIN      PostgreSQL binaries (default: newest /usr/lib/postgresql/<ver>/bin)
EOF
}

log() { echo "down.sh: $*"; }
die() {
    echo "down.sh: $*" >&2
    exit 1
}

# proc_is PID COMM: true when PID runs (a zombie does not count: it has exited
# but was not reaped yet) and its command name starts with COMM.
proc_is() {
    local stat comm
    read -r stat comm < <(ps -o stat=,comm= -p "$1" 2>/dev/null) || return 1
    [[ "$stat" != Z* && "$comm" == "$2"* ]]
}

# live_pid FILE COMM: prints the pid in FILE when that process runs and is COMM
# (a stale pid file may name a pid that was reused by something else).
live_pid() {
    local pid
    pid=$(head -n 1 "$1" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] && proc_is "$pid" "$2" || return 1
    echo "$pid"
}

# wait_gone NAME PID COMM: waits up to STOP_TIMEOUT for PID to exit, then
# kills it if it is still the same program.
wait_gone() {
    local name=$1 pid=$2 comm=$3 i
    for ((i = 0; i < STOP_TIMEOUT * 5; i++)); do
        proc_is "$pid" "$comm" || return 0
        sleep 0.2
    done
    log "$name (pid $pid) still runs after ${STOP_TIMEOUT}s: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
}

# Runs a command as the owner of the PostgreSQL data folder (PostgreSQL
# refuses root; up.sh runs it as 'postgres' when started as root).
as_pg() {
    local owner
    owner=$(stat -c %U "$PG_DATA")
    if [[ $(id -u) -eq 0 && "$owner" != root ]]; then
        (cd / && runuser -u "$owner" -- "$@")
    else
        "$@"
    fi
}

# Stops PostgreSQL with a fast shutdown (rolls back open transactions, then
# exits cleanly): through pg_ctl, which knows whether the cluster runs; without
# the binaries, by SIGINT (the same fast shutdown) to the pid in postmaster.pid.
pg_down() {
    local pid_file="$PID_DIR/postgres.pid" pid
    [[ -f "$PG_DATA/PG_VERSION" ]] || {
        rm -f "$pid_file"
        return 0
    }
    if [[ -z "${PG_BIN:-}" ]]; then
        PG_BIN=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/pg_ctl' \
            2>/dev/null | sort -V | tail -n 1)
        PG_BIN=${PG_BIN%/pg_ctl}
    fi

    if [[ -x "$PG_BIN/pg_ctl" ]]; then
        if as_pg "$PG_BIN/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1; then
            pid=$(head -n 1 "$PG_DATA/postmaster.pid")
            log "stopping PostgreSQL (pid $pid)"
            if ! as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t "$STOP_TIMEOUT" \
                >/dev/null; then
                log "fast shutdown timed out: immediate shutdown"
                as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m immediate -w >/dev/null || true
            fi
        fi
    elif pid=$(live_pid "$PG_DATA/postmaster.pid" postgres); then
        log "stopping PostgreSQL (pid $pid) without pg_ctl"
        kill -INT "$pid"
        wait_gone PostgreSQL "$pid" postgres
    fi
    rm -f "$pid_file"
}

# Stops Redis with SIGTERM: with persistence off (up.sh's redis.conf) that is
# the same as SHUTDOWN NOSAVE, and needs no port.
redis_down() {
    local pid_file="$PID_DIR/redis.pid" pid
    if pid=$(live_pid "$pid_file" redis-server); then
        log "stopping Redis (pid $pid)"
        kill -TERM "$pid"
        wait_gone Redis "$pid" redis-server
    fi
    rm -f "$pid_file"
}

# The services stop first: they use Redis and PostgreSQL until they exit.
# SIGTERM lets in-flight calls finish (each service has a grace period).
stop_services() {
    local name pid bin
    # NAME-2: the second instance up.sh --ha starts; it runs NAME's binary.
    for name in reservation-svc-2 reservation-svc balance-svc-2 balance-svc lock-svc-2 lock-svc; do
        bin=${name%-2}
        if pid=$(live_pid "$PID_DIR/$name.pid" "${bin:0:15}"); then
            log "stopping $name (pid $pid)"
            kill -TERM "$pid"
            wait_gone "$name" "$pid" "${bin:0:15}"
        fi
        rm -f "$PID_DIR/$name.pid" "$PID_DIR/$name.binary"
    done
}

# With --ha: the Sentinels and the Redis replica, before the primary.
redis_ha_down() {
    local i pid
    for i in 1 2 3; do
        if pid=$(live_pid "$PID_DIR/sentinel-$i.pid" redis-s); then
            log "stopping Sentinel $i (pid $pid)"
            kill -TERM "$pid"
            wait_gone "Sentinel $i" "$pid" redis-s
        fi
        rm -f "$PID_DIR/sentinel-$i.pid"
    done
    if pid=$(live_pid "$PID_DIR/redis-replica.pid" redis-server); then
        log "stopping the Redis replica (pid $pid)"
        kill -TERM "$pid"
        wait_gone "the Redis replica" "$pid" redis-server
    fi
    rm -f "$PID_DIR/redis-replica.pid"
}

# Deletes STACK_DIR, refusing paths that cannot be a stack folder.
purge() {
    case "$STACK_DIR" in
    / | "$ROOT" | "${HOME:-/}" | "$(dirname "$ROOT")")
        die "refusing to delete $STACK_DIR"
        ;;
    esac
    log "deleting $STACK_DIR"
    rm -rf -- "$STACK_DIR"
}

main() {
    local do_purge=0
    while (($# > 0)); do
        case "$1" in
        -h | --help)
            usage
            return 0
            ;;
        --purge) do_purge=1 ;;
        *)
            usage >&2
            return 2
            ;;
        esac
        shift
    done

    if [[ ! -d "$STACK_DIR" ]]; then
        log "nothing to stop: $STACK_DIR does not exist"
        return 0
    fi
    STACK_DIR=$(cd "$STACK_DIR" && pwd)
    PID_DIR="$STACK_DIR/pids"
    PG_DATA="$STACK_DIR/data/postgres"

    stop_services
    redis_ha_down
    redis_down
    pg_down
    log "stopped"

    if ((do_purge)); then
        purge
    fi
}

main "$@"
