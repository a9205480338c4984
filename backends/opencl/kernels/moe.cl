/* MoE route, dispatch and combine (backends/opencl/moe.c launches them),
 * with the semantics of api/xattn_moe.h and the arithmetic of the CPU
 * backend (backends/cpu/moe_ops.c), so both pick the same experts.
 *
 * Two programs come from this source:
 *  - route, built with -DLG=<logits dtype> -DROUTE=<xattn_moe_route_mode>
 *    -DRENORM=0|1 -DHAS_BIAS=0|1;
 *  - dispatch and combine, built with -DIO=<dtype> -DCPU_STYLE=0|1
 *    -DON_INPUT=0|1 (XATTN_MOE_WEIGHTS_ON_INPUT: dispatch scales each row
 *    by its weight, combine sums the rows unweighted).
 * T, E, k, H, groups, strides and offsets are arguments, so a program
 * serves every shape.
 *
 * Non-finite routing inputs (api/xattn_moe.h): a NaN score counts as −inf
 * wherever scores are compared, and a token whose logits (or the bias) hold
 * a NaN gets every weight NaN. */

/* The CPU backend is built as ISO C, which does not fuse a·b + c; fusing
 * here would change the last bit of exp and sigmoid, and with it near-tie
 * expert choices. */
#pragma OPENCL FP_CONTRACT OFF

/* Lanes of a float vector in CPU-style loops over a row (float16). */
#define VEC 16

#ifdef ROUTE

/* Route modes, as xattn_moe_route_mode numbers them. */
#define ROUTE_SOFTMAX_TOPK 0
#define ROUTE_TOPK_SOFTMAX 1
#define ROUTE_SIGMOID_GROUPED 2
#define ROUTE_TOPK_SIGMOID 3

/* SIGMOID_GROUPED keeps the group scores in private memory up to this many
 * groups (DeepSeek-V3 has 8); more groups recompute them instead. */
#define MAX_CACHED_GROUPS 64

/* Partial sums of sum_f32, as the CPU backend's. */
#define SUM_LANES 8

/* e^x exactly as the CPU backend's exp_f32: x clamped to [−87, 88],
 * Cody–Waite reduction by ln2 in two parts, degree-7 Taylor polynomial, and
 * 2^n from the bits of n in `shifted` (never a NaN converted to an
 * integer: NaN in is NaN out). */
inline float exp_f32(float x)
{
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    const float round = 0x1.8p23f; /* adding it rounds to an integer */
    const float shifted = x * 0x1.715476p0f + round;
    const float n = shifted - round;
    const float r = (x - n * 0x1.62e4p-1f) - n * 0x1.7f7d1cp-20f;
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    return p * as_float((as_uint(shifted) - as_uint(round) + 127u) << 23);
}

inline float sigmoid_f32(float x) { return 1.0f / (1.0f + exp_f32(-x)); }

inline float logit_at(__global const ELEM(LG) *l, int e) { return LOAD(LG, l, e); }

/* Scores compare with NaN as −inf. */
inline float nan_low(float v) { return isnan(v) ? -INFINITY : v; }

/* Selection score of expert e for SIGMOID_GROUPED: sigmoid + bias. */
inline float grouped_score(__global const ELEM(LG) *l, __global const float *bias, int e)
{
#if HAS_BIAS
    return nan_low(sigmoid_f32(logit_at(l, e)) + bias[e]);
#else
    (void)bias;
    return nan_low(sigmoid_f32(logit_at(l, e)));
#endif
}

/* Offer expert id with score v to the best list vals/ids (*n of k filled,
 * highest first), the CPU backend's top_offer: experts come in ascending
 * index order and only a strictly higher score moves ahead, so equal
 * scores keep the lower index first. One definition per address space:
 * top_offer on the output row, top_offer_private on the kept groups. */
