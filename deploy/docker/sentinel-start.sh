#!/bin/sh
# Starts one Sentinel of deploy/compose.yaml on SENTINEL_PORT, watching the
# master "mymaster" at MASTER_HOST:MASTER_PORT. Its config is written at start
# (the Sentinel rewrites it with what it learns) in a folder it may write.
set -eu

conf=/tmp/sentinel-$SENTINEL_PORT.conf
cat >"$conf" <<CONF
port $SENTINEL_PORT
bind ${BIND:-127.0.0.1}
dir /tmp
sentinel monitor mymaster ${MASTER_HOST:-127.0.0.1} $MASTER_PORT 2
sentinel down-after-milliseconds mymaster 5000
sentinel failover-timeout mymaster 30000
sentinel parallel-syncs mymaster 1
CONF
exec redis-sentinel "$conf"
