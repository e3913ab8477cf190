/*
 * gen_corpus.c: writes the seed corpus of every target of tests/fuzz into
 * DIR/<target>/ (tests/fuzz/run.sh --seeds regenerates tests/fuzz/corpus):
 * a valid request of every method (and a few edge values) packed with
 * protobuf-c, tokens and tickets signed with the targets' key, URLs,
 * settings and lock-svc's descriptor set. Small on purpose: libFuzzer grows
 * the working corpus itself.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "balance/v1/balance.pb-c.h"
#include "fuzz_keys.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "lock/v1/lock.pb-c.h"
#include "reservation/v1/reservation.pb-c.h"
#include "reservation_admission.h"

extern const unsigned char lock_descriptor_set[];
extern const size_t lock_descriptor_set_len;

static const char *out_dir;
static rsv_admission_key_t key;
static int written;

static void
die(const char *what)
{
    fprintf(stderr, "gen_corpus: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* Writes DIR/target/name: prefix (when >= 0) then bytes. */
static void
put(const char *target, const char *name, int prefix, const void *bytes, size_t len)
{
    char path[4096];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", out_dir, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        die(path);
    }
    snprintf(path, sizeof(path), "%s/%s/%s", out_dir, target, name);
    if ((f = fopen(path, "wb")) == NULL) {
        die(path);
    }
    if (prefix >= 0) {
        fputc(prefix, f);
    }
    if (len > 0 && fwrite(bytes, 1, len, f) != len) {
        die(path);
    }
    if (fclose(f) != 0) {
        die(path);
    }
    written++;
}

static void
put_str(const char *target, const char *name, int prefix, const char *s)
{
    put(target, name, prefix, s, strlen(s));
}

/* The selector byte of method in service (its place in the descriptor). */
static int
method_byte(const ProtobufCServiceDescriptor *service, const char *method)
{
    for (unsigned i = 0; i < service->n_methods; i++) {
        if (strcmp(service->methods[i].name, method) == 0) {
            return (int)i;
        }
    }
    fprintf(stderr, "gen_corpus: no method %s in %s\n", method, service->name);
    exit(1);
}

/* A request of method, packed, prefixed with its selector: target/<method>[-tag]. */
static void
put_request(const char *target, const ProtobufCServiceDescriptor *service, const char *method,
            const char *tag, const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len + 1);
    char name[256];

    if (buf == NULL) {
        die("malloc");
    }
    protobuf_c_message_pack(msg, buf);
    snprintf(name, sizeof(name), "%s%s%s", method, tag[0] ? "-" : "", tag);
    put(target, name, method_byte(service, method), buf, len);
    free(buf);
}

