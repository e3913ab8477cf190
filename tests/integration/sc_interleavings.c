/*
 * sc_interleavings.c: a seeded random schedule of users holding, paying,
 * cancelling, topping up, reading and letting holds expire, while a fault
 * thread pauses, kills and restarts every process and store in turn. Once all
 * is healed and no payment is pending, the invariants of README.md's "One outcome only" are
 * read from both databases: one outcome per hold, paid once or not at all,
 * no seat with two owners, and every OK answer in the data.
 *
 * The seed is printed first; --seed N replays the same choices (the timing
 * of threads and faults still varies) and --seconds S sets the length.
 * Clients that see a payment's fate left unknown (UNAVAILABLE, DEADLINE)
 * often give up: they cancel and another user holds the same seats at once,
 * the interleaving in which a late payment must not win.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "conformance.h"
#include "reservation/v1/reservation.pb-c.h"
#include "svc/timer.h"

#define IL_DEFAULT_SECONDS 60
#define IL_QUICK_SECONDS 20
#define IL_HOLD_TTL_MS 1500
#define IL_MAX_USERS 16
#define IL_MAX_SCHEDULES 4
#define IL_MAX_OPEN 6 /* reservations a user keeps in mind */
#define IL_MAX_RESERVATIONS 20000
#define IL_SETTLE_MS 30000
#define IL_RICH 20000 /* a first top-up that pays for several seats */
#define IL_POOR 700   /* one that pays for few or none */
/*
 * payments.status of a payment that still needs balance-svc: pending (1),
 * and, since two-phase payments, capturing (4), voiding (5), refunding (6).
 */
#define IL_PAY_UNSETTLED "1, 4, 5, 6"

/* ------------------------------------------------------------ Randomness */

/* splitmix64: small, good enough, and the same on every machine for a seed. */
static uint64_t
rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* A number in lo..hi. */
static int64_t
rnd_in(uint64_t *s, int64_t lo, int64_t hi)
{
    return lo + (int64_t)(rnd(s) % (uint64_t)(hi - lo + 1));
}

/* True with probability pct %. */
static bool
chance(uint64_t *s, int pct)
{
    return rnd_in(s, 0, 99) < pct;
}

/* An index into weights[n], drawn by weight. */
static int
pick(uint64_t *s, const int *weights, int n)
{
    int total = 0, r;

    for (int i = 0; i < n; i++) {
        total += weights[i];
    }
    r = (int)rnd_in(s, 0, total - 1);
    for (int i = 0; i < n; i++) {
        if (r < weights[i]) {
            return i;
        }
        r -= weights[i];
    }
    return n - 1;
}

/* ------------------------------------------------------------- The run */

enum { OP_TOPUP, OP_HOLD, OP_PAY, OP_CANCEL, OP_GET, OP_LIST_SEATS, OP_BALANCE, OP_WAIT, N_OPS };
static const char *const op_names[N_OPS] = {
    "TopUp",          "HoldSeats", "PayReservation", "CancelReservation",
    "GetReservation", "ListSeats", "GetBalance",     "wait past TTL"};

enum {
    F_PAUSE_BALANCE,
    F_PAUSE_RESERVATION,
    F_KILL_BALANCE,
    F_KILL_RESERVATION,
    F_KILL_LOCK,
    F_RESTART_PG,
    F_RESTART_REDIS,
    N_FAULTS
};
static const char *const fault_names[N_FAULTS] = {
    "balance-svc paused", "reservation-svc paused", "balance-svc killed", "reservation-svc killed",
    "lock-svc killed",    "PostgreSQL killed",      "Redis killed"};
/* Balance-svc pauses are what leaves a payment's fate unknown: the most of them. */
static const int fault_weights[N_FAULTS] = {50, 8, 8, 8, 8, 8, 10};

typedef struct {
    int64_t id, price;
    int count;
} schedule_t;

typedef struct {
    cf_stack_t *stack;
    cf_tally_t *tally;
    cf_acks_t acks; /* top-ups and holds answered OK, for the shared checks */
    svc_client_t *reservation, *balance;
    uint64_t seed;
    int64_t end_mono_ms;
    atomic_bool stop;
    schedule_t schedules[IL_MAX_SCHEDULES];
    int n_schedules;
    /* Every reservation a HoldSeats answered OK for, with what later answers said. */
    pthread_mutex_t mu;
    inv_answer_t *answers;
    int n_answers;
    atomic_long ops[N_OPS][CF_CODES];
    atomic_long faults[N_FAULTS];
    atomic_long gave_up;  /* pays of unknown fate followed by a cancel OK and another's hold */
    atomic_long reseized; /* of those, holds of the same seats by another user that got them */
    atomic_long replaced; /* schedules sold out and replaced by a fresh one */
} il_run_t;

