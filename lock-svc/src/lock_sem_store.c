/*
 * lock_sem_store.c: lock-svc's semaphores in Redis: the Lua scripts and the
 * calls that run them over lock_store's lanes.
 *
 * A semaphore N lets at most `limit` tickets hold a permit at once; the
 * others wait in one FIFO line for every lock-svc instance. Its keys share
 * the hash slot {sem:N}:
 *
 *   {sem:N}          hash: limit; o:<owner> -> ticket; t:<ticket> ->
 *                    "seq\nlease_ms\nowner" (lease_ms: the permit's lease once
 *                    admitted)
 *   {sem:N}:seq      counter: the tickets' sequence numbers
 *   {sem:N}:line     zset waiting ticket -> seq (the line, in order)
 *   {sem:N}:holders  zset holding ticket -> lease end (unix ms)
 *   {sem:N}:ttl      zset waiting ticket -> place end (unix ms)
 *   {sem:N}:log      stream of events: kind (enter, admit, leave, expire,
 *                    extend), ticket, seq, exp (lease or place end); XADD
 *                    MAXLEN ~ 100000. An entry's id is the semaphore's version.
 *
 * Every script first settles the semaphore: holders past their lease and
 * waiting tickets past their place's end are dropped (an `expire` event
 * each), then the head of the line is admitted while fewer than limit hold
 * (an `admit` each), all with Redis's clock. So a permit that frees is
 * taken by the next in line within the script that freed it (leave), or
 * within the next script on the semaphore after a lease ran out (lock_sem.c
 * keeps a timer for that: every answer carries the earliest end). Every
 * script renews the keys' expiry to an hour past the latest end in them,
 * so a semaphore nobody uses any more goes away by itself, and records the
 * semaphore's earliest end in `lock-svc:sem:due` (a zset name -> end, the
 * only key outside the slot, like lock_store's liveness keys): an instance
 * that starts, or finds Redis again, sets its timers from it
 * (lock_sem_store_due_async), so lease ends are settled even when every
 * instance that knew of them is gone.
 *
 * Per name, all commands go through one lane, so they run in the order
 * lock-svc sent them.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "lock_redis.h"
#include "lock_sem_store.h"
#include "svc/log.h"
#include "svc/timer.h"

#define NAME_LEN (LOCK_KEY_MAX + 24)
#define SNAPSHOT_MAX (64 * 1024 * 1024) /* tickets: far above any line, below what calloc takes */
#define SEM_DUE_KEY "lock-svc:sem:due"  /* spelt out in lua_sem_prelude too */
#define SEM_DUE_READ_MAX "9999" /* the earliest 10 000 at start; the others at their next call */

/*
 * KEYS: hash, seq, line, holders, ttl, log. Every script answers {code,
 * ticket, seq, position, expires, version, next_due, limit, holders,
 * waiting} through answer() (code 1 done, 0 no such ticket, -2 another
 * limit), except the snapshot.
 */
