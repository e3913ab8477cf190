/*
 * reservation_room_watch.c: WatchWaitingRoom, pushed, not polled.
 *
 * Each room with watchers on this instance is mirrored here from lock-svc's
 * WatchSemaphore stream (a snapshot, then every enter, admission, leave and
 * expiry, in order), by one thread per room. The mirror knows which tickets
 * hold a permit and the line's order, so a watcher's position is computed
 * here, in O(log n), without a call per watcher: a Fenwick tree over the
 * line's sequence numbers counts the waiting tickets ahead of a ticket.
 *
 * Changes are pushed in rounds: a change marks the room dirty, and a timer
 * sends every watcher whose position changed one message, at most every
 * ROUND_MS, so a burst of admissions costs each watcher one message, not one
 * per admission; watchers far back hear of small moves less often
 * (worth_telling). The round that finds a ticket admitted sends the admission
 * token and ends the call; a ticket that is gone (left, ran out) ends it with
 * NOT_FOUND. A watcher also keeps its place alive: its ticket's place is
 * renewed whenever less than half of ROOM_PLACE_MS is left of it.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lock/v1/lock.pb-c.h"
#include "reservation/v1/reservation.pb-c.h"
#include "reservation_internal.h"
#include "svc/log.h"
#include "svc/metrics.h"

#define ROUND_MS 20       /* how often watchers hear of changes, at most */
#define NEAR_FRONT 20     /* watchers this near the front hear of every move */
#define FAR_TELL_MS 1000  /* the others at least this often while they move */
#define RECONNECT_MS 200  /* after the stream broke */
#define STREAM_MS 3600000 /* a stream is opened again (from its version) after this long */
#define TICKET_BUCKETS 4096
#define RENEWALS_MAX 32   /* place renewals on their way per room, at most */
#define FAR_GAP_MS 250    /* far back: a tenth of the way, but not more often than this */
#define FAR_PER_ROUND 500 /* far back: messages per round; the others in the next rounds */

/* A live ticket of the mirror. */
typedef struct tick {
    struct tick *next; /* hash chain */
    char ticket[SVC_LOCK_TOKEN_MAX + 1];
    int64_t seq, expires_at_ms;
    bool holding;
} tick_t;

typedef struct room_watcher room_watcher_t;

/* One room mirrored here. Lives until shutdown. */
struct room {
    struct room *next; /* svc->watched */
    reservation_service_t *svc;
    int64_t schedule_id;
    char name[SVC_LOCK_KEY_MAX + 1];
    pthread_t thread;
    svc_timer_t round;

    pthread_mutex_t mu; /* everything below */
    bool stop, round_armed, synced;
    bool resync;          /* the mirror missed something: the next stream starts with a snapshot */
    int rounds_running;   /* a round past its unlock still touches the room */
    int verifies;         /* lock-svc answers on their way */
    int renewals;         /* place renewals on their way (at most RENEWALS_MAX) */
    bool renew_waits;     /* a place due for renewal waits for one of those to end */
    int64_t round_due_ms; /* monotonic, while round_armed */
    svc_client_stream_t *stream;
    char version[SVC_LOCK_TOKEN_MAX + 1];
    tick_t *buckets[TICKET_BUCKETS];
    int64_t base;  /* the seq of tree slot 0 */
    int64_t top;   /* the highest seq the mirror has seen */
    int64_t *tree; /* Fenwick tree of waiting tickets by seq - base */
    int64_t cap;   /* slots of tree */
    room_watcher_t *watchers;
    room_watcher_t *by_ticket[TICKET_BUCKETS]; /* the same watchers, by ticket */
    room_watcher_t *far_cursor;                /* where the last round's far-back budget ran out */
    int64_t round_no;
    int64_t n_waiting, n_holding, n_watchers;
    svc_metric_t *m_waiting, *m_holding, *m_watchers; /* waiting_room_* {schedule="S"} */
};

