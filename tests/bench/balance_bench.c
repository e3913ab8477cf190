/*
 * balance_bench.c: balance-bench, a load tool for balance-svc. C callers each
 * alternate TopUp(10) and Spend(5) with fresh idempotency keys, on one hot
 * account and then on accounts drawn at random out of N, and it prints
 * operations per second, p50/p99 latency, errors by status and the CPU each
 * process used. It passes or fails nothing on time; tests/bench/balance_bench.sh
 * runs it next to pgbench doing the same SQL.
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

#include <dirent.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "balance/v1/balance.pb-c.h"
#include "svc/arena.h"
#include "svc/client.h"
#include "svc/config.h"
#include "svc/err.h"
#include "svc/log.h"

#define METHOD_TOP_UP "/balance.v1.BalanceService/TopUp"
#define METHOD_SPEND "/balance.v1.BalanceService/Spend"
#define KIND_TOP_UP 1
#define KIND_SPEND 2
#define TOP_UP_AMOUNT 10
#define SPEND_AMOUNT 5
#define FUND_AMOUNT 100000000 /* the largest amount one call may move */
#define REFERENCE "balance-bench"
#define CALL_TIMEOUT_MS 10000
#define WARMUP_NS 500000000LL /* before each measured window: connections, pool growth */
#define MAX_CONC 1024
#define N_CODES (SVC_UNAUTHENTICATED + 1)
#define KEY_LEN 64

/*
 * CPU time is reported for these processes (PROC_PG sums the postmaster and
 * all its children), and for the whole machine: CPU_MACHINE is every CPU's
 * busy time, CPU_IRQ the part spent in interrupts and softirqs (loopback
 * TCP), which the kernel charges to no process.
 */
enum { PROC_BENCH, PROC_BALANCE, PROC_LOCK, PROC_REDIS, PROC_PG, N_PROCS };
enum { CPU_MACHINE = N_PROCS, CPU_IRQ, N_CPU };
static const char *const proc_names[N_PROCS] = {"bench", "svc", "lock", "redis", "pg"};

typedef struct {
    int64_t *v;
    size_t n, cap;
} samples_t;

typedef struct bench_run bench_run_t;

/*
 * One caller: a thread (sync client) or one call slot of the completion
 * queue (async client). Its counters are read by main after the run.
 */
typedef struct {
    bench_run_t *run;
    int index;
    uint64_t rng;
    int64_t seq;
    /* the operation in flight */
    int kind;
    int64_t user_id, amount, t0;
    char key[KEY_LEN];
    /* async client only */
    grpc_call *call;
    grpc_byte_buffer *send, *recv; /* send is kept until the call completes, as grpc.h asks */
    grpc_metadata_array recv_md, trailers;
    grpc_status_code status;
    grpc_slice details;
    /* results */
    samples_t lat;
    int64_t done;     /* ops fully inside the measured window */
    int64_t acked;    /* ops answered OK at any time: each wrote one ledger row */
    int64_t replayed; /* answered as a replay although the key was fresh: a bug */
    int64_t n_errors;
    int64_t errors[N_CODES];
    svc_err_t first_err;
} bench_caller_t;

typedef enum { CLIENT_ASYNC, CLIENT_SYNC } client_kind_t;

/* One scenario, or the pre-funding of its accounts. Times are CLOCK_MONOTONIC ns. */
struct bench_run {
    const char *name;
    const char *run_id;
    int64_t first_account;
    int n_accounts, conc;
    bool fund; /* one TopUp(FUND_AMOUNT) per account, no time window */
    atomic_int next_fund;
    int64_t warm_end_ns, end_ns;
    client_kind_t client_kind;
    svc_client_t *client;  /* sync */
    grpc_channel *channel; /* async */
    grpc_completion_queue *cq;
    bench_caller_t *callers;
};

/* What one scenario measured. */
typedef struct {
    int64_t done, acked, replayed, n_errors;
    int64_t errors[N_CODES];
    svc_err_t first_err;
    double window_s, rate, p50_ms, p99_ms;
    double cores[N_CPU];  /* CPU seconds per second of window; < 0 unknown */
    double us_per[N_CPU]; /* CPU microseconds per done operation; < 0 unknown */
} bench_result_t;

typedef struct {
    const char *balance_addr, *client_text, *scenario_text, *result_file;
    int64_t seconds, conc, accounts, first_account;
    int64_t pids[N_PROCS];
    client_kind_t client_kind;
    char run_id[9];
    svc_client_t *client;
    grpc_channel *channel;
} bench_cfg_t;

