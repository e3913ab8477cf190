/*
 * invariants.c: the data checks of the integration suite. Plain SQL and
 * Redis reads, no knowledge of how the services got there.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <libpq-fe.h>

#include "invariants.h"

/* Runs a count query; returns the count, or -1 (reported) when it fails. */
static int64_t
count(PGconn *conn, const char *sql, int n, const char *const *params, const char *what,
      FILE *report)
{
    PGresult *res = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
    int64_t c = -1;

    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        c = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    } else if (report != NULL) {
        fprintf(report, "cannot check %s: %s", what, PQerrorMessage(conn));
    }
    PQclear(res);
    if (c > 0 && report != NULL) {
        fprintf(report, "VIOLATION: %" PRId64 " %s\n", c, what);
    }
    return c;
}

/* Sums the checks, or -1 when one could not run. */
static int64_t
run_checks(const char *conninfo, const char *const *sql, const char *const *what, int n_checks,
           int n_params, const char *const *params, FILE *report)
{
    PGconn *conn = PQconnectdb(conninfo);
    int64_t total = 0;

    if (PQstatus(conn) != CONNECTION_OK) {
        if (report != NULL) {
            fprintf(report, "cannot connect: %s", PQerrorMessage(conn));
        }
        PQfinish(conn);
        return -1;
    }
    for (int i = 0; i < n_checks && total >= 0; i++) {
        int64_t c = count(conn, sql[i], n_params, params, what[i], report);
        total = c < 0 ? -1 : total + c;
    }
    PQfinish(conn);
    return total;
}

int64_t
inv_check_seats(const char *conninfo, int64_t now_ms, FILE *report)
{
    static const char *const sql[] = {
        /* live = confirmed, or held and not past its expiry (a held one being paid counts too) */
        "SELECT count(*) FROM (SELECT rs.schedule_id, rs.number FROM reservation_seats rs"
        " JOIN reservations r ON r.id = rs.reservation_id"
        " WHERE r.status = 2 OR (r.status = 1 AND (r.expires_at_ms > $1 OR EXISTS (SELECT 1"
        " FROM payments p WHERE p.reservation_id = r.id AND p.status = 1)))"
        " GROUP BY 1, 2 HAVING count(*) > 1) x",
        "SELECT count(*) FROM (SELECT rs.schedule_id, rs.number FROM reservation_seats rs"
        " JOIN reservations r ON r.id = rs.reservation_id WHERE r.status = 2"
        " AND $1::bigint IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1) x",
        "SELECT count(*) FROM seats s WHERE s.status = 3 AND NOT EXISTS (SELECT 1 FROM"
        " reservations r WHERE r.id = s.hold_reservation_id AND r.status = 2)"
        " AND $1::bigint IS NOT NULL",
        "SELECT count(*) FROM seats s WHERE s.status = 2 AND s.hold_expires_at_ms > $1 AND NOT"
        " EXISTS (SELECT 1 FROM reservation_seats rs JOIN reservations r ON r.id ="
        " rs.reservation_id WHERE rs.schedule_id = s.schedule_id AND rs.number = s.number AND"
        " rs.live AND r.id = s.hold_reservation_id AND r.status = 1)",
    };
    static const char *const what[] = {
        "seats in two live holds or sales",
        "seats sold twice",
        "sold seats without their confirmed reservation",
        "held seats without their live hold",
    };
    char now[24];
    const char *params[] = {now};

    snprintf(now, sizeof(now), "%" PRId64, now_ms);
    return run_checks(conninfo, sql, what, 4, 1, params, report);
}

int64_t
inv_check_ledger(const char *conninfo, FILE *report)
{
    static const char *const sql[] = {
        "SELECT count(*) FROM accounts a WHERE a.balance <> (SELECT coalesce(sum(CASE l.kind"
        " WHEN 2 THEN -l.amount ELSE l.amount END), 0) FROM ledger l WHERE l.user_id = a.user_id)",
        "SELECT count(*) FROM (SELECT balance_after, kind, amount, lag(balance_after, 1, 0::bigint)"
        " OVER (PARTITION BY user_id ORDER BY id) AS before FROM ledger) l"
        " WHERE l.balance_after <> l.before + CASE l.kind WHEN 2 THEN -l.amount ELSE l.amount END",
        "SELECT (SELECT count(*) FROM accounts WHERE balance < 0)"
        " + (SELECT count(*) FROM ledger WHERE balance_after < 0)",
    };
    static const char *const what[] = {
        "accounts whose balance is not their ledger's sum",
        "ledger rows whose balance_after does not follow from the row before",
        "negative balances (accounts or ledger rows)",
    };

    return run_checks(conninfo, sql, what, 3, 0, NULL, report);
}

