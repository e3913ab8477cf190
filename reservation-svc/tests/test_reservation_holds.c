/*
 * test_reservation_holds.c: HoldSeats, hold expiry and the cancellation of
 * a held reservation, over real gRPC: every invalid input, a user without a
 * balance account, 1000 fans storming one seat (the losers refused without
 * taking the seat's lock: Redis counts the commands), overlapping multi-seat
 * holds, refusals of every kind at once (each with its own answer), holds that expire (read as free
 * before any sweep), and holds that replace expired ones while the sweeper expires them (no
 * deadlock). After each storm the database is read: no seat in two live holds, no taken seat
 * without a live reservation.
 * argv: reservation-svc, balance-svc, lock-svc.
 *
 * Three reservation-svc instances, each on its own database: main_rsv
 * (HOLD_TTL_MS 300 000) for everything whose assertions must not race a hold
 * expiring mid-storm, ttl_rsv (2 000) for expiry, sweep_rsv (100, SWEEP_MS
 * 10) for holds racing the sweeper.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "rsv_fixture.h"
#include "svc/timer.h"

#define MAIN_TTL_MS 300000
#define SHORT_TTL_MS 2000
#define SWEEP_TTL_MS 100

static rsv_instance_t main_rsv, ttl_rsv, sweep_rsv;

/* ---------- HoldSeats ---------- */

static void
test_hold_invalid_inputs(void **state)
{
    static const int32_t eleven[11] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
    static const int32_t dup[2] = {3, 3}, zero[1] = {0}, past_end[1] = {21}, negative[1] = {-1},
                         one_bad[2] = {1, 21}, one[1] = {1};
    static const int32_t ten[10] = {20, 1, 7, 3, 15, 9, 11, 2, 18, 5};
    static const int32_t ten_sorted[10] = {1, 2, 3, 5, 7, 9, 11, 15, 18, 20};
    svc_arena_t *arena = *state;
    int64_t sched = rsv_new_schedule(&main_rsv, arena, 20, 1000), user = rsv_funded_user(1), now;
    reservation_t *res = NULL, *got = NULL;
    svc_err_t err;
    int rc;

    expect_code("HoldSeats with user_id 0",
                rsv_hold(&main_rsv, arena, 0, sched, one, 1, &res, &err), &err,
                SVC_INVALID_ARGUMENT);
    expect_code("HoldSeats with user_id -5",
                rsv_hold(&main_rsv, arena, -5, sched, one, 1, &res, &err), &err,
                SVC_INVALID_ARGUMENT);
    expect_code("HoldSeats with no seats",
                rsv_hold(&main_rsv, arena, user, sched, NULL, 0, &res, &err), &err,
                SVC_INVALID_ARGUMENT);
    expect_code("HoldSeats with 11 seats",
                rsv_hold(&main_rsv, arena, user, sched, eleven, 11, &res, &err), &err,
                SVC_INVALID_ARGUMENT);
    expect_code("HoldSeats with a duplicate seat",
                rsv_hold(&main_rsv, arena, user, sched, dup, 2, &res, &err), &err,
                SVC_INVALID_ARGUMENT);
    expect_code("HoldSeats of seat 0", rsv_hold(&main_rsv, arena, user, sched, zero, 1, &res, &err),
                &err, SVC_INVALID_ARGUMENT);
    expect_code("HoldSeats of seat 21 of 20",
                rsv_hold(&main_rsv, arena, user, sched, past_end, 1, &res, &err), &err,
                SVC_INVALID_ARGUMENT);
    expect_code("HoldSeats of seat -1",
                rsv_hold(&main_rsv, arena, user, sched, negative, 1, &res, &err), &err,
                SVC_INVALID_ARGUMENT);
    expect_code("HoldSeats of seats 1 and 21 of 20",
                rsv_hold(&main_rsv, arena, user, sched, one_bad, 2, &res, &err), &err,
                SVC_INVALID_ARGUMENT);
    expect_code("HoldSeats of an unknown schedule",
                rsv_hold(&main_rsv, arena, user, INT64_MAX, one, 1, &res, &err), &err,
                SVC_NOT_FOUND);
    rc = rsv_hold(&main_rsv, arena, user, 0, one, 1, &res, &err);
    if (rc == 0 || (err.code != SVC_NOT_FOUND && err.code != SVC_INVALID_ARGUMENT)) {
        fail_msg("HoldSeats of schedule 0: expected NOT_FOUND or INVALID_ARGUMENT, got %s (%s)",
                 rc == 0 ? "OK" : svc_status_name(err.code), rc == 0 ? "" : err.msg);
    }

    /* Nothing was held by the refused calls. */
    assert_int_equal(rsv_list_seats(&main_rsv, arena, sched, 1)->n_seats, 20);
    assert_int_equal(db_int(&main_rsv.db,
                            "SELECT count(*) FROM reservations WHERE schedule_id = %" PRId64,
                            sched),
                     0);

    /* Ten seats in any order is the limit, and fine. */
    now = svc_now_unix_ms();
    expect_ok("HoldSeats of 10 seats", rsv_hold(&main_rsv, arena, user, sched, ten, 10, &res, &err),
              &err);
    assert_true(res->id > 0);
    assert_int_equal(res->user_id, user);
    assert_int_equal(res->schedule_id, sched);
    assert_int_equal(res->status, RES_HELD);
    assert_int_equal(res->amount, 10 * 1000);
    expect_seat_numbers(res, ten_sorted, 10);
    assert_true(res->created_at_ms >= now - 5000 && res->created_at_ms <= now + 5000);
    if (res->expires_at_ms - res->created_at_ms < MAIN_TTL_MS - 1000 ||
        res->expires_at_ms - res->created_at_ms > MAIN_TTL_MS + 1000) {
        fail_msg("hold lasts %" PRId64 " ms, HOLD_TTL_MS is %d",
                 res->expires_at_ms - res->created_at_ms, MAIN_TTL_MS);
    }

    expect_ok("GetReservation", rsv_get(&main_rsv, arena, res->id, &got, &err), &err);
    assert_int_equal(got->id, res->id);
    assert_int_equal(got->user_id, user);
    assert_int_equal(got->schedule_id, sched);
    assert_int_equal(got->status, RES_HELD);
    assert_int_equal(got->amount, 10000);
    assert_int_equal(got->expires_at_ms, res->expires_at_ms);
    assert_int_equal(got->created_at_ms, res->created_at_ms);
    expect_seat_numbers(got, ten_sorted, 10);

    Reservation__V1__ListSeatsResponse *seats = rsv_list_seats(&main_rsv, arena, sched, 0);
    for (int32_t n = 1; n <= 20; n++) {
        int held = 0;
        for (int i = 0; i < 10; i++) {
            held |= ten[i] == n;
        }
        expect_seat(seats, n, held ? SEAT_HELD : SEAT_AVAILABLE);
    }
    assert_int_equal(rsv_list_seats(&main_rsv, arena, sched, 1)->n_seats, 10);
    assert_int_equal(rsv_listed_schedule(&main_rsv, arena, sched)->available_seats, 10);
    db_check_schedule(&main_rsv.db, sched);
}

