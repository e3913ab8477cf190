/*
 * server_internal.h: what server.c shares with health.c and reflection.c,
 * which are services like any other but built into every server.
 */
#ifndef SVC_SERVER_INTERNAL_H
#define SVC_SERVER_INTERNAL_H

#include "svc/server.h"

typedef struct svc_health svc_health_t;

svc_health_t *svc__health_create(void);
void svc__health_destroy(svc_health_t *health);
int svc__health_register(svc_server_t *server, svc_health_t *health, svc_err_t *err);
void svc__health_set(svc_health_t *health, const char *service, bool serving);
/* Marks everything NOT_SERVING and ends every Watch stream (server shutdown). */
void svc__health_shutdown(svc_health_t *health);

typedef struct svc_reflection svc_reflection_t;

/* Registers ServerReflectionInfo under v1 and v1alpha; set may be NULL (lists services only). */
svc_reflection_t *svc__reflection_register(svc_server_t *server, const unsigned char *set,
                                           size_t set_len, svc_err_t *err);
void svc__reflection_destroy(svc_reflection_t *reflection);

/* Names of the services registered so far, for reflection's list_services. */
int svc__server_service_count(const svc_server_t *server);
const char *svc__server_service_name(const svc_server_t *server, int i);

/* Packs msg into a new byte buffer (shared by server and client). */
struct grpc_byte_buffer *svc__pack_message(const ProtobufCMessage *msg);
/* Unpacks buf into arena memory; NULL when the bytes are not a valid message. */
ProtobufCMessage *svc__unpack_message(struct grpc_byte_buffer *buf,
                                      const ProtobufCMessageDescriptor *desc, svc_arena_t *arena);

/* Runs fn(arg) on the pool, or right here when the pool is gone. */
void svc__server_dispatch(svc_server_t *server, svc_task_fn fn, void *arg);

/* A new request id: 16 lower-case hex characters and a NUL (out has 17 bytes). */
void svc__request_id(char *out);

/* Random lower-case hex of 2*n_bytes characters into out (size >= 2*n_bytes+1). */
void svc__random_hex(char *out, size_t n_bytes);

/* TLS (tls.c): the credentials of a server with o (insecure when o has no certificate). */
struct grpc_server_credentials *svc__tls_server_credentials(const svc_tls_opts_t *o,
                                                            svc_err_t *err);
/* What a new channel uses: the configured client side, or insecure. */
struct grpc_channel_credentials *svc__tls_channel_credentials(void);

#endif
