/*
 * config.c: settings from defaults, then the environment, then flags (so flags
 * win), and the --help text printed from the same option table.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "svc/config.h"
#include "svc/err.h"
#include "svc/log.h"

/* Widest a usage column grows; a longer cell pushes the rest of its row right. */
#define USAGE_COL_MAX 32

/* Writes how a user refers to the setting: "--workers (WORKERS)". */
static void
opt_name(const svc_opt_t *o, char *out, size_t cap)
{
    if (o->flag != NULL && o->env != NULL)
        snprintf(out, cap, "--%s (%s)", o->flag, o->env);
    else if (o->flag != NULL)
        snprintf(out, cap, "--%s", o->flag);
    else
        snprintf(out, cap, "%s", o->env != NULL ? o->env : "?");
}

/*
 * Strict base-10 parse: the whole text must be an integer in min..max; no
 * leading space, no trailing junk, no empty string, no overflow.
 */
static int
parse_int(const char *text, int64_t min, int64_t max, int64_t *out)
{
    char *end;
    long long v;

    if (text[0] == '\0' ||
        !(text[0] == '-' || text[0] == '+' || (text[0] >= '0' && text[0] <= '9')))
        return -1;
    errno = 0;
    v = strtoll(text, &end, 10);
    if (errno != 0 || *end != '\0' || end == text)
        return -1;
    if (v < min || v > max)
        return -1;
    *out = (int64_t)v;
    return 0;
}

static int
parse_bool(const char *text, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes"};
    static const char *const no[] = {"false", "0", "no"};

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/*
 * Parses text according to the option's type and stores it in opt->dest.
 * A string dest keeps the text pointer itself, so text must outlive the config.
 */
static int
opt_apply(const svc_opt_t *o, const char *text, svc_err_t *err)
{
    char name[160];

    opt_name(o, name, sizeof(name));
    switch (o->type) {
    case SVC_OPT_STRING:
        *(const char **)o->dest = text;
        return 0;
    case SVC_OPT_INT:
        if (parse_int(text, o->min, o->max, (int64_t *)o->dest) == 0)
            return 0;
        svc_err_set(err, SVC_INVALID_ARGUMENT,
                    "bad value for %s: \"%.64s\" is not an integer between %" PRId64
                    " and %" PRId64,
                    name, text, o->min, o->max);
        return -1;
    case SVC_OPT_BOOL:
        if (parse_bool(text, (bool *)o->dest) == 0)
            return 0;
        svc_err_set(err, SVC_INVALID_ARGUMENT,
                    "bad value for %s: \"%.64s\" is not one of true, false, yes, no, 1, 0", name,
                    text);
        return -1;
    case SVC_OPT_LOG_LEVEL:
        if (svc_log_level_parse(text, (svc_log_level_t *)o->dest) == 0)
            return 0;
        svc_err_set(err, SVC_INVALID_ARGUMENT,
                    "bad value for %s: \"%.64s\" is not one of debug, info, warn, error", name,
                    text);
        return -1;
    }
    svc_err_set(err, SVC_INVALID_ARGUMENT, "bad option type for %s", name);
    return -1;
}

static const svc_opt_t *
find_flag(const svc_opt_t *opts, int n_opts, const char *name, size_t len)
{
    for (int i = 0; i < n_opts; i++) {
        const char *f = opts[i].flag;
        if (f != NULL && strlen(f) == len && strncmp(f, name, len) == 0)
            return &opts[i];
    }
    return NULL;
}

/* --help or -h anywhere before a "--" asks for usage, whatever else is wrong. */
static bool
wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            return false;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return true;
    }
    return false;
}

/*
 * Applies argv[1..argc-1]. A value is taken from "--name=value" or from the next
 * argument unless that looks like a flag ("--..."); a bool flag takes only the
 * "=" form, and bare it means true. "--" ends the flags; positional arguments
 * are not accepted.
 */
static int
apply_flags(const svc_opt_t *opts, int n_opts, int argc, char **argv, svc_err_t *err)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *name, *eq, *value;
        size_t name_len;
        const svc_opt_t *o;
        char oname[160];

        if (strcmp(arg, "--") == 0) {
            if (i + 1 < argc) {
                svc_err_set(err, SVC_INVALID_ARGUMENT, "unexpected argument \"%.64s\"",
                            argv[i + 1]);
                return -1;
            }
            return 0;
        }
        if (arg[0] != '-' || arg[1] == '\0') {
            svc_err_set(err, SVC_INVALID_ARGUMENT, "unexpected argument \"%.64s\"", arg);
            return -1;
        }
        if (arg[1] != '-') {
            svc_err_set(err, SVC_INVALID_ARGUMENT, "unknown flag %.64s", arg);
            return -1;
        }
        name = arg + 2;
        eq = strchr(name, '=');
        name_len = eq != NULL ? (size_t)(eq - name) : strlen(name);
        o = find_flag(opts, n_opts, name, name_len);
        if (o == NULL) {
            svc_err_set(err, SVC_INVALID_ARGUMENT, "unknown flag --%.*s",
                        (int)(name_len < 64 ? name_len : 64), name);
            return -1;
        }
        if (eq != NULL) {
            value = eq + 1;
        } else if (o->type == SVC_OPT_BOOL) {
            value = "true";
        } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
            value = argv[++i];
        } else {
            opt_name(o, oname, sizeof(oname));
            svc_err_set(err, SVC_INVALID_ARGUMENT, "missing value for %s", oname);
            return -1;
        }
        if (opt_apply(o, value, err) != 0)
            return -1;
    }
    return 0;
}

