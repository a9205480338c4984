/* attn_mfma: FlashAttention-2 forward for f16/bf16 on CDNA matrix cores
 * (MFMA), wave64. The same contract, argument struct and work numbering as
 * the CUDA module's attn_mma (backends/cuda/kernels/attn.cu), so the host
 * launches either with the same attn_args and grid: one workgroup per plan
 * work item (sequence, head group, query tile, KV split), or per ragged
 * tile when tile_space > 0.
 *
 * ---- The matrix instruction -------------------------------------------------
 * v_mfma_f32_16x16x16{f16,bf16_1k}: D[16×16] = A[16×16]·B[16×16] + C, f32
 * accumulators, one wave of 64 lanes. Register layouts (AMD Matrix
 * Instruction Calculator for CDNA2/CDNA3; "AMD matrix cores", ROCm lab
 * notes), lane l, g = l / 16:
 *   A: lane l holds A[l % 16][4g .. 4g + 3]     (two VGPRs, 4 × 16 bits,
 *   B: lane l holds B[4g .. 4g + 3][l % 16]      lower k in the lower half)
 *   C/D: lane l, register r holds D[4g + r][l % 16]
 * Both 16-bit forms take the same layout (bf16_1k is the gfx90a+ bf16 form
 * with K = 16; gfx908 has only the K = 8 bf16 form, see MF_HW_BF16 below).
 *
 * Why 16×16×16 and not 32×32×8: both run at the same rate (1024 f16
 * FLOP/clock/CU on MI200), 32×32×8 halves LDS operand traffic, but it needs
 * 32 query rows per wave and 16 accumulators per tile, and the plans this
 * kernel runs (matrix_m = 16 in the AMD presets) have 16-row tiles for
 * decode and MLA, whose O (Dv 512) already fills a wave's registers. One
 * instruction shape keeps one index scheme.
 *
 * ---- Everything transposed: one query row per lane ----------------------------
 * The kernel computes Sᵀ = K·Qᵀ (A = 16 keys × 16 dims of K, B = 16 dims ×
 * 16 query rows of Qᵀ) and Oᵀ = Vᵀ·Pᵀ (A = 16 Dv columns × 16 keys of Vᵀ,
 * B = Pᵀ). Then, by the layouts above:
 *   - Sᵀ's accumulator, lane l register r, is the score of query row l % 16
 *     and key 4g + r: each lane sees one query row, so the row max and sum
 *     are 4 registers per tile plus two shuffles (xor 16, xor 32);
 *   - the B operand of Oᵀ = Vᵀ·Pᵀ wants, in lane l, Pᵀ[4g .. 4g + 3][l % 16]
 *     = P of row l % 16 and keys 4g .. 4g + 3: exactly the lane's own Sᵀ
 *     registers, rounded to 16 bits. P never moves between lanes;
 *   - Oᵀ's accumulator, lane l register r, is O[row l % 16][column 4g + r]:
 *     the rescale by exp2(m_old − m_new) uses the lane's own row statistics.
 * The A operand of Sᵀ (K) and the B operand (Q) are 4 consecutive head-dim
 * elements of one row: one 8-byte LDS read. Vᵀ's A operand is 4 consecutive
 * keys of one Dv column, so V is stored transposed in LDS (Vt[Dv][BK]),
 * transposed once per tile when it is written.
 *
 * ---- Workgroup, LDS and pipeline ------------------------------------------------
 * WARPS_M × WARPS_N waves: wave w owns row band wm = w % WARPS_M (BQ /
 * WARPS_M rows, MR tiles of 16) and Dv slice wn = w / WARPS_M (DVW = DV_PAD
 * / WARPS_N columns, NV tiles of 16). Waves sharing a band compute its Sᵀ
 * each (no P through LDS), as in attn_mma.
 * LDS, in 16-bit elements, no padding (dynamic, 2·(BQ·DQK_PAD + NB·BK·
 * (DQK_PAD + DV_PAD)) bytes, never more than the plan's local_mem_bytes):
 *   Q [BQ][DQK_PAD], then NB buffers of (K [BK][DQK_PAD], Vt [DV_PAD][BK]),
 *   NB = 2 when the plan has STAGES ≥ 2, else 1.
 * Rows are made of 8-byte units (4 elements); unit u of row r is stored at
 * unit u ^ f(r) (unit_at) so that the 16 lanes of an MFMA operand read,
 * which take the same unit of 16 consecutive rows, hit 32 different banks.
 * Tile n + 1 is loaded from global memory into registers before tile n is
 * computed and written to LDS after it (into the other buffer when NB = 2,
 * one barrier a tile; after a second barrier when NB = 1). Keys outside
 * [kb, ke), keys of a bad page and head-dim padding are zeros.
 *
 * ---- Per key tile ----------------------------------------------------------------
 * In chunks of KC keys (S is MR·KC/4 floats per lane): chunks no row of the
 * wave sees are skipped; the score in the log2 domain (scale·log2e folded
 * in; soft cap; ALiBi); the mask only in chunks where some key is hidden
 * from some row of the band; online softmax with exp2; Oᵀ += Vᵀ·Pᵀ. Masked
 * chunks whose V holds inf or NaN run P·V on V cleaned of them and count
 * the visible non-finite elements with a second MFMA (as attn_mma's
 * pv_chunk, codes in base 32), so a hidden key's NaN never reaches a row.
 * Epilogue: row sums over the 4 lane groups, empty rows (O = 0, LSE = −inf),
 * sinks, O and LSE, or f32 partials [split][row][head][DV_PAD] + LSE when
 * the plan splits KV (merged by the portable split_merge kernel).
 *
 * Options: -DIO=f16|bf16 (-DIO_BF16=1 for bf16), -DBQ, -DBK,
 * -DWARPS_M, -DWARPS_N, -DSTAGES, -DDQK, -DDV, -DDQK_PAD, -DDV_PAD; optional
 * -DKC (default min(BK, 64 / MR)), -DQ_REGS (Q fragments kept in
 * registers; default when they take at most 48 VGPRs) and -DQ_DIRECT=1 (Q
 * read from global memory straight into registers, no Q region in LDS:
 * LDS is then NB × BK × (DQK_PAD + DV_PAD) elements; for MLA-size heads,
 * where Q in LDS would leave room for 16-row tiles only).
 *
 * Targets: the MFMA builtins exist only on CDNA and are guarded by the
 * target macros (hiprtc aborts the process on a builtin the target lacks),
 * so the file compiles for every target. Where the instruction for the
 * dtype is missing (every RDNA target such as gfx1030, wave32; bf16 on
 * gfx908, which has only the K = 8 bf16 form) the kernel compiles to a
 * trap: the host must not select it there and runs the portable kernel
 * instead (a wrong selection faults rather than returning garbage). */

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
#if defined(IO_BF16) && IO_BF16
#define MF_BF16 1
#define MF_HW MF_HW_BF16
#else
#define MF_BF16 0
#define MF_HW MF_HW_F16
#endif

