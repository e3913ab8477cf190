/*
 * test_lock_sem.c: lock-svc's semaphores over real gRPC, two lock-svc
 * instances on one real Redis started in a temp dir: the limit under a storm
 * of enters across both instances, FIFO admission (checked by replaying the
 * semaphore's event log), leave admitting the next at once, a lease end
 * admitting the next with nobody calling, idempotent enter, a waiting
 * ticket's TTL, and the error codes. argv[1] is the lock-svc binary.
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
#include "svc/client.h"
#include "svc/lock_client.h"
#include "svc/timer.h"
#include "testenv.h"

static const char *lock_svc_path;
static testenv_redis_t redis;
static testenv_proc_t inst[2];
static svc_client_t *client[2];

/* ---------- calls ---------- */

typedef struct {
    char ticket[65];
    int64_t seq;
    int position;
    int64_t expires_at_ms;
    char version[48];
} ticket_t;

static int
call(int i, const char *method, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *desc,
     svc_arena_t *arena, ProtobufCMessage **resp, svc_err_t *err)
{
    char path[128];

    snprintf(path, sizeof(path), "/lock.v1.LockService/%s", method);
    return svc_client_unary(client[i], path, req, desc, arena, resp, NULL, err);
}

static int
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

static int
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

static int
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

typedef struct {
    int limit, holders, waiting, position;
    int64_t expires_at_ms;
} sem_info_t;

static int
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
static int
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

/* ---------- Redis, read directly (reading does not settle anything) ---------- */

static redisContext *
redis_connect(void)
{
    redisContext *c = redisConnect("127.0.0.1", redis.port);

    assert_non_null(c);
    assert_int_equal(c->err, 0);
    return c;
}

/* Whether ticket is among name's holders in Redis. */
static bool
redis_holds(redisContext *c, const char *name, const char *ticket)
{
    redisReply *r = redisCommand(c, "ZSCORE {sem:%s}:holders %s", name, ticket);
    bool yes;

    assert_non_null(r);
    yes = r->type == REDIS_REPLY_STRING;
    freeReplyObject(r);
    return yes;
}

static long long
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

/*
 * A semaphore's events, replayed: every admit takes the lowest seq waiting
 * (nobody overtaken), and never more than limit hold at once.
 */
typedef struct {
    int limit;
    int64_t waiting[4096];
    int n_waiting, holders, enters, admits, gone;
} replay_t;

static void
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
static int
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

/* ---------- tests ---------- */

static void
expect_code(int rc, const svc_err_t *err, svc_status_t code)
{
    assert_int_equal(rc, -1);
    if (err->code != code) {
        fail_msg("wanted %s, got %s: %s", svc_status_name(code), svc_status_name(err->code),
                 err->msg);
    }
}

