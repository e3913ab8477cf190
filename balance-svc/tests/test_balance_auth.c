/*
 * test_balance_auth.c: balance-svc with caller identity on (AUTH_JWT_KEY_FILE
 * holding an RSA public key, AUTH_JWT_ISSUER and AUTH_JWT_AUDIENCE set), on
 * tokens minted here: a user's own token works on every call on its
 * account; another user's token is PERMISSION_DENIED and a missing, expired,
 * not yet valid, badly signed, "none", HS256-with-the-public-key, garbage
 * token, or one for another issuer or audience, is UNAUTHENTICATED; in
 * every refused case the account and its ledger are read back unchanged.
 * argv: balance-svc, lock-svc.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "balance_stack.h"
#include "svc/timer.h"
#include "testjwt.h"

#define ISS "https://issuer.test"
#define AUD "balance"
#define METHOD(m) "/balance.v1.BalanceService/" m

static balance_stack_t stack;
static EVP_PKEY *key, *other_key;
static char key_dir[] = "/tmp/test-balance-auth.XXXXXX";

static int64_t
now_s(void)
{
    return svc_now_unix_ms() / 1000;
}

/* "Bearer <a good token of user>", malloc'd. */
static char *
bearer_of(int64_t user)
{
    char sub[32];

    snprintf(sub, sizeof(sub), "%" PRId64, user);
    return testjwt_bearer(testjwt_token("RS256", key, sub, now_s(), 300, 0, ISS, AUD));
}

/* Call options carrying auth (NULL: no authorization header) in md[2]. */
static svc_call_opts_t
with_auth(const char *auth, const char *md[2])
{
    svc_call_opts_t o = {.timeout_ms = 15000};

    if (auth != NULL) {
        md[0] = "authorization";
        md[1] = auth;
        o.metadata = md;
        o.n_metadata = 1;
    }
    return o;
}

static int
spend_as(const char *auth, int64_t user, int64_t amount, const char *k, svc_balance_result_t *res,
         svc_err_t *err)
{
    const char *md[2];
    svc_call_opts_t o = with_auth(auth, md);

    return svc_balance_spend(stack.client[0], user, amount, k, "test", &o, res, err);
}

static int
top_up_as(const char *auth, int64_t user, int64_t amount, const char *k, svc_balance_result_t *res,
          svc_err_t *err)
{
    const char *md[2];
    svc_call_opts_t o = with_auth(auth, md);

    return svc_balance_top_up(stack.client[0], user, amount, k, &o, res, err);
}

static int
get_as(const char *auth, int64_t user, svc_balance_result_t *res, svc_err_t *err)
{
    const char *md[2];
    svc_call_opts_t o = with_auth(auth, md);

    return svc_balance_get(stack.client[0], user, &o, res, err);
}

static int
list_as(const char *auth, int64_t user, svc_err_t *err)
{
    Balance__V1__ListTransactionsRequest req = BALANCE__V1__LIST_TRANSACTIONS_REQUEST__INIT;
    const char *md[2];
    svc_call_opts_t o = with_auth(auth, md);
    svc_arena_t *arena = svc_arena_create();
    ProtobufCMessage *out;
    int rc;

    req.user_id = user;
    rc = svc_client_unary(stack.client[0], METHOD("ListTransactions"), &req.base,
                          &balance__v1__list_transactions_response__descriptor, arena, &out, &o,
                          err);
    svc_arena_destroy(arena);
    return rc;
}

/* A new user whose account holds amount, funded with its own token. */
static int64_t
funded(int64_t amount)
{
    int64_t user = balance_stack_new_user();
    char *auth = bearer_of(user);
    svc_balance_result_t res;
    svc_err_t err;
    int rc;

    BALANCE_OK(top_up_as(auth, user, amount, "fund", &res, &err));
    free(auth);
    return user;
}

static int64_t
ledger_rows(int64_t user)
{
    return balance_stack_query(&stack, "SELECT count(*) FROM ledger WHERE user_id =", user);
}

