/*
 * lab_main.c: the strategy lab's driver. Starts PostgreSQL (our two schemas
 * from their migration files, in one database), Redis and lock-svc on free
 * loopback ports, runs every strategy on every workload at every
 * concurrency, reads the data afterwards for anomalies, and prints a
 * Markdown table; results.tsv and chart.dat go to --out for the charts.
 * --smoke runs a small matrix and exits non-zero when `none` shows no
 * anomaly or a strategy shows one where it claims safety.
 */
#define _GNU_SOURCE
#include "lab.h"

#include <errno.h>
#include <glob.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench_common.h"
#include "svc/log.h"
#include "testenv.h"

#define LAB_MAX_LEVELS 8
#define LAB_POOL_MAX 100 /* database connections at most, whatever the concurrency */
#define LAB_AMOUNT 100
#define LAB_HALL_SEATS 1000
#define LAB_PAUSER 1 /* the paused holder's user id */

typedef enum { W_ONE_SEAT, W_HALL, W_DOUBLE_TOPUP, W_OVERSPEND, W_PAUSED, W_N } lab_workload_t;

static const char *const workload_names[W_N] = {"one-seat", "hall", "double-topup", "overspend",
                                                "paused-holder"};

/* What the data says went wrong in a cell. */
typedef enum {
    A_DOUBLE_BOOKED, /* a seat in two live reservations (one per extra reservation) */
    A_LOST_UPDATE,   /* balance differs from its ledger (in amounts of LAB_AMOUNT) */
    A_DOUBLE_CHARGE, /* one idempotency key applied twice */
    A_NEGATIVE,      /* an account below 0 */
    A_OVERSPENT,     /* spends beyond the money put in (in amounts) */
    A_EXPIRED_WRITE, /* the paused holder's booking next to its successor's */
    A_MISSING,       /* answered OK but not in the data */
    A_N
} lab_anomaly_t;

static const char *const anomaly_names[A_N] = {"double-booked", "lost-update", "double-charge",
                                               "negative",      "overspent",   "expired-write",
                                               "missing"};

typedef struct {
    bool smoke, keep_constraints;
    const char *lock_bin, *root, *out_dir;
    int levels[LAB_MAX_LEVELS], n_levels;
    bool strategy_on[LAB_N_STRATEGIES], workload_on[W_N];
    int ops_cap;            /* operations per cell at most (rounds of N) */
    double cell_seconds;    /* no new round starts after this */
    double cell_deadline_s; /* nothing waits for a connection or a lock past this */
    int statement_timeout_ms;
    int64_t lease_ms, wait_ms, pause_ms, pause_lease_ms;
} lab_cfg_t;

typedef struct {
    lab_workload_t workload;
    lab_strategy_t strategy;
    int n;
    int64_t ops, outcomes[LAB_N_OUTCOMES], retries, deadlocks, serialization;
    int64_t anomalies[A_N], anomalies_total;
    double wall_s, p50_ms, p99_ms, db_cpu_s, redis_cpu_s, locksvc_cpu_s;
    char first_error[160];
} lab_cell_t;

/* Everything the threads of one cell share. */
typedef struct {
    const lab_cfg_t *cfg;
    lab_env_t env;
    lab_workload_t workload;
    int n, rounds;
    int64_t start_ns;
    pthread_barrier_t start, round_a, round_b;
    volatile int stop;
    volatile int pauser_stopped; /* the paused holder checked and stopped */
    int64_t schedule;
} lab_run_t;

typedef struct {
    lab_run_t *run;
    int index;
    pthread_t tid;
    lab_worker_t w;
    int64_t outcomes[LAB_N_OUTCOMES];
    int64_t *lat_ns;
    int n_lat;
} lab_thread_t;

/* ---------- the environment ---------- */

typedef struct {
    testenv_pg_t pg;
    testenv_redis_t redis;
    testenv_proc_t lock;
    PGconn *admin;
    svc_client_t *lock_client;
    svc_pg_pool_t *pools[2]; /* small (for N < LAB_POOL_MAX) and full */
    int pool_sizes[2];
} lab_stack_t;

static void
die(const char *what)
{
    fprintf(stderr, "strategy-lab: %s\n", what);
    exit(2);
}

static void
admin_exec(lab_stack_t *s, const char *sql)
{
    PGresult *res = PQexec(s->admin, sql);

    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "strategy-lab: %s\n  in: %.200s\n", PQresultErrorMessage(res), sql);
        exit(2);
    }
    PQclear(res);
}

static int64_t
admin_int(lab_stack_t *s, const char *sql)
{
    PGresult *res = PQexec(s->admin, sql);
    int64_t v;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        fprintf(stderr, "strategy-lab: %s\n  in: %.200s\n", PQresultErrorMessage(res), sql);
        exit(2);
    }
    v = svc_pg_i64(res, 0, 0);
    PQclear(res);
    return v;
}

/* Applies the .sql files of root/<service>/migrations in name order, as the service would. */
static void
apply_migrations(lab_stack_t *s, const char *root, const char *service)
{
    char pattern[PATH_MAX];
    glob_t g;

    snprintf(pattern, sizeof(pattern), "%s/%s/migrations/*.sql", root, service);
    if (glob(pattern, 0, NULL, &g) != 0) {
        die("no migrations found: pass --root, the repository's top directory");
    }
    for (size_t i = 0; i < g.gl_pathc; i++) {
        FILE *f = fopen(g.gl_pathv[i], "r");
        char *sql;
        long len;

        if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0) {
            die("cannot read a migration");
        }
        rewind(f);
        if ((sql = calloc(1, (size_t)len + 1)) == NULL ||
            fread(sql, 1, (size_t)len, f) != (size_t)len) {
            die("cannot read a migration");
        }
        fclose(f);
        admin_exec(s, sql);
        free(sql);
    }
    globfree(&g);
}

