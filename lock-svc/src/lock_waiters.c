/*
 * lock_waiters.c: the parked Acquire calls of this instance. The order of
 * waiters lives in Redis (see lock_store.c); here each key with waiters has
 * a keyq: the waiters parked here (in arrival order, to ask again in that
 * order) and one timer for when something may have to be handed on:
 *
 *   waiter:  PENDING --(acquire answers QUEUED)--> PARKED
 *            PENDING/PARKED --(hand-off here: HANDED_HERE)--> granted
 *            PARKED --(hand-off by another instance, short px)--> CONFIRMING
 *            CONFIRMING --(acquire with its token: GRANTED)--> granted
 *            any --(wait over / cancelled)--> leave: out of the line, and the
 *                  lock given on if it came meanwhile
 *   keyq timer: at the holder's lease end (a lease that ran out is handed on
 *            by promote), GRANT_MS after a hand-off to another instance (an
 *            unconfirmed grant is handed on), and soon after a lost answer
 *            (promote reports a hand-off we missed as the holder's token).
 *
 * Locking: keys are spread over N_SHARDS mutexes, so calls on different
 * keys never wait for each other. Store calls are made without a shard
 * mutex held (a store call may answer at once, on this thread).
 *
 * A waiter lives in its call's arena. Three parties may want to end it: a
 * hand-off (or an error), its wait timer, and the client's cancellation. The
 * outcome is decided under the shard mutex; the call is ended by whoever
 * also owns the timer (cancelled it, or is the timer), so the waiter's
 * memory is never touched after its call ended. While park() sets a waiter
 * up, it owns the end.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lock/v1/lock.pb-c.h"
#include "lock_waiters.h"
#include "svc/log.h"
#include "svc/pool.h"
#include "svc/timer.h"
#include "svc/metrics.h"

#define N_SHARDS 64
#define N_BUCKETS 256 /* per shard */
#define EXPIRY_SLACK_MS 2
#define RECHECK_MS 200      /* after a lost answer or a failed confirmation */
#define RECHECK_FOR_MS 1200 /* how long a lost answer is checked on */

typedef enum { W_PENDING, W_PARKED, W_CONFIRMING } waiter_state_t;

typedef struct keyq keyq_t;
typedef struct shard shard_t;

typedef struct lock_waiter {
    struct lock_waiter *next, *prev;
    keyq_t *q;
    lock_waiters_t *ws;
    shard_t *shard;
    svc_call_t *call;
    const char *key, *owner; /* in the call's arena */
    int64_t lease_ms, wait_ms;
    int64_t until_ms;      /* monotonic: the end of the wait */
    int64_t line_until_ms; /* monotonic: the end of its place in the line (the call's deadline) */
    char token[LOCK_TOKEN_LEN + 1];
    svc_timer_t timer;
    bool timer_live;
    waiter_state_t state;
    bool queued;      /* in its keyq (park got that far) */
    bool setting_up;  /* park owns the end */
    bool cancel_seen; /* cancelled before park queued it */
    bool decided;
    svc_err_t outcome; /* SVC_OK: granted with fence */
    int64_t fence;
    int64_t parked_us; /* monotonic: when it joined the line */
} lock_waiter_t;

struct keyq {
    keyq_t *next; /* hash chain */
    shard_t *shard;
    lock_waiters_t *ws;
    lock_waiter_t *head, *tail;
    svc_timer_t timer;
    bool timer_live;
    int64_t due_ms;           /* monotonic */
    int64_t recheck_until_ms; /* monotonic: promote every RECHECK_MS until then */
    /* A hand-off to another instance to check back on: unconfirmed while its token still
       holds the lock for at most watch_px. */
    char watch[LOCK_TOKEN_LEN + 1];
    int64_t watch_px;
    bool resync;  /* the parked waiters ask again when the timer fires */
    int promotes; /* promote calls in flight: they keep q */
    char key[LOCK_KEY_MAX + 1];
};

struct shard {
    pthread_mutex_t mu;
    keyq_t *buckets[N_BUCKETS];
};

struct lock_waiters {
    lock_store_t *store;
    svc_pool_t *pool;
    svc_timers_t *timers;
    bool stopping; /* under every shard's mu */
    shard_t shards[N_SHARDS];
};

