/*
 * lock_sem_watch.c: WatchSemaphore. A watcher gets a snapshot of the
 * semaphore (a script on its lane, which also gives the version it is as
 * of), then every event of the semaphore's log after that version.
 *
 * One reader thread per lock-svc instance, on a connection of its own,
 * follows the logs of every semaphore watched here with one XREAD BLOCK
 * over all of them, and writes each event to the parked Watch calls of its
 * semaphore: a semaphore's log is read once per instance however many
 * watch it, and no thread waits per watcher or per semaphore. (XREAD BLOCK
 * cannot go on a lane: it would hold up the commands pipelined behind it;
 * a periodic XREAD would add its period to every event's way.)
 *
 * Each watcher keeps the version it has reached (`from`); a semaphore is
 * read from the lowest `from` of its watchers, and an event goes only to
 * watchers not past it yet, and only to those the read started behind (a
 * watcher that joined while a read from further on was on its way waits
 * for the next read, from its own version). So a watcher that joins behind the others
 * (its snapshot is older than what was read already) makes the reader read
 * that stretch again, and nobody gets an event twice or misses one. A
 * watcher joining wakes the reader from its XREAD with CLIENT UNBLOCK.
 *
 * A watcher lives in its call's arena. The call never ends by itself: its
 * cancellation (client, deadline, shutdown) ends it, or a failed snapshot.
 * While the snapshot script is on its way (`snapshotting`), its answer owns
 * the end; afterwards the cancellation does, after taking the watcher out
 * under the mutex, and the reader writes only under that mutex.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "lock/v1/lock.pb-c.h"
#include "lock_sem.h"
#include "lock_sem_internal.h"
#include "lock_sem_store.h"
#include "lock_validate.h"
#include "svc/log.h"

#define BLOCK_MS 1000       /* one XREAD waits at most this long */
#define READ_COUNT 1000     /* events per semaphore per XREAD */
#define SNAPSHOT_CHUNK 1000 /* tickets per snapshot message */
#define UNBLOCK_TRIES 100   /* CLIENT UNBLOCK that came before the XREAD: sent again */
#define LOG_KEY_LEN (LOCK_KEY_MAX + 16)
/* Events may have been missed (or Redis lost the log): the watcher resumes or re-snapshots. */
#define LOST_MSG "semaphore log connection lost; watch again with after_version"
#define DRAIN_MSG "lock-svc is shutting down; watch again with after_version"

typedef struct {
    uint64_t ms, seq;
} stream_id_t;

typedef struct watched watched_t;

typedef struct watcher {
    struct watcher *next, *prev;
    watched_t *wn;
    lock_sem_t *sem;
    svc_call_t *call;
    stream_id_t from; /* the version reached: it gets the events after it */
    bool ready;       /* its snapshot went out (or it resumed): it gets events */
    bool snapshotting;
    bool cancelled;
    bool ended;        /* its call was ended (or is being ended) by us */
    uint64_t conn_gen; /* the reader's connection when it started */
    char after[LOCK_SEM_VERSION_MAX];
} watcher_t;

struct watched {
    watched_t *next;
    watcher_t *head;
    char name[LOCK_KEY_MAX + 1];
    char log_key[LOG_KEY_LEN];
    /*
     * Where the XREAD on its way reads this log from. Its entries go only to
     * watchers already there: one that joined behind it while it was on its
     * way would otherwise get the entries after it and never those before.
     */
    stream_id_t read_from;
};

struct sem_watch {
    pthread_mutex_t mu; /* everything below, and every write to a watcher's call */
    pthread_cond_t cv;
    bool stopping;
    watched_t *names;
    pthread_t thread;
    bool running;
    int fd;              /* the reader's socket, to wake it at stop; -1 when none */
    long long client_id; /* the reader's connection, for CLIENT UNBLOCK; 0 when none */
    bool in_read;        /* the reader is in its XREAD */
    uint64_t read_gen;   /* counts XREADs */
    uint64_t conn_gen;   /* counts the reader's lost connections (and the drain) */
    bool draining;       /* shutting down: new watchers are refused */
};

/* ---------- versions ---------- */

static bool
id_parse(const char *text, stream_id_t *out)
{
    return lock_sem_version_parse(text, &out->ms, &out->seq);
}

static bool
id_less(stream_id_t a, stream_id_t b)
{
    return a.ms < b.ms || (a.ms == b.ms && a.seq < b.seq);
}

/* ---------- the watched semaphores (caller holds mu) ---------- */

