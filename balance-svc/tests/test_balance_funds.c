/*
 * test_balance_funds.c: two-phase funds and refunds in balance-svc, over
 * real gRPC (the typed client svc/balance_client.h) with a real PostgreSQL,
 * Redis and lock-svc: authorize, capture, void, expiry and the sweeper, the
 * available balance, concurrent captures and voids on two instances,
 * idempotent replays, and refund caps. Every test ends with the ledger
 * invariants. argv[1] is balance-svc, argv[2] lock-svc.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "balance_stack.h"
#include "svc/timer.h"

static balance_stack_t stack;

#define C0 (stack.client[0])
#define C1 (stack.client[1])
static int64_t
available(int64_t user)
{
    svc_balance_result_t res;
    svc_err_t err;
    int rc;

    return BALANCE_OK(svc_balance_get(C0, user, NULL, &res, &err)).available;
}

static int64_t
auth_status(int64_t id)
{
    return balance_stack_query(&stack, "SELECT status FROM authorizations WHERE id =", id);
}

/* ---------- authorize, capture, void ---------- */

static void
test_authorize_then_capture(void **state)
{
    int64_t user = balance_stack_funded_user(&stack, 1000);
    svc_balance_result_t res, auth, cap;
    svc_err_t err;
    int rc;

    (void)state;
    auth = BALANCE_OK(
        svc_balance_authorize(C0, user, 300, "order-1", "concert 7", 60000, NULL, &res, &err));
    assert_true(auth.authorization_id > 0);
    assert_int_equal(auth.balance, 1000);
    assert_int_equal(auth.available, 700);
    assert_false(auth.replayed);
    assert_int_equal(available(user), 700);
    /* Held money cannot be spent, nor held twice. */
    BALANCE_EXPECT(SVC_FAILED_PRECONDITION,
                   svc_balance_spend(C0, user, 701, "too-much", "", NULL, &res, &err));
    assert_non_null(strstr(err.msg, "insufficient balance"));
    BALANCE_EXPECT(SVC_FAILED_PRECONDITION,
                   svc_balance_authorize(C0, user, 701, "order-2", "", 0, NULL, &res, &err));
    cap = BALANCE_OK(svc_balance_capture(C1, auth.authorization_id, NULL, &res, &err));
    assert_int_equal(cap.balance, 700);
    assert_false(cap.replayed);
    assert_int_equal(available(user), 700);
    /* The capture is a SPEND row under the authorization's key and reference. */
    assert_int_equal(balance_stack_query(&stack,
                                         "SELECT count(*) FROM ledger WHERE kind = 2 AND amount ="
                                         " 300 AND idempotency_key = 'order-1' AND reference ="
                                         " 'concert 7' AND id =",
                                         cap.transaction_id),
                     1);
    assert_int_equal(auth_status(auth.authorization_id), 2);
    assert_int_equal(
        balance_stack_query(
            &stack, "SELECT capture_txn_id FROM authorizations WHERE id =", auth.authorization_id),
        cap.transaction_id);
    /* Again: the same row, replayed, nothing more spent. */
    res = BALANCE_OK(svc_balance_capture(C0, auth.authorization_id, NULL, &res, &err));
    assert_int_equal(res.transaction_id, cap.transaction_id);
    assert_int_equal(res.balance, 700);
    assert_true(res.replayed);
    assert_int_equal(balance_stack_stored_balance(&stack, user), 700);
    /* A captured one cannot be voided. */
    BALANCE_EXPECT(SVC_FAILED_PRECONDITION,
                   svc_balance_void(C0, auth.authorization_id, NULL, &res, &err));
    assert_int_equal(balance_stack_broken(&stack), 0);
}

