/*
 * test_balance_flood.c: a flood against a real balance-svc capped at a few
 * hundred calls in flight (issue 14, "limits and shedding"). 20 000 TopUps,
 * each with a key of its own, are started asynchronously at once from one
 * client (127.0.0.1, one connection) against an instance with MAX_IN_FLIGHT
 * 300 and MAX_IN_FLIGHT_PER_PEER 250, over a real PostgreSQL, Redis and
 * lock-svc. While it lasts:
 *
 *   - health Check answers SERVING, each within HEALTH_MS;
 *   - a normal client on another address (IPv6 ::1: another peer) gets its
 *     TopUps through, retrying on RESOURCE_EXHAUSTED, each within NORMAL_MS;
 *   - the service's resident memory (VmRSS, sampled every 10 ms) grows by
 *     less than rss_bound_mb() over what it had after a warm-up.
 *
 * Every flood call ends OK or RESOURCE_EXHAUSTED (no UNAVAILABLE, UNKNOWN,
 * INTERNAL, ABORTED nor a deadline), and afterwards the ledger holds every
 * TopUp answered OK exactly once with its amount, none answered
 * RESOURCE_EXHAUSTED, and every balance is the sum of what was acknowledged.
 *
 * The memory bound: a call in flight costs ~10-15 KB (gRPC's call and
 * stream, libsvc's call, its arena, a pool task), so 300 admitted and the
 * 600 streams one connection may have open (MAX_STREAMS' default: twice
 * MAX_IN_FLIGHT) are ~10 MB, plus what a burst brings (malloc's per-thread
 * caches, worker threads, the connection's buffers). Without the bounds,
 * all 20 000 are in the server at once: +187 to +274 MB, over the bound,
 * with normal TopUps taking up to 2.9 s and some ABORTED for want of their
 * lock. To see it: FLOOD_MAX_IN_FLIGHT=100000 FLOOD_PER_PEER=0 (those
 * settings for the service; MAX_STREAMS follows MAX_IN_FLIGHT), or pass a
 * balance-svc built before the bounds as argv[1]. FLOOD_TRACE=1 prints the
 * RSS every 200 ms.
 *
 * argv[1] is balance-svc, argv[2] lock-svc. Skipped under ThreadSanitizer.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "balance/v1/balance.pb-c.h"
#include "balance_stack.h"
#include "grpc/health/v1/health.pb-c.h"
#include "svc/timer.h"

#define FLOOD_CALLS 20000
#define FLOOD_USERS 50
#define CAP "300"
#define PER_PEER "250"
#define CALL_MS 120000  /* no flood call may end by its deadline */
#define HEALTH_MS 1000  /* each health Check during the flood answers within this */
#define NORMAL_MS 3000  /* each of the normal client's TopUps gets through within this */
#define PROBE_GAP_MS 50 /* between two probes */
#define RSS_SAMPLE_MS 10

static balance_stack_t stack;

/* ---------- the service's memory ---------- */

