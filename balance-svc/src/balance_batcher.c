/*
 * balance_batcher.c: per-account queues and batches. One party at a time
 * serves an account: it asks lock-svc for the token account:<user_id>
 * without a thread waiting for it; once the token is there a worker runs
 * the queued operations in one transaction (balance_store), gives the token
 * back, answers every caller, and goes on while more arrived. A hot account
 * thus costs one lock hand-off and one commit per batch instead of per
 * request, and a thousand busy accounts waiting for their tokens hold no
 * thread. No call to another service happens while a transaction is open.
 *
 * Deadlines: the lock call carries the latest deadline of the batch (the
 * token is worth waiting for while any caller waits) and the x-request-id of
 * its first request. The transaction's 5 s budget starts once the token is
 * held, and the transaction never outlives the earliest deadline of the
 * requests it applies; a request whose caller gave up is not applied.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balance_batcher.h"
#include "svc/lock_client.h"
#include "svc/log.h"
#include "svc/timer.h"

#define N_BUCKETS 4096
#define TX_BUDGET_MS 5000

#define DESTROY_WAIT_MS 15000 /* for the last queues to finish, at shutdown */

typedef struct account_q {
    struct account_q *next; /* hash chain */
    int64_t user_id;
    balance_req_t *head, *tail;
    /* The batch being served (by one party at a time: a worker, or the token's callback). */
    struct balance_batcher *b;
    balance_req_t *batch;
    svc_lock_t lock;
} account_q_t;

struct balance_batcher {
    svc_server_t *server; /* its worker pool runs what must not run on the client thread */
    svc_pg_pool_t *db;
    svc_client_t *lock_svc;
    balance_limits_t limits;
    pthread_mutex_t mu;
    account_q_t *buckets[N_BUCKETS];
};

/* ---------- answers ---------- */

static void
fail_one(balance_req_t *r, svc_status_t code, const char *msg)
{
    svc_err_set(&r->op.err, code, "%s", msg);
    r->done(r);
}

/* Answers every request of a list with err; the list is gone afterwards. */
static void
fail_all(balance_req_t *list, const svc_err_t *err)
{
    while (list != NULL) {
        balance_req_t *next = list->next;
        list->op.err = *err;
        list->done(list);
        list = next;
    }
}

/*
 * Answers and removes the requests of *list whose caller is gone: deadline
 * passed (DEADLINE_EXCEEDED) or cancelled (CANCELLED). Returns how many.
 */
static int
drop_gone(balance_req_t **list, int64_t now)
{
    int dropped = 0;

    for (balance_req_t **pp = list; *pp != NULL;) {
        balance_req_t *r = *pp;
        if (r->deadline_ms <= now) {
            *pp = r->next;
            fail_one(r, SVC_DEADLINE_EXCEEDED, "deadline exceeded before the account was served");
            dropped++;
        } else if (svc_call_cancelled(r->call)) {
            *pp = r->next;
            fail_one(r, SVC_CANCELLED, "call cancelled before the account was served");
            dropped++;
        } else {
            pp = &r->next;
        }
    }
    return dropped;
}

/* ---------- per-account queues (caller holds mu) ---------- */

static account_q_t **
bucket_of(balance_batcher_t *b, int64_t user_id)
{
    return &b->buckets[(uint64_t)user_id % N_BUCKETS];
}

static account_q_t *
queue_find(balance_batcher_t *b, int64_t user_id)
{
    for (account_q_t *q = *bucket_of(b, user_id); q != NULL; q = q->next) {
        if (q->user_id == user_id) {
            return q;
        }
    }
    return NULL;
}

static void
queue_drop(balance_batcher_t *b, account_q_t *q)
{
    for (account_q_t **pp = bucket_of(b, q->user_id); *pp != NULL; pp = &(*pp)->next) {
        if (*pp == q) {
            *pp = q->next;
            free(q);
            return;
        }
    }
}

/* Takes up to max requests off q's head, in arrival order. */
static balance_req_t *
queue_take(account_q_t *q, int max)
{
    balance_req_t *first = q->head, *last = NULL, *r = q->head;

    for (int n = 0; r != NULL && n < max; n++) {
        last = r;
        r = r->next;
    }
    if (last != NULL) {
        last->next = NULL;
    }
    q->head = r;
    if (r == NULL) {
        q->tail = NULL;
    }
    return first;
}

/* Puts list back at q's head (it goes first in the next batch). */
static void
queue_push_front(account_q_t *q, balance_req_t *list)
{
    balance_req_t *last = list;

    while (last->next != NULL) {
        last = last->next;
    }
    last->next = q->head;
    q->head = list;
    if (q->tail == NULL) {
        q->tail = last;
    }
}

/* ---------- serving an account ---------- */