/* Everything in a namespace: the module's prelude is put in front of this
 * file, and its helpers may share names with the ones here. */
namespace xattn_mfma {

typedef long long i64;
typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef float f32x4 __attribute__((ext_vector_type(4)));
typedef u32 u32x4 __attribute__((ext_vector_type(4)));
typedef _Float16 f16x4 __attribute__((ext_vector_type(4)));
typedef short i16x4 __attribute__((ext_vector_type(4)));

#define MF_DEV __device__ __attribute__((always_inline)) inline

MF_DEV float mf_inf() { return __builtin_bit_cast(float, 0x7f800000u); }
MF_DEV float mf_nan() { return __builtin_bit_cast(float, 0x7fc00000u); }
#define MF_LOG2E 1.4426950408889634f
#define MF_LN2 0.6931471805599453f

/* 16-bit element ⇄ f32. f16: the hardware conversion (round to nearest
 * even); bf16: integer rounding to nearest even, NaN kept quiet. */
MF_DEV float mf_to_f32(u16 h)
{
#if defined(IO_BF16) && IO_BF16
    return __builtin_bit_cast(float, (u32)h << 16);
#else
    return (float)__builtin_bit_cast(_Float16, h);
#endif
}
MF_DEV u16 mf_from_f32(float f)
{
#if defined(IO_BF16) && IO_BF16
    u32 u = __builtin_bit_cast(u32, f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (u16)(u >> 16);
#else
    return __builtin_bit_cast(u16, (_Float16)f);
#endif
}
/* Four floats as one MFMA operand (element 0 in the low bits). */
MF_DEV u64 mf_pack4(float a, float b, float c, float d)
{
    return (u64)mf_from_f32(a) | (u64)mf_from_f32(b) << 16 | (u64)mf_from_f32(c) << 32 |
           (u64)mf_from_f32(d) << 48;
}

/* acc += A·B for one 16×16×16 tile in the layouts of the header comment;
 * a and b are the lane's 4 elements. */
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

#define KV_UNIFORM 0
#define KV_RAGGED 1
#define KV_PAGED 2

/* The host's attn_args (attn.c), field for field as attn_mma's plus the
 * HIP module's trailing dv_pad. */
typedef struct attn_args {
    int batch, seqlen_q, seqlen_k, hq, group, kv_splits, split_len;
    int q_ragged, kv_layout, page_size, num_pages, max_pages;
    i64 total_q, total_k;
    int wl, wr;
    float scale, softcap;
    int has_lse, has_alibi, has_sinks;
    const u16 *q;
    i64 q_sb, q_st, q_sh;
    const u16 *k;
    i64 k_sb, k_st, k_sh;
    const u16 *v;
    i64 v_sb, v_st, v_sh;
    u16 *o;
    i64 o_sb, o_st, o_sh;
    float *lse;
    i64 lse_sh, lse_st;
    const int *cu_q, *cu_k, *block_table;
    i64 bt_stride;
    const int *seqlens_k;
    const float *slopes, *sinks;
    float *part;
    int pack, head_groups, q_tiles, aligned;
    i64 tile_space;
    i64 dv_pad; /* the partials' row pitch; DV_PAD here, which it must equal */
} attn_args;

MF_DEV i64 clampl(i64 x, i64 lo, i64 hi) { return x < lo ? lo : x > hi ? hi : x; }
MF_DEV i64 minl(i64 a, i64 b) { return a < b ? a : b; }
MF_DEV i64 maxl(i64 a, i64 b) { return a > b ? a : b; }

#define THREADS (WARPS_M * WARPS_N * 64)
#define ROWS_W (BQ / WARPS_M) /* rows of a wave's band */
#define MR (ROWS_W / 16)      /* 16-row tiles of the band */
#define DVW (DV_PAD / WARPS_N) /* O columns of a wave */
#define NV (DVW / 16)         /* 16-column tiles of a wave's O */
#define NS (KC / 16)          /* 16-key tiles of S per chunk */
#define KS (DQK_PAD / 16)     /* k-steps of S = K·Qᵀ */
#define QC (DQK_PAD / 8)      /* 16-byte chunks of a Q or K row */
#define VC (DV_PAD / 8)       /* 16-byte chunks of a V row */
#define QU (DQK_PAD / 4)      /* 8-byte units of a Q or K row in LDS */
#define VU (BK / 4)           /* 8-byte units of a Vt row in LDS */
#ifndef Q_DIRECT
#define Q_DIRECT 0
#endif
#define Q_ELEMS (Q_DIRECT ? 0 : BQ * DQK_PAD)
#define K_ELEMS (BK * DQK_PAD)
#define BUF_ELEMS (BK * (DQK_PAD + DV_PAD))
#define NB (STAGES > 1 ? 2 : 1)
/* Per thread: 16-byte chunks of K, and pairs of chunks (two keys) of V. */
#define K_LOADS ((BK * QC + THREADS - 1) / THREADS)
#define V_LOADS ((BK / 2 * VC + THREADS - 1) / THREADS)
/* S is MR·KC/4 floats a lane: 16 keeps bf16 plans of MR = 2 free of
 * scratch on gfx90a (tools/hip_inspect.sh). */
#ifndef KC
#define KC (BK < 64 / MR ? BK : 64 / MR)
#endif
#ifndef Q_REGS
#define Q_REGS (Q_DIRECT || MR * KS * 2 <= 48)
#endif
#if Q_DIRECT && !Q_REGS
#error "attn_mfma: Q_DIRECT keeps Q in registers only (Q_REGS=1)"
#endif

#if BQ % (16 * WARPS_M) || BK % KC || KC % 16 || BK % 16 || DQK_PAD % 16 || \
    DV_PAD % (16 * WARPS_N) || DQK % 8 || DV % 8
#error "attn_mfma: tile options do not fit the 16x16x16 MFMA tiles"
#endif

/* Element offset of unit u (4 elements) of row r in a tile of U units per
 * row. An operand read takes one unit of 16 consecutive rows; XOR-ing the
 * row into the unit spreads them over the 32 banks: 16 rows of ≥ 16 units
 * (full 16-unit groups only; a tail stays in place), 2 rows a 32-bank line
 * for U = 8, 4 rows for U = 4. */
template <int U> MF_DEV int unit_at(int r, int u)
{
    int s = u;
    if (U >= 16) s = u < (U & ~15) ? u ^ (r & 15) : u;
    else if (U == 8) s = u ^ ((r >> 1) & 7);
    else if (U == 4) s = u ^ ((r >> 2) & 3);
    return (r * U + s) * 4;
}

MF_DEV u64 lds8(const u16 *p) { return *(const u64 *)p; }

/* 16 bytes of global memory (8 elements), zeros when !ok. */
MF_DEV u32x4 load16(const u16 *src, bool ok, int aligned)
{
    u32x4 x = {0u, 0u, 0u, 0u};
    if (!ok) return x;
    if (aligned) return *(const u32x4 *)src;
    for (int i = 0; i < 4; i++) x[i] = (u32)src[2 * i] | (u32)src[2 * i + 1] << 16;
    return x;
}

/* Where K and V rows of this workgroup's sequence and KV head are. */
struct kv_src {
    const u16 *k, *v; /* offset by the KV head (and batch when uniform) */
    i64 k_sb, k_st, v_sb, v_st;
    const int *pages; /* paged: this sequence's block-table row */
    int layout, page_size, num_pages;
    i64 tok0; /* contiguous layouts: token of key 0 */
};

/* Element offsets of key j's K and V rows, or false for a bad page. */
MF_DEV bool kv_rows(const kv_src &s, int j, i64 &ko, i64 &vo)
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

/* The registers a tile travels in between global memory and LDS. */
struct kv_regs {
    u32x4 k[K_LOADS];
    u32x4 v[V_LOADS][2];
};

/* Keys [k0, k0 + BK) into registers; keys outside [kb, ke) are zeros and
 * not read. With pages holding whole tiles the page is looked up once,
 * else per key (any page size). */
MF_DEV void load_kv(const kv_src &s, int k0, int kb, int ke, kv_regs &r, int t, int aligned)
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
#pragma unroll
    for (int i = 0; i < K_LOADS; i++) {
        const int e = t + i * THREADS, key = e / QC, c = e % QC, j = k0 + key;
        i64 ko = 0, vo = 0;
        bool ok = e < BK * QC && j >= kb && j < ke && c < DQK / 8;
        if (ok && one_page) {
            ok = page_ok;
            ko = page * s.k_sb + (in_page + key) * s.k_st;
        } else if (ok) {
            ok = kv_rows(s, j, ko, vo);
        }
        r.k[i] = load16(s.k + ko + c * 8, ok, aligned);
    }
#pragma unroll
    for (int i = 0; i < V_LOADS; i++) {
        const int e = t + i * THREADS, kp = e / VC, c = e % VC;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int key = 2 * kp + h, j = k0 + key;
            i64 ko = 0, vo = 0;
            bool ok = e < BK / 2 * VC && j >= kb && j < ke && c < DV / 8;
            if (ok && one_page) {
                ok = page_ok;
                vo = page * s.v_sb + (in_page + key) * s.v_st;
            } else if (ok) {
                ok = kv_rows(s, j, ko, vo);
            }
            r.v[i][h] = load16(s.v + vo + c * 8, ok, aligned);
        }
    }
}

