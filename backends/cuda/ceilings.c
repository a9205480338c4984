/* Device ceilings (the vtable's measure_ceilings, for `xattn bench`): the
 * copy bandwidth, the f32 FMA rate and the bf16 mma.sync rate this device
 * reaches with kernels/ceilings.cu. Each probe is calibrated so one timed
 * repeat lasts about TARGET_SECONDS, then repeated; the best repeat is the
 * ceiling. Timing is with driver events around the launches of a repeat
 * (cuEventElapsedTime), or the host's monotonic clock around them and a
 * stream synchronisation when the driver has no events (the emulator).
 * About 0.5 s on an H100-class GPU after the module is compiled (once per
 * architecture, then from the disk cache). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ceilings.h"
#include "cu.h"

enum {
    REPEATS = 5,
    THREADS = 256,             /* every ceiling kernel's block */
    COPY_UNROLL = 8,           /* 16-byte vectors per thread (kernels/ceilings.cu) */
    FMA_CHAINS = 8,            /* as in kernels/ceilings.cu */
    MMA_CHAINS = 8,
    FMA_BLOCKS_PER_SM = 8,     /* 2048 threads: a full SM */
    MMA_BLOCKS_PER_SM = 4,     /* 32 warps: 8 per tensor-core sub-partition */
    MAX_LAUNCHES = 64,         /* copy launches in one repeat */
    START_ITERS = 16,
};

/* One timed repeat lasts about this long; calibration stops once a launch
 * takes CALIBRATION_SECONDS. */
#define TARGET_SECONDS 0.02
#define CALIBRATION_SECONDS 0.002
/* Each copy array: 8 times the L2 (50 MiB on an H100), within these. */
#define MIN_COPY_BYTES ((size_t)64 << 20)
#define MAX_COPY_BYTES ((size_t)512 << 20)
#define FLOPS_PER_FMA 2.0
#define FLOPS_PER_MMA (2.0 * 16 * 8 * 16)

xattn_status cu_ceilings_variants(const xattn_device_caps *caps, cu_variant *out, int *n)
{
    memset(out, 0, sizeof *out);
    out->source = "ceilings";
    out->kernels[0] = "ceiling_copy";
    out->kernels[1] = "ceiling_fma";
    /* The mma kernel exists only where mma.sync bf16 does (sm_80 on). */
    if (caps->matrix_dtypes & XATTN_MATRIX_BF16) out->kernels[2] = "ceiling_mma_bf16";
    out->hot = 1;              /* a spill would lower the ceiling */
    out->smem_bytes = 0;
    out->threads = THREADS;
    *n = 1;
    return XATTN_OK;
}

/* Events around a repeat, or none (host clock). */
typedef struct timer {
    CUevent start, stop;       /* both NULL: the host clock */
} timer;

static int driver_has_events(const cu_api *cu)
{
    return cu->EventCreate && cu->EventDestroy && cu->EventRecord && cu->EventSynchronize &&
           cu->EventElapsedTime;
}

static void timer_release(xattn_device *dev, timer *t)
{
    if (t->start) dev->cu->EventDestroy(t->start);
    if (t->stop) dev->cu->EventDestroy(t->stop);
    t->start = t->stop = NULL;
}

static xattn_status timer_init(xattn_device *dev, timer *t)
{
    t->start = t->stop = NULL;
    if (!driver_has_events(dev->cu)) return XATTN_OK;
    const cu_api *cu = dev->cu;
    CU_TRY(cu, cu->EventCreate(&t->start, CU_EVENT_DEFAULT));
    CUresult r = cu->EventCreate(&t->stop, CU_EVENT_DEFAULT);
    if (r != CUDA_SUCCESS) {
        timer_release(dev, t);
        return cu_fail(cu, r, "cuEventCreate");
    }
    return XATTN_OK;
}

/* A kernel with its arguments and grid. */
typedef struct probe {
    const cu_kernel *kernel;
    void *args[4];
    unsigned blocks;
} probe;

