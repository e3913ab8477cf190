/* sc_data_faults.c: (to be written) */
#include "conformance.h"

int
sc_redis_kill(cf_ctx_t *ctx, cf_tally_t *t)
{
    (void)ctx;
    cf_violation(t, "not written yet");
    return -1;
}

int
sc_pg_restart(cf_ctx_t *ctx, cf_tally_t *t)
{
    (void)ctx;
    cf_violation(t, "not written yet");
    return -1;
}

int
sc_reservation_kill(cf_ctx_t *ctx, cf_tally_t *t)
{
    (void)ctx;
    cf_violation(t, "not written yet");
    return -1;
}
