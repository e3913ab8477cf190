/*
 * lock_store.c: Redis commands and Lua scripts of lock-svc, over a small pool
 * of blocking hiredis connections (callers are worker threads). Every failure
 * to reach Redis becomes UNAVAILABLE within about a second.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "lock_redis.h"
#include "lock_store.h"
#include "svc/log.h"
#include "svc/timer.h"

#define CONNECT_TIMEOUT_MS 500
#define COMMAND_TIMEOUT_MS 800
#define MAX_SENTINELS 8
#define FENCE_TTL_MS "3600000"
#define RELEASE_CHANNEL "lock.v1:released"
#define SUB_PING_AFTER_MS 2000
#define SUB_PONG_WITHIN_MS 2000
#define SVC_LOCK_MESSAGE_MAX 256
#define SVC_LOCK_KEY_MAX 200
#define MAX_ORPHANS 4096      /* lost acquires remembered at once */
#define ORPHANS_PER_TICK 256  /* releases queued per tick */
#define ORPHAN_RETRY_MS 200   /* between release attempts while Redis does not answer */
#define ORPHAN_SETTLE_MS 1000 /* how long "not held" is asked again (see orphan_released) */
#define MAX_LEASE_MS 300000

enum { SCRIPT_ACQUIRE, SCRIPT_RELEASE, SCRIPT_EXTEND, SCRIPT_GET, SCRIPT_WAITER, SCRIPT_COUNT };

/*
 * KEYS: lock, fence, waiters. ARGV: token, owner, lease_ms, fence floor,
 * waiter id ("" for none), waiter's wait deadline (unix ms).
 * Returns {1, fence} when granted, {0, remaining lease ms} when held.
 * A waiter is registered while it waits and removed when granted, in the same
 * script, so counting waiters costs no extra round trip. The fence key
 * outlives the lock by an hour; after that the floor (the wall clock in
 * microseconds) alone keeps fences growing.
 */
