/*
 * conformance.c: the suite's runner. Picks own or external mode, runs the
 * scenarios asked for, and prints the table: scenario, requests, OK, refused
 * by code, other errors, invariant violations.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conformance.h"
#include "svc/timer.h"
#include "svc/tls.h"

const cf_scenario_t cf_scenarios[] = {
    {"seat_storm", "1000 users hold the same seat at once; then 64 users on 32 seats", false,
     sc_seat_storm, false},
    {"balance_storm", "concurrent top-ups and spends, double clicks and overdrafts", false,
     sc_balance_storm, false},
    {"double_pay", "each hold paid twice at once, by two clients", false, sc_double_pay, false},
    {"lock_storm", "acquire/release storm on few keys; fences only grow", false, sc_lock_storm,
     false},
    {"redis_kill", "Redis SIGKILLed mid seat storm, then restarted", true, sc_redis_kill, false},
    {"pg_restart", "PostgreSQL killed and restarted mid balance storm", true, sc_pg_restart, false},
    {"paused_holder", "a reservation-svc paused past its seat lock's lease", true, sc_paused_holder,
     false},
    {"lock_svc_kill", "a lock-svc instance SIGKILLed with waiters parked on it", true,
     sc_lock_svc_kill, false},
    {"reservation_kill", "reservation-svc SIGKILLed during payments, payments retried", true,
     sc_reservation_kill, false},
    {"sentinel_failover", "Redis primary failover (3 Sentinels) during a lock and seat storm", true,
     sc_sentinel_failover, false},
    {"interleavings", "seeded random holds, payments, cancels, expiry under pauses and crashes",
     true, sc_interleavings, false},
    {"waiting_room", "users through a waiting room on two instances, one SIGKILLed; FIFO, limit",
     true, sc_waiting_room, false},
    {"rolling_restart", "every instance of every service restarted in turn under load (SIGTERM)",
     true, sc_rolling_restart, .planned = true},
};
const int cf_n_scenarios = (int)(sizeof(cf_scenarios) / sizeof(cf_scenarios[0]));

/* One line of the table. */
typedef struct {
    char name[64], mode[16], refused[512], result[8];
    long requests, ok, other, violations;
    double seconds;
} row_t;

static void
usage(FILE *out)
{
    fprintf(out, "Usage: conformance [options] [SCENARIO...]\n"
                 "\n"
                 "Runs the named scenarios (default: all of them; with --quick, those that\n"
                 "inject no fault), checks the invariants in the data after each, and prints\n"
                 "a table. Exit status 0 when every scenario passed, 1 when one failed, 2 on\n"
                 "bad usage, 77 when none could run (only fault scenarios, external mode).\n"
                 "\n"
                 "Options:\n"
                 "  --quick          smaller storms; with no SCENARIO only the fault-free ones\n"
                 "  --list           list the scenarios and exit\n"
                 "  --results FILE   also append each scenario's row to FILE\n"
                 "  --table FILE     print the table of the rows in FILE and exit\n"
                 "  --bin-dir DIR    the build tree with the services (default: this binary's)\n"
                 "  --free-ports N   print N distinct free loopback ports and exit\n"
                 "  --seed N         replay a random scenario's schedule (its seed is printed)\n"
                 "  --seconds S      how long a random scenario runs (interleavings: 60)\n"
                 "  -h, --help       this text\n"
                 "\n"
                 "Modes. With LOCK_ADDR, BALANCE_ADDR and RESERVATION_ADDR set, the suite\n"
                 "tests that deployment (external mode): it also needs ADMIN_TOKEN (to create\n"
                 "its own concerts), RESERVATION_DATABASE_URL and BALANCE_DATABASE_URL (read\n"
                 "access, for the invariant checks) and optionally REDIS_URL (redis://host:port,\n"
                 "for the lock check). It creates its own concerts and users and touches no\n"
                 "other data; fault scenarios need processes it controls and are not run.\n"
                 "Otherwise it starts its own PostgreSQL, Redis and services on free ports.\n"
                 "\n"
                 "TLS. With TLS_CA_FILE (and TLS_CERT_FILE, TLS_KEY_FILE for mTLS) set, the\n"
                 "suite calls over TLS; its own stacks' services inherit the TLS_* settings\n"
                 "(with TLS_CLIENT_CA_FILE they require client certificates).\n"
                 "\n"
                 "Scenarios:\n");
    for (int i = 0; i < cf_n_scenarios; i++) {
        fprintf(out, "  %-18s %s%s\n", cf_scenarios[i].name, cf_scenarios[i].title,
                cf_scenarios[i].fault ? " [fault]" : "");
    }
}

/* ------------------------------------------------------------- Targets */

