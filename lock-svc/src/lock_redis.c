/*
 * lock_redis.c: Redis lanes. A lane is one TCP connection speaking RESP
 * directly: a caller formats its command once, appends it to the lane's
 * output under the lane's mutex and writes it to the socket itself, so a
 * command costs no wake-up of another thread (unless the lane's thread is
 * answering replies just then: it writes all that was queued meanwhile in
 * one go when it is done). The lane's thread reads: it parses replies with
 * hiredis's reader and runs the callbacks in order (Redis answers a
 * connection's commands in the order it got them, so
 * in-flight commands form a FIFO, and the oldest one tells whether Redis
 * stopped answering). The same thread (re)connects, with a blocking hiredis
 * context for the set-up (AUTH, SELECT, ROLE, SCRIPT LOAD) whose socket it
 * then keeps.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lock_redis.h"
#include "svc/log.h"
#include "svc/timer.h"
#include "svc/metrics.h"

#define MAX_ARGS 16
#define MAX_SCRIPTS 16
#define MAX_LANES 64
#define RECONNECT_PAUSE_MS 100
#define CONNECT_TIMEOUT_MS 500
#define TICK_MS 100
#define READ_CHUNK 65536

/* A command on its way: the RESP of its arguments; a script's head is added when it is written. */
typedef struct rcmd {
    struct rcmd *next;
    lock_redis_cb cb;
    void *arg;
    int script;  /* -1: a plain command, whose `resp` is all of it */
    int n_elems; /* script: the RESP array's length, EVALSHA and the SHA included */
    bool as_eval;
    bool handed; /* put in a connection's output: without a reply, Redis may have run it */
    int64_t sent_ms;
    size_t len;
    char resp[];
} rcmd_t;

typedef enum { LANE_DOWN, LANE_CONNECTING, LANE_UP } lane_state_t;

typedef struct lane {
    struct lock_redis *r;
    int index;
    pthread_t thread;
    int epfd, evfd;

    pthread_mutex_t mu; /* guards everything up to `reader` */
    lane_state_t state;
    bool stopping;
    int fd;                            /* LANE_UP: the connection */
    rcmd_t *wait_head, *wait_tail;     /* LANE_CONNECTING: not written yet */
    rcmd_t *flight_head, *flight_tail; /* written or in `out`, awaiting replies, in order */
    char *out;                         /* bytes not yet written: out[out_off..out_len) */
    size_t out_off, out_len, out_cap;
    bool out_armed; /* EPOLLOUT asked for */
    bool reading;   /* the lane's thread is answering replies: it writes the output after */
    bool broken;    /* a writer saw the socket fail; the lane's thread drops it */

    /* the lane's thread only (and create/destroy) */
    bool running;
    int64_t last_fail_ms;
    redisReader *reader;
    bool drop; /* a reply said this is not (or no longer) the master */
    /* Lane 0 says when Redis is lost and when it is back, once each. */
    bool ever_up, said_down;
    char host[256];
    int port;
    int64_t last_tick_ms;
} lane_t;

struct lock_redis {
    lock_redis_opts_t opts;
    char *password;
    char *scripts[MAX_SCRIPTS];
    size_t script_lens[MAX_SCRIPTS];
    char shas[MAX_SCRIPTS][41];
    lane_t *lanes;
    int n_lanes;
};

/* ---------- SHA-1 (FIPS 180-4), for EVALSHA without asking Redis first ---------- */

