/*
 * balance_validate.h: the argument checks of every balance.v1.BalanceService
 * request and the page-token decoder, apart from the handlers so that they
 * run (and are fuzzed, tests/fuzz) without PostgreSQL or a server. Each
 * returns true when the request is good and writes the values the handler
 * uses; otherwise err is INVALID_ARGUMENT naming the field. Pure: no I/O.
 */
#ifndef BALANCE_VALIDATE_H
#define BALANCE_VALIDATE_H

#include <stdbool.h>
#include <stdint.h>

#include "balance/v1/balance.pb-c.h"
#include "svc/err.h"

#define BALANCE_KEY_MAX 128       /* bytes of an idempotency key */
#define BALANCE_REFERENCE_MAX 256 /* bytes of a reference */
#define BALANCE_PAGE_DEFAULT 50
#define BALANCE_PAGE_MAX 500
#define BALANCE_EXPIRES_DEFAULT_MS 600000
#define BALANCE_EXPIRES_MAX_MS 86400000

bool balance_validate_top_up(const Balance__V1__TopUpRequest *req, svc_err_t *err);
bool balance_validate_spend(const Balance__V1__SpendRequest *req, svc_err_t *err);
/* *expires_in_ms: the request's, or the default for 0. */
bool balance_validate_authorize(const Balance__V1__AuthorizeRequest *req, int64_t *expires_in_ms,
                                svc_err_t *err);
bool balance_validate_refund(const Balance__V1__RefundRequest *req, svc_err_t *err);
bool balance_validate_capture(const Balance__V1__CaptureRequest *req, svc_err_t *err);
bool balance_validate_void(const Balance__V1__VoidRequest *req, svc_err_t *err);
bool balance_validate_get_balance(const Balance__V1__GetBalanceRequest *req, svc_err_t *err);
/* *before: the page token's id (0: the first page); *page_size: the request's or the default. */
bool balance_validate_list_transactions(const Balance__V1__ListTransactionsRequest *req,
                                        int64_t *before, int32_t *page_size, svc_err_t *err);

/*
 * A page token: the id of the last row of the previous page, in decimal as
 * ListTransactions writes it (no sign, space or leading zero, 1..INT64_MAX).
 * Empty or NULL: *before = 0 (the first page). Anything else is
 * INVALID_ARGUMENT, so one token has one spelling.
 */
bool balance_page_token_parse(const char *token, int64_t *before, svc_err_t *err);

#endif
