#pragma once
/* Checks every front end (attention, kv_append, merge_states, MoE) applies to
 * caller tensors: shape, dtype, strides, bounds and overlaps. */
#include <stdint.h>

#include "backend.h"

/* Expected shape entry meaning "any size >= 0; the caller reads it back". */
#define ANY (-1)

/* Bytes [begin, end) a tensor touches in its buffer. */
typedef struct xattn_span {
    const xattn_buffer *buffer;
    size_t begin, end;     /* bytes [begin, end) */
    const xattn_tensor *t; /* the tensor, for the finer interleave test */
} xattn_span;

/* Check one tensor: presence, context, dtype, rank, shape, strides (innermost
 * 1, positive, non-overlapping), alignment and bounds. shape entries equal
 * to ANY accept any size and receive it; sp receives the bytes it spans.
 * Errors: XATTN_ERR_INVALID_ARGUMENT naming the tensor. */
xattn_status xattn_check_tensor(const xattn_context *ctx, const xattn_tensor *t, const char *name,
                          xattn_dtype dtype, int32_t rank, int64_t *shape, xattn_span *sp);

/* As xattn_check_tensor, but any positive non-overlapping strides, the
 * innermost included: for small per-row values such as LSE [H, N], which
 * callers keep transposed ([N, H], FlashInfer) as often as not. */
xattn_status xattn_check_tensor_strided(const xattn_context *ctx, const xattn_tensor *t,
                                        const char *name, xattn_dtype dtype, int32_t rank,
                                        int64_t *shape, xattn_span *sp);

/* XATTN_ERR_INVALID_ARGUMENT when t is given although `why` says it is
 * unused (it would be ignored). */
xattn_status xattn_check_absent(const xattn_tensor *t, const char *name, const char *why);

/* 1 if two spans share an element. Spans in different buffers compare by
 * host address when both are host-visible; interleaved views of one layout
 * (packed K/V) do not overlap. */
int xattn_spans_overlap(const xattn_span *a, const xattn_span *b);

/* The tensor's first element when its memory is host-visible, else NULL. */
const int32_t *xattn_host_i32(const xattn_tensor *t);

/* Stride i of a checked tensor as a backend may use it: 0 for a dimension
 * of size 0 or 1, whose stride is never checked (any value is valid there,
 * and a kernel that multiplies it by its element size or an index of 0
 * must not overflow). */
int64_t xattn_stride(const xattn_tensor *t, int i);

/* Native handle and byte offset of a tensor (NULL native when absent). */
xattn_ref xattn_ref_of(const xattn_tensor *t);

/* The workspace of a run: present when needed bytes > 0, of this context,
 * offset a multiple of XATTN_WORKSPACE_ALIGN, at least needed bytes from the
 * offset; sp receives the span the run uses (empty when needed is 0).
 * Errors: XATTN_ERR_WORKSPACE_TOO_SMALL, XATTN_ERR_INVALID_ARGUMENT. */
xattn_status xattn_check_workspace(const xattn_context *ctx, const xattn_buffer *workspace,
                                   size_t offset, size_t needed, xattn_span *sp);
