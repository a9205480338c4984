/* MoE expert GEMMs, CPU style (PoCL): work-groups of one work-item, each
 * computing a tile of BM rows × BN columns of one expert with
 * explicit float16 vectors.
 *
 * Both GEMMs are C[rows, N] = A[rows, K] · W_eᵀ with W_e [N, K], K
 * contiguous. The microkernel keeps rows in vector lanes: LANES rows of A
 * are transposed into __local scratch (at[k] is a float16 holding element k
 * of 16 rows), and each weight element is broadcast against it, so a
 * register block of NW weight rows costs one vector load and NW broadcasts
 * per NW FMAs, and no lane reduction is ever needed. The weight rows of a
 * register block are first converted to f32 in a __local panel, which stays
 * in L1 while every row group of the tile passes over it.
 *
 * Loops, outermost first: K chunks of KC (the A chunk of the tile, all its
 * rows, is transposed once and stays in L2 for every register block), then
 * register blocks of columns (convert the panel), then row groups of LANES
 * rows (accumulate over the chunk). Between chunks the unreduced sums wait
 * in __local part[]. With local size 1 __local memory is just a cheap
 * per-work-group scratch on PoCL.
 *
 * Tiles of at most FEW_ROWS rows (decode, small batches) would leave most
 * lanes empty and use each weight too few times to pay for a panel: they
 * keep K in the lanes instead (gemm_tile_few), dot products of PAIR_ROWS
 * rows with NW weight rows streamed straight from memory, reduced across
 * lanes once at the end.
 *
 * Work decomposition without reading expert_offsets on the host: dimension
 * 1 of the grid counts virtual row tiles. Expert e owns virtual tiles
 * [T_e, T_e+1) with T_e = floor(o_e / BM) + e (o_e its clamped segment
 * start), at least ceil(len_e / BM) of them, and T_E ≤ rows / BM + E, so
 * a grid of rows / BM + E tiles covers every segment; a tile finds its
 * expert by binary search and returns at once when it has no rows.
 * Dimension 0 counts column tiles.
 *
 * Build options: XDT (x, y dtype), WDT (weights), ACT_GEGLU or ACT_CLAMPED
 * with ACT_ALPHA and ACT_LIMIT (the activation, prelude.cl), W1_IL (W1
 * rows interleaved), HAS_B1 / HAS_B2 with BDT (the expert biases, added in
 * the epilogues), LANES, NW (weight rows of a register block; the gate/up
 * GEMM pairs NW / 2 gate columns with their up columns), FEW_ROWS and
 * PAIR_ROWS (the K-in-lanes path), and per GEMM UP_BM / UP_BN / UP_KC and
 * DOWN_BM / DOWN_BN / DOWN_KC (rows, columns and K chunk of a tile;
 * UP_BN counts gate columns). */

#if LANES != 16
#error "the CPU MoE microkernel is written for float16 vectors"
#endif

#define UP_GROUPS (UP_BM / LANES)
#define DOWN_GROUPS (DOWN_BM / LANES)
#define UP_BLOCKS ((UP_BN + NW / 2 - 1) / (NW / 2))
#define DOWN_BLOCKS ((DOWN_BN + NW - 1) / NW)

/* Swap bit t of the row index with bit t of the lane index for row pair
 * (x, y) = (rows i, i + 2^t): four such rounds transpose 16 × 16. Written
 * with swizzles, which compile to constant shuffles (a scatter of single
 * elements would cost more than the GEMM). */
#define SWAP8(x, y) { float16 lo_ = (float16)((x).lo, (y).lo); \
    (y) = (float16)((x).hi, (y).hi); (x) = lo_; }
#define SWAP4(x, y) { float16 lo_ = (float16)((x).s0123, (y).s0123, (x).s89ab, (y).s89ab); \
    (y) = (float16)((x).s4567, (y).s4567, (x).scdef, (y).scdef); (x) = lo_; }
#define SWAP2(x, y) { float16 lo_ = (float16)((x).s01, (y).s01, (x).s45, (y).s45, \
                                              (x).s89, (y).s89, (x).scd, (y).scd); \
    (y) = (float16)((x).s23, (y).s23, (x).s67, (y).s67, (x).sab, (y).sab, (x).sef, (y).sef); \
    (x) = lo_; }
