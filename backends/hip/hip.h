#pragma once
/* Internal interface of the HIP backend module (libxattn-hip.so): the
 * lazily loaded HIP runtime and hiprtc, the device, kernel compilation with
 * its caches, and launches. Every host file of backends/hip/ includes this.
 *
 * Built against HIP's hip_runtime_api.h and hiprtc.h for their types and
 * constants only: nothing from ROCm is linked. At run time the module needs
 * libamdhip64.so.6 (or .so.5), loaded with dlopen on first use; hiprtc is
 * inside it on ROCm 5 and in libhiprtc.so.6 beside it on ROCm 6. The
 * kernels (kernels/, HIP C++) include no header: hiprtc supplies the HIP
 * device builtins itself.
 *
 * Buffers: a buffer's native handle is its device address (hipMalloc),
 * an operand (xattn_ref) that address plus a byte offset, so kernels take
 * plain pointers (hip_ptr). Nothing here keeps host copies. */
#ifndef __HIP_PLATFORM_AMD__
#define __HIP_PLATFORM_AMD__ 1
#endif
#include <hip/hip_runtime_api.h>
#include <hip/hiprtc.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "error.h"
#include "text.h"

/* ---- the HIP runtime and hiprtc, loaded with dlopen (hip_loader.c) -------- */

/* THE list of HIP entry points this module calls, each resolved by the
 * exported name in its comment; nothing else of ROCm is used (the CPU
 * emulator's fake libamdhip64 implements exactly this list). Filled once
 * by hip_load(). Enum values passed through it (hipDeviceAttribute_t,
 * hipFunction_attribute, hipStreamNonBlocking) are the same in ROCm 5
 * and 6 for every value this module uses (ROCm 6 retired
 * hipDeviceAttributeGcnArchName, so the architecture's name comes from the
 * properties); the one struct, hipDeviceProp_t, is not (see
 * GetDeviceProperties). */
typedef struct hip_api {
    hipError_t (*Init)(unsigned int);                                 /* hipInit */
    hipError_t (*RuntimeGetVersion)(int *);                           /* hipRuntimeGetVersion */
    hipError_t (*GetDeviceCount)(int *);                              /* hipGetDeviceCount */
    hipError_t (*SetDevice)(int);                                     /* hipSetDevice */
    hipError_t (*GetDevice)(int *);                                   /* hipGetDevice */
    hipError_t (*DeviceGetName)(char *, int, int);                    /* hipDeviceGetName */
    hipError_t (*DeviceGetAttribute)(int *, hipDeviceAttribute_t, int); /* hipDeviceGetAttribute */
    /* hipGetDeviceProperties on ROCm 5 (hipDeviceProp_t of 792 bytes,
     * gcnArchName at byte 396), hipGetDevicePropertiesR0600 on ROCm 6
     * (1472 bytes, gcnArchName at 1160): chosen by the runtime's major
     * version, read only for gcnArchName (hip_loader.c). */
    hipError_t (*GetDeviceProperties)(void *, int);
    hipError_t (*DeviceTotalMem)(size_t *, int);                      /* hipDeviceTotalMem */
    hipError_t (*StreamCreateWithFlags)(hipStream_t *, unsigned int); /* hipStreamCreateWithFlags */
    hipError_t (*StreamDestroy)(hipStream_t);                         /* hipStreamDestroy */
    hipError_t (*StreamSynchronize)(hipStream_t);                     /* hipStreamSynchronize */
    hipError_t (*Malloc)(void **, size_t);                            /* hipMalloc */
    hipError_t (*Free)(void *);                                       /* hipFree */
    hipError_t (*MemcpyHtoDAsync)(hipDeviceptr_t, void *, size_t, hipStream_t); /* hipMemcpyHtoDAsync */
    hipError_t (*MemcpyDtoHAsync)(void *, hipDeviceptr_t, size_t, hipStream_t); /* hipMemcpyDtoHAsync */
    hipError_t (*MemsetAsync)(void *, int, size_t, hipStream_t);      /* hipMemsetAsync */
    hipError_t (*ModuleLoadData)(hipModule_t *, const void *);        /* hipModuleLoadData */
    hipError_t (*ModuleUnload)(hipModule_t);                          /* hipModuleUnload */
    hipError_t (*ModuleGetFunction)(hipFunction_t *, hipModule_t, const char *); /* hipModuleGetFunction */
    hipError_t (*FuncGetAttribute)(int *, hipFunction_attribute, hipFunction_t); /* hipFuncGetAttribute */
    hipError_t (*ModuleLaunchKernel)(hipFunction_t, unsigned int, unsigned int, unsigned int,
                                     unsigned int, unsigned int, unsigned int, unsigned int,
                                     hipStream_t, void **, void **); /* hipModuleLaunchKernel */
    const char *(*GetErrorName)(hipError_t);                          /* hipGetErrorName */
    const char *(*GetErrorString)(hipError_t);                        /* hipGetErrorString */
    /* hiprtc: in the runtime library (ROCm 5) or libhiprtc.so.6 (ROCm 6). */
    hiprtcResult (*rtcVersion)(int *, int *);                         /* hiprtcVersion */
    hiprtcResult (*rtcCreateProgram)(hiprtcProgram *, const char *, const char *, int,
                                     const char **, const char **); /* hiprtcCreateProgram */
    hiprtcResult (*rtcDestroyProgram)(hiprtcProgram *);               /* hiprtcDestroyProgram */
    hiprtcResult (*rtcCompileProgram)(hiprtcProgram, int, const char **); /* hiprtcCompileProgram */
    hiprtcResult (*rtcGetProgramLogSize)(hiprtcProgram, size_t *);    /* hiprtcGetProgramLogSize */
    hiprtcResult (*rtcGetProgramLog)(hiprtcProgram, char *);          /* hiprtcGetProgramLog */
    hiprtcResult (*rtcGetCodeSize)(hiprtcProgram, size_t *);          /* hiprtcGetCodeSize */
    hiprtcResult (*rtcGetCode)(hiprtcProgram, char *);                /* hiprtcGetCode */
    const char *(*rtcGetErrorString)(hiprtcResult);                   /* hiprtcGetErrorString */

    int runtime_version;       /* hipRuntimeGetVersion: 50221153 is ROCm 5.2 */
    int major, minor;          /* of runtime_version */
    int rtc_major, rtc_minor;  /* hiprtcVersion */
    char path[256];            /* the runtime library that was loaded */
} hip_api;

