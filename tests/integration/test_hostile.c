/*
 * test_hostile.c: a table of hostile requests against every RPC of the three
 * services, running as real processes (PostgreSQL, Redis, lock-svc,
 * balance-svc, reservation-svc). Each request is written byte by byte (so
 * it can hold what no well-behaved client sends: invalid UTF-8, NULs inside
 * strings, int64 extremes, wrong wire types, unknown fields, 20 000 seat
 * numbers, 5 000 schedules, a schedule in 1970, keys over the 1 MiB
 * receive cap, forged page tokens, tickets and admission tokens, plain
 * garbage) and sent on the method's path; each row names the one status
 * it must get, which is never UNKNOWN, INTERNAL or UNAVAILABLE. After the
 * table every service still reports SERVING and serves a normal request.
 * argv: reservation-svc, balance-svc, lock-svc.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "balance/v1/balance.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "lock/v1/lock.pb-c.h"
#include "rsv_fixture.h"
#include "svc/client.h"
#include "svc/timer.h"

#define CALL_TIMEOUT_MS 20000
#define MIB (1024 * 1024)

/* Values a row's integer field is given at run time (ids the setup made). */
#define PH_PLAIN_SCHEDULE 0x7e00000000000001LL /* a schedule without a waiting room */
#define PH_ROOM_SCHEDULE 0x7e00000000000002LL  /* a schedule with one */
#define PH_USER 0x7e00000000000003LL           /* a user with an account */

enum { LOCK, BALANCE, RSV };

/* One field of a request on the wire. */
typedef struct {
    int num;
    char kind; /* 'i' varint, 's' length-delimited, 'f' fixed64, 'x' fixed32 */
    int64_t i;
    const char *s;
    size_t len;
} fld_t;

#define I(n, v)                                                                                    \
    {                                                                                              \
        (n), 'i', (int64_t)(v), NULL, 0                                                            \
    }
#define S(n, str)                                                                                  \
    {                                                                                              \
        (n), 's', 0, (str), sizeof(str) - 1                                                        \
    }
#define F64(n, v)                                                                                  \
    {                                                                                              \
        (n), 'f', (int64_t)(v), NULL, 0                                                            \
    }
#define F32(n, v)                                                                                  \
    {                                                                                              \
        (n), 'x', (int64_t)(v), NULL, 0                                                            \
    }

/* Requests too big or too odd for a list of fields. */
typedef enum {
    PLAIN,
    KEY_2MIB,        /* field 1 (a string) of 2 MiB: over the receive cap */
    KEY_900KIB,      /* field 1 of 900 KiB: under the cap, over every limit */
    STR3_2MIB,       /* field 3 (a string) of 2 MiB */
    GARBAGE,         /* bytes that are no protobuf at all */
    HTTP_TEXT,       /* an HTTP request line as the message */
    SEATS_20000,     /* HoldSeats with 20 000 seat numbers */
    SCHEDULES_5000,  /* CreateConcert with 5 000 schedules */
    SCHEDULE_1970,   /* CreateConcert with one schedule at 1 ms after the epoch */
    SCHEDULE_NEG,    /* ... at INT64_MIN */
    SCHEDULE_SEATS0, /* ... of 0 seats */
    SCHEDULE_GOOD,   /* a valid one (for the admin-token rows) */
} special_t;

typedef struct {
    const char *name;
    int service;
    const char *method;
    fld_t f[6];
    special_t special;
    const char *auth; /* authorization header, or NULL */
    svc_status_t want;
} row_t;

#define ADMIN FIXTURE_ADMIN_AUTH
#define BAD_UTF8 "\xff\xfe\xc0\xaf"
#define HEX32 "0123456789abcdef0123456789abcdef"
#define KEY201                                                                                     \
    "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk" \
    "kk"                                                                                           \
    "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk" \
    "kk"                                                                                           \
    "kkkkkkkkkkkkk"

