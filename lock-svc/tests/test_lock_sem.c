/*
 * test_lock_sem.c: lock-svc's semaphores over real gRPC, two lock-svc
 * instances on one real Redis: the limit under a storm of enters across both
 * instances, FIFO admission (checked by replaying the semaphore's event
 * log), leave admitting the next at once, a lease end admitting the next
 * with nobody calling (also after every instance restarted), idempotent
 * enter, a waiting ticket's TTL, a lost Enter reply, the error codes, and
 * the C client's unary calls. Watch is in test_lock_sem_watch.c. argv[1] is
 * the lock-svc binary.
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

static void
expect_code(int rc, const svc_err_t *err, svc_status_t code)
{
    assert_int_equal(rc, -1);
    if (err->code != code) {
        fail_msg("wanted %s, got %s: %s", svc_status_name(code), svc_status_name(err->code),
                 err->msg);
    }
}

static void
test_invalid_arguments(void **state)
{
    char long_name[202];
    ticket_t t;
    sem_info_t info;
    svc_err_t err;
    int pos;
    int64_t exp;

    (void)state;
    memset(long_name, 'n', 201);
    long_name[201] = '\0';
    expect_code(enter(0, "", "o", 1, 0, 0, &t, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(enter(0, long_name, "o", 1, 0, 0, &t, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(enter(0, "has space", "o", 1, 0, 0, &t, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(enter(0, "inv:a", "", 1, 0, 0, &t, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(enter(0, "inv:a", "o", 0, 0, 0, &t, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(enter(0, "inv:a", "o", -3, 0, 0, &t, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(enter(0, "inv:a", "o", 1000001, 0, 0, &t, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(enter(0, "inv:a", "o", 1, -1, 0, &t, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(enter(0, "inv:a", "o", 1, 86400001, 0, &t, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(enter(0, "inv:a", "o", 1, 0, -1, &t, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(enter(0, "inv:a", "o", 1, 0, 86400001, &t, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(leave(0, "inv:a", "", &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(leave(0, "bad name", "t", &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(extend(0, "inv:a", "", 1000, &pos, &exp, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(extend(0, "inv:a", "t", -5, &pos, &exp, &err), &err, SVC_INVALID_ARGUMENT);
    expect_code(get(0, "", NULL, &info, &err), &err, SVC_INVALID_ARGUMENT);
    /* The edges are fine: limit 1000000, a 200-byte name; nothing was entered before. */
    long_name[200] = '\0';
    assert_int_equal(enter(0, long_name, "o", 1000000, 0, 0, &t, &err), 0);
    assert_int_equal(t.position, 0);
    assert_int_equal(get(1, "inv:a", NULL, &info, &err), 0);
    assert_int_equal(info.limit, 0); /* never entered: nothing there */
    assert_int_equal(info.holders + info.waiting, 0);
}

static void
test_unknown_tickets_and_limits(void **state)
{
    ticket_t a, b;
    sem_info_t info;
    svc_err_t err;
    int pos;
    int64_t exp;

    (void)state;
    expect_code(leave(0, "codes:sem", "0123456789abcdef0123456789abcdef", &err), &err,
                SVC_NOT_FOUND);
    expect_code(extend(1, "codes:sem", "nope", 1000, &pos, &exp, &err), &err, SVC_NOT_FOUND);
    expect_code(get(0, "codes:sem", "nope", &info, &err), &err, SVC_NOT_FOUND);

    assert_int_equal(enter(0, "codes:sem", "alice", 2, 30000, 30000, &a, &err), 0);
    /* The limit is the first Enter's while the semaphore has tickets. */
    expect_code(enter(1, "codes:sem", "bob", 3, 30000, 30000, &b, &err), &err,
                SVC_FAILED_PRECONDITION);
    expect_code(enter(1, "codes:sem", "alice", 1, 30000, 30000, &b, &err), &err,
                SVC_FAILED_PRECONDITION);
    assert_int_equal(leave(1, "codes:sem", a.ticket, &err), 0);
    /* Gone: its ticket is unknown now, and the empty semaphore takes a new limit. */
    expect_code(leave(0, "codes:sem", a.ticket, &err), &err, SVC_NOT_FOUND);
    expect_code(get(0, "codes:sem", a.ticket, &info, &err), &err, SVC_NOT_FOUND);
    assert_int_equal(enter(1, "codes:sem", "bob", 3, 30000, 30000, &b, &err), 0);
    assert_int_equal(get(0, "codes:sem", NULL, &info, &err), 0);
    assert_int_equal(info.limit, 3);
    assert_int_equal(info.holders, 1);
    assert_int_equal(leave(0, "codes:sem", b.ticket, &err), 0);
}