/* A store call's context: the key and token to find the waiter (or keyq) by again. */
typedef struct {
    lock_waiters_t *ws;
    char key[LOCK_KEY_MAX + 1];
    char token[LOCK_TOKEN_LEN + 1];
} ask_ctx_t;

/* What to do once the shard mutex is released. */
typedef struct {
    lock_waiter_t *end; /* a waiter whose call we end */
    bool leave;         /* give token back / take it out of the line */
    bool ask;           /* acquire again with token (confirm or resync) */
    char key[LOCK_KEY_MAX + 1];
    char token[LOCK_TOKEN_LEN + 1];
    char owner[LOCK_OWNER_MAX + 1];
    int64_t lease_ms, wait_ms;
} after_t;

static void key_timer_fired(void *arg);

/* lock_waiters (gauge), lock_grants_total{mode="wait"}, lock_handoff_wait_seconds. */
static svc_metric_t *m_waiters, *m_grants_waited, *m_wait_s;
static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void
metrics_make(void)
{
    m_waiters = svc_metric(SVC_METRIC_GAUGE, "lock_waiters",
                           "Acquires waiting in a lock's line on this instance.", NULL);
    m_grants_waited =
        svc_metric(SVC_METRIC_COUNTER, "lock_grants_total", "Locks granted.", "mode=\"wait\"");
    m_wait_s = svc_metric(SVC_METRIC_HISTOGRAM, "lock_handoff_wait_seconds",
                          "How long acquires that waited in line waited until granted.", NULL);
}

static int64_t
mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
static void acquire_done(const lock_store_result_t *res, const svc_err_t *err, void *arg);

/* ---------- keys (caller holds the shard's mu) ---------- */

static unsigned
key_hash(const char *key)
{
    unsigned h = 2166136261u;

    for (; *key; key++) {
        h = (h ^ (unsigned char)*key) * 16777619u;
    }
    return h;
}

static shard_t *
shard_of(lock_waiters_t *ws, const char *key, unsigned *bucket)
{
    unsigned h = key_hash(key);

    *bucket = (h / N_SHARDS) % N_BUCKETS;
    return &ws->shards[h % N_SHARDS];
}

static keyq_t *
keyq_get(lock_waiters_t *ws, shard_t *sh, unsigned b, const char *key, bool create)
{
    keyq_t *q;

    for (q = sh->buckets[b]; q != NULL; q = q->next) {
        if (strcmp(q->key, key) == 0) {
            return q;
        }
    }
    if (!create || (q = calloc(1, sizeof(*q))) == NULL) {
        return NULL;
    }
    q->shard = sh;
    q->ws = ws;
    snprintf(q->key, sizeof(q->key), "%s", key);
    q->timer.heap_index = -1;
    q->next = sh->buckets[b];
    sh->buckets[b] = q;
    return q;
}

/* Frees q once nothing refers to it: no waiter, no timer, no promote in flight. */
static void
keyq_maybe_free(keyq_t *q)
{
    unsigned b;
    keyq_t **pp;

    if (q == NULL || q->head != NULL || q->timer_live || q->promotes > 0) {
        return;
    }
    shard_of(q->ws, q->key, &b);
    for (pp = &q->shard->buckets[b]; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == q) {
            *pp = q->next;
            free(q);
            return;
        }
    }
}

static void
keyq_append(keyq_t *q, lock_waiter_t *w)
{
    w->q = q;
    w->next = NULL;
    w->prev = q->tail;
    if (q->tail != NULL) {
        q->tail->next = w;
    } else {
        q->head = w;
    }
    q->tail = w;
}

static void
keyq_remove(keyq_t *q, lock_waiter_t *w)
{
    if (w->prev != NULL) {
        w->prev->next = w->next;
    } else {
        q->head = w->next;
    }
    if (w->next != NULL) {
        w->next->prev = w->prev;
    } else {
        q->tail = w->prev;
    }
    w->next = w->prev = NULL;
}

/*
 * The waiter with token, looked for from both ends: a hand-off goes to the
 * oldest waiter, an acquire's answer mostly concerns the newest.
 */
static lock_waiter_t *
keyq_find(const keyq_t *q, const char *token)
{
    lock_waiter_t *a = q != NULL ? q->head : NULL, *z = q != NULL ? q->tail : NULL;

    while (a != NULL) {
        if (strcmp(a->token, token) == 0) {
            return a;
        }
        if (a == z) {
            break;
        }
        if (strcmp(z->token, token) == 0) {
            return z;
        }
        if (a->next == z) {
            break;
        }
        a = a->next;
        z = z->prev;
    }
    return NULL;
}

