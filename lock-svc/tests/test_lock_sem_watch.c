/*
 * test_lock_sem_watch.c: WatchSemaphore over real gRPC, two lock-svc
 * instances on one real Redis: the snapshot then every event in order across
 * instances (a lease end's expire and admit pushed with nobody calling), a
 * watcher joining behind the reader, resuming from a version, a snapshot in
 * parts, a watcher mirroring a two-instance storm from its events alone, the
 * C client's asynchronous watch, and how a watch ends when lock-svc shuts
 * down or loses Redis. argv[1] is the lock-svc binary.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "lock/v1/lock.pb-c.h"
#include "sem_test.h"
#include "svc/client.h"
#include "svc/lock_client.h"
#include "svc/timer.h"
#include "testenv.h"

typedef struct {
    svc_client_stream_t *s;
    svc_arena_t *arena;
} watch_t;

static void
watch_open(watch_t *w, int i, const char *name, const char *after)
{
    Lock__V1__WatchSemaphoreRequest req = LOCK__V1__WATCH_SEMAPHORE_REQUEST__INIT;
    svc_call_opts_t opts = {.timeout_ms = 20000};
    svc_err_t err;

    req.name = (char *)name;
    req.after_version = (char *)after;
    w->arena = svc_arena_create();
    w->s = svc_client_stream_open(client[i], "/lock.v1.LockService/WatchSemaphore", &opts, &err);
    assert_non_null(w->s);
    assert_int_equal(svc_client_stream_send(w->s, &req.base, &err), 0);
    assert_int_equal(svc_client_stream_close_send(w->s, &err), 0);
}

/* The next message (in w's arena); fails the test when the stream ends or breaks. */
static Lock__V1__WatchSemaphoreResponse *
watch_next(watch_t *w)
{
    ProtobufCMessage *msg;
    svc_err_t err;
    int rc = svc_client_stream_recv(w->s, &lock__v1__watch_semaphore_response__descriptor, w->arena,
                                    &msg, &err);

    if (rc != 1) {
        fail_msg("watch ended: %d %s", rc, err.msg);
    }
    return (Lock__V1__WatchSemaphoreResponse *)msg;
}

static void
watch_close(watch_t *w)
{
    svc_client_stream_destroy(w->s);
    svc_arena_destroy(w->arena);
}

/* a < b as versions ("<ms>-<n>"). */
static bool
version_less(const char *a, const char *b)
{
    unsigned long long am, an, bm, bn;

    assert_int_equal(sscanf(a, "%llu-%llu", &am, &an), 2);
    assert_int_equal(sscanf(b, "%llu-%llu", &bm, &bn), 2);
    return am < bm || (am == bm && an < bn);
}

/* The next event is kind for ticket, after *version (which it advances). */
static Lock__V1__WatchSemaphoreResponse *
expect_event(watch_t *w, Lock__V1__SemaphoreEventKind kind, const ticket_t *t, char *version)
{
    Lock__V1__WatchSemaphoreResponse *m = watch_next(w);

    if (m->kind != kind || strcmp(m->ticket, t->ticket) != 0) {
        fail_msg("wanted event %d for seq %lld, got %d for seq %lld", kind, (long long)t->seq,
                 m->kind, (long long)m->seq);
    }
    assert_int_equal(m->seq, t->seq);
    assert_true(version_less(version, m->version));
    snprintf(version, 48, "%s", m->version);
    return m;
}

#define EV(k) LOCK__V1__SEMAPHORE_EVENT_KIND__SEMAPHORE_EVENT_KIND_##k

/*
 * A watcher on instance 1 gets the snapshot, then the events caused on
 * instance 0 in order, including the admissions a lease end makes with
 * nobody calling; a second watcher joining later (behind the reader) misses
 * nothing either; and a watcher resuming from a version gets what came after.
 */