typedef struct {
    il_run_t *run;
    uint64_t rng;
    int64_t users[2];
    int open[2][IL_MAX_OPEN]; /* indexes into run->answers, -1: none */
    char last_key[2][64];     /* the last payment key used, to send again */
    char topup_key[2][64];    /* the last top-up key and amount, to replay */
    int64_t topup_amount[2];
} il_worker_t;

static void
count_op(il_run_t *run, int op, svc_status_t code)
{
    atomic_fetch_add(&run->ops[op][(unsigned)code < CF_CODES ? code : SVC_UNKNOWN], 1);
}

/* Whether a call's effect is unknown to the client: it may or may not have happened. */
static bool
fate_unknown(svc_status_t code)
{
    return code == SVC_UNAVAILABLE || code == SVC_DEADLINE_EXCEEDED || code == SVC_CANCELLED;
}

/* ---------------------------------------------------------------- Calls */

/* A copy of answer i, read under the lock. */
static inv_answer_t
answer_of(il_run_t *run, int i)
{
    inv_answer_t a;

    pthread_mutex_lock(&run->mu);
    a = run->answers[i];
    pthread_mutex_unlock(&run->mu);
    return a;
}

static void
mark(il_run_t *run, int i, bool paid, bool cancelled)
{
    pthread_mutex_lock(&run->mu);
    run->answers[i].paid |= paid;
    run->answers[i].cancelled |= cancelled;
    pthread_mutex_unlock(&run->mu);
}

/* A cancel of answer i whose answer was lost: the reservation may be cancelled. */
static void
mark_cancel(il_run_t *run, int i, svc_status_t code)
{
    if (code == SVC_OK) {
        mark(run, i, false, true);
    } else if (fate_unknown(code)) {
        pthread_mutex_lock(&run->mu);
        run->answers[i].cancel_lost = true;
        pthread_mutex_unlock(&run->mu);
    }
}

/* GetReservation: a reservation whose cancel answered OK must read CANCELLED from then on. */
static void
get_reservation(il_run_t *run, int i)
{
    Reservation__V1__GetReservationRequest req = RESERVATION__V1__GET_RESERVATION_REQUEST__INIT;
    svc_arena_t *arena = svc_arena_create();
    ProtobufCMessage *resp = NULL;
    inv_answer_t before = answer_of(run, i);
    svc_status_t code;

    if (arena == NULL) {
        abort();
    }
    req.reservation_id = before.id;
    code =
        cf_call(run->reservation, run->tally, "/reservation.v1.ReservationService/GetReservation",
                &req.base, &reservation__v1__get_reservation_response__descriptor, arena, &resp);
    count_op(run, OP_GET, code);
    if (code == SVC_OK && before.cancelled) {
        Reservation__V1__Reservation *r =
            ((Reservation__V1__GetReservationResponse *)resp)->reservation;
        if (r != NULL &&
            r->status != RESERVATION__V1__RESERVATION_STATUS__RESERVATION_STATUS_CANCELLED) {
            cf_violation(run->tally,
                         "interleavings: reservation %" PRId64 " reads status %d after its"
                         " CancelReservation answered OK",
                         before.id, (int)r->status);
        }
    }
    svc_arena_destroy(arena);
}

/* Schedule k, read under the lock (a sold-out one may be replaced meanwhile). */
static schedule_t
schedule_of(il_run_t *run, int k)
{
    schedule_t s;

    pthread_mutex_lock(&run->mu);
    s = run->schedules[k];
    pthread_mutex_unlock(&run->mu);
    return s;
}

/*
 * A sold-out schedule is replaced by a fresh one of the same size and price,
 * so that the run keeps contending for few seats: a confirmed seat comes back
 * only through a refunded cancel, and code without one would run dry.
 */
