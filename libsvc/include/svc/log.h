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
 * The access log line of one call: method, request id, status name and duration.
 * msg may be NULL (ok) or the error message.
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
