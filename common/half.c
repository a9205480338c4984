/* The exported f16/bf16 conversions (xattn_core.h): the inline versions of
 * half.h behind a call. The parenthesised names keep half.h's macros from
 * renaming these definitions. */
#include <stdint.h>

#include "error.h"
#include "half.h"

float(xattn_f16_to_f32)(uint16_t h) { return xattn_f16_to_f32_inline(h); }
uint16_t(xattn_f32_to_f16)(float f) { return xattn_f32_to_f16_inline(f); }
float(xattn_bf16_to_f32)(uint16_t h) { return xattn_bf16_to_f32_inline(h); }
uint16_t(xattn_f32_to_bf16)(float f) { return xattn_f32_to_bf16_inline(f); }

/* NULL with elements, or arrays that share a byte. */
static xattn_status check_arrays(const void *dst, size_t dst_elem, const void *src,
                                 size_t src_elem, size_t n)
{
    xattn_error_clear();
    if (n == 0) return XATTN_OK;
    if (!dst) return xattn_error(XATTN_ERR_INVALID_ARGUMENT, "dst: NULL with n = %zu", n);
    if (!src) return xattn_error(XATTN_ERR_INVALID_ARGUMENT, "src: NULL with n = %zu", n);
    size_t dst_bytes, src_bytes;
    uintptr_t d = (uintptr_t)dst, s = (uintptr_t)src;
    if (__builtin_mul_overflow(n, dst_elem, &dst_bytes) ||
        __builtin_mul_overflow(n, src_elem, &src_bytes) || d > UINTPTR_MAX - dst_bytes ||
        s > UINTPTR_MAX - src_bytes)
        return xattn_error(XATTN_ERR_INVALID_ARGUMENT,
                           "n: %zu elements do not fit in the address space", n);
    if (d < s + src_bytes && s < d + dst_bytes)
        return xattn_error(XATTN_ERR_INVALID_ARGUMENT, "dst/src: the arrays overlap");
    return XATTN_OK;
}

xattn_status xattn_f16_to_f32_array(float *dst, const uint16_t *src, size_t n)
{
    XATTN_TRY(check_arrays(dst, sizeof *dst, src, sizeof *src, n));
    for (size_t i = 0; i < n; i++) dst[i] = xattn_f16_to_f32_inline(src[i]);
    return XATTN_OK;
}

xattn_status xattn_f32_to_f16_array(uint16_t *dst, const float *src, size_t n)
{
    XATTN_TRY(check_arrays(dst, sizeof *dst, src, sizeof *src, n));
    for (size_t i = 0; i < n; i++) dst[i] = xattn_f32_to_f16_inline(src[i]);
    return XATTN_OK;
}

xattn_status xattn_bf16_to_f32_array(float *dst, const uint16_t *src, size_t n)
{
    XATTN_TRY(check_arrays(dst, sizeof *dst, src, sizeof *src, n));
    for (size_t i = 0; i < n; i++) dst[i] = xattn_bf16_to_f32_inline(src[i]);
    return XATTN_OK;
}

xattn_status xattn_f32_to_bf16_array(uint16_t *dst, const float *src, size_t n)
{
    XATTN_TRY(check_arrays(dst, sizeof *dst, src, sizeof *src, n));
    for (size_t i = 0; i < n; i++) dst[i] = xattn_f32_to_bf16_inline(src[i]);
    return XATTN_OK;
}