static void
test_enter_is_idempotent_per_owner(void **state)
{
    ticket_t h, w1, w2, again;
    svc_err_t err;

    (void)state;
    assert_int_equal(enter(0, "idem:sem", "holder", 1, 30000, 30000, &h, &err), 0);
    assert_int_equal(enter(0, "idem:sem", "waiter", 1, 30000, 30000, &w1, &err), 0);
    assert_int_equal(w1.position, 1);
    /* The same owner again, through the other instance: the same ticket, the same place. */
    assert_int_equal(enter(1, "idem:sem", "waiter", 1, 30000, 30000, &w2, &err), 0);
    assert_string_equal(w2.ticket, w1.ticket);
    assert_int_equal(w2.seq, w1.seq);
    assert_int_equal(w2.position, 1);
    assert_int_equal(enter(1, "idem:sem", "holder", 1, 30000, 30000, &again, &err), 0);
    assert_string_equal(again.ticket, h.ticket);
    assert_int_equal(again.position, 0);
    assert_string_not_equal(h.ticket, w1.ticket);
    assert_int_equal(leave(0, "idem:sem", h.ticket, &err), 0);
    assert_int_equal(leave(0, "idem:sem", w1.ticket, &err), 0);
    /* Once it left, the owner gets a new ticket. */
    assert_int_equal(enter(0, "idem:sem", "waiter", 1, 30000, 30000, &w2, &err), 0);
    assert_string_not_equal(w2.ticket, w1.ticket);
    assert_true(w2.seq > w1.seq);
    assert_int_equal(leave(0, "idem:sem", w2.ticket, &err), 0);
}

/* Leave admits the next in line within its own script: admitted when Leave returns. */
static void
test_fifo_and_leave_admits_next_at_once(void **state)
{
    enum { N = 8, LIMIT = 2 };
    ticket_t t[N];
    char owner[32];
    svc_err_t err;

    (void)state;
    for (int i = 0; i < N; i++) {
        snprintf(owner, sizeof(owner), "fan-%d", i);
        assert_int_equal(enter(i % 2, "fifo:sem", owner, LIMIT, 30000, 30000, &t[i], &err), 0);
        assert_int_equal(t[i].position, i < LIMIT ? 0 : i - LIMIT + 1);
        if (i > 0) {
            assert_true(t[i].seq > t[i - 1].seq);
        }
    }
    /* Holders leave one by one, alternating instances: each time the lowest waiting is in. */
    for (int i = 0; i < N; i++) {
        assert_int_equal(leave((i + 1) % 2, "fifo:sem", t[i].ticket, &err), 0);
        for (int j = i + 1; j < N; j++) {
            int want = j <= i + LIMIT ? 0 : j - (i + LIMIT);
            assert_int_equal(position_of(j % 2, "fifo:sem", t[j].ticket), want);
        }
    }
    assert_int_equal(replay_log("fifo:sem", LIMIT, N), N);
}

