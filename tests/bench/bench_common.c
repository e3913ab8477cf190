/*
 * bench_common.c: what the load tools under tests/bench share (bench_common.h):
 * time, samples, errors by status, CPU time and memory from /proc, table
 * printing and one unary call on a gRPC C-core completion queue.
 */
#define _GNU_SOURCE
#include "bench_common.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

/* ---------- time and the measured window ---------- */

int64_t
bench_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void
bench_sleep_until_ns(int64_t t)
{
    struct timespec ts = {(time_t)(t / 1000000000LL), (long)(t % 1000000000LL)};

    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

bench_window_t
bench_window_from_now(int64_t seconds)
{
    bench_window_t w;

    w.warm_end_ns = bench_now_ns() + BENCH_WARMUP_NS;
    w.end_ns = w.warm_end_ns + seconds * 1000000000LL;
    return w;
}

bool
bench_window_holds(const bench_window_t *w, int64_t t0, int64_t t1)
{
    return t0 >= w->warm_end_ns && t1 <= w->end_ns;
}

/* ---------- latency samples ---------- */

int
bench_samples_push(bench_samples_t *s, int64_t v)
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

int
bench_samples_move(bench_samples_t *dst, bench_samples_t *src)
{
    if (src->n > 0) { /* v is NULL when nothing was recorded */
        if (dst->cap - dst->n < src->n) {
            size_t cap = dst->n + src->n;
            int64_t *nv = realloc(dst->v, cap * sizeof(*nv));
            if (nv == NULL) {
                return -1;
            }
            dst->v = nv;
            dst->cap = cap;
        }
        memcpy(dst->v + dst->n, src->v, src->n * sizeof(*src->v));
        dst->n += src->n;
    }
    bench_samples_free(src);
    return 0;
}

void
bench_samples_percentiles(bench_samples_t *s, double *p50_ms, double *p99_ms)
{
    if (s->n > 0) {
        qsort(s->v, s->n, sizeof(*s->v), bench_cmp_i64);
    }
    *p50_ms = bench_percentile_ms(s->v, s->n, 50);
    *p99_ms = bench_percentile_ms(s->v, s->n, 99);
}

void
bench_samples_free(bench_samples_t *s)
{
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

double
bench_percentile_ms(const int64_t *v, size_t n, unsigned pct)
{
    size_t rank;

    if (n == 0) {
        return 0.0;
    }
    rank = (n * pct + 99) / 100;
    return (double)v[rank > 0 ? rank - 1 : 0] / 1e6;
}

int
bench_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

int
bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* ---------- errors by status ---------- */

void
bench_errors_add(bench_errors_t *e, const svc_err_t *err)
{
    int code = (int)err->code > 0 && (int)err->code < BENCH_N_CODES ? (int)err->code : SVC_UNKNOWN;

    e->by_code[code]++;
    if (e->n++ == 0) {
        e->first = *err;
    }
}

void
bench_errors_merge(bench_errors_t *dst, const bench_errors_t *src)
{
    for (int k = 0; k < BENCH_N_CODES; k++) {
        dst->by_code[k] += src->by_code[k];
    }
    if (src->n > 0 && dst->n == 0) {
        dst->first = src->first;
    }
    dst->n += src->n;
}

void
bench_print_codes(const int64_t codes[BENCH_N_CODES])
{
    for (int k = 0; k < BENCH_N_CODES; k++) {
        if (codes[k] > 0) {
            printf(" %s %" PRId64, svc_status_name((svc_status_t)k), codes[k]);
        }
    }
}

/* ---------- CPU time from /proc ---------- */

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

/* Busy ticks of all CPUs (not idle, iowait or steal) into *busy, irq + softirq into *irq. */
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

void
bench_cpu_snapshot(const int64_t *pids, int n_procs, int pg_index, int64_t *out)
{
    char path[64];

    for (int i = 0; i < n_procs; i++) {
        out[i] = -1;
        if (i == 0) {
            out[i] = stat_ticks("/proc/self/stat", false, NULL);
        } else if (pids[i] > 0 && i == pg_index) {
            out[i] = pg_tree_ticks(pids[i]);
        } else if (pids[i] > 0) {
            snprintf(path, sizeof(path), "/proc/%" PRId64 "/stat", pids[i]);
            out[i] = stat_ticks(path, false, NULL);
        }
    }
    machine_ticks(&out[n_procs], &out[n_procs + 1]);
}

void
bench_cpu_window(const bench_window_t *w, const int64_t *pids, int n_procs, int pg_index,
                 int64_t *before, int64_t *after)
{
    bench_sleep_until_ns(w->warm_end_ns);
    bench_cpu_snapshot(pids, n_procs, pg_index, before);
    bench_sleep_until_ns(w->end_ns);
    bench_cpu_snapshot(pids, n_procs, pg_index, after);
}

void
bench_cpu_delta(const int64_t *before, const int64_t *after, int n, int64_t *ticks)
{
    for (int i = 0; i < n; i++) {
        ticks[i] = before[i] < 0 || after[i] < 0 ? -1 : after[i] - before[i];
    }
}

void
bench_cpu_rates(const int64_t *ticks, int n, double window_s, double units, double *cores,
                double *us_per)
{
    double tck = (double)sysconf(_SC_CLK_TCK);

    for (int i = 0; i < n; i++) {
        bool known = ticks[i] >= 0 && tck > 0;
        double secs = (double)ticks[i] / tck;
        cores[i] = known && window_s > 0 ? secs / window_s : -1.0;
        us_per[i] = known && units > 0 ? secs * 1e6 / units : -1.0;
    }
}

double
bench_other_cores(const double *cores, int n_procs)
{
    double other = cores[n_procs];

    for (int i = 0; i < n_procs; i++) {
        other -= cores[i] > 0 ? cores[i] : 0.0;
    }
    other -= cores[n_procs + 1] > 0 ? cores[n_procs + 1] : 0.0;
    return cores[n_procs] < 0 ? -1.0 : (other > 0 ? other : 0.0);
}

/* ---------- memory of processes from /proc ---------- */

void
bench_mem_read(int64_t pid, int64_t *rss_kb, int64_t *hwm_kb)
{
    char path[64], line[256];
    long long v;
    FILE *f;

    *rss_kb = *hwm_kb = -1;
    snprintf(path, sizeof(path), "/proc/%" PRId64 "/status", pid);
    if (pid <= 0 || (f = fopen(path, "r")) == NULL) {
        return;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "VmHWM: %lld kB", &v) == 1) {
            *hwm_kb = v;
        } else if (sscanf(line, "VmRSS: %lld kB", &v) == 1) {
            *rss_kb = v;
            break; /* VmHWM comes first */
        }
    }
    fclose(f);
}

