/*
 * sc_basic.c: the scenarios that inject no fault, so they also run against a
 * live deployment: contention on one seat, on one account and on one lock,
 * and double payments. Each makes its own concert, users and lock keys.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conformance.h"

/* ------------------------------------------------------------ seat_storm */

typedef struct {
    svc_client_t *rsv;
    cf_tally_t *t;
    cf_acks_t *acks;
    pthread_barrier_t *start;
    int64_t schedule, user;
    int seats;           /* phase two: seats 2..seats */
    unsigned seed;       /* phase two: which seats */
    svc_status_t code;   /* phase one: the answer */
    int64_t reservation; /* phase one: the hold, when OK */
} seat_job_t;

/* Phase one: everyone asks for seat 1 at the same moment. */
static void *
one_seat(void *arg)
{
    seat_job_t *j = arg;
    const int32_t seat = 1;

    pthread_barrier_wait(j->start);
    j->code = cf_hold(j->rsv, j->t, j->user, j->schedule, &seat, 1, 30000, &j->reservation);
    if (j->code == SVC_OK) {
        cf_ack_held(j->acks, j->reservation);
    }
    return NULL;
}

/* Phase two: holds of two random seats, half of them cancelled again. */
static void *
many_seats(void *arg)
{
    seat_job_t *j = arg;

    pthread_barrier_wait(j->start);
    for (int i = 0; i < 12; i++) {
        int32_t pick[2];
        int64_t id;
        pick[0] = 2 + (int32_t)(rand_r(&j->seed) % (unsigned)(j->seats - 1));
        do {
            pick[1] = 2 + (int32_t)(rand_r(&j->seed) % (unsigned)(j->seats - 1));
        } while (pick[1] == pick[0]);
        if (cf_hold(j->rsv, j->t, j->user, j->schedule, pick, 2, 0, &id) != SVC_OK) {
            continue;
        }
        cf_ack_held(j->acks, id);
        if (rand_r(&j->seed) % 2 == 0 && cf_cancel(j->rsv, j->t, id, j->user) != SVC_OK) {
            cf_violation(j->t, "cancelling our own fresh hold %" PRId64 " failed", id);
        }
    }
    return NULL;
}

int
sc_seat_storm(cf_ctx_t *ctx, cf_tally_t *t)
{
    const cf_targets_t *tg = cf_targets(ctx);
    int n = ctx->quick ? 400 : 1000, users = 64, ok = 0;
    seat_job_t *jobs;
    pthread_barrier_t start;
    cf_acks_t acks;
    svc_client_t *rsv, *bal;
    int64_t schedule, *accounts;

    if (tg == NULL || (rsv = cf_client(tg->reservation_addr)) == NULL ||
        (bal = cf_client(tg->balance_addr)) == NULL ||
        (schedule = cf_new_schedule(rsv, tg->admin_token, "conformance seat_storm", 33, 1000)) <
            0) {
        return -1;
    }
    jobs = calloc((size_t)n, sizeof(*jobs));
    accounts = calloc((size_t)n, sizeof(*accounts));
    for (int i = 0; jobs != NULL && accounts != NULL && i < n; i++) {
        if ((accounts[i] = cf_new_account(bal)) == 0) {
            break;
        }
    }
    if (jobs == NULL || accounts == NULL || accounts[n - 1] == 0) {
        free(jobs);
        free(accounts);
        return -1;
    }
    cf_acks_init(&acks);
    pthread_barrier_init(&start, NULL, (unsigned)n);
    for (int i = 0; i < n; i++) {
        jobs[i] = (seat_job_t){rsv, t, &acks, &start, schedule, accounts[i], 33, 0, 0, 0};
    }
    cf_parallel(n, one_seat, jobs, sizeof(*jobs));
    pthread_barrier_destroy(&start);
    for (int i = 0; i < n; i++) {
        ok += jobs[i].code == SVC_OK;
    }
    fprintf(stderr, "%d users, one seat: %d OK\n", n, ok);
    if (ok != 1) {
        cf_violation(t, "%d holds of the same seat answered OK, want exactly 1", ok);
    }

    pthread_barrier_init(&start, NULL, (unsigned)users);
    for (int i = 0; i < users; i++) {
        jobs[i] =
            (seat_job_t){rsv, t, &acks, &start, schedule, accounts[i], 33, 7u * (unsigned)i, 0, 0};
    }
    cf_parallel(users, many_seats, jobs, sizeof(*jobs));
    pthread_barrier_destroy(&start);
    fprintf(stderr, "%d users on 32 seats: %d holds in all\n", users, acks.n_held);
    cf_check_invariants(t, tg, &acks);
    cf_acks_free(&acks);
    free(jobs);
    free(accounts);
    return 0;
}

