/*
 * pool.h: the worker pool. gRPC completion-queue threads never run handlers;
 * they hand them to this pool, whose threads may block on PostgreSQL, Redis or
 * another service. The pool keeps `core` threads and grows up to `max` while
 * every thread is busy, so a few slow handlers do not hold up fast ones.
 *
 * Its queue is bounded for new work: svc_pool_try_submit refuses a task at
 * once when max_queued tasks already wait, so a flood is refused instead of
 * queued. svc_pool_submit is for work that continues something already
 * admitted (the next step of a call in flight, a timer's callback): it is
 * never refused for a full queue, since refusing it would strand that call;
 * its tasks are bounded by what was admitted (the server's MAX_IN_FLIGHT).
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

/* svc_pool_try_submit's answer when max_queued tasks already wait. */
#define SVC_POOL_FULL 1

/*
 * New work (a call just accepted): queues fn(arg) as svc_pool_submit does,
 * unless max_queued tasks (of either kind) already wait for a thread: then
 * returns SVC_POOL_FULL at once and fn does not run; the caller refuses the
 * work (RESOURCE_EXHAUSTED). Never blocks. -1 as for svc_pool_submit.
 */
int svc_pool_try_submit(svc_pool_t *pool, svc_task_fn fn, void *arg);

/* Sets the bound of svc_pool_try_submit; 0 (the default): none. Any time. */
void svc_pool_set_max_queued(svc_pool_t *pool, int max_queued);

/* Tasks waiting for a thread now (tests and metrics). */
int svc_pool_queued(svc_pool_t *pool);

/* Runs every task already queued, then stops and joins all threads. NULL is a no-op. */
void svc_pool_destroy(svc_pool_t *pool);

/* Threads now alive (for tests and metrics). */
int svc_pool_threads(svc_pool_t *pool);

#endif
