/*
 * test_log.c: level names, the JSON formatter (escaping, truncation that stays
 * valid JSON), the lines the logging calls write to stderr, from many threads,
 * and the call context a thread stamps on its lines.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "svc/log.h"

/* A small strict JSON checker for what the logger writes: one flat object. */

static size_t
utf8_len(const unsigned char *s)
{
    unsigned char c = s[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4;
    else
        return 0;
    if (c == 0xE0)
        lo = 0xA0;
    if (c == 0xED)
        hi = 0x9F;
    if (c == 0xF0)
        lo = 0x90;
    if (c == 0xF4)
        hi = 0x8F;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return n;
}

static bool
is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static const unsigned char *
check_string(const unsigned char *p)
{
    if (*p++ != '"')
        return NULL;
    while (*p != '"') {
        if (*p < 0x20)
            return NULL;
        if (*p == '\\') {
            p++;
            if (*p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (!is_hex(p[i]))
                        return NULL;
                p += 5;
            } else if (*p != '\0' && strchr("\"\\/bfnrt", *p) != NULL) {
                p++;
            } else {
                return NULL;
            }
        } else {
            size_t n = utf8_len(p);
            if (n == 0)
                return NULL;
            p += n;
        }
    }
    return p + 1;
}

static const unsigned char *
digits(const unsigned char *p)
{
    if (*p < '0' || *p > '9')
        return NULL;
    while (*p >= '0' && *p <= '9')
        p++;
    return p;
}

/* A string, null, or a number per RFC 8259. */
static const unsigned char *
check_value(const unsigned char *p)
{
    if (*p == '"')
        return check_string(p);
    if (strncmp((const char *)p, "null", 4) == 0)
        return p + 4;
    if (*p == '-')
        p++;
    if (*p == '0')
        p++;
    else if ((p = digits(p)) == NULL)
        return NULL;
    if (*p == '.' && (p = digits(p + 1)) == NULL)
        return NULL;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        p = digits(p);
    }
    return p;
}

static bool
json_object_valid(const char *text)
{
    const unsigned char *p = (const unsigned char *)text;

    if (*p++ != '{')
        return false;
    if (*p == '}')
        return p[1] == '\0';
    for (;;) {
        p = check_string(p);
        if (p == NULL || *p++ != ':')
            return false;
        p = check_value(p);
        if (p == NULL)
            return false;
        if (*p == '}')
            return p[1] == '\0';
        if (*p++ != ',')
            return false;
    }
}

static void
assert_json(const char *text)
{
    if (!json_object_valid(text))
        fail_msg("not a valid JSON object: %s", text);
}

#define TIME "2026-11-21T20:39:16.123Z"

static size_t
fmt_msg(char *buf, size_t cap, const char *msg)
{
    return svc_log_format(buf, cap, TIME, "info", "svc", msg, NULL, 0, NULL, 0);
}

static void
test_level_parse(void **state)
{
    svc_log_level_t lv = SVC_LOG_ERROR;

    (void)state;
    assert_int_equal(svc_log_level_parse("debug", &lv), 0);
    assert_int_equal(lv, SVC_LOG_DEBUG);
    assert_int_equal(svc_log_level_parse("info", &lv), 0);
    assert_int_equal(lv, SVC_LOG_INFO);
    assert_int_equal(svc_log_level_parse("warn", &lv), 0);
    assert_int_equal(lv, SVC_LOG_WARN);
    lv = SVC_LOG_DEBUG;
    assert_int_equal(svc_log_level_parse("warning", &lv), 0);
    assert_int_equal(lv, SVC_LOG_WARN);
    assert_int_equal(svc_log_level_parse("error", &lv), 0);
    assert_int_equal(lv, SVC_LOG_ERROR);
    assert_int_equal(svc_log_level_parse("INFO", &lv), 0);
    assert_int_equal(lv, SVC_LOG_INFO);

    lv = SVC_LOG_WARN;
    assert_int_equal(svc_log_level_parse("verbose", &lv), -1);
    assert_int_equal(svc_log_level_parse("", &lv), -1);
    assert_int_equal(svc_log_level_parse("info ", &lv), -1);
    assert_int_equal(svc_log_level_parse("err", &lv), -1);
    assert_int_equal(svc_log_level_parse(NULL, &lv), -1);
    assert_int_equal(lv, SVC_LOG_WARN); /* untouched on failure */
}

