/*
 * err.h: the one error model of every service: a status code and a short
 * message, mapped to gRPC status codes only at the edge.
 */
#ifndef SVC_ERR_H
#define SVC_ERR_H

#include <stdbool.h>

/* Values match grpc_status_code one for one, so mapping is explicit but total. */
typedef enum {
    SVC_OK = 0,
    SVC_CANCELLED = 1,
    SVC_UNKNOWN = 2,
    SVC_INVALID_ARGUMENT = 3,
    SVC_DEADLINE_EXCEEDED = 4,
    SVC_NOT_FOUND = 5,
    SVC_ALREADY_EXISTS = 6,
    SVC_PERMISSION_DENIED = 7,
    SVC_RESOURCE_EXHAUSTED = 8,
    SVC_FAILED_PRECONDITION = 9,
    SVC_ABORTED = 10,
    SVC_OUT_OF_RANGE = 11,
    SVC_UNIMPLEMENTED = 12,
    SVC_INTERNAL = 13,
    SVC_UNAVAILABLE = 14,
    SVC_DATA_LOSS = 15,
    SVC_UNAUTHENTICATED = 16,
} svc_status_t;

#define SVC_ERR_MSG_MAX 256

typedef struct {
    svc_status_t code;
    char msg[SVC_ERR_MSG_MAX];
} svc_err_t;

/* Sets code and a printf-style message (truncated to fit). err may be NULL. */
void svc_err_set(svc_err_t *err, svc_status_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void svc_err_clear(svc_err_t *err);
static inline bool
svc_err_ok(const svc_err_t *err)
{
    return err->code == SVC_OK;
}

/* "INVALID_ARGUMENT" etc.; "UNKNOWN" for a value outside the enum. */
const char *svc_status_name(svc_status_t code);

/* Maps to the numeric grpc_status_code. Values outside the enum map to INTERNAL (13). */
int svc_status_to_grpc(svc_status_t code);

/* Maps a grpc_status_code received by a client; values outside 0..16 become SVC_UNKNOWN. */
svc_status_t svc_status_from_grpc(int grpc_code);

#endif
