/*
 * test_pool.c: the worker pool runs every task, grows under blocking load,
 * drains on destroy, forgets a job's log context after it, and refuses new
 * work at once when its queue is full.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <time.h>

#include <cmocka.h>

#include "svc/log.h"
#include "svc/pool.h"

static atomic_int ran;

static void
bump(void *arg)
{
    (void)arg;
    atomic_fetch_add(&ran, 1);
}

/* Blocks until `together` tasks run at once (or 10 s pass): only a pool that grew can do that. */
static pthread_mutex_t meet_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t meet_cv = PTHREAD_COND_INITIALIZER;
static int meeting, together, met_all;

static void
meet(void *arg)
{
    struct timespec deadline;

    (void)arg;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&meet_mu);
    if (++meeting == together) {
        met_all = 1;
        pthread_cond_broadcast(&meet_cv);
    }
    while (!met_all && pthread_cond_timedwait(&meet_cv, &meet_mu, &deadline) == 0) {
    }
    pthread_mutex_unlock(&meet_mu);
    atomic_fetch_add(&ran, 1);
}

/* A job that enters a call's log context and forgets to leave it; the next reads the context. */
static void
enter_and_forget(void *arg)
{
    svc_log_ctx_t saved;

    (void)arg;
    svc_log_ctx_enter(&saved, "/a.B/Forgot", "forgotten-id");
}

static atomic_int saw_context;

static void
read_context(void *arg)
{
    (void)arg;
    atomic_store(&saw_context, svc_log_ctx_request_id() != NULL);
}

/* A worker forgets a job's log context after it: the next job may serve another call. */
static void
test_worker_forgets_the_log_context(void **state)
{
    svc_err_t err;
    svc_pool_t *pool = svc_pool_create(1, 1, &err); /* one thread runs both, in order */

    (void)state;
    assert_non_null(pool);
    atomic_store(&saw_context, -1);
    assert_int_equal(svc_pool_submit(pool, enter_and_forget, NULL), 0);
    assert_int_equal(svc_pool_submit(pool, read_context, NULL), 0);
    svc_pool_destroy(pool);
    assert_int_equal(atomic_load(&saw_context), 0);
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

    (void)state;
    assert_non_null(pool);
    atomic_store(&ran, 0);
    together = 32;
    for (int i = 0; i < 32; i++) {
        assert_int_equal(svc_pool_submit(pool, meet, NULL), 0);
    }
    svc_pool_destroy(pool);
    assert_int_equal(atomic_load(&ran), 32);
    /* All 32 blocked at the same moment: the pool grew from 1 thread to at least 32. */
    assert_true(met_all);
}

/* Holds the pool's one thread until the test lets it go. */
static pthread_mutex_t hold_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hold_cv = PTHREAD_COND_INITIALIZER;
static int holding, released;

static void
hold(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&hold_mu);
    holding = 1;
    pthread_cond_broadcast(&hold_cv);
    while (!released) {
        pthread_cond_wait(&hold_cv, &hold_mu);
    }
    pthread_mutex_unlock(&hold_mu);
    atomic_fetch_add(&ran, 1);
}

/*
 * With max_queued 3 and its one thread busy, the pool takes three new tasks
 * and refuses the fourth at once (SVC_POOL_FULL, the caller answers
 * RESOURCE_EXHAUSTED), while work that continues something admitted
 * (svc_pool_submit) is still queued. Once the thread is free, everything
 * queued runs and new work is taken again.
 */
static void
test_full_queue_refuses_new_work(void **state)
{
    svc_err_t err;
    svc_pool_t *pool = svc_pool_create(1, 1, &err);

    (void)state;
    assert_non_null(pool);
    atomic_store(&ran, 0);
    svc_pool_set_max_queued(pool, 3);
    assert_int_equal(svc_pool_try_submit(pool, hold, NULL), 0);
    pthread_mutex_lock(&hold_mu);
    while (!holding) {
        pthread_cond_wait(&hold_cv, &hold_mu);
    }
    pthread_mutex_unlock(&hold_mu);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(svc_pool_try_submit(pool, bump, NULL), 0);
    }
    assert_int_equal(svc_pool_queued(pool), 3);
    for (int i = 0; i < 100; i++) { /* refused every time, never blocking */
        assert_int_equal(svc_pool_try_submit(pool, bump, NULL), SVC_POOL_FULL);
    }
    assert_int_equal(svc_pool_submit(pool, bump, NULL), 0); /* a continuation is never refused */
    assert_int_equal(svc_pool_queued(pool), 4);
    assert_int_equal(atomic_load(&ran), 0);

    pthread_mutex_lock(&hold_mu);
    released = 1;
    pthread_cond_broadcast(&hold_cv);
    pthread_mutex_unlock(&hold_mu);
    for (int i = 0; i < 1000 && svc_pool_queued(pool) > 0; i++) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(svc_pool_queued(pool), 0);
    assert_int_equal(svc_pool_try_submit(pool, bump, NULL), 0);
    svc_pool_set_max_queued(pool, 0); /* no bound */
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(svc_pool_try_submit(pool, bump, NULL), 0);
    }
    svc_pool_destroy(pool);
    assert_int_equal(atomic_load(&ran), 1 + 3 + 1 + 1 + 1000);
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
        cmocka_unit_test(test_worker_forgets_the_log_context),
        cmocka_unit_test(test_full_queue_refuses_new_work),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
