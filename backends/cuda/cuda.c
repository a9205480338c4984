/* CUDA backend module (libxattn-cuda.so): devices, caps read from the
 * device, buffers, streams, and the vtable. The kernels live in kernels/
 * (CUDA C++ compiled by NVRTC); program.c compiles and caches them.
 *
 * Every vtable entry that calls the driver makes the device's primary
 * context current for its duration (cu_enter / cu_leave), so callers on
 * any thread, with any context of their own current, are served. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cu.h"
#include "plan.h"

enum {
    MIN_MATRIX_CC = 80,     /* mma.sync m16n8k16 with f16 and bf16 from sm_80 */
    MIN_CC = 70,            /* kernels need independent thread scheduling */
};

/* ---- probing ---------------------------------------------------------------- */

static int32_t cu_probe(char *reason, size_t reason_size)
{
    if (reason_size) reason[0] = '\0';
    const cu_api *cu = cu_load(reason, reason_size);
    char nvrtc_reason[512] = "";
    const nvrtc_api *rtc = cu_nvrtc_load(nvrtc_reason, sizeof nvrtc_reason);
    if (!cu) {
        /* Both are needed: when NVRTC is missing too, say so now rather
         * than after the driver is installed. */
        size_t len = reason_size ? strlen(reason) : 0;
        if (!rtc && len + 2 < reason_size)
            snprintf(reason + len, reason_size - len, "; %s", nvrtc_reason);
        return 0;
    }
    if (!rtc) {
        if (reason_size) snprintf(reason, reason_size, "%s", nvrtc_reason);
        return 0;
    }
    int n = 0;
    CUresult r = cu->DeviceGetCount(&n);
    if (r != CUDA_SUCCESS || n <= 0) {
        const char *name = NULL;
        if (cu->GetErrorName(r, &name) != CUDA_SUCCESS || !name) name = "CUDA_SUCCESS";
        if (reason_size)
            snprintf(reason, reason_size, "no CUDA device (cuDeviceGetCount: %d, %s)", n, name);
        return 0;
    }
    return n;
}

/* ---- context scope ---------------------------------------------------------- */

xattn_status cu_enter(xattn_device *dev)
{
    CU_TRY(dev->cu, dev->cu->CtxPushCurrent(dev->ctx));
    return XATTN_OK;
}

void cu_leave(xattn_device *dev)
{
    CUcontext popped = NULL;
    (void)dev->cu->CtxPopCurrent(&popped);
}

/* ---- caps ------------------------------------------------------------------- */

static int attr(const xattn_device *dev, CUdevice_attribute a)
{
    int v = 0;
    if (dev->cu->DeviceGetAttribute(&v, a, dev->device) != CUDA_SUCCESS) v = 0;
    return v;
}

/* Dense f16/bf16 tensor-core FLOP per clock per SM with f32 accumulation
 * (2 per multiply-add): 2048 on sm_80 (A100: 108 SMs at 1.41 GHz, 312
 * TFLOP/s), 1024 on sm_86 (A10, A40; GeForce parts run f32 accumulation at
 * half that), 512 on sm_89 (L40S: 142 SMs at 2.52 GHz, 181 TFLOP/s), 4096
 * on Hopper and later (H100: 132 SMs at 1.83 GHz, 989 TFLOP/s, a wgmma
 * rate: the mma.sync kernels of this module reach about half of it). */
static double matrix_flops_per_clock(int cc)
{
    if (cc >= 90) return 4096.0;
    if (cc == 80) return 2048.0;
    if (cc >= 89) return 512.0;
    return 1024.0; /* sm_86/87; Volta/Turing tensor cores go unused here */
}

/* f32 FMA lanes per SM: 64 on Volta, Turing and sm_80 (V100: 80 SMs at
 * 1.53 GHz, 15.7 TFLOP/s; A100 19.5), 128 from sm_86 on (H100: 67). */
static double fma_lanes(int cc) { return cc <= 80 ? 64.0 : 128.0; }

