/*
 * balance_stack.h: what balance-svc's integration tests share: the stack they
 * run against (a real PostgreSQL, Redis and lock-svc, and balance-svc
 * instances started from their binaries on free ports), the one typed client
 * they call it with (svc/balance_client.h, plus what it lacks), and the checks
 * read straight from the database. Functions that take no svc_err_t fail the
 * running cmocka test themselves when something is wrong.
 *
 * A test program hands its tests and a balance_stack_config_t to
 * balance_stack_main(), which starts the stack before the first test and
 * stops it after the last.
 */
#ifndef BALANCE_STACK_H
#define BALANCE_STACK_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "balance/v1/balance.pb-c.h"
#include "svc/arena.h"
#include "svc/balance_client.h"
#include "svc/client.h"
#include "svc/err.h"
#include "testenv.h"

#define BALANCE_STACK_MAX 2

/* balance-svc's ledger kinds (balance.v1.TransactionKind), as stored in ledger.kind. */
#define BALANCE_LEDGER_TOP_UP 1
#define BALANCE_LEDGER_SPEND 2
#define BALANCE_LEDGER_REFUND 3

/* ---------- the stack ---------- */

typedef struct {
    int instances; /* balance-svc instances, 1..BALANCE_STACK_MAX */
    /*
     * More NAME=value for every balance-svc instance (SWEEP_INTERVAL_MS,
     * LOCK_WAIT_MS, LOG_LEVEL=debug...) and for lock-svc; NULL-terminated, may
     * be NULL. They come before the stack's own settings, so they win.
     */
    const char *const *balance_env;
    const char *const *lock_env;
} balance_stack_config_t;

typedef struct {
    const char *balance_path, *lock_path;
    testenv_pg_t pg;
    testenv_redis_t redis;
    testenv_proc_t lock;
    svc_client_t *lock_client;
    testenv_proc_t inst[BALANCE_STACK_MAX];
    svc_client_t *client[BALANCE_STACK_MAX];
    int n;
    const balance_stack_config_t *config;
} balance_stack_t;

/*
 * The whole of a test program's main: reads argv (balance-svc, lock-svc),
 * then runs the n tests between balance_stack_start and balance_stack_stop
 * of s with config. Returns what main returns: 0 when every test passed and
 * every service exited cleanly, 2 on a usage error.
 */
int balance_stack_main(balance_stack_t *s, const balance_stack_config_t *config, int argc,
                       char **argv, const struct CMUnitTest *tests, size_t n);

/*
 * Starts PostgreSQL, Redis, lock-svc and s->config->instances balance-svc
 * instances, with a client for each. REQUIRES: s zeroed but for its paths
 * and config. Returns 0 or -1.
 */
int balance_stack_start(balance_stack_t *s);
/* Stops everything; 0 when every service exited cleanly (no sanitizer report). */
int balance_stack_stop(balance_stack_t *s);
/*
 * One more balance-svc on the stack's database and lock-svc, with env
 * (NULL-terminated, may be NULL) before the stack's settings; the caller
 * stops it. REQUIRES: p zeroed. Returns 0 or -1.
 */
int balance_stack_start_instance(balance_stack_t *s, testenv_proc_t *p, const char *const *env);

/* ---------- calls ---------- */

/* A user id nobody in this test program has used yet. */
int64_t balance_stack_new_user(void);
/* A top-up through client[0] that must succeed; what it answered. */
svc_balance_result_t balance_stack_top_up(balance_stack_t *s, int64_t user, int64_t amount,
                                          const char *key);
/* A new account holding amount (topped up with key "fund"). */
int64_t balance_stack_funded_user(balance_stack_t *s, int64_t amount);

/*
 * One top-up or spend (reference "test") to run here or on a thread of its
 * own, its outcome kept beside it.
 */
typedef struct {
    svc_client_t *client;
    int kind; /* BALANCE_LEDGER_TOP_UP or BALANCE_LEDGER_SPEND */
    int64_t user, amount;
    char key[160];
    svc_call_opts_t opts;
    int rc;
    svc_err_t err;
    svc_balance_result_t res;
} balance_stack_op_t;

/* An op through c with timeout_ms (0: the client's 10 s); key is copied. */
balance_stack_op_t balance_stack_op(svc_client_t *c, int kind, int64_t user, int64_t amount,
                                    const char *key, int64_t timeout_ms);
/* Makes the call and fills op->rc, and op->res or op->err. */
void balance_stack_op_run(balance_stack_op_t *op);
/* balance_stack_op_run for pthread_create; arg is a balance_stack_op_t. */
void *balance_stack_op_thread(void *arg);

/*
 * ListTransactions (the typed client has no history call): one page of
 * user's ledger through c, newest first, allocated in arena. page_token may
 * be NULL. Returns 0, or -1 with err.
 */
int balance_stack_list(svc_client_t *c, svc_arena_t *arena, int64_t user, int32_t page_size,
                       const char *page_token, Balance__V1__ListTransactionsResponse **page,
                       svc_err_t *err);

/* Fails the running test unless the call named what returned rc 0; then *res. */
svc_balance_result_t balance_expect_ok(const char *what, int rc, const svc_balance_result_t *res,
                                       const svc_err_t *err);
/* Fails the running test unless the call named what failed with code. */
void balance_expect_code(const char *what, int rc, const svc_err_t *err, svc_status_t code);

/*
 * For a scope with `int rc; svc_balance_result_t res; svc_err_t err;` whose
 * calls write &res and &err: BALANCE_OK(call) fails the test unless call
 * succeeded and is then what it answered; BALANCE_EXPECT(code, call) fails it
 * unless call failed with code.
 */
#define BALANCE_OK(call) (rc = (call), balance_expect_ok(#call, rc, &res, &err))
#define BALANCE_EXPECT(code, call) (rc = (call), balance_expect_code(#call, rc, &err, (code)))

/* ---------- checks ---------- */

/* "<sql_up_to_id> <id>" as an integer, e.g. ("SELECT balance FROM accounts WHERE user_id =", u). */
int64_t balance_stack_query(balance_stack_t *s, const char *sql_up_to_id, int64_t id);
/* The balance stored in user's account row. */
int64_t balance_stack_stored_balance(balance_stack_t *s, int64_t user);

/*
 * Rows that break an invariant: accounts whose balance is not the sum of
 * their ledger (top-ups - spends + refunds), spends refunded beyond their
 * amount, captured authorizations without their spend. Must always be 0.
 */
int64_t balance_stack_broken(balance_stack_t *s);

/* Whether the log of p (a service of the stack) holds needle. */
bool balance_stack_log_contains(const testenv_proc_t *p, const char *needle);

#endif
