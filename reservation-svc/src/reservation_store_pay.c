/*
 * reservation_store_pay.c: the SQL of payments and cancellations. The
 * reservation's status (seats) and its payment's status (money) change in
 * the same transaction, which has locked the seats first, then the
 * reservation, then the payment (the order of reservation_store.c).
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reservation_store_internal.h"
#include "svc/timer.h"

#define PAYMENT_COLUMNS                                                                            \
    "p.id, p.reservation_id, p.user_id, p.amount, p.status, coalesce(p.authorization_id, 0),"      \
    " coalesce(p.balance_txn_id, 0), coalesce(p.balance_after, 0), coalesce(p.refund_txn_id, 0),"  \
    " r.expires_at_ms"
#define PAYMENT_FROM " FROM payments p JOIN reservations r ON r.id = p.reservation_id"

static void
read_payment(const PGresult *res, int row, rsv_payment_t *pay)
{
    pay->id = svc_pg_i64(res, row, 0);
    pay->reservation_id = svc_pg_i64(res, row, 1);
    pay->user_id = svc_pg_i64(res, row, 2);
    pay->amount = svc_pg_i64(res, row, 3);
    pay->status = (int)svc_pg_i64(res, row, 4);
    pay->authorization_id = svc_pg_i64(res, row, 5);
    pay->balance_txn_id = svc_pg_i64(res, row, 6);
    pay->balance_after = svc_pg_i64(res, row, 7);
    pay->refund_txn_id = svc_pg_i64(res, row, 8);
    pay->hold_expires_at_ms = svc_pg_i64(res, row, 9);
    snprintf(pay->key, sizeof(pay->key), "reservation:%" PRId64, pay->reservation_id);
}

/*
 * Reads the payment where (by payment id, or by reservation id when
 * by_reservation), locking it with FOR UPDATE OF p when lock. Returns 1 when
 * found, 0 when not, -1 on error.
 */
static int
load_payment(PGconn *conn, int64_t id, bool by_reservation, bool lock, rsv_payment_t *pay,
             svc_err_t *err)
{
    char v[24];
    const char *p[] = {v};
    const char *sql =
        by_reservation
            ? (lock ? "SELECT " PAYMENT_COLUMNS PAYMENT_FROM " WHERE p.reservation_id = $1"
                      " FOR UPDATE OF p"
                    : "SELECT " PAYMENT_COLUMNS PAYMENT_FROM " WHERE p.reservation_id = $1")
            : (lock ? "SELECT " PAYMENT_COLUMNS PAYMENT_FROM " WHERE p.id = $1 FOR UPDATE OF p"
                    : "SELECT " PAYMENT_COLUMNS PAYMENT_FROM " WHERE p.id = $1");
    PGresult *res;
    int found;

    I64(v, id);
    res = svc_pg_exec(conn, sql, 1, p, PGRES_TUPLES_OK, "read payment", err);
    if (res == NULL) {
        return -1;
    }
    found = PQntuples(res) == 1;
    if (found) {
        read_payment(res, 0, pay);
    }
    PQclear(res);
    return found;
}

/* Sets a payment's status (and the columns given), only from status from. */
static int
set_payment(PGconn *conn, int64_t id, int from, int to, int64_t authorization_id, svc_err_t *err)
{
    char pid[24], f[24], t[24], auth[24];
    const char *p[] = {pid, f, t, auth};
    PGresult *res;

    I64(pid, id);
    I64(f, from);
    I64(t, to);
    I64(auth, authorization_id);
    res = svc_pg_exec(conn,
                      "UPDATE payments SET status = $3, updated_at = now(),"
                      " authorization_id = coalesce(nullif($4::bigint, 0), authorization_id)"
                      " WHERE id = $1 AND status = $2",
                      4, p, PGRES_COMMAND_OK, "record payment", err);
    PQclear(res);
    return res == NULL ? -1 : 0;
}

/*
 * Locks the seats reservation id holds or owns (in order), then the
 * reservation, and reads it. *owned: every seat of it is still marked as
 * its own (held or sold).
 */
