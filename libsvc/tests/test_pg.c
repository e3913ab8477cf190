/*
 * test_pg.c: the PostgreSQL pool, error mapping, transaction helper and
 * migrations, against a real PostgreSQL started in a temp dir (testenv).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "svc/pg.h"
#include "svc/timer.h"
#include "testenv.h"

static testenv_pg_t pg;

/* A pool on the test database; app names its connections in pg_stat_activity. */
static svc_pg_pool_t *
pool_make(int size, int statement_timeout_ms, const char *app)
{
    char conninfo[700];
    svc_pg_opts_t opts = {0};
    svc_err_t err;
    svc_pg_pool_t *pool;

    snprintf(conninfo, sizeof(conninfo), "%s application_name=%s", pg.conninfo, app);
    opts.conninfo = conninfo;
    opts.size = size;
    opts.statement_timeout_ms = statement_timeout_ms;
    pool = svc_pg_pool_create(&opts, &err);
    assert_non_null(pool);
    return pool;
}

static int64_t
in_ms(int64_t ms)
{
    return svc_now_unix_ms() + ms;
}

static void
exec_ok(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(res));
    PQclear(res);
}

static void
sql_ok(const char *sql)
{
    assert_int_equal(testenv_pg_exec(&pg, sql), 0);
}

static int64_t
count_of(const char *sql)
{
    return testenv_pg_query_int(&pg, sql);
}

/* Asserts err->msg names what and holds none of the server's words. */
static void
assert_clean_msg(const svc_err_t *err, const char *what)
{
    static const char *const server_words[] = {
        "duplicate", "violates", "syntax", "pg_items", "pg_orders", "qty", "selec",
        "relation",  "terminat", "server", "closed",   "\"",        "(",   "pg_sleep"};

    assert_non_null(strstr(err->msg, what));
    for (size_t i = 0; i < sizeof(server_words) / sizeof(server_words[0]); i++) {
        if (strcasestr(err->msg, server_words[i]) != NULL)
            fail_msg("err->msg \"%s\" holds server text \"%s\"", err->msg, server_words[i]);
    }
}

/* ------------------------------------------------------------------ pool */

static void
test_create_checks_args(void **state)
{
    svc_pg_opts_t opts = {.conninfo = "this is not a conninfo"};
    svc_err_t err;

    (void)state;
    assert_null(svc_pg_pool_create(NULL, &err));
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    assert_null(svc_pg_pool_create(&opts, &err));
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    opts.conninfo = pg.conninfo;
    opts.size = -1;
    assert_null(svc_pg_pool_create(&opts, &err));
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    svc_pg_pool_destroy(NULL);
    assert_string_equal(svc_pg_sqlstate(NULL), "");
}

/* Nothing listens: create succeeds (connections are lazy), acquire says UNAVAILABLE. */
static void
test_database_down_at_create(void **state)
{
    char conninfo[128];
    svc_pg_opts_t opts = {.conninfo = conninfo, .size = 2};
    svc_err_t err;
    svc_pg_pool_t *pool;

    (void)state;
    snprintf(conninfo, sizeof(conninfo), "postgresql://postgres@127.0.0.1:%d/pgtest",
             testenv_free_port());
    pool = svc_pg_pool_create(&opts, &err);
    assert_non_null(pool);
    assert_null(svc_pg_acquire(pool, in_ms(2000), &err));
    assert_int_equal(err.code, SVC_UNAVAILABLE);
    assert_string_equal(err.msg, "database unavailable");
    svc_pg_pool_destroy(pool);
}

typedef struct {
    svc_pg_pool_t *pool;
    atomic_int in_use, max_in_use, done;
} share_t;

static void *
share_thread(void *arg)
{
    share_t *s = arg;
    svc_err_t err;

    for (int i = 0; i < 300; i++) {
        PGconn *conn = svc_pg_acquire(s->pool, in_ms(10000), &err);
        if (conn == NULL)
            return (void *)"acquire failed";
        int now = atomic_fetch_add(&s->in_use, 1) + 1;
        int max = atomic_load(&s->max_in_use);
        while (now > max && !atomic_compare_exchange_weak(&s->max_in_use, &max, now)) {
        }
        PGresult *res = PQexec(conn, "SELECT 1");
        bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
        PQclear(res);
        atomic_fetch_sub(&s->in_use, 1);
        svc_pg_release(s->pool, conn, false);
        if (!ok)
            return (void *)"query failed";
        atomic_fetch_add(&s->done, 1);
    }
    return NULL;
}