static uint32_t
rol32(uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

static void
sha1_block(uint32_t h[5], const unsigned char *p)
{
    uint32_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];

    for (int i = 0; i < 16; i++) {
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    }
    for (int i = 16; i < 80; i++) {
        w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    }
    for (int i = 0; i < 80; i++) {
        uint32_t f, k, t;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5a827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ed9eba1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8f1bbcdc;
        } else {
            f = b ^ c ^ d;
            k = 0xca62c1d6;
        }
        t = rol32(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol32(b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

void
lock_redis_sha1_hex(const char *text, size_t len, char out[41])
{
    static const char hex[] = "0123456789abcdef";
    uint32_t h[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    const unsigned char *p = (const unsigned char *)text;
    unsigned char block[64];
    uint64_t bits = (uint64_t)len * 8;
    size_t rest;

    for (; len >= 64; len -= 64, p += 64) {
        sha1_block(h, p);
    }
    rest = len;
    memset(block, 0, sizeof(block));
    memcpy(block, p, rest);
    block[rest] = 0x80;
    if (rest >= 56) {
        sha1_block(h, block);
        memset(block, 0, sizeof(block));
    }
    for (int i = 0; i < 8; i++) {
        block[63 - i] = (unsigned char)(bits >> (8 * i));
    }
    sha1_block(h, block);
    for (int i = 0; i < 20; i++) {
        unsigned char byte = (unsigned char)(h[i / 4] >> (24 - 8 * (i % 4)));
        out[2 * i] = hex[byte >> 4];
        out[2 * i + 1] = hex[byte & 15];
    }
    out[40] = '\0';
}

/* ---------- formatting ---------- */

static size_t
digits(size_t n)
{
    size_t d = 1;

    while (n >= 10) {
        n /= 10;
        d++;
    }
    return d;
}

/* Writes "<prefix><n>\r\n" at p; returns the end. */
static char *
put_len(char *p, char prefix, size_t n)
{
    size_t d = digits(n);

    *p++ = prefix;
    for (size_t i = d; i > 0; i--) {
        p[i - 1] = (char)('0' + n % 10);
        n /= 10;
    }
    p += d;
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

/*
 * A command holding argv as RESP bulk strings, preceded by the array header
 * when `array` (plain commands; a script's header is written with its head).
 */
static rcmd_t *
rcmd_new(bool array, int argc, const char *const *argv, lock_redis_cb cb, void *arg)
{
    size_t lens[MAX_ARGS + 1], total = array ? 1 + digits((size_t)argc) + 2 : 0;
    rcmd_t *c;
    char *p;

    if (argc > MAX_ARGS) {
        return NULL;
    }
    for (int i = 0; i < argc; i++) {
        lens[i] = strlen(argv[i]);
        total += 1 + digits(lens[i]) + 2 + lens[i] + 2;
    }
    c = malloc(sizeof(*c) + total);
    if (c == NULL) {
        return NULL;
    }
    c->next = NULL;
    c->cb = cb;
    c->arg = arg;
    c->script = -1;
    c->n_elems = argc;
    c->as_eval = c->handed = false;
    c->sent_ms = 0;
    c->len = total;
    p = c->resp;
    if (array) {
        p = put_len(p, '*', (size_t)argc);
    }
    for (int i = 0; i < argc; i++) {
        p = put_len(p, '$', lens[i]);
        memcpy(p, argv[i], lens[i]);
        p += lens[i];
        *p++ = '\r';
        *p++ = '\n';
    }
    return c;
}

static void
rcmd_finish(rcmd_t *c, redisReply *reply)
{
    if (c->cb != NULL) {
        c->cb(reply, reply == NULL && c->handed, c->arg);
    }
    free(c);
}

/* Fails every command of a list (outside the lane's mutex). */
static void
fail_list(rcmd_t *list)
{
    while (list != NULL) {
        rcmd_t *c = list;
        list = c->next;
        rcmd_finish(c, NULL);
    }
}

/* ---------- output (caller holds the lane's mutex) ---------- */

static int
out_reserve(lane_t *l, size_t more)
{
    size_t need;

    if (l->out_off > 0 && l->out_off == l->out_len) {
        l->out_off = l->out_len = 0;
    }
    need = l->out_len + more;
    if (need > l->out_cap) {
        size_t cap = l->out_cap > 0 ? l->out_cap : 4096;
        char *p;
        while (cap < need) {
            cap *= 2;
        }
        if ((p = realloc(l->out, cap)) == NULL) {
            return -1;
        }
        l->out = p;
        l->out_cap = cap;
    }
    return 0;
}

/* Appends c's bytes (a script's head first) to the output. */
static int
out_append(lane_t *l, const rcmd_t *c)
{
    const lock_redis_t *r = l->r;
    size_t head = 0;
    const char *body = NULL;
    size_t body_len = 0;
    char *p;

    if (c->script >= 0) {
        body = c->as_eval ? r->scripts[c->script] : r->shas[c->script];
        body_len = c->as_eval ? r->script_lens[c->script] : 40;
        /* *N \r\n $7 \r\n EVALSHA \r\n (or $4 EVAL) $len \r\n body \r\n */
        head = 1 + digits((size_t)c->n_elems) + 2 + (c->as_eval ? 10 : 13) + 1 + digits(body_len) +
               2 + body_len + 2;
    }
    if (out_reserve(l, head + c->len) != 0) {
        return -1;
    }
    p = l->out + l->out_len;
    if (c->script >= 0) {
        p = put_len(p, '*', (size_t)c->n_elems);
        memcpy(p, c->as_eval ? "$4\r\nEVAL\r\n" : "$7\r\nEVALSHA\r\n", c->as_eval ? 10 : 13);
        p += c->as_eval ? 10 : 13;
        p = put_len(p, '$', body_len);
        memcpy(p, body, body_len);
        p += body_len;
        *p++ = '\r';
        *p++ = '\n';
    }
    memcpy(p, c->resp, c->len);
    l->out_len += head + c->len;
    return 0;
}

static void
out_arm(lane_t *l, bool on)
{
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = l};

    if (l->out_armed != on && l->fd >= 0 && epoll_ctl(l->epfd, EPOLL_CTL_MOD, l->fd, &ev) == 0) {
        l->out_armed = on;
    }
}

/* Writes what the socket takes now; the rest waits for EPOLLOUT. */
static void
out_flush(lane_t *l)
{
    while (l->out_off < l->out_len && !l->broken) {
        ssize_t n = send(l->fd, l->out + l->out_off, l->out_len - l->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            l->out_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            out_arm(l, true);
            return;
        } else {
            /* The lane's thread drops the connection: wake it with the socket's end. */
            l->broken = true;
            shutdown(l->fd, SHUT_RDWR);
            return;
        }
    }
    if (l->out_off == l->out_len) {
        l->out_off = l->out_len = 0;
        out_arm(l, false);
    }
}

/* Puts c in flight on the connection (state LANE_UP); false when out of memory. */
static bool
send_locked(lane_t *l, rcmd_t *c, bool flush)
{
    bool was_idle = l->out_off == l->out_len;

    if (out_append(l, c) != 0) {
        return false;
    }
    c->handed = true;
    c->sent_ms = svc_now_mono_ms();
    c->next = NULL;
    if (l->flight_tail != NULL) {
        l->flight_tail->next = c;
    } else {
        l->flight_head = c;
    }
    l->flight_tail = c;
    if (flush && was_idle && !l->reading) {
        out_flush(l);
    }
    return true;
}

/* Queues c on lane l: written now when connected, failed at once when Redis is down. */
static void
submit(lane_t *l, rcmd_t *c)
{
    bool fail = false;

    pthread_mutex_lock(&l->mu);
    if (l->stopping || l->state == LANE_DOWN || l->broken) {
        fail = true; /* Redis is down (or the socket just failed): answer at once */
    } else if (l->state == LANE_CONNECTING) {
        if (l->wait_tail != NULL) {
            l->wait_tail->next = c;
        } else {
            l->wait_head = c;
        }
        l->wait_tail = c;
    } else {
        fail = !send_locked(l, c, true);
    }
    pthread_mutex_unlock(&l->mu);
    if (fail) {
        rcmd_finish(c, NULL);
    }
}

/* ---------- connecting (the lane's thread) ---------- */

static bool
setup_ok(redisContext *c, const char *what, int argc, const char **argv, size_t want_len)
{
    redisReply *reply = redisCommandArgv(c, argc, argv, NULL);
    bool ok = reply != NULL && reply->type != REDIS_REPLY_ERROR &&
              (want_len == 0 || (reply->type == REDIS_REPLY_STRING && reply->len == want_len));

    if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
        svc_logf(SVC_LOG_WARN, "redis refused %s: %.200s", what, reply->str);
    }
    freeReplyObject(reply);
    return ok;
}

static bool
is_master(redisContext *c)
{
    redisReply *reply = redisCommand(c, "ROLE");
    bool master = reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
                  reply->element[0]->type == REDIS_REPLY_STRING &&
                  strcmp(reply->element[0]->str, "master") == 0;

    if (reply != NULL && !master) {
        svc_logf(SVC_LOG_WARN, "redis at the located address is not the master (ROLE says %s)",
                 reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
                         reply->element[0]->type == REDIS_REPLY_STRING
                     ? reply->element[0]->str
                     : "something else");
    }
    freeReplyObject(reply);
    return master;
}

/* A set-up connection's socket, non-blocking; -1 when Redis cannot be reached or refuses. */
static int
lane_open(lane_t *l, const char *host, int port)
{
    lock_redis_t *r = l->r;
    struct timeval ct = {0, CONNECT_TIMEOUT_MS * 1000};
    struct timeval rt = {r->opts.timeout_ms / 1000, (r->opts.timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(host, port, ct);
    bool ok;
    int fd;

    if (c == NULL) {
        return -1;
    }
    ok = c->err == 0 && redisSetTimeout(c, rt) == REDIS_OK;
    if (ok && r->password[0] != '\0') {
        const char *argv[] = {"AUTH", r->password};
        ok = setup_ok(c, "AUTH", 2, argv, 0);
    }
    if (ok && r->opts.db != 0) {
        char db[16];
        const char *argv[] = {"SELECT", db};
        snprintf(db, sizeof(db), "%d", r->opts.db);
        ok = setup_ok(c, "SELECT", 2, argv, 0);
    }
    if (ok && r->opts.check_master) {
        ok = is_master(c);
    }
    for (int i = 0; ok && i < r->opts.n_scripts; i++) {
        const char *argv[] = {"SCRIPT", "LOAD", r->scripts[i]};
        ok = setup_ok(c, "SCRIPT LOAD", 3, argv, 40);
    }
    if (!ok) {
        if (l->index == 0 && !l->said_down) {
            svc_logf(SVC_LOG_WARN, "redis at %s:%d unreachable: %s", host, port,
                     c->err != 0 ? c->errstr : "set-up failed");
            l->said_down = true;
        }
        redisFree(c);
        return -1;
    }
    redisEnableKeepAlive(c);
    fd = redisFreeKeepFd(c);
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Connects (blocking this lane's thread only); commands queued meanwhile go out after. */
static void
lane_connect(lane_t *l)
{
    lock_redis_t *r = l->r;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = l};
    char host[256];
    rcmd_t *failed = NULL;
    int port = 0, fd = -1;

    pthread_mutex_lock(&l->mu);
    l->state = LANE_CONNECTING;
    pthread_mutex_unlock(&l->mu);
    if (r->opts.locate(r->opts.arg, host, sizeof(host), &port) == 0) {
        snprintf(l->host, sizeof(l->host), "%s", host);
        l->port = port;
        fd = lane_open(l, host, port);
    }
    if (fd >= 0 && epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        close(fd);
        fd = -1;
    }
    pthread_mutex_lock(&l->mu);
    if (fd < 0) {
        l->state = LANE_DOWN;
        l->last_fail_ms = svc_now_mono_ms();
        failed = l->wait_head;
    } else {
        l->state = LANE_UP;
        l->fd = fd;
        l->broken = l->out_armed = false;
        for (rcmd_t *c = l->wait_head, *next; c != NULL; c = next) {
            next = c->next;
            if (!send_locked(l, c, false)) {
                c->next = failed;
                failed = c;
            }
        }
        out_flush(l);
    }
    l->wait_head = l->wait_tail = NULL;
    pthread_mutex_unlock(&l->mu);
    if (fd >= 0) {
        if (l->ever_up) {
            static svc_metric_t *_Atomic reconnects;
            if (reconnects == NULL) {
                reconnects = svc_metric(SVC_METRIC_COUNTER, "redis_reconnects_total",
                                        "Redis connections opened again after one was lost.", NULL);
            }
            svc_metric_add(reconnects, 1);
        }
        if (l->index == 0 && (!l->ever_up || l->said_down)) { /* as loud as the loss it ends */
            svc_logf(l->ever_up ? SVC_LOG_WARN : SVC_LOG_INFO, "redis connected%s at %s:%d",
                     l->ever_up ? " again" : "", l->host, l->port);
        }
        l->ever_up = true;
        l->said_down = false;
    }
    fail_list(failed);
    if (fd >= 0 && r->opts.on_up != NULL) {
        r->opts.on_up(r->opts.arg, l->index);
    }
}

/*
 * Closes the connection; everything in flight is answered with NULL (lost).
 * why: the reason to log, "" for a connection that ended, NULL for ours.
 */
static void
lane_drop(lane_t *l, const char *why)
{
    static svc_log_limit_t limit = SVC_LOG_LIMIT_INIT(4);
    bool was_up;
    rcmd_t *flight;

    pthread_mutex_lock(&l->mu);
    was_up = l->fd >= 0;
    if (l->fd >= 0) {
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, l->fd, NULL);
        close(l->fd);
    }
    l->fd = -1;
    l->state = LANE_DOWN;
    l->last_fail_ms = svc_now_mono_ms();
    l->out_off = l->out_len = 0;
    l->out_armed = l->broken = false;
    flight = l->flight_head;
    l->flight_head = l->flight_tail = NULL;
    pthread_mutex_unlock(&l->mu);
    if (was_up && why != NULL && why[0] != '\0') {
        svc_logf_limited(&limit, SVC_LOG_WARN, "redis connection to %s:%d dropped: %s", l->host,
                         l->port, why);
        l->said_down = l->said_down || l->index == 0;
    } else if (was_up && why != NULL && l->index == 0 && !l->said_down) {
        svc_logf(SVC_LOG_WARN, "redis connection to %s:%d lost", l->host, l->port);
        l->said_down = true;
    }
    redisReaderFree(l->reader);
    l->reader = redisReaderCreate();
    l->drop = false;
    fail_list(flight);
}

/* ---------- reading (the lane's thread) ---------- */

static void
on_reply(lane_t *l, redisReply *reply)
{
    rcmd_t *c;

    pthread_mutex_lock(&l->mu);
    c = l->flight_head;
    if (c != NULL) {
        l->flight_head = c->next;
        if (l->flight_head == NULL) {
            l->flight_tail = NULL;
        }
    }
    if (c != NULL && reply->type == REDIS_REPLY_ERROR && c->script >= 0 && !c->as_eval &&
        strncmp(reply->str, "NOSCRIPT", 8) == 0) {
        c->as_eval = true; /* the server lost its script cache: send the text */
        if (send_locked(l, c, true)) {
            c = NULL;
        }
    }
    pthread_mutex_unlock(&l->mu);
    if (c == NULL) {
        freeReplyObject(reply);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR &&
        (strncmp(reply->str, "READONLY", 8) == 0 || strncmp(reply->str, "LOADING", 7) == 0)) {
        l->drop = true; /* a demoted master or one still loading: find the master again */
    }
    rcmd_finish(c, reply);
    freeReplyObject(reply);
}

/* Reads what arrived and answers the commands it completes; false when the connection ended. */
static bool
lane_read(lane_t *l, int fd)
{
    char buf[READ_CHUNK];

    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        void *reply;

        if (n == 0) {
            return false;
        }
        if (n < 0) {
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        }
        if (redisReaderFeed(l->reader, buf, (size_t)n) != REDIS_OK) {
            return false;
        }
        for (;;) {
            if (redisReaderGetReply(l->reader, &reply) != REDIS_OK) {
                return false;
            }
            if (reply == NULL) {
                break;
            }
            on_reply(l, reply);
        }
        if ((size_t)n < sizeof(buf)) {
            return true;
        }
    }
}

static void *
lane_thread(void *arg)
{
    lane_t *l = arg;
    lock_redis_t *r = l->r;
    struct epoll_event events[8];

    for (;;) {
        int64_t now = svc_now_mono_ms();
        bool stopping, overdue;
        lane_state_t state;
        int n, fd;

        pthread_mutex_lock(&l->mu);
        stopping = l->stopping;
        state = l->state;
        fd = l->fd;
        overdue = l->flight_head != NULL && now - l->flight_head->sent_ms > r->opts.timeout_ms;
        pthread_mutex_unlock(&l->mu);
        if (stopping) {
            break;
        }
        if (state == LANE_UP && overdue) {
            lane_drop(l, "no reply in time");
            continue;
        }
        if (state == LANE_DOWN && now - l->last_fail_ms >= RECONNECT_PAUSE_MS) {
            lane_connect(l);
            continue;
        }
        n = epoll_wait(l->epfd, events, 8, TICK_MS);
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == NULL) {
                uint64_t v;
                if (read(l->evfd, &v, sizeof(v)) < 0) {
                    /* nothing to do: the loop re-reads `stopping` */
                }
                continue;
            }
            if (fd < 0) {
                continue;
            }
            if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                bool alive;
                /*
                 * Commands queued while we answer replies (by callers and by
                 * the callbacks) go out together afterwards: one write for
                 * many under load.
                 */
                pthread_mutex_lock(&l->mu);
                l->reading = true;
                pthread_mutex_unlock(&l->mu);
                alive = lane_read(l, fd);
                pthread_mutex_lock(&l->mu);
                l->reading = false;
                if (alive) {
                    out_flush(l);
                }
                pthread_mutex_unlock(&l->mu);
                if (!alive) {
                    lane_drop(l, "");
                    fd = -1;
                    continue;
                }
            }
            if (events[i].events & EPOLLOUT) {
                pthread_mutex_lock(&l->mu);
                out_flush(l);
                pthread_mutex_unlock(&l->mu);
            }
        }
        if (l->drop) {
            lane_drop(l, "redis is not the master or is still loading");
        }
        now = svc_now_mono_ms();
        if (r->opts.tick != NULL && now - l->last_tick_ms >= TICK_MS) {
            l->last_tick_ms = now;
            r->opts.tick(r->opts.arg, l->index);
        }
    }
    lane_drop(l, NULL);
    return NULL;
}

/* ---------- public ---------- */

static void
lane_fini(lane_t *l)
{
    if (l->epfd >= 0) {
        close(l->epfd);
    }
    if (l->evfd >= 0) {
        close(l->evfd);
    }
    if (l->reader != NULL) {
        redisReaderFree(l->reader);
    }
    free(l->out);
    pthread_mutex_destroy(&l->mu);
}

static int
lane_init(lock_redis_t *r, lane_t *l, int index)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};

    l->r = r;
    l->index = index;
    l->fd = -1;
    l->state = LANE_DOWN;
    l->last_fail_ms = -RECONNECT_PAUSE_MS;
    pthread_mutex_init(&l->mu, NULL);
    l->reader = redisReaderCreate();
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (l->reader == NULL || l->epfd < 0 || l->evfd < 0 ||
        epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->evfd, &ev) != 0) {
        return -1;
    }
    return 0;
}

