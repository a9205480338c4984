#pragma once
/* Internal interface of the OpenCL backend module: the lazily loaded OpenCL
 * runtime, the device, program building with its caches, and kernel
 * launches. Every host file of backends/opencl/ includes this. */
#define CL_TARGET_OPENCL_VERSION 120
#define CL_USE_DEPRECATED_OPENCL_1_2_APIS
#include <CL/cl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "error.h"
#include "text.h"

/* ---- the runtime, loaded with dlopen (cl_loader.c) ------------------------ */

/* Every OpenCL entry point the module calls. Filled once by ocl_load(). */
typedef struct ocl_api {
    cl_int (*GetPlatformIDs)(cl_uint, cl_platform_id *, cl_uint *);
    cl_int (*GetPlatformInfo)(cl_platform_id, cl_platform_info, size_t, void *, size_t *);
    cl_int (*GetDeviceIDs)(cl_platform_id, cl_device_type, cl_uint, cl_device_id *, cl_uint *);
    cl_int (*GetDeviceInfo)(cl_device_id, cl_device_info, size_t, void *, size_t *);
    cl_context (*CreateContext)(const cl_context_properties *, cl_uint, const cl_device_id *,
                                void(CL_CALLBACK *)(const char *, const void *, size_t, void *),
                                void *, cl_int *);
    cl_int (*RetainContext)(cl_context);
    cl_int (*ReleaseContext)(cl_context);
    cl_command_queue (*CreateCommandQueue)(cl_context, cl_device_id, cl_command_queue_properties,
                                           cl_int *);
    cl_int (*GetCommandQueueInfo)(cl_command_queue, cl_command_queue_info, size_t, void *,
                                  size_t *);
    cl_int (*RetainCommandQueue)(cl_command_queue);
    cl_int (*ReleaseCommandQueue)(cl_command_queue);
    cl_mem (*CreateBuffer)(cl_context, cl_mem_flags, size_t, void *, cl_int *);
    cl_int (*ReleaseMemObject)(cl_mem);
    cl_int (*EnqueueReadBuffer)(cl_command_queue, cl_mem, cl_bool, size_t, size_t, void *, cl_uint,
                                const cl_event *, cl_event *);
    cl_int (*EnqueueWriteBuffer)(cl_command_queue, cl_mem, cl_bool, size_t, size_t, const void *,
                                 cl_uint, const cl_event *, cl_event *);
    cl_program (*CreateProgramWithSource)(cl_context, cl_uint, const char **, const size_t *,
                                          cl_int *);
    cl_program (*CreateProgramWithBinary)(cl_context, cl_uint, const cl_device_id *,
                                          const size_t *, const unsigned char **, cl_int *,
                                          cl_int *);
    cl_int (*BuildProgram)(cl_program, cl_uint, const cl_device_id *, const char *,
                           void(CL_CALLBACK *)(cl_program, void *), void *);
    cl_int (*GetProgramInfo)(cl_program, cl_program_info, size_t, void *, size_t *);
    cl_int (*GetProgramBuildInfo)(cl_program, cl_device_id, cl_program_build_info, size_t, void *,
                                  size_t *);
    cl_int (*ReleaseProgram)(cl_program);
    cl_kernel (*CreateKernel)(cl_program, const char *, cl_int *);
    cl_int (*ReleaseKernel)(cl_kernel);
    cl_int (*SetKernelArg)(cl_kernel, cl_uint, size_t, const void *);
    cl_int (*GetKernelWorkGroupInfo)(cl_kernel, cl_device_id, cl_kernel_work_group_info, size_t,
                                     void *, size_t *);
    cl_int (*EnqueueNDRangeKernel)(cl_command_queue, cl_kernel, cl_uint, const size_t *,
                                   const size_t *, const size_t *, cl_uint, const cl_event *,
                                   cl_event *);
    cl_int (*Flush)(cl_command_queue);
    cl_int (*Finish)(cl_command_queue);
} ocl_api;

/* The loaded runtime, or NULL with the reason (e.g. "libOpenCL.so.1 not
 * found: ...") in reason. Loads once, thread-safely; never unloads. */
const ocl_api *ocl_load(char *reason, size_t reason_size);

/* Static name of an OpenCL status ("CL_OUT_OF_RESOURCES"). */
const char *ocl_status_name(cl_int status);

