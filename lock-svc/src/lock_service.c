/*
 * lock_service.c: lock.v1.LockService. Waiters are parked per key in FIFO
 * order without a thread each; the head of a key's queue tries again when
 * the holder releases (here, or through another instance: Redis pub/sub) or
 * when the holder's lease runs out, so a lost wake-up costs at most the lease.
 * Nothing here blocks: handlers run on the completion-queue thread, Redis
 * answers in callbacks on lock_store's thread, and every call is ended from
 * whichever thread learns its outcome.
 *
 * A waiter lives in its call's arena. Three parties may want to end it: the
 * attempt that gets or fails the lock, its wait timer, and the client's
 * cancellation. The outcome is decided under the service mutex; the call is
 * ended by whoever also owns the timer (cancelled it, or is the timer), so the
 * waiter's memory is never touched after its call ended.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lock/v1/lock.pb-c.h"
#include "lock_service.h"
#include "svc/log.h"
#include "svc/validate.h"

#define N_BUCKETS 4096
#define EXPIRY_SLACK_MS 2
#define TOKEN_MAX 64

typedef enum { W_PARKED, W_ATTEMPTING, W_DONE } waiter_state_t;

typedef struct keyq keyq_t;

typedef struct lock_waiter {
    struct lock_waiter *next, *prev;
    keyq_t *q;
    svc_call_t *call;
    lock_service_t *svc;
    const char *key; /* in the call's arena, like the waiter: outlives the queue */
    const char *owner;
    int64_t lease_ms, wait_ms, wait_until_ms;
    char id[LOCK_TOKEN_LEN + 1];
    svc_timer_t timer;
    bool timer_live;
    waiter_state_t state;
    bool timed_out, cancelled, registered;
    bool has_outcome;
    svc_err_t outcome; /* SVC_OK: granted with token, fence, expires_at_ms */
    char token[LOCK_TOKEN_LEN + 1];
    int64_t fence, expires_at_ms;
} lock_waiter_t;

struct keyq {
    keyq_t *next; /* hash chain */
    lock_service_t *svc;
    char key[SVC_KEY_MAX + 1];
    lock_waiter_t *head, *tail;
    bool attempting, rewake;
    svc_timer_t expiry;
    bool expiry_live;
    int64_t expiry_due_ms; /* monotonic */
};

struct lock_service {
    svc_server_t *server;
    svc_timers_t *timers;
    lock_store_t *store;
    lock_limits_t limits;
    pthread_mutex_t mu;
    keyq_t *buckets[N_BUCKETS];
};

/* ---------- per-key queues (caller holds mu) ---------- */

static unsigned
key_hash(const char *key)
{
    unsigned h = 2166136261u;

    for (; *key; key++) {
        h = (h ^ (unsigned char)*key) * 16777619u;
    }
    return h % N_BUCKETS;
}

static keyq_t *
keyq_get(lock_service_t *svc, const char *key, bool create)
{
    unsigned b = key_hash(key);
    keyq_t *q;

    for (q = svc->buckets[b]; q != NULL; q = q->next) {
        if (strcmp(q->key, key) == 0) {
            return q;
        }
    }
    if (!create || (q = calloc(1, sizeof(*q))) == NULL) {
        return NULL;
    }
    q->svc = svc;
    snprintf(q->key, sizeof(q->key), "%s", key);
    q->expiry.heap_index = -1;
    q->next = svc->buckets[b];
    svc->buckets[b] = q;
    return q;
}

/* Frees q once nothing refers to it: no waiter, no attempt, no timer. */
static void
keyq_maybe_free(keyq_t *q)
{
    lock_service_t *svc = q->svc;
    keyq_t **pp;

    if (q->head != NULL || q->attempting || q->expiry_live) {
        return;
    }
    for (pp = &svc->buckets[key_hash(q->key)]; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == q) {
            *pp = q->next;
            free(q);
            return;
        }
    }
}

static void
keyq_append(keyq_t *q, lock_waiter_t *w)
{
    w->q = q;
    w->next = NULL;
    w->prev = q->tail;
    if (q->tail != NULL) {
        q->tail->next = w;
    } else {
        q->head = w;
    }
    q->tail = w;
}