/* --------------------------------------------------------- balance_storm */

enum { BAL_USERS = 4, BAL_KEYS = 16, BAL_TOPUP = 100, BAL_SPENDERS = 32, BAL_SPEND = 150 };

typedef struct {
    svc_client_t *bal;
    cf_tally_t *t;
    cf_acks_t *acks;
    pthread_barrier_t *start;
    int64_t user;
    char key[64];
    bool spend;
    svc_status_t code;
    int64_t txn;
} money_job_t;

static void *
money_job(void *arg)
{
    money_job_t *j = arg;

    pthread_barrier_wait(j->start);
    j->code = j->spend ? cf_spend(j->bal, j->t, j->user, BAL_SPEND, j->key, &j->txn, NULL)
                       : cf_topup(j->bal, j->t, j->user, BAL_TOPUP, j->key, &j->txn, NULL);
    if (j->code == SVC_OK) {
        cf_ack_ledger(j->acks, j->user, j->key, j->txn);
    }
    return NULL;
}

/* Every account's balance, read through the service, must be want. */
static void
expect_balances(svc_client_t *bal, cf_tally_t *t, const int64_t *users, int64_t want)
{
    for (int u = 0; u < BAL_USERS; u++) {
        int64_t got = -1;
        if (cf_get_balance(bal, t, users[u], &got) != SVC_OK || got != want) {
            cf_violation(t, "user %" PRId64 " has %" PRId64 ", want %" PRId64, users[u], got, want);
        }
    }
}

int
sc_balance_storm(cf_ctx_t *ctx, cf_tally_t *t)
{
    enum { N_TOPUPS = BAL_USERS * BAL_KEYS * 2, N_SPENDS = BAL_USERS * BAL_SPENDERS };
    const cf_targets_t *tg = cf_targets(ctx);
    const int64_t funded = BAL_KEYS * BAL_TOPUP, can = funded / BAL_SPEND;
    static money_job_t jobs[N_TOPUPS > N_SPENDS ? N_TOPUPS : N_SPENDS];
    int64_t users[BAL_USERS];
    pthread_barrier_t start;
    cf_acks_t acks;
    svc_client_t *bal;
    int spent[BAL_USERS] = {0};

    if (tg == NULL || (bal = cf_client(tg->balance_addr)) == NULL) {
        return -1;
    }
    cf_acks_init(&acks);
    for (int u = 0; u < BAL_USERS; u++) {
        users[u] = cf_new_user();
    }
    /* Every top-up is sent twice at once with the same key: a double click. */
    pthread_barrier_init(&start, NULL, N_TOPUPS);
    for (int i = 0; i < N_TOPUPS; i += 2) {
        money_job_t *a = &jobs[i], *b = &jobs[i + 1];
        *a = (money_job_t){bal, t, &acks, &start, users[(i / 2) % BAL_USERS], "", false, 0, 0};
        cf_unique(a->key, sizeof(a->key), "conformance-topup");
        *b = *a;
    }
    cf_parallel(N_TOPUPS, money_job, jobs, sizeof(jobs[0]));
    pthread_barrier_destroy(&start);
    for (int i = 0; i < N_TOPUPS; i += 2) {
        if (jobs[i].code != SVC_OK || jobs[i + 1].code != SVC_OK ||
            jobs[i].txn != jobs[i + 1].txn) {
            cf_violation(t, "double top-up %s: %s/%s, transactions %" PRId64 "/%" PRId64,
                         jobs[i].key, svc_status_name(jobs[i].code),
                         svc_status_name(jobs[i + 1].code), jobs[i].txn, jobs[i + 1].txn);
        }
    }
    expect_balances(bal, t, users, funded);

    /* More spends than the money covers, all at once: exactly `can` succeed per user. */
    pthread_barrier_init(&start, NULL, N_SPENDS);
    for (int i = 0; i < N_SPENDS; i++) {
        jobs[i] = (money_job_t){bal, t, &acks, &start, users[i % BAL_USERS], "", true, 0, 0};
        cf_unique(jobs[i].key, sizeof(jobs[i].key), "conformance-spend");
    }
    cf_parallel(N_SPENDS, money_job, jobs, sizeof(jobs[0]));
    pthread_barrier_destroy(&start);
    for (int i = 0; i < N_SPENDS; i++) {
        if (jobs[i].code == SVC_OK) {
            spent[i % BAL_USERS]++;
        } else if (jobs[i].code != SVC_FAILED_PRECONDITION) {
            cf_violation(t, "spend %s answered %s", jobs[i].key, svc_status_name(jobs[i].code));
        }
    }
    for (int u = 0; u < BAL_USERS; u++) {
        if (spent[u] != can) {
            cf_violation(t, "user %" PRId64 ": %d spends of %d succeeded, want %" PRId64, users[u],
                         spent[u], BAL_SPENDERS, can);
        }
    }
    expect_balances(bal, t, users, funded - can * BAL_SPEND);
    fprintf(stderr,
            "%d double top-ups, %d spends against %" PRId64 " each: %" PRId64
            " per account went through\n",
            N_TOPUPS / 2, N_SPENDS, funded, can);
    cf_check_invariants(t, tg, &acks);
    cf_acks_free(&acks);
    return 0;
}

