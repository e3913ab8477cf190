/*
 * reservation_service.c: reservation.v1.ReservationService. HoldSeats checks
 * the seats without locks first (a taken seat is refused at once, without
 * queueing), then takes lock tokens seat:<schedule>:<number> in ascending
 * order, runs one short transaction, and gives the tokens back. A sweeper
 * marks expired holds EXPIRED; reads treat them as free before it runs.
 * PayReservation records a payment intent (which keeps the hold alive), asks
 * balance-svc to spend with a key derived from the reservation, then confirms:
 * a retry, a concurrent call or a restart finishes the same payment, and the
 * sweeper finishes payments a crash left pending.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "balance/v1/balance.pb-c.h"
#include "reservation/v1/reservation.pb-c.h"
#include "reservation_service.h"
#include "reservation_store.h"
#include "svc/failpoint.h"
#include "svc/lock_client.h"
#include "svc/log.h"
#include "svc/validate.h"

#define MAX_SEATS 10
#define MAX_SCHEDULES 100
#define MAX_SEAT_COUNT 10000
#define MAX_PRICE 100000000LL
#define DB_BUDGET_MS 5000

struct reservation_service {
    svc_server_t *server;
    svc_pg_pool_t *db;
    svc_client_t *lock_svc;
    svc_client_t *balance_svc;
    reservation_opts_t opts;
    pthread_t sweeper;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping, sweeper_running;
};

static int64_t
db_deadline(svc_call_t *call)
{
    int64_t budget = svc_now_unix_ms() + DB_BUDGET_MS, d = svc_call_deadline_ms(call);

    return d < budget ? d : budget;
}

/* ---------- messages ---------- */

static Reservation__V1__Reservation *
to_pb_reservation(svc_arena_t *arena, const rsv_reservation_t *r)
{
    Reservation__V1__Reservation *m = svc_arena_alloc(arena, sizeof(*m));

    if (m == NULL) {
        return NULL;
    }
    reservation__v1__reservation__init(m);
    m->id = r->id;
    m->user_id = r->user_id;
    m->schedule_id = r->schedule_id;
    m->seat_numbers = (int32_t *)r->seats;
    m->n_seat_numbers = (size_t)r->n_seats;
    m->status = (Reservation__V1__ReservationStatus)r->status; /* same numbering */
    m->amount = r->amount;
    m->expires_at_ms = r->expires_at_ms;
    m->created_at_ms = r->created_at_ms;
    return m;
}

static Reservation__V1__Concert *
to_pb_concert(svc_arena_t *arena, const rsv_concert_t *c)
{
    Reservation__V1__Concert *m = svc_arena_alloc(arena, sizeof(*m));

    if (m == NULL) {
        return NULL;
    }
    reservation__v1__concert__init(m);
    m->id = c->id;
    m->title = c->title;
    m->schedules = svc_arena_alloc(arena, (size_t)(c->n_schedules + 1) * sizeof(void *));
    for (int i = 0; m->schedules != NULL && i < c->n_schedules; i++) {
        Reservation__V1__Schedule *s = svc_arena_alloc(arena, sizeof(*s));
        if (s == NULL) {
            return NULL;
        }
        reservation__v1__schedule__init(s);
        s->id = c->schedules[i].id;
        s->concert_id = c->schedules[i].concert_id;
        s->starts_at_ms = c->schedules[i].starts_at_ms;
        s->seat_count = c->schedules[i].seat_count;
        s->available_seats = c->schedules[i].available;
        m->schedules[m->n_schedules++] = s;
    }
    return m->schedules != NULL ? m : NULL;
}

static void
reply_reservation(svc_call_t *call, const rsv_reservation_t *r, int kind)
{
    Reservation__V1__Reservation *m = to_pb_reservation(svc_call_arena(call), r);

    if (m == NULL) {
        svc_call_fail_oom(call);
        return;
    }
    if (kind == 0) {
        Reservation__V1__HoldSeatsResponse resp = RESERVATION__V1__HOLD_SEATS_RESPONSE__INIT;
        resp.reservation = m;
        svc_call_reply(call, &resp.base);
    } else if (kind == 1) {
        Reservation__V1__CancelReservationResponse resp =
            RESERVATION__V1__CANCEL_RESERVATION_RESPONSE__INIT;
        resp.reservation = m;
        svc_call_reply(call, &resp.base);
    } else {
        Reservation__V1__GetReservationResponse resp =
            RESERVATION__V1__GET_RESERVATION_RESPONSE__INIT;
        resp.reservation = m;
        svc_call_reply(call, &resp.base);
    }
}

