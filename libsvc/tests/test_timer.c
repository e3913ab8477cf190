/* test_timer.c: timers fire in deadline order, cancelled ones never fire. */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <time.h>

#include <cmocka.h>

#include "svc/timer.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int order[16];
static int n_fired;

static void
record(void *arg)
{
    pthread_mutex_lock(&mu);
    order[n_fired++] = (int)(intptr_t)arg;
    pthread_mutex_unlock(&mu);
}

static void
test_order_and_cancel(void **state)
{
    svc_err_t err;
    /* One worker, so callbacks run in the order the timer thread hands them over. */
    svc_pool_t *pool = svc_pool_create(1, 1, &err);
    svc_timers_t *timers = svc_timers_create(pool, &err);
    svc_timer_t t[5] = {0};
    int64_t delays[5] = {120, 30, 90, 60, 10};

    (void)state;
    assert_non_null(timers);
    n_fired = 0;
    for (int i = 0; i < 5; i++) {
        t[i].heap_index = -1;
        svc_timer_start(timers, &t[i], delays[i], record, (void *)(intptr_t)i);
    }
    assert_true(svc_timer_cancel(timers, &t[2]));  /* the 90 ms one */
    assert_false(svc_timer_cancel(timers, &t[2])); /* not twice */
    svc_sleep_ms(400);
    pthread_mutex_lock(&mu);
    assert_int_equal(n_fired, 4);
    assert_int_equal(order[0], 4);
    assert_int_equal(order[1], 1);
    assert_int_equal(order[2], 3);
    assert_int_equal(order[3], 0);
    pthread_mutex_unlock(&mu);
    assert_false(svc_timer_cancel(timers, &t[0])); /* already fired */
    svc_timers_destroy(timers);
    svc_pool_destroy(pool);
}

static void
test_not_early(void **state)
{
    svc_err_t err;
    svc_pool_t *pool = svc_pool_create(1, 2, &err);
    svc_timers_t *timers = svc_timers_create(pool, &err);
    svc_timer_t t = {0};
    int64_t start = svc_now_mono_ms();

    (void)state;
    n_fired = 0;
    t.heap_index = -1;
    svc_timer_start(timers, &t, 100, record, (void *)(intptr_t)7);
    svc_sleep_ms(50);
    pthread_mutex_lock(&mu);
    assert_int_equal(n_fired, 0);
    pthread_mutex_unlock(&mu);
    for (;;) {
        pthread_mutex_lock(&mu);
        int fired = n_fired;
        pthread_mutex_unlock(&mu);
        if (fired == 1) {
            break;
        }
        svc_sleep_ms(2);
    }
    assert_true(svc_now_mono_ms() - start >= 100);
    svc_timers_destroy(timers);
    svc_pool_destroy(pool);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_cancel),
        cmocka_unit_test(test_not_early),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
