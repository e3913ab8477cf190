/*
 * lock_client.h: the typed lock-svc client the other services use. Locks are
 * leased and fenced: keep the fence and write it with your data, so a writer
 * whose lease ran out cannot overwrite its successor.
 */
#ifndef SVC_LOCK_CLIENT_H
#define SVC_LOCK_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "svc/client.h"
#include "svc/err.h"
#include "svc/server.h"

#define SVC_LOCK_KEY_MAX 200
#define SVC_LOCK_TOKEN_MAX 64

typedef struct {
    char key[SVC_LOCK_KEY_MAX + 1];
    char token[SVC_LOCK_TOKEN_MAX + 1];
    int64_t fence;
    int64_t expires_at_ms; /* unix ms */
} svc_lock_t;

typedef struct {
    const char *owner;  /* shown by GetLock; may be NULL */
    int64_t lease_ms;   /* 0: the server default */
    int64_t wait_ms;    /* 0: try once */
    svc_call_t *parent; /* the call being served: deadline, cancellation, request id */
    /*
     * For a caller that serves several calls at once (a batch) and so has no
     * one parent: the latest the answer is still of use (unix ms; 0: none),
     * and the x-request-id to send (NULL: the parent's, else that of the
     * call this thread works for, else a new one; see svc_call_opts_t).
     */
    int64_t deadline_ms;
    const char *request_id;
} svc_lock_opts_t;

/*
 * Takes the lock on key, waiting up to opts->wait_ms. Errors: ABORTED when it
 * stayed held, UNAVAILABLE when lock-svc or its Redis cannot be reached (fail
 * closed), INVALID_ARGUMENT for a bad key or lease, DEADLINE_EXCEEDED when
 * the parent's deadline or opts->deadline_ms passed first (lock-svc then
 * drops the waiter).
 */
int svc_lock_acquire(svc_client_t *lock_svc, const char *key, const svc_lock_opts_t *opts,
                     svc_lock_t *out, svc_err_t *err);

/*
 * Gives the lock back. NOT_FOUND when it had already expired. parent may be
 * NULL (the x-request-id is then this thread's call's, or a new one).
 */
int svc_lock_release(svc_client_t *lock_svc, const svc_lock_t *lock, svc_call_t *parent,
                     svc_err_t *err);

/* Extends the lease to lease_ms from now; updates lock->expires_at_ms. */
int svc_lock_extend(svc_client_t *lock_svc, svc_lock_t *lock, int64_t lease_ms, svc_call_t *parent,
                    svc_err_t *err);

/* ---------- several keys, without a thread waiting ---------- */

#define SVC_LOCK_MANY_MAX 16

/* What svc_lock_acquire_many_async reports; see there. */
typedef void (*svc_lock_many_fn)(const svc_err_t *err, int failed, void *arg);

/*
 * Takes the locks of n keys (1..SVC_LOCK_MANY_MAX, no key twice), one after
 * another in ascending strcmp order of the keys, which every user of this
 * library follows, so two callers wanting overlapping sets never deadlock.
 * Each waits up to opts->wait_ms; no thread waits meanwhile. done runs once,
 * on the client thread (see svc_client_unary_async: it must not block):
 * with err OK, locks[i] holds the lock of keys[i]; otherwise the locks
 * already taken have been given back, failed is the index in keys of the
 * key not obtained (-1 for bad arguments), and err is ABORTED (it stayed
 * held), UNAVAILABLE "lock service unavailable" (lock-svc or its Redis
 * cannot be reached: fail closed; logged, at most a few lines a second),
 * DEADLINE_EXCEEDED or CANCELLED (the parent's deadline or cancellation, or
 * opts->deadline_ms), or INVALID_ARGUMENT. opts and keys are copied; locks
 * must live until done runs.
 */
void svc_lock_acquire_many_async(svc_client_t *lock_svc, const char *const *keys, int n,
                                 const svc_lock_opts_t *opts, svc_lock_t *locks,
                                 svc_lock_many_fn done, void *arg);

/* The same, waiting for the outcome; not from a client-thread callback. failed may be NULL. */
int svc_lock_acquire_many(svc_client_t *lock_svc, const char *const *keys, int n,
                          const svc_lock_opts_t *opts, svc_lock_t *locks, int *failed,
                          svc_err_t *err);

