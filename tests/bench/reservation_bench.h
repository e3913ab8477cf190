/*
 * reservation_bench.h: what reservation-bench's own files share (not an API
 * outside this tool): its settings, the seats and the users with accounts
 * it makes through the services' public APIs, one HoldSeats call on a
 * completion queue, and answers counted by status. reservation_bench.c
 * holds the storm against its direct-SQL twin and the distinct seats;
 * reservation_curve.c the storm scale curve. Single-threaded unless said.
 */
#ifndef RESERVATION_BENCH_H
#define RESERVATION_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>

#include "bench_common.h"
#include "svc/client.h"
#include "svc/err.h"

#define RBENCH_MAX_CHANNELS 64
#define RBENCH_MAX_SCALE 8 /* storm sizes on the curve */

/* Processes whose CPU time (and for the services, memory) is reported. */
enum {
    RBENCH_PROC_BENCH,
    RBENCH_PROC_RSV,
    RBENCH_PROC_LOCK,
    RBENCH_PROC_BAL,
    RBENCH_PROC_REDIS,
    RBENCH_PROC_PG,
    RBENCH_N_PROCS
};
enum { RBENCH_CPU_MACHINE = RBENCH_N_PROCS, RBENCH_CPU_IRQ, RBENCH_N_CPU };

/* The parts of a run (--parts). */
enum { RBENCH_PART_STORM = 1, RBENCH_PART_DISTINCT = 2, RBENCH_PART_CURVE = 4 };

typedef struct {
    const char *rsv_addr, *balance_addr, *database_url, *admin_token;
    const char *curve_file; /* the curve's data, one line per storm; NULL: none */
    int64_t seconds, conc, users, storms, channels, sql_storm_conns, sql_pool, max_rate;
    int64_t distinct_users, hall_seats;
    int parts;                       /* RBENCH_PART_* */
    int64_t scale[RBENCH_MAX_SCALE]; /* the curve's storm sizes, ascending */
    int n_scale;
    int64_t pids[RBENCH_N_PROCS];
    svc_client_t *client; /* CreateConcert */
    grpc_channel *channels_v[RBENCH_MAX_CHANNELS];
    grpc_channel *balance_ch; /* TopUp, to make accounts */
    int64_t next_user;        /* user ids are never reused in one run */
} rbench_cfg_t;

/* calloc that exits the tool when out of memory; n may be 0. */
void *rbench_xcalloc(size_t n, size_t size);

/* Seats 1..seat_count of schedules ids[0..n-1], handed out once each, in order. */
typedef struct {
    int64_t *ids;
    int n;
    int seat_count;
    int64_t next;
} rbench_seat_pool_t;

/*
 * Creates n_schedules fresh schedules of seat_count seats through
 * CreateConcert and returns them; the caller frees ids. Exits when
 * reservation-svc refuses.
 */
rbench_seat_pool_t rbench_create_seats(rbench_cfg_t *cfg, const char *title, int n_schedules,
                                       int seat_count);

/*
 * Takes the next n user ids and gives each a balance-svc account (TopUp),
 * outside any timed part; returns the first. *secs (may be NULL) gets the
 * time it took. Exits when an account cannot be made.
 */
int64_t rbench_users_with_accounts(rbench_cfg_t *cfg, int64_t n, double *secs);

/* One HoldSeats call in flight on a completion queue; t0 is when it was started. */
typedef struct {
    bench_call_t call;
    int64_t t0;
} rbench_hold_t;

/* Creates h's HoldSeats of one seat on ch and cq and packs it; exits when gRPC refuses. */
void rbench_hold_prepare(rbench_hold_t *h, grpc_channel *ch, grpc_completion_queue *cq,
                         int64_t user, int64_t schedule_id, int32_t seat);

/* Sends h's call, tagged tag, and sets h->t0; exits when gRPC refuses. */
void rbench_hold_start(rbench_hold_t *h, void *tag);

/*
 * Frees what h's finished call held and returns its status (UNAVAILABLE when
 * the batch failed); msg gets the details of a failure.
 */
svc_status_t rbench_hold_finish(rbench_hold_t *h, bool success, char *msg, size_t msg_len);

/* Answers counted by status (index SVC_OK.. ), and the first one neither OK nor refused. */
typedef struct {
    int64_t n;
    int64_t codes[BENCH_N_CODES];
    char first_err[256];
} rbench_outcome_t;

/* Counts code; keeps msg when it is the first answer neither OK nor FAILED_PRECONDITION. */
void rbench_outcome_add(rbench_outcome_t *o, svc_status_t code, const char *msg);

/*
 * The scale curve (reservation_curve.c): for each of cfg->scale[], a storm
 * of that many users on one seat and one on a hall of cfg->hall_seats
 * seats; prints the table and the targets, writes cfg->curve_file.
 */
void rbench_curve_run(rbench_cfg_t *cfg);

#endif
