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

enum { RSV_SEAT_AVAILABLE = 1, RSV_SEAT_HELD = 2, RSV_SEAT_SOLD = 3 };
enum { RSV_HELD = 1, RSV_CONFIRMED = 2, RSV_CANCELLED = 3, RSV_EXPIRED = 4 };

typedef struct {
    int64_t id, concert_id, starts_at_ms;
    int32_t seat_count, available;
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
} rsv_schedule_spec_t;

typedef struct {
    int32_t number;
    int64_t price;
    int status; /* RSV_SEAT_*, an expired hold reads as available */
} rsv_seat_t;

typedef struct {
    int64_t id, user_id, schedule_id, amount, expires_at_ms, created_at_ms;
    int status; /* RSV_*, a held one past its expiry reads as expired */
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

/*
 * The fail-fast check before any lock, without locking anything: NOT_FOUND
 * for an unknown schedule, INVALID_ARGUMENT for a seat it does not have,
 * FAILED_PRECONDITION naming the first seat that is held or sold.
 */
int rsv_store_precheck(svc_pg_pool_t *db, int64_t schedule_id, const int32_t *seats, int n,
                       int64_t now_ms, int64_t deadline_ms, svc_err_t *err);

/*
 * The hold, in one transaction: locks the seats (FOR UPDATE, ascending),
 * checks again that they are free (an expired hold counts as free, and is
 * marked expired here), refuses a fence older than a seat's (ABORTED), and
 * writes the reservation. seats are ascending; fences[i] belongs to seats[i].
 */
int rsv_store_hold(svc_pg_pool_t *db, int64_t user_id, int64_t schedule_id, const int32_t *seats,
                   const int64_t *fences, int n, int64_t now_ms, int64_t ttl_ms,
                   int64_t deadline_ms, svc_arena_t *arena, rsv_reservation_t *out, svc_err_t *err);

/*
 * Cancels a live hold of user_id: PERMISSION_DENIED for someone else's,
 * FAILED_PRECONDITION unless it is held and not expired, NOT_FOUND.
 */
int rsv_store_cancel(svc_pg_pool_t *db, int64_t reservation_id, int64_t user_id, int64_t now_ms,
                     int64_t deadline_ms, svc_arena_t *arena, rsv_reservation_t *out,
                     svc_err_t *err);

int rsv_store_get(svc_pg_pool_t *db, int64_t reservation_id, int64_t now_ms, int64_t deadline_ms,
                  svc_arena_t *arena, rsv_reservation_t *out, svc_err_t *err);

/* A payment: its intent, then its outcome. */
typedef struct {
    int64_t id;
    int64_t reservation_id, user_id, amount;
    int status; /* 1 pending, 2 charged, 3 failed */
    int64_t balance_txn_id, balance_after;
    char key[64]; /* the idempotency key balance-svc sees: derived from the reservation */
} rsv_payment_t;

enum { RSV_PAY_PENDING = 1, RSV_PAY_CHARGED = 2, RSV_PAY_FAILED = 3 };

/*
 * Step 1 of a payment, in one transaction: checks owner (PERMISSION_DENIED)
 * and state; a confirmed reservation returns its charged payment (*done set);
 * a live hold gets a pending payment intent and its hold extended by
 * grace_ms so it cannot expire while balance-svc is asked; an expired,
 * cancelled or failed-and-expired one is FAILED_PRECONDITION. An intent that
 * is already pending is returned as it is (another call, a retry, a restart).
 */
int rsv_store_pay_begin(svc_pg_pool_t *db, int64_t reservation_id, int64_t user_id, int64_t now_ms,
                        int64_t grace_ms, int64_t deadline_ms, svc_arena_t *arena,
                        rsv_reservation_t *r, rsv_payment_t *pay, bool *done, svc_err_t *err);

/* Step 3: balance-svc charged: payment charged, reservation confirmed, seats sold. Idempotent. */
int rsv_store_pay_confirm(svc_pg_pool_t *db, int64_t payment_id, int64_t balance_txn_id,
                          int64_t balance_after, int64_t deadline_ms, svc_err_t *err);

/* Step 3 otherwise: balance-svc refused (too little money): the payment failed, the hold stays. */
int rsv_store_pay_fail(svc_pg_pool_t *db, int64_t payment_id, int64_t deadline_ms, svc_err_t *err);

/* Pending payments older than min_age_ms (a crash left them), up to max, for recovery. */
int rsv_store_pending_payments(svc_pg_pool_t *db, int64_t now_ms, int64_t min_age_ms, int max,
                               rsv_payment_t *out, int *n, svc_err_t *err);

/*
 * Marks up to a batch of holds past their expiry EXPIRED and frees their
 * seats, skipping rows other instances are sweeping (FOR UPDATE SKIP LOCKED).
 */
int rsv_store_sweep(svc_pg_pool_t *db, int64_t now_ms, int *n_expired, svc_err_t *err);

/* The statements of a hold's transaction, shared with reservation-bench's direct-SQL twin. */
extern const char RSV_SQL_LOCK_SEATS[];
extern const char RSV_SQL_EXPIRE_OLD_HOLDS[];
extern const char RSV_SQL_RESERVE[];
extern const char RSV_SQL_HOLD_SEAT[];

#endif