static void
replace_schedule(il_run_t *run, int k, int64_t sold_out)
{
    schedule_t s = schedule_of(run, k);
    int64_t id;

    if (s.id != sold_out) {
        return;
    }
    id = cf_new_schedule(run->reservation, run->stack->targets.admin_token, "interleavings",
                         s.count, s.price);
    if (id < 0) {
        return; /* a fault, say: another ListSeats tries again */
    }
    pthread_mutex_lock(&run->mu);
    if (run->schedules[k].id == sold_out) {
        run->schedules[k].id = id;
        atomic_fetch_add(&run->replaced, 1);
    }
    pthread_mutex_unlock(&run->mu);
}

/* ListSeats of schedule k; replaces it when every seat is sold. */
static void
list_seats(il_run_t *run, int k)
{
    Reservation__V1__ListSeatsRequest req = RESERVATION__V1__LIST_SEATS_REQUEST__INIT;
    svc_arena_t *arena = svc_arena_create();
    ProtobufCMessage *resp = NULL;
    svc_status_t code;
    size_t sold = 0;

    if (arena == NULL) {
        abort();
    }
    req.schedule_id = schedule_of(run, k).id;
    code = cf_call(run->reservation, run->tally, "/reservation.v1.ReservationService/ListSeats",
                   &req.base, &reservation__v1__list_seats_response__descriptor, arena, &resp);
    count_op(run, OP_LIST_SEATS, code);
    if (code == SVC_OK) {
        Reservation__V1__ListSeatsResponse *r = (void *)resp;
        for (size_t i = 0; i < r->n_seats; i++) {
            sold += r->seats[i]->status == RESERVATION__V1__SEAT_STATUS__SEAT_STATUS_SOLD;
        }
        if (r->n_seats > 0 && sold == r->n_seats) {
            replace_schedule(run, k, req.schedule_id);
        }
    }
    svc_arena_destroy(arena);
}

/* ---------------------------------------------------------------- Users */

static void
top_up(il_worker_t *w, int u, bool replay)
{
    il_run_t *run = w->run;
    int64_t txn = 0;
    svc_status_t code;

    if (!replay || w->topup_key[u][0] == '\0') {
        /* Now and then too little to pay for anything. */
        w->topup_amount[u] =
            chance(&w->rng, 30) ? rnd_in(&w->rng, 1, 500) : rnd_in(&w->rng, 1000, 10000);
        cf_unique(w->topup_key[u], sizeof(w->topup_key[u]), "il-topup");
    }
    code = cf_topup(run->balance, run->tally, w->users[u], w->topup_amount[u], w->topup_key[u],
                    &txn, NULL);
    count_op(run, OP_TOPUP, code);
    if (code == SVC_OK) {
        cf_ack_ledger(&run->acks, w->users[u], w->topup_key[u], txn);
    }
}

/* Remembers a reservation user u holds; forgets the oldest when full. */
static void
remember(il_worker_t *w, int u, int answer)
{
    memmove(&w->open[u][1], &w->open[u][0], (IL_MAX_OPEN - 1) * sizeof(int));
    w->open[u][0] = answer;
}

static void
forget(il_worker_t *w, int u, int answer)
{
    for (int i = 0; i < IL_MAX_OPEN; i++) {
        if (w->open[u][i] == answer) {
            memmove(&w->open[u][i], &w->open[u][i + 1],
                    (size_t)(IL_MAX_OPEN - 1 - i) * sizeof(int));
            w->open[u][IL_MAX_OPEN - 1] = -1;
            return;
        }
    }
}

/* Holds seats of schedule for user u; returns the answer's index, or -1. */
static int
hold(il_worker_t *w, int u, int64_t schedule, const int32_t *seats, int n)
{
    il_run_t *run = w->run;
    int64_t id = 0;
    svc_status_t code =
        cf_hold(run->reservation, run->tally, w->users[u], schedule, seats, n, 5000, &id);
    int i = -1;

    count_op(run, OP_HOLD, code);
    if (code != SVC_OK) {
        return -1;
    }
    cf_ack_held(&run->acks, id);
    pthread_mutex_lock(&run->mu);
    if (run->n_answers < IL_MAX_RESERVATIONS) {
        i = run->n_answers++;
        run->answers[i] =
            (inv_answer_t){.id = id, .user_id = w->users[u], .schedule_id = schedule, .n_seats = n};
        memcpy(run->answers[i].seats, seats, (size_t)n * sizeof(*seats));
    }
    pthread_mutex_unlock(&run->mu);
    if (i >= 0) {
        remember(w, u, i);
    }
    return i;
}