#define TOP_OFFER(name, as)                                                    \
    inline void name(as float *vals, as int *ids, int *n, int k, float v, int id) \
    {                                                                          \
        v = nan_low(v);                                                        \
        int pos;                                                               \
        if (*n < k) {                                                          \
            pos = (*n)++;                                                      \
        } else {                                                               \
            if (!(v > vals[k - 1])) return;                                    \
            pos = k - 1;                                                       \
        }                                                                      \
        while (pos > 0 && v > vals[pos - 1]) {                                 \
            vals[pos] = vals[pos - 1];                                         \
            ids[pos] = ids[pos - 1];                                           \
            pos--;                                                             \
        }                                                                      \
        vals[pos] = v;                                                         \
        ids[pos] = id;                                                         \
    }
TOP_OFFER(top_offer, __global)
TOP_OFFER(top_offer_private, __private)

/* Σ v[0..n) in the CPU backend's order: SUM_LANES partial sums, then the
 * tail, then the partial sums. */
inline float sum_row(__global const float *v, int n)
{
    float part[SUM_LANES];
    for (int j = 0; j < SUM_LANES; j++) part[j] = 0.0f;
    int i = 0;
    for (; i + SUM_LANES <= n; i += SUM_LANES)
        for (int j = 0; j < SUM_LANES; j++) part[j] += v[i + j];
    float sum = 0.0f;
    for (; i < n; i++) sum += v[i];
    for (int j = 0; j < SUM_LANES; j++) sum += part[j];
    return sum;
}

/* Σ_e exp(logit_e − max), summed in sum_row's order. */
inline float softmax_denominator(__global const ELEM(LG) *l, int E, float max)
{
    float part[SUM_LANES];
    for (int j = 0; j < SUM_LANES; j++) part[j] = 0.0f;
    int i = 0;
    for (; i + SUM_LANES <= E; i += SUM_LANES)
        for (int j = 0; j < SUM_LANES; j++) part[j] += exp_f32(logit_at(l, i + j) - max);
    float sum = 0.0f;
    for (; i < E; i++) sum += exp_f32(logit_at(l, i) - max);
    for (int j = 0; j < SUM_LANES; j++) sum += part[j];
    return sum;
}

/* Score of group g: the sum of its top two b (its one b for groups of
 * one), found as the CPU backend finds them. */
inline float group_score(__global const ELEM(LG) *l, __global const float *bias, int g, int size)
{
    const int e0 = g * size;
    if (size == 1) return grouped_score(l, bias, e0);
    float first = grouped_score(l, bias, e0), second = grouped_score(l, bias, e0 + 1);
    if (second > first) {
        const float s = first;
        first = second;
        second = s;
    }
    for (int i = 2; i < size; i++) {
        const float b = grouped_score(l, bias, e0 + i);
        if (b > first) {
            second = first;
            first = b;
        } else if (b > second) {
            second = b;
        }
    }
    return nan_low(first + second); /* +inf and −inf: NaN */
}

/* SIGMOID_GROUPED selection of one token into vals/ids: the topk_group
 * groups with the best scores (ties: lower group), then the k best b among
 * their experts, offered in ascending index order. */
inline void select_grouped(__global const ELEM(LG) *l, __global const float *bias, int E, int k,
                           int G, int topk_group, __global float *vals, __global int *ids)
{
    const int size = E / G;
    int picked = 0;
    if (G <= MAX_CACHED_GROUPS) {
        float kept_score[MAX_CACHED_GROUPS];
        int kept[MAX_CACHED_GROUPS];
        int n = 0;
        for (int g = 0; g < G; g++)
            top_offer_private(kept_score, kept, &n, topk_group, group_score(l, bias, g, size), g);
        for (int i = 1; i < n; i++) { /* ascending group order */
            const int g = kept[i];
            int j = i;
            for (; j > 0 && kept[j - 1] > g; j--) kept[j] = kept[j - 1];
            kept[j] = g;
        }
        for (int i = 0; i < n; i++)
            for (int e = kept[i] * size; e < (kept[i] + 1) * size; e++)
                top_offer(vals, ids, &picked, k, grouped_score(l, bias, e), e);
        return;
    }
    /* Too many groups to cache: group g is kept when fewer than topk_group
     * groups beat it (a higher score, or an equal one and a lower index). */
    for (int g = 0; g < G; g++) {
        const float s = group_score(l, bias, g, size);
        int beaten = 0;
        for (int h = 0; h < G && beaten < topk_group; h++) {
            if (h == g) continue;
            const float o = group_score(l, bias, h, size);
            if (o > s || (o == s && h < g)) beaten++;
        }
        if (beaten >= topk_group) continue;
        for (int e = g * size; e < (g + 1) * size; e++)
            top_offer(vals, ids, &picked, k, grouped_score(l, bias, e), e);
    }
}