static const char lua_sem_prelude[] =
    "local H, SEQ, LINE, HOLD, TTL, LOG = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local version = nil\n"
    "local function log(kind, ticket, seq, exp)\n"
    "  version = redis.call('XADD', LOG, 'MAXLEN', '~', '100000', '*', 'kind', kind,"
    " 'ticket', ticket, 'seq', seq, 'exp', string.format('%d', exp))\n"
    "end\n"
    /* seq (string), lease (number), owner of a ticket, or nil. */
    "local function data(ticket)\n"
    "  local d = redis.call('HGET', H, 't:' .. ticket)\n"
    "  if not d then return nil end\n"
    "  local seq, lease, owner = string.match(d, '^([^\\n]*)\\n([^\\n]*)\\n(.*)$')\n"
    "  return seq, tonumber(lease), owner\n"
    "end\n"
    /* Drops a ticket's data; its seq. */
    "local function forget(ticket)\n"
    "  local seq, lease, owner = data(ticket)\n"
    "  redis.call('HDEL', H, 't:' .. ticket)\n"
    "  if owner and redis.call('HGET', H, 'o:' .. owner) == ticket then\n"
    "    redis.call('HDEL', H, 'o:' .. owner)\n"
    "  end\n"
    "  return seq or '0'\n"
    "end\n"
    "local function expire()\n"
    "  local gone = redis.call('ZRANGEBYSCORE', HOLD, '-inf', now, 'WITHSCORES')\n"
    "  for i = 1, #gone, 2 do\n"
    "    redis.call('ZREM', HOLD, gone[i])\n"
    "    log('expire', gone[i], forget(gone[i]), tonumber(gone[i + 1]))\n"
    "  end\n"
    "  gone = redis.call('ZRANGEBYSCORE', TTL, '-inf', now, 'WITHSCORES')\n"
    "  for i = 1, #gone, 2 do\n"
    "    redis.call('ZREM', TTL, gone[i])\n"
    "    redis.call('ZREM', LINE, gone[i])\n"
    "    log('expire', gone[i], forget(gone[i]), tonumber(gone[i + 1]))\n"
    "  end\n"
    "end\n"
    "local function admit()\n"
    "  local limit = tonumber(redis.call('HGET', H, 'limit') or '0')\n"
    "  while redis.call('ZCARD', HOLD) < limit do\n"
    "    local head = redis.call('ZRANGE', LINE, 0, 0)[1]\n"
    "    if not head then break end\n"
    "    redis.call('ZREM', LINE, head)\n"
    "    redis.call('ZREM', TTL, head)\n"
    "    local seq, lease = data(head)\n"
    "    if seq then\n"
    "      redis.call('ZADD', HOLD, now + lease, head)\n"
    "      log('admit', head, seq, now + lease)\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local function first(key, i)\n"
    "  local e = redis.call('ZRANGE', key, i, i, 'WITHSCORES')\n"
    "  return e[2] and tonumber(e[2]) or 0\n"
    "end\n"
    "local function next_due()\n"
    "  local a, b = first(HOLD, 0), first(TTL, 0)\n"
    "  if a == 0 or (b ~= 0 and b < a) then return b end\n"
    "  return a\n"
    "end\n"
    /* The keys live an hour past the latest end in them; the due index knows the next end. */
    "local function keep()\n"
    "  local last = math.max(first(HOLD, -1), first(TTL, -1), now)\n"
    "  local ms = math.floor(last - now + 3600000)\n"
    "  for _, k in ipairs(KEYS) do redis.call('PEXPIRE', k, ms) end\n"
    "  local due, name = next_due(), string.sub(H, 6, -2)\n"
    "  if due > 0 then\n"
    "    redis.call('ZADD', 'lock-svc:sem:due', due, name)\n"
    "  else\n"
    "    redis.call('ZREM', 'lock-svc:sem:due', name)\n"
    "  end\n"
    "end\n"
    "local function current()\n"
    "  if version then return version end\n"
    "  local e = redis.call('XREVRANGE', LOG, '+', '-', 'COUNT', 1)[1]\n"
    "  return e and e[1] or '0-0'\n"
    "end\n"
    /* Position (0 holding, N in line) and end of a ticket, or nil. */
    "local function where(ticket)\n"
    "  local e = redis.call('ZSCORE', HOLD, ticket)\n"
    "  if e then return 0, tonumber(e) end\n"
    "  local r = redis.call('ZRANK', LINE, ticket)\n"
    "  if r then return r + 1, tonumber(redis.call('ZSCORE', TTL, ticket) or '0') end\n"
    "  return nil\n"
    "end\n"
    "local function answer(code, ticket)\n"
    "  local pos, exp, seq = -1, 0, 0\n"
    "  if ticket ~= '' then\n"
    "    local p, e = where(ticket)\n"
    "    if p then pos, exp, seq = p, e, tonumber((data(ticket))) or 0 end\n"
    "  end\n"
    "  keep()\n"
    "  return {code, ticket, seq, pos, exp, current(), next_due(),"
    " tonumber(redis.call('HGET', H, 'limit') or '0'), redis.call('ZCARD', HOLD),"
    " redis.call('ZCARD', LINE)}\n"
    "end\n";

