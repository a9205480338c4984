/* MoE route, dispatch and combine for the CPU backend, with the semantics
 * of api/xattn_moe.h. All three stream memory once, so this is portable C
 * built once (not per ISA): the pool's threads (cpu_pool.h) over tokens,
 * row copies with memcpy, and inner loops over a row written without
 * branches so the compiler vectorises them.
 *
 * Each thread uses its slice of the plan's scratch region
 * (plan->params.scratch_per_thread bytes), carved as common/plan_moe.c
 * sizes it:
 *  - route: logits [E] f32 (the selection scores b for SIGMOID_GROUPED),
 *    then for SIGMOID_GROUPED group scores [n_group] f32, and the kept
 *    groups' scores [topk_group] f32 and indices [topk_group] i32, each
 *    array starting on a SCRATCH_ALIGN boundary;
 *  - dispatch: expert counts [E] i32 of the thread's tokens, turned into
 *    the row cursors of its tokens by a prefix sum over experts and threads;
 *    the first thread's slice then holds where each segment's padding
 *    starts [E] i32.
 * combine keeps its accumulators on the stack.
 *
 * With XATTN_MOE_WEIGHTS_ON_INPUT the launch hands dispatch topk_weights,
 * and dispatch scales each row as it copies it; combine then gets none and
 * adds its rows with weight 1 (multiplying by 1 is exact, so that is the
 * unweighted sum). */
#include <math.h>
#include <string.h>

#if defined(__SSE2__)
#  include <emmintrin.h>
#endif

#include "cpu_kernels.h"
#include "half.h"

enum {
    SCRATCH_ALIGN = 64,          /* as common/plan_moe.c carves the slices */
    /* Below this many bytes moved a parallel region costs more than it
     * saves. */
    PARALLEL_MIN_BYTES = 1 << 16,
    /* combine accumulates a row this many f32 at a time: 4 KiB, which stays
     * in the first-level cache while the k source rows stream through. */
    COMBINE_CHUNK = 1024,
    /* dispatch writes x_perm with streaming stores from this many bytes
     * on: past the last-level cache the rows would be evicted before the
     * expert GEMMs read them anyway, and a normal store first reads the
     * line it writes (measured on the Qwen3-30B-A3B layer, T 1886, 123 MB
     * of rows: see docs/perf.md). */
    STREAM_MIN_BYTES = 8 << 20,
};

/* Copy one row; with stream set, around the caches where the target
 * allows it (16-byte aligned, whole 16-byte blocks). Callers fence with
 * stream_fence() before other threads read the rows. */
static inline void copy_row(char *restrict dst, const char *restrict src, size_t bytes,
                            int stream)
{
#if defined(__SSE2__)
    if (stream && ((uintptr_t)dst % 16 == 0) && bytes % 16 == 0) {
        for (size_t i = 0; i < bytes; i += 16)
            _mm_stream_si128((__m128i *)(dst + i), _mm_loadu_si128((const __m128i *)(src + i)));
        return;
    }
#endif
    (void)stream;
    memcpy(dst, src, bytes);
}

static inline void stream_fence(void)
{
#if defined(__SSE2__)
    _mm_sfence();
#endif
}

static const char *cref(xattn_ref r) { return (const char *)r.native + r.offset; }
static char *mref(xattn_ref r) { return (char *)r.native + r.offset; }

static size_t scratch_array(int64_t elems)
{
    return ((size_t)elems * 4 + SCRATCH_ALIGN - 1) / SCRATCH_ALIGN * SCRATCH_ALIGN;
}

/* This thread's slice of the plan's scratch region. */
static char *scratch_slice(const struct xattn_moe_plan *plan, const xattn_moe_launch *l, int tid)
{
    return mref(l->workspace) + plan->params.scratch_offset +
           (size_t)tid * plan->params.scratch_per_thread;
}

/* Threads for work that moves `bytes`: all of the plan's, unless the work
 * is too small to be worth a parallel region. */
static int threads_for(const struct xattn_moe_plan *plan, int64_t bytes)
{
    return bytes >= PARALLEL_MIN_BYTES ? plan->params.threads : 1;
}

/* What each call's job on the pool's threads reads. */
typedef struct moe_job {
    const struct xattn_moe_plan *plan;
    const xattn_moe_launch *l;
} moe_job;

/* Share [*begin, *end) of thread tid of n in `count` items (tokens, experts,
 * rows): contiguous chunks in thread order, so tokens stay ascending across
 * threads. */
