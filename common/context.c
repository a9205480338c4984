/* Contexts (backend selection from the environment or options), buffers and
 * tensor helpers. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "ceilings.h"
#include "context.h"
#include "error.h"
#include "native.h"
#include "registry.h"

enum {
    REASON_BYTES = 512,
    /* A zero-byte buffer still gets a real allocation of this size, so its
     * native handle is never NULL, which backends take for "absent". */
    EMPTY_BUFFER_BYTES = 1,
    /* More worker threads than this is a mistake, not a machine. */
    MAX_CPU_THREADS = 4096,
};

/* Order in which auto tries backends: GPU devices first, CPU last. */
static const xattn_backend_kind auto_order[] = {
    XATTN_BACKEND_CUDA, XATTN_BACKEND_HIP, XATTN_BACKEND_OPENCL, XATTN_BACKEND_CPU};

static xattn_status context_open(const xattn_backend_vtable *vt, xattn_backend_kind kind,
                                 const xattn_context_options *opts, xattn_context **out)
{
    xattn_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "context: out of memory");
    atomic_init(&ctx->refs, 1); /* the caller's */
    ctx->vt = vt;
    ctx->kind = kind;
    ctx->device_index = opts->device;
    ctx->num_threads = opts->num_threads;
    xattn_status st = vt->device_open(opts->device, opts, &ctx->dev, &ctx->caps);
    if (st != XATTN_OK) {
        free(ctx);
        return st;
    }
    *out = ctx;
    return XATTN_OK;
}

/* Open an explicitly named backend; every way it can be missing is an error
 * naming the reason (never a fallback). what names the source of the choice
 * ("XATTN_BACKEND" or "options.backend") for messages. */
static xattn_status open_explicit(xattn_backend_kind kind, const xattn_context_options *opts,
                                  const char *what, const char *device_what,
                                  xattn_status bad_device, xattn_context **out)
{
    const char *name = xattn_backend_kind_name(kind);
    char reason[REASON_BYTES] = "";
    const xattn_backend_vtable *vt = xattn_backend_get(kind, reason, sizeof reason);
    if (!vt)
        return xattn_error(XATTN_ERR_BACKEND_UNAVAILABLE, "%s=%s: backend unavailable: %s",
                           what, name, reason);
    int32_t n = vt->probe(reason, sizeof reason);
    if (n <= 0)
        return xattn_error(XATTN_ERR_BACKEND_UNAVAILABLE, "%s=%s: no device: %s", what,
                           name, reason[0] ? reason : "the backend found none");
    if (opts->device >= n)
        return xattn_error(bad_device, "%s=%d: backend %s has %d device%s (valid: 0..%d)",
                           device_what,
            (int)opts->device, name, (int)n, n == 1 ? "" : "s", (int)n - 1);
    xattn_status st = context_open(vt, kind, opts, out);
    if (st == XATTN_OK) xattn_log(XATTN_LOG_INFO, "backend %s, device %d: %s", name,
                                  (int)opts->device, (*out)->caps.name);
    return st;
}

static xattn_status open_auto(const xattn_context_options *opts, xattn_context **out)
{
    for (size_t i = 0; i < XATTN_ARRAY_SIZE(auto_order); i++) {
        xattn_backend_kind kind = auto_order[i];
        const char *name = xattn_backend_kind_name(kind);
        char reason[REASON_BYTES] = "";
        const xattn_backend_vtable *vt = xattn_backend_get(kind, reason, sizeof reason);
        int32_t n = vt ? vt->probe(reason, sizeof reason) : 0;
        if (n <= opts->device) {
            xattn_log(XATTN_LOG_DEBUG, "auto: skipping %s: %s", name,
                      n <= 0 ? reason : "device index out of range");
            continue;
        }
        xattn_context *ctx = NULL;
        xattn_status st = context_open(vt, kind, opts, &ctx);
        if (st != XATTN_OK) {
            xattn_log(XATTN_LOG_INFO, "auto: %s device %d failed to open: %s", name,
                      (int)opts->device, xattn_last_error());
            continue;
        }
        /* auto wants a GPU from the GPU backends; a CPU behind OpenCL is not
         * better than the built-in backend. */
        if (kind != XATTN_BACKEND_CPU && ctx->caps.style != XATTN_DEVICE_STYLE_GPU) {
            xattn_log(XATTN_LOG_DEBUG, "auto: skipping %s: device %d is not a GPU", name,
                      (int)opts->device);
            xattn_context_destroy(&ctx);
            continue;
        }
        xattn_log(XATTN_LOG_INFO, "auto: chose backend %s, device %d: %s", name,
                  (int)opts->device, ctx->caps.name);
        xattn_error_clear();
        *out = ctx;
        return XATTN_OK;
    }
    return xattn_error(XATTN_ERR_BACKEND_UNAVAILABLE,
                       "XATTN_BACKEND=auto: no backend has device %d (XATTN_DEVICE / "
                       "options.device)", (int)opts->device);
}

