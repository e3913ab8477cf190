/*
 * cf_common.c: what every scenario uses: the tally of answers, the record of
 * what was acknowledged, the invariant checks over both, typed calls, and
 * small helpers.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "balance/v1/balance.pb-c.h"
#include "conformance.h"
#include "lock/v1/lock.pb-c.h"
#include "reservation/v1/reservation.pb-c.h"
#include "svc/timer.h"

/* ---------------------------------------------------------------- Tally */

bool
cf_is_refusal(svc_status_t code)
{
    switch (code) {
    case SVC_CANCELLED:
    case SVC_DEADLINE_EXCEEDED:
    case SVC_NOT_FOUND:
    case SVC_ALREADY_EXISTS:
    case SVC_RESOURCE_EXHAUSTED:
    case SVC_FAILED_PRECONDITION:
    case SVC_ABORTED:
    case SVC_UNAVAILABLE:
        return true;
    default:
        return false; /* OK is no refusal; UNKNOWN, INTERNAL, ... are faults */
    }
}

void
cf_record(cf_tally_t *t, svc_status_t code, int64_t elapsed_ms, int64_t deadline_ms)
{
    if (t == NULL) {
        return;
    }
    atomic_fetch_add(&t->requests, 1);
    if (elapsed_ms > deadline_ms + CF_HANG_SLACK_MS) {
        atomic_fetch_add(&t->hangs, 1);
        fprintf(stderr, "conformance: a call took %" PRId64 " ms, its deadline was %" PRId64 "\n",
                elapsed_ms, deadline_ms);
        return;
    }
    if (code == SVC_OK) {
        atomic_fetch_add(&t->ok, 1);
    } else {
        atomic_fetch_add(&t->by_code[(unsigned)code < CF_CODES ? code : SVC_UNKNOWN], 1);
    }
}

bool
cf_is_refusal_in(svc_status_t code, bool fault)
{
    /* Without a fault every dependency is up: UNAVAILABLE is a fault of ours. */
    return cf_is_refusal(code) && (fault || code != SVC_UNAVAILABLE);
}

long
cf_faults(const cf_tally_t *t, bool fault)
{
    long n = atomic_load(&t->hangs);

    for (int c = 1; c < CF_CODES; c++) {
        if (!cf_is_refusal_in((svc_status_t)c, fault)) {
            n += atomic_load(&t->by_code[c]);
        }
    }
    return n;
}

long
cf_other_errors(const cf_tally_t *t)
{
    return cf_faults(t, true);
}

