/*
 * log.h: JSON-lines logging to stderr, one object per line:
 * {"time":"2026-11-21T20:39:16.123Z","level":"info","service":"lock-svc","msg":"...", ...}
 */
#ifndef SVC_LOG_H
#define SVC_LOG_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    SVC_LOG_DEBUG = 0,
    SVC_LOG_INFO = 1,
    SVC_LOG_WARN = 2,
    SVC_LOG_ERROR = 3,
} svc_log_level_t;

/* Sets the service name written on each line and the lowest level written. */
void svc_log_init(const char *service, svc_log_level_t min_level);
int svc_log_enabled(svc_log_level_t level);

/* Parses "debug", "info", "warn"/"warning", "error"; returns 0 on success, -1 otherwise. */
int svc_log_level_parse(const char *text, svc_log_level_t *out);
const char *svc_log_level_name(svc_log_level_t level);

/*
 * Writes one line with msg and extra string fields given as key, value pairs
 * ending with NULL: svc_log_kv(SVC_LOG_INFO, "listening", "addr", a, NULL).
 * A NULL value writes JSON null.
 */
void svc_log_kv(svc_log_level_t level, const char *msg, ...);

/* printf-style message, no extra fields. */
void svc_logf(svc_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * A budget for one noisy place in the code. When a database or Redis is down,
 * every call fails the same way; a line per failure buries the one line that
 * says what happened. At most `burst` lines per second pass; the first line
 * after a dropped stretch carries how many were dropped. Declare one per
 * place: static svc_log_limit_t lim = SVC_LOG_LIMIT_INIT(5);
 */
typedef struct {
    pthread_mutex_t mu;
    int burst;
    int64_t window_start_ms;
    int used;
    long dropped;
} svc_log_limit_t;
#define SVC_LOG_LIMIT_INIT(burst)                                                                  \
    {                                                                                              \
        PTHREAD_MUTEX_INITIALIZER, (burst), 0, 0, 0                                                \
    }

/*
 * True when one more line may be written at now_ms (monotonic); then
 * *dropped is how many were refused since the last line that passed.
 */
bool svc_log_limit_take(svc_log_limit_t *lim, int64_t now_ms, long *dropped);

/* svc_logf within lim's budget; " (N like it dropped)" is added after a dropped stretch. */
void svc_logf_limited(svc_log_limit_t *lim, svc_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * The call a thread is working for. While a thread has one, every line it
 * writes carries that call's "method" and "request_id" right after "msg",
 * like the call's access line, so a line written anywhere while serving a
 * call (the handler, a job it handed to the pool, a callback that goes on
 * with it) is found by the call's request id. Lines written for no call
 * (start-up, a sweeper) carry neither.
 *
 * Who sets it: the server, around every handler and cancel callback it
 * runs; the client, around each asynchronous unary callback (the context
 * the call was started in); and code that goes on with a call on another
 * thread of its own making (a job it submits to the pool), which enters the
 * call's context there and leaves it when done. Worker threads forget any
 * context after each job.
 */
#define SVC_LOG_METHOD_MAX 128
#define SVC_LOG_REQUEST_ID_MAX 64

/* A thread's log context; plain data, copied on enter. set is false for none. */
typedef struct {
    bool set;
    char method[SVC_LOG_METHOD_MAX + 1];
    char request_id[SVC_LOG_REQUEST_ID_MAX + 1];
} svc_log_ctx_t;

/*
 * Makes (method, request_id) this thread's context, keeping the one it had
 * in *saved for svc_log_ctx_leave. Both strings are copied (cut to the
 * maxima), so the call may end meanwhile. request_id NULL means no call
 * (method is then ignored); method NULL is written as "".
 */
void svc_log_ctx_enter(svc_log_ctx_t *saved, const char *method, const char *request_id);
/* Gives this thread back the context *saved kept. REQUIRES: saved from svc_log_ctx_enter. */
void svc_log_ctx_leave(const svc_log_ctx_t *saved);
/* A copy of this thread's context (out->set false when it has none). */
void svc_log_ctx_get(svc_log_ctx_t *out);
/* This thread's request id, or NULL; valid until its context changes. */
const char *svc_log_ctx_request_id(void);
/* Forgets this thread's context (a thread that runs jobs for many calls, after each). */
void svc_log_ctx_clear(void);

/*
 * The access log line of one call: method, request id, status name and duration.
 * msg may be NULL (ok) or the error message. The line names its own call,
 * whatever the thread's context.
 */
void svc_log_call(svc_log_level_t level, const char *method, const char *request_id,
                  const char *status, const char *msg, double duration_ms);

/*
 * Pure formatter behind the functions above (exposed for tests): writes the
 * JSON object (no newline) into buf, escaping strings per RFC 8259. fields is
 * an array of n_fields*2 strings (key, value; a NULL value is JSON null);
 * raw_fields likewise, but values are written unquoted (numbers).
 * Returns the length written, truncating safely (the output is still valid JSON
 * when truncated: strings are cut, the object is closed).
 */
size_t svc_log_format(char *buf, size_t cap, const char *time_text, const char *level,
                      const char *service, const char *msg, const char *const *fields, int n_fields,
                      const char *const *raw_fields, int n_raw);

#endif
