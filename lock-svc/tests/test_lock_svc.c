/*
 * test_lock_svc.c: lock-svc over real gRPC against a real Redis started in a
 * temp dir: mutual exclusion storms on one and two instances, cross-instance
 * wake-ups, FIFO on one instance and across instances, the hand-off done by
 * the release script, a waiter's instance dying at the head of the line,
 * every error code, and Redis dying and coming back empty. argv[1] is the
 * lock-svc binary.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "lock/v1/lock.pb-c.h"
#include "svc/client.h"
#include "svc/lock_client.h"
#include "svc/timer.h"
#include "testenv.h"

static const char *lock_svc_path;
static testenv_redis_t redis;
static testenv_proc_t inst[3]; /* the third is the one killed */
static svc_client_t *client[3];

static void
start_instance(int i)
{
    char url[128], env_url[160];
    const char *env[] = {env_url, "LOG_LEVEL=warn", NULL};
    svc_err_t err;

    testenv_redis_url(&redis, url, sizeof(url));
    snprintf(env_url, sizeof(env_url), "REDIS_URL=%s", url);
    assert_int_equal(testenv_proc_start(&inst[i], lock_svc_path, NULL, env), 0);
    client[i] = svc_client_get(inst[i].addr, &err);
    assert_non_null(client[i]);
}

static int
get_lock(int i, const char *key, Lock__V1__GetLockResponse *out, svc_err_t *err)
{
    Lock__V1__GetLockRequest req = LOCK__V1__GET_LOCK_REQUEST__INIT;
    svc_arena_t *arena = svc_arena_create();
    ProtobufCMessage *resp;
    int rc;

    req.key = (char *)key;
    rc = svc_client_unary(client[i], "/lock.v1.LockService/GetLock", &req.base,
                          &lock__v1__get_lock_response__descriptor, arena, &resp, NULL, err);
    if (rc == 0) {
        *out = *(Lock__V1__GetLockResponse *)resp;
        out->owner = NULL; /* lives in the arena */
    }
    svc_arena_destroy(arena);
    return rc;
}

static int
waiters_on(int i, const char *key)
{
    Lock__V1__GetLockResponse info = LOCK__V1__GET_LOCK_RESPONSE__INIT;
    svc_err_t err;

    assert_int_equal(get_lock(i, key, &info, &err), 0);
    return info.waiters;
}

static void
wait_for_waiters(int i, const char *key, int n)
{
    for (int t = 0; t < 500 && waiters_on(i, key) != n; t++) {
        svc_sleep_ms(10);
    }
    assert_int_equal(waiters_on(i, key), n);
}

/* ---------- the storm ---------- */

typedef struct {
    const char *key;
    int rounds;
    int n_instances;
    /* shared, guarded by the lock under test itself */
    long counter;
    int64_t last_fence;
    atomic_int holders;
    atomic_int overlaps;
    atomic_int fence_regressions;
    atomic_int grants;
    atomic_int failures;
    atomic_int next_id;
} storm_t;

static void *
storm_client(void *arg)
{
    storm_t *st = arg;
    int id = atomic_fetch_add(&st->next_id, 1);
    svc_client_t *c = client[id % st->n_instances];
    svc_lock_opts_t opts = {.owner = "storm", .lease_ms = 10000, .wait_ms = 60000};

    for (int r = 0; r < st->rounds; r++) {
        svc_lock_t lock;
        svc_err_t err;

        if (svc_lock_acquire(c, st->key, &opts, &lock, &err) != 0) {
            fprintf(stderr, "acquire failed: %s %s\n", svc_status_name(err.code), err.msg);
            atomic_fetch_add(&st->failures, 1);
            continue;
        }
        if (atomic_fetch_add(&st->holders, 1) != 0) {
            atomic_fetch_add(&st->overlaps, 1);
        }
        if (lock.fence <= st->last_fence) {
            atomic_fetch_add(&st->fence_regressions, 1);
        }
        st->last_fence = lock.fence;
        long seen = st->counter; /* read, pause, write: only a real lock keeps this right */
        struct timespec ts = {0, 100 * 1000};
        nanosleep(&ts, NULL);
        st->counter = seen + 1;
        atomic_fetch_add(&st->grants, 1);
        atomic_fetch_sub(&st->holders, 1);
        if (svc_lock_release(c, &lock, NULL, &err) != 0) {
            fprintf(stderr, "release failed: %s\n", err.msg);
            atomic_fetch_add(&st->failures, 1);
        }
    }
    return NULL;
}

