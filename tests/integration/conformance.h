/*
 * conformance.h: the integration suite as a conformance suite. Scenarios run
 * against a deployment named by LOCK_ADDR, BALANCE_ADDR and RESERVATION_ADDR
 * (external mode), or against a stack of real processes the suite starts on
 * free ports (own mode). Every scenario tallies the answers its clients got,
 * then reads the databases to check the invariants; the runner prints one row
 * per scenario.
 */
#ifndef CONFORMANCE_H
#define CONFORMANCE_H

#include <linux/limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "invariants.h"
#include "svc/client.h"
#include "svc/err.h"
#include "svc/lock_client.h"
#include "testenv.h"

/* ------------------------------------------------------------- Targets */

/* Where a scenario sends its calls and where it reads the data back. */
typedef struct {
    char lock_addr[256], balance_addr[256], reservation_addr[256];
    char admin_token[128];
    char reservation_db[512], balance_db[512]; /* libpq conninfo or URL */
    char redis_host[128];
    int redis_port; /* 0: no direct Redis access (lock invariant not checked) */
} cf_targets_t;

/* ---------------------------------------------------------------- Tally */

#define CF_CODES 17
#define CF_TIMEOUT_MS 10000 /* every call's deadline unless said otherwise */
#define CF_HANG_SLACK_MS 3000

/* What clients saw during one scenario. Updated from many threads. */
typedef struct {
    atomic_long requests, ok, hangs;
    atomic_long by_code[CF_CODES];
    atomic_long violations;
} cf_tally_t;

/*
 * Counts one answer. A call that came back later than its deadline plus
 * CF_HANG_SLACK_MS counts as a hang, whatever it answered.
 */
void cf_record(cf_tally_t *t, svc_status_t code, int64_t elapsed_ms, int64_t deadline_ms);
/* Codes a client may get from a correct service: refusals, not faults. */
bool cf_is_refusal(svc_status_t code);
/* Answers that are faults: UNKNOWN, INTERNAL, ... and hangs. */
long cf_other_errors(const cf_tally_t *t);
/*
 * The verdict of a scenario that injects a fault (fault true) or none: a
 * refusal in a scenario without a fault excludes UNAVAILABLE, and cf_faults
 * counts UNAVAILABLE there with UNKNOWN, INTERNAL, ... and the hangs
 * (invariant 6 of README.md's "One outcome only": without a fault nothing answers UNAVAILABLE).
 */
