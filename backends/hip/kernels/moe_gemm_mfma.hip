/* MoE expert GEMMs on CDNA matrix cores (MFMA, wave64), f16/bf16
 * activations and weights of one dtype, grouped over the expert segments
 * of the permuted rows. The contract of the CUDA module's moe_gemm.cu
 * (MMA=1 form), with the same arguments:
 *   moe_up_mfma    h[r, c] = act(x_r·W1_e[gate c] + b1, x_r·W1_e[up c] + b1),
 *                  stored in the weight dtype (what moe_down_mfma stages)
 *   moe_down_mfma  y[r, n] = h_r·W2_e[n] + b2, rounded to IO once
 *
 * Work without reading expert_offsets on the host: dimension x of the grid
 * counts virtual row tiles, R / BM + E of them; expert e owns tiles
 * [o_e / BM + e, ...) (o_e its segment start clamped to [0, R]), found by
 * binary search (find_tile); a workgroup without rows returns whole, before
 * any barrier. Dimension y counts column tiles of BN.
 *
 * The instruction: v_mfma_f32_16x16x16{f16,bf16_1k}, layouts as written in
 * attn_mfma.hip (lane l, g = l / 16: A[l % 16][4g .. 4g + 3],
 * B[4g .. 4g + 3][l % 16], D register r = D[4g + r][l % 16]). Here A is 16
 * rows of x (or h) × 16 k, B[k][n] = W[n][k] (weights are [N][K], k
 * contiguous), so both operands are 4 consecutive k of one row: one 8-byte
 * LDS read each, from tiles stored row-major with 8-byte units XOR-swizzled
 * by the row (unit_at), 16 lanes reading 16 rows over 32 banks. Lane l's
 * accumulator register r is output row 4g + r, column l % 16 of its tile;
 * the gate and up accumulators of a column sit in the same lane, so the
 * activation is applied in registers.
 *
 * Waves: THREADS / 64 of them as WARPS_M × WARPS_N, each owning WM × WN
 * outputs (per pair), MT × NT tiles of 16 × 16. K walks BK at a time: step
 * kt + 1 is loaded from global memory into registers while step kt is
 * computed from LDS, then written to the other of two LDS buffers (STAGES
 * ≥ 2; one barrier a step) or to the only one (STAGES = 1; two barriers).
 * Rows past the segment, columns past N and k past K are zeros.
 *
 * Build options: -DIO, -DW (one 16-bit dtype; -DIO_BF16=1 / -DW_BF16=1 for
 * bf16), -DB and -DB_F32/-DB_F16/-DB_BF16 (bias dtype, defined without
 * biases too), -DHAS_B1, -DHAS_B2, -DW1_IL, the activation (-DACT_GEGLU=1,
 * or -DACT_CLAMPED=1 -DACT_ALPHA= -DACT_LIMIT=; SwiGLU otherwise), and per
 * GEMM G = UP, DOWN: G_BM, G_BN, G_BK, G_THREADS, G_STAGES, G_WARPS_M.
 *
 * Targets: as attn_mfma.hip: where the instruction for the dtype is missing
 * (RDNA such as gfx1030; bf16 on gfx908) the kernels compile to a trap and
 * the host runs the portable GEMMs instead. */

/* CDNA1-3 as ROCm 5.2-6.x name them; anything newer stays off until its
 * builtins have been compiled for it. (The CPU emulator of tests/hip_emu
 * defines the target's macro and supplies these builtins with the layouts
 * above, so it runs this same code.) */
#if defined(__gfx908__) || defined(__gfx90a__) || defined(__gfx940__) || \
    defined(__gfx941__) || defined(__gfx942__)
#define MF_HW_F16 1
#endif
#if defined(__gfx90a__) || defined(__gfx940__) || defined(__gfx941__) || defined(__gfx942__)
#define MF_HW_BF16 1
#endif
#if (defined(W_BF16) && W_BF16) || (defined(IO_BF16) && IO_BF16)
#define MF_BF16 1
#define MF_HW MF_HW_BF16
#else
#define MF_BF16 0
#define MF_HW MF_HW_F16
#endif
#ifndef HAS_B1
#define HAS_B1 0
#endif
#ifndef HAS_B2
#define HAS_B2 0
#endif
#ifndef W1_IL
#define W1_IL 0
#endif