/*
 * ARGV: ticket, owner, limit, lease_ms, ttl_ms. The limit is the
 * semaphore's while it has tickets; an empty one takes the new one.
 */
static const char lua_sem_enter[] =
    "expire()\n"
    "admit()\n"
    "local ticket, owner, want = ARGV[1], ARGV[2], tonumber(ARGV[3])\n"
    "local cur = tonumber(redis.call('HGET', H, 'limit') or '0')\n"
    "if cur ~= want then\n"
    "  if cur > 0 and (redis.call('ZCARD', HOLD) > 0 or redis.call('ZCARD', LINE) > 0) then\n"
    "    return answer(-2, '')\n"
    "  end\n"
    "  redis.call('HSET', H, 'limit', want)\n"
    "end\n"
    "local mine = redis.call('HGET', H, 'o:' .. owner)\n"
    "if mine then return answer(1, mine) end\n"
    "local seq = redis.call('INCR', SEQ)\n"
    "local exp = now + tonumber(ARGV[5])\n"
    "redis.call('HSET', H, 't:' .. ticket, seq .. '\\n' .. ARGV[4] .. '\\n' .. owner,"
    " 'o:' .. owner, ticket)\n"
    "redis.call('ZADD', LINE, seq, ticket)\n"
    "redis.call('ZADD', TTL, exp, ticket)\n"
    "log('enter', ticket, seq, exp)\n"
    "admit()\n"
    "return answer(1, ticket)\n";

/* ARGV: ticket. */
static const char lua_sem_leave[] = "expire()\n"
                                    "local ticket = ARGV[1]\n"
                                    "local found = redis.call('ZREM', HOLD, ticket) +"
                                    " redis.call('ZREM', LINE, ticket)\n"
                                    "redis.call('ZREM', TTL, ticket)\n"
                                    "if found == 0 then\n"
                                    "  admit()\n"
                                    "  return answer(0, '')\n"
                                    "end\n"
                                    "log('leave', ticket, forget(ticket), now)\n"
                                    "admit()\n"
                                    "return answer(1, '')\n";

/* ARGV: ticket, lease_ms. */
static const char lua_sem_extend[] = "expire()\n"
                                     "admit()\n"
                                     "local ticket = ARGV[1]\n"
                                     "local exp = now + tonumber(ARGV[2])\n"
                                     "local pos = where(ticket)\n"
                                     "if not pos then return answer(0, '') end\n"
                                     "redis.call('ZADD', pos == 0 and HOLD or TTL, exp, ticket)\n"
                                     "log('extend', ticket, (data(ticket)), exp)\n"
                                     "return answer(1, ticket)\n";

/* ARGV: ticket or ''. */
static const char lua_sem_get[] = "expire()\n"
                                  "admit()\n"
                                  "if ARGV[1] ~= '' and not where(ARGV[1]) then\n"
                                  "  return answer(0, '')\n"
                                  "end\n"
                                  "return answer(1, ARGV[1])\n";

/*
 * ARGV: after ('' or a version). {version, limit, next_due, n holders,
 * ticket, seq, exp, ... (holders, then the line)}; or {after, limit,
 * next_due, -1} when the log still holds every event after `after`: nothing
 * after it was trimmed (max-deleted-entry-id <= after), it is not ahead of
 * the log (after <= last-generated-id), and it is from this log: its entry
 * is still there (first entry <= after) or was the last trimmed. A log
 * Redis lost and made anew fails the last test (its first entry is newer
 * than after, and nothing was trimmed), so the watcher gets a snapshot.
 */
