/*
 * lock_sem_store.h: the Redis side of lock-svc's semaphores: their Lua
 * scripts and the asynchronous calls that run them over lock_store's lanes.
 * The layout and the rules are at the top of lock_sem_store.c.
 */
#ifndef LOCK_SEM_STORE_H
#define LOCK_SEM_STORE_H

#include <stdint.h>

#include "lock_store.h"
#include "svc/err.h"

#define LOCK_SEM_SCRIPTS 5 /* loaded by lock_store with its own */
#define LOCK_SEM_LIMIT_MAX 1000000
#define LOCK_SEM_VERSION_MAX 48

/* The scripts' numbers (the waiting-room benchmark runs the first two on Redis directly). */
enum { LOCK_SEM_ENTER, LOCK_SEM_LEAVE, LOCK_SEM_EXTEND, LOCK_SEM_GET, LOCK_SEM_SNAPSHOT };

/*
 * Script number i's full text (malloc'd; NULL when out of memory). For
 * lock_store_create, and for a benchmark that runs it without lock-svc.
 */
char *lock_sem_script_text(int i);

/* One live ticket, in a snapshot. */
typedef struct {
    char ticket[LOCK_TOKEN_LEN + 1];
    int64_t seq;
    bool holding;
    int64_t expires_at_ms; /* unix ms: lease end (holding) or place end (waiting) */
} lock_sem_ticket_t;

/* What a semaphore call found; valid when its err is OK. */
typedef struct {
    char ticket[LOCK_TOKEN_LEN + 1]; /* enter: the ticket (a new one, or the owner's) */
    int64_t seq;                     /* enter: the ticket's; snapshot: the highest given so far */
    int position;                    /* 0 holding, N >= 1 N-th in line; -1 no ticket asked about */
    int64_t expires_at_ms;           /* the ticket's lease or place end, unix ms */
    char version[LOCK_SEM_VERSION_MAX];
    int64_t limit; /* 0: unset */
    int holders, waiting;
    int64_t next_due_ms; /* unix ms of the earliest lease or place end; 0: none */
    /* snapshot only: resumed (nothing else is set but version = after, limit, next_due), or
       the live tickets, holders first, then the line in order; freed after the callback */
    bool resumed;
    lock_sem_ticket_t *tickets;
    int n_tickets;
} lock_sem_result_t;

/*
 * Runs on a Redis lane's thread; must not block. res is NULL unless err is
 * OK. Errors: UNAVAILABLE (Redis unreachable, refusing, later than 800 ms),
 * NOT_FOUND (a ticket that is not there), FAILED_PRECONDITION (enter with
 * another limit than the semaphore's).
 */
typedef void (*lock_sem_store_cb)(const char *name, const lock_sem_result_t *res,
                                  const svc_err_t *err, void *arg);

/*
 * Enters ticket (new, from lock_store_new_token) for owner, or answers the
 * owner's live ticket. An answer lost on the way is safe to repeat with the
 * same owner (it gets the same ticket); a ticket nobody learnt of ends with
 * its place's TTL.
 */
void lock_sem_store_enter_async(lock_store_t *store, const char *name, const char *ticket,
                                const char *owner, int64_t limit, int64_t lease_ms, int64_t ttl_ms,
                                lock_sem_store_cb cb, void *arg);
/* The ticket leaves (permit or place); the next in line is admitted in the same script. */
void lock_sem_store_leave_async(lock_store_t *store, const char *name, const char *ticket,
                                lock_sem_store_cb cb, void *arg);
/* A holder's lease, or a waiting ticket's place, ends lease_ms from now. */
void lock_sem_store_extend_async(lock_store_t *store, const char *name, const char *ticket,
                                 int64_t lease_ms, lock_sem_store_cb cb, void *arg);
/*
 * Settles the semaphore (drops what ran out, admits from the head of the
 * line) and describes it, and ticket (NULL or "": none) in it. This is also
 * what a lease timer runs.
 */
void lock_sem_store_get_async(lock_store_t *store, const char *name, const char *ticket,
                              lock_sem_store_cb cb, void *arg);
/*
 * Settles the semaphore and lists every live ticket with the version they
 * are as of; or, when after (NULL or "": none) is a version after which the
 * event log still holds every event, answers resumed instead.
 */
void lock_sem_store_snapshot_async(lock_store_t *store, const char *name, const char *after,
                                   lock_sem_store_cb cb, void *arg);

/* One semaphore with tickets and its earliest end (unix ms). */
typedef void (*lock_sem_due_cb)(const char *name, int64_t due_ms, void *arg);
/*
 * Reads the index of semaphores with tickets (the earliest 10 000 ends) and
 * calls cb for each, on lane 0's thread; nothing when Redis does not answer.
 */
void lock_sem_store_due_async(lock_store_t *store, lock_sem_due_cb cb, void *arg);

/* The name of a semaphore's event stream, "{sem:<name>}:log", into buf (at least 224 bytes). */
void lock_sem_log_key(char *buf, size_t len, const char *name);

#endif
