/*
 * fuzz_reservation_requests.c: every request of
 * reservation.v1.ReservationService, as bytes off the wire: the first byte
 * picks the method, the rest is decoded as its request (fuzz_unpack) and,
 * when it decodes, run through the method's own validator
 * (reservation_validate.h) at a fixed "now", and the admission token or
 * waiting-room ticket it carries through the verifier with a fixed key.
 * What they accept must be sane; an accepted token or ticket must be
 * exactly what the service signs for its fields.
 */
#define _GNU_SOURCE
#include <string.h>

#include "fuzz_common.h"
#include "fuzz_keys.h"
#include "reservation/v1/reservation.pb-c.h"
#include "reservation_admission.h"
#include "reservation_validate.h"

static rsv_admission_key_t key;

static void
check_token(const Reservation__V1__HoldSeatsRequest *r)
{
    rsv_admission_t adm;
    char again[RSV_ADMISSION_TOKEN_MAX];
    svc_err_t err = {0};

    if (rsv_admission_verify(&key, r->admission_token, r->user_id, r->schedule_id, FUZZ_NOW_MS,
                             &adm, &err) != 0) {
        fuzz_check_refusal(&err, SVC_FAILED_PRECONDITION);
        return;
    }
    FUZZ_CHECK(adm.expires_at_ms > FUZZ_NOW_MS);
    FUZZ_CHECK(rsv_admission_sign(&key, r->user_id, r->schedule_id, adm.ticket, adm.expires_at_ms,
                                  again, sizeof(again)) == 0);
    FUZZ_CHECK(strcmp(again, r->admission_token) == 0);
}

static void
check_ticket(const char *ticket)
{
    int64_t schedule_id, user_id, seq;
    char lock_ticket[RSV_ADMISSION_TICKET_MAX + 1], again[RSV_ROOM_TICKET_MAX];
    svc_err_t err = {0};

    if (rsv_room_ticket_parse(&key, ticket, &schedule_id, &user_id, &seq, lock_ticket, &err) != 0) {
        fuzz_check_refusal(&err, SVC_INVALID_ARGUMENT);
        return;
    }
    FUZZ_CHECK(schedule_id >= 1 && user_id >= 1 && seq >= 0);
    FUZZ_CHECK(rsv_room_ticket_sign(&key, schedule_id, user_id, seq, lock_ticket, again,
                                    sizeof(again)) == 0);
    FUZZ_CHECK(strcmp(again, ticket) == 0);
}

static void
run(const char *method, const ProtobufCMessage *msg)
{
    svc_err_t err = {0};
    bool ok = true;

    if (strcmp(method, "CreateConcert") == 0) {
        const Reservation__V1__CreateConcertRequest *r = (const void *)msg;
        rsv_schedule_spec_t specs[RSV_MAX_SCHEDULES];
        if ((ok = rsv_validate_create_concert(r, FUZZ_NOW_MS, specs, &err))) {
            FUZZ_CHECK(r->n_schedules >= 1 && r->n_schedules <= RSV_MAX_SCHEDULES);
            FUZZ_CHECK(strlen(r->title) >= 1 && strlen(r->title) <= RSV_TITLE_MAX);
            for (size_t i = 0; i < r->n_schedules; i++) {
                const rsv_schedule_spec_t *s = &specs[i];
                FUZZ_CHECK(s->starts_at_ms > FUZZ_NOW_MS);
                FUZZ_CHECK(i == 0 || specs[i - 1].starts_at_ms <= s->starts_at_ms);
                FUZZ_CHECK(s->seat_count >= 1 && s->seat_count <= RSV_MAX_SEAT_COUNT);
                FUZZ_CHECK(s->seat_price >= 0 && s->seat_price <= RSV_MAX_PRICE);
                FUZZ_CHECK(s->waiting_room_limit >= 0 &&
                           s->waiting_room_limit <= RSV_MAX_WAITING_ROOM_LIMIT);
                FUZZ_CHECK(s->admission_ttl_ms >= RSV_MIN_ADMISSION_TTL_MS &&
                           s->admission_ttl_ms <= RSV_ADMISSION_TTL_MAX_MS);
            }
        }
    } else if (strcmp(method, "ListConcerts") == 0) {
        /* No fields: nothing to check but the decoding. */
    } else if (strcmp(method, "ListSeats") == 0) {
        const Reservation__V1__ListSeatsRequest *r = (const void *)msg;
        if ((ok = rsv_validate_list_seats(r, &err))) {
            FUZZ_CHECK(r->schedule_id >= 1);
        }
    } else if (strcmp(method, "HoldSeats") == 0) {
        const Reservation__V1__HoldSeatsRequest *r = (const void *)msg;
        int32_t seats[RSV_MAX_SEATS];
        if ((ok = rsv_validate_hold_seats(r, seats, &err))) {
            FUZZ_CHECK(r->user_id >= 1 && r->schedule_id >= 1);
            FUZZ_CHECK(r->n_seat_numbers >= 1 && r->n_seat_numbers <= RSV_MAX_SEATS);
            for (size_t i = 0; i < r->n_seat_numbers; i++) {
                FUZZ_CHECK(seats[i] >= 1 && seats[i] <= RSV_MAX_SEAT_COUNT);
                FUZZ_CHECK(i == 0 || seats[i - 1] < seats[i]);
            }
            check_token(r);
        }
    } else if (strcmp(method, "PayReservation") == 0) {
        const Reservation__V1__PayReservationRequest *r = (const void *)msg;
        if ((ok = rsv_validate_pay(r, &err))) {
            FUZZ_CHECK(r->reservation_id >= 1 && r->user_id >= 1);
        }
    } else if (strcmp(method, "CancelReservation") == 0) {
        const Reservation__V1__CancelReservationRequest *r = (const void *)msg;
        if ((ok = rsv_validate_cancel(r, &err))) {
            FUZZ_CHECK(r->reservation_id >= 1 && r->user_id >= 1);
        }
    } else if (strcmp(method, "GetReservation") == 0) {
        const Reservation__V1__GetReservationRequest *r = (const void *)msg;
        if ((ok = rsv_validate_get(r, &err))) {
            FUZZ_CHECK(r->reservation_id >= 1);
        }
    } else if (strcmp(method, "EnterWaitingRoom") == 0) {
        const Reservation__V1__EnterWaitingRoomRequest *r = (const void *)msg;
        if ((ok = rsv_validate_enter_waiting_room(r, &err))) {
            FUZZ_CHECK(r->user_id >= 1 && r->schedule_id >= 1);
        }
    } else if (strcmp(method, "WatchWaitingRoom") == 0) {
        check_ticket(((const Reservation__V1__WatchWaitingRoomRequest *)(const void *)msg)->ticket);
    } else if (strcmp(method, "LeaveWaitingRoom") == 0) {
        check_ticket(((const Reservation__V1__LeaveWaitingRoomRequest *)(const void *)msg)->ticket);
    } else {
        fuzz_fail(method, __FILE__, __LINE__); /* a new RPC: give it its validator here */
    }
    fuzz_check_verdict(ok, &err);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    svc_err_t err;

    (void)argc;
    (void)argv;
    FUZZ_CHECK(rsv_admission_key_set(&key, FUZZ_ADMISSION_KEY, strlen(FUZZ_ADMISSION_KEY), &err) ==
               0);
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_requests(&reservation__v1__reservation_service__descriptor, data, size, run);
}