static void
test_watch_snapshot_then_events(void **state)
{
    ticket_t a, b, c, d;
    watch_t w1, w2, w3;
    Lock__V1__WatchSemaphoreResponse *m;
    char v1[48], v2[48];
    svc_err_t err;

    (void)state;
    assert_int_equal(enter(0, "watch:sem", "a", 1, 30000, 30000, &a, &err), 0);
    assert_int_equal(enter(0, "watch:sem", "b", 1, 400, 30000, &b, &err), 0);
    watch_open(&w1, 1, "watch:sem", "");
    m = watch_next(&w1);
    assert_int_equal(m->kind, EV(SNAPSHOT));
    assert_int_equal(m->limit, 1);
    assert_false(m->more);
    assert_int_equal(m->n_tickets, 2);
    assert_string_equal(m->tickets[0]->ticket, a.ticket);
    assert_true(m->tickets[0]->holding);
    assert_int_equal(m->tickets[0]->seq, a.seq);
    assert_string_equal(m->tickets[1]->ticket, b.ticket);
    assert_false(m->tickets[1]->holding);
    assert_int_equal(m->tickets[1]->expires_at_ms, b.expires_at_ms);
    assert_string_equal(m->version, b.version);
    snprintf(v1, sizeof(v1), "%s", m->version);

    assert_int_equal(enter(0, "watch:sem", "c", 1, 30000, 30000, &c, &err), 0);
    m = expect_event(&w1, EV(ENTER), &c, v1);
    assert_int_equal(m->expires_at_ms, c.expires_at_ms);

    /* A second watcher joins on the same instance: its snapshot has c already. */
    watch_open(&w2, 1, "watch:sem", "");
    m = watch_next(&w2);
    assert_int_equal(m->kind, EV(SNAPSHOT));
    assert_int_equal(m->n_tickets, 3);
    assert_string_equal(m->tickets[2]->ticket, c.ticket);
    snprintf(v2, sizeof(v2), "%s", m->version);
    assert_string_equal(v2, v1);

    /* a leaves on instance 0: b is admitted in the same script; both watchers hear it. */
    assert_int_equal(leave(0, "watch:sem", a.ticket, &err), 0);
    expect_event(&w1, EV(LEAVE), &a, v1);
    m = expect_event(&w1, EV(ADMIT), &b, v1);
    assert_true(m->expires_at_ms > svc_now_unix_ms() + 100);
    expect_event(&w2, EV(LEAVE), &a, v2);
    expect_event(&w2, EV(ADMIT), &b, v2);
    /* b's 400 ms lease runs out, nobody calls: its end and c's admission are pushed. */
    int64_t t0 = svc_now_mono_ms();
    expect_event(&w1, EV(EXPIRE), &b, v1);
    expect_event(&w1, EV(ADMIT), &c, v1);
    fprintf(stderr, "watch: lease end and next admission pushed %lld ms after the admit\n",
            (long long)(svc_now_mono_ms() - t0));
    expect_event(&w2, EV(EXPIRE), &b, v2);
    expect_event(&w2, EV(ADMIT), &c, v2);
    assert_string_equal(v1, v2);
    watch_close(&w2);

    /* Resume from v2 (before d and e): what came after, without a snapshot. */
    assert_int_equal(enter(1, "watch:sem", "d", 1, 30000, 30000, &d, &err), 0);
    expect_event(&w1, EV(ENTER), &d, v1);
    assert_int_equal(enter(1, "watch:sem", "e", 1, 30000, 30000, &a, &err), 0);
    int64_t opened = svc_now_mono_ms();
    watch_open(&w3, 1, "watch:sem", v2); /* behind w1, whose XREAD is blocked: woken */
    expect_event(&w3, EV(ENTER), &d, v2);
    /* The reader was woken for it, not left to its 1 s XREAD. */
    fprintf(stderr, "watch: resumed watcher had its first event after %lld ms\n",
            (long long)(svc_now_mono_ms() - opened));
    assert_true(svc_now_mono_ms() - opened < 700);
    expect_event(&w3, EV(ENTER), &a, v2);
    expect_event(&w1, EV(ENTER), &a, v1);
    watch_close(&w3);
    watch_close(&w1);
    assert_int_equal(leave(0, "watch:sem", c.ticket, &err), 0);
    assert_int_equal(leave(0, "watch:sem", d.ticket, &err), 0);
    assert_int_equal(leave(0, "watch:sem", a.ticket, &err), 0);
}

