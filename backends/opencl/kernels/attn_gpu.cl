/* GPU-style attention, FlashAttention-2 shape, for GPUs behind their OpenCL
 * drivers (no matrix units: OpenCL C has none portable).
 *
 * One work-group of THREADS work-items per plan work item (sequence, head
 * group, query tile, KV split). The group keeps its Q tile in local memory,
 * walks the keys BLOCK_K at a time through a ring of STAGES K/V buffers in
 * local memory, and per block:
 *   S = Q·Kᵀ    spread over the group, written to P (local, f32);
 *   softmax     PARTS work-items per row reduce the row maximum and sum
 *               through the stats region, P = exp(S − m) in place;
 *   O = α·O + P·V   O accumulators in private registers, BLOCK_Q·DV_PAD/4
 *               float4 spread over the group.
 * Local memory is laid out as common/plan.c describes (Q, K/V stages, P,
 * stats), so it fits the plan's local_mem_bytes.
 *
 * Options: -DIO=<dtype> (f32/f16/bf16; f32 accumulation), BLOCK_Q, BLOCK_K,
 * THREADS, STAGES, DQK_PAD, DV_PAD (multiples of 4), PARTS. Shapes,
 * strides, layouts and feature switches are arguments, uniform across a
 * group, so one program serves every problem of a tile.
 *
 * Index buffers are not trusted: sequence bounds are clamped to the plan's
 * maxima and a block-table entry outside [0, num_pages) reads as zeros. */

#define NQ4 (DQK_PAD / 4)                /* float4 chunks of a Q/K row */
#define NV4 (DV_PAD / 4)                 /* float4 chunks of a V/O row */
#define CEIL_DIV(a, b) (((a) + (b) - 1) / (b))
#define S_ITEMS CEIL_DIV(BLOCK_Q * BLOCK_K, THREADS)  /* S elements per work-item */
#define O_ITEMS CEIL_DIV(BLOCK_Q * NV4, THREADS)      /* O float4 per work-item */
#define SM_ITEMS CEIL_DIV(BLOCK_Q * PARTS, THREADS)   /* (row, part) per work-item */
#define K_ELEMS (BLOCK_K * DQK_PAD)
#define STAGE_ELEMS (BLOCK_K * (DQK_PAD + DV_PAD))    /* K then V of one stage */

/* KV layouts, as xattn_kv_layout. */
#define KV_UNIFORM 0
#define KV_RAGGED 1
#define KV_PAGED 2

/* Four raw elements: K/V/Q travel to local memory bit for bit. */
#if defined(IO_F32)
typedef uint4 raw4;
#else
typedef ushort4 raw4;
#endif

/* Four elements of a local tile from element i, as f32. */
inline float4 lload4(__local const RAW(IO) *p, int i)
{
#if defined(IO_F32)
    return as_float4(vload4(0, p + i));
#elif defined(IO_F16)
    return vload_half4(0, (__local const half *)(p + i));
#else
    return bf16_to_f32_4(vload4(0, p + i));
#endif
}

/* Where one sequence's rows are, after clamping its index entries. */
typedef struct seq_t {
    long sq, sk;       /* query and key tokens */
    long q_row0;       /* global token of query 0 (LSE, partials) */
    long q_elem0, o_elem0;
    long k_tok0;       /* contiguous K/V: token of key 0 */
} seq_t;

/* The KV operands of one launch and the head this group reads. */
typedef struct kv_src {
    __global const RAW(IO) *k, *v;   /* offset by the KV head (and batch when uniform) */
    long k_sb, k_st, v_sb, v_st;
    __global const int *pages;       /* paged: this sequence's block-table row */
    int layout, page_size, num_pages, max_pages;
    long k_tok0;
} kv_src;

/* Copy keys [k0, k0 + nk) into one local stage: K [BLOCK_K][DQK_PAD] then
 * V [BLOCK_K][DV_PAD]. Consecutive work-items take consecutive chunks of a
 * row, so the global reads coalesce. Keys beyond nk, head-dim padding and
 * keys of a bad page are zeros (never stale: 0·NaN would poison O). */
