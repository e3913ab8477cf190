/*
 * lock_store.h: lock-svc's Redis side. The only place with Redis commands:
 * the atomic Lua scripts (acquire, release, extend, promote, leave, inspect),
 * the line of waiters each key keeps in Redis, this instance's grant channel
 * and liveness key, and finding the master through Sentinel. Everything is
 * asynchronous: nothing here blocks the caller on Redis.
 */
#ifndef LOCK_STORE_H
#define LOCK_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "svc/err.h"

typedef struct lock_store lock_store_t;

#define LOCK_TOKEN_LEN 32 /* hex characters */
#define LOCK_OWNER_MAX 200
#define LOCK_KEY_MAX 200

/*
 * Something happened on a key that the waiters parked here must hear of.
 * Reported on a Redis thread or the subscriber's; the handler must not block.
 */
typedef enum {
    /* A script of ours handed the lock to the head of the line, a waiter
     * parked here: token holds it now with fence, for its whole lease. */
    LOCK_EV_HANDED_HERE,
    /* ... to a waiter parked on another instance. It holds the lock for px
     * ms until its instance confirms (px is shorter than its lease then). */
    LOCK_EV_HANDED_AWAY,
    /* Another instance handed the lock to token, parked here, for px ms: the
     * grant is confirmed with lock_store_acquire_async (same token) first
     * when px is shorter than the waiter's lease. */
    LOCK_EV_GRANT_MESSAGE,
    /* A script on key may have run without its answer reaching us. */
    LOCK_EV_LOST,
    /* Hand-offs may have been missed or lines lost (a connection or the
     * subscription was (re)established, or this instance was taken for
     * dead): every waiter parked here on a key of `lane` (-1: all lanes)
     * asks again (lock_store_acquire_async with its token). key is NULL. */
    LOCK_EV_RESYNC,
} lock_event_kind_t;

typedef struct {
    lock_event_kind_t kind;
    const char *key;
    const char *token;
    int64_t fence, px;
    int lane;
} lock_event_t;

typedef void (*lock_event_fn)(const lock_event_t *ev, void *arg);

/*
 * url: "redis://[:password@]host:port[/db]" or
 * "redis-sentinel://host1:port1,host2:port2/mastername". max_conns caps the
 * pipelined connections: one per CPU this process may run on, each with its
 * own thread (0: no cap). Nothing connects before lock_store_start.
 */
lock_store_t *lock_store_create(const char *url, int max_conns, svc_err_t *err);
/*
 * Starts the connections and the subscriber; they connect at once and
 * reconnect by themselves, so Redis need not be up yet. events (may be NULL)
 * gets the events above from now on. Calls are only made after this.
 */
int lock_store_start(lock_store_t *store, lock_event_fn events, void *events_arg, svc_err_t *err);
/* NULL is a no-op. Stops the subscriber and the Redis threads first. */
void lock_store_destroy(lock_store_t *store);

/* How many connections the store uses (or will, before start). */
int lock_store_lanes(const lock_store_t *store);

/* The connection ("lane") a key's commands go through, in order: 0 .. lanes - 1. */
int lock_store_lane(const lock_store_t *store, const char *key);

typedef enum {
    LOCK_REFUSED = 0, /* acquire: held (wait_ms 0) */
    LOCK_GRANTED = 1, /* acquire: token holds it; release/leave/promote: done */
    LOCK_QUEUED = 2,  /* acquire: held, token waits in the key's line */
    LOCK_HELD = 3,    /* promote: held (holder, holder_fence, holder_ms) */
} lock_outcome_t;

typedef struct {
    bool held;
    char owner[LOCK_OWNER_MAX + 1];
    int64_t fence;
    int64_t ttl_ms;
    int waiters; /* in the key's line on any live instance, not past their wait */
} lock_info_t;