static void
test_watch_bad_arguments(void **state)
{
    watch_t w;
    ProtobufCMessage *msg;
    svc_err_t err;

    (void)state;
    watch_open(&w, 0, "watch:bad", "not-a-version");
    assert_int_equal(svc_client_stream_recv(w.s, &lock__v1__watch_semaphore_response__descriptor,
                                            w.arena, &msg, &err),
                     0);
    assert_int_equal(svc_client_stream_finish(w.s, &err), -1);
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    watch_close(&w);
    watch_open(&w, 0, "bad name", "");
    assert_int_equal(svc_client_stream_recv(w.s, &lock__v1__watch_semaphore_response__descriptor,
                                            w.arena, &msg, &err),
                     0);
    assert_int_equal(svc_client_stream_finish(w.s, &err), -1);
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    watch_close(&w);
}

/*
 * A watcher mirrors a storm on both instances from its events alone: every
 * fan enters, is admitted in seq order, never more than the limit at once,
 * and leaves; nothing is missing or doubled.
 */
static void
test_watch_mirrors_a_storm(void **state)
{
    static const char *kinds[] = {"", "", "enter", "admit", "leave", "expire", "extend"};
    replay_t *rp = calloc(1, sizeof(*rp));
    Lock__V1__WatchSemaphoreResponse *m;
    char version[48];
    watch_t w;

    (void)state;
    rp->limit = STORM_LIMIT;
    watch_open(&w, 1, "storm:watched", "");
    m = watch_next(&w);
    assert_int_equal(m->kind, EV(SNAPSHOT));
    assert_int_equal(m->n_tickets, 0);
    snprintf(version, sizeof(version), "%s", m->version);
    run_storm("storm:watched");
    while (rp->gone < STORM_FANS) {
        m = watch_next(&w);
        assert_true(m->kind >= EV(ENTER) && m->kind <= EV(EXTEND));
        assert_true(version_less(version, m->version));
        snprintf(version, sizeof(version), "%s", m->version);
        replay_apply(rp, kinds[m->kind], m->seq);
    }
    assert_int_equal(rp->enters, STORM_FANS);
    assert_int_equal(rp->admits, STORM_FANS);
    assert_int_equal(rp->holders, 0);
    assert_int_equal(rp->n_waiting, 0);
    watch_close(&w);
    free(rp);
}

static void *
storm_thread(void *arg)
{
    run_storm(arg);
    return NULL;
}

/* Whether seq is among the n in v. */
static bool
seen(const int64_t *v, int n, int64_t seq)
{
    for (int i = 0; i < n; i++) {
        if (v[i] == seq) {
            return true;
        }
    }
    return false;
}

/*
 * A watcher that joins mid-storm, behind the reader that already follows
 * the semaphore for another watcher on the same instance, gets its snapshot
 * and then every event after it: each ticket an event names is in its
 * snapshot or entered after it. (The reader's read on its way used to hand
 * the late watcher the events after its own start and never the ones in
 * between: tickets appeared that never entered.)
 */
