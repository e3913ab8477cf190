/*
 * test_reservation_svc.c: reservation-svc over real gRPC with a real
 * PostgreSQL, Redis, lock-svc and balance-svc: admin-only concert creation,
 * every invalid input, 1000 fans storming one seat, overlapping multi-seat
 * holds, hold expiry, cancellation and payment (charged once, even when paid
 * fifty times at once). After each storm the database is read: no seat in two
 * live holds, no taken seat without a live reservation.
 * argv[1] is reservation-svc, argv[2] balance-svc, argv[3] lock-svc.
 *
 * Two reservation-svc instances run, each on its own database: "reservation"
 * with HOLD_TTL_MS=300000 for everything whose assertions must not race a hold
 * expiring mid-storm, and "reservation_ttl" with HOLD_TTL_MS=2000 for the
 * expiry tests. The SQL checks assume the tables seats, reservations and
 * reservation_seats (and balance-svc's accounts and ledger) with the columns
 * named in the queries below.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "balance/v1/balance.pb-c.h"
#include "reservation/v1/reservation.pb-c.h"
#include "svc/client.h"
#include "svc/timer.h"
#include "testenv.h"

#define ADMIN_AUTH "Bearer test-admin-token"
#define MAIN_TTL_MS 300000
#define SHORT_TTL_MS 2000

#define SEAT_AVAILABLE RESERVATION__V1__SEAT_STATUS__SEAT_STATUS_AVAILABLE
#define SEAT_HELD RESERVATION__V1__SEAT_STATUS__SEAT_STATUS_HELD
#define SEAT_SOLD RESERVATION__V1__SEAT_STATUS__SEAT_STATUS_SOLD
#define RES_HELD RESERVATION__V1__RESERVATION_STATUS__RESERVATION_STATUS_HELD
#define RES_CONFIRMED RESERVATION__V1__RESERVATION_STATUS__RESERVATION_STATUS_CONFIRMED
#define RES_CANCELLED RESERVATION__V1__RESERVATION_STATUS__RESERVATION_STATUS_CANCELLED
#define RES_EXPIRED RESERVATION__V1__RESERVATION_STATUS__RESERVATION_STATUS_EXPIRED

/* A reservation (status 1 held, 2 confirmed) that still holds its seats now. */
#define LIVE_SQL                                                                                   \
    "(r.status = 2 OR (r.status = 1 AND r.expires_at_ms > "                                        \
    "(extract(epoch FROM clock_timestamp()) * 1000)::bigint))"

typedef Reservation__V1__Reservation reservation_t;

/* One reservation-svc instance and the database it owns. */
typedef struct {
    testenv_proc_t proc;
    testenv_pg_t db; /* a copy of pg whose conninfo names this instance's database */
    svc_client_t *client;
} rsv_t;

static const char *reservation_path, *balance_path, *lock_path;
static testenv_pg_t pg;
static testenv_redis_t redis;
static testenv_proc_t lock_proc, balance_proc;
static rsv_t main_rsv, ttl_rsv;
static testenv_pg_t balance_db; /* a copy of pg naming the database "balance" */
static svc_client_t *balance_client;
static atomic_llong next_user = 5000;
static atomic_int next_title = 1;

static int64_t
new_user(void)
{
    return atomic_fetch_add(&next_user, 1);
}

/* ---------- calls ---------- */

/* One ReservationService call; auth, when not NULL, is the authorization header. */
static int
rsv_call(const rsv_t *r, const char *method, const ProtobufCMessage *req,
         const ProtobufCMessageDescriptor *desc, svc_arena_t *arena, ProtobufCMessage **out,
         const char *auth, svc_err_t *err)
{
    const char *md[2] = {"authorization", auth};
    svc_call_opts_t opts = {.timeout_ms = 30000};
    char path[96];

    if (auth != NULL) {
        opts.metadata = md;
        opts.n_metadata = 1;
    }
    snprintf(path, sizeof(path), "/reservation.v1.ReservationService/%s", method);
    memset(err, 0, sizeof(*err));
    return svc_client_unary(r->client, path, req, desc, arena, out, &opts, err);
}

