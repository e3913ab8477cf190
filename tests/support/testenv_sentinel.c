/*
 * testenv_sentinel.c: a primary, a replica and three Sentinels (see
 * testenv_sentinel.h). The Sentinels are started through testenv's launcher,
 * so they are in its registry: testenv_cleanup_on_exit kills them too when a
 * test dies.
 */
#define _GNU_SOURCE
#include "testenv_sentinel.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "testenv_internal.h"

#define REDIS_SENTINEL "/usr/bin/redis-sentinel"
#define SENTINEL_START_MS 10000
#define LINK_WAIT_MS 10000
#define QUORUM_WAIT_MS 30000
#define POLL_MS 50

/* Runs one command on 127.0.0.1:port with a 1 s timeout; the reply (caller
 * frees) or NULL when the server cannot be reached. */
static redisReply *
testenv__sentinel_cmd(int port, const char *fmt, ...)
{
    struct timeval tv = {1, 0};
    redisContext *c;
    redisReply *r = NULL;
    va_list ap;

    if (port <= 0) {
        return NULL;
    }
    c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c == NULL || c->err != 0 || redisSetTimeout(c, tv) != REDIS_OK) {
        redisFree(c);
        return NULL;
    }
    va_start(ap, fmt);
    r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    return r;
}

static int
testenv__sentinel_ready(const void *arg)
{
    const testenv_sentinel_proc_t *p = arg;
    redisReply *r = testenv__sentinel_cmd(p->port, "PING");
    int ok = r != NULL && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;

    freeReplyObject(r);
    return ok;
}

/* Writes sentinel.conf for p->port, watching the primary on master_port, and starts it. */
static pid_t
testenv__sentinel_launch(const testenv_sentinel_t *s, testenv_sentinel_proc_t *p, int master_port)
{
    char conf[PATH_MAX], log[PATH_MAX];
    char *argv[] = {REDIS_SENTINEL, conf, NULL};
    testenv__launch_t l = {"redis-sentinel",        p->dir, {0}, SENTINEL_START_MS,
                           testenv__sentinel_ready, p};
    FILE *f;

    if (testenv__path(conf, sizeof(conf), p->dir, "sentinel.conf") != 0 ||
        testenv__path(log, sizeof(log), p->dir, "sentinel.log") != 0) {
        return -1;
    }
    if ((f = fopen(conf, "w")) == NULL) {
        testenv__fail("cannot write %s: %s", conf, strerror(errno));
        return -1;
    }
    /*
     * Quorum 2 of 3: one Sentinel alone can neither declare the primary down
     * nor fail it over. down-after and failover-timeout are short so that a
     * test sees the whole failover within seconds; the Sentinel rewrites this
     * file as it learns the replica and its peers, hence its own dir.
     */
    fprintf(f,
            "# Written by testenv: one of three Sentinels for one test.\n"
            "bind 127.0.0.1\nport %d\nprotected-mode no\ndaemonize no\ndir \"%s\"\n"
            "logfile \"%s\"\n"
            "sentinel monitor " TESTENV_SENTINEL_MASTER " 127.0.0.1 %d 2\n"
            "sentinel down-after-milliseconds " TESTENV_SENTINEL_MASTER " %d\n"
            "sentinel failover-timeout " TESTENV_SENTINEL_MASTER " %d\n"
            "sentinel parallel-syncs " TESTENV_SENTINEL_MASTER " 1\n",
            p->port, p->dir, log, master_port, s->down_after_ms, s->failover_timeout_ms);
    if (fclose(f) != 0) {
        testenv__fail("cannot write %s", conf);
        return -1;
    }
    l.child.path = REDIS_SENTINEL;
    l.child.argv = argv;
    l.child.log_path = log;
    l.child.cwd = p->dir;
    return testenv__launch(&l);
}

static int
testenv__sentinel_proc_start(const testenv_sentinel_t *s, testenv_sentinel_proc_t *p,
                             int master_port)
{
    pid_t pid = LAUNCH_PORT_TAKEN;

    if (testenv__make_dir("sentinel", p->dir, sizeof(p->dir)) != 0) {
        return -1;
    }
    for (int attempt = 0; attempt < PORT_ATTEMPTS && pid == LAUNCH_PORT_TAKEN; attempt++) {
        if ((p->port = testenv_free_port()) < 0) {
            return -1;
        }
        pid = testenv__sentinel_launch(s, p, master_port);
    }
    if (pid < 0) {
        if (pid == LAUNCH_PORT_TAKEN) {
            testenv__fail("redis-sentinel: no free port after %d attempts", PORT_ATTEMPTS);
        }
        fprintf(stderr, "testenv: redis-sentinel files kept in %s\n", p->dir);
        p->dir[0] = '\0'; /* kept, and no longer ours to remove */
        return -1;
    }
    p->pid = pid;
    return 0;
}