/* ---------- concerts ---------- */

static int
cmp_spec(const void *a, const void *b)
{
    int64_t x = ((const rsv_schedule_spec_t *)a)->starts_at_ms;
    int64_t y = ((const rsv_schedule_spec_t *)b)->starts_at_ms;

    return (x > y) - (x < y);
}

/* authorization: Bearer <ADMIN_TOKEN>, compared in constant time. */
static bool
is_admin(reservation_service_t *svc, svc_call_t *call)
{
    const char *auth = svc_call_metadata(call, "authorization");
    const char *want = svc->opts.admin_token;
    size_t n = strlen(want);
    unsigned diff = 0;

    if (auth == NULL || strncmp(auth, "Bearer ", 7) != 0 || strlen(auth + 7) != n || n == 0) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        diff |= (unsigned char)(auth[7 + i] ^ want[i]);
    }
    return diff == 0;
}

static void
handle_create_concert(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Reservation__V1__CreateConcertRequest *req = (const void *)msg;
    Reservation__V1__CreateConcertResponse resp = RESERVATION__V1__CREATE_CONCERT_RESPONSE__INIT;
    reservation_service_t *svc = user;
    svc_arena_t *arena = svc_call_arena(call);
    rsv_schedule_spec_t *specs;
    rsv_concert_t concert;
    svc_err_t err;

    if (!is_admin(svc, call)) {
        svc_err_set(&err, SVC_PERMISSION_DENIED, "creating concerts needs the admin token");
        svc_call_fail(call, &err);
        return;
    }
    if (!svc_validate_text("title", req->title, 1, 200, &err) ||
        !svc_validate_range("schedules", (int64_t)req->n_schedules, 1, MAX_SCHEDULES, &err)) {
        svc_call_fail(call, &err);
        return;
    }
    specs = svc_arena_alloc(arena, req->n_schedules * sizeof(*specs));
    if (specs == NULL) {
        svc_call_fail_oom(call);
        return;
    }
    for (size_t i = 0; i < req->n_schedules; i++) {
        const Reservation__V1__ScheduleSpec *s = req->schedules[i];
        if (!svc_validate_range("seat_count", s->seat_count, 1, MAX_SEAT_COUNT, &err) ||
            !svc_validate_range("seat_price", s->seat_price, 0, MAX_PRICE, &err) ||
            !svc_validate_range("starts_at_ms", s->starts_at_ms, 1, INT64_MAX, &err)) {
            svc_call_fail(call, &err);
            return;
        }
        specs[i] = (rsv_schedule_spec_t){s->starts_at_ms, s->seat_count, s->seat_price};
    }
    /* Schedules are kept and shown in starts_at_ms order. */
    qsort(specs, req->n_schedules, sizeof(*specs), cmp_spec);
    if (rsv_store_create_concert(svc->db, req->title, specs, (int)req->n_schedules,
                                 db_deadline(call), arena, &concert, &err) != 0) {
        svc_call_fail(call, &err);
        return;
    }
    resp.concert = to_pb_concert(arena, &concert);
    if (resp.concert == NULL) {
        svc_call_fail_oom(call);
        return;
    }
    svc_call_reply(call, &resp.base);
}

static void
handle_list_concerts(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    Reservation__V1__ListConcertsResponse resp = RESERVATION__V1__LIST_CONCERTS_RESPONSE__INIT;
    reservation_service_t *svc = user;
    svc_arena_t *arena = svc_call_arena(call);
    rsv_concert_t *concerts;
    svc_err_t err;
    int n;

    (void)msg;
    if (rsv_store_list_concerts(svc->db, svc_now_unix_ms(), db_deadline(call), arena, &concerts, &n,
                                &err) != 0) {
        svc_call_fail(call, &err);
        return;
    }
    resp.concerts = svc_arena_alloc(arena, (size_t)(n + 1) * sizeof(void *));
    for (int i = 0; resp.concerts != NULL && i < n; i++) {
        if ((resp.concerts[i] = to_pb_concert(arena, &concerts[i])) == NULL) {
            svc_call_fail_oom(call);
            return;
        }
        resp.n_concerts++;
    }
    svc_call_reply(call, &resp.base);
}