static void
run_storm(const char *key, int n_clients, int rounds, int n_instances)
{
    storm_t st = {.key = key, .rounds = rounds, .n_instances = n_instances};
    pthread_t *threads = calloc((size_t)n_clients, sizeof(*threads));
    pthread_attr_t attr;
    int64_t t0 = svc_now_mono_ms();
    Lock__V1__GetLockResponse info;
    svc_err_t err;

    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < n_clients; i++) {
        assert_int_equal(pthread_create(&threads[i], &attr, storm_client, &st), 0);
    }
    for (int i = 0; i < n_clients; i++) {
        pthread_join(threads[i], NULL);
    }
    pthread_attr_destroy(&attr);
    free(threads);
    fprintf(stderr,
            "storm on %s: %d clients x %d rounds via %d instance(s): %d grants in %lld ms\n", key,
            n_clients, rounds, n_instances, atomic_load(&st.grants),
            (long long)(svc_now_mono_ms() - t0));
    assert_int_equal(atomic_load(&st.failures), 0);
    assert_int_equal(atomic_load(&st.grants), n_clients * rounds);
    assert_int_equal(st.counter, (long)n_clients * rounds);
    assert_int_equal(atomic_load(&st.overlaps), 0);
    assert_int_equal(atomic_load(&st.fence_regressions), 0);
    /* Nothing is left behind: the lock is free and nobody is registered as waiting. */
    assert_int_equal(get_lock(0, key, &info, &err), 0);
    assert_false(info.held);
    assert_int_equal(info.waiters, 0);
}

static void
test_storm_one_instance(void **state)
{
    (void)state;
    run_storm("storm:one", 200, 20, 1);
}

static void
test_storm_two_instances(void **state)
{
    (void)state;
    run_storm("storm:two", 200, 20, 2);
}

/* ---------- wake-ups across instances ---------- */

typedef struct {
    int instance;
    const char *key;
    int64_t wait_ms;
    int order_slot;
    int rc, release_rc;
    svc_err_t err;
    svc_lock_t lock;
    int64_t granted_at;
} waiter_job_t;

static pthread_mutex_t order_mu = PTHREAD_MUTEX_INITIALIZER;
static int grant_order[16];
static int n_granted;

static void *
waiter_thread(void *arg)
{
    waiter_job_t *job = arg;
    svc_lock_opts_t opts = {.owner = "waiter", .lease_ms = 30000, .wait_ms = job->wait_ms};

    job->rc = svc_lock_acquire(client[job->instance], job->key, &opts, &job->lock, &job->err);
    job->granted_at = svc_now_mono_ms();
    if (job->rc == 0) {
        pthread_mutex_lock(&order_mu);
        grant_order[n_granted++] = job->order_slot;
        pthread_mutex_unlock(&order_mu);
        svc_sleep_ms(20);
        svc_err_t err;
        job->release_rc = svc_lock_release(client[job->instance], &job->lock, NULL, &err);
    }
    return NULL;
}

static void
test_release_on_one_instance_wakes_waiter_on_other(void **state)
{
    svc_lock_opts_t opts = {.owner = "holder", .lease_ms = 30000};
    waiter_job_t job = {.instance = 1, .key = "wake:cross", .wait_ms = 20000};
    pthread_t t;
    svc_lock_t held;
    svc_err_t err;

    (void)state;
    assert_int_equal(svc_lock_acquire(client[0], "wake:cross", &opts, &held, &err), 0);
    assert_int_equal(pthread_create(&t, NULL, waiter_thread, &job), 0);
    wait_for_waiters(0, "wake:cross", 1); /* parked on instance 1, seen through instance 0 */
    int64_t released_at = svc_now_mono_ms();
    assert_int_equal(svc_lock_release(client[0], &held, NULL, &err), 0);
    pthread_join(t, NULL);
    assert_int_equal(job.rc, 0);
    /* The lease was 30 s: waking within 2 s means the release woke it, not expiry or polling. */
    fprintf(stderr, "cross-instance wake-up after %lld ms\n",
            (long long)(job.granted_at - released_at));
    assert_true(job.granted_at - released_at < 2000);
    assert_true(job.lock.fence > held.fence);
}

/* No release ever comes: the waiter is woken when the holder's lease runs out, not at its wait's
 * end. */
static void
test_waiter_woken_by_lease_expiry(void **state)
{
    svc_lock_opts_t opts = {.owner = "vanished", .lease_ms = 400};
    waiter_job_t job = {.instance = 1, .key = "wake:expiry", .wait_ms = 10000};
    pthread_t t;
    svc_lock_t held;
    svc_err_t err;

    (void)state;
    assert_int_equal(svc_lock_acquire(client[0], "wake:expiry", &opts, &held, &err), 0);
    int64_t t0 = svc_now_mono_ms();
    assert_int_equal(pthread_create(&t, NULL, waiter_thread, &job), 0);
    pthread_join(t, NULL);
    assert_int_equal(job.rc, 0);
    fprintf(stderr, "woken %lld ms after a 400 ms lease was taken\n",
            (long long)(job.granted_at - t0));
    assert_true(job.granted_at - t0 < 3000); /* far from the 10 s wait */
    assert_true(job.lock.fence > held.fence);
}