static void
test_level_name(void **state)
{
    (void)state;
    assert_string_equal(svc_log_level_name(SVC_LOG_DEBUG), "debug");
    assert_string_equal(svc_log_level_name(SVC_LOG_INFO), "info");
    assert_string_equal(svc_log_level_name(SVC_LOG_WARN), "warn");
    assert_string_equal(svc_log_level_name(SVC_LOG_ERROR), "error");
}

static void
test_enabled(void **state)
{
    (void)state;
    svc_log_init("t", SVC_LOG_WARN);
    assert_false(svc_log_enabled(SVC_LOG_DEBUG));
    assert_false(svc_log_enabled(SVC_LOG_INFO));
    assert_true(svc_log_enabled(SVC_LOG_WARN));
    assert_true(svc_log_enabled(SVC_LOG_ERROR));
    svc_log_init("t", SVC_LOG_DEBUG);
    assert_true(svc_log_enabled(SVC_LOG_DEBUG));
    svc_log_init("svc", SVC_LOG_INFO);
}

static void
test_format_exact(void **state)
{
    char buf[512];
    const char *fields[] = {"method", "/lock.v1.Lock/Acquire", "request_id", NULL};
    const char *raw[] = {"duration_ms", "12.346", "attempt", "3"};
    size_t n;

    (void)state;
    n = svc_log_format(buf, sizeof(buf), TIME, "info", "lock-svc", "acquired", fields, 2, raw, 2);
    assert_string_equal(buf, "{\"time\":\"" TIME "\",\"level\":\"info\",\"service\":\"lock-svc\","
                             "\"msg\":\"acquired\",\"method\":\"/lock.v1.Lock/Acquire\","
                             "\"request_id\":null,\"duration_ms\":12.346,\"attempt\":3}");
    assert_int_equal(n, strlen(buf));

    svc_log_format(buf, sizeof(buf), TIME, "error", "svc", NULL, NULL, 0, NULL, 0);
    assert_string_equal(buf, "{\"time\":\"" TIME
                             "\",\"level\":\"error\",\"service\":\"svc\",\"msg\":null}");
}

static void
test_format_escaping(void **state)
{
    char buf[512];

    (void)state;
    fmt_msg(buf, sizeof(buf), "say \"hi\" C:\\dir\nnext\ttab\r\b\f\x01\x1f end");
    assert_json(buf);
    assert_non_null(strstr(buf, "\"msg\":\"say \\\"hi\\\" C:\\\\dir\\nnext\\ttab\\r\\b\\f"
                                "\\u0001\\u001f end\"}"));

    /* keys are escaped too */
    {
        const char *fields[] = {"we\"ird\n", "v"};
        svc_log_format(buf, sizeof(buf), TIME, "info", "svc", "m", fields, 1, NULL, 0);
        assert_json(buf);
        assert_non_null(strstr(buf, ",\"we\\\"ird\\n\":\"v\"}"));
    }
}

static void
test_format_unicode(void **state)
{
    char buf[512];

    (void)state;
    /* valid UTF-8 passes through unchanged */
    fmt_msg(buf, sizeof(buf), "h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80 \x7f/");
    assert_json(buf);
    assert_non_null(strstr(buf, "\"msg\":\"h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80 \x7f/\"}"));

    /* invalid bytes become U+FFFD so the line stays valid JSON text */
    fmt_msg(buf, sizeof(buf),
            "a\xff"
            "b\xc3(\xed\xa0\x80\xc0\xaf");
    assert_json(buf);
    assert_non_null(
        strstr(buf, "\"msg\":\"a\\ufffdb\\ufffd(\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\"}"));
}

static void
test_format_raw_must_be_number(void **state)
{
    char buf[512];
    const char *raw[] = {"a", "-0.5", "b", "1e+5", "c", "nan", "d", "01", "e", "1}", "f", "inf"};

    (void)state;
    svc_log_format(buf, sizeof(buf), TIME, "info", "svc", "m", NULL, 0, raw, 6);
    assert_json(buf);
    assert_non_null(strstr(buf, "\"a\":-0.5,\"b\":1e+5,\"c\":\"nan\",\"d\":\"01\",\"e\":\"1}\","
                                "\"f\":\"inf\"}"));
}

