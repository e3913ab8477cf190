/*
 * sc_data_faults.c: a data store or a service dies in the middle of a storm.
 * Redis is SIGKILLed under a seat storm and comes back empty; PostgreSQL is
 * killed and restarted under a balance storm; a reservation-svc instance is
 * SIGKILLed with payments in flight. During each outage clients must get
 * refusals, not faults or hangs; afterwards the system must serve again, and
 * nothing acknowledged may be lost or applied twice.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conformance.h"
#include "svc/timer.h"

/* ---------------------------------------------------------------- Shared */

/* Codes after which the operation's fate is unknown: retry it with the same key. */
static bool
is_retryable(svc_status_t code)
{
    return code == SVC_UNAVAILABLE || code == SVC_ABORTED || code == SVC_DEADLINE_EXCEEDED ||
           code == SVC_CANCELLED;
}

/*
 * An outage while clients run: after 1 s down(target), down_ms later
 * up(target), then 2 s more before stop is raised. phase tells the clients
 * which part of it they are in.
 */
typedef struct {
    int (*down)(void *target);
    int (*up)(void *target);
    void *target;
    int64_t down_ms;
    atomic_int *phase;
    atomic_bool *stop;
    int rc;
} outage_t;

enum { PHASE_BEFORE, PHASE_DOWN, PHASE_AFTER, N_PHASES };
static const char *const phase_names[N_PHASES] = {"before", "during", "after"};

static void *
outage_thread(void *arg)
{
    outage_t *o = arg;

    svc_sleep_ms(1000);
    o->rc = o->down(o->target);
    if (o->rc == 0) {
        atomic_store(o->phase, PHASE_DOWN);
        svc_sleep_ms(o->down_ms);
        o->rc = o->up(o->target);
    }
    if (o->rc == 0) {
        atomic_store(o->phase, PHASE_AFTER);
        svc_sleep_ms(2000);
    }
    atomic_store(o->stop, true);
    return NULL;
}

/* Runs n clients fn(args[i]) while the outage o runs on a thread of its own. */
static int
run_with_outage(outage_t *o, int n, void *(*fn)(void *), void *args, size_t arg_size)
{
    pthread_t t;

    if (pthread_create(&t, NULL, outage_thread, o) != 0) {
        return -1;
    }
    cf_parallel(n, fn, args, arg_size);
    pthread_join(t, NULL);
    return o->rc;
}

/* A stack of its own for a fault scenario; NULL when it could not start (stopped again). */
static cf_stack_t *
start_stack(cf_ctx_t *ctx, const cf_stack_opts_t *opts)
{
    cf_stack_t *s = calloc(1, sizeof(*s)); /* large: not on a thread's stack */

    if (s == NULL) {
        return NULL;
    }
    if (cf_stack_start(ctx, s, opts) != 0) {
        (void)cf_stack_stop(s);
        free(s);
        return NULL;
    }
    return s;
}

/* Every scenario ends here: the invariants over the data, then the stack goes. */
static void
finish(cf_tally_t *t, cf_stack_t *s, cf_acks_t *acks)
{
    cf_check_invariants(t, &s->targets, acks);
    if (cf_stack_stop(s) != 0) {
        cf_violation(t, "a service exited badly");
    }
    free(s);
    cf_acks_free(acks);
}

/* Setup failed after the stack started: stop it and tell the runner. */
static int
give_up(cf_stack_t *s, cf_acks_t *acks, const char *why)
{
    fprintf(stderr, "conformance: %s\n", why);
    (void)cf_stack_stop(s);
    free(s);
    cf_acks_free(acks);
    return -1;
}

/* ------------------------------------------------------------ Redis kill */

#define HOLD_TIMEOUT_MS 5000

typedef struct {
    svc_client_t *client; /* round robin over both reservation-svc instances */
    cf_tally_t *tally;
    cf_acks_t *acks;
    int64_t schedule;
    int seats;
    atomic_int phase;
    atomic_bool stop;
    /* By the phase in which the call began. */
    atomic_long holds_ok[N_PHASES], unavailable[N_PHASES], slowest_ms[N_PHASES];
    atomic_long ok_while_down; /* began and answered OK while Redis was down */
    atomic_long cancel_failed;
} seat_storm_t;

