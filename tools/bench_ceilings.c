/* Host ceilings for `xattn bench`: an FMA loop for FLOP/s and streaming
 * read and copy for bytes/s, on all OpenMP threads.
 *
 * The FMA loop is portable C over GCC/Clang vector extensions, compiled
 * once per ISA with target attributes and chosen at run time (the widest the
 * CPU has), so one binary measures any x86-64 correctly and other
 * architectures through the portable version. */
#include "bench_ceilings.h"
#include "ceilings.h"

#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__linux__)
#  include <sys/mman.h>
#endif

/* One repeat of the FMA loop lasts about this long, so timer resolution
 * and the OpenMP fork/join do not show in the rate. */
#define CEILING_TARGET_SECONDS 0.1
/* The calibration call of the FMA loop grows until it lasts this long. */
#define CALIBRATION_SECONDS 0.01
#define CALIBRATION_START_ITERS 1024
#define CALIBRATION_TRIES 3
#define FLOPS_PER_FMA 2.0

const char *xattn_bench_build_note(void)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    return "built with a sanitizer: every rate here is far below the machine's";
#elif !defined(__OPTIMIZE__)
    return "built without optimisation: every rate here is far below the machine's";
#else
    return NULL;
#endif
}

double xattn_bench_now(void) { return xattn_clock_seconds(); }

double xattn_bench_median(double *v, int n) { return xattn_sorted_median(v, n); }

/* ---- FMA loop ----------------------------------------------------------- */

/* NACC independent accumulators of LANES floats each: enough to cover the
 * FMA latency times the FMA ports, few enough to stay in registers (32 zmm,
 * 16 ymm/xmm). The lane loop of NAME##_fma is what the compiler turns into
 * one vector FMA; FMA_OP says how one lane is computed. */
#define DEFINE_FMA_KERNEL(NAME, ATTR, LANES, NACC, FMA_OP)                     \
    typedef float NAME##_vec __attribute__((vector_size((LANES) * 4)));        \
    ATTR static inline NAME##_vec NAME##_fma(NAME##_vec a, NAME##_vec b,       \
                                             NAME##_vec c)                     \
    {                                                                          \
        NAME##_vec r;                                                          \
        _Pragma("GCC unroll 64") for (int l = 0; l < (LANES); l++)             \
            r[l] = FMA_OP(a[l], b[l], c[l]);                                   \
        return r;                                                              \
    }                                                                          \
    ATTR static float NAME(int64_t iters, float seed)                          \
    {                                                                          \
        NAME##_vec acc[NACC], x, y;                                            \
        for (int l = 0; l < (LANES); l++) {                                    \
            x[l] = 0.999999f; /* |x| < 1 keeps acc finite and normal */        \
            y[l] = seed * 1e-3f;                                               \
        }                                                                      \
        for (int k = 0; k < (NACC); k++)                                       \
            for (int l = 0; l < (LANES); l++)                                  \
                acc[k][l] = seed + (float)(k * (LANES) + l) * 1e-6f;           \
        for (int64_t i = 0; i < iters; i++)                                    \
            _Pragma("GCC unroll 64") for (int k = 0; k < (NACC); k++)          \
                acc[k] = NAME##_fma(acc[k], x, y);                             \
        NAME##_vec s = acc[0];                                                 \
        for (int k = 1; k < (NACC); k++) s += acc[k];                          \
        float r = 0.0f;                                                        \
        for (int l = 0; l < (LANES); l++) r += s[l];                           \
        return r;                                                              \
    }

#define FMA_FUSED(a, b, c) __builtin_fmaf((a), (b), (c))
#define FMA_MUL_ADD(a, b, c) ((a) * (b) + (c))

#if defined(__x86_64__) || defined(__i386__)
#  define HAVE_X86_VARIANTS 1
DEFINE_FMA_KERNEL(fma_avx512f, __attribute__((target("avx512f"))), 16, 24, FMA_FUSED)
DEFINE_FMA_KERNEL(fma_avx2, __attribute__((target("avx2,fma"))), 8, 12, FMA_FUSED)
#endif

