/* MoE expert GEMMs, grouped over the expert segments of the permuted rows:
 *   moe_up    h[r, c] = act(x_r·W1_e[gate c] + b1, x_r·W1_e[up c] + b1), f32
 *   moe_down  y[r, n] = h_r·W2_e[n] + b2, rounded to IO once
 * A block computes a BM × BN tile of one expert's rows (moe_up: BN gate
 * columns and the matching up columns, so the activation is applied in
 * registers), walking K BK at a time. Tile sizes, threads and stages come
 * from the plan (common/plan_moe.h) as -DUP_* and -DDOWN_* constants.
 *
 * Work without reading expert_offsets on the host: dimension x of the grid
 * counts virtual row tiles, R / BM + E of them. Expert e owns tiles
 * [o_e / BM + e, ...) (o_e its segment start, clamped to [0, R]), one per BM
 * rows of its segment, so every layout of segments fits; a block finds its
 * expert by binary search and a block without rows returns as a whole,
 * before any barrier. Dimension y counts column tiles.
 *
 * Two kernel forms, chosen by -DMMA:
 *  - MMA=1 (f16/bf16 activations and weights of one dtype): tensor cores,
 *    mma.sync m16n8k16 with f32 accumulators. Both operands are staged in
 *    shared memory in the weight dtype through a STAGES-deep cp.async
 *    pipeline, rows of BK elements in 16-byte chunks with an XOR swizzle so
 *    ldmatrix reads no bank twice. The down GEMM's A is h rounded to the
 *    weight dtype, as attention stages P: the up GEMM's epilogue rounds it
 *    and keeps it in that dtype in the h region (sized for f32), so the
 *    down GEMM stages it by cp.async like x. The warps form a
 *    WARPS_M × (warps / WARPS_M) grid, each owning WM × WN outputs (per
 *    pair) as MT × NT fragments.
 *  - MMA=0 (f32, or mixed dtypes): FMA in IEEE f32, both operands staged as
 *    f32 transposed ([k][row], padded by one element), each thread owning a
 *    TM × TN register block (per pair) of a TY × TX thread grid.
 *
 * Build options: -DIO, -DW, -DB (dtypes of x/y, weights, biases; B is
 * defined without biases too), -DHAS_B1, -DHAS_B2, -DW1_IL (W1's gate and
 * up rows interleaved), the activation (prelude.cuh), -DMMA, and per GEMM
 * <G>_BM, <G>_BN, <G>_BK, <G>_THREADS, <G>_STAGES, <G>_WARPS_M (MMA) or
 * <G>_TM, <G>_TN (FMA) for G = UP, DOWN.
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
#if MMA
        STORE(W, (ELEM(W) *)h, r * N + col, glu(v, u)); /* what the down GEMM stages */
#else
        h[r * N + col] = glu(v, u);
#endif
    } else {
#if HAS_B2
        v += LOAD(B, bias, col);
#endif
        STORE(IO, y + r * y_st, col, v);
    }
}

#if MMA

typedef ELEM(W) elem_mm; /* the 16-bit dtype the tensor cores take */

/* Four 32-bit words, the unit of a 16-byte chunk written without cp.async. */
struct __align__(16) chunk16 {
    u32 w[4];
};

/* Staged tile geometry: rows of BK elements in CPR chunks of 8. Chunk c of
 * row r lives at chunk index r·CPR + (c ^ s(r)), s spreading the 8 rows an
 * ldmatrix phase reads over the 8 chunk positions of a 128-byte line. */
template <int BK> XATTN_DEV int chunk_at(int r, int c)
{
    constexpr int CPR = BK / 8;
    constexpr int ROWS_PER_LINE = CPR >= 8 ? 1 : 8 / CPR;
    constexpr int SPAN = CPR >= 8 ? 8 : CPR;
    return r * CPR + (c ^ ((r / ROWS_PER_LINE) % SPAN));
}

XATTN_DEV constexpr int align16(int bytes) { return (bytes + 15) / 16 * 16; }

/* 8 elements (k .. k+7 of a row) into one staged chunk: cp.async when the
 * row is valid, the chunk whole and aligned (vec), else through registers
 * with zeros past K or for a row of no data. */
