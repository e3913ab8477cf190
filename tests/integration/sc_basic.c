/* sc_basic.c: (to be written) */
#include "conformance.h"

int
sc_seat_storm(cf_ctx_t *ctx, cf_tally_t *t)
{
    (void)ctx;
    cf_violation(t, "not written yet");
    return -1;
}

int
sc_balance_storm(cf_ctx_t *ctx, cf_tally_t *t)
{
    (void)ctx;
    cf_violation(t, "not written yet");
    return -1;
}

int
sc_double_pay(cf_ctx_t *ctx, cf_tally_t *t)
{
    (void)ctx;
    cf_violation(t, "not written yet");
    return -1;
}

int
sc_lock_storm(cf_ctx_t *ctx, cf_tally_t *t)
{
    (void)ctx;
    cf_violation(t, "not written yet");
    return -1;
}