/* Convert a failing OpenCL status into an xattn status with a message naming
 * the call and the native status: return ocl_fail(err, "clFinish"). */
xattn_status ocl_fail(cl_int err, const char *what);

/* Run an OpenCL call returning cl_int; on failure return its xattn status. */
#define OCL_TRY(call)                                                          \
    do {                                                                       \
        cl_int ocl_try_err_ = (call);                                          \
        if (ocl_try_err_ != CL_SUCCESS) return ocl_fail(ocl_try_err_, #call);  \
    } while (0)

/* ---- the device (opencl.c) ------------------------------------------------ */

typedef struct ocl_program_entry ocl_program_entry;

struct xattn_device {
    const ocl_api *cl;
    cl_platform_id platform;
    cl_device_id device;
    cl_context context;
    cl_command_queue queue;
    int cpu_style;             /* caps.style == XATTN_DEVICE_STYLE_CPU */
    char device_name[128];
    char platform_name[128];
    char driver_version[64];
    char device_version[64];
    size_t max_group_size;     /* CL_DEVICE_MAX_WORK_GROUP_SIZE */
    size_t local_mem_bytes;    /* CL_DEVICE_LOCAL_MEM_SIZE */
    xattn_device_caps caps;
    /* Programs built for this device, by key (program.c); guarded by lock. */
    pthread_mutex_t lock;
    ocl_program_entry *programs;
    struct ocl_ops *ops;       /* kv_append / merge_states kernels (ops.c) */
};

/* ---- programs (program.c) ------------------------------------------------- */

/* One embedded kernel source (kernels/<name>.cl with kernels/prelude.cl in
 * front), from the generated ocl_sources.c. */
typedef struct ocl_source {
    const char *name;          /* "attn_cpu" for kernels/attn_cpu.cl */
    const char *text;
} ocl_source;

/* The embedded source called name, or NULL. */
const ocl_source *ocl_source_find(const char *name);

/* The program of source `name` built with `options` (the plan's -D
 * constants) for dev: from the device's memory cache, else from the disk
 * cache (XATTN_CACHE_DIR, default $XDG_CACHE_HOME/xattn, else
 * ~/.cache/xattn) keyed by (source hash, options, device, driver version),
 * else compiled and written to both. The program stays owned by the device
 * (released at device_close); do not release it.
 * Errors: XATTN_ERR_COMPILE with the first lines of the build log,
 * XATTN_ERR_INTERNAL for an unknown source, XATTN_ERR_DEVICE,
 * XATTN_ERR_OUT_OF_MEMORY. Thread-safety: safe. */
xattn_status ocl_program_get(xattn_device *dev, const char *name, const char *options,
                             cl_program *out);

/* Release every cached program of dev (device_close). */
void ocl_programs_release(xattn_device *dev);

/* ---- kernels and launches (program.c) ------------------------------------- */

/* A kernel with the lock that makes set-args + enqueue atomic, so one plan
 * can be run from several threads. */
typedef struct ocl_kernel {
    cl_kernel kernel;
    pthread_mutex_t lock;
    size_t max_group_size;     /* CL_KERNEL_WORK_GROUP_SIZE for this device */
} ocl_kernel;

/* Create kernel `name` of program. Errors: XATTN_ERR_DEVICE (no such kernel:
 * XATTN_ERR_INTERNAL). */
xattn_status ocl_kernel_create(xattn_device *dev, cl_program program, const char *name,
                               ocl_kernel *out);
/* Release k (zeroed kernels are accepted). */
void ocl_kernel_release(xattn_device *dev, ocl_kernel *k);

/* One kernel argument: a value of size bytes. A buffer is passed as its
 * cl_mem (the xattn_ref's native, possibly NULL for an absent operand) and,
 * as a separate cl_ulong argument, its byte offset: kernels add it to the
 * base pointer themselves, so no sub-buffer alignment rule applies. */
typedef struct ocl_arg {
    size_t size;
    const void *value;
} ocl_arg;

#define OCL_ARG(x) ((ocl_arg){sizeof(x), &(x)})

/* Set the arguments and enqueue k on dev's queue over dims dimensions
 * (global[i] a multiple of local[i]; local NULL lets the driver choose).
 * Launch only: no allocation, no wait. Errors: XATTN_ERR_DEVICE. */
xattn_status ocl_launch(xattn_device *dev, ocl_kernel *k, int nargs, const ocl_arg *args,
                        cl_uint dims, const size_t *global, const size_t *local);

/* ---- device ceilings (ceilings.c) ----------------------------------------- */

/* The vtable's measure_ceilings: copy bandwidth and the f32 FMA rate from
 * kernels/ceilings.cl (flops_matrix 0). Waits for the queue; allocates two
 * copy arrays of up to 256 MiB and frees them. Errors: XATTN_ERR_COMPILE,
 * XATTN_ERR_OUT_OF_MEMORY, XATTN_ERR_DEVICE. Thread-safety: safe; work
 * queued meanwhile by other threads lowers the rates. */
xattn_status ocl_measure_ceilings(xattn_device *dev, xattn_ceilings *out);

/* ---- primitives (one file each) ------------------------------------------- */

/* kv_append, merge_states (ops.c): built on first use per device. */
xattn_status ocl_kv_append(xattn_device *dev, const xattn_kv_append_launch *l);
xattn_status ocl_merge_states(xattn_device *dev, const xattn_merge_launch *l);
void ocl_ops_release(xattn_device *dev);

/* Attention, CPU style (attn_cpu.c) and GPU style (attn_gpu.c). The state
 * is the style's own; run is launch-only. */
xattn_status ocl_attn_cpu_prepare(xattn_device *dev, const struct xattn_plan *plan, void **state);
void ocl_attn_cpu_release(xattn_device *dev, void *state);
xattn_status ocl_attn_cpu_run(xattn_device *dev, const struct xattn_plan *plan, const void *state,
                              const xattn_attn_launch *l);
xattn_status ocl_attn_gpu_prepare(xattn_device *dev, const struct xattn_plan *plan, void **state);
void ocl_attn_gpu_release(xattn_device *dev, void *state);
xattn_status ocl_attn_gpu_run(xattn_device *dev, const struct xattn_plan *plan, const void *state,
                              const xattn_attn_launch *l);

/* Work-groups of one attention run, both styles (attn_work.c): the plan's
 * work items, or with ragged Q head groups × tile numbers × splits, where
 * tile_space (0 for uniform Q) counts the tile numbers the kernels'
 * ragged_work decodes. */
int64_t ocl_attn_tile_space(const struct xattn_plan *plan, const xattn_attn_launch *l);
int64_t ocl_attn_groups(const struct xattn_plan *plan, const xattn_attn_launch *l);

/* Split-KV: merge the plan's partial O and LSE (workspace) into O and LSE;
 * shared by both styles (attn_split.c). */
typedef struct ocl_split_merge {
    ocl_kernel kernel;
} ocl_split_merge;
xattn_status ocl_split_merge_prepare(xattn_device *dev, const struct xattn_plan *plan,
                                     ocl_split_merge *out);
void ocl_split_merge_release(xattn_device *dev, ocl_split_merge *m);
xattn_status ocl_split_merge_run(xattn_device *dev, const struct xattn_plan *plan,
                                 ocl_split_merge *m, const xattn_attn_launch *l);

/* MoE (moe.c: route, dispatch, combine and the glue; moe_gemm.c: the expert
 * GEMMs of both styles). */
xattn_status ocl_moe_prepare(xattn_device *dev, const struct xattn_moe_plan *plan, void **state);
void ocl_moe_release(xattn_device *dev, void *state);
xattn_status ocl_moe_run(xattn_device *dev, const struct xattn_moe_plan *plan, const void *state,
                         xattn_moe_op op, const xattn_moe_launch *l);

typedef struct ocl_moe_gemm ocl_moe_gemm; /* moe_gemm.c */
xattn_status ocl_moe_gemm_prepare(xattn_device *dev, const struct xattn_moe_plan *plan,
                                  ocl_moe_gemm **out);
void ocl_moe_gemm_release(xattn_device *dev, ocl_moe_gemm *g);
/* The experts primitive: gate/up GEMM + activation into h (workspace), then
 * the down GEMM into y. */
xattn_status ocl_moe_gemm_run(xattn_device *dev, const struct xattn_moe_plan *plan,
                              ocl_moe_gemm *g, const xattn_moe_launch *l);