/* ---------- time, samples ---------- */

static int64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void
sleep_until_ns(int64_t t)
{
    struct timespec ts = {(time_t)(t / 1000000000LL), (long)(t % 1000000000LL)};

    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static int
samples_push(samples_t *s, int64_t v)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        int64_t *nv = realloc(s->v, cap * sizeof(*nv));
        if (nv == NULL) {
            return -1;
        }
        s->v = nv;
        s->cap = cap;
    }
    s->v[s->n++] = v;
    return 0;
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v, in ms; 0 when there is no sample. */
static double
percentile_ms(const int64_t *v, size_t n, unsigned pct)
{
    size_t rank;

    if (n == 0) {
        return 0.0;
    }
    rank = (n * pct + 99) / 100;
    return (double)v[rank > 0 ? rank - 1 : 0] / 1e6;
}

static uint64_t
xorshift64(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* ---------- CPU accounting (/proc) ---------- */

/*
 * utime+stime of /proc/<pid>/stat, plus cutime+cstime (children reaped) when
 * with_children; *ppid gets the parent. Returns -1 when unreadable.
 */
static int64_t
stat_ticks(const char *path, bool with_children, int64_t *ppid)
{
    unsigned long long ut, st, cut, cst;
    long long parent;
    char buf[1024];
    const char *p;
    size_t n;
    FILE *f;

    if ((f = fopen(path, "r")) == NULL) {
        return -1;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields after the command name, which may hold spaces: state, ppid, ..., 14-17. */
    if ((p = strrchr(buf, ')')) == NULL ||
        sscanf(p + 1, " %*c %lld %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %llu %llu", &parent,
               &ut, &st, &cut, &cst) != 5) {
        return -1;
    }
    if (ppid != NULL) {
        *ppid = parent;
    }
    return (int64_t)(ut + st + (with_children ? cut + cst : 0));
}

/*
 * CPU ticks of PostgreSQL: the postmaster, the backends that ended (its
 * cutime/cstime) and every live child. -1 when the postmaster is unreadable.
 */
static int64_t
pg_tree_ticks(int64_t postmaster)
{
    char path[300];
    struct dirent *e;
    int64_t total, t, ppid;
    DIR *d;

    snprintf(path, sizeof(path), "/proc/%" PRId64 "/stat", postmaster);
    if ((total = stat_ticks(path, true, NULL)) < 0 || (d = opendir("/proc")) == NULL) {
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9') {
            continue;
        }
        snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
        if ((t = stat_ticks(path, true, &ppid)) >= 0 && ppid == postmaster) {
            total += t;
        }
    }
    closedir(d);
    return total;
}

/*
 * Busy ticks of all CPUs (user, nice, system, irq, softirq: not idle, iowait
 * or steal) into *busy, and irq + softirq into *irq; both -1 when unknown.
 */
static void
machine_ticks(int64_t *busy, int64_t *irq)
{
    unsigned long long v[7] = {0};
    FILE *f = fopen("/proc/stat", "r");
    int n;

    *busy = *irq = -1;
    if (f == NULL) {
        return;
    }
    n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
               &v[5], &v[6]);
    fclose(f);
    if (n == 7) {
        *busy = (int64_t)(v[0] + v[1] + v[2] + v[5] + v[6]);
        *irq = (int64_t)(v[5] + v[6]);
    }
}

/* out[i] gets the ticks of process i and of CPU_MACHINE, CPU_IRQ (-1 unknown). */
static void
cpu_snapshot(const int64_t pids[N_PROCS], int64_t out[N_CPU])
{
    char path[64];

    for (int i = 0; i < N_PROCS; i++) {
        out[i] = -1;
        if (i == PROC_BENCH) {
            out[i] = stat_ticks("/proc/self/stat", false, NULL);
        } else if (pids[i] > 0 && i == PROC_PG) {
            out[i] = pg_tree_ticks(pids[i]);
        } else if (pids[i] > 0) {
            snprintf(path, sizeof(path), "/proc/%" PRId64 "/stat", pids[i]);
            out[i] = stat_ticks(path, false, NULL);
        }
    }
    machine_ticks(&out[CPU_MACHINE], &out[CPU_IRQ]);
}

static void
cpu_result(const int64_t before[N_CPU], const int64_t after[N_CPU], bench_result_t *res)
{
    double tck = (double)sysconf(_SC_CLK_TCK);

    for (int i = 0; i < N_CPU; i++) {
        bool known = before[i] >= 0 && after[i] >= 0 && tck > 0;
        double secs = (double)(after[i] - before[i]) / tck;
        res->cores[i] = known ? secs / res->window_s : -1.0;
        res->us_per[i] = known && res->done > 0 ? secs * 1e6 / (double)res->done : -1.0;
    }
}

