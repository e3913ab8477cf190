/*
 * reservation_bench.c: reservation-bench, a load tool for reservation-svc's
 * HoldSeats, each scenario next to its direct-SQL twin in the same run. The
 * storm: U users hold the same fresh seat at once (every call started before
 * any answer is read), timed from the first start to the last answer, R
 * times. Distinct seats: C calls in flight, each holding a seat never held
 * before. The twins run a copy of hold_tx's statements with libpq
 * against the same database. reservation-svc refuses users without a
 * balance-svc account, so every user gets one (TopUp) before the timed part.
 * It prints numbers and passes or fails nothing; tests/bench/reservation_bench.sh
 * starts the stack around it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <libpq-fe.h>
#include <sys/epoll.h>

#include "balance/v1/balance.pb-c.h"
#include "bench_common.h"
#include "reservation/v1/reservation.pb-c.h"
#include "reservation_bench.h"
#include "svc/arena.h"
#include "svc/client.h"
#include "svc/config.h"
#include "svc/err.h"
#include "svc/log.h"
#include "svc/timer.h"

#define METHOD_CREATE "/reservation.v1.ReservationService/CreateConcert"
#define METHOD_HOLD "/reservation.v1.ReservationService/HoldSeats"
#define METHOD_TOP_UP "/balance.v1.BalanceService/TopUp"
#define SEATS_PER_SCHEDULE 10000 /* the most CreateConcert allows */
#define SCHEDULES_PER_CONCERT 5  /* 50 000 seats per CreateConcert: well inside its 5 s budget */
#define SEAT_PRICE 15000
#define CALL_TIMEOUT_MS 30000
#define MAX_CONC 1024
#define CONNECT_THREADS 8
#define ACCOUNT_FUNDS 100000 /* each user's TopUp: a few seats' worth, in won */
#define TOP_UP_CONC 128      /* TopUp calls in flight while accounts are made */
#define TOP_UP_ROUNDS 10     /* tries per account (a retry replays its key) */

/* ---------------------------------------------------------------- hold_tx's SQL */

/*
 * The direct-SQL twin's statements: the bench's own copy of what a hold's
 * transaction does in reservation_store.c (lock the seats in order, end
 * expired holds on them, write the reservation, mark each seat), so the
 * service's code carries nothing for the bench.
 */
#define HOLD_TTL_MS 300000 /* reservation-svc's default HOLD_TTL_MS */
static const char SQL_LOCK_SEATS[] =
    "SELECT number, status, coalesce(hold_expires_at_ms, 0), last_fence, price FROM seats"
    " WHERE schedule_id = $1 AND number = ANY($2::int[]) ORDER BY number FOR UPDATE";
static const char SQL_EXPIRE_OLD_HOLDS[] =
    "WITH old AS (SELECT DISTINCT hold_reservation_id AS id FROM seats WHERE schedule_id = $1"
    " AND number = ANY($2::int[]) AND status = 2 AND hold_expires_at_ms <= $3),"
    " r AS (UPDATE reservations SET status = 4, updated_at = now()"
    " WHERE id IN (SELECT id FROM old) AND status = 1),"
    " rs AS (UPDATE reservation_seats SET live = false WHERE reservation_id IN (SELECT id FROM "
    "old))"
    " UPDATE seats SET status = 1, hold_reservation_id = NULL, hold_user_id = NULL,"
    " hold_expires_at_ms = NULL WHERE schedule_id = $1 AND number = ANY($2::int[])"
    " AND status = 2 AND hold_expires_at_ms <= $3";
static const char SQL_RESERVE[] =
    "INSERT INTO reservations (user_id, schedule_id, status, amount, expires_at_ms)"
    " VALUES ($1, $2, 1, $3, $4) RETURNING id";
static const char SQL_HOLD_SEAT[] =
    "WITH rs AS (INSERT INTO reservation_seats (reservation_id, schedule_id, number)"
    " VALUES ($1, $2, $3))"
    " UPDATE seats SET status = 2, hold_reservation_id = $1, hold_user_id = $4,"
    " hold_expires_at_ms = $5, last_fence = $6 WHERE schedule_id = $2 AND number = $3";

/* ---------------------------------------------------------------- CPU accounting */

static const char *const proc_names[] = {"bench", "rsv", "lock", "bal", "redis", "pg"};
_Static_assert(sizeof(proc_names) / sizeof(proc_names[0]) == RBENCH_N_PROCS, "a name per process");

/* out: ticks of each of cfg->pids, then of the machine and of irq (bench_cpu_snapshot). */
static void
cpu_snapshot(const int64_t pids[RBENCH_N_PROCS], int64_t out[RBENCH_N_CPU])
{
    bench_cpu_snapshot(pids, RBENCH_N_PROCS, RBENCH_PROC_PG, out);
}

/* CPU ticks summed over one or more windows (-1: unknown). */
typedef struct {
    int64_t ticks[RBENCH_N_CPU];
    double window_s;
} cpu_acc_t;

static void
cpu_acc_add(cpu_acc_t *acc, const int64_t before[RBENCH_N_CPU], const int64_t after[RBENCH_N_CPU],
            double secs)
{
    int64_t ticks[RBENCH_N_CPU];

    bench_cpu_delta(before, after, RBENCH_N_CPU, ticks);
    for (int i = 0; i < RBENCH_N_CPU; i++) {
        acc->ticks[i] = ticks[i] < 0 || acc->ticks[i] < 0 ? -1 : acc->ticks[i] + ticks[i];
    }
    acc->window_s += secs;
}

/* ---------------------------------------------------------------- time, samples */

static int64_t
unix_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

void *
rbench_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);

    if (p == NULL) {
        fprintf(stderr, "reservation-bench: out of memory\n");
        exit(1);
    }
    return p;
}

/* ---------------------------------------------------------------- seats */

static bool
seat_pool_next(rbench_seat_pool_t *p, int64_t *schedule_id, int32_t *number)
{
    int64_t i = p->next;

    if (i >= (int64_t)p->n * p->seat_count) {
        return false;
    }
    p->next++;
    *schedule_id = p->ids[i / p->seat_count];
    *number = (int32_t)(i % p->seat_count + 1);
    return true;
}

/*
 * Creates n_schedules schedules of seat_count seats through CreateConcert
 * (several concerts when there are many) and returns them as a pool.
 * Exits when reservation-svc refuses.
 */