static void
test_one_seat_storm(void **state)
{
    enum { N = 1000 };
    const int32_t seat = 7;
    svc_arena_t *arena = *state;
    int64_t sched = rsv_new_schedule(&main_rsv, arena, 10, 5000), t0, ms;
    hold_op_t *ops = svc_arena_alloc(arena, N * sizeof(*ops));
    int64_t *users = svc_arena_alloc(arena, N * sizeof(*users));
    int ok = 0, taken = 0, aborted = 0, winner = -1;
    int64_t redis_before, redis_cost;
    reservation_t *res = NULL;
    svc_err_t err;

    rsv_funded_users(users, N, 1);
    for (int i = 0; i < N; i++) {
        ops[i].inst = &main_rsv;
        ops[i].user = users[i];
        ops[i].schedule_id = sched;
        ops[i].seats[0] = seat;
        ops[i].n = 1;
    }
    redis_before = testenv_redis_commands(&rsv_stack.redis);
    t0 = svc_now_mono_ms();
    run_holds(ops, N);
    ms = svc_now_mono_ms() - t0;
    redis_cost = testenv_redis_commands(&rsv_stack.redis) - redis_before;
    for (int i = 0; i < N; i++) {
        if (ops[i].rc == 0) {
            ok++;
            winner = i;
        } else {
            expect_refusal(&ops[i], i);
            if (ops[i].err.code == SVC_FAILED_PRECONDITION) {
                taken++;
            } else {
                aborted++;
            }
        }
    }
    fprintf(stderr,
            "%d concurrent holds of one seat: %" PRId64 " ms; %d OK, %d FAILED_PRECONDITION, "
            "%d ABORTED; %" PRId64 " Redis commands\n",
            N, ms, ok, taken, aborted, redis_cost);
    assert_int_equal(ok, 1);
    /*
     * Losers learn from the seat gate, not from a lock hand-off each: the seat's lock saw a
     * handful of holders, not a thousand (each costs lock-svc an acquire and a release script).
     * The bound leaves room for lock-svc's own traffic (its channel's pings) and for the few
     * calls that each found the seat free of a leader and had to read it from the database.
     */
    if (redis_cost > N / 10) {
        fail_msg("the storm cost Redis %" PRId64 " commands: losers went through the seat's lock",
                 redis_cost);
    }
    assert_int_equal(ops[winner].status, RES_HELD);
    assert_int_equal(ops[winner].n_got, 1);
    assert_int_equal(ops[winner].got[0], seat);

    /* The database agrees: one live hold of that seat, the winner's, and nothing else. */
    assert_int_equal(db_int(&main_rsv.db,
                            "SELECT count(*) FROM reservation_seats rs JOIN reservations r ON r.id "
                            "= rs.reservation_id WHERE rs.schedule_id = %" PRId64
                            " AND rs.number = %d AND r.status = 1",
                            sched, seat),
                     1);
    assert_int_equal(
        db_int(&main_rsv.db,
               "SELECT count(*) FROM seats WHERE schedule_id = %" PRId64 " AND status <> 1", sched),
        1);
    assert_int_equal(db_int(&main_rsv.db,
                            "SELECT count(*) FROM reservations WHERE schedule_id = %" PRId64
                            " AND id = %" PRId64 " AND user_id = %" PRId64 " AND status = 1",
                            sched, ops[winner].reservation_id, ops[winner].user),
                     1);
    assert_int_equal(db_int(&main_rsv.db,
                            "SELECT count(*) FROM reservations WHERE schedule_id = %" PRId64,
                            sched),
                     1);
    db_check_schedule(&main_rsv.db, sched);

    Reservation__V1__ListSeatsResponse *seats = rsv_list_seats(&main_rsv, arena, sched, 0);
    for (int32_t n = 1; n <= 10; n++) {
        expect_seat(seats, n, n == seat ? SEAT_HELD : SEAT_AVAILABLE);
    }
    expect_ok("GetReservation of the winner",
              rsv_get(&main_rsv, arena, ops[winner].reservation_id, &res, &err), &err);
    assert_int_equal(res->user_id, ops[winner].user);
    assert_int_equal(res->status, RES_HELD);
}

