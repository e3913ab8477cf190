#!/usr/bin/env bash
# tests/bench/balance_bench.sh: benchmarks balance-svc in one command. Starts
# a throwaway PostgreSQL, Redis, lock-svc and balance-svc on free loopback
# ports in a temp dir, runs balance-bench (TopUp/Spend at concurrency C on one
# hot account, then on N accounts) and, after each, pgbench running the same
# SQL transaction (tests/bench/balance_txn.sql) with C clients; prints one
# table with both and their ratio, checks the ledger, and stops everything.
#
#   tests/bench/balance_bench.sh [flags]   e.g. --seconds 5 --concurrency 64 --accounts 1000
#   tests/bench/balance_bench.sh --help    this text and balance-bench's flags
#
# Flags go to balance-bench (this script sets --scenario, --first-account,
# --result-file and the --*-pid ones); --seconds, --concurrency and --accounts
# apply to pgbench as well. BUILD_DIR (default build/release) must hold
# balance-svc/balance-svc, lock-svc/lock-svc and tests/bench/balance-bench;
# when one is missing, they are built there (Release). PostgreSQL runs with
# fsync=off and full_page_writes=off (commits stay synchronous); the services
# run with LOG_LEVEL=warn and otherwise take their settings from the
# environment (DB_POOL, MAX_BATCH, WORKERS, ...). PG_BIN, REDIS_SERVER, BUF
# name the binaries.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_NAME=balance_bench.sh
# shellcheck source=bench_lib.sh source-path=SCRIPTDIR
. "$ROOT/tests/bench/bench_lib.sh"

SCRIPT=$ROOT/tests/bench/balance_txn.sql
lock_svc=$BUILD_DIR/lock-svc/lock-svc
balance_svc=$BUILD_DIR/balance-svc/balance-svc
balance_bench=$BUILD_DIR/tests/bench/balance-bench
HOT_TARGET=2000
RATIO_TARGET=0.5
BB_FIRST=1         # balance-bench: hot account 1, spread accounts 2..N+1
PG_FIRST=100000001 # pgbench: hot account 100000001, spread accounts after it
FUND=100000000

seconds=5
conc=64
accounts=1000
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    arg=${args[i]}
    next=${args[i + 1]:-}
    case $arg in
    --help | -h)
        bench_usage "${BASH_SOURCE[0]}" 20
        if [[ -x $balance_bench ]]; then
            echo
            "$balance_bench" --help
        fi
        exit 0
        ;;
    --seconds) seconds=$next ;;
    --seconds=*) seconds=${arg#*=} ;;
    --concurrency) conc=$next ;;
    --concurrency=*) conc=${arg#*=} ;;
    --accounts) accounts=$next ;;
    --accounts=*) accounts=${arg#*=} ;;
    --scenario* | --first-account* | --result-file* | --*-pid*)
        echo "balance_bench.sh: ${arg%%=*} is set by this script" >&2
        exit 2
        ;;
    esac
done

for v in seconds conc accounts; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--${v/conc/concurrency} must be a positive number: ${!v}"
done

# ---------------------------------------------------------------- CPU time

# Busy ticks of all CPUs (not idle, iowait or steal), then those in irq and softirq.
machine_ticks() {
    awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $7 + $8; exit }' /proc/stat
}

