/*
 * testenv_redis.c: a throwaway Redis for a test: redis-server in a temp dir
 * on a free loopback port, without persistence.
 */
#define _GNU_SOURCE
#include "testenv.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "testenv_internal.h"

#define REDIS_SERVER "/usr/bin/redis-server"
#define REDIS_START_MS 10000

static int
testenv__redis_ready(const void *arg)
{
    const testenv_redis_t *r = arg;
    struct timeval tv = {0, 500000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    redisReply *reply;
    int ok = 0;

    if (c == NULL) {
        return 0;
    }
    if (c->err == 0 && redisSetTimeout(c, tv) == REDIS_OK) {
        reply = redisCommand(c, "PING");
        ok = reply != NULL && reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "PONG") == 0;
        if (reply != NULL) {
            freeReplyObject(reply);
        }
    }
    redisFree(c);
    return ok;
}

/* Writes redis.conf for r->port and starts Redis on it. */
static pid_t
testenv__redis_launch(testenv_redis_t *r)
{
    char conf[PATH_MAX], log[PATH_MAX];
    char *argv[] = {REDIS_SERVER, conf, NULL};
    testenv__launch_t l = {"redis-server", r->dir, {0}, REDIS_START_MS, testenv__redis_ready, r};
    FILE *f;

    if (testenv__path(conf, sizeof(conf), r->dir, "redis.conf") != 0 ||
        testenv__path(log, sizeof(log), r->dir, "redis.log") != 0) {
        return -1;
    }
    if ((f = fopen(conf, "w")) == NULL) {
        testenv__fail("cannot write %s: %s", conf, strerror(errno));
        return -1;
    }
    fprintf(f,
            "# Written by testenv at each start: a throwaway Redis for one test.\n"
            "bind 127.0.0.1\nport %d\ndir \"%s\"\nsave \"\"\nappendonly no\n"
            "daemonize no\nlogfile \"%s\"\n",
            r->port, r->dir, log);
    if (fclose(f) != 0) {
        testenv__fail("cannot write %s", conf);
        return -1;
    }
    l.child.path = REDIS_SERVER;
    l.child.argv = argv;
    l.child.log_path = log;
    l.child.cwd = r->dir;
    return testenv__launch(&l);
}

int
testenv_redis_start(testenv_redis_t *r)
{
    int pick = r->port == 0;
    pid_t pid = LAUNCH_PORT_TAKEN;

    if (access(REDIS_SERVER, X_OK) != 0) {
        testenv__fail("%s not found (Debian package redis-server)", REDIS_SERVER);
        return -1;
    }
    if (testenv__make_dir("redis", r->dir, sizeof(r->dir)) != 0) {
        return -1;
    }
    for (int attempt = 0; attempt < PORT_ATTEMPTS && pid == LAUNCH_PORT_TAKEN; attempt++) {
        if (pick && (r->port = testenv_free_port()) < 0) {
            return -1;
        }
        pid = testenv__redis_launch(r);
        if (pid == LAUNCH_PORT_TAKEN && !pick) {
            break;
        }
    }
    if (pid < 0) {
        if (pid == LAUNCH_PORT_TAKEN) {
            testenv__fail("redis-server: port %d is in use", r->port);
        }
        fprintf(stderr, "testenv: redis-server files kept in %s\n", r->dir);
        return -1;
    }
    r->pid = pid;
    return 0;
}

int
testenv_redis_stop(testenv_redis_t *r)
{
    int status, rc = 0;

    if (r->pid > 0 && !testenv__terminate(r->pid, SIGTERM, &status)) {
        testenv__fail("redis-server did not exit within %d s of SIGTERM; killed it",
                      STOP_MS / 1000);
        rc = -1;
    }
    r->pid = 0;
    testenv__remove_dir(r->dir);
    return rc;
}

int
testenv_redis_kill(testenv_redis_t *r)
{
    if (r->pid <= 0) {
        testenv__fail("redis-server is not running");
        return -1;
    }
    testenv__kill_wait(r->pid, NULL);
    r->pid = 0;
    return 0;
}

int
testenv_redis_restart(testenv_redis_t *r)
{
    pid_t pid;

    if (r->dir[0] == '\0' || r->port <= 0) {
        testenv__fail("redis-server was not started, or was stopped");
        return -1;
    }
    if (r->pid > 0) {
        testenv_redis_kill(r);
    }
    pid = testenv__redis_launch(r);
    if (pid < 0) {
        if (pid == LAUNCH_PORT_TAKEN) {
            testenv__fail("redis-server: port %d is now taken by another program", r->port);
        }
        return -1;
    }
    r->pid = pid;
    return 0;
}

int
testenv_redis_pause(testenv_redis_t *r)
{
    int status;

    if (r->pid <= 0 || kill(r->pid, SIGSTOP) != 0) {
        testenv__fail("cannot pause redis-server: not running");
        return -1;
    }
    /* Returns once it is really stopped, so the test's next step sees it paused. */
    if (waitpid(r->pid, &status, WUNTRACED) != r->pid) {
        testenv__fail("cannot wait for redis-server: %s", strerror(errno));
        return -1;
    }
    if (!WIFSTOPPED(status)) {
        testenv__unregister(r->pid);
        r->pid = 0;
        testenv__fail("redis-server had exited");
        return -1;
    }
    return 0;
}

int
testenv_redis_resume(testenv_redis_t *r)
{
    if (r->pid <= 0 || kill(r->pid, SIGCONT) != 0) {
        testenv__fail("cannot resume redis-server: not running");
        return -1;
    }
    return 0;
}

int
testenv_redis_url(const testenv_redis_t *r, char *buf, size_t len)
{
    int n = snprintf(buf, len, "redis://127.0.0.1:%d/0", r->port);

    if (n < 0 || (size_t)n >= len) {
        testenv__fail("redis url does not fit in %zu bytes", len);
        return -1;
    }
    return 0;
}

int64_t
testenv_redis_commands(const testenv_redis_t *r)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    redisReply *reply = NULL;
    int64_t n = -1;

    if (c != NULL && c->err == 0 && redisSetTimeout(c, tv) == REDIS_OK) {
        reply = redisCommand(c, "INFO stats");
    }
    if (reply != NULL && reply->type == REDIS_REPLY_STRING) {
        const char *line = strstr(reply->str, "total_commands_processed:");
        if (line != NULL) {
            n = strtoll(line + strlen("total_commands_processed:"), NULL, 10);
        }
    }
    if (reply != NULL) {
        freeReplyObject(reply);
    }
    if (c != NULL) {
        redisFree(c);
    }
    if (n < 0) {
        testenv__fail("cannot read total_commands_processed from redis on port %d", r->port);
    }
    return n;
}