#define SWAP1(x, y) { float16 lo_ = (float16)((x).s0, (y).s0, (x).s2, (y).s2, (x).s4, (y).s4, \
                                              (x).s6, (y).s6, (x).s8, (y).s8, (x).sa, (y).sa, \
                                              (x).sc, (y).sc, (x).se, (y).se); \
    (y) = (float16)((x).s1, (y).s1, (x).s3, (y).s3, (x).s5, (y).s5, (x).s7, (y).s7, \
                    (x).s9, (y).s9, (x).sb, (y).sb, (x).sd, (y).sd, (x).sf, (y).sf); \
    (x) = lo_; }

inline void transpose16(float16 *r)
{
#pragma unroll
    for (int i = 0; i < 8; i++) SWAP8(r[i], r[i + 8]);
#pragma unroll
    for (int i = 0; i < 16; i++) if (!(i & 4)) SWAP4(r[i], r[i + 4]);
#pragma unroll
    for (int i = 0; i < 16; i++) if (!(i & 2)) SWAP2(r[i], r[i + 2]);
#pragma unroll
    for (int i = 0; i < 16; i += 2) SWAP1(r[i], r[i + 1]);
}

/* Element kc0 + k .. + 15 of row r of A as f32 (zeros past nr). A_F32: A is
 * f32 (h), else XDT (x). */
inline float16 load_a16(const int A_F32, __global const uchar *a, long a_st, long r, long nr,
                        long k)
{
    if (r >= nr) return (float16)0.0f;
    if (A_F32) return vload16(0, (__global const float *)a + r * a_st + k);
    return LOAD16(XDT, (__global const ELEM(XDT) *)a, r * a_st + k);
}

inline float load_a1(const int A_F32, __global const uchar *a, long a_st, long r, long nr, long k)
{
    if (r >= nr) return 0.0f;
    if (A_F32) return ((__global const float *)a)[r * a_st + k];
    return LOAD(XDT, (__global const ELEM(XDT) *)a, r * a_st + k);
}

/* Transpose rows [0, nr) of A (row i at a + i·a_st, elements kc0..kc0+kc)
 * into at: group g, element k, lane l at at[(g·KC + k)·LANES + l]; rows up
 * to the whole group are zero. */
inline void load_a_chunk(const int A_F32, __global const uchar *a, long a_st, long nr,
                         long kc0, long kc, long KC, __local float *at)
{
    const long groups = (nr + LANES - 1) / LANES;
    for (long g = 0; g < groups; g++) {
        __local float *dst = at + g * KC * LANES;
        long k = 0;
        for (; k + LANES <= kc; k += LANES) {
            float16 r[LANES];
#pragma unroll
            for (int i = 0; i < LANES; i++)
                r[i] = load_a16(A_F32, a, a_st, g * LANES + i, nr, kc0 + k);
            transpose16(r);
#pragma unroll
            for (int i = 0; i < LANES; i++) vstore16(r[i], k + i, dst);
        }
        for (; k < kc; k++)
            for (int i = 0; i < LANES; i++)
                dst[k * LANES + i] = load_a1(A_F32, a, a_st, g * LANES + i, nr, kc0 + k);
    }
}

/* Weight rows w[j] (the register block's rows, at the chunk's first
 * element) elements 0..kc−1 as f32 into panel row j (stride KC); rows of
 * columns past N (valid[j] clear) are zeros. The rows are read side by side:
 * NW streams keep more misses in flight than one row after another, and
 * the copy waits on memory, not the FMAs. */
inline void load_panel(__global const ELEM(WDT) *const *w, const int *valid, long kc, long KC,
                       __local float *panel)
{
    long k = 0;
    for (; k + 16 <= kc; k += 16) {
#pragma unroll
        for (int j = 0; j < NW; j++)
            vstore16(valid[j] ? LOAD16(WDT, w[j], k) : (float16)0.0f, 0, panel + j * KC + k);
    }
    for (; k < kc; k++)
        for (int j = 0; j < NW; j++) panel[j * KC + k] = valid[j] ? LOAD(WDT, w[j], k) : 0.0f;
}