static void
test_overlapping_holds_storm(void **state)
{
    enum { N = 300, SEATS = 20 };
    svc_arena_t *arena = *state;
    int64_t sched = rsv_new_schedule(&main_rsv, arena, SEATS, 700), t0, ms, held_seats = 0;
    hold_op_t *ops = svc_arena_alloc(arena, N * sizeof(*ops));
    int64_t *users = svc_arena_alloc(arena, N * sizeof(*users));
    int owner[SEATS + 1], ok = 0, taken = 0, aborted = 0;
    uint64_t rng = 0x5eed2026u;

    rsv_funded_users(users, N, 1);
    for (int i = 0; i < N; i++) {
        ops[i].inst = &main_rsv;
        ops[i].user = users[i];
        ops[i].schedule_id = sched;
        ops[i].n = 1 + next_random(&rng) % 4;
        for (size_t k = 0; k < ops[i].n; k++) {
            int32_t s;
            int again;
            do { /* distinct seats, in random order */
                s = (int32_t)(1 + next_random(&rng) % SEATS);
                again = 0;
                for (size_t j = 0; j < k; j++) {
                    again |= ops[i].seats[j] == s;
                }
            } while (again);
            ops[i].seats[k] = s;
        }
    }
    t0 = svc_now_mono_ms();
    run_holds(ops, N);
    ms = svc_now_mono_ms() - t0;

    for (int s = 0; s <= SEATS; s++) {
        owner[s] = -1;
    }
    for (int i = 0; i < N; i++) {
        if (ops[i].rc != 0) {
            expect_refusal(&ops[i], i);
            taken += ops[i].err.code == SVC_FAILED_PRECONDITION;
            aborted += ops[i].err.code == SVC_ABORTED;
            continue;
        }
        ok++;
        assert_int_equal(ops[i].status, RES_HELD);
        if (ops[i].n_got != ops[i].n) {
            fail_msg("hold %d asked for %zu seats and got %zu", i, ops[i].n, ops[i].n_got);
        }
        for (size_t k = 0; k < ops[i].n_got; k++) {
            int32_t s = ops[i].got[k];
            int asked = 0;
            for (size_t j = 0; j < ops[i].n; j++) {
                asked |= ops[i].seats[j] == s;
            }
            assert_true(asked);
            assert_true(k == 0 || ops[i].got[k - 1] < s);
            if (owner[s] != -1) {
                fail_msg("seat %d granted to hold %d and hold %d", s, owner[s], i);
            }
            owner[s] = i;
            held_seats++;
        }
    }
    fprintf(stderr,
            "%d concurrent holds of 1-4 of %d seats: %" PRId64 " ms; %d OK (%" PRId64
            " seats), %d FAILED_PRECONDITION, %d ABORTED\n",
            N, SEATS, ms, ok, held_seats, taken, aborted);
    assert_true(ok >= 1);

    /* The database holds exactly the granted holds, all or nothing. */
    assert_int_equal(db_int(&main_rsv.db,
                            "SELECT count(*) FROM (SELECT rs.number FROM reservation_seats rs JOIN "
                            "reservations r ON r.id = rs.reservation_id WHERE rs.schedule_id = "
                            "%" PRId64 " AND r.status IN (1, 2) GROUP BY rs.number HAVING "
                            "count(*) > 1) d",
                            sched),
                     0);
    assert_int_equal(db_int(&main_rsv.db,
                            "SELECT count(*) FROM reservations WHERE schedule_id = %" PRId64,
                            sched),
                     ok);
    assert_int_equal(
        db_int(&main_rsv.db,
               "SELECT count(*) FROM seats WHERE schedule_id = %" PRId64 " AND status <> 1", sched),
        held_seats);
    for (int i = 0; i < N; i++) {
        if (ops[i].rc == 0) {
            assert_int_equal(db_int(&main_rsv.db,
                                    "SELECT count(*) FROM reservation_seats rs JOIN reservations r "
                                    "ON r.id = rs.reservation_id WHERE r.id = %" PRId64
                                    " AND r.user_id = %" PRId64 " AND r.status = 1 AND "
                                    "rs.schedule_id = %" PRId64,
                                    ops[i].reservation_id, ops[i].user, sched),
                             (int64_t)ops[i].n);
        }
    }
    db_check_schedule(&main_rsv.db, sched);

    Reservation__V1__ListSeatsResponse *seats = rsv_list_seats(&main_rsv, arena, sched, 0);
    for (int32_t s = 1; s <= SEATS; s++) {
        expect_seat(seats, s, owner[s] != -1 ? SEAT_HELD : SEAT_AVAILABLE);
    }
    assert_int_equal(rsv_listed_schedule(&main_rsv, arena, sched)->available_seats,
                     SEATS - held_seats);
}