typedef struct {
    seat_storm_t *storm;
    unsigned seed; /* rand_r: each client thread draws on its own */
    bool keeper;   /* keeps its latest hold until it gets the next one */
    int64_t user;  /* with a balance account, opened before the outage */
} seat_client_t;

static void
note_max(atomic_long *max, long v)
{
    long cur = atomic_load(max);

    while (v > cur && !atomic_compare_exchange_weak(max, &cur, v)) {
    }
}

/* Cancels a hold so that its seat churns; Redis plays no part in it, so it must work. */
static void
release_hold(seat_storm_t *s, int64_t user, int64_t reservation)
{
    for (int attempt = 0; attempt < 5; attempt++) {
        svc_status_t code = cf_cancel(s->client, s->tally, reservation, user);
        if (code == SVC_OK) {
            return;
        }
        svc_sleep_ms(20);
    }
    atomic_fetch_add(&s->cancel_failed, 1);
}

static void *
seat_client(void *arg)
{
    seat_client_t *c = arg;
    seat_storm_t *s = c->storm;
    int64_t user = c->user, kept = 0;

    while (!atomic_load(&s->stop)) {
        int32_t seat = 1 + (int32_t)((unsigned)rand_r(&c->seed) % (uint32_t)s->seats);
        int phase = atomic_load(&s->phase);
        int64_t t0 = svc_now_mono_ms(), id = 0;
        svc_status_t code =
            cf_hold(s->client, s->tally, user, s->schedule, &seat, 1, HOLD_TIMEOUT_MS, &id);

        note_max(&s->slowest_ms[phase], (long)(svc_now_mono_ms() - t0));
        if (code == SVC_UNAVAILABLE) {
            atomic_fetch_add(&s->unavailable[phase], 1);
            svc_sleep_ms(5); /* a client backs off a little when told the service is down */
        }
        if (code != SVC_OK) {
            continue;
        }
        atomic_fetch_add(&s->holds_ok[phase], 1);
        if (phase == PHASE_DOWN && atomic_load(&s->phase) == PHASE_DOWN) {
            atomic_fetch_add(&s->ok_while_down, 1);
        }
        cf_ack_held(s->acks, id);
        if (!c->keeper) {
            release_hold(s, user, id);
            continue;
        }
        if (kept != 0) {
            release_hold(s, user, kept);
        }
        kept = id; /* the last one stays held: the seat check then sees live holds */
    }
    return NULL;
}

static int
redis_down(void *redis)
{
    return testenv_redis_kill(redis);
}

static int
redis_up(void *redis)
{
    return testenv_redis_restart(redis);
}

/* Runs n clients against s while Redis is killed and, 1.5 s later, restarted empty. */
static int
run_seat_storm(cf_stack_t *stack, seat_storm_t *s, int n)
{
    seat_client_t *clients = calloc((size_t)n, sizeof(*clients));
    svc_client_t *balance = cf_client(stack->targets.balance_addr);
    outage_t o = {redis_down, redis_up, &stack->redis, 1500, &s->phase, &s->stop, 0};
    int rc;

    if (clients == NULL) {
        return -1;
    }
    for (int i = 0; i < n; i++) {
        clients[i] = (seat_client_t){s, 0x9e3779b9u ^ (uint32_t)(i * 7919 + 1), i % 4 == 0,
                                     balance != NULL ? cf_new_account(balance) : 0};
        if (clients[i].user == 0) {
            free(clients);
            return -1;
        }
    }
    rc = run_with_outage(&o, n, seat_client, clients, sizeof(*clients));
    free(clients);
    return rc;
}

