/* Fused attention, CPU style (PoCL): one work-group of one work-item per
 * plan work item (sequence, head group, query tile, KV split), numbered as
 * in common/plan.h. Local size 1 makes __local memory a cheap private
 * scratch (PoCL gives each group its own), and explicit float16 vectors
 * map onto the CPU's vector registers; there are no barriers. The plan's
 * tiles are used as they are (block_q rows with gqa_pack heads packed in,
 * block_k keys per step); two shapes, as in the CPU backend:
 *
 *  - wide (prefill): query rows in vector lanes. Q is stored transposed
 *    (Qt[d][row]) once per item; each key tile is converted to f32 in local
 *    memory (paging, strides and f16/bf16 are absorbed there, and every
 *    element is then used by block_q rows); S_RV_MAX vectors of rows ×
 *    S_KEYS keys of S stay in registers while d runs, each K element one
 *    broadcast; the softmax is vertical (a row's maximum is a lane-wise max
 *    over keys); O += P·V keeps PV_ROWS rows × PV_NV vectors of Dv in
 *    registers, V rows streamed, P broadcast.
 *  - narrow (NARROW=1, decode: block_q ≤ half a vector): d in lanes, K and
 *    V read straight from the caller's rows (memory-bound: a copy would
 *    cost a store per element); keys in lanes for the softmax; all rows'
 *    P·V accumulators in registers.
 *
 * Register blocks are arrays indexed by loop counters with compile-time
 * bounds; `#pragma unroll` unrolls them fully so they live in registers
 * (without it PoCL kept them in memory: prefill ran at less than half the
 * speed).
 *
 * Options (all from the plan): -DIO=<dtype>, DQK, DV (true head dims),
 * DQK_PAD, DV_PAD (multiples of VW), BLOCK_Q, BLOCK_K, BQ_PAD, BK_PAD
 * (block_q and block_k rounded up to VW), PACK (gqa_pack), PV_NV (vectors
 * of Dv per P·V block, dividing DV_PAD / VW), SOFTCAP, ALIBI, NARROW (0/1).
 * Everything else is an argument.
 *
 * Split-KV: each split writes its O (divided by its own sum) and LSE as
 * f32 partials (plan.h layout); split_merge (attn_split.cl) combines them
 * and adds the sink once. */

/* PoCL's front end runs before any unrolling and would warn, on stderr,
 * about every `#pragma unroll` loop whose bound becomes constant only once
 * the function is inlined; its own optimiser unrolls them afterwards. */
#pragma clang diagnostic ignored "-Wpass-failed"

#define VW 16          /* f32 lanes of a float16 */
#define S_RV_MAX 3     /* S block: up to 3 vectors of rows ... */
#define S_KEYS 8       /* ... × 8 keys: 24 accumulators + 3 Q vectors */
#define PV_ROWS 6      /* P·V block: 6 rows × PV_NV (≤ 4) vectors of Dv */
#define IO_STEP 8      /* head dims are multiples of 8: rows move 8 at a time */

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* Bits of the kernel argument `flags`: optional operands present. */
#define FLAG_LSE 1
#define FLAG_SINKS 2

/* Row statistics kept in local memory, one array of BQ_PAD each. */
typedef struct row_stats {
    float m[BQ_PAD];      /* running maximum */
    float l[BQ_PAD];      /* running sum of exp */
    float alpha[BQ_PAD];  /* rescale of O for the current tile */
    float lo[BQ_PAD];     /* first visible key, relative to the tile */
    float hi[BQ_PAD];     /* last visible key, relative to the tile */
    float diag[BQ_PAD];   /* i + Sk − Sq relative to the tile (ALiBi) */
    float slope[BQ_PAD];  /* ALiBi slope of the row's head */
    int tok[BQ_PAD];      /* query token within the sequence */
    int head[BQ_PAD];     /* query head */
} row_stats;

