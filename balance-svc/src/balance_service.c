/*
 * balance_service.c: balance.v1.BalanceService. Each top-up or spend joins
 * its account's queue; one worker at a time serves an account: it takes the
 * lock token account:<user_id> from lock-svc, runs the queued operations in
 * one transaction (balance_store), releases the token, answers every caller,
 * and goes on while more arrived. A hot account thus costs one lock hand-off
 * and one commit per batch instead of per request. No call to another service
 * happens while a transaction is open.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balance/v1/balance.pb-c.h"
#include "balance_service.h"
#include "balance_store.h"
#include "svc/lock_client.h"
#include "svc/log.h"
#include "svc/validate.h"

#define N_BUCKETS 4096
#define KEY_MAX 128
#define REFERENCE_MAX 256
#define PAGE_DEFAULT 50
#define PAGE_MAX 500
#define TX_BUDGET_MS 5000

typedef struct balance_req {
    struct balance_req *next;
    svc_call_t *call;
    balance_op_t op;
    int64_t deadline_ms;
} balance_req_t;

typedef struct account_q {
    struct account_q *next; /* hash chain */
    int64_t user_id;
    balance_req_t *head, *tail;
} account_q_t;

struct balance_service {
    svc_server_t *server;
    svc_pg_pool_t *db;
    svc_client_t *lock_svc;
    balance_limits_t limits;
    pthread_mutex_t mu;
    account_q_t *buckets[N_BUCKETS];
};

/* ---------- answers ---------- */

static void
answer(balance_req_t *r)
{
    if (r->op.err.code != SVC_OK) {
        svc_call_fail(r->call, &r->op.err);
    } else if (r->op.kind == BALANCE_TOP_UP) {
        Balance__V1__TopUpResponse resp = BALANCE__V1__TOP_UP_RESPONSE__INIT;
        resp.balance = r->op.balance;
        resp.transaction_id = r->op.transaction_id;
        resp.replayed = r->op.replayed;
        svc_call_reply(r->call, &resp.base);
    } else {
        Balance__V1__SpendResponse resp = BALANCE__V1__SPEND_RESPONSE__INIT;
        resp.balance = r->op.balance;
        resp.transaction_id = r->op.transaction_id;
        resp.replayed = r->op.replayed;
        svc_call_reply(r->call, &resp.base);
    }
}

/* Answers every request of a list with err; the list is gone afterwards. */
static void
fail_all(balance_req_t *list, const svc_err_t *err)
{
    while (list != NULL) {
        balance_req_t *next = list->next;
        list->op.err = *err;
        answer(list);
        list = next;
    }
}

/* ---------- per-account queues (caller holds mu) ---------- */

static account_q_t **
bucket_of(balance_service_t *svc, int64_t user_id)
{
    return &svc->buckets[(uint64_t)user_id % N_BUCKETS];
}

static account_q_t *
queue_find(balance_service_t *svc, int64_t user_id)
{
    for (account_q_t *q = *bucket_of(svc, user_id); q != NULL; q = q->next) {
        if (q->user_id == user_id) {
            return q;
        }
    }
    return NULL;
}

static void
queue_drop(balance_service_t *svc, account_q_t *q)
{
    for (account_q_t **pp = bucket_of(svc, q->user_id); *pp != NULL; pp = &(*pp)->next) {
        if (*pp == q) {
            *pp = q->next;
            free(q);
            return;
        }
    }
}

