#!/usr/bin/env bash
# tests/bench/reservation_bench.sh: benchmarks reservation-svc's HoldSeats in
# one command. Starts a throwaway PostgreSQL (max_connections sized for the
# storm's twin), Redis, lock-svc, balance-svc and reservation-svc on free
# loopback ports in a temp dir, runs reservation-bench (a storm of --users
# holding one seat at once, --storms times; then distinct seats at
# --concurrency for --seconds), each next to the same SQL run directly
# against the same database in the same run; then the scale curve: storms of
# each --scale size (default 1000,5000,10000) on one seat and on a hall of
# --hall-seats, with p50/p99, answers by status, the database's view and
# each service's peak RSS. Every user gets its balance-svc account through
# TopUp first, untimed. Prints one table per scenario, the ratios and
# targets, checks that no seat is in two live holds, draws the curve with
# gnuplot (installed through deploy/local/deps.sh --bench when missing), and
# stops everything.
#
#   tests/bench/reservation_bench.sh [flags]   e.g. --seconds 5 --storms 5 --scale 1000,10000
#   tests/bench/reservation_bench.sh --help    this text and reservation-bench's flags
#
# --out-dir DIR (BENCH_OUT_DIR; default BUILD_DIR/bench-out/reservation-<time>)
# gets reservation-bench.txt (what reservation-bench printed), curve.dat and
# curve.svg. Other flags go to reservation-bench (this script sets
# --rsv-addr, --balance-addr, --database-url, --admin-token, --curve-file
# and the --*-pid ones). BUILD_DIR (default build/release) must
# hold lock-svc/lock-svc, balance-svc/balance-svc,
# reservation-svc/reservation-svc and tests/bench/reservation-bench; when one
# is missing, they are built there (Release). PostgreSQL runs with fsync=off
# and full_page_writes=off (commits stay synchronous); the services run with
# LOG_LEVEL=warn and otherwise take their settings from the environment
# (DB_POOL, WORKERS, MAX_WORKERS, LOCK_WAIT_MS, ...). PG_BIN, REDIS_SERVER,
# BUF name the binaries. RESERVATION_WRAP is a command put before
# reservation-svc's, for a profile (e.g. "heaptrack -o /tmp/rsv"; the RSS
# columns then measure the wrapper's process).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_NAME=reservation_bench.sh
# shellcheck source=bench_lib.sh source-path=SCRIPTDIR
. "$ROOT/tests/bench/bench_lib.sh"

lock_svc=$BUILD_DIR/lock-svc/lock-svc
balance_svc=$BUILD_DIR/balance-svc/balance-svc
reservation_svc=$BUILD_DIR/reservation-svc/reservation-svc
reservation_bench=$BUILD_DIR/tests/bench/reservation-bench

users=1000
sql_conns=0
out_dir=${BENCH_OUT_DIR:-}
parts=${BENCH_PARTS:-storm,distinct,curve}
scale=${BENCH_SCALE:-1000,5000,10000}
args=("$@")
bench_args=()
for ((i = 0; i < ${#args[@]}; i++)); do
    arg=${args[i]}
    next=${args[i + 1]:-}
    case $arg in
    --help | -h)
        bench_usage "${BASH_SOURCE[0]}" 33
        if [[ -x $reservation_bench ]]; then
            echo
            "$reservation_bench" --help
        fi
        exit 0
        ;;
    --out-dir)
        out_dir=$next
        i=$((i + 1))
        continue
        ;;
    --out-dir=*)
        out_dir=${arg#*=}
        continue
        ;;
    --users) users=$next ;;
    --users=*) users=${arg#*=} ;;
    --sql-storm-conns) sql_conns=$next ;;
    --sql-storm-conns=*) sql_conns=${arg#*=} ;;
    --parts) parts=$next ;;
    --parts=*) parts=${arg#*=} ;;
    --scale) scale=$next ;;
    --scale=*) scale=${arg#*=} ;;
    --rsv-addr* | --balance-addr* | --database-url* | --admin-token* | --curve-file* | --*-pid*)
        echo "reservation_bench.sh: ${arg%%=*} is set by this script" >&2
        exit 2
        ;;
    esac
    bench_args+=("$arg")
done
out_dir=${out_dir:-$BUILD_DIR/bench-out/reservation-$(date +%Y%m%d-%H%M%S)}
curve=""
if [[ ,$parts, == *,curve,* && -n $scale && $scale != 0 ]]; then
    curve=1
fi

[[ $users =~ ^[1-9][0-9]*$ ]] || die "--users must be a positive number: $users"
[[ $sql_conns =~ ^[0-9]+$ ]] || die "--sql-storm-conns must be a number: $sql_conns"
# The storm's twin holds one connection per user (unless --sql-storm-conns says fewer), the
# distinct-seat twin up to 1024 more after those closed, the services their pools.
storm_conns=$users
if ((sql_conns > 0 && sql_conns < users)); then
    storm_conns=$sql_conns
