/*
 * testenv.c: starting and stopping children for tests (temp dirs, logs,
 * free ports, cleanup at exit) and our service processes (see testenv.h).
 */
#define _GNU_SOURCE
#include "testenv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "grpc/health/v1/health.pb-c.h"
#include "svc/client.h"
#include "testenv_internal.h"

#if defined(__SANITIZE_ADDRESS__)
#define TESTENV_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(undefined_behavior_sanitizer)
#define TESTENV_SANITIZER 1
#endif
#endif
#ifdef TESTENV_SANITIZER
#include <sanitizer/common_interface_defs.h>
#endif

#define PROC_START_MS 20000

extern char **environ;

/* ------------------------------------------------------------- helpers */

void
testenv__fail(const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "testenv: %s\n", line);
}

static int
testenv__keep(void)
{
    const char *keep = getenv("TESTENV_KEEP");

    return keep != NULL && *keep != '\0' && strcmp(keep, "0") != 0;
}

/* Makes a 0700 dir "$TMPDIR/testenv-<what>.XXXXXX" (or under /tmp) into out. */
int
testenv__make_dir(const char *what, char *out, size_t len)
{
    const char *tmp = getenv("TMPDIR");
    int n;

    if (tmp == NULL || *tmp == '\0') {
        tmp = "/tmp";
    }
    n = snprintf(out, len, "%s/testenv-%s.XXXXXX", tmp, what);
    if (n < 0 || (size_t)n >= len) {
        testenv__fail("temp dir path under %s is too long", tmp);
        return -1;
    }
    if (mkdtemp(out) == NULL) {
        testenv__fail("cannot create temp dir %s: %s", out, strerror(errno));
        out[0] = '\0';
        return -1;
    }
    return 0;
}

static int
testenv__rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0 && errno != ENOENT) {
        testenv__fail("cannot remove %s: %s", path, strerror(errno));
    }
    return 0;
}