/* The registers into one LDS buffer: K rows as they are, V transposed
 * (Vt[d][key], keys 2kp and 2kp + 1 as one 32-bit word). */
MF_DEV void store_kv(const kv_regs &r, u16 *ks, u16 *vt, int t)
{
#pragma unroll
    for (int i = 0; i < K_LOADS; i++) {
        const int e = t + i * THREADS, key = e / QC, c = e % QC;
        if (e >= BK * QC) break;
        *(u64 *)(ks + unit_at<QU>(key, 2 * c)) = (u64)r.k[i][0] | (u64)r.k[i][1] << 32;
        *(u64 *)(ks + unit_at<QU>(key, 2 * c + 1)) = (u64)r.k[i][2] | (u64)r.k[i][3] << 32;
    }
#pragma unroll
    for (int i = 0; i < V_LOADS; i++) {
        const int e = t + i * THREADS, kp = e / VC, c = e % VC;
        if (e >= BK / 2 * VC) break;
#pragma unroll
        for (int w = 0; w < 4; w++) {
            const u32 a = r.v[i][0][w], b = r.v[i][1][w];
            const int d = c * 8 + 2 * w;
            *(u32 *)(vt + unit_at<VU>(d, kp / 2) + (kp % 2) * 2) = (a & 0xffffu) | b << 16;
            *(u32 *)(vt + unit_at<VU>(d + 1, kp / 2) + (kp % 2) * 2) = a >> 16 | (b & 0xffff0000u);
        }
    }
}

