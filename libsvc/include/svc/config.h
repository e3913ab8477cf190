/*
 * config.h: settings from command-line flags and the environment, flags win.
 * A table of svc_opt_t describes every setting once; the same table prints --help.
 */
#ifndef SVC_CONFIG_H
#define SVC_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "svc/err.h"

typedef enum {
    SVC_OPT_STRING,    /* dest is const char ** (points into argv, environ or def) */
    SVC_OPT_INT,       /* dest is int64_t *, checked against min..max */
    SVC_OPT_BOOL,      /* dest is bool *; true/false/1/0/yes/no; a bare --flag means true */
    SVC_OPT_LOG_LEVEL, /* dest is svc_log_level_t *; debug|info|warn|error */
} svc_opt_type_t;

typedef struct {
    const char *flag; /* "listen-addr" means --listen-addr=V or --listen-addr V */
    const char *env;  /* "LISTEN_ADDR"; NULL when there is no environment variable */
    svc_opt_type_t type;
    const char *def; /* default as text; NULL means unset (string stays NULL) */
    const char *help;
    int64_t min, max; /* SVC_OPT_INT only */
    void *dest;
    int required; /* a string that must be set, by flag, environment or default */
} svc_opt_t;

typedef enum {
    SVC_CONFIG_OK = 0,
    SVC_CONFIG_HELP = 1,  /* --help or -h was given: print usage, exit 0 */
    SVC_CONFIG_ERROR = 2, /* err says which setting is wrong: print it, exit 2 */
} svc_config_result_t;

/*
 * Applies defaults, then the environment, then argv[1..argc-1] to the options.
 * On error err->msg names the setting (flag and variable) and the bad value.
 */
svc_config_result_t svc_config_parse(const svc_opt_t *opts, int n_opts, int argc, char **argv,
                                     svc_err_t *err);

/* Writes a usage text listing every option with its variable, default and help. */
void svc_config_usage(FILE *out, const char *prog, const char *summary, const svc_opt_t *opts,
                      int n_opts);

/*
 * The runtime settings every server binary takes (WORKERS, MAX_WORKERS,
 * GRACE_MS, LOG_LEVEL), as svc_opt_t initializers for its table. The
 * destinations are int64_t * (three) and svc_log_level_t *.
 */
#define SVC_OPTS_RUNTIME(workers, max_workers, grace_ms, log_level)                                \
    {"workers", "WORKERS", SVC_OPT_INT, "16", "worker threads kept ready", 1, 4096, (workers), 0}, \
        {"max-workers", "MAX_WORKERS",         SVC_OPT_INT,                                        \
         "256",         "most worker threads", 1,                                                  \
         4096,          (max_workers),         0},                                                 \
        {"grace-ms", "GRACE_MS", SVC_OPT_INT, "10000", "shutdown grace period",                    \
         1,          600000,     (grace_ms),  0},                                                  \
    {                                                                                              \
        "log-level", "LOG_LEVEL", SVC_OPT_LOG_LEVEL, "info", "debug, info, warn or error", 0, 0,   \
            (log_level), 0                                                                         \
    }

/* METRICS_ADDR: where GET /metrics is served (svc_server_opts_t.metrics_addr); "" none. */
#define SVC_OPT_METRICS(metrics_addr)                                                              \
    {                                                                                              \
        "metrics-addr", "METRICS_ADDR", SVC_OPT_STRING, "",                                        \
            "host:port to serve Prometheus metrics on (GET /metrics); empty: none", 0, 0,          \
            (metrics_addr), 0                                                                      \
    }

/*
 * MAX_IN_FLIGHT (svc_server_opts_t.max_in_flight): the calls in flight the
 * server takes at most, parked calls and streams included; above it a call
 * is answered RESOURCE_EXHAUSTED at once. def is its default as text: each
 * service its own, what its biggest legitimate load needs within its
 * memory. The destination is int64_t *.
 */
#define SVC_OPT_MAX_IN_FLIGHT(max_in_flight, def)                                                  \
    {                                                                                              \
        "max-in-flight", "MAX_IN_FLIGHT", SVC_OPT_INT, (def),                                      \
            "calls in flight at most, parked ones too; more are refused", 1, 10000000,             \
            (max_in_flight), 0                                                                     \
    }

/*
 * MAX_IN_FLIGHT_PER_PEER (svc_server_opts_t.max_in_flight_per_peer): the
 * same for the calls of one peer (one client address); 0, the default: no
 * bound of its own. The destination is int64_t *.
 */
#define SVC_OPT_MAX_IN_FLIGHT_PER_PEER(max_in_flight_per_peer)                                     \
    {                                                                                              \
        "max-in-flight-per-peer", "MAX_IN_FLIGHT_PER_PEER", SVC_OPT_INT, "0",                      \
            "calls in flight from one client address at most; 0: no bound of its own", 0,          \
            10000000, (max_in_flight_per_peer), 0                                                  \
    }

/*
 * The usual main() step: parses, prints usage and exits 0 on --help, prints one
 * line and exits 2 on a bad setting.
 */
void svc_config_load_or_exit(const svc_opt_t *opts, int n_opts, int argc, char **argv,
                             const char *summary);

#endif
