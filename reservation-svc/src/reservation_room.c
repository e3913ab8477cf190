/*
 * reservation_room.c: the waiting room of a schedule created with
 * waiting_room_limit > 0, over a lock-svc semaphore "room:<schedule>" whose
 * limit is the schedule's: a permit is an admission (its lease the
 * admission's TTL), a place in the semaphore's line is a place in the room.
 * The count of admitted users and the order of the line live in Redis,
 * behind lock-svc, so they hold across instances and restarts; leaving (or
 * an admission running out) admits the next in line inside the same Redis
 * script. An admitted user gets a signed admission token
 * (reservation_admission.h) that HoldSeats checks without asking anyone.
 *
 * A ticket, as clients see it, names its schedule, user and semaphore ticket
 * under a MAC (reservation_admission.h), so Watch and Leave need nothing
 * else and can trust what it says.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reservation/v1/reservation.pb-c.h"
#include "reservation_internal.h"
#include "svc/lock_client.h"
#include "reservation_validate.h"

void
reservation_room_name(char *buf, size_t len, int64_t schedule_id)
{
    snprintf(buf, len, "room:%" PRId64, schedule_id);
}

int
reservation_room_ticket_parse(reservation_service_t *svc, const char *s, int64_t *schedule_id,
                              int64_t *user_id, svc_sem_ticket_t *t, svc_err_t *err)
{
    memset(t, 0, sizeof(*t));
    if (rsv_room_ticket_parse(&svc->opts.admission_key, s, schedule_id, user_id, &t->seq, t->ticket,
                              err) != 0) {
        return -1;
    }
    reservation_room_name(t->name, sizeof(t->name), *schedule_id);
    return 0;
}

/*
 * schedule_id's waiting room: its limit (> 0) and admission TTL, from this
 * instance's map or the database. NOT_FOUND for an unknown schedule,
 * FAILED_PRECONDITION for one without a waiting room.
 */
static int
room_of(reservation_service_t *svc, svc_call_t *call, int64_t schedule_id, int32_t *limit,
        int64_t *ttl_ms, svc_err_t *err)
{
    *limit = reservation_room_limit(svc, schedule_id, ttl_ms);
    if (*limit < 0) {
        if (rsv_store_schedule_room(svc->db, schedule_id, reservation_db_deadline(call), limit,
                                    ttl_ms, err) != 0) {
            return -1;
        }
        reservation_room_remember(svc, schedule_id, *limit, *ttl_ms);
    }
    if (*limit == 0) {
        svc_err_set(err, SVC_FAILED_PRECONDITION,
                    "schedule %" PRId64 " has no waiting room: hold seats directly", schedule_id);
        return -1;
    }
    return 0;
}

/* ---------- EnterWaitingRoom ---------- */

/* An Enter waiting for lock-svc; in its call's arena. */
typedef struct {
    reservation_service_t *svc;
    svc_call_t *call;
    int64_t user_id, schedule_id;
    char owner[32];
    svc_sem_ticket_t ticket;
} room_enter_t;

static void
entered(const svc_err_t *err, void *arg)
{
    room_enter_t *e = arg;
    Reservation__V1__EnterWaitingRoomResponse resp =
        RESERVATION__V1__ENTER_WAITING_ROOM_RESPONSE__INIT;
    char *ticket, *token = NULL;

    if (err->code != SVC_OK) {
        svc_call_fail(e->call, err);
        return;
    }
    ticket = svc_call_alloc(e->call, RSV_ROOM_TICKET_MAX);
    if (e->ticket.position == 0) {
        token = svc_call_alloc(e->call, RSV_ADMISSION_TOKEN_MAX);
    }
    if (ticket == NULL || (e->ticket.position == 0 && token == NULL)) {
        svc_call_fail_oom(e->call);
        return;
    }
    if (rsv_room_ticket_sign(&e->svc->opts.admission_key, e->schedule_id, e->user_id, e->ticket.seq,
                             e->ticket.ticket, ticket, RSV_ROOM_TICKET_MAX) != 0 ||
        (token != NULL &&
         rsv_admission_sign(&e->svc->opts.admission_key, e->user_id, e->schedule_id,
                            e->ticket.ticket, e->ticket.expires_at_ms, token,
                            RSV_ADMISSION_TOKEN_MAX) != 0)) {
        svc_err_t bad;
        svc_err_set(&bad, SVC_INTERNAL, "cannot sign the ticket or the admission");
        svc_call_fail(e->call, &bad);
        return;
    }
    resp.ticket = ticket;
    resp.position = e->ticket.position;
    resp.admission_token = token != NULL ? token : "";
    resp.expires_at_ms = e->ticket.expires_at_ms;
    svc_call_reply(e->call, &resp.base);
}