/* Bytes reserved for a hipDeviceProp_t of either layout. */
enum { HIP_PROPS_BYTES = 4096 };

/* The loaded runtime with every entry point resolved (no hipInit: hiprtc
 * needs no device, so the CI compile test uses this alone), or NULL with
 * the reason: "runtime library missing: cannot load libamdhip64.so.6,
 * libamdhip64.so.5 (...)", "... lacks hipModuleLaunchKernel". 
 * XATTN_HIP_RUNTIME_PATH names another file. Loads once, thread-safely;
 * never unloads. */
const hip_api *hip_load(char *reason, size_t reason_size);

/* hip_load, then hipInit(0) once: NULL with the reason when there is no
 * usable device, e.g. "hipInit: hipErrorInvalidDevice (101) from
 * libamdhip64.so.5 (HIP 5.2.21153): no AMD GPU (hipGetDeviceCount:
 * hipErrorNoDevice (100), 0 devices)". */
const hip_api *hip_start(char *reason, size_t reason_size);

/* The gcnArchName of device `index` ("gfx90a:sramecc+:xnack-") read with
 * the properties entry of the loaded runtime's layout. Returns 0, or -1. */
int hip_device_arch_name(const hip_api *hip, int index, char *out, size_t size);

/* Convert a failing runtime / hiprtc result into an xattn status with a
 * message naming the call and the runtime's own name for the code:
 * hipErrorOutOfMemory → XATTN_ERR_OUT_OF_MEMORY,
 * HIPRTC_ERROR_COMPILATION → XATTN_ERR_COMPILE, anything else
 * XATTN_ERR_DEVICE. */
xattn_status hip_fail(const hip_api *hip, hipError_t err, const char *what);
xattn_status hip_rtc_fail(const hip_api *hip, hiprtcResult err, const char *what);

/* The one boundary macro: run a runtime call; on failure return its
 * xattn status. */
