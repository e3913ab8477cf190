#!/usr/bin/env bash
# tls_test.sh BUILD_DIR: deploy/local/up.sh --tls from the outside. Starts a
# throwaway stack with mTLS everywhere (services built in BUILD_DIR, free
# ports) and checks with buf curl, a client that knows nothing of our code:
# with the client certificate every service answers (and a hold paid through
# reservation-svc proves the services reach each other over mTLS); plaintext,
# TLS without a client certificate, a certificate of another CA, and a client
# that does not trust the stack's CA are refused; the keys and STACK_DIR/env
# are mode 0600. Then the conformance suite's fault-free scenarios run
# against it in external mode, over mTLS.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD_DIR=$(cd "${1:?usage: tls_test.sh BUILD_DIR}" && pwd)
BUF=${BUF:-$ROOT/.tools/node_modules/.bin/buf}

say() { echo "tls_test.sh: $*"; }
die() {
    echo "tls_test.sh: FAIL: $*" >&2
    exit 1
}

# shellcheck source=../support/up_stack.sh source-path=SCRIPTDIR
. "$ROOT/tests/support/up_stack.sh"
up_stack_start tls-test 0 --tls
# shellcheck disable=SC1091
. "$STACK_DIR/env"
T=$STACK_DIR/tls
[[ "$TLS_CA_FILE" == "$T/ca.pem" && "$TLS_CERT_FILE" == "$T/client.pem" ]] ||
    die "STACK_DIR/env does not export the client's TLS files"

for f in "$STACK_DIR/env" "$T"/*-key.pem; do
    mode=$(stat -c %a "$f")
    [[ "$mode" == 600 ]] || die "$f has mode $mode, want 600 (it holds a secret)"
done

mtls=(--protocol grpc --cacert "$T/ca.pem" --cert "$T/client.pem" --key "$T/client-key.pem")
# The health schema from a file, not from reflection: a refused connection then
# shows as the transport's error, not as "failed to find service".
health() { "$BUF" curl --schema /usr/share/grpc-proto/grpc/health/v1/health.proto "$@" -d '{}' 2>&1; }

for port in "$LOCK_PORT" "$BALANCE_PORT" "$RESERVATION_PORT"; do
    out=$(health "${mtls[@]}" "https://127.0.0.1:$port/grpc.health.v1.Health/Check")
    grep -q '"SERVING"' <<<"$out" || die "127.0.0.1:$port over mTLS: $out"
done
say "all three services answer over mTLS"

# refused WHAT ARGS...: the health call must fail without an answer.
refused() {
    local what=$1 out
    shift
    if out=$(health "$@"); then
        die "$what was answered: $out"
    fi
    grep -q '"SERVING"' <<<"$out" && die "$what was answered: $out"
    say "refused as it should be: $what (${out:0:120})"
}
for port in "$LOCK_PORT" "$BALANCE_PORT" "$RESERVATION_PORT"; do
    refused "plaintext to 127.0.0.1:$port" --protocol grpc --http2-prior-knowledge \
        "http://127.0.0.1:$port/grpc.health.v1.Health/Check"
    refused "TLS without a client certificate to 127.0.0.1:$port" --protocol grpc \
        --cacert "$T/ca.pem" "https://127.0.0.1:$port/grpc.health.v1.Health/Check"
done
other=$STACK_DIR/other-ca
"$ROOT/deploy/local/certs.sh" "$other" --client client >/dev/null
refused "a certificate of another CA" --protocol grpc --cacert "$T/ca.pem" \
    --cert "$other/client.pem" --key "$other/client-key.pem" \
    "https://127.0.0.1:$RESERVATION_PORT/grpc.health.v1.Health/Check"
refused "a client that does not trust the stack's CA" --protocol grpc --cacert "$other/ca.pem" \
    --cert "$other/client.pem" --key "$other/client-key.pem" \
    "https://127.0.0.1:$RESERVATION_PORT/grpc.health.v1.Health/Check"

# Service to service over mTLS: a hold (lock-svc) paid (balance-svc) through reservation-svc.
call() { "$BUF" curl "${mtls[@]}" -d "$2" "https://127.0.0.1:$RESERVATION_PORT/reservation.v1.ReservationService/$1"; }
schedule=$("$BUF" curl "${mtls[@]}" -d '{}' \
    "https://127.0.0.1:$RESERVATION_PORT/reservation.v1.ReservationService/ListConcerts" |
    tee "$STACK_DIR/concerts.json" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["concerts"][0]["schedules"][0]["id"])')
hold=$(call HoldSeats "{\"user_id\":2,\"schedule_id\":$schedule,\"seat_numbers\":[49]}")
rid=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["reservation"]["id"])' <<<"$hold")
paid=$(call PayReservation "{\"user_id\":2,\"reservation_id\":$rid,\"idempotency_key\":\"tls-test-$rid\"}")
grep -q '"CONFIRMED"\|RESERVATION_STATUS_CONFIRMED' <<<"$paid" || die "the payment over mTLS: $paid"
say "a hold paid through reservation-svc, balance-svc and lock-svc over mTLS"

"$BUILD_DIR/tests/integration/conformance" --results "$BUILD_DIR/conformance-results.tsv" \
    seat_storm balance_storm double_pay lock_storm ||
    die "the conformance suite against the --tls stack failed"
say "PASS"