static const char script_acquire[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then\n"
    "  if ARGV[5] ~= '' then\n"
    "    redis.call('ZADD', KEYS[3], ARGV[6], ARGV[5])\n"
    "    redis.call('PEXPIRE', KEYS[3], 120000)\n"
    "  end\n"
    "  return {0, redis.call('PTTL', KEYS[1])}\n"
    "end\n"
    "if ARGV[5] ~= '' then redis.call('ZREM', KEYS[3], ARGV[5]) end\n"
    "local fence = redis.call('INCR', KEYS[2])\n"
    "if fence < tonumber(ARGV[4]) then\n"
    "  redis.call('SET', KEYS[2], ARGV[4])\n"
    "  fence = tonumber(ARGV[4])\n"
    "end\n"
    "redis.call('PEXPIRE', KEYS[2], " FENCE_TTL_MS ")\n"
    "redis.call('SET', KEYS[1], ARGV[1] .. '\\n' .. string.format('%d', fence) .. '\\n' .. "
    "ARGV[2], 'NX', 'PX', ARGV[3])\n"
    "return {1, fence}\n";

/* KEYS: lock. ARGV: token, channel, key. Returns 1 released, 0 not held, -1 other token. */
static const char script_release[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if not v then return 0 end\n"
    "if string.sub(v, 1, #ARGV[1] + 1) ~= ARGV[1] .. '\\n' then return -1 end\n"
    "redis.call('DEL', KEYS[1])\n"
    "redis.call('PUBLISH', ARGV[2], ARGV[3])\n"
    "return 1\n";

/* KEYS: lock. ARGV: token, lease_ms. Returns 1 extended, 0 not held, -1 other token. */
static const char script_extend[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if not v then return 0 end\n"
    "if string.sub(v, 1, #ARGV[1] + 1) ~= ARGV[1] .. '\\n' then return -1 end\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "return 1\n";

/* KEYS: lock, waiters. ARGV: now (unix ms). Returns {value or nil, pttl, live waiters}. */
static const char script_get[] = "local v = redis.call('GET', KEYS[1])\n"
                                 "local ttl = redis.call('PTTL', KEYS[1])\n"
                                 "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])\n"
                                 "return {v, ttl, redis.call('ZCARD', KEYS[2])}\n";

/* KEYS: waiters. ARGV: wait deadline (unix ms), waiter id. Registers a waiter queued behind others.
 */
static const char script_waiter[] = "redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])\n"
                                    "redis.call('PEXPIRE', KEYS[1], 120000)\n"
                                    "return 1\n";

static const char *const scripts[SCRIPT_COUNT] = {script_acquire, script_release, script_extend,
                                                  script_get, script_waiter};

typedef struct {
    char host[256];
    int port;
} endpoint_t;

/*
 * An acquire whose reply was lost (Redis stalled past the reply timeout, or
 * the connection broke with the script in flight). Its caller was told
 * UNAVAILABLE, but Redis may have run the script, or may still run it when it
 * reads what the dropped connection left behind; nobody else has the token,
 * so the key would stay locked for the whole lease. It is released by
 * compare-and-delete as soon as Redis answers again. Touched on the Redis
 * I/O thread only.
 */
typedef struct orphan {
    struct orphan *next;
    struct lock_store *s;
    char key[SVC_LOCK_KEY_MAX + 1];
    char token[LOCK_TOKEN_LEN + 1];
    int64_t until_ms;  /* monotonic: the lease is over by then anyway */
    int64_t retry_ms;  /* monotonic: the next release attempt */
    int64_t settle_ms; /* monotonic: 0, or until when "not held" is asked again */
    bool in_flight;
} orphan_t;

typedef struct {
    redisContext *ctx;
    char shas[SCRIPT_COUNT][41]; /* this connection's SCRIPT LOAD answers */
} conn_slot_t;

struct lock_store {
    /* from the URL */
    bool sentinel;
    endpoint_t direct;
    endpoint_t sentinels[MAX_SENTINELS];
    int n_sentinels;
    char master_name[128];
    char password[128];
    int db;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    conn_slot_t *slots;
    int n_slots;
    endpoint_t master; /* Sentinel mode: the last master found */
    bool have_master;
    int *free_slots; /* a stack of idle slot numbers */
    int n_free;

    char instance[LOCK_TOKEN_LEN + 1]; /* tells our own releases apart on the channel */
    lock_redis_t *async;               /* the pipelined connection of lock-svc's path */
    orphan_t *orphans;                 /* lost acquires to release (Redis I/O thread) */
    int n_orphans;

    /* subscriber */
    pthread_t sub_thread;
    bool sub_running, stopping;
    int sub_fd; /* to wake the subscriber at shutdown; -1 when none */
    lock_release_fn sub_fn;
    void *sub_arg;
};

/* ---------- URL ---------- */

static int
parse_endpoint(const char *text, size_t len, endpoint_t *ep)
{
    char buf[300];
    char *colon, *end;
    long port;

    if (len == 0 || len >= sizeof(buf)) {
        return -1;
    }
    memcpy(buf, text, len);
    buf[len] = '\0';
    colon = strrchr(buf, ':');
    if (colon == NULL || colon == buf) {
        return -1;
    }
    *colon = '\0';
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || port < 1 || port > 65535 || strlen(buf) >= sizeof(ep->host)) {
        return -1;
    }
    memcpy(ep->host, buf, strlen(buf) + 1); /* fits: checked above */
    ep->port = (int)port;
    return 0;
}

static int
parse_url(lock_store_t *s, const char *url, svc_err_t *err)
{
    const char *rest, *slash, *at;

    if (strncmp(url, "redis://", 8) == 0) {
        rest = url + 8;
        at = strchr(rest, '@');
        if (at != NULL) { /* redis://[user]:password@host:port */
            const char *colon = memchr(rest, ':', (size_t)(at - rest));
            if (colon != NULL) {
                snprintf(s->password, sizeof(s->password), "%.*s", (int)(at - colon - 1),
                         colon + 1);
            }
            rest = at + 1;
        }
        slash = strchr(rest, '/');
        if (parse_endpoint(rest, slash ? (size_t)(slash - rest) : strlen(rest), &s->direct) != 0) {
            goto bad;
        }
        if (slash != NULL && slash[1] != '\0') {
            char *end;
            long db = strtol(slash + 1, &end, 10);
            if (*end != '\0' || db < 0 || db > 1000) {
                goto bad;
            }
            s->db = (int)db;
        }
        return 0;
    }
    if (strncmp(url, "redis-sentinel://", 17) == 0) {
        rest = url + 17;
        slash = strchr(rest, '/');
        if (slash == NULL || slash[1] == '\0' || strlen(slash + 1) >= sizeof(s->master_name)) {
            goto bad;
        }
        s->sentinel = true;
        snprintf(s->master_name, sizeof(s->master_name), "%s", slash + 1);
        while (rest < slash) {
            const char *comma = memchr(rest, ',', (size_t)(slash - rest));
            const char *end = comma ? comma : slash;
            if (s->n_sentinels == MAX_SENTINELS ||
                parse_endpoint(rest, (size_t)(end - rest), &s->sentinels[s->n_sentinels]) != 0) {
                goto bad;
            }
            s->n_sentinels++;
            rest = comma ? comma + 1 : slash;
        }
        if (s->n_sentinels == 0) {
            goto bad;
        }
        return 0;
    }
bad:
    svc_err_set(err, SVC_INVALID_ARGUMENT,
                "REDIS_URL must be redis://host:port[/db] or "
                "redis-sentinel://host:port[,host:port...]/mastername");
    return -1;
}

/* ---------- connections ---------- */

static redisContext *
connect_to(const endpoint_t *ep)
{
    struct timeval ct = {0, CONNECT_TIMEOUT_MS * 1000};
    struct timeval rt = {0, COMMAND_TIMEOUT_MS * 1000};
    redisContext *c = redisConnectWithTimeout(ep->host, ep->port, ct);

    if (c == NULL) {
        return NULL;
    }
    if (c->err != 0 || redisSetTimeout(c, rt) != REDIS_OK) {
        redisFree(c);
        return NULL;
    }
    redisEnableKeepAlive(c);
    return c;
}

static redisReply *
command_argv(redisContext *c, int argc, const char **argv)
{
    return redisCommandArgv(c, argc, argv, NULL);
}

/* Asks the Sentinels, in order, where the master is. */
static int
discover_master(lock_store_t *s, endpoint_t *out)
{
    for (int i = 0; i < s->n_sentinels; i++) {
        redisContext *c = connect_to(&s->sentinels[i]);
        redisReply *r;
        int found = 0;

        if (c == NULL) {
            continue;
        }
        r = redisCommand(c, "SENTINEL get-master-addr-by-name %s", s->master_name);
        if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            r->element[0]->type == REDIS_REPLY_STRING &&
            r->element[1]->type == REDIS_REPLY_STRING) {
            snprintf(out->host, sizeof(out->host), "%s", r->element[0]->str);
            out->port = atoi(r->element[1]->str);
            found = out->port > 0;
        }
        freeReplyObject(r);
        redisFree(c);
        if (found) {
            return 0;
        }
    }
    return -1;
}

/* Runs a command expecting a status or any non-error reply. */
static int
simple_command(redisContext *c, int argc, const char **argv)
{
    redisReply *r = command_argv(c, argc, argv);
    int ok = r != NULL && r->type != REDIS_REPLY_ERROR;

    freeReplyObject(r);
    return ok ? 0 : -1;
}

/*
 * A ready connection to the master: authenticated, on the right db, scripts
 * loaded. In Sentinel mode the server must say it is the master.
 */
static redisContext *
store_connect(lock_store_t *s, char (*shas)[41], svc_err_t *err)
{
    endpoint_t ep;
    redisContext *c;

    if (s->sentinel) {
        pthread_mutex_lock(&s->mu);
        bool have = s->have_master;
        ep = s->master;
        pthread_mutex_unlock(&s->mu);
        if (!have) {
            if (discover_master(s, &ep) != 0) {
                svc_err_set(err, SVC_UNAVAILABLE, "no sentinel knows master %s", s->master_name);
                return NULL;
            }
            pthread_mutex_lock(&s->mu);
            s->master = ep;
            s->have_master = true;
            pthread_mutex_unlock(&s->mu);
        }
    } else {
        ep = s->direct;
    }
    c = connect_to(&ep);
    if (c == NULL) {
        goto unavailable;
    }
    if (s->password[0] != '\0') {
        const char *argv[] = {"AUTH", s->password};
        if (simple_command(c, 2, argv) != 0) {
            goto unavailable;
        }
    }
    if (s->db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", s->db);
        const char *argv[] = {"SELECT", db};
        if (simple_command(c, 2, argv) != 0) {
            goto unavailable;
        }
    }
    if (s->sentinel) {
        redisReply *r = redisCommand(c, "ROLE");
        bool master = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                      r->element[0]->type == REDIS_REPLY_STRING &&
                      strcmp(r->element[0]->str, "master") == 0;
        freeReplyObject(r);
        if (!master) {
            goto unavailable;
        }
    }
    for (int i = 0; i < SCRIPT_COUNT; i++) {
        redisReply *r = redisCommand(c, "SCRIPT LOAD %s", scripts[i]);
        if (r == NULL || r->type != REDIS_REPLY_STRING || r->len != 40) {
            freeReplyObject(r);
            goto unavailable;
        }
        if (shas != NULL) {
            memcpy(shas[i], r->str, 41);
        }
        freeReplyObject(r);
    }
    return c;

unavailable:
    if (c != NULL) {
        redisFree(c);
    }
    if (s->sentinel) { /* ask the Sentinels again next time */
        pthread_mutex_lock(&s->mu);
        s->have_master = false;
        pthread_mutex_unlock(&s->mu);
    }
    svc_err_set(err, SVC_UNAVAILABLE, "redis unavailable at %s:%d", ep.host, ep.port);
    return NULL;
}

static void
store_give(lock_store_t *s, int slot, bool broken)
{
    bool forget_master = false;

    if (broken && s->slots[slot].ctx != NULL) {
        redisFree(s->slots[slot].ctx);
        s->slots[slot].ctx = NULL;
        forget_master = s->sentinel;
    }
    pthread_mutex_lock(&s->mu);
    if (forget_master) {
        s->have_master = false;
    }
    s->free_slots[s->n_free++] = slot;
    if (s->n_free == 1) {
        pthread_cond_signal(&s->cv); /* only a taker that found none can be waiting */
    }
    pthread_mutex_unlock(&s->mu);
}

/* A connection slot, connected; -1 with err UNAVAILABLE when Redis cannot be reached. */
static int
store_take(lock_store_t *s, svc_err_t *err)
{
    int slot;

    pthread_mutex_lock(&s->mu);
    while (s->n_free == 0) {
        pthread_cond_wait(&s->cv, &s->mu);
    }
    slot = s->free_slots[--s->n_free];
    pthread_mutex_unlock(&s->mu);
    if (s->slots[slot].ctx == NULL) {
        s->slots[slot].ctx = store_connect(s, s->slots[slot].shas, err);
        if (s->slots[slot].ctx == NULL) {
            store_give(s, slot, false);
            return -1;
        }
    }
    return slot;
}

/*
 * Runs script `which` with the keys and args; returns the reply (caller frees)
 * or NULL with err UNAVAILABLE. Falls back to EVAL when Redis lost its script cache.
 */
static redisReply *
run_script(lock_store_t *s, int which, int n_keys, const char **keys, int n_args, const char **args,
           svc_err_t *err)
{
    const char *argv[16];
    char numkeys[8];
    redisReply *r;
    int slot, argc = 0;
    bool broken = false;

    slot = store_take(s, err);
    if (slot < 0) {
        return NULL;
    }
    snprintf(numkeys, sizeof(numkeys), "%d", n_keys);
    argv[argc++] = "EVALSHA";
    argv[argc++] = s->slots[slot].shas[which];
    argv[argc++] = numkeys;
    for (int i = 0; i < n_keys; i++) {
        argv[argc++] = keys[i];
    }
    for (int i = 0; i < n_args; i++) {
        argv[argc++] = args[i];
    }
    r = command_argv(s->slots[slot].ctx, argc, argv);
    if (r != NULL && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        freeReplyObject(r);
        argv[0] = "EVAL";
        argv[1] = scripts[which];
        r = command_argv(s->slots[slot].ctx, argc, argv);
    }
    if (r == NULL) {
        svc_err_set(err, SVC_UNAVAILABLE, "redis unavailable: %s",
                    s->slots[slot].ctx->errstr[0] ? s->slots[slot].ctx->errstr : "no reply");
        broken = true;
    } else if (r->type == REDIS_REPLY_ERROR) {
        /* READONLY (a demoted master), LOADING, OOM...: not the client's fault. */
        svc_logf(SVC_LOG_WARN, "redis error: %.200s", r->str);
        svc_err_set(err, SVC_UNAVAILABLE, "redis refused the command");
        broken = strncmp(r->str, "READONLY", 8) == 0 || strncmp(r->str, "LOADING", 7) == 0;
        freeReplyObject(r);
        r = NULL;
    }
    store_give(s, slot, broken);
    return r;
}

/* Where the master is, for the async engine's (re)connections. */
static int
store_locate(void *arg, char *host, size_t len, int *port)
{
    lock_store_t *s = arg;
    endpoint_t ep;

    if (!s->sentinel) {
        ep = s->direct;
    } else if (discover_master(s, &ep) != 0) {
        return -1;
    }
    snprintf(host, len, "%s", ep.host);
    *port = ep.port;
    return 0;
}

static void orphans_tick(void *arg);

/* ---------- public ---------- */

lock_store_t *
lock_store_create(const char *url, int pool_size, svc_err_t *err)
{
    lock_store_t *s = calloc(1, sizeof(*s));

    if (s == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    if (url == NULL || parse_url(s, url, err) != 0) {
        if (url == NULL) {
            svc_err_set(err, SVC_INVALID_ARGUMENT, "REDIS_URL is not set");
        }
        free(s);
        return NULL;
    }
    s->n_slots = pool_size > 0 ? pool_size : 16;
    s->slots = calloc((size_t)s->n_slots, sizeof(*s->slots));
    s->free_slots = calloc((size_t)s->n_slots, sizeof(*s->free_slots));
    if (s->slots == NULL || s->free_slots == NULL) {
        free(s->slots);
        free(s->free_slots);
        free(s);
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    for (int i = 0; i < s->n_slots; i++) {
        s->free_slots[i] = s->n_slots - 1 - i;
    }
    s->n_free = s->n_slots;
    lock_store_new_token(s->instance);
    lock_redis_opts_t ropts = {
        .locate = store_locate,
        .locate_arg = s,
        .password = s->password,
        .db = s->db,
        .check_master = s->sentinel,
        .scripts = scripts,
        .n_scripts = SCRIPT_COUNT,
        .timeout_ms = COMMAND_TIMEOUT_MS,
        .tick = orphans_tick,
        .tick_arg = s,
    };
    s->async = lock_redis_create(&ropts, err);
    if (s->async == NULL) {
        free(s->slots);
        free(s->free_slots);
        free(s);
        return NULL;
    }
    s->sub_fd = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    return s;
}

void
lock_store_unsubscribe(lock_store_t *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    if (s->sub_fd >= 0) {
        shutdown(s->sub_fd, SHUT_RDWR); /* wakes the subscriber from its read */
    }
    pthread_mutex_unlock(&s->mu);
    if (s->sub_running) {
        pthread_join(s->sub_thread, NULL);
        s->sub_running = false;
    }
}

void
lock_store_destroy(lock_store_t *s)
{
    if (s == NULL) {
        return;
    }
    lock_store_unsubscribe(s);
    lock_redis_destroy(s->async);
    while (s->orphans != NULL) { /* left to their leases */
        orphan_t *o = s->orphans;
        s->orphans = o->next;
        free(o);
    }
    for (int i = 0; i < s->n_slots; i++) {
        if (s->slots[i].ctx != NULL) {
            redisFree(s->slots[i].ctx);
        }
    }
    free(s->slots);
    free(s->free_slots);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static void
key_name(char *buf, size_t len, const char *key, const char *suffix)
{
    /* {key} is a hash tag: the lock, its fence and its waiters share a cluster slot. */
    snprintf(buf, len, "lock:{%s}%s", key, suffix);
}

/* ---------- replies (shared by the blocking and the async calls) ---------- */

/* A reply the async engine got: NULL means Redis is unreachable; an error reply is logged. */
static bool
reply_ok(const redisReply *r, svc_err_t *err)
{
    if (r == NULL) {
        svc_err_set(err, SVC_UNAVAILABLE, "redis unavailable");
        return false;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        svc_logf(SVC_LOG_WARN, "redis error: %.200s", r->str);
        svc_err_set(err, SVC_UNAVAILABLE, "redis refused the command");
        return false;
    }
    return true;
}

static int
parse_acquire(const redisReply *r, lock_acquire_result_t *out, svc_err_t *err)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_INTEGER) {
        svc_err_set(err, SVC_UNAVAILABLE, "unexpected reply from redis");
        return -1;
    }
    out->granted = r->element[0]->integer == 1;
    out->fence = out->granted ? r->element[1]->integer : 0;
    out->holder_ms = out->granted ? 0 : r->element[1]->integer;
    svc_err_clear(err);
    return 0;
}

/* Release and extend answer 1 done, 0 not held, -1 another token. */
static int
parse_compare(const redisReply *r, const char *key, svc_err_t *err)
{
    long long result = r->type == REDIS_REPLY_INTEGER ? r->integer : -2;

    if (result == 1) {
        svc_err_clear(err);
        return 0;
    }
    if (result == 0) {
        svc_err_set(err, SVC_NOT_FOUND, "no lock is held on %s", key);
    } else if (result == -1) {
        svc_err_set(err, SVC_FAILED_PRECONDITION, "lock %s is held with another token", key);
    } else {
        svc_err_set(err, SVC_UNAVAILABLE, "unexpected reply from redis");
    }
    return -1;
}

static int
parse_get(const redisReply *r, lock_info_t *out, svc_err_t *err)
{
    memset(out, 0, sizeof(*out));
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
        svc_err_set(err, SVC_UNAVAILABLE, "unexpected reply from redis");
        return -1;
    }
    if (r->element[0]->type == REDIS_REPLY_STRING) {
        /* token \n fence \n owner: the token stays here. */
        char *v = r->element[0]->str;
        char *nl1 = strchr(v, '\n');
        char *nl2 = nl1 ? strchr(nl1 + 1, '\n') : NULL;
        if (nl2 != NULL) {
            out->held = true;
            out->fence = strtoll(nl1 + 1, NULL, 10);
            snprintf(out->owner, sizeof(out->owner), "%s", nl2 + 1);
        }
    }
    out->ttl_ms = r->element[1]->type == REDIS_REPLY_INTEGER ? r->element[1]->integer : -1;
    out->waiters = r->element[2]->type == REDIS_REPLY_INTEGER ? (int)r->element[2]->integer : 0;
    svc_err_clear(err);
    return 0;
}

/* ---------- script arguments ---------- */

typedef struct {
    char lock_key[256], fence_key[256], waiters_key[256];
    char n1[24], n2[24], n3[24];
    char message[SVC_LOCK_MESSAGE_MAX];
} script_args_t;

static void
acquire_args(script_args_t *a, const char *key, int64_t lease_ms, int64_t floor, int64_t until)
{
    key_name(a->lock_key, sizeof(a->lock_key), key, "");
    key_name(a->fence_key, sizeof(a->fence_key), key, ":fence");
    key_name(a->waiters_key, sizeof(a->waiters_key), key, ":waiters");
    snprintf(a->n1, sizeof(a->n1), "%lld", (long long)lease_ms);
    snprintf(a->n2, sizeof(a->n2), "%lld", (long long)floor);
    snprintf(a->n3, sizeof(a->n3), "%lld", (long long)until);
}

/* "key\ninstance": this instance skips its own echo when it wakes its waiters itself. */
static void
release_args(lock_store_t *s, script_args_t *a, const char *key, bool woken_here)
{
    key_name(a->lock_key, sizeof(a->lock_key), key, "");
    snprintf(a->message, sizeof(a->message), "%s%s%s", key, woken_here ? "\n" : "",
             woken_here ? s->instance : "");
}

/* ---------- blocking calls (the benchmark's raw path) ---------- */

int
lock_store_acquire(lock_store_t *s, const char *key, const char *token, const char *owner,
                   int64_t lease_ms, int64_t fence_floor, const char *waiter_id,
                   int64_t wait_until_ms, lock_acquire_result_t *out, svc_err_t *err)
{
    script_args_t a;
    const char *keys[] = {a.lock_key, a.fence_key, a.waiters_key};
    const char *args[] = {token, owner, a.n1, a.n2, waiter_id != NULL ? waiter_id : "", a.n3};
    redisReply *r;
    int rc;

    acquire_args(&a, key, lease_ms, fence_floor, wait_until_ms);
    r = run_script(s, SCRIPT_ACQUIRE, 3, keys, 6, args, err);
    if (r == NULL) {
        return -1;
    }
    rc = parse_acquire(r, out, err);
    freeReplyObject(r);
    return rc;
}

int
lock_store_release(lock_store_t *s, const char *key, const char *token, bool woken_here,
                   svc_err_t *err)
{
    script_args_t a;
    const char *keys[] = {a.lock_key};
    const char *args[] = {token, RELEASE_CHANNEL, a.message};
    redisReply *r;
    int rc;

    release_args(s, &a, key, woken_here);
    r = run_script(s, SCRIPT_RELEASE, 1, keys, 3, args, err);
    if (r == NULL) {
        return -1;
    }
    rc = parse_compare(r, key, err);
    freeReplyObject(r);
    return rc;
}

/* ---------- async calls (lock-svc's path): callbacks run on the Redis thread ---------- */

typedef struct {
    lock_store_cb cb;
    void *arg;
    int kind; /* SCRIPT_* */
    char key[SVC_LOCK_KEY_MAX + 1];
    lock_store_t *s;                /* acquire: where a lost reply is remembered */
    char token[LOCK_TOKEN_LEN + 1]; /* acquire */
    int64_t lease_ms;               /* acquire */
} async_ctx_t;

/* ---------- acquires whose reply was lost (Redis I/O thread) ---------- */

static void
orphan_add(lock_store_t *s, const char *key, const char *token, int64_t lease_ms)
{
    static svc_log_limit_t limit = SVC_LOG_LIMIT_INIT(5);
    int64_t now = svc_now_mono_ms();
    orphan_t *o;

    if (s->n_orphans >= MAX_ORPHANS || (o = calloc(1, sizeof(*o))) == NULL) {
        svc_logf_limited(&limit, SVC_LOG_WARN,
                         "reply to an acquire of %s lost; too many to track, its lease frees it",
                         key);
        return;
    }
    o->s = s;
    snprintf(o->key, sizeof(o->key), "%s", key);
    snprintf(o->token, sizeof(o->token), "%s", token);
    o->until_ms = now + (lease_ms > 0 && lease_ms <= MAX_LEASE_MS ? lease_ms : MAX_LEASE_MS);
    o->retry_ms = now;
    o->next = s->orphans;
    s->orphans = o;
    s->n_orphans++;
    svc_logf_limited(&limit, SVC_LOG_WARN,
                     "reply to an acquire of %s lost; releasing it once redis answers", key);
}

static void
orphan_remove(orphan_t *o)
{
    lock_store_t *s = o->s;

    for (orphan_t **pp = &s->orphans; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == o) {
            *pp = o->next;
            s->n_orphans--;
            free(o);
            return;
        }
    }
}

