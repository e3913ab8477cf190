/*
 * lock_waiters.h: Acquire calls parked in lock-svc while their token waits
 * in the key's line in Redis, and what answers them: a hand-off reported by
 * lock_store, their wait's end, or their client's cancellation. A parked
 * call holds no thread.
 */
#ifndef LOCK_WAITERS_H
#define LOCK_WAITERS_H

#include <stdint.h>

#include "lock_store.h"
#include "svc/server.h"

typedef struct lock_waiters lock_waiters_t;

/* Starts its own timer thread and a small pool for the timers' callbacks. */
lock_waiters_t *lock_waiters_create(lock_store_t *store, svc_err_t *err);

/*
 * Parks call's Acquire of key for at most wait_ms (> 0; shortened to the
 * call's deadline) and ends the call later, from whichever thread learns its
 * outcome: the grant, ABORTED when the wait is over, CANCELLED, or
 * UNAVAILABLE. owner must live as long as the call (it is in its arena).
 */
void lock_waiters_park(lock_waiters_t *ws, svc_call_t *call, const char *key, const char *owner,
                       int64_t lease_ms, int64_t wait_ms);

/* lock_store's event handler (arg: the lock_waiters_t). */
void lock_waiters_event(const lock_event_t *ev, void *arg);

/*
 * Stops the timers; events are ignored from now on. After the server has
 * shut down (no call is parked any more), before the store is destroyed.
 * NULL is a no-op.
 */
void lock_waiters_stop(lock_waiters_t *ws);
/* After lock_waiters_stop and after the store is gone. NULL is a no-op. */
void lock_waiters_destroy(lock_waiters_t *ws);

#endif
