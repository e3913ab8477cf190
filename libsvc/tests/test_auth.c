/*
 * test_auth.c: the JWT verifier alone (svc_auth_verify), on key pairs and
 * tokens made here: good RS256 and ES256 tokens pass; expired, not yet
 * valid, badly signed, "none", HS256-with-the-public-key, wrong issuer or
 * audience, malformed ones are refused; bad key files stop the start.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "svc/auth.h"
#include "testjwt.h"

#define NOW 1800000000LL /* a fixed clock: the verifier takes now as an argument */
#define HDR_RS "{\"alg\":\"RS256\",\"typ\":\"JWT\"}"
#define HDR_ES "{\"alg\":\"ES256\",\"typ\":\"JWT\"}"

static char dir[] = "/tmp/test-auth.XXXXXX";
static EVP_PKEY *rsa, *rsa_other, *ec, *ec_other;
static svc_auth_t *rsa_auth, *ec_auth, *strict_auth;

static void
path_in_dir(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", dir, name);
}

static svc_auth_t *
auth_for(EVP_PKEY *key, const char *name, const char *iss, const char *aud)
{
    char path[256];
    svc_auth_opts_t o = {.leeway_s = 30, .issuer = iss, .audience = aud};
    svc_err_t err;
    svc_auth_t *auth;

    path_in_dir(path, sizeof(path), name);
    if (testjwt_write_public(key, path) != 0) {
        return NULL;
    }
    o.jwt_key_file = path;
    auth = svc_auth_create(&o, &err);
    if (auth == NULL) {
        fprintf(stderr, "svc_auth_create: %s\n", err.msg);
    }
    return auth;
}

static int
setup(void **state)
{
    (void)state;
    if (mkdtemp(dir) == NULL) {
        return -1;
    }
    rsa = testjwt_rsa_key(2048);
    rsa_other = testjwt_rsa_key(2048);
    ec = testjwt_ec_key("P-256");
    ec_other = testjwt_ec_key("P-256");
    if (rsa == NULL || rsa_other == NULL || ec == NULL || ec_other == NULL) {
        return -1;
    }
    rsa_auth = auth_for(rsa, "rsa.pem", NULL, NULL);
    ec_auth = auth_for(ec, "ec.pem", NULL, NULL);
    strict_auth = auth_for(rsa, "rsa-strict.pem", "https://issuer.test", "reservation");
    return rsa_auth != NULL && ec_auth != NULL && strict_auth != NULL ? 0 : -1;
}