int
bench_mem_reset_peak(int64_t pid)
{
    char path[64];
    FILE *f;
    int rc;

    snprintf(path, sizeof(path), "/proc/%" PRId64 "/clear_refs", pid);
    if (pid <= 0 || (f = fopen(path, "w")) == NULL) {
        return -1;
    }
    rc = fputs("5", f) < 0 ? -1 : 0;
    return fclose(f) != 0 ? -1 : rc; /* the kernel refuses the write when it is flushed */
}

#define MEM_MAX_PIDS 8

struct bench_mem_sampler {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop, joined;
    int n, interval_ms;
    int64_t pids[MEM_MAX_PIDS], max_kb[MEM_MAX_PIDS];
};

static void
mem_sample(bench_mem_sampler_t *s)
{
    for (int i = 0; i < s->n; i++) {
        int64_t rss, hwm;
        bench_mem_read(s->pids[i], &rss, &hwm);
        if (rss > s->max_kb[i]) {
            s->max_kb[i] = rss;
        }
    }
}

static void *
mem_sampler_main(void *arg)
{
    bench_mem_sampler_t *s = arg;
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        mem_sample(s); /* a few /proc reads: short enough to do under the lock */
        until.tv_nsec += (long)s->interval_ms * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        while (!s->stop && pthread_cond_timedwait(&s->cv, &s->mu, &until) == 0) {
        }
    }
    mem_sample(s);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

