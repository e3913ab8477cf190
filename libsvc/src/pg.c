/*
 * pg.c: PostgreSQL for services. A fixed array of connection slots guarded by
 * one mutex; connecting happens outside it, without blocking past the caller's
 * deadline. SQLSTATEs become svc_status_t here and nowhere else.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-events.h>

#include "svc/log.h"
#include "svc/metrics.h"
#include "svc/pg.h"
#include "svc/timer.h"

#define PG_DEFAULT_SIZE 16
#define PG_MAX_SIZE 1024
#define PG_DEFAULT_STATEMENT_TIMEOUT_MS 5000
#define PG_DEFAULT_CONNECT_TIMEOUT_S 2
#define PG_MAX_CONNECT_TIMEOUT_S 3600
#define PG_TX_MAX_ATTEMPTS 4 /* the first run and 3 retries */
#define PG_TX_BACKOFF_MS 10  /* at most this times the attempt number, random */
#define PG_LOG_TEXT_MAX 1024
#define PG_STMT_MAX 128 /* statements prepared per connection; more run unprepared */

/* pg_advisory_lock key that serializes svc_pg_migrate: "svc_migr" in ASCII. */
#define PG_MIGRATE_LOCK_KEY "8319946623122237298"

typedef struct {
    PGconn *conn; /* NULL: empty, connected by the next acquire */
    bool busy;    /* handed out; only its holder touches conn then */
} pg_slot_t;

struct svc_pg_pool {
    pthread_mutex_t mu;
    pthread_cond_t freed; /* a slot was released (CLOCK_MONOTONIC) */
    pg_slot_t *slots;     /* guarded by mu */
    int size;
    int n_free; /* guarded by mu */
    int connect_timeout_s;
    char **keys, **values; /* NULL-terminated, for PQconnectStartParams */
};

/*
 * Set by svc_pg_error when the database aborted a transaction that may simply
 * run again (40001, 40P01), so that svc_pg_tx retries those and not an ABORTED
 * its fn chose itself. Read only by svc_pg_tx on the same thread.
 */
static _Thread_local bool pg_tx_retryable;

/* The pools' series (every pool of the process adds to them). */
static svc_metric_t *m_size, *m_in_use, *m_waits, *m_wait_s, *m_connects, *m_connect_fails;
static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void
pg__metrics_make(void)
{
    m_size = svc_metric(SVC_METRIC_GAUGE, "pg_pool_size", "PostgreSQL connections a pool may hold.",
                        NULL);
    m_in_use = svc_metric(SVC_METRIC_GAUGE, "pg_pool_in_use",
                          "PostgreSQL pool connections handed out now.", NULL);
    m_waits = svc_metric(SVC_METRIC_COUNTER, "pg_pool_waits_total",
                         "Acquisitions that found every pool connection in use and waited.", NULL);
    m_wait_s = svc_metric(SVC_METRIC_HISTOGRAM, "pg_pool_wait_seconds",
                          "How long acquisitions that waited for a pool connection waited.", NULL);
    m_connects = svc_metric(SVC_METRIC_COUNTER, "pg_connects_total",
                            "PostgreSQL connections opened (the first, and after a loss).", NULL);
    m_connect_fails = svc_metric(SVC_METRIC_COUNTER, "pg_connect_failures_total",
                                 "PostgreSQL connection attempts that failed.", NULL);
}

/*
 * The statements prepared on one pool connection (its libpq instance data):
 * each by the hash and a copy of its text, named "svc_<index>". A statement
 * is parsed and planned once per connection instead of on every run, which
 * halved PostgreSQL's CPU per statement in pgbench here (-M prepared against
 * -M extended). Keyed by text, not by pointer: a statement built at run time
 * is found again only when its text is the same.
 */
typedef struct {
    uint64_t hash;
    char *sql;
} pg_stmt_t;

typedef struct {
    int n;
    pg_stmt_t v[PG_STMT_MAX];
} pg_stmts_t;

static void
pg__stmts_clear(pg_stmts_t *c)
{
    for (int i = 0; i < c->n; i++)
        free(c->v[i].sql);
    c->n = 0;
}