/* Nobody calls lock-svc: the holder's lease ends and the next is admitted by the timer. */
static void
test_lease_end_admits_next_without_a_call(void **state)
{
    redisContext *c = redis_connect();
    ticket_t h, w;
    svc_err_t err;
    int64_t t0;

    (void)state;
    assert_int_equal(enter(0, "lease:sem", "short", 1, 400, 30000, &h, &err), 0);
    assert_int_equal(enter(1, "lease:sem", "next", 1, 30000, 30000, &w, &err), 0);
    assert_int_equal(w.position, 1);
    t0 = svc_now_mono_ms();
    /* Only Redis is read from now on; reading it settles nothing. */
    while (!redis_holds(c, "lease:sem", w.ticket) && svc_now_mono_ms() - t0 < 3000) {
        svc_sleep_ms(5);
    }
    fprintf(stderr, "400 ms lease: the next was admitted %lld ms after it was taken\n",
            (long long)(svc_now_mono_ms() - t0));
    assert_true(redis_holds(c, "lease:sem", w.ticket));
    assert_false(redis_holds(c, "lease:sem", h.ticket));
    assert_true(svc_now_mono_ms() - t0 < 1500);
    assert_int_equal(position_of(0, "lease:sem", h.ticket), -1);
    assert_int_equal(leave(0, "lease:sem", w.ticket, &err), 0);
    redisFree(c);
}

/* A waiting ticket whose place ran out is skipped; Extend keeps a place. */
static void
test_waiting_ticket_past_its_ttl_is_skipped(void **state)
{
    ticket_t h, gone, kept, last;
    svc_err_t err;
    int pos;
    int64_t exp;

    (void)state;
    assert_int_equal(enter(0, "ttl:sem", "holder", 1, 30000, 30000, &h, &err), 0);
    assert_int_equal(enter(1, "ttl:sem", "gone", 1, 30000, 300, &gone, &err), 0);
    assert_int_equal(enter(0, "ttl:sem", "kept", 1, 30000, 300, &kept, &err), 0);
    assert_int_equal(enter(1, "ttl:sem", "last", 1, 30000, 30000, &last, &err), 0);
    assert_int_equal(last.position, 3);
    assert_true(kept.expires_at_ms <= svc_now_unix_ms() + 300);
    svc_sleep_ms(150);
    assert_int_equal(extend(1, "ttl:sem", kept.ticket, 30000, &pos, &exp, &err), 0);
    assert_int_equal(pos, 2);
    assert_true(exp > svc_now_unix_ms() + 20000);
    svc_sleep_ms(300);
    /* gone's place ran out: it is dropped, everyone behind it moves up. */
    assert_int_equal(position_of(0, "ttl:sem", gone.ticket), -1);
    assert_int_equal(position_of(1, "ttl:sem", kept.ticket), 1);
    assert_int_equal(position_of(1, "ttl:sem", last.ticket), 2);
    assert_int_equal(leave(1, "ttl:sem", h.ticket, &err), 0);
    assert_int_equal(position_of(0, "ttl:sem", kept.ticket), 0);
    assert_int_equal(position_of(0, "ttl:sem", last.ticket), 1);
    /* The holder's lease is extended with the same call. */
    assert_int_equal(extend(0, "ttl:sem", kept.ticket, 60000, &pos, &exp, &err), 0);
    assert_int_equal(pos, 0);
    assert_true(exp > svc_now_unix_ms() + 50000);
    assert_int_equal(leave(0, "ttl:sem", kept.ticket, &err), 0);
    assert_int_equal(leave(0, "ttl:sem", last.ticket, &err), 0);
    assert_int_equal(replay_log("ttl:sem", 1, 4), 3);
}

static void
test_limit_holds_under_a_storm_on_two_instances(void **state)
{
    (void)state;
    run_storm("storm:sem");
}

