/*
 * sc_sentinel.c: a Redis primary failover under Sentinel (one primary, one
 * replica, three Sentinels, all from Debian's packages) during a lock storm
 * and a seat storm. lock-svc must follow the new primary by itself, fences
 * must never go backwards, and no seat may be double-booked.
 *
 * Replication is asynchronous: a lock granted on the old primary just before
 * it died may be missing on the new one, so two holders may overlap during
 * the failover. That is allowed (fences exist for it) and only counted here;
 * what is checked is that every fence is above every fence granted before the
 * Acquire was sent, and that the database's own net holds for the seats.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conformance.h"
#include "svc/timer.h"
#include "testenv_sentinel.h"

#define N_KEYS 4
#define MAX_LOCKERS 32
#define SEATS 20
#define KEEPERS 3 /* seat takers that keep their latest hold */
#define LEASE_MS 2000
#define WAIT_MS 2000
#define SERVE_AGAIN_MS 15000 /* after the kill: lock-svc must have granted again by then */

enum { BEFORE, DURING, AFTER, PHASES }; /* the kill, then the Sentinels' promotion */
static const char *const phase_name[PHASES] = {"before", "during", "after"};

/* One lock key as the clients saw it. */
typedef struct {
    char name[96];
    int64_t max_fence; /* the highest fence granted so far */
    /* Who holds it by our clients' account: when they sent the Acquire, or 0. */
    int64_t held_since[MAX_LOCKERS];
} key_state_t;

typedef struct {
    cf_tally_t *t;
    svc_client_t *lock[CF_MAX_INSTANCES], *reservation;
    int n_lock;
    int64_t schedule;
    cf_acks_t acks;
    atomic_bool stop;
    atomic_int phase;
    atomic_llong t_kill; /* monotonic ms of the kill; set before phase leaves BEFORE */

    pthread_mutex_t mu; /* guards keys */
    key_state_t keys[N_KEYS];
    atomic_long grants[PHASES], holds[PHASES], overlaps, late;
    /* Answers by phase: [0] Acquire, [1] HoldSeats. */
    atomic_long codes[2][PHASES][CF_CODES];
    /* Monotonic ms of each instance's first grant after the kill; 0: none yet. */
    atomic_llong served_again[CF_MAX_INSTANCES];
} sentinel_run_t;

typedef struct {
    sentinel_run_t *run;
    int id;   /* lockers 0..n-1, then seat takers */
    int role; /* 0 locker, 1 seat taker, 2 the conductor */
    bool quick;
    testenv_sentinel_t *sentinels;
    int new_port; /* set by the conductor */
    int64_t user; /* a seat taker's, with a balance account */
} worker_t;

static void
count_code(sentinel_run_t *r, int call, int phase, svc_status_t code)
{
    atomic_fetch_add(&r->codes[call][phase][(unsigned)code < CF_CODES ? code : SVC_UNKNOWN], 1);
}

static unsigned
worker_seed(const worker_t *w)
{
    return (unsigned)svc_now_mono_ms() * 2654435761u + (unsigned)w->id;
}

/*
 * Checks a grant against what was granted before the Acquire was sent
 * (floor): a fence at or below it went backwards. A fence below the highest
 * one seen now but above floor only came back late (concurrent calls).
 */
static void
note_grant(sentinel_run_t *r, int k, int me, const svc_lock_t *l, int64_t floor, int64_t sent)
{
    key_state_t *ks = &r->keys[k];
    int64_t now = svc_now_mono_ms();
    long overlap = 0;

    pthread_mutex_lock(&r->mu);
    if (l->fence <= floor) {
        pthread_mutex_unlock(&r->mu);
        cf_violation(r->t,
                     "key %s: fence %" PRId64 " granted after fence %" PRId64
                     " had been (fences went backwards)",
                     ks->name, l->fence, floor);
        pthread_mutex_lock(&r->mu);
    } else if (l->fence <= ks->max_fence) {
        atomic_fetch_add(&r->late, 1);
    }
    if (l->fence > ks->max_fence) {
        ks->max_fence = l->fence;
    }
    /* Another of our holders whose lease surely runs (sent less than a lease ago). */
    for (int i = 0; i < MAX_LOCKERS; i++) {
        overlap |= i != me && ks->held_since[i] > 0 && now < ks->held_since[i] + LEASE_MS;
    }
    ks->held_since[me] = sent;
    pthread_mutex_unlock(&r->mu);
    atomic_fetch_add(&r->overlaps, overlap);
}

