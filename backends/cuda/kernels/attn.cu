/* Attention kernels. Two of them, one compiled per variant:
 *
 * attn_mma (-DMMA=1): f16/bf16 on tensor cores, the FlashAttention-2
 *   recipe. One block per plan work item (sequence, head group, query tile,
 *   KV split); WARPS_M × WARPS_N warps.
 *   - Warp w owns row band wm = w % WARPS_M (BQ / WARPS_M rows, MR m16
 *     tiles) and Dv slice wn = w / WARPS_M (DVW = DV_PAD / WARPS_N
 *     columns). Warps sharing a band each compute the band's S = Q·Kᵀ
 *     themselves (no P through shared memory, no cross-warp reduction); the
 *     planner only gives WARPS_N > 1 to short tiles (decode) and to head
 *     dims whose O would not fit one warp's registers (MLA).
 *   - Shared memory: Q [BQ][DQK_PAD], then STAGES × (K [BK][DQK_PAD],
 *     V [BK][DV_PAD]); rows of 16-byte chunks XOR-swizzled (tile_at) so
 *     ldmatrix reads are free of bank conflicts. Everything arrives by
 *     cp_async16 (zero-filled: rows past the tile, keys outside [kb, ke),
 *     keys of a bad page, head-dim padding), tile n + 1 loading while tile
 *     n is used when STAGES > 1. Operands whose addresses or strides are
 *     not 16-byte aligned take plain loads instead (a.aligned).
 *   - Per key tile (BK keys, starting at a multiple of BK so a paged tile
 *     lies in one page when page_size is a multiple of BK: one block-table
 *     read per tile), in chunks of KC keys (registers: S is MR·KC/2 floats
 *     per lane): S by ldmatrix (Q: kept in registers when Q_REGS, else
 *     re-read per chunk) and ldmatrix (K) + mma_16816; the score in the
 *     log2 domain (scale·log2e folded in; soft cap, ALiBi); the mask only
 *     where some key of the chunk is hidden from some row of the warp;
 *     online softmax with exp2 (row max over the 4 lanes of a quad); P
 *     re-packed from the S accumulators as A fragments; O += P·V by
 *     ldmatrix_trans (V) + mma_16816.
 *   - Chunks no row of the warp sees are skipped (causal/window bounds);
 *     tiles no row of the block sees are never loaded.
 *   - A key hidden from a row must not reach it even when its V row holds
 *     NaN or inf (0·NaN): masked chunks run P·V on V cleaned of non-finite
 *     elements and count the visible ones with a second mma (pv_chunk).
 *   - Epilogue: row sums over the quad, empty rows (O = 0, LSE = −inf),
 *     sinks, O and LSE stores, or f32 partials when the plan splits KV.
 *   Options: -DIO, -DBQ, -DBK, -DKC, -DWARPS_M, -DWARPS_N, -DSTAGES,
 *   -DDQK, -DDV, -DDQK_PAD, -DDV_PAD, -DQ_REGS.
 *
 * attn_rows (otherwise): one warp per (query row, head, KV split), on FMA
 *   in f32 (IEEE, no TF32): every dtype, head dim and feature; f32
 *   problems and plans without matrix units run it.
 *   A block holds WARPS warps; warp w of block x takes row r = x·WARPS + w
 *   of the [total_q][Hq] rows (global query token r / Hq, head r % Hq), and
 *   blockIdx.y is the KV split. The warp stages its Q row in shared memory
 *   as f32 and walks its visible keys 32 at a time: lane l scores key
 *   j0 + l, the warp's maximum and sum update the online softmax, then for
 *   each of the 32 keys the lanes add p·V over their slice of the Dv
 *   columns (lane l owns columns l, l + 32, ...: coalesced V reads). Only
 *   the keys a row sees are visited ([kb, ke) from the window), so no
 *   masked key's V ever reaches O.
 *   Options: -DIO=<dtype>, -DDQK, -DDV (true head dims), -DDV_PAD (the
 *   plan's row pitch of split-KV partials), -DWARPS.
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
    /* attn_mma only: the plan's packing and work numbering, the ragged-Q
     * tile space (0 for uniform Q) and whether Q, K and V addresses and
     * strides are all 16-byte aligned (cp.async). */
    int pack, head_groups, q_tiles, aligned;
    i64 tile_space;
} attn_args;

XATTN_DEV i64 clampl(i64 x, i64 lo, i64 hi) { return x < lo ? lo : x > hi ? hi : x; }

#if defined(MMA) && MMA
/* ---- attn_mma ---------------------------------------------------------------- */

