/*
 * test_invariants.c: each invariant check finds its violation when one is
 * planted straight into the databases or Redis, and finds none in clean data.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "balance_migrations.h"
#include "invariants.h"
#include "reservation_migrations.h"
#include "svc/pg.h"
#include "testenv.h"

#define NOW 2000000000000LL /* every hold below expires after this */

static testenv_pg_t pg, pg_balance;
static testenv_redis_t redis;

static void
migrate(const char *conninfo, const svc_migration_t *m, int n)
{
    svc_pg_opts_t opts = {.conninfo = conninfo, .size = 1};
    svc_err_t err;
    svc_pg_pool_t *pool = svc_pg_pool_create(&opts, &err);

    assert_non_null(pool);
    assert_int_equal(svc_pg_migrate(pool, m, n, &err), 0);
    svc_pg_pool_destroy(pool);
}

static void
sql(const testenv_pg_t *db, const char *text)
{
    assert_int_equal(testenv_pg_exec(db, text), 0);
}

static void
test_seats(void **state)
{
    (void)state;
    sql(&pg, "INSERT INTO concerts (id, title) VALUES (1, 'c');"
             "INSERT INTO schedules (id, concert_id, starts_at_ms, seat_count, seat_price)"
             " VALUES (1, 1, 1, 4, 10);"
             "INSERT INTO seats (schedule_id, number, price) SELECT 1, g, 10 FROM"
             " generate_series(1, 4) g;"
             "INSERT INTO reservations (id, user_id, schedule_id, status, amount, expires_at_ms)"
             " VALUES (1, 7, 1, 2, 10, 3000000000000), (2, 8, 1, 1, 10, 3000000000000);"
             "INSERT INTO reservation_seats (reservation_id, schedule_id, number)"
             " VALUES (1, 1, 1), (2, 1, 2);"
             "UPDATE seats SET status = 3, hold_reservation_id = 1 WHERE number = 1;"
             "UPDATE seats SET status = 2, hold_reservation_id = 2, hold_expires_at_ms ="
             " 3000000000000 WHERE number = 2");
    assert_int_equal(inv_check_seats(pg.conninfo, NOW, stderr), 0);

    /* A second live hold on seat 2, written past the unique index that forbids it. */
    sql(&pg,
        "DROP INDEX reservation_seats_one_live;"
        "INSERT INTO reservations (id, user_id, schedule_id, status, amount, expires_at_ms)"
        " VALUES (3, 9, 1, 1, 10, 3000000000000);"
        "INSERT INTO reservation_seats (reservation_id, schedule_id, number) VALUES (3, 1, 2)");
    assert_int_equal(inv_check_seats(pg.conninfo, NOW, stderr), 1);
    /* Once that hold has expired it is not live any more. */
    assert_int_equal(inv_check_seats(pg.conninfo, 3000000000001LL, NULL), 0);

    /* Seat 1 sold a second time; seat 3 sold with no confirmed reservation; seat 4 held by nobody.
     */
    sql(&pg, "INSERT INTO reservations (id, user_id, schedule_id, status, amount, expires_at_ms)"
             " VALUES (4, 10, 1, 2, 10, 1);"
             "INSERT INTO reservation_seats (reservation_id, schedule_id, number, live)"
             " VALUES (4, 1, 1, false);"
             "UPDATE seats SET status = 3, hold_reservation_id = 2 WHERE number = 3;"
             "UPDATE seats SET status = 2, hold_reservation_id = 3, hold_expires_at_ms ="
             " 3000000000000 WHERE number = 4");
    /* 1 double live hold + 2 live sales of seat 1 + 1 sold twice + seat 3 + seat 4 */
    assert_int_equal(inv_check_seats(pg.conninfo, NOW, stderr), 5);
}

static void
test_ledger_and_acknowledged(void **state)
{
    inv_ack_t good = {7, "k1", 1}, bad = {7, "k9", 42};

    (void)state;
    sql(&pg_balance, "INSERT INTO accounts (user_id, balance) VALUES (7, 70);"
                     "INSERT INTO ledger (id, user_id, kind, amount, balance_after,"
                     " idempotency_key) VALUES (1, 7, 1, 100, 100, 'k1'), (2, 7, 2, 30, 70, 'k2')");
    assert_int_equal(inv_check_ledger(pg_balance.conninfo, stderr), 0);
    assert_int_equal(inv_check_acknowledged(pg_balance.conninfo, &good, 1, stderr), 0);
    assert_int_equal(inv_check_acknowledged(pg_balance.conninfo, &bad, 1, NULL), 1);

    sql(&pg_balance, "UPDATE accounts SET balance = 71 WHERE user_id = 7");
    assert_int_equal(inv_check_ledger(pg_balance.conninfo, stderr), 1);
    sql(&pg_balance, "UPDATE accounts SET balance = 70 WHERE user_id = 7;"
                     "UPDATE ledger SET balance_after = 60 WHERE id = 2;"
                     "UPDATE accounts SET balance = 60 WHERE user_id = 7");
    /* the sum is 70 but the chain and the balance say 60 */
    assert_int_equal(inv_check_ledger(pg_balance.conninfo, stderr), 2);
}