static void
test_fifo_on_one_instance(void **state)
{
    enum { N = 6 };
    svc_lock_opts_t opts = {.owner = "holder", .lease_ms = 30000};
    waiter_job_t jobs[N];
    pthread_t threads[N];
    svc_lock_t held;
    svc_err_t err;

    (void)state;
    n_granted = 0;
    assert_int_equal(svc_lock_acquire(client[0], "fifo:key", &opts, &held, &err), 0);
    for (int i = 0; i < N; i++) {
        jobs[i] =
            (waiter_job_t){.instance = 0, .key = "fifo:key", .wait_ms = 20000, .order_slot = i};
        assert_int_equal(pthread_create(&threads[i], NULL, waiter_thread, &jobs[i]), 0);
        wait_for_waiters(0, "fifo:key", i + 1); /* parked in this order */
    }
    assert_int_equal(svc_lock_release(client[0], &held, NULL, &err), 0);
    for (int i = 0; i < N; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(jobs[i].rc, 0);
        assert_int_equal(jobs[i].release_rc, 0);
    }
    assert_int_equal(n_granted, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(grant_order[i], i);
    }
    for (int i = 1; i < N; i++) {
        assert_true(jobs[grant_order[i]].lock.fence > jobs[grant_order[i - 1]].lock.fence);
    }
}

/* A crowd that arrives at once is counted whole by GetLock, on either instance. */
static void
test_crowd_of_waiters_is_counted(void **state)
{
    enum { N = 12 };
    svc_lock_opts_t opts = {.owner = "holder", .lease_ms = 30000};
    waiter_job_t jobs[N];
    pthread_t threads[N];
    svc_lock_t held;
    svc_err_t err;

    (void)state;
    n_granted = 0;
    assert_int_equal(svc_lock_acquire(client[0], "crowd:key", &opts, &held, &err), 0);
    for (int i = 0; i < N; i++) { /* all at once: most lose their first try together */
        jobs[i] = (waiter_job_t){.instance = i % 2, .key = "crowd:key", .wait_ms = 20000};
        assert_int_equal(pthread_create(&threads[i], NULL, waiter_thread, &jobs[i]), 0);
    }
    wait_for_waiters(0, "crowd:key", N);
    assert_int_equal(waiters_on(1, "crowd:key"), N);
    assert_int_equal(svc_lock_release(client[0], &held, NULL, &err), 0);
    for (int i = 0; i < N; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(jobs[i].rc, 0);
    }
    wait_for_waiters(0, "crowd:key", 0);
}

/* ---------- the hand-off in the release script ---------- */

/* Waiters parked alternately on two instances get the lock in the order they queued. */
static void
test_fifo_across_instances(void **state)
{
    enum { N = 6 };
    svc_lock_opts_t opts = {.owner = "holder", .lease_ms = 30000};
    waiter_job_t jobs[N];
    pthread_t threads[N];
    svc_lock_t held;
    svc_err_t err;

    (void)state;
    n_granted = 0;
    assert_int_equal(svc_lock_acquire(client[1], "fifo:across", &opts, &held, &err), 0);
    for (int i = 0; i < N; i++) {
        jobs[i] = (waiter_job_t){
            .instance = i % 2, .key = "fifo:across", .wait_ms = 20000, .order_slot = i};
        assert_int_equal(pthread_create(&threads[i], NULL, waiter_thread, &jobs[i]), 0);
        wait_for_waiters(0, "fifo:across", i + 1); /* in the line in this order */
    }
    int64_t t0 = svc_now_mono_ms();
    assert_int_equal(svc_lock_release(client[1], &held, NULL, &err), 0);
    for (int i = 0; i < N; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(jobs[i].rc, 0);
        assert_int_equal(jobs[i].release_rc, 0);
    }
    /* Each holds it 20 ms: hand-offs, not leases (30 s), moved it along. */
    fprintf(stderr, "%d waiters on two instances served in %lld ms\n", N,
            (long long)(svc_now_mono_ms() - t0));
    assert_true(svc_now_mono_ms() - t0 < 5000);
    assert_int_equal(n_granted, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(grant_order[i], i);
    }
    for (int i = 1; i < N; i++) {
        assert_true(jobs[i].lock.fence > jobs[i - 1].lock.fence);
    }
    assert_true(jobs[0].lock.fence > held.fence);
}

/*
 * The release script itself hands the lock over: with the waiter's instance
 * paused, the lock is held for that waiter the moment Release returns, and
 * the waiter has it (with that fence) once its instance runs again.
 */