lock_redis_t *
lock_redis_create(const lock_redis_opts_t *opts, svc_err_t *err)
{
    lock_redis_t *r;

    if (opts->n_scripts > MAX_SCRIPTS || opts->lanes < 1 || opts->lanes > MAX_LANES) {
        svc_err_set(err, SVC_INVALID_ARGUMENT, "bad redis connection settings");
        return NULL;
    }
    if ((r = calloc(1, sizeof(*r))) == NULL ||
        (r->lanes = calloc((size_t)opts->lanes, sizeof(*r->lanes))) == NULL) {
        free(r);
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    r->opts = *opts;
    r->password = strdup(opts->password != NULL ? opts->password : "");
    for (int i = 0; i < opts->n_scripts; i++) {
        r->scripts[i] = strdup(opts->scripts[i]);
        r->script_lens[i] = strlen(opts->scripts[i]);
        lock_redis_sha1_hex(opts->scripts[i], r->script_lens[i], r->shas[i]);
    }
    for (r->n_lanes = 0; r->n_lanes < opts->lanes; r->n_lanes++) {
        lane_t *l = &r->lanes[r->n_lanes];
        l->epfd = l->evfd = -1;
        if (lane_init(r, l, r->n_lanes) != 0) {
            r->n_lanes++; /* initialised in part: freed with the others */
            goto fail;
        }
    }
    return r;

fail:
    svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "cannot set up the redis connections");
    lock_redis_destroy(r);
    return NULL;
}

