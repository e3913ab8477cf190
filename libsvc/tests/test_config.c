/*
 * test_config.c: defaults, environment and flags in order of precedence, the
 * errors a user sees for bad settings, --help, and the usage text.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "svc/config.h"
#include "svc/err.h"
#include "svc/log.h"

/* The settings of a made-up service, refilled by every parse. */
typedef struct {
    const char *listen_addr;
    const char *database_url;
    int64_t workers;
    bool debug;
    svc_log_level_t log_level;
} cfg_t;

static cfg_t cfg;

#define N_OPTS 5

static const svc_opt_t opts[N_OPTS] = {
    {"listen-addr", "LISTEN_ADDR", SVC_OPT_STRING, "0.0.0.0:50051", "address to serve gRPC on", 0,
     0, &cfg.listen_addr, 0},
    {"database-url", "DATABASE_URL", SVC_OPT_STRING, NULL, "PostgreSQL connection string", 0, 0,
     &cfg.database_url, 1},
    {"workers", "WORKERS", SVC_OPT_INT, "4", "worker threads", 1, 1024, &cfg.workers, 0},
    {"debug", "DEBUG", SVC_OPT_BOOL, "false", "extra checks", 0, 0, &cfg.debug, 0},
    {"log-level", "LOG_LEVEL", SVC_OPT_LOG_LEVEL, "info", "lowest level logged", 0, 0,
     &cfg.log_level, 0},
};

static const char *const env_names[] = {"LISTEN_ADDR", "DATABASE_URL", "WORKERS", "DEBUG",
                                        "LOG_LEVEL"};

static int
setup(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(env_names) / sizeof(env_names[0]); i++)
        unsetenv(env_names[i]);
    memset(&cfg, 0, sizeof(cfg));
    /* the required setting, so tests about other settings can pass */
    setenv("DATABASE_URL", "postgres://localhost/test", 1);
    return 0;
}

/* Parses a NULL-terminated argument list after the program name. */
static svc_config_result_t
parse_args(svc_err_t *err, ...)
{
    char *argv[32];
    int argc = 0;
    va_list ap;

    argv[argc++] = (char *)"testsvc";
    va_start(ap, err);
    for (char *a = va_arg(ap, char *); a != NULL; a = va_arg(ap, char *))
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    return svc_config_parse(opts, N_OPTS, argc, argv, err);
}

static void
assert_parse_error(svc_config_result_t r, const svc_err_t *err, const char *want)
{
    assert_int_equal(r, SVC_CONFIG_ERROR);
    assert_int_equal(err->code, SVC_INVALID_ARGUMENT);
    assert_string_equal(err->msg, want);
}

static void
test_defaults(void **state)
{
    svc_err_t err;

    (void)state;
    assert_int_equal(parse_args(&err, NULL), SVC_CONFIG_OK);
    assert_int_equal(err.code, SVC_OK);
    assert_string_equal(cfg.listen_addr, "0.0.0.0:50051");
    assert_int_equal(cfg.workers, 4);
    assert_false(cfg.debug);
    assert_int_equal(cfg.log_level, SVC_LOG_INFO);
}

static void
test_env_beats_default(void **state)
{
    svc_err_t err;

    (void)state;
    setenv("LISTEN_ADDR", "127.0.0.1:9000", 1);
    setenv("WORKERS", "16", 1);
    setenv("DEBUG", "yes", 1);
    setenv("LOG_LEVEL", "warn", 1);
    assert_int_equal(parse_args(&err, NULL), SVC_CONFIG_OK);
    assert_string_equal(cfg.listen_addr, "127.0.0.1:9000");
    assert_int_equal(cfg.workers, 16);
    assert_true(cfg.debug);
    assert_int_equal(cfg.log_level, SVC_LOG_WARN);
}