/* libpq's events on a pool connection: its statements live and die with its session. */
static int
pg__events(PGEventId id, void *info, void *arg)
{
    (void)arg;
    switch (id) {
    case PGEVT_REGISTER: {
        PGconn *conn = ((PGEventRegister *)info)->conn;
        pg_stmts_t *c = calloc(1, sizeof(*c));
        return c != NULL && PQsetInstanceData(conn, pg__events, c) ? 1 : (free(c), 0);
    }
    case PGEVT_CONNRESET: {
        pg_stmts_t *c = PQinstanceData(((PGEventConnReset *)info)->conn, pg__events);
        if (c != NULL)
            pg__stmts_clear(c);
        return 1;
    }
    case PGEVT_CONNDESTROY: {
        pg_stmts_t *c = PQinstanceData(((PGEventConnDestroy *)info)->conn, pg__events);
        if (c != NULL) {
            pg__stmts_clear(c);
            free(c);
        }
        return 1;
    }
    default:
        return 1;
    }
}

static uint64_t
pg__hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */

    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/*
 * The name of sql's prepared statement on conn, preparing it on first use.
 * Returns 1 with name set, 0 when it is to run unprepared (a connection not
 * from a pool, or PG_STMT_MAX reached), or -1 when preparing failed (*failed
 * holds the result to report).
 */
static int
pg__prepared(PGconn *conn, const char *sql, int n_params, char *name, size_t name_len,
             PGresult **failed)
{
    pg_stmts_t *c = PQinstanceData(conn, pg__events);
    uint64_t h;
    PGresult *res;
    char *copy;

    if (c == NULL)
        return 0;
    h = pg__hash(sql);
    for (int i = 0; i < c->n; i++) {
        if (c->v[i].hash == h && strcmp(c->v[i].sql, sql) == 0) {
            snprintf(name, name_len, "svc_%d", i);
            return 1;
        }
    }
    if (c->n == PG_STMT_MAX || (copy = strdup(sql)) == NULL)
        return 0;
    snprintf(name, name_len, "svc_%d", c->n);
    res = PQprepare(conn, name, sql, n_params, NULL);
    if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
        free(copy);
        *failed = res;
        return -1;
    }
    PQclear(res);
    c->v[c->n].hash = h;
    c->v[c->n].sql = copy;
    c->n++;
    return 1;
}

/* ---------------------------------------------------------------- logging */

/* Logs text from libpq or the server (which ends with a newline) without the newline. */
static void
pg__log(svc_log_level_t level, const char *msg, const char *what, const char *sqlstate,
        const char *text)
{
    char buf[PG_LOG_TEXT_MAX];
    size_t len;

    /* A database that is down fails every call alike: a few lines a second say so. */
    static svc_log_limit_t warn_limit = SVC_LOG_LIMIT_INIT(10);
    char dropped_text[24];
    long dropped = 0;

    if (!svc_log_enabled(level))
        return;
    if (level >= SVC_LOG_WARN && !svc_log_limit_take(&warn_limit, svc_now_mono_ms(), &dropped))
        return;
    snprintf(buf, sizeof(buf), "%s", text != NULL ? text : "");
    len = strlen(buf);
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
        buf[--len] = '\0';
    if (sqlstate != NULL && sqlstate[0] == '\0')
        sqlstate = NULL;
    if (dropped == 0) {
        svc_log_kv(level, msg, "what", what, "sqlstate", sqlstate, "error", buf, NULL);
        return;
    }
    snprintf(dropped_text, sizeof(dropped_text), "%ld", dropped);
    svc_log_kv(level, msg, "what", what, "sqlstate", sqlstate, "error", buf, "dropped_before",
               dropped_text, NULL);
}

/*
 * Server notices go to our log, not libpq's default of raw text on stderr:
 * WARNING at warn, NOTICE and below ("relation ... already exists,
 * skipping") at debug.
 */
static void
pg__notice(void *arg, const PGresult *res)
{
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    bool warning = severity != NULL && strcmp(severity, "WARNING") == 0;

    (void)arg;
    pg__log(warning ? SVC_LOG_WARN : SVC_LOG_DEBUG, "database notice", NULL, svc_pg_sqlstate(res),
            PQresultErrorMessage(res));
}

/* ------------------------------------------------------------ parameters */

/* Appends strdup'd key and value at *n. Returns -1 when out of memory. */
static int
pg__param_add(svc_pg_pool_t *pool, int *n, const char *key, const char *value)
{
    pool->keys[*n] = strdup(key);
    pool->values[*n] = strdup(value);
    if (pool->keys[*n] == NULL || pool->values[*n] == NULL)
        return -1;
    (*n)++;
    return 0;
}

