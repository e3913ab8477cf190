/*
 * balance_store.h: balance-svc's PostgreSQL side, the only place with SQL.
 * A batch of top-ups and spends on one account runs in one short
 * transaction, each operation with its own ledger row and its own answer.
 */
#ifndef BALANCE_STORE_H
#define BALANCE_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "svc/arena.h"
#include "svc/err.h"
#include "svc/pg.h"

#define BALANCE_MAX_AMOUNT 100000000LL
#define BALANCE_MAX_BALANCE 1000000000000LL

typedef enum {
    BALANCE_TOP_UP = 1,
    BALANCE_SPEND = 2,
} balance_kind_t;

typedef struct {
    /* in */
    balance_kind_t kind;
    int64_t amount;
    const char *key;       /* idempotency key, 1..128 bytes */
    const char *reference; /* may be "" */
    /* out: this operation's own answer */
    svc_err_t err; /* OK, INVALID_ARGUMENT (key reused), FAILED_PRECONDITION, NOT_FOUND */
    int64_t balance;
    int64_t transaction_id;
    bool replayed;
} balance_op_t;

/*
 * Applies ops, in order, to user_id's account in one transaction: locks the
 * row (SELECT ... FOR UPDATE), refuses a fence older than the row's, replays
 * operations whose key is already in the ledger, checks the limits, writes
 * the ledger rows and the balance, commits. Returns 0 when the transaction
 * committed (each op then has its own outcome in op->err), or -1 with err when
 * nothing was applied: ABORTED for an outdated fence, UNAVAILABLE when the
 * database is down or too slow.
 */
int balance_store_apply(svc_pg_pool_t *pool, int64_t user_id, int64_t fence, balance_op_t *ops,
                        int n_ops, int64_t deadline_ms, svc_err_t *err);

/* The balance and last change (unix ms). NOT_FOUND for an unknown account. */
int balance_store_get(svc_pg_pool_t *pool, int64_t user_id, int64_t deadline_ms, int64_t *balance,
                      int64_t *updated_at_ms, svc_err_t *err);

typedef struct {
    int64_t id;
    balance_kind_t kind;
    int64_t amount;
    int64_t balance_after;
    char *key;
    char *reference;
    int64_t created_at_ms;
} balance_entry_t;

/*
 * Up to limit ledger rows of user_id with id < before_id (0: from the newest),
 * newest first, allocated in arena. *more tells whether older rows exist.
 */
int balance_store_list(svc_pg_pool_t *pool, int64_t user_id, int64_t before_id, int limit,
                       int64_t deadline_ms, svc_arena_t *arena, balance_entry_t **rows, int *n_rows,
                       bool *more, svc_err_t *err);

#endif