/* Masked chunks whose V may hold inf or NaN (attn_mma's pv_chunk, with the
 * operands' roles swapped): the A codes are per V element (0 finite, 1 +inf,
 * 32 −inf, 1024 NaN), the B codes per (key, row) (0 hidden, 1 seen with
 * p > 0, 1024 seen with p = 0); the base-32 digits of their product count
 * the visible non-finite elements (at most 16 per digit). */
#if defined(IO_BF16) && IO_BF16
#define EXP_BITS 0x7f80u
#define MANT_BITS 0x007fu
#define CODE_ONE 0x3f80u
#define CODE_NEG 0x4200u
#define CODE_NAN 0x4480u
#else
#define EXP_BITS 0x7c00u
#define MANT_BITS 0x03ffu
#define CODE_ONE 0x3c00u
#define CODE_NEG 0x5000u
#define CODE_NAN 0x6400u
#endif

MF_DEV u64 v_code1(u64 h)
{
    if ((h & EXP_BITS) != EXP_BITS) return 0;
    if (h & MANT_BITS) return CODE_NAN;
    return h & 0x8000u ? CODE_NEG : CODE_ONE;
}
MF_DEV u64 v_code(u64 x)
{
    u64 c = 0;
#pragma unroll
    for (int i = 0; i < 4; i++) c |= v_code1(x >> (16 * i) & 0xffffu) << (16 * i);
    return c;
}
MF_DEV u64 v_clean(u64 x)
{
    u64 c = 0;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const u64 h = x >> (16 * i) & 0xffffu;
        c |= ((h & EXP_BITS) == EXP_BITS ? 0 : h) << (16 * i);
    }
    return c;
}
MF_DEV float p_code(float p, int j, int lo, int hi)
{
    return j < lo || j >= hi ? 0.0f : p == 0.0f ? 1024.0f : 1.0f;
}
MF_DEV float nonfinite_sum(float c)
{
    const int n = (int)fminf(c, 1024.0f), pos = n & 31, neg = n >> 5;
    return n >= 1024 || (pos && neg) ? mf_nan() : pos ? mf_inf() : neg ? -mf_inf() : 0.0f;
}