static void
test_void_gives_the_money_back(void **state)
{
    int64_t user = balance_stack_funded_user(&stack, 500);
    svc_balance_result_t res, auth;
    svc_err_t err;
    int rc;

    (void)state;
    auth = BALANCE_OK(svc_balance_authorize(C0, user, 200, "hold", "", 0, NULL, &res, &err));
    assert_int_equal(auth.available, 300);
    assert_int_equal(auth.status, SVC_BALANCE_AUTH_PENDING);
    res = BALANCE_OK(svc_balance_void(C1, auth.authorization_id, NULL, &res, &err));
    assert_int_equal(res.balance, 500);
    assert_int_equal(res.available, 500);
    assert_int_equal(auth_status(auth.authorization_id), 3);
    res =
        BALANCE_OK(svc_balance_void(C0, auth.authorization_id, NULL, &res, &err)); /* idempotent */
    assert_int_equal(res.available, 500);
    BALANCE_EXPECT(SVC_FAILED_PRECONDITION,
                   svc_balance_capture(C0, auth.authorization_id, NULL, &res, &err));
    assert_non_null(strstr(err.msg, "voided"));
    /* Authorize again with its key: the same authorization, and it says it is dead. */
    res = BALANCE_OK(svc_balance_authorize(C0, user, 200, "hold", "", 0, NULL, &res, &err));
    assert_true(res.replayed);
    assert_int_equal(res.authorization_id, auth.authorization_id);
    assert_int_equal(res.status, SVC_BALANCE_AUTH_VOIDED);
    assert_int_equal(res.available, 500);
    BALANCE_EXPECT(SVC_NOT_FOUND, svc_balance_capture(C0, INT64_MAX - 1, NULL, &res, &err));
    BALANCE_EXPECT(SVC_NOT_FOUND, svc_balance_void(C0, INT64_MAX - 1, NULL, &res, &err));
    BALANCE_EXPECT(SVC_INVALID_ARGUMENT, svc_balance_void(C0, 0, NULL, &res, &err));
    assert_int_equal(
        balance_stack_query(&stack, "SELECT count(*) FROM ledger WHERE user_id =", user), 1);
    assert_int_equal(balance_stack_broken(&stack), 0);
}

static void
test_authorize_inputs_and_replays(void **state)
{
    int64_t user = balance_stack_funded_user(&stack, 2000), now = svc_now_unix_ms();
    svc_balance_result_t res, auth;
    char long_key[130];
    svc_err_t err;
    int rc;

    (void)state;
    memset(long_key, 'k', 129);
    long_key[129] = '\0';
    BALANCE_EXPECT(SVC_INVALID_ARGUMENT,
                   svc_balance_authorize(C0, user, 0, "a", "", 0, NULL, &res, &err));
    BALANCE_EXPECT(SVC_INVALID_ARGUMENT,
                   svc_balance_authorize(C0, user, 1000000001, "a", "", 0, NULL, &res, &err));
    BALANCE_EXPECT(SVC_INVALID_ARGUMENT,
                   svc_balance_authorize(C0, user, 1, "", "", 0, NULL, &res, &err));
    BALANCE_EXPECT(SVC_INVALID_ARGUMENT,
                   svc_balance_authorize(C0, user, 1, long_key, "", 0, NULL, &res, &err));
    BALANCE_EXPECT(SVC_INVALID_ARGUMENT,
                   svc_balance_authorize(C0, user, 1, "a", "", -1, NULL, &res, &err));
    BALANCE_EXPECT(SVC_INVALID_ARGUMENT,
                   svc_balance_authorize(C0, user, 1, "a", "", 86400001, NULL, &res, &err));
    BALANCE_EXPECT(SVC_INVALID_ARGUMENT,
                   svc_balance_authorize(C0, 0, 1, "a", "", 0, NULL, &res, &err));
    BALANCE_EXPECT(SVC_NOT_FOUND, svc_balance_authorize(C0, balance_stack_new_user(), 1, "a", "", 0,
                                                        NULL, &res, &err));

    /* expires_in_ms 0 is ten minutes. */
    auth = BALANCE_OK(svc_balance_authorize(C0, user, 100, "a", "r", 0, NULL, &res, &err));
    assert_in_range(auth.expires_at_ms - now, 600000 - 5000, 600000 + 5000);
    res = BALANCE_OK(svc_balance_authorize(C1, user, 100, "a", "r", 0, NULL, &res, &err));
    assert_int_equal(res.authorization_id, auth.authorization_id);
    assert_int_equal(res.expires_at_ms, auth.expires_at_ms);
    assert_true(res.replayed);
    BALANCE_EXPECT(SVC_INVALID_ARGUMENT,
                   svc_balance_authorize(C0, user, 101, "a", "r", 0, NULL, &res, &err));
    /* One namespace: a ledger key is not an authorization key, and the other way round. */
    BALANCE_EXPECT(SVC_INVALID_ARGUMENT,
                   svc_balance_authorize(C0, user, 100, "fund", "", 0, NULL, &res, &err));
    BALANCE_EXPECT(SVC_INVALID_ARGUMENT,
                   svc_balance_spend(C0, user, 100, "a", "r", NULL, &res, &err));
    BALANCE_EXPECT(SVC_INVALID_ARGUMENT, svc_balance_top_up(C0, user, 100, "a", NULL, &res, &err));
    /* After the capture too (its SPEND row carries the key). */
    BALANCE_OK(svc_balance_capture(C0, auth.authorization_id, NULL, &res, &err));
    BALANCE_EXPECT(SVC_INVALID_ARGUMENT,
                   svc_balance_spend(C0, user, 100, "a", "r", NULL, &res, &err));
    res = BALANCE_OK(svc_balance_authorize(C0, user, 100, "a", "r", 0, NULL, &res, &err));
    assert_int_equal(res.authorization_id, auth.authorization_id);
    assert_true(res.replayed);
    assert_int_equal(
        balance_stack_query(&stack, "SELECT count(*) FROM authorizations WHERE user_id =", user),
        1);
    assert_int_equal(balance_stack_broken(&stack), 0);
}