static int
copy_env(char *dst, size_t len, const char *name, bool required)
{
    const char *v = getenv(name);

    if (v == NULL || v[0] == '\0') {
        if (required) {
            fprintf(stderr, "conformance: external mode needs %s\n", name);
            return -1;
        }
        dst[0] = '\0';
        return 0;
    }
    if (strlen(v) >= len) {
        fprintf(stderr, "conformance: %s is too long\n", name);
        return -1;
    }
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

/* "redis://[user:pass@]host:port[/db]" into host and port. */
static int
parse_redis_url(const char *url, char *host, size_t len, int *port)
{
    const char *p = url, *at, *colon, *end;

    if (strncmp(p, "redis://", 8) != 0) {
        return -1;
    }
    p += 8;
    at = strchr(p, '@');
    if (at != NULL) {
        p = at + 1;
    }
    colon = strchr(p, ':');
    end = strchr(p, '/');
    if (end == NULL) {
        end = p + strlen(p);
    }
    if (colon == NULL || colon > end || (size_t)(colon - p) >= len || colon == p) {
        return -1;
    }
    memcpy(host, p, (size_t)(colon - p));
    host[colon - p] = '\0';
    *port = atoi(colon + 1);
    return *port > 0 && *port < 65536 ? 0 : -1;
}

/* External mode when any of the three addresses is set; then all must be. */
static int
external_targets(cf_ctx_t *ctx)
{
    cf_targets_t *t = &ctx->targets;
    char redis[512];

    ctx->external = getenv("LOCK_ADDR") != NULL || getenv("BALANCE_ADDR") != NULL ||
                    getenv("RESERVATION_ADDR") != NULL;
    if (!ctx->external) {
        return 0;
    }
    if (copy_env(t->lock_addr, sizeof(t->lock_addr), "LOCK_ADDR", true) != 0 ||
        copy_env(t->balance_addr, sizeof(t->balance_addr), "BALANCE_ADDR", true) != 0 ||
        copy_env(t->reservation_addr, sizeof(t->reservation_addr), "RESERVATION_ADDR", true) != 0 ||
        copy_env(t->admin_token, sizeof(t->admin_token), "ADMIN_TOKEN", true) != 0 ||
        copy_env(t->reservation_db, sizeof(t->reservation_db), "RESERVATION_DATABASE_URL", true) !=
            0 ||
        copy_env(t->balance_db, sizeof(t->balance_db), "BALANCE_DATABASE_URL", true) != 0 ||
        copy_env(redis, sizeof(redis), "REDIS_URL", false) != 0) {
        return -1;
    }
    if (redis[0] != '\0' &&
        parse_redis_url(redis, t->redis_host, sizeof(t->redis_host), &t->redis_port) != 0) {
        fprintf(stderr, "conformance: REDIS_URL=%s is not redis://host:port; locks not checked\n",
                redis);
        t->redis_port = 0;
    }
    return 0;
}

const cf_targets_t *
cf_targets(cf_ctx_t *ctx)
{
    static const cf_stack_opts_t opts = {.n_lock = 2, .n_reservation = 2};

    if (ctx->external) {
        return &ctx->targets;
    }
    if (ctx->shared == NULL) {
        ctx->shared = calloc(1, sizeof(*ctx->shared));
        if (ctx->shared == NULL || cf_stack_start(ctx, ctx->shared, &opts) != 0) {
            fprintf(stderr, "conformance: could not start the shared stack\n");
            return NULL;
        }
    }
    return &ctx->shared->targets;
}

/* Services at DIR/<name>/<name>; DIR defaults to two levels above this binary. */
static int
find_binaries(cf_ctx_t *ctx, const char *bin_dir)
{
    char exe[PATH_MAX], dir[PATH_MAX - 40];
    ssize_t n;

    if (bin_dir != NULL) {
        snprintf(dir, sizeof(dir), "%s", bin_dir);
    } else {
        n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n <= 0) {
            fprintf(stderr, "conformance: cannot read /proc/self/exe: %s\n", strerror(errno));
            return -1;
        }
        exe[n] = '\0';
        snprintf(dir, sizeof(dir), "%s/../..", dirname(exe));
    }
    snprintf(ctx->lock_bin, sizeof(ctx->lock_bin), "%s/lock-svc/lock-svc", dir);
    snprintf(ctx->balance_bin, sizeof(ctx->balance_bin), "%s/balance-svc/balance-svc", dir);
    snprintf(ctx->reservation_bin, sizeof(ctx->reservation_bin),
             "%s/reservation-svc/reservation-svc", dir);
    if (!ctx->external &&
        (access(ctx->lock_bin, X_OK) != 0 || access(ctx->balance_bin, X_OK) != 0 ||
         access(ctx->reservation_bin, X_OK) != 0)) {
        fprintf(stderr, "conformance: the services are not built under %s (see --bin-dir)\n", dir);
        return -1;
    }
    return 0;
}

