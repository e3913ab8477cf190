/*
 * test_reservation_auth.c: reservation-svc with caller identity on
 * (AUTH_JWT_KEY_FILE holding an EC P-256 public key: ES256), on tokens
 * minted here. A user's own token holds, reads, pays and cancels; another
 * user's token is PERMISSION_DENIED on each of them (GetReservation too),
 * and the reservation, its seats and the payer's balance are read back
 * from the databases unchanged; a missing or bad token is UNAUTHENTICATED;
 * the waiting room is the ticket owner's only; CreateConcert keeps the
 * admin token. argv: reservation-svc, balance-svc, lock-svc.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rsv_fixture.h"
#include "svc/timer.h"
#include "testjwt.h"

#define TIMEOUT_MS 30000
#define PRICE 1000

static rsv_instance_t inst;
static EVP_PKEY *key, *other_key;
static char key_dir[] = "/tmp/test-reservation-auth.XXXXXX";
static char key_env[300];

static int64_t
now_s(void)
{
    return svc_now_unix_ms() / 1000;
}

/* "Bearer <a good ES256 token of user>", in arena. */
static const char *
bearer_of(svc_arena_t *arena, int64_t user)
{
    char sub[32], *b;
    const char *out;

    snprintf(sub, sizeof(sub), "%" PRId64, user);
    b = testjwt_bearer(testjwt_token("ES256", key, sub, now_s(), 300, 0, NULL, NULL));
    assert_non_null(b);
    out = svc_arena_strdup(arena, b);
    free(b);
    return out;
}

static int
hold_as(svc_arena_t *arena, const char *auth, int64_t user, int64_t schedule_id, int32_t seat,
        reservation_t **res, svc_err_t *err)
{
    Reservation__V1__HoldSeatsRequest req = RESERVATION__V1__HOLD_SEATS_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    int rc;

    req.user_id = user;
    req.schedule_id = schedule_id;
    req.seat_numbers = &seat;
    req.n_seat_numbers = 1;
    rc = rsv_call(&inst, "HoldSeats", &req.base, &reservation__v1__hold_seats_response__descriptor,
                  arena, &out, auth, TIMEOUT_MS, err);
    if (rc == 0 && res != NULL) {
        *res = ((Reservation__V1__HoldSeatsResponse *)out)->reservation;
    }
    return rc;
}

static int
get_as(svc_arena_t *arena, const char *auth, int64_t id, reservation_t **res, svc_err_t *err)
{
    Reservation__V1__GetReservationRequest req = RESERVATION__V1__GET_RESERVATION_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    int rc;

    req.reservation_id = id;
    rc = rsv_call(&inst, "GetReservation", &req.base,
                  &reservation__v1__get_reservation_response__descriptor, arena, &out, auth,
                  TIMEOUT_MS, err);
    if (rc == 0 && res != NULL) {
        *res = ((Reservation__V1__GetReservationResponse *)out)->reservation;
    }
    return rc;
}

static int
cancel_as(svc_arena_t *arena, const char *auth, int64_t id, int64_t user, svc_err_t *err)
{
    Reservation__V1__CancelReservationRequest req =
        RESERVATION__V1__CANCEL_RESERVATION_REQUEST__INIT;
    ProtobufCMessage *out = NULL;

    req.reservation_id = id;
    req.user_id = user;
    return rsv_call(&inst, "CancelReservation", &req.base,
                    &reservation__v1__cancel_reservation_response__descriptor, arena, &out, auth,
                    TIMEOUT_MS, err);
}

static int
pay_as(svc_arena_t *arena, const char *auth, int64_t id, int64_t user, svc_err_t *err)
{
    Reservation__V1__PayReservationRequest req = RESERVATION__V1__PAY_RESERVATION_REQUEST__INIT;
    ProtobufCMessage *out = NULL;

    req.reservation_id = id;
    req.user_id = user;
    req.idempotency_key = "pay";
    return rsv_call(&inst, "PayReservation", &req.base,
                    &reservation__v1__pay_reservation_response__descriptor, arena, &out, auth,
                    TIMEOUT_MS, err);
}

/* The reservation's status and its seat's, as stored. */
static int64_t
db_status(int64_t id)
{
    return db_int(&inst.db, "SELECT status FROM reservations WHERE id = %" PRId64, id);
}

static int64_t
db_seat_holder(int64_t schedule_id, int32_t seat)
{
    return db_int(&inst.db,
                  "SELECT coalesce(hold_user_id, 0) * 10 + status FROM seats"
                  " WHERE schedule_id = %" PRId64 " AND number = %d",
                  schedule_id, (int)seat);
}

