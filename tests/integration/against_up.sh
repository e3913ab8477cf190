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

# shellcheck source=../support/up_stack.sh source-path=SCRIPTDIR
. "$ROOT/tests/support/up_stack.sh"
up_args=()
if [[ ${HA:-0} == 1 ]]; then
    up_args+=(--ha)
fi
up_stack_start against-up 0 "${up_args[@]}"
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