/* ---------- expiry ---------- */

static void
test_expired_authorization(void **state)
{
    int64_t user = balance_stack_funded_user(&stack, 1000);
    svc_balance_result_t res, a1, a2;
    svc_err_t err;
    int rc;

    (void)state;
    /* Expired but not yet swept, money still there: the capture goes through. */
    a1 = BALANCE_OK(svc_balance_authorize(C0, user, 400, "short-1", "", 300, NULL, &res, &err));
    assert_int_equal(available(user), 600);
    svc_sleep_ms(400);
    assert_int_equal(available(user), 1000); /* it no longer holds anything */
    res = BALANCE_OK(svc_balance_capture(C0, a1.authorization_id, NULL, &res, &err));
    assert_int_equal(res.balance, 600);

    /* Expired, and its money spent meanwhile (that spend's transaction voids it). */
    a2 = BALANCE_OK(svc_balance_authorize(C0, user, 500, "short-2", "", 300, NULL, &res, &err));
    BALANCE_EXPECT(SVC_FAILED_PRECONDITION,
                   svc_balance_spend(C0, user, 200, "while-held", "", NULL, &res, &err));
    svc_sleep_ms(400);
    BALANCE_OK(svc_balance_spend(C0, user, 200, "after-expiry", "", NULL, &res, &err));
    assert_int_equal(auth_status(a2.authorization_id), 3);
    BALANCE_EXPECT(SVC_FAILED_PRECONDITION,
                   svc_balance_capture(C0, a2.authorization_id, NULL, &res, &err));
    assert_non_null(strstr(err.msg, "expired"));
    assert_int_equal(balance_stack_stored_balance(&stack, user), 400);
    assert_int_equal(balance_stack_broken(&stack), 0);
}

