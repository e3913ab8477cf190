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
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balance_stack.h"
#include "svc/timer.h"

static balance_stack_t stack;

#define C0 (stack.client[0])
#define TOP_UP BALANCE_LEDGER_TOP_UP
#define SPEND BALANCE_LEDGER_SPEND

/* Runs every op at once, one thread each. */
static void
run_concurrently(balance_stack_op_t *ops, int n)
{
    pthread_t *t = calloc((size_t)n, sizeof(*t));
    pthread_attr_t attr;

    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < n; i++) {
        assert_int_equal(pthread_create(&t[i], &attr, balance_stack_op_thread, &ops[i]), 0);
    }
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
    }
    pthread_attr_destroy(&attr);
    free(t);
}

/* n operations with keys "<key_prefix>-<i>". */
static balance_stack_op_t *
make_ops(int n, int kind, int64_t user, int64_t amount, const char *key_prefix, int n_instances)
{
    balance_stack_op_t *ops = calloc((size_t)n, sizeof(*ops));

    for (int i = 0; i < n; i++) {
        char key[sizeof(ops[i].key)];

        snprintf(key, sizeof(key), "%s-%d", key_prefix, i);
        ops[i] = balance_stack_op(stack.client[i % n_instances], kind, user, amount, key, 15000);
    }
    return ops;
}

/* ---------- the acceptance storms, on n_instances instances ---------- */

static void
storm_same_key(int n_instances)
{
    int64_t user = balance_stack_new_user();
    balance_stack_op_t *ops = make_ops(100, TOP_UP, user, 500, "same", n_instances);
    int replayed = 0;

    for (int i = 0; i < 100; i++) { /* one key for all: a double click times a hundred */
        snprintf(ops[i].key, sizeof(ops[i].key), "%s", "double-click");
    }

    run_concurrently(ops, 100);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(ops[i].rc, 0);
        assert_int_equal(ops[i].res.transaction_id, ops[0].res.transaction_id);
        assert_int_equal(ops[i].res.balance, 500);
        replayed += ops[i].res.replayed;
    }
    assert_int_equal(replayed, 99);
    assert_int_equal(
        balance_stack_query(&stack, "SELECT count(*) FROM ledger WHERE user_id =", user), 1);
    assert_int_equal(balance_stack_stored_balance(&stack, user), 500);
    assert_int_equal(balance_stack_broken(&stack), 0);
    free(ops);
}

static void
storm_distinct_keys(int n_instances)
{
    int64_t user = balance_stack_new_user();
    balance_stack_op_t *ops = make_ops(1000, TOP_UP, user, 1, "k", n_instances);
    int64_t t0 = svc_now_mono_ms();

    run_concurrently(ops, 1000);
    fprintf(stderr, "1000 concurrent top-ups on one account via %d instance(s): %lld ms\n",
            n_instances, (long long)(svc_now_mono_ms() - t0));
    for (int i = 0; i < 1000; i++) {
        if (ops[i].rc != 0) {
            fail_msg("top-up %d failed: %s %s", i, svc_status_name(ops[i].err.code),
                     ops[i].err.msg);
        }
        assert_false(ops[i].res.replayed);
    }
    assert_int_equal(balance_stack_stored_balance(&stack, user), 1000);
    assert_int_equal(
        balance_stack_query(&stack, "SELECT count(*) FROM ledger WHERE user_id =", user), 1000);
    assert_int_equal(balance_stack_broken(&stack), 0);
    free(ops);
}