static watched_t *
watched_get(struct sem_watch *sw, const char *name, bool create)
{
    watched_t *wn;

    for (wn = sw->names; wn != NULL; wn = wn->next) {
        if (strcmp(wn->name, name) == 0) {
            return wn;
        }
    }
    if (!create || (wn = calloc(1, sizeof(*wn))) == NULL) {
        return NULL;
    }
    snprintf(wn->name, sizeof(wn->name), "%s", name);
    lock_sem_log_key(wn->log_key, sizeof(wn->log_key), name);
    wn->next = sw->names;
    sw->names = wn;
    return wn;
}

static void
watcher_unlink(struct sem_watch *sw, watcher_t *w)
{
    watched_t *wn = w->wn;

    if (w->prev != NULL) {
        w->prev->next = w->next;
    } else {
        wn->head = w->next;
    }
    if (w->next != NULL) {
        w->next->prev = w->prev;
    }
    w->next = w->prev = NULL;
    if (wn->head == NULL) {
        for (watched_t **pp = &sw->names; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == wn) {
                *pp = wn->next;
                free(wn);
                break;
            }
        }
    }
}

/* ---------- waking the reader ---------- */

typedef struct {
    struct sem_watch *sw;
    lock_store_t *store;
    uint64_t gen;
    long long client_id;
    int tries;
} unblock_t;

static void unblock_send(unblock_t *u);

/* 0: the reader was not blocked yet (its XREAD is still on the way): again, while it is. */
static void
unblock_done(redisReply *reply, bool lost, void *arg)
{
    unblock_t *u = arg;
    bool again = false;

    (void)lost;
    if (reply != NULL && reply->type == REDIS_REPLY_INTEGER && reply->integer == 0 &&
        ++u->tries < UNBLOCK_TRIES) {
        pthread_mutex_lock(&u->sw->mu);
        again = !u->sw->stopping && u->sw->in_read && u->sw->read_gen == u->gen &&
                u->sw->client_id == u->client_id;
        pthread_mutex_unlock(&u->sw->mu);
    }
    if (again) {
        unblock_send(u);
    } else {
        free(u);
    }
}

static void
unblock_send(unblock_t *u)
{
    char id[24];
    const char *argv[] = {"CLIENT", "UNBLOCK", id};

    snprintf(id, sizeof(id), "%lld", u->client_id);
    lock_store_command(u->store, 0, 3, argv, unblock_done, u);
}

/* The reader reads again at once, from the watchers' versions now (caller holds mu). */
static unblock_t *
reader_wake(lock_sem_t *sem)
{
    struct sem_watch *sw = sem->watch;
    unblock_t *u = NULL;

    pthread_cond_signal(&sw->cv);
    if (sw->in_read && sw->client_id != 0 && (u = calloc(1, sizeof(*u))) != NULL) {
        u->sw = sw;
        u->store = sem->store;
        u->gen = sw->read_gen;
        u->client_id = sw->client_id;
    }
    return u; /* sent by the caller, without mu */
}

/* ---------- the watch call ---------- */

static bool
sw_draining(struct sem_watch *sw)
{
    bool draining;

    pthread_mutex_lock(&sw->mu);
    draining = sw->draining;
    pthread_mutex_unlock(&sw->mu);
    return draining;
}

static bool
sw_stopping(struct sem_watch *sw)
{
    bool stopping;

    pthread_mutex_lock(&sw->mu);
    stopping = sw->stopping;
    pthread_mutex_unlock(&sw->mu);
    return stopping;
}

static void
fail_call(svc_call_t *call, svc_status_t code, const char *msg)
{
    svc_err_t err;

    svc_err_set(&err, code, "%s", msg);
    svc_call_finish(call, &err);
}

static void
watch_cancelled(svc_call_t *call, void *arg)
{
    watcher_t *w = arg;
    struct sem_watch *sw = w->sem->watch;

    pthread_mutex_lock(&sw->mu);
    w->cancelled = true;
    if (w->snapshotting || w->ended) { /* its answer ends the call, or it is ended */
        pthread_mutex_unlock(&sw->mu);
        return;
    }
    w->ended = true;
    watcher_unlink(sw, w);
    pthread_mutex_unlock(&sw->mu);
    fail_call(call, SVC_CANCELLED, "cancelled");
}