static xattn_status check_log_env(void)
{
    const char *v = getenv("XATTN_LOG");
    xattn_log_level level;
    if (v && *v && xattn_log_parse_level(v, &level) != 0)
        return xattn_error(XATTN_ERR_INVALID_ENV,
                           "XATTN_LOG='%s' is not a log level; valid values: " XATTN_LOG_VALUES,
                           v);
    return XATTN_OK;
}

xattn_status xattn_context_create(xattn_context **out)
{
    xattn_error_clear();
    if (!out) return xattn_error(XATTN_ERR_INVALID_ARGUMENT, "out: must not be NULL");
    XATTN_TRY(check_log_env());

    xattn_context_options opts = {0};
    const char *b = getenv("XATTN_BACKEND");
    if (b && *b && xattn_backend_kind_parse(b, &opts.backend) != 0) {
        char valid[128];
        xattn_backend_values(valid, sizeof valid);
        return xattn_error(XATTN_ERR_INVALID_ENV,
                           "XATTN_BACKEND='%s' is not a backend; valid values: %s", b, valid);
    }
    const char *d = getenv("XATTN_DEVICE");
    if (d && *d) {
        char *end = NULL;
        errno = 0;
        long v = strtol(d, &end, 10);
        if (errno || *end || v < 0 || v > INT32_MAX || d[0] < '0' || d[0] > '9')
            return xattn_error(XATTN_ERR_INVALID_ENV,
                               "XATTN_DEVICE='%s' is not a device index (an integer >= 0)", d);
        opts.device = (int32_t)v;
    }
    if (opts.backend == XATTN_BACKEND_AUTO) return open_auto(&opts, out);
    return open_explicit(opts.backend, &opts, "XATTN_BACKEND", "XATTN_DEVICE",
                         XATTN_ERR_INVALID_ENV, out);
}

xattn_status xattn_context_create_with(const xattn_context_options *opts, xattn_context **out)
{
    xattn_error_clear();
    if (!out) return xattn_error(XATTN_ERR_INVALID_ARGUMENT, "out: must not be NULL");
    if (!opts) return xattn_error(XATTN_ERR_INVALID_ARGUMENT, "opts: must not be NULL");
    XATTN_TRY(check_log_env());
    if (opts->backend != XATTN_BACKEND_AUTO && !xattn_backend_kind_name(opts->backend)) {
        char valid[128];
        xattn_backend_values(valid, sizeof valid);
        return xattn_error(XATTN_ERR_INVALID_ARGUMENT,
                           "options.backend: %d is not an xattn_backend_kind (%s)",
                           (int)opts->backend, valid);
    }
    if (opts->device < 0)
        return xattn_error(XATTN_ERR_INVALID_ARGUMENT, "options.device: %d is negative",
                           (int)opts->device);
    if (opts->num_threads < 0 || opts->num_threads > MAX_CPU_THREADS)
        return xattn_error(XATTN_ERR_INVALID_ARGUMENT,
                           "options.num_threads: %d, must be in [0, %d] (0 = all cores)",
                           (int)opts->num_threads, MAX_CPU_THREADS);
    if (opts->num_threads && opts->backend != XATTN_BACKEND_CPU)
        return xattn_error(XATTN_ERR_INVALID_ARGUMENT,
                           "options.num_threads: %d, but only the cpu backend has worker "
                           "threads (options.backend is %s)",
                           (int)opts->num_threads, xattn_backend_kind_name(opts->backend));
    if (opts->backend == XATTN_BACKEND_AUTO) return open_auto(opts, out);
    return open_explicit(opts->backend, opts, "options.backend", "options.device",
                         XATTN_ERR_INVALID_ARGUMENT, out);
}

void xattn_context_retain(xattn_context *ctx)
{
    /* Relaxed: the new reference comes from one the caller already holds. */
    atomic_fetch_add_explicit(&ctx->refs, 1, memory_order_relaxed);
}