/* rm -rf dir (unless TESTENV_KEEP is set); then dir is "". */
void
testenv__remove_dir(char *dir)
{
    if (dir[0] == '\0') {
        return;
    }
    if (testenv__keep()) {
        fprintf(stderr, "testenv: TESTENV_KEEP set: keeping %s\n", dir);
    } else {
        nftw(dir, testenv__rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    dir[0] = '\0';
}

int
testenv__path(char *out, size_t len, const char *dir, const char *name)
{
    int n = snprintf(out, len, "%s/%s", dir, name);

    if (n < 0 || (size_t)n >= len) {
        testenv__fail("path %s/%s is too long", dir, name);
        return -1;
    }
    return 0;
}

static long
testenv__file_size(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

/* Prints the last lines (up to 3 KB) of a log to stderr. */
static void
testenv__print_tail(const char *path)
{
    char buf[3072];
    FILE *f = fopen(path, "r");
    long size = testenv__file_size(path), from = size > 3000 ? size - 3000 : 0;
    size_t n;
    char *start = buf;

    if (f == NULL) {
        return;
    }
    fseek(f, from, SEEK_SET);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    if (from > 0 && strchr(buf, '\n') != NULL) {
        start = strchr(buf, '\n') + 1;
    }
    fprintf(stderr, "---- end of %s ----\n%s%s---- (%s) ----\n", path, start,
            n > 0 && buf[n - 1] != '\n' ? "\n" : "", path);
}

/* 1 when the log, from byte offset on, says an address was in use. */
static int
testenv__log_says_in_use(const char *path, long offset)
{
    FILE *f = fopen(path, "r");
    char line[2048];
    int found = 0;

    if (f == NULL) {
        return 0;
    }
    fseek(f, offset, SEEK_SET);
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        found = strstr(line, "in use") != NULL;
    }
    fclose(f);
    return found;
}

static void
testenv__describe_status(int status, char *out, size_t len)
{
    if (WIFEXITED(status)) {
        snprintf(out, len, "exited with %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        snprintf(out, len, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    } else {
        snprintf(out, len, "status 0x%x", (unsigned)status);
    }
}

/* ----------------------------------------------------- child registry */

#define REGISTRY_SIZE 128

/* Every child started and not yet reaped, for testenv_cleanup_on_exit. pid
 * is atomic so that a signal handler can read it. */
static struct {
    _Atomic pid_t pid;
    char what[32];
    char dir[PATH_MAX];
} registry[REGISTRY_SIZE];
static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;

static void
testenv__register(pid_t pid, const char *what, const char *dir)
{
    pthread_mutex_lock(&registry_mu);
    for (int i = 0; i < REGISTRY_SIZE; i++) {
        if (atomic_load(&registry[i].pid) == 0) {
            snprintf(registry[i].what, sizeof(registry[i].what), "%s", what);
            snprintf(registry[i].dir, sizeof(registry[i].dir), "%s", dir);
            atomic_store(&registry[i].pid, pid);
            break;
        }
    }
    pthread_mutex_unlock(&registry_mu);
}

void
testenv__unregister(pid_t pid)
{
    pthread_mutex_lock(&registry_mu);
    for (int i = 0; i < REGISTRY_SIZE; i++) {
        if (atomic_load(&registry[i].pid) == pid) {
            atomic_store(&registry[i].pid, 0);
        }
    }
    pthread_mutex_unlock(&registry_mu);
}

/* Async-signal-safe: SIGKILL to every registered child, then reap them. */
static void
testenv__kill_registered(void)
{
    for (int i = 0; i < REGISTRY_SIZE; i++) {
        pid_t pid = atomic_load(&registry[i].pid);
        if (pid > 0) {
            kill(pid, SIGKILL);
        }
    }
    for (int i = 0; i < REGISTRY_SIZE; i++) {
        pid_t pid = atomic_load(&registry[i].pid);
        if (pid > 0) {
            waitpid(pid, NULL, 0);
        }
    }
}

static void
testenv__at_exit(void)
{
    pthread_mutex_lock(&registry_mu);
    for (int i = 0; i < REGISTRY_SIZE; i++) {
        pid_t pid = atomic_load(&registry[i].pid);
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            atomic_store(&registry[i].pid, 0);
            fprintf(stderr, "testenv: killed %s (pid %d) left running at exit; files kept in %s\n",
                    registry[i].what, (int)pid, registry[i].dir);
        }
    }
    pthread_mutex_unlock(&registry_mu);
}

/*
 * SIGPIPE too: a test piped into `head` dies of it. The faults (SEGV, BUS,
 * FPE, ILL) are handled by returning with the old handler back in place: the
 * instruction faults again and the old handler (a sanitizer's, say) reports
 * the real place, not our raise.
 */
static const int cleanup_signals[] = {SIGINT,  SIGTERM, SIGHUP, SIGQUIT, SIGABRT,
                                      SIGPIPE, SIGSEGV, SIGBUS, SIGFPE,  SIGILL};
static struct sigaction cleanup_old[sizeof(cleanup_signals) / sizeof(cleanup_signals[0])];

static void
testenv__on_signal(int sig)
{
    testenv__kill_registered();
    for (size_t i = 0; i < sizeof(cleanup_signals) / sizeof(cleanup_signals[0]); i++) {
        if (cleanup_signals[i] == sig) {
            sigaction(sig, &cleanup_old[i], NULL);
        }
    }
    if (sig != SIGSEGV && sig != SIGBUS && sig != SIGFPE && sig != SIGILL) {
        raise(sig);
    }
}

void
testenv_cleanup_on_exit(void)
{
    static atomic_int installed;
    struct sigaction sa;

    if (atomic_exchange(&installed, 1) != 0) {
        return;
    }
    atexit(testenv__at_exit);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = testenv__on_signal;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(cleanup_signals) / sizeof(cleanup_signals[0]); i++) {
        sigaction(cleanup_signals[i], NULL, &cleanup_old[i]);
        if (cleanup_old[i].sa_handler != SIG_IGN) { /* an ignored signal stays ignored */
            sigaction(cleanup_signals[i], &sa, NULL);
        }
    }
#ifdef TESTENV_SANITIZER
    /* A sanitizer's report ends the process with _exit: atexit does not run. */
    __sanitizer_set_death_callback(testenv__kill_registered);
#endif
}

/* ------------------------------------------------------- group teardown */

static testenv_fixture_fn group_teardown;
static int group_teardown_failed;

static int
testenv__group_teardown(void **state)
{
    int rc = group_teardown != NULL ? group_teardown(state) : 0;

    if (rc != 0) {
        group_teardown_failed = 1;
    }
    return rc;
}

testenv_fixture_fn
testenv_group_teardown(testenv_fixture_fn teardown)
{
    group_teardown = teardown;
    return testenv__group_teardown;
}

int
testenv_group_result(int cmocka_result)
{
    if (group_teardown_failed) {
        fprintf(stderr, "testenv: the group teardown failed: a server did not exit cleanly"
                        " (its log is kept, named above)\n");
        return cmocka_result != 0 ? cmocka_result : 1;
    }
    return cmocka_result;
}

/* --------------------------------------------------------- processes */

static void
testenv__child_write(const char *s)
{
    ssize_t n = write(2, s, strlen(s));
    (void)n;
}

/*
 * In the forked child of a multi-threaded process: only async-signal-safe
 * calls until exec. Signals are all blocked on entry.
 */
static void
testenv__child_exec(const testenv__child_t *c)
{
    struct sigaction dfl;
    sigset_t none;
    int fd;

    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    for (int sig = 1; sig < NSIG; sig++) { /* an ignored SIGPIPE would survive exec */
        sigaction(sig, &dfl, NULL);
    }
    if ((fd = open("/dev/null", O_RDONLY)) >= 0) {
        dup2(fd, 0);
    }
    if ((fd = open(c->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644)) >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
    }
    /* No inherited sockets or pipes: a test's connection must not outlive it in a server. */
    if (close_range(3, ~0U, 0) != 0) {
        for (fd = 3; fd < c->max_fd; fd++) {
            close(fd);
        }
    }
    if (c->cwd != NULL && chdir(c->cwd) != 0) {
        testenv__child_write("testenv: cannot enter the working dir\n");
        _exit(127);
    }
    if (c->user != NULL && c->user->active &&
        (setgroups((size_t)c->user->ngroups, c->user->groups) != 0 || setgid(c->user->gid) != 0 ||
         setuid(c->user->uid) != 0)) {
        testenv__child_write("testenv: cannot switch to the server's user\n");
        _exit(127);
    }
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execvpe(c->path, c->argv, c->envp != NULL ? c->envp : environ);
    testenv__child_write("testenv: cannot run ");
    testenv__child_write(c->path);
    testenv__child_write("\n");
    _exit(127);
}

/* fork + exec with output appended to c->log_path. Returns the pid or -1. */
static pid_t
testenv__spawn(testenv__child_t *c)
{
    struct rlimit rl;
    sigset_t all, old;
    pid_t pid;
    int saved;

    c->max_fd = 4096;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < 65536) {
        c->max_fd = (int)rl.rlim_cur;
    }
    /* No handler of ours may run in the child before exec. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid = fork();
    if (pid == 0) {
        testenv__child_exec(c);
    }
    saved = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        testenv__fail("cannot fork for %s: %s", c->path, strerror(saved));
        return -1;
    }
    return pid;
}

/* Reaps pid if it has exited: 1 with *status, else 0. */
static int
testenv__reaped(pid_t pid, int *status)
{
    if (waitpid(pid, status, WNOHANG) == pid) {
        testenv__unregister(pid);
        return 1;
    }
    return 0;
}

/* Waits up to timeout_ms for pid to exit: 1 with *status, else 0. */
static int
testenv__wait_exit(pid_t pid, int timeout_ms, int *status)
{
    int64_t deadline = svc_now_mono_ms() + timeout_ms;

    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid || (r < 0 && errno == ECHILD)) {
            testenv__unregister(pid);
            if (r < 0) {
                *status = 0;
            }
            return 1;
        }
        if (svc_now_mono_ms() >= deadline) {
            return 0;
        }
        svc_sleep_ms(10);
    }
}

