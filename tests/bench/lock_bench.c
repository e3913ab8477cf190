/*
 * lock_bench.c: lock-bench, a load tool for lock-svc. Measures acquire+release
 * pairs per second and their latency through lock-svc and through the same Lua
 * scripts called directly over hiredis (lock_raw: a copy of lock-svc's
 * acquire and release, one blocking connection per thread), then the
 * hand-off rate on one contended key. It prints numbers; it passes or fails
 * nothing on time.
 *
 * The lock-svc side is an asynchronous client on gRPC C core: client threads
 * (by default one per CPU, at most two), each with a completion queue, keep
 * `concurrency` calls in flight on one shared channel. A blocking thread per caller cost this tool
 * 3 to 4 times the CPU of the hiredis path per pair, on the CPUs lock-svc and
 * Redis also run on, and that was charged against lock-svc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "bench_common.h"
#include "lock/v1/lock.pb-c.h"
#include "lock_raw.h"
#include "svc/config.h"
#include "svc/err.h"
#include "svc/lock_client.h"
#include "svc/log.h"
#include "svc/timer.h"

#define BENCH_OWNER "lock-bench"
#define LEASE_MS 10000
#define HANDOFF_WAIT_MS 10000
#define MAX_CONC 1024
#define MAX_CONC_LIST 16
#define N_PROCS 3 /* CPU time is reported for: this tool, lock-svc, redis-server */
#define TARGET_CONC 64
#define TARGET_RATIO 0.7
#define TARGET_HANDOFF 5000.0  /* grants/s on one key at TARGET_CONC waiters */
#define CALL_DEADLINE_MS 30000 /* per lock-svc call; beyond HANDOFF_WAIT_MS */
#define MAX_CLIENT_THREADS 16
#define AUTO_CLIENT_THREADS 2 /* one per CPU, at most this many */
#define ACQUIRE_METHOD "/lock.v1.LockService/Acquire"
#define RELEASE_METHOD "/lock.v1.LockService/Release"

typedef enum {
    MODE_SVC_PAIR,    /* lock-svc: acquire (wait_ms 0) + release, own key */
    MODE_RAW_PAIR,    /* lock_raw: the same scripts over hiredis, own key */
    MODE_SVC_HANDOFF, /* lock-svc: acquire (wait_ms 10000) + release, one shared key */
    MODE_RAW_SPIN,    /* lock_raw: retry acquire without pause until granted, shared key */
} bench_mode_t;

typedef struct bench_run bench_run_t;

typedef enum {
    RPC_IDLE,
    RPC_ACQUIRE,
    RPC_RELEASE,
} rpc_phase_t;

/*
 * A caller's lock-svc call in flight, and what its one batch fills in. Owned
 * by the client thread whose queue cq is; released by rpc_cleanup.
 */
typedef struct {
    grpc_completion_queue *cq;
    rpc_phase_t phase;
    bench_call_t call;
    grpc_metadata md;       /* x-request-id, as libsvc's client sends it */
    int64_t pairs;          /* pairs started */
    uint64_t calls;         /* calls started, for x-request-id */
    int64_t t0, t_acquired; /* pair started; its Acquire completed */
    char token[SVC_LOCK_TOKEN_MAX + 1];
} bench_rpc_t;

/*
 * One caller: a load thread of the raw path, or a call slot of an async
 * client thread (lock-svc path). Its own samples and counters, read by main
 * after the threads are joined.
 */
typedef struct {
    bench_run_t *run;
    int index;
    int gen; /* bumped after a failure, so a key we may still hold is not reused */
    char key[SVC_LOCK_KEY_MAX + 1];
    bench_rpc_t rpc;
    bench_samples_t lat;
    int64_t done;    /* pairs (or grants) fully inside the measured window */
    int64_t refused; /* raw spin: refused attempts inside the window */
    bench_errors_t err;
    lock_raw_t *raw; /* raw path: this caller's connection */
} bench_worker_t;

/* One async client thread: its queue serves workers first, first + stride, ... */
typedef struct {
    bench_worker_t *workers;
    int first, stride, n_workers;
    grpc_completion_queue *cq;
} bench_client_t;

/* One scenario: a mode at a concurrency. Times are CLOCK_MONOTONIC ns. */
struct bench_run {
    bench_mode_t mode;
    int conc;
    int client_threads; /* lock-svc modes: async client threads */
    bool once;          /* lock-svc modes: each caller makes one pair, whatever the time */
    const char *run_id;
    grpc_channel *channel;
    const char *redis_url; /* raw path */
    pthread_barrier_t start;
    bench_window_t win;
    int (*op)(bench_worker_t *w, int64_t *sample_ns);
};

