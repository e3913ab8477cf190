#!/usr/bin/env bash
# demo.sh: walks one whole sale through a stack started by deploy/local/up.sh,
# printing every call and its answer: a concert with a waiting room, two fresh
# users, admission, hold, payment, a second user admitted, cancel, refund.
# Reaches the stack only through STACK_DIR/env, so it works on any ports.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

STACK_DIR=${STACK_DIR:-$ROOT/.stack}
BUF=${BUF:-$ROOT/.tools/node_modules/.bin/buf}
# Seconds to wait for user B's admission to arrive on its watch.
WATCH_TIMEOUT=${WATCH_TIMEOUT:-30}
# Seconds any other call may take: a service that hangs is an unexpected answer too.
CALL_TIMEOUT=${CALL_TIMEOUT:-15}

SEAT_PRICE=15000
TOP_UP=100000

usage() {
    cat <<EOF
Usage: deploy/local/demo.sh [--help]

Walks one whole sale through the running local stack and prints each call
(method and request JSON) and its answer:

  1. creates a concert (admin token from STACK_DIR/env) with one schedule
     behind a waiting room of one and one without a waiting room
  2. tops up two fresh users A and B (ids from the clock: reruns never collide)
  3. A enters the waiting room (admitted), B enters (first in line) and
     watches its place in the background (WatchWaitingRoom streams)
  4. A holds 2 seats with its admission token and pays
  5. paying ended A's admission: B's watch brings B's admission token
  6. B holds a seat with it, then cancels (the hold is freed, nothing charged)
  7. A cancels its confirmed reservation before the show (refunded in full)
  8. A's balance and ledger (ListTransactions)

Exits non-zero with a message naming the step on any unexpected answer.
Start the stack first: deploy/local/up.sh && deploy/local/demo.sh

Environment:
  STACK_DIR      the stack's folder; its env file says where everything is
                 (default: <repo>/.stack; now $STACK_DIR)
  BUF            buf, the gRPC client (default: <repo>/.tools/node_modules/.bin/buf,
                 installed by deploy/local/deps.sh)
  WATCH_TIMEOUT  seconds to wait for B's admission (default 30)
  CALL_TIMEOUT   seconds any other call may take (default 15)
EOF
}

die() {
    echo "demo.sh: $*" >&2
    exit 1
}

step() { printf '\n== %s\n' "$*"; }

# call ADDR METHOD JSON [HEADER...]: calls METHOD (service/method) on ADDR,
# prints the call and its answer, and leaves the answer in ANSWER. Dies when
# the call does not answer OK. An authorization header is shown masked.
call() {
    local addr=$1 method=$2 body=$3 shown=() args=() h
    shift 3
    for h in "$@"; do
        args+=(-H "$h")
        case $h in
        authorization:*) shown+=("-H 'authorization: Bearer <admin token>'") ;;
        *) shown+=("-H '$h'") ;;
        esac
    done
    printf '\n> %s %s%s\n' "${method#*/}" "$body" "${shown[*]:+ ${shown[*]}}"
    if ! ANSWER=$("$BUF" curl --protocol grpc --http2-prior-knowledge --timeout "${CALL_TIMEOUT}s" "${args[@]}" \
        -d "$body" "http://$addr/$method" 2>&1); then
        printf '%s\n' "$ANSWER" | sed 's/^/  /'
        die "${method#*/} did not answer OK (above)"
    fi
    printf '%s\n' "$ANSWER" | sed 's/^/  /'
}

# val NAME [N]: the N-th (default first) string value "NAME": "value" in stdin
# (buf prints int64 as strings; a zero value is left out).
val() {
    { grep -o "\"$1\": *\"[^\"]*\"" || true; } | sed -n "${2:-1}p" | cut -d '"' -f 4
}

# expect WHAT GOT WANT: dies unless GOT equals WANT.
expect() {
    [[ "$2" == "$3" ]] || die "unexpected answer: $1 is '$2', expected '$3'"
}

