/*
 * sem_test.c: what lock-svc's semaphore tests share (see sem_test.h).
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

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "lock/v1/lock.pb-c.h"
#include "sem_test.h"
#include "svc/client.h"
#include "svc/lock_client.h"
#include "svc/timer.h"
#include "testenv.h"

const char *lock_svc_path;
testenv_redis_t redis;
testenv_proc_t inst[2];
svc_client_t *client[2];

static int
call(int i, const char *method, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *desc,
     svc_arena_t *arena, ProtobufCMessage **resp, svc_err_t *err)
{
    char path[128];

    snprintf(path, sizeof(path), "/lock.v1.LockService/%s", method);
    return svc_client_unary(client[i], path, req, desc, arena, resp, NULL, err);
}

int
enter(int i, const char *name, const char *owner, int limit, int64_t lease_ms, int64_t ttl_ms,
      ticket_t *out, svc_err_t *err)
{
    Lock__V1__EnterSemaphoreRequest req = LOCK__V1__ENTER_SEMAPHORE_REQUEST__INIT;
    svc_arena_t *arena = svc_arena_create();
    ProtobufCMessage *resp;
    int rc;

    req.name = (char *)name;
    req.owner = (char *)owner;
    req.limit = limit;
    req.lease_ms = lease_ms;
    req.ticket_ttl_ms = ttl_ms;
    rc = call(i, "EnterSemaphore", &req.base, &lock__v1__enter_semaphore_response__descriptor,
              arena, &resp, err);
    if (rc == 0) {
        Lock__V1__EnterSemaphoreResponse *r = (void *)resp;
        snprintf(out->ticket, sizeof(out->ticket), "%s", r->ticket);
        snprintf(out->version, sizeof(out->version), "%s", r->version);
        out->seq = r->seq;
        out->position = r->position;
        out->expires_at_ms = r->expires_at_ms;
    }
    svc_arena_destroy(arena);
    return rc;
}

int
leave(int i, const char *name, const char *ticket, svc_err_t *err)
{
    Lock__V1__LeaveSemaphoreRequest req = LOCK__V1__LEAVE_SEMAPHORE_REQUEST__INIT;
    svc_arena_t *arena = svc_arena_create();
    ProtobufCMessage *resp;
    int rc;

    req.name = (char *)name;
    req.ticket = (char *)ticket;
    rc = call(i, "LeaveSemaphore", &req.base, &lock__v1__leave_semaphore_response__descriptor,
              arena, &resp, err);
    svc_arena_destroy(arena);
    return rc;
}

int
extend(int i, const char *name, const char *ticket, int64_t lease_ms, int *position,
       int64_t *expires, svc_err_t *err)
{
    Lock__V1__ExtendSemaphoreRequest req = LOCK__V1__EXTEND_SEMAPHORE_REQUEST__INIT;
    svc_arena_t *arena = svc_arena_create();
    ProtobufCMessage *resp;
    int rc;

    req.name = (char *)name;
    req.ticket = (char *)ticket;
    req.lease_ms = lease_ms;
    rc = call(i, "ExtendSemaphore", &req.base, &lock__v1__extend_semaphore_response__descriptor,
              arena, &resp, err);
    if (rc == 0) {
        *position = ((Lock__V1__ExtendSemaphoreResponse *)resp)->position;
        *expires = ((Lock__V1__ExtendSemaphoreResponse *)resp)->expires_at_ms;
    }
    svc_arena_destroy(arena);
    return rc;
}

int
get(int i, const char *name, const char *ticket, sem_info_t *out, svc_err_t *err)
{
    Lock__V1__GetSemaphoreRequest req = LOCK__V1__GET_SEMAPHORE_REQUEST__INIT;
    svc_arena_t *arena = svc_arena_create();
    ProtobufCMessage *resp;
    int rc;

    req.name = (char *)name;
    req.ticket = (char *)(ticket != NULL ? ticket : "");
    rc = call(i, "GetSemaphore", &req.base, &lock__v1__get_semaphore_response__descriptor, arena,
              &resp, err);
    if (rc == 0) {
        Lock__V1__GetSemaphoreResponse *r = (void *)resp;
        *out = (sem_info_t){r->limit, r->holders, r->waiting, r->position, r->expires_at_ms};
    }
    svc_arena_destroy(arena);
    return rc;
}

/* The ticket's position, -1 when it is gone (NOT_FOUND); fails the test on anything else. */
int
position_of(int i, const char *name, const char *ticket)
{
    sem_info_t info;
    svc_err_t err;

    if (get(i, name, ticket, &info, &err) != 0) {
        if (err.code != SVC_NOT_FOUND) {
            fail_msg("GetSemaphore: %s %s", svc_status_name(err.code), err.msg);
        }
        return -1;
    }
    return info.position;
}