/* One WatchWaitingRoom call; in its call's arena. */
struct room_watcher {
    room_watcher_t *next, *prev;
    room_watcher_t *hnext; /* room->by_ticket chain */
    int64_t seen_round;    /* the last round that looked at it */
    struct room *room;
    svc_call_t *call;
    int64_t user_id, last_position, renewed_ms, told_ms;
    svc_sem_ticket_t ticket;
    bool done;      /* under room->mu: whoever sets it ends the call */
    bool verifying; /* not in the mirror: lock-svc is asked whether it lives */
    bool gone;      /* lock-svc said it is gone */
    /* How a round ended it: admitted (until end_expires_ms) or gone. */
    bool end_admitted;
    int64_t end_expires_ms;
};

static void watcher_end(reservation_service_t *svc, room_watcher_t *w, bool admitted,
                        int64_t expires_at_ms);

/* ---------- the mirror ---------- */

static size_t
bucket_of(const char *ticket)
{
    uint64_t h = 1469598103934665603ull;

    for (; *ticket != '\0'; ticket++) {
        h = (h ^ (unsigned char)*ticket) * 1099511628211ull;
    }
    return (size_t)(h % TICKET_BUCKETS);
}

static tick_t *
tick_find(struct room *r, const char *ticket)
{
    for (tick_t *t = r->buckets[bucket_of(ticket)]; t != NULL; t = t->next) {
        if (strcmp(t->ticket, ticket) == 0) {
            return t;
        }
    }
    return NULL;
}

/* Adds d at seq in the tree, growing it (by doubling) to hold seq. */
static void
tree_add(struct room *r, int64_t seq, int64_t d)
{
    if (r->tree == NULL || seq < r->base) {
        return; /* before the snapshot's first: nothing counts it */
    }
    if (seq - r->base >= r->cap) {
        int64_t ncap = r->cap;
        int64_t *old = r->tree, *nt;
        while (seq - r->base >= ncap) {
            ncap *= 2;
        }
        nt = calloc((size_t)ncap + 1, sizeof(*nt));
        if (nt == NULL) {
            return;
        }
        /* Rebuild: recover each slot's own count from the old tree, then add it again. */
        r->tree = nt;
        r->cap = ncap;
        for (int64_t i = 1; i <= ncap / 2 && old != NULL; i++) {
            int64_t own = old[i];
            for (int64_t j = i - 1, stop = i - (i & -i); j > stop; j -= j & -j) {
                own -= old[j];
            }
            for (int64_t j = i; own != 0 && j <= ncap; j += j & -j) {
                nt[j] += own;
            }
        }
        free(old);
    }
    for (int64_t i = seq - r->base + 1; i <= r->cap; i += i & -i) {
        r->tree[i] += d;
    }
}

/* Waiting tickets with a seq below seq. */
static int64_t
tree_before(const struct room *r, int64_t seq)
{
    int64_t n = 0;

    if (r->tree == NULL || seq <= r->base) {
        return 0;
    }
    for (int64_t i = seq - r->base < r->cap ? seq - r->base : r->cap; i > 0; i -= i & -i) {
        n += r->tree[i];
    }
    return n;
}

static void
mirror_clear(struct room *r)
{
    for (size_t b = 0; b < TICKET_BUCKETS; b++) {
        while (r->buckets[b] != NULL) {
            tick_t *t = r->buckets[b];
            r->buckets[b] = t->next;
            free(t);
        }
    }
    free(r->tree);
    r->tree = NULL;
    r->cap = 0;
    r->base = 0;
    r->top = 0;
    r->n_waiting = r->n_holding = 0;
    r->synced = false;
}

/* Makes ticket live (holding or waiting at seq). */
static void
mirror_put(struct room *r, const char *ticket, int64_t seq, bool holding, int64_t expires_at_ms)
{
    tick_t *t = tick_find(r, ticket);

    if (seq > r->top) {
        r->top = seq;
    }
    if (r->tree == NULL) { /* the first ticket after a snapshot sets where the tree starts */
        r->base = seq;
        r->cap = 1024;
        r->tree = calloc((size_t)r->cap + 1, sizeof(*r->tree));
    }
    if (t == NULL) {
        size_t b = bucket_of(ticket);
        t = calloc(1, sizeof(*t));
        if (t == NULL) {
            return;
        }
        snprintf(t->ticket, sizeof(t->ticket), "%s", ticket);
        t->seq = seq;
        t->next = r->buckets[b];
        r->buckets[b] = t;
    } else if (!t->holding) {
        tree_add(r, t->seq, -1);
        r->n_waiting--;
    } else {
        r->n_holding--;
    }
    t->holding = holding;
    t->expires_at_ms = expires_at_ms;
    if (!holding) {
        tree_add(r, t->seq, 1);
        r->n_waiting++;
    } else {
        r->n_holding++;
    }
}

