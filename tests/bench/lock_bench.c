/*
 * lock_bench.c: lock-bench, a load tool for lock-svc. Measures acquire+release
 * pairs per second and their latency through lock-svc (libsvc lock client, one
 * shared channel) and through the same Lua scripts called directly over
 * hiredis (lock_store, one connection per thread), then the hand-off rate on
 * one contended key. It prints numbers; it passes or fails nothing on time.
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

#include "lock_store.h"
#include "svc/client.h"
#include "svc/config.h"
#include "svc/err.h"
#include "svc/lock_client.h"
#include "svc/log.h"
#include "svc/timer.h"

#define BENCH_OWNER "lock-bench"
#define LEASE_MS 10000
#define HANDOFF_WAIT_MS 10000
#define WARMUP_NS 500000000LL /* before each measured window: connections, pool growth */
#define MAX_CONC 1024
#define MAX_CONC_LIST 16
#define N_CODES (SVC_UNAUTHENTICATED + 1)
#define N_PROCS 3 /* CPU time is reported for: this tool, lock-svc, redis-server */
#define TARGET_CONC 64
#define TARGET_RATIO 0.5

typedef enum {
    MODE_SVC_PAIR,    /* lock-svc: acquire (wait_ms 0) + release, own key */
    MODE_RAW_PAIR,    /* lock_store: the same scripts over hiredis, own key */
    MODE_SVC_HANDOFF, /* lock-svc: acquire (wait_ms 10000) + release, one shared key */
    MODE_RAW_SPIN,    /* lock_store: retry acquire without pause until granted, shared key */
} bench_mode_t;

typedef struct {
    int64_t *v;
    size_t n, cap;
} samples_t;

typedef struct bench_run bench_run_t;

/* One load thread: its own samples and counters, read by main after join. */
typedef struct {
    bench_run_t *run;
    int index;
    int gen; /* bumped after a failure, so a key we may still hold is not reused */
    char key[SVC_LOCK_KEY_MAX + 1];
    pthread_t tid;
    samples_t lat;
    int64_t done;    /* pairs (or grants) fully inside the measured window */
    int64_t refused; /* raw spin: refused attempts inside the window */
    int64_t n_errors;
    int64_t errors[N_CODES];
    svc_err_t first_err;
} bench_worker_t;

/* One scenario: a mode at a concurrency. Times are CLOCK_MONOTONIC ns. */
struct bench_run {
    bench_mode_t mode;
    int conc;
    const char *run_id;
    svc_client_t *client;
    lock_store_t *store;
    pthread_barrier_t start;
    int64_t warm_end_ns, end_ns;
    int (*op)(bench_worker_t *w, int64_t *sample_ns);
};

/* What one scenario measured. */
typedef struct {
    int64_t done, refused, n_errors;
    int64_t errors[N_CODES];
    svc_err_t first_err;
    double window_s, rate, refused_rate, p50_ms, p99_ms;
    double cores[N_PROCS];  /* CPU seconds per second of window; < 0 unknown */
    double us_per[N_PROCS]; /* CPU microseconds per done operation; < 0 unknown */
} bench_result_t;

typedef struct {
    const char *lock_addr, *redis_url, *conc_text;
    int64_t seconds, lock_pid, redis_pid;
    int conc[MAX_CONC_LIST];
    int n_conc;
    char run_id[9];
    svc_client_t *client;
} bench_cfg_t;

/* ---------- time, samples, CPU ---------- */

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

/* User+system CPU ticks of a process (pid 0: this one), or -1 when unknown. */
static int64_t
proc_cpu_ticks(int64_t pid)
{
    char path[64], buf[1024];
    unsigned long long utime, stime;
    const char *p;
    size_t n;
    FILE *f;

    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        snprintf(path, sizeof(path), "/proc/self/stat");
    } else {
        snprintf(path, sizeof(path), "/proc/%" PRId64 "/stat", pid);
    }
    if ((f = fopen(path, "r")) == NULL) {
        return -1;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields 14 and 15 (utime, stime) follow the command name, which may hold spaces. */
    if ((p = strrchr(buf, ')')) == NULL ||
        sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) !=
            2) {
        return -1;
    }
    return (int64_t)(utime + stime);
}

static void
cpu_snapshot(const int64_t pids[N_PROCS], int64_t out[N_PROCS])
{
    for (int i = 0; i < N_PROCS; i++) {
        out[i] = proc_cpu_ticks(pids[i]);
    }
}

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
    int code = (int)err->code > 0 && (int)err->code < N_CODES ? (int)err->code : SVC_UNKNOWN;

    w->errors[code]++;
    if (w->n_errors++ == 0) {
        w->first_err = *err;
    }
    w->gen++;
    worker_set_key(w);
    return -1;
}

