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

/* Empties both databases: the checks below read all of them. */
static void
reset(void)
{
    sql(&pg, "TRUNCATE payments, reservation_seats, seats, reservations, schedules, concerts");
    sql(&pg_balance, "TRUNCATE ledger, accounts CASCADE");
}

/* The ledger of two-phase funds: a REFUND kind (3) linked to its spend by refund_of. */
static void
ledger_with_refunds(void)
{
    sql(&pg_balance, "ALTER TABLE ledger DROP CONSTRAINT IF EXISTS ledger_kind_check;"
                     "ALTER TABLE ledger ADD COLUMN IF NOT EXISTS refund_of bigint");
}

static void
test_ledger_refunds_and_negative(void **state)
{
    (void)state;
    reset();
    ledger_with_refunds();
    /* A refund adds to the balance: 100 - 30 + 30. */
    sql(&pg_balance, "INSERT INTO accounts (user_id, balance) VALUES (7, 100);"
                     "INSERT INTO ledger (id, user_id, kind, amount, balance_after,"
                     " idempotency_key, refund_of) VALUES (1, 7, 1, 100, 100, 'k1', NULL),"
                     " (2, 7, 2, 30, 70, 'k2', NULL), (3, 7, 3, 30, 100, 'k3', 2)");
    assert_int_equal(inv_check_ledger(pg_balance.conninfo, stderr), 0);
    /* A balance that leaves the refund out is not its ledger's sum. */
    sql(&pg_balance, "UPDATE accounts SET balance = 40 WHERE user_id = 7");
    assert_int_equal(inv_check_ledger(pg_balance.conninfo, stderr), 1);

    /* A negative balance that its ledger explains, past the constraints that forbid it. */
    sql(&pg_balance, "UPDATE accounts SET balance = 100 WHERE user_id = 7;"
                     "ALTER TABLE accounts DROP CONSTRAINT accounts_balance_check;"
                     "ALTER TABLE ledger DROP CONSTRAINT ledger_balance_after_check;"
                     "INSERT INTO accounts (user_id, balance) VALUES (8, -5);"
                     "INSERT INTO ledger (id, user_id, kind, amount, balance_after,"
                     " idempotency_key) VALUES (4, 8, 2, 5, -5, 'k4')");
    assert_int_equal(inv_check_ledger(pg_balance.conninfo, stderr), 2);
}

static void
test_authorizations(void **state)
{
    (void)state;
    reset();
    /* Before two-phase funds there is no table, and nothing can stay authorized. */
    sql(&pg_balance, "DROP TABLE IF EXISTS authorizations CASCADE");
    assert_int_equal(inv_check_authorizations(pg_balance.conninfo, NOW, stderr), 0);
    sql(&pg_balance,
        "CREATE TABLE authorizations (id bigserial PRIMARY KEY, user_id bigint NOT NULL,"
        " amount bigint NOT NULL, idempotency_key text NOT NULL, reference text NOT NULL"
        " DEFAULT '', status smallint NOT NULL, expires_at_ms bigint NOT NULL,"
        " capture_txn_id bigint)");
    /* Pending but expired, captured, voided: none is live. */
    sql(&pg_balance, "INSERT INTO authorizations (user_id, amount, idempotency_key, status,"
                     " expires_at_ms) VALUES (7, 10, 'a1', 1, 1999999999999),"
                     " (7, 10, 'a2', 2, 3000000000000), (7, 10, 'a3', 3, 3000000000000)");
    assert_int_equal(inv_check_authorizations(pg_balance.conninfo, NOW, stderr), 0);
    /* Pending past settling. */
    sql(&pg_balance, "INSERT INTO authorizations (user_id, amount, idempotency_key, status,"
                     " expires_at_ms) VALUES (7, 10, 'a4', 1, 3000000000000)");
    assert_int_equal(inv_check_authorizations(pg_balance.conninfo, NOW, stderr), 1);
    sql(&pg_balance, "DROP TABLE authorizations");
}

/*
 * Schedule 3 (price 10, seats 1..4) and 4 (price 0): reservation 20 confirmed
 * and paid; 22 confirmed for free; 23 the bug: confirmed and charged, its
 * seat 3 cancelled back and now held by 24 of another user.
 */
