/*
 * test_identity.c: caller identity across the three services over real
 * mTLS (certificates from deploy/local/certs.sh, one per service, CN = its
 * name). lock-svc trusts reservation-svc and balance-svc, balance-svc trusts
 * reservation-svc, both user-facing services verify ES256 JWTs minted here.
 *
 * - reservation-svc, trusted by its certificate's name, takes the seat locks
 *   and pays for a user through balance-svc (Authorize, Capture) with no
 *   token of the user's: the money moves.
 * - The test's own certificate (CN client) is not trusted: it cannot spend
 *   another user's account or take a seat: lock; a reservation-svc whose
 *   certificate (CN rogue-svc) is not trusted cannot hold seats. Everything
 *   refused is read back from the databases unchanged.
 *
 * argv: reservation-svc, balance-svc, lock-svc, deploy/local/certs.sh.
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

#include "reservation/v1/reservation.pb-c.h"
#include "svc/balance_client.h"
#include "svc/client.h"
#include "svc/lock_client.h"
#include "svc/timer.h"
#include "svc/tls.h"
#include "testenv.h"
#include "testjwt.h"

#define ADMIN "test-admin-token-0123456789abcdef"
#define PRICE 1500
#define RSV(m) "/reservation.v1.ReservationService/" m

static const char *rsv_path, *balance_path, *lock_path, *certs_sh;
static char dir[] = "/tmp/test-identity.XXXXXX";
static EVP_PKEY *key;
static testenv_pg_t pg;
static testenv_redis_t redis;
static testenv_proc_t lock_p, balance_p, rsv_p, rogue_p;
static svc_client_t *lock_c, *balance_c, *rsv_c, *rogue_c;

/* ---------- the stack ---------- */

static void
file_in_dir(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", dir, name);
}

/* NAME=DIR/file into out. */
static const char *
env_file(char *out, size_t cap, const char *name, const char *file)
{
    snprintf(out, cap, "%s=%s/%s", name, dir, file);
    return out;
}

/* Starts binary with the mTLS settings of certificate cert plus extra (NULL-terminated). */
static int
start(testenv_proc_t *p, const char *binary, const char *cert, const char *const *extra)
{
    char cert_env[400], key_env[400], ca_env[400], client_ca_env[400], c[64], k[64];
    const char *env[TESTENV_PROC_MAX_ENV] = {0};
    size_t n = 0;

    snprintf(c, sizeof(c), "%s.pem", cert);
    snprintf(k, sizeof(k), "%s-key.pem", cert);
    env[n++] = env_file(cert_env, sizeof(cert_env), "TLS_CERT_FILE", c);
    env[n++] = env_file(key_env, sizeof(key_env), "TLS_KEY_FILE", k);
    env[n++] = env_file(ca_env, sizeof(ca_env), "TLS_CA_FILE", "ca.pem");
    env[n++] = env_file(client_ca_env, sizeof(client_ca_env), "TLS_CLIENT_CA_FILE", "ca.pem");
    env[n++] = "LOG_LEVEL=warn";
    for (size_t i = 0; extra[i] != NULL && n + 1 < TESTENV_PROC_MAX_ENV; i++) {
        env[n++] = extra[i];
    }
    return testenv_proc_start(p, binary, NULL, env);
}

static int
start_reservation(testenv_proc_t *p, svc_client_t **c, const char *cert, const char *db)
{
    char db_env[600], lock_env[100], balance_env[100], jwt_env[400];
    const char *extra[] = {db_env,
                           lock_env,
                           balance_env,
                           "ADMIN_TOKEN=" ADMIN,
                           env_file(jwt_env, sizeof(jwt_env), "AUTH_JWT_KEY_FILE", "jwt.pem"),
                           NULL};
    svc_err_t err;

    snprintf(db_env, sizeof(db_env), "DATABASE_URL=host=127.0.0.1 port=%d user=postgres dbname=%s",
             pg.port, db);
    snprintf(lock_env, sizeof(lock_env), "LOCK_SVC_ADDR=%s", lock_p.addr);
    snprintf(balance_env, sizeof(balance_env), "BALANCE_SVC_ADDR=%s", balance_p.addr);
    if (start(p, rsv_path, cert, extra) != 0) {
        return -1;
    }
    *c = svc_client_get(p->addr, &err);
    return *c != NULL ? 0 : -1;
}

