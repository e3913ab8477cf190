/*
 * lab_ops.c: the strategies. Each operation (book seats, top up, spend) is
 * the same read-check-write on our schema; a strategy only changes how the
 * writers are kept apart: nothing, a version column, a row lock, a
 * conditional UPDATE, an advisory lock, a Redis or lock-svc lock, or ours
 * (lock-svc token, then FOR UPDATE, then the fence check, as
 * reservation_store.c and balance_store.c do it).
 *
 * The write shapes are the ones the folklore uses: a booking checks the
 * seats are free and then marks them; a top-up writes back the balance it
 * read plus the amount (read-modify-write, as an ORM saves an entity); a
 * spend checks the balance and then decrements it (hand-written SQL).
 */
#define _GNU_SOURCE
#include "lab.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "svc/lock_client.h"

#define LAB_RETRY_MAX 50 /* optimistic re-runs before giving up (LAB_CONFLICT) */
#define LAB_KEYS_MAX 4
#define LAB_HOLD_EXPIRES_MS 4102444800000LL /* 2100-01-01: holds never expire in the lab */

const char *const lab_strategy_names[LAB_N_STRATEGIES] = {
    [LAB_NONE] = "none",
    [LAB_OPTIMISTIC] = "optimistic",
    [LAB_OPTIMISTIC_RETRY] = "optimistic+retry",
    [LAB_FOR_UPDATE] = "for-update",
    [LAB_NOWAIT] = "for-update-nowait",
    [LAB_FOR_SHARE] = "for-share",
    [LAB_CONDITIONAL] = "conditional-update",
    [LAB_ADVISORY] = "advisory-lock",
    [LAB_REDIS_GETDEL] = "redis-getdel",
    [LAB_REDIS_LUA] = "redis-lua",
    [LAB_LOCKSVC_TOKEN] = "locksvc-token",
    [LAB_OURS] = "ours",
};

const char *const lab_outcome_names[LAB_N_OUTCOMES] = {
    [LAB_OK] = "ok",
    [LAB_REPLAYED] = "replayed",
    [LAB_TAKEN] = "taken",
    [LAB_INSUFFICIENT] = "insufficient",
    [LAB_CONFLICT] = "conflict",
    [LAB_BUSY] = "busy",
    [LAB_LOCK_TIMEOUT] = "lock-timeout",
    [LAB_DEADLOCK] = "deadlock",
    [LAB_SERIALIZATION] = "serialization",
    [LAB_FENCED] = "fenced",
    [LAB_TIMEOUT] = "timeout",
    [LAB_CONSTRAINT] = "constraint",
    [LAB_ERROR] = "error",
};

static const char lab_redis_unlock_lua[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0";

int64_t
lab_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
lab_sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};

    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* The paused holder stops here, between its check and its write, holding what it holds. */
static void
lab_pause(const lab_op_t *op)
{
    if (op->pause_ms <= 0) {
        return;
    }
    if (op->paused_flag != NULL) {
        *op->paused_flag = 1;
    }
    lab_sleep_ms(op->pause_ms);
}

void
lab_worker_close(lab_worker_t *w)
{
    if (w->redis != NULL) {
        redisFree(w->redis);
        w->redis = NULL;
    }
}

/* ---------- external locks: Redis SET NX and lock-svc ---------- */

/* The locks one operation holds outside the database. */
typedef struct {
    int n;
    char keys[LAB_KEYS_MAX][64];
    char token[33];               /* Redis: our value under every key */
    svc_lock_t svc[LAB_KEYS_MAX]; /* lock-svc grants, one per key */
} lab_locks_t;

static bool
lab_uses_redis(lab_strategy_t s)
{
    return s == LAB_REDIS_GETDEL || s == LAB_REDIS_LUA;
}

static bool
lab_uses_locksvc(lab_strategy_t s)
{
    return s == LAB_LOCKSVC_TOKEN || s == LAB_OURS;
}