/* The value of field name in a flat [name, value, ...] array; NULL if absent. */
static const char *
testenv__field(const redisReply *r, const char *name)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        return NULL;
    }
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        if (r->element[i]->type == REDIS_REPLY_STRING && strcmp(r->element[i]->str, name) == 0 &&
            r->element[i + 1]->type == REDIS_REPLY_STRING) {
            return r->element[i + 1]->str;
        }
    }
    return NULL;
}

/* 1 once the replica on replica_port says its link to the primary is up. */
static int
testenv__replica_linked(int replica_port)
{
    redisReply *r = testenv__sentinel_cmd(replica_port, "INFO replication");
    int ok = r != NULL && r->type == REDIS_REPLY_STRING &&
             strstr(r->str, "master_link_status:up") != NULL;

    freeReplyObject(r);
    return ok;
}

/*
 * 1 once this Sentinel can authorise a failover with all three (CKQUORUM)
 * and sees the replica healthy (flags exactly "slave", link ok): without
 * both, a primary killed right away would not be failed over.
 */
static int
testenv__sentinel_settled(const testenv_sentinel_proc_t *p, int replica_port)
{
    redisReply *q = testenv__sentinel_cmd(p->port, "SENTINEL CKQUORUM " TESTENV_SENTINEL_MASTER);
    redisReply *r = NULL;
    int ok = q != NULL && q->type == REDIS_REPLY_STATUS && strncmp(q->str, "OK 3 ", 5) == 0;
    int replica_ok = 0;

    if (ok) {
        r = testenv__sentinel_cmd(p->port, "SENTINEL REPLICAS " TESTENV_SENTINEL_MASTER);
        for (size_t i = 0; r != NULL && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
            const char *port = testenv__field(r->element[i], "port");
            const char *flags = testenv__field(r->element[i], "flags");
            const char *link = testenv__field(r->element[i], "master-link-status");
            replica_ok |= port != NULL && atoi(port) == replica_port && flags != NULL &&
                          strcmp(flags, "slave") == 0 && link != NULL && strcmp(link, "ok") == 0;
        }
    }
    freeReplyObject(q);
    freeReplyObject(r);
    return ok && replica_ok;
}

int
testenv_sentinel_start(testenv_sentinel_t *s)
{
    redisReply *r;
    int64_t deadline;
    int settled = 0;

    if (access(REDIS_SENTINEL, X_OK) != 0) {
        testenv__fail("%s not found (Debian package redis-sentinel)", REDIS_SENTINEL);
        return -1;
    }
    if (s->down_after_ms <= 0) {
        s->down_after_ms = 1000;
    }
    if (s->failover_timeout_ms <= 0) {
        s->failover_timeout_ms = 4000;
    }
    if (testenv_redis_start(&s->redis[0]) != 0 || testenv_redis_start(&s->redis[1]) != 0) {
        goto fail;
    }
    r = testenv__sentinel_cmd(s->redis[1].port, "REPLICAOF 127.0.0.1 %d", s->redis[0].port);
    if (r == NULL || r->type != REDIS_REPLY_STATUS) {
        testenv__fail("REPLICAOF on redis-server port %d failed: %s", s->redis[1].port,
                      r != NULL && r->type == REDIS_REPLY_ERROR ? r->str : "no answer");
        freeReplyObject(r);
        goto fail;
    }
    freeReplyObject(r);
    deadline = svc_now_mono_ms() + LINK_WAIT_MS;
    while (!testenv__replica_linked(s->redis[1].port)) {
        if (svc_now_mono_ms() >= deadline) {
            testenv__fail("the replica on port %d did not link to the primary within %d s",
                          s->redis[1].port, LINK_WAIT_MS / 1000);
            goto fail;
        }
        svc_sleep_ms(POLL_MS);
    }
    for (int i = 0; i < TESTENV_SENTINELS; i++) {
        if (testenv__sentinel_proc_start(s, &s->sentinel[i], s->redis[0].port) != 0) {
            goto fail;
        }
    }
    /* The Sentinels find the replica (INFO) and each other (hello messages, every 2 s). */
    deadline = svc_now_mono_ms() + QUORUM_WAIT_MS;
    while (settled < TESTENV_SENTINELS) {
        settled = 0;
        for (int i = 0; i < TESTENV_SENTINELS; i++) {
            settled += testenv__sentinel_settled(&s->sentinel[i], s->redis[1].port);
        }
        if (settled == TESTENV_SENTINELS) {
            break;
        }
        if (svc_now_mono_ms() >= deadline) {
            testenv__fail("only %d of %d Sentinels saw the replica and reached quorum within %d s",
                          settled, TESTENV_SENTINELS, QUORUM_WAIT_MS / 1000);
            fprintf(stderr, "testenv: Sentinel logs in %s (and its peers)\n", s->sentinel[0].dir);
            goto fail;
        }
        svc_sleep_ms(100);
    }
    return 0;

fail:
    testenv_sentinel_stop(s);
    return -1;
}

