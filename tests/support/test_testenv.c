/*
 * test_testenv.c: the test-support library against real servers: Redis and
 * PostgreSQL from Debian, and svctest-server (path in argv[1]).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "grpc/health/v1/health.pb-c.h"
#include "svc/client.h"
#include "svc/timer.h"
#include "testenv.h"
#include "testenv_internal.h"

static const char *server_path;

static void
test_free_port(void **state)
{
    int a = testenv_free_port(), b = testenv_free_port();

    (void)state;
    assert_true(a >= 20000 && a <= 31999);
    assert_true(b >= 20000 && b <= 31999);
    assert_int_not_equal(a, b);
}

/* Runs one command on a new connection; returns the reply (caller frees) or NULL. */
static redisReply *
redis_cmd(int port, const char *fmt, ...)
{
    struct timeval tv = {0, 500000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    redisReply *reply = NULL;
    va_list ap;

    if (c != NULL && c->err == 0 && redisSetTimeout(c, tv) == REDIS_OK) {
        va_start(ap, fmt);
        reply = redisvCommand(c, fmt, ap);
        va_end(ap);
    }
    if (c != NULL) {
        redisFree(c);
    }
    return reply;
}

static void
test_redis_lifecycle(void **state)
{
    testenv_redis_t r = {0};
    redisReply *reply;
    char url[64], dir[PATH_MAX];

    (void)state;
    assert_int_equal(testenv_redis_start(&r), 0);
    assert_true(r.pid > 0);
    assert_int_equal(testenv_redis_url(&r, url, sizeof(url)), 0);
    assert_int_equal(strncmp(url, "redis://127.0.0.1:", 18), 0);
    assert_int_equal(testenv_redis_url(&r, url, 10), -1);

    reply = redis_cmd(r.port, "SET %s %s", "k", "v1");
    assert_non_null(reply);
    freeReplyObject(reply);
    reply = redis_cmd(r.port, "GET %s", "k");
    assert_non_null(reply);
    assert_int_equal(reply->type, REDIS_REPLY_STRING);
    assert_string_equal(reply->str, "v1");
    freeReplyObject(reply);

    /* Paused: connections are accepted by the kernel but nothing answers. */
    assert_int_equal(testenv_redis_pause(&r), 0);
    assert_null(redis_cmd(r.port, "PING"));
    assert_int_equal(testenv_redis_resume(&r), 0);
    reply = redis_cmd(r.port, "PING");
    assert_non_null(reply);
    freeReplyObject(reply);

    /* Killed: refused; restarted on the same port: empty. */
    assert_int_equal(testenv_redis_kill(&r), 0);
    assert_int_equal(r.pid, 0);
    assert_null(redis_cmd(r.port, "PING"));
    assert_int_equal(testenv_redis_restart(&r), 0);
    reply = redis_cmd(r.port, "DBSIZE");
    assert_non_null(reply);
    assert_int_equal(reply->type, REDIS_REPLY_INTEGER);
    assert_int_equal(reply->integer, 0);
    freeReplyObject(reply);

    snprintf(dir, sizeof(dir), "%s", r.dir);
    assert_int_equal(testenv_redis_stop(&r), 0);
    assert_int_equal(r.pid, 0);
    assert_int_not_equal(access(dir, F_OK), 0);
}

static void
test_pg_lifecycle(void **state)
{
    testenv_pg_t pg = {0};
    char dir[PATH_MAX], expect[128];

    (void)state;
    assert_int_equal(testenv_pg_start(&pg, "t1"), 0);
    assert_true(pg.pid > 0);
    snprintf(expect, sizeof(expect), "host=127.0.0.1 port=%d user=postgres dbname=t1", pg.port);
    assert_string_equal(pg.conninfo, expect);
    assert_int_equal(testenv_pg_query_int(&pg, "SELECT current_database() = 't1'"), INT64_MIN);
    assert_int_equal(testenv_pg_query_int(&pg, "SELECT (current_database() = 't1')::int"), 1);
    assert_int_equal(testenv_pg_query_int(&pg, "SHOW max_connections"), 300);
    assert_int_equal(testenv_pg_exec(&pg, "CREATE TABLE t (id bigint PRIMARY KEY, n bigint)"), 0);
    assert_int_equal(testenv_pg_exec(&pg, "INSERT INTO t VALUES (1, 41), (2, 1)"), 0);
    assert_int_equal(testenv_pg_query_int(&pg, "SELECT sum(n) FROM t"), 42);
    assert_int_equal(testenv_pg_exec(&pg, "INSERT INTO nope VALUES (1)"), -1);
    assert_int_equal(testenv_pg_query_int(&pg, "SELECT NULL::int"), INT64_MIN);

    /* A crash right after a commit: the row must survive. */
    assert_int_equal(testenv_pg_exec(&pg, "INSERT INTO t VALUES (3, 100)"), 0);
    assert_int_equal(testenv_pg_kill(&pg), 0);
    assert_int_equal(pg.pid, 0);
    assert_int_equal(testenv_pg_exec(&pg, "SELECT 1"), -1);
    assert_int_equal(testenv_pg_restart(&pg), 0);
    assert_int_equal(testenv_pg_query_int(&pg, "SELECT sum(n) FROM t"), 142);

    /* Restart while running is a kill then a start. */
    assert_int_equal(testenv_pg_restart(&pg), 0);
    assert_int_equal(testenv_pg_query_int(&pg, "SELECT count(*) FROM t"), 3);

    snprintf(dir, sizeof(dir), "%s", pg.dir);
    assert_int_equal(testenv_pg_stop(&pg), 0);
    assert_int_not_equal(access(dir, F_OK), 0);
    assert_int_equal(testenv_pg_start(&pg, "bad name"), -1);
}

static int
health(const char *addr)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    svc_call_opts_t opts = {.timeout_ms = 2000};
    svc_arena_t *arena = svc_arena_create();
    ProtobufCMessage *out;
    svc_client_t *client;
    svc_err_t err;
    int status = -1;

    req.service = "";
    client = svc_client_get(addr, &err);
    if (client != NULL && svc_client_unary(client, "/grpc.health.v1.Health/Check", &req.base,
                                           &grpc__health__v1__health_check_response__descriptor,
                                           arena, &out, &opts, &err) == 0) {
        status = ((Grpc__Health__V1__HealthCheckResponse *)out)->status;
    }
    svc_arena_destroy(arena);
    return status;
}

