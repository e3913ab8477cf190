/*
 * reservation_curve.c: reservation-bench's scale curve. For each storm size
 * N, N users fire HoldSeats at once from one completion queue, (a) all on
 * one fresh seat, (b) each on one seat drawn at random from a fresh hall.
 * Per storm it reports the time until every answer is in, p50/p99 of the
 * answers, answers by status, what the database holds afterwards, and the
 * peak resident memory of reservation-svc, lock-svc and balance-svc during
 * the storm; then the targets next to the numbers, and one line per
 * storm in --curve-file for reservation_bench.sh's chart.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <grpc/grpc.h>
#include <grpc/support/time.h>
#include <libpq-fe.h>

#include "bench_common.h"
#include "reservation_bench.h"
#include "svc/err.h"
#include "svc/timer.h"

#define MEM_SAMPLE_MS 5 /* VmRSS sampling while a storm runs */
#define SETTLE_MS 300   /* between making the accounts and the storm, and between storms */
#define TARGET_SMALL_USERS 1000
#define TARGET_SMALL_MS 150.0
#define TARGET_LARGE_USERS 10000
#define TARGET_LARGE_MS 1500.0
#define TARGET_RSS_MB 100.0

enum { KIND_ONE_SEAT, KIND_HALL, N_KINDS };
enum { MEM_RSV, MEM_LOCK, MEM_BAL, N_MEM };

static const char *const mem_names[N_MEM] = {"reservation-svc", "lock-svc", "balance-svc"};

/* What one storm measured. Times in ms; memory in kB (-1: unknown). */
typedef struct {
    int kind;
    int64_t users, schedule_id;
    double sent_ms, all_in_ms, p50_ms, p99_ms;
    double other_cpus; /* CPUs busy with processes outside the stack and the bench; -1 unknown */
    rbench_outcome_t out;
    char first_odd[256]; /* the first answer neither OK, FAILED_PRECONDITION nor ABORTED */
    int64_t odd;         /* how many such answers */
    /*
     * Seats: wanted by someone, answered OK more than once, wanted but
     * answered OK to nobody, and of those the ones where not every answer
     * was ABORTED (someone was refused a seat nobody got).
     */
    int64_t seats_wanted, seats_two_ok, seats_no_ok, seats_no_ok_refused;
    /* the database afterwards: live holds, held seats, seats in two live holds; -1: unread */
    int64_t db_live, db_held, db_double;
    int64_t peak_kb[N_MEM];    /* VmHWM after the storm */
    int64_t sampled_kb[N_MEM]; /* the largest VmRSS sampled during it */
    bool peak_reset;           /* VmHWM was reset before the storm: it is the storm's peak */
} curve_storm_t;

/* ---------------------------------------------------------------- checks */

/*
 * Whether the storm kept the invariants: no seat answered OK twice, every
 * OK is a live hold in the database and nothing more, no seat in two live
 * holds, no seat refused to someone while nobody got it.
 */
static bool
storm_correct(const curve_storm_t *st)
{
    int64_t ok = st->out.codes[SVC_OK];

    return st->seats_two_ok == 0 && st->seats_no_ok_refused == 0 && st->db_live == ok &&
           st->db_held == ok && st->db_double == 0;
}

/* And what a user expects: exactly one OK per seat wanted, the rest FAILED_PRECONDITION or ABORTED.
 */
static bool
storm_as_expected(const curve_storm_t *st)
{
    return storm_correct(st) && st->odd == 0 && st->seats_no_ok == 0;
}

/*
 * Reads what the database holds on st's schedule into st->db_*: live holds,
 * seats marked held, seats in two live reservations (held or confirmed).
 */
