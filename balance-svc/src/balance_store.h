/*
 * balance_store.h: balance-svc's PostgreSQL side, the only place with SQL.
 * A batch of operations on one account (top-ups, spends, refunds, and the
 * authorizations of two-phase funds) runs in one short transaction, each
 * operation with its own answer.
 */
#ifndef BALANCE_STORE_H
#define BALANCE_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "svc/arena.h"
#include "svc/err.h"
#include "svc/pg.h"

#define BALANCE_MAX_AMOUNT 100000000LL /* one TopUp or Spend */
#define BALANCE_MAX_HOLD 1000000000LL  /* one Authorize, hence one capture or refund */
#define BALANCE_MAX_BALANCE 1000000000000LL

/* Ledger row kinds, as stored in ledger.kind. */
typedef enum {
    BALANCE_TOP_UP = 1,
    BALANCE_SPEND = 2, /* a Spend, or the Capture of an authorization */
    BALANCE_REFUND = 3,
} balance_kind_t;

/* Authorization states, as stored in authorizations.status. */
typedef enum {
    BALANCE_AUTH_PENDING = 1,
    BALANCE_AUTH_CAPTURED = 2,
    BALANCE_AUTH_VOIDED = 3, /* by Void, or by itself once expired */
} balance_auth_status_t;

typedef enum {
    BALANCE_OP_TOP_UP,
    BALANCE_OP_SPEND,
    BALANCE_OP_REFUND,
    BALANCE_OP_AUTHORIZE,
    BALANCE_OP_CAPTURE,
    BALANCE_OP_VOID,
} balance_op_kind_t;

typedef struct {
    /* in */
    balance_op_kind_t kind;
    int64_t amount;        /* top-up, spend, refund, authorize */
    const char *key;       /* idempotency key, 1..128 bytes; not for capture and void */
    const char *reference; /* spend, authorize; may be "" */
    int64_t expires_in_ms; /* authorize, > 0 */
    int64_t target_id;     /* capture, void: the authorization; refund: the spend */
    /* out: this operation's own answer */
    svc_err_t err; /* OK, INVALID_ARGUMENT (key reused), FAILED_PRECONDITION, NOT_FOUND */
    int64_t balance;
    int64_t available;        /* authorize, void */
    int64_t transaction_id;   /* top-up, spend, refund, capture: the ledger row */
    int64_t authorization_id; /* authorize */
    int64_t expires_at_ms;    /* authorize */
    int auth_status;          /* authorize: BALANCE_AUTH_*, an expired pending one VOIDED */
    bool replayed;
} balance_op_t;

/*
 * Applies ops, in order, to user_id's account in one transaction: locks the
 * row (SELECT ... FOR UPDATE), refuses a fence older than the row's, replays
 * operations whose key was seen before, checks the limits against the
 * balance and the live authorizations, writes ledger and authorization rows
 * and the balance, marks the account's expired authorizations voided, and
 * commits, but not after deadline_ms (INT64_MAX: none), which also bounds
 * every statement. Returns 0 when the transaction committed (each op then has
 * its own outcome in op->err), or -1 with err when nothing was applied:
 * ABORTED for an outdated fence, DEADLINE_EXCEEDED when deadline_ms came
 * first, UNAVAILABLE when the database is down or too slow.
 */
int balance_store_apply(svc_pg_pool_t *pool, int64_t user_id, int64_t fence, balance_op_t *ops,
                        int n_ops, int64_t deadline_ms, svc_err_t *err);

/*
 * The balance, the available balance (balance minus the pending, unexpired
 * authorizations) and the last change (unix ms). NOT_FOUND for an unknown account.
 */
int balance_store_get(svc_pg_pool_t *pool, int64_t user_id, int64_t deadline_ms, int64_t *balance,
                      int64_t *available, int64_t *updated_at_ms, svc_err_t *err);

/* The account an authorization belongs to. NOT_FOUND when there is no such authorization. */
int balance_store_authorization_user(svc_pg_pool_t *pool, int64_t authorization_id,
                                     int64_t deadline_ms, int64_t *user_id, svc_err_t *err);

/*
 * Marks up to limit pending authorizations whose expiry passed voided, in any
 * account, skipping rows another transaction holds. Sets *n to how many.
 */
int balance_store_sweep(svc_pg_pool_t *pool, int limit, int64_t deadline_ms, int *n,
                        svc_err_t *err);

typedef struct {
    int64_t id;
    balance_kind_t kind;
    int64_t amount;
    int64_t balance_after;
    char *key;
    char *reference;
    int64_t created_at_ms;
    int64_t refund_of; /* refunds: the spend; else 0 */
} balance_entry_t;

/*
 * Up to limit ledger rows of user_id with id < before_id (0: from the newest),
 * newest first, allocated in arena. *more tells whether older rows exist.
 */
int balance_store_list(svc_pg_pool_t *pool, int64_t user_id, int64_t before_id, int limit,
                       int64_t deadline_ms, svc_arena_t *arena, balance_entry_t **rows, int *n_rows,
                       bool *more, svc_err_t *err);

#endif