/* SIGKILL and reap. */
void
testenv__kill_wait(pid_t pid, int *status)
{
    int ignored;

    kill(pid, SIGKILL);
    if (waitpid(pid, status != NULL ? status : &ignored, 0) < 0 && status != NULL) {
        *status = 0;
    }
    testenv__unregister(pid);
}

/* Sends sig (and SIGCONT, in case it is paused) and waits up to STOP_MS;
 * then SIGKILL. Returns 1 when it exited in time, with *status. */
int
testenv__terminate(pid_t pid, int sig, int *status)
{
    kill(pid, sig);
    kill(pid, SIGCONT);
    if (testenv__wait_exit(pid, STOP_MS, status)) {
        return 1;
    }
    testenv__kill_wait(pid, status);
    return 0;
}

/*
 * Spawns a server and waits until ready(arg) says it serves. Returns its pid;
 * LAUNCH_PORT_TAKEN when it exited at once because its port was in use (not
 * reported: the caller may retry on another port); -1 on any other failure
 * (reported, with the log's tail).
 */
pid_t
testenv__launch(const testenv__launch_t *l)
{
    testenv__child_t child = l->child;
    long offset = testenv__file_size(child.log_path);
    int64_t deadline = svc_now_mono_ms() + l->timeout_ms;
    pid_t pid = testenv__spawn(&child);
    int status;
    char how[96];

    if (pid < 0) {
        return -1;
    }
    testenv__register(pid, l->what, l->dir);
    for (;;) {
        if (testenv__reaped(pid, &status)) {
            if (testenv__log_says_in_use(child.log_path, offset)) {
                return LAUNCH_PORT_TAKEN;
            }
            testenv__describe_status(status, how, sizeof(how));
            testenv__fail("%s %s before it was ready", l->what, how);
            testenv__print_tail(child.log_path);
            return -1;
        }
        if (l->ready(l->arg)) {
            return pid;
        }
        if (svc_now_mono_ms() >= deadline) {
            testenv__kill_wait(pid, NULL);
            testenv__fail("%s was not ready within %d s; killed it", l->what, l->timeout_ms / 1000);
            testenv__print_tail(child.log_path);
            return -1;
        }
        svc_sleep_ms(20);
    }
}