/* Writes the snapshot in chunks; the call stays ours (snapshotting) meanwhile. -1: no memory. */
static int
send_snapshot(watcher_t *w, const lock_sem_result_t *res)
{
    int sent = 0;

    do {
        Lock__V1__WatchSemaphoreResponse msg = LOCK__V1__WATCH_SEMAPHORE_RESPONSE__INIT;
        int n = res->n_tickets - sent < SNAPSHOT_CHUNK ? res->n_tickets - sent : SNAPSHOT_CHUNK;
        Lock__V1__SemaphoreTicket *items = calloc((size_t)(n > 0 ? n : 1), sizeof(*items));
        Lock__V1__SemaphoreTicket **ptrs = calloc((size_t)(n > 0 ? n : 1), sizeof(*ptrs));

        if (items == NULL || ptrs == NULL) {
            free(items);
            free(ptrs);
            return -1;
        }
        for (int i = 0; i < n; i++) {
            const lock_sem_ticket_t *t = &res->tickets[sent + i];
            lock__v1__semaphore_ticket__init(&items[i]);
            items[i].ticket = (char *)t->ticket;
            items[i].seq = t->seq;
            items[i].holding = t->holding;
            items[i].expires_at_ms = t->expires_at_ms;
            ptrs[i] = &items[i];
        }
        msg.kind = LOCK__V1__SEMAPHORE_EVENT_KIND__SEMAPHORE_EVENT_KIND_SNAPSHOT;
        msg.version = (char *)res->version;
        msg.limit = (int32_t)res->limit;
        msg.seq = res->seq;
        msg.n_tickets = (size_t)n;
        msg.tickets = ptrs;
        sent += n;
        msg.more = sent < res->n_tickets;
        (void)svc_call_write(w->call, &msg.base);
        free(items);
        free(ptrs);
    } while (sent < res->n_tickets);
    return 0;
}

static void
snapshot_done(const char *name, const lock_sem_result_t *res, const svc_err_t *err, void *arg)
{
    watcher_t *w = arg;
    lock_sem_t *sem = w->sem;
    struct sem_watch *sw = sem->watch;
    unblock_t *u = NULL;
    bool end, oom = false, lost = false;

    if (res != NULL) {
        lock_sem_due(sem, name, res->next_due_ms);
    }
    pthread_mutex_lock(&sw->mu);
    end = w->cancelled || sw->stopping || err->code != SVC_OK || !id_parse(res->version, &w->from);
    pthread_mutex_unlock(&sw->mu);
    if (!end && !res->resumed && send_snapshot(w, res) != 0) {
        end = oom = true;
    }
    pthread_mutex_lock(&sw->mu);
    w->snapshotting = false;
    lost = w->conn_gen != sw->conn_gen;
    end = end || w->cancelled || sw->stopping || lost;
    if (end) {
        w->ended = true;
        watcher_unlink(sw, w);
    } else {
        w->ready = true;
        u = reader_wake(sem);
    }
    pthread_mutex_unlock(&sw->mu);
    if (u != NULL) {
        unblock_send(u);
    }
    if (!end) {
        return;
    }
    if (err->code != SVC_OK) {
        svc_call_finish(w->call, err);
    } else if (oom) {
        fail_call(w->call, SVC_RESOURCE_EXHAUSTED, "out of memory");
    } else if (lost && !w->cancelled && !sw_stopping(sw)) {
        fail_call(w->call, SVC_UNAVAILABLE, sw_draining(sw) ? DRAIN_MSG : LOST_MSG);
    } else if (w->cancelled) {
        fail_call(w->call, SVC_CANCELLED, "cancelled");
    } else {
        fail_call(w->call, SVC_UNAVAILABLE, "lock-svc is shutting down");
    }
}

void
lock_sem_handle_watch(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Lock__V1__WatchSemaphoreRequest *req = (const void *)msg;
    lock_sem_t *sem = lock_service_sem(user);
    struct sem_watch *sw = sem->watch;
    const char *after = req->after_version != NULL ? req->after_version : "";
    watched_t *wn;
    watcher_t *w;
    svc_err_t err;

    if (!lock_validate_watch_semaphore(req, &err) ||
        !lock_service_check_name(user, call, "name", req->name, &err)) {
        svc_call_finish(call, &err);
        return;
    }
    if ((w = svc_call_alloc(call, sizeof(*w))) == NULL) {
        return;
    }
    w->sem = sem;
    w->call = call;
    w->snapshotting = true;
    snprintf(w->after, sizeof(w->after), "%s", after);
    pthread_mutex_lock(&sw->mu);
    w->conn_gen = sw->conn_gen;
    wn = sw->stopping || sw->draining ? NULL : watched_get(sw, req->name, true);
    if (wn != NULL) {
        w->wn = wn;
        w->next = wn->head;
        if (wn->head != NULL) {
            wn->head->prev = w;
        }
        wn->head = w;
    }
    pthread_mutex_unlock(&sw->mu);
    if (wn == NULL) {
        fail_call(call, SVC_UNAVAILABLE, "lock-svc is shutting down");
        return;
    }
    svc_call_on_cancel(call, watch_cancelled, w);
    lock_sem_store_snapshot_async(sem->store, req->name, w->after, snapshot_done, w);
}