static void
mirror_drop(struct room *r, const char *ticket)
{
    tick_t **pp = &r->buckets[bucket_of(ticket)];

    for (; *pp != NULL; pp = &(*pp)->next) {
        if (strcmp((*pp)->ticket, ticket) == 0) {
            tick_t *t = *pp;
            if (!t->holding) {
                tree_add(r, t->seq, -1);
                r->n_waiting--;
            } else {
                r->n_holding--;
            }
            *pp = t->next;
            free(t);
            return;
        }
    }
}

/* Applies one message of the stream (under mu). */
static void
mirror_apply(struct room *r, const Lock__V1__WatchSemaphoreResponse *m)
{
    switch (m->kind) {
    case LOCK__V1__SEMAPHORE_EVENT_KIND__SEMAPHORE_EVENT_KIND_SNAPSHOT:
        if (r->synced || r->tree == NULL) { /* a new snapshot starts over */
            mirror_clear(r);
        }
        for (size_t i = 0; i < m->n_tickets; i++) {
            const Lock__V1__SemaphoreTicket *t = m->tickets[i];
            mirror_put(r, t->ticket, t->seq, t->holding, t->expires_at_ms);
        }
        if (m->seq > r->top) { /* tickets that left before it count too */
            r->top = m->seq;
        }
        r->synced = !m->more;
        break;
    case LOCK__V1__SEMAPHORE_EVENT_KIND__SEMAPHORE_EVENT_KIND_ENTER:
        mirror_put(r, m->ticket, m->seq, false, m->expires_at_ms);
        break;
    case LOCK__V1__SEMAPHORE_EVENT_KIND__SEMAPHORE_EVENT_KIND_ADMIT:
        mirror_put(r, m->ticket, m->seq, true, m->expires_at_ms);
        break;
    case LOCK__V1__SEMAPHORE_EVENT_KIND__SEMAPHORE_EVENT_KIND_EXTEND: {
        tick_t *t = tick_find(r, m->ticket);
        if (t != NULL) {
            t->expires_at_ms = m->expires_at_ms;
        }
        break;
    }
    case LOCK__V1__SEMAPHORE_EVENT_KIND__SEMAPHORE_EVENT_KIND_LEAVE:
    case LOCK__V1__SEMAPHORE_EVENT_KIND__SEMAPHORE_EVENT_KIND_EXPIRE:
        mirror_drop(r, m->ticket);
        break;
    default:
        break;
    }
    if (m->version != NULL && m->version[0] != '\0') {
        snprintf(r->version, sizeof(r->version), "%s", m->version);
    }
}

/* ---------- rounds: telling the watchers ---------- */

static void round_run(void *arg);

/* A round in delay_ms, unless one is due sooner (caller holds mu). */
static void
round_arm_in(struct room *r, int64_t delay_ms)
{
    svc_timers_t *timers = svc_server_timers(r->svc->server);
    int64_t due = svc_now_mono_ms() + delay_ms;

    if (r->stop || timers == NULL || (r->round_armed && r->round_due_ms <= due)) {
        return;
    }
    if (r->round_armed && !svc_timer_cancel(timers, &r->round)) {
        return; /* firing now: that round sees the change */
    }
    r->round_armed = true;
    r->round_due_ms = due;
    svc_timer_start(timers, &r->round, delay_ms, round_run, r);
}

/* Something changed: a round soon (caller holds mu). */
static void
round_arm(struct room *r)
{
    round_arm_in(r, ROUND_MS);
}

