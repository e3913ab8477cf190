/*
 * reservation_admission.h: admission tokens of the waiting room. A token
 * says "user U may hold seats of schedule S until T (ticket K)", signed with
 * HMAC-SHA256 under a key every instance shares, so any instance checks it
 * without asking anyone:
 *
 *     v1.<user>.<schedule>.<ticket>.<expires_at_ms>.<64 hex digits of the MAC>
 *
 * where ticket is the waiting room's ticket (lowercase hex), so that paying
 * can end the admission. The MAC covers everything before it. Tokens are
 * printable, under RSV_ADMISSION_TOKEN_MAX bytes, and carry nothing secret.
 */
#ifndef RESERVATION_ADMISSION_H
#define RESERVATION_ADMISSION_H

#include <stddef.h>
#include <stdint.h>

#include "svc/err.h"

#define RSV_ADMISSION_KEY_MIN 32  /* bytes of key at least */
#define RSV_ADMISSION_KEY_MAX 256 /* bytes of key at most */
#define RSV_ADMISSION_TOKEN_MAX 256
#define RSV_ADMISSION_TICKET_MAX 64 /* hex digits of a ticket at most */

typedef struct {
    unsigned char key[RSV_ADMISSION_KEY_MAX];
    size_t len;
} rsv_admission_key_t;

/*
 * The key: len bytes (RSV_ADMISSION_KEY_MIN..RSV_ADMISSION_KEY_MAX), else
 * INVALID_ARGUMENT naming the bound.
 */
int rsv_admission_key_set(rsv_admission_key_t *k, const void *key, size_t len, svc_err_t *err);
/*
 * The key from a file (its bytes, without a trailing newline); INVALID_ARGUMENT
 * when unreadable, too short or too long. The error never holds key bytes.
 */
int rsv_admission_key_load(rsv_admission_key_t *k, const char *path, svc_err_t *err);
/* A random key, for an instance that shares none (its tokens are its own). */
int rsv_admission_key_random(rsv_admission_key_t *k, svc_err_t *err);

/* ---------- the admin token (CreateConcert) ---------- */

#define RSV_ADMIN_TOKEN_MIN 32
#define RSV_ADMIN_TOKEN_MAX 1024

/*
 * The admin token into buf (RSV_ADMIN_TOKEN_MAX + 1 bytes): from the file at
 * path when path is set (its bytes without one trailing newline), else from
 * env (ADMIN_TOKEN's value). INVALID_ARGUMENT when neither is set, the file
 * cannot be read, or the token is shorter than RSV_ADMIN_TOKEN_MIN or longer
 * than RSV_ADMIN_TOKEN_MAX bytes. The error never holds token bytes.
 */
int rsv_admin_token_load(const char *env, const char *path, char *buf, svc_err_t *err);

/*
 * Whether given equals want, in a time that depends on neither their
 * contents nor their lengths (both are hashed, the hashes compared).
 */
bool rsv_admin_token_equal(const char *given, size_t given_len, const char *want);

/* Writes the token into out (RSV_ADMISSION_TOKEN_MAX bytes); 0, or -1 when it does not fit. */
/* ticket: 1..RSV_ADMISSION_TICKET_MAX lowercase hex digits, else -1. */
int rsv_admission_sign(const rsv_admission_key_t *k, int64_t user_id, int64_t schedule_id,
                       const char *ticket, int64_t expires_at_ms, char *out, size_t out_len);

/* What a good token says. */
typedef struct {
    char ticket[RSV_ADMISSION_TICKET_MAX + 1];
    int64_t expires_at_ms;
} rsv_admission_t;

/*
 * 0 when token is ours (the MAC matches, compared in constant time), names
 * user_id and schedule_id, and has not expired at now_ms; *out (may be NULL)
 * gets its ticket and expiry. Else -1 with FAILED_PRECONDITION: "not
 * admitted to schedule S: <why>" (missing, malformed, forged, another
 * user's, another schedule's, expired).
 */
int rsv_admission_verify(const rsv_admission_key_t *k, const char *token, int64_t user_id,
                         int64_t schedule_id, int64_t now_ms, rsv_admission_t *out, svc_err_t *err);

/*
 * A waiting-room ticket as clients see it names its schedule, its user,
 * lock-svc's ticket and its place in the line (seq) under a MAC of the same
 * key, so that WatchWaitingRoom and LeaveWaitingRoom can trust all of them:
 *
 *     <schedule>.<user>.<seq>.<ticket>.<32 hex digits of the MAC>
 */
#define RSV_ROOM_TICKET_MAX (3 * 21 + RSV_ADMISSION_TICKET_MAX + 1 + 32 + 1)

/* Writes it into out (RSV_ROOM_TICKET_MAX bytes); -1 for a bad ticket or too small a buffer. */
int rsv_room_ticket_sign(const rsv_admission_key_t *k, int64_t schedule_id, int64_t user_id,
                         int64_t seq, const char *ticket, char *out, size_t out_len);
/*
 * Reads one back: 0 with its schedule, user, seq and lock-svc ticket
 * (ticket: RSV_ADMISSION_TICKET_MAX + 1 bytes), or -1 with INVALID_ARGUMENT
 * "not a waiting-room ticket" (malformed, or not signed with this key).
 */
int rsv_room_ticket_parse(const rsv_admission_key_t *k, const char *s, int64_t *schedule_id,
                          int64_t *user_id, int64_t *seq, char *ticket, svc_err_t *err);

#endif
