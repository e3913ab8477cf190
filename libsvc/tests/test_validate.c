/*
 * test_validate.c: the key, range and text checks, their edges and messages.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>

#include <cmocka.h>

#include "svc/err.h"
#include "svc/validate.h"

static char *
repeat(char *buf, char c, size_t n)
{
    memset(buf, c, n);
    buf[n] = '\0';
    return buf;
}

/* Expects the key to be rejected with the standard message. */
static void
assert_bad_key(const char *key)
{
    svc_err_t err;

    svc_err_clear(&err);
    assert_false(svc_validate_key("key", key, &err));
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    assert_string_equal(err.msg, "key must be 1 to 200 characters of A-Z a-z 0-9 : _ . / -");
}

static void
test_key_ok(void **state)
{
    char buf[SVC_KEY_MAX + 2];
    svc_err_t err;

    (void)state;
    svc_err_clear(&err);
    assert_true(svc_validate_key("key", "a", &err));
    assert_true(svc_validate_key("key", "orders:eu-west/1_a.b", &err));
    assert_true(svc_validate_key("key", "AZaz09:_./-", &err));
    assert_true(svc_validate_key("key", repeat(buf, 'k', SVC_KEY_MAX), &err));
    assert_int_equal(err.code, SVC_OK);
    assert_string_equal(err.msg, "");
}

static void
test_key_bad(void **state)
{
    char buf[SVC_KEY_MAX + 2];

    (void)state;
    assert_bad_key(NULL);
    assert_bad_key("");
    assert_bad_key(repeat(buf, 'k', SVC_KEY_MAX + 1));
    assert_bad_key("a b");
    assert_bad_key("a*");
    assert_bad_key("lock\t1");
    assert_bad_key("lock\n");
    assert_bad_key("caf\xc3\xa9"); /* UTF-8 is not allowed in keys */
    assert_bad_key("a\"b");
    assert_bad_key("a\\b");
    assert_bad_key("a%b");
    assert_bad_key("\x7f");
}

static void
test_key_message_names_field(void **state)
{
    svc_err_t err;

    (void)state;
    assert_false(svc_validate_key("resource", "", &err));
    assert_string_equal(err.msg, "resource must be 1 to 200 characters of A-Z a-z 0-9 : _ . / -");
    /* NULL err is allowed */
    assert_false(svc_validate_key("key", "", NULL));
}

static void
test_range(void **state)
{
    svc_err_t err;

    (void)state;
    svc_err_clear(&err);
    assert_true(svc_validate_range("lease_ms", 0, 0, 300000, &err));
    assert_true(svc_validate_range("lease_ms", 300000, 0, 300000, &err));
    assert_true(svc_validate_range("lease_ms", 1, 0, 300000, &err));
    assert_int_equal(err.code, SVC_OK);

    assert_false(svc_validate_range("lease_ms", -1, 0, 300000, &err));
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    assert_string_equal(err.msg, "lease_ms must be between 0 and 300000");

    svc_err_clear(&err);
    assert_false(svc_validate_range("lease_ms", 300001, 0, 300000, &err));
    assert_string_equal(err.msg, "lease_ms must be between 0 and 300000");

    assert_true(svc_validate_range("amount", INT64_MIN, INT64_MIN, INT64_MAX, &err));
    assert_true(svc_validate_range("amount", INT64_MAX, INT64_MIN, INT64_MAX, &err));
    assert_false(svc_validate_range("amount", INT64_MIN, -5, 5, &err));
    assert_string_equal(err.msg, "amount must be between -5 and 5");
}