redisContext *
redis_connect(void)
{
    redisContext *c = redisConnect("127.0.0.1", redis.port);

    assert_non_null(c);
    assert_int_equal(c->err, 0);
    return c;
}

/* Whether ticket is among name's holders in Redis. */
bool
redis_holds(redisContext *c, const char *name, const char *ticket)
{
    redisReply *r = redisCommand(c, "ZSCORE {sem:%s}:holders %s", name, ticket);
    bool yes;

    assert_non_null(r);
    yes = r->type == REDIS_REPLY_STRING;
    freeReplyObject(r);
    return yes;
}

long long
redis_holders(redisContext *c, const char *name)
{
    redisReply *r = redisCommand(c, "ZCARD {sem:%s}:holders", name);
    long long n;

    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    n = r->integer;
    freeReplyObject(r);
    return n;
}

void
replay_apply(replay_t *rp, const char *kind, int64_t seq)
{
    if (strcmp(kind, "enter") == 0) {
        assert_true(rp->n_waiting < 4096);
        rp->waiting[rp->n_waiting++] = seq;
        rp->enters++;
    } else if (strcmp(kind, "admit") == 0) {
        int lowest = 0;
        for (int k = 1; k < rp->n_waiting; k++) {
            if (rp->waiting[k] < rp->waiting[lowest]) {
                lowest = k;
            }
        }
        assert_true(rp->n_waiting > 0);
        if (rp->waiting[lowest] != seq) {
            fail_msg("seq %lld admitted while %lld waited before it", (long long)seq,
                     (long long)rp->waiting[lowest]);
        }
        rp->waiting[lowest] = rp->waiting[--rp->n_waiting];
        if (++rp->holders > rp->limit) {
            fail_msg("%d holders at once, limit %d", rp->holders, rp->limit);
        }
        rp->admits++;
    } else if (strcmp(kind, "leave") == 0 || strcmp(kind, "expire") == 0) {
        int k;
        for (k = 0; k < rp->n_waiting && rp->waiting[k] != seq; k++) {
        }
        if (k < rp->n_waiting) {
            rp->waiting[k] = rp->waiting[--rp->n_waiting];
        } else {
            rp->holders--;
        }
        rp->gone++;
    }
}

/* Replays name's log in Redis (see replay_t); every ticket entered; returns the admits. */
int
replay_log(const char *name, int limit, int entered)
{
    redisContext *c = redis_connect();
    redisReply *r = redisCommand(c, "XRANGE {sem:%s}:log - +", name);
    replay_t *rp = calloc(1, sizeof(*rp));
    int admits;

    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    rp->limit = limit;
    for (size_t e = 0; e < r->elements; e++) {
        redisReply *f = r->element[e]->element[1];
        const char *kind = "";
        int64_t seq = 0;

        for (size_t j = 0; j + 1 < f->elements; j += 2) {
            if (strcmp(f->element[j]->str, "kind") == 0) {
                kind = f->element[j + 1]->str;
            } else if (strcmp(f->element[j]->str, "seq") == 0) {
                seq = strtoll(f->element[j + 1]->str, NULL, 10);
            }
        }
        replay_apply(rp, kind, seq);
    }
    freeReplyObject(r);
    redisFree(c);
    assert_int_equal(rp->enters, entered);
    admits = rp->admits;
    free(rp);
    return admits;
}

typedef struct {
    const char *name;
    atomic_int next_id;
    atomic_int holding;     /* fans who know they hold a permit and have not left */
    atomic_int max_holding; /* the most at once */
    atomic_int over_limit;  /* GetSemaphore answers with more holders than the limit */
    atomic_int failures;
    atomic_int served;
    atomic_bool done;
} storm_t;

