/* OpenCL backend module (libxattn-opencl.so): devices of every platform in
 * one list, caps read from the device, buffers, and the vtable. The kernels
 * live in kernels/ (OpenCL C); program.c builds and caches them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocl.h"
#include "plan.h"

/* XATTN_OPENCL_STYLE = auto | cpu | gpu: the kernel style the planner is told
 * to plan for. auto reads the device type; gpu on a CPU device runs the
 * GPU-style kernels on PoCL, which is how CI checks them without a GPU. */
#define STYLE_ENV "XATTN_OPENCL_STYLE"

/* Vendor queries that are not in the Khronos headers' core set. */
#define OCL_DEVICE_WARP_SIZE_NV 0x4003
#define OCL_DEVICE_REGISTERS_PER_BLOCK_NV 0x4002
#define OCL_DEVICE_WAVEFRONT_WIDTH_AMD 0x4043
#define OCL_DEVICE_SUB_GROUP_SIZES_INTEL 0x4108

enum {
    MAX_PLATFORMS = 16,
    MAX_DEVICES = 64,
    /* Lanes assumed when a GPU names no warp, wavefront or subgroup size. */
    DEFAULT_GPU_SIMD = 32,
    /* The f32 lanes of a CPU-style kernel's vectors (float16): the
     * planner's lanes on such a device. */
    MAX_CPU_LANES = 16,
};

/* ---- enumeration ------------------------------------------------------------ */

/* Every device of every platform: GPUs and accelerators first, then CPUs,
 * each in platform order, so device 0 is the GPU on a machine that also has
 * PoCL installed. Returns the count (at most max), or 0 with a reason. */
static int list_devices(const ocl_api *cl, cl_platform_id *plats, cl_device_id *devs, int max,
                        char *reason, size_t reason_size)
{
    cl_platform_id p[MAX_PLATFORMS];
    cl_uint np = 0;
    cl_int err = cl->GetPlatformIDs(MAX_PLATFORMS, p, &np);
    if (err != CL_SUCCESS || np == 0) {
        if (reason_size)
            snprintf(reason, reason_size, "no OpenCL platform (no ICD installed under "
                     "/etc/OpenCL/vendors; clGetPlatformIDs: %s)", ocl_status_name(err));
        return 0;
    }
    if (np > MAX_PLATFORMS) np = MAX_PLATFORMS;
    int n = 0;
    for (cl_uint i = 0; i < np && n < max; i++) {
        cl_uint nd = 0;
        if (cl->GetDeviceIDs(p[i], CL_DEVICE_TYPE_ALL, (cl_uint)(max - n), devs + n, &nd) !=
            CL_SUCCESS)
            continue;
        if (nd > (cl_uint)(max - n)) nd = (cl_uint)(max - n);
        for (cl_uint j = 0; j < nd; j++) plats[n + (int)j] = p[i];
        n += (int)nd;
    }
    /* Stable partition: move each non-CPU device ahead of the CPUs. */
    int front = 0;
    for (int i = 0; i < n; i++) {
        cl_device_type type = 0;
        cl->GetDeviceInfo(devs[i], CL_DEVICE_TYPE, sizeof type, &type, NULL);
        if (type & CL_DEVICE_TYPE_CPU) continue;
        cl_device_id d = devs[i];
        cl_platform_id pl = plats[i];
        for (int j = i; j > front; j--) {
            devs[j] = devs[j - 1];
            plats[j] = plats[j - 1];
        }
        devs[front] = d;
        plats[front] = pl;
        front++;
    }
    if (n == 0 && reason_size)
        snprintf(reason, reason_size, "%u OpenCL platform%s, but no device", np,
                 np == 1 ? "" : "s");
    return n;
}

static int32_t ocl_probe(char *reason, size_t reason_size)
{
    if (reason_size) reason[0] = '\0';
    const ocl_api *cl = ocl_load(reason, reason_size);
    if (!cl) return 0;
    cl_platform_id plats[MAX_DEVICES];
    cl_device_id devs[MAX_DEVICES];
    return list_devices(cl, plats, devs, MAX_DEVICES, reason, reason_size);
}