/*
 * The release's answer. 1: it was ours and is free now. -1: someone else
 * holds the key, so ours never ran or is gone. 0 (not held) is believed only
 * after ORPHAN_SETTLE_MS: the dropped connection's bytes (holding the
 * acquire) may be read by Redis after the new connection's release.
 */
static void
orphan_released(redisReply *reply, bool lost, void *arg)
{
    orphan_t *o = arg;
    int64_t now = svc_now_mono_ms();

    (void)lost; /* a release may be repeated */
    o->in_flight = false;
    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        o->retry_ms = now + ORPHAN_RETRY_MS;
        return;
    }
    if (reply->integer == 1) {
        svc_logf(SVC_LOG_INFO, "released %s, taken by an acquire whose reply was lost", o->key);
        orphan_remove(o);
    } else if (reply->integer == 0 && (o->settle_ms == 0 || now < o->settle_ms)) {
        if (o->settle_ms == 0) {
            o->settle_ms = now + ORPHAN_SETTLE_MS;
        }
        o->retry_ms = now + ORPHAN_RETRY_MS;
    } else {
        orphan_remove(o);
    }
}

/* Queues a compare-and-delete for each lost acquire that is due. */
static void
orphans_tick(void *arg)
{
    lock_store_t *s = arg;
    int64_t now = svc_now_mono_ms();
    orphan_t *o = s->orphans, *next;
    int queued = 0;

    for (; o != NULL && queued < ORPHANS_PER_TICK; o = next) {
        next = o->next;
        if (o->in_flight) {
            continue;
        }
        if (now >= o->until_ms) {
            orphan_remove(o); /* its lease has freed it */
            continue;
        }
        if (now >= o->retry_ms) {
            script_args_t a;
            const char *keys[] = {a.lock_key};
            const char *args[] = {o->token, RELEASE_CHANNEL, a.message};

            /* Published without woken_here: this instance's waiters hear it too. */
            release_args(s, &a, o->key, false);
            o->in_flight = true;
            queued++;
            lock_redis_script(s->async, SCRIPT_RELEASE, 1, keys, 3, args, orphan_released, o);
        }
    }
}

