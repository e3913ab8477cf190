/*
 * lock_service.h: lock.v1.LockService's handlers. Transport only: parked
 * waiters live in lock_waiters, Redis in lock_store.
 */
#ifndef LOCK_SERVICE_H
#define LOCK_SERVICE_H

#include <stdbool.h>
#include <stdint.h>

#include "lock_store.h"
#include "svc/auth.h"
#include "svc/server.h"

typedef struct lock_service lock_service_t;

typedef struct {
    int64_t default_lease_ms; /* lease_ms 0 means this */
    int64_t max_lease_ms;
    int64_t max_wait_ms;
    /* A semaphore's permit or place: an admission to an on-sale lasts longer than a lock. */
    int64_t max_sem_lease_ms;
} lock_limits_t;

/*
 * The service takes no ownership of store, server or auth; they must outlive
 * it. auth (NULL or off: every name is open) reserves the names services use
 * (LOCK_RESERVED_PREFIXES) for trusted peers.
 */
lock_service_t *lock_service_create(svc_server_t *server, lock_store_t *store,
                                    const lock_limits_t *limits, const svc_auth_t *auth,
                                    svc_err_t *err);
/*
 * The names reservation-svc and balance-svc lock (seat:<schedule>:<n>,
 * account:<user>) and the waiting rooms' semaphores (room:<schedule>): a
 * stranger holding one with a long lease would block a hall or an account.
 */
#define LOCK_RESERVED_PREFIXES                                                                     \
    {                                                                                              \
        "seat:", "account:", "room:"                                                               \
    }
/*
 * A lock key or semaphore name of a request that lock_validate.h passed:
 * with identity on, a reserved name must come from a trusted peer
 * (PERMISSION_DENIED). field is "key" or "name".
 */
bool lock_service_check_name(lock_service_t *svc, svc_call_t *call, const char *field,
                             const char *name, svc_err_t *err);
/* The semaphores' half (lock_sem.c), for their handlers. */
struct lock_sem *lock_service_sem(lock_service_t *svc);
/* Registers lock.v1.LockService on the server and starts the store. Before the server starts. */
int lock_service_register(lock_service_t *svc, svc_err_t *err);
/*
 * Shutdown begins: ends the calls that never end by themselves
 * (WatchSemaphore) with UNAVAILABLE. Before svc_server_shutdown. NULL is a
 * no-op.
 */
void lock_service_drain(lock_service_t *svc);
/*
 * Stops the waiters' and the semaphores' timers; hand-offs are ignored from now on. After the
 * server has shut down, before the store is destroyed. NULL is a no-op.
 */
void lock_service_stop(lock_service_t *svc);
/* After lock_service_stop and lock_store_destroy. NULL is a no-op. */
void lock_service_destroy(lock_service_t *svc);

#endif
