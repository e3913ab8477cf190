/*
 * sc_rolling_restart.c: a rollout under load. Two instances of each service;
 * while users hold, pay, cancel and top up with deadlines of a few seconds,
 * every instance of every service is restarted one at a time (lock-svc,
 * then balance-svc, then reservation-svc): SIGTERM, which turns its health
 * NOT_SERVING, stops new calls (GOAWAY) and lets the calls in flight end,
 * then the same binary on the same port. The clients' channels spread calls
 * over both instances (round robin), so a correct rollout is invisible to
 * them: nothing answers UNAVAILABLE (the verdict counts it as a failure
 * here, though processes are stopped), nothing else a correct service never
 * gives, every instance exits 0 on its SIGTERM, and afterwards every
 * invariant holds in the data, acknowledged answers included.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conformance.h"
#include "svc/timer.h"

#define RR_CALL_MS 3000   /* the users' deadline: a few seconds */
#define RR_SEATS 400      /* seats of the schedule the users share */
#define RR_SETTLE_MS 1000 /* between two restarts: the new instance takes calls again */
#define RR_STOP_MS 30000  /* an instance still running this long after SIGTERM is a failure */

typedef struct {
    cf_stack_t *stack;
    cf_tally_t *tally;
    cf_acks_t *acks;
    svc_client_t *reservation, *balance; /* both instances each, round robin */
    int64_t schedule;
    atomic_bool stop;
    atomic_long holds, pays, cancels, topups;
    int restarts;
} rr_run_t;

typedef struct {
    rr_run_t *run;
    int64_t user;
    unsigned seed;
} rr_user_t;

/* One user: hold a seat, pay for it or not, cancel it or not, top up now and then. */
static void *
user_loop(void *arg)
{
    rr_user_t *u = arg;
    rr_run_t *run = u->run;
    char key[96];

    for (int round = 0; !atomic_load(&run->stop); round++) {
        int32_t seat = 1 + (int32_t)(rand_r(&u->seed) % RR_SEATS);
        int64_t rid = 0;
        svc_status_t code = cf_hold(run->reservation, run->tally, u->user, run->schedule, &seat, 1,
                                    RR_CALL_MS, &rid);

        if (round % 8 == 7) {
            cf_unique(key, sizeof(key), "rr-topup");
            int64_t txn = 0;
            if (cf_topup(run->balance, run->tally, u->user, 500, key, &txn, NULL) == SVC_OK) {
                cf_ack_ledger(run->acks, u->user, key, txn);
                atomic_fetch_add(&run->topups, 1);
            }
        }
        if (code != SVC_OK) {
            svc_sleep_ms(5);
            continue;
        }
        cf_ack_held(run->acks, rid);
        atomic_fetch_add(&run->holds, 1);
        bool paid = false, keep = rand_r(&u->seed) % 4 == 0;
        if (rand_r(&u->seed) % 2 == 0) {
            cf_unique(key, sizeof(key), "rr-pay");
            paid =
                cf_pay(run->reservation, run->tally, rid, u->user, key, RR_CALL_MS, NULL) == SVC_OK;
            atomic_fetch_add(&run->pays, paid);
        }
        /* Most go back (the seat frees; a paid one is refunded); a kept payment must stay. */
        if (paid && keep) {
            cf_ack_paid(run->acks, rid);
        } else if (cf_cancel(run->reservation, run->tally, rid, u->user) == SVC_OK) {
            atomic_fetch_add(&run->cancels, 1);
        }
    }
    return NULL;
}

/*
 * SIGTERM, wait for the exit (a clean one: status 0), start again on the
 * same port and wait until it serves. 0, or -1 after a violation.
 */
static int
restart_one(rr_run_t *run, testenv_proc_t *p, const char *name, int i)
{
    int64_t t0 = svc_now_mono_ms(), stopped_ms;

    if (testenv_proc_signal(p, SIGTERM) != 0) {
        cf_violation(run->tally, "rolling_restart: cannot signal %s %d", name, i);
        return -1;
    }
    while (testenv_proc_alive(p)) {
        if (svc_now_mono_ms() - t0 > RR_STOP_MS) {
            cf_violation(run->tally, "rolling_restart: %s %d still runs %d s after SIGTERM", name,
                         i, RR_STOP_MS / 1000);
            return -1;
        }
        svc_sleep_ms(20);
    }
    stopped_ms = svc_now_mono_ms() - t0;
    if (p->status != 0) {
        cf_violation(run->tally,
                     "rolling_restart: %s %d exited with status %d after SIGTERM (log: %s)", name,
                     i, p->status, p->log_path);
        return -1;
    }
    if (testenv_proc_restart(p) != 0) {
        cf_violation(run->tally, "rolling_restart: %s %d did not start again", name, i);
        return -1;
    }
    fprintf(stderr,
            "rolling_restart: %s %d drained and exited in %" PRId64
            " ms, serving again after %" PRId64 " ms\n",
            name, i, stopped_ms, svc_now_mono_ms() - t0);
    run->restarts++;
    svc_sleep_ms(RR_SETTLE_MS);
    return 0;
}