static void
watcher_unlink(struct room *r, room_watcher_t *w)
{
    if (r->far_cursor == w) {
        r->far_cursor = w->next;
    }
    if (w->prev != NULL) {
        w->prev->next = w->next;
    } else {
        r->watchers = w->next;
    }
    if (w->next != NULL) {
        w->next->prev = w->prev;
    }
    w->next = w->prev = NULL;
    for (room_watcher_t **pp = &r->by_ticket[bucket_of(w->ticket.ticket)]; *pp != NULL;
         pp = &(*pp)->hnext) {
        if (*pp == w) {
            *pp = w->hnext;
            break;
        }
    }
    w->hnext = NULL;
    svc_metric_set(r->m_watchers, (double)--r->n_watchers);
}

/*
 * An admission event for a ticket watched here ends its watch at once with
 * the token, without waiting for the next round: the freed slot's next user
 * hears of it a round sooner. Returns the watcher to end (caller holds mu,
 * ends it after unlocking), or NULL.
 */
static room_watcher_t *
admitted_now(struct room *r, const Lock__V1__WatchSemaphoreResponse *m)
{
    room_watcher_t *w = r->by_ticket[bucket_of(m->ticket)];

    if (!r->synced || m->kind != LOCK__V1__SEMAPHORE_EVENT_KIND__SEMAPHORE_EVENT_KIND_ADMIT) {
        return NULL;
    }
    while (w != NULL && strcmp(w->ticket.ticket, m->ticket) != 0) {
        w = w->hnext;
    }
    if (w == NULL || w->done) {
        return NULL;
    }
    w->done = true;
    w->end_admitted = true;
    w->end_expires_ms = m->expires_at_ms;
    watcher_unlink(r, w);
    return w;
}

/*
 * Whether w hears of its new position now. Every admission moves every
 * waiting ticket up by one, so telling each watcher of each move would cost
 * thousands of messages per admission. A watcher near the front hears of
 * every move; one further back when its position changed by a tenth or
 * more (at most every FAR_GAP_MS), or at least every FAR_TELL_MS while it
 * moves. What it hears is
 * never older than a round.
 */
static bool
worth_telling(const room_watcher_t *w, int64_t position, int64_t now_ms)
{
    int64_t moved = w->last_position - position;

    if (position == w->last_position) {
        return false;
    }
    return w->last_position < 0 || position <= NEAR_FRONT || moved < 0 ||
           (moved * 10 >= w->last_position && now_ms - w->told_ms >= FAR_GAP_MS) ||
           now_ms - w->told_ms >= FAR_TELL_MS;
}

/* A ticket lock-svc was asked about, found again by its name when the answer comes. */
typedef struct {
    struct room *room;
    char ticket[SVC_LOCK_TOKEN_MAX + 1];
    svc_sem_info_t info;
} verify_t;

static void
verified(const svc_err_t *err, void *arg)
{
    verify_t *v = arg;
    struct room *r = v->room;

    pthread_mutex_lock(&r->mu);
    for (room_watcher_t *w = r->watchers; w != NULL; w = w->next) {
        if (strcmp(w->ticket.ticket, v->ticket) == 0) {
            w->verifying = false;
            w->gone = err->code == SVC_NOT_FOUND;
        }
    }
    if (err->code == SVC_OK && !r->resync) { /* it lives: the mirror missed news, build it anew */
        static svc_log_limit_t limit = SVC_LOG_LIMIT_INIT(5);
        svc_logf_limited(&limit, SVC_LOG_WARN,
                         "waiting room %s: the mirror missed a ticket; taking a new snapshot",
                         r->name);
        r->resync = true;
        svc_client_stream_cancel(r->stream);
    }
    round_arm(r);
    r->verifies--;
    pthread_mutex_unlock(&r->mu);
    free(v);
}

/* Asks lock-svc whether w's ticket lives (caller holds mu). */
static void
verify(struct room *r, room_watcher_t *w)
{
    verify_t *v = calloc(1, sizeof(*v));

    if (v == NULL) {
        return;
    }
    v->room = r;
    snprintf(v->ticket, sizeof(v->ticket), "%s", w->ticket.ticket);
    w->verifying = true;
    r->verifies++;
    svc_sem_get_async(r->svc->lock_svc, r->name, v->ticket, NULL, &v->info, verified, v);
}

