/*
 * sc_lock_faults.c: faults around the seat locks. paused_holder stops a
 * reservation-svc instance (SIGSTOP at a failpoint) while it holds a seat's
 * lock, past the lease, lets another instance take the seat, and resumes it:
 * the stale write must be refused, once by the row check and once by the
 * fence alone. lock_svc_kill SIGKILLs a lock-svc instance with waiters parked
 * on it: they must be refused at once, fail over to the other instance, and
 * get the lock one at a time with growing fences.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conformance.h"
#include "lock/v1/lock.pb-c.h"
#include "svc/timer.h"

/* ------------------------------------------------------- paused_holder */

#define PH_LEASE_MS 1000
#define PH_PAST_LEASE_MS 1500 /* the paused holder's lease has surely run out */
#define PH_HOLD_TIMEOUT_MS 30000
#define PH_STOP_TIMEOUT_MS 10000

/* The paused hold, run on its own thread while the scenario moves on. */
typedef struct {
    svc_client_t *client;
    cf_tally_t *t;
    int64_t user, schedule, reservation;
    int32_t seat;
    svc_status_t code;
} ph_hold_t;

static void *
ph_hold_thread(void *arg)
{
    ph_hold_t *h = arg;

    h->code = cf_hold(h->client, h->t, h->user, h->schedule, &h->seat, 1, PH_HOLD_TIMEOUT_MS,
                      &h->reservation);
    return NULL;
}

/*
 * One round on seat: instance 0 takes the seat's lock for a paused hold and
 * stops; past its lease, instance 1 holds the seat (and, when cancel, cancels
 * it again so that only the fence can refuse the paused write); then
 * instance 0 resumes. Returns 0, or -1 when the round could not be run.
 */
static int
ph_round(cf_stack_t *s, cf_tally_t *t, cf_acks_t *acks, int64_t schedule, int32_t seat, bool cancel)
{
    const char *what = cancel ? "fence" : "row check";
    svc_client_t *c0 = cf_client(s->reservation[0].addr), *c1 = cf_client(s->reservation[1].addr);
    svc_client_t *bal = cf_client(s->targets.balance_addr);
    ph_hold_t x = {.client = c0,
                   .t = t,
                   .user = bal != NULL ? cf_new_account(bal) : 0,
                   .schedule = schedule,
                   .seat = seat};
    int64_t user = bal != NULL ? cf_new_account(bal) : 0, held = 0, live, holder, t0;
    svc_status_t code;
    pthread_t thread;
    bool stopped;
    char sql[512];

    if (c0 == NULL || c1 == NULL || x.user == 0 || user == 0 ||
        pthread_create(&thread, NULL, ph_hold_thread, &x) != 0) {
        return -1;
    }
    /* The failpoint stops instance 0 between its lock grant and its write. */
    stopped = testenv_proc_wait_stopped(&s->reservation[0], PH_STOP_TIMEOUT_MS) == 0;
    t0 = svc_now_mono_ms();
    if (!stopped) {
        cf_violation(t, "paused_holder (%s): instance 0 never stopped at hold_after_lock", what);
    } else {
        svc_sleep_ms(PH_PAST_LEASE_MS);
        code = cf_hold(c1, t, user, schedule, &seat, 1, 0, &held);
        if (code == SVC_OK) {
            cf_ack_held(acks, held);
        } else {
            cf_violation(t, "paused_holder (%s): seat %d past the paused lease: %s, want OK", what,
                         (int)seat, svc_status_name(code));
        }
        if (cancel && code == SVC_OK && (code = cf_cancel(c1, t, held, user)) != SVC_OK) {
            cf_violation(t, "paused_holder (%s): cancel of %" PRId64 ": %s, want OK", what, held,
                         svc_status_name(code));
        }
    }
    /* Resumed even when it never stopped: SIGCONT is harmless then, and x must end. */
    testenv_proc_signal(&s->reservation[0], SIGCONT);
    pthread_join(thread, NULL);
    fprintf(stderr,
            "paused_holder (%s): seat %d: paused %" PRId64 " ms, other instance %s"
            " reservation %" PRId64 "; the paused hold answered %s\n",
            what, (int)seat, svc_now_mono_ms() - t0, cancel ? "held and cancelled" : "holds", held,
            svc_status_name(x.code));
    if (!stopped) {
        return 0;
    }
    if (x.code == SVC_OK) {
        cf_ack_held(acks, x.reservation);
        cf_violation(t, "paused_holder (%s): the paused hold was written (reservation %" PRId64 ")",
                     what, x.reservation);
    } else if (cancel ? x.code != SVC_ABORTED
                      : x.code != SVC_FAILED_PRECONDITION && x.code != SVC_ABORTED) {
        cf_violation(t, "paused_holder (%s): the paused hold answered %s, want %s", what,
                     svc_status_name(x.code),
                     cancel ? "ABORTED" : "FAILED_PRECONDITION or ABORTED");
    }

    /* The seat's live holders, from the rows themselves. */
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM reservation_seats rs JOIN reservations r"
             " ON r.id = rs.reservation_id WHERE rs.schedule_id = %" PRId64
             " AND rs.number = %d AND r.status IN (1, 2)",
             schedule, (int)seat);
    live = testenv_pg_query_int(&s->pg, sql);
    snprintf(sql, sizeof(sql),
             "SELECT coalesce((SELECT hold_reservation_id FROM seats"
             " WHERE schedule_id = %" PRId64 " AND number = %d AND status <> 1), 0)",
             schedule, (int)seat);
    holder = testenv_pg_query_int(&s->pg, sql);
    if (live != (cancel ? 0 : 1) || holder != (cancel ? 0 : held)) {
        cf_violation(t,
                     "paused_holder (%s): seat %d has %" PRId64
                     " live reservations, holder %" PRId64 "; want %d, holder %" PRId64,
                     what, (int)seat, live, holder, cancel ? 0 : 1, cancel ? 0 : held);
    }
    return 0;
}