/* Portable version: fused where the target has a fast fmaf (AArch64,
 * POWER, ...), a multiply and an add otherwise (2 FLOPs either way). */
#if defined(__FP_FAST_FMAF)
DEFINE_FMA_KERNEL(fma_generic, , 4, 8, FMA_FUSED)
#  define GENERIC_FMA_NAME "fma"
#else
DEFINE_FMA_KERNEL(fma_generic, , 4, 8, FMA_MUL_ADD)
#  define GENERIC_FMA_NAME "mul+add"
#endif

typedef struct fma_variant {
    const char *isa;
    int lanes, accumulators;
    float (*fn)(int64_t iters, float seed);
} fma_variant;

static fma_variant pick_fma_variant(void)
{
#ifdef HAVE_X86_VARIANTS
    if (__builtin_cpu_supports("avx512f"))
        return (fma_variant){"avx512f", 16, 24, fma_avx512f};
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return (fma_variant){"avx2+fma", 8, 12, fma_avx2};
#endif
    return (fma_variant){"portable C " GENERIC_FMA_NAME, 4, 8, fma_generic};
}

/* Run fn(iters) on every thread at once; returns wall seconds. */
static double run_fma_parallel(const fma_variant *v, int threads, int64_t iters,
                               float *check)
{
    float sum = 0.0f;
    double t0 = xattn_bench_now();
#pragma omp parallel num_threads(threads) reduction(+ : sum)
    sum += v->fn(iters, 1.0f + 1e-3f * (float)omp_get_thread_num());
    double t = xattn_bench_now() - t0;
    *check += sum;
    return t;
}

void xattn_bench_flops_f32(int threads, int repeats, xattn_bench_rate *out,
                           xattn_bench_progress_fn progress, void *user)
{
    memset(out, 0, sizeof *out);
    if (threads < 1) threads = omp_get_max_threads();
    if (repeats < 1) repeats = 1;
    fma_variant v = pick_fma_variant();
    float check = 0.0f;

    /* Calibrate on this thread alone, so that other load on the machine
     * (a preempted OpenMP thread) cannot shrink the work of a repeat to
     * nothing: grow iters until one call is long enough to time, then take
     * the fastest of a few calls as the cost of the loop. */
    int64_t iters = CALIBRATION_START_ITERS;
    double t;
    for (;;) {
        double t0 = xattn_bench_now();
        check += v.fn(iters, 1.0f);
        t = xattn_bench_now() - t0;
        if (t >= CALIBRATION_SECONDS) break;
        iters *= 2;
    }
    for (int i = 0; i < CALIBRATION_TRIES; i++) {
        double t0 = xattn_bench_now();
        check += v.fn(iters, 1.0f);
        double ti = xattn_bench_now() - t0;
        if (ti < t) t = ti;
    }
    iters = (int64_t)((double)iters * CEILING_TARGET_SECONDS / t) + 1;
    run_fma_parallel(&v, threads, iters / 8 + 1, &check); /* start the pool */

    double flop = FLOPS_PER_FMA * (double)iters * v.accumulators * v.lanes * threads;
    double *secs = malloc((size_t)repeats * sizeof *secs);
    if (!secs) {
        snprintf(out->method, sizeof out->method, "out of memory");
        return;
    }
    double best = 0.0;
    for (int r = 0; r < repeats; r++) {
        secs[r] = run_fma_parallel(&v, threads, iters, &check);
        if (flop / secs[r] > best) best = flop / secs[r];
        if (progress) progress("ceiling: FLOP/s", r + 1, repeats, user);
    }
    out->seconds = xattn_bench_median(secs, repeats);
    out->rate = flop / out->seconds;
    out->best = best;
    out->repeats = repeats;
    out->threads = threads;
    snprintf(out->method, sizeof out->method, "f32 FMA loop, %s, %d x %d lanes",
             v.isa, v.accumulators, v.lanes);
    free(secs);
    /* Keep the loop's result alive so the compiler cannot drop it. */
    volatile float sink = check;
    (void)sink;
}

/* ---- memory bandwidth ---------------------------------------------------- */

