/*
 * main.c: lock-svc. Reads the configuration, wires the Redis store, the
 * service and the gRPC server together, runs until SIGTERM/SIGINT, shuts down.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "lock_redis.h"
#include "lock_service.h"
#include "lock_store.h"
#include "svc/auth.h"
#include "svc/client.h"
#include "svc/config.h"
#include "svc/log.h"
#include "svc/server.h"
#include "svc/tls.h"

extern const unsigned char lock_descriptor_set[];
extern const size_t lock_descriptor_set_len;

/* CPUs this process may run on. */
static int
cpus_available(void)
{
    cpu_set_t set;
    long n;

    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) {
        return CPU_COUNT(&set);
    }
    n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int
main(int argc, char **argv)
{
    const char *metrics_addr = NULL;
    svc_tls_opts_t tls = {0};
    const char *listen_addr = NULL, *redis_url = NULL;
    int64_t workers = 0, max_workers = 0, grace_ms = 0, redis_pool = 0, cq_threads = 0;
    lock_limits_t limits = {0};
    int64_t max_in_flight = 0, max_in_flight_per_peer = 0;
    svc_log_level_t log_level = SVC_LOG_INFO;
    svc_auth_opts_t auth_opts = {0};
    svc_auth_t *auth;
    svc_opt_t opts[] = {
        {"listen-addr", "LISTEN_ADDR", SVC_OPT_STRING, "127.0.0.1:50051", "address to serve on", 0,
         0, &listen_addr, 1},
        {"redis-url", "REDIS_URL", SVC_OPT_STRING, "redis://127.0.0.1:6379/0",
         "redis://host:port[/db] or redis-sentinel://h1:p1,h2:p2/mastername", 0, 0, &redis_url, 1},
        {"redis-pool", "REDIS_POOL", SVC_OPT_INT, "64",
         "Redis connections at most (one pipelined connection and thread per CPU, up to this)", 1,
         1024, &redis_pool, 0},
        {"cq-threads", "CQ_THREADS", SVC_OPT_INT, "0",
         "gRPC completion-queue threads (0: half the CPUs, at least one)", 0, 256, &cq_threads, 0},
        {"default-lease-ms", "DEFAULT_LEASE_MS", SVC_OPT_INT, "10000", "lease when lease_ms is 0",
         1, 3600000, &limits.default_lease_ms, 0},
        {"max-lease-ms", "MAX_LEASE_MS", SVC_OPT_INT, "300000", "longest lease granted", 1,
         86400000, &limits.max_lease_ms, 0},
        {"max-wait-ms", "MAX_WAIT_MS", SVC_OPT_INT, "60000", "longest wait_ms accepted", 0, 3600000,
         &limits.max_wait_ms, 0},
        {"max-sem-lease-ms", "MAX_SEM_LEASE_MS", SVC_OPT_INT, "86400000",
         "longest semaphore permit lease or place TTL granted", 1, 604800000,
         &limits.max_sem_lease_ms, 0},
        SVC_OPT_AUTH_PEERS(&auth_opts),
        /* Its callers are the services, whose workers and gates bound what they send. */
        SVC_OPT_MAX_IN_FLIGHT(&max_in_flight, "5000"),
        SVC_OPT_MAX_IN_FLIGHT_PER_PEER(&max_in_flight_per_peer),
        SVC_OPT_METRICS(&metrics_addr),
        SVC_OPTS_TLS(&tls),
        SVC_OPTS_RUNTIME(&workers, &max_workers, &grace_ms, &log_level),
    };
    svc_server_opts_t sopts = {0};
    svc_server_t *server = NULL;
    lock_service_t *svc = NULL;
    lock_store_t *store;
    svc_err_t err;
    int rc = 1;

    svc_config_load_or_exit(opts, (int)(sizeof(opts) / sizeof(opts[0])), argc, argv,
                            "lock-svc: leased, fenced locks over Redis (lock.v1.LockService)");
    svc_tls_configure_or_exit(&tls, argv[0]);
    if (limits.default_lease_ms > limits.max_lease_ms) {
        fprintf(stderr,
                "%s: --default-lease-ms (DEFAULT_LEASE_MS) must not exceed "
                "--max-lease-ms (MAX_LEASE_MS)\n",
                argv[0]);
        return 2;
    }
    svc_log_init("lock-svc", log_level);
    auth = svc_auth_create_or_exit(&auth_opts, argv[0]);
    store = lock_store_create(redis_url, (int)redis_pool, &err);
    if (store == NULL) {
        fprintf(stderr, "%s: %s\n", argv[0], err.msg);
        svc_auth_destroy(auth);
        return 2;
    }
    svc_server_prepare_process();
    sopts.service_name = "lock-svc";
    sopts.listen_addr = listen_addr;
    sopts.workers = (int)workers;
    /*
     * gRPC polls with one thread at a time: more completion-queue threads
     * mostly pass the poller role around, while the replies go out from the
     * Redis threads (one per CPU). Half the CPUs each measured best (README).
     */
    sopts.cq_threads = cq_threads > 0 ? (int)cq_threads : (cpus_available() + 1) / 2;
    sopts.max_workers = (int)max_workers;
    sopts.grace_ms = (int)grace_ms;
    sopts.max_in_flight = (int)max_in_flight;
    sopts.max_in_flight_per_peer = (int)max_in_flight_per_peer;
    sopts.metrics_addr = metrics_addr;
    sopts.tls = &tls;
    sopts.descriptors = lock_descriptor_set;
    sopts.descriptors_len = lock_descriptor_set_len;
    server = svc_server_create(&sopts, &err);
    if (server == NULL || (svc = lock_service_create(server, store, &limits, auth, &err)) == NULL ||
        lock_service_register(svc, &err) != 0 || svc_server_start(server, &err) != 0) {
        svc_log_kv(SVC_LOG_ERROR, "cannot start", "error", err.msg, NULL);
        goto out;
    }
    char shown[512];
    svc_log_kv(SVC_LOG_INFO, "lock-svc ready", "redis",
               lock_redis_url_redact(redis_url, shown, sizeof(shown)), NULL);
    svc_server_wait_for_signal(server);
    rc = 0;
out:
    /* Calls first (watches now, parked ones end with the server), then timers, then Redis. */
    lock_service_drain(svc);
    if (server != NULL) {
        svc_server_shutdown(server);
    }
    lock_service_stop(svc);
    lock_store_destroy(store);
    lock_service_destroy(svc);
    svc_server_destroy(server);
    svc_auth_destroy(auth);
    svc_client_release_all();
    return rc;
}