int
sc_paused_holder(cf_ctx_t *ctx, cf_tally_t *t)
{
    static cf_stack_t stack;
    cf_stack_opts_t opts = {.n_lock = 1,
                            .n_reservation = 2,
                            .reservation_env = {"LOCK_LEASE_MS=1000"},
                            .first_reservation_env = {"SVC_FAILPOINT=hold_after_lock"}};
    cf_acks_t acks;
    int64_t schedule;
    int rc = 0;

    _Static_assert(PH_PAST_LEASE_MS > PH_LEASE_MS, "sleep past the lease");
    if (cf_stack_start(ctx, &stack, &opts) != 0) {
        cf_stack_stop(&stack);
        return -1;
    }
    cf_acks_init(&acks);
    /* Instance 1 creates it: instance 0 is kept for the paused holds alone. */
    schedule = cf_new_schedule(cf_client(stack.reservation[1].addr), stack.targets.admin_token,
                               "paused holder", 4, 1000);
    if (schedule < 0 || ph_round(&stack, t, &acks, schedule, 1, false) != 0 ||
        ph_round(&stack, t, &acks, schedule, 2, true) != 0) {
        rc = -1;
    }
    if (rc == 0) {
        cf_check_invariants(t, &stack.targets, &acks);
    }
    cf_acks_free(&acks);
    if (cf_stack_stop(&stack) != 0) {
        cf_violation(t, "a service exited badly");
    }
    return rc;
}

/* ------------------------------------------------------- lock_svc_kill */

#define LK_HOLDER_LEASE_MS 10000
#define LK_LEASE_MS 3000
#define LK_WAIT_MS 10000
#define LK_PROMPT_MS 2000 /* a refusal later than this after the kill is no failover */
#define LK_PARK_TIMEOUT_MS 2000

/* What all threads of lock_svc_kill share. */
typedef struct {
    cf_tally_t *t;
    svc_client_t *c0, *c1;
    char key[128];
    pthread_mutex_t mu;
    int64_t last_fence;        /* under mu: the fence of the latest grant */
    atomic_int holders;        /* threads that believe they hold key now */
    _Atomic int64_t killed_at; /* monotonic ms; 0 until instance 0 is killed */
    atomic_int granted, failed_over;
    _Atomic int64_t slowest_refusal_ms; /* after the kill, on the killed instance */
} lk_shared_t;

typedef struct {
    lk_shared_t *sh;
    int index;
    bool on_first; /* parks on instance 0, the one killed */
} lk_waiter_t;

