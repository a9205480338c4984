#pragma once
/* The CPU backend's worker threads: started when the device opens and kept
 * until it closes, so that a run allocates nothing and starts no thread
 * (an OpenMP runtime allocates its thread team inside the first parallel
 * region and exits the process when that fails).
 *
 * A job is fn(arg, team) on n threads: the caller is thread 0 and n − 1
 * workers join it. Jobs of one pool run one at a time; a caller that finds
 * the pool busy waits for it (the job would use the same cores). A job of
 * one thread runs on the caller without touching the pool, so small calls
 * from many threads run side by side. A waiting thread (an idle worker,
 * the caller at the end of a job, a barrier) polls briefly, then polls
 * yielding its core for up to a millisecond (a decode step follows the
 * last within microseconds; with more runnable threads than cores, the
 * thread it waits for may need its core), then sleeps. */
#include <stdatomic.h>
#include <stdint.h>

#include "error.h"

typedef struct xattn_cpu_pool xattn_cpu_pool;

/* What a job's thread sees: its index and the team's size. */
typedef struct xattn_cpu_team {
    int tid;      /* 0 (the caller) .. nthreads − 1 */
    int nthreads; /* threads running this job */
    xattn_cpu_pool *pool;
} xattn_cpu_team;

typedef void (*xattn_cpu_job_fn)(void *arg, const xattn_cpu_team *team);

/* Start threads − 1 workers (threads ≥ 1). Errors: XATTN_ERR_OUT_OF_MEMORY
 * when the memory or a thread cannot be had (the message says which).
 * Thread-safety: safe. */
xattn_status xattn_cpu_pool_create(int32_t threads, xattn_cpu_pool **out);

/* Stop and join the workers, free the pool. Accepts NULL. Not while a job
 * runs. */
void xattn_cpu_pool_destroy(xattn_cpu_pool *pool);

/* Threads a job of the pool can have (workers + the caller). */
int32_t xattn_cpu_pool_threads(const xattn_cpu_pool *pool);

/* Run fn on min(nthreads, pool threads) threads, the caller among them, and
 * return when all have finished. Allocates nothing. In a child process
 * after fork() (the workers stayed in the parent) the job runs on the
 * caller alone. Thread-safety: safe; jobs of one pool are serialised. */
void xattn_cpu_pool_run(xattn_cpu_pool *pool, int nthreads, xattn_cpu_job_fn fn, void *arg);

/* Wait until every thread of the job has reached this barrier. Every
 * thread of the team must call it the same number of times. */
void xattn_cpu_team_barrier(const xattn_cpu_team *team);

/* Shared counter for dynamic scheduling: each take returns the next
 * index, 0, 1, 2, ..., in increasing order on every thread. Set to 0
 * before the job starts; alone on its cache line. */
typedef struct xattn_cpu_counter {
    _Alignas(64) atomic_int_fast64_t next;
    char pad[64 - sizeof(atomic_int_fast64_t)];
} xattn_cpu_counter;

static inline void xattn_cpu_counter_reset(xattn_cpu_counter *c)
{
    atomic_store_explicit(&c->next, 0, memory_order_relaxed);
}

static inline int64_t xattn_cpu_counter_take(xattn_cpu_counter *c)
{
    return (int64_t)atomic_fetch_add_explicit(&c->next, 1, memory_order_relaxed);
}

/* Static share of n items for a thread: [*begin, *end), contiguous chunks
 * in thread order. */
static inline void xattn_cpu_team_share(const xattn_cpu_team *team, int64_t n, int64_t *begin,
                                        int64_t *end)
{
    *begin = n * team->tid / team->nthreads;
    *end = n * (team->tid + 1) / team->nthreads;
}