/* ---- caps ------------------------------------------------------------------- */

static void info_string(const ocl_api *cl, cl_device_id d, cl_device_info what, char *out,
                        size_t size)
{
    out[0] = '\0';
    if (cl->GetDeviceInfo(d, what, size, out, NULL) != CL_SUCCESS) out[0] = '\0';
    out[size - 1] = '\0';
}

static uint64_t info_uint(const ocl_api *cl, cl_device_id d, cl_device_info what, size_t bytes)
{
    uint64_t v = 0;
    unsigned char raw[8] = {0};
    if (bytes > sizeof raw || cl->GetDeviceInfo(d, what, bytes, raw, NULL) != CL_SUCCESS)
        return 0;
    if (bytes == 4) {
        uint32_t u;
        memcpy(&u, raw, 4);
        v = u;
    } else {
        memcpy(&v, raw, bytes == 8 ? 8 : sizeof v);
    }
    return v;
}

static int has_extension(const char *exts, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = exts; (p = strstr(p, name)) != NULL; p += n)
        if ((p == exts || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0')) return 1;
    return 0;
}

static uint32_t clamp_u32(uint64_t v) { return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v; }

/* Fill dev->caps from the device. */
static xattn_status read_caps(xattn_device *dev, xattn_device_style style)
{
    const ocl_api *cl = dev->cl;
    cl_device_id d = dev->device;
    xattn_device_caps *c = &dev->caps;
    memset(c, 0, sizeof *c);

    char exts[8192];
    info_string(cl, d, CL_DEVICE_EXTENSIONS, exts, sizeof exts);
    uint32_t units = clamp_u32(info_uint(cl, d, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof(cl_uint)));
    uint32_t mhz = clamp_u32(info_uint(cl, d, CL_DEVICE_MAX_CLOCK_FREQUENCY, sizeof(cl_uint)));
    uint32_t vec = clamp_u32(info_uint(cl, d, CL_DEVICE_NATIVE_VECTOR_WIDTH_FLOAT,
                                       sizeof(cl_uint)));
    dev->max_group_size = (size_t)info_uint(cl, d, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof(size_t));
    dev->local_mem_bytes = (size_t)info_uint(cl, d, CL_DEVICE_LOCAL_MEM_SIZE, sizeof(cl_ulong));
    uint64_t cache = info_uint(cl, d, CL_DEVICE_GLOBAL_MEM_CACHE_SIZE, sizeof(cl_ulong));
    if (!units) units = 1;
    if (!vec) vec = 1;

    c->style = style;
    c->compute_units = units;
    c->max_threads_per_group = clamp_u32(dev->max_group_size);
    c->matrix_dtypes = 0; /* OpenCL C has no portable matrix instructions */
    /* f16 is stored and loaded with vload_half/vstore_half (core OpenCL C,
     * no cl_khr_fp16 needed) and computed in f32, as the contract asks;
     * bf16 by bit conversion. Every device therefore takes both. */
    c->has_f16 = 1;
    c->has_bf16 = 1;

    if (style == XATTN_DEVICE_STYLE_CPU) {
        /* A CPU behind OpenCL (PoCL): the driver's threads run on this
         * host, so the host's caches size the tiles. The planner's lanes
         * are the CPU-style kernels' float16 vectors (attn_cpu.c), whatever
         * the native width: PoCL splits a float16 into two AVX2 vectors, and
         * head dims padded to 8 would not fit those kernels. The FLOP peak
         * counts the native width. */
        xattn_device_caps host;
        xattn_host_cpu_caps((int32_t)units, &host);
        if (vec > MAX_CPU_LANES) vec = MAX_CPU_LANES;
        c->simd_width = MAX_CPU_LANES;
        c->local_mem_bytes = host.local_mem_bytes;
        if (dev->local_mem_bytes && dev->local_mem_bytes < c->local_mem_bytes)
            c->local_mem_bytes = clamp_u32(dev->local_mem_bytes);
        c->cache_bytes = host.cache_bytes;
        c->vector_bytes = vec * 4u;
        c->peak_flops_f32 = (double)units * 2.0 * 2.0 * vec * (mhz ? mhz : 2500) * 1e6;
        c->peak_flops_f16 = c->peak_flops_f32;
        c->peak_bytes_per_s = host.peak_bytes_per_s;
    } else {
        uint64_t simd = info_uint(cl, d, OCL_DEVICE_WARP_SIZE_NV, sizeof(cl_uint));
        if (!simd) simd = info_uint(cl, d, OCL_DEVICE_WAVEFRONT_WIDTH_AMD, sizeof(cl_uint));
        if (!simd && has_extension(exts, "cl_intel_required_subgroup_size")) {
            size_t sizes[8] = {0};
            if (cl->GetDeviceInfo(d, OCL_DEVICE_SUB_GROUP_SIZES_INTEL, sizeof sizes, sizes,
                                  NULL) == CL_SUCCESS)
                for (size_t i = 0; i < 8; i++)
                    if (sizes[i] > simd) simd = sizes[i];
        }
        if (!simd && !dev->cpu_style && dev->max_group_size >= DEFAULT_GPU_SIMD)
            simd = DEFAULT_GPU_SIMD;
        if (!simd) simd = vec; /* a CPU device told to plan GPU-style */
        c->simd_width = clamp_u32(simd);
        c->local_mem_bytes = clamp_u32(dev->local_mem_bytes);
        c->cache_bytes = clamp_u32(cache);
        c->registers_per_group =
            clamp_u32(info_uint(cl, d, OCL_DEVICE_REGISTERS_PER_BLOCK_NV, sizeof(cl_uint)));
        c->vector_bytes = 16; /* float4 loads */
        /* Rough: one FMA per lane per clock over 64 lanes per unit. */
        c->peak_flops_f32 = (double)units * 64.0 * 2.0 * (mhz ? mhz : 1000) * 1e6;
        c->peak_flops_f16 = c->peak_flops_f32;
        c->peak_bytes_per_s = 500e9;
    }
    char subgroups[64] = "";
    if (has_extension(exts, "cl_khr_subgroups") ||
        has_extension(exts, "cl_intel_required_subgroup_size"))
        snprintf(subgroups, sizeof subgroups, ", subgroups of %u", c->simd_width);
    int n = snprintf(c->name, sizeof c->name, "%s (%s, driver %s%s%s)", dev->device_name,
                     dev->platform_name, dev->driver_version,
                     has_extension(exts, "cl_khr_fp16") ? ", fp16" : "", subgroups);
    if (n >= (int)sizeof c->name) c->name[sizeof c->name - 1] = '\0'; /* truncated name */
    return XATTN_OK;
}

static xattn_status parse_style(int is_cpu, xattn_device_style *out)
{
    const char *v = getenv(STYLE_ENV);
    if (!v || !*v || !strcmp(v, "auto")) {
        *out = is_cpu ? XATTN_DEVICE_STYLE_CPU : XATTN_DEVICE_STYLE_GPU;
        return XATTN_OK;
    }
    if (!strcmp(v, "cpu")) *out = XATTN_DEVICE_STYLE_CPU;
    else if (!strcmp(v, "gpu")) *out = XATTN_DEVICE_STYLE_GPU;
    else
        return xattn_error(XATTN_ERR_INVALID_ENV, "%s=%s: valid values are auto, cpu, gpu",
                           STYLE_ENV, v);
    return XATTN_OK;
}

/* ---- device ----------------------------------------------------------------- */

static void ocl_device_close(xattn_device *dev)
{
    if (!dev) return;
    ocl_ops_release(dev);
    ocl_programs_release(dev);
    if (dev->queue) dev->cl->ReleaseCommandQueue(dev->queue);
    if (dev->context) dev->cl->ReleaseContext(dev->context);
    pthread_mutex_destroy(&dev->lock);
    free(dev);
}

static xattn_status ocl_device_open(int32_t index, const xattn_context_options *opts,
                                    xattn_device **out, xattn_device_caps *caps)
{
    char reason[256] = "";
    const ocl_api *cl = ocl_load(reason, sizeof reason);
    if (!cl) return xattn_error(XATTN_ERR_BACKEND_UNAVAILABLE, "opencl: %s", reason);

    xattn_device *dev = calloc(1, sizeof *dev);
    if (!dev) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "opencl: out of memory");
    dev->cl = cl;
    pthread_mutex_init(&dev->lock, NULL);
    xattn_status st = XATTN_OK;
    cl_int err = CL_SUCCESS;

    if (opts->native_queue) {
        /* The caller's queue decides the context and device. */
        cl_command_queue q = (cl_command_queue)opts->native_queue;
        err = cl->GetCommandQueueInfo(q, CL_QUEUE_CONTEXT, sizeof dev->context, &dev->context,
                                      NULL);
        if (err == CL_SUCCESS)
            err = cl->GetCommandQueueInfo(q, CL_QUEUE_DEVICE, sizeof dev->device, &dev->device,
                                          NULL);
        if (err != CL_SUCCESS) {
            dev->context = NULL;
            ocl_device_close(dev);
            return xattn_error(XATTN_ERR_INVALID_ARGUMENT,
                               "options.native_queue: not an OpenCL command queue (%s)",
                               ocl_status_name(err));
        }
        cl->RetainContext(dev->context);
        cl->RetainCommandQueue(q);
        dev->queue = q;
        cl->GetDeviceInfo(dev->device, CL_DEVICE_PLATFORM, sizeof dev->platform, &dev->platform,
                          NULL);
    } else {
        cl_platform_id plats[MAX_DEVICES];
        cl_device_id devs[MAX_DEVICES];
        int n = list_devices(cl, plats, devs, MAX_DEVICES, reason, sizeof reason);
        if (index < 0 || index >= n) {
            ocl_device_close(dev);
            return xattn_error(XATTN_ERR_BACKEND_UNAVAILABLE, "opencl: no device %d (%d found%s%s)",
                               (int)index, n, n ? "" : ": ", reason);
        }
        dev->platform = plats[index];
        dev->device = devs[index];
        dev->context = cl->CreateContext(NULL, 1, &dev->device, NULL, NULL, &err);
        if (!dev->context) {
            ocl_device_close(dev);
            return ocl_fail(err, "clCreateContext");
        }
        dev->queue = cl->CreateCommandQueue(dev->context, dev->device, 0, &err);
        if (!dev->queue) {
            ocl_device_close(dev);
            return ocl_fail(err, "clCreateCommandQueue");
        }
    }

    info_string(cl, dev->device, CL_DEVICE_NAME, dev->device_name, sizeof dev->device_name);
    info_string(cl, dev->device, CL_DRIVER_VERSION, dev->driver_version,
                sizeof dev->driver_version);
    info_string(cl, dev->device, CL_DEVICE_VERSION, dev->device_version,
                sizeof dev->device_version);
    dev->platform_name[0] = '\0';
    if (dev->platform)
        cl->GetPlatformInfo(dev->platform, CL_PLATFORM_NAME, sizeof dev->platform_name,
                            dev->platform_name, NULL);
    dev->platform_name[sizeof dev->platform_name - 1] = '\0';
    cl_device_type type = 0;
    cl->GetDeviceInfo(dev->device, CL_DEVICE_TYPE, sizeof type, &type, NULL);
    dev->cpu_style = (type & CL_DEVICE_TYPE_CPU) != 0;

    xattn_device_style style = XATTN_DEVICE_STYLE_GPU;
    st = parse_style(dev->cpu_style, &style);
    if (st == XATTN_OK) st = read_caps(dev, style);
    if (st != XATTN_OK) {
        ocl_device_close(dev);
        return st;
    }
    dev->cpu_style = style == XATTN_DEVICE_STYLE_CPU;
    *caps = dev->caps;
    *out = dev;
    return XATTN_OK;
}