bool cf_is_refusal_in(svc_status_t code, bool fault);
long cf_faults(const cf_tally_t *t, bool fault);
/* Records one broken invariant or scenario expectation, printing it. */
void cf_violation(cf_tally_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Adds the violations an inv_check_* returned (-1: could not check, counts as one). */
void cf_add_check(cf_tally_t *t, const char *what, int64_t found);

/* ------------------------------------------------------ What was acknowledged */

/* Answers the suite got OK and must find in the data afterwards. Thread-safe. */
typedef struct {
    pthread_mutex_t mu;
    inv_ack_t *ledger; /* TopUp / Spend answered OK */
    int n_ledger, cap_ledger;
    int64_t *held, *paid; /* reservation ids: HoldSeats / PayReservation answered OK */
    int n_held, cap_held, n_paid, cap_paid;
} cf_acks_t;

void cf_acks_init(cf_acks_t *a);
void cf_acks_free(cf_acks_t *a);
void cf_ack_ledger(cf_acks_t *a, int64_t user_id, const char *key, int64_t transaction_id);
void cf_ack_held(cf_acks_t *a, int64_t reservation_id);
void cf_ack_paid(cf_acks_t *a, int64_t reservation_id);

/*
 * Every invariant: seats, ledger, the acknowledged answers in acks (may be
 * NULL), and the locks in Redis when t->redis_port is set. Adds what it finds
 * to tally and prints each violation.
 */
void cf_check_invariants(cf_tally_t *tally, const cf_targets_t *t, cf_acks_t *acks);

/* ---------------------------------------------------------------- Calls */

/*
 * Typed calls that record their answer in tally (may be NULL) and return its
 * code. Outputs may be NULL. Each call's deadline is timeout_ms (0: CF_TIMEOUT_MS).
 */
svc_status_t cf_topup(svc_client_t *c, cf_tally_t *t, int64_t user, int64_t amount, const char *key,
                      int64_t *txn_id, int64_t *balance);
svc_status_t cf_spend(svc_client_t *c, cf_tally_t *t, int64_t user, int64_t amount, const char *key,
                      int64_t *txn_id, int64_t *balance);
svc_status_t cf_get_balance(svc_client_t *c, cf_tally_t *t, int64_t user, int64_t *balance);
svc_status_t cf_hold(svc_client_t *c, cf_tally_t *t, int64_t user, int64_t schedule,
                     const int32_t *seats, int n, int64_t timeout_ms, int64_t *reservation_id);
svc_status_t cf_pay(svc_client_t *c, cf_tally_t *t, int64_t reservation, int64_t user,
                    const char *key, int64_t timeout_ms, int64_t *payment_id);
svc_status_t cf_cancel(svc_client_t *c, cf_tally_t *t, int64_t reservation, int64_t user);
svc_status_t cf_lock_acquire(svc_client_t *c, cf_tally_t *t, const char *key, int64_t lease_ms,
                             int64_t wait_ms, svc_lock_t *out);
svc_status_t cf_lock_release(svc_client_t *c, cf_tally_t *t, const svc_lock_t *lock);

/* Any other call, recorded like the typed ones; *resp lives in arena. */
svc_status_t cf_call(svc_client_t *c, cf_tally_t *t, const char *method,
                     const ProtobufCMessage *req, const ProtobufCMessageDescriptor *desc,
                     svc_arena_t *arena, ProtobufCMessage **resp);

/* A concert of one schedule with seats seats at price; returns the schedule id, or -1. */
int64_t cf_new_schedule(svc_client_t *c, const char *admin_token, const char *title, int seats,
                        int64_t price);
/* The same with a waiting room of room_limit (0: none) and its admission TTL (0: default). */
int64_t cf_new_room_schedule(svc_client_t *c, const char *admin_token, const char *title, int seats,
                             int64_t price, int32_t room_limit, int64_t admission_ttl_ms);
/* The shared client for addr; NULL (printed) when addr is not a valid target. */
svc_client_t *cf_client(const char *addr);

/* ---------------------------------------------------------------- Stack */

typedef struct cf_ctx cf_ctx_t;

#define CF_MAX_INSTANCES 2
#define CF_MAX_EXTRA_ENV 6

/* What an own stack is made of. Zero means the defaults in brackets. */
typedef struct {
    int n_lock;        /* lock-svc instances [1] */
    int n_balance;     /* balance-svc instances [1] */
    int n_reservation; /* reservation-svc instances [1] */
    /* Extra NAME=value settings for every instance of a service; NULL-terminated. */
    const char *lock_env[CF_MAX_EXTRA_ENV];
    const char *reservation_env[CF_MAX_EXTRA_ENV];
    /* Extra settings for reservation-svc instance 0 only (a failpoint, say). */
    const char *first_reservation_env[CF_MAX_EXTRA_ENV];
    /* A REDIS_URL for lock-svc (Sentinel, say): no Redis of the stack's own. */
    const char *redis_url;
} cf_stack_opts_t;

typedef struct {
    testenv_pg_t pg;         /* database "reservation" */
    testenv_pg_t pg_balance; /* the same server, database "balance" */
    testenv_redis_t redis;   /* unused when opts.redis_url was given */
    testenv_proc_t lock[CF_MAX_INSTANCES], balance[CF_MAX_INSTANCES], reservation[CF_MAX_INSTANCES];
    int n_lock, n_balance, n_reservation;
    cf_targets_t targets; /* addresses list every instance, round robin */
} cf_stack_t;

/* Starts PostgreSQL, Redis and the services; 0, or -1 after saying why. */
int cf_stack_start(cf_ctx_t *ctx, cf_stack_t *s, const cf_stack_opts_t *opts);
/* Stops all of it; -1 when a service exited badly (a sanitizer report, say). */
int cf_stack_stop(cf_stack_t *s);

/* ------------------------------------------------------------- Scenarios */

typedef struct {
    const char *name;  /* the CTest label too */
    const char *title; /* one line for the table's legend */
    bool fault;        /* needs an own stack: injects faults into its processes */
    int (*run)(cf_ctx_t *ctx, cf_tally_t *t);
    /* Its faults are planned (a rolling restart): clients must still see no UNAVAILABLE. */
    bool planned;
} cf_scenario_t;

struct cf_ctx {
    char lock_bin[PATH_MAX], balance_bin[PATH_MAX], reservation_bin[PATH_MAX];
    bool external; /* targets came from the environment */
    bool quick;    /* smaller storms */
    /* --seed, --seconds: a random scenario's seed (if seed_set) and length (0: default). */
    uint64_t seed;
    bool seed_set;
    int seconds;
    /* The shared targets for scenarios that inject no fault (see cf_targets). */
    cf_targets_t targets;
    cf_stack_t *shared;
};

/*
 * The targets a non-fault scenario uses: the deployment's in external mode,
 * else a stack started on first use and shared by such scenarios.
 */
const cf_targets_t *cf_targets(cf_ctx_t *ctx);
/* A user id no other run and no demo data uses (random 10^12 range, then counting). */
int64_t cf_new_user(void);
/*
 * A new user with a balance account (a top-up of 1): HoldSeats refuses users
 * without one. Returns the user id, or 0 (printed) when the top-up failed.
 */
int64_t cf_new_account(svc_client_t *balance);
/* A fresh unique string (idempotency keys): prefix-<run>-<n>. */
void cf_unique(char *buf, size_t len, const char *prefix);
/* Runs fn(arg_i) on n threads (small stacks) and joins them. */
void cf_parallel(int n, void *(*fn)(void *), void *args, size_t arg_size);

/* The scenarios, in the order the table lists them. */
extern const cf_scenario_t cf_scenarios[];
extern const int cf_n_scenarios;

/* sc_basic.c: no fault injected; these also run against a deployment. */
int sc_seat_storm(cf_ctx_t *ctx, cf_tally_t *t);
int sc_balance_storm(cf_ctx_t *ctx, cf_tally_t *t);
int sc_double_pay(cf_ctx_t *ctx, cf_tally_t *t);
int sc_lock_storm(cf_ctx_t *ctx, cf_tally_t *t);
/* sc_data_faults.c */
int sc_redis_kill(cf_ctx_t *ctx, cf_tally_t *t);
int sc_pg_restart(cf_ctx_t *ctx, cf_tally_t *t);
int sc_reservation_kill(cf_ctx_t *ctx, cf_tally_t *t);
/* sc_lock_faults.c */
int sc_paused_holder(cf_ctx_t *ctx, cf_tally_t *t);
int sc_lock_svc_kill(cf_ctx_t *ctx, cf_tally_t *t);
/* sc_sentinel.c */
int sc_sentinel_failover(cf_ctx_t *ctx, cf_tally_t *t);
/* sc_interleavings.c */
int sc_interleavings(cf_ctx_t *ctx, cf_tally_t *t);
/* sc_waiting_room.c */
int sc_waiting_room(cf_ctx_t *ctx, cf_tally_t *t);
/* sc_rolling_restart.c */
int sc_rolling_restart(cf_ctx_t *ctx, cf_tally_t *t);

#endif
