/*
 * test_reservation_crash.c: payments that survive crashes and races, and the
 * seat storm on two instances. Needs a build with SVC_FAILPOINTS: one
 * reservation-svc instance dies (SIGKILL) right after balance-svc accepted
 * the Spend. argv: reservation-svc, balance-svc, lock-svc.
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

#define ADMIN "Bearer crash-test-token"

static const char *rsv_path, *bal_path, *lock_path;
static testenv_pg_t pg, pg_balance; /* pg_balance: the same server, database balance */
static testenv_redis_t redis;
static testenv_proc_t lock_proc, bal_proc, crashy, inst_b, inst_c, quick;
static svc_client_t *balance;
static atomic_llong next_user = 5000;

static svc_client_t *
client_of(testenv_proc_t *p)
{
    svc_err_t err;
    svc_client_t *c = svc_client_get(p->addr, &err);

    assert_non_null(c);
    return c;
}

/* Spend rows in the balance ledger for reservation id's derived key. */
static int64_t
spends_for(int64_t reservation_id)
{
    char sql[200];

    snprintf(
        sql, sizeof(sql),
        "SELECT count(*) FROM ledger WHERE kind = 2 AND idempotency_key = 'reservation:%" PRId64
        "'",
        reservation_id);
    return testenv_pg_query_int(&pg_balance, sql);
}

static int64_t
fund_user(int64_t amount)
{
    Balance__V1__TopUpRequest req = BALANCE__V1__TOP_UP_REQUEST__INIT;
    svc_arena_t *arena = svc_arena_create();
    int64_t user = atomic_fetch_add(&next_user, 1);
    ProtobufCMessage *out;
    char key[32];
    svc_err_t err;

    snprintf(key, sizeof(key), "fund-%" PRId64, user);
    req.user_id = user;
    req.amount = amount;
    req.idempotency_key = key;
    assert_int_equal(svc_client_unary(balance, "/balance.v1.BalanceService/TopUp", &req.base,
                                      &balance__v1__top_up_response__descriptor, arena, &out, NULL,
                                      &err),
                     0);
    svc_arena_destroy(arena);
    return user;
}

/* A concert of one schedule with n seats at price; returns the schedule id. */
static int64_t
new_schedule(svc_client_t *c, int n, int64_t price)
{
    static const char *md[] = {"authorization", ADMIN};
    Reservation__V1__CreateConcertRequest req = RESERVATION__V1__CREATE_CONCERT_REQUEST__INIT;
    Reservation__V1__ScheduleSpec spec = RESERVATION__V1__SCHEDULE_SPEC__INIT;
    Reservation__V1__ScheduleSpec *specs[] = {&spec};
    Reservation__V1__CreateConcertResponse *resp;
    svc_call_opts_t opts = {.metadata = md, .n_metadata = 1};
    svc_arena_t *arena = svc_arena_create();
    svc_err_t err;
    int64_t id;

    req.title = "crash test";
    req.schedules = specs;
    req.n_schedules = 1;
    spec.starts_at_ms = 1893456000000;
    spec.seat_count = n;
    spec.seat_price = price;
    assert_int_equal(svc_client_unary(c, "/reservation.v1.ReservationService/CreateConcert",
                                      &req.base,
                                      &reservation__v1__create_concert_response__descriptor, arena,
                                      (ProtobufCMessage **)&resp, &opts, &err),
                     0);
    id = resp->concert->schedules[0]->id;
    svc_arena_destroy(arena);
    return id;
}