static void
test_client_api(void **state)
{
    svc_sem_opts_t opts = {
        .owner = "client-a", .limit = 1, .lease_ms = 30000, .ticket_ttl_ms = 30000};
    waiter_t w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, {0}};
    svc_sem_ticket_t a, b;
    svc_sem_info_t info;
    svc_err_t err;
    int64_t before;

    (void)state;
    assert_int_equal(svc_sem_enter(client[0], "client:sem", &opts, &a, &err), 0);
    assert_string_equal(a.name, "client:sem");
    assert_int_equal(a.position, 0);
    opts.owner = "client-b";
    svc_sem_enter_async(client[1], "client:sem", &opts, &b, waiter_done, &w);
    assert_int_equal(waiter_wait(&w).code, SVC_OK);
    assert_int_equal(b.position, 1);
    assert_true(b.seq > a.seq);

    assert_int_equal(svc_sem_get(client[0], "client:sem", b.ticket, NULL, &info, &err), 0);
    assert_int_equal(info.limit, 1);
    assert_int_equal(info.holders, 1);
    assert_int_equal(info.waiting, 1);
    assert_int_equal(info.position, 1);
    assert_int_equal(info.expires_at_ms, b.expires_at_ms);

    before = b.expires_at_ms;
    svc_sem_extend_async(client[0], &b, 60000, NULL, waiter_done, &w);
    assert_int_equal(waiter_wait(&w).code, SVC_OK);
    assert_int_equal(b.position, 1);
    assert_true(b.expires_at_ms > before + 20000);

    /* Fire and forget: the leave admits b, which Get shows soon. */
    svc_sem_leave_async(client[1], &a, NULL);
    for (int i = 0; i < 200 && position_of(0, "client:sem", b.ticket) != 0; i++) {
        svc_sleep_ms(5);
    }
    assert_int_equal(position_of(0, "client:sem", b.ticket), 0);
    svc_sem_get_async(client[1], "client:sem", a.ticket, NULL, &info, waiter_done, &w);
    assert_int_equal(waiter_wait(&w).code, SVC_NOT_FOUND);

    opts.limit = 2; /* another limit while b holds */
    opts.owner = "client-c";
    assert_int_equal(svc_sem_enter(client[0], "client:sem", &opts, &a, &err), -1);
    assert_int_equal(err.code, SVC_FAILED_PRECONDITION);
    opts.limit = 0;
    assert_int_equal(svc_sem_enter(client[0], "client:sem", &opts, &a, &err), -1);
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    svc_sem_leave_async(client[0], &b, NULL);
}

/* The same owner entering many times at once through both instances: one ticket. */
static void *
enter_same_owner(void *arg)
{
    ticket_t *t = arg;
    svc_err_t err;

    if (enter((int)(t->seq % 2), "same:sem", "one-owner", 2, 30000, 30000, t, &err) != 0) {
        t->ticket[0] = '\0';
    }
    return NULL;
}

