/*
 * failpoint.h: named places where a test can stop a process at the worst
 * moment (as etcd and TiKV do). Only builds configured with SVC_FAILPOINTS
 * have them; elsewhere svc_failpoint is always false.
 */
#ifndef SVC_FAILPOINT_H
#define SVC_FAILPOINT_H

#include <stdbool.h>

/* True when this build has failpoints and SVC_FAILPOINT in the environment names name. */
bool svc_failpoint(const char *name);

/* Kills the process with SIGKILL at failpoint name, when it is armed: a crash, no clean-up. */
void svc_failpoint_crash(const char *name);

/*
 * Stops the whole process with SIGSTOP at failpoint name, when it is armed: a
 * pause as long as the test likes (a GC pause, a VM migration), which it ends
 * with SIGCONT. Every thread stops, so the process serves nothing meanwhile.
 */
void svc_failpoint_pause(const char *name);

#endif