# Ticks of PostgreSQL: the postmaster (with the backends it reaped) and its live children.
pg_ticks() {
    local f line rest total=0 fields
    for f in /proc/[0-9]*/stat; do
        line=$(cat "$f" 2>/dev/null) || continue
        rest=${line##*) }
        read -ra fields <<<"$rest"
        # fields: 0 state, 1 ppid, 11 utime, 12 stime, 13 cutime, 14 cstime
        if [[ ${f//[!0-9]/} == "$pg_pid" || ${fields[1]} == "$pg_pid" ]]; then
            total=$((total + fields[11] + fields[12] + fields[13] + fields[14]))
        fi
    done
    echo "$total"
}

# Ticks of the children this shell reaped (pgbench).
own_children_ticks() {
    local rest fields
    rest=$(cat /proc/$$/stat)
    rest=${rest##*) }
    read -ra fields <<<"$rest"
    echo $((fields[13] + fields[14]))
}

# ---------------------------------------------------------------- pgbench

# Funds pgbench's accounts in SQL, with a ledger row each so the invariant holds.
fund_pg_accounts() {
    local last=$((PG_FIRST + accounts))
    bench_psql balance "INSERT INTO accounts (user_id, balance)
                    SELECT g, $FUND FROM generate_series($PG_FIRST, $last) g;
                  INSERT INTO ledger (user_id, kind, amount, balance_after, idempotency_key)
                    SELECT g, 1, $FUND, $FUND, 'pgbench:fund' FROM generate_series($PG_FIRST, $last) g;"
}

# p50 and p99 (ms, nearest rank) of the latencies (3rd field, us) in pgbench's logs.
log_percentiles() {
    cat "$1".* | awk '{ print $3 }' | sort -n | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "0 0"; exit }
            r50 = int((NR * 50 + 99) / 100); r99 = int((NR * 99 + 99) / 100)
            printf "%.3f %.3f\n", v[r50] / 1000, v[r99] / 1000
        }'
}

# cpu_of TICKS OPS NS: cores busy over NS nanoseconds and CPU us per op: prints "cores us".
cpu_of() {
    awk -v d="$1" -v t="$(getconf CLK_TCK)" -v s="$(($3 / 1000000))e-3" -v n="$2" \
        'BEGIN { printf "%.2f %.0f\n", d / t / s, (n > 0 ? d / t * 1e6 / n : 0) }'
}

# run_pgbench NAME FIRST N: prints a row; sets pg_rate pg_p50 pg_p99 pg_failed pg_machine.
run_pgbench() {
    local name=$1 first=$2 n=$3 out m0 m1 p0 p1 c0 c1 t0 t1 ops percentiles
    local all_cpu irq_cpu bench_cpu pg_cpu other
    out=$tmp/pgbench-$name.txt
    m0=$(machine_ticks)
    p0=$(pg_ticks)
    c0=$(own_children_ticks)
    t0=$(date +%s%N)
    (cd "$tmp" && "$PG_BIN/pgbench" -n -M prepared -c "$conc" -j "$((conc < 2 ? conc : 2))" \
        -T "$seconds" -f "$SCRIPT" -D kind=2 -D first="$first" -D n="$n" \
        -D fence="$(date +%s%6N)" -D ref=balance-bench --log --log-prefix="pgbench-$name" \
        -h 127.0.0.1 -p "$pg_port" -U postgres balance >"$out" 2>&1) || {
        cat "$out" >&2
        die "pgbench failed"
    }
    m1=$(machine_ticks)
    p1=$(pg_ticks)
    c1=$(own_children_ticks)
    t1=$(date +%s%N)
    pg_rate=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$out")
    pg_failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")
    ops=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
    [[ -n $pg_rate && -n $ops ]] || {
        cat "$out" >&2
        die "no tps in pgbench's output"
    }
    percentiles=$(log_percentiles "$tmp/pgbench-$name")
    pg_p50=${percentiles% *}
    pg_p99=${percentiles#* }
    pg_rate=$(printf '%.1f' "$pg_rate")
    all_cpu=$(cpu_of $((${m1% *} - ${m0% *})) "$ops" $((t1 - t0)))
    irq_cpu=$(cpu_of $((${m1#* } - ${m0#* })) "$ops" $((t1 - t0)))
    bench_cpu=$(cpu_of $((c1 - c0)) "$ops" $((t1 - t0)))
    pg_cpu=$(cpu_of $((p1 - p0)) "$ops" $((t1 - t0)))
    pg_machine=${all_cpu% *}
    other=$(awk -v m="$pg_machine" -v i="${irq_cpu% *}" -v b="${bench_cpu% *}" -v p="${pg_cpu% *}" \
        'BEGIN { o = m - i - b - p; printf "%.2f", (o > 0 ? o : 0) }')
    printf '%-8s %8d %5d %8d %9.1f %8.3f %8.3f %6s | %7s %5s %5s %5s %5s %5s %5s %5s |' \
        pgbench "$n" "$conc" "$ops" "$pg_rate" "$pg_p50" "$pg_p99" "${pg_failed:-?}" \
        "$pg_machine" "${irq_cpu% *}" "$other" "${bench_cpu% *}" - - - "${pg_cpu% *}"
    printf ' %6s %6s %6s %6s %6s %6s\n' "${all_cpu#* }" "${bench_cpu#* }" - - - "${pg_cpu#* }"
}

# ---------------------------------------------------------------- balance-bench

# Reads the key=value line of scenario NAME from the result file into the array r_NAME.
declare -A r_hot r_spread
read_result() {
    local name=$1 line kv
    line=$(grep "^scenario=$name " "$tmp/results.txt") || die "balance-bench wrote no result for $name"
    for kv in $line; do
        if [[ $name == hot ]]; then r_hot[${kv%%=*}]=${kv#*=}; else r_spread[${kv%%=*}]=${kv#*=}; fi
    done
}

# Ledger rows and transactions (distinct xmin) behind balance-bench's acknowledged ops.
batch_stats() {
    local name=$1 run=$2 first=$3 n=$4 acked=$5 stats rows txns
    stats=$(bench_psql balance "SELECT count(*), count(DISTINCT xmin::text) FROM ledger
                          WHERE user_id BETWEEN $first AND $((first + n - 1))
                            AND idempotency_key LIKE 'bb:$run:$name:%'")
    rows=${stats%|*}
    txns=${stats#*|}
    echo "  $name: $rows ledger rows for $acked ops answered OK (each must have its own row)," \
        "written by $txns transactions: $(awk -v r="$rows" -v t="$txns" \
            'BEGIN { printf "%.1f", (t > 0 ? r / t : 0) }') ops per commit on average"
}

run_balance_bench() {
    local name=$1
    shift
    "$balance_bench" --balance-addr "127.0.0.1:$balance_port" --scenario "$name" \
        --first-account "$BB_FIRST" --result-file "$tmp/results.txt" \
        --balance-pid "$balance_pid" --lock-pid "$lock_pid" --redis-pid "$redis_pid" \
        --pg-pid "$pg_pid" "$@" | sed -u -e '/^balance-bench:/d' -e '/^each scenario:/d' \
        -e '/^== /d' -e '/^cpu: /d' -e '/^scenario /d'
}

# ---------------------------------------------------------------- report

ledger_check() {
    local bad
    bad=$(bench_psql balance "
        WITH sums AS (SELECT user_id, sum(CASE kind WHEN 1 THEN amount ELSE -amount END) AS s
                      FROM ledger GROUP BY user_id),
             chain AS (SELECT balance_after - coalesce(lag(balance_after) OVER w, 0)
                              - CASE kind WHEN 1 THEN amount ELSE -amount END AS gap
                       FROM ledger WINDOW w AS (PARTITION BY user_id ORDER BY id))
        SELECT (SELECT count(*) FROM accounts),
               (SELECT count(*) FROM ledger),
               (SELECT count(*) FROM accounts a LEFT JOIN sums USING (user_id)
                 WHERE a.balance <> coalesce(sums.s, 0)),
               (SELECT count(*) FROM chain WHERE gap <> 0)")
    IFS='|' read -r n_acc n_rows n_bad n_gap <<<"$bad"
    echo
    echo "ledger check: $n_acc accounts, $n_rows ledger rows; accounts whose balance is not" \
        "the ledger sum: $n_bad; ledger rows whose balance_after is not the previous one" \
        "plus the amount: $n_gap"
    if ((n_bad == 0 && n_gap == 0)); then
        echo "ledger check: OK"
    else
        echo "ledger check: FAILED (the numbers above do not come from correct work)"
    fi
}

summary_row() {
    printf '%-8s %8s  %-12s %9s %8s %8s %7s %9s\n' "$@"
}

summary() {
    local hot_ratio spread_ratio hot_note ratio_note
    hot_ratio=$(awk -v a="${r_hot[rate]}" -v b="$pg_hot_rate" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    spread_ratio=$(awk -v a="${r_spread[rate]}" -v b="$pg_spread_rate" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    echo
    echo "== summary: Spend+TopUp ops/s at concurrency $conc, $seconds s each =="
    summary_row scenario accounts path ops/s "p50 ms" "p99 ms" errors "CPUs busy"
    summary_row hot 1 balance-svc "${r_hot[rate]}" "${r_hot[p50_ms]}" "${r_hot[p99_ms]}" \
        "${r_hot[errors]}" "${r_hot[machine]}"
    summary_row hot 1 pgbench "$pg_hot_rate" "$pg_hot_p50" "$pg_hot_p99" "$pg_hot_failed" \
        "$pg_hot_machine"
    summary_row spread "$accounts" balance-svc "${r_spread[rate]}" "${r_spread[p50_ms]}" \
        "${r_spread[p99_ms]}" "${r_spread[errors]}" "${r_spread[machine]}"
    summary_row spread "$accounts" pgbench "$pg_spread_rate" "$pg_spread_p50" "$pg_spread_p99" \
        "$pg_spread_failed" "$pg_spread_machine"
    hot_note=$(awk -v r="${r_hot[rate]}" -v t=$HOT_TARGET 'BEGIN { print (r >= t ? "meets the target" : "BELOW the target") }')
    ratio_note=$(awk -v r="$spread_ratio" -v t=$RATIO_TARGET 'BEGIN { print (r >= t ? "meets the target" : "BELOW the target") }')
    echo
    echo "ratio balance-svc / pgbench (ops/s): hot $hot_ratio, spread $spread_ratio" \
        "(target for spread: >= $RATIO_TARGET: $ratio_note)"
    echo "hot account through balance-svc: ${r_hot[rate]} ops/s (target >= $HOT_TARGET: $hot_note)"
}

# ---------------------------------------------------------------- main

bench_require_redis
[[ -r $SCRIPT ]] || die "$SCRIPT not found"
bench_find_pg_bin pgbench
bench_build_if_missing "lock-svc balance-svc balance-bench" "$lock_svc" "$balance_svc" \
    "$balance_bench"
bench_print_machine 10 "$("$PG_BIN/postgres" --version), $("$PG_BIN/pgbench" --version)"
bench_warn_stale "lock-svc balance-svc balance-bench" \
    "$balance_svc" "libsvc lock-svc balance-svc" "$balance_bench" "libsvc tests/bench"
bench_make_tmp balance-bench
bench_start_pg 200 30 balance
bench_start_redis
[[ -x $BUF ]] || say "buf not found at $BUF: waiting for the ports only"
bench_start_lock_svc "$lock_svc" 200
bench_start_balance_svc "$balance_svc" 200
echo "started:  postgres pid $pg_pid port $pg_port (fsync=off, full_page_writes=off," \
    "synchronous_commit=on), redis pid $redis_pid port $redis_port, lock-svc pid $lock_pid" \
    "port $lock_port, balance-svc pid $balance_pid port $balance_port" \
    "(DB_POOL=${DB_POOL:-default}, MAX_BATCH=${MAX_BATCH:-default}, WORKERS=${WORKERS:-default})"
fund_pg_accounts
echo "pgbench:  pgbench -n -M prepared -c $conc -j $((conc < 2 ? conc : 2)) -T $seconds" \
    "-f tests/bench/balance_txn.sql (same statements as balance_store.c, one op per" \
    "transaction; p50/p99 from its per-transaction log; tps without connection time)"
echo "balance-bench: accounts funded with TopUp($FUND) each first, then 0.5 s warm-up and" \
    "$seconds s measured"
echo
echo "cpu: CPUs busy: machine = all CPUs, irq = interrupts and softirqs (loopback TCP)," \
    "other = processes not named; bench = the load tool (balance-bench or pgbench), svc =" \
    "balance-svc, lock = lock-svc, redis, pg = PostgreSQL (all backends); then CPU us per op" \
    "(all = machine). pgbench rows span its whole run, connecting included."
printf '%-8s %8s %5s %8s %9s %8s %8s %6s | %7s %5s %5s %5s %5s %5s %5s %5s |' \
    scenario accounts conc ops ops/s "p50 ms" "p99 ms" errors machine irq other bench svc lock \
    redis pg
printf ' %6s %6s %6s %6s %6s %6s\n' all bench svc lock redis pg
for name in hot spread; do
    run_balance_bench "$name" "$@"
    read_result "$name"
    if [[ $name == hot ]]; then
        run_pgbench "$name" "$PG_FIRST" 1
        pg_hot_rate=$pg_rate pg_hot_p50=$pg_p50 pg_hot_p99=$pg_p99 pg_hot_failed=$pg_failed
        pg_hot_machine=$pg_machine
    else
        run_pgbench "$name" "$((PG_FIRST + 1))" "$accounts"
        pg_spread_rate=$pg_rate pg_spread_p50=$pg_p50 pg_spread_p99=$pg_p99
        pg_spread_failed=$pg_failed pg_spread_machine=$pg_machine
    fi
done
echo
batch_stats hot "${r_hot[run]}" "$BB_FIRST" 1 "${r_hot[acked]}"
batch_stats spread "${r_spread[run]}" "$((BB_FIRST + 1))" "$accounts" "${r_spread[acked]}"
summary
ledger_check
# A service that died mid-run shows up above as UNAVAILABLE errors; say why.
bench_check_alive balance lock
