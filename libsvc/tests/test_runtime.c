/*
 * test_runtime.c: the libsvc server and client over real gRPC. Starts
 * svctest-server (path in argv[1]) on a free loopback port and drives it with
 * the libsvc client: concurrency, unknown methods, bad bytes, deadlines,
 * streams, health, reflection, configuration errors and graceful SIGTERM.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "svc/client.h"
#include "svc/log.h"
#include "svc/timer.h"
#include "svctest/v1/svctest.pb-c.h"
#include "testenv.h"

extern char **environ;

static const char *server_path;

typedef struct {
    pid_t pid;
    char target[64];
    svc_client_t *client;
    int port, metrics_port; /* GET /metrics is served on 127.0.0.1:metrics_port */
} test_server_t;

static test_server_t main_server;

/*
 * A free port below the kernel's ephemeral range (32768 and up), so that no
 * outgoing connection can take it between this check and the server's bind.
 */
static int
free_port(void)
{
    static unsigned seed;

    if (seed == 0) {
        seed = (unsigned)getpid() ^ (unsigned)time(NULL);
    }
    for (int attempt = 0; attempt < 1000; attempt++) {
        struct sockaddr_in addr = {0};
        int port = 20000 + (int)(rand_r(&seed) % 12000);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int ok;

        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addr.sin_port = htons((uint16_t)port);
        ok = fd >= 0 && bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0;
        if (fd >= 0) {
            close(fd);
        }
        if (ok) {
            return port;
        }
    }
    fail_msg("cannot find a free port");
    return -1;
}

static int
health_check(svc_client_t *client, const char *service, int *status, svc_err_t *err)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    svc_arena_t *arena = svc_arena_create();
    ProtobufCMessage *out;
    svc_call_opts_t opts = {.timeout_ms = 2000};
    int rc;

    req.service = (char *)service;
    rc = svc_client_unary(client, "/grpc.health.v1.Health/Check", &req.base,
                          &grpc__health__v1__health_check_response__descriptor, arena, &out, &opts,
                          err);
    if (rc == 0) {
        *status = ((Grpc__Health__V1__HealthCheckResponse *)out)->status;
    }
    svc_arena_destroy(arena);
    return rc;
}

/*
 * Starts the server listening on host (NULL: 127.0.0.1; "[::]" serves
 * IPv4 and IPv6 loopback both) with the flags in extra (NULL-terminated, may
 * be NULL), and waits until it reports SERVING at 127.0.0.1.
 */
static void
server_start_with(test_server_t *ts, const char *host, const char *const *extra)
{
    char addr[64], metrics[64], *argv[16];
    int argc = 0, status = 0;
    svc_err_t err;

    ts->port = free_port();
    ts->metrics_port = free_port();
    snprintf(addr, sizeof(addr), "%s:%d", host != NULL ? host : "127.0.0.1", ts->port);
    snprintf(metrics, sizeof(metrics), "--metrics-addr=127.0.0.1:%d", ts->metrics_port);
    snprintf(ts->target, sizeof(ts->target), "127.0.0.1:%d", ts->port);
    argv[argc++] = (char *)server_path;
    argv[argc++] = "--listen-addr";
    argv[argc++] = addr;
    argv[argc++] = metrics;
    argv[argc++] = "--max-workers=600";
    argv[argc++] = "--log-level=warn";
    for (int i = 0; extra != NULL && extra[i] != NULL && argc < 15; i++) {
        argv[argc++] = (char *)extra[i];
    }
    argv[argc] = NULL;
    assert_int_equal(posix_spawn(&ts->pid, server_path, NULL, NULL, argv, environ), 0);
    ts->client = svc_client_get(ts->target, &err);
    assert_non_null(ts->client);
    for (int i = 0; i < 400; i++) {
        if (health_check(ts->client, "", &status, &err) == 0 && status == 1) {
            return;
        }
        svc_sleep_ms(50);
    }
    fail_msg("server at %s did not become SERVING", ts->target);
}

/* Starts the server on 127.0.0.1 with one more flag (or none) and waits until SERVING. */
static void
server_start(test_server_t *ts, const char *extra_flag)
{
    const char *extra[] = {extra_flag, NULL};

    server_start_with(ts, NULL, extra);
}

static int
server_stop(test_server_t *ts)
{
    int status = 0;

    kill(ts->pid, SIGTERM);
    waitpid(ts->pid, &status, 0);
    return status;
}

static Svctest__V1__StatsResponse
stats(test_server_t *ts)
{
    Svctest__V1__StatsRequest req = SVCTEST__V1__STATS_REQUEST__INIT;
    Svctest__V1__StatsResponse copy;
    svc_arena_t *arena = svc_arena_create();
    /* Counting is not timed: a machine loaded by 500 slow calls under a sanitizer may take
     * longer than the default 10 s to answer, and that is no failure of the runtime. */
    svc_call_opts_t opts = {.timeout_ms = 60000};
    ProtobufCMessage *out;
    svc_err_t err;

    if (svc_client_unary(ts->client, "/svctest.v1.TestService/Stats", &req.base,
                         &svctest__v1__stats_response__descriptor, arena, &out, &opts, &err) != 0) {
        fail_msg("Stats failed: %s", err.msg);
    }
    copy = *(Svctest__V1__StatsResponse *)out;
    svc_arena_destroy(arena);
    return copy;
}

/* Opens or closes the gate gated Slow calls wait for. */
static void
set_gate(test_server_t *ts, bool open)
{
    Svctest__V1__SetGateRequest req = SVCTEST__V1__SET_GATE_REQUEST__INIT;
    svc_arena_t *arena = svc_arena_create();
    svc_call_opts_t opts = {.timeout_ms = 60000};
    ProtobufCMessage *out;
    svc_err_t err;

    req.open = open;
    if (svc_client_unary(ts->client, "/svctest.v1.TestService/SetGate", &req.base,
                         &svctest__v1__set_gate_response__descriptor, arena, &out, &opts,
                         &err) != 0) {
        fail_msg("SetGate failed: %s", err.msg);
    }
    svc_arena_destroy(arena);
}

/* GET /metrics of ts over HTTP/1.0; the whole answer (malloc'd). */
static char *
metrics_scrape(const test_server_t *ts)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)ts->metrics_port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    static const char req[] = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
    ssize_t n;

    assert_true(fd >= 0 && buf != NULL);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    while ((n = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)n;
        if (len + 1 == cap) {
            buf = realloc(buf, cap *= 2);
            assert_non_null(buf);
        }
    }
    buf[len] = '\0';
    close(fd);
    return buf;
}

/* The value of one series of TestService's (0 when it was never made). */
static double
metric(const test_server_t *ts, const char *name, const char *type, const char *method,
       const char *extra_label)
{
    char series[512], *text = metrics_scrape(ts), *at = text;
    double v = 0;

    snprintf(
        series, sizeof(series),
        "\n%s{grpc_type=\"%s\",grpc_service=\"svctest.v1.TestService\",grpc_method=\"%s\"%s%s} ",
        name, type, method, extra_label != NULL ? "," : "", extra_label != NULL ? extra_label : "");
    if ((at = strstr(text, series)) != NULL) {
        v = strtod(at + strlen(series), NULL);
    }
    free(text);
    return v;
}

