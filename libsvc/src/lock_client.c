/*
 * lock_client.c: lock.v1.LockService calls for the services built on libsvc.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>

#include "lock/v1/lock.pb-c.h"
#include "svc/lock_client.h"
#include "svc/log.h"
#include "svc/timer.h"

#define CALL_MARGIN_MS 2000 /* beyond wait_ms, for the round trip */

int
svc_lock_acquire(svc_client_t *lock_svc, const char *key, const svc_lock_opts_t *opts,
                 svc_lock_t *out, svc_err_t *err)
{
    Lock__V1__AcquireRequest req = LOCK__V1__ACQUIRE_REQUEST__INIT;
    Lock__V1__AcquireResponse *resp;
    svc_arena_t *arena = svc_arena_create();
    svc_call_opts_t copts = {0};
    bool caller_deadline = false;
    int rc;

    if (arena == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    req.key = (char *)key;
    req.owner = (char *)(opts->owner != NULL ? opts->owner : "");
    req.lease_ms = opts->lease_ms;
    req.wait_ms = opts->wait_ms;
    copts.parent = opts->parent;
    copts.request_id = opts->request_id;
    copts.timeout_ms = opts->wait_ms + CALL_MARGIN_MS;
    if (opts->deadline_ms > 0) {
        int64_t left = opts->deadline_ms - svc_now_unix_ms();
        if (left <= 0) {
            svc_arena_destroy(arena);
            svc_err_set(err, SVC_DEADLINE_EXCEEDED,
                        "deadline exceeded before lock %s was asked for", key);
            return -1;
        }
        caller_deadline = left < copts.timeout_ms;
        copts.timeout_ms = caller_deadline ? left : copts.timeout_ms;
    }
    rc = svc_client_unary(lock_svc, "/lock.v1.LockService/Acquire", &req.base,
                          &lock__v1__acquire_response__descriptor, arena,
                          (ProtobufCMessage **)&resp, &copts, err);
    if (rc == 0) {
        snprintf(out->key, sizeof(out->key), "%s", key);
        snprintf(out->token, sizeof(out->token), "%s", resp->token);
        out->fence = resp->fence;
        out->expires_at_ms = resp->expires_at_ms;
    } else if (err->code == SVC_DEADLINE_EXCEEDED && opts->parent == NULL && !caller_deadline) {
        /* Our own margin ran out: to the caller this is a lock that did not come. */
        svc_err_set(err, SVC_ABORTED, "lock %s not obtained in time", key);
    }
    svc_arena_destroy(arena);
    return rc;
}

int
svc_lock_release(svc_client_t *lock_svc, const svc_lock_t *lock, svc_call_t *parent, svc_err_t *err)
{
    Lock__V1__ReleaseRequest req = LOCK__V1__RELEASE_REQUEST__INIT;
    ProtobufCMessage *resp;
    svc_arena_t *arena = svc_arena_create();
    svc_call_opts_t copts = {.parent = parent, .timeout_ms = CALL_MARGIN_MS};
    int rc;

    if (arena == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    req.key = (char *)lock->key;
    req.token = (char *)lock->token;
    rc = svc_client_unary(lock_svc, "/lock.v1.LockService/Release", &req.base,
                          &lock__v1__release_response__descriptor, arena, &resp, &copts, err);
    svc_arena_destroy(arena);
    return rc;
}

int
svc_lock_extend(svc_client_t *lock_svc, svc_lock_t *lock, int64_t lease_ms, svc_call_t *parent,
                svc_err_t *err)
{
    Lock__V1__ExtendRequest req = LOCK__V1__EXTEND_REQUEST__INIT;
    Lock__V1__ExtendResponse *resp;
    svc_arena_t *arena = svc_arena_create();
    svc_call_opts_t copts = {.parent = parent, .timeout_ms = CALL_MARGIN_MS};
    int rc;

    if (arena == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    req.key = (char *)lock->key;
    req.token = (char *)lock->token;
    req.lease_ms = lease_ms;
    rc = svc_client_unary(lock_svc, "/lock.v1.LockService/Extend", &req.base,
                          &lock__v1__extend_response__descriptor, arena, (ProtobufCMessage **)&resp,
                          &copts, err);
    if (rc == 0) {
        lock->expires_at_ms = resp->expires_at_ms;
    }
    svc_arena_destroy(arena);
    return rc;
}

int
svc_lock_with(svc_client_t *lock_svc, const char *key, const svc_lock_opts_t *opts,
              svc_locked_fn fn, void *arg, svc_err_t *err)
{
    svc_lock_t lock;
    svc_err_t release_err;
    int rc;

    if (svc_lock_acquire(lock_svc, key, opts, &lock, err) != 0) {
        return -1;
    }
    rc = fn(&lock, arg, err);
    if (svc_lock_release(lock_svc, &lock, opts->parent, &release_err) != 0) {
        svc_logf(SVC_LOG_WARN, "release of %s (fence %lld) failed: %s", key, (long long)lock.fence,
                 release_err.msg);
    }
    return rc;
}
