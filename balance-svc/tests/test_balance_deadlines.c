/*
 * test_balance_deadlines.c: balance-svc and its callers' deadlines, over real
 * gRPC with a real PostgreSQL, Redis and lock-svc. The test takes an
 * account's lock token itself to make balance-svc wait for it, then checks
 * that a lock that came late does not cost callers who still had time, that
 * lock-svc sees the callers' deadline and x-request-id, and that a request
 * whose caller gave up is never applied; and that accounts waiting for their
 * tokens hold no thread each. argv[1] is balance-svc, argv[2] lock-svc.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "balance_stack.h"
#include "balance/v1/balance.pb-c.h"
#include "lock/v1/lock.pb-c.h"
#include "svc/lock_client.h"
#include "svc/timer.h"

#define LOCK_WAIT_MS "8000" /* longer than balance-svc's 5 s transaction budget */

static balance_stack_t stack;

#define C0 (stack.client[0])

/*
 * Takes account:<user>'s lock token as balance-svc would, so balance-svc must
 * wait. Waiting for it a little: balance-svc gives its own token back just
 * after it answered, without waiting for lock-svc.
 */
static void
hold_account(int64_t user, svc_lock_t *lock)
{
    svc_lock_opts_t lopts = {.owner = "test", .lease_ms = 30000, .wait_ms = 2000};
    char key[48];
    svc_err_t err;

    snprintf(key, sizeof(key), "account:%" PRId64, user);
    if (svc_lock_acquire(stack.lock_client, key, &lopts, lock, &err) != 0) {
        fail_msg("cannot take %s: %s", key, err.msg);
    }
}