/* Sums a slice with READ_ACCS independent vector accumulators, so neither
 * the add latency nor the loop limits the loads: 16 × 64 bytes in flight
 * per iteration with AVX-512. Loads go through memcpy: no alignment or
 * aliasing assumptions. */
#define READ_ACCS 16
#define DEFINE_READ_KERNEL(NAME, ATTR, LANES)                                  \
    typedef float NAME##_vec __attribute__((vector_size((LANES) * 4)));        \
    ATTR static float NAME(const float *p, size_t n)                           \
    {                                                                          \
        NAME##_vec acc[READ_ACCS];                                             \
        memset(acc, 0, sizeof acc);                                            \
        size_t step = (size_t)(LANES) * READ_ACCS, i = 0;                      \
        for (; i + step <= n; i += step) {                                     \
            _Pragma("GCC unroll 16") for (int k = 0; k < READ_ACCS; k++) {     \
                NAME##_vec x;                                                  \
                memcpy(&x, p + i + (size_t)k * (LANES), sizeof x);             \
                acc[k] += x;                                                   \
            }                                                                  \
        }                                                                      \
        float r = 0.0f;                                                        \
        for (; i < n; i++) r += p[i];                                          \
        for (int k = 0; k < READ_ACCS; k++)                                    \
            for (int l = 0; l < (LANES); l++) r += acc[k][l];                  \
        return r;                                                              \
    }

#ifdef HAVE_X86_VARIANTS
DEFINE_READ_KERNEL(read_avx512, __attribute__((target("avx512f"))), 16)
DEFINE_READ_KERNEL(read_avx2, __attribute__((target("avx2"))), 8)
#endif
DEFINE_READ_KERNEL(read_generic, , 4)

typedef float (*read_fn)(const float *p, size_t n);

static read_fn pick_read_kernel(const char **isa)
{
#ifdef HAVE_X86_VARIANTS
    if (__builtin_cpu_supports("avx512f")) {
        *isa = "avx512f";
        return read_avx512;
    }
    if (__builtin_cpu_supports("avx2")) {
        *isa = "avx2";
        return read_avx2;
    }
#endif
    *isa = "portable C";
    return read_generic;
}

/* Arrays of the bandwidth probes: 2 MiB-aligned and advised for
 * transparent huge pages (as the cpu backend's buffers are), so TLB misses
 * do not lower the rate. */
#define BIG_ALIGN (2u << 20)
static float *big_alloc(size_t bytes)
{
    if (!bytes) return NULL;
    float *p = aligned_alloc(BIG_ALIGN, bytes);
#if defined(MADV_HUGEPAGE)
    if (p) (void)madvise(p, bytes, MADV_HUGEPAGE); /* a hint only */
#endif
    return p;
}

/* Thread t of threads owns elements [lo, hi) of n. */
static void thread_slice(size_t n, int t, int threads, size_t *lo, size_t *hi)
{
    *lo = n * (size_t)t / (size_t)threads;
    *hi = n * (size_t)(t + 1) / (size_t)threads;
}