/*
 * Connects every slot of pool, one after another, so that no cell pays for
 * (or fails at) a hundred backends forked at once on a busy machine.
 */
static void
pool_warm(svc_pg_pool_t *pool, int size)
{
    PGconn *conns[LAB_POOL_MAX];
    svc_err_t err;

    for (int i = 0; i < size; i++) {
        if ((conns[i] = svc_pg_acquire(pool, lab_now_ms() + 30000, &err)) == NULL) {
            die(err.msg);
        }
    }
    for (int i = 0; i < size; i++) {
        svc_pg_release(pool, conns[i], false);
    }
}

static void
stack_start(lab_stack_t *s, const lab_cfg_t *cfg)
{
    char redis_env[160], conninfo[700];
    svc_err_t err;

    testenv_cleanup_on_exit();
    if (testenv_pg_start(&s->pg, "lab") != 0 || testenv_redis_start(&s->redis) != 0) {
        die("cannot start PostgreSQL or Redis");
    }
    snprintf(redis_env, sizeof(redis_env), "REDIS_URL=redis://127.0.0.1:%d/0", s->redis.port);
    const char *env[] = {redis_env, "LOG_LEVEL=error", NULL};
    if (testenv_proc_start(&s->lock, cfg->lock_bin, NULL, env) != 0) {
        die("cannot start lock-svc");
    }
    /* Calls fail fast until the channel is up: connect before the first cell. */
    if ((s->lock_client = svc_client_get(s->lock.addr, &err)) == NULL ||
        svc_client_wait_ready(s->lock_client, 20000, &err) != 0) {
        die(err.msg);
    }
    if ((s->admin = PQconnectdb(s->pg.conninfo)) == NULL || PQstatus(s->admin) != CONNECTION_OK) {
        die("cannot connect to PostgreSQL");
    }
    admin_exec(s, "SET client_min_messages = warning");
    apply_migrations(s, cfg->root, "reservation-svc");
    apply_migrations(s, cfg->root, "balance-svc");
    /* A version column for the optimistic strategies (our schema has fences, not versions). */
    admin_exec(s, "ALTER TABLE seats ADD COLUMN version bigint NOT NULL DEFAULT 0;"
                  "ALTER TABLE accounts ADD COLUMN version bigint NOT NULL DEFAULT 0");
    if (!cfg->keep_constraints) {
        /*
         * Our last net (one live hold per seat, balance >= 0, one ledger row
         * per key) would turn every anomaly into an error; without it the data
         * shows what each strategy itself lets through.
         */
        admin_exec(s, "DROP INDEX reservation_seats_one_live;"
                      "CREATE INDEX lab_reservation_seats_live ON reservation_seats"
                      " (schedule_id, number) WHERE live;"
                      "ALTER TABLE accounts DROP CONSTRAINT accounts_balance_check;"
                      "ALTER TABLE ledger DROP CONSTRAINT ledger_balance_after_check;"
                      "ALTER TABLE ledger DROP CONSTRAINT ledger_user_id_idempotency_key_key;"
                      "CREATE INDEX lab_ledger_key ON ledger (user_id, idempotency_key)");
    }
    snprintf(conninfo, sizeof(conninfo), "%s options='-c lock_timeout=%lld'", s->pg.conninfo,
             (long long)cfg->wait_ms);
    for (int i = 0; i < 2; i++) {
        int max_n = 0;
        for (int l = 0; l < cfg->n_levels; l++) {
            max_n = cfg->levels[l] > max_n ? cfg->levels[l] : max_n;
        }
        s->pool_sizes[i] = i == 0 ? (cfg->levels[0] < LAB_POOL_MAX ? cfg->levels[0] : LAB_POOL_MAX)
                                  : (max_n < LAB_POOL_MAX ? max_n : LAB_POOL_MAX);
        svc_pg_opts_t o = {.conninfo = conninfo,
                           .size = s->pool_sizes[i],
                           .statement_timeout_ms = cfg->statement_timeout_ms,
                           .connect_timeout_s = 10};
        if ((s->pools[i] = svc_pg_pool_create(&o, &err)) == NULL) {
            die(err.msg);
        }
        pool_warm(s->pools[i], s->pool_sizes[i]);
    }
}

/* Stops everything; -1 when lock-svc did not exit cleanly (a sanitizer report, say). */
static int
stack_stop(lab_stack_t *s)
{
    int rc = 0;

    for (int i = 0; i < 2; i++) {
        svc_pg_pool_destroy(s->pools[i]);
    }
    PQfinish(s->admin);
    svc_client_release_all();
    if (testenv_proc_stop(&s->lock) != 0) {
        fprintf(stderr, "strategy-lab: lock-svc did not exit cleanly\n");
        rc = -1;
    }
    testenv_redis_stop(&s->redis);
    testenv_pg_stop(&s->pg);
    return rc;
}

/* ---------- one cell ---------- */

