/*
 * reservation_validate.h: the argument checks of reservation.v1's requests,
 * apart from the handlers so that they run (and are fuzzed, tests/fuzz)
 * without PostgreSQL, lock-svc or a server. Each returns true when the
 * request is good and writes the values the handler uses; otherwise err is
 * INVALID_ARGUMENT naming the field. Pure: no I/O (the time is a parameter).
 * The waiting-room tickets and admission tokens are checked by
 * reservation_admission.h, with the key.
 */
#ifndef RESERVATION_VALIDATE_H
#define RESERVATION_VALIDATE_H

#include <stdbool.h>
#include <stdint.h>

#include "reservation/v1/reservation.pb-c.h"
#include "reservation_store.h"
#include "svc/err.h"

#define RSV_MAX_SCHEDULES 100
#define RSV_MAX_SEAT_COUNT 10000
#define RSV_MAX_PRICE 100000000LL
#define RSV_MAX_WAITING_ROOM_LIMIT 1000000
#define RSV_DEFAULT_ADMISSION_TTL_MS 600000LL
#define RSV_MIN_ADMISSION_TTL_MS 1000
#define RSV_TITLE_MAX 200
#define RSV_PAY_KEY_MAX 128

/*
 * CreateConcert (after the admin check): a title, 1..RSV_MAX_SCHEDULES
 * schedules that start after now_ms. specs (room for RSV_MAX_SCHEDULES)
 * gets them in starts_at_ms order, with the default admission TTL filled in.
 */
bool rsv_validate_create_concert(const Reservation__V1__CreateConcertRequest *req, int64_t now_ms,
                                 rsv_schedule_spec_t *specs, svc_err_t *err);
bool rsv_validate_list_seats(const Reservation__V1__ListSeatsRequest *req, svc_err_t *err);
/* seats gets the 1..RSV_MAX_SEATS distinct seat numbers, ascending. */
bool rsv_validate_hold_seats(const Reservation__V1__HoldSeatsRequest *req,
                             int32_t seats[RSV_MAX_SEATS], svc_err_t *err);
bool rsv_validate_pay(const Reservation__V1__PayReservationRequest *req, svc_err_t *err);
bool rsv_validate_cancel(const Reservation__V1__CancelReservationRequest *req, svc_err_t *err);
bool rsv_validate_get(const Reservation__V1__GetReservationRequest *req, svc_err_t *err);
bool rsv_validate_enter_waiting_room(const Reservation__V1__EnterWaitingRoomRequest *req,
                                     svc_err_t *err);

#endif