static void
test_three_threads_share_two_connections(void **state)
{
    share_t s = {.pool = pool_make(2, 0, "pgtest_share")};
    pthread_t t[3];
    void *why;

    (void)state;
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&t[i], NULL, share_thread, &s), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pthread_join(t[i], &why), 0);
        if (why != NULL)
            fail_msg("%s", (const char *)why);
    }
    assert_int_equal(atomic_load(&s.done), 900);
    assert_true(atomic_load(&s.max_in_use) <= 2);
    assert_true(count_of("SELECT count(*) FROM pg_stat_activity "
                         "WHERE application_name = 'pgtest_share'") <= 2);
    svc_pg_pool_destroy(s.pool);
}

typedef struct {
    svc_pg_pool_t *pool;
    PGconn *got;
    svc_err_t err;
} waiter_t;

static void *
waiter_thread(void *arg)
{
    waiter_t *w = arg;

    w->got = svc_pg_acquire(w->pool, in_ms(5000), &w->err);
    return NULL;
}

static void
test_acquire_deadlines(void **state)
{
    svc_pg_pool_t *pool = pool_make(1, 0, "pgtest_deadline");
    waiter_t w = {.pool = pool};
    svc_err_t err;
    PGconn *held;
    pthread_t t;
    int64_t t0;

    (void)state;
    held = svc_pg_acquire(pool, in_ms(5000), &err);
    assert_non_null(held);
    t0 = svc_now_unix_ms();
    assert_null(svc_pg_acquire(pool, t0 - 1, &err));
    assert_int_equal(err.code, SVC_DEADLINE_EXCEEDED);
    assert_true(svc_now_unix_ms() - t0 < 50);

    t0 = svc_now_unix_ms();
    assert_null(svc_pg_acquire(pool, t0 + 150, &err));
    assert_int_equal(err.code, SVC_UNAVAILABLE);
    assert_string_equal(err.msg, "database busy");
    assert_in_range(svc_now_unix_ms() - t0, 140, 1000);

    /* A waiter is woken by a release, long before its deadline. */
    assert_int_equal(pthread_create(&t, NULL, waiter_thread, &w), 0);
    svc_sleep_ms(100);
    t0 = svc_now_unix_ms();
    svc_pg_release(pool, held, false);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_ptr_equal(w.got, held); /* the same live connection, not a new one */
    assert_true(svc_now_unix_ms() - t0 < 1000);
    svc_pg_release(pool, w.got, false);
    svc_pg_pool_destroy(pool);
}

/* A connection left inside a transaction is not handed out again. */
static void
test_release_drops_open_transaction(void **state)
{
    svc_pg_pool_t *pool = pool_make(1, 0, "pgtest_open_tx");
    svc_err_t err;
    PGconn *conn;

    (void)state;
    conn = svc_pg_acquire(pool, in_ms(5000), &err);
    assert_non_null(conn);
    exec_ok(conn, "BEGIN");
    exec_ok(conn, "CREATE TEMP TABLE pg_left_open (x int)");
    svc_pg_release(pool, conn, false);
    conn = svc_pg_acquire(pool, in_ms(5000), &err);
    assert_non_null(conn);
    assert_int_equal(PQtransactionStatus(conn), PQTRANS_IDLE);
    exec_ok(conn, "CREATE TEMP TABLE pg_left_open (x int)"); /* a new session: no such table */
    svc_pg_release(pool, conn, true);
    svc_pg_pool_destroy(pool);
}

/* ---------------------------------------------------------------- errors */

