#!/usr/bin/env bash
# base.sh: makes the local base image the Dockerfile builds FROM when no image
# registry is reachable: Debian bookworm from the Debian mirror with
# debootstrap (minbase), trimmed like debian:bookworm-slim, podman-imported.
# The root filesystem is kept as a tarball (BASE_CACHE) and reused.
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-localhost/ticketing/base:bookworm}
BASE_CACHE=${BASE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ticketing/bookworm-minbase.tar}
PODMAN=${PODMAN:-podman}

usage() {
    cat <<EOF
Usage: deploy/docker/base.sh [--help]

Makes the podman image BASE_IMAGE (now $BASE_IMAGE) unless it exists:
imports BASE_CACHE (now $BASE_CACHE), first making it with
'debootstrap --variant=minbase bookworm' from MIRROR (default: the first
Debian URI in /etc/apt/sources.list*, else http://deb.debian.org/debian)
and trimming it as debian:bookworm-slim is trimmed (no docs, man pages,
locales, apt lists; dpkg keeps leaving them out).
Needs root (debootstrap), podman and debootstrap (deploy/local/deps.sh --containers).
PODMAN: the podman command with its options (default podman).
EOF
}

say() { echo "base.sh: $*"; }
die() {
    echo "base.sh: $*" >&2
    exit 1
}

# The Debian mirror apt uses here (deb822 'URIs:' or one-line 'deb' form).
find_mirror() {
    local uri
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '$1 == "URIs:" { print $2 }
             $1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; break } }' |
        grep -v -- '-security' | head -n 1) || true
    echo "${uri:-http://deb.debian.org/debian}"
}

make_tarball() {
    local mirror=${MIRROR:-$(find_mirror)} root
    [[ $(id -u) -eq 0 ]] || die "debootstrap needs root"
    command -v debootstrap >/dev/null || die "debootstrap not found (deploy/local/deps.sh --containers)"
    root=$(mktemp -d "${TMPDIR:-/var/tmp}/ticketing-base.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$root' '$root.log'" EXIT
    say "debootstrap --variant=minbase bookworm from $mirror (a few minutes, once)"
    debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 ||
        {
            tail -n 20 "$root.log" >&2
            die "debootstrap failed"
        }
    # What debian:bookworm-slim leaves out, now and in every later apt-get install.
    cat >"$root/etc/dpkg/dpkg.cfg.d/slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
CFG
    cat >"$root/etc/apt/apt.conf.d/slim" <<'CFG'
APT::Install-Recommends "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
CFG
    find "$root/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true
    rm -rf "$root"/usr/share/{man,info,locale,lintian}/* "$root"/var/lib/apt/lists/* \
        "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log \
        "$root"/tmp/*
    mkdir -p "$(dirname "$BASE_CACHE")"
    tar -C "$root" --numeric-owner -cf "$BASE_CACHE.tmp" . && mv "$BASE_CACHE.tmp" "$BASE_CACHE"
    say "kept the root filesystem in $BASE_CACHE ($(du -h "$BASE_CACHE" | cut -f1))"
}

main() {
    case "${1:-}" in
    -h | --help)
        usage
        return 0
        ;;
    "") ;;
    *)
        usage >&2
        return 2
        ;;
    esac
    # shellcheck disable=SC2086
    if $PODMAN image exists "$BASE_IMAGE"; then
        return 0
    fi
    [[ -s "$BASE_CACHE" ]] || (make_tarball)
    say "importing $BASE_CACHE as $BASE_IMAGE"
    # shellcheck disable=SC2086
    $PODMAN import -q --change 'CMD ["/bin/bash"]' "$BASE_CACHE" "$BASE_IMAGE" >/dev/null
}

main "$@"