static int
lab_redis_connect(const lab_env_t *env, lab_worker_t *w)
{
    struct timeval tv = {.tv_sec = 5};

    if (w->redis != NULL && w->redis->err == 0) {
        return 0;
    }
    lab_worker_close(w);
    w->redis = redisConnectWithTimeout(env->redis_host, env->redis_port, tv);
    if (w->redis == NULL || w->redis->err != 0) {
        snprintf(w->err, sizeof(w->err), "redis connect: %s",
                 w->redis != NULL ? w->redis->errstr : "out of memory");
        lab_worker_close(w);
        return -1;
    }
    redisSetTimeout(w->redis, tv);
    return 0;
}

/* Gives back keys[0..n-1]: GET then DEL when it still reads our value, or the Lua
 * compare-and-delete. */
static void
lab_redis_unlock(const lab_env_t *env, lab_worker_t *w, const lab_locks_t *l, int n)
{
    redisReply *r;

    for (int i = n - 1; i >= 0 && w->redis != NULL; i--) {
        if (env->strategy == LAB_REDIS_LUA) {
            r = redisCommand(w->redis, "EVAL %s 1 %s %s", lab_redis_unlock_lua, l->keys[i],
                             l->token);
            freeReplyObject(r);
            continue;
        }
        r = redisCommand(w->redis, "GET %s", l->keys[i]);
        bool ours = r != NULL && r->type == REDIS_REPLY_STRING && strcmp(r->str, l->token) == 0;
        freeReplyObject(r);
        if (ours) {
            /* Our lease may run out right here; the DEL then frees someone else's lock. */
            freeReplyObject(redisCommand(w->redis, "DEL %s", l->keys[i]));
        }
    }
}

/*
 * SET key token NX PX lease on every key in ascending order, spinning 10 to
 * 30 ms between attempts until env->wait_ms has passed (the spin lock most
 * write-ups build). Returns LAB_OK, LAB_LOCK_TIMEOUT or LAB_ERROR.
 */
static lab_outcome_t
lab_redis_lock(const lab_env_t *env, lab_worker_t *w, lab_locks_t *l)
{
    int64_t deadline = lab_now_ms() + env->wait_ms;
    redisReply *r;

    deadline = deadline < env->deadline_ms ? deadline : env->deadline_ms;

    if (lab_redis_connect(env, w) != 0) {
        return LAB_ERROR;
    }
    snprintf(l->token, sizeof(l->token), "%08x%08x", (unsigned)rand_r(&w->rng),
             (unsigned)rand_r(&w->rng));
    for (int i = 0; i < l->n; i++) {
        for (;;) {
            r = redisCommand(w->redis, "SET %s %s NX PX %lld", l->keys[i], l->token,
                             (long long)env->lease_ms);
            if (r == NULL || r->type == REDIS_REPLY_ERROR) {
                snprintf(w->err, sizeof(w->err), "redis: %s",
                         r != NULL ? r->str : w->redis->errstr);
                freeReplyObject(r);
                lab_redis_unlock(env, w, l, i);
                lab_worker_close(w);
                return LAB_ERROR;
            }
            bool got = r->type == REDIS_REPLY_STATUS;
            freeReplyObject(r);
            if (got) {
                break;
            }
            w->retries++;
            if (lab_now_ms() >= deadline) {
                lab_redis_unlock(env, w, l, i);
                return LAB_LOCK_TIMEOUT;
            }
            lab_sleep_ms(10 + rand_r(&w->rng) % 21);
        }
    }
    return LAB_OK;
}

/* Takes the external locks of env->strategy (if any) on l->keys. */
static lab_outcome_t
lab_lock(const lab_env_t *env, lab_worker_t *w, lab_locks_t *l)
{
    const char *keys[LAB_KEYS_MAX];
    svc_lock_opts_t opts = {.owner = "lab",
                            .lease_ms = env->lease_ms,
                            .wait_ms = env->wait_ms,
                            .deadline_ms = env->deadline_ms};
    svc_err_t err;

    if (lab_uses_redis(env->strategy)) {
        return lab_redis_lock(env, w, l);
    }
    if (!lab_uses_locksvc(env->strategy)) {
        return LAB_OK;
    }
    for (int i = 0; i < l->n; i++) {
        keys[i] = l->keys[i];
    }
    if (svc_lock_acquire_many(env->lock_svc, keys, l->n, &opts, l->svc, NULL, &err) == 0) {
        return LAB_OK;
    }
    if (err.code == SVC_ABORTED) {
        return LAB_LOCK_TIMEOUT;
    }
    if (err.code == SVC_DEADLINE_EXCEEDED) {
        return LAB_TIMEOUT;
    }
    snprintf(w->err, sizeof(w->err), "lock-svc: %.140s", err.msg);
    return LAB_ERROR;
}

