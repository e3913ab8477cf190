/*
 * reservation_store.h: reservation-svc's PostgreSQL side, the only place
 * with SQL: concerts and their seats, holds that expire, and the sweeper.
 */
#ifndef RESERVATION_STORE_H
#define RESERVATION_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "svc/arena.h"
#include "svc/err.h"
#include "svc/pg.h"

/* Stored values (seats.status, reservations.status); the SQL gets them as parameters (RSV_STR). */
#define RSV_SEAT_AVAILABLE 1
#define RSV_SEAT_HELD 2
#define RSV_SEAT_SOLD 3
#define RSV_HELD 1
#define RSV_CONFIRMED 2
#define RSV_CANCELLED 3
#define RSV_EXPIRED 4

#define RSV_MAX_SEATS 10                    /* seats in one hold */
#define RSV_ADMISSION_TTL_MAX_MS 86400000LL /* the longest admission_ttl_ms */
#define RSV_XSTR(x) #x
#define RSV_STR(x) RSV_XSTR(x) /* a stored value as SQL text */

typedef struct {
    int64_t id, concert_id, starts_at_ms;
    int32_t seat_count, available;
    int32_t waiting_room_limit; /* 0: no waiting room */
    int64_t admission_ttl_ms;
} rsv_schedule_t;

typedef struct {
    int64_t id;
    char *title;
    rsv_schedule_t *schedules;
    int n_schedules;
} rsv_concert_t;

typedef struct {
    int64_t starts_at_ms;
    int32_t seat_count;
    int64_t seat_price;
    int32_t waiting_room_limit; /* 0: none */
    int64_t admission_ttl_ms;   /* with a waiting room */
} rsv_schedule_spec_t;

typedef struct {
    int32_t number;
    int64_t price;
    int status; /* RSV_SEAT_*, an expired hold reads as available */
} rsv_seat_t;

typedef struct {
    int64_t id, user_id, schedule_id, amount, expires_at_ms, created_at_ms;
    int64_t starts_at_ms; /* its schedule's */
    int status;           /* RSV_*, a held one past its expiry reads as expired */
    int32_t *seats;
    int n_seats;
} rsv_reservation_t;

/* Creates a concert, its schedules and their seats in one transaction. */
int rsv_store_create_concert(svc_pg_pool_t *db, const char *title, const rsv_schedule_spec_t *specs,
                             int n_specs, int64_t deadline_ms, svc_arena_t *arena,
                             rsv_concert_t *out, svc_err_t *err);

/* Every concert with its schedules and their available seats now. */
int rsv_store_list_concerts(svc_pg_pool_t *db, int64_t now_ms, int64_t deadline_ms,
                            svc_arena_t *arena, rsv_concert_t **out, int *n_out, svc_err_t *err);

/* The seats of a schedule in number order. NOT_FOUND for an unknown schedule. */
int rsv_store_list_seats(svc_pg_pool_t *db, int64_t schedule_id, int64_t now_ms,
                         int64_t deadline_ms, svc_arena_t *arena, rsv_seat_t **out, int *n_out,
                         svc_err_t *err);

/* A schedule's waiting room: limit (0: none) and admission TTL. NOT_FOUND when unknown. */
int rsv_store_schedule_room(svc_pg_pool_t *db, int64_t schedule_id, int64_t deadline_ms,
                            int32_t *limit, int64_t *ttl_ms, svc_err_t *err);

/*
 * The fail-fast check before any lock, without locking anything: NOT_FOUND
 * for an unknown schedule, INVALID_ARGUMENT for a seat it does not have,
 * FAILED_PRECONDITION naming the first seat that is held or sold (also in
 * *taken, when taken is not NULL).
 */
int rsv_store_precheck(svc_pg_pool_t *db, int64_t schedule_id, const int32_t *seats, int n,
                       int64_t now_ms, int64_t deadline_ms, int32_t *taken, svc_err_t *err);

/* One fail-fast check of rsv_store_precheck_many: what to check, and its outcome. */
typedef struct {
    int64_t schedule_id;
    const int32_t *seats; /* ascending */
    int n;
    int rc;                     /* out: 0 free, -1 refused or failed (err says which) */
    int32_t waiting_room_limit; /* out: the schedule's, when it exists (0: none) */
    int64_t admission_ttl_ms;   /* out: the schedule's, when it exists */
    int32_t taken;              /* out: as rsv_store_precheck's *taken, 0 when none */
    svc_err_t err;              /* out */
} rsv_precheck_t;

/*
 * Many fail-fast checks in one statement (a storm's leaders arrive
 * together). Returns -1 only when the statement failed (err; then every
 * check's rc is -1 with that error too), else 0 with each check's outcome.
 */
