/*
 * test_tls.c: TLS and mTLS between real processes. Makes two private CAs
 * with deploy/local/certs.sh (argv[2]), starts svctest-server (argv[1]) with
 * TLS_* settings, and calls it through libsvc's client with each kind of
 * client: the one that holds a certificate of the right CA gets through and
 * is named to the handler; plaintext, no certificate, another CA's
 * certificate, and a client that does not trust the server's CA are all
 * refused. Also the settings a server refuses to start with.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "svc/client.h"
#include "svc/tls.h"
#include "svctest/v1/svctest.pb-c.h"
#include "testenv.h"

static const char *server_path, *certs_path;
static char dir[PATH_MAX];      /* temp dir of both CAs */
static char good[PATH_MAX + 8]; /* CA A: the server's and its clients' */
static char evil[PATH_MAX + 8]; /* CA B: another CA, same names */

static void
cert_path(char *out, size_t size, const char *ca_dir, const char *file)
{
    int n = snprintf(out, size, "%s/%s", ca_dir, file);
    assert_true(n > 0 && (size_t)n < size);
}

/* TLS options from files of one CA dir; NULL file name leaves it unset. */
typedef struct {
    char cert[PATH_MAX + 32], key[PATH_MAX + 32], client_ca[PATH_MAX + 32], ca[PATH_MAX + 32];
    svc_tls_opts_t o;
} tls_files_t;

static void
tls_files(tls_files_t *t, const char *cert_dir, const char *name, const char *client_ca_dir,
          const char *ca_dir)
{
    char file[64];

    memset(t, 0, sizeof(*t));
    if (name != NULL) {
        snprintf(file, sizeof(file), "%s.pem", name);
        cert_path(t->cert, sizeof(t->cert), cert_dir, file);
        snprintf(file, sizeof(file), "%s-key.pem", name);
        cert_path(t->key, sizeof(t->key), cert_dir, file);
        t->o.cert_file = t->cert;
        t->o.key_file = t->key;
    }
    if (client_ca_dir != NULL) {
        cert_path(t->client_ca, sizeof(t->client_ca), client_ca_dir, "ca.pem");
        t->o.client_ca_file = t->client_ca;
    }
    if (ca_dir != NULL) {
        cert_path(t->ca, sizeof(t->ca), ca_dir, "ca.pem");
        t->o.ca_file = t->ca;
    }
}

/* From now on this process calls as t says (fresh channels). */
static void
client_as(const tls_files_t *t)
{
    svc_err_t err;

    svc_client_release_all();
    assert_int_equal(svc_tls_client_configure(&t->o, &err), 0);
}

/* One Echo; returns its status code, *names the peer names the server saw. */
static svc_status_t
echo(const char *target, char *names, size_t names_size)
{
    Svctest__V1__EchoRequest req = SVCTEST__V1__ECHO_REQUEST__INIT;
    Svctest__V1__EchoResponse *resp;
    svc_call_opts_t opts = {.timeout_ms = 5000};
    svc_arena_t *arena = svc_arena_create();
    svc_err_t err;
    svc_client_t *c = svc_client_get(target, &err);

    assert_non_null(c);
    req.message = "over tls";
    if (svc_client_unary(c, "/svctest.v1.TestService/Echo", &req.base,
                         &svctest__v1__echo_response__descriptor, arena, (ProtobufCMessage **)&resp,
                         &opts, &err) != 0) {
        svc_arena_destroy(arena);
        return err.code;
    }
    assert_string_equal(resp->message, "over tls");
    if (names != NULL) {
        names[0] = '\0';
        for (size_t i = 0; i < resp->n_peer_names; i++) {
            size_t len = strlen(names);
            snprintf(names + len, names_size - len, "%s%s", i > 0 ? "," : "", resp->peer_names[i]);
        }
    }
    svc_arena_destroy(arena);
    return SVC_OK;
}

/* Starts the server with t's settings as its environment. */
static void
start_server(testenv_proc_t *p, const tls_files_t *t)
{
    char env[4][PATH_MAX + 64];
    const char *kv[5];
    int n = 0;

    if (t->o.cert_file != NULL) {
        snprintf(env[n], sizeof(env[n]), "TLS_CERT_FILE=%s", t->cert);
        kv[n] = env[n];
        n++;
        snprintf(env[n], sizeof(env[n]), "TLS_KEY_FILE=%s", t->key);
        kv[n] = env[n];
        n++;
    }
    if (t->o.client_ca_file != NULL) {
        snprintf(env[n], sizeof(env[n]), "TLS_CLIENT_CA_FILE=%s", t->client_ca);
        kv[n] = env[n];
        n++;
    }
    kv[n] = NULL;
    memset(p, 0, sizeof(*p));
    assert_int_equal(testenv_proc_start(p, server_path, NULL, kv), 0);
}

