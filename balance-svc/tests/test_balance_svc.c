/*
 * test_balance_svc.c: balance-svc over real gRPC with a real PostgreSQL,
 * Redis and lock-svc: replay storms, concurrent top-ups and spends, every
 * invalid input, PostgreSQL restarted mid-storm, and two instances sharing the
 * load. After each storm the database is read: balance = ledger sum.
 * argv[1] is balance-svc, argv[2] lock-svc.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "balance/v1/balance.pb-c.h"
#include "svc/client.h"
#include "svc/timer.h"
#include "testenv.h"

static const char *balance_path, *lock_path;
static testenv_pg_t pg;
static testenv_redis_t redis;
static testenv_proc_t lock_proc, inst[2];
static svc_client_t *client[2];
static atomic_llong next_user = 1000;

static int64_t
new_user(void)
{
    return atomic_fetch_add(&next_user, 1);
}

/* Accounts whose balance differs from their ledger's sum: must always be 0. */
static int64_t
ledger_mismatches(void)
{
    return testenv_pg_query_int(
        &pg, "SELECT count(*) FROM accounts a WHERE a.balance <> (SELECT coalesce(sum(CASE "
             "l.kind WHEN 2 THEN -l.amount ELSE l.amount END), 0) FROM ledger l "
             "WHERE l.user_id = a.user_id)");
}

/* Runs "<sql_up_to_user_id> <user>", e.g. "SELECT balance FROM accounts WHERE user_id =". */
static int64_t
query_user(const char *sql_up_to_user_id, int64_t user)
{
    char sql[512];

    snprintf(sql, sizeof(sql), "%s %" PRId64, sql_up_to_user_id, user);
    return testenv_pg_query_int(&pg, sql);
}

typedef struct {
    int instance;
    int kind; /* 1 top-up, 2 spend */
    int64_t user, amount;
    char key[160];
    int rc;
    svc_err_t err;
    int64_t balance, txid;
    int replayed;
} op_t;

static void
run_op(op_t *op)
{
    svc_arena_t *arena = svc_arena_create();
    svc_call_opts_t opts = {.timeout_ms = 15000};
    ProtobufCMessage *out;

    if (op->kind == 1) {
        Balance__V1__TopUpRequest req = BALANCE__V1__TOP_UP_REQUEST__INIT;
        req.user_id = op->user;
        req.amount = op->amount;
        req.idempotency_key = op->key;
        op->rc = svc_client_unary(client[op->instance], "/balance.v1.BalanceService/TopUp",
                                  &req.base, &balance__v1__top_up_response__descriptor, arena, &out,
                                  &opts, &op->err);
    } else {
        Balance__V1__SpendRequest req = BALANCE__V1__SPEND_REQUEST__INIT;
        req.user_id = op->user;
        req.amount = op->amount;
        req.idempotency_key = op->key;
        req.reference = "test";
        op->rc = svc_client_unary(client[op->instance], "/balance.v1.BalanceService/Spend",
                                  &req.base, &balance__v1__spend_response__descriptor, arena, &out,
                                  &opts, &op->err);
    }
    if (op->rc == 0) { /* TopUpResponse and SpendResponse share their layout */
        Balance__V1__TopUpResponse *r = (Balance__V1__TopUpResponse *)out;
        op->balance = r->balance;
        op->txid = r->transaction_id;
        op->replayed = r->replayed;
    }
    svc_arena_destroy(arena);
}

static void *
op_thread(void *arg)
{
    run_op(arg);
    return NULL;
}

/* Runs every op at once, one thread each. */
static void
run_concurrently(op_t *ops, int n)
{
    pthread_t *t = calloc((size_t)n, sizeof(*t));
    pthread_attr_t attr;

    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < n; i++) {
        assert_int_equal(pthread_create(&t[i], &attr, op_thread, &ops[i]), 0);
    }
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
    }
    pthread_attr_destroy(&attr);
    free(t);
}