static void
test_release_hands_over_in_redis(void **state)
{
    svc_lock_opts_t opts = {.owner = "holder", .lease_ms = 30000};
    waiter_job_t job = {.instance = 1, .key = "handoff:script", .wait_ms = 20000};
    Lock__V1__GetLockResponse info = LOCK__V1__GET_LOCK_RESPONSE__INIT;
    pthread_t t;
    svc_lock_t held;
    svc_err_t err;

    (void)state;
    assert_int_equal(svc_lock_acquire(client[0], "handoff:script", &opts, &held, &err), 0);
    assert_int_equal(pthread_create(&t, NULL, waiter_thread, &job), 0);
    wait_for_waiters(0, "handoff:script", 1);
    assert_int_equal(testenv_proc_pause(&inst[1]), 0);
    assert_int_equal(svc_lock_release(client[0], &held, NULL, &err), 0);
    assert_int_equal(get_lock(0, "handoff:script", &info, &err), 0);
    svc_sleep_ms(300);
    assert_int_equal(testenv_proc_resume(&inst[1]), 0);
    assert_true(info.held); /* nobody but the paused instance's waiter could have taken it */
    assert_int_equal(info.waiters, 0);
    assert_true(info.fence > held.fence);
    pthread_join(t, NULL);
    assert_int_equal(job.rc, 0);
    assert_int_equal(job.lock.fence, info.fence);
    assert_int_equal(job.release_rc, 0);
}

/*
 * News of a hand-off can come late: a promote or the waiter's confirmation
 * may find the hand-off first, the waiter is granted, and the message on its
 * instance's grant channel arrives after. Such news must not take the lock
 * from the client that holds it (lock-svc used to give the token's lock back
 * when no waiter of its instance knew it, and a storm across two instances
 * saw "release failed: held with another token"). Here the holder's own
 * token is announced on every instance's channel, once with no waiter on
 * the key and once with one waiting on the holder's instance: the lock stays
 * the holder's, and the waiter gets it only from the release.
 */
static void
test_late_grant_news_keeps_the_holder(void **state)
{
    svc_lock_opts_t opts = {.owner = "holder", .lease_ms = 30000};
    waiter_job_t job = {.instance = 1, .key = "late:news", .wait_ms = 20000};
    Lock__V1__GetLockResponse info = LOCK__V1__GET_LOCK_RESPONSE__INIT;
    redisContext *c = redisConnect("127.0.0.1", redis.port);
    redisReply *ids;
    pthread_t t;
    svc_lock_t held;
    svc_err_t err;

    (void)state;
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    assert_int_equal(svc_lock_acquire(client[1], "late:news", &opts, &held, &err), 0);
    ids = redisCommand(c, "KEYS lock-svc:instance:*");
    assert_non_null(ids);
    assert_true(ids->elements >= 2); /* a killed instance's key may still be there */
    for (int round = 0; round < 2; round++) {
        if (round == 1) { /* now with a waiter on the holder's instance */
            assert_int_equal(pthread_create(&t, NULL, waiter_thread, &job), 0);
            wait_for_waiters(0, "late:news", 1);
        }
        for (size_t i = 0; i < ids->elements; i++) {
            const char *id = ids->element[i]->str + strlen("lock-svc:instance:");
            redisReply *r = redisCommand(c, "PUBLISH lock.v1:grant:%s %lld\n2000\n%s\nlate:news",
                                         id, (long long)held.fence, held.token);
            assert_non_null(r);
            freeReplyObject(r);
        }
        svc_sleep_ms(300);
        assert_int_equal(get_lock(0, "late:news", &info, &err), 0);
        assert_true(info.held);
        assert_int_equal(info.fence, held.fence);
        assert_int_equal(info.waiters, round);
    }
    freeReplyObject(ids);
    redisFree(c);
    assert_int_equal(svc_lock_release(client[1], &held, NULL, &err), 0);
    pthread_join(t, NULL);
    assert_int_equal(job.rc, 0);
    assert_true(job.lock.fence > held.fence);
    assert_int_equal(job.release_rc, 0);
}

/*
 * A holder's lease runs out without a release: the head of the line (on the
 * other instance) gets the lock at the lease's end, the next one after it.
 */