/*
 * Leaders arriving together share one fail-fast statement; each must still
 * get its own answer. A hall whose seats are all held, then at once: holds
 * of its taken seats (FAILED_PRECONDITION naming the seat), of seats it does
 * not have (INVALID_ARGUMENT naming the seat) and of a schedule that does not
 * exist (NOT_FOUND), interleaved, so one statement carries all three kinds.
 */
static void
test_mixed_refusals_storm(void **state)
{
    enum { N = 600, SEATS = 100 };
    svc_arena_t *arena = *state;
    int64_t sched = rsv_new_schedule(&main_rsv, arena, SEATS, 100), owner = rsv_funded_user(100);
    int64_t unknown = sched + 1000000;
    hold_op_t *ops = svc_arena_alloc(arena, N * sizeof(*ops));
    int64_t *users = svc_arena_alloc(arena, N * sizeof(*users));
    int counts[3] = {0, 0, 0};

    for (int32_t first = 1; first <= SEATS; first += 10) {
        int32_t ten[10];
        reservation_t *res = NULL;
        svc_err_t err;
        for (int k = 0; k < 10; k++) {
            ten[k] = first + k;
        }
        expect_ok("HoldSeats of ten seats",
                  rsv_hold(&main_rsv, arena, owner, sched, ten, 10, &res, &err), &err);
    }
    rsv_funded_users(users, N, 1);
    for (int i = 0; i < N; i++) {
        ops[i].inst = &main_rsv;
        ops[i].user = users[i];
        ops[i].schedule_id = i % 3 == 0 ? unknown : sched;
        ops[i].seats[0] = i % 3 == 1 ? SEATS + 1 + (i % 50) : 1 + (i % SEATS);
        ops[i].n = 1;
    }
    run_holds(ops, N);
    for (int i = 0; i < N; i++) {
        static const svc_status_t want_code[3] = {SVC_NOT_FOUND, SVC_INVALID_ARGUMENT,
                                                  SVC_FAILED_PRECONDITION};
        char want[96];
        if (i % 3 == 0) {
            snprintf(want, sizeof(want), "schedule %" PRId64 " not found", unknown);
        } else if (i % 3 == 1) {
            snprintf(want, sizeof(want), "seat %d does not exist", (int)ops[i].seats[0]);
        } else {
            snprintf(want, sizeof(want), "seat %d of schedule %" PRId64 " is not available",
                     (int)ops[i].seats[0], sched);
        }
        if (ops[i].rc == 0 || ops[i].err.code != want_code[i % 3] ||
            strstr(ops[i].err.msg, want) == NULL) {
            fail_msg("hold %d (schedule %" PRId64 ", seat %d): %s %s, want %s \"%s\"", i,
                     ops[i].schedule_id, (int)ops[i].seats[0],
                     ops[i].rc == 0 ? "OK" : svc_status_name(ops[i].err.code),
                     ops[i].rc == 0 ? "" : ops[i].err.msg, svc_status_name(want_code[i % 3]), want);
        }
        counts[i % 3]++;
    }
    fprintf(stderr,
            "%d concurrent holds refused: %d NOT_FOUND, %d INVALID_ARGUMENT, %d "
            "FAILED_PRECONDITION, each naming its own schedule or seat\n",
            N, counts[0], counts[1], counts[2]);
    /* Nothing changed hands. */
    assert_int_equal(db_int(&main_rsv.db,
                            "SELECT count(*) FROM reservations WHERE schedule_id = %" PRId64,
                            sched),
                     SEATS / 10);
    db_check_schedule(&main_rsv.db, sched);
}

