/*
 * balance_batcher.h: the per-account queue of balance-svc. Every operation
 * that changes an account (or what it holds) joins its account's queue; one
 * worker at a time serves an account, running what queued up meanwhile as one
 * batch: one lock token account:<user_id> from lock-svc, one transaction.
 */
#ifndef BALANCE_BATCHER_H
#define BALANCE_BATCHER_H

#include <stdint.h>

#include "balance_store.h"
#include "svc/client.h"
#include "svc/pg.h"
#include "svc/server.h"

typedef struct balance_batcher balance_batcher_t;

typedef struct {
    int64_t lock_wait_ms;  /* how long to wait for an account's lock token */
    int64_t lock_lease_ms; /* the token's lease */
    int max_batch;         /* operations per transaction at most */
} balance_limits_t;

typedef struct balance_req balance_req_t;

/* Answers req's call from req->op; the batcher calls it exactly once per request. */
typedef void (*balance_done_fn)(balance_req_t *req);

struct balance_req {
    balance_op_t op;      /* in: the operation; out: its answer (op.err and the numbers) */
    svc_call_t *call;     /* the caller: its deadline and x-request-id */
    balance_done_fn done; /* answers the call; after it, req must not be touched */
    /* the batcher's */
    struct balance_req *next;
    int64_t deadline_ms;
};

/* Takes no ownership; db and lock_svc must outlive the batcher. */
balance_batcher_t *balance_batcher_create(svc_server_t *server, svc_pg_pool_t *db,
                                          svc_client_t *lock_svc, const balance_limits_t *limits,
                                          svc_err_t *err);

/*
 * Queues req for user_id's account. When no worker serves that account, the
 * calling worker does, until the queue is empty; otherwise this returns at
 * once and req is answered by the serving worker. Requests whose deadline
 * passed before their turn, or before the lock token came, are answered
 * DEADLINE_EXCEEDED and never applied. Call from a worker thread.
 */
void balance_batcher_submit(balance_batcher_t *b, int64_t user_id, balance_req_t *req);

/* After every call ended (the server stopped). NULL is a no-op. */
void balance_batcher_destroy(balance_batcher_t *b);

#endif