static void
test_error_mapping(void **state)
{
    svc_pg_pool_t *pool = pool_make(1, 0, "pgtest_errors");
    static const struct {
        const char *sql, *state;
        svc_status_t code;
    } cases[] = {
        {"INSERT INTO pg_items VALUES (2, 'a', 1)", "23505", SVC_ALREADY_EXISTS},
        {"INSERT INTO pg_items VALUES (2, 'b', -1)", "23514", SVC_FAILED_PRECONDITION},
        {"INSERT INTO pg_orders VALUES (99)", "23503", SVC_FAILED_PRECONDITION},
        {"SELEC 1", "42601", SVC_INTERNAL},
        {"SELECT * FROM pg_no_such_table", "42P01", SVC_INTERNAL},
    };
    svc_err_t err;
    PGconn *conn;

    (void)state;
    sql_ok(
        "CREATE TABLE pg_items (id int PRIMARY KEY, code text UNIQUE, qty int CHECK (qty >= 0))");
    sql_ok("CREATE TABLE pg_orders (item int REFERENCES pg_items (id))");
    sql_ok("INSERT INTO pg_items VALUES (1, 'a', 1)");
    conn = svc_pg_acquire(pool, in_ms(5000), &err);
    assert_non_null(conn);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        PGresult *res = PQexec(conn, cases[i].sql);
        assert_string_equal(svc_pg_sqlstate(res), cases[i].state);
        assert_int_equal(svc_pg_error(conn, res, &err, "insert item"), cases[i].code);
        assert_int_equal(err.code, cases[i].code);
        assert_clean_msg(&err, "insert item failed");
        PQclear(res);
    }
    assert_int_equal(svc_pg_error(conn, NULL, &err, "insert item"), SVC_UNAVAILABLE);
    PGresult *res = PQexec(conn, "SELECT 1");
    assert_int_equal(svc_pg_error(conn, res, &err, "count items"), SVC_INTERNAL);
    assert_string_equal(err.msg, "count items failed: unexpected result");
    PQclear(res);
    svc_pg_release(pool, conn, false);
    svc_pg_pool_destroy(pool);
}

static void
test_statement_timeout(void **state)
{
    svc_pg_pool_t *pool = pool_make(1, 200, "pgtest_timeout");
    svc_err_t err;
    PGconn *conn;
    PGresult *res;
    int64_t t0;

    (void)state;
    conn = svc_pg_acquire(pool, in_ms(5000), &err);
    assert_non_null(conn);
    t0 = svc_now_unix_ms();
    res = PQexec(conn, "SELECT pg_sleep(3)");
    assert_true(svc_now_unix_ms() - t0 < 1500);
    assert_string_equal(svc_pg_sqlstate(res), "57014");
    assert_int_equal(svc_pg_error(conn, res, &err, "sleep"), SVC_UNAVAILABLE);
    assert_string_equal(err.msg, "sleep failed: database too slow");
    PQclear(res);
    exec_ok(conn, "SELECT 1"); /* the connection is still fine */
    svc_pg_release(pool, conn, false);
    svc_pg_pool_destroy(pool);
}

/* ---------------------------------------------------------- transactions */

typedef struct {
    int first, second; /* rows of pg_acc to update, in this order */
    pthread_barrier_t *both_hold_first;
    atomic_int *runs;
    atomic_int *failure_code; /* code of the first failed run, -1 until then */
    svc_pg_pool_t *pool;
    int rc;
    svc_err_t err;
} lock_order_t;

static int
update_acc(PGconn *conn, int id, atomic_int *failure_code, svc_err_t *err)
{
    char idbuf[16];
    const char *params[1] = {idbuf};
    PGresult *res;
    int rc = 0;

    snprintf(idbuf, sizeof(idbuf), "%d", id);
    res = PQexecParams(conn, "UPDATE pg_acc SET n = n + 1 WHERE id = $1", 1, NULL, params, NULL,
                       NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        int expected = -1;
        svc_status_t code = svc_pg_error(conn, res, err, "update account");
        atomic_compare_exchange_strong(failure_code, &expected, (int)code);
        rc = -1;
    }
    PQclear(res);
    return rc;
}

/* Updates two rows; on its first run waits until the other thread holds its first row. */
static int
lock_order_fn(PGconn *conn, void *arg, svc_err_t *err)
{
    lock_order_t *lo = arg;
    int run = atomic_fetch_add(lo->runs, 1) + 1;

    if (update_acc(conn, lo->first, lo->failure_code, err) < 0)
        return -1;
    if (run <= 2)
        pthread_barrier_wait(lo->both_hold_first);
    return update_acc(conn, lo->second, lo->failure_code, err);
}

static void *
lock_order_thread(void *arg)
{
    lock_order_t *lo = arg;

    lo->rc = svc_pg_tx(lo->pool, in_ms(20000), lock_order_fn, lo, &lo->err);
    return NULL;
}

