/*
 * test_reservation_payments.c: PayReservation and the cancel of a confirmed
 * reservation over real gRPC, with balance-svc's two-phase funds behind it.
 * Paid once (also fifty times at once), refused without money, after
 * expiry or a cancel; a payment attempt does not keep a hold alive; seats
 * at price 0 are confirmed without balance-svc; ten seats at 60 000 000
 * can be paid; a confirmed reservation cancelled before its show is
 * refunded in full, after the show started it cannot be cancelled. Each
 * scenario also reads both databases: the ledger, what it charged per
 * reservation, live authorizations, payments and seats.
 * argv: reservation-svc, balance-svc, lock-svc.
 *
 * Three reservation-svc instances: main_rsv (HOLD_TTL_MS 300 000) and
 * ttl_rsv (2 000) for holds that must expire, each on its own database, and
 * slow_rsv on main_rsv's database, which stops before each authorization
 * (failpoint pay_before_authorize).
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "rsv_fixture.h"
#include "svc/balance_client.h"
#include "svc/timer.h"

#define SHORT_TTL_MS 2000

/* payments.status in reservation-svc's database (migration 003). */
#define PAY_CHARGED 2
#define PAY_FAILED 3
#define PAY_REFUNDED 7

static rsv_instance_t main_rsv, ttl_rsv, slow_rsv;

/* Spends (ledger kind 2) of user in balance-svc's database. */
static int64_t
db_spends_of(int64_t user)
{
    return db_ledger_rows(user, LEDGER_SPEND);
}

/* payments.status of reservation id on inst's database. */
static int64_t
db_payment_status(const rsv_instance_t *inst, int64_t reservation_id)
{
    return db_int(&inst->db, "SELECT status FROM payments WHERE reservation_id = %" PRId64,
                  reservation_id);
}

/* ---------- paying ---------- */

static void
test_pay_reservation(void **state)
{
    static const int32_t seats12[2] = {1, 2};
    svc_arena_t *arena = *state;
    int64_t sched = rsv_new_schedule(&main_rsv, arena, 6, 3000), fan = rsv_new_user(),
            stranger = rsv_new_user();
    pay_response_t *paid = NULL, *again = NULL;
    reservation_t *held = NULL, *res = NULL;
    Reservation__V1__ListSeatsResponse *seats;
    svc_err_t err;

    rsv_top_up(fan, 10000);
    rsv_top_up(stranger, 10000);
    expect_ok("HoldSeats", rsv_hold(&main_rsv, arena, fan, sched, seats12, 2, &held, &err), &err);
    assert_int_equal(held->amount, 6000);
    expect_code("PayReservation by a stranger",
                rsv_pay(&main_rsv, arena, held->id, stranger, "k-stranger", &paid, &err), &err,
                SVC_PERMISSION_DENIED);
    expect_code("PayReservation of an unknown id",
                rsv_pay(&main_rsv, arena, INT64_MAX, fan, "k-unknown", &paid, &err), &err,
                SVC_NOT_FOUND);
    assert_int_equal(db_balance_of(stranger), 10000);
    assert_int_equal(db_balance_of(fan), 10000);

    expect_ok("PayReservation", rsv_pay(&main_rsv, arena, held->id, fan, "k1", &paid, &err), &err);
    assert_int_equal(paid->reservation->id, held->id);
    assert_int_equal(paid->reservation->status, RES_CONFIRMED);
    assert_int_equal(paid->reservation->amount, 6000);
    expect_seat_numbers(paid->reservation, seats12, 2);
    assert_int_equal(paid->balance, 4000);
    assert_true(paid->payment_id > 0);
    assert_int_equal(db_balance_of(fan), 4000);
    assert_int_equal(db_spends_of(fan), 1);
    assert_int_equal(db_int(&rsv_stack.balance_db,
                            "SELECT count(*) FROM ledger WHERE kind = 2 AND id = %" PRId64
                            " AND user_id = %" PRId64 " AND amount = 6000",
                            paid->payment_id, fan),
                     1);

    /* Paying again, with any key, returns the original result and charges nothing. */
    expect_ok("PayReservation again", rsv_pay(&main_rsv, arena, held->id, fan, "k2", &again, &err),
              &err);
    assert_int_equal(again->reservation->status, RES_CONFIRMED);
    assert_int_equal(again->payment_id, paid->payment_id);
    assert_int_equal(again->balance, 4000);
    assert_int_equal(db_balance_of(fan), 4000);
    assert_int_equal(db_spends_of(fan), 1);

    seats = rsv_list_seats(&main_rsv, arena, sched, 0);
    expect_seat(seats, 1, SEAT_SOLD);
    expect_seat(seats, 2, SEAT_SOLD);
    expect_seat(seats, 3, SEAT_AVAILABLE);
    assert_int_equal(rsv_list_seats(&main_rsv, arena, sched, 1)->n_seats, 4);
    assert_int_equal(rsv_listed_schedule(&main_rsv, arena, sched)->available_seats, 4);
    expect_ok("GetReservation", rsv_get(&main_rsv, arena, held->id, &res, &err), &err);
    assert_int_equal(res->status, RES_CONFIRMED);
    expect_code("HoldSeats of a sold seat",
                rsv_hold(&main_rsv, arena, stranger, sched, seats12, 1, &res, &err), &err,
                SVC_FAILED_PRECONDITION);
    expect_code("PayReservation of someone else's paid reservation",
                rsv_pay(&main_rsv, arena, held->id, stranger, "k3", &again, &err), &err,
                SVC_PERMISSION_DENIED);
    assert_int_equal(db_balance_of(stranger), 10000);
    assert_int_equal(db_net_charge(held->id), 6000);
    expect_nothing_authorized(fan);
    db_check_ledger(fan);
    assert_int_equal(db_payment_status(&main_rsv, held->id), PAY_CHARGED);
    db_check_schedule(&main_rsv.db, sched);
}