/* ---------- the reader ---------- */

static Lock__V1__SemaphoreEventKind
event_kind(const char *kind)
{
    if (strcmp(kind, "enter") == 0) {
        return LOCK__V1__SEMAPHORE_EVENT_KIND__SEMAPHORE_EVENT_KIND_ENTER;
    }
    if (strcmp(kind, "admit") == 0) {
        return LOCK__V1__SEMAPHORE_EVENT_KIND__SEMAPHORE_EVENT_KIND_ADMIT;
    }
    if (strcmp(kind, "leave") == 0) {
        return LOCK__V1__SEMAPHORE_EVENT_KIND__SEMAPHORE_EVENT_KIND_LEAVE;
    }
    if (strcmp(kind, "expire") == 0) {
        return LOCK__V1__SEMAPHORE_EVENT_KIND__SEMAPHORE_EVENT_KIND_EXPIRE;
    }
    if (strcmp(kind, "extend") == 0) {
        return LOCK__V1__SEMAPHORE_EVENT_KIND__SEMAPHORE_EVENT_KIND_EXTEND;
    }
    return LOCK__V1__SEMAPHORE_EVENT_KIND__SEMAPHORE_EVENT_KIND_UNSPECIFIED;
}

/* One log entry [id, [field, value, ...]] to the watchers of wn not past it (caller holds mu). */
static void
deliver(lock_sem_t *sem, watched_t *wn, const redisReply *entry)
{
    Lock__V1__WatchSemaphoreResponse msg = LOCK__V1__WATCH_SEMAPHORE_RESPONSE__INIT;
    const redisReply *f;
    stream_id_t id;

    if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 ||
        entry->element[0]->type != REDIS_REPLY_STRING || !id_parse(entry->element[0]->str, &id)) {
        return;
    }
    f = entry->element[1];
    msg.version = entry->element[0]->str;
    msg.ticket = "";
    for (size_t i = 0; f->type == REDIS_REPLY_ARRAY && i + 1 < f->elements; i += 2) {
        const char *k = f->element[i]->str, *v = f->element[i + 1]->str;
        if (k == NULL || v == NULL) {
            continue;
        }
        if (strcmp(k, "kind") == 0) {
            msg.kind = event_kind(v);
        } else if (strcmp(k, "ticket") == 0) {
            msg.ticket = (char *)v;
        } else if (strcmp(k, "seq") == 0) {
            msg.seq = strtoll(v, NULL, 10);
        } else if (strcmp(k, "exp") == 0) {
            msg.expires_at_ms = strtoll(v, NULL, 10);
        }
    }
    if (msg.kind == LOCK__V1__SEMAPHORE_EVENT_KIND__SEMAPHORE_EVENT_KIND_ADMIT ||
        msg.kind == LOCK__V1__SEMAPHORE_EVENT_KIND__SEMAPHORE_EVENT_KIND_ENTER ||
        msg.kind == LOCK__V1__SEMAPHORE_EVENT_KIND__SEMAPHORE_EVENT_KIND_EXTEND) {
        lock_sem_due(sem, wn->name, msg.expires_at_ms); /* this instance settles it too */
    } else {
        msg.expires_at_ms = 0;
    }
    for (watcher_t *w = wn->head; w != NULL; w = w->next) {
        if (w->ready && !id_less(w->from, wn->read_from) && id_less(w->from, id)) {
            (void)svc_call_write(w->call, &msg.base);
            w->from = id;
        }
    }
}

