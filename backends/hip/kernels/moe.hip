/* MoE route, dispatch and combine, with the semantics of api/xattn_moe.h
 * (the expert GEMMs are kernels/moe_gemm.hip). Two modules come from this
 * source:
 *  - -DROUTE=<xattn_moe_route_mode> -DLG=<logits dtype> -DRENORM=0|1
 *    -DHAS_BIAS=0|1: moe_route;
 *  - -DDISPATCH -DIO=<dtype> -DON_INPUT=0|1: moe_count, moe_scan,
 *    moe_scatter, moe_rows, moe_combine.
 * Shapes, strides and pointers are arguments. Index contents are clamped
 * or checked so that no index leaves its buffer. */

#ifdef ROUTE

#define ROUTE_SOFTMAX_TOPK 0
#define ROUTE_TOPK_SOFTMAX 1
#define ROUTE_SIGMOID_GROUPED 2
#define ROUTE_TOPK_SIGMOID 3
#define MASK_GROUPS 64 /* kept groups as a 64-bit mask up to this many */
#define NONE 0x7fffffff /* no candidate: after every expert in the order */

XATTN_DEV float sigmoid_f32(float x) { return 1.0f / (1.0f + expf(-x)); }
XATTN_DEV float nan_low(float v) { return xisnan(v) ? -XATTN_INF : v; }

/* The ranking order: a higher score first, equal scores by the lower index
 * (NaN scores rank as −inf, so the order is total). */
XATTN_DEV bool before(float v, int e, float ov, int oe) { return v > ov || (v == ov && e < oe); }

/* The first of the lanes' candidates (v, e) in the order, in every lane. */
XATTN_DEV void row_first(float *v, int *e)
{
    for (int m = 16; m > 0; m >>= 1) {
        const float ov = __shfl_xor(*v, m, ROW_LANES);
        const int oe = __shfl_xor(*e, m, ROW_LANES);
        if (before(ov, oe, *v, *e)) {
            *v = ov;
            *e = oe;
        }
    }
}

XATTN_DEV float grouped_score(const ELEM(LG) *l, const float *bias, int e)
{
#if HAS_BIAS
    return nan_low(sigmoid_f32(LOAD(LG, l, e)) + bias[e]);
#else
    return nan_low(sigmoid_f32(LOAD(LG, l, e)));
#endif
}

/* Score of group g: the sum of its top two b (its one b for groups of one). */
XATTN_DEV float group_score(const ELEM(LG) *l, const float *bias, int g, int size)
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
    return nan_low(first + second);
}

/* One row of 32 lanes per token, lane i holding experts (or groups) i, i + 32, ...
 * Each pick is the first candidate, in the ranking order, after the
 * previous pick: no list to keep, so any E and k fit. Lane 0 writes the
 * picks and their scores into the output rows, which then hold weights. */