rbench_seat_pool_t
rbench_create_seats(rbench_cfg_t *cfg, const char *title, int n_schedules, int seat_count)
{
    rbench_seat_pool_t pool = {rbench_xcalloc((size_t)n_schedules, sizeof(int64_t)), 0, seat_count,
                               0};
    char auth[300];
    const char *md[] = {"authorization", auth};
    svc_call_opts_t opts = {.timeout_ms = 60000, .metadata = md, .n_metadata = 1};
    static int64_t starts = 1893456000000LL;

    snprintf(auth, sizeof(auth), "Bearer %s", cfg->admin_token);
    while (pool.n < n_schedules) {
        Reservation__V1__CreateConcertRequest req = RESERVATION__V1__CREATE_CONCERT_REQUEST__INIT;
        Reservation__V1__ScheduleSpec specs[SCHEDULES_PER_CONCERT];
        Reservation__V1__ScheduleSpec *sp[SCHEDULES_PER_CONCERT];
        Reservation__V1__CreateConcertResponse *resp = NULL;
        svc_arena_t *arena = svc_arena_create();
        int k = n_schedules - pool.n < SCHEDULES_PER_CONCERT ? n_schedules - pool.n
                                                             : SCHEDULES_PER_CONCERT;
        svc_err_t err;

        for (int i = 0; i < k; i++) {
            reservation__v1__schedule_spec__init(&specs[i]);
            specs[i].starts_at_ms = starts++; /* answered in starts_at_ms order */
            specs[i].seat_count = seat_count;
            specs[i].seat_price = SEAT_PRICE;
            sp[i] = &specs[i];
        }
        req.title = (char *)title;
        req.schedules = sp;
        req.n_schedules = (size_t)k;
        if (arena == NULL ||
            svc_client_unary(cfg->client, METHOD_CREATE, &req.base,
                             &reservation__v1__create_concert_response__descriptor, arena,
                             (ProtobufCMessage **)&resp, &opts, &err) != 0) {
            fprintf(stderr, "reservation-bench: CreateConcert failed: %s\n",
                    arena == NULL ? "out of memory" : err.msg);
            exit(1);
        }
        for (size_t i = 0; i < resp->concert->n_schedules && pool.n < n_schedules; i++) {
            pool.ids[pool.n++] = resp->concert->schedules[i]->id;
        }
        svc_arena_destroy(arena);
    }
    return pool;
}

/* ---------------------------------------------------------------- balance-svc accounts */

/* One TopUp in flight and the user it makes an account for. */
typedef struct {
    bench_call_t call;
    int64_t user;
} top_up_call_t;

/*
 * Starts TopUp(ACCOUNT_FUNDS) for user on c. The key is fixed per user, so
 * a second try after a failed call replays it and never tops up twice.
 */
static void
top_up_start(rbench_cfg_t *cfg, top_up_call_t *c, grpc_completion_queue *cq, int64_t user)
{
    Balance__V1__TopUpRequest req = BALANCE__V1__TOP_UP_REQUEST__INIT;
    char key[64];

    snprintf(key, sizeof(key), "reservation-bench:account:%" PRId64, user);
    req.user_id = user;
    req.amount = ACCOUNT_FUNDS;
    req.idempotency_key = key;
    c->user = user;
    if (bench_call_init(&c->call, cfg->balance_ch, cq, METHOD_TOP_UP, CALL_TIMEOUT_MS, &req.base) !=
            0 ||
        bench_call_start(&c->call, NULL, 0, c) != GRPC_CALL_OK) {
        fprintf(stderr, "reservation-bench: cannot start a TopUp call\n");
        exit(1);
    }
}

/*
 * TopUp for users[0..n-1], TOP_UP_CONC calls in flight on one completion
 * queue. Moves the users whose call failed to the front of users and
 * returns their count; *first gets the first failure.
 */
static int64_t
top_up_round(rbench_cfg_t *cfg, int64_t *users, int64_t n, svc_err_t *first)
{
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    top_up_call_t *calls = rbench_xcalloc(TOP_UP_CONC, sizeof(*calls));
    int64_t next = 0, failed = 0;
    int active = 0;

    for (; active < TOP_UP_CONC && next < n; active++) {
        top_up_start(cfg, &calls[active], cq, users[next++]);
    }
    while (active > 0) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        top_up_call_t *c = ev.tag;
        char msg[sizeof(first->msg)];
        svc_status_t code;

        if (ev.type != GRPC_OP_COMPLETE) {
            continue;
        }
        code = bench_call_status(&c->call, ev.success != 0, msg, sizeof(msg));
        bench_call_cleanup(&c->call);
        if (code != SVC_OK) {
            if (failed == 0) {
                svc_err_set(first, code, "%s", msg);
            }
            users[failed++] = c->user; /* failed < next: that slot was read already */
        }
        if (next < n) {
            top_up_start(cfg, c, cq, users[next++]);
        } else {
            active--;
        }
    }
    bench_cq_drain_destroy(cq);
    free(calls);
    return failed;
}

/*
 * Gives users first..first+n-1 a balance-svc account through its public
 * TopUp (which creates the account on first use), retrying the failed ones
 * a few times. Exits when some cannot be made.
 */
static void
accounts_create(rbench_cfg_t *cfg, int64_t first, int64_t n)
{
    int64_t *users = rbench_xcalloc((size_t)n, sizeof(*users)), left = n;
    svc_err_t err = {0};

    for (int64_t i = 0; i < n; i++) {
        users[i] = first + i;
    }
    for (int round = 1; left > 0; round++) {
        if (round > TOP_UP_ROUNDS) {
            fprintf(stderr,
                    "reservation-bench: %" PRId64 " of %" PRId64 " accounts not made through "
                    "balance-svc TopUp (%s): %s\n",
                    left, n, svc_status_name(err.code), err.msg);
            exit(1);
        }
        if (round > 1) {
            svc_sleep_ms(200);
        }
        left = top_up_round(cfg, users, left, &err);
    }
    free(users);
}

/*
 * Takes the next n user ids and gives each a balance-svc account, outside
 * any timed part; returns the first. reservation-svc has not seen them yet,
 * so each one's first HoldSeats still asks balance-svc (GetBalance), as in a
 * real on-sale. *secs (may be NULL) gets the time it took.
 */
int64_t
rbench_users_with_accounts(rbench_cfg_t *cfg, int64_t n, double *secs)
{
    int64_t first = cfg->next_user, t0 = bench_now_ns();

    cfg->next_user += n;
    accounts_create(cfg, first, n);
    if (secs != NULL) {
        *secs = (double)(bench_now_ns() - t0) / 1e9;
    }
    return first;
}

/* ---------------------------------------------------------------- async HoldSeats */

/* Creates the call and packs its request; rbench_hold_start sends it. Exits when gRPC refuses. */
void
rbench_hold_prepare(rbench_hold_t *h, grpc_channel *ch, grpc_completion_queue *cq, int64_t user,
                    int64_t schedule_id, int32_t seat)
{
    Reservation__V1__HoldSeatsRequest req = RESERVATION__V1__HOLD_SEATS_REQUEST__INIT;

    req.user_id = user;
    req.schedule_id = schedule_id;
    req.seat_numbers = &seat;
    req.n_seat_numbers = 1;
    if (bench_call_init(&h->call, ch, cq, METHOD_HOLD, CALL_TIMEOUT_MS, &req.base) != 0) {
        fprintf(stderr, "reservation-bench: cannot create a call\n");
        exit(1);
    }
}

void
rbench_hold_start(rbench_hold_t *h, void *tag)
{
    h->t0 = bench_now_ns();
    if (bench_call_start(&h->call, NULL, 0, tag) != GRPC_CALL_OK) {
        fprintf(stderr, "reservation-bench: cannot start a call\n");
        exit(1);
    }
}

/* Frees what the finished call held; returns its status (UNAVAILABLE when the batch failed). */
svc_status_t
rbench_hold_finish(rbench_hold_t *h, bool success, char *msg, size_t msg_len)
{
    svc_status_t code = bench_call_status(&h->call, success, msg, msg_len);

    bench_call_cleanup(&h->call);
    return code;
}

/* ---------------------------------------------------------------- results */

void
rbench_outcome_add(rbench_outcome_t *o, svc_status_t code, const char *msg)
{
    int k =
        (int)code > 0 && (int)code < BENCH_N_CODES ? (int)code : (code == SVC_OK ? 0 : SVC_UNKNOWN);

    o->n++;
    o->codes[k]++;
    if (k != SVC_OK && k != SVC_FAILED_PRECONDITION && o->first_err[0] == '\0' && msg != NULL) {
        snprintf(o->first_err, sizeof(o->first_err), "%s", msg);
    }
}

