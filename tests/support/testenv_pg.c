/*
 * testenv_pg.c: a throwaway PostgreSQL cluster for a test: initdb and
 * postgres in a temp dir on a free loopback port, run as "postgres" under root.
 */
#define _GNU_SOURCE
#include "testenv.h"

#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "testenv_internal.h"

#define PG_START_MS 20000
#define PG_INITDB_MS 120000

/* The dir of the newest /usr/lib/postgresql/<version>/bin, or $PG_BIN. */
static int
testenv__pg_bindir(char *out, size_t len)
{
    const char *env = getenv("PG_BIN");
    char best[64] = "", probe[PATH_MAX];
    struct dirent *e;
    DIR *d;

    if (env != NULL && *env != '\0') {
        snprintf(out, len, "%s", env);
        snprintf(probe, sizeof(probe), "%s/postgres", env);
        if (access(probe, X_OK) != 0) {
            testenv__fail("PG_BIN=%s has no postgres binary", env);
            return -1;
        }
        return 0;
    }
    if ((d = opendir("/usr/lib/postgresql")) != NULL) {
        while ((e = readdir(d)) != NULL) {
            snprintf(probe, sizeof(probe), "/usr/lib/postgresql/%s/bin/postgres", e->d_name);
            if (e->d_name[0] != '.' && strlen(e->d_name) < sizeof(best) &&
                access(probe, X_OK) == 0 && strverscmp(e->d_name, best) > 0) {
                memcpy(best, e->d_name, strlen(e->d_name) + 1); /* fits: checked above */
            }
        }
        closedir(d);
    }
    if (best[0] == '\0') {
        testenv__fail("no PostgreSQL under /usr/lib/postgresql/*/bin (Debian package postgresql)");
        return -1;
    }
    snprintf(out, len, "/usr/lib/postgresql/%s/bin", best);
    return 0;
}

/* PostgreSQL refuses to run as root: then it runs as the system user postgres. */
static int
testenv__pg_user(testenv__user_t *u)
{
    struct passwd pw, *found = NULL;
    char buf[4096];

    memset(u, 0, sizeof(*u));
    if (geteuid() != 0) {
        return 0;
    }
    if (getpwnam_r("postgres", &pw, buf, sizeof(buf), &found) != 0 || found == NULL) {
        testenv__fail("running as root and there is no user \"postgres\" to run PostgreSQL as "
                      "(install postgresql, or: useradd --system --user-group postgres)");
        return -1;
    }
    u->active = 1;
    u->uid = pw.pw_uid;
    u->gid = pw.pw_gid;
    u->ngroups = (int)(sizeof(u->groups) / sizeof(u->groups[0]));
    if (getgrouplist("postgres", pw.pw_gid, u->groups, &u->ngroups) < 0) {
        u->groups[0] = pw.pw_gid;
        u->ngroups = 1;
    }
    return 0;
}

static int
testenv__pg_ping(const void *arg)
{
    const testenv_pg_t *pg = arg;
    char conninfo[128];

    snprintf(conninfo, sizeof(conninfo),
             "host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=2", pg->port);
    return PQping(conninfo) == PQPING_OK;
}

