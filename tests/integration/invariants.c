/*
 * invariants.c: the data checks of the integration suite. Plain SQL and
 * Redis reads, no knowledge of how the services got there.
 */
#define _GNU_SOURCE
#include <inttypes.h>
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
        " WHEN 1 THEN l.amount ELSE -l.amount END), 0) FROM ledger l WHERE l.user_id = a.user_id)",
        "SELECT count(*) FROM (SELECT balance_after, kind, amount, lag(balance_after, 1, 0::bigint)"
        " OVER (PARTITION BY user_id ORDER BY id) AS before FROM ledger) l"
        " WHERE l.balance_after <> l.before + CASE l.kind WHEN 1 THEN l.amount ELSE -l.amount END",
    };
    static const char *const what[] = {
        "accounts whose balance is not their ledger's sum",
        "ledger rows whose balance_after does not follow from the row before",
    };

    return run_checks(conninfo, sql, what, 2, 0, NULL, report);
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
