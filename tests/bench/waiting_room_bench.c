/*
 * waiting_room_bench.c: reservation-svc's waiting room under load, next to
 * lock-svc's semaphore scripts run directly on Redis in the same run.
 *
 * One schedule with a room of --limit; --watchers + --limit users enter at
 * once (--enter-window calls in flight), so the first --limit are admitted
 * and --watchers wait in line. Every waiting user then watches its ticket
 * (WatchWaitingRoom, one stream each, spread over connections below
 * reservation-svc's MAX_STREAMS). Then:
 *
 *   chain: --chain times, the newest admitted user leaves and the bench waits
 *          for the admission that leave causes: the time from freed slot to
 *          next admission, one at a time, while everyone else watches.
 *   drain: every admitted user leaves at once and every user admitted leaves
 *          the moment it hears so, until the line is empty: admissions per
 *          second with the room always full.
 *
 * Every update a watcher hears is timed against the change that caused it.
 * Positions only move when an admitted user leaves (nobody in line leaves,
 * places are renewed by watching, admissions last 10 minutes), so a ticket
 * that was p0-th in line at entry and hears position p was moved by the
 * k = p0 - p -th leave; its delay is the time from sending that leave to the
 * update's arrival. Leaves are sent in order, and the k-th leave Redis ran
 * was sent no earlier than the k-th leave sent, so the delay counted is never
 * shorter than the real one. An update lower than k leaves allow, or a
 * position that goes back, is counted as wrong.
 *
 * Also: reservation-svc's and lock-svc's memory before and after the
 * watchers came (per 1 000 watchers) and at their peak, the number of
 * holders sampled in Redis every 2 ms (never above the limit), and the raw
 * twin: the very scripts lock-svc runs (lock_sem_script_text) for enter and
 * leave, pipelined over one hiredis connection, with no service in between.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <hiredis/hiredis.h>

#include "bench_common.h"
#include "lock_sem_store.h"
#include "reservation/v1/reservation.pb-c.h"
#include "svc/arena.h"
#include "svc/client.h"
#include "svc/config.h"
#include "svc/log.h"

#define SVC_PREFIX "/reservation.v1.ReservationService/"
#define METHOD_CREATE SVC_PREFIX "CreateConcert"
#define METHOD_ENTER SVC_PREFIX "EnterWaitingRoom"
#define METHOD_WATCH SVC_PREFIX "WatchWaitingRoom"
#define METHOD_LEAVE SVC_PREFIX "LeaveWaitingRoom"

#define PER_CHANNEL 900 /* streams per connection: below reservation-svc's MAX_STREAMS (1000) */
#define CALL_MS 60000   /* unary calls' deadline */
#define WATCH_MS 900000 /* the streams' deadline: far past the run */
#define ADMISSION_MS 600000
#define TICKET_MAX 256
#define PHASE_MS 120000 /* a phase that takes longer than this is reported as stuck */
#define SAMPLE_US 2000  /* Redis holders sampling */

enum { TAG_ENTER, TAG_LEAVE, TAG_WSTART, TAG_WMSG, TAG_WSTATUS, TAG_KINDS };
enum { PROC_RSV, PROC_LOCK, PROC_REDIS, PROC_SELF, N_PROCS };

typedef struct {
    const char *rsv_addr, *admin_token, *redis_url;
    int64_t watchers, limit, enter_window, chain, raw_window;
    int64_t pids[N_PROCS];
    bool raw;
} cfg_t;

/* One user: its entry, then its watch. Tags point here (aligned), with the kind in the low bits. */
typedef struct {
    char ticket[TICKET_MAX];
    int64_t p0;               /* position at entry: 0 admitted, N N-th in line */
    int64_t position;         /* last heard; -1 before the first update */
    int64_t updates, told_ns; /* told_ns: when the last update came */
    bool admitted, left, ended, failed;
    int64_t enter_t0;
    bench_call_t enter;
    /* the watch stream */
    grpc_call *wcall;
    grpc_byte_buffer *wsend, *wrecv;
    grpc_metadata_array wmd, wtrail;
    grpc_status_code wstatus;
    grpc_slice wdetails;
} user_t;

typedef struct {
    bench_call_t call;
    user_t *u;
} leave_t;

typedef enum { PHASE_ENTER, PHASE_WATCH, PHASE_CHAIN, PHASE_DRAIN } phase_t;

typedef struct {
    cfg_t cfg;
    int64_t schedule_id;
    grpc_completion_queue *cq;
    grpc_channel **ch;
    int n_ch; /* the last one carries the leaves */
    user_t *users;
    int64_t n_users, n_waiting;
    phase_t phase;
    /* entries */
    int64_t enter_next, entered, enter_first_ns, enter_last_ns;
    bench_samples_t enter_lat;
    /* watches */
    int64_t watch_ready, watch_failed, streams_open;
    int64_t until_ns; /* time_up */
    /* leaves, in the order sent (times ascending) */
    int64_t *leave_sent;
    int64_t n_leaves, leaves_done, leaves_in_flight;
    user_t **pool; /* admitted users not yet sent away, newest last */
    int64_t n_pool;
    /* admissions of users from the line */
    int64_t admitted, drain_admitted, drain_t0, drain_last_ns;
    bench_samples_t update_lat, admit_lat, chain_lat;
    bench_samples_t gaps; /* between a watcher's updates, while the line moves (chain, drain) */
    bool chain_waiting;
    int64_t chain_t0, chain_done, chain_start_ns;
    /* what a correct service never does */
    int64_t went_back, too_low, no_token;
    bench_errors_t errors;
    /* Redis sampling */
    pthread_t sampler;
    volatile bool sampling;
    int64_t max_holders, samples, sample_errors;
} run_t;

