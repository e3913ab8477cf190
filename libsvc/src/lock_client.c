/*
 * lock_client.c: lock.v1.LockService calls for the services built on libsvc,
 * and the lock protocol they share: several keys taken in ascending order
 * without a thread waiting, given back last first with a warning when that
 * fails, and lock-svc's unreachability reported as one clear UNAVAILABLE.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "lock/v1/lock.pb-c.h"
#include "svc/lock_client.h"
#include "svc/log.h"
#include "svc/timer.h"

#define CALL_MARGIN_MS 2000 /* beyond wait_ms, for the round trip */

/*
 * The Acquire request for key and its call options: the wait plus a margin
 * for the round trip, cut to opts->deadline_ms (then *caller_deadline).
 * -1 with DEADLINE_EXCEEDED when that deadline has passed already.
 */
static int
acquire_prepare(const char *key, const svc_lock_opts_t *opts, Lock__V1__AcquireRequest *req,
                svc_call_opts_t *copts, bool *caller_deadline, svc_err_t *err)
{
    lock__v1__acquire_request__init(req);
    req->key = (char *)key;
    req->owner = (char *)(opts->owner != NULL ? opts->owner : "");
    req->lease_ms = opts->lease_ms;
    req->wait_ms = opts->wait_ms;
    memset(copts, 0, sizeof(*copts));
    copts->parent = opts->parent;
    copts->request_id = opts->request_id;
    copts->timeout_ms = opts->wait_ms + CALL_MARGIN_MS;
    *caller_deadline = false;
    if (opts->deadline_ms > 0) {
        int64_t left = opts->deadline_ms - svc_now_unix_ms();
        if (left <= 0) {
            svc_err_set(err, SVC_DEADLINE_EXCEEDED,
                        "deadline exceeded before lock %s was asked for", key);
            return -1;
        }
        *caller_deadline = left < copts->timeout_ms;
        copts->timeout_ms = *caller_deadline ? left : copts->timeout_ms;
    }
    return 0;
}

/* Fills out from Acquire's answer, or turns our own margin running out into ABORTED. */
static int
acquire_result(const char *key, const svc_lock_opts_t *opts, bool caller_deadline,
               const Lock__V1__AcquireResponse *resp, svc_lock_t *out, svc_err_t *err)
{
    if (err->code == SVC_OK) {
        if (key != out->key) { /* the asynchronous path keeps the key there already */
            snprintf(out->key, sizeof(out->key), "%s", key);
        }
        snprintf(out->token, sizeof(out->token), "%s", resp->token);
        out->fence = resp->fence;
        out->expires_at_ms = resp->expires_at_ms;
        return 0;
    }
    if (err->code == SVC_DEADLINE_EXCEEDED && opts->parent == NULL && !caller_deadline) {
        /* Our own margin ran out: to the caller this is a lock that did not come. */
        svc_err_set(err, SVC_ABORTED, "lock %s not obtained in time", key);
    }
    return -1;
}

