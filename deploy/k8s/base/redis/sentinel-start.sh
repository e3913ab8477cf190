#!/bin/sh
# Starts one Sentinel of the try-it StatefulSet (redis.yaml). The config is
# written once per pod: a Sentinel rewrites it with what it learns, and keeps
# that across container restarts. Hostnames, not pod IPs, name every Redis
# and Sentinel, so a restarted pod is found again at its new IP.
set -eu

conf=/sentinel/sentinel.conf
me="$POD_NAME.redis-sentinel"

if [ ! -f "$conf" ]; then
    master=""
    for i in 0 1 2; do
        host=$(timeout 2 redis-cli -h "redis-sentinel-$i.redis-sentinel" -p 26379 --raw \
            SENTINEL get-master-addr-by-name mymaster 2>/dev/null | head -n 1) || true
        if [ -n "$host" ]; then
            master=$host
            break
        fi
    done
    [ -n "$master" ] || master=redis-0.redis
    # resolve-hostnames refuses a monitor line whose host does not resolve yet.
    until getent hosts "$master" >/dev/null; do
        echo "sentinel-start: waiting for $master to resolve"
        sleep 2
    done
    cat >"$conf.tmp" <<CONF
port 26379
dir /sentinel
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $me
sentinel monitor mymaster $master 6379 2
sentinel down-after-milliseconds mymaster 5000
sentinel failover-timeout mymaster 30000
sentinel parallel-syncs mymaster 1
CONF
    mv "$conf.tmp" "$conf"
    echo "sentinel-start: $me, monitoring $master"
fi
exec redis-server "$conf" --sentinel