/* lock-svc: wait_ms 0 (MODE_SVC_PAIR) samples the pair, else only the acquire wait. */
static int
op_svc(bench_worker_t *w, int64_t *sample_ns)
{
    bool handoff = w->run->mode == MODE_SVC_HANDOFF;
    svc_lock_opts_t opts = {.owner = BENCH_OWNER, .lease_ms = LEASE_MS};
    svc_lock_t lock;
    svc_err_t err;
    int64_t t0 = now_ns(), t1;

    opts.wait_ms = handoff ? HANDOFF_WAIT_MS : 0;
    if (svc_lock_acquire(w->run->client, w->key, &opts, &lock, &err) != 0) {
        return worker_fail(w, &err);
    }
    t1 = now_ns();
    if (svc_lock_release(w->run->client, &lock, NULL, &err) != 0) {
        return worker_fail(w, &err);
    }
    *sample_ns = handoff ? t1 - t0 : now_ns() - t0;
    return 0;
}

/* One attempt of the acquire script, as lock-svc makes it (no waiter id). */
static int
raw_try(bench_worker_t *w, const char *token, lock_acquire_result_t *res, svc_err_t *err)
{
    return lock_store_acquire(w->run->store, w->key, token, BENCH_OWNER, LEASE_MS,
                              svc_now_unix_ms() * 1000, NULL, 0, res, err);
}

static int
op_raw_pair(bench_worker_t *w, int64_t *sample_ns)
{
    char token[LOCK_TOKEN_LEN + 1];
    lock_acquire_result_t res;
    svc_err_t err;
    int64_t t0 = now_ns();

    lock_store_new_token(token);
    if (raw_try(w, token, &res, &err) != 0) {
        return worker_fail(w, &err);
    }
    if (!res.granted) {
        svc_err_set(&err, SVC_ABORTED, "lock %s is held", w->key);
        return worker_fail(w, &err);
    }
    if (lock_store_release(w->run->store, w->key, token, false, &err) != 0) {
        return worker_fail(w, &err);
    }
    *sample_ns = now_ns() - t0;
    return 0;
}

/*
 * Busy polling: retries the acquire script with no pause until granted, then
 * releases. Returns 1 (neither done nor failed) when the window ended first.
 */
static int
op_raw_spin(bench_worker_t *w, int64_t *sample_ns)
{
    char token[LOCK_TOKEN_LEN + 1];
    lock_acquire_result_t res;
    svc_err_t err;
    int64_t t0 = now_ns(), t;

    lock_store_new_token(token);
    for (;;) {
        if (raw_try(w, token, &res, &err) != 0) {
            return worker_fail(w, &err);
        }
        if (res.granted) {
            break;
        }
        t = now_ns();
        if (t >= w->run->end_ns) {
            return 1;
        }
        if (t >= w->run->warm_end_ns) {
            w->refused++;
        }
    }
    *sample_ns = now_ns() - t0;
    if (lock_store_release(w->run->store, w->key, token, false, &err) != 0) {
        return worker_fail(w, &err);
    }
    return 0;
}

/* ---------- running a scenario ---------- */

/* Loops the operation until the window ends; counts what started and ended inside it. */
static void *
worker_main(void *arg)
{
    bench_worker_t *w = arg;
    const bench_run_t *run = w->run;
    svc_err_t err;

    pthread_barrier_wait(&w->run->start);
    for (;;) {
        int64_t t0 = now_ns(), t1, sample = 0;
        int rc;

        if (t0 >= run->end_ns) {
            break;
        }
        rc = run->op(w, &sample);
        t1 = now_ns();
        if (rc != 0 || t0 < run->warm_end_ns || t1 > run->end_ns) {
            continue;
        }
        if (samples_push(&w->lat, sample) != 0) {
            svc_err_set(&err, SVC_RESOURCE_EXHAUSTED, "out of memory for samples");
            (void)worker_fail(w, &err);
            continue;
        }
        w->done++;
    }
    return NULL;
}