static int
count(const balance_req_t *list, int64_t *earliest, int64_t *latest)
{
    int n = 0;

    *earliest = INT64_MAX;
    *latest = 0;
    for (const balance_req_t *r = list; r != NULL; r = r->next, n++) {
        *earliest = r->deadline_ms < *earliest ? r->deadline_ms : *earliest;
        *latest = r->deadline_ms > *latest ? r->deadline_ms : *latest;
    }
    return n;
}

static void serve_next(void *arg);
static void apply_batch(void *arg);

/* Runs fn(q) on a worker. */
static void
on_worker(account_q_t *q, svc_task_fn fn)
{
    if (svc_pool_submit(svc_server_pool(q->b->server), fn, q) != 0) {
        fn(q); /* the pool is gone (shutdown): here, then */
    }
}

/* The token came (or not); on the client thread, so the transaction goes to a worker. */
static void
account_locked(const svc_err_t *err, int failed, void *arg)
{
    account_q_t *q = arg;

    (void)failed;
    if (err->code != SVC_OK) {
        fail_all(q->batch, err);
        q->batch = NULL;
        on_worker(q, serve_next);
        return;
    }
    on_worker(q, apply_batch);
}

/*
 * Asks for account:<user_id> for q's batch, bounded by its callers'
 * deadlines, without waiting for it: account_locked goes on.
 */
static void
lock_account(account_q_t *q)
{
    int64_t earliest, latest, now = svc_now_unix_ms();
    balance_batcher_t *b = q->b;
    svc_lock_opts_t lopts = {.owner = "balance-svc",
                             .lease_ms = b->limits.lock_lease_ms,
                             .wait_ms = b->limits.lock_wait_ms,
                             .request_id = svc_call_request_id(q->batch->call)};
    char key[48];
    const char *keys[] = {key};
    svc_log_ctx_t saved;

    (void)count(q->batch, &earliest, &latest);
    if (latest != INT64_MAX) {
        lopts.deadline_ms = latest;
        lopts.wait_ms = latest - now < lopts.wait_ms ? latest - now : lopts.wait_ms;
        lopts.wait_ms = lopts.wait_ms > 0 ? lopts.wait_ms : 0;
    }
    snprintf(key, sizeof(key), "account:%" PRId64, q->user_id);
    /* account_locked runs in the log context the acquire starts in: its call's. */
    svc_call_log_enter(q->batch->call, &saved);
    svc_lock_acquire_many_async(b->lock_svc, keys, 1, &lopts, &q->lock, account_locked, q);
    svc_log_ctx_leave(&saved);
}

/*
 * Answers the requests of a batch whose transaction failed with err. Those
 * whose deadline passed get DEADLINE_EXCEEDED. When a caller's deadline
 * shortened the transaction (dropped > 0), the others did not fail on their
 * own: they are returned to run again; otherwise they get err.
 */
static balance_req_t *
answer_failed(balance_req_t *batch, const svc_err_t *err, int dropped)
{
    bool again =
        dropped > 0 && (err->code == SVC_DEADLINE_EXCEEDED || err->code == SVC_UNAVAILABLE);
    svc_err_t own = *err;

    if (own.code == SVC_DEADLINE_EXCEEDED) { /* our budget, not this caller's deadline */
        svc_err_set(&own, SVC_UNAVAILABLE, "database too slow");
    }
    if (!again) {
        fail_all(batch, &own);
        return NULL;
    }
    return batch;
}

/*
 * The token is held: one transaction for q's batch, the token back, the
 * answers. Requests to run again go back to the queue's head.
 */