/* mTLS: only a client with a certificate of the server's client CA gets in. */
static void
test_mtls_refuses_every_other_client(void **state)
{
    tls_files_t server, as_good, plain, no_cert, other_ca, distrusts;
    testenv_proc_t p;
    char names[256];

    (void)state;
    tls_files(&server, good, "svctest", good, NULL);
    tls_files(&as_good, good, "client", NULL, good);
    client_as(&as_good); /* testenv's health check goes in as a good client */
    start_server(&p, &server);

    assert_int_equal(echo(p.addr, names, sizeof(names)), SVC_OK);
    /* The handler learns who called: CN, then the DNS names of the certificate. */
    assert_string_equal(names, "client,client");

    memset(&plain, 0, sizeof(plain));
    client_as(&plain);
    assert_int_equal(echo(p.addr, NULL, 0), SVC_UNAVAILABLE);

    tls_files(&no_cert, good, NULL, NULL, good);
    client_as(&no_cert);
    assert_int_equal(echo(p.addr, NULL, 0), SVC_UNAVAILABLE);

    tls_files(&other_ca, evil, "client", NULL, good);
    client_as(&other_ca);
    assert_int_equal(echo(p.addr, NULL, 0), SVC_UNAVAILABLE);

    /* The client checks the server too: one that trusts only CA B refuses it. */
    tls_files(&distrusts, evil, "client", NULL, evil);
    client_as(&distrusts);
    assert_int_equal(echo(p.addr, NULL, 0), SVC_UNAVAILABLE);

    /* And the good client still gets in afterwards. */
    client_as(&as_good);
    assert_int_equal(echo(p.addr, NULL, 0), SVC_OK);
    assert_int_equal(testenv_proc_stop(&p), 0);
}

/* TLS without client certificates: any client that trusts the CA; no names. */
static void
test_tls_without_client_certificates(void **state)
{
    tls_files_t server, no_cert, plain;
    testenv_proc_t p;
    char names[256];

    (void)state;
    tls_files(&server, good, "svctest", NULL, NULL);
    tls_files(&no_cert, good, NULL, NULL, good);
    client_as(&no_cert);
    start_server(&p, &server);
    assert_int_equal(echo(p.addr, names, sizeof(names)), SVC_OK);
    assert_string_equal(names, "");

    memset(&plain, 0, sizeof(plain));
    client_as(&plain);
    assert_int_equal(echo(p.addr, NULL, 0), SVC_UNAVAILABLE);
    assert_int_equal(testenv_proc_stop(&p), 0);
}

/* A target listing two addresses verifies each server against the first host. */
static void
test_address_list_over_mtls(void **state)
{
    tls_files_t server, as_good;
    testenv_proc_t a, b;
    char target[160];

    (void)state;
    tls_files(&server, good, "svctest", good, NULL);
    tls_files(&as_good, good, "client", NULL, good);
    client_as(&as_good);
    start_server(&a, &server);
    start_server(&b, &server);
    snprintf(target, sizeof(target), "%s,%s", a.addr, b.addr);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(echo(target, NULL, 0), SVC_OK);
    }
    assert_int_equal(testenv_proc_stop(&a), 0);
    assert_int_equal(testenv_proc_stop(&b), 0);
}

/* The answers of the parked calls below: how many came back OK, and not OK. */
static atomic_int slow_ok, slow_failed;

static void
slow_done(ProtobufCMessage *resp, const svc_err_t *err, void *arg)
{
    (void)resp;
    (void)arg;
    atomic_fetch_add(err->code == SVC_OK ? &slow_ok : &slow_failed, 1);
}

static void
set_gate(const char *target, bool open)
{
    Svctest__V1__SetGateRequest req = SVCTEST__V1__SET_GATE_REQUEST__INIT;
    ProtobufCMessage *resp;
    svc_arena_t *arena = svc_arena_create();
    svc_call_opts_t opts = {.timeout_ms = 15000};
    svc_err_t err;
    svc_client_t *c = svc_client_get(target, &err);

    req.open = open;
    /* Over a peer bound, a client retries: the bound's places come back soon. */
    for (int i = 0; i < 100; i++) {
        if (svc_client_unary(c, "/svctest.v1.TestService/SetGate", &req.base,
                             &svctest__v1__set_gate_response__descriptor, arena, &resp, &opts,
                             &err) == 0 ||
            err.code != SVC_RESOURCE_EXHAUSTED) {
            break;
        }
        usleep(20000);
    }
    if (err.code != SVC_OK) {
        fail_msg("SetGate through %s: %s %s", target, svc_status_name(err.code), err.msg);
    }
    svc_arena_destroy(arena);
}