namespace xattn_mfma_moe {

typedef long long i64;
typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef float f32x4 __attribute__((ext_vector_type(4)));
typedef u32 u32x4 __attribute__((ext_vector_type(4)));
typedef _Float16 f16x4 __attribute__((ext_vector_type(4)));
typedef short i16x4 __attribute__((ext_vector_type(4)));

#define MF_DEV __device__ __attribute__((always_inline)) inline

MF_DEV float to_f32(u16 h)
{
#if MF_BF16
    return __builtin_bit_cast(float, (u32)h << 16);
#else
    return (float)__builtin_bit_cast(_Float16, h);
#endif
}
MF_DEV u16 from_f32(float f)
{
#if MF_BF16
    u32 u = __builtin_bit_cast(u32, f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (u16)(u >> 16);
#else
    return __builtin_bit_cast(u16, (_Float16)f);
#endif
}

/* The bias dtype. */
#if defined(B_F32) && B_F32
typedef float elem_b;
MF_DEV float bias_at(const elem_b *p, i64 i) { return p[i]; }
#elif defined(B_BF16) && B_BF16
typedef u16 elem_b;
MF_DEV float bias_at(const elem_b *p, i64 i) { return __builtin_bit_cast(float, (u32)p[i] << 16); }
#else
typedef u16 elem_b;
MF_DEV float bias_at(const elem_b *p, i64 i) { return (float)__builtin_bit_cast(_Float16, p[i]); }
#endif

/* acc += A·B, one 16×16×16 tile. */
MF_DEV f32x4 mf_mma(u64 a, u64 b, f32x4 acc)
{
#if MF_HW && MF_BF16
    return __builtin_amdgcn_mfma_f32_16x16x16bf16_1k(__builtin_bit_cast(i16x4, a),
                                                     __builtin_bit_cast(i16x4, b), acc, 0, 0, 0);
#elif MF_HW
    return __builtin_amdgcn_mfma_f32_16x16x16f16(__builtin_bit_cast(f16x4, a),
                                                 __builtin_bit_cast(f16x4, b), acc, 0, 0, 0);
#else
    (void)a;
    (void)b;
    __builtin_trap(); /* no instruction for this dtype: never selected */
    return acc;
#endif
}

/* act(g)·u: SiLU, the tanh GELU (-DACT_GEGLU=1) or GPT-OSS's clamped
 * SwiGLU (-DACT_CLAMPED=1), as the CUDA prelude defines them. */
MF_DEV float glu(float g, float u)
{
#if defined(ACT_CLAMPED) && ACT_CLAMPED
    g = g > ACT_LIMIT ? ACT_LIMIT : g;
    u = u > ACT_LIMIT ? ACT_LIMIT : u < -ACT_LIMIT ? -ACT_LIMIT : u;
    return g / (1.0f + expf(-ACT_ALPHA * g)) * (u + 1.0f);
#elif defined(ACT_GEGLU) && ACT_GEGLU
    return g / (1.0f + expf(-(1.5957691216057308f * (g + 0.044715f * g * g * g)))) * u;
#else
    return g / (1.0f + expf(-g)) * u;
#endif
}

/* Row range [*r0, *r1) and expert of virtual row tile v of bm rows; false
 * when the tile has no rows. Offsets are clamped to [0, R]. */
MF_DEV bool find_tile(const int *off, i64 off_st, int E, i64 R, i64 bm, i64 v, i64 *r0, i64 *r1,
                      int *expert)
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
MF_DEV i64 w1_row(int p, i64 c, i64 n) { return W1_IL ? 2 * c + p : p * n + c; }

/* Element offset of unit u (4 elements) of row r, U units a row: see
 * attn_mfma.hip. */
template <int U> MF_DEV int unit_at(int r, int u)
{
    int s = u;
    if (U >= 16) s = u < (U & ~15) ? u ^ (r & 15) : u;
    else if (U == 8) s = u ^ ((r >> 1) & 7);
    else if (U == 4) s = u ^ ((r >> 2) & 3);
    return (r * U + s) * 4;
}

/* Elements k .. k + 7 of a row, zeros past K or for a row of no data; one
 * 16-byte load when vec (rows 16-byte aligned, K a multiple of 8). */
MF_DEV u32x4 load8(const u16 *row, i64 k, i64 K, bool ok, bool vec)
{
    u32x4 x = {0u, 0u, 0u, 0u};
    if (!ok || k >= K) return x;
    if (vec) return *(const u32x4 *)(row + k);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const u32 lo = k + 2 * i < K ? row[k + 2 * i] : 0u;
        const u32 hi = k + 2 * i + 1 < K ? row[k + 2 * i + 1] : 0u;
        x[i] = lo | hi << 16;
    }
    return x;
}

/* One BM × BN tile (per pair) of one expert: rows a + r·a_st (r < nr) of
 * K elements, weights w_e rows at n·w_sn. */
template <bool GATE_UP, int BM, int BN, int BK, int THREADS, int STAGES, int WARPS_M>
MF_DEV void gemm_tile(u16 *smem, i64 K, i64 N, i64 nr, i64 col0, const u16 *a, i64 a_st,
                      bool a_vec, const u16 *w_e, i64 w_sn, bool w_vec, const elem_b *bias,
                      i64 r0, u16 *h, u16 *y, i64 y_st)
{
    constexpr int PAIRS = GATE_UP ? 2 : 1;
    constexpr int WAVES = THREADS / 64, WARPS_N = WAVES / WARPS_M;
    constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N, MT = WM / 16, NT = WN / 16;
    constexpr int CPR = BK / 8, U = BK / 4; /* 16-byte chunks, 8-byte units a row */
    constexpr int A_ELEMS = BM * BK, BUF = (BM + PAIRS * BN) * BK, NB = STAGES > 1 ? 2 : 1;
    constexpr int A_LOADS = (BM * CPR + THREADS - 1) / THREADS;
    constexpr int B_LOADS = (PAIRS * BN * CPR + THREADS - 1) / THREADS;
    static_assert(THREADS % 64 == 0 && WAVES % WARPS_M == 0 && WM % 16 == 0 && WN % 16 == 0 &&
                      BK % 16 == 0,
                  "MoE MFMA tile does not split into 16x16x16 tiles");
    const int tid = threadIdx.x, lane = tid % 64, wave = tid / 64, g = lane / 16;
    const int wm = wave % WARPS_M, wn = wave / WARPS_M;

    u32x4 ra[A_LOADS], rb[B_LOADS];
    auto load = [&](i64 kt) {
        const i64 k0 = kt * BK;
#pragma unroll
        for (int i = 0; i < A_LOADS; i++) {
            const int e = tid + i * THREADS, r = e / CPR, c = e % CPR;
            const bool ok = e < BM * CPR && r < nr;
            ra[i] = load8(a + (ok ? r : 0) * a_st, k0 + c * 8, K, ok, a_vec);
        }
#pragma unroll
        for (int i = 0; i < B_LOADS; i++) {
            const int e = tid + i * THREADS, n = e / CPR, c = e % CPR, p = n / BN;
            const i64 col = col0 + n % BN;
            const bool ok = e < PAIRS * BN * CPR && col < N;
            const i64 row = GATE_UP ? w1_row(p, ok ? col : 0, N) : (ok ? col : 0);
            rb[i] = load8(w_e + row * w_sn, k0 + c * 8, K, ok, w_vec);
        }
    };
    auto store = [&](int s) {
        u16 *As = smem + s * BUF, *Bs = As + A_ELEMS;
#pragma unroll
        for (int i = 0; i < A_LOADS; i++) {
            const int e = tid + i * THREADS, r = e / CPR, c = e % CPR;
            if (e >= BM * CPR) break;
            *(u64 *)(As + unit_at<U>(r, 2 * c)) = (u64)ra[i][0] | (u64)ra[i][1] << 32;
            *(u64 *)(As + unit_at<U>(r, 2 * c + 1)) = (u64)ra[i][2] | (u64)ra[i][3] << 32;
        }
#pragma unroll
        for (int i = 0; i < B_LOADS; i++) {
            const int e = tid + i * THREADS, n = e / CPR, c = e % CPR;
            if (e >= PAIRS * BN * CPR) break;
            *(u64 *)(Bs + unit_at<U>(n, 2 * c)) = (u64)rb[i][0] | (u64)rb[i][1] << 32;
            *(u64 *)(Bs + unit_at<U>(n, 2 * c + 1)) = (u64)rb[i][2] | (u64)rb[i][3] << 32;
        }
    };

    f32x4 acc[MT][PAIRS][NT];
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int p = 0; p < PAIRS; p++)
#pragma unroll
            for (int j = 0; j < NT; j++) acc[i][p][j] = (f32x4){0.0f, 0.0f, 0.0f, 0.0f};

