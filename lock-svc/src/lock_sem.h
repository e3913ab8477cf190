/*
 * lock_sem.h: lock-svc's semaphores in this process: the handlers of the
 * semaphore methods of lock.v1.LockService, and one timer per semaphore
 * this instance knows to have tickets, which settles it at its earliest
 * lease or place end so that the next in line is admitted even when nobody
 * calls. Redis is in lock_sem_store.
 */
#ifndef LOCK_SEM_H
#define LOCK_SEM_H

#include <stdint.h>

#include "lock_service.h"
#include "lock_store.h"
#include "svc/server.h"

typedef struct lock_sem lock_sem_t;

/* Starts its own timer thread and a small pool. store and limits must outlive it. */
lock_sem_t *lock_sem_create(lock_store_t *store, const lock_limits_t *limits, svc_err_t *err);
/*
 * Ends the Watch calls (they never end by themselves) with UNAVAILABLE and
 * refuses new ones, so that the server's grace period is spent on calls
 * that finish. When shutdown begins, before svc_server_shutdown.
 */
void lock_sem_drain(lock_sem_t *sem);
/*
 * Stops the timers; nothing is settled from now on. After the server has
 * shut down, before the store is destroyed. NULL is a no-op.
 */
void lock_sem_stop(lock_sem_t *sem);
/* After lock_sem_stop and after the store is gone. NULL is a no-op. */
void lock_sem_destroy(lock_sem_t *sem);

/*
 * Semaphore name's earliest end is due_ms (unix ms; 0: it has none): its
 * timer runs the settling script then, unless it is set earlier already.
 * Any thread; never blocks on Redis.
 */
void lock_sem_due(lock_sem_t *sem, const char *name, int64_t due_ms);

/*
 * Sets the timers of every semaphore with tickets from Redis's index of
 * their ends: at start and whenever Redis may have been away. Never blocks.
 */
void lock_sem_resync(lock_sem_t *sem);

/* The handlers, for lock_service's table; user is the lock_service_t. */
void lock_sem_handle_enter(svc_call_t *call, const ProtobufCMessage *msg, void *user);
void lock_sem_handle_leave(svc_call_t *call, const ProtobufCMessage *msg, void *user);
void lock_sem_handle_extend(svc_call_t *call, const ProtobufCMessage *msg, void *user);
void lock_sem_handle_get(svc_call_t *call, const ProtobufCMessage *msg, void *user);
void lock_sem_handle_watch(svc_call_t *call, const ProtobufCMessage *msg, void *user);

#endif
