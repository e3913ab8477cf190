/*
 * balance_client.c: balance.v1.BalanceService calls for the services built
 * on libsvc. Each call builds its request, makes one unary call in a
 * short-lived arena, and copies the answer's numbers into a plain struct.
 */
#define _GNU_SOURCE
#include <string.h>

#include "balance/v1/balance.pb-c.h"
#include "svc/balance_client.h"

#define METHOD(name) "/balance.v1.BalanceService/" name

/* One call; on success fill(out, resp) copies what the response carries. */
static int
balance__call(svc_client_t *c, const char *method, const ProtobufCMessage *req,
              const ProtobufCMessageDescriptor *resp_desc, const svc_call_opts_t *opts,
              void (*fill)(svc_balance_result_t *, const ProtobufCMessage *),
              svc_balance_result_t *out, svc_err_t *err)
{
    svc_arena_t *arena = svc_arena_create();
    ProtobufCMessage *resp;
    int rc;

    if (arena == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    rc = svc_client_unary(c, method, req, resp_desc, arena, &resp, opts, err);
    if (rc == 0 && out != NULL) {
        memset(out, 0, sizeof(*out));
        fill(out, resp);
    }
    svc_arena_destroy(arena);
    return rc;
}

static void
fill_get(svc_balance_result_t *out, const ProtobufCMessage *msg)
{
    const Balance__V1__GetBalanceResponse *r = (const void *)msg;

    out->balance = r->balance;
    out->available = r->available;
}

static void
fill_top_up(svc_balance_result_t *out, const ProtobufCMessage *msg)
{
    const Balance__V1__TopUpResponse *r = (const void *)msg;

    out->balance = r->balance;
    out->transaction_id = r->transaction_id;
    out->replayed = r->replayed;
}

static void
fill_spend(svc_balance_result_t *out, const ProtobufCMessage *msg)
{
    const Balance__V1__SpendResponse *r = (const void *)msg;

    out->balance = r->balance;
    out->transaction_id = r->transaction_id;
    out->replayed = r->replayed;
}

static void
fill_authorize(svc_balance_result_t *out, const ProtobufCMessage *msg)
{
    const Balance__V1__AuthorizeResponse *r = (const void *)msg;

    out->authorization_id = r->authorization_id;
    out->balance = r->balance;
    out->available = r->available;
    out->expires_at_ms = r->expires_at_ms;
    out->status = (int)r->status;
    out->replayed = r->replayed;
}

static void
fill_capture(svc_balance_result_t *out, const ProtobufCMessage *msg)
{
    const Balance__V1__CaptureResponse *r = (const void *)msg;

    out->balance = r->balance;
    out->transaction_id = r->transaction_id;
    out->replayed = r->replayed;
}

static void
fill_void(svc_balance_result_t *out, const ProtobufCMessage *msg)
{
    const Balance__V1__VoidResponse *r = (const void *)msg;

    out->balance = r->balance;
    out->available = r->available;
}

static void
fill_refund(svc_balance_result_t *out, const ProtobufCMessage *msg)
{
    const Balance__V1__RefundResponse *r = (const void *)msg;

    out->balance = r->balance;
    out->transaction_id = r->transaction_id;
    out->replayed = r->replayed;
}

int
svc_balance_get(svc_client_t *balance_svc, int64_t user_id, const svc_call_opts_t *opts,
                svc_balance_result_t *out, svc_err_t *err)
{
    Balance__V1__GetBalanceRequest req = BALANCE__V1__GET_BALANCE_REQUEST__INIT;

    req.user_id = user_id;
    return balance__call(balance_svc, METHOD("GetBalance"), &req.base,
                         &balance__v1__get_balance_response__descriptor, opts, fill_get, out, err);
}

int
svc_balance_top_up(svc_client_t *balance_svc, int64_t user_id, int64_t amount, const char *key,
                   const svc_call_opts_t *opts, svc_balance_result_t *out, svc_err_t *err)
{
    Balance__V1__TopUpRequest req = BALANCE__V1__TOP_UP_REQUEST__INIT;

    req.user_id = user_id;
    req.amount = amount;
    req.idempotency_key = (char *)(key != NULL ? key : "");
    return balance__call(balance_svc, METHOD("TopUp"), &req.base,
                         &balance__v1__top_up_response__descriptor, opts, fill_top_up, out, err);
}

int
svc_balance_spend(svc_client_t *balance_svc, int64_t user_id, int64_t amount, const char *key,
                  const char *reference, const svc_call_opts_t *opts, svc_balance_result_t *out,
                  svc_err_t *err)
{
    Balance__V1__SpendRequest req = BALANCE__V1__SPEND_REQUEST__INIT;

    req.user_id = user_id;
    req.amount = amount;
    req.idempotency_key = (char *)(key != NULL ? key : "");
    req.reference = (char *)(reference != NULL ? reference : "");
    return balance__call(balance_svc, METHOD("Spend"), &req.base,
                         &balance__v1__spend_response__descriptor, opts, fill_spend, out, err);
}

int
svc_balance_authorize(svc_client_t *balance_svc, int64_t user_id, int64_t amount, const char *key,
                      const char *reference, int64_t expires_in_ms, const svc_call_opts_t *opts,
                      svc_balance_result_t *out, svc_err_t *err)
{
    Balance__V1__AuthorizeRequest req = BALANCE__V1__AUTHORIZE_REQUEST__INIT;

    req.user_id = user_id;
    req.amount = amount;
    req.idempotency_key = (char *)(key != NULL ? key : "");
    req.reference = (char *)(reference != NULL ? reference : "");
    req.expires_in_ms = expires_in_ms;
    return balance__call(balance_svc, METHOD("Authorize"), &req.base,
                         &balance__v1__authorize_response__descriptor, opts, fill_authorize, out,
                         err);
}

int
svc_balance_capture(svc_client_t *balance_svc, int64_t authorization_id,
                    const svc_call_opts_t *opts, svc_balance_result_t *out, svc_err_t *err)
{
    Balance__V1__CaptureRequest req = BALANCE__V1__CAPTURE_REQUEST__INIT;

    req.authorization_id = authorization_id;
    return balance__call(balance_svc, METHOD("Capture"), &req.base,
                         &balance__v1__capture_response__descriptor, opts, fill_capture, out, err);
}

int
svc_balance_void(svc_client_t *balance_svc, int64_t authorization_id, const svc_call_opts_t *opts,
                 svc_balance_result_t *out, svc_err_t *err)
{
    Balance__V1__VoidRequest req = BALANCE__V1__VOID_REQUEST__INIT;

    req.authorization_id = authorization_id;
    return balance__call(balance_svc, METHOD("Void"), &req.base,
                         &balance__v1__void_response__descriptor, opts, fill_void, out, err);
}

int
svc_balance_refund(svc_client_t *balance_svc, int64_t user_id, int64_t transaction_id,
                   int64_t amount, const char *key, const svc_call_opts_t *opts,
                   svc_balance_result_t *out, svc_err_t *err)
{
    Balance__V1__RefundRequest req = BALANCE__V1__REFUND_REQUEST__INIT;

    req.user_id = user_id;
    req.transaction_id = transaction_id;
    req.amount = amount;
    req.idempotency_key = (char *)(key != NULL ? key : "");
    return balance__call(balance_svc, METHOD("Refund"), &req.base,
                         &balance__v1__refund_response__descriptor, opts, fill_refund, out, err);
}
