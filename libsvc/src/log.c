/*
 * log.c: JSON-lines logging to stderr. Each call formats one whole line and
 * writes it with one write(2) under a mutex, so lines from threads never mix.
 * A thread-local context names the call the thread works for on its lines.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "svc/log.h"
#include "svc/timer.h"

/* One line, newline included; up to PIPE_BUF it reaches a pipe in one piece. */
#define LOG_LINE_MAX 4096
#define LOG_MSG_MAX 2048
#define LOG_KV_MAX 32 /* extra fields of one svc_log_kv line; more are dropped */
#define LOG_SERVICE_MAX 64

/* The call this thread works for (see svc_log_ctx_enter). */
static _Thread_local svc_log_ctx_t log_ctx;

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_service[LOG_SERVICE_MAX] = "svc"; /* guarded by log_mu */
static atomic_int log_min_level = SVC_LOG_INFO;

static const char *const level_names[] = {
    [SVC_LOG_DEBUG] = "debug",
    [SVC_LOG_INFO] = "info",
    [SVC_LOG_WARN] = "warn",
    [SVC_LOG_ERROR] = "error",
};

void
svc_log_init(const char *service, svc_log_level_t min_level)
{
    pthread_mutex_lock(&log_mu);
    snprintf(log_service, sizeof(log_service), "%s", service != NULL ? service : "svc");
    pthread_mutex_unlock(&log_mu);
    atomic_store(&log_min_level, (int)min_level);
}

int
svc_log_enabled(svc_log_level_t level)
{
    return (int)level >= atomic_load(&log_min_level);
}

int
svc_log_level_parse(const char *text, svc_log_level_t *out)
{
    if (text == NULL)
        return -1;
    for (int i = SVC_LOG_DEBUG; i <= SVC_LOG_ERROR; i++) {
        if (strcasecmp(text, level_names[i]) == 0) {
            *out = (svc_log_level_t)i;
            return 0;
        }
    }
    if (strcasecmp(text, "warning") == 0) {
        *out = SVC_LOG_WARN;
        return 0;
    }
    return -1;
}

const char *
svc_log_level_name(svc_log_level_t level)
{
    if ((int)level < SVC_LOG_DEBUG || (int)level > SVC_LOG_ERROR)
        return "unknown";
    return level_names[level];
}

/* JSON writing */

/*
 * Length of the well-formed UTF-8 sequence at the start of the NUL-terminated
 * s, or 0 for a stray, truncated, overlong, surrogate or out-of-range sequence.
 * Stops at the first bad byte, so it never reads past the terminating NUL.
 */
static size_t
utf8_seq_len(const unsigned char *s)
{
    unsigned char c = s[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 0;
    }
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return n;
}

/*
 * Writes the JSON string form of the character at s into out (at most 6 bytes)
 * and returns its length; *used gets the input bytes consumed. Invalid UTF-8
 * becomes U+FFFD so the line stays valid JSON text.
 */
static size_t
json_unit(const unsigned char *s, char out[6], size_t *used)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char c = s[0];
    char short_form = 0;
    size_t n;

    *used = 1;
    switch (c) {
    case '"':
    case '\\':
        short_form = (char)c;
        break;
    case '\b':
        short_form = 'b';
        break;
    case '\f':
        short_form = 'f';
        break;
    case '\n':
        short_form = 'n';
        break;
    case '\r':
        short_form = 'r';
        break;
    case '\t':
        short_form = 't';
        break;
    default:
        break;
    }
    if (short_form != 0) {
        out[0] = '\\';
        out[1] = short_form;
        return 2;
    }
    if (c < 0x20) {
        static const char u00[4] = {'\\', 'u', '0', '0'};
        memcpy(out, u00, 4);
        out[4] = hex[c >> 4];
        out[5] = hex[c & 0xF];
        return 6;
    }
    n = utf8_seq_len(s);
    if (n == 0) {
        static const char replacement[6] = {'\\', 'u', 'f', 'f', 'f', 'd'}; /* U+FFFD */
        memcpy(out, replacement, 6);
        return 6;
    }
    memcpy(out, s, n);
    *used = n;
    return n;
}

