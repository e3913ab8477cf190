/*
 * lock_validate.c: the argument checks of lock.v1.LockService's requests
 * (see lock_validate.h). The handlers in lock_service.c, lock_sem_service.c
 * and lock_sem_watch.c call them first.
 */
#define _POSIX_C_SOURCE 200809L
#include <stddef.h>
#include <string.h>

#include "lock_sem_store.h"
#include "lock_validate.h"
#include "svc/validate.h"

/* A lease or TTL: 0 means the default, above max is INVALID_ARGUMENT. */
static bool
check_ms(const lock_limits_t *lim, const char *field, int64_t ms, int64_t max, int64_t *out,
         svc_err_t *err)
{
    if (!svc_validate_range(field, ms, 0, max, err)) {
        return false;
    }
    *out = ms == 0 ? lim->default_lease_ms : ms;
    return true;
}

static bool
check_token(const char *token, svc_err_t *err)
{
    return svc_validate_text("token", token, 1, LOCK_TOKEN_TEXT_MAX, err);
}

bool
lock_validate_acquire(const lock_limits_t *lim, const Lock__V1__AcquireRequest *req,
                      int64_t *lease_ms, svc_err_t *err)
{
    return svc_validate_key("key", req->key, err) &&
           check_ms(lim, "lease_ms", req->lease_ms, lim->max_lease_ms, lease_ms, err) &&
           svc_validate_range("wait_ms", req->wait_ms, 0, lim->max_wait_ms, err) &&
           svc_validate_text("owner", req->owner, 0, LOCK_OWNER_MAX, err);
}

bool
lock_validate_release(const Lock__V1__ReleaseRequest *req, svc_err_t *err)
{
    return svc_validate_key("key", req->key, err) && check_token(req->token, err);
}

bool
lock_validate_extend(const lock_limits_t *lim, const Lock__V1__ExtendRequest *req,
                     int64_t *lease_ms, svc_err_t *err)
{
    return svc_validate_key("key", req->key, err) && check_token(req->token, err) &&
           check_ms(lim, "lease_ms", req->lease_ms, lim->max_lease_ms, lease_ms, err);
}

bool
lock_validate_get_lock(const Lock__V1__GetLockRequest *req, svc_err_t *err)
{
    return svc_validate_key("key", req->key, err);
}

bool
lock_validate_enter_semaphore(const lock_limits_t *lim, const Lock__V1__EnterSemaphoreRequest *req,
                              int64_t *lease_ms, int64_t *ticket_ttl_ms, svc_err_t *err)
{
    return svc_validate_key("name", req->name, err) &&
           svc_validate_text("owner", req->owner, 1, LOCK_OWNER_MAX, err) &&
           svc_validate_range("limit", req->limit, 1, LOCK_SEM_LIMIT_MAX, err) &&
           check_ms(lim, "lease_ms", req->lease_ms, lim->max_sem_lease_ms, lease_ms, err) &&
           check_ms(lim, "ticket_ttl_ms", req->ticket_ttl_ms, lim->max_sem_lease_ms, ticket_ttl_ms,
                    err);
}

bool
lock_validate_leave_semaphore(const Lock__V1__LeaveSemaphoreRequest *req, svc_err_t *err)
{
    return svc_validate_key("name", req->name, err) &&
           svc_validate_text("ticket", req->ticket, 1, LOCK_TICKET_TEXT_MAX, err);
}

bool
lock_validate_extend_semaphore(const lock_limits_t *lim,
                               const Lock__V1__ExtendSemaphoreRequest *req, int64_t *lease_ms,
                               svc_err_t *err)
{
    return svc_validate_key("name", req->name, err) &&
           svc_validate_text("ticket", req->ticket, 1, LOCK_TICKET_TEXT_MAX, err) &&
           check_ms(lim, "lease_ms", req->lease_ms, lim->max_sem_lease_ms, lease_ms, err);
}

bool
lock_validate_get_semaphore(const Lock__V1__GetSemaphoreRequest *req, svc_err_t *err)
{
    return svc_validate_key("name", req->name, err) &&
           svc_validate_text("ticket", req->ticket, 0, LOCK_TICKET_TEXT_MAX, err);
}

bool
lock_validate_watch_semaphore(const Lock__V1__WatchSemaphoreRequest *req, svc_err_t *err)
{
    const char *after = req->after_version != NULL ? req->after_version : "";
    uint64_t ms, seq;

    if (!svc_validate_key("name", req->name, err)) {
        return false;
    }
    if (after[0] != '\0' && (strnlen(after, LOCK_SEM_VERSION_MAX) >= LOCK_SEM_VERSION_MAX ||
                             !lock_sem_version_parse(after, &ms, &seq))) {
        svc_err_set(err, SVC_INVALID_ARGUMENT, "after_version must be empty or a version");
        return false;
    }
    return true;
}

/* A decimal without sign, space or leading zero that fits 64 bits; advances *p past it. */
static bool
take_u64(const char **p, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;

    if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] >= '0' && s[1] <= '9')) {
        return false;
    }
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return false;
        }
        v = v * 10 + d;
    }
    *out = v;
    *p = s;
    return true;
}

bool
lock_sem_version_parse(const char *text, uint64_t *ms, uint64_t *seq)
{
    const char *p = text;

    return p != NULL && take_u64(&p, ms) && *p++ == '-' && take_u64(&p, seq) && *p == '\0';
}
