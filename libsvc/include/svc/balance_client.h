/*
 * balance_client.h: the typed balance-svc client (balance.v1.BalanceService)
 * for services built on libsvc. Callers never name a method path or build a
 * request message; they get the answer's numbers in one plain struct.
 */
#ifndef SVC_BALANCE_CLIENT_H
#define SVC_BALANCE_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "svc/client.h"
#include "svc/err.h"

/* An authorization's status (balance.v1.AuthorizationStatus). */
#define SVC_BALANCE_AUTH_PENDING 1
#define SVC_BALANCE_AUTH_CAPTURED 2
#define SVC_BALANCE_AUTH_VOIDED 3

/* What an answer carried; fields a method does not return are 0. */
typedef struct {
    int64_t balance;
    int64_t available;        /* GetBalance, Authorize, Void */
    int64_t authorization_id; /* Authorize */
    int64_t transaction_id;   /* TopUp, Spend, Capture, Refund: the ledger row */
    int64_t expires_at_ms;    /* Authorize */
    int status;               /* Authorize: SVC_BALANCE_AUTH_*, where it stands now */
    bool replayed;
} svc_balance_result_t;

/*
 * Each call returns 0 and fills *out (may be NULL), or -1 with err holding
 * the status balance-svc sent (FAILED_PRECONDITION, NOT_FOUND, ...) or
 * UNAVAILABLE / DEADLINE_EXCEEDED from the transport. opts may be NULL
 * (10 s, no parent); a parent call's deadline and x-request-id carry over.
 */
int svc_balance_get(svc_client_t *balance_svc, int64_t user_id, const svc_call_opts_t *opts,
                    svc_balance_result_t *out, svc_err_t *err);

int svc_balance_top_up(svc_client_t *balance_svc, int64_t user_id, int64_t amount, const char *key,
                       const svc_call_opts_t *opts, svc_balance_result_t *out, svc_err_t *err);

int svc_balance_spend(svc_client_t *balance_svc, int64_t user_id, int64_t amount, const char *key,
                      const char *reference, const svc_call_opts_t *opts, svc_balance_result_t *out,
                      svc_err_t *err);

/* expires_in_ms 0: the server default. */
int svc_balance_authorize(svc_client_t *balance_svc, int64_t user_id, int64_t amount,
                          const char *key, const char *reference, int64_t expires_in_ms,
                          const svc_call_opts_t *opts, svc_balance_result_t *out, svc_err_t *err);

int svc_balance_capture(svc_client_t *balance_svc, int64_t authorization_id,
                        const svc_call_opts_t *opts, svc_balance_result_t *out, svc_err_t *err);

int svc_balance_void(svc_client_t *balance_svc, int64_t authorization_id,
                     const svc_call_opts_t *opts, svc_balance_result_t *out, svc_err_t *err);

int svc_balance_refund(svc_client_t *balance_svc, int64_t user_id, int64_t transaction_id,
                       int64_t amount, const char *key, const svc_call_opts_t *opts,
                       svc_balance_result_t *out, svc_err_t *err);

#endif
