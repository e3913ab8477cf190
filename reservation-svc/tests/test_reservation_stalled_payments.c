/*
 * test_reservation_stalled_payments.c: payments whose balance-svc call
 * stalls (balance-svc paused with SIGSTOP) while the user cancels or the
 * hold runs out, and what is left once balance-svc is back and everything
 * has settled (README.md, "One outcome only"): one outcome per reservation, charged net 0
 * unless confirmed, no authorization left live, seats with their one live
 * holder. argv: reservation-svc, balance-svc, lock-svc.
 *
 * Two reservation-svc instances, each on its own database: main_rsv
 * (HOLD_TTL_MS 300 000) and ttl_rsv (HOLD_TTL_MS 2 000, PAY_GRACE_MS 1 000:
 * the old service kept a paid hold alive only this long past the payment,
 * so the hold expired while its payment was stuck).
 */
#define _GNU_SOURCE
#include <inttypes.h>
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

#define STALLED_PAY_MS 1500 /* the caller's deadline for a payment that cannot finish */
#define SETTLE_MS 30000     /* longest the services may take to settle after balance-svc is back */

static rsv_instance_t main_rsv, ttl_rsv;

/* Pauses balance-svc: calls to it hang, nothing is refused. */
static void
pause_balance_svc(void)
{
    assert_int_equal(testenv_proc_signal(&rsv_stack.balance, SIGSTOP), 0);
}

static void
resume_balance_svc(void)
{
    assert_int_equal(testenv_proc_signal(&rsv_stack.balance, SIGCONT), 0);
}

/* A payment that cannot reach balance-svc answers UNAVAILABLE or DEADLINE_EXCEEDED. */
static void
expect_stalled_payment(const rsv_instance_t *inst, svc_arena_t *arena, int64_t reservation_id,
                       int64_t user)
{
    pay_response_t *paid = NULL;
    svc_err_t err;
    int rc =
        rsv_pay_within(inst, arena, reservation_id, user, "stalled", STALLED_PAY_MS, &paid, &err);

    if (rc == 0) {
        fail_msg("PayReservation with balance-svc paused: OK");
    }
    if (err.code != SVC_UNAVAILABLE && err.code != SVC_DEADLINE_EXCEEDED) {
        fail_msg("PayReservation with balance-svc paused: %s (%s), expected UNAVAILABLE or "
                 "DEADLINE_EXCEEDED",
                 svc_status_name(err.code), err.msg);
    }
}

/*
 * Waits (bounded) until the payment of reservation_id on inst is no longer
 * under way (payments.status pending, capturing, voiding or refunding) and
 * user has no live authorization. Returns the ms it took; the caller
 * asserts what the outcome must be.
 */
static int64_t
settle(const rsv_instance_t *inst, int64_t user, int64_t reservation_id)
{
    int64_t t0 = svc_now_mono_ms();

    while (svc_now_mono_ms() - t0 < SETTLE_MS) {
        int64_t balance = -1, available = -2;
        svc_err_t err;
        if (rsv_balance_get(user, &balance, &available, &err) == 0 && balance == available &&
            db_int(&inst->db,
                   "SELECT count(*) FROM payments WHERE reservation_id = %" PRId64
                   " AND status IN (1, 4, 5, 6)",
                   reservation_id) == 0) {
            break;
        }
        svc_sleep_ms(100);
    }
    return svc_now_mono_ms() - t0;
}

/* Fails unless seat number of schedule is held, in the database, by reservation id of user. */
static void
db_expect_seat_held_by(const rsv_instance_t *inst, int64_t schedule_id, int32_t number,
                       int64_t reservation_id, int64_t user)
{
    int64_t holder =
        db_int(&inst->db,
               "SELECT count(*) FROM seats s JOIN reservation_seats rs ON rs.schedule_id ="
               " s.schedule_id AND rs.number = s.number AND rs.live JOIN reservations r ON r.id ="
               " rs.reservation_id WHERE s.schedule_id = %" PRId64 " AND s.number = %d AND"
               " s.status = 2 AND s.hold_reservation_id = %" PRId64 " AND s.hold_user_id = %" PRId64
               " AND r.id = %" PRId64 " AND r.status = 1",
               schedule_id, number, reservation_id, user, reservation_id);

    if (holder != 1) {
        fail_msg("seat %d of schedule %" PRId64 " is not held by reservation %" PRId64
                 " of user %" PRId64 " in the database",
                 number, schedule_id, reservation_id, user);
    }
}