static void
test_concurrent_enters_of_one_owner_share_a_ticket(void **state)
{
    enum { N = 16 };
    ticket_t t[N];
    pthread_t threads[N];
    sem_info_t info;
    svc_err_t err;

    (void)state;
    for (int i = 0; i < N; i++) {
        memset(&t[i], 0, sizeof(t[i]));
        t[i].seq = i; /* which instance */
        assert_int_equal(pthread_create(&threads[i], NULL, enter_same_owner, &t[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(threads[i], NULL);
        assert_true(t[i].ticket[0] != '\0');
        assert_string_equal(t[i].ticket, t[0].ticket);
        assert_int_equal(t[i].seq, t[0].seq);
    }
    assert_int_equal(get(0, "same:sem", NULL, &info, &err), 0);
    assert_int_equal(info.holders, 1);
    assert_int_equal(info.waiting, 0);
    assert_int_equal(leave(1, "same:sem", t[0].ticket, &err), 0);
}

/*
 * Redis stalls past lock-svc's reply timeout with an Enter in it: the caller
 * hears UNAVAILABLE, Redis runs the Enter later anyway, and the retry (the
 * same owner) gets that very ticket: nothing is left behind.
 */
static void
test_lost_enter_reply_is_retried_safely(void **state)
{
    ticket_t t, again;
    sem_info_t info;
    svc_err_t err;
    int rc;

    (void)state;
    assert_int_equal(testenv_redis_pause(&redis), 0);
    rc = enter(0, "lost:enter", "retrier", 1, 30000, 30000, &t, &err);
    svc_sleep_ms(300);
    assert_int_equal(testenv_redis_resume(&redis), 0);
    assert_int_equal(rc, -1);
    assert_int_equal(err.code, SVC_UNAVAILABLE);
    rc = -1;
    for (int i = 0; i < 100 && rc != 0; i++) {
        if ((rc = enter(0, "lost:enter", "retrier", 1, 30000, 30000, &again, &err)) != 0) {
            svc_sleep_ms(50);
        }
    }
    assert_int_equal(rc, 0);
    assert_int_equal(again.position, 0);
    svc_sleep_ms(500); /* whatever the stalled connection still held has run by now */
    assert_int_equal(get(1, "lost:enter", NULL, &info, &err), 0);
    assert_int_equal(info.holders + info.waiting, 1);
    assert_int_equal(position_of(1, "lost:enter", again.ticket), 0);
    assert_int_equal(leave(1, "lost:enter", again.ticket, &err), 0);
}

/* Nobody listens: the client says so in the words the lock calls use. */
static void
test_client_unavailable(void **state)
{
    svc_sem_opts_t opts = {.owner = "x", .limit = 1};
    char addr[64];
    svc_client_t *none;
    svc_sem_ticket_t t;
    svc_sem_info_t info;
    svc_err_t err;

    (void)state;
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", testenv_free_port());
    none = svc_client_get(addr, &err);
    assert_non_null(none);
    assert_int_equal(svc_sem_enter(none, "gone:sem", &opts, &t, &err), -1);
    assert_int_equal(err.code, SVC_UNAVAILABLE);
    assert_string_equal(err.msg, "lock service unavailable");
    assert_int_equal(svc_sem_get(none, "gone:sem", NULL, NULL, &info, &err), -1);
    assert_int_equal(err.code, SVC_UNAVAILABLE);
    assert_string_equal(err.msg, "lock service unavailable");
}

/*
 * Every instance that knew of a lease is killed; the ones that start again
 * find its end in Redis's index and admit the next in line then, with
 * nobody calling.
 */
static void
test_lease_end_admits_after_every_instance_restarted(void **state)
{
    redisContext *c = redis_connect();
    ticket_t h, w;
    svc_err_t err;
    int64_t t0;

    (void)state;
    assert_int_equal(enter(0, "restart:sem", "short", 1, 1500, 30000, &h, &err), 0);
    assert_int_equal(enter(1, "restart:sem", "next", 1, 30000, 30000, &w, &err), 0);
    t0 = svc_now_mono_ms();
    assert_int_equal(testenv_proc_kill(&inst[0]), 0);
    assert_int_equal(testenv_proc_kill(&inst[1]), 0);
    assert_int_equal(testenv_proc_restart(&inst[0]), 0);
    assert_int_equal(testenv_proc_restart(&inst[1]), 0);
    while (!redis_holds(c, "restart:sem", w.ticket) && svc_now_mono_ms() - t0 < 5000) {
        svc_sleep_ms(10);
    }
    fprintf(stderr, "after both instances restarted: next admitted %lld ms after a 1500 ms lease\n",
            (long long)(svc_now_mono_ms() - t0));
    assert_true(redis_holds(c, "restart:sem", w.ticket));
    assert_true(svc_now_mono_ms() - t0 < 3000);
    assert_int_equal(leave(0, "restart:sem", w.ticket, &err), 0);
    redisFree(c);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalid_arguments),
        cmocka_unit_test(test_unknown_tickets_and_limits),
        cmocka_unit_test(test_enter_is_idempotent_per_owner),
        cmocka_unit_test(test_fifo_and_leave_admits_next_at_once),
        cmocka_unit_test(test_lease_end_admits_next_without_a_call),
        cmocka_unit_test(test_waiting_ticket_past_its_ttl_is_skipped),
        cmocka_unit_test(test_limit_holds_under_a_storm_on_two_instances),
        cmocka_unit_test(test_client_api),
        cmocka_unit_test(test_client_unavailable),
        cmocka_unit_test(test_concurrent_enters_of_one_owner_share_a_ticket),
        cmocka_unit_test(test_lost_enter_reply_is_retried_safely),
        cmocka_unit_test(test_lease_end_admits_after_every_instance_restarted),
    };

    if (argc < 2) {
        fprintf(stderr, "usage: %s path/to/lock-svc\n", argv[0]);
        return 2;
    }
    lock_svc_path = argv[1];
    return testenv_group_result(
        cmocka_run_group_tests(tests, sem_test_setup, testenv_group_teardown(sem_test_teardown)));
}