/* S block: St[key][row] for RV vectors of rows × S_KEYS keys. */
ALWAYS_INLINE void s_block(const int RV, __local const float *qt, __local const float *kp,
                           __local float *st)
{
    float16 acc[S_RV_MAX][S_KEYS];
    #pragma unroll
    for (int m = 0; m < RV; m++)
        #pragma unroll
        for (int j = 0; j < S_KEYS; j++) acc[m][j] = (float16)0.0f;
    for (int d = 0; d < DQK; d++) {
        float16 q[S_RV_MAX];
        #pragma unroll
        for (int m = 0; m < RV; m++) q[m] = vload16(0, qt + d * BQ_PAD + m * VW);
        #pragma unroll
        for (int j = 0; j < S_KEYS; j++) {
            const float16 b = (float16)kp[j * DQK_PAD + d];
            #pragma unroll
            for (int m = 0; m < RV; m++) acc[m][j] = fma(q[m], b, acc[m][j]);
        }
    }
    #pragma unroll
    for (int j = 0; j < S_KEYS; j++)
        #pragma unroll
        for (int m = 0; m < RV; m++) vstore16(acc[m][j], 0, st + j * BQ_PAD + m * VW);
}

/* O[r][x·VW ..] = α_r·O[r] + Σ_n Pt[n][r]·V[n] for MR rows, PV_NV vectors. */
ALWAYS_INLINE void pv_block(const int MR, __local float *o, __local const float *alpha,
                            __local const float *pt, __local const float *vp, int nk)
{
    float16 acc[PV_ROWS][PV_NV];
    #pragma unroll
    for (int r = 0; r < MR; r++) {
        const float16 a = (float16)alpha[r];
        #pragma unroll
        for (int x = 0; x < PV_NV; x++) acc[r][x] = vload16(0, o + r * DV_PAD + x * VW) * a;
    }
    for (int n = 0; n < nk; n++) {
        float16 vv[PV_NV];
        #pragma unroll
        for (int x = 0; x < PV_NV; x++) vv[x] = vload16(0, vp + n * DV_PAD + x * VW);
        #pragma unroll
        for (int r = 0; r < MR; r++) {
            const float16 p = (float16)pt[n * BQ_PAD + r];
            #pragma unroll
            for (int x = 0; x < PV_NV; x++) acc[r][x] = fma(p, vv[x], acc[r][x]);
        }
    }
    #pragma unroll
    for (int r = 0; r < MR; r++)
        #pragma unroll
        for (int x = 0; x < PV_NV; x++) vstore16(acc[r][x], 0, o + r * DV_PAD + x * VW);
}

/* 1 if the tile's nk V rows (f32, local) are all finite: then a masked key's
 * P of exactly 0 adds exactly nothing, and the tile's P·V may run whole.
 * 0·x is 0 for finite x and NaN for NaN and ±inf. */
ALWAYS_INLINE int tile_v_finite(__local const float *vt, int nk)
{
    float16 acc = (float16)0.0f;
    for (int x = 0; x < nk * DV_PAD; x += VW) acc = fma(vload16(0, vt + x), (float16)0.0f, acc);
    return all(acc == (float16)0.0f);
}

/* Visible keys [lo, hi] of query row i (bottom-right aligned window),
 * clipped to the sequence; lo > hi when none. */
ALWAYS_INLINE void row_range(long i, long sq, long sk, int wl, int wr, long *lo, long *hi)
{
    const long diag = i + sk - sq;
    *lo = wl >= 0 && diag - wl > 0 ? diag - wl : 0;
    *hi = wr >= 0 && diag + wr < sk - 1 ? diag + wr : sk - 1;
}


/* Narrow plans (decode, block_q ≤ half a vector): d in lanes, K and V read
 * straight from the caller's rows. Elements d .. d + VW of a row of lim
 * elements, zeros past lim (lim is a multiple of IO_STEP). */
ALWAYS_INLINE float16 load_row16(__global const ELEM(IO) *p, long e, int d, int lim)
{
    if (d + VW <= lim) return LOAD16(IO, p, e + d);
    if (d + IO_STEP <= lim) return (float16)(LOAD8(IO, p, e + d), (float8)0.0f);
    return (float16)0.0f;
}

ALWAYS_INLINE float hmax16(float16 x)
{
    const float8 a = fmax(x.lo, x.hi);
    const float4 b = fmax(a.lo, a.hi);
    const float2 c = fmax(b.lo, b.hi);
    return fmax(c.x, c.y);
}

/* Where a sequence's key rows are: layout 0 dense (batch kbatch), 1 ragged
 * (from token k_tok0), 2 paged through the sequence's block-table row. */
typedef struct kv_rows {
    int layout, page_size, num_pages;
    long kbatch, k_tok0, k_sb, k_st, v_sb, v_st;
    __global const int *pages;
} kv_rows;

/* Element offsets of key j's K and V rows. A block-table entry outside the
 * caches is clamped: the row read is wrong but inside the buffer. */
