/*
 * lock_redis.c: a pipelined hiredis async connection driven by an epoll loop
 * on one thread. Commands arrive through a mutex-guarded queue and an
 * eventfd; replies come back in order, so in-flight commands form a FIFO and
 * the oldest one tells whether Redis stopped answering.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/async.h>

#include "lock_redis.h"
#include "svc/log.h"
#include "svc/timer.h"

#define MAX_ARGS 16
#define RECONNECT_PAUSE_MS 100
#define MAX_SCRIPTS 8
#define TICK_MS 100

typedef struct {
    struct lock_redis *r;
    int script;
} sha_arg_t;

typedef struct rcmd {
    struct rcmd *next;
    int script; /* -1: a plain command */
    int argc;
    char *argv[MAX_ARGS];
    size_t lens[MAX_ARGS];
    lock_redis_cb cb;
    void *arg;
    int64_t sent_ms;
    bool as_eval;  /* EVAL with the script's text (after NOSCRIPT, or before its SHA is known) */
    bool internal; /* part of setting up a connection */
    bool handed;   /* given to a connection: without a reply, Redis may still have run it */
} rcmd_t;

struct lock_redis {
    lock_redis_opts_t opts;
    char *password;
    char *scripts[MAX_SCRIPTS];

    pthread_t thread;
    int epfd, evfd;
    pthread_mutex_t mu; /* guards the queue and stopping */
    rcmd_t *queue_head, *queue_tail;
    bool stopping;

    /* loop thread only */
    redisAsyncContext *ac;
    bool want_read, want_write, registered;
    bool drop; /* set by a callback: free the connection from the loop */
    /* Where the current connection goes, and whether the last one got through:
     * the log says when Redis is lost and where it was found again, once each. */
    char host[256];
    int port;
    bool up, ever_up;
    rcmd_t *flight_head, *flight_tail;
    char shas[MAX_SCRIPTS][41];
    sha_arg_t sha_args[MAX_SCRIPTS];
    int64_t last_fail_ms;
    int64_t last_tick_ms;
};

static void
rcmd_free(rcmd_t *c)
{
    for (int i = 0; i < c->argc; i++) {
        free(c->argv[i]);
    }
    free(c);
}

/* Runs the command's callback with reply and frees it. */
static void
rcmd_finish(rcmd_t *c, redisReply *reply)
{
    if (c->cb != NULL) {
        c->cb(reply, reply == NULL && c->handed, c->arg);
    }
    rcmd_free(c);
}

/* ---------- the epoll adapter for hiredis (loop thread) ---------- */

static void
ev_update(lock_redis_t *r)
{
    struct epoll_event ev = {0};

    if (r->ac == NULL) {
        return;
    }
    ev.events = (r->want_read ? EPOLLIN : 0) | (r->want_write ? EPOLLOUT : 0);
    ev.data.ptr = r->ac;
    if (!r->registered) {
        if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->ac->c.fd, &ev) == 0) {
            r->registered = true;
        }
    } else {
        epoll_ctl(r->epfd, EPOLL_CTL_MOD, r->ac->c.fd, &ev);
    }
}

static void
ev_add_read(void *p)
{
    lock_redis_t *r = p;
    r->want_read = true;
    ev_update(r);
}

static void
ev_del_read(void *p)
{
    lock_redis_t *r = p;
    r->want_read = false;
    ev_update(r);
}

static void
ev_add_write(void *p)
{
    lock_redis_t *r = p;
    r->want_write = true;
    ev_update(r);
}

static void
ev_del_write(void *p)
{
    lock_redis_t *r = p;
    r->want_write = false;
    ev_update(r);
}

static void
ev_cleanup(void *p)
{
    lock_redis_t *r = p;

    if (r->registered && r->ac != NULL) {
        epoll_ctl(r->epfd, EPOLL_CTL_DEL, r->ac->c.fd, NULL);
    }
    r->registered = r->want_read = r->want_write = false;
}

/* ---------- sending ---------- */

static void send_cmd(lock_redis_t *r, rcmd_t *c);

static void
flight_remove(lock_redis_t *r, rcmd_t *c)
{
    rcmd_t **pp = &r->flight_head, *prev = NULL;

    while (*pp != NULL && *pp != c) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp == NULL) {
        return;
    }
    *pp = c->next;
    if (r->flight_tail == c) {
        r->flight_tail = prev;
    }
    c->next = NULL;
}

static void
on_reply(redisAsyncContext *ac, void *reply_ptr, void *privdata)
{
    lock_redis_t *r = ac->ev.data;
    redisReply *reply = reply_ptr;
    rcmd_t *c = privdata;

    flight_remove(r, c);
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR && c->script >= 0 && !c->as_eval &&
        strncmp(reply->str, "NOSCRIPT", 8) == 0) {
        c->as_eval = true; /* the server lost its script cache: send the text */
        send_cmd(r, c);
        return;
    }
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR &&
        (strncmp(reply->str, "READONLY", 8) == 0 || strncmp(reply->str, "LOADING", 7) == 0)) {
        r->drop = true; /* a demoted master or one still loading: find the master again */
    }
    rcmd_finish(c, reply);
}