/* Writes data/testenv.conf for pg->port and starts postgres on it. */
static pid_t
testenv__pg_launch(testenv_pg_t *pg, const char *bindir, const testenv__user_t *user)
{
    char conf[PATH_MAX], log[PATH_MAX], data[PATH_MAX], postgres[PATH_MAX];
    char *argv[] = {postgres, "-D", data, NULL};
    testenv__launch_t l = {"postgres", pg->dir, {0}, PG_START_MS, testenv__pg_ping, pg};
    FILE *f;

    if (testenv__path(data, sizeof(data), pg->dir, "data") != 0 ||
        testenv__path(conf, sizeof(conf), data, "testenv.conf") != 0 ||
        testenv__path(log, sizeof(log), pg->dir, "postgres.log") != 0 ||
        testenv__path(postgres, sizeof(postgres), bindir, "postgres") != 0) {
        return -1;
    }
    if ((f = fopen(conf, "w")) == NULL) {
        testenv__fail("cannot write %s: %s", conf, strerror(errno));
        return -1;
    }
    /* synchronous_commit stays on: off would lose commits that already
     * returned when the server is killed, and with fsync off it costs little. */
    fprintf(f,
            "# Written by testenv at each start: a throwaway cluster for tests.\n"
            "listen_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\n"
            "fsync = off\nfull_page_writes = off\nmax_connections = 300\n",
            pg->port, pg->dir);
    if (fclose(f) != 0 || (user->active && chown(conf, user->uid, user->gid) != 0)) {
        testenv__fail("cannot write %s", conf);
        return -1;
    }
    l.child.path = postgres;
    l.child.argv = argv;
    l.child.log_path = log;
    l.child.cwd = pg->dir;
    l.child.user = user;
    return testenv__launch(&l);
}

/* initdb into pg->dir/data and include testenv.conf from postgresql.conf. */
static int
testenv__pg_initdb(const testenv_pg_t *pg, const char *bindir, const testenv__user_t *user)
{
    char initdb[PATH_MAX], data[PATH_MAX], log[PATH_MAX], conf[PATH_MAX];
    char *argv[] = {
        initdb,        "-D",        data, "-U", "postgres", "--auth=trust", "--encoding=UTF8",
        "--no-locale", "--no-sync", NULL};
    testenv__child_t c = {0};
    FILE *f;

    if (testenv__path(initdb, sizeof(initdb), bindir, "initdb") != 0 ||
        testenv__path(data, sizeof(data), pg->dir, "data") != 0 ||
        testenv__path(log, sizeof(log), pg->dir, "initdb.log") != 0 ||
        testenv__path(conf, sizeof(conf), data, "postgresql.conf") != 0) {
        return -1;
    }
    c.path = initdb;
    c.argv = argv;
    c.log_path = log;
    c.cwd = pg->dir;
    c.user = user;
    if (testenv__run(&c, "initdb", PG_INITDB_MS) != 0) {
        return -1;
    }
    if ((f = fopen(conf, "a")) == NULL) {
        testenv__fail("cannot append to %s: %s", conf, strerror(errno));
        return -1;
    }
    fprintf(f, "include 'testenv.conf'\n");
    return fclose(f) == 0 ? 0 : -1;
}

static int
testenv__pg_dbname_ok(const char *dbname)
{
    size_t n = strlen(dbname);

    if (n == 0 || n > 63) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = dbname[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-')) {
            return 0;
        }
    }
    return 1;
}

/* Connects to conninfo and runs sql; returns the result (caller PQclears) or
 * NULL after reporting the error. */
static PGresult *
testenv__pg_query(const char *conninfo, const char *sql)
{
    PGconn *conn = PQconnectdb(conninfo);
    PGresult *res = NULL;
    ExecStatusType st;

    if (PQstatus(conn) != CONNECTION_OK) {
        const char *msg = PQerrorMessage(conn), *nl = strchr(msg, '\n');
        /* libpq's message is several lines; the first says what happened. */
        testenv__fail("cannot connect to %s: %.*s", conninfo,
                      (int)(nl != NULL ? nl - msg : (ptrdiff_t)strlen(msg)), msg);
        PQfinish(conn);
        return NULL;
    }
    res = PQexec(conn, sql);
    st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        testenv__fail("sql failed: %s: %s", sql, msg != NULL ? msg : PQresStatus(st));
        PQclear(res);
        res = NULL;
    }
    PQfinish(conn);
    return res;
}