static void
test_pay_refused(void **state)
{
    static const int32_t one[1] = {1}, two[1] = {2};
    svc_arena_t *arena = *state;
    int64_t sched = rsv_new_schedule(&main_rsv, arena, 4, 3000), poor = rsv_new_user(),
            quitter = rsv_new_user();
    pay_response_t *paid = NULL;
    reservation_t *held = NULL, *res = NULL;
    svc_err_t err;

    /* Too little money: refused, nothing charged, nothing sold. */
    rsv_top_up(poor, 1000);
    expect_ok("HoldSeats", rsv_hold(&main_rsv, arena, poor, sched, one, 1, &held, &err), &err);
    expect_code("PayReservation with too little money",
                rsv_pay(&main_rsv, arena, held->id, poor, "k-poor", &paid, &err), &err,
                SVC_FAILED_PRECONDITION);
    assert_int_equal(db_balance_of(poor), 1000);
    assert_int_equal(db_spends_of(poor), 0);
    expect_nothing_authorized(poor);
    expect_ok("GetReservation", rsv_get(&main_rsv, arena, held->id, &res, &err), &err);
    assert_true(res->status != RES_CONFIRMED);
    assert_true(rsv_list_seats(&main_rsv, arena, sched, 0)->seats[0]->status != SEAT_SOLD);

    /* A cancelled hold cannot be paid. */
    rsv_top_up(quitter, 10000);
    expect_ok("HoldSeats", rsv_hold(&main_rsv, arena, quitter, sched, two, 1, &held, &err), &err);
    expect_ok("CancelReservation", rsv_cancel(&main_rsv, arena, held->id, quitter, &res, &err),
              &err);
    expect_code("PayReservation of a cancelled hold",
                rsv_pay(&main_rsv, arena, held->id, quitter, "k-quit", &paid, &err), &err,
                SVC_FAILED_PRECONDITION);
    assert_int_equal(db_balance_of(quitter), 10000);
    assert_int_equal(db_spends_of(quitter), 0);
    expect_seat(rsv_list_seats(&main_rsv, arena, sched, 0), 2, SEAT_AVAILABLE);
    db_check_schedule(&main_rsv.db, sched);
}