static xattn_status ocl_synchronize(xattn_device *dev)
{
    OCL_TRY(dev->cl->Finish(dev->queue));
    return XATTN_OK;
}

/* ---- buffers ---------------------------------------------------------------- */

static xattn_status ocl_buffer_alloc(xattn_device *dev, size_t bytes, void **native)
{
    cl_int err = CL_SUCCESS;
    cl_mem m = dev->cl->CreateBuffer(dev->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (!m) return ocl_fail(err, "clCreateBuffer");
    *native = m;
    return XATTN_OK;
}

static void ocl_buffer_free(xattn_device *dev, void *native)
{
    if (native) dev->cl->ReleaseMemObject((cl_mem)native);
}

static xattn_status ocl_buffer_write(xattn_device *dev, void *native, size_t offset,
                                     const void *src, size_t bytes)
{
    OCL_TRY(dev->cl->EnqueueWriteBuffer(dev->queue, (cl_mem)native, CL_TRUE, offset, bytes, src,
                                        0, NULL, NULL));
    return XATTN_OK;
}

static xattn_status ocl_buffer_read(xattn_device *dev, const void *native, size_t offset,
                                    void *dst, size_t bytes)
{
    OCL_TRY(dev->cl->EnqueueReadBuffer(dev->queue, (cl_mem)native, CL_TRUE, offset, bytes, dst, 0,
                                       NULL, NULL));
    return XATTN_OK;
}

/* ---- attention: pick the style's kernels ----------------------------------- */

typedef struct attn_state {
    xattn_device_style style;
    void *inner;
} attn_state;

static xattn_status ocl_attn_prepare(xattn_device *dev, const struct xattn_plan *plan,
                                     void **state)
{
    *state = NULL;
    attn_state *s = calloc(1, sizeof *s);
    if (!s) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "opencl: out of memory");
    s->style = plan->params.style;
    xattn_status st = s->style == XATTN_DEVICE_STYLE_CPU
                          ? ocl_attn_cpu_prepare(dev, plan, &s->inner)
                          : ocl_attn_gpu_prepare(dev, plan, &s->inner);
    if (st != XATTN_OK) {
        free(s);
        return st;
    }
    *state = s;
    return XATTN_OK;
}