static void
test_lease_end_hands_to_next_in_line(void **state)
{
    svc_lock_opts_t opts = {.owner = "vanished", .lease_ms = 500};
    waiter_job_t jobs[2] = {
        {.instance = 1, .key = "lease:line", .wait_ms = 10000, .order_slot = 0},
        {.instance = 0, .key = "lease:line", .wait_ms = 10000, .order_slot = 1},
    };
    pthread_t threads[2];
    svc_lock_t held;
    svc_err_t err;

    (void)state;
    n_granted = 0;
    assert_int_equal(svc_lock_acquire(client[0], "lease:line", &opts, &held, &err), 0);
    int64_t t0 = svc_now_mono_ms();
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_create(&threads[i], NULL, waiter_thread, &jobs[i]), 0);
        wait_for_waiters(0, "lease:line", i + 1);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(jobs[i].rc, 0);
    }
    fprintf(stderr, "lease of 500 ms: the head of the line had it after %lld ms\n",
            (long long)(jobs[0].granted_at - t0));
    assert_true(jobs[0].granted_at - t0 >= 400);
    assert_true(jobs[0].granted_at - t0 < 2500);
    assert_int_equal(grant_order[0], 0);
    assert_int_equal(grant_order[1], 1);
    assert_true(jobs[0].lock.fence > held.fence);
    assert_true(jobs[1].lock.fence > jobs[0].lock.fence);
}

/* Parks a waiter on instance i for key and waits until GetLock counts n. */
static void
park_waiter(waiter_job_t *job, pthread_t *t, int i, const char *key, int n)
{
    *job = (waiter_job_t){.instance = i, .key = key, .wait_ms = 20000};
    assert_int_equal(pthread_create(t, NULL, waiter_thread, job), 0);
    wait_for_waiters(0, key, n);
}

static void
restart_third(void)
{
    svc_err_t err;

    assert_int_equal(testenv_proc_restart(&inst[2]), 0);
    client[2] = svc_client_get(inst[2].addr, &err);
    assert_non_null(client[2]);
}

/*
 * The instance of the waiter at the head of the line is SIGKILLed just
 * before the release: the release hands the lock to that waiter, which is
 * never told. The hand-off is not confirmed, so the next waiter gets the
 * lock within a few seconds, not when the 60 s lease would end.
 */
static void
test_grant_to_a_dead_instance_moves_on(void **state)
{
    svc_lock_opts_t opts = {.owner = "holder", .lease_ms = 60000};
    waiter_job_t dead, live;
    pthread_t t_dead, t_live;
    svc_lock_t held;
    svc_err_t err;

    (void)state;
    assert_int_equal(svc_lock_acquire(client[0], "dead:head", &opts, &held, &err), 0);
    park_waiter(&dead, &t_dead, 2, "dead:head", 1);
    park_waiter(&live, &t_live, 0, "dead:head", 2);
    assert_int_equal(testenv_proc_kill(&inst[2]), 0);
    int64_t t0 = svc_now_mono_ms();
    assert_int_equal(svc_lock_release(client[0], &held, NULL, &err), 0);
    pthread_join(t_live, NULL);
    pthread_join(t_dead, NULL);
    fprintf(stderr, "head of the line's instance killed: the next waiter had it after %lld ms\n",
            (long long)(live.granted_at - t0));
    assert_int_equal(dead.rc, -1);
    assert_int_equal(live.rc, 0);
    assert_true(live.granted_at - t0 < 5000);
    assert_true(live.lock.fence > held.fence);
    wait_for_waiters(0, "dead:head", 0);
    restart_third();
}

/*
 * Once a dead instance's liveness key has run out, GetLock no longer counts
 * its waiters and a release skips them: the next live waiter gets the lock
 * at once.
 */
static void
test_dead_instance_waiters_are_skipped(void **state)
{
    svc_lock_opts_t opts = {.owner = "holder", .lease_ms = 60000};
    waiter_job_t dead, live;
    pthread_t t_dead, t_live;
    svc_lock_t held;
    svc_err_t err;

    (void)state;
    assert_int_equal(svc_lock_acquire(client[0], "dead:skipped", &opts, &held, &err), 0);
    park_waiter(&dead, &t_dead, 2, "dead:skipped", 1);
    park_waiter(&live, &t_live, 1, "dead:skipped", 2);
    assert_int_equal(testenv_proc_kill(&inst[2]), 0);
    wait_for_waiters(0, "dead:skipped", 1); /* within its liveness key's 2 s */
    int64_t t0 = svc_now_mono_ms();
    assert_int_equal(svc_lock_release(client[0], &held, NULL, &err), 0);
    pthread_join(t_live, NULL);
    pthread_join(t_dead, NULL);
    fprintf(stderr, "dead instance's waiter skipped: the live one had it after %lld ms\n",
            (long long)(live.granted_at - t0));
    assert_int_equal(live.rc, 0);
    assert_true(live.granted_at - t0 < 1000);
    assert_true(live.lock.fence > held.fence);
    wait_for_waiters(0, "dead:skipped", 0);
    restart_third();
}

/* ---------- codes ---------- */