/* One storm: times from the first start, in ms. */
typedef struct {
    double resolved_ms, started_ms, first_ms;
    rbench_outcome_t out;
} storm_t;

/* ---------------------------------------------------------------- storm through reservation-svc */

/*
 * Users user0.. (cfg->users of them, with accounts) HoldSeats one seat: all
 * calls created first, then all started from this thread before any
 * completion is read; waits for every answer.
 */
static void
storm_svc(rbench_cfg_t *cfg, int64_t user0, int64_t schedule_id, int32_t seat, storm_t *st)
{
    int n = (int)cfg->users;
    rbench_hold_t *calls = rbench_xcalloc((size_t)n, sizeof(*calls));
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    int64_t t0, first = 0, last = 0;
    char msg[256];

    memset(st, 0, sizeof(*st));
    for (int i = 0; i < n; i++) {
        rbench_hold_prepare(&calls[i], cfg->channels_v[i % cfg->channels], cq, user0 + i,
                            schedule_id, seat);
    }
    t0 = bench_now_ns();
    for (int i = 0; i < n; i++) {
        rbench_hold_start(&calls[i], &calls[i]);
    }
    st->started_ms = (double)(bench_now_ns() - t0) / 1e6;
    for (int done = 0; done < n;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type != GRPC_OP_COMPLETE) {
            continue;
        }
        last = bench_now_ns();
        first = first ? first : last;
        msg[0] = '\0';
        rbench_outcome_add(&st->out, rbench_hold_finish(ev.tag, ev.success != 0, msg, sizeof(msg)),
                           msg);
        done++;
    }
    st->first_ms = (double)(first - t0) / 1e6;
    st->resolved_ms = (double)(last - t0) / 1e6;
    bench_cq_drain_destroy(cq);
    free(calls);
}

/* ---------------------------------------------------------------- the direct-SQL driver */

enum { S_IDLE, S_BEGIN, S_LOCK, S_EXPIRE, S_RESERVE, S_HOLD, S_COMMIT, S_ROLLBACK };

/* One connection running hold transactions, one statement at a time, like svc_pg_tx. */
typedef struct {
    PGconn *conn;
    int step;
    int64_t schedule_id, user, fence, amount, rid, t0;
    int32_t seat;
    svc_status_t outcome;
    char msg[256];
} sql_conn_t;

/* Where the logical clients of a run come from and where their answers go. */
typedef struct {
    sql_conn_t *conns;
    int n_conns;
    rbench_seat_pool_t *seats; /* distinct: a fresh seat per transaction */
    int64_t storm_schedule;
    int32_t storm_seat;
    int64_t left;    /* storm: logical clients not yet started */
    int64_t t_storm; /* storm: all logical clients arrive at once, at this time */
    int64_t warm_end_ns, end_ns;
    rbench_cfg_t *cfg;
    rbench_outcome_t out;
    bench_samples_t lat;
    int64_t done_in_window, first_done, last_done;
    bool ran_out;
} sql_run_t;

/* The twin's parameterised statements, prepared once per connection as svc_pg_exec does. */
static const struct {
    const char *sql;
    int n_params;
} twin_statements[] = {
    {SQL_LOCK_SEATS, 2},
    {SQL_EXPIRE_OLD_HOLDS, 3},
    {SQL_RESERVE, 4},
    {SQL_HOLD_SEAT, 6},
};
#define TWIN_STATEMENTS ((int)(sizeof(twin_statements) / sizeof(twin_statements[0])))

static void
sql_prepare_all(PGconn *conn)
{
    for (int i = 0; i < TWIN_STATEMENTS; i++) {
        char name[16];
        PGresult *res;
        snprintf(name, sizeof(name), "twin_%d", i);
        res = PQprepare(conn, name, twin_statements[i].sql, twin_statements[i].n_params, NULL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            fprintf(stderr, "reservation-bench: cannot prepare a statement: %s",
                    PQerrorMessage(conn));
            exit(1);
        }
        PQclear(res);
    }
}

static void
sql_send(sql_conn_t *c, int step, const char *sql, int n, const char *const *params)
{
    int sent = -1;

    c->step = step;
    for (int i = 0; i < TWIN_STATEMENTS && sent < 0; i++) {
        if (twin_statements[i].sql == sql) {
            char name[16];
            snprintf(name, sizeof(name), "twin_%d", i);
            sent = PQsendQueryPrepared(c->conn, name, n, params, NULL, NULL, 0);
        }
    }
    if (sent < 0) {
        sent = PQsendQueryParams(c->conn, sql, n, NULL, params, NULL, NULL, 0);
    }
    if (!sent) {
        fprintf(stderr, "reservation-bench: cannot send a query: %s", PQerrorMessage(c->conn));
        exit(1);
    }
}

/* Picks the next logical client for c and sends its BEGIN; false when there is none. */
static bool
sql_next(sql_run_t *run, sql_conn_t *c)
{
    if (run->seats == NULL) {
        if (run->left == 0) {
            c->step = S_IDLE;
            return false;
        }
        run->left--;
        c->schedule_id = run->storm_schedule;
        c->seat = run->storm_seat;
        c->t0 = run->t_storm;
    } else {
        if (bench_now_ns() >= run->end_ns) {
            c->step = S_IDLE;
            return false;
        }
        if (!seat_pool_next(run->seats, &c->schedule_id, &c->seat)) {
            run->ran_out = true;
            c->step = S_IDLE;
            return false;
        }
        c->t0 = bench_now_ns();
    }
    c->user = run->cfg->next_user++;
    c->fence = unix_us(); /* lock-svc's fences are at least the wall clock in us */
    c->outcome = SVC_OK;
    c->msg[0] = '\0';
    sql_send(c, S_BEGIN, "BEGIN", 0, NULL);
    return true;
}

static void
sql_record(sql_run_t *run, sql_conn_t *c)
{
    int64_t t1 = bench_now_ns();

    rbench_outcome_add(&run->out, c->outcome, c->msg);
    run->last_done = t1;
    run->first_done = run->first_done ? run->first_done : t1;
    if (c->outcome != SVC_OK ||
        (run->seats != NULL && (c->t0 < run->warm_end_ns || t1 > run->end_ns))) {
        return;
    }
    if (bench_samples_push(&run->lat, t1 - c->t0) != 0) {
        fprintf(stderr, "reservation-bench: out of memory for samples\n");
        exit(1);
    }
    run->done_in_window++;
}

/* hold_tx's check of the locked row: exists, free (or its hold expired), fence not older. */
static void
sql_check_seat(sql_conn_t *c, const PGresult *res)
{
    int64_t now_ms = unix_us() / 1000;

    if (PQntuples(res) != 1) {
        c->outcome = SVC_INVALID_ARGUMENT;
        snprintf(c->msg, sizeof(c->msg), "seat %d does not exist", (int)c->seat);
        return;
    }
    int status = atoi(PQgetvalue(res, 0, 1));
    if (status != 1 && !(status == 2 && strtoll(PQgetvalue(res, 0, 2), NULL, 10) <= now_ms)) {
        c->outcome = SVC_FAILED_PRECONDITION;
        snprintf(c->msg, sizeof(c->msg), "seat %d is not available", (int)c->seat);
    } else if (strtoll(PQgetvalue(res, 0, 3), NULL, 10) > c->fence) {
        c->outcome = SVC_ABORTED;
        snprintf(c->msg, sizeof(c->msg), "lock on seat %d was lost", (int)c->seat);
    }
    c->amount = strtoll(PQgetvalue(res, 0, 4), NULL, 10);
}

