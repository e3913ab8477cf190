/*
 * reservation_hold.c: HoldSeats. A seat already held or sold is refused
 * before anyone queues for its lock; a user without a balance account is
 * refused before any seat is locked (the hold could never be paid); then the
 * seats' lock tokens seat:<schedule>:<number> are taken in ascending order,
 * one short transaction writes the hold (fenced), and the tokens go back.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reservation_internal.h"
#include "svc/balance_client.h"
#include "svc/failpoint.h"
#include "svc/lock_client.h"
#include "svc/log.h"

#define ACCOUNT_CHECK_MS 3000 /* longest the account check may take */

/* ---------- users with an account ---------- */

static size_t
user_slot(int64_t user_id)
{
    uint64_t h = (uint64_t)user_id * 0x9E3779B97F4A7C15ull;

    return (size_t)(h >> 48) % RSV_KNOWN_USERS;
}

static bool
user_known(reservation_service_t *svc, int64_t user_id)
{
    bool found = false;

    pthread_mutex_lock(&svc->users_mu);
    for (size_t i = user_slot(user_id), k = 0; k < RSV_KNOWN_USERS; k++) {
        int64_t v = svc->users[(i + k) % RSV_KNOWN_USERS];
        if (v == 0 || v == user_id) {
            found = v == user_id;
            break;
        }
    }
    pthread_mutex_unlock(&svc->users_mu);
    return found;
}

static void
user_remember(reservation_service_t *svc, int64_t user_id)
{
    pthread_mutex_lock(&svc->users_mu);
    if (svc->n_users >= RSV_KNOWN_USERS / 2) { /* keep probes short: start over */
        memset(svc->users, 0, RSV_KNOWN_USERS * sizeof(*svc->users));
        svc->n_users = 0;
    }
    for (size_t i = user_slot(user_id), k = 0; k < RSV_KNOWN_USERS; k++) {
        int64_t *v = &svc->users[(i + k) % RSV_KNOWN_USERS];
        if (*v == user_id) {
            break;
        }
        if (*v == 0) {
            *v = user_id;
            svc->n_users++;
            break;
        }
    }
    pthread_mutex_unlock(&svc->users_mu);
}

/* 0 when balance-svc has an account for user_id; NOT_FOUND when it has none. */
static int
check_account(reservation_service_t *svc, svc_call_t *call, int64_t user_id, svc_err_t *err)
{
    svc_call_opts_t opts = {.parent = call, .timeout_ms = ACCOUNT_CHECK_MS};

    if (user_known(svc, user_id)) {
        return 0;
    }
    if (svc_balance_get(svc->balance_svc, user_id, &opts, NULL, err) == 0) {
        user_remember(svc, user_id);
        return 0;
    }
    if (err->code == SVC_NOT_FOUND) {
        svc_err_set(err, SVC_NOT_FOUND, "user %" PRId64 " has no account; top up first", user_id);
    } else if (err->code != SVC_DEADLINE_EXCEEDED && err->code != SVC_CANCELLED) {
        static svc_log_limit_t limit = SVC_LOG_LIMIT_INIT(5);
        svc_logf_limited(&limit, SVC_LOG_WARN, "balance-svc unreachable: %s", err->msg);
        svc_err_set(err, SVC_UNAVAILABLE, "balance service unavailable");
    }
    return -1;
}

/* ---------- seat locks ---------- */

/* Takes the seats' lock tokens in ascending order; on failure releases those taken. */
static int
lock_seats(reservation_service_t *svc, svc_call_t *call, int64_t schedule_id, const int32_t *seats,
           int n, svc_lock_t *locks, svc_err_t *err)
{
    svc_lock_opts_t lopts = {.owner = "reservation-svc",
                             .lease_ms = svc->opts.lock_lease_ms,
                             .wait_ms = svc->opts.lock_wait_ms,
                             .parent = call};

    for (int i = 0; i < n; i++) {
        char key[64];
        snprintf(key, sizeof(key), "seat:%" PRId64 ":%d", schedule_id, (int)seats[i]);
        if (svc_lock_acquire(svc->lock_svc, key, &lopts, &locks[i], err) != 0) {
            if (err->code == SVC_UNAVAILABLE) {
                static svc_log_limit_t limit = SVC_LOG_LIMIT_INIT(5);
                svc_logf_limited(&limit, SVC_LOG_WARN, "lock-svc unreachable: %s", err->msg);
                svc_err_set(err, SVC_UNAVAILABLE, "lock service unavailable");
            } else if (err->code == SVC_ABORTED) {
                svc_err_set(err, SVC_ABORTED, "seat %d of schedule %" PRId64 " is busy, try again",
                            (int)seats[i], schedule_id);
            }
            for (int j = i - 1; j >= 0; j--) {
                svc_err_t ignored;
                (void)svc_lock_release(svc->lock_svc, &locks[j], NULL, &ignored);
            }
            return -1;
        }
    }
    return 0;
}

int
reservation_hold(reservation_service_t *svc, svc_call_t *call, int64_t user_id, int64_t schedule_id,
                 const int32_t *seats, int n, svc_arena_t *arena, rsv_reservation_t *out,
                 svc_err_t *err)
{
    int64_t fences[RSV_MAX_SEATS];
    svc_lock_t locks[RSV_MAX_SEATS];
    int rc;

    /* Fail fast: a seat already held or sold is refused before anyone queues for its lock. */
    if (rsv_store_precheck(svc->db, schedule_id, seats, n, svc_now_unix_ms(),
                           reservation_db_deadline(call), err) != 0 ||
        check_account(svc, call, user_id, err) != 0 ||
        lock_seats(svc, call, schedule_id, seats, n, locks, err) != 0) {
        return -1;
    }
    for (int i = 0; i < n; i++) {
        fences[i] = locks[i].fence;
    }
    /*
     * The worst moment to stall: the locks are ours but nothing is written
     * yet. A pause here longer than the lease lets another instance take the
     * seat; the fence and the row check must refuse our write when we resume.
     */
    svc_failpoint_pause("hold_after_lock");
    rc = rsv_store_hold(svc->db, user_id, schedule_id, seats, fences, n, svc_now_unix_ms(),
                        svc->opts.hold_ttl_ms, reservation_db_deadline(call), arena, out, err);
    for (int i = n - 1; i >= 0; i--) { /* after the commit: no other call inside a transaction */
        svc_err_t rel;
        if (svc_lock_release(svc->lock_svc, &locks[i], NULL, &rel) != 0) {
            svc_logf(SVC_LOG_WARN, "release of %s failed: %s", locks[i].key, rel.msg);
        }
    }
    return rc;
}