static void
test_flags_beat_env(void **state)
{
    svc_err_t err;

    (void)state;
    setenv("LISTEN_ADDR", "127.0.0.1:9000", 1);
    setenv("WORKERS", "16", 1);
    setenv("DEBUG", "true", 1);
    setenv("LOG_LEVEL", "warn", 1);
    assert_int_equal(parse_args(&err, "--listen-addr=[::]:7000", "--workers", "2", "--debug=no",
                                "--log-level", "debug", NULL),
                     SVC_CONFIG_OK);
    assert_string_equal(cfg.listen_addr, "[::]:7000");
    assert_int_equal(cfg.workers, 2);
    assert_false(cfg.debug);
    assert_int_equal(cfg.log_level, SVC_LOG_DEBUG);
}

static void
test_empty_env_is_unset(void **state)
{
    svc_err_t err;

    (void)state;
    setenv("WORKERS", "", 1);
    assert_int_equal(parse_args(&err, NULL), SVC_CONFIG_OK);
    assert_int_equal(cfg.workers, 4);
}

static void
test_last_flag_wins(void **state)
{
    svc_err_t err;

    (void)state;
    assert_int_equal(parse_args(&err, "--workers=3", "--workers=5", NULL), SVC_CONFIG_OK);
    assert_int_equal(cfg.workers, 5);
}

static void
test_value_with_equals_and_dash(void **state)
{
    svc_err_t err;

    (void)state;
    assert_int_equal(parse_args(&err, "--database-url=host=db user=x", NULL), SVC_CONFIG_OK);
    assert_string_equal(cfg.database_url, "host=db user=x");
    assert_int_equal(parse_args(&err, "--listen-addr", "-", NULL), SVC_CONFIG_OK);
    assert_string_equal(cfg.listen_addr, "-");
    assert_int_equal(parse_args(&err, "--listen-addr=", NULL), SVC_CONFIG_OK);
    assert_string_equal(cfg.listen_addr, "");
}

static void
test_bad_int(void **state)
{
    svc_err_t err;

    (void)state;
    assert_parse_error(parse_args(&err, "--workers=abc", NULL), &err,
                       "bad value for --workers (WORKERS): \"abc\" is not an integer between 1 "
                       "and 1024");
    assert_non_null(strstr(err.msg, "--workers"));
    assert_non_null(strstr(err.msg, "WORKERS"));

    assert_int_equal(parse_args(&err, "--workers=12x", NULL), SVC_CONFIG_ERROR);
    assert_non_null(strstr(err.msg, "\"12x\""));
    assert_int_equal(parse_args(&err, "--workers=", NULL), SVC_CONFIG_ERROR);
    assert_int_equal(parse_args(&err, "--workers", " 5", NULL), SVC_CONFIG_ERROR);
    assert_int_equal(parse_args(&err, "--workers=5 ", NULL), SVC_CONFIG_ERROR);
    assert_int_equal(parse_args(&err, "--workers=0x10", NULL), SVC_CONFIG_ERROR);
    assert_int_equal(parse_args(&err, "--workers=1.5", NULL), SVC_CONFIG_ERROR);
}

static void
test_int_range_and_overflow(void **state)
{
    svc_err_t err;

    (void)state;
    assert_int_equal(parse_args(&err, "--workers=1", NULL), SVC_CONFIG_OK);
    assert_int_equal(cfg.workers, 1);
    assert_int_equal(parse_args(&err, "--workers=1024", NULL), SVC_CONFIG_OK);
    assert_int_equal(cfg.workers, 1024);
    assert_int_equal(parse_args(&err, "--workers=+7", NULL), SVC_CONFIG_OK);
    assert_int_equal(cfg.workers, 7);

    assert_int_equal(parse_args(&err, "--workers=0", NULL), SVC_CONFIG_ERROR);
    assert_int_equal(parse_args(&err, "--workers=1025", NULL), SVC_CONFIG_ERROR);
    assert_int_equal(parse_args(&err, "--workers=-1", NULL), SVC_CONFIG_ERROR);
    /* 2^64 + 5 would wrap to 5 if overflow went unnoticed */
    assert_int_equal(parse_args(&err, "--workers=18446744073709551621", NULL), SVC_CONFIG_ERROR);
    assert_int_equal(parse_args(&err, "--workers=99999999999999999999999", NULL), SVC_CONFIG_ERROR);
    assert_int_equal(parse_args(&err, "--workers=-99999999999999999999999", NULL),
                     SVC_CONFIG_ERROR);
    assert_non_null(strstr(err.msg, "between 1 and 1024"));
}

