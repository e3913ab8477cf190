/*
 * pg.h: PostgreSQL for services: a bounded pool of libpq connections that
 * heals itself after a database restart, the one mapping of SQLSTATEs to
 * svc_status_t, a transaction helper that retries serialization failures and
 * deadlocks, and versioned migrations applied once under an advisory lock.
 */
#ifndef SVC_PG_H
#define SVC_PG_H

#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "svc/err.h"

typedef struct svc_pg_pool svc_pg_pool_t;

typedef struct {
    const char *conninfo;     /* libpq "key=value ..." or postgresql:// URI; copied */
    int size;                 /* connections at most; 0: 16 */
    int statement_timeout_ms; /* per connection; 0: 5000; < 0: none */
    int connect_timeout_s;    /* per connection attempt; 0: 2 */
} svc_pg_opts_t;

/*
 * Makes a pool. No connection is made here (the database need not be up):
 * acquire connects lazily. Returns NULL with INVALID_ARGUMENT when conninfo
 * does not parse or a number is out of range, INTERNAL when out of memory.
 */
svc_pg_pool_t *svc_pg_pool_create(const svc_pg_opts_t *opts, svc_err_t *err);

/*
 * Closes every connection and frees the pool. NULL is a no-op.
 * REQUIRES: every acquired connection was released; no thread is in acquire.
 */
void svc_pg_pool_destroy(svc_pg_pool_t *pool);

/*
 * Takes a connection, waiting until deadline_unix_ms (INT64_MAX: forever) for
 * one to be free, and (re)connecting when its slot is empty or its connection
 * broke, so connections lost in a database restart are replaced by themselves.
 * Returns NULL with DEADLINE_EXCEEDED when the deadline has already passed,
 * UNAVAILABLE "database busy" when none became free in time, UNAVAILABLE
 * "database unavailable" when connecting failed (libpq's reason goes to the
 * log, never into err). Blocks: call from worker threads only.
 * Caller must hand the connection back with svc_pg_release, with no
 * transaction left open and every PGresult cleared.
 */
PGconn *svc_pg_acquire(svc_pg_pool_t *pool, int64_t deadline_unix_ms, svc_err_t *err);

/*
 * Gives back a connection from svc_pg_acquire. It is closed (and its slot
 * reconnects on a later acquire) when broken is true, when libpq sees it
 * failed, or when a transaction is still open on it. conn NULL is a no-op.
 */
void svc_pg_release(svc_pg_pool_t *pool, PGconn *conn, bool broken);

/*
 * The SQLSTATE of a result ("23505"), or "" when res is NULL or has none
 * (errors made by libpq itself, such as a lost connection, often have none).
 */
const char *svc_pg_sqlstate(const PGresult *res);

/*
 * Sets err from a failed result or connection and returns its code:
 *   23505 unique_violation                       ALREADY_EXISTS
 *   40001 serialization_failure, 40P01 deadlock  ABORTED (svc_pg_tx retries)
 *   23514 check_violation, 23503 foreign key     FAILED_PRECONDITION
 *   57014 query_canceled (statement timeout)     UNAVAILABLE "database too slow"
 *   08xxx, 57P01-57P03, 53xxx, res NULL,
 *   conn NULL or CONNECTION_BAD                  UNAVAILABLE "database unavailable"
 *   anything else                                INTERNAL
 * err->msg is "<what> failed: <reason>", short and lower-case; it never holds
 * SQL or the server's text, which is logged instead (at warn, or at debug for
 * the expected outcomes ALREADY_EXISTS, ABORTED and FAILED_PRECONDITION).
 * what names the operation, e.g. "insert ledger row". conn and res may be
 * NULL; the caller still owns and clears res. err may be NULL.
 */
svc_status_t svc_pg_error(PGconn *conn, const PGresult *res, svc_err_t *err, const char *what);

/*
 * The body of a transaction: runs statements on conn and returns 0, or -1
 * with err set (by svc_pg_error for database errors). It must not COMMIT,
 * ROLLBACK or release conn, and must clear every PGresult it gets.
 */
typedef int (*svc_pg_tx_fn)(PGconn *conn, void *arg, svc_err_t *err);

/*
 * Runs fn in one transaction: acquire, BEGIN, fn, COMMIT (ROLLBACK when fn
 * returns -1), release. When the database aborts it with a serialization
 * failure or a deadlock (ABORTED from svc_pg_error), the whole transaction
 * runs again, up to 3 more times, after a short random pause. So fn MUST be
 * safe to run again: keep no effects outside the database from a failed run
 * (reset whatever it writes into arg at its start). An ABORTED that fn sets
 * itself is not retried. Connection loss is never retried: a COMMIT whose
 * answer was lost may have committed, so that answers UNAVAILABLE. COMMIT
 * that finds the transaction already failed (fn ignored an error) answers
 * INTERNAL. Returns 0, or -1 with err set (fn's own err when fn failed).
 */
int svc_pg_tx(svc_pg_pool_t *pool, int64_t deadline_unix_ms, svc_pg_tx_fn fn, void *arg,
              svc_err_t *err);

/* One schema change: version > 0, unique within a list; sql may hold several statements. */
typedef struct {
    int version;
    const char *name;
    const char *sql;
} svc_migration_t;

/*
 * Brings the database up to date: in one session, takes a fixed advisory
 * lock (so instances starting together wait for each other), creates
 * schema_migrations if missing, then applies each migration whose version is
 * not recorded there, in version order whatever the order of m, each in its
 * own transaction together with its schema_migrations row, and unlocks.
 * statement_timeout is off meanwhile. Migration SQL must not hold BEGIN,
 * COMMIT or anything that cannot run in a transaction (CREATE INDEX
 * CONCURRENTLY). Stops at the first failing migration: the ones before it stay
 * applied, and err names its version. Returns 0, or -1 with err set
 * (INVALID_ARGUMENT for a bad list). Blocks until the lock is free.
 */
int svc_pg_migrate(svc_pg_pool_t *pool, const svc_migration_t *m, int n, svc_err_t *err);

/*
 * Runs one parameterised statement (text parameters) and checks its result
 * status is want; otherwise sets err through svc_pg_error (naming what) and
 * returns NULL. The caller clears the result.
 */
PGresult *svc_pg_exec(PGconn *conn, const char *sql, int n_params, const char *const *params,
                      ExecStatusType want, const char *what, svc_err_t *err);

/* A column of a result row as an integer (0 for NULL). */
int64_t svc_pg_i64(const PGresult *res, int row, int col);

/*
 * svc_pg_migrate, retried once a second while the database is unreachable
 * (it may still be starting), for at most patience_s seconds.
 */
int svc_pg_migrate_wait(svc_pg_pool_t *pool, const svc_migration_t *m, int n, int patience_s,
                        svc_err_t *err);

#endif
