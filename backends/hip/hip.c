/* HIP backend module (libxattn-hip.so): devices, caps read from the device,
 * buffers, streams, and the vtable. The kernels live in kernels/ (HIP C++
 * compiled by hiprtc); program.c compiles and caches them.
 *
 * The HIP runtime keeps a current device per thread: every vtable entry
 * that calls it makes the context's device current for its duration
 * (hip_enter / hip_leave) and restores the caller's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hip.h"
#include "plan.h"

/* ---- probing ---------------------------------------------------------------- */

static int32_t hip_probe(char *reason, size_t reason_size)
{
    if (reason_size) reason[0] = '\0';
    const hip_api *hip = hip_start(reason, reason_size);
    if (!hip) return 0;
    int n = 0;
    hipError_t r = hip->GetDeviceCount(&n);
    if (r != hipSuccess || n <= 0) {
        if (reason_size)
            snprintf(reason, reason_size, "no AMD GPU (hipGetDeviceCount: %s (%d), %d devices)",
                     hip->GetErrorName(r), (int)r, n);
        return 0;
    }
    return n;
}

/* ---- device scope ----------------------------------------------------------- */

xattn_status hip_enter(xattn_device *dev, int *saved)
{
    *saved = -1;
    if (dev->hip->GetDevice(saved) != hipSuccess) *saved = -1;
    if (*saved == dev->index) return XATTN_OK;
    HIP_TRY(dev->hip, dev->hip->SetDevice(dev->index));
    return XATTN_OK;
}

void hip_leave(xattn_device *dev, int saved)
{
    if (saved >= 0 && saved != dev->index) (void)dev->hip->SetDevice(saved);
}

/* ---- caps ------------------------------------------------------------------- */

static int attr(const xattn_device *dev, hipDeviceAttribute_t a)
{
    int v = 0;
    if (dev->hip->DeviceGetAttribute(&v, a, dev->index) != hipSuccess) v = 0;
    return v;
}

static int arch_is(const char *arch, const char *prefix)
{
    return !strncmp(arch, prefix, strlen(prefix));
}

/* f32 FLOP per clock per CU: 128 (64 lanes × FMA) on GCN, gfx908 and RDNA2;
 * twice that with packed FP32 on gfx90a and gfx94x (MI250X: one GCD's 110
 * CUs at 1.7 GHz, 47.9 TFLOP/s) and dual issue on RDNA3. */
static double f32_per_clock(const char *arch)
{
    return arch_is(arch, "gfx90a") || arch_is(arch, "gfx94") || arch_is(arch, "gfx11") ? 256.0
                                                                                       : 128.0;
}

/* Dense f16 matrix FLOP per clock per CU with f32 accumulation: 1024 on
 * gfx908 and gfx90a (MI100 184.6, MI250X GCD 191.5 TFLOP/s), 2048 on gfx94x
 * (MI300X: 304 CUs at 2.1 GHz, 1307 TFLOP/s), 512 with WMMA on gfx11
 * (RX 7900 XTX: 96 CUs at 2.5 GHz, 123 TFLOP/s). */
static double matrix_per_clock(const char *arch)
{
    if (arch_is(arch, "gfx94")) return 2048.0;
    if (arch_is(arch, "gfx908") || arch_is(arch, "gfx90a")) return 1024.0;
    if (arch_is(arch, "gfx11")) return 512.0;
    return 0.0;
}

/* Transfers per reported memory clock: HBM2/2e twice (MI250X: 1.6 GHz ×
 * 4096 bits per GCD = 1.6 TB/s), HBM3 on gfx94x four times (MI300X: 1.3 GHz
 * × 8192 bits = 5.3 TB/s), GDDR6 on RDNA sixteen times (RX 7900 XTX:
 * 1.25 GHz × 384 bits = 960 GB/s). Estimates for the planner; `xattn
 * bench` measures. */
static double transfers_per_clock(const char *arch)
{
    if (arch_is(arch, "gfx94")) return 4.0;
    if (arch_is(arch, "gfx10") || arch_is(arch, "gfx11")) return 16.0;
    return 2.0;
}

