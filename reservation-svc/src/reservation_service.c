/*
 * reservation_service.c: reservation.v1.ReservationService, the transport
 * layer: each handler unpacks and validates its request, calls the domain
 * code (reservation_hold.c, reservation_payment.c, the store for reads) and
 * maps the outcome to its answer. The service object's lifecycle is here too.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reservation/v1/reservation.pb-c.h"
#include "reservation_internal.h"
#include "reservation_validate.h"

#define DB_BUDGET_MS 5000

int64_t
reservation_db_deadline(svc_call_t *call)
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
        s->waiting_room_limit = c->schedules[i].waiting_room_limit;
        s->admission_ttl_ms =
            c->schedules[i].waiting_room_limit > 0 ? c->schedules[i].admission_ttl_ms : 0;
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

/* authorization: Bearer <ADMIN_TOKEN>, compared in constant time whatever its length. */
static bool
is_admin(reservation_service_t *svc, svc_call_t *call)
{
    const char *auth = svc_call_metadata(call, "authorization");

    if (auth == NULL || strncmp(auth, "Bearer ", 7) != 0 || svc->opts.admin_token == NULL) {
        return false;
    }
    return rsv_admin_token_equal(auth + 7, strlen(auth + 7), svc->opts.admin_token);
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
    specs = svc_arena_alloc(arena, RSV_MAX_SCHEDULES * sizeof(*specs));
    if (specs == NULL) {
        svc_call_fail_oom(call);
        return;
    }
    if (!rsv_validate_create_concert(req, svc_now_unix_ms(), specs, &err)) {
        svc_call_fail(call, &err);
        return;
    }
    if (rsv_store_create_concert(svc->db, req->title, specs, (int)req->n_schedules,
                                 reservation_db_deadline(call), arena, &concert, &err) != 0) {
        svc_call_fail(call, &err);
        return;
    }
    for (int i = 0; i < concert.n_schedules; i++) {
        reservation_room_remember(svc, concert.schedules[i].id,
                                  concert.schedules[i].waiting_room_limit,
                                  concert.schedules[i].admission_ttl_ms);
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
    if (rsv_store_list_concerts(svc->db, svc_now_unix_ms(), reservation_db_deadline(call), arena,
                                &concerts, &n, &err) != 0) {
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

    if (!rsv_validate_list_seats(req, &err) ||
        rsv_store_list_seats(svc->db, req->schedule_id, svc_now_unix_ms(),
                             reservation_db_deadline(call), arena, &seats, &n, &err) != 0) {
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

static void
handle_hold_seats(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Reservation__V1__HoldSeatsRequest *req = (const void *)msg;
    reservation_service_t *svc = user;
    int32_t seats[RSV_MAX_SEATS];
    svc_err_t err;

    if (!rsv_validate_hold_seats(req, seats, &err) ||
        svc_auth_check_user(svc->opts.auth, call, req->user_id, &err) != 0) {
        svc_call_fail(call, &err);
        return;
    }
    reservation_hold_start(svc, call, req->user_id, req->schedule_id, seats,
                           (int)req->n_seat_numbers, req->admission_token);
}

void
reservation_reply_held(svc_call_t *call, const rsv_reservation_t *r)
{
    reply_reservation(call, r, 0);
}

static void
handle_cancel(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Reservation__V1__CancelReservationRequest *req = (const void *)msg;
    reservation_service_t *svc = user;
    rsv_reservation_t r;
    svc_err_t err;

    if (!rsv_validate_cancel(req, &err) ||
        svc_auth_check_user(svc->opts.auth, call, req->user_id, &err) != 0 ||
        reservation_cancel(svc, call, req->reservation_id, req->user_id, svc_call_arena(call), &r,
                           &err) != 0) {
        svc_call_fail(call, &err);
        return;
    }
    reply_reservation(call, &r, 1);
}

/*
 * With caller identity on, a reservation is shown to its owner only: a
 * caller without a valid token is UNAUTHENTICATED before anything is read,
 * and another user's reservation is PERMISSION_DENIED, as PayReservation
 * and CancelReservation answer a stranger (ids are sequential, so hiding
 * that one exists would buy nothing).
 */
static void
handle_get(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Reservation__V1__GetReservationRequest *req = (const void *)msg;
    reservation_service_t *svc = user;
    svc_auth_caller_t caller;
    rsv_reservation_t r;
    svc_err_t err;

    if (!rsv_validate_get(req, &err) || svc_auth_caller(svc->opts.auth, call, &caller, &err) != 0 ||
        rsv_store_get(svc->db, req->reservation_id, svc_now_unix_ms(),
                      reservation_db_deadline(call), svc_call_arena(call), &r, &err) != 0) {
        svc_call_fail(call, &err);
        return;
    }
    if (!svc_auth_caller_may(&caller, r.user_id)) {
        svc_err_set(&err, SVC_PERMISSION_DENIED, "reservation %" PRId64 " is not yours",
                    req->reservation_id);
        svc_call_fail(call, &err);
        return;
    }
    reply_reservation(call, &r, 2);
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

    /* idempotency_key is checked but not needed: a reservation has one payment, whatever key. */
    if (!rsv_validate_pay(req, &err) ||
        svc_auth_check_user(svc->opts.auth, call, req->user_id, &err) != 0 ||
        reservation_pay(svc, call, req->reservation_id, req->user_id, svc_call_arena(call), &r,
                        &pay, &err) != 0) {
        svc_call_fail(call, &err);
        return;
    }
    resp.reservation = to_pb_reservation(svc_call_arena(call), &r);
    if (resp.reservation == NULL) {
        svc_call_fail_oom(call);
        return;
    }
    resp.balance = pay.balance_after;
    resp.payment_id = pay.balance_txn_id;
    svc_call_reply(call, &resp.base);
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
    (void)reservation_payments_pending(); /* shown at 0 before the first payment */
    svc->server = server;
    svc->db = db;
    svc->lock_svc = lock_svc;
    svc->balance_svc = balance_svc;
    svc->opts = *opts;
    pthread_mutex_init(&svc->mu, NULL);
    pthread_cond_init(&svc->cv, NULL);
    pthread_mutex_init(&svc->users_mu, NULL);
    pthread_mutex_init(&svc->gate_mu, NULL);
    pthread_mutex_init(&svc->precheck_mu, NULL);
    pthread_cond_init(&svc->precheck_cv, NULL);
    svc->users = calloc(RSV_KNOWN_USERS, sizeof(*svc->users));
    svc->rooms = calloc(RSV_KNOWN_ROOMS, sizeof(*svc->rooms));
    svc->gate = calloc(RSV_GATE_BUCKETS, sizeof(*svc->gate));
    pthread_mutex_init(&svc->rooms_mu, NULL);
    if (svc->users == NULL || svc->rooms == NULL || svc->gate == NULL) {
        reservation_service_destroy(svc);
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    if (reservation_sweeper_start(svc, err) != 0) {
        reservation_service_destroy(svc);
        return NULL;
    }
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
        {"EnterWaitingRoom", SVC_METHOD_UNARY, reservation_room_enter, NULL, 0},
        {"WatchWaitingRoom", SVC_METHOD_SERVER_STREAM, reservation_room_watch, NULL, 0},
        {"LeaveWaitingRoom", SVC_METHOD_UNARY, reservation_room_leave, NULL, 0},
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
    reservation_sweeper_stop(svc);
    reservation_rooms_stop(svc);
    pthread_cond_destroy(&svc->cv);
    pthread_mutex_destroy(&svc->users_mu);
    free(svc->users);
    pthread_mutex_destroy(&svc->rooms_mu);
    free(svc->rooms);
    reservation_gate_destroy(svc);
    pthread_mutex_destroy(&svc->gate_mu);
    pthread_mutex_destroy(&svc->precheck_mu);
    pthread_cond_destroy(&svc->precheck_cv);
    pthread_mutex_destroy(&svc->mu);
    free(svc);
}
