/*
 * reservation_store_internal.h: what the two store files share (holds and
 * sweeps in reservation_store.c, payments and cancels in
 * reservation_store_pay.c). Not for the domain code.
 */
#ifndef RESERVATION_STORE_INTERNAL_H
#define RESERVATION_STORE_INTERNAL_H

#include <inttypes.h>
#include <stdio.h>

#include "reservation_store.h"

#define I64(buf, v) snprintf((buf), sizeof(buf), "%" PRId64, (int64_t)(v))

/*
 * Reads reservation id (optionally locking its row, FOR UPDATE) with its
 * seats and its schedule's start into out. NOT_FOUND when there is none.
 * A held one past its expiry reads as RSV_EXPIRED.
 */
int rsv_store_read_reservation(PGconn *conn, int64_t id, int64_t now_ms, bool for_update,
                               svc_arena_t *arena, rsv_reservation_t *out, svc_err_t *err);

#endif
