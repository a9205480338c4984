/*
 * xattn — portable attention runtime.
 * Core API: status codes, errors, logging, contexts, buffers, tensors.
 *
 * Conventions shared by every function:
 *  - Functions return an xattn_status. On failure, xattn_last_error() returns
 *    a message for the calling thread naming the argument and the rule it
 *    broke, and caller-owned memory is left untouched.
 *  - Destroy functions take a pointer to the handle, accept NULL (or a
 *    pointer to NULL) and clear the handle.
 *  - The library never aborts, exits or writes to stdout.
 */
#ifndef XATTN_CORE_H
#define XATTN_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && !defined(XATTN_STATIC)
#  ifdef XATTN_BUILDING
#    define XATTN_API __declspec(dllexport)
#  else
#    define XATTN_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__)
#  define XATTN_API __attribute__((visibility("default")))
#else
#  define XATTN_API
#endif

#define XATTN_VERSION_MAJOR 0
#define XATTN_VERSION_MINOR 1
#define XATTN_VERSION_PATCH 0

/* Status codes. The values are fixed and are never renumbered. */
typedef enum xattn_status {
    XATTN_OK = 0,
    XATTN_ERR_INVALID_ARGUMENT = 1,    /* an argument broke a documented rule */
    XATTN_ERR_UNSUPPORTED = 2,         /* valid, but this backend cannot do it */
    XATTN_ERR_OUT_OF_MEMORY = 3,       /* host or device allocation failed */
    XATTN_ERR_BACKEND_UNAVAILABLE = 4, /* module, runtime or device missing */
    XATTN_ERR_INVALID_ENV = 5,         /* an XATTN_* variable has a bad value */
    XATTN_ERR_DEVICE = 6,              /* the vendor runtime reported an error */
    XATTN_ERR_COMPILE = 7,             /* run-time kernel compilation failed */
    XATTN_ERR_INTERNAL = 8,            /* a bug in xattn; please report it */
    XATTN_ERR_WORKSPACE_TOO_SMALL = 9  /* workspace smaller than the plan needs */
} xattn_status;

/* Static name of a status ("XATTN_ERR_UNSUPPORTED"); "XATTN_STATUS_UNKNOWN"
 * for values outside the enum. Thread-safety: safe. */
XATTN_API const char *xattn_status_string(xattn_status status);

/* Detail message of the last failed call on this thread ("" if none). Valid
 * until the next xattn call on the same thread. Thread-safety: thread-local. */
XATTN_API const char *xattn_last_error(void);

/* Library version as "MAJOR.MINOR.PATCH". Thread-safety: safe. */
XATTN_API const char *xattn_version(void);

/* ---- logging --------------------------------------------------------- */

typedef enum xattn_log_level {
    XATTN_LOG_ERROR = 0,
    XATTN_LOG_WARN = 1,
    XATTN_LOG_INFO = 2,
    XATTN_LOG_DEBUG = 3
} xattn_log_level;

typedef void (*xattn_log_fn)(xattn_log_level level, const char *message,
                             void *user);

/* Route log messages to fn (NULL restores the default: stderr). Messages
 * above the current level are never formatted.
 * Errors: none. Thread-safety: safe; fn may be called from any thread. */
XATTN_API void xattn_log_set_callback(xattn_log_fn fn, void *user);

/* Set the level; the default is XATTN_LOG env (error|warn|info|debug), else
 * warn. Errors: XATTN_ERR_INVALID_ARGUMENT for a value outside the enum.
 * Thread-safety: safe. */
XATTN_API xattn_status xattn_log_set_level(xattn_log_level level);

/* ---- backends and contexts --------------------------------------------- */

typedef enum xattn_backend_kind {
    XATTN_BACKEND_AUTO = 0,
    XATTN_BACKEND_CPU = 1,
    XATTN_BACKEND_OPENCL = 2,
    XATTN_BACKEND_CUDA = 3,
    XATTN_BACKEND_HIP = 4
} xattn_backend_kind;

#define XATTN_BACKEND_COUNT 5

