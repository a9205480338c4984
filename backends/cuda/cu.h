#pragma once
/* Internal interface of the CUDA backend module (libxattn-cuda.so): the
 * lazily loaded driver and NVRTC, the device, kernel compilation with its
 * caches, and launches. Every host file of backends/cuda/ includes this.
 *
 * Built against the CUDA Toolkit's cuda.h and nvrtc.h for their types and
 * constants only: nothing from CUDA is linked. At run time the module needs
 * the driver (libcuda.so.1) and NVRTC (libnvrtc.so.13, then .so.12), both
 * loaded with dlopen on first use. The kernels (kernels/, CUDA C++) include
 * no toolkit header, so NVRTC alone compiles them.
 *
 * Buffers: a buffer's native handle is its CUdeviceptr, cast to void *; an
 * operand (xattn_ref) is that address plus a byte offset, so kernels take
 * plain pointers (cu_ptr). Nothing here keeps host copies. */
#include <cuda.h>
#include <nvrtc.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "error.h"
#include "text.h"

/* ---- the driver and NVRTC, loaded with dlopen (cu_loader.c) --------------- */

/* Every driver entry point the module calls, resolved by their versioned
 * symbol names (cuMemAlloc_v2, ...), so the cuda.h macros that rename the
 * calls do not matter. Filled once by cu_load(). */
typedef struct cu_api {
    CUresult (*Init)(unsigned int);
    CUresult (*DriverGetVersion)(int *);
    CUresult (*DeviceGetCount)(int *);
    CUresult (*DeviceGet)(CUdevice *, int);
    CUresult (*DeviceGetName)(char *, int, CUdevice);
    CUresult (*DeviceGetAttribute)(int *, CUdevice_attribute, CUdevice);
    CUresult (*DeviceTotalMem)(size_t *, CUdevice);                 /* _v2 */
    CUresult (*DevicePrimaryCtxRetain)(CUcontext *, CUdevice);
    CUresult (*DevicePrimaryCtxRelease)(CUdevice);                  /* _v2 */
    CUresult (*CtxPushCurrent)(CUcontext);                          /* _v2 */
    CUresult (*CtxPopCurrent)(CUcontext *);                         /* _v2 */
    CUresult (*StreamCreate)(CUstream *, unsigned int);
    CUresult (*StreamDestroy)(CUstream);                            /* _v2 */
    CUresult (*StreamSynchronize)(CUstream);
    CUresult (*StreamGetCtx)(CUstream, CUcontext *);
    CUresult (*MemAlloc)(CUdeviceptr *, size_t);                    /* _v2 */
    CUresult (*MemFree)(CUdeviceptr);                               /* _v2 */
    CUresult (*MemcpyHtoDAsync)(CUdeviceptr, const void *, size_t, CUstream); /* _v2 */
    CUresult (*MemcpyDtoHAsync)(void *, CUdeviceptr, size_t, CUstream);       /* _v2 */
    CUresult (*MemsetD8Async)(CUdeviceptr, unsigned char, size_t, CUstream);
    CUresult (*PointerGetAttribute)(void *, CUpointer_attribute, CUdeviceptr);
    CUresult (*ModuleLoadData)(CUmodule *, const void *);
    CUresult (*ModuleUnload)(CUmodule);
    CUresult (*ModuleGetFunction)(CUfunction *, CUmodule, const char *);
    CUresult (*FuncSetAttribute)(CUfunction, CUfunction_attribute, int);
    CUresult (*FuncGetAttribute)(int *, CUfunction_attribute, CUfunction);
    CUresult (*LaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                             unsigned, unsigned, CUstream, void **, void **);
    CUresult (*GetErrorName)(CUresult, const char **);
    CUresult (*GetErrorString)(CUresult, const char **);
    int driver_version;        /* cuDriverGetVersion, e.g. 13000 */
    /* Events, for the ceilings' timing (ceilings.c). Optional: all NULL when
     * the driver lacks one of them (the emulator); the ceilings then time
     * with the host clock. */
    CUresult (*EventCreate)(CUevent *, unsigned int);
    CUresult (*EventDestroy)(CUevent);                              /* _v2 */
    CUresult (*EventRecord)(CUevent, CUstream);
    CUresult (*EventSynchronize)(CUevent);
    CUresult (*EventElapsedTime)(float *, CUevent, CUevent);        /* v1: every 12.x driver */
} cu_api;

