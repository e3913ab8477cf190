/*
 * test_reservation_request_id.c: one request followed through the logs of
 * the three services by its x-request-id. Every service runs at
 * LOG_LEVEL=debug; a HoldSeats and a PayReservation are sent with ids of
 * their own, and the JSON lines each service wrote are read back: lock-svc
 * logged the Acquire and the Release of every seat of the hold, and of
 * balance-svc's account lock during the payment, with the id of the call
 * they were made for; balance-svc logged the hold's account check and the
 * payment's Authorize and Capture with it; and every line reservation-svc
 * and balance-svc wrote while serving a call, on whatever thread, names
 * that call's method and request id.
 * argv: reservation-svc, balance-svc, lock-svc.
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

#include "rsv_fixture.h"
#include "svc/timer.h"

#define CALL_TIMEOUT_MS 30000
#define LOG_WAIT_MS 10000 /* lock releases are sent without waiting for them */

#define RSV_METHOD(m) "/reservation.v1.ReservationService/" m
#define LOCK_METHOD(m) "/lock.v1.LockService/" m
#define BALANCE_METHOD(m) "/balance.v1.BalanceService/" m

static rsv_instance_t rsv;

/* ---------- reading the logs ---------- */

/* The whole file at path (freed by the caller); "" when it cannot be read. */
static char *
read_log(const char *path)
{
    FILE *f = fopen(path, "r");
    char *text = NULL;
    size_t len = 0;

    if (f != NULL) {
        FILE *mem = open_memstream(&text, &len);
        char buf[65536];
        size_t n;
        assert_non_null(mem);
        while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
            fwrite(buf, 1, n, mem);
        }
        fclose(mem);
        fclose(f);
    }
    return text != NULL ? text : strdup("");
}

/*
 * The string value of key in one JSON line as the logger writes it (a flat
 * object), copied into out with its escapes left as they are. 1 when key
 * has a string value; 0 when it is absent, null or a number. A key is found
 * only as a member: inside a string value every quote is escaped.
 */
