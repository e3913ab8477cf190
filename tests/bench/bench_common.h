/*
 * bench_common.h: pieces the load tools under tests/bench share: the clock and
 * the measured window, latency samples and their percentiles, errors counted
 * by status, CPU time of processes and of the machine from /proc, their
 * memory (resident set and its peak), table printing, and one unary call on
 * a gRPC C-core completion queue. Each tool keeps its own scenarios; nothing
 * here is thread-safe unless it says so.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>

#include "svc/err.h"

#define BENCH_WARMUP_NS 500000000LL /* before each measured window: connections, pool growth */
#define BENCH_N_CODES (SVC_UNAUTHENTICATED + 1)

/* ---------- time and the measured window ---------- */

/* CLOCK_MONOTONIC in ns. */
int64_t bench_now_ns(void);

/* Sleeps until CLOCK_MONOTONIC reaches t (ns), through EINTR. */
void bench_sleep_until_ns(int64_t t);

/* A warm-up that ends at warm_end_ns, then the measured window up to end_ns (monotonic ns). */
typedef struct {
    int64_t warm_end_ns, end_ns;
} bench_window_t;

/* A window starting now: BENCH_WARMUP_NS of warm-up, then seconds measured. */
bench_window_t bench_window_from_now(int64_t seconds);

/* Whether an operation that started at t0 and ended at t1 lies inside the measured window. */
bool bench_window_holds(const bench_window_t *w, int64_t t0, int64_t t1);

/* ---------- latency samples ---------- */

/* A growing array of latencies in ns; zero-initialised is empty; v is NULL until a push. */
typedef struct {
    int64_t *v;
    size_t n, cap;
} bench_samples_t;

/* Appends v; returns 0, or -1 when out of memory (s unchanged). */
int bench_samples_push(bench_samples_t *s, int64_t v);

/* Appends src's samples to dst and frees src's; returns 0, or -1 when out of memory. */
int bench_samples_move(bench_samples_t *dst, bench_samples_t *src);

/*
 * Sorts s and sets *p50_ms and *p99_ms to its nearest-rank percentiles in ms
 * (0 when s is empty). s keeps its samples; the caller frees them.
 */
void bench_samples_percentiles(bench_samples_t *s, double *p50_ms, double *p99_ms);

void bench_samples_free(bench_samples_t *s);

/* Nearest-rank percentile pct of v[0..n-1] (sorted, ns), in ms; 0 when n is 0. */
double bench_percentile_ms(const int64_t *v, size_t n, unsigned pct);

/* qsort comparators. */
int bench_cmp_i64(const void *a, const void *b);
int bench_cmp_double(const void *a, const void *b);

/* ---------- errors by status ---------- */

/* Failures counted by status code, and the first one's message. Zero-initialised is empty. */
typedef struct {
    int64_t n;
    int64_t by_code[BENCH_N_CODES];
    svc_err_t first;
} bench_errors_t;

/* Counts err under its code (SVC_UNKNOWN when out of range); keeps it when it is the first. */
void bench_errors_add(bench_errors_t *e, const svc_err_t *err);

/* Adds src's counts to dst; dst keeps its first error, else takes src's. */
void bench_errors_merge(bench_errors_t *dst, const bench_errors_t *src);

/* Prints " NAME count" for every code with a count above 0 (no newline). */
void bench_print_codes(const int64_t codes[BENCH_N_CODES]);

/* ---------- CPU time from /proc ---------- */

/*
 * Reads the CPU ticks (utime+stime) of n_procs processes and of the machine
 * into out[0..n_procs+1]: out[0] is this process whatever pids[0] says; for
 * i > 0, pids[i] <= 0 means not reported (-1); i == pg_index sums the
 * postmaster pids[i], the backends it reaped and its live children (pass -1
 * when there is none). out[n_procs] gets the busy ticks of all CPUs (user,
 * nice, system, irq, softirq), out[n_procs + 1] irq + softirq. Unknown: -1.
 * REQUIRES: n_procs >= 1; out has n_procs + 2 entries.
 */
void bench_cpu_snapshot(const int64_t *pids, int n_procs, int pg_index, int64_t *out);

/*
 * Sleeps until the end of w's warm-up, snapshots into before, sleeps until
 * the end of the window, snapshots into after (as bench_cpu_snapshot).
 */
void bench_cpu_window(const bench_window_t *w, const int64_t *pids, int n_procs, int pg_index,
                      int64_t *before, int64_t *after);

/* ticks[i] = after[i] - before[i] for i < n, or -1 when either is unknown. */
void bench_cpu_delta(const int64_t *before, const int64_t *after, int n, int64_t *ticks);

