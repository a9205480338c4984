/* The CPU backend's worker threads (cpu_pool.h). */
#include "cpu_pool.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum {
    /* A waiting thread first polls its word with a pause between for this
     * long: only a few microseconds, because when the thread it waits for
     * shares its core (more runnable threads than cores, as on a loaded
     * machine) every moment spent polling delays that thread (measured: a
     * 1024-key decode step took 35 µs at the median either way, but with
     * 0.6 ms of pure polling one in a hundred took 8 ms, and with 50 µs
     * the median was 170 µs)... */
    WAIT_PAUSE_NS = 2 * 1000,
    /* ...then polls and yields its core between polls until this long
     * after it started waiting, so that calls a little further apart
     * (decode steps) still find the workers awake, while a thread it waits
     * for that shares its core (more runnable threads than cores) gets to
     * run instead of waiting for the end of a time slice... */
    WAIT_YIELD_NS = 1000 * 1000,
    /* ...checking the clock every this many polls... */
    WAIT_CLOCK_EVERY = 16,
    /* ...and then sleeps until woken. */
    CACHE_LINE = 64,
};

typedef struct worker_start {
    struct xattn_cpu_pool *pool;
    int tid;
} worker_start;

struct xattn_cpu_pool {
    int32_t threads;     /* workers + the caller */
    pid_t pid;           /* the process the workers live in */
    pthread_t *workers;  /* threads − 1 */
    struct worker_start *starts; /* what each worker is told at start */
    int started;         /* workers running */
    pthread_mutex_t run_lock; /* one job at a time */

    /* Sleeping: a waiter that stops spinning counts itself in sleepers and
     * waits on wake; whoever changes a word wakes them if there are any. */
    pthread_mutex_t sleep_lock;
    pthread_cond_t wake;
    _Alignas(CACHE_LINE) atomic_int sleepers;

    /* The job, published by incrementing job_gen; stop ends the workers. */
    xattn_cpu_job_fn fn;
    void *arg;
    int nthreads;
    int stop;
    _Alignas(CACHE_LINE) atomic_uint job_gen;
    /* Workers that have seen the job and, if in it, finished it: the
     * caller returns (and the next job may overwrite the fields above)
     * only when all have. */
    _Alignas(CACHE_LINE) atomic_uint checked_in;
    /* The barrier: arrivals, and a generation that moves when all arrived. */
    _Alignas(CACHE_LINE) atomic_uint bar_count;
    _Alignas(CACHE_LINE) atomic_uint bar_gen;
};


static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Return once *word differs from old: spin, spin yielding, then sleep. */
static void wait_change(xattn_cpu_pool *p, atomic_uint *word, unsigned old)
{
    const int64_t start = now_ns();
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(word, memory_order_acquire) != old) return;
        cpu_relax();
        if (i % WAIT_CLOCK_EVERY == 0 && now_ns() - start >= WAIT_PAUSE_NS) break;
    }
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(word, memory_order_acquire) != old) return;
        sched_yield();
        if (i % WAIT_CLOCK_EVERY == 0 && now_ns() - start >= WAIT_YIELD_NS) break;
    }
    pthread_mutex_lock(&p->sleep_lock);
    /* Counted before the word is read again (both sequentially
     * consistent), so a waker that changed the word either sees a sleeper
     * or was seen to have changed it. */
    atomic_fetch_add(&p->sleepers, 1);
    while (atomic_load(word) == old) pthread_cond_wait(&p->wake, &p->sleep_lock);
    atomic_fetch_sub(&p->sleepers, 1);
    pthread_mutex_unlock(&p->sleep_lock);
}

/* After a (sequentially consistent) change of a word others wait on. */
static void wake_sleepers(xattn_cpu_pool *p)
{
    if (atomic_load(&p->sleepers) == 0) return;
    pthread_mutex_lock(&p->sleep_lock);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->sleep_lock);
}

static void *worker_main(void *v)
{
    worker_start *w = v;
    xattn_cpu_pool *p = w->pool;
    const int tid = w->tid;
    unsigned seen = 0;
    for (;;) {
        wait_change(p, &p->job_gen, seen);
        seen++; /* the caller waits for every worker: jobs never skip one */
        if (p->stop) return NULL;
        if (tid < p->nthreads) {
            const xattn_cpu_team team = {tid, p->nthreads, p};
            p->fn(p->arg, &team);
        }
        atomic_fetch_add(&p->checked_in, 1);
        wake_sleepers(p);
    }
}

