#!/usr/bin/env bash
# containers_test.sh BUILD_DIR: the images of deploy/docker and the stack of
# deploy/compose.yaml, for real: installs podman and podman-compose
# (deploy/local/deps.sh --containers), makes the base image with debootstrap
# (deploy/docker/base.sh; its tarball is cached in ~/.cache/ticketing), builds
# the five images, checks the services' sizes, brings the stack up on free
# ports with podman-compose, waits until every container is healthy, runs the
# conformance suite (BUILD_DIR/tests/integration/conformance) in external mode
# against it, and always tears it down. Podman runs as DESIGN.md §6 says
# works here: runc, cgroupfs, the host's network, no default ulimits.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD_DIR=$(cd "${1:?usage: containers_test.sh BUILD_DIR}" && pwd)
shift
CONFORMANCE=$BUILD_DIR/tests/integration/conformance
# The services' images must stay under this many bytes (podman's MB: 10^6).
MAX_IMAGE_BYTES=${MAX_IMAGE_BYTES:-120000000}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-180}
export BASE_IMAGE=${BASE_IMAGE:-localhost/ticketing/base:bookworm}

say() { echo "containers_test.sh: $(date -u +%T) $*"; }
die() {
    echo "containers_test.sh: $*" >&2
    exit 1
}

[[ -x "$CONFORMANCE" ]] || die "$CONFORMANCE not built"
if [[ $(id -u) -ne 0 ]]; then
    say "SKIP: needs root (debootstrap, podman with runc and cgroupfs)"
    exit 77
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/containers-test.XXXXXX")
chmod 755 "$WORK"
PROJECT=ctrtest$$
# Debian's podman-compose 1.0.3 needs the shim for network_mode: host (see it).
COMPOSE=(podman-compose --podman-path "$ROOT/deploy/docker/podman-hostnet" -p "$PROJECT"
    -f "$ROOT/deploy/compose.yaml")
up=0
cleanup() {
    local rc=$?
    if ((up)); then
        if ((rc != 0)); then
            say "logs of the containers that are not healthy:"
            for name in $(podman ps -a --filter "label=io.podman.compose.project=$PROJECT" \
                --format '{{.Names}}'); do
                podman healthcheck run "$name" >/dev/null 2>&1 && continue
                echo "--- $name" >&2
                podman logs --tail 20 "$name" >&2 2>&1 || true
            done
        fi
        say "tearing the stack down"
        "${COMPOSE[@]}" down -t 5 >"$WORK/down.out" 2>&1 || cat "$WORK/down.out" >&2
        # podman-compose 1.0.3 makes this network (unused: host network) and leaves it.
        podman network rm -f "${PROJECT}_default" >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT

t0=$SECONDS
phase() {
    say "$1 took $((SECONDS - t0)) s"
    t0=$SECONDS
}

# ---- tools, and podman set up as it works here
"$ROOT/deploy/local/deps.sh" --containers
export CONTAINERS_CONF=$ROOT/deploy/docker/containers.conf
phase "deps.sh --containers"

# ---- images
"$ROOT/deploy/docker/base.sh"
phase "base image"
for target in lock-svc balance-svc reservation-svc postgres redis; do
    podman build --network host -f "$ROOT/deploy/docker/Dockerfile" \
        --build-arg BASE_IMAGE="$BASE_IMAGE" --target "$target" -t "ticketing/$target" \
        "$ROOT" >"$WORK/build-$target.log" 2>&1 ||
        {
            tail -n 30 "$WORK/build-$target.log" >&2
            die "podman build --target $target failed"
        }
done
phase "podman build (5 images)"

too_big=0
for target in lock-svc balance-svc reservation-svc postgres redis; do
    size=$(podman image inspect --format '{{.Size}}' "ticketing/$target")
    say "image ticketing/$target: $((size / 1000000)) MB"
    case "$target" in
    *-svc) ((size < MAX_IMAGE_BYTES)) || too_big=1 ;;
    esac
