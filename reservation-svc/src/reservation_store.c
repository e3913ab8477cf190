/*
 * reservation_store.c: the SQL of reservation-svc. Every statement uses
 * parameters. Seats are locked in ascending order inside the transaction as
 * they are with lock-svc outside it, and the partial unique index on live
 * reservation seats is the last net under both.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reservation_store_internal.h"
#include "svc/metrics.h"

/* A write whose lock was lost (a newer fence is in the row): the fence refused it. */
static svc_metric_t *
fence_rejections(void)
{
    static svc_metric_t *_Atomic m;
    svc_metric_t *got = m;

    if (got == NULL) {
        got = svc_metric(SVC_METRIC_COUNTER, "lock_fence_rejections_total",
                         "Writes refused because a newer lock fence was already in the row.",
                         "resource=\"seat\"");
        m = got;
    }
    return got;
}

/* "{1,2,3}": a parameter value for int[] (numbers we validated, not request text). */
static void
int_array(char *buf, size_t len, const int32_t *v, int n)
{
    size_t off = 0;

    off += (size_t)snprintf(buf, len, "{");
    for (int i = 0; i < n && off < len; i++) {
        off += (size_t)snprintf(buf + off, len - off, "%s%d", i ? "," : "", (int)v[i]);
    }
    if (off < len) {
        snprintf(buf + off, len - off, "}");
    }
}

/* ---------- concerts ---------- */

typedef struct {
    const char *title;
    const rsv_schedule_spec_t *specs;
    int n_specs;
    svc_arena_t *arena;
    rsv_concert_t *out;
} create_ctx_t;

static int
create_tx(PGconn *conn, void *arg, svc_err_t *err)
{
    create_ctx_t *c = arg;
    const char *p1[] = {c->title};
    PGresult *res = svc_pg_exec(conn, "INSERT INTO concerts (title) VALUES ($1) RETURNING id", 1,
                                p1, PGRES_TUPLES_OK, "create concert", err);

    if (res == NULL) {
        return -1;
    }
    c->out->id = svc_pg_i64(res, 0, 0);
    PQclear(res);
    c->out->title = (char *)c->title;
    c->out->n_schedules = 0;
    for (int i = 0; i < c->n_specs; i++) {
        char concert[24], starts[24], count[16], price[24], limit[16], ttl[24];
        const char *p[] = {concert, starts, count, price, limit, ttl};
        rsv_schedule_t *s = &c->out->schedules[i];
        I64(concert, c->out->id);
        I64(starts, c->specs[i].starts_at_ms);
        I64(count, c->specs[i].seat_count);
        I64(price, c->specs[i].seat_price);
        I64(limit, c->specs[i].waiting_room_limit);
        I64(ttl, c->specs[i].admission_ttl_ms);
        res = svc_pg_exec(
            conn,
            "WITH s AS (INSERT INTO schedules (concert_id, starts_at_ms, seat_count,"
            " seat_price, waiting_room_limit, admission_ttl_ms) VALUES ($1, $2, $3, $4, $5, $6)"
            " RETURNING id)"
            " INSERT INTO seats (schedule_id, number, price)"
            " SELECT s.id, g, $4 FROM s, generate_series(1, $3::int) g RETURNING schedule_id",
            6, p, PGRES_TUPLES_OK, "create schedule", err);
        if (res == NULL) {
            return -1;
        }
        s->id = svc_pg_i64(res, 0, 0);
        s->concert_id = c->out->id;
        s->starts_at_ms = c->specs[i].starts_at_ms;
        s->seat_count = s->available = c->specs[i].seat_count;
        s->waiting_room_limit = c->specs[i].waiting_room_limit;
        s->admission_ttl_ms = c->specs[i].admission_ttl_ms;
        c->out->n_schedules++;
        PQclear(res);
    }
    return 0;
}