static void
lab_unlock(const lab_env_t *env, lab_worker_t *w, lab_locks_t *l)
{
    if (lab_uses_redis(env->strategy)) {
        lab_redis_unlock(env, w, l, l->n);
    } else if (lab_uses_locksvc(env->strategy)) {
        svc_lock_release_many(env->lock_svc, l->svc, l->n, NULL);
    }
}

/* ---------- SQL helpers ---------- */

/* What a failed statement means for the operation, counting deadlocks and serialization failures.
 */
static lab_outcome_t
lab_sql_outcome(const lab_env_t *env, lab_worker_t *w, PGconn *c, const PGresult *res)
{
    const char *state = svc_pg_sqlstate(res);

    if (strcmp(state, "40P01") == 0) {
        w->sqlstate_40p01++;
        return LAB_DEADLOCK;
    }
    if (strcmp(state, "40001") == 0) {
        w->sqlstate_40001++;
        return LAB_SERIALIZATION;
    }
    if (strcmp(state, "23505") == 0 || strcmp(state, "23514") == 0) {
        return LAB_CONSTRAINT; /* unique_violation, check_violation */
    }
    if (strcmp(state, "57014") == 0) { /* statement_timeout */
        return LAB_TIMEOUT;
    }
    if (strcmp(state, "55P03") == 0) { /* NOWAIT, or lock_timeout on a row or advisory lock */
        return env->strategy == LAB_NOWAIT ? LAB_BUSY : LAB_LOCK_TIMEOUT;
    }
    snprintf(w->err, sizeof(w->err), "%s %.140s", state,
             res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(c));
    w->err[strcspn(w->err, "\n")] = '\0';
    return LAB_ERROR;
}

/*
 * Runs sql; NULL with *out set when its status is not want. The caller
 * clears the result.
 */
static PGresult *
lab_sql(const lab_env_t *env, lab_worker_t *w, PGconn *c, const char *sql, int n,
        const char *const *params, ExecStatusType want, lab_outcome_t *out)
{
    PGresult *res = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);

    if (res != NULL && PQresultStatus(res) == want) {
        return res;
    }
    *out = lab_sql_outcome(env, w, c, res);
    PQclear(res);
    return NULL;
}

/* A statement whose result does not matter beyond success. */
static int
lab_sql_do(const lab_env_t *env, lab_worker_t *w, PGconn *c, const char *sql, int n,
           const char *const *params, ExecStatusType want, lab_outcome_t *out)
{
    PGresult *res = lab_sql(env, w, c, sql, n, params, want, out);

    PQclear(res);
    return res != NULL ? 0 : -1;
}

/* The row lock clause a strategy reads with. */
static const char *
lab_read_clause(lab_strategy_t s)
{
    switch (s) {
    case LAB_FOR_UPDATE:
    case LAB_OURS:
        return " FOR UPDATE";
    case LAB_NOWAIT:
        return " FOR UPDATE NOWAIT";
    case LAB_FOR_SHARE:
        return " FOR SHARE";
    default:
        return "";
    }
}

/* pg_advisory_xact_lock on each key, in the ascending order given. */
static int
lab_advisory(const lab_env_t *env, lab_worker_t *w, PGconn *c, const int64_t *keys, int n,
             lab_outcome_t *out)
{
    char k[24];
    const char *p[] = {k};

    for (int i = 0; i < n; i++) {
        snprintf(k, sizeof(k), "%" PRId64, keys[i]);
        if (lab_sql_do(env, w, c, "SELECT pg_advisory_xact_lock($1::bigint)", 1, p, PGRES_TUPLES_OK,
                       out) != 0) {
            return -1;
        }
    }
    return 0;
}

/*
 * Runs one attempt (BEGIN, fn, COMMIT) on a pool connection. fn returns
 * LAB_OK to commit; anything else rolls back and is the answer.
 */
