/* MoE expert GEMMs, grouped over the expert segments of the permuted rows,
 * the portable form (FMA in IEEE f32, every dtype and architecture; the
 * MFMA form for CDNA comes as kernels/moe_gemm_mfma.hip):
 *   moe_up    h[r, c] = act(x_r·W1_e[gate c] + b1, x_r·W1_e[up c] + b1), f32
 *   moe_down  y[r, n] = h_r·W2_e[n] + b2, rounded to IO once
 * A block computes a BM × BN tile of one expert's rows (moe_up: BN gate
 * columns and the matching up columns, so the activation is applied in
 * registers), walking K BK at a time: both operands staged in LDS as f32,
 * transposed ([k][row], padded by one element), each thread owning a
 * TM × TN register block (per pair) of a TY × TX thread grid. Tile sizes
 * and threads come from the plan (common/plan_moe.h) as -DUP_* and
 * -DDOWN_* constants; nothing depends on the wave size.
 *
 * Work without reading expert_offsets on the host: dimension x of the grid
 * counts virtual row tiles, R / BM + E of them. Expert e owns tiles
 * [o_e / BM + e, ...) (o_e its segment start, clamped to [0, R]), one per BM
 * rows of its segment, so every layout of segments fits; a block finds its
 * expert by binary search and a block without rows returns as a whole,
 * before any barrier. Dimension y counts column tiles.
 *
 * Build options: -DIO, -DW, -DB (dtypes of x/y, weights, biases; B is
 * defined without biases too), -DHAS_B1, -DHAS_B2, -DW1_IL (W1's gate and
 * up rows interleaved), the activation (prelude.hip), and per GEMM <G>_BM,
 * <G>_BN, <G>_BK, <G>_THREADS, <G>_TM, <G>_TN for G = UP, DOWN.
 *
 * Index contents are trusted as the contract says, but clamped so that no
 * row or expert leaves its buffer. */

/* The row range [*r0, *r1) and expert of virtual row tile v of bm rows;
 * false when the tile has no rows. Offsets are clamped to [0, R]. */
XATTN_DEV bool find_tile(const int *off, i64 off_st, int E, i64 R, i64 bm, i64 v, i64 *r0,
                         i64 *r1, int *expert)
{
    int lo = 0, hi = E - 1;
    while (lo < hi) {
        const int mid = lo + (hi - lo + 1) / 2;
        i64 o = off[(i64)mid * off_st];
        o = o < 0 ? 0 : o > R ? R : o;
        if (o / bm + mid <= v) lo = mid;
        else hi = mid - 1;
    }
    i64 start = off[(i64)lo * off_st], end = off[(i64)(lo + 1) * off_st];
    start = start < 0 ? 0 : start > R ? R : start;
    end = end < 0 ? 0 : end > R ? R : end;
    const i64 first = start / bm + lo;
    if (v < first) return false;
    const i64 row0 = start + (v - first) * bm;
    if (row0 >= end) return false;
    *r0 = row0;
    *r1 = row0 + bm < end ? row0 + bm : end;
    *expert = lo;
    return true;
}

/* Weight row of pair p (0 gate, 1 up) for gate column c of N. */
XATTN_DEV i64 w1_row(int p, i64 c, i64 n)
{
#if W1_IL
    return 2 * c + p;
#else
    return p * n + c;
#endif
}

/* The epilogue of one output (row r, column col of the layer), given the
 * gate (or plain) sum v and the up sum u. */
template <bool GATE_UP>
XATTN_DEV void put_output(float v, float u, i64 r, i64 col, i64 N, const ELEM(B) *bias,
                          float *h, ELEM(IO) *y, i64 y_st)
{
    if (GATE_UP) {
#if HAS_B1
        v += LOAD(B, bias, w1_row(0, col, N));
        u += LOAD(B, bias, w1_row(1, col, N));
#endif
        h[r * N + col] = glu(v, u);
    } else {
#if HAS_B2
        v += LOAD(B, bias, col);
#endif
        STORE(IO, y + r * y_st, col, v);
    }
}

/* One tile on FMA units, IEEE f32: both operands staged as f32, transposed
 * ([k][row] with a pad of one, so the transposing stores, which walk k,
 * spread over the banks); reads of a k row are a broadcast (A) or
 * consecutive (B). Thread (ty, tx) owns rows ty + i·TY and columns
 * tx + j·TX. */