/* Escaped length of s, counted no further than limit (enough to compare with a buffer). */
static size_t
json_escaped_len(const char *s, size_t limit)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t len = 0, used;
    char tmp[6];

    while (*p != '\0' && len <= limit) {
        len += json_unit(p, tmp, &used);
        p += used;
    }
    return len;
}

/* RFC 8259 number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool
json_is_number(const char *s)
{
    const char *p = s;

#define DIGIT(c) ((c) >= '0' && (c) <= '9')
    if (*p == '-')
        p++;
    if (*p == '0')
        p++;
    else if (DIGIT(*p))
        while (DIGIT(*p))
            p++;
    else
        return false;
    if (*p == '.') {
        p++;
        if (!DIGIT(*p))
            return false;
        while (DIGIT(*p))
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!DIGIT(*p))
            return false;
        while (DIGIT(*p))
            p++;
    }
#undef DIGIT
    return *p == '\0';
}

typedef enum { VAL_NULL, VAL_STRING, VAL_RAW } val_kind_t;

typedef struct {
    const char *key;
    const char *value;
    val_kind_t kind;
} member_t;

/* The members of one line in order: time, level, service, msg, fields, raw fields. */
typedef struct {
    const char *head[8];
    const char *const *fields;
    int n_fields;
    const char *const *raw;
    int n_raw;
} line_t;

static int
line_count(const line_t *l)
{
    return 4 + l->n_fields + l->n_raw;
}

/* Member i of the line; a raw value that is not a JSON number is written as a string. */
static member_t
line_member(const line_t *l, int i)
{
    const char *const *pair;
    member_t m;

    if (i < 4)
        pair = l->head + (size_t)i * 2;
    else if (i < 4 + l->n_fields)
        pair = l->fields + (size_t)(i - 4) * 2;
    else
        pair = l->raw + (size_t)(i - 4 - l->n_fields) * 2;
    m.key = pair[0];
    m.value = pair[1];
    if (m.value == NULL)
        m.kind = VAL_NULL;
    else if (i >= 4 + l->n_fields && json_is_number(m.value))
        m.kind = VAL_RAW;
    else
        m.kind = VAL_STRING;
    return m;
}

/* Bytes of a member other than its string value's content: `,"key":` plus `""`, null or raw. */
static size_t
member_overhead(const member_t *m, size_t limit)
{
    size_t n = 1 + 2 + json_escaped_len(m->key, limit) + 1;

    if (m->kind == VAL_NULL)
        return n + 4;
    if (m->kind == VAL_RAW)
        return n + strlen(m->value);
    return n + 2;
}

/*
 * Decides whether member m is written: it is when its overhead still fits in
 * room after the members kept before it (*fixed is their running total,
 * starting at 2 for the braces). A member too big even with an empty value is
 * dropped, and later ones are still tried.
 */
static bool
member_kept(size_t *fixed, const member_t *m, size_t room)
{
    size_t o;

    if (m->key == NULL)
        return false;
    o = member_overhead(m, room) - (*fixed == 2 ? 1 : 0); /* the first has no comma */
    if (o > room - *fixed)
        return false;
    *fixed += o;
    return true;
}

/*
 * Picks the most escaped bytes any one string value may take so the whole
 * object fits in room: short values stay whole, the longest ones are cut to a
 * common length. Returns SIZE_MAX when nothing needs cutting.
 */
