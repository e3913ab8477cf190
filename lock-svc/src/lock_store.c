/*
 * lock_store.c: lock-svc's Redis side: the Lua scripts, the calls that run
 * them over lock_redis's lanes, lost answers, this instance's liveness key
 * and its grant channel, and Sentinel.
 *
 * The design in one place (lock_waiters.c holds the in-process half):
 *
 * - Every key K has, in Redis, its lock `lock:{K}` ("token\nfence\nowner",
 *   PX lease), its fence counter `lock:{K}:fence`, and its line of waiters:
 *   `lock:{K}:line`, a sorted set of tokens by arrival, and
 *   `lock:{K}:waiting`, a hash token -> "instance\ndeadline\nlease\nowner"
 *   (deadline in Redis's clock, unix ms). The line is the one FIFO of the key
 *   across all lock-svc instances; a waiter's token is made by its instance
 *   when it queues, before its Acquire is answered.
 * - Hand-off in one round trip: release deletes the lock and, in the same
 *   script, gives it to the first live entry of the line (hand_off below):
 *   SET with the entry's token, the next fence, and the entry leaves the
 *   line. An entry is skipped (and dropped) when its deadline has passed or
 *   its instance is not alive (`lock-svc:instance:<id>`, PX 2 s, refreshed
 *   every 500 ms by lane 0's tick). A waiter of the instance running the
 *   script is answered from the script's reply (LOCK_EV_HANDED_HERE). A
 *   waiter of another instance is told on that instance's channel
 *   `lock.v1:grant:<id>` and holds the lock for 2 s only, until
 *   its instance confirms with acquire (same token), which renews the whole
 *   lease: a grant to an instance that died just before cannot keep the key
 *   for a whole lease. The granting instance checks back after 2 s
 *   (LOCK_EV_HANDED_AWAY) and hands on an unconfirmed grant.
 * - Acquire gives a free lock to the line first, so a lease that ran out is
 *   handed in FIFO order; a waiter's instance arms a timer for the holder's
 *   lease and runs promote when it is due (every instance with waiters on a
 *   key does; the scripts are atomic, the first one hands over).
 * - A waiter that stops waiting (its wait_ms, its call's deadline or
 *   cancellation) leaves the line with leave, which also gives the lock on
 *   if the waiter got it meanwhile. A hand-off to a token nobody here waits
 *   for any more is given back the same way, at once.
 * - Lost answers: an acquire whose reply was lost (Redis stalled past 800 ms
 *   or the connection broke with the script in flight) is undone with leave
 *   once Redis answers again (see orphan_t); any other script on a key whose
 *   answer was lost makes the key's waiters ask again (LOCK_EV_LOST), as do
 *   a new connection, a new subscription, and finding this instance's
 *   liveness key gone (LOCK_EV_RESYNC): acquire with the same token is
 *   idempotent, puts a waiter back in a line that Redis lost, and reports a
 *   hand-off it missed.
 *
 * Per key, all commands go through one lane, so they run in Redis in the
 * order lock-svc sent them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "lock_redis.h"
#include "lock_sem_store.h"
#include "lock_store.h"
#include "svc/log.h"
#include "svc/timer.h"

#define CONNECT_TIMEOUT_MS 500
#define COMMAND_TIMEOUT_MS 800
#define MAX_SENTINELS 8
#define MAX_LANES 64
#define SUB_PING_AFTER_MS 2000
#define SUB_PONG_WITHIN_MS 2000
#define MAX_ORPHANS 4096      /* lost acquires remembered at once, per lane */
#define ORPHANS_PER_TICK 256  /* leaves queued per tick */
#define ORPHAN_RETRY_MS 200   /* between leave attempts while Redis does not answer */
#define ORPHAN_SETTLE_MS 1000 /* how long "not there" is asked again (see orphan_left) */
#define MAX_LEASE_MS 300000
#define LIVE_TTL_MS "2000"  /* an instance is alive while its key lives ... */
#define LIVE_REFRESH_MS 500 /* ... and it renews it this often */
/* Spelt out in the scripts too (lua_prelude, lua_get): change them together. */
#define INSTANCE_PREFIX "lock-svc:instance:"
#define GRANT_CHANNEL_PREFIX "lock.v1:grant:"
#define NAME_MAX_LEN (LOCK_KEY_MAX + 16)

enum {
    SCRIPT_ACQUIRE,
    SCRIPT_RELEASE,
    SCRIPT_EXTEND,
    SCRIPT_PROMOTE,
    SCRIPT_LEAVE,
    SCRIPT_GET,
    SCRIPT_LIVE,
    SCRIPT_SEM_FIRST, /* lock_sem_store's, LOCK_SEM_SCRIPTS of them */
    SCRIPT_COUNT = SCRIPT_SEM_FIRST + LOCK_SEM_SCRIPTS
};

/*
 * Shared by the scripts that may hand the lock over. KEYS: lock, fence,
 * line, waiting. A lock is "token\nfence\nowner"; a line entry is
 * "instance\ndeadline\nlease\nowner" (deadline: unix ms, Redis's clock).
 * These scripts answer {code, n} and, when they handed the lock to the head
 * of the line, {code, n, token, fence, px, here (1/0)}. They run on every
 * acquire and release: they define no more than they use, and a line that
 * does not exist costs one EXISTS.
 */