/* The next statement after a result of the current one (ok: it had the status wanted). */
static void
sql_advance(sql_run_t *run, sql_conn_t *c, const PGresult *res, bool ok)
{
    char sched[24], list[32], now[24], user[24], amt[24], expires[24], rid[24], num[16], fence[24];
    int64_t now_ms = unix_us() / 1000;

    snprintf(sched, sizeof(sched), "%" PRId64, c->schedule_id);
    snprintf(list, sizeof(list), "{%d}", (int)c->seat);
    snprintf(now, sizeof(now), "%" PRId64, now_ms);
    snprintf(user, sizeof(user), "%" PRId64, c->user);
    snprintf(expires, sizeof(expires), "%" PRId64, now_ms + HOLD_TTL_MS);
    if (!ok && c->step != S_ROLLBACK) {
        c->outcome = SVC_INTERNAL;
        snprintf(c->msg, sizeof(c->msg), "step %d: %s %s", c->step,
                 res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : "", PQerrorMessage(c->conn));
        if (c->step == S_COMMIT || c->step == S_BEGIN) {
            sql_record(run, c);
            sql_next(run, c);
            return;
        }
        sql_send(c, S_ROLLBACK, "ROLLBACK", 0, NULL);
        return;
    }
    switch (c->step) {
    case S_BEGIN: {
        const char *p[] = {sched, list};
        sql_send(c, S_LOCK, SQL_LOCK_SEATS, 2, p);
        break;
    }
    case S_LOCK:
        sql_check_seat(c, res);
        if (c->outcome != SVC_OK) {
            sql_send(c, S_ROLLBACK, "ROLLBACK", 0, NULL);
        } else {
            const char *p[] = {sched, list, now};
            sql_send(c, S_EXPIRE, SQL_EXPIRE_OLD_HOLDS, 3, p);
        }
        break;
    case S_EXPIRE: {
        snprintf(amt, sizeof(amt), "%" PRId64, c->amount);
        const char *p[] = {user, sched, amt, expires};
        sql_send(c, S_RESERVE, SQL_RESERVE, 4, p);
        break;
    }
    case S_RESERVE: {
        c->rid = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        snprintf(rid, sizeof(rid), "%" PRId64, c->rid);
        snprintf(num, sizeof(num), "%d", (int)c->seat);
        snprintf(fence, sizeof(fence), "%" PRId64, c->fence);
        const char *p[] = {rid, sched, num, user, expires, fence};
        sql_send(c, S_HOLD, SQL_HOLD_SEAT, 6, p);
        break;
    }
    case S_HOLD:
        sql_send(c, S_COMMIT, "COMMIT", 0, NULL);
        break;
    default: /* COMMIT or ROLLBACK answered */
        sql_record(run, c);
        sql_next(run, c);
        break;
    }
}

static ExecStatusType
step_wants(int step)
{
    return step == S_LOCK || step == S_RESERVE ? PGRES_TUPLES_OK : PGRES_COMMAND_OK;
}

/* Reads what arrived on c; advances through every finished statement. */
static void
sql_on_readable(sql_run_t *run, sql_conn_t *c)
{
    if (!PQconsumeInput(c->conn)) {
        fprintf(stderr, "reservation-bench: connection lost: %s", PQerrorMessage(c->conn));
        exit(1);
    }
    while (c->step != S_IDLE && !PQisBusy(c->conn)) {
        PGresult *res = PQgetResult(c->conn), *extra;
        bool ok = res != NULL && PQresultStatus(res) == step_wants(c->step);

        while ((extra = PQgetResult(c->conn)) != NULL) { /* the NULL that ends the statement */
            PQclear(extra);
        }
        sql_advance(run, c, res, ok);
        PQclear(res);
    }
}

/* Runs until every connection is idle: epoll over their sockets. */
static void
sql_loop(sql_run_t *run)
{
    int ep = epoll_create1(0), active = 0;
    struct epoll_event evs[256];

    if (ep < 0) {
        fprintf(stderr, "reservation-bench: epoll: %s\n", strerror(errno));
        exit(1);
    }
    for (int i = 0; i < run->n_conns; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &run->conns[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, PQsocket(run->conns[i].conn), &ev);
        active += run->conns[i].step != S_IDLE;
    }
    while (active > 0) {
        int n = epoll_wait(ep, evs, 256, 1000);
        for (int i = 0; i < n; i++) {
            sql_conn_t *c = evs[i].data.ptr;
            if (c->step == S_IDLE) {
                continue;
            }
            sql_on_readable(run, c);
            active -= c->step == S_IDLE;
        }
    }
    close(ep);
}

typedef struct {
    const char *url;
    sql_conn_t *conns;
    int from, to;
} connect_job_t;

static void *
connect_main(void *arg)
{
    connect_job_t *j = arg;

    for (int i = j->from; i < j->to; i++) {
        PGconn *conn = PQconnectdb(j->url);
        if (PQstatus(conn) != CONNECTION_OK) {
            fprintf(stderr, "reservation-bench: connection %d to the database failed: %s", i,
                    PQerrorMessage(conn));
            exit(1);
        }
        sql_prepare_all(conn);
        j->conns[i].conn = conn;
    }
    return NULL;
}

/* Opens n connections, CONNECT_THREADS at a time. */
static sql_conn_t *
sql_connect(const char *url, int n)
{
    sql_conn_t *conns = rbench_xcalloc((size_t)n, sizeof(*conns));
    pthread_t th[CONNECT_THREADS];
    connect_job_t jobs[CONNECT_THREADS];

    for (int t = 0; t < CONNECT_THREADS; t++) {
        jobs[t] =
            (connect_job_t){url, conns, n * t / CONNECT_THREADS, n * (t + 1) / CONNECT_THREADS};
        if (pthread_create(&th[t], NULL, connect_main, &jobs[t]) != 0) {
            fprintf(stderr, "reservation-bench: cannot start a thread\n");
            exit(1);
        }
    }
    for (int t = 0; t < CONNECT_THREADS; t++) {
        pthread_join(th[t], NULL);
    }
    return conns;
}

static void
sql_disconnect(sql_conn_t *conns, int n)
{
    for (int i = 0; i < n; i++) {
        PQfinish(conns[i].conn);
    }
    free(conns);
}

/*
 * The storm's twin: users logical clients hold the same seat, all arriving
 * at once, over n_conns connections (n_conns = users: one each, every BEGIN
 * sent before any answer is read; fewer: a pool, each connection taking the
 * next client when its transaction ends).
 */
static void
storm_sql(rbench_cfg_t *cfg, sql_conn_t *conns, int n_conns, int64_t schedule_id, int32_t seat,
          storm_t *st)
{
    sql_run_t run = {.conns = conns,
                     .n_conns = n_conns,
                     .storm_schedule = schedule_id,
                     .storm_seat = seat,
                     .left = cfg->users,
                     .cfg = cfg};

    memset(st, 0, sizeof(*st));
    run.t_storm = bench_now_ns();
    for (int i = 0; i < n_conns; i++) {
        sql_next(&run, &conns[i]);
    }
    st->started_ms = (double)(bench_now_ns() - run.t_storm) / 1e6;
    sql_loop(&run);
    st->out = run.out;
    st->resolved_ms = (double)(run.last_done - run.t_storm) / 1e6;
    st->first_ms = (double)(run.first_done - run.t_storm) / 1e6;
    bench_samples_free(&run.lat);
}