/* Runs a command to its end (up to timeout_ms). Returns 0 when it exits 0. */
int
testenv__run(testenv__child_t *c, const char *what, int timeout_ms)
{
    pid_t pid = testenv__spawn(c);
    int status = 0;
    char how[96];

    if (pid < 0) {
        return -1;
    }
    testenv__register(pid, what, c->cwd != NULL ? c->cwd : "");
    if (!testenv__wait_exit(pid, timeout_ms, &status)) {
        testenv__kill_wait(pid, NULL);
        testenv__fail("%s did not finish within %d s", what, timeout_ms / 1000);
        testenv__print_tail(c->log_path);
        return -1;
    }
    if (status != 0) {
        testenv__describe_status(status, how, sizeof(how));
        testenv__fail("%s %s", what, how);
        testenv__print_tail(c->log_path);
        return -1;
    }
    return 0;
}

/* --------------------------------------------------------------- ports */

int
testenv_free_port(void)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static unsigned seed;
    static int recent[64];
    static unsigned n_recent;

    pthread_mutex_lock(&mu);
    if (seed == 0) {
        seed = (unsigned)getpid() ^ (unsigned)time(NULL) ^ (unsigned)svc_now_mono_ms();
    }
    for (int attempt = 0; attempt < 1000; attempt++) {
        int port = 20000 + (int)(rand_r(&seed) % 12000), taken = 0, fd;
        struct sockaddr_in addr = {0};

        for (unsigned i = 0; i < 64 && i < n_recent; i++) {
            taken |= recent[i] == port;
        }
        if (taken || (fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
            continue;
        }
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addr.sin_port = htons((uint16_t)port);
        taken = bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0;
        close(fd);
        if (!taken) {
            recent[n_recent++ % 64] = port;
            pthread_mutex_unlock(&mu);
            return port;
        }
    }
    pthread_mutex_unlock(&mu);
    testenv__fail("no free port in 20000..31999 on 127.0.0.1");
    return -1;
}

