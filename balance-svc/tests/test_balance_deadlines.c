/*
 * test_balance_deadlines.c: balance-svc and its callers' deadlines, over real
 * gRPC with a real PostgreSQL, Redis and lock-svc. The test takes an
 * account's lock token itself to make balance-svc wait for it, then checks
 * that a lock that came late does not cost callers who still had time, that
 * lock-svc sees the callers' deadline and x-request-id, and that a request
 * whose caller gave up is never applied. argv[1] is balance-svc, argv[2] lock-svc.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "balance/v1/balance.pb-c.h"
#include "lock/v1/lock.pb-c.h"
#include "svc/client.h"
#include "svc/lock_client.h"
#include "svc/timer.h"
#include "testenv.h"

#define LOCK_WAIT_MS "8000" /* longer than balance-svc's 5 s transaction budget */

static const char *balance_path, *lock_path;
static testenv_pg_t pg;
static testenv_redis_t redis;
static testenv_proc_t lock_proc, bal_proc;
static svc_client_t *lock_client, *bal_client;
static atomic_llong next_user = 5000;

typedef struct {
    int kind; /* 1 top-up, 2 spend */
    int64_t user, amount, timeout_ms;
    char key[64];
    const char *request_id;
    int rc;
    svc_err_t err;
    int64_t balance;
} op_t;

static void
run_op(op_t *op)
{
    svc_arena_t *arena = svc_arena_create();
    svc_call_opts_t opts = {.timeout_ms = op->timeout_ms, .request_id = op->request_id};
    ProtobufCMessage *out;

    if (op->kind == 1) {
        Balance__V1__TopUpRequest req = BALANCE__V1__TOP_UP_REQUEST__INIT;
        req.user_id = op->user;
        req.amount = op->amount;
        req.idempotency_key = op->key;
        op->rc = svc_client_unary(bal_client, "/balance.v1.BalanceService/TopUp", &req.base,
                                  &balance__v1__top_up_response__descriptor, arena, &out, &opts,
                                  &op->err);
    } else {
        Balance__V1__SpendRequest req = BALANCE__V1__SPEND_REQUEST__INIT;
        req.user_id = op->user;
        req.amount = op->amount;
        req.idempotency_key = op->key;
        op->rc = svc_client_unary(bal_client, "/balance.v1.BalanceService/Spend", &req.base,
                                  &balance__v1__spend_response__descriptor, arena, &out, &opts,
                                  &op->err);
    }
    if (op->rc == 0) {
        op->balance = ((Balance__V1__TopUpResponse *)out)->balance;
    }
    svc_arena_destroy(arena);
}

static void *
op_thread(void *arg)
{
    run_op(arg);
    return NULL;
}

static op_t
make_op(int kind, int64_t user, int64_t amount, const char *key, int64_t timeout_ms)
{
    op_t op = {.kind = kind, .user = user, .amount = amount, .timeout_ms = timeout_ms};

    snprintf(op.key, sizeof(op.key), "%s", key);
    return op;
}

static int64_t
query_user(const char *sql_up_to_user_id, int64_t user)
{
    char sql[512];

    snprintf(sql, sizeof(sql), "%s %" PRId64, sql_up_to_user_id, user);
    return testenv_pg_query_int(&pg, sql);
}

/* A new account holding amount. */
static int64_t
funded_user(int64_t amount)
{
    int64_t user = atomic_fetch_add(&next_user, 1);
    op_t op = make_op(1, user, amount, "fund", 10000);

    run_op(&op);
    assert_int_equal(op.rc, 0);
    return user;
}

/* Takes account:<user>'s lock token as balance-svc would, so balance-svc must wait. */
static void
hold_account(int64_t user, svc_lock_t *lock)
{
    svc_lock_opts_t lopts = {.owner = "test", .lease_ms = 30000, .wait_ms = 0};
    char key[48];
    svc_err_t err;

    snprintf(key, sizeof(key), "account:%" PRId64, user);
    if (svc_lock_acquire(lock_client, key, &lopts, lock, &err) != 0) {
        fail_msg("cannot take %s: %s", key, err.msg);
    }
}