/* ---------------------------------------------------------------- distinct seats */

typedef struct {
    double rate, p50_ms, p99_ms;
    int64_t done;
    rbench_outcome_t out;
    cpu_acc_t cpu;
    bool ran_out;
} distinct_t;

/* Sorts lat and fills d's rate and percentiles from it. */
static void
distinct_finish(distinct_t *d, bench_samples_t *lat, double seconds)
{
    d->done = (int64_t)lat->n;
    d->rate = (double)lat->n / seconds;
    bench_samples_percentiles(lat, &d->p50_ms, &d->p99_ms);
}

/* Samples CPU time at the edges of a measured window, from its own thread. */
typedef struct {
    const int64_t *pids;
    bench_window_t win;
    int64_t before[RBENCH_N_CPU], after[RBENCH_N_CPU];
} sampler_t;

static void *
sampler_main(void *arg)
{
    sampler_t *s = arg;

    bench_cpu_window(&s->win, s->pids, RBENCH_N_PROCS, RBENCH_PROC_PG, s->before, s->after);
    return NULL;
}

static void
sampler_start(sampler_t *s, pthread_t *th)
{
    if (pthread_create(th, NULL, sampler_main, s) != 0) {
        fprintf(stderr, "reservation-bench: cannot start a thread\n");
        exit(1);
    }
}

typedef struct {
    rbench_cfg_t *cfg;
    rbench_seat_pool_t *seats;
    int64_t user0, n_users, next; /* holds cycle over users user0.. (with accounts) */
    grpc_completion_queue *cq;
    rbench_hold_t *calls;
    bench_window_t win;
    bench_samples_t lat;
    rbench_outcome_t out;
    bool ran_out;
} svc_load_t;

static bool
svc_load_start(svc_load_t *l, int i)
{
    int64_t sched;
    int32_t seat;

    if (bench_now_ns() >= l->win.end_ns) {
        return false;
    }
    if (!seat_pool_next(l->seats, &sched, &seat)) {
        l->ran_out = true;
        return false;
    }
    rbench_hold_prepare(&l->calls[i], l->cfg->channels_v[i % l->cfg->channels], l->cq,
                        l->user0 + l->next++ % l->n_users, sched, seat);
    rbench_hold_start(&l->calls[i], &l->calls[i]);
    return true;
}

static void
svc_load_sample(svc_load_t *l, int64_t t0, int64_t t1)
{
    if (!bench_window_holds(&l->win, t0, t1)) {
        return;
    }
    if (bench_samples_push(&l->lat, t1 - t0) != 0) {
        fprintf(stderr, "reservation-bench: out of memory for samples\n");
        exit(1);
    }
}

/*
 * Distinct seats through reservation-svc: conc calls in flight from this
 * thread, each on a fresh seat, for the warm-up and then seconds; the holds
 * cycle over n_users users from user0 (with accounts).
 */
