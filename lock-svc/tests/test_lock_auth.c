/*
 * test_lock_auth.c: lock-svc with AUTH_TRUSTED_PEERS set keeps the names
 * the services use (seat:*, account:*, and the waiting rooms' room:*
 * semaphores) for trusted peers: a caller without a trusted client
 * certificate is refused PERMISSION_DENIED on every lock and semaphore call
 * naming one, and nothing is taken in Redis (read back through a second,
 * open lock-svc on the same Redis); other names stay open to anyone.
 * argv[1] is the lock-svc binary.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lock/v1/lock.pb-c.h"
#include "svc/client.h"
#include "svc/lock_client.h"
#include "testenv.h"

static const char *lock_svc_path;
static testenv_redis_t redis;
static testenv_proc_t guarded, open_inst; /* AUTH_TRUSTED_PEERS set; not set */
static svc_client_t *guarded_c, *open_c;

static int
start(testenv_proc_t *p, svc_client_t **c, const char *peers_env)
{
    char url[128], env_url[160];
    const char *env[] = {env_url, "LOG_LEVEL=warn", peers_env, NULL};
    svc_err_t err;

    testenv_redis_url(&redis, url, sizeof(url));
    snprintf(env_url, sizeof(env_url), "REDIS_URL=%s", url);
    if (testenv_proc_start(p, lock_svc_path, NULL, env) != 0) {
        return -1;
    }
    *c = svc_client_get(p->addr, &err);
    return *c != NULL ? 0 : -1;
}

static int
setup(void **state)
{
    (void)state;
    testenv_cleanup_on_exit();
    if (testenv_redis_start(&redis) != 0 ||
        start(&guarded, &guarded_c, "AUTH_TRUSTED_PEERS=reservation-svc,balance-svc") != 0 ||
        start(&open_inst, &open_c, NULL) != 0) {
        return -1;
    }
    return 0;
}

static int
teardown(void **state)
{
    int bad = 0;

    (void)state;
    bad |= testenv_proc_stop(&guarded) != 0;
    bad |= testenv_proc_stop(&open_inst) != 0;
    bad |= testenv_redis_stop(&redis) != 0;
    svc_client_release_all();
    return bad ? -1 : 0;
}

/* GetLock of key through c: held or not; -1 on a failed call (err). */
static int
held(svc_client_t *c, const char *key, svc_err_t *err)
{
    Lock__V1__GetLockRequest req = LOCK__V1__GET_LOCK_REQUEST__INIT;
    svc_arena_t *arena = svc_arena_create();
    ProtobufCMessage *resp;
    int rc;

    req.key = (char *)key;
    rc = svc_client_unary(c, "/lock.v1.LockService/GetLock", &req.base,
                          &lock__v1__get_lock_response__descriptor, arena, &resp, NULL, err);
    if (rc == 0) {
        rc = ((Lock__V1__GetLockResponse *)resp)->held ? 1 : 0;
    }
    svc_arena_destroy(arena);
    return rc;
}

static void
expect_denied(int rc, const svc_err_t *err, const char *name)
{
    assert_int_equal(rc, -1);
    assert_int_equal(err->code, SVC_PERMISSION_DENIED);
    assert_non_null(strstr(err->msg, name));
    assert_non_null(strstr(err->msg, "reserved for trusted peers"));
}

static void
test_reserved_locks_refused(void **state)
{
    static const char *const keys[] = {"seat:1", "seat:7:12", "account:5"};
    svc_lock_opts_t opts = {.owner = "stranger", .lease_ms = 300000};
    svc_lock_t lock;
    svc_err_t err;

    (void)state;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        expect_denied(svc_lock_acquire(guarded_c, keys[i], &opts, &lock, &err), &err, keys[i]);
        assert_int_equal(held(open_c, keys[i], &err), 0); /* nothing taken in Redis */
        expect_denied(held(guarded_c, keys[i], &err), &err, keys[i]);
    }
    /* A lock a service holds cannot be released or extended by a stranger with its token. */
    assert_int_equal(svc_lock_acquire(open_c, "seat:2", &opts, &lock, &err), 0);
    expect_denied(svc_lock_extend(guarded_c, &lock, 300000, NULL, &err), &err, "seat:2");
    expect_denied(svc_lock_release(guarded_c, &lock, NULL, &err), &err, "seat:2");
    assert_int_equal(held(open_c, "seat:2", &err), 1);
    assert_int_equal(svc_lock_release(open_c, &lock, NULL, &err), 0);
}

static void
test_room_semaphores_refused(void **state)
{
    svc_sem_opts_t opts = {.owner = "user:1", .limit = 1, .lease_ms = 60000};
    svc_sem_ticket_t t;
    svc_sem_info_t info;
    svc_err_t err;

    (void)state;
    expect_denied(svc_sem_enter(guarded_c, "room:3", &opts, &t, &err), &err, "room:3");
    assert_int_equal(svc_sem_get(open_c, "room:3", NULL, NULL, &info, &err), 0);
    assert_int_equal(info.holders, 0);
    expect_denied(svc_sem_get(guarded_c, "room:3", NULL, NULL, &info, &err), &err, "room:3");
    /* Other semaphores stay open. */
    assert_int_equal(svc_sem_enter(guarded_c, "queue:3", &opts, &t, &err), 0);
    assert_int_equal(t.position, 0);
}

static void
test_other_names_stay_open(void **state)
{
    svc_lock_opts_t opts = {.owner = "anyone", .lease_ms = 10000};
    svc_lock_t lock;
    svc_err_t err;

    (void)state;
    /* A prefix only counts at the start, with its colon. */
    static const char *const keys[] = {"job:1", "seats:1", "my-seat:1", "accounting"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        assert_int_equal(svc_lock_acquire(guarded_c, keys[i], &opts, &lock, &err), 0);
        assert_int_equal(held(guarded_c, keys[i], &err), 1);
        assert_int_equal(svc_lock_release(guarded_c, &lock, NULL, &err), 0);
    }
    /* The open instance (no AUTH_TRUSTED_PEERS) serves reserved names as before. */
    assert_int_equal(svc_lock_acquire(open_c, "seat:9", &opts, &lock, &err), 0);
    assert_int_equal(svc_lock_release(open_c, &lock, NULL, &err), 0);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reserved_locks_refused),
        cmocka_unit_test(test_room_semaphores_refused),
        cmocka_unit_test(test_other_names_stay_open),
    };

    if (argc != 2) {
        fprintf(stderr, "usage: %s LOCK_SVC_BINARY\n", argv[0]);
        return 2;
    }
    lock_svc_path = argv[1];
    return testenv_group_result(
        cmocka_run_group_tests(tests, setup, testenv_group_teardown(teardown)));
}