/* Takes up to max requests off q's head, in arrival order. */
static balance_req_t *
queue_take(account_q_t *q, int max, int *n)
{
    balance_req_t *first = q->head, *last = NULL, *r = q->head;

    *n = 0;
    while (r != NULL && *n < max) {
        last = r;
        r = r->next;
        (*n)++;
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

/* ---------- serving an account ---------- */

/* Runs one batch: lock token, one transaction, release, answers. */
static void
serve_batch(balance_service_t *svc, int64_t user_id, balance_req_t *batch, int n)
{
    svc_lock_opts_t lopts = {.owner = "balance-svc",
                             .lease_ms = svc->limits.lock_lease_ms,
                             .wait_ms = svc->limits.lock_wait_ms};
    balance_op_t *ops = calloc((size_t)n, sizeof(*ops));
    int64_t deadline = 0, now = svc_now_unix_ms();
    char key[48];
    svc_lock_t lock;
    svc_err_t err, rel_err;
    int i = 0, rc;

    if (ops == NULL) {
        svc_err_set(&err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        fail_all(batch, &err);
        return;
    }
    for (balance_req_t *r = batch; r != NULL; r = r->next) {
        ops[i++] = r->op;
        deadline = r->deadline_ms > deadline ? r->deadline_ms : deadline;
    }
    if (deadline > now + TX_BUDGET_MS) {
        deadline = now + TX_BUDGET_MS;
    }
    snprintf(key, sizeof(key), "account:%" PRId64, user_id);
    if (svc_lock_acquire(svc->lock_svc, key, &lopts, &lock, &err) != 0) {
        if (err.code == SVC_UNAVAILABLE) {
            static svc_log_limit_t limit = SVC_LOG_LIMIT_INIT(5);
            svc_logf_limited(&limit, SVC_LOG_WARN,
                             "lock-svc unreachable, refusing account %" PRId64 ": %s", user_id,
                             err.msg);
            svc_err_set(&err, SVC_UNAVAILABLE, "lock service unavailable");
        }
        free(ops);
        fail_all(batch, &err);
        return;
    }
    rc = balance_store_apply(svc->db, user_id, lock.fence, ops, n, deadline, &err);
    if (svc_lock_release(svc->lock_svc, &lock, NULL, &rel_err) != 0) {
        svc_logf(SVC_LOG_WARN, "release of %s failed: %s", key, rel_err.msg);
    }
    if (rc != 0) {
        free(ops);
        fail_all(batch, &err);
        return;
    }
    i = 0;
    for (balance_req_t *r = batch, *next; r != NULL; r = next) {
        next = r->next;
        r->op = ops[i++];
        answer(r);
    }
    free(ops);
}

/* Serves q's queue until it is empty. Called by the worker that made q busy. */
static void
serve_account(balance_service_t *svc, int64_t user_id)
{
    for (;;) {
        balance_req_t *batch;
        account_q_t *q;
        int n;

        pthread_mutex_lock(&svc->mu);
        q = queue_find(svc, user_id);
        batch = queue_take(q, svc->limits.max_batch, &n);
        if (batch == NULL) {
            queue_drop(svc, q); /* idle: the next request makes a new one */
            pthread_mutex_unlock(&svc->mu);
            return;
        }
        pthread_mutex_unlock(&svc->mu);
        serve_batch(svc, user_id, batch, n);
    }
}

/* Queues r for its account; returns true when the caller must serve the account. */
static bool
enqueue(balance_service_t *svc, int64_t user_id, balance_req_t *r, svc_err_t *err)
{
    account_q_t *q;
    bool serve = false;

    pthread_mutex_lock(&svc->mu);
    q = queue_find(svc, user_id);
    if (q == NULL) {
        q = calloc(1, sizeof(*q));
        if (q == NULL) {
            pthread_mutex_unlock(&svc->mu);
            svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
            return false;
        }
        q->user_id = user_id;
        q->next = *bucket_of(svc, user_id);
        *bucket_of(svc, user_id) = q;
        serve = true; /* a queue exists exactly while one worker serves it */
    }
    if (q->tail != NULL) {
        q->tail->next = r;
    } else {
        q->head = r;
    }
    q->tail = r;
    pthread_mutex_unlock(&svc->mu);
    svc_err_clear(err);
    return serve;
}

/* ---------- handlers ---------- */

static bool
check_change(int64_t user_id, int64_t amount, const char *key, const char *reference,
             svc_err_t *err)
{
    return svc_validate_range("user_id", user_id, 1, INT64_MAX, err) &&
           svc_validate_range("amount", amount, 1, BALANCE_MAX_AMOUNT, err) &&
           svc_validate_text("idempotency_key", key, 1, KEY_MAX, err) &&
           svc_validate_text("reference", reference, 0, REFERENCE_MAX, err);
}

static void
change(balance_service_t *svc, svc_call_t *call, balance_kind_t kind, int64_t user_id,
       int64_t amount, const char *key, const char *reference)
{
    balance_req_t *r;
    svc_err_t err;

    if (!check_change(user_id, amount, key, reference, &err)) {
        svc_call_fail(call, &err);
        return;
    }
    r = svc_call_alloc(call, sizeof(*r));
    if (r == NULL) {
        return;
    }
    r->call = call;
    r->op.kind = kind;
    r->op.amount = amount;
    r->op.key = key;
    r->op.reference = reference != NULL ? reference : "";
    r->deadline_ms = svc_call_deadline_ms(call);
    if (enqueue(svc, user_id, r, &err)) {
        serve_account(svc, user_id);
    } else if (err.code != SVC_OK) {
        svc_call_fail(call, &err);
    }
}

static void
handle_top_up(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Balance__V1__TopUpRequest *req = (const void *)msg;

    change(user, call, BALANCE_TOP_UP, req->user_id, req->amount, req->idempotency_key, "");
}

static void
handle_spend(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Balance__V1__SpendRequest *req = (const void *)msg;

    change(user, call, BALANCE_SPEND, req->user_id, req->amount, req->idempotency_key,
           req->reference);
}

static int64_t
db_deadline(svc_call_t *call)
{
    int64_t budget = svc_now_unix_ms() + TX_BUDGET_MS, d = svc_call_deadline_ms(call);

    return d < budget ? d : budget;
}

static void
handle_get_balance(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Balance__V1__GetBalanceRequest *req = (const void *)msg;
    Balance__V1__GetBalanceResponse resp = BALANCE__V1__GET_BALANCE_RESPONSE__INIT;
    balance_service_t *svc = user;
    svc_err_t err;

    if (!svc_validate_range("user_id", req->user_id, 1, INT64_MAX, &err) ||
        balance_store_get(svc->db, req->user_id, db_deadline(call), &resp.balance,
                          &resp.updated_at_ms, &err) != 0) {
        svc_call_fail(call, &err);
        return;
    }
    resp.user_id = req->user_id;
    svc_call_reply(call, &resp.base);
}

/* page_token is the id of the last row of the previous page, in decimal. */
static bool
parse_page_token(const char *token, int64_t *before, svc_err_t *err)
{
    char *end;

    *before = 0;
    if (token == NULL || token[0] == '\0') {
        return true;
    }
    *before = strtoll(token, &end, 10);
    if (*end != '\0' || *before <= 0) {
        svc_err_set(err, SVC_INVALID_ARGUMENT, "page_token is not valid");
        return false;
    }
    return true;
}

static void
handle_list(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Balance__V1__ListTransactionsRequest *req = (const void *)msg;
    Balance__V1__ListTransactionsResponse resp = BALANCE__V1__LIST_TRANSACTIONS_RESPONSE__INIT;
    balance_service_t *svc = user;
    svc_arena_t *arena = svc_call_arena(call);
    balance_entry_t *rows;
    int64_t before;
    svc_err_t err;
    bool more;
    int n;

    if (!svc_validate_range("user_id", req->user_id, 1, INT64_MAX, &err) ||
        !svc_validate_range("page_size", req->page_size, 0, PAGE_MAX, &err) ||
        !parse_page_token(req->page_token, &before, &err) ||
        balance_store_list(svc->db, req->user_id, before,
                           req->page_size > 0 ? req->page_size : PAGE_DEFAULT, db_deadline(call),
                           arena, &rows, &n, &more, &err) != 0) {
        svc_call_fail(call, &err);
        return;
    }
    resp.transactions = svc_arena_alloc(arena, (size_t)(n > 0 ? n : 1) * sizeof(void *));
    for (int i = 0; resp.transactions != NULL && i < n; i++) {
        Balance__V1__Transaction *t = svc_arena_alloc(arena, sizeof(*t));
        if (t == NULL) {
            break;
        }
        balance__v1__transaction__init(t);
        t->id = rows[i].id;
        t->kind = rows[i].kind == BALANCE_TOP_UP
                      ? BALANCE__V1__TRANSACTION_KIND__TRANSACTION_KIND_TOP_UP
                      : BALANCE__V1__TRANSACTION_KIND__TRANSACTION_KIND_SPEND;
        t->amount = rows[i].amount;
        t->balance_after = rows[i].balance_after;
        t->idempotency_key = rows[i].key;
        t->reference = rows[i].reference;
        t->created_at_ms = rows[i].created_at_ms;
        resp.transactions[resp.n_transactions++] = t;
    }
    if (more && n > 0) {
        resp.next_page_token = svc_arena_printf(arena, "%" PRId64, rows[n - 1].id);
    }
    svc_call_reply(call, &resp.base);
}

/* Placeholder until the two-phase funds land: the contract names them already. */
static void
handle_not_yet(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    svc_err_t err;

    (void)msg;
    (void)user;
    svc_err_set(&err, SVC_UNIMPLEMENTED, "%s is not implemented yet", svc_call_method(call));
    svc_call_fail(call, &err);
}

/* ---------- lifecycle ---------- */

balance_service_t *
balance_service_create(svc_server_t *server, svc_pg_pool_t *db, svc_client_t *lock_svc,
                       const balance_limits_t *limits, svc_err_t *err)
{
    balance_service_t *svc = calloc(1, sizeof(*svc));

    if (svc == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    svc->server = server;
    svc->db = db;
    svc->lock_svc = lock_svc;
    svc->limits = *limits;
    if (svc->limits.max_batch < 1) {
        svc->limits.max_batch = 1;
    }
    pthread_mutex_init(&svc->mu, NULL);
    return svc;
}

int
balance_service_register(balance_service_t *svc, svc_err_t *err)
{
    static const svc_handler_t handlers[] = {
        {"GetBalance", SVC_METHOD_UNARY, handle_get_balance, NULL, 0},
        {"TopUp", SVC_METHOD_UNARY, handle_top_up, NULL, 0},
        {"Spend", SVC_METHOD_UNARY, handle_spend, NULL, 0},
        {"ListTransactions", SVC_METHOD_UNARY, handle_list, NULL, 0},
        {"Authorize", SVC_METHOD_UNARY, handle_not_yet, NULL, 0},
        {"Capture", SVC_METHOD_UNARY, handle_not_yet, NULL, 0},
        {"Void", SVC_METHOD_UNARY, handle_not_yet, NULL, 0},
        {"Refund", SVC_METHOD_UNARY, handle_not_yet, NULL, 0},
    };

    return svc_server_add_service(svc->server, &balance__v1__balance_service__descriptor, handlers,
                                  sizeof(handlers) / sizeof(handlers[0]), svc, err);
}

void
balance_service_destroy(balance_service_t *svc)
{
    if (svc == NULL) {
        return;
    }
    for (int b = 0; b < N_BUCKETS; b++) { /* only reachable after every call ended */
        while (svc->buckets[b] != NULL) {
            account_q_t *q = svc->buckets[b];
            svc->buckets[b] = q->next;
            free(q);
        }
    }
    pthread_mutex_destroy(&svc->mu);
    free(svc);
}