static void
locker(worker_t *w)
{
    sentinel_run_t *r = w->run;
    int inst = w->id % r->n_lock;
    unsigned seed = worker_seed(w);

    while (!atomic_load(&r->stop)) {
        int k = (int)(rand_r(&seed) % N_KEYS);
        int64_t floor, sent;
        svc_lock_t l;
        svc_status_t code;
        int phase;

        pthread_mutex_lock(&r->mu);
        floor = r->keys[k].max_fence;
        pthread_mutex_unlock(&r->mu);
        sent = svc_now_mono_ms();
        code = cf_lock_acquire(r->lock[inst], r->t, r->keys[k].name, LEASE_MS, WAIT_MS, &l);
        phase = atomic_load(&r->phase);
        count_code(r, 0, phase, code);
        if (code != SVC_OK) {
            if (code == SVC_UNAVAILABLE) {
                svc_sleep_ms(20 + rand_r(&seed) % 30); /* fast refusals: no busy loop */
            }
            continue;
        }
        note_grant(r, k, w->id, &l, floor, sent);
        atomic_fetch_add(&r->grants[phase], 1);
        if (phase != BEFORE && sent > atomic_load(&r->t_kill)) { /* asked the new primary */
            long long zero = 0;
            atomic_compare_exchange_strong(&r->served_again[inst], &zero, svc_now_mono_ms());
        }
        svc_sleep_ms(rand_r(&seed) % 5); /* the critical section */
        pthread_mutex_lock(&r->mu);
        r->keys[k].held_since[w->id] = 0;
        pthread_mutex_unlock(&r->mu);
        /* NOT_FOUND or FAILED_PRECONDITION after a lost write are refusals, not faults. */
        cf_lock_release(r->lock[inst], r->t, &l);
    }
}

/*
 * Cancels a hold, again while lock-svc is away (UNAVAILABLE): a hold left
 * behind would keep its seats for its whole lifetime and starve the storm.
 */
static void
cancel(sentinel_run_t *r, int64_t id, int64_t user, unsigned *seed)
{
    while (cf_cancel(r->reservation, r->t, id, user) == SVC_UNAVAILABLE && !atomic_load(&r->stop)) {
        svc_sleep_ms(20 + rand_r(seed) % 30);
    }
}

static void
seat_taker(worker_t *w)
{
    sentinel_run_t *r = w->run;
    unsigned seed = worker_seed(w);
    int64_t user = w->user, kept = 0;

    while (!atomic_load(&r->stop)) {
        int32_t seats[2];
        int n = 1 + (int)(rand_r(&seed) % 2);
        int64_t id;
        svc_status_t code;
        int phase;

        seats[0] = 1 + (int32_t)(rand_r(&seed) % SEATS);
        seats[1] = 1 + (seats[0] + (int32_t)(rand_r(&seed) % (SEATS - 1))) % SEATS;
        code = cf_hold(r->reservation, r->t, user, r->schedule, seats, n, 0, &id);
        phase = atomic_load(&r->phase);
        count_code(r, 1, phase, code);
        if (code == SVC_OK) {
            cf_ack_held(&r->acks, id);
            atomic_fetch_add(&r->holds[phase], 1);
            svc_sleep_ms(rand_r(&seed) % 20);
            /*
             * Holds are cancelled so the 20 seats keep changing hands, but a
             * few takers keep their latest one (at most KEEPERS holds at a
             * time) so that live holds are also there for the check at the end.
             */
            if (w->id < KEEPERS && rand_r(&seed) % 4 == 0) {
                if (kept > 0) {
                    cancel(r, kept, user, &seed);
                }
                kept = id;
            } else {
                cancel(r, id, user, &seed);
            }
        } else if (code == SVC_UNAVAILABLE) {
            svc_sleep_ms(20 + rand_r(&seed) % 30);
        }
    }
}