/* Something may have to be handed on in delay_ms: the timer fires then at the latest. */
static void
keyq_arm(keyq_t *q, int64_t delay_ms)
{
    int64_t delay = (delay_ms > 0 ? delay_ms : 0) + EXPIRY_SLACK_MS;
    int64_t due = svc_now_mono_ms() + delay;

    if (q->ws->stopping) {
        return;
    }
    if (q->timer_live) {
        if (q->due_ms <= due + EXPIRY_SLACK_MS) {
            return;
        }
        if (!svc_timer_cancel(q->ws->timers, &q->timer)) {
            return; /* firing now: it promotes and arms again from what it learns */
        }
    }
    q->timer_live = true;
    q->due_ms = due;
    svc_timer_start(q->ws->timers, &q->timer, delay, key_timer_fired, q);
}

/* ---------- deciding and ending a waiter ---------- */

/*
 * Caller holds the shard's mu and has set w's outcome. Takes w off its
 * queue. Returns true when the caller must end the call (after unlocking),
 * false when the wait timer (firing now) or park will.
 */
static bool
waiter_decide(lock_waiter_t *w)
{
    w->decided = true;
    keyq_remove(w->q, w);
    if (w->setting_up) {
        return false;
    }
    if (!w->timer_live) {
        return true;
    }
    if (svc_timer_cancel(w->ws->timers, &w->timer)) {
        w->timer_live = false;
        return true;
    }
    return false;
}

/* Decides a waiter that stops waiting without the lock: it leaves the line. */
static void
waiter_give_up(lock_waiter_t *w, svc_status_t code, after_t *a)
{
    if (code == SVC_ABORTED) {
        svc_err_set(&w->outcome, SVC_ABORTED, "lock %s is still held after %lld ms", w->key,
                    (long long)w->wait_ms);
    } else {
        svc_err_set(&w->outcome, SVC_CANCELLED, "cancelled while waiting for %s", w->key);
    }
    a->leave = true;
    snprintf(a->key, sizeof(a->key), "%s", w->key);
    snprintf(a->token, sizeof(a->token), "%s", w->token);
    if (waiter_decide(w)) {
        a->end = w;
    }
}

static void
waiter_granted(lock_waiter_t *w, int64_t fence, after_t *a)
{
    svc_err_clear(&w->outcome);
    w->fence = fence;
    if (waiter_decide(w)) {
        a->end = w;
    }
}

/* Carries out w's outcome and ends its call. Caller owns the end and holds no mutex. */
static void
waiter_end(lock_waiter_t *w)
{
    Lock__V1__AcquireResponse resp = LOCK__V1__ACQUIRE_RESPONSE__INIT;

    svc_metric_add(m_waiters, -1);
    if (w->outcome.code != SVC_OK) {
        svc_call_fail(w->call, &w->outcome);
        return;
    }
    if (svc_call_cancelled(w->call)) { /* granted to a client that has gone: give it back */
        svc_err_t err;
        lock_store_leave_async(w->ws->store, w->key, w->token, NULL, NULL);
        svc_err_set(&err, SVC_CANCELLED, "cancelled");
        svc_call_fail(w->call, &err);
        return;
    }
    resp.token = w->token;
    resp.fence = w->fence;
    resp.expires_at_ms = svc_now_unix_ms() + w->lease_ms;
    svc_metric_add(m_grants_waited, 1);
    svc_metric_observe(m_wait_s, (double)(mono_us() - w->parked_us) / 1e6);
    svc_call_reply(w->call, &resp.base);
}

static ask_ctx_t *
ask_ctx(lock_waiters_t *ws, const char *key, const char *token)
{
    ask_ctx_t *ctx = malloc(sizeof(*ctx));

    if (ctx != NULL) {
        ctx->ws = ws;
        snprintf(ctx->key, sizeof(ctx->key), "%s", key);
        snprintf(ctx->token, sizeof(ctx->token), "%s", token);
    }
    return ctx;
}