/* The register block: acc[j] += at_g[k] · panel[j][k] over the chunk. */
inline void block_fma(__local const float *ag, __local const float *panel, long kc, long KC,
                      float16 *acc)
{
    for (long k = 0; k < kc; k++) {
        const float16 a = vload16(k, ag);
#pragma unroll
        for (int j = 0; j < NW; j++) acc[j] = fma(a, (float16)(panel[j * KC + k]), acc[j]);
    }
}

/* Epilogue of a register block: lane l is row g·LANES + l of the tile,
 * block column j is tile column q + j (gate/up: acc[j] the gate and
 * acc[j + NW/2] the up sums of that column). bias, if HAS_BIAS: the
 * expert's b1 (entries in W1's row order, N gate columns) or b2. */
inline void store_block(const int GATE_UP, const int HAS_BIAS, const float16 *acc, long g,
                        long nr, long q, long cols, long col0, long N,
                        __global const ELEM(BDT) *bias, __global uchar *c, long c_st)
{
    const long lanes = min((long)LANES, nr - g * LANES);
    const int step = GATE_UP ? NW / 2 : NW;
    for (int j = 0; j < step; j++) {
        const long col = q + j;
        if (col >= cols) break;
        float out[LANES];
        if (GATE_UP) {
            float16 gate = acc[j], up = acc[j + NW / 2];
            if (HAS_BIAS) {
                gate += LOAD(BDT, bias, w1_row(0, col0 + col, N));
                up += LOAD(BDT, bias, w1_row(1, col0 + col, N));
            }
            vstore16(glu16(gate, up), 0, out);
        } else {
            vstore16(HAS_BIAS ? acc[j] + LOAD(BDT, bias, col0 + col) : acc[j], 0, out);
        }
        for (long l = 0; l < lanes; l++) {
            const long r = g * LANES + l;
            if (GATE_UP)
                ((__global float *)c)[r * c_st + col0 + col] = out[l];
            else
                STORE(XDT, (__global ELEM(XDT) *)c, r * c_st + col0 + col, out[l]);
        }
    }
}

/* A tile of at most FEW_ROWS rows (decode): K in the vector lanes instead,
 * as dot products of PAIR_ROWS rows with the NW weight rows of a register
 * block, reduced across lanes at the end; rows in lanes would leave most
 * lanes empty, and here every weight load feeds PAIR_ROWS full FMAs. The
 * weight rows stream once per PAIR_ROWS rows, from memory the first time
 * and from L2 after. */
inline void gemm_tile_few(const int GATE_UP, const int HAS_BIAS, const long BN, long K, long N,
                          long nr, long col0, __global const uchar *a, long a_st,
                          __global const ELEM(WDT) *w_e, long w_sn,
                          __global const ELEM(BDT) *bias, __global uchar *c, long c_st)
{
    const long cols = min(BN, N - col0);
    const long step = GATE_UP ? NW / 2 : NW;
    for (long q = 0; q < cols; q += step) {
        __global const ELEM(WDT) *w[NW];
        for (int j = 0; j < NW; j++) {
            long col = GATE_UP ? q + j % (NW / 2) : q + j;
            if (col >= cols) col = q; /* past the end: a valid row, dropped */
            w[j] = w_e + (GATE_UP ? w1_row(j >= NW / 2, col0 + col, N) : col0 + col) * w_sn;
        }
        for (long r0 = 0; r0 < nr; r0 += PAIR_ROWS) {
            float16 acc[PAIR_ROWS * NW];
#pragma unroll
            for (int i = 0; i < PAIR_ROWS * NW; i++) acc[i] = (float16)0.0f;
            long k = 0;
            for (; k + 16 <= K; k += 16) {
                float16 av[PAIR_ROWS];
#pragma unroll
                for (int i = 0; i < PAIR_ROWS; i++)
                    av[i] = load_a16(!GATE_UP, a, a_st, r0 + i, nr, k);
#pragma unroll
                for (int j = 0; j < NW; j++) {
                    const float16 wv = LOAD16(WDT, w[j], k);
#pragma unroll
                    for (int i = 0; i < PAIR_ROWS; i++)
                        acc[i * NW + j] = fma(av[i], wv, acc[i * NW + j]);
                }
            }
            float sums[PAIR_ROWS * NW];
#pragma unroll
            for (int i = 0; i < PAIR_ROWS * NW; i++) sums[i] = hsum16(acc[i]);
            for (; k < K; k++)
                for (int i = 0; i < PAIR_ROWS; i++) {
                    const float av = load_a1(!GATE_UP, a, a_st, r0 + i, nr, k);
                    for (int j = 0; j < NW; j++)
                        sums[i * NW + j] = fma(av, LOAD(WDT, w[j], k), sums[i * NW + j]);
                }
            for (int i = 0; i < PAIR_ROWS && r0 + i < nr; i++) {
                const long r = r0 + i;
                for (int j = 0; j < (int)step && q + j < cols; j++) {
                    float v = sums[i * NW + j];
                    const long col = col0 + q + j;
                    if (GATE_UP) {
                        float up = sums[i * NW + j + NW / 2];
                        if (HAS_BIAS) {
                            v += LOAD(BDT, bias, w1_row(0, col, N));
                            up += LOAD(BDT, bias, w1_row(1, col, N));
                        }
                        /* As a vector, so the value matches store_block's. */
                        ((__global float *)c)[r * c_st + col] =
                            glu16((float16)v, (float16)up).s0;
                    } else {
                        if (HAS_BIAS) v += LOAD(BDT, bias, col);
                        STORE(XDT, (__global ELEM(XDT) *)c, r * c_st + col, v);
                    }
                }
            }
        }
    }
}

