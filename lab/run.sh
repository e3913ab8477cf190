#!/usr/bin/env bash
# lab/run.sh: the strategy lab in one command. Builds strategy-lab and
# lock-svc (Release, in BUILD_DIR, default build/release), runs every
# strategy on every workload at concurrency 10, 100 and 1000 against its own
# PostgreSQL, Redis and lock-svc on free loopback ports, prints the Markdown
# table, and draws the charts as SVG with gnuplot.
#
#   lab/run.sh                      the full run (180 cells, about 6 minutes on 2 CPUs)
#   lab/run.sh --smoke              a small run in seconds (what the test lab.smoke runs)
#   lab/run.sh --out DIR            where results go (default BUILD_DIR/lab-out/<time>)
#   lab/run.sh -- ARGS              more flags for strategy-lab, e.g.
#                                   -- --levels 100 --strategies none,ours --workloads hall
#
# DIR gets results.md (the table), results.tsv (every count, for a
# spreadsheet), chart.dat, throughput.svg, p99.svg and anomalies.svg,
# progress.txt (a line per cell as it ends) and lab.txt (what strategy-lab
# printed, with the machine's load before and after). gnuplot comes from deploy/local/deps.sh --bench when missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build/release}
out=""
args=()
while (($#)); do
    case $1 in
    --smoke) args+=(--smoke) ;;
    --out) out=$2; shift ;;
    --) shift; args+=("$@"); break ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "lab/run.sh: unknown flag $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
out=${out:-$BUILD_DIR/lab-out/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)

say() { echo "lab/run.sh: $*" >&2; }

if [[ ! -f $BUILD_DIR/CMakeCache.txt ]]; then
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
say "building strategy-lab and lock-svc in $BUILD_DIR"
cmake --build "$BUILD_DIR" -j"$(nproc)" --target strategy-lab lock-svc >/dev/null

say "results go to $out"
echo "load before: $(uptime)" | tee "$out/lab.txt"
start=$(date +%s)
set +e
"$BUILD_DIR/lab/strategy-lab" --lock-svc "$BUILD_DIR/lock-svc/lock-svc" --root "$ROOT" \
    --out "$out" "${args[@]}" 2> >(tee "$out/progress.txt" >&2) | tee -a "$out/lab.txt"
status=${PIPESTATUS[0]}
set -e
{
    echo "load after: $(uptime)"
    echo "lab/run.sh: $(($(date +%s) - start)) s, strategy-lab exited $status"
} | tee -a "$out/lab.txt"

have_gnuplot() {
    command -v gnuplot >/dev/null && return 0
    say "gnuplot not found: installing it for the charts (deploy/local/deps.sh --bench)"
    "$ROOT/deploy/local/deps.sh" --bench >&2 || true
    command -v gnuplot >/dev/null
}

# chart TITLE YLABEL FIRST_COLUMN LOG SVG: one panel per workload, a cluster of bars per
# strategy, one bar per concurrency level; FIRST_COLUMN is the column of the first level.
chart() {
    local title=$1 ylabel=$2 first=$3 log=$4 svg=$5 data=$out/chart.dat
    local levels workloads n_levels n_workloads commit
    levels=$(head -1 "$data" | tr ' ' '\n' | sed -n 's/^ops_s_//p' | tr '\n' ' ')
    workloads=$(grep '^# ' "$data" | tail -n +2 | sed 's/^# //' | tr '\n' ' ')
    n_levels=$(wc -w <<<"$levels")
    n_workloads=$(wc -w <<<"$workloads")
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
    gnuplot <<EOF
set terminal svg size 1400,$((260 * n_workloads + 80)) dynamic font "sans,11" background rgb "white"
set output "$svg"
set multiplot layout $n_workloads,1 title "$title (strategy lab, commit $commit, $(date '+%Y-%m-%d'), $(nproc) CPUs)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key top right
set ylabel "$ylabel"
set xtics nomirror font ",9"
$([[ $log == log ]] && echo 'set logscale y' || echo 'set yrange [0:*]')
levels = "$levels"
workloads = "$workloads"
do for [w = 1:$n_workloads] {
    set title word(workloads, w)
    plot for [l = 1:$n_levels] "$data" index (w - 1) using \
        (column($first + l - 1) > 0 ? column($first + l - 1) : $([[ $log == log ]] && echo '1/0' || echo '0')):xtic(2) \
        title sprintf("N=%s", word(levels, l))
}
unset multiplot
EOF
}

if have_gnuplot; then
    n=$(head -1 "$out/chart.dat" | tr ' ' '\n' | grep -c '^ops_s_')
    chart "answers per second (all outcomes)" "ops/s" 3 log "$out/throughput.svg"
    chart "p99 latency of an operation" "ms" $((3 + n)) log "$out/p99.svg"
    chart "anomalies found in the data afterwards" "anomalies" $((3 + 2 * n)) lin "$out/anomalies.svg"
    say "charts: $out/throughput.svg $out/p99.svg $out/anomalies.svg"
else
    say "no gnuplot: no charts (the table is in $out/results.md)"
fi
exit "$status"