/* Removes the log a failed start keeps, and its dir. */
static void
remove_log(const char *log_path)
{
    char dir[PATH_MAX], *slash;

    snprintf(dir, sizeof(dir), "%s", log_path);
    assert_int_equal(unlink(log_path), 0);
    assert_non_null(slash = strrchr(dir, '/'));
    *slash = '\0';
    assert_int_equal(rmdir(dir), 0);
}

static void
test_proc_lifecycle(void **state)
{
    static const char *const args[] = {"--log-level=warn", "--workers=2", NULL};
    static const char *const env[] = {"GRACE_MS=2000", NULL};
    testenv_proc_t p = {0};
    char log_path[PATH_MAX];
    int port;

    (void)state;
    assert_int_equal(testenv_proc_start(&p, server_path, args, env), 0);
    assert_true(p.pid > 0);
    assert_int_equal(health(p.addr),
                     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    assert_int_equal(testenv_proc_alive(&p), 1);
    assert_int_not_equal(access(p.log_path, F_OK), -1);

    /* Killed, then back on the same port. */
    port = p.port;
    assert_int_equal(testenv_proc_kill(&p), 0);
    assert_int_equal(testenv_proc_alive(&p), 0);
    assert_int_equal(testenv_proc_restart(&p), 0);
    assert_int_equal(p.port, port);
    assert_int_equal(health(p.addr),
                     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);

    /* SIGTERM: a clean exit 0, and the log goes away with it. */
    snprintf(log_path, sizeof(log_path), "%s", p.log_path);
    assert_int_equal(testenv_proc_stop(&p), 0);
    assert_int_equal(p.pid, 0);
    assert_int_not_equal(access(log_path, F_OK), 0);

    /* An exit seen by alive is what stop then reports. */
    assert_int_equal(testenv_proc_restart(&p), 0);
    assert_int_equal(testenv_proc_signal(&p, SIGKILL), 0);
    while (testenv_proc_alive(&p)) {
        svc_sleep_ms(10);
    }
    snprintf(log_path, sizeof(log_path), "%s", p.log_path);
    port = testenv_proc_stop(&p);
    assert_true(WIFSIGNALED(port) && WTERMSIG(port) == SIGKILL);
    remove_log(log_path); /* kept, since the exit was not clean */
}

/* Stopped is seen once the process stops; an exit is no stop, and its status is left to stop. */
static void
test_proc_wait_stopped(void **state)
{
    testenv_proc_t p = {0};
    char log_path[PATH_MAX];
    int status;

    (void)state;
    assert_int_equal(testenv_proc_start(&p, server_path, NULL, NULL), 0);
    assert_int_equal(testenv_proc_wait_stopped(&p, 200), -1); /* running: a timeout */
    assert_int_equal(testenv_proc_signal(&p, SIGSTOP), 0);
    assert_int_equal(testenv_proc_wait_stopped(&p, 5000), 0);
    assert_int_equal(testenv_proc_signal(&p, SIGCONT), 0);
    assert_int_equal(health(p.addr),
                     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);

    /* Killed while stopped: -1, and the status is still there for stop. */
    assert_int_equal(testenv_proc_signal(&p, SIGSTOP), 0);
    assert_int_equal(testenv_proc_wait_stopped(&p, 5000), 0);
    assert_int_equal(testenv_proc_signal(&p, SIGKILL), 0);
    assert_int_equal(testenv_proc_wait_stopped(&p, 5000), -1);
    snprintf(log_path, sizeof(log_path), "%s", p.log_path);
    status = testenv_proc_stop(&p);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    remove_log(log_path); /* kept, since the exit was not clean */
}

/* Paused: stopped for real when pause returns; resumed: serving again. */
static void
test_proc_pause(void **state)
{
    testenv_proc_t p = {0};

    (void)state;
    assert_int_equal(testenv_proc_start(&p, server_path, NULL, NULL), 0);
    assert_int_equal(testenv_proc_pause(&p), 0);
    assert_int_equal(testenv_proc_wait_stopped(&p, 0), 0);
    assert_int_equal(testenv_proc_resume(&p), 0);
    assert_int_equal(testenv_proc_wait_stopped(&p, 200), -1); /* running again */
    assert_int_equal(health(p.addr),
                     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    assert_int_equal(testenv_proc_stop(&p), 0);
    /* Nothing to pause once it is gone. */
    assert_int_equal(testenv_proc_pause(&p), -1);
}

/* A process that exits before it serves fails the start at once. */
static void
test_proc_start_failures(void **state)
{
    static const char *const bad_env[] = {"LOG_LEVEL=loud", NULL};
    testenv_proc_t p = {0}, q = {0};
    char log_path[PATH_MAX];

    (void)state;
    /* The environment reaches the process: a bad setting there stops it (exit 2). */
    assert_int_equal(testenv_proc_start(&p, server_path, NULL, bad_env), -1);
    assert_int_equal(p.pid, 0);
    remove_log(p.log_path);
    /* stop after a failed start only removes the log. */
    assert_int_equal(testenv_proc_start(&q, "/nonexistent/binary", NULL, NULL), -1);
    snprintf(log_path, sizeof(log_path), "%s", q.log_path);
    assert_int_equal(testenv_proc_stop(&q), -1);
    assert_int_not_equal(access(log_path, F_OK), 0);
}

/* A port someone else holds: the start fails fast and says so. */
static void
test_port_in_use(void **state)
{
    struct sockaddr_in addr = {0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    testenv_redis_t r = {0};
    testenv_proc_t p = {0};

    (void)state;
    r.port = p.port = testenv_free_port();
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((uint16_t)r.port);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    assert_int_equal(listen(fd, 1), 0);

    assert_int_equal(testenv_redis_start(&r), -1);
    assert_int_equal(r.pid, 0);
    assert_int_equal(testenv_redis_stop(&r), 0); /* removes the dir kept for the post-mortem */
    assert_int_equal(testenv_proc_start(&p, server_path, NULL, NULL), -1);
    remove_log(p.log_path);
    close(fd);
}

/*
 * The child side of test_cleanup_on_death: starts a Redis, says its pid on
 * stdout, and dies of sig.
 */
static int
die_with_redis(int sig)
{
    testenv_redis_t r = {0};

    signal(sig, SIG_DFL); /* an ignored SIGPIPE came with us through exec */
    testenv_cleanup_on_exit();
    if (testenv_redis_start(&r) != 0) {
        return 3;
    }
    printf("%d %s\n", (int)r.pid, r.dir);
    fflush(stdout);
    raise(sig);
    /* A fault's handler returns so that the fault repeats: here, the raise. */
    raise(sig);
    return 4; /* not reached */
}

/* True once pid has exited: gone, or a zombie nobody reaps (PID 1 in a container may not). */
static bool
exited(int pid)
{
    char path[64], stat[256];
    const char *state;
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    if ((f = fopen(path, "r")) == NULL) {
        return true;
    }
    n = fread(stat, 1, sizeof(stat) - 1, f);
    fclose(f);
    stat[n] = '\0';
    state = strrchr(stat, ')'); /* "pid (comm) S ..." */
    return state == NULL || state[1] == '\0' || state[2] == 'Z' || state[2] == 'X';
}

/* A test process that dies of a signal takes its servers with it. */
static void
test_cleanup_on_death(void **state)
{
    static const int sigs[] = {SIGPIPE, SIGTERM, SIGSEGV};

    (void)state;
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        char cmd[PATH_MAX + 64];
        int redis_pid = 0, status, gone = 0;
        char dir[PATH_MAX];
        FILE *child;

        snprintf(cmd, sizeof(cmd), "/proc/%d/exe --die-with %d 2>/dev/null", (int)getpid(),
                 sigs[i]);
        child = popen(cmd, "r");
        assert_non_null(child);
        assert_int_equal(fscanf(child, "%d %4095s", &redis_pid, dir), 2);
        assert_true(redis_pid > 0);
        status = pclose(child);
        assert_true(WIFSIGNALED(status) || WEXITSTATUS(status) != 0); /* it died, not returned */
        for (int t = 0; t < 200 && !gone; t++) { /* reparented to init, which reaps it */
            gone = exited(redis_pid);
            if (!gone) {
                svc_sleep_ms(10);
            }
        }
        if (!gone) {
            kill(redis_pid, SIGKILL);
        }
        assert_true(gone);
        testenv__remove_dir(dir); /* kept for a post-mortem, which this is not */
    }
}

static int
teardown(void **state)
{
    (void)state;
    svc_client_release_all();
    return 0;
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_free_port),           cmocka_unit_test(test_redis_lifecycle),
        cmocka_unit_test(test_pg_lifecycle),        cmocka_unit_test(test_proc_lifecycle),
        cmocka_unit_test(test_proc_wait_stopped),   cmocka_unit_test(test_proc_pause),
        cmocka_unit_test(test_proc_start_failures), cmocka_unit_test(test_port_in_use),
        cmocka_unit_test(test_cleanup_on_death),
    };

    if (argc == 3 && strcmp(argv[1], "--die-with") == 0) {
        return die_with_redis(atoi(argv[2]));
    }

    if (argc < 2) {
        fprintf(stderr, "usage: %s path/to/svctest-server\n", argv[0]);
        return 2;
    }
    server_path = argv[1];
    signal(SIGPIPE, SIG_IGN);
    testenv_cleanup_on_exit();
    return testenv_group_result(
        cmocka_run_group_tests(tests, NULL, testenv_group_teardown(teardown)));
}
