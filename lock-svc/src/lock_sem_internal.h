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

struct lock_sem {
    lock_store_t *store;
    const lock_limits_t *limits;
    pthread_mutex_t mu; /* guards stopping and the timers' hash */
    bool stopping;
    struct sem_timer **timers_by_name; /* N_BUCKETS chains */
    svc_pool_t *pool;
    svc_timers_t *timers;
};

#endif