int rsv_store_precheck_many(svc_pg_pool_t *db, rsv_precheck_t *const *checks, int n_checks,
                            int64_t now_ms, int64_t deadline_ms, svc_err_t *err);

/*
 * The hold, in one transaction: locks the seats (FOR UPDATE, ascending),
 * checks again that they are free (an expired hold counts as free, and is
 * marked expired here), refuses a fence older than a seat's (ABORTED), and
 * writes the reservation. seats are ascending; fences[i] belongs to seats[i].
 * A seat found held or sold is named in *taken as for rsv_store_precheck.
 * admission_ticket (NULL: none) is kept with the reservation.
 */
int rsv_store_hold(svc_pg_pool_t *db, int64_t user_id, int64_t schedule_id, const int32_t *seats,
                   const int64_t *fences, int n, int64_t now_ms, int64_t ttl_ms,
                   const char *admission_ticket, int64_t deadline_ms, svc_arena_t *arena,
                   rsv_reservation_t *out, int32_t *taken, svc_err_t *err);

/*
 * Ends the admission that made reservation_id's hold, if any: its ticket
 * goes into ended_admissions (HoldSeats refuses its token from now on) and
 * into buf (len bytes; "" when the hold had none), for lock-svc's leave.
 * 0, or -1 with err.
 */
int rsv_store_admission_end(svc_pg_pool_t *db, int64_t reservation_id, int64_t now_ms,
                            int64_t deadline_ms, char *buf, size_t len, svc_err_t *err);

/* Ends the admission (or place) of lock-svc's ticket, as above. 0, or -1 with err. */
int rsv_store_admission_end_ticket(svc_pg_pool_t *db, const char *ticket, int64_t now_ms,
                                   int64_t deadline_ms, svc_err_t *err);

/* Whether ticket's admission ended (*ended). 0, or -1 with err. */
int rsv_store_admission_ended(svc_pg_pool_t *db, const char *ticket, int64_t deadline_ms,
                              bool *ended, svc_err_t *err);

int rsv_store_get(svc_pg_pool_t *db, int64_t reservation_id, int64_t now_ms, int64_t deadline_ms,
                  svc_arena_t *arena, rsv_reservation_t *out, svc_err_t *err);

/*
 * A payment of a reservation, one per reservation. Its status is the state
 * of the money, the reservation's status the state of the seats; the two
 * change together in one transaction. RSV_PAY_* are the values stored in
 * payments.status (migration 003); the SQL gets them as parameters.
 *
 *   PENDING    intent recorded; balance-svc may hold an authorization
 *   CHARGED    reservation confirmed, authorization captured (final)
 *   FAILED     nothing charged: refused, or voided (final)
 *   CAPTURING  reservation confirmed; the capture is still to be done
 *   VOIDING    reservation cancelled or expired while pending; void to do
 *   REFUNDING  a confirmed reservation was cancelled; capture, then refund
 *   REFUNDED   the confirmed-then-cancelled reservation was refunded (final)
 */
#define RSV_PAY_PENDING 1
#define RSV_PAY_CHARGED 2
#define RSV_PAY_FAILED 3
#define RSV_PAY_CAPTURING 4
#define RSV_PAY_VOIDING 5
#define RSV_PAY_REFUNDING 6
#define RSV_PAY_REFUNDED 7

typedef struct {
    int64_t id;
    int64_t reservation_id, user_id, amount;
    int status;               /* RSV_PAY_* */
    int64_t authorization_id; /* 0 until the decision recorded it */
    int64_t balance_txn_id;   /* the capture's ledger row */
    int64_t balance_after;
    int64_t refund_txn_id;
    int64_t hold_expires_at_ms; /* the reservation's expiry when the payment began */
    char key[64];               /* the authorization's idempotency key: reservation:<id> */
} rsv_payment_t;

/* True for the statuses that need balance-svc to be told something. */
static inline bool
rsv_pay_unsettled(int status)
{
    return status == RSV_PAY_PENDING || status == RSV_PAY_CAPTURING || status == RSV_PAY_VOIDING ||
           status == RSV_PAY_REFUNDING;
}

/*
 * Step 1 of PayReservation, in one transaction: PERMISSION_DENIED for
 * someone else's reservation. A live hold gets a PENDING payment (a failed
 * one is tried again); an existing payment is returned as it is, so a
 * retry, a concurrent call or a restart carries on with the same payment
 * (pay->status says where it stands). FAILED_PRECONDITION when the
 * reservation is expired or cancelled and has no payment to carry on with.
 * The hold is not extended: a payment must be decided before it expires.
 */
int rsv_store_pay_begin(svc_pg_pool_t *db, int64_t reservation_id, int64_t user_id, int64_t now_ms,
                        int64_t deadline_ms, svc_arena_t *arena, rsv_reservation_t *r,
                        rsv_payment_t *pay, svc_err_t *err);

