/*
 * balance_store.c: the SQL of balance-svc. Every statement uses parameters;
 * the balance and the held (authorized) amount are computed in the
 * transaction that holds the account's row lock, and the CHECK constraints
 * are the last net under that logic. Kinds and states travel as parameters,
 * named once in balance_store.h.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balance_store.h"
#include "svc/timer.h"
#include "svc/metrics.h"

/* A write whose lock was lost (a newer fence is in the row): the fence refused it. */
static svc_metric_t *
fence_rejections(void)
{
    static svc_metric_t *_Atomic m;
    svc_metric_t *got = m;

    if (got == NULL) {
        got = svc_metric(SVC_METRIC_COUNTER, "lock_fence_rejections_total",
                         "Writes refused because a newer lock fence was already in the row.",
                         "resource=\"account\"");
        m = got;
    }
    return got;
}

#define NUM 24 /* room for an int64_t in decimal */

/* Unix ms of the database's clock, read when the statement runs. */
#define SQL_NOW_MS "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"

/* One account inside its transaction. */
typedef struct {
    PGconn *conn;
    int64_t user_id;
    char user[NUM];
    int64_t now_ms;  /* database clock once the row was locked */
    int64_t balance; /* as the ops so far left it */
    int64_t held;    /* pending, unexpired authorizations */
} acct_t;

typedef struct {
    int64_t user_id, fence, deadline_ms;
    balance_op_t *ops;
    int n_ops;
} apply_ctx_t;

static void
num(char *buf, int64_t v)
{
    snprintf(buf, NUM, "%" PRId64, v);
}

static void
insufficient(balance_op_t *op, const acct_t *a)
{
    svc_err_set(&op->err, SVC_FAILED_PRECONDITION,
                "insufficient balance: %" PRId64 " available, %" PRId64 " needed",
                a->balance - a->held, op->amount);
    op->balance = a->balance;
    op->available = a->balance - a->held;
}

/* ---------- earlier uses of a key ---------- */

/*
 * Looks up an earlier use of op's key, in the ledger or among the
 * authorizations (one namespace per user). Returns 1 and fills op's answer
 * when found (a replay, or INVALID_ARGUMENT when it was something else), 0
 * when there is none, -1 on a database error.
 */
static int
find_earlier(acct_t *a, balance_op_t *op, svc_err_t *err)
{
    static const balance_kind_t ledger_kind[] = {
        [BALANCE_OP_TOP_UP] = BALANCE_TOP_UP,
        [BALANCE_OP_SPEND] = BALANCE_SPEND,
        [BALANCE_OP_REFUND] = BALANCE_REFUND,
    };
    char now[NUM], pending[NUM], voided[NUM];
    const char *params[] = {a->user, op->key, now, pending, voided};
    PGresult *res;

    num(now, a->now_ms);
    num(pending, BALANCE_AUTH_PENDING);
    num(voided, BALANCE_AUTH_VOIDED);
    /* For an authorization, column 3 is its status now: a pending one past its expiry is void. */
    res = svc_pg_exec(
        a->conn,
        "SELECT true, id, CASE WHEN status = $4 AND expires_at_ms <= $3 THEN $5 ELSE status END,"
        " amount, 0, 0, expires_at_ms FROM authorizations"
        " WHERE user_id = $1 AND idempotency_key = $2"
        " UNION ALL SELECT false, id, kind, amount, balance_after, coalesce(refund_of, 0), 0"
        " FROM ledger WHERE user_id = $1 AND idempotency_key = $2 ORDER BY 1 DESC LIMIT 1",
        5, params, PGRES_TUPLES_OK, "read earlier operation", err);
    bool is_auth, same;

    if (res == NULL) {
        return -1;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        return 0;
    }
    is_auth = PQgetvalue(res, 0, 0)[0] == 't';
    if (op->kind == BALANCE_OP_AUTHORIZE) {
        same = is_auth && svc_pg_i64(res, 0, 3) == op->amount;
    } else {
        same = !is_auth && svc_pg_i64(res, 0, 2) == ledger_kind[op->kind] &&
               svc_pg_i64(res, 0, 3) == op->amount &&
               (op->kind != BALANCE_OP_REFUND || svc_pg_i64(res, 0, 5) == op->target_id);
    }
    if (!same) {
        svc_err_set(&op->err, SVC_INVALID_ARGUMENT,
                    "idempotency key %.64s was used for another operation", op->key);
    } else if (is_auth) {
        svc_err_clear(&op->err);
        op->authorization_id = svc_pg_i64(res, 0, 1);
        op->expires_at_ms = svc_pg_i64(res, 0, 6);
        op->auth_status = (int)svc_pg_i64(res, 0, 2);
        op->balance = a->balance;
        op->available = a->balance - a->held;
        op->replayed = true;
    } else {
        svc_err_clear(&op->err);
        op->transaction_id = svc_pg_i64(res, 0, 1);
        op->balance = svc_pg_i64(res, 0, 4);
        op->replayed = true;
    }
    PQclear(res);
    return 1;
}