/* One tile of either GEMM. GATE_UP: N counts gate columns, register block
 * columns j < NW/2 are gate columns c + j and j ≥ NW/2 the matching up
 * columns (W1 rows w1_row(0 or 1, c + j)), and the epilogue writes
 * h = act(g + b1, u + b1) as f32; else columns are plain and the epilogue
 * writes y + b2 in XDT. */
inline void gemm_tile(const int GATE_UP, const int HAS_BIAS, const long BN, const long KC,
                      const long BLOCKS, long K, long N, long nr, long col0,
                      __global const uchar *a, long a_st, __global const ELEM(WDT) *w_e,
                      long w_sn, __global const ELEM(BDT) *bias, __global uchar *c, long c_st,
                      __local float *at, __local float *panel, __local float *part)
{
    const long groups = (nr + LANES - 1) / LANES;
    if (nr <= FEW_ROWS) {
        gemm_tile_few(GATE_UP, HAS_BIAS, BN, K, N, nr, col0, a, a_st, w_e, w_sn, bias, c, c_st);
        return;
    }
    const long cols = min(BN, N - col0);
    const long step = GATE_UP ? NW / 2 : NW; /* output columns of a block */
    for (long kc0 = 0; kc0 < K; kc0 += KC) {
        const long kc = min(KC, K - kc0);
        const int first = kc0 == 0, last = kc0 + kc >= K;
        load_a_chunk(!GATE_UP, a, a_st, nr, kc0, kc, KC, at);
        for (long b = 0; b * step < cols; b++) {
            const long q = b * step; /* the block's first column in the tile */
            __global const ELEM(WDT) *w_rows[NW];
            for (int j = 0; j < NW; j++) {
                long col = GATE_UP ? q + j % (NW / 2) : q + j;
                long row = GATE_UP ? w1_row(j >= NW / 2, col0 + col, N) : col0 + col;
                w_rows[j] = col < cols ? w_e + row * w_sn : 0;
            }
            /* Columns past the end get zero panel rows. */
            __global const ELEM(WDT) *w_chunk[NW];
            int valid[NW];
            for (int j = 0; j < NW; j++) {
                valid[j] = w_rows[j] != 0;
                w_chunk[j] = (valid[j] ? w_rows[j] : w_rows[0]) + kc0;
            }
            load_panel(w_chunk, valid, kc, KC, panel);
            for (long g = 0; g < groups; g++) {
                __local float *pg = part + ((g * BLOCKS + b) * NW) * LANES;
                float16 acc[NW];
#pragma unroll
                for (int j = 0; j < NW; j++) acc[j] = first ? (float16)0.0f : vload16(j, pg);
                block_fma(at + g * KC * LANES, panel, kc, KC, acc);
                if (!last) {
#pragma unroll
                    for (int j = 0; j < NW; j++) vstore16(acc[j], j, pg);
                    continue;
                }
                store_block(GATE_UP, HAS_BIAS, acc, g, nr, q, cols, col0, N, bias, c, c_st);
            }
        }
    }
}