/* ----------------------------------------------------------------- Table */

/*
 * A planned fault (a rolling restart) must be invisible: besides UNAVAILABLE,
 * a CANCELLED that its clients never asked for (they cancel nothing) is a
 * failure too, not a refusal.
 */
static bool
refused_in(const cf_scenario_t *sc, svc_status_t code)
{
    if (sc->planned && code == SVC_CANCELLED) {
        return false;
    }
    return cf_is_refusal_in(code, sc->fault && !sc->planned);
}

static void
refused_text(const cf_tally_t *t, const cf_scenario_t *sc, char *buf, size_t len)
{
    size_t used = 0;

    buf[0] = '\0';
    for (int c = 1; c < CF_CODES; c++) {
        long n = atomic_load(&t->by_code[c]);
        if (n > 0 && refused_in(sc, (svc_status_t)c) && used < len) {
            used += (size_t)snprintf(buf + used, len - used, "%s%s=%ld", used ? "," : "",
                                     svc_status_name((svc_status_t)c), n);
        }
    }
    if (buf[0] == '\0') {
        snprintf(buf, len, "-");
    }
}

static void
print_table(FILE *out, const row_t *rows, int n)
{
    long violations = 0;

    fprintf(out, "\n%-18s %-8s %9s %8s %6s %10s %6s %7s  %s\n", "scenario", "mode", "requests",
            "OK", "other", "violations", "result", "seconds", "refused (by code)");
    for (int i = 0; i < n; i++) {
        const row_t *r = &rows[i];
        fprintf(out, "%-18s %-8s %9ld %8ld %6ld %10ld %6s %7.1f  %s\n", r->name, r->mode,
                r->requests, r->ok, r->other, r->violations, r->result, r->seconds, r->refused);
        violations += r->violations;
    }
    fprintf(out, "%d scenarios, %ld invariant violations in all\n\n", n, violations);
}

static void
append_row(const char *path, const row_t *r)
{
    FILE *f = fopen(path, "a");

    if (f == NULL) {
        fprintf(stderr, "conformance: cannot append to %s: %s\n", path, strerror(errno));
        return;
    }
    fprintf(f, "%s\t%s\t%ld\t%ld\t%s\t%ld\t%ld\t%.1f\t%s\n", r->name, r->mode, r->requests, r->ok,
            r->refused, r->other, r->violations, r->seconds, r->result);
    fclose(f);
}

static int
print_table_file(const char *path)
{
    FILE *f = fopen(path, "r");
    row_t rows[64];
    char line[1024];
    int n = 0;

    if (f == NULL) {
        fprintf(stderr, "conformance: cannot read %s: %s\n", path, strerror(errno));
        return 1;
    }
    while (n < 64 && fgets(line, sizeof(line), f) != NULL) {
        row_t *r = &rows[n];
        if (sscanf(line, "%63[^\t]\t%15[^\t]\t%ld\t%ld\t%511[^\t]\t%ld\t%ld\t%lf\t%7s", r->name,
                   r->mode, &r->requests, &r->ok, r->refused, &r->other, &r->violations,
                   &r->seconds, r->result) == 9) {
            n++;
        }
    }
    fclose(f);
    print_table(stdout, rows, n);
    return 0;
}

/* ------------------------------------------------------------------ Main */

static const cf_scenario_t *
find_scenario(const char *name)
{
    for (int i = 0; i < cf_n_scenarios; i++) {
        if (strcmp(cf_scenarios[i].name, name) == 0) {
            return &cf_scenarios[i];
        }
    }
    return NULL;
}

static void
run_one(cf_ctx_t *ctx, const cf_scenario_t *sc, row_t *row)
{
    cf_tally_t tally;
    int64_t t0 = svc_now_mono_ms();
    int rc;

    memset(&tally, 0, sizeof(tally));
    memset(row, 0, sizeof(*row));
    snprintf(row->name, sizeof(row->name), "%s", sc->name);
    snprintf(row->mode, sizeof(row->mode), "%s", ctx->external ? "external" : "own");
    if (sc->fault && ctx->external) {
        snprintf(row->result, sizeof(row->result), "SKIP");
        snprintf(row->refused, sizeof(row->refused), "not run: needs its own stack");
        fprintf(stderr, "conformance: %s injects faults and runs only on its own stack\n",
                sc->name);
        return;
    }
    fprintf(stderr, "\n=== %s: %s\n", sc->name, sc->title);
    rc = sc->run(ctx, &tally);
    if (rc != 0) {
        cf_violation(&tally, "%s could not run to its end", sc->name);
    }
    row->requests = atomic_load(&tally.requests);
    row->ok = atomic_load(&tally.ok);
    row->other = cf_faults(&tally, sc->fault && !sc->planned) +
                 (sc->planned ? atomic_load(&tally.by_code[SVC_CANCELLED]) : 0);
    row->violations = atomic_load(&tally.violations);
    row->seconds = (double)(svc_now_mono_ms() - t0) / 1000.0;
    refused_text(&tally, sc, row->refused, sizeof(row->refused));
    snprintf(row->result, sizeof(row->result), "%s",
             row->violations == 0 && row->other == 0 ? "PASS" : "FAIL");
    fprintf(stderr, "=== %s: %s (%ld requests, %ld OK, %ld other errors, %ld violations)\n",
            sc->name, row->result, row->requests, row->ok, row->other, row->violations);
}