/* When op cannot be applied now: answers an earlier use of its key, else refusal. */
static int
refuse_unless_replay(acct_t *a, balance_op_t *op, svc_err_t *err,
                     void (*refuse)(balance_op_t *, const acct_t *))
{
    int found = find_earlier(a, op, err);

    if (found == 0) {
        refuse(op, a);
    }
    return found < 0 ? -1 : 0;
}

/* ---------- ledger rows: top-up, spend, refund ---------- */

/*
 * Writes one ledger row unless the key is taken (in the ledger or by an
 * authorization); then answers as the key's first use did.
 */
static int
write_ledger(acct_t *a, balance_op_t *op, balance_kind_t kind, int64_t next, const char *reference,
             const char *refund_of, svc_err_t *err)
{
    char kind_s[NUM], amount[NUM], after[NUM];
    const char *params[] = {a->user, kind_s, amount, after, op->key, reference, refund_of};
    PGresult *res;

    num(kind_s, kind);
    num(amount, op->amount);
    num(after, next);
    res = svc_pg_exec(a->conn,
                      "INSERT INTO ledger (user_id, kind, amount, balance_after, idempotency_key,"
                      " reference, refund_of) SELECT $1::bigint, $2::smallint, $3::bigint,"
                      " $4::bigint, $5, $6, $7::bigint WHERE NOT EXISTS (SELECT 1 FROM"
                      " authorizations WHERE user_id = $1 AND idempotency_key = $5)"
                      " ON CONFLICT (user_id, idempotency_key) DO NOTHING RETURNING id",
                      7, params, PGRES_TUPLES_OK, "write ledger", err);
    if (res == NULL) {
        return -1;
    }
    if (PQntuples(res) == 0) { /* the key is taken: answer as the first time */
        PQclear(res);
        if (find_earlier(a, op, err) < 0) {
            return -1;
        }
        return 0;
    }
    svc_err_clear(&op->err);
    op->transaction_id = svc_pg_i64(res, 0, 0);
    op->balance = next;
    op->replayed = false;
    a->balance = next;
    PQclear(res);
    return 0;
}

static void
over_cap(balance_op_t *op, const acct_t *a)
{
    svc_err_set(&op->err, SVC_FAILED_PRECONDITION, "balance would exceed %lld",
                (long long)BALANCE_MAX_BALANCE);
    op->balance = a->balance;
}

static int
apply_top_up(acct_t *a, balance_op_t *op, svc_err_t *err)
{
    int64_t next = a->balance + op->amount;

    if (next > BALANCE_MAX_BALANCE) {
        return refuse_unless_replay(a, op, err, over_cap);
    }
    return write_ledger(a, op, BALANCE_TOP_UP, next, "", NULL, err);
}

static int
apply_spend(acct_t *a, balance_op_t *op, svc_err_t *err)
{
    if (a->balance - a->held < op->amount) {
        return refuse_unless_replay(a, op, err, insufficient);
    }
    return write_ledger(a, op, BALANCE_SPEND, a->balance - op->amount, op->reference, NULL, err);
}