typedef lab_outcome_t (*lab_tx_fn)(const lab_env_t *env, lab_worker_t *w, PGconn *c, void *arg);

static lab_outcome_t
lab_tx(const lab_env_t *env, lab_worker_t *w, lab_tx_fn fn, void *arg)
{
    svc_err_t err;
    lab_outcome_t out = LAB_OK;
    PGconn *c = svc_pg_acquire(env->pg, env->deadline_ms, &err);
    bool broken = false;

    if (c == NULL) {
        if (lab_now_ms() >= env->deadline_ms) {
            return LAB_TIMEOUT; /* every connection stayed busy until the cell's deadline */
        }
        snprintf(w->err, sizeof(w->err), "pool: %.140s", err.msg);
        return LAB_ERROR;
    }
    if (lab_sql_do(env, w, c, "BEGIN", 0, NULL, PGRES_COMMAND_OK, &out) == 0) {
        out = fn(env, w, c, arg);
        if (out == LAB_OK) {
            if (lab_sql_do(env, w, c, "COMMIT", 0, NULL, PGRES_COMMAND_OK, &out) != 0) {
                broken = true;
            }
        } else {
            PGresult *res = PQexec(c, "ROLLBACK");
            broken = PQresultStatus(res) != PGRES_COMMAND_OK;
            PQclear(res);
        }
    } else {
        broken = true;
    }
    svc_pg_release(env->pg, c, broken);
    return out;
}

/*
 * Runs fn under the strategy's external locks, re-running it on a version
 * conflict for optimistic+retry.
 */
static lab_outcome_t
lab_run(const lab_env_t *env, lab_worker_t *w, lab_locks_t *l, lab_tx_fn fn, void *arg)
{
    lab_outcome_t out = lab_lock(env, w, l);

    if (out != LAB_OK) {
        return out;
    }
    for (int attempt = 0;; attempt++) {
        out = lab_tx(env, w, fn, arg);
        if (out != LAB_CONFLICT || env->strategy != LAB_OPTIMISTIC_RETRY ||
            attempt + 1 >= LAB_RETRY_MAX) {
            break;
        }
        w->retries++;
    }
    lab_unlock(env, w, l);
    return out;
}

/* ---------- booking seats ---------- */

typedef struct {
    const lab_op_t *op;
    int64_t schedule;
    const int *numbers;
    int n;
    const lab_locks_t *locks;
} lab_book_t;

