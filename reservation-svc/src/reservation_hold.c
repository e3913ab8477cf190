/*
 * reservation_hold.c: HoldSeats. A seat already held or sold is refused
 * before anyone queues for its lock; a user without a balance account is
 * refused before any seat is locked (the hold could never be paid); then the
 * seats' lock tokens seat:<schedule>:<number> are taken (ascending, without
 * a thread waiting), one short transaction writes the hold (fenced), and the
 * tokens go back.
 *
 * The seat gate: in a storm, a thousand calls want the same seat at once.
 * Only one of them per instance goes on (the leader); a call that wants a
 * seat a leader of this instance is working on is parked on that seat, with
 * no thread and no lock-svc call, until the leader is done. If the leader
 * got the seat, or found it taken, every call parked on it is refused at
 * once: the seat was taken while each of them was waiting, so the answer is
 * as true as a database read would be. Otherwise (the leader's user has no
 * account, its deadline passed, a fault) they enter the gate again and the
 * first becomes the next leader. So a loser costs a gate lookup instead of
 * a lock hand-off and a transaction, and the seat's lock sees one waiter per
 * instance instead of hundreds. Calls on other seats never wait for each
 * other here. Nothing is cached past the leader's call: a seat freed a
 * moment later is found free by the next call.
 *
 * A call is ended by exactly one party: the leader path for a leader, the
 * leader's finish for a parked call it refuses, or the cancellation (deadline
 * or client) for a parked call, all decided under gate_mu.
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

/* ---------- schedules' waiting rooms ---------- */

static size_t
room_slot(int64_t schedule_id)
{
    return (size_t)(((uint64_t)schedule_id * 0x9E3779B97F4A7C15ull) >> 48) % RSV_KNOWN_ROOMS;
}

void
reservation_room_remember(reservation_service_t *svc, int64_t schedule_id, int32_t limit,
                          int64_t ttl_ms)
{
    pthread_mutex_lock(&svc->rooms_mu);
    if (svc->n_rooms >= RSV_KNOWN_ROOMS / 2) { /* keep probes short: start over */
        memset(svc->rooms, 0, RSV_KNOWN_ROOMS * sizeof(*svc->rooms));
        svc->n_rooms = 0;
    }
    for (size_t i = room_slot(schedule_id), k = 0; k < RSV_KNOWN_ROOMS; k++) {
        struct rsv_room_slot *r = &svc->rooms[(i + k) % RSV_KNOWN_ROOMS];
        if (r->limit_plus_one == 0 || r->schedule_id == schedule_id) {
            svc->n_rooms += r->limit_plus_one == 0;
            r->schedule_id = schedule_id;
            r->limit_plus_one = limit + 1;
            r->ttl_ms = ttl_ms;
            break;
        }
    }
    pthread_mutex_unlock(&svc->rooms_mu);
}