int
main(int argc, char **argv)
{
    static const struct option long_opts[] = {
        {"quick", no_argument, NULL, 'q'},         {"list", no_argument, NULL, 'l'},
        {"results", required_argument, NULL, 'r'}, {"table", required_argument, NULL, 't'},
        {"bin-dir", required_argument, NULL, 'b'}, {"free-ports", required_argument, NULL, 'p'},
        {"seed", required_argument, NULL, 's'},    {"seconds", required_argument, NULL, 'S'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    const char *results = NULL, *bin_dir = NULL;
    const cf_scenario_t *todo[64];
    row_t rows[64];
    int n_todo = 0, failed = 0, ran = 0, opt;
    char *end;
    static cf_ctx_t ctx;
    svc_tls_opts_t tls;

    while ((opt = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
        switch (opt) {
        case 'q':
            ctx.quick = true;
            break;
        case 'l':
            for (int i = 0; i < cf_n_scenarios; i++) {
                printf("%s%s\n", cf_scenarios[i].name, cf_scenarios[i].fault ? " fault" : "");
            }
            return 0;
        case 'r':
            results = optarg;
            break;
        case 't':
            return print_table_file(optarg);
        case 'b':
            bin_dir = optarg;
            break;
        case 'p':
            for (int i = atoi(optarg); i > 0; i--) {
                int port = testenv_free_port();
                if (port < 0) {
                    return 1;
                }
                printf("%d\n", port); /* distinct: never one of the last 64 it returned */
            }
            return 0;
        case 's':
            ctx.seed = strtoull(optarg, &end, 10);
            ctx.seed_set = true;
            if (*optarg == '\0' || *end != '\0') {
                fprintf(stderr, "conformance: --seed %s is not a number\n", optarg);
                return 2;
            }
            break;
        case 'S':
            ctx.seconds = (int)strtol(optarg, &end, 10);
            if (*end != '\0' || ctx.seconds < 1 || ctx.seconds > 86400) {
                fprintf(stderr, "conformance: --seconds %s is not 1..86400\n", optarg);
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    for (int i = optind; i < argc; i++) {
        todo[n_todo] = find_scenario(argv[i]);
        if (todo[n_todo] == NULL) {
            fprintf(stderr, "conformance: no scenario %s (see --list)\n", argv[i]);
            return 2;
        }
        n_todo++;
    }
    for (int i = 0; optind == argc && i < cf_n_scenarios; i++) {
        if (!ctx.quick || !cf_scenarios[i].fault) {
            todo[n_todo++] = &cf_scenarios[i];
        }
    }
    if (external_targets(&ctx) != 0 || find_binaries(&ctx, bin_dir) != 0) {
        return 2;
    }
    /*
     * TLS_* in the environment: the suite calls over TLS with them, and the
     * services of its own stacks inherit them (mTLS everywhere).
     */
    svc_tls_opts_from_env(&tls);
    svc_tls_configure_or_exit(&tls, "conformance");
    testenv_cleanup_on_exit();
    fprintf(stderr, "conformance: %s mode, %d scenarios%s\n",
            ctx.external ? "external" : "own-stack", n_todo, ctx.quick ? ", quick" : "");

    for (int i = 0; i < n_todo; i++) {
        run_one(&ctx, todo[i], &rows[i]);
        ran += strcmp(rows[i].result, "SKIP") != 0;
        failed += strcmp(rows[i].result, "FAIL") == 0;
        if (results != NULL) {
            append_row(results, &rows[i]);
        }
    }
    if (ctx.shared != NULL && cf_stack_stop(ctx.shared) != 0) {
        fprintf(stderr, "conformance: a service of the shared stack exited badly\n");
        failed++;
    }
    free(ctx.shared);
    svc_client_release_all();
    print_table(stdout, rows, n_todo);
    return failed > 0 ? 1 : ran == 0 ? 77 : 0;
}