#define THREADS (WARPS_M * WARPS_N * 32)
#define ROWS_W (BQ / WARPS_M)       /* rows of a warp's band */
#define MR (ROWS_W / 16)            /* m16 tiles of the band */
#define DVW (DV_PAD / WARPS_N)      /* O columns of a warp */
#define NV (DVW / 8)                /* n8 tiles of a warp's O */
#define NS (KC / 8)                 /* n8 tiles of S per chunk */
#define QC (DQK_PAD / 8)            /* 16-byte chunks of a Q or K row */
#define VC (DV_PAD / 8)             /* 16-byte chunks of a V row */
#define Q_ELEMS (BQ * DQK_PAD)
#define K_ELEMS (BK * DQK_PAD)
#define STAGE_ELEMS (BK * (DQK_PAD + DV_PAD))
#ifndef KK_UNROLL
#define KK_UNROLL 2
#endif
/* k-steps of S unrolled at once: more keeps K fragments alive too long. */
constexpr int kk_unroll = KK_UNROLL;
#ifndef MIN_BLOCKS
#define MIN_BLOCKS 1
#endif

#if BQ % (16 * WARPS_M) || BK % KC || KC % 16 || DQK_PAD % 16 || DV_PAD % (8 * WARPS_N)
#error "attn_mma: tile options do not fit the m16n8k16 fragments"
#endif

/* Chunk c of row r of a tile with C chunks per row, swizzled: ldmatrix
 * reads one chunk of 8 consecutive rows at once, which must fall in
 * different banks. Full groups of 8 chunks XOR the row into the chunk;
 * narrower rows XOR what makes 8 rows cover 8 bank groups. */
template <int C> XATTN_DEV int tile_at(int r, int c)
{
    int s = c;
    if (C >= 8) s = c < (C & ~7) ? c ^ (r & 7) : c;
    else if (C == 4) s = c ^ ((r >> 1) & 3);
    else if (C == 2) s = c ^ ((r >> 2) & 1);
    return r * (C * 8) + s * 8;
}

/* 16 bytes to shared memory: by cp.async when the operand is aligned,
 * else by plain loads; zeros when !ok (src is then not read). */
XATTN_DEV void copy16(u16 *dst, const u16 *src, bool ok, int aligned)
{
    if (aligned) {
        cp_async16_zfill(dst, src, ok);
        return;
    }
#pragma unroll
    for (int e = 0; e < 8; e++) dst[e] = ok ? src[e] : (u16)0;
}

/* Where K and V rows of this block's sequence and KV head are. */
struct kv_src {
    const u16 *k, *v;      /* offset by the KV head (and batch when uniform) */
    i64 k_sb, k_st, v_sb, v_st;
    const int *pages;      /* paged: this sequence's block-table row */
    int layout, page_size, num_pages;
    i64 tok0;              /* contiguous layouts: token of key 0 */
};

/* Element offsets of key j's K and V rows, or false for a bad page. */
XATTN_DEV bool kv_rows(const kv_src &s, int j, i64 &ko, i64 &vo)
{
    if (s.layout == KV_PAGED) {
        const int col = j / s.page_size;
        const int page = s.pages[col];
        if (page < 0 || page >= s.num_pages) return false;
        const i64 off = j - (i64)col * s.page_size;
        ko = page * s.k_sb + off * s.k_st;
        vo = page * s.v_sb + off * s.v_st;
        return true;
    }
    ko = (s.tok0 + j) * s.k_st;
    vo = (s.tok0 + j) * s.v_st;
    return true;
}

/* Keys [k0, k0 + BK) into one stage; keys outside [kb, ke) are zeros and
 * not read. With pages holding whole tiles the tile's page is looked up
 * once; otherwise per key (the gather path, any page size). */
XATTN_DEV void load_kv(const kv_src &s, int k0, int kb, int ke, u16 *ks, u16 *vs, int t,
                       int aligned)
{
    const bool one_page = s.layout == KV_PAGED && s.page_size % BK == 0;
    int page = -1;
    i64 in_page = 0;
    if (one_page) {
        const int col = k0 / s.page_size;
        page = s.pages[col];
        in_page = k0 - (i64)col * s.page_size;
    }
    const bool page_ok = page >= 0 && page < s.num_pages;
    for (int e = t; e < BK * QC; e += THREADS) {
        const int key = e / QC, c = e % QC, j = k0 + key;
        i64 ko = 0, vo = 0;
        bool ok = j >= kb && j < ke && c < DQK / 8;
        if (ok && one_page) {
            ok = page_ok;
            ko = page * s.k_sb + (in_page + key) * s.k_st;
        } else if (ok) {
            ok = kv_rows(s, j, ko, vo);
        }
        copy16(ks + tile_at<QC>(key, c), ok ? s.k + ko + c * 8 : s.k, ok, aligned);
    }
    for (int e = t; e < BK * VC; e += THREADS) {
        const int key = e / VC, c = e % VC, j = k0 + key;
        i64 ko = 0, vo = 0;
        bool ok = j >= kb && j < ke && c < DV / 8;
        if (ok && one_page) {
            ok = page_ok;
            vo = page * s.v_sb + (in_page + key) * s.v_st;
        } else if (ok) {
            ok = kv_rows(s, j, ko, vo);
        }
        copy16(vs + tile_at<VC>(key, c), ok ? s.v + vo + c * 8 : s.v, ok, aligned);
    }
}