extern "C" __global__ void moe_route(i64 T, int E, int k, int n_group, int topk_group,
                                     float scale, const ELEM(LG) *logits, i64 logits_st,
                                     const float *bias, int *topk_ids, i64 ids_st,
                                     float *topk_w, i64 w_st)
{
    const int lane = row_lane();
    const i64 t = (i64)blockIdx.x * (blockDim.x / ROW_LANES) + threadIdx.x / ROW_LANES;
    if (t >= T) return; /* the row leaves whole */
    const ELEM(LG) *l = logits + t * logits_st;
    int *ids = topk_ids + t * ids_st;
    float *w = topk_w + t * w_st;
#if ROUTE == ROUTE_SIGMOID_GROUPED
    /* The kept groups: those up to the topk_group-th in the order (gv, gg). */
    const int size = E / n_group;
    float gv = XATTN_INF;
    int gg = -1;
    for (int r = 0; r < topk_group; r++) {
        float bv = -XATTN_INF;
        int bg = NONE;
        for (int g = lane; g < n_group; g += ROW_LANES) {
            const float s = group_score(l, bias, g, size);
            if (before(gv, gg, s, g) && before(s, g, bv, bg)) {
                bv = s;
                bg = g;
            }
        }
        row_first(&bv, &bg);
        gv = bv;
        gg = bg;
    }
    u32 kept_lo = 0, kept_hi = 0;
    if (n_group <= MASK_GROUPS) {
        const int g1 = lane + 32;
        kept_lo = row_ballot(lane < n_group &&
                                               !before(gv, gg, group_score(l, bias, lane, size),
                                                       lane));
        kept_hi = row_ballot(g1 < n_group &&
                                               !before(gv, gg, group_score(l, bias, g1, size), g1));
    }
#endif
    float pv = XATTN_INF, first = 0.0f;
    int pe = -1;
    for (int j = 0; j < k; j++) {
        float bv = -XATTN_INF;
        int be = NONE;
        for (int e = lane; e < E; e += ROW_LANES) {
#if ROUTE == ROUTE_SIGMOID_GROUPED
            const int g = e / size;
            const bool kept = n_group <= MASK_GROUPS
                                  ? ((g < 32 ? kept_lo >> g : kept_hi >> (g - 32)) & 1u) != 0
                                  : !before(gv, gg, group_score(l, bias, g, size), g);
            if (!kept) continue;
            const float v = grouped_score(l, bias, e);
#else
            const float v = nan_low(LOAD(LG, l, e));
#endif
            if (before(pv, pe, v, e) && before(v, e, bv, be)) {
                bv = v;
                be = e;
            }
        }
        row_first(&bv, &be);
        if (lane == 0) {
            ids[j] = be;
            w[j] = bv;
        }
        if (j == 0) first = bv;
        pv = bv;
        pe = be;
    }
    row_sync(); /* the picks lane 0 wrote, for every lane */

    /* Weights: lane i computes picks i, i + 32, ... An id outside [0, E)
     * (none: the contract's bounds make it impossible) gets NaN. */
#if ROUTE == ROUTE_SOFTMAX_TOPK
    const float mx = first; /* the first pick is the maximum */
    float sum = 0.0f;
    for (int e = lane; e < E; e += ROW_LANES) sum += expf(LOAD(LG, l, e) - mx);
    sum = row_sum(sum);
    for (int j = lane; j < k; j += ROW_LANES)
        w[j] = ids[j] >= 0 && ids[j] < E ? expf(LOAD(LG, l, ids[j]) - mx) / sum : XATTN_NAN;
#elif ROUTE == ROUTE_TOPK_SOFTMAX
    float sum = 0.0f;
    for (int j = lane; j < k; j += ROW_LANES) {
        w[j] = expf(w[j] - first);
        sum += w[j];
    }
    sum = row_sum(sum);
    for (int j = lane; j < k; j += ROW_LANES) w[j] /= sum;
#elif ROUTE == ROUTE_TOPK_SIGMOID
    for (int j = lane; j < k; j += ROW_LANES) w[j] = sigmoid_f32(w[j]);
#else /* SIGMOID_GROUPED: the unbiased s */
    (void)first;
    for (int j = lane; j < k; j += ROW_LANES)
        w[j] = ids[j] >= 0 && ids[j] < E ? sigmoid_f32(LOAD(LG, l, ids[j])) : XATTN_NAN;
#endif
    /* NaN in, NaN out: a NaN logit (or bias entry) makes every weight NaN. */
    bool nan = false;
    for (int e = lane; e < E; e += ROW_LANES) {
        nan |= xisnan(LOAD(LG, l, e));
#if HAS_BIAS
        nan |= xisnan(bias[e]);
#endif
    }
    if (row_ballot(nan))
        for (int j = lane; j < k; j += ROW_LANES) w[j] = XATTN_NAN;
#if RENORM
    float total = 0.0f;
    for (int j = lane; j < k; j += ROW_LANES) total += w[j];
    total = row_sum(total);
    for (int j = lane; j < k; j += ROW_LANES) w[j] /= total;
#endif
    for (int j = lane; j < k; j += ROW_LANES) w[j] *= scale;
}

#endif /* ROUTE */

#ifdef DISPATCH

/* Dispatch without atomics, deterministic: tokens are cut into chunks,
 * each with a row of E counters in the plan's scratch:
 *  moe_count   one block per chunk counts its pairs per expert;
 *  moe_scan    one block: aligned segment starts into expert_offsets, and
 *              each chunk's counters become its first row in every segment
 *              (chunks in token order, so segments hold ascending tokens);
 *  moe_scatter one block per chunk hands out rows (token_row, row_token)
 *              in (token, slot) order; the last chunk's cursor of a segment
 *              is where its padding starts;
 *  moe_rows    one block per row: copy x (ON_INPUT: times the slot's
 *              weight), zeros for padding, row_token −1 past the end.
 * In count and scatter each thread owns experts e ≡ thread (mod threads)
 * and walks the chunk's pairs in order from shared memory, so a pair's row
 * needs no atomics and no ranking. Ids outside [0, E) count as dropped. */