/* Kernel style a device wants; the planner picks kernels by it. */
typedef enum xattn_device_style {
    XATTN_DEVICE_STYLE_GPU = 0, /* many groups, local-memory tiles, barriers */
    XATTN_DEVICE_STYLE_CPU = 1  /* few wide cores: register blocks, no barriers */
} xattn_device_style;

/* Bits of xattn_device_caps.matrix_dtypes. */
#define XATTN_MATRIX_F16 (1u << 0)
#define XATTN_MATRIX_BF16 (1u << 1)
#define XATTN_MATRIX_TF32 (1u << 2)

/* What a device can do, filled by its backend; the planner's only input
 * besides the problem. */
typedef struct xattn_device_caps {
    char name[128];
    xattn_device_style style;
    uint32_t compute_units;        /* SMs, CUs, cores */
    uint32_t simd_width;           /* warp / wavefront / subgroup / SIMD lanes (f32) */
    uint32_t local_mem_bytes;      /* shared memory / LDS per group (CPU: L2 per core) */
    uint32_t cache_bytes;          /* L1 per core (CPU) or L2 (GPU) */
    uint32_t max_threads_per_group;
    uint32_t registers_per_group;  /* 32-bit registers per group, 0 if unknown */
    uint32_t matrix_dtypes;        /* XATTN_MATRIX_* bits, 0 = no matrix units */
    uint32_t matrix_m, matrix_n, matrix_k; /* matrix-unit shape for f16/bf16 */
    uint32_t vector_bytes;         /* preferred vector load width in bytes */
    uint32_t has_f16;              /* native f16 arithmetic or conversion */
    uint32_t has_bf16;
    double peak_flops_f32;         /* estimates, FLOP/s */
    double peak_flops_f16;
    double peak_bytes_per_s;
} xattn_device_caps;

typedef struct xattn_context xattn_context;

/* Explicit context options. Zero-initialise, then set what you need. */
typedef struct xattn_context_options {
    xattn_backend_kind backend; /* AUTO picks cuda, hip, opencl, then cpu */
    int32_t device;             /* device index within the backend */
    void *native_queue;         /* cudaStream_t / hipStream_t / cl_command_queue;
                                   NULL: the backend's default */
    int32_t num_threads;        /* CPU backend worker threads, 0 = all cores;
                                   they start with the context and stop with
                                   it (runs start none); must be 0 for other
                                   backends */
} xattn_context_options;

/* Create a context from XATTN_BACKEND, XATTN_DEVICE and XATTN_LOG.
 * Errors: XATTN_ERR_INVALID_ARGUMENT (out NULL), XATTN_ERR_INVALID_ENV
 * (unknown value; the message lists the valid ones),
 * XATTN_ERR_BACKEND_UNAVAILABLE (explicit backend missing; the message says
 * why), XATTN_ERR_OUT_OF_MEMORY (also: the cpu backend's worker threads
 * could not start). Thread-safety: safe. */
XATTN_API xattn_status xattn_context_create(xattn_context **out);

/* Create a context from explicit options; XATTN_BACKEND and XATTN_DEVICE are
 * not read (XATTN_BACKEND_DIR for module lookup, XATTN_LOG and backend
 * settings such as XATTN_CPU_ISA still are).
 * Errors: as xattn_context_create, with XATTN_ERR_INVALID_ARGUMENT for bad
 * options. Thread-safety: safe. */
XATTN_API xattn_status xattn_context_create_with(const xattn_context_options *opts,
                                                 xattn_context **out);

/* Destroy the caller's handle of a context. Accepts NULL.
 * Buffers, attention plans and MoE plans made from the context keep it
 * alive: they may be destroyed before or after it, in any order (as
 * garbage-collected bindings do), and until each is freed it keeps working
 * (runs, reads, writes, describe). The device is closed, and its queue
 * released, when the last of them goes.
 * Thread-safety: safe against calls on buffers and plans made from the
 * context, on any thread; the handle itself must not be used concurrently
 * with or after this call. */