static double
shed_count(const test_server_t *ts, const char *type, const char *method, const char *reason)
{
    char label[64];

    snprintf(label, sizeof(label), "reason=\"%s\"", reason);
    return metric(ts, "grpc_server_shed_total", type, method, label);
}

static int
echo(test_server_t *ts, const char *message, int hops, const svc_call_opts_t *opts,
     svc_arena_t *arena, Svctest__V1__EchoResponse **resp, svc_err_t *err)
{
    Svctest__V1__EchoRequest req = SVCTEST__V1__ECHO_REQUEST__INIT;

    req.message = (char *)message;
    req.hops = hops;
    return svc_client_unary(ts->client, "/svctest.v1.TestService/Echo", &req.base,
                            &svctest__v1__echo_response__descriptor, arena,
                            (ProtobufCMessage **)resp, opts, err);
}

typedef struct {
    test_server_t *ts;
    int64_t delay_ms;
    int park, gated;
    int64_t timeout_ms; /* 0: 60 s */
    svc_err_t err;
    int rc;
} slow_job_t;

static void *
slow_thread(void *arg)
{
    slow_job_t *job = arg;
    Svctest__V1__SlowRequest req = SVCTEST__V1__SLOW_REQUEST__INIT;
    svc_call_opts_t opts = {.timeout_ms = job->timeout_ms > 0 ? job->timeout_ms : 60000};
    svc_arena_t *arena = svc_arena_create();
    ProtobufCMessage *out;

    req.delay_ms = job->delay_ms;
    req.park = job->park;
    req.gated = job->gated;
    job->rc =
        svc_client_unary(job->ts->client, "/svctest.v1.TestService/Slow", &req.base,
                         &svctest__v1__slow_response__descriptor, arena, &out, &opts, &job->err);
    svc_arena_destroy(arena);
    return NULL;
}

static pthread_t *
start_slow_jobs(test_server_t *ts, slow_job_t *jobs, int n, int64_t delay_ms)
{
    pthread_t *threads = calloc((size_t)n, sizeof(*threads));
    pthread_attr_t attr;

    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < n; i++) {
        jobs[i].ts = ts;
        jobs[i].delay_ms = delay_ms;
        jobs[i].park = i % 2; /* half park on a timer, half block a worker */
        assert_int_equal(pthread_create(&threads[i], &attr, slow_thread, &jobs[i]), 0);
    }
    pthread_attr_destroy(&attr);
    return threads;
}

static void
wait_started(test_server_t *ts, int64_t target)
{
    for (int i = 0; i < 600; i++) {
        if (stats(ts).slow_started >= target) {
            return;
        }
        svc_sleep_ms(50);
    }
    fail_msg("slow calls did not all start");
}

/*
 * 500 slow calls in flight at once; fast calls are answered while they all
 * still wait. The slow calls wait for a gate the test opens once the fast
 * ones are in, not for a time: a ThreadSanitizer build on a busy machine
 * took 15 s to start them all, and timed ones began to end before that.
 */
static void
test_slow_calls_do_not_block_fast_ones(void **state)
{
    enum { N = 500 };
    test_server_t *ts = &main_server;
    slow_job_t *jobs = calloc(N, sizeof(*jobs));
    Svctest__V1__StatsResponse before = stats(ts), mid, after;
    pthread_t *threads;

    (void)state;
    set_gate(ts, false);
    for (int i = 0; i < N; i++) {
        jobs[i].gated = 1;
    }
    int64_t t0 = svc_now_mono_ms();
    threads = start_slow_jobs(ts, jobs, N, 55000); /* the gate opens long before */
    wait_started(ts, before.slow_started + N);
    int64_t t_started = svc_now_mono_ms() - t0;
    for (int i = 0; i < 50; i++) {
        svc_arena_t *arena = svc_arena_create();
        Svctest__V1__EchoResponse *resp;
        svc_err_t err;
        assert_int_equal(echo(ts, "fast", 0, NULL, arena, &resp, &err), 0);
        assert_string_equal(resp->message, "fast");
        svc_arena_destroy(arena);
    }
    mid = stats(ts);
    fprintf(stderr, "%d slow calls in flight after %lld ms; 50 fast calls answered by %lld ms\n", N,
            (long long)t_started, (long long)(svc_now_mono_ms() - t0));
    /* The fast calls were all answered before any slow call finished. */
    assert_int_equal(mid.slow_finished, before.slow_finished);
    set_gate(ts, true);
    for (int i = 0; i < N; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(jobs[i].rc, 0);
    }
    after = stats(ts);
    assert_int_equal(after.slow_finished - before.slow_finished, N);
    free(threads);
    free(jobs);
}

static void
test_unknown_method_is_unimplemented_fast(void **state)
{
    static const char *methods[] = {"/svctest.v1.TestService/Nope", "/no.such.v1.Service/Call"};
    Svctest__V1__EchoRequest req = SVCTEST__V1__ECHO_REQUEST__INIT;

    (void)state;
    for (int i = 0; i < 2; i++) {
        svc_arena_t *arena = svc_arena_create();
        ProtobufCMessage *out;
        svc_err_t err;
        int64_t t0 = svc_now_mono_ms();
        assert_int_equal(svc_client_unary(main_server.client, methods[i], &req.base,
                                          &svctest__v1__echo_response__descriptor, arena, &out,
                                          NULL, &err),
                         -1);
        assert_int_equal(err.code, SVC_UNIMPLEMENTED);
        assert_true(svc_now_mono_ms() - t0 < 1000);
        svc_arena_destroy(arena);
    }
}

static void
test_garbage_bytes_are_invalid_argument(void **state)
{
    static const unsigned char garbage[] = {0xff, 0xff, 0xff, 0x0a};
    svc_arena_t *arena = svc_arena_create();
    Svctest__V1__EchoResponse *resp;
    ProtobufCMessage *out;
    svc_err_t err;

    (void)state;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(svc_client_unary_bytes(main_server.client, "/svctest.v1.TestService/Echo",
                                                garbage, sizeof(garbage),
                                                &svctest__v1__echo_response__descriptor, arena,
                                                &out, NULL, &err),
                         -1);
        assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    }
    /* Still serving. */
    assert_int_equal(echo(&main_server, "after", 0, NULL, arena, &resp, &err), 0);
    assert_string_equal(resp->message, "after");
    svc_arena_destroy(arena);
}

static void
test_deadline_is_seen_as_cancellation(void **state)
{
    Svctest__V1__StatsResponse before = stats(&main_server);
    svc_call_opts_t opts = {.timeout_ms = 300};

    (void)state;
    for (int park = 0; park < 2; park++) {
        Svctest__V1__SlowRequest req = SVCTEST__V1__SLOW_REQUEST__INIT;
        svc_arena_t *arena = svc_arena_create();
        ProtobufCMessage *out;
        svc_err_t err;
        req.delay_ms = 20000;
        req.park = park;
        assert_int_equal(svc_client_unary(main_server.client, "/svctest.v1.TestService/Slow",
                                          &req.base, &svctest__v1__slow_response__descriptor, arena,
                                          &out, &opts, &err),
                         -1);
        assert_int_equal(err.code, SVC_DEADLINE_EXCEEDED);
        svc_arena_destroy(arena);
    }
    /* Both handlers (one blocking, one parked) notice long before their 20 s delay. */
    for (int i = 0; i < 100 && stats(&main_server).slow_cancelled < before.slow_cancelled + 2;
         i++) {
        svc_sleep_ms(50);
    }
    assert_int_equal(stats(&main_server).slow_cancelled, before.slow_cancelled + 2);
}