static void
test_owner_holds_reads_pays(void **state)
{
    svc_arena_t *arena = *state;
    int64_t user = rsv_funded_user(10 * PRICE);
    int64_t schedule = rsv_new_schedule(&inst, arena, 10, PRICE);
    const char *auth = bearer_of(arena, user);
    reservation_t *res = NULL, *got = NULL;
    svc_err_t err;

    expect_ok("hold", hold_as(arena, auth, user, schedule, 1, &res, &err), &err);
    expect_ok("get", get_as(arena, auth, res->id, &got, &err), &err);
    assert_int_equal(got->user_id, user);
    expect_ok("pay", pay_as(arena, auth, res->id, user, &err), &err);
    assert_int_equal(db_status(res->id), RES_CONFIRMED);
    assert_int_equal(db_balance_of(user), 9 * PRICE);
    /* Reads that name no user stay open. */
    (void)rsv_list_seats(&inst, arena, schedule, false);
}

static void
test_stranger_cannot_get(void **state)
{
    svc_arena_t *arena = *state;
    int64_t owner = rsv_funded_user(PRICE), stranger = rsv_funded_user(PRICE);
    int64_t schedule = rsv_new_schedule(&inst, arena, 10, PRICE);
    reservation_t *res = NULL, *got = NULL;
    svc_err_t err;

    expect_ok("hold", hold_as(arena, bearer_of(arena, owner), owner, schedule, 2, &res, &err),
              &err);
    expect_code("stranger's get", get_as(arena, bearer_of(arena, stranger), res->id, &got, &err),
                &err, SVC_PERMISSION_DENIED);
    assert_null(strstr(err.msg, "user_id"));
    expect_code("get without a token", get_as(arena, NULL, res->id, &got, &err), &err,
                SVC_UNAUTHENTICATED);
    /* Nothing is read for an unauthenticated caller: an unknown id answers the same. */
    expect_code("get of an unknown id without a token", get_as(arena, NULL, 999999999, &got, &err),
                &err, SVC_UNAUTHENTICATED);
    expect_code("get of an unknown id",
                get_as(arena, bearer_of(arena, stranger), 999999999, &got, &err), &err,
                SVC_NOT_FOUND);
}

static void
test_stranger_cannot_cancel(void **state)
{
    svc_arena_t *arena = *state;
    int64_t owner = rsv_funded_user(PRICE), stranger = rsv_funded_user(PRICE);
    int64_t schedule = rsv_new_schedule(&inst, arena, 10, PRICE);
    const char *mine = bearer_of(arena, owner), *theirs = bearer_of(arena, stranger);
    reservation_t *res = NULL;
    svc_err_t err;

    expect_ok("hold", hold_as(arena, mine, owner, schedule, 3, &res, &err), &err);
    /* The owner's id, typed by the stranger, is what used to free the hold. */
    expect_code("stranger's cancel as the owner", cancel_as(arena, theirs, res->id, owner, &err),
                &err, SVC_PERMISSION_DENIED);
    expect_code("stranger's cancel as itself", cancel_as(arena, theirs, res->id, stranger, &err),
                &err, SVC_PERMISSION_DENIED);
    expect_code("cancel without a token", cancel_as(arena, NULL, res->id, owner, &err), &err,
                SVC_UNAUTHENTICATED);
    /* Read back: still held, its seat still the owner's. */
    assert_int_equal(db_status(res->id), RES_HELD);
    assert_int_equal(db_seat_holder(schedule, 3), owner * 10 + SEAT_HELD);
    expect_ok("owner's cancel", cancel_as(arena, mine, res->id, owner, &err), &err);
    assert_int_equal(db_status(res->id), RES_CANCELLED);
    assert_int_equal(db_seat_holder(schedule, 3), SEAT_AVAILABLE);
}