/* What one scenario measured. */
typedef struct {
    int64_t done, refused;
    bench_errors_t err;
    double window_s, rate, refused_rate, p50_ms, p99_ms;
    double cores[N_PROCS];  /* CPU seconds per second of window; < 0 unknown */
    double us_per[N_PROCS]; /* CPU microseconds per done operation; < 0 unknown */
} bench_result_t;

typedef struct {
    const char *lock_addr, *redis_url, *conc_text;
    int64_t seconds, lock_pid, redis_pid, client_threads;
    int conc[MAX_CONC_LIST];
    int n_conc;
    char run_id[9];
    grpc_channel *channel;
} bench_cfg_t;

/* ---------- the operations, one per mode ---------- */

static void
worker_set_key(bench_worker_t *w)
{
    const bench_run_t *run = w->run;

    switch (run->mode) {
    case MODE_SVC_PAIR:
    case MODE_RAW_PAIR:
        snprintf(w->key, sizeof(w->key), "bench:%s:%s:c%d:t%d:g%d", run->run_id,
                 run->mode == MODE_SVC_PAIR ? "svc" : "raw", run->conc, w->index, w->gen);
        break;
    case MODE_SVC_HANDOFF:
    case MODE_RAW_SPIN:
        snprintf(w->key, sizeof(w->key), "bench:%s:handoff:%s:c%d", run->run_id,
                 run->mode == MODE_SVC_HANDOFF ? "svc" : "raw", run->conc);
        break;
    }
}

/* Counts a failed operation; the pair it belonged to is not counted as done. */
static int
worker_fail(bench_worker_t *w, const svc_err_t *err)
{
    bench_errors_add(&w->err, err);
    w->gen++;
    worker_set_key(w);
    return -1;
}

/* One attempt of the acquire script, as lock-svc makes it for wait_ms 0. */
static int
raw_try(bench_worker_t *w, const char *token, svc_err_t *err)
{
    int64_t fence;

    return lock_raw_acquire(w->raw, w->key, token, BENCH_OWNER, LEASE_MS, &fence, err);
}

static int
op_raw_pair(bench_worker_t *w, int64_t *sample_ns)
{
    char token[LOCK_RAW_TOKEN_LEN + 1];
    svc_err_t err;
    int64_t t0 = bench_now_ns();
    int rc;

    lock_raw_new_token(token);
    if ((rc = raw_try(w, token, &err)) < 0) {
        return worker_fail(w, &err);
    }
    if (rc == 0) {
        svc_err_set(&err, SVC_ABORTED, "lock %s is held", w->key);
        return worker_fail(w, &err);
    }
    if (lock_raw_release(w->raw, w->key, token, &err) != 0) {
        return worker_fail(w, &err);
    }
    *sample_ns = bench_now_ns() - t0;
    return 0;
}

/*
 * Busy polling: retries the acquire script with no pause until granted, then
 * releases. Returns 1 (neither done nor failed) when the window ended first.
 */
static int
op_raw_spin(bench_worker_t *w, int64_t *sample_ns)
{
    char token[LOCK_RAW_TOKEN_LEN + 1];
    svc_err_t err;
    int64_t t0 = bench_now_ns(), t;
    int rc;

    lock_raw_new_token(token);
    for (;;) {
        if ((rc = raw_try(w, token, &err)) < 0) {
            return worker_fail(w, &err);
        }
        if (rc == 1) {
            break;
        }
        t = bench_now_ns();
        if (t >= w->run->win.end_ns) {
            return 1;
        }
        if (t >= w->run->win.warm_end_ns) {
            w->refused++;
        }
    }
    *sample_ns = bench_now_ns() - t0;
    if (lock_raw_release(w->raw, w->key, token, &err) != 0) {
        return worker_fail(w, &err);
    }
    return 0;
}

/* Counts a successful operation that started at t0 and ended at t1, if inside the window. */
static void
worker_record(bench_worker_t *w, int64_t t0, int64_t t1, int64_t sample)
{
    svc_err_t err;

    if (!bench_window_holds(&w->run->win, t0, t1)) {
        return;
    }
    if (bench_samples_push(&w->lat, sample) != 0) {
        svc_err_set(&err, SVC_RESOURCE_EXHAUSTED, "out of memory for samples");
        (void)worker_fail(w, &err);
        return;
    }
    w->done++;
}