/* Copies the explicit settings of parsed, then adds options carrying statement_timeout. */
static int
pg__params_fill(svc_pg_pool_t *pool, const PQconninfoOption *parsed, int statement_timeout_ms)
{
    const char *user_options = "";
    char options[1024];
    int n = 0;

    for (const PQconninfoOption *o = parsed; o->keyword != NULL; o++) {
        if (o->val == NULL)
            continue;
        if (strcmp(o->keyword, "options") == 0) {
            user_options = o->val;
            continue;
        }
        if (pg__param_add(pool, &n, o->keyword, o->val) < 0)
            return -1;
    }
    if (statement_timeout_ms >= 0) {
        snprintf(options, sizeof(options), "%s%s-c statement_timeout=%d", user_options,
                 user_options[0] != '\0' ? " " : "", statement_timeout_ms);
        user_options = options;
    }
    if (user_options[0] != '\0' && pg__param_add(pool, &n, "options", user_options) < 0)
        return -1;
    return 0;
}

/*
 * Parses conninfo into the pool's keyword and value arrays. The caller's
 * "options" are kept, with "-c statement_timeout=N" appended.
 */
static int
pg__params_build(svc_pg_pool_t *pool, const char *conninfo, int statement_timeout_ms,
                 svc_err_t *err)
{
    char *errmsg = NULL;
    PQconninfoOption *parsed = PQconninfoParse(conninfo, &errmsg);
    int n = 2; /* options, and the terminating NULL */
    int rc;

    if (parsed == NULL) {
        pg__log(SVC_LOG_WARN, "bad database conninfo", "create database pool", NULL, errmsg);
        PQfreemem(errmsg);
        svc_err_set(err, SVC_INVALID_ARGUMENT, "bad database conninfo");
        return -1;
    }
    for (const PQconninfoOption *o = parsed; o->keyword != NULL; o++)
        n += o->val != NULL;
    pool->keys = calloc((size_t)n, sizeof(char *));
    pool->values = calloc((size_t)n, sizeof(char *));
    rc = pool->keys != NULL && pool->values != NULL
             ? pg__params_fill(pool, parsed, statement_timeout_ms)
             : -1;
    PQconninfoFree(parsed);
    if (rc < 0)
        svc_err_set(err, SVC_INTERNAL, "out of memory");
    return rc;
}

static void
pg__params_free(svc_pg_pool_t *pool)
{
    for (int i = 0; pool->keys != NULL && pool->keys[i] != NULL; i++)
        free(pool->keys[i]);
    for (int i = 0; pool->values != NULL && pool->values[i] != NULL; i++)
        free(pool->values[i]);
    free(pool->keys);
    free(pool->values);
}

/* ------------------------------------------------------------------ pool */

static int
pg__opts_check(const svc_pg_opts_t *opts, svc_err_t *err)
{
    if (opts == NULL || opts->conninfo == NULL) {
        svc_err_set(err, SVC_INVALID_ARGUMENT, "database conninfo missing");
        return -1;
    }
    if (opts->size < 0 || opts->size > PG_MAX_SIZE) {
        svc_err_set(err, SVC_INVALID_ARGUMENT, "database pool size must be 0 (default) to %d",
                    PG_MAX_SIZE);
        return -1;
    }
    if (opts->connect_timeout_s < 0 || opts->connect_timeout_s > PG_MAX_CONNECT_TIMEOUT_S) {
        svc_err_set(err, SVC_INVALID_ARGUMENT,
                    "database connect timeout must be 0 (default) to %d s",
                    PG_MAX_CONNECT_TIMEOUT_S);
        return -1;
    }
    return 0;
}

static int
pg__sync_init(svc_pg_pool_t *pool)
{
    pthread_condattr_t attr;
    int rc;

    if (pthread_mutex_init(&pool->mu, NULL) != 0)
        return -1;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    rc = pthread_cond_init(&pool->freed, &attr);
    pthread_condattr_destroy(&attr);
    if (rc != 0) {
        pthread_mutex_destroy(&pool->mu);
        return -1;
    }
    return 0;
}

svc_pg_pool_t *
svc_pg_pool_create(const svc_pg_opts_t *opts, svc_err_t *err)
{
    svc_pg_pool_t *pool;
    int timeout_ms;

    if (pg__opts_check(opts, err) < 0)
        return NULL;
    pool = calloc(1, sizeof(*pool));
    if (pool == NULL) {
        svc_err_set(err, SVC_INTERNAL, "out of memory");
        return NULL;
    }
    pool->size = opts->size > 0 ? opts->size : PG_DEFAULT_SIZE;
    pool->n_free = pool->size;
    pthread_once(&metrics_once, pg__metrics_make);
    pool->connect_timeout_s =
        opts->connect_timeout_s > 0 ? opts->connect_timeout_s : PG_DEFAULT_CONNECT_TIMEOUT_S;
    timeout_ms = opts->statement_timeout_ms != 0 ? opts->statement_timeout_ms
                                                 : PG_DEFAULT_STATEMENT_TIMEOUT_MS;
    pool->slots = calloc((size_t)pool->size, sizeof(pg_slot_t));
    if (pool->slots == NULL) {
        svc_err_set(err, SVC_INTERNAL, "out of memory");
    } else if (pg__params_build(pool, opts->conninfo, timeout_ms < 0 ? -1 : timeout_ms, err) == 0) {
        if (pg__sync_init(pool) == 0) {
            svc_metric_add(m_size, pool->size);
            return pool;
        }
        svc_err_set(err, SVC_INTERNAL, "cannot make database pool lock");
    }
    pg__params_free(pool);
    free(pool->slots);
    free(pool);
    return NULL;
}

