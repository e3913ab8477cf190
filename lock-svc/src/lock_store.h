/*
 * lock_store.h: lock-svc's Redis side. The only place with Redis commands:
 * the atomic Lua scripts (acquire, release, extend, inspect), the waiter
 * registry, the release channel, and finding the master through Sentinel.
 */
#ifndef LOCK_STORE_H
#define LOCK_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "svc/err.h"

typedef struct lock_store lock_store_t;

#define LOCK_TOKEN_LEN 32 /* hex characters */
#define LOCK_OWNER_MAX 200

/*
 * url: "redis://[:password@]host:port[/db]" or
 * "redis-sentinel://host1:port1,host2:port2/mastername". Connections are made
 * lazily, so Redis need not be up yet. pool_size connections at most.
 */
lock_store_t *lock_store_create(const char *url, int pool_size, svc_err_t *err);
/* NULL is a no-op. Stops the subscriber thread if one runs. */
void lock_store_destroy(lock_store_t *store);

typedef struct {
    bool granted;
    int64_t fence;     /* granted: the new fence */
    int64_t holder_ms; /* not granted: the holder's remaining lease, ms (-1 unknown) */
} lock_acquire_result_t;

/*
 * Blocking forms (one pooled connection per caller, for the benchmark's raw
 * path). The acquire script: SET NX PX of the lock plus the next fence, atomically.
 * The fence is max(last fence + 1, fence_floor), so it keeps growing even if
 * Redis forgot the last one. With a waiter_id, a refused attempt registers the
 * waiter (until wait_until_ms, unix ms) and a granted one removes it, so
 * lock_store_get can count waiters across instances. Errors: UNAVAILABLE.
 */
int lock_store_acquire(lock_store_t *store, const char *key, const char *token, const char *owner,
                       int64_t lease_ms, int64_t fence_floor, const char *waiter_id,
                       int64_t wait_until_ms, lock_acquire_result_t *out, svc_err_t *err);

/*
 * Compare-and-delete, then publishes the key on the release channel. With
 * woken_here, the caller wakes this instance's waiters itself and the
 * subscriber skips the echo. Errors: NOT_FOUND (no lock held),
 * FAILED_PRECONDITION (another token), UNAVAILABLE.
 */
int lock_store_release(lock_store_t *store, const char *key, const char *token, bool woken_here,
                       svc_err_t *err);

typedef struct {
    bool held;
    char owner[LOCK_OWNER_MAX + 1];
    int64_t fence;
    int64_t ttl_ms;
    int waiters; /* parked on any lock-svc instance, not past their wait */
} lock_info_t;

/*
 * The non-blocking forms, for lock-svc's path: one pipelined connection with
 * its own thread. The callback runs on that thread and must not block; res
 * holds the answer of the call that was made (acquire or info) when err is
 * OK. Errors as for the blocking forms; a reply later than 800 ms is
 * UNAVAILABLE.
 */
typedef struct {
    lock_acquire_result_t acquire;
    lock_info_t info; /* lock_store_get_async: the lock without its token, and live waiters */
} lock_store_result_t;
typedef void (*lock_store_cb)(const lock_store_result_t *res, const svc_err_t *err, void *arg);

void lock_store_acquire_async(lock_store_t *store, const char *key, const char *token,
                              const char *owner, int64_t lease_ms, int64_t fence_floor,
                              const char *waiter_id, int64_t wait_until_ms, lock_store_cb cb,
                              void *arg);
void lock_store_release_async(lock_store_t *store, const char *key, const char *token,
                              bool woken_here, lock_store_cb cb, void *arg);
/* Compare-and-PEXPIRE. */
void lock_store_extend_async(lock_store_t *store, const char *key, const char *token,
                             int64_t lease_ms, lock_store_cb cb, void *arg);
/* now_ms: unix ms, to drop waiters past their wait. */
void lock_store_get_async(lock_store_t *store, const char *key, int64_t now_ms, lock_store_cb cb,
                          void *arg);
/* Registers a waiter queued behind another (the acquire script registers the rest). */
void lock_store_waiter_add_async(lock_store_t *store, const char *key, const char *waiter_id,
                                 int64_t until_ms);
/* Forgets a waiter that stopped waiting without a grant (timeout, cancel). */
void lock_store_waiter_remove_async(lock_store_t *store, const char *key, const char *waiter_id);

/*
 * Called from the subscriber thread: key was released somewhere. key NULL
 * means the subscription was (re)established and messages may have been lost.
 */
typedef void (*lock_release_fn)(const char *key, void *arg);

/* Starts a thread that follows the release channel, reconnecting as needed. */
int lock_store_subscribe(lock_store_t *store, lock_release_fn fn, void *arg, svc_err_t *err);

/* Stops the subscriber thread, if any; fn is not called after this returns. */
void lock_store_unsubscribe(lock_store_t *store);

/* Fills buf with LOCK_TOKEN_LEN random hex characters and a NUL. */
void lock_store_new_token(char *buf);

#endif
