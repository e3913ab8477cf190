/*
 * balance_store.c: the SQL of balance-svc. Every statement uses parameters;
 * the balance is computed in the transaction that holds the account's row
 * lock, and the CHECK constraints are the last net under that logic.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balance_store.h"

typedef struct {
    int64_t user_id, fence;
    balance_op_t *ops;
    int n_ops;
} apply_ctx_t;

/*
 * Looks up an earlier operation with op's key. Returns 1 and fills op's
 * answer when found (a replay, or INVALID_ARGUMENT when it differs), 0 when
 * there is none, -1 on a database error.
 */
static int
find_earlier(PGconn *conn, const char *user, balance_op_t *op, svc_err_t *err)
{
    const char *params[] = {user, op->key};
    PGresult *res = svc_pg_exec(conn,
                                "SELECT id, kind, amount, balance_after FROM ledger"
                                " WHERE user_id = $1 AND idempotency_key = $2",
                                2, params, PGRES_TUPLES_OK, "read ledger", err);

    if (res == NULL) {
        return -1;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        return 0;
    }
    if (svc_pg_i64(res, 0, 1) != op->kind || svc_pg_i64(res, 0, 2) != op->amount) {
        svc_err_set(&op->err, SVC_INVALID_ARGUMENT,
                    "idempotency key %.64s was used for another operation", op->key);
    } else {
        svc_err_clear(&op->err);
        op->transaction_id = svc_pg_i64(res, 0, 0);
        op->balance = svc_pg_i64(res, 0, 3);
        op->replayed = true;
    }
    PQclear(res);
    return 1;
}

/*
 * Applies one operation to *balance. Returns 0 (op->err says how it went) or
 * -1 on a database error, which aborts the whole transaction.
 */
static int
apply_one(PGconn *conn, const char *user, int64_t *balance, balance_op_t *op, svc_err_t *err)
{
    int64_t next = op->kind == BALANCE_TOP_UP ? *balance + op->amount : *balance - op->amount;
    char kind[4], amount[24], after[24];
    const char *params[] = {user, kind, amount, after, op->key, op->reference};
    PGresult *res;
    int found;

    if (next < 0 || next > BALANCE_MAX_BALANCE) {
        /* A retry of an operation that went through earlier is answered as then. */
        found = find_earlier(conn, user, op, err);
        if (found != 0) {
            return found < 0 ? -1 : 0;
        }
        if (next < 0) {
            svc_err_set(&op->err, SVC_FAILED_PRECONDITION,
                        "insufficient balance: %" PRId64 " available, %" PRId64 " needed", *balance,
                        op->amount);
        } else {
            svc_err_set(&op->err, SVC_FAILED_PRECONDITION, "balance would exceed %lld",
                        (long long)BALANCE_MAX_BALANCE);
        }
        op->balance = *balance;
        return 0;
    }
    snprintf(kind, sizeof(kind), "%d", (int)op->kind);
    snprintf(amount, sizeof(amount), "%" PRId64, op->amount);
    snprintf(after, sizeof(after), "%" PRId64, next);
    res = svc_pg_exec(conn,
                      "INSERT INTO ledger (user_id, kind, amount, balance_after, idempotency_key,"
                      " reference) VALUES ($1, $2, $3, $4, $5, $6)"
                      " ON CONFLICT (user_id, idempotency_key) DO NOTHING RETURNING id",
                      6, params, PGRES_TUPLES_OK, "write ledger", err);
    if (res == NULL) {
        return -1;
    }
    if (PQntuples(res) == 0) { /* the key is taken: answer as the first time */
        PQclear(res);
        return find_earlier(conn, user, op, err) < 0 ? -1 : 0;
    }
    svc_err_clear(&op->err);
    op->transaction_id = svc_pg_i64(res, 0, 0);
    op->balance = next;
    op->replayed = false;
    *balance = next;
    PQclear(res);
    return 0;
}