/* Carries out what was decided under a shard's mu. */
static void
after_run(lock_waiters_t *ws, after_t *a)
{
    if (a->leave) {
        lock_store_leave_async(ws->store, a->key, a->token, NULL, NULL);
    }
    if (a->ask) {
        ask_ctx_t *ctx = ask_ctx(ws, a->key, a->token);
        if (ctx != NULL) {
            lock_store_acquire_async(ws->store, a->key, a->token, a->owner, a->lease_ms,
                                     a->wait_ms > 0 ? a->wait_ms : 1, false, acquire_done, ctx);
        }
    }
    if (a->end != NULL) {
        waiter_end(a->end);
    }
}

/* Asks again with w's token (caller holds the shard's mu): confirms a grant, or requeues. */
static void
waiter_ask(lock_waiter_t *w, after_t *a)
{
    a->ask = true;
    snprintf(a->key, sizeof(a->key), "%s", w->key);
    snprintf(a->token, sizeof(a->token), "%s", w->token);
    snprintf(a->owner, sizeof(a->owner), "%s", w->owner);
    a->lease_ms = w->lease_ms;
    a->wait_ms = w->line_until_ms - svc_now_mono_ms();
}

/*
 * token holds key for px ms by a hand-off we did not make ourselves (caller
 * holds the shard's mu). A grant shorter than the lease is confirmed first.
 */
static void
grant_heard(keyq_t *q, const char *token, int64_t fence, int64_t px, after_t *a)
{
    lock_waiter_t *w = keyq_find(q, token);

    if (w == NULL) {
        /*
         * Nobody here waits for it any more. Not given back from here: a
         * waiter that left gave the lock on by its own leave (on the key's
         * lane, after any hand-off to it), and a waiter already granted (its
         * confirmation or a promote found the hand-off before this news came)
         * holds it now, for a client that was told so. An unconfirmed grant
         * nobody takes up runs out after its px.
         */
        return;
    }
    if (px >= w->lease_ms) {
        waiter_granted(w, fence, a);
    } else if (w->state != W_CONFIRMING) {
        w->state = W_CONFIRMING;
        waiter_ask(w, a);
    }
}

/* ---------- the wait's end, cancellation ---------- */

static void
waiter_timed_out(void *arg)
{
    lock_waiter_t *w = arg;
    after_t a = {0};

    pthread_mutex_lock(&w->shard->mu);
    w->timer_live = false;
    if (w->decided) { /* decided while we were firing: we end it */
        a.end = w;
    } else {
        keyq_t *q = w->q;
        waiter_give_up(w, SVC_ABORTED, &a);
        keyq_maybe_free(q);
    }
    pthread_mutex_unlock(&w->shard->mu);
    after_run(w->ws, &a);
}

static void
waiter_cancelled(svc_call_t *call, void *arg)
{
    lock_waiter_t *w = arg;
    after_t a = {0};

    (void)call;
    pthread_mutex_lock(&w->shard->mu);
    if (!w->queued) {
        w->cancel_seen = true; /* park ends it */
    } else if (!w->decided) {
        keyq_t *q = w->q;
        waiter_give_up(w, SVC_CANCELLED, &a);
        keyq_maybe_free(q);
    }
    pthread_mutex_unlock(&w->shard->mu);
    after_run(w->ws, &a);
}

/* ---------- acquire's answers for waiters ---------- */

/*
 * The answer to an acquire with a waiter's token: its first try, a
 * confirmation, or a resync. The waiter is found again by its token; one
 * that is gone meanwhile has left the line (a leave went after this acquire,
 * on the same lane) and is no concern.
 */
static void
acquire_done(const lock_store_result_t *res, const svc_err_t *err, void *arg)
{
    ask_ctx_t *ctx = arg;
    lock_waiters_t *ws = ctx->ws;
    after_t a = {0};
    lock_waiter_t *w;
    unsigned b;
    shard_t *sh = shard_of(ws, ctx->key, &b);
    keyq_t *q;

    pthread_mutex_lock(&sh->mu);
    q = ws->stopping ? NULL : keyq_get(ws, sh, b, ctx->key, false);
    w = keyq_find(q, ctx->token);
    if (w != NULL && err->code != SVC_OK) {
        if (w->state == W_PENDING) {
            w->outcome = *err; /* the first try failed: so does the call */
            if (waiter_decide(w)) {
                a.end = w;
            }
        } else {
            w->state = W_PARKED; /* a confirmation or resync failed: ask again soon */
            q->resync = true;
            keyq_arm(q, RECHECK_MS);
        }
    } else if (w != NULL && res->outcome == LOCK_GRANTED) {
        waiter_granted(w, res->fence, &a);
    } else if (w != NULL && res->outcome == LOCK_QUEUED) {
        w->state = W_PARKED;
        keyq_arm(q, res->holder_ms);
    } else if (w != NULL) {
        waiter_give_up(w, SVC_ABORTED, &a);
    }
    keyq_maybe_free(q);
    pthread_mutex_unlock(&sh->mu);
    free(ctx);
    after_run(ws, &a);
}