/* ---------- operations and their outcomes (both clients) ---------- */

/*
 * Chooses the caller's next operation: funding walks the accounts once;
 * otherwise TopUp and Spend alternate with a fresh key until the window ends.
 * Returns false when the caller is done.
 */
static bool
caller_next_op(bench_caller_t *c)
{
    bench_run_t *run = c->run;

    if (run->fund) {
        int i = atomic_fetch_add(&run->next_fund, 1);
        if (i >= run->n_accounts) {
            return false;
        }
        c->kind = KIND_TOP_UP;
        c->amount = FUND_AMOUNT;
        c->user_id = run->first_account + i;
        snprintf(c->key, sizeof(c->key), "bb:%s:fund:%s:%d", run->run_id, run->name, i);
    } else {
        if (now_ns() >= run->end_ns) {
            return false;
        }
        c->kind = c->kind == KIND_TOP_UP ? KIND_SPEND : KIND_TOP_UP;
        c->amount = c->kind == KIND_TOP_UP ? TOP_UP_AMOUNT : SPEND_AMOUNT;
        c->user_id = run->first_account +
                     (run->n_accounts > 1 ? (int64_t)(xorshift64(&c->rng) % run->n_accounts) : 0);
        snprintf(c->key, sizeof(c->key), "bb:%s:%s:%d:%" PRId64, run->run_id, run->name, c->index,
                 c->seq++);
    }
    c->t0 = now_ns();
    return true;
}

/*
 * Fills the request of the current operation into *top_up or *spend (both
 * initialised by the caller) and returns it; it points into c->key.
 */
static const ProtobufCMessage *
caller_request(bench_caller_t *c, Balance__V1__TopUpRequest *top_up,
               Balance__V1__SpendRequest *spend)
{
    if (c->kind == KIND_TOP_UP) {
        top_up->user_id = c->user_id;
        top_up->amount = c->amount;
        top_up->idempotency_key = c->key;
        return &top_up->base;
    }
    spend->user_id = c->user_id;
    spend->amount = c->amount;
    spend->idempotency_key = c->key;
    spend->reference = REFERENCE;
    return &spend->base;
}

/* Packs the current operation's request into a new buffer (caller frees). */
static grpc_byte_buffer *
caller_pack(bench_caller_t *c)
{
    Balance__V1__TopUpRequest top_up = BALANCE__V1__TOP_UP_REQUEST__INIT;
    Balance__V1__SpendRequest spend = BALANCE__V1__SPEND_REQUEST__INIT;
    const ProtobufCMessage *msg = caller_request(c, &top_up, &spend);
    grpc_byte_buffer *buf;
    grpc_slice slice;

    slice = grpc_slice_malloc(protobuf_c_message_get_packed_size(msg));
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
    buf = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return buf;
}

/* Counts the answer to the current operation: err NULL means OK. */
static void
caller_record(bench_caller_t *c, const svc_err_t *err, bool replayed)
{
    const bench_run_t *run = c->run;
    int64_t t1 = now_ns();

    if (err != NULL) {
        int code = (int)err->code > 0 && (int)err->code < N_CODES ? (int)err->code : SVC_UNKNOWN;
        c->errors[code]++;
        if (c->n_errors++ == 0) {
            c->first_err = *err;
        }
        return;
    }
    c->acked++;
    c->replayed += replayed;
    if (run->fund || c->t0 < run->warm_end_ns || t1 > run->end_ns) {
        return;
    }
    if (samples_push(&c->lat, t1 - c->t0) != 0) {
        svc_err_t oom;
        svc_err_set(&oom, SVC_RESOURCE_EXHAUSTED, "out of memory for samples");
        caller_record(c, &oom, false);
        return;
    }
    c->done++;
}

/* ---------- sync client: one thread per caller, svc_client_unary ---------- */

