/*
 * sem_test.h: what lock-svc's semaphore tests share: two lock-svc instances
 * on one real Redis started in a temp dir, typed calls of the semaphore
 * methods, Redis read directly, the replay of a semaphore's events that
 * checks FIFO admission and the limit, and a storm of fans.
 */
#ifndef SEM_TEST_H
#define SEM_TEST_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "svc/client.h"
#include "testenv.h"

extern const char *lock_svc_path; /* argv[1] */
extern testenv_redis_t redis;
extern testenv_proc_t inst[2];
extern svc_client_t *client[2];

typedef struct {
    char ticket[65];
    int64_t seq;
    int position;
    int64_t expires_at_ms;
    char version[48];
} ticket_t;

/* EnterSemaphore on instance i; 0 or -1 with err. */
int enter(int i, const char *name, const char *owner, int limit, int64_t lease_ms, int64_t ttl_ms,
          ticket_t *out, svc_err_t *err);
int leave(int i, const char *name, const char *ticket, svc_err_t *err);
int extend(int i, const char *name, const char *ticket, int64_t lease_ms, int *position,
           int64_t *expires, svc_err_t *err);

typedef struct {
    int limit, holders, waiting, position;
    int64_t expires_at_ms;
} sem_info_t;

/* GetSemaphore (ticket NULL: none). */
int get(int i, const char *name, const char *ticket, sem_info_t *out, svc_err_t *err);
/* The ticket's position, -1 when it is gone (NOT_FOUND); fails the test on anything else. */
int position_of(int i, const char *name, const char *ticket);

/* Redis, read directly: reading settles nothing. */
redisContext *redis_connect(void);
bool redis_holds(redisContext *c, const char *name, const char *ticket);
long long redis_holders(redisContext *c, const char *name);

/*
 * A semaphore's events, replayed: every admit takes the lowest seq waiting
 * (nobody overtaken), and never more than limit hold at once.
 */
typedef struct {
    int limit;
    int64_t waiting[4096];
    int n_waiting, holders, enters, admits, gone;
} replay_t;

void replay_apply(replay_t *rp, const char *kind, int64_t seq);
/* Replays name's log in Redis (see replay_t); every ticket entered; returns the admits. */
int replay_log(const char *name, int limit, int entered);

enum { STORM_LIMIT = 3, STORM_FANS = 40 };

/* STORM_FANS fans enter name across both instances, hold a permit 10 ms each, and leave. */
void run_storm(const char *name);

/* Waits for one asynchronous svc_sem_* call. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    svc_err_t err;
} waiter_t;

void waiter_done(const svc_err_t *err, void *arg);
svc_err_t waiter_wait(waiter_t *w);

/* The group's set-up: Redis and two lock-svc instances; teardown checks they stop cleanly. */
int sem_test_setup(void **state);
int sem_test_teardown(void **state);

#endif