static void
handle_list_seats(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Reservation__V1__ListSeatsRequest *req = (const void *)msg;
    Reservation__V1__ListSeatsResponse resp = RESERVATION__V1__LIST_SEATS_RESPONSE__INIT;
    reservation_service_t *svc = user;
    svc_arena_t *arena = svc_call_arena(call);
    rsv_seat_t *seats;
    svc_err_t err;
    int n;

    if (!svc_validate_range("schedule_id", req->schedule_id, 1, INT64_MAX, &err) ||
        rsv_store_list_seats(svc->db, req->schedule_id, svc_now_unix_ms(), db_deadline(call), arena,
                             &seats, &n, &err) != 0) {
        svc_call_fail(call, &err);
        return;
    }
    resp.seats = svc_arena_alloc(arena, (size_t)n * sizeof(void *));
    for (int i = 0; resp.seats != NULL && i < n; i++) {
        Reservation__V1__Seat *s;
        if (req->available_only && seats[i].status != RSV_SEAT_AVAILABLE) {
            continue;
        }
        if ((s = svc_arena_alloc(arena, sizeof(*s))) == NULL) {
            svc_call_fail_oom(call);
            return;
        }
        reservation__v1__seat__init(s);
        s->schedule_id = req->schedule_id;
        s->number = seats[i].number;
        s->price = seats[i].price;
        s->status = (Reservation__V1__SeatStatus)seats[i].status; /* same numbering */
        resp.seats[resp.n_seats++] = s;
    }
    svc_call_reply(call, &resp.base);
}

/* ---------- holds ---------- */

static int
cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;

    return (x > y) - (x < y);
}

/* 1..10 distinct seat numbers of 1..10000, sorted into out. */
static bool
check_seat_list(const int32_t *in, size_t n, int32_t *out, svc_err_t *err)
{
    if (!svc_validate_range("seat_numbers", (int64_t)n, 1, MAX_SEATS, err)) {
        return false;
    }
    memcpy(out, in, n * sizeof(*in));
    qsort(out, n, sizeof(*out), cmp_i32);
    for (size_t i = 0; i < n; i++) {
        if (out[i] < 1 || out[i] > MAX_SEAT_COUNT) {
            svc_err_set(err, SVC_INVALID_ARGUMENT, "seat %d does not exist", (int)out[i]);
            return false;
        }
        if (i > 0 && out[i] == out[i - 1]) {
            svc_err_set(err, SVC_INVALID_ARGUMENT, "seat %d is listed twice", (int)out[i]);
            return false;
        }
    }
    return true;
}

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

