/* test_lock_url.c: REDIS_URL parsing (no Redis needed: connections are lazy). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "lock_store.h"

static void
test_accepted(void **state)
{
    static const char *good[] = {
        "redis://127.0.0.1:6379",
        "redis://127.0.0.1:6379/0",
        "redis://localhost:7000/3",
        "redis://:secret@127.0.0.1:6379/1",
        "redis-sentinel://127.0.0.1:26379/mymaster",
        "redis-sentinel://a:26379,b:26380,c:26381/mymaster",
    };
    svc_err_t err;

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        lock_store_t *s = lock_store_create(good[i], 2, &err);
        assert_non_null(s);
        lock_store_destroy(s);
    }
}

static void
test_rejected(void **state)
{
    static const char *bad[] = {
        "",
        "127.0.0.1:6379",
        "http://127.0.0.1:6379",
        "redis://127.0.0.1",
        "redis://127.0.0.1:notaport",
        "redis://127.0.0.1:70000",
        "redis://127.0.0.1:6379/x",
        "redis-sentinel://127.0.0.1:26379",
        "redis-sentinel://127.0.0.1:26379/",
        "redis-sentinel:///mymaster",
    };
    svc_err_t err;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_null(lock_store_create(bad[i], 2, &err));
        assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
        assert_non_null(strstr(err.msg, "REDIS_URL"));
    }
    assert_null(lock_store_create(NULL, 2, &err));
}

static void
test_tokens_are_random_hex(void **state)
{
    char a[LOCK_TOKEN_LEN + 1], b[LOCK_TOKEN_LEN + 1];

    (void)state;
    lock_store_new_token(a);
    lock_store_new_token(b);
    assert_int_equal(strlen(a), LOCK_TOKEN_LEN);
    assert_int_equal(strspn(a, "0123456789abcdef"), LOCK_TOKEN_LEN);
    assert_string_not_equal(a, b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted),
        cmocka_unit_test(test_rejected),
        cmocka_unit_test(test_tokens_are_random_hex),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