/*
 * The decision, in one transaction that locks the seats, then the
 * reservation, then the payment: a PENDING payment whose reservation is
 * still held, unexpired and owns its seats confirms it (seats SOLD) and
 * becomes CAPTURING (CHARGED when amount is 0); otherwise it becomes VOIDING
 * (FAILED without an authorization) and an expired hold is marked EXPIRED.
 * spent_txn_id (else 0) is a spend the money already went to (a payment
 * begun by a version before two-phase funds): CHARGED if confirmed, else
 * REFUNDING. A payment that is no longer PENDING is left as it is. *pay is
 * re-read.
 */
int rsv_store_pay_decide(svc_pg_pool_t *db, int64_t payment_id, int64_t authorization_id,
                         int64_t spent_txn_id, int64_t balance_after, int64_t now_ms,
                         int64_t deadline_ms, rsv_payment_t *pay, svc_err_t *err);

/*
 * balance-svc refused the authorization for good: PENDING -> FAILED. *pay is
 * the payment afterwards: another attempt may have moved it on first (its
 * authorization captured, so ours replays as no longer live).
 */
int rsv_store_pay_refused(svc_pg_pool_t *db, int64_t payment_id, int64_t deadline_ms,
                          rsv_payment_t *pay, svc_err_t *err);

/*
 * The capture is done: records its ledger row; CAPTURING -> CHARGED
 * (REFUNDING stays, now with the spend to refund). *pay is re-read.
 */
int rsv_store_pay_captured(svc_pg_pool_t *db, int64_t payment_id, int64_t balance_txn_id,
                           int64_t balance_after, int64_t deadline_ms, rsv_payment_t *pay,
                           svc_err_t *err);

/*
 * balance-svc refused the capture for good (the authorization expired or was
 * voided: only a stall far past PAY_GRACE_MS does that): a CAPTURING
 * payment's reservation, confirmed but never answered OK, ends EXPIRED with
 * its seats free; a REFUNDING one that never spent anything ends FAILED.
 * Either way the payment is FAILED; *pay is re-read.
 */
int rsv_store_pay_uncapturable(svc_pg_pool_t *db, int64_t payment_id, int64_t now_ms,
                               int64_t deadline_ms, rsv_payment_t *pay, svc_err_t *err);

/* Puts a payment at the back of the recovery pass's line (a step failed for now). */
int rsv_store_pay_touch(svc_pg_pool_t *db, int64_t payment_id, int64_t deadline_ms, svc_err_t *err);

/* The authorization is voided: VOIDING -> FAILED. */
int rsv_store_pay_voided(svc_pg_pool_t *db, int64_t payment_id, int64_t deadline_ms,
                         svc_err_t *err);

/* The refund is done: REFUNDING -> REFUNDED. */
int rsv_store_pay_refunded(svc_pg_pool_t *db, int64_t payment_id, int64_t refund_txn_id,
                           int64_t deadline_ms, svc_err_t *err);

/*
 * Payments that still need balance-svc, oldest first: PENDING ones untouched
 * for pending_age_ms, the others untouched for other_age_ms; up to max.
 */
int rsv_store_unsettled_payments(svc_pg_pool_t *db, int64_t pending_age_ms, int64_t other_age_ms,
                                 int max, rsv_payment_t *out, int *n, svc_err_t *err);

/*
 * CancelReservation, in one transaction (seats, then the reservation, then
 * its payment): PERMISSION_DENIED for someone else's, NOT_FOUND. A live hold
 * is cancelled (a PENDING payment becomes VOIDING); a confirmed reservation
 * whose schedule has not started is cancelled and its payment becomes
 * REFUNDING; anything else is FAILED_PRECONDITION. The seats are free at
 * commit. *pay is the reservation's payment (pay->id 0: none).
 */
int rsv_store_cancel(svc_pg_pool_t *db, int64_t reservation_id, int64_t user_id, int64_t now_ms,
                     int64_t deadline_ms, svc_arena_t *arena, rsv_reservation_t *out,
                     rsv_payment_t *pay, svc_err_t *err);

/*
 * Marks up to RSV_SWEEP_BATCH holds past their expiry EXPIRED (a pending
 * payment of theirs becomes VOIDING), then frees seats still marked held by
 * a reservation that no longer holds them; rows other transactions have
 * locked are skipped (SKIP LOCKED), so the sweeper never waits in a lock
 * cycle. *n_expired counts the reservations marked.
 */
#define RSV_SWEEP_BATCH 200
int rsv_store_sweep(svc_pg_pool_t *db, int64_t now_ms, int *n_expired, svc_err_t *err);

#endif