static const char lua_prelude[] =
    /* The fence floor (ARGV, wall clock in us) keeps fences growing if Redis lost the last one;
       the fence key outlives the lock by an hour, after that the floor alone does. */
    "local function grant(token, owner, px, floor)\n"
    "  local fence = redis.call('INCR', KEYS[2])\n"
    "  if fence < tonumber(floor) then\n"
    "    redis.call('SET', KEYS[2], floor)\n"
    "    fence = tonumber(floor)\n"
    "  end\n"
    "  redis.call('PEXPIRE', KEYS[2], 3600000)\n"
    "  redis.call('SET', KEYS[1], token .. '\\n' .. string.format('%d', fence) .. '\\n' .. owner,"
    " 'PX', px)\n"
    "  return fence\n"
    "end\n"
    /* Gives the free lock to the first live entry of the line: {token, fence, px, here} or nil.
       An entry of another instance holds it 2 s until that instance confirms.
       me: the calling instance (alive: it runs this); name: the key as clients know it. */
    "local function hand_off(me, floor, name)\n"
    "  if redis.call('EXISTS', KEYS[3]) == 0 then return nil end\n"
    "  local t = redis.call('TIME')\n"
    "  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "  while true do\n"
    "    local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]\n"
    "    if not head then return nil end\n"
    "    local e = redis.call('HGET', KEYS[4], head)\n"
    "    redis.call('ZREM', KEYS[3], head)\n"
    "    redis.call('HDEL', KEYS[4], head)\n"
    "    if e then\n"
    "      local inst, deadline, lease, owner ="
    " string.match(e, '^([^\\n]*)\\n([^\\n]*)\\n([^\\n]*)\\n(.*)$')\n"
    "      if inst and tonumber(deadline) > now and (inst == me or"
    " redis.call('EXISTS', 'lock-svc:instance:' .. inst) == 1) then\n"
    "        local px = tonumber(lease)\n"
    "        if inst ~= me and px > 2000 then px = 2000 end\n"
    "        local fence = grant(head, owner, px, floor)\n"
    "        if inst ~= me then\n"
    "          redis.call('PUBLISH', 'lock.v1:grant:' .. inst,"
    " string.format('%d', fence) .. '\\n' .. px .. '\\n' .. head .. '\\n' .. name)\n"
    "        end\n"
    "        return {head, fence, px, inst == me and 1 or 0}\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n";

/*
 * ARGV: token, owner, lease_ms, fence floor, instance, wait_ms, name.
 * {1, fence}: granted; {2, holder's pttl}: queued; {0, holder's pttl}: refused.
 * The same token again: holding, granted with its whole lease from now;
 * queued, queued. The line's keys outlive the longest wait in them by a
 * minute.
 */
static const char lua_acquire[] =
    "local token, lease, wait = ARGV[1], ARGV[3], tonumber(ARGV[6])\n"
    "local v = redis.call('GET', KEYS[1])\n"
    "if v and string.sub(v, 1, #token + 1) == token .. '\\n' then\n"
    "  redis.call('PEXPIRE', KEYS[1], lease)\n"
    "  return {1, tonumber(string.match(v, '^[^\\n]*\\n([^\\n]*)'))}\n"
    "end\n"
    "local h = nil\n"
    "if not v then\n"
    "  h = hand_off(ARGV[5], ARGV[4], ARGV[7])\n"
    "  if not h then return {1, grant(token, ARGV[2], lease, ARGV[4])} end\n"
    "  if h[1] == token then return {1, h[2]} end\n"
    "end\n"
    "local pttl = redis.call('PTTL', KEYS[1])\n"
    "if wait > 0 and not redis.call('ZSCORE', KEYS[3], token) then\n"
    "  local t = redis.call('TIME')\n"
    "  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "  local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')\n"
    "  redis.call('ZADD', KEYS[3], last[2] and tonumber(last[2]) + 1 or 1, token)\n"
    "  redis.call('HSET', KEYS[4], token, ARGV[5] .. '\\n' .. string.format('%d', now + wait) .."
    " '\\n' .. lease .. '\\n' .. ARGV[2])\n"
    "  local keep = math.max(wait + 60000, redis.call('PTTL', KEYS[3]))\n"
    "  redis.call('PEXPIRE', KEYS[3], keep)\n"
    "  redis.call('PEXPIRE', KEYS[4], keep)\n"
    "end\n"
    "local code = wait > 0 and 2 or 0\n"
    "if h then return {code, pttl, h[1], h[2], h[3], h[4]} end\n"
    "return {code, pttl}\n";

/* ARGV: token, instance, fence floor, name. 1 released (and maybe handed on), 0 not held, -1
 * another token. */
