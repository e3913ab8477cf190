/*
 * balance_validate.c: the argument checks of balance.v1.BalanceService's
 * requests and the page-token decoder (see balance_validate.h); the
 * handlers in balance_service.c call them first.
 */
#include <stddef.h>
#include <stdint.h>

#include "balance_store.h"
#include "balance_validate.h"
#include "svc/validate.h"

/* TopUp, Spend, Authorize and Refund share these. */
static bool
check_change(int64_t user_id, int64_t amount, int64_t max_amount, const char *key,
             const char *reference, svc_err_t *err)
{
    return svc_validate_range("user_id", user_id, 1, INT64_MAX, err) &&
           svc_validate_range("amount", amount, 1, max_amount, err) &&
           svc_validate_text("idempotency_key", key, 1, BALANCE_KEY_MAX, err) &&
           svc_validate_text("reference", reference, 0, BALANCE_REFERENCE_MAX, err);
}

bool
balance_validate_top_up(const Balance__V1__TopUpRequest *req, svc_err_t *err)
{
    return check_change(req->user_id, req->amount, BALANCE_MAX_AMOUNT, req->idempotency_key, "",
                        err);
}

bool
balance_validate_spend(const Balance__V1__SpendRequest *req, svc_err_t *err)
{
    return check_change(req->user_id, req->amount, BALANCE_MAX_AMOUNT, req->idempotency_key,
                        req->reference, err);
}

bool
balance_validate_authorize(const Balance__V1__AuthorizeRequest *req, int64_t *expires_in_ms,
                           svc_err_t *err)
{
    *expires_in_ms = req->expires_in_ms == 0 ? BALANCE_EXPIRES_DEFAULT_MS : req->expires_in_ms;
    return svc_validate_range("expires_in_ms", *expires_in_ms, 1, BALANCE_EXPIRES_MAX_MS, err) &&
           check_change(req->user_id, req->amount, BALANCE_MAX_HOLD, req->idempotency_key,
                        req->reference, err);
}

bool
balance_validate_refund(const Balance__V1__RefundRequest *req, svc_err_t *err)
{
    return check_change(req->user_id, req->amount, BALANCE_MAX_HOLD, req->idempotency_key, "",
                        err) &&
           svc_validate_range("transaction_id", req->transaction_id, 1, INT64_MAX, err);
}

bool
balance_validate_capture(const Balance__V1__CaptureRequest *req, svc_err_t *err)
{
    return svc_validate_range("authorization_id", req->authorization_id, 1, INT64_MAX, err);
}

bool
balance_validate_void(const Balance__V1__VoidRequest *req, svc_err_t *err)
{
    return svc_validate_range("authorization_id", req->authorization_id, 1, INT64_MAX, err);
}

bool
balance_validate_get_balance(const Balance__V1__GetBalanceRequest *req, svc_err_t *err)
{
    return svc_validate_range("user_id", req->user_id, 1, INT64_MAX, err);
}

bool
balance_validate_list_transactions(const Balance__V1__ListTransactionsRequest *req, int64_t *before,
                                   int32_t *page_size, svc_err_t *err)
{
    if (!svc_validate_range("user_id", req->user_id, 1, INT64_MAX, err) ||
        !svc_validate_range("page_size", req->page_size, 0, BALANCE_PAGE_MAX, err) ||
        !balance_page_token_parse(req->page_token, before, err)) {
        return false;
    }
    *page_size = req->page_size > 0 ? req->page_size : BALANCE_PAGE_DEFAULT;
    return true;
}

bool
balance_page_token_parse(const char *token, int64_t *before, svc_err_t *err)
{
    const char *s = token;
    int64_t v = 0;

    *before = 0;
    if (s == NULL || s[0] == '\0') {
        return true;
    }
    /* 1..9 first, then digits, without overflow: what "%" PRId64 of a positive id writes. */
    if (*s < '1' || *s > '9') {
        goto bad;
    }
    for (; *s >= '0' && *s <= '9'; s++) {
        int d = *s - '0';
        if (v > (INT64_MAX - d) / 10) {
            goto bad;
        }
        v = v * 10 + d;
    }
    if (*s != '\0') {
        goto bad;
    }
    *before = v;
    return true;
bad:
    svc_err_set(err, SVC_INVALID_ARGUMENT, "page_token is not valid");
    return false;
}
