/*
 * failpoint.c: failpoints for crash and pause tests, compiled in only with
 * SVC_FAILPOINTS.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "svc/failpoint.h"
#include "svc/log.h"

bool
svc_failpoint(const char *name)
{
#ifdef SVC_FAILPOINTS
    const char *armed = getenv("SVC_FAILPOINT");
    return armed != NULL && strcmp(armed, name) == 0;
#else
    (void)name;
    return false;
#endif
}

void
svc_failpoint_crash(const char *name)
{
    if (svc_failpoint(name)) {
        svc_logf(SVC_LOG_WARN, "failpoint %s: killing the process", name);
        raise(SIGKILL);
    }
}

void
svc_failpoint_pause(const char *name)
{
    if (svc_failpoint(name)) {
        svc_logf(SVC_LOG_WARN, "failpoint %s: stopping the process until SIGCONT", name);
        /* SIGSTOP cannot be blocked or caught, so the signal thread's mask is no obstacle. */
        raise(SIGSTOP);
        svc_logf(SVC_LOG_WARN, "failpoint %s: continued", name);
    }
}
