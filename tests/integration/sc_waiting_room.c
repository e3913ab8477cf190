/*
 * sc_waiting_room.c: an on-sale through a waiting room. Users enter a room
 * of LIMIT at once through two reservation-svc instances, watch their
 * position (pushed), hold a seat with the admission token the watch brings,
 * and leave, which admits the next. Some enter and walk away: their place
 * runs out and the line moves past them. Some try HoldSeats before their
 * turn, or with a forged token. Mid-run, reservation-svc instance 1 is
 * SIGKILLed and restarted; its watchers watch again elsewhere with the same
 * ticket. The checker reads Redis and the answers:
 *
 *   - admitted count (lock-svc's holders of the room) never above LIMIT at
 *     any sampled moment;
 *   - admissions in entry order: the room's event log admits tickets in
 *     increasing sequence, so nobody is overtaken;
 *   - everyone who kept watching was admitted and held a seat; everyone who
 *     walked away is gone from the room (admitted and run out, or expired);
 *   - HoldSeats without a token, with a forged one, an expired one, or one
 *     whose user left the room: refused;
 *   - nobody watching on the killed instance lost a place.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <libpq-fe.h>

#include "conformance.h"
#include "reservation/v1/reservation.pb-c.h"
#include "svc/timer.h"

#define ROOM_ADMISSION_MS 4000 /* admission TTL: walk-aways' admissions run out in the run */
#define ROOM_PLACE_MS 8000     /* a place nobody watches runs out this fast */
#define ROOM_RUN_MS 120000     /* a user still not admitted by then is a violation */
#define ROOM_KEY "waiting-room-conformance-key-0123456789abcdef"

typedef struct wr_run wr_run_t;

typedef struct {
    wr_run_t *run;
    int i;
    int64_t user;
    bool walks_away, early_hold, forges;
    /* outcomes */
    char ticket[256];
    int enter_position;
    bool admitted, held, lost_place;
    int reentered;               /* entered again after an admission ran out */
    int watches;                 /* streams opened */
    int64_t entered_ms, lost_ms; /* monotonic; lost: since entering */
    char token[300];
    int64_t token_expires_ms;
} wr_user_t;

struct wr_run {
    cf_tally_t *tally;
    cf_stack_t *stack;
    svc_client_t *rsv[2];
    int64_t schedule;
    int limit, n;
    atomic_bool stop_sampling, killed;
    atomic_int admitted;
    atomic_long max_holders, samples;
    char holders_key[96], log_key[96], line_key[96];
};

/* ---------------------------------------------------------------- Calls */

static svc_status_t
enter(wr_run_t *run, svc_client_t *c, int64_t user, Reservation__V1__EnterWaitingRoomResponse **out,
      svc_arena_t *arena)
{
    Reservation__V1__EnterWaitingRoomRequest req =
        RESERVATION__V1__ENTER_WAITING_ROOM_REQUEST__INIT;

    req.user_id = user;
    req.schedule_id = run->schedule;
    return cf_call(c, run->tally, "/reservation.v1.ReservationService/EnterWaitingRoom", &req.base,
                   &reservation__v1__enter_waiting_room_response__descriptor, arena,
                   (ProtobufCMessage **)out);
}

static svc_status_t
leave(wr_run_t *run, svc_client_t *c, const char *ticket)
{
    Reservation__V1__LeaveWaitingRoomRequest req =
        RESERVATION__V1__LEAVE_WAITING_ROOM_REQUEST__INIT;
    svc_arena_t *arena = svc_arena_create();
    ProtobufCMessage *out = NULL;
    svc_status_t code;

    req.ticket = (char *)ticket;
    code = cf_call(c, run->tally, "/reservation.v1.ReservationService/LeaveWaitingRoom", &req.base,
                   &reservation__v1__leave_waiting_room_response__descriptor, arena, &out);
    svc_arena_destroy(arena);
    return code;
}