/* Seconds of `launches` launches of p on dev's stream. */
static xattn_status time_launches(xattn_device *dev, const timer *t, probe *p, int launches,
                                  double *seconds)
{
    const cu_api *cu = dev->cu;
    if (t->start) {
        CU_TRY(cu, cu->EventRecord(t->start, dev->stream));
        for (int i = 0; i < launches; i++)
            XATTN_TRY(cu_launch(dev, p->kernel, p->blocks, 1, 1, p->args));
        CU_TRY(cu, cu->EventRecord(t->stop, dev->stream));
        CU_TRY(cu, cu->EventSynchronize(t->stop));
        float ms = 0.0f;
        CU_TRY(cu, cu->EventElapsedTime(&ms, t->start, t->stop));
        *seconds = 1e-3 * (double)ms;
        return XATTN_OK;
    }
    CU_TRY(cu, cu->StreamSynchronize(dev->stream));
    double t0 = xattn_clock_seconds();
    for (int i = 0; i < launches; i++)
        XATTN_TRY(cu_launch(dev, p->kernel, p->blocks, 1, 1, p->args));
    CU_TRY(cu, cu->StreamSynchronize(dev->stream));
    *seconds = xattn_clock_seconds() - t0;
    return XATTN_OK;
}

/* REPEATS timings of p, each `work` FLOPs or bytes: best and median rate. */
static xattn_status repeat(xattn_device *dev, const timer *t, probe *p, int launches,
                           double work, xattn_ceiling *out)
{
    double rates[REPEATS];
    for (int r = 0; r < REPEATS; r++) {
        double s = 0;
        XATTN_TRY(time_launches(dev, t, p, launches, &s));
        rates[r] = s > 0 ? work / s : 0.0;
    }
    xattn_ceiling_from_rates(out, rates, REPEATS);
    return XATTN_OK;
}

/* Copy one array into another; bytes read + written. */
static xattn_status measure_copy(xattn_device *dev, const timer *t, const cu_kernel *k,
                                 xattn_ceiling *out)
{
    const cu_api *cu = dev->cu;
    size_t bytes = (size_t)dev->caps.cache_bytes * 8;
    if (bytes < MIN_COPY_BYTES) bytes = MIN_COPY_BYTES;
    if (bytes > MAX_COPY_BYTES) bytes = MAX_COPY_BYTES;
    size_t total = 0;
    if (cu->DeviceTotalMem(&total, dev->device) == CUDA_SUCCESS && total && bytes > total / 8)
        bytes = total / 8;
    const size_t tile = (size_t)THREADS * COPY_UNROLL * 16;
    size_t blocks = bytes / tile;
    if (blocks == 0 || blocks > INT_MAX)
        return xattn_error(XATTN_ERR_OUT_OF_MEMORY,
                           "cuda: device memory does not suit the copy ceiling (%zu bytes)", total);
    bytes = blocks * tile;

    CUdeviceptr src = 0, dst = 0;
    CU_TRY(cu, cu->MemAlloc(&src, bytes));
    CUresult r = cu->MemAlloc(&dst, bytes);
    if (r != CUDA_SUCCESS) {
        cu->MemFree(src);
        return cu_fail(cu, r, "cuMemAlloc");
    }
    probe p = {.kernel = k, .blocks = (unsigned)blocks};
    p.args[0] = &src;
    p.args[1] = &dst;

    /* Defined contents, and the first launch touches the pages; the second
     * says how many launches fill a repeat. */
    double s = 0;
    int launches = 1;
    xattn_status st = XATTN_OK;
    r = cu->MemsetD8Async(src, 0, bytes, dev->stream);
    if (r != CUDA_SUCCESS) st = cu_fail(cu, r, "cuMemsetD8Async");
    if (st == XATTN_OK) st = time_launches(dev, t, &p, 1, &s);
    if (st == XATTN_OK) st = time_launches(dev, t, &p, 1, &s);
    if (st == XATTN_OK) {
        if (s > 0 && s < TARGET_SECONDS) {
            double n = TARGET_SECONDS / s + 1.0;
            launches = n > MAX_LAUNCHES ? MAX_LAUNCHES : (int)n;
        }
        st = repeat(dev, t, &p, launches, 2.0 * (double)bytes * launches, out);
    }
    if (st == XATTN_OK)
        snprintf(out->method, sizeof out->method,
                 "copy %zu MiB to %zu MiB, 16-byte loads, %zu blocks of %d, %d launch%s",
                 bytes >> 20, bytes >> 20, blocks, THREADS, launches, launches == 1 ? "" : "es");
    /* Launches may still be queued when a step failed. */
    (void)cu->StreamSynchronize(dev->stream);
    cu->MemFree(dst);
    cu->MemFree(src);
    return st;
}

/* A compute loop (FMA or mma): double iters until a launch is long enough
 * to time, scale it to a repeat, then time REPEATS launches. flop_per_iter
 * is the work of one round over the whole grid. */
