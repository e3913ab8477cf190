/*
 * lab.h: the strategy lab. Eleven ways to keep concurrent writers apart (and
 * `none`) run against real PostgreSQL, Redis and lock-svc on our own schema;
 * the data is read afterwards for the anomalies each one lets through.
 * lab_ops.c holds the strategies (one booking, top-up or spend each),
 * lab_main.c the workloads, the checks and the report.
 */
#ifndef LAB_H
#define LAB_H

#include <stdbool.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "svc/client.h"
#include "svc/pg.h"

typedef enum {
    LAB_NONE,
    LAB_OPTIMISTIC,
    LAB_OPTIMISTIC_RETRY,
    LAB_FOR_UPDATE,
    LAB_NOWAIT,
    LAB_FOR_SHARE,
    LAB_CONDITIONAL,
    LAB_ADVISORY,
    LAB_REDIS_GETDEL,
    LAB_REDIS_LUA,
    LAB_LOCKSVC_TOKEN,
    LAB_OURS,
    LAB_N_STRATEGIES
} lab_strategy_t;

/* How one operation ended, as the client saw it. */
typedef enum {
    LAB_OK,
    LAB_REPLAYED,      /* the idempotency key was used already: nothing changed */
    LAB_TAKEN,         /* a seat is held */
    LAB_INSUFFICIENT,  /* not enough money */
    LAB_CONFLICT,      /* the version moved under us */
    LAB_BUSY,          /* NOWAIT found the row locked */
    LAB_LOCK_TIMEOUT,  /* a lock (row, advisory, Redis, lock-svc) stayed held past the wait */
    LAB_DEADLOCK,      /* SQLSTATE 40P01 */
    LAB_SERIALIZATION, /* SQLSTATE 40001 */
    LAB_FENCED,        /* a newer fence is in the row: our lock was lost */
    LAB_TIMEOUT,    /* statement_timeout, or the cell's deadline passed waiting for a connection */
    LAB_CONSTRAINT, /* our last net (--keep-constraints): a unique index or CHECK refused it */
    LAB_ERROR,      /* anything else (statement timeout, pool exhausted, Redis down) */
    LAB_N_OUTCOMES
} lab_outcome_t;

extern const char *const lab_strategy_names[LAB_N_STRATEGIES];
extern const char *const lab_outcome_names[LAB_N_OUTCOMES];

/* Where an operation runs and how long its locks last. Shared by all threads of a cell. */
typedef struct {
    lab_strategy_t strategy;
    svc_pg_pool_t *pg;
    svc_client_t *lock_svc;
    const char *redis_host;
    int redis_port;
    int64_t lease_ms;    /* Redis and lock-svc leases */
    int64_t wait_ms;     /* how long a lock is waited for (Redis spin, lock-svc) */
    int64_t deadline_ms; /* unix ms: no connection or lock is waited for past this */
} lab_env_t;

/* One thread's own things: its Redis connection (made on first use) and counters. */
typedef struct {
    redisContext *redis;
    unsigned rng;
    int64_t retries; /* optimistic re-runs and Redis SET NX attempts that failed */
    int64_t sqlstate_40p01, sqlstate_40001;
    int64_t lease_lost; /* this thread's write landed after its lease had run out */
    char err[160];      /* the last LAB_ERROR's reason */
} lab_worker_t;

/*
 * One operation. pause_ms > 0 makes this the paused holder: it stops for
 * that long between its check and its write (holding whatever it holds).
 */
typedef struct {
    int64_t pause_ms;
    volatile int *paused_flag; /* set to 1 as the pause begins (may be NULL) */
    int64_t user_id;
} lab_op_t;

/*
 * Books seats numbers[0..n-1] (ascending, 1..4) of schedule for op->user_id
 * with env->strategy. REQUIRES: a pool connection can be had.
 */
lab_outcome_t lab_book(const lab_env_t *env, lab_worker_t *w, const lab_op_t *op, int64_t schedule,
                       const int *numbers, int n);

/* Credits amount to account user_id once per key (a repeat answers LAB_REPLAYED). */
lab_outcome_t lab_top_up(const lab_env_t *env, lab_worker_t *w, const lab_op_t *op, int64_t amount,
                         const char *key);

/* Debits amount from account user_id unless that leaves it below 0 (LAB_INSUFFICIENT). */
lab_outcome_t lab_spend(const lab_env_t *env, lab_worker_t *w, const lab_op_t *op, int64_t amount,
                        const char *key);

/* Frees what w holds; w stays usable. */
void lab_worker_close(lab_worker_t *w);

int64_t lab_now_ms(void);

#endif