static void
keyq_remove(keyq_t *q, lock_waiter_t *w)
{
    if (w->prev != NULL) {
        w->prev->next = w->next;
    } else {
        q->head = w->next;
    }
    if (w->next != NULL) {
        w->next->prev = w->prev;
    } else {
        q->tail = w->prev;
    }
    w->next = w->prev = NULL;
}

static void attempt_next(keyq_t *q);
static void expiry_fired(void *arg);

/* Makes the head of q try (again). Caller holds mu. */
static void
keyq_kick(keyq_t *q)
{
    if (q->attempting) {
        q->rewake = true; /* the attempt in flight tries once more when it returns */
        return;
    }
    if (q->head == NULL) {
        return;
    }
    q->attempting = true;
    attempt_next(q);
}

/* The holder's lease ends in holder_ms: try again then, whatever pub/sub says. */
static void
keyq_arm_expiry(keyq_t *q, int64_t holder_ms)
{
    int64_t delay = (holder_ms > 0 ? holder_ms : 0) + EXPIRY_SLACK_MS;
    int64_t due = svc_now_mono_ms() + delay;

    if (q->expiry_live) {
        if (q->expiry_due_ms <= due + EXPIRY_SLACK_MS) {
            return;
        }
        if (!svc_timer_cancel(q->svc->timers, &q->expiry)) {
            return; /* firing now: it will kick anyway */
        }
    }
    q->expiry_live = true;
    q->expiry_due_ms = due;
    svc_timer_start(q->svc->timers, &q->expiry, delay, expiry_fired, q);
}

static void
expiry_fired(void *arg)
{
    keyq_t *q = arg;
    lock_service_t *svc = q->svc;

    pthread_mutex_lock(&svc->mu);
    q->expiry_live = false;
    keyq_kick(q);
    keyq_maybe_free(q);
    pthread_mutex_unlock(&svc->mu);
}

/* ---------- ending a waiter ---------- */

static void
reply_granted(svc_call_t *call, const char *token, int64_t fence, int64_t expires_at_ms)
{
    Lock__V1__AcquireResponse resp = LOCK__V1__ACQUIRE_RESPONSE__INIT;

    resp.token = (char *)token;
    resp.fence = fence;
    resp.expires_at_ms = expires_at_ms;
    svc_call_reply(call, &resp.base);
}

/* Carries out w's outcome and ends its call. Caller owns the end and does not hold mu. */
static void
waiter_end(lock_waiter_t *w)
{
    lock_service_t *svc = w->svc;

    if (w->outcome.code == SVC_OK && !w->cancelled) {
        reply_granted(w->call, w->token, w->fence, w->expires_at_ms);
        return;
    }
    if (w->outcome.code == SVC_OK) { /* granted to a client that has gone: give it back */
        lock_store_release_async(svc->store, w->key, w->token, false, NULL, NULL);
        svc_err_set(&w->outcome, SVC_CANCELLED, "cancelled");
    } else if (w->registered) {
        lock_store_waiter_remove_async(svc->store, w->key, w->id);
    }
    svc_call_fail(w->call, &w->outcome);
}

/*
 * Caller holds mu and has set w's outcome and taken it off its queue. Returns
 * true when the caller must end the call (after unlocking), false when the
 * wait timer already fired and its callback will.
 */
static bool
waiter_decided(lock_waiter_t *w)
{
    w->state = W_DONE;
    w->has_outcome = true;
    if (!w->timer_live) {
        return true;
    }
    if (svc_timer_cancel(w->svc->timers, &w->timer)) {
        w->timer_live = false;
        return true;
    }
    return false;
}

static void
waiter_timed_out(void *arg)
{
    lock_waiter_t *w = arg;
    lock_service_t *svc = w->svc;
    keyq_t *q = w->q;

    pthread_mutex_lock(&svc->mu);
    w->timer_live = false;
    if (w->has_outcome) { /* decided while we were firing: we end it */
        pthread_mutex_unlock(&svc->mu);
        waiter_end(w);
        return;
    }
    if (w->state == W_ATTEMPTING) { /* the attempt in flight ends it */
        w->timed_out = true;
        pthread_mutex_unlock(&svc->mu);
        return;
    }
    keyq_remove(q, w);
    svc_err_set(&w->outcome, SVC_ABORTED, "lock %s is still held after %lld ms", w->key,
                (long long)w->wait_ms);
    w->state = W_DONE;
    w->has_outcome = true;
    keyq_maybe_free(q);
    pthread_mutex_unlock(&svc->mu);
    waiter_end(w);
}