static void
db_check(PGconn *db, curve_storm_t *st)
{
    static const char sql[] =
        "SELECT (SELECT count(*) FROM reservations WHERE schedule_id = $1 AND status = 1),"
        " (SELECT count(*) FROM seats WHERE schedule_id = $1 AND status = 2),"
        " (SELECT count(*) FROM (SELECT rs.number FROM reservation_seats rs"
        "   JOIN reservations r ON r.id = rs.reservation_id"
        "   WHERE rs.schedule_id = $1 AND r.status IN (1, 2)"
        "   GROUP BY rs.number HAVING count(*) > 1) x)";
    char sched[24];
    const char *params[] = {sched};
    PGresult *res;

    st->db_live = st->db_held = st->db_double = -1;
    snprintf(sched, sizeof(sched), "%" PRId64, st->schedule_id);
    res = PQexecParams(db, sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        st->db_live = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        st->db_held = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
        st->db_double = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    } else {
        fprintf(stderr, "reservation-bench: database check failed: %s", PQerrorMessage(db));
    }
    PQclear(res);
}

/* ---------------------------------------------------------------- one storm */

static uint64_t
xorshift64(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Resets each service's VmHWM and starts sampling VmRSS; *reset: every reset took. */
static bench_mem_sampler_t *
mem_watch_start(const rbench_cfg_t *cfg, int64_t pids[N_MEM], bool *reset)
{
    bench_mem_sampler_t *s;

    pids[MEM_RSV] = cfg->pids[RBENCH_PROC_RSV];
    pids[MEM_LOCK] = cfg->pids[RBENCH_PROC_LOCK];
    pids[MEM_BAL] = cfg->pids[RBENCH_PROC_BAL];
    *reset = true;
    for (int i = 0; i < N_MEM; i++) {
        *reset = bench_mem_reset_peak(pids[i]) == 0 && *reset;
    }
    if ((s = bench_mem_sampler_create(pids, N_MEM, MEM_SAMPLE_MS)) == NULL) {
        fprintf(stderr, "reservation-bench: cannot start the memory sampler\n");
        exit(1);
    }
    return s;
}

static void
mem_watch_stop(bench_mem_sampler_t *s, const int64_t pids[N_MEM], curve_storm_t *st)
{
    bench_mem_sampler_stop(s, st->sampled_kb);
    bench_mem_sampler_destroy(s);
    for (int i = 0; i < N_MEM; i++) {
        int64_t rss;
        bench_mem_read(pids[i], &rss, &st->peak_kb[i]);
    }
}

/* Answers per seat of a storm (index: seat number). */
typedef struct {
    int64_t *ok;
    bool *wanted, *refused; /* refused: some answer was neither OK nor ABORTED */
} seat_tally_t;

/* Counts one answer of a storm; want is the seat it asked for. */
static void
storm_answer(curve_storm_t *st, svc_status_t code, const char *msg, seat_tally_t *t, int32_t want)
{
    rbench_outcome_add(&st->out, code, msg);
    t->ok[want] += code == SVC_OK;
    t->refused[want] = t->refused[want] || (code != SVC_OK && code != SVC_ABORTED);
    if (code != SVC_OK && code != SVC_FAILED_PRECONDITION && code != SVC_ABORTED) {
        if (st->odd++ == 0) {
            snprintf(st->first_odd, sizeof(st->first_odd), "%s: %s", svc_status_name(code), msg);
        }
    }
}

/*
 * Fires st->users HoldSeats at once, user user0 + i on seat want[i] of
 * st->schedule_id (seats 1..n_seats): all calls created first, then all
 * started before any answer is read. Fills the times, answers and memory.
 */
static void
storm_fire(rbench_cfg_t *cfg, curve_storm_t *st, int64_t user0, const int32_t *want, int n_seats)
{
    int n = (int)st->users;
    rbench_hold_t *calls = rbench_xcalloc((size_t)n, sizeof(*calls));
    seat_tally_t t = {rbench_xcalloc((size_t)n_seats + 1, sizeof(*t.ok)),
                      rbench_xcalloc((size_t)n_seats + 1, sizeof(*t.wanted)),
                      rbench_xcalloc((size_t)n_seats + 1, sizeof(*t.refused))};
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    int64_t cpu0[RBENCH_N_CPU], cpu1[RBENCH_N_CPU], ticks[RBENCH_N_CPU], pids[N_MEM];
    double cores[RBENCH_N_CPU], us_per[RBENCH_N_CPU];
    bench_samples_t lat = {0};
    bench_mem_sampler_t *mem;
    int64_t t0, last = 0;

    for (int i = 0; i < n; i++) {
        rbench_hold_prepare(&calls[i], cfg->channels_v[i % cfg->channels], cq, user0 + i,
                            st->schedule_id, want[i]);
    }
    mem = mem_watch_start(cfg, pids, &st->peak_reset);
    bench_cpu_snapshot(cfg->pids, RBENCH_N_PROCS, RBENCH_PROC_PG, cpu0);
    t0 = bench_now_ns();
    for (int i = 0; i < n; i++) {
        rbench_hold_start(&calls[i], &calls[i]);
    }
    st->sent_ms = (double)(bench_now_ns() - t0) / 1e6;
    for (int done = 0; done < n;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        rbench_hold_t *h = ev.tag;
        char msg[256] = "";
        svc_status_t code;

        if (ev.type != GRPC_OP_COMPLETE) {
            continue;
        }
        last = bench_now_ns();
        if (bench_samples_push(&lat, last - h->t0) != 0) {
            fprintf(stderr, "reservation-bench: out of memory for samples\n");
            exit(1);
        }
        code = rbench_hold_finish(h, ev.success != 0, msg, sizeof(msg));
        storm_answer(st, code, msg, &t, want[h - calls]);
        done++;
    }
    st->all_in_ms = (double)(last - t0) / 1e6;
    bench_cpu_snapshot(cfg->pids, RBENCH_N_PROCS, RBENCH_PROC_PG, cpu1);
    mem_watch_stop(mem, pids, st);
    bench_cpu_delta(cpu0, cpu1, RBENCH_N_CPU, ticks);
    bench_cpu_rates(ticks, RBENCH_N_CPU, st->all_in_ms / 1e3, 1.0, cores, us_per);
    st->other_cpus = bench_other_cores(cores, RBENCH_N_PROCS);
    bench_samples_percentiles(&lat, &st->p50_ms, &st->p99_ms);
    bench_samples_free(&lat);
    for (int i = 0; i < n; i++) {
        t.wanted[want[i]] = true;
    }
    for (int s = 1; s <= n_seats; s++) {
        st->seats_wanted += t.wanted[s];
        st->seats_two_ok += t.ok[s] > 1;
        st->seats_no_ok += t.wanted[s] && t.ok[s] == 0;
        st->seats_no_ok_refused += t.wanted[s] && t.ok[s] == 0 && t.refused[s];
    }
    bench_cq_drain_destroy(cq);
    free(t.ok);
    free(t.wanted);
    free(t.refused);
    free(calls);
}

/*
 * One storm of users on a fresh schedule: its seats and the users' accounts
 * are made first (not timed), then the storm, then the database check.
 */
static void
curve_storm(rbench_cfg_t *cfg, PGconn *db, int kind, int64_t users, curve_storm_t *st)
{
    int n_seats = kind == KIND_ONE_SEAT ? 1 : (int)cfg->hall_seats;
    rbench_seat_pool_t seats = rbench_create_seats(
        cfg, kind == KIND_ONE_SEAT ? "reservation-bench curve, one seat" : "reservation-bench hall",
        1, n_seats);
    int32_t *want = rbench_xcalloc((size_t)users, sizeof(*want));
    uint64_t rng = 0x9e3779b97f4a7c15ULL ^ (uint64_t)users; /* the same draw in every run */
    int64_t user0 = rbench_users_with_accounts(cfg, users, NULL);

    memset(st, 0, sizeof(*st));
    st->kind = kind;
    st->users = users;
    st->schedule_id = seats.ids[0];
    for (int64_t i = 0; i < users; i++) {
        want[i] = (int32_t)(kind == KIND_ONE_SEAT ? 1 : xorshift64(&rng) % (uint64_t)n_seats + 1);
    }
    svc_sleep_ms(SETTLE_MS); /* let the account writes' aftermath settle */
    storm_fire(cfg, st, user0, want, n_seats);
    db_check(db, st);
    free(want);
    free(seats.ids);
}

/* ---------------------------------------------------------------- printing */

static double
mb(int64_t kb)
{
    return kb < 0 ? -1.0 : (double)kb / 1024.0;
}

static const char *
kind_name(const rbench_cfg_t *cfg, int kind)
{
    static char hall[32];

    snprintf(hall, sizeof(hall), "hall of %" PRId64, cfg->hall_seats);
    return kind == KIND_ONE_SEAT ? "one seat" : hall;
}

static void
print_header(const rbench_cfg_t *cfg, bool reset)
{
    printf("\n== scale curve: storms of");
    for (int i = 0; i < cfg->n_scale; i++) {
        printf("%s%" PRId64, i == 0 ? " " : (i + 1 == cfg->n_scale ? " and " : ", "),
               cfg->scale[i]);
    }
    printf(" users fired at once (one completion queue, %" PRId64 " channel%s): (a) all on one "
           "seat, (b) each on one seat drawn at random from a fresh hall of %" PRId64 " ==\n",
           cfg->channels, cfg->channels == 1 ? "" : "s", cfg->hall_seats);
    printf("(each user's balance-svc account is made by TopUp just before its storm, not timed; "
           "reservation-svc has not seen the users, so each hold first asks balance-svc "
           "GetBalance. all in: from the first call started to the last answer; p50/p99: each "
           "call from its own start to its answer, refusals included; seats: wanted by someone / "
           "held in the database afterwards; RSS: %s of each service in MB, rsv = "
           "reservation-svc, lock = lock-svc, bal = balance-svc; other CPUs: busy with processes "
           "outside the stack and the bench during the storm)\n",
           reset ? "the peak over the storm (VmHWM, reset through /proc/<pid>/clear_refs just "
                   "before it, or the largest VmRSS sampled every 5 ms if higher)"
                 : "the largest VmRSS sampled every 5 ms during the storm (VmHWM cannot be "
                   "reset here)");
    printf("%-12s %6s %8s %9s %8s %8s | %6s %19s %7s %6s | %6s %6s | %6s %6s %6s | %5s | %s\n",
           "storm", "users", "sent ms", "all in ms", "p50 ms", "p99 ms", "OK",
           "FAILED_PRECONDITION", "ABORTED", "other", "wanted", "held", "rsv", "lock", "bal",
           "other", "check");
    printf("%-12s %6s %8s %9s %8s %8s | %6s %19s %7s %6s | %6s %6s | %6s %6s %6s | %5s |\n", "", "",
           "", "", "", "", "", "", "", "", "seats", "", "MB", "MB", "MB", "CPUs");
}

/*
 * The RSS reported for service i: the larger of the storm's VmHWM (when it
 * was reset; the kernel records a new peak lazily, so a sample can top it
 * by a little) and the largest VmRSS sampled.
 */
static double
storm_rss_mb(const curve_storm_t *st, int i)
{
    int64_t kb = st->sampled_kb[i];

    if (st->peak_reset && st->peak_kb[i] > kb) {
        kb = st->peak_kb[i];
    }
    return mb(kb);
}

static void
print_row(const rbench_cfg_t *cfg, const curve_storm_t *st)
{
    const int64_t *c = st->out.codes;

    printf("%-12s %6" PRId64 " %8.1f %9.1f %8.1f %8.1f | %6" PRId64 " %19" PRId64 " %7" PRId64
           " %6" PRId64 " | %6" PRId64,
           kind_name(cfg, st->kind), st->users, st->sent_ms, st->all_in_ms, st->p50_ms, st->p99_ms,
           c[SVC_OK], c[SVC_FAILED_PRECONDITION], c[SVC_ABORTED], st->odd, st->seats_wanted);
    bench_print_num(6, 0, (double)st->db_held);
    printf(" |");
    for (int i = 0; i < N_MEM; i++) {
        bench_print_num(6, 1, storm_rss_mb(st, i));
    }
    printf(" |");
    bench_print_num(5, 2, st->other_cpus);
    /* Without a fault nothing answers UNAVAILABLE, UNKNOWN, INTERNAL, ...: a failure too. */
    printf(" | %s\n", storm_as_expected(st)               ? "as expected"
                      : storm_correct(st) && st->odd == 0 ? "see NOTE"
                                                          : "FAILED");
    fflush(stdout);
}

/* NOTE lines for what a storm did other than one OK per seat wanted and refusals for the rest. */
static void
print_notes(const rbench_cfg_t *cfg, const curve_storm_t *st)
{
    const char *what = kind_name(cfg, st->kind);

    if (st->odd > 0) {
        printf("NOTE: %" PRId64 " users, %s: %" PRId64
               " answers neither OK, FAILED_PRECONDITION nor ABORTED:",
               st->users, what, st->odd);
        bench_print_codes(st->out.codes);
        printf(" (first: %s); without a fault nothing answers UNAVAILABLE: a failure\n",
               st->first_odd);
    }
    if (st->seats_two_ok > 0) {
        printf("NOTE: %" PRId64 " users, %s: %" PRId64 " seats answered OK to two users\n",
               st->users, what, st->seats_two_ok);
    }
    if (st->seats_no_ok > st->seats_no_ok_refused) {
        printf("NOTE: %" PRId64 " users, %s: %" PRId64 " seats wanted went to nobody: every user "
               "who wanted them gave up (ABORTED)\n",
               st->users, what, st->seats_no_ok - st->seats_no_ok_refused);
    }
    if (st->seats_no_ok_refused > 0) {
        printf("NOTE: %" PRId64 " users, %s: %" PRId64 " seats went to nobody although someone "
               "who wanted them was refused\n",
               st->users, what, st->seats_no_ok_refused);
    }
    if (st->db_live != st->out.codes[SVC_OK] || st->db_held != st->out.codes[SVC_OK] ||
        st->db_double != 0) {
        printf("NOTE: %" PRId64 " users, %s: the database holds %" PRId64 " live holds and %" PRId64
               " held seats for %" PRId64 " answers OK; seats in two live holds: %" PRId64 "\n",
               st->users, what, st->db_live, st->db_held, st->out.codes[SVC_OK], st->db_double);
    }
}

/* The storm of kind with users users, or NULL when the curve has none. */
static const curve_storm_t *
find_storm(const curve_storm_t *storms, int n, int kind, int64_t users)
{
    for (int i = 0; i < n; i++) {
        if (storms[i].kind == kind && storms[i].users == users) {
            return &storms[i];
        }
    }
    return NULL;
}

static const char *
verdict(bool met)
{
    return met ? "met" : "MISSED";
}

/* The 1 000-user target on one seat: every answer in time, one OK, the rest refused. */
static void
print_small_target(const curve_storm_t *st)
{
    const int64_t *c = st->out.codes;
    bool refused = c[SVC_OK] == 1 && st->odd == 0;

    printf("  %d users, one seat: every answer in <= %.0f ms: %.1f ms: %s; exactly one OK, the "
           "rest FAILED_PRECONDITION or ABORTED: OK %" PRId64 ", FAILED_PRECONDITION %" PRId64
           ", ABORTED %" PRId64 ", other %" PRId64 ": %s\n",
           TARGET_SMALL_USERS, TARGET_SMALL_MS, st->all_in_ms,
           verdict(st->all_in_ms <= TARGET_SMALL_MS), c[SVC_OK], c[SVC_FAILED_PRECONDITION],
           c[SVC_ABORTED], st->odd, verdict(refused));
}

/* The 10 000-user target: every answer in time, every service under the RSS bound. */
static void
print_large_target(const rbench_cfg_t *cfg, const curve_storm_t *st)
{
    bool small = true;

    printf("  %d users, %s: every answer in <= %.0f ms: %.1f ms: %s; every service under %.0f MB "
           "RSS:",
           TARGET_LARGE_USERS, kind_name(cfg, st->kind), TARGET_LARGE_MS, st->all_in_ms,
           verdict(st->all_in_ms <= TARGET_LARGE_MS), TARGET_RSS_MB);
    for (int i = 0; i < N_MEM; i++) {
        double v = storm_rss_mb(st, i);
        small = small && v >= 0 && v < TARGET_RSS_MB;
        printf(" %s %.1f", mem_names[i], v);
    }
    printf(" MB: %s\n", verdict(small));
}

static void
print_targets(const rbench_cfg_t *cfg, const curve_storm_t *storms, int n)
{
    const curve_storm_t *small = find_storm(storms, n, KIND_ONE_SEAT, TARGET_SMALL_USERS);

    printf("targets (issue 11):\n");
    if (small != NULL) {
        print_small_target(small);
    } else {
        printf("  %d users, one seat: not on this curve (--scale)\n", TARGET_SMALL_USERS);
    }
    for (int kind = 0; kind < N_KINDS; kind++) {
        const curve_storm_t *large = find_storm(storms, n, kind, TARGET_LARGE_USERS);
        if (large != NULL) {
            print_large_target(cfg, large);
        } else {
            printf("  %d users, %s: not on this curve (--scale)\n", TARGET_LARGE_USERS,
                   kind_name(cfg, kind));
        }
    }
}

/*
 * --curve-file: one block per kind (gnuplot's index 0: one seat, 1: hall),
 * one line per storm size, whitespace-separated, MB for memory.
 */
static void
write_curve_file(const rbench_cfg_t *cfg, const curve_storm_t *storms, int n)
{
    FILE *f;

    if (cfg->curve_file == NULL || cfg->curve_file[0] == '\0') {
        return;
    }
    if ((f = fopen(cfg->curve_file, "w")) == NULL) {
        fprintf(stderr, "reservation-bench: cannot write %s\n", cfg->curve_file);
        exit(1);
    }
    fprintf(f,
            "# reservation-bench scale curve; rsv/lock/bal_mb: %s; *_sampled_mb: the largest "
            "VmRSS sampled\n",
            storms[0].peak_reset ? "VmHWM over each storm or the largest sample if higher"
                                 : "the largest VmRSS sampled");
    for (int kind = 0; kind < N_KINDS; kind++) {
        fprintf(f,
                "%s# %s\n# users sent_ms all_in_ms p50_ms p99_ms ok failed_precondition "
                "aborted other seats_wanted seats_held rsv_mb lock_mb bal_mb rsv_sampled_mb "
                "lock_sampled_mb bal_sampled_mb as_expected\n",
                kind == 0 ? "" : "\n\n", kind_name(cfg, kind));
        for (int i = 0; i < n; i++) {
            const curve_storm_t *st = &storms[i];
            if (st->kind != kind) {
                continue;
            }
            fprintf(f,
                    "%" PRId64 " %.1f %.1f %.1f %.1f %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64
                    " %" PRId64 " %" PRId64 " %.1f %.1f %.1f %.1f %.1f %.1f %d\n",
                    st->users, st->sent_ms, st->all_in_ms, st->p50_ms, st->p99_ms,
                    st->out.codes[SVC_OK], st->out.codes[SVC_FAILED_PRECONDITION],
                    st->out.codes[SVC_ABORTED], st->odd, st->seats_wanted, st->db_held,
                    storm_rss_mb(st, MEM_RSV), storm_rss_mb(st, MEM_LOCK),
                    storm_rss_mb(st, MEM_BAL), mb(st->sampled_kb[MEM_RSV]),
                    mb(st->sampled_kb[MEM_LOCK]), mb(st->sampled_kb[MEM_BAL]),
                    storm_as_expected(st));
        }
    }
    fclose(f);
}

/* ---------------------------------------------------------------- the curve */

void
rbench_curve_run(rbench_cfg_t *cfg)
{
    int n = cfg->n_scale * N_KINDS;
    curve_storm_t *storms = rbench_xcalloc((size_t)n, sizeof(*storms));
    PGconn *db = PQconnectdb(cfg->database_url);
    int64_t pid = cfg->pids[RBENCH_PROC_RSV];
    bool reset = pid > 0 && bench_mem_reset_peak(pid) == 0;

    if (PQstatus(db) != CONNECTION_OK) {
        fprintf(stderr, "reservation-bench: cannot connect to the database: %s",
                PQerrorMessage(db));
        exit(1);
    }
    print_header(cfg, reset);
    for (int i = 0; i < n; i++) {
        curve_storm(cfg, db, i % N_KINDS, cfg->scale[i / N_KINDS], &storms[i]);
        print_row(cfg, &storms[i]);
        svc_sleep_ms(SETTLE_MS);
    }
    for (int i = 0; i < n; i++) {
        print_notes(cfg, &storms[i]);
    }
    print_targets(cfg, storms, n);
    write_curve_file(cfg, storms, n);
    PQfinish(db);
    free(storms);
}
