#pragma once
/* Host ceilings for `xattn bench`: the FLOP/s and bytes/s this CPU reaches
 * with code written to reach them, on every OpenMP thread. They are the
 * denominators of the bench's "% of ceiling" for CPU-style devices. */
#include <stddef.h>

/* A median of repeated timings of one probe. */
typedef struct xattn_bench_rate {
    double rate;       /* median FLOP/s or bytes/s; 0 if not measured */
    double best;       /* the best repeat */
    double seconds;    /* median seconds of one repeat */
    int repeats;
    int threads;
    char method[96];   /* what ran: "fma avx512f 24x16 lanes", "read 512 MiB" */
} xattn_bench_rate;

/* Called after each repeat of a probe, for a progress line. */
typedef void (*xattn_bench_progress_fn)(const char *what, int done, int total,
                                        void *user);

/* f32 FLOP/s of an FMA loop: many independent accumulator vectors, the
 * widest ISA this CPU has (avx512f, avx2+fma, else the portable C
 * version), one copy per thread. An FMA counts as 2 FLOPs. */
void xattn_bench_flops_f32(int threads, int repeats, xattn_bench_rate *out,
                           xattn_bench_progress_fn progress, void *user);

/* Memory bytes/s over arrays of array_bytes each, every thread streaming its
 * own slice: `read` sums one array (bytes read), `copy` copies one array to
 * another (bytes read + bytes written, as STREAM counts it). Returns 0, or -1
 * with out->method explaining when the arrays cannot be allocated. */
int xattn_bench_bytes(int threads, int repeats, size_t array_bytes,
                      xattn_bench_rate *read, xattn_bench_rate *copy,
                      xattn_bench_progress_fn progress, void *user);

/* A read probe kept between measurements: an array_bytes array (2 MiB
 * pages advised, first touched by its readers) that `threads` OpenMP
 * threads sum, each its own slice. The bench reads it right before and
 * after each workload, so a percentage compares rates from the same few
 * seconds of a shared machine. */
typedef struct xattn_bench_reader xattn_bench_reader;

/* NULL when the array cannot be allocated. Runs one untimed pass. */
xattn_bench_reader *xattn_bench_reader_create(int threads, size_t array_bytes);
/* One timed pass; returns bytes/s. */
double xattn_bench_reader_pass(xattn_bench_reader *r);
/* "read 512 MiB, avx512f 16 accumulators, ..." */
void xattn_bench_reader_describe(const xattn_bench_reader *r, char *buf, size_t size);
/* Accepts NULL; clears *r. */
void xattn_bench_reader_destroy(xattn_bench_reader **r);

/* Why this build's ceilings cannot be trusted (a sanitizer, no
 * optimisation), or NULL. */
const char *xattn_bench_build_note(void);

/* Monotonic wall-clock seconds. */
double xattn_bench_now(void);

/* Median of n values (sorts v in place); 0 for n == 0. */
double xattn_bench_median(double *v, int n);
