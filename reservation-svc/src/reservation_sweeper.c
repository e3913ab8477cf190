/*
 * reservation_sweeper.c: the background pass of reservation-svc. Every
 * SWEEP_MS it marks expired holds EXPIRED (their pending payments lose, and
 * are voided), frees seats left marked by holds that ended, and carries on
 * every payment nobody finished: a crash, a pause, a balance-svc that did
 * not answer, a cancel that could not wait. Several instances may sweep at
 * once: the store skips rows another one has locked, and every payment step
 * is idempotent.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "reservation_internal.h"
#include "svc/log.h"

#define RECOVER_BATCH 32
#define PENDING_AGE_MS 3000 /* a PENDING payment this old has no call driving it any more */
#define OTHER_AGE_MS 500    /* a decided one only waits for balance-svc */
#define RECOVER_TIMEOUT_MS 5000

/* Carries on the payments that still need balance-svc. */
static void
recover_payments(reservation_service_t *svc)
{
    rsv_payment_t pending[RECOVER_BATCH];
    svc_err_t err;
    int n = 0;

    if (rsv_store_unsettled_payments(svc->db, PENDING_AGE_MS, OTHER_AGE_MS, RECOVER_BATCH, pending,
                                     &n, &err) != 0) {
        return;
    }
    for (int i = 0; i < n; i++) {
        int from = pending[i].status;
        if (reservation_payment_drive(svc, &pending[i], NULL, RECOVER_TIMEOUT_MS, &err) == 0) {
            svc_logf(SVC_LOG_INFO,
                     "payment %" PRId64 " of reservation %" PRId64 " settled: %d -> %d",
                     pending[i].id, pending[i].reservation_id, from, pending[i].status);
        } else if (err.code == SVC_UNAVAILABLE || err.code == SVC_DEADLINE_EXCEEDED) {
            return; /* balance-svc or the database is away: try again next round */
        } else {
            /* This one is stuck for now (a refund refused, a busy account): the others
             * must not wait behind it, so it goes to the back of the line. */
            svc_err_t ignored;
            (void)rsv_store_pay_touch(svc->db, pending[i].id, svc_now_unix_ms() + 5000, &ignored);
        }
    }
}

static void *
sweeper(void *arg)
{
    reservation_service_t *svc = arg;

    pthread_mutex_lock(&svc->mu);
    while (!svc->stopping) {
        struct timespec ts;
        int n = 0;
        svc_err_t err;

        pthread_mutex_unlock(&svc->mu);
        if (rsv_store_sweep(svc->db, svc_now_unix_ms(), &n, &err) != 0) {
            static svc_log_limit_t limit = SVC_LOG_LIMIT_INIT(5);
            svc_logf_limited(&limit, SVC_LOG_WARN, "sweeper: %s", err.msg);
        } else if (n > 0) {
            svc_logf(SVC_LOG_INFO, "sweeper marked %d expired holds", n);
        }
        recover_payments(svc);
        pthread_mutex_lock(&svc->mu);
        if (n == RSV_SWEEP_BATCH) {
            continue; /* more may wait */
        }
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += svc->opts.sweep_ms / 1000;
        ts.tv_nsec += (svc->opts.sweep_ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&svc->cv, &svc->mu, &ts);
    }
    pthread_mutex_unlock(&svc->mu);
    return NULL;
}

int
reservation_sweeper_start(reservation_service_t *svc, svc_err_t *err)
{
    if (pthread_create(&svc->sweeper, NULL, sweeper, svc) != 0) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "cannot start the sweeper");
        return -1;
    }
    svc->sweeper_running = true;
    return 0;
}

void
reservation_sweeper_stop(reservation_service_t *svc)
{
    pthread_mutex_lock(&svc->mu);
    svc->stopping = true;
    pthread_cond_broadcast(&svc->cv);
    pthread_mutex_unlock(&svc->mu);
    if (svc->sweeper_running) {
        pthread_join(svc->sweeper, NULL);
        svc->sweeper_running = false;
    }
}