static void read_caps(xattn_device *dev)
{
    xattn_device_caps *c = &dev->caps;
    memset(c, 0, sizeof *c);
    int cc = dev->cc_major * 10 + dev->cc_minor;
    int khz = attr(dev, CU_DEVICE_ATTRIBUTE_CLOCK_RATE);
    int mem_khz = attr(dev, CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE);
    int bus_bits = attr(dev, CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH);

    c->style = XATTN_DEVICE_STYLE_GPU;
    c->compute_units = (uint32_t)dev->sm_count;
    c->simd_width = (uint32_t)(attr(dev, CU_DEVICE_ATTRIBUTE_WARP_SIZE) > 0
                                   ? attr(dev, CU_DEVICE_ATTRIBUTE_WARP_SIZE)
                                   : 32);
    c->local_mem_bytes = (uint32_t)dev->smem_optin;
    c->cache_bytes = (uint32_t)attr(dev, CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE);
    c->max_threads_per_group = (uint32_t)dev->max_threads;
    c->registers_per_group = (uint32_t)attr(dev, CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK);
    if (cc >= MIN_MATRIX_CC) {
        c->matrix_dtypes = XATTN_MATRIX_F16 | XATTN_MATRIX_BF16; /* TF32 never used */
        c->matrix_m = 16;
        c->matrix_n = 8;
        c->matrix_k = 16;
    }
    c->vector_bytes = 16;
    c->has_f16 = 1;
    c->has_bf16 = 1;
    /* Estimates for the planner; `xattn bench` measures the real ceilings. */
    double hz = (khz > 0 ? khz : 1000000) * 1e3;
    c->peak_flops_f32 = dev->sm_count * fma_lanes(cc) * 2.0 * hz;
    c->peak_flops_f16 = cc >= MIN_MATRIX_CC ? dev->sm_count * matrix_flops_per_clock(cc) * hz
                                            : c->peak_flops_f32;
    /* Double data rate: two transfers per memory clock over the bus. */
    c->peak_bytes_per_s = mem_khz > 0 && bus_bits > 0
                              ? 2.0 * mem_khz * 1e3 * (bus_bits / 8.0)
                              : 1e12;
    int n = snprintf(c->name, sizeof c->name, "%s (sm_%d%d, %s, driver %d, NVRTC %d.%d)",
                     dev->name, dev->cc_major, dev->cc_minor, dev->arch,
                     dev->cu->driver_version, dev->rtc->major, dev->rtc->minor);
    if (n >= (int)sizeof c->name) c->name[sizeof c->name - 1] = '\0';
}

/* ---- device ----------------------------------------------------------------- */

static void cu_device_close(xattn_device *dev)
{
    if (!dev) return;
    if (dev->ctx && cu_enter(dev) == XATTN_OK) {
        /* Queued work may still read module code and buffers. */
        (void)dev->cu->StreamSynchronize(dev->stream);
        cu_ops_release(dev);
        cu_modules_release(dev);
        if (dev->own_stream && dev->stream) dev->cu->StreamDestroy(dev->stream);
        cu_leave(dev);
    }
    if (dev->ctx) dev->cu->DevicePrimaryCtxRelease(dev->device);
    pthread_mutex_destroy(&dev->lock);
    free(dev);
}

static xattn_status open_stream(xattn_device *dev, const xattn_context_options *opts)
{
    const cu_api *cu = dev->cu;
    if (opts->native_queue) {
        /* The caller's stream: it must live in this device's primary
         * context (PyTorch's and the runtime API's streams do). */
        CUstream s = (CUstream)opts->native_queue;
        /* The default streams by their special handles (PyTorch's default
         * stream is the legacy one): the context's own, nothing to check. */
        if (s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD) {
            dev->stream = s;
            return XATTN_OK;
        }
        CUcontext owner = NULL;
        CUresult r = cu->StreamGetCtx(s, &owner);
        if (r != CUDA_SUCCESS) {
            const char *name = NULL;
            if (cu->GetErrorName(r, &name) != CUDA_SUCCESS || !name) name = "CUDA error";
            return xattn_error(XATTN_ERR_INVALID_ARGUMENT,
                               "options.native_queue: not a CUDA stream (cuStreamGetCtx: %s, %d)",
                               name, (int)r);
        }
        if (owner != dev->ctx)
            return xattn_error(XATTN_ERR_INVALID_ARGUMENT,
                               "options.native_queue: the stream belongs to another context "
                               "than device %d's primary context", (int)dev->device);
        dev->stream = s;
        return XATTN_OK;
    }
    CU_TRY(cu, cu->StreamCreate(&dev->stream, CU_STREAM_NON_BLOCKING));
    dev->own_stream = 1;
    return XATTN_OK;
}