static void
test_pay_expired_hold(void **state)
{
    static const int32_t one[1] = {1};
    svc_arena_t *arena = *state;
    int64_t sched = rsv_new_schedule(&ttl_rsv, arena, 2, 700), late = rsv_new_user();
    pay_response_t *paid = NULL;
    reservation_t *held = NULL, *res = NULL;
    svc_err_t err;

    rsv_top_up(late, 5000);
    expect_ok("HoldSeats", rsv_hold(&ttl_rsv, arena, late, sched, one, 1, &held, &err), &err);
    while (svc_now_unix_ms() < held->expires_at_ms + 300) {
        svc_sleep_ms(50);
    }
    expect_code("PayReservation of an expired hold",
                rsv_pay(&ttl_rsv, arena, held->id, late, "k-late", &paid, &err), &err,
                SVC_FAILED_PRECONDITION);
    assert_int_equal(db_balance_of(late), 5000);
    assert_int_equal(db_spends_of(late), 0);
    expect_nothing_authorized(late);
    expect_ok("GetReservation", rsv_get(&ttl_rsv, arena, held->id, &res, &err), &err);
    assert_int_equal(res->status, RES_EXPIRED);
    expect_seat(rsv_list_seats(&ttl_rsv, arena, sched, 0), 1, SEAT_AVAILABLE);
    db_check_schedule(&ttl_rsv.db, sched);
}

