/*
 * testenv.h: real servers for integration tests. Redis and PostgreSQL from
 * their Debian binaries and our service binaries, each in a temp dir on a free
 * loopback port, started, stopped, killed, paused and restarted by the test.
 */
#ifndef TESTENV_H
#define TESTENV_H

#include <limits.h>
#include <linux/limits.h> /* PATH_MAX even without _GNU_SOURCE or _POSIX_C_SOURCE */
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Conventions. Every struct is owned by the caller and must be zeroed before
 * its _start (`testenv_redis_t r = {0};`); a port field left 0 means "pick a
 * free one", any other value is used as is. Unless said otherwise, functions
 * return 0 on success, or -1 after printing one line "testenv: ..." to
 * stderr (and the tail of the server's log when the server failed). pid is 0
 * while nothing runs. One struct must not be used from two threads at once;
 * different ones may.
 *
 * _stop shuts down gracefully and removes the temp dir; _kill is a crash
 * (SIGKILL) that keeps the dir so that _restart can bring the server back on
 * the same port. Set TESTENV_KEEP=1 in the environment to keep every temp dir.
 */

/*
 * A free TCP port on 127.0.0.1, chosen at random in 20000..31999 (below the
 * kernel's ephemeral range, so outgoing connections cannot take it) and
 * checked by binding it; never one of the last 64 it returned. Returns -1
 * when none is found.
 */
int testenv_free_port(void);

/*
 * Kills every server still running at exit, on SIGINT, SIGTERM, SIGHUP,
 * SIGQUIT, SIGABRT and SIGPIPE, on a crash (SIGSEGV, SIGBUS, SIGFPE, SIGILL)
 * and on a sanitizer's fatal report, so that a failing
 * test leaves no server behind (their temp dirs are kept and named on
 * stderr). Nothing can be done when the test itself is SIGKILLed. Call it
 * once, early in main; calling it again is a no-op.
 */
void testenv_cleanup_on_exit(void);

/*
 * cmocka_run_group_tests leaves a failing group teardown out of its result:
 * it prints "GROUP TEARDOWN" failed and still returns 0. Our teardowns check
 * that every server exited cleanly (a sanitizer report makes the exit status
 * non-zero), so that must fail the run:
 *
 *   return testenv_group_result(
 *       cmocka_run_group_tests(tests, setup, testenv_group_teardown(teardown)));
 *
 * testenv_group_teardown returns a teardown that calls teardown and records a
 * failure; testenv_group_result turns a recorded failure into a non-zero result.
 */
typedef int (*testenv_fixture_fn)(void **state);
testenv_fixture_fn testenv_group_teardown(testenv_fixture_fn teardown);
int testenv_group_result(int cmocka_result);

/* ------------------------------------------------------------------ Redis */

typedef struct {
    pid_t pid;
    int port;           /* 0 before start: pick one */
    char dir[PATH_MAX]; /* redis.conf and redis.log; "" once stopped */
} testenv_redis_t;

/*
 * Starts /usr/bin/redis-server on 127.0.0.1 in a new temp dir (under $TMPDIR,
 * else /tmp) without persistence, and waits up to 10 s until it answers PING.
 * REQUIRES: r zeroed except perhaps r->port.
 */
int testenv_redis_start(testenv_redis_t *r);
/* SIGTERM, waits for the exit (SIGKILL after 30 s), removes the dir. */
int testenv_redis_stop(testenv_redis_t *r);
/* SIGKILL and wait; the dir is kept for testenv_redis_restart. */
int testenv_redis_kill(testenv_redis_t *r);
/*
 * Starts Redis again on the same port and dir (killing it first if it still
 * runs) and waits until it answers. It comes back EMPTY: nothing is persisted.
 * REQUIRES: r was started and not stopped.
 */
int testenv_redis_restart(testenv_redis_t *r);
/* SIGSTOP (returns once it is stopped): connections hang, nothing is refused. */
int testenv_redis_pause(testenv_redis_t *r);
/* SIGCONT. */
int testenv_redis_resume(testenv_redis_t *r);
/* Writes "redis://127.0.0.1:PORT/0" into buf; -1 when len is too small. */
int testenv_redis_url(const testenv_redis_t *r, char *buf, size_t len);
/*
 * Commands Redis has processed since it started (INFO stats'
 * total_commands_processed, counting the INFO that asks); -1 when it cannot
 * be read. How much a storm cost Redis, whoever sent it.
 */
int64_t testenv_redis_commands(const testenv_redis_t *r);

/* ------------------------------------------------------------- PostgreSQL */

typedef struct {
    pid_t pid; /* the postmaster */
    int port;  /* 0 before start: pick one */
    char dir[PATH_MAX];
    char conninfo[512]; /* "host=127.0.0.1 port=P user=postgres dbname=D" */
} testenv_pg_t;

/*
 * initdb into a new temp dir (binaries from $PG_BIN, else the newest
 * /usr/lib/postgresql/<version>/bin), starts postgres on 127.0.0.1 only, with
 * trust auth, fsync=off, full_page_writes=off, max_connections=300 and its
 * Unix socket in the dir, waits up to 20 s until it accepts connections,
 * creates database dbname (NULL or "postgres": none) and fills pg->conninfo.
 * Commits stay synchronous: a committed row survives testenv_pg_kill.
 * As root, initdb and postgres run as the system user "postgres", which must
 * exist (Debian's postgresql package makes it). dbname: letters, digits, '_'
 * and '-', at most 63. REQUIRES: pg zeroed except perhaps pg->port.
 */
int testenv_pg_start(testenv_pg_t *pg, const char *dbname);
/* SIGINT (fast shutdown: clients are disconnected), waits, removes the dir. */
int testenv_pg_stop(testenv_pg_t *pg);
/*
 * A crash: SIGKILL to the postmaster and every process it started, and waits
 * until they are all gone, so every client connection breaks at once. Data
 * committed so far stays in the dir for testenv_pg_restart.
 */
int testenv_pg_kill(testenv_pg_t *pg);
/*
 * Starts postgres again on the same port and data (killing it first if it
 * still runs; crash recovery runs as needed) and waits until it accepts
 * connections. REQUIRES: pg was started and not stopped.
 */
int testenv_pg_restart(testenv_pg_t *pg);
/* Runs one SQL statement on pg->conninfo (a new connection each call). */
int testenv_pg_exec(const testenv_pg_t *pg, const char *sql);
/* The first column of the first row as an integer; INT64_MIN on an error, no
 * row or NULL. */
int64_t testenv_pg_query_int(const testenv_pg_t *pg, const char *sql);

/* -------------------------------------------------------------- Services */

#define TESTENV_PROC_MAX_ARGS 32
#define TESTENV_PROC_MAX_ENV 32
#define TESTENV_PROC_STRINGS 8192

typedef struct {
    pid_t pid;
    int port;                /* 0 before start: pick one */
    char addr[64];           /* "127.0.0.1:PORT" */
    char log_path[PATH_MAX]; /* stdout and stderr, appended across restarts */
    /* Private: what testenv_proc_restart needs. */
    char binary[PATH_MAX];
    int n_args, n_env;
    char strings[TESTENV_PROC_STRINGS]; /* args then env, each NUL-terminated */
    int exited, status;                 /* reaped by testenv_proc_alive */
} testenv_proc_t;

/*
 * Runs `binary --listen-addr 127.0.0.1:PORT extra_args...` with the current
 * environment plus env_kv ("NAME=value", overriding the same NAME), output
 * appended to a log in a new temp dir, and waits up to 20 s until
 * grpc.health.v1.Health/Check for service "" answers SERVING. Fails, printing
 * the log's tail, if the process exits first. extra_args and env_kv are
 * NULL-terminated and may be NULL; they are copied. binary without '/' is
 * searched in PATH. Uses svc_client_get, so call svc_client_release_all()
 * before exit as usual. REQUIRES: p zeroed except perhaps p->port.
 */
int testenv_proc_start(testenv_proc_t *p, const char *binary, const char *const *extra_args,
                       const char *const *env_kv);
/*
 * SIGTERM and wait up to 30 s. Returns the waitpid status (0: exited with 0),
 * or -1 when it did not exit in time (it is then SIGKILLed). Removes the log's
 * dir when the status is 0; otherwise keeps it and names it on stderr. If the
 * process had exited on its own (seen by testenv_proc_alive), returns the
 * status it had. After testenv_proc_kill or a failed start, returns -1 and
 * removes the log.
 */
int testenv_proc_stop(testenv_proc_t *p);
/* SIGKILL and wait; the log is kept for testenv_proc_restart. */
int testenv_proc_kill(testenv_proc_t *p);
/* Sends sig to the process (SIGSTOP, SIGCONT, SIGHUP...). */
int testenv_proc_signal(testenv_proc_t *p, int sig);
/*
 * SIGSTOP, returning once the process is really stopped (as
 * testenv_redis_pause): its connections stay open and its calls hang.
 */
int testenv_proc_pause(testenv_proc_t *p);
/* SIGCONT. */
int testenv_proc_resume(testenv_proc_t *p);
/*
 * Runs the same binary, args and env on the same port again (killing it first
 * if it still runs) and waits until SERVING. REQUIRES: p was started.
 */
int testenv_proc_restart(testenv_proc_t *p);
/* 1 while the process runs, else 0 (reaping it; stop then returns its status). */
int testenv_proc_alive(testenv_proc_t *p);
/*
 * Waits up to timeout_ms until the process is stopped by a signal (it raised
 * SIGSTOP at a failpoint, say), polling its state in /proc. Returns 0 once it
 * is stopped, -1 on timeout or when it has exited (not reaped here, so
 * testenv_proc_alive and testenv_proc_stop still see its status).
 */
int testenv_proc_wait_stopped(testenv_proc_t *p, int timeout_ms);

#endif