static void
distinct_svc(rbench_cfg_t *cfg, int64_t user0, int64_t n_users, rbench_seat_pool_t *seats,
             distinct_t *d)
{
    svc_load_t l = {.cfg = cfg, .seats = seats, .user0 = user0, .n_users = n_users};
    sampler_t s = {.pids = cfg->pids};
    int conc = (int)cfg->conc, active = 0;
    char msg[256];
    pthread_t th;

    memset(d, 0, sizeof(*d));
    l.cq = grpc_completion_queue_create_for_next(NULL);
    l.calls = rbench_xcalloc((size_t)conc, sizeof(*l.calls));
    s.win = l.win = bench_window_from_now(cfg->seconds);
    sampler_start(&s, &th);
    for (int i = 0; i < conc; i++) {
        active += svc_load_start(&l, i);
    }
    while (active > 0) {
        grpc_event ev = grpc_completion_queue_next(l.cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        rbench_hold_t *h = ev.tag;
        int64_t t0, t1 = bench_now_ns();
        svc_status_t code;

        if (ev.type != GRPC_OP_COMPLETE) {
            continue;
        }
        t0 = h->t0;
        msg[0] = '\0';
        code = rbench_hold_finish(h, ev.success != 0, msg, sizeof(msg));
        rbench_outcome_add(&l.out, code, msg);
        if (code == SVC_OK) {
            svc_load_sample(&l, t0, t1);
        }
        if (!svc_load_start(&l, (int)(h - l.calls))) {
            active--;
        }
    }
    pthread_join(th, NULL);
    bench_cq_drain_destroy(l.cq);
    cpu_acc_add(&d->cpu, s.before, s.after, (double)cfg->seconds);
    d->out = l.out;
    d->ran_out = l.ran_out;
    distinct_finish(d, &l.lat, (double)cfg->seconds);
    bench_samples_free(&l.lat);
    free(l.calls);
}

/* The distinct-seat twin: conc connections, each running hold transactions back to back. */
static void
distinct_sql(rbench_cfg_t *cfg, rbench_seat_pool_t *seats, distinct_t *d)
{
    int n = (int)cfg->conc;
    sql_conn_t *conns = sql_connect(cfg->database_url, n);
    sql_run_t run = {.conns = conns, .n_conns = n, .seats = seats, .cfg = cfg};
    sampler_t s = {.pids = cfg->pids};
    pthread_t th;

    memset(d, 0, sizeof(*d));
    s.win = bench_window_from_now(cfg->seconds);
    run.warm_end_ns = s.win.warm_end_ns;
    run.end_ns = s.win.end_ns;
    sampler_start(&s, &th);
    for (int i = 0; i < n; i++) {
        sql_next(&run, &conns[i]);
    }
    sql_loop(&run);
    pthread_join(th, NULL);
    cpu_acc_add(&d->cpu, s.before, s.after, (double)cfg->seconds);
    d->out = run.out;
    d->ran_out = run.ran_out;
    distinct_finish(d, &run.lat, (double)cfg->seconds);
    bench_samples_free(&run.lat);
    sql_disconnect(conns, n);
}

/* ---------------------------------------------------------------- printing */

static void
print_cpu_header(void)
{
    bench_print_cpu_header(proc_names, RBENCH_N_PROCS);
}

/* CPUs busy over the windows, then CPU us per unit (a hold, or a whole storm: per_unit). */
static void
print_cpu(const cpu_acc_t *acc, double units)
{
    double cores[RBENCH_N_CPU], us_per[RBENCH_N_CPU];

    bench_cpu_rates(acc->ticks, RBENCH_N_CPU, acc->window_s, units, cores, us_per);
    bench_print_cpu_row(cores, us_per, RBENCH_N_PROCS);
}

/* ---------------------------------------------------------------- the storm scenario */

enum { PATH_SVC, PATH_SQL, PATH_POOL, N_PATHS };

typedef struct {
    const char *name;
    double *resolved_ms; /* one per repetition */
    cpu_acc_t cpu;
    int64_t not_one_ok; /* storms whose answers were not exactly one OK */
    int64_t unexpected; /* answers neither OK, FAILED_PRECONDITION nor ABORTED */
} storm_path_t;

static void
storm_row(const char *path, int rep, const storm_t *st)
{
    printf("%-26s %3d %7.1f %8.1f %11.1f  ", path, rep, st->started_ms, st->first_ms,
           st->resolved_ms);
    bench_print_codes(st->out.codes);
    if (st->out.first_err[0] != '\0') {
        printf(" (first: %s)", st->out.first_err);
    }
    printf("\n");
    fflush(stdout);
}

static void
storm_account(storm_path_t *p, int rep, const storm_t *st, const int64_t c0[RBENCH_N_CPU],
              const int64_t c1[RBENCH_N_CPU])
{
    p->resolved_ms[rep] = st->resolved_ms;
    cpu_acc_add(&p->cpu, c0, c1, st->resolved_ms / 1e3);
    p->not_one_ok += st->out.codes[SVC_OK] != 1;
    p->unexpected += st->out.n - st->out.codes[SVC_OK] - st->out.codes[SVC_FAILED_PRECONDITION] -
                     st->out.codes[SVC_ABORTED];
}

/* Median of the storms' resolve times into *med, with min and max. */
static void
storm_stats(const storm_path_t *p, int n, double *min, double *med, double *max)
{
    double *v = rbench_xcalloc((size_t)n, sizeof(*v));

    memcpy(v, p->resolved_ms, (size_t)n * sizeof(*v));
    qsort(v, (size_t)n, sizeof(*v), bench_cmp_double);
    *min = v[0];
    *max = v[n - 1];
    *med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    free(v);
}

static void
run_storms(rbench_cfg_t *cfg, storm_path_t paths[N_PATHS], int *n_paths)
{
    int reps = (int)cfg->storms, users = (int)cfg->users;
    int storm_conns = cfg->sql_storm_conns > 0 && cfg->sql_storm_conns < users
                          ? (int)cfg->sql_storm_conns
                          : users;
    int pool = cfg->sql_pool < storm_conns ? (int)cfg->sql_pool : storm_conns;
    rbench_seat_pool_t seats = rbench_create_seats(cfg, "reservation-bench storm", N_PATHS, reps);
    double accounts_s;
    int64_t user0 = rbench_users_with_accounts(cfg, (int64_t)reps * users, &accounts_s);
    int64_t t = bench_now_ns();
    sql_conn_t *conns = sql_connect(cfg->database_url, storm_conns);
    static char sql_name[64], pool_name[64];
    storm_t warm;

    /* Each backend's first transaction loads its caches: not part of any storm. */
    storm_sql(cfg, conns, storm_conns, 0, 1, &warm);
    *n_paths = pool > 0 && pool < storm_conns ? N_PATHS : PATH_POOL;
    snprintf(sql_name, sizeof(sql_name), "direct SQL, %d conns", storm_conns);
    snprintf(pool_name, sizeof(pool_name), "direct SQL, pool of %d", pool);
    paths[PATH_SVC].name = "reservation-svc";
    paths[PATH_SQL].name = sql_name;
    paths[PATH_POOL].name = pool_name;
    for (int p = 0; p < N_PATHS; p++) {
        paths[p].resolved_ms = rbench_xcalloc((size_t)reps, sizeof(double));
    }
    printf("\n== storm: %d users HoldSeats the same fresh seat at once, %d times; one seat per "
           "storm and path ==\n",
           users, reps);
    printf("(reservation-svc: %d users, each with a balance-svc account made by TopUp beforehand "
           "in %.1f s, unseen by reservation-svc, so each one's hold first asks balance-svc "
           "GetBalance; direct SQL: %d connections opened beforehand and warmed with one hold "
           "transaction each on a seat that does not exist, in %.1f s; idle between storms)\n",
           reps * users, accounts_s, storm_conns, (double)(bench_now_ns() - t) / 1e9);
    printf("%-26s %3s %7s %8s %11s  %s\n", "path", "run", "sent ms", "first ms", "resolved ms",
           "answers by status");
    for (int r = 0; r < reps; r++) {
        for (int p = 0; p < *n_paths; p++) {
            int64_t c0[RBENCH_N_CPU], c1[RBENCH_N_CPU];
            storm_t st;
            cpu_snapshot(cfg->pids, c0);
            if (p == PATH_SVC) {
                storm_svc(cfg, user0 + (int64_t)r * users, seats.ids[PATH_SVC], (int32_t)(r + 1),
                          &st);
            } else {
                storm_sql(cfg, conns, p == PATH_SQL ? storm_conns : pool, seats.ids[p],
                          (int32_t)(r + 1), &st);
            }
            cpu_snapshot(cfg->pids, c1);
            storm_row(paths[p].name, r + 1, &st);
            storm_account(&paths[p], r, &st, c0, c1);
            svc_sleep_ms(200); /* let the previous storm's stragglers (logs, sweeps) settle */
        }
    }
    sql_disconnect(conns, storm_conns);
    free(seats.ids);
}

static void
print_storm_summary(const rbench_cfg_t *cfg, const storm_path_t *paths, int n_paths)
{
    printf("\n%-26s %8s %8s %8s %16s", "storm, resolved in", "min ms", "med ms", "max ms",
           "storms not 1 OK");
    print_cpu_header();
    for (int p = 0; p < n_paths; p++) {
        double mn, med, mx;
        storm_stats(&paths[p], (int)cfg->storms, &mn, &med, &mx);
        printf("%-26s %8.1f %8.1f %8.1f %16" PRId64, paths[p].name, mn, med, mx,
               paths[p].not_one_ok);
        print_cpu(&paths[p].cpu, (double)cfg->storms * (double)cfg->users);
    }
    printf("(CPU: busy CPUs over the storms' windows, from first start to last answer; then CPU "
           "us per request; 10 ms clock ticks, so rough)\n");
}

/* ---------------------------------------------------------------- main */

/* --parts: a comma-separated list of storm, distinct and curve into cfg->parts; exits 2 when bad.
 */
static void
parse_parts(rbench_cfg_t *cfg, const char *text)
{
    static const char *const names[] = {"storm", "distinct", "curve"};
    const char *p = text;

    cfg->parts = 0;
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        int k = 0;
        while (k < 3 && (strlen(names[k]) != len || strncmp(p, names[k], len) != 0)) {
            k++;
        }
        if (k == 3) {
            fprintf(stderr,
                    "reservation-bench: --parts (BENCH_PARTS) takes storm, distinct and curve, "
                    "comma-separated: %s\n",
                    text);
            exit(2);
        }
        cfg->parts |= 1 << k;
        p += len + (p[len] == ',');
    }
}

/*
 * --scale: storm sizes, comma-separated, into cfg->scale (sorted, at most
 * RBENCH_MAX_SCALE of 1..100000); "" or "0" is none. Exits 2 when bad.
 */
static void
parse_scale(rbench_cfg_t *cfg, const char *text)
{
    const char *p = text;

    cfg->n_scale = 0;
    if (strcmp(text, "0") == 0) {
        return;
    }
    while (*p != '\0') {
        char *end;
        long long v;
        errno = 0;
        v = strtoll(p, &end, 10);
        if (errno != 0 || end == p || (*end != ',' && *end != '\0') || v < 1 || v > 100000 ||
            cfg->n_scale == RBENCH_MAX_SCALE) {
            fprintf(stderr,
                    "reservation-bench: --scale (BENCH_SCALE) takes up to %d storm sizes of "
                    "1..100000, comma-separated (0: none): %s\n",
                    RBENCH_MAX_SCALE, text);
            exit(2);
        }
        cfg->scale[cfg->n_scale++] = v;
        p = end + (*end == ',');
    }
    qsort(cfg->scale, (size_t)cfg->n_scale, sizeof(cfg->scale[0]), bench_cmp_i64);
}