/* The transaction body; svc_pg_tx may run it again after a serialization failure. */
static int
apply_tx(PGconn *conn, void *arg, svc_err_t *err)
{
    apply_ctx_t *ctx = arg;
    char user[24], fence[24], balance_text[24];
    const char *params[] = {user, fence, balance_text};
    bool any_top_up = false;
    int64_t balance;
    PGresult *res;

    snprintf(user, sizeof(user), "%" PRId64, ctx->user_id);
    snprintf(fence, sizeof(fence), "%" PRId64, ctx->fence);
    for (int i = 0; i < ctx->n_ops; i++) {
        any_top_up |= ctx->ops[i].kind == BALANCE_TOP_UP;
        ctx->ops[i].replayed = false;
    }
    if (any_top_up) { /* a top-up opens the account on first use */
        res = svc_pg_exec(conn, "INSERT INTO accounts (user_id) VALUES ($1) ON CONFLICT DO NOTHING",
                          1, params, PGRES_COMMAND_OK, "open account", err);
        if (res == NULL) {
            return -1;
        }
        PQclear(res);
    }
    res =
        svc_pg_exec(conn, "SELECT balance, last_fence FROM accounts WHERE user_id = $1 FOR UPDATE",
                    1, params, PGRES_TUPLES_OK, "lock account", err);
    if (res == NULL) {
        return -1;
    }
    if (PQntuples(res) == 0) { /* only spends, on an account that does not exist */
        PQclear(res);
        for (int i = 0; i < ctx->n_ops; i++) {
            svc_err_set(&ctx->ops[i].err, SVC_NOT_FOUND, "account %" PRId64 " not found",
                        ctx->user_id);
        }
        return 0;
    }
    balance = svc_pg_i64(res, 0, 0);
    if (svc_pg_i64(res, 0, 1) > ctx->fence) {
        PQclear(res);
        svc_err_set(err, SVC_ABORTED, "lock on account %" PRId64 " was lost", ctx->user_id);
        return -1;
    }
    PQclear(res);
    for (int i = 0; i < ctx->n_ops; i++) {
        if (apply_one(conn, user, &balance, &ctx->ops[i], err) != 0) {
            return -1;
        }
    }
    snprintf(balance_text, sizeof(balance_text), "%" PRId64, balance);
    res = svc_pg_exec(conn,
                      "UPDATE accounts SET balance = $3, last_fence = $2, updated_at = now()"
                      " WHERE user_id = $1",
                      3, params, PGRES_COMMAND_OK, "update balance", err);
    if (res == NULL) {
        return -1;
    }
    PQclear(res);
    return 0;
}

int
balance_store_apply(svc_pg_pool_t *pool, int64_t user_id, int64_t fence, balance_op_t *ops,
                    int n_ops, int64_t deadline_ms, svc_err_t *err)
{
    apply_ctx_t ctx = {user_id, fence, ops, n_ops};

    return svc_pg_tx(pool, deadline_ms, apply_tx, &ctx, err);
}

int
balance_store_get(svc_pg_pool_t *pool, int64_t user_id, int64_t deadline_ms, int64_t *balance,
                  int64_t *updated_at_ms, svc_err_t *err)
{
    char user[24];
    const char *params[] = {user};
    PGconn *conn = svc_pg_acquire(pool, deadline_ms, err);
    PGresult *res;
    int rc = -1;

    if (conn == NULL) {
        return -1;
    }
    snprintf(user, sizeof(user), "%" PRId64, user_id);
    res = svc_pg_exec(conn,
                      "SELECT balance, (extract(epoch FROM updated_at) * 1000)::bigint"
                      " FROM accounts WHERE user_id = $1",
                      1, params, PGRES_TUPLES_OK, "read balance", err);
    if (res != NULL && PQntuples(res) == 0) {
        svc_err_set(err, SVC_NOT_FOUND, "account %" PRId64 " not found", user_id);
    } else if (res != NULL) {
        *balance = svc_pg_i64(res, 0, 0);
        *updated_at_ms = svc_pg_i64(res, 0, 1);
        rc = 0;
    }
    PQclear(res);
    svc_pg_release(pool, conn, rc != 0 && err->code == SVC_UNAVAILABLE);
    return rc;
}

int
balance_store_list(svc_pg_pool_t *pool, int64_t user_id, int64_t before_id, int limit,
                   int64_t deadline_ms, svc_arena_t *arena, balance_entry_t **rows, int *n_rows,
                   bool *more, svc_err_t *err)
{
    char user[24], before[24], lim[16];
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
    snprintf(user, sizeof(user), "%" PRId64, user_id);
    snprintf(before, sizeof(before), "%" PRId64, before_id > 0 ? before_id : INT64_MAX);
    snprintf(lim, sizeof(lim), "%d", limit + 1); /* one more tells whether a next page exists */
    res = svc_pg_exec(conn,
                      "SELECT id, kind, amount, balance_after, idempotency_key, reference,"
                      " (extract(epoch FROM created_at) * 1000)::bigint FROM ledger"
                      " WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
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
    }
    PQclear(res);
    if (*rows == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    *n_rows = n;
    return 0;
}