static int
testenv__pg_create_db(testenv_pg_t *pg, const char *dbname)
{
    char conninfo[128], sql[160];
    PGresult *res;

    snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1 port=%d user=postgres dbname=postgres",
             pg->port);
    if (strcmp(dbname, "postgres") != 0) {
        snprintf(sql, sizeof(sql), "CREATE DATABASE \"%s\"", dbname);
        if ((res = testenv__pg_query(conninfo, sql)) == NULL) {
            return -1;
        }
        PQclear(res);
    }
    snprintf(pg->conninfo, sizeof(pg->conninfo), "host=127.0.0.1 port=%d user=postgres dbname=%s",
             pg->port, dbname);
    return 0;
}

int
testenv_pg_start(testenv_pg_t *pg, const char *dbname)
{
    char bindir[PATH_MAX];
    testenv__user_t user;
    int pick = pg->port == 0;
    pid_t pid = LAUNCH_PORT_TAKEN;

    dbname = dbname != NULL ? dbname : "postgres";
    if (!testenv__pg_dbname_ok(dbname)) {
        testenv__fail("bad database name \"%s\" (letters, digits, '_', '-'; at most 63)", dbname);
        return -1;
    }
    if (testenv__pg_bindir(bindir, sizeof(bindir)) != 0 || testenv__pg_user(&user) != 0 ||
        testenv__make_dir("pg", pg->dir, sizeof(pg->dir)) != 0) {
        return -1;
    }
    /* The kernel limits a Unix socket path to 107 bytes. */
    if (strlen(pg->dir) + strlen("/.s.PGSQL.65535") > 107) {
        testenv__fail("temp dir %s is too long for a Unix socket path; set a shorter TMPDIR",
                      pg->dir);
        testenv__remove_dir(pg->dir);
        return -1;
    }
    if (user.active && chown(pg->dir, user.uid, user.gid) != 0) {
        testenv__fail("cannot chown %s to postgres: %s", pg->dir, strerror(errno));
        testenv__remove_dir(pg->dir);
        return -1;
    }
    if (testenv__pg_initdb(pg, bindir, &user) != 0) {
        fprintf(stderr, "testenv: postgres files kept in %s\n", pg->dir);
        return -1;
    }
    for (int attempt = 0; attempt < PORT_ATTEMPTS && pid == LAUNCH_PORT_TAKEN; attempt++) {
        if (pick && (pg->port = testenv_free_port()) < 0) {
            return -1;
        }
        pid = testenv__pg_launch(pg, bindir, &user);
        if (pid == LAUNCH_PORT_TAKEN && !pick) {
            break;
        }
    }
    if (pid < 0) {
        if (pid == LAUNCH_PORT_TAKEN) {
            testenv__fail("postgres: port %d is in use", pg->port);
        }
        fprintf(stderr, "testenv: postgres files kept in %s\n", pg->dir);
        return -1;
    }
    pg->pid = pid;
    return testenv__pg_create_db(pg, dbname);
}

int
testenv_pg_stop(testenv_pg_t *pg)
{
    int status, rc = 0;

    if (pg->pid > 0 && !testenv__terminate(pg->pid, SIGINT, &status)) {
        testenv__fail("postgres did not exit within %d s of SIGINT; killed it", STOP_MS / 1000);
        rc = -1;
    }
    pg->pid = 0;
    testenv__remove_dir(pg->dir);
    return rc;
}

/* Reads state and parent of a process from /proc/<pid>/stat: 0, or -1 when
 * there is no such process. */
static int
testenv__proc_stat(pid_t pid, char *state, pid_t *ppid)
{
    char path[64], buf[1024], *p;
    FILE *f;
    size_t n;
    int parent = 0;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if ((f = fopen(path, "r")) == NULL) {
        return -1;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* "pid (comm) S ppid ...": comm may hold spaces and parentheses. */
    if ((p = strrchr(buf, ')')) == NULL || sscanf(p + 1, " %c %d", state, &parent) != 2) {
        return -1;
    }
    *ppid = (pid_t)parent;
    return 0;
}

/* The pids of parent's children, at most max. */
static int
testenv__children(pid_t parent, pid_t *out, int max)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;

    if (d == NULL) {
        return 0;
    }
    while ((e = readdir(d)) != NULL && n < max) {
        char state, *end;
        pid_t ppid, pid = (pid_t)strtol(e->d_name, &end, 10);
        if (*end == '\0' && pid > 0 && testenv__proc_stat(pid, &state, &ppid) == 0 &&
            ppid == parent) {
            out[n++] = pid;
        }
    }
    closedir(d);
    return n;
}