/* Masked chunks whose V may hold inf or NaN. A key hidden from one row of
 * the band may be seen by another, so its V row is in the tensor core's B
 * operand, and 0·NaN would reach the row that must not see it. There P·V
 * runs on V with every non-finite element replaced by 0 (v_clean), and a
 * second mma counts, per output element, the visible keys whose V element
 * is not finite, by kind: A holds a code per (row, key) (0 hidden, 1 seen
 * with p > 0, 1024 seen with p = 0), B a code per V element (0 finite,
 * 1 +inf, 32 −inf, 1024 NaN). The sum's base-32 digits are the counts
 * (at most 16 per digit): anything from 1024 up is a NaN or 0·inf, both
 * digits below a +inf and a −inf (NaN), one of them ±inf (nonfinite_sum).
 * Integers below 2^24 are exact in the f32 accumulator; above, the sum is
 * NaN whatever it rounds to. */
#if defined(IO_BF16)
#define EXP_BITS 0x7f80u
#define MANT_BITS 0x007fu
#define CODE_ONE 0x3f80u    /* 1.0 */
#define CODE_NEG 0x4200u    /* 32.0 */
#define CODE_NAN 0x4480u    /* 1024.0 */
#else
#define EXP_BITS 0x7c00u
#define MANT_BITS 0x03ffu
#define CODE_ONE 0x3c00u
#define CODE_NEG 0x5000u
#define CODE_NAN 0x6400u
#endif

XATTN_DEV u32 v_code1(u32 h)
{
    if ((h & EXP_BITS) != EXP_BITS) return 0;
    if (h & MANT_BITS) return CODE_NAN;
    return h & 0x8000u ? CODE_NEG : CODE_ONE;
}
/* Codes of the two elements of x, as a B fragment register. */
XATTN_DEV u32 v_code(u32 x) { return v_code1(x & 0xffffu) | v_code1(x >> 16) << 16; }
/* x with its non-finite elements replaced by +0. */
XATTN_DEV u32 v_clean(u32 x)
{
    const u32 lo = (x & EXP_BITS) == EXP_BITS ? 0u : x & 0xffffu;
    const u32 hi = (x >> 16 & EXP_BITS) == EXP_BITS ? 0u : x >> 16;
    return lo | hi << 16;
}
/* The A code of one (row, key): 0 hidden, 1 seen with p > 0 (or NaN),
 * 1024 seen with p = 0. */
XATTN_DEV float a_code(float p, int j, int lo, int hi)
{
    return j < lo || j >= hi ? 0.0f : p == 0.0f ? 1024.0f : 1.0f;
}
/* What the counted non-finite V elements add to an O element. */
XATTN_DEV float nonfinite_sum(float c)
{
    const int n = (int)fminf(c, 1024.0f), pos = n & 31, neg = n >> 5;
    return n >= 1024 || (pos && neg) ? XATTN_NAN : pos ? XATTN_INF : neg ? -XATTN_INF : 0.0f;
}

/* O += P·V over one chunk: the S accumulators (now p) of n-tiles 2kt and
 * 2kt + 1 are the A fragment of k-step kt; V fragments by ldmatrix_trans,
 * matrices (keys +0..7, cols lo), (+8..15, lo), (+0..7, hi), (+8..15, hi).
 * SAFE (masked chunks): where a V fragment holds inf or NaN, the fragment
 * cleaned of them and those counted over the keys each row sees (v_code). kc is the chunk's first key in
 * the stage, kc0 its key index. */
