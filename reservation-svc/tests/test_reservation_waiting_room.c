/*
 * test_reservation_waiting_room.c: schedules with a waiting room, over real
 * gRPC. CreateConcert takes and ListConcerts shows waiting_room_limit and
 * admission_ttl_ms; HoldSeats on such a schedule needs an admission token of
 * its user for that schedule, signed with the key every instance shares
 * (ADMISSION_KEY_FILE), and refuses a missing, forged, expired or borrowed
 * one with FAILED_PRECONDITION and no trace in the database. The tokens here
 * are signed by the test with the instances' key, as the waiting room will.
 * argv: reservation-svc, balance-svc, lock-svc.
 *
 * Two reservation-svc instances on one database share the key: a token one
 * would sign, the other honours. Instance b has not seen the schedule when
 * it is first asked, so its first refusal comes from its database read.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "reservation_admission.h"
#include "rsv_fixture.h"
#include "svc/timer.h"

#define KEY "waiting-room-test-key-0123456789abcdef"
#define PLACE_MS 3000
#define PLACE_MS_TEXT "3000"
#define OTHER_KEY "someone-elses-key-0123456789abcdef-0000"

static rsv_instance_t rsv_a, rsv_b;
static char key_path[] = "/tmp/rsv-admission-key-XXXXXX";
static char key_env[64];

static rsv_admission_key_t
key_of(const char *k)
{
    rsv_admission_key_t key;
    svc_err_t err;

    assert_int_equal(rsv_admission_key_set(&key, k, strlen(k), &err), 0);
    return key;
}

/* A token for user on schedule, valid for ttl_ms from now, signed with k. */
static const char *
token_for(svc_arena_t *arena, const char *k, int64_t user, int64_t schedule, int64_t ttl_ms)
{
    rsv_admission_key_t key = key_of(k);
    char *t = svc_arena_alloc(arena, RSV_ADMISSION_TOKEN_MAX);

    assert_int_equal(rsv_admission_sign(&key, user, schedule, "abc123", svc_now_unix_ms() + ttl_ms,
                                        t, RSV_ADMISSION_TOKEN_MAX),
                     0);
    return t;
}

/* lock-svc's ticket inside a waiting-room ticket "<schedule>.<user>.<seq>.<ticket>.<mac>". */
static const char *
ticket_of(svc_arena_t *arena, const char *room_ticket)
{
    const char *p = room_ticket;
    char *t;

    for (int i = 0; i < 3; i++) {
        p = strchr(p, '.') + 1;
    }
    t = svc_arena_strdup(arena, p);

    *strchr(t, '.') = '\0';
    return t;
}

/* A schedule of 10 seats at 100 with a waiting room of limit (ttl 0: the default). */
static int64_t
room_schedule(svc_arena_t *arena, int32_t limit, int64_t ttl_ms)
{
    Reservation__V1__ScheduleSpec **specs =
        rsv_specs(arena, 1, svc_now_unix_ms() + FIXTURE_DAY_MS, 10, 100);
    Reservation__V1__Concert *concert = NULL;
    svc_err_t err;

    specs[0]->waiting_room_limit = limit;
    specs[0]->admission_ttl_ms = ttl_ms;
    expect_ok(
        "CreateConcert with a waiting room",
        rsv_create_concert(&rsv_a, arena, "on-sale", specs, 1, FIXTURE_ADMIN_AUTH, &concert, &err),
        &err);
    assert_int_equal(concert->schedules[0]->waiting_room_limit, limit);
    assert_int_equal(concert->schedules[0]->admission_ttl_ms, ttl_ms != 0 ? ttl_ms : 600000);
    return concert->schedules[0]->id;
}

