/*
 * err.c: the status codes shared by every service, their names, and the one
 * mapping to and from gRPC status codes used at the edge.
 */
#include <stdarg.h>
#include <stdio.h>

#include "svc/err.h"

static const char *const status_names[] = {
    [SVC_OK] = "OK",
    [SVC_CANCELLED] = "CANCELLED",
    [SVC_UNKNOWN] = "UNKNOWN",
    [SVC_INVALID_ARGUMENT] = "INVALID_ARGUMENT",
    [SVC_DEADLINE_EXCEEDED] = "DEADLINE_EXCEEDED",
    [SVC_NOT_FOUND] = "NOT_FOUND",
    [SVC_ALREADY_EXISTS] = "ALREADY_EXISTS",
    [SVC_PERMISSION_DENIED] = "PERMISSION_DENIED",
    [SVC_RESOURCE_EXHAUSTED] = "RESOURCE_EXHAUSTED",
    [SVC_FAILED_PRECONDITION] = "FAILED_PRECONDITION",
    [SVC_ABORTED] = "ABORTED",
    [SVC_OUT_OF_RANGE] = "OUT_OF_RANGE",
    [SVC_UNIMPLEMENTED] = "UNIMPLEMENTED",
    [SVC_INTERNAL] = "INTERNAL",
    [SVC_UNAVAILABLE] = "UNAVAILABLE",
    [SVC_DATA_LOSS] = "DATA_LOSS",
    [SVC_UNAUTHENTICATED] = "UNAUTHENTICATED",
};

#define N_STATUS ((int)(sizeof(status_names) / sizeof(status_names[0])))

/* The enum may hold any int (a cast from the wire); only 0..16 are statuses. */
static int
status_is_valid(svc_status_t code)
{
    int v = (int)code;
    return v >= 0 && v < N_STATUS;
}

void
svc_err_set(svc_err_t *err, svc_status_t code, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return;
    err->code = code;
    va_start(ap, fmt);
    if (vsnprintf(err->msg, sizeof(err->msg), fmt, ap) < 0)
        err->msg[0] = '\0';
    va_end(ap);
}

void
svc_err_clear(svc_err_t *err)
{
    if (err == NULL)
        return;
    err->code = SVC_OK;
    err->msg[0] = '\0';
}

const char *
svc_status_name(svc_status_t code)
{
    if (!status_is_valid(code))
        return "UNKNOWN";
    return status_names[code];
}

int
svc_status_to_grpc(svc_status_t code)
{
    if (!status_is_valid(code))
        return (int)SVC_INTERNAL;
    return (int)code;
}

svc_status_t
svc_status_from_grpc(int grpc_code)
{
    if (grpc_code < 0 || grpc_code >= N_STATUS)
        return SVC_UNKNOWN;
    return (svc_status_t)grpc_code;
}
