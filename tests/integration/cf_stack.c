/*
 * cf_stack.c: an own stack for the suite: PostgreSQL (databases reservation
 * and balance), Redis, and the three services, all real processes on free
 * loopback ports.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>

#include "conformance.h"

#define CF_ADMIN_TOKEN "conformance-admin-token-0123456789"

/* Joins the instances' addresses: "a" or "a,b" (round robin for the client). */
static void
join_addrs(char *buf, size_t len, const testenv_proc_t *p, int n)
{
    size_t used = 0;

    buf[0] = '\0';
    for (int i = 0; i < n && used < len; i++) {
        used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? "," : "", p[i].addr);
    }
}

/* Appends the NULL-terminated extra settings to env (which has room for them). */
static void
add_env(const char **env, int *n, const char *const *extra)
{
    for (int i = 0; i < CF_MAX_EXTRA_ENV && extra[i] != NULL; i++) {
        env[(*n)++] = extra[i];
    }
    env[*n] = NULL;
}

int
cf_stack_start(cf_ctx_t *ctx, cf_stack_t *s, const cf_stack_opts_t *opts)
{
    const char *lock_bin = ctx->lock_bin, *balance_bin = ctx->balance_bin,
               *reservation_bin = ctx->reservation_bin;
    char redis_url[256], redis_env[300], lock_env[600], bal_env[600], db_env[600], bdb_env[600];
    const char *env[4 + 2 * CF_MAX_EXTRA_ENV];
    int n;

    memset(s, 0, sizeof(*s));
    s->n_lock = opts->n_lock > 0 ? opts->n_lock : 1;
    s->n_balance = opts->n_balance > 0 ? opts->n_balance : 1;
    s->n_reservation = opts->n_reservation > 0 ? opts->n_reservation : 1;
    if (s->n_lock > CF_MAX_INSTANCES || s->n_balance > CF_MAX_INSTANCES ||
        s->n_reservation > CF_MAX_INSTANCES) {
        fprintf(stderr, "conformance: at most %d instances of a service\n", CF_MAX_INSTANCES);
        return -1;
    }
    if (testenv_pg_start(&s->pg, "reservation") != 0 ||
        testenv_pg_exec(&s->pg, "CREATE DATABASE balance") != 0) {
        return -1;
    }
    s->pg_balance = s->pg;
    snprintf(s->pg_balance.conninfo, sizeof(s->pg_balance.conninfo),
             "host=127.0.0.1 port=%d user=postgres dbname=balance", s->pg.port);
    if (opts->redis_url != NULL) {
        snprintf(redis_url, sizeof(redis_url), "%s", opts->redis_url);
    } else {
        if (testenv_redis_start(&s->redis) != 0) {
            return -1;
        }
        testenv_redis_url(&s->redis, redis_url, sizeof(redis_url));
        snprintf(s->targets.redis_host, sizeof(s->targets.redis_host), "127.0.0.1");
        s->targets.redis_port = s->redis.port;
    }

    snprintf(redis_env, sizeof(redis_env), "REDIS_URL=%s", redis_url);
    for (int i = 0; i < s->n_lock; i++) {
        n = 0;
        env[n++] = redis_env;
        env[n++] = "LOG_LEVEL=warn";
        add_env(env, &n, opts->lock_env);
        if (testenv_proc_start(&s->lock[i], lock_bin, NULL, env) != 0) {
            return -1;
        }
    }
    join_addrs(s->targets.lock_addr, sizeof(s->targets.lock_addr), s->lock, s->n_lock);
    snprintf(lock_env, sizeof(lock_env), "LOCK_SVC_ADDR=%s", s->targets.lock_addr);

    snprintf(bdb_env, sizeof(bdb_env), "DATABASE_URL=%s", s->pg_balance.conninfo);
    const char *bal[] = {bdb_env, lock_env, "LOG_LEVEL=warn", NULL};
    for (int i = 0; i < s->n_balance; i++) {
        if (testenv_proc_start(&s->balance[i], balance_bin, NULL, bal) != 0) {
            return -1;
        }
    }
    join_addrs(s->targets.balance_addr, sizeof(s->targets.balance_addr), s->balance, s->n_balance);

    snprintf(bal_env, sizeof(bal_env), "BALANCE_SVC_ADDR=%s", s->targets.balance_addr);
    snprintf(db_env, sizeof(db_env), "DATABASE_URL=%s", s->pg.conninfo);
    for (int i = 0; i < s->n_reservation; i++) {
        n = 0;
        env[n++] = db_env;
        env[n++] = lock_env;
        env[n++] = bal_env;
        env[n++] = "ADMIN_TOKEN=" CF_ADMIN_TOKEN;
        env[n++] = "LOG_LEVEL=warn";
        env[n] = NULL;
        add_env(env, &n, opts->reservation_env);
        if (i == 0) {
            add_env(env, &n, opts->first_reservation_env);
        }
        if (testenv_proc_start(&s->reservation[i], reservation_bin, NULL, env) != 0) {
            return -1;
        }
    }
    join_addrs(s->targets.reservation_addr, sizeof(s->targets.reservation_addr), s->reservation,
               s->n_reservation);
    snprintf(s->targets.admin_token, sizeof(s->targets.admin_token), "%s", CF_ADMIN_TOKEN);
    snprintf(s->targets.reservation_db, sizeof(s->targets.reservation_db), "%s", s->pg.conninfo);
    snprintf(s->targets.balance_db, sizeof(s->targets.balance_db), "%s", s->pg_balance.conninfo);
    return 0;
}

/* Stops one service; a non-zero exit (a sanitizer's report) makes the stack's stop fail. */
static int
stop_proc(testenv_proc_t *p, const char *name)
{
    int status;

    if (p->binary[0] == '\0') {
        return 0; /* never started */
    }
    if (p->pid <= 0 && !p->exited) {
        (void)testenv_proc_stop(p); /* killed by the scenario and left down: only the log */
        return 0;
    }
    status = testenv_proc_stop(p);
    if (status != 0) {
        fprintf(stderr, "conformance: %s exited with status %d (log kept: %s)\n", name, status,
                p->log_path);
        return -1;
    }
    return 0;
}

int
cf_stack_stop(cf_stack_t *s)
{
    int bad = 0;

    for (int i = 0; i < CF_MAX_INSTANCES; i++) {
        bad |= stop_proc(&s->reservation[i], "reservation-svc");
    }
    for (int i = 0; i < CF_MAX_INSTANCES; i++) {
        bad |= stop_proc(&s->balance[i], "balance-svc");
    }
    for (int i = 0; i < CF_MAX_INSTANCES; i++) {
        bad |= stop_proc(&s->lock[i], "lock-svc");
    }
    if (s->redis.pid > 0 || s->redis.dir[0] != '\0') {
        testenv_redis_stop(&s->redis);
    }
    if (s->pg.dir[0] != '\0') {
        testenv_pg_stop(&s->pg);
    }
    return bad ? -1 : 0;
}