static const row_t rows[] = {
    /* ---------- lock.v1 ---------- */
    {"Acquire: empty request", LOCK, "Acquire", {{0}}, PLAIN, NULL, SVC_INVALID_ARGUMENT},
    {"Acquire: key of invalid UTF-8",
     LOCK,
     "Acquire",
     {S(1, BAD_UTF8)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"Acquire: NUL inside the key",
     LOCK,
     "Acquire",
     {S(1, "seat\0:1")},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"Acquire: key of 201 bytes",
     LOCK,
     "Acquire",
     {S(1, KEY201)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"Acquire: key of 900 KiB", LOCK, "Acquire", {{0}}, KEY_900KIB, NULL, SVC_INVALID_ARGUMENT},
    {"Acquire: key of 2 MiB", LOCK, "Acquire", {{0}}, KEY_2MIB, NULL, SVC_RESOURCE_EXHAUSTED},
    {"Acquire: lease_ms INT64_MAX",
     LOCK,
     "Acquire",
     {S(1, "k"), I(3, INT64_MAX)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"Acquire: lease_ms INT64_MIN",
     LOCK,
     "Acquire",
     {S(1, "k"), I(3, INT64_MIN)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"Acquire: wait_ms -1",
     LOCK,
     "Acquire",
     {S(1, "k"), I(4, -1)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"Acquire: owner of invalid UTF-8",
     LOCK,
     "Acquire",
     {S(1, "k"), S(2, BAD_UTF8)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"Acquire: key as fixed64 (wrong type)",
     LOCK,
     "Acquire",
     {F64(1, 42)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"Acquire: garbage bytes", LOCK, "Acquire", {{0}}, GARBAGE, NULL, SVC_INVALID_ARGUMENT},
    {"Release: no token", LOCK, "Release", {S(1, "hostile:1")}, PLAIN, NULL, SVC_INVALID_ARGUMENT},
    {"Release: token of 65 bytes",
     LOCK,
     "Release",
     {S(1, "hostile:1"), S(2, HEX32 HEX32 "0")},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"Release: forged token, no lock",
     LOCK,
     "Release",
     {S(1, "hostile:1"), S(2, HEX32)},
     PLAIN,
     NULL,
     SVC_NOT_FOUND},
    {"Release: HTTP text", LOCK, "Release", {{0}}, HTTP_TEXT, NULL, SVC_INVALID_ARGUMENT},
    {"Extend: lease_ms -5",
     LOCK,
     "Extend",
     {S(1, "hostile:1"), S(2, HEX32), I(3, -5)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"Extend: forged token, no lock",
     LOCK,
     "Extend",
     {S(1, "hostile:1"), S(2, HEX32)},
     PLAIN,
     NULL,
     SVC_NOT_FOUND},
    {"GetLock: key with a space",
     LOCK,
     "GetLock",
     {S(1, "seat 1")},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"GetLock: unknown fields are ignored",
     LOCK,
     "GetLock",
     {S(1, "hostile:free"), I(99, 7), S(100, "x"), F32(101, 1)},
     PLAIN,
     NULL,
     SVC_OK},
    {"EnterSemaphore: limit 0",
     LOCK,
     "EnterSemaphore",
     {S(1, "room:h"), S(2, "u"), I(3, 0)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"EnterSemaphore: limit INT32_MIN",
     LOCK,
     "EnterSemaphore",
     {S(1, "room:h"), S(2, "u"), I(3, INT32_MIN)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"EnterSemaphore: ticket_ttl_ms INT64_MAX",
     LOCK,
     "EnterSemaphore",
     {S(1, "room:h"), S(2, "u"), I(3, 1), I(5, INT64_MAX)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"LeaveSemaphore: ticket of invalid UTF-8",
     LOCK,
     "LeaveSemaphore",
     {S(1, "room:h"), S(2, BAD_UTF8)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"LeaveSemaphore: forged ticket",
     LOCK,
     "LeaveSemaphore",
     {S(1, "room:h"), S(2, HEX32)},
     PLAIN,
     NULL,
     SVC_NOT_FOUND},
    {"ExtendSemaphore: lease_ms INT64_MIN",
     LOCK,
     "ExtendSemaphore",
     {S(1, "room:h"), S(2, HEX32), I(3, INT64_MIN)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"GetSemaphore: no name", LOCK, "GetSemaphore", {{0}}, PLAIN, NULL, SVC_INVALID_ARGUMENT},
    {"GetSemaphore: NUL inside the ticket",
     LOCK,
     "GetSemaphore",
     {S(1, "room:h"), S(2, "a\0b")},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"WatchSemaphore: after_version 1--2",
     LOCK,
     "WatchSemaphore",
     {S(1, "room:h"), S(2, "1--2")},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"WatchSemaphore: after_version \" 1-2\"",
     LOCK,
     "WatchSemaphore",
     {S(1, "room:h"), S(2, " 1-2")},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"WatchSemaphore: after_version past 64 bits",
     LOCK,
     "WatchSemaphore",
     {S(1, "room:h"), S(2, "99999999999999999999-1")},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"WatchSemaphore: garbage bytes",
     LOCK,
     "WatchSemaphore",
     {{0}},
     GARBAGE,
     NULL,
     SVC_INVALID_ARGUMENT},

    /* ---------- balance.v1 ---------- */
    {"GetBalance: user_id 0", BALANCE, "GetBalance", {I(1, 0)}, PLAIN, NULL, SVC_INVALID_ARGUMENT},
    {"GetBalance: user_id INT64_MIN",
     BALANCE,
     "GetBalance",
     {I(1, INT64_MIN)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"GetBalance: user_id INT64_MAX (no account)",
     BALANCE,
     "GetBalance",
     {I(1, INT64_MAX)},
     PLAIN,
     NULL,
     SVC_NOT_FOUND},
    {"GetBalance: user_id as a string (wrong type)",
     BALANCE,
     "GetBalance",
     {S(1, "7")},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"TopUp: amount INT64_MAX",
     BALANCE,
     "TopUp",
     {I(1, 7), I(2, INT64_MAX), S(3, "k")},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"TopUp: amount -1",
     BALANCE,
     "TopUp",
     {I(1, 7), I(2, -1), S(3, "k")},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"TopUp: key of invalid UTF-8",
     BALANCE,
     "TopUp",
     {I(1, 7), I(2, 5), S(3, BAD_UTF8)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"TopUp: NUL inside the key",
     BALANCE,
     "TopUp",
     {I(1, 7), I(2, 5), S(3, "k\0other")},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"TopUp: key of 2 MiB",
     BALANCE,
     "TopUp",
     {I(1, 7), I(2, 5)},
     STR3_2MIB,
     NULL,
     SVC_RESOURCE_EXHAUSTED},
    {"Spend: reference of invalid UTF-8",
     BALANCE,
     "Spend",
     {I(1, 7), I(2, 5), S(3, "k"), S(4, BAD_UTF8)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"Spend: garbage bytes", BALANCE, "Spend", {{0}}, GARBAGE, NULL, SVC_INVALID_ARGUMENT},
    {"ListTransactions: forged page token \"abc\"",
     BALANCE,
     "ListTransactions",
     {I(1, 7), S(3, "abc")},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"ListTransactions: page token -1",
     BALANCE,
     "ListTransactions",
     {I(1, 7), S(3, "-1")},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"ListTransactions: page token past int64",
     BALANCE,
     "ListTransactions",
     {I(1, 7), S(3, "99999999999999999999")},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"ListTransactions: page token \" 12\"",
     BALANCE,
     "ListTransactions",
     {I(1, 7), S(3, " 12")},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"ListTransactions: page token \"12\\0\"",
     BALANCE,
     "ListTransactions",
     {I(1, 7), S(3, "12\0")},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"ListTransactions: page_size 501",
     BALANCE,
     "ListTransactions",
     {I(1, 7), I(2, 501)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"ListTransactions: page_size -1",
     BALANCE,
     "ListTransactions",
     {I(1, 7), I(2, -1)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"Authorize: expires_in_ms INT64_MAX",
     BALANCE,
     "Authorize",
     {I(1, 7), I(2, 5), S(3, "k"), I(5, INT64_MAX)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"Authorize: amount INT64_MIN",
     BALANCE,
     "Authorize",
     {I(1, 7), I(2, INT64_MIN), S(3, "k")},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"Capture: authorization_id 0",
     BALANCE,
     "Capture",
     {I(1, 0)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"Capture: authorization_id INT64_MAX (unknown)",
     BALANCE,
     "Capture",
     {I(1, INT64_MAX)},
     PLAIN,
     NULL,
     SVC_NOT_FOUND},
    {"Void: authorization_id -1", BALANCE, "Void", {I(1, -1)}, PLAIN, NULL, SVC_INVALID_ARGUMENT},
    {"Void: authorization_id INT64_MAX (unknown)",
     BALANCE,
     "Void",
     {I(1, INT64_MAX)},
     PLAIN,
     NULL,
     SVC_NOT_FOUND},
    {"Refund: transaction_id 0",
     BALANCE,
     "Refund",
     {I(1, 7), I(2, 0), I(3, 5), S(4, "k")},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"Refund: HTTP text", BALANCE, "Refund", {{0}}, HTTP_TEXT, NULL, SVC_INVALID_ARGUMENT},

    /* ---------- reservation.v1 ---------- */
    {"CreateConcert: no admin token",
     RSV,
     "CreateConcert",
     {S(1, "Show")},
     SCHEDULE_GOOD,
     NULL,
     SVC_PERMISSION_DENIED},
    {"CreateConcert: wrong admin token",
     RSV,
     "CreateConcert",
     {S(1, "Show")},
     SCHEDULE_GOOD,
     "Bearer " FIXTURE_ADMIN_TOKEN "x",
     SVC_PERMISSION_DENIED},
    {"CreateConcert: a schedule in 1970",
     RSV,
     "CreateConcert",
     {S(1, "Show")},
     SCHEDULE_1970,
     ADMIN,
     SVC_INVALID_ARGUMENT},
    {"CreateConcert: a schedule at INT64_MIN",
     RSV,
     "CreateConcert",
     {S(1, "Show")},
     SCHEDULE_NEG,
     ADMIN,
     SVC_INVALID_ARGUMENT},
    {"CreateConcert: a schedule of 0 seats",
     RSV,
     "CreateConcert",
     {S(1, "Show")},
     SCHEDULE_SEATS0,
     ADMIN,
     SVC_INVALID_ARGUMENT},
    {"CreateConcert: 5 000 schedules",
     RSV,
     "CreateConcert",
     {S(1, "Show")},
     SCHEDULES_5000,
     ADMIN,
     SVC_INVALID_ARGUMENT},
    {"CreateConcert: title of invalid UTF-8",
     RSV,
     "CreateConcert",
     {S(1, BAD_UTF8)},
     SCHEDULE_GOOD,
     ADMIN,
     SVC_INVALID_ARGUMENT},
    {"CreateConcert: NUL inside the title",
     RSV,
     "CreateConcert",
     {S(1, "Show\0junk")},
     SCHEDULE_GOOD,
     ADMIN,
     SVC_INVALID_ARGUMENT},
    {"CreateConcert: title of 2 MiB",
     RSV,
     "CreateConcert",
     {{0}},
     KEY_2MIB,
     ADMIN,
     SVC_RESOURCE_EXHAUSTED},
    {"CreateConcert: empty request",
     RSV,
     "CreateConcert",
     {{0}},
     PLAIN,
     ADMIN,
     SVC_INVALID_ARGUMENT},
    {"ListConcerts: garbage bytes",
     RSV,
     "ListConcerts",
     {{0}},
     GARBAGE,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"ListConcerts: unknown fields are ignored",
     RSV,
     "ListConcerts",
     {I(7, -1), S(8, BAD_UTF8)},
     PLAIN,
     NULL,
     SVC_OK},
    {"ListSeats: schedule_id 0", RSV, "ListSeats", {I(1, 0)}, PLAIN, NULL, SVC_INVALID_ARGUMENT},
    {"ListSeats: schedule_id INT64_MAX (unknown)",
     RSV,
     "ListSeats",
     {I(1, INT64_MAX)},
     PLAIN,
     NULL,
     SVC_NOT_FOUND},
    {"HoldSeats: 20 000 seat numbers",
     RSV,
     "HoldSeats",
     {I(1, PH_USER), I(2, PH_PLAIN_SCHEDULE)},
     SEATS_20000,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"HoldSeats: seat 0",
     RSV,
     "HoldSeats",
     {I(1, PH_USER), I(2, PH_PLAIN_SCHEDULE), I(3, 0)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"HoldSeats: seat INT32_MIN",
     RSV,
     "HoldSeats",
     {I(1, PH_USER), I(2, PH_PLAIN_SCHEDULE), I(3, INT32_MIN)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"HoldSeats: a seat listed twice",
     RSV,
     "HoldSeats",
     {I(1, PH_USER), I(2, PH_PLAIN_SCHEDULE), I(3, 2), I(3, 2)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"HoldSeats: user_id INT64_MIN",
     RSV,
     "HoldSeats",
     {I(1, INT64_MIN), I(2, PH_PLAIN_SCHEDULE), I(3, 1)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"HoldSeats: unknown schedule",
     RSV,
     "HoldSeats",
     {I(1, PH_USER), I(2, INT64_MAX), I(3, 1)},
     PLAIN,
     NULL,
     SVC_NOT_FOUND},
    {"HoldSeats: forged admission token",
     RSV,
     "HoldSeats",
     {I(1, PH_USER), I(2, PH_ROOM_SCHEDULE), I(3, 1),
      S(4, "v1.1.1." HEX32 ".99999999999999." HEX32 HEX32)},
     PLAIN,
     NULL,
     SVC_FAILED_PRECONDITION},
    {"HoldSeats: no admission token",
     RSV,
     "HoldSeats",
     {I(1, PH_USER), I(2, PH_ROOM_SCHEDULE), I(3, 1)},
     PLAIN,
     NULL,
     SVC_FAILED_PRECONDITION},
    {"PayReservation: reservation_id INT64_MAX (unknown)",
     RSV,
     "PayReservation",
     {I(1, INT64_MAX), I(2, 1)},
     PLAIN,
     NULL,
     SVC_NOT_FOUND},
    {"PayReservation: idempotency key of invalid UTF-8",
     RSV,
     "PayReservation",
     {I(1, 1), I(2, 1), S(3, BAD_UTF8)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"PayReservation: negative ids",
     RSV,
     "PayReservation",
     {I(1, -1), I(2, -1)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"CancelReservation: reservation_id INT64_MIN",
     RSV,
     "CancelReservation",
     {I(1, INT64_MIN), I(2, 1)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"CancelReservation: reservation_id INT64_MAX (unknown)",
     RSV,
     "CancelReservation",
     {I(1, INT64_MAX), I(2, 1)},
     PLAIN,
     NULL,
     SVC_NOT_FOUND},
    {"GetReservation: reservation_id 0",
     RSV,
     "GetReservation",
     {I(1, 0)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"GetReservation: reservation_id INT64_MAX (unknown)",
     RSV,
     "GetReservation",
     {I(1, INT64_MAX)},
     PLAIN,
     NULL,
     SVC_NOT_FOUND},
    {"GetReservation: id as fixed32 (wrong type)",
     RSV,
     "GetReservation",
     {F32(1, 1)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"EnterWaitingRoom: user_id -1",
     RSV,
     "EnterWaitingRoom",
     {I(1, -1), I(2, PH_ROOM_SCHEDULE)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"EnterWaitingRoom: unknown schedule",
     RSV,
     "EnterWaitingRoom",
     {I(1, PH_USER), I(2, INT64_MAX)},
     PLAIN,
     NULL,
     SVC_NOT_FOUND},
    {"EnterWaitingRoom: schedule without a room",
     RSV,
     "EnterWaitingRoom",
     {I(1, PH_USER), I(2, PH_PLAIN_SCHEDULE)},
     PLAIN,
     NULL,
     SVC_FAILED_PRECONDITION},
    {"WatchWaitingRoom: forged ticket",
     RSV,
     "WatchWaitingRoom",
     {S(1, "1.1.0." HEX32 ".0123456789abcdef0123456789abcdef")},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"WatchWaitingRoom: empty request",
     RSV,
     "WatchWaitingRoom",
     {{0}},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"LeaveWaitingRoom: ticket of invalid UTF-8",
     RSV,
     "LeaveWaitingRoom",
     {S(1, BAD_UTF8)},
     PLAIN,
     NULL,
     SVC_INVALID_ARGUMENT},
    {"LeaveWaitingRoom: ticket of 2 MiB",
     RSV,
     "LeaveWaitingRoom",
     {{0}},
     KEY_2MIB,
     NULL,
     SVC_RESOURCE_EXHAUSTED},
};

static rsv_instance_t rsv;
static svc_client_t *lock_client;
static int64_t plain_schedule, room_schedule, user;

/* ---------- writing requests ---------- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} wbuf_t;

static void
w_raw(wbuf_t *w, const void *data, size_t len)
{
    if (w->n + len > w->cap) {
        w->cap = (w->n + len) * 2 + 64;
        w->p = realloc(w->p, w->cap);
        assert_non_null(w->p);
    }
    if (len > 0) {
        memcpy(w->p + w->n, data, len);
    }
    w->n += len;
}

static void
w_varint(wbuf_t *w, uint64_t v)
{
    uint8_t b[10];
    size_t n = 0;

    do {
        b[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v != 0);
    w_raw(w, b, n);
}

static void
w_key(wbuf_t *w, int num, int wire_type)
{
    w_varint(w, (uint64_t)num << 3 | (uint64_t)wire_type);
}

static void
w_int(wbuf_t *w, int num, int64_t v)
{
    w_key(w, num, 0);
    w_varint(w, (uint64_t)v);
}

static void
w_bytes(wbuf_t *w, int num, const void *data, size_t len)
{
    w_key(w, num, 2);
    w_varint(w, len);
    w_raw(w, data, len);
}

/* A placeholder's value: an id the setup made. */
static int64_t
resolve(int64_t v)
{
    return v == PH_PLAIN_SCHEDULE  ? plain_schedule
           : v == PH_ROOM_SCHEDULE ? room_schedule
           : v == PH_USER          ? user
                                   : v;
}

/* A ScheduleSpec (starts_at_ms, seat_count 10, price 100) as field 2 of CreateConcert. */
static void
w_schedule(wbuf_t *w, int64_t starts_at_ms, int32_t seats)
{
    wbuf_t s = {0};

    w_int(&s, 1, starts_at_ms);
    w_int(&s, 2, seats);
    w_int(&s, 3, 100);
    w_bytes(w, 2, s.p, s.n);
    free(s.p);
}

static void
build(const row_t *r, wbuf_t *w)
{
    int64_t tomorrow = svc_now_unix_ms() + FIXTURE_DAY_MS;
    char *big;

    for (int i = 0; i < 6 && r->f[i].kind != 0; i++) {
        const fld_t *f = &r->f[i];
        uint64_t v = (uint64_t)resolve(f->i);
        switch (f->kind) {
        case 'i':
            w_int(w, f->num, (int64_t)v);
            break;
        case 's':
            w_bytes(w, f->num, f->s, f->len);
            break;
        case 'f':
            w_key(w, f->num, 1);
            w_raw(w, &v, 8);
            break;
        case 'x':
            w_key(w, f->num, 5);
            w_raw(w, &v, 4);
            break;
        }
    }
    switch (r->special) {
    case PLAIN:
        break;
    case KEY_2MIB:
    case KEY_900KIB:
    case STR3_2MIB: {
        size_t n = r->special == KEY_900KIB ? 900 * 1024 : 2 * MIB;
        big = malloc(n);
        assert_non_null(big);
        memset(big, 'k', n);
        w_bytes(w, r->special == STR3_2MIB ? 3 : 1, big, n);
        free(big);
        break;
    }
    case GARBAGE:
        w_raw(w, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x07\x00garbage", 20);
        break;
    case HTTP_TEXT:
        w_raw(w, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27);
        break;
    case SEATS_20000:
        for (int i = 1; i <= 20000; i++) {
            w_int(w, 3, i);
        }
        break;
    case SCHEDULES_5000:
        for (int i = 0; i < 5000; i++) {
            w_schedule(w, tomorrow + i, 10);
        }
        break;
    case SCHEDULE_1970:
        w_schedule(w, 1, 10);
        break;
    case SCHEDULE_NEG:
        w_schedule(w, INT64_MIN, 10);
        break;
    case SCHEDULE_SEATS0:
        w_schedule(w, tomorrow, 0);
        break;
    case SCHEDULE_GOOD:
        w_schedule(w, tomorrow, 10);
        break;
    }
}

/* ---------- sending ---------- */

static const ProtobufCServiceDescriptor *
service_of(int service)
{
    return service == LOCK      ? &lock__v1__lock_service__descriptor
           : service == BALANCE ? &balance__v1__balance_service__descriptor
                                : &reservation__v1__reservation_service__descriptor;
}

static svc_client_t *
client_of(int service)
{
    return service == LOCK      ? lock_client
           : service == BALANCE ? rsv_stack.balance_client
                                : rsv.client;
}

/* Sends the bytes on the row's method path; the status it got. */
static svc_status_t
send_row(const row_t *r, svc_arena_t *arena, svc_err_t *err)
{
    const ProtobufCServiceDescriptor *sd = service_of(r->service);
    const ProtobufCMethodDescriptor *m =
        protobuf_c_service_descriptor_get_method_by_name(sd, r->method);
    const char *md[2] = {"authorization", r->auth};
    svc_call_opts_t opts = {.timeout_ms = CALL_TIMEOUT_MS};
    ProtobufCMessage *resp;
    wbuf_t w = {0};
    char path[128];
    int rc;

    assert_non_null(m);
    if (r->auth != NULL) {
        opts.metadata = md;
        opts.n_metadata = 1;
    }
    build(r, &w);
    snprintf(path, sizeof(path), "/%s/%s", sd->name, r->method);
    memset(err, 0, sizeof(*err));
    rc = svc_client_unary_bytes(client_of(r->service), path, w.p != NULL ? w.p : (void *)"", w.n,
                                m->output, arena, &resp, &opts, err);
    free(w.p);
    return rc == 0 ? SVC_OK : err->code;
}

/* ---------- the stack ---------- */

static int
setup(void **state)
{
    static const char *const env[] = {"HOLD_TTL_MS=60000", NULL};
    svc_arena_t *arena;
    svc_err_t err;
    Reservation__V1__Concert *concert;
    Reservation__V1__ScheduleSpec **specs;

    (void)state;
    if (rsv_fixture_start() != 0 || rsv_fixture_start_instance(&rsv, "hostile", env) != 0 ||
        (lock_client = svc_client_get(rsv_stack.lock.addr, &err)) == NULL ||
        (arena = svc_arena_create()) == NULL) {
        return -1;
    }
    plain_schedule = rsv_new_schedule(&rsv, arena, 20, 100);
    specs = rsv_specs(arena, 1, svc_now_unix_ms() + FIXTURE_DAY_MS, 20, 100);
    specs[0]->waiting_room_limit = 1;
    if (rsv_create_concert(&rsv, arena, "Hostile room", specs, 1, FIXTURE_ADMIN_AUTH, &concert,
                           &err) != 0) {
        fprintf(stderr, "test_hostile: CreateConcert: %s\n", err.msg);
        svc_arena_destroy(arena);
        return -1;
    }
    room_schedule = concert->schedules[0]->id;
    user = rsv_funded_user(10000);
    svc_arena_destroy(arena);
    return 0;
}

static int
teardown(void **state)
{
    rsv_instance_t *all[] = {&rsv};

    (void)state;
    return rsv_fixture_stop(all, 1);
}

/* ---------- the tests ---------- */

/* Every row gets exactly its status; none gets UNKNOWN, INTERNAL or UNAVAILABLE. */
static void
test_hostile_table(void **state)
{
    svc_arena_t *arena = *state;
    int bad = 0;

    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        svc_err_t err;
        svc_status_t got = send_row(&rows[i], arena, &err);
        bool ok = got == rows[i].want;
        printf("%-4s %-58s %-20s %s\n", ok ? "ok" : "BAD", rows[i].name, svc_status_name(got),
               got != SVC_OK ? err.msg : "");
        if (!ok) {
            fprintf(stderr, "row %zu \"%s\": want %s, got %s (%s)\n", i, rows[i].name,
                    svc_status_name(rows[i].want), svc_status_name(got), err.msg);
            bad++;
        }
        assert_true(got != SVC_UNKNOWN && got != SVC_INTERNAL && got != SVC_UNAVAILABLE);
        svc_arena_reset(arena);
    }
    printf("hostile table: %zu rows, %d unexpected\n", sizeof(rows) / sizeof(rows[0]), bad);
    assert_int_equal(bad, 0);
}

static void
expect_serving(svc_client_t *client, const char *what, svc_arena_t *arena)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    ProtobufCMessage *out;
    svc_err_t err;

    req.service = "";
    expect_ok(what,
              svc_client_unary(client, "/grpc.health.v1.Health/Check", &req.base,
                               &grpc__health__v1__health_check_response__descriptor, arena, &out,
                               NULL, &err),
              &err);
    assert_int_equal(((Grpc__Health__V1__HealthCheckResponse *)out)->status,
                     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
}

/* After the table: SERVING, and a normal request of each service is served. */
static void
test_all_serve_afterwards(void **state)
{
    svc_arena_t *arena = *state;
    Lock__V1__AcquireRequest acq = LOCK__V1__ACQUIRE_REQUEST__INIT;
    Lock__V1__ReleaseRequest rel = LOCK__V1__RELEASE_REQUEST__INIT;
    Lock__V1__AcquireResponse *lock;
    int64_t balance, available;
    int32_t seats[] = {3, 4};
    reservation_t *res, *got;
    ProtobufCMessage *out;
    svc_err_t err;

    expect_serving(lock_client, "lock-svc health", arena);
    expect_serving(rsv_stack.balance_client, "balance-svc health", arena);
    expect_serving(rsv.client, "reservation-svc health", arena);

    acq.key = "hostile:after";
    acq.owner = "test";
    expect_ok("Acquire",
              svc_client_unary(lock_client, "/lock.v1.LockService/Acquire", &acq.base,
                               &lock__v1__acquire_response__descriptor, arena, &out, NULL, &err),
              &err);
    lock = (Lock__V1__AcquireResponse *)out;
    assert_true(lock->fence > 0 && strlen(lock->token) > 0);
    rel.key = "hostile:after";
    rel.token = lock->token;
    expect_ok("Release",
              svc_client_unary(lock_client, "/lock.v1.LockService/Release", &rel.base,
                               &lock__v1__release_response__descriptor, arena, &out, NULL, &err),
              &err);

    expect_ok("GetBalance", rsv_balance_get(user, &balance, &available, &err), &err);
    assert_int_equal(balance, 10000);
    assert_int_equal(available, 10000);

    expect_ok("HoldSeats", rsv_hold(&rsv, arena, user, plain_schedule, seats, 2, &res, &err), &err);
    assert_int_equal(res->status, RES_HELD);
    expect_ok("GetReservation", rsv_get(&rsv, arena, res->id, &got, &err), &err);
    expect_seat_numbers(got, seats, 2);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        RSV_ARENA_TEST(test_hostile_table),
        RSV_ARENA_TEST(test_all_serve_afterwards),
    };

    if (rsv_fixture_main_args(argc, argv) != 0) {
        return 2;
    }
    return testenv_group_result(
        cmocka_run_group_tests(tests, setup, testenv_group_teardown(teardown)));
}
