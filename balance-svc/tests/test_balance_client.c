/*
 * test_balance_client.c: libsvc's typed balance-svc client
 * (svc/balance_client.h) against the real balance-svc: every function fills
 * exactly the fields its method returns, out may be NULL, statuses and
 * transport errors come back in err, and the caller's x-request-id and
 * timeout reach the server. argv[1] is balance-svc, argv[2] lock-svc.
 */
#define _GNU_SOURCE
#include <string.h>

#include "balance_stack.h"
#include "svc/timer.h"

static balance_stack_t stack;

static void
test_each_call_fills_its_fields(void **state)
{
    svc_client_t *c = stack.client[0];
    svc_balance_result_t r;
    int64_t user = 777, auth_id, spend_id;
    svc_err_t err;

    (void)state;
    assert_int_equal(svc_balance_top_up(c, user, 1000, "t", NULL, &r, &err), 0);
    assert_int_equal(r.balance, 1000);
    assert_true(r.transaction_id > 0);
    assert_int_equal(r.available + r.authorization_id + r.expires_at_ms, 0);
    assert_int_equal(svc_balance_spend(c, user, 100, "s", "ref", NULL, &r, &err), 0);
    assert_int_equal(r.balance, 900);
    spend_id = r.transaction_id;
    assert_int_equal(svc_balance_authorize(c, user, 300, "a", "ref", 5000, NULL, &r, &err), 0);
    assert_int_equal(r.balance, 900);
    assert_int_equal(r.available, 600);
    assert_true(r.expires_at_ms > svc_now_unix_ms());
    assert_int_equal(r.transaction_id, 0);
    auth_id = r.authorization_id;
    assert_int_equal(svc_balance_get(c, user, NULL, &r, &err), 0);
    assert_int_equal(r.balance, 900);
    assert_int_equal(r.available, 600);
    assert_int_equal(svc_balance_capture(c, auth_id, NULL, &r, &err), 0);
    assert_int_equal(r.balance, 600);
    assert_false(r.replayed);
    assert_int_equal(svc_balance_capture(c, auth_id, NULL, &r, &err), 0);
    assert_true(r.replayed);
    assert_int_equal(svc_balance_refund(c, user, spend_id, 100, "rf", NULL, &r, &err), 0);
    assert_int_equal(r.balance, 700);
    assert_int_equal(svc_balance_authorize(c, user, 50, "a2", "", 0, NULL, &r, &err), 0);
    assert_int_equal(svc_balance_void(c, r.authorization_id, NULL, &r, &err), 0);
    assert_int_equal(r.balance, 700);
    assert_int_equal(r.available, 700);
    /* out may be NULL. */
    assert_int_equal(svc_balance_top_up(c, user, 1, "t2", NULL, NULL, &err), 0);
    assert_int_equal(balance_stack_stored_balance(&stack, user), 701);
}

static void
test_errors_and_call_options(void **state)
{
    svc_call_opts_t opts = {.timeout_ms = 3000, .request_id = "client-test-rid-42"};
    svc_client_t *nowhere;
    svc_balance_result_t r;
    svc_err_t err;

    (void)state;
    assert_int_equal(svc_balance_get(stack.client[0], 424242, &opts, &r, &err), -1);
    assert_int_equal(err.code, SVC_NOT_FOUND);
    assert_non_null(strstr(err.msg, "424242"));
    assert_int_equal(svc_balance_spend(stack.client[0], 0, 1, "k", "", &opts, &r, &err), -1);
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    /* The request id reached balance-svc (it logs each call at info). */
    assert_true(balance_stack_log_contains(&stack.inst[0], "client-test-rid-42"));
    /* Nobody listens there: a transport error, within the timeout. */
    nowhere = svc_client_get("127.0.0.1:1", &err);
    assert_non_null(nowhere);
    int64_t t0 = svc_now_mono_ms();
    assert_int_equal(svc_balance_get(nowhere, 1, &opts, &r, &err), -1);
    assert_true(err.code == SVC_UNAVAILABLE || err.code == SVC_DEADLINE_EXCEEDED);
    assert_true(svc_now_mono_ms() - t0 < 3500);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_call_fills_its_fields),
        cmocka_unit_test(test_errors_and_call_options),
    };
    const char *balance_env[] = {"LOG_LEVEL=debug", NULL}; /* each call logged, with its id */
    const balance_stack_config_t config = {.instances = 1, .balance_env = balance_env};

    return balance_stack_main(&stack, &config, argc, argv, tests, sizeof(tests) / sizeof(tests[0]));
}