static const char lua_release[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if not v then return {0, 0} end\n"
    "if string.sub(v, 1, #ARGV[1] + 1) ~= ARGV[1] .. '\\n' then return {-1, 0} end\n"
    "redis.call('DEL', KEYS[1])\n"
    "local h = hand_off(ARGV[2], ARGV[3], ARGV[4])\n"
    "if h then return {1, 0, h[1], h[2], h[3], h[4]} end\n"
    "return {1, 0}\n";

/* KEYS: lock. ARGV: token, lease_ms. Returns 1 extended, 0 not held, -1 other token. */
static const char lua_extend[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if not v then return 0 end\n"
    "if string.sub(v, 1, #ARGV[1] + 1) ~= ARGV[1] .. '\\n' then return -1 end\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "return 1\n";

/*
 * ARGV: instance, fence floor, name. Held: {3, pttl, '', 0, 0, 0, holder's
 * token, its fence}; free: handed to the head of the line (1) or not (0).
 */
static const char lua_promote[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if v then\n"
    "  local holder, fence = string.match(v, '^([^\\n]*)\\n([^\\n]*)')\n"
    "  return {3, redis.call('PTTL', KEYS[1]), '', 0, 0, 0, holder, tonumber(fence)}\n"
    "end\n"
    "local h = hand_off(ARGV[1], ARGV[2], ARGV[3])\n"
    "if h then return {1, 0, h[1], h[2], h[3], h[4]} end\n"
    "return {0, 0}\n";

/*
 * ARGV: token, instance, fence floor, name. 1: token was in the line or held
 * the lock (given on); 0: neither, and the lock is free; -1: neither, and
 * another token holds it.
 */
static const char lua_leave[] = "local found = redis.call('ZREM', KEYS[3], ARGV[1])\n"
                                "redis.call('HDEL', KEYS[4], ARGV[1])\n"
                                "local v = redis.call('GET', KEYS[1])\n"
                                "if v and string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. '\\n' then\n"
                                "  redis.call('DEL', KEYS[1])\n"
                                "  v = false\n"
                                "  found = 1\n"
                                "end\n"
                                "if v then return {found == 1 and 1 or -1, 0} end\n"
                                "local h = hand_off(ARGV[2], ARGV[3], ARGV[4])\n"
                                "if h then return {found, 0, h[1], h[2], h[3], h[4]} end\n"
                                "return {found, 0}\n";

/* KEYS: lock, waiting. Returns {value or nil, pttl, live waiters}. */
static const char lua_get[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local v = redis.call('GET', KEYS[1])\n"
    "local ttl = redis.call('PTTL', KEYS[1])\n"
    "local all = redis.call('HGETALL', KEYS[2])\n"
    "local n, alive = 0, {}\n"
    "for i = 2, #all, 2 do\n"
    "  local inst, deadline = string.match(all[i], '^([^\\n]*)\\n([^\\n]*)\\n')\n"
    "  if inst and tonumber(deadline) > now then\n"
    "    if alive[inst] == nil then\n"
    "      alive[inst] = redis.call('EXISTS', 'lock-svc:instance:' .. inst) == 1\n"
    "    end\n"
    "    if alive[inst] then n = n + 1 end\n"
    "  end\n"
    "end\n"
    "return {v, ttl, n}\n";

/* KEYS: this instance's liveness key. ARGV: ttl. Returns whether it was still there. */
static const char lua_live[] = "local e = redis.call('EXISTS', KEYS[1])\n"
                               "redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])\n"
                               "return e\n";

typedef struct {
    char host[256];
    int port;
} endpoint_t;

/*
 * A token left behind in a key (an acquire whose reply was lost, or a leave
 * that did not get through). Its caller was told UNAVAILABLE, but Redis may
 * have run the script, or may still run it when it reads what the dropped
 * connection left behind; nobody else has the token, so the key would stay
 * locked for the whole lease, or the line would keep a waiter nobody
 * answers. It leaves as soon as Redis answers again. Touched on its lane's
 * thread only.
 */
typedef struct orphan {
    struct orphan *next;
    struct lock_store *s;
    int lane;
    char key[LOCK_KEY_MAX + 1];
    char token[LOCK_TOKEN_LEN + 1];
    int64_t until_ms;  /* monotonic: the lease is over by then anyway */
    int64_t retry_ms;  /* monotonic: the next attempt */
    int64_t settle_ms; /* monotonic: 0, or until when "not there" is asked again */
    bool in_flight;
} orphan_t;

typedef struct {
    orphan_t *head;
    int n;
} orphan_list_t;

struct lock_store {
    /* from the URL */
    bool sentinel;
    endpoint_t direct;
    endpoint_t sentinels[MAX_SENTINELS];
    int n_sentinels;
    char master_name[128];
    char password[128];
    int db;

    char *scripts[SCRIPT_COUNT];
    lock_redis_t *redis;
    int n_lanes;
    orphan_list_t orphans[MAX_LANES]; /* per lane, on its thread */
    char instance[LOCK_TOKEN_LEN + 1];
    char live_key[64];
    lock_event_fn events;
    void *events_arg;

    /* lane 0's thread only */
    int64_t live_due_ms;
    bool live_in_flight;

    /* subscriber */
    pthread_mutex_t mu;
    pthread_t sub_thread;
    bool sub_running, stopping;
    int sub_fd; /* to wake the subscriber at shutdown; -1 when none */
};

static void orphans_tick(void *arg, int lane);
static void store_on_up(void *arg, int lane);
static void live_refresh(lock_store_t *s);
static void *sub_thread(void *arg);

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

/* ---------- finding the master ---------- */

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

/* Where the master is, for each (re)connection of a lane or the subscriber. */
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

/* ---------- names and numbers ---------- */

/* The names of a key's lock, fence, line and waiting hash; {key} keeps them in one slot. */
typedef struct {
    char lock[NAME_MAX_LEN], fence[NAME_MAX_LEN], line[NAME_MAX_LEN], waiting[NAME_MAX_LEN];
} key_names_t;

static void
key_names(key_names_t *n, const char *key)
{
    size_t len = strnlen(key, LOCK_KEY_MAX);

    /* lock:{key} is the lock; the others add a suffix after the brace. */
    memcpy(n->lock, "lock:{", 6);
    memcpy(n->lock + 6, key, len);
    n->lock[6 + len] = '}';
    n->lock[7 + len] = '\0';
    memcpy(n->fence, n->lock, 7 + len);
    memcpy(n->fence + 7 + len, ":fence", 7);
    memcpy(n->line, n->lock, 7 + len);
    memcpy(n->line + 7 + len, ":line", 6);
    memcpy(n->waiting, n->lock, 7 + len);
    memcpy(n->waiting + 7 + len, ":waiting", 9);
}

/* Decimal of v into buf (at least 21 bytes). */
static const char *
fmt_i64(char *buf, int64_t v)
{
    char tmp[24];
    int n = 0, i = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;

    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u > 0);
    if (v < 0) {
        buf[i++] = '-';
    }
    while (n > 0) {
        buf[i++] = tmp[--n];
    }
    buf[i] = '\0';
    return buf;
}

static unsigned
key_hash(const char *key)
{
    unsigned h = 2166136261u;

    for (; *key; key++) {
        h = (h ^ (unsigned char)*key) * 16777619u;
    }
    return h;
}

int
lock_store_lane(const lock_store_t *s, const char *key)
{
    return (int)(key_hash(key) % (unsigned)s->n_lanes);
}

static void
emit(lock_store_t *s, lock_event_kind_t kind, const char *key, const char *token, int64_t fence,
     int64_t px, int lane)
{
    lock_event_t ev = {kind, key, token, fence, px, lane};

    if (s->events != NULL) {
        s->events(&ev, s->events_arg);
    }
}

/* ---------- replies ---------- */

/* A reply a lane got: NULL means Redis is unreachable; an error reply is logged. */
static bool
reply_ok(const redisReply *r, svc_err_t *err)
{
    static svc_log_limit_t limit = SVC_LOG_LIMIT_INIT(5);

    if (r == NULL) {
        svc_err_set(err, SVC_UNAVAILABLE, "redis unavailable");
        return false;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        svc_logf_limited(&limit, SVC_LOG_WARN, "redis error: %.200s", r->str);
        svc_err_set(err, SVC_UNAVAILABLE, "redis refused the command");
        return false;
    }
    return true;
}

static long long
elem_int(const redisReply *r, size_t i)
{
    return i < r->elements && r->element[i]->type == REDIS_REPLY_INTEGER ? r->element[i]->integer
                                                                         : 0;
}

static const char *
elem_str(const redisReply *r, size_t i)
{
    return i < r->elements && r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : "";
}

/* Release, extend and leave: 1 done, 0 not held, -1 another token. */
static int
code_to_err(long long code, const char *key, svc_err_t *err)
{
    if (code == 1) {
        svc_err_clear(err);
        return 0;
    }
    if (code == 0) {
        svc_err_set(err, SVC_NOT_FOUND, "no lock is held on %s", key);
    } else if (code == -1) {
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
    out->ttl_ms = elem_int(r, 1);
    out->waiters = (int)elem_int(r, 2);
    svc_err_clear(err);
    return 0;
}

/* ---------- calls ---------- */

typedef struct {
    lock_store_t *s;
    lock_store_cb cb;
    void *arg;
    int kind; /* SCRIPT_* */
    int lane;
    bool orphan_if_lost;
    int64_t lease_ms;
    char token[LOCK_TOKEN_LEN + 1];
    char key[LOCK_KEY_MAX + 1];
} call_ctx_t;

static void orphan_add(lock_store_t *s, int lane, const char *key, const char *token,
                       int64_t lease_ms);

/*
 * The reply of a hand-off script: {code, n[, handed token, fence, px, here[,
 * holder, holder's fence]]}. Reports the hand-off, then fills res.
 */
static int
parse_script(call_ctx_t *ctx, const redisReply *r, lock_store_result_t *res, svc_err_t *err)
{
    const char *handed;
    long long code;

    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2) {
        svc_err_set(err, SVC_UNAVAILABLE, "unexpected reply from redis");
        return -1;
    }
    handed = elem_str(r, 2);
    if (handed[0] != '\0') {
        emit(ctx->s, elem_int(r, 5) ? LOCK_EV_HANDED_HERE : LOCK_EV_HANDED_AWAY, ctx->key, handed,
             elem_int(r, 3), elem_int(r, 4), ctx->lane);
    }
    code = elem_int(r, 0);
    svc_err_clear(err);
    switch (ctx->kind) {
    case SCRIPT_ACQUIRE:
        res->outcome = code == 1 ? LOCK_GRANTED : code == 2 ? LOCK_QUEUED : LOCK_REFUSED;
        res->fence = code == 1 ? elem_int(r, 1) : 0;
        res->holder_ms = code == 1 ? 0 : elem_int(r, 1);
        return 0;
    case SCRIPT_PROMOTE:
        res->outcome = code == 3 ? LOCK_HELD : code == 1 ? LOCK_GRANTED : LOCK_REFUSED;
        res->holder_ms = code == 3 ? elem_int(r, 1) : 0;
        snprintf(res->holder, sizeof(res->holder), "%s", elem_str(r, 6));
        res->holder_fence = elem_int(r, 7);
        return 0;
    case SCRIPT_LEAVE:
        res->outcome = code == 1 ? LOCK_GRANTED : LOCK_REFUSED;
        return 0;
    default: /* release */
        res->outcome = code == 1 ? LOCK_GRANTED : LOCK_REFUSED;
        return code_to_err(code, ctx->key, err);
    }
}

static void
call_done(redisReply *reply, bool lost, void *arg)
{
    call_ctx_t *ctx = arg;
    lock_store_result_t res;
    svc_err_t err;

    memset(&res, 0, sizeof(res));
    if (lost && ctx->orphan_if_lost) {
        orphan_add(ctx->s, ctx->lane, ctx->key, ctx->token, ctx->lease_ms);
    }
    if (lost) {
        emit(ctx->s, LOCK_EV_LOST, ctx->key, NULL, 0, 0, ctx->lane);
    }
    if (reply_ok(reply, &err)) {
        switch (ctx->kind) {
        case SCRIPT_GET:
            parse_get(reply, &res.info, &err);
            break;
        case SCRIPT_EXTEND:
            code_to_err(reply->type == REDIS_REPLY_INTEGER ? reply->integer : -2, ctx->key, &err);
            break;
        default:
            parse_script(ctx, reply, &res, &err);
        }
    }
    if (ctx->cb != NULL) {
        ctx->cb(&res, &err, ctx->arg);
    }
    free(ctx);
}

static call_ctx_t *
call_ctx(lock_store_t *s, int kind, const char *key, const char *token, lock_store_cb cb, void *arg)
{
    call_ctx_t *ctx = malloc(sizeof(*ctx));

    if (ctx == NULL) {
        svc_err_t err;
        svc_err_set(&err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        if (cb != NULL) {
            cb(NULL, &err, arg);
        }
        return NULL;
    }
    ctx->s = s;
    ctx->cb = cb;
    ctx->arg = arg;
    ctx->kind = kind;
    ctx->lane = lock_store_lane(s, key);
    ctx->orphan_if_lost = false;
    ctx->lease_ms = 0;
    snprintf(ctx->token, sizeof(ctx->token), "%s", token != NULL ? token : "");
    snprintf(ctx->key, sizeof(ctx->key), "%s", key);
    return ctx;
}

/* Runs a hand-off script (KEYS: lock, fence, line, waiting) for ctx. */
static void
run_keyed(call_ctx_t *ctx, int n_args, const char *const *args)
{
    key_names_t n;
    const char *keys[] = {n.lock, n.fence, n.line, n.waiting};

    key_names(&n, ctx->key);
    lock_redis_script(ctx->s->redis, ctx->lane, ctx->kind, 4, keys, n_args, args, call_done, ctx);
}

void
lock_store_acquire_async(lock_store_t *s, const char *key, const char *token, const char *owner,
                         int64_t lease_ms, int64_t wait_ms, bool orphan_if_lost, lock_store_cb cb,
                         void *arg)
{
    call_ctx_t *ctx = call_ctx(s, SCRIPT_ACQUIRE, key, token, cb, arg);
    char lease[24], floor[24], wait[24];
    const char *args[] = {token,
                          owner,
                          fmt_i64(lease, lease_ms),
                          fmt_i64(floor, svc_now_unix_ms() * 1000),
                          s->instance,
                          fmt_i64(wait, wait_ms),
                          key};

    if (ctx != NULL) {
        ctx->orphan_if_lost = orphan_if_lost;
        ctx->lease_ms = lease_ms;
        run_keyed(ctx, 7, args);
    }
}

void
lock_store_release_async(lock_store_t *s, const char *key, const char *token, lock_store_cb cb,
                         void *arg)
{
    call_ctx_t *ctx = call_ctx(s, SCRIPT_RELEASE, key, token, cb, arg);
    char floor[24];
    const char *args[] = {token, s->instance, fmt_i64(floor, svc_now_unix_ms() * 1000), key};

    if (ctx != NULL) {
        run_keyed(ctx, 4, args);
    }
}

void
lock_store_promote_async(lock_store_t *s, const char *key, lock_store_cb cb, void *arg)
{
    call_ctx_t *ctx = call_ctx(s, SCRIPT_PROMOTE, key, NULL, cb, arg);
    char floor[24];
    const char *args[] = {s->instance, fmt_i64(floor, svc_now_unix_ms() * 1000), key};

    if (ctx != NULL) {
        run_keyed(ctx, 3, args);
    }
}

void
lock_store_leave_async(lock_store_t *s, const char *key, const char *token, lock_store_cb cb,
                       void *arg)
{
    call_ctx_t *ctx = call_ctx(s, SCRIPT_LEAVE, key, token, cb, arg);
    char floor[24];
    const char *args[] = {token, s->instance, fmt_i64(floor, svc_now_unix_ms() * 1000), key};

    if (ctx != NULL) {
        ctx->orphan_if_lost = true; /* until Redis says it is out, it may hold the key */
        ctx->lease_ms = MAX_LEASE_MS;
        run_keyed(ctx, 4, args);
    }
}

void
lock_store_extend_async(lock_store_t *s, const char *key, const char *token, int64_t lease_ms,
                        lock_store_cb cb, void *arg)
{
    call_ctx_t *ctx = call_ctx(s, SCRIPT_EXTEND, key, token, cb, arg);
    key_names_t n;
    char lease[24];
    const char *keys[] = {n.lock};
    const char *args[] = {token, fmt_i64(lease, lease_ms)};

    if (ctx != NULL) {
        key_names(&n, key);
        lock_redis_script(s->redis, ctx->lane, SCRIPT_EXTEND, 1, keys, 2, args, call_done, ctx);
    }
}

void
lock_store_get_async(lock_store_t *s, const char *key, lock_store_cb cb, void *arg)
{
    call_ctx_t *ctx = call_ctx(s, SCRIPT_GET, key, NULL, cb, arg);
    key_names_t n;
    const char *keys[] = {n.lock, n.waiting};

    if (ctx != NULL) {
        key_names(&n, key);
        lock_redis_script(s->redis, ctx->lane, SCRIPT_GET, 2, keys, 0, NULL, call_done, ctx);
    }
}

void
lock_store_sem_script(lock_store_t *s, int lane, int i, int n_keys, const char *const *keys,
                      int n_args, const char *const *args, lock_redis_cb cb, void *arg)
{
    lock_redis_script(s->redis, lane, SCRIPT_SEM_FIRST + i, n_keys, keys, n_args, args, cb, arg);
}

void
lock_store_command(lock_store_t *s, int lane, int argc, const char *const *argv, lock_redis_cb cb,
                   void *arg)
{
    lock_redis_command(s->redis, lane, argc, argv, cb, arg);
}

redisContext *
lock_store_connect(lock_store_t *s, int timeout_ms)
{
    struct timeval rt = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    endpoint_t ep;
    redisContext *c;
    redisReply *r;
    bool ok = true;

    if (store_locate(s, ep.host, sizeof(ep.host), &ep.port) != 0 || (c = connect_to(&ep)) == NULL) {
        return NULL;
    }
    if (s->password[0] != '\0') {
        r = redisCommand(c, "AUTH %s", s->password);
        ok = r != NULL && r->type != REDIS_REPLY_ERROR;
        freeReplyObject(r);
    }
    if (ok && s->db != 0) {
        r = redisCommand(c, "SELECT %d", s->db);
        ok = r != NULL && r->type != REDIS_REPLY_ERROR;
        freeReplyObject(r);
    }
    if (!ok || redisSetTimeout(c, rt) != REDIS_OK) {
        redisFree(c);
        return NULL;
    }
    return c;
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

/* ---------- tokens left behind (each lane's thread) ---------- */

static void
orphan_add(lock_store_t *s, int lane, const char *key, const char *token, int64_t lease_ms)
{
    static svc_log_limit_t limit = SVC_LOG_LIMIT_INIT(5);
    orphan_list_t *list = &s->orphans[lane];
    int64_t now = svc_now_mono_ms();
    orphan_t *o;

    if (list->n >= MAX_ORPHANS || (o = calloc(1, sizeof(*o))) == NULL) {
        svc_logf_limited(&limit, SVC_LOG_WARN,
                         "reply about %s lost; too many to track, its lease frees it", key);
        return;
    }
    o->s = s;
    o->lane = lane;
    snprintf(o->key, sizeof(o->key), "%s", key);
    snprintf(o->token, sizeof(o->token), "%s", token);
    o->until_ms = now + (lease_ms > 0 && lease_ms <= MAX_LEASE_MS ? lease_ms : MAX_LEASE_MS);
    o->retry_ms = now;
    o->next = list->head;
    list->head = o;
    list->n++;
    svc_logf_limited(&limit, SVC_LOG_WARN,
                     "reply about %s lost; taking its token out once redis answers", key);
}

static void
orphan_remove(orphan_t *o)
{
    orphan_list_t *list = &o->s->orphans[o->lane];

    for (orphan_t **pp = &list->head; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == o) {
            *pp = o->next;
            list->n--;
            free(o);
            return;
        }
    }
}

/*
 * The leave's answer. 1: the token was there (lock or line) and is out now.
 * -1: someone else holds the key and the token was nowhere, so ours never
 * ran or is gone. 0 (nowhere, the lock free) is believed only after
 * ORPHAN_SETTLE_MS: the dropped connection's bytes may be read by Redis
 * after the new connection's leave.
 */
static void
orphan_left(redisReply *reply, bool lost, void *arg)
{
    orphan_t *o = arg;
    int64_t now = svc_now_mono_ms();
    long long code;

    (void)lost; /* a leave may be repeated */
    o->in_flight = false;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2) {
        o->retry_ms = now + ORPHAN_RETRY_MS;
        return;
    }
    if (elem_str(reply, 2)[0] != '\0') { /* it handed the lock on */
        emit(o->s, elem_int(reply, 5) ? LOCK_EV_HANDED_HERE : LOCK_EV_HANDED_AWAY, o->key,
             elem_str(reply, 2), elem_int(reply, 3), elem_int(reply, 4), o->lane);
    }
    code = elem_int(reply, 0);
    if (code == 1) {
        svc_logf(SVC_LOG_INFO, "took a token whose reply was lost out of %s", o->key);
        orphan_remove(o);
    } else if (code == 0 && (o->settle_ms == 0 || now < o->settle_ms)) {
        if (o->settle_ms == 0) {
            o->settle_ms = now + ORPHAN_SETTLE_MS;
        }
        o->retry_ms = now + ORPHAN_RETRY_MS;
    } else {
        orphan_remove(o);
    }
}

/* Queues a leave for each token left behind that is due; lane 0 also renews our liveness. */
static void
orphans_tick(void *arg, int lane)
{
    lock_store_t *s = arg;
    int64_t now = svc_now_mono_ms();
    orphan_t *o = s->orphans[lane].head, *next;
    int queued = 0;

    if (lane == 0 && now >= s->live_due_ms) {
        live_refresh(s);
    }
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
            key_names_t n;
            char floor[24];
            const char *keys[] = {n.lock, n.fence, n.line, n.waiting};
            const char *args[] = {o->token, s->instance, fmt_i64(floor, svc_now_unix_ms() * 1000),
                                  o->key};

            key_names(&n, o->key);
            o->in_flight = true;
            queued++;
            lock_redis_script(s->redis, lane, SCRIPT_LEAVE, 4, keys, 4, args, orphan_left, o);
        }
    }
}

/* ---------- liveness (lane 0's thread) ---------- */

static void
live_done(redisReply *reply, bool lost, void *arg)
{
    lock_store_t *s = arg;

    (void)lost;
    s->live_in_flight = false;
    if (reply != NULL && reply->type == REDIS_REPLY_INTEGER && reply->integer == 0) {
        /* Taken for dead (or Redis lost its data): our waiters may be out of their lines. */
        emit(s, LOCK_EV_RESYNC, NULL, NULL, 0, 0, -1);
    }
}

/* Renews this instance's liveness key (lane 0's thread), unless a renewal is on its way. */
static void
live_refresh(lock_store_t *s)
{
    const char *keys[] = {s->live_key};
    const char *args[] = {LIVE_TTL_MS};

    if (s->live_in_flight) {
        return;
    }
    s->live_in_flight = true;
    s->live_due_ms = svc_now_mono_ms() + LIVE_REFRESH_MS;
    lock_redis_script(s->redis, 0, SCRIPT_LIVE, 1, keys, 1, args, live_done, s);
}

/*
 * A lane (re)connected: hand-offs on its keys may have been missed and Redis
 * may have lost their lines, so their waiters ask again. Lane 0 renews the
 * liveness key first, so that the lines see this instance alive.
 */
static void
store_on_up(void *arg, int lane)
{
    lock_store_t *s = arg;

    if (lane == 0) {
        live_refresh(s);
    }
    emit(s, LOCK_EV_RESYNC, NULL, NULL, 0, 0, lane);
}

/* ---------- public ---------- */

static int
cpus_available(void)
{
    cpu_set_t set;
    long n;

    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) {
        return CPU_COUNT(&set);
    }
    n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static char *
compose(const char *prelude, const char *body)
{
    size_t a = strlen(prelude), b = strlen(body);
    char *text = malloc(a + b + 1);

    if (text != NULL) {
        memcpy(text, prelude, a);
        memcpy(text + a, body, b + 1);
    }
    return text;
}

lock_store_t *
lock_store_create(const char *url, int max_conns, svc_err_t *err)
{
    lock_store_t *s = calloc(1, sizeof(*s));
    bool ok = true;

    if (s == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    s->sub_fd = -1;
    if (url == NULL || parse_url(s, url, err) != 0) {
        if (url == NULL) {
            svc_err_set(err, SVC_INVALID_ARGUMENT, "REDIS_URL is not set");
        }
        lock_store_destroy(s);
        return NULL;
    }
    lock_store_new_token(s->instance);
    snprintf(s->live_key, sizeof(s->live_key), "%s%s", INSTANCE_PREFIX, s->instance);
    s->scripts[SCRIPT_ACQUIRE] = compose(lua_prelude, lua_acquire);
    s->scripts[SCRIPT_RELEASE] = compose(lua_prelude, lua_release);
    s->scripts[SCRIPT_EXTEND] = compose("", lua_extend);
    s->scripts[SCRIPT_PROMOTE] = compose(lua_prelude, lua_promote);
    s->scripts[SCRIPT_LEAVE] = compose(lua_prelude, lua_leave);
    s->scripts[SCRIPT_GET] = compose("", lua_get);
    s->scripts[SCRIPT_LIVE] = compose("", lua_live);
    for (int i = 0; i < LOCK_SEM_SCRIPTS; i++) {
        s->scripts[SCRIPT_SEM_FIRST + i] = lock_sem_script_text(i);
    }
    for (int i = 0; i < SCRIPT_COUNT; i++) {
        ok = ok && s->scripts[i] != NULL;
    }
    if (!ok) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        lock_store_destroy(s);
        return NULL;
    }
    s->n_lanes = cpus_available();
    if (max_conns > 0 && s->n_lanes > max_conns) {
        s->n_lanes = max_conns;
    }
    if (s->n_lanes > MAX_LANES) {
        s->n_lanes = MAX_LANES;
    }
    return s;
}

int
lock_store_start(lock_store_t *s, lock_event_fn events, void *events_arg, svc_err_t *err)
{
    lock_redis_opts_t ropts = {
        .locate = store_locate,
        .password = s->password,
        .db = s->db,
        .check_master = s->sentinel,
        .scripts = (const char *const *)s->scripts,
        .n_scripts = SCRIPT_COUNT,
        .lanes = s->n_lanes,
        .timeout_ms = COMMAND_TIMEOUT_MS,
        .tick = orphans_tick,
        .on_up = store_on_up,
        .arg = s,
    };

    s->events = events;
    s->events_arg = events_arg;
    /* Created before started: the lanes' callbacks use s->redis. */
    if ((s->redis = lock_redis_create(&ropts, err)) == NULL ||
        lock_redis_start(s->redis, err) != 0) {
        return -1;
    }
    if (pthread_create(&s->sub_thread, NULL, sub_thread, s) != 0) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "cannot start the subscriber thread");
        return -1;
    }
    s->sub_running = true;
    return 0;
}

