/*
 * test_lock_sentinel.c: lock-svc with REDIS_URL=redis-sentinel://...: it finds
 * the master through the Sentinels (Debian's redis-sentinel, three of them,
 * quorum 2, from testenv_sentinel), and after the master is SIGKILLed and the
 * Sentinels promote the replica, it finds the new master by itself and fences
 * keep growing. argv[1] is the lock-svc binary.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <time.h>

#include <cmocka.h>

#include "svc/client.h"
#include "svc/lock_client.h"
#include "svc/timer.h"
#include "testenv.h"
#include "testenv_sentinel.h"

static const char *lock_svc_path;
static testenv_sentinel_t sentinels;
static testenv_proc_t lock_proc;

static void
test_follows_the_master_through_a_failover(void **state)
{
    svc_lock_opts_t opts = {.owner = "sentinel", .lease_ms = 500};
    svc_client_t *client;
    svc_lock_t before, after;
    svc_err_t err;
    int rc = -1, old_port, new_port;

    (void)state;
    client = svc_client_get(lock_proc.addr, &err);
    assert_non_null(client);
    assert_int_equal(svc_lock_acquire(client, "sentinel:key", &opts, &before, &err), 0);

    old_port = testenv_sentinel_master_port(&sentinels);
    assert_int_equal(old_port, sentinels.redis[0].port);
    assert_int_equal(testenv_redis_kill(testenv_sentinel_redis(&sentinels, old_port)), 0);
    int64_t t0 = svc_now_mono_ms();
    new_port = testenv_sentinel_wait_failover(&sentinels, old_port, 30000);
    assert_int_equal(new_port, sentinels.redis[1].port);
    fprintf(stderr, "failover: the Sentinels promoted the replica %lld ms after the kill\n",
            (long long)(svc_now_mono_ms() - t0));
    /* lock-svc asks the Sentinels again once its connection to the old master breaks. */
    for (int i = 0; i < 200 && rc != 0; i++) {
        rc = svc_lock_acquire(client, "sentinel:key", &opts, &after, &err);
        if (rc != 0) {
            svc_sleep_ms(100);
        }
    }
    fprintf(stderr, "failover: lock-svc served again %lld ms after the master was killed\n",
            (long long)(svc_now_mono_ms() - t0));
    assert_int_equal(rc, 0);
    assert_true(after.fence > before.fence);
}

static int
setup(void **state)
{
    char url[160], env_url[200];
    const char *env[] = {env_url, "LOG_LEVEL=warn", NULL};

    (void)state;
    testenv_cleanup_on_exit();
    if (testenv_sentinel_start(&sentinels) != 0 ||
        testenv_sentinel_url(&sentinels, url, sizeof(url)) != 0) {
        return -1;
    }
    snprintf(env_url, sizeof(env_url), "REDIS_URL=%s", url);
    return testenv_proc_start(&lock_proc, lock_svc_path, NULL, env);
}

static int
teardown(void **state)
{
    int status;

    (void)state;
    status = testenv_proc_stop(&lock_proc);
    testenv_sentinel_stop(&sentinels);
    svc_client_release_all();
    return status == 0 ? 0 : -1;
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_follows_the_master_through_a_failover),
    };

    if (argc < 2) {
        fprintf(stderr, "usage: %s path/to/lock-svc\n", argv[0]);
        return 2;
    }
    lock_svc_path = argv[1];
    return testenv_group_result(
        cmocka_run_group_tests(tests, setup, testenv_group_teardown(teardown)));
}