static void
lock_seeds(void)
{
    const ProtobufCServiceDescriptor *s = &lock__v1__lock_service__descriptor;
    const char *t = "lock_requests";
    Lock__V1__AcquireRequest acq = LOCK__V1__ACQUIRE_REQUEST__INIT;
    Lock__V1__ReleaseRequest rel = LOCK__V1__RELEASE_REQUEST__INIT;
    Lock__V1__ExtendRequest ext = LOCK__V1__EXTEND_REQUEST__INIT;
    Lock__V1__GetLockRequest get = LOCK__V1__GET_LOCK_REQUEST__INIT;
    Lock__V1__EnterSemaphoreRequest ent = LOCK__V1__ENTER_SEMAPHORE_REQUEST__INIT;
    Lock__V1__LeaveSemaphoreRequest lea = LOCK__V1__LEAVE_SEMAPHORE_REQUEST__INIT;
    Lock__V1__ExtendSemaphoreRequest exs = LOCK__V1__EXTEND_SEMAPHORE_REQUEST__INIT;
    Lock__V1__GetSemaphoreRequest gets = LOCK__V1__GET_SEMAPHORE_REQUEST__INIT;
    Lock__V1__WatchSemaphoreRequest wat = LOCK__V1__WATCH_SEMAPHORE_REQUEST__INIT;
    char token[] = "0123456789abcdef0123456789abcdef";

    acq.key = "seat:42:7";
    acq.owner = "user:1";
    acq.lease_ms = 10000;
    put_request(t, s, "Acquire", "", &acq.base);
    acq.wait_ms = 5000;
    acq.lease_ms = 0;
    put_request(t, s, "Acquire", "wait", &acq.base);
    acq.lease_ms = INT64_MAX;
    acq.wait_ms = INT64_MIN;
    put_request(t, s, "Acquire", "extremes", &acq.base);
    rel.key = "seat:42:7";
    rel.token = token;
    put_request(t, s, "Release", "", &rel.base);
    ext.key = "seat:42:7";
    ext.token = token;
    ext.lease_ms = 20000;
    put_request(t, s, "Extend", "", &ext.base);
    get.key = "a/b.c-d_e:f";
    put_request(t, s, "GetLock", "", &get.base);
    ent.name = "room:1";
    ent.owner = "user:1";
    ent.limit = 100;
    ent.lease_ms = 600000;
    ent.ticket_ttl_ms = 60000;
    put_request(t, s, "EnterSemaphore", "", &ent.base);
    lea.name = "room:1";
    lea.ticket = token;
    put_request(t, s, "LeaveSemaphore", "", &lea.base);
    exs.name = "room:1";
    exs.ticket = token;
    exs.lease_ms = 1000;
    put_request(t, s, "ExtendSemaphore", "", &exs.base);
    gets.name = "room:1";
    gets.ticket = "";
    put_request(t, s, "GetSemaphore", "", &gets.base);
    wat.name = "room:1";
    wat.after_version = "1700000000000-3";
    put_request(t, s, "WatchSemaphore", "", &wat.base);
    wat.after_version = "";
    put_request(t, s, "WatchSemaphore", "fresh", &wat.base);
}

static void
balance_seeds(void)
{
    const ProtobufCServiceDescriptor *s = &balance__v1__balance_service__descriptor;
    const char *t = "balance_requests";
    Balance__V1__GetBalanceRequest gb = BALANCE__V1__GET_BALANCE_REQUEST__INIT;
    Balance__V1__TopUpRequest tu = BALANCE__V1__TOP_UP_REQUEST__INIT;
    Balance__V1__SpendRequest sp = BALANCE__V1__SPEND_REQUEST__INIT;
    Balance__V1__ListTransactionsRequest lt = BALANCE__V1__LIST_TRANSACTIONS_REQUEST__INIT;
    Balance__V1__AuthorizeRequest au = BALANCE__V1__AUTHORIZE_REQUEST__INIT;
    Balance__V1__CaptureRequest ca = BALANCE__V1__CAPTURE_REQUEST__INIT;
    Balance__V1__VoidRequest vo = BALANCE__V1__VOID_REQUEST__INIT;
    Balance__V1__RefundRequest re = BALANCE__V1__REFUND_REQUEST__INIT;

    gb.user_id = 7;
    put_request(t, s, "GetBalance", "", &gb.base);
    tu.user_id = 7;
    tu.amount = 5000;
    tu.idempotency_key = "top-up-1";
    put_request(t, s, "TopUp", "", &tu.base);
    sp.user_id = 7;
    sp.amount = 100;
    sp.idempotency_key = "reservation:12";
    sp.reference = "reservation 12";
    put_request(t, s, "Spend", "", &sp.base);
    lt.user_id = 7;
    lt.page_size = 50;
    lt.page_token = "1234";
    put_request(t, s, "ListTransactions", "", &lt.base);
    lt.page_token = "9223372036854775807";
    lt.page_size = 500;
    put_request(t, s, "ListTransactions", "last", &lt.base);
    au.user_id = 7;
    au.amount = 300;
    au.idempotency_key = "reservation:12";
    au.reference = "hold";
    au.expires_in_ms = 60000;
    put_request(t, s, "Authorize", "", &au.base);
    ca.authorization_id = 99;
    put_request(t, s, "Capture", "", &ca.base);
    vo.authorization_id = 99;
    put_request(t, s, "Void", "", &vo.base);
    re.user_id = 7;
    re.transaction_id = 12;
    re.amount = 100;
    re.idempotency_key = "refund:12";
    put_request(t, s, "Refund", "", &re.base);
}