static void
die(const char *what)
{
    fprintf(stderr, "waiting-room-bench: %s\n", what);
    exit(1);
}

static void *
xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);

    if (p == NULL) {
        die("out of memory");
    }
    return p;
}

static void *
tag_of(void *p, int kind)
{
    return (void *)((uintptr_t)p | (uintptr_t)kind);
}

static void
counts_add(run_t *run, svc_status_t code, const char *msg)
{
    svc_err_t err;

    svc_err_set(&err, code, "%s", msg);
    bench_errors_add(&run->errors, &err);
}

/* ---------------------------------------------------------------- set-up */

/* A schedule with a room of cfg->limit; exits when reservation-svc refuses. */
static int64_t
create_schedule(const cfg_t *cfg)
{
    Reservation__V1__CreateConcertRequest req = RESERVATION__V1__CREATE_CONCERT_REQUEST__INIT;
    Reservation__V1__ScheduleSpec spec = RESERVATION__V1__SCHEDULE_SPEC__INIT;
    Reservation__V1__ScheduleSpec *specs[] = {&spec};
    Reservation__V1__CreateConcertResponse *resp = NULL;
    char auth[300];
    const char *md[] = {"authorization", auth};
    svc_call_opts_t opts = {.timeout_ms = CALL_MS, .metadata = md, .n_metadata = 1};
    svc_arena_t *arena = svc_arena_create();
    svc_client_t *client;
    int64_t id;
    svc_err_t err;

    snprintf(auth, sizeof(auth), "Bearer %s", cfg->admin_token);
    spec.starts_at_ms = 1893456000000LL + (int64_t)getpid();
    spec.seat_count = 100;
    spec.seat_price = 1000;
    spec.waiting_room_limit = cfg->limit;
    spec.admission_ttl_ms = ADMISSION_MS;
    req.title = "waiting-room-bench";
    req.schedules = specs;
    req.n_schedules = 1;
    if (arena == NULL || (client = svc_client_get(cfg->rsv_addr, &err)) == NULL ||
        svc_client_unary(client, METHOD_CREATE, &req.base,
                         &reservation__v1__create_concert_response__descriptor, arena,
                         (ProtobufCMessage **)&resp, &opts, &err) != 0) {
        fprintf(stderr, "waiting-room-bench: CreateConcert failed: %s\n",
                arena == NULL ? "out of memory" : err.msg);
        exit(1);
    }
    id = resp->concert->schedules[0]->id;
    svc_arena_destroy(arena);
    return id;
}

static void
connect_channels(run_t *run)
{
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();

    run->n_ch = (int)((run->cfg.watchers + PER_CHANNEL - 1) / PER_CHANNEL) + 1;
    run->ch = xcalloc((size_t)run->n_ch, sizeof(run->ch[0]));
    for (int i = 0; i < run->n_ch; i++) {
        /* Distinct args, so gRPC does not share one connection among them. */
        grpc_arg arg = {.type = GRPC_ARG_INTEGER, .key = "waiting-room-bench.channel"};
        arg.value.integer = i;
        grpc_channel_args args = {1, &arg};
        run->ch[i] = grpc_channel_create(run->cfg.rsv_addr, creds, &args);
    }
    grpc_channel_credentials_release(creds);
}

/* ---------------------------------------------------------------- calls */

static void
enter_start(run_t *run)
{
    Reservation__V1__EnterWaitingRoomRequest req =
        RESERVATION__V1__ENTER_WAITING_ROOM_REQUEST__INIT;
    int64_t i = run->enter_next++;
    user_t *u = &run->users[i];

    req.user_id = 1 + i;
    req.schedule_id = run->schedule_id;
    if (bench_call_init(&u->enter, run->ch[i % (run->n_ch - 1)], run->cq, METHOD_ENTER, CALL_MS,
                        &req.base) != 0) {
        die("gRPC gave no call");
    }
    u->enter_t0 = bench_now_ns();
    if (run->enter_first_ns == 0) {
        run->enter_first_ns = u->enter_t0;
    }
    if (bench_call_start(&u->enter, NULL, 0, tag_of(u, TAG_ENTER)) != GRPC_CALL_OK) {
        die("cannot start an EnterWaitingRoom");
    }
}

static void
enter_done(run_t *run, user_t *u, bool ok)
{
    int64_t now = bench_now_ns();
    char msg[256];
    svc_status_t code = bench_call_status(&u->enter, ok, msg, sizeof(msg));

    run->entered++;
    run->enter_last_ns = now;
    if (code != SVC_OK) {
        counts_add(run, code, msg);
        u->failed = true;
    } else {
        Reservation__V1__EnterWaitingRoomResponse *resp = (void *)bench_unpack(
            u->enter.recv, &reservation__v1__enter_waiting_room_response__descriptor);
        if (resp == NULL) {
            counts_add(run, SVC_INTERNAL, "EnterWaitingRoom's answer does not parse");
            u->failed = true;
        } else {
            snprintf(u->ticket, sizeof(u->ticket), "%s", resp->ticket);
            u->p0 = resp->position;
            if (resp->position == 0) {
                u->admitted = true;
                run->pool[run->n_pool++] = u;
                if (resp->admission_token[0] == '\0') {
                    run->no_token++;
                }
            }
            protobuf_c_message_free_unpacked(&resp->base, NULL);
            (void)bench_samples_push(&run->enter_lat, now - u->enter_t0);
        }
    }
    bench_call_cleanup(&u->enter);
    if (run->enter_next < run->n_users) {
        enter_start(run);
    }
}