static int
setup(void **state)
{
    char cmd[600], path[300], ca[300], cert[300], pkey[300], redis_url[128], redis_env[160];
    char db_env[600], lock_env[100], jwt_env[400];
    svc_tls_opts_t tls = {.cert_file = cert, .key_file = pkey, .ca_file = ca};
    svc_err_t err;

    (void)state;
    testenv_cleanup_on_exit();
    if (mkdtemp(dir) == NULL) {
        return -1;
    }
    snprintf(cmd, sizeof(cmd),
             "'%s' '%s' lock-svc balance-svc reservation-svc rogue-svc --client client >/dev/null",
             certs_sh, dir);
    file_in_dir(path, sizeof(path), "jwt.pem");
    key = testjwt_ec_key("P-256");
    if (system(cmd) != 0 || key == NULL || testjwt_write_public(key, path) != 0) {
        fprintf(stderr, "test_identity: cannot make certificates or keys in %s\n", dir);
        return -1;
    }
    /* This process is a client with a certificate no service trusts. */
    file_in_dir(ca, sizeof(ca), "ca.pem");
    file_in_dir(cert, sizeof(cert), "client.pem");
    file_in_dir(pkey, sizeof(pkey), "client-key.pem");
    if (svc_tls_client_configure(&tls, &err) != 0) {
        fprintf(stderr, "test_identity: %s\n", err.msg);
        return -1;
    }
    if (testenv_pg_start(&pg, "balance") != 0 ||
        testenv_pg_exec(&pg, "CREATE DATABASE reservation") != 0 ||
        testenv_pg_exec(&pg, "CREATE DATABASE rogue") != 0 || testenv_redis_start(&redis) != 0) {
        return -1;
    }
    testenv_redis_url(&redis, redis_url, sizeof(redis_url));
    snprintf(redis_env, sizeof(redis_env), "REDIS_URL=%s", redis_url);
    {
        const char *extra[] = {redis_env, "AUTH_TRUSTED_PEERS=reservation-svc,balance-svc", NULL};
        if (start(&lock_p, lock_path, "lock-svc", extra) != 0) {
            return -1;
        }
    }
    snprintf(db_env, sizeof(db_env), "DATABASE_URL=%s", pg.conninfo);
    snprintf(lock_env, sizeof(lock_env), "LOCK_SVC_ADDR=%s", lock_p.addr);
    {
        const char *extra[] = {db_env, lock_env, "AUTH_TRUSTED_PEERS=reservation-svc",
                               env_file(jwt_env, sizeof(jwt_env), "AUTH_JWT_KEY_FILE", "jwt.pem"),
                               NULL};
        if (start(&balance_p, balance_path, "balance-svc", extra) != 0) {
            return -1;
        }
    }
    if ((lock_c = svc_client_get(lock_p.addr, &err)) == NULL ||
        (balance_c = svc_client_get(balance_p.addr, &err)) == NULL ||
        start_reservation(&rsv_p, &rsv_c, "reservation-svc", "reservation") != 0 ||
        start_reservation(&rogue_p, &rogue_c, "rogue-svc", "rogue") != 0) {
        return -1;
    }
    return 0;
}

static int
teardown(void **state)
{
    char cmd[300];
    int bad = 0;

    (void)state;
    bad |= testenv_proc_stop(&rogue_p) != 0;
    bad |= testenv_proc_stop(&rsv_p) != 0;
    bad |= testenv_proc_stop(&balance_p) != 0;
    bad |= testenv_proc_stop(&lock_p) != 0;
    testenv_redis_stop(&redis);
    testenv_pg_stop(&pg);
    svc_client_release_all();
    EVP_PKEY_free(key);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    bad |= system(cmd) != 0;
    return bad ? -1 : 0;
}

/* ---------- calls ---------- */

static int64_t next_user = 7001;