/*
 * A hold by a user balance-svc has no account for could never be paid: it
 * only kept the seat from everyone else. HoldSeats refuses it (NOT_FOUND,
 * saying what to do) before taking any seat; after a top-up it works.
 */
static void
test_hold_needs_account(void **state)
{
    static const int32_t seats[2] = {2, 4};
    svc_arena_t *arena = *state;
    int64_t sched = rsv_new_schedule(&main_rsv, arena, 5, 1000), stranger = rsv_new_user();
    reservation_t *res = NULL;
    svc_err_t err;
    char want[96];

    expect_code("HoldSeats by a user without an account",
                rsv_hold(&main_rsv, arena, stranger, sched, seats, 2, &res, &err), &err,
                SVC_NOT_FOUND);
    snprintf(want, sizeof(want), "user %" PRId64 " has no account; top up first", stranger);
    if (strstr(err.msg, want) == NULL) {
        fail_msg("HoldSeats by a user without an account says \"%s\", expected \"%s\"", err.msg,
                 want);
    }
    assert_int_equal(rsv_list_seats(&main_rsv, arena, sched, true)->n_seats, 5);
    assert_int_equal(db_int(&main_rsv.db,
                            "SELECT count(*) FROM reservations WHERE user_id = %" PRId64, stranger),
                     0);
    assert_int_equal(db_int(&rsv_stack.balance_db,
                            "SELECT count(*) FROM accounts WHERE user_id = %" PRId64, stranger),
                     0);

    /* Once topped up, the same user holds the same seats. */
    rsv_top_up(stranger, 500);
    expect_ok("HoldSeats after a top-up",
              rsv_hold(&main_rsv, arena, stranger, sched, seats, 2, &res, &err), &err);
    assert_int_equal(res->user_id, stranger);
    assert_int_equal(res->status, RES_HELD);
    expect_seat_numbers(res, seats, 2);
    assert_int_equal(db_int(&main_rsv.db,
                            "SELECT count(*) FROM reservations WHERE user_id = %" PRId64
                            " AND status = 1",
                            stranger),
                     1);
    db_check_schedule(&main_rsv.db, sched);
}

/* ---------- holds racing the sweeper ---------- */

/* PostgreSQL's deadlock count for sweep_rsv's database, once its backends reported it. */
static int64_t
sweep_db_deadlocks(void)
{
    return db_int(&sweep_rsv.db,
                  "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()");
}

/* One fan grabbing random 2-4-seat sets of one schedule again and again until deadline. */
typedef struct {
    int64_t user, schedule_id, deadline_mono_ms;
    int seats;
    uint64_t rng;
    int64_t granted, refused;
    svc_err_t odd; /* the first answer other than OK, FAILED_PRECONDITION or ABORTED */
} grabber_t;

static void *
grabber_thread(void *arg)
{
    grabber_t *g = arg;
    svc_arena_t *arena = svc_arena_create();

    while (svc_now_mono_ms() < g->deadline_mono_ms) {
        int32_t seats[4];
        size_t n = 2 + next_random(&g->rng) % 3;
        reservation_t *res = NULL;
        svc_err_t err;
        for (size_t k = 0; k < n; k++) {
            int again;
            do { /* distinct seats */
                seats[k] = (int32_t)(1 + next_random(&g->rng) % (uint64_t)g->seats);
                again = 0;
                for (size_t j = 0; j < k; j++) {
                    again |= seats[j] == seats[k];
                }
            } while (again);
        }
        if (rsv_hold(&sweep_rsv, arena, g->user, g->schedule_id, seats, n, &res, &err) == 0) {
            g->granted++;
        } else {
            g->refused++;
            if (err.code != SVC_FAILED_PRECONDITION && err.code != SVC_ABORTED &&
                g->odd.code == SVC_OK) {
                g->odd = err;
            }
        }
        svc_arena_reset(arena);
    }
    svc_arena_destroy(arena);
    return NULL;
}