static void
test_stranger_cannot_pay_or_hold_for_another(void **state)
{
    svc_arena_t *arena = *state;
    int64_t owner = rsv_funded_user(5 * PRICE), stranger = rsv_funded_user(PRICE);
    int64_t schedule = rsv_new_schedule(&inst, arena, 10, PRICE);
    const char *mine = bearer_of(arena, owner), *theirs = bearer_of(arena, stranger);
    reservation_t *res = NULL;
    svc_err_t err;

    expect_ok("hold", hold_as(arena, mine, owner, schedule, 4, &res, &err), &err);
    expect_code("stranger pays as the owner", pay_as(arena, theirs, res->id, owner, &err), &err,
                SVC_PERMISSION_DENIED);
    assert_int_equal(db_status(res->id), RES_HELD);
    assert_int_equal(db_balance_of(owner), 5 * PRICE);
    /* Holding seats in someone else's name. */
    expect_code("stranger holds for the owner",
                hold_as(arena, theirs, owner, schedule, 5, NULL, &err), &err,
                SVC_PERMISSION_DENIED);
    assert_int_equal(db_seat_holder(schedule, 5), SEAT_AVAILABLE);
    assert_int_equal(
        db_int(&inst.db, "SELECT count(*) FROM reservations WHERE user_id = %" PRId64, owner), 1);
}

/* Expects HoldSeats of seat with auth refused UNAUTHENTICATED and the seat still free. */
static void
expect_unauthenticated(svc_arena_t *arena, int64_t user, int64_t schedule, int32_t seat, char *auth,
                       const char *what)
{
    const char *a = auth != NULL ? svc_arena_strdup(arena, auth) : NULL;
    svc_err_t err;

    free(auth);
    if (hold_as(arena, a, user, schedule, seat, NULL, &err) != -1 ||
        err.code != SVC_UNAUTHENTICATED) {
        fail_msg("%s: HoldSeats answered %s (%s), want UNAUTHENTICATED", what,
                 svc_status_name(err.code), err.msg);
    }
    assert_int_equal(db_seat_holder(schedule, seat), SEAT_AVAILABLE);
}

static void
test_bad_tokens_unauthenticated(void **state)
{
    svc_arena_t *arena = *state;
    int64_t user = rsv_funded_user(PRICE), t = now_s();
    int64_t schedule = rsv_new_schedule(&inst, arena, 10, PRICE);
    char sub[32], payload[160], *pem;
    size_t pem_len = 0;

    snprintf(sub, sizeof(sub), "%" PRId64, user);
    snprintf(payload, sizeof(payload), "{\"sub\":\"%s\",\"exp\":%" PRId64 "}", sub, t + 300);
    expect_unauthenticated(arena, user, schedule, 6, NULL, "missing");
    expect_unauthenticated(arena, user, schedule, 6, strdup("Bearer x.y.z"), "garbage");
    /* The admin token is no user token. */
    expect_unauthenticated(arena, user, schedule, 6, strdup(FIXTURE_ADMIN_AUTH), "admin token");
    expect_unauthenticated(
        arena, user, schedule, 6,
        testjwt_bearer(testjwt_token("ES256", key, sub, t - 7200, 3600, 0, NULL, NULL)), "expired");
    expect_unauthenticated(
        arena, user, schedule, 6,
        testjwt_bearer(testjwt_token("ES256", key, sub, t, 7200, 3600, NULL, NULL)),
        "not yet valid");
    expect_unauthenticated(
        arena, user, schedule, 6,
        testjwt_bearer(testjwt_token("ES256", other_key, sub, t, 300, 0, NULL, NULL)),
        "wrong signature");
    expect_unauthenticated(
        arena, user, schedule, 6,
        testjwt_bearer(testjwt_sign("none", NULL, NULL, 0, "{\"alg\":\"none\"}", payload)),
        "alg none");
    pem = testjwt_public_pem(key, &pem_len);
    assert_non_null(pem);
    expect_unauthenticated(
        arena, user, schedule, 6,
        testjwt_bearer(testjwt_sign("HS256", NULL, pem, pem_len, "{\"alg\":\"HS256\"}", payload)),
        "HS256 with the public key");
    free(pem);
}

static int
enter_as(svc_arena_t *arena, const char *auth, int64_t user, int64_t schedule,
         Reservation__V1__EnterWaitingRoomResponse **resp, svc_err_t *err)
{
    Reservation__V1__EnterWaitingRoomRequest req =
        RESERVATION__V1__ENTER_WAITING_ROOM_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    int rc;

    req.user_id = user;
    req.schedule_id = schedule;
    rc = rsv_call(&inst, "EnterWaitingRoom", &req.base,
                  &reservation__v1__enter_waiting_room_response__descriptor, arena, &out, auth,
                  TIMEOUT_MS, err);
    if (rc == 0) {
        *resp = (Reservation__V1__EnterWaitingRoomResponse *)out;
    }
    return rc;
}