/*
 * From n tick counts (-1: unknown) spent over window_s seconds: cores[i], CPU
 * seconds per second, and us_per[i], CPU microseconds per unit of work
 * (units: operations done, holds, ...); -1 where unknown or units <= 0.
 */
void bench_cpu_rates(const int64_t *ticks, int n, double window_s, double units, double *cores,
                     double *us_per);

/*
 * CPUs busy with processes not measured: cores[n_procs] (the machine) less
 * cores[n_procs + 1] (irq) and cores[0..n_procs-1], at least 0; -1 when the
 * machine is unknown.
 */
double bench_other_cores(const double *cores, int n_procs);

/* ---------- memory of processes from /proc ---------- */

/* VmRSS and VmHWM (its peak) of pid from /proc/<pid>/status, in kB; -1 each when unreadable. */
void bench_mem_read(int64_t pid, int64_t *rss_kb, int64_t *hwm_kb);

/*
 * Resets pid's VmHWM to its VmRSS now (writes 5 to /proc/<pid>/clear_refs,
 * Linux 4.0 and later), so a later VmHWM is the peak since this call.
 * Returns 0, or -1 when that is not allowed (VmHWM stays the peak since the
 * process started).
 */
int bench_mem_reset_peak(int64_t pid);

/* Samples the VmRSS of a few processes from a thread of its own. */
typedef struct bench_mem_sampler bench_mem_sampler_t;

/*
 * Starts a thread that reads the VmRSS of pids[0..n-1] (<= 0: skipped) at
 * once and then every interval_ms, keeping each one's largest. Returns NULL
 * when out of memory or threads. REQUIRES: n <= 8.
 */
bench_mem_sampler_t *bench_mem_sampler_create(const int64_t *pids, int n, int interval_ms);

/*
 * Stops the sampling after one last read and gives each process's largest
 * VmRSS seen in max_rss_kb[0..n-1] (-1: never read). The sampler is stopped
 * after the first call; later ones give the same numbers.
 */
void bench_mem_sampler_stop(bench_mem_sampler_t *s, int64_t *max_rss_kb);

/* Stops s if it still samples and frees it; NULL is a no-op. */
void bench_mem_sampler_destroy(bench_mem_sampler_t *s);

/* ---------- printing ---------- */

/* A number right-aligned in width columns after a space, or "-" when it is unknown (< 0). */
void bench_print_num(int width, int decimals, double v);

/*
 * The CPU columns' header: " | machine irq other <names> | all <names>" and a
 * newline, for the layout bench_print_cpu_row prints.
 */
void bench_print_cpu_header(const char *const *names, int n_procs);

/*
 * One row's CPU columns, as bench_cpu_rates gives them: " |" machine, irq,
 * other and each process in cores; " |" machine and each process in us per
 * unit; then a newline.
 */
void bench_print_cpu_row(const double *cores, const double *us_per, int n_procs);

/* ---------- one unary call on a completion queue (gRPC C core) ---------- */

/* A unary call in flight and what its one batch fills in. */
typedef struct {
    grpc_call *call;
    grpc_byte_buffer *send, *recv; /* send is kept until the call completes, as grpc.h asks */
    grpc_metadata_array recv_md, trailers;
    grpc_status_code status;
    grpc_slice details;
} bench_call_t;

/*
 * Creates c's call of method on ch, bound to cq, with a deadline timeout_ms
 * from now, and packs req to send; bench_call_start sends it. Returns 0, or
 * -1 when gRPC gives no call (then nothing is left to free).
 */
int bench_call_init(bench_call_t *c, grpc_channel *ch, grpc_completion_queue *cq,
                    const char *method, int64_t timeout_ms, const ProtobufCMessage *req);

/*
 * Starts c's one batch (send metadata md[0..n_md-1] and the request, close,
 * receive metadata, message and status) tagged tag. md must outlive the call.
 */
grpc_call_error bench_call_start(bench_call_t *c, grpc_metadata *md, size_t n_md, void *tag);

/* Frees what c holds and unrefs its call; c->call is NULL after. */
void bench_call_cleanup(bench_call_t *c);

/*
 * The status of c's completed batch (success: the event's): SVC_UNAVAILABLE
 * when the batch failed, else the gRPC status mapped. When not SVC_OK and msg
 * is not NULL, msg gets the status details or "call failed in transport".
 */
svc_status_t bench_call_status(const bench_call_t *c, bool success, char *msg, size_t msg_len);

/* Unpacks buf with protobuf-c's default allocator; NULL when it does not parse. Caller frees. */
ProtobufCMessage *bench_unpack(grpc_byte_buffer *buf, const ProtobufCMessageDescriptor *desc);

/* Shuts cq down, drains it and destroys it. */
void bench_cq_drain_destroy(grpc_completion_queue *cq);

#endif