done
((too_big == 0)) || die "a service's image is not under $((MAX_IMAGE_BYTES / 1000000)) MB"
for target in lock-svc balance-svc reservation-svc; do
    user=$(podman image inspect --format '{{.Config.User}}' "ticketing/$target")
    [[ "$user" == 10001 ]] || die "ticketing/$target runs as '$user', not 10001"
done

# ---- the stack, on free ports
mapfile -t p < <("$CONFORMANCE" --free-ports 18)
((${#p[@]} == 18)) || die "no free ports"
export PG_PORT=${p[0]} REDIS_PORT=${p[1]} REDIS_REPLICA_PORT=${p[2]}
export SENTINEL_PORT_1=${p[3]} SENTINEL_PORT_2=${p[4]} SENTINEL_PORT_3=${p[5]}
export LOCK_PORT_1=${p[6]} LOCK_PORT_2=${p[7]} BALANCE_PORT_1=${p[8]} BALANCE_PORT_2=${p[9]}
export RESERVATION_PORT_1=${p[10]} RESERVATION_PORT_2=${p[11]}
export LOCK_METRICS_PORT_1=${p[12]} LOCK_METRICS_PORT_2=${p[13]}
export BALANCE_METRICS_PORT_1=${p[14]} BALANCE_METRICS_PORT_2=${p[15]}
export RESERVATION_METRICS_PORT_1=${p[16]} RESERVATION_METRICS_PORT_2=${p[17]}
export LOG_LEVEL=warn
ADMIN_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export ADMIN_TOKEN
export ADMISSION_KEY_FILE=$WORK/admission-key
(umask 022 && head -c 48 /dev/urandom | base64 >"$ADMISSION_KEY_FILE")

say "podman-compose up (project $PROJECT, PostgreSQL $PG_PORT, Redis $REDIS_PORT," \
    "Sentinels $SENTINEL_PORT_1-$SENTINEL_PORT_3, services ${p[6]}-${p[11]})"
up=1
"${COMPOSE[@]}" up -d >"$WORK/up.out" 2>&1 || {
    cat "$WORK/up.out" >&2
    die "podman-compose up failed"
}
phase "podman-compose up"

# Health checks run when asked: podman times them with systemd, which the
# containers here do without, so ask each container until all say healthy.
mapfile -t names < <(podman ps -a --filter "label=io.podman.compose.project=$PROJECT" \
    --format '{{.Names}}')
((${#names[@]} == 12)) || die "expected 12 containers, found ${#names[@]}: ${names[*]}"
deadline=$((SECONDS + HEALTH_TIMEOUT))
for name in "${names[@]}"; do
    until podman healthcheck run "$name" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "$name not healthy after ${HEALTH_TIMEOUT} s"
        sleep 1
    done
done
phase "all 12 containers healthy"

# ---- the conformance suite, through both instances of each service
export LOCK_ADDR=127.0.0.1:$LOCK_PORT_1,127.0.0.1:$LOCK_PORT_2
export BALANCE_ADDR=127.0.0.1:$BALANCE_PORT_1,127.0.0.1:$BALANCE_PORT_2
export RESERVATION_ADDR=127.0.0.1:$RESERVATION_PORT_1,127.0.0.1:$RESERVATION_PORT_2
export RESERVATION_DATABASE_URL=postgresql://postgres@127.0.0.1:$PG_PORT/reservation
export BALANCE_DATABASE_URL=postgresql://postgres@127.0.0.1:$PG_PORT/balance
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT
if (($# == 0)); then
    mapfile -t scenarios < <("$CONFORMANCE" --list | awk '$2 != "fault" { print $1 }')
    set -- "${scenarios[@]}"
fi
status=0
"$CONFORMANCE" --results "$BUILD_DIR/conformance-containers.tsv" "$@" || status=$?
phase "conformance suite"
((status == 0)) || die "the suite failed (status $status) against the compose stack"
say "the suite passed against the compose stack"
