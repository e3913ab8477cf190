#!/bin/sh
# Starts the try-it PostgreSQL of deploy/compose.yaml: a new cluster in PGDATA
# on first start (trust authentication: for trying it out, never production)
# with the databases balance and reservation; each service migrates its own.
set -eu

PGDATA=${PGDATA:-/var/lib/postgresql/data}
PGPORT=${PGPORT:-5432}
LISTEN_ADDRESSES=${LISTEN_ADDRESSES:-127.0.0.1}
bin=/usr/lib/postgresql/15/bin

if [ ! -f "$PGDATA/PG_VERSION" ]; then
    "$bin/initdb" -D "$PGDATA" -U postgres --auth=trust --encoding=UTF8 --no-locale >/dev/null
    for db in balance reservation; do
        echo "CREATE DATABASE $db;"
    done | "$bin/postgres" --single -D "$PGDATA" postgres >/dev/null
    echo "postgres-start: made a cluster in $PGDATA with databases balance, reservation"
fi
exec "$bin/postgres" -D "$PGDATA" -p "$PGPORT" -c listen_addresses="$LISTEN_ADDRESSES" \
    -c unix_socket_directories=/run/postgresql -c max_connections=200