static void
reservation_seeds(void)
{
    const ProtobufCServiceDescriptor *s = &reservation__v1__reservation_service__descriptor;
    const char *t = "reservation_requests";
    Reservation__V1__CreateConcertRequest cc = RESERVATION__V1__CREATE_CONCERT_REQUEST__INIT;
    Reservation__V1__ScheduleSpec sp1 = RESERVATION__V1__SCHEDULE_SPEC__INIT,
                                  sp2 = RESERVATION__V1__SCHEDULE_SPEC__INIT;
    Reservation__V1__ScheduleSpec *specs[] = {&sp1, &sp2};
    Reservation__V1__ListConcertsRequest lc = RESERVATION__V1__LIST_CONCERTS_REQUEST__INIT;
    Reservation__V1__ListSeatsRequest ls = RESERVATION__V1__LIST_SEATS_REQUEST__INIT;
    Reservation__V1__HoldSeatsRequest hs = RESERVATION__V1__HOLD_SEATS_REQUEST__INIT;
    Reservation__V1__PayReservationRequest pr = RESERVATION__V1__PAY_RESERVATION_REQUEST__INIT;
    Reservation__V1__CancelReservationRequest cr =
        RESERVATION__V1__CANCEL_RESERVATION_REQUEST__INIT;
    Reservation__V1__GetReservationRequest gr = RESERVATION__V1__GET_RESERVATION_REQUEST__INIT;
    Reservation__V1__EnterWaitingRoomRequest ew = RESERVATION__V1__ENTER_WAITING_ROOM_REQUEST__INIT;
    Reservation__V1__WatchWaitingRoomRequest ww = RESERVATION__V1__WATCH_WAITING_ROOM_REQUEST__INIT;
    Reservation__V1__LeaveWaitingRoomRequest lw = RESERVATION__V1__LEAVE_WAITING_ROOM_REQUEST__INIT;
    int32_t seats[] = {3, 1, 2};
    char token[RSV_ADMISSION_TOKEN_MAX], ticket[RSV_ROOM_TICKET_MAX];

    cc.title = "Sold Out Tour";
    cc.schedules = specs;
    cc.n_schedules = 2;
    sp1.starts_at_ms = FUZZ_NOW_MS + 86400000LL;
    sp1.seat_count = 100;
    sp1.seat_price = 5000;
    sp2.starts_at_ms = FUZZ_NOW_MS + 3600000LL;
    sp2.seat_count = 10000;
    sp2.seat_price = 100000000;
    sp2.waiting_room_limit = 50;
    sp2.admission_ttl_ms = 60000;
    put_request(t, s, "CreateConcert", "", &cc.base);
    sp1.starts_at_ms = 1; /* 1970: refused */
    put_request(t, s, "CreateConcert", "1970", &cc.base);
    put_request(t, s, "ListConcerts", "", &lc.base);
    ls.schedule_id = 4;
    ls.available_only = 1;
    put_request(t, s, "ListSeats", "", &ls.base);
    hs.user_id = 7;
    hs.schedule_id = 4;
    hs.seat_numbers = seats;
    hs.n_seat_numbers = 3;
    put_request(t, s, "HoldSeats", "", &hs.base);
    if (rsv_admission_sign(&key, 7, 4, "0123456789abcdef0123456789abcdef", FUZZ_NOW_MS + 600000,
                           token, sizeof(token)) != 0) {
        die("rsv_admission_sign");
    }
    hs.admission_token = token;
    put_request(t, s, "HoldSeats", "admitted", &hs.base);
    pr.reservation_id = 12;
    pr.user_id = 7;
    pr.idempotency_key = "pay-12";
    put_request(t, s, "PayReservation", "", &pr.base);
    cr.reservation_id = 12;
    cr.user_id = 7;
    put_request(t, s, "CancelReservation", "", &cr.base);
    gr.reservation_id = 12;
    put_request(t, s, "GetReservation", "", &gr.base);
    ew.user_id = 7;
    ew.schedule_id = 4;
    put_request(t, s, "EnterWaitingRoom", "", &ew.base);
    if (rsv_room_ticket_sign(&key, 4, 7, 3, "0123456789abcdef0123456789abcdef", ticket,
                             sizeof(ticket)) != 0) {
        die("rsv_room_ticket_sign");
    }
    ww.ticket = ticket;
    put_request(t, s, "WatchWaitingRoom", "", &ww.base);
    lw.ticket = ticket;
    put_request(t, s, "LeaveWaitingRoom", "", &lw.base);
}