static int
lock_reservation(PGconn *conn, int64_t id, int64_t now_ms, svc_arena_t *arena, rsv_reservation_t *r,
                 bool *owned, svc_err_t *err)
{
    char rid[24];
    const char *p[] = {rid};
    PGresult *res;
    int n_marked;

    I64(rid, id);
    res = svc_pg_exec(conn,
                      "SELECT number FROM seats WHERE hold_reservation_id = $1"
                      " ORDER BY schedule_id, number FOR UPDATE",
                      1, p, PGRES_TUPLES_OK, "lock seats", err);
    if (res == NULL) {
        return -1;
    }
    n_marked = PQntuples(res);
    PQclear(res);
    if (rsv_store_read_reservation(conn, id, now_ms, true, arena, r, err) != 0) {
        return -1;
    }
    *owned = n_marked == r->n_seats;
    return 0;
}

/*
 * Ends reservation id (locked, with its seats) in status: reservation_seats
 * no longer live, seats free.
 */
static int
end_reservation(PGconn *conn, int64_t id, int status, svc_err_t *err)
{
    char rid[24], st[24];
    const char *p[] = {rid, st, RSV_STR(RSV_SEAT_AVAILABLE)};
    PGresult *res;

    I64(rid, id);
    I64(st, status);
    res = svc_pg_exec(conn,
                      "WITH r AS (UPDATE reservations SET status = $2, updated_at = now()"
                      " WHERE id = $1),"
                      " rs AS (UPDATE reservation_seats SET live = false WHERE reservation_id = $1)"
                      " UPDATE seats SET status = $3, hold_reservation_id = NULL,"
                      " hold_user_id = NULL, hold_expires_at_ms = NULL"
                      " WHERE hold_reservation_id = $1",
                      3, p, PGRES_COMMAND_OK, "end reservation", err);
    PQclear(res);
    return res == NULL ? -1 : 0;
}

static const char *
status_word(int status)
{
    switch (status) {
    case RSV_EXPIRED:
        return "expired";
    case RSV_CANCELLED:
        return "cancelled";
    case RSV_CONFIRMED:
        return "confirmed";
    default:
        return "held";
    }
}

/* ---------- PayReservation ---------- */

/* A user's call on one of their reservations (pay_begin_tx, cancel_tx). */
typedef struct {
    int64_t id, user_id, now_ms;
    svc_arena_t *arena;
    rsv_reservation_t *r;
    rsv_payment_t *pay;
} user_call_ctx_t;

static int
pay_begin_tx(PGconn *conn, void *arg, svc_err_t *err)
{
    user_call_ctx_t *c = arg;
    char rid[24], user[24], amount[24], key[48];
    const char *p[] = {rid, user, amount, key, RSV_STR(RSV_PAY_PENDING), RSV_STR(RSV_PAY_FAILED)};
    PGresult *res;
    int found;

    if (rsv_store_read_reservation(conn, c->id, c->now_ms, true, c->arena, c->r, err) != 0) {
        return -1;
    }
    if (c->r->user_id != c->user_id) {
        svc_err_set(err, SVC_PERMISSION_DENIED, "reservation %" PRId64 " is not yours", c->id);
        return -1;
    }
    found = load_payment(conn, c->id, true, true, c->pay, err);
    if (found < 0) {
        return -1;
    }
    if (found && c->pay->status != RSV_PAY_FAILED) {
        return 0; /* carry on with it (or answer as the first time) */
    }
    if (c->r->status != RSV_HELD) {
        svc_err_set(err, SVC_FAILED_PRECONDITION, "reservation %" PRId64 " is %s", c->id,
                    status_word(c->r->status));
        return -1;
    }
    I64(rid, c->id);
    I64(user, c->user_id);
    I64(amount, c->r->amount);
    snprintf(key, sizeof(key), "reservation:%" PRId64, c->id);
    res = svc_pg_exec(conn,
                      "INSERT INTO payments (reservation_id, user_id, amount, idempotency_key)"
                      " VALUES ($1, $2, $3, $4) ON CONFLICT (reservation_id)"
                      " DO UPDATE SET status = $5, updated_at = now() WHERE payments.status = $6",
                      6, p, PGRES_COMMAND_OK, "record payment", err);
    if (res == NULL) {
        return -1;
    }
    PQclear(res);
    return load_payment(conn, c->id, true, false, c->pay, err) == 1 ? 0 : -1;
}

