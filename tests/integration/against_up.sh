#!/usr/bin/env bash
# against_up.sh BUILD_DIR [SCENARIO...]: the conformance suite in external mode, pointed at
# a stack that deploy/local/up.sh started (with the services built in
# BUILD_DIR, on free ports, in a temp STACK_DIR). Passes when the suite passes
# AND every row the stack held before the run (its demo concert, users and
# their ledgers) is still there unchanged afterwards.
# With HA=1 the stack is up.sh --ha: two instances of each service, a Redis
# replica and three Sentinels; the suite's clients spread calls over both.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD_DIR=$(cd "${1:?usage: against_up.sh BUILD_DIR}" && pwd)
shift
CONFORMANCE=$BUILD_DIR/tests/integration/conformance

say() { echo "against_up.sh: $*"; }
die() {
    echo "against_up.sh: $*" >&2
    exit 1
}

STACK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/against-up.XXXXXX")
chmod 755 "$STACK_DIR" # PostgreSQL runs as another user when we are root
export STACK_DIR
cleanup() {
    "$ROOT/deploy/local/down.sh" >/dev/null 2>&1 || true
    rm -rf "$STACK_DIR"
}
trap cleanup EXIT

mapfile -t ports < <("$CONFORMANCE" --free-ports 18)
((${#ports[@]} == 18)) || die "no free ports"
export PG_PORT=${ports[0]} REDIS_PORT=${ports[1]} LOCK_PORT=${ports[2]}
export BALANCE_PORT=${ports[3]} RESERVATION_PORT=${ports[4]}
export LOCK_METRICS_PORT=${ports[5]} BALANCE_METRICS_PORT=${ports[6]}
export RESERVATION_METRICS_PORT=${ports[7]}
# Used with HA=1 (up.sh --ha): the second instances, the Redis replica, the Sentinels.
export LOCK_PORT_2=${ports[8]} BALANCE_PORT_2=${ports[9]} RESERVATION_PORT_2=${ports[10]}
export LOCK_METRICS_PORT_2=${ports[11]} BALANCE_METRICS_PORT_2=${ports[12]}
export RESERVATION_METRICS_PORT_2=${ports[13]} REDIS_REPLICA_PORT=${ports[14]}
export SENTINEL_PORT_1=${ports[15]} SENTINEL_PORT_2=${ports[16]} SENTINEL_PORT_3=${ports[17]}
up_args=(--no-deps --no-build)
if [[ ${HA:-0} == 1 ]]; then
    up_args+=(--ha)
fi
say "starting the stack in $STACK_DIR (PostgreSQL $PG_PORT, Redis $REDIS_PORT, services $LOCK_PORT-$RESERVATION_PORT)"
BUILD_DIR=$BUILD_DIR LOG_LEVEL=warn "$ROOT/deploy/local/up.sh" "${up_args[@]}" >"$STACK_DIR/up.out" 2>&1 ||
    { cat "$STACK_DIR/up.out" >&2; die "up.sh failed"; }
# shellcheck disable=SC1091
. "$STACK_DIR/env"

PSQL=$(command -v psql || find /usr/lib/postgresql -path '*/bin/psql' | sort -V | tail -n 1)
[[ -x "$PSQL" ]] || die "psql not found (package postgresql-client)"

# Every row of every table of both databases, one text line each, sorted.
snapshot() {
    local db table
    for db in reservation balance; do
        for table in $("$PSQL" -X -q -t -A -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$db" \
            -c "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"); do
            "$PSQL" -X -q -t -A -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$db" \
                -c "SELECT '$db.$table ' || t::text FROM $table t"
        done
    done | LC_ALL=C sort
}

snapshot >"$STACK_DIR/before.txt"
demo_users=$(grep -c '^balance.accounts ' "$STACK_DIR/before.txt" || true)
demo_concerts=$(grep -c '^reservation.concerts ' "$STACK_DIR/before.txt" || true)
((demo_users > 0 && demo_concerts > 0)) || die "up.sh seeded no demo data"
say "demo data: $(wc -l <"$STACK_DIR/before.txt") rows ($demo_concerts concerts, $demo_users accounts)"

# By default every scenario that injects no fault (those need an own stack).
if (($# == 0)); then
    mapfile -t scenarios < <("$CONFORMANCE" --list | awk '$2 != "fault" { print $1 }')
    set -- "${scenarios[@]}"
fi
status=0
"$CONFORMANCE" --results "$BUILD_DIR/conformance-results.tsv" "$@" || status=$?
((status == 0)) || say "the suite failed (status $status)"

snapshot >"$STACK_DIR/after.txt"
changed=$(LC_ALL=C comm -23 "$STACK_DIR/before.txt" "$STACK_DIR/after.txt")
if [[ -n "$changed" ]]; then
    echo "$changed" | head -n 20 >&2
    die "rows that were there before the suite were changed or deleted (above)"
fi
say "demo data untouched: all $(wc -l <"$STACK_DIR/before.txt") rows unchanged;" \
    "$(($(wc -l <"$STACK_DIR/after.txt") - $(wc -l <"$STACK_DIR/before.txt"))) rows added by the suite"

"$ROOT/deploy/local/down.sh" >/dev/null
if grep -l -E 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error:' "$STACK_DIR"/logs/*.log 2>/dev/null; then
    die "a sanitizer reported an error in the services' logs (above)"
fi
exit "$status"
