/*
 * server.c: the gRPC server on gRPC C core. One completion queue per CQ
 * thread, many requests outstanding per method, calls handed to the worker
 * pool, replies sent from whichever thread ends the call.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "server_internal.h"
#include "wire.h"
#include "svc/log.h"
#include "svc/metrics.h"

#define REQUESTS_PER_METHOD 16 /* outstanding requests per method per CQ */
#define REQUESTS_UNKNOWN 4
#define REQUEST_ID_MAX 64
/* A call's arena starts this small: thousands may be in flight at once, and most
 * unary calls (request, answer, handler state) fit; a bigger one grows it. */
#define CALL_ARENA_FIRST 1024
#define PEER_BUCKETS 256 /* peers with calls in flight, hashed */
#define PEER_KEY_MAX 256
#define SHED_LOG_BURST 2 /* lines per second about refused calls */

/* Every completion-queue tag starts with this: the CQ thread calls done(). */
typedef struct svc_tag {
    void (*done)(struct svc_tag *tag, bool ok);
} svc_tag_t;

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

typedef struct server_method {
    char *path;
    const ProtobufCMessageDescriptor *input, *output;
    svc_handler_t handler;
    void *user;
    void *reg;                  /* grpc registered method */
    svc_rpc_metrics_t *metrics; /* grpc_server_* series */
    bool exempt;                /* Health/Check: never refused, not counted in flight */
} server_method_t;

/* A peer with calls in flight (MAX_IN_FLIGHT_PER_PEER), under the server's mu. */
typedef struct peer_slot {
    struct peer_slot *next; /* hash chain */
    int calls;
    char key[]; /* peer__key */
} peer_slot_t;

typedef struct server_cq {
    svc_server_t *server;
    grpc_completion_queue *cq;
    pthread_t thread;
} server_cq_t;

/* One outstanding grpc_server_request_registered_call. */
typedef struct pending_call {
    svc_tag_t tag;
    server_cq_t *scq;
    server_method_t *method;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
} pending_call_t;

/* One outstanding grpc_server_request_call (a method we do not serve). */
typedef struct unknown_call {
    svc_tag_t tag;
    server_cq_t *scq;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    grpc_slice status_msg;
    int cancelled;
    int answering;
} unknown_call_t;

typedef struct out_msg {
    struct out_msg *next;
    grpc_byte_buffer *buf;
} out_msg_t;

struct svc_call {
    svc_server_t *server;
    server_method_t *method;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    svc_arena_t *arena;
    svc_arena_t *msg_arena; /* bidi: one incoming message at a time */

    pthread_mutex_t mu;
    int refs;
    atomic_bool cancelled;
    int close_cancelled;
    svc_tag_t close_tag;
    svc_tag_t send_tag;
    svc_tag_t recv_tag;
    grpc_byte_buffer *recv_buf;

    /* sending, under mu */
    bool md_sent, sending, ended, status_started;
    out_msg_t *out_head, *out_tail;
    grpc_byte_buffer *inflight;
    grpc_status_code status;
    grpc_slice status_msg;
    grpc_metadata md_out[1];

    svc_cancel_fn cancel_fn;
    void *cancel_arg;
    bool cancel_fired;

    int64_t start_us; /* monotonic */
    char request_id[REQUEST_ID_MAX + 1];
    bool admitted;     /* counted in the server's in_flight */
    peer_slot_t *peer; /* counted in its peer's calls; NULL when peers are not counted */
};

struct svc_server {
    svc_server_opts_t opts;
    char *service_name;
    char *listen_addr;
    grpc_server *server;
    server_cq_t *cqs;
    int n_cqs;
    server_method_t **methods;
    int n_methods;
    char **services;
    int n_services;
    svc_pool_t *pool;
    svc_timers_t *timers;
    svc_health_t *health;
    svc_reflection_t *reflection;
    int port;
    bool started;
    bool metrics; /* serving /metrics */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool shutdown_begun, shutdown_done, stopped;
    bool stop_requests; /* no more grpc_server_request_*call: the server is going away */
    int live_calls;     /* accepted and not yet freed, under mu */
    int in_flight;      /* live_calls less health Checks: admission, under mu */
    peer_slot_t *peers[PEER_BUCKETS]; /* under mu */
    svc_tag_t shutdown_tag;
};

/* What the caller of a call answered without its handler hears (svc_shed_reason_t order). */
static const char *const SHED_MESSAGES[SVC_SHED_REASONS] = {
    [SVC_SHED_IN_FLIGHT] = "too many calls in flight, retry later",
    [SVC_SHED_PEER] = "too many calls in flight from this client, retry later",
    [SVC_SHED_QUEUE] = "too many calls waiting for a worker, retry later",
    [SVC_SHED_DEADLINE] = "deadline exceeded before the call was started",
    [SVC_SHED_CANCELLED] = "call cancelled before it was started",
};

static void call__unref(svc_call_t *call);
static void call__pump(svc_call_t *call);
static void admit__leave_locked(svc_server_t *s, bool admitted, peer_slot_t *peer);
static void shed__note(svc_server_t *s, server_method_t *m, svc_shed_reason_t reason, int calls,
                       const char *peer);
static void server__shutdown_done(svc_tag_t *tag, bool ok);

/* ---------- small helpers ---------- */

void
svc__random_hex(char *out, size_t n_bytes)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char buf[64];

    if (n_bytes > sizeof(buf)) {
        n_bytes = sizeof(buf);
    }
    if (getrandom(buf, n_bytes, 0) != (ssize_t)n_bytes) {
        /* getrandom on Linux does not fail for small sizes once booted; be safe anyway. */
        for (size_t i = 0; i < n_bytes; i++) {
            buf[i] = (unsigned char)rand();
        }
    }
    for (size_t i = 0; i < n_bytes; i++) {
        out[2 * i] = hex[buf[i] >> 4];
        out[2 * i + 1] = hex[buf[i] & 15];
    }
    out[2 * n_bytes] = '\0';
}

/*
 * A request id: 16 hex characters from a per-thread xorshift generator seeded
 * from the kernel. Ids only have to be distinct in logs, not unguessable, and
 * getrandom on every call showed up in profiles.
 */
void
svc__request_id(char *out)
{
    static const char hex[] = "0123456789abcdef";
    static __thread uint64_t state;
    uint64_t x;

    if (state == 0) {
        while (getrandom(&state, sizeof(state), 0) != (ssize_t)sizeof(state) || state == 0) {
        }
    }
    x = state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    state = x;
    x *= 0x2545F4914F6CDD1DULL;
    for (int i = 15; i >= 0; i--) {
        out[i] = hex[x & 15];
        x >>= 4;
    }
    out[16] = '\0';
}