static void thread_share(int64_t count, int tid, int n, int64_t *begin, int64_t *end)
{
    *begin = count * tid / n;
    *end = count * (tid + 1) / n;
}

/* ---- conversions, branch-free so loops over a row vectorise --------------- */

static inline float bits_f32(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static inline uint32_t f32_bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

/* All ones when c holds, else 0. The conversions below select with masks
 * rather than ?: because GCC keeps a conditional that guards floating-point
 * work as a branch, and a loop with a branch does not vectorise. */
static inline uint32_t mask_if(int c) { return -(uint32_t)(c != 0); }

/* binary16 → f32, exactly as xattn_f16_to_f32 (which normalises subnormals
 * in a loop). */
static inline float f16_to_f32(uint16_t h)
{
    const uint32_t em = (uint32_t)(h & 0x7fffu) << 13; /* exponent, mantissa in f32 place */
    const uint32_t exp = em & 0x0f800000u;
    /* Rebias 15 → 127; exponent 31 (inf, NaN) goes to 255. */
    const uint32_t normal = em + (112u << 23) + (mask_if(exp == 0x0f800000u) & (112u << 23));
    /* Zero and subnormals: mantissa · 2^-24, exact in f32. */
    const uint32_t subnormal = f32_bits((float)(int32_t)(h & 0x3ffu) * 0x1p-24f);
    const uint32_t is_sub = mask_if(exp == 0);
    return bits_f32((subnormal & is_sub) | (normal & ~is_sub) | (uint32_t)(h & 0x8000u) << 16);
}

/* f32 → binary16, exactly as xattn_f32_to_f16: round to nearest even,
 * overflow to inf, NaN to a quiet NaN. */
static inline uint16_t f32_to_f16(float f)
{
    const uint32_t x = f32_bits(f);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t a = x & 0x7fffffffu;
    /* Normal results: drop 13 mantissa bits, nearest even, and rebias
     * 127 → 15; a carry out of the mantissa bumps the exponent, up to inf. */
    const uint32_t normal = (a + 0xfffu + ((a >> 13) & 1u) - (112u << 23)) >> 13;
    /* Below 2^-14, the smallest normal: adding 0.5 makes the FPU round the
     * value to a multiple of 2^-24 (nearest even), which lands in the low
     * mantissa bits as the subnormal's. */
    const uint32_t subnormal = f32_bits(bits_f32(a) + 0.5f) - f32_bits(0.5f);
    const uint32_t inf_nan = 0x7c00u | (mask_if(a > 0x7f800000u) & 0x200u);
    const uint32_t big = mask_if(a >= 0x47800000u), small = mask_if(a < 0x38800000u);
    return (uint16_t)(sign | (inf_nan & big) | (subnormal & small) | (normal & ~(big | small)));
}

static inline float bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

/* Element i of a row of dtype t as f32. Inlined with a constant t, the
 * dtype test folds away. */
static inline __attribute__((always_inline)) float elem(const char *p, int64_t i, xattn_dtype t)
{
    if (t == XATTN_F32) {
        float v;
        memcpy(&v, p + 4 * i, sizeof v);
        return v;
    }
    uint16_t h;
    memcpy(&h, p + 2 * i, sizeof h);
    return t == XATTN_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

static inline __attribute__((always_inline)) void set_elem(char *p, int64_t i, xattn_dtype t,
                                                           float v)
{
    if (t == XATTN_F32) {
        memcpy(p + 4 * i, &v, sizeof v);
        return;
    }
    const uint16_t h = t == XATTN_BF16 ? xattn_f32_to_bf16(v) : f32_to_f16(v);
    memcpy(p + 2 * i, &h, sizeof h);
}

/* dst[0..n) = src[0..n) as f32. */
static inline __attribute__((always_inline)) void load_row(float *restrict dst,
                                                           const char *restrict src,
                                                           xattn_dtype t, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dst[i] = elem(src, i, t);
}

/* dst[0..n) = src[0..n) rounded to t. */
static inline __attribute__((always_inline)) void store_row(char *restrict dst,
                                                            const float *restrict src,
                                                            xattn_dtype t, int64_t n)
{
    for (int64_t i = 0; i < n; i++) set_elem(dst, i, t, src[i]);
}

/* acc[0..n) += Σ_{j<m} w[j] · src[j][0..n) for m ≤ AXPY_MAX sources at
 * once, so acc is loaded and stored once per m source rows. */
enum { AXPY_MAX = 4 };

static inline __attribute__((always_inline)) void axpy_rows(float *restrict acc,
                                                            const char *const *src,
                                                            const float *w, int m, int64_t n,
                                                            xattn_dtype t)
{
    const char *s0 = src[0];
    const float w0 = w[0];
    switch (m) {
    case 4: {
        const char *s1 = src[1], *s2 = src[2], *s3 = src[3];
        const float w1 = w[1], w2 = w[2], w3 = w[3];
        for (int64_t i = 0; i < n; i++)
            acc[i] += w0 * elem(s0, i, t) + w1 * elem(s1, i, t) + w2 * elem(s2, i, t) +
                      w3 * elem(s3, i, t);
        break;
    }
    case 3: {
        const char *s1 = src[1], *s2 = src[2];
        const float w1 = w[1], w2 = w[2];
        for (int64_t i = 0; i < n; i++)
            acc[i] += w0 * elem(s0, i, t) + w1 * elem(s1, i, t) + w2 * elem(s2, i, t);
        break;
    }
    case 2: {
        const char *s1 = src[1];
        const float w1 = w[1];
        for (int64_t i = 0; i < n; i++) acc[i] += w0 * elem(s0, i, t) + w1 * elem(s1, i, t);
        break;
    }
    default:
        for (int64_t i = 0; i < n; i++) acc[i] += w0 * elem(s0, i, t);
        break;
    }
}

/* One token of combine for dtype t: out (+)= Σ_j w[j] · y[rows[j]] over
 * the rows that were not dropped (w NULL: weight 1), a chunk of the row at
 * a time and AXPY_MAX source rows per pass over the chunk. */
static inline __attribute__((always_inline)) void combine_token(
    char *dst, const char *y, int64_t y_st, const int32_t *rows, const float *w, int32_t k,
    int64_t H, int accumulate, xattn_dtype t)
{
    const int64_t es = t == XATTN_F32 ? 4 : 2;
    float acc[COMBINE_CHUNK];
    for (int64_t h0 = 0; h0 < H; h0 += COMBINE_CHUNK) {
        const int64_t n = H - h0 < COMBINE_CHUNK ? H - h0 : COMBINE_CHUNK;
        if (accumulate) load_row(acc, dst + h0 * es, t, n);
        else memset(acc, 0, (size_t)n * sizeof *acc);
        const char *src[AXPY_MAX];
        float sw[AXPY_MAX];
        int m = 0;
        for (int32_t j = 0; j < k; j++) {
            if (rows[j] < 0) continue; /* dropped: contributes nothing */
            src[m] = y + (rows[j] * y_st + h0) * es;
            sw[m++] = w ? w[j] : 1.0f;
            if (m == AXPY_MAX) {
                axpy_rows(acc, src, sw, m, n, t);
                m = 0;
            }
        }
        if (m) axpy_rows(acc, src, sw, m, n, t);
        store_row(dst + h0 * es, acc, t, n);
    }
}

typedef void (*combine_token_fn)(char *dst, const char *y, int64_t y_st, const int32_t *rows,
                                 const float *w, int32_t k, int64_t H, int accumulate);

static void combine_token_f32(char *dst, const char *y, int64_t y_st, const int32_t *rows,
                              const float *w, int32_t k, int64_t H, int accumulate)
{
    combine_token(dst, y, y_st, rows, w, k, H, accumulate, XATTN_F32);
}

static void combine_token_f16(char *dst, const char *y, int64_t y_st, const int32_t *rows,
                              const float *w, int32_t k, int64_t H, int accumulate)
{
    combine_token(dst, y, y_st, rows, w, k, H, accumulate, XATTN_F16);
}

static void combine_token_bf16(char *dst, const char *y, int64_t y_st, const int32_t *rows,
                               const float *w, int32_t k, int64_t H, int accumulate)
{
    combine_token(dst, y, y_st, rows, w, k, H, accumulate, XATTN_BF16);
}

/* dst = w · src for a row of n elements of dtype t, each product formed in
 * f32 and rounded to t once (dispatch with the weights on the input). With
 * stream, a chunk at a time through a buffer, so the stores can bypass the
 * caches as copy_row's do. */
static inline __attribute__((always_inline)) void scale_row(char *restrict dst,
                                                            const char *restrict src, float w,
                                                            int64_t n, int stream, xattn_dtype t)
{
    const int64_t es = t == XATTN_F32 ? 4 : 2;
    if (!stream) {
        for (int64_t i = 0; i < n; i++) set_elem(dst, i, t, w * elem(src, i, t));
        return;
    }
    _Alignas(16) char buf[COMBINE_CHUNK * sizeof(float)];
    const int64_t chunk = (int64_t)sizeof buf / es;
    for (int64_t i0 = 0; i0 < n; i0 += chunk) {
        const int64_t m = n - i0 < chunk ? n - i0 : chunk;
        const char *s = src + i0 * es;
        for (int64_t i = 0; i < m; i++) set_elem(buf, i, t, w * elem(s, i, t));
        copy_row(dst + i0 * es, buf, (size_t)(m * es), stream);
    }
}

typedef void (*scale_row_fn)(char *dst, const char *src, float w, int64_t n, int stream);

static void scale_row_f32(char *dst, const char *src, float w, int64_t n, int stream)
{
    scale_row(dst, src, w, n, stream, XATTN_F32);
}

static void scale_row_f16(char *dst, const char *src, float w, int64_t n, int stream)
{
    scale_row(dst, src, w, n, stream, XATTN_F16);
}

static void scale_row_bf16(char *dst, const char *src, float w, int64_t n, int stream)
{
    scale_row(dst, src, w, n, stream, XATTN_BF16);
}

/* dst[0..n) = src[0..n) as f32 (route's logits). */
static void row_to_f32(float *restrict dst, const char *restrict src, xattn_dtype t, int64_t n)
{
    if (t == XATTN_F32) memcpy(dst, src, (size_t)n * sizeof *dst);
    else if (t == XATTN_BF16) load_row(dst, src, XATTN_BF16, n);
    else load_row(dst, src, XATTN_F16, n);
}

/* dst[0..n) = src[0..n) as f32 for dtype t; returns whether one is NaN,
 * found in the same pass (a route's logits). */
static inline __attribute__((always_inline)) int load_row_nan(float *restrict dst,
                                                              const char *restrict src,
                                                              xattn_dtype t, int64_t n)
{
    int nan = 0;
    for (int64_t i = 0; i < n; i++) {
        const float v = elem(src, i, t);
        dst[i] = v;
        nan |= !(v == v);
    }
    return nan;
}

static int row_to_f32_nan(float *restrict dst, const char *restrict src, xattn_dtype t,
                          int64_t n)
{
    if (t == XATTN_F32) return load_row_nan(dst, src, XATTN_F32, n);
    if (t == XATTN_BF16) return load_row_nan(dst, src, XATTN_BF16, n);
    return load_row_nan(dst, src, XATTN_F16, n);
}

/* ---- route ------------------------------------------------------------------ */

/* e^x within 2 ulp, with x clamped to [−87, 88] so that 2^n stays a normal
 * f32: below −87 the result is e^−87 ≈ 2^−125.6 instead of less, which no
 * softmax term (the largest is 1) or sigmoid (1 / (1 + e^−x)) can tell.
 * Written without branches or calls so the loops over a token's experts
 * vectorise, which libm's expf does not: Cody–Waite reduction
 * x = n·ln2 + r, |r| ≤ ln2/2, then a degree-7 Taylor polynomial for e^r.
 * 2^n is built from the bits of n in `shifted` rather than by converting n
 * to an integer, so a NaN x (which makes n NaN) is no undefined behaviour:
 * it gives a NaN polynomial, and NaN in is NaN out at no extra cost. */
static inline float exp_f32(float x)
{
    const uint32_t lo = mask_if(x < -87.0f), hi = mask_if(x > 88.0f);
    x = bits_f32((f32_bits(x) & ~(lo | hi)) | (f32_bits(-87.0f) & lo) | (f32_bits(88.0f) & hi));
    /* Adding 1.5·2^23 rounds to an integer, which lands in the low mantissa
     * bits (the ulp there is 1). */
    const float round = 0x1.8p23f;
    const float shifted = x * 0x1.715476p0f + round;            /* x / ln2 */
    const float n = shifted - round;
    const float r = (x - n * 0x1.62e4p-1f) - n * 0x1.7f7d1cp-20f; /* ln2 in two parts */
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    return p * bits_f32((f32_bits(shifted) - f32_bits(round) + 127u) << 23);
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + exp_f32(-x)); }

/* Σ v[0..n), in lanes of partial sums so the loop vectorises. */
static float sum_f32(const float *v, int64_t n)
{
    enum { LANES = 8 };
    float part[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) part[j] += v[i + j];
    float sum = 0.0f;
    for (; i < n; i++) sum += v[i];
    for (int j = 0; j < LANES; j++) sum += part[j];
    return sum;
}

/* Whether any of v[0..n) is NaN. */
static int any_nan(const float *v, int64_t n)
{
    int nan = 0;
    for (int64_t i = 0; i < n; i++) nan |= !(v[i] == v[i]);
    return nan;
}

/* v[0..n) with every NaN replaced by −inf. */
static void nan_to_low(float *v, int64_t n)
{
    for (int64_t i = 0; i < n; i++) v[i] = v[i] == v[i] ? v[i] : -INFINITY;
}

/* Offer expert id with score v to the best list vals/ids (*n of k filled,
 * highest first). Experts are offered in ascending index order and only a
 * strictly higher score moves ahead, so equal scores keep the lower index
 * first. Scores are never NaN here: a NaN counts as −inf (api/xattn_moe.h)
 * and is replaced before it is offered, since compared as it is it would
 * stay wherever it landed. */
static inline void top_offer(float *vals, int32_t *ids, int32_t *n, int32_t k, float v,
                             int32_t id)
{
    int32_t pos;
    if (*n < k) {
        pos = (*n)++;
    } else {
        if (!(v > vals[k - 1])) return;
        pos = k - 1;
    }
    while (pos > 0 && v > vals[pos - 1]) {
        vals[pos] = vals[pos - 1];
        ids[pos] = ids[pos - 1];
        pos--;
    }
    vals[pos] = v;
    ids[pos] = id;
}

/* SIGMOID_GROUPED selection of one token: b = sigmoid(logit) + bias in
 * place of the logits, the topk_group groups with the best sums of their
 * top two b, then the k best b among those groups' experts. nan: the
 * logits or the bias hold a NaN (the only way b gets one). */
static void select_grouped(const xattn_moe_desc *d, const float *bias, int nan, float *b,
                           float *gscore, float *kept_score, int32_t *kept, float *vals,
                           int32_t *ids)
{
    const int32_t E = d->num_experts, G = d->n_group, size = E / G;
    if (bias)
        for (int32_t e = 0; e < E; e++) b[e] = sigmoid(b[e]) + bias[e];
    else
        for (int32_t e = 0; e < E; e++) b[e] = sigmoid(b[e]);
    /* NaN scores count as −inf, here too: the top-two search below compares
     * them as they are. */
    if (nan) nan_to_low(b, E);
    for (int32_t g = 0; g < G; g++) {
        const float *gb = b + (int64_t)g * size;
        if (size == 1) {
            gscore[g] = gb[0];
            continue;
        }
        float first = gb[0], second = gb[1];
        if (second > first) first = gb[1], second = gb[0];
        for (int32_t i = 2; i < size; i++) {
            if (gb[i] > first) second = first, first = gb[i];
            else if (gb[i] > second) second = gb[i];
        }
        gscore[g] = first + second;
        /* +inf and −inf (biases) make a NaN group score: −inf too. */
        if (!(gscore[g] == gscore[g])) gscore[g] = -INFINITY;
    }
    /* Best groups, ties to the lower group. */
    int32_t n = 0;
    for (int32_t g = 0; g < G; g++) top_offer(kept_score, kept, &n, d->topk_group, gscore[g], g);
    /* Offer the kept experts in ascending index order (ties: lower index). */
    for (int32_t i = 1; i < n; i++) {
        int32_t g = kept[i], j = i;
        for (; j > 0 && kept[j - 1] > g; j--) kept[j] = kept[j - 1];
        kept[j] = g;
    }
    int32_t picked = 0;
    for (int32_t i = 0; i < n; i++)
        for (int32_t e = kept[i] * size; e < (kept[i] + 1) * size; e++)
            top_offer(vals, ids, &picked, d->top_k, b[e], e);
}

/* One token: logits row → ids [k], weights [k]. bias_nan: the bias holds a
 * NaN, which makes every token's weights NaN. */
static void route_token(const struct xattn_moe_plan *plan, const char *logits_row,
                        const float *bias, int bias_nan, float *scratch, int32_t *ids, float *w)
{
    const xattn_moe_desc *d = &plan->prob.desc;
    const int32_t E = d->num_experts, k = d->top_k;
    float *l = scratch;
    const int logit_nan = row_to_f32_nan(l, logits_row, d->logits_dtype, E);
    const int nan = bias_nan || logit_nan;
    /* Selection by logit sees NaN as −inf; the weights become NaN below. */
    if (logit_nan && d->route != XATTN_MOE_ROUTE_SIGMOID_GROUPED) nan_to_low(l, E);

    int32_t n = 0;
    switch (d->route) {
    case XATTN_MOE_ROUTE_SOFTMAX_TOPK: {
        /* The softmax keeps the order of the logits: select by logit; the
         * first pick is the maximum. */
        for (int32_t e = 0; e < E; e++) top_offer(w, ids, &n, k, l[e], e);
        const float max = w[0];
        for (int32_t e = 0; e < E; e++) l[e] = exp_f32(l[e] - max);
        const float sum = sum_f32(l, E);
        for (int32_t j = 0; j < k; j++) w[j] = l[ids[j]] / sum;
        break;
    }
    case XATTN_MOE_ROUTE_TOPK_SOFTMAX: {
        for (int32_t e = 0; e < E; e++) top_offer(w, ids, &n, k, l[e], e);
        const float max = w[0];
        for (int32_t j = 0; j < k; j++) w[j] = exp_f32(w[j] - max);
        const float sum = sum_f32(w, k);
        for (int32_t j = 0; j < k; j++) w[j] /= sum;
        break;
    }
    case XATTN_MOE_ROUTE_TOPK_SIGMOID:
        for (int32_t e = 0; e < E; e++) top_offer(w, ids, &n, k, l[e], e);
        for (int32_t j = 0; j < k; j++) w[j] = sigmoid(w[j]);
        break;
    case XATTN_MOE_ROUTE_SIGMOID_GROUPED: {
        float *gscore = (float *)((char *)scratch + scratch_array(E));
        float *kept_score = (float *)((char *)gscore + scratch_array(d->n_group));
        int32_t *kept = (int32_t *)((char *)kept_score + scratch_array(d->topk_group));
        select_grouped(d, bias, nan, l, gscore, kept_score, kept, w, ids);
        /* The weight is the unbiased s of the logit. */
        for (int32_t j = 0; j < k; j++) {
            float logit;
            row_to_f32(&logit, logits_row + (size_t)ids[j] * xattn_dtype_size(d->logits_dtype),
                       d->logits_dtype, 1);
            w[j] = sigmoid(logit);
        }
        break;
    }
    }
    /* NaN in, NaN out, for the whole token (api/xattn_moe.h). */
    if (nan)
        for (int32_t j = 0; j < k; j++) w[j] = NAN;

    if (d->flags & XATTN_MOE_RENORMALIZE) {
        const float sum = sum_f32(w, k);
        for (int32_t j = 0; j < k; j++) w[j] /= sum;
    }
    const float scale = plan->prob.scale;
    for (int32_t j = 0; j < k; j++) w[j] *= scale;
}

static void route_job(void *arg, const xattn_cpu_team *team)
{
    const moe_job *job = arg;
    const struct xattn_moe_plan *plan = job->plan;
    const xattn_moe_launch *l = job->l;
    const xattn_moe_desc *d = &plan->prob.desc;
    const char *logits = cref(l->logits);
    const float *bias = l->bias.native ? (const float *)cref(l->bias) : NULL;
    int32_t *ids = (int32_t *)mref(l->topk_ids);
    float *weights = (float *)mref(l->topk_weights);
    const size_t le = xattn_dtype_size(d->logits_dtype);
    const int bias_nan = bias && any_nan(bias, d->num_experts);
    float *scratch = (float *)scratch_slice(plan, l, team->tid);
    int64_t t0, t1;
    xattn_cpu_team_share(team, l->tokens, &t0, &t1);
    for (int64_t t = t0; t < t1; t++)
        route_token(plan, logits + t * l->logits_st * (int64_t)le, bias, bias_nan, scratch,
                    ids + t * l->ids_st, weights + t * l->weights_st);
}

void xattn_cpu_moe_route(const struct xattn_moe_plan *plan, const xattn_moe_launch *l,
                         xattn_cpu_pool *pool)
{
    const xattn_moe_desc *d = &plan->prob.desc;
    const size_t le = xattn_dtype_size(d->logits_dtype);
    const int threads = threads_for(plan, l->tokens * d->num_experts * (int64_t)le);
    moe_job job = {plan, l};
    xattn_cpu_pool_run(pool, threads, route_job, &job);
}

/* ---- dispatch ----------------------------------------------------------------- */

/* The padding rows of each segment begin at pad_from [E] i32, which
 * dispatch keeps after the counts in the first thread's slice. */
static int32_t *dispatch_pad_from(const struct xattn_moe_plan *plan, const xattn_moe_launch *l)
{
    return (int32_t *)(scratch_slice(plan, l, 0) + scratch_array(plan->prob.desc.num_experts));
}

/* Counts of every thread's tokens → expert_offsets and pad_from, and each
 * thread's counts → the first row of its tokens in every segment (segments
 * hold their tokens ascending, and thread chunks are in token order). */
static void dispatch_layout(const struct xattn_moe_plan *plan, const xattn_moe_launch *l,
                            int nthreads)
{
    const int32_t E = plan->prob.desc.num_experts;
    const int64_t align = plan->params.align;
    int32_t *offsets = (int32_t *)mref(l->expert_offsets);
    int32_t *pad_from = dispatch_pad_from(plan, l);
    int64_t row = 0;
    for (int32_t e = 0; e < E; e++) {
        const int64_t start = row;
        offsets[e * l->offsets_st] = (int32_t)start;
        for (int tid = 0; tid < nthreads; tid++) {
            int32_t *cursor = (int32_t *)scratch_slice(plan, l, tid);
            const int32_t count = cursor[e];
            cursor[e] = (int32_t)row;
            row += count;
        }
        pad_from[e] = (int32_t)row;
        row = start + (row - start + align - 1) / align * align;
    }
    offsets[(int64_t)E * l->offsets_st] = (int32_t)row;
}

/* Tokens [t0, t1) of dispatch: each (token, slot) to the next row of its
 * segment (cursor[e]), its row copied, or with weights scaled by its
 * weight. Inlined once with weights NULL and once without, so the copy
 * loop stays as it was without the weights on the input. */
static inline __attribute__((always_inline)) void scatter(
    const xattn_moe_launch *l, int64_t t0, int64_t t1, int32_t k, const int32_t *ids,
    int32_t *cursor, const char *x, int64_t x_st, char *x_perm, int64_t xp_st,
    int32_t *row_token, int32_t *token_row, size_t row_bytes, int stream, const float *weights,
    scale_row_fn scale, int64_t H)
{
    for (int64_t t = t0; t < t1; t++) {
        const char *src = x + t * x_st;
        for (int32_t j = 0; j < k; j++) {
            const int32_t e = ids[t * l->ids_st + j];
            if (e < 0) {
                token_row[t * l->token_row_st + j] = -1;
                continue;
            }
            const int64_t r = cursor[e]++;
            token_row[t * l->token_row_st + j] = (int32_t)r;
            row_token[r * l->row_token_st] = (int32_t)t;
            if (weights)
                scale(x_perm + r * xp_st, src, weights[t * l->weights_st + j], H, stream);
            else
                copy_row(x_perm + r * xp_st, src, row_bytes, stream);
        }
    }
}

static void dispatch_job(void *arg, const xattn_cpu_team *team)
{
    const moe_job *job = arg;
    const struct xattn_moe_plan *plan = job->plan;
    const xattn_moe_launch *l = job->l;
    const xattn_moe_desc *d = &plan->prob.desc;
    const int64_t T = l->tokens, R = l->rows;
    const int32_t E = d->num_experts, k = d->top_k;
    const size_t row_bytes = (size_t)d->hidden * xattn_dtype_size(d->dtype);
    const int32_t *ids = (const int32_t *)cref(l->topk_ids);
    /* Present with XATTN_MOE_WEIGHTS_ON_INPUT: each row is scaled. */
    const float *weights = l->topk_weights.native ? (const float *)cref(l->topk_weights) : NULL;
    const scale_row_fn scale = d->dtype == XATTN_F32    ? scale_row_f32
                               : d->dtype == XATTN_BF16 ? scale_row_bf16
                                                        : scale_row_f16;
    const char *x = cref(l->x);
    const int32_t *offsets = (const int32_t *)mref(l->expert_offsets);
    const int32_t *pad_from = dispatch_pad_from(plan, l);
    char *x_perm = mref(l->x_perm);
    int32_t *row_token = (int32_t *)mref(l->row_token);
    int32_t *token_row = (int32_t *)mref(l->token_row);
    const int64_t x_st = l->x_st * (int64_t)xattn_dtype_size(d->dtype);
    const int64_t xp_st = l->x_perm_st * (int64_t)xattn_dtype_size(d->dtype);
    const int stream = T * k * (int64_t)row_bytes >= STREAM_MIN_BYTES;

    /* Two synchronisations only (a descheduled thread stalls each one):
     * after counting, and after the layout. */
    {
        const int tid = team->tid, nthreads = team->nthreads;
        int32_t *cursor = (int32_t *)scratch_slice(plan, l, tid);
        int64_t t0, t1;
        thread_share(T, tid, nthreads, &t0, &t1);

        memset(cursor, 0, (size_t)E * sizeof *cursor);
        for (int64_t t = t0; t < t1; t++)
            for (int32_t j = 0; j < k; j++) {
                const int32_t e = ids[t * l->ids_st + j];
                if (e >= 0) cursor[e]++;
            }
        xattn_cpu_team_barrier(team);
        if (tid == 0) dispatch_layout(plan, l, nthreads);
        xattn_cpu_team_barrier(team);

        /* Scatter: each (token, slot) to the next row of its segment. */
        if (weights)
            scatter(l, t0, t1, k, ids, cursor, x, x_st, x_perm, xp_st, row_token, token_row,
                    row_bytes, stream, weights, scale, d->hidden);
        else
            scatter(l, t0, t1, k, ids, cursor, x, x_st, x_perm, xp_st, row_token, token_row,
                    row_bytes, stream, NULL, NULL, 0);
        if (stream) stream_fence();
        /* Padding rows of a share of the experts, and a share of the rows
         * past the last segment: rows no other thread writes. */
        int64_t e0, e1, r0, r1;
        thread_share(E, tid, nthreads, &e0, &e1);
        for (int64_t e = e0; e < e1; e++)
            for (int64_t r = pad_from[e]; r < offsets[(e + 1) * l->offsets_st]; r++) {
                row_token[r * l->row_token_st] = -1;
                memset(x_perm + r * xp_st, 0, row_bytes);
            }
        const int64_t used = offsets[(int64_t)E * l->offsets_st];
        thread_share(R - used, tid, nthreads, &r0, &r1);
        for (int64_t r = used + r0; r < used + r1; r++) row_token[r * l->row_token_st] = -1;
    }
}

void xattn_cpu_moe_dispatch(const struct xattn_moe_plan *plan, const xattn_moe_launch *l,
                            xattn_cpu_pool *pool)
{
    const xattn_moe_desc *d = &plan->prob.desc;
    const size_t row_bytes = (size_t)d->hidden * xattn_dtype_size(d->dtype);
    const int threads = threads_for(plan, l->tokens * (d->top_k + 1) * (int64_t)row_bytes);
    moe_job job = {plan, l};
    xattn_cpu_pool_run(pool, threads, dispatch_job, &job);
}

/* ---- combine ----------------------------------------------------------------- */

static void combine_job(void *arg, const xattn_cpu_team *team)
{
    const moe_job *job = arg;
    const struct xattn_moe_plan *plan = job->plan;
    const xattn_moe_launch *l = job->l;
    const xattn_moe_desc *d = &plan->prob.desc;
    const int64_t T = l->tokens, H = d->hidden;
    const int32_t k = d->top_k;
    const int64_t es = (int64_t)xattn_dtype_size(d->dtype);
    const char *y = cref(l->y);
    /* Absent with XATTN_MOE_WEIGHTS_ON_INPUT: the rows add unweighted. */
    const float *weights = l->topk_weights.native ? (const float *)cref(l->topk_weights) : NULL;
    const int32_t *token_row = (const int32_t *)cref(l->token_row);
    char *out = mref(l->out);
    const combine_token_fn fn = d->dtype == XATTN_F32    ? combine_token_f32
                                : d->dtype == XATTN_BF16 ? combine_token_bf16
                                                         : combine_token_f16;
    int64_t t0, t1;
    xattn_cpu_team_share(team, T, &t0, &t1);
    for (int64_t t = t0; t < t1; t++)
        fn(out + t * l->out_st * es, y, l->y_st, token_row + t * l->token_row_st,
           weights ? weights + t * l->weights_st : NULL, k, H, l->accumulate);
}

void xattn_cpu_moe_combine(const struct xattn_moe_plan *plan, const xattn_moe_launch *l,
                           xattn_cpu_pool *pool)
{
    const xattn_moe_desc *d = &plan->prob.desc;
    const int64_t es = (int64_t)xattn_dtype_size(d->dtype);
    const int threads = threads_for(plan, l->tokens * (d->top_k + 1) * d->hidden * es);
    moe_job job = {plan, l};
    xattn_cpu_pool_run(pool, threads, combine_job, &job);
}