static void
test_int_full_range(void **state)
{
    int64_t v = 0;
    const svc_opt_t o[] = {
        {"offset", NULL, SVC_OPT_INT, "0", "offset", INT64_MIN, INT64_MAX, &v, 0},
    };
    char *argv_max[] = {(char *)"t", (char *)"--offset=9223372036854775807", NULL};
    char *argv_min[] = {(char *)"t", (char *)"--offset", (char *)"-9223372036854775808", NULL};
    char *argv_over[] = {(char *)"t", (char *)"--offset=9223372036854775808", NULL};
    svc_err_t err;

    (void)state;
    assert_int_equal(svc_config_parse(o, 1, 2, argv_max, &err), SVC_CONFIG_OK);
    assert_true(v == INT64_MAX);
    assert_int_equal(svc_config_parse(o, 1, 3, argv_min, &err), SVC_CONFIG_OK);
    assert_true(v == INT64_MIN);
    assert_int_equal(svc_config_parse(o, 1, 2, argv_over, &err), SVC_CONFIG_ERROR);
    /* no environment variable: the message names only the flag */
    assert_string_equal(err.msg, "bad value for --offset: \"9223372036854775808\" is not an "
                                 "integer between -9223372036854775808 and 9223372036854775807");
}

static void
test_bad_env_is_named(void **state)
{
    svc_err_t err;

    (void)state;
    setenv("WORKERS", "lots", 1);
    assert_parse_error(parse_args(&err, NULL), &err,
                       "bad value for --workers (WORKERS): \"lots\" is not an integer between 1 "
                       "and 1024");
    /* a flag does not rescue a bad environment variable: the user should fix it */
    setenv("WORKERS", "8", 1);
    assert_int_equal(parse_args(&err, "--workers=9", NULL), SVC_CONFIG_OK);
    assert_int_equal(cfg.workers, 9);
}

static void
test_bool(void **state)
{
    static const char *const yes[] = {"--debug",     "--debug=true", "--debug=1",
                                      "--debug=yes", "--debug=TRUE", "--debug=Yes"};
    static const char *const no[] = {"--debug=false", "--debug=0", "--debug=no", "--debug=False",
                                     "--debug=NO"};
    svc_err_t err;

    (void)state;
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        cfg.debug = false;
        assert_int_equal(parse_args(&err, yes[i], NULL), SVC_CONFIG_OK);
        assert_true(cfg.debug);
    }
    setenv("DEBUG", "1", 1);
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        assert_int_equal(parse_args(&err, no[i], NULL), SVC_CONFIG_OK);
        assert_false(cfg.debug);
    }
    assert_parse_error(parse_args(&err, "--debug=maybe", NULL), &err,
                       "bad value for --debug (DEBUG): \"maybe\" is not one of true, false, yes, "
                       "no, 1, 0");
    assert_int_equal(parse_args(&err, "--debug=", NULL), SVC_CONFIG_ERROR);
    /* a bare bool flag does not swallow the next argument */
    assert_int_equal(parse_args(&err, "--debug", "--workers", "3", NULL), SVC_CONFIG_OK);
    assert_true(cfg.debug);
    assert_int_equal(cfg.workers, 3);
    assert_int_equal(parse_args(&err, "--debug", "false", NULL), SVC_CONFIG_ERROR);
    assert_string_equal(err.msg, "unexpected argument \"false\"");
}