ALWAYS_INLINE void key_rows(long j, const kv_rows *kv, long *ko, long *vo)
{
    if (kv->layout == 2) {
        const long page = clamp((long)kv->pages[j / kv->page_size], 0L, (long)kv->num_pages - 1);
        const long slot = j % kv->page_size;
        *ko = page * kv->k_sb + slot * kv->k_st;
        *vo = page * kv->v_sb + slot * kv->v_st;
    } else {
        *ko = kv->kbatch * kv->k_sb + (kv->k_tok0 + j) * kv->k_st;
        *vo = kv->kbatch * kv->v_sb + (kv->k_tok0 + j) * kv->v_st;
    }
}

#if NARROW
/* Narrow plans with stages > 1 prefetch as the CPU backend does: during S
 * the tile's V rows, during P·V the K rows STAGES tiles ahead, a cache line
 * per vector step. An item reads only its head's slice of each token row
 * (512 of 4096 bytes at Hkv 8, D 128, f32), a pattern the hardware
 * prefetchers do not follow; measured on Zen 4 (decode, Sk 16384), 10–11
 * GB/s without, 14–17 with. The hint fills L2, not L1, whose few miss
 * buffers the loads needed now must keep. Needs Clang's __builtin_prefetch
 * (PoCL's OpenCL prefetch() is empty); elsewhere nothing is prefetched. */
#define CACHE_LINE 64
#if defined(__clang__) && defined(__has_builtin)
#if __has_builtin(__builtin_prefetch) && STAGES > 1
#define PF_TILES STAGES
#define PREFETCH(p) __builtin_prefetch((__global const uchar *)(p), 0, 1)
#endif
#endif
#ifndef PF_TILES
#define PF_TILES 0
#define PREFETCH(p) ((void)0)
#endif

/* Rows of a narrow S block (block_q rounded up to a power of two) and keys:
 * together one accumulator per lane of a float16. */
#define N_ROWS (BLOCK_Q <= 1 ? 1 : BLOCK_Q <= 2 ? 2 : BLOCK_Q <= 4 ? 4 : 8)
#define N_KEYS (VW / N_ROWS)

/* Lane i of the result is the sum of the lanes of x[i]: a transpose and add
 * in four halving steps, 15 vector adds for 16 sums. */
ALWAYS_INLINE float16 sum16x16(const float16 *x)
{
    float16 a[8], b[4], c[2];
    #pragma unroll
    for (int i = 0; i < 8; i++)
        a[i] = (float16)(x[2 * i].lo, x[2 * i + 1].lo) + (float16)(x[2 * i].hi, x[2 * i + 1].hi);
    #pragma unroll
    for (int i = 0; i < 4; i++)
        b[i] = (float16)(a[2 * i].even, a[2 * i + 1].even) +
               (float16)(a[2 * i].odd, a[2 * i + 1].odd);
    #pragma unroll
    for (int i = 0; i < 2; i++)
        c[i] = (float16)(b[2 * i].even, b[2 * i + 1].even) +
               (float16)(b[2 * i].odd, b[2 * i + 1].odd);
    return (float16)(c[0].even, c[1].even) + (float16)(c[0].odd, c[1].odd);
}

/* One key tile of a narrow plan: BLOCK_Q rows (Q row-major in qn), S
 * row-major in st (St[row][key], BK_PAD keys a row), O row-major in ot. */
