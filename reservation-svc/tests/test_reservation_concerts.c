/*
 * test_reservation_concerts.c: CreateConcert, ListConcerts and ListSeats of
 * reservation-svc over real gRPC: admin-only creation, every invalid input
 * (a schedule starting in the past among them), what the lists show, and
 * that a refused CreateConcert leaves nothing in the database.
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
#include <sys/wait.h>

#include <cmocka.h>

#include "rsv_fixture.h"
#include "svc/timer.h"

static rsv_instance_t main_rsv;

/* Rows of table (concerts, schedules, seats) in main_rsv's database. */
static int64_t
db_rows(const char *table)
{
    return db_int(&main_rsv.db, "SELECT count(*) FROM %s", table);
}

/* ---------- CreateConcert, ListConcerts, ListSeats ---------- */

static void
test_create_concert_needs_admin_token(void **state)
{
    static const char *const bad_auth[] = {
        "Bearer wrong-token",
        "Bearer test-admin-token-0123456789abcde",
        "Bearer test-admin-token-0123456789abcdef-extra",
        "Bearer test-admin-token-0123456789abcdeF",
        "Bearer ",
        "test-admin-token-0123456789abcdef",
        "Basic test-admin-token-0123456789abcdef",
        "bearer test-admin-token-0123456789abcdef",
    };
    svc_arena_t *arena = *state;
    size_t before = rsv_list_concerts(&main_rsv, arena)->n_concerts;
    Reservation__V1__ScheduleSpec **specs =
        rsv_specs(arena, 1, svc_now_unix_ms() + FIXTURE_DAY_MS, 10, 100);
    char what[96];
    svc_err_t err;

    expect_code("CreateConcert without a token",
                rsv_create_concert(&main_rsv, arena, "no token", specs, 1, NULL, NULL, &err), &err,
                SVC_PERMISSION_DENIED);
    for (size_t i = 0; i < sizeof(bad_auth) / sizeof(bad_auth[0]); i++) {
        snprintf(what, sizeof(what), "CreateConcert with authorization \"%s\"", bad_auth[i]);
        expect_code(
            what,
            rsv_create_concert(&main_rsv, arena, "bad token", specs, 1, bad_auth[i], NULL, &err),
            &err, SVC_PERMISSION_DENIED);
    }
    assert_int_equal(rsv_list_concerts(&main_rsv, arena)->n_concerts, before);
}