/* Holds one seat; returns the reservation id, or -1 with *code set. */
static int64_t
hold(svc_client_t *c, int64_t user, int64_t schedule, int32_t seat, svc_status_t *code)
{
    Reservation__V1__HoldSeatsRequest req = RESERVATION__V1__HOLD_SEATS_REQUEST__INIT;
    Reservation__V1__HoldSeatsResponse *resp;
    svc_arena_t *arena = svc_arena_create();
    svc_call_opts_t opts = {.timeout_ms = 30000};
    svc_err_t err;
    int64_t id = -1;

    req.user_id = user;
    req.schedule_id = schedule;
    req.seat_numbers = &seat;
    req.n_seat_numbers = 1;
    if (svc_client_unary(c, "/reservation.v1.ReservationService/HoldSeats", &req.base,
                         &reservation__v1__hold_seats_response__descriptor, arena,
                         (ProtobufCMessage **)&resp, &opts, &err) == 0) {
        id = resp->reservation->id;
        err.code = SVC_OK;
    }
    *code = err.code;
    svc_arena_destroy(arena);
    return id;
}

/* Pays; returns 0 with the payment id, or -1 with *code set. */
static int
pay(svc_client_t *c, int64_t reservation, int64_t user, int64_t *payment_id, svc_status_t *code)
{
    Reservation__V1__PayReservationRequest req = RESERVATION__V1__PAY_RESERVATION_REQUEST__INIT;
    Reservation__V1__PayReservationResponse *resp;
    svc_arena_t *arena = svc_arena_create();
    svc_call_opts_t opts = {.timeout_ms = 30000};
    svc_err_t err;
    int rc;

    req.reservation_id = reservation;
    req.user_id = user;
    req.idempotency_key = "pay";
    rc = svc_client_unary(c, "/reservation.v1.ReservationService/PayReservation", &req.base,
                          &reservation__v1__pay_reservation_response__descriptor, arena,
                          (ProtobufCMessage **)&resp, &opts, &err);
    if (rc == 0) {
        *payment_id = resp->payment_id;
        assert_int_equal(resp->reservation->status,
                         RESERVATION__V1__RESERVATION_STATUS__RESERVATION_STATUS_CONFIRMED);
        err.code = SVC_OK;
    }
    *code = err.code;
    svc_arena_destroy(arena);
    return rc;
}

static int
reservation_status(int64_t id)
{
    char sql[128];

    snprintf(sql, sizeof(sql), "SELECT status FROM reservations WHERE id = %" PRId64, id);
    return (int)testenv_pg_query_int(&pg, sql);
}

/* Killed right after balance-svc charged: the retry confirms without charging again. */
static void
test_crash_after_spend_then_retry(void **state)
{
    svc_client_t *dying = client_of(&crashy), *healthy = client_of(&inst_b);
    int64_t user = fund_user(100000), schedule = new_schedule(healthy, 5, 30000), payment = 0;
    svc_status_t code;
    int64_t r = hold(dying, user, schedule, 2, &code);

    (void)state;
    assert_true(r > 0);
    assert_int_equal(pay(dying, r, user, &payment, &code), -1);
    assert_int_equal(code, SVC_UNAVAILABLE); /* the instance died mid-call */
    for (int i = 0; i < 100 && testenv_proc_alive(&crashy); i++) {
        svc_sleep_ms(20);
    }
    assert_false(testenv_proc_alive(&crashy));
    assert_int_equal(spends_for(r), 1);         /* balance-svc had charged */
    assert_int_equal(reservation_status(r), 1); /* but nothing was confirmed */

    /* Another instance (or the same one restarted) finishes the same payment. */
    assert_int_equal(pay(healthy, r, user, &payment, &code), 0);
    assert_true(payment > 0);
    assert_int_equal(spends_for(r), 1);
    assert_int_equal(reservation_status(r), 2);
    char sql[200];
    snprintf(sql, sizeof(sql), "SELECT balance FROM accounts WHERE user_id = %" PRId64, user);
    assert_int_equal(testenv_pg_query_int(&pg_balance, sql), 100000 - 30000);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM seats WHERE schedule_id = %" PRId64 " AND status = 3", schedule);
    assert_int_equal(testenv_pg_query_int(&pg, sql), 1);
}

/* ---------- 1000 users, one seat, two instances ---------- */

