/* MoE expert GEMMs for the CPU backend. This one source is compiled once per
 * ISA (XATTN_CPU_ISA_AVX512, XATTN_CPU_ISA_AVX2, or neither for portable C)
 * behind a thin vector layer; cpu_isa.c picks the build at prepare time.
 *
 * Both GEMMs have the form C[rows, N] = A[rows, K] · Wᵀ with W [N, K]
 * row-major, as the caller's weights come: x · W1ᵀ (K = H) and h · W2ᵀ
 * (K = I). The kernel keeps K in vector lanes: a register block holds MR
 * rows × NR weight rows of dot products, one vector each, and a step loads
 * MR vectors of A and NR of W for MR·NR FMAs; the sums are reduced across
 * lanes once, after the last K step. No operand is ever transposed, so
 *  - an item with fewer rows than a register block (decode: a row or two
 *    per expert) streams whole weight rows from memory once, converting
 *    f16/bf16 as it loads them;
 *  - a larger item copies, each K step, a register block's weight rows
 *    (block_k of each, as f32) to a scratch panel that stays in L1 while
 *    every row block of the item passes over it, and keeps its A rows
 *    (all of K) in L2. The copy also undoes the 4 KiB spacing of the
 *    caller's rows, which would put them all into one L1 set; the weights
 *    of the next panel are prefetched into L2 while this one is in use.
 * Between K steps the unreduced sums wait in scratch (plan_moe_cpu.h).
 *
 * Work items are (expert, block_m rows, block_n columns), columns fastest,
 * shared among the threads dynamically; experts without rows have none.
 * Activations in f16 or bf16 are converted to f32 once per row block and
 * thread. Gate/up: an item's columns are block_n gate columns c.. and the
 * matching up columns, W1 rows c.. and I + c.. (or 2c.. and 2c + 1.. when
 * interleaved), so its epilogue has both halves of every h element: it adds
 * b1 and stores h = act(g, u) as f32 rows [max_rows, I] in the plan's h
 * region of the workspace. The down GEMM's epilogue adds b2 and rounds y to
 * its dtype once. An item converts its columns' biases to f32 once, into
 * scratch. Padding rows of x are zero, so their y rows come out zero, or
 * the expert's output for a zero row with biases (api/xattn_moe.h). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cpu_kernels.h"
#include "half.h"
#include "plan_moe_cpu.h"

#if defined(__GNUC__)
#  define PREFETCH_L2(p) __builtin_prefetch((p), 0, 2)
#else
#  define PREFETCH_L2(p) ((void)(p))
#endif

#if defined(__clang__)
#  define INLINE static inline __attribute__((always_inline, unused))
#  define UNROLL _Pragma("clang loop unroll(full)")
#elif defined(__GNUC__)
#  define INLINE static inline __attribute__((always_inline, unused))
#  define UNROLL _Pragma("GCC unroll 32")
#else
#  define INLINE static inline
#  define UNROLL
#endif

/* ---- vector layer ------------------------------------------------------------- */