static int64_t
rss_kb(pid_t pid)
{
    char path[64], line[256];
    int64_t kb = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    if ((f = fopen(path, "r")) == NULL) {
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtoll(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

/*
 * How much the service's RSS may grow over its warm level during the flood,
 * in MB. Measured on a 2-CPU machine, with the bounds / without them (20 000
 * calls at once over one connection): Release +21 / +187..274 MB; ASan (with
 * ASAN_SERVICE_OPTIONS) +78..112 / +364 MB: its allocator keeps more.
 */
static int64_t
rss_bound_mb(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return 192;
#else
    return 64;
#endif
}

/*
 * AddressSanitizer keeps freed memory in a quarantine of 256 MB and gives
 * little back: the service's RSS would measure that, not what it holds. A
 * small quarantine, and free pages given back, for the service only.
 */
#define ASAN_SERVICE_OPTIONS                                                                       \
    "quarantine_size_mb=8:thread_local_quarantine_size_kb=64:allocator_release_to_os_interval_ms=" \
    "100"

typedef struct {
    pid_t pid;
    atomic_bool stop;
    atomic_llong peak_kb;
} sampler_t;

static void *
sampler_main(void *arg)
{
    sampler_t *s = arg;

    bool trace = getenv("FLOOD_TRACE") != NULL;
    for (int n = 0; !atomic_load(&s->stop); n++) {
        int64_t kb = rss_kb(s->pid);
        if (kb > atomic_load(&s->peak_kb)) {
            atomic_store(&s->peak_kb, kb);
        }
        if (trace && n % 20 == 0) {
            fprintf(stderr, "  rss %lld MB\n", (long long)(kb / 1024));
        }
        svc_sleep_ms(RSS_SAMPLE_MS);
    }
    return NULL;
}

/* ---------- the flood ---------- */

typedef struct flood flood_t;

typedef struct {
    flood_t *flood;
    int i;
    int64_t user, amount;
    svc_arena_t *arena;
    svc_status_t code;
    char msg[SVC_ERR_MSG_MAX];
} flood_call_t;

struct flood {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    flood_call_t *calls;
    atomic_bool over;
};

static void
flood_done(ProtobufCMessage *resp, const svc_err_t *err, void *arg)
{
    flood_call_t *c = arg;
    flood_t *f = c->flood;

    (void)resp;
    c->code = err->code;
    if (err->code != SVC_OK) {
        snprintf(c->msg, sizeof(c->msg), "%s", err->msg);
    }
    pthread_mutex_lock(&f->mu);
    if (++f->done == FLOOD_CALLS) {
        pthread_cond_broadcast(&f->cv);
    }
    pthread_mutex_unlock(&f->mu);
}

static void
flood_key(char *buf, size_t len, int i)
{
    snprintf(buf, len, "flood-%d", i);
}

/* Starts every call of the flood at once (none waits for another), then waits for all. */
static void
flood_run(flood_t *f, svc_client_t *c, const int64_t *users)
{
    svc_call_opts_t opts = {.timeout_ms = CALL_MS};

    for (int i = 0; i < FLOOD_CALLS; i++) {
        Balance__V1__TopUpRequest req = BALANCE__V1__TOP_UP_REQUEST__INIT;
        flood_call_t *call = &f->calls[i];
        char key[32];

        call->flood = f;
        call->i = i;
        call->user = users[i % FLOOD_USERS];
        call->amount = 1 + i % 97;
        call->code = SVC_UNKNOWN;
        assert_non_null(call->arena = svc_arena_create());
        flood_key(key, sizeof(key), i);
        req.user_id = call->user;
        req.amount = call->amount;
        req.idempotency_key = key;
        svc_client_unary_async(c, "/balance.v1.BalanceService/TopUp", &req.base,
                               &balance__v1__top_up_response__descriptor, call->arena, &opts,
                               flood_done, call);
    }
    pthread_mutex_lock(&f->mu);
    while (f->done < FLOOD_CALLS) {
        pthread_cond_wait(&f->cv, &f->mu);
    }
    pthread_mutex_unlock(&f->mu);
}

/* ---------- what else happens during the flood ---------- */

typedef struct {
    flood_t *flood;
    svc_client_t *health, *normal;
    int64_t normal_user;
    /* results */
    int checks, not_serving;
    int64_t health_max_ms;
    int normal_ok, normal_failed, normal_retries;
    int64_t normal_max_ms, normal_sum;
    char normal_err[SVC_ERR_MSG_MAX + 64];
} probe_t;

static int
health_check(svc_client_t *c, int *status, svc_err_t *err)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    svc_arena_t *arena = svc_arena_create();
    svc_call_opts_t opts = {.timeout_ms = 10000};
    ProtobufCMessage *out;
    int rc;

    req.service = "";
    rc = svc_client_unary(c, "/grpc.health.v1.Health/Check", &req.base,
                          &grpc__health__v1__health_check_response__descriptor, arena, &out, &opts,
                          err);
    if (rc == 0) {
        *status = ((Grpc__Health__V1__HealthCheckResponse *)out)->status;
    }
    svc_arena_destroy(arena);
    return rc;
}

/* One TopUp of the normal client: retried on RESOURCE_EXHAUSTED (same key) until it is in. */
static void
normal_top_up(probe_t *p, int n)
{
    svc_call_opts_t opts = {.timeout_ms = 10000};
    int64_t t0 = svc_now_mono_ms(), ms;
    svc_balance_result_t res;
    char key[32];
    svc_err_t err;
    int rc;

    snprintf(key, sizeof(key), "normal-%d", n);
    while ((rc = svc_balance_top_up(p->normal, p->normal_user, 10, key, &opts, &res, &err)) != 0 &&
           err.code == SVC_RESOURCE_EXHAUSTED && svc_now_mono_ms() - t0 < 4 * NORMAL_MS) {
        p->normal_retries++;
        svc_sleep_ms(5);
    }
    ms = svc_now_mono_ms() - t0;
    if (rc != 0) {
        p->normal_failed++;
        snprintf(p->normal_err, sizeof(p->normal_err), "%s: %s", svc_status_name(err.code),
                 err.msg);
        return;
    }
    p->normal_ok++;
    p->normal_sum += 10;
    p->normal_max_ms = ms > p->normal_max_ms ? ms : p->normal_max_ms;
}

static void *
probe_main(void *arg)
{
    probe_t *p = arg;

    for (int n = 0; !atomic_load(&p->flood->over); n++) {
        int64_t t0 = svc_now_mono_ms(), ms;
        int status = 0;
        svc_err_t err;

        if (health_check(p->health, &status, &err) != 0 ||
            status != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING) {
            p->not_serving++;
        }
        ms = svc_now_mono_ms() - t0;
        p->health_max_ms = ms > p->health_max_ms ? ms : p->health_max_ms;
        p->checks++;
        normal_top_up(p, n);
        svc_sleep_ms(PROBE_GAP_MS);
    }
    return NULL;
}

/* ---------- checks from the database ---------- */

/*
 * Every flood TopUp answered OK is in the ledger exactly once with its
 * amount; none answered otherwise is. Returns the number of wrong rows and
 * missing ones (0 when all is well), printing the first few.
 */
static int
ledger_mismatches(const flood_t *f)
{
    PGconn *db = PQconnectdb(stack.pg.conninfo);
    PGresult *r;
    int *seen = calloc(FLOOD_CALLS, sizeof(*seen)), bad = 0;

    assert_non_null(seen);
    assert_int_equal(PQstatus(db), CONNECTION_OK);
    r = PQexec(db, "SELECT substr(idempotency_key, 7)::int, user_id, amount, kind FROM ledger"
                   " WHERE idempotency_key LIKE 'flood-%'");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    for (int row = 0; row < PQntuples(r); row++) {
        int i = atoi(PQgetvalue(r, row, 0));
        int64_t user = strtoll(PQgetvalue(r, row, 1), NULL, 10);
        int64_t amount = strtoll(PQgetvalue(r, row, 2), NULL, 10);
        int kind = atoi(PQgetvalue(r, row, 3));
        if (i < 0 || i >= FLOOD_CALLS || seen[i]++ > 0 || f->calls[i].code != SVC_OK ||
            user != f->calls[i].user || amount != f->calls[i].amount ||
            kind != BALANCE_LEDGER_TOP_UP) {
            if (bad++ < 5) {
                fprintf(stderr, "ledger row of flood-%d: answered %s, seen %d times\n", i,
                        i >= 0 && i < FLOOD_CALLS ? svc_status_name(f->calls[i].code) : "?",
                        i >= 0 && i < FLOOD_CALLS ? seen[i] : 0);
            }
        }
    }
    PQclear(r);
    PQfinish(db);
    for (int i = 0; i < FLOOD_CALLS; i++) {
        if (f->calls[i].code == SVC_OK && seen[i] == 0 && bad++ < 5) {
            fprintf(stderr, "flood-%d was answered OK and is not in the ledger\n", i);
        }
    }
    free(seen);
    return bad;
}

/* ---------- the test ---------- */

static const char *
env_or(const char *name, const char *def)
{
    const char *v = getenv(name);

    return v != NULL && v[0] != '\0' ? v : def;
}

static bool
ipv6_loopback(void)
{
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    bool ok = fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;

    if (fd >= 0) {
        close(fd);
    }
    return ok;
}

/* Static: a failing test leaves it reachable (no leak report on top of the failure). */
static flood_t f;

static void
test_flood_is_shed_and_nothing_acknowledged_is_lost(void **state)
{
    char cap_env[64], peer_env[64], lock_env[96], db_env[600], listen[64], target[96];
    char asan_env[512];
    /*
     * LOCK_WAIT_MS: balance-svc waits for its own account locks from lock-svc,
     * which a machine loaded by sanitizers and other jobs may answer slowly;
     * that is not what this test is about (its default of 5 s made a few
     * TopUps ABORTED on such a machine).
     */
    const char *env[] = {
        cap_env,  peer_env, lock_env, db_env, "LOG_LEVEL=warn", "LOCK_WAIT_MS=20000",
        asan_env, NULL};
    const char *args[] = {listen, NULL};
    bool v6 = ipv6_loopback();
    probe_t probe = {.flood = &f};
    sampler_t sampler = {.stop = false};
    int64_t users[FLOOD_USERS], expected[FLOOD_USERS] = {0}, warm_kb;
    int n_ok = 0, n_shed = 0, n_other = 0, first_other = -1;
    testenv_proc_t svc = {0};
    svc_client_t *flood_client;
    pthread_t sampler_thread, probe_thread;
    svc_err_t err;

    (void)state;
#if defined(__SANITIZE_THREAD__)
    /*
     * Under ThreadSanitizer everything runs 5 to 15 times slower: 20 000
     * calls took over two minutes and its time and memory bounds mean
     * nothing. The runtime's shedding paths run under it in libsvc.runtime.
     */
    fprintf(stderr, "flood: not under ThreadSanitizer (libsvc.runtime covers shedding there)\n");
    skip();
#endif
    snprintf(asan_env, sizeof(asan_env), "ASAN_OPTIONS=%s%s%s",
             getenv("ASAN_OPTIONS") != NULL ? getenv("ASAN_OPTIONS") : "",
             getenv("ASAN_OPTIONS") != NULL ? ":" : "", ASAN_SERVICE_OPTIONS);
    snprintf(cap_env, sizeof(cap_env), "MAX_IN_FLIGHT=%s", env_or("FLOOD_MAX_IN_FLIGHT", CAP));
    /* The normal client is another peer only over IPv6; without it, no per-peer bound. */
    snprintf(peer_env, sizeof(peer_env), "MAX_IN_FLIGHT_PER_PEER=%s",
             env_or("FLOOD_PER_PEER", v6 ? PER_PEER : "0"));
    snprintf(lock_env, sizeof(lock_env), "LOCK_SVC_ADDR=%s", stack.lock.addr);
    snprintf(db_env, sizeof(db_env), "DATABASE_URL=%s", stack.pg.conninfo);
    assert_true((svc.port = testenv_free_port()) > 0);
    snprintf(listen, sizeof(listen), "--listen-addr=%s:%d", v6 ? "[::]" : "127.0.0.1", svc.port);
    assert_int_equal(testenv_proc_start(&svc, stack.balance_path, args, env), 0);
    assert_non_null(flood_client = svc_client_get(svc.addr, &err));
    snprintf(target, sizeof(target), "ipv4:127.0.0.1:%d", svc.port);
    assert_non_null(probe.health = svc_client_get(target, &err));
    snprintf(target, sizeof(target), v6 ? "ipv6:[::1]:%d" : "ipv4:127.0.0.1:%d,127.0.0.1:%d",
             svc.port, svc.port);
    assert_non_null(probe.normal = svc_client_get(target, &err));
    fprintf(stderr, "flood: %s, %s; the normal client over %s\n", cap_env, peer_env,
            v6 ? "IPv6 (another peer)" : "IPv4 (the same peer: no IPv6 here)");

    /* Accounts, and a warm-up: the service's threads, caches and connections are made. */
    for (int u = 0; u < FLOOD_USERS; u++) {
        svc_balance_result_t res;
        users[u] = balance_stack_new_user();
        assert_int_equal(svc_balance_top_up(flood_client, users[u], 1000, "open", NULL, &res, &err),
                         0);
        expected[u] = 1000;
    }
    probe.normal_user = balance_stack_new_user();
    for (int i = 0; i < 500; i++) {
        svc_balance_result_t res;
        char key[32];
        snprintf(key, sizeof(key), "warm-%d", i);
        assert_int_equal(
            svc_balance_top_up(probe.normal, probe.normal_user, 1, key, NULL, &res, &err), 0);
    }
    svc_sleep_ms(200);
    warm_kb = rss_kb(svc.pid);
    assert_true(warm_kb > 0);

    f.calls = calloc(FLOOD_CALLS, sizeof(*f.calls));
    assert_non_null(f.calls);
    pthread_mutex_init(&f.mu, NULL);
    pthread_cond_init(&f.cv, NULL);
    sampler.pid = svc.pid;
    atomic_store(&sampler.peak_kb, warm_kb);
    assert_int_equal(pthread_create(&sampler_thread, NULL, sampler_main, &sampler), 0);
    assert_int_equal(pthread_create(&probe_thread, NULL, probe_main, &probe), 0);
    int64_t t0 = svc_now_mono_ms();
    flood_run(&f, flood_client, users);
    int64_t flood_ms = svc_now_mono_ms() - t0;
    atomic_store(&f.over, true);
    pthread_join(probe_thread, NULL);
    atomic_store(&sampler.stop, true);
    pthread_join(sampler_thread, NULL);

    for (int i = 0; i < FLOOD_CALLS; i++) {
        const flood_call_t *c = &f.calls[i];
        if (c->code == SVC_OK) {
            n_ok++;
            for (int u = 0; u < FLOOD_USERS; u++) {
                expected[u] += users[u] == c->user ? c->amount : 0;
            }
        } else if (c->code == SVC_RESOURCE_EXHAUSTED) {
            n_shed++;
        } else if (n_other++ == 0) {
            first_other = i;
        }
    }
    int64_t peak_kb = atomic_load(&sampler.peak_kb);
    fprintf(stderr,
            "flood: %d TopUps at once in %lld ms: %d OK, %d RESOURCE_EXHAUSTED, %d other; "
            "RSS %lld MB after the warm-up, peak +%lld MB (bound +%lld MB); %d health checks, "
            "slowest %lld ms, %d not SERVING; normal client: %d TopUps in, slowest %lld ms "
            "(%d retries), %d failed\n",
            FLOOD_CALLS, (long long)flood_ms, n_ok, n_shed, n_other, (long long)(warm_kb / 1024),
            (long long)((peak_kb - warm_kb) / 1024), (long long)rss_bound_mb(), probe.checks,
            (long long)probe.health_max_ms, probe.not_serving, probe.normal_ok,
            (long long)probe.normal_max_ms, probe.normal_retries, probe.normal_failed);

    /* Memory bounded (the first thing to fail without the bounds). */
    assert_true(peak_kb - warm_kb < rss_bound_mb() * 1024);
    /* Every call was answered OK or refused outright. */
    if (n_other > 0) {
        fail_msg("%d flood calls ended otherwise, the first %s: %s", n_other,
                 svc_status_name(f.calls[first_other].code), f.calls[first_other].msg);
    }
    assert_true(n_shed > 0); /* the cap was met */
    assert_true(n_ok > 0);
    for (int i = 0; i < FLOOD_CALLS; i++) {
        if (f.calls[i].code == SVC_RESOURCE_EXHAUSTED &&
            strstr(f.calls[i].msg, "too many calls ") != f.calls[i].msg) { /* ours, not OOM */
            fail_msg("flood-%d refused with \"%s\"", i, f.calls[i].msg);
        }
    }
    /* Responsive throughout. */
    assert_true(probe.checks > 0);
    assert_int_equal(probe.not_serving, 0);
    assert_true(probe.health_max_ms < HEALTH_MS);
    if (probe.normal_failed > 0) {
        fail_msg("the normal client's TopUp failed: %s", probe.normal_err);
    }
    assert_true(probe.normal_ok > 0);
    assert_true(probe.normal_max_ms < NORMAL_MS);
    /* Nothing acknowledged is lost, nothing refused is applied. */
    assert_int_equal(ledger_mismatches(&f), 0);
    for (int u = 0; u < FLOOD_USERS; u++) {
        assert_int_equal(balance_stack_stored_balance(&stack, users[u]), expected[u]);
    }
    assert_int_equal(balance_stack_stored_balance(&stack, probe.normal_user),
                     500 + probe.normal_sum);
    assert_int_equal(balance_stack_broken(&stack), 0);
    assert_true(balance_stack_log_contains(&svc, "refusing /balance.v1.BalanceService/TopUp"));

    assert_int_equal(testenv_proc_stop(&svc), 0);
    for (int i = 0; i < FLOOD_CALLS; i++) {
        svc_arena_destroy(f.calls[i].arena);
    }
    pthread_cond_destroy(&f.cv);
    pthread_mutex_destroy(&f.mu);
    free(f.calls);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flood_is_shed_and_nothing_acknowledged_is_lost),
    };
    /* The stack's PostgreSQL, Redis and lock-svc; the test starts its own balance-svc. */
    const balance_stack_config_t config = {.instances = 0};

    return balance_stack_main(&stack, &config, argc, argv, tests, sizeof(tests) / sizeof(tests[0]));
}