static void
storm_spends(int n_instances)
{
    int64_t user = balance_stack_funded_user(&stack, 1000);
    balance_stack_op_t *ops = make_ops(50, SPEND, user, 30, "spend", n_instances);
    int ok = 0, refused = 0;

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
    assert_int_equal(balance_stack_stored_balance(&stack, user), 10);
    assert_int_equal(balance_stack_query(
                         &stack, "SELECT count(*) FROM ledger WHERE kind = 2 AND user_id =", user),
                     33);
    assert_int_equal(balance_stack_broken(&stack), 0);
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

/* A top-up or spend through instance 0 that must fail with code. */
static void
expect_code(int kind, int64_t user, int64_t amount, const char *key, svc_status_t code)
{
    balance_stack_op_t op = balance_stack_op(C0, kind, user, amount, key, 15000);

    balance_stack_op_run(&op);
    balance_expect_code(op.key, op.rc, &op.err, code);
}

static void
test_invalid_inputs(void **state)
{
    char long_key[130];
    int64_t user = balance_stack_new_user();

    (void)state;
    memset(long_key, 'x', 129);
    long_key[129] = '\0';
    balance_stack_top_up(&stack, user, 100, "first");
    for (int kind = TOP_UP; kind <= SPEND; kind++) {
        expect_code(kind, user, 0, "k0", SVC_INVALID_ARGUMENT);
        expect_code(kind, user, -5, "k1", SVC_INVALID_ARGUMENT);
        expect_code(kind, user, 100000001, "k2", SVC_INVALID_ARGUMENT);
        expect_code(kind, user, 1, "", SVC_INVALID_ARGUMENT);
        expect_code(kind, user, 1, long_key, SVC_INVALID_ARGUMENT);
        expect_code(kind, 0, 1, "k3", SVC_INVALID_ARGUMENT);
        expect_code(kind, -1, 1, "k4", SVC_INVALID_ARGUMENT);
    }
    long_key[128] = '\0'; /* 128 bytes is fine */
    balance_stack_top_up(&stack, user, 1, long_key);
    /* The same key with another amount, or as a spend. */
    expect_code(TOP_UP, user, 101, "first", SVC_INVALID_ARGUMENT);
    expect_code(SPEND, user, 100, "first", SVC_INVALID_ARGUMENT);
    /* Too little money; an unknown account. */
    expect_code(SPEND, user, 102, "too-much", SVC_FAILED_PRECONDITION);
    expect_code(SPEND, balance_stack_new_user(), 1, "nobody", SVC_NOT_FOUND);

    /* The balance cap: a ledger worth 10^12 written straight into the database. */
    int64_t rich = balance_stack_new_user();
    char sql[512];
    snprintf(sql, sizeof(sql),
             "WITH a AS (INSERT INTO accounts (user_id, balance) VALUES (%" PRId64
             ", 1000000000000)) INSERT INTO ledger (user_id, kind, amount, balance_after, "
             "idempotency_key) SELECT %" PRId64 ", 1, 100000000, g * 100000000, 'seed-' || g "
             "FROM generate_series(1::bigint, 10000) g",
             rich, rich);
    assert_int_equal(testenv_pg_exec(&stack.pg, sql), 0);
    expect_code(TOP_UP, rich, 1, "over-the-cap", SVC_FAILED_PRECONDITION);
    assert_int_equal(balance_stack_broken(&stack), 0);

    /* Still serving. */
    balance_stack_top_up(&stack, user, 1, "after-errors");
}

static void
test_get_balance_and_history(void **state)
{
    svc_arena_t *arena = svc_arena_create();
    int64_t user = balance_stack_new_user(), last_id = INT64_MAX;
    Balance__V1__ListTransactionsResponse *page;
    const char *token = NULL;
    svc_balance_result_t res;
    svc_err_t err;
    int seen = 0;
    char key[32];

    (void)state;
    for (int i = 0; i < 7; i++) {
        snprintf(key, sizeof(key), "h-%d", i);
        balance_stack_top_up(&stack, user, 10 + i, key);
    }
    assert_int_equal(svc_balance_get(C0, user, NULL, &res, &err), 0);
    assert_int_equal(res.balance, 7 * 10 + 21);
    assert_int_equal(svc_balance_get(C0, balance_stack_new_user(), NULL, &res, &err), -1);
    assert_int_equal(err.code, SVC_NOT_FOUND);

    for (;;) { /* pages of 3, newest first, until no token */
        assert_int_equal(balance_stack_list(C0, arena, user, 3, token, &page, &err), 0);
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
        token = page->next_page_token; /* in arena, as page is */
    }
    assert_int_equal(seen, 7);
    assert_int_equal(balance_stack_list(C0, arena, user, 3, "not-a-token", &page, &err), -1);
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    svc_arena_destroy(arena);
}

/* ---------- PostgreSQL restarted mid-storm ---------- */

typedef struct {
    atomic_int next;
    int n;
    balance_stack_op_t *ops;
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
        balance_stack_op_run(&s->ops[i]);
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
    int64_t user = balance_stack_new_user();
    pthread_t t[THREADS];
    int ok = 0, unavailable = 0, issued;

    (void)state;
    s.ops = make_ops(N, TOP_UP, user, 1, "pg", 2);
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, stream_thread, &s), 0);
    }
    while (atomic_load(&s.next) < 300) {
        svc_sleep_ms(5);
    }
    assert_int_equal(testenv_pg_kill(&stack.pg), 0);
    svc_sleep_ms(500);
    assert_int_equal(testenv_pg_restart(&stack.pg), 0);
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
                     s.ops[i].res.transaction_id, s.ops[i].key);
            assert_int_equal(testenv_pg_query_int(&stack.pg, sql), 1);
        }
    }
    assert_int_equal(
        balance_stack_query(&stack, "SELECT count(*) FROM ledger WHERE user_id =", user), ok);
    assert_int_equal(balance_stack_stored_balance(&stack, user), ok);
    assert_int_equal(balance_stack_broken(&stack), 0);
    free(s.ops);
}

/* lock-svc down: balance-svc refuses (fail closed) rather than write without the lock. */
static void
test_lock_svc_down_fails_closed(void **state)
{
    int64_t user = balance_stack_new_user();
    balance_stack_op_t op = balance_stack_op(C0, TOP_UP, user, 5, "while-lock-svc-is-down", 15000);

    (void)state;
    balance_stack_top_up(&stack, user, 10, "before");
    assert_int_equal(testenv_proc_kill(&stack.lock), 0);
    balance_stack_op_run(&op);
    assert_int_equal(op.rc, -1);
    assert_int_equal(op.err.code, SVC_UNAVAILABLE);
    assert_int_equal(balance_stack_stored_balance(&stack, user), 10);
    assert_int_equal(testenv_proc_restart(&stack.lock), 0);
    /* Back by itself, and the refused call can simply be retried. */
    for (int i = 0; i < 100; i++) {
        balance_stack_op_run(&op);
        if (op.rc == 0) {
            break;
        }
        svc_sleep_ms(50);
    }
    assert_int_equal(op.rc, 0);
    assert_int_equal(op.res.balance, 15);
    assert_int_equal(balance_stack_broken(&stack), 0);
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
    const balance_stack_config_t config = {.instances = 2};

    return balance_stack_main(&stack, &config, argc, argv, tests, sizeof(tests) / sizeof(tests[0]));
}