static int
cell_rounds(const lab_cfg_t *cfg, lab_workload_t wl, int n)
{
    int r = (cfg->ops_cap + n - 1) / n;

    return wl == W_PAUSED ? 1 : r < 1 ? 1 : r;
}

/* Fresh data for a cell: the tables emptied, then the seats or accounts of every round. */
static void
cell_setup(lab_stack_t *s, lab_run_t *run)
{
    char sql[512];
    int seats = run->workload == W_HALL     ? LAB_HALL_SEATS
                : run->workload == W_PAUSED ? 1
                                            : run->rounds;

    admin_exec(s, "TRUNCATE reservation_seats, payments, reservations, seats, schedules, concerts,"
                  " authorizations, ledger, accounts RESTART IDENTITY CASCADE");
    if (run->workload == W_DOUBLE_TOPUP || run->workload == W_OVERSPEND) {
        int64_t money = run->workload == W_OVERSPEND ? (int64_t)LAB_AMOUNT * (run->n / 2) : 0;
        snprintf(sql, sizeof(sql),
                 "INSERT INTO accounts (user_id, balance) SELECT g, %" PRId64
                 " FROM generate_series(1, %d) g",
                 money, run->rounds);
        admin_exec(s, sql);
        if (money > 0) {
            snprintf(sql, sizeof(sql),
                     "INSERT INTO ledger (user_id, kind, amount, balance_after, idempotency_key)"
                     " SELECT g, 1, %" PRId64 ", %" PRId64 ", 'init' FROM generate_series(1, %d) g",
                     money, money, run->rounds);
            admin_exec(s, sql);
        }
        return;
    }
    admin_exec(s, "INSERT INTO concerts (title) VALUES ('lab')");
    snprintf(sql, sizeof(sql),
             "INSERT INTO schedules (concert_id, starts_at_ms, seat_count, seat_price)"
             " VALUES (1, 4102444800000, %d, 0)",
             seats);
    admin_exec(s, sql);
    snprintf(sql, sizeof(sql),
             "INSERT INTO seats (schedule_id, number, price) SELECT 1, g, 0"
             " FROM generate_series(1, %d) g",
             seats);
    admin_exec(s, sql);
    admin_exec(s, "ANALYZE");
    run->schedule = 1;
}

/* One operation of thread t in round r. */
static lab_outcome_t
cell_op(lab_thread_t *t, int r)
{
    lab_run_t *run = t->run;
    lab_op_t op = {.user_id = t->index + 1};
    char key[48];
    int numbers[4], k;

    switch (run->workload) {
    case W_ONE_SEAT:
        numbers[0] = r + 1;
        return lab_book(&run->env, &t->w, &op, run->schedule, numbers, 1);
    case W_HALL:
        k = 1 + (int)(rand_r(&t->w.rng) % 4);
        numbers[0] = 1 + (int)(rand_r(&t->w.rng) % (LAB_HALL_SEATS - k + 1));
        for (int i = 1; i < k; i++) {
            numbers[i] = numbers[0] + i;
        }
        return lab_book(&run->env, &t->w, &op, run->schedule, numbers, k);
    case W_DOUBLE_TOPUP:
        op.user_id = r + 1; /* one account a round; two clicks per key */
        snprintf(key, sizeof(key), "topup-%d", t->index / 2);
        return lab_top_up(&run->env, &t->w, &op, LAB_AMOUNT, key);
    case W_OVERSPEND:
        op.user_id = r + 1;
        snprintf(key, sizeof(key), "spend-%d", t->index);
        return lab_spend(&run->env, &t->w, &op, LAB_AMOUNT, key);
    case W_PAUSED:
    default:
        numbers[0] = 1;
        if (t->index == 0) {
            op.pause_ms = run->cfg->pause_ms;
            op.paused_flag = &run->pauser_stopped;
            lab_outcome_t out = lab_book(&run->env, &t->w, &op, run->schedule, numbers, 1);
            run->pauser_stopped = 1; /* also when it failed before its pause */
            return out;
        } else {
            /* Everyone else comes once the holder has checked the seat and stopped. */
            for (int i = 0; i < 10000 && !run->pauser_stopped; i++) {
                usleep(1000);
            }
        }
        return lab_book(&run->env, &t->w, &op, run->schedule, numbers, 1);
    }
}

static void *
cell_thread(void *arg)
{
    lab_thread_t *t = arg;
    lab_run_t *run = t->run;

    pthread_barrier_wait(&run->start);
    for (int r = 0; r < run->rounds; r++) {
        if (pthread_barrier_wait(&run->round_a) == PTHREAD_BARRIER_SERIAL_THREAD) {
            double elapsed = (double)(bench_now_ns() - run->start_ns) / 1e9;
            run->stop = r > 0 && elapsed >= run->cfg->cell_seconds;
        }
        pthread_barrier_wait(&run->round_b);
        if (run->stop) {
            break;
        }
        int64_t t0 = bench_now_ns();
        lab_outcome_t out = cell_op(t, r);
        t->lat_ns[t->n_lat++] = bench_now_ns() - t0;
        t->outcomes[out]++;
    }
    lab_worker_close(&t->w);
    return NULL;
}