inline void load_kv(const kv_src *s, long k0, int nk, int dqk, int dv,
                    __local RAW(IO) *dst, int t)
{
    const raw4 zero = (raw4)(0);
    for (int e = t; e < BLOCK_K * (NQ4 + NV4); e += THREADS) {
        const int is_v = e >= BLOCK_K * NQ4;
        const int x = is_v ? e - BLOCK_K * NQ4 : e;
        const int nc = is_v ? NV4 : NQ4;
        const int key = x / nc, c = x % nc;
        raw4 val = zero;
        if (key < nk && 4 * c < (is_v ? dv : dqk)) {
            const long j = k0 + key;
            long row = -1;
            if (s->layout == KV_PAGED) {
                const long col = j / s->page_size;
                const long page = col < s->max_pages ? s->pages[col] : -1;
                if (page >= 0 && page < s->num_pages)
                    row = page * (is_v ? s->v_sb : s->k_sb) +
                          (j % s->page_size) * (is_v ? s->v_st : s->k_st);
            } else {
                row = (s->k_tok0 + j) * (is_v ? s->v_st : s->k_st);
            }
            if (row >= 0) val = vload4(0, (is_v ? s->v : s->k) + row + 4 * c);
        }
        __local RAW(IO) *d = is_v ? dst + K_ELEMS + key * DV_PAD : dst + key * DQK_PAD;
        vstore4(val, 0, d + 4 * c);
    }
}