/* Fails the test unless the call (rc, err) failed with code. */
static void
expect_code(const char *what, int rc, const svc_err_t *err, svc_status_t code)
{
    if (rc == 0) {
        fail_msg("%s: expected %s, got OK", what, svc_status_name(code));
    }
    if (err->code != code) {
        fail_msg("%s: expected %s, got %s (%s)", what, svc_status_name(code),
                 svc_status_name(err->code), err->msg);
    }
}

static void
expect_ok(const char *what, int rc, const svc_err_t *err)
{
    if (rc != 0) {
        fail_msg("%s: expected OK, got %s (%s)", what, svc_status_name(err->code), err->msg);
    }
}

static int
create_concert_raw(const rsv_t *r, svc_arena_t *arena, const char *title,
                   Reservation__V1__ScheduleSpec **specs, size_t n, const char *auth,
                   Reservation__V1__Concert **concert, svc_err_t *err)
{
    Reservation__V1__CreateConcertRequest req = RESERVATION__V1__CREATE_CONCERT_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    int rc;

    req.title = (char *)title;
    req.schedules = specs;
    req.n_schedules = n;
    rc = rsv_call(r, "CreateConcert", &req.base,
                  &reservation__v1__create_concert_response__descriptor, arena, &out, auth, err);
    if (rc == 0 && concert != NULL) {
        *concert = ((Reservation__V1__CreateConcertResponse *)out)->concert;
        assert_non_null(*concert);
    }
    return rc;
}

/* n specs in arena, schedule i starting at starts0 + i hours. */
static Reservation__V1__ScheduleSpec **
make_specs(svc_arena_t *arena, size_t n, int64_t starts0, int32_t seat_count, int64_t price)
{
    Reservation__V1__ScheduleSpec **specs = svc_arena_alloc(arena, (n + 1) * sizeof(*specs));

    for (size_t i = 0; i < n; i++) {
        Reservation__V1__ScheduleSpec init = RESERVATION__V1__SCHEDULE_SPEC__INIT;
        specs[i] = svc_arena_alloc(arena, sizeof(*specs[i]));
        *specs[i] = init;
        specs[i]->starts_at_ms = starts0 + (int64_t)i * 3600000;
        specs[i]->seat_count = seat_count;
        specs[i]->seat_price = price;
    }
    return specs;
}

/* A new concert with one schedule of seat_count seats at price; returns its schedule id. */
static int64_t
new_schedule(const rsv_t *r, svc_arena_t *arena, int32_t seat_count, int64_t price)
{
    Reservation__V1__Concert *concert = NULL;
    char title[64];
    svc_err_t err;
    int64_t id;

    snprintf(title, sizeof(title), "concert %d", atomic_fetch_add(&next_title, 1));
    expect_ok(
        "CreateConcert",
        create_concert_raw(r, arena, title,
                           make_specs(arena, 1, svc_now_unix_ms() + 86400000, seat_count, price), 1,
                           ADMIN_AUTH, &concert, &err),
        &err);
    assert_int_equal(concert->n_schedules, 1);
    id = concert->schedules[0]->id;
    assert_true(id > 0);
    return id;
}

static Reservation__V1__ListSeatsResponse *
list_seats(const rsv_t *r, svc_arena_t *arena, int64_t schedule_id, int available_only)
{
    Reservation__V1__ListSeatsRequest req = RESERVATION__V1__LIST_SEATS_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    svc_err_t err;

    req.schedule_id = schedule_id;
    req.available_only = available_only != 0;
    expect_ok("ListSeats",
              rsv_call(r, "ListSeats", &req.base, &reservation__v1__list_seats_response__descriptor,
                       arena, &out, NULL, &err),
              &err);
    return (Reservation__V1__ListSeatsResponse *)out;
}

static Reservation__V1__ListConcertsResponse *
list_concerts(const rsv_t *r, svc_arena_t *arena)
{
    Reservation__V1__ListConcertsRequest req = RESERVATION__V1__LIST_CONCERTS_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    svc_err_t err;

    expect_ok("ListConcerts",
              rsv_call(r, "ListConcerts", &req.base,
                       &reservation__v1__list_concerts_response__descriptor, arena, &out, NULL,
                       &err),
              &err);
    return (Reservation__V1__ListConcertsResponse *)out;
}