int
testenv_sentinel_master_port(const testenv_sentinel_t *s)
{
    int port = -1, answers = 0;

    for (int i = 0; i < TESTENV_SENTINELS; i++) {
        redisReply *r;
        int p;

        if (s->sentinel[i].pid <= 0) {
            continue;
        }
        r = testenv__sentinel_cmd(s->sentinel[i].port,
                                  "SENTINEL get-master-addr-by-name " TESTENV_SENTINEL_MASTER);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[1]->type != REDIS_REPLY_STRING) {
            freeReplyObject(r);
            continue;
        }
        p = atoi(r->element[1]->str);
        freeReplyObject(r);
        if (answers > 0 && p != port) {
            return -1; /* they disagree: the new configuration is still spreading */
        }
        port = p;
        answers++;
    }
    return answers * 2 > TESTENV_SENTINELS ? port : -1;
}

/* 1 when the server on port says it is a master. */
static int
testenv__is_master(int port)
{
    redisReply *r = testenv__sentinel_cmd(port, "ROLE");
    int ok = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
             r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "master") == 0;

    freeReplyObject(r);
    return ok;
}

int
testenv_sentinel_wait_failover(const testenv_sentinel_t *s, int old_port, int timeout_ms)
{
    int64_t deadline = svc_now_mono_ms() + timeout_ms;

    for (;;) {
        int port = testenv_sentinel_master_port(s);
        if (port > 0 && port != old_port && testenv__is_master(port)) {
            return port;
        }
        if (svc_now_mono_ms() >= deadline) {
            testenv__fail("the Sentinels agreed on no primary other than port %d within %d ms",
                          old_port, timeout_ms);
            return -1;
        }
        svc_sleep_ms(POLL_MS);
    }
}

testenv_redis_t *
testenv_sentinel_redis(testenv_sentinel_t *s, int port)
{
    for (int i = 0; i < 2; i++) {
        if (port > 0 && s->redis[i].port == port) {
            return &s->redis[i];
        }
    }
    return NULL;
}

int
testenv_sentinel_url(const testenv_sentinel_t *s, char *buf, size_t len)
{
    int n = snprintf(buf, len, "redis-sentinel://127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d/%s",
                     s->sentinel[0].port, s->sentinel[1].port, s->sentinel[2].port,
                     TESTENV_SENTINEL_MASTER);

    if (n < 0 || (size_t)n >= len) {
        testenv__fail("sentinel url does not fit in %zu bytes", len);
        return -1;
    }
    return 0;
}

int
testenv_sentinel_stop(testenv_sentinel_t *s)
{
    int rc = 0, status;

    for (int i = 0; i < TESTENV_SENTINELS; i++) {
        testenv_sentinel_proc_t *p = &s->sentinel[i];
        if (p->pid > 0 && !testenv__terminate(p->pid, SIGTERM, &status)) {
            testenv__fail("redis-sentinel did not exit within %d s of SIGTERM; killed it",
                          STOP_MS / 1000);
            rc = -1;
        }
        p->pid = 0;
        testenv__remove_dir(p->dir);
    }
    for (int i = 0; i < 2; i++) {
        if (testenv_redis_stop(&s->redis[i]) != 0) {
            rc = -1;
        }
    }
    return rc;
}
