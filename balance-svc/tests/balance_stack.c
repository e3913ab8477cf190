/*
 * balance_stack.c: starting, calling and checking the stack of balance_stack.h.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "balance_stack.h"

#define METHOD(name) "/balance.v1.BalanceService/" name

static atomic_llong next_user = 1000;

/* The stack whose group fixtures balance_stack_main runs (cmocka passes them no argument). */
static balance_stack_t *running;

/* ---------- the stack ---------- */

static int
group_setup(void **state)
{
    (void)state;
    return balance_stack_start(running);
}

static int
group_teardown(void **state)
{
    (void)state;
    return balance_stack_stop(running);
}

int
balance_stack_main(balance_stack_t *s, const balance_stack_config_t *config, int argc, char **argv,
                   const struct CMUnitTest *tests, size_t n)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s path/to/balance-svc path/to/lock-svc\n", argv[0]);
        return 2;
    }
    s->balance_path = argv[1];
    s->lock_path = argv[2];
    s->config = config;
    running = s;
    return testenv_group_result(_cmocka_run_group_tests("tests", tests, n, group_setup,
                                                        testenv_group_teardown(group_teardown)));
}

/* envs = extra (NULL-terminated, may be NULL), then tail; max entries with the NULL. */
static void
env_join(const char **envs, size_t max, const char *const *extra, const char *const *tail)
{
    size_t k = 0;

    for (size_t i = 0; extra != NULL && extra[i] != NULL && k + 1 < max; i++) {
        envs[k++] = extra[i];
    }
    for (size_t i = 0; tail[i] != NULL && k + 1 < max; i++) {
        envs[k++] = tail[i];
    }
    envs[k] = NULL;
}

int
balance_stack_start(balance_stack_t *s)
{
    const balance_stack_config_t *cfg = s->config;
    char url[128], redis_env[160];
    const char *own[] = {redis_env, "LOG_LEVEL=warn", NULL};
    const char *envs[TESTENV_PROC_MAX_ENV];
    svc_err_t err;

    testenv_cleanup_on_exit();
    if (testenv_pg_start(&s->pg, "balance") != 0 || testenv_redis_start(&s->redis) != 0) {
        return -1;
    }
    testenv_redis_url(&s->redis, url, sizeof(url));
    snprintf(redis_env, sizeof(redis_env), "REDIS_URL=%s", url);
    env_join(envs, TESTENV_PROC_MAX_ENV, cfg->lock_env, own);
    if (testenv_proc_start(&s->lock, s->lock_path, NULL, envs) != 0) {
        return -1;
    }
    if ((s->lock_client = svc_client_get(s->lock.addr, &err)) == NULL) {
        return -1;
    }
    for (int i = 0; i < cfg->instances && i < BALANCE_STACK_MAX; i++) {
        if (balance_stack_start_instance(s, &s->inst[i], cfg->balance_env) != 0) {
            return -1;
        }
        s->n = i + 1;
        if ((s->client[i] = svc_client_get(s->inst[i].addr, &err)) == NULL) {
            return -1;
        }
    }
    return 0;
}

