/*
 * test_metrics.c: the Prometheus series and their HTTP endpoint. Counters,
 * gauges and histograms render in the text format with their labels
 * escaped; updates from several threads at once are all counted; the gRPC
 * series carry the interceptors' names and Go's code names; /metrics is
 * served over real HTTP on a free port, anything else is 404.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "svc/metrics.h"

/* Whether the rendered text has line (a whole line). */
static bool
has_line(const char *text, const char *line)
{
    size_t n = strlen(line);

    for (const char *p = text; (p = strstr(p, line)) != NULL; p += n) {
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0')) {
            return true;
        }
    }
    return false;
}

static void
expect_line(const char *line)
{
    char *text = svc_metrics_render();

    assert_non_null(text);
    if (!has_line(text, line)) {
        fail_msg("no line \"%s\" in:\n%s", line, text);
    }
    free(text);
}

static void
test_counter_and_gauge(void **state)
{
    svc_metric_t *c = svc_metric(SVC_METRIC_COUNTER, "t_things_total", "Things.", NULL);
    svc_metric_t *g = svc_metric(SVC_METRIC_GAUGE, "t_level", "A level.", "zone=\"a\"");

    (void)state;
    svc_metric_add(c, 1);
    svc_metric_add(c, 2);
    svc_metric_set(g, 7);
    svc_metric_add(g, -2);
    expect_line("# HELP t_things_total Things.");
    expect_line("# TYPE t_things_total counter");
    expect_line("t_things_total 3");
    expect_line("# TYPE t_level gauge");
    expect_line("t_level{zone=\"a\"} 5");
    /* The same name and labels: the same series. */
    assert_ptr_equal(svc_metric(SVC_METRIC_COUNTER, "t_things_total", "", NULL), c);
    /* The same name as another kind: refused. */
    assert_null(svc_metric(SVC_METRIC_GAUGE, "t_things_total", "", NULL));
    svc_metric_add(NULL, 1); /* no-ops */
    svc_metric_observe(NULL, 1);
}

static void
test_histogram(void **state)
{
    svc_metric_t *h = svc_metric(SVC_METRIC_HISTOGRAM, "t_wait_seconds", "Waits.", NULL);

    (void)state;
    svc_metric_observe(h, 0.001);
    svc_metric_observe(h, 0.02);
    svc_metric_observe(h, 0.02);
    svc_metric_observe(h, 30);
    expect_line("# TYPE t_wait_seconds histogram");
    expect_line("t_wait_seconds_bucket{le=\"0.005\"} 1");
    expect_line("t_wait_seconds_bucket{le=\"0.01\"} 1");
    expect_line("t_wait_seconds_bucket{le=\"0.025\"} 3");
    expect_line("t_wait_seconds_bucket{le=\"10\"} 3");
    expect_line("t_wait_seconds_bucket{le=\"+Inf\"} 4");
    expect_line("t_wait_seconds_count 4");
    expect_line("t_wait_seconds_sum 30.041");
    assert_true(svc_metric_value(h) == 4);
}

static void
test_labels_escaped(void **state)
{
    char labels[128] = "";

    (void)state;
    svc_metric_label(labels, sizeof(labels), "a", "x\"y");
    svc_metric_label(labels, sizeof(labels), "b", "back\\slash\nnew");
    assert_string_equal(labels, "a=\"x\\\"y\",b=\"back\\\\slash\\nnew\"");
    svc_metric_add(svc_metric(SVC_METRIC_COUNTER, "t_escaped_total", "E.", labels), 1);
    expect_line("t_escaped_total{a=\"x\\\"y\",b=\"back\\\\slash\\nnew\"} 1");
    /* Too small a buffer is cut, never overrun, and stays a string. */
    char small[8] = "";
    svc_metric_label(small, sizeof(small), "key", "a long value");
    assert_true(strlen(small) < sizeof(small));
}

static void *
bump(void *arg)
{
    svc_metric_t **m = arg;

    for (int i = 0; i < 10000; i++) {
        svc_metric_add(m[0], 1);
        svc_metric_observe(m[1], 0.002);
    }
    return NULL;
}

static void
test_threads(void **state)
{
    svc_metric_t *m[2] = {svc_metric(SVC_METRIC_COUNTER, "t_raced_total", "R.", NULL),
                          svc_metric(SVC_METRIC_HISTOGRAM, "t_raced_seconds", "R.", NULL)};
    pthread_t th[4];

    (void)state;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, bump, m), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
    }
    expect_line("t_raced_total 40000");
    expect_line("t_raced_seconds_count 40000");
    expect_line("t_raced_seconds_bucket{le=\"0.005\"} 40000");
}