static void
test_request_id_and_deadline_propagate(void **state)
{
    svc_arena_t *arena = svc_arena_create();
    Svctest__V1__EchoResponse *resp;
    svc_call_opts_t opts = {.timeout_ms = 5000, .request_id = "test-req-42"};
    svc_err_t err;
    int64_t now = svc_now_unix_ms();

    (void)state;
    /* Two hops: client -> server -> server -> server, each a child of the one before. */
    assert_int_equal(echo(&main_server, "hop", 2, &opts, arena, &resp, &err), 0);
    assert_string_equal(resp->message, "hop");
    assert_string_equal(resp->request_id, "test-req-42");
    /* The innermost call carries the outer caller's deadline, not its own 60 s one. */
    assert_true(resp->deadline_ms > now + 3000);
    assert_true(resp->deadline_ms <= now + 5500);

    /* Without one, the server makes one up. */
    assert_int_equal(echo(&main_server, "x", 0, NULL, arena, &resp, &err), 0);
    assert_int_equal(strlen(resp->request_id), 16);
    svc_arena_destroy(arena);
}

/* An asynchronous Echo started in a log context, and what its callback saw and did. */
typedef struct {
    svc_client_t *client;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    svc_arena_t *arena;
    char first_id[SVC_ERR_MSG_MAX], callback_ctx[80], second_id[SVC_ERR_MSG_MAX];
} ctx_probe_t;

static void
ctx_second_done(ProtobufCMessage *resp, const svc_err_t *err, void *arg)
{
    ctx_probe_t *p = arg;

    pthread_mutex_lock(&p->mu);
    snprintf(p->second_id, sizeof(p->second_id), "%s",
             err->code == SVC_OK ? ((Svctest__V1__EchoResponse *)resp)->request_id : err->msg);
    p->done = true;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* On the client thread: goes on with the work that started it, naming no request id. */
static void
ctx_first_done(ProtobufCMessage *resp, const svc_err_t *err, void *arg)
{
    ctx_probe_t *p = arg;
    Svctest__V1__EchoRequest req = SVCTEST__V1__ECHO_REQUEST__INIT;
    svc_call_opts_t opts = {.timeout_ms = 60000};
    const char *ctx = svc_log_ctx_request_id();

    snprintf(p->first_id, sizeof(p->first_id), "%s",
             err->code == SVC_OK ? ((Svctest__V1__EchoResponse *)resp)->request_id : err->msg);
    snprintf(p->callback_ctx, sizeof(p->callback_ctx), "%s", ctx != NULL ? ctx : "(none)");
    req.message = "second";
    svc_client_unary_async(p->client, "/svctest.v1.TestService/Echo", &req.base,
                           &svctest__v1__echo_response__descriptor, p->arena, &opts,
                           ctx_second_done, p);
}

/*
 * A thread working for a call (its log context) sends that call's
 * x-request-id on the calls it makes without a parent or an id of their
 * own; an asynchronous callback runs in the context its call was started
 * in, so what it starts carries the id too. Without a context: a new id.
 */
static void
test_request_id_from_the_thread_context(void **state)
{
    svc_arena_t *arena = svc_arena_create();
    Svctest__V1__EchoResponse *resp;
    svc_call_opts_t opts = {.timeout_ms = 5000};
    svc_call_opts_t named = {.timeout_ms = 5000, .request_id = "named-id"};
    Svctest__V1__EchoRequest req = SVCTEST__V1__ECHO_REQUEST__INIT;
    ctx_probe_t p = {.client = main_server.client, .arena = svc_arena_create()};
    svc_log_ctx_t saved;
    svc_err_t err;

    (void)state;
    svc_log_ctx_enter(&saved, "/svctest.v1.TestService/Outer", "ctx-req-7");
    assert_int_equal(echo(&main_server, "sync", 0, &opts, arena, &resp, &err), 0);
    assert_string_equal(resp->request_id, "ctx-req-7");
    assert_int_equal(echo(&main_server, "named", 0, &named, arena, &resp, &err), 0);
    assert_string_equal(resp->request_id, "named-id");

    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv, NULL);
    req.message = "first";
    svc_client_unary_async(main_server.client, "/svctest.v1.TestService/Echo", &req.base,
                           &svctest__v1__echo_response__descriptor, p.arena, &opts, ctx_first_done,
                           &p);
    svc_log_ctx_leave(&saved);
    assert_null(svc_log_ctx_request_id());
    pthread_mutex_lock(&p.mu);
    while (!p.done) {
        pthread_cond_wait(&p.cv, &p.mu);
    }
    pthread_mutex_unlock(&p.mu);
    assert_string_equal(p.first_id, "ctx-req-7");
    assert_string_equal(p.callback_ctx, "ctx-req-7");
    assert_string_equal(p.second_id, "ctx-req-7");

    assert_int_equal(echo(&main_server, "none", 0, &opts, arena, &resp, &err), 0);
    assert_int_equal(strlen(resp->request_id), 16);
    pthread_cond_destroy(&p.cv);
    pthread_mutex_destroy(&p.mu);
    svc_arena_destroy(p.arena);
    svc_arena_destroy(arena);
}

/* One target listing two servers: calls are spread over both (round_robin). */
/* One Echo on c (waiting for a connection); counts who served it. */
static void
rr_call(svc_client_t *c, const test_server_t *a, const test_server_t *b, int *on_a, int *on_b)
{
    Svctest__V1__EchoRequest req = SVCTEST__V1__ECHO_REQUEST__INIT;
    Svctest__V1__EchoResponse *resp;
    svc_arena_t *arena = svc_arena_create();
    svc_call_opts_t opts = {.wait_for_ready = 1};
    svc_err_t err;

    req.message = "rr";
    assert_int_equal(svc_client_unary(c, "/svctest.v1.TestService/Echo", &req.base,
                                      &svctest__v1__echo_response__descriptor, arena,
                                      (ProtobufCMessage **)&resp, &opts, &err),
                     0);
    *on_a += strcmp(resp->served_by, a->target) == 0;
    *on_b += strcmp(resp->served_by, b->target) == 0;
    svc_arena_destroy(arena);
}

static void
test_round_robin_over_two_addresses(void **state)
{
    test_server_t other;
    char target[160];
    svc_client_t *both;
    svc_err_t err;
    int on_main = 0, on_other = 0;

    (void)state;
    server_start(&other, NULL);
    snprintf(target, sizeof(target), "%s,%s", main_server.target, other.target);
    both = svc_client_get(target, &err);
    assert_non_null(both);
    /*
     * round_robin picks among connected addresses only: until the slower of
     * the two connections is up, the faster one takes every call. Count once
     * both have answered.
     */
    for (int i = 0; i < 200 && (on_main == 0 || on_other == 0); i++) {
        rr_call(both, &main_server, &other, &on_main, &on_other);
        if (on_main == 0 || on_other == 0) {
            svc_sleep_ms(5);
        }
    }
    assert_true(on_main > 0 && on_other > 0);
    on_main = on_other = 0;
    for (int i = 0; i < 20; i++) {
        rr_call(both, &main_server, &other, &on_main, &on_other);
    }
    assert_int_equal(server_stop(&other), 0);
    assert_int_equal(on_main + on_other, 20);
    assert_true(on_main >= 5);
    assert_true(on_other >= 5);
}

