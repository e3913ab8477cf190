/*
 * invariants.h: what must hold in the data after any scenario, read straight
 * from the databases and Redis. Each check returns the number of violations
 * it found (0 when all is well) and writes one line per kind of violation to
 * report (may be NULL); -1 when it could not read the data.
 */
#ifndef INVARIANTS_H
#define INVARIANTS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/*
 * The reservation database (libpq conninfo): no seat in two live holds, no
 * seat sold twice, no sold seat without its confirmed reservation, no held
 * seat without its live hold. now_ms decides which holds are still live.
 */
int64_t inv_check_seats(const char *reservation_conninfo, int64_t now_ms, FILE *report);

/*
 * The balance database: every balance equals the sum of its ledger (top-ups
 * and refunds add, spends take), each ledger row's balance_after follows from
 * the row before it, and no balance is negative.
 */
int64_t inv_check_ledger(const char *balance_conninfo, FILE *report);

/*
 * Nothing stays authorized: no authorization is pending (status 1) with its
 * expiry after now_ms. A balance database without an authorizations table
 * (before two-phase funds) has none.
 */
int64_t inv_check_authorizations(const char *balance_conninfo, int64_t now_ms, FILE *report);

/*
 * What each reservation cost its user, reading both databases: spends keyed
 * reservation:<id> minus the refunds of those spends. A CONFIRMED
 * reservation owns its seats (SOLD to it) and cost exactly its amount; any
 * other reservation cost 0; no one but its user paid for it. Reports one
 * line per reservation that breaks this (the first few, then a count).
 */
int64_t inv_check_charges(const char *reservation_conninfo, const char *balance_conninfo,
                          FILE *report);

/*
 * What the clients were told about one reservation, all of it answered OK:
 * HoldSeats (always: the record exists because of it), any PayReservation,
 * any CancelReservation.
 */
#define INV_MAX_SEATS 10
typedef struct {
    int64_t id, user_id, schedule_id;
    int32_t seats[INV_MAX_SEATS]; /* ascending */
    int n_seats;
    bool paid, cancelled;
    bool cancel_lost; /* a CancelReservation whose answer was lost: it may have happened */
} inv_answer_t;

/*
 * Every answer is in the data: the reservation exists for its user and
 * schedule with exactly its seats; when a cancel answered OK it is CANCELLED
 * and cost 0 (whatever a payment answered), else when a payment answered OK
 * it is CONFIRMED and cost its amount (or, after a cancel whose answer was
 * lost, CANCELLED and cost 0).
 */
int64_t inv_check_answers(const char *reservation_conninfo, const char *balance_conninfo,
                          const inv_answer_t *answers, int n, FILE *report);

/*
 * Nothing acknowledged is lost: each (user_id, idempotency key, transaction
 * id) answered OK has exactly that ledger row.
 */
typedef struct {
    int64_t user_id;
    const char *key;
    int64_t transaction_id;
} inv_ack_t;
int64_t inv_check_acknowledged(const char *balance_conninfo, const inv_ack_t *acks, int n,
                               FILE *report);

/*
 * Nothing acknowledged is lost, for reservations: every held id (HoldSeats
 * answered OK) exists with its seats; every paid id (PayReservation answered
 * OK) is confirmed, its payment charged and each of its seats sold to it.
 */
int64_t inv_check_reservations(const char *reservation_conninfo, const int64_t *held, int n_held,
                               const int64_t *paid, int n_paid, FILE *report);

/* Every paid reservation was charged exactly once: one Spend keyed reservation:<id>. */
int64_t inv_check_charged_once(const char *balance_conninfo, const int64_t *paid, int n_paid,
                               FILE *report);

/* Redis (host, port): every lock key has a lease; none is held forever. */
int64_t inv_check_locks(const char *host, int port, FILE *report);

#endif