/* ---------- the key's timer: promote ---------- */

static void
promote_done(const lock_store_result_t *res, const svc_err_t *err, void *arg)
{
    ask_ctx_t *ctx = arg;
    lock_waiters_t *ws = ctx->ws;
    after_t a = {0};
    unsigned b;
    shard_t *sh = shard_of(ws, ctx->key, &b);
    keyq_t *q;

    pthread_mutex_lock(&sh->mu);
    q = keyq_get(ws, sh, b, ctx->key, false);
    if (q != NULL) {
        q->promotes--;
    }
    if (q == NULL || ws->stopping) {
        /* nothing waits here any more */
    } else if (err->code != SVC_OK) {
        if (q->head != NULL || q->watch[0] != '\0') {
            keyq_arm(q, RECHECK_MS);
        }
    } else {
        bool held = res->outcome == LOCK_HELD;
        lock_waiter_t *w = held ? keyq_find(q, res->holder) : NULL;

        if (q->watch[0] != '\0') {
            if (held && strcmp(res->holder, q->watch) == 0 && res->holder_ms <= q->watch_px) {
                keyq_arm(q, res->holder_ms); /* not confirmed yet: look again when it runs out */
            } else {
                q->watch[0] = '\0'; /* confirmed, or handed on */
            }
        }
        /* One of ours holds it: a hand-off whose news was lost. */
        if (w != NULL && w->state != W_CONFIRMING) {
            grant_heard(q, res->holder, res->holder_fence, res->holder_ms, &a);
        }
        if (held && q->head != NULL) {
            keyq_arm(q, res->holder_ms);
        }
        if (q->head != NULL && svc_now_mono_ms() < q->recheck_until_ms) {
            keyq_arm(q, RECHECK_MS);
        }
    }
    keyq_maybe_free(q);
    pthread_mutex_unlock(&sh->mu);
    free(ctx);
    after_run(ws, &a);
}

/* Collects the parked waiters of q to ask again (caller holds the shard's mu). */
static after_t *
collect_asks(keyq_t *q, after_t *list, int *n, int *cap)
{
    for (lock_waiter_t *w = q->head; w != NULL; w = w->next) {
        if (w->state != W_PARKED) {
            continue; /* its acquire is on its way, and answers for it */
        }
        if (*n == *cap) {
            int grown = *cap > 0 ? *cap * 2 : 16;
            after_t *more = realloc(list, (size_t)grown * sizeof(*list));
            if (more == NULL) {
                return list;
            }
            list = more;
            *cap = grown;
        }
        memset(&list[*n], 0, sizeof(list[*n]));
        waiter_ask(w, &list[*n]);
        (*n)++;
    }
    return list;
}

static void
run_asks(lock_waiters_t *ws, after_t *list, int n)
{
    for (int i = 0; i < n; i++) {
        after_run(ws, &list[i]);
    }
    free(list);
}

static void
key_timer_fired(void *arg)
{
    keyq_t *q = arg;
    lock_waiters_t *ws = q->ws;
    shard_t *sh = q->shard;
    after_t *asks = NULL;
    int n_asks = 0, cap = 0;
    ask_ctx_t *ctx = NULL;

    pthread_mutex_lock(&sh->mu);
    q->timer_live = false;
    if (!ws->stopping && (q->head != NULL || q->watch[0] != '\0')) {
        if (q->resync) {
            q->resync = false;
            asks = collect_asks(q, asks, &n_asks, &cap);
        }
        if ((ctx = ask_ctx(ws, q->key, "")) != NULL) {
            q->promotes++;
        }
    }
    keyq_maybe_free(q);
    pthread_mutex_unlock(&sh->mu);
    run_asks(ws, asks, n_asks);
    if (ctx != NULL) {
        lock_store_promote_async(ws->store, ctx->key, promote_done, ctx);
    }
}

