/*
 * lock_raw.h: lock-bench's raw baseline: lock-svc's acquire and release Lua
 * scripts (a copy, checked against what lock-svc loaded) run over one
 * blocking hiredis connection per caller, with no lock-svc in between.
 */
#ifndef LOCK_RAW_H
#define LOCK_RAW_H

#include <stdbool.h>
#include <stdint.h>

#include "svc/err.h"

#define LOCK_RAW_TOKEN_LEN 32

typedef struct lock_raw lock_raw_t;

/* url: "redis://[:password@]host:port[/db]". Connects and loads the two scripts. */
lock_raw_t *lock_raw_connect(const char *url, svc_err_t *err);
/* NULL is a no-op. */
void lock_raw_close(lock_raw_t *c);

/*
 * lock-svc's acquire with wait_ms 0: 1 granted (*fence set), 0 held, -1 on
 * error (err set: UNAVAILABLE).
 */
int lock_raw_acquire(lock_raw_t *c, const char *key, const char *token, const char *owner,
                     int64_t lease_ms, int64_t *fence, svc_err_t *err);
/* lock-svc's release: 0 released, -1 on error (NOT_FOUND, FAILED_PRECONDITION, UNAVAILABLE). */
int lock_raw_release(lock_raw_t *c, const char *key, const char *token, svc_err_t *err);

/*
 * Whether Redis already has both scripts, by their SHA-1: 1 when lock-svc
 * loaded the very same texts, 0 when not, -1 on error. Ask before any
 * lock_raw_connect loaded them.
 */
int lock_raw_same_as_loaded(const char *url, svc_err_t *err);

/* LOCK_RAW_TOKEN_LEN random hex characters and a NUL. */
void lock_raw_new_token(char *buf);

#endif
