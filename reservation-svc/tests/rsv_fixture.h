/*
 * rsv_fixture.h: what reservation-svc's integration tests share. The stack
 * (PostgreSQL, Redis, lock-svc, balance-svc, and reservation-svc instances
 * each on a database of its own), a typed client for ReservationService and
 * the balance-svc calls the tests need, and the checks read straight from
 * the databases. Every function that takes no svc_err_t fails the running
 * cmocka test itself when something is wrong.
 *
 * A test program: rsv_fixture_main_args() in main, rsv_fixture_start() and
 * rsv_fixture_start_instance() in its group setup, rsv_fixture_stop() in its
 * group teardown, rsv_fixture_arena_setup/_teardown per test.
 */
#ifndef RSV_FIXTURE_H
#define RSV_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reservation/v1/reservation.pb-c.h"
#include "svc/arena.h"
#include "svc/client.h"
#include "svc/err.h"
#include "testenv.h"

#define FIXTURE_ADMIN_TOKEN "test-admin-token-0123456789abcdef"
#define FIXTURE_ADMIN_AUTH "Bearer " FIXTURE_ADMIN_TOKEN
#define FIXTURE_DAY_MS 86400000LL

#define SEAT_AVAILABLE RESERVATION__V1__SEAT_STATUS__SEAT_STATUS_AVAILABLE
#define SEAT_HELD RESERVATION__V1__SEAT_STATUS__SEAT_STATUS_HELD
#define SEAT_SOLD RESERVATION__V1__SEAT_STATUS__SEAT_STATUS_SOLD
#define RES_HELD RESERVATION__V1__RESERVATION_STATUS__RESERVATION_STATUS_HELD
#define RES_CONFIRMED RESERVATION__V1__RESERVATION_STATUS__RESERVATION_STATUS_CONFIRMED
#define RES_CANCELLED RESERVATION__V1__RESERVATION_STATUS__RESERVATION_STATUS_CANCELLED
#define RES_EXPIRED RESERVATION__V1__RESERVATION_STATUS__RESERVATION_STATUS_EXPIRED

/* balance-svc's ledger kinds (balance.v1.TransactionKind). */
#define LEDGER_TOP_UP 1
#define LEDGER_SPEND 2
#define LEDGER_REFUND 3

typedef Reservation__V1__Reservation reservation_t;
typedef Reservation__V1__PayReservationResponse pay_response_t;

/* One reservation-svc instance and the database it owns. */
typedef struct {
    testenv_proc_t proc;
    testenv_pg_t db; /* the shared server; conninfo names this instance's database */
    svc_client_t *client;
} rsv_instance_t;

/* The servers every instance uses. */
typedef struct {
    const char *reservation_path, *balance_path, *lock_path;
    const char *log_level; /* LOG_LEVEL of every service; NULL: warn. Set before the start. */
    testenv_pg_t pg;       /* the server, conninfo naming database "postgres" */
    testenv_redis_t redis;
    testenv_proc_t lock, balance;
    testenv_pg_t balance_db; /* conninfo naming database "balance" */
    svc_client_t *balance_client;
} rsv_stack_t;

extern rsv_stack_t rsv_stack;

/* ---------- the stack ---------- */

/* Reads argv (reservation-svc, balance-svc, lock-svc); 0, or prints usage and returns -1. */
int rsv_fixture_main_args(int argc, char **argv);
/* PostgreSQL, Redis, lock-svc and balance-svc. -1 when one does not start. */
int rsv_fixture_start(void);
/*
 * Starts reservation-svc on database dbname of the shared server (created
 * for the first instance on it; instances may share one), with
 * ADMIN_TOKEN, LOG_LEVEL (rsv_stack.log_level) and the dependencies' addresses, plus env_kv
 * (NULL-terminated "NAME=value", may be NULL; HOLD_TTL_MS, SWEEP_MS...).
 */