void
svc_pg_pool_destroy(svc_pg_pool_t *pool)
{
    if (pool == NULL)
        return;
    svc_metric_add(m_size, -pool->size);
    for (int i = 0; i < pool->size; i++)
        PQfinish(pool->slots[i].conn);
    pthread_cond_destroy(&pool->freed);
    pthread_mutex_destroy(&pool->mu);
    pg__params_free(pool);
    free(pool->slots);
    free(pool);
}

/* A CLOCK_MONOTONIC time ms milliseconds from now, for pthread_cond_timedwait. */
static struct timespec
pg__mono_after(int64_t ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Picks a free slot, preferring one already connected. Caller holds mu; n_free > 0. */
static int
pg__slot_pick(svc_pg_pool_t *pool)
{
    int empty = -1;

    for (int i = 0; i < pool->size; i++) {
        if (pool->slots[i].busy)
            continue;
        if (pool->slots[i].conn != NULL)
            return i;
        if (empty < 0)
            empty = i;
    }
    return empty;
}

/* Waits for a free slot until the deadline and marks it busy. Returns its index or -1. */
static int
pg__slot_take(svc_pg_pool_t *pool, int64_t deadline_unix_ms, svc_err_t *err)
{
    int slot;
    struct timespec t0 = {0};

    if (deadline_unix_ms <= svc_now_unix_ms()) {
        svc_err_set(err, SVC_DEADLINE_EXCEEDED, "deadline exceeded before database call");
        return -1;
    }
    pthread_mutex_lock(&pool->mu);
    if (pool->n_free == 0) {
        svc_metric_add(m_waits, 1);
        clock_gettime(CLOCK_MONOTONIC, &t0);
    }
    while (pool->n_free == 0) {
        if (deadline_unix_ms == INT64_MAX) {
            pthread_cond_wait(&pool->freed, &pool->mu);
            continue;
        }
        int64_t left = deadline_unix_ms - svc_now_unix_ms();
        if (left <= 0) {
            pthread_mutex_unlock(&pool->mu);
            svc_err_set(err, SVC_UNAVAILABLE, "database busy");
            return -1;
        }
        struct timespec until = pg__mono_after(left);
        pthread_cond_timedwait(&pool->freed, &pool->mu, &until);
    }
    slot = pg__slot_pick(pool);
    pool->slots[slot].busy = true;
    pool->n_free--;
    pthread_mutex_unlock(&pool->mu);
    svc_metric_add(m_in_use, 1);
    if (t0.tv_sec != 0) {
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        svc_metric_observe(m_wait_s, (double)(t1.tv_sec - t0.tv_sec) +
                                         (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    }
    return slot;
}

/* Marks a slot free holding conn (NULL: empty) and wakes one waiter. */
static void
pg__slot_put(svc_pg_pool_t *pool, int slot, PGconn *conn)
{
    pthread_mutex_lock(&pool->mu);
    pool->slots[slot].conn = conn;
    pool->slots[slot].busy = false;
    pool->n_free++;
    pthread_cond_signal(&pool->freed);
    pthread_mutex_unlock(&pool->mu);
    svc_metric_add(m_in_use, -1);
}

/*
 * An idle connection has nothing to read. If it has, the server most likely
 * closed it (restart, crash, idle timeout) or sent a fatal error: drop it and
 * connect again rather than fail the caller's first statement.
 */
static bool
pg__conn_usable(PGconn *conn)
{
    struct pollfd pfd;

    if (conn == NULL || PQstatus(conn) != CONNECTION_OK)
        return false;
    pfd.fd = PQsocket(conn);
    pfd.events = POLLIN;
    pfd.revents = 0;
    return pfd.fd >= 0 && poll(&pfd, 1, 0) == 0;
}

/* Waits for the socket as PQconnectPoll asked, up to limit. Returns -1 on timeout or error. */
static int
pg__connect_wait(PGconn *conn, PostgresPollingStatusType st, int64_t limit_unix_ms)
{
    struct pollfd pfd;
    int rc;

    do {
        int64_t left = limit_unix_ms - svc_now_unix_ms();
        if (left <= 0)
            return -1;
        pfd.fd = PQsocket(conn);
        pfd.events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT;
        pfd.revents = 0;
        rc = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
    } while (rc == 0 || (rc < 0 && errno == EINTR));
    return rc < 0 ? -1 : 0;
}

/*
 * Connects without blocking past the deadline or connect_timeout_s (libpq
 * ignores connect_timeout in non-blocking connects). Returns NULL after
 * logging why.
 */
static PGconn *
pg__connect(svc_pg_pool_t *pool, int64_t deadline_unix_ms)
{
    int64_t limit = svc_now_unix_ms() + (int64_t)pool->connect_timeout_s * 1000;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    PGconn *conn;

    if (deadline_unix_ms < limit)
        limit = deadline_unix_ms;
    conn =
        PQconnectStartParams((const char *const *)pool->keys, (const char *const *)pool->values, 0);
    if (conn == NULL) {
        pg__log(SVC_LOG_WARN, "database connect failed", "connect", NULL, "out of memory");
        return NULL;
    }
    while (PQstatus(conn) != CONNECTION_BAD && st != PGRES_POLLING_OK &&
           st != PGRES_POLLING_FAILED) {
        if (pg__connect_wait(conn, st, limit) < 0) {
            pg__log(SVC_LOG_WARN, "database connect failed", "connect", NULL, "timed out");
            PQfinish(conn);
            return NULL;
        }
        st = PQconnectPoll(conn);
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        pg__log(SVC_LOG_WARN, "database connect failed", "connect", NULL, PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeReceiver(conn, pg__notice, NULL);
    if (!PQregisterEventProc(conn, pg__events, "svc_pg", NULL)) {
        pg__log(SVC_LOG_WARN, "statements run unprepared on a connection", "connect", NULL,
                "out of memory");
    }
    return conn;
}

PGconn *
svc_pg_acquire(svc_pg_pool_t *pool, int64_t deadline_unix_ms, svc_err_t *err)
{
    int slot = pg__slot_take(pool, deadline_unix_ms, err);
    PGconn *conn;

    if (slot < 0)
        return NULL;
    /* The slot is ours: its conn changes only under mu, but only we change it now. */
    conn = pool->slots[slot].conn;
    if (pg__conn_usable(conn))
        return conn;
    if (conn != NULL) {
        pthread_mutex_lock(&pool->mu);
        pool->slots[slot].conn = NULL;
        pthread_mutex_unlock(&pool->mu);
        PQfinish(conn);
    }
    conn = pg__connect(pool, deadline_unix_ms);
    svc_metric_add(conn != NULL ? m_connects : m_connect_fails, 1);
    if (conn == NULL) {
        pg__slot_put(pool, slot, NULL);
        svc_err_set(err, SVC_UNAVAILABLE, "database unavailable");
        return NULL;
    }
    pthread_mutex_lock(&pool->mu);
    pool->slots[slot].conn = conn;
    pthread_mutex_unlock(&pool->mu);
    return conn;
}

void
svc_pg_release(svc_pg_pool_t *pool, PGconn *conn, bool broken)
{
    int slot = -1;

    if (conn == NULL)
        return;
    if (PQstatus(conn) != CONNECTION_OK || PQtransactionStatus(conn) != PQTRANS_IDLE)
        broken = true;
    pthread_mutex_lock(&pool->mu);
    for (int i = 0; i < pool->size && slot < 0; i++) {
        if (pool->slots[i].busy && pool->slots[i].conn == conn)
            slot = i;
    }
    pthread_mutex_unlock(&pool->mu);
    if (slot < 0) {
        svc_logf(SVC_LOG_ERROR, "svc_pg_release: connection not taken from this pool");
        return;
    }
    pg__slot_put(pool, slot, broken ? NULL : conn);
    if (broken)
        PQfinish(conn);
}

/* ---------------------------------------------------------------- errors */

const char *
svc_pg_sqlstate(const PGresult *res)
{
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    return state != NULL ? state : "";
}

/* The status and the short reason for a SQLSTATE; "" when there is none. */
static svc_status_t
pg__classify(const char *state, const char **reason)
{
    if (strcmp(state, "23505") == 0) {
        *reason = "already exists";
        return SVC_ALREADY_EXISTS;
    }
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0) {
        *reason = "conflict with a concurrent transaction";
        return SVC_ABORTED;
    }
    if (strcmp(state, "23514") == 0) {
        *reason = "check constraint violated";
        return SVC_FAILED_PRECONDITION;
    }
    if (strcmp(state, "23503") == 0) {
        *reason = "foreign key violated";
        return SVC_FAILED_PRECONDITION;
    }
    if (strcmp(state, "57014") == 0) {
        *reason = "database too slow";
        return SVC_UNAVAILABLE;
    }
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "53", 2) == 0 ||
        strcmp(state, "57P01") == 0 || strcmp(state, "57P02") == 0 || strcmp(state, "57P03") == 0) {
        *reason = "database unavailable";
        return SVC_UNAVAILABLE;
    }
    *reason = "database error";
    return SVC_INTERNAL;
}

svc_status_t
svc_pg_error(PGconn *conn, const PGresult *res, svc_err_t *err, const char *what)
{
    const char *state = svc_pg_sqlstate(res);
    const char *reason, *text;
    svc_status_t code;

    what = what != NULL ? what : "database call";
    if (res == NULL || (conn != NULL && PQstatus(conn) == CONNECTION_BAD)) {
        code = SVC_UNAVAILABLE;
        reason = "database unavailable";
    } else if (PQresultStatus(res) != PGRES_FATAL_ERROR) {
        code = SVC_INTERNAL;
        reason = "unexpected result";
    } else {
        code = pg__classify(state, &reason);
    }
    if (code == SVC_ABORTED)
        pg_tx_retryable = true;
    if (res != NULL && PQresultErrorMessage(res)[0] != '\0')
        text = PQresultErrorMessage(res);
    else if (conn != NULL && PQerrorMessage(conn)[0] != '\0')
        text = PQerrorMessage(conn);
    else
        text = res != NULL ? PQresStatus(PQresultStatus(res)) : "no result";
    /* Conflicts are answers, not faults: under contention they would flood warn. */
    pg__log(code == SVC_UNAVAILABLE || code == SVC_INTERNAL ? SVC_LOG_WARN : SVC_LOG_DEBUG,
            "database error", what, state, text);
    svc_err_set(err, code, "%s failed: %s", what, reason);
    return code;
}

/* ---------------------------------------------------------- transactions */

/* Runs a statement expecting `expect`; sets err and returns -1 otherwise. */
static int
pg__exec(PGconn *conn, const char *sql, ExecStatusType expect, const char *what, svc_err_t *err)
{
    PGresult *res = PQexec(conn, sql);
    int rc = 0;

    if (PQresultStatus(res) != expect) {
        svc_pg_error(conn, res, err, what);
        rc = -1;
    }
    PQclear(res);
    return rc;
}

/* COMMIT; a transaction that had failed answers "ROLLBACK" to it, which is an error here. */
static int
pg__commit(PGconn *conn, const char *what, svc_err_t *err)
{
    PGresult *res = PQexec(conn, "COMMIT");
    int rc = 0;

    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        svc_pg_error(conn, res, err, what);
        rc = -1;
    } else if (strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        svc_logf(SVC_LOG_WARN, "commit found the transaction failed: an error was ignored");
        svc_err_set(err, SVC_INTERNAL, "%s failed: transaction had failed", what);
        rc = -1;
    }
    PQclear(res);
    return rc;
}

/* ROLLBACK, keeping err as it is. Returns -1 when the connection should be dropped. */
static int
pg__rollback(PGconn *conn)
{
    svc_err_t ignored;

    if (PQstatus(conn) != CONNECTION_OK)
        return -1;
    return pg__exec(conn, "ROLLBACK", PGRES_COMMAND_OK, "roll back transaction", &ignored);
}

/* One run of BEGIN, fn, COMMIT or ROLLBACK. Sets *broken when conn must be dropped. */
static int
pg__tx_once(PGconn *conn, svc_pg_tx_fn fn, void *arg, svc_err_t *err, bool *broken)
{
    if (pg__exec(conn, "BEGIN", PGRES_COMMAND_OK, "begin transaction", err) < 0) {
        *broken = PQstatus(conn) != CONNECTION_OK;
        return -1;
    }
    svc_err_clear(err);
    if (fn(conn, arg, err) != 0) {
        if (err->code == SVC_OK)
            svc_err_set(err, SVC_INTERNAL, "transaction failed");
        *broken = pg__rollback(conn) < 0;
        return -1;
    }
    if (pg__commit(conn, "commit transaction", err) < 0) {
        *broken = PQstatus(conn) != CONNECTION_OK;
        return -1;
    }
    return 0;
}

/* Sleeps a random 1 to attempt*PG_TX_BACKOFF_MS ms. Returns -1 when that passes the deadline. */
static int
pg__backoff(int attempt, int64_t deadline_unix_ms)
{
    struct timespec now;
    int64_t ms;

    clock_gettime(CLOCK_MONOTONIC, &now);
    ms = 1 + (int64_t)(now.tv_nsec / 1000) % ((int64_t)attempt * PG_TX_BACKOFF_MS);
    if (deadline_unix_ms != INT64_MAX && svc_now_unix_ms() + ms >= deadline_unix_ms)
        return -1;
    svc_sleep_ms(ms);
    return 0;
}

int
svc_pg_tx(svc_pg_pool_t *pool, int64_t deadline_unix_ms, svc_pg_tx_fn fn, void *arg, svc_err_t *err)
{
    svc_err_t local;

    if (err == NULL)
        err = &local;
    for (int attempt = 1;; attempt++) {
        PGconn *conn = svc_pg_acquire(pool, deadline_unix_ms, err);
        bool broken = false;
        int rc;

        if (conn == NULL)
            return -1;
        pg_tx_retryable = false;
        rc = pg__tx_once(conn, fn, arg, err, &broken);
        svc_pg_release(pool, conn, broken);
        if (rc == 0)
            return 0;
        if (err->code != SVC_ABORTED || !pg_tx_retryable || attempt == PG_TX_MAX_ATTEMPTS)
            return -1;
        svc_logf(SVC_LOG_DEBUG, "transaction aborted by the database, running it again");
        if (pg__backoff(attempt, deadline_unix_ms) < 0)
            return -1;
    }
}

/* ------------------------------------------------------------ migrations */

static int
pg__migration_cmp(const void *a, const void *b)
{
    const svc_migration_t *x = *(const svc_migration_t *const *)a;
    const svc_migration_t *y = *(const svc_migration_t *const *)b;

    return (x->version > y->version) - (x->version < y->version);
}

/* Pointers to m sorted by version, after checking the list. Caller frees. */
static const svc_migration_t **
pg__migrations_sorted(const svc_migration_t *m, int n, svc_err_t *err)
{
    const svc_migration_t **order;

    if (n < 0 || (n > 0 && m == NULL)) {
        svc_err_set(err, SVC_INVALID_ARGUMENT, "bad migration list");
        return NULL;
    }
    order = calloc(n > 0 ? (size_t)n : 1, sizeof(*order));
    if (order == NULL) {
        svc_err_set(err, SVC_INTERNAL, "out of memory");
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if (m[i].version <= 0 || m[i].name == NULL || m[i].sql == NULL) {
            svc_err_set(err, SVC_INVALID_ARGUMENT, "bad migration at index %d", i);
            free(order);
            return NULL;
        }
        order[i] = &m[i];
    }
    qsort(order, (size_t)n, sizeof(*order), pg__migration_cmp);
    for (int i = 1; i < n; i++) {
        if (order[i]->version == order[i - 1]->version) {
            svc_err_set(err, SVC_INVALID_ARGUMENT, "migration version %d twice", order[i]->version);
            free(order);
            return NULL;
        }
    }
    return order;
}

/* Sets *applied to whether schema_migrations records version. */
static int
pg__migration_recorded(PGconn *conn, int version, bool *applied, svc_err_t *err)
{
    char vbuf[16];
    const char *params[1] = {vbuf};
    PGresult *res;
    int rc = 0;

    snprintf(vbuf, sizeof(vbuf), "%d", version);
    res = PQexecParams(conn, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, NULL, params,
                       NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        svc_pg_error(conn, res, err, "read schema_migrations");
        rc = -1;
    } else {
        *applied = PQntuples(res) > 0;
    }
    PQclear(res);
    return rc;
}

/* The migration's own SQL, several statements perhaps: PQexec, not PQexecParams. */
static int
pg__migration_run(PGconn *conn, const svc_migration_t *mig, const char *what, svc_err_t *err)
{
    char vbuf[16];
    const char *params[2] = {vbuf, mig->name};
    PGresult *res = PQexec(conn, mig->sql);
    ExecStatusType st = PQresultStatus(res);

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
        svc_pg_error(conn, res, err, what);
        PQclear(res);
        return -1;
    }
    PQclear(res);
    snprintf(vbuf, sizeof(vbuf), "%d", mig->version);
    res = PQexecParams(conn, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", 2,
                       NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        svc_pg_error(conn, res, err, what);
        PQclear(res);
        return -1;
    }
    PQclear(res);
    return 0;
}

