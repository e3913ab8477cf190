/*
 * balance_service.h: balance.v1.BalanceService handlers. Top-ups and spends
 * for one account are served in batches: requests that arrive while the
 * account is busy wait (parked, no thread) and go together under one lock
 * token and one commit, each with its own ledger row and answer.
 */
#ifndef BALANCE_SERVICE_H
#define BALANCE_SERVICE_H

#include <stdint.h>

#include "svc/client.h"
#include "svc/pg.h"
#include "svc/server.h"

typedef struct balance_service balance_service_t;

typedef struct {
    int64_t lock_wait_ms;  /* how long to wait for an account's lock token */
    int64_t lock_lease_ms; /* the token's lease */
    int max_batch;         /* operations per transaction at most */
} balance_limits_t;

/* Takes no ownership; server, db and lock_svc must outlive the service. */
balance_service_t *balance_service_create(svc_server_t *server, svc_pg_pool_t *db,
                                          svc_client_t *lock_svc, const balance_limits_t *limits,
                                          svc_err_t *err);
int balance_service_register(balance_service_t *svc, svc_err_t *err);
/* After the server stopped. NULL is a no-op. */
void balance_service_destroy(balance_service_t *svc);

#endif
