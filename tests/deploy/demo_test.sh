#!/usr/bin/env bash
# demo_test.sh BUILD_DIR: deploy/local/demo.sh against a stack that
# deploy/local/up.sh started (services from BUILD_DIR, free ports, a temp
# STACK_DIR), run twice, then the databases checked for what the sale left:
# user A's balance back at its top-up, both reservations cancelled, a REFUND
# ledger row for A, B charged nothing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD_DIR=$(cd "${1:?usage: demo_test.sh BUILD_DIR}" && pwd)

say() { echo "demo_test.sh: $*"; }
die() {
    echo "demo_test.sh: $*" >&2
    exit 1
}

# shellcheck source=../support/up_stack.sh source-path=SCRIPTDIR
. "$ROOT/tests/support/up_stack.sh"
up_stack_start demo-test 0

PSQL=$(command -v psql || find /usr/lib/postgresql -path '*/bin/psql' | sort -V | tail -n 1)
[[ -x "$PSQL" ]] || die "psql not found (package postgresql-client)"
# sql DB QUERY: one value (or unaligned rows) from database DB.
sql() {
    "$PSQL" -X -q -t -A -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$1" -c "$2"
}

# Runs the demo with nothing but STACK_DIR: the ports reach it only through
# STACK_DIR/env. Prints A's and B's ids from its last line.
run_demo() {
    local out=$STACK_DIR/demo-$1.out
    env -u PG_PORT -u REDIS_PORT -u LOCK_PORT -u BALANCE_PORT -u RESERVATION_PORT \
        "$ROOT/deploy/local/demo.sh" >"$out" 2>&1 ||
        { cat "$out" >&2; die "demo.sh failed (run $1)"; }
    sed -n 's/^The sale went through: user A \([0-9]*\) (reservation \([0-9]*\).*user B \([0-9]*\) (reservation \([0-9]*\).*/\1 \2 \3 \4/p' "$out"
}

check_run() {
    local run=$1 a=$2 ra=$3 b=$4 rb=$5 got
    [[ -n "$rb" ]] || die "run $run: demo.sh did not print its users and reservations"
    got=$(sql balance "SELECT balance FROM accounts WHERE user_id = $a")
    [[ "$got" == 100000 ]] || die "run $run: user A's balance is '$got', expected 100000"
    got=$(sql balance "SELECT balance FROM accounts WHERE user_id = $b")
    [[ "$got" == 100000 ]] || die "run $run: user B's balance is '$got', expected 100000"
    # Ledger kinds: 1 top-up, 2 spend, 3 refund.
    got=$(sql balance "SELECT coalesce(sum(CASE kind WHEN 2 THEN -amount ELSE amount END), 0)
                       FROM ledger WHERE user_id = $a")
    [[ "$got" == 100000 ]] || die "run $run: user A's ledger sums to '$got', expected 100000"
    got=$(sql balance "SELECT count(*) FROM ledger WHERE user_id = $a AND kind = 3")
    [[ "$got" == 1 ]] || die "run $run: user A has $got REFUND ledger rows, expected 1"
    # Reservation status 3 is CANCELLED.
    got=$(sql reservation "SELECT string_agg(status::text, ',' ORDER BY id) FROM reservations
                           WHERE id IN ($ra, $rb)")
    [[ "$got" == 3,3 ]] ||
        die "run $run: reservations $ra and $rb are '$got', expected both CANCELLED"
    say "run $run: users $a and $b back at 100000, reservations $ra and $rb CANCELLED, A refunded"
}

say "demo.sh, first run"
read -r a1 ra1 b1 rb1 < <(run_demo 1)
check_run 1 "$a1" "$ra1" "$b1" "$rb1"
say "demo.sh, second run"
read -r a2 ra2 b2 rb2 < <(run_demo 2)
[[ "$a2" != "$a1" ]] || die "the second run reused user $a1"
check_run 2 "$a2" "$ra2" "$b2" "$rb2"

"$ROOT/deploy/local/down.sh" >/dev/null
say "passed"