static void
test_tokens_and_leases(void **state)
{
    svc_lock_opts_t opts = {.owner = "alice", .lease_ms = 300};
    svc_lock_opts_t other = {.owner = "bob", .lease_ms = 1000, .wait_ms = 0};
    svc_lock_t lock, wrong, second;
    Lock__V1__GetLockResponse info;
    svc_err_t err;

    (void)state;
    assert_int_equal(svc_lock_acquire(client[0], "codes:a", &opts, &lock, &err), 0);
    assert_int_equal(strlen(lock.token), 32);

    wrong = lock;
    snprintf(wrong.token, sizeof(wrong.token), "%s", "0123456789abcdef0123456789abcdef");
    assert_int_equal(svc_lock_release(client[0], &wrong, NULL, &err), -1);
    assert_int_equal(err.code, SVC_FAILED_PRECONDITION);
    assert_int_equal(svc_lock_extend(client[0], &wrong, 1000, NULL, &err), -1);
    assert_int_equal(err.code, SVC_FAILED_PRECONDITION);

    /* Held: a try-once acquire is refused at once. */
    assert_int_equal(svc_lock_acquire(client[0], "codes:a", &other, &second, &err), -1);
    assert_int_equal(err.code, SVC_ABORTED);

    /* GetLock shows the holder but never the token. */
    assert_int_equal(get_lock(0, "codes:a", &info, &err), 0);
    assert_true(info.held);
    assert_int_equal(info.fence, lock.fence);

    /* The lease runs out: the lock is free without a release. */
    svc_sleep_ms(450);
    assert_int_equal(svc_lock_acquire(client[0], "codes:a", &other, &second, &err), 0);
    assert_true(second.fence > lock.fence);
    /* The first holder's token no longer works: NOT_FOUND would be wrong, it is someone else's. */
    assert_int_equal(svc_lock_release(client[0], &lock, NULL, &err), -1);
    assert_int_equal(err.code, SVC_FAILED_PRECONDITION);

    /* Extend pushes the expiry out. */
    int64_t before = second.expires_at_ms;
    assert_int_equal(svc_lock_extend(client[0], &second, 5000, NULL, &err), 0);
    assert_true(second.expires_at_ms > before + 3000);

    assert_int_equal(svc_lock_release(client[0], &second, NULL, &err), 0);
    assert_int_equal(svc_lock_release(client[0], &second, NULL, &err), -1);
    assert_int_equal(err.code, SVC_NOT_FOUND);
    assert_int_equal(svc_lock_extend(client[0], &second, 1000, NULL, &err), -1);
    assert_int_equal(err.code, SVC_NOT_FOUND);
}

static void
test_wait_elapsed_is_aborted(void **state)
{
    svc_lock_opts_t hold = {.lease_ms = 10000};
    svc_lock_opts_t wait = {.lease_ms = 1000, .wait_ms = 300};
    svc_lock_t held, lock;
    svc_err_t err;

    (void)state;
    assert_int_equal(svc_lock_acquire(client[0], "codes:wait", &hold, &held, &err), 0);
    int64_t t0 = svc_now_mono_ms();
    assert_int_equal(svc_lock_acquire(client[0], "codes:wait", &wait, &lock, &err), -1);
    assert_int_equal(err.code, SVC_ABORTED);
    assert_true(svc_now_mono_ms() - t0 >= 300);
    assert_int_equal(waiters_on(0, "codes:wait"), 0);
    assert_int_equal(svc_lock_release(client[0], &held, NULL, &err), 0);
}

static void
test_client_cancel_removes_waiter(void **state)
{
    Lock__V1__AcquireRequest req = LOCK__V1__ACQUIRE_REQUEST__INIT;
    svc_lock_opts_t hold = {.lease_ms = 10000};
    svc_call_opts_t copts = {.timeout_ms = 500};
    svc_arena_t *arena = svc_arena_create();
    ProtobufCMessage *resp;
    svc_lock_t held;
    svc_err_t err;
    pthread_t t;
    waiter_job_t job = {.instance = 0, .key = "codes:cancel", .wait_ms = 20000};

    (void)state;
    assert_int_equal(svc_lock_acquire(client[0], "codes:cancel", &hold, &held, &err), 0);
    /* One waiter that stays, one whose client gives up after 500 ms. */
    assert_int_equal(pthread_create(&t, NULL, waiter_thread, &job), 0);
    wait_for_waiters(0, "codes:cancel", 1);
    req.key = "codes:cancel";
    req.wait_ms = 20000;
    assert_int_equal(svc_client_unary(client[0], "/lock.v1.LockService/Acquire", &req.base,
                                      &lock__v1__acquire_response__descriptor, arena, &resp, &copts,
                                      &err),
                     -1);
    assert_int_equal(err.code, SVC_DEADLINE_EXCEEDED);
    wait_for_waiters(0, "codes:cancel", 1); /* back to the one that stays */
    assert_int_equal(svc_lock_release(client[0], &held, NULL, &err), 0);
    pthread_join(t, NULL);
    assert_int_equal(job.rc, 0); /* and it, not the cancelled one, got the lock */
    svc_arena_destroy(arena);
}

