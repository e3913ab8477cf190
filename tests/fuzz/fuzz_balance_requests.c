/*
 * fuzz_balance_requests.c: every request of balance.v1.BalanceService, as
 * bytes off the wire: the first byte picks the method, the rest is decoded
 * as its request (fuzz_unpack) and, when it decodes, run through the
 * method's own validator (balance_validate.h), page token included.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "balance/v1/balance.pb-c.h"
#include "balance_store.h"
#include "balance_validate.h"
#include "fuzz_common.h"

static void
check_change(int64_t user_id, int64_t amount, int64_t max, const char *key)
{
    FUZZ_CHECK(user_id >= 1);
    FUZZ_CHECK(amount >= 1 && amount <= max);
    FUZZ_CHECK(strlen(key) >= 1 && strlen(key) <= BALANCE_KEY_MAX);
}

static void
run(const char *method, const ProtobufCMessage *msg)
{
    svc_err_t err = {0};
    bool ok;

    if (strcmp(method, "TopUp") == 0) {
        const Balance__V1__TopUpRequest *r = (const void *)msg;
        if ((ok = balance_validate_top_up(r, &err))) {
            check_change(r->user_id, r->amount, BALANCE_MAX_AMOUNT, r->idempotency_key);
        }
    } else if (strcmp(method, "Spend") == 0) {
        const Balance__V1__SpendRequest *r = (const void *)msg;
        if ((ok = balance_validate_spend(r, &err))) {
            check_change(r->user_id, r->amount, BALANCE_MAX_AMOUNT, r->idempotency_key);
            FUZZ_CHECK(strlen(r->reference) <= BALANCE_REFERENCE_MAX);
        }
    } else if (strcmp(method, "Authorize") == 0) {
        const Balance__V1__AuthorizeRequest *r = (const void *)msg;
        int64_t expires_in_ms = -1;
        if ((ok = balance_validate_authorize(r, &expires_in_ms, &err))) {
            check_change(r->user_id, r->amount, BALANCE_MAX_HOLD, r->idempotency_key);
            FUZZ_CHECK(expires_in_ms >= 1 && expires_in_ms <= BALANCE_EXPIRES_MAX_MS);
        }
    } else if (strcmp(method, "Refund") == 0) {
        const Balance__V1__RefundRequest *r = (const void *)msg;
        if ((ok = balance_validate_refund(r, &err))) {
            check_change(r->user_id, r->amount, BALANCE_MAX_HOLD, r->idempotency_key);
            FUZZ_CHECK(r->transaction_id >= 1);
        }
    } else if (strcmp(method, "Capture") == 0) {
        const Balance__V1__CaptureRequest *r = (const void *)msg;
        if ((ok = balance_validate_capture(r, &err))) {
            FUZZ_CHECK(r->authorization_id >= 1);
        }
    } else if (strcmp(method, "Void") == 0) {
        const Balance__V1__VoidRequest *r = (const void *)msg;
        if ((ok = balance_validate_void(r, &err))) {
            FUZZ_CHECK(r->authorization_id >= 1);
        }
    } else if (strcmp(method, "GetBalance") == 0) {
        const Balance__V1__GetBalanceRequest *r = (const void *)msg;
        if ((ok = balance_validate_get_balance(r, &err))) {
            FUZZ_CHECK(r->user_id >= 1);
        }
    } else if (strcmp(method, "ListTransactions") == 0) {
        const Balance__V1__ListTransactionsRequest *r = (const void *)msg;
        int64_t before = -1;
        int32_t page_size = -1;
        if ((ok = balance_validate_list_transactions(r, &before, &page_size, &err))) {
            FUZZ_CHECK(r->user_id >= 1);
            FUZZ_CHECK(page_size >= 1 && page_size <= BALANCE_PAGE_MAX);
            FUZZ_CHECK(before >= 0);
            if (before == 0) {
                FUZZ_CHECK(r->page_token[0] == '\0');
            } else {
                char again[32];
                snprintf(again, sizeof(again), "%" PRId64, before);
                FUZZ_CHECK(strcmp(again, r->page_token) == 0);
            }
        }
    } else {
        fuzz_fail(method, __FILE__, __LINE__); /* a new RPC: give it its validator here */
    }
    fuzz_check_verdict(ok, &err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_requests(&balance__v1__balance_service__descriptor, data, size, run);
}
