/* Device ceilings (the vtable's measure_ceilings, for `xattn bench`): the
 * copy bandwidth and the f32 FMA rate this device reaches with
 * kernels/ceilings.cl. Each probe is calibrated so one timed repeat lasts
 * about TARGET_SECONDS, then repeated; the best repeat is the ceiling.
 * Timing is the host's monotonic clock around the launches of a repeat and
 * a clFinish (the caller's queue may lack profiling), over enough launches
 * that the launch overhead does not show. About 0.3 s on a GPU after the
 * program is built (once, then from the disk cache), under a second on
 * PoCL. OpenCL C has no portable matrix instructions: flops_matrix stays 0. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ceilings.h"
#include "ocl.h"

enum {
    REPEATS = 5,
    COPY_UNROLL = 16,          /* float4s per work-item (kernels/ceilings.cl) */
    MAX_GROUP = 256,
    FMA_CHAINS = 12,          /* as in kernels/ceilings.cl */
    GPU_FMA_GROUPS_PER_UNIT = 8,
    CPU_FMA_GROUPS_PER_UNIT = 4,
    CPU_FMA_GROUP = 64,
    MAX_LAUNCHES = 64,         /* copy launches in one repeat */
    FMA_START_ITERS = 16,
    MAX_FMA_VEC = 16,
};

/* One timed repeat lasts about this long; calibration stops once a launch
 * takes CALIBRATION_SECONDS. */
#define TARGET_SECONDS 0.02
#define CALIBRATION_SECONDS 0.002
/* Each copy array: several times a GPU's L2 (50 MiB on an H100), or a
 * CPU's last-level cache. */
#define GPU_COPY_BYTES ((size_t)256 << 20)
#define CPU_COPY_BYTES ((size_t)128 << 20)
#define FLOPS_PER_FMA 2.0

/* A kernel with its arguments and NDRange, launched `launches` times per
 * timing. */
typedef struct probe {
    ocl_kernel *kernel;
    int nargs;
    ocl_arg args[4];
    size_t global, local;
} probe;

/* Seconds of `launches` launches of p, queue drained before and after. */
static xattn_status time_launches(xattn_device *dev, probe *p, int launches, double *seconds)
{
    OCL_TRY(dev->cl->Finish(dev->queue));
    double t0 = xattn_clock_seconds();
    for (int i = 0; i < launches; i++)
        XATTN_TRY(ocl_launch(dev, p->kernel, p->nargs, p->args, 1, &p->global, &p->local));
    OCL_TRY(dev->cl->Finish(dev->queue));
    *seconds = xattn_clock_seconds() - t0;
    return XATTN_OK;
}

/* REPEATS timings of p, each `work` FLOPs or bytes: best and median rate. */
static xattn_status repeat(xattn_device *dev, probe *p, int launches, double work,
                           xattn_ceiling *out)
{
    double rates[REPEATS];
    for (int r = 0; r < REPEATS; r++) {
        double s = 0;
        XATTN_TRY(time_launches(dev, p, launches, &s));
        rates[r] = s > 0 ? work / s : 0.0;
    }
    xattn_ceiling_from_rates(out, rates, REPEATS);
    return XATTN_OK;
}

static uint64_t device_uint(xattn_device *dev, cl_device_info what, size_t bytes)
{
    uint64_t v = 0;
    if (bytes == sizeof(cl_uint)) {
        cl_uint u = 0;
        if (dev->cl->GetDeviceInfo(dev->device, what, sizeof u, &u, NULL) == CL_SUCCESS) v = u;
    } else {
        cl_ulong u = 0;
        if (dev->cl->GetDeviceInfo(dev->device, what, sizeof u, &u, NULL) == CL_SUCCESS) v = u;
    }
    return v;
}

static size_t group_size(const ocl_kernel *k, size_t want)
{
    size_t g = k->max_group_size ? k->max_group_size : 1;
    return g < want ? g : want;
}

