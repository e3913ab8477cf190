/*
 * balance_sweeper.c: one thread that voids expired authorizations in passes
 * of SWEEP_BATCH rows, until a pass finds fewer, then sleeps interval_ms.
 * Expiry itself needs no sweep (available only counts unexpired holds); the
 * sweep makes it visible as status 3.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "balance_store.h"
#include "balance_sweeper.h"
#include "svc/log.h"
#include "svc/timer.h"

#define SWEEP_BATCH 500
#define SWEEP_BUDGET_MS 5000

struct balance_sweeper {
    svc_pg_pool_t *db;
    int64_t interval_ms;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    bool stopping;
};

static void
sweep_once(balance_sweeper_t *s)
{
    static svc_log_limit_t limit = SVC_LOG_LIMIT_INIT(1);
    svc_err_t err;
    int n;

    do {
        if (balance_store_sweep(s->db, SWEEP_BATCH, svc_now_unix_ms() + SWEEP_BUDGET_MS, &n,
                                &err) != 0) {
            svc_logf_limited(&limit, SVC_LOG_WARN, "sweep of expired authorizations failed: %s",
                             err.msg);
            return;
        }
        if (n > 0) {
            svc_logf(SVC_LOG_DEBUG, "voided %d expired authorizations", n);
        }
    } while (n == SWEEP_BATCH);
}

static void *
sweeper_thread(void *arg)
{
    balance_sweeper_t *s = arg;

    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        struct timespec ts;

        pthread_mutex_unlock(&s->mu);
        sweep_once(s);
        pthread_mutex_lock(&s->mu);
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += s->interval_ms / 1000;
        ts.tv_nsec += (s->interval_ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        while (!s->stopping && pthread_cond_timedwait(&s->wake, &s->mu, &ts) != ETIMEDOUT) {
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

balance_sweeper_t *
balance_sweeper_create(svc_pg_pool_t *db, int64_t interval_ms, svc_err_t *err)
{
    balance_sweeper_t *s = calloc(1, sizeof(*s));

    if (s == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    s->db = db;
    s->interval_ms = interval_ms > 0 ? interval_ms : 1000;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->wake, NULL);
    if (pthread_create(&s->thread, NULL, sweeper_thread, s) != 0) {
        pthread_cond_destroy(&s->wake);
        pthread_mutex_destroy(&s->mu);
        free(s);
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "cannot start the sweeper thread");
        return NULL;
    }
    return s;
}

void
balance_sweeper_destroy(balance_sweeper_t *s)
{
    if (s == NULL) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