/* Sends SIGCONT to *pid 400 ms from now. */
static void *
continue_later(void *arg)
{
    svc_sleep_ms(400);
    kill(*(pid_t *)arg, SIGCONT);
    return NULL;
}

/*
 * A peer slow to finish its handshake (busy, or a loaded machine; here
 * stopped for 400 ms) is not a peer that is down: the first call on a new
 * channel waits for the connection within its deadline instead of failing
 * UNAVAILABLE. A port nobody listens on still fails fast.
 */
static void
test_slow_handshake_is_not_a_down_peer(void **state)
{
    test_server_t other;
    char target[160];
    svc_client_t *fresh, *dead;
    svc_arena_t *arena = svc_arena_create();
    Svctest__V1__EchoResponse *resp;
    svc_call_opts_t opts = {.timeout_ms = 5000};
    Svctest__V1__EchoRequest req = SVCTEST__V1__ECHO_REQUEST__INIT;
    int64_t started;
    pthread_t waker;
    svc_err_t err;
    int rc;

    (void)state;
    server_start(&other, NULL);
    /* Another spelling of the address: a channel of its own, not yet connected. */
    snprintf(target, sizeof(target), "ipv4:%s", other.target);
    assert_int_equal(kill(other.pid, SIGSTOP), 0);
    assert_int_equal(pthread_create(&waker, NULL, continue_later, &other.pid), 0);
    fresh = svc_client_get(target, &err);
    assert_non_null(fresh);
    req.message = "slow handshake";
    rc = svc_client_unary(fresh, "/svctest.v1.TestService/Echo", &req.base,
                          &svctest__v1__echo_response__descriptor, arena,
                          (ProtobufCMessage **)&resp, &opts, &err);
    pthread_join(waker, NULL);
    assert_int_equal(server_stop(&other), 0);
    if (rc != 0) {
        fail_msg("first call after a 400 ms handshake stall: %s (%s)", svc_status_name(err.code),
                 err.msg);
    }

    /* Nobody listens there any more: refused at once, UNAVAILABLE well before the deadline. */
    snprintf(target, sizeof(target), "ipv4:%s,%s", other.target, other.target);
    dead = svc_client_get(target, &err);
    assert_non_null(dead);
    started = svc_now_mono_ms();
    assert_int_equal(svc_client_unary(dead, "/svctest.v1.TestService/Echo", &req.base,
                                      &svctest__v1__echo_response__descriptor, arena,
                                      (ProtobufCMessage **)&resp, &opts, &err),
                     -1);
    assert_int_equal(err.code, SVC_UNAVAILABLE);
    assert_true(svc_now_mono_ms() - started < 2000);
    /* What a service waits on at start: a reachable peer is ready, a dead one is not. */
    assert_int_equal(svc_client_wait_ready(main_server.client, 5000, &err), 0);
    assert_int_equal(svc_client_wait_ready(dead, 300, &err), -1);
    assert_int_equal(err.code, SVC_UNAVAILABLE);
    svc_arena_destroy(arena);
}

static void
test_metadata_reaches_the_handler(void **state)
{
    static const char *md[] = {"authorization", "Bearer s3cret", "x-tenant", "t1"};
    Svctest__V1__EchoRequest req = SVCTEST__V1__ECHO_REQUEST__INIT;
    Svctest__V1__EchoResponse *resp;
    svc_arena_t *arena = svc_arena_create();
    svc_call_opts_t opts = {.metadata = md, .n_metadata = 2};
    svc_err_t err;

    (void)state;
    req.message = "md";
    req.metadata_key = "authorization";
    assert_int_equal(svc_client_unary(main_server.client, "/svctest.v1.TestService/Echo", &req.base,
                                      &svctest__v1__echo_response__descriptor, arena,
                                      (ProtobufCMessage **)&resp, &opts, &err),
                     0);
    assert_string_equal(resp->metadata_value, "Bearer s3cret");
    req.metadata_key = "x-missing";
    assert_int_equal(svc_client_unary(main_server.client, "/svctest.v1.TestService/Echo", &req.base,
                                      &svctest__v1__echo_response__descriptor, arena,
                                      (ProtobufCMessage **)&resp, &opts, &err),
                     0);
    assert_string_equal(resp->metadata_value, "");
    svc_arena_destroy(arena);
}