static void
release_account(const svc_lock_t *lock)
{
    svc_err_t err;

    assert_int_equal(svc_lock_release(lock_client, lock, NULL, &err), 0);
}

/* Parked waiters on a lock key, from lock-svc's GetLock. */
static int64_t
lock_waiters(int64_t user)
{
    Lock__V1__GetLockRequest req = LOCK__V1__GET_LOCK_REQUEST__INIT;
    svc_arena_t *arena = svc_arena_create();
    ProtobufCMessage *out;
    char key[48];
    svc_err_t err;
    int64_t n;

    snprintf(key, sizeof(key), "account:%" PRId64, user);
    req.key = key;
    if (svc_client_unary(lock_client, "/lock.v1.LockService/GetLock", &req.base,
                         &lock__v1__get_lock_response__descriptor, arena, &out, NULL, &err) != 0) {
        fail_msg("GetLock failed: %s", err.msg);
    }
    n = ((Lock__V1__GetLockResponse *)out)->waiters;
    svc_arena_destroy(arena);
    return n;
}

static void
wait_for_waiters(int64_t user, int64_t n)
{
    for (int i = 0; i < 200 && lock_waiters(user) != n; i++) {
        svc_sleep_ms(25);
    }
    assert_int_equal(lock_waiters(user), n);
}

/* Whether the file at path holds needle. */
static bool
file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    bool found = false;

    while (f != NULL && !found && fgets(line, sizeof(line), f) != NULL) {
        found = strstr(line, needle) != NULL;
    }
    if (f != NULL) {
        fclose(f);
    }
    return found;
}

/*
 * Defect 4: the 5 s transaction budget was counted from before the lock
 * wait, so a lock that came after 5.5 s failed a top-up whose caller had
 * 15 s with DEADLINE_EXCEEDED. The budget starts once the lock is held.
 */
static void
test_late_lock_leaves_the_full_budget(void **state)
{
    int64_t user = funded_user(100);
    op_t op = make_op(1, user, 5, "late-lock", 15000);
    svc_lock_t lock;
    pthread_t t;

    (void)state;
    hold_account(user, &lock);
    assert_int_equal(pthread_create(&t, NULL, op_thread, &op), 0);
    wait_for_waiters(user, 1);
    svc_sleep_ms(5500);
    release_account(&lock);
    pthread_join(t, NULL);
    if (op.rc != 0) {
        fail_msg("top-up after a late lock: %s %s", svc_status_name(op.err.code), op.err.msg);
    }
    assert_int_equal(op.balance, 105);
    assert_int_equal(query_user("SELECT balance FROM accounts WHERE user_id =", user), 105);
}

/*
 * Defect 4: the lock call carries the caller's deadline and x-request-id.
 * A caller with 1 s to spare gives up; lock-svc must drop its waiter then,
 * not after balance-svc's own 8 s wait, and its log names the request id.
 */
static void
test_lock_call_carries_deadline_and_request_id(void **state)
{
    int64_t user = funded_user(100);
    op_t op = make_op(1, user, 5, "short-deadline", 1000);
    char request_id[64];
    svc_lock_t lock;
    pthread_t t;

    (void)state;
    snprintf(request_id, sizeof(request_id), "deadline-test-%" PRId64, user);
    op.request_id = request_id;
    hold_account(user, &lock);
    assert_int_equal(pthread_create(&t, NULL, op_thread, &op), 0);
    wait_for_waiters(user, 1);
    pthread_join(t, NULL);
    assert_int_equal(op.rc, -1);
    assert_int_equal(op.err.code, SVC_DEADLINE_EXCEEDED);
    svc_sleep_ms(500); /* 1.5 s after the call: well before the 8 s lock wait */
    assert_int_equal(lock_waiters(user), 0);
    release_account(&lock);
    svc_sleep_ms(200);
    assert_true(file_contains(lock_proc.log_path, request_id));
    assert_int_equal(
        query_user("SELECT count(*) FROM ledger WHERE idempotency_key = 'short-deadline' AND "
                   "user_id =",
                   user),
        0);
}

