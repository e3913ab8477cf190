/*
 * lock_service.c: lock.v1.LockService's handlers: unpack, validate, call the
 * store (or park the call with lock_waiters), map the status. Nothing here
 * blocks: handlers run on the completion-queue threads, Redis answers in
 * callbacks on lock_store's lane threads, and every call is ended from
 * whichever thread learns its outcome. There is no service-wide mutex: an
 * Acquire that does not wait and every other call touch no shared state in
 * lock-svc at all; waiters are kept per key (lock_waiters.c).
 *
 * How a lock moves (the details are at the top of lock_store.c): Acquire
 * with wait_ms 0 is one script (take it if free and nobody waits, else
 * ABORTED). Acquire with wait_ms > 0 puts its token in the key's line in
 * Redis, the same FIFO for every lock-svc instance, and parks the call.
 * Release is one script that also hands the lock to the head of the line:
 * the head's instance answers its parked Acquire as soon as it hears
 * (from the release's own reply when the head waits on the instance that
 * ran the release, else from a message on the head instance's channel).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lock/v1/lock.pb-c.h"
#include "lock_sem.h"
#include "lock_service.h"
#include "lock_validate.h"
#include "lock_waiters.h"
#include "svc/log.h"
#include "svc/metrics.h"

struct lock_service {
    svc_server_t *server;
    lock_store_t *store;
    lock_waiters_t *waiters;
    lock_sem_t *sem;
    lock_limits_t limits;
    const svc_auth_t *auth;
};

bool
lock_service_check_name(lock_service_t *svc, svc_call_t *call, const char *field, const char *name,
                        svc_err_t *err)
{
    static const char *const reserved[] = LOCK_RESERVED_PREFIXES;
    char what[LOCK_KEY_MAX + 32];

    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
        if (strncmp(name, reserved[i], strlen(reserved[i])) == 0) {
            snprintf(what, sizeof(what), "%s %s", field, name);
            return svc_auth_check_peer(svc->auth, call, what, err) == 0;
        }
    }
    return true;
}
/* ---------- Acquire ---------- */

/* An Acquire that does not wait; it lives in the call's arena. */
typedef struct {
    lock_service_t *svc;
    svc_call_t *call;
    const char *key;
    int64_t lease_ms;
    char token[LOCK_TOKEN_LEN + 1];
} acquire_ctx_t;

/* The one try came back (on a lane's thread). */
static void
try_done(const lock_store_result_t *res, const svc_err_t *err, void *arg)
{
    acquire_ctx_t *ctx = arg;
    Lock__V1__AcquireResponse resp = LOCK__V1__ACQUIRE_RESPONSE__INIT;
    svc_err_t refused;

    if (err->code != SVC_OK) {
        svc_call_fail(ctx->call, err);
    } else if (res->outcome != LOCK_GRANTED) {
        svc_err_set(&refused, SVC_ABORTED, "lock %s is held", ctx->key);
        svc_call_fail(ctx->call, &refused);
    } else if (svc_call_cancelled(ctx->call)) {
        /* The client is gone: give the lock back instead of leaving it to its lease. */
        lock_store_leave_async(ctx->svc->store, ctx->key, ctx->token, NULL, NULL);
        svc_err_set(&refused, SVC_CANCELLED, "cancelled");
        svc_call_fail(ctx->call, &refused);
    } else {
        static svc_metric_t *_Atomic grants;
        if (grants == NULL) {
            grants = svc_metric(SVC_METRIC_COUNTER, "lock_grants_total", "Locks granted.",
                                "mode=\"try\"");
        }
        svc_metric_add(grants, 1);
        resp.token = ctx->token;
        resp.fence = res->fence;
        resp.expires_at_ms = svc_now_unix_ms() + ctx->lease_ms;
        svc_call_reply(ctx->call, &resp.base);
    }
}

static void
handle_acquire(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Lock__V1__AcquireRequest *req = (const void *)msg;
    lock_service_t *svc = user;
    const char *owner = req->owner != NULL ? req->owner : "";
    acquire_ctx_t *ctx;
    int64_t lease_ms;
    svc_err_t err;

    if (!lock_validate_acquire(&svc->limits, req, &lease_ms, &err) ||
        !lock_service_check_name(svc, call, "key", req->key, &err)) {
        svc_call_fail(call, &err);
        return;
    }
    if (req->wait_ms > 0) {
        lock_waiters_park(svc->waiters, call, req->key, owner, lease_ms, req->wait_ms);
        return;
    }
    if ((ctx = svc_call_alloc(call, sizeof(*ctx))) == NULL) {
        return;
    }
    ctx->svc = svc;
    ctx->call = call;
    ctx->key = req->key;
    ctx->lease_ms = lease_ms;
    lock_store_new_token(ctx->token);
    lock_store_acquire_async(svc->store, req->key, ctx->token, owner, lease_ms, 0, true, try_done,
                             ctx);
}

