#!/usr/bin/env bash
# prometheus.sh BUILD_DIR: Debian's real Prometheus scrapes a stack that
# deploy/local/up.sh started (the services built in BUILD_DIR, on free ports,
# in a temp STACK_DIR, /metrics on the ports up.sh wrote to STACK_DIR/env).
# The test makes a known number of calls that only it makes (lock-svc
# GetLock, balance-svc GetBalance, reservation-svc ListConcerts, and one
# refused call of each), lets Prometheus scrape, and asks Prometheus's HTTP
# API: every service is up, each count is exactly what it made, the refused
# calls are counted under their code, and each service's own series are
# there. Installs prometheus (deploy/local/deps.sh) when it is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD_DIR=$(cd "${1:?usage: prometheus.sh BUILD_DIR}" && pwd)
BUF=$ROOT/.tools/node_modules/.bin/buf
N_LOCK=5 N_BALANCE=3 N_RESERVATION=4

say() { echo "prometheus.sh: $*"; }
die() {
    echo "prometheus.sh: FAIL: $*" >&2
    exit 1
}

command -v prometheus >/dev/null || "$ROOT/deploy/local/deps.sh" >&2
command -v prometheus >/dev/null || die "prometheus not found after deploy/local/deps.sh"
command -v curl >/dev/null || die "curl not found (package curl)"

# shellcheck source=../support/up_stack.sh source-path=SCRIPTDIR
. "$ROOT/tests/support/up_stack.sh"
prom_pid=""
up_stack_on_exit() {
    [[ -n $prom_pid ]] && kill "$prom_pid" 2>/dev/null && wait "$prom_pid" 2>/dev/null
}
up_stack_start prometheus-test 1
prom_port=${UP_STACK_EXTRA_PORTS[0]}
# shellcheck disable=SC1091
. "$STACK_DIR/env"
for var in LOCK_METRICS_ADDR BALANCE_METRICS_ADDR RESERVATION_METRICS_ADDR; do
    [[ -n ${!var:-} ]] || die "up.sh wrote no $var into $STACK_DIR/env"
done

# The calls only this test makes, and one refusal each (a key, user or concert that breaks a rule).
call() { "$BUF" curl --protocol grpc --http2-prior-knowledge -d "$2" "http://$1" >/dev/null 2>&1; }
for ((i = 0; i < N_LOCK; i++)); do
    call "$LOCK_ADDR/lock.v1.LockService/GetLock" "{\"key\":\"prometheus-test-$i\"}" ||
        die "GetLock failed"
done
for ((i = 0; i < N_BALANCE; i++)); do
    call "$BALANCE_ADDR/balance.v1.BalanceService/GetBalance" '{"user_id":1}' ||
        die "GetBalance failed"
done
for ((i = 0; i < N_RESERVATION; i++)); do
    call "$RESERVATION_ADDR/reservation.v1.ReservationService/ListConcerts" '{}' ||
        die "ListConcerts failed"
done
call "$RESERVATION_ADDR/reservation.v1.ReservationService/HoldSeats" \
    '{"user_id":2,"schedule_id":1,"seat_numbers":[50]}' || die "HoldSeats of the demo's seat 50 failed"
! call "$LOCK_ADDR/lock.v1.LockService/GetLock" '{"key":""}' || die "GetLock of an empty key passed"
! call "$BALANCE_ADDR/balance.v1.BalanceService/GetBalance" '{"user_id":0}' ||
    die "GetBalance of user 0 passed"
! call "$RESERVATION_ADDR/reservation.v1.ReservationService/GetReservation" \
    '{"reservation_id":999999999}' || die "GetReservation of a reservation nobody made passed"

cat >"$STACK_DIR/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: lock-svc
    static_configs: [{targets: ["$LOCK_METRICS_ADDR"]}]
  - job_name: balance-svc
    static_configs: [{targets: ["$BALANCE_METRICS_ADDR"]}]
  - job_name: reservation-svc
    static_configs: [{targets: ["$RESERVATION_METRICS_ADDR"]}]
YAML
say "starting prometheus on 127.0.0.1:$prom_port ($(prometheus --version 2>&1 | head -n 1))"
prometheus --config.file="$STACK_DIR/prometheus.yml" --storage.tsdb.path="$STACK_DIR/prometheus" \
    --web.listen-address="127.0.0.1:$prom_port" >"$STACK_DIR/prometheus.log" 2>&1 &