#define TILE_PAIRS 2048 /* a chunk's (token, slot) pairs staged at a time */

XATTN_DEV int expert_of(const int *ids, int j, int E)
{
    const int e = ids[j];
    return e >= 0 && e < E ? e : -1;
}

/* Pairs [p0, p0 + n) of the chunk starting at token t0 into ids_s, and
 * token_row −1 for the dropped ones (scatter). */
XATTN_DEV void stage_pairs(int *ids_s, const int *topk_ids, i64 ids_st, int k, int E, i64 t0,
                           i64 p0, int n, int *token_row, i64 tr_st)
{
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const i64 t = t0 + (p0 + i) / k;
        const int j = (int)((p0 + i) % k);
        ids_s[i] = expert_of(topk_ids + t * ids_st, j, E);
        if (token_row && ids_s[i] < 0) token_row[t * tr_st + j] = -1;
    }
}

extern "C" __global__ void moe_count(i64 T, int k, int E, i64 chunk, const int *topk_ids,
                                     i64 ids_st, int *scratch)
{
    __shared__ int ids_s[TILE_PAIRS];
    const i64 c = blockIdx.x, t0 = c * chunk;
    if (t0 >= T) return;
    const i64 pairs = ((t0 + chunk < T ? t0 + chunk : T) - t0) * k;
    int *count = scratch + c * E;
    for (int e = threadIdx.x; e < E; e += blockDim.x) count[e] = 0;
    for (i64 p0 = 0; p0 < pairs; p0 += TILE_PAIRS) {
        const int n = (int)(pairs - p0 < TILE_PAIRS ? pairs - p0 : TILE_PAIRS);
        __syncthreads(); /* the previous tile is read */
        stage_pairs(ids_s, topk_ids, ids_st, k, E, t0, p0, n, (int *)0, 0);
        __syncthreads();
        for (int e = threadIdx.x; e < E; e += blockDim.x) {
            int found = 0;
            for (int i = 0; i < n; i++) found += ids_s[i] == e;
            count[e] += found;
        }
    }
}

/* Segment sizes (rounded up to align) scanned over the experts by the
 * block, a blockDim.x slice at a time with a carry. */
extern "C" __global__ void moe_scan(int E, i64 chunks, i64 align, int *scratch,
                                    int *expert_offsets, i64 offsets_st)
{
    __shared__ i64 part[1024];
    __shared__ i64 carry;
    const int tid = threadIdx.x, n = blockDim.x;
    if (blockIdx.x != 0) return;
    if (tid == 0) carry = 0;
    for (int base = 0; base < E; base += n) {
        const int e = base + tid;
        /* Each chunk's first row relative to the segment start. */
        i64 size = 0;
        if (e < E)
            for (i64 c = 0; c < chunks; c++) {
                const int found = scratch[c * E + e];
                scratch[c * E + e] = (int)size;
                size += found;
            }
        size = (size + align - 1) / align * align;
        part[tid] = size;
        __syncthreads();
        for (int d = 1; d < n; d *= 2) { /* inclusive scan */
            const i64 left = tid >= d ? part[tid - d] : 0;
            __syncthreads();
            part[tid] += left;
            __syncthreads();
        }
        const i64 start = carry + part[tid] - size;
        if (e < E) {
            expert_offsets[(i64)e * offsets_st] = (int)start;
            for (i64 c = 0; c < chunks; c++) scratch[c * E + e] += (int)start;
        }
        __syncthreads(); /* every thread has read carry */
        if (tid == n - 1) carry = start + size;
        __syncthreads();
    }
    if (tid == 0) expert_offsets[(i64)E * offsets_st] = (int)carry;
}