/* n operations with keys "<key_prefix>-<i>". */
static op_t *
make_ops(int n, int kind, int64_t user, int64_t amount, const char *key_prefix, int n_instances)
{
    op_t *ops = calloc((size_t)n, sizeof(*ops));

    for (int i = 0; i < n; i++) {
        ops[i].instance = i % n_instances;
        ops[i].kind = kind;
        ops[i].user = user;
        ops[i].amount = amount;
        snprintf(ops[i].key, sizeof(ops[i].key), "%s-%d", key_prefix, i);
    }
    return ops;
}

static void
top_up(int64_t user, int64_t amount, const char *key)
{
    op_t op = {.kind = 1, .user = user, .amount = amount};

    snprintf(op.key, sizeof(op.key), "%s", key);
    run_op(&op);
    assert_int_equal(op.rc, 0);
}

/* ---------- the acceptance storms, on n_instances instances ---------- */

static void
storm_same_key(int n_instances)
{
    int64_t user = new_user();
    op_t *ops = make_ops(100, 1, user, 500, "same", n_instances);
    int replayed = 0;

    for (int i = 0; i < 100; i++) { /* one key for all: a double click times a hundred */
        snprintf(ops[i].key, sizeof(ops[i].key), "%s", "double-click");
    }

    run_concurrently(ops, 100);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(ops[i].rc, 0);
        assert_int_equal(ops[i].txid, ops[0].txid);
        assert_int_equal(ops[i].balance, 500);
        replayed += ops[i].replayed;
    }
    assert_int_equal(replayed, 99);
    assert_int_equal(query_user("SELECT count(*) FROM ledger WHERE user_id =", user), 1);
    assert_int_equal(query_user("SELECT balance FROM accounts WHERE user_id =", user), 500);
    assert_int_equal(ledger_mismatches(), 0);
    free(ops);
}

static void
storm_distinct_keys(int n_instances)
{
    int64_t user = new_user();
    op_t *ops = make_ops(1000, 1, user, 1, "k", n_instances);
    int64_t t0 = svc_now_mono_ms();

    run_concurrently(ops, 1000);
    fprintf(stderr, "1000 concurrent top-ups on one account via %d instance(s): %lld ms\n",
            n_instances, (long long)(svc_now_mono_ms() - t0));
    for (int i = 0; i < 1000; i++) {
        if (ops[i].rc != 0) {
            fail_msg("top-up %d failed: %s %s", i, svc_status_name(ops[i].err.code),
                     ops[i].err.msg);
        }
        assert_false(ops[i].replayed);
    }
    assert_int_equal(query_user("SELECT balance FROM accounts WHERE user_id =", user), 1000);
    assert_int_equal(query_user("SELECT count(*) FROM ledger WHERE user_id =", user), 1000);
    assert_int_equal(ledger_mismatches(), 0);
    free(ops);
}

static void
storm_spends(int n_instances)
{
    int64_t user = new_user();
    op_t *ops = make_ops(50, 2, user, 30, "spend", n_instances);
    int ok = 0, refused = 0;

    top_up(user, 1000, "fund");
    run_concurrently(ops, 50);
    for (int i = 0; i < 50; i++) {
        if (ops[i].rc == 0) {
            ok++;
        } else {
            assert_int_equal(ops[i].err.code, SVC_FAILED_PRECONDITION);
            refused++;
        }
    }
    assert_int_equal(ok, 33);
    assert_int_equal(refused, 17);
    assert_int_equal(query_user("SELECT balance FROM accounts WHERE user_id =", user), 10);
    assert_int_equal(query_user("SELECT count(*) FROM ledger WHERE kind = 2 AND user_id =", user),
                     33);
    assert_int_equal(ledger_mismatches(), 0);
    free(ops);
}

static void
test_same_key_storm(void **state)
{
    (void)state;
    storm_same_key(1);
}

static void
test_distinct_keys_storm(void **state)
{
    (void)state;
    storm_distinct_keys(1);
}

static void
test_spend_storm(void **state)
{
    (void)state;
    storm_spends(1);
}

static void
test_two_instances_share_the_storms(void **state)
{
    (void)state;
    storm_same_key(2);
    storm_distinct_keys(2);
    storm_spends(2);
}

/* ---------- inputs ---------- */