static int
cmp_seat(const void *a, const void *b)
{
    return *(const int32_t *)a - *(const int32_t *)b;
}

static void pay(il_worker_t *w, int u, int i);

/* Holds 1..3 random seats; mostly pays at once, as people do; a refusal makes it look around. */
static void
hold_random(il_worker_t *w, int u)
{
    int k = (int)rnd_in(&w->rng, 0, w->run->n_schedules - 1), n = (int)rnd_in(&w->rng, 1, 3), got;
    schedule_t s = schedule_of(w->run, k);
    int32_t seats[3];

    n = n < s.count ? n : s.count;
    for (int j = 0; j < n;) { /* n distinct seats */
        int32_t seat = (int32_t)rnd_in(&w->rng, 1, s.count);
        bool dup = false;
        for (int m = 0; m < j; m++) {
            dup |= seats[m] == seat;
        }
        if (!dup) {
            seats[j++] = seat;
        }
    }
    qsort(seats, (size_t)n, sizeof(*seats), cmp_seat);
    got = hold(w, u, s.id, seats, n);
    if (got >= 0 && chance(&w->rng, 60)) {
        pay(w, u, got);
    } else if (got < 0 && chance(&w->rng, 30)) {
        list_seats(w->run, k);
    }
}

typedef struct {
    il_run_t *run;
    int64_t reservation, user, timeout_ms;
    char key[64];
    svc_status_t code;
} pay_job_t;

static void *
pay_thread(void *arg)
{
    pay_job_t *j = arg;

    j->code = cf_pay(j->run->reservation, j->run->tally, j->reservation, j->user, j->key,
                     j->timeout_ms, NULL);
    count_op(j->run, OP_PAY, j->code);
    return NULL;
}

/*
 * Pays answer i of user u: with the last key again or a new one, and now and
 * then twice at once. A payment whose fate stays unknown is often given up:
 * cancelled, and the same seats held at once by the worker's other user.
 */
static void
pay(il_worker_t *w, int u, int i)
{
    il_run_t *run = w->run;
    inv_answer_t a = answer_of(run, i);
    pay_job_t jobs[2] = {{.run = run, .reservation = a.id, .user = a.user_id}};
    pthread_t second;
    bool twice = chance(&w->rng, 15), started = false;

    jobs[0].timeout_ms = rnd_in(&w->rng, 1000, 2500);
    if (w->last_key[u][0] == '\0' || chance(&w->rng, 50)) {
        cf_unique(w->last_key[u], sizeof(w->last_key[u]), "il-pay");
    }
    snprintf(jobs[0].key, sizeof(jobs[0].key), "%s", w->last_key[u]);
    jobs[1] = jobs[0];
    if (twice && chance(&w->rng, 50)) {
        cf_unique(jobs[1].key, sizeof(jobs[1].key), "il-pay");
    }
    if (twice) {
        started = pthread_create(&second, NULL, pay_thread, &jobs[1]) == 0;
    }
    pay_thread(&jobs[0]);
    if (started) {
        pthread_join(second, NULL);
    }
    if (jobs[0].code == SVC_OK || (started && jobs[1].code == SVC_OK)) {
        mark(run, i, true, false);
        return;
    }
    if (!fate_unknown(jobs[0].code) || !chance(&w->rng, 70)) {
        return;
    }
    /* Gives up: cancels (trying a few times), and the other user takes the seats at once. */
    svc_status_t code = SVC_UNAVAILABLE;
    for (int attempt = 0; attempt < 4 && fate_unknown(code); attempt++) {
        if (attempt > 0) {
            svc_sleep_ms(200);
        }
        code = cf_cancel(run->reservation, run->tally, a.id, a.user_id);
        count_op(run, OP_CANCEL, code);
        mark_cancel(run, i, code);
    }
    if (code != SVC_OK) {
        return;
    }
    forget(w, u, i);
    atomic_fetch_add(&run->gave_up, 1);
    if (hold(w, 1 - u, a.schedule_id, a.seats, a.n_seats) >= 0) {
        atomic_fetch_add(&run->reseized, 1);
    }
}

