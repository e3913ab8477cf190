#!/usr/bin/env bash
# deps.sh: installs what the build and the local stack need and is missing:
# Debian packages (apt-get) and buf (npm, into the repo-local, git-ignored .tools/);
# with --bench also what the load tools in tests/bench use (gnuplot for charts);
# with --containers also what deploy/docker and deploy/compose.yaml need here
# (podman, podman-compose, debootstrap for a base image without a registry).
# Safe to re-run; silent when nothing is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# buf version verified against protos/buf.yaml (v2 config format).
BUF_VERSION=1.75.0
BUF_BIN="$ROOT/.tools/node_modules/.bin/buf"

# Debian packages, by purpose: C toolchain, gRPC/protobuf-c, client libraries
# (libmicrohttpd serves /metrics, jansson reads JWT claims), tests (prometheus scrapes a stack in one),
# the servers up.sh runs, the standard health/reflection protos, format
# check, clang with its compiler-rt (libFuzzer, ASan, UBSan) for
# tests/fuzz, and node for buf. npm is handled apart (see below).
PACKAGES=(
    build-essential cmake pkg-config
    libgrpc-dev protobuf-compiler protobuf-c-compiler libprotobuf-c-dev
    libpq-dev libhiredis-dev libssl-dev libmicrohttpd-dev libjansson-dev
    libcmocka-dev prometheus curl
    postgresql redis-server redis-sentinel
    grpc-proto
    clang-format
    clang-14 libclang-rt-14-dev
    nodejs
)

# With --bench: what tests/bench adds (reservation_bench.sh draws its scale curve with gnuplot).
BENCH_PACKAGES=(gnuplot-nox)

# With --containers: Debian's podman (run with runc; see deploy/docker/README.md),
# podman-compose for deploy/compose.yaml, debootstrap to make the base image
# when no registry is reachable, uidmap for rootless podman.
CONTAINER_PACKAGES=(podman podman-compose runc debootstrap uidmap)

usage() {
    cat <<EOF
Usage: deploy/local/deps.sh [--bench] [--containers] [--help]

Installs the missing ones of these Debian packages (apt-get update once, then
apt-get install; through sudo when not root):
  ${PACKAGES[*]}
  npm (only when no npm command is found; some nodejs builds bring their own)
  with --bench also: ${BENCH_PACKAGES[*]} (for the load tools in tests/bench)
  with --containers also: ${CONTAINER_PACKAGES[*]} (deploy/docker, deploy/compose.yaml)

Then installs buf $BUF_VERSION with npm into $ROOT/.tools/
when $BUF_BIN is missing.

Prints what it installs; prints nothing when everything is present.
EOF
}

die() {
    echo "deps.sh: $*" >&2
    exit 1
}

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run '$*' and sudo is not installed"
    fi
}

# True when dpkg reports the package as fully installed.
is_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}

main() {
    local wanted=("${PACKAGES[@]}")
    while (($# > 0)); do
        case "$1" in
        --bench) wanted+=("${BENCH_PACKAGES[@]}") ;;
        --containers) wanted+=("${CONTAINER_PACKAGES[@]}") ;;
        -h | --help)
            usage
            return 0
            ;;
        *)
            usage >&2
            return 2
            ;;
        esac
        shift
    done

    command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this script needs Debian or Ubuntu"

    local missing=() pkg
    for pkg in "${wanted[@]}"; do
        is_installed "$pkg" || missing+=("$pkg")
    done
    # The nodejs package from other sources (e.g. NodeSource) already ships npm
    # and conflicts with Debian's npm package, so only ask for it when needed.
    if ! command -v npm >/dev/null 2>&1 && ! is_installed npm; then
        missing+=(npm)
    fi

    if ((${#missing[@]} > 0)); then
        echo "deps.sh: installing Debian packages: ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
    fi

    if [[ ! -x "$BUF_BIN" ]]; then
        command -v npm >/dev/null 2>&1 || die "npm not found after installing packages"
        echo "deps.sh: installing buf $BUF_VERSION into $ROOT/.tools/"
        npm install --prefix "$ROOT/.tools" --no-audit --no-fund --loglevel=error \
            "@bufbuild/buf@$BUF_VERSION"
        [[ -x "$BUF_BIN" ]] || die "npm finished but $BUF_BIN is missing"
    fi
}

main "$@"