static void
expect_code(int kind, int64_t user, int64_t amount, const char *key, svc_status_t code)
{
    op_t op = {.kind = kind, .user = user, .amount = amount};

    snprintf(op.key, sizeof(op.key), "%s", key);
    run_op(&op);
    assert_int_equal(op.rc, -1);
    if (op.err.code != code) {
        fail_msg("expected %s, got %s (%s)", svc_status_name(code), svc_status_name(op.err.code),
                 op.err.msg);
    }
}

static void
test_invalid_inputs(void **state)
{
    char long_key[130];
    int64_t user = new_user();

    (void)state;
    memset(long_key, 'x', 129);
    long_key[129] = '\0';
    top_up(user, 100, "first");
    for (int kind = 1; kind <= 2; kind++) {
        expect_code(kind, user, 0, "k0", SVC_INVALID_ARGUMENT);
        expect_code(kind, user, -5, "k1", SVC_INVALID_ARGUMENT);
        expect_code(kind, user, 100000001, "k2", SVC_INVALID_ARGUMENT);
        expect_code(kind, user, 1, "", SVC_INVALID_ARGUMENT);
        expect_code(kind, user, 1, long_key, SVC_INVALID_ARGUMENT);
        expect_code(kind, 0, 1, "k3", SVC_INVALID_ARGUMENT);
        expect_code(kind, -1, 1, "k4", SVC_INVALID_ARGUMENT);
    }
    long_key[128] = '\0'; /* 128 bytes is fine */
    top_up(user, 1, long_key);
    /* The same key with another amount, or as a spend. */
    expect_code(1, user, 101, "first", SVC_INVALID_ARGUMENT);
    expect_code(2, user, 100, "first", SVC_INVALID_ARGUMENT);
    /* Too little money; an unknown account. */
    expect_code(2, user, 102, "too-much", SVC_FAILED_PRECONDITION);
    expect_code(2, new_user(), 1, "nobody", SVC_NOT_FOUND);

    /* The balance cap: a ledger worth 10^12 written straight into the database. */
    int64_t rich = new_user();
    char sql[512];
    snprintf(sql, sizeof(sql),
             "WITH a AS (INSERT INTO accounts (user_id, balance) VALUES (%" PRId64
             ", 1000000000000)) INSERT INTO ledger (user_id, kind, amount, balance_after, "
             "idempotency_key) SELECT %" PRId64 ", 1, 100000000, g * 100000000, 'seed-' || g "
             "FROM generate_series(1::bigint, 10000) g",
             rich, rich);
    assert_int_equal(testenv_pg_exec(&pg, sql), 0);
    expect_code(1, rich, 1, "over-the-cap", SVC_FAILED_PRECONDITION);
    assert_int_equal(ledger_mismatches(), 0);

    /* Still serving. */
    top_up(user, 1, "after-errors");
}

static void
test_get_balance_and_history(void **state)
{
    Balance__V1__ListTransactionsRequest req = BALANCE__V1__LIST_TRANSACTIONS_REQUEST__INIT;
    Balance__V1__GetBalanceRequest get = BALANCE__V1__GET_BALANCE_REQUEST__INIT;
    svc_arena_t *arena = svc_arena_create();
    int64_t user = new_user(), last_id = INT64_MAX;
    ProtobufCMessage *out;
    svc_err_t err;
    int seen = 0;
    char key[32];

    (void)state;
    for (int i = 0; i < 7; i++) {
        snprintf(key, sizeof(key), "h-%d", i);
        top_up(user, 10 + i, key);
    }
    get.user_id = user;
    assert_int_equal(svc_client_unary(client[0], "/balance.v1.BalanceService/GetBalance", &get.base,
                                      &balance__v1__get_balance_response__descriptor, arena, &out,
                                      NULL, &err),
                     0);
    assert_int_equal(((Balance__V1__GetBalanceResponse *)out)->balance, 7 * 10 + 21);
    get.user_id = new_user();
    assert_int_equal(svc_client_unary(client[0], "/balance.v1.BalanceService/GetBalance", &get.base,
                                      &balance__v1__get_balance_response__descriptor, arena, &out,
                                      NULL, &err),
                     -1);
    assert_int_equal(err.code, SVC_NOT_FOUND);

    req.user_id = user;
    req.page_size = 3;
    for (;;) { /* pages of 3, newest first, until no token */
        Balance__V1__ListTransactionsResponse *page;
        assert_int_equal(svc_client_unary(client[0], "/balance.v1.BalanceService/ListTransactions",
                                          &req.base,
                                          &balance__v1__list_transactions_response__descriptor,
                                          arena, &out, NULL, &err),
                         0);
        page = (void *)out;
        for (size_t i = 0; i < page->n_transactions; i++) {
            assert_true(page->transactions[i]->id < last_id);
            last_id = page->transactions[i]->id;
            assert_int_equal(page->transactions[i]->kind,
                             BALANCE__V1__TRANSACTION_KIND__TRANSACTION_KIND_TOP_UP);
            seen++;
        }
        if (page->next_page_token == NULL || page->next_page_token[0] == '\0') {
            break;
        }
        req.page_token = svc_arena_strdup(arena, page->next_page_token);
    }
    assert_int_equal(seen, 7);
    req.page_token = "not-a-token";
    assert_int_equal(svc_client_unary(client[0], "/balance.v1.BalanceService/ListTransactions",
                                      &req.base,
                                      &balance__v1__list_transactions_response__descriptor, arena,
                                      &out, NULL, &err),
                     -1);
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    svc_arena_destroy(arena);
}