static void
async_done(redisReply *reply, bool lost, void *arg)
{
    async_ctx_t *ctx = arg;
    lock_store_result_t res;
    svc_err_t err;
    int rc = -1;

    if (lost && ctx->kind == SCRIPT_ACQUIRE && ctx->s != NULL) {
        orphan_add(ctx->s, ctx->key, ctx->token, ctx->lease_ms);
    }
    memset(&res, 0, sizeof(res));
    if (reply_ok(reply, &err)) {
        switch (ctx->kind) {
        case SCRIPT_ACQUIRE:
            rc = parse_acquire(reply, &res.acquire, &err);
            break;
        case SCRIPT_GET:
            rc = parse_get(reply, &res.info, &err);
            break;
        default:
            rc = parse_compare(reply, ctx->key, &err);
        }
    }
    (void)rc;
    if (ctx->cb != NULL) {
        ctx->cb(&res, &err, ctx->arg);
    }
    free(ctx);
}

static async_ctx_t *
async_ctx(lock_store_cb cb, void *arg, int kind, const char *key)
{
    async_ctx_t *ctx = malloc(sizeof(*ctx));

    if (ctx == NULL) {
        svc_err_t err;
        svc_err_set(&err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        if (cb != NULL) {
            cb(NULL, &err, arg);
        }
        return NULL;
    }
    ctx->cb = cb;
    ctx->arg = arg;
    ctx->kind = kind;
    snprintf(ctx->key, sizeof(ctx->key), "%s", key);
    ctx->s = NULL;
    ctx->token[0] = '\0';
    ctx->lease_ms = 0;
    return ctx;
}

void
lock_store_acquire_async(lock_store_t *s, const char *key, const char *token, const char *owner,
                         int64_t lease_ms, int64_t fence_floor, const char *waiter_id,
                         int64_t wait_until_ms, lock_store_cb cb, void *arg)
{
    script_args_t a;
    const char *keys[] = {a.lock_key, a.fence_key, a.waiters_key};
    const char *args[] = {token, owner, a.n1, a.n2, waiter_id != NULL ? waiter_id : "", a.n3};
    async_ctx_t *ctx = async_ctx(cb, arg, SCRIPT_ACQUIRE, key);

    if (ctx != NULL) {
        ctx->s = s;
        snprintf(ctx->token, sizeof(ctx->token), "%s", token);
        ctx->lease_ms = lease_ms;
        acquire_args(&a, key, lease_ms, fence_floor, wait_until_ms);
        lock_redis_script(s->async, SCRIPT_ACQUIRE, 3, keys, 6, args, async_done, ctx);
    }
}

void
lock_store_release_async(lock_store_t *s, const char *key, const char *token, bool woken_here,
                         lock_store_cb cb, void *arg)
{
    script_args_t a;
    const char *keys[] = {a.lock_key};
    const char *args[] = {token, RELEASE_CHANNEL, a.message};
    async_ctx_t *ctx = async_ctx(cb, arg, SCRIPT_RELEASE, key);

    if (ctx != NULL) {
        release_args(s, &a, key, woken_here);
        lock_redis_script(s->async, SCRIPT_RELEASE, 1, keys, 3, args, async_done, ctx);
    }
}

void
lock_store_extend_async(lock_store_t *s, const char *key, const char *token, int64_t lease_ms,
                        lock_store_cb cb, void *arg)
{
    script_args_t a;
    const char *keys[] = {a.lock_key};
    const char *args[] = {token, a.n1};
    async_ctx_t *ctx = async_ctx(cb, arg, SCRIPT_EXTEND, key);

    if (ctx != NULL) {
        key_name(a.lock_key, sizeof(a.lock_key), key, "");
        snprintf(a.n1, sizeof(a.n1), "%lld", (long long)lease_ms);
        lock_redis_script(s->async, SCRIPT_EXTEND, 1, keys, 2, args, async_done, ctx);
    }
}

void
lock_store_get_async(lock_store_t *s, const char *key, int64_t now_ms, lock_store_cb cb, void *arg)
{
    script_args_t a;
    const char *keys[] = {a.lock_key, a.waiters_key};
    const char *args[] = {a.n1};
    async_ctx_t *ctx = async_ctx(cb, arg, SCRIPT_GET, key);

    if (ctx != NULL) {
        key_name(a.lock_key, sizeof(a.lock_key), key, "");
        key_name(a.waiters_key, sizeof(a.waiters_key), key, ":waiters");
        snprintf(a.n1, sizeof(a.n1), "%lld", (long long)now_ms);
        lock_redis_script(s->async, SCRIPT_GET, 2, keys, 1, args, async_done, ctx);
    }
}

void
lock_store_waiter_add_async(lock_store_t *s, const char *key, const char *waiter_id,
                            int64_t until_ms)
{
    script_args_t a;
    const char *keys[] = {a.waiters_key};
    const char *args[] = {a.n1, waiter_id};

    key_name(a.waiters_key, sizeof(a.waiters_key), key, ":waiters");
    snprintf(a.n1, sizeof(a.n1), "%lld", (long long)until_ms);
    lock_redis_script(s->async, SCRIPT_WAITER, 1, keys, 2, args, NULL, NULL);
}

void
lock_store_waiter_remove_async(lock_store_t *s, const char *key, const char *waiter_id)
{
    char waiters_key[256];
    const char *argv[] = {"ZREM", waiters_key, waiter_id};

    key_name(waiters_key, sizeof(waiters_key), key, ":waiters");
    lock_redis_command(s->async, 3, argv, NULL, NULL);
}

void
lock_store_new_token(char *buf)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[LOCK_TOKEN_LEN / 2];

    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
        abort(); /* a guessable token would let anyone release the lock */
    }
    for (size_t i = 0; i < sizeof(raw); i++) {
        buf[2 * i] = hex[raw[i] >> 4];
        buf[2 * i + 1] = hex[raw[i] & 15];
    }
    buf[LOCK_TOKEN_LEN] = '\0';
}