/* Reads the data for the anomalies of c's workload. */
static void
cell_check(lab_stack_t *s, lab_cell_t *c)
{
    int64_t rows, ok = c->outcomes[LAB_OK];

    if (c->workload == W_DOUBLE_TOPUP || c->workload == W_OVERSPEND) {
        c->anomalies[A_LOST_UPDATE] = admin_int(
            s, "SELECT coalesce(sum(abs(a.balance - coalesce(l.s, 0))), 0) / 100 FROM accounts a"
               " LEFT JOIN (SELECT user_id, sum(CASE kind WHEN 2 THEN -amount ELSE amount END) s"
               " FROM ledger GROUP BY user_id) l USING (user_id)");
        c->anomalies[A_DOUBLE_CHARGE] = admin_int(
            s, "SELECT count(*) - count(DISTINCT (user_id, idempotency_key)) FROM ledger");
        c->anomalies[A_NEGATIVE] = admin_int(s, "SELECT count(*) FROM accounts WHERE balance < 0");
        c->anomalies[A_OVERSPENT] = admin_int(
            s,
            "SELECT coalesce(sum(greatest(0, sp - tp)), 0) / 100 FROM (SELECT user_id,"
            " coalesce(sum(amount) FILTER (WHERE kind = 2), 0) sp,"
            " coalesce(sum(amount) FILTER (WHERE kind = 1), 0) tp FROM ledger GROUP BY user_id) x");
        rows = admin_int(s, "SELECT count(*) FROM ledger WHERE idempotency_key <> 'init'");
    } else {
        c->anomalies[A_DOUBLE_BOOKED] = admin_int(
            s, "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) n FROM reservation_seats"
               " WHERE live GROUP BY schedule_id, number) x WHERE n > 1");
        if (c->workload == W_PAUSED) {
            c->anomalies[A_EXPIRED_WRITE] = admin_int(
                s,
                "SELECT count(*) FROM reservation_seats a JOIN reservations r"
                " ON r.id = a.reservation_id WHERE r.user_id = 1 AND a.live AND EXISTS"
                " (SELECT 1 FROM reservation_seats b WHERE b.live AND b.schedule_id ="
                " a.schedule_id AND b.number = a.number AND b.reservation_id <> a.reservation_id)");
        }
        rows = admin_int(s, "SELECT count(*) FROM reservations WHERE status = 1");
    }
    c->anomalies[A_MISSING] = ok > rows ? ok - rows : 0;
    for (int a = 0; a < A_N; a++) {
        c->anomalies_total += c->anomalies[a];
    }
}

static double
ticks_s(int64_t ticks)
{
    return ticks < 0 ? -1 : (double)ticks / (double)sysconf(_SC_CLK_TCK);
}

static void
cell_run(lab_stack_t *s, const lab_cfg_t *cfg, lab_workload_t wl, lab_strategy_t st, int n,
         lab_cell_t *c)
{
    lab_run_t run = {.cfg = cfg, .workload = wl, .n = n};
    lab_thread_t *ts = calloc((size_t)n, sizeof(*ts));
    int64_t pids[4] = {0, s->pg.pid, s->redis.pid, s->lock.pid}, before[6], after[6], ticks[6];
    bench_samples_t lat = {0};
    pthread_attr_t attr;

    if (ts == NULL) {
        die("out of memory");
    }
    memset(c, 0, sizeof(*c));
    c->workload = wl;
    c->strategy = st;
    c->n = n;
    run.rounds = cell_rounds(cfg, wl, n);
    cell_setup(s, &run);
    run.env = (lab_env_t){
        .strategy = st,
        .pg = n <= s->pool_sizes[0] ? s->pools[0] : s->pools[1],
        .lock_svc = s->lock_client,
        .redis_host = "127.0.0.1",
        .redis_port = s->redis.port,
        .lease_ms = wl == W_PAUSED ? cfg->pause_lease_ms : cfg->lease_ms,
        .wait_ms = cfg->wait_ms,
    };
    pthread_barrier_init(&run.start, NULL, (unsigned)n + 1);
    pthread_barrier_init(&run.round_a, NULL, (unsigned)n);
    pthread_barrier_init(&run.round_b, NULL, (unsigned)n);
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 512 * 1024);
    for (int i = 0; i < n; i++) {
        ts[i].run = &run;
        ts[i].index = i;
        ts[i].w.rng = (unsigned)(i * 7919 + st * 131 + wl * 17 + n);
        if ((ts[i].lat_ns = calloc((size_t)run.rounds, sizeof(int64_t))) == NULL ||
            pthread_create(&ts[i].tid, &attr, cell_thread, &ts[i]) != 0) {
            die("cannot start the cell's threads (ulimit -u?)");
        }
    }
    pthread_attr_destroy(&attr);
    bench_cpu_snapshot(pids, 4, 1, before);
    run.start_ns = bench_now_ns();
    run.env.deadline_ms = lab_now_ms() + (int64_t)(cfg->cell_deadline_s * 1000);
    pthread_barrier_wait(&run.start);
    for (int i = 0; i < n; i++) {
        pthread_join(ts[i].tid, NULL);
    }
    c->wall_s = (double)(bench_now_ns() - run.start_ns) / 1e9;
    bench_cpu_snapshot(pids, 4, 1, after);
    bench_cpu_delta(before, after, 4, ticks);
    c->db_cpu_s = ticks_s(ticks[1]);
    c->redis_cpu_s = ticks_s(ticks[2]);
    c->locksvc_cpu_s = ticks_s(ticks[3]);
    for (int i = 0; i < n; i++) {
        for (int o = 0; o < LAB_N_OUTCOMES; o++) {
            c->outcomes[o] += ts[i].outcomes[o];
            c->ops += ts[i].outcomes[o];
        }
        for (int k = 0; k < ts[i].n_lat; k++) {
            if (bench_samples_push(&lat, ts[i].lat_ns[k]) != 0) {
                die("out of memory");
            }
        }
        c->retries += ts[i].w.retries;
        c->deadlocks += ts[i].w.sqlstate_40p01;
        c->serialization += ts[i].w.sqlstate_40001;
        if (c->first_error[0] == '\0' && ts[i].w.err[0] != '\0' && ts[i].outcomes[LAB_ERROR] > 0) {
            snprintf(c->first_error, sizeof(c->first_error), "%s", ts[i].w.err);
        }
        free(ts[i].lat_ns);
    }
    bench_samples_percentiles(&lat, &c->p50_ms, &c->p99_ms);
    bench_samples_free(&lat);
    pthread_barrier_destroy(&run.start);
    pthread_barrier_destroy(&run.round_a);
    pthread_barrier_destroy(&run.round_b);
    free(ts);
    cell_check(s, c);
}

