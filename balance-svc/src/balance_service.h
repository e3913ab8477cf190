/*
 * balance_service.h: balance.v1.BalanceService handlers. Changes to an
 * account (top-ups, spends, refunds, authorizations and their capture or
 * void) are served in batches by balance_batcher; reads go to the store.
 */
#ifndef BALANCE_SERVICE_H
#define BALANCE_SERVICE_H

#include <stdint.h>

#include "balance_batcher.h"
#include "svc/auth.h"
#include "svc/client.h"
#include "svc/pg.h"
#include "svc/server.h"

typedef struct balance_service balance_service_t;

/*
 * Takes no ownership; server, db, lock_svc and auth must outlive the
 * service. auth (NULL: off) decides who may act for an account: the user
 * of the caller's token, or a trusted peer (reservation-svc's Authorize,
 * Capture, Void and Refund, from its calls and its background jobs alike).
 */
balance_service_t *balance_service_create(svc_server_t *server, svc_pg_pool_t *db,
                                          svc_client_t *lock_svc, const balance_limits_t *limits,
                                          const svc_auth_t *auth, svc_err_t *err);
int balance_service_register(balance_service_t *svc, svc_err_t *err);
/* After the server stopped. NULL is a no-op. */
void balance_service_destroy(balance_service_t *svc);

#endif