/* ---------- lock-svc: an asynchronous client on gRPC C core ---------- */

/* Frees everything the call in r holds and unrefs it; r is idle after. */
static void
rpc_cleanup(bench_rpc_t *r)
{
    grpc_slice_unref(r->md.value);
    bench_call_cleanup(&r->call);
    r->phase = RPC_IDLE;
}

/*
 * Starts w's Acquire, or the Release of w->rpc.token, as one batch on w's
 * queue, tagged w. Returns 0, or -1 with err set and nothing left to free.
 */
static int
rpc_start(bench_worker_t *w, rpc_phase_t phase, svc_err_t *err)
{
    Lock__V1__AcquireRequest acq = LOCK__V1__ACQUIRE_REQUEST__INIT;
    Lock__V1__ReleaseRequest rel = LOCK__V1__RELEASE_REQUEST__INIT;
    const char *method = phase == RPC_ACQUIRE ? ACQUIRE_METHOD : RELEASE_METHOD;
    bench_rpc_t *r = &w->rpc;
    char request_id[64];
    grpc_call_error rc;

    acq.key = rel.key = w->key;
    acq.owner = BENCH_OWNER;
    acq.lease_ms = LEASE_MS;
    acq.wait_ms = w->run->mode == MODE_SVC_HANDOFF ? HANDOFF_WAIT_MS : 0;
    rel.token = r->token;
    if (bench_call_init(&r->call, w->run->channel, r->cq, method, CALL_DEADLINE_MS,
                        phase == RPC_ACQUIRE ? &acq.base : &rel.base) != 0) {
        svc_err_set(err, SVC_INTERNAL, "cannot create a call to %s", method);
        return -1;
    }
    r->phase = phase;
    snprintf(request_id, sizeof(request_id), "%s-%d-%" PRIu64, w->run->run_id, w->index,
             r->calls++);
    r->md.key = grpc_slice_from_static_string("x-request-id");
    r->md.value = grpc_slice_from_copied_string(request_id);
    if ((rc = bench_call_start(&r->call, &r->md, 1, w)) != GRPC_CALL_OK) {
        rpc_cleanup(r);
        svc_err_set(err, SVC_INTERNAL, "cannot start a call to %s: %s", method,
                    grpc_call_error_to_string(rc));
        return -1;
    }
    return 0;
}

/*
 * Reads the outcome of w's completed batch (ok: the event's success), keeps an
 * Acquire's token, and cleans the call up. Returns 0, or -1 with err set.
 */