/* Marks the seats held by a new reservation; LAB_TAKEN or LAB_CONFLICT when they were not free. */
static lab_outcome_t
lab_book_write(const lab_env_t *env, lab_worker_t *w, PGconn *c, const lab_book_t *b,
               const int64_t *versions)
{
    char user[24], sched[24], expires[24], rid[24], numbers[64], number[16], v[24], fence[24];
    lab_outcome_t out = LAB_OK;
    PGresult *res;
    size_t len = 0;

    snprintf(user, sizeof(user), "%" PRId64, b->op->user_id);
    snprintf(sched, sizeof(sched), "%" PRId64, b->schedule);
    snprintf(expires, sizeof(expires), "%lld", LAB_HOLD_EXPIRES_MS);
    numbers[len++] = '{';
    for (int i = 0; i < b->n; i++) {
        len += (size_t)snprintf(numbers + len, sizeof(numbers) - len, "%s%d", i ? "," : "",
                                b->numbers[i]);
    }
    snprintf(numbers + len, sizeof(numbers) - len, "}");

    const char *pr[] = {user, sched, expires};
    res = lab_sql(env, w, c,
                  "INSERT INTO reservations (user_id, schedule_id, status, amount, expires_at_ms)"
                  " VALUES ($1, $2, 1, 0, $3) RETURNING id",
                  3, pr, PGRES_TUPLES_OK, &out);
    if (res == NULL) {
        return out;
    }
    snprintf(rid, sizeof(rid), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);

    if (env->strategy == LAB_CONDITIONAL) {
        /* The check is the write: only seats still free are taken, in one statement. */
        const char *p[] = {sched, numbers, rid, user, expires};
        res = lab_sql(env, w, c,
                      "UPDATE seats SET status = 2, hold_reservation_id = $3, hold_user_id = $4,"
                      " hold_expires_at_ms = $5 WHERE schedule_id = $1"
                      " AND number = ANY($2::int[]) AND status = 1",
                      5, p, PGRES_COMMAND_OK, &out);
        if (res == NULL) {
            return out;
        }
        out = atoi(PQcmdTuples(res)) == b->n ? LAB_OK : LAB_TAKEN;
        PQclear(res);
    } else {
        for (int i = 0; i < b->n; i++) {
            snprintf(number, sizeof(number), "%d", b->numbers[i]);
            snprintf(v, sizeof(v), "%" PRId64, versions[i]);
            snprintf(fence, sizeof(fence), "%" PRId64,
                     env->strategy == LAB_OURS ? b->locks->svc[i].fence : 0);
            bool optimistic =
                env->strategy == LAB_OPTIMISTIC || env->strategy == LAB_OPTIMISTIC_RETRY;
            /* $6: the version read (optimistic) or the fence to store (ours; 0 for the rest). */
            const char *p[] = {sched, number, rid, user, expires, optimistic ? v : fence};
            res = lab_sql(env, w, c,
                          optimistic
                              ? "UPDATE seats SET status = 2, hold_reservation_id = $3,"
                                " hold_user_id = $4, hold_expires_at_ms = $5, version = version + 1"
                                " WHERE schedule_id = $1 AND number = $2 AND version = $6"
                              : "UPDATE seats SET status = 2, hold_reservation_id = $3,"
                                " hold_user_id = $4, hold_expires_at_ms = $5,"
                                " last_fence = greatest(last_fence, $6), version = version + 1"
                                " WHERE schedule_id = $1 AND number = $2",
                          6, p, PGRES_COMMAND_OK, &out);
            if (res == NULL) {
                return out;
            }
            bool hit = atoi(PQcmdTuples(res)) == 1;
            PQclear(res);
            if (!hit) {
                return LAB_CONFLICT;
            }
        }
    }
    if (out != LAB_OK) {
        return out;
    }
    const char *ps[] = {rid, sched, numbers};
    return lab_sql_do(env, w, c,
                      "INSERT INTO reservation_seats (reservation_id, schedule_id, number)"
                      " SELECT $1, $2, unnest($3::int[])",
                      3, ps, PGRES_COMMAND_OK, &out) == 0
               ? LAB_OK
               : out;
}

static lab_outcome_t
lab_book_tx(const lab_env_t *env, lab_worker_t *w, PGconn *c, void *arg)
{
    const lab_book_t *b = arg;
    char sched[24], numbers[64], sql[256];
    int64_t versions[LAB_KEYS_MAX] = {0}, keys[LAB_KEYS_MAX];
    lab_outcome_t out = LAB_OK;
    size_t len = 0;
    PGresult *res;

    if (env->strategy == LAB_ADVISORY) {
        for (int i = 0; i < b->n; i++) {
            keys[i] = b->schedule * 100000 + b->numbers[i];
        }
        if (lab_advisory(env, w, c, keys, b->n, &out) != 0) {
            return out;
        }
    }
    if (env->strategy != LAB_CONDITIONAL) {
        snprintf(sched, sizeof(sched), "%" PRId64, b->schedule);
        numbers[len++] = '{';
        for (int i = 0; i < b->n; i++) {
            len += (size_t)snprintf(numbers + len, sizeof(numbers) - len, "%s%d", i ? "," : "",
                                    b->numbers[i]);
        }
        snprintf(numbers + len, sizeof(numbers) - len, "}");
        snprintf(sql, sizeof(sql),
                 "SELECT number, status, version, last_fence FROM seats WHERE schedule_id = $1"
                 " AND number = ANY($2::int[]) ORDER BY number%s",
                 lab_read_clause(env->strategy));
        const char *p[] = {sched, numbers};
        if ((res = lab_sql(env, w, c, sql, 2, p, PGRES_TUPLES_OK, &out)) == NULL) {
            return out;
        }
        out = PQntuples(res) == b->n ? LAB_OK : LAB_TAKEN;
        for (int i = 0; out == LAB_OK && i < b->n; i++) {
            if (svc_pg_i64(res, i, 1) != 1) {
                out = LAB_TAKEN;
            } else if (env->strategy == LAB_OURS &&
                       svc_pg_i64(res, i, 3) > b->locks->svc[i].fence) {
                out = LAB_FENCED; /* a newer holder wrote this seat: our lock was lost */
            }
            versions[i] = svc_pg_i64(res, i, 2);
        }
        PQclear(res);
        if (out != LAB_OK) {
            return out;
        }
    }
    lab_pause(b->op); /* checked, now stopped: a GC pause, a SIGSTOP, a slow disk */
    return lab_book_write(env, w, c, b, versions);
}