#define HIP_TRY(hip, call)                                                     \
    do {                                                                       \
        hipError_t hip_try_err_ = (call);                                      \
        if (hip_try_err_ != hipSuccess) return hip_fail((hip), hip_try_err_, #call); \
    } while (0)

/* ---- architectures (program.c) --------------------------------------------- */

/* The architecture part of a gcnArchName: "gfx90a" of
 * "gfx90a:sramecc+:xnack-". */
void hip_arch_base(const char *full, char *out, size_t size);

/* Whether hiprtc of ROCm `major` compiles for arch (base name): a code
 * object manager that does not know an architecture aborts the process,
 * so only these are ever handed to it. ROCm 5: gfx900, gfx906, gfx908,
 * gfx90a, gfx1030-gfx1036 (RDNA2); ROCm 6 adds gfx940, gfx941, gfx942,
 * gfx1100, gfx1101, gfx1102. */
int hip_arch_allowed(int rocm_major, const char *arch);

/* The architectures hip_arch_allowed accepts for `major`, comma-separated,
 * for messages. */
const char *hip_arch_list(int rocm_major);

/* What the matrix units of an architecture take, as XATTN_MATRIX_* bits:
 * MFMA f16 on gfx908; f16 and bf16 on gfx90a and gfx94x; WMMA f16 and bf16
 * on gfx11; none elsewhere (RDNA2, gfx900, gfx906). */
uint32_t hip_arch_matrix(const char *arch);

/* ---- the device (hip.c) ----------------------------------------------------- */

typedef struct hip_module_entry hip_module_entry;

struct xattn_device {
    const hip_api *hip;
    int index;                 /* HIP device ordinal */
    hipStream_t stream;        /* the caller's (options.native_queue) or own */
    int own_stream;
    char arch_full[256];       /* gcnArchName, feature suffixes kept: the cache key */
    char arch[32];             /* its base, hiprtc's target: "gfx90a" */
    char name[128];
    int cu_count;
    int lds_bytes;             /* LDS per block */
    int max_threads;           /* per block */
    int wave;                  /* 64 on CDNA and GCN, 32 on RDNA */
    xattn_device_caps caps;
    /* Modules compiled for this device, by key (program.c); guarded by lock. */
    pthread_mutex_t lock;
    hip_module_entry *modules;
    struct hip_ops *ops;       /* kv_append / merge_states kernels (ops.c) */
};

/* The device address of an operand (NULL when absent). */
static inline void *hip_ptr(xattn_ref r)
{
    return r.native ? (void *)((char *)r.native + r.offset) : NULL;
}

/* Make dev's device current on the calling thread for the scope of a call
 * (the runtime keeps a current device per thread); hip_leave restores the
 * caller's. Every vtable entry that calls the runtime brackets its work. */
xattn_status hip_enter(xattn_device *dev, int *saved);
void hip_leave(xattn_device *dev, int saved);

/* ---- variants: what a plan compiles (shared with the CI compile test) ------ */

/* One compilation a plan needs: an embedded source with -D constants, and
 * the kernels of it that will be launched. The option text never contains
 * the architecture; hip_compile adds it. Functions that fill these are
 * pure (no device), so tests/hip compiles every variant of the conformance
 * catalogue for gfx90a, gfx908 and gfx1030 without a GPU. */
enum { HIP_OPTIONS_SIZE = 1024, HIP_MAX_KERNELS = 6, HIP_MAX_VARIANTS = 8 };

typedef struct hip_variant {
    const char *source;                    /* "attn" for kernels/attn.hip */
    char options[HIP_OPTIONS_SIZE];        /* " -DIO=bf16 -DIO_BF16=1 -DDQK=128 ..." */
    const char *kernels[HIP_MAX_KERNELS];  /* launched kernels, NULL-terminated */
    int hot;                               /* attention / GEMM: must not spill */
    int mfma;                              /* meant for matrix cores: its code object
                                              must hold v_mfma on CDNA (tests/hip) */
    size_t lds_bytes;                      /* dynamic LDS of its launches */
    int threads;                           /* threads per block of its launches */
} hip_variant;

/* The variants an attention plan compiles for a device with caps (the plan
 * was made for them), into out[0..*n). Errors: XATTN_ERR_UNSUPPORTED naming
 * what the HIP kernels cannot do, XATTN_ERR_INTERNAL. (attn.c) */
xattn_status hip_attn_variants(const struct xattn_plan *plan, const xattn_device_caps *caps,
                               hip_variant *out, int *n);
/* sizeof the attention kernels' by-value argument (attn_args, attn.c): the
 * compile test checks each attention code object's first argument against
 * it, so the host and kernel copies of the struct cannot drift apart. */
size_t hip_attn_args_bytes(void);
/* The same for a MoE plan (moe.c) and for kv_append / merge_states of one
 * dtype (ops.c). */
xattn_status hip_moe_variants(const struct xattn_moe_plan *plan, const xattn_device_caps *caps,
                              hip_variant *out, int *n);
xattn_status hip_ops_variants(xattn_dtype dtype, hip_variant *out, int *n);

/* ---- compilation and modules (program.c) ---------------------------------- */

/* One embedded kernel source (kernels/<name>.hip with kernels/prelude.hip
 * in front), from the generated hip_sources.c. */
typedef struct hip_source {
    const char *name;          /* "attn" for kernels/attn.hip */
    const char *text;
} hip_source;

/* The embedded source called name, or NULL. */
const hip_source *hip_source_find(const char *name);
/* Every embedded source, *count of them. */
const hip_source *hip_sources(size_t *count);

/* Compile source `name` with `options` for `arch` (a base name such as
 * "gfx90a"; hip_arch_allowed must accept it for the loaded runtime, else
 * XATTN_ERR_UNSUPPORTED and hiprtc is not called) to a code object
 * (malloc'd, *size bytes). The options given to hiprtc are
 * --offload-arch=<arch>, -O3, -std=c++17, -DXATTN_HIP=1, then options.
 * When log is not NULL the program log is returned in it (malloc'd), on
 * success too. Needs hiprtc only, no device. Errors: XATTN_ERR_COMPILE
 * with the first lines of the log, XATTN_ERR_INTERNAL for an unknown
 * source, XATTN_ERR_OUT_OF_MEMORY. Thread-safety: safe. */
xattn_status hip_compile(const hip_api *hip, const char *arch, const char *name,
                         const char *options, void **code, size_t *size, char **log);

/* The module of source `name` built with `options` for dev: from the
 * device's memory cache, else from the disk cache (XATTN_CACHE_DIR) keyed
 * by (source hash, options, full gcnArchName, runtime and hiprtc
 * versions), else compiled and written to both; a damaged or mismatched
 * file is rebuilt. The module stays owned by the device (unloaded at
 * device_close). Errors as hip_compile, plus XATTN_ERR_DEVICE from
 * hipModuleLoadData. Thread-safety: safe. Call inside hip_enter. */
xattn_status hip_module_get(xattn_device *dev, const char *name, const char *options,
                            hipModule_t *out);

/* Unload every cached module of dev (device_close). */
void hip_modules_release(xattn_device *dev);

/* A kernel ready to launch: its function, dynamic LDS and block size,
 * fixed at prepare time. */
typedef struct hip_kernel {
    hipFunction_t fn;
    unsigned lds;              /* dynamic LDS bytes per block */
    unsigned threads;          /* threads per block (x) */
} hip_kernel;

/* Kernel `name` of module m, with lds bytes of dynamic LDS and threads per
 * block: checks static + dynamic LDS against the device's limit, scratch
 * (private segment) and threads against what the kernel allows
 * (hipFuncGetAttribute). Errors: XATTN_ERR_UNSUPPORTED (does not fit),
 * XATTN_ERR_DEVICE, XATTN_ERR_INTERNAL (no such kernel). Call inside
 * hip_enter. */
xattn_status hip_kernel_get(xattn_device *dev, hipModule_t m, const char *name, size_t lds,
                            unsigned threads, hip_kernel *out);

/* All kernels of the variants, compiled and looked up with each variant's
 * lds_bytes and threads: kernels[v][j] is variant v's kernel j. */
xattn_status hip_variants_load(xattn_device *dev, const hip_variant *v, int n,
                               hip_kernel kernels[][HIP_MAX_KERNELS]);

/* Launch k over grid (x, y, z) blocks on dev's stream with kernel
 * parameters args (pointers to each argument, as hipModuleLaunchKernel
 * takes them). Launch only: no allocation, no sync, so it may be captured
 * into a HIP graph; grid dimensions of 0 launch nothing. Errors:
 * XATTN_ERR_UNSUPPORTED (grid over the limits), XATTN_ERR_DEVICE. Call
 * inside hip_enter. Thread-safety: safe (the runtime serialises per
 * stream). */
xattn_status hip_launch(xattn_device *dev, const hip_kernel *k, unsigned gx, unsigned gy,
                        unsigned gz, void **args);

/* ---- primitives (one file each) ------------------------------------------- */

/* kv_append, merge_states (ops.c): compiled on first use per device and
 * dtype, launched on dev's stream. */
xattn_status hip_kv_append(xattn_device *dev, const xattn_kv_append_launch *l);
xattn_status hip_merge_states(xattn_device *dev, const xattn_merge_launch *l);
void hip_ops_release(xattn_device *dev);

/* Attention (attn.c): prepare compiles the plan's variants; run is
 * launch-only (the split-KV merge included). */
xattn_status hip_attn_prepare(xattn_device *dev, const struct xattn_plan *plan, void **state);
void hip_attn_release(xattn_device *dev, void *state);
xattn_status hip_attn_run(xattn_device *dev, const struct xattn_plan *plan, const void *state,
                          const xattn_attn_launch *l);

/* MoE (moe.c): route, dispatch, experts (the GEMMs), combine. */
xattn_status hip_moe_prepare(xattn_device *dev, const struct xattn_moe_plan *plan, void **state);
void hip_moe_release(xattn_device *dev, void *state);
xattn_status hip_moe_run(xattn_device *dev, const struct xattn_moe_plan *plan, const void *state,
                         xattn_moe_op op, const xattn_moe_launch *l);