static int
teardown(void **state)
{
    char cmd[300];

    (void)state;
    svc_auth_destroy(rsa_auth);
    svc_auth_destroy(ec_auth);
    svc_auth_destroy(strict_auth);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(rsa_other);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(ec_other);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Verifies token (freed) with auth at NOW; returns the code, and sub when OK. */
static svc_status_t
verify(const svc_auth_t *auth, char *token, char *sub_out)
{
    char sub[SVC_AUTH_SUB_MAX] = "";
    svc_err_t err;

    assert_non_null(token);
    svc_err_clear(&err);
    if (svc_auth_verify(auth, token, NOW, sub, &err) != 0) {
        assert_int_equal(err.code, SVC_UNAUTHENTICATED);
        assert_null(strstr(err.msg, token)); /* the token is never echoed */
        free(token);
        return err.code;
    }
    if (sub_out != NULL) {
        strcpy(sub_out, sub);
    }
    free(token);
    return SVC_OK;
}

/* Expects token (freed) refused with a message containing why. */
static void
expect_refused(const svc_auth_t *auth, char *token, const char *why)
{
    char sub[SVC_AUTH_SUB_MAX] = "";
    svc_err_t err;

    assert_non_null(token);
    svc_err_clear(&err);
    assert_int_equal(svc_auth_verify(auth, token, NOW, sub, &err), -1);
    assert_int_equal(err.code, SVC_UNAUTHENTICATED);
    if (strstr(err.msg, why) == NULL) {
        fail_msg("\"%s\" does not say \"%s\"", err.msg, why);
    }
    free(token);
}

static char *
claims(const char *hdr, EVP_PKEY *key, const char *payload)
{
    return testjwt_sign(strstr(hdr, "ES256") != NULL ? "ES256" : "RS256", key, NULL, 0, hdr,
                        payload);
}

static void
test_valid_rs256_and_es256(void **state)
{
    char sub[SVC_AUTH_SUB_MAX];

    (void)state;
    assert_string_equal(svc_auth_alg(rsa_auth), "RS256");
    assert_string_equal(svc_auth_alg(ec_auth), "ES256");
    assert_int_equal(
        verify(rsa_auth, testjwt_token("RS256", rsa, "42", NOW, 300, 0, NULL, NULL), sub), SVC_OK);
    assert_string_equal(sub, "42");
    assert_int_equal(
        verify(ec_auth, testjwt_token("ES256", ec, "user-7", NOW, 300, INT64_MIN, NULL, NULL), sub),
        SVC_OK);
    assert_string_equal(sub, "user-7");
}

static void
test_expired_and_leeway(void **state)
{
    (void)state;
    expect_refused(rsa_auth, testjwt_token("RS256", rsa, "42", NOW, -3600, INT64_MIN, NULL, NULL),
                   "expired");
    /* 30 s of leeway: 10 s past exp still passes, 30 s past does not. */
    assert_int_equal(
        verify(rsa_auth, testjwt_token("RS256", rsa, "42", NOW, -10, INT64_MIN, NULL, NULL), NULL),
        SVC_OK);
    expect_refused(rsa_auth, testjwt_token("RS256", rsa, "42", NOW, -30, INT64_MIN, NULL, NULL),
                   "expired");
    expect_refused(ec_auth, testjwt_token("ES256", ec, "42", NOW, -3600, INT64_MIN, NULL, NULL),
                   "expired");
    expect_refused(rsa_auth, claims(HDR_RS, rsa, "{\"sub\":\"42\"}"), "no exp");
    expect_refused(rsa_auth, claims(HDR_RS, rsa, "{\"sub\":\"42\",\"exp\":\"1900000000\"}"),
                   "no exp");
}

static void
test_not_yet_valid(void **state)
{
    (void)state;
    expect_refused(rsa_auth, testjwt_token("RS256", rsa, "42", NOW, 3600, 600, NULL, NULL),
                   "not valid yet");
    assert_int_equal(
        verify(rsa_auth, testjwt_token("RS256", rsa, "42", NOW, 3600, 20, NULL, NULL), NULL),
        SVC_OK);
    expect_refused(rsa_auth,
                   claims(HDR_RS, rsa, "{\"sub\":\"42\",\"exp\":1900000000,\"nbf\":\"soon\"}"),
                   "not valid yet");
}

static void
test_wrong_signature(void **state)
{
    char *good, *forged, *dot, *t;

    (void)state;
    expect_refused(rsa_auth,
                   testjwt_token("RS256", rsa_other, "42", NOW, 300, INT64_MIN, NULL, NULL),
                   "bad signature");
    expect_refused(ec_auth, testjwt_token("ES256", ec_other, "42", NOW, 300, INT64_MIN, NULL, NULL),
                   "bad signature");
    /* A signature of user 42's claims moved onto user 43's. */
    good = testjwt_token("RS256", rsa, "42", NOW, 300, INT64_MIN, NULL, NULL);
    forged = testjwt_token("RS256", rsa_other, "43", NOW, 300, INT64_MIN, NULL, NULL);
    assert_non_null(good);
    assert_non_null(forged);
    dot = strrchr(forged, '.');
    t = malloc((size_t)(dot - forged) + strlen(strrchr(good, '.')) + 1);
    assert_non_null(t);
    memcpy(t, forged, (size_t)(dot - forged));
    strcpy(t + (dot - forged), strrchr(good, '.'));
    expect_refused(rsa_auth, t, "bad signature");
    free(good);
    free(forged);
}

static void
test_alg_none_refused(void **state)
{
    char *t;

    (void)state;
    expect_refused(rsa_auth,
                   testjwt_sign("none", NULL, NULL, 0, "{\"alg\":\"none\",\"typ\":\"JWT\"}",
                                "{\"sub\":\"42\",\"exp\":1900000000}"),
                   "algorithm must be RS256");
    expect_refused(ec_auth,
                   testjwt_sign("none", NULL, NULL, 0, "{\"alg\":\"none\"}",
                                "{\"sub\":\"42\",\"exp\":1900000000}"),
                   "algorithm must be ES256");
    /* "None", no alg, alg not a string. */
    expect_refused(rsa_auth,
                   testjwt_sign("none", NULL, NULL, 0, "{\"alg\":\"None\"}",
                                "{\"sub\":\"42\",\"exp\":1900000000}"),
                   "algorithm");
    expect_refused(rsa_auth,
                   testjwt_sign("none", NULL, NULL, 0, "{\"typ\":\"JWT\"}",
                                "{\"sub\":\"42\",\"exp\":1900000000}"),
                   "algorithm");
    /* An RS256 header whose signature part is empty. */
    t = testjwt_sign("none", NULL, NULL, 0, HDR_RS, "{\"sub\":\"42\",\"exp\":1900000000}");
    expect_refused(rsa_auth, t, "bad signature");
}

static void
test_hs256_with_public_key_refused(void **state)
{
    size_t len = 0;
    char *pem = testjwt_public_pem(rsa, &len), *t;

    (void)state;
    assert_non_null(pem);
    t = testjwt_sign("HS256", NULL, pem, len, "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
                     "{\"sub\":\"42\",\"exp\":1900000000}");
    expect_refused(rsa_auth, t, "algorithm must be RS256");
    /* The same trick with the header claiming RS256: the HMAC is no RSA signature. */
    t = testjwt_sign("HS256", NULL, pem, len, HDR_RS, "{\"sub\":\"42\",\"exp\":1900000000}");
    expect_refused(rsa_auth, t, "bad signature");
    free(pem);
}

static void
test_algorithm_fixed_by_key(void **state)
{
    (void)state;
    expect_refused(ec_auth, testjwt_token("RS256", rsa, "42", NOW, 300, INT64_MIN, NULL, NULL),
                   "algorithm must be ES256");
    expect_refused(rsa_auth, testjwt_token("ES256", ec, "42", NOW, 300, INT64_MIN, NULL, NULL),
                   "algorithm must be RS256");
    /* ES256 header, ES256 key, but a DER signature instead of r||s. */
    expect_refused(
        ec_auth, testjwt_sign("RS256", ec, NULL, 0, HDR_ES, "{\"sub\":\"42\",\"exp\":1900000000}"),
        "bad signature");
    expect_refused(rsa_auth,
                   claims("{\"alg\":\"RS256\",\"crit\":[\"exp\"]}", rsa,
                          "{\"sub\":\"42\",\"exp\":1900000000}"),
                   "critical");
}

static void
test_issuer_and_audience(void **state)
{
    (void)state;
    assert_int_equal(verify(strict_auth,
                            testjwt_token("RS256", rsa, "42", NOW, 300, INT64_MIN,
                                          "https://issuer.test", "reservation"),
                            NULL),
                     SVC_OK);
    expect_refused(
        strict_auth,
        testjwt_token("RS256", rsa, "42", NOW, 300, INT64_MIN, "https://evil.test", "reservation"),
        "wrong issuer");
    expect_refused(strict_auth,
                   testjwt_token("RS256", rsa, "42", NOW, 300, INT64_MIN, NULL, "reservation"),
                   "wrong issuer");
    expect_refused(
        strict_auth,
        testjwt_token("RS256", rsa, "42", NOW, 300, INT64_MIN, "https://issuer.test", "balance"),
        "audience");
    expect_refused(
        strict_auth,
        testjwt_token("RS256", rsa, "42", NOW, 300, INT64_MIN, "https://issuer.test", NULL),
        "audience");
    assert_int_equal(verify(strict_auth,
                            claims(HDR_RS, rsa,
                                   "{\"sub\":\"42\",\"exp\":1900000000,\"iss\":\"https://"
                                   "issuer.test\",\"aud\":[\"balance\",\"reservation\"]}"),
                            NULL),
                     SVC_OK);
    /* Not configured: any iss and aud pass. */
    assert_int_equal(
        verify(rsa_auth, testjwt_token("RS256", rsa, "42", NOW, 300, INT64_MIN, "x", "y"), NULL),
        SVC_OK);
}

static void
test_sub_claim(void **state)
{
    char long_sub[300], payload[400];

    (void)state;
    expect_refused(rsa_auth, claims(HDR_RS, rsa, "{\"exp\":1900000000}"), "sub");
    expect_refused(rsa_auth, claims(HDR_RS, rsa, "{\"sub\":42,\"exp\":1900000000}"), "sub");
    expect_refused(rsa_auth, claims(HDR_RS, rsa, "{\"sub\":\"\",\"exp\":1900000000}"), "sub");
    memset(long_sub, 'a', 200);
    long_sub[200] = '\0';
    snprintf(payload, sizeof(payload), "{\"sub\":\"%s\",\"exp\":1900000000}", long_sub);
    expect_refused(rsa_auth, claims(HDR_RS, rsa, payload), "sub");
    /* Two subs: which one would a verifier take? Neither. */
    expect_refused(rsa_auth,
                   claims(HDR_RS, rsa, "{\"sub\":\"42\",\"sub\":\"43\",\"exp\":1900000000}"),
                   "bad claims");
}

static void
test_garbage(void **state)
{
    static const char *const bad[] = {
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "...",
        "eyJhbGciOiJSUzI1NiJ9..",
        "!!!.e30.AAAA",
        "e30=.e30.AAAA", /* padding */
        "W10.e30.AAAA",  /* header [] */
        "bm90IGpzb24.e30.AAAA",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        expect_refused(rsa_auth, strdup(bad[i]), "invalid token");
    }
}

static void
write_file(const char *name, const char *text, char *path, size_t cap)
{
    FILE *f;

    path_in_dir(path, cap, name);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Expects svc_auth_create to fail with a message containing why. */
static void
expect_bad_opts(const svc_auth_opts_t *o, const char *why)
{
    svc_err_t err;

    svc_err_clear(&err);
    assert_null(svc_auth_create(o, &err));
    if (strstr(err.msg, why) == NULL) {
        fail_msg("\"%s\" does not say \"%s\"", err.msg, why);
    }
}

static void
test_bad_key_files(void **state)
{
    char path[256], garbage[256];
    EVP_PKEY *small = testjwt_rsa_key(1024), *p384 = testjwt_ec_key("P-384");
    svc_auth_opts_t o = {.leeway_s = 30};

    (void)state;
    o.jwt_key_file = "/nonexistent/key.pem";
    expect_bad_opts(&o, "AUTH_JWT_KEY_FILE: cannot read");
    write_file("garbage.pem", "not a key\n", garbage, sizeof(garbage));
    o.jwt_key_file = garbage;
    expect_bad_opts(&o, "no PEM public key");
    path_in_dir(path, sizeof(path), "small.pem");
    assert_int_equal(testjwt_write_public(small, path), 0);
    o.jwt_key_file = path;
    expect_bad_opts(&o, "1024 bits");
    path_in_dir(path, sizeof(path), "p384.pem");
    assert_int_equal(testjwt_write_public(p384, path), 0);
    expect_bad_opts(&o, "neither an RSA key");
    EVP_PKEY_free(small);
    EVP_PKEY_free(p384);
}

static void
test_peers_and_off(void **state)
{
    svc_auth_opts_t o = {0};
    svc_err_t err;
    svc_auth_t *a;

    (void)state;
    a = svc_auth_create(&o, &err);
    assert_non_null(a);
    assert_false(svc_auth_on(a));
    assert_null(svc_auth_alg(a));
    svc_auth_destroy(a);
    assert_false(svc_auth_on(NULL));
    o.trusted_peers = " reservation-svc , balance-svc";
    a = svc_auth_create(&o, &err);
    assert_non_null(a);
    assert_true(svc_auth_on(a));
    svc_auth_destroy(a);
    o.trusted_peers = "a,,b";
    expect_bad_opts(&o, "AUTH_TRUSTED_PEERS");
    o.trusted_peers = "a,";
    expect_bad_opts(&o, "AUTH_TRUSTED_PEERS");
    o.trusted_peers = "a b";
    expect_bad_opts(&o, "AUTH_TRUSTED_PEERS");
    o.trusted_peers = "reservation-svc,localhost";
    expect_bad_opts(&o, "localhost is in every certificate");
    /* A verifier without a key refuses every token. */
    {
        char sub[SVC_AUTH_SUB_MAX];
        char *t = testjwt_token("RS256", rsa, "42", NOW, 300, INT64_MIN, NULL, NULL);

        o.trusted_peers = "reservation-svc";
        a = svc_auth_create(&o, &err);
        assert_non_null(a);
        assert_int_equal(svc_auth_verify(a, t, NOW, sub, &err), -1);
        assert_int_equal(err.code, SVC_UNAUTHENTICATED);
        svc_auth_destroy(a);
        free(t);
    }
}

static void
test_caller_may(void **state)
{
    svc_auth_caller_t anyone = {.any_user = true, .user_id = -1};
    svc_auth_caller_t u42 = {.any_user = false, .user_id = 42};
    svc_auth_caller_t nobody = {.any_user = false, .user_id = -1};

    (void)state;
    assert_true(svc_auth_caller_may(&anyone, 7));
    assert_true(svc_auth_caller_may(&u42, 42));
    assert_false(svc_auth_caller_may(&u42, 43));
    assert_false(svc_auth_caller_may(&nobody, -1));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_rs256_and_es256),
        cmocka_unit_test(test_expired_and_leeway),
        cmocka_unit_test(test_not_yet_valid),
        cmocka_unit_test(test_wrong_signature),
        cmocka_unit_test(test_alg_none_refused),
        cmocka_unit_test(test_hs256_with_public_key_refused),
        cmocka_unit_test(test_algorithm_fixed_by_key),
        cmocka_unit_test(test_issuer_and_audience),
        cmocka_unit_test(test_sub_claim),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_bad_key_files),
        cmocka_unit_test(test_peers_and_off),
        cmocka_unit_test(test_caller_may),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