/* HoldSeats of one seat with token (NULL: none); its code, *err the refusal. */
static svc_status_t
hold(wr_run_t *run, svc_client_t *c, int64_t user, int32_t seat, const char *token, svc_err_t *err)
{
    Reservation__V1__HoldSeatsRequest req = RESERVATION__V1__HOLD_SEATS_REQUEST__INIT;
    svc_call_opts_t opts = {.timeout_ms = CF_TIMEOUT_MS};
    svc_arena_t *arena = svc_arena_create();
    ProtobufCMessage *out = NULL;
    int64_t t0 = svc_now_mono_ms();
    svc_status_t code;

    req.user_id = user;
    req.schedule_id = run->schedule;
    req.seat_numbers = &seat;
    req.n_seat_numbers = 1;
    req.admission_token = token != NULL ? (char *)token : "";
    memset(err, 0, sizeof(*err));
    code = svc_client_unary(c, "/reservation.v1.ReservationService/HoldSeats", &req.base,
                            &reservation__v1__hold_seats_response__descriptor, arena, &out, &opts,
                            err) == 0
               ? SVC_OK
               : err->code;
    cf_record(run->tally, code, svc_now_mono_ms() - t0, CF_TIMEOUT_MS);
    svc_arena_destroy(arena);
    return code;
}

/* A refusal as not admitted, or a violation naming what. */
static void
expect_not_admitted(wr_run_t *run, svc_status_t code, const svc_err_t *err, const char *what)
{
    if (code != SVC_FAILED_PRECONDITION || strstr(err->msg, "not admitted") == NULL) {
        cf_violation(run->tally, "waiting_room: HoldSeats %s answered %s \"%s\", want not admitted",
                     what, svc_status_name(code), code == SVC_OK ? "" : err->msg);
    }
}

/* HoldSeats that must be refused as not admitted; tried elsewhere while an instance is down. */
static void
hold_refused(wr_run_t *run, int64_t user, int32_t seat, const char *token, const char *what)
{
    svc_status_t code = SVC_UNAVAILABLE;
    svc_err_t err;

    for (int attempt = 0; attempt < 20 && code == SVC_UNAVAILABLE; attempt++) {
        code = hold(run, run->rsv[attempt % 2], user, seat, token, &err);
        if (code == SVC_UNAVAILABLE) {
            svc_sleep_ms(100);
        }
    }
    expect_not_admitted(run, code, &err, what);
}

/*
 * Watches u's ticket through c until admitted (true, token kept), the ticket
 * is gone (false, lost_place), or the stream broke (false; watch again).
 */
static bool
watch(wr_user_t *u, svc_client_t *c, bool *broke)
{
    Reservation__V1__WatchWaitingRoomRequest req =
        RESERVATION__V1__WATCH_WAITING_ROOM_REQUEST__INIT;
    svc_call_opts_t opts = {.timeout_ms = ROOM_RUN_MS};
    svc_arena_t *arena = svc_arena_create();
    svc_client_stream_t *st;
    ProtobufCMessage *msg;
    int64_t last = INT64_MAX;
    bool admitted = false;
    svc_err_t err;

    *broke = true;
    u->watches++;
    req.ticket = u->ticket;
    st = svc_client_stream_open(c, "/reservation.v1.ReservationService/WatchWaitingRoom", &opts,
                                &err);
    if (st == NULL || svc_client_stream_send(st, &req.base, &err) != 0 ||
        svc_client_stream_close_send(st, &err) != 0) {
        svc_client_stream_destroy(st);
        svc_arena_destroy(arena);
        return false;
    }
    while (svc_client_stream_recv(st, &reservation__v1__watch_waiting_room_response__descriptor,
                                  arena, &msg, &err) == 1) {
        const Reservation__V1__WaitingRoomUpdate *up =
            ((Reservation__V1__WatchWaitingRoomResponse *)msg)->update;
        if (up == NULL) {
            continue;
        }
        if (up->position > last) {
            cf_violation(u->run->tally,
                         "waiting_room: user %" PRId64 " went back from %" PRId64 " to %" PRId64,
                         u->user, last, up->position);
        }
        last = up->position;
        if (up->position == 0) {
            snprintf(u->token, sizeof(u->token), "%s", up->admission_token);
            u->token_expires_ms = up->expires_at_ms;
            admitted = true;
        }
    }
    if (svc_client_stream_finish(st, &err) == 0) {
        *broke = !admitted;
    } else if (err.code == SVC_NOT_FOUND) {
        *broke = false;
        u->lost_place = true;
        u->lost_ms = svc_now_mono_ms() - u->entered_ms;
    }
    cf_record(u->run->tally, err.code == SVC_NOT_FOUND || admitted ? SVC_OK : err.code, 0,
              ROOM_RUN_MS);
    svc_client_stream_destroy(st);
    svc_arena_destroy(arena);
    return admitted;
}