typedef struct {
    const rsv_instance_t *inst;
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
    pay_response_t *resp = NULL;

    op->rc = rsv_pay(op->inst, arena, op->reservation_id, op->user, op->key, &resp, &op->err);
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
    int64_t sched = rsv_new_schedule(&main_rsv, arena, 8, 1500), fan = rsv_new_user(), t0, ms;
    pay_op_t *ops = svc_arena_alloc(arena, N * sizeof(*ops));
    reservation_t *held = NULL;
    int ok = 0, aborted = 0, first = -1;
    svc_err_t err;

    rsv_top_up(fan, 20000);
    expect_ok("HoldSeats", rsv_hold(&main_rsv, arena, fan, sched, seats, 3, &held, &err), &err);
    for (int i = 0; i < N; i++) {
        ops[i].inst = &main_rsv;
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
    assert_int_equal(db_balance_of(fan), 20000 - 4500);
    assert_int_equal(db_spends_of(fan), 1);
    assert_int_equal(db_net_charge(held->id), 4500);
    expect_nothing_authorized(fan);
    db_check_ledger(fan);
    assert_int_equal(
        db_int(&main_rsv.db,
               "SELECT count(*) FROM seats WHERE schedule_id = %" PRId64 " AND status = 3", sched),
        3);
    db_check_schedule(&main_rsv.db, sched);
}

/*
 * Two attempts at one payment, the first slow: it loaded the payment as
 * PENDING, then stopped (failpoint pay_before_authorize on slow_rsv, which
 * shares main_rsv's database) while the second authorized, confirmed and
 * captured it. The first's Authorize then replays an authorization already
 * captured. It used to take that as a refusal and answer
 * FAILED_PRECONDITION for a reservation the user had paid (seen in CI's
 * double_pay); it must answer OK with the same payment, charged once.
 */
static void
test_pay_overtaken_by_another_attempt(void **state)
{
    svc_arena_t *arena = *state;
    int64_t sched = rsv_new_schedule(&main_rsv, arena, 4, 700), fan = rsv_new_user();
    int32_t seat = 2;
    reservation_t *held = NULL;
    pay_response_t *paid = NULL;
    pay_op_t slow = {0};
    pthread_t t;
    svc_err_t err;

    rsv_top_up(fan, 1000);
    expect_ok("HoldSeats", rsv_hold(&main_rsv, arena, fan, sched, &seat, 1, &held, &err), &err);
    slow = (pay_op_t){.inst = &slow_rsv, .reservation_id = held->id, .user = fan};
    snprintf(slow.key, sizeof(slow.key), "tab-1");
    assert_int_equal(pthread_create(&t, NULL, pay_thread, &slow), 0);
    assert_int_equal(testenv_proc_wait_stopped(&slow_rsv.proc, 10000), 0);
    expect_ok("PayReservation from the second tab",
              rsv_pay(&main_rsv, arena, held->id, fan, "tab-2", &paid, &err), &err);
    assert_int_equal(paid->reservation->status, RES_CONFIRMED);
    assert_int_equal(testenv_proc_signal(&slow_rsv.proc, SIGCONT), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    if (slow.rc != 0) {
        fail_msg("the slow attempt: %s (%s), expected OK", svc_status_name(slow.err.code),
                 slow.err.msg);
    }
    assert_int_equal(slow.status, RES_CONFIRMED);
    assert_int_equal(slow.payment_id, paid->payment_id);
    assert_int_equal(slow.balance, 300);
    assert_int_equal(db_payment_status(&main_rsv, held->id), PAY_CHARGED);
    assert_int_equal(db_balance_of(fan), 300);
    assert_int_equal(db_spends_of(fan), 1);
    assert_int_equal(db_net_charge(held->id), 700);
    expect_nothing_authorized(fan);
    db_check_ledger(fan);
    db_check_schedule(&main_rsv.db, sched);
}

/* ---------- holds a payment must not keep ---------- */

/*
 * Every PayReservation attempt used to extend the hold (by 60 s) and a
 * failed one did not undo it: a user with too little money kept seats
 * forever by retrying. Now the hold ends at its original time however
 * often payment is tried, and the seat goes to the next user.
 */
static void
test_pay_retries_do_not_extend_hold(void **state)
{
    static const int32_t one[1] = {1};
    svc_arena_t *arena = *state;
    int64_t sched = rsv_new_schedule(&ttl_rsv, arena, 2, 5000), poor = rsv_funded_user(100),
            next = rsv_funded_user(10000);
    reservation_t *held = NULL, *res = NULL;
    pay_response_t *paid = NULL;
    int attempts = 0;
    svc_err_t err;
    char key[32];

    expect_ok("HoldSeats", rsv_hold(&ttl_rsv, arena, poor, sched, one, 1, &held, &err), &err);
    while (svc_now_unix_ms() < held->expires_at_ms - 300) {
        snprintf(key, sizeof(key), "retry-%d", attempts++);
        expect_code("PayReservation with too little money",
                    rsv_pay(&ttl_rsv, arena, held->id, poor, key, &paid, &err), &err,
                    SVC_FAILED_PRECONDITION);
        expect_ok("GetReservation", rsv_get(&ttl_rsv, arena, held->id, &res, &err), &err);
        if (res->expires_at_ms != held->expires_at_ms) {
            fail_msg("payment attempt %d moved the hold's end from %" PRId64 " to %" PRId64,
                     attempts, held->expires_at_ms, res->expires_at_ms);
        }
        assert_int_equal(db_int(&ttl_rsv.db,
                                "SELECT count(*) FROM seats WHERE schedule_id = %" PRId64
                                " AND number = 1 AND hold_expires_at_ms > %" PRId64,
                                sched, held->expires_at_ms),
                         0);
        svc_sleep_ms(150);
    }
    assert_true(attempts >= 3);
    while (svc_now_unix_ms() < held->expires_at_ms + 300) {
        svc_sleep_ms(20);
    }
    expect_seat(rsv_list_seats(&ttl_rsv, arena, sched, false), 1, SEAT_AVAILABLE);
    expect_ok("HoldSeats of the seat the poor user kept trying to pay",
              rsv_hold(&ttl_rsv, arena, next, sched, one, 1, &res, &err), &err);
    assert_int_equal(res->user_id, next);
    assert_int_equal(rsv_status_of(&ttl_rsv, held->id), RES_EXPIRED);
    assert_int_equal(db_balance_of(poor), 100);
    assert_int_equal(db_spends_of(poor), 0);
    expect_nothing_authorized(poor);
    db_check_schedule(&ttl_rsv.db, sched);
}

/* ---------- holds that could never be paid ---------- */

/*
 * Seats at price 0 (guest lists, comps) could be held but never paid: a
 * Spend of 0 is refused. Now they are confirmed without balance-svc at all:
 * the payment succeeds while balance-svc is paused, and nothing is charged.
 */
static void
test_pay_free_seats(void **state)
{
    static const int32_t seats[2] = {1, 3};
    svc_arena_t *arena = *state;
    int64_t sched = rsv_new_schedule(&main_rsv, arena, 4, 0), guest = rsv_funded_user(700);
    reservation_t *held = NULL;
    pay_response_t *paid = NULL;
    Reservation__V1__ListSeatsResponse *listed;
    svc_err_t err;

    expect_ok("HoldSeats of free seats",
              rsv_hold(&main_rsv, arena, guest, sched, seats, 2, &held, &err), &err);
    assert_int_equal(held->amount, 0);
    assert_int_equal(testenv_proc_signal(&rsv_stack.balance, SIGSTOP), 0);
    expect_ok("PayReservation of free seats with balance-svc paused",
              rsv_pay(&main_rsv, arena, held->id, guest, "free", &paid, &err), &err);
    assert_int_equal(testenv_proc_signal(&rsv_stack.balance, SIGCONT), 0);
    assert_int_equal(paid->reservation->status, RES_CONFIRMED);
    assert_int_equal(paid->reservation->amount, 0);
    expect_seat_numbers(paid->reservation, seats, 2);
    assert_int_equal(rsv_status_of(&main_rsv, held->id), RES_CONFIRMED);
    listed = rsv_list_seats(&main_rsv, arena, sched, false);
    expect_seat(listed, 1, SEAT_SOLD);
    expect_seat(listed, 2, SEAT_AVAILABLE);
    expect_seat(listed, 3, SEAT_SOLD);
    assert_int_equal(db_payment_status(&main_rsv, held->id), PAY_CHARGED);
    assert_int_equal(db_balance_of(guest), 700);
    assert_int_equal(db_spends_of(guest), 0);
    expect_nothing_authorized(guest);
    db_check_schedule(&main_rsv.db, sched);
}

/*
 * Ten seats at 60 000 000 make 600 000 000, above balance-svc's 100 000 000
 * per Spend: such a hold could never be paid. Through Authorize (up to
 * 1 000 000 000) a user who has the money pays it, once.
 */
static void
test_pay_ten_seats_at_top_price(void **state)
{
    static const int32_t ten[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    const int64_t price = 60000000, total = 10 * price, funds = 700000000;
    svc_arena_t *arena = *state;
    int64_t sched = rsv_new_schedule(&main_rsv, arena, 12, price), rich = rsv_funded_user(funds);
    reservation_t *held = NULL;
    pay_response_t *paid = NULL;
    svc_err_t err;

    expect_ok("HoldSeats of ten seats at 60 000 000",
              rsv_hold(&main_rsv, arena, rich, sched, ten, 10, &held, &err), &err);
    assert_int_equal(held->amount, total);
    expect_ok("PayReservation of 600 000 000",
              rsv_pay(&main_rsv, arena, held->id, rich, "big", &paid, &err), &err);
    assert_int_equal(paid->reservation->status, RES_CONFIRMED);
    assert_int_equal(paid->balance, funds - total);
    assert_int_equal(db_balance_of(rich), funds - total);
    assert_int_equal(db_spends_of(rich), 1);
    assert_int_equal(db_net_charge(held->id), total);
    assert_int_equal(db_payment_status(&main_rsv, held->id), PAY_CHARGED);
    assert_int_equal(
        db_int(&main_rsv.db,
               "SELECT count(*) FROM seats WHERE schedule_id = %" PRId64 " AND status = 3", sched),
        10);
    expect_nothing_authorized(rich);
    db_check_ledger(rich);
    db_check_schedule(&main_rsv.db, sched);
}

/* ---------- cancelling a confirmed reservation ---------- */

/*
 * A confirmed reservation cancelled before its show: CANCELLED, its seats
 * free again, and a REFUND ledger row that names the capture (refund_of)
 * gives the whole amount back. Cancelling again or paying it again is
 * refused and changes nothing.
 */
static void
test_cancel_confirmed_refunds(void **state)
{
    static const int32_t seats[2] = {2, 5};
    svc_arena_t *arena = *state;
    int64_t sched = rsv_new_schedule(&main_rsv, arena, 6, 3000), fan = rsv_funded_user(10000),
            next = rsv_funded_user(10000);
    reservation_t *held = NULL, *res = NULL;
    pay_response_t *paid = NULL;
    Reservation__V1__ListSeatsResponse *listed;
    svc_err_t err;

    expect_ok("HoldSeats", rsv_hold(&main_rsv, arena, fan, sched, seats, 2, &held, &err), &err);
    expect_ok("PayReservation", rsv_pay(&main_rsv, arena, held->id, fan, "k", &paid, &err), &err);
    assert_int_equal(db_balance_of(fan), 4000);
    expect_code("CancelReservation of someone else's confirmed reservation",
                rsv_cancel(&main_rsv, arena, held->id, next, &res, &err), &err,
                SVC_PERMISSION_DENIED);

    expect_ok("CancelReservation of a confirmed reservation",
              rsv_cancel(&main_rsv, arena, held->id, fan, &res, &err), &err);
    assert_int_equal(res->status, RES_CANCELLED);
    assert_int_equal(rsv_status_of(&main_rsv, held->id), RES_CANCELLED);
    listed = rsv_list_seats(&main_rsv, arena, sched, false);
    expect_seat(listed, 2, SEAT_AVAILABLE);
    expect_seat(listed, 5, SEAT_AVAILABLE);
    assert_int_equal(rsv_listed_schedule(&main_rsv, arena, sched)->available_seats, 6);

    /* The refund may be finished by the sweeper when the cancel could not wait: poll. */
    for (int i = 0; i < 200 && db_payment_status(&main_rsv, held->id) != PAY_REFUNDED; i++) {
        svc_sleep_ms(50);
    }
    assert_int_equal(db_payment_status(&main_rsv, held->id), PAY_REFUNDED);
    assert_int_equal(db_balance_of(fan), 10000);
    assert_int_equal(db_ledger_rows(fan, LEDGER_REFUND), 1);
    assert_int_equal(db_int(&rsv_stack.balance_db,
                            "SELECT count(*) FROM ledger WHERE kind = 3 AND user_id = %" PRId64
                            " AND amount = 6000 AND refund_of = %" PRId64,
                            fan, paid->payment_id),
                     1);
    assert_int_equal(db_net_charge(held->id), 0);
    expect_nothing_authorized(fan);
    db_check_ledger(fan);

    expect_code("CancelReservation again", rsv_cancel(&main_rsv, arena, held->id, fan, &res, &err),
                &err, SVC_FAILED_PRECONDITION);
    expect_code("PayReservation of a cancelled (refunded) reservation",
                rsv_pay(&main_rsv, arena, held->id, fan, "k-again", &paid, &err), &err,
                SVC_FAILED_PRECONDITION);
    assert_int_equal(db_balance_of(fan), 10000);
    assert_int_equal(db_net_charge(held->id), 0);

    /* The seats are someone else's to have. */
    expect_ok("HoldSeats of refunded seats",
              rsv_hold(&main_rsv, arena, next, sched, seats, 2, &res, &err), &err);
    db_check_schedule(&main_rsv.db, sched);
}

/* Once its show has started, a confirmed reservation stays: no cancel, no refund. */
static void
test_cancel_after_show_started(void **state)
{
    static const int32_t one[1] = {4};
    svc_arena_t *arena = *state;
    int64_t starts = svc_now_unix_ms() + 3000, fan = rsv_funded_user(5000);
    int64_t sched = rsv_new_schedule_at(&main_rsv, arena, starts, 5, 1200);
    reservation_t *held = NULL, *res = NULL;
    pay_response_t *paid = NULL;
    svc_err_t err;

    expect_ok("HoldSeats", rsv_hold(&main_rsv, arena, fan, sched, one, 1, &held, &err), &err);
    expect_ok("PayReservation", rsv_pay(&main_rsv, arena, held->id, fan, "k", &paid, &err), &err);
    while (svc_now_unix_ms() < starts + 200) {
        svc_sleep_ms(50);
    }
    expect_code("CancelReservation after the show started",
                rsv_cancel(&main_rsv, arena, held->id, fan, &res, &err), &err,
                SVC_FAILED_PRECONDITION);
    assert_int_equal(rsv_status_of(&main_rsv, held->id), RES_CONFIRMED);
    expect_seat(rsv_list_seats(&main_rsv, arena, sched, false), 4, SEAT_SOLD);
    assert_int_equal(db_payment_status(&main_rsv, held->id), PAY_CHARGED);
    assert_int_equal(db_balance_of(fan), 3800);
    assert_int_equal(db_net_charge(held->id), 1200);
    assert_int_equal(db_ledger_rows(fan, LEDGER_REFUND), 0);
    db_check_schedule(&main_rsv.db, sched);
}

/*
 * A payment the version before two-phase funds began: its intent is
 * PENDING and balance-svc already spent the money under the same key
 * (reservation:<id>), so Authorize finds the key taken. Upgraded, the
 * service must take that spend as the payment: confirmed, charged once.
 */
static void
test_payment_spent_before_the_upgrade(void **state)
{
    static const int32_t one[1] = {1};
    svc_arena_t *arena = *state;
    int64_t sched = rsv_new_schedule(&main_rsv, arena, 3, 100), a = rsv_funded_user(1000);
    svc_call_opts_t opts = {.timeout_ms = 5000};
    reservation_t *a_res = NULL;
    pay_response_t *paid = NULL;
    svc_err_t err;
    char key[64], sql[256], reference[64];

    expect_ok("HoldSeats", rsv_hold(&main_rsv, arena, a, sched, one, 1, &a_res, &err), &err);
    snprintf(key, sizeof(key), "reservation:%" PRId64, a_res->id);
    snprintf(reference, sizeof(reference), "reservation %" PRId64, a_res->id);
    snprintf(sql, sizeof(sql),
             "INSERT INTO payments (reservation_id, user_id, amount, idempotency_key)"
             " VALUES (%" PRId64 ", %" PRId64 ", 100, '%s')",
             a_res->id, a, key);
    assert_int_equal(testenv_pg_exec(&main_rsv.db, sql), 0);
    expect_ok(
        "Spend as the old version did",
        svc_balance_spend(rsv_stack.balance_client, a, 100, key, reference, &opts, NULL, &err),
        &err);
    expect_ok("PayReservation after the upgrade",
              rsv_pay(&main_rsv, arena, a_res->id, a, "k", &paid, &err), &err);
    assert_int_equal(paid->reservation->status, RES_CONFIRMED);
    assert_int_equal(db_net_charge(a_res->id), 100);
    assert_int_equal(db_balance_of(a), 900);
    expect_nothing_authorized(a);
    db_check_ledger(a);
    db_check_schedule(&main_rsv.db, sched);
}

static const char *const ttl_env[] = {"HOLD_TTL_MS=2000", NULL};
/* Its sweeper stays out of the way: it would stop at the failpoint too. */
static const char *const slow_env[] = {"SVC_FAILPOINT=pay_before_authorize", "SWEEP_MS=600000",
                                       NULL};
static const rsv_instance_spec_t instances[] = {
    {&main_rsv, "reservation", NULL},
    {&ttl_rsv, "reservation_ttl", ttl_env},
    {&slow_rsv, "reservation", slow_env},
};

static int
setup(void **state)
{
    (void)state;
    return rsv_fixture_start_with(instances, 3);
}

static int
teardown(void **state)
{
    (void)state;
    return rsv_fixture_stop_with(instances, 3);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        RSV_ARENA_TEST(test_pay_reservation),
        RSV_ARENA_TEST(test_pay_refused),
        RSV_ARENA_TEST(test_pay_expired_hold),
        RSV_ARENA_TEST(test_pay_storm),
        RSV_ARENA_TEST(test_pay_overtaken_by_another_attempt),
        RSV_ARENA_TEST(test_pay_retries_do_not_extend_hold),
        RSV_ARENA_TEST(test_pay_free_seats),
        RSV_ARENA_TEST(test_pay_ten_seats_at_top_price),
        RSV_ARENA_TEST(test_cancel_confirmed_refunds),
        RSV_ARENA_TEST(test_cancel_after_show_started),
        RSV_ARENA_TEST(test_payment_spent_before_the_upgrade),
    };

    if (rsv_fixture_main_args(argc, argv) != 0) {
        return 2;
    }
    return testenv_group_result(
        cmocka_run_group_tests(tests, setup, testenv_group_teardown(teardown)));
}
