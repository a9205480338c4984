#pragma once
/* Reading a fuzzer's bytes as problem fields, and the host tensors the
 * harnesses run on.
 *
 * Every field is read as one control byte: below FZ_RAW_FROM it picks a
 * value in the field's sensible range (so an input of zeros is a small
 * valid problem and mutations mostly stay near valid ones); from
 * FZ_RAW_FROM on, the next four bytes are the raw value, however invalid.
 * Input that runs out reads as zeros. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "xattn.h"

enum {
    FZ_RAW_FROM = 240,
    /* Tensors larger than this are not allocated: the call is skipped. */
    FZ_MAX_TENSOR_BYTES = 4 << 20,
    FZ_MAX_TENSORS = 24,
};

typedef struct fz {
    const uint8_t *p;
    size_t n;
} fz;

static inline uint8_t fz_u8(fz *f)
{
    if (!f->n) return 0;
    f->n--;
    return *f->p++;
}

static inline uint32_t fz_u32(fz *f)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)fz_u8(f) << (8 * i);
    return v;
}

/* A value in [lo, hi], or (rarely) any 32-bit value. */
static inline int32_t fz_int(fz *f, int32_t lo, int32_t hi)
{
    uint8_t c = fz_u8(f);
    if (c >= FZ_RAW_FROM) return (int32_t)fz_u32(f);
    if (hi <= lo) return lo; /* a range from raw values may be empty */
    return (int32_t)(lo + (int64_t)(c % ((uint64_t)((int64_t)hi - lo) + 1)));
}

/* One of the n values, or (rarely) any 32-bit value. */
static inline int32_t fz_choose(fz *f, const int32_t *values, int n)
{
    uint8_t c = fz_u8(f);
    if (c >= FZ_RAW_FROM) return (int32_t)fz_u32(f);
    return values[c % n];
}