/* Slow calls the server has taken up so far. */
static int64_t
slow_started(const char *target)
{
    Svctest__V1__StatsRequest req = SVCTEST__V1__STATS_REQUEST__INIT;
    Svctest__V1__StatsResponse *resp;
    svc_arena_t *arena = svc_arena_create();
    svc_call_opts_t opts = {.timeout_ms = 15000};
    svc_err_t err;
    int64_t n;

    for (int i = 0; i < 100; i++) {
        if (svc_client_unary(svc_client_get(target, &err), "/svctest.v1.TestService/Stats",
                             &req.base, &svctest__v1__stats_response__descriptor, arena,
                             (ProtobufCMessage **)&resp, &opts, &err) == 0 ||
            err.code != SVC_RESOURCE_EXHAUSTED) {
            break;
        }
        usleep(20000);
    }
    if (err.code != SVC_OK) {
        fail_msg("Stats through %s: %s %s", target, svc_status_name(err.code), err.msg);
    }
    n = resp->slow_started;
    svc_arena_destroy(arena);
    return n;
}

/*
 * MAX_IN_FLIGHT_PER_PEER with mTLS counts per client certificate, not per
 * address. With a bound of 2 and two calls of "client" parked, "client" is
 * refused, while "other", from the same address, gets in. A call's place
 * is given back a moment after its answer left, so "client" makes no call
 * before the two it parks, and "other" retries a refusal as a client would.
 */
static void
test_peer_bound_counts_certificates(void **state)
{
    tls_files_t server, as_client, as_other;
    testenv_proc_t p;
    char cap[] = "MAX_IN_FLIGHT_PER_PEER=2", other_target[96];
    char e1[PATH_MAX + 64], e2[PATH_MAX + 64], e3[PATH_MAX + 64];
    const char *kv[5];
    Svctest__V1__SlowRequest slow = SVCTEST__V1__SLOW_REQUEST__INIT;
    svc_call_opts_t opts = {.timeout_ms = 30000};
    svc_arena_t *arenas[2] = {svc_arena_create(), svc_arena_create()};
    svc_err_t err;

    (void)state;
    tls_files(&server, good, "svctest", good, NULL);
    tls_files(&as_client, good, "client", NULL, good);
    tls_files(&as_other, good, "other", NULL, good);
    client_as(&as_client);
    snprintf(e1, sizeof(e1), "TLS_CERT_FILE=%s", server.cert);
    snprintf(e2, sizeof(e2), "TLS_KEY_FILE=%s", server.key);
    snprintf(e3, sizeof(e3), "TLS_CLIENT_CA_FILE=%s", server.client_ca);
    kv[0] = e1, kv[1] = e2, kv[2] = e3, kv[3] = cap, kv[4] = NULL;
    memset(&p, 0, sizeof(p));
    assert_int_equal(testenv_proc_start(&p, server_path, NULL, kv), 0);

    /* "other", on a channel of its own (another spelling of the same address), closes the gate. */
    assert_int_equal(svc_tls_client_configure(&as_other.o, &err), 0);
    snprintf(other_target, sizeof(other_target), "ipv4:%s", p.addr);
    set_gate(other_target, false);
    /* "client" (its channel made by the health checks of the start) parks two calls. */
    slow.delay_ms = 25000;
    slow.gated = true;
    slow.park = true;
    for (int i = 0; i < 2; i++) {
        svc_client_unary_async(svc_client_get(p.addr, &err), "/svctest.v1.TestService/Slow",
                               &slow.base, &svctest__v1__slow_response__descriptor, arenas[i],
                               &opts, slow_done, NULL);
    }
    for (int i = 0; i < 500 && slow_started(other_target) < 2; i++) {
        usleep(10000);
    }
    assert_int_equal(slow_started(other_target), 2);
    assert_int_equal(atomic_load(&slow_failed), 0);

    /* "client" is at its bound; "other", from the same address, is not. */
    assert_int_equal(echo(p.addr, NULL, 0), SVC_RESOURCE_EXHAUSTED);
    svc_status_t code = SVC_RESOURCE_EXHAUSTED;
    for (int i = 0; i < 100 && (code = echo(other_target, NULL, 0)) == SVC_RESOURCE_EXHAUSTED;
         i++) {
        usleep(20000);
    }
    assert_int_equal(code, SVC_OK);

    set_gate(other_target, true);
    for (int i = 0; i < 1000 && atomic_load(&slow_ok) + atomic_load(&slow_failed) < 2; i++) {
        usleep(10000);
    }
    assert_int_equal(atomic_load(&slow_ok), 2);
    svc_arena_destroy(arenas[0]);
    svc_arena_destroy(arenas[1]);
    assert_int_equal(testenv_proc_stop(&p), 0);
}