/* ---------------------------------------------------------------- Users */

/* Whether user holds seat in the database (a hold whose answer was lost did go through). */
static bool
holds_seat(wr_run_t *run, int64_t user, int32_t seat)
{
    PGconn *c = PQconnectdb(run->stack->targets.reservation_db);
    char sql[256];
    PGresult *r;
    bool yes;

    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM reservations r JOIN reservation_seats rs ON rs.reservation_id"
             " = r.id WHERE r.user_id = %" PRId64 " AND r.schedule_id = %" PRId64
             " AND rs.number = %d AND r.status IN (1, 2)",
             user, run->schedule, (int)seat);
    r = PQstatus(c) == CONNECTION_OK ? PQexec(c, sql) : NULL;
    yes = PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), "1") == 0;
    PQclear(r);
    PQfinish(c);
    return yes;
}

/* Enters (again): u->ticket, and its admission when admitted at once. 0, or -1 (a violation). */
static int
enter_room(wr_user_t *u, svc_client_t *home, svc_client_t *other)
{
    svc_arena_t *arena = svc_arena_create();
    Reservation__V1__EnterWaitingRoomResponse *got = NULL;
    svc_status_t code = SVC_UNAVAILABLE;

    for (int attempt = 0; attempt < 20 && code != SVC_OK; attempt++) {
        code = enter(u->run, attempt % 2 ? other : home, u->user, &got, arena);
        if (code != SVC_OK) {
            svc_sleep_ms(100); /* the killed instance, perhaps */
        }
    }
    if (code != SVC_OK) {
        cf_violation(u->run->tally, "waiting_room: user %" PRId64 " could not enter: %s", u->user,
                     svc_status_name(code));
        svc_arena_destroy(arena);
        return -1;
    }
    snprintf(u->ticket, sizeof(u->ticket), "%s", got->ticket);
    u->enter_position = (int)got->position;
    u->entered_ms = svc_now_mono_ms();
    u->admitted = got->position == 0;
    if (u->admitted) {
        snprintf(u->token, sizeof(u->token), "%s", got->admission_token);
        u->token_expires_ms = got->expires_at_ms;
    }
    svc_arena_destroy(arena);
    return 0;
}

/*
 * One user: enter, watch until admitted, hold a seat with the token, leave.
 * An admission can run out while the hold is retried (a seat lock that the
 * killed instance held lasts its lease); then, as a client would, the user
 * enters again.
 */