static void
test_server_stream(void **state)
{
    Svctest__V1__CountRequest req = SVCTEST__V1__COUNT_REQUEST__INIT;
    svc_arena_t *arena = svc_arena_create();
    svc_client_stream_t *s;
    ProtobufCMessage *msg;
    svc_err_t err;
    int n = 0, rc;

    (void)state;
    req.count = 1000;
    s = svc_client_stream_open(main_server.client, "/svctest.v1.TestService/Count", NULL, &err);
    assert_non_null(s);
    assert_int_equal(svc_client_stream_send(s, &req.base, &err), 0);
    assert_int_equal(svc_client_stream_close_send(s, &err), 0);
    while ((rc = svc_client_stream_recv(s, &svctest__v1__count_response__descriptor, arena, &msg,
                                        &err)) == 1) {
        assert_int_equal(((Svctest__V1__CountResponse *)msg)->n, ++n);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(n, 1000);
    assert_int_equal(svc_client_stream_finish(s, &err), 0);
    svc_client_stream_destroy(s);

    /* A handler error ends the stream with its code. */
    req.count = -1;
    s = svc_client_stream_open(main_server.client, "/svctest.v1.TestService/Count", NULL, &err);
    assert_int_equal(svc_client_stream_send(s, &req.base, &err), 0);
    assert_int_equal(svc_client_stream_close_send(s, &err), 0);
    assert_int_equal(
        svc_client_stream_recv(s, &svctest__v1__count_response__descriptor, arena, &msg, &err), 0);
    assert_int_equal(svc_client_stream_finish(s, &err), -1);
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    svc_client_stream_destroy(s);
    svc_arena_destroy(arena);
}

static void
test_bidi_stream(void **state)
{
    static const char *words[] = {"alpha", "Beta", "gamma delta"};
    static const char *upper[] = {"ALPHA", "BETA", "GAMMA DELTA"};
    svc_arena_t *arena = svc_arena_create();
    svc_client_stream_t *s;
    ProtobufCMessage *msg;
    svc_err_t err;

    (void)state;
    s = svc_client_stream_open(main_server.client, "/svctest.v1.TestService/Chat", NULL, &err);
    assert_non_null(s);
    for (int i = 0; i < 3; i++) { /* one at a time: each answer comes before the next send */
        Svctest__V1__ChatRequest req = SVCTEST__V1__CHAT_REQUEST__INIT;
        req.text = (char *)words[i];
        assert_int_equal(svc_client_stream_send(s, &req.base, &err), 0);
        assert_int_equal(
            svc_client_stream_recv(s, &svctest__v1__chat_response__descriptor, arena, &msg, &err),
            1);
        assert_string_equal(((Svctest__V1__ChatResponse *)msg)->text, upper[i]);
    }
    assert_int_equal(svc_client_stream_close_send(s, &err), 0);
    assert_int_equal(
        svc_client_stream_recv(s, &svctest__v1__chat_response__descriptor, arena, &msg, &err), 0);
    assert_int_equal(svc_client_stream_finish(s, &err), 0);
    svc_client_stream_destroy(s);
    svc_arena_destroy(arena);
}

static void
test_health(void **state)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    svc_arena_t *arena = svc_arena_create();
    svc_client_stream_t *s;
    ProtobufCMessage *msg;
    svc_err_t err;
    int status = 0;

    (void)state;
    assert_int_equal(health_check(main_server.client, "svctest.v1.TestService", &status, &err), 0);
    assert_int_equal(status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    assert_int_equal(health_check(main_server.client, "no.such.Service", &status, &err), -1);
    assert_int_equal(err.code, SVC_NOT_FOUND);

    s = svc_client_stream_open(main_server.client, "/grpc.health.v1.Health/Watch", NULL, &err);
    assert_non_null(s);
    assert_int_equal(svc_client_stream_send(s, &req.base, &err), 0);
    assert_int_equal(svc_client_stream_close_send(s, &err), 0);
    assert_int_equal(svc_client_stream_recv(s, &grpc__health__v1__health_check_response__descriptor,
                                            arena, &msg, &err),
                     1);
    assert_int_equal(((Grpc__Health__V1__HealthCheckResponse *)msg)->status,
                     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    svc_client_stream_destroy(s); /* cancels the watch; the server must drop it */
    svc_arena_destroy(arena);
}

static void
test_reflection_lists_and_describes(void **state)
{
    static const char *paths[] = {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                  "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"};

    (void)state;
    for (int p = 0; p < 2; p++) {
        Grpc__Reflection__V1__ServerReflectionRequest req =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
        Grpc__Reflection__V1__ServerReflectionResponse *resp;
        svc_arena_t *arena = svc_arena_create();
        svc_client_stream_t *s;
        ProtobufCMessage *msg;
        svc_err_t err;
        int found = 0;

        s = svc_client_stream_open(main_server.client, paths[p], NULL, &err);
        assert_non_null(s);
        req.message_request_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
        req.list_services = "*";
        assert_int_equal(svc_client_stream_send(s, &req.base, &err), 0);
        assert_int_equal(
            svc_client_stream_recv(s, &grpc__reflection__v1__server_reflection_response__descriptor,
                                   arena, &msg, &err),
            1);
        resp = (void *)msg;
        assert_non_null(resp->list_services_response);
        for (size_t i = 0; i < resp->list_services_response->n_service; i++) {
            const char *name = resp->list_services_response->service[i]->name;
            found += strcmp(name, "svctest.v1.TestService") == 0 ||
                     strcmp(name, "grpc.health.v1.Health") == 0 ||
                     strcmp(name, "grpc.reflection.v1.ServerReflection") == 0 ||
                     strcmp(name, "grpc.reflection.v1alpha.ServerReflection") == 0;
        }
        assert_int_equal(found, 4);

        req.message_request_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
        req.file_containing_symbol = "svctest.v1.TestService";
        assert_int_equal(svc_client_stream_send(s, &req.base, &err), 0);
        assert_int_equal(
            svc_client_stream_recv(s, &grpc__reflection__v1__server_reflection_response__descriptor,
                                   arena, &msg, &err),
            1);
        resp = (void *)msg;
        assert_non_null(resp->file_descriptor_response);
        assert_int_equal(resp->file_descriptor_response->n_file_descriptor_proto, 1);

        req.file_containing_symbol = "svctest.v1.Missing";
        assert_int_equal(svc_client_stream_send(s, &req.base, &err), 0);
        assert_int_equal(
            svc_client_stream_recv(s, &grpc__reflection__v1__server_reflection_response__descriptor,
                                   arena, &msg, &err),
            1);
        resp = (void *)msg;
        assert_non_null(resp->error_response);
        assert_int_equal(resp->error_response->error_code, SVC_NOT_FOUND);

        assert_int_equal(svc_client_stream_close_send(s, &err), 0);
        assert_int_equal(svc_client_stream_finish(s, &err), 0);
        svc_client_stream_destroy(s);
        svc_arena_destroy(arena);
    }
}

/* SIGTERM while calls are in flight: they finish, then the process exits 0. */
static void
test_sigterm_lets_calls_finish(void **state)
{
    enum { N = 40 };
    test_server_t ts;
    slow_job_t jobs[N];
    pthread_t *threads;
    int status;

    (void)state;
    memset(jobs, 0, sizeof(jobs));
    server_start(&ts, NULL);
    threads = start_slow_jobs(&ts, jobs, N, 1500);
    wait_started(&ts, N);
    kill(ts.pid, SIGTERM);
    for (int i = 0; i < N; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(jobs[i].rc, 0);
    }
    assert_int_equal(waitpid(ts.pid, &status, 0), ts.pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    free(threads);
}

static int
run_config(const char *flag)
{
    char *argv[] = {(char *)server_path, (char *)flag, NULL};
    pid_t pid;
    int status = 0;
    posix_spawn_file_actions_t fa;

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    assert_int_equal(posix_spawn(&pid, server_path, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/*
 * A call whose deadline passed while it waited for a worker is answered
 * DEADLINE_EXCEEDED and its handler never runs: its client was already told
 * it failed, so any effect would be one nobody asked for. The same for a
 * bidi stream's message, and for a call its client cancelled meanwhile. One
 * worker, kept busy by a blocking Slow; behind it wait a Slow with a 200 ms
 * deadline, a Chat message with a 300 ms one, and a Count its client
 * cancels.
 */
static void
test_expired_call_never_reaches_its_handler(void **state)
{
    test_server_t one = {0};
    slow_job_t busy = {0};
    Svctest__V1__SlowRequest req = SVCTEST__V1__SLOW_REQUEST__INIT;
    Svctest__V1__ChatRequest chat = SVCTEST__V1__CHAT_REQUEST__INIT;
    Svctest__V1__CountRequest count = SVCTEST__V1__COUNT_REQUEST__INIT;
    svc_call_opts_t opts = {.timeout_ms = 200}, chat_opts = {.timeout_ms = 300};
    svc_arena_t *arena = svc_arena_create();
    Svctest__V1__StatsResponse before, after;
    svc_client_stream_t *s;
    ProtobufCMessage *out;
    pthread_t t;
    svc_err_t err, chat_err;
    int rc, status;

    (void)state;
    setenv("WORKERS", "1", 1);
    server_start(&one, "--max-workers=1");
    unsetenv("WORKERS");
    before = stats(&one);
    busy.ts = &one;
    busy.delay_ms = 4000; /* longer than all below takes, even on a loaded sanitizer build */
    assert_int_equal(pthread_create(&t, NULL, slow_thread, &busy), 0);
    svc_sleep_ms(500); /* Stats would wait for the worker too: give the busy call time to start */
    req.park = 1;
    rc = svc_client_unary(one.client, "/svctest.v1.TestService/Slow", &req.base,
                          &svctest__v1__slow_response__descriptor, arena, &out, &opts, &err);

    s = svc_client_stream_open(one.client, "/svctest.v1.TestService/Chat", &chat_opts, &chat_err);
    assert_non_null(s);
    chat.text = "late";
    assert_int_equal(svc_client_stream_send(s, &chat.base, &chat_err), 0);
    assert_int_not_equal(
        svc_client_stream_recv(s, &svctest__v1__chat_response__descriptor, arena, &out, &chat_err),
        1);
    assert_int_equal(svc_client_stream_finish(s, &chat_err), -1);
    svc_client_stream_destroy(s);

    s = svc_client_stream_open(one.client, "/svctest.v1.TestService/Count", NULL, &err);
    assert_non_null(s);
    count.count = 3;
    assert_int_equal(svc_client_stream_send(s, &count.base, &err), 0);
    assert_int_equal(svc_client_stream_close_send(s, &err), 0);
    for (int i = 0;
         i < 400 && metric(&one, "grpc_server_started_total", "server_stream", "Count", NULL) < 1;
         i++) {
        svc_sleep_ms(5);
    }
    svc_client_stream_destroy(s); /* cancels it while it waits for the worker */

    pthread_join(t, NULL);
    after = stats(&one); /* answered by the one worker, so after the late calls' turn */
    assert_int_equal(after.chat_messages - before.chat_messages, 0); /* no handler saw it */
    assert_true(shed_count(&one, "unary", "Slow", "deadline") == 1);
    assert_true(shed_count(&one, "bidi_stream", "Chat", "deadline") == 1);
    assert_true(shed_count(&one, "server_stream", "Count", "cancelled") == 1);
    svc_arena_destroy(arena);
    status = server_stop(&one);
    assert_int_equal(rc, -1);
    assert_int_equal(err.code, SVC_DEADLINE_EXCEEDED);
    assert_int_equal(chat_err.code, SVC_DEADLINE_EXCEEDED);
    assert_int_equal(busy.rc, 0);
    assert_int_equal(after.slow_started - before.slow_started, 1);
    assert_int_equal(after.slow_finished - before.slow_finished, 1);
    assert_int_equal(status, 0);
}

/*
 * max_streams bounds the calls one connection has in the server at once
 * (a storm's memory): with 8, 8 long calls fill the connection, and 12 more
 * wait in the client until their 1 s deadlines pass, never reaching the
 * server. Without the bound all 20 would start. (Stats and the 8th call may
 * swap places, hence one of slack.)
 */
static void
test_max_streams_per_connection(void **state)
{
    enum { LONG = 8, SHORT = 12 };
    test_server_t lim;
    slow_job_t jobs[LONG + SHORT];
    pthread_t threads[LONG + SHORT];
    Svctest__V1__StatsResponse before, after;
    int status;

    (void)state;
    memset(jobs, 0, sizeof(jobs));
    server_start(&lim, "--max-streams=8");
    before = stats(&lim);
    for (int i = 0; i < LONG + SHORT; i++) {
        jobs[i].ts = &lim;
        jobs[i].park = 1;
        jobs[i].delay_ms = i < LONG ? 4000 : 10000;
        jobs[i].timeout_ms = i < LONG ? 60000 : 1000;
    }
    for (int i = 0; i < LONG - 1; i++) {
        assert_int_equal(pthread_create(&threads[i], NULL, slow_thread, &jobs[i]), 0);
    }
    wait_started(&lim, before.slow_started + LONG - 1); /* Stats takes the 8th place meanwhile */
    assert_int_equal(pthread_create(&threads[LONG - 1], NULL, slow_thread, &jobs[LONG - 1]), 0);
    svc_sleep_ms(200);
    for (int i = LONG; i < LONG + SHORT; i++) {
        assert_int_equal(pthread_create(&threads[i], NULL, slow_thread, &jobs[i]), 0);
    }
    for (int i = 0; i < LONG + SHORT; i++) {
        pthread_join(threads[i], NULL);
    }
    after = stats(&lim);
    status = server_stop(&lim);
    for (int i = 0; i < LONG + SHORT; i++) {
        if (i < LONG ? jobs[i].rc != 0 : jobs[i].err.code != SVC_DEADLINE_EXCEEDED) {
            fail_msg("call %d: rc %d %s", i, jobs[i].rc, jobs[i].rc ? jobs[i].err.msg : "");
        }
    }
    fprintf(stderr, "max_streams 8: %lld of %d calls reached the server\n",
            (long long)(after.slow_started - before.slow_started), LONG + SHORT);
    assert_in_range(after.slow_started - before.slow_started, LONG, LONG + 1);
    assert_int_equal(status, 0);
}

/* ---------- admission: calls in flight, per server and per peer ---------- */

/* Opens a Chat stream on c and has one message answered: a call in flight that holds no thread. */
static svc_client_stream_t *
chat_hold(svc_client_t *c, svc_arena_t *arena)
{
    Svctest__V1__ChatRequest req = SVCTEST__V1__CHAT_REQUEST__INIT;
    svc_client_stream_t *s = svc_client_stream_open(c, "/svctest.v1.TestService/Chat", NULL, NULL);
    ProtobufCMessage *msg;
    svc_err_t err;

    assert_non_null(s);
    req.text = "hold";
    assert_int_equal(svc_client_stream_send(s, &req.base, &err), 0);
    if (svc_client_stream_recv(s, &svctest__v1__chat_response__descriptor, arena, &msg, &err) !=
        1) {
        fail_msg("a Chat stream within the bounds was not answered: %s",
                 svc_client_stream_finish(s, &err) == 0 ? "OK" : err.msg);
    }
    return s;
}

/* Ends a stream of chat_hold. */
static void
chat_release(svc_client_stream_t *s)
{
    svc_err_t err;

    assert_int_equal(svc_client_stream_close_send(s, &err), 0);
    assert_int_equal(svc_client_stream_finish(s, &err), 0);
    svc_client_stream_destroy(s);
}

/* A Chat stream that must be refused: the status it ended with. */
static svc_err_t
chat_refused(svc_client_t *c, svc_arena_t *arena)
{
    Svctest__V1__ChatRequest req = SVCTEST__V1__CHAT_REQUEST__INIT;
    svc_client_stream_t *s = svc_client_stream_open(c, "/svctest.v1.TestService/Chat", NULL, NULL);
    ProtobufCMessage *msg;
    svc_err_t err;

    assert_non_null(s);
    req.text = "one too many";
    (void)svc_client_stream_send(s, &req.base, &err);
    assert_true(
        svc_client_stream_recv(s, &svctest__v1__chat_response__descriptor, arena, &msg, &err) != 1);
    assert_int_equal(svc_client_stream_finish(s, &err), -1);
    svc_client_stream_destroy(s);
    return err;
}

/* One Echo through c: 0, or -1 with err; *ms how long it took. */
static int
echo_via(svc_client_t *c, svc_err_t *err, int64_t *ms)
{
    Svctest__V1__EchoRequest req = SVCTEST__V1__ECHO_REQUEST__INIT;
    svc_arena_t *arena = svc_arena_create();
    svc_call_opts_t opts = {.timeout_ms = 30000};
    int64_t t0 = svc_now_mono_ms();
    ProtobufCMessage *out;
    int rc;

    req.message = "admitted?";
    rc = svc_client_unary(c, "/svctest.v1.TestService/Echo", &req.base,
                          &svctest__v1__echo_response__descriptor, arena, &out, &opts, err);
    if (ms != NULL) {
        *ms = svc_now_mono_ms() - t0;
    }
    svc_arena_destroy(arena);
    return rc;
}

/* Echo through c until it is admitted (a place frees as a call ends, soon after): 0 or -1. */
static int
echo_until_admitted(svc_client_t *c)
{
    svc_err_t err;

    for (int i = 0; i < 400; i++) {
        if (echo_via(c, &err, NULL) == 0) {
            return 0;
        }
        if (err.code != SVC_RESOURCE_EXHAUSTED) {
            fail_msg("Echo: %s %s", svc_status_name(err.code), err.msg);
        }
        svc_sleep_ms(10);
    }
    return -1;
}

/*
 * A reflection stream through c, at the cap: refused like any call (only
 * Health/Check is exempt; a stream left open would hold memory unbounded).
 */
static void
reflection_refused(svc_client_t *c)
{
    Grpc__Reflection__V1__ServerReflectionRequest req =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    svc_arena_t *arena = svc_arena_create();
    svc_client_stream_t *s;
    ProtobufCMessage *msg;
    svc_err_t err;

    s = svc_client_stream_open(c, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", NULL,
                               &err);
    assert_non_null(s);
    req.message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
    req.list_services = "*";
    (void)svc_client_stream_send(s, &req.base, &err); /* may already see the end */
    assert_true(
        svc_client_stream_recv(s, &grpc__reflection__v1__server_reflection_response__descriptor,
                               arena, &msg, &err) != 1);
    assert_int_equal(svc_client_stream_finish(s, &err), -1);
    assert_int_equal(err.code, SVC_RESOURCE_EXHAUSTED);
    svc_client_stream_destroy(s);
    svc_arena_destroy(arena);
}

/*
 * MAX_IN_FLIGHT 8: eight Chat streams are in flight (parked: no thread
 * holds them). A ninth call of any kind is answered RESOURCE_EXHAUSTED at
 * once, its handler never runs, and grpc_server_shed_total counts it; health
 * checks and reflection still answer. Once one stream ends, calls are taken
 * again.
 */
static void
test_in_flight_cap_refuses_at_once(void **state)
{
    enum { CAP = 8, REFUSED = 20 };
    const char *flags[] = {"--max-in-flight=8", NULL};
    svc_arena_t *arena = svc_arena_create();
    svc_client_stream_t *held[CAP];
    test_server_t ts;
    int64_t ms, slowest = 0;
    int status = 0;
    svc_err_t err;

    (void)state;
    server_start_with(&ts, NULL, flags);
    for (int i = 0; i < CAP; i++) {
        held[i] = chat_hold(ts.client, arena);
    }
    for (int i = 0; i < REFUSED; i++) {
        assert_int_equal(echo_via(ts.client, &err, &ms), -1);
        assert_int_equal(err.code, SVC_RESOURCE_EXHAUSTED);
        assert_string_equal(err.msg, "too many calls in flight, retry later");
        slowest = ms > slowest ? ms : slowest;
    }
    err = chat_refused(ts.client, arena);
    assert_int_equal(err.code, SVC_RESOURCE_EXHAUSTED);
    fprintf(stderr, "%d calls in flight: %d more refused, the slowest in %lld ms\n", CAP,
            REFUSED + 1, (long long)slowest);
    assert_true(slowest < 1000);

    /* Health checks are never refused; reflection (a stream) is, like any call. */
    assert_int_equal(health_check(ts.client, "", &status, &err), 0);
    assert_int_equal(status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    assert_int_equal(health_check(ts.client, "svctest.v1.TestService", &status, &err), 0);
    assert_int_equal(status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    reflection_refused(ts.client);

    assert_true(shed_count(&ts, "unary", "Echo", "in_flight") == REFUSED);
    assert_true(shed_count(&ts, "bidi_stream", "Chat", "in_flight") == 1);
    assert_true(metric(&ts, "grpc_server_handled_total", "unary", "Echo",
                       "grpc_code=\"ResourceExhausted\"") == REFUSED);
    assert_true(metric(&ts, "grpc_server_handled_total", "unary", "Echo", "grpc_code=\"OK\"") == 0);
    /* The handler saw only the eight admitted messages. */
    for (int i = 0; i < CAP - 1; i++) {
        chat_release(held[i]);
    }
    assert_int_equal(echo_until_admitted(ts.client), 0);
    assert_int_equal(stats(&ts).chat_messages, CAP);
    chat_release(held[CAP - 1]);
    status = server_stop(&ts);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    svc_arena_destroy(arena);
}

/* Whether this machine has IPv6 loopback (the per-peer test needs a second peer address). */
static bool
ipv6_loopback(void)
{
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    bool ok = fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;

    if (fd >= 0) {
        close(fd);
    }
    return ok;
}

/*
 * MAX_IN_FLIGHT_PER_PEER 3 under MAX_IN_FLIGHT 5. A peer is an address: on
 * one machine every client is 127.0.0.1, so the second peer here comes over
 * IPv6 (::1) to the same server. Peer A gets three calls in flight and no
 * fourth ("from this client"), though the server has room; peer B still
 * gets in until the server's bound; once A ends a call, B gets another.
 */
static void
test_per_peer_cap(void **state)
{
    const char *flags[] = {"--max-in-flight=5", "--max-in-flight-per-peer=3", NULL};
    svc_arena_t *arena = svc_arena_create();
    svc_client_stream_t *a[3], *b[2];
    svc_client_t *via_v6;
    char target[96];
    test_server_t ts;
    int status;
    svc_err_t err;

    (void)state;
    if (!ipv6_loopback()) {
        fprintf(stderr, "no IPv6 loopback: one peer only\n");
        skip();
    }
    server_start_with(&ts, "[::]", flags);
    snprintf(target, sizeof(target), "ipv6:[::1]:%d", ts.port);
    assert_non_null(via_v6 = svc_client_get(target, &err));
    for (int i = 0; i < 3; i++) {
        a[i] = chat_hold(ts.client, arena);
    }
    assert_int_equal(echo_via(ts.client, &err, NULL), -1);
    assert_int_equal(err.code, SVC_RESOURCE_EXHAUSTED);
    assert_string_equal(err.msg, "too many calls in flight from this client, retry later");
    err = chat_refused(ts.client, arena);
    assert_int_equal(err.code, SVC_RESOURCE_EXHAUSTED);

    for (int i = 0; i < 2; i++) { /* the other peer still gets in, up to the server's bound */
        b[i] = chat_hold(via_v6, arena);
    }
    assert_int_equal(echo_via(via_v6, &err, NULL), -1);
    assert_int_equal(err.code, SVC_RESOURCE_EXHAUSTED);
    assert_string_equal(err.msg, "too many calls in flight, retry later");
    assert_int_equal(health_check(ts.client, "", &status, &err), 0);
    assert_int_equal(status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);

    assert_true(shed_count(&ts, "unary", "Echo", "peer") == 1);
    assert_true(shed_count(&ts, "bidi_stream", "Chat", "peer") == 1);
    assert_true(shed_count(&ts, "unary", "Echo", "in_flight") == 1);

    chat_release(a[0]); /* A is under its bound again, and the server under its own */
    assert_int_equal(echo_until_admitted(via_v6), 0);
    assert_int_equal(echo_until_admitted(ts.client), 0);
    for (int i = 1; i < 3; i++) {
        chat_release(a[i]);
    }
    for (int i = 0; i < 2; i++) {
        chat_release(b[i]);
    }
    status = server_stop(&ts);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    svc_arena_destroy(arena);
}

/*
 * The worker pool's queue is bounded too: with one worker busy and
 * MAX_QUEUED 2 calls already waiting for it, a new call that needs a worker
 * is answered RESOURCE_EXHAUSTED at once instead of queuing behind them;
 * health (answered on the completion-queue thread) still answers. The two
 * that waited run once the worker is free.
 */
static void
test_full_worker_queue_refuses_at_once(void **state)
{
    const char *flags[] = {"--max-workers=1", "--max-queued=2", NULL};
    slow_job_t jobs[3];
    pthread_t threads[3];
    test_server_t ts;
    int64_t ms;
    int status = 0;
    svc_err_t err;

    (void)state;
    memset(jobs, 0, sizeof(jobs));
    setenv("WORKERS", "1", 1);
    server_start_with(&ts, NULL, flags);
    unsetenv("WORKERS");
    for (int i = 0; i < 3; i++) {
        jobs[i].ts = &ts;
        jobs[i].delay_ms = i == 0 ? 1500 : 10; /* the first blocks the one worker */
        assert_int_equal(pthread_create(&threads[i], NULL, slow_thread, &jobs[i]), 0);
        /* Accepted (counted as started on the CQ thread, before it is queued), in this order. */
        for (int k = 0;
             k < 500 && metric(&ts, "grpc_server_started_total", "unary", "Slow", NULL) < i + 1;
             k++) {
            svc_sleep_ms(5);
        }
    }
    svc_sleep_ms(50);
    assert_int_equal(echo_via(ts.client, &err, &ms), -1);
    assert_int_equal(err.code, SVC_RESOURCE_EXHAUSTED);
    assert_string_equal(err.msg, "too many calls waiting for a worker, retry later");
    assert_true(ms < 1000);
    assert_int_equal(health_check(ts.client, "", &status, &err), 0);
    assert_int_equal(status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    for (int i = 0; i < 3; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(jobs[i].rc, 0);
    }
    assert_true(shed_count(&ts, "unary", "Echo", "queue") == 1);
    assert_int_equal(echo_until_admitted(ts.client), 0);
    status = server_stop(&ts);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void
test_bad_setting_exits_2_and_help_exits_0(void **state)
{
    (void)state;
    assert_int_equal(run_config("--workers=abc"), 2);
    assert_int_equal(run_config("--no-such-flag"), 2);
    assert_int_equal(run_config("--help"), 0);
}

static int
setup(void **state)
{
    (void)state;
    server_start(&main_server, NULL);
    return 0;
}

static int
teardown(void **state)
{
    int status = server_stop(&main_server);

    (void)state;
    svc_client_release_all();
    /* The main server, too, must leave cleanly (ASan would make this non-zero on a leak). */
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* Calls started asynchronously from one thread, and what their callbacks saw. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, ok, unavailable, wrong;
} async_tally_t;

typedef struct {
    async_tally_t *tally;
    char message[32];
    svc_arena_t *arena;
    int calls; /* how often its callback ran */
} async_job_t;

static void
async_done(ProtobufCMessage *resp, const svc_err_t *err, void *arg)
{
    async_job_t *job = arg;
    async_tally_t *t = job->tally;
    const Svctest__V1__EchoResponse *echo = (const void *)resp;

    pthread_mutex_lock(&t->mu);
    job->calls++;
    if (err->code == SVC_OK && strcmp(echo->message, job->message) == 0) {
        t->ok++;
    } else if (err->code == SVC_UNAVAILABLE) {
        t->unavailable++;
    } else {
        t->wrong++;
    }
    t->done++;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

/*
 * 300 Echo calls started asynchronously from this one thread: none of them needs a thread of ours
 * while in flight. Each callback runs exactly once with its own answer; a call to a port nobody
 * listens on ends UNAVAILABLE through its callback too.
 */
static void
test_async_calls_need_no_thread(void **state)
{
    enum { N = 300 };
    test_server_t *ts = &main_server;
    async_job_t *jobs = calloc(N + 1, sizeof(*jobs));
    async_tally_t t = {.done = 0};
    Svctest__V1__EchoRequest req = SVCTEST__V1__ECHO_REQUEST__INIT;
    svc_call_opts_t opts = {.timeout_ms = 60000};
    char nowhere[32];
    svc_client_t *down;
    svc_err_t err;

    (void)state;
    pthread_mutex_init(&t.mu, NULL);
    pthread_cond_init(&t.cv, NULL);
    for (int i = 0; i < N; i++) {
        jobs[i].tally = &t;
        jobs[i].arena = svc_arena_create();
        snprintf(jobs[i].message, sizeof(jobs[i].message), "async %d", i);
        req.message = jobs[i].message;
        svc_client_unary_async(ts->client, "/svctest.v1.TestService/Echo", &req.base,
                               &svctest__v1__echo_response__descriptor, jobs[i].arena, &opts,
                               async_done, &jobs[i]);
    }
    snprintf(nowhere, sizeof(nowhere), "127.0.0.1:%d", testenv_free_port());
    assert_non_null(down = svc_client_get(nowhere, &err));
    jobs[N].tally = &t;
    jobs[N].arena = svc_arena_create();
    req.message = "nobody listens";
    svc_client_unary_async(down, "/svctest.v1.TestService/Echo", &req.base,
                           &svctest__v1__echo_response__descriptor, jobs[N].arena, &opts,
                           async_done, &jobs[N]);
    pthread_mutex_lock(&t.mu);
    while (t.done < N + 1) {
        pthread_cond_wait(&t.cv, &t.mu);
    }
    pthread_mutex_unlock(&t.mu);
    assert_int_equal(t.ok, N);
    assert_int_equal(t.unavailable, 1);
    assert_int_equal(t.wrong, 0);
    for (int i = 0; i <= N; i++) {
        assert_int_equal(jobs[i].calls, 1);
        svc_arena_destroy(jobs[i].arena);
    }
    pthread_cond_destroy(&t.cv);
    pthread_mutex_destroy(&t.mu);
    free(jobs);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unknown_method_is_unimplemented_fast),
        cmocka_unit_test(test_garbage_bytes_are_invalid_argument),
        cmocka_unit_test(test_request_id_and_deadline_propagate),
        cmocka_unit_test(test_request_id_from_the_thread_context),
        cmocka_unit_test(test_round_robin_over_two_addresses),
        cmocka_unit_test(test_slow_handshake_is_not_a_down_peer),
        cmocka_unit_test(test_metadata_reaches_the_handler),
        cmocka_unit_test(test_server_stream),
        cmocka_unit_test(test_bidi_stream),
        cmocka_unit_test(test_health),
        cmocka_unit_test(test_reflection_lists_and_describes),
        cmocka_unit_test(test_deadline_is_seen_as_cancellation),
        cmocka_unit_test(test_slow_calls_do_not_block_fast_ones),
        cmocka_unit_test(test_async_calls_need_no_thread),
        cmocka_unit_test(test_expired_call_never_reaches_its_handler),
        cmocka_unit_test(test_sigterm_lets_calls_finish),
        cmocka_unit_test(test_max_streams_per_connection),
        cmocka_unit_test(test_in_flight_cap_refuses_at_once),
        cmocka_unit_test(test_per_peer_cap),
        cmocka_unit_test(test_full_worker_queue_refuses_at_once),
        cmocka_unit_test(test_bad_setting_exits_2_and_help_exits_0),
    };

    if (argc < 2) {
        fprintf(stderr, "usage: %s path/to/svctest-server\n", argv[0]);
        return 2;
    }
    server_path = argv[1];
    signal(SIGPIPE, SIG_IGN);
    return testenv_group_result(
        cmocka_run_group_tests(tests, setup, testenv_group_teardown(teardown)));
}