/*
 * Defect 5: a spend whose caller was told DEADLINE_EXCEEDED while it waited
 * in its account's queue must never be applied, even when it shares a batch
 * with a request that still has time (the batch used the latest deadline).
 */
static void
test_expired_request_in_a_batch_is_not_applied(void **state)
{
    int64_t user = funded_user(1000);
    op_t first = make_op(1, user, 10, "first", 15000);
    op_t late = make_op(2, user, 300, "gave-up", 300);
    op_t after = make_op(2, user, 1, "still-waiting", 15000);
    svc_lock_t lock;
    pthread_t t[3];

    (void)state;
    hold_account(user, &lock);
    assert_int_equal(pthread_create(&t[0], NULL, op_thread, &first), 0);
    wait_for_waiters(user, 1); /* first's batch waits for the lock; the rest queue behind */
    assert_int_equal(pthread_create(&t[1], NULL, op_thread, &late), 0);
    pthread_join(t[1], NULL);
    assert_int_equal(late.rc, -1);
    assert_int_equal(late.err.code, SVC_DEADLINE_EXCEEDED);
    assert_int_equal(pthread_create(&t[2], NULL, op_thread, &after), 0);
    svc_sleep_ms(300);
    release_account(&lock);
    pthread_join(t[0], NULL);
    pthread_join(t[2], NULL);
    assert_int_equal(first.rc, 0);
    assert_int_equal(after.rc, 0);
    assert_int_equal(
        query_user("SELECT count(*) FROM ledger WHERE idempotency_key = 'gave-up' AND user_id =",
                   user),
        0);
    assert_int_equal(after.balance, 1009);
    assert_int_equal(query_user("SELECT balance FROM accounts WHERE user_id =", user), 1009);
}

/* ---------- setup ---------- */

static int
setup(void **state)
{
    char url[128], redis_env[160], lock_env[96], db_env[600];
    const char *lock_envs[] = {redis_env, "LOG_LEVEL=info", NULL};
    const char *envs[] = {db_env, lock_env, "LOG_LEVEL=warn", "LOCK_WAIT_MS=" LOCK_WAIT_MS, NULL};
    svc_err_t err;

    (void)state;
    testenv_cleanup_on_exit();
    if (testenv_pg_start(&pg, "balance") != 0 || testenv_redis_start(&redis) != 0) {
        return -1;
    }
    testenv_redis_url(&redis, url, sizeof(url));
    snprintf(redis_env, sizeof(redis_env), "REDIS_URL=%s", url);
    if (testenv_proc_start(&lock_proc, lock_path, NULL, lock_envs) != 0) {
        return -1;
    }
    snprintf(lock_env, sizeof(lock_env), "LOCK_SVC_ADDR=%s", lock_proc.addr);
    snprintf(db_env, sizeof(db_env), "DATABASE_URL=%s", pg.conninfo);
    if (testenv_proc_start(&bal_proc, balance_path, NULL, envs) != 0) {
        return -1;
    }
    lock_client = svc_client_get(lock_proc.addr, &err);
    bal_client = svc_client_get(bal_proc.addr, &err);
    return lock_client != NULL && bal_client != NULL ? 0 : -1;
}

static int
teardown(void **state)
{
    int s0, s1;

    (void)state;
    s0 = testenv_proc_stop(&bal_proc);
    s1 = testenv_proc_stop(&lock_proc);
    testenv_redis_stop(&redis);
    testenv_pg_stop(&pg);
    svc_client_release_all();
    return s0 == 0 && s1 == 0 ? 0 : -1;
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_late_lock_leaves_the_full_budget),
        cmocka_unit_test(test_lock_call_carries_deadline_and_request_id),
        cmocka_unit_test(test_expired_request_in_a_batch_is_not_applied),
    };

    if (argc < 3) {
        fprintf(stderr, "usage: %s path/to/balance-svc path/to/lock-svc\n", argv[0]);
        return 2;
    }
    balance_path = argv[1];
    lock_path = argv[2];
    return testenv_group_result(
        cmocka_run_group_tests(tests, setup, testenv_group_teardown(teardown)));
}
