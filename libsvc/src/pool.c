/*
 * pool.c: an elastic worker pool. Threads beyond `core` are started when a
 * task arrives and no thread is idle, and leave again after a quiet spell.
 * New work is refused once max_queued tasks wait (svc_pool_try_submit).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "svc/log.h"
#include "svc/pool.h"

#define POOL_STACK_SIZE (512 * 1024)
#define POOL_IDLE_EXIT_MS 10000

typedef struct pool_task {
    struct pool_task *next;
    svc_task_fn fn;
    void *arg;
} pool_task_t;

struct svc_pool {
    pthread_mutex_t mu;
    pthread_cond_t work;    /* a task was queued or the pool is stopping */
    pthread_cond_t drained; /* a thread left */
    pool_task_t *head, *tail;
    int queued;     /* tasks in head..tail */
    int max_queued; /* svc_pool_try_submit's bound; 0: none */
    int core, max;
    int threads; /* alive */
    int idle;    /* waiting for work */
    int stopping;
};

static void *pool__thread(void *arg);

/* Starts one detached thread. Caller holds mu. */
static int
pool__spawn(svc_pool_t *pool)
{
    pthread_attr_t attr;
    pthread_t tid;
    int rc;

    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, POOL_STACK_SIZE);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&tid, &attr, pool__thread, pool);
    pthread_attr_destroy(&attr);
    if (rc == 0) {
        pool->threads++;
    }
    return rc;
}

static void *
pool__thread(void *arg)
{
    svc_pool_t *pool = arg;

    pthread_mutex_lock(&pool->mu);
    for (;;) {
        while (pool->head == NULL && !pool->stopping) {
            struct timespec ts;
            int rc;

            pool->idle++;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += POOL_IDLE_EXIT_MS / 1000;
            rc = pthread_cond_timedwait(&pool->work, &pool->mu, &ts);
            pool->idle--;
            if (rc == ETIMEDOUT && pool->head == NULL && pool->threads > pool->core) {
                goto leave;
            }
        }
        if (pool->head == NULL) { /* stopping and drained */
            goto leave;
        }
        pool_task_t *task = pool->head;
        pool->head = task->next;
        if (pool->head == NULL) {
            pool->tail = NULL;
        }
        pool->queued--;
        pthread_mutex_unlock(&pool->mu);
        task->fn(task->arg);
        svc_log_ctx_clear(); /* the next job may serve another call, or none */
        free(task);
        pthread_mutex_lock(&pool->mu);
    }
leave:
    pool->threads--;
    pthread_cond_broadcast(&pool->drained);
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

svc_pool_t *
svc_pool_create(int core, int max, svc_err_t *err)
{
    svc_pool_t *pool;

    if (core < 1 || max < core) {
        svc_err_set(err, SVC_INVALID_ARGUMENT, "worker pool needs 1 <= core <= max");
        return NULL;
    }
    pool = calloc(1, sizeof(*pool));
    if (pool == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->work, NULL);
    pthread_cond_init(&pool->drained, NULL);
    pool->core = core;
    pool->max = max;
    pthread_mutex_lock(&pool->mu);
    for (int i = 0; i < core; i++) {
        if (pool__spawn(pool) != 0) {
            pthread_mutex_unlock(&pool->mu);
            svc_pool_destroy(pool);
            svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "cannot start worker threads");
            return NULL;
        }
    }
    pthread_mutex_unlock(&pool->mu);
    return pool;
}

/* Queues fn(arg); with bounded, refuses it when max_queued tasks wait already. */
static int
pool__submit(svc_pool_t *pool, svc_task_fn fn, void *arg, bool bounded)
{
    pool_task_t *task;

    /* A cheap look first, so that a refused task costs no allocation (a flood is refused here). */
    if (bounded) {
        pthread_mutex_lock(&pool->mu);
        bool full = pool->max_queued > 0 && pool->queued >= pool->max_queued;
        pthread_mutex_unlock(&pool->mu);
        if (full) {
            return SVC_POOL_FULL;
        }
    }
    if ((task = malloc(sizeof(*task))) == NULL) {
        return -1;
    }
    task->next = NULL;
    task->fn = fn;
    task->arg = arg;
    pthread_mutex_lock(&pool->mu);
    if (pool->stopping) {
        pthread_mutex_unlock(&pool->mu);
        free(task);
        return -1;
    }
    if (bounded && pool->max_queued > 0 && pool->queued >= pool->max_queued) {
        pthread_mutex_unlock(&pool->mu);
        free(task);
        return SVC_POOL_FULL;
    }
    if (pool->tail != NULL) {
        pool->tail->next = task;
    } else {
        pool->head = task;
    }
    pool->tail = task;
    pool->queued++;
    /* Grow only when nobody is free to take it; a failed spawn still leaves it queued. */
    if (pool->idle == 0 && pool->threads < pool->max) {
        (void)pool__spawn(pool);
    }
    pthread_cond_signal(&pool->work);
    pthread_mutex_unlock(&pool->mu);
    return 0;
}

int
svc_pool_submit(svc_pool_t *pool, svc_task_fn fn, void *arg)
{
    return pool__submit(pool, fn, arg, false);
}

int
svc_pool_try_submit(svc_pool_t *pool, svc_task_fn fn, void *arg)
{
    return pool__submit(pool, fn, arg, true);
}

void
svc_pool_set_max_queued(svc_pool_t *pool, int max_queued)
{
    pthread_mutex_lock(&pool->mu);
    pool->max_queued = max_queued > 0 ? max_queued : 0;
    pthread_mutex_unlock(&pool->mu);
}

int
svc_pool_queued(svc_pool_t *pool)
{
    int n;

    pthread_mutex_lock(&pool->mu);
    n = pool->queued;
    pthread_mutex_unlock(&pool->mu);
    return n;
}

void
svc_pool_destroy(svc_pool_t *pool)
{
    if (pool == NULL) {
        return;
    }
    pthread_mutex_lock(&pool->mu);
    pool->stopping = 1;
    pthread_cond_broadcast(&pool->work);
    while (pool->threads > 0) {
        pthread_cond_wait(&pool->drained, &pool->mu);
    }
    pthread_mutex_unlock(&pool->mu);
    pthread_cond_destroy(&pool->work);
    pthread_cond_destroy(&pool->drained);
    pthread_mutex_destroy(&pool->mu);
    free(pool);
}

int
svc_pool_threads(svc_pool_t *pool)
{
    int n;

    pthread_mutex_lock(&pool->mu);
    n = pool->threads;
    pthread_mutex_unlock(&pool->mu);
    return n;
}