static void *
sync_caller_main(void *arg)
{
    bench_caller_t *c = arg;
    svc_call_opts_t opts = {.timeout_ms = CALL_TIMEOUT_MS, .request_id = "balance-bench"};
    svc_arena_t *arena = svc_arena_create();

    while (arena != NULL && caller_next_op(c)) {
        Balance__V1__TopUpRequest top_up = BALANCE__V1__TOP_UP_REQUEST__INIT;
        Balance__V1__SpendRequest spend = BALANCE__V1__SPEND_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        bool top = c->kind == KIND_TOP_UP;
        svc_err_t err;

        if (svc_client_unary(c->run->client, top ? METHOD_TOP_UP : METHOD_SPEND,
                             caller_request(c, &top_up, &spend),
                             top ? &balance__v1__top_up_response__descriptor
                                 : &balance__v1__spend_response__descriptor,
                             arena, &resp, &opts, &err) != 0) {
            caller_record(c, &err, false);
        } else {
            caller_record(c, NULL,
                          top ? ((Balance__V1__TopUpResponse *)resp)->replayed
                              : ((Balance__V1__SpendResponse *)resp)->replayed);
        }
        svc_arena_reset(arena);
    }
    svc_arena_destroy(arena);
    return NULL;
}

/* ---------- async client: one completion queue, conc calls in flight ---------- */

/* Starts the caller's next call on run->cq. Returns false when it is done (or cannot start). */
static bool
async_start(bench_caller_t *c)
{
    bench_run_t *run = c->run;
    grpc_slice method;
    grpc_op ops[6];
    grpc_call_error rc;
    svc_err_t err;

    if (!caller_next_op(c)) {
        return false;
    }
    method = grpc_slice_from_static_string(c->kind == KIND_TOP_UP ? METHOD_TOP_UP : METHOD_SPEND);
    c->call =
        grpc_channel_create_call(run->channel, NULL, GRPC_PROPAGATE_DEFAULTS, run->cq, method, NULL,
                                 gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                              gpr_time_from_millis(CALL_TIMEOUT_MS, GPR_TIMESPAN)),
                                 NULL);
    c->send = caller_pack(c);
    grpc_metadata_array_init(&c->recv_md);
    grpc_metadata_array_init(&c->trailers);
    c->recv = NULL;
    c->status = GRPC_STATUS_UNKNOWN;
    c->details = grpc_empty_slice();
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = c->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->recv_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &c->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.status = &c->status;
    ops[5].data.recv_status_on_client.status_details = &c->details;
    ops[5].data.recv_status_on_client.trailing_metadata = &c->trailers;
    rc = c->call != NULL ? grpc_call_start_batch(c->call, ops, 6, c, NULL) : GRPC_CALL_ERROR;
    if (rc != GRPC_CALL_OK) {
        svc_err_set(&err, SVC_INTERNAL, "cannot start a call (grpc_call_error %d)", (int)rc);
        caller_record(c, &err, false);
        grpc_metadata_array_destroy(&c->recv_md);
        grpc_metadata_array_destroy(&c->trailers);
        grpc_byte_buffer_destroy(c->send);
        if (c->call != NULL) {
            grpc_call_unref(c->call);
        }
        return false;
    }
    return true;
}

/* The response's replayed flag; -1 when it does not parse. */
static int
async_replayed(const bench_caller_t *c)
{
    grpc_byte_buffer_reader reader;
    ProtobufCMessage *msg;
    grpc_slice slice;
    int replayed;

    if (c->recv == NULL || !grpc_byte_buffer_reader_init(&reader, c->recv)) {
        return -1;
    }
    slice = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    msg =
        protobuf_c_message_unpack(c->kind == KIND_TOP_UP ? &balance__v1__top_up_response__descriptor
                                                         : &balance__v1__spend_response__descriptor,
                                  NULL, GRPC_SLICE_LENGTH(slice), GRPC_SLICE_START_PTR(slice));
    grpc_slice_unref(slice);
    if (msg == NULL) {
        return -1;
    }
    /* Both responses have replayed as field 3; read it through the right type. */
    replayed = c->kind == KIND_TOP_UP ? ((Balance__V1__TopUpResponse *)msg)->replayed
                                      : ((Balance__V1__SpendResponse *)msg)->replayed;
    protobuf_c_message_free_unpacked(msg, NULL);
    return replayed;
}

/* Records the finished call of c and frees what it held. */
static void
async_finish(bench_caller_t *c, bool success)
{
    svc_err_t err;
    int replayed;

    if (!success) {
        svc_err_set(&err, SVC_UNAVAILABLE, "call failed in transport");
        caller_record(c, &err, false);
    } else if (c->status != GRPC_STATUS_OK) {
        char *text = grpc_slice_to_c_string(c->details);
        svc_err_set(&err, svc_status_from_grpc((int)c->status), "%s", text);
        gpr_free(text);
        caller_record(c, &err, false);
    } else if ((replayed = async_replayed(c)) < 0) {
        svc_err_set(&err, SVC_INTERNAL, "response does not parse");
        caller_record(c, &err, false);
    } else {
        caller_record(c, NULL, replayed != 0);
    }
    grpc_byte_buffer_destroy(c->send);
    if (c->recv != NULL) {
        grpc_byte_buffer_destroy(c->recv);
    }
    grpc_slice_unref(c->details);
    grpc_metadata_array_destroy(&c->recv_md);
    grpc_metadata_array_destroy(&c->trailers);
    grpc_call_unref(c->call);
    c->call = NULL;
}

