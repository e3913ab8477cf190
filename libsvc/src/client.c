/*
 * client.c: outbound gRPC calls on shared channels. A blocking call waits on
 * its own thread's pluck queue; an asynchronous one is started on the shared
 * completion queue of the client thread, which runs its callback when the
 * answer is in, so nobody's thread waits for it. The channel is shared.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "server_internal.h"
#include "svc/client.h"
#include "svc/log.h"
#include "svc/metrics.h"

#define DEFAULT_TIMEOUT_MS 10000
/*
 * How long one connection attempt (TCP connect and the HTTP/2 SETTINGS
 * exchange) may take. C core reads GRPC_ARG_MIN_RECONNECT_BACKOFF_MS as this
 * minimum connect timeout, not as a backoff: at 100 ms a peer busy serving a
 * storm (or a loaded machine) had its handshake cut off ("tcp handshaker
 * shutdown", "timed out before receiving SETTINGS frame"), every address went
 * to TRANSIENT_FAILURE and the calls queued on the channel failed UNAVAILABLE.
 * A peer that is really down refuses the connection at once, so this does not
 * slow the fail-fast answer.
 */
#define CONNECT_TIMEOUT_MS 5000
#define MAX_METADATA 16
/*
 * Round robin over every address of a target, and a retry of a call that
 * came back CANCELLED although this process did not cancel it: a server
 * that shuts down (SIGTERM) kills the calls it had received but not yet
 * handed to a handler, and those never ran. Our handlers answer CANCELLED
 * only to a caller that has gone, so such an answer reaching a live caller
 * comes from that kill. gRPC retries only until the answer's headers came
 * and never a call its own side cancelled (a deadline, a parent).
 */
#define CHANNEL_CONFIG                                                                             \
    "{\"loadBalancingConfig\":[{\"round_robin\":{}}],"                                             \
    "\"methodConfig\":[{\"name\":[{}],\"retryPolicy\":{\"maxAttempts\":3,"                         \
    "\"initialBackoff\":\"0.01s\",\"maxBackoff\":\"0.1s\",\"backoffMultiplier\":2,"                \
    "\"retryableStatusCodes\":[\"CANCELLED\"]}}]}"

struct svc_client {
    struct svc_client *next;
    char *target;
    grpc_channel *channel;
};

struct svc_client_stream {
    grpc_call *call;
    grpc_completion_queue *cq;
    grpc_metadata md[MAX_METADATA + 1];
    size_t n_md;
    grpc_metadata_array recv_md;
    bool got_md, finished;
    char request_id[65];
    svc_rpc_metrics_t *metrics;
    int64_t start_us;
};

static void client__drain_destroy(grpc_completion_queue *cq);

/* CLOCK_MONOTONIC in microseconds: how long calls take (grpc_client_handling_seconds). */
static int64_t
client__now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The call's series, counted as started; with *start_us for client__handled. */
static svc_rpc_metrics_t *
client__started(const char *method, const char *grpc_type, int64_t *start_us)
{
    svc_rpc_metrics_t *m = svc_rpc_metrics(false, method, grpc_type);

    svc_rpc_metrics_started(m);
    *start_us = client__now_us();
    return m;
}

static void
client__handled(svc_rpc_metrics_t *m, svc_status_t code, int64_t start_us)
{
    svc_rpc_metrics_handled(m, code, (double)(client__now_us() - start_us) / 1000000.0);
}

static pthread_mutex_t clients_mu = PTHREAD_MUTEX_INITIALIZER;
static svc_client_t *clients;

/* "a:1,b:2" has no scheme: give it ipv4: so the resolver takes the list. */
static char *
client__normalize_target(const char *target)
{
    char *out = NULL;

    if (strchr(target, ',') != NULL && strstr(target, ":///") == NULL &&
        strncmp(target, "ipv4:", 5) != 0 && strncmp(target, "ipv6:", 5) != 0) {
        if (asprintf(&out, "ipv4:%s", target) < 0) {
            return NULL;
        }
        return out;
    }
    return strdup(target);
}

/*
 * The name a TLS server's certificate must carry when the target lists
 * several addresses ("ipv4:127.0.0.1:50051,127.0.0.1:50061"): the first
 * address's host. C core would otherwise check the whole list as one name.
 * NULL for a single address or a DNS name, whose own host is checked.
 */
static char *
client__tls_name(const char *normalized)
{
    const char *list = normalized, *end;

    if (strncmp(list, "ipv4:", 5) == 0 || strncmp(list, "ipv6:", 5) == 0) {
        list += 5;
    }
    if (strchr(list, ',') == NULL || strstr(normalized, ":///") != NULL) {
        return NULL;
    }
    if (list[0] == '[') { /* [::1]:50051 */
        end = strchr(list, ']');
        return end != NULL ? strndup(list + 1, (size_t)(end - list - 1)) : NULL;
    }
    end = strchr(list, ':');
    return end != NULL ? strndup(list, (size_t)(end - list)) : NULL;
}