/* ---------- the store's events ---------- */

/* Every parked waiter on a key of lane (-1: any) asks again, in arrival order. */
static void
resync(lock_waiters_t *ws, int lane)
{
    for (int i = 0; i < N_SHARDS; i++) {
        shard_t *sh = &ws->shards[i];
        after_t *asks = NULL;
        int n_asks = 0, cap = 0;

        pthread_mutex_lock(&sh->mu);
        for (int b = 0; !ws->stopping && b < N_BUCKETS; b++) {
            for (keyq_t *q = sh->buckets[b]; q != NULL; q = q->next) {
                if (lane < 0 || lock_store_lane(ws->store, q->key) == lane) {
                    asks = collect_asks(q, asks, &n_asks, &cap);
                }
            }
        }
        pthread_mutex_unlock(&sh->mu);
        run_asks(ws, asks, n_asks);
    }
}

void
lock_waiters_event(const lock_event_t *ev, void *arg)
{
    lock_waiters_t *ws = arg;
    after_t a = {0};
    unsigned b;
    shard_t *sh;
    keyq_t *q;

    if (ev->kind == LOCK_EV_RESYNC) {
        resync(ws, ev->lane);
        return;
    }
    sh = shard_of(ws, ev->key, &b);
    pthread_mutex_lock(&sh->mu);
    if (ws->stopping) {
        pthread_mutex_unlock(&sh->mu);
        return;
    }
    q = keyq_get(ws, sh, b, ev->key, ev->kind == LOCK_EV_HANDED_AWAY);
    switch (ev->kind) {
    case LOCK_EV_HANDED_HERE: {
        lock_waiter_t *w = keyq_find(q, ev->token);
        if (w != NULL) { /* else it left, and its own leave gives the lock on */
            waiter_granted(w, ev->fence, &a);
        }
        if (q != NULL && q->head != NULL) {
            keyq_arm(q, ev->px); /* the others wait for this lease at most */
        }
        break;
    }
    case LOCK_EV_GRANT_MESSAGE: /* with no waiter here: see grant_heard */
        if (q != NULL) {
            grant_heard(q, ev->token, ev->fence, ev->px, &a);
        }
        break;
    case LOCK_EV_HANDED_AWAY:
        if (q != NULL) { /* unconfirmed by then: promote hands it on */
            snprintf(q->watch, sizeof(q->watch), "%s", ev->token);
            q->watch_px = ev->px;
            keyq_arm(q, ev->px);
        }
        break;
    case LOCK_EV_LOST:
        if (q != NULL && q->head != NULL) {
            q->recheck_until_ms = svc_now_mono_ms() + RECHECK_FOR_MS;
            keyq_arm(q, RECHECK_MS);
        }
        break;
    default:
        break;
    }
    keyq_maybe_free(q);
    pthread_mutex_unlock(&sh->mu);
    after_run(ws, &a);
}

/* ---------- parking ---------- */