/* ---------- the report ---------- */

/* "taken 9, busy 3" : every answer that was not OK, by reason. */
static void
refusals_text(const lab_cell_t *c, char *buf, size_t len)
{
    size_t at = 0;

    buf[0] = '\0';
    for (int o = LAB_OK + 1; o < LAB_N_OUTCOMES && at < len; o++) {
        if (c->outcomes[o] > 0) {
            at += (size_t)snprintf(buf + at, len - at, "%s%s %" PRId64, at ? ", " : "",
                                   lab_outcome_names[o], c->outcomes[o]);
        }
    }
    if (at == 0) {
        snprintf(buf, len, "-");
    }
}

static void
anomalies_text(const lab_cell_t *c, char *buf, size_t len)
{
    size_t at = (size_t)snprintf(buf, len, "%s%" PRId64, c->anomalies_total ? "**" : "",
                                 c->anomalies_total);

    for (int a = 0; a < A_N && at < len; a++) {
        if (c->anomalies[a] > 0) {
            at += (size_t)snprintf(buf + at, len - at, " %s %" PRId64, anomaly_names[a],
                                   c->anomalies[a]);
        }
    }
    if (c->anomalies_total && at < len) {
        snprintf(buf + at, len - at, "**");
    }
}

static void
print_header(FILE *f)
{
    fprintf(f, "| workload | strategy | N | ops | ok | refused (by reason) | deadlocks | "
               "serialization | retries | anomalies | wall s | ops/s | p50 ms | p99 ms | "
               "DB CPU s |\n");
    fprintf(f, "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | "
               "---: | ---: | ---: |\n");
}

static void
print_row(FILE *f, const lab_cell_t *c)
{
    char refused[256], anomalies[256];

    refusals_text(c, refused, sizeof(refused));
    anomalies_text(c, anomalies, sizeof(anomalies));
    fprintf(f,
            "| %s | %s | %d | %" PRId64 " | %" PRId64 " | %s | %" PRId64 " | %" PRId64 " | %" PRId64
            " | %s | %.2f | %.0f | %.1f | %.1f | %.2f |\n",
            workload_names[c->workload], lab_strategy_names[c->strategy], c->n, c->ops,
            c->outcomes[LAB_OK], refused, c->deadlocks, c->serialization, c->retries, anomalies,
            c->wall_s, c->wall_s > 0 ? (double)c->ops / c->wall_s : 0, c->p50_ms, c->p99_ms,
            c->db_cpu_s);
}

static void
print_tsv_row(FILE *f, const lab_cell_t *c)
{
    fprintf(f, "%s\t%s\t%d\t%" PRId64 "\t%" PRId64, workload_names[c->workload],
            lab_strategy_names[c->strategy], c->n, c->ops, c->outcomes[LAB_OK]);
    for (int o = LAB_OK + 1; o < LAB_N_OUTCOMES; o++) {
        fprintf(f, "\t%" PRId64, c->outcomes[o]);
    }
    fprintf(f, "\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\t%" PRId64, c->deadlocks, c->serialization,
            c->retries, c->anomalies_total);
    for (int a = 0; a < A_N; a++) {
        fprintf(f, "\t%" PRId64, c->anomalies[a]);
    }
    fprintf(f, "\t%.3f\t%.1f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\n", c->wall_s,
            c->wall_s > 0 ? (double)c->ops / c->wall_s : 0, c->p50_ms, c->p99_ms, c->db_cpu_s,
            c->redis_cpu_s, c->locksvc_cpu_s);
}

static void
print_tsv_header(FILE *f)
{
    fprintf(f, "workload\tstrategy\tn\tops\tok");
    for (int o = LAB_OK + 1; o < LAB_N_OUTCOMES; o++) {
        fprintf(f, "\t%s", lab_outcome_names[o]);
    }
    fprintf(f, "\tdeadlocks\tserialization\tretries\tanomalies");
    for (int a = 0; a < A_N; a++) {
        fprintf(f, "\t%s", anomaly_names[a]);
    }
    fprintf(f, "\twall_s\tops_per_s\tp50_ms\tp99_ms\tdb_cpu_s\tredis_cpu_s\tlocksvc_cpu_s\n");
}

/*
 * chart.dat for gnuplot: one block per workload (index 0..), a row per
 * strategy: its number, name, then ops/s, p99 ms and anomalies at each level.
 */