/* Lets the storms run, kills the primary, waits for the failover and for lock-svc. */
static void
conductor(worker_t *w)
{
    bool quick = w->quick;
    sentinel_run_t *r = w->run;
    int old_port = testenv_sentinel_master_port(w->sentinels);
    testenv_redis_t *primary = testenv_sentinel_redis(w->sentinels, old_port);
    int64_t t_kill, t_promoted, deadline;
    bool all_served = false;

    svc_sleep_ms(quick ? 1000 : 1500);
    if (primary == NULL) {
        cf_violation(r->t, "the Sentinels name no primary of ours (port %d)", old_port);
        atomic_store(&r->stop, true);
        return;
    }
    t_kill = svc_now_mono_ms();
    atomic_store(&r->t_kill, t_kill);
    atomic_store(&r->phase, DURING);
    if (testenv_redis_kill(primary) != 0) {
        cf_violation(r->t, "could not kill the primary");
        atomic_store(&r->stop, true);
        return;
    }
    fprintf(stderr, "sentinel_failover: primary on port %d SIGKILLed\n", old_port);
    w->new_port = testenv_sentinel_wait_failover(w->sentinels, old_port, 30000);
    t_promoted = svc_now_mono_ms();
    atomic_store(&r->phase, AFTER);
    if (w->new_port < 0) {
        cf_violation(r->t, "the Sentinels did not promote the replica within 30 s");
        atomic_store(&r->stop, true);
        return;
    }
    fprintf(stderr,
            "sentinel_failover: the Sentinels agree on port %d, %" PRId64 " ms after the kill\n",
            w->new_port, t_promoted - t_kill);
    deadline = t_kill + SERVE_AGAIN_MS;
    while (!all_served && svc_now_mono_ms() < deadline) {
        all_served = true;
        for (int i = 0; i < r->n_lock; i++) {
            all_served &= atomic_load(&r->served_again[i]) != 0;
        }
        if (!all_served) {
            svc_sleep_ms(50);
        }
    }
    for (int i = 0; i < r->n_lock; i++) {
        long long at = atomic_load(&r->served_again[i]);
        if (at == 0) {
            cf_violation(r->t, "lock-svc #%d granted no lock within %d s of the kill", i,
                         SERVE_AGAIN_MS / 1000);
        } else {
            fprintf(stderr,
                    "sentinel_failover: lock-svc #%d granted again %lld ms after the kill\n", i,
                    at - t_kill);
        }
    }
    svc_sleep_ms(quick ? 1500 : 2500); /* the storms on the new primary for a while */
    atomic_store(&r->stop, true);
}

static void *
worker_main(void *arg)
{
    worker_t *w = arg;

    switch (w->role) {
    case 0:
        locker(w);
        break;
    case 1:
        seat_taker(w);
        break;
    default:
        conductor(w);
    }
    return NULL;
}

static void
print_codes(const sentinel_run_t *r, int call)
{
    for (int p = 0; p < PHASES; p++) {
        char line[512];
        size_t used = 0;

        line[0] = '\0';
        for (int c = 0; c < CF_CODES && used < sizeof(line); c++) {
            long n = atomic_load(&r->codes[call][p][c]);
            if (n > 0) {
                used += (size_t)snprintf(line + used, sizeof(line) - used, " %s=%ld",
                                         svc_status_name((svc_status_t)c), n);
            }
        }
        fprintf(stderr, "sentinel_failover: %s answers %s the failover:%s\n",
                call == 0 ? "Acquire" : "HoldSeats", phase_name[p], line[0] ? line : " none");
    }
}