/* A deadlock aborts one transaction (ABORTED); svc_pg_tx runs it again and both commit. */
static void
test_deadlock_is_retried(void **state)
{
    svc_pg_pool_t *pool = pool_make(2, 0, "pgtest_deadlock");
    pthread_barrier_t barrier;
    atomic_int runs = 0, failure_code = -1;
    lock_order_t a = {1, 2, &barrier, &runs, &failure_code, pool, -1, {0}};
    lock_order_t b = {2, 1, &barrier, &runs, &failure_code, pool, -1, {0}};
    pthread_t ta, tb;

    (void)state;
    sql_ok("CREATE TABLE pg_acc (id int PRIMARY KEY, n int NOT NULL)");
    sql_ok("INSERT INTO pg_acc VALUES (1, 0), (2, 0)");
    pthread_barrier_init(&barrier, NULL, 2);
    assert_int_equal(pthread_create(&ta, NULL, lock_order_thread, &a), 0);
    assert_int_equal(pthread_create(&tb, NULL, lock_order_thread, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    pthread_barrier_destroy(&barrier);
    assert_int_equal(atomic_load(&failure_code), SVC_ABORTED);
    assert_int_equal(a.rc, 0);
    assert_int_equal(b.rc, 0);
    assert_int_equal(atomic_load(&runs), 3); /* two first runs, one retry */
    /* Each transaction added 1 to both rows exactly once. */
    assert_int_equal(count_of("SELECT sum(n) FROM pg_acc"), 4);
    assert_int_equal(count_of("SELECT count(*) FROM pg_acc WHERE n = 2"), 2);
    svc_pg_pool_destroy(pool);
}

typedef struct {
    int runs;
    int id;
    svc_status_t fail_with; /* SVC_OK: succeed */
    bool swallow_error;     /* run a failing statement and return 0 anyway */
} insert_arg_t;

static int
insert_fn(PGconn *conn, void *arg, svc_err_t *err)
{
    insert_arg_t *ia = arg;
    char idbuf[16];
    const char *params[1] = {idbuf};
    PGresult *res;

    ia->runs++;
    snprintf(idbuf, sizeof(idbuf), "%d", ia->id);
    res = PQexecParams(conn, "INSERT INTO pg_tx (id) VALUES ($1)", 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        svc_pg_error(conn, res, err, "insert tx row");
        PQclear(res);
        return -1;
    }
    PQclear(res);
    if (ia->swallow_error) {
        PQclear(PQexec(conn, "SELECT 1 / 0"));
        return 0;
    }
    if (ia->fail_with == SVC_ABORTED) {
        svc_err_set(err, SVC_ABORTED, "fence outdated");
        return -1;
    }
    if (ia->fail_with != SVC_OK)
        return -1; /* err left unset: svc_pg_tx must still say something */
    return 0;
}

static void
test_tx_commit_and_rollback(void **state)
{
    svc_pg_pool_t *pool = pool_make(1, 0, "pgtest_tx");
    insert_arg_t ok = {.id = 1}, fail = {.id = 2, .fail_with = SVC_INTERNAL};
    insert_arg_t aborted = {.id = 3, .fail_with = SVC_ABORTED};
    insert_arg_t swallowed = {.id = 4, .swallow_error = true};
    svc_err_t err;

    (void)state;
    sql_ok("CREATE TABLE pg_tx (id int PRIMARY KEY)");
    assert_int_equal(svc_pg_tx(pool, in_ms(5000), insert_fn, &ok, &err), 0);
    assert_int_equal(count_of("SELECT count(*) FROM pg_tx WHERE id = 1"), 1);

    assert_int_equal(svc_pg_tx(pool, in_ms(5000), insert_fn, &fail, &err), -1);
    assert_int_equal(err.code, SVC_INTERNAL);
    assert_string_equal(err.msg, "transaction failed");
    assert_int_equal(count_of("SELECT count(*) FROM pg_tx WHERE id = 2"), 0);

    /* fn's own ABORTED is an answer, not a database conflict: no retry. */
    assert_int_equal(svc_pg_tx(pool, in_ms(5000), insert_fn, &aborted, &err), -1);
    assert_int_equal(err.code, SVC_ABORTED);
    assert_string_equal(err.msg, "fence outdated");
    assert_int_equal(aborted.runs, 1);
    assert_int_equal(count_of("SELECT count(*) FROM pg_tx WHERE id = 3"), 0);

    assert_int_equal(svc_pg_tx(pool, in_ms(5000), insert_fn, &swallowed, &err), -1);
    assert_int_equal(err.code, SVC_INTERNAL);
    assert_string_equal(err.msg, "commit transaction failed: transaction had failed");
    assert_int_equal(count_of("SELECT count(*) FROM pg_tx WHERE id = 4"), 0);

    /* A unique violation in fn arrives as fn's error; the pool's one connection still works. */
    assert_int_equal(svc_pg_tx(pool, in_ms(5000), insert_fn, &ok, &err), -1);
    assert_int_equal(err.code, SVC_ALREADY_EXISTS);
    assert_string_equal(err.msg, "insert tx row failed: already exists");
    ok.id = 5;
    assert_int_equal(svc_pg_tx(pool, in_ms(5000), insert_fn, &ok, &err), 0);
    assert_int_equal(count_of("SELECT count(*) FROM pg_tx"), 2);
    svc_pg_pool_destroy(pool);
}

/* ----------------------------------------------------- database failures */

typedef struct {
    svc_pg_pool_t *pool;
    int runs, rc;
    int64_t took_ms;
    svc_err_t err;
} sleeper_t;

static int
sleep_fn(PGconn *conn, void *arg, svc_err_t *err)
{
    sleeper_t *s = arg;
    PGresult *res;
    int rc = 0;

    s->runs++;
    res = PQexec(conn, "SELECT pg_sleep(5)");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        svc_pg_error(conn, res, err, "sleep");
        rc = -1;
    }
    PQclear(res);
    return rc;
}

static void *
sleeper_thread(void *arg)
{
    sleeper_t *s = arg;
    int64_t t0 = svc_now_unix_ms();

    s->rc = svc_pg_tx(s->pool, in_ms(20000), sleep_fn, s, &s->err);
    s->took_ms = svc_now_unix_ms() - t0;
    return NULL;
}

static int
noop_fn(PGconn *conn, void *arg, svc_err_t *err)
{
    (void)arg;
    (void)err;
    exec_ok(conn, "SELECT 1");
    return 0;
}

/*
 * A crash: the transaction in flight and the next ones answer UNAVAILABLE
 * promptly; after the restart the same pool works again by itself.
 */
static void
test_database_killed_and_restarted(void **state)
{
    svc_pg_pool_t *pool = pool_make(2, 30000, "pgtest_kill");
    sleeper_t s = {.pool = pool};
    svc_err_t err;
    pthread_t t;
    int64_t t0;

    (void)state;
    assert_int_equal(svc_pg_tx(pool, in_ms(5000), noop_fn, NULL, &err), 0);
    assert_int_equal(pthread_create(&t, NULL, sleeper_thread, &s), 0);
    svc_sleep_ms(300);
    assert_int_equal(testenv_pg_kill(&pg), 0);
    pthread_join(t, NULL);
    assert_int_equal(s.rc, -1);
    assert_int_equal(s.err.code, SVC_UNAVAILABLE);
    assert_int_equal(s.runs, 1); /* never retried */
    assert_true(s.took_ms < 2000);
    assert_clean_msg(&s.err, "sleep failed");

    for (int i = 0; i < 3; i++) {
        t0 = svc_now_unix_ms();
        assert_int_equal(svc_pg_tx(pool, t0 + 1500, noop_fn, NULL, &err), -1);
        assert_int_equal(err.code, SVC_UNAVAILABLE);
        assert_string_equal(err.msg, "database unavailable");
        assert_true(svc_now_unix_ms() - t0 < 1500);
    }

    assert_int_equal(testenv_pg_restart(&pg), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(svc_pg_tx(pool, in_ms(5000), noop_fn, NULL, &err), 0);
    svc_pg_pool_destroy(pool);
}

/* A connection held across a restart fails once, is dropped on release, and is replaced. */
static void
test_stale_connection_replaced(void **state)
{
    svc_pg_pool_t *pool = pool_make(1, 0, "pgtest_stale");
    svc_err_t err;
    PGconn *conn;
    PGresult *res;

    (void)state;
    assert_non_null(conn = svc_pg_acquire(pool, in_ms(5000), &err));
    svc_pg_release(pool, conn, false);
    assert_int_equal(testenv_pg_restart(&pg), 0); /* kills it first */
    /* The idle connection's socket says EOF: acquire replaces it at once. */
    assert_non_null(conn = svc_pg_acquire(pool, in_ms(5000), &err));
    exec_ok(conn, "SELECT 1");
    assert_int_equal(testenv_pg_restart(&pg), 0);
    /* Held during the crash: the holder's statement fails, release drops it. */
    res = PQexec(conn, "SELECT 1");
    assert_int_equal(svc_pg_error(conn, res, &err, "select one"), SVC_UNAVAILABLE);
    assert_string_equal(err.msg, "select one failed: database unavailable");
    PQclear(res);
    svc_pg_release(pool, conn, false);
    assert_non_null(conn = svc_pg_acquire(pool, in_ms(5000), &err));
    exec_ok(conn, "SELECT 1");
    svc_pg_release(pool, conn, false);
    svc_pg_pool_destroy(pool);
}

/* Prepared statements on a session, as pg_prepared_statements lists them. */
static int64_t
prepared_count(PGconn *conn)
{
    PGresult *res = PQexec(conn, "SELECT count(*) FROM pg_prepared_statements");
    int64_t n = PQresultStatus(res) == PGRES_TUPLES_OK ? svc_pg_i64(res, 0, 0) : -1;

    PQclear(res);
    return n;
}

/*
 * svc_pg_exec prepares each statement once per pool connection and finds it
 * again by its text (not its address): a buffer reused with other text runs
 * the other text. A statement that fails to prepare reports as a failed run
 * does. A connection the database lost comes back with none prepared.
 */
static void
test_statements_prepared_once(void **state)
{
    svc_pg_pool_t *pool = pool_make(1, 0, "pgtest_prepared");
    char sql[64], n_text[16];
    const char *p[] = {n_text};
    svc_err_t err;
    PGconn *conn;
    PGresult *res;

    (void)state;
    assert_non_null(conn = svc_pg_acquire(pool, in_ms(5000), &err));
    assert_int_equal(prepared_count(conn), 0);
    for (int i = 0; i < 3; i++) {
        snprintf(n_text, sizeof(n_text), "%d", i);
        snprintf(sql, sizeof(sql), "SELECT $1::int + %d", i % 2 == 0 ? 100 : 200);
        res = svc_pg_exec(conn, sql, 1, p, PGRES_TUPLES_OK, "add", &err);
        assert_non_null(res);
        assert_int_equal(svc_pg_i64(res, 0, 0), i + (i % 2 == 0 ? 100 : 200));
        PQclear(res);
    }
    assert_int_equal(prepared_count(conn), 2); /* "+ 100" twice, "+ 200" once */
    res = svc_pg_exec(conn, "SELEC $1", 1, p, PGRES_TUPLES_OK, "read number", &err);
    assert_null(res);
    assert_int_equal(err.code, SVC_INTERNAL);
    assert_clean_msg(&err, "read number failed");
    assert_int_equal(prepared_count(conn), 2);
    PQreset(conn); /* a new session: its statements are gone, and prepared again */
    assert_int_equal(prepared_count(conn), 0);
    res = svc_pg_exec(conn, sql, 1, p, PGRES_TUPLES_OK, "add", &err);
    assert_non_null(res);
    assert_int_equal(svc_pg_i64(res, 0, 0), 102);
    PQclear(res);
    assert_int_equal(prepared_count(conn), 1);
    svc_pg_release(pool, conn, false);
    svc_pg_pool_destroy(pool);
}

/* ------------------------------------------------------------ migrations */

/* Out of version order on purpose; 1 sleeps so that a concurrent migrator waits on the lock. */
static const svc_migration_t good[] = {
    {2, "add_note", "ALTER TABLE mig_a ADD COLUMN note text;\nCREATE TABLE mig_b (id int);"},
    {1, "create_a", "CREATE TABLE mig_a (id int PRIMARY KEY); SELECT pg_sleep(0.3);"},
    {3, "seed", "INSERT INTO mig_a (id, note) VALUES (1, 'it''s a \\ backslash');"},
};

typedef struct {
    svc_pg_pool_t *pool;
    pthread_barrier_t *start;
    int rc;
    svc_err_t err;
} migrator_t;

static void *
migrator_thread(void *arg)
{
    migrator_t *m = arg;

    pthread_barrier_wait(m->start);
    m->rc = svc_pg_migrate(m->pool, good, 3, &m->err);
    return NULL;
}

/* Two instances starting together apply each migration exactly once, in version order. */
static void
test_migrate_concurrently_once(void **state)
{
    /* statement_timeout 200 ms: migrations run without it (migration 1 sleeps 300 ms). */
    svc_pg_pool_t *p1 = pool_make(1, 200, "pgtest_mig1"), *p2 = pool_make(1, 200, "pgtest_mig2");
    pthread_barrier_t start;
    migrator_t m1 = {.pool = p1, .start = &start}, m2 = {.pool = p2, .start = &start};
    pthread_t t1, t2;
    svc_err_t err;

    (void)state;
    pthread_barrier_init(&start, NULL, 2);
    assert_int_equal(pthread_create(&t1, NULL, migrator_thread, &m1), 0);
    assert_int_equal(pthread_create(&t2, NULL, migrator_thread, &m2), 0);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    pthread_barrier_destroy(&start);
    if (m1.rc != 0 || m2.rc != 0)
        fail_msg("migrate: \"%s\" / \"%s\"", m1.err.msg, m2.err.msg);
    assert_int_equal(count_of("SELECT count(*) FROM schema_migrations"), 3);
    assert_int_equal(count_of("SELECT count(*) FROM mig_a"), 1);
    assert_int_equal(count_of("SELECT count(*) FROM mig_a WHERE note = 'it''s a \\ backslash'"), 1);

    /* Running again is a no-op, and the session's statement_timeout is back. */
    assert_int_equal(svc_pg_migrate(p1, good, 3, &err), 0);
    assert_int_equal(count_of("SELECT count(*) FROM schema_migrations"), 3);
    PGconn *conn = svc_pg_acquire(p1, in_ms(5000), &err);
    assert_non_null(conn);
    PGresult *res = PQexec(conn, "SHOW statement_timeout");
    assert_string_equal(PQgetvalue(res, 0, 0), "200ms");
    PQclear(res);
    svc_pg_release(p1, conn, false);
    assert_int_equal(count_of("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"), 0);
    svc_pg_pool_destroy(p1);
    svc_pg_pool_destroy(p2);
}

static void
test_migrate_broken(void **state)
{
    svc_pg_pool_t *pool = pool_make(1, 0, "pgtest_mig_broken");
    const svc_migration_t more[] = {
        good[0],
        good[1],
        good[2],
        {5, "after", "CREATE TABLE mig_e (id int);"},
        {4, "broken", "CREATE TABLE mig_d (id int);\nSELEC oops;"},
    };
    const svc_migration_t twice[] = {{1, "a", "SELECT 1"}, {1, "b", "SELECT 1"}};
    svc_err_t err;

    (void)state;
    assert_int_equal(svc_pg_migrate(pool, good, 3, &err), 0); /* perhaps done already */
    assert_int_equal(svc_pg_migrate(pool, more, 5, &err), -1);
    assert_int_equal(err.code, SVC_INTERNAL);
    assert_string_equal(err.msg, "apply migration 4 (broken) failed: database error");
    assert_int_equal(count_of("SELECT count(*) FROM schema_migrations"), 3);
    assert_int_equal(count_of("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'mig_%'"), 2);
    assert_int_equal(count_of("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"), 0);

    assert_int_equal(svc_pg_migrate(pool, twice, 2, &err), -1);
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    assert_int_equal(svc_pg_migrate(pool, NULL, 0, &err), 0);
    svc_pg_pool_destroy(pool);
}

static int
setup(void **state)
{
    (void)state;
    return testenv_pg_start(&pg, "pgtest");
}

static int
teardown(void **state)
{
    (void)state;
    return testenv_pg_stop(&pg);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_checks_args),
        cmocka_unit_test(test_database_down_at_create),
        cmocka_unit_test(test_three_threads_share_two_connections),
        cmocka_unit_test(test_acquire_deadlines),
        cmocka_unit_test(test_release_drops_open_transaction),
        cmocka_unit_test(test_error_mapping),
        cmocka_unit_test(test_statement_timeout),
        cmocka_unit_test(test_deadlock_is_retried),
        cmocka_unit_test(test_tx_commit_and_rollback),
        cmocka_unit_test(test_migrate_concurrently_once),
        cmocka_unit_test(test_migrate_broken),
        cmocka_unit_test(test_database_killed_and_restarted),
        cmocka_unit_test(test_stale_connection_replaced),
        cmocka_unit_test(test_statements_prepared_once),
    };

    testenv_cleanup_on_exit();
    return testenv_group_result(
        cmocka_run_group_tests(tests, setup, testenv_group_teardown(teardown)));
}