typedef struct {
    svc_client_t *client;
    int64_t user, schedule;
    svc_status_t code;
} storm_job_t;

static void *
storm_thread(void *arg)
{
    storm_job_t *j = arg;

    (void)hold(j->client, j->user, j->schedule, 1, &j->code);
    return NULL;
}

static void
test_storm_on_two_instances(void **state)
{
    enum { N = 1000 };
    storm_job_t *jobs = calloc(N, sizeof(*jobs));
    pthread_t *t = calloc(N, sizeof(*t));
    svc_client_t *b = client_of(&inst_b), *c = client_of(&inst_c);
    int64_t schedule = new_schedule(b, 3, 1000), t0 = svc_now_mono_ms();
    pthread_attr_t attr;
    int ok = 0;
    char sql[300];

    (void)state;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < N; i++) {
        jobs[i] = (storm_job_t){i % 2 ? b : c, 100000 + i, schedule, SVC_UNKNOWN};
        assert_int_equal(pthread_create(&t[i], &attr, storm_thread, &jobs[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
    }
    pthread_attr_destroy(&attr);
    for (int i = 0; i < N; i++) {
        if (jobs[i].code == SVC_OK) {
            ok++;
        } else if (jobs[i].code != SVC_FAILED_PRECONDITION && jobs[i].code != SVC_ABORTED) {
            fail_msg("hold %d answered %s", i, svc_status_name(jobs[i].code));
        }
    }
    fprintf(stderr, "1000 holds of one seat over two instances: %d OK in %lld ms\n", ok,
            (long long)(svc_now_mono_ms() - t0));
    assert_int_equal(ok, 1);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM reservation_seats rs JOIN reservations r ON r.id ="
             " rs.reservation_id WHERE rs.schedule_id = %" PRId64 " AND rs.live AND r.status = 1",
             schedule);
    assert_int_equal(testenv_pg_query_int(&pg, sql), 1);
    free(jobs);
    free(t);
}

/* ---------- paying while the hold runs out ---------- */

typedef struct {
    svc_client_t *client;
    int64_t user, reservation, payment;
    svc_status_t code;
    int delay_ms;
} race_job_t;

static void *
race_thread(void *arg)
{
    race_job_t *j = arg;

    svc_sleep_ms(j->delay_ms);
    (void)pay(j->client, j->reservation, j->user, &j->payment, &j->code);
    return NULL;
}

/* Each payment ends one way only: confirmed and charged once, or not confirmed and not charged. */
static void
test_payment_racing_expiry(void **state)
{
    enum { N = 30 };
    svc_client_t *q = client_of(&quick);
    int64_t schedule = new_schedule(q, N, 1000);
    race_job_t jobs[N];
    pthread_t t[N];
    int confirmed = 0, refused = 0;

    (void)state;
    for (int i = 0; i < N; i++) {
        svc_status_t code;
        jobs[i].client = q;
        jobs[i].user = fund_user(5000);
        jobs[i].reservation = hold(q, jobs[i].user, schedule, i + 1, &code);
        assert_true(jobs[i].reservation > 0);
        jobs[i].delay_ms = 1300 + 20 * i; /* the hold lasts 1500 ms: some pay before, some after */
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, race_thread, &jobs[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
    }
    for (int i = 0; i < N; i++) {
        int64_t spends = spends_for(jobs[i].reservation);
        int status = reservation_status(jobs[i].reservation);
        if (jobs[i].code == SVC_OK) {
            confirmed++;
            assert_int_equal(status, 2);
            assert_int_equal(spends, 1);
        } else {
            refused++;
            assert_int_equal(jobs[i].code, SVC_FAILED_PRECONDITION);
            assert_int_not_equal(status, 2);
            assert_int_equal(spends, 0);
        }
    }
    fprintf(stderr, "payments racing a 1500 ms hold: %d confirmed and charged, %d refused\n",
            confirmed, refused);
}

static int
setup(void **state)
{
    char url[128], redis_env[160], lock_env[96], bal_env[96], db_env[600], bdb_env[600];
    const char *lock_envs[] = {redis_env, "LOG_LEVEL=warn", NULL};
    const char *bal_envs[] = {bdb_env, lock_env, "LOG_LEVEL=warn", NULL};
    const char *crash_envs[] = {db_env,
                                lock_env,
                                bal_env,
                                "ADMIN_TOKEN=crash-test-token",
                                "LOG_LEVEL=warn",
                                "SVC_FAILPOINT=pay_after_spend",
                                NULL};
    const char *envs[] = {db_env,           lock_env, bal_env, "ADMIN_TOKEN=crash-test-token",
                          "LOG_LEVEL=warn", NULL};
    const char *quick_envs[] = {
        db_env,           lock_env, bal_env, "ADMIN_TOKEN=crash-test-token", "HOLD_TTL_MS=1500",
        "LOG_LEVEL=warn", NULL};

    (void)state;
    testenv_cleanup_on_exit();
    if (testenv_pg_start(&pg, "reservation") != 0 || testenv_redis_start(&redis) != 0 ||
        testenv_pg_exec(&pg, "CREATE DATABASE balance") != 0) {
        return -1;
    }
    pg_balance = pg;
    snprintf(pg_balance.conninfo, sizeof(pg_balance.conninfo),
             "host=127.0.0.1 port=%d user=postgres dbname=balance", pg.port);
    testenv_redis_url(&redis, url, sizeof(url));
    snprintf(redis_env, sizeof(redis_env), "REDIS_URL=%s", url);
    if (testenv_proc_start(&lock_proc, lock_path, NULL, lock_envs) != 0) {
        return -1;
    }
    snprintf(lock_env, sizeof(lock_env), "LOCK_SVC_ADDR=%s", lock_proc.addr);
    snprintf(bdb_env, sizeof(bdb_env), "DATABASE_URL=%s", pg_balance.conninfo);
    if (testenv_proc_start(&bal_proc, bal_path, NULL, bal_envs) != 0) {
        return -1;
    }
    balance = client_of(&bal_proc);
    snprintf(bal_env, sizeof(bal_env), "BALANCE_SVC_ADDR=%s", bal_proc.addr);
    snprintf(db_env, sizeof(db_env), "DATABASE_URL=%s", pg.conninfo);
    return testenv_proc_start(&inst_b, rsv_path, NULL, envs) != 0 ||
                   testenv_proc_start(&inst_c, rsv_path, NULL, envs) != 0 ||
                   testenv_proc_start(&crashy, rsv_path, NULL, crash_envs) != 0 ||
                   testenv_proc_start(&quick, rsv_path, NULL, quick_envs) != 0
               ? -1
               : 0;
}

static int
teardown(void **state)
{
    int bad = 0;

    (void)state;
    (void)testenv_proc_stop(&crashy); /* killed by its failpoint */
    bad |= testenv_proc_stop(&inst_b) != 0;
    bad |= testenv_proc_stop(&inst_c) != 0;
    bad |= testenv_proc_stop(&quick) != 0;
    bad |= testenv_proc_stop(&bal_proc) != 0;
    bad |= testenv_proc_stop(&lock_proc) != 0;
    testenv_redis_stop(&redis);
    testenv_pg_stop(&pg);
    svc_client_release_all();
    return bad ? -1 : 0;
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crash_after_spend_then_retry),
        cmocka_unit_test(test_storm_on_two_instances),
        cmocka_unit_test(test_payment_racing_expiry),
    };

    if (argc < 4) {
        fprintf(stderr, "usage: %s reservation-svc balance-svc lock-svc\n", argv[0]);
        return 2;
    }
    rsv_path = argv[1];
    bal_path = argv[2];
    lock_path = argv[3];
    return testenv_group_result(
        cmocka_run_group_tests(tests, setup, testenv_group_teardown(teardown)));
}