lab_outcome_t
lab_book(const lab_env_t *env, lab_worker_t *w, const lab_op_t *op, int64_t schedule,
         const int *numbers, int n)
{
    lab_locks_t l = {.n = n};
    lab_book_t b = {.op = op, .schedule = schedule, .numbers = numbers, .n = n, .locks = &l};

    for (int i = 0; i < n; i++) {
        snprintf(l.keys[i], sizeof(l.keys[i]), "lab:seat:%" PRId64 ":%d", schedule, numbers[i]);
    }
    return lab_run(env, w, &l, lab_book_tx, &b);
}

/* ---------- top-ups and spends of one account ---------- */

typedef struct {
    const lab_op_t *op;
    int64_t amount;
    const char *key;
    bool spend;
    const lab_locks_t *locks;
} lab_money_t;

/* The conditional UPDATE: the balance rule and the key check in the statement that writes. */
static lab_outcome_t
lab_money_conditional(const lab_env_t *env, lab_worker_t *w, PGconn *c, const lab_money_t *m,
                      int64_t *after)
{
    char user[24], amount[24];
    const char *p[] = {user, amount, m->key};
    lab_outcome_t out = LAB_OK;
    PGresult *res;

    snprintf(user, sizeof(user), "%" PRId64, m->op->user_id);
    snprintf(amount, sizeof(amount), "%" PRId64, m->amount);
    lab_pause(m->op);
    res = lab_sql(env, w, c,
                  m->spend ? "UPDATE accounts SET balance = balance - $2, updated_at = now()"
                             " WHERE user_id = $1 AND balance >= $2 AND NOT EXISTS (SELECT 1"
                             " FROM ledger WHERE user_id = $1 AND idempotency_key = $3)"
                             " RETURNING balance"
                           : "UPDATE accounts SET balance = balance + $2, updated_at = now()"
                             " WHERE user_id = $1 AND NOT EXISTS (SELECT 1 FROM ledger"
                             " WHERE user_id = $1 AND idempotency_key = $3) RETURNING balance",
                  3, p, PGRES_TUPLES_OK, &out);
    if (res == NULL) {
        return out;
    }
    out = PQntuples(res) == 1 ? LAB_OK : m->spend ? LAB_INSUFFICIENT : LAB_REPLAYED;
    *after = out == LAB_OK ? svc_pg_i64(res, 0, 0) : 0;
    PQclear(res);
    return out;
}