/*
 * Sends w its position if it changed (caller holds mu). Returns true when w
 * is to be ended now (admitted: *admitted set; or gone): it is unlinked and
 * marked done, and the caller ends its call after unlocking.
 */
static bool
watcher_update(struct room *r, room_watcher_t *w, int64_t now_ms, int *far_budget, bool *admitted,
               int64_t *expires_at_ms)
{
    tick_t *t = tick_find(r, w->ticket.ticket);
    Reservation__V1__WaitingRoomUpdate u = RESERVATION__V1__WAITING_ROOM_UPDATE__INIT;
    Reservation__V1__WatchWaitingRoomResponse resp =
        RESERVATION__V1__WATCH_WAITING_ROOM_RESPONSE__INIT;
    int64_t position;

    *admitted = false;
    if (t == NULL && !w->gone) {
        /* Entered after what the mirror has seen: its news is on the way. Else the mirror
         * should know it: lock-svc says whether it is gone or the mirror missed news. */
        if (w->ticket.seq <= r->top && !w->verifying) {
            verify(r, w);
        }
        return false;
    }
    if (t == NULL || t->holding) {
        *admitted = t != NULL;
        *expires_at_ms = t != NULL ? t->expires_at_ms : 0;
        w->done = true;
        watcher_unlink(r, w);
        return true;
    }
    position = tree_before(r, t->seq) + 1;
    if (worth_telling(w, position, now_ms)) {
        if (position > NEAR_FRONT && w->last_position >= 0 && (*far_budget)-- <= 0) {
            return false; /* a crowd far back moved at once: its news is spread over rounds */
        }
        u.position = position;
        u.admission_token = "";
        u.expires_at_ms = t->expires_at_ms;
        resp.update = &u;
        (void)svc_call_write(w->call, &resp.base);
        w->last_position = position;
        w->told_ms = now_ms;
    }
    return false;
}

/* Ends a watcher taken out of its room: with its admission, or NOT_FOUND. */
static void
watcher_end(reservation_service_t *svc, room_watcher_t *w, bool admitted, int64_t expires_at_ms)
{
    Reservation__V1__WaitingRoomUpdate u = RESERVATION__V1__WAITING_ROOM_UPDATE__INIT;
    Reservation__V1__WatchWaitingRoomResponse resp =
        RESERVATION__V1__WATCH_WAITING_ROOM_RESPONSE__INIT;
    char token[RSV_ADMISSION_TOKEN_MAX];
    svc_err_t err;

    if (!admitted) {
        svc_logf(SVC_LOG_INFO, "waiting room %s: ticket %" PRId64 " is gone; its watch ends",
                 w->room->name, w->ticket.seq);
        svc_err_set(&err, SVC_NOT_FOUND, "the ticket is gone: it left, or its place ran out");
        svc_call_fail(w->call, &err);
        return;
    }
    if (rsv_admission_sign(&svc->opts.admission_key, w->user_id, w->room->schedule_id,
                           w->ticket.ticket, expires_at_ms, token, sizeof(token)) != 0) {
        svc_err_set(&err, SVC_INTERNAL, "cannot sign the admission");
        svc_call_fail(w->call, &err);
        return;
    }
    u.position = 0;
    u.admission_token = token;
    u.expires_at_ms = expires_at_ms;
    resp.update = &u;
    (void)svc_call_write(w->call, &resp.base);
    svc_call_finish(w->call, NULL);
}

/* A place renewal on its way, and its room. */
typedef struct {
    struct room *room;
    svc_sem_ticket_t ticket; /* the call may end before lock-svc answers */
} renewal_t;

static void
renewed(const svc_err_t *err, void *arg)
{
    renewal_t *rn = arg;
    struct room *r = rn->room;

    if (err->code != SVC_OK) { /* the place runs out; its watcher then hears NOT_FOUND */
        static svc_log_limit_t limit = SVC_LOG_LIMIT_INIT(5);
        svc_logf_limited(&limit, SVC_LOG_WARN, "waiting room %s: a watched place not renewed: %s",
                         rn->ticket.name, err->msg);
    }
    pthread_mutex_lock(&r->mu);
    r->renewals--;
    if (r->renew_waits) {
        r->renew_waits = false;
        round_arm(r);
    }
    pthread_mutex_unlock(&r->mu);
    free(rn);
}