static void
test_late_watcher_misses_nothing(void **state)
{
    enum { LATE = 8 };
    Lock__V1__WatchSemaphoreResponse *m;
    int64_t *known = calloc((size_t)LATE * STORM_FANS, sizeof(*known));
    int n_known[LATE] = {0}, unknown = 0;
    pthread_t storm;
    watch_t w1, late[LATE];

    (void)state;
    watch_open(&w1, 1, "storm:late", "");
    assert_int_equal(watch_next(&w1)->kind, EV(SNAPSHOT));
    assert_int_equal(pthread_create(&storm, NULL, storm_thread, "storm:late"), 0);
    for (int k = 0; k < LATE; k++) { /* each joins while the reader follows the log for w1 */
        for (int i = 0; i < 3; i++) {
            (void)watch_next(&w1);
        }
        watch_open(&late[k], 1, "storm:late", "");
        m = watch_next(&late[k]);
        assert_int_equal(m->kind, EV(SNAPSHOT));
        for (size_t i = 0; i < m->n_tickets; i++) {
            known[k * STORM_FANS + n_known[k]++] = m->tickets[i]->seq;
        }
    }
    pthread_join(storm, NULL);
    for (int k = 0; k < LATE; k++) {
        int64_t *mine = &known[k * STORM_FANS];
        for (int gone = 0; gone < n_known[k];) { /* until every ticket it knows has left */
            m = watch_next(&late[k]);
            if (m->kind == EV(ENTER) && n_known[k] < STORM_FANS) {
                mine[n_known[k]++] = m->seq;
            } else if (!seen(mine, n_known[k], m->seq)) {
                unknown++;
            } else if (m->kind == EV(LEAVE) || m->kind == EV(EXPIRE)) {
                gone++;
            }
        }
        watch_close(&late[k]);
    }
    fprintf(stderr, "%d late watchers: %d events about tickets they never saw\n", LATE, unknown);
    assert_int_equal(unknown, 0);
    watch_close(&w1);
    free(known);
}

/* What an asynchronous watch heard, for the test thread. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
    svc_sem_event_kind_t kinds[64];
    int64_t seqs[64];
    int snapshot_tickets;
    bool ended;
    svc_err_t end;
} heard_t;

static void
heard_event(const svc_sem_event_t *ev, void *arg)
{
    heard_t *h = arg;

    pthread_mutex_lock(&h->mu);
    if (h->n < 64) {
        h->kinds[h->n] = ev->kind;
        h->seqs[h->n] = ev->seq;
        h->n++;
    }
    if (ev->kind == SVC_SEM_SNAPSHOT) {
        h->snapshot_tickets = (int)ev->n_tickets;
    }
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

static void
heard_end(const svc_err_t *err, void *arg)
{
    heard_t *h = arg;

    pthread_mutex_lock(&h->mu);
    h->ended = true;
    h->end = *err;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

/* Waits up to 5 s until h heard n messages (or ended, with end). */
static void
heard_wait(heard_t *h, int n, bool end)
{
    int64_t until = svc_now_mono_ms() + 5000;

    pthread_mutex_lock(&h->mu);
    while ((end ? !h->ended : h->n < n) && svc_now_mono_ms() < until) {
        pthread_mutex_unlock(&h->mu);
        svc_sleep_ms(5);
        pthread_mutex_lock(&h->mu);
    }
    pthread_mutex_unlock(&h->mu);
}

/* The asynchronous watch of the C client: snapshot, events in order, and its end. */
static void
test_client_watch(void **state)
{
    static heard_t h = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    svc_sem_opts_t opts = {.owner = "w-a", .limit = 1, .lease_ms = 30000, .ticket_ttl_ms = 30000};
    svc_sem_ticket_t a, b;
    svc_sem_watch_t *w;
    svc_err_t err;

    (void)state;
    assert_int_equal(svc_sem_enter(client[0], "cwatch:sem", &opts, &a, &err), 0);
    w = svc_sem_watch_start(client[1], "cwatch:sem", NULL, NULL, heard_event, heard_end, &h, &err);
    assert_non_null(w);
    heard_wait(&h, 1, false);
    opts.owner = "w-b";
    assert_int_equal(svc_sem_enter(client[0], "cwatch:sem", &opts, &b, &err), 0);
    svc_sem_leave_async(client[0], &a, NULL);
    heard_wait(&h, 4, false);
    pthread_mutex_lock(&h.mu);
    assert_int_equal(h.n, 4);
    assert_int_equal(h.kinds[0], SVC_SEM_SNAPSHOT);
    assert_int_equal(h.snapshot_tickets, 1);
    assert_int_equal(h.kinds[1], SVC_SEM_ENTER);
    assert_int_equal(h.seqs[1], b.seq);
    assert_int_equal(h.kinds[2], SVC_SEM_LEAVE);
    assert_int_equal(h.seqs[2], a.seq);
    assert_int_equal(h.kinds[3], SVC_SEM_ADMIT);
    assert_int_equal(h.seqs[3], b.seq);
    assert_false(h.ended); /* a watch has no deadline */
    pthread_mutex_unlock(&h.mu);
    svc_sem_watch_close(w);
    heard_wait(&h, 0, true);
    pthread_mutex_lock(&h.mu);
    assert_true(h.ended);
    assert_int_equal(h.end.code, SVC_CANCELLED);
    pthread_mutex_unlock(&h.mu);
    svc_sem_leave_async(client[0], &b, NULL);
}