/* The NUL-separated argv and NAME=value items of fuzz_config. */
static void
put_items(const char *name, const char *const *items)
{
    char buf[1024];
    size_t len = 0;

    for (; *items != NULL; items++) {
        size_t n = strlen(*items) + 1;
        memcpy(buf + len, *items, n);
        len += n;
    }
    put("config", name, -1, buf, len > 0 ? len - 1 : 0);
}

static void
config_seeds(void)
{
    static const char *const flags[] = {"--redis-url", "redis://127.0.0.1:6379/0", "--workers=8",
                                        "--log-level=debug", NULL};
    static const char *const env[] = {"REDIS_URL=redis://h:1", "WORKERS=4096", "ONLY_ENV=yes",
                                      "METRICS_ADDR=127.0.0.1:9100", NULL};
    static const char *const both[] = {
        "GRACE_MS=5", "REDIS_URL=x", "--grace-ms", "600000", "--signed=-9223372036854775808",
        "--",         NULL};
    static const char *const bad[] = {"--lease-ms=0", "--max-workers", "--optional", NULL};
    static const char *const help[] = {"--workers=x", "-h", NULL};

    put_items("flags", flags);
    put_items("env", env);
    put_items("both", both);
    put_items("bad", bad);
    put_items("help", help);
}

static void
redis_url_seeds(void)
{
    static const char *const urls[] = {
        "redis://127.0.0.1:6379",
        "redis://localhost:7000/3",
        "redis://:secret@127.0.0.1:6379/1",
        "redis://user:pass@[::1]:6379/0",
        "redis-sentinel://127.0.0.1:26379/mymaster",
        "redis-sentinel://a:26379,b:26380,c:26381/mymaster",
        "redis://127.0.0.1:70000",
        "http://127.0.0.1:6379",
    };
    char name[32];

    for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
        snprintf(name, sizeof(name), "url-%zu", i);
        put_str("redis_url", name, (int)(i * 5), urls[i]);
    }
}

static void
page_token_seeds(void)
{
    put_str("page_token", "first", -1, "");
    put_str("page_token", "id", -1, "1234");
    put_str("page_token", "max", -1, "9223372036854775807");
    put_str("page_token", "over", -1, "9223372036854775808");
    put_str("page_token", "negative", -1, "-5");
}

/* int64 little-endian, as fuzz_take_i64 reads it on this machine. */
static size_t
put_i64(uint8_t *p, int64_t v)
{
    memcpy(p, &v, sizeof(v));
    return sizeof(v);
}

