/*
 * balance_service.c: balance.v1.BalanceService at the edge. Each handler
 * unpacks and validates its request, hands a change to the per-account
 * batcher (balance_batcher.c) or reads through the store, and maps the
 * outcome to its response or gRPC status. No SQL and no queueing here.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balance/v1/balance.pb-c.h"
#include "balance_batcher.h"
#include "balance_service.h"
#include "balance_store.h"
#include "balance_validate.h"
#include "svc/auth.h"

#define READ_BUDGET_MS 5000

struct balance_service {
    svc_server_t *server;
    svc_pg_pool_t *db;
    balance_batcher_t *batcher;
    const svc_auth_t *auth; /* caller identity; NULL or off: anyone acts for anyone */
};

/* ---------- answers (called by the batcher, once per request) ---------- */

static void
answer(balance_req_t *r)
{
    const balance_op_t *op = &r->op;

    if (op->err.code != SVC_OK) {
        svc_call_fail(r->call, &op->err);
        return;
    }
    switch (op->kind) {
    case BALANCE_OP_TOP_UP:
    case BALANCE_OP_SPEND:
    case BALANCE_OP_REFUND:
    case BALANCE_OP_CAPTURE: {
        /* TopUp, Spend, Refund and Capture responses share one shape. */
        Balance__V1__TopUpResponse top_up = BALANCE__V1__TOP_UP_RESPONSE__INIT;
        Balance__V1__SpendResponse spend = BALANCE__V1__SPEND_RESPONSE__INIT;
        Balance__V1__RefundResponse refund = BALANCE__V1__REFUND_RESPONSE__INIT;
        Balance__V1__CaptureResponse capture = BALANCE__V1__CAPTURE_RESPONSE__INIT;
        ProtobufCMessage *msg = op->kind == BALANCE_OP_TOP_UP   ? &top_up.base
                                : op->kind == BALANCE_OP_SPEND  ? &spend.base
                                : op->kind == BALANCE_OP_REFUND ? &refund.base
                                                                : &capture.base;
        top_up.balance = spend.balance = refund.balance = capture.balance = op->balance;
        top_up.transaction_id = spend.transaction_id = refund.transaction_id =
            capture.transaction_id = op->transaction_id;
        top_up.replayed = spend.replayed = refund.replayed = capture.replayed = op->replayed;
        svc_call_reply(r->call, msg);
        return;
    }
    case BALANCE_OP_AUTHORIZE: {
        Balance__V1__AuthorizeResponse resp = BALANCE__V1__AUTHORIZE_RESPONSE__INIT;
        resp.authorization_id = op->authorization_id;
        resp.balance = op->balance;
        resp.available = op->available;
        resp.expires_at_ms = op->expires_at_ms;
        resp.replayed = op->replayed;
        resp.status = (Balance__V1__AuthorizationStatus)op->auth_status; /* same numbering */
        svc_call_reply(r->call, &resp.base);
        return;
    }
    case BALANCE_OP_VOID: {
        Balance__V1__VoidResponse resp = BALANCE__V1__VOID_RESPONSE__INIT;
        resp.balance = op->balance;
        resp.available = op->available;
        svc_call_reply(r->call, &resp.base);
        return;
    }
    }
}

/* A new request for the batcher in the call's arena; NULL when the call was ended (no memory). */
static balance_req_t *
new_req(svc_call_t *call, balance_op_kind_t kind)
{
    balance_req_t *r = svc_call_alloc(call, sizeof(*r));

    if (r != NULL) {
        r->call = call;
        r->done = answer;
        r->op.kind = kind;
        r->op.reference = "";
    }
    return r;
}

/* The end of a read: now plus a budget, or the caller's deadline when sooner. */
static int64_t
read_deadline(svc_call_t *call)
{
    int64_t budget = svc_now_unix_ms() + READ_BUDGET_MS, d = svc_call_deadline_ms(call);

    return d < budget ? d : budget;
}

/* ---------- changes ---------- */