svc_config_result_t
svc_config_parse(const svc_opt_t *opts, int n_opts, int argc, char **argv, svc_err_t *err)
{
    char name[160];

    svc_err_clear(err);
    if (wants_help(argc, argv))
        return SVC_CONFIG_HELP;

    /* A NULL default leaves a string NULL and any other dest as the caller set it. */
    for (int i = 0; i < n_opts; i++) {
        if (opts[i].def != NULL) {
            if (opt_apply(&opts[i], opts[i].def, err) != 0)
                return SVC_CONFIG_ERROR;
        } else if (opts[i].type == SVC_OPT_STRING) {
            *(const char **)opts[i].dest = NULL;
        }
    }

    /* An empty variable counts as unset, as manifests often write NAME="" for "none". */
    for (int i = 0; i < n_opts; i++) {
        const char *v = opts[i].env != NULL ? getenv(opts[i].env) : NULL;
        if (v != NULL && v[0] != '\0' && opt_apply(&opts[i], v, err) != 0)
            return SVC_CONFIG_ERROR;
    }

    if (apply_flags(opts, n_opts, argc, argv, err) != 0)
        return SVC_CONFIG_ERROR;

    for (int i = 0; i < n_opts; i++) {
        const char *s;
        if (!opts[i].required || opts[i].type != SVC_OPT_STRING)
            continue;
        s = *(const char **)opts[i].dest;
        if (s == NULL || s[0] == '\0') {
            opt_name(&opts[i], name, sizeof(name));
            svc_err_set(err, SVC_INVALID_ARGUMENT, "%s is required", name);
            return SVC_CONFIG_ERROR;
        }
    }
    return SVC_CONFIG_OK;
}

/* The cells of one usage row; help_extra is appended to the help text. */
typedef struct {
    char flag[96];
    const char *env;
    const char *def;
    char help_extra[64];
} usage_row_t;

static void
usage_row(const svc_opt_t *o, usage_row_t *r)
{
    static const char *const placeholder[] = {
        [SVC_OPT_STRING] = "=TEXT",
        [SVC_OPT_INT] = "=N",
        [SVC_OPT_BOOL] = "[=BOOL]",
        [SVC_OPT_LOG_LEVEL] = "=LEVEL",
    };
    const char *ph = (unsigned)o->type <= SVC_OPT_LOG_LEVEL ? placeholder[o->type] : "";

    if (o->flag != NULL)
        snprintf(r->flag, sizeof(r->flag), "--%s%s", o->flag, ph);
    else
        snprintf(r->flag, sizeof(r->flag), "-");
    r->env = o->env != NULL ? o->env : "-";
    r->def = o->def != NULL ? o->def : o->required ? "(required)" : "-";
    r->help_extra[0] = '\0';
    if (o->type == SVC_OPT_INT)
        snprintf(r->help_extra, sizeof(r->help_extra), " (%" PRId64 "..%" PRId64 ")", o->min,
                 o->max);
    else if (o->type == SVC_OPT_LOG_LEVEL)
        snprintf(r->help_extra, sizeof(r->help_extra), " (debug, info, warn, error)");
}

static int
col_width(int cur, const char *cell)
{
    size_t n = strlen(cell);
    if (n > USAGE_COL_MAX)
        n = USAGE_COL_MAX;
    return (int)n > cur ? (int)n : cur;
}

void
svc_config_usage(FILE *out, const char *prog, const char *summary, const svc_opt_t *opts,
                 int n_opts)
{
    static const char help_flag[] = "-h, --help";
    int wf = col_width((int)strlen("FLAG"), help_flag);
    int we = (int)strlen("ENVIRONMENT"), wd = (int)strlen("DEFAULT");
    usage_row_t r;

    for (int i = 0; i < n_opts; i++) {
        usage_row(&opts[i], &r);
        wf = col_width(wf, r.flag);
        we = col_width(we, r.env);
        wd = col_width(wd, r.def);
    }

    fprintf(out, "Usage: %s [FLAG]...\n", prog != NULL ? prog : "svc");
    if (summary != NULL && summary[0] != '\0')
        fprintf(out, "%s\n", summary);
    fprintf(out, "\nEach setting is taken from its flag, else its environment variable, "
                 "else its default.\n\n");
    fprintf(out, "  %-*s  %-*s  %-*s  %s\n", wf, "FLAG", we, "ENVIRONMENT", wd, "DEFAULT",
            "DESCRIPTION");
    for (int i = 0; i < n_opts; i++) {
        usage_row(&opts[i], &r);
        fprintf(out, "  %-*s  %-*s  %-*s  %s%s\n", wf, r.flag, we, r.env, wd, r.def,
                opts[i].help != NULL ? opts[i].help : "", r.help_extra);
    }
    fprintf(out, "  %-*s  %-*s  %-*s  %s\n", wf, help_flag, we, "-", wd, "-",
            "print this help and exit");
}

void
svc_config_load_or_exit(const svc_opt_t *opts, int n_opts, int argc, char **argv,
                        const char *summary)
{
    const char *prog = "svc";
    svc_err_t err;

    if (argc > 0 && argv[0] != NULL && argv[0][0] != '\0') {
        const char *slash = strrchr(argv[0], '/');
        prog = slash != NULL ? slash + 1 : argv[0];
    }
    switch (svc_config_parse(opts, n_opts, argc, argv, &err)) {
    case SVC_CONFIG_OK:
        return;
    case SVC_CONFIG_HELP:
        svc_config_usage(stdout, prog, summary, opts, n_opts);
        exit(0);
    case SVC_CONFIG_ERROR:
        break;
    }
    fprintf(stderr, "%s: %s\n", prog, err.msg);
    exit(2);
}