static void
waiter_cancelled(svc_call_t *call, void *arg)
{
    lock_waiter_t *w = arg;
    lock_service_t *svc = w->svc;
    bool end;

    (void)call;
    pthread_mutex_lock(&svc->mu);
    if (w->has_outcome) {
        pthread_mutex_unlock(&svc->mu);
        return;
    }
    if (w->state == W_ATTEMPTING) {
        w->cancelled = true;
        pthread_mutex_unlock(&svc->mu);
        return;
    }
    keyq_remove(w->q, w);
    svc_err_set(&w->outcome, SVC_CANCELLED, "cancelled while waiting for %s", w->key);
    end = waiter_decided(w);
    keyq_maybe_free(w->q);
    pthread_mutex_unlock(&svc->mu);
    if (end) {
        waiter_end(w);
    }
}

static void attempt_done(const lock_store_result_t *res, const svc_err_t *err, void *arg);

/*
 * Sends the head of q's try. Caller holds mu and has set q->attempting, which
 * keeps q alive until attempt_done; the head's W_ATTEMPTING keeps it alive too.
 */
static void
attempt_next(keyq_t *q)
{
    lock_waiter_t *w = q->head;

    if (w == NULL) {
        q->attempting = false;
        return;
    }
    q->rewake = false;
    w->state = W_ATTEMPTING;
    lock_store_new_token(w->token);
    lock_store_acquire_async(q->svc->store, q->key, w->token, w->owner, w->lease_ms,
                             svc_now_unix_ms() * 1000, w->id, w->wait_until_ms, attempt_done, w);
}

/* The head's try came back (on the Redis thread). */
static void
attempt_done(const lock_store_result_t *res, const svc_err_t *err, void *arg)
{
    lock_waiter_t *w = arg;
    lock_service_t *svc = w->svc;
    keyq_t *q = w->q;
    bool granted = err->code == SVC_OK && res->acquire.granted, end = false;

    pthread_mutex_lock(&svc->mu);
    w->registered = true;
    if (err->code == SVC_OK && !granted && !w->timed_out && !w->cancelled) {
        w->state = W_PARKED; /* still held: wait for a release or the lease's end */
        keyq_arm_expiry(q, res->acquire.holder_ms);
    } else {
        if (err->code != SVC_OK) {
            w->outcome = *err;
        } else if (granted) {
            svc_err_clear(&w->outcome);
            w->fence = res->acquire.fence;
            w->expires_at_ms = svc_now_unix_ms() + w->lease_ms;
        } else if (w->timed_out) {
            svc_err_set(&w->outcome, SVC_ABORTED, "lock %s is still held after %lld ms", w->key,
                        (long long)w->wait_ms);
        } else {
            svc_err_set(&w->outcome, SVC_CANCELLED, "cancelled while waiting for %s", w->key);
        }
        keyq_remove(q, w);
        end = waiter_decided(w); /* a timer that fired and left the end to us is not live */
        if (err->code == SVC_OK && !granted && q->head != NULL) {
            keyq_arm_expiry(q, res->acquire.holder_ms);
        }
        if (granted && q->head != NULL) {
            keyq_arm_expiry(q, w->lease_ms); /* the others wait for this lease at most */
        }
    }
    if (q->rewake || (!granted && err->code != SVC_OK)) {
        attempt_next(q); /* asked for another try, or the next waiter should hear the error */
    } else {
        q->attempting = false;
    }
    keyq_maybe_free(q);
    pthread_mutex_unlock(&svc->mu);
    if (end) {
        waiter_end(w);
    }
}

