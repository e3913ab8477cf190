/*
 * timer.h: one-shot timers without a thread per timer. One thread keeps a
 * min-heap of deadlines and hands each expired timer's callback to the worker
 * pool. Used to end parked calls (lock waiters, the test service's slow call).
 */
#ifndef SVC_TIMER_H
#define SVC_TIMER_H

#include <stdbool.h>
#include <stdint.h>

#include "svc/err.h"
#include "svc/pool.h"

typedef struct svc_timers svc_timers_t;

/* Caller-owned timer handle: keep it alive until its callback ran or cancel returned true. */
typedef struct svc_timer {
    int64_t due_ms; /* monotonic */
    svc_task_fn fn;
    void *arg;
    int heap_index; /* -1 when not scheduled */
} svc_timer_t;

/* Callbacks run on pool. Returns NULL and sets err on failure. */
svc_timers_t *svc_timers_create(svc_pool_t *pool, svc_err_t *err);
/* Stops the timer thread; pending timers never fire. NULL is a no-op. */
void svc_timers_destroy(svc_timers_t *timers);

/* Schedules fn(arg) in delay_ms milliseconds (<= 0: as soon as possible). */
void svc_timer_start(svc_timers_t *timers, svc_timer_t *timer, int64_t delay_ms, svc_task_fn fn,
                     void *arg);

/*
 * Removes a scheduled timer. Returns true when it was removed before firing
 * (fn will not run), false when it already fired or was never started.
 */
bool svc_timer_cancel(svc_timers_t *timers, svc_timer_t *timer);

/* Monotonic milliseconds, the clock timers use. */
int64_t svc_now_mono_ms(void);
/* Unix milliseconds. */
int64_t svc_now_unix_ms(void);
/* Sleeps ms milliseconds (<= 0: not at all), resuming after a signal. */
void svc_sleep_ms(int64_t ms);

#endif
