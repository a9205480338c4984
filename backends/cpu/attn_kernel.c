/* Fused attention for the CPU backend. This one source is compiled once per
 * ISA (XATTN_CPU_ISA_AVX512, XATTN_CPU_ISA_AVX2, or neither for portable C)
 * behind a thin vector layer; cpu_isa.c picks the build at prepare time.
 *
 * One work item (sequence, head group, query tile, KV split) runs on one
 * thread with its own scratch slice (plan_cpu.h). It walks the keys a tile
 * of block_k at a time with the online softmax: S = Q·Kᵀ for the tile, row
 * maxima and exp in place, O = α·O + P·V. Nothing of size Sq·Sk exists.
 *
 * Two kernel shapes (plan_cpu.c explains the choice):
 *  - wide: query rows live in vector lanes. Q is stored transposed
 *    (Qt[d][row]) once per item; S_ROW_VECS vectors of rows × S_KEYS keys of
 *    S stay in registers while d runs, each K element is one broadcast. The
 *    softmax is then vertical: a row's maximum is a lane-wise max over keys.
 *  - narrow (rows ≤ half a vector, i.e. decode): d lives in lanes. The rows
 *    (padded to rp, a power of two) dot VW/rp keys at once, and a
 *    transposing reduction turns the VW partial-sum vectors into one vector
 *    of scores, key-major. Decode is bound by memory, so K and V are read
 *    straight from the caller's rows (converted on load), never copied:
 *    a copy costs a store per element, which is more than the arithmetic.
 * Both keep P key-major (Pt[key][row]) and share the shape of the P·V block:
 * PV_ROWS rows × PV_VECS vectors of Dv in registers, V rows streamed, P
 * broadcast.
 *
 * The wide kernel converts each K and V tile to f32 in scratch once (this
 * is where paging, strides and f16/bf16 are absorbed) because every element
 * is then used by block_q rows.
 *
 * Split-KV: each split writes O/ℓ and LSE of its keys to the workspace
 * partial region; after a barrier the rows are merged by LSE, and the sink,
 * which must count once, joins only there. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cpu_kernels.h"
#include "half.h"
#include "plan_cpu.h"

/* Register blocks are arrays of vectors indexed by compile-time constants;
 * fully unrolled, the compiler keeps them in registers. Each ISA build uses
 * a different subset of the vector layer, hence "unused". */
#if defined(__clang__)
#  define INLINE static inline __attribute__((always_inline, unused))
#  define UNROLL _Pragma("clang loop unroll(full)")
#  define UNROLL_ALL _Pragma("clang loop unroll(full)")
#elif defined(__GNUC__)
#  define INLINE static inline __attribute__((always_inline, unused))
#  define UNROLL _Pragma("GCC unroll 16")
#  define UNROLL_ALL _Pragma("GCC unroll 32")
#else
#  define INLINE static inline
#  define UNROLL
#  define UNROLL_ALL
#endif

/* Range reduction and polynomial of exp, shared by the vector builds: x = n·ln2 + r
 * with ln2 split in two so n·LN2_HI is exact, then e^r on |r| ≤ ln2/2 by a
 * degree-7 polynomial with 1-ulp accuracy (Cephes expf coefficients). */
#define EXP_LOG2E 1.44269504088896341f
#define EXP_LN2_HI 0.693359375f
#define EXP_LN2_LO (-2.12194440e-4f)
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f
/* exp(88) is the largest power we build without overflow; every argument
 * the kernel passes is ≤ 0 anyway. */
#define EXP_MAX_ARG 88.0f
/* tanh(x) for |x| below this uses its odd polynomial (Cephes tanhf), above
 * it 1 − 2/(e^{2x}+1), which has no cancellation there. */
#define TANH_SMALL 0.625f
#define TANH_P0 (-5.70498872745e-3f)
#define TANH_P1 2.06390887954e-2f
#define TANH_P2 (-5.37397155531e-2f)
#define TANH_P3 1.33314422036e-1f
#define TANH_P4 (-3.33332819422e-1f)
/* tanh(x) rounds to ±1 in f32 beyond this; also keeps e^{2x} finite. */
#define TANH_SATURATE 44.0f

/* ---- vector layer ------------------------------------------------------------- */