/*
 * A watched place is renewed when less than half of ROOM_PLACE_MS is left of
 * it, so watching keeps it (caller holds mu; t is w's ticket in the mirror,
 * waiting: renewing a permit would change the admission's lease). Places
 * that come due together (a crowd that entered at once) go RENEWALS_MAX at a
 * time, the rest in the rounds after, so lock-svc and this instance never
 * hold one call per watcher.
 */
static void
watcher_renew(struct room *r, room_watcher_t *w, const tick_t *t, int64_t now_ms,
              int64_t now_unix_ms)
{
    int64_t place_ms = r->svc->opts.room_place_ms;
    renewal_t *rn;

    if (t->expires_at_ms - now_unix_ms > place_ms / 2 || now_ms - w->renewed_ms < place_ms / 4) {
        return; /* not due, or renewed a moment ago and the mirror has not seen it yet */
    }
    if (r->renewals >= RENEWALS_MAX) {
        r->renew_waits = true;
        return;
    }
    if ((rn = malloc(sizeof(*rn))) == NULL) {
        return;
    }
    w->renewed_ms = now_ms;
    rn->room = r;
    rn->ticket = w->ticket;
    r->renewals++;
    svc_sem_extend_async(r->svc->lock_svc, &rn->ticket, place_ms, NULL, renewed, rn);
}

/* A round: every watcher hears of its position if it changed; admitted or gone ones end. */
static void
round_run(void *arg)
{
    struct room *r = arg;
    room_watcher_t *ended = NULL;
    int64_t now = svc_now_mono_ms(), now_unix = svc_now_unix_ms();
    int far_budget = FAR_PER_ROUND;

    pthread_mutex_lock(&r->mu);
    r->round_armed = false;
    r->rounds_running++;
    /*
     * From where the last round's far-back budget ran out, round the list to
     * there: when a crowd far back is due, each round tells the next part of
     * it, and nobody waits behind the same head of the list round after round.
     */
    room_watcher_t *start = r->far_cursor != NULL ? r->far_cursor : r->watchers;
    r->far_cursor = NULL;
    r->round_no++;
    for (int pass = 0; pass < 2 && r->synced; pass++) {
        for (room_watcher_t *w = pass == 0 ? start : r->watchers, *next; w != NULL; w = next) {
            int before = far_budget;
            next = w->next;
            if (w->seen_round == r->round_no) {
                break; /* the second pass is back where the first began */
            }
            w->seen_round = r->round_no;
            if (watcher_update(r, w, now, &far_budget, &w->end_admitted, &w->end_expires_ms)) {
                w->next = ended;
                ended = w;
                continue;
            }
            if (before == 0 && far_budget < 0 && r->far_cursor == NULL) {
                r->far_cursor = w; /* the first not told: the next round begins here */
            }
            const tick_t *t = tick_find(r, w->ticket.ticket);
            if (t != NULL && !t->holding) {
                watcher_renew(r, w, t, now, now_unix);
            }
        }
    }
    if (far_budget < 0) {
        round_arm(r); /* the rest of the crowd's news */
    }
    if (r->watchers != NULL) { /* quiet rooms too: the watched places are renewed in time */
        round_arm_in(r, r->svc->opts.room_place_ms / 6);
    }
    pthread_mutex_unlock(&r->mu);
    while (ended != NULL) {
        room_watcher_t *w = ended;
        ended = w->next;
        watcher_end(r->svc, w, w->end_admitted, w->end_expires_ms);
    }
    pthread_mutex_lock(&r->mu);
    r->rounds_running--;
    pthread_mutex_unlock(&r->mu);
}

/* ---------- the stream ---------- */