/* Applies one migration and its schema_migrations row in one transaction. */
static int
pg__migration_apply(PGconn *conn, const svc_migration_t *mig, svc_err_t *err)
{
    char what[128], vbuf[16];

    snprintf(what, sizeof(what), "apply migration %d (%.64s)", mig->version, mig->name);
    if (pg__exec(conn, "BEGIN", PGRES_COMMAND_OK, what, err) < 0)
        return -1;
    if (pg__migration_run(conn, mig, what, err) < 0) {
        pg__rollback(conn);
        return -1;
    }
    if (pg__commit(conn, what, err) < 0)
        return -1;
    snprintf(vbuf, sizeof(vbuf), "%d", mig->version);
    svc_log_kv(SVC_LOG_INFO, "applied migration", "version", vbuf, "name", mig->name, NULL);
    return 0;
}

/* Everything svc_pg_migrate does on its session, lock to unlock. */
static int
pg__migrate_session(PGconn *conn, const svc_migration_t *const *order, int n, svc_err_t *err)
{
    static const char create[] = "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                 "version int PRIMARY KEY, name text NOT NULL, "
                                 "applied_at timestamptz NOT NULL DEFAULT now())";

    if (pg__exec(conn, "SET statement_timeout = 0", PGRES_COMMAND_OK, "disable statement timeout",
                 err) < 0 ||
        pg__exec(conn, "SELECT pg_advisory_lock(" PG_MIGRATE_LOCK_KEY ")", PGRES_TUPLES_OK,
                 "take migration lock", err) < 0 ||
        pg__exec(conn, create, PGRES_COMMAND_OK, "create schema_migrations", err) < 0)
        return -1;
    for (int i = 0; i < n; i++) {
        bool applied = false;

        if (pg__migration_recorded(conn, order[i]->version, &applied, err) < 0)
            return -1;
        if (!applied && pg__migration_apply(conn, order[i], err) < 0)
            return -1;
    }
    if (pg__exec(conn, "SELECT pg_advisory_unlock(" PG_MIGRATE_LOCK_KEY ")", PGRES_TUPLES_OK,
                 "release migration lock", err) < 0 ||
        pg__exec(conn, "RESET statement_timeout", PGRES_COMMAND_OK, "reset statement timeout",
                 err) < 0)
        return -1;
    return 0;
}

