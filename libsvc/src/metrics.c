/*
 * metrics.c: the process's Prometheus series and their HTTP endpoint.
 *
 * Families are kept in a list under one mutex, each with its series; the
 * mutex guards only their making and a scrape's walk. Values are atomics: a
 * double's bits in a 64-bit word, changed by compare-and-swap, so updates
 * never take the mutex. A histogram keeps one count per bucket (cumulated
 * when rendered), a count and a sum.
 */
#define _GNU_SOURCE
#include "svc/metrics.h"

#include <dirent.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "svc/log.h"

/* The gRPC interceptors' buckets, in seconds. */
static const double BUCKETS[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define N_BUCKETS (sizeof(BUCKETS) / sizeof(BUCKETS[0]))

struct svc_metric {
    struct svc_metric *next; /* in its family, in the order made */
    char *labels;            /* "" for none */
    _Atomic uint64_t value;  /* counter, gauge: a double's bits; histogram: the sum */
    _Atomic uint64_t count;  /* histogram */
    _Atomic uint64_t buckets[N_BUCKETS];
};

typedef struct family {
    struct family *next;
    char *name, *help;
    svc_metric_kind_t kind;
    svc_metric_t *series, **tail;
} family_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static family_t *families, **families_tail = &families;

/* ---------- values ---------- */

static uint64_t
bits_of(double v)
{
    uint64_t b;

    memcpy(&b, &v, sizeof(b));
    return b;
}

static double
double_of(uint64_t b)
{
    double v;

    memcpy(&v, &b, sizeof(v));
    return v;
}

static void
atomic_add_double(_Atomic uint64_t *word, double v)
{
    uint64_t old = atomic_load_explicit(word, memory_order_relaxed);

    while (!atomic_compare_exchange_weak_explicit(word, &old, bits_of(double_of(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

void
svc_metric_add(svc_metric_t *m, double v)
{
    if (m != NULL) {
        atomic_add_double(&m->value, v);
    }
}

void
svc_metric_set(svc_metric_t *m, double v)
{
    if (m != NULL) {
        atomic_store_explicit(&m->value, bits_of(v), memory_order_relaxed);
    }
}

void
svc_metric_observe(svc_metric_t *m, double v)
{
    if (m == NULL) {
        return;
    }
    for (size_t i = 0; i < N_BUCKETS; i++) {
        if (v <= BUCKETS[i]) {
            atomic_fetch_add_explicit(&m->buckets[i], 1, memory_order_relaxed);
            break;
        }
    }
    atomic_fetch_add_explicit(&m->count, 1, memory_order_relaxed);
    atomic_add_double(&m->value, v);
}

double
svc_metric_value(const svc_metric_t *m)
{
    if (m == NULL) {
        return 0;
    }
    if (atomic_load_explicit(&m->count, memory_order_relaxed) > 0) {
        return (double)atomic_load_explicit(&m->count, memory_order_relaxed);
    }
    return double_of(atomic_load_explicit(&m->value, memory_order_relaxed));
}

/* ---------- series ---------- */

static family_t *
family_find(const char *name)
{
    for (family_t *f = families; f != NULL; f = f->next) {
        if (strcmp(f->name, name) == 0) {
            return f;
        }
    }
    return NULL;
}

svc_metric_t *
svc_metric(svc_metric_kind_t kind, const char *name, const char *help, const char *labels)
{
    svc_metric_t *m = NULL;
    family_t *f;

    labels = labels != NULL ? labels : "";
    pthread_mutex_lock(&mu);
    if ((f = family_find(name)) == NULL) {
        if ((f = calloc(1, sizeof(*f))) == NULL || (f->name = strdup(name)) == NULL ||
            (f->help = strdup(help != NULL ? help : "")) == NULL) {
            if (f != NULL) {
                free(f->name);
            }
            free(f);
            pthread_mutex_unlock(&mu);
            return NULL;
        }
        f->kind = kind;
        f->tail = &f->series;
        *families_tail = f;
        families_tail = &f->next;
    }
    if (f->kind != kind) {
        pthread_mutex_unlock(&mu);
        svc_logf(SVC_LOG_ERROR, "metric %s asked for as another kind", name);
        return NULL;
    }
    for (m = f->series; m != NULL; m = m->next) {
        if (strcmp(m->labels, labels) == 0) {
            pthread_mutex_unlock(&mu);
            return m;
        }
    }
    if ((m = calloc(1, sizeof(*m))) != NULL && (m->labels = strdup(labels)) == NULL) {
        free(m);
        m = NULL;
    }
    if (m != NULL) {
        *f->tail = m;
        f->tail = &m->next;
    }
    pthread_mutex_unlock(&mu);
    return m;
}

char *
svc_metric_label(char *buf, size_t len, const char *key, const char *value)
{
    size_t n = strnlen(buf, len);
    int w;

    if (len == 0 || n >= len) {
        return buf;
    }
    w = snprintf(buf + n, len - n, "%s%s=\"", n > 0 ? "," : "", key);
    n = w > 0 && (size_t)w < len - n ? n + (size_t)w : len - 1;
    for (const char *p = value; *p != '\0' && n + 3 < len; p++) {
        if (*p == '\\' || *p == '"') {
            buf[n++] = '\\';
            buf[n++] = *p;
        } else if (*p == '\n') {
            buf[n++] = '\\';
            buf[n++] = 'n';
        } else {
            buf[n++] = *p;
        }
    }
    if (n + 1 < len) {
        buf[n++] = '"';
    }
    buf[n < len ? n : len - 1] = '\0';
    return buf;
}

/* ---------- rendering ---------- */

typedef struct {
    char *buf;
    size_t len, cap;
    bool failed;
} text_t;

static void __attribute__((format(printf, 2, 3))) text_add(text_t *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (t->failed) {
        return;
    }
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = true;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = (t->cap + (size_t)n + 1) * 2;
        char *b = realloc(t->buf, cap);
        if (b == NULL) {
            t->failed = true;
            return;
        }
        t->buf = b;
        t->cap = cap;
    }
}

/* name{labels[,extra]} */
static void
text_series(text_t *t, const char *name, const char *suffix, const char *labels, const char *extra)
{
    bool any = labels[0] != '\0' || extra != NULL;

    text_add(t, "%s%s%s%s%s%s%s", name, suffix, any ? "{" : "", labels,
             labels[0] != '\0' && extra != NULL ? "," : "", extra != NULL ? extra : "",
             any ? "}" : "");
}

static void
text_value(text_t *t, double v)
{
    text_add(t, " %.17g\n", v);
}

static void
render_family(text_t *t, const family_t *f)
{
    static const char *const kinds[] = {"counter", "gauge", "histogram"};

    if (f->series == NULL) {
        return;
    }
    text_add(t, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, kinds[f->kind]);
    for (const svc_metric_t *m = f->series; m != NULL; m = m->next) {
        if (f->kind != SVC_METRIC_HISTOGRAM) {
            text_series(t, f->name, "", m->labels, NULL);
            text_value(t, double_of(atomic_load_explicit(&m->value, memory_order_relaxed)));
            continue;
        }
        uint64_t count = atomic_load_explicit(&m->count, memory_order_relaxed), cum = 0;
        for (size_t i = 0; i < N_BUCKETS; i++) {
            char le[32];
            cum += atomic_load_explicit(&m->buckets[i], memory_order_relaxed);
            snprintf(le, sizeof(le), "le=\"%g\"", BUCKETS[i]);
            text_series(t, f->name, "_bucket", m->labels, le);
            text_value(t, (double)(cum < count ? cum : count));
        }
        text_series(t, f->name, "_bucket", m->labels, "le=\"+Inf\"");
        text_value(t, (double)count);
        text_series(t, f->name, "_sum", m->labels, NULL);
        text_value(t, double_of(atomic_load_explicit(&m->value, memory_order_relaxed)));
        text_series(t, f->name, "_count", m->labels, NULL);
        text_value(t, (double)count);
    }
}

/* The process's own series, read from /proc now. */
static void
render_process(text_t *t)
{
    long page = sysconf(_SC_PAGESIZE), tick = sysconf(_SC_CLK_TCK);
    unsigned long long utime = 0, stime = 0, start = 0, btime = 0;
    long rss_pages = 0;
    int fds = 0;
    FILE *f;

    if ((f = fopen("/proc/self/statm", "r")) != NULL) {
        long size;
        if (fscanf(f, "%ld %ld", &size, &rss_pages) != 2) {
            rss_pages = 0;
        }
        fclose(f);
    }
    if ((f = fopen("/proc/self/stat", "r")) != NULL) {
        char line[1024];
        if (fgets(line, sizeof(line), f) != NULL) {
            const char *p = strrchr(line, ')'); /* the command may hold spaces */
            /* after ")": state(3) ... utime(14) stime(15) ... starttime(22) */
            if (p == NULL || sscanf(p + 2,
                                    "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d "
                                    "%*d %*d %*d %*d %llu",
                                    &utime, &stime, &start) != 3) {
                utime = stime = start = 0;
            }
        }
        fclose(f);
    }
    if ((f = fopen("/proc/stat", "r")) != NULL) {
        char line[256];
        while (fgets(line, sizeof(line), f) != NULL) {
            if (sscanf(line, "btime %llu", &btime) == 1) {
                break;
            }
        }
        fclose(f);
    }
    DIR *d = opendir("/proc/self/fd");
    if (d != NULL) {
        for (struct dirent *e; (e = readdir(d)) != NULL;) {
            fds += e->d_name[0] != '.';
        }
        closedir(d);
        fds--; /* the one opendir holds */
    }
    text_add(t, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                "# TYPE process_resident_memory_bytes gauge\n");
    text_add(t, "process_resident_memory_bytes %.0f\n", (double)rss_pages * (double)page);
    text_add(t, "# HELP process_cpu_seconds_total Total user and system CPU time spent in "
                "seconds.\n# TYPE process_cpu_seconds_total counter\n");
    text_add(t, "process_cpu_seconds_total %.2f\n", (double)(utime + stime) / (double)tick);
    text_add(t, "# HELP process_open_fds Number of open file descriptors.\n"
                "# TYPE process_open_fds gauge\n");
    text_add(t, "process_open_fds %d\n", fds);
    text_add(t, "# HELP process_start_time_seconds Start time of the process since unix epoch "
                "in seconds.\n# TYPE process_start_time_seconds gauge\n");
    text_add(t, "process_start_time_seconds %.2f\n", (double)btime + (double)start / (double)tick);
}

char *
svc_metrics_render(void)
{
    text_t t = {0};

    pthread_mutex_lock(&mu);
    for (const family_t *f = families; f != NULL; f = f->next) {
        render_family(&t, f);
    }
    pthread_mutex_unlock(&mu);
    render_process(&t);
    if (t.failed) {
        free(t.buf);
        return NULL;
    }
    return t.buf;
}

/* ---------- HTTP ---------- */

static struct MHD_Daemon *daemon_;
static int daemon_port;

static enum MHD_Result
answer(struct MHD_Connection *c, unsigned status, const char *type, char *body, bool owned)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        strlen(body), body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    enum MHD_Result rc;

    if (r == NULL) {
        if (owned) {
            free(body);
        }
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
           const char *version, const char *upload_data, size_t *upload_size, void **state)
{
    static char not_found[] = "not found: metrics are at /metrics\n";
    static char not_allowed[] = "only GET\n";
    static char no_memory[] = "out of memory\n";
    char *body;

    (void)cls;
    (void)version;
    (void)upload_data;
    (void)upload_size;
    (void)state;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        return answer(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", not_allowed, false);
    }
    if (strcmp(url, "/metrics") != 0) {
        return answer(c, MHD_HTTP_NOT_FOUND, "text/plain", not_found, false);
    }
    if ((body = svc_metrics_render()) == NULL) {
        return answer(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain", no_memory, false);
    }
    return answer(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body, true);
}

int
svc_metrics_serve(const char *addr, svc_err_t *err)
{
    char host[256];
    const char *colon = strrchr(addr, ':');
    struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    size_t hl;
    int rc;

    if (colon == NULL || colon[1] == '\0' || (hl = (size_t)(colon - addr)) >= sizeof(host)) {
        svc_err_set(err, SVC_INVALID_ARGUMENT, "metrics address %s: want host:port", addr);
        return -1;
    }
    memcpy(host, addr, hl);
    host[hl] = '\0';
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') { /* [::1]:9090 */
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    if ((rc = getaddrinfo(host[0] != '\0' ? host : NULL, colon + 1, &hints, &ai)) != 0) {
        svc_err_set(err, SVC_INVALID_ARGUMENT, "metrics address %s: %s", addr, gai_strerror(rc));
        return -1;
    }
    if (ai->ai_family == AF_INET6) {
        flags |= MHD_USE_IPv6;
    }
    svc_metrics_stop();
    daemon_ = MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR,
                               ai->ai_addr, MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
                               MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (daemon_ == NULL) {
        svc_err_set(err, SVC_UNAVAILABLE, "cannot serve metrics on %s (address in use?)", addr);
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
    daemon_port = info != NULL ? info->port : 0;
    return 0;
}

int
svc_metrics_port(void)
{
    return daemon_ != NULL ? daemon_port : 0;
}

void
svc_metrics_stop(void)
{
    if (daemon_ != NULL) {
        MHD_stop_daemon(daemon_);
        daemon_ = NULL;
        daemon_port = 0;
    }
}

/* ---------- calls ---------- */

/* The interceptors write codes as Go's codes.Code.String() does. */
static const char *const CODE_NAMES[] = {
    "OK",       "Canceled",        "Unknown",          "InvalidArgument",   "DeadlineExceeded",
    "NotFound", "AlreadyExists",   "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
    "Aborted",  "OutOfRange",      "Unimplemented",    "Internal",          "Unavailable",
    "DataLoss", "Unauthenticated",
};
#define N_CODES (sizeof(CODE_NAMES) / sizeof(CODE_NAMES[0]))
#define RPC_BUCKETS 256

struct svc_rpc_metrics {
    struct svc_rpc_metrics *next; /* hash chain */
    bool server;
    char *path;
    char labels[512];
    svc_metric_t *started, *seconds;
    svc_metric_t *_Atomic handled[N_CODES];
    svc_metric_t *_Atomic shed[SVC_SHED_REASONS];
};

static pthread_mutex_t rpc_mu = PTHREAD_MUTEX_INITIALIZER;
static svc_rpc_metrics_t *rpc_table[RPC_BUCKETS];

static size_t
rpc_bucket(bool server, const char *path)
{
    size_t h = server ? 7 : 3;

    for (const unsigned char *p = (const unsigned char *)path; *p != '\0'; p++) {
        h = h * 31 + *p;
    }
    return h % RPC_BUCKETS;
}

svc_rpc_metrics_t *
svc_rpc_metrics(bool server, const char *path, const char *grpc_type)
{
    size_t b = rpc_bucket(server, path);
    const char *side = server ? "server" : "client";
    char name[64], service[256] = "", method[256] = "";
    svc_rpc_metrics_t *m;

    pthread_mutex_lock(&rpc_mu);
    for (m = rpc_table[b]; m != NULL; m = m->next) {
        if (m->server == server && strcmp(m->path, path) == 0) {
            pthread_mutex_unlock(&rpc_mu);
            return m;
        }
    }
    if ((m = calloc(1, sizeof(*m))) == NULL || (m->path = strdup(path)) == NULL) {
        free(m);
        pthread_mutex_unlock(&rpc_mu);
        return NULL;
    }
    m->server = server;
    /* "/pkg.Service/Method" */
    const char *p = path[0] == '/' ? path + 1 : path, *slash = strchr(p, '/');
    if (slash != NULL) {
        snprintf(service, sizeof(service), "%.*s", (int)(slash - p), p);
        snprintf(method, sizeof(method), "%s", slash + 1);
    } else {
        snprintf(method, sizeof(method), "%s", p);
    }
    svc_metric_label(m->labels, sizeof(m->labels), "grpc_type", grpc_type);
    svc_metric_label(m->labels, sizeof(m->labels), "grpc_service", service);
    svc_metric_label(m->labels, sizeof(m->labels), "grpc_method", method);
    snprintf(name, sizeof(name), "grpc_%s_started_total", side);
    m->started = svc_metric(SVC_METRIC_COUNTER, name,
                            server ? "Total number of RPCs started on the server."
                                   : "Total number of RPCs started on the client.",
                            m->labels);
    snprintf(name, sizeof(name), "grpc_%s_handling_seconds", side);
    m->seconds = svc_metric(SVC_METRIC_HISTOGRAM, name,
                            server ? "Histogram of response latency (seconds) of gRPC that had "
                                     "been application-level handled by the server."
                                   : "Histogram of response latency (seconds) of the gRPC until "
                                     "it is finished by the application.",
                            m->labels);
    m->next = rpc_table[b];
    rpc_table[b] = m;
    pthread_mutex_unlock(&rpc_mu);
    return m;
}

void
svc_rpc_metrics_started(svc_rpc_metrics_t *m)
{
    if (m != NULL) {
        svc_metric_add(m->started, 1);
    }
}

void
svc_rpc_metrics_handled(svc_rpc_metrics_t *m, svc_status_t code, double seconds)
{
    svc_metric_t *h;
    size_t c = (size_t)code < N_CODES ? (size_t)code : 2 /* Unknown */;

    if (m == NULL) {
        return;
    }
    if ((h = atomic_load_explicit(&m->handled[c], memory_order_acquire)) == NULL) {
        char labels[sizeof(m->labels) + 64], name[64];
        snprintf(labels, sizeof(labels), "%s", m->labels);
        svc_metric_label(labels, sizeof(labels), "grpc_code", CODE_NAMES[c]);
        snprintf(name, sizeof(name), "grpc_%s_handled_total", m->server ? "server" : "client");
        h = svc_metric(SVC_METRIC_COUNTER, name,
                       m->server ? "Total number of RPCs completed on the server, regardless of "
                                   "success or failure."
                                 : "Total number of RPCs completed by the client, regardless of "
                                   "success or failure.",
                       labels);
        atomic_store_explicit(&m->handled[c], h, memory_order_release);
    }
    svc_metric_add(h, 1);
    svc_metric_observe(m->seconds, seconds);
}

static const char *const SHED_NAMES[SVC_SHED_REASONS] = {"in_flight", "peer", "queue", "deadline",
                                                         "cancelled"};

const char *
svc_shed_reason_name(svc_shed_reason_t reason)
{
    return (unsigned)reason < SVC_SHED_REASONS ? SHED_NAMES[reason] : "unknown";
}

void
svc_rpc_metrics_shed(svc_rpc_metrics_t *m, svc_shed_reason_t reason)
{
    svc_metric_t *c;

    if (m == NULL || (unsigned)reason >= SVC_SHED_REASONS) {
        return;
    }
    if ((c = atomic_load_explicit(&m->shed[reason], memory_order_acquire)) == NULL) {
        char labels[sizeof(m->labels) + 64];
        snprintf(labels, sizeof(labels), "%s", m->labels);
        svc_metric_label(labels, sizeof(labels), "reason", SHED_NAMES[reason]);
        c = svc_metric(SVC_METRIC_COUNTER, "grpc_server_shed_total",
                       "Total number of RPCs the server answered without running their handler: "
                       "over a limit of calls in flight, a full queue, or already past their "
                       "deadline or cancelled.",
                       labels);
        atomic_store_explicit(&m->shed[reason], c, memory_order_release);
    }
    svc_metric_add(c, 1);
}