/* Formats into exactly cap heap bytes so ASan catches any write past the end. */
static void
check_all_caps(const char *msg, const char *const *fields, int n_fields, const char *const *raw,
               int n_raw)
{
    char full[8192];
    size_t full_len =
        svc_log_format(full, sizeof(full), TIME, "info", "svc", msg, fields, n_fields, raw, n_raw);

    assert_json(full);
    for (size_t cap = 0; cap <= full_len + 2; cap++) {
        char *buf = malloc(cap == 0 ? 1 : cap);
        size_t n;

        assert_non_null(buf);
        n = svc_log_format(buf, cap, TIME, "info", "svc", msg, fields, n_fields, raw, n_raw);
        if (cap == 0) {
            assert_int_equal(n, 0);
        } else if (cap < 3) {
            assert_int_equal(n, 0);
            assert_int_equal(buf[0], '\0');
        } else {
            assert_true(n < cap);
            assert_int_equal(strlen(buf), n);
            assert_int_equal(buf[0], '{');
            assert_int_equal(buf[n - 1], '}');
            assert_json(buf);
            if (cap > full_len)
                assert_string_equal(buf, full);
            else
                assert_true(n + 24 >= cap); /* a cut wastes little: at most one short member */
        }
        free(buf);
    }
}

static void
test_truncation_stays_valid(void **state)
{
    const char *fields[] = {"method", "/lock.v1.Lock/Acquire", "request_id", "r-\"1\"\n", "note",
                            NULL};
    const char *raw[] = {"duration_ms", "1.500"};

    (void)state;
    check_all_caps("plain message", NULL, 0, NULL, 0);
    check_all_caps("esc \"\\\n\x01\t and \xc3\xa9\xe2\x9c\x93\xf0\x9f\x98\x80 \xff mixed \"\"",
                   fields, 3, raw, 1);
    check_all_caps("\x01\x02\x03\x04\x05\x06\x07\x08", fields, 3, raw, 1);
    check_all_caps("\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80", NULL, 0, raw,
                   1);
}

static void
test_truncation_keeps_short_fields(void **state)
{
    char msg[10000], buf[512];
    const char *fields[] = {"method", "/lock.v1.Lock/Acquire", "status", "UNAVAILABLE"};
    const char *raw[] = {"duration_ms", "1.500"};
    size_t n;

    (void)state;
    memset(msg, 'x', sizeof(msg) - 1);
    msg[sizeof(msg) - 1] = '\0';
    n = svc_log_format(buf, sizeof(buf), TIME, "error", "lock-svc", msg, fields, 2, raw, 1);
    assert_json(buf);
    assert_true(n > sizeof(buf) - 16 && n < sizeof(buf));
    /* the long message is cut; the short fields after it survive */
    assert_non_null(strstr(buf, "\"msg\":\"xxxx"));
    assert_non_null(strstr(buf, "\"method\":\"/lock.v1.Lock/Acquire\""));
    assert_non_null(strstr(buf, "\"status\":\"UNAVAILABLE\""));
    assert_non_null(strstr(buf, "\"duration_ms\":1.500}"));
    assert_non_null(strstr(buf, "\"level\":\"error\""));
}

static void
test_truncation_huge_key(void **state)
{
    char key[1000], buf[256];
    const char *fields[] = {key, "v", "after", "w"};

    (void)state;
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    svc_log_format(buf, sizeof(buf), TIME, "info", "svc", "m", fields, 2, NULL, 0);
    assert_json(buf);
    /* the member that cannot fit is dropped, the ones around it stay */
    assert_non_null(strstr(buf, "\"msg\":\"m\",\"after\":\"w\"}"));
}

/* Captures what the logging calls write to stderr. */
typedef struct {
    int saved;
    FILE *file;
} capture_t;