#if defined(XATTN_CPU_ISA_AVX512)
#  include <immintrin.h>
#  define KERNEL_ENTRY xattn_cpu_attn_avx512
#  define VEC_MATH 1 /* exp and tanh from the shared polynomial below */
#  define VW 16
enum { S_ROW_VECS = 3, S_KEYS = 8, PV_ROWS = 6, PV_VECS = 4 };
typedef __m512 vf;
typedef __mmask16 vmask;
INLINE vf vzero(void) { return _mm512_setzero_ps(); }
INLINE vf vset1(float x) { return _mm512_set1_ps(x); }
INLINE vf vload(const float *p) { return _mm512_loadu_ps(p); }
INLINE void vstore(float *p, vf x) { _mm512_storeu_ps(p, x); }
INLINE vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
INLINE vf vsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
INLINE vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
INLINE vf vdiv(vf a, vf b) { return _mm512_div_ps(a, b); }
INLINE vf vmax(vf a, vf b) { return _mm512_max_ps(a, b); }
INLINE vf vmin(vf a, vf b) { return _mm512_min_ps(a, b); }
INLINE vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
INLINE vf vfnma(vf a, vf b, vf c) { return _mm512_fnmadd_ps(a, b, c); }
INLINE vf vabs(vf a) { return _mm512_abs_ps(a); }
/* a < b ? x : y, lane-wise. */
INLINE vf vsel_lt(vf a, vf b, vf x, vf y)
{
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), y, x);
}
/* s where lo ≤ x ≤ hi, −inf elsewhere. */
INLINE vf vkeep(vf s, vf x, vf lo, vf hi)
{
    __mmask16 k = _mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ) & _mm512_cmp_ps_mask(x, hi, _CMP_LE_OQ);
    return _mm512_mask_blend_ps(k, vset1(-INFINITY), s);
}
INLINE vf vcopysign(vf mag, vf sgn)
{
    __m512i m = _mm512_set1_epi32(INT32_MIN);
    return _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_andnot_si512(m, _mm512_castps_si512(mag)),
        _mm512_and_si512(m, _mm512_castps_si512(sgn))));
}
/* Below this exp rounds to 0 even as a subnormal. */
#  define EXP_MIN_ARG (-104.0f)
INLINE vf vexp_poly(vf r);
INLINE vf vexp(vf x)
{
    /* NaN lanes are kept (the compare is unordered-true) and pass the clamp
     * (max/min return their second operand when either is NaN), so NaN in
     * gives NaN out, as expf does. */
    __mmask16 keep = _mm512_cmp_ps_mask(x, vset1(EXP_MIN_ARG), _CMP_NLT_UQ);
    x = vmin(vset1(EXP_MAX_ARG), vmax(vset1(EXP_MIN_ARG), x));
    vf n = _mm512_roundscale_ps(vmul(x, vset1(EXP_LOG2E)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    vf r = vfnma(n, vset1(EXP_LN2_HI), x);
    r = vfnma(n, vset1(EXP_LN2_LO), r);
    /* scalef builds 2^n including the subnormal range. */
    return _mm512_maskz_scalef_ps(keep, vexp_poly(r), n);
}
INLINE __mmask16 lane_mask(int n)
{
    return n <= 0 ? 0 : n >= VW ? (__mmask16)0xffffu : (__mmask16)((1u << n) - 1u);
}
/* n ≤ VW elements of src (dtype dt) from element i, zeros beyond n. */
INLINE vf load_cvt(const void *src, xattn_dtype dt, int64_t i, int n)
{
    if (dt == XATTN_F32) {
        const float *p = (const float *)src + i;
        return n >= VW ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(lane_mask(n), p);
    }
    const uint16_t *p = (const uint16_t *)src + i;
    __m256i h = n >= VW ? _mm256_loadu_si256((const __m256i *)p)
                        : _mm256_maskz_loadu_epi16(lane_mask(n), p);
    if (dt == XATTN_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
/* Lanes of m of element i.. of a row of dtype DT (a constant), as f32. */
INLINE vf load_dt_m(const int DT, const void *src, int64_t i, vmask m)
{
    if (DT == XATTN_F32) return _mm512_maskz_loadu_ps(m, (const float *)src + i);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)src + i);
    if (DT == XATTN_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
/* Store n ≤ VW lanes of x as dtype dt, rounding to nearest even. */
INLINE void store_cvt(void *dst, xattn_dtype dt, int64_t i, int n, vf x)
{
    __mmask16 k = lane_mask(n);
    if (dt == XATTN_F32) {
        _mm512_mask_storeu_ps((float *)dst + i, k, x);
        return;
    }
    __m256i h;
    if (dt == XATTN_F16) {
        h = _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    } else {
        __m512i b = _mm512_castps_si512(x);
        __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
        __m512i r = _mm512_srli_epi32(
            _mm512_add_epi32(b, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
        /* NaN stays NaN (quiet) instead of rounding into infinity. */
        __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
        r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(b, 16), _mm512_set1_epi32(0x40));
        h = _mm512_cvtepi32_epi16(r);
    }
    _mm256_mask_storeu_epi16((uint16_t *)dst + i, k, h);
}
/* Transposing sum: lane L of the result is the horizontal sum of acc[s]
 * with s = slot_of_key(L). Four rounds of pairwise shuffles and adds. */
INLINE int slot_of_key(int k) { return 4 * (k % 4) + k / 4; }
INLINE vf vreduce_slots(const vf *a)
{
    vf v[8], w[4], x[2];
    UNROLL for (int p = 0; p < 8; p++)
        v[p] = vadd(_mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], 0x44),
                    _mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], 0xee));
    UNROLL for (int p = 0; p < 4; p++)
        w[p] = vadd(_mm512_shuffle_f32x4(v[2 * p], v[2 * p + 1], 0x88),
                    _mm512_shuffle_f32x4(v[2 * p], v[2 * p + 1], 0xdd));
    UNROLL for (int p = 0; p < 2; p++)
        x[p] = vadd(_mm512_shuffle_ps(w[2 * p], w[2 * p + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                    _mm512_shuffle_ps(w[2 * p], w[2 * p + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    return vadd(_mm512_shuffle_ps(x[0], x[1], _MM_SHUFFLE(2, 0, 2, 0)),
                _mm512_shuffle_ps(x[0], x[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

#elif defined(XATTN_CPU_ISA_AVX2)
#  include <immintrin.h>
#  define KERNEL_ENTRY xattn_cpu_attn_avx2
#  define VEC_MATH 1
/* 16 ymm registers: blocks of 8 (S) and 12 (P·V) accumulators. */
#  define VW 8
enum { S_ROW_VECS = 2, S_KEYS = 4, PV_ROWS = 4, PV_VECS = 3 };
typedef __m256 vf;
typedef int vmask; /* head dims are multiples of 8: no partial vectors */
INLINE vf vzero(void) { return _mm256_setzero_ps(); }
INLINE vf vset1(float x) { return _mm256_set1_ps(x); }
INLINE vf vload(const float *p) { return _mm256_loadu_ps(p); }
INLINE void vstore(float *p, vf x) { _mm256_storeu_ps(p, x); }
INLINE vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
INLINE vf vsub(vf a, vf b) { return _mm256_sub_ps(a, b); }
INLINE vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
INLINE vf vdiv(vf a, vf b) { return _mm256_div_ps(a, b); }
INLINE vf vmax(vf a, vf b) { return _mm256_max_ps(a, b); }
INLINE vf vmin(vf a, vf b) { return _mm256_min_ps(a, b); }
INLINE vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
INLINE vf vfnma(vf a, vf b, vf c) { return _mm256_fnmadd_ps(a, b, c); }
INLINE vf vabs(vf a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
INLINE vf vsel_lt(vf a, vf b, vf x, vf y)
{
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_LT_OQ));
}
INLINE vf vkeep(vf s, vf x, vf lo, vf hi)
{
    vf k = _mm256_and_ps(_mm256_cmp_ps(x, lo, _CMP_GE_OQ), _mm256_cmp_ps(x, hi, _CMP_LE_OQ));
    return _mm256_blendv_ps(vset1(-INFINITY), s, k);
}
INLINE vf vcopysign(vf mag, vf sgn)
{
    vf m = _mm256_set1_ps(-0.0f);
    return _mm256_or_ps(_mm256_andnot_ps(m, mag), _mm256_and_ps(m, sgn));
}
/* 2^n is built in the exponent field, so results stop at the smallest
 * normal; below it they are flushed to 0 (< 1.2e-38 next to a maximum
 * term of 1). */
#  define EXP_MIN_ARG (-87.3365447f)
INLINE vf vexp_poly(vf r);
INLINE vf vexp(vf x)
{
    /* NaN in, NaN out, as in the AVX-512 version. */
    vf keep = _mm256_cmp_ps(x, vset1(EXP_MIN_ARG), _CMP_NLT_UQ);
    x = vmin(vset1(EXP_MAX_ARG), vmax(vset1(EXP_MIN_ARG), x));
    vf n = _mm256_round_ps(vmul(x, vset1(EXP_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    vf r = vfnma(n, vset1(EXP_LN2_HI), x);
    r = vfnma(n, vset1(EXP_LN2_LO), r);
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
                                  23);
    return _mm256_and_ps(vmul(vexp_poly(r), _mm256_castsi256_ps(e)), keep);
}
INLINE vf load_cvt(const void *src, xattn_dtype dt, int64_t i, int n)
{
    if (n >= VW) {
        if (dt == XATTN_F32) return _mm256_loadu_ps((const float *)src + i);
        __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)src + i));
        if (dt == XATTN_F16) return _mm256_cvtph_ps(h);
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    float t[VW] = {0};
    for (int j = 0; j < n; j++) {
        if (dt == XATTN_F32) t[j] = ((const float *)src)[i + j];
        else if (dt == XATTN_F16) t[j] = xattn_f16_to_f32(((const uint16_t *)src)[i + j]);
        else t[j] = xattn_bf16_to_f32(((const uint16_t *)src)[i + j]);
    }
    return _mm256_loadu_ps(t);
}
INLINE int lane_mask(int n) { return n; }
INLINE vf load_dt_m(const int DT, const void *src, int64_t i, vmask m)
{
    /* A vector wholly in the padding (Dv = 8 padded to 16) reads nothing:
     * its bytes may lie past the end of the buffer. */
    if (m <= 0) return vzero();
    if (DT == XATTN_F32) return _mm256_loadu_ps((const float *)src + i);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)src + i));
    if (DT == XATTN_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
INLINE void store_cvt(void *dst, xattn_dtype dt, int64_t i, int n, vf x)
{
    if (n >= VW && dt == XATTN_F32) {
        _mm256_storeu_ps((float *)dst + i, x);
        return;
    }
    if (n >= VW && dt == XATTN_F16) {
        _mm_storeu_si128((__m128i *)((uint16_t *)dst + i),
                         _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        return;
    }
    float t[VW];
    _mm256_storeu_ps(t, x);
    for (int j = 0; j < n && j < VW; j++) {
        if (dt == XATTN_F32) ((float *)dst)[i + j] = t[j];
        else if (dt == XATTN_F16) ((uint16_t *)dst)[i + j] = xattn_f32_to_f16(t[j]);
        else ((uint16_t *)dst)[i + j] = xattn_f32_to_bf16(t[j]);
    }
}
/* Lane L of the result sums acc[slot_of_key(L)] (see the AVX-512 version;
 * three rounds here). */
INLINE int slot_of_key(int k) { return 2 * (k % 4) + k / 4; }
INLINE vf vreduce_slots(const vf *a)
{
    vf v[4], w[2];
    UNROLL for (int p = 0; p < 4; p++)
        v[p] = vadd(_mm256_permute2f128_ps(a[2 * p], a[2 * p + 1], 0x20),
                    _mm256_permute2f128_ps(a[2 * p], a[2 * p + 1], 0x31));
    UNROLL for (int p = 0; p < 2; p++)
        w[p] = vadd(_mm256_shuffle_ps(v[2 * p], v[2 * p + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                    _mm256_shuffle_ps(v[2 * p], v[2 * p + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    return vadd(_mm256_shuffle_ps(w[0], w[1], _MM_SHUFFLE(2, 0, 2, 0)),
                _mm256_shuffle_ps(w[0], w[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

#else /* portable C: one-lane "vectors" */
#  define KERNEL_ENTRY xattn_cpu_attn_generic
#  define VW 1
enum { S_ROW_VECS = 4, S_KEYS = 4, PV_ROWS = 4, PV_VECS = 4 };
typedef float vf;
typedef int vmask;
INLINE vf vzero(void) { return 0.0f; }
INLINE vf vset1(float x) { return x; }
INLINE vf vload(const float *p) { return *p; }
INLINE void vstore(float *p, vf x) { *p = x; }
INLINE vf vadd(vf a, vf b) { return a + b; }
INLINE vf vsub(vf a, vf b) { return a - b; }
INLINE vf vmul(vf a, vf b) { return a * b; }
INLINE vf vdiv(vf a, vf b) { return a / b; }
INLINE vf vmax(vf a, vf b) { return a > b ? a : b; }
INLINE vf vmin(vf a, vf b) { return a < b ? a : b; }
INLINE vf vfma(vf a, vf b, vf c) { return fmaf(a, b, c); }
INLINE vf vfnma(vf a, vf b, vf c) { return fmaf(-a, b, c); }
INLINE vf vabs(vf a) { return fabsf(a); }
INLINE vf vsel_lt(vf a, vf b, vf x, vf y) { return a < b ? x : y; }
INLINE vf vkeep(vf s, vf x, vf lo, vf hi) { return x >= lo && x <= hi ? s : -INFINITY; }
INLINE vf vexp(vf x) { return expf(x); }
INLINE vf vtanh(vf x) { return tanhf(x); }
INLINE vf load_cvt(const void *src, xattn_dtype dt, int64_t i, int n)
{
    if (n < 1) return 0.0f;
    if (dt == XATTN_F32) return ((const float *)src)[i];
    if (dt == XATTN_F16) return xattn_f16_to_f32(((const uint16_t *)src)[i]);
    return xattn_bf16_to_f32(((const uint16_t *)src)[i]);
}
INLINE int lane_mask(int n) { return n; }
INLINE vf load_dt_m(const int DT, const void *src, int64_t i, vmask m)
{
    (void)m;
    return load_cvt(src, (xattn_dtype)DT, i, 1);
}
INLINE void store_cvt(void *dst, xattn_dtype dt, int64_t i, int n, vf x)
{
    if (n < 1) return;
    if (dt == XATTN_F32) ((float *)dst)[i] = x;
    else if (dt == XATTN_F16) ((uint16_t *)dst)[i] = xattn_f32_to_f16(x);
    else ((uint16_t *)dst)[i] = xattn_f32_to_bf16(x);
}
INLINE int slot_of_key(int k) { return k; }
INLINE vf vreduce_slots(const vf *a) { return a[0]; }
#endif

#if defined(VEC_MATH)
INLINE vf vexp_poly(vf r)
{
    vf p = vset1(EXP_P0);
    p = vfma(p, r, vset1(EXP_P1));
    p = vfma(p, r, vset1(EXP_P2));
    p = vfma(p, r, vset1(EXP_P3));
    p = vfma(p, r, vset1(EXP_P4));
    p = vfma(p, r, vset1(EXP_P5));
    vf r2 = vmul(r, r);
    return vadd(vfma(p, r2, r), vset1(1.0f));
}

INLINE vf vtanh(vf y)
{
    vf a = vabs(y);
    vf e = vexp(vadd(vmin(a, vset1(TANH_SATURATE)), vmin(a, vset1(TANH_SATURATE))));
    vf one = vset1(1.0f);
    vf big = vcopysign(vsub(one, vdiv(vset1(2.0f), vadd(e, one))), y);
    vf z = vmul(y, y);
    vf p = vset1(TANH_P0);
    p = vfma(p, z, vset1(TANH_P1));
    p = vfma(p, z, vset1(TANH_P2));
    p = vfma(p, z, vset1(TANH_P3));
    p = vfma(p, z, vset1(TANH_P4));
    vf small = vfma(vmul(p, z), y, y);
    /* NaN takes the polynomial, which keeps it NaN (the other branch
     * would turn it into ±1). */
    return vsel_lt(vset1(TANH_SMALL), a, big, small);
}
#endif

/* ---- one launch ------------------------------------------------------------------ */

typedef struct run_ctx {
    const xattn_attn_problem *prob;
    const xattn_attn_plan_params *pp;
    const xattn_attn_launch *l;
    xattn_cpu_scratch lay;
    xattn_dtype dt;
    int64_t esize;
    int32_t hq, group, pack, dqk, dv, dqk_pad, dv_pad, block_q, block_k;
    int32_t wl, wr; /* window, −1 unbounded */
    int narrow;
    int prefetch_tiles; /* narrow: tiles between the one computed and the one prefetched */
    float scale, softcap;
    char *o;
    float *lse;
    const int32_t *cu_q, *cu_k, *block_table, *seqlens_k;
    const float *slopes, *sinks;
    float *part_o, *part_lse; /* split-KV partials, or NULL */
    int64_t part_rows;        /* B · seqlen_q */
    int64_t tile_space;       /* ragged Q: numbers of query tiles in this run */
    char *scratch;            /* slice 0 */
} run_ctx;

static const char *ref_ptr(xattn_ref r) { return (const char *)r.native + r.offset; }

/* Where a sequence's rows start and how many there are. */
typedef struct seq_info {
    int64_t sq, sk;
    int64_t q_row0;   /* global token index of query 0 (partials, LSE) */
    int64_t q_elem0;  /* element offset of query 0 in Q (O uses o strides) */
    int64_t o_elem0;
    int64_t k_tok0;   /* contiguous K/V: token row of key 0 */
} seq_info;

static void seq_get(const run_ctx *c, int64_t b, seq_info *s)
{
    const xattn_attn_desc *d = &c->prob->desc;
    const xattn_attn_launch *l = c->l;
    if (d->q_layout == XATTN_Q_RAGGED) {
        s->q_row0 = c->cu_q[b];
        s->sq = c->cu_q[b + 1] - c->cu_q[b];
        s->q_elem0 = s->q_row0 * l->q.st;
        s->o_elem0 = s->q_row0 * l->o.st;
    } else {
        s->q_row0 = b * d->seqlen_q;
        s->sq = d->seqlen_q;
        s->q_elem0 = b * l->q.sb;
        s->o_elem0 = b * l->o.sb;
    }
    s->k_tok0 = 0;
    if (d->kv_layout == XATTN_KV_RAGGED) {
        s->k_tok0 = c->cu_k[b];
        s->sk = c->cu_k[b + 1] - c->cu_k[b];
    } else if (d->kv_layout == XATTN_KV_PAGED) {
        s->sk = c->seqlens_k[b];
    } else {
        s->sk = d->seqlen_k;
    }
}

/* Visible keys [lo, hi] of query row i (bottom-right aligned window),
 * clipped to the sequence; lo > hi when none. */
static void row_range(const run_ctx *c, const seq_info *s, int64_t i, int64_t *lo, int64_t *hi)
{
    int64_t diag = i + s->sk - s->sq;
    *lo = c->wl >= 0 && diag - c->wl > 0 ? diag - c->wl : 0;
    *hi = c->wr >= 0 && diag + c->wr < s->sk - 1 ? diag + c->wr : s->sk - 1;
}

/* Walks the key rows of one sequence and KV head, page by page. */
typedef struct kv_cursor {
    const char *k, *v;           /* contiguous: row of the current key */
    int64_t k_st, v_st;          /* bytes between tokens */
    /* paged */
    const int32_t *pages;
    int64_t page, slot, page_size;
    const char *k_head, *v_head; /* caches offset by the KV head */
    int64_t k_sp, v_sp;          /* bytes between pages */
} kv_cursor;

static void cursor_init(const run_ctx *c, kv_cursor *cur, int64_t b, const seq_info *s,
                        int64_t hkv, int64_t j)
{
    const xattn_attn_launch *l = c->l;
    const int64_t e = c->esize;
    const char *kb = ref_ptr(l->k.ref) + hkv * l->k.sh * e;
    const char *vb = ref_ptr(l->v.ref) + hkv * l->v.sh * e;
    cur->k_st = l->k.st * e;
    cur->v_st = l->v.st * e;
    if (c->prob->desc.kv_layout == XATTN_KV_PAGED) {
        cur->pages = c->block_table + b * l->block_table_stride;
        cur->page_size = c->prob->desc.page_size;
        cur->page = j / cur->page_size;
        cur->slot = j % cur->page_size;
        cur->k_head = kb;
        cur->v_head = vb;
        cur->k_sp = l->k.sb * e;
        cur->v_sp = l->v.sb * e;
        cur->k = cur->v = NULL;
    } else {
        int64_t kbatch = c->prob->desc.kv_layout == XATTN_KV_UNIFORM ? b : 0;
        cur->pages = NULL;
        cur->k = kb + (kbatch * l->k.sb + (s->k_tok0 + j) * l->k.st) * e;
        cur->v = vb + (kbatch * l->v.sb + (s->k_tok0 + j) * l->v.st) * e;
    }
}

INLINE void cursor_rows(const kv_cursor *cur, const char **k, const char **v)
{
    if (cur->pages) {
        int64_t page = cur->pages[cur->page];
        *k = cur->k_head + page * cur->k_sp + cur->slot * cur->k_st;
        *v = cur->v_head + page * cur->v_sp + cur->slot * cur->v_st;
    } else {
        *k = cur->k;
        *v = cur->v;
    }
}

INLINE void cursor_next(kv_cursor *cur)
{
    if (cur->pages) {
        if (++cur->slot == cur->page_size) {
            cur->slot = 0;
            cur->page++;
        }
    } else {
        cur->k += cur->k_st;
        cur->v += cur->v_st;
    }
}

/* Ask for every cache line of a row that is about to be read. A tile reads
 * one KV head's slice of each token, so consecutive rows sit in different
 * 4 KiB pages, where the hardware stream prefetchers stop; these requests,
 * issued one phase ahead, keep DRAM busy while the core computes. The low
 * locality hint fills L2, not L1: prefetching into L1 holds its few miss
 * buffers and stalls the loads that are needed now (measured on Zen 4:
 * half the decode bandwidth). */
#define CACHE_LINE 64
#define PREFETCH_LOCALITY 1
INLINE void prefetch_row(const char *p, int64_t bytes)
{
    for (int64_t x = 0; x < bytes; x += CACHE_LINE) __builtin_prefetch(p + x, 0, PREFETCH_LOCALITY);
}

/* Convert n source elements to f32 at dst, zero-filled up to npad. */
INLINE void cvt_row(float *dst, const void *src, xattn_dtype dt, int n, int npad, float mul)
{
    for (int d = 0; d < npad; d += VW) vstore(dst + d, vmul(load_cvt(src, dt, d, n - d), vset1(mul)));
}

/* Scratch of the calling thread. */
typedef struct tile_mem {
    float *q, *k, *v, *s, *o, *row;
    float *m, *l, *alpha, *lo, *hi, *diag, *slope;
    int32_t *tok, *head;
} tile_mem;

static void tile_mem_get(const run_ctx *c, char *base, tile_mem *t)
{
    const xattn_cpu_scratch *y = &c->lay;
    t->q = (float *)(base + y->q);
    t->k = (float *)(base + y->k);
    t->v = (float *)(base + y->v);
    t->s = (float *)(base + y->s);
    t->o = (float *)(base + y->o);
    t->row = (float *)(base + y->row);
    float *st = (float *)(base + y->stat);
    t->m = st + XATTN_CPU_ROW_M * y->bq_pad;
    t->l = st + XATTN_CPU_ROW_L * y->bq_pad;
    t->alpha = st + XATTN_CPU_ROW_ALPHA * y->bq_pad;
    t->lo = st + XATTN_CPU_ROW_LO * y->bq_pad;
    t->hi = st + XATTN_CPU_ROW_HI * y->bq_pad;
    t->diag = st + XATTN_CPU_ROW_DIAG * y->bq_pad;
    t->slope = st + XATTN_CPU_ROW_SLOPE * y->bq_pad;
    t->tok = (int32_t *)(base + y->idx);
    t->head = t->tok + y->bq_pad;
}

/* ---- register blocks ---------------------------------------------------------- */

/* Wide S: St[key][row] for MV vectors of rows × S_KEYS keys.
 * qt: Qt[d][row] (ldq), kp: K rows (ldk), st: St (lds). */
INLINE void s_block(const int MV, const float *qt, int64_t ldq, const float *kp, int64_t ldk,
                    int dqk, float *st, int64_t lds)
{
    vf acc[S_ROW_VECS][S_KEYS];
    const float *kr[S_KEYS];
    UNROLL for (int j = 0; j < S_KEYS; j++) {
        kr[j] = kp + j * ldk;
        UNROLL for (int m = 0; m < MV; m++) acc[m][j] = vzero();
    }
    for (int d = 0; d < dqk; d++) {
        vf q[S_ROW_VECS];
        UNROLL for (int m = 0; m < MV; m++) q[m] = vload(qt + d * ldq + m * VW);
        UNROLL for (int j = 0; j < S_KEYS; j++) {
            vf b = vset1(kr[j][d]);
            UNROLL for (int m = 0; m < MV; m++) acc[m][j] = vfma(q[m], b, acc[m][j]);
        }
    }
    UNROLL for (int j = 0; j < S_KEYS; j++)
        UNROLL for (int m = 0; m < MV; m++) vstore(st + j * lds + m * VW, acc[m][j]);
}

/* O[r][0 .. NV·VW) = α_r·O[r] + Σ_n Pt[n][r]·V[n] for MR rows. */
INLINE void pv_block(const int MR, const int NV, float *o, int64_t ldo, const float *alpha,
                     const float *pt, int64_t ldp, const float *vp, int64_t ldv, int nk)
{
    vf acc[PV_ROWS][PV_VECS];
    UNROLL for (int r = 0; r < MR; r++) {
        vf a = vset1(alpha[r]);
        UNROLL for (int x = 0; x < NV; x++) acc[r][x] = vmul(vload(o + r * ldo + x * VW), a);
    }
    for (int n = 0; n < nk; n++) {
        vf vv[PV_VECS];
        UNROLL for (int x = 0; x < NV; x++) vv[x] = vload(vp + n * ldv + x * VW);
        UNROLL for (int r = 0; r < MR; r++) {
            vf p = vset1(pt[n * ldp + r]);
            UNROLL for (int x = 0; x < NV; x++) acc[r][x] = vfma(p, vv[x], acc[r][x]);
        }
    }
    UNROLL for (int r = 0; r < MR; r++)
        UNROLL for (int x = 0; x < NV; x++) vstore(o + r * ldo + x * VW, acc[r][x]);
}

#if VW >= 8
/* One d-chunk of the narrow S block: rp rows × VW/rp keys, d in lanes. */
INLINE void narrow_step(const int RP, const int DT, const float *q, int64_t ldq,
                        const char *const *kr, int d, vmask m, vf *acc,
                        const char *const *pf, int64_t pf_off)
{
    const int KS = VW / RP;
    vf qv[VW / 2];
    UNROLL for (int r = 0; r < RP; r++) qv[r] = vload(q + r * ldq + d);
    UNROLL for (int s = 0; s < KS; s++) {
        if (pf_off >= 0) __builtin_prefetch(pf[s] + pf_off, 0, PREFETCH_LOCALITY);
        vf kv = load_dt_m(DT, kr[s], d, m);
        UNROLL for (int r = 0; r < RP; r++) acc[r * KS + s] = vfma(qv[r], kv, acc[r * KS + s]);
    }
}

/* Narrow S: scores of RP rows (q, rows of ldq f32) against the VW/RP keys
 * whose rows (dtype DT) are kr[], stored key-major: st[s·RP + r].
 *
 * DQK, when not 0, is dqk as a constant: the d loop is then unrolled whole,
 * so each load instruction always reads the same chunk of successive rows,
 * a constant stride the hardware's per-instruction stride prefetcher
 * follows (worth about a quarter of decode's bandwidth). */
INLINE void s_narrow_block(const int RP, const int DT, const int DQK, const float *q,
                           int64_t ldq, const char *const *kr, int dqk, float *st,
                           const char *const *pf, int64_t pf_bytes)
{
    const int KS = VW / RP;
    vf acc[VW], in[VW];
    UNROLL for (int x = 0; x < VW; x++) acc[x] = vzero();
    /* Chunk i of the K rows goes with line i of the prefetched rows, so the
     * requests trickle out at the pace of the arithmetic. */
    int64_t line = 0;
    int d = 0;
    if (DQK) {
        UNROLL_ALL for (d = 0; d < DQK; d += VW, line += CACHE_LINE)
            narrow_step(RP, DT, q, ldq, kr, d, lane_mask(VW), acc, pf,
                        line < pf_bytes ? line : -1);
    } else {
        for (; d + VW <= dqk; d += VW, line += CACHE_LINE)
            narrow_step(RP, DT, q, ldq, kr, d, lane_mask(VW), acc, pf,
                        line < pf_bytes ? line : -1);
    }
    if (!DQK && d < dqk) {
        narrow_step(RP, DT, q, ldq, kr, d, lane_mask(dqk - d), acc, pf,
                    line < pf_bytes ? line : -1);
        line += CACHE_LINE;
    }
    for (; line < pf_bytes; line += CACHE_LINE)
        for (int s = 0; s < KS; s++) __builtin_prefetch(pf[s] + line, 0, PREFETCH_LOCALITY);
    /* Lane s·RP + r of the reduction is the score of key s, row r. */
    UNROLL for (int r = 0; r < RP; r++)
        UNROLL for (int s = 0; s < KS; s++) in[slot_of_key(s * RP + r)] = acc[r * KS + s];
    vstore(st, vreduce_slots(in));
}

/* O[r][x0 ..] = α_r·O[r] + Σ_n Pt[n][r]·V_n for MR rows and NV vectors of
 * Dv, V rows (dtype DT) read in place from vr[]; prefetches the rows
 * pf[0 .. pf_n) (the next tile's K) on the way. */
INLINE void pv_direct(const int MR, const int NV, const int DT, float *o, int64_t ldo,
                      const float *alpha, const float *pt, int64_t ldp, const char *const *vr,
                      int64_t x0, const vmask *masks, int nk, const char *const *pf, int pf_n,
                      int64_t pf_line0, int64_t pf_bytes)
{
    vf acc[PV_ROWS][PV_VECS];
    UNROLL for (int r = 0; r < MR; r++) {
        vf a = vset1(alpha[r]);
        UNROLL for (int x = 0; x < NV; x++) acc[r][x] = vmul(vload(o + r * ldo + x * VW), a);
    }
    for (int n = 0; n < nk; n++) {
        vf vv[PV_VECS];
        UNROLL for (int x = 0; x < NV; x++) {
            /* Vector x of this pass goes with line pf_line0 + x of pf[n]. */
            int64_t off = (pf_line0 + x) * CACHE_LINE;
            if (n < pf_n && off < pf_bytes) __builtin_prefetch(pf[n] + off, 0, PREFETCH_LOCALITY);
            vv[x] = load_dt_m(DT, vr[n], x0 + x * VW, masks[x]);
        }
        UNROLL for (int r = 0; r < MR; r++) {
            vf p = vset1(pt[n * ldp + r]);
            UNROLL for (int x = 0; x < NV; x++) acc[r][x] = vfma(p, vv[x], acc[r][x]);
        }
    }
    UNROLL for (int r = 0; r < MR; r++)
        UNROLL for (int x = 0; x < NV; x++) vstore(o + r * ldo + x * VW, acc[r][x]);
}
#endif

/* Dispatch the compile-time register blocks. */
static void s_rows(const run_ctx *c, const tile_mem *t, int nmv, int nk_pad)
{
    const int64_t ldq = c->lay.bq_pad, ldk = c->dqk_pad;
    for (int m0 = 0; m0 < nmv; m0 += S_ROW_VECS) {
        int mv = nmv - m0 < S_ROW_VECS ? nmv - m0 : S_ROW_VECS;
        const float *qt = t->q + m0 * VW;
        for (int n0 = 0; n0 < nk_pad; n0 += S_KEYS) {
            const float *kp = t->k + n0 * ldk;
            float *st = t->s + n0 * ldq + m0 * VW;
            switch (mv) {
            /* Cases past S_ROW_VECS never occur; they clamp so every ISA
             * compiles the same switch. */
            case 1: s_block(1, qt, ldq, kp, ldk, c->dqk, st, ldq); break;
            case 2: s_block(S_ROW_VECS < 2 ? S_ROW_VECS : 2, qt, ldq, kp, ldk, c->dqk, st, ldq); break;
            case 3: s_block(S_ROW_VECS < 3 ? S_ROW_VECS : 3, qt, ldq, kp, ldk, c->dqk, st, ldq); break;
            default: s_block(S_ROW_VECS, qt, ldq, kp, ldk, c->dqk, st, ldq); break;
            }
        }
    }
}

#define PV_CASE(mr, nv)                                                                   \
    case (mr) * 8 + (nv):                                                                 \
        pv_block((mr) < PV_ROWS ? (mr) : PV_ROWS, (nv) < PV_VECS ? (nv) : PV_VECS, o, ldo, \
                 al, pt, ldp, vp, ldv, nk);                                               \
        break;

static void pv_rows(const run_ctx *c, const tile_mem *t, int nrows, int nk)
{
    const int64_t ldo = c->dv_pad, ldp = c->lay.bq_pad, ldv = c->dv_pad;
    const int nvec = c->dv_pad / VW;
    for (int x0 = 0; x0 < nvec; x0 += PV_VECS) {
        int nv = nvec - x0 < PV_VECS ? nvec - x0 : PV_VECS;
        const float *vp = t->v + x0 * VW;
        for (int r0 = 0; r0 < nrows; r0 += PV_ROWS) {
            int mr = nrows - r0 < PV_ROWS ? nrows - r0 : PV_ROWS;
            float *o = t->o + r0 * ldo + x0 * VW;
            const float *al = t->alpha + r0, *pt = t->s + r0;
            /* Cases past PV_ROWS / PV_VECS never occur; they clamp so every
             * ISA's switch compiles to the same shape. */
            switch (mr * 8 + nv) {
                PV_CASE(1, 1) PV_CASE(1, 2) PV_CASE(1, 3) PV_CASE(1, 4)
                PV_CASE(2, 1) PV_CASE(2, 2) PV_CASE(2, 3) PV_CASE(2, 4)
                PV_CASE(3, 1) PV_CASE(3, 2) PV_CASE(3, 3) PV_CASE(3, 4)
                PV_CASE(4, 1) PV_CASE(4, 2) PV_CASE(4, 3) PV_CASE(4, 4)
                PV_CASE(5, 1) PV_CASE(5, 2) PV_CASE(5, 3) PV_CASE(5, 4)
                PV_CASE(6, 1) PV_CASE(6, 2) PV_CASE(6, 3) PV_CASE(6, 4)
            default: break;
            }
        }
    }
}

/* Rows r0 .. r0 + *mr − 1 (at most max_rows of the nrows) see the same keys
 * [*n0, *n0 + *nk) of the tile: a run of rows one register block can take. */
static void same_range_run(const tile_mem *t, int r0, int nrows, int max_rows, int *mr, int *n0,
                           int *nk)
{
    const float lo = t->lo[r0], hi = t->hi[r0];
    int n = 1;
    while (n < max_rows && r0 + n < nrows && t->lo[r0 + n] == lo && t->hi[r0 + n] == hi) n++;
    *mr = n;
    *n0 = (int)lo;
    *nk = hi >= lo ? (int)hi - (int)lo + 1 : 0;
}

/* Independent accumulators of tile_v_finite, so the check is not one long
 * chain of dependent FMAs. */
#define FINITE_CHAINS 4

/* 1 if the tile's nk V rows (f32 in scratch) are all finite: then a masked
 * key's P of exactly 0 adds exactly nothing, and pv_rows may run the tile
 * whole. 0·x is 0 for finite x and NaN for NaN and ±inf. */
static int tile_v_finite(const run_ctx *c, const tile_mem *t, int nk)
{
    const int64_t n = (int64_t)nk * c->dv_pad;
    vf acc[FINITE_CHAINS];
    for (int i = 0; i < FINITE_CHAINS; i++) acc[i] = vzero();
    int64_t x = 0;
    for (; x + FINITE_CHAINS * VW <= n; x += FINITE_CHAINS * VW)
        for (int i = 0; i < FINITE_CHAINS; i++)
            acc[i] = vfma(vload(t->v + x + i * VW), vzero(), acc[i]);
    for (; x < n; x += VW) acc[0] = vfma(vload(t->v + x), vzero(), acc[0]);
    for (int i = 1; i < FINITE_CHAINS; i++) acc[0] = vadd(acc[0], acc[i]);
    float lane[VW];
    vstore(lane, acc[0]);
    for (int i = 0; i < VW; i++)
        if (lane[i] != 0.0f) return 0;
    return 1;
}

/* P·V of a tile where some row does not see some key (mask terms in
 * t->lo/hi) and some V element is not finite: each row multiplies only
 * the V rows it sees. Its P is 0 elsewhere, but 0·NaN is NaN, and a V row
 * outside a row's mask must not reach it. Rows with one range share
 * register blocks. */
static void pv_rows_masked(const run_ctx *c, const tile_mem *t, int nrows)
{
    const int64_t ldo = c->dv_pad, ldp = c->lay.bq_pad, ldv = c->dv_pad;
    const int nvec = c->dv_pad / VW;
    for (int r0 = 0, mr, n0, nk; r0 < nrows; r0 += mr) {
        same_range_run(t, r0, nrows, PV_ROWS, &mr, &n0, &nk);
        for (int x0 = 0; x0 < nvec; x0 += PV_VECS) {
            int nv = nvec - x0 < PV_VECS ? nvec - x0 : PV_VECS;
            const float *vp = t->v + (int64_t)n0 * ldv + x0 * VW;
            float *o = t->o + r0 * ldo + x0 * VW;
            const float *al = t->alpha + r0, *pt = t->s + (int64_t)n0 * ldp + r0;
            switch (mr * 8 + nv) {
                PV_CASE(1, 1) PV_CASE(1, 2) PV_CASE(1, 3) PV_CASE(1, 4)
                PV_CASE(2, 1) PV_CASE(2, 2) PV_CASE(2, 3) PV_CASE(2, 4)
                PV_CASE(3, 1) PV_CASE(3, 2) PV_CASE(3, 3) PV_CASE(3, 4)
                PV_CASE(4, 1) PV_CASE(4, 2) PV_CASE(4, 3) PV_CASE(4, 4)
                PV_CASE(5, 1) PV_CASE(5, 2) PV_CASE(5, 3) PV_CASE(5, 4)
                PV_CASE(6, 1) PV_CASE(6, 2) PV_CASE(6, 3) PV_CASE(6, 4)
            default: break;
            }
        }
    }
}

#if VW >= 8
/* All key groups of a narrow tile: kr[0 .. nk_pad) → St[nk_pad][RP],
 * prefetching the matching rows pf[] (the tile's V, read by P·V next; NULL
 * with pf_bytes 0 when there are none) as it goes. */
INLINE void s_narrow_all(const int RP, const int DT, const int DQK, const float *q,
                         int64_t ldq, const char *const *kr, int dqk, float *st, int nk_pad,
                         const char *const *pf, int64_t pf_bytes)
{
    for (int n0 = 0; n0 < nk_pad; n0 += VW / RP)
        s_narrow_block(RP, DT, DQK, q, ldq, kr + n0, dqk, st + n0 * RP, pf ? pf + n0 : NULL,
                       pf_bytes);
}

/* RP beyond VW/2 never occurs (narrow tiles hold at most VW/2 rows); the
 * clamp keeps every ISA's switch the same. */
#define SN_RP(rp) ((rp) < VW / 2 ? (rp) : VW / 2)
#define SN_CASE(rp, dt, dq)                                                               \
    case ((rp) * 4 + (dt)) * 512 + (dq):                                                  \
        s_narrow_all(SN_RP(rp), dt, dq, t->q, c->dqk_pad, kr, c->dqk, t->s, nk_pad, pf,   \
                     pf_bytes);                                                           \
        break;
/* Head dims whose d loop is unrolled whole (the common ones); others run
 * the same code with a counted loop. */
#define SN_CASES(rp, dt) SN_CASE(rp, dt, 0) SN_CASE(rp, dt, 64) SN_CASE(rp, dt, 128) SN_CASE(rp, dt, 256)

/* pf[0 .. nk_pad) (or NULL): K rows of a later tile, prefetched on the way. */
static void s_narrow_rows(const run_ctx *c, const tile_mem *t, int rp, const char *const *kr,
                          const char *const *pf, int nk_pad)
{
    const int64_t pf_bytes = pf ? c->dqk * c->esize : 0;
    const int dq = c->dqk == 64 || c->dqk == 128 || c->dqk == 256 ? c->dqk : 0;
    switch ((rp * 4 + (int)c->dt) * 512 + dq) {
        SN_CASES(1, XATTN_F32) SN_CASES(1, XATTN_F16) SN_CASES(1, XATTN_BF16)
        SN_CASES(2, XATTN_F32) SN_CASES(2, XATTN_F16) SN_CASES(2, XATTN_BF16)
        SN_CASES(4, XATTN_F32) SN_CASES(4, XATTN_F16) SN_CASES(4, XATTN_BF16)
        SN_CASES(8, XATTN_F32) SN_CASES(8, XATTN_F16) SN_CASES(8, XATTN_BF16)
    default: break;
    }
}

/* Rows of one narrow P·V block: at most 4, so the block fits any ISA. */
#define PN_MAX_ROWS 4
#define PN_CASE(mr, nv, dt)                                                               \
    case ((mr) * 8 + (nv)) * 4 + (dt):                                                    \
        pv_direct(mr, (nv) < PV_VECS ? (nv) : PV_VECS, dt, o, ldo, al, pt, ldp, vr, x0,   \
                  masks, nk, pf, r0 == 0 ? pf_n : 0, xv, kbytes);                         \
        break;
#define PN_CASES(mr, nv) PN_CASE(mr, nv, XATTN_F32) PN_CASE(mr, nv, XATTN_F16) PN_CASE(mr, nv, XATTN_BF16)
/* The same blocks over one run's range; nothing prefetched (masked tiles
 * are the few at a window's edges). */
#define PN_MASKED_CASE(mr, nv, dt)                                                        \
    case ((mr) * 8 + (nv)) * 4 + (dt):                                                    \
        pv_direct(mr, (nv) < PV_VECS ? (nv) : PV_VECS, dt, o, ldo, al, pt, ldp, vrr, x0,  \
                  masks, nk_run, NULL, 0, xv, kbytes);                                    \
        break;
#define PN_MASKED_CASES(mr, nv)                                                           \
    PN_MASKED_CASE(mr, nv, XATTN_F32) PN_MASKED_CASE(mr, nv, XATTN_F16)                   \
    PN_MASKED_CASE(mr, nv, XATTN_BF16)

/* pf[0 .. pf_n): V rows of a later tile, prefetched during the first pass.
 * masked: some row does not see some key of the tile (rows of different
 * tokens); each row then multiplies only the V rows it sees, as in
 * pv_rows_masked, in runs of 1, 2 or 4 rows of one range. */
static void pv_narrow_rows(const run_ctx *c, const tile_mem *t, int rp, const char *const *vr,
                           int nk, const char *const *pf, int pf_n, int masked)
{
    const int64_t kbytes = c->dv * c->esize; /* bytes of a prefetched row */
    const int64_t ldo = c->dv_pad, ldp = rp;
    const int nvec = c->dv_pad / VW;
    const int mr = rp < PN_MAX_ROWS ? rp : PN_MAX_ROWS;
    for (int xv = 0; xv < nvec; xv += PV_VECS) {
        const int nv = nvec - xv < PV_VECS ? nvec - xv : PV_VECS;
        const int64_t x0 = (int64_t)xv * VW;
        vmask masks[PV_VECS];
        for (int x = 0; x < PV_VECS; x++) masks[x] = lane_mask(c->dv - (int)x0 - x * VW);
        if (!masked) {
            for (int r0 = 0; r0 < rp; r0 += mr) {
                float *o = t->o + r0 * ldo + x0;
                const float *al = t->alpha + r0, *pt = t->s + r0;
                switch (((mr * 8) + nv) * 4 + (int)c->dt) {
                    PN_CASES(1, 1) PN_CASES(1, 2) PN_CASES(1, 3) PN_CASES(1, 4)
                    PN_CASES(2, 1) PN_CASES(2, 2) PN_CASES(2, 3) PN_CASES(2, 4)
                    PN_CASES(4, 1) PN_CASES(4, 2) PN_CASES(4, 3) PN_CASES(4, 4)
                default: break;
                }
            }
            continue;
        }
        for (int r0 = 0, run, n0, nk_run; r0 < rp; r0 += run) {
            same_range_run(t, r0, rp, mr, &run, &n0, &nk_run);
            run = run >= 4 ? 4 : run >= 2 ? 2 : 1; /* the blocks there are */
            float *o = t->o + r0 * ldo + x0;
            const float *al = t->alpha + r0, *pt = t->s + (int64_t)n0 * ldp + r0;
            const char *const *vrr = vr + n0;
            switch (((run * 8) + nv) * 4 + (int)c->dt) {
                PN_MASKED_CASES(1, 1) PN_MASKED_CASES(1, 2) PN_MASKED_CASES(1, 3)
                PN_MASKED_CASES(1, 4) PN_MASKED_CASES(2, 1) PN_MASKED_CASES(2, 2)
                PN_MASKED_CASES(2, 3) PN_MASKED_CASES(2, 4) PN_MASKED_CASES(4, 1)
                PN_MASKED_CASES(4, 2) PN_MASKED_CASES(4, 3) PN_MASKED_CASES(4, 4)
            default: break;
            }
        }
    }
    /* Rows longer than the passes have vectors. */
    for (int64_t line = (int64_t)nvec * CACHE_LINE; line < kbytes; line += CACHE_LINE)
        for (int n = 0; n < pf_n; n++) __builtin_prefetch(pf[n] + line, 0, PREFETCH_LOCALITY);
}
#endif

/* ---- softmax over one key tile --------------------------------------------------- */

/* Wide: rows in lanes, keys down St. Applies soft cap, ALiBi and the mask in
 * place, updates (m, ℓ), writes α and leaves P = exp(s − m) in St. */
static void softmax_wide(const run_ctx *c, const tile_mem *t, int nmv, int nk, int need_mask)
{
    const int64_t lds = c->lay.bq_pad;
    const int transform = need_mask || c->softcap > 0 || c->slopes;
    const vf cap = vset1(c->softcap), inv_cap = vset1(c->softcap > 0 ? 1.0f / c->softcap : 0);
    for (int mv = 0; mv < nmv; mv++) {
        const int r = mv * VW;
        float *col = t->s + r;
        vf mx = vset1(-INFINITY);
        if (transform) {
            const vf lo = vload(t->lo + r), hi = vload(t->hi + r);
            const vf diag = vload(t->diag + r), slope = vload(t->slope + r);
            for (int n = 0; n < nk; n++) {
                vf s = vload(col + n * lds);
                if (c->softcap > 0) s = vmul(cap, vtanh(vmul(s, inv_cap)));
                if (c->slopes) s = vfnma(slope, vabs(vsub(diag, vset1((float)n))), s);
                if (need_mask) s = vkeep(s, vset1((float)n), lo, hi);
                vstore(col + n * lds, s);
                mx = vmax(mx, s);
            }
        } else {
            for (int n = 0; n < nk; n++) mx = vmax(mx, vload(col + n * lds));
        }
        const vf m_old = vload(t->m + r);
        const vf m_new = vmax(m_old, mx);
        /* A row that has seen no key keeps m = −inf; subtracting 0 instead
         * keeps its p at exp(−inf) = 0 rather than NaN. */
        const vf m_use = vsel_lt(m_new, vset1(-FLT_MAX), vzero(), m_new);
        const vf alpha = vexp(vsub(m_old, m_use));
        vf sum = vzero();
        for (int n = 0; n < nk; n++) {
            vf p = vexp(vsub(vload(col + n * lds), m_use));
            vstore(col + n * lds, p);
            sum = vadd(sum, p);
        }
        vstore(t->m + r, m_new);
        vstore(t->l + r, vfma(vload(t->l + r), alpha, sum));
        vstore(t->alpha + r, alpha);
    }
}

#if VW >= 8
/* Narrow: St[n][rp], each vector VW/rp keys × rp rows. Same steps as the
 * wide softmax; only the per-row reductions cross lanes, once per tile. */
static void softmax_narrow(const run_ctx *c, const tile_mem *t, int rp, int nk_pad)
{
    const int ks = VW / rp;
    float lane[VW];
    vf lo, hi, diag, slope, key;
    for (int x = 0; x < VW; x++) lane[x] = t->lo[x % rp];
    lo = vload(lane);
    for (int x = 0; x < VW; x++) lane[x] = t->hi[x % rp];
    hi = vload(lane);
    for (int x = 0; x < VW; x++) lane[x] = t->diag[x % rp];
    diag = vload(lane);
    for (int x = 0; x < VW; x++) lane[x] = t->slope[x % rp];
    slope = vload(lane);
    for (int x = 0; x < VW; x++) lane[x] = (float)(x / rp);
    key = vload(lane);

    const vf cap = vset1(c->softcap), inv_cap = vset1(c->softcap > 0 ? 1.0f / c->softcap : 0);
    vf mx = vset1(-INFINITY);
    for (int n0 = 0; n0 < nk_pad; n0 += ks) {
        vf sc = vload(t->s + n0 * rp);
        vf n = vadd(vset1((float)n0), key);
        if (c->softcap > 0) sc = vmul(cap, vtanh(vmul(sc, inv_cap)));
        if (c->slopes) sc = vfnma(slope, vabs(vsub(diag, n)), sc);
        /* Always masked: also hides padding rows and keys past the tile. */
        sc = vkeep(sc, n, lo, hi);
        vstore(t->s + n0 * rp, sc);
        mx = vmax(mx, sc);
    }
    vstore(lane, mx);
    for (int r = 0; r < rp; r++) {
        float m_new = t->m[r];
        for (int k = 0; k < ks; k++)
            if (lane[k * rp + r] > m_new) m_new = lane[k * rp + r];
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;
        t->alpha[r] = expf(t->m[r] - m_use);
        t->m[r] = m_new;
    }
    for (int x = 0; x < VW; x++) lane[x] = t->m[x % rp] == -INFINITY ? 0.0f : t->m[x % rp];
    const vf m_use = vload(lane);
    vf sum = vzero();
    for (int n0 = 0; n0 < nk_pad; n0 += ks) {
        vf pr = vexp(vsub(vload(t->s + n0 * rp), m_use));
        vstore(t->s + n0 * rp, pr);
        sum = vadd(sum, pr);
    }
    vstore(lane, sum);
    for (int r = 0; r < rp; r++) {
        float add = 0.0f;
        for (int k = 0; k < ks; k++) add += lane[k * rp + r];
        t->l[r] = t->l[r] * t->alpha[r] + add;
    }
}
#endif

/* ---- one work item ------------------------------------------------------------- */

/* Wide tiles: convert keys [k0, k0 + nk) into scratch, K and V row-major
 * f32. Padding keys up to the register block are zero so their (ignored)
 * scores stay finite. */
static void pack_kv(const run_ctx *c, const tile_mem *t, kv_cursor *cur, int nk, int nk_pad,
                    kv_cursor *ahead, int64_t *ahead_left)
{
    const int dqk = c->dqk, dqk_pad = c->dqk_pad, dv = c->dv, dv_pad = c->dv_pad;
    for (int n = 0; n < nk; n++) {
        const char *kr, *vr;
        /* The next tile's rows, to arrive while this one is computed. */
        if (*ahead_left > 0) {
            cursor_rows(ahead, &kr, &vr);
            prefetch_row(kr, dqk * c->esize);
            prefetch_row(vr, dv * c->esize);
            cursor_next(ahead);
            --*ahead_left;
        }
        cursor_rows(cur, &kr, &vr);
        cvt_row(t->k + (int64_t)n * dqk_pad, kr, c->dt, dqk, dqk_pad, 1.0f);
        cvt_row(t->v + (int64_t)n * dv_pad, vr, c->dt, dv, dv_pad, 1.0f);
        cursor_next(cur);
    }
    for (int n = nk; n < nk_pad; n++)
        memset(t->k + (int64_t)n * dqk_pad, 0, (size_t)dqk_pad * sizeof(float));
}

#if VW >= 8
/* Narrow tiles: the addresses of a tile's K and V rows, into buffer
 * `which` (0 or 1: this tile and the next) of the K region of scratch,
 * which the narrow kernel does not otherwise use. Padding keys repeat the
 * last row so every address is readable; their scores are masked. */
static void row_addresses(const run_ctx *c, const tile_mem *t, int which, kv_cursor *cur,
                          int nk, int nk_pad, const char ***kr, const char ***vr)
{
    const char **k = (const char **)(void *)t->k + (int64_t)which * 2 * c->lay.bk_pad;
    const char **v = k + c->lay.bk_pad;
    if (cur->pages) {
        for (int n = 0; n < nk; n++) {
            cursor_rows(cur, &k[n], &v[n]);
            cursor_next(cur);
        }
    } else {
        for (int n = 0; n < nk; n++) {
            k[n] = cur->k + n * cur->k_st;
            v[n] = cur->v + n * cur->v_st;
        }
        cur->k += nk * cur->k_st;
        cur->v += nk * cur->v_st;
    }
    for (int n = nk; n < nk_pad; n++) {
        k[n] = k[nk - 1];
        v[n] = v[nk - 1];
    }
    *kr = k;
    *vr = v;
}
#endif

/* Write row r's result: final O and LSE, or this split's partials. */
static void finish_row(const run_ctx *c, const tile_mem *t, const seq_info *sq, int r, int split)
{
    const xattn_attn_launch *l = c->l;
    const int64_t i = t->tok[r], h = t->head[r];
    const int64_t grow = sq->q_row0 + i;
    const float m = t->m[r], lsum = t->l[r];
    const float *acc = t->o + (int64_t)r * c->dv_pad;

    /* No visible key, or only keys of score −inf: every p was exp(−inf) = 0
     * and ℓ stayed 0. A NaN or +inf score left ℓ NaN instead (p = NaN), so
     * such a row falls through to the arithmetic below, which keeps it NaN. */
    const int empty = m == -INFINITY && lsum == 0.0f;
    if (c->part_o) {
        const int64_t prow = ((int64_t)split * c->part_rows + grow) * c->hq + h;
        if (empty) {
            c->part_lse[prow] = -INFINITY; /* the merge skips this split's O */
            return;
        }
        c->part_lse[prow] = m + logf(lsum);
        float *po = c->part_o + prow * c->dv_pad;
        const vf inv = vset1(1.0f / lsum);
        for (int d = 0; d < c->dv_pad; d += VW) vstore(po + d, vmul(vload(acc + d), inv));
        return;
    }

    char *orow = c->o + (sq->o_elem0 + i * l->o.st + h * l->o.sh) * c->esize;
    if (empty) {
        /* O = 0, LSE = −inf, written as such: the accumulator may hold 0·NaN
         * from the V row of a key of score −inf. */
        for (int d = 0; d < c->dv; d += VW) store_cvt(orow, c->dt, d, c->dv - d, vzero());
        if (c->lse) c->lse[h * l->lse_sh + grow * l->lse_st] = -INFINITY;
        return;
    }
    /* The sink joins the denominator only; rebase on the larger of m and σ
     * so neither exponential overflows. */
    float top = m, denom = lsum;
    if (c->sinks) {
        float sink = c->sinks[h];
        if (sink > top) top = sink;
        denom = lsum * expf(m - top) + expf(sink - top);
    }
    const vf f = vset1(expf(m - top) / denom);
    const float lse = top + logf(denom);
    for (int d = 0; d < c->dv; d += VW) store_cvt(orow, c->dt, d, c->dv - d, vmul(vload(acc + d), f));
    if (c->lse) c->lse[h * l->lse_sh + grow * l->lse_st] = lse;
}

/* One work item in progress: its rows, its key range and where its K and V
 * cursor stands; its tiles live in its scratch slice. */
typedef struct work_item {
    int64_t b, hkv;
    int split;
    seq_info sq;
    int nrows, nmv, rp, rows_pad, key_quantum;
    int64_t kb, ke;      /* keys [kb, ke) */
    kv_cursor cur;       /* next key to read */
    kv_cursor ahead;     /* wide: next key to prefetch */
    int64_t ahead_left;  /* wide: keys left for the prefetch cursor */
    tile_mem t;
} work_item;

/* Set item w up in scratch: rows, scaled Q, statistics. Returns 0 when the
 * item has no rows (a ragged sequence shorter than the plan's). */
static int item_begin(const run_ctx *c, int64_t w, char *scratch, work_item *it)
{
    const xattn_attn_plan_params *pp = c->pp;
    it->split = (int)(w % pp->kv_splits);
    w /= pp->kv_splits;
    const int64_t tile = w % pp->q_tiles;
    w /= pp->q_tiles;
    const int64_t g = w % pp->head_groups;
    it->b = w / pp->head_groups;

    seq_info *sq = &it->sq;
    seq_get(c, it->b, sq);
    const int64_t rows_total = sq->sq * c->pack;
    const int64_t r0 = tile * c->block_q;
    if (r0 >= rows_total) return 0;
    const int nrows = (int)(rows_total - r0 < c->block_q ? rows_total - r0 : c->block_q);
    it->nrows = nrows;
    it->nmv = (nrows + VW - 1) / VW;
    /* Rows the kernel computes: narrow pads to a power of two, wide to whole
     * vectors; padding rows have Q = 0 and see no key. */
    int rp = 1;
    while (rp < nrows) rp *= 2;
    it->rp = rp;
    it->rows_pad = c->narrow ? rp : it->nmv * VW;
    const int64_t ldq = c->narrow ? c->dqk_pad : c->lay.bq_pad;
    it->hkv = g * c->pack / c->group;

    tile_mem *t = &it->t;
    tile_mem_get(c, scratch, t);
    const xattn_attn_launch *l = c->l;

    /* Rows: token, head, Q (scaled; transposed for the wide kernel). */
    int64_t kb = INT64_MAX, ke = 0;
    for (int r = 0; r < it->rows_pad; r++) {
        t->m[r] = -INFINITY;
        t->l[r] = 0.0f;
        t->slope[r] = 0.0f;
        if (r >= nrows) {
            if (c->narrow)
                memset(t->q + r * ldq, 0, (size_t)c->dqk_pad * sizeof(float));
            else
                for (int d = 0; d < c->dqk; d++) t->q[d * ldq + r] = 0.0f;
            continue;
        }
        const int64_t flat = r0 + r;
        const int64_t i = flat / c->pack, h = g * c->pack + flat % c->pack;
        t->tok[r] = (int32_t)i;
        t->head[r] = (int32_t)h;
        if (c->slopes) t->slope[r] = c->slopes[h];
        const char *qr = ref_ptr(l->q.ref) + (sq->q_elem0 + i * l->q.st + h * l->q.sh) * c->esize;
        if (c->narrow) {
            cvt_row(t->q + r * ldq, qr, c->dt, c->dqk, c->dqk_pad, c->scale);
        } else {
            cvt_row(t->row, qr, c->dt, c->dqk, c->dqk_pad, c->scale);
            for (int d = 0; d < c->dqk; d++) t->q[d * ldq + r] = t->row[d];
        }
        int64_t lo, hi;
        row_range(c, sq, i, &lo, &hi);
        if (lo <= hi) {
            if (lo < kb) kb = lo;
            if (hi + 1 > ke) ke = hi + 1;
        }
    }
    memset(t->o, 0, (size_t)it->rows_pad * (size_t)c->dv_pad * sizeof(float));
    if (pp->kv_splits > 1) {
        int64_t s0 = (int64_t)it->split * pp->kv_split_len, s1 = s0 + pp->kv_split_len;
        if (kb < s0) kb = s0;
        if (ke > s1) ke = s1;
    }
    it->kb = kb;
    it->ke = ke;

    it->key_quantum = c->narrow ? VW / rp : S_KEYS;
    memset(&it->cur, 0, sizeof it->cur);
    memset(&it->ahead, 0, sizeof it->ahead);
    it->ahead_left = 0;
    if (kb < ke) {
        cursor_init(c, &it->cur, it->b, sq, it->hkv, kb);
        if (!c->narrow && ke - kb > c->block_k) {
            cursor_init(c, &it->ahead, it->b, sq, it->hkv, kb + c->block_k);
            it->ahead_left = ke - kb - c->block_k;
        }
    }
    return 1;
}

/* Keys [k0, k0 + block_k) ∩ [kb, ke) of an item: S, softmax, P·V. */
static void item_tile(const run_ctx *c, work_item *it, int64_t k0)
{
    tile_mem *t = &it->t;
    const seq_info *sq = &it->sq;
    const int nrows = it->nrows, rows_pad = it->rows_pad, q = it->key_quantum;
    const int nk = (int)(it->ke - k0 < c->block_k ? it->ke - k0 : c->block_k);
    const int nk_pad = (nk + q - 1) / q * q;
    if (!c->narrow) pack_kv(c, t, &it->cur, nk, nk_pad, &it->ahead, &it->ahead_left);

    /* Mask terms relative to the tile; exact in f32 since |values| ≤ nk
     * (positions further out are clamped, which changes no comparison).
     * The ALiBi distance is not clamped: exact for sequences below 2^24
     * keys, rounded like any other f32 beyond. */
    int need_mask = 0;
    for (int r = 0; r < rows_pad; r++) {
        if (r >= nrows) {
            t->lo[r] = 1.0f; /* padding rows see nothing */
            t->hi[r] = 0.0f;
            t->diag[r] = 0.0f;
            continue;
        }
        int64_t lo, hi;
        row_range(c, sq, t->tok[r], &lo, &hi);
        lo -= k0;
        hi -= k0;
        if (lo > 0 || hi < nk - 1) need_mask = 1;
        t->lo[r] = (float)(lo < 0 ? 0 : lo > nk ? nk : lo);
        t->hi[r] = (float)(hi > nk - 1 ? nk - 1 : hi < -1 ? -1 : hi);
        t->diag[r] = (float)(t->tok[r] + sq->sk - sq->sq - k0);
    }

    if (c->narrow) {
#if VW >= 8
        /* This tile's rows (buffer 0), and the rows of the tile `stages`
         * tiles ahead (buffer 1), prefetched while this one is computed:
         * their K during S, their V during P·V. */
        const char **krows, **vrows, **kpf = NULL, **vpf = NULL;
        row_addresses(c, t, 0, &it->cur, nk, nk_pad, &krows, &vrows);
        const int64_t k1 = k0 + (int64_t)c->prefetch_tiles * c->block_k;
        int nk_pf = 0;
        if (k1 < it->ke) {
            kv_cursor pf;
            cursor_init(c, &pf, it->b, sq, it->hkv, k1);
            nk_pf = (int)(it->ke - k1 < c->block_k ? it->ke - k1 : c->block_k);
            row_addresses(c, t, 1, &pf, nk_pf, nk_pad, &kpf, &vpf); /* nk_pf ≤ nk */
        }
        s_narrow_rows(c, t, it->rp, krows, kpf, nk_pad);
        softmax_narrow(c, t, it->rp, nk_pad);
        pv_narrow_rows(c, t, it->rp, vrows, nk, vpf, nk_pf, need_mask);
#endif
    } else {
        s_rows(c, t, it->nmv, nk_pad);
        softmax_wide(c, t, it->nmv, nk, need_mask);
        if (need_mask && !tile_v_finite(c, t, nk)) pv_rows_masked(c, t, nrows);
        else pv_rows(c, t, nrows, nk);
    }
}

static void item_end(const run_ctx *c, const work_item *it)
{
    for (int r = 0; r < it->nrows; r++) finish_row(c, &it->t, &it->sq, r, it->split);
}

/* ---- the work of one run ---------------------------------------------------- */

/* With ragged Q the plan's work list is sized for the seqlen_q bound, but a
 * run must cost what its real lengths cost (a bound of 10^8 tokens over 10
 * real rows would otherwise walk 10^8 empty items). cu_seqlens_q is host
 * memory here, so the tiles are renumbered from it, without a table: the
 * tiles of sequence b are numbered from first_tile(b) = ⌊cu_q[b]·pack /
 * block_q⌋ + b on. Since ⌊(x + n)/q⌋ ≥ ⌊x/q⌋ + ⌊n/q⌋, sequence b's
 * ⌈len_b·pack/block_q⌉ tiles end before first_tile(b + 1), and all fit
 * below first_tile(B) = ⌊total_q·pack/block_q⌋ + B. A number that falls in
 * the gap after a sequence's last tile is an empty item. */
static int64_t first_tile(const run_ctx *c, int64_t b)
{
    return (int64_t)c->cu_q[b] * c->pack / c->block_q + b;
}

/* Sequence and tile of tile number v (ragged Q); 0 when v names no tile. */
static int ragged_tile(const run_ctx *c, int64_t v, int64_t *b, int64_t *t)
{
    int64_t lo = 0, hi = c->prob->desc.batch - 1;
    while (lo < hi) { /* the last sequence whose first tile is ≤ v */
        const int64_t mid = lo + (hi - lo + 1) / 2;
        if (first_tile(c, mid) <= v) lo = mid;
        else hi = mid - 1;
    }
    const int64_t rows = ((int64_t)c->cu_q[lo + 1] - c->cu_q[lo]) * c->pack;
    *b = lo;
    *t = v - first_tile(c, lo);
    return *t * c->block_q < rows;
}

/* Work items of a run: the plan's, or with ragged Q head groups × tile
 * numbers × splits. */
static int64_t run_work_count(const run_ctx *c)
{
    if (!c->tile_space) return c->pp->num_work;
    return (int64_t)c->pp->head_groups * c->tile_space * c->pp->kv_splits;
}

/* The plan's work index (plan.h) of run item r; 0 when r is empty. Ragged
 * runs take r as ((g·tile_space + v)·splits + s), one head group's tiles
 * together as in the plan's order. */
static int run_work_index(const run_ctx *c, int64_t r, int64_t *w)
{
    if (!c->tile_space) {
        *w = r;
        return 1;
    }
    const xattn_attn_plan_params *pp = c->pp;
    const int64_t s = r % pp->kv_splits, v = r / pp->kv_splits % c->tile_space;
    const int64_t g = r / pp->kv_splits / c->tile_space;
    int64_t b, t;
    if (!ragged_tile(c, v, &b, &t)) return 0;
    *w = ((b * pp->head_groups + g) * pp->q_tiles + t) * pp->kv_splits + s;
    return 1;
}

/* Lockstep batches (sequence or tile number, chunk of `chunks` head groups,
 * split) of a run. */
static int64_t lockstep_batch_count(const run_ctx *c, int64_t chunks)
{
    const xattn_attn_plan_params *pp = c->pp;
    if (!c->tile_space) return pp->num_work / pp->head_groups * chunks;
    return c->tile_space * chunks * pp->kv_splits;
}

/* Batch x: the plan's work index of its first item, and how many head
 * groups it runs; 0 when it is empty. Splits innermost, so that the
 * threads start on different key ranges. */
static int lockstep_batch(const run_ctx *c, int64_t x, int64_t chunks, int64_t *w0, int *n)
{
    const xattn_attn_plan_params *pp = c->pp;
    const int64_t splits = pp->kv_splits, tiles = pp->q_tiles, hg = pp->head_groups;
    const int64_t s = x % splits;
    int64_t t, ch, b;
    if (!c->tile_space) {
        t = x / splits % tiles;
        ch = x / splits / tiles % chunks;
        b = x / splits / tiles / chunks;
    } else {
        ch = x / splits / c->tile_space;
        if (!ragged_tile(c, x / splits % c->tile_space, &b, &t)) return 0;
    }
    const int64_t g0 = ch * c->lay.items;
    *n = (int)(hg - g0 < c->lay.items ? hg - g0 : c->lay.items);
    *w0 = ((b * hg + g0) * tiles + t) * splits + s;
    return 1;
}

/* Run item r of the run (run_work_index). */
static void run_item(const run_ctx *c, int64_t r, char *scratch)
{
    work_item it;
    int64_t w;
    if (!run_work_index(c, r, &w) || !item_begin(c, w, scratch, &it)) return;
    for (int64_t k0 = it.kb; k0 < it.ke; k0 += c->block_k) item_tile(c, &it, k0);
    item_end(c, &it);
}

/* Lockstep (plan_cpu.h): items w0, w0 + stride, … (n of them: consecutive
 * head groups of one sequence, query tile and split, which share their key
 * range), each in its own scratch slice, one key tile of each in turn. */
static void run_lockstep(const run_ctx *c, int64_t w0, int64_t stride, int n, char *scratch)
{
    work_item items[XATTN_CPU_LOCKSTEP_MAX];
    int live = 0;
    for (int i = 0; i < n; i++)
        live += item_begin(c, w0 + i * stride, scratch + (size_t)i * c->lay.item_bytes,
                           &items[live]);
    if (!live) return;
    for (int64_t k0 = items[0].kb; k0 < items[0].ke; k0 += c->block_k)
        for (int i = 0; i < live; i++) item_tile(c, &items[i], k0);
    for (int i = 0; i < live; i++) item_end(c, &items[i]);
}

/* Combine the splits of global query row grow, head h (split-KV). */
static void merge_row(const run_ctx *c, int64_t grow, int64_t h)
{
    const xattn_attn_desc *d = &c->prob->desc;
    const xattn_attn_launch *l = c->l;
    const int splits = c->pp->kv_splits;
    /* The largest partial LSE, NaN if any is (a split whose row went NaN). */
    float top = -INFINITY;
    for (int s = 0; s < splits; s++) {
        float x = c->part_lse[((int64_t)s * c->part_rows + grow) * c->hq + h];
        if (isnan(x) || x > top) top = x;
    }
    int64_t o_elem = d->q_layout == XATTN_Q_RAGGED
                         ? grow * l->o.st
                         : (grow / d->seqlen_q) * l->o.sb + (grow % d->seqlen_q) * l->o.st;
    char *orow = c->o + (o_elem + h * l->o.sh) * c->esize;
    float lse = -INFINITY;
    if (top == -INFINITY) {
        for (int x = 0; x < c->dv; x += VW) store_cvt(orow, c->dt, x, c->dv - x, vzero());
    } else {
        float sink = c->sinks ? c->sinks[h] : -INFINITY;
        if (sink > top) top = sink;
        float denom = c->sinks ? expf(sink - top) : 0.0f;
        for (int s = 0; s < splits; s++) {
            float x = c->part_lse[((int64_t)s * c->part_rows + grow) * c->hq + h];
            if (x != -INFINITY) denom += expf(x - top);
        }
        for (int x = 0; x < c->dv; x += VW) {
            vf acc = vzero();
            for (int s = 0; s < splits; s++) {
                int64_t prow = ((int64_t)s * c->part_rows + grow) * c->hq + h;
                float ls = c->part_lse[prow];
                if (ls == -INFINITY) continue;
                acc = vfma(vset1(expf(ls - top) / denom), vload(c->part_o + prow * c->dv_pad + x),
                           acc);
            }
            store_cvt(orow, c->dt, x, c->dv - x, acc);
        }
        lse = top + logf(denom);
    }
    if (c->lse) c->lse[h * l->lse_sh + grow * l->lse_st] = lse;
}

/* A launch on the pool's threads: the work items (or lockstep batches)
 * dynamically, one at a time, then the merge of the KV splits statically
 * once every item is done. */
typedef struct attn_job {
    const run_ctx *c;
    xattn_cpu_counter next; /* the next item or batch to take */
} attn_job;

static void attn_job_run(void *arg, const xattn_cpu_team *team)
{
    attn_job *job = arg;
    const run_ctx *c = job->c;
    const xattn_attn_plan_params *pp = c->pp;
    char *scratch = c->scratch + (size_t)team->tid * pp->local_mem_bytes;
    if (c->narrow && c->lay.items > 1) {
        /* Batches of lockstep items (lockstep_batch). */
        const int64_t chunks = (pp->head_groups + c->lay.items - 1) / c->lay.items;
        const int64_t batches = lockstep_batch_count(c, chunks);
        for (int64_t x; (x = xattn_cpu_counter_take(&job->next)) < batches;) {
            int64_t w0;
            int n;
            if (lockstep_batch(c, x, chunks, &w0, &n))
                run_lockstep(c, w0, (int64_t)pp->q_tiles * pp->kv_splits, n, scratch);
        }
    } else {
        const int64_t num_work = run_work_count(c);
        for (int64_t w; (w = xattn_cpu_counter_take(&job->next)) < num_work;)
            run_item(c, w, scratch);
    }
    if (c->part_o) {
        xattn_cpu_team_barrier(team); /* every split's partial is written */
        int64_t x0, x1;
        xattn_cpu_team_share(team, c->l->total_q * c->hq, &x0, &x1);
        for (int64_t x = x0; x < x1; x++) merge_row(c, x / c->hq, x % c->hq);
    }
}

void KERNEL_ENTRY(const struct xattn_plan *plan, const xattn_attn_launch *l,
                  xattn_cpu_pool *pool)
{
    const xattn_attn_problem *prob = &plan->prob;
    const xattn_attn_desc *d = &prob->desc;
    const xattn_attn_plan_params *pp = &plan->params;
    run_ctx c;
    memset(&c, 0, sizeof c);
    c.prob = prob;
    c.pp = pp;
    c.l = l;
    if (!xattn_cpu_scratch_layout(pp, &c.lay)) return; /* prepare checked it */
    c.dt = d->dtype;
    c.esize = d->dtype == XATTN_F32 ? 4 : 2;
    c.hq = d->num_q_heads;
    c.group = prob->group;
    c.pack = pp->gqa_pack;
    c.dqk = d->head_dim_qk;
    c.dv = d->head_dim_v;
    c.dqk_pad = pp->dqk_pad;
    c.dv_pad = pp->dv_pad;
    c.block_q = pp->block_q;
    c.block_k = pp->block_k;
    c.wl = prob->window_left;
    c.wr = prob->window_right;
    c.narrow = 2 * pp->block_q <= VW;
    c.prefetch_tiles = pp->stages > 1 ? pp->stages : 1;
    c.scale = prob->scale;
    c.softcap = d->softcap;
    c.o = (char *)l->o.ref.native + l->o.ref.offset;
    c.lse = l->lse.native ? (float *)((char *)l->lse.native + l->lse.offset) : NULL;
    c.cu_q = l->cu_seqlens_q.native ? (const int32_t *)ref_ptr(l->cu_seqlens_q) : NULL;
    c.cu_k = l->cu_seqlens_k.native ? (const int32_t *)ref_ptr(l->cu_seqlens_k) : NULL;
    c.block_table = l->block_table.native ? (const int32_t *)ref_ptr(l->block_table) : NULL;
    c.seqlens_k = l->seqlens_k.native ? (const int32_t *)ref_ptr(l->seqlens_k) : NULL;
    c.slopes = l->alibi_slopes.native ? (const float *)ref_ptr(l->alibi_slopes) : NULL;
    c.sinks = l->sinks.native ? (const float *)ref_ptr(l->sinks) : NULL;
    char *ws = (char *)l->workspace.native + l->workspace.offset;
    c.scratch = ws + pp->scratch_offset;
    c.part_rows = (int64_t)d->batch * d->seqlen_q;
    if (pp->kv_splits > 1) {
        c.part_o = (float *)(ws + pp->partial_offset);
        c.part_lse = c.part_o + (int64_t)pp->kv_splits * c.part_rows * c.hq * c.dv_pad;
    }

    /* Ragged Q: tile numbers of this run (first_tile; at most B more than
     * the plan's B·q_tiles, since the front end checked the lengths). */
    if (d->q_layout == XATTN_Q_RAGGED) c.tile_space = first_tile(&c, d->batch);
    attn_job job = {.c = &c};
    xattn_cpu_counter_reset(&job.next);
    xattn_cpu_pool_run(pool, pp->threads, attn_job_run, &job);
}