static void
test_log_level(void **state)
{
    svc_err_t err;

    (void)state;
    assert_int_equal(parse_args(&err, "--log-level=error", NULL), SVC_CONFIG_OK);
    assert_int_equal(cfg.log_level, SVC_LOG_ERROR);
    assert_int_equal(parse_args(&err, "--log-level=warning", NULL), SVC_CONFIG_OK);
    assert_int_equal(cfg.log_level, SVC_LOG_WARN);
    assert_parse_error(parse_args(&err, "--log-level=loud", NULL), &err,
                       "bad value for --log-level (LOG_LEVEL): \"loud\" is not one of debug, "
                       "info, warn, error");
}

static void
test_unknown_flag(void **state)
{
    svc_err_t err;

    (void)state;
    assert_parse_error(parse_args(&err, "--foo", NULL), &err, "unknown flag --foo");
    assert_parse_error(parse_args(&err, "--foo=bar", NULL), &err, "unknown flag --foo");
    assert_parse_error(parse_args(&err, "--work=3", NULL), &err, "unknown flag --work");
    assert_parse_error(parse_args(&err, "--workersx=3", NULL), &err, "unknown flag --workersx");
    assert_parse_error(parse_args(&err, "-x", NULL), &err, "unknown flag -x");
}

static void
test_missing_value(void **state)
{
    svc_err_t err;

    (void)state;
    assert_parse_error(parse_args(&err, "--workers", NULL), &err,
                       "missing value for --workers (WORKERS)");
    assert_parse_error(parse_args(&err, "--listen-addr", "--workers=3", NULL), &err,
                       "missing value for --listen-addr (LISTEN_ADDR)");
}

static void
test_positional(void **state)
{
    svc_err_t err;

    (void)state;
    assert_parse_error(parse_args(&err, "serve", NULL), &err, "unexpected argument \"serve\"");
    assert_parse_error(parse_args(&err, "--workers=3", "--", "x", NULL), &err,
                       "unexpected argument \"x\"");
    assert_int_equal(parse_args(&err, "--workers=3", "--", NULL), SVC_CONFIG_OK);
}

static void
test_help(void **state)
{
    svc_err_t err;

    (void)state;
    assert_int_equal(parse_args(&err, "--help", NULL), SVC_CONFIG_HELP);
    assert_int_equal(parse_args(&err, "-h", NULL), SVC_CONFIG_HELP);
    /* help wins over everything else that is wrong */
    setenv("WORKERS", "abc", 1);
    unsetenv("DATABASE_URL");
    assert_int_equal(parse_args(&err, "--bogus", "--help", NULL), SVC_CONFIG_HELP);
    assert_int_equal(err.code, SVC_OK);
}

static void
test_required(void **state)
{
    svc_err_t err;

    (void)state;
    unsetenv("DATABASE_URL");
    assert_parse_error(parse_args(&err, NULL), &err, "--database-url (DATABASE_URL) is required");
    setenv("DATABASE_URL", "", 1);
    assert_int_equal(parse_args(&err, NULL), SVC_CONFIG_ERROR);
    assert_int_equal(parse_args(&err, "--database-url=", NULL), SVC_CONFIG_ERROR);
    assert_int_equal(parse_args(&err, "--database-url", "postgres://x", NULL), SVC_CONFIG_OK);
    assert_string_equal(cfg.database_url, "postgres://x");
    setenv("DATABASE_URL", "postgres://env", 1);
    assert_int_equal(parse_args(&err, NULL), SVC_CONFIG_OK);
    assert_string_equal(cfg.database_url, "postgres://env");
}

static void
test_null_err(void **state)
{
    (void)state;
    assert_int_equal(parse_args(NULL, "--foo", NULL), SVC_CONFIG_ERROR);
    assert_int_equal(parse_args(NULL, NULL), SVC_CONFIG_OK);
}