static const char lua_sem_snapshot[] =
    "local after = ARGV[1]\n"
    "local function id(v)\n"
    "  local a, b = string.match(v, '^(%d+)-(%d+)$')\n"
    "  return tonumber(a), tonumber(b)\n"
    "end\n"
    "local function le(x, y)\n"
    "  local xa, xb = id(x)\n"
    "  local ya, yb = id(y)\n"
    "  return xa < ya or (xa == ya and xb <= yb)\n"
    "end\n"
    "expire()\n"
    "admit()\n"
    "local limit = tonumber(redis.call('HGET', H, 'limit') or '0')\n"
    "if id(after) and redis.call('EXISTS', LOG) == 1 then\n"
    "  local info, f = redis.call('XINFO', 'STREAM', LOG), {}\n"
    "  for i = 1, #info - 1, 2 do f[info[i]] = info[i + 1] end\n"
    "  local del, last, first = f['max-deleted-entry-id'], f['last-generated-id'],"
    " f['first-entry']\n"
    "  first = type(first) == 'table' and first[1] or last\n"
    "  if del and last and le(del, after) and le(after, last) and"
    " (le(first, after) or le(after, del)) then\n"
    "    keep()\n"
    "    return {after, limit, next_due(), -1, 0}\n"
    "  end\n"
    "end\n"
    "local out = {current(), limit, next_due(), 0, tonumber(redis.call('GET', SEQ) or '0')}\n"
    "local hold = redis.call('ZRANGE', HOLD, 0, -1, 'WITHSCORES')\n"
    "for i = 1, #hold, 2 do\n"
    "  out[#out + 1] = hold[i]\n"
    "  out[#out + 1] = tonumber((data(hold[i]))) or 0\n"
    "  out[#out + 1] = tonumber(hold[i + 1])\n"
    "end\n"
    "out[4] = #hold / 2\n"
    "local line = redis.call('ZRANGE', LINE, 0, -1, 'WITHSCORES')\n"
    "for i = 1, #line, 2 do\n"
    "  out[#out + 1] = line[i]\n"
    "  out[#out + 1] = tonumber(line[i + 1])\n"
    "  out[#out + 1] = tonumber(redis.call('ZSCORE', TTL, line[i]) or '0')\n"
    "end\n"
    "keep()\n"
    "return out\n";

char *
lock_sem_script_text(int i)
{
    static const char *const bodies[LOCK_SEM_SCRIPTS] = {
        lua_sem_enter, lua_sem_leave, lua_sem_extend, lua_sem_get, lua_sem_snapshot,
    };
    size_t a = strlen(lua_sem_prelude), b;
    char *text;

    if (i < 0 || i >= LOCK_SEM_SCRIPTS) {
        return NULL;
    }
    b = strlen(bodies[i]);
    if ((text = malloc(a + b + 1)) != NULL) {
        memcpy(text, lua_sem_prelude, a);
        memcpy(text + a, bodies[i], b + 1);
    }
    return text;
}

/* ---------- names ---------- */

typedef struct {
    char hash[NAME_LEN], seq[NAME_LEN], line[NAME_LEN], holders[NAME_LEN], ttl[NAME_LEN],
        log[NAME_LEN];
} sem_names_t;

static void
sem_names(sem_names_t *n, const char *name)
{
    int len = (int)strnlen(name, LOCK_KEY_MAX);

    snprintf(n->hash, sizeof(n->hash), "{sem:%.*s}", len, name);
    snprintf(n->seq, sizeof(n->seq), "{sem:%.*s}:seq", len, name);
    snprintf(n->line, sizeof(n->line), "{sem:%.*s}:line", len, name);
    snprintf(n->holders, sizeof(n->holders), "{sem:%.*s}:holders", len, name);
    snprintf(n->ttl, sizeof(n->ttl), "{sem:%.*s}:ttl", len, name);
    snprintf(n->log, sizeof(n->log), "{sem:%.*s}:log", len, name);
}

void
lock_sem_log_key(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "{sem:%.*s}:log", LOCK_KEY_MAX, name);
}

/* ---------- replies ---------- */

typedef struct {
    lock_sem_store_cb cb;
    void *arg;
    int script;
    char name[LOCK_KEY_MAX + 1];
} sem_call_t;

static long long
item_int(const redisReply *r, size_t i)
{
    if (i >= r->elements) {
        return 0;
    }
    if (r->element[i]->type == REDIS_REPLY_INTEGER) {
        return r->element[i]->integer;
    }
    if (r->element[i]->type == REDIS_REPLY_STRING) {
        return strtoll(r->element[i]->str, NULL, 10);
    }
    return 0;
}

static const char *
item_str(const redisReply *r, size_t i)
{
    return i < r->elements && r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : "";
}