static void
load_config(rbench_cfg_t *cfg, int argc, char **argv)
{
    const char *parts = NULL, *scale = NULL;
    svc_opt_t opts[] = {
        {"rsv-addr", "RESERVATION_ADDR", SVC_OPT_STRING, "127.0.0.1:50053",
         "reservation-svc host:port", 0, 0, &cfg->rsv_addr, 1},
        {"balance-addr", "BALANCE_ADDR", SVC_OPT_STRING, "127.0.0.1:50052",
         "balance-svc host:port (the one reservation-svc uses), to make each user's account with "
         "TopUp before the timed part",
         0, 0, &cfg->balance_addr, 1},
        {"database-url", "DATABASE_URL", SVC_OPT_STRING,
         "postgresql://postgres@127.0.0.1:55432/reservation",
         "the database reservation-svc uses (libpq conninfo or URI), for the direct-SQL twins", 0,
         0, &cfg->database_url, 1},
        {"admin-token", "ADMIN_TOKEN", SVC_OPT_STRING, NULL,
         "reservation-svc's admin token, for CreateConcert", 0, 0, &cfg->admin_token, 1},
        {"seconds", "BENCH_SECONDS", SVC_OPT_INT, "5",
         "measured seconds of the distinct-seat scenario, per path (after a 0.5 s warm-up)", 1,
         3600, &cfg->seconds, 0},
        {"concurrency", "BENCH_CONCURRENCY", SVC_OPT_INT, "64",
         "distinct seats: calls (or connections) in flight", 1, MAX_CONC, &cfg->conc, 0},
        {"users", "BENCH_USERS", SVC_OPT_INT, "1000", "storm: users holding the same seat at once",
         2, 100000, &cfg->users, 0},
        {"storms", "BENCH_STORMS", SVC_OPT_INT, "5", "storm: repetitions per path, fresh seat each",
         1, 1000, &cfg->storms, 0},
        {"channels", "BENCH_CHANNELS", SVC_OPT_INT, "1",
         "gRPC channels (HTTP/2 connections) the calls are spread over", 1, RBENCH_MAX_CHANNELS,
         &cfg->channels, 0},
        {"sql-storm-conns", "BENCH_SQL_STORM_CONNS", SVC_OPT_INT, "0",
         "storm twin: connections (0: one per user; PostgreSQL's max_connections must allow it)", 0,
         100000, &cfg->sql_storm_conns, 0},
        {"sql-pool", "BENCH_SQL_POOL", SVC_OPT_INT, "16",
         "storm twin, second form: the users over a pool of this many connections "
         "(reservation-svc's "
         "DB_POOL default); 0: skip",
         0, 10000, &cfg->sql_pool, 0},
        {"parts", "BENCH_PARTS", SVC_OPT_STRING, "storm,distinct,curve",
         "what to run, comma-separated: storm (one seat, against direct SQL), distinct (distinct "
         "seats at --concurrency, against direct SQL), curve (storms of --scale users)",
         0, 0, &parts, 1},
        {"scale", "BENCH_SCALE", SVC_OPT_STRING, "1000,5000,10000",
         "curve: storm sizes, comma-separated; each is fired at once on one seat and on a hall "
         "(0: no curve)",
         0, 0, &scale, 1},
        {"hall-seats", "BENCH_HALL_SEATS", SVC_OPT_INT, "1000",
         "curve: seats of the hall; each user holds one seat drawn at random from it", 1, 10000,
         &cfg->hall_seats, 0},
        {"curve-file", "BENCH_CURVE_FILE", SVC_OPT_STRING, NULL,
         "curve: write one line per storm here (whitespace-separated, for gnuplot)", 0, 0,
         &cfg->curve_file, 0},
        {"distinct-users", "BENCH_DISTINCT_USERS", SVC_OPT_INT, "1000",
         "distinct seats through reservation-svc: the holds cycle over this many users (each "
         "with an account; reservation-svc asks balance-svc about each once, then knows it)",
         1, 1000000, &cfg->distinct_users, 0},
        {"max-rate", "BENCH_MAX_RATE", SVC_OPT_INT, "10000",
         "distinct seats: holds/s to make seats for (10 000 per schedule)", 100, 1000000,
         &cfg->max_rate, 0},
        {"rsv-pid", "RESERVATION_SVC_PID", SVC_OPT_INT, "0",
         "reservation-svc's process id, to report its CPU time (0: not reported)", 0, 1 << 30,
         &cfg->pids[RBENCH_PROC_RSV], 0},
        {"lock-pid", "LOCK_SVC_PID", SVC_OPT_INT, "0", "lock-svc's process id (0: not reported)", 0,
         1 << 30, &cfg->pids[RBENCH_PROC_LOCK], 0},
        {"balance-pid", "BALANCE_SVC_PID", SVC_OPT_INT, "0",
         "balance-svc's process id (0: not reported)", 0, 1 << 30, &cfg->pids[RBENCH_PROC_BAL], 0},
        {"redis-pid", "REDIS_PID", SVC_OPT_INT, "0", "redis-server's process id (0: not reported)",
         0, 1 << 30, &cfg->pids[RBENCH_PROC_REDIS], 0},
        {"pg-pid", "PG_PID", SVC_OPT_INT, "0",
         "the postmaster's process id; its children are counted too (0: not reported)", 0, 1 << 30,
         &cfg->pids[RBENCH_PROC_PG], 0},
    };

    svc_config_load_or_exit(opts, (int)(sizeof(opts) / sizeof(opts[0])), argc, argv,
                            "reservation-bench: HoldSeats through reservation-svc (a storm of "
                            "users on one seat; distinct seats at a concurrency) next to the same "
                            "SQL run directly against PostgreSQL, and storms of growing size on "
                            "one seat and on a hall (the scale curve). Prints numbers; exits 0 "
                            "unless it cannot start.");
    parse_parts(cfg, parts);
    parse_scale(cfg, scale);
}

/* Connects every channel with one cheap call each (an unknown schedule: NOT_FOUND). */
static void
warm_channels(rbench_cfg_t *cfg)
{
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    rbench_hold_t *calls = rbench_xcalloc((size_t)cfg->channels, sizeof(*calls));

    for (int i = 0; i < cfg->channels; i++) {
        rbench_hold_prepare(&calls[i], cfg->channels_v[i], cq, 1, INT64_MAX / 2, 1);
        rbench_hold_start(&calls[i], &calls[i]);
    }
    for (int done = 0; done < cfg->channels;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_OP_COMPLETE) {
            char msg[256] = "";
            svc_status_t code = rbench_hold_finish(ev.tag, ev.success != 0, msg, sizeof(msg));
            if (code != SVC_NOT_FOUND) {
                fprintf(stderr, "reservation-bench: first call answered %s: %s\n",
                        svc_status_name(code), msg);
                exit(1);
            }
            done++;
        }
    }
    bench_cq_drain_destroy(cq);
    free(calls);
}

static void
distinct_row(const char *path, const rbench_cfg_t *cfg, const distinct_t *d)
{
    printf("%-26s %5" PRId64 " %8" PRId64 " %9.1f %8.3f %8.3f %6" PRId64, path, cfg->conc, d->done,
           d->rate, d->p50_ms, d->p99_ms, d->out.n - d->out.codes[SVC_OK]);
    print_cpu(&d->cpu, (double)d->done);
    if (d->out.n - d->out.codes[SVC_OK] > 0) {
        printf("  errors in %s:", path);
        bench_print_codes(d->out.codes);
        printf("; first: %s\n", d->out.first_err);
    }
    if (d->ran_out) {
        printf("  WARNING: %s ran out of fresh seats before the window ended (raise --max-rate)\n",
               path);
    }
    fflush(stdout);
}