void xattn_context_release(xattn_context *ctx)
{
    /* acq_rel: whatever any holder did with the device happens before the
     * close that the last release performs. */
    if (atomic_fetch_sub_explicit(&ctx->refs, 1, memory_order_acq_rel) != 1) return;
    ctx->vt->device_close(ctx->dev);
    free(ctx);
}

void xattn_context_destroy(xattn_context **ctx)
{
    if (!ctx || !*ctx) return;
    xattn_context *c = *ctx;
    *ctx = NULL;
    xattn_context_release(c);
}

const char *xattn_context_backend_name(const xattn_context *ctx)
{
    if (!ctx) {
        xattn_error(XATTN_ERR_INVALID_ARGUMENT, "ctx: must not be NULL");
        return NULL;
    }
    return ctx->vt->name;
}

const char *xattn_context_device_name(const xattn_context *ctx)
{
    if (!ctx) {
        xattn_error(XATTN_ERR_INVALID_ARGUMENT, "ctx: must not be NULL");
        return NULL;
    }
    return ctx->caps.name;
}

xattn_status xattn_context_caps(const xattn_context *ctx, xattn_device_caps *out)
{
    xattn_error_clear();
    if (!ctx) return xattn_error(XATTN_ERR_INVALID_ARGUMENT, "ctx: must not be NULL");
    if (!out) return xattn_error(XATTN_ERR_INVALID_ARGUMENT, "out: must not be NULL");
    *out = ctx->caps;
    return XATTN_OK;
}

xattn_status xattn_context_synchronize(xattn_context *ctx)
{
    xattn_error_clear();
    if (!ctx) return xattn_error(XATTN_ERR_INVALID_ARGUMENT, "ctx: must not be NULL");
    return ctx->vt->synchronize(ctx->dev);
}

xattn_status xattn_context_measure_ceilings(xattn_context *ctx, xattn_ceilings *out)
{
    xattn_error_clear();
    if (!ctx) return xattn_error(XATTN_ERR_INVALID_ARGUMENT, "ctx: must not be NULL");
    if (!out) return xattn_error(XATTN_ERR_INVALID_ARGUMENT, "out: must not be NULL");
    memset(out, 0, sizeof *out);
    if (!ctx->vt->measure_ceilings)
        return xattn_error(XATTN_ERR_UNSUPPORTED,
                           "%s backend: no ceiling kernels on the device",
                           ctx->vt->name);
    xattn_status st = ctx->vt->measure_ceilings(ctx->dev, out);
    if (st != XATTN_OK) memset(out, 0, sizeof *out);
    return st;
}

/* ---- buffers ------------------------------------------------------------ */

static xattn_status buffer_new(xattn_context *ctx, void *native, size_t bytes, int owned,
                               xattn_buffer **out)
{
    xattn_buffer *buf = calloc(1, sizeof *buf);
    if (!buf) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "buffer: out of memory");
    buf->ctx = ctx;
    buf->native = native;
    buf->size = bytes;
    buf->owned = owned;
    buf->host = ctx->vt->buffer_host_ptr ? ctx->vt->buffer_host_ptr(ctx->dev, native) : NULL;
    xattn_context_retain(ctx);
    *out = buf;
    return XATTN_OK;
}

xattn_status xattn_buffer_alloc(xattn_context *ctx, size_t bytes, xattn_buffer **out)
{
    xattn_error_clear();
    if (!ctx) return xattn_error(XATTN_ERR_INVALID_ARGUMENT, "ctx: must not be NULL");
    if (!out) return xattn_error(XATTN_ERR_INVALID_ARGUMENT, "out: must not be NULL");
    if (bytes > (size_t)PTRDIFF_MAX)
        return xattn_error(XATTN_ERR_INVALID_ARGUMENT, "bytes: %zu is too large", bytes);
    void *native = NULL;
    XATTN_TRY(ctx->vt->buffer_alloc(ctx->dev, bytes ? bytes : EMPTY_BUFFER_BYTES, &native));
    xattn_status st = buffer_new(ctx, native, bytes, 1, out);
    if (st != XATTN_OK) ctx->vt->buffer_free(ctx->dev, native);
    return st;
}