/* Whether the token's logits (or the bias) hold a NaN. */
inline int routing_nan(__global const ELEM(LG) *l, __global const float *bias, int E)
{
    int nan = 0;
    for (int e = 0; e < E; e++) nan |= isnan(logit_at(l, e));
#if HAS_BIAS
    for (int e = 0; e < E; e++) nan |= isnan(bias[e]);
#else
    (void)bias;
#endif
    return nan;
}

/* One work-item per token: logits row → topk_ids [k], topk_weights [k].
 * The output rows hold the best list while it is built. */
__kernel void moe_route(long T, int E, int k, int n_group, int topk_group, float scale,
                        __global const ELEM(LG) *logits, ulong logits_off, long logits_st,
                        __global const float *bias, ulong bias_off,
                        __global int *topk_ids, ulong ids_off, long ids_st,
                        __global float *topk_w, ulong w_off, long w_st)
{
    const long t = get_global_id(0);
    if (t >= T) return;
    __global const ELEM(LG) *l = AT_CONST(ELEM(LG), logits, logits_off) + t * logits_st;
    __global int *ids = AT(int, topk_ids, ids_off) + t * ids_st;
    __global float *w = AT(float, topk_w, w_off) + t * w_st;
    int n = 0;
#if ROUTE == ROUTE_SIGMOID_GROUPED
    select_grouped(l, AT_CONST(float, bias, bias_off), E, k, n_group, topk_group, w, ids);
    for (int j = 0; j < k; j++) w[j] = sigmoid_f32(logit_at(l, ids[j])); /* unbiased s */
#else
    (void)bias; (void)bias_off; (void)n_group; (void)topk_group;
    for (int e = 0; e < E; e++) top_offer(w, ids, &n, k, logit_at(l, e), e);
#  if ROUTE == ROUTE_SOFTMAX_TOPK
    /* The softmax keeps the order of the logits; the first pick is the max. */
    const float max = w[0];
    const float sum = softmax_denominator(l, E, max);
    for (int j = 0; j < k; j++) w[j] = exp_f32(logit_at(l, ids[j]) - max) / sum;
#  elif ROUTE == ROUTE_TOPK_SOFTMAX
    const float max = w[0];
    for (int j = 0; j < k; j++) w[j] = exp_f32(w[j] - max);
    const float sum = sum_row(w, k);
    for (int j = 0; j < k; j++) w[j] /= sum;
#  else /* TOPK_SIGMOID */
    for (int j = 0; j < k; j++) w[j] = sigmoid_f32(w[j]);
#  endif
#endif
    if (routing_nan(l, AT_CONST(float, bias, bias_off), E)) /* NaN in, NaN out */
        for (int j = 0; j < k; j++) w[j] = NAN;
#if RENORM
    const float total = sum_row(w, k);
    for (int j = 0; j < k; j++) w[j] /= total;
#endif
    for (int j = 0; j < k; j++) w[j] *= scale;
}

#endif /* ROUTE */

#ifdef IO

