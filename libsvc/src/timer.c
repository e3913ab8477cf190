/*
 * timer.c: one thread, a min-heap of caller-owned timers, callbacks handed to
 * the worker pool so a slow callback never delays the next timer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "svc/timer.h"

struct svc_timers {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    svc_pool_t *pool;
    svc_timer_t **heap;
    int len, cap;
    int stopping;
};

int64_t
svc_now_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
svc_now_unix_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
svc_sleep_ms(int64_t ms)
{
    struct timespec ts;

    if (ms <= 0) {
        return;
    }
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void
timers__swap(svc_timers_t *t, int a, int b)
{
    svc_timer_t *x = t->heap[a];

    t->heap[a] = t->heap[b];
    t->heap[b] = x;
    t->heap[a]->heap_index = a;
    t->heap[b]->heap_index = b;
}

static void
timers__up(svc_timers_t *t, int i)
{
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (t->heap[parent]->due_ms <= t->heap[i]->due_ms) {
            break;
        }
        timers__swap(t, i, parent);
        i = parent;
    }
}

static void
timers__down(svc_timers_t *t, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < t->len && t->heap[l]->due_ms < t->heap[m]->due_ms) {
            m = l;
        }
        if (r < t->len && t->heap[r]->due_ms < t->heap[m]->due_ms) {
            m = r;
        }
        if (m == i) {
            return;
        }
        timers__swap(t, i, m);
        i = m;
    }
}

/* Removes heap[i]. Caller holds mu. */
static void
timers__remove_at(svc_timers_t *t, int i)
{
    svc_timer_t *gone = t->heap[i];

    t->len--;
    if (i != t->len) {
        t->heap[i] = t->heap[t->len];
        t->heap[i]->heap_index = i;
        timers__down(t, i);
        timers__up(t, i);
    }
    gone->heap_index = -1;
}

static void *
timers__thread(void *arg)
{
    svc_timers_t *t = arg;

    pthread_mutex_lock(&t->mu);
    while (!t->stopping) {
        if (t->len == 0) {
            pthread_cond_wait(&t->cv, &t->mu);
            continue;
        }
        int64_t now = svc_now_mono_ms();
        svc_timer_t *first = t->heap[0];
        if (first->due_ms > now) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            int64_t wait = first->due_ms - now;
            ts.tv_sec += wait / 1000;
            ts.tv_nsec += (wait % 1000) * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&t->cv, &t->mu, &ts);
            continue;
        }
        timers__remove_at(t, 0);
        /* Once off the heap the timer belongs to its callback; cancel now returns false. */
        if (svc_pool_submit(t->pool, first->fn, first->arg) != 0) {
            pthread_mutex_unlock(&t->mu);
            first->fn(first->arg);
            pthread_mutex_lock(&t->mu);
        }
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

svc_timers_t *
svc_timers_create(svc_pool_t *pool, svc_err_t *err)
{
    svc_timers_t *t = calloc(1, sizeof(*t));
    pthread_condattr_t attr;

    if (t == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    t->pool = pool;
    pthread_mutex_init(&t->mu, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cv, &attr);
    pthread_condattr_destroy(&attr);
    if (pthread_create(&t->thread, NULL, timers__thread, t) != 0) {
        pthread_cond_destroy(&t->cv);
        pthread_mutex_destroy(&t->mu);
        free(t);
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "cannot start the timer thread");
        return NULL;
    }
    return t;
}

void
svc_timers_destroy(svc_timers_t *t)
{
    if (t == NULL) {
        return;
    }
    pthread_mutex_lock(&t->mu);
    t->stopping = 1;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->thread, NULL);
    for (int i = 0; i < t->len; i++) {
        t->heap[i]->heap_index = -1;
    }
    free(t->heap);
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

void
svc_timer_start(svc_timers_t *t, svc_timer_t *timer, int64_t delay_ms, svc_task_fn fn, void *arg)
{
    timer->due_ms = svc_now_mono_ms() + (delay_ms > 0 ? delay_ms : 0);
    timer->fn = fn;
    timer->arg = arg;
    pthread_mutex_lock(&t->mu);
    if (t->len == t->cap) {
        int cap = t->cap ? t->cap * 2 : 64;
        svc_timer_t **heap = realloc(t->heap, (size_t)cap * sizeof(*heap));
        if (heap == NULL) {
            pthread_mutex_unlock(&t->mu);
            abort(); /* a lost timer would leave a call parked forever */
        }
        t->heap = heap;
        t->cap = cap;
    }
    timer->heap_index = t->len;
    t->heap[t->len++] = timer;
    timers__up(t, timer->heap_index);
    if (timer->heap_index == 0) {
        pthread_cond_signal(&t->cv);
    }
    pthread_mutex_unlock(&t->mu);
}

bool
svc_timer_cancel(svc_timers_t *t, svc_timer_t *timer)
{
    bool removed = false;

    pthread_mutex_lock(&t->mu);
    if (timer->heap_index >= 0 && timer->heap_index < t->len &&
        t->heap[timer->heap_index] == timer) {
        timers__remove_at(t, timer->heap_index);
        removed = true;
    }
    pthread_mutex_unlock(&t->mu);
    return removed;
}