int
rsv_store_pay_begin(svc_pg_pool_t *db, int64_t reservation_id, int64_t user_id, int64_t now_ms,
                    int64_t deadline_ms, svc_arena_t *arena, rsv_reservation_t *r,
                    rsv_payment_t *pay, svc_err_t *err)
{
    user_call_ctx_t c = {reservation_id, user_id, now_ms, arena, r, pay};

    memset(pay, 0, sizeof(*pay));
    return svc_pg_tx(db, deadline_ms, pay_begin_tx, &c, err);
}

typedef struct {
    int64_t payment_id, authorization_id, spent_txn_id, balance_after, now_ms;
    svc_arena_t *arena;
    rsv_payment_t *pay;
} decide_ctx_t;

/* A payment whose money is already spent (spent_txn_id): records the spend. */
static int
record_spend(PGconn *conn, const decide_ctx_t *c, svc_err_t *err)
{
    char pid[24], txn[24], after[24];
    const char *p[] = {pid, txn, after};
    PGresult *res;

    I64(pid, c->payment_id);
    I64(txn, c->spent_txn_id);
    I64(after, c->balance_after);
    res = svc_pg_exec(conn,
                      "UPDATE payments SET balance_txn_id = $2, balance_after = $3 WHERE id = $1",
                      3, p, PGRES_COMMAND_OK, "record payment", err);
    PQclear(res);
    return res == NULL ? -1 : 0;
}

/*
 * Locks payment_id with what it pays for, in the lock order: the seats of
 * its reservation, the reservation (into *r, its seats in arena), then the
 * payment (into *pay). NOT_FOUND when there is no such payment.
 */
static int
lock_payment(PGconn *conn, int64_t payment_id, int64_t now_ms, svc_arena_t *arena,
             rsv_reservation_t *r, bool *owned, rsv_payment_t *pay, svc_err_t *err)
{
    rsv_payment_t peek; /* the reservation id, read unlocked: seats come first */
    int found = load_payment(conn, payment_id, false, false, &peek, err);

    if (found == 0) {
        svc_err_set(err, SVC_NOT_FOUND, "payment %" PRId64 " not found", payment_id);
    }
    if (found != 1 ||
        lock_reservation(conn, peek.reservation_id, now_ms, arena, r, owned, err) != 0 ||
        load_payment(conn, payment_id, false, true, pay, err) != 1) {
        return -1;
    }
    return 0;
}

static int
pay_decide_tx(PGconn *conn, void *arg, svc_err_t *err)
{
    decide_ctx_t *c = arg;
    rsv_reservation_t r;
    bool owned;
    int to;

    if (lock_payment(conn, c->payment_id, c->now_ms, c->arena, &r, &owned, c->pay, err) != 0) {
        return -1;
    }
    if (c->pay->status != RSV_PAY_PENDING) {
        return 0; /* decided already, by another call, the sweeper or a cancel */
    }
    if (r.status == RSV_HELD && owned) {
        char rid[24];
        const char *p[] = {rid, RSV_STR(RSV_CONFIRMED), RSV_STR(RSV_SEAT_SOLD)};
        PGresult *res;
        I64(rid, r.id);
        res = svc_pg_exec(conn,
                          "WITH r AS (UPDATE reservations SET status = $2, updated_at = now()"
                          " WHERE id = $1)"
                          " UPDATE seats SET status = $3 WHERE hold_reservation_id = $1",
                          3, p, PGRES_COMMAND_OK, "confirm reservation", err);
        if (res == NULL) {
            return -1;
        }
        PQclear(res);
        to = c->pay->amount == 0 || c->spent_txn_id != 0 ? RSV_PAY_CHARGED : RSV_PAY_CAPTURING;
    } else {
        if (r.status == RSV_EXPIRED && end_reservation(conn, r.id, RSV_EXPIRED, err) != 0) {
            return -1;
        }
        to = c->spent_txn_id != 0       ? RSV_PAY_REFUNDING
             : c->authorization_id != 0 ? RSV_PAY_VOIDING
                                        : RSV_PAY_FAILED;
    }
    if ((c->spent_txn_id != 0 && record_spend(conn, c, err) != 0) ||
        set_payment(conn, c->payment_id, RSV_PAY_PENDING, to, c->authorization_id, err) != 0) {
        return -1;
    }
    c->pay->status = to;
    c->pay->authorization_id = c->authorization_id;
    if (c->spent_txn_id != 0) {
        c->pay->balance_txn_id = c->spent_txn_id;
        c->pay->balance_after = c->balance_after;
    }
    return 0;
}