/* Hands c to hiredis (loop thread, connection up or connecting). */
static void
send_cmd(lock_redis_t *r, rcmd_t *c)
{
    const char *argv[MAX_ARGS + 2];
    size_t lens[MAX_ARGS + 2];
    int argc = 0;

    if (c == NULL) {
        return;
    }
    if (c->script >= 0) { /* c->argv holds {numkeys, keys..., args...} */
        bool sha = !c->as_eval && r->shas[c->script][0] != '\0';
        argv[argc] = sha ? "EVALSHA" : "EVAL";
        lens[argc] = strlen(argv[argc]);
        argc++;
        argv[argc] = sha ? r->shas[c->script] : r->scripts[c->script];
        lens[argc] = strlen(argv[argc]);
        argc++;
    }
    for (int i = 0; i < c->argc; i++) {
        argv[argc] = c->argv[i];
        lens[argc] = c->lens[i];
        argc++;
    }
    c->sent_ms = svc_now_mono_ms();
    if (r->ac == NULL || redisAsyncCommandArgv(r->ac, on_reply, c, argc, argv, lens) != REDIS_OK) {
        rcmd_finish(c, NULL);
        return;
    }
    c->handed = true;
    if (r->flight_tail != NULL) {
        r->flight_tail->next = c;
    } else {
        r->flight_head = c;
    }
    r->flight_tail = c;
}

/* ---------- connecting ---------- */

static rcmd_t *
rcmd_new(int script, int argc, const char *const *argv, lock_redis_cb cb, void *arg)
{
    rcmd_t *c = calloc(1, sizeof(*c));

    if (c == NULL || argc > MAX_ARGS) {
        free(c);
        return NULL;
    }
    c->script = script;
    c->cb = cb;
    c->arg = arg;
    for (int i = 0; i < argc; i++) {
        c->lens[i] = strlen(argv[i]);
        c->argv[i] = strndup(argv[i], c->lens[i]);
        if (c->argv[i] == NULL) {
            c->argc = i;
            rcmd_free(c);
            return NULL;
        }
    }
    c->argc = argc;
    return c;
}

static void
on_setup_reply(redisReply *reply, bool lost, void *arg)
{
    lock_redis_t *r = arg;

    (void)lost; /* the setup is sent again on the next connection */
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        r->drop = true;
    }
}

static void
on_role(redisReply *reply, bool lost, void *arg)
{
    lock_redis_t *r = arg;

    (void)lost;
    if (reply == NULL) { /* the connection failed: already said where it drops */
        r->drop = true;
    } else if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0 ||
               reply->element[0]->type != REDIS_REPLY_STRING ||
               strcmp(reply->element[0]->str, "master") != 0) {
        svc_logf(SVC_LOG_WARN, "redis at the located address is not the master (ROLE says %s)",
                 reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
                         reply->element[0]->type == REDIS_REPLY_STRING
                     ? reply->element[0]->str
                     : "something else");
        r->drop = true;
    }
}

static void
on_script_loaded(redisReply *reply, bool lost, void *arg)
{
    sha_arg_t *sa = arg;

    (void)lost;
    if (reply != NULL && reply->type == REDIS_REPLY_STRING && reply->len == 40) {
        memcpy(sa->r->shas[sa->script], reply->str, 41);
    } else {
        sa->r->drop = true;
    }
}

static void
on_connect(const redisAsyncContext *ac, int status)
{
    lock_redis_t *r = ac->ev.data;

    if (status != REDIS_OK) {
        if (r->up || !r->ever_up) {
            svc_logf(SVC_LOG_WARN, "redis at %s:%d unreachable: %s", r->host, r->port, ac->errstr);
        }
        r->up = false;
        r->ever_up = true; /* said once; the next line is the recovery */
        r->ac = NULL;      /* hiredis frees it */
        r->registered = false;
        r->last_fail_ms = svc_now_mono_ms();
        return;
    }
    if (!r->up) { /* the recovery is as loud as the loss it ends */
        svc_logf(r->ever_up ? SVC_LOG_WARN : SVC_LOG_INFO, "redis connected%s at %s:%d",
                 r->ever_up ? " again" : "", r->host, r->port);
    }
    r->up = r->ever_up = true;
}

static void
on_disconnect(const redisAsyncContext *ac, int status)
{
    lock_redis_t *r = ac->ev.data;

    (void)status;
    if (r->up) {
        svc_logf(SVC_LOG_WARN, "redis connection to %s:%d lost: %s", r->host, r->port,
                 ac->errstr[0] != '\0' ? ac->errstr : "closed");
    }
    r->up = false;
    r->ac = NULL;
    r->registered = false;
}