static void
test_schedule_settings(void **state)
{
    static const struct {
        int32_t limit;
        int64_t ttl;
        const char *why;
    } bad[] = {
        {-1, 0, "waiting_room_limit"},
        {1000001, 0, "waiting_room_limit"},
        {10, 999, "admission_ttl_ms"},
        {10, 86400001, "admission_ttl_ms"},
        {0, 60000, "needs a waiting_room_limit"},
    };
    svc_arena_t *arena = *state;
    int64_t sched = room_schedule(arena, 50, 0), plain = rsv_new_schedule(&rsv_a, arena, 5, 10);
    Reservation__V1__Schedule *listed;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        Reservation__V1__ScheduleSpec **specs =
            rsv_specs(arena, 1, svc_now_unix_ms() + FIXTURE_DAY_MS, 10, 100);
        Reservation__V1__Concert *concert = NULL;
        svc_err_t err;
        specs[0]->waiting_room_limit = bad[i].limit;
        specs[0]->admission_ttl_ms = bad[i].ttl;
        expect_code(
            "CreateConcert with a bad waiting room",
            rsv_create_concert(&rsv_a, arena, "bad", specs, 1, FIXTURE_ADMIN_AUTH, &concert, &err),
            &err, SVC_INVALID_ARGUMENT);
        if (strstr(err.msg, bad[i].why) == NULL) {
            fail_msg("case %zu: \"%s\" does not name %s", i, err.msg, bad[i].why);
        }
    }
    listed = rsv_listed_schedule(&rsv_b, arena, sched);
    assert_int_equal(listed->waiting_room_limit, 50);
    assert_int_equal(listed->admission_ttl_ms, 600000);
    listed = rsv_listed_schedule(&rsv_b, arena, plain);
    assert_int_equal(listed->waiting_room_limit, 0);
    assert_int_equal(listed->admission_ttl_ms, 0);
}

/* Fails unless the hold is refused as not admitted, saying why. */
static void
expect_not_admitted(const rsv_instance_t *inst, svc_arena_t *arena, int64_t user, int64_t sched,
                    int32_t seat, const char *token, const char *why)
{
    reservation_t *res = NULL;
    svc_err_t err;
    int rc = rsv_hold_admitted(inst, arena, user, sched, &seat, 1, token, &res, &err);

    expect_code("HoldSeats without a good admission", rc, &err, SVC_FAILED_PRECONDITION);
    if (strstr(err.msg, "not admitted") == NULL || strstr(err.msg, why) == NULL) {
        fail_msg("HoldSeats refused with \"%s\", want \"not admitted\" and \"%s\"", err.msg, why);
    }
}

static void
test_hold_needs_admission(void **state)
{
    svc_arena_t *arena = *state;
    int64_t sched = room_schedule(arena, 2, 60000), plain = rsv_new_schedule(&rsv_a, arena, 5, 10);
    int64_t fan = rsv_funded_user(1000), other = rsv_funded_user(1000);
    const int32_t one = 1, two = 2, three = 3;
    reservation_t *res = NULL;
    svc_err_t err;

    /* Instance b has never seen the schedule: its database read finds the waiting room. */
    expect_not_admitted(&rsv_b, arena, fan, sched, 1, NULL, "enter the waiting room");
    expect_not_admitted(&rsv_b, arena, fan, sched, 1, "", "enter the waiting room");
    expect_not_admitted(&rsv_a, arena, fan, sched, 1, NULL, "enter the waiting room");
    expect_not_admitted(&rsv_a, arena, fan, sched, 1, token_for(arena, KEY, other, sched, 60000),
                        "another user");
    expect_not_admitted(&rsv_a, arena, fan, sched, 1, token_for(arena, KEY, fan, plain, 60000),
                        "another schedule");
    expect_not_admitted(&rsv_b, arena, fan, sched, 1,
                        token_for(arena, OTHER_KEY, fan, sched, 60000), "not signed");
    expect_not_admitted(&rsv_a, arena, fan, sched, 1, token_for(arena, KEY, fan, sched, -1),
                        "expired");
    expect_not_admitted(&rsv_a, arena, fan, sched, 1, "v1.1.2.ab.4.deadbeef", "malformed");
    /* Nothing was written for any of them. */
    assert_int_equal(
        db_int(&rsv_a.db, "SELECT count(*) FROM reservations WHERE schedule_id = %" PRId64, sched),
        0);

    /* Admitted: the same token holds through either instance. */
    const char *admission = token_for(arena, KEY, fan, sched, 60000);
    expect_ok("HoldSeats admitted, instance a",
              rsv_hold_admitted(&rsv_a, arena, fan, sched, &one, 1, admission, &res, &err), &err);
    expect_ok("HoldSeats admitted, instance b",
              rsv_hold_admitted(&rsv_b, arena, fan, sched, &two, 1, admission, &res, &err), &err);
    assert_int_equal(db_int(&rsv_a.db,
                            "SELECT count(*) FROM reservations WHERE schedule_id = %" PRId64
                            " AND user_id = %" PRId64 " AND status = 1",
                            sched, fan),
                     2);
    /* A token does not make a taken seat free. */
    expect_code("HoldSeats of a held seat, admitted",
                rsv_hold_admitted(&rsv_a, arena, other, sched, &one, 1,
                                  token_for(arena, KEY, other, sched, 60000), &res, &err),
                &err, SVC_FAILED_PRECONDITION);
    assert_null(strstr(err.msg, "not admitted"));
    /* A schedule without a waiting room ignores tokens, good or bad. */
    expect_ok("HoldSeats without a waiting room",
              rsv_hold_admitted(&rsv_b, arena, other, plain, &three, 1, "anything", &res, &err),
              &err);
    db_check_schedule(&rsv_a.db, sched);
}