template <bool SAFE>
XATTN_DEV void pv_chunk(float (&o)[MR][NV][4], const float (&s)[MR][NS][4], const u16 *vs, int kc,
                        int kc0, int wn, int lane, const int (&lo)[MR][2],
                        const int (&hi)[MR][2])
{
#pragma unroll
    for (int kt = 0; kt < KC / 16; kt++) {
        u32 pa[MR][4];
#pragma unroll
        for (int mr = 0; mr < MR; mr++) {
            pa[mr][0] = PACK2(IO, s[mr][2 * kt][0], s[mr][2 * kt][1]);
            pa[mr][1] = PACK2(IO, s[mr][2 * kt][2], s[mr][2 * kt][3]);
            pa[mr][2] = PACK2(IO, s[mr][2 * kt + 1][0], s[mr][2 * kt + 1][1]);
            pa[mr][3] = PACK2(IO, s[mr][2 * kt + 1][2], s[mr][2 * kt + 1][3]);
        }
        const int vkey = kc + kt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
#pragma unroll
        for (int n2 = 0; n2 < (NV + 1) / 2; n2++) {
            const bool pair = 2 * n2 + 1 < NV;
            const int vc = wn * (DVW / 8) + 2 * n2;
            u32 vf[4];
            if (pair) {
                ldmatrix_x4_trans(vf, vs + tile_at<VC>(vkey, vc + (lane >> 4)));
            } else {
                ldmatrix_x2_trans(vf, vs + tile_at<VC>(vkey, vc));
                vf[2] = vf[3] = 0;
            }
            bool bad = false;
            if (SAFE) {
                bool mine = false;
#pragma unroll
                for (int r = 0; r < 4; r++) mine |= v_code(vf[r]) != 0;
                bad = __ballot_sync(FULL_MASK, mine) != 0;
            }
#pragma unroll
            for (int h = 0; h < 2; h++) {
                if (h == 1 && !pair) break;
                const u32 b[2] = {bad ? v_clean(vf[2 * h]) : vf[2 * h],
                                  bad ? v_clean(vf[2 * h + 1]) : vf[2 * h + 1]};
#pragma unroll
                for (int mr = 0; mr < MR; mr++) MMA_16816(IO, o[mr][2 * n2 + h], pa[mr], b);
                if (!bad) continue; /* uniform across the warp */
                const u32 bc[2] = {v_code(vf[2 * h]), v_code(vf[2 * h + 1])};
#pragma unroll
                for (int mr = 0; mr < MR; mr++) {
                    /* A codes, register r: row g (r even) or g + 8, keys c,
                     * c + 1 (r < 2) or c + 8, c + 9, c = (lane % 4)·2. */
                    u32 ac[4];
#pragma unroll
                    for (int r = 0; r < 4; r++) {
                        const int hf = r & 1, nt = 2 * kt + (r >> 1);
                        const int j = kc0 + nt * 8 + (lane & 3) * 2;
                        ac[r] = PACK2(IO, a_code(s[mr][nt][2 * hf], j, lo[mr][hf], hi[mr][hf]),
                                      a_code(s[mr][nt][2 * hf + 1], j + 1, lo[mr][hf],
                                             hi[mr][hf]));
                    }
                    float cnt[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                    MMA_16816(IO, cnt, ac, bc);
#pragma unroll
                    for (int i = 0; i < 4; i++) o[mr][2 * n2 + h][i] += nonfinite_sum(cnt[i]);
                }
            }
        }
    }
}

/* Ragged Q: the run numbers its tiles itself (attn.c, tile_space): sequence
 * b's tiles from ⌊cu_q[b]·pack / BQ⌋ + b on. Work item of group r, or −1. */
XATTN_DEV i64 ragged_work(const attn_args &a, i64 r)
{
    const i64 s = r % a.kv_splits, v = r / a.kv_splits % a.tile_space;
    const i64 g = r / a.kv_splits / a.tile_space;
    int lo = 0, hi = a.batch - 1;
    while (lo < hi) {
        const int mid = lo + (hi - lo + 1) / 2;
        if (clampl(a.cu_q[mid], 0, a.total_q) * a.pack / BQ + mid <= v) lo = mid;
        else hi = mid - 1;
    }
    const i64 c0 = clampl(a.cu_q[lo], 0, a.total_q);
    const i64 len = min(clampl(a.cu_q[lo + 1], c0, a.total_q) - c0, (i64)a.seqlen_q);
    const i64 t = v - (c0 * a.pack / BQ + lo);
    if (t < 0 || t >= a.q_tiles || t * BQ >= len * a.pack) return -1;
    return (((i64)lo * a.head_groups + g) * a.q_tiles + t) * a.kv_splits + s;
}

extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS) attn_mma(attn_args a)
{
    XATTN_DYNAMIC_SMEM(smem);
    u16 *q_s = (u16 *)smem;
    u16 *kv_s = q_s + Q_ELEMS;
    const int t = threadIdx.x, lane = t % 32, warp = t / 32;
    const int wm = warp % WARPS_M, wn = warp / WARPS_M;

    i64 w = blockIdx.x;
    if (a.tile_space > 0) {
        w = ragged_work(a, w);
        if (w < 0) return; /* the whole block: w is uniform across it */
    }
    const int split = (int)(w % a.kv_splits);
    w /= a.kv_splits;
    const i64 tile = w % a.q_tiles;
    w /= a.q_tiles;
    const int g = (int)(w % a.head_groups);
    const i64 b = w / a.head_groups;

    /* The sequence, index entries clamped to the plan's maxima. */
    i64 sq, q_row0, q_elem0, o_elem0, sk, k_tok0 = 0;
    if (a.q_ragged) {
        /* Rows past B·Sq would also overrun the split-KV partials. */
        const i64 rows = min(a.total_q, (i64)a.batch * a.seqlen_q);
        const i64 c0 = clampl(a.cu_q[b], 0, rows);
        const i64 c1 = clampl(a.cu_q[b + 1], c0, rows);
        sq = min(c1 - c0, (i64)a.seqlen_q);
        q_row0 = c0;
        q_elem0 = c0 * a.q_st;
        o_elem0 = c0 * a.o_st;
    } else {
        sq = a.seqlen_q;
        q_row0 = b * a.seqlen_q;
        q_elem0 = b * a.q_sb;
        o_elem0 = b * a.o_sb;
    }
    if (a.kv_layout == KV_RAGGED) {
        const i64 c0 = clampl(a.cu_k[b], 0, a.total_k);
        sk = clampl((i64)a.cu_k[b + 1] - c0, 0, min((i64)a.seqlen_k, a.total_k - c0));
        k_tok0 = c0;
    } else if (a.kv_layout == KV_PAGED) {
        const i64 cap = min((i64)a.seqlen_k, (i64)a.max_pages * a.page_size);
        sk = clampl(a.seqlens_k[b], 0, cap);
    } else {
        sk = a.seqlen_k;
    }

    const i64 rows_total = sq * a.pack;
    const i64 r0 = tile * BQ;
    if (r0 >= rows_total) return; /* uniform: the whole block leaves */
    const int nrows = (int)min(rows_total - r0, (i64)BQ);
    const int hkv = g * a.pack / a.group;
    const i64 diag0 = sk - sq; /* bottom-right alignment */

    /* Keys any row of the tile sees: the window edges grow with the token,
     * so the first row gives the start and the last row the end. */
    const i64 i_first = r0 / a.pack, i_last = (r0 + nrows - 1) / a.pack;
    i64 kb = a.wl >= 0 ? max(i_first + diag0 - a.wl, (i64)0) : 0;
    i64 ke = a.wr >= 0 ? min(i_last + diag0 + a.wr + 1, sk) : sk;
    if (a.kv_splits > 1) {
        kb = max(kb, (i64)split * a.split_len);
        ke = min(ke, (i64)(split + 1) * a.split_len);
    }
    if (ke < kb) ke = kb;
    /* Key indices fit an int from here on (0 ≤ kb ≤ ke ≤ sk ≤ seqlen_k). */
    const int kbi = (int)kb, kei = (int)ke;

    /* The lane's rows: band row wrow0 + mr·16 + lane/4 (+ 8 for hf = 1).
     * [lo, hi) are the keys each sees (empty past the tile), diag its
     * diagonal, slope its ALiBi slope in the log2 domain. */
    const int wrow0 = wm * ROWS_W;
    int row_lo[MR][2], row_hi[MR][2], row_diag[MR][2];
    float row_slope[MR][2];
#pragma unroll
    for (int mr = 0; mr < MR; mr++)
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            const int row = wrow0 + mr * 16 + lane / 4 + hf * 8;
            row_lo[mr][hf] = row_hi[mr][hf] = row_diag[mr][hf] = 0;
            row_slope[mr][hf] = 0.0f;
            if (row >= nrows) continue;
            const i64 flat = r0 + row;
            const i64 diag = flat / a.pack + diag0;
            const i64 lo = a.wl >= 0 ? max(diag - a.wl, kb) : kb;
            const i64 hi = a.wr >= 0 ? min(diag + a.wr + 1, ke) : ke;
            row_lo[mr][hf] = (int)min(lo, ke);
            row_hi[mr][hf] = (int)max(hi, min(lo, ke));
            row_diag[mr][hf] = (int)diag;
            if (a.has_alibi)
                row_slope[mr][hf] = a.slopes[(i64)g * a.pack + flat % a.pack] * XATTN_LOG2E;
        }
    /* The warp's keys: [w_kb, w_ke) seen by some row of its band, and
     * [f_kb, f_ke) seen by all of them (no mask needed there). */
    int w_kb = 0, w_ke = 0, f_kb = 0, f_ke = 0;
    {
        const int wrows = min(max(nrows - wrow0, 0), ROWS_W);
        if (wrows > 0) {
            const i64 wf = (r0 + wrow0) / a.pack + diag0;
            const i64 wla = (r0 + wrow0 + wrows - 1) / a.pack + diag0;
            w_kb = (int)(a.wl >= 0 ? clampl(wf - a.wl, kb, ke) : kb);
            w_ke = (int)(a.wr >= 0 ? clampl(wla + a.wr + 1, kb, ke) : ke);
            f_kb = (int)(a.wl >= 0 ? clampl(wla - a.wl, kb, ke) : kb);
            f_ke = (int)(a.wr >= 0 ? clampl(wf + a.wr + 1, kb, ke) : ke);
        }
    }

    kv_src src;
    src.layout = a.kv_layout;
    src.page_size = a.page_size;
    src.num_pages = a.num_pages;
    src.tok0 = k_tok0;
    src.k_sb = a.k_sb;
    src.k_st = a.k_st;
    src.v_sb = a.v_sb;
    src.v_st = a.v_st;
    src.pages = a.block_table + (a.kv_layout == KV_PAGED ? b * a.bt_stride : 0);
    const i64 kbatch = a.kv_layout == KV_UNIFORM ? b : 0;
    src.k = (const u16 *)a.k + kbatch * a.k_sb + hkv * a.k_sh;
    src.v = (const u16 *)a.v + kbatch * a.v_sb + hkv * a.v_sh;

    const float scale2 = a.scale * XATTN_LOG2E;
    const bool capped = a.softcap > 0.0f;
    const float cap_in = capped ? a.scale / a.softcap : 0.0f;
    const float cap_out = a.softcap * XATTN_LOG2E;

    float o[MR][NV][4];
    float m[MR][2], l[MR][2];