grpc_channel *
svc_channel_create(const char *target)
{
    char *normalized = client__normalize_target(target);
    char *tls_name;
    grpc_arg args[6];
    grpc_channel_args chargs = {5, args};
    grpc_channel_credentials *creds;
    grpc_channel *channel;

    if (normalized == NULL) {
        return NULL;
    }
    args[0].type = GRPC_ARG_STRING;
    args[0].key = GRPC_ARG_SERVICE_CONFIG;
    args[0].value.string = CHANNEL_CONFIG;
    /* Come back quickly after a peer restarts: callers fail fast meanwhile. */
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
    args[1].value.integer = 100;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[2].value.integer = 1000;
    args[3].type = GRPC_ARG_INTEGER;
    args[3].key = GRPC_ARG_MIN_RECONNECT_BACKOFF_MS; /* the connect timeout, see above */
    args[3].value.integer = CONNECT_TIMEOUT_MS;
    /* Re-resolve soon after a peer went away (the default waits 30 s). */
    args[4].type = GRPC_ARG_INTEGER;
    args[4].key = GRPC_ARG_DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS;
    args[4].value.integer = 500;
    tls_name = client__tls_name(normalized);
    if (tls_name != NULL) {
        args[5].type = GRPC_ARG_STRING;
        args[5].key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
        args[5].value.string = tls_name;
        chargs.num_args = 6;
    }
    creds = svc__tls_channel_credentials();
    channel = grpc_channel_create(normalized, creds, &chargs);
    grpc_channel_credentials_release(creds);
    free(tls_name);
    free(normalized);
    return channel;
}

svc_client_t *
svc_client_get(const char *target, svc_err_t *err)
{
    svc_client_t *c;

    if (target == NULL || target[0] == '\0') {
        svc_err_set(err, SVC_INVALID_ARGUMENT, "empty target address");
        return NULL;
    }
    pthread_mutex_lock(&clients_mu);
    for (c = clients; c != NULL; c = c->next) {
        if (strcmp(c->target, target) == 0) {
            pthread_mutex_unlock(&clients_mu);
            return c;
        }
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL || (c->target = strdup(target)) == NULL) {
        pthread_mutex_unlock(&clients_mu);
        free(c);
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    grpc_init();
    c->channel = svc_channel_create(target);
    if (c->channel == NULL) {
        pthread_mutex_unlock(&clients_mu);
        grpc_shutdown();
        free(c->target);
        free(c);
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    /* Connect now, not when the first storm of calls arrives. */
    (void)grpc_channel_check_connectivity_state(c->channel, 1);
    c->next = clients;
    clients = c;
    pthread_mutex_unlock(&clients_mu);
    return c;
}

int
svc_client_wait_ready(svc_client_t *c, int64_t timeout_ms, svc_err_t *err)
{
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_connectivity_state state;
    int tag;

    while ((state = grpc_channel_check_connectivity_state(c->channel, 1)) != GRPC_CHANNEL_READY) {
        grpc_channel_watch_connectivity_state(c->channel, state, deadline, cq, &tag);
        if (!grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                 .success) {
            break; /* the deadline passed before the state changed */
        }
    }
    client__drain_destroy(cq);
    if (state != GRPC_CHANNEL_READY) {
        svc_err_set(err, SVC_UNAVAILABLE, "%s is not reachable", c->target);
        return -1;
    }
    svc_err_clear(err);
    return 0;
}

static void client__async_stop(void);

void
svc_client_release_all(void)
{
    client__async_stop(); /* its calls hold channels; they end first */
    pthread_mutex_lock(&clients_mu);
    while (clients != NULL) {
        svc_client_t *c = clients;
        clients = c->next;
        grpc_channel_destroy(c->channel);
        free(c->target);
        free(c);
        grpc_shutdown();
    }
    pthread_mutex_unlock(&clients_mu);
}

/*
 * Fills md with x-request-id and the caller's pairs; returns the count. The
 * id is the parent's, else opts->request_id, else that of the call this
 * thread works for (its log context), else a new one.
 */
static size_t
client__metadata(const svc_call_opts_t *opts, grpc_metadata *md, char *request_id)
{
    size_t n = 0;

    if (opts != NULL && opts->parent != NULL) {
        snprintf(request_id, 65, "%s", svc_call_request_id(opts->parent));
    } else if (opts != NULL && opts->request_id != NULL) {
        snprintf(request_id, 65, "%s", opts->request_id);
    } else if (svc_log_ctx_request_id() != NULL) { /* made while serving a call */
        snprintf(request_id, 65, "%s", svc_log_ctx_request_id());
    } else {
        svc__request_id(request_id);
    }
    memset(md, 0, sizeof(*md) * (MAX_METADATA + 1));
    md[n].key = grpc_slice_from_static_string("x-request-id");
    md[n].value = grpc_slice_from_copied_string(request_id);
    n++;
    for (int i = 0; opts != NULL && i < opts->n_metadata && n <= MAX_METADATA; i++) {
        md[n].key = grpc_slice_from_copied_string(opts->metadata[2 * i]);
        md[n].value = grpc_slice_from_copied_string(opts->metadata[2 * i + 1]);
        n++;
    }
    return n;
}

static void
client__metadata_free(grpc_metadata *md, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        grpc_slice_unref(md[i].key);
        grpc_slice_unref(md[i].value);
    }
}

static grpc_call *
client__create_call(svc_client_t *c, const char *method, const svc_call_opts_t *opts,
                    grpc_completion_queue *cq)
{
    int64_t timeout = opts != NULL && opts->timeout_ms > 0 ? opts->timeout_ms : DEFAULT_TIMEOUT_MS;
    gpr_timespec deadline = opts != NULL && opts->timeout_ms < 0
                                ? gpr_inf_future(GPR_CLOCK_REALTIME)
                                : gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                               gpr_time_from_millis(timeout, GPR_TIMESPAN));
    grpc_call *parent = opts != NULL && opts->parent != NULL ? svc_call_grpc(opts->parent) : NULL;
    grpc_slice path = grpc_slice_from_copied_string(method);
    grpc_call *call = grpc_channel_create_call(c->channel, parent, GRPC_PROPAGATE_DEFAULTS, cq,
                                               path, NULL, deadline, NULL);

    grpc_slice_unref(path);
    return call;
}