int
balance_stack_start_instance(balance_stack_t *s, testenv_proc_t *p, const char *const *env)
{
    char lock_env[96], db_env[600];
    const char *own[] = {db_env, lock_env, "LOG_LEVEL=warn", NULL};
    const char *envs[TESTENV_PROC_MAX_ENV];

    snprintf(lock_env, sizeof(lock_env), "LOCK_SVC_ADDR=%s", s->lock.addr);
    snprintf(db_env, sizeof(db_env), "DATABASE_URL=%s", s->pg.conninfo);
    env_join(envs, TESTENV_PROC_MAX_ENV, env, own);
    return testenv_proc_start(p, s->balance_path, NULL, envs);
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

/* ---------- calls ---------- */

int64_t
balance_stack_new_user(void)
{
    return atomic_fetch_add(&next_user, 1);
}

svc_balance_result_t
balance_stack_top_up(balance_stack_t *s, int64_t user, int64_t amount, const char *key)
{
    balance_stack_op_t op =
        balance_stack_op(s->client[0], BALANCE_LEDGER_TOP_UP, user, amount, key, 15000);

    balance_stack_op_run(&op);
    return balance_expect_ok(op.key, op.rc, &op.res, &op.err);
}

int64_t
balance_stack_funded_user(balance_stack_t *s, int64_t amount)
{
    int64_t user = balance_stack_new_user();

    balance_stack_top_up(s, user, amount, "fund");
    return user;
}

balance_stack_op_t
balance_stack_op(svc_client_t *c, int kind, int64_t user, int64_t amount, const char *key,
                 int64_t timeout_ms)
{
    balance_stack_op_t op = {.client = c, .kind = kind, .user = user, .amount = amount};

    op.opts.timeout_ms = timeout_ms;
    snprintf(op.key, sizeof(op.key), "%s", key);
    return op;
}

void
balance_stack_op_run(balance_stack_op_t *op)
{
    if (op->kind == BALANCE_LEDGER_TOP_UP) {
        op->rc = svc_balance_top_up(op->client, op->user, op->amount, op->key, &op->opts, &op->res,
                                    &op->err);
    } else {
        op->rc = svc_balance_spend(op->client, op->user, op->amount, op->key, "test", &op->opts,
                                   &op->res, &op->err);
    }
}

void *
balance_stack_op_thread(void *arg)
{
    balance_stack_op_run(arg);
    return NULL;
}

int
balance_stack_list(svc_client_t *c, svc_arena_t *arena, int64_t user, int32_t page_size,
                   const char *page_token, Balance__V1__ListTransactionsResponse **page,
                   svc_err_t *err)
{
    Balance__V1__ListTransactionsRequest req = BALANCE__V1__LIST_TRANSACTIONS_REQUEST__INIT;
    ProtobufCMessage *out;

    req.user_id = user;
    req.page_size = page_size;
    if (page_token != NULL) {
        req.page_token = (char *)page_token;
    }
    if (svc_client_unary(c, METHOD("ListTransactions"), &req.base,
                         &balance__v1__list_transactions_response__descriptor, arena, &out, NULL,
                         err) != 0) {
        return -1;
    }
    *page = (Balance__V1__ListTransactionsResponse *)out;
    return 0;
}

svc_balance_result_t
balance_expect_ok(const char *what, int rc, const svc_balance_result_t *res, const svc_err_t *err)
{
    if (rc != 0) {
        fail_msg("%s: expected OK, got %s (%s)", what, svc_status_name(err->code), err->msg);
    }
    return *res;
}

void
balance_expect_code(const char *what, int rc, const svc_err_t *err, svc_status_t code)
{
    if (rc == 0 || err->code != code) {
        fail_msg("%s: expected %s, got %s (%s)", what, svc_status_name(code),
                 rc == 0 ? "OK" : svc_status_name(err->code), rc == 0 ? "" : err->msg);
    }
}

/* ---------- checks ---------- */

int64_t
balance_stack_query(balance_stack_t *s, const char *sql_up_to_id, int64_t id)
{
    char sql[512];

    snprintf(sql, sizeof(sql), "%s %" PRId64, sql_up_to_id, id);
    return testenv_pg_query_int(&s->pg, sql);
}

int64_t
balance_stack_stored_balance(balance_stack_t *s, int64_t user)
{
    return balance_stack_query(s, "SELECT balance FROM accounts WHERE user_id =", user);
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

bool
balance_stack_log_contains(const testenv_proc_t *p, const char *needle)
{
    FILE *f = fopen(p->log_path, "r");
    char line[4096];
    bool found = false;

    while (f != NULL && !found && fgets(line, sizeof(line), f) != NULL) {
        found = strstr(line, needle) != NULL;
    }
    if (f != NULL) {
        fclose(f);
    }
    return found;
}