int
rsv_store_pay_decide(svc_pg_pool_t *db, int64_t payment_id, int64_t authorization_id,
                     int64_t spent_txn_id, int64_t balance_after, int64_t now_ms,
                     int64_t deadline_ms, rsv_payment_t *pay, svc_err_t *err)
{
    decide_ctx_t c = {payment_id, authorization_id,   spent_txn_id, balance_after,
                      now_ms,     svc_arena_create(), pay};
    int rc;

    if (c.arena == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    rc = svc_pg_tx(db, deadline_ms, pay_decide_tx, &c, err);
    svc_arena_destroy(c.arena);
    return rc;
}

/* One statement on one payment, outside any other transaction. */
static int
pay_update(svc_pg_pool_t *db, const char *sql, int n, const char *const *p, int64_t deadline_ms,
           svc_err_t *err)
{
    PGconn *conn = svc_pg_acquire(db, deadline_ms, err);
    PGresult *res;

    if (conn == NULL) {
        return -1;
    }
    res = svc_pg_exec(conn, sql, n, p, PGRES_COMMAND_OK, "record payment outcome", err);
    svc_pg_release(db, conn, res == NULL && err->code == SVC_UNAVAILABLE);
    PQclear(res);
    return res == NULL ? -1 : 0;
}

/* $1's status from $2 to $3. */
#define SQL_TRANSITION                                                                             \
    "UPDATE payments SET status = $3, updated_at = now() WHERE id = $1 AND status = $2"

/* One payment from status from to status to, in a statement of its own. */
static int
pay_transition(svc_pg_pool_t *db, int64_t payment_id, int from, int to, int64_t deadline_ms,
               svc_err_t *err)
{
    char pid[24], f[24], t[24];
    const char *p[] = {pid, f, t};

    I64(pid, payment_id);
    I64(f, from);
    I64(t, to);
    return pay_update(db, SQL_TRANSITION, 3, p, deadline_ms, err);
}

/* One statement on one payment, then the payment as it stands, on the same connection. */
static int
pay_update_load(svc_pg_pool_t *db, const char *sql, int n, const char *const *p, int64_t payment_id,
                int64_t deadline_ms, rsv_payment_t *pay, svc_err_t *err)
{
    PGconn *conn = svc_pg_acquire(db, deadline_ms, err);
    PGresult *res;
    int rc = -1;

    if (conn == NULL) {
        return -1;
    }
    res = svc_pg_exec(conn, sql, n, p, PGRES_COMMAND_OK, "record payment outcome", err);
    if (res != NULL && load_payment(conn, payment_id, false, false, pay, err) == 1) {
        rc = 0;
    }
    PQclear(res);
    svc_pg_release(db, conn, rc != 0 && err->code == SVC_UNAVAILABLE);
    return rc;
}

int
rsv_store_pay_refused(svc_pg_pool_t *db, int64_t payment_id, int64_t deadline_ms,
                      rsv_payment_t *pay, svc_err_t *err)
{
    char pid[24];
    const char *p[] = {pid, RSV_STR(RSV_PAY_PENDING), RSV_STR(RSV_PAY_FAILED)};

    I64(pid, payment_id);
    return pay_update_load(db, SQL_TRANSITION, 3, p, payment_id, deadline_ms, pay, err);
}

/* $4 CAPTURING becomes $5 CHARGED; $6 REFUNDING stays, now knowing the spend to refund. */
#define SQL_CAPTURED                                                                               \
    "UPDATE payments SET balance_txn_id = $2, balance_after = $3, updated_at = now(),"             \
    " status = CASE status WHEN $4::smallint THEN $5::smallint ELSE status END"                    \
    " WHERE id = $1 AND status IN ($4, $6)"

int
rsv_store_pay_captured(svc_pg_pool_t *db, int64_t payment_id, int64_t balance_txn_id,
                       int64_t balance_after, int64_t deadline_ms, rsv_payment_t *pay,
                       svc_err_t *err)
{
    char pid[24], txn[24], after[24];
    const char *p[] = {pid,
                       txn,
                       after,
                       RSV_STR(RSV_PAY_CAPTURING),
                       RSV_STR(RSV_PAY_CHARGED),
                       RSV_STR(RSV_PAY_REFUNDING)};

    I64(pid, payment_id);
    I64(txn, balance_txn_id);
    I64(after, balance_after);
    return pay_update_load(db, SQL_CAPTURED, 6, p, payment_id, deadline_ms, pay, err);
}

int
rsv_store_pay_voided(svc_pg_pool_t *db, int64_t payment_id, int64_t deadline_ms, svc_err_t *err)
{
    return pay_transition(db, payment_id, RSV_PAY_VOIDING, RSV_PAY_FAILED, deadline_ms, err);
}

int
rsv_store_pay_refunded(svc_pg_pool_t *db, int64_t payment_id, int64_t refund_txn_id,
                       int64_t deadline_ms, svc_err_t *err)
{
    char pid[24], txn[24];
    const char *p[] = {pid, txn, RSV_STR(RSV_PAY_REFUNDING), RSV_STR(RSV_PAY_REFUNDED)};

    I64(pid, payment_id);
    I64(txn, refund_txn_id);
    return pay_update(db,
                      "UPDATE payments SET status = $4, updated_at = now(),"
                      " refund_txn_id = nullif($2::bigint, 0) WHERE id = $1 AND status = $3",
                      4, p, deadline_ms, err);
}

/* $1: how old a PENDING ($4) payment must be, $2: any other; $3: how many; $4-$7: unsettled. */
#define SQL_UNSETTLED                                                                              \
    "SELECT " PAYMENT_COLUMNS PAYMENT_FROM " WHERE p.status IN ($4, $5, $6, $7)"                   \
    " AND p.updated_at < now() - (CASE WHEN p.status = $4 THEN $1::bigint ELSE $2::bigint END)"    \
    " * interval '1 millisecond' ORDER BY p.updated_at LIMIT $3"

int
rsv_store_unsettled_payments(svc_pg_pool_t *db, int64_t pending_age_ms, int64_t other_age_ms,
                             int max, rsv_payment_t *out, int *n, svc_err_t *err)
{
    char pending_age[24], other_age[24], lim[16];
    const char *p[] = {pending_age,
                       other_age,
                       lim,
                       RSV_STR(RSV_PAY_PENDING),
                       RSV_STR(RSV_PAY_CAPTURING),
                       RSV_STR(RSV_PAY_VOIDING),
                       RSV_STR(RSV_PAY_REFUNDING)};
    PGconn *conn = svc_pg_acquire(db, svc_now_unix_ms() + 5000, err);
    PGresult *res;

    *n = 0;
    if (conn == NULL) {
        return -1;
    }
    I64(pending_age, pending_age_ms);
    I64(other_age, other_age_ms);
    I64(lim, max);
    res = svc_pg_exec(conn, SQL_UNSETTLED, 7, p, PGRES_TUPLES_OK, "read unsettled payments", err);
    svc_pg_release(db, conn, res == NULL && err->code == SVC_UNAVAILABLE);
    if (res == NULL) {
        return -1;
    }
    for (int i = 0; i < PQntuples(res) && i < max; i++) {
        read_payment(res, i, &out[i]);
        (*n)++;
    }
    PQclear(res);
    return 0;
}

typedef struct {
    int64_t payment_id, now_ms;
    svc_arena_t *arena;
    rsv_payment_t *pay;
} uncapturable_ctx_t;

static int
pay_uncapturable_tx(PGconn *conn, void *arg, svc_err_t *err)
{
    uncapturable_ctx_t *c = arg;
    rsv_reservation_t r;
    bool owned;
    int to = 0;

    if (lock_payment(conn, c->payment_id, c->now_ms, c->arena, &r, &owned, c->pay, err) != 0) {
        return -1;
    }
    if (c->pay->status == RSV_PAY_CAPTURING && r.status == RSV_CONFIRMED) {
        /* Confirmed, never answered OK (that waits for the capture): the hold ends unpaid. */
        if (end_reservation(conn, r.id, RSV_EXPIRED, err) != 0) {
            return -1;
        }
        to = RSV_PAY_FAILED;
    } else if (c->pay->status == RSV_PAY_REFUNDING && c->pay->balance_txn_id == 0) {
        to = RSV_PAY_FAILED; /* cancelled, and nothing was ever spent */
    }
    if (to != 0) {
        if (set_payment(conn, c->payment_id, c->pay->status, to, 0, err) != 0) {
            return -1;
        }
        c->pay->status = to;
    }
    return 0;
}

int
rsv_store_pay_uncapturable(svc_pg_pool_t *db, int64_t payment_id, int64_t now_ms,
                           int64_t deadline_ms, rsv_payment_t *pay, svc_err_t *err)
{
    uncapturable_ctx_t c = {payment_id, now_ms, svc_arena_create(), pay};
    int rc;

    if (c.arena == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    rc = svc_pg_tx(db, deadline_ms, pay_uncapturable_tx, &c, err);
    svc_arena_destroy(c.arena);
    return rc;
}

int
rsv_store_pay_touch(svc_pg_pool_t *db, int64_t payment_id, int64_t deadline_ms, svc_err_t *err)
{
    char pid[24];
    const char *p[] = {pid};

    I64(pid, payment_id);
    return pay_update(db, "UPDATE payments SET updated_at = now() WHERE id = $1", 1, p, deadline_ms,
                      err);
}

/* ---------- CancelReservation ---------- */

static int
cancel_tx(PGconn *conn, void *arg, svc_err_t *err)
{
    user_call_ctx_t *c = arg;
    bool owned;
    int found, to = 0;

    memset(c->pay, 0, sizeof(*c->pay));
    if (lock_reservation(conn, c->id, c->now_ms, c->arena, c->r, &owned, err) != 0) {
        return -1;
    }
    if (c->r->user_id != c->user_id) {
        svc_err_set(err, SVC_PERMISSION_DENIED, "reservation %" PRId64 " is not yours", c->id);
        return -1;
    }
    if (c->r->status == RSV_CONFIRMED && c->r->starts_at_ms <= c->now_ms) {
        svc_err_set(err, SVC_FAILED_PRECONDITION,
                    "reservation %" PRId64 " is for a show that has started", c->id);
        return -1;
    }
    if (c->r->status != RSV_HELD && c->r->status != RSV_CONFIRMED) {
        svc_err_set(err, SVC_FAILED_PRECONDITION, "reservation %" PRId64 " is %s", c->id,
                    status_word(c->r->status));
        return -1;
    }
    if ((found = load_payment(conn, c->id, true, true, c->pay, err)) < 0 ||
        end_reservation(conn, c->id, RSV_CANCELLED, err) != 0) {
        return -1;
    }
    if (found && c->pay->status == RSV_PAY_PENDING) {
        to = RSV_PAY_VOIDING; /* the payment under way loses: its authorization goes */
    } else if (found &&
               (c->pay->status == RSV_PAY_CHARGED || c->pay->status == RSV_PAY_CAPTURING)) {
        to = c->pay->amount == 0 ? RSV_PAY_REFUNDED : RSV_PAY_REFUNDING;
    }
    if (to != 0) {
        if (set_payment(conn, c->pay->id, c->pay->status, to, 0, err) != 0) {
            return -1;
        }
        c->pay->status = to;
    }
    c->r->status = RSV_CANCELLED;
    return 0;
}

int
rsv_store_cancel(svc_pg_pool_t *db, int64_t reservation_id, int64_t user_id, int64_t now_ms,
                 int64_t deadline_ms, svc_arena_t *arena, rsv_reservation_t *out,
                 rsv_payment_t *pay, svc_err_t *err)
{
    user_call_ctx_t c = {reservation_id, user_id, now_ms, arena, out, pay};

    return svc_pg_tx(db, deadline_ms, cancel_tx, &c, err);
}
