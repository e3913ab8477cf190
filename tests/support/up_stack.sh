# shellcheck shell=bash
# tests/support/up_stack.sh: a throwaway stack from deploy/local/up.sh for a
# test script. Sourced after the script has set ROOT (the source tree),
# BUILD_DIR (the services' build tree) and its say and die.
#
# up_stack_start NAME EXTRA [UP_ARG...]: makes a temp STACK_DIR named after
# NAME, picks free ports for every port variable up.sh reads (the --ha ones
# too) plus EXTRA more for the test itself (in UP_STACK_EXTRA_PORTS), and
# starts up.sh --no-deps --no-build UP_ARG... with the services in BUILD_DIR.
# On exit the stack goes (down.sh) and STACK_DIR is removed unless KEEP is
# set; a script that starts more defines up_stack_on_exit, run first.

UP_STACK_EXTRA_PORTS=()

up_stack_cleanup() {
    if declare -F up_stack_on_exit >/dev/null; then
        up_stack_on_exit || true
    fi
    "$ROOT/deploy/local/down.sh" >/dev/null 2>&1 || true
    if [[ -n ${KEEP:-} ]]; then
        say "kept $STACK_DIR"
    else
        rm -rf "$STACK_DIR"
    fi
}

up_stack_start() {
    local name=$1 extra=$2 n ports
    shift 2
    STACK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/$name.XXXXXX")
    chmod 755 "$STACK_DIR" # PostgreSQL runs as another user when we are root
    export STACK_DIR
    trap up_stack_cleanup EXIT
    n=$((18 + extra))
    mapfile -t ports < <("$BUILD_DIR/tests/integration/conformance" --free-ports "$n")
    ((${#ports[@]} == n)) || die "no free ports"
    export PG_PORT=${ports[0]} REDIS_PORT=${ports[1]} LOCK_PORT=${ports[2]}
    export BALANCE_PORT=${ports[3]} RESERVATION_PORT=${ports[4]}
    export LOCK_METRICS_PORT=${ports[5]} BALANCE_METRICS_PORT=${ports[6]}
    export RESERVATION_METRICS_PORT=${ports[7]}
    # Read by up.sh --ha only: the second instances, the Redis replica, the Sentinels.
    export LOCK_PORT_2=${ports[8]} BALANCE_PORT_2=${ports[9]} RESERVATION_PORT_2=${ports[10]}
    export LOCK_METRICS_PORT_2=${ports[11]} BALANCE_METRICS_PORT_2=${ports[12]}
    export RESERVATION_METRICS_PORT_2=${ports[13]} REDIS_REPLICA_PORT=${ports[14]}
    export SENTINEL_PORT_1=${ports[15]} SENTINEL_PORT_2=${ports[16]} SENTINEL_PORT_3=${ports[17]}
    UP_STACK_EXTRA_PORTS=("${ports[@]:18}")
    say "starting the stack in $STACK_DIR (PostgreSQL $PG_PORT, Redis $REDIS_PORT, services $LOCK_PORT-$RESERVATION_PORT)"
    BUILD_DIR=$BUILD_DIR LOG_LEVEL=warn "$ROOT/deploy/local/up.sh" --no-deps --no-build "$@" \
        >"$STACK_DIR/up.out" 2>&1 || {
        cat "$STACK_DIR/up.out" >&2
        die "up.sh failed"
    }
}
