/* sc_lock_faults.c: (to be written) */
#include "conformance.h"

int
sc_paused_holder(cf_ctx_t *ctx, cf_tally_t *t)
{
    (void)ctx;
    cf_violation(t, "not written yet");
    return -1;
}

int
sc_lock_svc_kill(cf_ctx_t *ctx, cf_tally_t *t)
{
    (void)ctx;
    cf_violation(t, "not written yet");
    return -1;
}