/* An account nobody touches: the sweeper thread of an instance started for it voids its hold. */
static void
test_sweeper_voids_what_expired(void **state)
{
    int64_t user = balance_stack_funded_user(&stack, 100);
    svc_balance_result_t res, auth;
    const char *env[] = {"SWEEP_INTERVAL_MS=100", NULL};
    testenv_proc_t sweeper = {0};
    svc_err_t err;
    int rc;

    (void)state;
    auth = BALANCE_OK(svc_balance_authorize(C1, user, 100, "forgotten", "", 200, NULL, &res, &err));
    svc_sleep_ms(1000);
    assert_int_equal(auth_status(auth.authorization_id), 1); /* nobody swept yet */
    assert_int_equal(balance_stack_start_instance(&stack, &sweeper, env), 0);
    for (int i = 0; i < 100 && auth_status(auth.authorization_id) != 3; i++) {
        svc_sleep_ms(50);
    }
    assert_int_equal(testenv_proc_stop(&sweeper), 0);
    assert_int_equal(auth_status(auth.authorization_id), 3);
    assert_int_equal(available(user), 100);
    assert_int_equal(testenv_pg_query_int(&stack.pg,
                                          "SELECT count(*) FROM authorizations WHERE status = 1"
                                          " AND expires_at_ms < (extract(epoch FROM now()) *"
                                          " 1000)::bigint - 5000"),
                     0);
}

/* ---------- concurrency ---------- */

typedef struct {
    svc_client_t *client;
    int capture; /* else void */
    int64_t id;
    int rc;
    svc_err_t err;
    svc_balance_result_t res;
} settle_t;

static void *
settle_thread(void *arg)
{
    settle_t *s = arg;

    s->rc = s->capture ? svc_balance_capture(s->client, s->id, NULL, &s->res, &s->err)
                       : svc_balance_void(s->client, s->id, NULL, &s->res, &s->err);
    return NULL;
}

/* Captures and voids of one authorization at once: one of the two wins, completely. */
static void
test_concurrent_captures_and_voids(void **state)
{
    enum { ROUNDS = 8, N = 16 };
    int64_t user = balance_stack_funded_user(&stack, 100000);
    int captured_rounds = 0;

    (void)state;
    for (int round = 0; round < ROUNDS; round++) {
        settle_t s[N];
        pthread_t t[N];
        svc_balance_result_t res, auth;
        char key[32];
        svc_err_t err;
        int rc, cap_ok = 0, void_ok = 0, fresh = 0;

        snprintf(key, sizeof(key), "race-%d", round);
        auth = BALANCE_OK(svc_balance_authorize(C0, user, 1000, key, "", 0, NULL, &res, &err));
        for (int i = 0; i < N; i++) {
            s[i] = (settle_t){
                .client = stack.client[i % 2], .capture = i % 2, .id = auth.authorization_id};
            assert_int_equal(pthread_create(&t[i], NULL, settle_thread, &s[i]), 0);
        }
        for (int i = 0; i < N; i++) {
            pthread_join(t[i], NULL);
        }
        for (int i = 0; i < N; i++) {
            if (s[i].rc != 0) {
                assert_int_equal(s[i].err.code, SVC_FAILED_PRECONDITION);
            } else if (s[i].capture) {
                cap_ok++;
                fresh += !s[i].res.replayed;
            } else {
                void_ok++;
            }
        }
        /* Either every capture succeeded (one of them for real) or every void did. */
        assert_true((cap_ok == N / 2 && void_ok == 0 && fresh == 1) ||
                    (void_ok == N / 2 && cap_ok == 0));
        captured_rounds += cap_ok > 0;
        assert_int_equal(
            balance_stack_query(&stack,
                                "SELECT count(*) FROM ledger WHERE kind = 2 AND user_id =", user),
            captured_rounds);
    }
    assert_int_equal(balance_stack_stored_balance(&stack, user), 100000 - 1000 * captured_rounds);
    assert_int_equal(available(user), 100000 - 1000 * captured_rounds);
    assert_int_equal(balance_stack_broken(&stack), 0);
}

/* ---------- refunds ---------- */