/* The schedule with this id as ListConcerts shows it; fails when absent. */
static Reservation__V1__Schedule *
listed_schedule(const rsv_t *r, svc_arena_t *arena, int64_t schedule_id)
{
    Reservation__V1__ListConcertsResponse *resp = list_concerts(r, arena);

    for (size_t i = 0; i < resp->n_concerts; i++) {
        for (size_t j = 0; j < resp->concerts[i]->n_schedules; j++) {
            if (resp->concerts[i]->schedules[j]->id == schedule_id) {
                return resp->concerts[i]->schedules[j];
            }
        }
    }
    fail_msg("schedule %" PRId64 " is not in ListConcerts", schedule_id);
    return NULL;
}

static int
hold(const rsv_t *r, svc_arena_t *arena, int64_t user, int64_t schedule_id, const int32_t *seats,
     size_t n, reservation_t **res, svc_err_t *err)
{
    Reservation__V1__HoldSeatsRequest req = RESERVATION__V1__HOLD_SEATS_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    int rc;

    req.user_id = user;
    req.schedule_id = schedule_id;
    req.seat_numbers = (int32_t *)seats;
    req.n_seat_numbers = n;
    rc = rsv_call(r, "HoldSeats", &req.base, &reservation__v1__hold_seats_response__descriptor,
                  arena, &out, NULL, err);
    if (rc == 0) {
        *res = ((Reservation__V1__HoldSeatsResponse *)out)->reservation;
        assert_non_null(*res);
    }
    return rc;
}

static int
get_reservation(const rsv_t *r, svc_arena_t *arena, int64_t id, reservation_t **res, svc_err_t *err)
{
    Reservation__V1__GetReservationRequest req = RESERVATION__V1__GET_RESERVATION_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    int rc;

    req.reservation_id = id;
    rc = rsv_call(r, "GetReservation", &req.base,
                  &reservation__v1__get_reservation_response__descriptor, arena, &out, NULL, err);
    if (rc == 0) {
        *res = ((Reservation__V1__GetReservationResponse *)out)->reservation;
        assert_non_null(*res);
    }
    return rc;
}

static int
cancel_reservation(const rsv_t *r, svc_arena_t *arena, int64_t id, int64_t user,
                   reservation_t **res, svc_err_t *err)
{
    Reservation__V1__CancelReservationRequest req =
        RESERVATION__V1__CANCEL_RESERVATION_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    int rc;

    req.reservation_id = id;
    req.user_id = user;
    rc =
        rsv_call(r, "CancelReservation", &req.base,
                 &reservation__v1__cancel_reservation_response__descriptor, arena, &out, NULL, err);
    if (rc == 0) {
        *res = ((Reservation__V1__CancelReservationResponse *)out)->reservation;
        assert_non_null(*res);
    }
    return rc;
}

/* Fails unless ListSeats shows seat number with status. */
static void
expect_seat(const Reservation__V1__ListSeatsResponse *seats, int32_t number, int status)
{
    for (size_t i = 0; i < seats->n_seats; i++) {
        if (seats->seats[i]->number == number) {
            if ((int)seats->seats[i]->status != status) {
                fail_msg("seat %d: status %d, expected %d", number, (int)seats->seats[i]->status,
                         status);
            }
            return;
        }
    }
    fail_msg("seat %d is not listed", number);
}

/* Fails unless the reservation's seats are exactly the ascending list want. */
static void
expect_seat_numbers(const reservation_t *res, const int32_t *want, size_t n)
{
    if (res->n_seat_numbers != n) {
        fail_msg("reservation %" PRId64 ": %zu seats, expected %zu", res->id, res->n_seat_numbers,
                 n);
    }
    for (size_t i = 0; i < n; i++) {
        if (res->seat_numbers[i] != want[i]) {
            fail_msg("reservation %" PRId64 ": seat_numbers[%zu] = %d, expected %d", res->id, i,
                     res->seat_numbers[i], want[i]);
        }
    }
}