/* A big line comes in several snapshot messages, in order, the last without `more`. */
static void
test_big_snapshot_comes_in_parts(void **state)
{
    enum { N = 2100 };
    static svc_sem_ticket_t tickets[N];
    waiter_t w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, {0}};
    svc_sem_opts_t opts = {.limit = 1, .lease_ms = 60000, .ticket_ttl_ms = 60000};
    Lock__V1__WatchSemaphoreResponse *m;
    char owner[32];
    watch_t wt;
    int64_t last_seq = 0;
    int seen = 0, parts = 0;

    (void)state;
    for (int i = 0; i < N; i++) { /* one after another: seq follows i */
        snprintf(owner, sizeof(owner), "big-%d", i);
        opts.owner = owner;
        svc_sem_enter_async(client[i % 2], "big:sem", &opts, &tickets[i], waiter_done, &w);
        assert_int_equal(waiter_wait(&w).code, SVC_OK);
    }
    watch_open(&wt, 0, "big:sem", "");
    do {
        m = watch_next(&wt);
        assert_int_equal(m->kind, EV(SNAPSHOT));
        assert_true(m->n_tickets <= 1000);
        for (size_t i = 0; i < m->n_tickets; i++, seen++) {
            assert_true(m->tickets[i]->seq > last_seq); /* the holder, then the line in order */
            assert_int_equal(m->tickets[i]->holding, seen == 0);
            last_seq = m->tickets[i]->seq;
        }
        parts++;
        svc_arena_reset(wt.arena);
    } while (m->more);
    assert_int_equal(seen, N);
    assert_int_equal(parts, 3);
    watch_close(&wt);
    for (int i = 0; i < N; i++) {
        svc_sem_leave_async(client[i % 2], &tickets[i], NULL);
    }
}

/*
 * A watch never ends by itself: at shutdown lock-svc ends it at once with
 * UNAVAILABLE instead of spending its whole grace period (10 s) on it.
 */
static void
test_shutdown_ends_watches_at_once(void **state)
{
    Lock__V1__WatchSemaphoreResponse *m;
    ProtobufCMessage *msg;
    watch_t w;
    svc_err_t err;
    int64_t t0;

    (void)state;
    watch_open(&w, 1, "bye:sem", "");
    m = watch_next(&w);
    assert_int_equal(m->kind, EV(SNAPSHOT));
    t0 = svc_now_mono_ms();
    assert_int_equal(testenv_proc_signal(&inst[1], SIGTERM), 0);
    assert_int_equal(svc_client_stream_recv(w.s, &lock__v1__watch_semaphore_response__descriptor,
                                            w.arena, &msg, &err),
                     0);
    assert_int_equal(svc_client_stream_finish(w.s, &err), -1);
    assert_int_equal(err.code, SVC_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "shutting down"));
    watch_close(&w);
    while (testenv_proc_alive(&inst[1]) && svc_now_mono_ms() - t0 < 15000) {
        svc_sleep_ms(20);
    }
    fprintf(stderr, "lock-svc with a watch stopped in %lld ms\n",
            (long long)(svc_now_mono_ms() - t0));
    assert_true(svc_now_mono_ms() - t0 < 5000);
    assert_int_equal(inst[1].status, 0); /* a clean exit (and, under ASan, no leak) */
    assert_int_equal(testenv_proc_restart(&inst[1]), 0);
}