XATTN_DEV void stage_chunk(elem_mm *dst, const elem_mm *src, i64 k, i64 K, bool row_ok, bool vec)
{
    if (row_ok && vec && k < K) {
        cp_async16(dst, src + k);
        return;
    }
    chunk16 c;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const u32 lo = row_ok && k + 2 * i < K ? src[k + 2 * i] : 0;
        const u32 hi = row_ok && k + 2 * i + 1 < K ? src[k + 2 * i + 1] : 0;
        c.w[i] = lo | hi << 16;
    }
    *(chunk16 *)dst = c;
}

/* One tile on tensor cores. A is x (IO = W) or h (W), rows a + r·a_st;
 * w_e is the expert's weights, row n at n·w_sn. */
template <bool GATE_UP, int BM, int BN, int BK, int THREADS, int STAGES, int WARPS_M, typename TA>
XATTN_DEV void gemm_tile(unsigned char *smem, i64 K, i64 N, i64 nr, i64 col0, const TA *a,
                         i64 a_st, bool a_vec, const elem_mm *w_e, i64 w_sn, bool w_vec,
                         const ELEM(B) *bias, i64 r0, float *h, ELEM(IO) *y, i64 y_st)
{
    constexpr int PAIRS = GATE_UP ? 2 : 1;
    constexpr int WARPS = THREADS / 32, WARPS_N = WARPS / WARPS_M;
    constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N, MT = WM / 16, NT = WN / 8;
    constexpr int CPR = BK / 8;
    constexpr int A_BYTES = align16(BM * BK * 2), B_BYTES = align16(PAIRS * BN * BK * 2);
    static_assert(WARPS % WARPS_M == 0 && WM % 16 == 0 && WN % 8 == 0 && BK % 16 == 0,
                  "MoE MMA tile does not split into m16n8k16 fragments");
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int wm = warp % WARPS_M, wn = warp / WARPS_M;

    /* Stage K step kt into buffer s. */
    auto stage = [&](int s, i64 kt) {
        elem_mm *As = (elem_mm *)(smem + s * (A_BYTES + B_BYTES));
        elem_mm *Bs = (elem_mm *)(smem + s * (A_BYTES + B_BYTES) + A_BYTES);
        const i64 k0 = kt * BK;
#pragma unroll 2
        for (int i = tid; i < BM * CPR; i += THREADS) {
            const int r = i / CPR, c = i % CPR;
            const bool ok = r < nr;
            stage_chunk(As + chunk_at<BK>(r, c) * 8, a + (ok ? r : 0) * a_st, k0 + c * 8, K, ok,
                        a_vec);
        }
#pragma unroll 2
        for (int i = tid; i < PAIRS * BN * CPR; i += THREADS) {
            const int n = i / CPR, c = i % CPR, p = n / BN;
            const i64 col = col0 + n % BN;
            const bool ok = col < N;
            const i64 row = GATE_UP ? w1_row(p, ok ? col : 0, N) : (ok ? col : 0);
            stage_chunk(Bs + chunk_at<BK>(n, c) * 8, w_e + row * w_sn, k0 + c * 8, K, ok, w_vec);
        }
    };

    float acc[MT][PAIRS][NT][4];
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int p = 0; p < PAIRS; p++)
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int q = 0; q < 4; q++) acc[i][p][j][q] = 0.0f;

    /* Fragments of buffer s: A by ldmatrix_x4 (matrices: rows 0-7 / 8-15 ×
     * k 0-7 / 8-15), B (rows n, k contiguous, which is Bᵀ as mma wants it)
     * by ldmatrix_x4 for two n tiles or _x2 for one. */
    auto compute = [&](int s) {
        const elem_mm *As = (const elem_mm *)(smem + s * (A_BYTES + B_BYTES));
        const elem_mm *Bs = (const elem_mm *)(smem + s * (A_BYTES + B_BYTES) + A_BYTES);
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) {
            u32 af[MT][4];
#pragma unroll
            for (int i = 0; i < MT; i++) {
                const int r = wm * WM + i * 16 + lane % 8 + (lane / 8) % 2 * 8;
                ldmatrix_x4(af[i], As + chunk_at<BK>(r, kk * 2 + lane / 16) * 8);
            }
#pragma unroll
            for (int p = 0; p < PAIRS; p++) {
#pragma unroll
                for (int j = 0; j < NT; j += 2) {
                    const int n = p * BN + wn * WN + j * 8;
                    u32 bf[4];
                    if (j + 1 < NT) {
                        ldmatrix_x4(bf, Bs + chunk_at<BK>(n + lane % 8 + lane / 16 * 8,
                                                          kk * 2 + (lane / 8) % 2) * 8);
                    } else {
                        ldmatrix_x2(bf, Bs + chunk_at<BK>(n + lane % 8, kk * 2 + (lane / 8) % 2) * 8);
                    }
#pragma unroll
                    for (int i = 0; i < MT; i++) {
                        MMA_16816(W, acc[i][p][j], af[i], bf);
                        if (j + 1 < NT) MMA_16816(W, acc[i][p][j + 1], af[i], bf + 2);
                    }
                }
            }
        }
    };

    const i64 nk = (K + BK - 1) / BK;
    if (STAGES == 1) {
        for (i64 kt = 0; kt < nk; kt++) {
            stage(0, kt);
            cp_async_commit();
            cp_async_wait<0>();
            __syncthreads();
            compute(0);
            __syncthreads();
        }
    } else {
        /* Step kt waits for its own copies, then refills the buffer step
         * kt − 1 read (every thread is past it after the barrier). A group
         * is committed every step, empty or not, so the wait counts hold. */
#pragma unroll 1
        for (int s = 0; s < STAGES - 1; s++) {
            if (s < nk) stage(s, s);
            cp_async_commit();
        }
#pragma unroll 1
        for (i64 kt = 0; kt < nk; kt++) {
            cp_async_wait<(STAGES > 1 ? STAGES - 2 : 0)>();
            __syncthreads();
            const i64 next = kt + STAGES - 1;
            if (next < nk) stage((int)(next % STAGES), next);
            cp_async_commit();
            compute((int)(kt % STAGES));
        }
        cp_async_wait<0>();
    }

    /* Epilogue: lane (g, c) holds rows g and g + 8, columns c and c + 1 of
     * each fragment. */
    const int g = lane / 4, c2 = lane % 4 * 2;
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int q = 0; q < 4; q++) {
                const int r = wm * WM + i * 16 + g + q / 2 * 8;
                const i64 col = col0 + wn * WN + j * 8 + c2 + q % 2;
                if (r >= nr || col >= N) continue;
                put_output<GATE_UP>(acc[i][0][j][q], acc[i][PAIRS - 1][j][q], r0 + r, col, N,
                                    bias, h, y, y_st);
            }
}

