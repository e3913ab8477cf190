/*
 * lock_sem.c: the semaphores' lease timers. Redis admits the next in line
 * in the script that frees a permit; a lease that simply runs out frees
 * nothing until a script runs on the semaphore. So every answer from Redis
 * carries the semaphore's earliest lease or place end, and this instance
 * keeps one timer per semaphore it has seen with tickets, set to that end:
 * it runs the settling script (lock_sem_store_get_async), whose answer sets
 * the timer again. Several instances may keep a timer for one semaphore;
 * the script is atomic and a second run finds nothing to do. An instance
 * that starts (or finds Redis again) sets its timers from Redis's index of
 * semaphores with tickets (lock_sem_resync), so a lease end is settled
 * even when every instance that knew of it has gone.
 *
 * Timers live in a hash of semaphore names under one mutex: a semaphore's
 * entry stays while its timer is set or its script is on the way
 * (`pending`), and goes once neither is.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lock_sem.h"
#include "lock_sem_internal.h"
#include "lock_sem_store.h"
#include "svc/log.h"
#include "svc/pool.h"
#include "svc/timer.h"

#define N_BUCKETS 1024
#define DUE_SLACK_MS 2 /* after the end: Redis drops what ended at or before its now */
#define MIN_DELAY_MS 5 /* Redis's clock may lag ours a little: do not spin meanwhile */
#define RETRY_MS 500   /* Redis did not answer: try again */

typedef struct sem_timer {
    struct sem_timer *next;
    lock_sem_t *sem;
    svc_timer_t timer;
    int64_t due_ms; /* unix ms the timer is set for, while it is set */
    bool armed;     /* the timer is set and has not fired (the timer's own state is its mutex's) */
    int pending;    /* the timer set, plus settling scripts on the way */
    char name[LOCK_KEY_MAX + 1];
} sem_timer_t;

static unsigned
name_hash(const char *name)
{
    unsigned h = 2166136261u;

    for (; *name; name++) {
        h = (h ^ (unsigned char)*name) * 16777619u;
    }
    return h;
}

/* The entry of name (caller holds mu), made when create; NULL when none or out of memory. */
static sem_timer_t *
timer_get(lock_sem_t *sem, const char *name, bool create)
{
    unsigned b = name_hash(name) % N_BUCKETS;
    sem_timer_t *e;

    for (e = sem->timers_by_name[b]; e != NULL; e = e->next) {
        if (strcmp(e->name, name) == 0) {
            return e;
        }
    }
    if (!create || (e = calloc(1, sizeof(*e))) == NULL) {
        return NULL;
    }
    e->sem = sem;
    e->timer.heap_index = -1;
    snprintf(e->name, sizeof(e->name), "%s", name);
    e->next = sem->timers_by_name[b];
    sem->timers_by_name[b] = e;
    return e;
}

/* Frees e once nothing refers to it (caller holds mu). */
static void
timer_maybe_free(lock_sem_t *sem, sem_timer_t *e)
{
    unsigned b;

    if (e == NULL || e->pending > 0) {
        return;
    }
    b = name_hash(e->name) % N_BUCKETS;
    for (sem_timer_t **pp = &sem->timers_by_name[b]; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == e) {
            *pp = e->next;
            free(e);
            return;
        }
    }
}

static void timer_fired(void *arg);

/* Sets e's timer for due_ms unless it is set earlier (caller holds mu). */
static void
timer_set(lock_sem_t *sem, sem_timer_t *e, int64_t due_ms)
{
    int64_t delay = due_ms - svc_now_unix_ms() + DUE_SLACK_MS;

    if (e->armed) {
        /* Not cancelled: it is firing, and its script answers the next end, this one too. */
        if (e->due_ms <= due_ms || !svc_timer_cancel(sem->timers, &e->timer)) {
            return;
        }
        e->armed = false;
        e->pending--;
    }
    e->due_ms = due_ms;
    e->armed = true;
    e->pending++;
    svc_timer_start(sem->timers, &e->timer, delay > MIN_DELAY_MS ? delay : MIN_DELAY_MS,
                    timer_fired, e);
}