int
svc_lock_acquire(svc_client_t *lock_svc, const char *key, const svc_lock_opts_t *opts,
                 svc_lock_t *out, svc_err_t *err)
{
    Lock__V1__AcquireRequest req;
    Lock__V1__AcquireResponse *resp = NULL;
    svc_arena_t *arena;
    svc_call_opts_t copts;
    bool caller_deadline;
    int rc;

    if (acquire_prepare(key, opts, &req, &copts, &caller_deadline, err) != 0) {
        return -1;
    }
    if ((arena = svc_arena_create()) == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    (void)svc_client_unary(lock_svc, "/lock.v1.LockService/Acquire", &req.base,
                           &lock__v1__acquire_response__descriptor, arena,
                           (ProtobufCMessage **)&resp, &copts, err);
    rc = acquire_result(key, opts, caller_deadline, resp, out, err);
    svc_arena_destroy(arena);
    return rc;
}

/* Release with the parent's or else request_id's x-request-id. */
static int
release_for(svc_client_t *lock_svc, const svc_lock_t *lock, svc_call_t *parent,
            const char *request_id, svc_err_t *err)
{
    Lock__V1__ReleaseRequest req = LOCK__V1__RELEASE_REQUEST__INIT;
    ProtobufCMessage *resp;
    svc_arena_t *arena = svc_arena_create();
    svc_call_opts_t copts = {
        .parent = parent, .request_id = request_id, .timeout_ms = CALL_MARGIN_MS};
    int rc;

    if (arena == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    req.key = (char *)lock->key;
    req.token = (char *)lock->token;
    rc = svc_client_unary(lock_svc, "/lock.v1.LockService/Release", &req.base,
                          &lock__v1__release_response__descriptor, arena, &resp, &copts, err);
    svc_arena_destroy(arena);
    return rc;
}

int
svc_lock_release(svc_client_t *lock_svc, const svc_lock_t *lock, svc_call_t *parent, svc_err_t *err)
{
    return release_for(lock_svc, lock, parent, NULL, err);
}

int
svc_lock_extend(svc_client_t *lock_svc, svc_lock_t *lock, int64_t lease_ms, svc_call_t *parent,
                svc_err_t *err)
{
    Lock__V1__ExtendRequest req = LOCK__V1__EXTEND_REQUEST__INIT;
    Lock__V1__ExtendResponse *resp;
    svc_arena_t *arena = svc_arena_create();
    svc_call_opts_t copts = {.parent = parent, .timeout_ms = CALL_MARGIN_MS};
    int rc;

    if (arena == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    req.key = (char *)lock->key;
    req.token = (char *)lock->token;
    req.lease_ms = lease_ms;
    rc = svc_client_unary(lock_svc, "/lock.v1.LockService/Extend", &req.base,
                          &lock__v1__extend_response__descriptor, arena, (ProtobufCMessage **)&resp,
                          &copts, err);
    if (rc == 0) {
        lock->expires_at_ms = resp->expires_at_ms;
    }
    svc_arena_destroy(arena);
    return rc;
}

int
svc_lock_with(svc_client_t *lock_svc, const char *key, const svc_lock_opts_t *opts,
              svc_locked_fn fn, void *arg, svc_err_t *err)
{
    svc_lock_t lock;
    svc_err_t release_err;
    int rc;

    if (svc_lock_acquire(lock_svc, key, opts, &lock, err) != 0) {
        return -1;
    }
    rc = fn(&lock, arg, err);
    if (release_for(lock_svc, &lock, opts->parent, opts->request_id, &release_err) != 0) {
        svc_logf(SVC_LOG_WARN, "release of %s (fence %lld) failed: %s", key, (long long)lock.fence,
                 release_err.msg);
    }
    return rc;
}

/* ---------- several keys, asynchronously ---------- */

#define OWNER_MAX 200

/* One svc_lock_acquire_many_async, from its start until done has run. */
typedef struct {
    svc_client_t *lock_svc;
    svc_lock_opts_t opts;
    char owner[OWNER_MAX + 1], request_id[65];
    svc_lock_t *locks;
    int order[SVC_LOCK_MANY_MAX]; /* indexes into locks, by ascending key */
    int n, next;                  /* next: position in order being taken */
    bool caller_deadline;
    svc_arena_t *arena; /* the answer of the Acquire in flight */
    svc_lock_many_fn done;
    void *arg;
} many_t;

static void many_step(many_t *m);

static void
many_finish(many_t *m, const svc_err_t *err, int failed)
{
    svc_lock_t taken[SVC_LOCK_MANY_MAX];
    svc_err_t out = *err;

    if (out.code != SVC_OK) {
        for (int i = 0; i < m->next; i++) {
            taken[i] = m->locks[m->order[i]];
        }
        svc_lock_release_many(m->lock_svc, taken, m->next,
                              m->request_id[0] != '\0' ? m->request_id : NULL);
        if (out.code == SVC_UNAVAILABLE) {
            static svc_log_limit_t limit = SVC_LOG_LIMIT_INIT(5);
            svc_logf_limited(&limit, SVC_LOG_WARN, "lock-svc unreachable: %s", out.msg);
            svc_err_set(&out, SVC_UNAVAILABLE, "lock service unavailable");
        }
    }
    m->done(&out, out.code == SVC_OK ? -1 : failed, m->arg);
    free(m);
}

static void
many_step_done(ProtobufCMessage *resp, const svc_err_t *err, void *arg)
{
    many_t *m = arg;
    int i = m->order[m->next];
    svc_err_t e = *err;
    int rc = acquire_result(m->locks[i].key, &m->opts, m->caller_deadline,
                            (const Lock__V1__AcquireResponse *)resp, &m->locks[i], &e);

    svc_arena_destroy(m->arena);
    m->arena = NULL;
    if (rc != 0) {
        many_finish(m, &e, i);
        return;
    }
    if (++m->next == m->n) {
        many_finish(m, &e, -1);
        return;
    }
    many_step(m);
}

static void
many_step(many_t *m)
{
    int i = m->order[m->next];
    Lock__V1__AcquireRequest req;
    svc_call_opts_t copts;
    svc_err_t err;

    if (acquire_prepare(m->locks[i].key, &m->opts, &req, &copts, &m->caller_deadline, &err) != 0) {
        many_finish(m, &err, i);
        return;
    }
    if ((m->arena = svc_arena_create()) == NULL) {
        svc_err_set(&err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        many_finish(m, &err, i);
        return;
    }
    svc_client_unary_async(m->lock_svc, "/lock.v1.LockService/Acquire", &req.base,
                           &lock__v1__acquire_response__descriptor, m->arena, &copts,
                           many_step_done, m);
}

void
svc_lock_acquire_many_async(svc_client_t *lock_svc, const char *const *keys, int n,
                            const svc_lock_opts_t *opts, svc_lock_t *locks, svc_lock_many_fn done,
                            void *arg)
{
    many_t *m = calloc(1, sizeof(*m));
    svc_err_t err;

    if (m == NULL) {
        svc_err_set(&err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        done(&err, -1, arg);
        return;
    }
    m->lock_svc = lock_svc;
    m->opts = *opts;
    m->locks = locks;
    m->n = n;
    m->done = done;
    m->arg = arg;
    if (opts->owner != NULL) {
        snprintf(m->owner, sizeof(m->owner), "%s", opts->owner);
        m->opts.owner = m->owner;
    }
    if (opts->parent != NULL || opts->request_id != NULL) {
        snprintf(m->request_id, sizeof(m->request_id), "%s",
                 opts->parent != NULL ? svc_call_request_id(opts->parent) : opts->request_id);
        m->opts.request_id = m->request_id;
    }
    if (n < 1 || n > SVC_LOCK_MANY_MAX) {
        svc_err_set(&err, SVC_INVALID_ARGUMENT, "between 1 and %d keys at once", SVC_LOCK_MANY_MAX);
        many_finish(m, &err, -1);
        return;
    }
    for (int i = 0; i < n; i++) {
        int j = i;
        if (keys[i] == NULL || strlen(keys[i]) > SVC_LOCK_KEY_MAX) {
            svc_err_set(&err, SVC_INVALID_ARGUMENT, "lock key %d is missing or too long", i);
            many_finish(m, &err, -1);
            return;
        }
        snprintf(locks[i].key, sizeof(locks[i].key), "%s", keys[i]);
        /* Insertion sort by key: n is small. */
        while (j > 0 && strcmp(locks[m->order[j - 1]].key, keys[i]) > 0) {
            m->order[j] = m->order[j - 1];
            j--;
        }
        if (j > 0 && strcmp(locks[m->order[j - 1]].key, keys[i]) == 0) {
            svc_err_set(&err, SVC_INVALID_ARGUMENT, "lock key %s given twice", keys[i]);
            many_finish(m, &err, -1);
            return;
        }
        m->order[j] = i;
    }
    many_step(m);
}

/* Waits for svc_lock_acquire_many_async. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    svc_err_t err;
    int failed;
} many_wait_t;

static void
many_wait_done(const svc_err_t *err, int failed, void *arg)
{
    many_wait_t *w = arg;

    pthread_mutex_lock(&w->mu);
    w->err = *err;
    w->failed = failed;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int
svc_lock_acquire_many(svc_client_t *lock_svc, const char *const *keys, int n,
                      const svc_lock_opts_t *opts, svc_lock_t *locks, int *failed, svc_err_t *err)
{
    many_wait_t w = {.done = false};

    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    svc_lock_acquire_many_async(lock_svc, keys, n, opts, locks, many_wait_done, &w);
    pthread_mutex_lock(&w.mu);
    while (!w.done) {
        pthread_cond_wait(&w.cv, &w.mu);
    }
    pthread_mutex_unlock(&w.mu);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    *err = w.err;
    if (failed != NULL) {
        *failed = w.failed;
    }
    return err->code == SVC_OK ? 0 : -1;
}

/* One release in flight: what its warning needs. */
typedef struct {
    char key[SVC_LOCK_KEY_MAX + 1];
    int64_t fence;
    svc_arena_t *arena;
} release_t;

static void
release_done(ProtobufCMessage *resp, const svc_err_t *err, void *arg)
{
    release_t *r = arg;

    (void)resp;
    if (err->code != SVC_OK) {
        static svc_log_limit_t limit = SVC_LOG_LIMIT_INIT(5);
        svc_logf_limited(&limit, SVC_LOG_WARN,
                         "release of %s (fence %lld) failed, its lease frees it: %s", r->key,
                         (long long)r->fence, err->msg);
    }
    svc_arena_destroy(r->arena);
    free(r);
}

void
svc_lock_release_many(svc_client_t *lock_svc, const svc_lock_t *locks, int n,
                      const char *request_id)
{
    svc_call_opts_t copts = {.timeout_ms = CALL_MARGIN_MS, .request_id = request_id};

    for (int i = n - 1; i >= 0; i--) {
        Lock__V1__ReleaseRequest req = LOCK__V1__RELEASE_REQUEST__INIT;
        release_t *r = calloc(1, sizeof(*r));

        if (r == NULL || (r->arena = svc_arena_create()) == NULL) {
            free(r);
            svc_logf(SVC_LOG_WARN, "release of %s: out of memory, its lease frees it",
                     locks[i].key);
            continue;
        }
        snprintf(r->key, sizeof(r->key), "%s", locks[i].key);
        r->fence = locks[i].fence;
        req.key = (char *)locks[i].key;
        req.token = (char *)locks[i].token;
        svc_client_unary_async(lock_svc, "/lock.v1.LockService/Release", &req.base,
                               &lock__v1__release_response__descriptor, r->arena, &copts,
                               release_done, r);
    }
}

/* ---------- semaphores ---------- */

typedef enum { SEM_CALL_ENTER, SEM_CALL_LEAVE, SEM_CALL_EXTEND, SEM_CALL_GET } sem_call_kind_t;

/* One semaphore call on its way, from its start until done has run. */
typedef struct {
    sem_call_kind_t kind;
    svc_arena_t *arena; /* the answer */
    char name[SVC_LOCK_KEY_MAX + 1];
    void *out; /* enter, extend: svc_sem_ticket_t; get: svc_sem_info_t; leave: NULL */
    svc_sem_fn done;
    void *arg;
} sem_call_t;

static void
sem_finish(sem_call_t *c, const svc_err_t *err)
{
    svc_err_t out = *err;

    if (out.code == SVC_UNAVAILABLE) {
        static svc_log_limit_t limit = SVC_LOG_LIMIT_INIT(5);
        svc_logf_limited(&limit, SVC_LOG_WARN, "lock-svc unreachable: %s", out.msg);
        svc_err_set(&out, SVC_UNAVAILABLE, "lock service unavailable");
    }
    if (c->kind == SEM_CALL_LEAVE && c->done == NULL) {
        if (out.code != SVC_OK && out.code != SVC_NOT_FOUND) {
            static svc_log_limit_t limit = SVC_LOG_LIMIT_INIT(5);
            svc_logf_limited(&limit, SVC_LOG_WARN,
                             "leave of semaphore %s failed, its lease frees it: %s", c->name,
                             out.msg);
        }
    } else {
        c->done(&out, c->arg);
    }
    svc_arena_destroy(c->arena);
    free(c);
}

static void
sem_answered(ProtobufCMessage *resp, const svc_err_t *err, void *arg)
{
    sem_call_t *c = arg;

    if (err->code == SVC_OK && c->kind == SEM_CALL_ENTER) {
        const Lock__V1__EnterSemaphoreResponse *r = (const void *)resp;
        svc_sem_ticket_t *t = c->out;
        snprintf(t->name, sizeof(t->name), "%s", c->name);
        snprintf(t->ticket, sizeof(t->ticket), "%s", r->ticket);
        snprintf(t->version, sizeof(t->version), "%s", r->version);
        t->seq = r->seq;
        t->position = r->position;
        t->expires_at_ms = r->expires_at_ms;
    } else if (err->code == SVC_OK && c->kind == SEM_CALL_EXTEND) {
        const Lock__V1__ExtendSemaphoreResponse *r = (const void *)resp;
        svc_sem_ticket_t *t = c->out;
        t->position = r->position;
        t->expires_at_ms = r->expires_at_ms;
    } else if (err->code == SVC_OK && c->kind == SEM_CALL_GET) {
        const Lock__V1__GetSemaphoreResponse *r = (const void *)resp;
        svc_sem_info_t *info = c->out;
        info->limit = r->limit;
        info->holders = r->holders;
        info->waiting = r->waiting;
        info->position = r->position;
        info->expires_at_ms = r->expires_at_ms;
        snprintf(info->version, sizeof(info->version), "%s", r->version);
    }
    sem_finish(c, err);
}

/* Starts c's call: the round-trip margin, cut to opts->deadline_ms. */
static void
sem_start(svc_client_t *lock_svc, sem_call_t *c, const char *method, const ProtobufCMessage *req,
          const ProtobufCMessageDescriptor *resp_desc, const svc_sem_opts_t *opts)
{
    svc_call_opts_t copts = {.timeout_ms = CALL_MARGIN_MS};
    svc_err_t err;

    if (opts != NULL) {
        copts.parent = opts->parent;
        copts.request_id = opts->request_id;
        if (opts->deadline_ms > 0) {
            int64_t left = opts->deadline_ms - svc_now_unix_ms();
            if (left <= 0) {
                svc_err_set(&err, SVC_DEADLINE_EXCEEDED,
                            "deadline exceeded before semaphore %s was asked", c->name);
                sem_finish(c, &err);
                return;
            }
            copts.timeout_ms = left < copts.timeout_ms ? left : copts.timeout_ms;
        }
    }
    if ((c->arena = svc_arena_create()) == NULL) {
        svc_err_set(&err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        sem_finish(c, &err);
        return;
    }
    svc_client_unary_async(lock_svc, method, req, resp_desc, c->arena, &copts, sem_answered, c);
}

/* A new call of kind for name, or NULL after reporting RESOURCE_EXHAUSTED to done. */
static sem_call_t *
sem_call_new(sem_call_kind_t kind, const char *name, void *out, svc_sem_fn done, void *arg)
{
    sem_call_t *c = calloc(1, sizeof(*c));
    svc_err_t err;

    if (c == NULL) {
        svc_err_set(&err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        if (done != NULL) {
            done(&err, arg);
        }
        return NULL;
    }
    c->kind = kind;
    snprintf(c->name, sizeof(c->name), "%s", name != NULL ? name : "");
    c->out = out;
    c->done = done;
    c->arg = arg;
    return c;
}

void
svc_sem_enter_async(svc_client_t *lock_svc, const char *name, const svc_sem_opts_t *opts,
                    svc_sem_ticket_t *out, svc_sem_fn done, void *arg)
{
    Lock__V1__EnterSemaphoreRequest req = LOCK__V1__ENTER_SEMAPHORE_REQUEST__INIT;
    sem_call_t *c = sem_call_new(SEM_CALL_ENTER, name, out, done, arg);

    if (c == NULL) {
        return;
    }
    req.name = (char *)(name != NULL ? name : "");
    req.owner = (char *)(opts->owner != NULL ? opts->owner : "");
    req.limit = opts->limit;
    req.lease_ms = opts->lease_ms;
    req.ticket_ttl_ms = opts->ticket_ttl_ms;
    sem_start(lock_svc, c, "/lock.v1.LockService/EnterSemaphore", &req.base,
              &lock__v1__enter_semaphore_response__descriptor, opts);
}

void
svc_sem_leave_async(svc_client_t *lock_svc, const svc_sem_ticket_t *ticket, const char *request_id)
{
    Lock__V1__LeaveSemaphoreRequest req = LOCK__V1__LEAVE_SEMAPHORE_REQUEST__INIT;
    svc_sem_opts_t opts = {.request_id = request_id};
    sem_call_t *c = sem_call_new(SEM_CALL_LEAVE, ticket->name, NULL, NULL, NULL);

    if (c == NULL) {
        svc_logf(SVC_LOG_WARN, "leave of semaphore %s: out of memory, its lease frees it",
                 ticket->name);
        return;
    }
    req.name = (char *)ticket->name;
    req.ticket = (char *)ticket->ticket;
    sem_start(lock_svc, c, "/lock.v1.LockService/LeaveSemaphore", &req.base,
              &lock__v1__leave_semaphore_response__descriptor, &opts);
}

void
svc_sem_leave_then(svc_client_t *lock_svc, const svc_sem_ticket_t *ticket,
                   const svc_sem_opts_t *opts, svc_sem_fn done, void *arg)
{
    Lock__V1__LeaveSemaphoreRequest req = LOCK__V1__LEAVE_SEMAPHORE_REQUEST__INIT;
    sem_call_t *c = sem_call_new(SEM_CALL_LEAVE, ticket->name, NULL, done, arg);

    if (c == NULL) {
        return;
    }
    req.name = (char *)ticket->name;
    req.ticket = (char *)ticket->ticket;
    sem_start(lock_svc, c, "/lock.v1.LockService/LeaveSemaphore", &req.base,
              &lock__v1__leave_semaphore_response__descriptor, opts);
}

void
svc_sem_extend_async(svc_client_t *lock_svc, svc_sem_ticket_t *ticket, int64_t lease_ms,
                     const svc_sem_opts_t *opts, svc_sem_fn done, void *arg)
{
    Lock__V1__ExtendSemaphoreRequest req = LOCK__V1__EXTEND_SEMAPHORE_REQUEST__INIT;
    sem_call_t *c = sem_call_new(SEM_CALL_EXTEND, ticket->name, ticket, done, arg);

    if (c == NULL) {
        return;
    }
    req.name = ticket->name;
    req.ticket = ticket->ticket;
    req.lease_ms = lease_ms;
    sem_start(lock_svc, c, "/lock.v1.LockService/ExtendSemaphore", &req.base,
              &lock__v1__extend_semaphore_response__descriptor, opts);
}

void
svc_sem_get_async(svc_client_t *lock_svc, const char *name, const char *ticket,
                  const svc_sem_opts_t *opts, svc_sem_info_t *out, svc_sem_fn done, void *arg)
{
    Lock__V1__GetSemaphoreRequest req = LOCK__V1__GET_SEMAPHORE_REQUEST__INIT;
    sem_call_t *c = sem_call_new(SEM_CALL_GET, name, out, done, arg);

    if (c == NULL) {
        return;
    }
    req.name = (char *)(name != NULL ? name : "");
    req.ticket = (char *)(ticket != NULL ? ticket : "");
    sem_start(lock_svc, c, "/lock.v1.LockService/GetSemaphore", &req.base,
              &lock__v1__get_semaphore_response__descriptor, opts);
}

/* Waits for one asynchronous semaphore call. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    svc_err_t err;
} sem_wait_t;

static void
sem_wait_done(const svc_err_t *err, void *arg)
{
    sem_wait_t *w = arg;

    pthread_mutex_lock(&w->mu);
    w->err = *err;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static int
sem_wait(sem_wait_t *w, svc_err_t *err)
{
    pthread_mutex_lock(&w->mu);
    while (!w->done) {
        pthread_cond_wait(&w->cv, &w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    *err = w->err;
    return err->code == SVC_OK ? 0 : -1;
}

int
svc_sem_enter(svc_client_t *lock_svc, const char *name, const svc_sem_opts_t *opts,
              svc_sem_ticket_t *out, svc_err_t *err)
{
    sem_wait_t w = {.done = false};

    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    svc_sem_enter_async(lock_svc, name, opts, out, sem_wait_done, &w);
    return sem_wait(&w, err);
}

int
svc_sem_get(svc_client_t *lock_svc, const char *name, const char *ticket,
            const svc_sem_opts_t *opts, svc_sem_info_t *out, svc_err_t *err)
{
    sem_wait_t w = {.done = false};

    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    svc_sem_get_async(lock_svc, name, ticket, opts, out, sem_wait_done, &w);
    return sem_wait(&w, err);
}

/* ---------- watching a semaphore ---------- */

struct svc_sem_watch {
    svc_client_watch_t *stream;
    svc_sem_event_fn on_event;
    svc_sem_fn done;
    void *arg;
    pthread_mutex_t mu;
    int refs; /* the caller's and the stream's (until done ran) */
};

static void
sem_watch_unref(svc_sem_watch_t *w)
{
    int left;

    pthread_mutex_lock(&w->mu);
    left = --w->refs;
    pthread_mutex_unlock(&w->mu);
    if (left == 0) {
        pthread_mutex_destroy(&w->mu);
        free(w);
    }
}

static void
sem_watch_msg(ProtobufCMessage *msg, void *arg)
{
    const Lock__V1__WatchSemaphoreResponse *m = (const void *)msg;
    svc_sem_watch_t *w = arg;
    svc_sem_entry_t *entries = NULL;
    svc_sem_event_t ev = {
        .kind = (svc_sem_event_kind_t)m->kind,
        .ticket = m->ticket,
        .seq = m->seq,
        .expires_at_ms = m->expires_at_ms,
        .version = m->version,
        .limit = m->limit,
        .more = m->more,
    };

    if (m->n_tickets > 0) {
        if ((entries = calloc(m->n_tickets, sizeof(*entries))) == NULL) {
            svc_logf(SVC_LOG_WARN, "semaphore watch: out of memory, closing it");
            svc_client_watch_cancel(w->stream);
            return;
        }
        for (size_t i = 0; i < m->n_tickets; i++) {
            entries[i].ticket = m->tickets[i]->ticket;
            entries[i].seq = m->tickets[i]->seq;
            entries[i].holding = m->tickets[i]->holding;
            entries[i].expires_at_ms = m->tickets[i]->expires_at_ms;
        }
    }
    ev.tickets = entries;
    ev.n_tickets = m->n_tickets;
    w->on_event(&ev, w->arg);
    free(entries);
}

static void
sem_watch_end(const svc_err_t *err, void *arg)
{
    svc_sem_watch_t *w = arg;
    svc_err_t out = *err;

    if (out.code == SVC_UNAVAILABLE) {
        static svc_log_limit_t limit = SVC_LOG_LIMIT_INIT(5);
        svc_logf_limited(&limit, SVC_LOG_WARN, "semaphore watch ended: %s", out.msg);
        svc_err_set(&out, SVC_UNAVAILABLE, "lock service unavailable");
    }
    w->done(&out, w->arg);
    sem_watch_unref(w);
}

svc_sem_watch_t *
svc_sem_watch_start(svc_client_t *lock_svc, const char *name, const char *after_version,
                    const svc_sem_opts_t *opts, svc_sem_event_fn on_event, svc_sem_fn done,
                    void *arg, svc_err_t *err)
{
    Lock__V1__WatchSemaphoreRequest req = LOCK__V1__WATCH_SEMAPHORE_REQUEST__INIT;
    svc_call_opts_t copts = {.timeout_ms = -1};
    svc_sem_watch_t *w = calloc(1, sizeof(*w));

    if (w == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&w->mu, NULL);
    w->on_event = on_event;
    w->done = done;
    w->arg = arg;
    w->refs = 2;
    if (opts != NULL) {
        copts.request_id = opts->request_id;
    }
    req.name = (char *)(name != NULL ? name : "");
    req.after_version = (char *)(after_version != NULL ? after_version : "");
    w->stream = svc_client_watch_start(lock_svc, "/lock.v1.LockService/WatchSemaphore", &req.base,
                                       &lock__v1__watch_semaphore_response__descriptor, &copts,
                                       sem_watch_msg, sem_watch_end, w, err);
    if (w->stream == NULL) {
        pthread_mutex_destroy(&w->mu);
        free(w);
        return NULL;
    }
    return w;
}

void
svc_sem_watch_close(svc_sem_watch_t *w)
{
    if (w == NULL) {
        return;
    }
    svc_client_watch_close(w->stream);
    sem_watch_unref(w);
}