int rsv_fixture_start_instance(rsv_instance_t *inst, const char *dbname, const char *const *env_kv);
/*
 * Stops the n instances, then balance-svc, lock-svc, Redis and PostgreSQL.
 * -1 when a process did not exit cleanly (a sanitizer report, say).
 */
int rsv_fixture_stop(rsv_instance_t *const *instances, int n);
/* One reservation-svc instance of a test program: its handle, database and settings. */
typedef struct {
    rsv_instance_t *inst;
    const char *dbname;
    const char *const *env_kv; /* may be NULL */
} rsv_instance_spec_t;
/* A group setup: rsv_fixture_start, then each instance of specs. 0 or -1. */
int rsv_fixture_start_with(const rsv_instance_spec_t *specs, int n);
/* The matching group teardown: rsv_fixture_stop of the instances of specs. */
int rsv_fixture_stop_with(const rsv_instance_spec_t *specs, int n);
/* A test with its own arena. */
#define RSV_ARENA_TEST(f)                                                                          \
    cmocka_unit_test_setup_teardown(f, rsv_fixture_arena_setup, rsv_fixture_arena_teardown)

/* Each test's arena in *state, freed after the test even when it failed; the teardown
 * also resumes balance-svc, which a failed test may have left paused. */
int rsv_fixture_arena_setup(void **state);
int rsv_fixture_arena_teardown(void **state);

/* ---------- outcomes ---------- */

/* Fails the test unless the call (rc, err) succeeded. */
void expect_ok(const char *what, int rc, const svc_err_t *err);
/* Fails the test unless the call (rc, err) failed with code. */
void expect_code(const char *what, int rc, const svc_err_t *err, svc_status_t code);
/* Fails unless ListSeats' answer shows seat number with status. */
void expect_seat(const Reservation__V1__ListSeatsResponse *seats, int32_t number, int status);
/* Fails unless the reservation's seats are exactly the ascending list want. */
void expect_seat_numbers(const reservation_t *res, const int32_t *want, size_t n);

/* ---------- ReservationService, typed ---------- */

/* One ReservationService call (method: "HoldSeats"); auth, when not NULL, is the
 * authorization header. */
int rsv_call(const rsv_instance_t *inst, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *desc, svc_arena_t *arena, ProtobufCMessage **out,
             const char *auth, int64_t timeout_ms, svc_err_t *err);

/* n schedule specs in arena: schedule i starts at starts0 + i hours. */
Reservation__V1__ScheduleSpec **rsv_specs(svc_arena_t *arena, size_t n, int64_t starts0,
                                          int32_t seat_count, int64_t price);
/* CreateConcert with auth as the authorization header (NULL: none). */
int rsv_create_concert(const rsv_instance_t *inst, svc_arena_t *arena, const char *title,
                       Reservation__V1__ScheduleSpec **specs, size_t n, const char *auth,
                       Reservation__V1__Concert **concert, svc_err_t *err);
/* A new concert of one schedule (starting in a day) of seat_count seats at price: its id. */
int64_t rsv_new_schedule(const rsv_instance_t *inst, svc_arena_t *arena, int32_t seat_count,
                         int64_t price);
/* The same, starting at starts_at_ms. */
int64_t rsv_new_schedule_at(const rsv_instance_t *inst, svc_arena_t *arena, int64_t starts_at_ms,
                            int32_t seat_count, int64_t price);
Reservation__V1__ListConcertsResponse *rsv_list_concerts(const rsv_instance_t *inst,
                                                         svc_arena_t *arena);
/* The schedule as ListConcerts shows it; fails when absent. */
Reservation__V1__Schedule *rsv_listed_schedule(const rsv_instance_t *inst, svc_arena_t *arena,
                                               int64_t schedule_id);
Reservation__V1__ListSeatsResponse *rsv_list_seats(const rsv_instance_t *inst, svc_arena_t *arena,
                                                   int64_t schedule_id, bool available_only);
int rsv_list_seats_call(const rsv_instance_t *inst, svc_arena_t *arena, int64_t schedule_id,
                        Reservation__V1__ListSeatsResponse **out, svc_err_t *err);