/* Copy one array into another of `bytes` each; bytes read + written. */
static xattn_status measure_copy(xattn_device *dev, ocl_kernel *k, int cpu, xattn_ceiling *out)
{
    size_t bytes = cpu ? CPU_COPY_BYTES : GPU_COPY_BYTES;
    uint64_t max_alloc = device_uint(dev, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof(cl_ulong));
    uint64_t global_mem = device_uint(dev, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof(cl_ulong));
    if (max_alloc && bytes > max_alloc) bytes = (size_t)max_alloc;
    if (global_mem && bytes > global_mem / 8) bytes = (size_t)(global_mem / 8);
    size_t local = group_size(k, MAX_GROUP);
    size_t tile = local * COPY_UNROLL * 16;
    size_t groups = bytes / tile;
    if (groups == 0)
        return xattn_error(XATTN_ERR_OUT_OF_MEMORY,
                           "opencl: device memory too small for the copy ceiling");
    bytes = groups * tile;

    cl_int err = CL_SUCCESS;
    cl_mem src = dev->cl->CreateBuffer(dev->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (!src) return ocl_fail(err, "clCreateBuffer");
    cl_mem dst = dev->cl->CreateBuffer(dev->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (!dst) {
        dev->cl->ReleaseMemObject(src);
        return ocl_fail(err, "clCreateBuffer");
    }
    probe p = {.kernel = k, .nargs = 2, .global = groups * local, .local = local};
    p.args[0] = OCL_ARG(src);
    p.args[1] = OCL_ARG(dst);

    /* The first launch touches the pages; the second says how many launches
     * fill a repeat. */
    double t = 0;
    int launches = 1;
    xattn_status st = time_launches(dev, &p, 1, &t);
    if (st == XATTN_OK) st = time_launches(dev, &p, 1, &t);
    if (st == XATTN_OK) {
        if (t > 0 && t < TARGET_SECONDS) {
            double n = TARGET_SECONDS / t + 1.0;
            launches = n > MAX_LAUNCHES ? MAX_LAUNCHES : (int)n;
        }
        st = repeat(dev, &p, launches, 2.0 * (double)bytes * launches, out);
    }
    if (st == XATTN_OK)
        snprintf(out->method, sizeof out->method,
                 "copy %zu MiB to %zu MiB, 16-byte loads, %zu groups of %zu, %d launch%s",
                 bytes >> 20, bytes >> 20, groups, local, launches, launches == 1 ? "" : "es");
    dev->cl->ReleaseMemObject(dst);
    dev->cl->ReleaseMemObject(src);
    return st;
}

/* The FMA loop over `units` compute units with vec-lane accumulators. */
static xattn_status measure_fma(xattn_device *dev, ocl_kernel *k, int cpu, unsigned vec,
                                xattn_ceiling *out)
{
    size_t units = dev->caps.compute_units ? dev->caps.compute_units : 1;
    size_t local = group_size(k, cpu ? CPU_FMA_GROUP : MAX_GROUP);
    size_t global = units * (cpu ? CPU_FMA_GROUPS_PER_UNIT : GPU_FMA_GROUPS_PER_UNIT) * local;
    cl_int err = CL_SUCCESS;
    cl_mem sums = dev->cl->CreateBuffer(dev->context, CL_MEM_READ_WRITE,
                                        global * vec * sizeof(float), NULL, &err);
    if (!sums) return ocl_fail(err, "clCreateBuffer");
    cl_int iters = FMA_START_ITERS;
    cl_float x = 0.999999f, y = 1e-3f;
    probe p = {.kernel = k, .nargs = 4, .global = global, .local = local};
    p.args[0] = OCL_ARG(sums);
    p.args[1] = OCL_ARG(iters);
    p.args[2] = OCL_ARG(x);
    p.args[3] = OCL_ARG(y);

    /* An untimed launch first (PoCL compiles a kernel for its work-group
     * size there); then double the loop until one launch is long enough to
     * time, and scale it to a repeat's length. */
    double t = 0;
    xattn_status st = time_launches(dev, &p, 1, &t);
    if (st == XATTN_OK) st = time_launches(dev, &p, 1, &t);
    while (st == XATTN_OK && t < CALIBRATION_SECONDS && iters <= INT_MAX / 4) {
        iters *= 2;
        st = time_launches(dev, &p, 1, &t);
    }
    if (st == XATTN_OK && t > 0 && t < TARGET_SECONDS) {
        double scaled = (double)iters * TARGET_SECONDS / t;
        iters = scaled > INT_MAX / 2 ? INT_MAX / 2 : (cl_int)scaled;
    }
    double flop = FLOPS_PER_FMA * FMA_CHAINS * (double)vec * (double)iters * (double)global;
    if (st == XATTN_OK) st = repeat(dev, &p, 1, flop, out);
    if (st == XATTN_OK)
        snprintf(out->method, sizeof out->method,
                 "f32 FMA loop, fma() %d x %u lanes, %zu work-items, %d rounds", FMA_CHAINS, vec,
                 global, (int)iters);
    dev->cl->ReleaseMemObject(sums);
    return st;
}

xattn_status ocl_measure_ceilings(xattn_device *dev, xattn_ceilings *out)
{
    memset(out, 0, sizeof *out);
    double t0 = xattn_clock_seconds();
    /* The kernels' shape follows the hardware, not the style the planner
     * was told (XATTN_OPENCL_STYLE=gpu on PoCL still measures a CPU). */
    cl_device_type type = 0;
    dev->cl->GetDeviceInfo(dev->device, CL_DEVICE_TYPE, sizeof type, &type, NULL);
    int cpu = (type & CL_DEVICE_TYPE_CPU) != 0;
    unsigned vec = (unsigned)device_uint(dev, CL_DEVICE_NATIVE_VECTOR_WIDTH_FLOAT,
                                         sizeof(cl_uint));
    if (vec < 1 || vec > MAX_FMA_VEC || (vec & (vec - 1))) vec = 1;

    char options[64] = "";
    if (xattn_options_add(options, sizeof options, "-DCOPY_UNROLL=%d -DCOPY_CONTIGUOUS=%d -DFMA_VEC=%u",
                        COPY_UNROLL, cpu, vec))
        return xattn_error(XATTN_ERR_INTERNAL, "opencl: ceiling options too long");
    cl_program prog;
    XATTN_TRY(ocl_program_get(dev, "ceilings", options, &prog));
    ocl_kernel copy, fma;
    XATTN_TRY(ocl_kernel_create(dev, prog, "ceiling_copy", &copy));
    xattn_status st = ocl_kernel_create(dev, prog, "ceiling_fma", &fma);
    if (st != XATTN_OK) {
        ocl_kernel_release(dev, &copy);
        return st;
    }
    st = measure_copy(dev, &copy, cpu, &out->bytes_per_s);
    if (st == XATTN_OK) st = measure_fma(dev, &fma, cpu, vec, &out->flops_f32);
    ocl_kernel_release(dev, &fma);
    ocl_kernel_release(dev, &copy);
    snprintf(out->flops_matrix.method, sizeof out->flops_matrix.method,
             "none: OpenCL C has no portable matrix instructions");
    out->seconds = xattn_clock_seconds() - t0;
    return st;
}
