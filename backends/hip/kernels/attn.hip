/* Attention, the portable kernel: attn_rows, on FMA in f32 (IEEE), for
 * every dtype, head dim and feature; every architecture runs it. (The MFMA
 * kernel for CDNA comes as kernels/attn_mfma.hip; attn.c picks.)
 *
 * One row of 32 lanes (ROW_LANES, prelude.hip) per (query row, head, KV
 * split): two rows per wave64, one per wave32, the same code on both. A
 * block holds ROWS rows; row w of block x takes r = x·ROWS + w of the
 * [total_q][Hq] rows (global query token r / Hq, head r % Hq), and
 * blockIdx.y is the KV split. The row stages its Q in LDS as f32 and walks
 * its visible keys 32 at a time: lane l scores key j0 + l, the row's
 * maximum and sum (__shfl_xor within 32 lanes) update the online softmax,
 * then for each of the 32 keys the lanes add p·V over their slice of the
 * Dv columns (lane l owns columns l, l + 32, ...: coalesced V reads). Only
 * the keys a row sees are visited ([kb, ke) from the window), so no masked
 * key's V ever reaches O.
 *
 * Options: -DIO=<dtype>, -DDQK, -DDV (true head dims), -DROWS. The row
 * pitch of split-KV partials (the plan's dv_pad) is an argument, so plans
 * that differ only in it share a module.
 *
 * Shapes, strides, layouts and feature switches are arguments (attn_args,
 * mirrored in attn.c). Index buffers are not trusted: sequence bounds are
 * clamped to the plan's maxima, and a block-table entry outside
 * [0, num_pages) reads as a key and value of zeros, as the other backends
 * do. */

#define KV_UNIFORM 0
#define KV_RAGGED 1
#define KV_PAGED 2

typedef struct attn_args {
    int batch, seqlen_q, seqlen_k, hq, group, kv_splits, split_len;
    int q_ragged, kv_layout, page_size, num_pages, max_pages;
    i64 total_q, total_k;
    int wl, wr;
    float scale, softcap;
    int has_lse, has_alibi, has_sinks;
    const ELEM(IO) *q;
    i64 q_sb, q_st, q_sh;
    const ELEM(IO) *k;
    i64 k_sb, k_st, k_sh;
    const ELEM(IO) *v;
    i64 v_sb, v_st, v_sh;
    ELEM(IO) *o;
    i64 o_sb, o_st, o_sh;
    float *lse;
    i64 lse_sh, lse_st;
    const int *cu_q, *cu_k, *block_table;
    i64 bt_stride;
    const int *seqlens_k;
    const float *slopes, *sinks;
    float *part;
    /* For tiled kernels (MFMA): the plan's packing and work numbering, the
     * ragged-Q tile space (0 for uniform Q) and whether Q, K and V
     * addresses and strides are all 16-byte aligned. attn_rows ignores
     * them. */
    int pack, head_groups, q_tiles, aligned;
    i64 tile_space;
    i64 dv_pad;      /* row pitch of the split-KV partials */
} attn_args;

XATTN_DEV i64 clampl(i64 x, i64 lo, i64 hi) { return x < lo ? lo : x > hi ? hi : x; }

#define O_PER_LANE ((DV + ROW_LANES - 1) / ROW_LANES)

/* Element offset of key j's K (v = 0) or V (v = 1) row, or −1 for a key of
 * a bad page. */
XATTN_DEV i64 kv_row(const attn_args &a, const int *pages, i64 tok0, i64 j, int v)
{
    if (a.kv_layout == KV_PAGED) {
        const i64 col = j / a.page_size;
        const i64 page = col < a.max_pages ? pages[col] : -1;
        if (page < 0 || page >= a.num_pages) return -1;
        return page * (v ? a.v_sb : a.k_sb) + (j % a.page_size) * (v ? a.v_st : a.k_st);
    }
    return (tok0 + j) * (v ? a.v_st : a.k_st);
}