__kernel __attribute__((reqd_work_group_size(THREADS, 1, 1)))
void attn_gpu(/* problem */
              int batch, int seqlen_q, int seqlen_k, int hq, int group, int pack,
              int head_groups, int q_tiles, int kv_splits, int split_len, int dqk, int dv,
              int q_ragged, int kv_layout, int page_size, int num_pages, int max_pages,
              long total_q, long total_k, int wl, int wr, float scale, float softcap,
              int has_lse, int has_alibi, int has_sinks, long tile_space,
              /* operands */
              __global const RAW(IO) *q, ulong q_off, long q_sb, long q_st, long q_sh,
              __global const RAW(IO) *k, ulong k_off, long k_sb, long k_st, long k_sh,
              __global const RAW(IO) *v, ulong v_off, long v_sb, long v_st, long v_sh,
              __global ELEM(IO) *o, ulong o_off, long o_sb, long o_st, long o_sh,
              __global float *lse, ulong lse_off, long lse_sh, long lse_st,
              __global const int *cu_q, ulong cu_q_off,
              __global const int *cu_k, ulong cu_k_off,
              __global const int *block_table, ulong bt_off, long bt_stride,
              __global const int *seqlens_k, ulong sk_off,
              __global const float *slopes, ulong slopes_off,
              __global const float *sinks, ulong sinks_off,
              __global float *part, ulong part_off)
{
    __local RAW(IO) q_s[BLOCK_Q * DQK_PAD];
    __local RAW(IO) kv_s[STAGES * STAGE_ELEMS];
    __local float p_s[BLOCK_Q * BLOCK_K];
    /* Stats: [0][part][row] partial maxima, [1][part][row] partial sums. */
    __local float red_s[2 * PARTS * BLOCK_Q];

    const int t = get_local_id(0);
    long w = get_group_id(0);
    if (tile_space > 0) { /* ragged Q: the run's own tile numbers */
        w = ragged_work(w, tile_space, AT_CONST(int, cu_q, cu_q_off), batch, total_q, seqlen_q,
                        pack, BLOCK_Q, head_groups, q_tiles, kv_splits);
        if (w < 0) return; /* the whole group: w is uniform across it */
    }
    const int split = (int)(w % kv_splits);
    w /= kv_splits;
    const long tile = w % q_tiles;
    w /= q_tiles;
    const int g = (int)(w % head_groups);
    const long b = w / head_groups;

    /* The sequence, with its index entries clamped to the plan's maxima so
     * no row outside the operands is touched. */
    seq_t sq;
    if (q_ragged) {
        /* Rows past B·Sq would also overrun the split-KV partials. */
        __global const int *cq = AT_CONST(int, cu_q, cu_q_off);
        const long rows = min(total_q, (long)batch * seqlen_q);
        const long c0 = clamp((long)cq[b], 0L, rows);
        const long c1 = clamp((long)cq[b + 1], c0, rows);
        sq.sq = min(c1 - c0, (long)seqlen_q);
        sq.q_row0 = c0;
        sq.q_elem0 = c0 * q_st;
        sq.o_elem0 = c0 * o_st;
    } else {
        sq.sq = seqlen_q;
        sq.q_row0 = b * seqlen_q;
        sq.q_elem0 = b * q_sb;
        sq.o_elem0 = b * o_sb;
    }
    sq.k_tok0 = 0;
    if (kv_layout == KV_RAGGED) {
        __global const int *ck = AT_CONST(int, cu_k, cu_k_off);
        const long c0 = clamp((long)ck[b], 0L, total_k);
        sq.sk = clamp((long)ck[b + 1] - c0, 0L, min((long)seqlen_k, total_k - c0));
        sq.k_tok0 = c0;
    } else if (kv_layout == KV_PAGED) {
        const long cap = min((long)seqlen_k, (long)max_pages * page_size);
        sq.sk = clamp((long)AT_CONST(int, seqlens_k, sk_off)[b], 0L, cap);
    } else {
        sq.sk = seqlen_k;
    }

    const long rows_total = sq.sq * pack;
    const long r0 = tile * BLOCK_Q;
    if (r0 >= rows_total) return; /* uniform: the whole group leaves */
    const int nrows = (int)min(rows_total - r0, (long)BLOCK_Q);
    const int hkv = g * pack / group;
    const long diag0 = sq.sk - sq.sq; /* bottom-right alignment */

    /* Keys any row of the tile sees: the window edges grow with the token,
     * so the first row gives the start and the last row the end. */
    const long i_first = r0 / pack, i_last = (r0 + nrows - 1) / pack;
    long kb = wl >= 0 ? max(i_first + diag0 - wl, 0L) : 0;
    long ke = wr >= 0 ? min(i_last + diag0 + wr + 1, sq.sk) : sq.sk;
    if (kv_splits > 1) {
        kb = max(kb, (long)split * split_len);
        ke = min(ke, (long)(split + 1) * split_len);
    }

    kv_src src;
    src.layout = kv_layout;
    src.page_size = page_size;
    src.num_pages = num_pages;
    src.max_pages = max_pages;
    src.k_tok0 = sq.k_tok0;
    src.k_sb = k_sb;
    src.k_st = k_st;
    src.v_sb = v_sb;
    src.v_st = v_st;
    src.pages = AT_CONST(int, block_table, bt_off) + (kv_layout == KV_PAGED ? b * bt_stride : 0);
    const long kbatch = kv_layout == KV_UNIFORM ? b : 0;
    src.k = AT_CONST(RAW(IO), k, k_off) + kbatch * k_sb + hkv * k_sh;
    src.v = AT_CONST(RAW(IO), v, v_off) + kbatch * v_sb + hkv * v_sh;

    /* Q tile, rows past the tile and head-dim padding zero. */
    __global const RAW(IO) *qb = AT_CONST(RAW(IO), q, q_off) + sq.q_elem0;
    for (int e = t; e < BLOCK_Q * NQ4; e += THREADS) {
        const int row = e / NQ4, c = e % NQ4;
        raw4 val = (raw4)(0);
        if (row < nrows && 4 * c < dqk) {
            const long flat = r0 + row;
            const long h = (long)g * pack + flat % pack;
            val = vload4(0, qb + (flat / pack) * q_st + h * q_sh + 4 * c);
        }
        vstore4(val, 0, q_s + row * DQK_PAD + 4 * c);
    }

    float4 o_acc[O_ITEMS];
    float o_m[O_ITEMS];
    for (int i = 0; i < O_ITEMS; i++) {
        o_acc[i] = (float4)(0.0f);
        o_m[i] = -INFINITY;
    }
    float sm_m[SM_ITEMS], sm_l[SM_ITEMS], sm_alpha[SM_ITEMS];
    for (int i = 0; i < SM_ITEMS; i++) {
        sm_m[i] = -INFINITY;
        sm_l[i] = 0.0f;
        sm_alpha[i] = 0.0f;
    }
    __global const float *slope_p = AT_CONST(float, slopes, slopes_off);

    if (kb < ke) load_kv(&src, kb, (int)min(ke - kb, (long)BLOCK_K), dqk, dv, kv_s, t);

    int n = 0;
    for (long k0 = kb; k0 < ke; k0 += BLOCK_K, n++) {
        const int nk = (int)min(ke - k0, (long)BLOCK_K);
        __local const RAW(IO) *ks = kv_s + (n % STAGES) * STAGE_ELEMS;
        __local const RAW(IO) *vs = ks + K_ELEMS;
        /* Everyone is done with the previous block (its stage, P, stats),
         * and this block's stage has landed. */
        barrier(CLK_LOCAL_MEM_FENCE);
#if STAGES > 1
        /* The next block loads into the next stage while this one is used. */
        if (k0 + BLOCK_K < ke)
            load_kv(&src, k0 + BLOCK_K, (int)min(ke - k0 - BLOCK_K, (long)BLOCK_K), dqk, dv,
                    kv_s + ((n + 1) % STAGES) * STAGE_ELEMS, t);
#else
        if (n > 0) {
            load_kv(&src, k0, nk, dqk, dv, kv_s, t);
            barrier(CLK_LOCAL_MEM_FENCE);
        }
#endif

        /* S = scale·Q·Kᵀ, then soft cap, ALiBi and the mask, into P. */
        float s_acc[S_ITEMS];
        for (int i = 0; i < S_ITEMS; i++) s_acc[i] = 0.0f;
        for (int d4 = 0; d4 < NQ4; d4++) {
            for (int i = 0; i < S_ITEMS; i++) {
                const int e = t + i * THREADS;
                const int row = (e / BLOCK_K) % BLOCK_Q, key = e % BLOCK_K;
                /* Each key walks d from its own starting chunk: the K rows a
                 * warp reads are DQK_PAD apart, so the same chunk of each
                 * would fall in one local-memory bank. */
                int c = d4 + key % NQ4;
                if (c >= NQ4) c -= NQ4;
                s_acc[i] += dot(lload4(q_s, row * DQK_PAD + 4 * c),
                                lload4(ks, key * DQK_PAD + 4 * c));
            }
        }
        for (int i = 0; i < S_ITEMS; i++) {
            const int e = t + i * THREADS;
            if (e >= BLOCK_Q * BLOCK_K) break;
            const int row = e / BLOCK_K, key = e % BLOCK_K;
            const long flat = r0 + row, j = k0 + key;
            const long diag = flat / pack + diag0;
            const int visible = row < nrows && key < nk && (wl < 0 || j >= diag - wl) &&
                                (wr < 0 || j <= diag + wr);
            float s = s_acc[i] * scale;
            if (softcap > 0.0f) s = softcap * tanh(s / softcap);
            if (has_alibi && visible)
                s -= slope_p[(long)g * pack + flat % pack] * fabs((float)(diag - j));
            p_s[row * BLOCK_K + key] = visible ? s : -INFINITY;
        }
        barrier(CLK_LOCAL_MEM_FENCE);

        /* Row maxima: PARTS work-items per row, keys interleaved so that
         * neighbouring work-items of a row read neighbouring words, and each
         * row's walk starting at its own key so that rows BLOCK_K words
         * apart do not read one bank together. */
        for (int i = 0; i < SM_ITEMS; i++) {
            const int e = t + i * THREADS;
            if (e >= BLOCK_Q * PARTS) break;
            const int row = e / PARTS, pt = e % PARTS;
            const int cnt = nk > pt ? (nk - pt + PARTS - 1) / PARTS : 0;
            int m = cnt ? row % cnt : 0;
            float mx = -INFINITY;
            for (int x = 0; x < cnt; x++) {
                mx = fmax(mx, p_s[row * BLOCK_K + pt + PARTS * m]);
                if (++m == cnt) m = 0;
            }
            red_s[pt * BLOCK_Q + row] = mx;
        }
        barrier(CLK_LOCAL_MEM_FENCE);

        /* P = exp(S − m); partial sums. A row that has seen no key keeps
         * m = −inf and subtracts 0, so its p stay exp(−inf) = 0, not NaN. */
        for (int i = 0; i < SM_ITEMS; i++) {
            const int e = t + i * THREADS;
            if (e >= BLOCK_Q * PARTS) break;
            const int row = e / PARTS, pt = e % PARTS;
            float mx = -INFINITY;
            for (int x = 0; x < PARTS; x++) mx = fmax(mx, red_s[x * BLOCK_Q + row]);
            const float m_new = fmax(sm_m[i], mx);
            const float m_use = m_new == -INFINITY ? 0.0f : m_new;
            sm_alpha[i] = exp(sm_m[i] - m_use);
            sm_m[i] = m_new;
            const int cnt = nk > pt ? (nk - pt + PARTS - 1) / PARTS : 0;
            int m = cnt ? row % cnt : 0;
            float sum = 0.0f;
            for (int x = 0; x < cnt; x++) {
                const int at = row * BLOCK_K + pt + PARTS * m;
                const float p = exp(p_s[at] - m_use);
                p_s[at] = p;
                sum += p;
                if (++m == cnt) m = 0;
            }
            red_s[(PARTS + pt) * BLOCK_Q + row] = sum;
        }
        barrier(CLK_LOCAL_MEM_FENCE);

        for (int i = 0; i < SM_ITEMS; i++) {
            const int e = t + i * THREADS;
            if (e >= BLOCK_Q * PARTS) break;
            const int row = e / PARTS;
            float sum = 0.0f;
            for (int x = 0; x < PARTS; x++) sum += red_s[(PARTS + x) * BLOCK_Q + row];
            sm_l[i] = sm_l[i] * sm_alpha[i] + sum;
        }

        /* O = α·O + P·V. Each O owner derives α from the same maxima. */
        for (int i = 0; i < O_ITEMS; i++) {
            const int e = t + i * THREADS;
            const int row = (e / NV4) % BLOCK_Q;
            float mx = -INFINITY;
            for (int x = 0; x < PARTS; x++) mx = fmax(mx, red_s[x * BLOCK_Q + row]);
            const float m_new = fmax(o_m[i], mx);
            const float m_use = m_new == -INFINITY ? 0.0f : m_new;
            o_acc[i] *= exp(o_m[i] - m_use);
            o_m[i] = m_new;
        }
        /* Where the mask hides some key of the block from some row (the
         * first row ends first, the last row starts last), each O owner adds
         * only the keys its row sees: P is 0 for the others, but 0·NaN is
         * NaN, and a V row outside a row's mask must not reach it. */
        const int partial = (wr >= 0 && i_first + diag0 + wr < k0 + nk - 1) ||
                            (wl >= 0 && i_last + diag0 - wl > k0);
        if (partial) {
            int lo[O_ITEMS], hi[O_ITEMS];
            for (int i = 0; i < O_ITEMS; i++) {
                const int e = t + i * THREADS;
                const long tok = (r0 + (e / NV4) % BLOCK_Q) / pack, diag = tok + diag0 - k0;
                lo[i] = wl >= 0 ? (int)clamp(diag - wl, 0L, (long)nk) : 0;
                hi[i] = wr >= 0 ? (int)clamp(diag + wr, -1L, (long)nk - 1) : nk - 1;
            }
            for (int kk = 0; kk < nk; kk++) {
                for (int i = 0; i < O_ITEMS; i++) {
                    const int e = t + i * THREADS;
                    const int row = (e / NV4) % BLOCK_Q, c = e % NV4;
                    if (kk >= lo[i] && kk <= hi[i])
                        o_acc[i] += p_s[row * BLOCK_K + kk] * lload4(vs, kk * DV_PAD + 4 * c);
                }
            }
        } else {
            for (int kk = 0; kk < nk; kk++) {
                for (int i = 0; i < O_ITEMS; i++) {
                    const int e = t + i * THREADS;
                    const int row = (e / NV4) % BLOCK_Q, c = e % NV4;
                    o_acc[i] += p_s[row * BLOCK_K + kk] * lload4(vs, kk * DV_PAD + 4 * c);
                }
            }
        }
    }

    /* Final row statistics to the O owners; LSE from the row owners. */
    barrier(CLK_LOCAL_MEM_FENCE);
    __global float *part_o = AT(float, part, part_off);
    const long part_rows = (long)batch * seqlen_q;
    __global float *part_lse = part_o + (long)kv_splits * part_rows * hq * DV_PAD;
    __global const float *sink_p = AT_CONST(float, sinks, sinks_off);
    for (int i = 0; i < SM_ITEMS; i++) {
        const int e = t + i * THREADS;
        if (e >= BLOCK_Q * PARTS) break;
        const int row = e / PARTS, pt = e % PARTS;
        if (pt != 0) continue;
        red_s[PARTS * BLOCK_Q + row] = sm_l[i];
        if (row >= nrows) continue;
        const long flat = r0 + row;
        const long h = (long)g * pack + flat % pack, grow = sq.q_row0 + flat / pack;
        const float m = sm_m[i], l = sm_l[i];
        /* No visible key, or only keys of score −inf: every p was 0 and ℓ
         * stayed 0. A NaN or +inf score left ℓ NaN (p = NaN), so such a row
         * takes the arithmetic below, which keeps it NaN. */
        const int empty = m == -INFINITY && l == 0.0f;
        if (kv_splits > 1) {
            part_lse[((long)split * part_rows + grow) * hq + h] =
                empty ? -INFINITY : m + log(l);
        } else if (has_lse) {
            float out = -INFINITY;
            if (!empty) {
                float top = m, denom = l;
                if (has_sinks) {
                    const float sink = sink_p[h];
                    top = fmax(m, sink);
                    denom = l * exp(m - top) + exp(sink - top);
                }
                out = top + log(denom);
            }
            AT(float, lse, lse_off)[h * lse_sh + grow * lse_st] = out;
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    __global ELEM(IO) *ob = AT(ELEM(IO), o, o_off) + sq.o_elem0;
    for (int i = 0; i < O_ITEMS; i++) {
        const int e = t + i * THREADS;
        if (e >= BLOCK_Q * NV4) break;
        const int row = e / NV4, c = e % NV4;
        if (row >= nrows) continue;
        const long flat = r0 + row;
        const long h = (long)g * pack + flat % pack, tok = flat / pack;
        const float m = o_m[i], l = red_s[PARTS * BLOCK_Q + row];
        const int empty = m == -INFINITY && l == 0.0f; /* as for LSE above */
        if (kv_splits > 1) {
            /* This split's O/ℓ over the padded width; the merge weighs it
             * by its LSE and skips it when that is −inf. */
            const long prow = ((long)split * part_rows + sq.q_row0 + tok) * hq + h;
            const float4 val = empty ? (float4)(0.0f) : o_acc[i] / l;
            vstore4(val, 0, part_o + prow * DV_PAD + 4 * c);
            continue;
        }
        if (4 * c >= dv) continue;
        if (empty) {
            /* O = 0, written as such: o_acc may hold 0·NaN from the V row
             * of a key of score −inf. */
            STORE4(IO, ob, tok * o_st + h * o_sh + 4 * c, (float4)(0.0f));
            continue;
        }
        /* The sink joins the denominator only; rebase on the larger of m and
         * σ so neither exponential overflows. */
        float top = m, denom = l;
        if (has_sinks) {
            const float sink = sink_p[h];
            top = fmax(m, sink);
            denom = l * exp(m - top) + exp(sink - top);
        }
        const float f = exp(m - top) / denom;
        STORE4(IO, ob, tok * o_st + h * o_sh + 4 * c, o_acc[i] * f);
    }
    /* Every work-item of the group meets here before it ends. PoCL's CPU
     * driver treats the kernel's end as a barrier, shared with the early
     * returns above; a branch of the loop above that goes straight to the
     * end (with O_ITEMS 1 the loop runs once, so `continue` is one) then
     * looks to it like a choice between barriers, which it takes as uniform
     * and decides for the whole group by work-item 0: rows past the tile
     * wrote past O. Here every such branch ends at this one barrier. */
    barrier(CLK_LOCAL_MEM_FENCE);
}