/* EnterWaitingRoom for user on schedule through inst; 0 with *out, or -1 with err. */
static int
enter(const rsv_instance_t *inst, svc_arena_t *arena, int64_t user, int64_t sched,
      Reservation__V1__EnterWaitingRoomResponse **out, svc_err_t *err)
{
    Reservation__V1__EnterWaitingRoomRequest req =
        RESERVATION__V1__ENTER_WAITING_ROOM_REQUEST__INIT;

    req.user_id = user;
    req.schedule_id = sched;
    return rsv_call(inst, "EnterWaitingRoom", &req.base,
                    &reservation__v1__enter_waiting_room_response__descriptor, arena,
                    (ProtobufCMessage **)out, NULL, 10000, err);
}

static int
leave(const rsv_instance_t *inst, svc_arena_t *arena, const char *ticket, svc_err_t *err)
{
    Reservation__V1__LeaveWaitingRoomRequest req =
        RESERVATION__V1__LEAVE_WAITING_ROOM_REQUEST__INIT;
    ProtobufCMessage *out = NULL;

    req.ticket = (char *)ticket;
    return rsv_call(inst, "LeaveWaitingRoom", &req.base,
                    &reservation__v1__leave_waiting_room_response__descriptor, arena, &out, NULL,
                    10000, err);
}

/* The default admission lasts 10 minutes: lock-svc grants a semaphore lease that long. */
static void
test_default_admission_ttl(void **state)
{
    svc_arena_t *arena = *state;
    int64_t sched = room_schedule(arena, 5, 0);
    Reservation__V1__EnterWaitingRoomResponse *got;
    svc_err_t err;

    expect_ok("EnterWaitingRoom", enter(&rsv_b, arena, rsv_funded_user(10), sched, &got, &err),
              &err);
    assert_int_equal(got->position, 0);
    assert_true(got->expires_at_ms > svc_now_unix_ms() + 590000);
    assert_true(got->expires_at_ms <= svc_now_unix_ms() + 600000);
}

/*
 * A room of 2 entered by three users through both instances: two admitted
 * with tokens that HoldSeats honours, the third in line without one;
 * entering again returns the same ticket; the first leaving admits the third
 * at once; bad requests get their codes.
 */