/*
 * Distinct seats through reservation-svc and through direct SQL, each on
 * schedules of its own; prints the table.
 */
static void
run_distinct(rbench_cfg_t *cfg, distinct_t *dsvc, distinct_t *dsql)
{
    int schedules =
        (int)(((cfg->seconds + 1) * cfg->max_rate + SEATS_PER_SCHEDULE - 1) / SEATS_PER_SCHEDULE);
    rbench_seat_pool_t svc_seats =
        rbench_create_seats(cfg, "reservation-bench distinct svc", schedules, SEATS_PER_SCHEDULE);
    rbench_seat_pool_t sql_seats =
        rbench_create_seats(cfg, "reservation-bench distinct sql", schedules, SEATS_PER_SCHEDULE);
    double accounts_s;
    int64_t user0 = rbench_users_with_accounts(cfg, cfg->distinct_users, &accounts_s);

    printf("\n== distinct seats: concurrency %" PRId64 ", each hold on a seat never held before "
           "(%d schedules of %d seats per path), %.1f s warm-up then %" PRId64 " s ==\n",
           cfg->conc, schedules, SEATS_PER_SCHEDULE, (double)BENCH_WARMUP_NS / 1e9, cfg->seconds);
    printf("(reservation-svc: the holds cycle over %" PRId64 " users whose accounts TopUp made "
           "beforehand in %.1f s; reservation-svc asks balance-svc about each on its first hold "
           "and knows it after; direct SQL: a new user id per hold, no account check)\n",
           cfg->distinct_users, accounts_s);
    printf("%-26s %5s %8s %9s %8s %8s %6s", "path", "conc", "holds", "holds/s", "p50 ms", "p99 ms",
           "errors");
    print_cpu_header();
    distinct_svc(cfg, user0, cfg->distinct_users, &svc_seats, dsvc);
    distinct_row("reservation-svc", cfg, dsvc);
    distinct_sql(cfg, &sql_seats, dsql);
    distinct_row("direct SQL", cfg, dsql);
    free(svc_seats.ids);
    free(sql_seats.ids);
}

/* The storm's and the distinct seats' ratios against direct SQL, and the storms' NOTE lines. */
static void
print_summary(const rbench_cfg_t *cfg, const storm_path_t *paths, int n_paths,
              const distinct_t *dsvc, const distinct_t *dsql)
{
    double mn, svc_med, sql_med, pool_med;

    printf("\n== summary ==\n");
    if (cfg->parts & RBENCH_PART_STORM) {
        storm_stats(&paths[PATH_SVC], (int)cfg->storms, &mn, &svc_med, &mn);
        storm_stats(&paths[PATH_SQL], (int)cfg->storms, &mn, &sql_med, &mn);
        printf("storm of %" PRId64 " on one seat, median resolve time: reservation-svc %.1f ms, %s "
               "%.1f ms: ratio svc/direct %.2f (target <= 1.50); reservation-svc under 300 ms: "
               "%s\n",
               cfg->users, svc_med, paths[PATH_SQL].name, sql_med,
               sql_med > 0 ? svc_med / sql_med : 0.0, svc_med < 300.0 ? "yes" : "no");
        if (n_paths == N_PATHS) {
            storm_stats(&paths[PATH_POOL], (int)cfg->storms, &mn, &pool_med, &mn);
            printf("  (against %s: %.1f ms, ratio %.2f)\n", paths[PATH_POOL].name, pool_med,
                   pool_med > 0 ? svc_med / pool_med : 0.0);
        }
    }
    if (cfg->parts & RBENCH_PART_DISTINCT) {
        printf("distinct seats at concurrency %" PRId64 ": reservation-svc %.1f holds/s, direct "
               "SQL %.1f holds/s: ratio svc/direct %.2f (target >= 0.50)\n",
               cfg->conc, dsvc->rate, dsql->rate, dsql->rate > 0 ? dsvc->rate / dsql->rate : 0.0);
    }
    for (int p = 0; p < n_paths; p++) {
        if (paths[p].not_one_ok > 0 || paths[p].unexpected > 0) {
            printf("NOTE: %s: %" PRId64 " storms without exactly one OK, %" PRId64
                   " answers neither OK, FAILED_PRECONDITION nor ABORTED\n",
                   paths[p].name, paths[p].not_one_ok, paths[p].unexpected);
        }
    }
}

/* Channels to reservation-svc (distinct, so each is a connection of its own) and balance-svc. */
static void
connect_channels(rbench_cfg_t *cfg)
{
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();

    for (int i = 0; i < cfg->channels; i++) {
        /* Distinct args, so gRPC does not share one subchannel (connection) among them. */
        grpc_arg arg = {.type = GRPC_ARG_INTEGER, .key = "reservation-bench.channel"};
        arg.value.integer = i;
        grpc_channel_args args = {1, &arg};
        cfg->channels_v[i] = grpc_channel_create(cfg->rsv_addr, creds, &args);
    }
    cfg->balance_ch = grpc_channel_create(cfg->balance_addr, creds, NULL);
    grpc_channel_credentials_release(creds);
}

int
main(int argc, char **argv)
{
    rbench_cfg_t cfg = {0};
    storm_path_t paths[N_PATHS] = {0};
    distinct_t dsvc = {0}, dsql = {0};
    svc_err_t err;
    int n_paths = 0;

    load_config(&cfg, argc, argv);
    svc_log_init("reservation-bench", SVC_LOG_WARN);
    cfg.next_user = 1 + (int64_t)(unix_us() % 1000000000LL) * 1000; /* distinct across runs */
    if ((cfg.client = svc_client_get(cfg.rsv_addr, &err)) == NULL) {
        fprintf(stderr, "reservation-bench: %s\n", err.msg);
        return 2;
    }
    grpc_init();
    connect_channels(&cfg);
    printf("reservation-bench: reservation-svc %s, async client (one completion queue on one "
           "thread, %" PRId64 " channel%s), direct SQL through libpq (one thread, epoll, "
           "statements one at a time like svc_pg_tx); accounts through balance-svc %s\n",
           cfg.rsv_addr, cfg.channels, cfg.channels == 1 ? "" : "s", cfg.balance_addr);
    warm_channels(&cfg);

    if (cfg.parts & RBENCH_PART_STORM) {
        run_storms(&cfg, paths, &n_paths);
        print_storm_summary(&cfg, paths, n_paths);
    }
    if (cfg.parts & RBENCH_PART_DISTINCT) {
        run_distinct(&cfg, &dsvc, &dsql);
    }
    if (cfg.parts & RBENCH_PART_CURVE && cfg.n_scale > 0) {
        rbench_curve_run(&cfg);
    }
    if (cfg.parts & (RBENCH_PART_STORM | RBENCH_PART_DISTINCT)) {
        print_summary(&cfg, paths, n_paths, &dsvc, &dsql);
    }
    for (int p = 0; p < n_paths; p++) {
        free(paths[p].resolved_ms);
    }
    for (int i = 0; i < cfg.channels; i++) {
        grpc_channel_destroy(cfg.channels_v[i]);
    }
    grpc_channel_destroy(cfg.balance_ch);
    grpc_shutdown();
    svc_client_release_all();
    return 0;
}
