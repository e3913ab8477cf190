/*
 * balance_stack.h: the stack balance-svc's topic tests run against: a real
 * PostgreSQL, Redis and lock-svc, and balance-svc instances started from
 * their binaries on free ports, plus the database checks every test ends with.
 */
#ifndef BALANCE_STACK_H
#define BALANCE_STACK_H

#include <stdint.h>

#include "svc/client.h"
#include "testenv.h"

#define BALANCE_STACK_MAX 2

typedef struct {
    testenv_pg_t pg;
    testenv_redis_t redis;
    testenv_proc_t lock;
    testenv_proc_t inst[BALANCE_STACK_MAX];
    svc_client_t *client[BALANCE_STACK_MAX];
    int n;
} balance_stack_t;

/*
 * Starts PostgreSQL, Redis, lock-svc and n balance-svc instances; inst_env[i]
 * (may be NULL) is one more NAME=value for instance i. Returns 0 or -1.
 */
int balance_stack_start(balance_stack_t *s, const char *balance_path, const char *lock_path, int n,
                        const char *const *inst_env);
/* Stops everything; 0 when every service exited cleanly. */
int balance_stack_stop(balance_stack_t *s);

/* "<sql_up_to_id> <id>" as an integer, e.g. ("SELECT balance FROM accounts WHERE user_id =", u). */
int64_t balance_stack_query(balance_stack_t *s, const char *sql_up_to_id, int64_t id);

/*
 * Rows that break an invariant: accounts whose balance is not the sum of
 * their ledger (top-ups - spends + refunds), spends refunded beyond their
 * amount, captured authorizations without their spend. Must always be 0.
 */
int64_t balance_stack_broken(balance_stack_t *s);

#endif