/* ---------- database checks ---------- */

/* The integer the SQL (a printf format) returns on db; fails when the query fails. */
static int64_t __attribute__((format(printf, 2, 3)))
db_int(const testenv_pg_t *db, const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    int64_t v;

    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    v = testenv_pg_query_int(db, sql);
    if (v == INT64_MIN) {
        fail_msg("query failed (schema assumption?): %s", sql);
    }
    return v;
}

/*
 * The invariants of one schedule's rows: no seat in two live holds, no seat
 * marked held or sold without a held or confirmed reservation, and no seat of
 * a live reservation marked available.
 */
static void
check_schedule_consistent(const testenv_pg_t *db, int64_t schedule_id)
{
    int64_t doubled, orphaned, unmarked;

    doubled = db_int(db,
                     "SELECT count(*) FROM (SELECT rs.number FROM reservation_seats rs JOIN "
                     "reservations r ON r.id = rs.reservation_id WHERE rs.schedule_id = %" PRId64
                     " AND " LIVE_SQL " GROUP BY rs.number HAVING count(*) > 1) d",
                     schedule_id);
    orphaned = db_int(db,
                      "SELECT count(*) FROM seats s WHERE s.schedule_id = %" PRId64
                      " AND s.status <> 1 AND NOT EXISTS (SELECT 1 FROM reservation_seats rs "
                      "JOIN reservations r ON r.id = rs.reservation_id WHERE rs.schedule_id = "
                      "s.schedule_id AND rs.number = s.number AND r.status IN (1, 2))",
                      schedule_id);
    unmarked = db_int(db,
                      "SELECT count(*) FROM reservation_seats rs JOIN reservations r ON r.id = "
                      "rs.reservation_id JOIN seats s ON s.schedule_id = rs.schedule_id AND "
                      "s.number = rs.number WHERE rs.schedule_id = %" PRId64 " AND " LIVE_SQL
                      " AND s.status = 1",
                      schedule_id);
    if (doubled != 0 || orphaned != 0 || unmarked != 0) {
        fail_msg("schedule %" PRId64 ": %" PRId64 " seats in two live holds, %" PRId64
                 " seats held/sold without a live reservation, %" PRId64
                 " seats of live holds marked available",
                 schedule_id, doubled, orphaned, unmarked);
    }
}

/* ---------- concurrent holds ---------- */

typedef struct {
    const rsv_t *r;
    int64_t user, schedule_id;
    int32_t seats[10];
    size_t n;
    int rc;
    svc_err_t err;
    int64_t reservation_id;
    int32_t got[10];
    size_t n_got;
    int status;
    int64_t created_at_ms, expires_at_ms;
} hold_op_t;

/* Runs fn on each of n ops of size bytes at once, one thread (256 KiB stack) each. */
static void
run_threads(void *ops, size_t size, int n, void *(*fn)(void *))
{
    pthread_t *t = calloc((size_t)n, sizeof(*t));
    pthread_attr_t attr;

    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < n; i++) {
        assert_int_equal(pthread_create(&t[i], &attr, fn, (char *)ops + (size_t)i * size), 0);
    }
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
    }
    pthread_attr_destroy(&attr);
    free(t);
}

/* ---------- payments ---------- */

/* Gives user amount won through balance-svc. */
static void
top_up(svc_arena_t *arena, int64_t user, int64_t amount)
{
    Balance__V1__TopUpRequest req = BALANCE__V1__TOP_UP_REQUEST__INIT;
    svc_call_opts_t opts = {.timeout_ms = 15000};
    ProtobufCMessage *out = NULL;
    svc_err_t err;

    req.user_id = user;
    req.amount = amount;
    req.idempotency_key = svc_arena_printf(arena, "fund-%" PRId64 "-%" PRId64, user, amount);
    expect_ok("TopUp",
              svc_client_unary(balance_client, "/balance.v1.BalanceService/TopUp", &req.base,
                               &balance__v1__top_up_response__descriptor, arena, &out, &opts, &err),
              &err);
}