static void
queue_setup(lock_redis_t *r)
{
    if (r->password[0] != '\0') {
        const char *argv[] = {"AUTH", r->password};
        send_cmd(r, rcmd_new(-1, 2, argv, on_setup_reply, r));
    }
    if (r->opts.db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", r->opts.db);
        const char *argv[] = {"SELECT", db};
        send_cmd(r, rcmd_new(-1, 2, argv, on_setup_reply, r));
    }
    if (r->opts.check_master) {
        const char *argv[] = {"ROLE"};
        send_cmd(r, rcmd_new(-1, 1, argv, on_role, r));
    }
    for (int i = 0; i < r->opts.n_scripts; i++) {
        const char *argv[] = {"SCRIPT", "LOAD", r->scripts[i]};
        r->sha_args[i].r = r;
        r->sha_args[i].script = i;
        send_cmd(r, rcmd_new(-1, 3, argv, on_script_loaded, &r->sha_args[i]));
    }
}

/* Starts a connection unless one exists or the last attempt failed just now. */
static bool
ensure_connection(lock_redis_t *r)
{
    char host[256];
    int port = 0;

    if (r->ac != NULL) {
        return true;
    }
    if (svc_now_mono_ms() - r->last_fail_ms < RECONNECT_PAUSE_MS) {
        return false;
    }
    if (r->opts.locate(r->opts.locate_arg, host, sizeof(host), &port) != 0) {
        r->last_fail_ms = svc_now_mono_ms();
        return false;
    }
    snprintf(r->host, sizeof(r->host), "%s", host);
    r->port = port;
    r->ac = redisAsyncConnect(host, port);
    if (r->ac == NULL || r->ac->err != 0) {
        if (r->ac != NULL) {
            redisAsyncFree(r->ac);
        }
        r->ac = NULL;
        r->last_fail_ms = svc_now_mono_ms();
        return false;
    }
    r->ac->ev.data = r;
    r->ac->ev.addRead = ev_add_read;
    r->ac->ev.delRead = ev_del_read;
    r->ac->ev.addWrite = ev_add_write;
    r->ac->ev.delWrite = ev_del_write;
    r->ac->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(r->ac, on_connect);
    redisAsyncSetDisconnectCallback(r->ac, on_disconnect);
    for (int i = 0; i < MAX_SCRIPTS; i++) {
        r->shas[i][0] = '\0';
    }
    queue_setup(r);
    return r->ac != NULL;
}

/* Frees the connection; hiredis answers every command in flight with NULL. */
static void
drop_connection(lock_redis_t *r, const char *why)
{
    if (r->ac == NULL) {
        return;
    }
    svc_logf(SVC_LOG_WARN, "redis connection dropped: %s", why);
    redisAsyncContext *ac = r->ac;
    redisAsyncFree(ac);
    r->ac = NULL;
    r->registered = false;
    r->last_fail_ms = svc_now_mono_ms();
    /* Anything hiredis did not answer (it should have) is answered here. */
    while (r->flight_head != NULL) {
        rcmd_t *c = r->flight_head;
        r->flight_head = c->next;
        rcmd_finish(c, NULL);
    }
    r->flight_tail = NULL;
}

/* ---------- the loop ---------- */

static void
drain_queue(lock_redis_t *r)
{
    rcmd_t *list;
    uint64_t n;

    if (read(r->evfd, &n, sizeof(n)) < 0 && errno != EAGAIN) {
        return;
    }
    pthread_mutex_lock(&r->mu);
    list = r->queue_head;
    r->queue_head = r->queue_tail = NULL;
    pthread_mutex_unlock(&r->mu);
    while (list != NULL) {
        rcmd_t *c = list;
        list = c->next;
        c->next = NULL;
        if (ensure_connection(r)) {
            send_cmd(r, c);
        } else {
            rcmd_finish(c, NULL); /* Redis is down: answer at once, not after a timeout */
        }
    }
}