static void *
roller(void *arg)
{
    rr_run_t *run = arg;
    cf_stack_t *s = run->stack;

    svc_sleep_ms(1500); /* the storm first */
    for (int i = 0; i < s->n_lock; i++) {
        if (restart_one(run, &s->lock[i], "lock-svc", i) != 0) {
            goto out;
        }
    }
    for (int i = 0; i < s->n_balance; i++) {
        if (restart_one(run, &s->balance[i], "balance-svc", i) != 0) {
            goto out;
        }
    }
    for (int i = 0; i < s->n_reservation; i++) {
        if (restart_one(run, &s->reservation[i], "reservation-svc", i) != 0) {
            goto out;
        }
    }
    svc_sleep_ms(1000); /* and on a little after the last */
out:
    atomic_store(&run->stop, true);
    return NULL;
}

int
sc_rolling_restart(cf_ctx_t *ctx, cf_tally_t *t)
{
    static const cf_stack_opts_t opts = {.n_lock = 2, .n_balance = 2, .n_reservation = 2};
    int n = ctx->quick ? 8 : 24;
    cf_stack_t *stack = calloc(1, sizeof(*stack)); /* large: not on a thread's stack */
    rr_user_t *users = calloc((size_t)n, sizeof(*users));
    rr_run_t run = {.tally = t};
    pthread_t roll;
    cf_acks_t acks;

    cf_acks_init(&acks);
    if (stack == NULL || users == NULL || cf_stack_start(ctx, stack, &opts) != 0) {
        if (stack != NULL) {
            (void)cf_stack_stop(stack);
        }
        free(stack);
        free(users);
        cf_acks_free(&acks);
        return -1;
    }
    run.stack = stack;
    run.acks = &acks;
    run.reservation = cf_client(stack->targets.reservation_addr);
    run.balance = cf_client(stack->targets.balance_addr);
    run.schedule = run.reservation == NULL
                       ? -1
                       : cf_new_schedule(run.reservation, stack->targets.admin_token,
                                         "rolling restart", RR_SEATS, 100);
    for (int i = 0; i < n && run.balance != NULL; i++) {
        users[i] = (rr_user_t){&run, cf_new_account(run.balance), (unsigned)(ctx->seed + i)};
        char key[96];
        cf_unique(key, sizeof(key), "rr-fund");
        int64_t txn = 0;
        if (users[i].user == 0 ||
            cf_topup(run.balance, t, users[i].user, 100000, key, &txn, NULL) != SVC_OK) {
            run.schedule = -1;
            break;
        }
        cf_ack_ledger(&acks, users[i].user, key, txn);
    }
    if (run.schedule < 0 || pthread_create(&roll, NULL, roller, &run) != 0) {
        fprintf(stderr, "rolling_restart: could not set up the users\n");
        (void)cf_stack_stop(stack);
        free(stack);
        free(users);
        cf_acks_free(&acks);
        return -1;
    }
    cf_parallel(n, user_loop, users, sizeof(*users));
    pthread_join(roll, NULL);
    int want = stack->n_lock + stack->n_balance + stack->n_reservation;
    if (run.restarts != want) {
        cf_violation(t, "rolling_restart: %d of %d instances restarted", run.restarts, want);
    }
    fprintf(stderr,
            "rolling_restart: %d users, %d restarts; %ld holds, %ld paid, %ld cancelled, %ld "
            "top-ups\n",
            n, run.restarts, atomic_load(&run.holds), atomic_load(&run.pays),
            atomic_load(&run.cancels), atomic_load(&run.topups));
    if (atomic_load(&run.holds) == 0 || atomic_load(&run.pays) == 0) {
        cf_violation(t, "rolling_restart: the users got nothing done (%ld holds, %ld paid)",
                     atomic_load(&run.holds), atomic_load(&run.pays));
    }
    svc_sleep_ms(1500); /* payments the sweeper carries on, if any */
    cf_check_invariants(t, &stack->targets, &acks);
    if (cf_stack_stop(stack) != 0) {
        cf_violation(t, "rolling_restart: a service exited badly");
    }
    free(stack);
    free(users);
    cf_acks_free(&acks);
    return 0;
}