static void
write_chart_data(const lab_cfg_t *cfg, const lab_cell_t *cells, int n_cells, FILE *f)
{
    fprintf(f, "# strategy name");
    for (int l = 0; l < cfg->n_levels; l++) {
        fprintf(f, " ops_s_%d", cfg->levels[l]);
    }
    for (int l = 0; l < cfg->n_levels; l++) {
        fprintf(f, " p99_ms_%d", cfg->levels[l]);
    }
    for (int l = 0; l < cfg->n_levels; l++) {
        fprintf(f, " anomalies_%d", cfg->levels[l]);
    }
    fprintf(f, "\n");
    for (int wl = 0; wl < W_N; wl++) {
        if (!cfg->workload_on[wl]) {
            continue;
        }
        fprintf(f, "# %s\n", workload_names[wl]);
        for (int st = 0; st < LAB_N_STRATEGIES; st++) {
            if (!cfg->strategy_on[st]) {
                continue;
            }
            double v[3][LAB_MAX_LEVELS] = {{0}};
            for (int i = 0; i < n_cells; i++) {
                const lab_cell_t *c = &cells[i];
                for (int l = 0; l < cfg->n_levels; l++) {
                    if ((int)c->workload == wl && (int)c->strategy == st &&
                        c->n == cfg->levels[l]) {
                        v[0][l] = c->wall_s > 0 ? (double)c->ops / c->wall_s : 0;
                        v[1][l] = c->p99_ms;
                        v[2][l] = (double)c->anomalies_total;
                    }
                }
            }
            fprintf(f, "%d %s", st, lab_strategy_names[st]);
            for (int k = 0; k < 3; k++) {
                for (int l = 0; l < cfg->n_levels; l++) {
                    fprintf(f, " %.2f", v[k][l]);
                }
            }
            fprintf(f, "\n");
        }
        fprintf(f, "\n\n");
    }
}

/*
 * A strategy-by-workload table of one number per concurrency level:
 * anomalies (what = 0), p99 ms (1) or PostgreSQL CPU s (2), "a / b / c" for the levels.
 */
static void
print_summary(FILE *f, const lab_cfg_t *cfg, const lab_cell_t *cells, int n_cells, int what)
{
    fprintf(f, "| %s (N =", what == 0 ? "anomalies" : what == 1 ? "p99 ms" : "database CPU s");
    for (int l = 0; l < cfg->n_levels; l++) {
        fprintf(f, "%s %d", l ? " /" : "", cfg->levels[l]);
    }
    fprintf(f, ") |");
    for (int wl = 0; wl < W_N; wl++) {
        if (cfg->workload_on[wl]) {
            fprintf(f, " %s |", workload_names[wl]);
        }
    }
    fprintf(f, "\n| --- |");
    for (int wl = 0; wl < W_N; wl++) {
        if (cfg->workload_on[wl]) {
            fprintf(f, " ---: |");
        }
    }
    fprintf(f, "\n");
    for (int st = 0; st < LAB_N_STRATEGIES; st++) {
        if (!cfg->strategy_on[st]) {
            continue;
        }
        fprintf(f, "| %s |", lab_strategy_names[st]);
        for (int wl = 0; wl < W_N; wl++) {
            if (!cfg->workload_on[wl]) {
                continue;
            }
            int64_t bad = 0;
            fprintf(f, " ");
            for (int l = 0; l < cfg->n_levels; l++) {
                for (int i = 0; i < n_cells; i++) {
                    const lab_cell_t *c = &cells[i];
                    if ((int)c->workload != wl || (int)c->strategy != st ||
                        c->n != cfg->levels[l]) {
                        continue;
                    }
                    bad += c->anomalies_total;
                    if (what == 0) {
                        fprintf(f, "%s%" PRId64, l ? " / " : "", c->anomalies_total);
                    } else if (what == 1) {
                        fprintf(f, "%s%.0f", l ? " / " : "", c->p99_ms);
                    } else {
                        fprintf(f, "%s%.2f", l ? " / " : "", c->db_cpu_s);
                    }
                }
            }
            fprintf(f, "%s |", what == 0 && bad > 0 ? " **!**" : "");
        }
        fprintf(f, "\n");
    }
}

/* ---------- what the smoke run asserts ---------- */

/*
 * Whether a strategy claims to keep a workload safe. The lease-only locks
 * (Redis, lock-svc token without a row lock or fence) make no such claim
 * once the holder outlives its lease: that is what paused-holder shows.
 */
static bool
claims_safety(lab_strategy_t st, lab_workload_t wl)
{
    switch (st) {
    case LAB_NONE:
        return false;
    case LAB_REDIS_GETDEL:
    case LAB_REDIS_LUA:
    case LAB_LOCKSVC_TOKEN:
        return wl != W_PAUSED;
    case LAB_CONDITIONAL:
        /* NOT EXISTS on the ledger is read from the statement's snapshot, not re-checked. */
        return wl != W_DOUBLE_TOPUP;
    default:
        return true;
    }
}

/* The anomaly each check exists for, and the workload where `none` must show it. */
static const struct {
    lab_anomaly_t anomaly;
    lab_workload_t workload;
} smoke_must_see[] = {
    {A_DOUBLE_BOOKED, W_ONE_SEAT},     {A_LOST_UPDATE, W_DOUBLE_TOPUP},
    {A_DOUBLE_CHARGE, W_DOUBLE_TOPUP}, {A_NEGATIVE, W_OVERSPEND},
    {A_OVERSPENT, W_OVERSPEND},        {A_EXPIRED_WRITE, W_PAUSED},
};