static void
test_rpc_series(void **state)
{
    svc_rpc_metrics_t *s = svc_rpc_metrics(true, "/pkg.v1.Thing/Get", "unary");
    svc_rpc_metrics_t *c = svc_rpc_metrics(false, "/pkg.v1.Thing/Get", "unary");

    (void)state;
    assert_ptr_equal(svc_rpc_metrics(true, "/pkg.v1.Thing/Get", "unary"), s);
    assert_ptr_not_equal(s, c);
    svc_rpc_metrics_started(s);
    svc_rpc_metrics_started(s);
    svc_rpc_metrics_handled(s, SVC_OK, 0.003);
    svc_rpc_metrics_handled(s, SVC_FAILED_PRECONDITION, 0.2);
    svc_rpc_metrics_started(c);
    svc_rpc_metrics_handled(c, SVC_CANCELLED, 1);
    expect_line("grpc_server_started_total{grpc_type=\"unary\",grpc_service=\"pkg.v1.Thing\","
                "grpc_method=\"Get\"} 2");
    expect_line("grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"pkg.v1.Thing\","
                "grpc_method=\"Get\",grpc_code=\"OK\"} 1");
    expect_line("grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"pkg.v1.Thing\","
                "grpc_method=\"Get\",grpc_code=\"FailedPrecondition\"} 1");
    expect_line("grpc_server_handling_seconds_count{grpc_type=\"unary\",grpc_service=\"pkg.v1."
                "Thing\",grpc_method=\"Get\"} 2");
    expect_line("grpc_client_handled_total{grpc_type=\"unary\",grpc_service=\"pkg.v1.Thing\","
                "grpc_method=\"Get\",grpc_code=\"Canceled\"} 1");

    /* Calls the server answered without their handler, by reason. */
    svc_rpc_metrics_shed(s, SVC_SHED_IN_FLIGHT);
    svc_rpc_metrics_shed(s, SVC_SHED_IN_FLIGHT);
    svc_rpc_metrics_shed(s, SVC_SHED_DEADLINE);
    svc_rpc_metrics_shed(NULL, SVC_SHED_PEER);
    expect_line("grpc_server_shed_total{grpc_type=\"unary\",grpc_service=\"pkg.v1.Thing\","
                "grpc_method=\"Get\",reason=\"in_flight\"} 2");
    expect_line("grpc_server_shed_total{grpc_type=\"unary\",grpc_service=\"pkg.v1.Thing\","
                "grpc_method=\"Get\",reason=\"deadline\"} 1");
    assert_string_equal(svc_shed_reason_name(SVC_SHED_PEER), "peer");
    assert_string_equal(svc_shed_reason_name(SVC_SHED_QUEUE), "queue");
    assert_string_equal(svc_shed_reason_name(SVC_SHED_CANCELLED), "cancelled");
}

/* GET path over HTTP/1.0 from 127.0.0.1:port; the whole answer (malloc'd). */
static char *
http_get(int port, const char *method, const char *path)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap), req[256];
    ssize_t n;

    assert_true(fd >= 0 && buf != NULL);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    snprintf(req, sizeof(req), "%s %s HTTP/1.0\r\nHost: localhost\r\n\r\n", method, path);
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

static void
test_served_over_http(void **state)
{
    svc_err_t err;
    char *got;

    (void)state;
    svc_metric_add(svc_metric(SVC_METRIC_COUNTER, "t_served_total", "S.", NULL), 41);
    assert_int_equal(svc_metrics_port(), 0);
    assert_int_equal(svc_metrics_serve("127.0.0.1:0", &err), 0);
    assert_true(svc_metrics_port() > 0);
    got = http_get(svc_metrics_port(), "GET", "/metrics");
    assert_non_null(strstr(got, "HTTP/1.0 200") != NULL ? got : strstr(got, "HTTP/1.1 200"));
    assert_non_null(strstr(got, "text/plain; version=0.0.4"));
    assert_true(has_line(strstr(got, "\r\n\r\n") + 4, "t_served_total 41"));
    assert_non_null(strstr(got, "process_resident_memory_bytes "));
    assert_non_null(strstr(got, "process_cpu_seconds_total "));
    free(got);
    got = http_get(svc_metrics_port(), "GET", "/");
    assert_non_null(strstr(got, " 404 "));
    free(got);
    got = http_get(svc_metrics_port(), "POST", "/metrics");
    assert_non_null(strstr(got, " 405 "));
    free(got);
    svc_metrics_stop();
    assert_int_equal(svc_metrics_port(), 0);
    /* Bad addresses: one clear error each. */
    assert_int_equal(svc_metrics_serve("no-port", &err), -1);
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    assert_int_equal(svc_metrics_serve("256.1.1.1:80", &err), -1);
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_and_gauge), cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_labels_escaped),    cmocka_unit_test(test_threads),
        cmocka_unit_test(test_rpc_series),        cmocka_unit_test(test_served_over_http),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