int
lock_redis_start(lock_redis_t *r, svc_err_t *err)
{
    for (int i = 0; i < r->n_lanes; i++) {
        if (pthread_create(&r->lanes[i].thread, NULL, lane_thread, &r->lanes[i]) != 0) {
            svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "cannot start the redis threads");
            return -1;
        }
        r->lanes[i].running = true;
    }
    return 0;
}

void
lock_redis_destroy(lock_redis_t *r)
{
    if (r == NULL) {
        return;
    }
    for (int i = 0; i < r->n_lanes; i++) {
        lane_t *l = &r->lanes[i];
        uint64_t one = 1;
        if (!l->running) {
            continue;
        }
        pthread_mutex_lock(&l->mu);
        l->stopping = true;
        pthread_mutex_unlock(&l->mu);
        if (write(l->evfd, &one, sizeof(one)) < 0) {
            /* the thread also wakes on its own every TICK_MS */
        }
        pthread_join(l->thread, NULL);
    }
    for (int i = 0; i < r->n_lanes; i++) {
        fail_list(r->lanes[i].wait_head);
        fail_list(r->lanes[i].flight_head);
        lane_fini(&r->lanes[i]);
    }
    for (int i = 0; i < r->opts.n_scripts; i++) {
        free(r->scripts[i]);
    }
    free(r->lanes);
    free(r->password);
    free(r);
}
int
lock_redis_lanes(const lock_redis_t *r)
{
    return r->n_lanes;
}