static void
report_seat_storm(cf_tally_t *t, seat_storm_t *s)
{
    for (int p = 0; p < N_PHASES; p++) {
        fprintf(stderr,
                "redis_kill: %s the outage: %ld holds OK, %ld UNAVAILABLE, slowest %ld ms\n",
                phase_names[p], atomic_load(&s->holds_ok[p]), atomic_load(&s->unavailable[p]),
                atomic_load(&s->slowest_ms[p]));
    }
    fprintf(stderr, "redis_kill: %ld holds began and answered OK while Redis was down\n",
            atomic_load(&s->ok_while_down));
    if (atomic_load(&s->holds_ok[PHASE_BEFORE]) == 0) {
        cf_violation(t, "redis_kill: no hold succeeded before Redis was killed");
    }
    if (atomic_load(&s->holds_ok[PHASE_AFTER]) == 0) {
        cf_violation(t, "redis_kill: no hold succeeded after Redis came back");
    }
    if (atomic_load(&s->cancel_failed) > 0) {
        cf_violation(t, "redis_kill: %ld cancellations failed five times",
                     atomic_load(&s->cancel_failed));
    }
}

int
sc_redis_kill(cf_ctx_t *ctx, cf_tally_t *t)
{
    static const cf_stack_opts_t opts = {.n_lock = 1, .n_reservation = 2};
    int n_clients = ctx->quick ? 24 : 56;
    cf_stack_t *stack = start_stack(ctx, &opts);
    cf_acks_t acks;
    seat_storm_t storm = {.tally = t, .acks = &acks, .seats = ctx->quick ? 24 : 36};

    if (stack == NULL) {
        return -1;
    }
    cf_acks_init(&acks);
    storm.client = cf_client(stack->targets.reservation_addr);
    storm.schedule = cf_new_schedule(cf_client(stack->reservation[0].addr),
                                     stack->targets.admin_token, "redis kill", storm.seats, 1000);
    if (storm.client == NULL || storm.schedule < 0) {
        return give_up(stack, &acks, "redis_kill: no schedule");
    }
    if (run_seat_storm(stack, &storm, n_clients) != 0) {
        cf_violation(t, "redis_kill: Redis could not be killed and restarted");
    }
    report_seat_storm(t, &storm);
    finish(t, stack, &acks);
    return 0;
}

/* ------------------------------------------------------------ PostgreSQL restart */

#define N_ACCOUNTS 8
#define FUNDING 20000
#define RESOLVE_MS 20000

enum { OP_UNKNOWN, OP_APPLIED, OP_REFUSED };

/* One TopUp or Spend as the client knows it. */
typedef struct {
    int account;
    bool top_up;
    int64_t amount;
    char key[64];
    int state;
} money_op_t;

typedef struct {
    svc_client_t *client;
    cf_tally_t *tally;
    cf_acks_t *acks;
    int64_t users[N_ACCOUNTS];
    atomic_int phase;
    atomic_bool stop;
    atomic_long ok_after; /* OK answers to calls sent after the restart */
    atomic_long retries;
} money_storm_t;

typedef struct {
    money_storm_t *storm;
    unsigned seed; /* rand_r: each client thread draws on its own */
    money_op_t *ops;
    int n_ops, cap_ops;
} money_client_t;

/*
 * Sends op once and records what it learnt: OK is applied (and acknowledged),
 * too little money or no account is a definite refusal, anything else leaves
 * the fate unknown.
 */
static svc_status_t
send_op(money_storm_t *s, money_op_t *op)
{
    int64_t user = s->users[op->account], txn = 0;
    int phase = atomic_load(&s->phase);
    svc_status_t code = op->top_up
                            ? cf_topup(s->client, s->tally, user, op->amount, op->key, &txn, NULL)
                            : cf_spend(s->client, s->tally, user, op->amount, op->key, &txn, NULL);

    if (code == SVC_OK) {
        op->state = OP_APPLIED;
        cf_ack_ledger(s->acks, user, op->key, txn);
        if (phase == PHASE_AFTER) {
            atomic_fetch_add(&s->ok_after, 1);
        }
    } else if (code == SVC_FAILED_PRECONDITION || code == SVC_NOT_FOUND) {
        op->state = OP_REFUSED;
    }
    return code;
}