typedef struct {
    svc_client_t *client;
    int64_t user, txn, amount;
    char key[32];
    int rc;
    svc_err_t err;
    svc_balance_result_t res;
} refund_t;

static void *
refund_thread(void *arg)
{
    refund_t *r = arg;

    r->rc =
        svc_balance_refund(r->client, r->user, r->txn, r->amount, r->key, NULL, &r->res, &r->err);
    return NULL;
}

static void
test_refunds(void **state)
{
    int64_t user = balance_stack_funded_user(&stack, 1000),
            other = balance_stack_funded_user(&stack, 1000);
    svc_balance_result_t res, spend, spend2, r1, fund;
    svc_err_t err;
    int rc;

    (void)state;
    spend = BALANCE_OK(svc_balance_spend(C0, user, 500, "buy", "reservation 9", NULL, &res, &err));
    fund = BALANCE_OK(svc_balance_top_up(C0, user, 1000, "fund", NULL, &res, &err)); /* replay */
    r1 = BALANCE_OK(
        svc_balance_refund(C1, user, spend.transaction_id, 200, "back-1", NULL, &res, &err));
    assert_int_equal(r1.balance, 700);
    assert_false(r1.replayed);
    assert_int_equal(balance_stack_query(&stack,
                                         "SELECT count(*) FROM ledger WHERE kind = 3 AND reference"
                                         " = 'reservation 9' AND amount = 200 AND refund_of =",
                                         spend.transaction_id),
                     1);
    /* Replays, and the key with another amount or spend. */
    res = BALANCE_OK(
        svc_balance_refund(C0, user, spend.transaction_id, 200, "back-1", NULL, &res, &err));
    assert_int_equal(res.transaction_id, r1.transaction_id);
    assert_true(res.replayed);
    BALANCE_EXPECT(SVC_INVALID_ARGUMENT, svc_balance_refund(C0, user, spend.transaction_id, 201,
                                                            "back-1", NULL, &res, &err));
    spend2 = BALANCE_OK(svc_balance_spend(C0, user, 100, "buy-2", "", NULL, &res, &err));
    BALANCE_EXPECT(SVC_INVALID_ARGUMENT, svc_balance_refund(C0, user, spend2.transaction_id, 200,
                                                            "back-1", NULL, &res, &err));
    BALANCE_EXPECT(SVC_INVALID_ARGUMENT, svc_balance_refund(C0, user, spend.transaction_id, 200,
                                                            "buy", NULL, &res, &err));
    /* Not a spend of this user. */
    BALANCE_EXPECT(SVC_NOT_FOUND, svc_balance_refund(C0, user, fund.transaction_id, 1, "of-top-up",
                                                     NULL, &res, &err));
    BALANCE_EXPECT(SVC_NOT_FOUND, svc_balance_refund(C0, other, spend.transaction_id, 1, "not-mine",
                                                     NULL, &res, &err));
    BALANCE_EXPECT(SVC_INVALID_ARGUMENT,
                   svc_balance_refund(C0, user, spend.transaction_id, 0, "zero", NULL, &res, &err));
    /* The cap: 300 more is fine, 1 more is not. */
    BALANCE_EXPECT(SVC_FAILED_PRECONDITION, svc_balance_refund(C0, user, spend.transaction_id, 301,
                                                               "back-2", NULL, &res, &err));
    BALANCE_OK(svc_balance_refund(C0, user, spend.transaction_id, 300, "back-2", NULL, &res, &err));
    BALANCE_EXPECT(SVC_FAILED_PRECONDITION, svc_balance_refund(C0, user, spend.transaction_id, 1,
                                                               "back-3", NULL, &res, &err));
    res = BALANCE_OK(
        svc_balance_refund(C0, user, spend.transaction_id, 300, "back-2", NULL, &res, &err));
    assert_true(res.replayed); /* a replay is answered as then, even past the cap */
    assert_int_equal(balance_stack_stored_balance(&stack, user), 900);
    assert_int_equal(balance_stack_broken(&stack), 0);
}