bench_mem_sampler_t *
bench_mem_sampler_create(const int64_t *pids, int n, int interval_ms)
{
    bench_mem_sampler_t *s = calloc(1, sizeof(*s));

    if (s == NULL) {
        return NULL;
    }
    s->n = n < MEM_MAX_PIDS ? n : MEM_MAX_PIDS;
    s->interval_ms = interval_ms > 0 ? interval_ms : 1;
    for (int i = 0; i < s->n; i++) {
        s->pids[i] = pids[i];
        s->max_kb[i] = -1;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (pthread_create(&s->thread, NULL, mem_sampler_main, s) != 0) {
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    return s;
}

void
bench_mem_sampler_stop(bench_mem_sampler_t *s, int64_t *max_rss_kb)
{
    if (!s->joined) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
        s->joined = true;
    }
    if (max_rss_kb != NULL) {
        memcpy(max_rss_kb, s->max_kb, (size_t)s->n * sizeof(*max_rss_kb));
    }
}

void
bench_mem_sampler_destroy(bench_mem_sampler_t *s)
{
    if (s == NULL) {
        return;
    }
    bench_mem_sampler_stop(s, NULL);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ---------- printing ---------- */

void
bench_print_num(int width, int decimals, double v)
{
    if (v < 0) {
        printf(" %*s", width, "-");
    } else {
        printf(" %*.*f", width, decimals, v);
    }
}

void
bench_print_cpu_header(const char *const *names, int n_procs)
{
    printf(" | %7s %5s %5s", "machine", "irq", "other");
    for (int i = 0; i < n_procs; i++) {
        printf(" %5s", names[i]);
    }
    printf(" | %6s", "all");
    for (int i = 0; i < n_procs; i++) {
        printf(" %6s", names[i]);
    }
    printf("\n");
}

void
bench_print_cpu_row(const double *cores, const double *us_per, int n_procs)
{
    printf(" |");
    bench_print_num(7, 2, cores[n_procs]);
    bench_print_num(5, 2, cores[n_procs + 1]);
    bench_print_num(5, 2, bench_other_cores(cores, n_procs));
    for (int i = 0; i < n_procs; i++) {
        bench_print_num(5, 2, cores[i]);
    }
    printf(" |");
    bench_print_num(6, 0, us_per[n_procs]);
    for (int i = 0; i < n_procs; i++) {
        bench_print_num(6, 0, us_per[i]);
    }
    printf("\n");
}

/* ---------- one unary call on a completion queue ---------- */

int
bench_call_init(bench_call_t *c, grpc_channel *ch, grpc_completion_queue *cq, const char *method,
                int64_t timeout_ms, const ProtobufCMessage *req)
{
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    grpc_slice slice;

    c->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                       grpc_slice_from_static_string(method), NULL, deadline, NULL);
    if (c->call == NULL) {
        return -1;
    }
    slice = grpc_slice_malloc(protobuf_c_message_get_packed_size(req));
    protobuf_c_message_pack(req, GRPC_SLICE_START_PTR(slice));
    c->send = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    c->recv = NULL;
    grpc_metadata_array_init(&c->recv_md);
    grpc_metadata_array_init(&c->trailers);
    c->status = GRPC_STATUS_UNKNOWN;
    c->details = grpc_empty_slice();
    return 0;
}

grpc_call_error
bench_call_start(bench_call_t *c, grpc_metadata *md, size_t n_md, void *tag)
{
    grpc_op ops[6];

    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = n_md;
    ops[0].data.send_initial_metadata.metadata = md;
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
    return grpc_call_start_batch(c->call, ops, 6, tag, NULL);
}

void
bench_call_cleanup(bench_call_t *c)
{
    if (c->send != NULL) {
        grpc_byte_buffer_destroy(c->send);
    }
    if (c->recv != NULL) {
        grpc_byte_buffer_destroy(c->recv);
    }
    grpc_slice_unref(c->details);
    grpc_metadata_array_destroy(&c->recv_md);
    grpc_metadata_array_destroy(&c->trailers);
    grpc_call_unref(c->call);
    c->send = c->recv = NULL;
    c->call = NULL;
}

svc_status_t
bench_call_status(const bench_call_t *c, bool success, char *msg, size_t msg_len)
{
    svc_status_t code = success ? svc_status_from_grpc((int)c->status) : SVC_UNAVAILABLE;

    if (msg != NULL && code != SVC_OK) {
        char *text = grpc_slice_to_c_string(c->details);
        snprintf(msg, msg_len, "%s", success ? text : "call failed in transport");
        gpr_free(text);
    }
    return code;
}

ProtobufCMessage *
bench_unpack(grpc_byte_buffer *buf, const ProtobufCMessageDescriptor *desc)
{
    grpc_byte_buffer_reader reader;
    ProtobufCMessage *msg;
    grpc_slice slice;

    if (buf == NULL || !grpc_byte_buffer_reader_init(&reader, buf)) {
        return NULL;
    }
    slice = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    msg = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(slice),
                                    GRPC_SLICE_START_PTR(slice));
    grpc_slice_unref(slice);
    return msg;
}

void
bench_cq_drain_destroy(grpc_completion_queue *cq)
{
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
}