ALWAYS_INLINE void narrow_tile(__local const float *qn, __local float *st, __local float *ot,
                               __local row_stats *rs, __global const ELEM(IO) *kbase,
                               __global const ELEM(IO) *vbase, __local const long *koff,
                               __local const long *voff, int nk, __local const long *pkoff,
                               __local const long *pvoff, int npf, float softcap, float inv_cap,
                               int masked)
{
    const int nk_pad = (nk + VW - 1) / VW * VW;
    /* S in blocks of N_KEYS keys × N_ROWS rows, d in lanes: one vector
     * accumulator per (key, row), all reduced at once by sum16x16. Keys past
     * nk repeat the last row and are masked below. */
    for (int n0 = 0; n0 < nk; n0 += N_KEYS) {
        float16 acc[VW];
        #pragma unroll
        for (int i = 0; i < VW; i++) acc[i] = (float16)0.0f;
        long kr[N_KEYS];
        #pragma unroll
        for (int j = 0; j < N_KEYS; j++) kr[j] = koff[min(n0 + j, nk - 1)];
        for (int d = 0; d < DQK; d += VW) {
            float16 qv[N_ROWS];
            #pragma unroll
            for (int r = 0; r < N_ROWS; r++) qv[r] = vload16(0, qn + r * DQK_PAD + d);
            #pragma unroll
            for (int j = 0; j < N_KEYS; j++) {
                /* This tile's V rows, read by P·V next. */
                if (PF_TILES && n0 + j < nk && (d * (int)sizeof(ELEM(IO))) % CACHE_LINE == 0 &&
                    d < DV)
                    PREFETCH(vbase + voff[n0 + j] + d);
                const float16 kv = load_row16(kbase, kr[j], d, DQK);
                #pragma unroll
                for (int r = 0; r < N_ROWS; r++)
                    acc[j * N_ROWS + r] = fma(qv[r], kv, acc[j * N_ROWS + r]);
            }
        }
        float sc[VW];
        vstore16(sum16x16(acc), 0, sc);
        #pragma unroll
        for (int j = 0; j < N_KEYS; j++)
            #pragma unroll
            for (int r = 0; r < BLOCK_Q; r++) st[r * BK_PAD + n0 + j] = sc[j * N_ROWS + r];
    }
    /* Softmax per row, keys in lanes; always masked, which also hides the
     * padding keys and rows. */
    const float16 iota = (float16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    #pragma unroll
    for (int r = 0; r < BLOCK_Q; r++) {
        __local float *row = st + r * BK_PAD;
        for (int n = nk; n < nk_pad; n++) row[n] = 0.0f;
        const float lo = rs->lo[r], hi = rs->hi[r], diag = rs->diag[r], slope = rs->slope[r];
        float16 mx = (float16)(-INFINITY);
        for (int n0 = 0; n0 < nk_pad; n0 += VW) {
            float16 s = vload16(0, row + n0);
            const float16 fn = iota + (float)n0;
            if (SOFTCAP) s = softcap * tanh(s * inv_cap);
            if (ALIBI) s -= slope * fabs(diag - fn);
            s = select((float16)(-INFINITY), s, (fn >= lo) & (fn <= hi));
            vstore16(s, 0, row + n0);
            mx = fmax(mx, s);
        }
        const float m_old = rs->m[r], m_new = fmax(m_old, hmax16(mx));
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;
        const float alpha = exp(m_old - m_use);
        float16 sum = (float16)0.0f;
        for (int n0 = 0; n0 < nk_pad; n0 += VW) {
            const float16 p = exp(vload16(0, row + n0) - m_use);
            vstore16(p, 0, row + n0);
            sum += p;
        }
        rs->m[r] = m_new;
        rs->l[r] = rs->l[r] * alpha + hsum16(sum);
        rs->alpha[r] = alpha;
    }
    /* Some row does not see some key (rows of different tokens): each row
     * multiplies only the V rows it sees. Its P is 0 elsewhere, but 0·NaN
     * is NaN, and a V row outside a row's mask must not reach it. */
    if (masked) {
        for (int r = 0; r < BLOCK_Q; r++) {
            const int lo = (int)rs->lo[r], hi = (int)rs->hi[r];
            const float a = rs->alpha[r];
            for (int x0 = 0; x0 < DV_PAD; x0 += VW) {
                float16 acc = vload16(0, ot + r * DV_PAD + x0) * a;
                for (int n = lo; n <= hi; n++)
                    acc = fma((float16)st[r * BK_PAD + n], load_row16(vbase, voff[n], x0, DV), acc);
                vstore16(acc, 0, ot + r * DV_PAD + x0);
            }
        }
        return;
    }
    /* O = α·O + P·V, V rows read in place. */
    for (int x0 = 0; x0 < DV_PAD; x0 += PV_NV * VW) {
        float16 acc[BLOCK_Q][PV_NV];
        #pragma unroll
        for (int r = 0; r < BLOCK_Q; r++)
            #pragma unroll
            for (int x = 0; x < PV_NV; x++)
                acc[r][x] = vload16(0, ot + r * DV_PAD + x0 + x * VW) * rs->alpha[r];
        for (int n = 0; n < nk; n++) {
            float16 vv[PV_NV];
            #pragma unroll
            for (int x = 0; x < PV_NV; x++) {
                /* The K rows PF_TILES tiles ahead, a line per vector. */
                const int e = x0 + x * VW;
                if (PF_TILES && n < npf && (e * (int)sizeof(ELEM(IO))) % CACHE_LINE == 0 && e < DQK)
                    PREFETCH(kbase + pkoff[n] + e);
                vv[x] = load_row16(vbase, voff[n], e, DV);
            }
            #pragma unroll
            for (int r = 0; r < BLOCK_Q; r++) {
                const float16 p = (float16)st[r * BK_PAD + n];
                #pragma unroll
                for (int x = 0; x < PV_NV; x++) acc[r][x] = fma(p, vv[x], acc[r][x]);
            }
        }
        #pragma unroll
        for (int r = 0; r < BLOCK_Q; r++)
            #pragma unroll
            for (int x = 0; x < PV_NV; x++) vstore16(acc[r][x], 0, ot + r * DV_PAD + x0 + x * VW);
    }
}
#endif

__kernel void attn_cpu(
    __global const ELEM(IO) *q, ulong q_off, long q_sb, long q_st, long q_sh,
    __global const ELEM(IO) *k, ulong k_off, long k_sb, long k_st, long k_sh,
    __global const ELEM(IO) *v, ulong v_off, long v_sb, long v_st, long v_sh,
    __global ELEM(IO) *o, ulong o_off, long o_sb, long o_st, long o_sh,
    __global float *lse, ulong lse_off, long lse_sh, long lse_st,
    __global const int *cu_q, ulong cu_q_off, __global const int *cu_k, ulong cu_k_off,
    __global const int *block_table, ulong bt_off, long bt_stride,
    __global const int *seqlens_k, ulong sk_off,
    __global const float *slopes, ulong slopes_off, __global const float *sinks,
    ulong sinks_off, __global float *part, ulong part_off,
    long total_q, long total_k, long part_rows, int seqlen_q, int seqlen_k, int hq, int group, int head_groups,
    int q_tiles, int kv_splits, int kv_split_len, int q_ragged, int kv_layout,
    int page_size, int num_pages, int max_pages, int wl, int wr, float scale,
    float softcap, int flags, int batch, long tile_space)
{
    const int has_lse = flags & FLAG_LSE, has_sinks = flags & FLAG_SINKS;
    __local float qt[DQK_PAD * BQ_PAD];   /* Q, scaled (wide: transposed, Qt[d][row]) */
#if NARROW
    __local long koff[BK_PAD], voff[BK_PAD];   /* element offsets of the tile's K, V rows */
    __local long pkoff[BK_PAD], pvoff[BK_PAD]; /* ... and of the rows to prefetch */
#else
    __local float kt[BK_PAD * DQK_PAD];   /* K tile, f32, row-major */
    __local float vt[BK_PAD * DV_PAD];    /* V tile, f32, row-major */
#endif
    __local float st[BK_PAD * BQ_PAD];    /* S then P */
    __local float ot[BQ_PAD * DV_PAD];    /* O accumulator, row-major */
    __local row_stats rs_mem;
    __local row_stats *rs = &rs_mem;

    long w = get_global_id(0);
    if (tile_space > 0) { /* ragged Q: the run's own tile numbers */
        w = ragged_work(w, tile_space, AT_CONST(int, cu_q, cu_q_off), batch, total_q, seqlen_q, PACK, BLOCK_Q, head_groups, q_tiles, kv_splits);
        if (w < 0) return;
    }
    const int split = (int)(w % kv_splits);
    w /= kv_splits;
    const long tile = w % q_tiles;
    w /= q_tiles;
    const long g = w % head_groups;
    const long b = w / head_groups;

    /* The sequence. Index buffers are device memory the front end may not
     * have read: every value is clamped so no access leaves its operand. */
    long q_row0, sq, q_elem0, o_elem0, k_tok0 = 0, sk;
    if (q_ragged) {
        __global const int *cq = AT_CONST(int, cu_q, cu_q_off);
        q_row0 = clamp((long)cq[b], 0L, total_q);
        sq = clamp((long)cq[b + 1] - q_row0, 0L, min(total_q - q_row0, (long)seqlen_q));
        q_elem0 = q_row0 * q_st;
        o_elem0 = q_row0 * o_st;
    } else {
        q_row0 = b * seqlen_q;
        sq = seqlen_q;
        q_elem0 = b * q_sb;
        o_elem0 = b * o_sb;
    }
    if (kv_splits > 1) sq = clamp(part_rows - q_row0, 0L, sq); /* partial rows exist */
    if (kv_layout == 1) {
        __global const int *ck = AT_CONST(int, cu_k, cu_k_off);
        k_tok0 = clamp((long)ck[b], 0L, total_k);
        sk = clamp((long)ck[b + 1] - k_tok0, 0L, min(total_k - k_tok0, (long)seqlen_k));
    } else if (kv_layout == 2) {
        sk = clamp((long)AT_CONST(int, seqlens_k, sk_off)[b], 0L,
                   min((long)seqlen_k, (long)max_pages * page_size));
    } else {
        sk = seqlen_k;
    }

    const long rows_total = sq * PACK, r0 = tile * BLOCK_Q;
    if (r0 >= rows_total) return;
    const int nrows = (int)min(rows_total - r0, (long)BLOCK_Q);
    const int nmv = (nrows + VW - 1) / VW;
    const long hkv = g * PACK / group;

    /* Rows: token, head, Q scaled and transposed; the key range of the item. */
    __global const ELEM(IO) *qb = AT_CONST(ELEM(IO), q, q_off);
    long kb = LONG_MAX, ke = 0;
    for (int r = 0; r < nmv * VW; r++) {
        rs->m[r] = -INFINITY;
        rs->l[r] = 0.0f;
        rs->slope[r] = 0.0f;
        if (r >= nrows) {
#if NARROW
            if (r < N_ROWS) /* padding rows of the S blocks */
                for (int d = 0; d < DQK_PAD; d++) qt[r * DQK_PAD + d] = 0.0f;
#else
            for (int d = 0; d < DQK; d++) qt[d * BQ_PAD + r] = 0.0f;
#endif
            continue;
        }
        const long flat = r0 + r, i = flat / PACK, h = g * PACK + flat % PACK;
        rs->tok[r] = (int)i;
        rs->head[r] = (int)h;
        if (ALIBI) rs->slope[r] = AT_CONST(float, slopes, slopes_off)[h];
        const long qe = q_elem0 + i * q_st + h * q_sh;
#if NARROW
        for (int d = 0; d < DQK; d += IO_STEP)
            vstore8(LOAD8(IO, qb, qe + d) * scale, 0, qt + r * DQK_PAD + d);
        for (int d = DQK; d < DQK_PAD; d++) qt[r * DQK_PAD + d] = 0.0f;
#else
        for (int d = 0; d < DQK; d += IO_STEP) {
            const float8 x = LOAD8(IO, qb, qe + d) * scale;
            qt[(d + 0) * BQ_PAD + r] = x.s0;
            qt[(d + 1) * BQ_PAD + r] = x.s1;
            qt[(d + 2) * BQ_PAD + r] = x.s2;
            qt[(d + 3) * BQ_PAD + r] = x.s3;
            qt[(d + 4) * BQ_PAD + r] = x.s4;
            qt[(d + 5) * BQ_PAD + r] = x.s5;
            qt[(d + 6) * BQ_PAD + r] = x.s6;
            qt[(d + 7) * BQ_PAD + r] = x.s7;
        }
#endif
        long lo, hi;
        row_range(i, sq, sk, wl, wr, &lo, &hi);
        if (lo <= hi) {
            kb = min(kb, lo);
            ke = max(ke, hi + 1);
        }
    }
    for (int x = 0; x < nmv * VW * DV_PAD; x++) ot[x] = 0.0f;
    if (kv_splits > 1) {
        const long s0 = (long)split * kv_split_len;
        kb = max(kb, s0);
        ke = min(ke, s0 + kv_split_len);
    }

    __global const ELEM(IO) *kbase = AT_CONST(ELEM(IO), k, k_off) + hkv * k_sh;
    __global const ELEM(IO) *vbase = AT_CONST(ELEM(IO), v, v_off) + hkv * v_sh;
    __global const int *pages = AT_CONST(int, block_table, bt_off) + b * bt_stride;
    const kv_rows kv = {kv_layout, page_size, num_pages, kv_layout == 0 ? b : 0, k_tok0,
                        k_sb, k_st, v_sb, v_st, pages};
    const float inv_cap = softcap > 0.0f ? 1.0f / softcap : 0.0f;

    for (long k0 = kb; k0 < ke; k0 += BLOCK_K) {
        const int nk = (int)min(ke - k0, (long)BLOCK_K);
        const int nk_pad = (nk + S_KEYS - 1) / S_KEYS * S_KEYS;

        /* Where the tile's K and V rows are (wide: copied to local as f32). */
        for (int n = 0; n < nk; n++) {
            long ke_, ve_;
            key_rows(k0 + n, &kv, &ke_, &ve_);
#if NARROW
            koff[n] = ke_;
            voff[n] = ve_;
#else
            for (int d = 0; d < DQK; d += IO_STEP)
                vstore8(LOAD8(IO, kbase, ke_ + d), 0, kt + n * DQK_PAD + d);
            for (int d = 0; d < DV; d += IO_STEP)
                vstore8(LOAD8(IO, vbase, ve_ + d), 0, vt + n * DV_PAD + d);
            for (int d = DV; d < DV_PAD; d++) vt[n * DV_PAD + d] = 0.0f;
#endif
        }
#if NARROW
        /* Where the rows PF_TILES tiles ahead are: narrow_tile fetches them
         * into the cache while it computes this tile, a line per step. */
        int npf = 0;
        if (PF_TILES) {
            const long k1 = k0 + (long)PF_TILES * BLOCK_K;
            npf = (int)clamp(ke - k1, 0L, (long)BLOCK_K);
            for (int n = 0; n < npf; n++) {
                long kp, vp;
                key_rows(k1 + n, &kv, &kp, &vp);
                pkoff[n] = kp;
                pvoff[n] = vp;
            }
        }
#endif
#if !NARROW
        /* Padding keys of the last S block: zero, so their scores stay finite. */
        for (int n = nk; n < nk_pad; n++)
            for (int d = 0; d < DQK; d++) kt[n * DQK_PAD + d] = 0.0f;
#endif

        /* Mask terms relative to the tile; exact in f32 since |values| ≤ nk
         * (positions further out are clamped, which changes no comparison). */
        int need_mask = 0;
        for (int r = 0; r < nmv * VW; r++) {
            if (r >= nrows) {
                rs->lo[r] = 1.0f; /* padding rows see nothing */
                rs->hi[r] = 0.0f;
                rs->diag[r] = 0.0f;
                continue;
            }
            long lo, hi;
            row_range(rs->tok[r], sq, sk, wl, wr, &lo, &hi);
            lo -= k0;
            hi -= k0;
            if (lo > 0 || hi < nk - 1) need_mask = 1;
            rs->lo[r] = (float)clamp(lo, 0L, (long)nk);
            rs->hi[r] = (float)clamp(hi, -1L, (long)nk - 1);
            rs->diag[r] = (float)(rs->tok[r] + sk - sq - k0);
        }

#if NARROW
        narrow_tile(qt, st, ot, rs, kbase, vbase, koff, voff, nk, pkoff, pvoff, npf, softcap,
                    inv_cap, need_mask);
#else
        /* S = Q·Kᵀ, register blocks of 3, 2 or 1 row vectors. */
        for (int n0 = 0; n0 < nk_pad; n0 += S_KEYS) {
            int m0 = 0;
            for (; m0 + 3 <= nmv; m0 += 3)
                s_block(3, qt + m0 * VW, kt + n0 * DQK_PAD, st + n0 * BQ_PAD + m0 * VW);
            if (nmv - m0 == 2)
                s_block(2, qt + m0 * VW, kt + n0 * DQK_PAD, st + n0 * BQ_PAD + m0 * VW);
            else if (nmv - m0 == 1)
                s_block(1, qt + m0 * VW, kt + n0 * DQK_PAD, st + n0 * BQ_PAD + m0 * VW);
        }

        /* Online softmax, vertical: rows in lanes, keys down St. */
        const int transform = need_mask || SOFTCAP || ALIBI;
        for (int mv = 0; mv < nmv; mv++) {
            const int r = mv * VW;
            __local float *col = st + r;
            float16 mx = (float16)(-INFINITY);
            if (transform) {
                const float16 lo = vload16(0, rs->lo + r), hi = vload16(0, rs->hi + r);
                const float16 diag = vload16(0, rs->diag + r), slope = vload16(0, rs->slope + r);
                for (int n = 0; n < nk; n++) {
                    float16 s = vload16(0, col + n * BQ_PAD);
                    if (SOFTCAP) s = softcap * tanh(s * inv_cap);
                    if (ALIBI) s -= slope * fabs(diag - (float)n);
                    const float16 fn = (float16)n;
                    s = select((float16)(-INFINITY), s, (fn >= lo) & (fn <= hi));
                    vstore16(s, 0, col + n * BQ_PAD);
                    mx = fmax(mx, s);
                }
            } else {
                for (int n = 0; n < nk; n++) mx = fmax(mx, vload16(0, col + n * BQ_PAD));
            }
            const float16 m_old = vload16(0, rs->m + r);
            const float16 m_new = fmax(m_old, mx);
            /* A row that has seen no key keeps m = −inf; subtracting 0
             * instead keeps its p at exp(−inf) = 0 rather than NaN. */
            const float16 m_use = select(m_new, (float16)0.0f, m_new == (float16)(-INFINITY));
            const float16 alpha = exp(m_old - m_use);
            float16 sum = (float16)0.0f;
            for (int n = 0; n < nk; n++) {
                const float16 p = exp(vload16(0, col + n * BQ_PAD) - m_use);
                vstore16(p, 0, col + n * BQ_PAD);
                sum += p;
            }
            vstore16(m_new, 0, rs->m + r);
            vstore16(fma(vload16(0, rs->l + r), alpha, sum), 0, rs->l + r);
            vstore16(alpha, 0, rs->alpha + r);
        }

        /* O = α·O + P·V. Where some row does not see some key and some V
         * element is not finite, each row multiplies only the V rows it
         * sees: its P is 0 elsewhere, but 0·NaN is NaN, and a V row outside
         * a row's mask must not reach it. */
        const int per_row = need_mask && !tile_v_finite(vt, nk);
        for (int x0 = 0; x0 < DV_PAD; x0 += PV_NV * VW) {
            int r = 0;
            if (per_row) {
                for (; r < nrows; r++) {
                    const int lo = (int)rs->lo[r], hi = (int)rs->hi[r];
                    pv_block(1, ot + r * DV_PAD + x0, rs->alpha + r, st + lo * BQ_PAD + r,
                             vt + lo * DV_PAD + x0, hi - lo + 1);
                }
                continue;
            }
            for (; r + PV_ROWS <= nrows; r += PV_ROWS)
                pv_block(PV_ROWS, ot + r * DV_PAD + x0, rs->alpha + r, st + r, vt + x0, nk);
            for (; r < nrows; r++)
                pv_block(1, ot + r * DV_PAD + x0, rs->alpha + r, st + r, vt + x0, nk);
        }
#endif
    }

    /* Results: final O and LSE, or this split's partials. */
    __global float *po = AT(float, part, part_off);
    __global float *pl = po + (long)kv_splits * part_rows * hq * DV_PAD;
    __global ELEM(IO) *ob = AT(ELEM(IO), o, o_off);
    for (int r = 0; r < nrows; r++) {
        const long i = rs->tok[r], h = rs->head[r], grow = q_row0 + i;
        const float m = rs->m[r], lsum = rs->l[r];
        __local const float *acc = ot + r * DV_PAD;
        /* No visible key, or only keys of score −inf: every p was 0 and ℓ
         * stayed 0. A NaN or +inf score left ℓ NaN (p = NaN), so such a row
         * takes the arithmetic below, which keeps it NaN. */
        const int empty = m == -INFINITY && lsum == 0.0f;
        if (kv_splits > 1) {
            const long prow = ((long)split * part_rows + grow) * hq + h;
            if (empty) {
                pl[prow] = -INFINITY; /* the merge skips this split's O */
                continue;
            }
            pl[prow] = m + log(lsum);
            const float inv = 1.0f / lsum;
            for (int d = 0; d < DV_PAD; d += VW)
                vstore16(vload16(0, acc + d) * inv, 0, po + prow * DV_PAD + d);
            continue;
        }
        const long oe = o_elem0 + i * o_st + h * o_sh;
        if (empty) {
            /* O = 0, LSE = −inf, written as such: the accumulator may hold
             * 0·NaN from the V row of a key of score −inf. */
            for (int d = 0; d < DV; d += IO_STEP) STORE8(IO, ob, oe + d, (float8)0.0f);
            if (has_lse) AT(float, lse, lse_off)[h * lse_sh + grow * lse_st] = -INFINITY;
            continue;
        }
        /* The sink joins the denominator only; rebase on the larger of m and
         * σ so neither exponential overflows. */
        float top = m, denom = lsum;
        if (has_sinks) {
            const float sink = AT_CONST(float, sinks, sinks_off)[h];
            top = fmax(top, sink);
            denom = lsum * exp(m - top) + exp(sink - top);
        }
        const float f = exp(m - top) / denom, row_lse = top + log(denom);
        for (int d = 0; d < DV; d += IO_STEP) STORE8(IO, ob, oe + d, vload8(0, acc + d) * f);
        if (has_lse) AT(float, lse, lse_off)[h * lse_sh + grow * lse_st] = row_lse;
    }
}