/*
 * The race the issue reproduced. A holds seat 1 (price 100, balance 1000);
 * balance-svc is paused; A pays (the call fails: UNAVAILABLE or
 * DEADLINE_EXCEEDED); A cancels (OK); B holds seat 1 (OK); balance-svc
 * resumes. The old service then charged A for a reservation A had
 * cancelled and whose seat was B's. Once settled: A's reservation is
 * CANCELLED, A paid net 0 and has no authorization left, seat 1 is B's.
 */
static void
test_cancel_during_stalled_payment(void **state)
{
    static const int32_t one[1] = {1}, two[1] = {2};
    svc_arena_t *arena = *state;
    int64_t sched = rsv_new_schedule(&main_rsv, arena, 3, 100), a = rsv_funded_user(1000),
            b = rsv_funded_user(1000), ms;
    reservation_t *a_res = NULL, *b_res = NULL, *res = NULL;
    svc_err_t err;

    /* B has held a seat before on this instance, so its account is already known. */
    expect_ok("HoldSeats by B", rsv_hold(&main_rsv, arena, b, sched, two, 1, &res, &err), &err);
    expect_ok("HoldSeats by A", rsv_hold(&main_rsv, arena, a, sched, one, 1, &a_res, &err), &err);

    pause_balance_svc();
    expect_stalled_payment(&main_rsv, arena, a_res->id, a);
    expect_ok("CancelReservation by A during its stalled payment",
              rsv_cancel(&main_rsv, arena, a_res->id, a, &res, &err), &err);
    assert_int_equal(res->status, RES_CANCELLED);
    expect_ok("HoldSeats of seat 1 by B after A cancelled",
              rsv_hold(&main_rsv, arena, b, sched, one, 1, &b_res, &err), &err);
    resume_balance_svc();

    ms = settle(&main_rsv, a, a_res->id);
    fprintf(stderr, "settled %" PRId64 " ms after balance-svc resumed\n", ms);
    /* The outcome in one line first, so a failure shows all of it. */
    int a_status = rsv_status_of(&main_rsv, a_res->id);
    int64_t a_balance = db_balance_of(a), a_net = db_net_charge(a_res->id);
    if (a_status != RES_CANCELLED || a_balance != 1000 || a_net != 0) {
        fail_msg("after the stall: A's reservation has status %d (want %d, cancelled), A's balance"
                 " is %" PRId64 " (want 1000), the ledger charged A %" PRId64
                 " for it (want 0); seat 1 is held by user %" PRId64 " (B is %" PRId64 ")",
                 a_status, RES_CANCELLED, a_balance, a_net,
                 db_int(&main_rsv.db,
                        "SELECT coalesce(hold_user_id, 0) FROM seats WHERE schedule_id = %" PRId64
                        " AND number = 1",
                        sched),
                 b);
    }
    assert_int_equal(
        db_int(&main_rsv.db, "SELECT status FROM reservations WHERE id = %" PRId64, a_res->id), 3);
    assert_int_equal(db_balance_of(a), 1000);
    assert_int_equal(db_net_charge(a_res->id), 0);
    expect_nothing_authorized(a);
    db_check_ledger(a);
    assert_int_equal(rsv_status_of(&main_rsv, b_res->id), RES_HELD);
    expect_seat(rsv_list_seats(&main_rsv, arena, sched, false), 1, SEAT_HELD);
    db_expect_seat_held_by(&main_rsv, sched, 1, b_res->id, b);
    assert_int_equal(db_balance_of(b), 1000);
    db_check_schedule(&main_rsv.db, sched);
}

