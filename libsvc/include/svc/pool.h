/*
 * pool.h: the worker pool. gRPC completion-queue threads never run handlers;
 * they hand them to this pool, whose threads may block on PostgreSQL, Redis or
 * another service. The pool keeps `core` threads and grows up to `max` while
 * every thread is busy, so a few slow handlers do not hold up fast ones.
 */
#ifndef SVC_POOL_H
#define SVC_POOL_H

#include "svc/err.h"

typedef struct svc_pool svc_pool_t;
typedef void (*svc_task_fn)(void *arg);

/* 1 <= core <= max. Returns NULL and sets err when threads cannot start. */
svc_pool_t *svc_pool_create(int core, int max, svc_err_t *err);

/*
 * Queues fn(arg) to run on a worker thread. Never blocks on other tasks.
 * Returns 0, or -1 when the pool is shutting down or out of memory (fn does not run).
 */
int svc_pool_submit(svc_pool_t *pool, svc_task_fn fn, void *arg);

/* Runs every task already queued, then stops and joins all threads. NULL is a no-op. */
void svc_pool_destroy(svc_pool_t *pool);

/* Threads now alive (for tests and metrics). */
int svc_pool_threads(svc_pool_t *pool);

#endif