static void
keep_op(money_client_t *c, const money_op_t *op)
{
    if (c->n_ops == c->cap_ops) {
        c->cap_ops = c->cap_ops ? c->cap_ops * 2 : 256;
        c->ops = realloc(c->ops, (size_t)c->cap_ops * sizeof(*c->ops));
        if (c->ops == NULL) {
            abort();
        }
    }
    c->ops[c->n_ops++] = *op;
}

/* Each operation is retried with its own key until its fate is known or the storm ends. */
static void *
money_client(void *arg)
{
    money_client_t *c = arg;
    money_storm_t *s = c->storm;

    while (!atomic_load(&s->stop)) {
        money_op_t op = {.account = (int)((unsigned)rand_r(&c->seed) % N_ACCOUNTS),
                         .top_up = (unsigned)rand_r(&c->seed) % 2 == 0,
                         .amount = 1 + (unsigned)rand_r(&c->seed) % 1000};
        cf_unique(op.key, sizeof(op.key), op.top_up ? "pg-topup" : "pg-spend");
        while (send_op(s, &op), op.state == OP_UNKNOWN && !atomic_load(&s->stop)) {
            atomic_fetch_add(&s->retries, 1);
            svc_sleep_ms(20);
        }
        keep_op(c, &op);
    }
    return NULL;
}

static int
pg_down(void *pg)
{
    return testenv_pg_kill(pg);
}

static int
pg_up(void *pg)
{
    return testenv_pg_restart(pg);
}

/* How many of the clients' operations still have an unknown fate. */
static int
count_unknown(const money_client_t *clients, int n)
{
    int unknown = 0;

    for (int i = 0; i < n; i++) {
        for (int j = 0; j < clients[i].n_ops; j++) {
            unknown += clients[i].ops[j].state == OP_UNKNOWN;
        }
    }
    return unknown;
}

/*
 * After the storm: every operation whose fate is unknown is sent again with
 * its key until the service says what became of it (a replay if it had been
 * applied). Returns how many stayed unknown after RESOLVE_MS.
 */
static int
resolve_unknown(money_storm_t *s, money_client_t *clients, int n)
{
    int64_t give_up_at = svc_now_mono_ms() + RESOLVE_MS;

    while (count_unknown(clients, n) > 0 && svc_now_mono_ms() < give_up_at) {
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < clients[i].n_ops; j++) {
                if (clients[i].ops[j].state == OP_UNKNOWN) {
                    (void)send_op(s, &clients[i].ops[j]);
                }
            }
        }
        if (count_unknown(clients, n) > 0) {
            svc_sleep_ms(100);
        }
    }
    return count_unknown(clients, n);
}

/* Compares each account's balance in the database with what the client was told. */
static void
check_balances(cf_tally_t *t, cf_stack_t *stack, money_storm_t *s, money_client_t *clients, int n)
{
    int64_t expected[N_ACCOUNTS];
    char sql[160];

    for (int a = 0; a < N_ACCOUNTS; a++) {
        expected[a] = FUNDING;
    }
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < clients[i].n_ops; j++) {
            const money_op_t *op = &clients[i].ops[j];
            if (op->state == OP_APPLIED) {
                expected[op->account] += op->top_up ? op->amount : -op->amount;
            }
        }
    }
    for (int a = 0; a < N_ACCOUNTS; a++) {
        snprintf(sql, sizeof(sql), "SELECT balance FROM accounts WHERE user_id = %" PRId64,
                 s->users[a]);
        int64_t got = testenv_pg_query_int(&stack->pg_balance, sql);
        if (got != expected[a]) {
            cf_violation(t,
                         "pg_restart: user %" PRId64 " has %" PRId64
                         " in the database, its acknowledged operations make %" PRId64,
                         s->users[a], got, expected[a]);
        }
    }
}

/* Opens the accounts with FUNDING each, so that most spends can succeed. */
static int
fund_accounts(money_storm_t *s)
{
    for (int a = 0; a < N_ACCOUNTS; a++) {
        char key[64];
        int64_t txn = 0;
        s->users[a] = cf_new_user();
        cf_unique(key, sizeof(key), "pg-fund");
        if (cf_topup(s->client, s->tally, s->users[a], FUNDING, key, &txn, NULL) != SVC_OK) {
            return -1;
        }
        cf_ack_ledger(s->acks, s->users[a], key, txn);
    }
    return 0;
}