static int64_t
mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t
timespec_to_unix_ms(gpr_timespec ts)
{
    ts = gpr_convert_clock_type(ts, GPR_CLOCK_REALTIME);
    if (ts.tv_sec >= INT64_MAX / 1000 - 1) {
        return INT64_MAX;
    }
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool
slice_eq_str(grpc_slice s, const char *str)
{
    size_t n = strlen(str);
    return GRPC_SLICE_LENGTH(s) == n && memcmp(GRPC_SLICE_START_PTR(s), str, n) == 0;
}

grpc_byte_buffer *
svc__pack_message(const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    grpc_slice slice = grpc_slice_malloc(len);
    grpc_byte_buffer *buf;

    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
    buf = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return buf;
}

ProtobufCMessage *
svc__unpack_message(grpc_byte_buffer *buf, const ProtobufCMessageDescriptor *desc,
                    svc_arena_t *arena)
{
    grpc_byte_buffer_reader reader;
    ProtobufCMessage *msg;
    grpc_slice slice;

    if (!grpc_byte_buffer_reader_init(&reader, buf)) {
        return NULL;
    }
    slice = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    /* A NUL inside a string would cut it short as a C string: refused as unparsable. */
    msg = svc_wire_strings_have_no_nul(desc, GRPC_SLICE_START_PTR(slice), GRPC_SLICE_LENGTH(slice))
              ? protobuf_c_message_unpack(desc, svc_arena_allocator(arena),
                                          GRPC_SLICE_LENGTH(slice), GRPC_SLICE_START_PTR(slice))
              : NULL;
    grpc_slice_unref(slice);
    return msg;
}

void
svc__server_dispatch(svc_server_t *server, svc_task_fn fn, void *arg)
{
    if (server->pool == NULL || svc_pool_submit(server->pool, fn, arg) != 0) {
        fn(arg);
    }
}

/* ---------- the call ---------- */

static void
call__ref(svc_call_t *call)
{
    pthread_mutex_lock(&call->mu);
    call->refs++;
    pthread_mutex_unlock(&call->mu);
}

static void
call__free(svc_call_t *call)
{
    svc_server_t *s = call->server;
    out_msg_t *m = call->out_head;
    bool admitted = call->admitted;
    peer_slot_t *peer = call->peer;

    while (m != NULL) {
        out_msg_t *next = m->next;
        grpc_byte_buffer_destroy(m->buf);
        free(m);
        m = next;
    }
    if (call->inflight != NULL) {
        grpc_byte_buffer_destroy(call->inflight);
    }
    if (call->payload != NULL) {
        grpc_byte_buffer_destroy(call->payload);
    }
    if (call->recv_buf != NULL) {
        grpc_byte_buffer_destroy(call->recv_buf);
    }
    grpc_slice_unref(call->status_msg);
    grpc_slice_unref(call->md_out[0].value);
    grpc_metadata_array_destroy(&call->md);
    grpc_call_unref(call->call);
    svc_arena_destroy(call->arena);
    svc_arena_destroy(call->msg_arena);
    pthread_mutex_destroy(&call->mu);
    free(call);
    pthread_mutex_lock(&s->mu);
    admit__leave_locked(s, admitted, peer);
    if (--s->live_calls == 0 && s->shutdown_begun) {
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
}

static void
call__unref(svc_call_t *call)
{
    int left;

    pthread_mutex_lock(&call->mu);
    left = --call->refs;
    pthread_mutex_unlock(&call->mu);
    if (left == 0) {
        call__free(call);
    }
}

static void
call__cancel_task(void *arg)
{
    svc_call_t *call = arg;
    svc_log_ctx_t saved;
    bool ended;

    pthread_mutex_lock(&call->mu);
    ended = call->ended;
    pthread_mutex_unlock(&call->mu);
    if (!ended) {
        svc_call_log_enter(call, &saved);
        call->cancel_fn(call, call->cancel_arg);
        svc_log_ctx_leave(&saved);
    }
    call__unref(call);
}

/* Caller holds mu. Queues the cancel callback once, holding a ref for it. */
static void
call__maybe_fire_cancel_locked(svc_call_t *call)
{
    if (call->cancel_fn != NULL && !call->cancel_fired && atomic_load(&call->cancelled) &&
        !call->ended) {
        call->cancel_fired = true;
        call->refs++;
        svc__server_dispatch(call->server, call__cancel_task, call);
    }
}

static void
call__close_done(svc_tag_t *tag, bool ok)
{
    svc_call_t *call = container_of(tag, svc_call_t, close_tag);

    (void)ok; /* RECV_CLOSE_ON_SERVER always succeeds; the answer is in `cancelled`. */
    if (call->close_cancelled) {
        pthread_mutex_lock(&call->mu);
        atomic_store(&call->cancelled, true);
        call__maybe_fire_cancel_locked(call);
        pthread_mutex_unlock(&call->mu);
    }
    call__unref(call);
}

static void
call__send_done(svc_tag_t *tag, bool ok)
{
    svc_call_t *call = container_of(tag, svc_call_t, send_tag);

    pthread_mutex_lock(&call->mu);
    if (call->inflight != NULL) {
        grpc_byte_buffer_destroy(call->inflight);
        call->inflight = NULL;
    }
    call->sending = false;
    if (!ok) {
        /* The stream is gone: drop what is queued, but still send status if asked. */
        atomic_store(&call->cancelled, true);
    }
    call__pump(call);
    pthread_mutex_unlock(&call->mu);
    call__unref(call);
}

/*
 * Starts the next send batch if none is in flight. Caller holds mu. A batch
 * carries initial metadata (first time), at most one message, and the status
 * once the call has ended and no message is left behind it.
 */
static void
call__pump(svc_call_t *call)
{
    grpc_op ops[3];
    size_t n = 0;

    if (call->sending || call->status_started) {
        return;
    }
    if (atomic_load(&call->cancelled)) {
        while (call->out_head != NULL) { /* nobody will read them */
            out_msg_t *m = call->out_head;
            call->out_head = m->next;
            grpc_byte_buffer_destroy(m->buf);
            free(m);
        }
        call->out_tail = NULL;
    }
    if (call->out_head == NULL && !call->ended) {
        return;
    }
    memset(ops, 0, sizeof(ops));
    if (!call->md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[n].data.send_initial_metadata.count = 1;
        ops[n].data.send_initial_metadata.metadata = call->md_out;
        n++;
        call->md_sent = true;
    }
    if (call->out_head != NULL) {
        out_msg_t *m = call->out_head;
        call->out_head = m->next;
        if (call->out_head == NULL) {
            call->out_tail = NULL;
        }
        call->inflight = m->buf;
        free(m);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = call->inflight;
        n++;
    }
    if (call->ended && call->out_head == NULL) {
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = call->status;
        ops[n].data.send_status_from_server.status_details = &call->status_msg;
        n++;
        call->status_started = true;
    }
    call->sending = true;
    call->refs++;
    if (grpc_call_start_batch(call->call, ops, n, &call->send_tag, NULL) != GRPC_CALL_OK) {
        /* Only a programming error gets here; keep the books straight. */
        svc_logf(SVC_LOG_ERROR, "cannot start a send batch on %s", call->method->path);
        call->sending = false;
        call->refs--;
    }
}

/*
 * The access line of a call: at debug level (LOG_LEVEL=debug), so that a busy
 * service at info pays nothing per call; calls that fail for a reason the
 * operator must see still log at warn (UNAVAILABLE) or error.
 */
static void
call__log_end(svc_call_t *call, svc_status_t code, const char *msg)
{
    svc_log_level_t level = SVC_LOG_DEBUG;

    svc_rpc_metrics_handled(call->method->metrics, code,
                            (double)(mono_us() - call->start_us) / 1000000.0);
    if (code == SVC_INTERNAL || code == SVC_UNKNOWN || code == SVC_DATA_LOSS) {
        level = SVC_LOG_ERROR;
    } else if (code == SVC_UNAVAILABLE) {
        level = SVC_LOG_WARN;
    }
    if (!svc_log_enabled(level)) {
        return;
    }
    svc_log_call(level, call->method->path, call->request_id, svc_status_name(code),
                 code == SVC_OK ? NULL : msg, (double)(mono_us() - call->start_us) / 1000.0);
}

/* Ends the call: records the status, flushes, drops the handler's ref. */
static void
call__end(svc_call_t *call, svc_status_t code, const char *msg)
{
    pthread_mutex_lock(&call->mu);
    if (call->ended) {
        pthread_mutex_unlock(&call->mu);
        svc_logf(SVC_LOG_ERROR, "call %s ended twice", call->method->path);
        return;
    }
    call->ended = true;
    call->status = (grpc_status_code)svc_status_to_grpc(code);
    call->status_msg = grpc_slice_from_copied_string(msg != NULL ? msg : "");
    call__pump(call);
    pthread_mutex_unlock(&call->mu);
    call__log_end(call, code, msg);
    call__unref(call);
}

static int
call__enqueue(svc_call_t *call, grpc_byte_buffer *buf)
{
    out_msg_t *m = malloc(sizeof(*m));

    if (m == NULL) {
        grpc_byte_buffer_destroy(buf);
        return -1;
    }
    m->next = NULL;
    m->buf = buf;
    if (call->out_tail != NULL) {
        call->out_tail->next = m;
    } else {
        call->out_head = m;
    }
    call->out_tail = m;
    return 0;
}

void
svc_call_reply(svc_call_t *call, const ProtobufCMessage *resp)
{
    grpc_byte_buffer *buf = svc__pack_message(resp);

    pthread_mutex_lock(&call->mu);
    if (!call->ended) {
        (void)call__enqueue(call, buf);
        buf = NULL;
    }
    pthread_mutex_unlock(&call->mu);
    if (buf != NULL) {
        grpc_byte_buffer_destroy(buf);
    }
    call__end(call, SVC_OK, NULL);
}

void
svc_call_fail(svc_call_t *call, const svc_err_t *err)
{
    svc_status_t code = err != NULL && err->code != SVC_OK ? err->code : SVC_INTERNAL;

    call__end(call, code, err != NULL ? err->msg : "internal error");
}

void
svc_call_fail_oom(svc_call_t *call)
{
    call__end(call, SVC_RESOURCE_EXHAUSTED, "out of memory");
}

void *
svc_call_alloc(svc_call_t *call, size_t size)
{
    void *p = svc_arena_alloc(svc_call_arena(call), size);

    if (p == NULL) {
        svc_call_fail_oom(call);
    }
    return p;
}

int
svc_call_write(svc_call_t *call, const ProtobufCMessage *msg)
{
    grpc_byte_buffer *buf;
    int rc = -1;

    if (atomic_load(&call->cancelled)) {
        return -1;
    }
    buf = svc__pack_message(msg);
    pthread_mutex_lock(&call->mu);
    if (!call->ended && !atomic_load(&call->cancelled)) {
        rc = call__enqueue(call, buf);
        buf = NULL;
        call__pump(call);
    }
    pthread_mutex_unlock(&call->mu);
    if (buf != NULL) {
        grpc_byte_buffer_destroy(buf);
    }
    return rc;
}

void
svc_call_finish(svc_call_t *call, const svc_err_t *err)
{
    if (err == NULL || err->code == SVC_OK) {
        call__end(call, SVC_OK, NULL);
    } else {
        call__end(call, err->code, err->msg);
    }
}

const char *
svc_call_method(const svc_call_t *call)
{
    return call->method->path;
}

const char *
svc_call_request_id(const svc_call_t *call)
{
    return call->request_id;
}

void
svc_call_log_enter(const svc_call_t *call, svc_log_ctx_t *saved)
{
    svc_log_ctx_enter(saved, call->method->path, call->request_id);
}

svc_arena_t *
svc_call_arena(svc_call_t *call)
{
    return call->msg_arena != NULL ? call->msg_arena : call->arena;
}

svc_server_t *
svc_call_server(svc_call_t *call)
{
    return call->server;
}

void *
svc_call_grpc(svc_call_t *call)
{
    return call->call;
}

int64_t
svc_call_deadline_ms(const svc_call_t *call)
{
    return timespec_to_unix_ms(call->deadline);
}

bool
svc_call_cancelled(const svc_call_t *call)
{
    return atomic_load(&call->cancelled);
}

void
svc_call_on_cancel(svc_call_t *call, svc_cancel_fn fn, void *arg)
{
    pthread_mutex_lock(&call->mu);
    call->cancel_fn = fn;
    call->cancel_arg = arg;
    call__maybe_fire_cancel_locked(call);
    pthread_mutex_unlock(&call->mu);
}

const char *
svc_call_metadata(svc_call_t *call, const char *key)
{
    for (size_t i = 0; i < call->md.count; i++) {
        if (slice_eq_str(call->md.metadata[i].key, key)) {
            grpc_slice v = call->md.metadata[i].value;
            size_t len = GRPC_SLICE_LENGTH(v);
            char *out = svc_arena_alloc(call->arena, len + 1);
            if (out == NULL) {
                return NULL;
            }
            memcpy(out, GRPC_SLICE_START_PTR(v), len);
            out[len] = '\0';
            return out;
        }
    }
    return NULL;
}

/* Appends the values of one auth property to names (copied into the arena). */
static size_t
call__add_auth_names(svc_call_t *call, const grpc_auth_context *ctx, const char *property,
                     const char **names, size_t n, size_t max)
{
    grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(ctx, property);
    const grpc_auth_property *p;

    while (n < max && (p = grpc_auth_property_iterator_next(&it)) != NULL) {
        char *name = svc_arena_alloc(call->arena, p->value_length + 1);
        if (name == NULL) {
            break;
        }
        memcpy(name, p->value, p->value_length);
        name[p->value_length] = '\0';
        if (strlen(name) != p->value_length) {
            continue; /* a NUL inside a name: never a name we could trust */
        }
        names[n++] = name;
    }
    return n;
}

size_t
svc_call_peer_names(svc_call_t *call, const char **names, size_t max)
{
    grpc_auth_context *ctx = grpc_call_auth_context(call->call);
    size_t n = 0;

    if (ctx == NULL) {
        return 0; /* plaintext */
    }
    /*
     * Authenticated means gRPC verified the peer's certificate chain: only
     * a server that requires and verifies client certificates has one.
     */
    if (grpc_auth_context_peer_is_authenticated(ctx)) {
        n = call__add_auth_names(call, ctx, GRPC_X509_CN_PROPERTY_NAME, names, n, max);
        n = call__add_auth_names(call, ctx, GRPC_PEER_DNS_PROPERTY_NAME, names, n, max);
    }
    grpc_auth_context_release(ctx);
    return n;
}

/* ---------- incoming messages ---------- */

static void call__start_recv(svc_call_t *call);

static void
call__unary_run(svc_call_t *call)
{
    ProtobufCMessage *req;
    svc_err_t err;

    /*
     * A call that waited for a worker past its deadline has already been
     * told DEADLINE_EXCEEDED by its client's side: running it now would do
     * work (a payment, say) that nobody will hear of. So has one its caller
     * cancelled meanwhile. (A nonblocking handler's call comes here at once,
     * so only a deadline that passed on the way catches it.)
     */
    if (timespec_to_unix_ms(call->deadline) <= svc_now_unix_ms()) {
        shed__note(call->server, call->method, SVC_SHED_DEADLINE, 0, NULL);
        call__end(call, SVC_DEADLINE_EXCEEDED, SHED_MESSAGES[SVC_SHED_DEADLINE]);
        return;
    }
    if (atomic_load(&call->cancelled)) {
        shed__note(call->server, call->method, SVC_SHED_CANCELLED, 0, NULL);
        call__end(call, SVC_CANCELLED, SHED_MESSAGES[SVC_SHED_CANCELLED]);
        return;
    }
    if (call->payload == NULL) {
        svc_err_set(&err, SVC_INVALID_ARGUMENT, "request message is missing");
        svc_call_fail(call, &err);
        return;
    }
    req = svc__unpack_message(call->payload, call->method->input, call->arena);
    grpc_byte_buffer_destroy(call->payload);
    call->payload = NULL;
    if (req == NULL) {
        svc_err_set(&err, SVC_INVALID_ARGUMENT, "request could not be parsed as %s",
                    call->method->input->name);
        svc_call_fail(call, &err);
        return;
    }
    call->method->handler.handler(call, req, call->method->user);
}

/* Unary and server stream: the handler, in the call's log context (the call may end in it). */
static void
call__unary_task(void *arg)
{
    svc_log_ctx_t saved;

    svc_call_log_enter(arg, &saved);
    call__unary_run(arg);
    svc_log_ctx_leave(&saved);
}

/* Bidi: one message arrived (the recv ref is now this task's). */
static void
call__bidi_msg_task(void *arg)
{
    svc_call_t *call = arg;
    grpc_byte_buffer *buf;
    ProtobufCMessage *msg;
    svc_log_ctx_t saved;
    bool ended;

    /*
     * Messages of one stream are handled one after another, often on different
     * workers; the mutex makes that order visible (to TSan too, which cannot
     * see through gRPC's own synchronisation).
     */
    pthread_mutex_lock(&call->mu);
    buf = call->recv_buf;
    call->recv_buf = NULL;
    ended = call->ended;
    pthread_mutex_unlock(&call->mu);
    svc_call_log_enter(call, &saved);
    /* As for a unary call: a message taken up after the deadline is not handled (nor read on). */
    if (!ended && timespec_to_unix_ms(call->deadline) <= svc_now_unix_ms()) {
        grpc_byte_buffer_destroy(buf);
        shed__note(call->server, call->method, SVC_SHED_DEADLINE, 0, NULL);
        call__end(call, SVC_DEADLINE_EXCEEDED, SHED_MESSAGES[SVC_SHED_DEADLINE]);
        svc_log_ctx_leave(&saved);
        call__unref(call);
        return;
    }
    msg = svc__unpack_message(buf, call->method->input, call->msg_arena);
    grpc_byte_buffer_destroy(buf);
    if (msg == NULL) {
        svc_err_t err;
        svc_err_set(&err, SVC_INVALID_ARGUMENT, "request could not be parsed as %s",
                    call->method->input->name);
        svc_call_fail(call, &err);
    } else {
        call->method->handler.handler(call, msg, call->method->user);
    }
    pthread_mutex_lock(&call->mu);
    svc_arena_reset(call->msg_arena);
    ended = call->ended;
    pthread_mutex_unlock(&call->mu);
    if (!ended && !atomic_load(&call->cancelled)) {
        call__start_recv(call);
    }
    svc_log_ctx_leave(&saved);
    call__unref(call);
}

static void
call__bidi_half_close_task(void *arg)
{
    svc_call_t *call = arg;
    svc_log_ctx_t saved;

    svc_call_log_enter(call, &saved);
    if (call->method->handler.on_half_close != NULL) {
        call->method->handler.on_half_close(call, call->method->user);
    } else {
        svc_call_finish(call, NULL);
    }
    svc_log_ctx_leave(&saved);
    call__unref(call);
}

/* The stream broke while reading; the handler is not running, so we end the call. */
static void
call__bidi_broken_task(void *arg)
{
    svc_call_t *call = arg;
    svc_err_t err;

    svc_err_set(&err, SVC_CANCELLED, "stream cancelled");
    svc_call_fail(call, &err);
    call__unref(call);
}

static void
call__recv_done(svc_tag_t *tag, bool ok)
{
    svc_call_t *call = container_of(tag, svc_call_t, recv_tag);
    bool got;

    /*
     * Under the mutex as in call__bidi_msg_task, which cleared it before
     * starting this read: gRPC's own ordering is invisible to TSan (a data
     * race report, once in five TSan runs of libsvc.runtime).
     */
    pthread_mutex_lock(&call->mu);
    got = call->recv_buf != NULL;
    pthread_mutex_unlock(&call->mu);
    if (ok && got) {
        svc__server_dispatch(call->server, call__bidi_msg_task, call);
    } else if (ok) {
        svc__server_dispatch(call->server, call__bidi_half_close_task, call);
    } else {
        svc__server_dispatch(call->server, call__bidi_broken_task, call);
    }
}

static void
call__start_recv(svc_call_t *call)
{
    grpc_op op;

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &call->recv_buf;
    call__ref(call);
    if (grpc_call_start_batch(call->call, &op, 1, &call->recv_tag, NULL) != GRPC_CALL_OK) {
        call__unref(call);
        svc_err_t err;
        svc_err_set(&err, SVC_INTERNAL, "cannot read from the stream");
        svc_call_fail(call, &err);
    }
}

/* ---------- admission: calls in flight, per server and per peer ---------- */

/*
 * Who a call comes from, for MAX_IN_FLIGHT_PER_PEER: its address without
 * the port ("ipv4:10.1.2.3", "ipv6:%5B2001:db8::1%5D"), so that every
 * connection of one host is one peer. With mTLS the verified client
 * certificate's identity (its common name, "cert:reservation-svc") is the
 * key instead: one client on many addresses is still one peer, and many
 * behind one proxy are not. False when the call names no peer (then only
 * the server's bound applies).
 */
static bool
peer__key(grpc_call *call, char *key, size_t len)
{
    grpc_auth_context *ctx = grpc_call_auth_context(call);
    char *peer;

    if (ctx != NULL) {
        bool named = false;
        if (grpc_auth_context_peer_is_authenticated(ctx)) {
            grpc_auth_property_iterator it = grpc_auth_context_peer_identity(ctx);
            const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
            if (p != NULL && p->value_length > 0) {
                snprintf(key, len, "cert:%.*s", (int)p->value_length, p->value);
                named = true;
            }
        }
        grpc_auth_context_release(ctx);
        if (named) {
            return true;
        }
    }
    peer = grpc_call_get_peer(call);

    if (peer == NULL) {
        return false;
    }
    if (strncmp(peer, "ipv4:", 5) == 0 || strncmp(peer, "ipv6:", 5) == 0) {
        char *colon = strrchr(peer + 5, ':');
        if (colon != NULL) {
            *colon = '\0';
        }
    }
    snprintf(key, len, "%s", peer);
    gpr_free(peer);
    return key[0] != '\0';
}

static size_t
peer__bucket(const char *key)
{
    uint64_t h = 1469598103934665603ULL;

    for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++) {
        h = (h ^ *p) * 1099511628211ULL;
    }
    return (size_t)(h % PEER_BUCKETS);
}

/*
 * Counts a new call in: returns -1 when it may run (*peer_out is its peer's
 * slot, or NULL), else the svc_shed_reason_t it is refused for, with *calls
 * the calls in flight that refused it (the server's or its peer's) and key
 * its peer ("" when not counted). On the CQ thread, before anything is
 * allocated for the call.
 */
static int
admit__enter(svc_server_t *s, grpc_call *call, peer_slot_t **peer_out, int *calls,
             char key[PEER_KEY_MAX])
{
    bool per_peer = s->opts.max_in_flight_per_peer > 0 && peer__key(call, key, PEER_KEY_MAX);
    peer_slot_t *slot = NULL;
    int reason = -1;

    if (!per_peer) {
        key[0] = '\0';
    }
    *peer_out = NULL;
    pthread_mutex_lock(&s->mu);
    *calls = s->in_flight;
    if (per_peer) {
        size_t b = peer__bucket(key);
        for (slot = s->peers[b]; slot != NULL && strcmp(slot->key, key) != 0; slot = slot->next) {
        }
        if (slot != NULL && slot->calls >= s->opts.max_in_flight_per_peer) {
            reason = SVC_SHED_PEER;
            *calls = slot->calls;
        } else if (slot == NULL && s->in_flight < s->opts.max_in_flight) {
            size_t n = strlen(key) + 1;
            if ((slot = malloc(sizeof(*slot) + n)) != NULL) { /* else: not counted for its peer */
                memcpy(slot->key, key, n);
                slot->calls = 0;
                slot->next = s->peers[b];
                s->peers[b] = slot;
            }
        }
    }
    if (reason < 0 && s->in_flight >= s->opts.max_in_flight) {
        reason = SVC_SHED_IN_FLIGHT;
    }
    if (reason < 0) {
        s->in_flight++;
        if (slot != NULL) {
            slot->calls++;
            *peer_out = slot;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return reason;
}

/* The call is over (freed): counted out. Caller holds the server's mu. */
static void
admit__leave_locked(svc_server_t *s, bool admitted, peer_slot_t *peer)
{
    if (admitted) {
        s->in_flight--;
    }
    if (peer != NULL && --peer->calls == 0) {
        peer_slot_t **pp = &s->peers[peer__bucket(peer->key)];
        while (*pp != peer) {
            pp = &(*pp)->next;
        }
        *pp = peer->next;
        free(peer);
    }
}

/*
 * A refused or dropped call: counted, and said in the log at most
 * SHED_LOG_BURST times a second (with how many like it were not).
 */
static void
shed__note(svc_server_t *s, server_method_t *m, svc_shed_reason_t reason, int calls,
           const char *peer)
{
    static svc_log_limit_t limit = SVC_LOG_LIMIT_INIT(SHED_LOG_BURST);

    svc_rpc_metrics_shed(m->metrics, reason);
    if (reason == SVC_SHED_DEADLINE || reason == SVC_SHED_CANCELLED) {
        return; /* their caller has gone: nothing for the operator */
    }
    if (reason == SVC_SHED_QUEUE) {
        svc_logf_limited(&limit, SVC_LOG_WARN,
                         "refusing %s: %d calls wait for a worker thread already (max_queued)",
                         m->path, s->opts.max_queued);
    } else if (reason == SVC_SHED_PEER) {
        svc_logf_limited(&limit, SVC_LOG_WARN,
                         "refusing %s: %.200s has %d calls in flight (MAX_IN_FLIGHT_PER_PEER %d)",
                         m->path, peer, calls, s->opts.max_in_flight_per_peer);
    } else {
        svc_logf_limited(&limit, SVC_LOG_WARN, "refusing %s: %d calls in flight (MAX_IN_FLIGHT %d)",
                         m->path, calls, s->opts.max_in_flight);
    }
}

/* Answers a call that was not admitted: RESOURCE_EXHAUSTED, and forgets it. CQ thread. */
static void
shed__refuse(pending_call_t *p, svc_shed_reason_t reason, int calls, const char *peer)
{
    server_method_t *m = p->method;

    svc_rpc_metrics_started(m->metrics);
    svc_rpc_metrics_handled(m->metrics, SVC_RESOURCE_EXHAUSTED, 0.0);
    shed__note(p->scq->server, m, reason, calls, peer);
    if (svc_log_enabled(SVC_LOG_DEBUG)) { /* an access line, like call__log_end's */
        svc_log_call(SVC_LOG_DEBUG, m->path, NULL, "RESOURCE_EXHAUSTED", SHED_MESSAGES[reason],
                     0.0);
    }
    /* Sends the status (trailers) on the stream and drops it: no batch, no tag, no memory. */
    grpc_call_cancel_with_status(p->call, GRPC_STATUS_RESOURCE_EXHAUSTED, SHED_MESSAGES[reason],
                                 NULL);
    grpc_call_unref(p->call);
    grpc_metadata_array_destroy(&p->md);
    if (p->payload != NULL) {
        grpc_byte_buffer_destroy(p->payload);
    }
}

/*
 * Hands a new unary or server-stream call to a worker; refuses it when the
 * pool's queue is full (RESOURCE_EXHAUSTED: a worker would take it too late
 * to be of use). CQ thread.
 */
static void
call__dispatch_new(svc_call_t *call)
{
    svc_server_t *s = call->server;
    int rc = s->pool != NULL ? svc_pool_try_submit(s->pool, call__unary_task, call) : -1;

    if (rc == SVC_POOL_FULL) {
        shed__note(s, call->method, SVC_SHED_QUEUE, 0, NULL);
        call__end(call, SVC_RESOURCE_EXHAUSTED, SHED_MESSAGES[SVC_SHED_QUEUE]);
    } else if (rc != 0) {
        call__unary_task(call); /* the pool is gone (shutdown) or out of memory: here, then */
    }
}

/* ---------- accepting calls ---------- */

static void pending__done(svc_tag_t *tag, bool ok);

static void
pending__arm(pending_call_t *p)
{
    svc_server_t *server = p->scq->server;

    p->call = NULL;
    p->payload = NULL;
    grpc_metadata_array_init(&p->md);
    /* Under mu: shutdown must not destroy the server while we ask it for a call. */
    pthread_mutex_lock(&server->mu);
    if (server->stop_requests ||
        grpc_server_request_registered_call(
            server->server, p->method->reg, &p->call, &p->deadline, &p->md,
            p->method->handler.kind == SVC_METHOD_BIDI_STREAM ? NULL : &p->payload, p->scq->cq,
            p->scq->cq, &p->tag) != GRPC_CALL_OK) {
        grpc_metadata_array_destroy(&p->md);
        free(p);
    }
    pthread_mutex_unlock(&server->mu);
}

static void
request_id_from(svc_call_t *call)
{
    for (size_t i = 0; i < call->md.count; i++) {
        if (slice_eq_str(call->md.metadata[i].key, "x-request-id")) {
            grpc_slice v = call->md.metadata[i].value;
            size_t len = GRPC_SLICE_LENGTH(v);
            bool good = len > 0 && len <= REQUEST_ID_MAX;
            for (size_t j = 0; good && j < len; j++) {
                unsigned char c = GRPC_SLICE_START_PTR(v)[j];
                good = c > 0x20 && c < 0x7f && c != '"' && c != '\\';
            }
            if (good) {
                memcpy(call->request_id, GRPC_SLICE_START_PTR(v), len);
                call->request_id[len] = '\0';
                return;
            }
        }
    }
    svc__request_id(call->request_id);
}

/*
 * A new call on a registered method (CQ thread): admit it (or refuse it at
 * once), set it up and hand it to a worker.
 */
static void
call__accept(pending_call_t *p)
{
    svc_server_t *s = p->scq->server;
    peer_slot_t *peer = NULL;
    svc_call_t *call;
    grpc_op op;

    if (!p->method->exempt) {
        char key[PEER_KEY_MAX];
        int calls, reason = admit__enter(s, p->call, &peer, &calls, key);
        if (reason >= 0) {
            shed__refuse(p, (svc_shed_reason_t)reason, calls, key);
            return;
        }
    }
    call = calloc(1, sizeof(*call));
    if (call == NULL || (call->arena = svc_arena_create_sized(CALL_ARENA_FIRST)) == NULL) {
        free(call);
        if (!p->method->exempt) {
            pthread_mutex_lock(&s->mu);
            admit__leave_locked(s, true, peer);
            pthread_mutex_unlock(&s->mu);
        }
        grpc_call_cancel_with_status(p->call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory",
                                     NULL);
        grpc_call_unref(p->call);
        grpc_metadata_array_destroy(&p->md);
        if (p->payload != NULL) {
            grpc_byte_buffer_destroy(p->payload);
        }
        return;
    }
    call->server = s;
    call->admitted = !p->method->exempt;
    call->peer = peer;
    pthread_mutex_lock(&s->mu);
    s->live_calls++;
    pthread_mutex_unlock(&s->mu);
    call->method = p->method;
    call->call = p->call;
    call->deadline = p->deadline;
    call->md = p->md;
    call->payload = p->payload;
    call->start_us = mono_us();
    svc_rpc_metrics_started(call->method->metrics);
    call->close_tag.done = call__close_done;
    call->send_tag.done = call__send_done;
    call->recv_tag.done = call__recv_done;
    call->status_msg = grpc_empty_slice();
    pthread_mutex_init(&call->mu, NULL);
    atomic_init(&call->cancelled, false);
    request_id_from(call);
    call->md_out[0].key = grpc_slice_from_static_string("x-request-id");
    call->md_out[0].value = grpc_slice_from_copied_string(call->request_id);
    call->refs = 2; /* the handler's, and the close batch's */

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &call->close_cancelled;
    if (grpc_call_start_batch(call->call, &op, 1, &call->close_tag, NULL) != GRPC_CALL_OK) {
        call->refs--;
    }

    if (call->method->handler.kind == SVC_METHOD_BIDI_STREAM) {
        call->msg_arena = svc_arena_create();
        if (call->msg_arena == NULL) {
            svc_err_t err;
            svc_err_set(&err, SVC_RESOURCE_EXHAUSTED, "out of memory");
            svc_call_fail(call, &err);
            return;
        }
        call__start_recv(call);
    } else if (call->method->handler.nonblocking) {
        call__unary_task(call);
    } else {
        call__dispatch_new(call);
    }
}

static void
pending__done(svc_tag_t *tag, bool ok)
{
    pending_call_t *p = container_of(tag, pending_call_t, tag);

    if (!ok) { /* the server is shutting down */
        grpc_metadata_array_destroy(&p->md);
        free(p);
        return;
    }
    call__accept(p);
    pending__arm(p);
}

static void unknown__arm(server_cq_t *scq);

static void
unknown__done(svc_tag_t *tag, bool ok)
{
    unknown_call_t *u = container_of(tag, unknown_call_t, tag);
    grpc_op ops[3];
    char *method;

    if (u->answering || !ok) { /* our answer went out, or shutdown: done with it */
        if (u->call != NULL) {
            grpc_call_unref(u->call);
        }
        grpc_slice_unref(u->status_msg);
        grpc_call_details_destroy(&u->details);
        grpc_metadata_array_destroy(&u->md);
        free(u);
        return;
    }
    unknown__arm(u->scq);
    method = grpc_slice_to_c_string(u->details.method);
    if (svc_log_enabled(SVC_LOG_DEBUG)) { /* an access line, like call__log_end's */
        svc_log_call(SVC_LOG_DEBUG, method, NULL, "UNIMPLEMENTED", "unknown method", 0.0);
    }
    u->status_msg = grpc_slice_from_copied_string("unknown method");
    gpr_free(method);
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[1].data.send_status_from_server.status = GRPC_STATUS_UNIMPLEMENTED;
    ops[1].data.send_status_from_server.status_details = &u->status_msg;
    ops[2].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[2].data.recv_close_on_server.cancelled = &u->cancelled;
    u->answering = 1;
    if (grpc_call_start_batch(u->call, ops, 3, &u->tag, NULL) != GRPC_CALL_OK) {
        unknown__done(&u->tag, false);
    }
}

static void
unknown__arm(server_cq_t *scq)
{
    unknown_call_t *u = calloc(1, sizeof(*u));

    if (u == NULL) {
        return;
    }
    u->tag.done = unknown__done;
    u->scq = scq;
    u->status_msg = grpc_empty_slice();
    grpc_call_details_init(&u->details);
    grpc_metadata_array_init(&u->md);
    pthread_mutex_lock(&scq->server->mu);
    if (scq->server->stop_requests ||
        grpc_server_request_call(scq->server->server, &u->call, &u->details, &u->md, scq->cq,
                                 scq->cq, &u->tag) != GRPC_CALL_OK) {
        grpc_call_details_destroy(&u->details);
        grpc_metadata_array_destroy(&u->md);
        free(u);
    }
    pthread_mutex_unlock(&scq->server->mu);
}

static void *
cq__thread(void *arg)
{
    server_cq_t *scq = arg;

    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(scq->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) {
            break;
        }
        if (ev.type == GRPC_OP_COMPLETE) {
            svc_tag_t *tag = ev.tag;
            tag->done(tag, ev.success != 0);
        }
    }
    return NULL;
}

/* ---------- the server ---------- */

static int
ncpu(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

svc_server_t *
svc_server_create(const svc_server_opts_t *opts, svc_err_t *err)
{
    svc_server_t *s = calloc(1, sizeof(*s));

    if (s == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    s->opts = *opts;
    s->service_name = strdup(opts->service_name != NULL ? opts->service_name : "svc");
    s->listen_addr = strdup(opts->listen_addr != NULL ? opts->listen_addr : "127.0.0.1:0");
    if (s->opts.cq_threads <= 0) {
        s->opts.cq_threads = ncpu();
    }
    if (s->opts.workers <= 0) {
        s->opts.workers = 4 * ncpu();
    }
    if (s->opts.max_workers <= 0) {
        s->opts.max_workers = 256;
    }
    if (s->opts.max_workers < s->opts.workers) {
        s->opts.max_workers = s->opts.workers;
    }
    if (s->opts.grace_ms <= 0) {
        s->opts.grace_ms = 10000;
    }
    if (s->opts.max_recv_bytes <= 0) {
        s->opts.max_recv_bytes = 1 << 20;
    }
    if (s->opts.max_in_flight <= 0) {
        s->opts.max_in_flight = SVC_DEFAULT_MAX_IN_FLIGHT;
    }
    if (s->opts.max_in_flight_per_peer < 0) {
        s->opts.max_in_flight_per_peer = 0;
    }
    if (s->opts.max_queued <= 0) {
        s->opts.max_queued = s->opts.max_in_flight;
    }
    if (s->opts.max_streams <= 0) {
        s->opts.max_streams =
            s->opts.max_in_flight < INT32_MAX / 2 ? 2 * s->opts.max_in_flight : INT32_MAX;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->shutdown_tag.done = server__shutdown_done;
    grpc_init();

    grpc_arg args[3];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = s->opts.max_recv_bytes;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_ALLOW_REUSEPORT; /* a second server on our port must fail, not share */
    args[1].value.integer = 0;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_MAX_CONCURRENT_STREAMS;
    args[2].value.integer = s->opts.max_streams;
    grpc_channel_args chargs = {3, args};
    s->server = grpc_server_create(&chargs, NULL);
    s->health = svc__health_create();
    /* The pool and timers exist from the start, so services can use them while registering. */
    s->pool = svc_pool_create(s->opts.workers, s->opts.max_workers, err);
    if (s->pool != NULL) {
        svc_pool_set_max_queued(s->pool, s->opts.max_queued);
    }
    s->timers = s->pool != NULL ? svc_timers_create(s->pool, err) : NULL;
    if (s->server == NULL || s->health == NULL || s->timers == NULL ||
        svc__health_register(s, s->health, err) != 0 ||
        (s->reflection =
             svc__reflection_register(s, opts->descriptors, opts->descriptors_len, err)) == NULL) {
        if (err != NULL && err->code == SVC_OK) {
            svc_err_set(err, SVC_INTERNAL, "cannot create the server");
        }
        svc_server_destroy(s);
        return NULL;
    }
    return s;
}

static int
server__add_service_name(svc_server_t *s, const char *name)
{
    for (int i = 0; i < s->n_services; i++) {
        if (strcmp(s->services[i], name) == 0) {
            return 0;
        }
    }
    char **grown = realloc(s->services, (size_t)(s->n_services + 1) * sizeof(*grown));
    if (grown == NULL) {
        return -1;
    }
    s->services = grown;
    s->services[s->n_services] = strdup(name);
    return s->services[s->n_services++] == NULL ? -1 : 0;
}

int
svc_server_add_method(svc_server_t *s, const char *path, const ProtobufCMessageDescriptor *input,
                      const ProtobufCMessageDescriptor *output, const svc_handler_t *handler,
                      void *user, svc_err_t *err)
{
    server_method_t *m;
    server_method_t **grown;
    const char *slash;

    if (s->started) {
        svc_err_set(err, SVC_FAILED_PRECONDITION, "methods must be added before start");
        return -1;
    }
    if (path == NULL || path[0] != '/' || (slash = strchr(path + 1, '/')) == NULL ||
        handler == NULL || handler->handler == NULL) {
        svc_err_set(err, SVC_INVALID_ARGUMENT, "bad method registration");
        return -1;
    }
    m = calloc(1, sizeof(*m));
    grown = realloc(s->methods, (size_t)(s->n_methods + 1) * sizeof(*grown));
    if (m == NULL || grown == NULL) {
        free(m);
        if (grown != NULL) {
            s->methods = grown;
        }
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    s->methods = grown;
    m->path = strdup(path);
    m->input = input;
    m->output = output;
    m->handler = *handler;
    m->user = user;
    /*
     * Only a health Check: an orchestrator must see the service alive during
     * a flood. Watch and reflection are streams that stay open; exempt, they
     * would let a client hold memory without bound past MAX_IN_FLIGHT.
     */
    m->exempt = strcmp(path, "/grpc.health.v1.Health/Check") == 0;
    m->metrics = svc_rpc_metrics(true, path,
                                 handler->kind == SVC_METHOD_UNARY           ? "unary"
                                 : handler->kind == SVC_METHOD_SERVER_STREAM ? "server_stream"
                                                                             : "bidi_stream");
    m->reg = grpc_server_register_method(s->server, path, NULL,
                                         handler->kind == SVC_METHOD_BIDI_STREAM
                                             ? GRPC_SRM_PAYLOAD_NONE
                                             : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
                                         0);
    s->methods[s->n_methods++] = m;
    if (m->reg == NULL || m->path == NULL) {
        svc_err_set(err, SVC_INVALID_ARGUMENT, "cannot register %s (registered twice?)", path);
        return -1;
    }
    char service[256];
    size_t len = (size_t)(slash - path - 1);
    if (len >= sizeof(service)) {
        len = sizeof(service) - 1;
    }
    memcpy(service, path + 1, len);
    service[len] = '\0';
    if (server__add_service_name(s, service) != 0) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    return 0;
}

int
svc_server_add_service(svc_server_t *s, const ProtobufCServiceDescriptor *desc,
                       const svc_handler_t *handlers, size_t n_handlers, void *user, svc_err_t *err)
{
    if (n_handlers != desc->n_methods) {
        svc_err_set(err, SVC_INTERNAL, "%s has %u methods, %zu handlers were given", desc->name,
                    desc->n_methods, n_handlers);
        return -1;
    }
    for (unsigned i = 0; i < desc->n_methods; i++) {
        if (handlers[i].method == NULL || strcmp(handlers[i].method, desc->methods[i].name) != 0) {
            svc_err_set(err, SVC_INTERNAL, "method %u of %s is %s, its handler is for %s", i,
                        desc->name, desc->methods[i].name,
                        handlers[i].method != NULL ? handlers[i].method : "(unnamed)");
            return -1;
        }
    }
    for (unsigned i = 0; i < desc->n_methods; i++) {
        char path[512];
        snprintf(path, sizeof(path), "/%s/%s", desc->name, desc->methods[i].name);
        if (svc_server_add_method(s, path, desc->methods[i].input, desc->methods[i].output,
                                  &handlers[i], user, err) != 0) {
            return -1;
        }
    }
    return 0;
}

int
svc__server_service_count(const svc_server_t *s)
{
    return s->n_services;
}

const char *
svc__server_service_name(const svc_server_t *s, int i)
{
    return s->services[i];
}

/* How the server speaks, for its "listening" line. */
static const char *
server__transport(const svc_tls_opts_t *tls)
{
    if (tls == NULL || tls->cert_file == NULL || tls->cert_file[0] == '\0') {
        return "plaintext";
    }
    return tls->client_ca_file != NULL && tls->client_ca_file[0] != '\0' ? "mtls" : "tls";
}

int
svc_server_start(svc_server_t *s, svc_err_t *err)
{
    grpc_server_credentials *creds;

    s->cqs = calloc((size_t)s->opts.cq_threads, sizeof(*s->cqs));
    if (s->cqs == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    for (int i = 0; i < s->opts.cq_threads; i++) {
        s->cqs[i].server = s;
        s->cqs[i].cq = grpc_completion_queue_create_for_next(NULL);
        grpc_server_register_completion_queue(s->server, s->cqs[i].cq, NULL);
        s->n_cqs++;
    }
    creds = svc__tls_server_credentials(s->opts.tls, err);
    if (creds == NULL) {
        return -1;
    }
    s->port = grpc_server_add_http2_port(s->server, s->listen_addr, creds);
    grpc_server_credentials_release(creds);
    if (s->port <= 0) {
        svc_err_set(err, SVC_UNAVAILABLE, "cannot listen on %s (address in use or invalid)",
                    s->listen_addr);
        return -1;
    }
    grpc_server_start(s->server);
    s->started = true;
    for (int i = 0; i < s->n_cqs; i++) {
        server_cq_t *scq = &s->cqs[i];
        for (int m = 0; m < s->n_methods; m++) {
            for (int k = 0; k < REQUESTS_PER_METHOD; k++) {
                pending_call_t *p = calloc(1, sizeof(*p));
                if (p == NULL) {
                    break;
                }
                p->tag.done = pending__done;
                p->scq = scq;
                p->method = s->methods[m];
                pending__arm(p);
            }
        }
        for (int k = 0; k < REQUESTS_UNKNOWN; k++) {
            unknown__arm(scq);
        }
        if (pthread_create(&scq->thread, NULL, cq__thread, scq) != 0) {
            svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "cannot start completion-queue threads");
            return -1; /* destroy will shut the server down and join those started */
        }
    }
    svc__health_set(s->health, "", true);
    for (int i = 0; i < s->n_services; i++) {
        svc__health_set(s->health, s->services[i], true);
    }
    if (s->opts.metrics_addr != NULL && s->opts.metrics_addr[0] != '\0') {
        char addr[64];
        if (svc_metrics_serve(s->opts.metrics_addr, err) != 0) {
            return -1;
        }
        s->metrics = true;
        snprintf(addr, sizeof(addr), "%d", svc_metrics_port());
        svc_log_kv(SVC_LOG_INFO, "metrics served", "addr", s->opts.metrics_addr, "port", addr,
                   NULL);
    }
    svc_log_kv(SVC_LOG_INFO, "listening", "addr", s->listen_addr, "transport",
               server__transport(s->opts.tls), NULL);
    return 0;
}

int
svc_server_port(const svc_server_t *s)
{
    return s->port;
}

svc_pool_t *
svc_server_pool(svc_server_t *s)
{
    return s->pool;
}

svc_timers_t *
svc_server_timers(svc_server_t *s)
{
    return s->timers;
}

void
svc_server_set_serving(svc_server_t *s, const char *service, bool serving)
{
    svc__health_set(s->health, service, serving);
}

void
svc_server_prepare_process(void)
{
    if (getenv("MALLOC_ARENA_MAX") == NULL) {
        int n = ncpu();
        (void)mallopt(M_ARENA_MAX, n < 2 ? 2 : n);
    }
    svc_server_block_signals();
}

void
svc_server_block_signals(void)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int
svc_server_wait_for_signal(svc_server_t *s)
{
    sigset_t set;
    int sig = 0;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    while (sigwait(&set, &sig) != 0) {
    }
    svc_log_kv(SVC_LOG_INFO, "shutting down", "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT",
               NULL);
    (void)s;
    return sig;
}

static void
server__shutdown_done(svc_tag_t *tag, bool ok)
{
    svc_server_t *s = container_of(tag, svc_server_t, shutdown_tag);

    (void)ok;
    pthread_mutex_lock(&s->mu);
    s->shutdown_done = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/*
 * Waits for the shutdown notification until deadline (CLOCK_REALTIME ms; <0
 * forever). With until_idle, returns early once no call is left: gRPC would
 * otherwise also wait for idle client connections to go away.
 */
static bool
server__wait_shutdown(svc_server_t *s, int64_t deadline_ms, bool until_idle)
{
    bool done;

    pthread_mutex_lock(&s->mu);
    while (!s->shutdown_done && !(until_idle && s->live_calls == 0)) {
        if (deadline_ms < 0) {
            pthread_cond_wait(&s->cv, &s->mu);
            continue;
        }
        struct timespec ts = {deadline_ms / 1000, (deadline_ms % 1000) * 1000000};
        if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) != 0 && !s->shutdown_done) {
            break;
        }
    }
    done = s->shutdown_done;
    pthread_mutex_unlock(&s->mu);
    return done;
}

void
svc_server_shutdown(svc_server_t *s)
{
    int64_t started = svc_now_unix_ms();

    pthread_mutex_lock(&s->mu);
    if (s->shutdown_begun) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    s->shutdown_begun = true;
    pthread_mutex_unlock(&s->mu);

    if (s->started) {
        svc__health_shutdown(s->health);
        grpc_server_shutdown_and_notify(s->server, s->cqs[0].cq, &s->shutdown_tag);
        int64_t grace_end = started + s->opts.grace_ms;
        bool done = server__wait_shutdown(s, grace_end, true);
        /* Idle: give calls that arrived just before the shutdown a moment to show up. */
        while (!done && svc_now_unix_ms() < grace_end &&
               !(done = server__wait_shutdown(s, svc_now_unix_ms() + 100, false))) {
            pthread_mutex_lock(&s->mu);
            bool idle = s->live_calls == 0;
            pthread_mutex_unlock(&s->mu);
            if (idle) {
                break;
            }
            done = server__wait_shutdown(s, grace_end, true);
        }
        if (!done) {
            pthread_mutex_lock(&s->mu);
            int left = s->live_calls;
            pthread_mutex_unlock(&s->mu);
            if (left > 0) {
                svc_logf(SVC_LOG_WARN, "grace period of %d ms over, cancelling %d calls",
                         s->opts.grace_ms, left);
            }
            /* Cancels what is left and closes idle connections. */
            grpc_server_cancel_all_calls(s->server);
            server__wait_shutdown(s, -1, false);
        }
    }
    /* Handlers still running end their (cancelled) calls; completions still flow. */
    svc_pool_destroy(s->pool);
    s->pool = NULL;
    svc_timers_destroy(s->timers);
    s->timers = NULL;
    pthread_mutex_lock(&s->mu);
    s->stop_requests = true;
    pthread_mutex_unlock(&s->mu);
    grpc_server_destroy(s->server);
    s->server = NULL;
    for (int i = 0; i < s->n_cqs; i++) {
        grpc_completion_queue_shutdown(s->cqs[i].cq);
    }
    for (int i = 0; i < s->n_cqs; i++) {
        if (s->started) {
            pthread_join(s->cqs[i].thread, NULL);
        } else {
            while (grpc_completion_queue_next(s->cqs[i].cq, gpr_inf_past(GPR_CLOCK_REALTIME), NULL)
                       .type != GRPC_QUEUE_SHUTDOWN) {
            }
        }
        grpc_completion_queue_destroy(s->cqs[i].cq);
    }
    s->n_cqs = 0;
    s->stopped = true;
    svc_logf(SVC_LOG_INFO, "stopped after %lld ms", (long long)(svc_now_unix_ms() - started));
}

void
svc_server_destroy(svc_server_t *s)
{
    if (s == NULL) {
        return;
    }
    if (s->server != NULL) {
        svc_server_shutdown(s);
    }
    if (s->metrics) {
        svc_metrics_stop();
    }
    svc__reflection_destroy(s->reflection);
    svc__health_destroy(s->health);
    for (int i = 0; i < s->n_methods; i++) {
        free(s->methods[i]->path);
        free(s->methods[i]);
    }
    free(s->methods);
    for (int i = 0; i < s->n_services; i++) {
        free(s->services[i]);
    }
    free(s->services);
    free(s->cqs);
    free(s->service_name);
    free(s->listen_addr);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
    grpc_shutdown();
}
