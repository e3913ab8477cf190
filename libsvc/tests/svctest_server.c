/*
 * svctest_server.c: a server with the test-only svctest.v1.TestService, run by
 * libsvc's integration tests (and by buf curl) to drive the runtime for real.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "svc/client.h"
#include "svc/config.h"
#include "svc/log.h"
#include "svc/server.h"
#include "svc/timer.h"
#include "svctest/v1/svctest.pb-c.h"

extern const unsigned char svctest_descriptor_set[];
extern const size_t svctest_descriptor_set_len;

static atomic_llong slow_started, slow_finished, slow_cancelled, chat_messages;
static atomic_bool gate_open = true;

#define GATE_POLL_MS 20
static char self_target[128];

static void
echo(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Svctest__V1__EchoRequest *req = (const void *)msg;
    Svctest__V1__EchoResponse resp = SVCTEST__V1__ECHO_RESPONSE__INIT;
    svc_err_t err;

    (void)user;
    if (req->hops > 0) {
        /* A child call: deadline, cancellation and request id come from this call. */
        Svctest__V1__EchoRequest inner = SVCTEST__V1__ECHO_REQUEST__INIT;
        ProtobufCMessage *out;
        svc_call_opts_t opts = {.parent = call, .timeout_ms = 60000};
        svc_client_t *client = svc_client_get(self_target, &err);

        inner.message = req->message;
        inner.hops = req->hops - 1;
        if (client == NULL || svc_client_unary(client, "/svctest.v1.TestService/Echo", &inner.base,
                                               &svctest__v1__echo_response__descriptor,
                                               svc_call_arena(call), &out, &opts, &err) != 0) {
            svc_call_fail(call, &err);
            return;
        }
        svc_call_reply(call, out);
        return;
    }
    resp.message = req->message;
    resp.request_id = (char *)svc_call_request_id(call);
    resp.deadline_ms = svc_call_deadline_ms(call) == INT64_MAX ? 0 : svc_call_deadline_ms(call);
    resp.served_by = self_target;
    const char *peer_names[8];
    resp.n_peer_names = svc_call_peer_names(call, peer_names, 8);
    resp.peer_names = (char **)peer_names;
    if (req->metadata_key != NULL && req->metadata_key[0] != '\0') {
        const char *value = svc_call_metadata(call, req->metadata_key);
        resp.metadata_value = (char *)(value != NULL ? value : "");
    }
    svc_call_reply(call, &resp.base);
}

/* A parked Slow call; it lives in the call's arena, so it lives exactly as long as the call. */
typedef struct {
    svc_call_t *call;
    svc_timer_t timer;
    int64_t started_ms, delay_ms;
    bool gated;
} parked_slow_t;

/* A Slow call is over once its delay passed or, gated, once the gate is open. */
static bool
slow_done(int64_t started_ms, int64_t delay_ms, bool gated)
{
    return svc_now_mono_ms() - started_ms >= delay_ms || (gated && atomic_load(&gate_open));
}

static void
slow_reply(svc_call_t *call, int64_t started_ms)
{
    Svctest__V1__SlowResponse resp = SVCTEST__V1__SLOW_RESPONSE__INIT;

    resp.waited_ms = svc_now_mono_ms() - started_ms;
    atomic_fetch_add(&slow_finished, 1);
    svc_call_reply(call, &resp.base);
}

static void
slow_cancelled_end(svc_call_t *call)
{
    svc_err_t err;

    atomic_fetch_add(&slow_cancelled, 1);
    svc_err_set(&err, SVC_CANCELLED, "slow call cancelled");
    svc_call_fail(call, &err);
}

static void
slow_fire(void *arg)
{
    parked_slow_t *p = arg;

    if (!slow_done(p->started_ms, p->delay_ms, p->gated)) {
        svc_timer_start(svc_server_timers(svc_call_server(p->call)), &p->timer, GATE_POLL_MS,
                        slow_fire, p);
        return;
    }
    slow_reply(p->call, p->started_ms);
}

/* Whoever takes the timer off the heap ends the call: the timer or this. */
static void
slow_on_cancel(svc_call_t *call, void *arg)
{
    parked_slow_t *p = arg;

    if (svc_timer_cancel(svc_server_timers(svc_call_server(call)), &p->timer)) {
        slow_cancelled_end(call);
    }
}

static void
slow(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Svctest__V1__SlowRequest *req = (const void *)msg;
    int64_t started = svc_now_mono_ms();

    (void)user;
    atomic_fetch_add(&slow_started, 1);
    if (req->park) {
        parked_slow_t *p = svc_arena_alloc(svc_call_arena(call), sizeof(*p));
        svc_err_t err;
        if (p == NULL) {
            svc_err_set(&err, SVC_RESOURCE_EXHAUSTED, "out of memory");
            svc_call_fail(call, &err);
            return;
        }
        p->call = call;
        p->started_ms = started;
        p->delay_ms = req->delay_ms;
        p->gated = req->gated;
        p->timer.heap_index = -1;
        /* Cancel callback first: once the timer runs, the call may be gone. */
        svc_call_on_cancel(call, slow_on_cancel, p);
        svc_timer_start(svc_server_timers(svc_call_server(call)), &p->timer,
                        req->gated && req->delay_ms > GATE_POLL_MS ? GATE_POLL_MS : req->delay_ms,
                        slow_fire, p);
        return;
    }
    /* Blocking, like a handler waiting on a database, but watching for cancellation. */
    while (!slow_done(started, req->delay_ms, req->gated)) {
        if (svc_call_cancelled(call)) {
            slow_cancelled_end(call);
            return;
        }
        svc_sleep_ms(20); /* 500 sleepers must not swamp 2 CPUs */
    }
    slow_reply(call, started);
}