static void
release_account(const svc_lock_t *lock)
{
    svc_err_t err;

    assert_int_equal(svc_lock_release(stack.lock_client, lock, NULL, &err), 0);
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
    if (svc_client_unary(stack.lock_client, "/lock.v1.LockService/GetLock", &req.base,
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

/*
 * Defect 4: the 5 s transaction budget was counted from before the lock
 * wait, so a lock that came after 5.5 s failed a top-up whose caller had
 * 15 s with DEADLINE_EXCEEDED. The budget starts once the lock is held.
 */
static void
test_late_lock_leaves_the_full_budget(void **state)
{
    int64_t user = balance_stack_funded_user(&stack, 100);
    balance_stack_op_t op =
        balance_stack_op(C0, BALANCE_LEDGER_TOP_UP, user, 5, "late-lock", 15000);
    svc_lock_t lock;
    pthread_t t;

    (void)state;
    hold_account(user, &lock);
    assert_int_equal(pthread_create(&t, NULL, balance_stack_op_thread, &op), 0);
    wait_for_waiters(user, 1);
    svc_sleep_ms(5500);
    release_account(&lock);
    pthread_join(t, NULL);
    if (op.rc != 0) {
        fail_msg("top-up after a late lock: %s %s", svc_status_name(op.err.code), op.err.msg);
    }
    assert_int_equal(op.res.balance, 105);
    assert_int_equal(balance_stack_stored_balance(&stack, user), 105);
}

/*
 * Defect 4: the lock call carries the caller's deadline and x-request-id.
 * A caller with 1 s to spare gives up; lock-svc must drop its waiter then,
 * not after balance-svc's own 8 s wait, and its log names the request id.
 */
static void
test_lock_call_carries_deadline_and_request_id(void **state)
{
    int64_t user = balance_stack_funded_user(&stack, 100);
    balance_stack_op_t op =
        balance_stack_op(C0, BALANCE_LEDGER_TOP_UP, user, 5, "short-deadline", 1000);
    char request_id[64];
    svc_lock_t lock;
    pthread_t t;

    (void)state;
    snprintf(request_id, sizeof(request_id), "deadline-test-%" PRId64, user);
    op.opts.request_id = request_id;
    hold_account(user, &lock);
    assert_int_equal(pthread_create(&t, NULL, balance_stack_op_thread, &op), 0);
    wait_for_waiters(user, 1);
    pthread_join(t, NULL);
    assert_int_equal(op.rc, -1);
    assert_int_equal(op.err.code, SVC_DEADLINE_EXCEEDED);
    svc_sleep_ms(500); /* 1.5 s after the call: well before the 8 s lock wait */
    assert_int_equal(lock_waiters(user), 0);
    release_account(&lock);
    svc_sleep_ms(200);
    assert_true(balance_stack_log_contains(&stack.lock, request_id));
    assert_int_equal(balance_stack_query(
                         &stack,
                         "SELECT count(*) FROM ledger WHERE idempotency_key = 'short-deadline' AND "
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
    int64_t user = balance_stack_funded_user(&stack, 1000);
    balance_stack_op_t first =
        balance_stack_op(C0, BALANCE_LEDGER_TOP_UP, user, 10, "first", 15000);
    balance_stack_op_t late = balance_stack_op(C0, BALANCE_LEDGER_SPEND, user, 300, "gave-up", 300);
    balance_stack_op_t after =
        balance_stack_op(C0, BALANCE_LEDGER_SPEND, user, 1, "still-waiting", 15000);
    svc_lock_t lock;
    pthread_t t[3];

    (void)state;
    hold_account(user, &lock);
    assert_int_equal(pthread_create(&t[0], NULL, balance_stack_op_thread, &first), 0);
    wait_for_waiters(user, 1); /* first's batch waits for the lock; the rest queue behind */
    assert_int_equal(pthread_create(&t[1], NULL, balance_stack_op_thread, &late), 0);
    pthread_join(t[1], NULL);
    assert_int_equal(late.rc, -1);
    assert_int_equal(late.err.code, SVC_DEADLINE_EXCEEDED);
    assert_int_equal(pthread_create(&t[2], NULL, balance_stack_op_thread, &after), 0);
    svc_sleep_ms(300);
    release_account(&lock);
    pthread_join(t[0], NULL);
    pthread_join(t[2], NULL);
    assert_int_equal(first.rc, 0);
    assert_int_equal(after.rc, 0);
    assert_int_equal(
        balance_stack_query(
            &stack,
            "SELECT count(*) FROM ledger WHERE idempotency_key = 'gave-up' AND user_id =", user),
        0);
    assert_int_equal(after.res.balance, 1009);
    assert_int_equal(balance_stack_stored_balance(&stack, user), 1009);
}

/* Threads of process pid, from /proc; fails the test when it cannot be read. */
static int
threads_of(pid_t pid)
{
    char path[64], line[128];
    int n = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    if ((f = fopen(path, "r")) == NULL) {
        fail_msg("cannot read %s", path);
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "Threads: %d", &n) == 1) {
            break;
        }
    }
    fclose(f);
    assert_true(n > 0);
    return n;
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, ok;
} tally_t;

typedef struct {
    tally_t *tally;
    svc_arena_t *arena;
} top_up_job_t;

static void
top_up_done(ProtobufCMessage *resp, const svc_err_t *err, void *arg)
{
    top_up_job_t *job = arg;

    (void)resp;
    pthread_mutex_lock(&job->tally->mu);
    job->tally->ok += err->code == SVC_OK;
    job->tally->done++;
    pthread_cond_signal(&job->tally->cv);
    pthread_mutex_unlock(&job->tally->mu);
}

/*
 * 200 accounts whose tokens someone else holds, a top-up waiting on each:
 * balance-svc waits for 200 tokens at once without a thread for each (it
 * used to block a worker per waiting account, up to its 256). Then the
 * tokens go back and every top-up goes through, once.
 */
static void
test_waiting_accounts_hold_no_thread(void **state)
{
    enum { N = 200 };
    int64_t *users = calloc(N, sizeof(*users));
    svc_lock_t *locks = calloc(N, sizeof(*locks));
    top_up_job_t *jobs = calloc(N, sizeof(*jobs));
    tally_t t = {.done = 0};
    svc_call_opts_t opts = {.timeout_ms = 30000};
    int threads_before, threads_waiting;

    (void)state;
    pthread_mutex_init(&t.mu, NULL);
    pthread_cond_init(&t.cv, NULL);
    for (int i = 0; i < N; i++) {
        users[i] = balance_stack_funded_user(&stack, 100);
        hold_account(users[i], &locks[i]);
    }
    threads_before = threads_of(stack.inst[0].pid);
    for (int i = 0; i < N; i++) {
        Balance__V1__TopUpRequest req = BALANCE__V1__TOP_UP_REQUEST__INIT;
        char key[32];
        snprintf(key, sizeof(key), "waiting-%d", i);
        req.user_id = users[i];
        req.amount = 7;
        req.idempotency_key = key;
        jobs[i].tally = &t;
        jobs[i].arena = svc_arena_create();
        svc_client_unary_async(C0, "/balance.v1.BalanceService/TopUp", &req.base,
                               &balance__v1__top_up_response__descriptor, jobs[i].arena, &opts,
                               top_up_done, &jobs[i]);
    }
    for (int i = 0; i < N; i++) {
        wait_for_waiters(users[i], 1);
    }
    threads_waiting = threads_of(stack.inst[0].pid);
    fprintf(stderr, "balance-svc threads: %d before, %d with %d accounts waiting for tokens\n",
            threads_before, threads_waiting, N);
    if (threads_waiting > threads_before + N / 4) {
        fail_msg("%d threads while %d accounts waited (%d before)", threads_waiting, N,
                 threads_before);
    }
    for (int i = 0; i < N; i++) {
        release_account(&locks[i]);
    }
    pthread_mutex_lock(&t.mu);
    while (t.done < N) {
        pthread_cond_wait(&t.cv, &t.mu);
    }
    pthread_mutex_unlock(&t.mu);
    assert_int_equal(t.ok, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(balance_stack_stored_balance(&stack, users[i]), 107);
        svc_arena_destroy(jobs[i].arena);
    }
    pthread_cond_destroy(&t.cv);
    pthread_mutex_destroy(&t.mu);
    free(users);
    free(locks);
    free(jobs);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_late_lock_leaves_the_full_budget),
        cmocka_unit_test(test_lock_call_carries_deadline_and_request_id),
        cmocka_unit_test(test_expired_request_in_a_batch_is_not_applied),
        cmocka_unit_test(test_waiting_accounts_hold_no_thread),
    };
    const char *balance_env[] = {"LOCK_WAIT_MS=" LOCK_WAIT_MS, NULL};
    const char *lock_env[] = {"LOG_LEVEL=debug", NULL}; /* its access lines name request ids */
    const balance_stack_config_t config = {
        .instances = 1, .balance_env = balance_env, .lock_env = lock_env};

    return balance_stack_main(&stack, &config, argc, argv, tests, sizeof(tests) / sizeof(tests[0]));
}