/* An XREAD's answer: [[log key, [entry, ...]], ...]. */
static void
deliver_all(lock_sem_t *sem, const redisReply *r)
{
    struct sem_watch *sw = sem->watch;

    pthread_mutex_lock(&sw->mu);
    for (size_t s = 0; r->type == REDIS_REPLY_ARRAY && s < r->elements; s++) {
        const redisReply *stream = r->element[s];
        watched_t *wn;

        if (stream->type != REDIS_REPLY_ARRAY || stream->elements != 2 ||
            stream->element[0]->type != REDIS_REPLY_STRING ||
            stream->element[1]->type != REDIS_REPLY_ARRAY) {
            continue;
        }
        for (wn = sw->names; wn != NULL && strcmp(wn->log_key, stream->element[0]->str) != 0;
             wn = wn->next) {
        }
        for (size_t e = 0; wn != NULL && e < stream->element[1]->elements; e++) {
            deliver(sem, wn, stream->element[1]->element[e]);
        }
    }
    pthread_mutex_unlock(&sw->mu);
}

/*
 * The XREAD for every watched semaphore from its lowest watcher's version
 * (caller holds mu): argv and its strings in one allocation; NULL when
 * nobody is ready to hear.
 */
static char **
build_xread(struct sem_watch *sw, int *argc)
{
    static const char *head[] = {"XREAD", "COUNT", "1000", "BLOCK", "1000", "STREAMS"};
    enum { HEAD = 6, ID_LEN = 48 };
    int n = 0, i = 0;
    char **argv, *p;

    for (watched_t *wn = sw->names; wn != NULL; wn = wn->next) {
        n++;
    }
    if (n == 0) {
        return NULL;
    }
    argv = malloc((size_t)(HEAD + 2 * n) * sizeof(char *) + (size_t)n * (LOG_KEY_LEN + ID_LEN));
    if (argv == NULL) {
        return NULL;
    }
    p = (char *)(argv + HEAD + 2 * n);
    for (int h = 0; h < HEAD; h++) {
        argv[h] = (char *)head[h];
    }
    for (watched_t *wn = sw->names; wn != NULL; wn = wn->next) {
        stream_id_t low = {UINT64_MAX, UINT64_MAX};
        for (watcher_t *w = wn->head; w != NULL; w = w->next) {
            if (w->ready && id_less(w->from, low)) {
                low = w->from;
            }
        }
        if (low.ms == UINT64_MAX) {
            continue; /* nobody here has its snapshot yet */
        }
        wn->read_from = low;
        argv[HEAD + i] = p;
        snprintf(p, LOG_KEY_LEN, "%s", wn->log_key);
        p += LOG_KEY_LEN;
        argv[HEAD + n + i] = p;
        snprintf(p, ID_LEN, "%" PRIu64 "-%" PRIu64, low.ms, low.seq);
        p += ID_LEN;
        i++;
    }
    if (i == 0) {
        free(argv);
        return NULL;
    }
    /* Fewer streams than names: close the gap between the keys and the ids. */
    memmove(&argv[HEAD + i], &argv[HEAD + n], (size_t)i * sizeof(char *));
    *argc = HEAD + 2 * i;
    return argv;
}

/* Follows the logs on c until it breaks or we stop. */
static void
reader_follow(lock_sem_t *sem, redisContext *c)
{
    struct sem_watch *sw = sem->watch;

    for (;;) {
        redisReply *r;
        char **argv = NULL;
        int argc = 0;

        pthread_mutex_lock(&sw->mu);
        while (!sw->stopping && (argv = build_xread(sw, &argc)) == NULL) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&sw->cv, &sw->mu, &ts);
        }
        if (sw->stopping) {
            pthread_mutex_unlock(&sw->mu);
            free(argv);
            return;
        }
        sw->in_read = true;
        sw->read_gen++;
        pthread_mutex_unlock(&sw->mu);
        r = redisCommandArgv(c, argc, (const char **)argv, NULL);
        free(argv);
        pthread_mutex_lock(&sw->mu);
        sw->in_read = false;
        pthread_mutex_unlock(&sw->mu);
        if (r == NULL) {
            return;
        }
        if (r->type == REDIS_REPLY_ERROR) {
            static svc_log_limit_t limit = SVC_LOG_LIMIT_INIT(5);
            svc_logf_limited(&limit, SVC_LOG_WARN, "semaphore log read refused: %.200s", r->str);
            freeReplyObject(r);
            svc_sleep_ms(200);
            continue;
        }
        if (r->type == REDIS_REPLY_ARRAY) {
            deliver_all(sem, r);
        }
        freeReplyObject(r);
    }
}