static void
cancel(il_worker_t *w, int u, int i)
{
    il_run_t *run = w->run;
    inv_answer_t a = answer_of(run, i);
    svc_status_t code = cf_cancel(run->reservation, run->tally, a.id, a.user_id);

    count_op(run, OP_CANCEL, code);
    mark_cancel(run, i, code);
    if (code == SVC_OK || code == SVC_FAILED_PRECONDITION) {
        forget(w, u, i);
    }
}

/* One step of user u: an operation drawn by weight. */
static void
step(il_worker_t *w, int u)
{
    static const int weights[N_OPS] = {8, 25, 28, 10, 8, 5, 5, 3};
    il_run_t *run = w->run;
    int op = pick(&w->rng, weights, N_OPS);
    /* Mostly the newest reservation: it is the one still held. */
    int slot = chance(&w->rng, 70) ? 0 : (int)rnd_in(&w->rng, 0, IL_MAX_OPEN - 1);
    int i = w->open[u][slot];

    if ((op == OP_PAY || op == OP_CANCEL || op == OP_GET) && i < 0) {
        op = OP_HOLD;
    }
    switch (op) {
    case OP_TOPUP:
        top_up(w, u, chance(&w->rng, 15));
        break;
    case OP_HOLD:
        hold_random(w, u);
        break;
    case OP_PAY:
        pay(w, u, i);
        break;
    case OP_CANCEL:
        cancel(w, u, i);
        break;
    case OP_GET:
        get_reservation(run, i);
        break;
    case OP_LIST_SEATS:
        list_seats(run, (int)rnd_in(&w->rng, 0, run->n_schedules - 1));
        break;
    case OP_BALANCE:
        count_op(run, OP_BALANCE, cf_get_balance(run->balance, run->tally, w->users[u], NULL));
        break;
    default:
        atomic_fetch_add(&run->ops[OP_WAIT][SVC_OK], 1);
        svc_sleep_ms(IL_HOLD_TTL_MS + rnd_in(&w->rng, 100, 500));
        break;
    }
}

static void *
worker(void *arg)
{
    il_worker_t *w = arg;

    while (!atomic_load(&w->run->stop) && svc_now_mono_ms() < w->run->end_mono_ms) {
        step(w, (int)rnd_in(&w->rng, 0, 1));
        svc_sleep_ms(rnd_in(&w->rng, 5, 60));
    }
    return NULL;
}

/* --------------------------------------------------------------- Faults */

/* One fault, healed before it returns; 0, or -1 when it could not be done. */
static int
inject(il_run_t *run, int fault, uint64_t *rng)
{
    cf_stack_t *s = run->stack;
    testenv_proc_t *p = fault == F_PAUSE_BALANCE || fault == F_KILL_BALANCE ? &s->balance[0]
                        : fault == F_KILL_LOCK                              ? &s->lock[0]
                                                                            : &s->reservation[0];
    int rc;

    switch (fault) {
    case F_PAUSE_BALANCE:
    case F_PAUSE_RESERVATION:
        rc = testenv_proc_pause(p);
        svc_sleep_ms(rnd_in(rng, 500, 3000));
        return testenv_proc_resume(p) | rc;
    case F_KILL_BALANCE:
    case F_KILL_RESERVATION:
    case F_KILL_LOCK:
        rc = testenv_proc_kill(p);
        svc_sleep_ms(rnd_in(rng, 200, 1000));
        return testenv_proc_restart(p) | rc;
    case F_RESTART_PG:
        rc = testenv_pg_kill(&s->pg);
        svc_sleep_ms(rnd_in(rng, 200, 1000));
        return testenv_pg_restart(&s->pg) | rc;
    default:
        rc = testenv_redis_kill(&s->redis);
        svc_sleep_ms(rnd_in(rng, 200, 1000));
        return testenv_redis_restart(&s->redis) | rc;
    }
}

static void *
fault_thread(void *arg)
{
    il_run_t *run = arg;
    uint64_t rng = run->seed ^ 0xfa017fa017ULL;

    svc_sleep_ms(rnd_in(&rng, 500, 2000)); /* some calls first */
    while (svc_now_mono_ms() < run->end_mono_ms - 2000) {
        int fault = pick(&rng, fault_weights, N_FAULTS);
        if (inject(run, fault, &rng) != 0) {
            cf_violation(run->tally, "interleavings: %s could not be injected and healed",
                         fault_names[fault]);
            atomic_store(&run->stop, true);
            break;
        }
        atomic_fetch_add(&run->faults[fault], 1);
        svc_sleep_ms(rnd_in(&rng, 1000, 4000));
    }
    return NULL;
}

