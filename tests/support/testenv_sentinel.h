/*
 * testenv_sentinel.h: a Redis Sentinel deployment for a test, all from
 * Debian's binaries: a primary, one replica following it, and three
 * redis-sentinel processes watching them (quorum 2), each in its own temp dir
 * on a free loopback port. Tuned so that a failover after the primary dies
 * completes within a few seconds. Same conventions as testenv.h: zero the
 * struct before _start; functions return 0, or -1 after saying why.
 */
#ifndef TESTENV_SENTINEL_H
#define TESTENV_SENTINEL_H

#include <stddef.h>
#include <sys/types.h>

#include "testenv.h"

#define TESTENV_SENTINELS 3
#define TESTENV_SENTINEL_MASTER "mymaster" /* the name the Sentinels monitor */

typedef struct {
    pid_t pid; /* 0 while it does not run */
    int port;
    char dir[PATH_MAX]; /* sentinel.conf (rewritten by the Sentinel) and sentinel.log */
} testenv_sentinel_proc_t;

typedef struct {
    /* [0] is the first primary, [1] its replica; either may be primary later. */
    testenv_redis_t redis[2];
    testenv_sentinel_proc_t sentinel[TESTENV_SENTINELS];
    int down_after_ms;       /* 0 before start: 1000 */
    int failover_timeout_ms; /* 0 before start: 4000 */
} testenv_sentinel_t;

/*
 * Starts the primary and the replica (testenv_redis_start), makes the replica
 * follow the primary and waits for the link, then starts the three Sentinels
 * and waits up to 30 s until each of them knows the replica and the other two
 * Sentinels (SENTINEL CKQUORUM), so that a failover can be authorised from
 * the first second on. On failure everything started so far is stopped.
 * REQUIRES: s zeroed except perhaps the two timings.
 */
int testenv_sentinel_start(testenv_sentinel_t *s);

/*
 * The primary's port as the running Sentinels name it, when all that answer
 * agree and at least a majority of the three answer; else -1 (a failover in
 * progress, say).
 */
int testenv_sentinel_master_port(const testenv_sentinel_t *s);

/*
 * Waits up to timeout_ms until the Sentinels agree (as above) on a primary
 * other than old_port and that server says ROLE master. Returns its port, or
 * -1 when that did not happen in time.
 */
int testenv_sentinel_wait_failover(const testenv_sentinel_t *s, int old_port, int timeout_ms);

/* The server of the deployment on port (to kill it, say); NULL if none. */
testenv_redis_t *testenv_sentinel_redis(testenv_sentinel_t *s, int port);

/*
 * "redis-sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/mymaster", the
 * REDIS_URL form lock-svc accepts; -1 when len is too small.
 */
int testenv_sentinel_url(const testenv_sentinel_t *s, char *buf, size_t len);

/*
 * SIGTERM to the Sentinels first (so that none reconfigures a server going
 * away), then stops both Redis servers (a killed one only loses its dir).
 * Removes the temp dirs; safe on a partly started deployment.
 */
int testenv_sentinel_stop(testenv_sentinel_t *s);

#endif