static int
rpc_finish(bench_worker_t *w, bool ok, svc_err_t *err)
{
    bench_rpc_t *r = &w->rpc;
    bool acquire = r->phase == RPC_ACQUIRE;
    const char *method = acquire ? ACQUIRE_METHOD : RELEASE_METHOD;
    ProtobufCMessage *resp = NULL;
    int rc = -1;

    if (!ok) {
        svc_err_set(err, SVC_UNAVAILABLE, "call to %s failed", method);
    } else if (r->call.status != GRPC_STATUS_OK) {
        char *text = grpc_slice_to_c_string(r->call.details);
        svc_err_set(err, svc_status_from_grpc((int)r->call.status), "%s", text[0] ? text : method);
        gpr_free(text);
    } else if ((resp = bench_unpack(r->call.recv,
                                    acquire ? &lock__v1__acquire_response__descriptor
                                            : &lock__v1__release_response__descriptor)) == NULL) {
        svc_err_set(err, SVC_INTERNAL, "bad response from %s", method);
    } else {
        if (acquire) {
            snprintf(r->token, sizeof(r->token), "%s", ((Lock__V1__AcquireResponse *)resp)->token);
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        rc = 0;
    }
    rpc_cleanup(r);
    return rc;
}

/* Starts w's next pair unless its time is over; returns whether a call is in flight. */
static bool
pair_start(bench_worker_t *w)
{
    bench_rpc_t *r = &w->rpc;
    svc_err_t err;

    for (;;) {
        int64_t t0 = bench_now_ns();

        if (t0 >= w->run->win.end_ns || (w->run->once && r->pairs > 0)) {
            return false;
        }
        r->pairs++;
        r->t0 = t0;
        if (rpc_start(w, RPC_ACQUIRE, &err) == 0) {
            return true;
        }
        (void)worker_fail(w, &err);
    }
}

/*
 * Advances w's state machine on its batch's completion: Acquire done, start
 * the Release; Release done, record the pair and start the next. Hand-off
 * samples the acquire wait, the others the pair. Returns whether a call is in
 * flight.
 */
static bool
pair_step(bench_worker_t *w, bool ok)
{
    bench_rpc_t *r = &w->rpc;
    rpc_phase_t phase = r->phase;
    svc_err_t err;
    int64_t t1;

    if (rpc_finish(w, ok, &err) != 0) {
        (void)worker_fail(w, &err);
        return pair_start(w);
    }
    t1 = bench_now_ns();
    if (phase == RPC_ACQUIRE) {
        r->t_acquired = t1;
        if (rpc_start(w, RPC_RELEASE, &err) == 0) {
            return true;
        }
        (void)worker_fail(w, &err);
        return pair_start(w);
    }
    worker_record(w, r->t0, t1,
                  w->run->mode == MODE_SVC_HANDOFF ? r->t_acquired - r->t0 : t1 - r->t0);
    return pair_start(w);
}

/*
 * Runs c's callers on a fresh completion queue until none has a call in
 * flight, then shuts the queue down, drains it and destroys it.
 */
static void
client_run(bench_client_t *c)
{
    gpr_timespec forever = gpr_inf_future(GPR_CLOCK_MONOTONIC);
    int active = 0;

    c->cq = grpc_completion_queue_create_for_next(NULL);
    for (int i = c->first; i < c->n_workers; i += c->stride) {
        c->workers[i].rpc.cq = c->cq;
        active += pair_start(&c->workers[i]) ? 1 : 0;
    }
    while (active > 0) {
        grpc_event ev = grpc_completion_queue_next(c->cq, forever, NULL);

        if (ev.type != GRPC_OP_COMPLETE) { /* not shut down, no deadline: cannot happen */
            fprintf(stderr, "lock-bench: completion queue returned event type %d\n", (int)ev.type);
            abort();
        }
        if (!pair_step(ev.tag, ev.success != 0)) {
            active--;
        }
    }
    grpc_completion_queue_shutdown(c->cq);
    while (grpc_completion_queue_next(c->cq, forever, NULL).type != GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(c->cq);
    c->cq = NULL;
}

static void *
client_main(void *arg)
{
    bench_client_t *c = arg;

    pthread_barrier_wait(&c->workers[0].run->start);
    client_run(c);
    return NULL;
}

/* ---------- running a scenario ---------- */

/* Raw path: loops the operation until the window ends; counts what started and ended inside it. */
static void *
worker_main(void *arg)
{
    bench_worker_t *w = arg;
    const bench_run_t *run = w->run;

    pthread_barrier_wait(&w->run->start);
    for (;;) {
        int64_t t0 = bench_now_ns(), sample = 0;
        int rc;

        if (t0 >= run->win.end_ns) {
            break;
        }
        rc = run->op(w, &sample);
        if (rc == 0) {
            worker_record(w, t0, bench_now_ns(), sample);
        }
    }
    return NULL;
}

/* Sums the workers' counters and samples into res (latencies sorted for percentiles). */
static void
collect(bench_worker_t *workers, int n, bench_result_t *res)
{
    bench_samples_t all = {0};

    for (int i = 0; i < n; i++) {
        bench_worker_t *w = &workers[i];
        res->done += w->done;
        res->refused += w->refused;
        bench_errors_merge(&res->err, &w->err);
        if (bench_samples_move(&all, &w->lat) != 0) {
            fprintf(stderr, "lock-bench: out of memory for %zu samples\n", all.n + w->lat.n);
            exit(1);
        }
    }
    bench_samples_percentiles(&all, &res->p50_ms, &res->p99_ms);
    bench_samples_free(&all);
}

/*
 * Starts the scenario's threads, which wait on run->start: raw path, one per
 * caller running run->op; lock-svc path, run->client_threads async clients
 * (fewer when there are fewer callers) sharing the callers. Returns how many.
 */
static int
start_threads(bench_run_t *run, bench_worker_t *workers, bench_client_t *clients, pthread_t *tids)
{
    bool async = run->mode == MODE_SVC_PAIR || run->mode == MODE_SVC_HANDOFF;
    int n = async ? (run->client_threads < run->conc ? run->client_threads : run->conc) : run->conc;

    if (pthread_barrier_init(&run->start, NULL, (unsigned)n + 1) != 0) {
        fprintf(stderr, "lock-bench: cannot set up %d threads\n", n);
        exit(1);
    }
    for (int i = 0; i < run->conc; i++) {
        svc_err_t err;
        workers[i].run = run;
        workers[i].index = i;
        worker_set_key(&workers[i]);
        if (!async && (workers[i].raw = lock_raw_connect(run->redis_url, &err)) == NULL) {
            fprintf(stderr, "lock-bench: %s\n", err.msg);
            exit(2);
        }
    }
    for (int i = 0; i < n; i++) {
        int rc;

        if (async) {
            clients[i] = (bench_client_t){
                .workers = workers, .first = i, .stride = n, .n_workers = run->conc};
            rc = pthread_create(&tids[i], NULL, client_main, &clients[i]);
        } else {
            rc = pthread_create(&tids[i], NULL, worker_main, &workers[i]);
        }
        if (rc != 0) {
            fprintf(stderr, "lock-bench: cannot start thread %d\n", i);
            exit(1);
        }
    }
    return n;
}

/*
 * Runs run->conc callers, of run->op (raw) or of the async lock-svc client,
 * for a warm-up, then `seconds` measured, and fills res. Main samples
 * CPU time at both ends of the window.
 */
static void
run_scenario(bench_run_t *run, int64_t seconds, const int64_t pids[N_PROCS], bench_result_t *res)
{
    bench_worker_t *workers = calloc((size_t)run->conc, sizeof(*workers));
    bench_client_t *clients = calloc((size_t)run->conc, sizeof(*clients));
    pthread_t *tids = calloc((size_t)run->conc, sizeof(*tids));
    int64_t cpu0[N_PROCS + 2], cpu1[N_PROCS + 2], ticks[N_PROCS];
    int n_threads;

    if (workers == NULL || clients == NULL || tids == NULL) {
        fprintf(stderr, "lock-bench: cannot set up %d workers\n", run->conc);
        exit(1);
    }
    memset(res, 0, sizeof(*res));
    n_threads = start_threads(run, workers, clients, tids);
    /* Set before the barrier: the threads read them after it. */
    run->win = bench_window_from_now(seconds);
    pthread_barrier_wait(&run->start);
    bench_cpu_window(&run->win, pids, N_PROCS, -1, cpu0, cpu1);
    for (int i = 0; i < n_threads; i++) {
        pthread_join(tids[i], NULL);
    }
    pthread_barrier_destroy(&run->start);
    for (int i = 0; i < run->conc; i++) {
        lock_raw_close(workers[i].raw);
    }
    res->window_s = (double)seconds;
    collect(workers, run->conc, res);
    res->rate = (double)res->done / res->window_s;
    res->refused_rate = (double)res->refused / res->window_s;
    bench_cpu_delta(cpu0, cpu1, N_PROCS, ticks);
    bench_cpu_rates(ticks, N_PROCS, res->window_s, (double)res->done, res->cores, res->us_per);
    free(tids);
    free(clients);
    free(workers);
}

/* Sets up the scenario (raw path: one connection per caller) and runs it. */
static void
bench_one(const bench_cfg_t *cfg, bench_mode_t mode, int conc, bench_result_t *res)
{
    bench_run_t run = {.mode = mode,
                       .conc = conc,
                       .client_threads = (int)cfg->client_threads,
                       .run_id = cfg->run_id,
                       .redis_url = cfg->redis_url};
    const int64_t pids[N_PROCS] = {0, cfg->lock_pid > 0 ? cfg->lock_pid : -1,
                                   cfg->redis_pid > 0 ? cfg->redis_pid : -1};

    if (mode == MODE_SVC_PAIR || mode == MODE_SVC_HANDOFF) {
        run.channel = cfg->channel; /* op stays NULL: the async client */
    } else {
        run.op = mode == MODE_RAW_PAIR ? op_raw_pair : op_raw_spin;
    }
    run_scenario(&run, cfg->seconds, pids, res);
}

/* ---------- printing ---------- */

static void
print_cpu(const bench_result_t *r)
{
    printf(" |");
    for (int i = 0; i < N_PROCS; i++) {
        bench_print_num(5, 2, r->cores[i]);
    }
    printf(" |");
    for (int i = 0; i < N_PROCS; i++) {
        bench_print_num(6, 1, r->us_per[i]);
    }
    printf("\n");
}

static void
print_cpu_legend(void)
{
    printf("cpu: cores busy, then CPU us per done operation, for: bench = this tool, "
           "svc = lock-svc, redis = redis-server\n");
}

static void
print_pair_header(void)
{
    printf("\n== acquire + release on distinct keys (one key per caller, wait_ms 0, "
           "lease %d ms) ==\n",
           LEASE_MS);
    print_cpu_legend();
    printf("%-10s %5s %9s %10s %8s %8s %7s | %5s %5s %5s | %6s %6s %6s\n", "scenario", "conc",
           "pairs", "pairs/s", "p50 ms", "p99 ms", "errors", "bench", "svc", "redis", "bench",
           "svc", "redis");
    fflush(stdout);
}

static void
print_pair_row(const char *label, int conc, const bench_result_t *r)
{
    printf("%-10s %5d %9" PRId64 " %10.1f %8.3f %8.3f %7" PRId64, label, conc, r->done, r->rate,
           r->p50_ms, r->p99_ms, r->err.n);
    print_cpu(r);
    fflush(stdout);
}

static void
print_handoff_header(void)
{
    printf("\n== hand-off on one contended key (every caller: acquire, then release at once) "
           "==\n");
    printf("lock-svc: wait_ms %d, waiters parked in FIFO order, p50/p99 of the acquire wait;\n",
           HANDOFF_WAIT_MS);
    printf("raw spin: the acquire script retried with no pause until granted; not comparable\n");
    print_cpu_legend();
    printf("%-40s %5s %9s %9s %10s %8s %8s %7s | %5s %5s %5s | %6s %6s %6s\n", "scenario", "conc",
           "grants", "grants/s", "refused/s", "p50 ms", "p99 ms", "errors", "bench", "svc", "redis",
           "bench", "svc", "redis");
    fflush(stdout);
}

static void
print_handoff_row(const char *label, int conc, const bench_result_t *r, bool spin)
{
    char refused[32] = "-";

    if (spin) {
        snprintf(refused, sizeof(refused), "%.0f", r->refused_rate);
    }
    printf("%-40s %5d %9" PRId64 " %9.1f %10s %8.3f %8.3f %7" PRId64, label, conc, r->done, r->rate,
           refused, r->p50_ms, r->p99_ms, r->err.n);
    print_cpu(r);
    fflush(stdout);
}

/* One line per scenario that had failures: counts by status and the first message. */
static void
print_errors(const char *label, int conc, const bench_result_t *r)
{
    if (r->err.n == 0) {
        return;
    }
    printf("  errors in %s at concurrency %d:", label, conc);
    bench_print_codes(r->err.by_code);
    printf("; first: %s\n", r->err.first.msg);
}

/* ---------- main ---------- */

/* "1,16,64" into cfg->conc; returns -1 on anything else. */
static int
parse_conc_list(bench_cfg_t *cfg)
{
    const char *p = cfg->conc_text;

    cfg->n_conc = 0;
    while (*p != '\0') {
        char *end;
        long v;

        errno = 0;
        v = strtol(p, &end, 10);
        if (errno != 0 || end == p || v < 1 || v > MAX_CONC || cfg->n_conc == MAX_CONC_LIST ||
            (*end != ',' && *end != '\0')) {
            return -1;
        }
        cfg->conc[cfg->n_conc++] = (int)v;
        p = *end == ',' ? end + 1 : end;
        if (*end == ',' && *p == '\0') {
            return -1;
        }
    }
    return cfg->n_conc > 0 ? 0 : -1;
}

static void
load_config(bench_cfg_t *cfg, int argc, char **argv)
{
    svc_opt_t opts[] = {
        {"lock-addr", "LOCK_ADDR", SVC_OPT_STRING, "127.0.0.1:50051", "lock-svc host:port", 0, 0,
         &cfg->lock_addr, 1},
        {"redis-url", "REDIS_URL", SVC_OPT_STRING, "redis://127.0.0.1:6379/0",
         "the Redis lock-svc uses, for the raw scripts: redis://host:port[/db]", 0, 0,
         &cfg->redis_url, 1},
        {"seconds", "BENCH_SECONDS", SVC_OPT_INT, "5",
         "measured seconds per scenario (after a 0.5 s warm-up)", 1, 3600, &cfg->seconds, 0},
        {"concurrency", "BENCH_CONCURRENCY", SVC_OPT_STRING, "1,16,64",
         "callers per scenario, comma-separated (lock-svc: calls in flight; raw: threads); "
         "hand-off runs those >= 2",
         0, 0, &cfg->conc_text, 1},
        {"client-threads", "BENCH_CLIENT_THREADS", SVC_OPT_INT, "0",
         "async gRPC client threads for the lock-svc path (0: one per CPU, at most 2)", 0,
         MAX_CLIENT_THREADS, &cfg->client_threads, 0},
        {"lock-pid", "LOCK_SVC_PID", SVC_OPT_INT, "0",
         "lock-svc's process id, to report its CPU time (0: not reported)", 0, 1 << 30,
         &cfg->lock_pid, 0},
        {"redis-pid", "REDIS_PID", SVC_OPT_INT, "0",
         "redis-server's process id, to report its CPU time (0: not reported)", 0, 1 << 30,
         &cfg->redis_pid, 0},
    };

    svc_config_load_or_exit(opts, (int)(sizeof(opts) / sizeof(opts[0])), argc, argv,
                            "lock-bench: acquire+release pairs/s and p50/p99 through lock-svc "
                            "and through the same Lua scripts over hiredis, at each concurrency, "
                            "then the hand-off rate on one contended key. Prints numbers; exits 0 "
                            "unless it cannot start.");
    if (parse_conc_list(cfg) != 0) {
        fprintf(stderr,
                "lock-bench: --concurrency (BENCH_CONCURRENCY) must be a comma-separated list "
                "of at most %d numbers in 1..%d: %s\n",
                MAX_CONC_LIST, MAX_CONC, cfg->conc_text);
        exit(2);
    }
    if (cfg->client_threads == 0) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->client_threads = ncpu < 1                     ? 1
                              : ncpu > AUTO_CLIENT_THREADS ? AUTO_CLIENT_THREADS
                                                           : ncpu;
    }
}

/* One pair through the async client on this thread; returns 0, or -1 with the failure counted in w.
 */
static int
pair_once(bench_worker_t *w)
{
    bench_client_t c = {.workers = w, .first = 0, .stride = 1, .n_workers = 1};
    int64_t done = w->done;

    w->rpc.pairs = 0;
    client_run(&c);
    return w->done > done ? 0 : -1;
}

/* One pair each way before measuring, so a lock-svc or Redis that is not there stops us early. */
static void
check_reachable(const bench_cfg_t *cfg)
{
    bench_run_t run = {.conc = 1,
                       .once = true,
                       .run_id = cfg->run_id,
                       .channel = cfg->channel,
                       .redis_url = cfg->redis_url,
                       .win = {.warm_end_ns = 0, .end_ns = INT64_MAX}};
    bench_worker_t w = {.run = &run};
    int64_t sample;
    int same;

    for (int mode = MODE_SVC_PAIR; mode <= MODE_RAW_PAIR; mode++) {
        run.mode = (bench_mode_t)mode;
        worker_set_key(&w);
        if (mode == MODE_RAW_PAIR) {
            /* lock-svc has loaded its scripts by now; ours are not loaded yet. */
            same = lock_raw_same_as_loaded(cfg->redis_url, &w.err.first);
            printf("%s\n", same == 1   ? "raw path: the same acquire and release scripts as "
                                         "lock-svc's (Redis knows their SHA-1 from lock-svc)"
                           : same == 0 ? "WARNING: the raw path's scripts differ from lock-svc's "
                                         "(tests/bench/lock_raw.c has an old copy)"
                                       : "raw path: could not compare its scripts with lock-svc's");
            if ((w.raw = lock_raw_connect(cfg->redis_url, &w.err.first)) == NULL) {
                fprintf(stderr, "lock-bench: %s\n", w.err.first.msg);
                exit(2);
            }
        }
        /* The channel connects on first use: give lock-svc a few tries. */
        for (int i = 0; i < 20; i++) {
            if ((mode == MODE_SVC_PAIR ? pair_once(&w) : op_raw_pair(&w, &sample)) == 0) {
                w.err.n = 0;
                break;
            }
            svc_sleep_ms(100);
        }
        lock_raw_close(w.raw);
        w.raw = NULL;
        if (w.err.n > 0) {
            fprintf(stderr, "lock-bench: warm-up pair %s failed: %s\n",
                    mode == MODE_SVC_PAIR ? "through lock-svc" : "over hiredis", w.err.first.msg);
            exit(1);
        }
    }
    bench_samples_free(&w.lat);
}

/* CPUs kept busy by the processes we could measure (this tool at least). */
static double
cores_busy(const bench_result_t *r)
{
    double sum = 0.0;

    for (int i = 0; i < N_PROCS; i++) {
        sum += r->cores[i] > 0 ? r->cores[i] : 0.0;
    }
    return sum;
}

static void
bench_pairs(const bench_cfg_t *cfg)
{
    double ratio[MAX_CONC_LIST], busy_svc[MAX_CONC_LIST], busy_raw[MAX_CONC_LIST];
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    bench_result_t svc, raw;

    print_pair_header();
    for (int i = 0; i < cfg->n_conc; i++) {
        bench_one(cfg, MODE_SVC_PAIR, cfg->conc[i], &svc);
        print_pair_row("lock-svc", cfg->conc[i], &svc);
        bench_one(cfg, MODE_RAW_PAIR, cfg->conc[i], &raw);
        print_pair_row("raw redis", cfg->conc[i], &raw);
        print_errors("lock-svc", cfg->conc[i], &svc);
        print_errors("raw redis", cfg->conc[i], &raw);
        ratio[i] = raw.rate > 0 ? svc.rate / raw.rate : 0.0;
        busy_svc[i] = cores_busy(&svc);
        busy_raw[i] = cores_busy(&raw);
    }
    printf("\nratio lock-svc / raw redis, pairs/s (target: >= %.1f at concurrency %d); CPUs busy "
           "(bench + lock-svc + redis) of %ld during each run\n",
           TARGET_RATIO, TARGET_CONC, ncpu);
    for (int i = 0; i < cfg->n_conc; i++) {
        const char *note = "";
        if (cfg->conc[i] == TARGET_CONC) {
            note = ratio[i] >= TARGET_RATIO ? "  meets the target" : "  BELOW the target";
        }
        printf("  concurrency %4d: %.3f   CPUs busy: lock-svc run %.2f, raw run %.2f%s\n",
               cfg->conc[i], ratio[i], busy_svc[i], busy_raw[i], note);
    }
    fflush(stdout);
}

static void
bench_handoff(const bench_cfg_t *cfg)
{
    bench_result_t svc, spin;
    char label[64];

    print_handoff_header();
    for (int i = 0; i < cfg->n_conc; i++) {
        if (cfg->conc[i] < 2) {
            continue;
        }
        snprintf(label, sizeof(label), "lock-svc (wait_ms %d)", HANDOFF_WAIT_MS);
        bench_one(cfg, MODE_SVC_HANDOFF, cfg->conc[i], &svc);
        print_handoff_row(label, cfg->conc[i], &svc, false);
        bench_one(cfg, MODE_RAW_SPIN, cfg->conc[i], &spin);
        print_handoff_row("raw spin (busy polling, for scale only)", cfg->conc[i], &spin, true);
        print_errors(label, cfg->conc[i], &svc);
        print_errors("raw spin", cfg->conc[i], &spin);
        if (cfg->conc[i] == TARGET_CONC) {
            printf("  lock-svc hand-off at %d waiters: %.0f grants/s (target: >= %.0f)%s\n",
                   TARGET_CONC, svc.rate, TARGET_HANDOFF,
                   svc.rate >= TARGET_HANDOFF ? "  meets the target" : "  BELOW the target");
            fflush(stdout);
        }
    }
}

int
main(int argc, char **argv)
{
    bench_cfg_t cfg = {0};
    char token[LOCK_RAW_TOKEN_LEN + 1];

    load_config(&cfg, argc, argv);
    svc_log_init("lock-bench", SVC_LOG_WARN);
    lock_raw_new_token(token);
    snprintf(cfg.run_id, sizeof(cfg.run_id), "%.8s", token);
    grpc_init();
    cfg.channel = svc_channel_create(cfg.lock_addr);
    printf("lock-bench: lock-svc %s, redis %s, run %s\n", cfg.lock_addr, cfg.redis_url, cfg.run_id);
    printf("each scenario: %.1f s warm-up, then %" PRId64 " s measured; a pair counts when it "
           "starts and ends inside the window and both calls succeed; errors count the whole "
           "scenario\n",
           (double)BENCH_WARMUP_NS / 1e9, cfg.seconds);
    printf("lock-svc path: %" PRId64 " async client thread(s) on gRPC C core (one completion "
           "queue each, never more than conc) keep conc calls in flight on one channel; "
           "raw path: conc threads, one blocking hiredis connection each\n",
           cfg.client_threads);
    fflush(stdout);
    check_reachable(&cfg);
    bench_pairs(&cfg);
    bench_handoff(&cfg);
    grpc_channel_destroy(cfg.channel);
    grpc_shutdown_blocking();
    return 0;
}