static size_t
value_limit(const line_t *l, size_t room)
{
    size_t fixed = 2, total = 0, longest = 0, lo, hi;
    int n = line_count(l);

    for (int i = 0; i < n; i++) {
        member_t m = line_member(l, i);
        if (member_kept(&fixed, &m, room) && m.kind == VAL_STRING) {
            size_t v = json_escaped_len(m.value, room);
            total += v;
            longest = v > longest ? v : longest;
        }
    }
    if (total <= room - fixed)
        return SIZE_MAX;
    /* Largest L with sum(min(len, L)) <= room - fixed; the sum grows with L. */
    lo = 0;
    hi = longest;
    while (lo < hi) {
        size_t mid = lo + (hi - lo + 1) / 2, sum = 0, fixed2 = 2;
        for (int i = 0; i < n; i++) {
            member_t m = line_member(l, i);
            if (member_kept(&fixed2, &m, room) && m.kind == VAL_STRING) {
                size_t v = json_escaped_len(m.value, room);
                sum += v < mid ? v : mid;
            }
        }
        if (sum <= room - fixed)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* Output buffer; len + 2 <= cap always holds, keeping room for '}' and NUL. */
typedef struct {
    char *buf;
    size_t cap;
    size_t len;
    int n_members;
} json_buf_t;

static void
jb_put(json_buf_t *jb, const char *s, size_t n)
{
    memcpy(jb->buf + jb->len, s, n);
    jb->len += n;
}

/* Writes s escaped and quoted, cut at a character boundary after at most limit bytes. */
static void
jb_string(json_buf_t *jb, const char *s, size_t limit)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t written = 0, used, n;
    char unit[6];

    jb_put(jb, "\"", 1);
    while (*p != '\0') {
        n = json_unit(p, unit, &used);
        /* leave room for the closing quote, '}' and NUL */
        if (written + n > limit || jb->len + n + 3 > jb->cap)
            break;
        jb_put(jb, unit, n);
        written += n;
        p += used;
    }
    jb_put(jb, "\"", 1);
}

/* Adds one member; the size check only guards the buffer, value_limit did the planning. */
static void
jb_member(json_buf_t *jb, const member_t *m, size_t limit)
{
    size_t need = member_overhead(m, jb->cap) - (jb->n_members == 0 ? 1 : 0);

    if (jb->len + need + 2 > jb->cap)
        return;
    if (jb->n_members++ > 0)
        jb_put(jb, ",", 1);
    jb_string(jb, m->key, SIZE_MAX);
    jb_put(jb, ":", 1);
    if (m->kind == VAL_NULL)
        jb_put(jb, "null", 4);
    else if (m->kind == VAL_RAW)
        jb_put(jb, m->value, strlen(m->value));
    else
        jb_string(jb, m->value, limit);
}

size_t
svc_log_format(char *buf, size_t cap, const char *time_text, const char *level, const char *service,
               const char *msg, const char *const *fields, int n_fields,
               const char *const *raw_fields, int n_raw)
{
    line_t l = {
        .head = {"time", time_text, "level", level, "service", service, "msg", msg},
        .fields = fields,
        .n_fields = fields != NULL && n_fields > 0 ? n_fields : 0,
        .raw = raw_fields,
        .n_raw = raw_fields != NULL && n_raw > 0 ? n_raw : 0,
    };
    json_buf_t jb = {.buf = buf, .cap = cap};
    size_t limit, fixed = 2;
    int n = line_count(&l);

    if (cap < 3) { /* not even "{}" fits */
        if (cap > 0)
            buf[0] = '\0';
        return 0;
    }
    limit = value_limit(&l, cap - 1);
    jb_put(&jb, "{", 1);
    for (int i = 0; i < n; i++) {
        member_t m = line_member(&l, i);
        if (member_kept(&fixed, &m, cap - 1))
            jb_member(&jb, &m, limit);
    }
    jb_put(&jb, "}", 1);
    buf[jb.len] = '\0';
    return jb.len;
}

/* Output */

static void
format_time(char *out, size_t cap)
{
    struct timespec ts;
    struct tm tm;
    size_t n;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, cap - n, ".%03dZ", (int)(ts.tv_nsec / 1000000));
}

static void
write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* nowhere left to report a logging failure */
        p += w;
        n -= (size_t)w;
    }
}

/* The thread's call context */

/* Copies src into dst of cap bytes, cut to fit; cheaper than snprintf on a path taken per call. */
static void
copy_cut(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);

    memcpy(dst, src, n);
    dst[n] = '\0';
}

void
svc_log_ctx_enter(svc_log_ctx_t *saved, const char *method, const char *request_id)
{
    *saved = log_ctx;
    log_ctx.set = request_id != NULL;
    if (log_ctx.set) {
        copy_cut(log_ctx.method, sizeof(log_ctx.method), method != NULL ? method : "");
        copy_cut(log_ctx.request_id, sizeof(log_ctx.request_id), request_id);
    }
}

void
svc_log_ctx_leave(const svc_log_ctx_t *saved)
{
    log_ctx = *saved;
}

void
svc_log_ctx_get(svc_log_ctx_t *out)
{
    *out = log_ctx;
}