static int64_t
balance_of(int64_t user)
{
    return db_int(&balance_db, "SELECT balance FROM accounts WHERE user_id = %" PRId64, user);
}

/* Spends (ledger kind 2) of user in balance-svc's database. */
static int64_t
spends_of(int64_t user)
{
    return db_int(&balance_db, "SELECT count(*) FROM ledger WHERE kind = 2 AND user_id = %" PRId64,
                  user);
}

static int
pay(const rsv_t *r, svc_arena_t *arena, int64_t id, int64_t user, const char *key,
    Reservation__V1__PayReservationResponse **resp, svc_err_t *err)
{
    Reservation__V1__PayReservationRequest req = RESERVATION__V1__PAY_RESERVATION_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    int rc;

    req.reservation_id = id;
    req.user_id = user;
    req.idempotency_key = (char *)key;
    rc = rsv_call(r, "PayReservation", &req.base,
                  &reservation__v1__pay_reservation_response__descriptor, arena, &out, NULL, err);
    if (rc == 0) {
        *resp = (Reservation__V1__PayReservationResponse *)out;
        assert_non_null((*resp)->reservation);
    }
    return rc;
}

static void
test_pay_reservation(void **state)
{
    static const int32_t seats12[2] = {1, 2};
    svc_arena_t *arena = *state;
    int64_t sched = new_schedule(&main_rsv, arena, 6, 3000), fan = new_user(),
            stranger = new_user();
    Reservation__V1__PayReservationResponse *paid = NULL, *again = NULL;
    reservation_t *held = NULL, *res = NULL;
    Reservation__V1__ListSeatsResponse *seats;
    svc_err_t err;

    top_up(arena, fan, 10000);
    top_up(arena, stranger, 10000);
    expect_ok("HoldSeats", hold(&main_rsv, arena, fan, sched, seats12, 2, &held, &err), &err);
    assert_int_equal(held->amount, 6000);
    expect_code("PayReservation by a stranger",
                pay(&main_rsv, arena, held->id, stranger, "k-stranger", &paid, &err), &err,
                SVC_PERMISSION_DENIED);
    expect_code("PayReservation of an unknown id",
                pay(&main_rsv, arena, INT64_MAX, fan, "k-unknown", &paid, &err), &err,
                SVC_NOT_FOUND);
    assert_int_equal(balance_of(stranger), 10000);
    assert_int_equal(balance_of(fan), 10000);

    expect_ok("PayReservation", pay(&main_rsv, arena, held->id, fan, "k1", &paid, &err), &err);
    assert_int_equal(paid->reservation->id, held->id);
    assert_int_equal(paid->reservation->status, RES_CONFIRMED);
    assert_int_equal(paid->reservation->amount, 6000);
    expect_seat_numbers(paid->reservation, seats12, 2);
    assert_int_equal(paid->balance, 4000);
    assert_true(paid->payment_id > 0);
    assert_int_equal(balance_of(fan), 4000);
    assert_int_equal(spends_of(fan), 1);
    assert_int_equal(db_int(&balance_db,
                            "SELECT count(*) FROM ledger WHERE kind = 2 AND id = %" PRId64
                            " AND user_id = %" PRId64 " AND amount = 6000",
                            paid->payment_id, fan),
                     1);

    /* Paying again, with any key, returns the original result and charges nothing. */
    expect_ok("PayReservation again", pay(&main_rsv, arena, held->id, fan, "k2", &again, &err),
              &err);
    assert_int_equal(again->reservation->status, RES_CONFIRMED);
    assert_int_equal(again->payment_id, paid->payment_id);
    assert_int_equal(again->balance, 4000);
    assert_int_equal(balance_of(fan), 4000);
    assert_int_equal(spends_of(fan), 1);

    seats = list_seats(&main_rsv, arena, sched, 0);
    expect_seat(seats, 1, SEAT_SOLD);
    expect_seat(seats, 2, SEAT_SOLD);
    expect_seat(seats, 3, SEAT_AVAILABLE);
    assert_int_equal(list_seats(&main_rsv, arena, sched, 1)->n_seats, 4);
    assert_int_equal(listed_schedule(&main_rsv, arena, sched)->available_seats, 4);
    expect_ok("GetReservation", get_reservation(&main_rsv, arena, held->id, &res, &err), &err);
    assert_int_equal(res->status, RES_CONFIRMED);
    expect_code("CancelReservation of a paid reservation",
                cancel_reservation(&main_rsv, arena, held->id, fan, &res, &err), &err,
                SVC_FAILED_PRECONDITION);
    expect_code("HoldSeats of a sold seat",
                hold(&main_rsv, arena, stranger, sched, seats12, 1, &res, &err), &err,
                SVC_FAILED_PRECONDITION);
    expect_code("PayReservation of someone else's paid reservation",
                pay(&main_rsv, arena, held->id, stranger, "k3", &again, &err), &err,
                SVC_PERMISSION_DENIED);
    assert_int_equal(balance_of(stranger), 10000);
    check_schedule_consistent(&main_rsv.db, sched);
}