int
rsv_store_create_concert(svc_pg_pool_t *db, const char *title, const rsv_schedule_spec_t *specs,
                         int n_specs, int64_t deadline_ms, svc_arena_t *arena, rsv_concert_t *out,
                         svc_err_t *err)
{
    create_ctx_t c = {title, specs, n_specs, arena, out};

    out->schedules = svc_arena_alloc(arena, (size_t)n_specs * sizeof(*out->schedules));
    if (out->schedules == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    return svc_pg_tx(db, deadline_ms, create_tx, &c, err);
}

int
rsv_store_list_concerts(svc_pg_pool_t *db, int64_t now_ms, int64_t deadline_ms, svc_arena_t *arena,
                        rsv_concert_t **out, int *n_out, svc_err_t *err)
{
    char now[24];
    const char *p[] = {now};
    PGconn *conn = svc_pg_acquire(db, deadline_ms, err);
    PGresult *cres, *sres;
    int n_c, n_s, j = 0;

    *out = NULL;
    *n_out = 0;
    if (conn == NULL) {
        return -1;
    }
    I64(now, now_ms);
    cres = svc_pg_exec(conn, "SELECT id, title FROM concerts ORDER BY id", 0, NULL, PGRES_TUPLES_OK,
                       "list concerts", err);
    sres = cres == NULL
               ? NULL
               : svc_pg_exec(conn,
                             "SELECT s.id, s.concert_id, s.starts_at_ms, s.seat_count,"
                             " (SELECT count(*) FROM seats x WHERE x.schedule_id = s.id AND"
                             " (x.status = 1 OR (x.status = 2 AND x.hold_expires_at_ms <= $1))),"
                             " s.waiting_room_limit, s.admission_ttl_ms"
                             " FROM schedules s ORDER BY s.concert_id, s.starts_at_ms, s.id",
                             1, p, PGRES_TUPLES_OK, "list schedules", err);
    svc_pg_release(db, conn, sres == NULL && err->code == SVC_UNAVAILABLE);
    if (sres == NULL) {
        PQclear(cres);
        return -1;
    }
    n_c = PQntuples(cres);
    n_s = PQntuples(sres);
    *out = svc_arena_alloc(arena, (size_t)(n_c + 1) * sizeof(**out));
    rsv_schedule_t *all = svc_arena_alloc(arena, (size_t)(n_s + 1) * sizeof(*all));
    for (int i = 0; *out != NULL && all != NULL && i < n_c; i++) {
        rsv_concert_t *c = &(*out)[i];
        c->id = svc_pg_i64(cres, i, 0);
        c->title = svc_arena_strdup(arena, PQgetvalue(cres, i, 1));
        c->schedules = &all[j];
        while (j < n_s && svc_pg_i64(sres, j, 1) == c->id) { /* both ordered by concert */
            rsv_schedule_t *s = &all[j++];
            s->id = svc_pg_i64(sres, j - 1, 0);
            s->concert_id = c->id;
            s->starts_at_ms = svc_pg_i64(sres, j - 1, 2);
            s->seat_count = (int32_t)svc_pg_i64(sres, j - 1, 3);
            s->available = (int32_t)svc_pg_i64(sres, j - 1, 4);
            s->waiting_room_limit = (int32_t)svc_pg_i64(sres, j - 1, 5);
            s->admission_ttl_ms = svc_pg_i64(sres, j - 1, 6);
            c->n_schedules++;
        }
    }
    PQclear(cres);
    PQclear(sres);
    if (*out == NULL || all == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    *n_out = n_c;
    return 0;
}

/* ---------- seats ---------- */

static int
seat_status(const PGresult *res, int row, int col_status, int col_expiry, int64_t now_ms)
{
    int status = (int)svc_pg_i64(res, row, col_status);

    if (status == RSV_SEAT_HELD && svc_pg_i64(res, row, col_expiry) <= now_ms) {
        return RSV_SEAT_AVAILABLE; /* an expired hold is free at once, swept or not */
    }
    return status;
}

int
rsv_store_list_seats(svc_pg_pool_t *db, int64_t schedule_id, int64_t now_ms, int64_t deadline_ms,
                     svc_arena_t *arena, rsv_seat_t **out, int *n_out, svc_err_t *err)
{
    char sched[24];
    const char *p[] = {sched};
    PGconn *conn = svc_pg_acquire(db, deadline_ms, err);
    PGresult *res;
    int n;

    *out = NULL;
    *n_out = 0;
    if (conn == NULL) {
        return -1;
    }
    I64(sched, schedule_id);
    res = svc_pg_exec(conn,
                      "SELECT number, price, status, coalesce(hold_expires_at_ms, 0) FROM seats"
                      " WHERE schedule_id = $1 ORDER BY number",
                      1, p, PGRES_TUPLES_OK, "list seats", err);
    svc_pg_release(db, conn, res == NULL && err->code == SVC_UNAVAILABLE);
    if (res == NULL) {
        return -1;
    }
    n = PQntuples(res);
    if (n == 0) {
        PQclear(res);
        svc_err_set(err, SVC_NOT_FOUND, "schedule %" PRId64 " not found", schedule_id);
        return -1;
    }
    *out = svc_arena_alloc(arena, (size_t)n * sizeof(**out));
    for (int i = 0; *out != NULL && i < n; i++) {
        (*out)[i].number = (int32_t)svc_pg_i64(res, i, 0);
        (*out)[i].price = svc_pg_i64(res, i, 1);
        (*out)[i].status = seat_status(res, i, 2, 3, now_ms);
    }
    PQclear(res);
    if (*out == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    *n_out = n;
    return 0;
}

/*
 * Checks the seats of a result (number, status, expiry; ordered by number)
 * against the wanted ones: returns 0 when all exist and are free.
 */
static int
check_seats(const PGresult *res, int64_t schedule_id, const int32_t *seats, int n, int64_t now_ms,
            int32_t *taken, svc_err_t *err)
{
    int rows = PQntuples(res);

    if (rows != n) {
        for (int i = 0, r = 0; i < n; i++) { /* name the first missing one */
            if (r < rows && svc_pg_i64(res, r, 0) == seats[i]) {
                r++;
                continue;
            }
            svc_err_set(err, SVC_INVALID_ARGUMENT, "seat %d does not exist in schedule %" PRId64,
                        (int)seats[i], schedule_id);
            return -1;
        }
    }
    for (int r = 0; r < rows; r++) {
        if (seat_status(res, r, 1, 2, now_ms) != RSV_SEAT_AVAILABLE) {
            if (taken != NULL) {
                *taken = (int32_t)svc_pg_i64(res, r, 0);
            }
            svc_err_set(err, SVC_FAILED_PRECONDITION,
                        "seat %d of schedule %" PRId64 " is not available",
                        (int)svc_pg_i64(res, r, 0), schedule_id);
            return -1;
        }
    }
    return 0;
}

/*
 * Per wanted seat, in check then seat order: the check's index, the seat,
 * whether the schedule exists, and the seat's status and hold expiry (NULL
 * when the schedule has no such seat).
 */
#define SQL_PRECHECK                                                                               \
    "SELECT q.i, q.num, sc.id IS NOT NULL, s.status, coalesce(s.hold_expires_at_ms, 0),"           \
    " coalesce(sc.waiting_room_limit, 0), coalesce(sc.admission_ttl_ms, 0)"                        \
    " FROM unnest($1::int[], $2::bigint[], $3::int[]) AS q(i, sid, num)"                           \
    " LEFT JOIN schedules sc ON sc.id = q.sid"                                                     \
    " LEFT JOIN seats s ON s.schedule_id = q.sid AND s.number = q.num ORDER BY q.i, q.num"

/* Check c's outcome from its rows [first, first + c->n) of res. */
static void
precheck_one(rsv_precheck_t *c, const PGresult *res, int first, int64_t now_ms)
{
    c->rc = -1;
    c->taken = 0;
    c->waiting_room_limit = (int32_t)svc_pg_i64(res, first, 5);
    c->admission_ttl_ms = svc_pg_i64(res, first, 6);
    if (strcmp(PQgetvalue(res, first, 2), "t") != 0) {
        svc_err_set(&c->err, SVC_NOT_FOUND, "schedule %" PRId64 " not found", c->schedule_id);
        return;
    }
    for (int r = first; r < first + c->n; r++) { /* name the first missing seat */
        if (PQgetisnull(res, r, 3)) {
            svc_err_set(&c->err, SVC_INVALID_ARGUMENT,
                        "seat %d does not exist in schedule %" PRId64, (int)svc_pg_i64(res, r, 1),
                        c->schedule_id);
            return;
        }
    }
    for (int r = first; r < first + c->n; r++) {
        if (seat_status(res, r, 3, 4, now_ms) != RSV_SEAT_AVAILABLE) {
            c->taken = (int32_t)svc_pg_i64(res, r, 1);
            svc_err_set(&c->err, SVC_FAILED_PRECONDITION,
                        "seat %d of schedule %" PRId64 " is not available", (int)c->taken,
                        c->schedule_id);
            return;
        }
    }
    c->rc = 0;
    svc_err_clear(&c->err);
}

int
rsv_store_precheck_many(svc_pg_pool_t *db, rsv_precheck_t *const *checks, int n_checks,
                        int64_t now_ms, int64_t deadline_ms, svc_err_t *err)
{
    int rows = 0, rc = -1;
    size_t cap;
    char *arr[3];
    PGresult *res = NULL;

    for (int i = 0; i < n_checks; i++) {
        rows += checks[i]->n;
    }
    cap = (size_t)rows * 22 + 3; /* "{", then each value (at most 20 digits and a sign) and "," */
    for (int k = 0; k < 3; k++) {
        arr[k] = malloc(cap);
    }
    if (arr[0] == NULL || arr[1] == NULL || arr[2] == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
    } else {
        const char *p[] = {arr[0], arr[1], arr[2]};
        size_t len[3] = {1, 1, 1};
        PGconn *conn;
        for (int k = 0; k < 3; k++) {
            arr[k][0] = '{';
        }
        for (int i = 0; i < n_checks; i++) {
            for (int j = 0; j < checks[i]->n; j++) {
                const char *sep = len[0] > 1 ? "," : "";
                len[0] += (size_t)snprintf(arr[0] + len[0], cap - len[0], "%s%d", sep, i);
                len[1] += (size_t)snprintf(arr[1] + len[1], cap - len[1], "%s%" PRId64, sep,
                                           checks[i]->schedule_id);
                len[2] += (size_t)snprintf(arr[2] + len[2], cap - len[2], "%s%d", sep,
                                           (int)checks[i]->seats[j]);
            }
        }
        for (int k = 0; k < 3; k++) {
            snprintf(arr[k] + len[k], cap - len[k], "}");
        }
        conn = svc_pg_acquire(db, deadline_ms, err);
        if (conn != NULL) {
            res = svc_pg_exec(conn, SQL_PRECHECK, 3, p, PGRES_TUPLES_OK, "read seats", err);
            svc_pg_release(db, conn, res == NULL && err->code == SVC_UNAVAILABLE);
        }
        if (res != NULL && PQntuples(res) != rows) {
            svc_err_set(err, SVC_INTERNAL, "read seats: %d rows for %d seats", PQntuples(res),
                        rows);
            PQclear(res);
            res = NULL;
        }
    }
    for (int k = 0; k < 3; k++) {
        free(arr[k]);
    }
    for (int i = 0, first = 0; i < n_checks; first += checks[i]->n, i++) {
        if (res != NULL) {
            precheck_one(checks[i], res, first, now_ms);
        } else {
            checks[i]->rc = -1;
            checks[i]->taken = 0;
            checks[i]->waiting_room_limit = 0;
            checks[i]->admission_ttl_ms = 0;
            checks[i]->err = *err;
        }
    }
    if (res != NULL || n_checks == 0) {
        rc = 0;
    }
    PQclear(res);
    return rc;
}

int
rsv_store_precheck(svc_pg_pool_t *db, int64_t schedule_id, const int32_t *seats, int n,
                   int64_t now_ms, int64_t deadline_ms, int32_t *taken, svc_err_t *err)
{
    rsv_precheck_t c = {.schedule_id = schedule_id, .seats = seats, .n = n};
    rsv_precheck_t *one = &c;

    (void)rsv_store_precheck_many(db, &one, 1, now_ms, deadline_ms, err);
    if (taken != NULL && c.taken != 0) {
        *taken = c.taken;
    }
    *err = c.err;
    return c.rc;
}

int
rsv_store_schedule_room(svc_pg_pool_t *db, int64_t schedule_id, int64_t deadline_ms, int32_t *limit,
                        int64_t *ttl_ms, svc_err_t *err)
{
    char sched[24];
    const char *p[] = {sched};
    PGconn *conn = svc_pg_acquire(db, deadline_ms, err);
    PGresult *res;
    int rc = -1;

    if (conn == NULL) {
        return -1;
    }
    I64(sched, schedule_id);
    res = svc_pg_exec(conn,
                      "SELECT waiting_room_limit, admission_ttl_ms FROM schedules WHERE id = $1", 1,
                      p, PGRES_TUPLES_OK, "read schedule", err);
    svc_pg_release(db, conn, res == NULL && err->code == SVC_UNAVAILABLE);
    if (res != NULL && PQntuples(res) == 0) {
        svc_err_set(err, SVC_NOT_FOUND, "schedule %" PRId64 " not found", schedule_id);
    } else if (res != NULL) {
        *limit = (int32_t)svc_pg_i64(res, 0, 0);
        *ttl_ms = svc_pg_i64(res, 0, 1);
        rc = 0;
    }
    PQclear(res);
    return rc;
}

/* ---------- holds ---------- */

typedef struct {
    int64_t user_id, schedule_id, now_ms, ttl_ms;
    const int32_t *seats;
    const int64_t *fences;
    int n;
    rsv_reservation_t *out;
    int32_t *taken;
    const char *admission_ticket; /* NULL: none */
} hold_ctx_t;

/*
 * Lock order, everywhere in this service: seats (by schedule, number), then
 * reservations (by id), then their reservation_seats and payments rows. A
 * transaction that cannot follow it takes SKIP LOCKED instead of waiting.
 */
#define SQL_LOCK_SEATS                                                                             \
    "SELECT number, status, coalesce(hold_expires_at_ms, 0), last_fence, price,"                   \
    " coalesce(hold_reservation_id, 0) FROM seats WHERE schedule_id = $1"                          \
    " AND number = ANY($2::int[]) ORDER BY number FOR UPDATE"

/*
 * The expired holds that still mark some of our (locked) seats: locks them
 * in id order, marks them EXPIRED (their pending payments VOIDING), and
 * takes our seats off them. Their other seats keep their stale mark until
 * the sweeper frees them; reads already see them as free.
 */
static int
expire_old_holds(PGconn *conn, const char *sched, const char *list, const char *old, svc_err_t *err)
{
    const char *p1[] = {old};
    const char *p3[] = {old,
                        sched,
                        list,
                        RSV_STR(RSV_HELD),
                        RSV_STR(RSV_EXPIRED),
                        RSV_STR(RSV_PAY_PENDING),
                        RSV_STR(RSV_PAY_VOIDING),
                        RSV_STR(RSV_SEAT_HELD),
                        RSV_STR(RSV_SEAT_AVAILABLE)};
    PGresult *res = svc_pg_exec(conn,
                                "SELECT id FROM reservations WHERE id = ANY($1::bigint[])"
                                " ORDER BY id FOR UPDATE",
                                1, p1, PGRES_TUPLES_OK, "lock expired holds", err);

    if (res == NULL) {
        return -1;
    }
    PQclear(res);
    res = svc_pg_exec(conn,
                      "WITH r AS (UPDATE reservations SET status = $5, updated_at = now()"
                      " WHERE id = ANY($1::bigint[]) AND status = $4),"
                      " rs AS (UPDATE reservation_seats SET live = false"
                      " WHERE reservation_id = ANY($1::bigint[]) AND live),"
                      " p AS (UPDATE payments SET status = $7, updated_at = now()"
                      " WHERE reservation_id = ANY($1::bigint[]) AND status = $6)"
                      " UPDATE seats SET status = $9, hold_reservation_id = NULL,"
                      " hold_user_id = NULL, hold_expires_at_ms = NULL WHERE schedule_id = $2"
                      " AND number = ANY($3::int[]) AND status = $8",
                      9, p3, PGRES_COMMAND_OK, "expire old holds", err);
    PQclear(res);
    return res == NULL ? -1 : 0;
}

/* Checks the locked seats: free, and no fence newer than ours. Collects the old holds. */
static int
hold_check(hold_ctx_t *h, const PGresult *res, char *old, size_t old_len, int64_t *amount,
           svc_err_t *err)
{
    int64_t prev[RSV_MAX_SEATS];
    int n_old = 0;

    if (check_seats(res, h->schedule_id, h->seats, h->n, h->now_ms, h->taken, err) != 0) {
        return -1;
    }
    *amount = 0;
    for (int i = 0; i < h->n; i++) {
        int64_t holder = svc_pg_i64(res, i, 5);
        bool seen = false;
        if (svc_pg_i64(res, i, 3) > h->fences[i]) {
            svc_metric_add(fence_rejections(), 1);
            svc_err_set(err, SVC_ABORTED, "lock on seat %d was lost", (int)h->seats[i]);
            return -1;
        }
        *amount += svc_pg_i64(res, i, 4);
        for (int j = 0; j < n_old; j++) {
            seen |= prev[j] == holder;
        }
        if (holder != 0 && !seen) { /* free, yet marked: an expired hold */
            prev[n_old++] = holder;
        }
    }
    snprintf(old, old_len, "{");
    for (int j = 0; j < n_old; j++) {
        size_t off = strlen(old);
        snprintf(old + off, old_len - off, "%s%" PRId64, j ? "," : "", prev[j]);
    }
    strncat(old, "}", old_len - strlen(old) - 1);
    return n_old;
}

static int
hold_tx(PGconn *conn, void *arg, svc_err_t *err)
{
    hold_ctx_t *h = arg;
    char sched[24], list[128], user[24], expires[24], rid[24], amt[24];
    char old[RSV_MAX_SEATS * 24 + 4];
    const char *p[] = {sched, list};
    int64_t amount;
    PGresult *res;
    int n_old;

    I64(sched, h->schedule_id);
    I64(user, h->user_id);
    I64(expires, h->now_ms + h->ttl_ms);
    int_array(list, sizeof(list), h->seats, h->n);
    res = svc_pg_exec(conn, SQL_LOCK_SEATS, 2, p, PGRES_TUPLES_OK, "lock seats", err);
    if (res == NULL) {
        return -1;
    }
    n_old = hold_check(h, res, old, sizeof(old), &amount, err);
    PQclear(res);
    if (n_old < 0 || (n_old > 0 && expire_old_holds(conn, sched, list, old, err) != 0)) {
        return -1;
    }
    I64(amt, amount);
    const char *pr[] = {user, sched, amt, expires, RSV_STR(RSV_HELD), h->admission_ticket};
    res = svc_pg_exec(conn,
                      "INSERT INTO reservations (user_id, schedule_id, status, amount,"
                      " expires_at_ms, admission_ticket) VALUES ($1, $2, $5, $3, $4, $6)"
                      " RETURNING id, (extract(epoch FROM created_at) * 1000)::bigint",
                      6, pr, PGRES_TUPLES_OK, "write reservation", err);
    if (res == NULL) {
        return -1;
    }
    h->out->id = svc_pg_i64(res, 0, 0);
    h->out->created_at_ms = svc_pg_i64(res, 0, 1);
    PQclear(res);
    I64(rid, h->out->id);
    for (int i = 0; i < h->n; i++) {
        char number[16], fence[24];
        const char *ps[] = {rid, sched, number, user, expires, fence, RSV_STR(RSV_SEAT_HELD)};
        I64(number, h->seats[i]);
        I64(fence, h->fences[i]);
        res = svc_pg_exec(conn,
                          "WITH rs AS (INSERT INTO reservation_seats (reservation_id, schedule_id,"
                          " number) VALUES ($1, $2, $3))"
                          " UPDATE seats SET status = $7, hold_reservation_id = $1,"
                          " hold_user_id = $4, hold_expires_at_ms = $5, last_fence = $6"
                          " WHERE schedule_id = $2 AND number = $3",
                          7, ps, PGRES_COMMAND_OK, "hold seat", err);
        if (res == NULL) {
            return -1;
        }
        PQclear(res);
    }
    h->out->user_id = h->user_id;
    h->out->schedule_id = h->schedule_id;
    h->out->status = RSV_HELD;
    h->out->amount = amount;
    h->out->expires_at_ms = h->now_ms + h->ttl_ms;
    return 0;
}

int
rsv_store_hold(svc_pg_pool_t *db, int64_t user_id, int64_t schedule_id, const int32_t *seats,
               const int64_t *fences, int n, int64_t now_ms, int64_t ttl_ms,
               const char *admission_ticket, int64_t deadline_ms, svc_arena_t *arena,
               rsv_reservation_t *out, int32_t *taken, svc_err_t *err)
{
    hold_ctx_t h = {user_id, schedule_id, now_ms, ttl_ms, seats,
                    fences,  n,           out,    taken,  admission_ticket};

    if (n < 1 || n > RSV_MAX_SEATS) {
        svc_err_set(err, SVC_INVALID_ARGUMENT, "1 to %d seats per hold", RSV_MAX_SEATS);
        return -1;
    }
    out->seats = svc_arena_alloc(arena, (size_t)n * sizeof(*out->seats));
    if (out->seats == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    memcpy(out->seats, seats, (size_t)n * sizeof(*seats));
    out->n_seats = n;
    return svc_pg_tx(db, deadline_ms, hold_tx, &h, err);
}

/* One statement on a pooled connection; its result, or NULL with err. */
static PGresult *
admission_exec(svc_pg_pool_t *db, int64_t deadline_ms, const char *sql, int n, const char *const *p,
               ExecStatusType want, const char *what, svc_err_t *err)
{
    PGconn *conn = svc_pg_acquire(db, deadline_ms, err);
    PGresult *res;

    if (conn == NULL) {
        return NULL;
    }
    res = svc_pg_exec(conn, sql, n, p, want, what, err);
    svc_pg_release(db, conn, res == NULL && err->code == SVC_UNAVAILABLE);
    return res;
}

int
rsv_store_admission_end(svc_pg_pool_t *db, int64_t reservation_id, int64_t now_ms,
                        int64_t deadline_ms, char *buf, size_t len, svc_err_t *err)
{
    char rid[24], now[24];
    const char *p[] = {rid, now};
    PGresult *res;

    I64(rid, reservation_id);
    I64(now, now_ms);
    res = admission_exec(db, deadline_ms,
                         "WITH r AS (SELECT admission_ticket AS t FROM reservations"
                         " WHERE id = $1 AND admission_ticket IS NOT NULL),"
                         " e AS (INSERT INTO ended_admissions (ticket, ended_at_ms)"
                         " SELECT t, $2 FROM r ON CONFLICT DO NOTHING)"
                         " SELECT coalesce((SELECT t FROM r), '')",
                         2, p, PGRES_TUPLES_OK, "end admission", err);
    if (res == NULL) {
        return -1;
    }
    snprintf(buf, len, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

int
rsv_store_admission_end_ticket(svc_pg_pool_t *db, const char *ticket, int64_t now_ms,
                               int64_t deadline_ms, svc_err_t *err)
{
    char now[24];
    const char *p[] = {ticket, now};
    PGresult *res;

    I64(now, now_ms);
    res = admission_exec(db, deadline_ms,
                         "INSERT INTO ended_admissions (ticket, ended_at_ms) VALUES ($1, $2)"
                         " ON CONFLICT DO NOTHING",
                         2, p, PGRES_COMMAND_OK, "end admission", err);
    PQclear(res);
    return res == NULL ? -1 : 0;
}

int
rsv_store_admission_ended(svc_pg_pool_t *db, const char *ticket, int64_t deadline_ms, bool *ended,
                          svc_err_t *err)
{
    const char *p[] = {ticket};
    PGresult *res = admission_exec(db, deadline_ms,
                                   "SELECT EXISTS (SELECT 1 FROM ended_admissions"
                                   " WHERE ticket = $1)",
                                   1, p, PGRES_TUPLES_OK, "read admission", err);

    if (res == NULL) {
        return -1;
    }
    *ended = PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    return 0;
}

/* ---------- reading ---------- */

int
rsv_store_read_reservation(PGconn *conn, int64_t id, int64_t now_ms, bool for_update,
                           svc_arena_t *arena, rsv_reservation_t *out, svc_err_t *err)
{
    char rid[24];
    const char *p[] = {rid};
    PGresult *res, *seats;

    I64(rid, id);
    res = svc_pg_exec(conn,
                      for_update
                          ? "SELECT r.user_id, r.schedule_id, r.status, r.amount, r.expires_at_ms,"
                            " (extract(epoch FROM r.created_at) * 1000)::bigint, s.starts_at_ms"
                            " FROM reservations r JOIN schedules s ON s.id = r.schedule_id"
                            " WHERE r.id = $1 FOR UPDATE OF r"
                          : "SELECT r.user_id, r.schedule_id, r.status, r.amount, r.expires_at_ms,"
                            " (extract(epoch FROM r.created_at) * 1000)::bigint, s.starts_at_ms"
                            " FROM reservations r JOIN schedules s ON s.id = r.schedule_id"
                            " WHERE r.id = $1",
                      1, p, PGRES_TUPLES_OK, "read reservation", err);
    if (res == NULL) {
        return -1;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        svc_err_set(err, SVC_NOT_FOUND, "reservation %" PRId64 " not found", id);
        return -1;
    }
    out->id = id;
    out->user_id = svc_pg_i64(res, 0, 0);
    out->schedule_id = svc_pg_i64(res, 0, 1);
    out->status = (int)svc_pg_i64(res, 0, 2);
    out->amount = svc_pg_i64(res, 0, 3);
    out->expires_at_ms = svc_pg_i64(res, 0, 4);
    out->created_at_ms = svc_pg_i64(res, 0, 5);
    out->starts_at_ms = svc_pg_i64(res, 0, 6);
    if (out->status == RSV_HELD && out->expires_at_ms <= now_ms) {
        out->status = RSV_EXPIRED;
    }
    PQclear(res);
    seats = svc_pg_exec(
        conn, "SELECT number FROM reservation_seats WHERE reservation_id = $1 ORDER BY number", 1,
        p, PGRES_TUPLES_OK, "read reservation seats", err);
    if (seats == NULL) {
        return -1;
    }
    out->n_seats = PQntuples(seats);
    out->seats = svc_arena_alloc(arena, (size_t)(out->n_seats + 1) * sizeof(*out->seats));
    for (int i = 0; out->seats != NULL && i < out->n_seats; i++) {
        out->seats[i] = (int32_t)svc_pg_i64(seats, i, 0);
    }
    PQclear(seats);
    if (out->seats == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    return 0;
}

int
rsv_store_get(svc_pg_pool_t *db, int64_t reservation_id, int64_t now_ms, int64_t deadline_ms,
              svc_arena_t *arena, rsv_reservation_t *out, svc_err_t *err)
{
    PGconn *conn = svc_pg_acquire(db, deadline_ms, err);
    int rc;

    if (conn == NULL) {
        return -1;
    }
    rc = rsv_store_read_reservation(conn, reservation_id, now_ms, false, arena, out, err);
    svc_pg_release(db, conn, rc != 0 && err->code == SVC_UNAVAILABLE);
    return rc;
}

/* ---------- sweeping ---------- */

/*
 * Step one locks only reservations, and only those no one else has locked,
 * then their reservation_seats and payments (which come after them in the
 * lock order). Step two, its own transaction, frees stale seat marks with
 * SKIP LOCKED: it never waits for a seat, so it cannot close a lock cycle.
 */
static int
sweep_tx(PGconn *conn, void *arg, svc_err_t *err)
{
    int64_t *now_and_count = arg;
    char now[24], lim[16];
    const char *p[] = {now,
                       lim,
                       RSV_STR(RSV_HELD),
                       RSV_STR(RSV_EXPIRED),
                       RSV_STR(RSV_PAY_PENDING),
                       RSV_STR(RSV_PAY_VOIDING)};
    PGresult *res;

    I64(now, now_and_count[0]);
    I64(lim, RSV_SWEEP_BATCH);
    res = svc_pg_exec(conn,
                      "WITH exp AS (SELECT id FROM reservations WHERE status = $3"
                      " AND expires_at_ms <= $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED),"
                      " r AS (UPDATE reservations SET status = $4, updated_at = now()"
                      " WHERE id IN (SELECT id FROM exp) RETURNING id),"
                      " rs AS (UPDATE reservation_seats SET live = false"
                      " WHERE reservation_id IN (SELECT id FROM r) AND live),"
                      " p AS (UPDATE payments SET status = $6, updated_at = now()"
                      " WHERE reservation_id IN (SELECT id FROM r) AND status = $5)"
                      " SELECT count(*) FROM r",
                      6, p, PGRES_TUPLES_OK, "sweep expired holds", err);
    if (res == NULL) {
        return -1;
    }
    now_and_count[1] = svc_pg_i64(res, 0, 0);
    PQclear(res);
    return 0;
}

static int
free_stale_seats_tx(PGconn *conn, void *arg, svc_err_t *err)
{
    const char *p[] = {arg, RSV_STR(RSV_SEAT_HELD), RSV_STR(RSV_SEAT_AVAILABLE),
                       RSV_STR(RSV_CANCELLED), RSV_STR(RSV_EXPIRED)};
    PGresult *res =
        svc_pg_exec(conn,
                    "WITH s AS (SELECT s.schedule_id, s.number FROM seats s JOIN reservations r"
                    " ON r.id = s.hold_reservation_id WHERE s.status = $2"
                    " AND r.status IN ($4, $5) ORDER BY s.schedule_id, s.number LIMIT $1"
                    " FOR UPDATE OF s SKIP LOCKED)"
                    " UPDATE seats x SET status = $3, hold_reservation_id = NULL,"
                    " hold_user_id = NULL, hold_expires_at_ms = NULL FROM s"
                    " WHERE x.schedule_id = s.schedule_id AND x.number = s.number",
                    5, p, PGRES_COMMAND_OK, "free stale seats", err);

    PQclear(res);
    return res == NULL ? -1 : 0;
}

/* Ended admissions whose tokens all ran out (an admission lasts at most a day) are forgotten. */
static int
forget_ended_admissions_tx(PGconn *conn, void *arg, svc_err_t *err)
{
    const int64_t *now_ms = arg;
    char before[24];
    const char *p[] = {before};
    PGresult *res;

    I64(before, *now_ms - RSV_ADMISSION_TTL_MAX_MS - 60000);
    res = svc_pg_exec(conn, "DELETE FROM ended_admissions WHERE ended_at_ms < $1", 1, p,
                      PGRES_COMMAND_OK, "forget ended admissions", err);
    PQclear(res);
    return res == NULL ? -1 : 0;
}

int
rsv_store_sweep(svc_pg_pool_t *db, int64_t now_ms, int *n_expired, svc_err_t *err)
{
    int64_t arg[2] = {now_ms, 0};
    char lim[16];
    int rc = svc_pg_tx(db, now_ms + 5000, sweep_tx, arg, err);

    *n_expired = (int)arg[1];
    I64(lim, RSV_SWEEP_BATCH * RSV_MAX_SEATS);
    if (rc == 0) {
        rc = svc_pg_tx(db, now_ms + 5000, free_stale_seats_tx, lim, err);
    }
    if (rc == 0) {
        rc = svc_pg_tx(db, now_ms + 5000, forget_ended_admissions_tx, arg, err);
    }
    return rc;
}