void
reservation_room_enter(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Reservation__V1__EnterWaitingRoomRequest *req = (const void *)msg;
    reservation_service_t *svc = user;
    room_enter_t *e;
    svc_sem_opts_t opts = {0};
    char name[SVC_LOCK_KEY_MAX + 1];
    int32_t limit;
    int64_t ttl_ms = 0;
    svc_err_t err;

    if (!rsv_validate_enter_waiting_room(req, &err) ||
        svc_auth_check_user(svc->opts.auth, call, req->user_id, &err) != 0 ||
        room_of(svc, call, req->schedule_id, &limit, &ttl_ms, &err) != 0) {
        svc_call_fail(call, &err);
        return;
    }
    e = svc_call_alloc(call, sizeof(*e));
    if (e == NULL) {
        svc_call_fail_oom(call);
        return;
    }
    e->svc = svc;
    e->call = call;
    e->user_id = req->user_id;
    e->schedule_id = req->schedule_id;
    snprintf(e->owner, sizeof(e->owner), "user:%" PRId64, req->user_id);
    reservation_room_name(name, sizeof(name), req->schedule_id);
    opts.owner = e->owner;
    opts.limit = limit;
    opts.lease_ms = ttl_ms;
    opts.ticket_ttl_ms = svc->opts.room_place_ms;
    opts.parent = call;
    svc_sem_enter_async(svc->lock_svc, name, &opts, &e->ticket, entered, e);
}

/* ---------- LeaveWaitingRoom ---------- */

static void
left(const svc_err_t *err, void *arg)
{
    svc_call_t *call = arg;
    Reservation__V1__LeaveWaitingRoomResponse resp =
        RESERVATION__V1__LEAVE_WAITING_ROOM_RESPONSE__INIT;

    if (err->code == SVC_OK || err->code == SVC_NOT_FOUND) { /* gone already: left too */
        svc_call_reply(call, &resp.base);
        return;
    }
    svc_call_fail(call, err); /* the admission is over; the place waits for its TTL: retry */
}

/*
 * The ticket's admission ends first (its token is refused from then on,
 * whatever lock-svc says), then lock-svc gives the permit or place up and
 * admits the next in line; the answer waits for that. Repeating a leave is
 * safe.
 */
void
reservation_room_leave(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Reservation__V1__LeaveWaitingRoomRequest *req = (const void *)msg;
    reservation_service_t *svc = user;
    svc_sem_opts_t opts = {.parent = call};
    svc_sem_ticket_t t;
    int64_t schedule_id, user_id;
    svc_err_t err;

    if (reservation_room_ticket_parse(svc, req->ticket, &schedule_id, &user_id, &t, &err) != 0 ||
        svc_auth_check_user(svc->opts.auth, call, user_id, &err) != 0 ||
        rsv_store_admission_end_ticket(svc->db, t.ticket, svc_now_unix_ms(),
                                       reservation_db_deadline(call), &err) != 0) {
        svc_call_fail(call, &err);
        return;
    }
    svc_sem_leave_then(svc->lock_svc, &t, &opts, left, call);
}