static void
test_pay_refused(void **state)
{
    static const int32_t one[1] = {1}, two[1] = {2};
    svc_arena_t *arena = *state;
    int64_t sched = new_schedule(&main_rsv, arena, 4, 3000), poor = new_user(),
            quitter = new_user();
    Reservation__V1__PayReservationResponse *paid = NULL;
    reservation_t *held = NULL, *res = NULL;
    svc_err_t err;

    /* Too little money: refused, nothing charged, nothing sold. */
    top_up(arena, poor, 1000);
    expect_ok("HoldSeats", hold(&main_rsv, arena, poor, sched, one, 1, &held, &err), &err);
    expect_code("PayReservation with too little money",
                pay(&main_rsv, arena, held->id, poor, "k-poor", &paid, &err), &err,
                SVC_FAILED_PRECONDITION);
    assert_int_equal(balance_of(poor), 1000);
    assert_int_equal(spends_of(poor), 0);
    expect_ok("GetReservation", get_reservation(&main_rsv, arena, held->id, &res, &err), &err);
    assert_true(res->status != RES_CONFIRMED);
    assert_true(list_seats(&main_rsv, arena, sched, 0)->seats[0]->status != SEAT_SOLD);

    /* A cancelled hold cannot be paid. */
    top_up(arena, quitter, 10000);
    expect_ok("HoldSeats", hold(&main_rsv, arena, quitter, sched, two, 1, &held, &err), &err);
    expect_ok("CancelReservation",
              cancel_reservation(&main_rsv, arena, held->id, quitter, &res, &err), &err);
    expect_code("PayReservation of a cancelled hold",
                pay(&main_rsv, arena, held->id, quitter, "k-quit", &paid, &err), &err,
                SVC_FAILED_PRECONDITION);
    assert_int_equal(balance_of(quitter), 10000);
    assert_int_equal(spends_of(quitter), 0);
    expect_seat(list_seats(&main_rsv, arena, sched, 0), 2, SEAT_AVAILABLE);
    check_schedule_consistent(&main_rsv.db, sched);
}

static void
test_pay_expired_hold(void **state)
{
    static const int32_t one[1] = {1};
    svc_arena_t *arena = *state;
    int64_t sched = new_schedule(&ttl_rsv, arena, 2, 700), late = new_user();
    Reservation__V1__PayReservationResponse *paid = NULL;
    reservation_t *held = NULL, *res = NULL;
    svc_err_t err;

    top_up(arena, late, 5000);
    expect_ok("HoldSeats", hold(&ttl_rsv, arena, late, sched, one, 1, &held, &err), &err);
    while (svc_now_unix_ms() < held->expires_at_ms + 300) {
        svc_sleep_ms(50);
    }
    expect_code("PayReservation of an expired hold",
                pay(&ttl_rsv, arena, held->id, late, "k-late", &paid, &err), &err,
                SVC_FAILED_PRECONDITION);
    assert_int_equal(balance_of(late), 5000);
    assert_int_equal(spends_of(late), 0);
    expect_ok("GetReservation", get_reservation(&ttl_rsv, arena, held->id, &res, &err), &err);
    assert_int_equal(res->status, RES_EXPIRED);
    expect_seat(list_seats(&ttl_rsv, arena, sched, 0), 1, SEAT_AVAILABLE);
    check_schedule_consistent(&ttl_rsv.db, sched);
}