static int
smoke_verdict(const lab_cfg_t *cfg, const lab_cell_t *cells, int n_cells)
{
    int failures = 0;
    int64_t none_total = 0;

    for (int i = 0; i < n_cells; i++) {
        const lab_cell_t *c = &cells[i];
        if (c->strategy == LAB_NONE) {
            none_total += c->anomalies_total;
        }
        if (claims_safety(c->strategy, c->workload) && c->anomalies_total > 0) {
            fprintf(stderr,
                    "smoke: FAIL %s on %s (N=%d) claims safety but shows %" PRId64 " anomalies\n",
                    lab_strategy_names[c->strategy], workload_names[c->workload], c->n,
                    c->anomalies_total);
            failures++;
        }
        if (c->outcomes[LAB_ERROR] > 0) {
            fprintf(stderr, "smoke: FAIL %s on %s (N=%d): %" PRId64 " errors, first: %s\n",
                    lab_strategy_names[c->strategy], workload_names[c->workload], c->n,
                    c->outcomes[LAB_ERROR], c->first_error);
            failures++;
        }
    }
    /* Each check must be seen to fail: `none` trips every one of them. */
    for (size_t k = 0; k < sizeof(smoke_must_see) / sizeof(smoke_must_see[0]); k++) {
        int64_t seen = 0;
        for (int i = 0; i < n_cells; i++) {
            if (cells[i].strategy == LAB_NONE && cells[i].workload == smoke_must_see[k].workload) {
                seen += cells[i].anomalies[smoke_must_see[k].anomaly];
            }
        }
        if (cfg->strategy_on[LAB_NONE] && cfg->workload_on[smoke_must_see[k].workload] &&
            seen == 0) {
            fprintf(stderr, "smoke: FAIL none shows no %s on %s: the checker does not see it\n",
                    anomaly_names[smoke_must_see[k].anomaly],
                    workload_names[smoke_must_see[k].workload]);
            failures++;
        }
    }
    /* A lease alone does not survive a paused holder: the lab must show it. */
    for (int i = 0; i < n_cells; i++) {
        if (cells[i].strategy == LAB_LOCKSVC_TOKEN && cells[i].workload == W_PAUSED &&
            cells[i].anomalies[A_EXPIRED_WRITE] == 0) {
            fprintf(stderr, "smoke: FAIL locksvc-token shows no expired-holder write\n");
            failures++;
        }
    }
    fprintf(stderr, "smoke: %s (none: %" PRId64 " anomalies)\n", failures ? "FAILED" : "passed",
            none_total);
    return failures ? 1 : 0;
}

/* ---------- main ---------- */

static void
usage(void)
{
    fprintf(stderr, "usage: strategy-lab --lock-svc PATH --root DIR --out DIR [--smoke]\n"
                    "         [--levels 10,100,1000] [--strategies a,b] [--workloads a,b]\n"
                    "         [--ops N] [--cell-seconds S] [--keep-constraints]\n"
                    "strategies:");
    for (int i = 0; i < LAB_N_STRATEGIES; i++) {
        fprintf(stderr, " %s", lab_strategy_names[i]);
    }
    fprintf(stderr, "\nworkloads:");
    for (int i = 0; i < W_N; i++) {
        fprintf(stderr, " %s", workload_names[i]);
    }
    fprintf(stderr, "\n");
    exit(2);
}

/* Sets on[i] for each comma-separated name in list that names[i] spells. */
static void
parse_names(const char *list, const char *const *names, int n, bool *on)
{
    char buf[512], *save = NULL;

    memset(on, 0, (size_t)n * sizeof(*on));
    snprintf(buf, sizeof(buf), "%s", list);
    for (char *tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        int i = 0;
        while (i < n && strcmp(names[i], tok) != 0) {
            i++;
        }
        if (i == n) {
            fprintf(stderr, "strategy-lab: unknown name %s\n", tok);
            usage();
        }
        on[i] = true;
    }
}