/* Runs one batch and waits for it. */
static bool
client__run(grpc_call *call, grpc_completion_queue *cq, const grpc_op *ops, size_t n, void *tag)
{
    grpc_event ev;

    if (grpc_call_start_batch(call, ops, n, tag, NULL) != GRPC_CALL_OK) {
        return false;
    }
    ev = grpc_completion_queue_pluck(cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    return ev.type == GRPC_OP_COMPLETE && ev.success;
}

static void
client__set_status(svc_err_t *err, grpc_status_code status, grpc_slice details, const char *method)
{
    char *text = grpc_slice_to_c_string(details);

    svc_err_set(err, svc_status_from_grpc((int)status), "%s", text[0] ? text : method);
    gpr_free(text);
}

static void
client__drain_destroy(grpc_completion_queue *cq)
{
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
}

/*
 * Each thread keeps one pluck queue for its unary calls: making and draining
 * a queue per call cost more CPU than the call itself.
 */
static pthread_key_t cq_key;
static pthread_once_t cq_key_once = PTHREAD_ONCE_INIT;

static void
client__cq_free(void *cq)
{
    client__drain_destroy(cq);
}

static void
client__cq_key_make(void)
{
    pthread_key_create(&cq_key, client__cq_free);
}

static grpc_completion_queue *
client__thread_cq(void)
{
    grpc_completion_queue *cq;

    pthread_once(&cq_key_once, client__cq_key_make);
    cq = pthread_getspecific(cq_key);
    if (cq == NULL) {
        cq = grpc_completion_queue_create_for_pluck(NULL);
        pthread_setspecific(cq_key, cq);
    }
    return cq;
}

/* One unary call sending the bytes in send (owned by the caller). */
static int
client__unary(svc_client_t *c, const char *method, grpc_byte_buffer *send,
              const ProtobufCMessageDescriptor *resp_desc, svc_arena_t *arena,
              ProtobufCMessage **resp, const svc_call_opts_t *opts, svc_err_t *err)
{
    grpc_completion_queue *cq = client__thread_cq();
    grpc_metadata md[MAX_METADATA + 1];
    char request_id[65];
    size_t n_md = client__metadata(opts, md, request_id);
    grpc_call *call = client__create_call(c, method, opts, cq);
    grpc_byte_buffer *recv = NULL;
    grpc_metadata_array recv_md, trailers;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    int rc = -1;
    int64_t start_us;
    svc_rpc_metrics_t *metrics = client__started(method, "unary", &start_us);

    *resp = NULL;
    grpc_metadata_array_init(&recv_md);
    grpc_metadata_array_init(&trailers);
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = n_md;
    ops[0].data.send_initial_metadata.metadata = md;
    if (opts != NULL && opts->wait_for_ready) {
        ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY |
                       GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
    }
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &recv_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailers;

    if (call == NULL) {
        svc_err_set(err, SVC_INTERNAL, "cannot create a call to %s", method);
    } else if (!client__run(call, cq, ops, 6, ops)) {
        svc_err_set(err, SVC_UNAVAILABLE, "call to %s failed", method);
    } else if (status != GRPC_STATUS_OK) {
        client__set_status(err, status, details, method);
    } else if (recv == NULL || (*resp = svc__unpack_message(recv, resp_desc, arena)) == NULL) {
        svc_err_set(err, SVC_INTERNAL, "bad response from %s", method);
    } else {
        svc_err_clear(err);
        rc = 0;
    }
    client__handled(metrics, rc == 0 ? SVC_OK : err->code, start_us);
    if (recv != NULL) {
        grpc_byte_buffer_destroy(recv);
    }
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&recv_md);
    grpc_metadata_array_destroy(&trailers);
    client__metadata_free(md, n_md);
    if (call != NULL) {
        grpc_call_unref(call);
    }
    return rc;
}