/* {code, ticket, seq, position, expires, version, next_due, limit, holders, waiting}. */
static void
parse_answer(const sem_call_t *c, const redisReply *r, lock_sem_result_t *res, svc_err_t *err)
{
    long long code;

    if (r->type != REDIS_REPLY_ARRAY || r->elements != 10) {
        svc_err_set(err, SVC_UNAVAILABLE, "unexpected reply from redis");
        return;
    }
    code = item_int(r, 0);
    snprintf(res->ticket, sizeof(res->ticket), "%s", item_str(r, 1));
    res->seq = item_int(r, 2);
    res->position = (int)item_int(r, 3);
    res->expires_at_ms = item_int(r, 4);
    snprintf(res->version, sizeof(res->version), "%s", item_str(r, 5));
    res->next_due_ms = item_int(r, 6);
    res->limit = item_int(r, 7);
    res->holders = (int)item_int(r, 8);
    res->waiting = (int)item_int(r, 9);
    if (code == 1) {
        svc_err_clear(err);
    } else if (code == 0) {
        svc_err_set(err, SVC_NOT_FOUND, "no such ticket in semaphore %s", c->name);
    } else if (code == -2) {
        svc_err_set(err, SVC_FAILED_PRECONDITION, "semaphore %s is in use with limit %lld", c->name,
                    (long long)res->limit);
    } else {
        svc_err_set(err, SVC_UNAVAILABLE, "unexpected reply from redis");
    }
}

/* {version, limit, next_due, n holders (-1: resumed), last seq, ticket, seq, exp, ...}. */
static void
parse_snapshot(const redisReply *r, lock_sem_result_t *res, svc_err_t *err)
{
    size_t n, holders;

    if (r->type != REDIS_REPLY_ARRAY || r->elements < 5 || (r->elements - 5) % 3 != 0) {
        svc_err_set(err, SVC_UNAVAILABLE, "unexpected reply from redis");
        return;
    }
    snprintf(res->version, sizeof(res->version), "%s", item_str(r, 0));
    res->limit = item_int(r, 1);
    res->next_due_ms = item_int(r, 2);
    res->position = -1;
    if (item_int(r, 3) < 0) {
        res->resumed = true;
        svc_err_clear(err);
        return;
    }
    holders = (size_t)item_int(r, 3);
    res->seq = item_int(r, 4);
    n = (r->elements - 5) / 3;
    if (n > SNAPSHOT_MAX || holders > n) {
        svc_err_set(err, SVC_UNAVAILABLE, "unexpected reply from redis");
        return;
    }
    if (n > 0 && (res->tickets = calloc(n, sizeof(*res->tickets))) == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        lock_sem_ticket_t *t = &res->tickets[i];
        snprintf(t->ticket, sizeof(t->ticket), "%s", item_str(r, 5 + 3 * i));
        t->seq = item_int(r, 6 + 3 * i);
        t->expires_at_ms = item_int(r, 7 + 3 * i);
        t->holding = i < holders;
    }
    res->n_tickets = (int)n;
    res->holders = (int)holders;
    res->waiting = (int)(n - holders);
    svc_err_clear(err);
}

static void
sem_done(redisReply *reply, bool lost, void *arg)
{
    static svc_log_limit_t limit = SVC_LOG_LIMIT_INIT(5);
    sem_call_t *c = arg;
    lock_sem_result_t res;
    svc_err_t err;

    (void)lost; /* enter is repeatable per owner; the others by the client */
    memset(&res, 0, sizeof(res));
    if (reply == NULL) {
        svc_err_set(&err, SVC_UNAVAILABLE, "redis unavailable");
    } else if (reply->type == REDIS_REPLY_ERROR) {
        svc_logf_limited(&limit, SVC_LOG_WARN, "redis error: %.200s", reply->str);
        svc_err_set(&err, SVC_UNAVAILABLE, "redis refused the command");
    } else if (c->script == LOCK_SEM_SNAPSHOT) {
        parse_snapshot(reply, &res, &err);
    } else {
        parse_answer(c, reply, &res, &err);
    }
    c->cb(c->name, err.code == SVC_OK ? &res : NULL, &err, c->arg);
    free(res.tickets);
    free(c);
}