/* ------------------------------------------------------------ services */

/* Copies binary, args and env into p (for restarts). */
static int
testenv__proc_store(testenv_proc_t *p, const char *binary, const char *const *args,
                    const char *const *env)
{
    size_t used = 0;

    if (snprintf(p->binary, sizeof(p->binary), "%s", binary) >= (int)sizeof(p->binary)) {
        testenv__fail("binary path too long: %s", binary);
        return -1;
    }
    p->n_args = p->n_env = 0;
    for (int list = 0; list < 2; list++) {
        const char *const *v = list == 0 ? args : env;
        int max = TESTENV_PROC_MAX_ENV;
        if (list == 0) {
            max = TESTENV_PROC_MAX_ARGS;
        }
        for (int i = 0; v != NULL && v[i] != NULL; i++) {
            size_t len = strlen(v[i]) + 1;
            if (i >= max || used + len > sizeof(p->strings)) {
                testenv__fail("too many or too long %s for %s (at most %d, %d bytes in all)",
                              list == 0 ? "arguments" : "environment entries", binary, max,
                              TESTENV_PROC_STRINGS);
                return -1;
            }
            if (list == 1 && strchr(v[i], '=') == NULL) {
                testenv__fail("environment entry without '=': %s", v[i]);
                return -1;
            }
            memcpy(p->strings + used, v[i], len);
            used += len;
            *(list == 0 ? &p->n_args : &p->n_env) += 1;
        }
    }
    return 0;
}

/* environ without the names env sets, then env; the array is malloc'ed
 * (the strings are not). */
static char **
testenv__merge_env(char **env, int n_env)
{
    size_t n_environ = 0, k = 0;
    char **out;

    while (environ[n_environ] != NULL) {
        n_environ++;
    }
    if ((out = calloc(n_environ + (size_t)n_env + 1, sizeof(*out))) == NULL) {
        testenv__fail("out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n_environ; i++) {
        int overridden = 0;
        for (int j = 0; j < n_env && !overridden; j++) {
            size_t name_len = (size_t)(strchr(env[j], '=') - env[j]) + 1;
            overridden = strncmp(environ[i], env[j], name_len) == 0;
        }
        if (!overridden) {
            out[k++] = environ[i];
        }
    }
    for (int j = 0; j < n_env; j++) {
        out[k++] = env[j];
    }
    return out;
}

static int
testenv__health_serving(const void *arg)
{
    const testenv_proc_t *p = arg;
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    svc_call_opts_t opts = {.timeout_ms = 1000};
    svc_client_t *client;
    svc_arena_t *arena;
    ProtobufCMessage *out;
    svc_err_t err;
    int serving = 0;

    if ((client = svc_client_get(p->addr, &err)) == NULL || (arena = svc_arena_create()) == NULL) {
        return 0;
    }
    req.service = "";
    if (svc_client_unary(client, "/grpc.health.v1.Health/Check", &req.base,
                         &grpc__health__v1__health_check_response__descriptor, arena, &out, &opts,
                         &err) == 0) {
        serving = ((Grpc__Health__V1__HealthCheckResponse *)out)->status ==
                  GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    }
    svc_arena_destroy(arena);
    return serving;
}

/* Makes the log's temp dir unless it still exists. */
static int
testenv__proc_log(testenv_proc_t *p)
{
    char dir[PATH_MAX], *slash;
    const char *base = strrchr(p->binary, '/');
    struct stat st;

    if (p->log_path[0] != '\0') {
        snprintf(dir, sizeof(dir), "%s", p->log_path);
        if ((slash = strrchr(dir, '/')) != NULL) {
            *slash = '\0';
        }
        if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) {
            return 0;
        }
    }
    if (testenv__make_dir("proc", dir, sizeof(dir)) != 0) {
        return -1;
    }
    base = base != NULL ? base + 1 : p->binary;
    if (snprintf(p->log_path, sizeof(p->log_path), "%s/%s.log", dir, base) >=
        (int)sizeof(p->log_path)) {
        testenv__fail("log path too long in %s", dir);
        p->log_path[0] = '\0';
        return -1;
    }
    return 0;
}

