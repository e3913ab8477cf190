#!/usr/bin/env bash
# tests/run.sh: every test of the project, as CI runs it. Installs what is
# missing, builds with ASan+UBSan and -Werror, checks formatting and the
# protos, fuzzes each parser of hostile input briefly (tests/fuzz/run.sh),
# then runs all tests under CTest and prints its summary.
#
#   tests/run.sh              everything
#   tests/run.sh --quick      only tests labelled "quick" (no fault scenarios)
#   tests/run.sh --no-tsan    skip the ThreadSanitizer pass over libsvc
#   tests/run.sh --no-fuzz    skip the short libFuzzer run (tests/fuzz/run.sh)
#   tests/run.sh -- ARGS      extra arguments for ctest (e.g. -R runtime)
# FUZZ_SECONDS (default 10) is each fuzz target's time.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build/test-asan}
TSAN_BUILD_DIR=${TSAN_BUILD_DIR:-$ROOT/build/test-tsan}
ctest_args=()
tsan=1
fuzz=1

usage() {
    sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while (($# > 0)); do
    case "$1" in
    --quick) ctest_args+=(-L quick) ;;
    --no-tsan) tsan=0 ;;
    --no-fuzz) fuzz=0 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; ctest_args+=("$@"); break ;;
    *) echo "tests/run.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

step() { printf '\n==> %s\n' "$*"; }

step "dependencies"
"$ROOT/deploy/local/deps.sh"

step "build (ASan+UBSan, -Werror) in $BUILD_DIR"
cmake -S "$ROOT" -B "$BUILD_DIR" -DSVC_SANITIZE=ON -DSVC_WERROR=ON -DSVC_FAILPOINTS=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)"

step "format check (clang-format)"
cd "$ROOT"
mapfile -t sources < <(git ls-files --cached --others --exclude-standard -- '*.c' '*.h')
if ((${#sources[@]} > 0)); then
    clang-format --dry-run --Werror "${sources[@]}"
fi
echo "formatted: ${#sources[@]} files"

step "buf lint (protos/)"
(cd "$ROOT/protos" && "$ROOT/.tools/node_modules/.bin/buf" lint)
echo "buf lint: clean"

export BUF="$ROOT/.tools/node_modules/.bin/buf"
if ((tsan)); then
    # The runtime's threads under ThreadSanitizer. gRPC and Abseil come from
    # Debian uninstrumented; cmake/tsan.supp silences only their internals.
    step "ThreadSanitizer pass over libsvc in $TSAN_BUILD_DIR"
    cmake -S "$ROOT" -B "$TSAN_BUILD_DIR" -DSVC_TSAN=ON -DSVC_WERROR=ON -DSVC_FAILPOINTS=ON \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$TSAN_BUILD_DIR" -j "$(nproc)"
    TSAN_OPTIONS="suppressions=$ROOT/cmake/tsan.supp halt_on_error=1" \
        ctest --test-dir "$TSAN_BUILD_DIR" --output-on-failure --timeout 900 -R '^(libsvc|lock|balance|reservation)\.' \
        -E buf_curl
fi

fuzz_status=0
if ((fuzz)); then
    # Every decoder, validator and parser of hostile input under libFuzzer (clang, ASan+UBSan,
    # its own build dir); the long run is tests/fuzz/run.sh --seconds 600.
    step "fuzzing (libFuzzer, ${FUZZ_SECONDS:-10} s per target)"
    "$ROOT/tests/fuzz/run.sh" --seconds "${FUZZ_SECONDS:-10}" || fuzz_status=$?
fi

step "tests (ASan+UBSan)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$ROOT/cmake/lsan.supp:print_suppressions=0}
# abort_on_error: UBSan's own exit skips the death callback testenv sets in
# ASan's runtime; a SIGABRT lets testenv stop the test's servers first.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:abort_on_error=1}
# Each conformance scenario appends its row here; the table is printed at the end.
results="$BUILD_DIR/conformance-results.tsv"
rm -f "$results"
status=0
ctest --test-dir "$BUILD_DIR" --output-on-failure --timeout 900 "${ctest_args[@]}" || status=$?
if [[ -s "$results" ]]; then
    step "conformance suite"
    "$BUILD_DIR/tests/integration/conformance" --table "$results"
fi
if ((fuzz_status != 0)); then
    echo "tests/run.sh: the fuzz run failed (above, under \"fuzzing\")" >&2
    ((status != 0)) || status=$fuzz_status
fi
exit "$status"