int
svc_client_unary(svc_client_t *c, const char *method, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *resp_desc, svc_arena_t *arena,
                 ProtobufCMessage **resp, const svc_call_opts_t *opts, svc_err_t *err)
{
    grpc_byte_buffer *send = svc__pack_message(req);
    int rc = client__unary(c, method, send, resp_desc, arena, resp, opts, err);

    grpc_byte_buffer_destroy(send);
    return rc;
}

int
svc_client_unary_bytes(svc_client_t *c, const char *method, const void *bytes, size_t len,
                       const ProtobufCMessageDescriptor *resp_desc, svc_arena_t *arena,
                       ProtobufCMessage **resp, const svc_call_opts_t *opts, svc_err_t *err)
{
    grpc_slice slice = grpc_slice_from_copied_buffer(bytes, len);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&slice, 1);
    int rc = client__unary(c, method, send, resp_desc, arena, resp, opts, err);

    grpc_slice_unref(slice);
    grpc_byte_buffer_destroy(send);
    return rc;
}

svc_client_stream_t *
svc_client_stream_open(svc_client_t *c, const char *method, const svc_call_opts_t *opts,
                       svc_err_t *err)
{
    svc_client_stream_t *s = calloc(1, sizeof(*s));
    grpc_op op;

    if (s == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    s->cq = grpc_completion_queue_create_for_pluck(NULL);
    s->metrics = client__started(method, "bidi_stream", &s->start_us);
    s->n_md = client__metadata(opts, s->md, s->request_id);
    grpc_metadata_array_init(&s->recv_md);
    s->call = client__create_call(c, method, opts, s->cq);
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_INITIAL_METADATA;
    op.data.send_initial_metadata.count = s->n_md;
    op.data.send_initial_metadata.metadata = s->md;
    if (s->call == NULL || !client__run(s->call, s->cq, &op, 1, &op)) {
        svc_err_set(err, SVC_UNAVAILABLE, "cannot open a stream to %s", method);
        svc_client_stream_destroy(s);
        return NULL;
    }
    return s;
}

int
svc_client_stream_send(svc_client_stream_t *s, const ProtobufCMessage *msg, svc_err_t *err)
{
    grpc_byte_buffer *buf = svc__pack_message(msg);
    grpc_op op;
    bool ok;

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = buf;
    ok = client__run(s->call, s->cq, &op, 1, &op);
    grpc_byte_buffer_destroy(buf);
    if (!ok) {
        svc_err_set(err, SVC_UNAVAILABLE, "stream closed");
        return -1;
    }
    return 0;
}

int
svc_client_stream_close_send(svc_client_stream_t *s, svc_err_t *err)
{
    grpc_op op;

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    if (!client__run(s->call, s->cq, &op, 1, &op)) {
        svc_err_set(err, SVC_UNAVAILABLE, "stream closed");
        return -1;
    }
    return 0;
}

/* Adds the receive of the initial metadata to ops the first time only; returns the ops used. */
static size_t
stream__recv_md_once(svc_client_stream_t *s, grpc_op *ops)
{
    if (s->got_md) {
        return 0;
    }
    s->got_md = true;
    ops[0].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[0].data.recv_initial_metadata.recv_initial_metadata = &s->recv_md;
    return 1;
}

int
svc_client_stream_recv(svc_client_stream_t *s, const ProtobufCMessageDescriptor *desc,
                       svc_arena_t *arena, ProtobufCMessage **msg, svc_err_t *err)
{
    grpc_byte_buffer *buf = NULL;
    grpc_op ops[2];
    size_t n;
    bool ok;

    *msg = NULL;
    memset(ops, 0, sizeof(ops));
    n = stream__recv_md_once(s, ops);
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n].data.recv_message.recv_message = &buf;
    n++;
    ok = client__run(s->call, s->cq, ops, n, ops);
    if (!ok) {
        if (buf != NULL) {
            grpc_byte_buffer_destroy(buf);
        }
        svc_err_set(err, SVC_UNAVAILABLE, "stream broken");
        return -1;
    }
    if (buf == NULL) {
        return 0;
    }
    *msg = svc__unpack_message(buf, desc, arena);
    grpc_byte_buffer_destroy(buf);
    if (*msg == NULL) {
        svc_err_set(err, SVC_INTERNAL, "bad message on the stream");
        return -1;
    }
    return 1;
}