/* Whether the query (one boolean) says yes: 1, 0, or -1 (reported) when it fails. */
static int
ask(PGconn *conn, const char *sql, FILE *report)
{
    PGresult *res = PQexec(conn, sql);
    int yes = -1;

    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        yes = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    } else if (report != NULL) {
        fprintf(report, "cannot ask %s: %s", sql, PQerrorMessage(conn));
    }
    PQclear(res);
    return yes;
}

static PGconn *
connect_or_report(const char *conninfo, FILE *report)
{
    PGconn *conn = PQconnectdb(conninfo);

    if (PQstatus(conn) != CONNECTION_OK) {
        if (report != NULL) {
            fprintf(report, "cannot connect: %s", PQerrorMessage(conn));
        }
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

int64_t
inv_check_authorizations(const char *conninfo, int64_t now_ms, FILE *report)
{
    PGconn *conn = connect_or_report(conninfo, report);
    char now[24];
    const char *params[] = {now};
    int64_t c;
    int have;

    if (conn == NULL) {
        return -1;
    }
    have = ask(conn, "SELECT to_regclass('authorizations') IS NOT NULL", report);
    if (have <= 0) {
        PQfinish(conn);
        return have; /* no table: nothing can stay authorized */
    }
    snprintf(now, sizeof(now), "%" PRId64, now_ms);
    c = count(conn, "SELECT count(*) FROM authorizations WHERE status = 1 AND expires_at_ms > $1",
              1, params, "authorizations still pending after settling", report);
    PQfinish(conn);
    return c;
}

/* ---------------------------------------------------- What reservations cost */

#define INV_REPORT_LINES 20 /* lines of detail per check; the rest only counted */

/* The net charge keyed to one reservation by one user: spends minus their refunds. */
typedef struct {
    int64_t reservation_id, user_id, net;
} charge_t;

typedef struct {
    charge_t *v;
    int n;
} charges_t;

/*
 * Reads every charge keyed reservation:<id> from the balance database, ordered
 * by reservation and user. Refunds count only where the ledger links them to
 * their spend (refund_of); a ledger without that column has no refunds.
 * Returns 0, or -1 (reported). Caller frees out->v.
 */
static int
load_charges(const char *conninfo, charges_t *out, FILE *report)
{
    static const char *const with_refunds =
        "SELECT substr(s.idempotency_key, 13)::bigint, s.user_id, sum(s.amount - coalesce((SELECT"
        " sum(r.amount) FROM ledger r WHERE r.kind = 3 AND r.refund_of = s.id), 0))::bigint"
        " FROM ledger s WHERE s.kind = 2 AND s.idempotency_key ~ '^reservation:[0-9]{1,18}$'"
        " GROUP BY 1, 2 ORDER BY 1, 2";
    static const char *const without_refunds =
        "SELECT substr(s.idempotency_key, 13)::bigint, s.user_id, sum(s.amount)::bigint"
        " FROM ledger s WHERE s.kind = 2 AND s.idempotency_key ~ '^reservation:[0-9]{1,18}$'"
        " GROUP BY 1, 2 ORDER BY 1, 2";
    PGconn *conn = connect_or_report(conninfo, report);
    PGresult *res;
    int refunds;

    memset(out, 0, sizeof(*out));
    if (conn == NULL) {
        return -1;
    }
    refunds = ask(conn,
                  "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema ="
                  " current_schema() AND table_name = 'ledger' AND column_name = 'refund_of')",
                  report);
    if (refunds < 0) {
        PQfinish(conn);
        return -1;
    }
    res = PQexec(conn, refunds ? with_refunds : without_refunds);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        if (report != NULL) {
            fprintf(report, "cannot read the charges: %s", PQerrorMessage(conn));
        }
        PQclear(res);
        PQfinish(conn);
        return -1;
    }
    out->n = PQntuples(res);
    out->v = calloc((size_t)out->n + 1, sizeof(*out->v));
    if (out->v == NULL) {
        abort();
    }
    for (int i = 0; i < out->n; i++) {
        out->v[i] = (charge_t){strtoll(PQgetvalue(res, i, 0), NULL, 10),
                               strtoll(PQgetvalue(res, i, 1), NULL, 10),
                               strtoll(PQgetvalue(res, i, 2), NULL, 10)};
    }
    PQclear(res);
    PQfinish(conn);
    return 0;
}

/* The first charge of reservation id (they are sorted), or NULL. */
static const charge_t *
first_charge(const charges_t *c, int64_t id)
{
    int lo = 0, hi = c->n;

    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (c->v[mid].reservation_id < id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo < c->n && c->v[lo].reservation_id == id ? &c->v[lo] : NULL;
}

/* What reservation id cost user; *others: how many other users paid for it. */
static int64_t
cost_of(const charges_t *c, int64_t id, int64_t user, int *others)
{
    const charge_t *ch = first_charge(c, id);
    int64_t net = 0;

    *others = 0;
    for (; ch != NULL && ch < c->v + c->n && ch->reservation_id == id; ch++) {
        if (ch->user_id == user) {
            net += ch->net;
        } else {
            (*others)++;
        }
    }
    return net;
}

static const char *
status_name(int status)
{
    static const char *const names[] = {"UNKNOWN", "HELD", "CONFIRMED", "CANCELLED", "EXPIRED"};

    return status >= 1 && status <= 4 ? names[status] : names[0];
}

/* Prints one violation line while fewer than INV_REPORT_LINES were printed; counts it. */
static void report_line(FILE *report, int64_t *found, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void
report_line(FILE *report, int64_t *found, const char *fmt, ...)
{
    va_list ap;

    if (report != NULL && *found < INV_REPORT_LINES) {
        fputs("VIOLATION: ", report);
        va_start(ap, fmt);
        vfprintf(report, fmt, ap);
        va_end(ap);
        fputc('\n', report);
    }
    (*found)++;
}

/* Each reservation: id, user, status, amount, and what of its seats it does not own. */
#define RESERVATIONS_SQL                                                                           \
    "SELECT r.id, r.user_id, r.status, r.amount, (SELECT string_agg(format('seat %s of schedule"   \
    " %s is %s by reservation %s of user %s (%s)', rs.number, rs.schedule_id, CASE s.status WHEN"  \
    " 1 THEN 'free' WHEN 2 THEN 'held' ELSE 'sold' END, coalesce(o.id::text, '-'),"                \
    " coalesce(o.user_id::text, '-'), CASE o.status WHEN 1 THEN 'HELD' WHEN 2 THEN 'CONFIRMED'"    \
    " WHEN 3 THEN 'CANCELLED' WHEN 4 THEN 'EXPIRED' ELSE '-' END), '; ' ORDER BY rs.number)"       \
    " FROM reservation_seats rs LEFT JOIN seats s ON s.schedule_id = rs.schedule_id AND"           \
    " s.number = rs.number LEFT JOIN reservations o ON o.id = s.hold_reservation_id"               \
    " WHERE rs.reservation_id = r.id AND (s.status IS DISTINCT FROM 3 OR"                          \
    " s.hold_reservation_id IS DISTINCT FROM r.id)) FROM reservations r"

int64_t
inv_check_charges(const char *reservation_conninfo, const char *balance_conninfo, FILE *report)
{
    PGconn *conn;
    PGresult *res;
    charges_t charges;
    int64_t found = 0;
    int matched = 0;

    if (load_charges(balance_conninfo, &charges, report) != 0) {
        return -1;
    }
    conn = connect_or_report(reservation_conninfo, report);
    res = conn != NULL ? PQexec(conn, RESERVATIONS_SQL " ORDER BY r.id") : NULL;
    if (conn == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        if (conn != NULL && report != NULL) {
            fprintf(report, "cannot read the reservations: %s", PQerrorMessage(conn));
        }
        PQclear(res);
        PQfinish(conn);
        free(charges.v);
        return -1;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        int64_t id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        int64_t user = strtoll(PQgetvalue(res, i, 1), NULL, 10);
        int status = atoi(PQgetvalue(res, i, 2));
        int64_t amount = strtoll(PQgetvalue(res, i, 3), NULL, 10);
        int64_t want = status == 2 ? amount : 0;
        int others;
        int64_t cost = cost_of(&charges, id, user, &others);

        for (const charge_t *ch = first_charge(&charges, id);
             ch != NULL && ch < charges.v + charges.n && ch->reservation_id == id; ch++) {
            matched++;
        }
        if (status == 2 && !PQgetisnull(res, i, 4)) {
            report_line(report, &found,
                        "reservation %" PRId64 " of user %" PRId64
                        " is CONFIRMED but does not own its seats: %s",
                        id, user, PQgetvalue(res, i, 4));
        }
        if (cost != want) {
            report_line(report, &found,
                        "reservation %" PRId64 " of user %" PRId64 " is %s (amount %" PRId64
                        ") but cost its user %" PRId64 ", want %" PRId64,
                        id, user, status_name(status), amount, cost, want);
        }
        if (others > 0) {
            report_line(report, &found,
                        "reservation %" PRId64 " of user %" PRId64 " was paid by %d other users",
                        id, user, others);
        }
    }
    if (matched < charges.n) {
        report_line(report, &found, "%d charges keyed to reservations that do not exist",
                    charges.n - matched);
    }
    PQclear(res);
    PQfinish(conn);
    free(charges.v);
    if (found > INV_REPORT_LINES && report != NULL) {
        fprintf(report, "VIOLATION: %" PRId64 " reservations whose cost or seats are wrong\n",
                found);
    }
    return found;
}

/* "{1,2,3}": seats as PostgreSQL prints an int[] (array_agg ... ::text). */
static void
seats_text(const inv_answer_t *a, char *buf, size_t len)
{
    size_t used = (size_t)snprintf(buf, len, "{");

    for (int i = 0; i < a->n_seats && used < len; i++) {
        used += (size_t)snprintf(buf + used, len - used, "%s%d", i ? "," : "", (int)a->seats[i]);
    }
    if (used < len) {
        snprintf(buf + used, len - used, "}");
    }
}

/* Checks one answered reservation against row (user, schedule, status, amount, seats). */
static void
check_answer(const inv_answer_t *a, const PGresult *res, const charges_t *charges, int64_t *found,
             FILE *report)
{
    char want_seats[INV_MAX_SEATS * 12 + 3];
    int64_t user, schedule, amount, cost;
    int status, others;

    if (PQntuples(res) != 1) {
        report_line(report, found, "reservation %" PRId64 " (HoldSeats answered OK) is missing",
                    a->id);
        return;
    }
    user = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    schedule = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    status = atoi(PQgetvalue(res, 0, 2));
    amount = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
    seats_text(a, want_seats, sizeof(want_seats));
    if (user != a->user_id || schedule != a->schedule_id ||
        strcmp(PQgetvalue(res, 0, 4), want_seats) != 0) {
        report_line(report, found,
                    "reservation %" PRId64 " is user %" PRId64 "'s seats %s of schedule %" PRId64
                    ", HoldSeats answered user %" PRId64 "'s seats %s of schedule %" PRId64,
                    a->id, user, PQgetvalue(res, 0, 4), schedule, a->user_id, want_seats,
                    a->schedule_id);
    }
    cost = cost_of(charges, a->id, a->user_id, &others);
    if (a->cancelled && (status != 3 || cost != 0)) {
        report_line(report, found,
                    "reservation %" PRId64 ": CancelReservation answered OK%s, but it is %s and"
                    " cost its user %" PRId64,
                    a->id, a->paid ? " (and PayReservation OK)" : "", status_name(status), cost);
    } else if (!a->cancelled && a->paid && (status != 2 || cost != amount) &&
               !(a->cancel_lost && status == 3 && cost == 0)) {
        report_line(report, found,
                    "reservation %" PRId64 ": PayReservation answered OK, but it is %s and cost"
                    " its user %" PRId64 " of %" PRId64,
                    a->id, status_name(status), cost, amount);
    }
}

int64_t
inv_check_answers(const char *reservation_conninfo, const char *balance_conninfo,
                  const inv_answer_t *answers, int n, FILE *report)
{
    PGconn *conn;
    charges_t charges;
    int64_t found = 0;

    if (load_charges(balance_conninfo, &charges, report) != 0) {
        return -1;
    }
    conn = connect_or_report(reservation_conninfo, report);
    for (int i = 0; conn != NULL && i < n; i++) {
        char id[24];
        const char *params[] = {id};
        snprintf(id, sizeof(id), "%" PRId64, answers[i].id);
        PGresult *res = PQexecParams(
            conn,
            "SELECT r.user_id, r.schedule_id, r.status, r.amount, coalesce((SELECT"
            " array_agg(rs.number ORDER BY rs.number)::text FROM reservation_seats rs WHERE"
            " rs.reservation_id = r.id), '{}') FROM reservations r WHERE r.id = $1",
            1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            if (report != NULL) {
                fprintf(report, "cannot read reservation %s: %s", id, PQerrorMessage(conn));
            }
            PQclear(res);
            found = -1;
            break;
        }
        check_answer(&answers[i], res, &charges, &found, report);
        PQclear(res);
    }
    if (conn == NULL) {
        found = -1;
    }
    PQfinish(conn);
    free(charges.v);
    if (found > INV_REPORT_LINES && report != NULL) {
        fprintf(report, "VIOLATION: %" PRId64 " answers that are not in the data\n", found);
    }
    return found;
}

int64_t
inv_check_acknowledged(const char *conninfo, const inv_ack_t *acks, int n, FILE *report)
{
    PGconn *conn = PQconnectdb(conninfo);
    int64_t missing = 0;

    if (PQstatus(conn) != CONNECTION_OK) {
        PQfinish(conn);
        return -1;
    }
    for (int i = 0; i < n && missing >= 0; i++) {
        char user[24], id[24];
        const char *params[] = {user, acks[i].key, id};
        snprintf(user, sizeof(user), "%" PRId64, acks[i].user_id);
        snprintf(id, sizeof(id), "%" PRId64, acks[i].transaction_id);
        int64_t c = count(conn,
                          "SELECT 1 - count(*) FROM ledger WHERE user_id = $1"
                          " AND idempotency_key = $2 AND id = $3",
                          3, params, "acknowledged operations missing from the ledger", NULL);
        missing = c < 0 ? -1 : missing + c;
    }
    PQfinish(conn);
    if (missing > 0 && report != NULL) {
        fprintf(report, "VIOLATION: %" PRId64 " acknowledged operations missing from the ledger\n",
                missing);
    }
    return missing;
}

/* Runs sql ($1 = a bigint[] of ids) once and reports what it counts under what. */
static int64_t
check_ids(const char *conninfo, const char *sql, const int64_t *ids, int n, const char *what,
          FILE *report)
{
    size_t cap = 3 + (size_t)n * 22;
    char *list = malloc(cap);
    int64_t c;
    size_t used = 0;

    if (list == NULL) {
        return -1;
    }
    list[used++] = '{';
    for (int i = 0; i < n; i++) {
        used += (size_t)snprintf(list + used, cap - used, "%s%" PRId64, i ? "," : "", ids[i]);
    }
    snprintf(list + used, cap - used, "}");
    const char *params[] = {list};
    c = run_checks(conninfo, &sql, &what, 1, 1, params, report);
    free(list);
    return c;
}

int64_t
inv_check_reservations(const char *conninfo, const int64_t *held, int n_held, const int64_t *paid,
                       int n_paid, FILE *report)
{
    int64_t a = check_ids(conninfo,
                          "SELECT count(*) FROM unnest($1::bigint[]) i(id) WHERE NOT EXISTS"
                          " (SELECT 1 FROM reservations r JOIN reservation_seats rs ON"
                          " rs.reservation_id = r.id WHERE r.id = i.id)",
                          held, n_held, "acknowledged holds missing", report);
    int64_t b = check_ids(
        conninfo,
        "SELECT count(*) FROM unnest($1::bigint[]) i(id) WHERE NOT EXISTS (SELECT 1 FROM"
        " reservations r JOIN payments p ON p.reservation_id = r.id WHERE r.id = i.id AND"
        " r.status = 2 AND p.status = 2) OR EXISTS (SELECT 1 FROM reservation_seats rs"
        " LEFT JOIN seats s ON s.schedule_id = rs.schedule_id AND s.number = rs.number"
        " WHERE rs.reservation_id = i.id AND (s.status <> 3 OR s.hold_reservation_id <> i.id))",
        paid, n_paid, "acknowledged payments not confirmed with their seats sold", report);

    return a < 0 || b < 0 ? -1 : a + b;
}

int64_t
inv_check_charged_once(const char *conninfo, const int64_t *paid, int n_paid, FILE *report)
{
    return check_ids(conninfo,
                     "SELECT count(*) FROM unnest($1::bigint[]) i(id) WHERE (SELECT count(*)"
                     " FROM ledger l WHERE l.kind = 2 AND l.idempotency_key = 'reservation:' ||"
                     " i.id) <> 1",
                     paid, n_paid, "paid reservations not charged exactly once", report);
}

int64_t
inv_check_locks(const char *host, int port, FILE *report)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    int64_t forever = 0;
    char cursor[32] = "0";

    if (c == NULL || c->err != 0) {
        redisFree(c);
        return -1;
    }
    do { /* SCAN the lock keys (not their :fence and :waiters companions) */
        redisReply *r = redisCommand(c, "SCAN %s MATCH lock:{*} COUNT 1000", cursor);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            freeReplyObject(r);
            redisFree(c);
            return -1;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            const char *key = r->element[1]->element[i]->str;
            size_t len = strlen(key);
            if (len == 0 || key[len - 1] != '}') {
                continue;
            }
            redisReply *ttl = redisCommand(c, "PTTL %s", key);
            forever += ttl != NULL && ttl->type == REDIS_REPLY_INTEGER && ttl->integer == -1;
            freeReplyObject(ttl);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    redisFree(c);
    if (forever > 0 && report != NULL) {
        fprintf(report, "VIOLATION: %" PRId64 " locks held without a lease\n", forever);
    }
    return forever;
}