    /* A operand: rows wm·WM + i·16 + l % 16; B: weight rows (columns of the
     * output) p·BN + wn·WN + j·16 + l % 16; k units kk·4 + g. */
    auto compute = [&](int s) {
        const u16 *As = smem + s * BUF, *Bs = As + A_ELEMS;
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) {
            u64 af[MT];
#pragma unroll
            for (int i = 0; i < MT; i++)
                af[i] = *(const u64 *)(As + unit_at<U>(wm * WM + i * 16 + lane % 16, kk * 4 + g));
#pragma unroll
            for (int p = 0; p < PAIRS; p++)
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    const u64 bf = *(const u64 *)(Bs + unit_at<U>(p * BN + wn * WN + j * 16 +
                                                                       lane % 16,
                                                                   kk * 4 + g));
#pragma unroll
                    for (int i = 0; i < MT; i++) acc[i][p][j] = mf_mma(af[i], bf, acc[i][p][j]);
                }
        }
    };

    const i64 nk = (K + BK - 1) / BK;
    if (nk > 0) {
        load(0);
        store(0);
        __syncthreads();
    }
#pragma unroll 1
    for (i64 kt = 0; kt < nk; kt++) {
        if (kt + 1 < nk) load(kt + 1); /* in flight while step kt computes */
        compute((int)(kt % NB));
        if (kt + 1 < nk) {
            if (NB == 1) __syncthreads(); /* everyone is done with the buffer */
            store((int)((kt + 1) % NB));
            __syncthreads();
        }
    }

    /* Epilogue: lane l, register q of tile (i, j) is row wm·WM + i·16 + 4g
     * + q, column wn·WN + j·16 + l % 16. */
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int q = 0; q < 4; q++) {
                const int r = wm * WM + i * 16 + 4 * g + q;
                const i64 col = col0 + wn * WN + j * 16 + lane % 16;
                if (r >= nr || col >= N) continue;
                float v = acc[i][0][j][q];
                if (GATE_UP) {
                    float u = acc[i][PAIRS - 1][j][q];
                    if (HAS_B1) {
                        v += bias_at(bias, w1_row(0, col, N));
                        u += bias_at(bias, w1_row(1, col, N));
                    }
                    h[(r0 + r) * N + col] = from_f32(glu(v, u)); /* what moe_down stages */
                } else {
                    if (HAS_B2) v += bias_at(bias, col);
                    y[(r0 + r) * y_st + col] = from_f32(v);
                }
            }
}

} /* namespace xattn_mfma_moe */