void
cf_violation(cf_tally_t *t, const char *fmt, ...)
{
    va_list ap;

    atomic_fetch_add(&t->violations, 1);
    fputs("VIOLATION: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void
cf_add_check(cf_tally_t *t, const char *what, int64_t found)
{
    if (found < 0) {
        cf_violation(t, "%s: could not be checked", what);
    } else if (found > 0) {
        atomic_fetch_add(&t->violations, found);
    }
}

/* ------------------------------------------------------ Acknowledged answers */

void
cf_acks_init(cf_acks_t *a)
{
    memset(a, 0, sizeof(*a));
    pthread_mutex_init(&a->mu, NULL);
}

void
cf_acks_free(cf_acks_t *a)
{
    for (int i = 0; i < a->n_ledger; i++) {
        free((char *)a->ledger[i].key);
    }
    free(a->ledger);
    free(a->held);
    free(a->paid);
    pthread_mutex_destroy(&a->mu);
}

/* Grows *v (elements of size) to hold one more; aborts when out of memory. */
static void *
grow(void *v, int n, int *cap, size_t size)
{
    if (n < *cap) {
        return v;
    }
    *cap = *cap ? *cap * 2 : 64;
    v = realloc(v, (size_t)*cap * size);
    if (v == NULL) {
        abort();
    }
    return v;
}

void
cf_ack_ledger(cf_acks_t *a, int64_t user_id, const char *key, int64_t transaction_id)
{
    char *copy = strdup(key);

    if (copy == NULL) {
        abort();
    }
    pthread_mutex_lock(&a->mu);
    a->ledger = grow(a->ledger, a->n_ledger, &a->cap_ledger, sizeof(*a->ledger));
    a->ledger[a->n_ledger++] = (inv_ack_t){user_id, copy, transaction_id};
    pthread_mutex_unlock(&a->mu);
}

static void
ack_id(cf_acks_t *a, int64_t **v, int *n, int *cap, int64_t id)
{
    pthread_mutex_lock(&a->mu);
    *v = grow(*v, *n, cap, sizeof(**v));
    (*v)[(*n)++] = id;
    pthread_mutex_unlock(&a->mu);
}

void
cf_ack_held(cf_acks_t *a, int64_t reservation_id)
{
    ack_id(a, &a->held, &a->n_held, &a->cap_held, reservation_id);
}

void
cf_ack_paid(cf_acks_t *a, int64_t reservation_id)
{
    ack_id(a, &a->paid, &a->n_paid, &a->cap_paid, reservation_id);
}

void
cf_check_invariants(cf_tally_t *tally, const cf_targets_t *t, cf_acks_t *acks)
{
    cf_add_check(tally, "seats", inv_check_seats(t->reservation_db, svc_now_unix_ms(), stderr));
    cf_add_check(tally, "ledger", inv_check_ledger(t->balance_db, stderr));
    if (acks != NULL) {
        cf_add_check(tally, "acknowledged top-ups and spends",
                     inv_check_acknowledged(t->balance_db, acks->ledger, acks->n_ledger, stderr));
        cf_add_check(tally, "acknowledged holds and payments",
                     inv_check_reservations(t->reservation_db, acks->held, acks->n_held, acks->paid,
                                            acks->n_paid, stderr));
        cf_add_check(tally, "payments charged once",
                     inv_check_charged_once(t->balance_db, acks->paid, acks->n_paid, stderr));
    }
    if (t->redis_port > 0) {
        cf_add_check(tally, "locks", inv_check_locks(t->redis_host, t->redis_port, stderr));
    }
}

/* ---------------------------------------------------------------- Calls */

typedef struct {
    int64_t timeout_ms, t0;
    svc_call_opts_t opts;
    svc_arena_t *arena;
    svc_err_t err;
} call_t;

static void
call_begin(call_t *c, int64_t timeout_ms, const char *const *md, int n_md)
{
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : CF_TIMEOUT_MS;
    c->opts = (svc_call_opts_t){.timeout_ms = c->timeout_ms, .metadata = md, .n_metadata = n_md};
    c->arena = svc_arena_create();
    if (c->arena == NULL) {
        abort();
    }
    c->t0 = svc_now_mono_ms();
}

/* Does the call, records its answer, returns its code; *resp in c->arena. */
static svc_status_t
call_run(call_t *c, svc_client_t *client, cf_tally_t *t, const char *method,
         const ProtobufCMessage *req, const ProtobufCMessageDescriptor *desc,
         ProtobufCMessage **resp)
{
    svc_status_t code;

    if (client == NULL) {
        svc_err_set(&c->err, SVC_UNAVAILABLE, "no client");
        code = SVC_UNAVAILABLE;
    } else {
        code = svc_client_unary(client, method, req, desc, c->arena, resp, &c->opts, &c->err) == 0
                   ? SVC_OK
                   : c->err.code;
    }
    cf_record(t, code, svc_now_mono_ms() - c->t0, c->timeout_ms);
    if (!cf_is_refusal(code) && code != SVC_OK) {
        fprintf(stderr, "conformance: %s answered %s: %s\n", method, svc_status_name(code),
                c->err.msg);
    }
    return code;
}

svc_status_t
cf_call(svc_client_t *client, cf_tally_t *t, const char *method, const ProtobufCMessage *req,
        const ProtobufCMessageDescriptor *desc, svc_arena_t *arena, ProtobufCMessage **resp)
{
    call_t c = {.timeout_ms = CF_TIMEOUT_MS,
                .t0 = svc_now_mono_ms(),
                .opts = {.timeout_ms = CF_TIMEOUT_MS},
                .arena = arena};

    return call_run(&c, client, t, method, req, desc, resp);
}

static void
call_end(call_t *c)
{
    svc_arena_destroy(c->arena);
}

/* TopUp or Spend; their requests and answers have the same fields. */
static svc_status_t
money(svc_client_t *c, cf_tally_t *t, bool top_up, int64_t user, int64_t amount, const char *key,
      int64_t *txn_id, int64_t *balance)
{
    Balance__V1__TopUpRequest up = BALANCE__V1__TOP_UP_REQUEST__INIT;
    Balance__V1__SpendRequest spend = BALANCE__V1__SPEND_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    call_t call;
    svc_status_t code;

    up.user_id = spend.user_id = user;
    up.amount = spend.amount = amount;
    up.idempotency_key = spend.idempotency_key = (char *)key;
    call_begin(&call, 0, NULL, 0);
    if (top_up) {
        code = call_run(&call, c, t, "/balance.v1.BalanceService/TopUp", &up.base,
                        &balance__v1__top_up_response__descriptor, &resp);
    } else {
        code = call_run(&call, c, t, "/balance.v1.BalanceService/Spend", &spend.base,
                        &balance__v1__spend_response__descriptor, &resp);
    }
    if (code == SVC_OK) {
        int64_t id = top_up ? ((Balance__V1__TopUpResponse *)resp)->transaction_id
                            : ((Balance__V1__SpendResponse *)resp)->transaction_id;
        int64_t after = top_up ? ((Balance__V1__TopUpResponse *)resp)->balance
                               : ((Balance__V1__SpendResponse *)resp)->balance;
        if (txn_id != NULL) {
            *txn_id = id;
        }
        if (balance != NULL) {
            *balance = after;
        }
    }
    call_end(&call);
    return code;
}

svc_status_t
cf_topup(svc_client_t *c, cf_tally_t *t, int64_t user, int64_t amount, const char *key,
         int64_t *txn_id, int64_t *balance)
{
    return money(c, t, true, user, amount, key, txn_id, balance);
}

svc_status_t
cf_spend(svc_client_t *c, cf_tally_t *t, int64_t user, int64_t amount, const char *key,
         int64_t *txn_id, int64_t *balance)
{
    return money(c, t, false, user, amount, key, txn_id, balance);
}

svc_status_t
cf_get_balance(svc_client_t *c, cf_tally_t *t, int64_t user, int64_t *balance)
{
    Balance__V1__GetBalanceRequest req = BALANCE__V1__GET_BALANCE_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    call_t call;
    svc_status_t code;

    req.user_id = user;
    call_begin(&call, 0, NULL, 0);
    code = call_run(&call, c, t, "/balance.v1.BalanceService/GetBalance", &req.base,
                    &balance__v1__get_balance_response__descriptor, &resp);
    if (code == SVC_OK && balance != NULL) {
        *balance = ((Balance__V1__GetBalanceResponse *)resp)->balance;
    }
    call_end(&call);
    return code;
}

svc_status_t
cf_hold(svc_client_t *c, cf_tally_t *t, int64_t user, int64_t schedule, const int32_t *seats, int n,
        int64_t timeout_ms, int64_t *reservation_id)
{
    Reservation__V1__HoldSeatsRequest req = RESERVATION__V1__HOLD_SEATS_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    call_t call;
    svc_status_t code;

    req.user_id = user;
    req.schedule_id = schedule;
    req.seat_numbers = (int32_t *)seats;
    req.n_seat_numbers = (size_t)n;
    call_begin(&call, timeout_ms, NULL, 0);
    code = call_run(&call, c, t, "/reservation.v1.ReservationService/HoldSeats", &req.base,
                    &reservation__v1__hold_seats_response__descriptor, &resp);
    if (code == SVC_OK && reservation_id != NULL) {
        *reservation_id = ((Reservation__V1__HoldSeatsResponse *)resp)->reservation->id;
    }
    call_end(&call);
    return code;
}

svc_status_t
cf_pay(svc_client_t *c, cf_tally_t *t, int64_t reservation, int64_t user, const char *key,
       int64_t timeout_ms, int64_t *payment_id)
{
    Reservation__V1__PayReservationRequest req = RESERVATION__V1__PAY_RESERVATION_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    call_t call;
    svc_status_t code;

    req.reservation_id = reservation;
    req.user_id = user;
    req.idempotency_key = (char *)key;
    call_begin(&call, timeout_ms, NULL, 0);
    code = call_run(&call, c, t, "/reservation.v1.ReservationService/PayReservation", &req.base,
                    &reservation__v1__pay_reservation_response__descriptor, &resp);
    if (code == SVC_OK && payment_id != NULL) {
        *payment_id = ((Reservation__V1__PayReservationResponse *)resp)->payment_id;
    }
    call_end(&call);
    return code;
}

svc_status_t
cf_cancel(svc_client_t *c, cf_tally_t *t, int64_t reservation, int64_t user)
{
    Reservation__V1__CancelReservationRequest req =
        RESERVATION__V1__CANCEL_RESERVATION_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    call_t call;
    svc_status_t code;

    req.reservation_id = reservation;
    req.user_id = user;
    call_begin(&call, 0, NULL, 0);
    code = call_run(&call, c, t, "/reservation.v1.ReservationService/CancelReservation", &req.base,
                    &reservation__v1__cancel_reservation_response__descriptor, &resp);
    call_end(&call);
    return code;
}

svc_status_t
cf_lock_acquire(svc_client_t *c, cf_tally_t *t, const char *key, int64_t lease_ms, int64_t wait_ms,
                svc_lock_t *out)
{
    Lock__V1__AcquireRequest req = LOCK__V1__ACQUIRE_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    call_t call;
    svc_status_t code;

    req.key = (char *)key;
    req.owner = "conformance";
    req.lease_ms = lease_ms;
    req.wait_ms = wait_ms;
    call_begin(&call, wait_ms + CF_TIMEOUT_MS, NULL, 0);
    code = call_run(&call, c, t, "/lock.v1.LockService/Acquire", &req.base,
                    &lock__v1__acquire_response__descriptor, &resp);
    if (code == SVC_OK && out != NULL) {
        Lock__V1__AcquireResponse *r = (void *)resp;
        snprintf(out->key, sizeof(out->key), "%s", key);
        snprintf(out->token, sizeof(out->token), "%s", r->token);
        out->fence = r->fence;
        out->expires_at_ms = r->expires_at_ms;
    }
    call_end(&call);
    return code;
}

svc_status_t
cf_lock_release(svc_client_t *c, cf_tally_t *t, const svc_lock_t *lock)
{
    Lock__V1__ReleaseRequest req = LOCK__V1__RELEASE_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    call_t call;
    svc_status_t code;

    req.key = (char *)lock->key;
    req.token = (char *)lock->token;
    call_begin(&call, 0, NULL, 0);
    code = call_run(&call, c, t, "/lock.v1.LockService/Release", &req.base,
                    &lock__v1__release_response__descriptor, &resp);
    call_end(&call);
    return code;
}

int64_t
cf_new_schedule(svc_client_t *c, const char *admin_token, const char *title, int seats,
                int64_t price)
{
    return cf_new_room_schedule(c, admin_token, title, seats, price, 0, 0);
}

int64_t
cf_new_room_schedule(svc_client_t *c, const char *admin_token, const char *title, int seats,
                     int64_t price, int32_t room_limit, int64_t admission_ttl_ms)
{
    Reservation__V1__CreateConcertRequest req = RESERVATION__V1__CREATE_CONCERT_REQUEST__INIT;
    Reservation__V1__ScheduleSpec spec = RESERVATION__V1__SCHEDULE_SPEC__INIT;
    Reservation__V1__ScheduleSpec *specs[] = {&spec};
    char bearer[160];
    const char *md[] = {"authorization", bearer};
    ProtobufCMessage *resp = NULL;
    call_t call;
    int64_t id = -1;

    snprintf(bearer, sizeof(bearer), "Bearer %s", admin_token);
    req.title = (char *)title;
    req.schedules = specs;
    req.n_schedules = 1;
    spec.starts_at_ms = svc_now_unix_ms() + 30LL * 86400 * 1000;
    spec.seat_count = seats;
    spec.seat_price = price;
    spec.waiting_room_limit = room_limit;
    spec.admission_ttl_ms = admission_ttl_ms;
    call_begin(&call, 0, md, 1);
    if (call_run(&call, c, NULL, "/reservation.v1.ReservationService/CreateConcert", &req.base,
                 &reservation__v1__create_concert_response__descriptor, &resp) == SVC_OK) {
        id = ((Reservation__V1__CreateConcertResponse *)resp)->concert->schedules[0]->id;
    } else {
        fprintf(stderr, "conformance: CreateConcert failed: %s %s\n",
                svc_status_name(call.err.code), call.err.msg);
    }
    call_end(&call);
    return id;
}

svc_client_t *
cf_client(const char *addr)
{
    svc_err_t err;
    svc_client_t *c = svc_client_get(addr, &err);

    if (c == NULL) {
        fprintf(stderr, "conformance: no client for %s: %s\n", addr, err.msg);
    }
    return c;
}

/* -------------------------------------------------------------- Helpers */

static atomic_llong next_user;
static atomic_llong next_unique;
static char run_id[24];
static pthread_once_t ids_once = PTHREAD_ONCE_INIT;

/* Users of a run start at a random multiple of 10^6 in 10^12 .. 2*10^12. */
static void
ids_init(void)
{
    uint64_t r = 0;

    if (getrandom(&r, sizeof(r), 0) != sizeof(r)) {
        r = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    }
    atomic_store(&next_user, 1000000000000LL + (int64_t)(r % 1000000) * 1000000);
    snprintf(run_id, sizeof(run_id), "%08" PRIx64, r >> 32);
}

int64_t
cf_new_user(void)
{
    pthread_once(&ids_once, ids_init);
    return atomic_fetch_add(&next_user, 1);
}

int64_t
cf_new_account(svc_client_t *balance)
{
    int64_t user = cf_new_user();
    char key[64];
    svc_status_t code;

    cf_unique(key, sizeof(key), "account");
    code = cf_topup(balance, NULL, user, 1, key, NULL, NULL);
    if (code != SVC_OK) {
        fprintf(stderr, "conformance: opening the account of user %lld: %s\n", (long long)user,
                svc_status_name(code));
        return 0;
    }
    return user;
}

void
cf_unique(char *buf, size_t len, const char *prefix)
{
    pthread_once(&ids_once, ids_init);
    snprintf(buf, len, "%s-%s-%lld", prefix, run_id, atomic_fetch_add(&next_unique, 1));
}

void
cf_parallel(int n, void *(*fn)(void *), void *args, size_t arg_size)
{
    pthread_t *t = calloc((size_t)n, sizeof(*t));
    pthread_attr_t attr;

    if (t == NULL) {
        abort();
    }
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < n; i++) {
        if (pthread_create(&t[i], &attr, fn, (char *)args + (size_t)i * arg_size) != 0) {
            fprintf(stderr, "conformance: pthread_create failed\n");
            abort();
        }
    }
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
    }
    pthread_attr_destroy(&attr);
    free(t);
}