/* ------------------------------------------------------------ double_pay */

enum { PAY_USERS = 20, PAY_PRICE = 3000, PAY_FUNDS = 10000 };

typedef struct {
    svc_client_t *rsv;
    cf_tally_t *t;
    cf_acks_t *acks;
    pthread_barrier_t *start;
    int64_t user, reservation;
    char key[64];
    svc_status_t code;
    int64_t payment;
} pay_job_t;

static void *
pay_job(void *arg)
{
    pay_job_t *j = arg;

    pthread_barrier_wait(j->start);
    j->code = cf_pay(j->rsv, j->t, j->reservation, j->user, j->key, 30000, &j->payment);
    if (j->code == SVC_OK) {
        cf_ack_paid(j->acks, j->reservation);
    }
    return NULL;
}

/* Funds a new user with PAY_FUNDS and holds seat for them; 0 or -1. */
static int
funded_hold(svc_client_t *bal, svc_client_t *rsv, cf_tally_t *t, cf_acks_t *acks, int64_t schedule,
            int32_t seat, pay_job_t *job)
{
    char key[64];
    int64_t txn;

    job->user = cf_new_user();
    cf_unique(key, sizeof(key), "conformance-fund");
    if (cf_topup(bal, t, job->user, PAY_FUNDS, key, &txn, NULL) != SVC_OK) {
        return -1;
    }
    cf_ack_ledger(acks, job->user, key, txn);
    if (cf_hold(rsv, t, job->user, schedule, &seat, 1, 0, &job->reservation) != SVC_OK) {
        return -1;
    }
    cf_ack_held(acks, job->reservation);
    return 0;
}

int
sc_double_pay(cf_ctx_t *ctx, cf_tally_t *t)
{
    const cf_targets_t *tg = cf_targets(ctx);
    static pay_job_t jobs[2 * PAY_USERS];
    pthread_barrier_t start;
    svc_client_t *bal, *rsv;
    cf_acks_t acks;
    int64_t schedule;

    if (tg == NULL || (bal = cf_client(tg->balance_addr)) == NULL ||
        (rsv = cf_client(tg->reservation_addr)) == NULL ||
        (schedule = cf_new_schedule(rsv, tg->admin_token, "conformance double_pay", PAY_USERS,
                                    PAY_PRICE)) < 0) {
        return -1;
    }
    cf_acks_init(&acks);
    pthread_barrier_init(&start, NULL, 2 * PAY_USERS);
    for (int i = 0; i < PAY_USERS; i++) {
        pay_job_t *a = &jobs[2 * i], *b = &jobs[2 * i + 1];
        *a = (pay_job_t){rsv, t, &acks, &start, 0, 0, "", 0, 0};
        if (funded_hold(bal, rsv, t, &acks, schedule, (int32_t)(i + 1), a) != 0) {
            cf_violation(t, "could not fund and hold seat %d", i + 1);
        }
        *b = *a;
        /* Two browser tabs: each payment attempt has its own key. */
        cf_unique(a->key, sizeof(a->key), "conformance-pay");
        cf_unique(b->key, sizeof(b->key), "conformance-pay");
    }
    cf_parallel(2 * PAY_USERS, pay_job, jobs, sizeof(jobs[0]));
    pthread_barrier_destroy(&start);
    for (int i = 0; i < PAY_USERS; i++) {
        pay_job_t *a = &jobs[2 * i], *b = &jobs[2 * i + 1];
        int64_t balance = -1;
        if (a->code != SVC_OK || b->code != SVC_OK || a->payment != b->payment) {
            cf_violation(t,
                         "reservation %" PRId64 " paid twice: %s/%s, payments %" PRId64 "/%" PRId64,
                         a->reservation, svc_status_name(a->code), svc_status_name(b->code),
                         a->payment, b->payment);
        }
        if (cf_get_balance(bal, t, a->user, &balance) != SVC_OK ||
            balance != PAY_FUNDS - PAY_PRICE) {
            cf_violation(t, "user %" PRId64 " has %" PRId64 " after paying, want %d", a->user,
                         balance, PAY_FUNDS - PAY_PRICE);
        }
    }
    fprintf(stderr, "%d holds each paid twice at once\n", PAY_USERS);
    cf_check_invariants(t, tg, &acks);
    cf_acks_free(&acks);
    return 0;
}