#if defined(XATTN_CPU_ISA_AVX512)
#  include <immintrin.h>
#  define KERNEL_ENTRY xattn_cpu_moe_experts_avx512
#  define VW 16
/* 24 accumulators + 6 weight vectors + 1 activation vector of 32 zmm. */
enum { MR = 4, NR = 6 };
typedef __m512 vf;
INLINE vf vzero(void) { return _mm512_setzero_ps(); }
INLINE vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
INLINE vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
INLINE __mmask16 lane_mask(int64_t n)
{
    return n >= VW ? (__mmask16)0xffffu : (__mmask16)((1u << n) - 1u);
}
/* Elements i..i+n−1 (n ≤ VW) of a row of dtype DT as f32, zeros beyond. */
INLINE vf vload_dt(const int DT, const void *src, int64_t i, int64_t n)
{
    if (DT == XATTN_F32) {
        const float *p = (const float *)src + i;
        return n >= VW ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(lane_mask(n), p);
    }
    const uint16_t *p = (const uint16_t *)src + i;
    __m256i h = n >= VW ? _mm256_loadu_si256((const __m256i *)p)
                        : _mm256_maskz_loadu_epi16(lane_mask(n), p);
    if (DT == XATTN_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
/* Store lanes 0..n−1 (n ≤ VW) of x as dtype DT, rounding to nearest even. */
INLINE void vstore_dt(const int DT, void *dst, int64_t i, int64_t n, vf x)
{
    __mmask16 k = lane_mask(n);
    if (DT == XATTN_F32) {
        _mm512_mask_storeu_ps((float *)dst + i, k, x);
        return;
    }
    __m256i h;
    if (DT == XATTN_F16) {
        h = _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    } else {
        __m512i b = _mm512_castps_si512(x);
        __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
        __m512i r = _mm512_srli_epi32(
            _mm512_add_epi32(b, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
        /* NaN stays a (quiet) NaN instead of rounding into infinity. */
        __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
        r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(b, 16), _mm512_set1_epi32(0x40));
        h = _mm512_cvtepi32_epi16(r);
    }
    _mm256_mask_storeu_epi16((uint16_t *)dst + i, k, h);
}
/* Transposing sum: lane L of the result is the horizontal sum of
 * v[slot_of(L)]. Four rounds of pairwise shuffles and adds. */
INLINE int slot_of(int lane) { return 4 * (lane % 4) + lane / 4; }
INLINE vf vreduce(const vf *v)
{
    vf a[8], b[4], c[2];
    UNROLL for (int p = 0; p < 8; p++)
        a[p] = vadd(_mm512_shuffle_f32x4(v[2 * p], v[2 * p + 1], 0x44),
                    _mm512_shuffle_f32x4(v[2 * p], v[2 * p + 1], 0xee));
    UNROLL for (int p = 0; p < 4; p++)
        b[p] = vadd(_mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], 0x88),
                    _mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], 0xdd));
    UNROLL for (int p = 0; p < 2; p++)
        c[p] = vadd(_mm512_shuffle_ps(b[2 * p], b[2 * p + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                    _mm512_shuffle_ps(b[2 * p], b[2 * p + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    return vadd(_mm512_shuffle_ps(c[0], c[1], _MM_SHUFFLE(2, 0, 2, 0)),
                _mm512_shuffle_ps(c[0], c[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

#elif defined(XATTN_CPU_ISA_AVX2)
#  include <immintrin.h>
#  define KERNEL_ENTRY xattn_cpu_moe_experts_avx2
#  define VW 8
/* 12 accumulators + 3 weight vectors + 1 activation vector of 16 ymm. */
enum { MR = 4, NR = 3 };
typedef __m256 vf;
INLINE vf vzero(void) { return _mm256_setzero_ps(); }
INLINE vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
INLINE vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
INLINE vf vload_dt(const int DT, const void *src, int64_t i, int64_t n)
{
    if (n >= VW) {
        if (DT == XATTN_F32) return _mm256_loadu_ps((const float *)src + i);
        __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)src + i));
        if (DT == XATTN_F16) return _mm256_cvtph_ps(h);
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    float t[VW] = {0};
    for (int64_t j = 0; j < n; j++) {
        if (DT == XATTN_F32) t[j] = ((const float *)src)[i + j];
        else if (DT == XATTN_F16) t[j] = xattn_f16_to_f32(((const uint16_t *)src)[i + j]);
        else t[j] = xattn_bf16_to_f32(((const uint16_t *)src)[i + j]);
    }
    return _mm256_loadu_ps(t);
}
INLINE void vstore_dt(const int DT, void *dst, int64_t i, int64_t n, vf x)
{
    if (n >= VW && DT == XATTN_F32) {
        _mm256_storeu_ps((float *)dst + i, x);
        return;
    }
    if (n >= VW && DT == XATTN_F16) {
        _mm_storeu_si128((__m128i *)((uint16_t *)dst + i),
                         _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        return;
    }
    float t[VW];
    _mm256_storeu_ps(t, x);
    for (int64_t j = 0; j < n && j < VW; j++) {
        if (DT == XATTN_F32) ((float *)dst)[i + j] = t[j];
        else if (DT == XATTN_F16) ((uint16_t *)dst)[i + j] = xattn_f32_to_f16(t[j]);
        else ((uint16_t *)dst)[i + j] = xattn_f32_to_bf16(t[j]);
    }
}
/* Lane L of the result sums v[slot_of(L)] (three rounds here). */
INLINE int slot_of(int lane) { return 2 * (lane % 4) + lane / 4; }
INLINE vf vreduce(const vf *v)
{
    vf a[4], b[2];
    UNROLL for (int p = 0; p < 4; p++)
        a[p] = vadd(_mm256_permute2f128_ps(v[2 * p], v[2 * p + 1], 0x20),
                    _mm256_permute2f128_ps(v[2 * p], v[2 * p + 1], 0x31));
    UNROLL for (int p = 0; p < 2; p++)
        b[p] = vadd(_mm256_shuffle_ps(a[2 * p], a[2 * p + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                    _mm256_shuffle_ps(a[2 * p], a[2 * p + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    return vadd(_mm256_shuffle_ps(b[0], b[1], _MM_SHUFFLE(2, 0, 2, 0)),
                _mm256_shuffle_ps(b[0], b[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

#else /* portable C */
#  define KERNEL_ENTRY xattn_cpu_moe_experts_generic
#  if defined(__GNUC__)
/* GCC and Clang vector extensions: 128-bit vectors, which every SIMD target
 * has (SSE2, NEON, ...); elsewhere the compiler lowers them to scalars. */
#    define VW 4
typedef float vf __attribute__((vector_size(VW * sizeof(float))));
#  else
#    define VW 1
typedef float vf;
#  endif
/* 8 accumulators + 4 weight vectors + 1 activation vector: 13 of the 16
 * registers of the smallest common vector files (SSE2). */
enum { MR = 2, NR = 4 };
INLINE vf vzero(void) { return (vf){0}; }
INLINE vf vadd(vf a, vf b) { return a + b; }
/* Multiply, then add: one rounding more than a fused FMA, but no libm call
 * on CPUs without one. */
INLINE vf vfma(vf a, vf b, vf c) { return a * b + c; }
INLINE vf vload_dt(const int DT, const void *src, int64_t i, int64_t n)
{
    float t[VW] = {0};
    if (DT == XATTN_F32 && n >= VW) {
        memcpy(t, (const float *)src + i, sizeof t);
    } else {
        for (int64_t l = 0; l < n && l < VW; l++) {
            if (DT == XATTN_F32) t[l] = ((const float *)src)[i + l];
            else if (DT == XATTN_F16) t[l] = xattn_f16_to_f32(((const uint16_t *)src)[i + l]);
            else t[l] = xattn_bf16_to_f32(((const uint16_t *)src)[i + l]);
        }
    }
    vf r;
    memcpy(&r, t, sizeof r);
    return r;
}
INLINE void vstore_dt(const int DT, void *dst, int64_t i, int64_t n, vf x)
{
    float t[VW];
    memcpy(t, &x, sizeof t);
    if (DT == XATTN_F32 && n >= VW) {
        memcpy((float *)dst + i, t, sizeof t);
        return;
    }
    for (int64_t l = 0; l < n && l < VW; l++) {
        if (DT == XATTN_F32) ((float *)dst)[i + l] = t[l];
        else if (DT == XATTN_F16) ((uint16_t *)dst)[i + l] = xattn_f32_to_f16(t[l]);
        else ((uint16_t *)dst)[i + l] = xattn_f32_to_bf16(t[l]);
    }
}
INLINE int slot_of(int lane) { return lane; }
INLINE vf vreduce(const vf *v)
{
    float t[VW][VW], r[VW];
    memcpy(t, v, sizeof t);
    for (int l = 0; l < VW; l++) {
        r[l] = 0.0f;
        for (int s = 0; s < VW; s++) r[l] += t[l][s];
    }
    vf x;
    memcpy(&x, r, sizeof x);
    return x;
}
#endif

_Static_assert(NR <= XATTN_CPU_MOE_TILE_COLS && VW <= XATTN_CPU_MOE_MAX_LANES,
               "register block larger than the scratch layout allows for");
_Static_assert(XATTN_CPU_MOE_ROW_QUANTUM % MR == 0, "block_m must hold whole register blocks");

/* Accumulators of a register block, rounded up to whole vreduce groups. */
#define BLOCK_SUMS ((MR * NR + VW - 1) / VW * VW)

/* ---- register block ------------------------------------------------------------ */

/* Weights to bring into L2 while a register block runs: element k of each
 * of the n rows (esize bytes each, len of them) as the block reaches k, so
 * the fetches spread over its run and run as n parallel streams. */
typedef struct prefetch {
    const char *rows[NR];
    int n;
    int64_t esize, len;
} prefetch;

/* acc[i·NR + j] += Σ a[i][k] · w[j][k] over k in [0, kc). The rows of a are
 * f32, those of w of dtype WDT; ROWS and WDT are compile-time constants
 * once inlined. pf, if not NULL, is fetched along the way. */
INLINE void block_dot(const int ROWS, const int WDT, const float *const *a,
                      const void *const *w, int64_t kc, const prefetch *pf, vf *acc)
{
    int64_t k = 0;
    for (; k + VW <= kc; k += VW) {
        if (pf && k < pf->len)
            for (int j = 0; j < pf->n; j++) PREFETCH_L2(pf->rows[j] + k * pf->esize);
        vf wv[NR];
        UNROLL for (int j = 0; j < NR; j++) wv[j] = vload_dt(WDT, w[j], k, VW);
        UNROLL for (int i = 0; i < ROWS; i++) {
            const vf av = vload_dt(XATTN_F32, a[i], k, VW);
            UNROLL for (int j = 0; j < NR; j++) acc[i * NR + j] = vfma(av, wv[j], acc[i * NR + j]);
        }
    }
    if (k < kc) {
        vf wv[NR];
        UNROLL for (int j = 0; j < NR; j++) wv[j] = vload_dt(WDT, w[j], k, kc - k);
        UNROLL for (int i = 0; i < ROWS; i++) {
            const vf av = vload_dt(XATTN_F32, a[i], k, kc - k);
            UNROLL for (int j = 0; j < NR; j++) acc[i * NR + j] = vfma(av, wv[j], acc[i * NR + j]);
        }
    }
}

/* Where a register block's sums go after a K step. */
typedef struct block_out {
    int first, last;  /* first / last K step of the reduction */
    float *partial;   /* unreduced sums of the block's rows, (i·NR + j)·VW */
    float *c;         /* reduced sums: c[i·ldc + j] for the nc valid columns */
    int64_t ldc;
    int nc;
} block_out;

/* One register block of ROWS rows over a K step: start from zero or the
 * saved partial sums, accumulate, then save them again or, after the last
 * step, reduce them across lanes into the item's outputs. */
INLINE void block_run(const int ROWS, const int WDT, const float *const *a,
                      const void *const *w, int64_t kc, const prefetch *pf, const block_out *o)
{
    vf acc[MR * NR];
    UNROLL for (int q = 0; q < ROWS * NR; q++)
        acc[q] = o->first ? vzero() : vload_dt(XATTN_F32, o->partial, (int64_t)q * VW, VW);
    block_dot(ROWS, WDT, a, w, kc, pf, acc);
    if (!o->last) {
        UNROLL for (int q = 0; q < ROWS * NR; q++)
            vstore_dt(XATTN_F32, o->partial, (int64_t)q * VW, VW, acc[q]);
        return;
    }
    float sums[BLOCK_SUMS];
    UNROLL for (int g = 0; g < (ROWS * NR + VW - 1) / VW; g++) {
        vf grp[VW];
        UNROLL for (int l = 0; l < VW; l++)
            grp[slot_of(l)] = g * VW + l < ROWS * NR ? acc[g * VW + l] : vzero();
        vstore_dt(XATTN_F32, sums, (int64_t)g * VW, VW, vreduce(grp));
    }
    for (int i = 0; i < ROWS; i++)
        for (int j = 0; j < o->nc; j++) o->c[i * o->ldc + j] = sums[i * NR + j];
}

/* The shapes the items use: full blocks read a panel (f32) and may fetch
 * the next one; single rows also stream f16 and bf16 weights directly. */
static void block_full(const float *const *a, const void *const *w, int64_t kc,
                       const prefetch *pf, const block_out *o)
{
    if (pf->n) block_run(MR, XATTN_F32, a, w, kc, pf, o);
    else block_run(MR, XATTN_F32, a, w, kc, NULL, o);
}

static void block_row(xattn_dtype wdt, const float *const *a, const void *const *w, int64_t kc,
                      const block_out *o)
{
    switch (wdt) {
    case XATTN_F16: block_run(1, XATTN_F16, a, w, kc, NULL, o); return;
    case XATTN_BF16: block_run(1, XATTN_BF16, a, w, kc, NULL, o); return;
    default: block_run(1, XATTN_F32, a, w, kc, NULL, o); return;
    }
}

/* len elements of n rows of dtype DT as f32 rows dst + j·ld, the rows side
 * by side: n streams at once keep more of the memory latency covered than
 * one row after another. */
INLINE void convert_rows_dt(const int DT, const char *const *rows, int n, int64_t len,
                            float *dst, int64_t ld)
{
    int64_t k = 0;
    for (; k + VW <= len; k += VW)
        for (int j = 0; j < n; j++)
            vstore_dt(XATTN_F32, dst + j * ld, k, VW, vload_dt(DT, rows[j], k, VW));
    if (k < len)
        for (int j = 0; j < n; j++)
            vstore_dt(XATTN_F32, dst + j * ld, k, len - k, vload_dt(DT, rows[j], k, len - k));
}

static void convert_rows(xattn_dtype dt, const char *const *rows, int n, int64_t len, float *dst,
                         int64_t ld)
{
    switch (dt) {
    case XATTN_F16: convert_rows_dt(XATTN_F16, rows, n, len, dst, ld); return;
    case XATTN_BF16: convert_rows_dt(XATTN_BF16, rows, n, len, dst, ld); return;
    default: convert_rows_dt(XATTN_F32, rows, n, len, dst, ld); return;
    }
}

/* ---- one launch ------------------------------------------------------------------ */

/* One of the two GEMMs: C = A · W_eᵀ per expert segment. */
typedef struct gemm {
    const xattn_moe_gemm_tiles *tiles;
    int64_t k;              /* reduction length */
    int64_t n;              /* output columns (gate/up: gate columns I) */
    int gate_up;            /* column c reads weight rows c·gate_step and
                               up_base + c·gate_step */
    int64_t gate_step, up_base; /* 1 and n, or 2 and 1 (W1 interleaved) */
    const char *a;          /* row r at a + r·a_st elements of a_dt */
    int64_t a_st;
    xattn_dtype a_dt;
    const char *w;          /* expert e's row j at w + (e·w_se + j·w_sn) elements */
    int64_t w_se, w_sn;
    const char *bias;       /* NULL, or expert e's entry j at bias + (e·bias_se + j)
                               elements of the run's bias_dt (b1 rows as W1's) */
    int64_t bias_se;
} gemm;

typedef struct run_ctx {
    xattn_cpu_moe_scratch lay;
    const int32_t *offsets;
    int64_t offsets_st, experts;
    xattn_dtype dt, wdt;    /* activations and y; weights */
    int64_t wsize;          /* bytes per weight element */
    xattn_moe_activation act;
    float alpha, limit;     /* SWIGLU_CLAMPED */
    xattn_dtype bias_dt;
    float *h;               /* [rows, I] f32 */
    char *y;
    int64_t y_st;
    gemm up, down;
} run_ctx;

static int64_t ceil_div(int64_t x, int64_t m) { return (x + m - 1) / m; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t dtype_size(xattn_dtype dt) { return dt == XATTN_F32 ? 4 : 2; }

static int64_t segment_start(const run_ctx *c, int64_t e)
{
    return c->offsets[e * c->offsets_st];
}

/* Gate · sigmoid(s): silu(g) = g·σ(g), and the tanh GELU
 * 0.5·g·(1 + tanh(z)) = g·σ(2z) with z = √(2/π)·(g + 0.044715·g³), which has
 * no cancellation where tanh(z) nears −1. */
static float activate(xattn_moe_activation act, float g)
{
    const float two_sqrt_2_over_pi = 1.5957691216057308f;
    float s = act == XATTN_MOE_GEGLU ? two_sqrt_2_over_pi * (g + 0.044715f * g * g * g) : g;
    return g / (1.0f + expf(-s));
}

/* h = act(g, u). SWIGLU_CLAMPED clamps with comparisons rather than
 * fminf/fmaxf, which would turn a NaN into the limit. */
static inline float act_h(const run_ctx *c, float g, float u)
{
    if (c->act != XATTN_MOE_SWIGLU_CLAMPED) return activate(c->act, g) * u;
    const float lim = c->limit;
    g = g > lim ? lim : g;
    u = u > lim ? lim : u < -lim ? -lim : u;
    return g / (1.0f + expf(-c->alpha * g)) * (u + 1.0f);
}

/* Bias entry i of a row of dtype dt as f32. */
static float bias_at(xattn_dtype dt, const char *row, int64_t i)
{
    if (dt == XATTN_F32) {
        float v;
        memcpy(&v, row + 4 * i, sizeof v);
        return v;
    }
    uint16_t h;
    memcpy(&h, row + 2 * i, sizeof h);
    return dt == XATTN_F16 ? xattn_f16_to_f32(h) : xattn_bf16_to_f32(h);
}

/* One work item: rows row0.. and columns col0.. of expert e, its A rows
 * in f32 at a (row i at a + i·lda). */
typedef struct item {
    int64_t e, row0, rows, col0, cols;
    const float *a;
    int64_t lda;
} item;

/* Weight rows of the item's columns q0..q0+NR−1 (gate/up: its gate
 * columns, then its up columns); columns past the end repeat the last one,
 * whose sums are dropped. Returns the number of valid columns. */
static int weight_rows(const run_ctx *c, const gemm *g, const item *it, int64_t q0,
                       const char **w_rows)
{
    const int64_t ncol = g->gate_up ? 2 * it->cols : it->cols;
    const int nc = (int)min64(NR, ncol - q0);
    const char *w_e = g->w + it->e * g->w_se * c->wsize;
    for (int j = 0; j < NR; j++) {
        const int64_t q = q0 + (j < nc ? j : nc - 1);
        int64_t row = it->col0 + q;
        if (g->gate_up)
            row = q >= it->cols ? g->up_base + (it->col0 + q - it->cols) * g->gate_step
                                : (it->col0 + q) * g->gate_step;
        w_rows[j] = w_e + row * g->w_sn * c->wsize;
    }
    return nc;
}

/* The weights of the panel after the one of columns q0.. at K offset kb:
 * the next K step of these columns, else the first of the next ones. */
static prefetch next_panel(const run_ctx *c, const gemm *g, const item *it, int64_t q0,
                           const char *const *w_rows, int64_t kb)
{
    const int64_t K = g->k, k_step = g->tiles->block_k;
    const int64_t ncol = g->gate_up ? 2 * it->cols : it->cols;
    prefetch p = {.n = 0, .esize = c->wsize};
    if (kb + k_step < K) {
        p.n = NR;
        for (int j = 0; j < NR; j++) p.rows[j] = w_rows[j] + (kb + k_step) * c->wsize;
        p.len = min64(k_step, K - kb - k_step);
    } else if (q0 + NR < ncol) {
        p.n = NR;
        weight_rows(c, g, it, q0 + NR, p.rows);
        p.len = min64(k_step, K);
    }
    return p;
}

/* The item's bias entries as f32 into b: gate/up, its gate columns' then
 * its up columns' b1 entries (as weight_rows maps them); down, its b2
 * entries. */
static void load_bias(const run_ctx *c, const gemm *g, const item *it, float *b)
{
    const char *row = g->bias + it->e * g->bias_se * dtype_size(c->bias_dt);
    for (int64_t j = 0; j < it->cols; j++) {
        const int64_t col = it->col0 + j;
        if (!g->gate_up) {
            b[j] = bias_at(c->bias_dt, row, col);
            continue;
        }
        b[j] = bias_at(c->bias_dt, row, col * g->gate_step);
        b[it->cols + j] = bias_at(c->bias_dt, row, g->up_base + col * g->gate_step);
    }
}

/* The epilogue: h = act(gate + b1, up + b1), or y + b2 rounded to its
 * dtype. bias: the item's entries (load_bias) or NULL. */
static void store_item(const run_ctx *c, const gemm *g, const item *it, float *cbuf,
                       const float *bias)
{
    const int64_t cols = it->cols;
    for (int64_t i = 0; i < it->rows; i++) {
        if (g->gate_up) {
            const float *gate = cbuf + i * 2 * cols, *up = gate + cols;
            float *h = c->h + (it->row0 + i) * g->n + it->col0;
            if (bias)
                for (int64_t j = 0; j < cols; j++)
                    h[j] = act_h(c, gate[j] + bias[j], up[j] + bias[cols + j]);
            else
                for (int64_t j = 0; j < cols; j++) h[j] = act_h(c, gate[j], up[j]);
            continue;
        }
        float *crow = cbuf + i * cols;
        if (bias)
            for (int64_t j = 0; j < cols; j++) crow[j] += bias[j];
        char *y = c->y + (it->row0 + i) * c->y_st * dtype_size(c->dt);
        switch (c->dt) {
        case XATTN_F16:
            for (int64_t j = 0; j < cols; j += VW)
                vstore_dt(XATTN_F16, y, it->col0 + j, cols - j,
                          vload_dt(XATTN_F32, crow, j, cols - j));
            break;
        case XATTN_BF16:
            for (int64_t j = 0; j < cols; j += VW)
                vstore_dt(XATTN_BF16, y, it->col0 + j, cols - j,
                          vload_dt(XATTN_F32, crow, j, cols - j));
            break;
        default: memcpy((float *)y + it->col0, crow, (size_t)cols * sizeof(float)); break;
        }
    }
}

static void run_item(const run_ctx *c, const gemm *g, const item *it, char *slice)
{
    float *bias = g->bias ? (float *)(slice + c->lay.bias) : NULL;
    if (bias) load_bias(c, g, it, bias);
    const int64_t K = g->k, rows = it->rows, lda = it->lda;
    const int64_t ncol = g->gate_up ? 2 * it->cols : it->cols; /* weight rows of the item */
    float *cbuf = (float *)(slice + c->lay.c);
    float *partial = (float *)(slice + c->lay.partial);
    float *panel = (float *)(slice + c->lay.panel);
    const int64_t ld = c->lay.panel_ld;
    /* With at least one full register block the K steps and the panel pay
     * off; with fewer rows whole weight rows stream instead (the longest
     * runs for the hardware prefetchers). */
    const int use_panel = rows >= MR;
    const int64_t k_step = use_panel ? g->tiles->block_k : K;
    const xattn_dtype w_dt = use_panel ? XATTN_F32 : c->wdt;

    for (int64_t q0 = 0; q0 < ncol; q0 += NR) {
        const char *w_rows[NR];
        const int nc = weight_rows(c, g, it, q0, w_rows);
        for (int64_t kb = 0; kb < K; kb += k_step) {
            const int64_t kc = min64(k_step, K - kb);
            const void *w[NR];
            prefetch next = {.n = 0};
            if (use_panel) {
                const char *src[NR];
                for (int j = 0; j < nc; j++) src[j] = w_rows[j] + kb * c->wsize;
                convert_rows(c->wdt, src, nc, kc, panel, ld);
                for (int j = 0; j < NR; j++) w[j] = panel + (j < nc ? j : nc - 1) * ld;
                /* The row blocks fetch the next panel's weights while they
                 * run; its copy would otherwise wait for memory. */
                next = next_panel(c, g, it, q0, w_rows, kb);
            } else {
                for (int j = 0; j < NR; j++) w[j] = w_rows[j] + kb * c->wsize;
            }
            block_out o = {kb == 0, kb + kc == K, partial, cbuf, ncol, nc};
            int64_t i = 0;
            for (; i + MR <= rows; i += MR) { /* only with the panel */
                /* Row block b fetches rows b, b + blocks, ... of the next panel. */
                prefetch mine = next;
                mine.n = 0;
                for (int j = (int)(i / MR); j < next.n; j += (int)(rows / MR))
                    mine.rows[mine.n++] = next.rows[j];
                const float *a_rows[MR];
                for (int r = 0; r < MR; r++) a_rows[r] = it->a + (i + r) * lda + kb;
                o.partial = partial + i * NR * VW;
                o.c = cbuf + i * ncol + q0;
                block_full(a_rows, w, kc, &mine, &o);
            }
            for (; i < rows; i++) {
                const float *a_row = it->a + i * lda + kb;
                o.partial = partial + i * NR * VW;
                o.c = cbuf + i * ncol + q0;
                block_row(w_dt, &a_row, w, kc, &o);
            }
        }
    }
    store_item(c, g, it, cbuf, bias);
}

/* Every work item of a GEMM, shared among the team through next. */
static void run_gemm(const run_ctx *c, const gemm *g, xattn_cpu_counter *next, char *slice)
{
    const int64_t block_m = g->tiles->block_m, block_n = g->tiles->block_n;
    const int64_t col_blocks = ceil_div(g->n, block_n);
    int64_t items = 0;
    for (int64_t e = 0; e < c->experts; e++)
        items += ceil_div(segment_start(c, e + 1) - segment_start(c, e), block_m) * col_blocks;

    /* Items run in increasing order on each thread (the counter only
     * grows), so a thread
     * finds an item's expert by walking forward from its previous one, and
     * its next item often has the same rows: A rows not in f32 are
     * converted once for all of them. */
    int64_t e = 0, e_first = 0; /* expert e's items start at e_first */
    int64_t converted_row0 = -1;
    float *converted = (float *)(slice + c->lay.a);
    for (int64_t w; (w = xattn_cpu_counter_take(next)) < items;) {
        for (;;) {
            int64_t n = ceil_div(segment_start(c, e + 1) - segment_start(c, e), block_m) *
                        col_blocks;
            if (w < e_first + n) break;
            e_first += n;
            e++;
        }
        const int64_t rb = (w - e_first) / col_blocks, cb = (w - e_first) % col_blocks;
        item it = {.e = e, .row0 = segment_start(c, e) + rb * block_m, .col0 = cb * block_n};
        it.rows = min64(block_m, segment_start(c, e + 1) - it.row0);
        it.cols = min64(block_n, g->n - it.col0);
        if (g->a_dt == XATTN_F32) {
            it.a = (const float *)g->a + it.row0 * g->a_st;
            it.lda = g->a_st;
        } else {
            if (it.row0 != converted_row0) {
                const int64_t esize = dtype_size(g->a_dt);
                for (int64_t i = 0; i < it.rows; i++) {
                    const char *row = g->a + (it.row0 + i) * g->a_st * esize;
                    convert_rows(g->a_dt, &row, 1, g->k, converted + i * g->k, g->k);
                }
                converted_row0 = it.row0;
            }
            it.a = converted;
            it.lda = g->k;
        }
        run_item(c, g, &it, slice);
    }
}

/* The two GEMMs on the pool's threads: every gate/up item, a barrier (the
 * down GEMM reads all of h), every down item. */
typedef struct gemm_job {
    const run_ctx *c;
    char *scratch;              /* a slice of per_thread bytes per thread */
    size_t per_thread;
    xattn_cpu_counter up, down; /* the next item of each GEMM */
} gemm_job;

static void gemm_job_run(void *arg, const xattn_cpu_team *team)
{
    gemm_job *job = arg;
    char *slice = job->scratch + (size_t)team->tid * job->per_thread;
    run_gemm(job->c, &job->c->up, &job->up, slice);
    xattn_cpu_team_barrier(team);
    run_gemm(job->c, &job->c->down, &job->down, slice);
}

void KERNEL_ENTRY(const struct xattn_moe_plan *plan, const xattn_moe_launch *l,
                  xattn_cpu_pool *pool)
{
    const xattn_moe_desc *d = &plan->prob.desc;
    const xattn_moe_plan_params *pp = &plan->params;
    run_ctx c;
    memset(&c, 0, sizeof c);
    if (!xattn_cpu_moe_scratch_layout(&plan->prob, pp, &c.lay)) return; /* the planner checked it */
    c.offsets = (const int32_t *)((const char *)l->expert_offsets.native + l->expert_offsets.offset);
    c.offsets_st = l->offsets_st;
    c.experts = d->num_experts;
    c.dt = d->dtype;
    c.wdt = d->weight_dtype;
    c.wsize = dtype_size(c.wdt);
    c.act = d->activation;
    c.alpha = plan->prob.alpha;
    c.limit = plan->prob.limit;
    c.bias_dt = d->bias_dtype;
    char *ws = (char *)l->workspace.native + l->workspace.offset;
    c.h = (float *)(ws + pp->h_offset);
    c.y = (char *)l->y.native + l->y.offset;
    c.y_st = l->y_st;
    const int interleaved = (d->flags & XATTN_MOE_W1_INTERLEAVED) != 0;
    c.up = (gemm){&pp->up, d->hidden, d->inter, 1, interleaved ? 2 : 1,
                  interleaved ? 1 : d->inter,
                  (const char *)l->x_perm.native + l->x_perm.offset, l->x_perm_st, c.dt,
                  (const char *)l->w1.native + l->w1.offset, l->w1_se, l->w1_sn,
                  l->b1.native ? (const char *)l->b1.native + l->b1.offset : NULL, l->b1_se};
    c.down = (gemm){&pp->down, d->inter, d->hidden, 0, 1, 0, (const char *)c.h, d->inter,
                    XATTN_F32, (const char *)l->w2.native + l->w2.offset, l->w2_se, l->w2_sn,
                    l->b2.native ? (const char *)l->b2.native + l->b2.offset : NULL, l->b2_se};
    char *scratch = ws + pp->scratch_offset;

    gemm_job job = {.c = &c, .scratch = scratch, .per_thread = pp->scratch_per_thread};
    xattn_cpu_counter_reset(&job.up);
    xattn_cpu_counter_reset(&job.down);
    xattn_cpu_pool_run(pool, pp->threads, gemm_job_run, &job);
}