int rsv_hold(const rsv_instance_t *inst, svc_arena_t *arena, int64_t user, int64_t schedule_id,
             const int32_t *seats, size_t n, reservation_t **res, svc_err_t *err);
/* HoldSeats with an admission token (NULL: none). */
int rsv_hold_admitted(const rsv_instance_t *inst, svc_arena_t *arena, int64_t user,
                      int64_t schedule_id, const int32_t *seats, size_t n, const char *token,
                      reservation_t **res, svc_err_t *err);
int rsv_get(const rsv_instance_t *inst, svc_arena_t *arena, int64_t id, reservation_t **res,
            svc_err_t *err);
int rsv_cancel(const rsv_instance_t *inst, svc_arena_t *arena, int64_t id, int64_t user,
               reservation_t **res, svc_err_t *err);
int rsv_pay(const rsv_instance_t *inst, svc_arena_t *arena, int64_t id, int64_t user,
            const char *key, pay_response_t **resp, svc_err_t *err);
/* PayReservation with the caller's deadline timeout_ms (rsv_pay: 30 s). */
int rsv_pay_within(const rsv_instance_t *inst, svc_arena_t *arena, int64_t id, int64_t user,
                   const char *key, int64_t timeout_ms, pay_response_t **resp, svc_err_t *err);
/* GetReservation's status of id; fails when the call fails. */
int rsv_status_of(const rsv_instance_t *inst, int64_t id);

/* ---------- balance-svc ---------- */

/* A user id no other test of this program uses; it has no account yet. */
int64_t rsv_new_user(void);
/* A new user whose account holds amount (any size: several top-ups of at most 100 000 000). */
int64_t rsv_funded_user(int64_t amount);
/* n new users with an account of amount (at most 100 000 000) each, funded 50 at a time. */
void rsv_funded_users(int64_t *users, int n, int64_t amount);
/* Adds amount to user's account (creating it), in top-ups of at most 100 000 000. */
void rsv_top_up(int64_t user, int64_t amount);
/* GetBalance: balance and available (balance minus live authorizations). */
int rsv_balance_get(int64_t user, int64_t *balance, int64_t *available, svc_err_t *err);

/* Fails unless GetBalance shows available = balance and balance-svc's authorizations
 * table has no pending, unexpired row of user: no live authorization. */
void expect_nothing_authorized(int64_t user);

/* ---------- the databases ---------- */

/* The integer the SQL (a printf format) returns on db; fails when the query fails. */
int64_t db_int(const testenv_pg_t *db, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* balance-svc's accounts.balance of user. */
int64_t db_balance_of(int64_t user);
/* Ledger rows of kind for user. */
int64_t db_ledger_rows(int64_t user, int kind);
/*
 * What the ledger charged for reservation id: its spends (idempotency key
 * reservation:<id>) minus their refunds (rows whose refund_of is such a spend).
 */
int64_t db_net_charge(int64_t reservation_id);
/* Fails unless user's balance is its ledger's sum (top-ups - spends + refunds). */
void db_check_ledger(int64_t user);
/*
 * The invariants of one schedule's rows: no seat in two live holds, no seat
 * marked held or sold without a held or confirmed reservation, no seat of a
 * live reservation marked available.
 */
void db_check_schedule(const testenv_pg_t *db, int64_t schedule_id);

/* ---------- concurrency ---------- */

/* Runs fn on each of n items of size bytes at once, one thread (256 KiB stack) each. */
void run_threads(void *items, size_t size, int n, void *(*fn)(void *));

/* One HoldSeats of a storm, and what it got. */
typedef struct {
    const rsv_instance_t *inst;
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

/* Runs the n holds at once. */
void run_holds(hold_op_t *ops, int n);
/* A refused hold under contention must say "taken" or "gave up", nothing else. */
void expect_refusal(const hold_op_t *op, int i);

/* A small deterministic generator, so a failing storm can be replayed. */
uint64_t next_random(uint64_t *state);

#endif