void
lock_sem_due(lock_sem_t *sem, const char *name, int64_t due_ms)
{
    sem_timer_t *e;

    if (due_ms <= 0) {
        return;
    }
    pthread_mutex_lock(&sem->mu);
    if (!sem->stopping && (e = timer_get(sem, name, true)) != NULL) {
        timer_set(sem, e, due_ms);
    }
    pthread_mutex_unlock(&sem->mu);
}

static void
due_heard(const char *name, int64_t due_ms, void *arg)
{
    lock_sem_due(arg, name, due_ms);
}

void
lock_sem_resync(lock_sem_t *sem)
{
    lock_sem_store_due_async(sem->store, due_heard, sem);
}

/* The settling script answered (a lane's thread): set the timer for the next end. */
static void
settled(const char *name, const lock_sem_result_t *res, const svc_err_t *err, void *arg)
{
    sem_timer_t *e = arg;
    lock_sem_t *sem = e->sem;

    (void)name;
    pthread_mutex_lock(&sem->mu);
    e->pending--;
    if (!sem->stopping) {
        if (err->code != SVC_OK) {
            static svc_log_limit_t limit = SVC_LOG_LIMIT_INIT(5);
            svc_logf_limited(&limit, SVC_LOG_WARN, "semaphore %s not settled: %s", e->name,
                             err->msg);
            timer_set(sem, e, svc_now_unix_ms() + RETRY_MS);
        } else if (res->next_due_ms > 0) {
            timer_set(sem, e, res->next_due_ms);
        }
    }
    timer_maybe_free(sem, e);
    pthread_mutex_unlock(&sem->mu);
}

/* On the pool: the timer is off the heap; its pending count passes to the script. */
static void
timer_fired(void *arg)
{
    sem_timer_t *e = arg;
    lock_sem_t *sem = e->sem;
    bool run;

    pthread_mutex_lock(&sem->mu);
    e->armed = false;
    run = !sem->stopping;
    if (!run) {
        e->pending--;
        timer_maybe_free(sem, e);
    }
    pthread_mutex_unlock(&sem->mu);
    if (run) {
        lock_sem_store_get_async(sem->store, e->name, NULL, settled, e);
    }
}

/* ---------- lifecycle ---------- */

lock_sem_t *
lock_sem_create(lock_store_t *store, const lock_limits_t *limits, svc_err_t *err)
{
    lock_sem_t *sem = calloc(1, sizeof(*sem));

    if (sem == NULL || (sem->timers_by_name = calloc(N_BUCKETS, sizeof(sem_timer_t *))) == NULL) {
        free(sem);
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    sem->store = store;
    sem->limits = limits;
    pthread_mutex_init(&sem->mu, NULL);
    if ((sem->pool = svc_pool_create(1, 2, err)) == NULL ||
        (sem->timers = svc_timers_create(sem->pool, err)) == NULL ||
        lock_sem_watch_init(sem, err) != 0) {
        lock_sem_stop(sem);
        lock_sem_destroy(sem);
        return NULL;
    }
    return sem;
}

void
lock_sem_drain(lock_sem_t *sem)
{
    if (sem != NULL) {
        lock_sem_watch_drain(sem);
    }
}

void
lock_sem_stop(lock_sem_t *sem)
{
    if (sem == NULL) {
        return;
    }
    pthread_mutex_lock(&sem->mu);
    sem->stopping = true;
    pthread_mutex_unlock(&sem->mu);
    lock_sem_watch_stop(sem);
    svc_timers_destroy(sem->timers); /* pending timers never fire */
    sem->timers = NULL;
    svc_pool_destroy(sem->pool); /* callbacks already queued run, and see stopping */
    sem->pool = NULL;
}

void
lock_sem_destroy(lock_sem_t *sem)
{
    if (sem == NULL) {
        return;
    }
    lock_sem_watch_destroy(sem);
    for (int b = 0; sem->timers_by_name != NULL && b < N_BUCKETS; b++) {
        sem_timer_t *e = sem->timers_by_name[b];
        while (e != NULL) {
            sem_timer_t *next = e->next;
            free(e);
            e = next;
        }
    }
    free(sem->timers_by_name);
    pthread_mutex_destroy(&sem->mu);
    free(sem);
}
