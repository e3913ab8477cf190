/*
 * lock_sem_internal.h: what lock_sem's files share: the semaphores' state
 * in this process. Not for the rest of lock-svc.
 */
#ifndef LOCK_SEM_INTERNAL_H
#define LOCK_SEM_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>

#include "lock_sem.h"
#include "svc/pool.h"
#include "svc/timer.h"

struct sem_timer;
struct sem_watch;

struct lock_sem {
    lock_store_t *store;
    const lock_limits_t *limits;
    pthread_mutex_t mu; /* guards stopping and the timers' hash */
    bool stopping;
    struct sem_timer **timers_by_name; /* N_BUCKETS chains */
    svc_pool_t *pool;
    svc_timers_t *timers;
    struct sem_watch *watch; /* lock_sem_watch.c's */
};

/* lock_sem_watch.c: starts the log reader; stops it (before the store goes); frees. */
int lock_sem_watch_init(lock_sem_t *sem, svc_err_t *err);
void lock_sem_watch_stop(lock_sem_t *sem);
/* Ends every Watch call with UNAVAILABLE and refuses new ones (shutdown begins). */
void lock_sem_watch_drain(lock_sem_t *sem);
void lock_sem_watch_destroy(lock_sem_t *sem);

#endif