static void
watch_recv(user_t *u)
{
    grpc_op op = {0};

    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &u->wrecv;
    if (grpc_call_start_batch(u->wcall, &op, 1, tag_of(u, TAG_WMSG), NULL) != GRPC_CALL_OK) {
        die("cannot receive on a watch");
    }
}

static void
watch_start(run_t *run, user_t *u, int64_t i)
{
    Reservation__V1__WatchWaitingRoomRequest req =
        RESERVATION__V1__WATCH_WAITING_ROOM_REQUEST__INIT;
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(WATCH_MS, GPR_TIMESPAN));
    grpc_op ops[4] = {0};
    grpc_op st = {0};
    grpc_slice slice;

    req.ticket = u->ticket;
    u->position = -1;
    u->wcall = grpc_channel_create_call(run->ch[i % (run->n_ch - 1)], NULL, GRPC_PROPAGATE_DEFAULTS,
                                        run->cq, grpc_slice_from_static_string(METHOD_WATCH), NULL,
                                        deadline, NULL);
    if (u->wcall == NULL) {
        die("gRPC gave no call");
    }
    slice = grpc_slice_malloc(protobuf_c_message_get_packed_size(&req.base));
    protobuf_c_message_pack(&req.base, GRPC_SLICE_START_PTR(slice));
    u->wsend = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    grpc_metadata_array_init(&u->wmd);
    grpc_metadata_array_init(&u->wtrail);
    u->wdetails = grpc_empty_slice();
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = u->wsend;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &u->wmd;
    st.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    st.data.recv_status_on_client.status = &u->wstatus;
    st.data.recv_status_on_client.status_details = &u->wdetails;
    st.data.recv_status_on_client.trailing_metadata = &u->wtrail;
    if (grpc_call_start_batch(u->wcall, ops, 4, tag_of(u, TAG_WSTART), NULL) != GRPC_CALL_OK ||
        grpc_call_start_batch(u->wcall, &st, 1, tag_of(u, TAG_WSTATUS), NULL) != GRPC_CALL_OK) {
        die("cannot start a watch");
    }
    run->streams_open++;
    watch_recv(u);
}

static void
leave_start(run_t *run, user_t *u)
{
    Reservation__V1__LeaveWaitingRoomRequest req =
        RESERVATION__V1__LEAVE_WAITING_ROOM_REQUEST__INIT;
    leave_t *l = xcalloc(1, sizeof(*l));

    req.ticket = u->ticket;
    l->u = u;
    u->left = true;
    if (bench_call_init(&l->call, run->ch[run->n_ch - 1], run->cq, METHOD_LEAVE, CALL_MS,
                        &req.base) != 0) {
        die("gRPC gave no call");
    }
    run->leave_sent[run->n_leaves++] = bench_now_ns();
    run->leaves_in_flight++;
    if (bench_call_start(&l->call, NULL, 0, tag_of(l, TAG_LEAVE)) != GRPC_CALL_OK) {
        die("cannot start a LeaveWaitingRoom");
    }
}

static void
leave_done(run_t *run, leave_t *l, bool ok)
{
    char msg[256];
    svc_status_t code = bench_call_status(&l->call, ok, msg, sizeof(msg));

    if (code != SVC_OK) {
        counts_add(run, code, msg);
    }
    run->leaves_done++;
    run->leaves_in_flight--;
    bench_call_cleanup(&l->call);
    free(l);
}

/* The chain's next step: the newest admitted user leaves; its admission is awaited. */
static void
chain_next(run_t *run)
{
    if (run->chain_done >= run->cfg.chain || run->n_pool == 0 || run->admitted >= run->n_waiting) {
        return;
    }
    run->chain_waiting = true;
    run->chain_t0 = bench_now_ns();
    leave_start(run, run->pool[--run->n_pool]);
}

/* u, from the line, heard it is admitted. */
static void
admitted(run_t *run, user_t *u, int64_t now)
{
    u->admitted = true;
    run->admitted++;
    if (run->phase == PHASE_DRAIN) {
        run->drain_admitted++;
        run->drain_last_ns = now;
        leave_start(run, u);
        return;
    }
    run->pool[run->n_pool++] = u;
    if (run->phase == PHASE_CHAIN && run->chain_waiting) {
        run->chain_waiting = false;
        (void)bench_samples_push(&run->chain_lat, now - run->chain_t0);
        run->chain_done++;
        chain_next(run);
    }
}