static void
count(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Svctest__V1__CountRequest *req = (const void *)msg;
    svc_err_t err;

    (void)user;
    if (req->count < 0 || req->count > 100000) {
        svc_err_set(&err, SVC_INVALID_ARGUMENT, "count must be between 0 and 100000");
        svc_call_fail(call, &err);
        return;
    }
    for (int i = 1; i <= req->count; i++) {
        Svctest__V1__CountResponse resp = SVCTEST__V1__COUNT_RESPONSE__INIT;
        resp.n = i;
        if (svc_call_write(call, &resp.base) != 0) {
            break;
        }
    }
    svc_call_finish(call, NULL);
}

static void
chat(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Svctest__V1__ChatRequest *req = (const void *)msg;
    Svctest__V1__ChatResponse resp = SVCTEST__V1__CHAT_RESPONSE__INIT;
    char *text = svc_arena_strdup(svc_call_arena(call), req->text != NULL ? req->text : "");

    (void)user;
    atomic_fetch_add(&chat_messages, 1);
    for (char *p = text; p != NULL && *p; p++) {
        *p = (char)toupper((unsigned char)*p);
    }
    resp.text = text;
    (void)svc_call_write(call, &resp.base);
}

static void
stats(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    Svctest__V1__StatsResponse resp = SVCTEST__V1__STATS_RESPONSE__INIT;

    (void)msg;
    (void)user;
    resp.slow_started = atomic_load(&slow_started);
    resp.slow_finished = atomic_load(&slow_finished);
    resp.slow_cancelled = atomic_load(&slow_cancelled);
    resp.chat_messages = atomic_load(&chat_messages);
    svc_call_reply(call, &resp.base);
}

static void
set_gate(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Svctest__V1__SetGateRequest *req = (const void *)msg;
    Svctest__V1__SetGateResponse resp = SVCTEST__V1__SET_GATE_RESPONSE__INIT;

    (void)user;
    atomic_store(&gate_open, req->open);
    svc_call_reply(call, &resp.base);
}

int
main(int argc, char **argv)
{
    static const svc_handler_t handlers[] = {
        {"Echo", SVC_METHOD_UNARY, echo, NULL, 0},
        {"Slow", SVC_METHOD_UNARY, slow, NULL, 0},
        {"Count", SVC_METHOD_SERVER_STREAM, count, NULL, 0},
        {"Chat", SVC_METHOD_BIDI_STREAM, chat, NULL, 0},
        {"Stats", SVC_METHOD_UNARY, stats, NULL, 0},
        {"SetGate", SVC_METHOD_UNARY, set_gate, NULL, 0},
    };
    const char *listen_addr = NULL;
    int64_t workers = 0, max_workers = 0, grace_ms = 0, max_streams = 0;
    int64_t max_in_flight = 0, max_in_flight_per_peer = 0, max_queued = 0;
    const char *metrics_addr = NULL;
    svc_log_level_t log_level = SVC_LOG_INFO;
    svc_tls_opts_t tls = {0};
    svc_opt_t opts[] = {
        {"listen-addr", "LISTEN_ADDR", SVC_OPT_STRING, "127.0.0.1:50099", "address to serve on", 0,
         0, &listen_addr, 1},
        {"max-streams", "MAX_STREAMS", SVC_OPT_INT, "0", "calls one connection may have in flight",
         0, 1000000, &max_streams, 0},
        SVC_OPTS_TLS(&tls),
        {"max-queued", "MAX_QUEUED", SVC_OPT_INT, "0",
         "new calls waiting for a worker at most (0: MAX_IN_FLIGHT)", 0, 1000000, &max_queued, 0},
        SVC_OPT_MAX_IN_FLIGHT(&max_in_flight, "5000"),
        SVC_OPT_MAX_IN_FLIGHT_PER_PEER(&max_in_flight_per_peer),
        SVC_OPT_METRICS(&metrics_addr),
        SVC_OPTS_RUNTIME(&workers, &max_workers, &grace_ms, &log_level),
    };
    svc_server_opts_t sopts = {0};
    svc_server_t *server;
    svc_err_t err;

    svc_config_load_or_exit(opts, (int)(sizeof(opts) / sizeof(opts[0])), argc, argv,
                            "svctest-server: the libsvc test service (tests only)");
    svc_tls_configure_or_exit(&tls, argv[0]);
    svc_log_init("svctest", log_level);
    svc_server_prepare_process();
    snprintf(self_target, sizeof(self_target), "%s", listen_addr);

    sopts.service_name = "svctest";
    sopts.listen_addr = listen_addr;
    sopts.workers = (int)workers;
    sopts.max_workers = (int)max_workers;
    sopts.grace_ms = (int)grace_ms;
    sopts.max_streams = (int)max_streams;
    sopts.tls = &tls;
    sopts.max_in_flight = (int)max_in_flight;
    sopts.max_in_flight_per_peer = (int)max_in_flight_per_peer;
    sopts.max_queued = (int)max_queued;
    sopts.metrics_addr = metrics_addr;
    sopts.descriptors = svctest_descriptor_set;
    sopts.descriptors_len = svctest_descriptor_set_len;
    server = svc_server_create(&sopts, &err);
    if (server == NULL ||
        svc_server_add_service(server, &svctest__v1__test_service__descriptor, handlers,
                               sizeof(handlers) / sizeof(handlers[0]), NULL, &err) != 0 ||
        svc_server_start(server, &err) != 0) {
        svc_log_kv(SVC_LOG_ERROR, "cannot start", "error", err.msg, NULL);
        svc_server_destroy(server);
        return 1;
    }
    svc_server_wait_for_signal(server);
    svc_server_shutdown(server);
    svc_server_destroy(server);
    svc_client_release_all();
    return 0;
}
