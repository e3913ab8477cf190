/*
 * lock_redis.h: one pipelined, non-blocking Redis connection with its own
 * I/O thread. Callers on any thread queue a command and get its reply in a
 * callback on that thread; many commands share each write and read, and no
 * caller's thread ever waits for Redis. Used by lock_store for lock-svc's
 * hot path.
 */
#ifndef LOCK_REDIS_H
#define LOCK_REDIS_H

#include <stdbool.h>

#include <hiredis/hiredis.h>

#include "svc/err.h"

typedef struct lock_redis lock_redis_t;

/* Where the master is: asked for each (re)connection, on the I/O thread; may block briefly. */
typedef int (*lock_redis_locate_fn)(void *arg, char *host, size_t host_len, int *port);

typedef struct {
    lock_redis_locate_fn locate;
    void *locate_arg;
    const char *password; /* "" for none */
    int db;
    int check_master;           /* ask ROLE first and drop a connection to a replica */
    const char *const *scripts; /* loaded on each connection; run by index */
    int n_scripts;
    int timeout_ms; /* a reply later than this drops the connection */
    /* Called on the I/O thread every 100 to 200 ms (may be NULL); must not block. */
    void (*tick)(void *arg);
    void *tick_arg;
} lock_redis_opts_t;

/*
 * The reply (NULL when Redis could not be reached, the connection broke, or
 * the reply took longer than the timeout) is freed after the callback
 * returns. lost is true when the reply is NULL but the command had been
 * handed to a connection: Redis may have run it (or may still run it, once
 * it reads what a stalled connection left behind). Runs on the I/O thread
 * (or, with reply NULL and lost false, on the caller's): must not block; may
 * queue more commands.
 */
typedef void (*lock_redis_cb)(redisReply *reply, bool lost, void *arg);

lock_redis_t *lock_redis_create(const lock_redis_opts_t *opts, svc_err_t *err);
/* Stops the thread; commands still queued get NULL. NULL is a no-op. */
void lock_redis_destroy(lock_redis_t *r);

/*
 * Queues script number `script` (EVALSHA, falling back to EVAL) with the
 * keys and args, which are copied. Never blocks. cb may be NULL.
 */
void lock_redis_script(lock_redis_t *r, int script, int n_keys, const char *const *keys, int n_args,
                       const char *const *args, lock_redis_cb cb, void *arg);

/* Queues a plain command (argv copied). cb may be NULL. */
void lock_redis_command(lock_redis_t *r, int argc, const char *const *argv, lock_redis_cb cb,
                        void *arg);

#endif
