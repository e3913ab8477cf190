/*
 * fuzz_config.c: svc_config_parse, the settings parser every binary runs
 * on its flags and environment, over a table with every kind of setting
 * (the shared SVC_OPTS_RUNTIME and SVC_OPT_METRICS ones included). The
 * input is NUL-separated: items "NAME=value" whose NAME is one of the
 * table's variables are set in the environment, everything else is argv.
 * Whatever parses is within the table's bounds; anything else is
 * INVALID_ARGUMENT naming the setting.
 */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "svc/config.h"
#include "svc/log.h"

#define MAX_ARGS 64

static const char *listen_addr, *redis_url, *metrics_addr, *optional;
static int64_t workers, max_workers, grace_ms, lease_ms, signed_int;
static svc_log_level_t log_level;
static bool flag;

static const svc_opt_t opts[] = {
    {"listen-addr", "LISTEN_ADDR", SVC_OPT_STRING, "0.0.0.0:50051", "address", 0, 0, &listen_addr,
     1},
    {"redis-url", "REDIS_URL", SVC_OPT_STRING, NULL, "Redis", 0, 0, &redis_url, 1},
    {"optional", "OPTIONAL", SVC_OPT_STRING, NULL, "may stay unset", 0, 0, &optional, 0},
    {"lease-ms", "LEASE_MS", SVC_OPT_INT, "10000", "a lease", 1, 3600000, &lease_ms, 0},
    {"signed", NULL, SVC_OPT_INT, "0", "any int64", INT64_MIN, INT64_MAX, &signed_int, 0},
    {NULL, "ONLY_ENV", SVC_OPT_BOOL, "false", "environment only", 0, 0, &flag, 0},
    SVC_OPT_METRICS(&metrics_addr),
    SVC_OPTS_RUNTIME(&workers, &max_workers, &grace_ms, &log_level),
};
#define N_OPTS ((int)(sizeof(opts) / sizeof(opts[0])))

/* Whether item is "NAME=value" for a variable of the table. */
static bool
is_env(const char *item)
{
    const char *eq = strchr(item, '=');

    for (int i = 0; eq != NULL && i < N_OPTS; i++) {
        if (opts[i].env != NULL && strlen(opts[i].env) == (size_t)(eq - item) &&
            strncmp(opts[i].env, item, (size_t)(eq - item)) == 0) {
            return true;
        }
    }
    return false;
}

static bool
in_argv(int argc, char **argv, const char *what)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            return false;
        }
        if (strcmp(argv[i], what) == 0) {
            return true;
        }
    }
    return false;
}

/* A string setting is a whole, live string (ASan reads it) or NULL. */
static void
check_string(const char *s)
{
    if (s != NULL) {
        FUZZ_CHECK(strlen(s) < SIZE_MAX);
    }
}

/* The table's variables unset (putenv'd items point into the input's copy). */
static void
clear_env(void)
{
    for (int i = 0; i < N_OPTS; i++) {
        if (opts[i].env != NULL) {
            unsetenv(opts[i].env);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = fuzz_strndup(data, size), *argv[MAX_ARGS + 1];
    int argc = 0;
    svc_config_result_t rc;
    svc_err_t err;

    clear_env();
    argv[argc++] = "fuzz-svc";
    for (size_t at = 0; at <= size && argc < MAX_ARGS;) {
        char *item = buf + at;
        size_t n = strlen(item);
        if (is_env(item)) {
            putenv(item); /* not setenv: glibc keeps every value setenv was given */
        } else if (at < size) {
            argv[argc++] = item;
        }
        at += n + 1;
    }
    argv[argc] = NULL;

    workers = max_workers = grace_ms = lease_ms = -1;
    rc = svc_config_parse(opts, N_OPTS, argc, argv, &err);
    switch (rc) {
    case SVC_CONFIG_OK:
        FUZZ_CHECK(err.code == SVC_OK);
        FUZZ_CHECK(listen_addr != NULL && listen_addr[0] != '\0');
        FUZZ_CHECK(redis_url != NULL && redis_url[0] != '\0');
        FUZZ_CHECK(lease_ms >= 1 && lease_ms <= 3600000);
        FUZZ_CHECK(workers >= 1 && workers <= 4096);
        FUZZ_CHECK(max_workers >= 1 && max_workers <= 4096);
        FUZZ_CHECK(grace_ms >= 1 && grace_ms <= 600000);
        FUZZ_CHECK(log_level >= SVC_LOG_DEBUG && log_level <= SVC_LOG_ERROR);
        check_string(listen_addr);
        check_string(redis_url);
        check_string(metrics_addr);
        check_string(optional);
        break;
    case SVC_CONFIG_HELP:
        FUZZ_CHECK(in_argv(argc, argv, "--help") || in_argv(argc, argv, "-h"));
        break;
    case SVC_CONFIG_ERROR:
        fuzz_check_refusal(&err, SVC_INVALID_ARGUMENT);
        break;
    default:
        FUZZ_CHECK(!"svc_config_parse returned something else");
    }
    clear_env();
    free(buf);
    return 0;
}