/* Runs the server with one setting and returns its exit status. */
static int
server_exit_status(const char *kv1, const char *kv2, char *out, size_t out_size)
{
    char cmd[4 * PATH_MAX];
    FILE *f;
    size_t n;
    int status;

    /* timeout: a server that starts after all would otherwise keep the pipe open. */
    snprintf(cmd, sizeof(cmd), "timeout 20 env %s %s '%s' --listen-addr 127.0.0.1:0 2>&1", kv1,
             kv2 != NULL ? kv2 : "", server_path);
    f = popen(cmd, "r");
    assert_non_null(f);
    n = fread(out, 1, out_size - 1, f);
    out[n] = '\0';
    status = pclose(f);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void
test_bad_settings_stop_start_up(void **state)
{
    char kv1[PATH_MAX + 64], kv2[PATH_MAX + 64], out[1024];

    (void)state;
    snprintf(kv1, sizeof(kv1), "TLS_CERT_FILE=%s/svctest.pem", good);
    assert_int_equal(server_exit_status(kv1, NULL, out, sizeof(out)), 2);
    assert_non_null(strstr(out, "TLS_CERT_FILE is set without TLS_KEY_FILE"));

    snprintf(kv2, sizeof(kv2), "TLS_KEY_FILE=%s/client-key.pem", good);
    assert_int_equal(server_exit_status(kv1, kv2, out, sizeof(out)), 2);
    assert_non_null(strstr(out, "is not the key of the certificate"));

    snprintf(kv2, sizeof(kv2), "TLS_KEY_FILE=%s/nonexistent-key.pem", good);
    assert_int_equal(server_exit_status(kv1, kv2, out, sizeof(out)), 2);
    assert_non_null(strstr(out, "No such file"));

    snprintf(kv1, sizeof(kv1), "TLS_CLIENT_CA_FILE=%s/ca.pem", good);
    assert_int_equal(server_exit_status(kv1, NULL, out, sizeof(out)), 2);
    assert_non_null(strstr(out, "TLS_CLIENT_CA_FILE needs TLS_CERT_FILE"));

    /* A key where a CA belongs: no certificate in it. */
    snprintf(kv1, sizeof(kv1), "TLS_CA_FILE=%s/client-key.pem", good);
    assert_int_equal(server_exit_status(kv1, NULL, out, sizeof(out)), 2);
    assert_non_null(strstr(out, "no PEM certificate"));
}

static int
make_cas(void **state)
{
    char cmd[4 * PATH_MAX];

    (void)state;
    snprintf(dir, sizeof(dir), "%s/svc-tls-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (mkdtemp(dir) == NULL) {
        return -1;
    }
    snprintf(good, sizeof(good), "%s/a", dir);
    snprintf(evil, sizeof(evil), "%s/b", dir);
    snprintf(cmd, sizeof(cmd),
             "'%s' '%s' svctest --client client other >/dev/null && CERT_CN='another CA' '%s' '%s' "
             "--client client "
             ">/dev/null",
             certs_path, good, certs_path, evil);
    return system(cmd) == 0 ? 0 : -1;
}

static int
remove_cas(void **state)
{
    char cmd[PATH_MAX + 16];

    (void)state;
    svc_client_release_all();
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mtls_refuses_every_other_client),
        cmocka_unit_test(test_tls_without_client_certificates),
        cmocka_unit_test(test_address_list_over_mtls),
        cmocka_unit_test(test_peer_bound_counts_certificates),
        cmocka_unit_test(test_bad_settings_stop_start_up),
    };

    if (argc != 3) {
        fprintf(stderr, "usage: %s path/to/svctest-server path/to/certs.sh\n", argv[0]);
        return 2;
    }
    server_path = argv[1];
    certs_path = argv[2];
    testenv_cleanup_on_exit(); /* a failed assertion must not leave servers behind */
    return cmocka_run_group_tests(tests, make_cas, remove_cas);
}