/* ---------- Release, Extend, GetLock ---------- */

typedef struct {
    svc_call_t *call;
    int64_t lease_ms;
    int64_t now_ms;
} simple_ctx_t;

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

/* The hand-off to the next waiter, if any, was reported to lock_waiters already. */
static void
release_done(const lock_store_result_t *res, const svc_err_t *err, void *arg)
{
    simple_ctx_t *ctx = arg;
    Lock__V1__ReleaseResponse resp = LOCK__V1__RELEASE_RESPONSE__INIT;

    (void)res;
    if (err->code != SVC_OK) {
        svc_call_fail(ctx->call, err);
        return;
    }
    svc_call_reply(ctx->call, &resp.base);
}

static void
handle_release(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Lock__V1__ReleaseRequest *req = (const void *)msg;
    lock_service_t *svc = user;
    simple_ctx_t *ctx;
    svc_err_t err;

    if (!lock_validate_release(req, &err) ||
        !lock_service_check_name(svc, call, "key", req->key, &err)) {
        svc_call_fail(call, &err);
        return;
    }
    if ((ctx = simple_ctx(call)) != NULL) {
        lock_store_release_async(svc->store, req->key, req->token, release_done, ctx);
    }
}

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
    resp.expires_at_ms = ctx->now_ms + ctx->lease_ms;
    svc_call_reply(ctx->call, &resp.base);
}

static void
handle_extend(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Lock__V1__ExtendRequest *req = (const void *)msg;
    lock_service_t *svc = user;
    simple_ctx_t *ctx;
    int64_t lease_ms;
    svc_err_t err;

    if (!lock_validate_extend(&svc->limits, req, &lease_ms, &err) ||
        !lock_service_check_name(svc, call, "key", req->key, &err)) {
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

    if (!lock_validate_get_lock(req, &err) ||
        !lock_service_check_name(svc, call, "key", req->key, &err)) {
        svc_call_fail(call, &err);
        return;
    }
    if ((ctx = simple_ctx(call)) != NULL) {
        lock_store_get_async(svc->store, req->key, get_lock_done, ctx);
    }
}

/* ---------- lifecycle ---------- */

lock_service_t *
lock_service_create(svc_server_t *server, lock_store_t *store, const lock_limits_t *limits,
                    const svc_auth_t *auth, svc_err_t *err)
{
    lock_service_t *svc = calloc(1, sizeof(*svc));

    if (svc == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    svc->server = server;
    svc->store = store;
    svc->limits = *limits;
    svc->auth = auth;
    if ((svc->waiters = lock_waiters_create(store, err)) == NULL) {
        free(svc);
        return NULL;
    }
    if ((svc->sem = lock_sem_create(store, &svc->limits, err)) == NULL) {
        lock_waiters_stop(svc->waiters);
        lock_waiters_destroy(svc->waiters);
        free(svc);
        return NULL;
    }
    return svc;
}

lock_sem_t *
lock_service_sem(lock_service_t *svc)
{
    return svc->sem;
}

/*
 * The store's events: the waiters', and on a (re)connection the
 * semaphores' timers are set again from Redis.
 */
static void
service_event(const lock_event_t *ev, void *arg)
{
    lock_service_t *svc = arg;

    lock_waiters_event(ev, svc->waiters);
    if (ev->kind == LOCK_EV_RESYNC && ev->lane <= 0) {
        lock_sem_resync(svc->sem);
    }
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
        {"EnterSemaphore", SVC_METHOD_UNARY, lock_sem_handle_enter, NULL, 1},
        {"LeaveSemaphore", SVC_METHOD_UNARY, lock_sem_handle_leave, NULL, 1},
        {"ExtendSemaphore", SVC_METHOD_UNARY, lock_sem_handle_extend, NULL, 1},
        {"GetSemaphore", SVC_METHOD_UNARY, lock_sem_handle_get, NULL, 1},
        {"WatchSemaphore", SVC_METHOD_SERVER_STREAM, lock_sem_handle_watch, NULL, 1},
    };

    if (svc_server_add_service(svc->server, &lock__v1__lock_service__descriptor, handlers,
                               sizeof(handlers) / sizeof(handlers[0]), svc, err) != 0) {
        return -1;
    }
    return lock_store_start(svc->store, service_event, svc, err);
}

void
lock_service_drain(lock_service_t *svc)
{
    if (svc != NULL) {
        lock_sem_drain(svc->sem);
    }
}

void
lock_service_stop(lock_service_t *svc)
{
    if (svc != NULL) {
        lock_waiters_stop(svc->waiters);
        lock_sem_stop(svc->sem);
    }
}

void
lock_service_destroy(lock_service_t *svc)
{
    if (svc == NULL) {
        return;
    }
    lock_waiters_destroy(svc->waiters);
    lock_sem_destroy(svc->sem);
    free(svc);
}