#pragma unroll
    for (int mr = 0; mr < MR; mr++) {
#pragma unroll
        for (int nv = 0; nv < NV; nv++)
#pragma unroll
            for (int i = 0; i < 4; i++) o[mr][nv][i] = 0.0f;
        m[mr][0] = m[mr][1] = -XATTN_INF;
        l[mr][0] = l[mr][1] = 0.0f;
    }
#if Q_REGS
    u32 qf[MR][DQK_PAD / 16][4];
#endif

    const int ntiles = kbi < kei ? (kei - 1) / BK - kbi / BK + 1 : 0;
    const int kt0 = kbi / BK * BK;
    if (ntiles > 0) {
        /* Q, rows past the tile and head-dim padding zero; it travels with
         * the first K/V tile. */
        const u16 *qb = (const u16 *)a.q + q_elem0;
        for (int e = t; e < BQ * QC; e += THREADS) {
            const int row = e / QC, c = e % QC;
            const bool ok = row < nrows && c < DQK / 8;
            const u16 *p = qb;
            if (ok) {
                const i64 flat = r0 + row;
                p = qb + (flat / a.pack) * a.q_st + ((i64)g * a.pack + flat % a.pack) * a.q_sh +
                    c * 8;
            }
            copy16(q_s + tile_at<QC>(row, c), p, ok, a.aligned);
        }
        load_kv(src, kt0, kbi, kei, kv_s, kv_s + K_ELEMS, t, a.aligned);
        cp_async_commit();
    }

    for (int n = 0; n < ntiles; n++) {
        const int k0 = kt0 + n * BK;
#if STAGES > 1
        if (n + 1 < ntiles) {
            u16 *next = kv_s + ((n + 1) % STAGES) * STAGE_ELEMS;
            load_kv(src, k0 + BK, kbi, kei, next, next + K_ELEMS, t, a.aligned);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        const u16 *ks = kv_s + (n % STAGES) * STAGE_ELEMS;
#else
        if (n > 0) { /* the stage is free: the previous tile's barrier passed */
            load_kv(src, k0, kbi, kei, kv_s, kv_s + K_ELEMS, t, a.aligned);
            cp_async_commit();
        }
        cp_async_wait<0>();
        const u16 *ks = kv_s;
#endif
        const u16 *vs = ks + K_ELEMS;
        __syncthreads(); /* the tile (and Q) landed for every thread */
#if Q_REGS
        if (n == 0) {
#pragma unroll
            for (int mr = 0; mr < MR; mr++)
#pragma unroll
                for (int kk = 0; kk < DQK_PAD / 16; kk++)
                    ldmatrix_x4(qf[mr][kk],
                                q_s + tile_at<QC>(wrow0 + mr * 16 + (lane & 7) +
                                                      ((lane >> 3) & 1) * 8,
                                                  kk * 2 + (lane >> 4)));
        }
#endif

        for (int kc = 0; kc < BK; kc += KC) {
            const int kc0 = k0 + kc;
            if (kc0 + KC <= w_kb || kc0 >= w_ke) continue; /* uniform across the warp */
            const bool masked = !(kc0 >= f_kb && kc0 + KC <= f_ke);

            /* S = Q·Kᵀ over the chunk. K fragments: matrices (keys +0..7,
             * dims lo), (+0..7, hi), (+8..15, lo), (+8..15, hi). */
            float s[MR][NS][4];
#pragma unroll
            for (int mr = 0; mr < MR; mr++)
#pragma unroll
                for (int nt = 0; nt < NS; nt++)
#pragma unroll
                    for (int i = 0; i < 4; i++) s[mr][nt][i] = 0.0f;
#if Q_REGS
#pragma unroll
#else
#pragma unroll kk_unroll
#endif
            for (int kk = 0; kk < DQK_PAD / 16; kk++) {
                u32 qa[MR][4];
#pragma unroll
                for (int mr = 0; mr < MR; mr++) {
#if Q_REGS
#pragma unroll
                    for (int i = 0; i < 4; i++) qa[mr][i] = qf[mr][kk][i];
#else
                    ldmatrix_x4(qa[mr], q_s + tile_at<QC>(wrow0 + mr * 16 + (lane & 7) +
                                                              ((lane >> 3) & 1) * 8,
                                                          kk * 2 + (lane >> 4)));
#endif
                }
#pragma unroll
                for (int n2 = 0; n2 < NS / 2; n2++) {
                    u32 kf[4];
                    ldmatrix_x4(kf, ks + tile_at<QC>(kc + n2 * 16 + (lane & 7) + (lane >> 4) * 8,
                                                     kk * 2 + ((lane >> 3) & 1)));
                    const u32 b0[2] = {kf[0], kf[1]}, b1[2] = {kf[2], kf[3]};
#pragma unroll
                    for (int mr = 0; mr < MR; mr++) {
                        MMA_16816(IO, s[mr][2 * n2], qa[mr], b0);
                        MMA_16816(IO, s[mr][2 * n2 + 1], qa[mr], b1);
                    }
                }
            }

            /* Scores in the log2 domain, the mask, the online softmax. */
#pragma unroll
            for (int mr = 0; mr < MR; mr++) {
#pragma unroll
                for (int hf = 0; hf < 2; hf++) {
                    float mx = -XATTN_INF;
#pragma unroll
                    for (int nt = 0; nt < NS; nt++)
#pragma unroll
                        for (int e = 0; e < 2; e++) {
                            const int j = kc0 + nt * 8 + (lane & 3) * 2 + e;
                            float x = s[mr][nt][2 * hf + e];
                            x = capped ? cap_out * tanhf(x * cap_in) : x * scale2;
                            if (a.has_alibi)
                                x -= row_slope[mr][hf] * fabsf((float)((i64)row_diag[mr][hf] - j));
                            if (masked && (j < row_lo[mr][hf] || j >= row_hi[mr][hf]))
                                x = -XATTN_INF;
                            s[mr][nt][2 * hf + e] = x;
                            mx = fmaxf(mx, x);
                        }
                    /* fmaxf drops a NaN, but its p below is then NaN, and so is ℓ. */
                    mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 1));
                    mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 2));
                    const float m_new = fmaxf(m[mr][hf], mx);
                    /* A row that has seen no key yet subtracts 0: exp2(−inf) = 0. */
                    const float m_use = m_new == -XATTN_INF ? 0.0f : m_new;
                    const float alpha = exp2f(m[mr][hf] - m_use);
                    m[mr][hf] = m_new;
                    float sum = 0.0f;
#pragma unroll
                    for (int nt = 0; nt < NS; nt++)
#pragma unroll
                        for (int e = 0; e < 2; e++) {
                            const float p = exp2f(s[mr][nt][2 * hf + e] - m_use);
                            s[mr][nt][2 * hf + e] = p;
                            sum += p;
                        }
                    l[mr][hf] = l[mr][hf] * alpha + sum;
#pragma unroll
                    for (int nv = 0; nv < NV; nv++) {
                        o[mr][nv][2 * hf] *= alpha;
                        o[mr][nv][2 * hf + 1] *= alpha;
                    }
                }
            }

            if (masked)
                pv_chunk<true>(o, s, vs, kc, kc0, wn, lane, row_lo, row_hi);
            else
                pv_chunk<false>(o, s, vs, kc, kc0, wn, lane, row_lo, row_hi);
        }
        __syncthreads(); /* everyone is done with this stage */
    }

    /* Epilogue: ℓ over the quad, then O (this warp's columns) and LSE. */
    const i64 part_rows = (i64)a.batch * a.seqlen_q;
    float *part_lse = a.part + (i64)a.kv_splits * part_rows * a.hq * DV_PAD;