static void
watch_message(run_t *run, user_t *u, bool ok)
{
    int64_t now = bench_now_ns();
    Reservation__V1__WatchWaitingRoomResponse *resp;
    int64_t p, k;

    if (!ok || u->wrecv == NULL) {
        return; /* the stream ended: its status follows */
    }
    resp =
        (void *)bench_unpack(u->wrecv, &reservation__v1__watch_waiting_room_response__descriptor);
    grpc_byte_buffer_destroy(u->wrecv);
    u->wrecv = NULL;
    if (resp == NULL || resp->update == NULL) {
        counts_add(run, SVC_INTERNAL, "a WatchWaitingRoom message without an update");
        if (resp != NULL) {
            protobuf_c_message_free_unpacked(&resp->base, NULL);
        }
        watch_recv(u);
        return;
    }
    p = resp->update->position;
    if (p == 0 && resp->update->admission_token[0] == '\0') {
        run->no_token++;
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    if (u->position < 0) {
        run->watch_ready++;
    } else if (p > u->position) {
        run->went_back++;
    } else if (run->phase >= PHASE_CHAIN) {
        (void)bench_samples_push(
            &run->gaps,
            now - (u->told_ns > run->chain_start_ns ? u->told_ns : run->chain_start_ns));
    }
    u->told_ns = now;
    u->updates++;
    k = u->p0 - p; /* the leave that moved it here */
    if (k > run->n_leaves) {
        run->too_low++;
    } else if (k > 0 && (u->position < 0 || p < u->position)) {
        int64_t delay = now - run->leave_sent[k - 1];
        (void)bench_samples_push(p == 0 ? &run->admit_lat : &run->update_lat, delay);
    }
    u->position = p;
    if (p == 0 && !u->admitted) {
        admitted(run, u, now);
    }
    watch_recv(u);
}

static void
watch_status(run_t *run, user_t *u)
{
    if (u->wstatus != GRPC_STATUS_OK) {
        char msg[256];
        size_t n = GRPC_SLICE_LENGTH(u->wdetails) < sizeof(msg) - 1 ? GRPC_SLICE_LENGTH(u->wdetails)
                                                                    : sizeof(msg) - 1;
        memcpy(msg, GRPC_SLICE_START_PTR(u->wdetails), n);
        msg[n] = '\0';
        counts_add(run, (svc_status_t)u->wstatus, msg);
        u->failed = true;
    } else if (!u->admitted) {
        counts_add(run, SVC_INTERNAL, "a watch ended OK without an admission");
        u->failed = true;
    }
    u->ended = true;
    run->streams_open--;
    run->watch_failed += u->position < 0;
    grpc_metadata_array_destroy(&u->wmd);
    grpc_metadata_array_destroy(&u->wtrail);
    grpc_slice_unref(u->wdetails);
    grpc_byte_buffer_destroy(u->wsend);
    grpc_call_unref(u->wcall);
    u->wcall = NULL;
}

/* Handles completions until done(run) holds; false when PHASE_MS passed first. */
static bool
pump(run_t *run, bool (*done)(const run_t *))
{
    int64_t give_up = bench_now_ns() + (int64_t)PHASE_MS * 1000000;

    while (!done(run)) {
        gpr_timespec t =
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(100, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(run->cq, t, NULL);

        if (ev.type == GRPC_QUEUE_TIMEOUT) {
            if (bench_now_ns() > give_up) {
                return false;
            }
            continue;
        }
        if (ev.type != GRPC_OP_COMPLETE) {
            die("the completion queue shut down");
        }
        void *p = (void *)((uintptr_t)ev.tag & ~(uintptr_t)7);
        switch ((int)((uintptr_t)ev.tag & 7)) {
        case TAG_ENTER:
            enter_done(run, p, ev.success);
            break;
        case TAG_LEAVE:
            leave_done(run, p, ev.success);
            break;
        case TAG_WSTART:
            break; /* a failure shows in its status */
        case TAG_WMSG:
            watch_message(run, p, ev.success);
            break;
        case TAG_WSTATUS:
            watch_status(run, p);
            break;
        default:
            die("a completion with an unknown tag");
        }
    }
    return true;
}

static bool
all_entered(const run_t *run)
{
    return run->entered == run->n_users;
}

static bool
all_watching(const run_t *run)
{
    return run->watch_ready + run->watch_failed >= run->n_waiting;
}

static bool
time_up(const run_t *run)
{
    return bench_now_ns() >= run->until_ns;
}

static bool
chain_over(const run_t *run)
{
    return !run->chain_waiting && run->leaves_in_flight == 0;
}

static bool
drained(const run_t *run)
{
    return run->admitted >= run->n_waiting && run->leaves_in_flight == 0 && run->streams_open == 0;
}

/* ---------------------------------------------------------------- Redis */

static redisContext *
redis_connect(const char *url)
{
    char host[256] = "127.0.0.1", pass[256] = "";
    int port = 6379;
    const char *p = url;
    redisContext *c;

    if (strncmp(p, "redis://", 8) == 0) {
        p += 8;
    }
    const char *at = strchr(p, '@');
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon != NULL) {
            snprintf(pass, sizeof(pass), "%.*s", (int)(at - colon - 1), colon + 1);
        }
        p = at + 1;
    }
    const char *colon = strrchr(p, ':');
    if (colon != NULL) {
        snprintf(host, sizeof(host), "%.*s", (int)(colon - p), p);
        port = atoi(colon + 1);
    } else {
        snprintf(host, sizeof(host), "%s", p);
    }
    c = redisConnect(host, port);
    if (c == NULL || c->err) {
        fprintf(stderr, "waiting-room-bench: cannot reach Redis at %s\n", url);
        exit(1);
    }
    if (pass[0] != '\0') {
        redisReply *r = redisCommand(c, "AUTH %s", pass);
        freeReplyObject(r);
    }
    return c;
}