/*
 * A hold that expired while its payment was stuck: the seat read as free,
 * but the old HoldSeats failed with ALREADY_EXISTS (the stuck payment kept
 * the expired hold's row). Now the next user gets the seat, and the stuck
 * payment ends unpaid once balance-svc is back.
 */
static void
test_hold_expired_during_stalled_payment(void **state)
{
    static const int32_t one[1] = {1}, two[1] = {2};
    svc_arena_t *arena = *state;
    int64_t sched = rsv_new_schedule(&ttl_rsv, arena, 2, 100), a = rsv_funded_user(1000),
            b = rsv_funded_user(1000);
    reservation_t *a_res = NULL, *b_res = NULL, *res = NULL;
    svc_err_t err;

    expect_ok("HoldSeats by B", rsv_hold(&ttl_rsv, arena, b, sched, two, 1, &res, &err), &err);
    expect_ok("HoldSeats by A", rsv_hold(&ttl_rsv, arena, a, sched, one, 1, &a_res, &err), &err);

    pause_balance_svc();
    expect_stalled_payment(&ttl_rsv, arena, a_res->id, a);
    while (svc_now_unix_ms() < a_res->expires_at_ms + 300) {
        svc_sleep_ms(20);
    }
    expect_seat(rsv_list_seats(&ttl_rsv, arena, sched, false), 1, SEAT_AVAILABLE);
    expect_ok("HoldSeats of a seat whose hold expired while its payment was stuck",
              rsv_hold(&ttl_rsv, arena, b, sched, one, 1, &b_res, &err), &err);
    resume_balance_svc();

    fprintf(stderr, "settled %" PRId64 " ms after balance-svc resumed\n",
            settle(&ttl_rsv, a, a_res->id));
    assert_int_equal(rsv_status_of(&ttl_rsv, a_res->id), RES_EXPIRED);
    assert_int_equal(db_balance_of(a), 1000);
    assert_int_equal(db_net_charge(a_res->id), 0);
    expect_nothing_authorized(a);
    db_check_ledger(a);
    db_expect_seat_held_by(&ttl_rsv, sched, 1, b_res->id, b);
    db_check_schedule(&ttl_rsv.db, sched);
}

/*
 * A dead authorization under the payment's key (balance.v1 is public: the
 * user authorized reservation:<id> and voided it) must not pass for a live
 * one. The version before the review's fix confirmed the reservation, could
 * then never capture, answered UNAVAILABLE and left it CONFIRMED, unpaid
 * and stuck in CAPTURING. Now the payment is refused, the hold stays.
 */
static void
test_dead_authorization_is_no_payment(void **state)
{
    static const int32_t one[1] = {1};
    svc_arena_t *arena = *state;
    int64_t sched = rsv_new_schedule(&main_rsv, arena, 3, 100), a = rsv_funded_user(1000);
    svc_call_opts_t opts = {.timeout_ms = 5000};
    reservation_t *a_res = NULL;
    pay_response_t *paid = NULL;
    svc_balance_result_t auth;
    svc_err_t err;
    char key[64];

    expect_ok("HoldSeats", rsv_hold(&main_rsv, arena, a, sched, one, 1, &a_res, &err), &err);
    snprintf(key, sizeof(key), "reservation:%" PRId64, a_res->id);
    expect_ok("Authorize under the payment's key",
              svc_balance_authorize(rsv_stack.balance_client, a, 100, key, "", 600000, &opts, &auth,
                                    &err),
              &err);
    expect_ok("Void it",
              svc_balance_void(rsv_stack.balance_client, auth.authorization_id, &opts, NULL, &err),
              &err);
    expect_code("PayReservation over a voided authorization",
                rsv_pay(&main_rsv, arena, a_res->id, a, "k", &paid, &err), &err,
                SVC_FAILED_PRECONDITION);
    settle(&main_rsv, a, a_res->id);
    assert_int_equal(rsv_status_of(&main_rsv, a_res->id), RES_HELD);
    db_expect_seat_held_by(&main_rsv, sched, 1, a_res->id, a);
    assert_int_equal(db_net_charge(a_res->id), 0);
    assert_int_equal(db_int(&main_rsv.db,
                            "SELECT count(*) FROM payments WHERE reservation_id = %" PRId64
                            " AND status IN (1, 4, 5, 6)",
                            a_res->id),
                     0);
    expect_nothing_authorized(a);
    db_check_schedule(&main_rsv.db, sched);
}