template <bool GATE_UP, int BM, int BN, int BK, int THREADS, int TM, int TN, typename TA>
XATTN_DEV void gemm_tile(unsigned char *smem, i64 K, i64 N, i64 nr, i64 col0, const TA *a,
                         i64 a_st, bool, const ELEM(W) *w_e, i64 w_sn, bool,
                         const ELEM(B) *bias, i64 r0, float *h, ELEM(IO) *y, i64 y_st)
{
    constexpr int PAIRS = GATE_UP ? 2 : 1;
    constexpr int TX = BN / TN, TY = BM / TM;
    constexpr int A_LD = BM + 1, B_LD = PAIRS * BN + 1;
    static_assert(TX * TY == THREADS, "MoE FMA tile does not match its threads");
    float *As = (float *)smem, *Bs = As + BK * A_LD;
    const int tid = threadIdx.x, tx = tid % TX, ty = tid / TX;
    float acc[PAIRS][TM][TN];
#pragma unroll
    for (int p = 0; p < PAIRS; p++)
#pragma unroll
        for (int i = 0; i < TM; i++)
#pragma unroll
            for (int j = 0; j < TN; j++) acc[p][i][j] = 0.0f;

#pragma unroll 1
    for (i64 k0 = 0; k0 < K; k0 += BK) {
        for (int i = tid; i < BM * BK; i += THREADS) {
            const int r = i / BK, k = i % BK;
            float v = 0.0f;
            if (r < nr && k0 + k < K) {
                if (GATE_UP) v = LOAD(IO, (const ELEM(IO) *)a, r * a_st + k0 + k);
                else v = ((const float *)a)[r * a_st + k0 + k];
            }
            As[k * A_LD + r] = v;
        }
        for (int i = tid; i < PAIRS * BN * BK; i += THREADS) {
            const int n = i / BK, k = i % BK, p = n / BN;
            const i64 col = col0 + n % BN;
            float v = 0.0f;
            if (col < N && k0 + k < K) {
                const i64 row = GATE_UP ? w1_row(p, col, N) : col;
                v = LOAD(W, w_e, row * w_sn + k0 + k);
            }
            Bs[k * B_LD + n] = v;
        }
        __syncthreads();
#pragma unroll 4
        for (int k = 0; k < BK; k++) {
            float av[TM], bv[PAIRS][TN];
#pragma unroll
            for (int i = 0; i < TM; i++) av[i] = As[k * A_LD + ty + i * TY];
#pragma unroll
            for (int p = 0; p < PAIRS; p++)
#pragma unroll
                for (int j = 0; j < TN; j++) bv[p][j] = Bs[k * B_LD + p * BN + tx + j * TX];
#pragma unroll
            for (int p = 0; p < PAIRS; p++)
#pragma unroll
                for (int i = 0; i < TM; i++)
#pragma unroll
                    for (int j = 0; j < TN; j++) acc[p][i][j] = fmaf(av[i], bv[p][j], acc[p][i][j]);
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < TM; i++)
#pragma unroll
        for (int j = 0; j < TN; j++) {
            const int r = ty + i * TY;
            const i64 col = col0 + tx + j * TX;
            if (r >= nr || col >= N) continue;
            put_output<GATE_UP>(acc[0][i][j], acc[PAIRS - 1][i][j], r0 + r, col, N, bias, h, y,
                                y_st);
        }
}

#define UP_TILE UP_BM, UP_BN, UP_BK, UP_THREADS, UP_TM, UP_TN
#define DOWN_TILE DOWN_BM, DOWN_BN, DOWN_BK, DOWN_THREADS, DOWN_TM, DOWN_TN



/* The expert's bias row, or NULL when the layer has none (never read). */
#define BIAS_ROW(has, b, e, se) ((has) ? (b) + (i64)(e) * (se) : (const ELEM(B) *)0)

/* Gate/up GEMM + activation with K = H, N = I; h is [R, I], f32. a_vec and
 * w_vec (16-byte aligned rows, for vector loads) are taken for the MFMA
 * form's sake and unused here. */
extern "C" __global__ void __launch_bounds__(UP_THREADS)
    moe_up(i64 R, int E, i64 K, i64 N, const int *offsets, i64 off_st, const ELEM(IO) *x,
           i64 x_st, int a_vec, const ELEM(W) *w1, i64 w_se, i64 w_sn, int w_vec,
           const ELEM(B) *b1, i64 b_se, float *h)
{
    XATTN_DYNAMIC_SMEM(smem);
    i64 r0, r1;
    int e;
    if (!find_tile(offsets, off_st, E, R, UP_BM, blockIdx.x, &r0, &r1, &e)) return;
    const i64 col0 = (i64)blockIdx.y * UP_BN;
    gemm_tile<true, UP_TILE>(smem, K, N, r1 - r0, col0, x + r0 * x_st, x_st, a_vec != 0,
                             w1 + e * w_se, w_sn, w_vec != 0, BIAS_ROW(HAS_B1, b1, e, b_se), r0,
                             h, (ELEM(IO) *)0, 0);
}

/* Down GEMM with K = I, N = H: y_r = h_r·W2_eᵀ + b2_e. */
extern "C" __global__ void __launch_bounds__(DOWN_THREADS)
    moe_down(i64 R, int E, i64 K, i64 N, const int *offsets, i64 off_st, const float *h,
             int a_vec, const ELEM(W) *w2, i64 w_se, i64 w_sn, int w_vec, const ELEM(B) *b2,
             i64 b_se, ELEM(IO) *y, i64 y_st)
{
    XATTN_DYNAMIC_SMEM(smem);
    i64 r0, r1;
    int e;
    if (!find_tile(offsets, off_st, E, R, DOWN_BM, blockIdx.x, &r0, &r1, &e)) return;
    const i64 col0 = (i64)blockIdx.y * DOWN_BN;
    const float *a = h + r0 * K;
    gemm_tile<false, DOWN_TILE>(smem, K, N, r1 - r0, col0, a, K, a_vec != 0, w2 + e * w_se,
                                w_sn, w_vec != 0, BIAS_ROW(HAS_B2, b2, e, b_se), r0,
                                (float *)0, y, y_st);
}
