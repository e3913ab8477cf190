/*
 * balance_stack.c: starting and checking the stack of balance_stack.h.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>

#include "balance_stack.h"

int
balance_stack_start(balance_stack_t *s, const char *balance_path, const char *lock_path, int n,
                    const char *const *inst_env)
{
    char url[128], redis_env[160], lock_env[96], db_env[600];
    const char *lock_envs[] = {redis_env, "LOG_LEVEL=warn", NULL};
    svc_err_t err;

    testenv_cleanup_on_exit();
    if (testenv_pg_start(&s->pg, "balance") != 0 || testenv_redis_start(&s->redis) != 0) {
        return -1;
    }
    testenv_redis_url(&s->redis, url, sizeof(url));
    snprintf(redis_env, sizeof(redis_env), "REDIS_URL=%s", url);
    if (testenv_proc_start(&s->lock, lock_path, NULL, lock_envs) != 0) {
        return -1;
    }
    snprintf(lock_env, sizeof(lock_env), "LOCK_SVC_ADDR=%s", s->lock.addr);
    snprintf(db_env, sizeof(db_env), "DATABASE_URL=%s", s->pg.conninfo);
    for (int i = 0; i < n && i < BALANCE_STACK_MAX; i++) {
        /* inst_env first: of two settings of one name, the first is the one seen. */
        const char *envs[] = {inst_env != NULL && inst_env[i] != NULL ? inst_env[i] : db_env,
                              db_env, lock_env, "LOG_LEVEL=warn", NULL};
        if (testenv_proc_start(&s->inst[i], balance_path, NULL, envs) != 0) {
            return -1;
        }
        s->client[i] = svc_client_get(s->inst[i].addr, &err);
        if (s->client[i] == NULL) {
            return -1;
        }
        s->n = i + 1;
    }
    return 0;
}

int
balance_stack_stop(balance_stack_t *s)
{
    int bad = 0;

    for (int i = 0; i < s->n; i++) {
        bad |= testenv_proc_stop(&s->inst[i]) != 0;
    }
    bad |= testenv_proc_stop(&s->lock) != 0;
    testenv_redis_stop(&s->redis);
    testenv_pg_stop(&s->pg);
    svc_client_release_all();
    return bad ? -1 : 0;
}

int64_t
balance_stack_query(balance_stack_t *s, const char *sql_up_to_id, int64_t id)
{
    char sql[512];

    snprintf(sql, sizeof(sql), "%s %" PRId64, sql_up_to_id, id);
    return testenv_pg_query_int(&s->pg, sql);
}

int64_t
balance_stack_broken(balance_stack_t *s)
{
    return testenv_pg_query_int(
        &s->pg,
        "SELECT (SELECT count(*) FROM accounts a WHERE a.balance <> (SELECT coalesce(sum(CASE"
        " l.kind WHEN 2 THEN -l.amount ELSE l.amount END), 0) FROM ledger l"
        " WHERE l.user_id = a.user_id))"
        " + (SELECT count(*) FROM ledger s WHERE s.kind = 2 AND s.amount < (SELECT"
        " coalesce(sum(r.amount), 0) FROM ledger r WHERE r.refund_of = s.id))"
        " + (SELECT count(*) FROM authorizations z WHERE z.status = 2 AND NOT EXISTS (SELECT 1"
        " FROM ledger l WHERE l.id = z.capture_txn_id AND l.kind = 2 AND l.amount = z.amount"
        " AND l.idempotency_key = z.idempotency_key))");
}