static void
over_refund(balance_op_t *op, const acct_t *a)
{
    svc_err_set(&op->err, SVC_FAILED_PRECONDITION,
                "refunds of transaction %" PRId64 " would exceed its amount", op->target_id);
    op->balance = a->balance;
}

static int
apply_refund(acct_t *a, balance_op_t *op, svc_err_t *err)
{
    char spend[NUM], kind[NUM];
    const char *params[] = {a->user, spend, kind};
    PGresult *res;
    int64_t spent, refunded;
    char *reference;
    int rc;

    num(spend, op->target_id);
    num(kind, BALANCE_SPEND);
    res = svc_pg_exec(a->conn,
                      "SELECT s.amount, s.reference, (SELECT coalesce(sum(r.amount), 0)::bigint"
                      " FROM ledger r WHERE r.refund_of = s.id) FROM ledger s"
                      " WHERE s.id = $2 AND s.user_id = $1 AND s.kind = $3",
                      3, params, PGRES_TUPLES_OK, "read spend", err);
    if (res == NULL) {
        return -1;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        svc_err_set(&op->err, SVC_NOT_FOUND,
                    "transaction %" PRId64 " is not a spend of user %" PRId64, op->target_id,
                    a->user_id);
        return 0;
    }
    spent = svc_pg_i64(res, 0, 0);
    refunded = svc_pg_i64(res, 0, 2);
    reference = strdup(PQgetvalue(res, 0, 1));
    PQclear(res);
    if (reference == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    if (refunded + op->amount > spent) {
        rc = refuse_unless_replay(a, op, err, over_refund);
    } else if (a->balance + op->amount > BALANCE_MAX_BALANCE) {
        rc = refuse_unless_replay(a, op, err, over_cap);
    } else {
        rc = write_ledger(a, op, BALANCE_REFUND, a->balance + op->amount, reference, spend, err);
    }
    free(reference);
    return rc;
}

/* ---------- authorizations ---------- */

static int
apply_authorize(acct_t *a, balance_op_t *op, svc_err_t *err)
{
    char amount[NUM], status[NUM], expires[NUM];
    const char *params[] = {a->user, amount, op->key, op->reference, status, expires};
    int64_t expires_at = a->now_ms + op->expires_in_ms;
    PGresult *res;

    if (a->balance - a->held < op->amount) {
        return refuse_unless_replay(a, op, err, insufficient);
    }
    num(amount, op->amount);
    num(status, BALANCE_AUTH_PENDING);
    num(expires, expires_at);
    res = svc_pg_exec(a->conn,
                      "INSERT INTO authorizations (user_id, amount, idempotency_key, reference,"
                      " status, expires_at_ms) SELECT $1::bigint, $2::bigint, $3, $4,"
                      " $5::smallint, $6::bigint WHERE NOT EXISTS (SELECT 1 FROM ledger"
                      " WHERE user_id = $1 AND idempotency_key = $3)"
                      " ON CONFLICT (user_id, idempotency_key) DO NOTHING RETURNING id",
                      6, params, PGRES_TUPLES_OK, "write authorization", err);
    if (res == NULL) {
        return -1;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        return find_earlier(a, op, err) < 0 ? -1 : 0;
    }
    a->held += op->amount;
    svc_err_clear(&op->err);
    op->authorization_id = svc_pg_i64(res, 0, 0);
    op->expires_at_ms = expires_at;
    op->auth_status = BALANCE_AUTH_PENDING;
    op->balance = a->balance;
    op->available = a->balance - a->held;
    op->replayed = false;
    PQclear(res);
    return 0;
}

typedef struct {
    int64_t amount, expires_at_ms, capture_txn_id, updated_at_ms;
    balance_auth_status_t status;
    char *key, *reference; /* malloc'd */
} auth_row_t;

/* Locks authorization op->target_id of this account. 1 found, 0 not found (op answered), -1. */
static int
lock_authorization(acct_t *a, balance_op_t *op, auth_row_t *row, svc_err_t *err)
{
    char id[NUM];
    const char *params[] = {a->user, id};
    PGresult *res;

    num(id, op->target_id);
    res = svc_pg_exec(a->conn,
                      "SELECT amount, expires_at_ms, coalesce(capture_txn_id, 0), status,"
                      " (extract(epoch FROM updated_at) * 1000)::bigint, idempotency_key,"
                      " reference FROM authorizations WHERE id = $2 AND user_id = $1 FOR UPDATE",
                      2, params, PGRES_TUPLES_OK, "lock authorization", err);
    if (res == NULL) {
        return -1;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        svc_err_set(&op->err, SVC_NOT_FOUND, "authorization %" PRId64 " not found", op->target_id);
        return 0;
    }
    row->amount = svc_pg_i64(res, 0, 0);
    row->expires_at_ms = svc_pg_i64(res, 0, 1);
    row->capture_txn_id = svc_pg_i64(res, 0, 2);
    row->status = (balance_auth_status_t)svc_pg_i64(res, 0, 3);
    row->updated_at_ms = svc_pg_i64(res, 0, 4);
    row->key = strdup(PQgetvalue(res, 0, 5));
    row->reference = strdup(PQgetvalue(res, 0, 6));
    PQclear(res);
    if (row->key == NULL || row->reference == NULL) {
        free(row->key);
        free(row->reference);
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    return 1;
}

static int
set_authorization(acct_t *a, int64_t id, balance_auth_status_t status, const char *capture_txn_id,
                  svc_err_t *err)
{
    char id_s[NUM], status_s[NUM];
    const char *params[] = {id_s, status_s, capture_txn_id};
    PGresult *res;

    num(id_s, id);
    num(status_s, status);
    res = svc_pg_exec(a->conn,
                      "UPDATE authorizations SET status = $2, capture_txn_id = $3::bigint,"
                      " updated_at = now() WHERE id = $1",
                      3, params, PGRES_COMMAND_OK, "update authorization", err);
    PQclear(res);
    return res == NULL ? -1 : 0;
}

/* A voided authorization: by Void before it expired, or by itself (expiry, sweeper) after. */
static void
refuse_voided(balance_op_t *op, const auth_row_t *row)
{
    if (row->updated_at_ms >= row->expires_at_ms) {
        svc_err_set(&op->err, SVC_FAILED_PRECONDITION, "authorization %" PRId64 " expired",
                    op->target_id);
    } else {
        svc_err_set(&op->err, SVC_FAILED_PRECONDITION, "authorization %" PRId64 " was voided",
                    op->target_id);
    }
}

/* Answers the capture that already happened, from its ledger row. */
static int
replay_capture(acct_t *a, balance_op_t *op, const auth_row_t *row, svc_err_t *err)
{
    char txn[NUM];
    const char *params[] = {txn};
    PGresult *res;

    num(txn, row->capture_txn_id);
    res = svc_pg_exec(a->conn, "SELECT balance_after FROM ledger WHERE id = $1", 1, params,
                      PGRES_TUPLES_OK, "read capture", err);
    if (res == NULL) {
        return -1;
    }
    svc_err_clear(&op->err);
    op->transaction_id = row->capture_txn_id;
    op->balance = PQntuples(res) > 0 ? svc_pg_i64(res, 0, 0) : a->balance;
    op->replayed = true;
    PQclear(res);
    return 0;
}

static int
capture_pending(acct_t *a, balance_op_t *op, const auth_row_t *row, svc_err_t *err)
{
    bool live = row->expires_at_ms > a->now_ms;
    int64_t held_without = live ? a->held - row->amount : a->held;
    char kind[NUM], amount[NUM], after[NUM], txn[NUM];
    const char *params[] = {a->user, kind, amount, after, row->key, row->reference};
    PGresult *res;

    if (a->balance - held_without < row->amount) {
        /* Only an expired one can get here: its money went to other uses. */
        svc_err_set(&op->err, SVC_FAILED_PRECONDITION, "authorization %" PRId64 " expired",
                    op->target_id);
        return set_authorization(a, op->target_id, BALANCE_AUTH_VOIDED, NULL, err);
    }
    num(kind, BALANCE_SPEND);
    num(amount, row->amount);
    num(after, a->balance - row->amount);
    res = svc_pg_exec(a->conn,
                      "INSERT INTO ledger (user_id, kind, amount, balance_after, idempotency_key,"
                      " reference) VALUES ($1, $2, $3, $4, $5, $6)"
                      " ON CONFLICT (user_id, idempotency_key) DO NOTHING RETURNING id",
                      6, params, PGRES_TUPLES_OK, "write capture", err);
    if (res == NULL) {
        return -1;
    }
    if (PQntuples(res) == 0) { /* cannot happen while keys share one namespace */
        PQclear(res);
        svc_err_set(&op->err, SVC_FAILED_PRECONDITION,
                    "idempotency key of authorization %" PRId64 " is taken", op->target_id);
        return 0;
    }
    op->transaction_id = svc_pg_i64(res, 0, 0);
    PQclear(res);
    num(txn, op->transaction_id);
    if (set_authorization(a, op->target_id, BALANCE_AUTH_CAPTURED, txn, err) != 0) {
        return -1;
    }
    a->held = held_without;
    a->balance -= row->amount;
    svc_err_clear(&op->err);
    op->balance = a->balance;
    op->replayed = false;
    return 0;
}

static int
apply_capture(acct_t *a, balance_op_t *op, svc_err_t *err)
{
    auth_row_t row = {0};
    int rc = lock_authorization(a, op, &row, err);

    if (rc <= 0) {
        return rc;
    }
    switch (row.status) {
    case BALANCE_AUTH_CAPTURED:
        rc = replay_capture(a, op, &row, err);
        break;
    case BALANCE_AUTH_VOIDED:
        refuse_voided(op, &row);
        rc = 0;
        break;
    default:
        rc = capture_pending(a, op, &row, err);
        break;
    }
    free(row.key);
    free(row.reference);
    return rc;
}

static int
apply_void(acct_t *a, balance_op_t *op, svc_err_t *err)
{
    auth_row_t row = {0};
    int rc = lock_authorization(a, op, &row, err);

    if (rc <= 0) {
        return rc;
    }
    free(row.key);
    free(row.reference);
    if (row.status == BALANCE_AUTH_CAPTURED) {
        svc_err_set(&op->err, SVC_FAILED_PRECONDITION, "authorization %" PRId64 " was captured",
                    op->target_id);
        return 0;
    }
    op->replayed = row.status == BALANCE_AUTH_VOIDED;
    if (row.status == BALANCE_AUTH_PENDING) {
        if (set_authorization(a, op->target_id, BALANCE_AUTH_VOIDED, NULL, err) != 0) {
            return -1;
        }
        if (row.expires_at_ms > a->now_ms) {
            a->held -= row.amount;
        }
    }
    svc_err_clear(&op->err);
    op->balance = a->balance;
    op->available = a->balance - a->held;
    return 0;
}

/* ---------- the transaction ---------- */

/* Locks the account row and reads what the ops need. 1 found, 0 no such account, -1. */
static int
lock_account(acct_t *a, const apply_ctx_t *ctx, svc_err_t *err)
{
    char status[NUM];
    const char *params[] = {a->user, status};
    PGresult *res;

    res = svc_pg_exec(a->conn,
                      "SELECT balance, last_fence FROM accounts WHERE user_id = $1"
                      " FOR UPDATE",
                      1, params, PGRES_TUPLES_OK, "lock account", err);
    if (res == NULL) {
        return -1;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        return 0;
    }
    a->balance = svc_pg_i64(res, 0, 0);
    if (svc_pg_i64(res, 0, 1) > ctx->fence) {
        svc_metric_add(fence_rejections(), 1);
        PQclear(res);
        svc_err_set(err, SVC_ABORTED, "lock on account %" PRId64 " was lost", ctx->user_id);
        return -1;
    }
    PQclear(res);
    /* The clock is read after the row lock: expiry is judged when the ops run. */
    num(status, BALANCE_AUTH_PENDING);
    res = svc_pg_exec(a->conn,
                      "SELECT n.now_ms, coalesce(sum(z.amount), 0)::bigint FROM (SELECT " SQL_NOW_MS
                      " AS now_ms) n LEFT JOIN authorizations z ON z.user_id = $1"
                      " AND z.status = $2 AND z.expires_at_ms > n.now_ms GROUP BY n.now_ms",
                      2, params, PGRES_TUPLES_OK, "read authorizations", err);
    if (res == NULL) {
        return -1;
    }
    a->now_ms = svc_pg_i64(res, 0, 0);
    a->held = svc_pg_i64(res, 0, 1);
    PQclear(res);
    return 1;
}

/* Writes the balance and fence, and voids the account's authorizations that expired. */
static int
finish_account(acct_t *a, const apply_ctx_t *ctx, svc_err_t *err)
{
    char fence[NUM], balance[NUM], voided[NUM], pending[NUM], now[NUM];
    const char *params[] = {a->user, fence, balance};
    const char *sweep[] = {a->user, voided, pending, now};
    PGresult *res;

    num(fence, ctx->fence);
    num(balance, a->balance);
    res = svc_pg_exec(a->conn,
                      "UPDATE accounts SET balance = $3, last_fence = $2, updated_at = now()"
                      " WHERE user_id = $1",
                      3, params, PGRES_COMMAND_OK, "update balance", err);
    if (res == NULL) {
        return -1;
    }
    PQclear(res);
    num(voided, BALANCE_AUTH_VOIDED);
    num(pending, BALANCE_AUTH_PENDING);
    num(now, a->now_ms);
    res = svc_pg_exec(a->conn,
                      "UPDATE authorizations SET status = $2, updated_at = now()"
                      " WHERE user_id = $1 AND status = $3 AND expires_at_ms <= $4",
                      4, sweep, PGRES_COMMAND_OK, "void expired authorizations", err);
    PQclear(res);
    return res == NULL ? -1 : 0;
}

/* No statement may run past the deadline of the callers the batch serves. */
static int
bound_statements(PGconn *conn, int64_t deadline_ms, svc_err_t *err)
{
    int64_t left = deadline_ms - svc_now_unix_ms();
    char ms[NUM];
    const char *params[] = {ms};
    PGresult *res;

    if (deadline_ms == INT64_MAX) {
        return 0;
    }
    if (left <= 0) {
        svc_err_set(err, SVC_DEADLINE_EXCEEDED, "deadline exceeded before the transaction");
        return -1;
    }
    num(ms, left);
    res = svc_pg_exec(conn, "SELECT set_config('statement_timeout', $1, true)", 1, params,
                      PGRES_TUPLES_OK, "bound statements", err);
    PQclear(res);
    return res == NULL ? -1 : 0;
}

static int
apply_one(acct_t *a, balance_op_t *op, svc_err_t *err)
{
    switch (op->kind) {
    case BALANCE_OP_TOP_UP:
        return apply_top_up(a, op, err);
    case BALANCE_OP_SPEND:
        return apply_spend(a, op, err);
    case BALANCE_OP_REFUND:
        return apply_refund(a, op, err);
    case BALANCE_OP_AUTHORIZE:
        return apply_authorize(a, op, err);
    case BALANCE_OP_CAPTURE:
        return apply_capture(a, op, err);
    case BALANCE_OP_VOID:
        return apply_void(a, op, err);
    }
    svc_err_set(&op->err, SVC_INTERNAL, "unknown operation");
    return 0;
}

/* The transaction body; svc_pg_tx may run it again after a serialization failure. */
static int
apply_tx(PGconn *conn, void *arg, svc_err_t *err)
{
    apply_ctx_t *ctx = arg;
    acct_t a = {.conn = conn, .user_id = ctx->user_id};
    bool any_top_up = false;
    int found;

    num(a.user, ctx->user_id);
    for (int i = 0; i < ctx->n_ops; i++) {
        any_top_up |= ctx->ops[i].kind == BALANCE_OP_TOP_UP;
        ctx->ops[i].replayed = false;
        svc_err_clear(&ctx->ops[i].err);
    }
    if (bound_statements(conn, ctx->deadline_ms, err) != 0) {
        return -1;
    }
    if (any_top_up) { /* a top-up opens the account on first use */
        const char *params[] = {a.user};
        PGresult *res =
            svc_pg_exec(conn, "INSERT INTO accounts (user_id) VALUES ($1) ON CONFLICT DO NOTHING",
                        1, params, PGRES_COMMAND_OK, "open account", err);
        if (res == NULL) {
            return -1;
        }
        PQclear(res);
    }
    found = lock_account(&a, ctx, err);
    if (found <= 0) {
        for (int i = 0; found == 0 && i < ctx->n_ops; i++) {
            svc_err_set(&ctx->ops[i].err, SVC_NOT_FOUND, "account %" PRId64 " not found",
                        ctx->user_id);
        }
        return found;
    }
    for (int i = 0; i < ctx->n_ops; i++) {
        if (apply_one(&a, &ctx->ops[i], err) != 0) {
            return -1;
        }
    }
    if (finish_account(&a, ctx, err) != 0) {
        return -1;
    }
    if (ctx->deadline_ms != INT64_MAX && svc_now_unix_ms() >= ctx->deadline_ms) {
        /* Too late for a caller: roll back rather than apply what it was told failed. */
        svc_err_set(err, SVC_DEADLINE_EXCEEDED, "deadline exceeded before commit");
        return -1;
    }
    return 0;
}

int
balance_store_apply(svc_pg_pool_t *pool, int64_t user_id, int64_t fence, balance_op_t *ops,
                    int n_ops, int64_t deadline_ms, svc_err_t *err)
{
    apply_ctx_t ctx = {user_id, fence, deadline_ms, ops, n_ops};

    return svc_pg_tx(pool, deadline_ms, apply_tx, &ctx, err);
}

/* ---------- reads and the sweep ---------- */

int
balance_store_get(svc_pg_pool_t *pool, int64_t user_id, int64_t deadline_ms, int64_t *balance,
                  int64_t *available, int64_t *updated_at_ms, svc_err_t *err)
{
    char user[NUM], pending[NUM];
    const char *params[] = {user, pending};
    PGconn *conn = svc_pg_acquire(pool, deadline_ms, err);
    PGresult *res;
    int rc = -1;

    if (conn == NULL) {
        return -1;
    }
    num(user, user_id);
    num(pending, BALANCE_AUTH_PENDING);
    res = svc_pg_exec(conn,
                      "SELECT a.balance, (extract(epoch FROM a.updated_at) * 1000)::bigint,"
                      " a.balance - (SELECT coalesce(sum(z.amount), 0)::bigint FROM"
                      " authorizations z WHERE z.user_id = a.user_id AND z.status = $2"
                      " AND z.expires_at_ms > " SQL_NOW_MS ") FROM accounts a WHERE a.user_id = $1",
                      2, params, PGRES_TUPLES_OK, "read balance", err);
    if (res != NULL && PQntuples(res) == 0) {
        svc_err_set(err, SVC_NOT_FOUND, "account %" PRId64 " not found", user_id);
    } else if (res != NULL) {
        *balance = svc_pg_i64(res, 0, 0);
        *updated_at_ms = svc_pg_i64(res, 0, 1);
        *available = svc_pg_i64(res, 0, 2);
        rc = 0;
    }
    PQclear(res);
    svc_pg_release(pool, conn, rc != 0 && err->code == SVC_UNAVAILABLE);
    return rc;
}

int
balance_store_authorization_user(svc_pg_pool_t *pool, int64_t authorization_id, int64_t deadline_ms,
                                 int64_t *user_id, svc_err_t *err)
{
    char id[NUM];
    const char *params[] = {id};
    PGconn *conn = svc_pg_acquire(pool, deadline_ms, err);
    PGresult *res;
    int rc = -1;

    if (conn == NULL) {
        return -1;
    }
    num(id, authorization_id);
    res = svc_pg_exec(conn, "SELECT user_id FROM authorizations WHERE id = $1", 1, params,
                      PGRES_TUPLES_OK, "read authorization", err);
    if (res != NULL && PQntuples(res) == 0) {
        svc_err_set(err, SVC_NOT_FOUND, "authorization %" PRId64 " not found", authorization_id);
    } else if (res != NULL) {
        *user_id = svc_pg_i64(res, 0, 0);
        rc = 0;
    }
    PQclear(res);
    svc_pg_release(pool, conn, rc != 0 && err->code == SVC_UNAVAILABLE);
    return rc;
}

int
balance_store_sweep(svc_pg_pool_t *pool, int limit, int64_t deadline_ms, int *n, svc_err_t *err)
{
    char voided[NUM], pending[NUM], lim[NUM];
    const char *params[] = {voided, pending, lim};
    PGconn *conn = svc_pg_acquire(pool, deadline_ms, err);
    PGresult *res;

    *n = 0;
    if (conn == NULL) {
        return -1;
    }
    num(voided, BALANCE_AUTH_VOIDED);
    num(pending, BALANCE_AUTH_PENDING);
    num(lim, limit);
    /* SKIP LOCKED: a capture holding the row decides its fate itself. */
    res = svc_pg_exec(
        conn,
        "UPDATE authorizations SET status = $1, updated_at = now() WHERE id IN"
        " (SELECT id FROM authorizations WHERE status = $2 AND expires_at_ms <= " SQL_NOW_MS
        " ORDER BY expires_at_ms LIMIT $3 FOR UPDATE SKIP LOCKED) AND status = $2",
        3, params, PGRES_COMMAND_OK, "void expired authorizations", err);
    svc_pg_release(pool, conn, res == NULL && err->code == SVC_UNAVAILABLE);
    if (res == NULL) {
        return -1;
    }
    *n = atoi(PQcmdTuples(res));
    PQclear(res);
    return 0;
}

int
balance_store_list(svc_pg_pool_t *pool, int64_t user_id, int64_t before_id, int limit,
                   int64_t deadline_ms, svc_arena_t *arena, balance_entry_t **rows, int *n_rows,
                   bool *more, svc_err_t *err)
{
    char user[NUM], before[NUM], lim[NUM];
    const char *params[] = {user, before, lim};
    PGconn *conn = svc_pg_acquire(pool, deadline_ms, err);
    PGresult *res;
    int n;

    *rows = NULL;
    *n_rows = 0;
    *more = false;
    if (conn == NULL) {
        return -1;
    }
    num(user, user_id);
    num(before, before_id > 0 ? before_id : INT64_MAX);
    num(lim, limit + 1); /* one more tells whether a next page exists */
    res = svc_pg_exec(conn,
                      "SELECT id, kind, amount, balance_after, idempotency_key, reference,"
                      " (extract(epoch FROM created_at) * 1000)::bigint, coalesce(refund_of, 0)"
                      " FROM ledger WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
                      3, params, PGRES_TUPLES_OK, "read ledger", err);
    svc_pg_release(pool, conn, res == NULL && err->code == SVC_UNAVAILABLE);
    if (res == NULL) {
        return -1;
    }
    n = PQntuples(res);
    *more = n > limit;
    n = n > limit ? limit : n;
    *rows = svc_arena_alloc(arena, (size_t)(n > 0 ? n : 1) * sizeof(**rows));
    for (int i = 0; *rows != NULL && i < n; i++) {
        balance_entry_t *e = &(*rows)[i];
        e->id = svc_pg_i64(res, i, 0);
        e->kind = (balance_kind_t)svc_pg_i64(res, i, 1);
        e->amount = svc_pg_i64(res, i, 2);
        e->balance_after = svc_pg_i64(res, i, 3);
        e->key = svc_arena_strdup(arena, PQgetvalue(res, i, 4));
        e->reference = svc_arena_strdup(arena, PQgetvalue(res, i, 5));
        e->created_at_ms = svc_pg_i64(res, i, 6);
        e->refund_of = svc_pg_i64(res, i, 7);
    }
    PQclear(res);
    if (*rows == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    *n_rows = n;
    return 0;
}