static void *
user_thread(void *arg)
{
    wr_user_t *u = arg;
    wr_run_t *run = u->run;
    svc_client_t *home = run->rsv[u->i % 2], *other = run->rsv[1 - u->i % 2];
    int64_t until = svc_now_mono_ms() + ROOM_RUN_MS;
    svc_status_t code = SVC_UNAVAILABLE;
    svc_err_t err = {0};

    if (enter_room(u, home, other) != 0 || u->walks_away) {
        return NULL; /* walking away: no watch, no renewal: the place (or admission) runs out */
    }
    if (u->early_hold && !u->admitted) {
        hold_refused(run, u->user, (int32_t)u->i + 1, NULL,
                     "before the user's turn, without a token");
    }
    for (int visit = 0; visit < 4 && !u->held; visit++) {
        if (visit > 0) {
            u->reentered++;
            if (enter_room(u, home, other) != 0) {
                return NULL;
            }
        }
        for (bool broke = true; !u->admitted && broke && svc_now_mono_ms() < until;) {
            u->admitted = watch(u, (u->watches % 2) ? other : home, &broke);
            if (!u->admitted && broke) {
                svc_sleep_ms(100);
            }
        }
        if (!u->admitted) {
            return NULL;
        }
        if (visit == 0) {
            atomic_fetch_add(&run->admitted, 1);
        }
        if (u->forges && visit == 0) { /* the last digit changed: not signed by the service */
            char forged[sizeof(u->token)];
            size_t n = strlen(u->token);
            snprintf(forged, sizeof(forged), "%s", u->token);
            forged[n - 1] = forged[n - 1] == '0' ? '1' : '0';
            hold_refused(run, u->user, (int32_t)u->i + 1, forged, "with a forged token");
        }
        code = SVC_UNAVAILABLE;
        bool lost_answer = false; /* a try whose answer was lost may have held the seat */
        for (int attempt = 0; attempt < 40 && code != SVC_OK && code != SVC_FAILED_PRECONDITION;
             attempt++) {
            code =
                hold(run, attempt % 2 ? other : home, u->user, (int32_t)u->i + 1, u->token, &err);
            if (code != SVC_OK && code != SVC_FAILED_PRECONDITION) {
                lost_answer |= code == SVC_UNAVAILABLE || code == SVC_DEADLINE_EXCEEDED;
                svc_sleep_ms(100);
            }
        }
        u->held = code == SVC_OK || (code == SVC_FAILED_PRECONDITION && lost_answer &&
                                     holds_seat(run, u->user, (int32_t)u->i + 1));
        u->admitted = false;
        if (!u->held &&
            (code != SVC_FAILED_PRECONDITION || strstr(err.msg, "admission expired") == NULL)) {
            break; /* anything but an admission that ran out is a failure */
        }
    }
    if (!u->held) {
        cf_violation(run->tally, "waiting_room: user %" PRId64 " admitted, HoldSeats: %s %s",
                     u->user, svc_status_name(code), err.msg);
    }
    bool left = false;
    for (int attempt = 0; attempt < 20 && !left; attempt++) {
        left = leave(run, attempt % 2 ? other : home, u->ticket) == SVC_OK;
        if (!left) {
            svc_sleep_ms(100);
        }
    }
    /* Gone from the room: its token holds no more seats (a walk-away's seat, never taken). */
    int32_t free_seat = (int32_t)(u->i / 10 * 10 + 4);
    if (left && u->held && u->forges && free_seat <= run->n) {
        hold_refused(run, u->user, free_seat, u->token, "after leaving the room");
    }
    return NULL;
}

/* ---------------------------------------------------------------- Redis */

static void *
sampler(void *arg)
{
    wr_run_t *run = arg;
    struct timeval tv = {1, 0};
    redisContext *c =
        redisConnectWithTimeout(run->stack->targets.redis_host, run->stack->targets.redis_port, tv);

    while (c != NULL && c->err == 0 && !atomic_load(&run->stop_sampling)) {
        redisReply *r = redisCommand(c, "ZCARD %s", run->holders_key);
        if (r != NULL && r->type == REDIS_REPLY_INTEGER) {
            long long n = r->integer, max = atomic_load(&run->max_holders);
            while (n > max && !atomic_compare_exchange_weak(&run->max_holders, &max, n)) {
            }
            atomic_fetch_add(&run->samples, 1);
        }
        freeReplyObject(r);
        svc_sleep_ms(5);
    }
    if (c != NULL) {
        redisFree(c);
    }
    return NULL;
}