int
svc_client_stream_finish(svc_client_stream_t *s, svc_err_t *err)
{
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_metadata_array trailers;
    grpc_op ops[2];
    size_t n;
    int rc = -1;

    grpc_metadata_array_init(&trailers);
    memset(ops, 0, sizeof(ops));
    n = stream__recv_md_once(s, ops);
    ops[n].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[n].data.recv_status_on_client.status = &status;
    ops[n].data.recv_status_on_client.status_details = &details;
    ops[n].data.recv_status_on_client.trailing_metadata = &trailers;
    n++;
    if (!client__run(s->call, s->cq, ops, n, ops)) {
        svc_err_set(err, SVC_UNAVAILABLE, "stream broken");
    } else if (status != GRPC_STATUS_OK) {
        client__set_status(err, status, details, "stream");
    } else {
        svc_err_clear(err);
        rc = 0;
    }
    client__handled(s->metrics, rc == 0 ? SVC_OK : err->code, s->start_us);
    s->finished = true;
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&trailers);
    return rc;
}

void
svc_client_stream_cancel(svc_client_stream_t *s)
{
    if (s != NULL && s->call != NULL) {
        grpc_call_cancel(s->call, NULL); /* thread-safe in C core */
    }
}

void
svc_client_stream_destroy(svc_client_stream_t *s)
{
    if (s == NULL) {
        return;
    }
    if (s->call != NULL) {
        if (!s->finished) {
            grpc_call_cancel(s->call, NULL);
        }
        grpc_call_unref(s->call);
    }
    grpc_metadata_array_destroy(&s->recv_md);
    client__metadata_free(s->md, s->n_md);
    client__drain_destroy(s->cq);
    free(s);
}

/* ---------- asynchronous unary calls ---------- */

/*
 * A tag on the asynchronous queue: what runs when its batch completes (on
 * the client thread). `armed` is stored (release) just before each batch
 * with this tag starts and loaded (acquire) before fn is read: the hand-off
 * through gRPC's queue, which ThreadSanitizer cannot see into, made
 * visible to it.
 */
typedef struct async_tag {
    void (*fn)(struct async_tag *tag, bool ok);
    atomic_int armed;
} async_tag_t;

/* Starts a batch whose completion runs tag->fn on the client thread. */
static grpc_call_error
client__start_tagged(grpc_call *call, const grpc_op *ops, size_t n, async_tag_t *tag)
{
    atomic_store_explicit(&tag->armed, 1, memory_order_release);
    return grpc_call_start_batch(call, ops, n, tag, NULL);
}

/* One asynchronous call, from its start until its callback returned. */
typedef struct {
    async_tag_t tag; /* first: the queue's tag is the call */
    grpc_call *call;
    grpc_metadata md[MAX_METADATA + 1];
    size_t n_md;
    grpc_byte_buffer *send, *recv;
    grpc_metadata_array recv_md, trailers;
    grpc_status_code status;
    grpc_slice details;
    const ProtobufCMessageDescriptor *resp_desc;
    svc_arena_t *arena;
    svc_client_done_fn done;
    void *arg;
    char *method;
    svc_rpc_metrics_t *metrics;
    int64_t start_us;
    svc_log_ctx_t log_ctx; /* the starter's: done goes on with its work */
    /*
     * Stored (release) before the batch starts, loaded (acquire) when it
     * completes: the hand-off through gRPC's queue, which ThreadSanitizer
     * cannot see into, made visible to it.
     */
    atomic_int started;
} async_call_t;

/*
 * The client thread and its completion queue, made with the first
 * asynchronous call. Shutting the queue down lets the calls in flight end
 * first: the thread sees the shutdown after their last event.
 */
static pthread_mutex_t async_mu = PTHREAD_MUTEX_INITIALIZER;
static grpc_completion_queue *async_cq;
static pthread_t async_thread;
static bool async_running;

static void
client__async_free(async_call_t *a)
{
    if (a->recv != NULL) {
        grpc_byte_buffer_destroy(a->recv);
    }
    if (a->send != NULL) {
        grpc_byte_buffer_destroy(a->send);
    }
    grpc_slice_unref(a->details);
    grpc_metadata_array_destroy(&a->recv_md);
    grpc_metadata_array_destroy(&a->trailers);
    client__metadata_free(a->md, a->n_md);
    if (a->call != NULL) {
        grpc_call_unref(a->call);
    }
    free(a->method);
    free(a);
}