/* NVRTC's entry points. Filled once by cu_nvrtc_load(). */
typedef struct nvrtc_api {
    nvrtcResult (*Version)(int *, int *);
    nvrtcResult (*CreateProgram)(nvrtcProgram *, const char *, const char *, int,
                                 const char *const *, const char *const *);
    nvrtcResult (*DestroyProgram)(nvrtcProgram *);
    nvrtcResult (*CompileProgram)(nvrtcProgram, int, const char *const *);
    nvrtcResult (*GetProgramLogSize)(nvrtcProgram, size_t *);
    nvrtcResult (*GetProgramLog)(nvrtcProgram, char *);
    nvrtcResult (*GetCUBINSize)(nvrtcProgram, size_t *);
    nvrtcResult (*GetCUBIN)(nvrtcProgram, char *);
    const char *(*GetErrorString)(nvrtcResult);
    int major, minor;          /* nvrtcVersion */
    char path[256];            /* the file that was loaded */
} nvrtc_api;

/* The loaded driver, initialised (cuInit(0) succeeded), or NULL with the
 * reason: "runtime library missing: cannot load libcuda.so.1 (<dlerror>)",
 * "cuInit: CUDA_ERROR_STUB_LIBRARY (34) from ...: stub driver, no GPU",
 * "cuInit: CUDA_ERROR_NO_DEVICE ...". XATTN_CUDA_DRIVER_PATH names another file
 * (tests use it for the stub driver and the emulator). Loads once,
 * thread-safely; never unloads. */
const cu_api *cu_load(char *reason, size_t reason_size);

/* NVRTC, or NULL with the reason ("NVRTC missing: cannot load
 * libnvrtc.so.13, libnvrtc.so.12 (...)"). XATTN_NVRTC_PATH names another
 * file. Needs no driver and no device (the CI compile test uses it alone).
 * Loads once, thread-safely. */
const nvrtc_api *cu_nvrtc_load(char *reason, size_t reason_size);

/* Convert a failing driver / NVRTC result into an xattn status with a
 * message naming the call and the native name (cuGetErrorName /
 * nvrtcGetErrorString): CUDA_ERROR_OUT_OF_MEMORY → XATTN_ERR_OUT_OF_MEMORY,
 * NVRTC_ERROR_COMPILATION → XATTN_ERR_COMPILE, anything else
 * XATTN_ERR_DEVICE. */
xattn_status cu_fail(const cu_api *cu, CUresult err, const char *what);
xattn_status cu_nvrtc_fail(const nvrtc_api *rtc, nvrtcResult err, const char *what);

/* The one boundary macro: run a driver call (dev->cu in scope as `cu`);
 * on failure return its xattn status. */
