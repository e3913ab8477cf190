/*
 * reservation_validate.c: the argument checks of reservation.v1's requests
 * (see reservation_validate.h); the handlers call them first.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "reservation_validate.h"
#include "svc/validate.h"

static int
cmp_spec(const void *a, const void *b)
{
    int64_t x = ((const rsv_schedule_spec_t *)a)->starts_at_ms;
    int64_t y = ((const rsv_schedule_spec_t *)b)->starts_at_ms;

    return (x > y) - (x < y);
}

bool
rsv_validate_create_concert(const Reservation__V1__CreateConcertRequest *req, int64_t now_ms,
                            rsv_schedule_spec_t *specs, svc_err_t *err)
{
    if (!svc_validate_text("title", req->title, 1, RSV_TITLE_MAX, err) ||
        !svc_validate_range("schedules", (int64_t)req->n_schedules, 1, RSV_MAX_SCHEDULES, err)) {
        return false;
    }
    for (size_t i = 0; i < req->n_schedules; i++) {
        const Reservation__V1__ScheduleSpec *s = req->schedules[i];
        if (!svc_validate_range("seat_count", s->seat_count, 1, RSV_MAX_SEAT_COUNT, err) ||
            !svc_validate_range("seat_price", s->seat_price, 0, RSV_MAX_PRICE, err) ||
            !svc_validate_range("starts_at_ms", s->starts_at_ms, 1, INT64_MAX, err) ||
            !svc_validate_range("waiting_room_limit", s->waiting_room_limit, 0,
                                RSV_MAX_WAITING_ROOM_LIMIT, err) ||
            (s->admission_ttl_ms != 0 &&
             !svc_validate_range("admission_ttl_ms", s->admission_ttl_ms, RSV_MIN_ADMISSION_TTL_MS,
                                 RSV_ADMISSION_TTL_MAX_MS, err))) {
            return false;
        }
        if (s->admission_ttl_ms != 0 && s->waiting_room_limit == 0) {
            svc_err_set(err, SVC_INVALID_ARGUMENT,
                        "schedule %zu: admission_ttl_ms needs a waiting_room_limit", i + 1);
            return false;
        }
        if (s->starts_at_ms <= now_ms) {
            svc_err_set(err, SVC_INVALID_ARGUMENT, "schedule %zu starts in the past (%" PRId64 ")",
                        i + 1, s->starts_at_ms);
            return false;
        }
        specs[i] = (rsv_schedule_spec_t){.starts_at_ms = s->starts_at_ms,
                                         .seat_count = s->seat_count,
                                         .seat_price = s->seat_price,
                                         .waiting_room_limit = s->waiting_room_limit,
                                         .admission_ttl_ms = s->admission_ttl_ms != 0
                                                                 ? s->admission_ttl_ms
                                                                 : RSV_DEFAULT_ADMISSION_TTL_MS};
    }
    /* Schedules are kept and shown in starts_at_ms order. */
    qsort(specs, req->n_schedules, sizeof(*specs), cmp_spec);
    return true;
}

bool
rsv_validate_list_seats(const Reservation__V1__ListSeatsRequest *req, svc_err_t *err)
{
    return svc_validate_range("schedule_id", req->schedule_id, 1, INT64_MAX, err);
}

static int
cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;

    return (x > y) - (x < y);
}

/* 1..RSV_MAX_SEATS distinct seat numbers of 1..RSV_MAX_SEAT_COUNT, sorted into out. */
static bool
check_seat_list(const int32_t *in, size_t n, int32_t *out, svc_err_t *err)
{
    if (!svc_validate_range("seat_numbers", (int64_t)n, 1, RSV_MAX_SEATS, err)) {
        return false;
    }
    memcpy(out, in, n * sizeof(*in));
    qsort(out, n, sizeof(*out), cmp_i32);
    for (size_t i = 0; i < n; i++) {
        if (out[i] < 1 || out[i] > RSV_MAX_SEAT_COUNT) {
            svc_err_set(err, SVC_INVALID_ARGUMENT, "seat %d does not exist", (int)out[i]);
            return false;
        }
        if (i > 0 && out[i] == out[i - 1]) {
            svc_err_set(err, SVC_INVALID_ARGUMENT, "seat %d is listed twice", (int)out[i]);
            return false;
        }
    }
    return true;
}

bool
rsv_validate_hold_seats(const Reservation__V1__HoldSeatsRequest *req, int32_t seats[RSV_MAX_SEATS],
                        svc_err_t *err)
{
    return svc_validate_range("user_id", req->user_id, 1, INT64_MAX, err) &&
           svc_validate_range("schedule_id", req->schedule_id, 1, INT64_MAX, err) &&
           check_seat_list(req->seat_numbers, req->n_seat_numbers, seats, err);
}

bool
rsv_validate_pay(const Reservation__V1__PayReservationRequest *req, svc_err_t *err)
{
    /* idempotency_key is checked but not needed: a reservation has one payment, whatever key. */
    return svc_validate_range("reservation_id", req->reservation_id, 1, INT64_MAX, err) &&
           svc_validate_range("user_id", req->user_id, 1, INT64_MAX, err) &&
           svc_validate_text("idempotency_key", req->idempotency_key, 0, RSV_PAY_KEY_MAX, err);
}

bool
rsv_validate_cancel(const Reservation__V1__CancelReservationRequest *req, svc_err_t *err)
{
    return svc_validate_range("reservation_id", req->reservation_id, 1, INT64_MAX, err) &&
           svc_validate_range("user_id", req->user_id, 1, INT64_MAX, err);
}

bool
rsv_validate_get(const Reservation__V1__GetReservationRequest *req, svc_err_t *err)
{
    return svc_validate_range("reservation_id", req->reservation_id, 1, INT64_MAX, err);
}

bool
rsv_validate_enter_waiting_room(const Reservation__V1__EnterWaitingRoomRequest *req, svc_err_t *err)
{
    return svc_validate_range("user_id", req->user_id, 1, INT64_MAX, err) &&
           svc_validate_range("schedule_id", req->schedule_id, 1, INT64_MAX, err);
}