/* A release seen on the channel (key), or a resubscription (NULL: everyone re-checks). */
static void
on_release(const char *key, void *arg)
{
    lock_service_t *svc = arg;

    pthread_mutex_lock(&svc->mu);
    if (key != NULL) {
        keyq_t *q = keyq_get(svc, key, false);
        if (q != NULL) {
            keyq_kick(q);
        }
    } else {
        for (int b = 0; b < N_BUCKETS; b++) {
            for (keyq_t *q = svc->buckets[b]; q != NULL; q = q->next) {
                keyq_kick(q);
            }
        }
    }
    pthread_mutex_unlock(&svc->mu);
}

/* ---------- handlers ---------- */

static bool
check_lease(const lock_service_t *svc, int64_t lease_ms, int64_t *out, svc_err_t *err)
{
    if (!svc_validate_range("lease_ms", lease_ms, 0, svc->limits.max_lease_ms, err)) {
        return false;
    }
    *out = lease_ms == 0 ? svc->limits.default_lease_ms : lease_ms;
    return true;
}

static bool
check_token(const char *token, svc_err_t *err)
{
    return svc_validate_text("token", token, 1, TOKEN_MAX, err);
}

/* An Acquire in progress; it lives in the call's arena. */
typedef struct {
    lock_service_t *svc;
    svc_call_t *call;
    const Lock__V1__AcquireRequest *req;
    int64_t lease_ms;
    char token[LOCK_TOKEN_LEN + 1];
} acquire_ctx_t;

static void
park(acquire_ctx_t *ctx)
{
    lock_service_t *svc = ctx->svc;
    svc_call_t *call = ctx->call;
    const Lock__V1__AcquireRequest *req = ctx->req;
    lock_waiter_t *w = svc_call_alloc(call, sizeof(*w));
    keyq_t *q;

    if (w == NULL) {
        return;
    }
    w->svc = svc;
    w->call = call;
    w->key = req->key;
    w->owner = req->owner != NULL ? req->owner : "";
    w->lease_ms = ctx->lease_ms;
    w->wait_ms = req->wait_ms;
    w->wait_until_ms = svc_now_unix_ms() + req->wait_ms;
    w->timer.heap_index = -1;
    lock_store_new_token(w->id);

    pthread_mutex_lock(&svc->mu);
    q = keyq_get(svc, req->key, true);
    if (q == NULL) {
        pthread_mutex_unlock(&svc->mu);
        svc_call_fail_oom(call);
        return;
    }
    keyq_append(q, w);
    if (q->head != w) {
        /*
         * Only a queue's head tries the lock, and its try counts it for
         * GetLock; one behind others is counted now. Whether it was queued
         * behind others up front or lost a first try in a crowd does not
         * matter: until now GetLock saw only the heads of such crowds.
         */
        lock_store_waiter_add_async(svc->store, req->key, w->id, w->wait_until_ms);
        w->registered = true;
    }
    w->state = W_PARKED;
    w->timer_live = true;
    svc_timer_start(svc->timers, &w->timer, req->wait_ms, waiter_timed_out, w);
    svc_call_on_cancel(call, waiter_cancelled, w);
    if (q->head == w) {
        keyq_kick(q); /* the holder may have released since the first try */
    }
    pthread_mutex_unlock(&svc->mu);
}

/* The first, direct try came back (Redis thread). */
static void
first_try_done(const lock_store_result_t *res, const svc_err_t *err, void *arg)
{
    acquire_ctx_t *ctx = arg;
    svc_err_t refused;

    if (err->code != SVC_OK) {
        svc_call_fail(ctx->call, err);
    } else if (res->acquire.granted && svc_call_cancelled(ctx->call)) {
        /* The client is gone: give the lock back instead of leaving it to its lease. */
        lock_store_release_async(ctx->svc->store, ctx->req->key, ctx->token, false, NULL, NULL);
        svc_err_set(&refused, SVC_CANCELLED, "cancelled");
        svc_call_fail(ctx->call, &refused);
    } else if (res->acquire.granted) {
        reply_granted(ctx->call, ctx->token, res->acquire.fence, svc_now_unix_ms() + ctx->lease_ms);
    } else if (ctx->req->wait_ms == 0) {
        svc_err_set(&refused, SVC_ABORTED, "lock %s is held", ctx->req->key);
        svc_call_fail(ctx->call, &refused);
    } else {
        park(ctx);
    }
}