/* Follows lock-svc's events of the room until stopped, reconnecting as needed. */
static void *
room_thread(void *arg)
{
    struct room *r = arg;
    svc_arena_t *arena = svc_arena_create();

    while (arena != NULL) {
        Lock__V1__WatchSemaphoreRequest req = LOCK__V1__WATCH_SEMAPHORE_REQUEST__INIT;
        svc_call_opts_t opts = {.timeout_ms = STREAM_MS};
        svc_client_stream_t *st;
        ProtobufCMessage *msg;
        char after[sizeof(r->version)];
        svc_err_t err;

        svc_err_set(&err, SVC_UNAVAILABLE, "the stream ended");
        pthread_mutex_lock(&r->mu);
        if (r->stop) {
            pthread_mutex_unlock(&r->mu);
            break;
        }
        snprintf(after, sizeof(after), "%s", r->synced && !r->resync ? r->version : "");
        r->resync = false;
        pthread_mutex_unlock(&r->mu);
        req.name = r->name;
        req.after_version = after;
        st = svc_client_stream_open(r->svc->lock_svc, "/lock.v1.LockService/WatchSemaphore", &opts,
                                    &err);
        if (st != NULL && svc_client_stream_send(st, &req.base, &err) == 0 &&
            svc_client_stream_close_send(st, &err) == 0) {
            pthread_mutex_lock(&r->mu);
            r->stream = r->stop ? NULL : st;
            if (r->stop) {
                svc_client_stream_cancel(st);
            }
            pthread_mutex_unlock(&r->mu);
            while (svc_client_stream_recv(st, &lock__v1__watch_semaphore_response__descriptor,
                                          arena, &msg, &err) == 1) {
                room_watcher_t *now;
                pthread_mutex_lock(&r->mu);
                mirror_apply(r, (const Lock__V1__WatchSemaphoreResponse *)msg);
                now = admitted_now(r, (const Lock__V1__WatchSemaphoreResponse *)msg);
                if (r->synced) {
                    svc_metric_set(r->m_waiting, (double)r->n_waiting);
                    svc_metric_set(r->m_holding, (double)r->n_holding);
                }
                if (r->synced) {
                    round_arm(r);
                }
                pthread_mutex_unlock(&r->mu);
                if (now != NULL) {
                    watcher_end(r->svc, now, true, now->end_expires_ms);
                }
                svc_arena_reset(arena);
            }
        }
        pthread_mutex_lock(&r->mu);
        r->stream = NULL;
        bool stop = r->stop;
        pthread_mutex_unlock(&r->mu);
        svc_client_stream_destroy(st);
        if (stop) {
            break;
        }
        if (err.code != SVC_DEADLINE_EXCEEDED) { /* else simply its hour was over */
            static svc_log_limit_t limit = SVC_LOG_LIMIT_INIT(5);
            svc_logf_limited(&limit, SVC_LOG_WARN,
                             "waiting room %s: lock-svc's events broke off: %s", r->name, err.msg);
            svc_sleep_ms(RECONNECT_MS);
        }
    }
    svc_arena_destroy(arena);
    return NULL;
}

/* The mirror of schedule_id's room, started on first use; NULL when out of memory. */
static struct room *
room_get(reservation_service_t *svc, int64_t schedule_id)
{
    struct room *r;

    pthread_mutex_lock(&svc->rooms_mu);
    for (r = svc->watched; r != NULL && r->schedule_id != schedule_id; r = r->next) {
    }
    if (r == NULL && (r = calloc(1, sizeof(*r))) != NULL) {
        r->svc = svc;
        r->schedule_id = schedule_id;
        reservation_room_name(r->name, sizeof(r->name), schedule_id);
        r->round.heap_index = -1;
        char labels[48] = "", id[24];
        snprintf(id, sizeof(id), "%" PRId64, schedule_id);
        svc_metric_label(labels, sizeof(labels), "schedule", id);
        r->m_waiting =
            svc_metric(SVC_METRIC_GAUGE, "waiting_room_length",
                       "Users in a waiting room's line (as this instance mirrors it).", labels);
        r->m_holding =
            svc_metric(SVC_METRIC_GAUGE, "waiting_room_admitted",
                       "Users a waiting room admits now (as this instance mirrors it).", labels);
        r->m_watchers = svc_metric(SVC_METRIC_GAUGE, "waiting_room_watchers",
                                   "WatchWaitingRoom streams open on this instance.", labels);
        pthread_mutex_init(&r->mu, NULL);
        if (pthread_create(&r->thread, NULL, room_thread, r) != 0) {
            pthread_mutex_destroy(&r->mu);
            free(r);
            r = NULL;
        } else {
            r->next = svc->watched;
            svc->watched = r;
        }
    }
    pthread_mutex_unlock(&svc->rooms_mu);
    return r;
}