/* 32-bit registers a workgroup can hold, as the planner counts them
 * (common/presets.c): a CU's four SIMDs × 64 lanes × 512 VGPRs (ArchVGPRs
 * and AccVGPRs) on CDNA, × 256 on GCN; RDNA's workgroup in CU mode has two
 * SIMD32s of 128 KiB (RDNA2) or 192 KiB (RDNA3) of VGPRs. So the planner
 * sees the presets' figure on these whatever the runtime reports; the
 * runtime's hipDeviceAttributeMaxRegistersPerBlock is the fallback for
 * other architectures. */
static uint32_t registers_per_group(const char *arch, int attribute)
{
    if (!strcmp(arch, "gfx908") || !strcmp(arch, "gfx90a") || arch_is(arch, "gfx94"))
        return 131072;
    if (arch_is(arch, "gfx11")) return 98304;
    if (arch_is(arch, "gfx103") || !strcmp(arch, "gfx900") || !strcmp(arch, "gfx906"))
        return 65536;
    return attribute > 0 ? (uint32_t)attribute : 65536;
}

static void read_caps(xattn_device *dev)
{
    xattn_device_caps *c = &dev->caps;
    memset(c, 0, sizeof *c);
    const int khz = attr(dev, hipDeviceAttributeClockRate);
    const int mem_khz = attr(dev, hipDeviceAttributeMemoryClockRate);
    const int bus_bits = attr(dev, hipDeviceAttributeMemoryBusWidth);
    c->style = XATTN_DEVICE_STYLE_GPU;
    c->compute_units = (uint32_t)dev->cu_count;
    c->simd_width = (uint32_t)dev->wave;
    c->local_mem_bytes = (uint32_t)dev->lds_bytes;
    c->cache_bytes = (uint32_t)attr(dev, hipDeviceAttributeL2CacheSize);
    c->max_threads_per_group = (uint32_t)dev->max_threads;
    c->registers_per_group =
        registers_per_group(dev->arch, attr(dev, hipDeviceAttributeMaxRegistersPerBlock));
    c->matrix_dtypes = hip_arch_matrix(dev->arch);
    if (c->matrix_dtypes) {
        /* MFMA 16x16x16 (f16; bf16_1k on gfx90a and later) and WMMA
         * 16x16x16 on gfx11: the presets' shape (common/presets.c). */
        c->matrix_m = 16;
        c->matrix_n = 16;
        c->matrix_k = 16;
    }
    c->vector_bytes = 16;
    c->has_f16 = 1;
    c->has_bf16 = 1;
    const double hz = (khz > 0 ? khz : 1000000) * 1e3;
    c->peak_flops_f32 = dev->cu_count * f32_per_clock(dev->arch) * hz;
    c->peak_flops_f16 = c->matrix_dtypes ? dev->cu_count * matrix_per_clock(dev->arch) * hz
                                         : c->peak_flops_f32;
    c->peak_bytes_per_s = mem_khz > 0 && bus_bits > 0
                              ? transfers_per_clock(dev->arch) * mem_khz * 1e3 * (bus_bits / 8.0)
                              : 1e12;
    int n = snprintf(c->name, sizeof c->name, "%s (%s, wave%d, HIP %d.%d)", dev->name,
                     dev->arch_full, dev->wave, dev->hip->major, dev->hip->minor);
    if (n >= (int)sizeof c->name) c->name[sizeof c->name - 1] = '\0';
}

/* ---- device ----------------------------------------------------------------- */

static void hip_device_close(xattn_device *dev)
{
    if (!dev) return;
    int saved = -1;
    if (hip_enter(dev, &saved) == XATTN_OK) {
        /* Queued work may still read module code and buffers. */
        if (dev->stream || dev->own_stream) (void)dev->hip->StreamSynchronize(dev->stream);
        hip_ops_release(dev);
        hip_modules_release(dev);
        if (dev->own_stream && dev->stream) dev->hip->StreamDestroy(dev->stream);
        hip_leave(dev, saved);
    }
    pthread_mutex_destroy(&dev->lock);
    free(dev);
}