static void
admission_seeds(void)
{
    static const char lock_ticket[] = "0123456789abcdef0123456789abcdef";
    char token[RSV_ADMISSION_TOKEN_MAX], ticket[RSV_ROOM_TICKET_MAX];
    uint8_t buf[512];
    size_t n;

    if (rsv_admission_sign(&key, 7, 4, lock_ticket, FUZZ_NOW_MS + 600000, token, sizeof(token)) !=
            0 ||
        rsv_room_ticket_sign(&key, 4, 7, 3, lock_ticket, ticket, sizeof(ticket)) != 0) {
        die("signing");
    }
    /* 0: verify a given token. */
    n = put_i64(buf, 7);
    n += put_i64(buf + n, 4);
    memcpy(buf + n, token, strlen(token));
    put("admission", "verify", 0, buf, n + strlen(token));
    /* 1: sign, then tamper. */
    n = put_i64(buf, 7);
    n += put_i64(buf + n, 4);
    n += put_i64(buf + n, FUZZ_NOW_MS + 600000);
    buf[n++] = (uint8_t)strlen(lock_ticket);
    memcpy(buf + n, lock_ticket, strlen(lock_ticket));
    n += strlen(lock_ticket);
    buf[n++] = 10;
    buf[n++] = 0x20;
    put("admission", "sign", 1, buf, n);
    /* 2: parse a given ticket. */
    put_str("admission", "ticket", 2, ticket);
    /* 3: sign a ticket, then tamper. */
    n = put_i64(buf, 4);
    n += put_i64(buf + n, 7);
    n += put_i64(buf + n, 3);
    buf[n++] = (uint8_t)strlen(lock_ticket);
    memcpy(buf + n, lock_ticket, strlen(lock_ticket));
    n += strlen(lock_ticket);
    buf[n++] = 3;
    buf[n++] = 0x01;
    put("admission", "ticket-sign", 3, buf, n);
    /* 4: the admin token, 5: a key. */
    put_str("admission", "admin", 4, FUZZ_ADMIN_TOKEN);
    put_str("admission", "key", 5, FUZZ_ADMISSION_KEY);
}

static void
descset_seeds(void)
{
    Grpc__Reflection__V1__ServerReflectionRequest rr =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    Grpc__Reflection__V1__ExtensionRequest ext = GRPC__REFLECTION__V1__EXTENSION_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckRequest hc = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    uint8_t buf[512];
    size_t n;

    put("descset", "lock-set", 0, lock_descriptor_set, lock_descriptor_set_len);
    rr.host = "localhost";
    rr.message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
    rr.file_containing_symbol = "lock.v1.LockService.Acquire";
    n = protobuf_c_message_pack(&rr.base, buf);
    put("descset", "symbol", 1, buf, n);
    rr.message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME;
    rr.file_by_filename = "lock/v1/lock.proto";
    n = protobuf_c_message_pack(&rr.base, buf);
    put("descset", "file", 1, buf, n);
    rr.message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION;
    ext.containing_type = ".grpc.health.v1.HealthCheckRequest";
    ext.extension_number = 7;
    rr.file_containing_extension = &ext;
    n = protobuf_c_message_pack(&rr.base, buf);
    put("descset", "extension", 1, buf, n);
    hc.service = "lock.v1.LockService";
    n = protobuf_c_message_pack(&hc.base, buf);
    put("descset", "health", 2, buf, n);
}

int
main(int argc, char **argv)
{
    svc_err_t err;

    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR (writes DIR/<target>/<seed>)\n", argv[0]);
        return 2;
    }
    out_dir = argv[1];
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST) {
        die(out_dir);
    }
    if (rsv_admission_key_set(&key, FUZZ_ADMISSION_KEY, strlen(FUZZ_ADMISSION_KEY), &err) != 0) {
        fprintf(stderr, "gen_corpus: %s\n", err.msg);
        return 1;
    }
    lock_seeds();
    balance_seeds();
    reservation_seeds();
    config_seeds();
    redis_url_seeds();
    page_token_seeds();
    admission_seeds();
    descset_seeds();
    printf("gen_corpus: %d seeds in %s\n", written, out_dir);
    return 0;
}
