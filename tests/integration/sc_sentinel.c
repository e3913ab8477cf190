/* sc_sentinel.c: (to be written) */
#include "conformance.h"

int
sc_sentinel_failover(cf_ctx_t *ctx, cf_tally_t *t)
{
    (void)ctx;
    cf_violation(t, "not written yet");
    return -1;
}