/*
 * Ends every watcher here with UNAVAILABLE (why); each watches again with
 * its last version, and the snapshot script tells whether it can resume.
 * Watchers whose snapshot is on the way end when it comes (conn_gen). For
 * the reader's lost connection (events may be lost with it, and Redis may
 * have lost the logs: a restart, a failover) and for shutdown (draining:
 * new watchers are refused too).
 */
static void
end_all(struct sem_watch *sw, bool draining, const char *why)
{
    watcher_t *ended = NULL;

    pthread_mutex_lock(&sw->mu);
    sw->conn_gen++; /* watchers whose snapshot is on the way end when it comes */
    sw->draining = sw->draining || draining;
    for (watched_t *wn = sw->names, *next_wn; wn != NULL; wn = next_wn) {
        next_wn = wn->next; /* unlinking its last watcher frees wn */
        for (watcher_t *w = wn->head, *next; w != NULL; w = next) {
            next = w->next;
            if (w->ready && !w->ended) {
                w->ended = true;
                watcher_unlink(sw, w);
                w->next = ended;
                ended = w;
            }
        }
    }
    pthread_mutex_unlock(&sw->mu);
    while (ended != NULL) {
        watcher_t *w = ended;
        ended = w->next;
        fail_call(w->call, SVC_UNAVAILABLE, why);
    }
}

void
lock_sem_watch_drain(lock_sem_t *sem)
{
    if (sem->watch != NULL) {
        end_all(sem->watch, true, DRAIN_MSG);
    }
}

static void *
reader_thread(void *arg)
{
    lock_sem_t *sem = arg;
    struct sem_watch *sw = sem->watch;

    for (;;) {
        redisContext *c;
        redisReply *r;

        pthread_mutex_lock(&sw->mu);
        if (sw->stopping) {
            pthread_mutex_unlock(&sw->mu);
            return NULL;
        }
        pthread_mutex_unlock(&sw->mu);
        if ((c = lock_store_connect(sem->store, BLOCK_MS + 2000)) == NULL) {
            svc_sleep_ms(200);
            continue;
        }
        r = redisCommand(c, "CLIENT ID");
        if (r != NULL && r->type == REDIS_REPLY_INTEGER) {
            pthread_mutex_lock(&sw->mu);
            sw->fd = c->fd;
            sw->client_id = r->integer;
            pthread_mutex_unlock(&sw->mu);
            reader_follow(sem, c);
            pthread_mutex_lock(&sw->mu);
            sw->fd = -1;
            sw->client_id = 0;
            pthread_mutex_unlock(&sw->mu);
            if (!sw_stopping(sw)) {
                svc_logf(SVC_LOG_WARN, "semaphore log reader lost its connection");
                end_all(sw, false, LOST_MSG);
            }
        }
        freeReplyObject(r);
        redisFree(c);
        if (!sw_stopping(sw)) {
            svc_sleep_ms(100);
        }
    }
}

/* ---------- lifecycle ---------- */

int
lock_sem_watch_init(lock_sem_t *sem, svc_err_t *err)
{
    struct sem_watch *sw = calloc(1, sizeof(*sw));

    if (sw == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    pthread_mutex_init(&sw->mu, NULL);
    pthread_cond_init(&sw->cv, NULL);
    sw->fd = -1;
    sem->watch = sw;
    if (pthread_create(&sw->thread, NULL, reader_thread, sem) != 0) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "cannot start the semaphore log reader");
        return -1;
    }
    sw->running = true;
    return 0;
}

void
lock_sem_watch_stop(lock_sem_t *sem)
{
    struct sem_watch *sw = sem->watch;

    if (sw == NULL) {
        return;
    }
    pthread_mutex_lock(&sw->mu);
    sw->stopping = true;
    if (sw->fd >= 0) {
        shutdown(sw->fd, SHUT_RDWR); /* wakes the reader from its XREAD */
    }
    pthread_cond_broadcast(&sw->cv);
    pthread_mutex_unlock(&sw->mu);
    if (sw->running) {
        pthread_join(sw->thread, NULL);
        sw->running = false;
    }
}

void
lock_sem_watch_destroy(lock_sem_t *sem)
{
    struct sem_watch *sw = sem->watch;

    if (sw == NULL) {
        return;
    }
    /* Every watch call ended with the server; what is left are names nobody unlinked. */
    while (sw->names != NULL) {
        watched_t *wn = sw->names;
        sw->names = wn->next;
        free(wn);
    }
    pthread_cond_destroy(&sw->cv);
    pthread_mutex_destroy(&sw->mu);
    free(sw);
    sem->watch = NULL;
}