/* ---------- the release channel ---------- */

/* Reads one reply, waiting at most timeout_ms. 1 got one, 0 timed out, -1 broken. */
static int
sub_read(redisContext *c, int timeout_ms, redisReply **reply)
{
    struct pollfd pfd = {c->fd, POLLIN, 0};
    void *r = NULL;

    *reply = NULL;
    if (redisGetReplyFromReader(c, &r) != REDIS_OK) {
        return -1;
    }
    if (r != NULL) {
        *reply = r;
        return 1;
    }
    int n = poll(&pfd, 1, timeout_ms);
    if (n == 0) {
        return 0;
    }
    if (n < 0 && errno == EINTR) {
        return 0;
    }
    if (n < 0 || redisBufferRead(c) != REDIS_OK || redisGetReplyFromReader(c, &r) != REDIS_OK) {
        return -1;
    }
    *reply = r;
    return r != NULL ? 1 : 0;
}

/* Follows one subscription until it breaks or we stop. */
static void
sub_follow(lock_store_t *s, redisContext *c)
{
    int64_t quiet_ms = 0, ping_sent_ms = -1;

    for (;;) {
        redisReply *r;
        int rc = sub_read(c, 200, &r);

        pthread_mutex_lock(&s->mu);
        bool stopping = s->stopping;
        pthread_mutex_unlock(&s->mu);
        if (rc < 0 || stopping) {
            freeReplyObject(r);
            return;
        }
        if (rc == 0) {
            quiet_ms += 200;
            if (ping_sent_ms >= 0 && quiet_ms - ping_sent_ms > SUB_PONG_WITHIN_MS) {
                svc_logf(SVC_LOG_WARN, "release channel silent, reconnecting");
                return;
            }
            if (ping_sent_ms < 0 && quiet_ms > SUB_PING_AFTER_MS) {
                int done = 0;
                if (redisAppendCommand(c, "PING") != REDIS_OK) {
                    return;
                }
                while (!done) {
                    if (redisBufferWrite(c, &done) != REDIS_OK) {
                        return;
                    }
                }
                ping_sent_ms = quiet_ms;
            }
            continue;
        }
        quiet_ms = 0;
        ping_sent_ms = -1;
        /* ["message", channel, key]; pongs and (un)subscribe confirmations are skipped. */
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
            r->element[0]->type == REDIS_REPLY_STRING &&
            strcmp(r->element[0]->str, "message") == 0 &&
            r->element[2]->type == REDIS_REPLY_STRING) {
            char *key = r->element[2]->str;
            char *nl = strchr(key, '\n');
            if (nl != NULL) {
                *nl = '\0';
            }
            if (nl == NULL || strcmp(nl + 1, s->instance) != 0) {
                s->sub_fn(key, s->sub_arg);
            }
        }
        freeReplyObject(r);
    }
}