/* ---------------------------------------------------------------- Setup */

/* The schedules (the last one free), and each user's account before its first hold. */
static int
prepare(il_run_t *run, il_worker_t *workers, int n_workers, uint64_t *rng)
{
    static const int64_t prices[] = {1000, 2500, 4000};

    run->n_schedules = (int)rnd_in(rng, 2, IL_MAX_SCHEDULES);
    for (int i = 0; i < run->n_schedules; i++) {
        schedule_t *s = &run->schedules[i];
        int64_t price = i == run->n_schedules - 1 ? 0 : prices[rnd_in(rng, 0, 2)];
        s->count = (int)rnd_in(rng, 3, 5);
        s->price = price;
        s->id = cf_new_schedule(run->reservation, run->stack->targets.admin_token, "interleavings",
                                s->count, price);
        if (s->id < 0) {
            return -1;
        }
        fprintf(stderr, "interleavings: schedule %" PRId64 ": %d seats at %" PRId64 "\n", s->id,
                s->count, price);
    }
    for (int k = 0; k < n_workers; k++) {
        il_worker_t *w = &workers[k];
        w->run = run;
        w->rng = run->seed ^ ((uint64_t)(k + 1) * 0x9e3779b97f4a7c15ULL);
        memset(w->open, -1, sizeof(w->open));
        for (int u = 0; u < 2; u++) {
            char key[64];
            int64_t txn = 0, amount = chance(rng, 25) ? IL_POOR : IL_RICH;
            w->users[u] = cf_new_user();
            cf_unique(key, sizeof(key), "il-open");
            if (cf_topup(run->balance, run->tally, w->users[u], amount, key, &txn, NULL) !=
                SVC_OK) {
                return -1;
            }
            cf_ack_ledger(&run->acks, w->users[u], key, txn);
        }
    }
    return 0;
}

/* --------------------------------------------------------------- Ending */

/* Waits until no payment needs balance-svc (bounded); returns how many still do. */
static int64_t
settle(il_run_t *run)
{
    const char *sql = "SELECT count(*) FROM payments WHERE status IN (" IL_PAY_UNSETTLED ")";
    int64_t give_up_at = svc_now_mono_ms() + IL_SETTLE_MS, pending;

    while ((pending = testenv_pg_query_int(&run->stack->pg, sql)) != 0 &&
           svc_now_mono_ms() < give_up_at) {
        svc_sleep_ms(250);
    }
    return pending;
}

static void
report(il_run_t *run, int64_t now_ms)
{
    static const char *const states[] = {"held and live", "held past expiry", "confirmed",
                                         "cancelled", "expired"};
    char sql[160];

    for (int op = 0; op < N_OPS; op++) {
        char line[512];
        size_t used = 0;
        for (int c = 0; c < CF_CODES; c++) {
            long n = atomic_load(&run->ops[op][c]);
            if (n > 0 && used < sizeof(line)) {
                used += (size_t)snprintf(line + used, sizeof(line) - used, " %s=%ld",
                                         svc_status_name((svc_status_t)c), n);
            }
        }
        fprintf(stderr, "interleavings: %-17s%s\n", op_names[op], used ? line : " -");
    }
    for (int f = 0; f < N_FAULTS; f++) {
        fprintf(stderr, "interleavings: fault %-22s %ld\n", fault_names[f],
                atomic_load(&run->faults[f]));
    }
    fprintf(stderr,
            "interleavings: %ld payments of unknown fate given up (cancel OK), %ld of their"
            " seats held again by another user; %ld sold-out schedules replaced\n",
            atomic_load(&run->gave_up), atomic_load(&run->reseized), atomic_load(&run->replaced));
    for (int st = 0; st < 5; st++) {
        /* status 1 splits into live and past expiry; 2..4 as stored */
        if (st < 2) {
            snprintf(
                sql, sizeof(sql),
                "SELECT count(*) FROM reservations WHERE status = 1 AND expires_at_ms %s %" PRId64,
                st == 0 ? ">" : "<=", now_ms);
        } else {
            snprintf(sql, sizeof(sql), "SELECT count(*) FROM reservations WHERE status = %d", st);
        }
        fprintf(stderr, "interleavings: reservations %-17s %" PRId64 "\n", states[st],
                testenv_pg_query_int(&run->stack->pg, sql));
    }
}

