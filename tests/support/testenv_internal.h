/*
 * testenv_internal.h: what testenv.c shares with testenv_redis.c and
 * testenv_pg.c: messages, temp dirs, and starting and stopping children.
 */
#ifndef TESTENV_INTERNAL_H
#define TESTENV_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "svc/timer.h" /* svc_now_mono_ms, svc_sleep_ms */

#define STOP_MS 30000
#define PORT_ATTEMPTS 5
/* Launch result: the server exited because its port was taken meanwhile. */
#define LAUNCH_PORT_TAKEN (-2)

/* Whom a child runs as: the current user, or (as root) another one. */
typedef struct {
    int active;
    uid_t uid;
    gid_t gid;
    gid_t groups[64];
    int ngroups;
} testenv__user_t;

typedef struct {
    const char *path; /* absolute, or searched in PATH */
    char *const *argv;
    char *const *envp; /* NULL: environ */
    const char *log_path;
    const char *cwd; /* NULL: the current one */
    const testenv__user_t *user;
    int max_fd;
} testenv__child_t;

typedef struct {
    const char *what; /* for messages and the registry */
    const char *dir;  /* for the registry */
    testenv__child_t child;
    int timeout_ms;
    int (*ready)(const void *arg);
    const void *arg;
} testenv__launch_t;

/* Prints "testenv: <message>" to stderr. */
void testenv__fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Makes a 0700 dir "$TMPDIR/testenv-<what>.XXXXXX" (or under /tmp) into out. */
int testenv__make_dir(const char *what, char *out, size_t len);
/* rm -rf dir (unless TESTENV_KEEP is set); then dir is "". */
void testenv__remove_dir(char *dir);
/* out = dir/name; -1 (reported) when it does not fit. */
int testenv__path(char *out, size_t len, const char *dir, const char *name);
/* Forgets a child that was reaped outside the helpers below. */
void testenv__unregister(pid_t pid);
/* SIGKILL and reap; status may be NULL. */
void testenv__kill_wait(pid_t pid, int *status);
/* Sends sig (and SIGCONT, in case it is paused) and waits up to STOP_MS;
 * then SIGKILL. Returns 1 when it exited in time, with *status. */
int testenv__terminate(pid_t pid, int sig, int *status);
/*
 * Spawns a server and waits until ready(arg) says it serves. Returns its pid;
 * LAUNCH_PORT_TAKEN when it exited at once because its port was in use (not
 * reported: the caller may retry on another port); -1 on any other failure
 * (reported, with the log's tail).
 */
pid_t testenv__launch(const testenv__launch_t *l);
/* Runs a command to its end (up to timeout_ms). Returns 0 when it exits 0. */
int testenv__run(testenv__child_t *c, const char *what, int timeout_ms);

#endif