static void
capture_begin(capture_t *c)
{
    c->file = tmpfile();
    assert_non_null(c->file);
    fflush(stderr);
    c->saved = dup(STDERR_FILENO);
    assert_true(c->saved >= 0);
    assert_int_equal(dup2(fileno(c->file), STDERR_FILENO), STDERR_FILENO);
}

/* Restores stderr; returns the captured text, which the caller frees. */
static char *
capture_end(capture_t *c)
{
    long size;
    char *text;

    dup2(c->saved, STDERR_FILENO);
    close(c->saved);
    size = ftell(c->file) >= 0 ? lseek(fileno(c->file), 0, SEEK_END) : -1;
    assert_true(size >= 0);
    text = malloc((size_t)size + 1);
    assert_non_null(text);
    assert_int_equal(pread(fileno(c->file), text, (size_t)size, 0), size);
    text[size] = '\0';
    fclose(c->file);
    return text;
}

/* Checks "YYYY-MM-DDTHH:MM:SS.mmmZ". */
static void
assert_rfc3339_ms(const char *t)
{
    const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ";

    for (size_t i = 0; shape[i] != '\0'; i++) {
        if (shape[i] == 'd')
            assert_true(t[i] >= '0' && t[i] <= '9');
        else
            assert_int_equal(t[i], shape[i]);
    }
}

static void
test_log_lines(void **state)
{
    capture_t c;
    char *text, *line, *save = NULL;
    const char *lines[8];
    int n = 0;

    (void)state;
    svc_log_init("test-svc", SVC_LOG_INFO);
    capture_begin(&c);
    svc_log_kv(SVC_LOG_INFO, "listening", "addr", "0.0.0.0:50051", "tls", NULL, NULL);
    svc_log_kv(SVC_LOG_DEBUG, "hidden", "k", "v", NULL);
    svc_logf(SVC_LOG_WARN, "retry %d of %d: %s", 2, 5, "conn \"refused\"");
    svc_logf(SVC_LOG_DEBUG, "hidden too");
    svc_log_call(SVC_LOG_INFO, "/lock.v1.Lock/Acquire", "req-1", "OK", NULL, 12.3456);
    svc_log_call(SVC_LOG_ERROR, "/lock.v1.Lock/Release", "req-2", "NOT_FOUND", "lock a not found",
                 0.5);
    text = capture_end(&c);
    svc_log_init("svc", SVC_LOG_INFO);

    for (line = strtok_r(text, "\n", &save); line != NULL && n < 8;
         line = strtok_r(NULL, "\n", &save))
        lines[n++] = line;
    assert_int_equal(n, 4);
    for (int i = 0; i < n; i++) {
        assert_json(lines[i]);
        assert_memory_equal(lines[i], "{\"time\":\"", 9);
        assert_rfc3339_ms(lines[i] + 9);
        assert_non_null(strstr(lines[i], "\"service\":\"test-svc\""));
    }
    assert_non_null(strstr(lines[0], "\"level\":\"info\",\"service\":\"test-svc\","
                                     "\"msg\":\"listening\",\"addr\":\"0.0.0.0:50051\","
                                     "\"tls\":null}"));
    assert_non_null(strstr(lines[1], "\"level\":\"warn\""));
    assert_non_null(strstr(lines[1], "\"msg\":\"retry 2 of 5: conn \\\"refused\\\"\"}"));
    assert_non_null(strstr(lines[2], "\"msg\":null,\"method\":\"/lock.v1.Lock/Acquire\","
                                     "\"request_id\":\"req-1\",\"status\":\"OK\","
                                     "\"duration_ms\":12.346}"));
    assert_non_null(strstr(lines[3], "\"level\":\"error\""));
    assert_non_null(strstr(lines[3], "\"msg\":\"lock a not found\""));
    assert_non_null(strstr(lines[3], "\"duration_ms\":0.500}"));
    free(text);
}

