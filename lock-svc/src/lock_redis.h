/*
 * lock_redis.h: lock-svc's pipelined Redis connections ("lanes"). Each lane
 * is one non-blocking connection with its own I/O thread: callers on any
 * thread write their command straight into the lane's socket (no hand-off to
 * another thread; while the lane's thread answers replies, it writes what
 * was queued after them), the lane's thread reads the replies and runs their
 * callbacks. Replies come back in order per lane, so commands sent to one
 * lane run in Redis in the order they were queued. Used by lock_store.
 */
#ifndef LOCK_REDIS_H
#define LOCK_REDIS_H

#include <stdbool.h>
#include <stddef.h>

#include <hiredis/hiredis.h>

#include "svc/err.h"

typedef struct lock_redis lock_redis_t;

/* Where the master is: asked for each (re)connection, on a lane's thread; may block briefly. */
typedef int (*lock_redis_locate_fn)(void *arg, char *host, size_t host_len, int *port);

typedef struct {
    lock_redis_locate_fn locate;
    const char *password; /* "" for none */
    int db;
    int check_master;           /* ask ROLE first and drop a connection to a replica */
    const char *const *scripts; /* loaded on each connection; run by index */
    int n_scripts;
    int lanes;      /* connections, one thread each; at least 1 */
    int timeout_ms; /* a reply later than this drops the connection */
    /* Called on each lane's thread every 100 to 200 ms (may be NULL); must not block. */
    void (*tick)(void *arg, int lane);
    /* Called on a lane's thread once its connection is (re)established (may be NULL). */
    void (*on_up)(void *arg, int lane);
    void *arg; /* for locate, tick and on_up */
} lock_redis_opts_t;

/*
 * The reply (NULL when Redis could not be reached, the connection broke, or
 * the reply took longer than the timeout) is freed after the callback
 * returns. lost is true when the reply is NULL but the command had been
 * handed to a connection: Redis may have run it (or may still run it, once
 * it reads what a stalled connection left behind). Runs on the lane's thread
 * (or, with reply NULL and lost false, on the caller's): must not block; may
 * queue more commands.
 */
typedef void (*lock_redis_cb)(redisReply *reply, bool lost, void *arg);

/* Sets up opts->lanes lanes; nothing connects before lock_redis_start. */
lock_redis_t *lock_redis_create(const lock_redis_opts_t *opts, svc_err_t *err);
/*
 * Starts the lanes' threads; they connect at once and reconnect by
 * themselves, and call opts->on_up and opts->tick from now on. On failure the
 * lanes already started keep running until lock_redis_destroy.
 */
int lock_redis_start(lock_redis_t *r, svc_err_t *err);
/* Stops the threads; commands still queued get NULL. NULL is a no-op. */
void lock_redis_destroy(lock_redis_t *r);

int lock_redis_lanes(const lock_redis_t *r);

/*
 * Sends script number `script` (EVALSHA, falling back to EVAL after NOSCRIPT)
 * with the keys and args on lane `lane` (0 <= lane < lanes). Never blocks on
 * Redis. cb may be NULL.
 */
void lock_redis_script(lock_redis_t *r, int lane, int script, int n_keys, const char *const *keys,
                       int n_args, const char *const *args, lock_redis_cb cb, void *arg);

/* Sends a plain command on lane `lane`. cb may be NULL. */
void lock_redis_command(lock_redis_t *r, int lane, int argc, const char *const *argv,
                        lock_redis_cb cb, void *arg);

/* The SHA-1 of text as 40 lower-case hex characters and a NUL (what EVALSHA wants). */
void lock_redis_sha1_hex(const char *text, size_t len, char out[41]);

/*
 * url for a log line: a password in it ("redis://:secret@h:p", or a user
 * name alone, which Redis takes as the password) becomes "***". Written to
 * buf (len bytes); returns buf.
 */
char *lock_redis_url_redact(const char *url, char *buf, size_t len);

#endif