/*
 * Holds that replace expired holds while the sweeper expires them. The old
 * hold locked seats then the expired reservation, the sweeper the
 * reservation then its seats: PostgreSQL found deadlocks (40P01) and killed
 * one side. With a 100 ms TTL and a sweep every 10 ms, fans grab
 * overlapping 2-4-seat sets of a few seats without pause, so seats are
 * taken again the moment their hold expires, while the sweeper is at them.
 * Afterwards the instance is stopped (its backends then report their
 * statistics) and the database's deadlock count must not have grown.
 */
static void
test_holds_racing_sweeper_do_not_deadlock(void **state)
{
    enum { FANS = 32, SEATS = 12, RUN_MS = 8000 };
    svc_arena_t *arena = *state;
    int64_t sched = rsv_new_schedule(&sweep_rsv, arena, SEATS, 10), deadlocks_before;
    grabber_t *fans = svc_arena_alloc(arena, FANS * sizeof(*fans));
    int64_t users[FANS], granted = 0, refused = 0;
    int st;

    rsv_funded_users(users, FANS, 1);
    deadlocks_before = sweep_db_deadlocks();
    for (int i = 0; i < FANS; i++) {
        memset(&fans[i], 0, sizeof(fans[i]));
        fans[i].user = users[i];
        fans[i].schedule_id = sched;
        fans[i].seats = SEATS;
        fans[i].rng = 0xdead10c0u + (uint64_t)i;
        fans[i].deadline_mono_ms = svc_now_mono_ms() + RUN_MS;
    }
    run_threads(fans, sizeof(*fans), FANS, grabber_thread);
    for (int i = 0; i < FANS; i++) {
        granted += fans[i].granted;
        refused += fans[i].refused;
        if (fans[i].odd.code != SVC_OK) {
            fail_msg("a hold racing the sweeper answered %s (%s)",
                     svc_status_name(fans[i].odd.code), fans[i].odd.msg);
        }
    }
    fprintf(stderr,
            "%d fans grabbing %d seats for %d ms against a 10 ms sweeper: %" PRId64
            " holds granted, %" PRId64 " refused\n",
            FANS, SEATS, RUN_MS, granted, refused);
    assert_true(granted >= 10);
    db_check_schedule(&sweep_rsv.db, sched);

    st = testenv_proc_stop(&sweep_rsv.proc);
    if (st != 0) {
        fail_msg("reservation-svc (sweep_rsv) did not exit cleanly: status %d", st);
    }
    for (int i = 0;
         i < 100 && db_int(&sweep_rsv.db, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                          "current_database() AND pid <> pg_backend_pid()") > 0;
         i++) {
        svc_sleep_ms(50);
    }
    if (sweep_db_deadlocks() != deadlocks_before) {
        fail_msg("PostgreSQL found %" PRId64 " deadlocks in reservation-svc's database while holds "
                 "raced the sweeper",
                 sweep_db_deadlocks() - deadlocks_before);
    }
}

/* ---------- expiry and cancellation ---------- */