static void
test_enter_and_leave(void **state)
{
    svc_arena_t *arena = *state;
    int64_t sched = room_schedule(arena, 2, 60000), plain = rsv_new_schedule(&rsv_a, arena, 5, 10);
    int64_t users[3] = {rsv_funded_user(1000), rsv_funded_user(1000), rsv_funded_user(1000)};
    Reservation__V1__EnterWaitingRoomResponse *got[3], *again;
    const int32_t seat = 4;
    reservation_t *res = NULL;
    svc_err_t err;

    expect_code("EnterWaitingRoom of a schedule without one",
                enter(&rsv_a, arena, users[0], plain, &again, &err), &err, SVC_FAILED_PRECONDITION);
    expect_code("EnterWaitingRoom of an unknown schedule",
                enter(&rsv_b, arena, users[0], sched + 100000, &again, &err), &err, SVC_NOT_FOUND);
    expect_code("EnterWaitingRoom of user 0", enter(&rsv_a, arena, 0, sched, &again, &err), &err,
                SVC_INVALID_ARGUMENT);
    expect_code("LeaveWaitingRoom of a made-up ticket", leave(&rsv_a, arena, "not-a-ticket", &err),
                &err, SVC_INVALID_ARGUMENT);

    for (int i = 0; i < 3; i++) {
        expect_ok("EnterWaitingRoom",
                  enter(i % 2 ? &rsv_b : &rsv_a, arena, users[i], sched, &got[i], &err), &err);
    }
    for (int i = 0; i < 2; i++) {
        assert_int_equal(got[i]->position, 0);
        assert_true(strlen(got[i]->admission_token) > 0);
        assert_true(got[i]->expires_at_ms > svc_now_unix_ms() + 50000);
    }
    assert_int_equal(got[2]->position, 1);
    assert_string_equal(got[2]->admission_token, "");
    /* The same user again, through the other instance: the same ticket, still in line. */
    expect_ok("EnterWaitingRoom again", enter(&rsv_b, arena, users[2], sched, &again, &err), &err);
    assert_string_equal(again->ticket, got[2]->ticket);
    assert_int_equal(again->position, 1);
    /* An admitted user's token holds seats; the one in line cannot. */
    expect_ok("HoldSeats with the admission from EnterWaitingRoom",
              rsv_hold_admitted(&rsv_b, arena, users[0], sched, &seat, 1, got[0]->admission_token,
                                &res, &err),
              &err);
    expect_not_admitted(&rsv_a, arena, users[2], sched, 5, got[2]->admission_token,
                        "enter the waiting room");
    /* The first leaves: the third is admitted by the time the leave is answered, and the
     * first's token holds no more seats, on either instance. */
    expect_ok("LeaveWaitingRoom", leave(&rsv_a, arena, got[0]->ticket, &err), &err);
    expect_ok("EnterWaitingRoom again", enter(&rsv_a, arena, users[2], sched, &again, &err), &err);
    assert_string_equal(again->ticket, got[2]->ticket);
    assert_int_equal(again->position, 0);
    expect_not_admitted(&rsv_b, arena, users[0], sched, 6, got[0]->admission_token,
                        "the admission ended");
    expect_not_admitted(&rsv_a, arena, users[0], sched, 6, got[0]->admission_token,
                        "the admission ended");
    const int32_t five = 5;
    expect_ok("HoldSeats once admitted",
              rsv_hold_admitted(&rsv_a, arena, users[2], sched, &five, 1, again->admission_token,
                                &res, &err),
              &err);
    /* Leaving twice, or a ticket gone, is fine. */
    expect_ok("LeaveWaitingRoom again", leave(&rsv_b, arena, got[0]->ticket, &err), &err);
}

/*
 * Paying a reservation ends the admission that made its hold: in a room of
 * one, the user in line is admitted the moment the first one pays.
 */
static void
test_paying_ends_the_admission(void **state)
{
    svc_arena_t *arena = *state;
    int64_t sched = room_schedule(arena, 1, 60000);
    int64_t first = rsv_funded_user(1000), second = rsv_funded_user(1000);
    Reservation__V1__EnterWaitingRoomResponse *a, *b, *again = NULL;
    const int32_t seat = 7;
    reservation_t *res = NULL;
    pay_response_t *paid = NULL;
    svc_err_t err;

    expect_ok("EnterWaitingRoom", enter(&rsv_a, arena, first, sched, &a, &err), &err);
    expect_ok("EnterWaitingRoom", enter(&rsv_b, arena, second, sched, &b, &err), &err);
    assert_int_equal(a->position, 0);
    assert_int_equal(b->position, 1);
    expect_ok(
        "HoldSeats admitted",
        rsv_hold_admitted(&rsv_a, arena, first, sched, &seat, 1, a->admission_token, &res, &err),
        &err);
    assert_int_equal(db_int(&rsv_a.db,
                            "SELECT count(*) FROM reservations WHERE id = %" PRId64
                            " AND admission_ticket = '%s'",
                            res->id, ticket_of(arena, a->ticket)),
                     1);
    /* Not paid yet: the second still waits. */
    expect_ok("EnterWaitingRoom again", enter(&rsv_b, arena, second, sched, &again, &err), &err);
    assert_int_equal(again->position, 1);
    expect_ok("PayReservation", rsv_pay(&rsv_b, arena, res->id, first, "room-pay", &paid, &err),
              &err);
    /* Paid: the admission is over, its token holds no more seats. */
    expect_not_admitted(&rsv_a, arena, first, sched, 8, a->admission_token, "the admission ended");
    for (int i = 0; i < 50 && again->position != 0; i++) {
        svc_sleep_ms(20); /* the admission is given up without waiting */
        expect_ok("EnterWaitingRoom again", enter(&rsv_b, arena, second, sched, &again, &err),
                  &err);
    }
    assert_int_equal(again->position, 0);
    assert_string_equal(again->ticket, b->ticket);
    assert_true(strlen(again->admission_token) > 0);
}

