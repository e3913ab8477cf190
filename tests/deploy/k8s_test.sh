#!/usr/bin/env bash
# k8s_test.sh: renders deploy/k8s (the base and overlays/production) with
# `kubectl kustomize`, offline, and checks the result with k8s_check.py:
# probes, resources and a non-root read-only securityContext on every
# Deployment, a PodDisruptionBudget each, every ConfigMap and Secret key that
# is referenced exists, every setting is one the service reads, and production
# runs no PostgreSQL or Redis of its own and takes their URLs from a Secret.
#
#   tests/deploy/k8s_test.sh [K8S_DIR]   K8S_DIR: default deploy/k8s of this checkout
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
K8S_DIR=${1:-$ROOT/deploy/k8s}

die() {
    echo "k8s_test.sh: $*" >&2
    exit 1
}

# As deploy/local/deps.sh: directly when root, else through sudo.
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run '$*' and sudo is not installed"
    fi
}

# Prints a python3 that has the yaml module: the one on PATH, else Debian's.
find_python() {
    local py
    for py in python3 /usr/bin/python3; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import yaml' 2>/dev/null; then
            echo "$py"
            return 0
        fi
    done
    return 1
}

if ! command -v kubectl >/dev/null 2>&1; then
    cat >&2 <<'MSG'
k8s_test.sh: kubectl not found. It renders the manifests offline (no cluster
needed) and must be 1.27 or later, for kustomize v5: Debian's kubernetes-client
package (1.20) is too old. Install the kubectl package from the Kubernetes
project's apt repository (pkgs.k8s.io, see
https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/) or from the
Google Cloud SDK's, then run this again.
MSG
    exit 1
fi

if ! PY=$(find_python); then
    echo "k8s_test.sh: installing python3-yaml (the checks read YAML)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-yaml
    PY=$(find_python) || die "python3-yaml installed, yet no python3 imports yaml"
fi

[[ -d $K8S_DIR/base && -d $K8S_DIR/overlays/production ]] ||
    die "$K8S_DIR has no base/ and overlays/production/"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Prints the rendered manifests of dir into file, or the error and the version.
render() {
    local dir=$1 file=$2
    if ! kubectl kustomize "$dir" >"$file" 2>"$out/err"; then
        cat "$out/err" >&2
        die "kubectl kustomize $dir failed (kubectl $(kubectl version --client 2>/dev/null |
            tr '\n' ' '); kustomize v5 or later is needed)"
    fi
}

render "$K8S_DIR/base" "$out/base.yaml"
render "$K8S_DIR/overlays/production" "$out/production.yaml"

status=0
"$PY" "$ROOT/tests/deploy/k8s_check.py" "$ROOT" base "$out/base.yaml" || status=1
"$PY" "$ROOT/tests/deploy/k8s_check.py" "$ROOT" production "$out/production.yaml" --production ||
    status=1
if ((status != 0)); then
    die "deploy/k8s has problems (listed above)"
fi
echo "k8s_test.sh: base and production render and pass"
