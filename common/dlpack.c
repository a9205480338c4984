/* DLPack tensors in and out (api/xattn_dlpack.h), read through the mirror
 * of DLPack's ABI in dlpack_abi.h. */
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "dlpack_abi.h"
#include "error.h"
#include "native.h"

#define INVALID(...) xattn_error(XATTN_ERR_INVALID_ARGUMENT, __VA_ARGS__)

/* DLPack's dtype of an xattn dtype, and back. */
static const struct {
    xattn_dtype dtype;
    uint8_t code, bits;
} dtypes[] = {
    {XATTN_F32, XATTN_DL_FLOAT, 32},
    {XATTN_F16, XATTN_DL_FLOAT, 16},
    {XATTN_BF16, XATTN_DL_BFLOAT, 16},
    {XATTN_I32, XATTN_DL_INT, 32},
};

static int dtype_from_dl(xattn_dl_dtype t, xattn_dtype *out)
{
    for (size_t i = 0; i < XATTN_ARRAY_SIZE(dtypes); i++)
        if (dtypes[i].code == t.code && dtypes[i].bits == t.bits) {
            *out = dtypes[i].dtype;
            return 1;
        }
    return 0;
}

static const char *dl_code_name(uint8_t code)
{
    switch (code) {
    case XATTN_DL_INT: return "kDLInt";
    case XATTN_DL_UINT: return "kDLUInt";
    case XATTN_DL_FLOAT: return "kDLFloat";
    case XATTN_DL_BFLOAT: return "kDLBfloat";
    }
    return "code";
}

/* The backend's row, or UNSUPPORTED when no DLPack device type names its
 * memory. */
static xattn_status native_row(const xattn_context *ctx, const xattn_native_kind **out)
{
    const xattn_native_kind *nk = xattn_native_kind_of(ctx->kind);
    if (!nk || !nk->dl[0].type || !nk->is_address)
        return xattn_error(XATTN_ERR_UNSUPPORTED, "dlpack: the %s backend: %s", ctx->vt->name,
                           nk && nk->no_dlpack ? nk->no_dlpack
                                               : "no DLPack device type names its memory");
    *out = nk;
    return XATTN_OK;
}

/* "kDLCPU, kDLCUDAHost or kDLROCMHost" */
static void accepted_types(const xattn_native_kind *nk, char *buf, size_t size)
{
    size_t n = 0, count = 0;
    while (count < XATTN_DL_TYPES_MAX && nk->dl[count].type) count++;
    buf[0] = '\0';
    for (size_t i = 0; i < count && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, "%s%s", i == 0 ? "" : i + 1 == count ? " or " : ", ",
                              xattn_dl_device_type_name(nk->dl[i].type));
}

static xattn_status check_device(const xattn_context *ctx, const xattn_native_kind *nk,
                                 xattn_dl_device dev)
{
    for (int i = 0; i < XATTN_DL_TYPES_MAX && nk->dl[i].type; i++) {
        if (nk->dl[i].type != dev.device_type) continue;
        int32_t want = nk->dl[i].id == XATTN_DL_ID_INDEX ? ctx->device_index : 0;
        if (dev.device_id != want)
            return INVALID("dl.device.device_id: %d, but the context is %s device %d%s",
                           (int)dev.device_id, ctx->vt->name, (int)ctx->device_index,
                           nk->dl[i].id == XATTN_DL_ID_ZERO
                               ? " and DLPack numbers host memory 0" : "");
        return XATTN_OK;
    }
    char accepted[96];
    accepted_types(nk, accepted, sizeof accepted);
    const char *name = xattn_dl_device_type_name(dev.device_type);
    return INVALID("dl.device.device_type: %s (%d), but the %s backend reads %s memory",
                   name ? name : "unknown", (int)dev.device_type, ctx->vt->name, accepted);
}