/* ---------- WatchWaitingRoom ---------- */

static void
watch_cancelled(svc_call_t *call, void *arg)
{
    room_watcher_t *w = arg;
    struct room *r = w->room;
    bool mine = false;
    svc_err_t err;

    pthread_mutex_lock(&r->mu);
    if (!w->done) {
        w->done = mine = true;
        watcher_unlink(r, w);
    }
    pthread_mutex_unlock(&r->mu);
    if (mine) { /* the place stays until its TTL: watching again resumes */
        svc_err_set(&err, SVC_CANCELLED, "stopped watching");
        svc_call_fail(call, &err);
    }
}

void
reservation_room_watch(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Reservation__V1__WatchWaitingRoomRequest *req = (const void *)msg;
    reservation_service_t *svc = user;
    room_watcher_t *w = NULL;
    int64_t schedule_id, user_id;
    svc_sem_ticket_t t;
    struct room *r;
    svc_err_t err;

    if (reservation_room_ticket_parse(svc, req->ticket, &schedule_id, &user_id, &t, &err) != 0 ||
        svc_auth_check_user(svc->opts.auth, call, user_id, &err) != 0) {
        svc_call_fail(call, &err);
        return;
    }
    if ((w = svc_call_alloc(call, sizeof(*w))) == NULL) {
        return;
    }
    if ((r = room_get(svc, schedule_id)) == NULL) {
        svc_call_fail_oom(call);
        return;
    }
    w->room = r;
    w->call = call;
    w->user_id = user_id;
    w->ticket = t;
    w->last_position = -1;
    pthread_mutex_lock(&r->mu);
    w->next = r->watchers;
    if (r->watchers != NULL) {
        r->watchers->prev = w;
    }
    r->watchers = w;
    w->hnext = r->by_ticket[bucket_of(w->ticket.ticket)];
    r->by_ticket[bucket_of(w->ticket.ticket)] = w;
    svc_metric_set(r->m_watchers, (double)++r->n_watchers);
    w->renewed_ms = svc_now_mono_ms() - svc->opts.room_place_ms; /* renewed once due */
    round_arm(r); /* its first message: where it stands now */
    pthread_mutex_unlock(&r->mu);
    svc_call_on_cancel(call, watch_cancelled, w);
}

void
reservation_rooms_stop(reservation_service_t *svc)
{
    struct room *r;

    pthread_mutex_lock(&svc->rooms_mu);
    r = svc->watched;
    svc->watched = NULL;
    pthread_mutex_unlock(&svc->rooms_mu);
    while (r != NULL) {
        struct room *next = r->next;
        pthread_mutex_lock(&r->mu);
        r->stop = true;
        svc_client_stream_cancel(r->stream);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->thread, NULL);
        pthread_mutex_lock(&r->mu);
        svc_timers_t *timers = svc_server_timers(svc->server);
        if (r->round_armed && (timers == NULL || svc_timer_cancel(timers, &r->round))) {
            r->round_armed = false; /* stopped timers never run what they had */
        }
        for (int i = 0; i < 2000 && (r->round_armed || r->rounds_running > 0 || r->verifies > 0 ||
                                     r->renewals > 0);
             i++) {
            /* a round on its way: let it end (timers that stopped first never run it) */
            pthread_mutex_unlock(&r->mu);
            svc_sleep_ms(1);
            pthread_mutex_lock(&r->mu);
        }
        pthread_mutex_unlock(&r->mu);
        mirror_clear(r);
        pthread_mutex_destroy(&r->mu);
        free(r);
        r = next;
    }
}
