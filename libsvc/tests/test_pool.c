/* test_pool.c: the worker pool runs every task, grows under blocking load, drains on destroy. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <time.h>

#include <cmocka.h>

#include "svc/pool.h"

static atomic_int ran;

static void
bump(void *arg)
{
    (void)arg;
    atomic_fetch_add(&ran, 1);
}

static void
sleepy(void *arg)
{
    struct timespec ts = {0, 200 * 1000 * 1000};

    (void)arg;
    nanosleep(&ts, NULL);
    atomic_fetch_add(&ran, 1);
}

static void
test_runs_every_task(void **state)
{
    svc_err_t err;
    svc_pool_t *pool = svc_pool_create(2, 4, &err);

    (void)state;
    assert_non_null(pool);
    atomic_store(&ran, 0);
    for (int i = 0; i < 10000; i++) {
        assert_int_equal(svc_pool_submit(pool, bump, NULL), 0);
    }
    svc_pool_destroy(pool); /* drains what is queued */
    assert_int_equal(atomic_load(&ran), 10000);
}

static void
test_grows_when_all_block(void **state)
{
    svc_err_t err;
    svc_pool_t *pool = svc_pool_create(1, 64, &err);
    struct timespec t0, t1;

    (void)state;
    assert_non_null(pool);
    atomic_store(&ran, 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 32; i++) {
        assert_int_equal(svc_pool_submit(pool, sleepy, NULL), 0);
    }
    assert_true(svc_pool_threads(pool) > 16);
    svc_pool_destroy(pool);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(atomic_load(&ran), 32);
    /* 32 sleeps of 200 ms one after another would take 6.4 s. */
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(secs < 3.0);
}

static void
test_bad_sizes(void **state)
{
    svc_err_t err;

    (void)state;
    assert_null(svc_pool_create(0, 4, &err));
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    assert_null(svc_pool_create(4, 2, &err));
    svc_pool_destroy(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runs_every_task),
        cmocka_unit_test(test_grows_when_all_block),
        cmocka_unit_test(test_bad_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