xattn_status xattn_tensor_from_dlpack(xattn_context *ctx, const xattn_dl_tensor *dl,
                                      xattn_buffer **buf_out, xattn_tensor *out)
{
    xattn_error_clear();
    if (!ctx) return INVALID("ctx: must not be NULL");
    if (!dl) return INVALID("dl: must not be NULL");
    if (!buf_out) return INVALID("buf_out: must not be NULL");
    if (!out) return INVALID("out: must not be NULL");
    const xattn_native_kind *nk = NULL;
    XATTN_TRY(native_row(ctx, &nk));
    XATTN_TRY(check_device(ctx, nk, dl->device));

    if (dl->ndim < 1 || dl->ndim > XATTN_MAX_RANK)
        return INVALID("dl.ndim: %d, must be in [1, %d]", (int)dl->ndim, XATTN_MAX_RANK);
    if (dl->dtype.lanes != 1)
        return INVALID("dl.dtype.lanes: %u, must be 1 (xattn has no vector dtypes)",
                       (unsigned)dl->dtype.lanes);
    xattn_dtype dtype;
    if (!dtype_from_dl(dl->dtype, &dtype))
        return INVALID("dl.dtype: %s (%u) with %u bits is not an xattn dtype (kDLFloat 32, "
                       "kDLFloat 16, kDLBfloat 16, kDLInt 32)", dl_code_name(dl->dtype.code),
                       (unsigned)dl->dtype.code, (unsigned)dl->dtype.bits);
    if (!dl->shape) return INVALID("dl.shape: must not be NULL");

    const int32_t rank = dl->ndim;
    int64_t elems = 1;
    for (int32_t i = 0; i < rank; i++) {
        if (dl->shape[i] < 0)
            return INVALID("dl.shape[%d]: %lld is negative", (int)i, (long long)dl->shape[i]);
        if (__builtin_mul_overflow(elems, dl->shape[i], &elems))
            return INVALID("dl.shape: the element count overflows");
    }

    /* Strides in elements. Those of dims with at most one element address
     * nothing (frameworks leave any value there): they become compact. */
    xattn_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = dtype;
    t.rank = rank;
    int64_t compact = 1, extent = 1; /* elements spanned, when elems > 0 */
    for (int32_t i = rank - 1; i >= 0; i--) {
        int64_t n = dl->shape[i], s = dl->strides ? dl->strides[i] : compact;
        t.shape[i] = n;
        if (n <= 1) s = compact;
        else if (s < 1)
            return INVALID("dl.strides[%d]: %lld, must be > 0 (xattn tensors have positive "
                           "strides)", (int)i, (long long)s);
        t.stride[i] = s;
        int64_t span;
        if (elems && (__builtin_mul_overflow(n - 1, s, &span) ||
                      __builtin_add_overflow(extent, span, &extent)))
            return INVALID("dl.strides: the extent overflows");
        if (__builtin_mul_overflow(compact, n > 0 ? n : 1, &compact)) compact = INT64_MAX;
    }
    size_t es = xattn_dtype_size(dtype);
    int64_t bytes = 0;
    if (elems && (__builtin_mul_overflow(extent, (int64_t)es, &bytes) || bytes > PTRDIFF_MAX))
        return INVALID("dl.shape/dl.strides: %lld elements of %zu bytes are too many",
                       (long long)extent, es);

    if (!dl->data && elems)
        return INVALID("dl.data: NULL with %lld elements", (long long)elems);
    uintptr_t base = (uintptr_t)dl->data;
    if (dl->data && (dl->byte_offset > UINTPTR_MAX - base))
        return INVALID("dl.byte_offset: %llu past dl.data wraps around the address space",
                       (unsigned long long)dl->byte_offset);
    base += dl->data ? (uintptr_t)dl->byte_offset : 0;
    if (base % es)
        return INVALID("dl.data + dl.byte_offset: %#llx is not aligned to the %zu-byte %s "
                       "elements", (unsigned long long)base, es, xattn_dtype_name(dtype));

    if (base > UINTPTR_MAX - (uint64_t)bytes)
        return INVALID("dl.data + dl.byte_offset: %#llx + %lld bytes runs past the top of the "
                       "address space", (unsigned long long)base, (long long)bytes);

    /* The buffer is exactly the bytes the tensor spans, from its first
     * element (strides are positive, so that is data + byte_offset). */
    xattn_buffer *buf = NULL;
    XATTN_TRY(xattn_buffer_wrap(ctx, dl->data ? (void *)base : NULL, (size_t)bytes, &buf));
    t.buffer = buf;
    t.offset = 0;
    *buf_out = buf;
    *out = t;
    return XATTN_OK;
}

xattn_status xattn_tensor_to_dlpack(xattn_tensor *tensor, xattn_dl_tensor *out)
{
    xattn_error_clear();
    if (!tensor) return INVALID("tensor: must not be NULL");
    if (!out) return INVALID("out: must not be NULL");
    const xattn_tensor *t = tensor;
    if (!t->buffer) return INVALID("tensor.buffer: must not be NULL");
    const xattn_context *ctx = t->buffer->ctx;
    const xattn_native_kind *nk = NULL;
    XATTN_TRY(native_row(ctx, &nk));
    size_t es = xattn_dtype_size(t->dtype);
    if (!es) return INVALID("tensor.dtype: %d is not an xattn_dtype", (int)t->dtype);
    if (t->rank < 1 || t->rank > XATTN_MAX_RANK)
        return INVALID("tensor.rank: %d, must be in [1, %d]", (int)t->rank, XATTN_MAX_RANK);
    if (t->offset % es)
        return INVALID("tensor.offset: %zu is not a multiple of the element size %zu", t->offset,
                       es);
    int64_t elems = 1, extent = 1;
    for (int32_t i = 0; i < t->rank; i++) {
        if (t->shape[i] < 0)
            return INVALID("tensor.shape[%d]: %lld is negative", (int)i,
                           (long long)t->shape[i]);
        if (__builtin_mul_overflow(elems, t->shape[i], &elems))
            return INVALID("tensor.shape: the element count overflows");
    }
    for (int32_t i = 0; i < t->rank && elems; i++) {
        if (t->shape[i] <= 1) continue;
        if (t->stride[i] < 1)
            return INVALID("tensor.stride[%d]: %lld, must be > 0", (int)i,
                           (long long)t->stride[i]);
        int64_t span;
        if (__builtin_mul_overflow(t->shape[i] - 1, t->stride[i], &span) ||
            __builtin_add_overflow(extent, span, &extent))
            return INVALID("tensor.stride: the extent overflows");
    }
    int64_t bytes = 0;
    if (elems && (__builtin_mul_overflow(extent, (int64_t)es, &bytes) ||
                  (uint64_t)bytes > t->buffer->size || t->offset > t->buffer->size - (size_t)bytes))
        return INVALID("tensor: its elements lie outside the %zu-byte buffer", t->buffer->size);

    xattn_dl_tensor dl;
    memset(&dl, 0, sizeof dl);
    dl.data = t->buffer->native;
    dl.device.device_type = nk->dl[0].type;
    dl.device.device_id = nk->dl[0].id == XATTN_DL_ID_INDEX ? ctx->device_index : 0;
    dl.ndim = t->rank;
    for (size_t i = 0; i < XATTN_ARRAY_SIZE(dtypes); i++)
        if (dtypes[i].dtype == t->dtype) {
            dl.dtype.code = dtypes[i].code;
            dl.dtype.bits = dtypes[i].bits;
        }
    dl.dtype.lanes = 1;
    dl.shape = tensor->shape;
    dl.strides = tensor->stride;
    dl.byte_offset = t->offset;
    *out = dl;
    return XATTN_OK;
}