static int
json_str(const char *line, const char *key, char *out, size_t cap)
{
    char pattern[64];
    const char *p, *end = strchr(line, '\n');
    size_t n = 0;

    snprintf(pattern, sizeof(pattern), "\"%s\":", key);
    for (p = strstr(line, pattern); p != NULL && (end == NULL || p < end);
         p = strstr(p + 1, pattern)) {
        if (p[-1] == ',' || p[-1] == '{') {
            break;
        }
    }
    if (p == NULL || (end != NULL && p >= end)) {
        return 0;
    }
    p += strlen(pattern);
    if (*p != '"') {
        return 0;
    }
    for (p++; *p != '"' && *p != '\0' && *p != '\n'; p++) {
        if (*p == '\\' && p[1] != '\0') {
            if (n + 1 < cap) {
                out[n++] = *p;
            }
            p++;
        }
        if (n + 1 < cap) {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    return 1;
}

/* Calls fn on each line of text; stops and returns early when fn returns non-zero. */
static int
each_line(char *text, int (*fn)(const char *line, void *arg), void *arg)
{
    for (char *line = text, *next; line != NULL && *line != '\0'; line = next) {
        int rc;
        next = strchr(line, '\n');
        if (next != NULL) {
            *next = '\0';
        }
        rc = fn(line, arg);
        if (next != NULL) {
            *next++ = '\n';
        }
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* Lines with this method and request id, and how many of them are not access lines. */
typedef struct {
    const char *method; /* NULL: any */
    const char *request_id;
    int calls, others;
} count_t;

static int
count_line(const char *line, void *arg)
{
    count_t *c = arg;
    char method[128], rid[80], status[40];

    if (json_str(line, "request_id", rid, sizeof(rid)) && strcmp(rid, c->request_id) == 0 &&
        json_str(line, "method", method, sizeof(method)) &&
        (c->method == NULL || strcmp(method, c->method) == 0)) {
        if (json_str(line, "status", status, sizeof(status))) {
            c->calls++;
        } else {
            c->others++;
        }
    }
    return 0;
}

/* count_t for method and request_id over the log at path. */
static count_t
count_lines(const char *path, const char *method, const char *request_id)
{
    count_t c = {.method = method, .request_id = request_id};
    char *text = read_log(path);

    each_line(text, count_line, &c);
    free(text);
    return c;
}

/* Access lines (those with a status) of method with request_id in the log at path. */
static int
calls_logged(const char *path, const char *method, const char *request_id)
{
    return count_lines(path, method, request_id).calls;
}

/*
 * Every line after start-up ("<service> ready") must name the call it was
 * written for: the only work of the service here is serving calls.
 */
typedef struct {
    const char *service;
    bool started;
    int checked;
    char *bad; /* the first line without them (malloc'd) */
} serving_t;

static int
check_serving_line(const char *line, void *arg)
{
    serving_t *s = arg;
    char msg[512], method[128], rid[80], ready[64];

    snprintf(ready, sizeof(ready), "%s ready", s->service);
    if (!s->started) {
        s->started = json_str(line, "msg", msg, sizeof(msg)) && strcmp(msg, ready) == 0;
        return 0;
    }
    if (!json_str(line, "method", method, sizeof(method)) ||
        !json_str(line, "request_id", rid, sizeof(rid))) {
        s->bad = strdup(line);
        return 1;
    }
    s->checked++;
    return 0;
}

static void
expect_every_line_names_its_call(const char *path, const char *service)
{
    serving_t s = {.service = service};
    char *text = read_log(path);

    each_line(text, check_serving_line, &s);
    free(text);
    if (s.bad != NULL) {
        char line[1024];
        snprintf(line, sizeof(line), "%s", s.bad);
        free(s.bad);
        fail_msg("%s wrote a line without method and request_id while serving: %s", service, line);
    }
    if (!s.started) {
        fail_msg("%s's log has no \"%s ready\" line", service, service);
    }
    assert_true(s.checked > 0);
}

/* Waits until the log at path holds at least want access lines of method with request_id. */
static void
wait_for_calls(const char *path, const char *method, const char *request_id, int want)
{
    int64_t until = svc_now_mono_ms() + LOG_WAIT_MS;
    int got;

    while ((got = calls_logged(path, method, request_id)) < want && svc_now_mono_ms() < until) {
        svc_sleep_ms(50);
    }
    if (got < want) {
        fail_msg("%s: %d lines of %s with request_id %s, expected %d", path, got, method,
                 request_id, want);
    }
}

/*
 * Exactly want access lines of method with request_id in the log at path.
 * A server writes a call's access line after its answer went out, so the
 * caller may read the log before the line is there: wait for it first.
 */
static void
expect_calls(const char *path, const char *method, const char *request_id, int want)
{
    wait_for_calls(path, method, request_id, want);
    assert_int_equal(calls_logged(path, method, request_id), want);
}

/* ---------- calls with an x-request-id of our own ---------- */

static int
call_with_id(const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *desc, svc_arena_t *arena, ProtobufCMessage **out,
             const char *request_id, svc_err_t *err)
{
    svc_call_opts_t opts = {.timeout_ms = CALL_TIMEOUT_MS, .request_id = request_id};

    return svc_client_unary(rsv.client, method, req, desc, arena, out, &opts, err);
}

/* A request id of our own for what: "<what>-<pid>-<ms>". */
static void
new_id(char *out, size_t len, const char *what)
{
    static int n;

    snprintf(out, len, "%s-%d-%" PRId64 "-%d", what, (int)getpid(), svc_now_unix_ms(), ++n);
}

/* ---------- the tests ---------- */

static void
test_request_id_reaches_every_hop(void **state)
{
    static const int32_t seats[2] = {3, 5};
    svc_arena_t *arena = *state;
    int64_t sched = rsv_new_schedule(&rsv, arena, 8, 1500), user = rsv_funded_user(10000);
    Reservation__V1__HoldSeatsRequest hold = RESERVATION__V1__HOLD_SEATS_REQUEST__INIT;
    Reservation__V1__PayReservationRequest pay = RESERVATION__V1__PAY_RESERVATION_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    reservation_t *held;
    char hold_id[64], pay_id[64];
    count_t c;
    svc_err_t err;

    new_id(hold_id, sizeof(hold_id), "hold");
    new_id(pay_id, sizeof(pay_id), "pay");

    hold.user_id = user;
    hold.schedule_id = sched;
    hold.seat_numbers = (int32_t *)seats;
    hold.n_seat_numbers = 2;
    expect_ok("HoldSeats",
              call_with_id(RSV_METHOD("HoldSeats"), &hold.base,
                           &reservation__v1__hold_seats_response__descriptor, arena, &out, hold_id,
                           &err),
              &err);
    held = ((Reservation__V1__HoldSeatsResponse *)out)->reservation;
    assert_non_null(held);

    pay.reservation_id = held->id;
    pay.user_id = user;
    pay.idempotency_key = "request-id-test";
    expect_ok("PayReservation",
              call_with_id(RSV_METHOD("PayReservation"), &pay.base,
                           &reservation__v1__pay_reservation_response__descriptor, arena, &out,
                           pay_id, &err),
              &err);

    /* lock-svc: each seat taken and given back for the hold, under the hold's id. */
    expect_calls(rsv_stack.lock.log_path, LOCK_METHOD("Release"), hold_id, 2);
    expect_calls(rsv_stack.lock.log_path, LOCK_METHOD("Acquire"), hold_id, 2);
    /* balance-svc's account lock, taken and given back for Authorize and for Capture. */
    expect_calls(rsv_stack.lock.log_path, LOCK_METHOD("Release"), pay_id, 2);
    expect_calls(rsv_stack.lock.log_path, LOCK_METHOD("Acquire"), pay_id, 2);

    /* balance-svc: the hold's account check, the payment's two phases. */
    expect_calls(rsv_stack.balance.log_path, BALANCE_METHOD("GetBalance"), hold_id, 1);
    expect_calls(rsv_stack.balance.log_path, BALANCE_METHOD("Authorize"), pay_id, 1);
    expect_calls(rsv_stack.balance.log_path, BALANCE_METHOD("Capture"), pay_id, 1);
    /* ...and its batches' lines name the call whose id they sent to lock-svc. */
    c = count_lines(rsv_stack.balance.log_path, NULL, pay_id);
    if (c.others < 2) {
        fail_msg("balance-svc wrote %d lines for the payment's batches with its request_id, "
                 "expected 2",
                 c.others);
    }

    /* reservation-svc: the hold's steps on the client thread and the pool, the payment's. */
    expect_calls(rsv.proc.log_path, RSV_METHOD("HoldSeats"), hold_id, 1);
    c = count_lines(rsv.proc.log_path, RSV_METHOD("HoldSeats"), hold_id);
    if (c.others < 2) {
        fail_msg("reservation-svc wrote %d lines for the hold with its method and request_id, "
                 "expected 2 (seats locked, hold written)",
                 c.others);
    }
    expect_calls(rsv.proc.log_path, RSV_METHOD("PayReservation"), pay_id, 1);
    c = count_lines(rsv.proc.log_path, RSV_METHOD("PayReservation"), pay_id);
    if (c.others < 2) {
        fail_msg("reservation-svc wrote %d lines for the payment with its method and request_id, "
                 "expected 2 (PENDING -> CAPTURING -> CHARGED)",
                 c.others);
    }

    expect_every_line_names_its_call(rsv.proc.log_path, "reservation-svc");
    expect_every_line_names_its_call(rsv_stack.balance.log_path, "balance-svc");
}

/*
 * The other hops: lock-svc's semaphore of a waiting room (entered, given up
 * when the hold is paid, left), and the refund of a cancel with balance-svc's
 * account lock, each under the id of the call that made it.
 */
static void
test_request_id_through_room_and_cancel(void **state)
{
    static const int32_t seat = 4;
    svc_arena_t *arena = *state;
    Reservation__V1__ScheduleSpec **specs =
        rsv_specs(arena, 1, svc_now_unix_ms() + FIXTURE_DAY_MS, 8, 700);
    Reservation__V1__Concert *concert = NULL;
    Reservation__V1__EnterWaitingRoomRequest enter =
        RESERVATION__V1__ENTER_WAITING_ROOM_REQUEST__INIT;
    Reservation__V1__EnterWaitingRoomResponse *admitted;
    Reservation__V1__HoldSeatsRequest hold = RESERVATION__V1__HOLD_SEATS_REQUEST__INIT;
    Reservation__V1__PayReservationRequest pay = RESERVATION__V1__PAY_RESERVATION_REQUEST__INIT;
    Reservation__V1__CancelReservationRequest cancel =
        RESERVATION__V1__CANCEL_RESERVATION_REQUEST__INIT;
    Reservation__V1__LeaveWaitingRoomRequest leave =
        RESERVATION__V1__LEAVE_WAITING_ROOM_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    reservation_t *held;
    int64_t user = rsv_funded_user(10000);
    char enter_id[64], hold_id[64], pay_id[64], cancel_id[64], leave_id[64];
    svc_err_t err;

    new_id(enter_id, sizeof(enter_id), "enter");
    new_id(hold_id, sizeof(hold_id), "hold");
    new_id(pay_id, sizeof(pay_id), "pay");
    new_id(cancel_id, sizeof(cancel_id), "cancel");
    new_id(leave_id, sizeof(leave_id), "leave");
    specs[0]->waiting_room_limit = 5;
    specs[0]->admission_ttl_ms = 60000;
    expect_ok(
        "CreateConcert with a waiting room",
        rsv_create_concert(&rsv, arena, "request-id", specs, 1, FIXTURE_ADMIN_AUTH, &concert, &err),
        &err);

    enter.user_id = user;
    enter.schedule_id = concert->schedules[0]->id;
    expect_ok("EnterWaitingRoom",
              call_with_id(RSV_METHOD("EnterWaitingRoom"), &enter.base,
                           &reservation__v1__enter_waiting_room_response__descriptor, arena, &out,
                           enter_id, &err),
              &err);
    admitted = (Reservation__V1__EnterWaitingRoomResponse *)out;
    assert_int_equal(admitted->position, 0);
    hold.user_id = user;
    hold.schedule_id = enter.schedule_id;
    hold.seat_numbers = (int32_t *)&seat;
    hold.n_seat_numbers = 1;
    hold.admission_token = admitted->admission_token;
    expect_ok("HoldSeats admitted",
              call_with_id(RSV_METHOD("HoldSeats"), &hold.base,
                           &reservation__v1__hold_seats_response__descriptor, arena, &out, hold_id,
                           &err),
              &err);
    held = ((Reservation__V1__HoldSeatsResponse *)out)->reservation;
    pay.reservation_id = held->id;
    pay.user_id = user;
    pay.idempotency_key = "request-id-room";
    expect_ok("PayReservation",
              call_with_id(RSV_METHOD("PayReservation"), &pay.base,
                           &reservation__v1__pay_reservation_response__descriptor, arena, &out,
                           pay_id, &err),
              &err);
    cancel.reservation_id = held->id;
    cancel.user_id = user;
    expect_ok("CancelReservation",
              call_with_id(RSV_METHOD("CancelReservation"), &cancel.base,
                           &reservation__v1__cancel_reservation_response__descriptor, arena, &out,
                           cancel_id, &err),
              &err);
    leave.ticket = admitted->ticket;
    expect_ok("LeaveWaitingRoom",
              call_with_id(RSV_METHOD("LeaveWaitingRoom"), &leave.base,
                           &reservation__v1__leave_waiting_room_response__descriptor, arena, &out,
                           leave_id, &err),
              &err);

    expect_calls(rsv_stack.lock.log_path, LOCK_METHOD("EnterSemaphore"), enter_id, 1);
    expect_calls(rsv_stack.lock.log_path, LOCK_METHOD("Acquire"), hold_id, 1);
    expect_calls(rsv_stack.lock.log_path, LOCK_METHOD("Release"), hold_id, 1);
    expect_calls(rsv_stack.lock.log_path, LOCK_METHOD("LeaveSemaphore"), pay_id, 1);
    expect_calls(rsv_stack.lock.log_path, LOCK_METHOD("LeaveSemaphore"), leave_id, 1);
    expect_calls(rsv_stack.balance.log_path, BALANCE_METHOD("Refund"), cancel_id, 1);
    expect_calls(rsv_stack.lock.log_path, LOCK_METHOD("Release"), cancel_id, 1);
    expect_calls(rsv_stack.lock.log_path, LOCK_METHOD("Acquire"), cancel_id, 1);

    expect_every_line_names_its_call(rsv.proc.log_path, "reservation-svc");
    expect_every_line_names_its_call(rsv_stack.balance.log_path, "balance-svc");
}

/* The sweeper stays quiet: the lines checked are the calls'. */
static char key_path[] = "/tmp/rsv-request-id-key-XXXXXX";
static char key_env[64];
static const char *const rsv_env[] = {"SWEEP_MS=600000", key_env, NULL};
static const rsv_instance_spec_t instances[] = {{&rsv, "reservation", rsv_env}};

static int
setup(void **state)
{
    static const char key[] = "request-id-test-key-0123456789abcdef";
    int fd = mkstemp(key_path);

    (void)state;
    if (fd < 0 || write(fd, key, strlen(key)) != (ssize_t)strlen(key)) {
        return -1;
    }
    close(fd);
    snprintf(key_env, sizeof(key_env), "ADMISSION_KEY_FILE=%s", key_path);
    rsv_stack.log_level = "debug";
    return rsv_fixture_start_with(instances, 1);
}

static int
teardown(void **state)
{
    (void)state;
    unlink(key_path);
    return rsv_fixture_stop_with(instances, 1);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        RSV_ARENA_TEST(test_request_id_reaches_every_hop),
        RSV_ARENA_TEST(test_request_id_through_room_and_cancel),
    };

    if (rsv_fixture_main_args(argc, argv) != 0) {
        return 2;
    }
    return testenv_group_result(
        cmocka_run_group_tests(tests, setup, testenv_group_teardown(teardown)));
}