extern "C" __global__ void __launch_bounds__(ROWS * ROW_LANES) attn_rows(attn_args a)
{
    __shared__ float q_s[ROWS][DQK];
    const int lane = row_lane(), wid = threadIdx.x / ROW_LANES;
    const i64 r = (i64)blockIdx.x * ROWS + wid;
    const int split = blockIdx.y;
    if (r >= a.total_q * a.hq) return; /* the row leaves whole: r is uniform across it */
    const i64 grow = r / a.hq;
    const int h = (int)(r % a.hq);

    /* The row's sequence b and its token i in it, index entries clamped. */
    i64 b, i, sq, q_elem, o_elem;
    if (a.q_ragged) {
        const i64 rows = a.total_q < (i64)a.batch * a.seqlen_q ? a.total_q
                                                               : (i64)a.batch * a.seqlen_q;
        if (grow >= rows) return;
        int lo = 0, hi = a.batch - 1;
        while (lo < hi) {
            const int mid = lo + (hi - lo + 1) / 2;
            if (clampl(a.cu_q[mid], 0, rows) <= grow) lo = mid;
            else hi = mid - 1;
        }
        b = lo;
        const i64 c0 = clampl(a.cu_q[b], 0, rows);
        const i64 c1 = clampl(a.cu_q[b + 1], c0, rows);
        sq = c1 - c0 < a.seqlen_q ? c1 - c0 : a.seqlen_q;
        i = grow - c0;
        if (i < 0 || i >= sq) return; /* a row of no sequence */
        q_elem = grow * a.q_st;
        o_elem = grow * a.o_st;
    } else {
        b = grow / a.seqlen_q;
        i = grow % a.seqlen_q;
        sq = a.seqlen_q;
        q_elem = b * a.q_sb + i * a.q_st;
        o_elem = b * a.o_sb + i * a.o_st;
    }
    i64 sk, tok0 = 0;
    if (a.kv_layout == KV_RAGGED) {
        const i64 c0 = clampl(a.cu_k[b], 0, a.total_k);
        const i64 cap = a.seqlen_k < a.total_k - c0 ? a.seqlen_k : a.total_k - c0;
        sk = clampl((i64)a.cu_k[b + 1] - c0, 0, cap);
        tok0 = c0;
    } else if (a.kv_layout == KV_PAGED) {
        const i64 cap = (i64)a.max_pages * a.page_size < a.seqlen_k
                            ? (i64)a.max_pages * a.page_size
                            : a.seqlen_k;
        sk = clampl(a.seqlens_k[b], 0, cap);
    } else {
        sk = a.seqlen_k;
    }
    const i64 diag = i + sk - sq; /* bottom-right alignment */
    i64 kb = a.wl >= 0 ? (diag - a.wl > 0 ? diag - a.wl : 0) : 0;
    i64 ke = a.wr >= 0 ? (diag + a.wr + 1 < sk ? diag + a.wr + 1 : sk) : sk;
    if (a.kv_splits > 1) {
        const i64 s0 = (i64)split * a.split_len, s1 = s0 + a.split_len;
        if (kb < s0) kb = s0;
        if (ke > s1) ke = s1;
    }

    const int hkv = h / a.group;
    const i64 kbatch = a.kv_layout == KV_UNIFORM ? b : 0;
    const ELEM(IO) *kp = a.k + kbatch * a.k_sb + hkv * a.k_sh;
    const ELEM(IO) *vp = a.v + kbatch * a.v_sb + hkv * a.v_sh;
    const int *pages = a.kv_layout == KV_PAGED ? a.block_table + b * a.bt_stride : a.block_table;
    const ELEM(IO) *qp = a.q + q_elem + h * a.q_sh;
    for (int d = lane; d < DQK; d += ROW_LANES) q_s[wid][d] = LOAD(IO, qp, d);
    row_sync();
    const float slope = a.has_alibi ? a.slopes[h] : 0.0f;

    float acc[O_PER_LANE];
#pragma unroll
    for (int c = 0; c < O_PER_LANE; c++) acc[c] = 0.0f;
    float m = -XATTN_INF, l = 0.0f;
    for (i64 j0 = kb; j0 < ke; j0 += ROW_LANES) {
        const i64 j = j0 + lane;
        float s = -XATTN_INF;
        if (j < ke) {
            const i64 row = kv_row(a, pages, tok0, j, 0);
            float dot = 0.0f;
            if (row >= 0)
                for (int d = 0; d < DQK; d++) dot = fmaf(q_s[wid][d], LOAD(IO, kp, row + d), dot);
            s = dot * a.scale;
            if (a.softcap > 0.0f) s = a.softcap * tanhf(s / a.softcap);
            if (a.has_alibi) s -= slope * fabsf((float)(diag - j));
        }
        /* fmaxf drops a NaN, but p below is then NaN and so is ℓ. */
        const float m_new = fmaxf(m, row_max(s));
        const float m_use = m_new == -XATTN_INF ? 0.0f : m_new;
        const float alpha = expf(m - m_use);
        const float p = expf(s - m_use);
        l = l * alpha + row_sum(p);
        m = m_new;
#pragma unroll
        for (int c = 0; c < O_PER_LANE; c++) acc[c] *= alpha;
        const int nk = ke - j0 < ROW_LANES ? (int)(ke - j0) : ROW_LANES;
        for (int t = 0; t < nk; t++) {
            const float pt = __shfl(p, t, ROW_LANES);
            const i64 row = kv_row(a, pages, tok0, j0 + t, 1);
            if (row < 0) continue; /* zeros: adds nothing */
#pragma unroll
            for (int c = 0; c < O_PER_LANE; c++) {
                const int d = lane + ROW_LANES * c;
                if (d < DV) acc[c] = fmaf(pt, LOAD(IO, vp, row + d), acc[c]);
            }
        }
    }

    /* No visible key, or only keys of score −inf: ℓ stayed 0. A NaN or +inf
     * score left ℓ NaN, and such a row stays NaN below. */
    const bool empty = m == -XATTN_INF && l == 0.0f;
    if (a.kv_splits > 1) {
        const i64 part_rows = (i64)a.batch * a.seqlen_q;
        if (grow >= part_rows) return;
        const i64 prow = ((i64)split * part_rows + grow) * a.hq + h;
        float *po = a.part + prow * a.dv_pad;
#pragma unroll
        for (int c = 0; c < O_PER_LANE; c++) {
            const int d = lane + ROW_LANES * c;
            if (d < DV) po[d] = empty ? 0.0f : acc[c] / l;
        }
        if (lane == 0) {
            float *pl = a.part + (i64)a.kv_splits * part_rows * a.hq * a.dv_pad;
            pl[prow] = empty ? -XATTN_INF : m + logf(l);
        }
        return;
    }
    /* The sink joins the denominator only; rebase on the larger of m and σ
     * so neither exponential overflows. */
    float top = m, denom = l;
    if (a.has_sinks && !empty) {
        const float sink = a.sinks[h];
        top = fmaxf(m, sink);
        denom = l * expf(m - top) + expf(sink - top);
    }
    const float f = empty ? 0.0f : expf(m - top) / denom;
    ELEM(IO) *op = a.o + o_elem + h * a.o_sh;
#pragma unroll
    for (int c = 0; c < O_PER_LANE; c++) {
        const int d = lane + ROW_LANES * c;
        /* O = 0 written as such for an empty row: acc may hold 0·NaN. */
        if (d < DV) STORE(IO, op, d, empty ? 0.0f : acc[c] * f);
    }
    if (a.has_lse && lane == 0)
        a.lse[h * a.lse_sh + grow * a.lse_st] = empty ? -XATTN_INF : top + logf(denom);
}