/* The answer is in (success: the batch completed): unpack it and run the callback. */
static void
client__async_finish(async_call_t *a, bool success)
{
    ProtobufCMessage *resp = NULL;
    svc_log_ctx_t saved;
    svc_err_t err;

    (void)atomic_load_explicit(&a->started, memory_order_acquire);
    if (!success) {
        svc_err_set(&err, SVC_UNAVAILABLE, "call to %s failed", a->method);
    } else if (a->status != GRPC_STATUS_OK) {
        client__set_status(&err, a->status, a->details, a->method);
    } else if (a->recv == NULL ||
               (resp = svc__unpack_message(a->recv, a->resp_desc, a->arena)) == NULL) {
        svc_err_set(&err, SVC_INTERNAL, "bad response from %s", a->method);
    } else {
        svc_err_clear(&err);
    }
    client__handled(a->metrics, err.code, a->start_us);
    svc_log_ctx_enter(&saved, a->log_ctx.method, a->log_ctx.set ? a->log_ctx.request_id : NULL);
    a->done(resp, &err, a->arg);
    svc_log_ctx_leave(&saved);
    client__async_free(a);
}

static void
client__async_unary_done(async_tag_t *tag, bool ok)
{
    client__async_finish((async_call_t *)tag, ok);
}

static void *
client__async_loop(void *arg)
{
    (void)arg;
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(async_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) {
            return NULL;
        }
        if (ev.type == GRPC_OP_COMPLETE) {
            async_tag_t *tag = ev.tag;
            (void)atomic_load_explicit(&tag->armed, memory_order_acquire);
            tag->fn(tag, ev.success != 0);
            svc_log_ctx_clear(); /* the next event may be for another call */
        }
    }
}