/* What a call found; valid when its err is OK. */
typedef struct {
    lock_outcome_t outcome;
    int64_t fence;     /* acquire, granted: the fence */
    int64_t holder_ms; /* acquire refused or queued, promote held: the holder's lease left (ms) */
    char holder[LOCK_TOKEN_LEN + 1]; /* promote, held: the holder's token */
    int64_t holder_fence;
    lock_info_t info; /* lock_store_get_async */
} lock_store_result_t;

/*
 * Callbacks run on a Redis thread and must not block. Errors: UNAVAILABLE
 * (Redis unreachable, refusing, or later than 800 ms), NOT_FOUND (release or
 * extend of a lock not held), FAILED_PRECONDITION (another token holds it).
 */
typedef void (*lock_store_cb)(const lock_store_result_t *res, const svc_err_t *err, void *arg);

/*
 * Takes key for token when it is free and nobody live waits in its line;
 * else, with wait_ms > 0, puts token at the end of the line (for at most
 * wait_ms) and answers QUEUED, or with wait_ms 0 answers REFUSED. The line
 * goes first: a free lock with waiters in line is handed to the head. The
 * same token again is safe: holding, it gets GRANTED (and its whole lease
 * from now: this is how a hand-off from another instance is confirmed);
 * queued, QUEUED. A fence is max(last fence + 1, the wall clock in
 * microseconds), so it keeps growing even if Redis forgot the last one (every
 * script that grants does this). With orphan_if_lost, an answer
 * lost on the way makes the store take token out of the key again (lock or
 * line) once Redis answers.
 */
void lock_store_acquire_async(lock_store_t *store, const char *key, const char *token,
                              const char *owner, int64_t lease_ms, int64_t wait_ms,
                              bool orphan_if_lost, lock_store_cb cb, void *arg);
/* Compare-and-delete, and the lock goes to the head of the line in the same script. */
void lock_store_release_async(lock_store_t *store, const char *key, const char *token,
                              lock_store_cb cb, void *arg);
/* Compare-and-PEXPIRE. */
void lock_store_extend_async(lock_store_t *store, const char *key, const char *token,
                             int64_t lease_ms, lock_store_cb cb, void *arg);
/* The lock (without its token) and the live waiters in its line. */
void lock_store_get_async(lock_store_t *store, const char *key, lock_store_cb cb, void *arg);
/* A held lock: HELD and who holds it. A free one: handed to the head of the line, if any. */
void lock_store_promote_async(lock_store_t *store, const char *key, lock_store_cb cb, void *arg);
/*
 * token stops waiting: out of the line, and if it holds the lock (a hand-off
 * that came too late) the lock goes to the next in line. An answer lost on
 * the way is retried until Redis answers. cb may be NULL.
 */
void lock_store_leave_async(lock_store_t *store, const char *key, const char *token,
                            lock_store_cb cb, void *arg);

/*
 * For lock_sem_store: sends semaphore script i (0 .. LOCK_SEM_SCRIPTS - 1)
 * on lane; cb gets the raw reply on the lane's thread (see lock_redis_cb).
 */
struct redisReply;
void lock_store_sem_script(lock_store_t *store, int lane, int i, int n_keys,
                           const char *const *keys, int n_args, const char *const *args,
                           void (*cb)(struct redisReply *reply, bool lost, void *arg), void *arg);

/* For lock_sem's watch: sends a plain command on lane (cb as for lock_store_sem_script). */
void lock_store_command(lock_store_t *store, int lane, int argc, const char *const *argv,
                        void (*cb)(struct redisReply *reply, bool lost, void *arg), void *arg);

/*
 * For lock_sem's watch: a new blocking connection to the master (found as
 * the lanes find it; AUTH and SELECT done) whose replies may take up to
 * timeout_ms, or NULL. The caller frees it with redisFree. Blocks.
 */
struct redisContext;
struct redisContext *lock_store_connect(lock_store_t *store, int timeout_ms);

/* Fills buf with LOCK_TOKEN_LEN random hex characters and a NUL. */
void lock_store_new_token(char *buf);

#endif
