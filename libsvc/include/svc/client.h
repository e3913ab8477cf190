/*
 * client.h: calls to other gRPC services. One channel per target, made once
 * and reused by every thread. Calls made while serving a call inherit its
 * deadline, cancellation and x-request-id (the parent's); a call made with
 * no parent on a thread that works for a call (svc_log_ctx_enter) sends
 * that call's x-request-id.
 */
#ifndef SVC_CLIENT_H
#define SVC_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "svc/arena.h"
#include "svc/err.h"
#include "svc/server.h"

typedef struct svc_client svc_client_t;
typedef struct svc_client_stream svc_client_stream_t;

/*
 * The shared channel for target: "host:port", "ipv4:a:p1,b:p2" or
 * "a:p1,b:p2" (several addresses, balanced round_robin), "dns:///name:port".
 * The client lives until svc_client_release_all; do not free it.
 */
svc_client_t *svc_client_get(const char *target, svc_err_t *err);
/* Closes every channel (at process exit, after servers stopped). */
void svc_client_release_all(void);

/*
 * Waits up to timeout_ms until the channel has a connection (for round_robin:
 * to at least one of its addresses). The channel starts connecting when
 * svc_client_get makes it; a service calls this at start, before
 * svc_server_start, so that it does not report SERVING and then refuse its
 * first calls for want of its peer. Returns 0 when connected, else -1 with
 * UNAVAILABLE (the channel keeps trying; calls fail fast meanwhile).
 */
int svc_client_wait_ready(svc_client_t *client, int64_t timeout_ms, svc_err_t *err);

/*
 * A new gRPC C-core channel to target with the arguments svc_client_get
 * uses (insecure, round_robin over several addresses, reconnect backoff
 * 100..1000 ms, 5 s for a connection attempt to complete its handshake,
 * re-resolve after 500 ms), for code that drives C core
 * itself (lock-bench's asynchronous client). After grpc_init; NULL when out
 * of memory. The caller destroys it.
 */
struct grpc_channel *svc_channel_create(const char *target);

typedef struct {
    int64_t timeout_ms; /* 0: 10 000; < 0: none; the parent's deadline still applies */
    svc_call_t *parent; /* the call being served, or NULL */
    /*
     * x-request-id when there is no parent; NULL: the request id of the call
     * this thread works for (svc_log_ctx_request_id), else a new one.
     */
    const char *request_id;
    const char *const *metadata; /* extra key, value pairs */
    int n_metadata;              /* number of pairs */
    int wait_for_ready;          /* wait for a connection instead of failing fast */
} svc_call_opts_t;

/*
 * One unary call. On success returns 0 and *resp (allocated in arena).
 * Otherwise returns -1 with err holding the status the server sent, or
 * UNAVAILABLE / DEADLINE_EXCEEDED from the transport. opts may be NULL.
 */
int svc_client_unary(svc_client_t *client, const char *method, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *resp_desc, svc_arena_t *arena,
                     ProtobufCMessage **resp, const svc_call_opts_t *opts, svc_err_t *err);

/*
 * The answer of an asynchronous unary call: resp (in the call's arena) when
 * err is OK. Runs on the client thread, which serves every asynchronous
 * call of the process: it must not block (hand blocking work to a pool),
 * and it may start more asynchronous calls. It runs in the log context the
 * call was started in (svc_log_ctx_enter): it goes on with that work, so
 * its lines and the calls it makes carry the same request id.
 */
typedef void (*svc_client_done_fn)(ProtobufCMessage *resp, const svc_err_t *err, void *arg);

/*
 * Starts one unary call and returns without waiting: done(arg) runs exactly
 * once, when the answer is in (or, when the call cannot even start, before
 * this returns). The request is copied; arena, which receives the answer,
 * must live until done has returned. The deadline, parent and request id
 * work as for svc_client_unary. svc_client_release_all waits for calls in
 * flight.
 */
void svc_client_unary_async(svc_client_t *client, const char *method, const ProtobufCMessage *req,
                            const ProtobufCMessageDescriptor *resp_desc, svc_arena_t *arena,
                            const svc_call_opts_t *opts, svc_client_done_fn done, void *arg);

/* The same with a request given as raw bytes (a proxy, or a test of bad input). */
int svc_client_unary_bytes(svc_client_t *client, const char *method, const void *bytes, size_t len,
                           const ProtobufCMessageDescriptor *resp_desc, svc_arena_t *arena,
                           ProtobufCMessage **resp, const svc_call_opts_t *opts, svc_err_t *err);

/* A streaming call (server or bidi), used from one thread at a time. */
svc_client_stream_t *svc_client_stream_open(svc_client_t *client, const char *method,
                                            const svc_call_opts_t *opts, svc_err_t *err);
int svc_client_stream_send(svc_client_stream_t *s, const ProtobufCMessage *msg, svc_err_t *err);
int svc_client_stream_close_send(svc_client_stream_t *s, svc_err_t *err);
/* Returns 1 with *msg, 0 at the end of the stream (call finish), -1 on a broken call. */
int svc_client_stream_recv(svc_client_stream_t *s, const ProtobufCMessageDescriptor *desc,
                           svc_arena_t *arena, ProtobufCMessage **msg, svc_err_t *err);
/* Waits for the status: 0 when OK, else -1 with err. */
int svc_client_stream_finish(svc_client_stream_t *s, svc_err_t *err);
/* Cancels the call if it has not finished, and frees. NULL is a no-op. */
void svc_client_stream_destroy(svc_client_stream_t *s);
/*
 * Cancels the call from any thread: a recv blocked on it returns -1. The
 * stream's owner still finishes or destroys it.
 */
void svc_client_stream_cancel(svc_client_stream_t *s);

/* ---------- server streams without a thread waiting ---------- */

typedef struct svc_client_watch svc_client_watch_t;

/* One message of the stream (in an arena reset after this returns). On the client thread. */
typedef void (*svc_client_msg_fn)(ProtobufCMessage *msg, void *arg);
/* The stream's end: its status (OK when the server finished it so). On the client thread. */
typedef void (*svc_client_end_fn)(const svc_err_t *err, void *arg);

/*
 * Starts a server-streaming call with one request and reads its messages
 * on the client thread (see svc_client_unary_async: the callbacks must not
 * block): on_msg for each, in order, then on_end exactly once, last. Unlike
 * an asynchronous unary call's, they run in no log context: a stream often
 * outlives the call that opened it, or serves many. A
 * stream that should not end by a deadline passes opts->timeout_ms < 0.
 * NULL (with err) when it cannot even start; then no callback runs.
 * REQUIRES: arg lives until on_end has run; the caller closes the stream
 * once with svc_client_watch_close, before or after on_end.
 */
svc_client_watch_t *svc_client_watch_start(svc_client_t *client, const char *method,
                                           const ProtobufCMessage *req,
                                           const ProtobufCMessageDescriptor *msg_desc,
                                           const svc_call_opts_t *opts, svc_client_msg_fn on_msg,
                                           svc_client_end_fn on_end, void *arg, svc_err_t *err);
/*
 * Cancels the stream if it still runs (on_end then runs with CANCELLED,
 * unless it ran already; on_msg may still run until then) and gives up the
 * caller's hold on it. Any thread, also from the callbacks. NULL is a no-op.
 */
void svc_client_watch_close(svc_client_watch_t *w);
/* Cancels the stream as close does, but keeps the caller's hold (close it later). */
void svc_client_watch_cancel(svc_client_watch_t *w);

#endif