const char *
svc_log_ctx_request_id(void)
{
    return log_ctx.set ? log_ctx.request_id : NULL;
}

void
svc_log_ctx_clear(void)
{
    log_ctx.set = false;
}

/*
 * Formats and writes one line if level is enabled; errno is left as the
 * caller had it. Unless the line names its call itself (own_call), the
 * thread's context comes first among the fields.
 */
static void
log_emit(svc_log_level_t level, const char *msg, const char *const *fields, int n_fields,
         const char *const *raw, int n_raw, bool own_call)
{
    char line[LOG_LINE_MAX];
    char now[40];
    const char *with_ctx[2 * (LOG_KV_MAX + 2)];
    size_t n;
    int saved_errno = errno;

    if (!svc_log_enabled(level))
        return;
    if (!own_call && log_ctx.set) {
        n_fields = n_fields < LOG_KV_MAX ? n_fields : LOG_KV_MAX;
        with_ctx[0] = "method";
        with_ctx[1] = log_ctx.method;
        with_ctx[2] = "request_id";
        with_ctx[3] = log_ctx.request_id;
        for (int i = 0; i < 2 * n_fields; i++)
            with_ctx[4 + i] = fields[i];
        fields = with_ctx;
        n_fields += 2;
    }
    format_time(now, sizeof(now));
    pthread_mutex_lock(&log_mu);
    n = svc_log_format(line, sizeof(line) - 1, now, svc_log_level_name(level), log_service, msg,
                       fields, n_fields, raw, n_raw);
    line[n++] = '\n';
    write_all(STDERR_FILENO, line, n);
    pthread_mutex_unlock(&log_mu);
    errno = saved_errno;
}

void
svc_log_kv(svc_log_level_t level, const char *msg, ...)
{
    const char *kv[2 * LOG_KV_MAX];
    int n = 0;
    va_list ap;

    if (!svc_log_enabled(level))
        return;
    va_start(ap, msg);
    for (;;) {
        const char *key = va_arg(ap, const char *);
        if (key == NULL || n == LOG_KV_MAX)
            break;
        kv[(size_t)n * 2] = key;
        kv[(size_t)n * 2 + 1] = va_arg(ap, const char *);
        n++;
    }
    va_end(ap);
    log_emit(level, msg, kv, n, NULL, 0, false);
}

void
svc_logf(svc_log_level_t level, const char *fmt, ...)
{
    char msg[LOG_MSG_MAX];
    va_list ap;

    if (!svc_log_enabled(level))
        return;
    va_start(ap, fmt);
    if (vsnprintf(msg, sizeof(msg), fmt, ap) < 0)
        msg[0] = '\0';
    va_end(ap);
    log_emit(level, msg, NULL, 0, NULL, 0, false);
}

void
svc_log_call(svc_log_level_t level, const char *method, const char *request_id, const char *status,
             const char *msg, double duration_ms)
{
    char dur[64];
    const char *fields[] = {"method", method, "request_id", request_id, "status", status};
    const char *raw[] = {"duration_ms", dur};

    if (!svc_log_enabled(level))
        return;
    snprintf(dur, sizeof(dur), "%.3f", duration_ms);
    log_emit(level, msg, fields, 3, raw, 1, true);
}

bool
svc_log_limit_take(svc_log_limit_t *lim, int64_t now_ms, long *dropped)
{
    bool ok;

    pthread_mutex_lock(&lim->mu);
    if (now_ms - lim->window_start_ms >= 1000 || now_ms < lim->window_start_ms) {
        lim->window_start_ms = now_ms;
        lim->used = 0;
    }
    ok = lim->used < lim->burst;
    if (ok) {
        lim->used++;
        *dropped = lim->dropped;
        lim->dropped = 0;
    } else {
        lim->dropped++;
    }
    pthread_mutex_unlock(&lim->mu);
    return ok;
}

void
svc_logf_limited(svc_log_limit_t *lim, svc_log_level_t level, const char *fmt, ...)
{
    char text[512];
    long dropped;
    va_list ap;

    if (!svc_log_enabled(level) || !svc_log_limit_take(lim, svc_now_mono_ms(), &dropped)) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (dropped > 0) {
        svc_logf(level, "%s (%ld like it dropped)", text, dropped);
    } else {
        svc_logf(level, "%s", text);
    }
}