static void *
sub_thread(void *arg)
{
    lock_store_t *s = arg;
    bool was_down = false;

    for (;;) {
        svc_err_t err;
        pthread_mutex_lock(&s->mu);
        bool stopping = s->stopping;
        pthread_mutex_unlock(&s->mu);
        if (stopping) {
            break;
        }
        redisContext *c = store_connect(s, NULL, &err);
        if (c != NULL) {
            redisReply *r = redisCommand(c, "SUBSCRIBE %s", RELEASE_CHANNEL);
            bool ok = r != NULL && r->type == REDIS_REPLY_ARRAY;
            freeReplyObject(r);
            if (ok) {
                if (was_down) {
                    svc_logf(SVC_LOG_INFO, "release channel back");
                }
                was_down = false;
                pthread_mutex_lock(&s->mu);
                s->sub_fd = c->fd;
                stopping = s->stopping;
                pthread_mutex_unlock(&s->mu);
                /* Messages may have been missed while we were away: everyone re-checks. */
                s->sub_fn(NULL, s->sub_arg);
                if (!stopping) {
                    sub_follow(s, c);
                }
                pthread_mutex_lock(&s->mu);
                s->sub_fd = -1;
                pthread_mutex_unlock(&s->mu);
            }
            redisFree(c);
        }
        pthread_mutex_lock(&s->mu);
        stopping = s->stopping;
        pthread_mutex_unlock(&s->mu);
        if (stopping) {
            break;
        }
        if (!was_down) {
            svc_logf(SVC_LOG_WARN, "release channel lost, reconnecting");
            was_down = true;
        }
        svc_sleep_ms(200);
    }
    return NULL;
}

int
lock_store_subscribe(lock_store_t *s, lock_release_fn fn, void *arg, svc_err_t *err)
{
    s->sub_fn = fn;
    s->sub_arg = arg;
    if (pthread_create(&s->sub_thread, NULL, sub_thread, s) != 0) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "cannot start the subscriber thread");
        return -1;
    }
    s->sub_running = true;
    return 0;
}