void
lock_waiters_park(lock_waiters_t *ws, svc_call_t *call, const char *key, const char *owner,
                  int64_t lease_ms, int64_t wait_ms)
{
    lock_waiter_t *w = svc_call_alloc(call, sizeof(*w));
    int64_t left = svc_call_deadline_ms(call) - svc_now_unix_ms(), in_line = wait_ms;
    after_t a = {0};
    ask_ctx_t *ctx;
    unsigned b;
    keyq_t *q;
    svc_err_t err;

    if (w == NULL) {
        return;
    }
    /*
     * A caller that gives up before wait_ms (its deadline) leaves the line
     * then: a hand-off skips it instead of waiting for its cancellation. Its
     * call is still ended by that cancellation, or by wait_ms.
     */
    if (left < in_line) {
        in_line = left;
    }
    if (in_line <= 0) {
        svc_err_set(&err, SVC_DEADLINE_EXCEEDED, "deadline exceeded before lock %s was free", key);
        svc_call_fail(call, &err);
        return;
    }
    w->ws = ws;
    w->call = call;
    w->key = key;
    w->owner = owner;
    w->lease_ms = lease_ms;
    w->wait_ms = wait_ms;
    w->until_ms = svc_now_mono_ms() + wait_ms;
    w->line_until_ms = svc_now_mono_ms() + in_line;
    w->timer.heap_index = -1;
    w->shard = shard_of(ws, key, &b);
    lock_store_new_token(w->token);
    /* Before w is visible to anyone else: a cancellation from now on finds it. */
    svc_call_on_cancel(call, waiter_cancelled, w);
    ctx = ask_ctx(ws, key, w->token);

    pthread_mutex_lock(&w->shard->mu);
    q = ws->stopping || ctx == NULL ? NULL : keyq_get(ws, w->shard, b, key, true);
    if (q == NULL || w->cancel_seen) {
        w->queued = w->decided = true; /* a cancellation now has nothing to do */
        pthread_mutex_unlock(&w->shard->mu);
        free(ctx);
        svc_err_set(&err, w->cancel_seen ? SVC_CANCELLED : SVC_UNAVAILABLE, "%s",
                    w->cancel_seen ? "cancelled" : "lock-svc is shutting down");
        svc_call_fail(call, &err);
        return;
    }
    keyq_append(q, w);
    w->parked_us = mono_us();
    svc_metric_add(m_waiters, 1); /* until waiter_end */
    w->queued = true;
    w->setting_up = true;
    w->state = W_PENDING;
    pthread_mutex_unlock(&w->shard->mu);

    /* Registered first: a hand-off reported before this answer finds the waiter. */
    lock_store_acquire_async(ws->store, key, w->token, owner, lease_ms, in_line, true, acquire_done,
                             ctx);

    pthread_mutex_lock(&w->shard->mu);
    w->setting_up = false;
    if (w->decided) {
        a.end = w;
        if (w->outcome.code == SVC_CANCELLED || w->outcome.code == SVC_ABORTED) {
            /* It left before its acquire went out: leave again, after it. */
            a.leave = true;
            snprintf(a.key, sizeof(a.key), "%s", key);
            snprintf(a.token, sizeof(a.token), "%s", w->token);
        }
    } else {
        w->timer_live = true;
        svc_timer_start(ws->timers, &w->timer, w->until_ms - svc_now_mono_ms(), waiter_timed_out,
                        w);
    }
    pthread_mutex_unlock(&w->shard->mu);
    after_run(ws, &a);
}

/* ---------- lifecycle ---------- */

lock_waiters_t *
lock_waiters_create(lock_store_t *store, svc_err_t *err)
{
    lock_waiters_t *ws = calloc(1, sizeof(*ws));

    pthread_once(&metrics_once, metrics_make);

    if (ws == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    ws->store = store;
    for (int i = 0; i < N_SHARDS; i++) {
        pthread_mutex_init(&ws->shards[i].mu, NULL);
    }
    /* Timer callbacks never block: a small pool does. */
    if ((ws->pool = svc_pool_create(1, 4, err)) == NULL ||
        (ws->timers = svc_timers_create(ws->pool, err)) == NULL) {
        lock_waiters_stop(ws);
        lock_waiters_destroy(ws);
        return NULL;
    }
    return ws;
}

void
lock_waiters_stop(lock_waiters_t *ws)
{
    if (ws == NULL) {
        return;
    }
    for (int i = 0; i < N_SHARDS; i++) {
        pthread_mutex_lock(&ws->shards[i].mu);
    }
    ws->stopping = true;
    for (int i = N_SHARDS - 1; i >= 0; i--) {
        pthread_mutex_unlock(&ws->shards[i].mu);
    }
    svc_timers_destroy(ws->timers); /* pending timers never fire */
    ws->timers = NULL;
    svc_pool_destroy(ws->pool); /* callbacks already queued run, and see stopping */
    ws->pool = NULL;
}

void
lock_waiters_destroy(lock_waiters_t *ws)
{
    if (ws == NULL) {
        return;
    }
    /* Every waiter ended with its call; only keys (and their stopped timers) are left. */
    for (int i = 0; i < N_SHARDS; i++) {
        for (int b = 0; b < N_BUCKETS; b++) {
            keyq_t *q = ws->shards[i].buckets[b];
            while (q != NULL) {
                keyq_t *next = q->next;
                free(q);
                q = next;
            }
        }
        pthread_mutex_destroy(&ws->shards[i].mu);
    }
    free(ws);
}