static void
test_own_token_works(void **state)
{
    int64_t user = funded(10000);
    char *auth = bearer_of(user);
    svc_balance_result_t res;
    svc_err_t err;
    int rc;

    (void)state;
    res = BALANCE_OK(spend_as(auth, user, 300, "s1", &res, &err));
    assert_int_equal(res.balance, 9700);
    res = BALANCE_OK(get_as(auth, user, &res, &err));
    assert_int_equal(res.balance, 9700);
    assert_int_equal(list_as(auth, user, &err), 0);
    assert_int_equal(balance_stack_stored_balance(&stack, user), 9700);
    free(auth);
}

static void
test_stranger_cannot_spend(void **state)
{
    int64_t victim = funded(10000), stranger = funded(100);
    char *auth = bearer_of(stranger);
    int64_t rows = ledger_rows(victim);
    svc_balance_result_t res;
    svc_err_t err;
    int rc;

    (void)state;
    BALANCE_EXPECT(SVC_PERMISSION_DENIED, spend_as(auth, victim, 5000, "steal", &res, &err));
    BALANCE_EXPECT(SVC_PERMISSION_DENIED, top_up_as(auth, victim, 5, "gift", &res, &err));
    BALANCE_EXPECT(SVC_PERMISSION_DENIED, get_as(auth, victim, &res, &err));
    BALANCE_EXPECT(SVC_PERMISSION_DENIED, list_as(auth, victim, &err));
    /* Read back: the victim's account and ledger are as they were. */
    assert_int_equal(balance_stack_stored_balance(&stack, victim), 10000);
    assert_int_equal(ledger_rows(victim), rows);
    assert_int_equal(balance_stack_stored_balance(&stack, stranger), 100);
    free(auth);
}

/*
 * Authorize, Capture, Void and Refund are reservation-svc's steps of a
 * payment: with identity on, not even an account's owner may call them (an
 * owner's Refund of the capture of a confirmed reservation would give the
 * money back and keep the seats). Before, the owner's own token passed.
 */
static void
test_payment_steps_for_trusted_peers_only(void **state)
{
    int64_t owner = funded(10000);
    char *mine = bearer_of(owner);
    const char *md[2];
    svc_call_opts_t own = with_auth(mine, md);
    svc_balance_result_t spent, res;
    svc_err_t err;
    int64_t rows;
    int rc;

    (void)state;
    spent = BALANCE_OK(spend_as(mine, owner, 4000, "spent", &res, &err));
    rows = ledger_rows(owner);
    BALANCE_EXPECT(SVC_PERMISSION_DENIED,
                   svc_balance_refund(stack.client[0], owner, spent.transaction_id, 4000, "rf",
                                      &own, &res, &err));
    BALANCE_EXPECT(SVC_PERMISSION_DENIED, svc_balance_authorize(stack.client[0], owner, 100, "a1",
                                                                "r", 0, &own, &res, &err));
    /* Refused before the lookup: nothing is told about which authorizations exist. */
    BALANCE_EXPECT(SVC_PERMISSION_DENIED,
                   svc_balance_capture(stack.client[0], 999999999, &own, &res, &err));
    BALANCE_EXPECT(SVC_PERMISSION_DENIED,
                   svc_balance_void(stack.client[0], 999999999, &own, &res, &err));
    /* Without a token: not a trusted peer either. */
    BALANCE_EXPECT(SVC_PERMISSION_DENIED,
                   svc_balance_capture(stack.client[0], 999999999, NULL, &res, &err));
    /* Read back: no refund, no authorization. */
    assert_int_equal(balance_stack_stored_balance(&stack, owner), 6000);
    assert_int_equal(ledger_rows(owner), rows);
    assert_int_equal(
        balance_stack_query(&stack, "SELECT count(*) FROM authorizations WHERE user_id =", owner),
        0);
    free(mine);
}

/* Expects a spend of 1 with auth refused UNAUTHENTICATED, and the account unchanged. */
static void
expect_unauthenticated(int64_t user, char *auth, const char *what)
{
    int64_t rows = ledger_rows(user), before = balance_stack_stored_balance(&stack, user);
    svc_balance_result_t res;
    svc_err_t err;

    if (spend_as(auth, user, 1, what, &res, &err) != -1 || err.code != SVC_UNAUTHENTICATED) {
        fail_msg("%s: spend answered %s (%s), want UNAUTHENTICATED", what,
                 svc_status_name(err.code), err.msg);
    }
    if (get_as(auth, user, &res, &err) != -1 || err.code != SVC_UNAUTHENTICATED) {
        fail_msg("%s: get answered %s, want UNAUTHENTICATED", what, svc_status_name(err.code));
    }
    assert_int_equal(balance_stack_stored_balance(&stack, user), before);
    assert_int_equal(ledger_rows(user), rows);
    free(auth);
}

