/*
 * reservation_internal.h: what reservation-svc's domain files share: the
 * service object and the procedures the thin transport layer
 * (reservation_service.c) calls. Holds are in reservation_hold.c, payments
 * and cancellations in reservation_payment.c, expiry and recovery in
 * reservation_sweeper.c; SQL only in the store files.
 */
#ifndef RESERVATION_INTERNAL_H
#define RESERVATION_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "reservation_service.h"
#include "reservation_store.h"
#include "svc/arena.h"
#include "svc/err.h"
#include "svc/lock_client.h"
#include "svc/metrics.h"

#define RSV_KNOWN_USERS 65536 /* slots of the cache of users known to have an account */
#define RSV_KNOWN_ROOMS 4096  /* slots of the cache of schedules' waiting-room limits */
#define RSV_GATE_BUCKETS 4096 /* hash buckets of the seat gate (reservation_hold.c) */

typedef struct rsv_hold rsv_hold_t;
typedef struct rsv_seat_entry rsv_seat_entry_t;

/* A schedule, its waiting-room limit plus one (0: an empty slot) and admission TTL. */
struct rsv_room_slot {
    int64_t schedule_id;
    int32_t limit_plus_one;
    int64_t ttl_ms;
};

struct reservation_service {
    svc_server_t *server;
    svc_pg_pool_t *db;
    svc_client_t *lock_svc;
    svc_client_t *balance_svc;
    reservation_opts_t opts;
    /* The sweeper thread; mu guards stopping. */
    pthread_t sweeper;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping, sweeper_running;
    /* Users balance-svc knows (accounts are never deleted); a set, reset when full. */
    pthread_mutex_t users_mu;
    int64_t *users;
    int n_users;
    /* Schedules' waiting-room limits (fixed when a schedule is made); a map, reset when full. */
    pthread_mutex_t rooms_mu;
    struct rsv_room_slot *rooms;
    int n_rooms;
    /* The seat gate: seats a HoldSeats of this instance is working on, and who waits for it. */
    pthread_mutex_t gate_mu;
    rsv_seat_entry_t **gate; /* RSV_GATE_BUCKETS chains */
    /* Leaders' fail-fast checks waiting to share the next statement (reservation_hold.c). */
    pthread_mutex_t precheck_mu;
    pthread_cond_t precheck_cv;
    struct rsv_precheck_wait *precheck_head, *precheck_tail;
    bool precheck_running;
    /* Rooms mirrored here for their watchers (reservation_room_watch.c), under rooms_mu. */
    struct room *watched;
};

/* The deadline of a database step of call: its own, at most 5 s from now. */
int64_t reservation_db_deadline(svc_call_t *call);

/*
 * HoldSeats after validation (on a worker): seats are 1..RSV_MAX_SEATS
 * distinct numbers, ascending. Passes the seat gate (a call wanting a seat
 * another call of this instance is working on waits for that one's
 * outcome, without a thread), refuses a taken seat before any lock, a user
 * without a balance account (NOT_FOUND), then takes the seats' lock tokens
 * and writes the hold in one transaction. Ends the call itself, now or
 * later, with reservation_reply_held or an error.
 */
void reservation_hold_start(reservation_service_t *svc, svc_call_t *call, int64_t user_id,
                            int64_t schedule_id, const int32_t *seats, int n,
                            const char *admission_token);

/* Remembers a schedule's waiting room (limit 0: none), as created or read. */
void reservation_room_remember(reservation_service_t *svc, int64_t schedule_id, int32_t limit,
                               int64_t ttl_ms);
/* A schedule's waiting-room limit (0: none), or -1 when not known here; *ttl_ms may be NULL. */
int32_t reservation_room_limit(reservation_service_t *svc, int64_t schedule_id, int64_t *ttl_ms);

/* The lock-svc semaphore of schedule_id's waiting room, "room:<schedule>". */
void reservation_room_name(char *buf, size_t len, int64_t schedule_id);

/* A client's ticket into its schedule, user and semaphore ticket; INVALID_ARGUMENT when not. */
int reservation_room_ticket_parse(reservation_service_t *svc, const char *s, int64_t *schedule_id,
                                  int64_t *user_id, svc_sem_ticket_t *t, svc_err_t *err);
/* Stops every room's mirror (reservation_room_watch.c); at shutdown, once no call is left. */
void reservation_rooms_stop(reservation_service_t *svc);

/* EnterWaitingRoom, LeaveWaitingRoom (reservation_room.c), WatchWaitingRoom (..._watch.c). */
void reservation_room_enter(svc_call_t *call, const ProtobufCMessage *msg, void *user);
void reservation_room_leave(svc_call_t *call, const ProtobufCMessage *msg, void *user);
void reservation_room_watch(svc_call_t *call, const ProtobufCMessage *msg, void *user);

/* Answers a HoldSeats with the reservation made. */
void reservation_reply_held(svc_call_t *call, const rsv_reservation_t *r);

/* Frees the seat gate, once no call is left. */
void reservation_gate_destroy(reservation_service_t *svc);

/*
 * PayReservation: the outcome of one payment protocol run (see the
 * README in this folder). On 0, r is CONFIRMED and pay CHARGED.
 */
int reservation_pay(reservation_service_t *svc, svc_call_t *call, int64_t reservation_id,
                    int64_t user_id, svc_arena_t *arena, rsv_reservation_t *r, rsv_payment_t *pay,
                    svc_err_t *err);

/* CancelReservation: cancels, then tells balance-svc (void or refund) if it answers in time. */
int reservation_cancel(reservation_service_t *svc, svc_call_t *call, int64_t reservation_id,
                       int64_t user_id, svc_arena_t *arena, rsv_reservation_t *out, svc_err_t *err);

/*
 * Carries a payment as far as balance-svc lets it (authorize, decide,
 * capture, void, refund); parent may be NULL. 0 when pay ended in a final
 * status (CHARGED, FAILED, REFUNDED), else -1 with err (pay says where it stands).
 */
int reservation_payment_drive(reservation_service_t *svc, rsv_payment_t *pay, svc_call_t *parent,
                              int64_t timeout_ms, svc_err_t *err);

/* reservation_payments_pending (a gauge): the payments reservation_payment_drive carries now. */
svc_metric_t *reservation_payments_pending(void);

/* Starts and stops the sweeper thread (expiry, and payments nobody finished). */
int reservation_sweeper_start(reservation_service_t *svc, svc_err_t *err);
void reservation_sweeper_stop(reservation_service_t *svc);

#endif