/* Oᵀ += Vᵀ·Pᵀ over one chunk. s[mr][kt] (now p) is the B operand of key
 * tile kt as it stands; Vᵀ's A operand of Dv tile nv is row wn·DVW + nv·16
 * + l % 16 of Vt, keys kc + kt·16 + 4g .. + 3. kc is the chunk's first key
 * in the buffer, kc0 its key index. */
template <bool SAFE>
MF_DEV void pv_chunk(f32x4 (&o)[MR][NV], const f32x4 (&s)[MR][NS], const u16 *vt, int kc,
                     int kc0, int wn, int lane, const int (&lo)[MR], const int (&hi)[MR])
{
    const int g = lane / 16;
#pragma unroll
    for (int kt = 0; kt < NS; kt++) {
        u64 pb[MR];
#pragma unroll
        for (int mr = 0; mr < MR; mr++)
            pb[mr] = mf_pack4(s[mr][kt][0], s[mr][kt][1], s[mr][kt][2], s[mr][kt][3]);
        const int unit = (kc + kt * 16) / 4 + g;
#pragma unroll
        for (int nv = 0; nv < NV; nv++) {
            u64 va = lds8(vt + unit_at<VU>(wn * DVW + nv * 16 + lane % 16, unit));
            bool bad = false;
            if (SAFE) bad = __ballot(v_code(va) != 0) != 0; /* uniform across the wave */
            const u64 vuse = bad ? v_clean(va) : va;
#pragma unroll
            for (int mr = 0; mr < MR; mr++) o[mr][nv] = mf_mma(vuse, pb[mr], o[mr][nv]);
            if (!bad) continue;
            const u64 vc = v_code(va);
#pragma unroll
            for (int mr = 0; mr < MR; mr++) {
                const int j = kc0 + kt * 16 + 4 * g;
                const u64 pc = mf_pack4(p_code(s[mr][kt][0], j, lo[mr], hi[mr]),
                                        p_code(s[mr][kt][1], j + 1, lo[mr], hi[mr]),
                                        p_code(s[mr][kt][2], j + 2, lo[mr], hi[mr]),
                                        p_code(s[mr][kt][3], j + 3, lo[mr], hi[mr]));
                f32x4 cnt = {0.0f, 0.0f, 0.0f, 0.0f};
                cnt = mf_mma(vc, pc, cnt);
#pragma unroll
                for (int i = 0; i < 4; i++) o[mr][nv][i] += nonfinite_sum(cnt[i]);
            }
        }
    }
}

/* Ragged Q: the run numbers its tiles itself (attn.c, tile_space): sequence
 * b's tiles from ⌊cu_q[b]·pack / BQ⌋ + b on. Work item of group r, or −1. */
MF_DEV i64 ragged_work(const attn_args &a, i64 r)
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
    const i64 len = minl(clampl(a.cu_q[lo + 1], c0, a.total_q) - c0, (i64)a.seqlen_q);
    const i64 t = v - (c0 * a.pack / BQ + lo);
    if (t < 0 || t >= a.q_tiles || t * BQ >= len * a.pack) return -1;
    return (((i64)lo * a.head_groups + g) * a.q_tiles + t) * a.kv_splits + s;
}