static void
test_acknowledged_reservations(void **state)
{
    const int64_t held[] = {10, 11}, paid[] = {11}, missing[] = {99}, unpaid[] = {10};

    (void)state;
    sql(&pg, "INSERT INTO concerts (id, title) VALUES (2, 'c2');"
             "INSERT INTO schedules (id, concert_id, starts_at_ms, seat_count, seat_price)"
             " VALUES (2, 2, 1, 2, 10);"
             "INSERT INTO seats (schedule_id, number, price) SELECT 2, g, 10 FROM"
             " generate_series(1, 2) g;"
             "INSERT INTO reservations (id, user_id, schedule_id, status, amount, expires_at_ms)"
             " VALUES (10, 8, 2, 1, 10, 3000000000000), (11, 8, 2, 2, 10, 1);"
             "INSERT INTO reservation_seats (reservation_id, schedule_id, number)"
             " VALUES (10, 2, 1), (11, 2, 2);"
             "INSERT INTO payments (reservation_id, user_id, amount, idempotency_key, status)"
             " VALUES (11, 8, 10, 'p', 2);"
             "UPDATE seats SET status = 2, hold_reservation_id = 10, hold_expires_at_ms ="
             " 3000000000000 WHERE schedule_id = 2 AND number = 1;"
             "UPDATE seats SET status = 3, hold_reservation_id = 11 WHERE schedule_id = 2 AND"
             " number = 2");
    assert_int_equal(inv_check_reservations(pg.conninfo, held, 2, paid, 1, stderr), 0);
    assert_int_equal(inv_check_reservations(pg.conninfo, NULL, 0, NULL, 0, stderr), 0);
    /* A hold that was acknowledged but is not there; a payment acknowledged but still held. */
    assert_int_equal(inv_check_reservations(pg.conninfo, missing, 1, NULL, 0, stderr), 1);
    assert_int_equal(inv_check_reservations(pg.conninfo, NULL, 0, unpaid, 1, stderr), 1);
    /* Confirmed, but its seat went back to being only held. */
    sql(&pg, "UPDATE seats SET status = 2, hold_expires_at_ms = 3000000000000 WHERE"
             " schedule_id = 2 AND number = 2");
    assert_int_equal(inv_check_reservations(pg.conninfo, NULL, 0, paid, 1, stderr), 1);

    /* Charged once: one spend keyed reservation:11; none for 10; two for 12. */
    const int64_t once[] = {11}, never[] = {10}, twice[] = {12};
    sql(&pg_balance, "INSERT INTO accounts (user_id, balance) VALUES (8, 0), (9, 0);"
                     "INSERT INTO ledger (id, user_id, kind, amount, balance_after,"
                     " idempotency_key) VALUES (10, 8, 1, 10, 10, 'k'),"
                     " (11, 8, 2, 10, 0, 'reservation:11'), (12, 8, 2, 1, 0, 'reservation:12'),"
                     " (13, 9, 2, 1, 0, 'reservation:12')");
    assert_int_equal(inv_check_charged_once(pg_balance.conninfo, once, 1, stderr), 0);
    assert_int_equal(inv_check_charged_once(pg_balance.conninfo, never, 1, stderr), 1);
    assert_int_equal(inv_check_charged_once(pg_balance.conninfo, twice, 1, stderr), 1);
}

static void
test_locks(void **state)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", redis.port, tv);

    (void)state;
    assert_non_null(c);
    freeReplyObject(redisCommand(c, "SET lock:{a} t1 PX 10000"));
    freeReplyObject(redisCommand(c, "SET lock:{a}:fence 5")); /* fences may live long */
    assert_int_equal(inv_check_locks("127.0.0.1", redis.port, stderr), 0);
    freeReplyObject(redisCommand(c, "SET lock:{b} t2"));
    assert_int_equal(inv_check_locks("127.0.0.1", redis.port, stderr), 1);
    redisFree(c);
}

static int
setup(void **state)
{
    (void)state;
    testenv_cleanup_on_exit();
    if (testenv_pg_start(&pg, "reservation") != 0 || testenv_redis_start(&redis) != 0 ||
        testenv_pg_exec(&pg, "CREATE DATABASE balance") != 0) {
        return -1;
    }
    pg_balance = pg;
    snprintf(pg_balance.conninfo, sizeof(pg_balance.conninfo),
             "host=127.0.0.1 port=%d user=postgres dbname=balance", pg.port);
    migrate(pg.conninfo, reservation_migrations, reservation_migrations_count);
    migrate(pg_balance.conninfo, balance_migrations, balance_migrations_count);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    testenv_redis_stop(&redis);
    testenv_pg_stop(&pg);
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seats),
        cmocka_unit_test(test_ledger_and_acknowledged),
        cmocka_unit_test(test_acknowledged_reservations),
        cmocka_unit_test(test_locks),
    };
    return testenv_group_result(
        cmocka_run_group_tests(tests, setup, testenv_group_teardown(teardown)));
}