/* WatchWaitingRoom of ticket through inst, opened; the caller reads and destroys it. */
static svc_client_stream_t *
watch_open(const rsv_instance_t *inst, const char *ticket)
{
    Reservation__V1__WatchWaitingRoomRequest req =
        RESERVATION__V1__WATCH_WAITING_ROOM_REQUEST__INIT;
    svc_call_opts_t opts = {.timeout_ms = 30000};
    svc_client_stream_t *st;
    svc_err_t err;

    req.ticket = (char *)ticket;
    st = svc_client_stream_open(inst->client, "/reservation.v1.ReservationService/WatchWaitingRoom",
                                &opts, &err);
    assert_non_null(st);
    assert_int_equal(svc_client_stream_send(st, &req.base, &err), 0);
    assert_int_equal(svc_client_stream_close_send(st, &err), 0);
    return st;
}

/* The next update of a watch; fails when the stream ends first. */
static Reservation__V1__WaitingRoomUpdate *
watch_next(svc_client_stream_t *st, svc_arena_t *arena)
{
    ProtobufCMessage *msg = NULL;
    svc_err_t err = {0};
    int rc = svc_client_stream_recv(st, &reservation__v1__watch_waiting_room_response__descriptor,
                                    arena, &msg, &err);

    if (rc != 1) {
        (void)svc_client_stream_finish(st, &err);
        fail_msg("WatchWaitingRoom ended early (%d): %s %s", rc, svc_status_name(err.code),
                 err.msg);
    }
    assert_non_null(((Reservation__V1__WatchWaitingRoomResponse *)msg)->update);
    return ((Reservation__V1__WatchWaitingRoomResponse *)msg)->update;
}

/* The watch ends with code (OK after an admission). */
static void
watch_ends(svc_client_stream_t *st, svc_arena_t *arena, svc_status_t code)
{
    ProtobufCMessage *msg = NULL;
    svc_err_t err = {0};
    int rc = svc_client_stream_recv(st, &reservation__v1__watch_waiting_room_response__descriptor,
                                    arena, &msg, &err);

    assert_true(rc <= 0); /* no message after the last */
    rc = svc_client_stream_finish(st, &err);
    assert_int_equal(rc == 0 ? SVC_OK : err.code, code);
    svc_client_stream_destroy(st);
}

/*
 * Positions are pushed: a room of one with three users; the two in line
 * watch through different instances and hear each change without asking:
 * the first leaving admits the second (its stream brings the admission
 * token and ends) and moves the third up; a tampered ticket is refused and
 * a ticket gone ends its watch with NOT_FOUND.
 */
static void
test_watch_pushes_positions(void **state)
{
    svc_arena_t *arena = *state;
    int64_t sched = room_schedule(arena, 1, 60000);
    int64_t users[3] = {rsv_funded_user(1000), rsv_funded_user(1000), rsv_funded_user(1000)};
    Reservation__V1__EnterWaitingRoomResponse *got[3];
    Reservation__V1__WaitingRoomUpdate *u;
    svc_client_stream_t *w2, *w3;
    const int32_t seat = 3;
    reservation_t *res = NULL;
    int64_t t0;
    char *bad;
    svc_err_t err;

    for (int i = 0; i < 3; i++) {
        expect_ok("EnterWaitingRoom", enter(&rsv_a, arena, users[i], sched, &got[i], &err), &err);
        assert_int_equal(got[i]->position, i);
    }
    w3 = watch_open(&rsv_b, got[2]->ticket);
    assert_int_equal(watch_next(w3, arena)->position, 2);
    w2 = watch_open(&rsv_a, got[1]->ticket);
    assert_int_equal(watch_next(w2, arena)->position, 1);

    t0 = svc_now_mono_ms();
    expect_ok("LeaveWaitingRoom", leave(&rsv_a, arena, got[0]->ticket, &err), &err);
    u = watch_next(w2, arena);
    assert_int_equal(u->position, 0);
    assert_true(strlen(u->admission_token) > 0);
    assert_true(u->expires_at_ms > svc_now_unix_ms() + 50000);
    watch_ends(w2, arena, SVC_OK);
    assert_int_equal(watch_next(w3, arena)->position, 1);
    fprintf(stderr, "a leave reached both watchers in %" PRId64 " ms\n", svc_now_mono_ms() - t0);
    /* Pushed, not found by a periodic look: well within a second even under sanitizers. */
    assert_true(svc_now_mono_ms() - t0 < 2000);
    expect_ok(
        "HoldSeats with the token the watch brought",
        rsv_hold_admitted(&rsv_b, arena, users[1], sched, &seat, 1, u->admission_token, &res, &err),
        &err);

    /* Another user's name written into a ticket breaks its MAC. */
    bad = svc_arena_strdup(arena, got[2]->ticket);
    bad[strlen(bad) - 1] = bad[strlen(bad) - 1] == '0' ? '1' : '0';
    svc_client_stream_t *forged = watch_open(&rsv_a, bad);
    watch_ends(forged, arena, SVC_INVALID_ARGUMENT);
    /* The third leaves while watching: its watch ends, NOT_FOUND. */
    expect_ok("LeaveWaitingRoom", leave(&rsv_b, arena, got[2]->ticket, &err), &err);
    watch_ends(w3, arena, SVC_NOT_FOUND);
}