/*
 * A payment that cannot settle for now (its refund refused: the user took
 * the refund's key refund:reservation:<id> for a top-up) must not hold up
 * the sweeper's recovery of every other payment. The version before the
 * review's fix stopped each pass at it, so B's refund below never came.
 */
static void
test_stuck_payment_does_not_block_recovery(void **state)
{
    static const int32_t two[1] = {2}, three[1] = {3};
    svc_arena_t *arena = *state;
    int64_t sched = rsv_new_schedule(&main_rsv, arena, 3, 100), a = rsv_funded_user(1000),
            b = rsv_funded_user(1000);
    svc_call_opts_t opts = {.timeout_ms = 5000};
    reservation_t *a_res = NULL, *b_res = NULL, *res = NULL;
    pay_response_t *paid = NULL;
    svc_err_t err;
    char key[64];

    /* A's payment: paid, its refund key taken, cancelled: the refund is refused for good. */
    expect_ok("HoldSeats by A", rsv_hold(&main_rsv, arena, a, sched, two, 1, &a_res, &err), &err);
    expect_ok("PayReservation by A", rsv_pay(&main_rsv, arena, a_res->id, a, "k", &paid, &err),
              &err);
    snprintf(key, sizeof(key), "refund:reservation:%" PRId64, a_res->id);
    expect_ok("TopUp under A's refund key",
              svc_balance_top_up(rsv_stack.balance_client, a, 1, key, &opts, NULL, &err), &err);
    expect_ok("CancelReservation by A", rsv_cancel(&main_rsv, arena, a_res->id, a, &res, &err),
              &err);
    assert_int_equal(db_int(&main_rsv.db,
                            "SELECT status FROM payments WHERE reservation_id = %" PRId64,
                            a_res->id),
                     6); /* REFUNDING, and stays so */

    /* B's payment: paid, cancelled while balance-svc is paused: the sweeper must refund it. */
    expect_ok("HoldSeats by B", rsv_hold(&main_rsv, arena, b, sched, three, 1, &b_res, &err), &err);
    expect_ok("PayReservation by B", rsv_pay(&main_rsv, arena, b_res->id, b, "k", &paid, &err),
              &err);
    pause_balance_svc();
    expect_ok("CancelReservation by B (balance-svc paused)",
              rsv_cancel(&main_rsv, arena, b_res->id, b, &res, &err), &err);
    resume_balance_svc();
    settle(&main_rsv, b, b_res->id);
    assert_int_equal(db_int(&main_rsv.db,
                            "SELECT status FROM payments WHERE reservation_id = %" PRId64,
                            b_res->id),
                     7); /* REFUNDED */
    assert_int_equal(db_net_charge(b_res->id), 0);
    assert_int_equal(db_balance_of(b), 1000);
    db_check_ledger(b);
}

static const char *const ttl_env[] = {"HOLD_TTL_MS=2000", "PAY_GRACE_MS=1000", NULL};
static const rsv_instance_spec_t instances[] = {
    {&main_rsv, "reservation", NULL},
    {&ttl_rsv, "reservation_ttl", ttl_env},
};

static int
setup(void **state)
{
    (void)state;
    return rsv_fixture_start_with(instances, 2);
}

static int
teardown(void **state)
{
    (void)state;
    return rsv_fixture_stop_with(instances, 2);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        RSV_ARENA_TEST(test_cancel_during_stalled_payment),
        RSV_ARENA_TEST(test_hold_expired_during_stalled_payment),
        RSV_ARENA_TEST(test_dead_authorization_is_no_payment),
        RSV_ARENA_TEST(test_stuck_payment_does_not_block_recovery),
    };

    if (rsv_fixture_main_args(argc, argv) != 0) {
        return 2;
    }
    return testenv_group_result(
        cmocka_run_group_tests(tests, setup, testenv_group_teardown(teardown)));
}