#define UP_TILE UP_BM, UP_BN, UP_BK, UP_THREADS, UP_STAGES, UP_WARPS_M
#define DOWN_TILE DOWN_BM, DOWN_BN, DOWN_BK, DOWN_THREADS, DOWN_STAGES, DOWN_WARPS_M

#else /* FMA */

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

#endif /* MMA */

/* The expert's bias row, or NULL when the layer has none (never read). */
#define BIAS_ROW(has, b, e, se) ((has) ? (b) + (i64)(e) * (se) : (const ELEM(B) *)0)

/* Gate/up GEMM + activation with K = H, N = I; h is [R, I], f32 (MMA: the
 * weight dtype). a_vec and
 * w_vec: x and W1 rows are 16-byte aligned with K a multiple of 8 (the
 * host checks), so whole chunks go by cp.async. */
extern "C" __global__ void __launch_bounds__(UP_THREADS, 1)
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
XATTN_EXPORT(moe_up)

/* Down GEMM with K = I, N = H: y_r = h_r·W2_eᵀ + b2_e. */
extern "C" __global__ void __launch_bounds__(DOWN_THREADS, 1)
    moe_down(i64 R, int E, i64 K, i64 N, const int *offsets, i64 off_st, const float *h,
             int a_vec, const ELEM(W) *w2, i64 w_se, i64 w_sn, int w_vec, const ELEM(B) *b2,
             i64 b_se, ELEM(IO) *y, i64 y_st)
{
    XATTN_DYNAMIC_SMEM(smem);
    i64 r0, r1;
    int e;
    if (!find_tile(offsets, off_st, E, R, DOWN_BM, blockIdx.x, &r0, &r1, &e)) return;
    const i64 col0 = (i64)blockIdx.y * DOWN_BN;
#if MMA
    const ELEM(W) *a = (const ELEM(W) *)h + r0 * K; /* h in the weight dtype */
#else
    const float *a = h + r0 * K;
#endif
    gemm_tile<false, DOWN_TILE>(smem, K, N, r1 - r0, col0, a, K, a_vec != 0, w2 + e * w_se,
                                w_sn, w_vec != 0, BIAS_ROW(HAS_B2, b2, e, b_se), r0,
                                (float *)0, y, y_st);
}
XATTN_EXPORT(moe_down)