/* ---- dispatch ----
 * Deterministic without global atomics: tokens are cut into chunks of
 * `chunk` consecutive tokens, each with a row of E counters in the plan's
 * scratch ([chunks][E] i32):
 *  1. moe_count: each chunk counts its (token, slot) pairs per expert;
 *  2. moe_scan: the counts become each chunk's first row in every segment
 *     (chunks in token order, so segments hold ascending tokens), and the
 *     aligned segment starts go to expert_offsets;
 *  3. moe_scatter: each chunk walks its tokens and hands out rows, writing
 *     token_row and row_token; afterwards the last chunk's cursor of a
 *     segment is where its padding starts;
 *  4. moe_rows: every row copies its token's x (ON_INPUT: times the weight
 *     of its slot, found in token_row), or is padding (zeros, row_token
 *     −1), or lies past the last segment (row_token −1).
 * Ids outside [0, E) are treated as dropped, so no index leaves its
 * buffer. */

/* Expert of slot j of a token's ids, or −1 when dropped or out of range. */
inline int expert_of(__global const int *ids, int j, int E)
{
    const int e = ids[j];
    return e >= 0 && e < E ? e : -1;
}

#if CPU_STYLE

/* One work-item per chunk, walking its tokens in order (tile unused). */
__kernel void moe_count(long T, int k, int E, long chunk,
                        __global const int *topk_ids, ulong ids_off, long ids_st,
                        __global int *scratch, ulong scratch_off,
                        long tile_len, __local int *tile)
{
    (void)tile_len; (void)tile;
    const long c = get_global_id(0), t0 = c * chunk;
    if (t0 >= T) return;
    const long t1 = min(T, t0 + chunk);
    __global int *count = AT(int, scratch, scratch_off) + c * E;
    for (int e = 0; e < E; e++) count[e] = 0;
    __global const int *ids = AT_CONST(int, topk_ids, ids_off);
    for (long t = t0; t < t1; t++)
        for (int j = 0; j < k; j++) {
            const int e = expert_of(ids + t * ids_st, j, E);
            if (e >= 0) count[e]++;
        }
}

__kernel void moe_scatter(long T, int k, int E, long chunk, long R,
                          __global const int *topk_ids, ulong ids_off, long ids_st,
                          __global int *scratch, ulong scratch_off,
                          __global int *row_token, ulong rt_off, long rt_st,
                          __global int *token_row, ulong tr_off, long tr_st,
                          long tile_len, __local int *tile)
{
    (void)tile_len; (void)tile;
    const long c = get_global_id(0), t0 = c * chunk;
    if (t0 >= T) return;
    const long t1 = min(T, t0 + chunk);
    __global int *cursor = AT(int, scratch, scratch_off) + c * E;
    __global const int *ids = AT_CONST(int, topk_ids, ids_off);
    __global int *rt = AT(int, row_token, rt_off);
    __global int *tr = AT(int, token_row, tr_off);
    for (long t = t0; t < t1; t++)
        for (int j = 0; j < k; j++) {
            const int e = expert_of(ids + t * ids_st, j, E);
            if (e < 0) {
                tr[t * tr_st + j] = -1;
                continue;
            }
            const long r = cursor[e]++;
            tr[t * tr_st + j] = (int)r;
            if (r < R) rt[r * rt_st] = (int)t;
        }
}

#else /* GPU style */

/* A group per chunk. The chunk's (token, slot) experts pass through local
 * memory tile_len at a time; work-item i owns experts i, i + group, ... and
 * counts (or hands out rows to) its experts' pairs in pair order, so there
 * are no atomics and the result is deterministic. Every owner reads the
 * same tile entry at once: a broadcast. */

/* Stage pairs [p0, p0 + m) of the chunk starting at token t0 into tile;
 * token_row of a dropped pair is written here when tr is not NULL. */
inline void stage_pairs(__global const int *ids, long ids_st, int k, int E, long t0, long p0,
                        long m, __local int *tile, __global int *tr, long tr_st)
{
    for (long i = get_local_id(0); i < m; i += get_local_size(0)) {
        const long p = p0 + i, t = t0 + p / k;
        const int j = (int)(p % k);
        const int e = expert_of(ids + t * ids_st, j, E);
        tile[i] = e;
        if (tr && e < 0) tr[t * tr_st + j] = -1;
    }
}