/* Sums the workers' counters and samples into res (latencies sorted for percentiles). */
static void
collect(bench_worker_t *workers, int n, bench_result_t *res)
{
    size_t total = 0, at = 0;
    int64_t *all;

    for (int i = 0; i < n; i++) {
        bench_worker_t *w = &workers[i];
        res->done += w->done;
        res->refused += w->refused;
        for (int c = 0; c < N_CODES; c++) {
            res->errors[c] += w->errors[c];
        }
        if (w->n_errors > 0 && res->n_errors == 0) {
            res->first_err = w->first_err;
        }
        res->n_errors += w->n_errors;
        total += w->lat.n;
    }
    all = malloc((total ? total : 1) * sizeof(*all));
    if (all == NULL) {
        fprintf(stderr, "lock-bench: out of memory for %zu samples\n", total);
        exit(1);
    }
    for (int i = 0; i < n; i++) {
        if (workers[i].lat.n > 0) { /* v is NULL when nothing was recorded */
            memcpy(all + at, workers[i].lat.v, workers[i].lat.n * sizeof(*all));
            at += workers[i].lat.n;
        }
        free(workers[i].lat.v);
    }
    qsort(all, total, sizeof(*all), cmp_i64);
    res->p50_ms = percentile_ms(all, total, 50);
    res->p99_ms = percentile_ms(all, total, 99);
    free(all);
}

static void
cpu_result(const int64_t before[N_PROCS], const int64_t after[N_PROCS], bench_result_t *res)
{
    double tck = (double)sysconf(_SC_CLK_TCK);

    for (int i = 0; i < N_PROCS; i++) {
        double secs = (double)(after[i] - before[i]) / tck;
        bool known = before[i] >= 0 && after[i] >= 0 && tck > 0;
        res->cores[i] = known ? secs / res->window_s : -1.0;
        res->us_per[i] = known && res->done > 0 ? secs * 1e6 / (double)res->done : -1.0;
    }
}

/*
 * Runs run->conc threads of run->op for a warm-up, then `seconds` measured,
 * and fills res. Main samples CPU time at both ends of the window.
 */
static void
run_scenario(bench_run_t *run, int64_t seconds, const int64_t pids[N_PROCS], bench_result_t *res)
{
    bench_worker_t *workers = calloc((size_t)run->conc, sizeof(*workers));
    int64_t cpu0[N_PROCS], cpu1[N_PROCS];

    if (workers == NULL || pthread_barrier_init(&run->start, NULL, (unsigned)run->conc + 1) != 0) {
        fprintf(stderr, "lock-bench: cannot set up %d workers\n", run->conc);
        exit(1);
    }
    memset(res, 0, sizeof(*res));
    for (int i = 0; i < run->conc; i++) {
        workers[i].run = run;
        workers[i].index = i;
        worker_set_key(&workers[i]);
        if (pthread_create(&workers[i].tid, NULL, worker_main, &workers[i]) != 0) {
            fprintf(stderr, "lock-bench: cannot start worker thread %d\n", i);
            exit(1);
        }
    }
    /* Set before the barrier: the workers read them after it. */
    run->warm_end_ns = now_ns() + WARMUP_NS;
    run->end_ns = run->warm_end_ns + seconds * 1000000000LL;
    pthread_barrier_wait(&run->start);
    sleep_until_ns(run->warm_end_ns);
    cpu_snapshot(pids, cpu0);
    sleep_until_ns(run->end_ns);
    cpu_snapshot(pids, cpu1);
    for (int i = 0; i < run->conc; i++) {
        pthread_join(workers[i].tid, NULL);
    }
    pthread_barrier_destroy(&run->start);
    res->window_s = (double)seconds;
    collect(workers, run->conc, res);
    res->rate = (double)res->done / res->window_s;
    res->refused_rate = (double)res->refused / res->window_s;
    cpu_result(cpu0, cpu1, res);
    free(workers);
}

/* Sets up the scenario's client or store (pool_size = concurrency) and runs it. */
static void
bench_one(const bench_cfg_t *cfg, bench_mode_t mode, int conc, bench_result_t *res)
{
    bench_run_t run = {.mode = mode, .conc = conc, .run_id = cfg->run_id};
    const int64_t pids[N_PROCS] = {0, cfg->lock_pid > 0 ? cfg->lock_pid : -1,
                                   cfg->redis_pid > 0 ? cfg->redis_pid : -1};
    svc_err_t err;

    if (mode == MODE_SVC_PAIR || mode == MODE_SVC_HANDOFF) {
        run.client = cfg->client;
        run.op = op_svc;
    } else {
        run.store = lock_store_create(cfg->redis_url, conc, &err);
        if (run.store == NULL) {
            fprintf(stderr, "lock-bench: %s\n", err.msg);
            exit(2);
        }
        run.op = mode == MODE_RAW_PAIR ? op_raw_pair : op_raw_spin;
    }
    run_scenario(&run, cfg->seconds, pids, res);
    lock_store_destroy(run.store);
}