static xattn_status measure_loop(xattn_device *dev, const timer *t, const cu_kernel *k,
                                 unsigned blocks, int with_xy, double flop_per_iter,
                                 xattn_ceiling *out, int *iters_out)
{
    const cu_api *cu = dev->cu;
    CUdeviceptr sums = 0;
    CU_TRY(cu, cu->MemAlloc(&sums, (size_t)blocks * THREADS * sizeof(float)));
    int iters = START_ITERS;
    float x = 0.999999f, y = 1e-3f;
    probe p = {.kernel = k, .blocks = blocks};
    p.args[0] = &sums;
    p.args[1] = &iters;
    p.args[2] = with_xy ? (void *)&x : NULL;
    p.args[3] = with_xy ? (void *)&y : NULL;

    double s = 0;
    xattn_status st = time_launches(dev, t, &p, 1, &s); /* untimed: first launch */
    if (st == XATTN_OK) st = time_launches(dev, t, &p, 1, &s);
    while (st == XATTN_OK && s < CALIBRATION_SECONDS && iters <= INT_MAX / 4) {
        iters *= 2;
        st = time_launches(dev, t, &p, 1, &s);
    }
    if (st == XATTN_OK && s > 0 && s < TARGET_SECONDS) {
        double scaled = (double)iters * TARGET_SECONDS / s;
        iters = scaled > INT_MAX / 2 ? INT_MAX / 2 : (int)scaled;
    }
    if (st == XATTN_OK) st = repeat(dev, t, &p, 1, flop_per_iter * (double)iters, out);
    *iters_out = iters;
    (void)cu->StreamSynchronize(dev->stream);
    cu->MemFree(sums);
    return st;
}

xattn_status cu_measure_ceilings(xattn_device *dev, xattn_ceilings *out)
{
    memset(out, 0, sizeof *out);
    double t0 = xattn_clock_seconds();
    cu_variant v;
    int n = 0;
    cu_kernel k[1][CU_MAX_KERNELS];
    XATTN_TRY(cu_ceilings_variants(&dev->caps, &v, &n));
    XATTN_TRY(cu_variants_load(dev, &v, n, k));
    /* Work queued before is not part of the measurement. */
    CU_TRY(dev->cu, dev->cu->StreamSynchronize(dev->stream));
    timer t;
    XATTN_TRY(timer_init(dev, &t));
    const char *clock = t.start ? "events" : "host clock";

    unsigned sms = dev->sm_count > 0 ? (unsigned)dev->sm_count : 1;
    xattn_status st = measure_copy(dev, &t, &k[0][0], &out->bytes_per_s);
    if (st == XATTN_OK) {
        unsigned blocks = sms * FMA_BLOCKS_PER_SM;
        int iters = 0;
        double per_iter = FLOPS_PER_FMA * FMA_CHAINS * (double)blocks * THREADS;
        st = measure_loop(dev, &t, &k[0][1], blocks, 1, per_iter, &out->flops_f32, &iters);
        if (st == XATTN_OK)
            snprintf(out->flops_f32.method, sizeof out->flops_f32.method,
                     "f32 FMA loop, %d chains, %u blocks of %d, %d rounds, %s", FMA_CHAINS,
                     blocks, THREADS, iters, clock);
    }
    if (st == XATTN_OK && k[0][2].fn) {
        unsigned blocks = sms * MMA_BLOCKS_PER_SM;
        int iters = 0;
        double per_iter = FLOPS_PER_MMA * MMA_CHAINS * (double)blocks * (THREADS / 32);
        st = measure_loop(dev, &t, &k[0][2], blocks, 0, per_iter, &out->flops_matrix, &iters);
        out->matrix_dtype = XATTN_BF16;
        if (st == XATTN_OK)
            snprintf(out->flops_matrix.method, sizeof out->flops_matrix.method,
                     "bf16 mma.sync m16n8k16 loop, %d chains, %u blocks of %d, %d rounds, %s",
                     MMA_CHAINS, blocks, THREADS, iters, clock);
    } else if (st == XATTN_OK) {
        snprintf(out->flops_matrix.method, sizeof out->flops_matrix.method,
                 "none: mma.sync bf16 needs sm_80 (this is %s)", dev->arch);
    }
    if (st == XATTN_OK)
        snprintf(out->bytes_per_s.method + strlen(out->bytes_per_s.method),
                 sizeof out->bytes_per_s.method - strlen(out->bytes_per_s.method), ", %s", clock);
    timer_release(dev, &t);
    out->seconds = xattn_clock_seconds() - t0;
    return st;
}