static void
test_hold_expires(void **state)
{
    static const int32_t three[1] = {3}, two_three[2] = {2, 3};
    svc_arena_t *arena = *state;
    int64_t sched = rsv_new_schedule(&ttl_rsv, arena, 5, 500), fan = rsv_funded_user(1),
            other = rsv_funded_user(1);
    reservation_t *first = NULL, *res = NULL;
    Reservation__V1__ListSeatsResponse *seats;
    svc_err_t err;

    expect_ok("HoldSeats", rsv_hold(&ttl_rsv, arena, fan, sched, three, 1, &first, &err), &err);
    if (first->expires_at_ms - first->created_at_ms < SHORT_TTL_MS - 500 ||
        first->expires_at_ms - first->created_at_ms > SHORT_TTL_MS + 500) {
        fail_msg("hold lasts %" PRId64 " ms, HOLD_TTL_MS is %d",
                 first->expires_at_ms - first->created_at_ms, SHORT_TTL_MS);
    }
    expect_seat(rsv_list_seats(&ttl_rsv, arena, sched, 0), 3, SEAT_HELD);
    expect_code("HoldSeats of a held seat",
                rsv_hold(&ttl_rsv, arena, other, sched, three, 1, &res, &err), &err,
                SVC_FAILED_PRECONDITION);
    expect_code("HoldSeats of a free and a held seat",
                rsv_hold(&ttl_rsv, arena, other, sched, two_three, 2, &res, &err), &err,
                SVC_FAILED_PRECONDITION);
    expect_seat(rsv_list_seats(&ttl_rsv, arena, sched, 0), 2, SEAT_AVAILABLE); /* all or nothing */

    /* Past expires_at_ms the seat reads available at once, sweeper or not. */
    while (svc_now_unix_ms() < first->expires_at_ms + 300) {
        svc_sleep_ms(50);
    }
    seats = rsv_list_seats(&ttl_rsv, arena, sched, 0);
    expect_seat(seats, 3, SEAT_AVAILABLE);
    assert_int_equal(rsv_list_seats(&ttl_rsv, arena, sched, 1)->n_seats, 5);
    assert_int_equal(rsv_listed_schedule(&ttl_rsv, arena, sched)->available_seats, 5);
    expect_ok("GetReservation of an expired hold", rsv_get(&ttl_rsv, arena, first->id, &res, &err),
              &err);
    assert_int_equal(res->status, RES_EXPIRED);
    expect_code("CancelReservation of an expired hold",
                rsv_cancel(&ttl_rsv, arena, first->id, fan, &res, &err), &err,
                SVC_FAILED_PRECONDITION);

    /* Someone else can have it now; the first hold stays expired. */
    expect_ok("HoldSeats of an expired seat",
              rsv_hold(&ttl_rsv, arena, other, sched, three, 1, &res, &err), &err);
    assert_int_equal(res->status, RES_HELD);
    expect_seat(rsv_list_seats(&ttl_rsv, arena, sched, 0), 3, SEAT_HELD);
    expect_ok("GetReservation", rsv_get(&ttl_rsv, arena, first->id, &res, &err), &err);
    assert_int_equal(res->status, RES_EXPIRED);
    db_check_schedule(&ttl_rsv.db, sched);
}

/*
 * Many fans at once on a seat whose hold just expired (not swept yet): one
 * wins. With a 2 s TTL the winner's own hold may expire if the storm is slow,
 * so the rule checked is "no two granted holds of the seat overlap in time".
 */
static void
test_expired_seat_storm(void **state)
{
    enum { N = 200 };
    static const int32_t one[1] = {1};
    svc_arena_t *arena = *state;
    int64_t sched = rsv_new_schedule(&ttl_rsv, arena, 4, 100), t0, ms, last_expiry = 0;
    hold_op_t *ops = svc_arena_alloc(arena, N * sizeof(*ops));
    int64_t *users = svc_arena_alloc(arena, N * sizeof(*users));
    reservation_t *first = NULL, *res = NULL;
    int ok = 0, taken = 0, aborted = 0;
    svc_err_t err;

    rsv_funded_users(users, N, 1);
    expect_ok("HoldSeats",
              rsv_hold(&ttl_rsv, arena, rsv_funded_user(1), sched, one, 1, &first, &err), &err);
    while (svc_now_unix_ms() < first->expires_at_ms + 100) {
        svc_sleep_ms(20);
    }
    for (int i = 0; i < N; i++) {
        ops[i].inst = &ttl_rsv;
        ops[i].user = users[i];
        ops[i].schedule_id = sched;
        ops[i].seats[0] = 1;
        ops[i].n = 1;
    }
    t0 = svc_now_mono_ms();
    run_holds(ops, N);
    ms = svc_now_mono_ms() - t0;
    for (int i = 0; i < N; i++) {
        if (ops[i].rc != 0) {
            expect_refusal(&ops[i], i);
            taken += ops[i].err.code == SVC_FAILED_PRECONDITION;
            aborted += ops[i].err.code == SVC_ABORTED;
        } else {
            ok++;
        }
    }
    fprintf(stderr,
            "%d concurrent holds of a seat whose hold expired: %" PRId64 " ms; %d OK, %d "
            "FAILED_PRECONDITION, %d ABORTED\n",
            N, ms, ok, taken, aborted);
    assert_true(ok >= 1);
    if (ms < SHORT_TTL_MS - 300) {
        assert_int_equal(ok, 1);
    }
    for (int granted = 0; granted < ok; granted++) { /* in created_at order, no overlap */
        int next = -1;
        for (int i = 0; i < N; i++) {
            if (ops[i].rc == 0 && ops[i].created_at_ms >= last_expiry &&
                (next < 0 || ops[i].created_at_ms < ops[next].created_at_ms)) {
                next = i;
            }
        }
        if (next < 0) {
            fail_msg("%d holds of seat 1 granted while another was still live", ok - granted);
        }
        last_expiry = ops[next].expires_at_ms;
        ops[next].created_at_ms = INT64_MIN; /* taken out of the search */
    }
    expect_ok("GetReservation", rsv_get(&ttl_rsv, arena, first->id, &res, &err), &err);
    assert_int_equal(res->status, RES_EXPIRED);
    db_check_schedule(&ttl_rsv.db, sched);
}