static void
handle_acquire(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Lock__V1__AcquireRequest *req = (const void *)msg;
    lock_service_t *svc = user;
    acquire_ctx_t *ctx;
    int64_t lease_ms;
    svc_err_t err;
    keyq_t *q;
    bool queued;

    if (!svc_validate_key("key", req->key, &err) ||
        !check_lease(svc, req->lease_ms, &lease_ms, &err) ||
        !svc_validate_range("wait_ms", req->wait_ms, 0, svc->limits.max_wait_ms, &err) ||
        !svc_validate_text("owner", req->owner, 0, LOCK_OWNER_MAX, &err)) {
        svc_call_fail(call, &err);
        return;
    }
    ctx = svc_call_alloc(call, sizeof(*ctx));
    if (ctx == NULL) {
        return;
    }
    ctx->svc = svc;
    ctx->call = call;
    ctx->req = req;
    ctx->lease_ms = lease_ms;
    pthread_mutex_lock(&svc->mu);
    q = keyq_get(svc, req->key, false);
    queued = q != NULL && q->head != NULL;
    pthread_mutex_unlock(&svc->mu);

    if (!queued) { /* nobody waits here: try at once */
        lock_store_new_token(ctx->token);
        lock_store_acquire_async(svc->store, req->key, ctx->token, req->owner ? req->owner : "",
                                 lease_ms, svc_now_unix_ms() * 1000, NULL, 0, first_try_done, ctx);
    } else if (req->wait_ms == 0) { /* others wait already: do not jump the queue */
        svc_err_set(&err, SVC_ABORTED, "lock %s is held", req->key);
        svc_call_fail(call, &err);
    } else {
        park(ctx);
    }
}

typedef struct {
    lock_service_t *svc;
    svc_call_t *call;
    char key[SVC_KEY_MAX + 1];
} release_ctx_t;

static void
release_done(const lock_store_result_t *res, const svc_err_t *err, void *arg)
{
    release_ctx_t *ctx = arg;
    Lock__V1__ReleaseResponse resp = LOCK__V1__RELEASE_RESPONSE__INIT;
    lock_service_t *svc = ctx->svc;
    keyq_t *q;

    (void)res;
    if (err->code != SVC_OK) {
        svc_call_fail(ctx->call, err);
        return;
    }
    /*
     * Hand over to a waiter parked here without waiting for the channel's
     * echo. Before the reply: once the last call has ended, shutdown may free
     * svc while this thread would still be about to lock svc->mu.
     */
    pthread_mutex_lock(&svc->mu);
    q = keyq_get(svc, ctx->key, false);
    if (q != NULL) {
        keyq_kick(q);
    }
    pthread_mutex_unlock(&svc->mu);
    svc_call_reply(ctx->call, &resp.base);
}

static void
handle_release(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Lock__V1__ReleaseRequest *req = (const void *)msg;
    lock_service_t *svc = user;
    release_ctx_t *ctx;
    svc_err_t err;

    if (!svc_validate_key("key", req->key, &err) || !check_token(req->token, &err)) {
        svc_call_fail(call, &err);
        return;
    }
    ctx = svc_call_alloc(call, sizeof(*ctx));
    if (ctx == NULL) {
        return;
    }
    ctx->svc = svc;
    ctx->call = call;
    snprintf(ctx->key, sizeof(ctx->key), "%s", req->key);
    lock_store_release_async(svc->store, req->key, req->token, true, release_done, ctx);
}

typedef struct {
    svc_call_t *call;
    int64_t lease_ms;
    int64_t now_ms;
} simple_ctx_t;

static void
extend_done(const lock_store_result_t *res, const svc_err_t *err, void *arg)
{
    simple_ctx_t *ctx = arg;
    Lock__V1__ExtendResponse resp = LOCK__V1__EXTEND_RESPONSE__INIT;

    (void)res;
    if (err->code != SVC_OK) {
        svc_call_fail(ctx->call, err);
        return;
    }
    resp.expires_at_ms = svc_now_unix_ms() + ctx->lease_ms;
    svc_call_reply(ctx->call, &resp.base);
}