/* Ten refunds of 100 at once against a spend of 500: exactly five go through. */
static void
test_concurrent_refunds_never_exceed_the_spend(void **state)
{
    enum { N = 10 };
    int64_t user = balance_stack_funded_user(&stack, 1000);
    svc_balance_result_t res, spend, auth;
    refund_t r[N];
    pthread_t t[N];
    svc_err_t err;
    int rc, n_ok = 0;

    (void)state;
    auth = BALANCE_OK(svc_balance_authorize(C0, user, 500, "pay", "seat 1", 0, NULL, &res, &err));
    spend = BALANCE_OK(svc_balance_capture(C0, auth.authorization_id, NULL, &res, &err));
    for (int i = 0; i < N; i++) {
        r[i] = (refund_t){.client = stack.client[i % 2],
                          .user = user,
                          .txn = spend.transaction_id,
                          .amount = 100};
        snprintf(r[i].key, sizeof(r[i].key), "part-%d", i);
        assert_int_equal(pthread_create(&t[i], NULL, refund_thread, &r[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        if (r[i].rc == 0) {
            n_ok++;
        } else {
            assert_int_equal(r[i].err.code, SVC_FAILED_PRECONDITION);
        }
    }
    assert_int_equal(n_ok, 5);
    assert_int_equal(balance_stack_stored_balance(&stack, user), 1000);
    assert_int_equal(balance_stack_broken(&stack), 0);
}

/* ListTransactions shows refunds as REFUND rows naming their spend. */
static void
test_history_shows_refunds(void **state)
{
    Balance__V1__ListTransactionsResponse *page;
    int64_t user = balance_stack_funded_user(&stack, 100);
    svc_arena_t *arena = svc_arena_create();
    svc_balance_result_t res, spend, refund;
    svc_err_t err;
    int rc;

    (void)state;
    spend = BALANCE_OK(svc_balance_spend(C0, user, 60, "s", "ref", NULL, &res, &err));
    refund =
        BALANCE_OK(svc_balance_refund(C0, user, spend.transaction_id, 60, "r", NULL, &res, &err));
    assert_int_equal(balance_stack_list(C0, arena, user, 0, NULL, &page, &err), 0);
    assert_int_equal(page->n_transactions, 3);
    assert_int_equal(page->transactions[0]->id, refund.transaction_id);
    assert_int_equal(page->transactions[0]->kind,
                     BALANCE__V1__TRANSACTION_KIND__TRANSACTION_KIND_REFUND);
    assert_int_equal(page->transactions[0]->refund_of, spend.transaction_id);
    assert_int_equal(page->transactions[0]->balance_after, 100);
    assert_string_equal(page->transactions[0]->reference, "ref");
    assert_int_equal(page->transactions[1]->kind,
                     BALANCE__V1__TRANSACTION_KIND__TRANSACTION_KIND_SPEND);
    assert_int_equal(page->transactions[1]->refund_of, 0);
    svc_arena_destroy(arena);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_authorize_then_capture),
        cmocka_unit_test(test_void_gives_the_money_back),
        cmocka_unit_test(test_authorize_inputs_and_replays),
        cmocka_unit_test(test_expired_authorization),
        cmocka_unit_test(test_sweeper_voids_what_expired),
        cmocka_unit_test(test_concurrent_captures_and_voids),
        cmocka_unit_test(test_refunds),
        cmocka_unit_test(test_concurrent_refunds_never_exceed_the_spend),
        cmocka_unit_test(test_history_shows_refunds),
    };
    /* No periodic sweep (but the one at start-up): expiry tests need unswept holds. */
    const char *balance_env[] = {"SWEEP_INTERVAL_MS=3600000", NULL};
    const balance_stack_config_t config = {.instances = 2, .balance_env = balance_env};

    return balance_stack_main(&stack, &config, argc, argv, tests, sizeof(tests) / sizeof(tests[0]));
}
