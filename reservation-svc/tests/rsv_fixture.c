/*
 * rsv_fixture.c: the stack, the typed client and the database checks that
 * reservation-svc's integration tests share (see rsv_fixture.h).
 */
#define _GNU_SOURCE
#include "rsv_fixture.h"

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "svc/balance_client.h"
#include "svc/timer.h"

#define CALL_TIMEOUT_MS 30000
#define TOP_UP_MAX 100000000LL /* balance.v1's cap per TopUp */

rsv_stack_t rsv_stack;
static atomic_llong next_user = 5000;
static atomic_int next_title = 1;

/* ---------- the stack ---------- */

int
rsv_fixture_main_args(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s path/to/reservation-svc path/to/balance-svc path/to/lock-svc\n",
                argv[0]);
        return -1;
    }
    rsv_stack.reservation_path = argv[1];
    rsv_stack.balance_path = argv[2];
    rsv_stack.lock_path = argv[3];
    return 0;
}

/* "LOG_LEVEL=..." for every service of the stack. */
static void
log_level_env(char *out, size_t len)
{
    snprintf(out, len, "LOG_LEVEL=%s", rsv_stack.log_level != NULL ? rsv_stack.log_level : "warn");
}

int
rsv_fixture_start(void)
{
    rsv_stack_t *s = &rsv_stack;
    char url[128], redis_env[160], lock_env[96], db_env[600], level_env[64];
    const char *lock_envs[] = {redis_env, level_env, NULL};
    const char *balance_envs[] = {db_env, lock_env, level_env, NULL};
    svc_err_t err;

    testenv_cleanup_on_exit();
    log_level_env(level_env, sizeof(level_env));
    if (testenv_pg_start(&s->pg, NULL) != 0 || testenv_redis_start(&s->redis) != 0 ||
        testenv_pg_exec(&s->pg, "CREATE DATABASE balance") != 0) {
        return -1;
    }
    testenv_redis_url(&s->redis, url, sizeof(url));
    snprintf(redis_env, sizeof(redis_env), "REDIS_URL=%s", url);
    if (testenv_proc_start(&s->lock, s->lock_path, NULL, lock_envs) != 0) {
        return -1;
    }
    s->balance_db = s->pg;
    snprintf(s->balance_db.conninfo, sizeof(s->balance_db.conninfo),
             "host=127.0.0.1 port=%d user=postgres dbname=balance", s->pg.port);
    snprintf(lock_env, sizeof(lock_env), "LOCK_SVC_ADDR=%.63s", s->lock.addr);
    snprintf(db_env, sizeof(db_env), "DATABASE_URL=%.511s", s->balance_db.conninfo);
    if (testenv_proc_start(&s->balance, s->balance_path, NULL, balance_envs) != 0) {
        return -1;
    }
    s->balance_client = svc_client_get(s->balance.addr, &err);
    return s->balance_client != NULL ? 0 : -1;
}

int
rsv_fixture_start_instance(rsv_instance_t *inst, const char *dbname, const char *const *env_kv)
{
    char create[128], db_env[600], lock_env[96], balance_env[96], level_env[64];
    const char *envs[TESTENV_PROC_MAX_ENV] = {db_env, lock_env, balance_env,
                                              "ADMIN_TOKEN=" FIXTURE_ADMIN_TOKEN, level_env};
    int n = 5;
    svc_err_t err;

    log_level_env(level_env, sizeof(level_env));
    for (; env_kv != NULL && *env_kv != NULL && n < TESTENV_PROC_MAX_ENV - 1; env_kv++) {
        envs[n++] = *env_kv;
    }
    envs[n] = NULL;
    snprintf(create, sizeof(create), "SELECT count(*) FROM pg_database WHERE datname = '%s'",
             dbname);
    if (testenv_pg_query_int(&rsv_stack.pg, create) == 0) { /* the first instance on it */
        snprintf(create, sizeof(create), "CREATE DATABASE %s", dbname);
        if (testenv_pg_exec(&rsv_stack.pg, create) != 0) {
            return -1;
        }
    }
    inst->db = rsv_stack.pg;
    snprintf(inst->db.conninfo, sizeof(inst->db.conninfo),
             "host=127.0.0.1 port=%d user=postgres dbname=%s", rsv_stack.pg.port, dbname);
    snprintf(db_env, sizeof(db_env), "DATABASE_URL=%.511s", inst->db.conninfo);
    snprintf(lock_env, sizeof(lock_env), "LOCK_SVC_ADDR=%.63s", rsv_stack.lock.addr);
    snprintf(balance_env, sizeof(balance_env), "BALANCE_SVC_ADDR=%.63s", rsv_stack.balance.addr);
    if (testenv_proc_start(&inst->proc, rsv_stack.reservation_path, NULL, envs) != 0) {
        return -1;
    }
    inst->client = svc_client_get(inst->proc.addr, &err);
    return inst->client != NULL ? 0 : -1;
}