static void
expect_invalid(const char *key, int64_t lease_ms, int64_t wait_ms)
{
    Lock__V1__AcquireRequest req = LOCK__V1__ACQUIRE_REQUEST__INIT;
    svc_arena_t *arena = svc_arena_create();
    ProtobufCMessage *resp;
    svc_err_t err;

    req.key = (char *)key;
    req.lease_ms = lease_ms;
    req.wait_ms = wait_ms;
    assert_int_equal(svc_client_unary(client[0], "/lock.v1.LockService/Acquire", &req.base,
                                      &lock__v1__acquire_response__descriptor, arena, &resp, NULL,
                                      &err),
                     -1);
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    svc_arena_destroy(arena);
}

static void
test_invalid_arguments(void **state)
{
    char long_key[202];
    Lock__V1__GetLockResponse info;
    Lock__V1__ReleaseRequest rel = LOCK__V1__RELEASE_REQUEST__INIT;
    svc_arena_t *arena = svc_arena_create();
    ProtobufCMessage *resp;
    svc_err_t err;

    (void)state;
    memset(long_key, 'k', 201);
    long_key[201] = '\0';
    expect_invalid("", 0, 0);
    expect_invalid(long_key, 0, 0);
    expect_invalid("has space", 0, 0);
    expect_invalid("star*", 0, 0);
    expect_invalid("ok:key", -1, 0);
    expect_invalid("ok:key", 300001, 0);
    expect_invalid("ok:key", 0, -1);
    expect_invalid("ok:key", 0, 60001);
    long_key[200] = '\0'; /* 200 is fine */
    assert_int_equal(get_lock(0, long_key, &info, &err), 0);
    assert_int_equal(get_lock(0, "", &info, &err), -1);
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    rel.key = "ok:key"; /* no token */
    assert_int_equal(svc_client_unary(client[0], "/lock.v1.LockService/Release", &rel.base,
                                      &lock__v1__release_response__descriptor, arena, &resp, NULL,
                                      &err),
                     -1);
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    svc_arena_destroy(arena);
}

/* ---------- the scoped helper of the lock client ---------- */

static int
inside_lock(const svc_lock_t *lock, void *arg, svc_err_t *err)
{
    Lock__V1__GetLockResponse info;
    int *result = arg;

    /* While fn runs, the lock is held with the fence it was given. */
    if (get_lock(0, lock->key, &info, err) != 0 || !info.held || info.fence != lock->fence) {
        *result = -2;
        return -1;
    }
    if (*result == 1) {
        svc_err_set(err, SVC_FAILED_PRECONDITION, "fn failed on purpose");
        return -1;
    }
    return 0;
}

static void
test_scoped_lock_always_releases(void **state)
{
    svc_lock_opts_t opts = {.owner = "scoped", .lease_ms = 30000, .wait_ms = 1000};
    Lock__V1__GetLockResponse info;
    svc_err_t err;
    int result = 0;

    (void)state;
    assert_int_equal(svc_lock_with(client[0], "scoped:key", &opts, inside_lock, &result, &err), 0);
    assert_int_equal(get_lock(0, "scoped:key", &info, &err), 0);
    assert_false(info.held);
    result = 1; /* fn fails: its error comes back, and the lock is released all the same */
    assert_int_equal(svc_lock_with(client[0], "scoped:key", &opts, inside_lock, &result, &err), -1);
    assert_int_equal(err.code, SVC_FAILED_PRECONDITION);
    assert_int_equal(get_lock(0, "scoped:key", &info, &err), 0);
    assert_false(info.held);
}

/* ---------- Redis dies ---------- */

static void
test_redis_down_then_back_empty(void **state)
{
    svc_lock_opts_t opts = {.lease_ms = 60000};
    svc_lock_t before, after;
    svc_err_t err;

    (void)state;
    assert_int_equal(svc_lock_acquire(client[0], "redis:gone", &opts, &before, &err), 0);
    testenv_redis_kill(&redis);
    for (int i = 0; i < 3; i++) {
        int64_t t0 = svc_now_mono_ms();
        assert_int_equal(svc_lock_acquire(client[0], "redis:other", &opts, &after, &err), -1);
        assert_int_equal(err.code, SVC_UNAVAILABLE);
        assert_true(svc_now_mono_ms() - t0 < 1000);
    }
    assert_int_equal(testenv_redis_restart(&redis), 0); /* empty: no persistence */
    int rc = -1;
    for (int i = 0; i < 100 && rc != 0; i++) {
        rc = svc_lock_acquire(client[0], "redis:gone", &opts, &after, &err);
        if (rc != 0) {
            svc_sleep_ms(50);
        }
    }
    assert_int_equal(rc, 0); /* the old holder's lock went with the data */
    assert_true(after.fence > before.fence);
}