/* ---------- PostgreSQL restarted mid-storm ---------- */

typedef struct {
    atomic_int next;
    int n;
    op_t *ops;
    atomic_int stop;
    atomic_int restarted;
    atomic_int ok_after; /* OK answers to calls made after the restart */
} stream_t;

static void *
stream_thread(void *arg)
{
    stream_t *s = arg;
    int i;

    while (!atomic_load(&s->stop) && (i = atomic_fetch_add(&s->next, 1)) < s->n) {
        int after = atomic_load(&s->restarted);
        run_op(&s->ops[i]);
        if (after && s->ops[i].rc == 0) {
            atomic_fetch_add(&s->ok_after, 1);
        }
        svc_sleep_ms(2);
    }
    return NULL;
}

static void
test_postgres_restart_mid_storm(void **state)
{
    enum { N = 30000, THREADS = 16 };
    stream_t s = {.n = N};
    int64_t user = new_user();
    pthread_t t[THREADS];
    int ok = 0, unavailable = 0, issued;

    (void)state;
    s.ops = make_ops(N, 1, user, 1, "pg", 2);
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, stream_thread, &s), 0);
    }
    while (atomic_load(&s.next) < 300) {
        svc_sleep_ms(5);
    }
    assert_int_equal(testenv_pg_kill(&pg), 0);
    svc_sleep_ms(500);
    assert_int_equal(testenv_pg_restart(&pg), 0);
    atomic_store(&s.restarted, 1);
    /* Service comes back by itself: wait for 200 answers OK after the restart. */
    for (int i = 0; i < 3000 && atomic_load(&s.ok_after) < 200; i++) {
        svc_sleep_ms(10);
    }
    atomic_store(&s.stop, 1);
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
    }
    issued = atomic_load(&s.next) < N ? atomic_load(&s.next) : N;
    for (int i = 0; i < issued; i++) {
        if (s.ops[i].rc == 0) {
            ok++;
        } else if (s.ops[i].err.code == SVC_UNAVAILABLE) {
            unavailable++;
        } else {
            fail_msg("op %d: %s %s", i, svc_status_name(s.ops[i].err.code), s.ops[i].err.msg);
        }
    }
    fprintf(stderr,
            "PostgreSQL killed and restarted mid-storm: %d OK, %d UNAVAILABLE, %d OK after\n", ok,
            unavailable, atomic_load(&s.ok_after));
    assert_true(unavailable > 0);                 /* the outage was seen */
    assert_true(atomic_load(&s.ok_after) >= 200); /* and balance-svc recovered by itself */
    /* Nothing acknowledged is lost: every OK answer has its ledger row. */
    for (int i = 0; i < issued; i++) {
        if (s.ops[i].rc == 0) {
            char sql[256];
            snprintf(sql, sizeof(sql),
                     "SELECT count(*) FROM ledger WHERE id = %" PRId64
                     " AND idempotency_key = '%s'",
                     s.ops[i].txid, s.ops[i].key);
            assert_int_equal(testenv_pg_query_int(&pg, sql), 1);
        }
    }
    assert_int_equal(query_user("SELECT count(*) FROM ledger WHERE user_id =", user), ok);
    assert_int_equal(query_user("SELECT balance FROM accounts WHERE user_id =", user), ok);
    assert_int_equal(ledger_mismatches(), 0);
    free(s.ops);
}