/* The shared queue, its thread started on first use; NULL when it cannot start. */
static grpc_completion_queue *
client__async_cq(void)
{
    grpc_completion_queue *cq;

    pthread_mutex_lock(&async_mu);
    if (!async_running) {
        async_cq = grpc_completion_queue_create_for_next(NULL);
        if (pthread_create(&async_thread, NULL, client__async_loop, NULL) != 0) {
            grpc_completion_queue_shutdown(async_cq);
            while (grpc_completion_queue_next(async_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                       .type != GRPC_QUEUE_SHUTDOWN) {
            }
            grpc_completion_queue_destroy(async_cq);
            async_cq = NULL;
        } else {
            async_running = true;
        }
    }
    cq = async_cq;
    pthread_mutex_unlock(&async_mu);
    return cq;
}

/* Waits for the calls in flight (each ends by its deadline at the latest), then stops the thread.
 */
static void
client__async_stop(void)
{
    pthread_mutex_lock(&async_mu);
    if (async_running) {
        grpc_completion_queue_shutdown(async_cq);
        pthread_join(async_thread, NULL);
        grpc_completion_queue_destroy(async_cq);
        async_cq = NULL;
        async_running = false;
    }
    pthread_mutex_unlock(&async_mu);
}

void
svc_client_unary_async(svc_client_t *c, const char *method, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *resp_desc, svc_arena_t *arena,
                       const svc_call_opts_t *opts, svc_client_done_fn done, void *arg)
{
    grpc_completion_queue *cq = client__async_cq();
    async_call_t *a = cq != NULL ? calloc(1, sizeof(*a)) : NULL;
    grpc_call *call;
    char request_id[65];
    grpc_op ops[6];
    svc_err_t err;

    if (a == NULL || (a->method = strdup(method)) == NULL) {
        free(a);
        svc_err_set(&err, SVC_RESOURCE_EXHAUSTED, "cannot start a call to %s", method);
        done(NULL, &err, arg);
        return;
    }
    a->tag.fn = client__async_unary_done;
    a->metrics = client__started(method, "unary", &a->start_us);
    a->resp_desc = resp_desc;
    a->arena = arena;
    a->done = done;
    a->arg = arg;
    svc_log_ctx_get(&a->log_ctx);
    a->status = GRPC_STATUS_UNKNOWN;
    a->details = grpc_empty_slice();
    grpc_metadata_array_init(&a->recv_md);
    grpc_metadata_array_init(&a->trailers);
    a->n_md = client__metadata(opts, a->md, request_id);
    a->send = svc__pack_message(req);
    a->call = client__create_call(c, method, opts, cq);
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = a->n_md;
    ops[0].data.send_initial_metadata.metadata = a->md;
    if (opts != NULL && opts->wait_for_ready) {
        ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY |
                       GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
    }
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = a->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &a->recv_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &a->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.status = &a->status;
    ops[5].data.recv_status_on_client.status_details = &a->details;
    ops[5].data.recv_status_on_client.trailing_metadata = &a->trailers;
    call = a->send != NULL ? a->call : NULL; /* a is not ours to read once the batch runs */
    atomic_store_explicit(&a->started, 1, memory_order_release);
    if (call == NULL || client__start_tagged(call, ops, 6, &a->tag) != GRPC_CALL_OK) {
        svc_err_set(&err, SVC_INTERNAL, "cannot start a call to %s", method);
        client__handled(a->metrics, err.code, a->start_us);
        done(NULL, &err, arg);
        client__async_free(a);
    }
}

/* ---------- asynchronous server streams ---------- */

/*
 * One server-streaming call read on the client thread. Three batches: the
 * start (request out, initial metadata in), the status, and one message
 * read at a time. It is freed when the caller has closed it and no batch
 * is outstanding (refs).
 */
struct svc_client_watch {
    async_tag_t start_tag, msg_tag, status_tag;
    grpc_call *call;
    grpc_metadata md[MAX_METADATA + 1];
    size_t n_md;
    grpc_byte_buffer *send, *recv;
    grpc_metadata_array recv_md, trailers;
    grpc_status_code status;
    grpc_slice details;
    const ProtobufCMessageDescriptor *desc;
    svc_arena_t *arena; /* each message's; reset after its callback */
    svc_client_msg_fn on_msg;
    svc_client_end_fn on_end;
    void *arg;
    char *method;
    svc_rpc_metrics_t *metrics;
    int64_t start_us;
    pthread_mutex_t mu;
    int refs;       /* the caller's, plus each batch outstanding */
    bool closed;    /* the caller closed it: no message is delivered after */
    bool msgs_over; /* the message loop ended */
    bool status_in; /* the status batch completed */
    bool failed;    /* the status batch failed (no status) */
    bool end_ran;   /* on_end ran (or is running) */
    atomic_int started;
};

#define WATCH_OF(tag, member)                                                                      \
    ((svc_client_watch_t *)((char *)(tag)-offsetof(svc_client_watch_t, member)))

static void
watch__unref(svc_client_watch_t *w)
{
    int left;

    pthread_mutex_lock(&w->mu);
    left = --w->refs;
    pthread_mutex_unlock(&w->mu);
    if (left > 0) {
        return;
    }
    if (w->recv != NULL) {
        grpc_byte_buffer_destroy(w->recv);
    }
    if (w->send != NULL) {
        grpc_byte_buffer_destroy(w->send);
    }
    grpc_slice_unref(w->details);
    grpc_metadata_array_destroy(&w->recv_md);
    grpc_metadata_array_destroy(&w->trailers);
    client__metadata_free(w->md, w->n_md);
    if (w->call != NULL) {
        grpc_call_unref(w->call);
    }
    svc_arena_destroy(w->arena);
    pthread_mutex_destroy(&w->mu);
    free(w->method);
    free(w);
}

/* Runs on_end once both the messages and the status are in (the client thread). */
static void
watch__maybe_end(svc_client_watch_t *w)
{
    svc_err_t err;
    bool end;

    pthread_mutex_lock(&w->mu);
    end = w->msgs_over && w->status_in && !w->end_ran;
    w->end_ran = w->end_ran || end;
    pthread_mutex_unlock(&w->mu);
    if (!end) {
        return;
    }
    if (w->failed) {
        svc_err_set(&err, SVC_UNAVAILABLE, "call to %s failed", w->method);
    } else if (w->status != GRPC_STATUS_OK) {
        client__set_status(&err, w->status, w->details, w->method);
    } else {
        svc_err_clear(&err);
    }
    client__handled(w->metrics, err.code, w->start_us);
    w->on_end(&err, w->arg);
}

/* Asks for the next message (refs taken); false when it cannot. */
static bool
watch__read_next(svc_client_watch_t *w)
{
    grpc_op op;

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &w->recv;
    pthread_mutex_lock(&w->mu);
    w->refs++;
    pthread_mutex_unlock(&w->mu);
    if (client__start_tagged(w->call, &op, 1, &w->msg_tag) != GRPC_CALL_OK) {
        pthread_mutex_lock(&w->mu);
        w->refs--;
        pthread_mutex_unlock(&w->mu);
        return false;
    }
    return true;
}

static void
watch__msg_done(async_tag_t *tag, bool ok)
{
    svc_client_watch_t *w = WATCH_OF(tag, msg_tag);
    bool closed, more = false;

    pthread_mutex_lock(&w->mu);
    closed = w->closed;
    pthread_mutex_unlock(&w->mu);
    if (ok && w->recv != NULL) {
        ProtobufCMessage *msg = svc__unpack_message(w->recv, w->desc, w->arena);
        grpc_byte_buffer_destroy(w->recv);
        w->recv = NULL;
        if (msg != NULL && !closed) {
            w->on_msg(msg, w->arg);
        }
        svc_arena_reset(w->arena);
        more = msg != NULL && watch__read_next(w);
        if (msg == NULL) {
            grpc_call_cancel_with_status(w->call, GRPC_STATUS_INTERNAL, "bad message", NULL);
        }
    }
    if (!more) {
        pthread_mutex_lock(&w->mu);
        w->msgs_over = true;
        pthread_mutex_unlock(&w->mu);
        watch__maybe_end(w);
    }
    watch__unref(w);
}

static void
watch__start_done(async_tag_t *tag, bool ok)
{
    svc_client_watch_t *w = WATCH_OF(tag, start_tag);

    (void)atomic_load_explicit(&w->started, memory_order_acquire);
    if (!ok || !watch__read_next(w)) {
        pthread_mutex_lock(&w->mu);
        w->msgs_over = true;
        pthread_mutex_unlock(&w->mu);
        watch__maybe_end(w);
    }
    watch__unref(w);
}

static void
watch__status_done(async_tag_t *tag, bool ok)
{
    svc_client_watch_t *w = WATCH_OF(tag, status_tag);

    pthread_mutex_lock(&w->mu);
    w->status_in = true;
    w->failed = !ok;
    pthread_mutex_unlock(&w->mu);
    watch__maybe_end(w);
    watch__unref(w);
}

svc_client_watch_t *
svc_client_watch_start(svc_client_t *c, const char *method, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *msg_desc, const svc_call_opts_t *opts,
                       svc_client_msg_fn on_msg, svc_client_end_fn on_end, void *arg,
                       svc_err_t *err)
{
    grpc_completion_queue *cq = client__async_cq();
    svc_client_watch_t *w = cq != NULL ? calloc(1, sizeof(*w)) : NULL;
    char request_id[65];
    grpc_op ops[4], status_op;

    if (w == NULL || (w->method = strdup(method)) == NULL ||
        (w->arena = svc_arena_create()) == NULL) {
        if (w != NULL) {
            free(w->method);
        }
        free(w);
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "cannot start a call to %s", method);
        return NULL;
    }
    pthread_mutex_init(&w->mu, NULL);
    w->metrics = client__started(method, "server_stream", &w->start_us);
    w->start_tag.fn = watch__start_done;
    w->msg_tag.fn = watch__msg_done;
    w->status_tag.fn = watch__status_done;
    w->desc = msg_desc;
    w->on_msg = on_msg;
    w->on_end = on_end;
    w->arg = arg;
    w->status = GRPC_STATUS_UNKNOWN;
    w->details = grpc_empty_slice();
    grpc_metadata_array_init(&w->recv_md);
    grpc_metadata_array_init(&w->trailers);
    w->n_md = client__metadata(opts, w->md, request_id);
    w->send = svc__pack_message(req);
    w->call = client__create_call(c, method, opts, cq);
    w->refs = 3; /* the caller's, the start's, the status's */
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = w->n_md;
    ops[0].data.send_initial_metadata.metadata = w->md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = w->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &w->recv_md;
    memset(&status_op, 0, sizeof(status_op));
    status_op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    status_op.data.recv_status_on_client.status = &w->status;
    status_op.data.recv_status_on_client.status_details = &w->details;
    status_op.data.recv_status_on_client.trailing_metadata = &w->trailers;
    atomic_store_explicit(&w->started, 1, memory_order_release);
    if (w->send == NULL || w->call == NULL ||
        client__start_tagged(w->call, &status_op, 1, &w->status_tag) != GRPC_CALL_OK) {
        w->refs = 1;
        watch__unref(w);
        svc_err_set(err, SVC_INTERNAL, "cannot start a call to %s", method);
        return NULL;
    }
    if (client__start_tagged(w->call, ops, 4, &w->start_tag) != GRPC_CALL_OK) {
        /* The status batch ends it: on_end runs with the cancellation. */
        pthread_mutex_lock(&w->mu);
        w->refs--;
        w->msgs_over = true;
        pthread_mutex_unlock(&w->mu);
        grpc_call_cancel(w->call, NULL);
        watch__maybe_end(w); /* in case the status came already */
    }
    return w;
}

void
svc_client_watch_cancel(svc_client_watch_t *w)
{
    pthread_mutex_lock(&w->mu);
    w->closed = true;
    pthread_mutex_unlock(&w->mu);
    grpc_call_cancel(w->call, NULL);
}

void
svc_client_watch_close(svc_client_watch_t *w)
{
    if (w == NULL) {
        return;
    }
    svc_client_watch_cancel(w);
    watch__unref(w);
}
