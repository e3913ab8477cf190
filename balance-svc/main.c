/*
 * main.c: balance-svc. Reads the configuration, applies the migrations,
 * wires the database pool, the lock-svc client and the service to the gRPC
 * server, runs until SIGTERM/SIGINT, shuts down.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "balance_service.h"
#include "balance_sweeper.h"
#include "svc/auth.h"
#include "svc/client.h"
#include "svc/config.h"
#include "svc/log.h"
#include "svc/pg.h"
#include "svc/server.h"
#include "svc/tls.h"

extern const unsigned char balance_descriptor_set[];
extern const size_t balance_descriptor_set_len;
extern const svc_migration_t balance_migrations[];
extern const int balance_migrations_count;

#define MIGRATE_PATIENCE_S 60 /* the database may still be starting */
#define PEER_PATIENCE_MS 5000 /* how long start-up waits for a peer's channel */

int
main(int argc, char **argv)
{
    const char *metrics_addr = NULL;
    svc_tls_opts_t tls = {0};
    const char *listen_addr = NULL, *database_url = NULL, *lock_addr = NULL;
    int64_t workers = 0, max_workers = 0, grace_ms = 0, db_pool = 0, stmt_timeout = 0;
    balance_limits_t limits = {0};
    int64_t max_batch = 0, sweep_interval_ms = 0;
    int64_t max_in_flight = 0, max_in_flight_per_peer = 0;
    svc_log_level_t log_level = SVC_LOG_INFO;
    svc_auth_opts_t auth_opts = {0};
    svc_auth_t *auth;
    svc_opt_t opts[] = {
        {"listen-addr", "LISTEN_ADDR", SVC_OPT_STRING, "127.0.0.1:50052", "address to serve on", 0,
         0, &listen_addr, 1},
        {"database-url", "DATABASE_URL", SVC_OPT_STRING,
         "postgresql://postgres@127.0.0.1:55432/balance", "libpq conninfo or URI", 0, 0,
         &database_url, 1},
        {"lock-svc-addr", "LOCK_SVC_ADDR", SVC_OPT_STRING, "127.0.0.1:50051",
         "lock-svc target (host:port, or several comma-separated)", 0, 0, &lock_addr, 1},
        {"db-pool", "DB_POOL", SVC_OPT_INT, "16", "database connections at most", 1, 1000, &db_pool,
         0},
        {"statement-timeout-ms", "STATEMENT_TIMEOUT_MS", SVC_OPT_INT, "5000",
         "longest a statement may run", 10, 600000, &stmt_timeout, 0},
        {"lock-wait-ms", "LOCK_WAIT_MS", SVC_OPT_INT, "5000",
         "how long to wait for an account's lock", 0, 60000, &limits.lock_wait_ms, 0},
        {"lock-lease-ms", "LOCK_LEASE_MS", SVC_OPT_INT, "10000", "lease of an account's lock", 100,
         300000, &limits.lock_lease_ms, 0},
        {"max-batch", "MAX_BATCH", SVC_OPT_INT, "64",
         "operations on one account served in one transaction at most", 1, 10000, &max_batch, 0},
        {"sweep-interval-ms", "SWEEP_INTERVAL_MS", SVC_OPT_INT, "1000",
         "how often expired authorizations are marked voided", 10, 3600000, &sweep_interval_ms, 0},
        SVC_OPTS_AUTH(&auth_opts),
        /* Its callers are reservation-svc's workers and TopUps: far fewer at once. */
        SVC_OPT_MAX_IN_FLIGHT(&max_in_flight, "5000"),
        SVC_OPT_MAX_IN_FLIGHT_PER_PEER(&max_in_flight_per_peer),
        SVC_OPT_METRICS(&metrics_addr),
        SVC_OPTS_TLS(&tls),
        SVC_OPTS_RUNTIME(&workers, &max_workers, &grace_ms, &log_level),
    };
    svc_server_opts_t sopts = {0};
    svc_pg_opts_t dbopts = {0};
    svc_server_t *server = NULL;
    balance_service_t *svc = NULL;
    balance_sweeper_t *sweeper = NULL;
    svc_client_t *lock_svc;
    svc_pg_pool_t *db;
    svc_err_t err;
    int rc = 1;

    svc_config_load_or_exit(opts, (int)(sizeof(opts) / sizeof(opts[0])), argc, argv,
                            "balance-svc: prepaid balances and their ledger "
                            "(balance.v1.BalanceService)");
    svc_tls_configure_or_exit(&tls, argv[0]);
    svc_log_init("balance-svc", log_level);
    auth = svc_auth_create_or_exit(&auth_opts, argv[0]);
    svc_server_prepare_process();
    limits.max_batch = (int)max_batch;
    dbopts.conninfo = database_url;
    dbopts.size = (int)db_pool;
    dbopts.statement_timeout_ms = (int)stmt_timeout;
    db = svc_pg_pool_create(&dbopts, &err);
    lock_svc = db != NULL ? svc_client_get(lock_addr, &err) : NULL;
    if (db == NULL || lock_svc == NULL) {
        fprintf(stderr, "%s: %s\n", argv[0], err.msg);
        svc_pg_pool_destroy(db);
        svc_auth_destroy(auth);
        return 2;
    }
    if (svc_pg_migrate_wait(db, balance_migrations, balance_migrations_count, MIGRATE_PATIENCE_S,
                            &err) != 0) {
        svc_log_kv(SVC_LOG_ERROR, "migrations failed", "error", err.msg, NULL);
        svc_pg_pool_destroy(db);
        svc_auth_destroy(auth);
        return 1;
    }
    /* A service that serves before its channel to lock-svc is up refuses its first calls. */
    if (svc_client_wait_ready(lock_svc, PEER_PATIENCE_MS, &err) != 0) {
        svc_log_kv(SVC_LOG_WARN, "lock-svc not reachable yet, starting anyway", "error", err.msg,
                   NULL);
    }
    sopts.service_name = "balance-svc";
    sopts.listen_addr = listen_addr;
    sopts.workers = (int)workers;
    sopts.max_workers = (int)max_workers;
    sopts.grace_ms = (int)grace_ms;
    sopts.max_in_flight = (int)max_in_flight;
    sopts.max_in_flight_per_peer = (int)max_in_flight_per_peer;
    sopts.metrics_addr = metrics_addr;
    sopts.tls = &tls;
    sopts.descriptors = balance_descriptor_set;
    sopts.descriptors_len = balance_descriptor_set_len;
    server = svc_server_create(&sopts, &err);
    if (server == NULL ||
        (svc = balance_service_create(server, db, lock_svc, &limits, auth, &err)) == NULL ||
        balance_service_register(svc, &err) != 0 ||
        (sweeper = balance_sweeper_create(db, sweep_interval_ms, &err)) == NULL ||
        svc_server_start(server, &err) != 0) {
        svc_log_kv(SVC_LOG_ERROR, "cannot start", "error", err.msg, NULL);
        goto out;
    }
    svc_log_kv(SVC_LOG_INFO, "balance-svc ready", "lock_svc", lock_addr, NULL);
    svc_server_wait_for_signal(server);
    rc = 0;
out:
    if (server != NULL) {
        svc_server_shutdown(server);
    }
    balance_sweeper_destroy(sweeper);
    balance_service_destroy(svc);
    svc_server_destroy(server);
    svc_pg_pool_destroy(db);
    svc_auth_destroy(auth);
    svc_client_release_all();
    return rc;
}