/* Runs n clients against s while PostgreSQL is killed and, 0.5 s later, restarted. */
static int
run_money_storm(cf_stack_t *stack, money_storm_t *s, money_client_t *clients, int n)
{
    outage_t o = {pg_down, pg_up, &stack->pg, 500, &s->phase, &s->stop, 0};

    for (int i = 0; i < n; i++) {
        clients[i] = (money_client_t){.storm = s, .seed = 0x2545f491u ^ (uint32_t)(i * 104729 + 1)};
    }
    return run_with_outage(&o, n, money_client, clients, sizeof(*clients));
}

static void
report_money_storm(cf_tally_t *t, money_storm_t *s, money_client_t *clients, int n,
                   int unknown_after_storm, int unresolved)
{
    long ops = 0, applied = 0;

    for (int i = 0; i < n; i++) {
        ops += clients[i].n_ops;
        for (int j = 0; j < clients[i].n_ops; j++) {
            applied += clients[i].ops[j].state == OP_APPLIED;
        }
    }
    fprintf(stderr,
            "pg_restart: %ld operations, %ld applied, %ld retries with the same key, %ld OK after "
            "the restart; %d unknown when the storm ended, %d of them still unknown\n",
            ops, applied, atomic_load(&s->retries), atomic_load(&s->ok_after), unknown_after_storm,
            unresolved);
    if (atomic_load(&s->ok_after) == 0) {
        cf_violation(t, "pg_restart: no operation succeeded after PostgreSQL came back");
    }
    if (unresolved > 0) {
        cf_violation(t, "pg_restart: %d operations still unanswered after %d s of retries",
                     unresolved, RESOLVE_MS / 1000);
    }
}

int
sc_pg_restart(cf_ctx_t *ctx, cf_tally_t *t)
{
    static const cf_stack_opts_t opts; /* the default stack */
    int n_clients = ctx->quick ? 16 : 48, unknown, unresolved;
    cf_stack_t *stack = start_stack(ctx, &opts);
    money_client_t *clients;
    cf_acks_t acks;
    money_storm_t storm = {.tally = t, .acks = &acks};

    if (stack == NULL) {
        return -1;
    }
    cf_acks_init(&acks);
    storm.client = cf_client(stack->targets.balance_addr);
    clients = calloc((size_t)n_clients, sizeof(*clients));
    if (clients == NULL || storm.client == NULL || fund_accounts(&storm) != 0) {
        free(clients);
        return give_up(stack, &acks, "pg_restart: the accounts could not be funded");
    }
    if (run_money_storm(stack, &storm, clients, n_clients) != 0) {
        cf_violation(t, "pg_restart: PostgreSQL could not be killed and restarted");
    }
    unknown = count_unknown(clients, n_clients);
    unresolved = resolve_unknown(&storm, clients, n_clients);
    report_money_storm(t, &storm, clients, n_clients, unknown, unresolved);
    check_balances(t, stack, &storm, clients, n_clients);
    for (int i = 0; i < n_clients; i++) {
        free(clients[i].ops);
    }
    free(clients);
    finish(t, stack, &acks);
    return 0;
}

/* ------------------------------------------------------ reservation-svc kill */

#define SEAT_PRICE 30000
/* Enough for two seats: a payment charged twice would show in the balance. */
#define PAYER_FUNDS (2 * SEAT_PRICE + 5000)
#define PAY_TIMEOUT_MS 20000
#define PAY_GIVE_UP_MS 30000
#define KILL_WAIT_MS 2000

typedef struct {
    svc_client_t *first, *second; /* reservation-svc instances 0 and 1 */
    cf_tally_t *tally;
    atomic_int started, answered_ok;
    atomic_bool killed;
} pay_run_t;

typedef struct {
    pay_run_t *run;
    int64_t user, reservation;
    char key[64];
    svc_status_t first_code, last_code;
    int attempts;
    bool paid, before_kill;
} payer_t;