fi
max_connections=$((storm_conns > 1024 ? storm_conns + 100 : 1124))

reservation_port=""
start_reservation_svc() {
    bench_free_port reservation_port || die "no free port for reservation-svc"
    DATABASE_URL="postgresql://postgres@127.0.0.1:$pg_port/reservation" LOG_LEVEL=warn \
        LOCK_SVC_ADDR="127.0.0.1:$lock_port" BALANCE_SVC_ADDR="127.0.0.1:$balance_port" \
        LISTEN_ADDR="127.0.0.1:$reservation_port" ADMIN_TOKEN="$admin_token" \
        ${RESERVATION_WRAP:-} "$reservation_svc" 2>"$tmp/reservation-svc.log" &
    reservation_pid=$!
    bench_wait_serving reservation-svc "$reservation_pid" "$reservation_port" 300
}

# ---------------------------------------------------------------- after the run

# No seat in two live holds (also what the partial unique index guarantees), and every seat
# marked held belongs to a live hold that lists it.
db_check() {
    local out
    out=$(bench_psql reservation "
        SELECT (SELECT count(*) FROM (SELECT rs.schedule_id, rs.number FROM reservation_seats rs
                  JOIN reservations r ON r.id = rs.reservation_id WHERE r.status IN (1, 2)
                  GROUP BY 1, 2 HAVING count(*) > 1) x),
               (SELECT count(*) FROM seats s WHERE s.status = 2 AND NOT EXISTS
                  (SELECT 1 FROM reservation_seats rs JOIN reservations r ON r.id = rs.reservation_id
                    WHERE rs.reservation_id = s.hold_reservation_id AND rs.number = s.number
                      AND rs.schedule_id = s.schedule_id AND r.status = 1)),
               (SELECT count(*) FROM reservations WHERE status = 1),
               (SELECT count(*) FROM seats WHERE status = 2)")
    IFS='|' read -r n_double n_orphan n_live n_held <<<"$out"
    echo
    echo "database check: $n_live live holds, $n_held seats held; seats in two live holds:" \
        "$n_double; held seats without their live hold: $n_orphan"
    if ((n_double == 0 && n_orphan == 0)); then
        echo "database check: OK"
    else
        echo "database check: FAILED (the numbers above do not come from correct work)"
    fi
}

# ---------------------------------------------------------------- the chart

# The chart needs gnuplot: Debian's gnuplot-nox, through deps.sh like every other package.
have_gnuplot() {
    command -v gnuplot >/dev/null && return 0
    say "gnuplot not found: installing it for the chart (deploy/local/deps.sh --bench)"
    "$ROOT/deploy/local/deps.sh" --bench >&2 || true
    command -v gnuplot >/dev/null
}

# curve_chart DATA SVG: the scale curve as two panels (time, memory) with the targets.
curve_chart() {
    local data=$1 svg=$2 commit
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
    gnuplot <<EOF
set terminal svg size 1280,600 dynamic font "sans,12" background rgb "white"
set output "$svg"
set multiplot layout 1,2 title "reservation-svc HoldSeats storms fired at once (commit $commit, $(date '+%Y-%m-%d %H:%M'), $(nproc) CPUs)"
set grid
set key below
set xlabel "users in the storm"
set xrange [0:*]
set yrange [0:*]
set offsets 0, 0, graph 0.1, 0
set title "until every answer is in, and p99 of the answers"
set ylabel "ms"
plot "$data" index 0 using 1:3 with linespoints lw 2 pt 7 lc rgb "#1f77b4" title "one seat: all in", \
     "$data" index 1 using 1:3 with linespoints lw 2 pt 5 lc rgb "#ff7f0e" title "hall: all in", \
     "$data" index 0 using 1:5 with linespoints dt 2 pt 6 lc rgb "#1f77b4" title "one seat: p99", \
     "$data" index 1 using 1:5 with linespoints dt 2 pt 4 lc rgb "#ff7f0e" title "hall: p99", \
     "-" using 1:2 with points pt 9 ps 2 lc rgb "red" title "targets (1 000: 150 ms, 10 000: 1.5 s)"
1000 150
10000 1500
e
set title "peak RSS of each service during the storm"
set ylabel "MB"
plot "$data" index 0 using 1:12 with linespoints lw 2 pt 7 lc rgb "#2ca02c" title "reservation-svc, one seat", \
     "$data" index 1 using 1:12 with linespoints dt 2 pt 5 lc rgb "#2ca02c" title "reservation-svc, hall", \
     "$data" index 0 using 1:13 with linespoints lw 2 pt 7 lc rgb "#9467bd" title "lock-svc, one seat", \
     "$data" index 1 using 1:13 with linespoints dt 2 pt 5 lc rgb "#9467bd" title "lock-svc, hall", \
     "$data" index 0 using 1:14 with linespoints lw 2 pt 7 lc rgb "#8c564b" title "balance-svc, one seat", \
     "$data" index 1 using 1:14 with linespoints dt 2 pt 5 lc rgb "#8c564b" title "balance-svc, hall", \
     100 with lines dt 3 lw 2 lc rgb "red" title "target: under 100 MB"
unset multiplot
EOF
}

# ---------------------------------------------------------------- main

bench_require_redis
bench_find_pg_bin psql
bench_build_if_missing "lock-svc balance-svc reservation-svc reservation-bench" "$lock_svc" \
    "$balance_svc" "$reservation_svc" "$reservation_bench"
mkdir -p "$out_dir" || die "cannot make the output directory $out_dir"
out_dir=$(cd "$out_dir" && pwd)
chart=""
if [[ -n $curve ]]; then
    if have_gnuplot; then
        chart=1
    else
        say "WARNING: no gnuplot (deploy/local/deps.sh --bench failed): the curve gets no chart"
    fi
fi
bench_print_machine 10 "$("$PG_BIN/postgres" --version)"
bench_warn_stale "lock-svc balance-svc reservation-svc reservation-bench" \
    "$reservation_svc" "libsvc lock-svc reservation-svc" "$reservation_bench" "libsvc tests/bench"
bench_make_tmp reservation-bench
admin_token=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
bench_start_pg "$max_connections" 60 reservation balance
bench_start_redis
[[ -x $BUF ]] || say "buf not found at $BUF: waiting for the ports only"
bench_start_lock_svc "$lock_svc" 300
bench_start_balance_svc "$balance_svc" 300
start_reservation_svc
echo "started:  postgres pid $pg_pid port $pg_port (max_connections=$max_connections," \
    "fsync=off, full_page_writes=off, synchronous_commit=on), redis pid $redis_pid port" \
    "$redis_port, lock-svc pid $lock_pid port $lock_port, balance-svc pid $balance_pid port" \
    "$balance_port, reservation-svc pid $reservation_pid port $reservation_port" \
    "(DB_POOL=${DB_POOL:-default 16}, WORKERS=${WORKERS:-default 16}," \
    "MAX_WORKERS=${MAX_WORKERS:-default 256}, LOCK_WAIT_MS=${LOCK_WAIT_MS:-default 2000})"
echo "direct SQL: reservation-bench runs hold_tx's statements from reservation_store.c (BEGIN;" \
    "SELECT ... FOR UPDATE; the seat checked in the client, ROLLBACK when taken; expire old" \
    "holds; INSERT reservation; INSERT reservation_seats + UPDATE seats; COMMIT) with libpq," \
    "parameters, one statement at a time, each prepared once per connection (as svc_pg_exec" \
    "does), on the same database. Storm twin: one connection" \
    "per user, opened beforehand (pgbench cannot start N clients once each at the same moment)," \
    "every BEGIN sent before any answer is read; also over a pool of DB_POOL's size," \
    "as reservation-svc itself can only use that many. reservation-svc additionally runs a" \
    "lock-free precheck (1 statement, shared by the leaders that arrive together), asks balance-svc whether a user it has not seen has an" \
    "account (GetBalance), and takes/gives back a lock-svc token per hold."
echo
echo "cpu: CPUs busy: machine = all CPUs, irq = interrupts and softirqs (loopback TCP)," \
    "other = processes not named; bench = reservation-bench (client and libpq driver), rsv =" \
    "reservation-svc, lock = lock-svc, bal = balance-svc, redis, pg = PostgreSQL (all" \
    "backends); then CPU us per request (all = machine)."
rm -f "$out_dir/curve.dat" "$out_dir/curve.svg"
ADMIN_TOKEN="$admin_token" "$reservation_bench" --rsv-addr "127.0.0.1:$reservation_port" \
    --balance-addr "127.0.0.1:$balance_port" \
    --database-url "postgresql://postgres@127.0.0.1:$pg_port/reservation" \
    --rsv-pid "$reservation_pid" --lock-pid "$lock_pid" --balance-pid "$balance_pid" \
    --redis-pid "$redis_pid" --pg-pid "$pg_pid" --curve-file "$out_dir/curve.dat" \
    "${bench_args[@]}" | tee "$out_dir/reservation-bench.txt"
db_check
echo
echo "output:   $out_dir/reservation-bench.txt (what reservation-bench printed)"
if [[ -s $out_dir/curve.dat ]]; then
    echo "curve:    $out_dir/curve.dat (one line per storm)"
    if [[ -n $chart ]] && curve_chart "$out_dir/curve.dat" "$out_dir/curve.svg"; then
        echo "chart:    $out_dir/curve.svg"
    elif [[ -n $chart ]]; then
        echo "WARNING: gnuplot failed; no chart"
    fi
fi
# A service that died mid-run shows up above as UNAVAILABLE errors; say why.
bench_check_alive reservation balance lock