static void
handle_hold_seats(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Reservation__V1__HoldSeatsRequest *req = (const void *)msg;
    reservation_service_t *svc = user;
    int32_t seats[MAX_SEATS];
    int64_t fences[MAX_SEATS];
    svc_lock_t locks[MAX_SEATS];
    rsv_reservation_t r;
    svc_err_t err;
    int n = (int)req->n_seat_numbers, rc;

    if (!svc_validate_range("user_id", req->user_id, 1, INT64_MAX, &err) ||
        !svc_validate_range("schedule_id", req->schedule_id, 1, INT64_MAX, &err) ||
        !check_seat_list(req->seat_numbers, req->n_seat_numbers, seats, &err)) {
        svc_call_fail(call, &err);
        return;
    }
    /* Fail fast: a seat already held or sold is refused before anyone queues for its lock. */
    if (rsv_store_precheck(svc->db, req->schedule_id, seats, n, svc_now_unix_ms(),
                           db_deadline(call), &err) != 0 ||
        lock_seats(svc, call, req->schedule_id, seats, n, locks, &err) != 0) {
        svc_call_fail(call, &err);
        return;
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
    rc =
        rsv_store_hold(svc->db, req->user_id, req->schedule_id, seats, fences, n, svc_now_unix_ms(),
                       svc->opts.hold_ttl_ms, db_deadline(call), svc_call_arena(call), &r, &err);
    for (int i = n - 1; i >= 0; i--) { /* after the commit: no other call inside a transaction */
        svc_err_t rel;
        if (svc_lock_release(svc->lock_svc, &locks[i], NULL, &rel) != 0) {
            svc_logf(SVC_LOG_WARN, "release of %s failed: %s", locks[i].key, rel.msg);
        }
    }
    if (rc != 0) {
        svc_call_fail(call, &err);
        return;
    }
    reply_reservation(call, &r, 0);
}

static void
handle_cancel(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Reservation__V1__CancelReservationRequest *req = (const void *)msg;
    reservation_service_t *svc = user;
    rsv_reservation_t r;
    svc_err_t err;

    if (!svc_validate_range("reservation_id", req->reservation_id, 1, INT64_MAX, &err) ||
        !svc_validate_range("user_id", req->user_id, 1, INT64_MAX, &err) ||
        rsv_store_cancel(svc->db, req->reservation_id, req->user_id, svc_now_unix_ms(),
                         db_deadline(call), svc_call_arena(call), &r, &err) != 0) {
        svc_call_fail(call, &err);
        return;
    }
    reply_reservation(call, &r, 1);
}

static void
handle_get(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Reservation__V1__GetReservationRequest *req = (const void *)msg;
    reservation_service_t *svc = user;
    rsv_reservation_t r;
    svc_err_t err;

    if (!svc_validate_range("reservation_id", req->reservation_id, 1, INT64_MAX, &err) ||
        rsv_store_get(svc->db, req->reservation_id, svc_now_unix_ms(), db_deadline(call),
                      svc_call_arena(call), &r, &err) != 0) {
        svc_call_fail(call, &err);
        return;
    }
    reply_reservation(call, &r, 2);
}

/*
 * Steps 2 and 3 of a payment: asks balance-svc to spend (outside any
 * transaction, with the key derived from the reservation, so asking again
 * never charges twice), then records the outcome. A pending payment stays
 * pending when balance-svc cannot be reached: a retry or the sweeper finishes it.
 */
static int
pay_finish(reservation_service_t *svc, rsv_payment_t *pay, svc_call_t *parent, int64_t deadline_ms,
           svc_err_t *err)
{
    Balance__V1__SpendRequest req = BALANCE__V1__SPEND_REQUEST__INIT;
    Balance__V1__SpendResponse *resp;
    svc_arena_t *arena = svc_arena_create();
    svc_call_opts_t opts = {.parent = parent, .timeout_ms = 10000};
    char reference[64];
    int rc;

    if (arena == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    snprintf(reference, sizeof(reference), "reservation %" PRId64, pay->reservation_id);
    req.user_id = pay->user_id;
    req.amount = pay->amount;
    req.idempotency_key = pay->key;
    req.reference = reference;
    rc = svc_client_unary(svc->balance_svc, "/balance.v1.BalanceService/Spend", &req.base,
                          &balance__v1__spend_response__descriptor, arena,
                          (ProtobufCMessage **)&resp, &opts, err);
    if (rc == 0) {
        /* The worst moment to die: charged, not yet confirmed. A retry must not charge again. */
        svc_failpoint_crash("pay_after_spend");
        pay->balance_txn_id = resp->transaction_id;
        pay->balance_after = resp->balance;
        rc = rsv_store_pay_confirm(svc->db, pay->id, pay->balance_txn_id, pay->balance_after,
                                   deadline_ms, err);
    } else if (err->code == SVC_FAILED_PRECONDITION || err->code == SVC_NOT_FOUND ||
               err->code == SVC_INVALID_ARGUMENT) {
        svc_err_t why = *err; /* refused for good (too little money): the payment failed */
        if (rsv_store_pay_fail(svc->db, pay->id, deadline_ms, err) == 0) {
            *err = why;
            if (err->code == SVC_NOT_FOUND) {
                svc_err_set(err, SVC_FAILED_PRECONDITION, "insufficient balance");
            }
        }
    } else {
        svc_logf(SVC_LOG_WARN, "payment %" PRId64 " left pending: %s", pay->id, err->msg);
        if (err->code != SVC_DEADLINE_EXCEEDED && err->code != SVC_CANCELLED) {
            svc_err_set(err, SVC_UNAVAILABLE, "balance service unavailable, retry the payment");
        }
    }
    svc_arena_destroy(arena);
    return rc;
}

static void
handle_pay(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Reservation__V1__PayReservationRequest *req = (const void *)msg;
    Reservation__V1__PayReservationResponse resp = RESERVATION__V1__PAY_RESERVATION_RESPONSE__INIT;
    reservation_service_t *svc = user;
    rsv_reservation_t r;
    rsv_payment_t pay;
    svc_err_t err;
    bool done;

    if (!svc_validate_range("reservation_id", req->reservation_id, 1, INT64_MAX, &err) ||
        !svc_validate_range("user_id", req->user_id, 1, INT64_MAX, &err) ||
        !svc_validate_text("idempotency_key", req->idempotency_key, 0, 128, &err) ||
        rsv_store_pay_begin(svc->db, req->reservation_id, req->user_id, svc_now_unix_ms(),
                            svc->opts.pay_grace_ms, db_deadline(call), svc_call_arena(call), &r,
                            &pay, &done, &err) != 0 ||
        (!done && pay_finish(svc, &pay, call, db_deadline(call), &err) != 0)) {
        svc_call_fail(call, &err);
        return;
    }
    r.status = RSV_CONFIRMED;
    resp.reservation = to_pb_reservation(svc_call_arena(call), &r);
    if (resp.reservation == NULL) {
        svc_call_fail_oom(call);
        return;
    }
    resp.balance = pay.balance_after;
    resp.payment_id = pay.balance_txn_id;
    svc_call_reply(call, &resp.base);
}

/* Payments a crash left pending: finished here, so no one has to retry them. */
static void
resume_payments(reservation_service_t *svc)
{
    rsv_payment_t pending[20];
    svc_err_t err;
    int n = 0;

    if (rsv_store_pending_payments(svc->db, svc_now_unix_ms(), 5000, 20, pending, &n, &err) != 0) {
        return;
    }
    for (int i = 0; i < n; i++) {
        if (pay_finish(svc, &pending[i], NULL, svc_now_unix_ms() + 10000, &err) == 0) {
            svc_logf(SVC_LOG_INFO, "payment %" PRId64 " of reservation %" PRId64 " finished",
                     pending[i].id, pending[i].reservation_id);
        }
    }
}

/* ---------- the sweeper ---------- */

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
        resume_payments(svc);
        if (rsv_store_sweep(svc->db, svc_now_unix_ms(), &n, &err) != 0) {
            svc_logf(SVC_LOG_WARN, "sweeper: %s", err.msg);
        } else if (n > 0) {
            svc_logf(SVC_LOG_INFO, "sweeper marked %d expired holds", n);
        }
        pthread_mutex_lock(&svc->mu);
        if (n == 200) {
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

/* ---------- lifecycle ---------- */

reservation_service_t *
reservation_service_create(svc_server_t *server, svc_pg_pool_t *db, svc_client_t *lock_svc,
                           svc_client_t *balance_svc, const reservation_opts_t *opts,
                           svc_err_t *err)
{
    reservation_service_t *svc = calloc(1, sizeof(*svc));

    if (svc == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    svc->server = server;
    svc->db = db;
    svc->lock_svc = lock_svc;
    svc->balance_svc = balance_svc;
    svc->opts = *opts;
    pthread_mutex_init(&svc->mu, NULL);
    pthread_cond_init(&svc->cv, NULL);
    if (pthread_create(&svc->sweeper, NULL, sweeper, svc) != 0) {
        reservation_service_destroy(svc);
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "cannot start the sweeper");
        return NULL;
    }
    svc->sweeper_running = true;
    return svc;
}

int
reservation_service_register(reservation_service_t *svc, svc_err_t *err)
{
    static const svc_handler_t handlers[] = {
        {"CreateConcert", SVC_METHOD_UNARY, handle_create_concert, NULL, 0},
        {"ListConcerts", SVC_METHOD_UNARY, handle_list_concerts, NULL, 0},
        {"ListSeats", SVC_METHOD_UNARY, handle_list_seats, NULL, 0},
        {"HoldSeats", SVC_METHOD_UNARY, handle_hold_seats, NULL, 0},
        {"PayReservation", SVC_METHOD_UNARY, handle_pay, NULL, 0},
        {"CancelReservation", SVC_METHOD_UNARY, handle_cancel, NULL, 0},
        {"GetReservation", SVC_METHOD_UNARY, handle_get, NULL, 0},
    };

    return svc_server_add_service(svc->server, &reservation__v1__reservation_service__descriptor,
                                  handlers, sizeof(handlers) / sizeof(handlers[0]), svc, err);
}

void
reservation_service_destroy(reservation_service_t *svc)
{
    if (svc == NULL) {
        return;
    }
    pthread_mutex_lock(&svc->mu);
    svc->stopping = true;
    pthread_cond_broadcast(&svc->cv);
    pthread_mutex_unlock(&svc->mu);
    if (svc->sweeper_running) {
        pthread_join(svc->sweeper, NULL);
    }
    pthread_cond_destroy(&svc->cv);
    pthread_mutex_destroy(&svc->mu);
    free(svc);
}