/* Starts the stored command on p->port and waits until SERVING. */
static pid_t
testenv__proc_launch(testenv_proc_t *p)
{
    char *argv[3 + TESTENV_PROC_MAX_ARGS + 1], *env[TESTENV_PROC_MAX_ENV];
    char *s = p->strings, dir[PATH_MAX], *slash, **envp;
    const char *base = strrchr(p->binary, '/');
    testenv__launch_t l = {
        base != NULL ? base + 1 : p->binary, dir, {0}, PROC_START_MS, testenv__health_serving, p};
    int argc = 0, n_env = 0;
    pid_t pid;

    snprintf(p->addr, sizeof(p->addr), "127.0.0.1:%d", p->port);
    argv[argc++] = p->binary;
    argv[argc++] = "--listen-addr";
    argv[argc++] = p->addr;
    for (int i = 0; i < p->n_args && i < TESTENV_PROC_MAX_ARGS; i++, s += strlen(s) + 1) {
        argv[argc++] = s;
    }
    argv[argc] = NULL;
    for (; n_env < p->n_env && n_env < TESTENV_PROC_MAX_ENV; s += strlen(s) + 1) {
        env[n_env++] = s;
    }
    snprintf(dir, sizeof(dir), "%s", p->log_path);
    if ((slash = strrchr(dir, '/')) != NULL) {
        *slash = '\0';
    }
    l.child.path = p->binary;
    l.child.argv = argv;
    l.child.log_path = p->log_path;
    if ((envp = testenv__merge_env(env, n_env)) == NULL) {
        return -1;
    }
    l.child.envp = envp;
    pid = testenv__launch(&l);
    free(envp);
    return pid;
}

int
testenv_proc_start(testenv_proc_t *p, const char *binary, const char *const *extra_args,
                   const char *const *env_kv)
{
    int pick = p->port == 0;
    pid_t pid = LAUNCH_PORT_TAKEN;

    if (testenv__proc_store(p, binary, extra_args, env_kv) != 0 || testenv__proc_log(p) != 0) {
        return -1;
    }
    p->exited = 0;
    for (int attempt = 0; attempt < PORT_ATTEMPTS && pid == LAUNCH_PORT_TAKEN; attempt++) {
        if (pick && (p->port = testenv_free_port()) < 0) {
            return -1;
        }
        pid = testenv__proc_launch(p);
        if (pid == LAUNCH_PORT_TAKEN && !pick) {
            break;
        }
    }
    if (pid < 0) {
        if (pid == LAUNCH_PORT_TAKEN) {
            testenv__fail("%s: port %d is in use", binary, p->port);
        }
        fprintf(stderr, "testenv: log kept at %s\n", p->log_path);
        return -1;
    }
    p->pid = pid;
    return 0;
}

static void
testenv__proc_remove_log(testenv_proc_t *p)
{
    char *slash = strrchr(p->log_path, '/');

    if (slash != NULL) {
        *slash = '\0';
        testenv__remove_dir(p->log_path);
    }
    p->log_path[0] = '\0';
}

/* After the process ended with status: removes the log when it was clean. */
static void
testenv__proc_ended(testenv_proc_t *p, int status)
{
    char how[96];

    p->pid = 0;
    p->exited = 0;
    if (status != 0) {
        testenv__describe_status(status, how, sizeof(how));
        fprintf(stderr, "testenv: %s %s; log kept at %s\n", p->binary, how, p->log_path);
        return;
    }
    testenv__proc_remove_log(p);
}

