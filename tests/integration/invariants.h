/*
 * invariants.h: what must hold in the data after any scenario, read straight
 * from the databases and Redis. Each check returns the number of violations
 * it found (0 when all is well) and writes one line per kind of violation to
 * report (may be NULL); -1 when it could not read the data.
 */
#ifndef INVARIANTS_H
#define INVARIANTS_H

#include <stdint.h>
#include <stdio.h>

/*
 * The reservation database (libpq conninfo): no seat in two live holds, no
 * seat sold twice, no sold seat without its confirmed reservation, no held
 * seat without its live hold. now_ms decides which holds are still live.
 */
int64_t inv_check_seats(const char *reservation_conninfo, int64_t now_ms, FILE *report);

/* The balance database: every balance equals the sum of its ledger, and each
 * ledger row's balance_after follows from the row before it. */
int64_t inv_check_ledger(const char *balance_conninfo, FILE *report);

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