__kernel void moe_count(long T, int k, int E, long chunk,
                        __global const int *topk_ids, ulong ids_off, long ids_st,
                        __global int *scratch, ulong scratch_off,
                        long tile_len, __local int *tile)
{
    const long c = get_group_id(0), t0 = c * chunk;
    if (t0 >= T) return; /* whole group: no barrier is skipped by part of it */
    const long pairs = (min(T, t0 + chunk) - t0) * k;
    const int lid = get_local_id(0), n = get_local_size(0);
    __global int *count = AT(int, scratch, scratch_off) + c * E;
    __global const int *ids = AT_CONST(int, topk_ids, ids_off);
    for (int e = lid; e < E; e += n) count[e] = 0;
    for (long p0 = 0; p0 < pairs; p0 += tile_len) {
        const long m = min(tile_len, pairs - p0);
        barrier(CLK_LOCAL_MEM_FENCE);
        stage_pairs(ids, ids_st, k, E, t0, p0, m, tile, 0, 0);
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int e = lid; e < E; e += n) {
            int found = 0;
            for (long i = 0; i < m; i++) found += tile[i] == e;
            count[e] += found;
        }
    }
}

__kernel void moe_scatter(long T, int k, int E, long chunk, long R,
                          __global const int *topk_ids, ulong ids_off, long ids_st,
                          __global int *scratch, ulong scratch_off,
                          __global int *row_token, ulong rt_off, long rt_st,
                          __global int *token_row, ulong tr_off, long tr_st,
                          long tile_len, __local int *tile)
{
    const long c = get_group_id(0), t0 = c * chunk;
    if (t0 >= T) return; /* whole group */
    const long pairs = (min(T, t0 + chunk) - t0) * k;
    const int lid = get_local_id(0), n = get_local_size(0);
    __global int *cursor = AT(int, scratch, scratch_off) + c * E;
    __global const int *ids = AT_CONST(int, topk_ids, ids_off);
    __global int *rt = AT(int, row_token, rt_off);
    __global int *tr = AT(int, token_row, tr_off);
    for (long p0 = 0; p0 < pairs; p0 += tile_len) {
        const long m = min(tile_len, pairs - p0);
        barrier(CLK_LOCAL_MEM_FENCE);
        stage_pairs(ids, ids_st, k, E, t0, p0, m, tile, tr, tr_st);
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int e = lid; e < E; e += n) {
            long r = cursor[e];
            for (long i = 0; i < m; i++) {
                if (tile[i] != e) continue;
                const long p = p0 + i, t = t0 + p / k;
                tr[t * tr_st + p % k] = (int)r;
                if (r < R) rt[r * rt_st] = (int)t;
                r++;
            }
            cursor[e] = (int)r;
        }
    }
}

#endif /* CPU_STYLE */

/* One group: work-item i owns a contiguous range of experts, sums their
 * aligned segment sizes, the sums are scanned across the group, and each
 * work-item then writes its experts' offsets and turns their counts into
 * each chunk's first row. part holds a long per work-item. */
__kernel void moe_scan(int E, long chunks, long align,
                       __global int *scratch, ulong scratch_off,
                       __global int *expert_offsets, ulong offsets_off, long offsets_st,
                       __local long *part)
{
    const int lid = get_local_id(0), n = get_local_size(0);
    const int e0 = (int)((long)E * lid / n), e1 = (int)((long)E * (lid + 1) / n);
    __global int *count = AT(int, scratch, scratch_off);
    __global int *offsets = AT(int, expert_offsets, offsets_off);
    long size = 0;
    for (int e = e0; e < e1; e++) {
        long total = 0;
        for (long c = 0; c < chunks; c++) total += count[c * E + e];
        size += (total + align - 1) / align * align;
    }
    part[lid] = size;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lid == 0) {
        long run = 0;
        for (int i = 0; i < n; i++) {
            const long s = part[i];
            part[i] = run;
            run += s;
        }
        offsets[(long)E * offsets_st] = (int)run;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    long row = part[lid];
    for (int e = e0; e < e1; e++) {
        const long start = row;
        offsets[e * offsets_st] = (int)start;
        for (long c = 0; c < chunks; c++) {
            const int found = count[c * E + e];
            count[c * E + e] = (int)row;
            row += found;
        }
        row = start + (row - start + align - 1) / align * align;
    }
}