int
testenv_proc_stop(testenv_proc_t *p)
{
    int status = 0;

    if (p->pid <= 0 && p->exited) {
        status = p->status;
        testenv__proc_ended(p, status);
        return status;
    }
    if (p->pid <= 0) { /* killed, or never started: only the log is left */
        testenv__fail("%s is not running", p->binary[0] != '\0' ? p->binary : "process");
        testenv__proc_remove_log(p);
        return -1;
    }
    if (!testenv__terminate(p->pid, SIGTERM, &status)) {
        testenv__fail("%s did not exit within %d s of SIGTERM; killed it; log kept at %s",
                      p->binary, STOP_MS / 1000, p->log_path);
        p->pid = 0;
        return -1;
    }
    testenv__proc_ended(p, status);
    return status;
}

int
testenv_proc_kill(testenv_proc_t *p)
{
    if (p->pid <= 0) {
        testenv__fail("%s is not running", p->binary[0] != '\0' ? p->binary : "process");
        return -1;
    }
    testenv__kill_wait(p->pid, NULL);
    p->pid = 0;
    p->exited = 0;
    return 0;
}

int
testenv_proc_signal(testenv_proc_t *p, int sig)
{
    if (p->pid <= 0 || kill(p->pid, sig) != 0) {
        testenv__fail("cannot signal %s: not running",
                      p->binary[0] != '\0' ? p->binary : "process");
        return -1;
    }
    return 0;
}

int
testenv_proc_pause(testenv_proc_t *p)
{
    /* Polled in /proc, not waited for: waitpid could reap an exit that stop must report. */
    if (testenv_proc_signal(p, SIGSTOP) != 0 || testenv_proc_wait_stopped(p, 5000) != 0) {
        return -1;
    }
    return 0;
}

int
testenv_proc_resume(testenv_proc_t *p)
{
    return testenv_proc_signal(p, SIGCONT);
}

int
testenv_proc_restart(testenv_proc_t *p)
{
    pid_t pid;

    if (p->binary[0] == '\0' || p->port <= 0) {
        testenv__fail("process was never started");
        return -1;
    }
    if (p->pid > 0) {
        testenv_proc_kill(p);
    }
    p->exited = 0;
    if (testenv__proc_log(p) != 0) {
        return -1;
    }
    pid = testenv__proc_launch(p);
    if (pid < 0) {
        if (pid == LAUNCH_PORT_TAKEN) {
            testenv__fail("%s: port %d is now taken by another program", p->binary, p->port);
        }
        return -1;
    }
    p->pid = pid;
    return 0;
}

int
testenv_proc_alive(testenv_proc_t *p)
{
    int status;

    if (p->pid <= 0) {
        return 0;
    }
    if (testenv__reaped(p->pid, &status)) {
        p->pid = 0;
        p->exited = 1;
        p->status = status;
        return 0;
    }
    return 1;
}

/* The state letter of /proc/<pid>/stat ('R', 'S', 'T', 'Z'...), or 0 when there is none. */
static char
testenv__proc_state(pid_t pid)
{
    char path[64], buf[512], *p, state = 0;
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if ((f = fopen(path, "r")) == NULL) {
        return 0;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* "pid (comm) S ...": comm may hold spaces and parentheses, so look after the last ')'. */
    if ((p = strrchr(buf, ')')) == NULL || sscanf(p + 1, " %c", &state) != 1) {
        return 0;
    }
    return state;
}

int
testenv_proc_wait_stopped(testenv_proc_t *p, int timeout_ms)
{
    int64_t deadline = svc_now_mono_ms() + timeout_ms;

    if (p->pid <= 0) {
        testenv__fail("%s is not running", p->binary[0] != '\0' ? p->binary : "process");
        return -1;
    }
    /*
     * /proc rather than waitpid(WUNTRACED): waitpid would reap the process if
     * it exited meanwhile and take the status testenv_proc_stop reports. A
     * zombie ('Z') has exited and will never stop.
     */
    for (;;) {
        char state = testenv__proc_state(p->pid);
        if (state == 'T' || state == 't') {
            return 0;
        }
        if (state == 0 || state == 'Z' || state == 'X') {
            testenv__fail("%s exited instead of stopping", p->binary);
            return -1;
        }
        if (svc_now_mono_ms() >= deadline) {
            testenv__fail("%s was not stopped within %d ms", p->binary, timeout_ms);
            return -1;
        }
        svc_sleep_ms(10);
    }
}