/*
 * Gives n locks back, last first, without waiting for the answers. A
 * release that fails is logged as a warning (key, fence, why), not
 * reported: the lease frees the lock anyway, and the work done under it was
 * fenced. request_id is the x-request-id to send (NULL: that of the call
 * this thread works for, else a new one). The locks are copied.
 */
void svc_lock_release_many(svc_client_t *lock_svc, const svc_lock_t *locks, int n,
                           const char *request_id);

/* Work done while holding a lock; returns 0 or -1 with err set. */
typedef int (*svc_locked_fn)(const svc_lock_t *lock, void *arg, svc_err_t *err);

/*
 * Scoped lock: acquires key, runs fn, and always releases, whatever fn
 * returns. Returns fn's result, or -1 when the lock was not obtained. A failed
 * release is logged, not returned: the lease frees the lock anyway, and fn's
 * work was fenced. The release carries the acquire's x-request-id.
 */
int svc_lock_with(svc_client_t *lock_svc, const char *key, const svc_lock_opts_t *opts,
                  svc_locked_fn fn, void *arg, svc_err_t *err);

/* ---------- semaphores: at most `limit` permits, a FIFO line for the rest ---------- */

#define SVC_SEM_VERSION_MAX 48

/* A ticket of a semaphore: a permit (position 0) or a place in its line. Plain data. */
typedef struct {
    char name[SVC_LOCK_KEY_MAX + 1];
    char ticket[SVC_LOCK_TOKEN_MAX + 1];
    int64_t seq;           /* the line is served in seq order */
    int position;          /* 0: holds a permit; N >= 1: N-th in line */
    int64_t expires_at_ms; /* unix ms: the lease's end (holding) or the place's (waiting) */
    char version[SVC_SEM_VERSION_MAX]; /* the semaphore's version when this was answered */
} svc_sem_ticket_t;

/* A semaphore as GetSemaphore describes it. */
typedef struct {
    int limit; /* 0: nobody entered it */
    int holders, waiting;
    int position;          /* with a ticket: 0 holding, N >= 1 N-th in line */
    int64_t expires_at_ms; /* with a ticket: its lease's or place's end */
    char version[SVC_SEM_VERSION_MAX];
} svc_sem_info_t;

typedef struct {
    const char *owner;      /* enter: required; one live ticket per owner */
    int limit;              /* enter: 1..1000000; the semaphore's while it has tickets */
    int64_t lease_ms;       /* enter: the permit's lease (0: the server default) */
    int64_t ticket_ttl_ms;  /* enter: how long a place is kept unless extended (0: default) */
    svc_call_t *parent;     /* the call being served: deadline, cancellation, request id */
    int64_t deadline_ms;    /* unix ms, 0: none (for callers without one parent) */
    const char *request_id; /* x-request-id when there is no parent; NULL: as svc_call_opts_t */
} svc_sem_opts_t;

/*
 * What the asynchronous semaphore calls report, once, on the client thread
 * (see svc_client_unary_async: it must not block). err: OK, or
 * UNAVAILABLE "lock service unavailable" (lock-svc or its Redis cannot be
 * reached: fail closed; logged, at most a few lines a second), NOT_FOUND
 * (the ticket is gone: left, or its lease or place ran out),
 * FAILED_PRECONDITION (enter with another limit than the semaphore's),
 * INVALID_ARGUMENT, DEADLINE_EXCEEDED or CANCELLED.
 */
typedef void (*svc_sem_fn)(const svc_err_t *err, void *arg);

/*
 * Enters semaphore name for opts->owner: a permit (out->position 0) or a
 * place in its line. Entering again with the same owner while its ticket
 * lives answers the same ticket, so a retry after UNAVAILABLE is safe.
 * opts is copied; out must live until done runs.
 */
void svc_sem_enter_async(svc_client_t *lock_svc, const char *name, const svc_sem_opts_t *opts,
                         svc_sem_ticket_t *out, svc_sem_fn done, void *arg);
/* The same, waiting for the answer; not from a client-thread callback. 0 or -1 with err. */
int svc_sem_enter(svc_client_t *lock_svc, const char *name, const svc_sem_opts_t *opts,
                  svc_sem_ticket_t *out, svc_err_t *err);

/*
 * Gives the ticket's permit or place up without waiting for the answer (the
 * next in line is admitted at once). A failure is logged as a warning, not
 * reported: the lease or the place's TTL frees it anyway (NOT_FOUND, a
 * ticket gone already, is not logged). The ticket is copied; request_id
 * NULL: that of the call this thread works for, else a new one.
 */
