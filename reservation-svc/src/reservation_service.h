/*
 * reservation_service.h: reservation.v1.ReservationService: the service
 * object main.c creates, registers with the server and destroys.
 */
#ifndef RESERVATION_SERVICE_H
#define RESERVATION_SERVICE_H

#include <stdint.h>

#include "reservation_admission.h"
#include "svc/auth.h"
#include "svc/client.h"
#include "svc/pg.h"
#include "svc/server.h"

typedef struct reservation_service reservation_service_t;

typedef struct {
    const char *admin_token; /* CreateConcert needs "authorization: Bearer <admin_token>" */
    int64_t hold_ttl_ms;     /* how long a hold lasts */
    int64_t lock_wait_ms;    /* how long to wait for a seat's lock token */
    int64_t lock_lease_ms;
    int64_t sweep_ms;     /* how often the sweeper looks for expired holds */
    int64_t pay_grace_ms; /* an authorization outlives its hold by this, for the capture */
    rsv_admission_key_t admission_key; /* signs and checks waiting-room admissions */
    int64_t room_place_ms; /* a place in a waiting room's line lasts this long unless renewed */
    /*
     * Caller identity (NULL or off: anyone acts for anyone). On, every call
     * naming a user (HoldSeats, PayReservation, CancelReservation, the
     * waiting room) must come with that user's token, and GetReservation
     * shows a reservation to its owner only. Not owned; outlives the service.
     */
    const svc_auth_t *auth;
} reservation_opts_t;

/* Starts the sweeper. Takes no ownership: server, db and lock_svc must outlive it. */
reservation_service_t *reservation_service_create(svc_server_t *server, svc_pg_pool_t *db,
                                                  svc_client_t *lock_svc, svc_client_t *balance_svc,
                                                  const reservation_opts_t *opts, svc_err_t *err);
int reservation_service_register(reservation_service_t *svc, svc_err_t *err);
/* Stops the sweeper and frees. NULL is a no-op. */
void reservation_service_destroy(reservation_service_t *svc);

#endif
