/*
 * svc-health: asks a service's grpc.health.v1.Health/Check whether it is
 * SERVING and says so with its exit status, for container health checks
 * (the images carry no buf or grpcurl).
 *
 *   svc-health [ADDR] [SERVICE]   ADDR: host:port (default 127.0.0.1:$PORT or
 *                                 LISTEN_ADDR's port); SERVICE: "" (the server)
 *
 * Exit 0: SERVING; 1: answered, not SERVING; 2: no answer (or bad usage).
 * Over TLS when TLS_CA_FILE is set, presenting TLS_CERT_FILE/TLS_KEY_FILE
 * (the service's own settings, so in its container it just works with mTLS).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "svc/arena.h"
#include "svc/client.h"
#include "svc/log.h"
#include "svc/tls.h"

/* 127.0.0.1 and the port of LISTEN_ADDR (whatever host it binds), if set. */
static const char *
svc_health_default_addr(char *buf, size_t len)
{
    const char *listen = getenv("LISTEN_ADDR");
    const char *colon = listen != NULL ? strrchr(listen, ':') : NULL;

    if (colon == NULL || colon[1] == '\0') {
        return NULL;
    }
    snprintf(buf, len, "127.0.0.1:%s", colon + 1);
    return buf;
}

int
main(int argc, char **argv)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    svc_call_opts_t opts = {.timeout_ms = 2000};
    char buf[300];
    const char *addr;
    svc_client_t *client;
    svc_arena_t *arena;
    ProtobufCMessage *out;
    svc_err_t err;
    int rc;

    if (argc > 3 || (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0))) {
        fprintf(stderr, "usage: svc-health [HOST:PORT] [SERVICE]\n"
                        "exit 0 when SERVING, 1 when not, 2 when there is no answer\n");
        return 2;
    }
    addr = argc > 1 ? argv[1] : svc_health_default_addr(buf, sizeof(buf));
    if (addr == NULL) {
        fprintf(stderr, "svc-health: no address given and LISTEN_ADDR has no port\n");
        return 2;
    }
    req.service = argc > 2 ? argv[2] : "";
    svc_log_init("svc-health", SVC_LOG_ERROR);
    svc_tls_opts_t tls;
    svc_tls_opts_from_env(&tls);
    tls.client_ca_file = NULL; /* the server side's, not ours */
    svc_tls_configure_or_exit(&tls, "svc-health");
    if ((client = svc_client_get(addr, &err)) == NULL || (arena = svc_arena_create()) == NULL) {
        fprintf(stderr, "svc-health: %s\n", client == NULL ? err.msg : "out of memory");
        return 2;
    }
    if (svc_client_unary(client, "/grpc.health.v1.Health/Check", &req.base,
                         &grpc__health__v1__health_check_response__descriptor, arena, &out, &opts,
                         &err) != 0) {
        fprintf(stderr, "svc-health: %s: %s\n", addr, err.msg);
        rc = 2;
    } else if (((Grpc__Health__V1__HealthCheckResponse *)out)->status ==
               GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING) {
        printf("SERVING\n");
        rc = 0;
    } else {
        printf("NOT_SERVING\n");
        rc = 1;
    }
    svc_arena_destroy(arena);
    svc_client_release_all();
    return rc;
}