/* Samples the room's holders in Redis every SAMPLE_US, keeping the largest. */
static void *
sampler_main(void *arg)
{
    run_t *run = arg;
    redisContext *c = redis_connect(run->cfg.redis_url);
    char key[128];

    snprintf(key, sizeof(key), "{sem:room:%" PRId64 "}:holders", run->schedule_id);
    while (run->sampling) {
        redisReply *r = redisCommand(c, "ZCARD %s", key);
        if (r != NULL && r->type == REDIS_REPLY_INTEGER) {
            run->samples++;
            if (r->integer > run->max_holders) {
                run->max_holders = r->integer;
            }
        } else {
            run->sample_errors++;
        }
        freeReplyObject(r);
        usleep(SAMPLE_US);
    }
    redisFree(c);
    return NULL;
}

/* The raw twin's numbers. */
typedef struct {
    double enter_s, leave_s;
    int64_t enters, leaves, errors, admitted;
    bench_samples_t enter_lat;
} raw_t;

/* Loads script i and puts its SHA-1 in sha. */
static void
raw_load(redisContext *c, int i, char sha[64])
{
    char *text = lock_sem_script_text(i);
    redisReply *r;

    if (text == NULL) {
        die("out of memory");
    }
    r = redisCommand(c, "SCRIPT LOAD %s", text);
    if (r == NULL || r->type != REDIS_REPLY_STRING) {
        die("Redis refused SCRIPT LOAD");
    }
    snprintf(sha, 64, "%s", r->str);
    freeReplyObject(r);
    free(text);
}

/*
 * lock-svc's enter script for n tickets (window pipelined), then its leave
 * script for the first n - limit of them in entry order: each leave admits
 * the next in line, as a LeaveWaitingRoom does.
 */
static raw_t
raw_run(const cfg_t *cfg, int64_t n)
{
    redisContext *c = redis_connect(cfg->redis_url);
    char enter_sha[64], leave_sha[64], keys[6][96], limit[24];
    char(*tickets)[LOCK_TOKEN_LEN + 1] = xcalloc((size_t)n, sizeof(*tickets));
    int64_t *t0 = xcalloc((size_t)cfg->raw_window, sizeof(int64_t));
    const char *suffix[6] = {"", ":seq", ":line", ":holders", ":ttl", ":log"};
    raw_t raw = {0};
    int64_t start;

    raw_load(c, LOCK_SEM_ENTER, enter_sha);
    raw_load(c, LOCK_SEM_LEAVE, leave_sha);
    snprintf(keys[0], sizeof(keys[0]), "{sem:bench-raw:%d:%" PRId64 "}", (int)getpid(),
             bench_now_ns());
    for (int i = 1; i < 6; i++) {
        snprintf(keys[i], sizeof(keys[i]), "%s%s", keys[0], suffix[i]);
    }
    snprintf(limit, sizeof(limit), "%" PRId64, cfg->limit);
    for (int64_t i = 0; i < n; i++) {
        for (int j = 0; j < LOCK_TOKEN_LEN; j++) {
            tickets[i][j] = "0123456789abcdef"[random() % 16];
        }
    }
    start = bench_now_ns();
    for (int64_t i = 0; i < n; i += cfg->raw_window) {
        int64_t m = n - i < cfg->raw_window ? n - i : cfg->raw_window;
        for (int64_t j = 0; j < m; j++) {
            char owner[32];
            snprintf(owner, sizeof(owner), "user:%" PRId64, i + j + 1);
            t0[j] = bench_now_ns();
            redisAppendCommand(c, "EVALSHA %s 6 %s %s %s %s %s %s %s %s %s 600000 600000",
                               enter_sha, keys[0], keys[1], keys[2], keys[3], keys[4], keys[5],
                               tickets[i + j], owner, limit);
        }
        for (int64_t j = 0; j < m; j++) {
            redisReply *r = NULL;
            if (redisGetReply(c, (void **)&r) != REDIS_OK) {
                die("Redis went away in the raw twin");
            }
            if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
                r->element[0]->type != REDIS_REPLY_INTEGER || r->element[0]->integer != 1) {
                raw.errors++;
            } else {
                raw.enters++;
                (void)bench_samples_push(&raw.enter_lat, bench_now_ns() - t0[j]);
            }
            freeReplyObject(r);
        }
    }
    raw.enter_s = (double)(bench_now_ns() - start) / 1e9;
    start = bench_now_ns();
    for (int64_t i = 0; i < n - cfg->limit; i += cfg->raw_window) {
        int64_t m = n - cfg->limit - i < cfg->raw_window ? n - cfg->limit - i : cfg->raw_window;
        for (int64_t j = 0; j < m; j++) {
            redisAppendCommand(c, "EVALSHA %s 6 %s %s %s %s %s %s %s", leave_sha, keys[0], keys[1],
                               keys[2], keys[3], keys[4], keys[5], tickets[i + j]);
        }
        for (int64_t j = 0; j < m; j++) {
            redisReply *r = NULL;
            if (redisGetReply(c, (void **)&r) != REDIS_OK) {
                die("Redis went away in the raw twin");
            }
            if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
                r->element[0]->type != REDIS_REPLY_INTEGER || r->element[0]->integer != 1) {
                raw.errors++;
            } else {
                raw.leaves++;
            }
            freeReplyObject(r);
        }
    }
    raw.leave_s = (double)(bench_now_ns() - start) / 1e9;
    /* every leave admitted one: the holders are the last limit tickets now */
    redisReply *r = redisCommand(c, "ZCARD %s", keys[3]);
    raw.admitted = r != NULL && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    r = redisCommand(c, "DEL %s %s %s %s %s %s", keys[0], keys[1], keys[2], keys[3], keys[4],
                     keys[5]);
    freeReplyObject(r);
    redisFree(c);
    free(tickets);
    free(t0);
    return raw;
}