/* Waits until every pid is gone or a zombie (a zombie holds no shared memory). */
static void
testenv__wait_gone(const pid_t *pids, int n)
{
    int64_t deadline = svc_now_mono_ms() + 10000;

    for (int i = 0; i < n; i++) {
        char state;
        pid_t ppid;
        while (testenv__proc_stat(pids[i], &state, &ppid) == 0 && state != 'Z' && state != 'X') {
            if (svc_now_mono_ms() >= deadline) {
                testenv__fail("postgres child %d still runs after SIGKILL", (int)pids[i]);
                return;
            }
            svc_sleep_ms(5);
        }
    }
}

int
testenv_pg_kill(testenv_pg_t *pg)
{
    pid_t kids[512];
    int n, status;

    if (pg->pid <= 0) {
        testenv__fail("postgres is not running");
        return -1;
    }
    /*
     * Stop the postmaster first so that it starts no new child, kill its
     * children (each its own session leader, so no process group would do),
     * then the postmaster. A new postmaster refuses to start while any old
     * child still holds the shared memory.
     */
    kill(pg->pid, SIGSTOP);
    if (waitpid(pg->pid, &status, WUNTRACED) == pg->pid && !WIFSTOPPED(status)) {
        testenv__unregister(pg->pid); /* it had exited on its own */
        n = 0;
    } else {
        n = testenv__children(pg->pid, kids, (int)(sizeof(kids) / sizeof(kids[0])));
        for (int i = 0; i < n; i++) {
            kill(kids[i], SIGKILL);
        }
        testenv__kill_wait(pg->pid, NULL);
    }
    testenv__wait_gone(kids, n);
    pg->pid = 0;
    return 0;
}

int
testenv_pg_restart(testenv_pg_t *pg)
{
    char bindir[PATH_MAX];
    testenv__user_t user;
    pid_t pid;

    if (pg->dir[0] == '\0' || pg->port <= 0) {
        testenv__fail("postgres was not started, or was stopped");
        return -1;
    }
    if (testenv__pg_bindir(bindir, sizeof(bindir)) != 0 || testenv__pg_user(&user) != 0) {
        return -1;
    }
    if (pg->pid > 0) {
        testenv_pg_kill(pg);
    }
    pid = testenv__pg_launch(pg, bindir, &user);
    if (pid < 0) {
        if (pid == LAUNCH_PORT_TAKEN) {
            testenv__fail("postgres: port %d is now taken by another program", pg->port);
        }
        return -1;
    }
    pg->pid = pid;
    return 0;
}

int
testenv_pg_exec(const testenv_pg_t *pg, const char *sql)
{
    PGresult *res = testenv__pg_query(pg->conninfo, sql);

    if (res == NULL) {
        return -1;
    }
    PQclear(res);
    return 0;
}

int64_t
testenv_pg_query_int(const testenv_pg_t *pg, const char *sql)
{
    PGresult *res = testenv__pg_query(pg->conninfo, sql);
    int64_t value = INT64_MIN;
    char *end;

    if (res == NULL) {
        return INT64_MIN;
    }
    if (PQntuples(res) < 1 || PQnfields(res) < 1 || PQgetisnull(res, 0, 0)) {
        testenv__fail("no value from: %s", sql);
    } else {
        const char *text = PQgetvalue(res, 0, 0);
        errno = 0;
        value = (int64_t)strtoll(text, &end, 10);
        if (errno != 0 || end == text || *end != '\0') {
            testenv__fail("not an integer: \"%s\" from: %s", text, sql);
            value = INT64_MIN;
        }
    }
    PQclear(res);
    return value;
}