static xattn_status cu_device_open(int32_t index, const xattn_context_options *opts,
                                   xattn_device **out, xattn_device_caps *caps)
{
    char reason[512] = "";
    const cu_api *cu = cu_load(reason, sizeof reason);
    if (!cu) return xattn_error(XATTN_ERR_BACKEND_UNAVAILABLE, "cuda: %s", reason);
    const nvrtc_api *rtc = cu_nvrtc_load(reason, sizeof reason);
    if (!rtc) return xattn_error(XATTN_ERR_BACKEND_UNAVAILABLE, "cuda: %s", reason);

    xattn_device *dev = calloc(1, sizeof *dev);
    if (!dev) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "cuda: out of memory");
    dev->cu = cu;
    dev->rtc = rtc;
    pthread_mutex_init(&dev->lock, NULL);

    CUresult r = cu->DeviceGet(&dev->device, index);
    if (r == CUDA_SUCCESS) r = cu->DevicePrimaryCtxRetain(&dev->ctx, dev->device);
    if (r != CUDA_SUCCESS) {
        dev->ctx = NULL;
        cu_device_close(dev);
        return cu_fail(cu, r, "opening the device");
    }
    if (cu->DeviceGetName(dev->name, (int)sizeof dev->name, dev->device) != CUDA_SUCCESS)
        snprintf(dev->name, sizeof dev->name, "CUDA device %d", (int)index);
    dev->name[sizeof dev->name - 1] = '\0';
    dev->cc_major = attr(dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
    dev->cc_minor = attr(dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
    dev->sm_count = attr(dev, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
    dev->smem_optin = attr(dev, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
    if (dev->smem_optin <= 0) dev->smem_optin = attr(dev, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK);
    dev->max_threads = attr(dev, CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK);
    cu_arch_name(dev->cc_major, dev->cc_minor, dev->arch, sizeof dev->arch);
    if (dev->cc_major * 10 + dev->cc_minor < MIN_CC) {
        xattn_status st = xattn_error(XATTN_ERR_UNSUPPORTED,
                                      "cuda: %s is sm_%d%d; the CUDA kernels need sm_70 or newer",
                                      dev->name, dev->cc_major, dev->cc_minor);
        cu_device_close(dev);
        return st;
    }
    xattn_status st = cu_enter(dev);
    if (st == XATTN_OK) {
        st = open_stream(dev, opts);
        cu_leave(dev);
    }
    if (st != XATTN_OK) {
        cu_device_close(dev);
        return st;
    }
    read_caps(dev);
    *caps = dev->caps;
    *out = dev;
    return XATTN_OK;
}

static xattn_status cu_synchronize(xattn_device *dev)
{
    XATTN_TRY(cu_enter(dev));
    CUresult r = dev->cu->StreamSynchronize(dev->stream);
    cu_leave(dev);
    if (r != CUDA_SUCCESS) return cu_fail(dev->cu, r, "cuStreamSynchronize");
    return XATTN_OK;
}

/* ---- buffers: a native handle is a CUdeviceptr -------------------------------- */

static xattn_status cu_buffer_alloc(xattn_device *dev, size_t bytes, void **native)
{
    XATTN_TRY(cu_enter(dev));
    CUdeviceptr p = 0;
    CUresult r = dev->cu->MemAlloc(&p, bytes);
    cu_leave(dev);
    if (r != CUDA_SUCCESS) return cu_fail(dev->cu, r, "cuMemAlloc");
    *native = (void *)(uintptr_t)p;
    return XATTN_OK;
}

static void cu_buffer_free(xattn_device *dev, void *native)
{
    if (!native || cu_enter(dev) != XATTN_OK) return;
    /* cuMemFree waits for the device to be done with the memory. */
    (void)dev->cu->MemFree((CUdeviceptr)(uintptr_t)native);
    cu_leave(dev);
}

static xattn_status cu_buffer_write(xattn_device *dev, void *native, size_t offset,
                                    const void *src, size_t bytes)
{
    XATTN_TRY(cu_enter(dev));
    CUresult r = dev->cu->MemcpyHtoDAsync((CUdeviceptr)(uintptr_t)native + offset, src, bytes,
                                          dev->stream);
    const char *what = "cuMemcpyHtoDAsync";
    if (r == CUDA_SUCCESS) {
        r = dev->cu->StreamSynchronize(dev->stream); /* src may go away on return */
        what = "cuStreamSynchronize";
    }
    cu_leave(dev);
    if (r != CUDA_SUCCESS) return cu_fail(dev->cu, r, what);
    return XATTN_OK;
}

static xattn_status cu_buffer_read(xattn_device *dev, const void *native, size_t offset,
                                   void *dst, size_t bytes)
{
    XATTN_TRY(cu_enter(dev));
    CUresult r = dev->cu->MemcpyDtoHAsync(dst, (CUdeviceptr)(uintptr_t)native + offset, bytes,
                                          dev->stream);
    const char *what = "cuMemcpyDtoHAsync";
    if (r == CUDA_SUCCESS) {
        r = dev->cu->StreamSynchronize(dev->stream);
        what = "cuStreamSynchronize";
    }
    cu_leave(dev);
    if (r != CUDA_SUCCESS) return cu_fail(dev->cu, r, what);
    return XATTN_OK;
}

/* ---- primitives: each inside the device's context ----------------------------- */

static xattn_status attn_prepare(xattn_device *dev, const struct xattn_plan *plan, void **state)
{
    XATTN_TRY(cu_enter(dev));
    xattn_status st = cu_attn_prepare(dev, plan, state);
    cu_leave(dev);
    return st;
}

static void attn_release(xattn_device *dev, void *state)
{
    if (cu_enter(dev) != XATTN_OK) return;
    cu_attn_release(dev, state);
    cu_leave(dev);
}

static xattn_status attn_run(xattn_device *dev, const struct xattn_plan *plan, const void *state,
                             const xattn_attn_launch *l)
{
    XATTN_TRY(cu_enter(dev));
    xattn_status st = cu_attn_run(dev, plan, state, l);
    cu_leave(dev);
    return st;
}

static xattn_status kv_append(xattn_device *dev, const xattn_kv_append_launch *l)
{
    XATTN_TRY(cu_enter(dev));
    xattn_status st = cu_kv_append(dev, l);
    cu_leave(dev);
    return st;
}

static xattn_status merge_states(xattn_device *dev, const xattn_merge_launch *l)
{
    XATTN_TRY(cu_enter(dev));
    xattn_status st = cu_merge_states(dev, l);
    cu_leave(dev);
    return st;
}

static xattn_status moe_prepare(xattn_device *dev, const struct xattn_moe_plan *plan,
                                void **state)
{
    XATTN_TRY(cu_enter(dev));
    xattn_status st = cu_moe_prepare(dev, plan, state);
    cu_leave(dev);
    return st;
}

static void moe_release(xattn_device *dev, void *state)
{
    if (cu_enter(dev) != XATTN_OK) return;
    cu_moe_release(dev, state);
    cu_leave(dev);
}

static xattn_status moe_run(xattn_device *dev, const struct xattn_moe_plan *plan,
                            const void *state, xattn_moe_op op, const xattn_moe_launch *l)
{
    XATTN_TRY(cu_enter(dev));
    xattn_status st = cu_moe_run(dev, plan, state, op, l);
    cu_leave(dev);
    return st;
}

static xattn_status measure_ceilings(xattn_device *dev, xattn_ceilings *out)
{
    XATTN_TRY(cu_enter(dev));
    xattn_status st = cu_measure_ceilings(dev, out);
    cu_leave(dev);
    return st;
}

static const xattn_backend_vtable cu_vtable = {
    .abi_version = XATTN_BACKEND_ABI_VERSION,
    .name = "cuda",
    .probe = cu_probe,
    .device_open = cu_device_open,
    .device_close = cu_device_close,
    .synchronize = cu_synchronize,
    .buffer_alloc = cu_buffer_alloc,
    .buffer_free = cu_buffer_free,
    .buffer_write = cu_buffer_write,
    .buffer_read = cu_buffer_read,
    .buffer_host_ptr = NULL, /* device memory: the front end skips content checks */
    .attn_prepare = attn_prepare,
    .attn_release = attn_release,
    .attn_run = attn_run,
    .kv_append = kv_append,
    .merge_states = merge_states,
    .moe_prepare = moe_prepare,
    .moe_release = moe_release,
    .moe_run = moe_run,
    .measure_ceilings = measure_ceilings,
};

XATTN_API const xattn_backend_vtable *xattn_backend_entry(void);
XATTN_API const xattn_backend_vtable *xattn_backend_entry(void) { return &cu_vtable; }
