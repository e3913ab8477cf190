/*
 * test_lock_sentinel.c: lock-svc with REDIS_URL=redis-sentinel://...: it finds
 * the master through a Sentinel (Debian's redis-sentinel), and after the
 * master is SIGKILLed and the Sentinel promotes the replica, it finds the new
 * master by itself and fences keep growing. argv[1] is the lock-svc binary.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "svc/client.h"
#include "svc/lock_client.h"
#include "svc/timer.h"
#include "testenv.h"

extern char **environ;

static const char *lock_svc_path;
static testenv_redis_t master, replica;
static testenv_proc_t lock_proc;
static pid_t sentinel_pid;
static int sentinel_port;
static char sentinel_dir[256];

static void
sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Runs one command on 127.0.0.1:port; returns the reply (caller frees) or NULL. */
static redisReply *
redis_cmd(int port, const char *fmt, ...)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    redisReply *r = NULL;
    va_list ap;

    if (c == NULL || c->err != 0) {
        redisFree(c);
        return NULL;
    }
    va_start(ap, fmt);
    r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    return r;
}

/* The port the Sentinel names as master, or -1. */
static int
sentinel_master_port(void)
{
    redisReply *r = redis_cmd(sentinel_port, "SENTINEL get-master-addr-by-name mymaster");
    int port = -1;

    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        port = atoi(r->element[1]->str);
    }
    freeReplyObject(r);
    return port;
}

static int
start_sentinel(void)
{
    char conf[512], logf[512];
    char *argv[] = {"redis-sentinel", conf, NULL};
    FILE *f;

    snprintf(sentinel_dir, sizeof(sentinel_dir), "/tmp/lock-sentinel.XXXXXX");
    if (mkdtemp(sentinel_dir) == NULL) {
        return -1;
    }
    sentinel_port = testenv_free_port();
    snprintf(conf, sizeof(conf), "%s/sentinel.conf", sentinel_dir);
    snprintf(logf, sizeof(logf), "%s/sentinel.log", sentinel_dir);
    f = fopen(conf, "w");
    if (f == NULL) {
        return -1;
    }
    fprintf(f,
            "port %d\nbind 127.0.0.1\ndaemonize no\ndir %s\nlogfile %s\n"
            "sentinel monitor mymaster 127.0.0.1 %d 1\n"
            "sentinel down-after-milliseconds mymaster 1000\n"
            "sentinel failover-timeout mymaster 10000\n",
            sentinel_port, sentinel_dir, logf, master.port);
    fclose(f);
    return posix_spawnp(&sentinel_pid, "redis-sentinel", NULL, NULL, argv, environ) == 0 ? 0 : -1;
}

static void
stop_sentinel(void)
{
    char cmd[300];

    if (sentinel_pid > 0) {
        kill(sentinel_pid, SIGTERM);
        waitpid(sentinel_pid, NULL, 0);
        sentinel_pid = 0;
    }
    snprintf(cmd, sizeof(cmd), "rm -rf %s", sentinel_dir);
    if (sentinel_dir[0] == '/' && system(cmd) != 0) {
        fprintf(stderr, "could not remove %s\n", sentinel_dir);
    }
}

/* True once the replica follows the master and the Sentinel knows it. */
static int
replica_ready(void)
{
    redisReply *info = redis_cmd(replica.port, "INFO replication");
    redisReply *known = redis_cmd(sentinel_port, "SENTINEL replicas mymaster");
    int ok = info != NULL && info->type == REDIS_REPLY_STRING &&
             strstr(info->str, "master_link_status:up") != NULL && known != NULL &&
             known->type == REDIS_REPLY_ARRAY && known->elements > 0;

    freeReplyObject(info);
    freeReplyObject(known);
    return ok;
}

static void
test_follows_the_master_through_a_failover(void **state)
{
    svc_lock_opts_t opts = {.owner = "sentinel", .lease_ms = 500};
    svc_client_t *client;
    svc_lock_t before, after;
    svc_err_t err;
    int rc = -1;

    (void)state;
    client = svc_client_get(lock_proc.addr, &err);
    assert_non_null(client);
    assert_int_equal(svc_lock_acquire(client, "sentinel:key", &opts, &before, &err), 0);

    testenv_redis_kill(&master);
    int64_t t0 = svc_now_mono_ms();
    for (int i = 0; i < 300 && sentinel_master_port() != replica.port; i++) {
        sleep_ms(100);
    }
    assert_int_equal(sentinel_master_port(), replica.port);
    /* lock-svc asks the Sentinel again once its connection to the old master breaks. */
    for (int i = 0; i < 200 && rc != 0; i++) {
        rc = svc_lock_acquire(client, "sentinel:key", &opts, &after, &err);
        if (rc != 0) {
            sleep_ms(100);
        }
    }
    fprintf(stderr, "failover: lock-svc served again %lld ms after the master was killed\n",
            (long long)(svc_now_mono_ms() - t0));
    assert_int_equal(rc, 0);
    assert_true(after.fence > before.fence);
}

static int
setup(void **state)
{
    char url[160], env_url[200];
    const char *env[] = {env_url, "LOG_LEVEL=warn", NULL};
    redisReply *r;

    (void)state;
    testenv_cleanup_on_exit();
    if (testenv_redis_start(&master) != 0 || testenv_redis_start(&replica) != 0) {
        return -1;
    }
    r = redis_cmd(replica.port, "REPLICAOF 127.0.0.1 %d", master.port);
    freeReplyObject(r);
    if (start_sentinel() != 0) {
        return -1;
    }
    for (int i = 0; i < 300 && !replica_ready(); i++) {
        sleep_ms(100);
    }
    if (!replica_ready()) {
        fprintf(stderr, "replica or sentinel not ready\n");
        return -1;
    }
    snprintf(url, sizeof(url), "redis-sentinel://127.0.0.1:%d/mymaster", sentinel_port);
    snprintf(env_url, sizeof(env_url), "REDIS_URL=%s", url);
    return testenv_proc_start(&lock_proc, lock_svc_path, NULL, env);
}

static int
teardown(void **state)
{
    int status;

    (void)state;
    status = testenv_proc_stop(&lock_proc);
    stop_sentinel();
    testenv_redis_stop(&replica);
    testenv_redis_stop(&master);
    svc_client_release_all();
    return status == 0 ? 0 : -1;
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_follows_the_master_through_a_failover),
    };

    if (argc < 2) {
        fprintf(stderr, "usage: %s path/to/lock-svc\n", argv[0]);
        return 2;
    }
    lock_svc_path = argv[1];
    return cmocka_run_group_tests(tests, setup, teardown);
}