int
lock_store_lanes(const lock_store_t *s)
{
    return s->n_lanes;
}

void
lock_store_destroy(lock_store_t *s)
{
    if (s == NULL) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    if (s->sub_fd >= 0) {
        shutdown(s->sub_fd, SHUT_RDWR); /* wakes the subscriber from its read */
    }
    pthread_mutex_unlock(&s->mu);
    if (s->sub_running) {
        pthread_join(s->sub_thread, NULL);
    }
    lock_redis_destroy(s->redis);
    for (int i = 0; i < MAX_LANES; i++) {
        while (s->orphans[i].head != NULL) { /* left to their leases */
            orphan_t *o = s->orphans[i].head;
            s->orphans[i].head = o->next;
            free(o);
        }
    }
    for (int i = 0; i < SCRIPT_COUNT; i++) {
        free(s->scripts[i]);
    }
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ---------- the grant channel ---------- */

static bool
store_stopping(lock_store_t *s)
{
    bool stopping;

    pthread_mutex_lock(&s->mu);
    stopping = s->stopping;
    pthread_mutex_unlock(&s->mu);
    return stopping;
}

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

/* "fence\npx\ntoken\nkey": a hand-off to one of our waiters. */
static void
sub_message(lock_store_t *s, char *text)
{
    char *px = strchr(text, '\n'), *token = px ? strchr(px + 1, '\n') : NULL;
    char *key = token ? strchr(token + 1, '\n') : NULL;

    if (key == NULL) {
        return;
    }
    *px++ = '\0';
    *token++ = '\0';
    *key++ = '\0';
    emit(s, LOCK_EV_GRANT_MESSAGE, key, token, strtoll(text, NULL, 10), strtoll(px, NULL, 10),
         lock_store_lane(s, key));
}

/* Follows one subscription until it breaks or we stop. */
static void
sub_follow(lock_store_t *s, redisContext *c)
{
    int64_t quiet_ms = 0, ping_sent_ms = -1;

    for (;;) {
        redisReply *r;
        int rc = sub_read(c, 200, &r);

        if (rc < 0 || store_stopping(s)) {
            freeReplyObject(r);
            return;
        }
        if (rc == 0) {
            quiet_ms += 200;
            if (ping_sent_ms >= 0 && quiet_ms - ping_sent_ms > SUB_PONG_WITHIN_MS) {
                svc_logf(SVC_LOG_WARN, "grant channel silent, reconnecting");
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
        /* ["message", channel, text]; pongs and (un)subscribe confirmations are skipped. */
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
            r->element[0]->type == REDIS_REPLY_STRING &&
            strcmp(r->element[0]->str, "message") == 0 &&
            r->element[2]->type == REDIS_REPLY_STRING) {
            sub_message(s, r->element[2]->str);
        }
        freeReplyObject(r);
    }
}

/* A connection subscribed to our grant channel, or NULL. */
static redisContext *
sub_connect(lock_store_t *s)
{
    endpoint_t ep;
    redisContext *c;
    redisReply *r;
    bool ok;

    if (store_locate(s, ep.host, sizeof(ep.host), &ep.port) != 0 || (c = connect_to(&ep)) == NULL) {
        return NULL;
    }
    if (s->password[0] != '\0') {
        r = redisCommand(c, "AUTH %s", s->password);
        ok = r != NULL && r->type != REDIS_REPLY_ERROR;
        freeReplyObject(r);
        if (!ok) {
            redisFree(c);
            return NULL;
        }
    }
    r = redisCommand(c, "SUBSCRIBE %s%s", GRANT_CHANNEL_PREFIX, s->instance);
    ok = r != NULL && r->type == REDIS_REPLY_ARRAY;
    freeReplyObject(r);
    if (!ok) {
        redisFree(c);
        return NULL;
    }
    return c;
}

static void *
sub_thread(void *arg)
{
    lock_store_t *s = arg;
    bool was_down = false;

    while (!store_stopping(s)) {
        redisContext *c = sub_connect(s);
        if (c != NULL) {
            if (was_down) {
                svc_logf(SVC_LOG_INFO, "grant channel back");
            }
            was_down = false;
            pthread_mutex_lock(&s->mu);
            s->sub_fd = c->fd;
            pthread_mutex_unlock(&s->mu);
            /* Messages may have been missed while we were away: everyone asks again. */
            emit(s, LOCK_EV_RESYNC, NULL, NULL, 0, 0, -1);
            if (!store_stopping(s)) {
                sub_follow(s, c);
            }
            pthread_mutex_lock(&s->mu);
            s->sub_fd = -1;
            pthread_mutex_unlock(&s->mu);
            redisFree(c);
        }
        if (store_stopping(s)) {
            break;
        }
        if (!was_down) {
            svc_logf(SVC_LOG_WARN, "grant channel lost, reconnecting");
            was_down = true;
        }
        svc_sleep_ms(200);
    }
    return NULL;
}