/* "Bearer <token of user>" in arena. */
static const char *
bearer_of(svc_arena_t *arena, int64_t user)
{
    char sub[32], *b;
    const char *out;

    snprintf(sub, sizeof(sub), "%" PRId64, user);
    b = testjwt_bearer(
        testjwt_token("ES256", key, sub, svc_now_unix_ms() / 1000, 300, 0, NULL, NULL));
    assert_non_null(b);
    out = svc_arena_strdup(arena, b);
    free(b);
    return out;
}

static svc_call_opts_t
with_auth(const char *auth, const char *md[2])
{
    svc_call_opts_t o = {.timeout_ms = 20000};

    if (auth != NULL) {
        md[0] = "authorization";
        md[1] = auth;
        o.metadata = md;
        o.n_metadata = 1;
    }
    return o;
}

static int64_t
stored_balance(int64_t user)
{
    char sql[128];

    snprintf(sql, sizeof(sql), "SELECT balance FROM accounts WHERE user_id = %" PRId64, user);
    return testenv_pg_query_int(&pg, sql);
}

/* A new user with amount in its account, topped up with its own token. */
static int64_t
funded_user(svc_arena_t *arena, int64_t amount)
{
    int64_t user = next_user++;
    const char *md[2];
    svc_call_opts_t o = with_auth(bearer_of(arena, user), md);
    svc_err_t err;

    if (svc_balance_top_up(balance_c, user, amount, "fund", &o, NULL, &err) != 0) {
        fail_msg("top-up with the user's own token: %s %s", svc_status_name(err.code), err.msg);
    }
    assert_int_equal(stored_balance(user), amount);
    return user;
}

/* A concert of one schedule of 10 seats at PRICE on c: its schedule id. */
static int64_t
new_schedule(svc_client_t *c, svc_arena_t *arena)
{
    Reservation__V1__CreateConcertRequest req = RESERVATION__V1__CREATE_CONCERT_REQUEST__INIT;
    Reservation__V1__ScheduleSpec spec = RESERVATION__V1__SCHEDULE_SPEC__INIT;
    Reservation__V1__ScheduleSpec *specs[] = {&spec};
    ProtobufCMessage *out = NULL;
    const char *md[2];
    svc_call_opts_t o = with_auth("Bearer " ADMIN, md);
    svc_err_t err;

    spec.starts_at_ms = svc_now_unix_ms() + 86400000;
    spec.seat_count = 10;
    spec.seat_price = PRICE;
    req.title = "identity";
    req.schedules = specs;
    req.n_schedules = 1;
    if (svc_client_unary(c, RSV("CreateConcert"), &req.base,
                         &reservation__v1__create_concert_response__descriptor, arena, &out, &o,
                         &err) != 0) {
        fail_msg("CreateConcert: %s %s", svc_status_name(err.code), err.msg);
    }
    return ((Reservation__V1__CreateConcertResponse *)out)->concert->schedules[0]->id;
}

static int
hold(svc_client_t *c, svc_arena_t *arena, int64_t user, int64_t schedule, int32_t seat,
     int64_t *reservation_id, svc_err_t *err)
{
    Reservation__V1__HoldSeatsRequest req = RESERVATION__V1__HOLD_SEATS_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    const char *md[2];
    svc_call_opts_t o = with_auth(bearer_of(arena, user), md);
    int rc;

    req.user_id = user;
    req.schedule_id = schedule;
    req.seat_numbers = &seat;
    req.n_seat_numbers = 1;
    rc = svc_client_unary(c, RSV("HoldSeats"), &req.base,
                          &reservation__v1__hold_seats_response__descriptor, arena, &out, &o, err);
    if (rc == 0) {
        *reservation_id = ((Reservation__V1__HoldSeatsResponse *)out)->reservation->id;
    }
    return rc;
}

/* ---------- tests ---------- */