static void
parse_args(lab_cfg_t *cfg, int argc, char **argv)
{
    const char *levels = NULL;

    for (int i = 0; i < LAB_N_STRATEGIES; i++) {
        cfg->strategy_on[i] = true;
    }
    for (int i = 0; i < W_N; i++) {
        cfg->workload_on[i] = true;
    }
    cfg->ops_cap = 1000;
    cfg->cell_seconds = 3;
    cfg->cell_deadline_s = 15;
    cfg->statement_timeout_ms = 10000;
    cfg->lease_ms = 5000;
    cfg->wait_ms = 5000;
    cfg->pause_ms = 1000;
    cfg->pause_lease_ms = 300;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--smoke") == 0) {
            cfg->smoke = true;
            continue;
        }
        if (strcmp(a, "--keep-constraints") == 0) {
            cfg->keep_constraints = true;
            continue;
        }
        if (v == NULL) {
            usage();
        }
        i++;
        if (strcmp(a, "--lock-svc") == 0) {
            cfg->lock_bin = v;
        } else if (strcmp(a, "--root") == 0) {
            cfg->root = v;
        } else if (strcmp(a, "--out") == 0) {
            cfg->out_dir = v;
        } else if (strcmp(a, "--levels") == 0) {
            levels = v;
        } else if (strcmp(a, "--strategies") == 0) {
            parse_names(v, lab_strategy_names, LAB_N_STRATEGIES, cfg->strategy_on);
        } else if (strcmp(a, "--workloads") == 0) {
            parse_names(v, workload_names, W_N, cfg->workload_on);
        } else if (strcmp(a, "--ops") == 0) {
            cfg->ops_cap = atoi(v);
        } else if (strcmp(a, "--cell-seconds") == 0) {
            cfg->cell_seconds = atof(v);
        } else {
            usage();
        }
    }
    if (cfg->smoke) {
        cfg->ops_cap = cfg->ops_cap == 1000 ? 100 : cfg->ops_cap;
        cfg->cell_seconds = 1;
        cfg->cell_deadline_s = 4;
        cfg->statement_timeout_ms = 2000;
        cfg->pause_ms = 600;
        cfg->pause_lease_ms = 150;
        levels = levels != NULL ? levels : "20";
    }
    levels = levels != NULL ? levels : "10,100,1000";
    for (const char *p = levels; *p != '\0' && cfg->n_levels < LAB_MAX_LEVELS;) {
        int n = atoi(p);
        if (n < 2 || n > 5000) {
            usage();
        }
        cfg->levels[cfg->n_levels++] = n;
        p += strcspn(p, ",");
        p += *p == ',';
    }
    if (cfg->lock_bin == NULL || cfg->root == NULL || cfg->out_dir == NULL || cfg->n_levels == 0 ||
        cfg->ops_cap < 1) {
        usage();
    }
}

static FILE *
out_file(const lab_cfg_t *cfg, const char *name)
{
    char path[PATH_MAX];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", cfg->out_dir, name);
    if ((f = fopen(path, "w")) == NULL) {
        fprintf(stderr, "strategy-lab: cannot write %s: %s\n", path, strerror(errno));
        exit(2);
    }
    return f;
}

int
main(int argc, char **argv)
{
    lab_cfg_t cfg = {0};
    lab_stack_t stack = {0};
    lab_cell_t *cells = calloc(LAB_N_STRATEGIES * W_N * LAB_MAX_LEVELS, sizeof(lab_cell_t));
    int n_cells = 0, status = 0;
    int64_t t0;

    if (cells == NULL) {
        die("out of memory");
    }
    parse_args(&cfg, argc, argv);
    svc_log_init("strategy-lab", SVC_LOG_ERROR);
    if (mkdir(cfg.out_dir, 0755) != 0 && errno != EEXIST) {
        die("cannot make the output dir");
    }
    stack_start(&stack, &cfg);
    FILE *md = out_file(&cfg, "results.md"), *tsv = out_file(&cfg, "results.tsv");
    print_header(md);
    print_tsv_header(tsv);
    t0 = bench_now_ns();
    for (int l = 0; l < cfg.n_levels; l++) {
        for (int wl = 0; wl < W_N; wl++) {
            for (int st = 0; st < LAB_N_STRATEGIES; st++) {
                if (!cfg.workload_on[wl] || !cfg.strategy_on[st]) {
                    continue;
                }
                lab_cell_t *c = &cells[n_cells++];
                cell_run(&stack, &cfg, (lab_workload_t)wl, (lab_strategy_t)st, cfg.levels[l], c);
                print_row(md, c);
                print_tsv_row(tsv, c);
                fflush(md);
                fflush(tsv);
                fprintf(stderr, "[%6.1fs] ", (double)(bench_now_ns() - t0) / 1e9);
                print_row(stderr, c);
                if (c->first_error[0] != '\0') {
                    fprintf(stderr, "  first error: %s\n", c->first_error);
                }
            }
        }
    }
    fclose(md);
    fclose(tsv);
    FILE *chart = out_file(&cfg, "chart.dat");
    write_chart_data(&cfg, cells, n_cells, chart);
    fclose(chart);
    status = stack_stop(&stack) != 0 ? 1 : 0;

    printf("Strategy lab, %s; PostgreSQL %d connections at most; %d ops per cell at most,"
           " no new round after %.0f s; leases %lld ms (paused-holder: %lld ms, pause %lld ms)\n\n",
           cfg.smoke ? "smoke" : "full", LAB_POOL_MAX, cfg.ops_cap, cfg.cell_seconds,
           (long long)cfg.lease_ms, (long long)cfg.pause_lease_ms, (long long)cfg.pause_ms);
    print_header(stdout);
    for (int i = 0; i < n_cells; i++) {
        print_row(stdout, &cells[i]);
    }
    printf("\n");
    print_summary(stdout, &cfg, cells, n_cells, 0);
    printf("\n");
    print_summary(stdout, &cfg, cells, n_cells, 1);
    printf("\n");
    print_summary(stdout, &cfg, cells, n_cells, 2);
    FILE *summary = out_file(&cfg, "summary.md");
    print_summary(summary, &cfg, cells, n_cells, 0);
    fprintf(summary, "\n");
    print_summary(summary, &cfg, cells, n_cells, 1);
    fprintf(summary, "\n");
    print_summary(summary, &cfg, cells, n_cells, 2);
    fclose(summary);
    printf("\n%d cells in %.0f s\n", n_cells, (double)(bench_now_ns() - t0) / 1e9);
    if (cfg.smoke) {
        status |= smoke_verdict(&cfg, cells, n_cells);
    }
    free(cells);
    return status;
}
