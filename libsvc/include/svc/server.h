/*
 * server.h: the gRPC server runtime on gRPC C core. Completion-queue threads
 * accept calls and move bytes; handlers run on the worker pool and end calls
 * from any thread, now or later (a parked call holds no thread). Every server
 * also serves grpc.health.v1.Health and server reflection (v1 and v1alpha).
 */
#ifndef SVC_SERVER_H
#define SVC_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "svc/arena.h"
#include "svc/err.h"
#include "svc/log.h"
#include "svc/pool.h"
#include "svc/timer.h"
#include "svc/tls.h"

typedef struct svc_server svc_server_t;

/* svc_server_opts_t.max_in_flight when 0. */
#define SVC_DEFAULT_MAX_IN_FLIGHT 5000
typedef struct svc_call svc_call_t;

typedef enum {
    SVC_METHOD_UNARY = 0,
    SVC_METHOD_SERVER_STREAM,
    SVC_METHOD_BIDI_STREAM,
} svc_method_kind_t;

/*
 * Runs on a worker thread with the unpacked request (unary and server stream:
 * once; bidi: once per incoming message, one at a time). The request lives in
 * svc_call_arena(call) (for bidi, until the handler returns). A unary or
 * server-stream handler must end the call exactly once, with svc_call_reply,
 * svc_call_fail or svc_call_finish, now or later from any thread; after that
 * the call must not be touched.
 */
typedef void (*svc_handler_fn)(svc_call_t *call, const ProtobufCMessage *request, void *user);
/* Bidi only: the client closed its sending side. The handler must end the call. */
typedef void (*svc_half_close_fn)(svc_call_t *call, void *user);
/* The call was cancelled (client cancel, deadline, shutdown). Runs on a worker, at most once. */
typedef void (*svc_cancel_fn)(svc_call_t *call, void *arg);

typedef struct {
    const char *method; /* its name in the .proto, checked by svc_server_add_service */
    svc_method_kind_t kind;
    svc_handler_fn handler;
    svc_half_close_fn on_half_close; /* bidi; NULL means finish with OK */
    /*
     * Unary and server stream: the handler never blocks (it only starts
     * asynchronous work), so it runs on the completion-queue thread and saves
     * the hand-off to a worker. A handler that may wait must leave this 0.
     */
    int nonblocking;
} svc_handler_t;

typedef struct {
    const char *service_name; /* "lock-svc", for logs */
    const char *listen_addr;  /* "127.0.0.1:50051"; port 0 picks a free port */
    int cq_threads;           /* 0: one per CPU */
    int workers;              /* core worker threads; 0: 4 x CPUs */
    int max_workers;          /* 0: 256 */
    int grace_ms;             /* shutdown grace period; 0: 10 000 */
    int max_recv_bytes;       /* 0: 1 MiB */
    /*
     * HTTP/2 streams (calls) one connection may have open at once; the
     * client holds further calls until one ends. Bounds a storm's memory per
     * connection (each call in flight costs gRPC ~12 KB). 0: twice
     * max_in_flight. Some bound is needed even for shedding: gRPC takes in
     * every stream a connection sends (call, metadata, message) before the
     * server can refuse it, so 20 000 calls sent at once over one connection
     * cost ~190 MB however few are admitted; with the bound the client
     * holds them, and what it sends beyond max_in_flight is refused at once.
     */
    int max_streams;
    /*
     * Admission. A call is in flight from its acceptance until it is over
     * and freed: parked calls, streams and lock waiters count. A call that
     * would take the server over max_in_flight, or its peer over
     * max_in_flight_per_peer, is answered RESOURCE_EXHAUSTED "too many calls
     * in flight, retry later" at once: its handler never runs, nothing of it
     * is kept, and grpc_server_shed_total counts it. A health Check is never
     * refused (nor counted), so that an orchestrator sees the service alive
     * under a flood; health Watch and reflection streams count like any call.
     *
     * max_in_flight: 0 means SVC_DEFAULT_MAX_IN_FLIGHT.
     * max_in_flight_per_peer: 0 means no bound of its own. A peer is the
     * client's address without its port (server.c: peer__key), so every
     * caller on one host is one peer (on loopback, every caller), and so
     * are the users behind one proxy or NAT: the bound is for callers
     * spread over hosts that reach the service directly.
     * max_queued: tasks waiting for a worker thread at most when a new call
     * arrives (svc_pool_try_submit); a new call beyond is refused the same
     * way. 0 means max_in_flight.
     */
    int max_in_flight;
    int max_in_flight_per_peer;
    int max_queued;
    /*
     * "host:port": GET /metrics (Prometheus) is served there from start to
     * destroy (svc/metrics.h); NULL or "": not served.
     */
    const char *metrics_addr;
    /*
     * TLS and mTLS (svc/tls.h); its files are read at svc_server_start.
     * NULL, or no certificate: plaintext.
     */
    const svc_tls_opts_t *tls;
    const unsigned char *descriptors; /* FileDescriptorSet for reflection; may be NULL */
    size_t descriptors_len;
} svc_server_opts_t;

svc_server_t *svc_server_create(const svc_server_opts_t *opts, svc_err_t *err);

/*
 * Registers every method of a protobuf-c service. handlers[i] belongs to
 * desc->methods[i] (protobuf-c keeps them in .proto order): INTERNAL unless
 * there is one handler per method, each named after its method, in that
 * order, so a proto that gained or reordered methods fails at start-up
 * instead of serving one method with another's handler. Before start.
 */