static void
test_cancel_reservation(void **state)
{
    static const int32_t seats25[2] = {5, 2}, sorted25[2] = {2, 5};
    svc_arena_t *arena = *state;
    int64_t sched = rsv_new_schedule(&main_rsv, arena, 8, 2500), fan = rsv_funded_user(1),
            stranger = rsv_funded_user(1);
    reservation_t *held = NULL, *res = NULL;
    Reservation__V1__ListSeatsResponse *seats;
    svc_err_t err;

    expect_ok("HoldSeats", rsv_hold(&main_rsv, arena, fan, sched, seats25, 2, &held, &err), &err);
    expect_code("CancelReservation by a stranger",
                rsv_cancel(&main_rsv, arena, held->id, stranger, &res, &err), &err,
                SVC_PERMISSION_DENIED);
    seats = rsv_list_seats(&main_rsv, arena, sched, 0);
    expect_seat(seats, 2, SEAT_HELD);
    expect_seat(seats, 5, SEAT_HELD);
    expect_ok("GetReservation", rsv_get(&main_rsv, arena, held->id, &res, &err), &err);
    assert_int_equal(res->status, RES_HELD);

    expect_ok("CancelReservation by the holder",
              rsv_cancel(&main_rsv, arena, held->id, fan, &res, &err), &err);
    assert_int_equal(res->id, held->id);
    assert_int_equal(res->status, RES_CANCELLED);
    assert_int_equal(res->user_id, fan);
    assert_int_equal(res->amount, 5000);
    expect_seat_numbers(res, sorted25, 2);
    seats = rsv_list_seats(&main_rsv, arena, sched, 0);
    for (int32_t n = 1; n <= 8; n++) {
        expect_seat(seats, n, SEAT_AVAILABLE);
    }
    assert_int_equal(rsv_listed_schedule(&main_rsv, arena, sched)->available_seats, 8);
    expect_ok("GetReservation", rsv_get(&main_rsv, arena, held->id, &res, &err), &err);
    assert_int_equal(res->status, RES_CANCELLED);
    assert_int_equal(
        db_int(&main_rsv.db, "SELECT status FROM reservations WHERE id = %" PRId64, held->id), 3);

    expect_code("CancelReservation again", rsv_cancel(&main_rsv, arena, held->id, fan, &res, &err),
                &err, SVC_FAILED_PRECONDITION);
    expect_code("CancelReservation of an unknown id",
                rsv_cancel(&main_rsv, arena, INT64_MAX, fan, &res, &err), &err, SVC_NOT_FOUND);
    expect_code("GetReservation of an unknown id", rsv_get(&main_rsv, arena, INT64_MAX, &res, &err),
                &err, SVC_NOT_FOUND);

    /* The seats are free for the next fan. */
    expect_ok("HoldSeats of cancelled seats",
              rsv_hold(&main_rsv, arena, stranger, sched, seats25, 2, &res, &err), &err);
    expect_seat_numbers(res, sorted25, 2);
    db_check_schedule(&main_rsv.db, sched);
}

static const char *const ttl_env[] = {"HOLD_TTL_MS=2000", NULL};
static const char *const sweep_env[] = {"HOLD_TTL_MS=100", "SWEEP_MS=10", NULL};
static const rsv_instance_spec_t instances[] = {
    {&main_rsv, "reservation", NULL},
    {&ttl_rsv, "reservation_ttl", ttl_env},
    {&sweep_rsv, "reservation_sweep", sweep_env},
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
        RSV_ARENA_TEST(test_hold_invalid_inputs),
        RSV_ARENA_TEST(test_hold_needs_account),
        RSV_ARENA_TEST(test_one_seat_storm),
        RSV_ARENA_TEST(test_overlapping_holds_storm),
        RSV_ARENA_TEST(test_mixed_refusals_storm),
        RSV_ARENA_TEST(test_hold_expires),
        RSV_ARENA_TEST(test_expired_seat_storm),
        RSV_ARENA_TEST(test_cancel_reservation),
        RSV_ARENA_TEST(test_holds_racing_sweeper_do_not_deadlock),
    };

    if (rsv_fixture_main_args(argc, argv) != 0) {
        return 2;
    }
    return testenv_group_result(
        cmocka_run_group_tests(tests, setup, testenv_group_teardown(teardown)));
}