int
rsv_fixture_start_with(const rsv_instance_spec_t *specs, int n)
{
    if (rsv_fixture_start() != 0) {
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (rsv_fixture_start_instance(specs[i].inst, specs[i].dbname, specs[i].env_kv) != 0) {
            return -1;
        }
    }
    return 0;
}

int
rsv_fixture_stop_with(const rsv_instance_spec_t *specs, int n)
{
    rsv_instance_t *all[8];

    for (int i = 0; i < n && i < 8; i++) {
        all[i] = specs[i].inst;
    }
    return rsv_fixture_stop(all, n < 8 ? n : 8);
}

int
rsv_fixture_stop(rsv_instance_t *const *instances, int n)
{
    int bad = 0, st;

    for (int i = 0; i < n; i++) {
        if (instances[i]->proc.pid != 0 && (st = testenv_proc_stop(&instances[i]->proc)) != 0) {
            fprintf(stderr, "reservation-svc %s did not exit cleanly: status %d\n",
                    instances[i]->proc.addr, st);
            bad = 1;
        }
    }
    testenv_proc_signal(&rsv_stack.balance, SIGCONT); /* a test may have left it paused */
    if ((st = testenv_proc_stop(&rsv_stack.balance)) != 0) {
        fprintf(stderr, "balance-svc did not exit cleanly: status %d\n", st);
        bad = 1;
    }
    if ((st = testenv_proc_stop(&rsv_stack.lock)) != 0) {
        fprintf(stderr, "lock-svc did not exit cleanly: status %d\n", st);
        bad = 1;
    }
    testenv_redis_stop(&rsv_stack.redis);
    testenv_pg_stop(&rsv_stack.pg);
    svc_client_release_all();
    return bad ? -1 : 0;
}

int
rsv_fixture_arena_setup(void **state)
{
    *state = svc_arena_create();
    return *state != NULL ? 0 : -1;
}

int
rsv_fixture_arena_teardown(void **state)
{
    if (rsv_stack.balance.pid != 0) { /* a failed test may have left it paused */
        testenv_proc_signal(&rsv_stack.balance, SIGCONT);
    }
    svc_arena_destroy(*state);
    return 0;
}

/* ---------- outcomes ---------- */

void
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

void
expect_ok(const char *what, int rc, const svc_err_t *err)
{
    if (rc != 0) {
        fail_msg("%s: expected OK, got %s (%s)", what, svc_status_name(err->code), err->msg);
    }
}

void
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

void
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

/* ---------- ReservationService, typed ---------- */

int
rsv_call(const rsv_instance_t *inst, const char *method, const ProtobufCMessage *req,
         const ProtobufCMessageDescriptor *desc, svc_arena_t *arena, ProtobufCMessage **out,
         const char *auth, int64_t timeout_ms, svc_err_t *err)
{
    const char *md[2] = {"authorization", auth};
    svc_call_opts_t opts = {.timeout_ms = timeout_ms};
    char path[96];

    if (auth != NULL) {
        opts.metadata = md;
        opts.n_metadata = 1;
    }
    snprintf(path, sizeof(path), "/reservation.v1.ReservationService/%s", method);
    memset(err, 0, sizeof(*err));
    return svc_client_unary(inst->client, path, req, desc, arena, out, &opts, err);
}