/* One of the n floats, or (rarely) any bit pattern (NaN, inf, ...). */
static inline float fz_float(fz *f, const float *values, int n)
{
    uint8_t c = fz_u8(f);
    if (c < FZ_RAW_FROM) return values[c % n];
    uint32_t bits = fz_u32(f);
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* ---- host tensors ---------------------------------------------------------- */

/* Buffers wrap malloc'd memory of exactly the tensor's extent, so that the
 * address sanitizer sees any access past it. */
typedef struct fz_pool {
    xattn_context *ctx;
    xattn_buffer *bufs[FZ_MAX_TENSORS];
    void *mem[FZ_MAX_TENSORS];
    int n;
    int too_big; /* a tensor was skipped: do not run */
    uint32_t seed;
} fz_pool;

static inline void fz_pool_free(fz_pool *p)
{
    for (int i = 0; i < p->n; i++) {
        xattn_buffer_free(&p->bufs[i]);
        free(p->mem[i]);
    }
    p->n = 0;
}

static inline float fz_next(fz_pool *p)
{
    p->seed = p->seed * 1664525u + 1013904223u;
    return (float)(p->seed >> 8) * (2.0f / 16777216.0f) - 1.0f;
}

/* How a tensor's memory is laid out and filled. */
typedef struct fz_layout {
    uint8_t strides;  /* 0 contiguous, 1 padded rows, 2 raw strides from the input */
    uint8_t specials; /* data: 0 finite values, 1 with NaN and inf among them */
    int8_t raw[XATTN_MAX_RANK];
} fz_layout;

static inline fz_layout fz_layout_read(fz *f)
{
    fz_layout l;
    memset(&l, 0, sizeof l);
    uint8_t c = fz_u8(f);
    l.strides = c < 200 ? 0 : c < 240 ? 1 : 2;
    l.specials = fz_u8(f) >= 224;
    if (l.strides == 2)
        for (int i = 0; i < XATTN_MAX_RANK; i++) l.raw[i] = (int8_t)fz_u8(f);
    return l;
}

static inline size_t fz_dtype_size(xattn_dtype t)
{
    return t == XATTN_F16 || t == XATTN_BF16 ? 2 : 4;
}

/* A tensor of shape with dtype, its buffer filled with values (i32
 * tensors: values from ints when given, else zeros). An absent tensor when
 * it would be too large. */
static inline xattn_tensor fz_tensor(fz_pool *p, xattn_dtype dtype, int32_t rank,
                                     const int64_t *shape, fz_layout lay, const int32_t *ints)
{
    xattn_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = dtype;
    t.rank = rank;
    int64_t elems = 1;
    for (int32_t i = 0; i < rank; i++) {
        if (shape[i] < 0 || shape[i] > FZ_MAX_TENSOR_BYTES) {
            p->too_big = 1;
            return t;
        }
        t.shape[i] = shape[i];
        elems *= shape[i] ? shape[i] : 1;
        if (elems > FZ_MAX_TENSOR_BYTES) {
            p->too_big = 1;
            return t;
        }
    }
    /* strides, innermost 1; padded rows leave gaps that must not be read */
    int64_t extent = 1;
    t.stride[rank - 1] = 1;
    for (int32_t i = rank - 2; i >= 0; i--)
        t.stride[i] = t.stride[i + 1] * (shape[i + 1] ? shape[i + 1] : 1) +
                      (lay.strides == 1 ? 1 + (i & 1) : 0);
    if (lay.strides == 2)
        for (int32_t i = 0; i < rank - 1; i++) t.stride[i] = lay.raw[i];
    for (int32_t i = 0; i < rank; i++) {
        int64_t s = t.stride[i] < 0 ? -t.stride[i] : t.stride[i];
        extent += (shape[i] ? shape[i] - 1 : 0) * s;
    }
    size_t es = fz_dtype_size(dtype), bytes = (size_t)extent * es;
    if (extent > FZ_MAX_TENSOR_BYTES || bytes > FZ_MAX_TENSOR_BYTES ||
        p->n == FZ_MAX_TENSORS) {
        p->too_big = 1;
        return t;
    }
    unsigned char *mem = malloc(bytes);
    if (!mem) {
        p->too_big = 1;
        return t;
    }
    for (int64_t i = 0; i < extent; i++) {
        if (dtype == XATTN_I32) {
            int32_t v = ints ? ints[i % (elems ? elems : 1)] : 0;
            memcpy(mem + i * 4, &v, 4);
            continue;
        }
        float v = fz_next(p);
        if (lay.specials && (p->seed >> 24) < 8)
            v = (p->seed >> 24) < 3 ? NAN : (p->seed >> 24) < 6 ? INFINITY : -INFINITY;
        if (dtype == XATTN_F32) {
            memcpy(mem + i * 4, &v, 4);
        } else {
            uint32_t bits;
            memcpy(&bits, &v, 4);
            /* f16: 1 + a fraction, or the special's own pattern */
            uint16_t h = dtype == XATTN_BF16 ? (uint16_t)(bits >> 16)
                         : isnan(v)          ? (uint16_t)0x7e00u
                         : isinf(v)          ? (uint16_t)(v > 0 ? 0x7c00u : 0xfc00u)
                                             : (uint16_t)(0x3c00u | (bits >> 13 & 0x3ffu));
            memcpy(mem + i * 2, &h, 2);
        }
    }
    xattn_buffer *b = NULL;
    if (xattn_buffer_wrap(p->ctx, mem, bytes, &b) != XATTN_OK) {
        free(mem);
        p->too_big = 1;
        return t;
    }
    p->bufs[p->n] = b;
    p->mem[p->n] = mem;
    p->n++;
    t.buffer = b;
    return t;
}

/* Fail loudly (abort: the fuzzer reports it) when a call broke the error
 * contract: a status outside the enum, or a failure without a message. */
static inline void fz_check_status(xattn_status st)
{
    if (st == XATTN_OK) return;
    if (!strcmp(xattn_status_string(st), "XATTN_STATUS_UNKNOWN")) abort();
    const char *msg = xattn_last_error();
    if (!msg || !*msg) abort();
}
