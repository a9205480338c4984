/* MoE expert GEMMs, GPU style: a work-group of THREADS work-items computes
 * a BM × BN tile of one expert's rows (the gate/up GEMM: BN gate columns
 * and the matching up columns, so the activation is applied in registers),
 * stepping through K BK at a time with both operands staged in __local
 * memory as f32:
 *   As [BK][BM + LDS_PAD]          x (gate/up) or h (down), transposed
 *   Bs [BK][PAIRS · BN + LDS_PAD]  W1 gate then up rows, or W2 rows, transposed
 * (the pad of one element spreads the transposing stores, which walk k,
 * over the local memory banks)
 * Global loads walk K fastest (coalesced along the contiguous dimension);
 * the transposed layout makes the inner loop's reads of a k row either a
 * broadcast (A, the same row for a row of threads) or consecutive (B).
 * Work-item (ty, tx) of a TY × TX layout owns rows ty + i·TY and columns
 * tx + j·TX (TM × TN of them, per pair) in registers.
 *
 * Work decomposition without reading expert_offsets on the host: dimension
 * 1 of the grid counts virtual row tiles. Expert e owns virtual tiles
 * [T_e, T_e+1) with T_e = floor(o_e / BM) + e (o_e its clamped segment
 * start), at least ceil(len_e / BM) of them, and T_E ≤ rows / BM + E, so
 * a grid of rows / BM + E tiles covers every segment; a group finds its
 * expert by binary search (the same result in every work-item, so an empty
 * group returns as a whole, before any barrier). Dimension 0 counts column
 * tiles.
 *
 * Build options: XDT (x, y dtype), WDT (weights), ACT_GEGLU or ACT_CLAMPED
 * with ACT_ALPHA and ACT_LIMIT (the activation, prelude.cl), W1_IL (W1
 * rows interleaved), HAS_B1 / HAS_B2 with BDT (the expert biases, added in
 * the epilogues), and per GEMM UP_ / DOWN_ BM, BN, BK, THREADS, TM, TN. */

/* Elements between rows of the local tiles beyond the tile width. */
#define LDS_PAD 1

/* The largest register block of either GEMM (per pair). */
#define UP_REGS (UP_TM * UP_TN)
#define DOWN_REGS (DOWN_TM * DOWN_TN)
#define MAX_REGS (UP_REGS > DOWN_REGS ? UP_REGS : DOWN_REGS)
#define MAX_TM (UP_TM > DOWN_TM ? UP_TM : DOWN_TM)
#define MAX_TN (UP_TN > DOWN_TN ? UP_TN : DOWN_TN)

/* One tile. GATE_UP: N counts gate columns, pair p of column c reads
 * weight row w1_row(p, c), and the epilogue writes h = act(g + b1, u + b1)
 * as f32; else y + b2 in XDT (bias: the expert's b1 or b2 when HAS_BIAS).
 * A_F32: A is f32 (h), else XDT (x). */