int svc_server_add_service(svc_server_t *server, const ProtobufCServiceDescriptor *desc,
                           const svc_handler_t *handlers, size_t n_handlers, void *user,
                           svc_err_t *err);

/* Registers one method by its full path "/pkg.Service/Method". Before start. */
int svc_server_add_method(svc_server_t *server, const char *path,
                          const ProtobufCMessageDescriptor *input,
                          const ProtobufCMessageDescriptor *output, const svc_handler_t *handler,
                          void *user, svc_err_t *err);

/* Binds, starts the CQ threads and marks every registered service SERVING. */
int svc_server_start(svc_server_t *server, svc_err_t *err);
/* The bound port (useful with port 0). */
int svc_server_port(const svc_server_t *server);

/*
 * Blocks until SIGTERM or SIGINT and returns the signal number; the caller then
 * stops what feeds the server and calls svc_server_shutdown. The caller must
 * have blocked those signals in every thread (svc_server_block_signals before
 * creating the server).
 */
int svc_server_wait_for_signal(svc_server_t *server);
/* Blocks SIGTERM, SIGINT and SIGPIPE for this thread and the threads it starts later. */
void svc_server_block_signals(void);
/*
 * A service's first call, before it starts any thread: blocks the signals
 * as svc_server_block_signals does, and caps glibc's malloc arenas at one
 * per CPU (at least 2) unless MALLOC_ARENA_MAX is set. By default glibc
 * gives each new thread an arena up to 8 per CPU; with calls allocated on
 * one thread and freed on another, their free memory stayed resident: a
 * 10 000-user storm peaked at 101 MB with them, 69 MB without, no slower.
 */
void svc_server_prepare_process(void);

/*
 * Stops accepting, marks health NOT_SERVING, lets in-flight calls finish for the
 * grace period, cancels the rest, and stops all threads. Safe to call twice.
 */
void svc_server_shutdown(svc_server_t *server);
/* Shuts down if needed and frees. NULL is a no-op. */
void svc_server_destroy(svc_server_t *server);

/* The worker pool and timers; they exist from svc_server_create until shutdown ends. */
svc_pool_t *svc_server_pool(svc_server_t *server);
svc_timers_t *svc_server_timers(svc_server_t *server);

/* Health of one service name ("" is the whole server). */
void svc_server_set_serving(svc_server_t *server, const char *service, bool serving);

/* ---- the call, for handlers ---- */

const char *svc_call_method(const svc_call_t *call);
/* The x-request-id of the call: the client's, or one made up for it. */
const char *svc_call_request_id(const svc_call_t *call);
/* First value of a request metadata key (lower-case), copied into the call arena; NULL if absent.
 */
const char *svc_call_metadata(svc_call_t *call, const char *key);
/*
 * The names of the verified client certificate of the call's peer (its
 * common name, then its DNS subject alternative names), up to max, as
 * strings in the call's arena; 0 when the call came without TLS or without
 * a verified client certificate.
 */
size_t svc_call_peer_names(svc_call_t *call, const char **names, size_t max);
svc_arena_t *svc_call_arena(svc_call_t *call);
svc_server_t *svc_call_server(svc_call_t *call);
/* Unix ms of the caller's deadline, INT64_MAX when none. */
int64_t svc_call_deadline_ms(const svc_call_t *call);
/* True once the call was cancelled by its client, its deadline, or shutdown. */
bool svc_call_cancelled(const svc_call_t *call);
/*
 * fn(call, arg) runs once on a worker if the call gets cancelled; right away if
 * it already was. One callback per call; a later registration replaces it.
 * The handler must still end the call.
 */
void svc_call_on_cancel(svc_call_t *call, svc_cancel_fn fn, void *arg);

/*
 * Zeroed memory from the call's arena. When there is none, ends the call with
 * RESOURCE_EXHAUSTED and returns NULL: the caller must then not touch the call.
 */
void *svc_call_alloc(svc_call_t *call, size_t size);
/* Ends the call with RESOURCE_EXHAUSTED "out of memory". */
void svc_call_fail_oom(svc_call_t *call);

/* Unary: sends resp with status OK and ends the call. */
void svc_call_reply(svc_call_t *call, const ProtobufCMessage *resp);
/* Ends the call with err's status and message (err->code must not be SVC_OK). */
void svc_call_fail(svc_call_t *call, const svc_err_t *err);
/* Streams: queues one message; messages go out in order. Returns -1 when the call is gone. */
int svc_call_write(svc_call_t *call, const ProtobufCMessage *msg);
/* Streams: ends the call after the queued messages; err NULL means OK. */
void svc_call_finish(svc_call_t *call, const svc_err_t *err);

/*
 * Enters call's log context on this thread (svc_log_ctx_enter with its method
 * and request id; svc_log_ctx_leave(saved) gives the thread back the one it
 * had): for code that goes on with a call on a thread the server did not
 * hand it to, such as a job it submitted to the pool. The call must not have
 * ended yet; it may end before the leave.
 */
void svc_call_log_enter(const svc_call_t *call, svc_log_ctx_t *saved);

/* The underlying grpc_call (a grpc_call *), for propagating to outbound calls. */
void *svc_call_grpc(svc_call_t *call);

#endif
