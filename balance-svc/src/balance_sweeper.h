/*
 * balance_sweeper.h: the periodic pass that marks expired authorizations
 * voided in accounts that see no traffic (an account's own transactions do
 * it for that account), so that nothing stays authorized forever in the data.
 */
#ifndef BALANCE_SWEEPER_H
#define BALANCE_SWEEPER_H

#include <stdint.h>

#include "svc/err.h"
#include "svc/pg.h"

typedef struct balance_sweeper balance_sweeper_t;

/* Starts a thread that sweeps every interval_ms. db must outlive the sweeper. */
balance_sweeper_t *balance_sweeper_create(svc_pg_pool_t *db, int64_t interval_ms, svc_err_t *err);
/* Stops the thread (waiting for a pass in progress) and frees. NULL is a no-op. */
void balance_sweeper_destroy(balance_sweeper_t *s);

#endif