#define UP_TILE UP_BM, UP_BN, UP_BK, UP_THREADS, UP_STAGES, UP_WARPS_M
#define DOWN_TILE DOWN_BM, DOWN_BN, DOWN_BK, DOWN_THREADS, DOWN_STAGES, DOWN_WARPS_M
#define BIAS_ROW(has, b, e, se) \
    ((has) ? (const xattn_mfma_moe::elem_b *)(b) + (long long)(e) * (se) \
           : (const xattn_mfma_moe::elem_b *)0)

/* Gate/up GEMM + activation with K = H, N = I; h is [R, I] in the weight
 * dtype (in a region sized for f32). a_vec / w_vec: x and W1 rows 16-byte
 * aligned and K a multiple of 8 (the host checks). */
extern "C" __global__ void __launch_bounds__(UP_THREADS)
    moe_up_mfma(long long R, int E, long long K, long long N, const int *offsets, long long off_st,
                const unsigned short *x, long long x_st, int a_vec, const unsigned short *w1,
                long long w_se, long long w_sn, int w_vec, const void *b1, long long b_se,
                float *h)
{
#if MF_HW
    using namespace xattn_mfma_moe;
    extern __shared__ __attribute__((aligned(16))) unsigned char smem_up[];
    i64 r0, r1;
    int e;
    if (!find_tile(offsets, off_st, E, R, UP_BM, blockIdx.x, &r0, &r1, &e)) return;
    const i64 col0 = (i64)blockIdx.y * UP_BN;
    gemm_tile<true, UP_TILE>((u16 *)smem_up, K, N, r1 - r0, col0, x + r0 * x_st, x_st,
                             a_vec != 0, w1 + e * w_se, w_sn, w_vec != 0,
                             BIAS_ROW(HAS_B1, b1, e, b_se), r0, (u16 *)h, (u16 *)0, 0);
#else
    __builtin_trap(); /* no MFMA for this dtype here: the host never selects it */
#endif
}

/* Down GEMM with K = I, N = H: y_r = h_r·W2_eᵀ + b2_e; h in the weight
 * dtype as moe_up_mfma left it. */
extern "C" __global__ void __launch_bounds__(DOWN_THREADS)
    moe_down_mfma(long long R, int E, long long K, long long N, const int *offsets,
                  long long off_st, const float *h, int a_vec, const unsigned short *w2,
                  long long w_se, long long w_sn, int w_vec, const void *b2, long long b_se,
                  unsigned short *y, long long y_st)
{
#if MF_HW
    using namespace xattn_mfma_moe;
    extern __shared__ __attribute__((aligned(16))) unsigned char smem_down[];
    i64 r0, r1;
    int e;
    if (!find_tile(offsets, off_st, E, R, DOWN_BM, blockIdx.x, &r0, &r1, &e)) return;
    const i64 col0 = (i64)blockIdx.y * DOWN_BN;
    const u16 *a = (const u16 *)h + r0 * K;
    gemm_tile<false, DOWN_TILE>((u16 *)smem_down, K, N, r1 - r0, col0, a, K, a_vec != 0,
                                w2 + e * w_se, w_sn, w_vec != 0, BIAS_ROW(HAS_B2, b2, e, b_se),
                                r0, (u16 *)0, y, y_st);
#else
    __builtin_trap(); /* no MFMA for this dtype here: the host never selects it */
#endif
}
