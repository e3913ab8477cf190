/*
 * fuzz_lock_requests.c: every request of lock.v1.LockService, as bytes off
 * the wire: the first byte picks the method, the rest is decoded as its
 * request (fuzz_unpack) and, when it decodes, run through the method's own
 * validator (lock_validate.h) with lock-svc's default limits. A validator
 * says yes with sane values, or no with INVALID_ARGUMENT; a method without
 * one here stops the run.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "fuzz_common.h"
#include "lock/v1/lock.pb-c.h"
#include "lock_validate.h"

/* lock-svc's defaults (lock-svc/main.c). */
static const lock_limits_t limits = {
    .default_lease_ms = 10000,
    .max_lease_ms = 300000,
    .max_wait_ms = 60000,
    .max_sem_lease_ms = 86400000,
};

static void
check_key(const char *key)
{
    size_t n = strlen(key);

    FUZZ_CHECK(n >= 1 && n <= LOCK_KEY_MAX);
    FUZZ_CHECK(strspn(key, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789:_./-") ==
               n);
}

static void
check_lease(int64_t lease_ms, int64_t max)
{
    FUZZ_CHECK(lease_ms >= 1 && lease_ms <= max);
}

static void
run(const char *method, const ProtobufCMessage *msg)
{
    int64_t lease_ms = -1, ttl_ms = -1;
    svc_err_t err = {0};
    bool ok;

    if (strcmp(method, "Acquire") == 0) {
        const Lock__V1__AcquireRequest *r = (const void *)msg;
        ok = lock_validate_acquire(&limits, r, &lease_ms, &err);
        if (ok) {
            check_key(r->key);
            check_lease(lease_ms, limits.max_lease_ms);
            FUZZ_CHECK(r->wait_ms >= 0 && r->wait_ms <= limits.max_wait_ms);
            FUZZ_CHECK(strlen(r->owner) <= LOCK_OWNER_MAX);
        }
    } else if (strcmp(method, "Release") == 0) {
        const Lock__V1__ReleaseRequest *r = (const void *)msg;
        ok = lock_validate_release(r, &err);
        if (ok) {
            check_key(r->key);
            FUZZ_CHECK(strlen(r->token) >= 1 && strlen(r->token) <= LOCK_TOKEN_TEXT_MAX);
        }
    } else if (strcmp(method, "Extend") == 0) {
        const Lock__V1__ExtendRequest *r = (const void *)msg;
        ok = lock_validate_extend(&limits, r, &lease_ms, &err);
        if (ok) {
            check_key(r->key);
            check_lease(lease_ms, limits.max_lease_ms);
        }
    } else if (strcmp(method, "GetLock") == 0) {
        const Lock__V1__GetLockRequest *r = (const void *)msg;
        ok = lock_validate_get_lock(r, &err);
        if (ok) {
            check_key(r->key);
        }
    } else if (strcmp(method, "EnterSemaphore") == 0) {
        const Lock__V1__EnterSemaphoreRequest *r = (const void *)msg;
        ok = lock_validate_enter_semaphore(&limits, r, &lease_ms, &ttl_ms, &err);
        if (ok) {
            check_key(r->name);
            check_lease(lease_ms, limits.max_sem_lease_ms);
            check_lease(ttl_ms, limits.max_sem_lease_ms);
            FUZZ_CHECK(r->limit >= 1);
        }
    } else if (strcmp(method, "LeaveSemaphore") == 0) {
        const Lock__V1__LeaveSemaphoreRequest *r = (const void *)msg;
        ok = lock_validate_leave_semaphore(r, &err);
        if (ok) {
            check_key(r->name);
            FUZZ_CHECK(strlen(r->ticket) >= 1);
        }
    } else if (strcmp(method, "ExtendSemaphore") == 0) {
        const Lock__V1__ExtendSemaphoreRequest *r = (const void *)msg;
        ok = lock_validate_extend_semaphore(&limits, r, &lease_ms, &err);
        if (ok) {
            check_key(r->name);
            check_lease(lease_ms, limits.max_sem_lease_ms);
        }
    } else if (strcmp(method, "GetSemaphore") == 0) {
        const Lock__V1__GetSemaphoreRequest *r = (const void *)msg;
        ok = lock_validate_get_semaphore(r, &err);
        if (ok) {
            check_key(r->name);
        }
    } else if (strcmp(method, "WatchSemaphore") == 0) {
        const Lock__V1__WatchSemaphoreRequest *r = (const void *)msg;
        ok = lock_validate_watch_semaphore(r, &err);
        if (ok && r->after_version[0] != '\0') {
            /* Accepted only as Redis spells a stream id. */
            uint64_t ms, seq;
            char again[64];
            FUZZ_CHECK(lock_sem_version_parse(r->after_version, &ms, &seq));
            snprintf(again, sizeof(again), "%" PRIu64 "-%" PRIu64, ms, seq);
            FUZZ_CHECK(strcmp(again, r->after_version) == 0);
        }
    } else {
        fuzz_fail(method, __FILE__, __LINE__); /* a new RPC: give it its validator here */
    }
    fuzz_check_verdict(ok, &err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_requests(&lock__v1__lock_service__descriptor, data, size, run);
}