void svc_sem_leave_async(svc_client_t *lock_svc, const svc_sem_ticket_t *ticket,
                         const char *request_id);

/*
 * The same, but done learns the outcome: OK, NOT_FOUND (gone already), or
 * UNAVAILABLE and the like (then the permit or place stays until its lease
 * or TTL ends). opts may be NULL (only parent, deadline_ms and request_id
 * are read); the ticket is copied.
 */
void svc_sem_leave_then(svc_client_t *lock_svc, const svc_sem_ticket_t *ticket,
                        const svc_sem_opts_t *opts, svc_sem_fn done, void *arg);

/*
 * Renews the ticket's lease (holding) or place (waiting) to lease_ms from now
 * (0: the server default) and updates ticket->position and ->expires_at_ms.
 * opts may be NULL (only parent, deadline_ms and request_id are read);
 * ticket must live until done runs.
 */
void svc_sem_extend_async(svc_client_t *lock_svc, svc_sem_ticket_t *ticket, int64_t lease_ms,
                          const svc_sem_opts_t *opts, svc_sem_fn done, void *arg);

/*
 * Describes semaphore name and, with ticket (NULL: none), where that ticket
 * stands (NOT_FOUND when it is gone). opts as for extend; out must live until
 * done runs.
 */
void svc_sem_get_async(svc_client_t *lock_svc, const char *name, const char *ticket,
                       const svc_sem_opts_t *opts, svc_sem_info_t *out, svc_sem_fn done, void *arg);

/* The same, waiting for the answer; not from a client-thread callback. */
int svc_sem_get(svc_client_t *lock_svc, const char *name, const char *ticket,
                const svc_sem_opts_t *opts, svc_sem_info_t *out, svc_err_t *err);

/* ---------- watching a semaphore ---------- */

/* Values as lock.v1.SemaphoreEventKind. */
typedef enum {
    SVC_SEM_SNAPSHOT = 1, /* tickets[] as of version (more: further snapshot parts follow) */
    SVC_SEM_ENTER = 2,    /* ticket entered the line; expires_at_ms: its place's end */
    SVC_SEM_ADMIT = 3,    /* ticket holds a permit until expires_at_ms */
    SVC_SEM_LEAVE = 4,    /* ticket left */
    SVC_SEM_EXPIRE = 5,   /* ticket's lease or place ran out */
    SVC_SEM_EXTEND = 6,   /* ticket's lease or place now ends at expires_at_ms */
} svc_sem_event_kind_t;

typedef struct {
    const char *ticket;
    int64_t seq;
    bool holding;
    int64_t expires_at_ms;
} svc_sem_entry_t;

/* One message of a watch; its strings and tickets live until the callback returns. */
typedef struct {
    svc_sem_event_kind_t kind;
    const char *ticket; /* events */
    int64_t seq;
    int64_t expires_at_ms;
    const char *version;            /* "<ms>-<n>": compare as two numbers */
    int limit;                      /* snapshot */
    const svc_sem_entry_t *tickets; /* snapshot: holders first, then the line in order */
    size_t n_tickets;
    bool more; /* snapshot: more parts follow */
} svc_sem_event_t;

typedef struct svc_sem_watch svc_sem_watch_t;
typedef void (*svc_sem_event_fn)(const svc_sem_event_t *ev, void *arg);

/*
 * Follows semaphore name (WatchSemaphore) without a thread waiting: a
 * snapshot (or, with after_version a version seen before, what came after
 * it when lock-svc still has it), then every event, each to on_event on the
 * client thread (must not block). The stream has no deadline and never ends
 * by itself: done runs once, last, when it breaks (UNAVAILABLE "lock service
 * unavailable": lock-svc or its Redis went away; watch again with the last
 * version), or with CANCELLED after svc_sem_watch_close. opts may be NULL
 * (request_id is read). NULL with err when it cannot start.
 * REQUIRES: arg lives until done ran; the caller closes the watch once.
 */
svc_sem_watch_t *svc_sem_watch_start(svc_client_t *lock_svc, const char *name,
                                     const char *after_version, const svc_sem_opts_t *opts,
                                     svc_sem_event_fn on_event, svc_sem_fn done, void *arg,
                                     svc_err_t *err);
/* Stops the watch (done then runs, unless it ran) and frees it once done ran. NULL: no-op. */
void svc_sem_watch_close(svc_sem_watch_t *w);

#endif
