/*
 * reservation_payment.c: PayReservation and CancelReservation, a payment
 * that spans two databases made safe with balance-svc's two-phase funds.
 *
 * The reservation database decides; balance-svc follows. A payment is
 * PENDING while its money is authorized (held, not spent). The decision is
 * one transaction that locks the seats, the reservation and the payment:
 * if the hold is still live and owns its seats, the reservation is
 * CONFIRMED (seats SOLD) and the payment CAPTURING; otherwise the payment is
 * VOIDING. Only then is balance-svc told to capture or to void. A cancel
 * takes the same locks, so it comes either before the decision (the
 * payment loses: VOIDING) or after it (the reservation is refunded:
 * REFUNDING). Every step is idempotent (the authorization's key is
 * reservation:<id>, the refund's refund:reservation:<id>), so a retry, a
 * concurrent call, a crash or the sweeper's recovery pass finishes a
 * payment without charging twice. README.md in this folder draws it.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reservation_internal.h"
#include "svc/balance_client.h"
#include "svc/failpoint.h"
#include "svc/lock_client.h"
#include "svc/log.h"
#include "svc/metrics.h"

#define MAX_STEPS 8           /* transitions of one drive; a payment has at most 4 */
#define CANCEL_SETTLE_MS 2000 /* how long a cancel waits for balance-svc before answering */

/* Maps a balance-svc failure that may pass (down, slow, busy) to what our caller sees. */
static void
balance_unavailable(svc_err_t *err, const rsv_payment_t *pay)
{
    if (err->code == SVC_DEADLINE_EXCEEDED || err->code == SVC_CANCELLED) {
        return;
    }
    if (err->code == SVC_ABORTED) { /* the account's lock stayed busy: a refusal, not a fault */
        svc_err_set(err, SVC_ABORTED, "the account is busy, retry the payment");
        return;
    }
    static svc_log_limit_t limit = SVC_LOG_LIMIT_INIT(5);
    svc_logf_limited(&limit, SVC_LOG_WARN, "payment %" PRId64 " waits for balance-svc: %s", pay->id,
                     err->msg);
    svc_err_set(err, SVC_UNAVAILABLE, "balance service unavailable, retry the payment");
}

/* True for balance-svc answers that will not change on a retry. */
static bool
refused_for_good(svc_status_t code)
{
    return code == SVC_FAILED_PRECONDITION || code == SVC_NOT_FOUND || code == SVC_INVALID_ARGUMENT;
}

/*
 * The payment cannot be made: PENDING -> FAILED, and err says why to the
 * caller. Unless a concurrent attempt decided it first (its capture is why
 * our authorization replays as no longer live): then 0, and the drive goes
 * on from where that attempt left the payment.
 */
static int refuse(reservation_service_t *svc, rsv_payment_t *pay, svc_err_t *err, const char *fmt,
                  ...) __attribute__((format(printf, 4, 5)));