/* Runs reservation-svc with settings that must stop it; its exit code, its output in out. */
static int
refused_start(const char *env, const char *args, char *out, size_t len)
{
    char cmd[2048], path[] = "/tmp/rsv-start-XXXXXX";
    int fd = mkstemp(path), rc;
    FILE *f;
    size_t n;

    assert_true(fd >= 0);
    close(fd);
    snprintf(cmd, sizeof(cmd),
             "env -u ADMIN_TOKEN -u ADMIN_TOKEN_FILE %s %s --listen-addr 127.0.0.1:0 %s >%s 2>&1",
             env, rsv_stack.reservation_path, args, path);
    rc = system(cmd);
    f = fopen(path, "r");
    n = f != NULL ? fread(out, 1, len - 1, f) : 0;
    out[n] = '\0';
    if (f != NULL) {
        fclose(f);
    }
    unlink(path);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* A short admin token, none, or one given as a flag (visible in ps) stops start-up, exit 2. */
static void
test_admin_token_rules_at_start(void **state)
{
    char out[4096];

    (void)state;
    assert_int_equal(refused_start("ADMIN_TOKEN=short-secret-value", "", out, sizeof(out)), 2);
    assert_non_null(strstr(out, "at least") != NULL ? out : strstr(out, "32 to"));
    assert_null(strstr(out, "short-secret-value"));
    assert_int_equal(refused_start("", "", out, sizeof(out)), 2);
    assert_non_null(strstr(out, "ADMIN_TOKEN"));
    assert_int_equal(
        refused_start("", "--admin-token test-admin-token-0123456789abcdef", out, sizeof(out)), 2);
    assert_int_equal(
        refused_start("ADMIN_TOKEN_FILE=/nonexistent/admin-token", "", out, sizeof(out)), 2);
    assert_non_null(strstr(out, "ADMIN_TOKEN_FILE"));
}

static void
test_create_concert_invalid_inputs(void **state)
{
    svc_arena_t *arena = *state;
    size_t before = rsv_list_concerts(&main_rsv, arena)->n_concerts;
    int64_t t = svc_now_unix_ms() + 86400000;
    svc_err_t err;

    expect_code("CreateConcert with an empty title",
                rsv_create_concert(&main_rsv, arena, "", rsv_specs(arena, 1, t, 10, 100), 1,
                                   FIXTURE_ADMIN_AUTH, NULL, &err),
                &err, SVC_INVALID_ARGUMENT);
    expect_code(
        "CreateConcert with 0 schedules",
        rsv_create_concert(&main_rsv, arena, "none", NULL, 0, FIXTURE_ADMIN_AUTH, NULL, &err), &err,
        SVC_INVALID_ARGUMENT);
    expect_code("CreateConcert with 101 schedules",
                rsv_create_concert(&main_rsv, arena, "too many", rsv_specs(arena, 101, t, 1, 100),
                                   101, FIXTURE_ADMIN_AUTH, NULL, &err),
                &err, SVC_INVALID_ARGUMENT);
    expect_code("CreateConcert with seat_count 0",
                rsv_create_concert(&main_rsv, arena, "no seats", rsv_specs(arena, 1, t, 0, 100), 1,
                                   FIXTURE_ADMIN_AUTH, NULL, &err),
                &err, SVC_INVALID_ARGUMENT);
    expect_code("CreateConcert with seat_count -1",
                rsv_create_concert(&main_rsv, arena, "negative seats",
                                   rsv_specs(arena, 1, t, -1, 100), 1, FIXTURE_ADMIN_AUTH, NULL,
                                   &err),
                &err, SVC_INVALID_ARGUMENT);
    expect_code("CreateConcert with seat_count 10001",
                rsv_create_concert(&main_rsv, arena, "too many seats",
                                   rsv_specs(arena, 1, t, 10001, 100), 1, FIXTURE_ADMIN_AUTH, NULL,
                                   &err),
                &err, SVC_INVALID_ARGUMENT);
    expect_code("CreateConcert with seat_price -1",
                rsv_create_concert(&main_rsv, arena, "negative price",
                                   rsv_specs(arena, 1, t, 10, -1), 1, FIXTURE_ADMIN_AUTH, NULL,
                                   &err),
                &err, SVC_INVALID_ARGUMENT);
    /* One bad schedule among good ones spoils the whole request. */
    Reservation__V1__ScheduleSpec **mixed = rsv_specs(arena, 3, t, 10, 100);
    mixed[2]->seat_count = 0;
    expect_code(
        "CreateConcert with one bad schedule of three",
        rsv_create_concert(&main_rsv, arena, "mixed", mixed, 3, FIXTURE_ADMIN_AUTH, NULL, &err),
        &err, SVC_INVALID_ARGUMENT);
    assert_int_equal(rsv_list_concerts(&main_rsv, arena)->n_concerts, before);
}

/*
 * A schedule that has already started could never be sold, and a confirmed
 * seat of it could never be cancelled: CreateConcert refuses it (the old
 * service created it), alone or among good schedules, and writes nothing.
 */
static void
test_create_concert_refuses_past_schedule(void **state)
{
    svc_arena_t *arena = *state;
    size_t before = rsv_list_concerts(&main_rsv, arena)->n_concerts;
    int64_t concerts = db_rows("concerts"), schedules = db_rows("schedules"),
            seats = db_rows("seats"), now = svc_now_unix_ms();
    Reservation__V1__ScheduleSpec **mixed = rsv_specs(arena, 3, now + FIXTURE_DAY_MS, 10, 100);
    Reservation__V1__Concert *concert = NULL;
    svc_err_t err;

    expect_code("CreateConcert of a schedule that started an hour ago",
                rsv_create_concert(&main_rsv, arena, "yesterday's news",
                                   rsv_specs(arena, 1, now - 3600000, 10, 100), 1,
                                   FIXTURE_ADMIN_AUTH, &concert, &err),
                &err, SVC_INVALID_ARGUMENT);
    expect_code("CreateConcert of a schedule starting at unix time 1",
                rsv_create_concert(&main_rsv, arena, "the epoch", rsv_specs(arena, 1, 1, 10, 100),
                                   1, FIXTURE_ADMIN_AUTH, &concert, &err),
                &err, SVC_INVALID_ARGUMENT);
    mixed[1]->starts_at_ms = now - 60000;
    expect_code("CreateConcert with one past schedule of three",
                rsv_create_concert(&main_rsv, arena, "mostly future", mixed, 3, FIXTURE_ADMIN_AUTH,
                                   &concert, &err),
                &err, SVC_INVALID_ARGUMENT);
    assert_int_equal(rsv_list_concerts(&main_rsv, arena)->n_concerts, before);
    assert_int_equal(db_rows("concerts"), concerts);
    assert_int_equal(db_rows("schedules"), schedules);
    assert_int_equal(db_rows("seats"), seats);

    /* A minute ahead is the future, and fine. */
    expect_ok("CreateConcert of a schedule a minute ahead",
              rsv_create_concert(&main_rsv, arena, "soon", rsv_specs(arena, 1, now + 60000, 3, 100),
                                 1, FIXTURE_ADMIN_AUTH, &concert, &err),
              &err);
    assert_int_equal(db_int(&main_rsv.db,
                            "SELECT count(*) FROM schedules WHERE concert_id = %" PRId64
                            " AND starts_at_ms = %" PRId64,
                            concert->id, now + 60000),
                     1);
}

/* Checks ListSeats of a new schedule: 1..n, all available, each at price. */
static void
check_fresh_seats(svc_arena_t *arena, int64_t schedule_id, int32_t seat_count, int64_t price)
{

    for (int available_only = 0; available_only <= 1; available_only++) {
        Reservation__V1__ListSeatsResponse *seats =
            rsv_list_seats(&main_rsv, arena, schedule_id, available_only);
        if (seats->n_seats != (size_t)seat_count) {
            fail_msg("schedule %" PRId64 " (available_only %d): %zu seats, expected %d",
                     schedule_id, available_only, seats->n_seats, seat_count);
        }
        for (size_t i = 0; i < seats->n_seats; i++) {
            Reservation__V1__Seat *s = seats->seats[i];
            assert_int_equal(s->number, (int32_t)i + 1);
            assert_int_equal(s->schedule_id, schedule_id);
            assert_int_equal(s->price, price);
            assert_int_equal(s->status, SEAT_AVAILABLE);
        }
    }
}

static void
test_create_concert_and_list(void **state)
{
    svc_arena_t *arena = *state;
    int64_t t = svc_now_unix_ms() + 7 * 86400000LL;
    Reservation__V1__ScheduleSpec **specs = rsv_specs(arena, 2, t, 0, 0);
    Reservation__V1__Concert *concert = NULL, *listed = NULL;
    Reservation__V1__ListConcertsResponse *all;
    Reservation__V1__ListSeatsResponse *none = NULL;
    svc_err_t err;

    /* Given latest first: the answer must list them in starts_at_ms order. */
    specs[0]->starts_at_ms = t + 7200000;
    specs[0]->seat_count = 30;
    specs[0]->seat_price = 15000;
    specs[1]->starts_at_ms = t + 3600000;
    specs[1]->seat_count = 12;
    specs[1]->seat_price = 9000;
    expect_ok("CreateConcert",
              rsv_create_concert(&main_rsv, arena, "Spring Tour, Seoul", specs, 2,
                                 FIXTURE_ADMIN_AUTH, &concert, &err),
              &err);
    assert_true(concert->id > 0);
    assert_string_equal(concert->title, "Spring Tour, Seoul");
    assert_int_equal(concert->n_schedules, 2);

    all = rsv_list_concerts(&main_rsv, arena);
    for (size_t i = 0; i < all->n_concerts; i++) {
        if (all->concerts[i]->id == concert->id) {
            listed = all->concerts[i];
        }
    }
    if (listed == NULL) {
        fail_msg("concert %" PRId64 " is not in ListConcerts", concert->id);
    }
    assert_string_equal(listed->title, "Spring Tour, Seoul");
    assert_int_equal(listed->n_schedules, 2);

    /* Contents first, found by start time; the order is checked at the end. */
    Reservation__V1__Concert *both[2] = {listed, concert};
    const char *names[2] = {"ListConcerts", "CreateConcert"};
    char misordered[160] = "";
    int64_t early_id = 0, late_id = 0;
    for (int k = 0; k < 2; k++) {
        Reservation__V1__Schedule *early = NULL, *late = NULL;
        for (int j = 0; j < 2; j++) {
            Reservation__V1__Schedule *sc = both[k]->schedules[j];
            if (sc->starts_at_ms == t + 3600000) {
                early = sc;
            } else if (sc->starts_at_ms == t + 7200000) {
                late = sc;
            }
        }
        if (early == NULL || late == NULL) {
            fail_msg("%s: a schedule's starts_at_ms was not kept", names[k]);
        }
        if (both[k]->schedules[0] != early) {
            snprintf(misordered + strlen(misordered), sizeof(misordered) - strlen(misordered),
                     "%s%s", misordered[0] != '\0' ? " and " : "", names[k]);
        }
        assert_true(early->id > 0 && late->id > 0 && early->id != late->id);
        assert_int_equal(early->concert_id, concert->id);
        assert_int_equal(late->concert_id, concert->id);
        assert_int_equal(early->seat_count, 12);
        assert_int_equal(late->seat_count, 30);
        assert_int_equal(early->available_seats, 12);
        assert_int_equal(late->available_seats, 30);
        if (k == 0) {
            early_id = early->id;
            late_id = late->id;
        } else {
            assert_int_equal(early->id, early_id);
            assert_int_equal(late->id, late_id);
        }
    }

    check_fresh_seats(arena, early_id, 12, 9000);
    check_fresh_seats(arena, late_id, 30, 15000);

    /* The limits themselves are accepted: 100 schedules, 10 000 seats, price 0. */
    expect_ok("CreateConcert with 100 schedules",
              rsv_create_concert(&main_rsv, arena, "a hundred nights",
                                 rsv_specs(arena, 100, t, 1, 500), 100, FIXTURE_ADMIN_AUTH,
                                 &concert, &err),
              &err);
    assert_int_equal(concert->n_schedules, 100);
    expect_ok("CreateConcert with 10000 seats",
              rsv_create_concert(&main_rsv, arena, "stadium", rsv_specs(arena, 1, t, 10000, 0), 1,
                                 FIXTURE_ADMIN_AUTH, &concert, &err),
              &err);
    check_fresh_seats(arena, concert->schedules[0]->id, 10000, 0);

    expect_code("ListSeats of an unknown schedule",
                rsv_list_seats_call(&main_rsv, arena, INT64_MAX, &none, &err), &err, SVC_NOT_FOUND);

    /* Concert.schedules is documented as "in starts_at_ms order". */
    if (misordered[0] != '\0') {
        fail_msg("%s: schedules not in starts_at_ms order (given latest first)", misordered);
    }
}

static const rsv_instance_spec_t instances[] = {{&main_rsv, "reservation", NULL}};

static int
setup(void **state)
{
    (void)state;
    return rsv_fixture_start_with(instances, 1);
}

static int
teardown(void **state)
{
    (void)state;
    return rsv_fixture_stop_with(instances, 1);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        RSV_ARENA_TEST(test_create_concert_needs_admin_token),
        RSV_ARENA_TEST(test_admin_token_rules_at_start),
        RSV_ARENA_TEST(test_create_concert_invalid_inputs),
        RSV_ARENA_TEST(test_create_concert_refuses_past_schedule),
        RSV_ARENA_TEST(test_create_concert_and_list),
    };

    if (rsv_fixture_main_args(argc, argv) != 0) {
        return 2;
    }
    return testenv_group_result(
        cmocka_run_group_tests(tests, setup, testenv_group_teardown(teardown)));
}
