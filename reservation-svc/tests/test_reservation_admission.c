/*
 * test_reservation_admission.c: admission tokens on their own (no services):
 * a signed token admits its user to its schedule until it expires, and every
 * way of bending one is refused with FAILED_PRECONDITION saying why.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "reservation_admission.h"

static const char KEY[] = "0123456789abcdef0123456789abcdef-test-key";
static const char OTHER_KEY[] = "fedcba9876543210fedcba9876543210-other-key";
#define NOW 1800000000000LL

static rsv_admission_key_t
key_of(const char *k)
{
    rsv_admission_key_t key;
    svc_err_t err;

    assert_int_equal(rsv_admission_key_set(&key, k, strlen(k), &err), 0);
    return key;
}

/* Fails unless token is refused for (user, schedule) with a message holding why. */
static void
expect_refused(const rsv_admission_key_t *k, const char *token, int64_t user, int64_t schedule,
               const char *why)
{
    svc_err_t err;

    if (rsv_admission_verify(k, token, user, schedule, NOW, NULL, &err) == 0) {
        fail_msg("token \"%s\" admitted user %" PRId64 " to %" PRId64, token ? token : "(null)",
                 user, schedule);
    }
    assert_int_equal(err.code, SVC_FAILED_PRECONDITION);
    if (strstr(err.msg, why) == NULL || strstr(err.msg, "not admitted to schedule") == NULL) {
        fail_msg("token \"%s\": \"%s\", want \"%s\"", token ? token : "(null)", err.msg, why);
    }
}

static void
test_signed_token_admits(void **state)
{
    rsv_admission_key_t k = key_of(KEY), same = key_of(KEY);
    char token[RSV_ADMISSION_TOKEN_MAX];
    rsv_admission_t a;
    svc_err_t err;

    (void)state;
    assert_int_equal(rsv_admission_sign(&k, 42, 7, "ab12", NOW + 60000, token, sizeof(token)), 0);
    assert_true(strncmp(token, "v1.42.7.ab12.1800000060000.", 27) == 0);
    assert_int_equal(strlen(token), 27 + 64);
    /* Another instance with the same key checks it without asking anyone. */
    assert_int_equal(rsv_admission_verify(&same, token, 42, 7, NOW, &a, &err), 0);
    assert_string_equal(a.ticket, "ab12");
    assert_int_equal(a.expires_at_ms, NOW + 60000);
    /* Deterministic: the same facts sign to the same token. */
    char again[RSV_ADMISSION_TOKEN_MAX];
    assert_int_equal(rsv_admission_sign(&k, 42, 7, "ab12", NOW + 60000, again, sizeof(again)), 0);
    assert_string_equal(token, again);
    /* Too small a buffer is an error, not a cut token. */
    assert_int_equal(rsv_admission_sign(&k, 42, 7, "ab12", NOW + 60000, again, 60), -1);
}