#pragma unroll
    for (int mr = 0; mr < MR; mr++)
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            float lt = l[mr][hf];
            lt += __shfl_xor_sync(FULL_MASK, lt, 1);
            lt += __shfl_xor_sync(FULL_MASK, lt, 2);
            const int row = wrow0 + mr * 16 + lane / 4 + hf * 8;
            if (row >= nrows) continue;
            const i64 flat = r0 + row, tok = flat / a.pack;
            const i64 h = (i64)g * a.pack + flat % a.pack, grow = q_row0 + tok;
            const float mm = m[mr][hf];
            /* No visible key, or only keys of score −inf: ℓ stayed 0. A NaN
             * or +inf score left ℓ NaN, and such a row stays NaN below. */
            const bool empty = mm == -XATTN_INF && lt == 0.0f;
            const bool lse_lane = wn == 0 && (lane & 3) == 0;
            if (a.kv_splits > 1) {
                const i64 prow = ((i64)split * part_rows + grow) * a.hq + h;
                float *po = a.part + prow * DV_PAD;
#pragma unroll
                for (int nv = 0; nv < NV; nv++) {
                    const int col = wn * DVW + nv * 8 + (lane & 3) * 2;
                    po[col] = empty ? 0.0f : o[mr][nv][2 * hf] / lt;
                    po[col + 1] = empty ? 0.0f : o[mr][nv][2 * hf + 1] / lt;
                }
                if (lse_lane) part_lse[prow] = empty ? -XATTN_INF : (mm + log2f(lt)) * XATTN_LN2;
                continue;
            }
            /* The sink joins the denominator only; rebase on the larger of
             * m and σ so neither exponential overflows. */
            float top = mm, denom = lt;
            if (a.has_sinks && !empty) {
                const float sink = a.sinks[h] * XATTN_LOG2E;
                top = fmaxf(mm, sink);
                denom = lt * exp2f(mm - top) + exp2f(sink - top);
            }
            const float f = empty ? 0.0f : exp2f(mm - top) / denom;
            ELEM(IO) *op = a.o + o_elem0 + tok * a.o_st + h * a.o_sh;