static void ocl_attn_release(xattn_device *dev, void *state)
{
    attn_state *s = state;
    if (!s) return;
    if (s->style == XATTN_DEVICE_STYLE_CPU) ocl_attn_cpu_release(dev, s->inner);
    else ocl_attn_gpu_release(dev, s->inner);
    free(s);
}

static xattn_status ocl_attn_run(xattn_device *dev, const struct xattn_plan *plan,
                                 const void *state, const xattn_attn_launch *l)
{
    const attn_state *s = state;
    return s->style == XATTN_DEVICE_STYLE_CPU ? ocl_attn_cpu_run(dev, plan, s->inner, l)
                                              : ocl_attn_gpu_run(dev, plan, s->inner, l);
}

static const xattn_backend_vtable ocl_vtable = {
    .abi_version = XATTN_BACKEND_ABI_VERSION,
    .name = "opencl",
    .probe = ocl_probe,
    .device_open = ocl_device_open,
    .device_close = ocl_device_close,
    .synchronize = ocl_synchronize,
    .buffer_alloc = ocl_buffer_alloc,
    .buffer_free = ocl_buffer_free,
    .buffer_write = ocl_buffer_write,
    .buffer_read = ocl_buffer_read,
    .buffer_host_ptr = NULL, /* device memory: the front end skips content checks */
    .attn_prepare = ocl_attn_prepare,
    .attn_release = ocl_attn_release,
    .attn_run = ocl_attn_run,
    .kv_append = ocl_kv_append,
    .merge_states = ocl_merge_states,
    .moe_prepare = ocl_moe_prepare,
    .moe_release = ocl_moe_release,
    .moe_run = ocl_moe_run,
    .measure_ceilings = ocl_measure_ceilings,
};

XATTN_API const xattn_backend_vtable *xattn_backend_entry(void);
XATTN_API const xattn_backend_vtable *xattn_backend_entry(void) { return &ocl_vtable; }