static void
test_text_lengths(void **state)
{
    char buf[200];
    svc_err_t err;

    (void)state;
    svc_err_clear(&err);
    assert_true(svc_validate_text("idempotency_key", "x", 1, 128, &err));
    assert_true(svc_validate_text("idempotency_key", repeat(buf, 'x', 128), 1, 128, &err));
    assert_int_equal(err.code, SVC_OK);

    assert_false(svc_validate_text("idempotency_key", repeat(buf, 'x', 129), 1, 128, &err));
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    assert_string_equal(err.msg, "idempotency_key must be 1 to 128 bytes");

    svc_err_clear(&err);
    assert_false(svc_validate_text("idempotency_key", "", 1, 128, &err));
    assert_string_equal(err.msg, "idempotency_key must be 1 to 128 bytes");

    svc_err_clear(&err);
    assert_false(svc_validate_text("idempotency_key", NULL, 1, 128, &err));
    assert_string_equal(err.msg, "idempotency_key must be 1 to 128 bytes");

    /* optional text: NULL and "" are fine */
    assert_true(svc_validate_text("note", NULL, 0, 10, &err));
    assert_true(svc_validate_text("note", "", 0, 10, &err));
    assert_false(svc_validate_text("note", "01234567890", 0, 10, &err));
    assert_string_equal(err.msg, "note must be at most 10 bytes");

    /* length is in bytes, not characters: 5 x U+00E9 is 10 bytes */
    assert_true(svc_validate_text("name", "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 1, 10, &err));
    assert_false(
        svc_validate_text("name", "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9x", 1, 10, &err));
}

static void
test_text_utf8(void **state)
{
    static const char *const good[] = {
        "plain ascii",      "caf\xc3\xa9", /* U+00E9 */
        "\xe2\x9c\x93",                    /* U+2713 */
        "\xf0\x9f\x98\x80",                /* U+1F600 */
        "\xef\xbf\xbf",                    /* U+FFFF */
        "\xf4\x8f\xbf\xbf",                /* U+10FFFF, the last code point */
        "\xed\x9f\xbf",                    /* U+D7FF, just below the surrogates */
        "\xee\x80\x80",                    /* U+E000, just above them */
        "\xc2\x80",                        /* U+0080, smallest 2-byte */
        "\xe0\xa0\x80",                    /* U+0800, smallest 3-byte */
        "\xf0\x90\x80\x80",                /* U+10000, smallest 4-byte */
    };
    static const char *const bad[] = {
        "\x80",             /* lone continuation byte */
        "abc\xbf",          /* continuation byte after ASCII */
        "\xc3",             /* truncated 2-byte */
        "\xe2\x9c",         /* truncated 3-byte */
        "\xf0\x9f\x98",     /* truncated 4-byte */
        "\xc3x",            /* lead without continuation */
        "\xc0\xaf",         /* overlong '/' */
        "\xc1\xbf",         /* overlong */
        "\xe0\x80\xaf",     /* overlong 3-byte */
        "\xe0\x9f\xbf",     /* overlong U+07FF */
        "\xf0\x80\x80\xaf", /* overlong 4-byte */
        "\xf0\x8f\xbf\xbf", /* overlong U+FFFF */
        "\xed\xa0\x80",     /* U+D800 surrogate */
        "\xed\xbf\xbf",     /* U+DFFF surrogate */
        "\xf4\x90\x80\x80", /* U+110000 */
        "\xf5\x80\x80\x80", /* lead byte above F4 */
        "\xff",
        "\xfe",
    };
    svc_err_t err;

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        svc_err_clear(&err);
        if (!svc_validate_text("note", good[i], 0, 64, &err))
            fail_msg("good[%zu] rejected: %s", i, err.msg);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        svc_err_clear(&err);
        if (svc_validate_text("note", bad[i], 0, 64, &err))
            fail_msg("bad[%zu] accepted", i);
        assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
        assert_string_equal(err.msg, "note must be valid UTF-8");
    }
}

static void
test_text_length_checked_before_reading_far(void **state)
{
    /* Not NUL-terminated within max_len + 1: must not be read past that. */
    char buf[4] = {'a', 'b', 'c', 'd'};
    svc_err_t err;

    (void)state;
    assert_false(svc_validate_text("note", buf, 0, 2, &err));
    assert_string_equal(err.msg, "note must be at most 2 bytes");
    assert_false(svc_validate_text("tag", "abc", 4, 4, &err));
    assert_string_equal(err.msg, "tag must be 4 bytes");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_ok),
        cmocka_unit_test(test_key_bad),
        cmocka_unit_test(test_key_message_names_field),
        cmocka_unit_test(test_range),
        cmocka_unit_test(test_text_lengths),
        cmocka_unit_test(test_text_utf8),
        cmocka_unit_test(test_text_length_checked_before_reading_far),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