static lab_outcome_t
lab_money_tx(const lab_env_t *env, lab_worker_t *w, PGconn *c, void *arg)
{
    const lab_money_t *m = arg;
    char user[24], amount[24], sql[256], v[24], fence[24], nb[24], after_s[24];
    int64_t balance, version, after = 0, key = 1000000000000LL + m->op->user_id;
    lab_outcome_t out = LAB_OK;
    PGresult *res;

    snprintf(user, sizeof(user), "%" PRId64, m->op->user_id);
    snprintf(amount, sizeof(amount), "%" PRId64, m->amount);
    if (env->strategy == LAB_ADVISORY && lab_advisory(env, w, c, &key, 1, &out) != 0) {
        return out;
    }
    if (env->strategy == LAB_CONDITIONAL) {
        if ((out = lab_money_conditional(env, w, c, m, &after)) != LAB_OK) {
            return out;
        }
    } else {
        const char *pu[] = {user};
        snprintf(sql, sizeof(sql),
                 "SELECT balance, version, last_fence FROM accounts WHERE user_id = $1%s",
                 lab_read_clause(env->strategy));
        if ((res = lab_sql(env, w, c, sql, 1, pu, PGRES_TUPLES_OK, &out)) == NULL) {
            return out;
        }
        if (PQntuples(res) != 1) {
            PQclear(res);
            snprintf(w->err, sizeof(w->err), "no account %s", user);
            return LAB_ERROR;
        }
        balance = svc_pg_i64(res, 0, 0);
        version = svc_pg_i64(res, 0, 1);
        if (env->strategy == LAB_OURS && svc_pg_i64(res, 0, 2) > m->locks->svc[0].fence) {
            out = LAB_FENCED;
        }
        PQclear(res);
        if (out != LAB_OK) {
            return out;
        }
        const char *pk[] = {user, m->key};
        if ((res = lab_sql(env, w, c,
                           "SELECT 1 FROM ledger WHERE user_id = $1 AND idempotency_key = $2", 2,
                           pk, PGRES_TUPLES_OK, &out)) == NULL) {
            return out;
        }
        out = PQntuples(res) > 0 ? LAB_REPLAYED : LAB_OK;
        PQclear(res);
        if (out == LAB_OK && m->spend && balance < m->amount) {
            out = LAB_INSUFFICIENT;
        }
        if (out != LAB_OK) {
            return out;
        }
        lab_pause(m->op);
        bool optimistic = env->strategy == LAB_OPTIMISTIC || env->strategy == LAB_OPTIMISTIC_RETRY;
        after = m->spend ? balance - m->amount : balance + m->amount;
        snprintf(v, sizeof(v), "%" PRId64, version);
        snprintf(fence, sizeof(fence), "%" PRId64,
                 env->strategy == LAB_OURS ? m->locks->svc[0].fence : 0);
        snprintf(nb, sizeof(nb), "%" PRId64, after);
        /* A top-up writes back what it read plus the amount; a spend decrements in place. */
        const char *pw[] = {user, amount, nb, fence, optimistic ? v : "-1", m->spend ? "t" : "f"};
        if ((res = lab_sql(env, w, c,
                           "UPDATE accounts SET balance = CASE WHEN $6::boolean"
                           " THEN balance - $2::bigint ELSE $3::bigint END,"
                           " version = version + 1, last_fence = greatest(last_fence, $4),"
                           " updated_at = now() WHERE user_id = $1"
                           " AND ($5::bigint < 0 OR version = $5) RETURNING balance",
                           6, pw, PGRES_TUPLES_OK, &out)) == NULL) {
            return out;
        }
        out = PQntuples(res) == 1 ? LAB_OK : LAB_CONFLICT;
        after = out == LAB_OK ? svc_pg_i64(res, 0, 0) : 0;
        PQclear(res);
        if (out != LAB_OK) {
            return out;
        }
    }
    snprintf(after_s, sizeof(after_s), "%" PRId64, after);
    const char *pl[] = {user, m->spend ? "2" : "1", amount, after_s, m->key};
    return lab_sql_do(env, w, c,
                      "INSERT INTO ledger (user_id, kind, amount, balance_after, idempotency_key)"
                      " VALUES ($1, $2, $3, $4, $5)",
                      5, pl, PGRES_COMMAND_OK, &out) == 0
               ? LAB_OK
               : out;
}

static lab_outcome_t
lab_money(const lab_env_t *env, lab_worker_t *w, const lab_op_t *op, int64_t amount,
          const char *key, bool spend)
{
    lab_locks_t l = {.n = 1};
    lab_money_t m = {.op = op, .amount = amount, .key = key, .spend = spend, .locks = &l};

    snprintf(l.keys[0], sizeof(l.keys[0]), "lab:account:%" PRId64, op->user_id);
    return lab_run(env, w, &l, lab_money_tx, &m);
}

lab_outcome_t
lab_top_up(const lab_env_t *env, lab_worker_t *w, const lab_op_t *op, int64_t amount,
           const char *key)
{
    return lab_money(env, w, op, amount, key, false);
}

lab_outcome_t
lab_spend(const lab_env_t *env, lab_worker_t *w, const lab_op_t *op, int64_t amount,
          const char *key)
{
    return lab_money(env, w, op, amount, key, true);
}