static void
plant_reservations(void)
{
    sql(&pg, "INSERT INTO concerts (id, title) VALUES (3, 'c3');"
             "INSERT INTO schedules (id, concert_id, starts_at_ms, seat_count, seat_price)"
             " VALUES (3, 3, 1, 4, 10), (4, 3, 1, 1, 0);"
             "INSERT INTO seats (schedule_id, number, price) SELECT 3, g, 10 FROM"
             " generate_series(1, 4) g;"
             "INSERT INTO seats (schedule_id, number, price) VALUES (4, 1, 0);"
             "INSERT INTO reservations (id, user_id, schedule_id, status, amount, expires_at_ms)"
             " VALUES (20, 7, 3, 2, 10, 1), (22, 9, 4, 2, 0, 1), (23, 10, 3, 2, 10, 1),"
             " (24, 11, 3, 1, 10, 3000000000000);"
             "INSERT INTO reservation_seats (reservation_id, schedule_id, number, live)"
             " VALUES (20, 3, 1, true), (22, 4, 1, true), (23, 3, 3, false), (24, 3, 3, true);"
             "UPDATE seats SET status = 3, hold_reservation_id = 20 WHERE schedule_id = 3 AND"
             " number = 1;"
             "UPDATE seats SET status = 3, hold_reservation_id = 22 WHERE schedule_id = 4;"
             "UPDATE seats SET status = 2, hold_reservation_id = 24, hold_expires_at_ms ="
             " 3000000000000 WHERE schedule_id = 3 AND number = 3");
    sql(&pg_balance, "INSERT INTO accounts (user_id, balance) VALUES (7, 0), (10, 0);"
                     "INSERT INTO ledger (id, user_id, kind, amount, balance_after,"
                     " idempotency_key) VALUES (20, 7, 1, 10, 10, 't7'),"
                     " (21, 7, 2, 10, 0, 'reservation:20'), (22, 10, 1, 10, 10, 't10'),"
                     " (23, 10, 2, 10, 0, 'reservation:23')");
}

static void
test_charges(void **state)
{
    (void)state;
    reset();
    sql(&pg_balance, "ALTER TABLE ledger DROP COLUMN IF EXISTS refund_of");
    plant_reservations();
    /* The old ledger (no refunds): 20 and 22 are right; 23 does not own its seat. */
    assert_int_equal(inv_check_charges(pg.conninfo, pg_balance.conninfo, stderr), 1);
    sql(&pg, "UPDATE reservations SET status = 3 WHERE id = 23");
    /* Cancelled, but still charged. */
    assert_int_equal(inv_check_charges(pg.conninfo, pg_balance.conninfo, stderr), 1);

    /* Refunded in full (the new ledger): a cancelled reservation that cost nothing. */
    ledger_with_refunds();
    sql(&pg_balance, "INSERT INTO ledger (id, user_id, kind, amount, balance_after,"
                     " idempotency_key, refund_of) VALUES (24, 10, 3, 10, 10, 'refund:23', 23)");
    assert_int_equal(inv_check_charges(pg.conninfo, pg_balance.conninfo, stderr), 0);
    /* A refund of some other spend does not make it net 0. */
    sql(&pg_balance, "UPDATE ledger SET refund_of = 21 WHERE id = 24");
    assert_int_equal(inv_check_charges(pg.conninfo, pg_balance.conninfo, stderr), 2);
    sql(&pg_balance, "UPDATE ledger SET refund_of = 23 WHERE id = 24");

    /* Confirmed and paid, but by someone else; and a charge for no reservation. */
    sql(&pg, "INSERT INTO reservations (id, user_id, schedule_id, status, amount, expires_at_ms)"
             " VALUES (25, 12, 3, 2, 10, 1);"
             "INSERT INTO reservation_seats (reservation_id, schedule_id, number)"
             " VALUES (25, 3, 4);"
             "UPDATE seats SET status = 3, hold_reservation_id = 25 WHERE schedule_id = 3 AND"
             " number = 4");
    sql(&pg_balance, "INSERT INTO ledger (id, user_id, kind, amount, balance_after,"
                     " idempotency_key) VALUES (25, 7, 2, 10, 0, 'reservation:25'),"
                     " (26, 7, 2, 10, 0, 'reservation:999')");
    /* 25 cost its user 0, 25 paid by another user, 999 does not exist */
    assert_int_equal(inv_check_charges(pg.conninfo, pg_balance.conninfo, stderr), 3);
}