int32_t
reservation_room_limit(reservation_service_t *svc, int64_t schedule_id, int64_t *ttl_ms)
{
    int32_t limit = -1;

    pthread_mutex_lock(&svc->rooms_mu);
    for (size_t i = room_slot(schedule_id), k = 0; k < RSV_KNOWN_ROOMS; k++) {
        const struct rsv_room_slot *r = &svc->rooms[(i + k) % RSV_KNOWN_ROOMS];
        if (r->limit_plus_one == 0 || r->schedule_id == schedule_id) {
            limit = r->limit_plus_one - 1;
            if (ttl_ms != NULL) {
                *ttl_ms = r->ttl_ms;
            }
            break;
        }
    }
    pthread_mutex_unlock(&svc->rooms_mu);
    return limit;
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

/* ---------- the seat gate ---------- */

typedef enum { H_NEW, H_PARKED, H_LEADING, H_DONE } hold_state_t;

/* One HoldSeats in progress; it lives in its call's arena. */
struct rsv_hold {
    struct rsv_hold *prev, *next; /* among the calls parked on entry */
    struct rsv_seat_entry *entry;
    reservation_service_t *svc;
    svc_call_t *call;
    int64_t user_id, schedule_id;
    int32_t seats[RSV_MAX_SEATS];
    int n;
    hold_state_t state; /* under gate_mu */
    svc_lock_t *locks;  /* a leader's, in the call's arena: a parked call stays small */
    rsv_reservation_t result;
    int32_t taken; /* the seat found held or sold, 0 when none */
    svc_err_t err;
    char admission_token[RSV_ADMISSION_TOKEN_MAX]; /* as sent; cut (so refused) when longer */
    rsv_admission_t admission; /* what a good token said (ticket "" when none was needed) */
};

/* A seat a leader of this instance is working on, and the calls parked on it. */
struct rsv_seat_entry {
    struct rsv_seat_entry *next; /* hash chain */
    int64_t schedule_id;
    int32_t number;
    rsv_hold_t *leader;
    rsv_hold_t *head, *tail; /* parked, first come first */
};

static size_t
seat_bucket(int64_t schedule_id, int32_t number)
{
    uint64_t h = ((uint64_t)schedule_id * 0x9E3779B97F4A7C15ull) ^ (uint32_t)number;

    return (size_t)((h * 0xBF58476D1CE4E5B9ull) >> 40) % RSV_GATE_BUCKETS;
}

static rsv_seat_entry_t *
seat_find(reservation_service_t *svc, int64_t schedule_id, int32_t number)
{
    for (rsv_seat_entry_t *e = svc->gate[seat_bucket(schedule_id, number)]; e != NULL;
         e = e->next) {
        if (e->schedule_id == schedule_id && e->number == number) {
            return e;
        }
    }
    return NULL;
}

static void
seat_unlink(reservation_service_t *svc, rsv_seat_entry_t *e)
{
    rsv_seat_entry_t **pp = &svc->gate[seat_bucket(e->schedule_id, e->number)];

    while (*pp != e) {
        pp = &(*pp)->next;
    }
    *pp = e->next;
}

static void
park_on(rsv_seat_entry_t *e, rsv_hold_t *h)
{
    h->state = H_PARKED;
    h->entry = e;
    h->next = NULL;
    h->prev = e->tail;
    if (e->tail != NULL) {
        e->tail->next = h;
    } else {
        e->head = h;
    }
    e->tail = h;
}

static void
unpark(rsv_seat_entry_t *e, rsv_hold_t *h)
{
    if (h->prev != NULL) {
        h->prev->next = h->next;
    } else {
        e->head = h->next;
    }
    if (h->next != NULL) {
        h->next->prev = h->prev;
    } else {
        e->tail = h->prev;
    }
    h->prev = h->next = NULL;
    h->entry = NULL;
}

static bool
wants_seat(const rsv_hold_t *h, int32_t number)
{
    for (int i = 0; i < h->n; i++) {
        if (h->seats[i] == number) {
            return true;
        }
    }
    return false;
}

static void lead(rsv_hold_t *h);
static void lead_job(void *arg);

/* A leader's token whose admission ended (left, or paid a hold) is refused. */
static int
still_admitted(rsv_hold_t *h, svc_err_t *err)
{
    bool ended = false;

    if (h->admission.ticket[0] == '\0') {
        return 0; /* no waiting room */
    }
    if (rsv_store_admission_ended(h->svc->db, h->admission.ticket, reservation_db_deadline(h->call),
                                  &ended, err) != 0) {
        return -1;
    }
    if (ended) {
        svc_err_set(err, SVC_FAILED_PRECONDITION,
                    "not admitted to schedule %" PRId64
                    ": the admission ended (the user left the waiting room or paid)",
                    h->schedule_id);
        return -1;
    }
    return 0;
}

/*
 * On a schedule with a waiting room (limit > 0), h needs an admission token
 * of its user for that schedule: 0 when it has one, else -1 with err. This
 * checks the signature only; still_admitted asks the database whether the
 * admission ended early.
 */
static int
admitted(rsv_hold_t *h, int32_t limit, svc_err_t *err)
{
    if (limit <= 0) {
        return 0;
    }
    return rsv_admission_verify(&h->svc->opts.admission_key, h->admission_token, h->user_id,
                                h->schedule_id, svc_now_unix_ms(), &h->admission, err);
}

/*
 * Lets h through the gate: parked behind the leader of one of its seats, or
 * leader of all of them. A new leader's path runs here when on_worker, else
 * on the pool (the caller may be the client thread, which must not block).
 */
static void
gate_enter(rsv_hold_t *h, bool on_worker)
{
    reservation_service_t *svc = h->svc;
    rsv_seat_entry_t *entries[RSV_MAX_SEATS];
    svc_err_t err;
    int made = 0;

    /* A schedule known to have a waiting room: refused here, without waiting for anyone. */
    if (admitted(h, reservation_room_limit(svc, h->schedule_id, NULL), &err) != 0) {
        h->state = H_DONE;
        svc_call_fail(h->call, &err);
        return;
    }
    pthread_mutex_lock(&svc->gate_mu);
    if (svc_call_cancelled(h->call)) {
        /* Its cancellation may have come while it was between leaders, unseen: end it now. */
        h->state = H_DONE;
        pthread_mutex_unlock(&svc->gate_mu);
        svc_err_set(&err,
                    svc_call_deadline_ms(h->call) <= svc_now_unix_ms() ? SVC_DEADLINE_EXCEEDED
                                                                       : SVC_CANCELLED,
                    "the call ended while the seat was busy");
        svc_call_fail(h->call, &err);
        return;
    }
    for (int i = 0; i < h->n; i++) {
        rsv_seat_entry_t *e = seat_find(svc, h->schedule_id, h->seats[i]);
        if (e != NULL) {
            park_on(e, h);
            pthread_mutex_unlock(&svc->gate_mu);
            return;
        }
    }
    for (; made < h->n; made++) {
        rsv_seat_entry_t *e = calloc(1, sizeof(*e));
        if (e == NULL) {
            break;
        }
        e->schedule_id = h->schedule_id;
        e->number = h->seats[made];
        e->leader = h;
        e->next = svc->gate[seat_bucket(e->schedule_id, e->number)];
        svc->gate[seat_bucket(e->schedule_id, e->number)] = e;
        entries[made] = e;
    }
    if (made < h->n) { /* out of memory: nobody can be parked on these yet */
        for (int i = 0; i < made; i++) {
            seat_unlink(svc, entries[i]);
            free(entries[i]);
        }
        h->state = H_DONE;
        pthread_mutex_unlock(&svc->gate_mu);
        svc_err_set(&err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        svc_call_fail(h->call, &err);
        return;
    }
    h->state = H_LEADING;
    pthread_mutex_unlock(&svc->gate_mu);
    if (on_worker) {
        lead(h);
    } else if (svc_pool_submit(svc_server_pool(svc->server), lead_job, h) != 0) {
        lead(h); /* the pool is gone (shutdown): finish here */
    }
}

/*
 * The leader h is done (h->err, h->result, h->taken): its call is answered,
 * and so is every call parked on its seats that wants a seat now known to
 * be taken; the others enter the gate again.
 */
static void
gate_leave(rsv_hold_t *h)
{
    reservation_service_t *svc = h->svc;
    rsv_hold_t *refused = NULL, *again = NULL, **again_tail = &again;
    int32_t taken = h->err.code == SVC_FAILED_PRECONDITION ? h->taken : 0;
    int64_t schedule_id = h->schedule_id;

    pthread_mutex_lock(&svc->gate_mu);
    for (int i = 0; i < h->n; i++) {
        rsv_seat_entry_t *e = seat_find(svc, h->schedule_id, h->seats[i]);
        seat_unlink(svc, e);
        while (e->head != NULL) {
            rsv_hold_t *p = e->head;
            bool lost = h->err.code == SVC_OK || (taken != 0 && wants_seat(p, taken));
            unpark(e, p);
            if (lost) {
                p->state = H_DONE;
                p->taken = h->err.code == SVC_OK ? h->seats[i] : taken;
                p->next = refused;
                refused = p;
            } else {
                p->state = H_NEW;
                *again_tail = p;
                again_tail = &p->next;
            }
        }
        free(e);
    }
    h->state = H_DONE;
    pthread_mutex_unlock(&svc->gate_mu);

    if (h->err.code == SVC_OK) {
        reservation_reply_held(h->call, &h->result);
    } else {
        svc_call_fail(h->call, &h->err);
    }
    while (refused != NULL) {
        rsv_hold_t *p = refused;
        svc_err_t err;
        refused = p->next;
        svc_err_set(&err, SVC_FAILED_PRECONDITION,
                    "seat %d of schedule %" PRId64 " is not available", (int)p->taken, schedule_id);
        svc_call_fail(p->call, &err);
    }
    while (again != NULL) {
        rsv_hold_t *p = again;
        svc_log_ctx_t saved;
        again = p->next;
        svc_call_log_enter(p->call, &saved); /* its own call now, not the leader's */
        gate_enter(p, false);
        svc_log_ctx_leave(&saved);
    }
}

/* A parked call's deadline passed or its client went away: it leaves the gate. */
static void
hold_cancelled(svc_call_t *call, void *arg)
{
    rsv_hold_t *h = arg;
    reservation_service_t *svc = h->svc;
    svc_err_t err;

    pthread_mutex_lock(&svc->gate_mu);
    if (h->state != H_PARKED) { /* a leader ends by its own path, which sees the cancellation */
        pthread_mutex_unlock(&svc->gate_mu);
        return;
    }
    unpark(h->entry, h);
    h->state = H_DONE;
    pthread_mutex_unlock(&svc->gate_mu);
    if (svc_call_deadline_ms(call) <= svc_now_unix_ms()) {
        svc_err_set(&err, SVC_DEADLINE_EXCEEDED, "deadline exceeded while the seat was busy");
    } else {
        svc_err_set(&err, SVC_CANCELLED, "cancelled while the seat was busy");
    }
    svc_call_fail(call, &err);
}

/* ---------- fail-fast checks, shared ---------- */

#define PRECHECK_BATCH 256 /* checks one statement carries at most */

/* A leader waiting for its fail-fast check; on its own stack. */
typedef struct rsv_precheck_wait {
    struct rsv_precheck_wait *next;
    rsv_precheck_t check;
    int64_t deadline_ms;
    bool done; /* under precheck_mu */
} rsv_precheck_wait_t;

/*
 * The fail-fast check of h's seats. In a storm hundreds of leaders (one per
 * seat) want one at once; one statement at a time runs, carrying every
 * check that arrived meanwhile, so the database reads the seats of a whole
 * wave of leaders in one round trip instead of one each. The waiter whose
 * turn comes runs the statement for all; the others wait for its outcome.
 */
static int
precheck(reservation_service_t *svc, rsv_hold_t *h)
{
    rsv_precheck_wait_t me = {
        .check = {.schedule_id = h->schedule_id, .seats = h->seats, .n = h->n},
        .deadline_ms = reservation_db_deadline(h->call)};

    pthread_mutex_lock(&svc->precheck_mu);
    if (svc->precheck_tail != NULL) {
        svc->precheck_tail->next = &me;
    } else {
        svc->precheck_head = &me;
    }
    svc->precheck_tail = &me;
    while (!me.done) {
        rsv_precheck_wait_t *batch[PRECHECK_BATCH];
        rsv_precheck_t *checks[PRECHECK_BATCH];
        int64_t deadline_ms = 0;
        svc_err_t err;
        int n = 0;

        if (svc->precheck_running) {
            pthread_cond_wait(&svc->precheck_cv, &svc->precheck_mu);
            continue;
        }
        svc->precheck_running = true;
        while (svc->precheck_head != NULL && n < PRECHECK_BATCH) {
            rsv_precheck_wait_t *w = svc->precheck_head;
            svc->precheck_head = w->next;
            batch[n] = w;
            checks[n++] = &w->check;
            deadline_ms = w->deadline_ms > deadline_ms ? w->deadline_ms : deadline_ms;
        }
        if (svc->precheck_head == NULL) {
            svc->precheck_tail = NULL;
        }
        pthread_mutex_unlock(&svc->precheck_mu);
        (void)rsv_store_precheck_many(svc->db, checks, n, svc_now_unix_ms(), deadline_ms, &err);
        pthread_mutex_lock(&svc->precheck_mu);
        for (int i = 0; i < n; i++) {
            batch[i]->done = true;
        }
        svc->precheck_running = false;
        pthread_cond_broadcast(&svc->precheck_cv);
    }
    pthread_mutex_unlock(&svc->precheck_mu);
    if (me.check.rc == 0 || me.check.err.code == SVC_FAILED_PRECONDITION ||
        me.check.err.code == SVC_INVALID_ARGUMENT) { /* the schedule exists: its room is known */
        reservation_room_remember(svc, h->schedule_id, me.check.waiting_room_limit,
                                  me.check.admission_ttl_ms);
    }
    h->taken = me.check.taken;
    h->err = me.check.err;
    return me.check.rc;
}

/* ---------- the leader's path ---------- */

static void write_hold(void *arg);

/* The seats' tokens came (or not); runs on the client thread, so the write goes to the pool. */
static void
locked(const svc_err_t *err, int failed, void *arg)
{
    rsv_hold_t *h = arg;

    if (err->code == SVC_OK) {
        svc_logf(SVC_LOG_DEBUG, "%d seat locks of schedule %" PRId64 " taken, first fence %" PRId64,
                 h->n, h->schedule_id, h->locks[0].fence);
        if (svc_pool_submit(svc_server_pool(h->svc->server), write_hold, h) != 0) {
            write_hold(h);
        }
        return;
    }
    h->err = *err;
    if (err->code == SVC_ABORTED && failed >= 0) {
        svc_err_set(&h->err, SVC_ABORTED, "seat %d of schedule %" PRId64 " is busy, try again",
                    (int)h->seats[failed], h->schedule_id);
    }
    gate_leave(h);
}

/*
 * Fail fast, then ask for the seats' tokens (locked goes on, in this log
 * context). On a worker, in h's call's log context.
 */
static void
lead(rsv_hold_t *h)
{
    reservation_service_t *svc = h->svc;
    char keys[RSV_MAX_SEATS][48];
    const char *key_ptrs[RSV_MAX_SEATS];
    svc_lock_opts_t lopts = {.owner = "reservation-svc",
                             .lease_ms = svc->opts.lock_lease_ms,
                             .wait_ms = svc->opts.lock_wait_ms,
                             .parent = h->call};

    /* Fail fast: a seat already held or sold is refused before anyone queues for its lock. */
    if (precheck(svc, h) != 0 ||
        admitted(h, reservation_room_limit(svc, h->schedule_id, NULL), &h->err) != 0 ||
        still_admitted(h, &h->err) != 0 || check_account(svc, h->call, h->user_id, &h->err) != 0) {
        gate_leave(h);
        return;
    }
    h->locks = svc_arena_alloc(svc_call_arena(h->call), (size_t)h->n * sizeof(*h->locks));
    if (h->locks == NULL) {
        svc_err_set(&h->err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        gate_leave(h);
        return;
    }
    for (int i = 0; i < h->n; i++) {
        snprintf(keys[i], sizeof(keys[i]), "seat:%" PRId64 ":%d", h->schedule_id, (int)h->seats[i]);
        key_ptrs[i] = keys[i];
    }
    svc_lock_acquire_many_async(svc->lock_svc, key_ptrs, h->n, &lopts, h->locks, locked, h);
}

/* lead as a job on the pool: a worker that serves no call yet. */
static void
lead_job(void *arg)
{
    rsv_hold_t *h = arg;
    svc_log_ctx_t saved;

    svc_call_log_enter(h->call, &saved);
    lead(h);
    svc_log_ctx_leave(&saved);
}

/* The tokens are ours: the transaction, then the tokens go back. On a worker. */
static void
write_hold(void *arg)
{
    rsv_hold_t *h = arg;
    reservation_service_t *svc = h->svc;
    int64_t fences[RSV_MAX_SEATS];
    svc_log_ctx_t saved;

    svc_call_log_enter(h->call, &saved); /* a job on the pool: name the call on its lines */
    for (int i = 0; i < h->n; i++) {
        fences[i] = h->locks[i].fence;
    }
    /*
     * The worst moment to stall: the locks are ours but nothing is written
     * yet. A pause here longer than the lease lets another instance take the
     * seat; the fence and the row check must refuse our write when we resume.
     */
    svc_failpoint_pause("hold_after_lock");
    (void)rsv_store_hold(
        svc->db, h->user_id, h->schedule_id, h->seats, fences, h->n, svc_now_unix_ms(),
        svc->opts.hold_ttl_ms, h->admission.ticket[0] != '\0' ? h->admission.ticket : NULL,
        reservation_db_deadline(h->call), svc_call_arena(h->call), &h->result, &h->taken, &h->err);
    if (h->err.code == SVC_OK) {
        svc_logf(SVC_LOG_DEBUG, "reservation %" PRId64 " holds %d seats of schedule %" PRId64,
                 h->result.id, h->n, h->schedule_id);
    } else {
        svc_logf(SVC_LOG_DEBUG, "hold on schedule %" PRId64 " not written: %s", h->schedule_id,
                 h->err.msg);
    }
    /* After the commit: no other call inside a transaction. */
    svc_lock_release_many(svc->lock_svc, h->locks, h->n, svc_call_request_id(h->call));
    gate_leave(h); /* h and its call are gone after it */
    svc_log_ctx_leave(&saved);
}

void
reservation_hold_start(reservation_service_t *svc, svc_call_t *call, int64_t user_id,
                       int64_t schedule_id, const int32_t *seats, int n,
                       const char *admission_token)
{
    rsv_hold_t *h = svc_call_alloc(call, sizeof(*h));

    if (h == NULL) {
        return;
    }
    h->svc = svc;
    h->call = call;
    h->user_id = user_id;
    h->schedule_id = schedule_id;
    memcpy(h->seats, seats, (size_t)n * sizeof(*seats));
    h->n = n;
    if (admission_token != NULL && strlen(admission_token) < sizeof(h->admission_token)) {
        memcpy(h->admission_token, admission_token, strlen(admission_token) + 1);
    } else if (admission_token != NULL) {
        memcpy(h->admission_token, "too-long", sizeof("too-long")); /* refused as malformed */
    }
    h->state = H_NEW;
    svc_err_clear(&h->err);
    svc_call_on_cancel(call, hold_cancelled, h);
    gate_enter(h, true);
}

void
reservation_gate_destroy(reservation_service_t *svc)
{
    /* Every call has ended by now, and each took its entries with it. */
    free(svc->gate);
    svc->gate = NULL;
}