XATTN_API void xattn_context_destroy(xattn_context **ctx);

/* Backend name ("cpu", "opencl", "cuda", "hip"), device name and caps.
 * The names are NULL for a NULL context (xattn_last_error() says so); caps
 * returns XATTN_ERR_INVALID_ARGUMENT for NULL. Thread-safety: safe. */
XATTN_API const char *xattn_context_backend_name(const xattn_context *ctx);
XATTN_API const char *xattn_context_device_name(const xattn_context *ctx);
XATTN_API xattn_status xattn_context_caps(const xattn_context *ctx,
                                          xattn_device_caps *out);

/* Wait until all work queued on the context's queue has finished.
 * Errors: XATTN_ERR_INVALID_ARGUMENT, XATTN_ERR_DEVICE.
 * Thread-safety: safe. */
XATTN_API xattn_status xattn_context_synchronize(xattn_context *ctx);

/* Name of a backend kind ("auto", "cpu", ...); NULL for a value outside the
 * enum. Errors: none. Thread-safety: safe. */
XATTN_API const char *xattn_backend_kind_name(xattn_backend_kind kind);

/* Probe one backend without creating a context: number of devices (0 when
 * the module, runtime or hardware is missing) and why, into reason.
 * Errors: XATTN_ERR_INVALID_ARGUMENT (kind AUTO or unknown, NULL pointers).
 * Thread-safety: safe. */
XATTN_API xattn_status xattn_backend_probe(xattn_backend_kind kind,
                                           int32_t *num_devices, char *reason,
                                           size_t reason_size);

/* ---- buffers ----------------------------------------------------------- */

typedef struct xattn_buffer xattn_buffer;

/* Allocate bytes of device memory (host memory on the CPU backend), aligned
 * to at least 64 bytes. bytes may be 0 (empty tensors, such as a MoE step
 * with T = 0): the buffer then has size 0 and still a valid native handle.
 * The buffer holds a reference to ctx (see xattn_context_destroy).
 * Errors: XATTN_ERR_INVALID_ARGUMENT (NULL ctx or out, size above
 * PTRDIFF_MAX), XATTN_ERR_OUT_OF_MEMORY. Thread-safety: safe. */
XATTN_API xattn_status xattn_buffer_alloc(xattn_context *ctx, size_t bytes,
                                          xattn_buffer **out);

/* Wrap memory the caller owns without copying: a CUDA/HIP device pointer, a
 * cl_mem, or a host pointer on the CPU backend. The caller keeps ownership
 * and must keep it alive while the buffer is in use. bytes may be 0, and
 * native may then be NULL (how DLPack and NumPy describe an empty array):
 * such a buffer gets a private placeholder allocation as its native handle.
 * Where native is an address (host, CUDA, HIP), native + bytes must not
 * wrap around the address space.
 * Errors: XATTN_ERR_INVALID_ARGUMENT (NULL ctx or out, NULL native with
 * bytes > 0, size above PTRDIFF_MAX, a range that wraps around),
 * XATTN_ERR_OUT_OF_MEMORY. Thread-safety: safe. */
XATTN_API xattn_status xattn_buffer_wrap(xattn_context *ctx, void *native,
                                         size_t bytes, xattn_buffer **out);

/* Free a buffer (wrapped memory is not freed) and drop its reference to
 * the context, which this may close (see xattn_context_destroy). Accepts
 * NULL. Errors: none. Thread-safety: not concurrently with a run using it;
 * safe against calls on other objects of the same context. */
XATTN_API void xattn_buffer_free(xattn_buffer **buf);

/* Copy host memory into a buffer / a buffer into host memory. Blocking.
 * Errors: XATTN_ERR_INVALID_ARGUMENT (NULL, range outside the buffer),
 * XATTN_ERR_DEVICE. Thread-safety: safe. */
XATTN_API xattn_status xattn_buffer_write(xattn_buffer *buf, size_t offset,
                                          const void *src, size_t bytes);
XATTN_API xattn_status xattn_buffer_read(const xattn_buffer *buf, size_t offset,
                                         void *dst, size_t bytes);