static void
test_answers(void **state)
{
    const inv_answer_t good[] = {
        {.id = 20, .user_id = 7, .schedule_id = 3, .seats = {1}, .n_seats = 1, .paid = true},
        {.id = 22, .user_id = 9, .schedule_id = 4, .seats = {1}, .n_seats = 1},
        {.id = 24, .user_id = 11, .schedule_id = 3, .seats = {3}, .n_seats = 1},
    };
    inv_answer_t bad;

    (void)state;
    reset();
    ledger_with_refunds();
    plant_reservations();
    assert_int_equal(inv_check_answers(pg.conninfo, pg_balance.conninfo, good, 3, stderr), 0);
    assert_int_equal(inv_check_answers(pg.conninfo, pg_balance.conninfo, NULL, 0, stderr), 0);

    /* A hold that is not there; one with other seats. */
    bad = (inv_answer_t){.id = 99, .user_id = 7, .schedule_id = 3, .seats = {2}, .n_seats = 1};
    assert_int_equal(inv_check_answers(pg.conninfo, pg_balance.conninfo, &bad, 1, stderr), 1);
    bad = (inv_answer_t){.id = 24, .user_id = 11, .schedule_id = 3, .seats = {2, 3}, .n_seats = 2};
    assert_int_equal(inv_check_answers(pg.conninfo, pg_balance.conninfo, &bad, 1, stderr), 1);

    /* The bug: 23's cancel answered OK, yet it is confirmed and charged. */
    bad = (inv_answer_t){
        .id = 23, .user_id = 10, .schedule_id = 3, .seats = {3}, .n_seats = 1, .cancelled = true};
    assert_int_equal(inv_check_answers(pg.conninfo, pg_balance.conninfo, &bad, 1, stderr), 1);
    /* Cancelled but not refunded; then refunded, which is right even after a paid OK. */
    sql(&pg, "UPDATE reservations SET status = 3 WHERE id = 23");
    assert_int_equal(inv_check_answers(pg.conninfo, pg_balance.conninfo, &bad, 1, stderr), 1);
    sql(&pg_balance, "INSERT INTO ledger (id, user_id, kind, amount, balance_after,"
                     " idempotency_key, refund_of) VALUES (24, 10, 3, 10, 10, 'refund:23', 23)");
    bad.paid = true;
    assert_int_equal(inv_check_answers(pg.conninfo, pg_balance.conninfo, &bad, 1, stderr), 0);

    /* A payment answered OK: cancelled instead, or confirmed and never charged. */
    bad.cancelled = false;
    assert_int_equal(inv_check_answers(pg.conninfo, pg_balance.conninfo, &bad, 1, stderr), 1);
    /* Unless a cancel was tried and its answer lost (a kill, a deadline): it may have run. */
    bad.cancel_lost = true;
    assert_int_equal(inv_check_answers(pg.conninfo, pg_balance.conninfo, &bad, 1, stderr), 0);
    sql(&pg_balance, "DELETE FROM ledger WHERE id = 24"); /* but not without its refund */
    assert_int_equal(inv_check_answers(pg.conninfo, pg_balance.conninfo, &bad, 1, stderr), 1);
    bad = (inv_answer_t){
        .id = 24, .user_id = 11, .schedule_id = 3, .seats = {3}, .n_seats = 1, .paid = true};
    sql(&pg, "UPDATE reservations SET status = 2 WHERE id = 24");
    assert_int_equal(inv_check_answers(pg.conninfo, pg_balance.conninfo, &bad, 1, stderr), 1);
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
        cmocka_unit_test(test_ledger_refunds_and_negative),
        cmocka_unit_test(test_authorizations),
        cmocka_unit_test(test_charges),
        cmocka_unit_test(test_answers),
        cmocka_unit_test(test_locks),
    };
    return testenv_group_result(
        cmocka_run_group_tests(tests, setup, testenv_group_teardown(teardown)));
}