static xattn_status hip_device_open(int32_t index, const xattn_context_options *opts,
                                    xattn_device **out, xattn_device_caps *caps)
{
    char reason[768] = "";
    const hip_api *hip = hip_start(reason, sizeof reason);
    if (!hip) return xattn_error(XATTN_ERR_BACKEND_UNAVAILABLE, "hip: %s", reason);

    xattn_device *dev = calloc(1, sizeof *dev);
    if (!dev) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "hip: out of memory");
    dev->hip = hip;
    dev->index = index;
    pthread_mutex_init(&dev->lock, NULL);

    if (hip->DeviceGetName(dev->name, (int)sizeof dev->name, index) != hipSuccess)
        snprintf(dev->name, sizeof dev->name, "HIP device %d", (int)index);
    dev->name[sizeof dev->name - 1] = '\0';
    if (hip_device_arch_name(hip, index, dev->arch_full, sizeof dev->arch_full) != 0) {
        hip_device_close(dev);
        return xattn_error(XATTN_ERR_DEVICE, "hip: device %d: hipGetDeviceProperties gave no "
                           "gcnArchName", (int)index);
    }
    hip_arch_base(dev->arch_full, dev->arch, sizeof dev->arch);
    dev->cu_count = attr(dev, hipDeviceAttributeMultiprocessorCount);
    dev->lds_bytes = attr(dev, hipDeviceAttributeMaxSharedMemoryPerBlock);
    dev->max_threads = attr(dev, hipDeviceAttributeMaxThreadsPerBlock);
    dev->wave = attr(dev, hipDeviceAttributeWarpSize);
    if (dev->wave != 32 && dev->wave != 64) dev->wave = arch_is(dev->arch, "gfx1") ? 32 : 64;
    if (!hip_arch_allowed(hip->major, dev->arch)) {
        xattn_status st = xattn_error(
            XATTN_ERR_UNSUPPORTED,
            "hip: %s is %s; hiprtc of HIP %d.%d compiles xattn's kernels only for %s (a newer "
            "architecture needs a newer ROCm: gfx942 and gfx11xx need ROCm 6 or newer)",
            dev->name, dev->arch_full, hip->major, hip->minor, hip_arch_list(hip->major));
        hip_device_close(dev);
        return st;
    }
    int saved = -1;
    xattn_status st = hip_enter(dev, &saved);
    if (st == XATTN_OK) {
        if (opts->native_queue) {
            /* The caller's stream: it must belong to this device (ROCm 5
             * has no call to check that). */
            dev->stream = (hipStream_t)opts->native_queue;
        } else {
            hipError_t r = hip->StreamCreateWithFlags(&dev->stream, hipStreamNonBlocking);
            if (r != hipSuccess) st = hip_fail(hip, r, "hipStreamCreateWithFlags");
            else dev->own_stream = 1;
        }
        hip_leave(dev, saved);
    }
    if (st != XATTN_OK) {
        hip_device_close(dev);
        return st;
    }
    read_caps(dev);
    *caps = dev->caps;
    *out = dev;
    return XATTN_OK;
}

/* Run call with dev current: the bracket every entry below shares. */
#define IN_DEVICE(dev, call)                                                   \
    do {                                                                       \
        int saved_;                                                            \
        XATTN_TRY(hip_enter((dev), &saved_));                                  \
        xattn_status st_ = (call);                                             \
        hip_leave((dev), saved_);                                              \
        return st_;                                                            \
    } while (0)

static xattn_status sync_stream(xattn_device *dev)
{
    HIP_TRY(dev->hip, dev->hip->StreamSynchronize(dev->stream));
    return XATTN_OK;
}

static xattn_status hip_synchronize(xattn_device *dev) { IN_DEVICE(dev, sync_stream(dev)); }

/* ---- buffers: a native handle is a device address ----------------------------- */

static xattn_status alloc_in(xattn_device *dev, size_t bytes, void **native)
{
    void *p = NULL;
    HIP_TRY(dev->hip, dev->hip->Malloc(&p, bytes));
    *native = p;
    return XATTN_OK;
}

static xattn_status hip_buffer_alloc(xattn_device *dev, size_t bytes, void **native)
{
    IN_DEVICE(dev, alloc_in(dev, bytes, native));
}