/* The room's event log: admissions must come in increasing sequence. */
static void
check_log(wr_run_t *run, int *admits, int *expires)
{
    struct timeval tv = {2, 0};
    redisContext *c =
        redisConnectWithTimeout(run->stack->targets.redis_host, run->stack->targets.redis_port, tv);
    redisReply *r =
        c != NULL && c->err == 0 ? redisCommand(c, "XRANGE %s - +", run->log_key) : NULL;
    long long last = -1;

    *admits = *expires = 0;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        cf_violation(run->tally, "waiting_room: cannot read the room's log %s", run->log_key);
    }
    for (size_t i = 0; r != NULL && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        redisReply *fields = r->element[i]->element[1];
        const char *kind = NULL;
        long long seq = -1;
        for (size_t f = 0; f + 1 < fields->elements; f += 2) {
            if (strcmp(fields->element[f]->str, "kind") == 0) {
                kind = fields->element[f + 1]->str;
            } else if (strcmp(fields->element[f]->str, "seq") == 0) {
                seq = strtoll(fields->element[f + 1]->str, NULL, 10);
            }
        }
        if (kind != NULL && strcmp(kind, "admit") == 0) {
            (*admits)++;
            if (seq <= last) {
                cf_violation(run->tally,
                             "waiting_room: ticket %lld admitted after ticket %lld: overtaken", seq,
                             last);
            }
            last = seq;
        } else if (kind != NULL && strcmp(kind, "expire") == 0) {
            (*expires)++;
        }
    }
    freeReplyObject(r);
    r = c != NULL && c->err == 0 ? redisCommand(c, "ZCARD %s", run->line_key) : NULL;
    if (r == NULL || r->type != REDIS_REPLY_INTEGER || r->integer != 0) {
        cf_violation(run->tally, "waiting_room: %lld tickets still in line at the end",
                     r != NULL && r->type == REDIS_REPLY_INTEGER ? r->integer : -1LL);
    }
    freeReplyObject(r);
    if (c != NULL) {
        redisFree(c);
    }
}

/* ---------------------------------------------------------------- The run */

static void *
killer(void *arg)
{
    wr_run_t *run = arg;

    while (atomic_load(&run->admitted) < run->n / 4 && !atomic_load(&run->stop_sampling)) {
        svc_sleep_ms(5);
    }
    if (testenv_proc_kill(&run->stack->reservation[1]) == 0) {
        atomic_store(&run->killed, true);
        svc_sleep_ms(500);
        if (testenv_proc_restart(&run->stack->reservation[1]) != 0) {
            cf_violation(run->tally, "waiting_room: reservation-svc 1 did not restart");
        }
    }
    return NULL;
}