void
lock_redis_script(lock_redis_t *r, int lane, int script, int n_keys, const char *const *keys,
                  int n_args, const char *const *args, lock_redis_cb cb, void *arg)
{
    const char *argv[MAX_ARGS];
    char numkeys[12];
    int argc = 0;
    rcmd_t *c;

    /* {numkeys, keys..., args...}; EVALSHA and the SHA go in front when it is written. */
    snprintf(numkeys, sizeof(numkeys), "%d", n_keys);
    argv[argc++] = numkeys;
    for (int i = 0; i < n_keys && argc < MAX_ARGS; i++) {
        argv[argc++] = keys[i];
    }
    for (int i = 0; i < n_args && argc < MAX_ARGS; i++) {
        argv[argc++] = args[i];
    }
    c = rcmd_new(false, argc, argv, cb, arg);
    if (c == NULL) {
        if (cb != NULL) {
            cb(NULL, false, arg);
        }
        return;
    }
    c->script = script;
    c->n_elems = argc + 2;
    submit(&r->lanes[lane], c);
}

void
lock_redis_command(lock_redis_t *r, int lane, int argc, const char *const *argv, lock_redis_cb cb,
                   void *arg)
{
    rcmd_t *c = rcmd_new(true, argc, argv, cb, arg);

    if (c == NULL) {
        if (cb != NULL) {
            cb(NULL, false, arg);
        }
        return;
    }
    submit(&r->lanes[lane], c);
}

char *
lock_redis_url_redact(const char *url, char *buf, size_t len)
{
    const char *start = strstr(url, "://"), *at, *slash, *colon;

    if (len == 0) {
        return buf;
    }
    start = start != NULL ? start + 3 : url;
    at = strchr(start, '@');
    slash = strchr(start, '/');
    /*
     * lock_store reads a redis:// URL's password up to its first '@', a '/'
     * before it or not ("redis://:pa/ss@h:1"): so must this. Elsewhere an
     * '@' after a '/' is no user info ("redis-sentinel://h:1/my@master").
     */
    if (at == NULL || (strncmp(url, "redis://", 8) != 0 && slash != NULL && slash < at)) {
        snprintf(buf, len, "%s", url); /* no user info */
        return buf;
    }
    colon = memchr(start, ':', (size_t)(at - start));
    if (colon != NULL) { /* user:password@ -> user:***@ */
        snprintf(buf, len, "%.*s***%s", (int)(colon + 1 - url), url, at);
    } else { /* password@ -> ***@ */
        snprintf(buf, len, "%.*s***%s", (int)(start - url), url, at);
    }
    return buf;
}