/* The async loop: starts every caller, then the next call of each as the last one completes. */
static void *
async_main(void *arg)
{
    bench_run_t *run = arg;
    int active = 0;

    for (int i = 0; i < run->conc; i++) {
        active += async_start(&run->callers[i]);
    }
    while (active > 0) {
        grpc_event ev =
            grpc_completion_queue_next(run->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        bench_caller_t *c = ev.tag;

        if (ev.type != GRPC_OP_COMPLETE) {
            continue;
        }
        async_finish(c, ev.success != 0);
        if (!async_start(c)) {
            active--;
        }
    }
    return NULL;
}

/* ---------- running a scenario ---------- */

/* Sums the callers' counters and samples into res (latencies sorted for percentiles). */
static void
collect(bench_caller_t *callers, int n, bench_result_t *res)
{
    size_t total = 0, at = 0;
    int64_t *all;

    for (int i = 0; i < n; i++) {
        bench_caller_t *c = &callers[i];
        res->done += c->done;
        res->acked += c->acked;
        res->replayed += c->replayed;
        for (int k = 0; k < N_CODES; k++) {
            res->errors[k] += c->errors[k];
        }
        if (c->n_errors > 0 && res->n_errors == 0) {
            res->first_err = c->first_err;
        }
        res->n_errors += c->n_errors;
        total += c->lat.n;
    }
    if ((all = malloc((total ? total : 1) * sizeof(*all))) == NULL) {
        fprintf(stderr, "balance-bench: out of memory for %zu samples\n", total);
        exit(1);
    }
    for (int i = 0; i < n; i++) {
        if (callers[i].lat.n > 0) { /* v is NULL when nothing was recorded */
            memcpy(all + at, callers[i].lat.v, callers[i].lat.n * sizeof(*all));
            at += callers[i].lat.n;
        }
        free(callers[i].lat.v);
    }
    qsort(all, total, sizeof(*all), cmp_i64);
    res->p50_ms = percentile_ms(all, total, 50);
    res->p99_ms = percentile_ms(all, total, 99);
    free(all);
}

/* Starts the load: one thread running the completion queue, or one thread per caller. */
static void
load_start(bench_run_t *run, pthread_t *threads)
{
    bool async = run->client_kind == CLIENT_ASYNC;

    for (int i = 0; i < (async ? 1 : run->conc); i++) {
        if (pthread_create(&threads[i], NULL, async ? async_main : sync_caller_main,
                           async ? (void *)run : (void *)&run->callers[i]) != 0) {
            fprintf(stderr, "balance-bench: cannot start load thread %d\n", i);
            exit(1);
        }
    }
}

/*
 * Runs the scenario (or funding) described by run and fills res: a warm-up,
 * then `seconds` measured; main samples CPU time at both ends of the window.
 */
static void
run_scenario(bench_run_t *run, int64_t seconds, const int64_t pids[N_PROCS], bench_result_t *res)
{
    pthread_t *threads = calloc((size_t)run->conc, sizeof(*threads));
    int64_t cpu0[N_CPU], cpu1[N_CPU];
    bool async = run->client_kind == CLIENT_ASYNC;

    run->callers = calloc((size_t)run->conc, sizeof(*run->callers));
    if (threads == NULL || run->callers == NULL) {
        fprintf(stderr, "balance-bench: cannot set up %d callers\n", run->conc);
        exit(1);
    }
    memset(res, 0, sizeof(*res));
    for (int i = 0; i < run->conc; i++) {
        run->callers[i].run = run;
        run->callers[i].index = i;
        run->callers[i].kind = KIND_SPEND; /* the first operation is a top-up */
        run->callers[i].rng = 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1) ^ (uint64_t)now_ns();
    }
    if (async) {
        run->cq = grpc_completion_queue_create_for_next(NULL);
    }
    run->warm_end_ns = now_ns() + WARMUP_NS;
    run->end_ns = run->fund ? INT64_MAX : run->warm_end_ns + seconds * 1000000000LL;
    load_start(run, threads);
    if (!run->fund) {
        sleep_until_ns(run->warm_end_ns);
        cpu_snapshot(pids, cpu0);
        sleep_until_ns(run->end_ns);
        cpu_snapshot(pids, cpu1);
    }
    for (int i = 0; i < (async ? 1 : run->conc); i++) {
        pthread_join(threads[i], NULL);
    }
    if (async) {
        grpc_completion_queue_shutdown(run->cq);
        while (
            grpc_completion_queue_next(run->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
            GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(run->cq);
    }
    res->window_s = (double)seconds;
    collect(run->callers, run->conc, res);
    res->rate = (double)res->done / res->window_s;
    if (!run->fund) {
        cpu_result(cpu0, cpu1, res);
    }
    free(run->callers);
    free(threads);
}

/* ---------- printing ---------- */

static void
print_header(const bench_cfg_t *cfg)
{
    printf("\n== balance-svc: each caller alternates TopUp(%d) and Spend(%d), fresh idempotency "
           "keys, concurrency %" PRId64 " ==\n",
           TOP_UP_AMOUNT, SPEND_AMOUNT, cfg->conc);
    printf("cpu: CPUs busy: machine = all CPUs, irq = interrupts and softirqs (loopback TCP), "
           "other = processes not named; bench = this tool, svc = balance-svc, lock = lock-svc, "
           "redis, pg = PostgreSQL (all backends); then CPU us per op (all = machine)\n");
    printf("%-8s %8s %5s %8s %9s %8s %8s %6s | %7s %5s %5s", "scenario", "accounts", "conc", "ops",
           "ops/s", "p50 ms", "p99 ms", "errors", "machine", "irq", "other");
    for (int i = 0; i < N_PROCS; i++) {
        printf(" %5s", proc_names[i]);
    }
    printf(" | %6s", "all");
    for (int i = 0; i < N_PROCS; i++) {
        printf(" %6s", proc_names[i]);
    }
    printf("\n");
    fflush(stdout);
}

/* A number right-aligned in width columns, or "-" when it is unknown (< 0). */
static void
print_num(int width, int decimals, double v)
{
    if (v < 0) {
        printf(" %*s", width, "-");
    } else {
        printf(" %*.*f", width, decimals, v);
    }
}

/* CPUs busy with processes we do not measure: the machine less irq and ours (-1: unknown). */
static double
other_cores(const bench_result_t *r)
{
    double other = r->cores[CPU_MACHINE];

    for (int i = 0; i < CPU_MACHINE; i++) {
        other -= r->cores[i] > 0 ? r->cores[i] : 0.0;
    }
    other -= r->cores[CPU_IRQ] > 0 ? r->cores[CPU_IRQ] : 0.0;
    return r->cores[CPU_MACHINE] < 0 ? -1.0 : (other > 0 ? other : 0.0);
}

static void
print_row(const bench_run_t *run, const bench_result_t *r)
{
    printf("%-8s %8d %5d %8" PRId64 " %9.1f %8.3f %8.3f %6" PRId64 " |", run->name, run->n_accounts,
           run->conc, r->done, r->rate, r->p50_ms, r->p99_ms, r->n_errors);
    print_num(7, 2, r->cores[CPU_MACHINE]);
    print_num(5, 2, r->cores[CPU_IRQ]);
    print_num(5, 2, other_cores(r));
    for (int i = 0; i < N_PROCS; i++) {
        print_num(5, 2, r->cores[i]);
    }
    printf(" |");
    print_num(6, 0, r->us_per[CPU_MACHINE]);
    for (int i = 0; i < N_PROCS; i++) {
        print_num(6, 0, r->us_per[i]);
    }
    printf("\n");
    fflush(stdout);
}

/* One line when the scenario had failures: counts by status and the first message. */
static void
print_errors(const bench_run_t *run, const bench_result_t *r)
{
    if (r->replayed > 0) {
        printf("  %s: %" PRId64 " answers said replayed for a fresh key (must be 0)\n", run->name,
               r->replayed);
    }
    if (r->n_errors == 0) {
        return;
    }
    printf("  errors in %s:", run->name);
    for (int k = 0; k < N_CODES; k++) {
        if (r->errors[k] > 0) {
            printf(" %s %" PRId64, svc_status_name((svc_status_t)k), r->errors[k]);
        }
    }
    printf("; first: %s\n", r->first_err.msg);
    fflush(stdout);
}

/* Appends one key=value line per scenario to --result-file, for balance_bench.sh. */
static void
write_result(const bench_cfg_t *cfg, const bench_run_t *run, const bench_result_t *r)
{
    FILE *f;

    if (cfg->result_file == NULL || cfg->result_file[0] == '\0') {
        return;
    }
    if ((f = fopen(cfg->result_file, "a")) == NULL) {
        fprintf(stderr, "balance-bench: cannot write %s: %s\n", cfg->result_file, strerror(errno));
        exit(1);
    }
    fprintf(f,
            "scenario=%s run=%s first_account=%" PRId64 " accounts=%d conc=%d seconds=%.0f "
            "ops=%" PRId64 " rate=%.1f p50_ms=%.3f p99_ms=%.3f errors=%" PRId64 " acked=%" PRId64
            " replayed=%" PRId64 " machine=%.2f\n",
            run->name, run->run_id, run->first_account, run->n_accounts, run->conc, r->window_s,
            r->done, r->rate, r->p50_ms, r->p99_ms, r->n_errors, r->acked, r->replayed,
            r->cores[CPU_MACHINE]);
    fclose(f);
}

/* ---------- main ---------- */

static void
load_config(bench_cfg_t *cfg, int argc, char **argv)
{
    svc_opt_t opts[] = {
        {"balance-addr", "BALANCE_ADDR", SVC_OPT_STRING, "127.0.0.1:50052", "balance-svc host:port",
         0, 0, &cfg->balance_addr, 1},
        {"seconds", "BENCH_SECONDS", SVC_OPT_INT, "5",
         "measured seconds per scenario (after a 0.5 s warm-up)", 1, 3600, &cfg->seconds, 0},
        {"concurrency", "BENCH_CONCURRENCY", SVC_OPT_INT, "64", "calls in flight at once", 1,
         MAX_CONC, &cfg->conc, 0},
        {"accounts", "BENCH_ACCOUNTS", SVC_OPT_INT, "1000",
         "accounts of the spread scenario (each op picks one at random)", 2, 10000000,
         &cfg->accounts, 0},
        {"first-account", "BENCH_FIRST_ACCOUNT", SVC_OPT_INT, "1",
         "user_id of the hot account; the spread accounts follow it", 1, INT64_MAX / 2,
         &cfg->first_account, 0},
        {"scenario", "BENCH_SCENARIO", SVC_OPT_STRING, "hot,spread", "hot, spread, or hot,spread",
         0, 0, &cfg->scenario_text, 1},
        {"client", "BENCH_CLIENT", SVC_OPT_STRING, "async",
         "async: one completion queue keeps every call in flight from one thread; sync: one "
         "thread per caller blocked in svc_client_unary",
         0, 0, &cfg->client_text, 1},
        {"result-file", "BENCH_RESULT_FILE", SVC_OPT_STRING, NULL,
         "append one key=value line per scenario to this file", 0, 0, &cfg->result_file, 0},
        {"balance-pid", "BALANCE_SVC_PID", SVC_OPT_INT, "0",
         "balance-svc's process id, to report its CPU time (0: not reported)", 0, 1 << 30,
         &cfg->pids[PROC_BALANCE], 0},
        {"lock-pid", "LOCK_SVC_PID", SVC_OPT_INT, "0", "lock-svc's process id (0: not reported)", 0,
         1 << 30, &cfg->pids[PROC_LOCK], 0},
        {"redis-pid", "REDIS_PID", SVC_OPT_INT, "0", "redis-server's process id (0: not reported)",
         0, 1 << 30, &cfg->pids[PROC_REDIS], 0},
        {"pg-pid", "PG_PID", SVC_OPT_INT, "0",
         "the postmaster's process id; its children are counted too (0: not reported)", 0, 1 << 30,
         &cfg->pids[PROC_PG], 0},
    };

    svc_config_load_or_exit(opts, (int)(sizeof(opts) / sizeof(opts[0])), argc, argv,
                            "balance-bench: TopUp+Spend operations per second and p50/p99 through "
                            "balance-svc on one hot account and on accounts picked at random. "
                            "Prints numbers; exits 0 unless it cannot start or fund its accounts.");
    if (strcmp(cfg->client_text, "async") == 0) {
        cfg->client_kind = CLIENT_ASYNC;
    } else if (strcmp(cfg->client_text, "sync") == 0) {
        cfg->client_kind = CLIENT_SYNC;
    } else {
        fprintf(stderr, "balance-bench: --client (BENCH_CLIENT) must be async or sync: %s\n",
                cfg->client_text);
        exit(2);
    }
    if (strcmp(cfg->scenario_text, "hot") != 0 && strcmp(cfg->scenario_text, "spread") != 0 &&
        strcmp(cfg->scenario_text, "hot,spread") != 0) {
        fprintf(stderr,
                "balance-bench: --scenario (BENCH_SCENARIO) must be hot, spread or "
                "hot,spread: %s\n",
                cfg->scenario_text);
        exit(2);
    }
}

/*
 * Tops up every account of run with FUND_AMOUNT, conc at once. The keys are
 * fixed per run and account, so a retry after a failure (the channel
 * connects on first use) is a replay, never a second top-up.
 */
static void
fund_accounts(const bench_run_t *scenario, const int64_t pids[N_PROCS])
{
    bench_run_t run = *scenario;
    bench_result_t res;

    run.fund = true;
    for (int attempt = 1;; attempt++) {
        atomic_store(&run.next_fund, 0);
        run_scenario(&run, 1, pids, &res);
        if (res.n_errors == 0) {
            return;
        }
        if (attempt == 20) {
            fprintf(stderr,
                    "balance-bench: funding %d accounts of %s failed %" PRId64 " times: %s\n",
                    run.n_accounts, run.name, res.n_errors, res.first_err.msg);
            exit(1);
        }
        usleep(100000);
    }
}

static void
bench_scenario(const bench_cfg_t *cfg, const char *name, int64_t first, int n_accounts)
{
    bench_run_t run = {.name = name,
                       .run_id = cfg->run_id,
                       .first_account = first,
                       .n_accounts = n_accounts,
                       .conc = (int)cfg->conc,
                       .client_kind = cfg->client_kind,
                       .client = cfg->client,
                       .channel = cfg->channel};
    int64_t t0 = now_ns();
    bench_result_t res;

    fund_accounts(&run, cfg->pids);
    printf("  (%s: funded %d account%s with TopUp(%d) each in %.1f s)\n", name, n_accounts,
           n_accounts == 1 ? "" : "s", FUND_AMOUNT, (double)(now_ns() - t0) / 1e9);
    fflush(stdout);
    run_scenario(&run, cfg->seconds, cfg->pids, &res);
    print_row(&run, &res);
    print_errors(&run, &res);
    write_result(cfg, &run, &res);
}

/* A run id from the clock and pid, so keys of two runs on one database never meet. */
static void
make_run_id(char out[9])
{
    uint64_t s = (uint64_t)now_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL);

    for (int i = 0; i < 4; i++) {
        xorshift64(&s);
    }
    snprintf(out, 9, "%08x", (unsigned)(s >> 32));
}

static void
connect_client(bench_cfg_t *cfg)
{
    grpc_channel_credentials *creds;
    svc_err_t err;

    if (cfg->client_kind == CLIENT_SYNC) {
        if ((cfg->client = svc_client_get(cfg->balance_addr, &err)) == NULL) {
            fprintf(stderr, "balance-bench: %s\n", err.msg);
            exit(2);
        }
        return;
    }
    grpc_init();
    creds = grpc_insecure_credentials_create();
    cfg->channel = grpc_channel_create(cfg->balance_addr, creds, NULL);
    grpc_channel_credentials_release(creds);
}

int
main(int argc, char **argv)
{
    bench_cfg_t cfg = {0};
    bool hot, spread;

    load_config(&cfg, argc, argv);
    svc_log_init("balance-bench", SVC_LOG_WARN);
    make_run_id(cfg.run_id);
    connect_client(&cfg);
    hot = strstr(cfg.scenario_text, "hot") != NULL;
    spread = strstr(cfg.scenario_text, "spread") != NULL;
    printf("balance-bench: balance-svc %s, run %s, client %s\n", cfg.balance_addr, cfg.run_id,
           cfg.client_kind == CLIENT_ASYNC
               ? "async (one completion queue on one thread, one channel)"
               : "sync (one thread per caller in svc_client_unary, one shared channel)");
    printf("each scenario: its accounts funded first, %.1f s warm-up, then %" PRId64
           " s measured; an op counts when it starts and ends inside the window and is "
           "answered OK; errors count the whole scenario\n",
           (double)WARMUP_NS / 1e9, cfg.seconds);
    print_header(&cfg);
    if (hot) {
        bench_scenario(&cfg, "hot", cfg.first_account, 1);
    }
    if (spread) {
        bench_scenario(&cfg, "spread", cfg.first_account + 1, (int)cfg.accounts);
    }
    if (cfg.channel != NULL) {
        grpc_channel_destroy(cfg.channel);
        grpc_shutdown();
    }
    svc_client_release_all();
    return 0;
}