# Reads STACK_DIR/env, the only way this script learns where the stack is.
load_env() {
    local env_file="$STACK_DIR/env"
    [[ -r "$env_file" ]] ||
        die "no $env_file: start the stack first (deploy/local/up.sh), or set STACK_DIR"
    # shellcheck disable=SC1090
    . "$env_file"
    local v
    for v in BALANCE_ADDR RESERVATION_ADDR ADMIN_TOKEN; do
        [[ -n "${!v:-}" ]] || die "$env_file does not set $v; run deploy/local/up.sh again"
    done
    [[ -x "$BUF" ]] || die "buf not found at $BUF (deploy/local/deps.sh installs it)"
    # up.sh --ha lists two instances: buf curl takes one address, so the calls go to the
    # first and the watch to the last (another instance than the one the user entered on).
    WATCH_ADDR=${RESERVATION_ADDR##*,}
    RESERVATION_ADDR=${RESERVATION_ADDR%%,*}
    BALANCE_ADDR=${BALANCE_ADDR%%,*}
}

# The background watch and its output, cleaned up on exit whatever happens.
WATCH_PID=
WATCH_OUT=
cleanup() {
    [[ -z "$WATCH_PID" ]] || kill "$WATCH_PID" 2>/dev/null || true
    [[ -z "$WATCH_OUT" ]] || rm -f "$WATCH_OUT"
}

main() {
    trap cleanup EXIT
    case "${1:-}" in
    "") ;;
    -h | --help)
        usage
        return 0
        ;;
    *)
        usage >&2
        return 2
        ;;
    esac
    load_env

    local r=reservation.v1.ReservationService b=balance.v1.BalanceService
    local now user_a user_b starts
    now=$(date +%s%3N)
    # Fresh users each run: the clock in milliseconds, times 10, plus 1 or 2.
    user_a=$((now * 10 + 1)) user_b=$((now * 10 + 2))
    # The show is in 30 days, so a confirmed reservation may still be cancelled.
    starts=$((now + 30 * 24 * 3600 * 1000))

    step "1. a concert: schedule 1 behind a waiting room of one, schedule 2 without"
    call "$RESERVATION_ADDR" "$r/CreateConcert" \
        "{\"title\":\"Demo sale $now\",\"schedules\":[{\"starts_at_ms\":$starts,\"seat_count\":5,\"seat_price\":$SEAT_PRICE,\"waiting_room_limit\":1},{\"starts_at_ms\":$((starts + 86400000)),\"seat_count\":5,\"seat_price\":$SEAT_PRICE}]}" \
        "authorization: Bearer $ADMIN_TOKEN"
    local room open
    room=$(val id 2 <<<"$ANSWER") open=$(val id 3 <<<"$ANSWER")
    [[ -n "$room" && -n "$open" ]] || die "unexpected answer: CreateConcert named no schedules"
    grep -q '"waitingRoomLimit": *1' <<<"$ANSWER" ||
        die "unexpected answer: the first schedule has no waiting room"
    echo "schedule $room has the waiting room; schedule $open is open to all (HoldSeats needs no token there)"

    step "2. top up user A ($user_a) and user B ($user_b)"
    local u
    for u in "$user_a" "$user_b"; do
        call "$BALANCE_ADDR" "$b/TopUp" \
            "{\"user_id\":$u,\"amount\":$TOP_UP,\"idempotency_key\":\"demo-topup-$u\"}"
        expect "user $u's balance" "$(val balance <<<"$ANSWER")" "$TOP_UP"
    done

    step "3. A enters the waiting room (admitted), B enters (first in line)"
    call "$RESERVATION_ADDR" "$r/EnterWaitingRoom" "{\"user_id\":$user_a,\"schedule_id\":$room}"
    local token_a ticket_b
    token_a=$(val admissionToken <<<"$ANSWER")
    [[ -n "$token_a" ]] || die "unexpected answer: A was not admitted (no admissionToken)"
    call "$RESERVATION_ADDR" "$r/EnterWaitingRoom" "{\"user_id\":$user_b,\"schedule_id\":$room}"
    expect "B's position" "$(val position <<<"$ANSWER")" 1
    ticket_b=$(val ticket <<<"$ANSWER")

    step "B watches its place in the background (server streaming)"
    local watch_out
    watch_out=$(mktemp "${TMPDIR:-/tmp}/demo-watch.XXXXXX")
    WATCH_OUT=$watch_out
    printf '\n> %s %s  (in the background)\n' WatchWaitingRoom "{\"ticket\":\"$ticket_b\"}"
    "$BUF" curl --protocol grpc --http2-prior-knowledge --timeout "${WATCH_TIMEOUT}s" \
        -d "{\"ticket\":\"$ticket_b\"}" "http://$WATCH_ADDR/$r/WatchWaitingRoom" \
        >"$watch_out" 2>&1 &
    WATCH_PID=$!
    local i
    for ((i = 0; i < 50; i++)); do
        grep -q '"position"' "$watch_out" && break
        kill -0 "$WATCH_PID" 2>/dev/null || break
        sleep 0.2
    done
    sed 's/^/  /' "$watch_out"
    grep -q '"position": *"1"' "$watch_out" ||
        die "unexpected answer: B's watch did not report position 1 (above)"

    step "4. A holds seats 1 and 2 with its admission token, then pays"
    call "$RESERVATION_ADDR" "$r/HoldSeats" \
        "{\"user_id\":$user_a,\"schedule_id\":$room,\"seat_numbers\":[1,2],\"admission_token\":\"$token_a\"}"
    expect "A's reservation" "$(val status <<<"$ANSWER")" RESERVATION_STATUS_HELD
    local rid_a rid_b
    rid_a=$(val id <<<"$ANSWER")
    call "$RESERVATION_ADDR" "$r/PayReservation" \
        "{\"reservation_id\":$rid_a,\"user_id\":$user_a,\"idempotency_key\":\"demo-pay-$rid_a\"}"
    expect "A's reservation" "$(val status <<<"$ANSWER")" RESERVATION_STATUS_CONFIRMED
    expect "A's balance" "$(val balance <<<"$ANSWER")" $((TOP_UP - 2 * SEAT_PRICE))

    step "5. paying ended A's admission: B's watch brings B's admission"
    local watch_status=0
    wait "$WATCH_PID" || watch_status=$?
    WATCH_PID=
    sed 's/^/  /' "$watch_out"
    ((watch_status == 0)) || die "B's watch ended with status $watch_status (above)"
    local token_b
    token_b=$(val admissionToken <"$watch_out")
    [[ -n "$token_b" ]] || die "unexpected answer: B's watch ended without an admission token"

    step "6. B holds seat 3 with its token, then cancels: the hold is freed"
    call "$RESERVATION_ADDR" "$r/HoldSeats" \
        "{\"user_id\":$user_b,\"schedule_id\":$room,\"seat_numbers\":[3],\"admission_token\":\"$token_b\"}"
    expect "B's reservation" "$(val status <<<"$ANSWER")" RESERVATION_STATUS_HELD
    rid_b=$(val id <<<"$ANSWER")
    call "$RESERVATION_ADDR" "$r/CancelReservation" "{\"reservation_id\":$rid_b,\"user_id\":$user_b}"
    expect "B's reservation" "$(val status <<<"$ANSWER")" RESERVATION_STATUS_CANCELLED
    call "$RESERVATION_ADDR" "$r/ListSeats" "{\"schedule_id\":$room}"
    grep -A2 '"number": *3,' <<<"$ANSWER" | grep -q SEAT_STATUS_AVAILABLE ||
        die "unexpected answer: seat 3 is not available after B cancelled"
    call "$RESERVATION_ADDR" "$r/LeaveWaitingRoom" "{\"ticket\":\"$ticket_b\"}"
    call "$BALANCE_ADDR" "$b/GetBalance" "{\"user_id\":$user_b}"
    expect "B's balance" "$(val balance <<<"$ANSWER")" "$TOP_UP"

    step "7. A cancels its confirmed reservation before the show: refunded in full"
    call "$RESERVATION_ADDR" "$r/CancelReservation" "{\"reservation_id\":$rid_a,\"user_id\":$user_a}"
    expect "A's reservation" "$(val status <<<"$ANSWER")" RESERVATION_STATUS_CANCELLED

    step "8. A's balance and ledger"
    call "$BALANCE_ADDR" "$b/GetBalance" "{\"user_id\":$user_a}"
    expect "A's balance" "$(val balance <<<"$ANSWER")" "$TOP_UP"
    call "$BALANCE_ADDR" "$b/ListTransactions" "{\"user_id\":$user_a,\"page_size\":10}"
    local kinds
    kinds=$(val kind 1 <<<"$ANSWER"),$(val kind 2 <<<"$ANSWER"),$(val kind 3 <<<"$ANSWER")
    expect "A's ledger, newest first" "$kinds" \
        TRANSACTION_KIND_REFUND,TRANSACTION_KIND_SPEND,TRANSACTION_KIND_TOP_UP

    printf '\nThe sale went through: user A %s (reservation %s, paid, refunded), user B %s (reservation %s, cancelled).\n' \
        "$user_a" "$rid_a" "$user_b" "$rid_b"
}

main "$@"