Reservation__V1__ScheduleSpec **
rsv_specs(svc_arena_t *arena, size_t n, int64_t starts0, int32_t seat_count, int64_t price)
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

int
rsv_create_concert(const rsv_instance_t *inst, svc_arena_t *arena, const char *title,
                   Reservation__V1__ScheduleSpec **specs, size_t n, const char *auth,
                   Reservation__V1__Concert **concert, svc_err_t *err)
{
    Reservation__V1__CreateConcertRequest req = RESERVATION__V1__CREATE_CONCERT_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    int rc;

    req.title = (char *)title;
    req.schedules = specs;
    req.n_schedules = n;
    rc = rsv_call(inst, "CreateConcert", &req.base,
                  &reservation__v1__create_concert_response__descriptor, arena, &out, auth,
                  CALL_TIMEOUT_MS, err);
    if (rc == 0 && concert != NULL) {
        *concert = ((Reservation__V1__CreateConcertResponse *)out)->concert;
        assert_non_null(*concert);
    }
    return rc;
}

int64_t
rsv_new_schedule_at(const rsv_instance_t *inst, svc_arena_t *arena, int64_t starts_at_ms,
                    int32_t seat_count, int64_t price)
{
    Reservation__V1__Concert *concert = NULL;
    char title[64];
    svc_err_t err;

    snprintf(title, sizeof(title), "concert %d", atomic_fetch_add(&next_title, 1));
    expect_ok("CreateConcert",
              rsv_create_concert(inst, arena, title,
                                 rsv_specs(arena, 1, starts_at_ms, seat_count, price), 1,
                                 FIXTURE_ADMIN_AUTH, &concert, &err),
              &err);
    assert_int_equal(concert->n_schedules, 1);
    assert_true(concert->schedules[0]->id > 0);
    return concert->schedules[0]->id;
}

int64_t
rsv_new_schedule(const rsv_instance_t *inst, svc_arena_t *arena, int32_t seat_count, int64_t price)
{
    return rsv_new_schedule_at(inst, arena, svc_now_unix_ms() + FIXTURE_DAY_MS, seat_count, price);
}

Reservation__V1__ListConcertsResponse *
rsv_list_concerts(const rsv_instance_t *inst, svc_arena_t *arena)
{
    Reservation__V1__ListConcertsRequest req = RESERVATION__V1__LIST_CONCERTS_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    svc_err_t err;

    expect_ok("ListConcerts",
              rsv_call(inst, "ListConcerts", &req.base,
                       &reservation__v1__list_concerts_response__descriptor, arena, &out, NULL,
                       CALL_TIMEOUT_MS, &err),
              &err);
    return (Reservation__V1__ListConcertsResponse *)out;
}

