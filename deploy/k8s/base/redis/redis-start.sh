#!/bin/sh
# Starts one Redis of the try-it StatefulSet (redis.yaml): a replica of the
# master the Sentinels know; when none knows one yet (first start), redis-0
# is the master and the others replicate it.
set -eu

me="$POD_NAME.redis"

# Prints the master's host as the first Sentinel that knows it says.
ask_sentinels() {
    for i in 0 1 2; do
        host=$(timeout 2 redis-cli -h "redis-sentinel-$i.redis-sentinel" -p 26379 --raw \
            SENTINEL get-master-addr-by-name mymaster 2>/dev/null | head -n 1) || true
        if [ -n "$host" ]; then
            echo "$host"
            return 0
        fi
    done
    return 1
}

master=$(ask_sentinels) || master=""
if [ -z "$master" ]; then
    if [ "$POD_NAME" = redis-0 ]; then master=$me; else master=redis-0.redis; fi
fi

# No persistence: the replica and the Sentinels keep it available, and
# lock-svc's fences stay safe when Redis loses its data (README, lock-svc).
set -- redis-server --port 6379 --dir /data --save "" --appendonly no \
    --protected-mode no --replica-announce-ip "$me"
if [ "$master" != "$me" ]; then
    set -- "$@" --replicaof "$master" 6379
fi
echo "redis-start: $me, master $master"
exec "$@"