static void *
loop_thread(void *arg)
{
    lock_redis_t *r = arg;
    struct epoll_event events[16];

    for (;;) {
        int timeout = 200, n;

        pthread_mutex_lock(&r->mu);
        bool stopping = r->stopping;
        pthread_mutex_unlock(&r->mu);
        if (stopping) {
            break;
        }
        n = epoll_wait(r->epfd, events, 16, timeout);
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == NULL) {
                drain_queue(r);
            } else if (r->ac != NULL && events[i].data.ptr == r->ac) {
                redisAsyncContext *ac = r->ac;
                if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                    redisAsyncHandleRead(ac);
                }
                if (r->ac == ac && (events[i].events & EPOLLOUT)) {
                    redisAsyncHandleWrite(ac);
                }
            }
        }
        if (r->drop) {
            r->drop = false;
            drop_connection(r, "redis refused the connection setup or is not the master");
        }
        if (r->flight_head != NULL &&
            svc_now_mono_ms() - r->flight_head->sent_ms > r->opts.timeout_ms) {
            drop_connection(r, "no reply in time");
        }
        if (r->opts.tick != NULL && svc_now_mono_ms() - r->last_tick_ms >= TICK_MS) {
            r->last_tick_ms = svc_now_mono_ms();
            r->opts.tick(r->opts.tick_arg);
        }
    }
    if (r->ac != NULL) {
        r->up = false; /* closed by us: nothing to report */
        redisAsyncFree(r->ac);
        r->ac = NULL;
    }
    drain_queue(r); /* stopping: everything left is answered with NULL */
    return NULL;
}

/* ---------- public ---------- */

lock_redis_t *
lock_redis_create(const lock_redis_opts_t *opts, svc_err_t *err)
{
    lock_redis_t *r = calloc(1, sizeof(*r));
    struct epoll_event ev = {0};

    if (r == NULL || opts->n_scripts > MAX_SCRIPTS) {
        free(r);
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    r->opts = *opts;
    r->password = strdup(opts->password != NULL ? opts->password : "");
    for (int i = 0; i < opts->n_scripts; i++) {
        r->scripts[i] = strdup(opts->scripts[i]);
    }
    r->last_fail_ms = -RECONNECT_PAUSE_MS;
    pthread_mutex_init(&r->mu, NULL);
    r->epfd = epoll_create1(EPOLL_CLOEXEC);
    r->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ev.events = EPOLLIN;
    ev.data.ptr = NULL; /* the eventfd */
    if (r->epfd < 0 || r->evfd < 0 || epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->evfd, &ev) != 0 ||
        pthread_create(&r->thread, NULL, loop_thread, r) != 0) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "cannot start the redis thread");
        if (r->epfd >= 0) {
            close(r->epfd);
        }
        if (r->evfd >= 0) {
            close(r->evfd);
        }
        free(r);
        return NULL;
    }
    return r;
}

void
lock_redis_destroy(lock_redis_t *r)
{
    uint64_t one = 1;

    if (r == NULL) {
        return;
    }
    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    pthread_mutex_unlock(&r->mu);
    if (write(r->evfd, &one, sizeof(one)) < 0) {
        /* the loop also wakes on its own every 200 ms */
    }
    pthread_join(r->thread, NULL);
    close(r->epfd);
    close(r->evfd);
    for (int i = 0; i < r->opts.n_scripts; i++) {
        free(r->scripts[i]);
    }
    free(r->password);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static void
enqueue(lock_redis_t *r, rcmd_t *c)
{
    uint64_t one = 1;
    bool was_empty, stopping;

    pthread_mutex_lock(&r->mu);
    stopping = r->stopping;
    if (!stopping) {
        was_empty = r->queue_head == NULL;
        if (r->queue_tail != NULL) {
            r->queue_tail->next = c;
        } else {
            r->queue_head = c;
        }
        r->queue_tail = c;
    }
    pthread_mutex_unlock(&r->mu);
    if (stopping) {
        rcmd_finish(c, NULL);
        return;
    }
    /* One wake-up per burst: the loop drains the whole queue at once. */
    if (was_empty && write(r->evfd, &one, sizeof(one)) < 0) {
        /* the counter cannot overflow here; the loop still polls every 200 ms */
    }
}

void
lock_redis_script(lock_redis_t *r, int script, int n_keys, const char *const *keys, int n_args,
                  const char *const *args, lock_redis_cb cb, void *arg)
{
    const char *argv[MAX_ARGS];
    char numkeys[8];
    int argc = 0;
    rcmd_t *c;

    /* Stored as {numkeys, keys..., args...}; send_cmd puts EVALSHA sha in front. */
    snprintf(numkeys, sizeof(numkeys), "%d", n_keys);
    argv[argc++] = numkeys;
    for (int i = 0; i < n_keys && argc < MAX_ARGS; i++) {
        argv[argc++] = keys[i];
    }
    for (int i = 0; i < n_args && argc < MAX_ARGS; i++) {
        argv[argc++] = args[i];
    }
    c = rcmd_new(script, argc, argv, cb, arg);
    if (c == NULL) {
        if (cb != NULL) {
            cb(NULL, false, arg);
        }
        return;
    }
    enqueue(r, c);
}

void
lock_redis_command(lock_redis_t *r, int argc, const char *const *argv, lock_redis_cb cb, void *arg)
{
    rcmd_t *c = rcmd_new(-1, argc, argv, cb, arg);

    if (c == NULL) {
        if (cb != NULL) {
            cb(NULL, false, arg);
        }
        return;
    }
    enqueue(r, c);
}