static void
test_invalid_arguments(void **state)
{
    char long_name[202];
    ticket_t t;
    sem_info_t info;
    svc_err_t err;
    int pos;
    int64_t exp;

    (void)state;
    memset(long_name, 'n', 201);
    long_name[201] = '\0';
    expect_code(enter(0, "", "o", 1, 0, 0, &t, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(enter(0, long_name, "o", 1, 0, 0, &t, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(enter(0, "has space", "o", 1, 0, 0, &t, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(enter(0, "inv:a", "", 1, 0, 0, &t, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(enter(0, "inv:a", "o", 0, 0, 0, &t, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(enter(0, "inv:a", "o", -3, 0, 0, &t, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(enter(0, "inv:a", "o", 1000001, 0, 0, &t, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(enter(0, "inv:a", "o", 1, -1, 0, &t, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(enter(0, "inv:a", "o", 1, 300001, 0, &t, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(enter(0, "inv:a", "o", 1, 0, -1, &t, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(enter(0, "inv:a", "o", 1, 0, 300001, &t, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(leave(0, "inv:a", "", &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(leave(0, "bad name", "t", &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(extend(0, "inv:a", "", 1000, &pos, &exp, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(extend(0, "inv:a", "t", -5, &pos, &exp, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(get(0, "", NULL, &info, &err), &err, SVC_INVALID_ARGUMENT);
    /* The edges are fine: limit 1000000, a 200-byte name; nothing was entered before. */
    long_name[200] = '\0';
    assert_int_equal(enter(0, long_name, "o", 1000000, 0, 0, &t, &err), 0);
    assert_int_equal(t.position, 0);
    assert_int_equal(get(1, "inv:a", NULL, &info, &err), 0);
    assert_int_equal(info.limit, 0); /* never entered: nothing there */
    assert_int_equal(info.holders + info.waiting, 0);
}

static void
test_unknown_tickets_and_limits(void **state)
{
    ticket_t a, b;
    sem_info_t info;
    svc_err_t err;
    int pos;
    int64_t exp;

    (void)state;
    expect_code(leave(0, "codes:sem", "0123456789abcdef0123456789abcdef", &err), &err,
                SVC_NOT_FOUND);
    expect_code(extend(1, "codes:sem", "nope", 1000, &pos, &exp, &err), &err, SVC_NOT_FOUND);
    expect_code(get(0, "codes:sem", "nope", &info, &err), &err, SVC_NOT_FOUND);

    assert_int_equal(enter(0, "codes:sem", "alice", 2, 30000, 30000, &a, &err), 0);
    /* The limit is the first Enter's while the semaphore has tickets. */
    expect_code(enter(1, "codes:sem", "bob", 3, 30000, 30000, &b, &err), &err,
                SVC_FAILED_PRECONDITION);
    expect_code(enter(1, "codes:sem", "alice", 1, 30000, 30000, &b, &err), &err,
                SVC_FAILED_PRECONDITION);
    assert_int_equal(leave(1, "codes:sem", a.ticket, &err), 0);
    /* Gone: its ticket is unknown now, and the empty semaphore takes a new limit. */
    expect_code(leave(0, "codes:sem", a.ticket, &err), &err, SVC_NOT_FOUND);
    expect_code(get(0, "codes:sem", a.ticket, &info, &err), &err, SVC_NOT_FOUND);
    assert_int_equal(enter(1, "codes:sem", "bob", 3, 30000, 30000, &b, &err), 0);
    assert_int_equal(get(0, "codes:sem", NULL, &info, &err), 0);
    assert_int_equal(info.limit, 3);
    assert_int_equal(info.holders, 1);
    assert_int_equal(leave(0, "codes:sem", b.ticket, &err), 0);
}

static void
test_enter_is_idempotent_per_owner(void **state)
{
    ticket_t h, w1, w2, again;
    svc_err_t err;

    (void)state;
    assert_int_equal(enter(0, "idem:sem", "holder", 1, 30000, 30000, &h, &err), 0);
    assert_int_equal(enter(0, "idem:sem", "waiter", 1, 30000, 30000, &w1, &err), 0);
    assert_int_equal(w1.position, 1);
    /* The same owner again, through the other instance: the same ticket, the same place. */
    assert_int_equal(enter(1, "idem:sem", "waiter", 1, 30000, 30000, &w2, &err), 0);
    assert_string_equal(w2.ticket, w1.ticket);
    assert_int_equal(w2.seq, w1.seq);
    assert_int_equal(w2.position, 1);
    assert_int_equal(enter(1, "idem:sem", "holder", 1, 30000, 30000, &again, &err), 0);
    assert_string_equal(again.ticket, h.ticket);
    assert_int_equal(again.position, 0);
    assert_string_not_equal(h.ticket, w1.ticket);
    assert_int_equal(leave(0, "idem:sem", h.ticket, &err), 0);
    assert_int_equal(leave(0, "idem:sem", w1.ticket, &err), 0);
    /* Once it left, the owner gets a new ticket. */
    assert_int_equal(enter(0, "idem:sem", "waiter", 1, 30000, 30000, &w2, &err), 0);
    assert_string_not_equal(w2.ticket, w1.ticket);
    assert_true(w2.seq > w1.seq);
    assert_int_equal(leave(0, "idem:sem", w2.ticket, &err), 0);
}

/* Leave admits the next in line within its own script: admitted when Leave returns. */
static void
test_fifo_and_leave_admits_next_at_once(void **state)
{
    enum { N = 8, LIMIT = 2 };
    ticket_t t[N];
    char owner[32];
    svc_err_t err;

    (void)state;
    for (int i = 0; i < N; i++) {
        snprintf(owner, sizeof(owner), "fan-%d", i);
        assert_int_equal(enter(i % 2, "fifo:sem", owner, LIMIT, 30000, 30000, &t[i], &err), 0);
        assert_int_equal(t[i].position, i < LIMIT ? 0 : i - LIMIT + 1);
        if (i > 0) {
            assert_true(t[i].seq > t[i - 1].seq);
        }
    }
    /* Holders leave one by one, alternating instances: each time the lowest waiting is in. */
    for (int i = 0; i < N; i++) {
        assert_int_equal(leave((i + 1) % 2, "fifo:sem", t[i].ticket, &err), 0);
        for (int j = i + 1; j < N; j++) {
            int want = j <= i + LIMIT ? 0 : j - (i + LIMIT);
            assert_int_equal(position_of(j % 2, "fifo:sem", t[j].ticket), want);
        }
    }
    assert_int_equal(replay_log("fifo:sem", LIMIT, N), N);
}

/* Nobody calls lock-svc: the holder's lease ends and the next is admitted by the timer. */
static void
test_lease_end_admits_next_without_a_call(void **state)
{
    redisContext *c = redis_connect();
    ticket_t h, w;
    svc_err_t err;
    int64_t t0;

    (void)state;
    assert_int_equal(enter(0, "lease:sem", "short", 1, 400, 30000, &h, &err), 0);
    assert_int_equal(enter(1, "lease:sem", "next", 1, 30000, 30000, &w, &err), 0);
    assert_int_equal(w.position, 1);
    t0 = svc_now_mono_ms();
    /* Only Redis is read from now on; reading it settles nothing. */
    while (!redis_holds(c, "lease:sem", w.ticket) && svc_now_mono_ms() - t0 < 3000) {
        svc_sleep_ms(5);
    }
    fprintf(stderr, "400 ms lease: the next was admitted %lld ms after it was taken\n",
            (long long)(svc_now_mono_ms() - t0));
    assert_true(redis_holds(c, "lease:sem", w.ticket));
    assert_false(redis_holds(c, "lease:sem", h.ticket));
    assert_true(svc_now_mono_ms() - t0 < 1500);
    assert_int_equal(position_of(0, "lease:sem", h.ticket), -1);
    assert_int_equal(leave(0, "lease:sem", w.ticket, &err), 0);
    redisFree(c);
}

/* A waiting ticket whose place ran out is skipped; Extend keeps a place. */
static void
test_waiting_ticket_past_its_ttl_is_skipped(void **state)
{
    ticket_t h, gone, kept, last;
    svc_err_t err;
    int pos;
    int64_t exp;

    (void)state;
    assert_int_equal(enter(0, "ttl:sem", "holder", 1, 30000, 30000, &h, &err), 0);
    assert_int_equal(enter(1, "ttl:sem", "gone", 1, 30000, 300, &gone, &err), 0);
    assert_int_equal(enter(0, "ttl:sem", "kept", 1, 30000, 300, &kept, &err), 0);
    assert_int_equal(enter(1, "ttl:sem", "last", 1, 30000, 30000, &last, &err), 0);
    assert_int_equal(last.position, 3);
    assert_true(kept.expires_at_ms <= svc_now_unix_ms() + 300);
    svc_sleep_ms(150);
    assert_int_equal(extend(1, "ttl:sem", kept.ticket, 30000, &pos, &exp, &err), 0);
    assert_int_equal(pos, 2);
    assert_true(exp > svc_now_unix_ms() + 20000);
    svc_sleep_ms(300);
    /* gone's place ran out: it is dropped, everyone behind it moves up. */
    assert_int_equal(position_of(0, "ttl:sem", gone.ticket), -1);
    assert_int_equal(position_of(1, "ttl:sem", kept.ticket), 1);
    assert_int_equal(position_of(1, "ttl:sem", last.ticket), 2);
    assert_int_equal(leave(1, "ttl:sem", h.ticket, &err), 0);
    assert_int_equal(position_of(0, "ttl:sem", kept.ticket), 0);
    assert_int_equal(position_of(0, "ttl:sem", last.ticket), 1);
    /* The holder's lease is extended with the same call. */
    assert_int_equal(extend(0, "ttl:sem", kept.ticket, 60000, &pos, &exp, &err), 0);
    assert_int_equal(pos, 0);
    assert_true(exp > svc_now_unix_ms() + 50000);
    assert_int_equal(leave(0, "ttl:sem", kept.ticket, &err), 0);
    assert_int_equal(leave(0, "ttl:sem", last.ticket, &err), 0);
    assert_int_equal(replay_log("ttl:sem", 1, 4), 3);
}

/* ---------- the storm ---------- */

enum { STORM_LIMIT = 3, STORM_FANS = 40 };

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
static void
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

static void
test_limit_holds_under_a_storm_on_two_instances(void **state)
{
    (void)state;
    run_storm("storm:sem");
}

/* ---------- Watch ---------- */

typedef struct {
    svc_client_stream_t *s;
    svc_arena_t *arena;
} watch_t;

static void
watch_open(watch_t *w, int i, const char *name, const char *after)
{
    Lock__V1__WatchSemaphoreRequest req = LOCK__V1__WATCH_SEMAPHORE_REQUEST__INIT;
    svc_call_opts_t opts = {.timeout_ms = 20000};
    svc_err_t err;

    req.name = (char *)name;
    req.after_version = (char *)after;
    w->arena = svc_arena_create();
    w->s = svc_client_stream_open(client[i], "/lock.v1.LockService/WatchSemaphore", &opts, &err);
    assert_non_null(w->s);
    assert_int_equal(svc_client_stream_send(w->s, &req.base, &err), 0);
    assert_int_equal(svc_client_stream_close_send(w->s, &err), 0);
}

/* The next message (in w's arena); fails the test when the stream ends or breaks. */
static Lock__V1__WatchSemaphoreResponse *
watch_next(watch_t *w)
{
    ProtobufCMessage *msg;
    svc_err_t err;
    int rc = svc_client_stream_recv(w->s, &lock__v1__watch_semaphore_response__descriptor, w->arena,
                                    &msg, &err);

    if (rc != 1) {
        fail_msg("watch ended: %d %s", rc, err.msg);
    }
    return (Lock__V1__WatchSemaphoreResponse *)msg;
}

static void
watch_close(watch_t *w)
{
    svc_client_stream_destroy(w->s);
    svc_arena_destroy(w->arena);
}

/* a < b as versions ("<ms>-<n>"). */
static bool
version_less(const char *a, const char *b)
{
    unsigned long long am, an, bm, bn;

    assert_int_equal(sscanf(a, "%llu-%llu", &am, &an), 2);
    assert_int_equal(sscanf(b, "%llu-%llu", &bm, &bn), 2);
    return am < bm || (am == bm && an < bn);
}

/* The next event is kind for ticket, after *version (which it advances). */
static Lock__V1__WatchSemaphoreResponse *
expect_event(watch_t *w, Lock__V1__SemaphoreEventKind kind, const ticket_t *t, char *version)
{
    Lock__V1__WatchSemaphoreResponse *m = watch_next(w);

    if (m->kind != kind || strcmp(m->ticket, t->ticket) != 0) {
        fail_msg("wanted event %d for seq %lld, got %d for seq %lld", kind, (long long)t->seq,
                 m->kind, (long long)m->seq);
    }
    assert_int_equal(m->seq, t->seq);
    assert_true(version_less(version, m->version));
    snprintf(version, 48, "%s", m->version);
    return m;
}

#define EV(k) LOCK__V1__SEMAPHORE_EVENT_KIND__SEMAPHORE_EVENT_KIND_##k

/*
 * A watcher on instance 1 gets the snapshot, then the events caused on
 * instance 0 in order, including the admissions a lease end makes with
 * nobody calling; a second watcher joining later (behind the reader) misses
 * nothing either; and a watcher resuming from a version gets what came after.
 */
static void
test_watch_snapshot_then_events(void **state)
{
    ticket_t a, b, c, d;
    watch_t w1, w2, w3;
    Lock__V1__WatchSemaphoreResponse *m;
    char v1[48], v2[48];
    svc_err_t err;

    (void)state;
    assert_int_equal(enter(0, "watch:sem", "a", 1, 30000, 30000, &a, &err), 0);
    assert_int_equal(enter(0, "watch:sem", "b", 1, 400, 30000, &b, &err), 0);
    watch_open(&w1, 1, "watch:sem", "");
    m = watch_next(&w1);
    assert_int_equal(m->kind, EV(SNAPSHOT));
    assert_int_equal(m->limit, 1);
    assert_false(m->more);
    assert_int_equal(m->n_tickets, 2);
    assert_string_equal(m->tickets[0]->ticket, a.ticket);
    assert_true(m->tickets[0]->holding);
    assert_int_equal(m->tickets[0]->seq, a.seq);
    assert_string_equal(m->tickets[1]->ticket, b.ticket);
    assert_false(m->tickets[1]->holding);
    assert_int_equal(m->tickets[1]->expires_at_ms, b.expires_at_ms);
    assert_string_equal(m->version, b.version);
    snprintf(v1, sizeof(v1), "%s", m->version);

    assert_int_equal(enter(0, "watch:sem", "c", 1, 30000, 30000, &c, &err), 0);
    m = expect_event(&w1, EV(ENTER), &c, v1);
    assert_int_equal(m->expires_at_ms, c.expires_at_ms);

    /* A second watcher joins on the same instance: its snapshot has c already. */
    watch_open(&w2, 1, "watch:sem", "");
    m = watch_next(&w2);
    assert_int_equal(m->kind, EV(SNAPSHOT));
    assert_int_equal(m->n_tickets, 3);
    assert_string_equal(m->tickets[2]->ticket, c.ticket);
    snprintf(v2, sizeof(v2), "%s", m->version);
    assert_string_equal(v2, v1);

    /* a leaves on instance 0: b is admitted in the same script; both watchers hear it. */
    assert_int_equal(leave(0, "watch:sem", a.ticket, &err), 0);
    expect_event(&w1, EV(LEAVE), &a, v1);
    m = expect_event(&w1, EV(ADMIT), &b, v1);
    assert_true(m->expires_at_ms > svc_now_unix_ms() + 100);
    expect_event(&w2, EV(LEAVE), &a, v2);
    expect_event(&w2, EV(ADMIT), &b, v2);
    /* b's 400 ms lease runs out, nobody calls: its end and c's admission are pushed. */
    int64_t t0 = svc_now_mono_ms();
    expect_event(&w1, EV(EXPIRE), &b, v1);
    expect_event(&w1, EV(ADMIT), &c, v1);
    fprintf(stderr, "watch: lease end and next admission pushed %lld ms after the admit\n",
            (long long)(svc_now_mono_ms() - t0));
    expect_event(&w2, EV(EXPIRE), &b, v2);
    expect_event(&w2, EV(ADMIT), &c, v2);
    assert_string_equal(v1, v2);
    watch_close(&w2);

    /* Resume from v2 (before d and e): what came after, without a snapshot. */
    assert_int_equal(enter(1, "watch:sem", "d", 1, 30000, 30000, &d, &err), 0);
    expect_event(&w1, EV(ENTER), &d, v1);
    assert_int_equal(enter(1, "watch:sem", "e", 1, 30000, 30000, &a, &err), 0);
    int64_t opened = svc_now_mono_ms();
    watch_open(&w3, 1, "watch:sem", v2); /* behind w1, whose XREAD is blocked: woken */
    expect_event(&w3, EV(ENTER), &d, v2);
    /* The reader was woken for it, not left to its 1 s XREAD. */
    fprintf(stderr, "watch: resumed watcher had its first event after %lld ms\n",
            (long long)(svc_now_mono_ms() - opened));
    assert_true(svc_now_mono_ms() - opened < 700);
    expect_event(&w3, EV(ENTER), &a, v2);
    expect_event(&w1, EV(ENTER), &a, v1);
    watch_close(&w3);
    watch_close(&w1);
    assert_int_equal(leave(0, "watch:sem", c.ticket, &err), 0);
    assert_int_equal(leave(0, "watch:sem", d.ticket, &err), 0);
    assert_int_equal(leave(0, "watch:sem", a.ticket, &err), 0);
}

static void
test_watch_bad_arguments(void **state)
{
    watch_t w;
    ProtobufCMessage *msg;
    svc_err_t err;

    (void)state;
    watch_open(&w, 0, "watch:bad", "not-a-version");
    assert_int_equal(svc_client_stream_recv(w.s, &lock__v1__watch_semaphore_response__descriptor,
                                            w.arena, &msg, &err),
                     0);
    assert_int_equal(svc_client_stream_finish(w.s, &err), -1);
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    watch_close(&w);
    watch_open(&w, 0, "bad name", "");
    assert_int_equal(svc_client_stream_recv(w.s, &lock__v1__watch_semaphore_response__descriptor,
                                            w.arena, &msg, &err),
                     0);
    assert_int_equal(svc_client_stream_finish(w.s, &err), -1);
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    watch_close(&w);
}

/*
 * A watcher mirrors a storm on both instances from its events alone: every
 * fan enters, is admitted in seq order, never more than the limit at once,
 * and leaves; nothing is missing or doubled.
 */
static void
test_watch_mirrors_a_storm(void **state)
{
    static const char *kinds[] = {"", "", "enter", "admit", "leave", "expire", "extend"};
    replay_t *rp = calloc(1, sizeof(*rp));
    Lock__V1__WatchSemaphoreResponse *m;
    char version[48];
    watch_t w;

    (void)state;
    rp->limit = STORM_LIMIT;
    watch_open(&w, 1, "storm:watched", "");
    m = watch_next(&w);
    assert_int_equal(m->kind, EV(SNAPSHOT));
    assert_int_equal(m->n_tickets, 0);
    snprintf(version, sizeof(version), "%s", m->version);
    run_storm("storm:watched");
    while (rp->gone < STORM_FANS) {
        m = watch_next(&w);
        assert_true(m->kind >= EV(ENTER) && m->kind <= EV(EXTEND));
        assert_true(version_less(version, m->version));
        snprintf(version, sizeof(version), "%s", m->version);
        replay_apply(rp, kinds[m->kind], m->seq);
    }
    assert_int_equal(rp->enters, STORM_FANS);
    assert_int_equal(rp->admits, STORM_FANS);
    assert_int_equal(rp->holders, 0);
    assert_int_equal(rp->n_waiting, 0);
    watch_close(&w);
    free(rp);
}

/* ---------- the C client (svc/lock_client.h) ---------- */

/* Waits for one asynchronous svc_sem_* call. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    svc_err_t err;
} waiter_t;

static void
waiter_done(const svc_err_t *err, void *arg)
{
    waiter_t *w = arg;

    pthread_mutex_lock(&w->mu);
    w->err = *err;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static svc_err_t
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
test_client_api(void **state)
{
    svc_sem_opts_t opts = {
        .owner = "client-a", .limit = 1, .lease_ms = 30000, .ticket_ttl_ms = 30000};
    waiter_t w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, {0}};
    svc_sem_ticket_t a, b;
    svc_sem_info_t info;
    svc_err_t err;
    int64_t before;

    (void)state;
    assert_int_equal(svc_sem_enter(client[0], "client:sem", &opts, &a, &err), 0);
    assert_string_equal(a.name, "client:sem");
    assert_int_equal(a.position, 0);
    opts.owner = "client-b";
    svc_sem_enter_async(client[1], "client:sem", &opts, &b, waiter_done, &w);
    assert_int_equal(waiter_wait(&w).code, SVC_OK);
    assert_int_equal(b.position, 1);
    assert_true(b.seq > a.seq);

    assert_int_equal(svc_sem_get(client[0], "client:sem", b.ticket, NULL, &info, &err), 0);
    assert_int_equal(info.limit, 1);
    assert_int_equal(info.holders, 1);
    assert_int_equal(info.waiting, 1);
    assert_int_equal(info.position, 1);
    assert_int_equal(info.expires_at_ms, b.expires_at_ms);

    before = b.expires_at_ms;
    svc_sem_extend_async(client[0], &b, 60000, NULL, waiter_done, &w);
    assert_int_equal(waiter_wait(&w).code, SVC_OK);
    assert_int_equal(b.position, 1);
    assert_true(b.expires_at_ms > before + 20000);

    /* Fire and forget: the leave admits b, which Get shows soon. */
    svc_sem_leave_async(client[1], &a, NULL);
    for (int i = 0; i < 200 && position_of(0, "client:sem", b.ticket) != 0; i++) {
        svc_sleep_ms(5);
    }
    assert_int_equal(position_of(0, "client:sem", b.ticket), 0);
    svc_sem_get_async(client[1], "client:sem", a.ticket, NULL, &info, waiter_done, &w);
    assert_int_equal(waiter_wait(&w).code, SVC_NOT_FOUND);

    opts.limit = 2; /* another limit while b holds */
    opts.owner = "client-c";
    assert_int_equal(svc_sem_enter(client[0], "client:sem", &opts, &a, &err), -1);
    assert_int_equal(err.code, SVC_FAILED_PRECONDITION);
    opts.limit = 0;
    assert_int_equal(svc_sem_enter(client[0], "client:sem", &opts, &a, &err), -1);
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    svc_sem_leave_async(client[0], &b, NULL);
}

/* What an asynchronous watch heard, for the test thread. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
    svc_sem_event_kind_t kinds[64];
    int64_t seqs[64];
    int snapshot_tickets;
    bool ended;
    svc_err_t end;
} heard_t;

static void
heard_event(const svc_sem_event_t *ev, void *arg)
{
    heard_t *h = arg;

    pthread_mutex_lock(&h->mu);
    if (h->n < 64) {
        h->kinds[h->n] = ev->kind;
        h->seqs[h->n] = ev->seq;
        h->n++;
    }
    if (ev->kind == SVC_SEM_SNAPSHOT) {
        h->snapshot_tickets = (int)ev->n_tickets;
    }
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

static void
heard_end(const svc_err_t *err, void *arg)
{
    heard_t *h = arg;

    pthread_mutex_lock(&h->mu);
    h->ended = true;
    h->end = *err;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

/* Waits up to 5 s until h heard n messages (or ended, with end). */
static void
heard_wait(heard_t *h, int n, bool end)
{
    int64_t until = svc_now_mono_ms() + 5000;

    pthread_mutex_lock(&h->mu);
    while ((end ? !h->ended : h->n < n) && svc_now_mono_ms() < until) {
        pthread_mutex_unlock(&h->mu);
        svc_sleep_ms(5);
        pthread_mutex_lock(&h->mu);
    }
    pthread_mutex_unlock(&h->mu);
}

/* The asynchronous watch of the C client: snapshot, events in order, and its end. */
static void
test_client_watch(void **state)
{
    static heard_t h = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    svc_sem_opts_t opts = {.owner = "w-a", .limit = 1, .lease_ms = 30000, .ticket_ttl_ms = 30000};
    svc_sem_ticket_t a, b;
    svc_sem_watch_t *w;
    svc_err_t err;

    (void)state;
    assert_int_equal(svc_sem_enter(client[0], "cwatch:sem", &opts, &a, &err), 0);
    w = svc_sem_watch_start(client[1], "cwatch:sem", NULL, NULL, heard_event, heard_end, &h, &err);
    assert_non_null(w);
    heard_wait(&h, 1, false);
    opts.owner = "w-b";
    assert_int_equal(svc_sem_enter(client[0], "cwatch:sem", &opts, &b, &err), 0);
    svc_sem_leave_async(client[0], &a, NULL);
    heard_wait(&h, 4, false);
    pthread_mutex_lock(&h.mu);
    assert_int_equal(h.n, 4);
    assert_int_equal(h.kinds[0], SVC_SEM_SNAPSHOT);
    assert_int_equal(h.snapshot_tickets, 1);
    assert_int_equal(h.kinds[1], SVC_SEM_ENTER);
    assert_int_equal(h.seqs[1], b.seq);
    assert_int_equal(h.kinds[2], SVC_SEM_LEAVE);
    assert_int_equal(h.seqs[2], a.seq);
    assert_int_equal(h.kinds[3], SVC_SEM_ADMIT);
    assert_int_equal(h.seqs[3], b.seq);
    assert_false(h.ended); /* a watch has no deadline */
    pthread_mutex_unlock(&h.mu);
    svc_sem_watch_close(w);
    heard_wait(&h, 0, true);
    pthread_mutex_lock(&h.mu);
    assert_true(h.ended);
    assert_int_equal(h.end.code, SVC_CANCELLED);
    pthread_mutex_unlock(&h.mu);
    svc_sem_leave_async(client[0], &b, NULL);
}

/* The same owner entering many times at once through both instances: one ticket. */
static void *
enter_same_owner(void *arg)
{
    ticket_t *t = arg;
    svc_err_t err;

    if (enter((int)(t->seq % 2), "same:sem", "one-owner", 2, 30000, 30000, t, &err) != 0) {
        t->ticket[0] = '\0';
    }
    return NULL;
}

static void
test_concurrent_enters_of_one_owner_share_a_ticket(void **state)
{
    enum { N = 16 };
    ticket_t t[N];
    pthread_t threads[N];
    sem_info_t info;
    svc_err_t err;

    (void)state;
    for (int i = 0; i < N; i++) {
        memset(&t[i], 0, sizeof(t[i]));
        t[i].seq = i; /* which instance */
        assert_int_equal(pthread_create(&threads[i], NULL, enter_same_owner, &t[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(threads[i], NULL);
        assert_true(t[i].ticket[0] != '\0');
        assert_string_equal(t[i].ticket, t[0].ticket);
        assert_int_equal(t[i].seq, t[0].seq);
    }
    assert_int_equal(get(0, "same:sem", NULL, &info, &err), 0);
    assert_int_equal(info.holders, 1);
    assert_int_equal(info.waiting, 0);
    assert_int_equal(leave(1, "same:sem", t[0].ticket, &err), 0);
}

/* A big line comes in several snapshot messages, in order, the last without `more`. */
static void
test_big_snapshot_comes_in_parts(void **state)
{
    enum { N = 2100 };
    static svc_sem_ticket_t tickets[N];
    waiter_t w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, {0}};
    svc_sem_opts_t opts = {.limit = 1, .lease_ms = 60000, .ticket_ttl_ms = 60000};
    Lock__V1__WatchSemaphoreResponse *m;
    char owner[32];
    watch_t wt;
    int64_t last_seq = 0;
    int seen = 0, parts = 0;

    (void)state;
    for (int i = 0; i < N; i++) { /* one after another: seq follows i */
        snprintf(owner, sizeof(owner), "big-%d", i);
        opts.owner = owner;
        svc_sem_enter_async(client[i % 2], "big:sem", &opts, &tickets[i], waiter_done, &w);
        assert_int_equal(waiter_wait(&w).code, SVC_OK);
    }
    watch_open(&wt, 0, "big:sem", "");
    do {
        m = watch_next(&wt);
        assert_int_equal(m->kind, EV(SNAPSHOT));
        assert_true(m->n_tickets <= 1000);
        for (size_t i = 0; i < m->n_tickets; i++, seen++) {
            assert_true(m->tickets[i]->seq > last_seq); /* the holder, then the line in order */
            assert_int_equal(m->tickets[i]->holding, seen == 0);
            last_seq = m->tickets[i]->seq;
        }
        parts++;
        svc_arena_reset(wt.arena);
    } while (m->more);
    assert_int_equal(seen, N);
    assert_int_equal(parts, 3);
    watch_close(&wt);
    for (int i = 0; i < N; i++) {
        svc_sem_leave_async(client[i % 2], &tickets[i], NULL);
    }
}

/*
 * Redis stalls past lock-svc's reply timeout with an Enter in it: the caller
 * hears UNAVAILABLE, Redis runs the Enter later anyway, and the retry (the
 * same owner) gets that very ticket: nothing is left behind.
 */
static void
test_lost_enter_reply_is_retried_safely(void **state)
{
    ticket_t t, again;
    sem_info_t info;
    svc_err_t err;
    int rc;

    (void)state;
    assert_int_equal(testenv_redis_pause(&redis), 0);
    rc = enter(0, "lost:enter", "retrier", 1, 30000, 30000, &t, &err);
    svc_sleep_ms(300);
    assert_int_equal(testenv_redis_resume(&redis), 0);
    assert_int_equal(rc, -1);
    assert_int_equal(err.code, SVC_UNAVAILABLE);
    rc = -1;
    for (int i = 0; i < 100 && rc != 0; i++) {
        if ((rc = enter(0, "lost:enter", "retrier", 1, 30000, 30000, &again, &err)) != 0) {
            svc_sleep_ms(50);
        }
    }
    assert_int_equal(rc, 0);
    assert_int_equal(again.position, 0);
    svc_sleep_ms(500); /* whatever the stalled connection still held has run by now */
    assert_int_equal(get(1, "lost:enter", NULL, &info, &err), 0);
    assert_int_equal(info.holders + info.waiting, 1);
    assert_int_equal(position_of(1, "lost:enter", again.ticket), 0);
    assert_int_equal(leave(1, "lost:enter", again.ticket, &err), 0);
}

/* Nobody listens: the client says so in the words the lock calls use. */
static void
test_client_unavailable(void **state)
{
    svc_sem_opts_t opts = {.owner = "x", .limit = 1};
    char addr[64];
    svc_client_t *none;
    svc_sem_ticket_t t;
    svc_sem_info_t info;
    svc_err_t err;

    (void)state;
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", testenv_free_port());
    none = svc_client_get(addr, &err);
    assert_non_null(none);
    assert_int_equal(svc_sem_enter(none, "gone:sem", &opts, &t, &err), -1);
    assert_int_equal(err.code, SVC_UNAVAILABLE);
    assert_string_equal(err.msg, "lock service unavailable");
    assert_int_equal(svc_sem_get(none, "gone:sem", NULL, NULL, &info, &err), -1);
    assert_int_equal(err.code, SVC_UNAVAILABLE);
    assert_string_equal(err.msg, "lock service unavailable");
}

/* ---------- restarts ---------- */

/*
 * Every instance that knew of a lease is killed; the ones that start again
 * find its end in Redis's index and admit the next in line then, with
 * nobody calling.
 */
static void
test_lease_end_admits_after_every_instance_restarted(void **state)
{
    redisContext *c = redis_connect();
    ticket_t h, w;
    svc_err_t err;
    int64_t t0;

    (void)state;
    assert_int_equal(enter(0, "restart:sem", "short", 1, 1500, 30000, &h, &err), 0);
    assert_int_equal(enter(1, "restart:sem", "next", 1, 30000, 30000, &w, &err), 0);
    t0 = svc_now_mono_ms();
    assert_int_equal(testenv_proc_kill(&inst[0]), 0);
    assert_int_equal(testenv_proc_kill(&inst[1]), 0);
    assert_int_equal(testenv_proc_restart(&inst[0]), 0);
    assert_int_equal(testenv_proc_restart(&inst[1]), 0);
    while (!redis_holds(c, "restart:sem", w.ticket) && svc_now_mono_ms() - t0 < 5000) {
        svc_sleep_ms(10);
    }
    fprintf(stderr, "after both instances restarted: next admitted %lld ms after a 1500 ms lease\n",
            (long long)(svc_now_mono_ms() - t0));
    assert_true(redis_holds(c, "restart:sem", w.ticket));
    assert_true(svc_now_mono_ms() - t0 < 3000);
    assert_int_equal(leave(0, "restart:sem", w.ticket, &err), 0);
    redisFree(c);
}

/*
 * A watch never ends by itself: at shutdown lock-svc ends it at once with
 * UNAVAILABLE instead of spending its whole grace period (10 s) on it.
 */
static void
test_shutdown_ends_watches_at_once(void **state)
{
    Lock__V1__WatchSemaphoreResponse *m;
    ProtobufCMessage *msg;
    watch_t w;
    svc_err_t err;
    int64_t t0;

    (void)state;
    watch_open(&w, 1, "bye:sem", "");
    m = watch_next(&w);
    assert_int_equal(m->kind, EV(SNAPSHOT));
    t0 = svc_now_mono_ms();
    assert_int_equal(testenv_proc_signal(&inst[1], SIGTERM), 0);
    assert_int_equal(svc_client_stream_recv(w.s, &lock__v1__watch_semaphore_response__descriptor,
                                            w.arena, &msg, &err),
                     0);
    assert_int_equal(svc_client_stream_finish(w.s, &err), -1);
    assert_int_equal(err.code, SVC_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "shutting down"));
    watch_close(&w);
    while (testenv_proc_alive(&inst[1]) && svc_now_mono_ms() - t0 < 15000) {
        svc_sleep_ms(20);
    }
    fprintf(stderr, "lock-svc with a watch stopped in %lld ms\n",
            (long long)(svc_now_mono_ms() - t0));
    assert_true(svc_now_mono_ms() - t0 < 5000);
    assert_int_equal(inst[1].status, 0); /* a clean exit (and, under ASan, no leak) */
    assert_int_equal(testenv_proc_restart(&inst[1]), 0);
}

/*
 * Redis goes away: a watcher is told UNAVAILABLE (events may be lost), and
 * watching again from its version gives a snapshot once Redis is back
 * empty, not a resume over the lost log.
 */
static void
test_watch_ends_when_redis_is_lost(void **state)
{
    Lock__V1__WatchSemaphoreResponse *m;
    ProtobufCMessage *msg;
    ticket_t t;
    watch_t w;
    char version[48];
    svc_err_t err;
    int rc = -1;

    (void)state;
    assert_int_equal(enter(0, "lost:sem", "x", 1, 30000, 30000, &t, &err), 0);
    watch_open(&w, 0, "lost:sem", "");
    m = watch_next(&w);
    assert_int_equal(m->kind, EV(SNAPSHOT));
    assert_int_equal(m->n_tickets, 1);
    snprintf(version, sizeof(version), "%s", m->version);
    static heard_t h = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    svc_sem_watch_t *aw =
        svc_sem_watch_start(client[1], "lost:sem", NULL, NULL, heard_event, heard_end, &h, &err);
    assert_non_null(aw);
    heard_wait(&h, 1, false);
    testenv_redis_kill(&redis);
    assert_int_equal(svc_client_stream_recv(w.s, &lock__v1__watch_semaphore_response__descriptor,
                                            w.arena, &msg, &err),
                     0);
    assert_int_equal(svc_client_stream_finish(w.s, &err), -1);
    assert_int_equal(err.code, SVC_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "after_version"));
    watch_close(&w);
    heard_wait(&h, 0, true); /* the C client's watch ends too, in its own words */
    pthread_mutex_lock(&h.mu);
    assert_true(h.ended);
    assert_int_equal(h.end.code, SVC_UNAVAILABLE);
    assert_string_equal(h.end.msg, "lock service unavailable");
    pthread_mutex_unlock(&h.mu);
    svc_sem_watch_close(aw);
    assert_int_equal(testenv_redis_restart(&redis), 0); /* empty */
    for (int i = 0; i < 100 && rc != 0; i++) {
        sem_info_t info;
        if ((rc = get(0, "lost:sem", NULL, &info, &err)) != 0) {
            svc_sleep_ms(50);
        }
    }
    assert_int_equal(rc, 0);
    svc_sleep_ms(300); /* the reader reconnects too */
    watch_open(&w, 0, "lost:sem", version);
    m = watch_next(&w);
    assert_int_equal(m->kind, EV(SNAPSHOT)); /* the log it knew is gone: no resume */
    assert_int_equal(m->n_tickets, 0);
    watch_close(&w);
}

/* ---------- set-up ---------- */

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
setup(void **state)
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

static int
teardown(void **state)
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

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalid_arguments),
        cmocka_unit_test(test_unknown_tickets_and_limits),
        cmocka_unit_test(test_enter_is_idempotent_per_owner),
        cmocka_unit_test(test_fifo_and_leave_admits_next_at_once),
        cmocka_unit_test(test_lease_end_admits_next_without_a_call),
        cmocka_unit_test(test_waiting_ticket_past_its_ttl_is_skipped),
        cmocka_unit_test(test_limit_holds_under_a_storm_on_two_instances),
        cmocka_unit_test(test_watch_snapshot_then_events),
        cmocka_unit_test(test_watch_bad_arguments),
        cmocka_unit_test(test_watch_mirrors_a_storm),
        cmocka_unit_test(test_client_api),
        cmocka_unit_test(test_client_watch),
        cmocka_unit_test(test_client_unavailable),
        cmocka_unit_test(test_concurrent_enters_of_one_owner_share_a_ticket),
        cmocka_unit_test(test_big_snapshot_comes_in_parts),
        cmocka_unit_test(test_lost_enter_reply_is_retried_safely),
        cmocka_unit_test(test_lease_end_admits_after_every_instance_restarted),
        cmocka_unit_test(test_shutdown_ends_watches_at_once),
        cmocka_unit_test(test_watch_ends_when_redis_is_lost),
    };

    if (argc < 2) {
        fprintf(stderr, "usage: %s path/to/lock-svc\n", argv[0]);
        return 2;
    }
    lock_svc_path = argv[1];
    return testenv_group_result(
        cmocka_run_group_tests(tests, setup, testenv_group_teardown(teardown)));
}