/* ---------------------------------------------------------------- report */

static double
mb(int64_t kb)
{
    return kb < 0 ? -1 : (double)kb / 1024.0;
}

static void
row(const char *what, int64_t count, double seconds, double p50, double p99, const char *target)
{
    printf("%-40s %8" PRId64, what, count);
    bench_print_num(9, 2, seconds);
    bench_print_num(9, 0, seconds > 0 ? (double)count / seconds : -1);
    bench_print_num(9, 1, p50);
    bench_print_num(9, 1, p99);
    printf("  %s\n", target);
}

static void
mem_read_all(const run_t *run, int64_t rss[N_PROCS])
{
    for (int i = 0; i < N_PROCS; i++) {
        int64_t hwm;
        rss[i] = -1;
        if (run->cfg.pids[i] > 0) {
            bench_mem_read(run->cfg.pids[i], &rss[i], &hwm);
        }
    }
}

static void
load_config(cfg_t *cfg, int argc, char **argv)
{
    svc_opt_t opts[] = {
        {"rsv-addr", "RESERVATION_ADDR", SVC_OPT_STRING, "127.0.0.1:50053",
         "reservation-svc host:port", 0, 0, &cfg->rsv_addr, 1},
        {"admin-token", "ADMIN_TOKEN", SVC_OPT_STRING, NULL,
         "reservation-svc's admin token, for CreateConcert", 0, 0, &cfg->admin_token, 1},
        {"redis-url", "REDIS_URL", SVC_OPT_STRING, "redis://127.0.0.1:56379",
         "the Redis lock-svc uses: the room's holders are sampled there, and the raw twin runs "
         "there",
         0, 0, &cfg->redis_url, 1},
        {"watchers", "BENCH_WATCHERS", SVC_OPT_INT, "10000",
         "users waiting in line, each watching its ticket (--limit more enter and are admitted "
         "at once)",
         1, 200000, &cfg->watchers, 0},
        {"limit", "BENCH_LIMIT", SVC_OPT_INT, "100", "the room's waiting_room_limit", 1, 100000,
         &cfg->limit, 0},
        {"enter-window", "BENCH_ENTER_WINDOW", SVC_OPT_INT, "1000",
         "EnterWaitingRoom calls in flight while the users enter", 1, 100000, &cfg->enter_window,
         0},
        {"chain", "BENCH_CHAIN", SVC_OPT_INT, "300",
         "freed slot to next admission: this many leaves, one at a time", 0, 100000, &cfg->chain,
         0},
        {"raw", "BENCH_RAW", SVC_OPT_BOOL, "true",
         "run the raw twin (lock-svc's scripts on Redis directly)", 0, 0, &cfg->raw, 0},
        {"raw-window", "BENCH_RAW_WINDOW", SVC_OPT_INT, "64",
         "the raw twin: scripts pipelined on its one connection", 1, 100000, &cfg->raw_window, 0},
        {"rsv-pid", "RESERVATION_SVC_PID", SVC_OPT_INT, "0",
         "reservation-svc's process id, for its memory (0: not reported)", 0, 1 << 30,
         &cfg->pids[PROC_RSV], 0},
        {"lock-pid", "LOCK_SVC_PID", SVC_OPT_INT, "0", "lock-svc's process id (0: not reported)", 0,
         1 << 30, &cfg->pids[PROC_LOCK], 0},
        {"redis-pid", "REDIS_PID", SVC_OPT_INT, "0", "redis-server's process id (0: not reported)",
         0, 1 << 30, &cfg->pids[PROC_REDIS], 0},
    };

    svc_config_load_or_exit(opts, (int)(sizeof(opts) / sizeof(opts[0])), argc, argv,
                            "waiting-room-bench: reservation-svc's waiting room under load "
                            "(entries, watchers, freed slot to admission, admissions per second, "
                            "memory), next to lock-svc's semaphore scripts run on Redis directly. "
                            "Prints numbers; exits 0 unless it cannot start.");
    cfg->pids[PROC_SELF] = getpid();
}