/*
 * Pays once through instance 0, then, if that was cut, again with the same
 * key, alternating instance 1 and the restarted instance 0, until OK.
 */
static void *
payer(void *arg)
{
    payer_t *p = arg;
    pay_run_t *run = p->run;
    int64_t give_up_at = svc_now_mono_ms() + PAY_GIVE_UP_MS;

    atomic_fetch_add(&run->started, 1);
    p->first_code =
        cf_pay(run->first, run->tally, p->reservation, p->user, p->key, PAY_TIMEOUT_MS, NULL);
    p->last_code = p->first_code;
    p->attempts = 1;
    p->before_kill = !atomic_load(&run->killed);
    if (p->first_code == SVC_OK) {
        atomic_fetch_add(&run->answered_ok, 1);
    }
    while (p->last_code != SVC_OK && is_retryable(p->last_code) && svc_now_mono_ms() < give_up_at) {
        svc_client_t *c = p->attempts % 2 ? run->second : run->first;
        svc_sleep_ms(50);
        p->last_code = cf_pay(c, run->tally, p->reservation, p->user, p->key, PAY_TIMEOUT_MS, NULL);
        p->attempts++;
    }
    p->paid = p->last_code == SVC_OK;
    return NULL;
}

typedef struct {
    cf_stack_t *stack;
    pay_run_t *run;
    int n_payers, rc;
    int64_t wait_ms, charged, confirmed; /* at the moment of the kill */
} killer_job_t;

/* What the killed instance had done: payments charged by balance-svc, and confirmed. */
static void
count_at_kill(killer_job_t *job)
{
    job->charged = testenv_pg_query_int(&job->stack->pg_balance,
                                        "SELECT count(*) FROM ledger WHERE kind = 2 AND"
                                        " idempotency_key LIKE 'reservation:%'");
    job->confirmed =
        testenv_pg_query_int(&job->stack->pg, "SELECT count(*) FROM reservations WHERE status = 2");
}

/*
 * Kills instance 0 once every payment is under way and the first one has
 * answered OK (or KILL_WAIT_MS later), so that the kill finds payments at
 * every step: done, charged but not confirmed, not yet charged.
 */
static void *
killer(void *arg)
{
    killer_job_t *job = arg;
    int64_t t0;

    while (atomic_load(&job->run->started) < job->n_payers) {
        svc_sleep_ms(1);
    }
    t0 = svc_now_mono_ms();
    while (atomic_load(&job->run->answered_ok) == 0 && svc_now_mono_ms() - t0 < KILL_WAIT_MS) {
        svc_sleep_ms(1);
    }
    job->wait_ms = svc_now_mono_ms() - t0;
    job->rc = testenv_proc_kill(&job->stack->reservation[0]);
    atomic_store(&job->run->killed, true);
    count_at_kill(job);
    if (job->rc == 0) {
        job->rc = testenv_proc_restart(&job->stack->reservation[0]);
    }
    return NULL;
}

/* Funds each payer and holds one seat for each through instance 0. */
static int
prepare_payers(cf_stack_t *stack, cf_tally_t *t, cf_acks_t *acks, payer_t *payers, int n,
               pay_run_t *run)
{
    svc_client_t *balance = cf_client(stack->targets.balance_addr);
    int64_t schedule =
        cf_new_schedule(run->first, stack->targets.admin_token, "reservation kill", n, SEAT_PRICE);

    if (balance == NULL || schedule < 0) {
        return -1;
    }
    for (int i = 0; i < n; i++) {
        payer_t *p = &payers[i];
        char key[64];
        int64_t txn = 0;
        int32_t seat = i + 1;
        p->run = run;
        p->user = cf_new_user();
        cf_unique(key, sizeof(key), "rk-fund");
        if (cf_topup(balance, t, p->user, PAYER_FUNDS, key, &txn, NULL) != SVC_OK ||
            cf_hold(run->first, t, p->user, schedule, &seat, 1, 0, &p->reservation) != SVC_OK) {
            return -1;
        }
        cf_ack_ledger(acks, p->user, key, txn);
        cf_ack_held(acks, p->reservation);
        cf_unique(p->key, sizeof(p->key), "rk-pay");
    }
    return 0;
}