static void
sem_run(lock_store_t *s, int script, const char *name, int n_args, const char *const *args,
        lock_sem_store_cb cb, void *arg)
{
    sem_call_t *c = malloc(sizeof(*c));
    sem_names_t n;
    const char *keys[] = {n.hash, n.seq, n.line, n.holders, n.ttl, n.log};

    if (c == NULL) {
        svc_err_t err;
        svc_err_set(&err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        cb(name, NULL, &err, arg);
        return;
    }
    c->cb = cb;
    c->arg = arg;
    c->script = script;
    snprintf(c->name, sizeof(c->name), "%s", name);
    sem_names(&n, name);
    lock_store_sem_script(s, lock_store_lane(s, name), script, 6, keys, n_args, args, sem_done, c);
}

typedef struct {
    lock_sem_due_cb cb;
    void *arg;
} due_call_t;

/* ZRANGE's answer: name, end, name, end, ... */
static void
due_done(redisReply *reply, bool lost, void *arg)
{
    due_call_t *c = arg;

    (void)lost;
    for (size_t i = 0; reply != NULL && reply->type == REDIS_REPLY_ARRAY && i + 1 < reply->elements;
         i += 2) {
        if (reply->element[i]->type == REDIS_REPLY_STRING) {
            c->cb(reply->element[i]->str, item_int(reply, i + 1), c->arg);
        }
    }
    free(c);
}

void
lock_sem_store_due_async(lock_store_t *s, lock_sem_due_cb cb, void *arg)
{
    static const char *const argv[] = {"ZRANGE", SEM_DUE_KEY, "0", SEM_DUE_READ_MAX, "WITHSCORES"};
    due_call_t *c = malloc(sizeof(*c));

    if (c == NULL) {
        return;
    }
    c->cb = cb;
    c->arg = arg;
    lock_store_command(s, 0, 5, argv, due_done, c);
}

/* Decimal of v into buf (at least 21 bytes). */
static const char *
fmt_i64(char *buf, size_t len, int64_t v)
{
    snprintf(buf, len, "%lld", (long long)v);
    return buf;
}

void
lock_sem_store_enter_async(lock_store_t *s, const char *name, const char *ticket, const char *owner,
                           int64_t limit, int64_t lease_ms, int64_t ttl_ms, lock_sem_store_cb cb,
                           void *arg)
{
    char lim[24], lease[24], ttl[24];
    const char *args[] = {ticket, owner, fmt_i64(lim, sizeof(lim), limit),
                          fmt_i64(lease, sizeof(lease), lease_ms),
                          fmt_i64(ttl, sizeof(ttl), ttl_ms)};

    sem_run(s, LOCK_SEM_ENTER, name, 5, args, cb, arg);
}

void
lock_sem_store_leave_async(lock_store_t *s, const char *name, const char *ticket,
                           lock_sem_store_cb cb, void *arg)
{
    const char *args[] = {ticket};

    sem_run(s, LOCK_SEM_LEAVE, name, 1, args, cb, arg);
}

void
lock_sem_store_extend_async(lock_store_t *s, const char *name, const char *ticket, int64_t lease_ms,
                            lock_sem_store_cb cb, void *arg)
{
    char lease[24];
    const char *args[] = {ticket, fmt_i64(lease, sizeof(lease), lease_ms)};

    sem_run(s, LOCK_SEM_EXTEND, name, 2, args, cb, arg);
}

void
lock_sem_store_get_async(lock_store_t *s, const char *name, const char *ticket,
                         lock_sem_store_cb cb, void *arg)
{
    const char *args[] = {ticket != NULL ? ticket : ""};

    sem_run(s, LOCK_SEM_GET, name, 1, args, cb, arg);
}

void
lock_sem_store_snapshot_async(lock_store_t *s, const char *name, const char *after,
                              lock_sem_store_cb cb, void *arg)
{
    const char *args[] = {after != NULL ? after : ""};

    sem_run(s, LOCK_SEM_SNAPSHOT, name, 1, args, cb, arg);
}
