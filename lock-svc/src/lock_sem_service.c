/*
 * lock_sem_service.c: the semaphore methods of lock.v1.LockService:
 * unpack, validate, call lock_sem_store, map the status. Nothing here
 * blocks: Redis answers on a lane's thread, which ends the call. Every
 * answer also tells lock_sem the semaphore's next lease or place end, for
 * its timer. WatchSemaphore is in lock_sem_watch.c.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lock/v1/lock.pb-c.h"
#include "lock_sem.h"
#include "lock_sem_internal.h"
#include "lock_sem_store.h"
#include "lock_validate.h"

/* A unary semaphore call on its way; it lives in the call's arena. */
typedef struct {
    lock_sem_t *sem;
    svc_call_t *call;
    char ticket[LOCK_TOKEN_LEN + 1];
} sem_ctx_t;

static sem_ctx_t *
sem_ctx(svc_call_t *call, void *user)
{
    sem_ctx_t *ctx = svc_call_alloc(call, sizeof(*ctx));

    if (ctx != NULL) {
        ctx->sem = lock_service_sem(user);
        ctx->call = call;
    }
    return ctx;
}

/* Common to every answer: the timer hears of the next end. False when err ended the call. */
static bool
answered(sem_ctx_t *ctx, const char *name, const lock_sem_result_t *res, const svc_err_t *err)
{
    if (res != NULL) {
        lock_sem_due(ctx->sem, name, res->next_due_ms);
    }
    if (err->code != SVC_OK) {
        svc_call_fail(ctx->call, err);
        return false;
    }
    return true;
}

/* ---------- EnterSemaphore ---------- */

static void
enter_done(const char *name, const lock_sem_result_t *res, const svc_err_t *err, void *arg)
{
    sem_ctx_t *ctx = arg;
    Lock__V1__EnterSemaphoreResponse resp = LOCK__V1__ENTER_SEMAPHORE_RESPONSE__INIT;

    if (!answered(ctx, name, res, err)) {
        return;
    }
    resp.ticket = (char *)res->ticket;
    resp.seq = res->seq;
    resp.position = res->position;
    resp.expires_at_ms = res->expires_at_ms;
    resp.version = (char *)res->version;
    svc_call_reply(ctx->call, &resp.base);
}

void
lock_sem_handle_enter(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Lock__V1__EnterSemaphoreRequest *req = (const void *)msg;
    lock_sem_t *sem = lock_service_sem(user);
    int64_t lease_ms, ttl_ms;
    sem_ctx_t *ctx;
    svc_err_t err;

    if (!lock_validate_enter_semaphore(sem->limits, req, &lease_ms, &ttl_ms, &err) ||
        !lock_service_check_name(user, call, "name", req->name, &err)) {
        svc_call_fail(call, &err);
        return;
    }
    if ((ctx = sem_ctx(call, user)) == NULL) {
        return;
    }
    lock_store_new_token(ctx->ticket);
    lock_sem_store_enter_async(sem->store, req->name, ctx->ticket, req->owner, req->limit, lease_ms,
                               ttl_ms, enter_done, ctx);
}

/* ---------- LeaveSemaphore ---------- */

static void
leave_done(const char *name, const lock_sem_result_t *res, const svc_err_t *err, void *arg)
{
    sem_ctx_t *ctx = arg;
    Lock__V1__LeaveSemaphoreResponse resp = LOCK__V1__LEAVE_SEMAPHORE_RESPONSE__INIT;

    if (answered(ctx, name, res, err)) {
        svc_call_reply(ctx->call, &resp.base);
    }
}

void
lock_sem_handle_leave(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Lock__V1__LeaveSemaphoreRequest *req = (const void *)msg;
    lock_sem_t *sem = lock_service_sem(user);
    sem_ctx_t *ctx;
    svc_err_t err;

    if (!lock_validate_leave_semaphore(req, &err) ||
        !lock_service_check_name(user, call, "name", req->name, &err)) {
        svc_call_fail(call, &err);
        return;
    }
    if ((ctx = sem_ctx(call, user)) != NULL) {
        lock_sem_store_leave_async(sem->store, req->name, req->ticket, leave_done, ctx);
    }
}

/* ---------- ExtendSemaphore ---------- */

static void
extend_done(const char *name, const lock_sem_result_t *res, const svc_err_t *err, void *arg)
{
    sem_ctx_t *ctx = arg;
    Lock__V1__ExtendSemaphoreResponse resp = LOCK__V1__EXTEND_SEMAPHORE_RESPONSE__INIT;

    if (!answered(ctx, name, res, err)) {
        return;
    }
    resp.position = res->position;
    resp.expires_at_ms = res->expires_at_ms;
    svc_call_reply(ctx->call, &resp.base);
}

void
lock_sem_handle_extend(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Lock__V1__ExtendSemaphoreRequest *req = (const void *)msg;
    lock_sem_t *sem = lock_service_sem(user);
    int64_t lease_ms;
    sem_ctx_t *ctx;
    svc_err_t err;

    if (!lock_validate_extend_semaphore(sem->limits, req, &lease_ms, &err) ||
        !lock_service_check_name(user, call, "name", req->name, &err)) {
        svc_call_fail(call, &err);
        return;
    }
    if ((ctx = sem_ctx(call, user)) != NULL) {
        lock_sem_store_extend_async(sem->store, req->name, req->ticket, lease_ms, extend_done, ctx);
    }
}

/* ---------- GetSemaphore ---------- */

static void
get_done(const char *name, const lock_sem_result_t *res, const svc_err_t *err, void *arg)
{
    sem_ctx_t *ctx = arg;
    Lock__V1__GetSemaphoreResponse resp = LOCK__V1__GET_SEMAPHORE_RESPONSE__INIT;

    if (!answered(ctx, name, res, err)) {
        return;
    }
    resp.limit = (int32_t)res->limit;
    resp.holders = res->holders;
    resp.waiting = res->waiting;
    resp.position = res->position >= 0 ? res->position : 0;
    resp.expires_at_ms = res->position >= 0 ? res->expires_at_ms : 0;
    resp.version = (char *)res->version;
    svc_call_reply(ctx->call, &resp.base);
}

void
lock_sem_handle_get(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Lock__V1__GetSemaphoreRequest *req = (const void *)msg;
    lock_sem_t *sem = lock_service_sem(user);
    sem_ctx_t *ctx;
    svc_err_t err;

    if (!lock_validate_get_semaphore(req, &err) ||
        !lock_service_check_name(user, call, "name", req->name, &err)) {
        svc_call_fail(call, &err);
        return;
    }
    if ((ctx = sem_ctx(call, user)) != NULL) {
        lock_sem_store_get_async(sem->store, req->name, req->ticket, get_done, ctx);
    }
}