/*
 * With identity on, the two-phase steps and Refund are reservation-svc's
 * part of a payment, for trusted peers only: an owner who could Refund the
 * capture of a confirmed reservation would get the money back and keep the
 * seats (and Void or Capture would let a user step into a payment).
 */
static int
check_payment_step(balance_service_t *svc, svc_call_t *call, const char *what, svc_err_t *err)
{
    return svc_auth_check_peer(svc->auth, call, what, err);
}

/* TopUp, Spend and Authorize, once validated: join the account's queue. */
static void
change(balance_service_t *svc, svc_call_t *call, balance_op_kind_t kind, int64_t user_id,
       int64_t amount, const char *key, const char *reference, int64_t expires_in_ms)
{
    balance_req_t *r;
    svc_err_t err;

    if (kind == BALANCE_OP_AUTHORIZE ? check_payment_step(svc, call, "Authorize", &err) != 0
                                     : svc_auth_check_user(svc->auth, call, user_id, &err) != 0) {
        svc_call_fail(call, &err);
        return;
    }
    if ((r = new_req(call, kind)) == NULL) {
        return;
    }
    r->op.amount = amount;
    r->op.key = key;
    r->op.reference = reference != NULL ? reference : "";
    r->op.expires_in_ms = expires_in_ms;
    balance_batcher_submit(svc->batcher, user_id, r);
}

static void
handle_top_up(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Balance__V1__TopUpRequest *req = (const void *)msg;
    svc_err_t err;

    if (!balance_validate_top_up(req, &err)) {
        svc_call_fail(call, &err);
        return;
    }
    change(user, call, BALANCE_OP_TOP_UP, req->user_id, req->amount, req->idempotency_key, "", 0);
}

static void
handle_spend(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Balance__V1__SpendRequest *req = (const void *)msg;
    svc_err_t err;

    if (!balance_validate_spend(req, &err)) {
        svc_call_fail(call, &err);
        return;
    }
    change(user, call, BALANCE_OP_SPEND, req->user_id, req->amount, req->idempotency_key,
           req->reference, 0);
}

static void
handle_authorize(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Balance__V1__AuthorizeRequest *req = (const void *)msg;
    int64_t expires_in_ms;
    svc_err_t err;

    if (!balance_validate_authorize(req, &expires_in_ms, &err)) {
        svc_call_fail(call, &err);
        return;
    }
    change(user, call, BALANCE_OP_AUTHORIZE, req->user_id, req->amount, req->idempotency_key,
           req->reference, expires_in_ms);
}

static void
handle_refund(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Balance__V1__RefundRequest *req = (const void *)msg;
    balance_service_t *svc = user;
    balance_req_t *r;
    svc_err_t err;

    if (!balance_validate_refund(req, &err) || check_payment_step(svc, call, "Refund", &err) != 0) {
        svc_call_fail(call, &err);
        return;
    }
    if ((r = new_req(call, BALANCE_OP_REFUND)) == NULL) {
        return;
    }
    r->op.amount = req->amount;
    r->op.key = req->idempotency_key;
    r->op.target_id = req->transaction_id;
    balance_batcher_submit(svc->batcher, req->user_id, r);
}

/*
 * Capture and Void, once validated: find the authorization's account, then
 * join its queue. The caller is checked before the lookup, so one who may
 * not settle learns nothing of which authorizations exist.
 */
static void
settle(balance_service_t *svc, svc_call_t *call, balance_op_kind_t kind, int64_t authorization_id)
{
    balance_req_t *r;
    int64_t user_id;
    svc_err_t err;

    if (check_payment_step(svc, call, kind == BALANCE_OP_CAPTURE ? "Capture" : "Void", &err) != 0 ||
        balance_store_authorization_user(svc->db, authorization_id, read_deadline(call), &user_id,
                                         &err) != 0) {
        svc_call_fail(call, &err);
        return;
    }
    if ((r = new_req(call, kind)) == NULL) {
        return;
    }
    r->op.target_id = authorization_id;
    balance_batcher_submit(svc->batcher, user_id, r);
}