int
sc_waiting_room(cf_ctx_t *ctx, cf_tally_t *t)
{
    static char key_env[PATH_MAX + 32];
    char key_path[] = "/tmp/cf-room-key-XXXXXX";
    cf_stack_opts_t opts = {
        .n_lock = 1, .n_reservation = 2, .reservation_env = {key_env, "ROOM_PLACE_MS=8000", NULL}};
    wr_run_t run = {.tally = t, .limit = ctx->quick ? 10 : 25, .n = ctx->quick ? 300 : 1000};
    cf_stack_t *stack;
    wr_user_t *users;
    pthread_t sample_thread, kill_thread;
    int fd = mkstemp(key_path), admits, expires, walked = 0, held = 0, watched_on_killed = 0;
    int reentered = 0;
    int64_t t0;

    if (fd < 0 || write(fd, ROOM_KEY, strlen(ROOM_KEY)) != (ssize_t)strlen(ROOM_KEY)) {
        fprintf(stderr, "conformance: waiting_room: cannot write the admission key\n");
        return -1;
    }
    close(fd);
    snprintf(key_env, sizeof(key_env), "ADMISSION_KEY_FILE=%s", key_path);
    stack = calloc(1, sizeof(*stack));
    if (stack == NULL || cf_stack_start(ctx, stack, &opts) != 0) {
        if (stack != NULL) {
            (void)cf_stack_stop(stack);
        }
        free(stack);
        unlink(key_path);
        return -1;
    }
    run.stack = stack;
    run.rsv[0] = cf_client(stack->reservation[0].addr);
    run.rsv[1] = cf_client(stack->reservation[1].addr);
    run.schedule = cf_new_room_schedule(run.rsv[0], stack->targets.admin_token, "waiting room",
                                        run.n, 100, run.limit, ROOM_ADMISSION_MS);
    users = calloc((size_t)run.n, sizeof(*users));
    if (run.rsv[0] == NULL || run.rsv[1] == NULL || run.schedule < 0 || users == NULL) {
        free(users);
        (void)cf_stack_stop(stack);
        free(stack);
        unlink(key_path);
        return -1;
    }
    snprintf(run.holders_key, sizeof(run.holders_key), "{sem:room:%" PRId64 "}:holders",
             run.schedule);
    snprintf(run.log_key, sizeof(run.log_key), "{sem:room:%" PRId64 "}:log", run.schedule);
    snprintf(run.line_key, sizeof(run.line_key), "{sem:room:%" PRId64 "}:line", run.schedule);
    for (int i = 0; i < run.n; i++) {
        users[i] = (wr_user_t){.run = &run,
                               .i = i,
                               .user = cf_new_account(cf_client(stack->targets.balance_addr)),
                               .walks_away = i % 10 == 3,
                               .early_hold = i % 7 == 1,
                               .forges = i % 11 == 5};
        walked += users[i].walks_away;
    }
    pthread_create(&sample_thread, NULL, sampler, &run);
    pthread_create(&kill_thread, NULL, killer, &run);
    t0 = svc_now_mono_ms();
    cf_parallel(run.n, user_thread, users, sizeof(*users));
    fprintf(stderr, "waiting_room: %d users through a room of %d in %" PRId64 " ms\n", run.n,
            run.limit, svc_now_mono_ms() - t0);
    svc_sleep_ms(ROOM_ADMISSION_MS + ROOM_PLACE_MS + 500); /* the walk-aways run out */
    atomic_store(&run.stop_sampling, true);
    pthread_join(kill_thread, NULL);
    pthread_join(sample_thread, NULL);

    for (int i = 0; i < run.n; i++) {
        wr_user_t *u = &users[i];
        held += u->held;
        watched_on_killed += !u->walks_away && u->watches > 1;
        reentered += u->reentered;
        if (!u->walks_away && !u->held) {
            cf_violation(t,
                         "waiting_room: user %" PRId64 " (ticket %s, entered at position %d,"
                         " watched %d times, lost after %" PRId64 " ms) %s",
                         u->user, u->ticket, u->enter_position, u->watches, u->lost_ms,
                         u->lost_place ? "lost its place" : "was never admitted");
        }
    }
    /* An expired admission is refused: the first admitted user's token, after its end. */
    for (int i = 0; i < run.n; i++) {
        if (users[i].token[0] != '\0' && users[i].token_expires_ms < svc_now_unix_ms()) {
            hold_refused(&run, users[i].user, (int32_t)run.n, users[i].token,
                         "with an expired token");
            break;
        }
    }
    if (atomic_load(&run.max_holders) > run.limit) {
        cf_violation(t, "waiting_room: %ld admitted at once in Redis, the limit is %d",
                     atomic_load(&run.max_holders), run.limit);
    }
    if (!atomic_load(&run.killed)) {
        cf_violation(t, "waiting_room: reservation-svc 1 was not killed");
    }
    check_log(&run, &admits, &expires);
    fprintf(stderr,
            "waiting_room: %d held seats, %d walked away, %d watched again after the kill, %d"
            " entered again after their admission ran out; at most %ld of %d admitted at once"
            " (%ld samples); log: %d admitted, %d expired\n",
            held, walked, watched_on_killed, reentered, atomic_load(&run.max_holders), run.limit,
            atomic_load(&run.samples), admits, expires);
    free(users);
    cf_check_invariants(t, &stack->targets, NULL);
    if (cf_stack_stop(stack) != 0) {
        cf_violation(t, "a service exited badly");
    }
    free(stack);
    unlink(key_path);
    return 0;
}