static void
test_bent_tokens_refused(void **state)
{
    rsv_admission_key_t k = key_of(KEY), other = key_of(OTHER_KEY);
    char token[RSV_ADMISSION_TOKEN_MAX], bent[RSV_ADMISSION_TOKEN_MAX + 8],
        forged[RSV_ADMISSION_TOKEN_MAX];

    (void)state;
    assert_int_equal(rsv_admission_sign(&k, 42, 7, "ab12", NOW + 60000, token, sizeof(token)), 0);
    expect_refused(&k, NULL, 42, 7, "no admission token");
    expect_refused(&k, "", 42, 7, "no admission token");
    expect_refused(&k, token, 43, 7, "another user");
    expect_refused(&k, token, 42, 8, "another schedule");
    /* Signed by someone with another key. */
    expect_refused(&other, token, 42, 7, "not signed by this service");
    assert_int_equal(rsv_admission_sign(&other, 42, 7, "ab12", NOW + 60000, forged, sizeof(forged)),
                     0);
    expect_refused(&k, forged, 42, 7, "not signed by this service");
    /* A later expiry written over a good token's: the MAC no longer matches. */
    snprintf(bent, sizeof(bent), "v1.42.7.ab12.1900000060000.%s", token + 27);
    expect_refused(&k, bent, 42, 7, "not signed by this service");
    /* One MAC digit changed. */
    snprintf(bent, sizeof(bent), "%s", token);
    bent[strlen(bent) - 1] = bent[strlen(bent) - 1] == '0' ? '1' : '0';
    expect_refused(&k, bent, 42, 7, "not signed by this service");
    /* Spellings we never sign: leading zero, sign, upper-case hex, short MAC, extra field. */
    snprintf(bent, sizeof(bent), "v1.042.7.ab12.1800000060000.%s", token + 27);
    expect_refused(&k, bent, 42, 7, "malformed");
    snprintf(bent, sizeof(bent), "v1.+42.7.ab12.1800000060000.%s", token + 27);
    expect_refused(&k, bent, 42, 7, "malformed");
    snprintf(bent, sizeof(bent), "%s", token);
    bent[30] = 'A';
    expect_refused(&k, bent, 42, 7, "malformed");
    snprintf(bent, sizeof(bent), "%.*s", (int)strlen(token) - 1, token);
    expect_refused(&k, bent, 42, 7, "malformed");
    snprintf(bent, sizeof(bent), "%s.1", token);
    expect_refused(&k, bent, 42, 7, "malformed");
    expect_refused(&k, "v2.42.7.ab12.1800000060000.00", 42, 7, "malformed");
    snprintf(bent, sizeof(bent), "v1.42.7.AB12.1800000060000.%s", token + 27);
    expect_refused(&k, bent, 42, 7, "malformed");
    snprintf(bent, sizeof(bent), "v1.42.7..1800000060000.%s", token + 27);
    expect_refused(&k, bent, 42, 7, "malformed");
    /* A ticket we would not sign. */
    assert_int_equal(rsv_admission_sign(&k, 42, 7, "", NOW, forged, sizeof(forged)), -1);
    assert_int_equal(rsv_admission_sign(&k, 42, 7, "a.b", NOW, forged, sizeof(forged)), -1);
    expect_refused(&k, "v1.99999999999999999999.7.ab.1.00", 42, 7, "malformed");
    /* Expired: at its expiry and after. */
    assert_int_equal(rsv_admission_sign(&k, 42, 7, "ab12", NOW, token, sizeof(token)), 0);
    expect_refused(&k, token, 42, 7, "admission expired");
}

static void
test_keys(void **state)
{
    rsv_admission_key_t k, r1, r2;
    char path[] = "/tmp/admission-key-XXXXXX";
    char t1[RSV_ADMISSION_TOKEN_MAX];
    svc_err_t err;
    int fd;

    (void)state;
    assert_int_equal(rsv_admission_key_set(&k, "short", 5, &err), -1);
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "32"));
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, KEY, strlen(KEY)), (ssize_t)strlen(KEY));
    assert_int_equal(write(fd, "\n", 1), 1);
    close(fd);
    /* A file's key, trailing newline dropped, is the same key. */
    assert_int_equal(rsv_admission_key_load(&k, path, &err), 0);
    assert_int_equal(rsv_admission_sign(&k, 1, 2, "c3", NOW + 1, t1, sizeof(t1)), 0);
    rsv_admission_key_t direct = key_of(KEY);
    assert_int_equal(rsv_admission_verify(&direct, t1, 1, 2, NOW, NULL, &err), 0);
    unlink(path);
    assert_int_equal(rsv_admission_key_load(&k, path, &err), -1);
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    assert_null(strstr(err.msg, KEY));
    /* Random keys differ: one instance's tokens are not another's. */
    assert_int_equal(rsv_admission_key_random(&r1, &err), 0);
    assert_int_equal(rsv_admission_key_random(&r2, &err), 0);
    assert_int_equal(rsv_admission_sign(&r1, 1, 2, "c3", NOW + 1, t1, sizeof(t1)), 0);
    expect_refused(&r2, t1, 1, 2, "not signed by this service");
}