int
sc_sentinel_failover(cf_ctx_t *ctx, cf_tally_t *t)
{
    static testenv_sentinel_t sentinels;
    static cf_stack_t stack;
    static sentinel_run_t run;
    /*
     * Seat locks whose release was lost with the primary block their seats on
     * the new one until their lease ends: 3 s instead of the default 10 s lets
     * the seat storm recover within the scenario.
     */
    cf_stack_opts_t opts = {
        .n_lock = 2, .n_reservation = 1, .reservation_env = {"LOCK_LEASE_MS=3000"}};
    int n_lockers = ctx->quick ? 12 : 24, n_takers = ctx->quick ? 8 : 16;
    int n = n_lockers + n_takers + 1;
    worker_t *w = NULL;
    svc_client_t *balance;
    char url[256], title[64];
    int rc = -1, new_port = -1;

    memset(&sentinels, 0, sizeof(sentinels));
    memset(&run, 0, sizeof(run));
    if (testenv_sentinel_start(&sentinels) != 0 ||
        testenv_sentinel_url(&sentinels, url, sizeof(url)) != 0) {
        testenv_sentinel_stop(&sentinels);
        return -1;
    }
    opts.redis_url = url;
    if (cf_stack_start(ctx, &stack, &opts) != 0) {
        goto out;
    }
    run.t = t;
    run.n_lock = stack.n_lock;
    for (int i = 0; i < stack.n_lock; i++) {
        /* One channel per instance: each must be seen to follow the new primary. */
        if ((run.lock[i] = cf_client(stack.lock[i].addr)) == NULL) {
            goto out;
        }
    }
    if ((run.reservation = cf_client(stack.targets.reservation_addr)) == NULL ||
        (balance = cf_client(stack.targets.balance_addr)) == NULL) {
        goto out;
    }
    cf_unique(title, sizeof(title), "sentinel-failover");
    run.schedule = cf_new_schedule(run.reservation, stack.targets.admin_token, title, SEATS, 1000);
    if (run.schedule < 0) {
        goto out;
    }
    for (int k = 0; k < N_KEYS; k++) {
        cf_unique(run.keys[k].name, sizeof(run.keys[k].name), "sentinel");
    }
    pthread_mutex_init(&run.mu, NULL);
    cf_acks_init(&run.acks);
    if ((w = calloc((size_t)n, sizeof(*w))) == NULL) {
        abort();
    }
    for (int i = 0; i < n; i++) {
        w[i].run = &run;
        w[i].sentinels = &sentinels;
        w[i].id = i < n_lockers ? i : i - n_lockers;
        w[i].role = i < n_lockers ? 0 : i < n - 1 ? 1 : 2;
        w[i].quick = ctx->quick;
        if (w[i].role == 1 && (w[i].user = cf_new_account(balance)) == 0) {
            goto out;
        }
    }
    fprintf(stderr,
            "sentinel_failover: %d lock-svc, %d lockers on %d keys, %d seat takers on %d seats, "
            "REDIS_URL=%s\n",
            stack.n_lock, n_lockers, N_KEYS, n_takers, SEATS, url);
    cf_parallel(n, worker_main, w, sizeof(*w));
    new_port = w[n - 1].new_port;

    fprintf(stderr,
            "sentinel_failover: grants before/during/after %ld/%ld/%ld, holds %ld/%ld/%ld, "
            "overlapping grants %ld, fences back late %ld\n",
            atomic_load(&run.grants[BEFORE]), atomic_load(&run.grants[DURING]),
            atomic_load(&run.grants[AFTER]), atomic_load(&run.holds[BEFORE]),
            atomic_load(&run.holds[DURING]), atomic_load(&run.holds[AFTER]),
            atomic_load(&run.overlaps), atomic_load(&run.late));
    print_codes(&run, 0);
    print_codes(&run, 1);
    if (atomic_load(&run.grants[AFTER]) == 0) {
        cf_violation(t, "no lock was granted after the failover");
    }
    if (atomic_load(&run.holds[AFTER]) == 0) {
        cf_violation(t, "reservation-svc held no seat after the failover");
    }
    cf_check_invariants(t, &stack.targets, &run.acks);
    if (new_port > 0) {
        cf_add_check(t, "locks on the new primary", inv_check_locks("127.0.0.1", new_port, stderr));
    }
    cf_acks_free(&run.acks);
    pthread_mutex_destroy(&run.mu);
    rc = 0;
out:
    free(w);
    if (cf_stack_stop(&stack) != 0) {
        cf_violation(t, "a service exited badly");
    }
    if (testenv_sentinel_stop(&sentinels) != 0) {
        cf_violation(t, "the Sentinels or Redis did not stop cleanly");
    }
    return rc;
}