static void
test_bad_tokens_unauthenticated(void **state)
{
    int64_t user = funded(1000);
    int64_t t = now_s();
    char sub[32], *pem;
    size_t pem_len = 0;

    (void)state;
    snprintf(sub, sizeof(sub), "%" PRId64, user);
    expect_unauthenticated(user, NULL, "missing");
    expect_unauthenticated(user, strdup("Basic dXNlcjpwYXNz"), "not bearer");
    expect_unauthenticated(user, strdup("Bearer not.a.token"), "garbage");
    expect_unauthenticated(user, strdup("Bearer "), "empty");
    expect_unauthenticated(
        user, testjwt_bearer(testjwt_token("RS256", key, sub, t - 7200, 3600, 0, ISS, AUD)),
        "expired");
    expect_unauthenticated(
        user, testjwt_bearer(testjwt_token("RS256", key, sub, t, 7200, 3600, ISS, AUD)),
        "not yet valid");
    expect_unauthenticated(
        user, testjwt_bearer(testjwt_token("RS256", other_key, sub, t, 300, 0, ISS, AUD)),
        "wrong signature");
    {
        char payload[256];

        snprintf(payload, sizeof(payload),
                 "{\"sub\":\"%s\",\"exp\":%" PRId64 ",\"iss\":\"" ISS "\",\"aud\":\"" AUD "\"}",
                 sub, t + 300);
        expect_unauthenticated(
            user,
            testjwt_bearer(
                testjwt_sign("none", NULL, NULL, 0, "{\"alg\":\"none\",\"typ\":\"JWT\"}", payload)),
            "alg none");
        pem = testjwt_public_pem(key, &pem_len);
        assert_non_null(pem);
        expect_unauthenticated(
            user,
            testjwt_bearer(testjwt_sign("HS256", NULL, pem, pem_len,
                                        "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload)),
            "HS256 with the public key");
        free(pem);
    }
    expect_unauthenticated(
        user, testjwt_bearer(testjwt_token("RS256", key, sub, t, 300, 0, "https://evil.test", AUD)),
        "wrong iss");
    expect_unauthenticated(
        user, testjwt_bearer(testjwt_token("RS256", key, sub, t, 300, 0, ISS, "reservation")),
        "wrong aud");
    assert_int_equal(balance_stack_stored_balance(&stack, user), 1000);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_own_token_works),
        cmocka_unit_test(test_stranger_cannot_spend),
        cmocka_unit_test(test_payment_steps_for_trusted_peers_only),
        cmocka_unit_test(test_bad_tokens_unauthenticated),
    };
    static char key_env[300];
    const char *balance_env[] = {key_env, "AUTH_JWT_ISSUER=" ISS, "AUTH_JWT_AUDIENCE=" AUD, NULL};
    const balance_stack_config_t config = {.instances = 1, .balance_env = balance_env};
    char path[256], cmd[300];
    int rc;

    key = testjwt_rsa_key(2048);
    other_key = testjwt_rsa_key(2048);
    if (key == NULL || other_key == NULL || mkdtemp(key_dir) == NULL) {
        fprintf(stderr, "test_balance_auth: cannot make keys\n");
        return 1;
    }
    snprintf(path, sizeof(path), "%s/jwt.pem", key_dir);
    if (testjwt_write_public(key, path) != 0) {
        fprintf(stderr, "test_balance_auth: cannot write %s\n", path);
        return 1;
    }
    snprintf(key_env, sizeof(key_env), "AUTH_JWT_KEY_FILE=%s", path);
    rc = balance_stack_main(&stack, &config, argc, argv, tests, sizeof(tests) / sizeof(tests[0]));
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", key_dir);
    if (system(cmd) != 0) {
        rc = rc != 0 ? rc : 1;
    }
    EVP_PKEY_free(key);
    EVP_PKEY_free(other_key);
    return rc;
}