inline void gemm_tile(const int GATE_UP, const int HAS_BIAS, const int BM, const int BN,
                      const int BK, const int THREADS, const int TM, const int TN, long K, long N,
                      long nr, long col0, __global const uchar *a, long a_st,
                      __global const ELEM(WDT) *w_e, long w_sn, __global const ELEM(BDT) *bias,
                      __global uchar *c, long c_st, __local float *As, __local float *Bs)
{
    const int PAIRS = GATE_UP ? 2 : 1;
    const int TX = BN / TN, TY = BM / TM;
    const int lid = (int)get_local_id(0), tx = lid % TX, ty = lid / TX;
    float acc[2 * MAX_REGS];
    for (int q = 0; q < PAIRS * TM * TN; q++) acc[q] = 0.0f;

    for (long k0 = 0; k0 < K; k0 += BK) {
        for (int i = lid; i < BM * BK; i += THREADS) {
            const int r = i / BK, k = i % BK;
            float v = 0.0f;
            if (r < nr && k0 + k < K) {
                if (GATE_UP)
                    v = LOAD(XDT, (__global const ELEM(XDT) *)a, r * a_st + k0 + k);
                else
                    v = ((__global const float *)a)[r * a_st + k0 + k];
            }
            As[k * (BM + LDS_PAD) + r] = v;
        }
        for (int i = lid; i < PAIRS * BN * BK; i += THREADS) {
            const int n = i / BK, k = i % BK;
            const int p = n / BN, col = n % BN;
            float v = 0.0f;
            if (col0 + col < N && k0 + k < K) {
                const long row = GATE_UP ? w1_row(p, col0 + col, N) : col0 + col;
                v = LOAD(WDT, w_e, row * w_sn + k0 + k);
            }
            Bs[k * (PAIRS * BN + LDS_PAD) + n] = v;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int k = 0; k < BK; k++) {
            float av[MAX_TM], bv[2 * MAX_TN];
            for (int i = 0; i < TM; i++) av[i] = As[k * (BM + LDS_PAD) + ty + i * TY];
            for (int p = 0; p < PAIRS; p++)
                for (int j = 0; j < TN; j++)
                    bv[p * TN + j] = Bs[k * (PAIRS * BN + LDS_PAD) + p * BN + tx + j * TX];
            for (int p = 0; p < PAIRS; p++)
                for (int i = 0; i < TM; i++)
                    for (int j = 0; j < TN; j++)
                        acc[(p * TM + i) * TN + j] =
                            fma(av[i], bv[p * TN + j], acc[(p * TM + i) * TN + j]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    /* Epilogue: each owned (row, column) once. */
    for (int i = 0; i < TM; i++) {
        const int r = ty + i * TY;
        if (r >= nr) continue;
        for (int j = 0; j < TN; j++) {
            const long col = col0 + tx + j * TX;
            if (col >= N) continue;
            float v = acc[i * TN + j];
            if (GATE_UP) {
                float up = acc[(TM + i) * TN + j];
                if (HAS_BIAS) {
                    v += LOAD(BDT, bias, w1_row(0, col, N));
                    up += LOAD(BDT, bias, w1_row(1, col, N));
                }
                ((__global float *)c)[r * c_st + col] = glu(v, up);
            } else {
                if (HAS_BIAS) v += LOAD(BDT, bias, col);
                STORE(XDT, (__global ELEM(XDT) *)c, r * c_st + col, v);
            }
        }
    }
    /* Every work-item of the group meets here before the kernel ends (the
     * early return of a tile-less group is uniform). With TM or TN 1 a
     * `continue` above is a branch to the kernel's end, which PoCL's CPU
     * driver takes for a uniform choice between barriers and decides by
     * work-item 0, as it did in attn_gpu.cl (rows past the tile written). */
    barrier(CLK_LOCAL_MEM_FENCE);
}

/* The expert's bias row when the layer has it (NULL otherwise: never read). */
#define BIAS_ROW(has, buf, off, e, se) \
    ((has) ? AT_CONST(ELEM(BDT), (buf), (off)) + (e) * (se) : (__global const ELEM(BDT) *)0)

/* Gate/up GEMM + activation: h[r, c] = act(x_r · W1_e[gate c] + b1,
 * x_r · W1_e[up c] + b1) for gate columns c, with K = H, N = I; h is f32
 * [max_rows, I]. */
__kernel __attribute__((reqd_work_group_size(UP_THREADS, 1, 1)))
void moe_up_gpu(long K, long N, long rows, int experts,
                __global const uchar *off_buf, ulong off_off, long off_st,
                __global const uchar *x_buf, ulong x_off, long x_st,
                __global const uchar *w_buf, ulong w_off, long w_se, long w_sn,
                __global uchar *h_buf, ulong h_off,
                __global const uchar *b_buf, ulong b_off, long b_se)
{
    __local float As[(UP_BM + LDS_PAD) * UP_BK];
    __local float Bs[(2 * UP_BN + LDS_PAD) * UP_BK];
    long r0, r1;
    int e;
    if (!find_tile(AT_CONST(int, off_buf, off_off), off_st, experts, rows, UP_BM,
                   (long)get_group_id(1), &r0, &r1, &e))
        return;
    const long col0 = (long)get_group_id(0) * UP_BN;
    __global const uchar *a =
        (__global const uchar *)(AT_CONST(ELEM(XDT), x_buf, x_off) + r0 * x_st);
    __global const ELEM(WDT) *w_e = AT_CONST(ELEM(WDT), w_buf, w_off) + e * w_se;
    __global uchar *h = (__global uchar *)(AT(float, h_buf, h_off) + r0 * N);
    gemm_tile(1, HAS_B1, UP_BM, UP_BN, UP_BK, UP_THREADS, UP_TM, UP_TN, K, N, r1 - r0, col0, a,
              x_st, w_e, w_sn, BIAS_ROW(HAS_B1, b_buf, b_off, e, b_se), h, N, As, Bs);
}

/* Down GEMM: y_r = h_r · W2_eᵀ + b2_e with K = I, N = H, rounded to XDT once. */
__kernel __attribute__((reqd_work_group_size(DOWN_THREADS, 1, 1)))
void moe_down_gpu(long K, long N, long rows, int experts,
                  __global const uchar *off_buf, ulong off_off, long off_st,
                  __global const uchar *h_buf, ulong h_off,
                  __global const uchar *w_buf, ulong w_off, long w_se, long w_sn,
                  __global uchar *y_buf, ulong y_off, long y_st,
                  __global const uchar *b_buf, ulong b_off, long b_se)
{
    __local float As[(DOWN_BM + LDS_PAD) * DOWN_BK];
    __local float Bs[(DOWN_BN + LDS_PAD) * DOWN_BK];
    long r0, r1;
    int e;
    if (!find_tile(AT_CONST(int, off_buf, off_off), off_st, experts, rows, DOWN_BM,
                   (long)get_group_id(1), &r0, &r1, &e))
        return;
    const long col0 = (long)get_group_id(0) * DOWN_BN;
    __global const uchar *a = (__global const uchar *)(AT_CONST(float, h_buf, h_off) + r0 * K);
    __global const ELEM(WDT) *w_e = AT_CONST(ELEM(WDT), w_buf, w_off) + e * w_se;
    __global uchar *y = (__global uchar *)(AT(ELEM(XDT), y_buf, y_off) + r0 * y_st);
    gemm_tile(0, HAS_B2, DOWN_BM, DOWN_BN, DOWN_BK, DOWN_THREADS, DOWN_TM, DOWN_TN, K, N, r1 - r0,
              col0, a, K, w_e, w_sn, BIAS_ROW(HAS_B2, b_buf, b_off, e, b_se), y, y_st, As, Bs);
}