/* Stop the started workers and free everything. */
static void pool_free(xattn_cpu_pool *p)
{
    if (p->started) {
        p->stop = 1;
        atomic_fetch_add(&p->job_gen, 1);
        wake_sleepers(p);
        for (int i = 0; i < p->started; i++) pthread_join(p->workers[i], NULL);
    }
    free(p->workers);
    free(p->starts);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->sleep_lock);
    pthread_mutex_destroy(&p->run_lock);
    free(p);
}

xattn_status xattn_cpu_pool_create(int32_t threads, xattn_cpu_pool **out)
{
    if (threads < 1) threads = 1;
    const size_t bytes = (sizeof(xattn_cpu_pool) + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE;
    xattn_cpu_pool *p = aligned_alloc(CACHE_LINE, bytes);
    if (!p) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "cpu: out of memory for the threads");
    memset(p, 0, bytes);
    p->threads = threads;
    p->pid = getpid();
    pthread_mutex_init(&p->run_lock, NULL);
    pthread_mutex_init(&p->sleep_lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    const size_t workers = (size_t)threads - 1;
    if (workers && (!(p->workers = calloc(workers, sizeof *p->workers)) ||
                    !(p->starts = calloc(workers, sizeof *p->starts)))) {
        pool_free(p);
        return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "cpu: out of memory for %d worker threads",
                           (int)workers);
    }

    /* Workers take no signals: the application's threads handle them. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = 0;
    for (size_t i = 0; i < workers && !err; i++) {
        p->starts[i] = (worker_start){p, (int)i + 1};
        err = pthread_create(&p->workers[i], NULL, worker_main, &p->starts[i]);
        if (!err) {
            p->started++;
            (void)pthread_setname_np(p->workers[i], "xattn-cpu");
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        const int started = p->started;
        pool_free(p);
        return xattn_error(XATTN_ERR_OUT_OF_MEMORY,
                           "cpu: cannot start worker thread %d of %d: %s (options.num_threads "
                           "asks for fewer)",
                           started + 1, (int)workers, strerror(err));
    }
    *out = p;
    return XATTN_OK;
}

void xattn_cpu_pool_destroy(xattn_cpu_pool *pool)
{
    if (pool) pool_free(pool);
}

int32_t xattn_cpu_pool_threads(const xattn_cpu_pool *pool) { return pool->threads; }

void xattn_cpu_pool_run(xattn_cpu_pool *pool, int nthreads, xattn_cpu_job_fn fn, void *arg)
{
    if (nthreads > pool->threads) nthreads = pool->threads;
    /* One thread, or a child of fork() (whose copy of the pool has no
     * workers): the caller alone, without the pool's locks. */
    if (nthreads <= 1 || getpid() != pool->pid) {
        const xattn_cpu_team team = {0, 1, pool};
        fn(arg, &team);
        return;
    }
    pthread_mutex_lock(&pool->run_lock);
    pool->fn = fn;
    pool->arg = arg;
    pool->nthreads = nthreads;
    atomic_store(&pool->checked_in, 0);
    atomic_store(&pool->bar_count, 0);
    atomic_fetch_add(&pool->job_gen, 1); /* publishes the fields above */
    wake_sleepers(pool);

    const xattn_cpu_team team = {0, nthreads, pool};
    fn(arg, &team);

    const unsigned all = (unsigned)pool->threads - 1;
    for (unsigned n; (n = atomic_load_explicit(&pool->checked_in, memory_order_acquire)) != all;)
        wait_change(pool, &pool->checked_in, n);
    pthread_mutex_unlock(&pool->run_lock);
}

void xattn_cpu_team_barrier(const xattn_cpu_team *team)
{
    if (team->nthreads <= 1) return;
    xattn_cpu_pool *p = team->pool;
    const unsigned gen = atomic_load(&p->bar_gen);
    if (atomic_fetch_add(&p->bar_count, 1) == (unsigned)team->nthreads - 1) {
        /* the last to arrive: reset for the next barrier, then release */
        atomic_store(&p->bar_count, 0);
        atomic_fetch_add(&p->bar_gen, 1);
        wake_sleepers(p);
    } else {
        wait_change(p, &p->bar_gen, gen);
    }
}
