#!/usr/bin/env bash
# tests/fuzz/run.sh: builds the libFuzzer targets of tests/fuzz with Debian's
# clang (ASan+UBSan, in their own build dir) and runs each for a while,
# printing per target its executions, coverage (libFuzzer's cov and ft), peak
# memory and time. Fails when any target reports a crash, a leak, a UBSan or
# ASan finding or a broken property (its input is kept, the command to replay
# it printed).
#
#   tests/fuzz/run.sh                    every target for 10 s (tests/run.sh's short run)
#   tests/fuzz/run.sh --seconds 600      the long run: 10 minutes each
#   tests/fuzz/run.sh --target admission only that one (repeatable)
#   tests/fuzz/run.sh --list             the targets
#   tests/fuzz/run.sh --seeds            rewrite tests/fuzz/corpus from gen_corpus.c
#
# Each target grows its working corpus in $FUZZ_BUILD_DIR/corpus/<target>
# (kept across runs, so long runs add up) from the seeds committed in
# tests/fuzz/corpus/<target>. FUZZ_BUILD_DIR defaults to build/fuzz.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD_DIR=${FUZZ_BUILD_DIR:-$ROOT/build/fuzz}
SEEDS=$ROOT/tests/fuzz/corpus
DICTS=$ROOT/tests/fuzz/dict
TARGETS=(lock_requests balance_requests reservation_requests config redis_url page_token admission
    descset jwt)
seconds=10
selected=()
list=0
regen=0

usage() {
    sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while (($# > 0)); do
    case "$1" in
    --seconds)
        [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --seconds needs a positive number" >&2; exit 2; }
        seconds=$2
        shift
        ;;
    --seconds=*)
        seconds=${1#--seconds=}
        [[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --seconds needs a positive number" >&2; exit 2; }
        ;;
    --target)
        [[ $# -ge 2 ]] || { echo "run.sh: --target needs a name" >&2; exit 2; }
        selected+=("$2")
        shift
        ;;
    --list) list=1 ;;
    --seeds) regen=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

if ((list)); then
    printf '%s\n' "${TARGETS[@]}"
    exit 0
fi
for t in "${selected[@]}"; do
    [[ " ${TARGETS[*]} " == *" $t "* ]] || { echo "run.sh: no target $t (--list)" >&2; exit 2; }
done
((${#selected[@]} > 0)) || selected=("${TARGETS[@]}")

# Debian's clang and its compiler-rt (libFuzzer, ASan, UBSan): deps.sh installs them.
CC_BIN=$(command -v clang-14 || command -v clang || true)
[[ -n $CC_BIN ]] || { echo "run.sh: clang not found: run deploy/local/deps.sh" >&2; exit 1; }

echo "fuzz: building in $BUILD_DIR with $CC_BIN"
mkdir -p "$BUILD_DIR/logs"
CC=$CC_BIN cmake -S "$ROOT" -B "$BUILD_DIR" -DSVC_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    >"$BUILD_DIR/logs/configure.log" 2>&1 || { cat "$BUILD_DIR/logs/configure.log" >&2; exit 1; }
cmake --build "$BUILD_DIR" -j "$(nproc)" --target fuzz_all >"$BUILD_DIR/logs/build.log" 2>&1 ||
    { tail -50 "$BUILD_DIR/logs/build.log" >&2; exit 1; }
BIN=$BUILD_DIR/tests/fuzz

if ((regen)); then
    "$BIN/fuzz_gen_corpus" "$SEEDS"
    exit 0
fi

# libFuzzer stops at the first finding; ASan's leak check runs at its exit.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:symbolize=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:abort_on_error=1

# The last value of "stat::<name>: N" in a log.
final_stat() { sed -n "s/^stat::$2: *\([0-9]*\).*/\1/p" "$1" | tail -1; }
# The last "<name>: N" of libFuzzer's progress lines (cov, ft, corp).
progress() { grep -E '^#[0-9]+' "$1" | tail -1 | sed -n "s/.* $2: \([0-9/a-zA-Z]*\).*/\1/p"; }

failed=()
printf '\n%-22s %12s %10s %6s %6s %14s %8s %6s  %s\n' target executions exec/s cov ft corpus rss_mb time result
for t in "${selected[@]}"; do
    work=$BUILD_DIR/corpus/$t
    art=$BUILD_DIR/artifacts/$t/
    log=$BUILD_DIR/logs/$t.log
    mkdir -p "$work" "$art" "$(dirname "$log")"
    args=(-max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2560
        -artifact_prefix="$art")
    [[ -f $DICTS/$t.dict ]] && args+=(-dict="$DICTS/$t.dict")
    start=$(date +%s%N)
    rc=0
    "$BIN/fuzz_$t" "${args[@]}" "$work" "$SEEDS/$t" >"$log" 2>&1 || rc=$?
    took=$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
    execs=$(final_stat "$log" number_of_executed_units)
    per_s=$(final_stat "$log" average_exec_per_sec)
    rss=$(final_stat "$log" peak_rss_mb)
    result=ok
    if ((rc != 0)) || grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|libFuzzer)|runtime error:|fuzz check failed' "$log"; then
        result=FAILED
        failed+=("$t")
    fi
    printf '%-22s %12s %10s %6s %6s %14s %8s %5ss  %s\n' "$t" "${execs:-?}" "${per_s:-?}" \
        "$(progress "$log" cov)" "$(progress "$log" ft)" "$(progress "$log" corp)" "${rss:-?}" \
        "$took" "$result"
done

if ((${#failed[@]} > 0)); then
    for t in "${failed[@]}"; do
        log=$BUILD_DIR/logs/$t.log
        printf '\n==> fuzz_%s failed (log: %s); the end of its report:\n' "$t" "$log"
        grep -E -A30 'ERROR:|runtime error:|fuzz check failed' "$log" | head -60
        for a in "$BUILD_DIR/artifacts/$t"/*; do
            [[ -e $a ]] && echo "replay: $BIN/fuzz_$t $a   (then add it to tests/fuzz/corpus/$t/regress-*)"
        done
    done
    echo "fuzz: ${#failed[@]} of ${#selected[@]} targets failed: ${failed[*]}"
    exit 1
fi
echo "fuzz: ${#selected[@]} targets, ${seconds} s each: no finding"