/* lock-svc down: balance-svc refuses (fail closed) rather than write without the lock. */
static void
test_lock_svc_down_fails_closed(void **state)
{
    int64_t user = new_user();
    op_t op = {.kind = 1, .user = user, .amount = 5};

    (void)state;
    top_up(user, 10, "before");
    assert_int_equal(testenv_proc_kill(&lock_proc), 0);
    snprintf(op.key, sizeof(op.key), "%s", "while-lock-svc-is-down");
    run_op(&op);
    assert_int_equal(op.rc, -1);
    assert_int_equal(op.err.code, SVC_UNAVAILABLE);
    assert_int_equal(query_user("SELECT balance FROM accounts WHERE user_id =", user), 10);
    assert_int_equal(testenv_proc_restart(&lock_proc), 0);
    /* Back by itself, and the refused call can simply be retried. */
    for (int i = 0; i < 100; i++) {
        run_op(&op);
        if (op.rc == 0) {
            break;
        }
        svc_sleep_ms(50);
    }
    assert_int_equal(op.rc, 0);
    assert_int_equal(op.balance, 15);
    assert_int_equal(ledger_mismatches(), 0);
}

/* ---------- setup ---------- */

static int
setup(void **state)
{
    char url[128], redis_env[160], lock_env[96], db_env[600];
    const char *lock_envs[] = {redis_env, "LOG_LEVEL=warn", NULL};
    const char *envs[] = {db_env, lock_env, "LOG_LEVEL=warn", NULL};
    svc_err_t err;

    (void)state;
    testenv_cleanup_on_exit();
    if (testenv_pg_start(&pg, "balance") != 0 || testenv_redis_start(&redis) != 0) {
        return -1;
    }
    testenv_redis_url(&redis, url, sizeof(url));
    snprintf(redis_env, sizeof(redis_env), "REDIS_URL=%s", url);
    if (testenv_proc_start(&lock_proc, lock_path, NULL, lock_envs) != 0) {
        return -1;
    }
    snprintf(lock_env, sizeof(lock_env), "LOCK_SVC_ADDR=%s", lock_proc.addr);
    snprintf(db_env, sizeof(db_env), "DATABASE_URL=%s", pg.conninfo);
    for (int i = 0; i < 2; i++) {
        if (testenv_proc_start(&inst[i], balance_path, NULL, envs) != 0) {
            return -1;
        }
        client[i] = svc_client_get(inst[i].addr, &err);
    }
    return 0;
}

static int
teardown(void **state)
{
    int s0, s1, s2;

    (void)state;
    s0 = testenv_proc_stop(&inst[0]);
    s1 = testenv_proc_stop(&inst[1]);
    s2 = testenv_proc_stop(&lock_proc);
    testenv_redis_stop(&redis);
    testenv_pg_stop(&pg);
    svc_client_release_all();
    return s0 == 0 && s1 == 0 && s2 == 0 ? 0 : -1;
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalid_inputs),
        cmocka_unit_test(test_get_balance_and_history),
        cmocka_unit_test(test_same_key_storm),
        cmocka_unit_test(test_distinct_keys_storm),
        cmocka_unit_test(test_spend_storm),
        cmocka_unit_test(test_two_instances_share_the_storms),
        cmocka_unit_test(test_postgres_restart_mid_storm),
        cmocka_unit_test(test_lock_svc_down_fails_closed),
    };

    if (argc < 3) {
        fprintf(stderr, "usage: %s path/to/balance-svc path/to/lock-svc\n", argv[0]);
        return 2;
    }
    balance_path = argv[1];
    lock_path = argv[2];
    return testenv_group_result(
        cmocka_run_group_tests(tests, setup, testenv_group_teardown(teardown)));
}