/* The expert's bias row when the layer has it (NULL otherwise: never read). */
#define BIAS_ROW(has, buf, off, e, se) \
    ((has) ? AT_CONST(ELEM(BDT), (buf), (off)) + (e) * (se) : (__global const ELEM(BDT) *)0)

/* Gate/up GEMM + activation: h[r, c] = act(x_r · W1_e[gate c] + b1,
 * x_r · W1_e[up c] + b1) for gate columns c, with K = H, N = I; h is f32
 * [max_rows, I]. */
__kernel void moe_up_cpu(long K, long N, long rows, int experts,
                         __global const uchar *off_buf, ulong off_off, long off_st,
                         __global const uchar *x_buf, ulong x_off, long x_st,
                         __global const uchar *w_buf, ulong w_off, long w_se, long w_sn,
                         __global uchar *h_buf, ulong h_off,
                         __global const uchar *b_buf, ulong b_off, long b_se)
{
    __local float at[UP_BM * UP_KC];
    __local float panel[NW * UP_KC];
    __local float part[UP_GROUPS * UP_BLOCKS * NW * LANES];
    long r0, r1;
    int e;
    if (!find_tile(AT_CONST(int, off_buf, off_off), off_st, experts, rows, UP_BM,
                   (long)get_global_id(1), &r0, &r1, &e))
        return;
    const long col0 = (long)get_global_id(0) * UP_BN;
    if (col0 >= N) return;
    __global const uchar *a = (__global const uchar *)(AT_CONST(ELEM(XDT), x_buf, x_off) + r0 * x_st);
    __global const ELEM(WDT) *w_e = AT_CONST(ELEM(WDT), w_buf, w_off) + e * w_se;
    __global uchar *h = (__global uchar *)(AT(float, h_buf, h_off) + r0 * N);
    gemm_tile(1, HAS_B1, UP_BN, UP_KC, UP_BLOCKS, K, N, r1 - r0, col0, a, x_st, w_e, w_sn,
              BIAS_ROW(HAS_B1, b_buf, b_off, e, b_se), h, N, at, panel, part);
}

/* Down GEMM: y_r = h_r · W2_eᵀ + b2_e with K = I, N = H, rounded to XDT once. */
__kernel void moe_down_cpu(long K, long N, long rows, int experts,
                           __global const uchar *off_buf, ulong off_off, long off_st,
                           __global const uchar *h_buf, ulong h_off,
                           __global const uchar *w_buf, ulong w_off, long w_se, long w_sn,
                           __global uchar *y_buf, ulong y_off, long y_st,
                           __global const uchar *b_buf, ulong b_off, long b_se)
{
    __local float at[DOWN_BM * DOWN_KC];
    __local float panel[NW * DOWN_KC];
    __local float part[DOWN_GROUPS * DOWN_BLOCKS * NW * LANES];
    long r0, r1;
    int e;
    if (!find_tile(AT_CONST(int, off_buf, off_off), off_st, experts, rows, DOWN_BM,
                   (long)get_global_id(1), &r0, &r1, &e))
        return;
    const long col0 = (long)get_global_id(0) * DOWN_BN;
    if (col0 >= N) return;
    __global const uchar *a = (__global const uchar *)(AT_CONST(float, h_buf, h_off) + r0 * K);
    __global const ELEM(WDT) *w_e = AT_CONST(ELEM(WDT), w_buf, w_off) + e * w_se;
    __global uchar *y = (__global uchar *)(AT(ELEM(XDT), y_buf, y_off) + r0 * y_st);
    gemm_tile(0, HAS_B2, DOWN_BN, DOWN_KC, DOWN_BLOCKS, K, N, r1 - r0, col0, a, K, w_e, w_sn,
              BIAS_ROW(HAS_B2, b_buf, b_off, e, b_se), y, y_st, at, panel, part);
}