/* Rows in dimension 1; dimension 0 splits a row across lanes (GPU style:
 * the group's threads, coalesced) or is 1 (CPU style: whole rows with
 * vector copies). */
__kernel void moe_rows(long R, int E, long H, long T, long chunks, int k,
                       __global const int *expert_offsets, ulong offsets_off, long offsets_st,
                       __global const int *scratch, ulong scratch_off,
                       __global int *row_token, ulong rt_off, long rt_st,
                       __global const RAW(IO) *x, ulong x_off, long x_st,
                       __global RAW(IO) *x_perm, ulong xp_off, long xp_st,
                       __global const int *token_row, ulong tr_off, long tr_st,
                       __global const float *weights, ulong w_off, long w_st)
{
    const long r = get_global_id(1), lane = get_global_id(0), lanes = get_global_size(0);
    if (r >= R) return;
    __global const int *offsets = AT_CONST(int, expert_offsets, offsets_off);
    __global int *rt = AT(int, row_token, rt_off) + r * rt_st;
    const long used = offsets[(long)E * offsets_st];
    if (r >= used) { /* past the last segment: x_perm is not written */
        if (lane == 0) *rt = -1;
        return;
    }
    /* The segment of r: the last e with offsets[e] ≤ r. */
    int lo = 0, hi = E - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (offsets[(long)mid * offsets_st] <= r) lo = mid;
        else hi = mid - 1;
    }
    const long pad_from = AT_CONST(int, scratch, scratch_off)[(chunks - 1) * E + lo];
    long t = -1;
    if (r < pad_from) t = *rt;
    else if (lane == 0) *rt = -1; /* padding */
    __global RAW(IO) *dst = AT(RAW(IO), x_perm, xp_off) + r * xp_st;
    if (t < 0 || t >= T) { /* padding: zeros */
        for (long d = lane; d < H; d += lanes) dst[d] = 0;
        return;
    }
    __global const RAW(IO) *src = AT_CONST(RAW(IO), x, x_off) + t * x_st;
#if ON_INPUT
    /* The row's slot: the j with token_row[t, j] = r (exactly one). */
    __global const int *tr = AT_CONST(int, token_row, tr_off) + t * tr_st;
    int slot = 0;
    for (int j = 0; j < k; j++)
        if (tr[j] == r) slot = j;
    const float w = AT_CONST(float, weights, w_off)[t * w_st + slot];
    __global const ELEM(IO) *xs = (__global const ELEM(IO) *)src;
    __global ELEM(IO) *xd = (__global ELEM(IO) *)dst;
#  if CPU_STYLE
    long d = 0;
    for (; d + VEC <= H; d += VEC) STORE16(IO, xd, d, w * LOAD16(IO, xs, d));
    for (; d < H; d++) STORE(IO, xd, d, w * LOAD(IO, xs, d));
#  else
    for (long d = lane; d < H; d += lanes) STORE(IO, xd, d, w * LOAD(IO, xs, d));
#  endif
#else
    (void)k; (void)token_row; (void)tr_off; (void)tr_st; (void)weights; (void)w_off; (void)w_st;
#  if CPU_STYLE
    long d = 0;
    for (; d + VEC <= H; d += VEC) vstore16(vload16(0, src + d), 0, dst + d);
    for (; d < H; d++) dst[d] = src[d];
#  else
    for (long d = lane; d < H; d += lanes) dst[d] = src[d];
#  endif
#endif
}

/* ---- combine ----
 * out[t] (+)= Σ_j w[t, j] · y[token_row[t, j]], in the CPU backend's order:
 * the kept rows AXPY_MAX at a time, acc += ((w0·y0 + w1·y1) + w2·y2) + ....
 * Rows outside [0, R) count as dropped. ON_INPUT: every w is 1 (and the
 * weights buffer is absent), as the CPU backend sums them. */