static void
apply(account_q_t *q)
{
    balance_batcher_t *b = q->b;
    balance_req_t *batch = q->batch;
    int64_t earliest, latest, deadline;
    balance_op_t *ops;
    svc_err_t err;
    int i = 0, n, rc, dropped;

    q->batch = NULL;
    /* The budget starts now that the token is held; gone callers leave the batch. */
    deadline = svc_now_unix_ms();
    dropped = drop_gone(&batch, deadline);
    n = count(batch, &earliest, &latest);
    deadline = deadline + TX_BUDGET_MS < earliest ? deadline + TX_BUDGET_MS : earliest;
    ops = n > 0 ? calloc((size_t)n, sizeof(*ops)) : NULL;
    if (n > 0 && ops == NULL) {
        svc_err_set(&err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        rc = -1;
    } else if (n > 0) {
        for (balance_req_t *r = batch; r != NULL; r = r->next) {
            ops[i++] = r->op;
        }
        rc = balance_store_apply(b->db, q->user_id, q->lock.fence, ops, n, deadline, &err);
        if (rc == 0) {
            svc_logf(SVC_LOG_DEBUG,
                     "account %" PRId64 ": %d operations applied under fence %" PRId64, q->user_id,
                     n, q->lock.fence);
        } else {
            svc_logf(SVC_LOG_DEBUG, "account %" PRId64 ": %d operations not applied: %s",
                     q->user_id, n, err.msg);
        }
    } else {
        rc = 0;
    }
    /* NULL: the acquire's x-request-id, this thread's context, even when its caller left. */
    svc_lock_release_many(b->lock_svc, &q->lock, 1, NULL);
    if (rc != 0) {
        free(ops);
        dropped += drop_gone(&batch, svc_now_unix_ms());
        batch = batch != NULL ? answer_failed(batch, &err, dropped) : NULL;
        if (batch != NULL) {
            pthread_mutex_lock(&b->mu);
            queue_push_front(q, batch);
            pthread_mutex_unlock(&b->mu);
        }
        return;
    }
    i = 0;
    for (balance_req_t *r = batch, *next; r != NULL; r = next) {
        next = r->next;
        r->op = ops[i++];
        r->done(r);
    }
    free(ops);
}

/*
 * apply, then the next batch. On a worker, in the log context of the call
 * the token was asked for (the batch's first: its x-request-id went to
 * lock-svc), which the lines of the whole batch carry.
 */
static void
apply_batch(void *arg)
{
    account_q_t *q = arg;
    svc_log_ctx_t saved;

    svc_call_log_enter(q->batch->call, &saved);
    apply(q);
    svc_log_ctx_leave(&saved);
    serve_next(q);
}

/*
 * Serves q's next batch: asks for the account's token (the rest follows in
 * account_locked, no thread waiting), or, with nothing queued, lets the
 * queue go. On a worker; one party serves a queue at a time.
 */
static void
serve_next(void *arg)
{
    account_q_t *q = arg;
    balance_batcher_t *b = q->b;
    balance_req_t *batch;

    for (;;) {
        pthread_mutex_lock(&b->mu);
        batch = queue_take(q, b->limits.max_batch);
        if (batch == NULL) {
            queue_drop(b, q); /* idle: the next request makes a new one */
            pthread_mutex_unlock(&b->mu);
            return;
        }
        pthread_mutex_unlock(&b->mu);
        (void)drop_gone(&batch, svc_now_unix_ms());
        if (batch != NULL) {
            q->batch = batch;
            lock_account(q);
            return;
        }
    }
}

void
balance_batcher_submit(balance_batcher_t *b, int64_t user_id, balance_req_t *r)
{
    account_q_t *q;
    bool serve = false;

    r->next = NULL;
    r->deadline_ms = svc_call_deadline_ms(r->call);
    pthread_mutex_lock(&b->mu);
    q = queue_find(b, user_id);
    if (q == NULL) {
        q = calloc(1, sizeof(*q));
        if (q == NULL) {
            pthread_mutex_unlock(&b->mu);
            fail_one(r, SVC_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        q->user_id = user_id;
        q->b = b;
        q->next = *bucket_of(b, user_id);
        *bucket_of(b, user_id) = q;
        serve = true; /* a queue exists exactly while one worker serves it */
    }
    if (q->tail != NULL) {
        q->tail->next = r;
    } else {
        q->head = r;
    }
    q->tail = r;
    pthread_mutex_unlock(&b->mu);
    if (serve) {
        serve_next(q);
    }
}

balance_batcher_t *
balance_batcher_create(svc_server_t *server, svc_pg_pool_t *db, svc_client_t *lock_svc,
                       const balance_limits_t *limits, svc_err_t *err)
{
    balance_batcher_t *b = calloc(1, sizeof(*b));

    if (b == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    b->server = server;
    b->db = db;
    b->lock_svc = lock_svc;
    b->limits = *limits;
    if (b->limits.max_batch < 1) {
        b->limits.max_batch = 1;
    }
    pthread_mutex_init(&b->mu, NULL);
    return b;
}

/* Whether no queue is left (caller holds mu). */
static bool
all_idle(const balance_batcher_t *b)
{
    for (int i = 0; i < N_BUCKETS; i++) {
        if (b->buckets[i] != NULL) {
            return false;
        }
    }
    return true;
}

void
balance_batcher_destroy(balance_batcher_t *b)
{
    bool idle = false;

    if (b == NULL) {
        return;
    }
    /*
     * A queue left is being served: its calls have ended, but the account's
     * token may still be on its way from lock-svc (asked before the server
     * stopped; the answer comes within the callers' deadlines). Its callback
     * touches the queue, so wait for it to finish the queue.
     */
    for (int waited = 0; waited < DESTROY_WAIT_MS && !idle; waited += 10) {
        pthread_mutex_lock(&b->mu);
        idle = all_idle(b);
        pthread_mutex_unlock(&b->mu);
        if (!idle) {
            svc_sleep_ms(10);
        }
    }
    if (!idle) {
        svc_logf(SVC_LOG_WARN, "account queues still served after %d ms: left in memory",
                 DESTROY_WAIT_MS);
        return;
    }
    for (int i = 0; i < N_BUCKETS; i++) {
        while (b->buckets[i] != NULL) {
            account_q_t *q = b->buckets[i];
            b->buckets[i] = q->next;
            free(q);
        }
    }
    pthread_mutex_destroy(&b->mu);
    free(b);
}