static int
refuse(reservation_service_t *svc, rsv_payment_t *pay, svc_err_t *err, const char *fmt, ...)
{
    char why[SVC_ERR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    if (rsv_store_pay_refused(svc->db, pay->id, svc_now_unix_ms() + 5000, pay, err) != 0) {
        return -1;
    }
    if (pay->status != RSV_PAY_FAILED) {
        svc_logf(SVC_LOG_DEBUG, "payment %" PRId64 " was decided by another attempt (%s)", pay->id,
                 why);
        return 0;
    }
    svc_err_set(err, SVC_FAILED_PRECONDITION, "%s", why);
    return -1;
}

/*
 * Before two-phase funds a payment spent at once under the same key, so
 * Authorize finds the key taken. Spend with that key and amount replays the
 * old spend (it cannot charge again: the key is taken); the payment then
 * goes on as one already paid.
 */
static int
step_legacy_spend(reservation_service_t *svc, rsv_payment_t *pay, const svc_call_opts_t *opts,
                  const char *reference, svc_err_t *err)
{
    svc_balance_result_t res;

    if (svc_balance_spend(svc->balance_svc, pay->user_id, pay->amount, pay->key, reference, opts,
                          &res, err) != 0) {
        if (refused_for_good(err->code)) {
            return refuse(svc, pay, err, "payment of reservation %" PRId64 " refused",
                          pay->reservation_id);
        }
        balance_unavailable(err, pay);
        return -1;
    }
    svc_logf(SVC_LOG_INFO,
             "payment %" PRId64 " was spent before two-phase funds: ledger row %" PRId64, pay->id,
             res.transaction_id);
    return rsv_store_pay_decide(svc->db, pay->id, 0, res.transaction_id, res.balance,
                                svc_now_unix_ms(), svc_now_unix_ms() + 5000, pay, err);
}

/*
 * PENDING: authorize (or find the authorization an earlier attempt made,
 * by its key), then decide.
 */
static int
step_pending(reservation_service_t *svc, rsv_payment_t *pay, const svc_call_opts_t *opts,
             svc_err_t *err)
{
    svc_balance_result_t res = {0};
    char reference[64];
    int64_t left = pay->hold_expires_at_ms - svc_now_unix_ms();

    snprintf(reference, sizeof(reference), "reservation %" PRId64, pay->reservation_id);
    /* A slow attempt: another may authorize, decide and capture the payment meanwhile. */
    svc_failpoint_pause("pay_before_authorize");
    if (pay->amount > 0) {
        /* The money must stay held from now until a decision taken before the hold ends has
         * been carried out: the rest of the hold, plus the grace for the capture. */
        if (svc_balance_authorize(svc->balance_svc, pay->user_id, pay->amount, pay->key, reference,
                                  (left > 0 ? left : 0) + svc->opts.pay_grace_ms, opts, &res,
                                  err) != 0) {
            if (err->code == SVC_INVALID_ARGUMENT) {
                return step_legacy_spend(svc, pay, opts, reference, err);
            }
            if (err->code == SVC_NOT_FOUND) {
                return refuse(svc, pay, err, "user %" PRId64 " has no account to pay from",
                              pay->user_id);
            }
            if (refused_for_good(err->code)) {
                return refuse(svc, pay, err, "%s", err->msg); /* too little money */
            }
            balance_unavailable(err, pay);
            return -1;
        }
        if (res.status != SVC_BALANCE_AUTH_PENDING || res.expires_at_ms < pay->hold_expires_at_ms) {
            /* Under our key, yet dead or not made for this hold: it cannot pay for it. */
            return refuse(
                svc, pay, err,
                "payment of reservation %" PRId64 " refused: its authorization %" PRId64 " is %s",
                pay->reservation_id, res.authorization_id,
                res.status == SVC_BALANCE_AUTH_PENDING ? "too short-lived" : "no longer live");
        }
    }
    /* A crash here leaves money authorized and nothing decided: the sweeper decides. */
    svc_failpoint_crash("pay_after_authorize");
    if (rsv_store_pay_decide(svc->db, pay->id, res.authorization_id, 0, 0, svc_now_unix_ms(),
                             svc_now_unix_ms() + 5000, pay, err) != 0) {
        return -1;
    }
    if (pay->status == RSV_PAY_FAILED && res.authorization_id != 0) {
        /* Someone else ended the payment (a refusal raced our authorization): let it go. */
        svc_err_t ignored;
        (void)svc_balance_void(svc->balance_svc, res.authorization_id, opts, NULL, &ignored);
    } else if (pay->status == RSV_PAY_VOIDING && pay->authorization_id == 0) {
        pay->authorization_id = res.authorization_id; /* decided before us: we know the id */
    }
    return 0;
}

/* CAPTURING or REFUNDING without its spend: capture, and record the ledger row. */
static int
step_capture(reservation_service_t *svc, rsv_payment_t *pay, const svc_call_opts_t *opts,
             svc_err_t *err)
{
    svc_balance_result_t res;

    if (svc_balance_capture(svc->balance_svc, pay->authorization_id, opts, &res, err) != 0) {
        if (refused_for_good(err->code)) {
            /* The decision outlived its authorization: only a stall past the grace does that.
             * Nothing was spent and no OK was answered: undo the confirmation. */
            svc_logf(SVC_LOG_ERROR,
                     "payment %" PRId64 " of reservation %" PRId64 " cannot be captured (%s):"
                     " the reservation is released unpaid",
                     pay->id, pay->reservation_id, err->msg);
            return rsv_store_pay_uncapturable(svc->db, pay->id, svc_now_unix_ms(),
                                              svc_now_unix_ms() + 5000, pay, err);
        }
        balance_unavailable(err, pay);
        return -1;
    }
    /* The worst moment to die: charged, not yet recorded. A retry must not charge again. */
    svc_failpoint_crash("pay_after_spend");
    return rsv_store_pay_captured(svc->db, pay->id, res.transaction_id, res.balance,
                                  svc_now_unix_ms() + 5000, pay, err);
}

/* VOIDING: void the authorization (finding it by its key when its id was not recorded). */
static int
step_void(reservation_service_t *svc, rsv_payment_t *pay, const svc_call_opts_t *opts,
          svc_err_t *err)
{
    int64_t auth = pay->authorization_id;
    svc_balance_result_t res;

    if (auth == 0) {
        /* Authorize again with the same key: it answers the authorization an earlier attempt
         * made (or makes one, to be voided at once). Refused: there is nothing to void. */
        if (svc_balance_authorize(svc->balance_svc, pay->user_id, pay->amount, pay->key, "",
                                  svc->opts.pay_grace_ms, opts, &res, err) == 0) {
            auth = res.status == SVC_BALANCE_AUTH_PENDING ? res.authorization_id : 0;
        } else if (!refused_for_good(err->code)) {
            balance_unavailable(err, pay);
            return -1;
        }
    }
    if (auth != 0 && svc_balance_void(svc->balance_svc, auth, opts, &res, err) != 0) {
        if (!refused_for_good(err->code)) {
            balance_unavailable(err, pay);
            return -1;
        }
        /* Gone or voided already: done. Captured outside this protocol: say so loudly. */
        svc_logf(err->code == SVC_FAILED_PRECONDITION && strstr(err->msg, "captured") != NULL
                     ? SVC_LOG_ERROR
                     : SVC_LOG_INFO,
                 "payment %" PRId64 ": void of authorization %" PRId64 ": %s", pay->id, auth,
                 err->msg);
    }
    if (rsv_store_pay_voided(svc->db, pay->id, svc_now_unix_ms() + 5000, err) != 0) {
        return -1;
    }
    pay->status = RSV_PAY_FAILED;
    return 0;
}

/* REFUNDING with its spend known: refund it in full. */
static int
step_refund(reservation_service_t *svc, rsv_payment_t *pay, const svc_call_opts_t *opts,
            svc_err_t *err)
{
    svc_balance_result_t res;
    char key[80];

    snprintf(key, sizeof(key), "refund:%s", pay->key);
    if (svc_balance_refund(svc->balance_svc, pay->user_id, pay->balance_txn_id, pay->amount, key,
                           opts, &res, err) != 0) {
        if (refused_for_good(err->code)) {
            /* Say so and keep it for later (the balance cap may leave room again). */
            static svc_log_limit_t limit = SVC_LOG_LIMIT_INIT(5);
            svc_err_t touch;
            svc_logf_limited(&limit, SVC_LOG_ERROR, "refund of payment %" PRId64 " refused: %s",
                             pay->id, err->msg);
            (void)rsv_store_pay_touch(svc->db, pay->id, svc_now_unix_ms() + 5000, &touch);
            svc_err_set(err, SVC_FAILED_PRECONDITION, "refund of reservation %" PRId64 " refused",
                        pay->reservation_id);
            return -1;
        }
        balance_unavailable(err, pay);
        return -1;
    }
    if (rsv_store_pay_refunded(svc->db, pay->id, res.transaction_id, svc_now_unix_ms() + 5000,
                               err) != 0) {
        return -1;
    }
    pay->refund_txn_id = res.transaction_id;
    pay->status = RSV_PAY_REFUNDED;
    return 0;
}

/* A payment status's name, for the log. */
static const char *
pay_status_name(int status)
{
    static const char *const names[] = {
        [RSV_PAY_PENDING] = "PENDING",   [RSV_PAY_CHARGED] = "CHARGED",
        [RSV_PAY_FAILED] = "FAILED",     [RSV_PAY_CAPTURING] = "CAPTURING",
        [RSV_PAY_VOIDING] = "VOIDING",   [RSV_PAY_REFUNDING] = "REFUNDING",
        [RSV_PAY_REFUNDED] = "REFUNDED",
    };

    if (status < RSV_PAY_PENDING || status > RSV_PAY_REFUNDED) {
        return "UNKNOWN";
    }
    return names[status];
}

static int
payment_drive(reservation_service_t *svc, rsv_payment_t *pay, svc_call_t *parent,
              int64_t timeout_ms, svc_err_t *err)
{
    svc_call_opts_t opts = {.parent = parent, .timeout_ms = timeout_ms};

    for (int step = 0; step < MAX_STEPS; step++) {
        int rc, from = pay->status;
        switch (pay->status) {
        case RSV_PAY_PENDING:
            rc = step_pending(svc, pay, &opts, err);
            break;
        case RSV_PAY_CAPTURING:
            rc = step_capture(svc, pay, &opts, err);
            break;
        case RSV_PAY_VOIDING:
            rc = step_void(svc, pay, &opts, err);
            break;
        case RSV_PAY_REFUNDING:
            if (pay->amount == 0) {
                rc = rsv_store_pay_refunded(svc->db, pay->id, 0, svc_now_unix_ms() + 5000, err);
                pay->status = RSV_PAY_REFUNDED;
            } else {
                rc = pay->balance_txn_id == 0 ? step_capture(svc, pay, &opts, err)
                                              : step_refund(svc, pay, &opts, err);
            }
            break;
        default: /* CHARGED, FAILED, REFUNDED: nothing left to do */
            svc_err_clear(err);
            return 0;
        }
        if (rc != 0) {
            svc_logf(SVC_LOG_DEBUG, "payment %" PRId64 " stays %s: %s", pay->id,
                     pay_status_name(pay->status), err->msg);
            return -1;
        }
        svc_logf(SVC_LOG_DEBUG, "payment %" PRId64 " of reservation %" PRId64 ": %s -> %s", pay->id,
                 pay->reservation_id, pay_status_name(from), pay_status_name(pay->status));
    }
    svc_err_set(err, SVC_UNAVAILABLE, "payment %" PRId64 " did not settle", pay->id);
    return -1;
}

svc_metric_t *
reservation_payments_pending(void)
{
    static svc_metric_t *_Atomic pending;
    svc_metric_t *m = pending;

    if (m == NULL) {
        m = svc_metric(SVC_METRIC_GAUGE, "reservation_payments_pending",
                       "Payments this instance is taking through balance-svc now "
                       "(authorize, capture, void or refund under way).",
                       NULL);
        pending = m; /* two steps: clang types "a = (atomic b = c)" as _Atomic */
    }
    return m;
}

int
reservation_payment_drive(reservation_service_t *svc, rsv_payment_t *pay, svc_call_t *parent,
                          int64_t timeout_ms, svc_err_t *err)
{
    svc_metric_t *m = reservation_payments_pending();
    int rc;

    svc_metric_add(m, 1);
    rc = payment_drive(svc, pay, parent, timeout_ms, err);
    svc_metric_add(m, -1);
    return rc;
}

/*
 * A paid reservation on a schedule with a waiting room ends the admission
 * that made its hold, so the next in line is admitted now rather than when
 * the admission runs out. Best effort: its lease ends it anyway.
 */
static void
end_admission(reservation_service_t *svc, svc_call_t *call, const rsv_reservation_t *r)
{
    svc_sem_ticket_t t = {0};
    svc_err_t err;

    if (reservation_room_limit(svc, r->schedule_id, NULL) == 0 ||
        rsv_store_admission_end(svc->db, r->id, svc_now_unix_ms(), reservation_db_deadline(call),
                                t.ticket, sizeof(t.ticket), &err) != 0 ||
        t.ticket[0] == '\0') {
        return;
    }
    reservation_room_name(t.name, sizeof(t.name), r->schedule_id);
    svc_sem_leave_async(svc->lock_svc, &t, svc_call_request_id(call));
}

int
reservation_pay(reservation_service_t *svc, svc_call_t *call, int64_t reservation_id,
                int64_t user_id, svc_arena_t *arena, rsv_reservation_t *r, rsv_payment_t *pay,
                svc_err_t *err)
{
    if (rsv_store_pay_begin(svc->db, reservation_id, user_id, svc_now_unix_ms(),
                            reservation_db_deadline(call), arena, r, pay, err) != 0) {
        return -1;
    }
    if (reservation_payment_drive(svc, pay, call, 0, err) != 0) {
        if (pay->status == RSV_PAY_FAILED) {
            return -1; /* refused: err says why */
        }
        if (pay->status == RSV_PAY_CAPTURING) {
            return -1; /* confirmed; the capture is finished by a retry or the sweeper */
        }
        if (pay->status != RSV_PAY_PENDING) {
            svc_err_set(err, SVC_FAILED_PRECONDITION, "reservation %" PRId64 " is no longer held",
                        reservation_id);
        }
        return -1;
    }
    if (pay->status != RSV_PAY_CHARGED) {
        svc_err_set(err, SVC_FAILED_PRECONDITION, "reservation %" PRId64 " is %s", reservation_id,
                    pay->status == RSV_PAY_REFUNDED ? "cancelled" : "no longer held");
        return -1;
    }
    r->status = RSV_CONFIRMED;
    end_admission(svc, call, r);
    if (pay->amount == 0) { /* nothing was charged: the answer still shows the balance */
        svc_call_opts_t opts = {.parent = call, .timeout_ms = 2000};
        svc_balance_result_t res;
        svc_err_t ignored;
        if (svc_balance_get(svc->balance_svc, user_id, &opts, &res, &ignored) == 0) {
            pay->balance_after = res.balance;
        }
    }
    return 0;
}

int
reservation_cancel(reservation_service_t *svc, svc_call_t *call, int64_t reservation_id,
                   int64_t user_id, svc_arena_t *arena, rsv_reservation_t *out, svc_err_t *err)
{
    rsv_payment_t pay;
    svc_err_t later;

    if (rsv_store_cancel(svc->db, reservation_id, user_id, svc_now_unix_ms(),
                         reservation_db_deadline(call), arena, out, &pay, err) != 0) {
        return -1;
    }
    /* Decided and committed: the money follows now if balance-svc answers, else the sweeper. */
    if (pay.id != 0 && rsv_pay_unsettled(pay.status) &&
        reservation_payment_drive(svc, &pay, call, CANCEL_SETTLE_MS, &later) != 0) {
        svc_logf(SVC_LOG_INFO, "reservation %" PRId64 " cancelled; its payment settles later: %s",
                 reservation_id, later.msg);
    }
    svc_err_clear(err);
    return 0;
}