static void
test_trusted_reservation_svc_pays_for_user(void **state)
{
    svc_arena_t *arena = svc_arena_create();
    int64_t user = funded_user(arena, 10000), schedule = new_schedule(rsv_c, arena), id = 0;
    Reservation__V1__PayReservationRequest req = RESERVATION__V1__PAY_RESERVATION_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    const char *md[2];
    svc_call_opts_t o = with_auth(bearer_of(arena, user), md);
    svc_err_t err;

    (void)state;
    /* The seat lock: lock-svc lets reservation-svc take seat:* by its certificate. */
    if (hold(rsv_c, arena, user, schedule, 1, &id, &err) != 0) {
        fail_msg("hold: %s %s", svc_status_name(err.code), err.msg);
    }
    /* The payment: balance-svc lets reservation-svc Authorize and Capture for the user. */
    req.reservation_id = id;
    req.user_id = user;
    req.idempotency_key = "pay";
    if (svc_client_unary(rsv_c, RSV("PayReservation"), &req.base,
                         &reservation__v1__pay_reservation_response__descriptor, arena, &out, &o,
                         &err) != 0) {
        fail_msg("pay: %s %s", svc_status_name(err.code), err.msg);
    }
    assert_int_equal(((Reservation__V1__PayReservationResponse *)out)->balance, 10000 - PRICE);
    assert_int_equal(stored_balance(user), 10000 - PRICE);
    svc_arena_destroy(arena);
}

static void
test_untrusted_certificate_cannot_act_for_another(void **state)
{
    svc_arena_t *arena = svc_arena_create();
    int64_t victim = funded_user(arena, 5000), stranger = funded_user(arena, 100);
    const char *md[2];
    svc_call_opts_t none = with_auth(NULL, md), theirs = with_auth(bearer_of(arena, stranger), md);
    svc_lock_opts_t lopts = {.owner = "client", .lease_ms = 300000};
    svc_lock_t lock;
    svc_err_t err;

    (void)state;
    /* The client certificate is verified, but its name (client) is not trusted. */
    assert_int_equal(svc_balance_spend(balance_c, victim, 5000, "s", "x", &none, NULL, &err), -1);
    assert_int_equal(err.code, SVC_UNAUTHENTICATED);
    assert_int_equal(svc_balance_spend(balance_c, victim, 5000, "s", "x", &theirs, NULL, &err), -1);
    assert_int_equal(err.code, SVC_PERMISSION_DENIED);
    assert_int_equal(stored_balance(victim), 5000);
    assert_int_equal(svc_lock_acquire(lock_c, "seat:1:1", &lopts, &lock, &err), -1);
    assert_int_equal(err.code, SVC_PERMISSION_DENIED);
    svc_arena_destroy(arena);
}

static void
test_untrusted_service_cannot_hold(void **state)
{
    svc_arena_t *arena = svc_arena_create();
    int64_t user = funded_user(arena, 5000), schedule = new_schedule(rogue_c, arena), id = 0;
    testenv_pg_t rogue_db;
    char sql[160];
    svc_err_t err;

    (void)state;
    /* rogue-svc's certificate is valid but not trusted: neither balance-svc nor lock-svc
     * lets it act for the user, whose token it does not pass on. */
    assert_int_equal(hold(rogue_c, arena, user, schedule, 1, &id, &err), -1);
    assert_int_not_equal(err.code, SVC_OK);
    rogue_db = pg;
    snprintf(rogue_db.conninfo, sizeof(rogue_db.conninfo),
             "host=127.0.0.1 port=%d user=postgres dbname=rogue", pg.port);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM seats WHERE status <> 1 AND schedule_id = %" PRId64, schedule);
    assert_int_equal(testenv_pg_query_int(&rogue_db, sql), 0);
    assert_int_equal(testenv_pg_query_int(&rogue_db, "SELECT count(*) FROM reservations"), 0);
    assert_int_equal(stored_balance(user), 5000);
    svc_arena_destroy(arena);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trusted_reservation_svc_pays_for_user),
        cmocka_unit_test(test_untrusted_certificate_cannot_act_for_another),
        cmocka_unit_test(test_untrusted_service_cannot_hold),
    };

    if (argc != 5) {
        fprintf(stderr, "usage: %s RESERVATION_SVC BALANCE_SVC LOCK_SVC CERTS_SH\n", argv[0]);
        return 2;
    }
    rsv_path = argv[1];
    balance_path = argv[2];
    lock_path = argv[3];
    certs_sh = argv[4];
    return testenv_group_result(
        cmocka_run_group_tests(tests, setup, testenv_group_teardown(teardown)));
}