static double time_read(read_fn fn, const float *a, size_t n, int threads, float *check)
{
    float sum = 0.0f;
    double t0 = xattn_bench_now();
#pragma omp parallel num_threads(threads) reduction(+ : sum)
    {
        size_t lo, hi;
        thread_slice(n, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
        sum += fn(a + lo, hi - lo);
    }
    double t = xattn_bench_now() - t0;
    *check += sum;
    return t;
}

static double time_copy(float *dst, const float *src, size_t n, int threads)
{
    double t0 = xattn_bench_now();
#pragma omp parallel num_threads(threads)
    {
        size_t lo, hi;
        thread_slice(n, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
        memcpy(dst + lo, src + lo, (hi - lo) * sizeof *dst);
    }
    return xattn_bench_now() - t0;
}

static void fill_rate(xattn_bench_rate *out, double *secs, int repeats, double bytes,
                      int threads)
{
    double best = 0.0;
    for (int r = 0; r < repeats; r++)
        if (bytes / secs[r] > best) best = bytes / secs[r];
    out->seconds = xattn_bench_median(secs, repeats);
    out->rate = bytes / out->seconds;
    out->best = best;
    out->repeats = repeats;
    out->threads = threads;
}

struct xattn_bench_reader {
    float *a;
    size_t n;
    int threads;
    read_fn fn;
    const char *isa;
    float check;
};

xattn_bench_reader *xattn_bench_reader_create(int threads, size_t array_bytes)
{
    xattn_bench_reader *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    if (threads < 1) threads = omp_get_max_threads();
    size_t n = array_bytes / sizeof(float);
    n -= n % (BIG_ALIGN / sizeof(float));
    r->n = n;
    r->threads = threads;
    r->a = big_alloc(n * sizeof(float));
    if (!r->a) {
        free(r);
        return NULL;
    }
    r->fn = pick_read_kernel(&r->isa);
    /* First touch by the thread that streams the slice later, so pages sit
     * on its memory node; then one untimed pass. */
    float *a = r->a;
#pragma omp parallel num_threads(threads)
    {
        size_t lo, hi;
        thread_slice(n, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
        for (size_t i = lo; i < hi; i++) a[i] = (float)(i & 1023) * 1e-3f;
    }
    time_read(r->fn, r->a, r->n, r->threads, &r->check);
    return r;
}

double xattn_bench_reader_pass(xattn_bench_reader *r)
{
    return (double)(r->n * sizeof(float)) / time_read(r->fn, r->a, r->n, r->threads, &r->check);
}

void xattn_bench_reader_describe(const xattn_bench_reader *r, char *buf, size_t size)
{
    snprintf(buf, size, "read %zu MiB, %s %d accumulators, 2 MiB pages advised",
             r->n * sizeof(float) >> 20, r->isa, READ_ACCS);
}

void xattn_bench_reader_destroy(xattn_bench_reader **r)
{
    if (!r || !*r) return;
    volatile float sink = (*r)->check;
    (void)sink;
    free((*r)->a);
    free(*r);
    *r = NULL;
}

int xattn_bench_bytes(int threads, int repeats, size_t array_bytes,
                      xattn_bench_rate *rd, xattn_bench_rate *cp,
                      xattn_bench_progress_fn progress, void *user)
{
    memset(rd, 0, sizeof *rd);
    memset(cp, 0, sizeof *cp);
    if (threads < 1) threads = omp_get_max_threads();
    if (repeats < 1) repeats = 1;
    double *secs = malloc((size_t)repeats * sizeof *secs);
    xattn_bench_reader *reader = xattn_bench_reader_create(threads, array_bytes);
    float *b = reader ? big_alloc(reader->n * sizeof(float)) : NULL;
    if (!reader || !b || !secs) {
        snprintf(rd->method, sizeof rd->method, "cannot allocate 2 x %zu MiB",
                 array_bytes >> 20);
        snprintf(cp->method, sizeof cp->method, "%s", rd->method);
        xattn_bench_reader_destroy(&reader);
        free(b);
        free(secs);
        return -1;
    }
    const size_t n = reader->n, bytes = n * sizeof(float);
#pragma omp parallel num_threads(threads)
    {
        size_t lo, hi;
        thread_slice(n, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
        memset(b + lo, 0, (hi - lo) * sizeof *b);
    }

    for (int r = 0; r < repeats; r++) {
        secs[r] = (double)bytes / xattn_bench_reader_pass(reader);
        if (progress) progress("ceiling: read bytes/s", r + 1, repeats, user);
    }
    fill_rate(rd, secs, repeats, (double)bytes, threads);
    xattn_bench_reader_describe(reader, rd->method, sizeof rd->method);

    time_copy(b, reader->a, n, threads); /* warm-up */
    for (int r = 0; r < repeats; r++) {
        secs[r] = time_copy(b, reader->a, n, threads);
        if (progress) progress("ceiling: copy bytes/s", r + 1, repeats, user);
    }
    fill_rate(cp, secs, repeats, 2.0 * (double)bytes, threads);
    snprintf(cp->method, sizeof cp->method, "copy %zu MiB (read + write)", bytes >> 20);

    volatile float sink = b[n / 2];
    (void)sink;
    xattn_bench_reader_destroy(&reader);
    free(b);
    free(secs);
    return 0;
}