static void
handle_capture(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Balance__V1__CaptureRequest *req = (const void *)msg;
    svc_err_t err;

    if (!balance_validate_capture(req, &err)) {
        svc_call_fail(call, &err);
        return;
    }
    settle(user, call, BALANCE_OP_CAPTURE, req->authorization_id);
}

static void
handle_void(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Balance__V1__VoidRequest *req = (const void *)msg;
    svc_err_t err;

    if (!balance_validate_void(req, &err)) {
        svc_call_fail(call, &err);
        return;
    }
    settle(user, call, BALANCE_OP_VOID, req->authorization_id);
}

/* ---------- reads ---------- */

static void
handle_get_balance(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Balance__V1__GetBalanceRequest *req = (const void *)msg;
    Balance__V1__GetBalanceResponse resp = BALANCE__V1__GET_BALANCE_RESPONSE__INIT;
    balance_service_t *svc = user;
    svc_err_t err;

    if (!balance_validate_get_balance(req, &err) ||
        svc_auth_check_user(svc->auth, call, req->user_id, &err) != 0 ||
        balance_store_get(svc->db, req->user_id, read_deadline(call), &resp.balance,
                          &resp.available, &resp.updated_at_ms, &err) != 0) {
        svc_call_fail(call, &err);
        return;
    }
    resp.user_id = req->user_id;
    svc_call_reply(call, &resp.base);
}

static Balance__V1__TransactionKind
transaction_kind(balance_kind_t kind)
{
    switch (kind) {
    case BALANCE_TOP_UP:
        return BALANCE__V1__TRANSACTION_KIND__TRANSACTION_KIND_TOP_UP;
    case BALANCE_SPEND:
        return BALANCE__V1__TRANSACTION_KIND__TRANSACTION_KIND_SPEND;
    case BALANCE_REFUND:
        return BALANCE__V1__TRANSACTION_KIND__TRANSACTION_KIND_REFUND;
    }
    return BALANCE__V1__TRANSACTION_KIND__TRANSACTION_KIND_UNSPECIFIED;
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
    int32_t page_size;
    svc_err_t err;
    bool more;
    int n;

    if (!balance_validate_list_transactions(req, &before, &page_size, &err) ||
        svc_auth_check_user(svc->auth, call, req->user_id, &err) != 0 ||
        balance_store_list(svc->db, req->user_id, before, page_size, read_deadline(call), arena,
                           &rows, &n, &more, &err) != 0) {
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
        t->kind = transaction_kind(rows[i].kind);
        t->amount = rows[i].amount;
        t->balance_after = rows[i].balance_after;
        t->idempotency_key = rows[i].key;
        t->reference = rows[i].reference;
        t->created_at_ms = rows[i].created_at_ms;
        t->refund_of = rows[i].refund_of;
        resp.transactions[resp.n_transactions++] = t;
    }
    if (more && n > 0) {
        resp.next_page_token = svc_arena_printf(arena, "%" PRId64, rows[n - 1].id);
    }
    svc_call_reply(call, &resp.base);
}

/* ---------- lifecycle ---------- */

balance_service_t *
balance_service_create(svc_server_t *server, svc_pg_pool_t *db, svc_client_t *lock_svc,
                       const balance_limits_t *limits, const svc_auth_t *auth, svc_err_t *err)
{
    balance_service_t *svc = calloc(1, sizeof(*svc));

    if (svc == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    svc->server = server;
    svc->db = db;
    svc->auth = auth;
    svc->batcher = balance_batcher_create(server, db, lock_svc, limits, err);
    if (svc->batcher == NULL) {
        free(svc);
        return NULL;
    }
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
        {"Authorize", SVC_METHOD_UNARY, handle_authorize, NULL, 0},
        {"Capture", SVC_METHOD_UNARY, handle_capture, NULL, 0},
        {"Void", SVC_METHOD_UNARY, handle_void, NULL, 0},
        {"Refund", SVC_METHOD_UNARY, handle_refund, NULL, 0},
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
    balance_batcher_destroy(svc->batcher);
    free(svc);
}