/* Each payment confirmed, each payer charged exactly the seat's price. */
static void
check_payers(cf_tally_t *t, cf_stack_t *stack, cf_acks_t *acks, const payer_t *payers, int n)
{
    char sql[200];

    for (int i = 0; i < n; i++) {
        const payer_t *p = &payers[i];
        if (!p->paid) {
            cf_violation(t,
                         "reservation_kill: reservation %" PRId64 " not paid after %d attempts"
                         " (last answer %s)",
                         p->reservation, p->attempts, svc_status_name(p->last_code));
            continue;
        }
        cf_ack_paid(acks, p->reservation);
        snprintf(sql, sizeof(sql), "SELECT status FROM reservations WHERE id = %" PRId64,
                 p->reservation);
        if (testenv_pg_query_int(&stack->pg, sql) != 2) {
            cf_violation(t, "reservation_kill: reservation %" PRId64 " paid but not confirmed",
                         p->reservation);
        }
        snprintf(sql, sizeof(sql), "SELECT balance FROM accounts WHERE user_id = %" PRId64,
                 p->user);
        int64_t balance = testenv_pg_query_int(&stack->pg_balance, sql);
        if (balance != PAYER_FUNDS - SEAT_PRICE) {
            cf_violation(t, "reservation_kill: user %" PRId64 " has %" PRId64 ", expected %d",
                         p->user, balance, PAYER_FUNDS - SEAT_PRICE);
        }
    }
}

static void
report_payers(const payer_t *payers, int n)
{
    int ok_first = 0, cut = 0, retries = 0, late = 0;

    for (int i = 0; i < n; i++) {
        ok_first += payers[i].first_code == SVC_OK;
        cut += payers[i].first_code != SVC_OK;
        late += payers[i].first_code == SVC_OK && !payers[i].before_kill;
        retries += payers[i].attempts - 1;
    }
    fprintf(stderr,
            "reservation_kill: %d payments, %d answered OK at once (%d of them after the kill), "
            "%d cut by the kill, %d retries\n",
            n, ok_first, late, cut, retries);
}

int
sc_reservation_kill(cf_ctx_t *ctx, cf_tally_t *t)
{
    static const cf_stack_opts_t opts = {.n_lock = 1, .n_reservation = 2};
    int n = ctx->quick ? 16 : 40;
    cf_stack_t *stack = start_stack(ctx, &opts);
    pay_run_t run = {.tally = t};
    payer_t *payers;
    killer_job_t job;
    pthread_t kill_thread;
    cf_acks_t acks;

    if (stack == NULL) {
        return -1;
    }
    cf_acks_init(&acks);
    payers = calloc((size_t)n, sizeof(*payers));
    if (payers == NULL) {
        return give_up(stack, &acks, "reservation_kill: out of memory");
    }
    run.first = cf_client(stack->reservation[0].addr);
    run.second = cf_client(stack->reservation[1].addr);
    job = (killer_job_t){.stack = stack, .run = &run, .n_payers = n};
    if (run.first == NULL || run.second == NULL ||
        prepare_payers(stack, t, &acks, payers, n, &run) != 0 ||
        pthread_create(&kill_thread, NULL, killer, &job) != 0) {
        free(payers);
        return give_up(stack, &acks, "reservation_kill: the holds could not be prepared");
    }
    cf_parallel(n, payer, payers, sizeof(*payers));
    pthread_join(kill_thread, NULL);
    if (job.rc != 0) {
        cf_violation(t, "reservation_kill: instance 0 could not be killed and restarted");
    }
    fprintf(stderr,
            "reservation_kill: killed %" PRId64 " ms after all payments began; by then %" PRId64
            " charged, %" PRId64 " confirmed\n",
            job.wait_ms, job.charged, job.confirmed);
    report_payers(payers, n);
    check_payers(t, stack, &acks, payers, n);
    free(payers);
    finish(t, stack, &acks);
    return 0;
}