/* Occurrences of needle in haystack. */
static int
count_of(const char *haystack, const char *needle)
{
    int n = 0;

    for (const char *p = strstr(haystack, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

/*
 * A thread working for a call stamps its method and request id on every line
 * it writes, right after msg; an access line names its own call; contexts
 * nest, and leaving gives back the one before.
 */
static void
test_log_context(void **state)
{
    capture_t c;
    svc_log_ctx_t outer, inner, copy;
    char *text, *line, *save = NULL;
    const char *lines[8];
    int n = 0;

    (void)state;
    svc_log_init("test-svc", SVC_LOG_DEBUG);
    assert_null(svc_log_ctx_request_id());
    capture_begin(&c);
    svc_logf(SVC_LOG_INFO, "before");
    svc_log_ctx_enter(&outer, "/shop.v1.Shop/Buy", "rid-1");
    svc_logf(SVC_LOG_INFO, "in the call");
    svc_log_kv(SVC_LOG_WARN, "with fields", "seat", "7", NULL);
    svc_log_call(SVC_LOG_DEBUG, "/lock.v1.Lock/Acquire", "rid-2", "OK", NULL, 1.0);
    svc_log_ctx_enter(&inner, "/shop.v1.Shop/Other", "rid-3");
    svc_logf(SVC_LOG_INFO, "nested");
    svc_log_ctx_leave(&inner);
    svc_log_ctx_get(&copy);
    svc_logf(SVC_LOG_INFO, "back");
    svc_log_ctx_leave(&outer);
    svc_logf(SVC_LOG_INFO, "after");
    text = capture_end(&c);
    svc_log_init("svc", SVC_LOG_INFO);

    assert_null(svc_log_ctx_request_id());
    assert_true(copy.set);
    assert_string_equal(copy.request_id, "rid-1");
    for (line = strtok_r(text, "\n", &save); line != NULL && n < 8;
         line = strtok_r(NULL, "\n", &save))
        lines[n++] = line;
    assert_int_equal(n, 7);
    for (int i = 0; i < n; i++)
        assert_json(lines[i]);
    assert_null(strstr(lines[0], "request_id"));
    assert_non_null(strstr(lines[1], "\"msg\":\"in the call\",\"method\":\"/shop.v1.Shop/Buy\","
                                     "\"request_id\":\"rid-1\"}"));
    assert_non_null(strstr(lines[2], "\"msg\":\"with fields\",\"method\":\"/shop.v1.Shop/Buy\","
                                     "\"request_id\":\"rid-1\",\"seat\":\"7\"}"));
    assert_non_null(
        strstr(lines[3], "\"method\":\"/lock.v1.Lock/Acquire\",\"request_id\":\"rid-2\""));
    assert_int_equal(count_of(lines[3], "request_id"), 1);
    assert_non_null(strstr(lines[4], "\"request_id\":\"rid-3\""));
    assert_non_null(strstr(lines[5], "\"msg\":\"back\",\"method\":\"/shop.v1.Shop/Buy\","
                                     "\"request_id\":\"rid-1\"}"));
    assert_null(strstr(lines[6], "request_id"));
    assert_null(strstr(lines[6], "method"));
    free(text);
}

/* NULL request id: no call. Values too long are cut, not overflowed. */
static void
test_log_context_edges(void **state)
{
    svc_log_ctx_t saved, none;
    char long_id[300];

    (void)state;
    svc_log_ctx_enter(&saved, "/a.B/C", NULL);
    assert_null(svc_log_ctx_request_id());
    svc_log_ctx_leave(&saved);
    memset(long_id, 'x', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    svc_log_ctx_enter(&saved, long_id, long_id);
    assert_int_equal(strlen(svc_log_ctx_request_id()), SVC_LOG_REQUEST_ID_MAX);
    svc_log_ctx_enter(&none, NULL, "only-id");
    assert_string_equal(svc_log_ctx_request_id(), "only-id");
    svc_log_ctx_clear();
    assert_null(svc_log_ctx_request_id());
    svc_log_ctx_leave(&none);
    assert_int_equal(strlen(svc_log_ctx_request_id()), SVC_LOG_REQUEST_ID_MAX);
    svc_log_ctx_leave(&saved);
    assert_null(svc_log_ctx_request_id());
}

static void *
context_of_new_thread(void *arg)
{
    (void)arg;
    return (void *)svc_log_ctx_request_id();
}

/* Each thread has its own context: another thread's call is not on its lines. */
static void
test_log_context_per_thread(void **state)
{
    svc_log_ctx_t saved;
    pthread_t th;
    void *seen = (void *)1;

    (void)state;
    svc_log_ctx_enter(&saved, "/a.B/C", "main-thread-id");
    assert_int_equal(pthread_create(&th, NULL, context_of_new_thread, NULL), 0);
    pthread_join(th, &seen);
    assert_null(seen);
    assert_string_equal(svc_log_ctx_request_id(), "main-thread-id");
    svc_log_ctx_leave(&saved);
}

static void
test_log_keeps_errno(void **state)
{
    capture_t c;

    (void)state;
    capture_begin(&c);
    errno = ENOENT;
    svc_logf(SVC_LOG_ERROR, "open failed");
    assert_int_equal(errno, ENOENT);
    free(capture_end(&c));
}

static void
test_log_long_line(void **state)
{
    capture_t c;
    char *msg = malloc(100000), *text;

    (void)state;
    assert_non_null(msg);
    memset(msg, 'y', 99999);
    msg[99999] = '\0';
    capture_begin(&c);
    svc_log_kv(SVC_LOG_ERROR, msg, "after", "kept", NULL);
    text = capture_end(&c);
    assert_true(strlen(text) <= 4096);
    assert_int_equal(text[strlen(text) - 1], '\n');
    text[strlen(text) - 1] = '\0';
    assert_json(text);
    assert_non_null(strstr(text, "\"after\":\"kept\"}"));
    free(text);
    free(msg);
}

#define N_THREADS 8
#define N_LINES 400

static void *
log_thread(void *arg)
{
    char id[16], pad[300];

    snprintf(id, sizeof(id), "%d", (int)(intptr_t)arg);
    memset(pad, 'a' + (int)(intptr_t)arg, sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    for (int i = 0; i < N_LINES; i++)
        svc_log_kv(SVC_LOG_INFO, "tick", "thread", id, "pad", pad, NULL);
    return NULL;
}

static void
test_log_threads(void **state)
{
    pthread_t th[N_THREADS];
    capture_t c;
    char *text, *line, *save = NULL;
    int n = 0;

    (void)state;
    capture_begin(&c);
    for (int i = 0; i < N_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, log_thread, (void *)(intptr_t)i), 0);
    for (int i = 0; i < N_THREADS; i++)
        pthread_join(th[i], NULL);
    text = capture_end(&c);
    for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        assert_json(line);
        n++;
    }
    assert_int_equal(n, N_THREADS * N_LINES);
    free(text);
}

/* A noisy place writes `burst` lines a second, then says how many it dropped. */
static void
test_log_limit(void **state)
{
    svc_log_limit_t lim = SVC_LOG_LIMIT_INIT(3);
    long dropped = -1;
    int passed = 0;

    (void)state;
    for (int i = 0; i < 10; i++) {
        passed += svc_log_limit_take(&lim, 5000 + i, &dropped);
    }
    assert_int_equal(passed, 3);
    assert_int_equal(dropped, 0); /* the third line had dropped nothing before it */
    assert_false(svc_log_limit_take(&lim, 5999, &dropped));
    assert_true(svc_log_limit_take(&lim, 6000, &dropped)); /* a new second */
    assert_int_equal(dropped, 8);
    assert_true(svc_log_limit_take(&lim, 6001, &dropped));
    assert_int_equal(dropped, 0);
    pthread_mutex_destroy(&lim.mu);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_level_parse),
        cmocka_unit_test(test_level_name),
        cmocka_unit_test(test_enabled),
        cmocka_unit_test(test_format_exact),
        cmocka_unit_test(test_format_escaping),
        cmocka_unit_test(test_format_unicode),
        cmocka_unit_test(test_format_raw_must_be_number),
        cmocka_unit_test(test_truncation_stays_valid),
        cmocka_unit_test(test_truncation_keeps_short_fields),
        cmocka_unit_test(test_truncation_huge_key),
        cmocka_unit_test(test_log_lines),
        cmocka_unit_test(test_log_context),
        cmocka_unit_test(test_log_context_edges),
        cmocka_unit_test(test_log_context_per_thread),
        cmocka_unit_test(test_log_keeps_errno),
        cmocka_unit_test(test_log_long_line),
        cmocka_unit_test(test_log_threads),
        cmocka_unit_test(test_log_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
