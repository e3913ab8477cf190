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

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "balance/v1/balance.pb-c.h"
#include "bench_common.h"
#include "svc/timer.h"
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
#define MAX_CONC 1024
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
    bench_call_t rpc;
    /* results */
    bench_samples_t lat;
    int64_t done;     /* ops fully inside the measured window */
    int64_t acked;    /* ops answered OK at any time: each wrote one ledger row */
    int64_t replayed; /* answered as a replay although the key was fresh: a bug */
    bench_errors_t err;
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
    bench_window_t win;
    client_kind_t client_kind;
    svc_client_t *client;  /* sync */
    grpc_channel *channel; /* async */
    grpc_completion_queue *cq;
    bench_caller_t *callers;
};

/* What one scenario measured. */
typedef struct {
    int64_t done, acked, replayed;
    bench_errors_t err;
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

/* ---------- random numbers ---------- */

static uint64_t
xorshift64(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
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
        if (bench_now_ns() >= run->win.end_ns) {
            return false;
        }
        c->kind = c->kind == KIND_TOP_UP ? KIND_SPEND : KIND_TOP_UP;
        c->amount = c->kind == KIND_TOP_UP ? TOP_UP_AMOUNT : SPEND_AMOUNT;
        c->user_id = run->first_account +
                     (run->n_accounts > 1 ? (int64_t)(xorshift64(&c->rng) % run->n_accounts) : 0);
        snprintf(c->key, sizeof(c->key), "bb:%s:%s:%d:%" PRId64, run->run_id, run->name, c->index,
                 c->seq++);
    }
    c->t0 = bench_now_ns();
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

/* Counts the answer to the current operation: err NULL means OK. */
static void
caller_record(bench_caller_t *c, const svc_err_t *err, bool replayed)
{
    const bench_run_t *run = c->run;
    int64_t t1 = bench_now_ns();

    if (err != NULL) {
        bench_errors_add(&c->err, err);
        return;
    }
    c->acked++;
    c->replayed += replayed;
    if (run->fund || !bench_window_holds(&run->win, c->t0, t1)) {
        return;
    }
    if (bench_samples_push(&c->lat, t1 - c->t0) != 0) {
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
    Balance__V1__TopUpRequest top_up = BALANCE__V1__TOP_UP_REQUEST__INIT;
    Balance__V1__SpendRequest spend = BALANCE__V1__SPEND_REQUEST__INIT;
    bench_run_t *run = c->run;
    grpc_call_error rc = GRPC_CALL_ERROR;
    svc_err_t err;

    if (!caller_next_op(c)) {
        return false;
    }
    if (bench_call_init(&c->rpc, run->channel, run->cq,
                        c->kind == KIND_TOP_UP ? METHOD_TOP_UP : METHOD_SPEND, CALL_TIMEOUT_MS,
                        caller_request(c, &top_up, &spend)) == 0 &&
        (rc = bench_call_start(&c->rpc, NULL, 0, c)) != GRPC_CALL_OK) {
        bench_call_cleanup(&c->rpc);
    }
    if (rc != GRPC_CALL_OK) {
        svc_err_set(&err, SVC_INTERNAL, "cannot start a call (grpc_call_error %d)", (int)rc);
        caller_record(c, &err, false);
        return false;
    }
    return true;
}

/* The response's replayed flag; -1 when it does not parse. */
static int
async_replayed(const bench_caller_t *c)
{
    ProtobufCMessage *msg;
    int replayed;

    msg = bench_unpack(c->rpc.recv, c->kind == KIND_TOP_UP
                                        ? &balance__v1__top_up_response__descriptor
                                        : &balance__v1__spend_response__descriptor);
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
    char msg[sizeof(((svc_err_t *)0)->msg)];
    svc_status_t code = bench_call_status(&c->rpc, success, msg, sizeof(msg));
    svc_err_t err;
    int replayed;

    if (code != SVC_OK) {
        svc_err_set(&err, code, "%s", msg);
        caller_record(c, &err, false);
    } else if ((replayed = async_replayed(c)) < 0) {
        svc_err_set(&err, SVC_INTERNAL, "response does not parse");
        caller_record(c, &err, false);
    } else {
        caller_record(c, NULL, replayed != 0);
    }
    bench_call_cleanup(&c->rpc);
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
    bench_samples_t all = {0};

    for (int i = 0; i < n; i++) {
        bench_caller_t *c = &callers[i];
        res->done += c->done;
        res->acked += c->acked;
        res->replayed += c->replayed;
        bench_errors_merge(&res->err, &c->err);
        if (bench_samples_move(&all, &c->lat) != 0) {
            fprintf(stderr, "balance-bench: out of memory for %zu samples\n", all.n + c->lat.n);
            exit(1);
        }
    }
    bench_samples_percentiles(&all, &res->p50_ms, &res->p99_ms);
    bench_samples_free(&all);
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
        run->callers[i].rng = 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1) ^ (uint64_t)bench_now_ns();
    }
    if (async) {
        run->cq = grpc_completion_queue_create_for_next(NULL);
    }
    run->win = bench_window_from_now(seconds);
    if (run->fund) {
        run->win.end_ns = INT64_MAX;
    }
    load_start(run, threads);
    if (!run->fund) {
        bench_cpu_window(&run->win, pids, N_PROCS, PROC_PG, cpu0, cpu1);
    }
    for (int i = 0; i < (async ? 1 : run->conc); i++) {
        pthread_join(threads[i], NULL);
    }
    if (async) {
        bench_cq_drain_destroy(run->cq);
    }
    res->window_s = (double)seconds;
    collect(run->callers, run->conc, res);
    res->rate = (double)res->done / res->window_s;
    if (!run->fund) {
        int64_t ticks[N_CPU];
        bench_cpu_delta(cpu0, cpu1, N_CPU, ticks);
        bench_cpu_rates(ticks, N_CPU, res->window_s, (double)res->done, res->cores, res->us_per);
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
    printf("%-8s %8s %5s %8s %9s %8s %8s %6s", "scenario", "accounts", "conc", "ops", "ops/s",
           "p50 ms", "p99 ms", "errors");
    bench_print_cpu_header(proc_names, N_PROCS);
    fflush(stdout);
}

static void
print_row(const bench_run_t *run, const bench_result_t *r)
{
    printf("%-8s %8d %5d %8" PRId64 " %9.1f %8.3f %8.3f %6" PRId64, run->name, run->n_accounts,
           run->conc, r->done, r->rate, r->p50_ms, r->p99_ms, r->err.n);
    bench_print_cpu_row(r->cores, r->us_per, N_PROCS);
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
    if (r->err.n == 0) {
        return;
    }
    printf("  errors in %s:", run->name);
    bench_print_codes(r->err.by_code);
    printf("; first: %s\n", r->err.first.msg);
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
            r->done, r->rate, r->p50_ms, r->p99_ms, r->err.n, r->acked, r->replayed,
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
        if (res.err.n == 0) {
            return;
        }
        if (attempt == 20) {
            fprintf(stderr,
                    "balance-bench: funding %d accounts of %s failed %" PRId64 " times: %s\n",
                    run.n_accounts, run.name, res.err.n, res.err.first.msg);
            exit(1);
        }
        svc_sleep_ms(100);
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
    int64_t t0 = bench_now_ns();
    bench_result_t res;

    fund_accounts(&run, cfg->pids);
    printf("  (%s: funded %d account%s with TopUp(%d) each in %.1f s)\n", name, n_accounts,
           n_accounts == 1 ? "" : "s", FUND_AMOUNT, (double)(bench_now_ns() - t0) / 1e9);
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
    uint64_t s = (uint64_t)bench_now_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL);

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
           (double)BENCH_WARMUP_NS / 1e9, cfg.seconds);
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