typedef struct {
    int64_t reservation_id, user;
    char key[32];
    int rc;
    svc_err_t err;
    int64_t balance, payment_id;
    int status;
} pay_op_t;

static void *
pay_thread(void *arg)
{
    pay_op_t *op = arg;
    svc_arena_t *arena = svc_arena_create();
    Reservation__V1__PayReservationResponse *resp = NULL;

    op->rc = pay(&main_rsv, arena, op->reservation_id, op->user, op->key, &resp, &op->err);
    if (op->rc == 0) {
        op->balance = resp->balance;
        op->payment_id = resp->payment_id;
        op->status = (int)resp->reservation->status;
    }
    svc_arena_destroy(arena);
    return NULL;
}

/* A double click times fifty: the hold is paid once. */
static void
test_pay_storm(void **state)
{
    enum { N = 50 };
    static const int32_t seats[3] = {4, 5, 6};
    svc_arena_t *arena = *state;
    int64_t sched = new_schedule(&main_rsv, arena, 8, 1500), fan = new_user(), t0, ms;
    pay_op_t *ops = svc_arena_alloc(arena, N * sizeof(*ops));
    reservation_t *held = NULL;
    int ok = 0, aborted = 0, first = -1;
    svc_err_t err;

    top_up(arena, fan, 20000);
    expect_ok("HoldSeats", hold(&main_rsv, arena, fan, sched, seats, 3, &held, &err), &err);
    for (int i = 0; i < N; i++) {
        ops[i].reservation_id = held->id;
        ops[i].user = fan;
        snprintf(ops[i].key, sizeof(ops[i].key), "click-%d", i % 5);
    }
    t0 = svc_now_mono_ms();
    run_threads(ops, sizeof(*ops), N, pay_thread);
    ms = svc_now_mono_ms() - t0;
    for (int i = 0; i < N; i++) {
        if (ops[i].rc != 0) {
            if (ops[i].err.code != SVC_ABORTED) {
                fail_msg("pay %d: %s (%s), expected OK or ABORTED", i,
                         svc_status_name(ops[i].err.code), ops[i].err.msg);
            }
            aborted++;
            continue;
        }
        ok++;
        first = first < 0 ? i : first;
        assert_int_equal(ops[i].status, RES_CONFIRMED);
        assert_int_equal(ops[i].balance, 20000 - 4500);
        assert_int_equal(ops[i].payment_id, ops[first].payment_id);
    }
    fprintf(stderr, "%d concurrent payments of one hold: %" PRId64 " ms; %d OK, %d ABORTED\n", N,
            ms, ok, aborted);
    assert_true(ok >= 1);
    assert_int_equal(balance_of(fan), 20000 - 4500);
    assert_int_equal(spends_of(fan), 1);
    assert_int_equal(
        db_int(&main_rsv.db,
               "SELECT count(*) FROM seats WHERE schedule_id = %" PRId64 " AND status = 3", sched),
        3);
    check_schedule_consistent(&main_rsv.db, sched);
}

/* ---------- setup ---------- */

/* Each test's arena: freed after the test even when an assertion failed. */
static int
arena_setup(void **state)
{
    *state = svc_arena_create();
    return *state != NULL ? 0 : -1;
}

static int
arena_teardown(void **state)
{
    svc_arena_destroy(*state);
    return 0;
}