int
svc_pg_migrate(svc_pg_pool_t *pool, const svc_migration_t *m, int n, svc_err_t *err)
{
    const svc_migration_t **order;
    svc_err_t local;
    PGconn *conn;
    int rc;

    if (err == NULL)
        err = &local;
    order = pg__migrations_sorted(m, n, err);
    if (order == NULL)
        return -1;
    conn = svc_pg_acquire(pool, INT64_MAX, err);
    if (conn == NULL) {
        free(order);
        return -1;
    }
    rc = pg__migrate_session(conn, order, n, err);
    /* On failure, closing the session is what surely drops the lock and the settings. */
    svc_pg_release(pool, conn, rc < 0);
    free(order);
    return rc;
}

PGresult *
svc_pg_exec(PGconn *conn, const char *sql, int n_params, const char *const *params,
            ExecStatusType want, const char *what, svc_err_t *err)
{
    PGresult *res = NULL;
    char name[16];
    int prepared = pg__prepared(conn, sql, n_params, name, sizeof(name), &res);

    if (prepared > 0)
        res = PQexecPrepared(conn, name, n_params, params, NULL, NULL, 0);
    else if (prepared == 0)
        res = PQexecParams(conn, sql, n_params, NULL, params, NULL, NULL, 0);
    if (res == NULL || PQresultStatus(res) != want) {
        svc_pg_error(conn, res, err, what);
        PQclear(res);
        return NULL;
    }
    return res;
}

int64_t
svc_pg_i64(const PGresult *res, int row, int col)
{
    return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

int
svc_pg_migrate_wait(svc_pg_pool_t *pool, const svc_migration_t *m, int n, int patience_s,
                    svc_err_t *err)
{
    for (int i = 0; i < patience_s; i++) {
        if (svc_pg_migrate(pool, m, n, err) == 0) {
            return 0;
        }
        if (err->code != SVC_UNAVAILABLE) {
            return -1;
        }
        if (i == 0) {
            svc_logf(SVC_LOG_WARN, "database not reachable yet, retrying: %s", err->msg);
        }
        svc_sleep_ms(1000);
    }
    return -1;
}