/*
 * Redis stalls past lock-svc's reply timeout while it holds an acquire:
 * lock-svc answers UNAVAILABLE and drops the connection, but Redis runs the
 * acquire when it wakes up. Nobody has that token; the lock must come free
 * soon after Redis is back, not when its 60 s lease ends.
 */
static void
test_lost_acquire_reply_is_released(void **state)
{
    svc_lock_opts_t opts = {.owner = "lost", .lease_ms = 60000};
    Lock__V1__GetLockResponse info = LOCK__V1__GET_LOCK_RESPONSE__INIT;
    svc_lock_t lock;
    svc_err_t err;
    int64_t back;
    int rc = -1;

    (void)state;
    assert_int_equal(testenv_redis_pause(&redis), 0);
    rc = svc_lock_acquire(client[0], "lost:reply", &opts, &lock, &err);
    svc_sleep_ms(300); /* past the drop: the acquire waits in a closed connection's bytes */
    assert_int_equal(testenv_redis_resume(&redis), 0);
    assert_int_equal(rc, -1);
    assert_int_equal(err.code, SVC_UNAVAILABLE);
    back = svc_now_mono_ms();
    for (rc = -1; rc != 0 && svc_now_mono_ms() - back < 5000;) {
        rc = svc_lock_acquire(client[1], "lost:reply", &opts, &lock, &err);
        if (rc != 0) {
            svc_sleep_ms(100);
        }
    }
    if (rc != 0) {
        assert_int_equal(get_lock(1, "lost:reply", &info, &err), 0);
        fail_msg("lock still held 5 s after redis came back (held=%d, fence %lld, %lld ms "
                 "of its lease left)",
                 (int)info.held, (long long)info.fence,
                 (long long)(info.expires_at_ms - svc_now_unix_ms()));
    }
    fprintf(stderr, "free again %lld ms after redis came back\n",
            (long long)(svc_now_mono_ms() - back));
    assert_int_equal(svc_lock_release(client[1], &lock, NULL, &err), 0);
    /* Whatever order Redis ran the stalled acquire in, it does not come back. */
    svc_sleep_ms(1500);
    assert_int_equal(get_lock(0, "lost:reply", &info, &err), 0);
    assert_false(info.held);
}

static int
setup(void **state)
{
    (void)state;
    testenv_cleanup_on_exit();
    if (testenv_redis_start(&redis) != 0) {
        return -1;
    }
    start_instance(0);
    start_instance(1);
    start_instance(2);
    return 0;
}

static int
teardown(void **state)
{
    int s0, s1, s2;

    (void)state;
    s2 = testenv_proc_stop(&inst[2]); /* killed and restarted by the tests: the last one's */
    s0 = testenv_proc_stop(&inst[0]);
    s1 = testenv_proc_stop(&inst[1]);
    testenv_redis_stop(&redis);
    svc_client_release_all();
    /* Every instance shut down cleanly (and, under ASan, without leaks). */
    return s0 == 0 && s1 == 0 && s2 == 0 ? 0 : -1;
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalid_arguments),
        cmocka_unit_test(test_tokens_and_leases),
        cmocka_unit_test(test_wait_elapsed_is_aborted),
        cmocka_unit_test(test_client_cancel_removes_waiter),
        cmocka_unit_test(test_fifo_on_one_instance),
        cmocka_unit_test(test_crowd_of_waiters_is_counted),
        cmocka_unit_test(test_release_on_one_instance_wakes_waiter_on_other),
        cmocka_unit_test(test_waiter_woken_by_lease_expiry),
        cmocka_unit_test(test_fifo_across_instances),
        cmocka_unit_test(test_release_hands_over_in_redis),
        cmocka_unit_test(test_lease_end_hands_to_next_in_line),
        cmocka_unit_test(test_grant_to_a_dead_instance_moves_on),
        cmocka_unit_test(test_dead_instance_waiters_are_skipped),
        cmocka_unit_test(test_scoped_lock_always_releases),
        cmocka_unit_test(test_storm_one_instance),
        cmocka_unit_test(test_late_grant_news_keeps_the_holder),
        cmocka_unit_test(test_storm_two_instances),
        cmocka_unit_test(test_lost_acquire_reply_is_released),
        cmocka_unit_test(test_redis_down_then_back_empty),
    };

    if (argc < 2) {
        fprintf(stderr, "usage: %s path/to/lock-svc\n", argv[0]);
        return 2;
    }
    lock_svc_path = argv[1];
    return testenv_group_result(
        cmocka_run_group_tests(tests, setup, testenv_group_teardown(teardown)));
}
