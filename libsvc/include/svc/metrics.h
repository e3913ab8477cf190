/*
 * metrics.h: Prometheus metrics of one process, served over HTTP.
 *
 * A metric is one series: a name and a fixed set of labels. Series of the
 * same name form a family (its HELP and TYPE come from the first one made).
 * They live as long as the process: a service makes them once (or on first
 * use) and keeps the pointer; updating one is a few atomic operations, so
 * code on hot paths updates them whether or not anyone scrapes.
 *
 * svc_metrics_serve starts an HTTP server (libmicrohttpd, its own thread)
 * that answers GET /metrics with every series in the text format, plus the
 * process's own: process_resident_memory_bytes, process_cpu_seconds_total,
 * process_open_fds, process_start_time_seconds.
 *
 * The gRPC side follows the names of the gRPC ecosystem's Prometheus
 * interceptors (go-grpc-prometheus), so existing dashboards work:
 * grpc_{server,client}_started_total, grpc_{server,client}_handled_total
 * and grpc_{server,client}_handling_seconds, labelled grpc_type,
 * grpc_service, grpc_method (and grpc_code on the handled ones); libsvc's
 * server and client record them for every call (svc_rpc_metrics_*).
 * The server also counts the calls it refused or dropped before their
 * handler ran: grpc_server_shed_total{grpc_type,grpc_service,grpc_method,
 * reason} (svc_rpc_metrics_shed); they count in started and handled too.
 */
#ifndef SVC_METRICS_H
#define SVC_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "svc/err.h"

typedef enum { SVC_METRIC_COUNTER, SVC_METRIC_GAUGE, SVC_METRIC_HISTOGRAM } svc_metric_kind_t;

typedef struct svc_metric svc_metric_t;

/*
 * The series name{labels}, made on first use. labels is NULL or the inside
 * of the braces, already escaped: `schedule="7"` (svc_metric_label builds
 * one value safely). A histogram gets the buckets of the gRPC interceptors
 * (5 ms to 10 s). Asking again for the same name and labels gives the same
 * series. NULL when out of memory, or when the name is taken by another
 * kind (a programming error, logged once).
 */
svc_metric_t *svc_metric(svc_metric_kind_t kind, const char *name, const char *help,
                         const char *labels);

/* Counter or gauge: adds v (a counter only grows: v >= 0). NULL m is a no-op. */
void svc_metric_add(svc_metric_t *m, double v);

/* Gauge: sets v. NULL m is a no-op. */
void svc_metric_set(svc_metric_t *m, double v);

/* Histogram: one observation of v (seconds, for the *_seconds ones). NULL m is a no-op. */
void svc_metric_observe(svc_metric_t *m, double v);

/* The value of a counter or gauge, or a histogram's count (tests). 0 for NULL. */
double svc_metric_value(const svc_metric_t *m);

/*
 * Writes key="value" into buf (len bytes) with value escaped as the text
 * format wants (backslash, double quote, newline); appends with a comma when
 * buf already holds a label. Returns buf.
 */
char *svc_metric_label(char *buf, size_t len, const char *key, const char *value);

/* Every series in the text format (exposition 0.0.4); malloc'd, NULL when out of memory. */
char *svc_metrics_render(void);

/*
 * Serves GET /metrics on addr ("host:port"; port 0 picks one, see
 * svc_metrics_port) from a thread of its own. 0, or -1 with err
 * (INVALID_ARGUMENT: a bad address; UNAVAILABLE: cannot listen).
 */
int svc_metrics_serve(const char *addr, svc_err_t *err);

/* The port svc_metrics_serve listens on; 0 when not serving. */
int svc_metrics_port(void);

/* Stops serving (a no-op when not serving). */
void svc_metrics_stop(void);

/* ---------- calls: the gRPC interceptors' names ---------- */

/* The series of one method on one side; made once per method and kept. */
typedef struct svc_rpc_metrics svc_rpc_metrics_t;

/*
 * The series of path ("/pkg.Service/Method") as a server (server true) or a
 * client; grpc_type is "unary", "server_stream", "client_stream" or
 * "bidi_stream". Cached: later calls with the same side and path are a hash
 * lookup. NULL when out of memory.
 */
svc_rpc_metrics_t *svc_rpc_metrics(bool server, const char *path, const char *grpc_type);

/* A call started. NULL is a no-op. */
void svc_rpc_metrics_started(svc_rpc_metrics_t *m);

/* A call ended with code after seconds. NULL is a no-op. */
void svc_rpc_metrics_handled(svc_rpc_metrics_t *m, svc_status_t code, double seconds);

/* Why the server answered a call without running its handler (the reason label). */
typedef enum {
    SVC_SHED_IN_FLIGHT = 0, /* "in_flight": the server's MAX_IN_FLIGHT calls were in flight */
    SVC_SHED_PEER,          /* "peer": the caller's MAX_IN_FLIGHT_PER_PEER were */
    SVC_SHED_QUEUE,         /* "queue": the worker pool's queue was full */
    SVC_SHED_DEADLINE,      /* "deadline": its deadline passed before a worker took it */
    SVC_SHED_CANCELLED,     /* "cancelled": its caller cancelled it before a worker took it */
    SVC_SHED_REASONS
} svc_shed_reason_t;

/* The reason label's value. */
const char *svc_shed_reason_name(svc_shed_reason_t reason);

/* A server call refused or dropped for reason (grpc_server_shed_total). NULL is a no-op. */
void svc_rpc_metrics_shed(svc_rpc_metrics_t *m, svc_shed_reason_t reason);

#endif