/* ------------------------------------------------------------ lock_storm */

enum { LOCK_KEYS = 4, LOCK_THREADS = 32 };

typedef struct {
    pthread_mutex_t mu;
    int64_t last_fence[LOCK_KEYS];
    int holders[LOCK_KEYS];
    char keys[LOCK_KEYS][96];
} lock_shared_t;

typedef struct {
    svc_client_t *lock;
    cf_tally_t *t;
    lock_shared_t *sh;
    int rounds;
    unsigned seed;
} lock_job_t;

/* At grant: nobody else holds the key, and the fence is above every earlier one. */
static void
on_grant(lock_job_t *j, int k, const svc_lock_t *l)
{
    pthread_mutex_lock(&j->sh->mu);
    if (++j->sh->holders[k] > 1) {
        cf_violation(j->t, "%s granted while held", l->key);
    }
    if (l->fence <= j->sh->last_fence[k]) {
        cf_violation(j->t, "%s: fence %" PRId64 " after %" PRId64, l->key, l->fence,
                     j->sh->last_fence[k]);
    }
    j->sh->last_fence[k] = l->fence;
    pthread_mutex_unlock(&j->sh->mu);
}

static void *
lock_job(void *arg)
{
    lock_job_t *j = arg;

    for (int i = 0; i < j->rounds; i++) {
        int k = (int)(rand_r(&j->seed) % LOCK_KEYS);
        svc_lock_t l;
        if (cf_lock_acquire(j->lock, j->t, j->sh->keys[k], 10000, 5000, &l) != SVC_OK) {
            continue;
        }
        on_grant(j, k, &l);
        pthread_mutex_lock(&j->sh->mu);
        j->sh->holders[k]--;
        pthread_mutex_unlock(&j->sh->mu);
        if (cf_lock_release(j->lock, j->t, &l) != SVC_OK) {
            cf_violation(j->t, "release of %s (fence %" PRId64 ") failed", l.key, l.fence);
        }
    }
    return NULL;
}

int
sc_lock_storm(cf_ctx_t *ctx, cf_tally_t *t)
{
    const cf_targets_t *tg = cf_targets(ctx);
    static lock_shared_t sh;
    lock_job_t jobs[LOCK_THREADS];
    svc_client_t *lock;
    long before;

    if (tg == NULL || (lock = cf_client(tg->lock_addr)) == NULL) {
        return -1;
    }
    memset(&sh, 0, sizeof(sh));
    pthread_mutex_init(&sh.mu, NULL);
    for (int k = 0; k < LOCK_KEYS; k++) {
        cf_unique(sh.keys[k], sizeof(sh.keys[k]), "conformance-lock");
    }
    for (int i = 0; i < LOCK_THREADS; i++) {
        jobs[i] = (lock_job_t){lock, t, &sh, ctx->quick ? 20 : 50, 31u * (unsigned)i + 1};
    }
    before = atomic_load(&t->ok);
    cf_parallel(LOCK_THREADS, lock_job, jobs, sizeof(jobs[0]));
    fprintf(stderr, "%d threads on %d keys: %ld grants and releases\n", LOCK_THREADS, LOCK_KEYS,
            (atomic_load(&t->ok) - before) / 2);
    pthread_mutex_destroy(&sh.mu);
    cf_check_invariants(t, tg, NULL);
    return 0;
}