static int
start_reservation(rsv_t *r, const char *dbname, int64_t ttl_ms)
{
    char db_env[600], lock_env[96], balance_env[96], ttl_env[64];
    const char *envs[] = {db_env,  lock_env,         balance_env, "ADMIN_TOKEN=test-admin-token",
                          ttl_env, "LOG_LEVEL=warn", NULL};
    svc_err_t err;

    r->db = pg;
    snprintf(r->db.conninfo, sizeof(r->db.conninfo),
             "host=127.0.0.1 port=%d user=postgres dbname=%s", pg.port, dbname);
    snprintf(db_env, sizeof(db_env), "DATABASE_URL=%s", r->db.conninfo);
    snprintf(lock_env, sizeof(lock_env), "LOCK_SVC_ADDR=%s", lock_proc.addr);
    snprintf(balance_env, sizeof(balance_env), "BALANCE_SVC_ADDR=%s", balance_proc.addr);
    snprintf(ttl_env, sizeof(ttl_env), "HOLD_TTL_MS=%" PRId64, ttl_ms);
    if (testenv_proc_start(&r->proc, reservation_path, NULL, envs) != 0) {
        return -1;
    }
    r->client = svc_client_get(r->proc.addr, &err);
    return r->client != NULL ? 0 : -1;
}

static int
setup(void **state)
{
    (void)state;
    char url[128], redis_env[160], lock_env[96], db_env[600];
    const char *lock_envs[] = {redis_env, "LOG_LEVEL=warn", NULL};
    const char *balance_envs[] = {db_env, lock_env, "LOG_LEVEL=warn", NULL};
    svc_err_t err;

    testenv_cleanup_on_exit();
    if (testenv_pg_start(&pg, "reservation") != 0 || testenv_redis_start(&redis) != 0 ||
        testenv_pg_exec(&pg, "CREATE DATABASE balance") != 0 ||
        testenv_pg_exec(&pg, "CREATE DATABASE reservation_ttl") != 0) {
        return -1;
    }
    testenv_redis_url(&redis, url, sizeof(url));
    snprintf(redis_env, sizeof(redis_env), "REDIS_URL=%s", url);
    if (testenv_proc_start(&lock_proc, lock_path, NULL, lock_envs) != 0) {
        return -1;
    }
    snprintf(lock_env, sizeof(lock_env), "LOCK_SVC_ADDR=%s", lock_proc.addr);
    snprintf(db_env, sizeof(db_env),
             "DATABASE_URL=host=127.0.0.1 port=%d user=postgres dbname=balance", pg.port);
    if (testenv_proc_start(&balance_proc, balance_path, NULL, balance_envs) != 0) {
        return -1;
    }
    balance_db = pg;
    snprintf(balance_db.conninfo, sizeof(balance_db.conninfo),
             "host=127.0.0.1 port=%d user=postgres dbname=balance", pg.port);
    balance_client = svc_client_get(balance_proc.addr, &err);
    if (balance_client == NULL) {
        return -1;
    }
    if (start_reservation(&main_rsv, "reservation", MAIN_TTL_MS) != 0 ||
        start_reservation(&ttl_rsv, "reservation_ttl", SHORT_TTL_MS) != 0) {
        return -1;
    }
    return 0;
}

static int
teardown(void **state)
{
    int s[4];

    (void)state;
    s[0] = testenv_proc_stop(&main_rsv.proc);
    s[1] = testenv_proc_stop(&ttl_rsv.proc);
    s[2] = testenv_proc_stop(&balance_proc);
    s[3] = testenv_proc_stop(&lock_proc);
    testenv_redis_stop(&redis);
    testenv_pg_stop(&pg);
    svc_client_release_all();
    for (int i = 0; i < 4; i++) {
        if (s[i] != 0) {
            fprintf(stderr, "process %d did not exit cleanly: status %d\n", i, s[i]);
            return -1;
        }
    }
    return 0;
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pay_reservation, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_pay_refused, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_pay_expired_hold, arena_setup, arena_teardown),
        cmocka_unit_test_setup_teardown(test_pay_storm, arena_setup, arena_teardown),
    };

    if (argc < 4) {
        fprintf(stderr, "usage: %s path/to/reservation-svc path/to/balance-svc path/to/lock-svc\n",
                argv[0]);
        return 2;
    }
    reservation_path = argv[1];
    balance_path = argv[2];
    lock_path = argv[3];
    return testenv_group_result(
        cmocka_run_group_tests(tests, setup, testenv_group_teardown(teardown)));
}