MF_DEV void attn_mfma_body(const attn_args &a)
{
    extern __shared__ __attribute__((aligned(16))) unsigned char smem[];
    u16 *q_s = (u16 *)smem;
    u16 *kv_s = q_s + Q_ELEMS;
    (void)q_s; /* unused when Q_DIRECT */
    const int t = threadIdx.x, lane = t % 64, warp = t / 64;
    const int wm = warp % WARPS_M, wn = warp / WARPS_M, g4 = lane / 16;

    i64 w = blockIdx.x;
    if (a.tile_space > 0) {
        w = ragged_work(a, w);
        if (w < 0) return; /* the whole workgroup: w is uniform across it */
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
        const i64 rows = minl(a.total_q, (i64)a.batch * a.seqlen_q);
        const i64 c0 = clampl(a.cu_q[b], 0, rows);
        const i64 c1 = clampl(a.cu_q[b + 1], c0, rows);
        sq = minl(c1 - c0, (i64)a.seqlen_q);
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
        sk = clampl((i64)a.cu_k[b + 1] - c0, 0, minl((i64)a.seqlen_k, a.total_k - c0));
        k_tok0 = c0;
    } else if (a.kv_layout == KV_PAGED) {
        const i64 cap = minl((i64)a.seqlen_k, (i64)a.max_pages * a.page_size);
        sk = clampl(a.seqlens_k[b], 0, cap);
    } else {
        sk = a.seqlen_k;
    }

    const i64 rows_total = sq * a.pack;
    const i64 r0 = tile * BQ;
    if (r0 >= rows_total) return; /* uniform: the whole workgroup leaves */
    const int nrows = (int)minl(rows_total - r0, (i64)BQ);
    const int hkv = g * a.pack / a.group;
    const i64 diag0 = sk - sq; /* bottom-right alignment */

    /* Keys any row of the tile sees: first row gives the start, last the end. */
    const i64 i_first = r0 / a.pack, i_last = (r0 + nrows - 1) / a.pack;
    i64 kb = a.wl >= 0 ? maxl(i_first + diag0 - a.wl, (i64)0) : 0;
    i64 ke = a.wr >= 0 ? minl(i_last + diag0 + a.wr + 1, sk) : sk;
    if (a.kv_splits > 1) {
        kb = maxl(kb, (i64)split * a.split_len);
        ke = minl(ke, (i64)(split + 1) * a.split_len);
    }
    if (ke < kb) ke = kb;
    const int kbi = (int)kb, kei = (int)ke; /* 0 ≤ kb ≤ ke ≤ sk ≤ seqlen_k */

    /* The lane's query rows: wrow0 + mr·16 + lane % 16, the same in all four
     * lane groups. [lo, hi) the keys each sees (empty past the tile). */
    const int wrow0 = wm * ROWS_W;
    int row_lo[MR], row_hi[MR], row_diag[MR];
    float row_slope[MR];
#pragma unroll
    for (int mr = 0; mr < MR; mr++) {
        const int row = wrow0 + mr * 16 + lane % 16;
        row_lo[mr] = row_hi[mr] = row_diag[mr] = 0;
        row_slope[mr] = 0.0f;
        if (row >= nrows) continue;
        const i64 flat = r0 + row;
        const i64 diag = flat / a.pack + diag0;
        const i64 lo = a.wl >= 0 ? maxl(diag - a.wl, kb) : kb;
        const i64 hi = a.wr >= 0 ? minl(diag + a.wr + 1, ke) : ke;
        row_lo[mr] = (int)minl(lo, ke);
        row_hi[mr] = (int)maxl(hi, minl(lo, ke));
        row_diag[mr] = (int)diag;
        if (a.has_alibi) row_slope[mr] = a.slopes[(i64)g * a.pack + flat % a.pack] * MF_LOG2E;
    }
    /* The wave's keys: [w_kb, w_ke) seen by some row of its band, [f_kb,
     * f_ke) by all of them (no mask needed there). */
    int w_kb = 0, w_ke = 0, f_kb = 0, f_ke = 0;
    {
        const int wrows = (int)minl(maxl(nrows - wrow0, 0), ROWS_W);
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
    src.k = a.k + kbatch * a.k_sb + hkv * a.k_sh;
    src.v = a.v + kbatch * a.v_sb + hkv * a.v_sh;

    const float scale2 = a.scale * MF_LOG2E;
    const bool capped = a.softcap > 0.0f;
    const float cap_in = capped ? a.scale / a.softcap : 0.0f;
    const float cap_out = a.softcap * MF_LOG2E;

    f32x4 o[MR][NV];
    float m[MR], l[MR];
#pragma unroll
    for (int mr = 0; mr < MR; mr++) {
#pragma unroll
        for (int nv = 0; nv < NV; nv++) o[mr][nv] = (f32x4){0.0f, 0.0f, 0.0f, 0.0f};
        m[mr] = -mf_inf();
        l[mr] = 0.0f;
    }
#if Q_REGS
    u64 qf[MR][KS];
#endif

    const int ntiles = kbi < kei ? (kei - 1) / BK - kbi / BK + 1 : 0;
    const int kt0 = kbi / BK * BK;
    kv_regs regs;
    if (ntiles > 0) {
        /* Q (rows past the tile and head-dim padding zero) and tile 0. */
        const u16 *qb = a.q + q_elem0;
#if Q_DIRECT
        /* Straight into the B operand: lane l takes head dims ks·16 + 4g
         * .. + 3 of its row (8 bytes; 8-byte aligned when a.aligned). */
#pragma unroll
        for (int mr = 0; mr < MR; mr++) {
            const int row = wrow0 + mr * 16 + lane % 16;
            const i64 flat = r0 + row;
            const u16 *p = qb + (flat / a.pack) * a.q_st + ((i64)g * a.pack + flat % a.pack) * a.q_sh;
#pragma unroll
            for (int ks = 0; ks < KS; ks++) {
                const int d = ks * 16 + 4 * g4;
                u64 x = 0;
                if (row < nrows && d < DQK) {
                    if (a.aligned) {
                        x = *(const u64 *)(p + d);
                    } else {
                        for (int e = 0; e < 4; e++) x |= (u64)p[d + e] << (16 * e);
                    }
                }
                qf[mr][ks] = x;
            }
        }
#else
        for (int e = t; e < BQ * QC; e += THREADS) {
            const int row = e / QC, c = e % QC;
            const bool ok = row < nrows && c < DQK / 8;
            const u16 *p = qb;
            if (ok) {
                const i64 flat = r0 + row;
                p = qb + (flat / a.pack) * a.q_st + ((i64)g * a.pack + flat % a.pack) * a.q_sh +
                    c * 8;
            }
            const u32x4 x = load16(p, ok, a.aligned);
            *(u64 *)(q_s + unit_at<QU>(row, 2 * c)) = (u64)x[0] | (u64)x[1] << 32;
            *(u64 *)(q_s + unit_at<QU>(row, 2 * c + 1)) = (u64)x[2] | (u64)x[3] << 32;
        }
#endif
        load_kv(src, kt0, kbi, kei, regs, t, a.aligned);
        store_kv(regs, kv_s, kv_s + K_ELEMS, t);
        __syncthreads();
#if Q_REGS && !Q_DIRECT
#pragma unroll
        for (int mr = 0; mr < MR; mr++)
#pragma unroll
            for (int ks = 0; ks < KS; ks++)
                qf[mr][ks] = lds8(q_s + unit_at<QU>(wrow0 + mr * 16 + lane % 16, ks * 4 + g4));
#endif
    }

    for (int n = 0; n < ntiles; n++) {
        const int k0 = kt0 + n * BK;
        /* Tile n + 1 travels from global memory while tile n is used. */
        if (n + 1 < ntiles) load_kv(src, k0 + BK, kbi, kei, regs, t, a.aligned);
        const u16 *ks_ = kv_s + (n % NB) * BUF_ELEMS;
        const u16 *vt = ks_ + K_ELEMS;

        for (int kc = 0; kc < BK; kc += KC) {
            const int kc0 = k0 + kc;
            if (kc0 + KC <= w_kb || kc0 >= w_ke) continue; /* uniform across the wave */
            const bool masked = !(kc0 >= f_kb && kc0 + KC <= f_ke);

            /* Sᵀ = K·Qᵀ over the chunk: A = K rows kc + nt·16 + l % 16, B =
             * Q rows of the band; head dims ks·16 + 4g .. + 3 of both. */
            f32x4 s[MR][NS];
#pragma unroll
            for (int mr = 0; mr < MR; mr++)
#pragma unroll
                for (int nt = 0; nt < NS; nt++) s[mr][nt] = (f32x4){0.0f, 0.0f, 0.0f, 0.0f};
#if Q_REGS
#pragma unroll /* qf is indexed by ks: registers only when unrolled */
#else
#pragma unroll 4
#endif
            for (int ks = 0; ks < KS; ks++) {
                u64 qb[MR];
#pragma unroll
                for (int mr = 0; mr < MR; mr++) {
#if Q_REGS
                    qb[mr] = qf[mr][ks];
#else
                    qb[mr] = lds8(q_s + unit_at<QU>(wrow0 + mr * 16 + lane % 16, ks * 4 + g4));
#endif
                }
#pragma unroll
                for (int nt = 0; nt < NS; nt++) {
                    const u64 ka = lds8(ks_ + unit_at<QU>(kc + nt * 16 + lane % 16, ks * 4 + g4));
#pragma unroll
                    for (int mr = 0; mr < MR; mr++) s[mr][nt] = mf_mma(ka, qb[mr], s[mr][nt]);
                }
            }

            /* Scores in the log2 domain, the mask, the online softmax. Lane
             * l, register r of s[mr][nt]: row wrow0 + mr·16 + l % 16, key
             * kc0 + nt·16 + 4g + r. */
#pragma unroll
            for (int mr = 0; mr < MR; mr++) {
                float mx = -mf_inf();
#pragma unroll
                for (int nt = 0; nt < NS; nt++)
#pragma unroll
                    for (int r = 0; r < 4; r++) {
                        const int j = kc0 + nt * 16 + 4 * g4 + r;
                        float x = s[mr][nt][r];
                        x = capped ? cap_out * tanhf(x * cap_in) : x * scale2;
                        if (a.has_alibi) x -= row_slope[mr] * fabsf((float)((i64)row_diag[mr] - j));
                        if (masked && (j < row_lo[mr] || j >= row_hi[mr])) x = -mf_inf();
                        s[mr][nt][r] = x;
                        mx = fmaxf(mx, x);
                    }
                /* fmaxf drops a NaN, but its p below is then NaN, and so is ℓ. */
                mx = fmaxf(mx, __shfl_xor(mx, 16, 64));
                mx = fmaxf(mx, __shfl_xor(mx, 32, 64));
                const float m_new = fmaxf(m[mr], mx);
                /* A row that has seen no key yet subtracts 0: exp2(−inf) = 0. */
                const float m_use = m_new == -mf_inf() ? 0.0f : m_new;
                const float alpha = exp2f(m[mr] - m_use);
                m[mr] = m_new;
                float sum = 0.0f;
#pragma unroll
                for (int nt = 0; nt < NS; nt++)
#pragma unroll
                    for (int r = 0; r < 4; r++) {
                        const float p = exp2f(s[mr][nt][r] - m_use);
                        s[mr][nt][r] = p;
                        sum += p;
                    }
                l[mr] = l[mr] * alpha + sum; /* this lane group's keys; summed at the end */
#pragma unroll
                for (int nv = 0; nv < NV; nv++) o[mr][nv] *= alpha;
            }

            if (masked) pv_chunk<true>(o, s, vt, kc, kc0, wn, lane, row_lo, row_hi);
            else pv_chunk<false>(o, s, vt, kc, kc0, wn, lane, row_lo, row_hi);
        }

        if (n + 1 < ntiles) {
            u16 *next = kv_s + ((n + 1) % NB) * BUF_ELEMS;
            if (NB == 1) __syncthreads(); /* everyone is done with the one buffer */
            store_kv(regs, next, next + K_ELEMS, t);
            __syncthreads(); /* the next tile is in LDS for everyone */
        }
    }

    /* Epilogue: ℓ over the four lane groups, then O (this wave's columns:
     * lane l holds columns wn·DVW + nv·16 + 4g .. + 3) and LSE. */
    const i64 part_rows = (i64)a.batch * a.seqlen_q;
    float *part_lse = a.part + (i64)a.kv_splits * part_rows * a.hq * DV_PAD;
#pragma unroll
    for (int mr = 0; mr < MR; mr++) {
        float lt = l[mr];
        lt += __shfl_xor(lt, 16, 64);
        lt += __shfl_xor(lt, 32, 64);
        const int row = wrow0 + mr * 16 + lane % 16;
        if (row >= nrows) continue;
        const i64 flat = r0 + row, tok = flat / a.pack;
        const i64 h = (i64)g * a.pack + flat % a.pack, grow = q_row0 + tok;
        const float mm = m[mr];
        /* No visible key, or only keys of score −inf: ℓ stayed 0. A NaN or
         * +inf score left ℓ NaN, and such a row stays NaN below. */
        const bool empty = mm == -mf_inf() && lt == 0.0f;
        const bool lse_lane = wn == 0 && g4 == 0;
        if (a.kv_splits > 1) {
            const i64 prow = ((i64)split * part_rows + grow) * a.hq + h;
            float *po = a.part + prow * DV_PAD;
#pragma unroll
            for (int nv = 0; nv < NV; nv++) {
                const int col = wn * DVW + nv * 16 + 4 * g4;
#pragma unroll
                for (int r = 0; r < 4; r++) po[col + r] = empty ? 0.0f : o[mr][nv][r] / lt;
            }
            if (lse_lane) part_lse[prow] = empty ? -mf_inf() : (mm + log2f(lt)) * MF_LN2;
            continue;
        }
        /* The sink joins the denominator only; rebase on the larger of m
         * and σ so neither exponential overflows. */
        float top = mm, denom = lt;
        if (a.has_sinks && !empty) {
            const float sink = a.sinks[h] * MF_LOG2E;
            top = fmaxf(mm, sink);
            denom = lt * exp2f(mm - top) + exp2f(sink - top);
        }
        const float f = empty ? 0.0f : exp2f(mm - top) / denom;
        u16 *op = a.o + o_elem0 + tok * a.o_st + h * a.o_sh;
#pragma unroll
        for (int nv = 0; nv < NV; nv++) {
            const int col = wn * DVW + nv * 16 + 4 * g4;
#pragma unroll
            for (int r = 0; r < 4; r++)
                /* O = 0 written as such for an empty row: o may hold 0·NaN. */
                if (col + r < DV) op[col + r] = mf_from_f32(empty ? 0.0f : o[mr][nv][r] * f);
        }
        if (a.has_lse && lse_lane)
            a.lse[h * a.lse_sh + grow * a.lse_st] =
                empty ? -mf_inf() : (top + log2f(denom)) * MF_LN2;
    }
}

} /* namespace xattn_mfma */

extern "C" __global__ void __launch_bounds__(THREADS) attn_mfma(xattn_mfma::attn_args a)
{
#if MF_HW
    xattn_mfma::attn_mfma_body(a);
#else
    (void)a;
    __builtin_trap(); /* no MFMA for this dtype here: the host never selects it */
#endif
}