/* ---------- printing ---------- */

static void
print_cpu(const bench_result_t *r)
{
    printf(" |");
    for (int i = 0; i < N_PROCS; i++) {
        if (r->cores[i] < 0) {
            printf(" %5s", "-");
        } else {
            printf(" %5.2f", r->cores[i]);
        }
    }
    printf(" |");
    for (int i = 0; i < N_PROCS; i++) {
        if (r->us_per[i] < 0) {
            printf(" %6s", "-");
        } else {
            printf(" %6.1f", r->us_per[i]);
        }
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
    printf("\n== acquire + release on distinct keys (one key per thread, wait_ms 0, "
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
           r->p50_ms, r->p99_ms, r->n_errors);
    print_cpu(r);
    fflush(stdout);
}

static void
print_handoff_header(void)
{
    printf("\n== hand-off on one contended key (every thread: acquire, then release at once) "
           "==\n");
    printf("lock-svc: wait_ms %d, waiters parked in FIFO order, p50/p99 of the acquire wait;\n",
           HANDOFF_WAIT_MS);
    printf("raw spin: lock_store_acquire retried with no pause until granted; not comparable\n");
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
           refused, r->p50_ms, r->p99_ms, r->n_errors);
    print_cpu(r);
    fflush(stdout);
}

/* One line per scenario that had failures: counts by status and the first message. */
static void
print_errors(const char *label, int conc, const bench_result_t *r)
{
    if (r->n_errors == 0) {
        return;
    }
    printf("  errors in %s at concurrency %d:", label, conc);
    for (int c = 0; c < N_CODES; c++) {
        if (r->errors[c] > 0) {
            printf(" %s %" PRId64, svc_status_name((svc_status_t)c), r->errors[c]);
        }
    }
    printf("; first: %s\n", r->first_err.msg);
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
         "threads per scenario, comma-separated; hand-off runs those >= 2", 0, 0, &cfg->conc_text,
         1},
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
}

/* One pair each way before measuring, so a lock-svc or Redis that is not there stops us early. */
static void
check_reachable(const bench_cfg_t *cfg)
{
    bench_worker_t w = {0};
    bench_run_t run = {.conc = 1, .run_id = cfg->run_id, .client = cfg->client};
    int64_t sample;

    w.run = &run;
    for (int mode = MODE_SVC_PAIR; mode <= MODE_RAW_PAIR; mode++) {
        run.mode = (bench_mode_t)mode;
        worker_set_key(&w);
        if (mode == MODE_RAW_PAIR &&
            (run.store = lock_store_create(cfg->redis_url, 1, &w.first_err)) == NULL) {
            fprintf(stderr, "lock-bench: %s\n", w.first_err.msg);
            exit(2);
        }
        /* The channel connects on first use: give lock-svc a few tries. */
        for (int i = 0; i < 20; i++) {
            if ((mode == MODE_SVC_PAIR ? op_svc(&w, &sample) : op_raw_pair(&w, &sample)) == 0) {
                w.n_errors = 0;
                break;
            }
            usleep(100000);
        }
        lock_store_destroy(run.store);
        if (w.n_errors > 0) {
            fprintf(stderr, "lock-bench: warm-up pair %s failed: %s\n",
                    mode == MODE_SVC_PAIR ? "through lock-svc" : "over hiredis", w.first_err.msg);
            exit(1);
        }
    }
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
    }
}

int
main(int argc, char **argv)
{
    bench_cfg_t cfg = {0};
    char token[LOCK_TOKEN_LEN + 1];
    svc_err_t err;

    load_config(&cfg, argc, argv);
    svc_log_init("lock-bench", SVC_LOG_WARN);
    lock_store_new_token(token);
    snprintf(cfg.run_id, sizeof(cfg.run_id), "%.8s", token);
    cfg.client = svc_client_get(cfg.lock_addr, &err);
    if (cfg.client == NULL) {
        fprintf(stderr, "lock-bench: %s\n", err.msg);
        return 2;
    }
    printf("lock-bench: lock-svc %s, redis %s, run %s\n", cfg.lock_addr, cfg.redis_url, cfg.run_id);
    printf("each scenario: %.1f s warm-up, then %" PRId64 " s measured; a pair counts when it "
           "starts and ends inside the window and both calls succeed; errors count the whole "
           "scenario\n",
           (double)WARMUP_NS / 1e9, cfg.seconds);
    fflush(stdout);
    check_reachable(&cfg);
    bench_pairs(&cfg);
    bench_handoff(&cfg);
    svc_client_release_all();
    return 0;
}