prom_pid=$!

# query PROMQL: the first result's value ("" when there is none).
query() {
    curl -s --get --data-urlencode "query=$1" "http://127.0.0.1:$prom_port/api/v1/query" |
        python3 -c 'import json, sys
r = json.load(sys.stdin)["data"]["result"]
print(r[0]["value"][1] if r else "")' 2>/dev/null || true
}

# expect PROMQL WANT WHAT: waits up to 30 s for the query to give WANT.
expect() {
    local got=""
    for _ in $(seq 60); do
        got=$(query "$1")
        [[ $got == "$2" ]] && {
            say "ok: $3: $1 = $got"
            return 0
        }
        kill -0 "$prom_pid" 2>/dev/null || {
            tail -n 20 "$STACK_DIR/prometheus.log" >&2
            die "prometheus exited"
        }
        sleep 0.5
    done
    die "$3: $1 is '${got}', want $2"
}

expect 'count(up == 1)' 3 "every service is up"
expect 'sum(up{job=~"lock-svc|balance-svc|reservation-svc"})' 3 "the three jobs answer"
expect 'sum(grpc_server_handled_total{job="lock-svc",grpc_method="GetLock",grpc_code="OK"})' \
    "$N_LOCK" "lock-svc counted the GetLocks made"
expect 'sum(grpc_server_started_total{job="lock-svc",grpc_method="GetLock"})' \
    "$((N_LOCK + 1))" "lock-svc counted every GetLock started"
expect 'sum(grpc_server_handled_total{job="lock-svc",grpc_method="GetLock",grpc_code="InvalidArgument"})' \
    1 "the refused GetLock is counted under its code"
expect 'sum(grpc_server_handled_total{job="balance-svc",grpc_service="balance.v1.BalanceService",grpc_method="GetBalance",grpc_code="OK"})' \
    "$((N_BALANCE + 1))" "balance-svc counted the GetBalances made (and reservation-svc's, for the hold)"
expect 'sum(grpc_server_handled_total{job="balance-svc",grpc_method="GetBalance",grpc_code="InvalidArgument"})' \
    1 "the refused GetBalance is counted under its code"
expect 'sum(grpc_server_handled_total{job="reservation-svc",grpc_method="ListConcerts",grpc_code="OK"})' \
    "$N_RESERVATION" "reservation-svc counted the ListConcerts made"
expect 'sum(grpc_server_handled_total{job="reservation-svc",grpc_method="GetReservation",grpc_code="NotFound"})' \
    1 "the refused GetReservation is counted under its code"
expect 'sum(grpc_server_handling_seconds_count{job="reservation-svc",grpc_method="ListConcerts"})' \
    "$N_RESERVATION" "the latency histogram has every ListConcerts"
# The hold made above: reservation-svc asked balance-svc once whether user 2 has an account,
# and took and gave back one seat lock, all as a client.
expect 'sum(grpc_client_handled_total{job="reservation-svc",grpc_method="GetBalance",grpc_code="OK"})' \
    1 "reservation-svc counted its GetBalance to balance-svc"
expect 'sum(grpc_client_handled_total{job="reservation-svc",grpc_service="lock.v1.LockService",grpc_method="Release",grpc_code="OK"})' \
    1 "reservation-svc counted its Release to lock-svc"
expect 'count(lock_waiters{job="lock-svc"})' 1 "lock-svc has lock_waiters"
expect 'sum(lock_grants_total{job="lock-svc"}) > bool 0' 1 "lock-svc granted locks (the seed's top-ups)"
expect 'sum(pg_pool_size{job="balance-svc"}) > bool 0' 1 "balance-svc reports its PostgreSQL pool"
expect 'sum(pg_pool_size{job="reservation-svc"}) > bool 0' 1 "reservation-svc reports its PostgreSQL pool"
expect 'count(reservation_payments_pending{job="reservation-svc"})' 1 \
    "reservation-svc has reservation_payments_pending"
expect 'sum(process_resident_memory_bytes{job="lock-svc"}) > bool 1000000' 1 \
    "process_resident_memory_bytes is the real RSS"
say "PASS"