static void *
storm_fan(void *arg)
{
    storm_t *st = arg;
    int id = atomic_fetch_add(&st->next_id, 1), i = id % 2;
    char owner[32];
    ticket_t t;
    sem_info_t info;
    svc_err_t err;
    int64_t t0 = svc_now_mono_ms();

    snprintf(owner, sizeof(owner), "storm-%d", id);
    if (enter(i, st->name, owner, STORM_LIMIT, 30000, 30000, &t, &err) != 0) {
        fprintf(stderr, "enter: %s\n", err.msg);
        atomic_fetch_add(&st->failures, 1);
        return NULL;
    }
    while (t.position != 0 && svc_now_mono_ms() - t0 < 20000) {
        svc_sleep_ms(3);
        if (get(i, st->name, t.ticket, &info, &err) != 0) {
            atomic_fetch_add(&st->failures, 1);
            return NULL;
        }
        if (info.holders > STORM_LIMIT) {
            atomic_fetch_add(&st->over_limit, 1);
        }
        t.position = info.position;
    }
    if (t.position != 0) {
        atomic_fetch_add(&st->failures, 1);
        return NULL;
    }
    int now = atomic_fetch_add(&st->holding, 1) + 1, seen = atomic_load(&st->max_holding);
    while (now > seen && !atomic_compare_exchange_weak(&st->max_holding, &seen, now)) {
    }
    svc_sleep_ms(10);
    atomic_fetch_sub(&st->holding, 1); /* before Leave: the next may be admitted by it */
    if (leave(1 - i, st->name, t.ticket, &err) != 0) {
        atomic_fetch_add(&st->failures, 1);
    }
    atomic_fetch_add(&st->served, 1);
    return NULL;
}

/* Samples the holders in Redis while the storm runs. */
static void *
storm_sampler(void *arg)
{
    storm_t *st = arg;
    redisContext *c = redis_connect();

    while (!atomic_load(&st->done)) {
        if (redis_holders(c, st->name) > STORM_LIMIT) {
            atomic_fetch_add(&st->over_limit, 1);
        }
        svc_sleep_ms(1);
    }
    redisFree(c);
    return NULL;
}

/* STORM_FANS fans enter name across both instances, hold a permit 10 ms each, and leave. */
void
run_storm(const char *name)
{
    storm_t st = {.name = name};
    pthread_t fans[STORM_FANS], sampler;
    sem_info_t info;
    svc_err_t err;

    assert_int_equal(pthread_create(&sampler, NULL, storm_sampler, &st), 0);
    for (int i = 0; i < STORM_FANS; i++) {
        assert_int_equal(pthread_create(&fans[i], NULL, storm_fan, &st), 0);
    }
    for (int i = 0; i < STORM_FANS; i++) {
        pthread_join(fans[i], NULL);
    }
    atomic_store(&st.done, true);
    pthread_join(sampler, NULL);
    fprintf(stderr, "storm: %d fans through a limit of %d, at most %d held at once\n",
            atomic_load(&st.served), STORM_LIMIT, atomic_load(&st.max_holding));
    assert_int_equal(atomic_load(&st.failures), 0);
    assert_int_equal(atomic_load(&st.served), STORM_FANS);
    assert_int_equal(atomic_load(&st.over_limit), 0);
    assert_true(atomic_load(&st.max_holding) <= STORM_LIMIT);
    /* Every fan was admitted once, in seq order, never more than the limit at once. */
    assert_int_equal(replay_log(name, STORM_LIMIT, STORM_FANS), STORM_FANS);
    assert_int_equal(get(0, name, NULL, &info, &err), 0);
    assert_int_equal(info.holders + info.waiting, 0);
}

void
waiter_done(const svc_err_t *err, void *arg)
{
    waiter_t *w = arg;

    pthread_mutex_lock(&w->mu);
    w->err = *err;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

svc_err_t
waiter_wait(waiter_t *w)
{
    pthread_mutex_lock(&w->mu);
    while (!w->done) {
        pthread_cond_wait(&w->cv, &w->mu);
    }
    w->done = false;
    pthread_mutex_unlock(&w->mu);
    return w->err;
}

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

int
sem_test_setup(void **state)
{
    (void)state;
    testenv_cleanup_on_exit();
    if (testenv_redis_start(&redis) != 0) {
        return -1;
    }
    start_instance(0);
    start_instance(1);
    return 0;
}

int
sem_test_teardown(void **state)
{
    int s0, s1;

    (void)state;
    s0 = testenv_proc_stop(&inst[0]);
    s1 = testenv_proc_stop(&inst[1]);
    testenv_redis_stop(&redis);
    svc_client_release_all();
    /* Both instances shut down cleanly (and, under ASan, without leaks). */
    return s0 == 0 && s1 == 0 ? 0 : -1;
}