/* Column where needle starts in the line of text that contains it. */
static long
column_of(const char *text, const char *line_key, const char *needle)
{
    const char *line = strstr(text, line_key);
    const char *start, *hit;

    assert_non_null(line);
    start = line;
    while (start > text && start[-1] != '\n')
        start--;
    hit = strstr(start, needle);
    assert_non_null(hit);
    return (long)(hit - start);
}

static void
test_usage(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    long env_col;

    (void)state;
    assert_non_null(f);
    svc_config_usage(f, "lock-svc", "Distributed locks over gRPC.", opts, N_OPTS);
    fclose(f);

    assert_non_null(strstr(text, "Usage: lock-svc"));
    assert_non_null(strstr(text, "Distributed locks over gRPC."));
    assert_non_null(strstr(text, "--listen-addr"));
    assert_non_null(strstr(text, "0.0.0.0:50051"));
    assert_non_null(strstr(text, "address to serve gRPC on"));
    assert_non_null(strstr(text, "worker threads (1..1024)"));
    assert_non_null(strstr(text, "(required)"));
    assert_non_null(strstr(text, "--help"));
    /* the environment column lines up */
    env_col = column_of(text, "--listen-addr", "LISTEN_ADDR");
    assert_int_equal(column_of(text, "--workers", "WORKERS"), env_col);
    assert_int_equal(column_of(text, "--database-url", "DATABASE_URL"), env_col);
    assert_int_equal(column_of(text, "--log-level", "LOG_LEVEL"), env_col);
    assert_int_equal(column_of(text, "DESCRIPTION", "ENVIRONMENT"), env_col);
    assert_int_equal(column_of(text, "--workers", "worker threads"),
                     column_of(text, "--debug", "extra checks"));
    free(text);
}

/* Runs svc_config_load_or_exit in a child; returns its exit status and output. */
static int
run_load_or_exit(char **argv, int argc, char *out, size_t cap, int which_fd)
{
    int fds[2], status;
    pid_t pid;
    ssize_t n;
    size_t len = 0;

    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], which_fd);
        close(fds[0]);
        close(fds[1]);
        svc_config_load_or_exit(opts, N_OPTS, argc, argv, "Test service.");
        _exit(99);
    }
    close(fds[1]);
    while (len + 1 < cap && (n = read(fds[0], out + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    out[len] = '\0';
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void
test_load_or_exit(void **state)
{
    char out[8192];
    char *bad[] = {(char *)"/usr/bin/lock-svc", (char *)"--workers=abc", NULL};
    char *help[] = {(char *)"/usr/bin/lock-svc", (char *)"--help", NULL};
    char *good[] = {(char *)"lock-svc", (char *)"--workers=3", NULL};

    (void)state;
    assert_int_equal(run_load_or_exit(bad, 2, out, sizeof(out), STDERR_FILENO), 2);
    assert_string_equal(out, "lock-svc: bad value for --workers (WORKERS): \"abc\" is not an "
                             "integer between 1 and 1024\n");

    assert_int_equal(run_load_or_exit(help, 2, out, sizeof(out), STDOUT_FILENO), 0);
    assert_non_null(strstr(out, "Usage: lock-svc"));
    assert_non_null(strstr(out, "Test service."));

    assert_int_equal(run_load_or_exit(good, 2, out, sizeof(out), STDERR_FILENO), 99);
    assert_string_equal(out, "");
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup(fn, setup)
    const struct CMUnitTest tests[] = {
        T(test_defaults),       T(test_env_beats_default),
        T(test_flags_beat_env), T(test_empty_env_is_unset),
        T(test_last_flag_wins), T(test_value_with_equals_and_dash),
        T(test_bad_int),        T(test_int_range_and_overflow),
        T(test_int_full_range), T(test_bad_env_is_named),
        T(test_bool),           T(test_log_level),
        T(test_unknown_flag),   T(test_missing_value),
        T(test_positional),     T(test_help),
        T(test_required),       T(test_null_err),
        T(test_usage),          T(test_load_or_exit),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