/*
 * Redis goes away: a watcher is told UNAVAILABLE (events may be lost), and
 * watching again from its version gives a snapshot once Redis is back
 * empty, not a resume over the lost log.
 */
static void
test_watch_ends_when_redis_is_lost(void **state)
{
    Lock__V1__WatchSemaphoreResponse *m;
    ProtobufCMessage *msg;
    ticket_t t;
    watch_t w;
    char version[48];
    svc_err_t err;
    int rc = -1;

    (void)state;
    assert_int_equal(enter(0, "lost:sem", "x", 1, 30000, 30000, &t, &err), 0);
    watch_open(&w, 0, "lost:sem", "");
    m = watch_next(&w);
    assert_int_equal(m->kind, EV(SNAPSHOT));
    assert_int_equal(m->n_tickets, 1);
    snprintf(version, sizeof(version), "%s", m->version);
    static heard_t h = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    svc_sem_watch_t *aw =
        svc_sem_watch_start(client[1], "lost:sem", NULL, NULL, heard_event, heard_end, &h, &err);
    assert_non_null(aw);
    heard_wait(&h, 1, false);
    testenv_redis_kill(&redis);
    assert_int_equal(svc_client_stream_recv(w.s, &lock__v1__watch_semaphore_response__descriptor,
                                            w.arena, &msg, &err),
                     0);
    assert_int_equal(svc_client_stream_finish(w.s, &err), -1);
    assert_int_equal(err.code, SVC_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "after_version"));
    watch_close(&w);
    heard_wait(&h, 0, true); /* the C client's watch ends too, in its own words */
    pthread_mutex_lock(&h.mu);
    assert_true(h.ended);
    assert_int_equal(h.end.code, SVC_UNAVAILABLE);
    assert_string_equal(h.end.msg, "lock service unavailable");
    pthread_mutex_unlock(&h.mu);
    svc_sem_watch_close(aw);
    assert_int_equal(testenv_redis_restart(&redis), 0); /* empty */
    for (int i = 0; i < 100 && rc != 0; i++) {
        sem_info_t info;
        if ((rc = get(0, "lost:sem", NULL, &info, &err)) != 0) {
            svc_sleep_ms(50);
        }
    }
    assert_int_equal(rc, 0);
    svc_sleep_ms(300); /* the reader reconnects too */
    /* A new log with events newer than the version: still not the log it knew. */
    assert_int_equal(enter(1, "lost:sem", "y", 1, 30000, 30000, &t, &err), 0);
    watch_open(&w, 0, "lost:sem", version);
    m = watch_next(&w);
    assert_int_equal(m->kind, EV(SNAPSHOT)); /* the log it knew is gone: no resume */
    assert_int_equal(m->n_tickets, 1);
    assert_string_equal(m->tickets[0]->ticket, t.ticket);
    watch_close(&w);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_watch_snapshot_then_events),
        cmocka_unit_test(test_watch_bad_arguments),
        cmocka_unit_test(test_watch_mirrors_a_storm),
        cmocka_unit_test(test_late_watcher_misses_nothing),
        cmocka_unit_test(test_client_watch),
        cmocka_unit_test(test_big_snapshot_comes_in_parts),
        cmocka_unit_test(test_shutdown_ends_watches_at_once),
        cmocka_unit_test(test_watch_ends_when_redis_is_lost),
    };

    if (argc < 2) {
        fprintf(stderr, "usage: %s path/to/lock-svc\n", argv[0]);
        return 2;
    }
    lock_svc_path = argv[1];
    return testenv_group_result(
        cmocka_run_group_tests(tests, sem_test_setup, testenv_group_teardown(sem_test_teardown)));
}