static simple_ctx_t *
simple_ctx(svc_call_t *call)
{
    simple_ctx_t *ctx = svc_call_alloc(call, sizeof(*ctx));

    if (ctx == NULL) {
        return NULL;
    }
    ctx->call = call;
    ctx->now_ms = svc_now_unix_ms();
    return ctx;
}

static void
handle_extend(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Lock__V1__ExtendRequest *req = (const void *)msg;
    lock_service_t *svc = user;
    simple_ctx_t *ctx;
    int64_t lease_ms;
    svc_err_t err;

    if (!svc_validate_key("key", req->key, &err) || !check_token(req->token, &err) ||
        !check_lease(svc, req->lease_ms, &lease_ms, &err)) {
        svc_call_fail(call, &err);
        return;
    }
    if ((ctx = simple_ctx(call)) != NULL) {
        ctx->lease_ms = lease_ms;
        lock_store_extend_async(svc->store, req->key, req->token, lease_ms, extend_done, ctx);
    }
}

static void
get_lock_done(const lock_store_result_t *res, const svc_err_t *err, void *arg)
{
    simple_ctx_t *ctx = arg;
    Lock__V1__GetLockResponse resp = LOCK__V1__GET_LOCK_RESPONSE__INIT;
    const lock_info_t *info = &res->info;

    if (err->code != SVC_OK) {
        svc_call_fail(ctx->call, err);
        return;
    }
    resp.held = info->held;
    resp.owner = (char *)info->owner;
    resp.fence = info->fence;
    resp.expires_at_ms = info->held && info->ttl_ms >= 0 ? ctx->now_ms + info->ttl_ms : 0;
    resp.waiters = info->waiters;
    svc_call_reply(ctx->call, &resp.base);
}

static void
handle_get_lock(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Lock__V1__GetLockRequest *req = (const void *)msg;
    lock_service_t *svc = user;
    simple_ctx_t *ctx;
    svc_err_t err;

    if (!svc_validate_key("key", req->key, &err)) {
        svc_call_fail(call, &err);
        return;
    }
    if ((ctx = simple_ctx(call)) != NULL) {
        lock_store_get_async(svc->store, req->key, ctx->now_ms, get_lock_done, ctx);
    }
}

/* ---------- lifecycle ---------- */

lock_service_t *
lock_service_create(svc_server_t *server, lock_store_t *store, const lock_limits_t *limits,
                    svc_err_t *err)
{
    lock_service_t *svc = calloc(1, sizeof(*svc));

    if (svc == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    svc->server = server;
    svc->timers = svc_server_timers(server);
    svc->store = store;
    svc->limits = *limits;
    pthread_mutex_init(&svc->mu, NULL);
    return svc;
}

int
lock_service_register(lock_service_t *svc, svc_err_t *err)
{
    static const svc_handler_t handlers[] = {
        /* None of them blocks: they run on the completion-queue thread. */
        {"Acquire", SVC_METHOD_UNARY, handle_acquire, NULL, 1},
        {"Release", SVC_METHOD_UNARY, handle_release, NULL, 1},
        {"Extend", SVC_METHOD_UNARY, handle_extend, NULL, 1},
        {"GetLock", SVC_METHOD_UNARY, handle_get_lock, NULL, 1},
    };

    if (svc_server_add_service(svc->server, &lock__v1__lock_service__descriptor, handlers,
                               sizeof(handlers) / sizeof(handlers[0]), svc, err) != 0) {
        return -1;
    }
    return lock_store_subscribe(svc->store, on_release, svc, err);
}

void
lock_service_stop(lock_service_t *svc)
{
    lock_store_unsubscribe(svc->store);
}

void
lock_service_destroy(lock_service_t *svc)
{
    if (svc == NULL) {
        return;
    }
    /* The server is stopped: every waiter ended with its call. Only empty queues are left. */
    for (int b = 0; b < N_BUCKETS; b++) {
        keyq_t *q = svc->buckets[b];
        while (q != NULL) {
            keyq_t *next = q->next;
            free(q);
            q = next;
        }
    }
    pthread_mutex_destroy(&svc->mu);
    free(svc);
}