#pragma unroll
            for (int nv = 0; nv < NV; nv++) {
                const int col = wn * DVW + nv * 8 + (lane & 3) * 2;
                if (col >= DV) continue;
                /* O = 0 written as such for an empty row: o may hold 0·NaN. */
                STORE(IO, op, col, empty ? 0.0f : o[mr][nv][2 * hf] * f);
                STORE(IO, op, col + 1, empty ? 0.0f : o[mr][nv][2 * hf + 1] * f);
            }
            if (a.has_lse && lse_lane)
                a.lse[h * a.lse_sh + grow * a.lse_st] =
                    empty ? -XATTN_INF : (top + log2f(denom)) * XATTN_LN2;
        }
}
XATTN_EXPORT(attn_mma)

#else /* attn_rows */

#define O_PER_LANE ((DV + 31) / 32)

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

extern "C" __global__ void __launch_bounds__(WARPS * 32, 1) attn_rows(attn_args a)
{
    __shared__ float q_s[WARPS][DQK];
    const int lane = threadIdx.x % 32, wid = threadIdx.x / 32;
    const i64 r = (i64)blockIdx.x * WARPS + wid;
    const int split = blockIdx.y;
    if (r >= a.total_q * a.hq) return; /* the warp leaves whole: r is uniform across it */
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
    for (int d = lane; d < DQK; d += 32) q_s[wid][d] = LOAD(IO, qp, d);
    __syncwarp();
    const float slope = a.has_alibi ? a.slopes[h] : 0.0f;

    float acc[O_PER_LANE];
#pragma unroll
    for (int c = 0; c < O_PER_LANE; c++) acc[c] = 0.0f;
    float m = -XATTN_INF, l = 0.0f;
    for (i64 j0 = kb; j0 < ke; j0 += 32) {
        const i64 j = j0 + lane;
        float s = -XATTN_INF;
        if (j < ke) {
            const i64 row = kv_row(a, pages, tok0, j, 0);
            float dot = 0.0f;
            if (row >= 0)
                for (int d = 0; d < DQK; d++) dot += q_s[wid][d] * LOAD(IO, kp, row + d);
            s = dot * a.scale;
            if (a.softcap > 0.0f) s = a.softcap * tanhf(s / a.softcap);
            if (a.has_alibi) s -= slope * fabsf((float)(diag - j));
        }
        /* fmaxf drops a NaN, but p below is then NaN and so is ℓ. */
        const float m_new = fmaxf(m, warp_max(s));
        const float m_use = m_new == -XATTN_INF ? 0.0f : m_new;
        const float alpha = expf(m - m_use);
        const float p = expf(s - m_use);
        l = l * alpha + warp_sum(p);
        m = m_new;
    #pragma unroll
    for (int c = 0; c < O_PER_LANE; c++) acc[c] *= alpha;
        const int nk = ke - j0 < 32 ? (int)(ke - j0) : 32;
        for (int t = 0; t < nk; t++) {
            const float pt = __shfl_sync(FULL_MASK, p, t);
            const i64 row = kv_row(a, pages, tok0, j0 + t, 1);
            if (row < 0) continue; /* zeros: adds nothing */
        #pragma unroll
    for (int c = 0; c < O_PER_LANE; c++) {
                const int d = lane + 32 * c;
                if (d < DV) acc[c] += pt * LOAD(IO, vp, row + d);
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
        float *po = a.part + prow * DV_PAD;
    #pragma unroll
    for (int c = 0; c < O_PER_LANE; c++) {
            const int d = lane + 32 * c;
            if (d < DV) po[d] = empty ? 0.0f : acc[c] / l;
        }
        if (lane == 0) {
            float *pl = a.part + (i64)a.kv_splits * part_rows * a.hq * DV_PAD;
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
        const int d = lane + 32 * c;
        /* O = 0 written as such for an empty row: acc may hold 0·NaN. */
        if (d < DV) STORE(IO, op, d, empty ? 0.0f : acc[c] * f);
    }
    if (a.has_lse && lane == 0)
        a.lse[h * a.lse_sh + grow * a.lse_st] = empty ? -XATTN_INF : top + logf(denom);
}
XATTN_EXPORT(attn_rows)

#endif