/* A room ticket says schedule, user, seq and lock-svc's ticket, and cannot be edited. */
static void
test_room_tickets(void **state)
{
    rsv_admission_key_t k = key_of(KEY), other = key_of(OTHER_KEY);
    char t[RSV_ROOM_TICKET_MAX], bent[RSV_ROOM_TICKET_MAX + 8],
        ticket[RSV_ADMISSION_TICKET_MAX + 1];
    int64_t schedule, user, seq;
    svc_err_t err;

    (void)state;
    assert_int_equal(rsv_room_ticket_sign(&k, 7, 42, 1001, "ab12", t, sizeof(t)), 0);
    assert_int_equal(rsv_room_ticket_parse(&k, t, &schedule, &user, &seq, ticket, &err), 0);
    assert_int_equal(schedule, 7);
    assert_int_equal(user, 42);
    assert_int_equal(seq, 1001);
    assert_string_equal(ticket, "ab12");
    /* Another user written in: the MAC no longer matches; another key; bad spellings. */
    snprintf(bent, sizeof(bent), "7.43%s", t + 4);
    assert_int_equal(rsv_room_ticket_parse(&k, bent, &schedule, &user, &seq, ticket, &err), -1);
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    assert_int_equal(rsv_room_ticket_parse(&other, t, &schedule, &user, &seq, ticket, &err), -1);
    assert_int_equal(
        rsv_room_ticket_parse(&k, "7.42.1001.ab12", &schedule, &user, &seq, ticket, &err), -1);
    assert_int_equal(rsv_room_ticket_parse(&k, NULL, &schedule, &user, &seq, ticket, &err), -1);
    assert_int_equal(rsv_room_ticket_sign(&k, 7, 42, 1001, "AB", t, sizeof(t)), -1);
    assert_int_equal(rsv_room_ticket_sign(&k, 7, 42, 1001, "ab12", t, 20), -1);
}

/* The admin token: from ADMIN_TOKEN_FILE or ADMIN_TOKEN, 32 bytes at least, compared whole. */
static void
test_admin_token(void **state)
{
    char buf[RSV_ADMIN_TOKEN_MAX + 1], path[] = "/tmp/rsv-admin-token-XXXXXX";
    const char *good = "0123456789abcdef0123456789abcdef";
    svc_err_t err;
    int fd;

    (void)state;
    assert_int_equal(rsv_admin_token_load(good, NULL, buf, &err), 0);
    assert_string_equal(buf, good);
    assert_int_equal(rsv_admin_token_load(NULL, NULL, buf, &err), -1);
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    assert_int_equal(rsv_admin_token_load("short-but-secret", "", buf, &err), -1);
    assert_non_null(strstr(err.msg, "32"));
    assert_null(strstr(err.msg, "short-but-secret")); /* never the token itself */
    /* The file wins, one trailing newline dropped; a missing file is an error. */
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "file-token-0123456789abcdef-0123456789\n", 39), 39);
    close(fd);
    assert_int_equal(rsv_admin_token_load(good, path, buf, &err), 0);
    assert_string_equal(buf, "file-token-0123456789abcdef-0123456789");
    unlink(path);
    assert_int_equal(rsv_admin_token_load(good, path, buf, &err), -1);
    /* Equal only when whole: shorter, longer, or one byte off is not. */
    assert_true(rsv_admin_token_equal(good, strlen(good), good));
    assert_false(rsv_admin_token_equal(good, strlen(good) - 1, good));
    assert_false(rsv_admin_token_equal("0123456789abcdef0123456789abcdef0", 33, good));
    assert_false(rsv_admin_token_equal("0123456789abcdef0123456789abcdeF", 32, good));
    assert_false(rsv_admin_token_equal("", 0, good));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signed_token_admits),
        cmocka_unit_test(test_bent_tokens_refused),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_room_tickets),
        cmocka_unit_test(test_admin_token),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