/*
 * A place nobody watches runs out after ROOM_PLACE_MS (3 s here); a watched
 * one is renewed while the watch lasts, here for twice that long.
 */
static void
test_watching_keeps_the_place(void **state)
{
    svc_arena_t *arena = *state;
    int64_t sched = room_schedule(arena, 1, 60000);
    int64_t users[3] = {rsv_funded_user(1000), rsv_funded_user(1000), rsv_funded_user(1000)};
    Reservation__V1__EnterWaitingRoomResponse *got[3];
    Reservation__V1__WaitingRoomUpdate *u;
    svc_client_stream_t *w;
    svc_err_t err;

    for (int i = 0; i < 3; i++) {
        expect_ok("EnterWaitingRoom", enter(&rsv_a, arena, users[i], sched, &got[i], &err), &err);
        assert_int_equal(got[i]->position, i);
    }
    w = watch_open(&rsv_b, got[1]->ticket);
    assert_int_equal(watch_next(w, arena)->position, 1);
    svc_sleep_ms(2 * PLACE_MS);
    /* The unwatched third ran out; the watched second did not. */
    svc_client_stream_t *late = watch_open(&rsv_a, got[2]->ticket);
    watch_ends(late, arena, SVC_NOT_FOUND);
    expect_ok("LeaveWaitingRoom", leave(&rsv_a, arena, got[0]->ticket, &err), &err);
    u = watch_next(w, arena);
    assert_int_equal(u->position, 0);
    assert_true(strlen(u->admission_token) > 0);
    watch_ends(w, arena, SVC_OK);
}

static const char *const env[] = {key_env, "ROOM_PLACE_MS=" PLACE_MS_TEXT, NULL};
static const rsv_instance_spec_t instances[] = {
    {&rsv_a, "reservation", env},
    {&rsv_b, "reservation", env},
};

static int
setup(void **state)
{
    int fd = mkstemp(key_path);

    (void)state;
    if (fd < 0 || write(fd, KEY, strlen(KEY)) != (ssize_t)strlen(KEY)) {
        return -1;
    }
    close(fd);
    snprintf(key_env, sizeof(key_env), "ADMISSION_KEY_FILE=%s", key_path);
    return rsv_fixture_start_with(instances, 2);
}

static int
teardown(void **state)
{
    (void)state;
    unlink(key_path);
    return rsv_fixture_stop_with(instances, 2);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        RSV_ARENA_TEST(test_schedule_settings),         RSV_ARENA_TEST(test_hold_needs_admission),
        RSV_ARENA_TEST(test_default_admission_ttl),     RSV_ARENA_TEST(test_enter_and_leave),
        RSV_ARENA_TEST(test_paying_ends_the_admission), RSV_ARENA_TEST(test_watch_pushes_positions),
        RSV_ARENA_TEST(test_watching_keeps_the_place),
    };

    if (rsv_fixture_main_args(argc, argv) != 0) {
        return 2;
    }
    return testenv_group_result(
        cmocka_run_group_tests(tests, setup, testenv_group_teardown(teardown)));
}