static int
leave_as(svc_arena_t *arena, const char *auth, const char *ticket, svc_err_t *err)
{
    Reservation__V1__LeaveWaitingRoomRequest req =
        RESERVATION__V1__LEAVE_WAITING_ROOM_REQUEST__INIT;
    ProtobufCMessage *out = NULL;

    req.ticket = (char *)ticket;
    return rsv_call(&inst, "LeaveWaitingRoom", &req.base,
                    &reservation__v1__leave_waiting_room_response__descriptor, arena, &out, auth,
                    TIMEOUT_MS, err);
}

static void
test_waiting_room_is_the_owners(void **state)
{
    svc_arena_t *arena = *state;
    int64_t owner = rsv_funded_user(PRICE), stranger = rsv_funded_user(PRICE);
    Reservation__V1__ScheduleSpec **specs =
        rsv_specs(arena, 1, svc_now_unix_ms() + FIXTURE_DAY_MS, 10, PRICE);
    const char *mine = bearer_of(arena, owner), *theirs = bearer_of(arena, stranger);
    Reservation__V1__Concert *concert = NULL;
    Reservation__V1__EnterWaitingRoomResponse *in = NULL, *again = NULL;
    svc_err_t err;
    int64_t schedule;

    specs[0]->waiting_room_limit = 1;
    expect_ok(
        "CreateConcert",
        rsv_create_concert(&inst, arena, "room", specs, 1, FIXTURE_ADMIN_AUTH, &concert, &err),
        &err);
    schedule = concert->schedules[0]->id;
    /* CreateConcert still wants the admin token, not a user's. */
    expect_code("CreateConcert with a user token",
                rsv_create_concert(&inst, arena, "x", specs, 1, mine, &concert, &err), &err,
                SVC_PERMISSION_DENIED);
    expect_code("stranger enters for the owner",
                enter_as(arena, theirs, owner, schedule, &in, &err), &err, SVC_PERMISSION_DENIED);
    expect_ok("owner enters", enter_as(arena, mine, owner, schedule, &in, &err), &err);
    assert_int_equal(in->position, 0);
    expect_code("stranger leaves the owner's ticket", leave_as(arena, theirs, in->ticket, &err),
                &err, SVC_PERMISSION_DENIED);
    /* Still admitted: entering again gives the same ticket, at the front. */
    expect_ok("owner enters again", enter_as(arena, mine, owner, schedule, &again, &err), &err);
    assert_string_equal(again->ticket, in->ticket);
    assert_int_equal(again->position, 0);
    expect_ok("owner leaves", leave_as(arena, mine, in->ticket, &err), &err);
}

static int
setup(void **state)
{
    const char *env[] = {key_env, NULL};
    const rsv_instance_spec_t spec = {&inst, "reservation", env};

    (void)state;
    return rsv_fixture_start_with(&spec, 1);
}

static int
teardown(void **state)
{
    const rsv_instance_spec_t spec = {&inst, "reservation", NULL};

    (void)state;
    return rsv_fixture_stop_with(&spec, 1);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        RSV_ARENA_TEST(test_owner_holds_reads_pays),
        RSV_ARENA_TEST(test_stranger_cannot_get),
        RSV_ARENA_TEST(test_stranger_cannot_cancel),
        RSV_ARENA_TEST(test_stranger_cannot_pay_or_hold_for_another),
        RSV_ARENA_TEST(test_bad_tokens_unauthenticated),
        RSV_ARENA_TEST(test_waiting_room_is_the_owners),
    };
    char path[256], cmd[300];
    int rc;

    if (rsv_fixture_main_args(argc, argv) != 0) {
        return 2;
    }
    key = testjwt_ec_key("P-256");
    other_key = testjwt_ec_key("P-256");
    if (key == NULL || other_key == NULL || mkdtemp(key_dir) == NULL) {
        fprintf(stderr, "test_reservation_auth: cannot make keys\n");
        return 1;
    }
    snprintf(path, sizeof(path), "%s/jwt.pem", key_dir);
    if (testjwt_write_public(key, path) != 0) {
        fprintf(stderr, "test_reservation_auth: cannot write %s\n", path);
        return 1;
    }
    snprintf(key_env, sizeof(key_env), "AUTH_JWT_KEY_FILE=%s", path);
    rc = testenv_group_result(
        cmocka_run_group_tests(tests, setup, testenv_group_teardown(teardown)));
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", key_dir);
    if (system(cmd) != 0 && rc == 0) {
        rc = 1;
    }
    EVP_PKEY_free(key);
    EVP_PKEY_free(other_key);
    return rc;
}