#define AXPY_MAX 4

/* axpy_<n> (acc + Σ_{i<m} w[i] · row src[i] of y, at element d) and
 * combine_<n> (element d of a token's result) on acc_t, which holds one
 * element (n = 1) or a vector of n from d on (load is LOAD or LOAD16). */
#define DEFINE_COMBINE(n, acc_t, load)                                         \
    inline acc_t axpy_##n(acc_t acc, __global const ELEM(IO) *y, long y_st,    \
                          const long *src, const float *w, int m, long d)      \
    {                                                                          \
        acc_t s = w[0] * load(IO, y + src[0] * y_st, d);                       \
        for (int i = 1; i < m; i++) s = s + w[i] * load(IO, y + src[i] * y_st, d); \
        return acc + s;                                                        \
    }                                                                          \
    inline acc_t combine_##n(__global const ELEM(IO) *y, long y_st,            \
                             __global const float *w, __global const int *tr,  \
                             int k, long R, acc_t acc, long d)                 \
    {                                                                          \
        long src[AXPY_MAX];                                                    \
        float sw[AXPY_MAX];                                                    \
        int m = 0;                                                             \
        for (int j = 0; j < k; j++) {                                          \
            const long r = tr[j];                                              \
            if (r < 0 || r >= R) continue; /* dropped */                       \
            src[m] = r;                                                        \
            sw[m++] = ON_INPUT ? 1.0f : w[j];                                  \
            if (m == AXPY_MAX) {                                               \
                acc = axpy_##n(acc, y, y_st, src, sw, m, d);                   \
                m = 0;                                                         \
            }                                                                  \
        }                                                                      \
        return m ? axpy_##n(acc, y, y_st, src, sw, m, d) : acc;                \
    }

DEFINE_COMBINE(1, float, LOAD)
#if CPU_STYLE
DEFINE_COMBINE(16, float16, LOAD16)
#endif

/* Dimension 1: tokens. Dimension 0: CPU style, spans of `span` elements
 * (a multiple of VEC) per work-item; GPU style, the group's lanes stride
 * the row, coalesced. */
__kernel void moe_combine(long T, int k, long H, long R, int accumulate, long span,
                          __global const ELEM(IO) *y_buf, ulong y_off, long y_st,
                          __global const float *weights, ulong w_off, long w_st,
                          __global const int *token_row, ulong tr_off, long tr_st,
                          __global ELEM(IO) *out_buf, ulong out_off, long out_st)
{
    const long t = get_global_id(1), lane = get_global_id(0);
    if (t >= T) return;
    __global const ELEM(IO) *y = AT_CONST(ELEM(IO), y_buf, y_off);
#if ON_INPUT
    __global const float *w = weights; /* absent: never read */
    (void)w_off; (void)w_st;
#else
    __global const float *w = AT_CONST(float, weights, w_off) + t * w_st;
#endif
    __global const int *tr = AT_CONST(int, token_row, tr_off) + t * tr_st;
    __global ELEM(IO) *out = AT(ELEM(IO), out_buf, out_off) + t * out_st;
#if CPU_STYLE
    const long d1 = min(H, (lane + 1) * span);
    long d = lane * span;
    for (; d + VEC <= d1; d += VEC) {
        const float16 acc = accumulate ? LOAD16(IO, out, d) : (float16)0.0f;
        STORE16(IO, out, d, combine_16(y, y_st, w, tr, k, R, acc, d));
    }
    for (; d < d1; d++) {
        const float acc = accumulate ? LOAD(IO, out, d) : 0.0f;
        STORE(IO, out, d, combine_1(y, y_st, w, tr, k, R, acc, d));
    }
#else
    (void)span;
    for (long d = lane; d < H; d += get_global_size(0)) {
        const float acc = accumulate ? LOAD(IO, out, d) : 0.0f;
        STORE(IO, out, d, combine_1(y, y_st, w, tr, k, R, acc, d));
    }
#endif
}

#endif /* IO */