/* Every invariant of §4.1 over both databases; violations go to the tally. */
static void
check(il_run_t *run)
{
    const cf_targets_t *t = &run->stack->targets;
    long before = atomic_load(&run->tally->violations);
    int64_t pending = settle(run), now = svc_now_unix_ms();

    if (pending != 0) {
        cf_violation(run->tally, "interleavings: %" PRId64 " payments still pending after %d s",
                     pending, IL_SETTLE_MS / 1000);
    }
    report(run, now);
    cf_check_invariants(run->tally, t, &run->acks);
    cf_add_check(run->tally, "authorizations",
                 inv_check_authorizations(t->balance_db, now, stderr));
    cf_add_check(run->tally, "what reservations cost",
                 inv_check_charges(t->reservation_db, t->balance_db, stderr));
    pthread_mutex_lock(&run->mu);
    cf_add_check(
        run->tally, "answers in the data",
        inv_check_answers(t->reservation_db, t->balance_db, run->answers, run->n_answers, stderr));
    pthread_mutex_unlock(&run->mu);
    fprintf(stderr,
            "interleavings: seed %" PRIu64 ", %d reservations answered OK, %ld violations\n",
            run->seed, run->n_answers, atomic_load(&run->tally->violations) - before);
}

static uint64_t
fresh_seed(void)
{
    uint64_t s = 0;

    if (getrandom(&s, sizeof(s), 0) != sizeof(s)) {
        s = (uint64_t)time(NULL) * 2654435761u;
    }
    return s % 1000000000000ULL; /* short enough to type */
}

int
sc_interleavings(cf_ctx_t *ctx, cf_tally_t *t)
{
    static const cf_stack_opts_t opts = {
        .reservation_env = {"HOLD_TTL_MS=1500", "SWEEP_MS=200", NULL},
    };
    static il_run_t run; /* large: not on the stack */
    int seconds = ctx->seconds > 0 ? ctx->seconds
                  : ctx->quick     ? IL_QUICK_SECONDS
                                   : IL_DEFAULT_SECONDS;
    uint64_t rng;
    il_worker_t *workers = NULL;
    pthread_t faults;
    int n_workers, rc = -1;

    memset(&run, 0, sizeof(run));
    run.seed = ctx->seed_set ? ctx->seed : fresh_seed();
    run.tally = t;
    rng = run.seed;
    n_workers = (int)rnd_in(&rng, 4, IL_MAX_USERS / 2); /* two users each: 8..16 users */
    fprintf(stderr,
            "interleavings: seed %" PRIu64 " (replay: conformance --seed %" PRIu64
            " interleavings), %d s, %d users\n",
            run.seed, run.seed, seconds, 2 * n_workers);
    run.stack = calloc(1, sizeof(*run.stack));
    run.answers = calloc(IL_MAX_RESERVATIONS, sizeof(*run.answers));
    workers = calloc((size_t)n_workers, sizeof(*workers));
    if (run.stack == NULL || run.answers == NULL || workers == NULL) {
        goto out;
    }
    pthread_mutex_init(&run.mu, NULL);
    cf_acks_init(&run.acks);
    if (cf_stack_start(ctx, run.stack, &opts) != 0) {
        goto out_stack;
    }
    run.reservation = cf_client(run.stack->targets.reservation_addr);
    run.balance = cf_client(run.stack->targets.balance_addr);
    if (run.reservation == NULL || run.balance == NULL ||
        prepare(&run, workers, n_workers, &rng) != 0) {
        fprintf(stderr, "interleavings: could not prepare the schedules and accounts\n");
        goto out_stack;
    }
    run.end_mono_ms = svc_now_mono_ms() + (int64_t)seconds * 1000;
    if (pthread_create(&faults, NULL, fault_thread, &run) != 0) {
        goto out_stack;
    }
    cf_parallel(n_workers, worker, workers, sizeof(*workers));
    pthread_join(faults, NULL); /* every fault is healed when it returns */
    check(&run);
    rc = 0;
out_stack:
    if (cf_stack_stop(run.stack) != 0 && rc == 0) {
        cf_violation(t, "interleavings: a service exited badly");
    }
    cf_acks_free(&run.acks);
    pthread_mutex_destroy(&run.mu);
out:
    free(workers);
    free(run.answers);
    free(run.stack);
    return rc;
}
