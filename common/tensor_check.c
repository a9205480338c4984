/* Tensor checks shared by every front end (see tensor_check.h). */
#include <string.h>

#include "error.h"
#include "tensor_check.h"

#define INVALID(...) xattn_error(XATTN_ERR_INVALID_ARGUMENT, __VA_ARGS__)

/* Check one tensor: presence, context, dtype, rank, shape, strides
 * (positive, non-overlapping, and the innermost 1 when inner_unit is set),
 * alignment and bounds. shape entries equal to ANY accept any size and
 * receive it. */
static xattn_status check_tensor(const xattn_context *ctx, const xattn_tensor *t,
                                 const char *name, xattn_dtype dtype, int32_t rank,
                                 int64_t *shape, xattn_span *sp, int inner_unit)
{
    if (!t->buffer) return INVALID("%s: missing (buffer is NULL)", name);
    if (t->buffer->ctx != ctx)
        return INVALID("%s: buffer belongs to another context", name);
    if (t->dtype != dtype)
        return INVALID("%s: dtype %s, expected %s", name, xattn_dtype_name(t->dtype),
                       xattn_dtype_name(dtype));
    if (t->rank != rank) return INVALID("%s: rank %d, expected %d", name, (int)t->rank, (int)rank);
    for (int i = 0; i < rank; i++) {
        if (t->shape[i] < 0) return INVALID("%s: shape[%d] = %lld is negative", name, i,
                                            (long long)t->shape[i]);
        if (shape[i] == ANY)
            shape[i] = t->shape[i];
        else if (t->shape[i] != shape[i])
            return INVALID("%s: shape[%d] = %lld, expected %lld", name, i,
                           (long long)t->shape[i], (long long)shape[i]);
    }
    size_t es = xattn_dtype_size(dtype);
    if (t->offset % es)
        return INVALID("%s: byte offset %zu is not a multiple of the element size %zu", name,
                       t->offset, es);
    int64_t elems = 1;
    for (int i = 0; i < rank; i++)
        if (__builtin_mul_overflow(elems, t->shape[i], &elems))
            return INVALID("%s: element count overflows", name);
    sp->buffer = t->buffer;
    sp->begin = sp->end = t->offset;
    sp->t = t;
    if (elems == 0) return XATTN_OK;
    if (inner_unit && rank > 0 && t->stride[rank - 1] != 1 && t->shape[rank - 1] > 1)
        return INVALID("%s: innermost stride is %lld, must be 1", name,
                       (long long)t->stride[rank - 1]);
    /* Extent, and no two elements at one address: each stride (dims of size
     * > 1, ordered by stride) must step past everything inside it. */
    int order[XATTN_MAX_RANK];
    int n = 0;
    for (int i = 0; i < rank; i++) {
        if (t->shape[i] <= 1) continue;
        if (t->stride[i] <= 0)
            return INVALID("%s: stride[%d] = %lld, must be > 0", name, i,
                           (long long)t->stride[i]);
        int j = n++;
        while (j > 0 && t->stride[order[j - 1]] > t->stride[i]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
    int64_t extent = 1; /* elements spanned by the dims seen so far */
    for (int k = 0; k < n; k++) {
        int i = order[k];
        if (t->stride[i] < extent)
            return INVALID("%s: stride[%d] = %lld overlaps the %lld elements inside it", name, i,
                           (long long)t->stride[i], (long long)extent);
        int64_t span_i;
        if (__builtin_mul_overflow(t->shape[i] - 1, t->stride[i], &span_i) ||
            __builtin_add_overflow(extent, span_i, &extent))
            return INVALID("%s: extent overflows", name);
    }
    int64_t bytes;
    if (__builtin_mul_overflow(extent, (int64_t)es, &bytes) ||
        (uint64_t)bytes > t->buffer->size || t->offset > t->buffer->size - (uint64_t)bytes)
        return INVALID("%s: elements [%zu, %zu + %lld bytes) lie outside the %zu-byte buffer",
                       name, t->offset, t->offset, (long long)bytes, t->buffer->size);
    sp->end = t->offset + (size_t)bytes;
    return XATTN_OK;
}

xattn_status xattn_check_tensor(const xattn_context *ctx, const xattn_tensor *t,
                                 const char *name, xattn_dtype dtype, int32_t rank,
                                 int64_t *shape, xattn_span *sp)
{
    return check_tensor(ctx, t, name, dtype, rank, shape, sp, 1);
}

xattn_status xattn_check_tensor_strided(const xattn_context *ctx, const xattn_tensor *t,
                                        const char *name, xattn_dtype dtype, int32_t rank,
                                        int64_t *shape, xattn_span *sp)
{
    return check_tensor(ctx, t, name, dtype, rank, shape, sp, 0);
}

xattn_status xattn_check_absent(const xattn_tensor *t, const char *name, const char *why)
{
    if (t->buffer) return INVALID("%s: given, but %s (it would be ignored)", name, why);
    return XATTN_OK;
}

/* Two views of one layout, offset by d elements, interleave without sharing
 * an element when some stride s_k, a multiple-divisor of every larger stride,
 * fits both inner blocks side by side: with E_k the extent of the dims inside
 * it and r = d mod s_k, that is E_k <= r <= s_k - E_k. This accepts packed
 * layouts such as K and V in one [pages, page_size, 2, Hkv, D] cache. */
static int views_interleave(const xattn_tensor *a, const xattn_tensor *b)
{
    size_t es = xattn_dtype_size(a->dtype);
    if (a->rank != b->rank || es != xattn_dtype_size(b->dtype)) return 0;
    for (int i = 0; i < a->rank; i++)
        if (a->shape[i] != b->shape[i] || a->stride[i] != b->stride[i]) return 0;
    size_t lo = a->offset < b->offset ? a->offset : b->offset;
    size_t hi = a->offset < b->offset ? b->offset : a->offset;
    if ((hi - lo) % es) return 0;
    int64_t d = (int64_t)((hi - lo) / es);
    for (int k = 0; k < a->rank; k++) {
        int64_t sk = a->stride[k];
        if (a->shape[k] <= 1 || sk <= 0) continue;
        int64_t inner = 1; /* extent of the dims with smaller strides */
        int divides = 1;
        for (int i = 0; i < a->rank; i++) {
            if (i == k || a->shape[i] <= 1) continue;
            if (a->stride[i] < sk)
                inner += (a->shape[i] - 1) * a->stride[i];
            else if (a->stride[i] % sk)
                divides = 0;
        }
        int64_t r = d % sk;
        if (divides && inner <= r && r <= sk - inner) return 1;
    }
    return 0;
}

/* Where a xattn_span starts in one address space: the host address when the
 * memory is host-visible (two wraps of one allocation then compare equal),
 * else the buffer's own byte offsets, comparable only within one buffer. */
static int span_base(const xattn_span *a, const xattn_span *b, uintptr_t *base_a, uintptr_t *base_b)
{
    if (a->buffer == b->buffer) {
        *base_a = *base_b = 0;
        return 1;
    }
    if (!a->buffer->host || !b->buffer->host) return 0;
    *base_a = (uintptr_t)a->buffer->host;
    *base_b = (uintptr_t)b->buffer->host;
    return 1;
}

int xattn_spans_overlap(const xattn_span *a, const xattn_span *b)
{
    if (!a->buffer || !b->buffer || a->end <= a->begin || b->end <= b->begin) return 0;
    uintptr_t ba, bb;
    if (!span_base(a, b, &ba, &bb)) return 0;
    if (ba + a->begin >= bb + b->end || bb + b->begin >= ba + a->end) return 0;
    if (!a->t || !b->t) return 1;
    xattn_tensor ta = *a->t, tb = *b->t; /* offsets in the common address space */
    ta.offset += ba;
    tb.offset += bb;
    return !views_interleave(&ta, &tb);
}

const int32_t *xattn_host_i32(const xattn_tensor *t)
{
    if (!t->buffer || !t->buffer->host) return NULL;
    return (const int32_t *)((const char *)t->buffer->host + t->offset);
}

int64_t xattn_stride(const xattn_tensor *t, int i)
{
    return t->shape[i] > 1 ? t->stride[i] : 0;
}

xattn_ref xattn_ref_of(const xattn_tensor *t)
{
    xattn_ref r = {t->buffer ? t->buffer->native : NULL, t->offset};
    return r;
}


xattn_status xattn_check_workspace(const xattn_context *ctx, const xattn_buffer *workspace,
                                   size_t offset, size_t needed, xattn_span *sp)
{
    memset(sp, 0, sizeof *sp);
    if (!needed) {
        if (offset)
            return INVALID("workspace_offset: %zu given, but the plan needs no workspace",
                           offset);
        return XATTN_OK;
    }
    if (!workspace)
        return xattn_error(XATTN_ERR_WORKSPACE_TOO_SMALL,
                           "workspace: missing; the plan needs %zu bytes", needed);
    if (workspace->ctx != ctx) return INVALID("workspace: buffer belongs to another context");
    if (offset % XATTN_WORKSPACE_ALIGN)
        return INVALID("workspace_offset: %zu is not a multiple of %d", offset,
                       XATTN_WORKSPACE_ALIGN);
    if (offset > workspace->size || workspace->size - offset < needed)
        return xattn_error(XATTN_ERR_WORKSPACE_TOO_SMALL,
                           "workspace: %zu bytes from offset %zu, the plan needs %zu",
                           offset < workspace->size ? workspace->size - offset : (size_t)0,
                           offset, needed);
    sp->buffer = workspace;
    sp->begin = offset;
    sp->end = offset + needed;
    return XATTN_OK;
}