/* Size in bytes and the native handle (device pointer, cl_mem, host pointer);
 * 0 / NULL for a NULL buffer. A zero-byte buffer's handle is never NULL (a
 * private placeholder when it was allocated, or wrapped from NULL).
 * Errors: none. Thread-safety: safe. */
XATTN_API size_t xattn_buffer_size(const xattn_buffer *buf);
XATTN_API void *xattn_buffer_native(const xattn_buffer *buf);

/* ---- tensors ----------------------------------------------------------- */

typedef enum xattn_dtype {
    XATTN_F32 = 0,
    XATTN_F16 = 1,
    XATTN_BF16 = 2,
    XATTN_I32 = 3
} xattn_dtype;

#define XATTN_MAX_RANK 4

/* A view into a buffer. Shapes and strides count elements; the innermost
 * stride must be 1 (where a call says otherwise, it says so). The stride of
 * a dimension of size 0 or 1 is never used and may hold any value. A
 * tensor with buffer == NULL is "absent". */
typedef struct xattn_tensor {
    xattn_buffer *buffer;
    size_t offset;                  /* bytes from the start of the buffer */
    xattn_dtype dtype;
    int32_t rank;
    int64_t shape[XATTN_MAX_RANK];
    int64_t stride[XATTN_MAX_RANK];
} xattn_tensor;

/* Size of one element in bytes; 0 for an unknown dtype.
 * Errors: none. Thread-safety: safe. */
XATTN_API size_t xattn_dtype_size(xattn_dtype dtype);

/* Name of a dtype ("f32", "f16", "bf16", "i32"); "unknown" outside the enum.
 * Errors: none. Thread-safety: safe. */
XATTN_API const char *xattn_dtype_name(xattn_dtype dtype);

/* A row-major contiguous tensor over buf at byte offset. rank is clamped to
 * [0, XATTN_MAX_RANK]. Errors: none (validation happens where it is used).
 * Thread-safety: safe. */
XATTN_API xattn_tensor xattn_tensor_contiguous(xattn_buffer *buf, size_t offset,
                                               xattn_dtype dtype, int32_t rank,
                                               const int64_t *shape);

/* ---- f16 and bf16 conversions ------------------------------------------ */

/* IEEE binary16 (f16) and bfloat16 (bf16) values travel as their bit
 * patterns in uint16_t. These are the conversions the library itself uses
 * for f16 and bf16 tensors:
 *  - to f32: exact (f16 subnormals included);
 *  - from f32: round to nearest, ties to even; f16 results below the
 *    smallest normal are subnormal, then ±0; a value that rounds past the
 *    largest finite f16 (65504), i.e. |x| ≥ 65520, becomes ±inf (bf16 has
 *    f32's range: only values that round past its largest finite overflow);
 *  - ±inf stays ±inf, −0 stays −0, and NaN stays NaN, quiet, with its sign
 *    (the payload may change).
 * Errors: none. Thread-safety: safe. */
XATTN_API float xattn_f16_to_f32(uint16_t h);
XATTN_API uint16_t xattn_f32_to_f16(float f);
XATTN_API float xattn_bf16_to_f32(uint16_t h);
XATTN_API uint16_t xattn_f32_to_bf16(float f);

/* The same conversions over arrays: dst[i] = convert(src[i]) for i < n.
 * Errors: XATTN_ERR_INVALID_ARGUMENT (dst or src NULL with n > 0; the two
 * arrays overlap). Thread-safety: safe (the arrays are the caller's). */
XATTN_API xattn_status xattn_f16_to_f32_array(float *dst, const uint16_t *src, size_t n);
XATTN_API xattn_status xattn_f32_to_f16_array(uint16_t *dst, const float *src, size_t n);
XATTN_API xattn_status xattn_bf16_to_f32_array(float *dst, const uint16_t *src, size_t n);
XATTN_API xattn_status xattn_f32_to_bf16_array(uint16_t *dst, const float *src, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* XATTN_CORE_H */