#define CU_TRY(cu, call)                                                       \
    do {                                                                       \
        CUresult cu_try_err_ = (call);                                         \
        if (cu_try_err_ != CUDA_SUCCESS) return cu_fail((cu), cu_try_err_, #call); \
    } while (0)
#define NVRTC_TRY(rtc, call)                                                   \
    do {                                                                       \
        nvrtcResult nvrtc_try_err_ = (call);                                   \
        if (nvrtc_try_err_ != NVRTC_SUCCESS)                                   \
            return cu_nvrtc_fail((rtc), nvrtc_try_err_, #call);                \
    } while (0)

/* ---- the device (cuda.c) -------------------------------------------------- */

typedef struct cu_module_entry cu_module_entry;

struct xattn_device {
    const cu_api *cu;
    const nvrtc_api *rtc;
    CUdevice device;
    CUcontext ctx;             /* the device's primary context, retained */
    CUstream stream;           /* the caller's (options.native_queue) or own */
    int own_stream;
    int cc_major, cc_minor;    /* compute capability */
    char arch[16];             /* NVRTC target: "sm_90a" on Hopper, "sm_80", ... */
    char name[128];
    int sm_count;
    int smem_optin;            /* opt-in shared memory per block, bytes */
    int max_threads;           /* per block */
    xattn_device_caps caps;
    /* Modules compiled for this device, by key (program.c); guarded by lock. */
    pthread_mutex_t lock;
    cu_module_entry *modules;
    struct cu_ops *ops;        /* kv_append / merge_states kernels (ops.c) */
};

/* The device address of an operand (0 when absent). */
static inline CUdeviceptr cu_ptr(xattn_ref r)
{
    return r.native ? (CUdeviceptr)(uintptr_t)r.native + (CUdeviceptr)r.offset : 0;
}

/* Make dev's context current on the calling thread for the scope of a call;
 * every vtable entry that calls the driver brackets its work with these. */
xattn_status cu_enter(xattn_device *dev);
void cu_leave(xattn_device *dev);

/* The NVRTC target for a compute capability: sm_90a for 9.0 (wgmma and TMA
 * need the "a" target), sm_100a for 10.0, else sm_<major><minor>. */
void cu_arch_name(int major, int minor, char *out, size_t size);

/* ---- variants: what a plan compiles (shared with the CI compile test) ------ */

/* One compilation a plan needs: an embedded source with -D constants, and
 * the kernels of it that will be launched. The option text never contains
 * the architecture; cu_compile adds it. Functions that fill these are pure
 * (no device), so tests/cuda compiles every variant of the conformance
 * catalogue for the h100 and a100 presets without a GPU. */
enum { CU_OPTIONS_SIZE = 1024, CU_MAX_KERNELS = 6, CU_MAX_VARIANTS = 8 };

typedef struct cu_variant {
    const char *source;                    /* "attn" for kernels/attn.cu */
    char options[CU_OPTIONS_SIZE];         /* " -DBLOCK_Q=64 -DIO=bf16 ..." */
    const char *kernels[CU_MAX_KERNELS];   /* launched kernels, NULL-terminated */
    int hot;                               /* attention / GEMM: must not spill */
    size_t smem_bytes;                     /* dynamic shared memory of its launches */
    int threads;                           /* threads per block of its launches */
} cu_variant;

/* The variants an attention plan compiles for a device with caps (the plan
 * was made for them), into out[0..*n). Errors: XATTN_ERR_UNSUPPORTED naming
 * what the CUDA kernels cannot do, XATTN_ERR_INTERNAL. (attn.c) */
xattn_status cu_attn_variants(const struct xattn_plan *plan, const xattn_device_caps *caps,
                              cu_variant *out, int *n);
/* The same for a MoE plan (moe.c) and for kv_append / merge_states of one
 * dtype (ops.c). */
xattn_status cu_moe_variants(const struct xattn_moe_plan *plan, const xattn_device_caps *caps,
                             cu_variant *out, int *n);
xattn_status cu_ops_variants(xattn_dtype dtype, cu_variant *out, int *n);

/* ---- compilation and modules (program.c) ---------------------------------- */

/* One embedded kernel source (kernels/<name>.cu with kernels/prelude.cuh in
 * front), from the generated cu_sources.c. */
typedef struct cu_source {
    const char *name;          /* "attn" for kernels/attn.cu */
    const char *text;
} cu_source;

/* The embedded source called name, or NULL. */
const cu_source *cu_source_find(const char *name);
/* Every embedded source, *count of them. */
const cu_source *cu_sources(size_t *count);

/* Compile source `name` with `options` for `arch` ("sm_90a") to a cubin
 * (malloc'd, *size bytes). The options given to NVRTC are
 * --gpu-architecture=<arch>, -std=c++17, -default-device,
 * -Xptxas=-v (registers, spills and shared memory land in the log),
 * -DXATTN_ARCH=<major·10+minor>, then options. When log is not NULL the
 * whole program log is returned in it (malloc'd), on success too.
 * Needs NVRTC only, no device. Errors: XATTN_ERR_COMPILE with the first
 * lines of the log, XATTN_ERR_INTERNAL for an unknown source,
 * XATTN_ERR_OUT_OF_MEMORY. Thread-safety: safe. */
xattn_status cu_compile(const nvrtc_api *rtc, const char *arch, const char *name,
                        const char *options, void **cubin, size_t *size, char **log);

/* The module of source `name` built with `options` for dev: from the
 * device's memory cache, else from the disk cache (XATTN_CACHE_DIR) keyed
 * by (source hash, options, arch, NVRTC version, driver version), else
 * compiled and written to both; a damaged or mismatched file is rebuilt.
 * The module stays owned by the device (unloaded at device_close).
 * Errors as cu_compile, plus XATTN_ERR_DEVICE from cuModuleLoadData.
 * Thread-safety: safe. Call inside cu_enter. */
xattn_status cu_module_get(xattn_device *dev, const char *name, const char *options,
                           CUmodule *out);

/* Unload every cached module of dev (device_close). */
void cu_modules_release(xattn_device *dev);

/* A kernel ready to launch: its function, dynamic shared memory and block
 * size, fixed at prepare time. */
typedef struct cu_kernel {
    CUfunction fn;
    unsigned smem;             /* dynamic shared memory bytes per block */
    unsigned threads;          /* threads per block (x) */
} cu_kernel;

/* Kernel `name` of module m, with smem bytes of dynamic shared memory and
 * threads per block: sets CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
 * when smem is over 48 KiB and checks smem against the device's opt-in
 * limit and threads against the kernel's CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK.
 * Errors: XATTN_ERR_UNSUPPORTED (does not fit), XATTN_ERR_DEVICE,
 * XATTN_ERR_INTERNAL (no such kernel). Call inside cu_enter. */
xattn_status cu_kernel_get(xattn_device *dev, CUmodule m, const char *name, size_t smem,
                           unsigned threads, cu_kernel *out);

/* All kernels of the variants, compiled (cu_module_get) and looked up
 * (cu_kernel_get) with each variant's smem_bytes and threads:
 * kernels[v][j] is variant v's kernel j. For prepare functions. */
xattn_status cu_variants_load(xattn_device *dev, const cu_variant *v, int n,
                              cu_kernel kernels[][CU_MAX_KERNELS]);

/* Launch k over grid (x, y, z) blocks on dev's stream with kernel
 * parameters args (an array of pointers to each argument, as
 * cuLaunchKernel takes them). Launch only: no allocation, no sync; grid
 * dimensions of 0 launch nothing. Errors: XATTN_ERR_DEVICE. Call inside
 * cu_enter. Thread-safety: safe (the driver serialises per stream). */
xattn_status cu_launch(xattn_device *dev, const cu_kernel *k, unsigned gx, unsigned gy,
                       unsigned gz, void **args);

/* ---- device ceilings (ceilings.c) ----------------------------------------- */

/* The ceiling kernels for a device with caps: one variant of
 * kernels/ceilings.cu (ceiling_copy, ceiling_fma, and ceiling_mma_bf16 where
 * caps has bf16 matrix units). Pure, like the other variant functions. */
xattn_status cu_ceilings_variants(const xattn_device_caps *caps, cu_variant *out, int *n);

/* The vtable's measure_ceilings: copy bandwidth, the f32 FMA rate and the
 * bf16 mma.sync rate (flops_matrix; 0 before sm_80). Waits for dev's stream;
 * allocates two copy arrays of up to 512 MiB and frees them. Errors:
 * XATTN_ERR_COMPILE, XATTN_ERR_OUT_OF_MEMORY, XATTN_ERR_DEVICE. Call inside
 * cu_enter. Thread-safety: safe; work queued meanwhile by other threads
 * lowers the rates. */
xattn_status cu_measure_ceilings(xattn_device *dev, xattn_ceilings *out);

/* ---- primitives (one file each) ------------------------------------------- */

/* kv_append, merge_states (ops.c): compiled on first use per device and
 * dtype (under dev->lock), launched on dev's stream. */
xattn_status cu_kv_append(xattn_device *dev, const xattn_kv_append_launch *l);
xattn_status cu_merge_states(xattn_device *dev, const xattn_merge_launch *l);
void cu_ops_release(xattn_device *dev);

/* Attention (attn.c): prepare compiles the plan's variants; run is
 * launch-only (the split-KV merge included). */
xattn_status cu_attn_prepare(xattn_device *dev, const struct xattn_plan *plan, void **state);
void cu_attn_release(xattn_device *dev, void *state);
xattn_status cu_attn_run(xattn_device *dev, const struct xattn_plan *plan, const void *state,
                         const xattn_attn_launch *l);

/* MoE (moe.c): route, dispatch, experts (the GEMMs), combine. */
xattn_status cu_moe_prepare(xattn_device *dev, const struct xattn_moe_plan *plan, void **state);
void cu_moe_release(xattn_device *dev, void *state);
xattn_status cu_moe_run(xattn_device *dev, const struct xattn_moe_plan *plan, const void *state,
                        xattn_moe_op op, const xattn_moe_launch *l);