static void hip_buffer_free(xattn_device *dev, void *native)
{
    int saved;
    if (!native || hip_enter(dev, &saved) != XATTN_OK) return;
    /* hipFree waits for the device to be done with the memory. */
    (void)dev->hip->Free(native);
    hip_leave(dev, saved);
}

static xattn_status write_in(xattn_device *dev, void *native, size_t offset, const void *src,
                             size_t bytes)
{
    HIP_TRY(dev->hip, dev->hip->MemcpyHtoDAsync((hipDeviceptr_t)((char *)native + offset),
                                                (void *)src, bytes, dev->stream));
    return sync_stream(dev); /* src may go away on return */
}

static xattn_status hip_buffer_write(xattn_device *dev, void *native, size_t offset,
                                     const void *src, size_t bytes)
{
    IN_DEVICE(dev, write_in(dev, native, offset, src, bytes));
}

static xattn_status read_in(xattn_device *dev, const void *native, size_t offset, void *dst,
                            size_t bytes)
{
    HIP_TRY(dev->hip, dev->hip->MemcpyDtoHAsync(dst, (hipDeviceptr_t)((char *)native + offset),
                                                bytes, dev->stream));
    return sync_stream(dev);
}

static xattn_status hip_buffer_read(xattn_device *dev, const void *native, size_t offset,
                                    void *dst, size_t bytes)
{
    IN_DEVICE(dev, read_in(dev, native, offset, dst, bytes));
}

/* ---- primitives: each with the device current ---------------------------------- */

static xattn_status attn_prepare(xattn_device *dev, const struct xattn_plan *plan, void **state)
{
    IN_DEVICE(dev, hip_attn_prepare(dev, plan, state));
}

static void attn_release(xattn_device *dev, void *state) { hip_attn_release(dev, state); }

static xattn_status attn_run(xattn_device *dev, const struct xattn_plan *plan, const void *state,
                             const xattn_attn_launch *l)
{
    IN_DEVICE(dev, hip_attn_run(dev, plan, state, l));
}

static xattn_status kv_append(xattn_device *dev, const xattn_kv_append_launch *l)
{
    IN_DEVICE(dev, hip_kv_append(dev, l));
}

static xattn_status merge_states(xattn_device *dev, const xattn_merge_launch *l)
{
    IN_DEVICE(dev, hip_merge_states(dev, l));
}

static xattn_status moe_prepare(xattn_device *dev, const struct xattn_moe_plan *plan,
                                void **state)
{
    IN_DEVICE(dev, hip_moe_prepare(dev, plan, state));
}

static void moe_release(xattn_device *dev, void *state) { hip_moe_release(dev, state); }

static xattn_status moe_run(xattn_device *dev, const struct xattn_moe_plan *plan,
                            const void *state, xattn_moe_op op, const xattn_moe_launch *l)
{
    IN_DEVICE(dev, hip_moe_run(dev, plan, state, op, l));
}

static const xattn_backend_vtable hip_vtable = {
    .abi_version = XATTN_BACKEND_ABI_VERSION,
    .name = "hip",
    .probe = hip_probe,
    .device_open = hip_device_open,
    .device_close = hip_device_close,
    .synchronize = hip_synchronize,
    .buffer_alloc = hip_buffer_alloc,
    .buffer_free = hip_buffer_free,
    .buffer_write = hip_buffer_write,
    .buffer_read = hip_buffer_read,
    .buffer_host_ptr = NULL, /* device memory: the front end skips content checks */
    .attn_prepare = attn_prepare,
    .attn_release = attn_release,
    .attn_run = attn_run,
    .kv_append = kv_append,
    .merge_states = merge_states,
    .moe_prepare = moe_prepare,
    .moe_release = moe_release,
    .moe_run = moe_run,
    .measure_ceilings = NULL, /* not yet: `xattn bench` uses the caps' estimates */
};

XATTN_API const xattn_backend_vtable *xattn_backend_entry(void);
XATTN_API const xattn_backend_vtable *xattn_backend_entry(void) { return &hip_vtable; }
