/*
 * main.c: reservation-svc. Reads the configuration, applies the migrations,
 * wires the database pool, the lock-svc client and the service to the gRPC
 * server, runs until SIGTERM/SIGINT, shuts down.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "reservation_service.h"
#include "svc/auth.h"
#include "svc/client.h"
#include "svc/config.h"
#include "svc/log.h"
#include "svc/pg.h"
#include "svc/server.h"
#include "svc/tls.h"

extern const unsigned char reservation_descriptor_set[];
extern const size_t reservation_descriptor_set_len;
extern const svc_migration_t reservation_migrations[];
extern const int reservation_migrations_count;

#define MIGRATE_PATIENCE_S 60 /* the database may still be starting */
#define PEER_PATIENCE_MS 5000 /* how long start-up waits for a peer's channel */

int
main(int argc, char **argv)
{
    const char *metrics_addr = NULL;
    svc_tls_opts_t tls = {0};
    const char *listen_addr = NULL, *database_url = NULL, *lock_addr = NULL, *balance_addr = NULL;
    const char *admission_key_file = NULL, *admin_token_env = NULL, *admin_token_file = NULL;
    static char admin_token[RSV_ADMIN_TOKEN_MAX + 1];
    int64_t workers = 0, max_workers = 0, grace_ms = 0, db_pool = 0, stmt_timeout = 0;
    int64_t max_streams = 0;
    reservation_opts_t ropts = {0};
    int64_t max_in_flight = 0, max_in_flight_per_peer = 0;
    svc_log_level_t log_level = SVC_LOG_INFO;
    svc_auth_opts_t auth_opts = {0};
    svc_auth_t *auth;
    svc_opt_t opts[] = {
        {"listen-addr", "LISTEN_ADDR", SVC_OPT_STRING, "127.0.0.1:50053", "address to serve on", 0,
         0, &listen_addr, 1},
        {"database-url", "DATABASE_URL", SVC_OPT_STRING,
         "postgresql://postgres@127.0.0.1:55432/reservation", "libpq conninfo or URI", 0, 0,
         &database_url, 1},
        {"lock-svc-addr", "LOCK_SVC_ADDR", SVC_OPT_STRING, "127.0.0.1:50051",
         "lock-svc target (host:port, or several comma-separated)", 0, 0, &lock_addr, 1},
        {"balance-svc-addr", "BALANCE_SVC_ADDR", SVC_OPT_STRING, "127.0.0.1:50052",
         "balance-svc target (payments)", 0, 0, &balance_addr, 1},
        /* A secret: never a flag (it would show in ps); ADMIN_TOKEN_FILE is better still. */
        {NULL, "ADMIN_TOKEN", SVC_OPT_STRING, "",
         "secret for CreateConcert (authorization: Bearer <token>), 32 to 1024 bytes; "
         "environment only",
         0, 0, &admin_token_env, 0},
        {"admin-token-file", "ADMIN_TOKEN_FILE", SVC_OPT_STRING, "",
         "file holding the admin token (one trailing newline dropped); wins over ADMIN_TOKEN", 0, 0,
         &admin_token_file, 0},
        {"hold-ttl-ms", "HOLD_TTL_MS", SVC_OPT_INT, "300000", "how long a hold lasts", 100,
         82800000, &ropts.hold_ttl_ms, 0}, /* + PAY_GRACE_MS: within Authorize's 24 h */
        {"sweep-ms", "SWEEP_MS", SVC_OPT_INT, "1000", "how often expired holds are swept", 10,
         600000, &ropts.sweep_ms, 0},
        {"pay-grace-ms", "PAY_GRACE_MS", SVC_OPT_INT, "300000",
         "how long past its hold a payment's authorization can still be captured", 1000, 3600000,
         &ropts.pay_grace_ms, 0},
        {"lock-wait-ms", "LOCK_WAIT_MS", SVC_OPT_INT, "2000", "how long to wait for a seat's lock",
         0, 60000, &ropts.lock_wait_ms, 0},
        {"lock-lease-ms", "LOCK_LEASE_MS", SVC_OPT_INT, "10000", "lease of a seat's lock", 100,
         300000, &ropts.lock_lease_ms, 0},
        {"db-pool", "DB_POOL", SVC_OPT_INT, "16", "database connections at most", 1, 1000, &db_pool,
         0},
        {"statement-timeout-ms", "STATEMENT_TIMEOUT_MS", SVC_OPT_INT, "5000",
         "longest a statement may run", 10, 600000, &stmt_timeout, 0},
        {"admission-key-file", "ADMISSION_KEY_FILE", SVC_OPT_STRING, "",
         "file with the key (32..256 bytes) that signs waiting-room admissions; the same for"
         " every instance (unset: a random key, tokens valid on this instance only)",
         0, 0, &admission_key_file, 0},
        {"room-place-ms", "ROOM_PLACE_MS", SVC_OPT_INT, "60000",
         "how long a place in a waiting room's line is kept for a user who stopped watching", 1000,
         3600000, &ropts.room_place_ms, 0},
        {"max-streams", "MAX_STREAMS", SVC_OPT_INT, "1000",
         "calls one client connection may have in flight; more wait in the client (0: no limit)", 0,
         1000000, &max_streams, 0},
        SVC_OPTS_AUTH(&auth_opts),
        /* 10 000 WatchWaitingRoom streams at once (waiting-room-bench), or a 10 000-user
         * storm over several connections, must fit: 15 000 take ~150 MB. */
        SVC_OPT_MAX_IN_FLIGHT(&max_in_flight, "15000"),
        SVC_OPT_MAX_IN_FLIGHT_PER_PEER(&max_in_flight_per_peer),
        SVC_OPT_METRICS(&metrics_addr),
        SVC_OPTS_TLS(&tls),
        SVC_OPTS_RUNTIME(&workers, &max_workers, &grace_ms, &log_level),
    };
    svc_server_opts_t sopts = {0};
    svc_pg_opts_t dbopts = {0};
    svc_server_t *server = NULL;
    reservation_service_t *svc = NULL;
    svc_client_t *lock_svc, *balance_svc;
    svc_pg_pool_t *db;
    svc_err_t err;
    int rc = 1;

    svc_config_load_or_exit(opts, (int)(sizeof(opts) / sizeof(opts[0])), argc, argv,
                            "reservation-svc: concerts, seat holds that expire, payments "
                            "(reservation.v1.ReservationService)");
    svc_tls_configure_or_exit(&tls, argv[0]);
    svc_log_init("reservation-svc", log_level);
    if (rsv_admin_token_load(admin_token_env, admin_token_file, admin_token, &err) != 0) {
        fprintf(stderr, "%s: %s\n", argv[0], err.msg);
        return 2;
    }
    ropts.admin_token = admin_token;
    if (admission_key_file != NULL && admission_key_file[0] != '\0') {
        if (rsv_admission_key_load(&ropts.admission_key, admission_key_file, &err) != 0) {
            fprintf(stderr, "%s: ADMISSION_KEY_FILE: %s\n", argv[0], err.msg);
            return 2;
        }
    } else if (rsv_admission_key_random(&ropts.admission_key, &err) != 0) {
        fprintf(stderr, "%s: %s\n", argv[0], err.msg);
        return 1;
    } else {
        svc_log_kv(SVC_LOG_WARN,
                   "ADMISSION_KEY_FILE not set: waiting-room admissions are signed with a random"
                   " key, so other instances refuse them",
                   NULL);
    }
    auth = svc_auth_create_or_exit(&auth_opts, argv[0]);
    ropts.auth = auth;
    svc_server_prepare_process();
    dbopts.conninfo = database_url;
    dbopts.size = (int)db_pool;
    dbopts.statement_timeout_ms = (int)stmt_timeout;
    db = svc_pg_pool_create(&dbopts, &err);
    lock_svc = db != NULL ? svc_client_get(lock_addr, &err) : NULL;
    balance_svc = lock_svc != NULL ? svc_client_get(balance_addr, &err) : NULL;
    if (db == NULL || lock_svc == NULL || balance_svc == NULL) {
        fprintf(stderr, "%s: %s\n", argv[0], err.msg);
        svc_pg_pool_destroy(db);
        svc_auth_destroy(auth);
        return 2;
    }
    if (svc_pg_migrate_wait(db, reservation_migrations, reservation_migrations_count,
                            MIGRATE_PATIENCE_S, &err) != 0) {
        svc_log_kv(SVC_LOG_ERROR, "migrations failed", "error", err.msg, NULL);
        svc_pg_pool_destroy(db);
        svc_auth_destroy(auth);
        return 1;
    }
    /* A service that serves before its channels to its peers are up refuses its first calls. */
    for (int i = 0; i < 2; i++) {
        if (svc_client_wait_ready(i == 0 ? lock_svc : balance_svc, PEER_PATIENCE_MS, &err) != 0) {
            svc_log_kv(SVC_LOG_WARN, "peer not reachable yet, starting anyway", "peer",
                       i == 0 ? lock_addr : balance_addr, "error", err.msg, NULL);
        }
    }
    sopts.service_name = "reservation-svc";
    sopts.listen_addr = listen_addr;
    sopts.workers = (int)workers;
    sopts.max_workers = (int)max_workers;
    sopts.grace_ms = (int)grace_ms;
    sopts.max_in_flight = (int)max_in_flight;
    sopts.max_in_flight_per_peer = (int)max_in_flight_per_peer;
    sopts.metrics_addr = metrics_addr;
    sopts.tls = &tls;
    sopts.max_streams = (int)max_streams;
    sopts.descriptors = reservation_descriptor_set;
    sopts.descriptors_len = reservation_descriptor_set_len;
    server = svc_server_create(&sopts, &err);
    if (server == NULL ||
        (svc = reservation_service_create(server, db, lock_svc, balance_svc, &ropts, &err)) ==
            NULL ||
        reservation_service_register(svc, &err) != 0 || svc_server_start(server, &err) != 0) {
        svc_log_kv(SVC_LOG_ERROR, "cannot start", "error", err.msg, NULL);
        goto out;
    }
    svc_log_kv(SVC_LOG_INFO, "reservation-svc ready", "lock_svc", lock_addr, NULL);
    svc_server_wait_for_signal(server);
    rc = 0;
out:
    if (server != NULL) {
        svc_server_shutdown(server);
    }
    reservation_service_destroy(svc);
    svc_server_destroy(server);
    svc_pg_pool_destroy(db);
    svc_auth_destroy(auth);
    svc_client_release_all();
    return rc;
}