int
main(int argc, char **argv)
{
    run_t run = {0};
    int64_t rss_before[N_PROCS], rss_after[N_PROCS], peak[N_PROCS];
    bench_mem_sampler_t *mem;
    double p50, p99, enter_s, watch_s, drain_s;
    int64_t t, n_chain;
    raw_t raw = {0};

    load_config(&run.cfg, argc, argv);
    svc_log_init("waiting-room-bench", SVC_LOG_WARN);
    grpc_init();
    run.n_waiting = run.cfg.watchers;
    run.n_users = run.cfg.watchers + run.cfg.limit;
    run.users = xcalloc((size_t)run.n_users, sizeof(user_t));
    run.pool = xcalloc((size_t)run.n_users, sizeof(user_t *));
    run.leave_sent = xcalloc((size_t)run.n_users + 1, sizeof(int64_t));
    run.cq = grpc_completion_queue_create_for_next(NULL);
    run.schedule_id = create_schedule(&run.cfg);
    connect_channels(&run);
    mem = bench_mem_sampler_create(run.cfg.pids, N_PROCS, 20);
    run.sampling = true;
    if (pthread_create(&run.sampler, NULL, sampler_main, &run) != 0) {
        die("cannot start the Redis sampler");
    }
    printf("waiting-room-bench: reservation-svc %s, schedule %" PRId64 " with a room of %" PRId64
           "; %" PRId64 " users enter (%" PRId64 " calls in flight), %" PRId64
           " of them watch from the line over %d connections (one completion queue, one "
           "thread); Redis %s\n",
           run.cfg.rsv_addr, run.schedule_id, run.cfg.limit, run.n_users, run.cfg.enter_window,
           run.n_waiting, run.n_ch - 1, run.cfg.redis_url);
    fflush(stdout);

    /* 1. everyone enters */
    run.phase = PHASE_ENTER;
    for (int64_t i = 0; i < run.cfg.enter_window && run.enter_next < run.n_users; i++) {
        enter_start(&run);
    }
    if (!pump(&run, all_entered)) {
        die("the entries did not finish within 120 s");
    }
    enter_s = (double)(run.enter_last_ns - run.enter_first_ns) / 1e9;
    {
        /* a clean line: positions 1..watchers once each, limit admitted */
        char *seen = xcalloc((size_t)run.n_waiting + 1, 1);
        int64_t dup = 0, odd = 0;
        for (int64_t i = 0; i < run.n_users; i++) {
            int64_t p = run.users[i].p0;
            if (run.users[i].failed || p == 0) {
                continue;
            }
            if (p < 0 || p > run.n_waiting) {
                odd++;
            } else if (seen[p]++) {
                dup++;
            }
        }
        if (dup + odd > 0 || run.n_pool != run.cfg.limit) {
            printf("WARNING: entries: %" PRId64 " admitted (limit %" PRId64 "), %" PRId64
                   " positions twice, %" PRId64 " out of range\n",
                   run.n_pool, run.cfg.limit, dup, odd);
        }
        free(seen);
    }

    /* 2. the line watches */
    mem_read_all(&run, rss_before);
    run.phase = PHASE_WATCH;
    t = bench_now_ns();
    for (int64_t i = 0; i < run.n_users; i++) {
        if (!run.users[i].failed && run.users[i].p0 > 0) {
            watch_start(&run, &run.users[i], i);
        }
    }
    if (!pump(&run, all_watching)) {
        die("the watchers did not all hear their position within 120 s");
    }
    watch_s = (double)(bench_now_ns() - t) / 1e9;
    run.until_ns = bench_now_ns() + 1000000000LL; /* the first place renewals settle */
    (void)pump(&run, time_up);
    mem_read_all(&run, rss_after);

    /* 3. freed slot to next admission, one at a time */
    run.phase = PHASE_CHAIN;
    run.chain_start_ns = bench_now_ns();
    chain_next(&run);
    if (!pump(&run, chain_over)) {
        die("the chain did not finish within 120 s");
    }
    n_chain = run.chain_done;

    /* 4. drain: the room always full, everyone through */
    run.phase = PHASE_DRAIN;
    run.drain_t0 = bench_now_ns();
    while (run.n_pool > 0) {
        leave_start(&run, run.pool[--run.n_pool]);
    }
    if (!pump(&run, drained)) {
        printf("WARNING: the drain did not finish within 120 s: %" PRId64 " of %" PRId64
               " admitted, %" PRId64 " streams open\n",
               run.admitted, run.n_waiting, run.streams_open);
    }
    drain_s = (double)(run.drain_last_ns - run.drain_t0) / 1e9;
    run.sampling = false;
    pthread_join(run.sampler, NULL);
    bench_mem_sampler_stop(mem, peak);
    if (run.cfg.raw) {
        raw = raw_run(&run.cfg, run.n_users);
    }

    /* ---------- the report ---------- */
    printf("\n%-40s %8s %9s %9s %9s %9s  %s\n", "part", "count", "seconds", "per s", "p50 ms",
           "p99 ms", "target");
    bench_samples_percentiles(&run.enter_lat, &p50, &p99);
    row("entries: EnterWaitingRoom", (int64_t)run.enter_lat.n, enter_s, p50, p99, ">= 5000 per s");
    if (run.cfg.raw) {
        bench_samples_percentiles(&raw.enter_lat, &p50, &p99);
        row("entries: enter script on Redis (raw)", raw.enters, raw.enter_s, p50, p99, "");
    }
    row("watchers: first position heard", run.watch_ready, watch_s, -1, -1, "");
    bench_samples_percentiles(&run.chain_lat, &p50, &p99);
    row("freed slot -> next admission (one by one)", n_chain, -1, p50, p99, "p50/p99 reported");
    bench_samples_percentiles(&run.admit_lat, &p50, &p99);
    row("admissions: drain, room always full", run.drain_admitted, drain_s, -1, -1,
        ">= 2000 per s");
    if (run.cfg.raw) {
        row("admissions: leave script on Redis (raw)", raw.leaves, raw.leave_s, -1, -1, "");
    }
    row("  admission heard after its leave", (int64_t)run.admit_lat.n, -1, p50, p99, "");
    bench_samples_percentiles(&run.update_lat, &p50, &p99);
    row("position updates heard after their leave", (int64_t)run.update_lat.n, -1, p50, p99,
        "p99 <= 100 ms");
    {
        bench_samples_t all = {0};
        double a50, a99;
        for (size_t i = 0; i < run.update_lat.n; i++) {
            (void)bench_samples_push(&all, run.update_lat.v[i]);
        }
        for (size_t i = 0; i < run.admit_lat.n; i++) {
            (void)bench_samples_push(&all, run.admit_lat.v[i]);
        }
        bench_samples_percentiles(&all, &a50, &a99);
        row("every update (positions and admissions)", (int64_t)all.n, -1, a50, a99,
            "p99 <= 100 ms");
        printf("  slowest update: %.1f ms; updates per watcher: %.1f\n",
               all.n > 0 ? (double)all.v[all.n - 1] / 1e6 : 0.0,
               run.n_waiting > 0 ? (double)(all.n) / (double)run.n_waiting : 0.0);
        bench_samples_free(&all);
    }
    bench_samples_percentiles(&run.gaps, &p50, &p99);
    row("time between a watcher's updates", (int64_t)run.gaps.n, -1, p50, p99,
        "far back: about 1 s by design");
    printf("  longest: %.1f ms\n", run.gaps.n > 0 ? (double)run.gaps.v[run.gaps.n - 1] / 1e6 : 0.0);
    if (run.cfg.raw) {
        double se = raw.enter_s > 0 ? raw.enters / raw.enter_s : 0;
        double sl = raw.leave_s > 0 ? raw.leaves / raw.leave_s : 0;
        printf("\nratios to raw Redis (same scripts, one pipelined connection, window %" PRId64
               "): entries %.2f, admissions %.2f; raw twin: %" PRId64 " errors, %" PRId64
               " holding at its end (limit %" PRId64 ")\n",
               run.cfg.raw_window, se > 0 ? (run.enter_lat.n / enter_s) / se : 0,
               sl > 0 && drain_s > 0 ? (run.drain_admitted / drain_s) / sl : 0, raw.errors,
               raw.admitted, run.cfg.limit);
    }
    printf("\nmemory (RSS MB)        before watchers  with %" PRId64
           " watchers  per 1000 watchers  peak of the run\n",
           run.watch_ready);
    {
        const char *names[N_PROCS] = {"reservation-svc", "lock-svc", "redis", "this bench"};
        for (int i = 0; i < N_PROCS; i++) {
            if (rss_before[i] < 0) {
                continue;
            }
            printf("%-22s %16.1f %18.1f %18.2f %16.1f\n", names[i], mb(rss_before[i]),
                   mb(rss_after[i]),
                   run.watch_ready > 0
                       ? mb(rss_after[i] - rss_before[i]) * 1000.0 / (double)run.watch_ready
                       : -1,
                   mb(peak[i]));
        }
        if (peak[PROC_RSV] >= 0 && peak[PROC_LOCK] >= 0) {
            printf("reservation-svc + lock-svc at their peaks: %.1f MB (target: under 300 MB)\n",
                   mb(peak[PROC_RSV] + peak[PROC_LOCK]));
        }
    }
    printf("\nchecks: holders sampled in Redis %" PRId64 " times, at most %" PRId64
           " (limit %" PRId64 ")%s; positions that went back %" PRId64
           "; updates lower than the leaves sent allow %" PRId64
           "; admissions without a token %" PRId64 "; watchers admitted %" PRId64 " of %" PRId64
           "; failed calls %" PRId64,
           run.samples, run.max_holders, run.cfg.limit,
           run.max_holders > run.cfg.limit ? " ABOVE THE LIMIT" : "", run.went_back, run.too_low,
           run.no_token, run.admitted, run.n_waiting, run.errors.n);
    if (run.errors.n > 0) {
        printf(" (");
        bench_print_codes(run.errors.by_code);
        printf(" ; first: %s)", run.errors.first.msg);
    }
    printf("\n");
    printf("result: %s\n", run.max_holders <= run.cfg.limit && run.went_back == 0 &&
                                   run.too_low == 0 && run.no_token == 0 &&
                                   run.admitted == run.n_waiting && run.errors.n == 0
                               ? "OK"
                               : "WRONG (a correct service gives none of the above)");

    bench_mem_sampler_destroy(mem);
    bench_samples_free(&run.enter_lat);
    bench_samples_free(&run.update_lat);
    bench_samples_free(&run.admit_lat);
    bench_samples_free(&run.chain_lat);
    bench_samples_free(&run.gaps);
    bench_samples_free(&raw.enter_lat);
    for (int i = 0; i < run.n_ch; i++) {
        grpc_channel_destroy(run.ch[i]);
    }
    bench_cq_drain_destroy(run.cq);
    grpc_shutdown();
    svc_client_release_all();
    free(run.ch);
    free(run.users);
    free(run.pool);
    free(run.leave_sent);
    return 0;
}