/* A grant: checks the fence grows and nobody else holds key, holds it briefly, releases. */
static void
lk_use(lk_shared_t *sh, const svc_lock_t *l, const char *who, int hold_ms)
{
    svc_status_t code;

    if (atomic_fetch_add(&sh->holders, 1) != 0) {
        cf_violation(sh->t, "lock_svc_kill: %s got %s (fence %" PRId64 ") while another holds it",
                     who, sh->key, l->fence);
    }
    pthread_mutex_lock(&sh->mu);
    if (l->fence <= sh->last_fence) {
        cf_violation(sh->t, "lock_svc_kill: %s got fence %" PRId64 " after %" PRId64, who, l->fence,
                     sh->last_fence);
    } else {
        sh->last_fence = l->fence;
    }
    pthread_mutex_unlock(&sh->mu);
    svc_sleep_ms(hold_ms);
    atomic_fetch_sub(&sh->holders, 1); /* before the release: the next grant may come at once */
    if ((code = cf_lock_release(sh->c1, sh->t, l)) != SVC_OK) {
        cf_violation(sh->t, "lock_svc_kill: %s's release answered %s", who, svc_status_name(code));
    }
}

static void *
lk_waiter_thread(void *arg)
{
    lk_waiter_t *w = arg;
    lk_shared_t *sh = w->sh;
    svc_lock_t l;
    svc_status_t code;
    char who[32];

    snprintf(who, sizeof(who), "waiter %d", w->index);
    code =
        cf_lock_acquire(w->on_first ? sh->c0 : sh->c1, sh->t, sh->key, LK_LEASE_MS, LK_WAIT_MS, &l);
    if (w->on_first) {
        int64_t killed = atomic_load(&sh->killed_at), after = svc_now_mono_ms() - killed;
        if (code == SVC_OK) {
            cf_violation(sh->t, "lock_svc_kill: %s got the lock from the killed instance", who);
            return NULL;
        }
        if (code != SVC_UNAVAILABLE || killed == 0 || after > LK_PROMPT_MS) {
            cf_violation(sh->t,
                         "lock_svc_kill: %s on the killed instance answered %s %" PRId64
                         " ms after the kill (%s), want UNAVAILABLE within %d ms",
                         who, svc_status_name(code), after,
                         killed == 0 ? "not killed yet" : "killed", LK_PROMPT_MS);
        }
        for (int64_t prev = atomic_load(&sh->slowest_refusal_ms);
             killed != 0 && after > prev &&
             !atomic_compare_exchange_weak(&sh->slowest_refusal_ms, &prev, after);) {
        }
        /* A client's failover: the same request to the instance still alive. */
        atomic_fetch_add(&sh->failed_over, 1);
        code = cf_lock_acquire(sh->c1, sh->t, sh->key, LK_LEASE_MS, LK_WAIT_MS, &l);
    }
    if (code != SVC_OK) {
        cf_violation(sh->t, "lock_svc_kill: %s never got the lock: %s", who, svc_status_name(code));
        return NULL;
    }
    atomic_fetch_add(&sh->granted, 1);
    lk_use(sh, &l, who, 10);
    return NULL;
}

/* Acquire calls parked on key, as lock-svc counts them (across instances); -1 on error. */
static int
lk_waiters(svc_client_t *c, const char *key)
{
    Lock__V1__GetLockRequest req = LOCK__V1__GET_LOCK_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    svc_call_opts_t opts = {.timeout_ms = 2000};
    svc_arena_t *arena = svc_arena_create();
    svc_err_t err;
    int n = -1;

    if (arena == NULL) {
        return -1;
    }
    req.key = (char *)key;
    if (svc_client_unary(c, "/lock.v1.LockService/GetLock", &req.base,
                         &lock__v1__get_lock_response__descriptor, arena, &resp, &opts,
                         &err) == 0) {
        n = ((Lock__V1__GetLockResponse *)resp)->waiters;
    }
    svc_arena_destroy(arena);
    return n;
}

/* The restarted instance serves again: Acquire (retried while its channel reconnects). */
static void
lk_check_restarted(lk_shared_t *sh)
{
    int64_t until = svc_now_mono_ms() + 10000;
    svc_status_t code;
    svc_lock_t l;

    do {
        code = cf_lock_acquire(sh->c0, sh->t, sh->key, LK_LEASE_MS, 1000, &l);
        if (code == SVC_UNAVAILABLE) {
            svc_sleep_ms(200);
        }
    } while (code == SVC_UNAVAILABLE && svc_now_mono_ms() < until);
    if (code != SVC_OK) {
        cf_violation(sh->t, "lock_svc_kill: the restarted instance answered Acquire with %s",
                     svc_status_name(code));
        return;
    }
    fprintf(stderr, "lock_svc_kill: the restarted instance granted fence %" PRId64 "\n", l.fence);
    lk_use(sh, &l, "the restarted instance's client", 0);
}

