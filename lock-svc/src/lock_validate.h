/*
 * lock_validate.h: the argument checks of every lock.v1.LockService request,
 * apart from the handlers so that they run (and are fuzzed, tests/fuzz)
 * without Redis or a server. Each returns true when the request is good and
 * writes the values the handler uses (a lease of 0 becomes the default);
 * otherwise err is INVALID_ARGUMENT naming the field. Pure: no I/O, no
 * shared state.
 */
#ifndef LOCK_VALIDATE_H
#define LOCK_VALIDATE_H

#include <stdbool.h>
#include <stdint.h>

#include "lock/v1/lock.pb-c.h"
#include "lock_service.h"
#include "svc/err.h"

#define LOCK_TOKEN_TEXT_MAX 64  /* a lock token as a client may send it */
#define LOCK_TICKET_TEXT_MAX 64 /* a semaphore ticket as a client may send it */

bool lock_validate_acquire(const lock_limits_t *lim, const Lock__V1__AcquireRequest *req,
                           int64_t *lease_ms, svc_err_t *err);
bool lock_validate_release(const Lock__V1__ReleaseRequest *req, svc_err_t *err);
bool lock_validate_extend(const lock_limits_t *lim, const Lock__V1__ExtendRequest *req,
                          int64_t *lease_ms, svc_err_t *err);
bool lock_validate_get_lock(const Lock__V1__GetLockRequest *req, svc_err_t *err);
bool lock_validate_enter_semaphore(const lock_limits_t *lim,
                                   const Lock__V1__EnterSemaphoreRequest *req, int64_t *lease_ms,
                                   int64_t *ticket_ttl_ms, svc_err_t *err);
bool lock_validate_leave_semaphore(const Lock__V1__LeaveSemaphoreRequest *req, svc_err_t *err);
bool lock_validate_extend_semaphore(const lock_limits_t *lim,
                                    const Lock__V1__ExtendSemaphoreRequest *req, int64_t *lease_ms,
                                    svc_err_t *err);
bool lock_validate_get_semaphore(const Lock__V1__GetSemaphoreRequest *req, svc_err_t *err);
bool lock_validate_watch_semaphore(const Lock__V1__WatchSemaphoreRequest *req, svc_err_t *err);

/*
 * A semaphore version as Redis spells a stream id, "<ms>-<seq>": two
 * decimal numbers without sign, space or leading zero that fit 64 bits. True
 * with its parts; anything else (" 1-2", "1--2", "01-2") is false, so that
 * what is accepted is exactly what Redis sent.
 */
bool lock_sem_version_parse(const char *text, uint64_t *ms, uint64_t *seq);

#endif
