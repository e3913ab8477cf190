#!/usr/bin/env bash
# buf_curl_test.sh SERVER: a real external client (buf curl, over plaintext
# HTTP/2 and server reflection) sees the test service, health and reflection.
set -euo pipefail

server=${1:?usage: buf_curl_test.sh path/to/svctest-server}
root=$(cd "$(dirname "$0")/../.." && pwd)
buf=${BUF:-$root/.tools/node_modules/.bin/buf}
[ -x "$buf" ] || { echo "buf not found at $buf (run deploy/local/deps.sh)"; exit 1; }

# A free port below the ephemeral range, so no outgoing connection can take it
# first: one where nothing answers a connect.
port=""
for _ in $(seq 200); do
  p=$((20000 + RANDOM % 12000))
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || { echo "no free port found"; exit 1; }
url="http://127.0.0.1:$port"
log=$(mktemp)
"$server" --listen-addr "127.0.0.1:$port" --log-level warn 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log"' EXIT

bcurl() { "$buf" curl --protocol grpc --http2-prior-knowledge "$@"; }

for _ in $(seq 100); do
  bcurl "$url/grpc.health.v1.Health/Check" >/dev/null 2>&1 && break
  sleep 0.1
done

fail() { echo "FAIL: $*"; cat "$log"; exit 1; }

services=$(bcurl --list-services "$url")
echo "$services"
for s in svctest.v1.TestService grpc.health.v1.Health grpc.reflection.v1.ServerReflection \
         grpc.reflection.v1alpha.ServerReflection; do
  grep -qx "$s" <<<"$services" || fail "--list-services misses $s"
done

methods=$(bcurl --list-methods "$url")
grep -qx "svctest.v1.TestService/Echo" <<<"$methods" || fail "--list-methods misses Echo"

out=$(bcurl -d '{"message":"hello from buf"}' "$url/svctest.v1.TestService/Echo")
echo "$out"
grep -q '"message": *"hello from buf"' <<<"$out" || fail "Echo did not echo"

out=$(bcurl -d '{"count":3}' "$url/svctest.v1.TestService/Count")
[ "$(grep -c '"n"' <<<"$out")" = 3 ] || fail "Count did not stream 3 messages: $out"

out=$(bcurl -d '{}' "$url/grpc.health.v1.Health/Check")
echo "$out"
grep -q '"status": *"SERVING"' <<<"$out" || fail "health is not SERVING"

# An error keeps its code through to the external client.
if out=$(bcurl -d '{"count":-1}' "$url/svctest.v1.TestService/Count" 2>&1); then
  fail "Count -1 should fail"
fi
grep -qi "invalid_argument\|invalid argument" <<<"$out" || fail "expected invalid_argument: $out"
echo "2 passed, 0 failed"