int
sc_lock_svc_kill(cf_ctx_t *ctx, cf_tally_t *t)
{
    static cf_stack_t stack;
    cf_stack_opts_t opts = {.n_lock = 2};
    int n = ctx->quick ? 10 : 24, n_first = n * 2 / 3, parked = -1, rc = 0;
    lk_shared_t sh = {.t = t};
    lk_waiter_t *w = NULL;
    pthread_t *threads = NULL;
    pthread_attr_t attr;
    svc_lock_t holder;
    svc_status_t code;
    int64_t until;
    int started = 0;

    /* The holder must outlive the parking and the kill, or a waiter gets the lock early. */
    _Static_assert(LK_HOLDER_LEASE_MS > 2 * (LK_PARK_TIMEOUT_MS + 300 + 500), "holder lease");
    if (cf_stack_start(ctx, &stack, &opts) != 0) {
        cf_stack_stop(&stack);
        return -1;
    }
    pthread_mutex_init(&sh.mu, NULL);
    sh.c0 = cf_client(stack.lock[0].addr);
    sh.c1 = cf_client(stack.lock[1].addr);
    cf_unique(sh.key, sizeof(sh.key), "lock-svc-kill");
    w = calloc((size_t)n, sizeof(*w));
    threads = calloc((size_t)n, sizeof(*threads));
    if (sh.c0 == NULL || sh.c1 == NULL || w == NULL || threads == NULL) {
        rc = -1;
        goto out;
    }
    code = cf_lock_acquire(sh.c1, t, sh.key, LK_HOLDER_LEASE_MS, 0, &holder);
    if (code != SVC_OK) {
        fprintf(stderr, "lock_svc_kill: the holder's Acquire answered %s\n", svc_status_name(code));
        rc = -1;
        goto out;
    }
    atomic_fetch_add(&sh.holders, 1);
    sh.last_fence = holder.fence;

    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < n; i++) {
        w[i] = (lk_waiter_t){&sh, i, i < n_first};
        if (pthread_create(&threads[i], &attr, lk_waiter_thread, &w[i]) != 0) {
            break;
        }
        started++;
    }
    pthread_attr_destroy(&attr);
    /*
     * Kill only once they are parked. GetLock's count is the signal, but it
     * may stay short of all of them (waiters that raced through their first
     * try together are parked uncounted), so it is waited for a while only,
     * then a pause covers the stragglers. A waiter answered before the kill
     * is caught by its thread.
     */
    until = svc_now_mono_ms() + LK_PARK_TIMEOUT_MS;
    while ((parked = lk_waiters(sh.c1, sh.key)) < started && svc_now_mono_ms() < until) {
        svc_sleep_ms(50);
    }
    svc_sleep_ms(300);
    parked = lk_waiters(sh.c1, sh.key);
    if (parked < started) {
        fprintf(stderr, "lock_svc_kill: note: GetLock counts %d waiters, %d are parked\n", parked,
                started);
    }
    atomic_store(&sh.killed_at, svc_now_mono_ms());
    testenv_proc_kill(&stack.lock[0]);
    /* The failed-over waiters queue behind the holder on instance 1, then it lets go. */
    svc_sleep_ms(500);
    atomic_fetch_sub(&sh.holders, 1);
    if ((code = cf_lock_release(sh.c1, t, &holder)) != SVC_OK) {
        cf_violation(t, "lock_svc_kill: the holder's release answered %s", svc_status_name(code));
    }
    for (int i = 0; i < started; i++) {
        pthread_join(threads[i], NULL);
    }
    fprintf(stderr,
            "lock_svc_kill: %d waiters (%d on the killed instance) parked %d; %d failed over"
            " (refused at most %" PRId64 " ms after the kill); %d granted in %" PRId64
            " ms after the kill, last fence %" PRId64 "\n",
            started, n_first, parked, atomic_load(&sh.failed_over),
            atomic_load(&sh.slowest_refusal_ms), atomic_load(&sh.granted),
            svc_now_mono_ms() - atomic_load(&sh.killed_at), sh.last_fence);
    if (atomic_load(&sh.granted) != started) {
        cf_violation(t, "lock_svc_kill: %d of %d waiters got the lock", atomic_load(&sh.granted),
                     started);
    }
    if (testenv_proc_restart(&stack.lock[0]) != 0) {
        cf_violation(t, "lock_svc_kill: instance 0 did not restart");
    } else {
        lk_check_restarted(&sh);
    }
    cf_check_invariants(t, &stack.targets, NULL);
out:
    free(w);
    free(threads);
    pthread_mutex_destroy(&sh.mu);
    if (cf_stack_stop(&stack) != 0) {
        cf_violation(t, "a service exited badly");
    }
    return rc;
}