extern "C" __global__ void moe_scatter(i64 T, int k, int E, i64 chunk, i64 R,
                                       const int *topk_ids, i64 ids_st, int *scratch,
                                       int *row_token, i64 rt_st, int *token_row, i64 tr_st)
{
    __shared__ int ids_s[TILE_PAIRS];
    const i64 c = blockIdx.x, t0 = c * chunk;
    if (t0 >= T) return;
    const i64 pairs = ((t0 + chunk < T ? t0 + chunk : T) - t0) * k;
    int *cursor = scratch + c * E;
    for (i64 p0 = 0; p0 < pairs; p0 += TILE_PAIRS) {
        const int n = (int)(pairs - p0 < TILE_PAIRS ? pairs - p0 : TILE_PAIRS);
        __syncthreads();
        stage_pairs(ids_s, topk_ids, ids_st, k, E, t0, p0, n, token_row, tr_st);
        __syncthreads();
        for (int e = threadIdx.x; e < E; e += blockDim.x) {
            i64 r = cursor[e];
            for (int i = 0; i < n; i++) {
                if (ids_s[i] != e) continue;
                const i64 t = t0 + (p0 + i) / k;
                token_row[t * tr_st + (p0 + i) % k] = (int)r;
                if (r < R) row_token[r * rt_st] = (int)t;
                r++;
            }
            cursor[e] = (int)r;
        }
    }
}

extern "C" __global__ void moe_rows(i64 R, int E, i64 H, i64 T, i64 chunks, int k,
                                    const int *expert_offsets, i64 offsets_st,
                                    const int *scratch, int *row_token, i64 rt_st,
                                    const ELEM(IO) *x, i64 x_st, ELEM(IO) *x_perm, i64 xp_st,
                                    const int *token_row, i64 tr_st, const float *weights,
                                    i64 w_st)
{
    const i64 r = blockIdx.x;
    if (r >= R) return;
    int *rt = row_token + r * rt_st;
    const i64 used = expert_offsets[(i64)E * offsets_st];
    if (r >= used) { /* past the last segment: x_perm is not written */
        if (threadIdx.x == 0) *rt = -1;
        return;
    }
    int lo = 0, hi = E - 1; /* the segment of r: the last e with offsets[e] ≤ r */
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (expert_offsets[(i64)mid * offsets_st] <= r) lo = mid;
        else hi = mid - 1;
    }
    const i64 pad_from = scratch[(chunks - 1) * E + lo];
    /* Every thread reads row_token before thread 0 may overwrite it. */
    const i64 t = r < pad_from ? *rt : -1;
    __syncthreads();
    if (r >= pad_from && threadIdx.x == 0) *rt = -1; /* padding */
    ELEM(IO) *dst = x_perm + r * xp_st;
    if (t < 0 || t >= T) {
        for (i64 d = threadIdx.x; d < H; d += blockDim.x) STORE(IO, dst, d, 0.0f);
        return;
    }
    const ELEM(IO) *src = x + t * x_st;
#if ON_INPUT
    int slot = 0; /* the j with token_row[t, j] = r (exactly one) */
    for (int j = 0; j < k; j++)
        if (token_row[t * tr_st + j] == r) slot = j;
    const float w = weights[t * w_st + slot];
    for (i64 d = threadIdx.x; d < H; d += blockDim.x) STORE(IO, dst, d, w * LOAD(IO, src, d));
#else
    for (i64 d = threadIdx.x; d < H; d += blockDim.x) dst[d] = src[d];
#endif
}

/* One block per token: out[t] (+)= Σ_j w[t, j] · y[token_row[t, j]]; rows
 * outside [0, R) count as dropped. ON_INPUT: the rows are summed. */
extern "C" __global__ void moe_combine(i64 T, int k, i64 H, i64 R, int accumulate,
                                       const ELEM(IO) *y, i64 y_st, const float *weights,
                                       i64 w_st, const int *token_row, i64 tr_st,
                                       ELEM(IO) *out, i64 out_st)
{
    const i64 t = blockIdx.x;
    if (t >= T) return;
    const int *tr = token_row + t * tr_st;
    ELEM(IO) *o = out + t * out_st;
    for (i64 d = threadIdx.x; d < H; d += blockDim.x) {
        float acc = accumulate ? LOAD(IO, o, d) : 0.0f;
        float s = 0.0f;
        for (int j = 0; j < k; j++) {
            const i64 r = tr[j];
            if (r < 0 || r >= R) continue;
#if ON_INPUT
            s += LOAD(IO, y + r * y_st, d);
#else
            s += weights[t * w_st + j] * LOAD(IO, y + r * y_st, d);
#endif
        }
        STORE(IO, o, d, acc + s);
    }
}

#endif /* DISPATCH */
