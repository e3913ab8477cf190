/*
 * lock_raw.c: the raw baseline of lock-bench. The scripts below are copies
 * of lock-svc's (lock-svc/src/lock_store.c: lua_prelude + lua_acquire, and
 * lua_prelude + lua_release); lock_raw_same_as_loaded tells whether Redis
 * has the same texts from lock-svc, so a copy that drifted shows up in the
 * bench's output instead of skewing the comparison.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "lock_raw.h"
#include "lock_redis.h"

#define RAW_INSTANCE "lock-bench-raw" /* pairs never queue: nothing is handed to it */

static const char raw_prelude[] =
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

static const char raw_acquire[] =
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

static const char raw_release[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if not v then return {0, 0} end\n"
    "if string.sub(v, 1, #ARGV[1] + 1) ~= ARGV[1] .. '\\n' then return {-1, 0} end\n"
    "redis.call('DEL', KEYS[1])\n"
    "local h = hand_off(ARGV[2], ARGV[3], ARGV[4])\n"
    "if h then return {1, 0, h[1], h[2], h[3], h[4]} end\n"
    "return {1, 0}\n";

struct lock_raw {
    redisContext *c;
    char sha_acquire[41], sha_release[41];
};

typedef struct {
    char host[256];
    int port, db;
    char password[128];
} raw_url_t;

static int
parse_url(const char *url, raw_url_t *u, svc_err_t *err)
{
    const char *rest, *at, *colon, *slash;

    memset(u, 0, sizeof(*u));
    if (strncmp(url, "redis://", 8) != 0) {
        goto bad;
    }
    rest = url + 8;
    if ((at = strchr(rest, '@')) != NULL) {
        const char *pw = memchr(rest, ':', (size_t)(at - rest));
        if (pw != NULL) {
            snprintf(u->password, sizeof(u->password), "%.*s", (int)(at - pw - 1), pw + 1);
        }
        rest = at + 1;
    }
    slash = strchr(rest, '/');
    colon = strrchr(rest, ':');
    if (colon == NULL || (slash != NULL && colon > slash) ||
        (size_t)(colon - rest) >= sizeof(u->host)) {
        goto bad;
    }
    snprintf(u->host, sizeof(u->host), "%.*s", (int)(colon - rest), rest);
    u->port = atoi(colon + 1);
    u->db = slash != NULL ? atoi(slash + 1) : 0;
    if (u->port <= 0) {
        goto bad;
    }
    return 0;
bad:
    svc_err_set(err, SVC_INVALID_ARGUMENT, "--redis-url must be redis://host:port[/db]: %s", url);
    return -1;
}

/* A connection, authenticated and on the right db; NULL with err UNAVAILABLE. */
static redisContext *
raw_open(const char *url, svc_err_t *err)
{
    struct timeval tv = {2, 0};
    redisContext *c;
    redisReply *r;
    raw_url_t u;

    if (parse_url(url, &u, err) != 0) {
        return NULL;
    }
    c = redisConnectWithTimeout(u.host, u.port, tv);
    if (c == NULL || c->err != 0) {
        svc_err_set(err, SVC_UNAVAILABLE, "redis at %s:%d: %s", u.host, u.port,
                    c != NULL ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (u.password[0] != '\0') {
        r = redisCommand(c, "AUTH %s", u.password);
        freeReplyObject(r);
    }
    if (u.db != 0) {
        r = redisCommand(c, "SELECT %d", u.db);
        freeReplyObject(r);
    }
    return c;
}

static char *
compose(const char *body)
{
    size_t a = strlen(raw_prelude), b = strlen(body);
    char *text = malloc(a + b + 1);

    if (text != NULL) {
        memcpy(text, raw_prelude, a);
        memcpy(text + a, body, b + 1);
    }
    return text;
}

/* Loads prelude + body; out: its SHA-1, as Redis names it. */
static int
script_sha(redisContext *c, const char *body, char out[41])
{
    char *text = compose(body);
    redisReply *r;
    int rc = -1;

    if (text == NULL) {
        return -1;
    }
    r = redisCommand(c, "SCRIPT LOAD %s", text);
    if (r != NULL && r->type == REDIS_REPLY_STRING && r->len == 40) {
        memcpy(out, r->str, 41);
        rc = 0;
    }
    freeReplyObject(r);
    free(text);
    return rc;
}

lock_raw_t *
lock_raw_connect(const char *url, svc_err_t *err)
{
    lock_raw_t *raw = calloc(1, sizeof(*raw));

    if (raw == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    if ((raw->c = raw_open(url, err)) == NULL) {
        free(raw);
        return NULL;
    }
    if (script_sha(raw->c, raw_acquire, raw->sha_acquire) != 0 ||
        script_sha(raw->c, raw_release, raw->sha_release) != 0) {
        svc_err_set(err, SVC_UNAVAILABLE, "redis refused SCRIPT LOAD");
        lock_raw_close(raw);
        return NULL;
    }
    return raw;
}

void
lock_raw_close(lock_raw_t *raw)
{
    if (raw != NULL) {
        redisFree(raw->c);
        free(raw);
    }
}

/* Runs sha with the key's four names and args; the reply (caller frees) or NULL with err. */
static redisReply *
run(lock_raw_t *raw, const char *sha, const char *key, int n_args, const char **args,
    svc_err_t *err)
{
    char names[4][256];
    const char *argv[16];
    int argc = 0;
    redisReply *r;

    snprintf(names[0], sizeof(names[0]), "lock:{%s}", key);
    snprintf(names[1], sizeof(names[1]), "lock:{%s}:fence", key);
    snprintf(names[2], sizeof(names[2]), "lock:{%s}:line", key);
    snprintf(names[3], sizeof(names[3]), "lock:{%s}:waiting", key);
    argv[argc++] = "EVALSHA";
    argv[argc++] = sha;
    argv[argc++] = "4";
    for (int i = 0; i < 4; i++) {
        argv[argc++] = names[i];
    }
    for (int i = 0; i < n_args; i++) {
        argv[argc++] = args[i];
    }
    r = redisCommandArgv(raw->c, argc, argv, NULL);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_INTEGER) {
        svc_err_set(err, SVC_UNAVAILABLE, "redis: %s",
                    r == NULL                      ? raw->c->errstr
                    : r->type == REDIS_REPLY_ERROR ? r->str
                                                   : "unexpected reply");
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

int
lock_raw_acquire(lock_raw_t *raw, const char *key, const char *token, const char *owner,
                 int64_t lease_ms, int64_t *fence, svc_err_t *err)
{
    char lease[24], floor[24];
    struct timeval tv;
    const char *args[] = {token, owner, lease, floor, RAW_INSTANCE, "0", key};
    redisReply *r;
    int granted;

    gettimeofday(&tv, NULL);
    snprintf(lease, sizeof(lease), "%lld", (long long)lease_ms);
    snprintf(floor, sizeof(floor), "%lld", (long long)tv.tv_sec * 1000000 + tv.tv_usec);
    if ((r = run(raw, raw->sha_acquire, key, 7, args, err)) == NULL) {
        return -1;
    }
    granted = r->element[0]->integer == 1;
    *fence = granted ? r->element[1]->integer : 0;
    freeReplyObject(r);
    return granted;
}

int
lock_raw_release(lock_raw_t *raw, const char *key, const char *token, svc_err_t *err)
{
    char floor[24];
    struct timeval tv;
    const char *args[] = {token, RAW_INSTANCE, floor, key};
    redisReply *r;
    long long code;

    gettimeofday(&tv, NULL);
    snprintf(floor, sizeof(floor), "%lld", (long long)tv.tv_sec * 1000000 + tv.tv_usec);
    if ((r = run(raw, raw->sha_release, key, 4, args, err)) == NULL) {
        return -1;
    }
    code = r->element[0]->integer;
    freeReplyObject(r);
    if (code == 1) {
        return 0;
    }
    svc_err_set(err, code == 0 ? SVC_NOT_FOUND : SVC_FAILED_PRECONDITION, "release of %s: %lld",
                key, code);
    return -1;
}

int
lock_raw_same_as_loaded(const char *url, svc_err_t *err)
{
    const char *bodies[] = {raw_acquire, raw_release};
    redisContext *c = raw_open(url, err);
    char sha[2][41];
    redisReply *r;
    int rc = -1;

    if (c == NULL) {
        return -1;
    }
    for (int i = 0; i < 2; i++) {
        char *text = compose(bodies[i]);
        if (text == NULL) {
            redisFree(c);
            return -1;
        }
        lock_redis_sha1_hex(text, strlen(text), sha[i]); /* what EVALSHA names it by */
        free(text);
    }
    r = redisCommand(c, "SCRIPT EXISTS %s %s", sha[0], sha[1]);
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        rc = r->element[0]->integer == 1 && r->element[1]->integer == 1;
    } else {
        svc_err_set(err, SVC_UNAVAILABLE, "redis refused SCRIPT EXISTS");
    }
    freeReplyObject(r);
    redisFree(c);
    return rc;
}

void
lock_raw_new_token(char *buf)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[LOCK_RAW_TOKEN_LEN / 2];

    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
        abort();
    }
    for (size_t i = 0; i < sizeof(raw); i++) {
        buf[2 * i] = hex[raw[i] >> 4];
        buf[2 * i + 1] = hex[raw[i] & 15];
    }
    buf[LOCK_RAW_TOKEN_LEN] = '\0';
}
