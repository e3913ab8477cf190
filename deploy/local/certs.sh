#!/usr/bin/env bash
# deploy/local/certs.sh: a private CA and certificates for mTLS, made with openssl.
#
#   deploy/local/certs.sh DIR [NAME...] [--client NAME...]
#
# Makes DIR/ca.pem (and its key DIR/ca-key.pem) unless it exists, then for
# each NAME that has none yet DIR/NAME.pem and DIR/NAME-key.pem: a P-256
# key and a certificate signed by the CA, with common name NAME. A NAME
# before --client is a service's: good as a server and as a client, with the
# subject alternative names NAME, localhost and 127.0.0.1. A NAME after
# --client is a client's only (subject alternative name NAME, no server
# use), so that its holder cannot pose as a service. Default: lock-svc
# balance-svc reservation-svc --client client. Keys are mode 0600. Running it
# again keeps what is there; remove DIR to start over.
#
#   CERT_DAYS   validity of new certificates in days (default 365)
#   CERT_CN     the CA's common name (default "ticketing local CA")
set -euo pipefail

usage() { sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

case "${1:-}" in
-h | --help) usage; exit 0 ;;
'') usage >&2; exit 2 ;;
esac
dir=$1
shift
(($# > 0)) || set -- lock-svc balance-svc reservation-svc --client client
names=() kinds=() kind=service
for a in "$@"; do
    if [[ "$a" == --client ]]; then kind=client; continue; fi
    names+=("$a") kinds+=("$kind")
done
days=${CERT_DAYS:-365}
command -v openssl >/dev/null || { echo "certs.sh: openssl is not installed (apt-get install openssl)" >&2; exit 1; }

mkdir -p "$dir"
umask 077
if [[ ! -s "$dir/ca.pem" || ! -s "$dir/ca-key.pem" ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" -days "$((days * 2))" \
        -subj "/CN=${CERT_CN:-ticketing local CA}" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    chmod 644 "$dir/ca.pem"
    echo "certs.sh: made CA $dir/ca.pem"
fi

for i in "${!names[@]}"; do
    name=${names[$i]}
    if [[ ! "$name" =~ ^[A-Za-z0-9][A-Za-z0-9.-]*$ ]]; then
        echo "certs.sh: '$name' is not a host name (letters, digits, dots, dashes)" >&2
        exit 2
    fi
    [[ -s "$dir/$name.pem" && -s "$dir/$name-key.pem" ]] && continue
    ext=$(mktemp)
    csr=$(mktemp)
    if [[ ${kinds[$i]} == client ]]; then
        usage_ext="extendedKeyUsage=clientAuth" san="subjectAltName=DNS:$name"
    else
        usage_ext="extendedKeyUsage=serverAuth,clientAuth"
        san="subjectAltName=DNS:$name,DNS:localhost,IP:127.0.0.1"
    fi
    printf '%s\n' "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" "$usage_ext" "$san" >"$ext"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/$name-key.pem" -out "$csr" -subj "/CN=$name" 2>/dev/null
    openssl x509 -req -in "$csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
        -set_serial "0x$(openssl rand -hex 16)" -days "$days" -extfile "$ext" \
        -out "$dir/$name.pem" 2>/dev/null
    rm -f "$ext" "$csr"
    chmod 600 "$dir/$name-key.pem"
    chmod 644 "$dir/$name.pem"
    echo "certs.sh: made $dir/$name.pem (CN=$name, ${kinds[$i]})"
done