xattn_status xattn_buffer_wrap(xattn_context *ctx, void *native, size_t bytes,
                               xattn_buffer **out)
{
    xattn_error_clear();
    if (!ctx) return xattn_error(XATTN_ERR_INVALID_ARGUMENT, "ctx: must not be NULL");
    if (!out) return xattn_error(XATTN_ERR_INVALID_ARGUMENT, "out: must not be NULL");
    if (!native && bytes)
        return xattn_error(XATTN_ERR_INVALID_ARGUMENT,
                           "native: must not be NULL (NULL is accepted only with bytes 0)");
    if (bytes > (size_t)PTRDIFF_MAX)
        return xattn_error(XATTN_ERR_INVALID_ARGUMENT, "bytes: %zu is too large", bytes);
    const xattn_native_kind *nk = xattn_native_kind_of(ctx->kind);
    if (nk && nk->is_address && (uintptr_t)native > UINTPTR_MAX - bytes)
        return xattn_error(XATTN_ERR_INVALID_ARGUMENT,
                           "native/bytes: %p + %zu bytes wraps around the address space",
                           native, bytes);
    /* NULL with 0 bytes is how DLPack and NumPy describe an empty array. */
    if (!native) return xattn_buffer_alloc(ctx, 0, out);
    return buffer_new(ctx, native, bytes, 0, out);
}

void xattn_buffer_free(xattn_buffer **buf)
{
    if (!buf || !*buf) return;
    xattn_buffer *b = *buf;
    *buf = NULL;
    if (b->owned) b->ctx->vt->buffer_free(b->ctx->dev, b->native);
    xattn_context_release(b->ctx);
    free(b);
}

static xattn_status check_range(const xattn_buffer *buf, size_t offset, const void *host,
                                size_t bytes, const char *host_name)
{
    if (!buf) return xattn_error(XATTN_ERR_INVALID_ARGUMENT, "buf: must not be NULL");
    if (!host && bytes)
        return xattn_error(XATTN_ERR_INVALID_ARGUMENT, "%s: must not be NULL", host_name);
    if (offset > buf->size || bytes > buf->size - offset)
        return xattn_error(XATTN_ERR_INVALID_ARGUMENT,
                           "offset/bytes: range [%zu, %zu + %zu) is outside the %zu-byte buffer",
                           offset, offset, bytes, buf->size);
    return XATTN_OK;
}

xattn_status xattn_buffer_write(xattn_buffer *buf, size_t offset, const void *src,
                                size_t bytes)
{
    xattn_error_clear();
    XATTN_TRY(check_range(buf, offset, src, bytes, "src"));
    if (bytes == 0) return XATTN_OK;
    return buf->ctx->vt->buffer_write(buf->ctx->dev, buf->native, offset, src, bytes);
}

xattn_status xattn_buffer_read(const xattn_buffer *buf, size_t offset, void *dst, size_t bytes)
{
    xattn_error_clear();
    XATTN_TRY(check_range(buf, offset, dst, bytes, "dst"));
    if (bytes == 0) return XATTN_OK;
    return buf->ctx->vt->buffer_read(buf->ctx->dev, buf->native, offset, dst, bytes);
}

size_t xattn_buffer_size(const xattn_buffer *buf) { return buf ? buf->size : 0; }

void *xattn_buffer_native(const xattn_buffer *buf) { return buf ? buf->native : NULL; }

/* ---- tensors ------------------------------------------------------------ */

size_t xattn_dtype_size(xattn_dtype dtype)
{
    switch (dtype) {
    case XATTN_F32: return 4;
    case XATTN_F16: return 2;
    case XATTN_BF16: return 2;
    case XATTN_I32: return 4;
    }
    return 0;
}

const char *xattn_dtype_name(xattn_dtype dtype)
{
    switch (dtype) {
    case XATTN_F32: return "f32";
    case XATTN_F16: return "f16";
    case XATTN_BF16: return "bf16";
    case XATTN_I32: return "i32";
    }
    return "unknown";
}

xattn_tensor xattn_tensor_contiguous(xattn_buffer *buf, size_t offset, xattn_dtype dtype,
                                     int32_t rank, const int64_t *shape)
{
    xattn_tensor t;
    memset(&t, 0, sizeof t);
    t.buffer = buf;
    t.offset = offset;
    t.dtype = dtype;
    if (rank < 0) rank = 0;
    if (rank > XATTN_MAX_RANK) rank = XATTN_MAX_RANK;
    t.rank = rank;
    int64_t stride = 1;
    for (int32_t i = rank - 1; i >= 0; i--) {
        t.shape[i] = shape ? shape[i] : 0;
        t.stride[i] = stride;
        /* Saturate: an overflowing shape is rejected where it is used. */
        if (__builtin_mul_overflow(stride, t.shape[i] > 0 ? t.shape[i] : 1, &stride))
            stride = INT64_MAX;
    }
    return t;
}