Reservation__V1__Schedule *
rsv_listed_schedule(const rsv_instance_t *inst, svc_arena_t *arena, int64_t schedule_id)
{
    Reservation__V1__ListConcertsResponse *resp = rsv_list_concerts(inst, arena);

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

int
rsv_list_seats_call(const rsv_instance_t *inst, svc_arena_t *arena, int64_t schedule_id,
                    Reservation__V1__ListSeatsResponse **out, svc_err_t *err)
{
    Reservation__V1__ListSeatsRequest req = RESERVATION__V1__LIST_SEATS_REQUEST__INIT;

    req.schedule_id = schedule_id;
    return rsv_call(inst, "ListSeats", &req.base, &reservation__v1__list_seats_response__descriptor,
                    arena, (ProtobufCMessage **)out, NULL, CALL_TIMEOUT_MS, err);
}

Reservation__V1__ListSeatsResponse *
rsv_list_seats(const rsv_instance_t *inst, svc_arena_t *arena, int64_t schedule_id,
               bool available_only)
{
    Reservation__V1__ListSeatsRequest req = RESERVATION__V1__LIST_SEATS_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    svc_err_t err;

    req.schedule_id = schedule_id;
    req.available_only = available_only;
    expect_ok("ListSeats",
              rsv_call(inst, "ListSeats", &req.base,
                       &reservation__v1__list_seats_response__descriptor, arena, &out, NULL,
                       CALL_TIMEOUT_MS, &err),
              &err);
    return (Reservation__V1__ListSeatsResponse *)out;
}

int
rsv_hold(const rsv_instance_t *inst, svc_arena_t *arena, int64_t user, int64_t schedule_id,
         const int32_t *seats, size_t n, reservation_t **res, svc_err_t *err)
{
    return rsv_hold_admitted(inst, arena, user, schedule_id, seats, n, NULL, res, err);
}

int
rsv_hold_admitted(const rsv_instance_t *inst, svc_arena_t *arena, int64_t user, int64_t schedule_id,
                  const int32_t *seats, size_t n, const char *token, reservation_t **res,
                  svc_err_t *err)
{
    Reservation__V1__HoldSeatsRequest req = RESERVATION__V1__HOLD_SEATS_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    int rc;

    if (token != NULL) {
        req.admission_token = (char *)token;
    }
    req.user_id = user;
    req.schedule_id = schedule_id;
    req.seat_numbers = (int32_t *)seats;
    req.n_seat_numbers = n;
    rc = rsv_call(inst, "HoldSeats", &req.base, &reservation__v1__hold_seats_response__descriptor,
                  arena, &out, NULL, CALL_TIMEOUT_MS, err);
    if (rc == 0) {
        *res = ((Reservation__V1__HoldSeatsResponse *)out)->reservation;
        assert_non_null(*res);
    }
    return rc;
}

int
rsv_get(const rsv_instance_t *inst, svc_arena_t *arena, int64_t id, reservation_t **res,
        svc_err_t *err)
{
    Reservation__V1__GetReservationRequest req = RESERVATION__V1__GET_RESERVATION_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    int rc;

    req.reservation_id = id;
    rc = rsv_call(inst, "GetReservation", &req.base,
                  &reservation__v1__get_reservation_response__descriptor, arena, &out, NULL,
                  CALL_TIMEOUT_MS, err);
    if (rc == 0) {
        *res = ((Reservation__V1__GetReservationResponse *)out)->reservation;
        assert_non_null(*res);
    }
    return rc;
}

int
rsv_cancel(const rsv_instance_t *inst, svc_arena_t *arena, int64_t id, int64_t user,
           reservation_t **res, svc_err_t *err)
{
    Reservation__V1__CancelReservationRequest req =
        RESERVATION__V1__CANCEL_RESERVATION_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    int rc;

    req.reservation_id = id;
    req.user_id = user;
    rc = rsv_call(inst, "CancelReservation", &req.base,
                  &reservation__v1__cancel_reservation_response__descriptor, arena, &out, NULL,
                  CALL_TIMEOUT_MS, err);
    if (rc == 0) {
        *res = ((Reservation__V1__CancelReservationResponse *)out)->reservation;
        assert_non_null(*res);
    }
    return rc;
}

int
rsv_pay_within(const rsv_instance_t *inst, svc_arena_t *arena, int64_t id, int64_t user,
               const char *key, int64_t timeout_ms, pay_response_t **resp, svc_err_t *err)
{
    Reservation__V1__PayReservationRequest req = RESERVATION__V1__PAY_RESERVATION_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    int rc;

    req.reservation_id = id;
    req.user_id = user;
    req.idempotency_key = (char *)key;
    rc = rsv_call(inst, "PayReservation", &req.base,
                  &reservation__v1__pay_reservation_response__descriptor, arena, &out, NULL,
                  timeout_ms, err);
    if (rc == 0) {
        *resp = (pay_response_t *)out;
        assert_non_null((*resp)->reservation);
    }
    return rc;
}

int
rsv_pay(const rsv_instance_t *inst, svc_arena_t *arena, int64_t id, int64_t user, const char *key,
        pay_response_t **resp, svc_err_t *err)
{
    return rsv_pay_within(inst, arena, id, user, key, CALL_TIMEOUT_MS, resp, err);
}

int
rsv_status_of(const rsv_instance_t *inst, int64_t id)
{
    svc_arena_t *arena = svc_arena_create();
    reservation_t *res = NULL;
    svc_err_t err;
    int status;

    expect_ok("GetReservation", rsv_get(inst, arena, id, &res, &err), &err);
    status = (int)res->status;
    svc_arena_destroy(arena);
    return status;
}

/* ---------- balance-svc ---------- */

int64_t
rsv_new_user(void)
{
    return atomic_fetch_add(&next_user, 1);
}

void
rsv_top_up(int64_t user, int64_t amount)
{
    static atomic_llong next_key = 1;
    svc_call_opts_t opts = {.timeout_ms = 15000};

    while (amount > 0) {
        int64_t part = amount < TOP_UP_MAX ? amount : TOP_UP_MAX;
        char key[64];
        svc_err_t err;
        snprintf(key, sizeof(key), "fund-%" PRId64 "-%lld", user, atomic_fetch_add(&next_key, 1));
        expect_ok("TopUp",
                  svc_balance_top_up(rsv_stack.balance_client, user, part, key, &opts, NULL, &err),
                  &err);
        amount -= part;
    }
}

int64_t
rsv_funded_user(int64_t amount)
{
    int64_t user = rsv_new_user();

    rsv_top_up(user, amount);
    return user;
}

typedef struct {
    int64_t user, amount;
} funding_t;

static void *
funding_thread(void *arg)
{
    funding_t *f = arg;

    rsv_top_up(f->user, f->amount);
    return NULL;
}

void
rsv_funded_users(int64_t *users, int n, int64_t amount)
{
    enum { AT_ONCE = 50 };
    funding_t f[AT_ONCE];

    for (int done = 0; done < n;) {
        int k = n - done < AT_ONCE ? n - done : AT_ONCE;
        for (int i = 0; i < k; i++) {
            users[done + i] = rsv_new_user();
            f[i] = (funding_t){users[done + i], amount};
        }
        run_threads(f, sizeof(f[0]), k, funding_thread);
        done += k;
    }
}

int
rsv_balance_get(int64_t user, int64_t *balance, int64_t *available, svc_err_t *err)
{
    svc_call_opts_t opts = {.timeout_ms = 15000};
    svc_balance_result_t res;

    if (svc_balance_get(rsv_stack.balance_client, user, &opts, &res, err) != 0) {
        return -1;
    }
    if (balance != NULL) {
        *balance = res.balance;
    }
    if (available != NULL) {
        *available = res.available;
    }
    return 0;
}

/* ---------- the databases ---------- */

int64_t
db_int(const testenv_pg_t *db, const char *fmt, ...)
{
    char sql[2048];
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

int64_t
db_balance_of(int64_t user)
{
    return db_int(&rsv_stack.balance_db, "SELECT balance FROM accounts WHERE user_id = %" PRId64,
                  user);
}

int64_t
db_ledger_rows(int64_t user, int kind)
{
    return db_int(&rsv_stack.balance_db,
                  "SELECT count(*) FROM ledger WHERE user_id = %" PRId64 " AND kind = %d", user,
                  kind);
}

int64_t
db_net_charge(int64_t reservation_id)
{
    /* A refund's own key is reservation-svc's business; what it gives back is found by the
     * spend it names (refund_of), so this holds whatever key a refund was made with. */
    return db_int(&rsv_stack.balance_db,
                  "SELECT coalesce(sum(CASE WHEN l.kind = 2 THEN l.amount ELSE -l.amount END), 0)"
                  " FROM ledger l WHERE (l.kind = 2 AND l.idempotency_key = 'reservation:%" PRId64
                  "') OR (l.kind = 3 AND l.refund_of IN (SELECT id FROM ledger WHERE kind = 2 AND"
                  " idempotency_key = 'reservation:%" PRId64 "'))",
                  reservation_id, reservation_id);
}

void
expect_nothing_authorized(int64_t user)
{
    int64_t balance = 0, available = 0;
    svc_err_t err;

    expect_ok("GetBalance", rsv_balance_get(user, &balance, &available, &err), &err);
    if (available != balance) {
        fail_msg("user %" PRId64 ": balance %" PRId64 ", available %" PRId64
                 ": an authorization is still live",
                 user, balance, available);
    }
    /* The table agrees: nothing pending that has not yet run out. */
    assert_int_equal(db_int(&rsv_stack.balance_db,
                            "SELECT count(*) FROM authorizations WHERE user_id = %" PRId64
                            " AND status = 1 AND expires_at_ms > %" PRId64,
                            user, svc_now_unix_ms()),
                     0);
}

void
db_check_ledger(int64_t user)
{
    int64_t balance = db_balance_of(user);
    int64_t sum = db_int(&rsv_stack.balance_db,
                         "SELECT coalesce(sum(CASE kind WHEN 2 THEN -amount ELSE amount END), 0)"
                         " FROM ledger WHERE user_id = %" PRId64,
                         user);

    if (balance != sum) {
        fail_msg("user %" PRId64 ": balance %" PRId64 ", its ledger sums to %" PRId64, user,
                 balance, sum);
    }
}

/* A reservation (status 1 held, 2 confirmed) that still holds its seats now. */
#define LIVE_SQL                                                                                   \
    "(r.status = 2 OR (r.status = 1 AND r.expires_at_ms > "                                        \
    "(extract(epoch FROM clock_timestamp()) * 1000)::bigint))"

void
db_check_schedule(const testenv_pg_t *db, int64_t schedule_id)
{
    int64_t doubled, orphaned, unmarked;

    doubled = db_int(db,
                     "SELECT count(*) FROM (SELECT rs.number FROM reservation_seats rs JOIN "
                     "reservations r ON r.id = rs.reservation_id WHERE rs.schedule_id = %" PRId64
                     " AND " LIVE_SQL " GROUP BY rs.number HAVING count(*) > 1) d",
                     schedule_id);
    /*
     * A hold that replaces an expired one takes only its own seats off it;
     * the expired hold's other seats keep their mark until the sweeper's next
     * pass frees them (reads see them free at once). So a mark may outlive its
     * reservation for a sweep interval, not for good: give the sweeper 5 s.
     */
    for (int i = 0; i < 100; i++) {
        orphaned = db_int(db,
                          "SELECT count(*) FROM seats s WHERE s.schedule_id = %" PRId64
                          " AND s.status <> 1 AND NOT EXISTS (SELECT 1 FROM reservation_seats rs "
                          "JOIN reservations r ON r.id = rs.reservation_id WHERE rs.schedule_id = "
                          "s.schedule_id AND rs.number = s.number AND r.status IN (1, 2))",
                          schedule_id);
        if (orphaned == 0) {
            break;
        }
        svc_sleep_ms(50);
    }
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

/* ---------- concurrency ---------- */

void
run_threads(void *items, size_t size, int n, void *(*fn)(void *))
{
    pthread_t *t = calloc((size_t)n, sizeof(*t));
    pthread_attr_t attr;

    assert_non_null(t);
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < n; i++) {
        assert_int_equal(pthread_create(&t[i], &attr, fn, (char *)items + (size_t)i * size), 0);
    }
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
    }
    pthread_attr_destroy(&attr);
    free(t);
}

static void *
hold_thread(void *arg)
{
    hold_op_t *op = arg;
    svc_arena_t *arena = svc_arena_create();
    reservation_t *res = NULL;

    op->rc = rsv_hold(op->inst, arena, op->user, op->schedule_id, op->seats, op->n, &res, &op->err);
    if (op->rc == 0) {
        op->reservation_id = res->id;
        op->status = (int)res->status;
        op->created_at_ms = res->created_at_ms;
        op->expires_at_ms = res->expires_at_ms;
        op->n_got = res->n_seat_numbers < 10 ? res->n_seat_numbers : 10;
        memcpy(op->got, res->seat_numbers, op->n_got * sizeof(int32_t));
    }
    svc_arena_destroy(arena);
    return NULL;
}

void
run_holds(hold_op_t *ops, int n)
{
    run_threads(ops, sizeof(*ops), n, hold_thread);
}

void
expect_refusal(const hold_op_t *op, int i)
{
    if (op->err.code != SVC_FAILED_PRECONDITION && op->err.code != SVC_ABORTED) {
        fail_msg("hold %d (user %" PRId64 "): %s (%s), expected OK, FAILED_PRECONDITION or "
                 "ABORTED",
                 i, op->user, svc_status_name(op->err.code), op->err.msg);
    }
}

uint64_t
next_random(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}
