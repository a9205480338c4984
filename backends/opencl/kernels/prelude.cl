/* Shared by every xattn OpenCL kernel source (put in front of each one when
 * the module is built). OpenCL C 1.2, no extensions.
 *
 * Dtypes reach a kernel as build options: -DIO=f16 -DIO_F16=1 names the
 * dtype of the operands under the prefix IO (xattn_options_dtype). With it,
 * LOAD(IO, p, i) reads element i of p as float and STORE(IO, p, i, x)
 * writes one; LOAD16 / STORE16 (and 8, 4) move that many elements from
 * element i on; ELEM(IO) is the storage type and RAW(IO) an unsigned
 * integer of its size. f16 uses vload_half /
 * vstore_half_rte, which are core OpenCL C (cl_khr_fp16 is only needed for
 * half arithmetic, which xattn never does); bf16 is converted with bit
 * operations, rounding to nearest even. */

/* A buffer operand arrives as (pointer, byte offset). */
#define AT(T, buf, off) ((__global T *)((__global uchar *)(buf) + (off)))
#define AT_CONST(T, buf, off) ((__global const T *)((__global const uchar *)(buf) + (off)))

typedef float elem_f32;
typedef half elem_f16;
typedef ushort elem_bf16;
typedef int elem_i32;

#define ELEM_(dt) elem_##dt
#define ELEM(dt) ELEM_(dt)

/* Same-size unsigned integers, for copying elements bit for bit (a half
 * may not be read or written directly without cl_khr_fp16). */
typedef uint raw_f32;
typedef ushort raw_f16;
typedef ushort raw_bf16;
typedef uint raw_i32;
#define RAW_(dt) raw_##dt
#define RAW(dt) RAW_(dt)

/* ---- bf16 ---- */
inline float bf16_to_f32(ushort h) { return as_float((uint)h << 16); }

inline ushort f32_to_bf16(float f)
{
    uint u = as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (ushort)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (ushort)(u >> 16);
}

#define BF16_VEC(n)                                                            \
    inline float##n bf16_to_f32_##n(ushort##n h)                               \
    {                                                                          \
        return as_float##n(convert_uint##n(h) << (uint##n)16);                 \
    }                                                                          \
    inline ushort##n f32_to_bf16_##n(float##n f)                               \
    {                                                                          \
        uint##n u = as_uint##n(f);                                             \
        uint##n r = (u + (uint##n)0x7fffu + ((u >> 16) & (uint##n)1u)) >> 16;  \
        uint##n q = (u >> 16) | (uint##n)0x40u;                                \
        int##n nan = ((u & (uint##n)0x7fffffffu) > (uint##n)0x7f800000u);      \
        return convert_ushort##n(select(r, q, as_uint##n(nan)));               \
    }
BF16_VEC(4)
BF16_VEC(8)
BF16_VEC(16)

/* ---- scalar loads and stores ---- */
inline float load_f32(__global const float *p, size_t i) { return p[i]; }
inline float load_f16(__global const half *p, size_t i) { return vload_half(i, p); }
inline float load_bf16(__global const ushort *p, size_t i) { return bf16_to_f32(p[i]); }
inline void store_f32(__global float *p, size_t i, float x) { p[i] = x; }
inline void store_f16(__global half *p, size_t i, float x) { vstore_half_rte(x, i, p); }
inline void store_bf16(__global ushort *p, size_t i, float x) { p[i] = f32_to_bf16(x); }

/* ---- vector loads and stores of n elements from element i ---- */
#define VEC_IO(n)                                                              \
    inline float##n load##n##_f32(__global const float *p, size_t i)          \
    {                                                                          \
        return vload##n(0, p + i);                                             \
    }                                                                          \
    inline float##n load##n##_f16(__global const half *p, size_t i)           \
    {                                                                          \
        return vload_half##n(0, p + i);                                        \
    }                                                                          \
    inline float##n load##n##_bf16(__global const ushort *p, size_t i)        \
    {                                                                          \
        return bf16_to_f32_##n(vload##n(0, p + i));                            \
    }                                                                          \
    inline void store##n##_f32(__global float *p, size_t i, float##n x)       \
    {                                                                          \
        vstore##n(x, 0, p + i);                                                \
    }                                                                          \
    inline void store##n##_f16(__global half *p, size_t i, float##n x)        \
    {                                                                          \
        vstore_half##n##_rte(x, 0, p + i);                                     \
    }                                                                          \
    inline void store##n##_bf16(__global ushort *p, size_t i, float##n x)     \
    {                                                                          \
        vstore##n(f32_to_bf16_##n(x), 0, p + i);                               \
    }
VEC_IO(4)
VEC_IO(8)
VEC_IO(16)

#define LOAD_(dt, p, i) load_##dt(p, i)
#define LOAD(dt, p, i) LOAD_(dt, p, i)
#define STORE_(dt, p, i, x) store_##dt(p, i, x)
#define STORE(dt, p, i, x) STORE_(dt, p, i, x)
#define LOADN_(n, dt, p, i) load##n##_##dt(p, i)
#define LOAD4(dt, p, i) LOADN_(4, dt, p, i)
#define LOAD8(dt, p, i) LOADN_(8, dt, p, i)
#define LOAD16(dt, p, i) LOADN_(16, dt, p, i)
#define STOREN_(n, dt, p, i, x) store##n##_##dt(p, i, x)
#define STORE4(dt, p, i, x) STOREN_(4, dt, p, i, x)
#define STORE8(dt, p, i, x) STOREN_(8, dt, p, i, x)
#define STORE16(dt, p, i, x) STOREN_(16, dt, p, i, x)

/* ---- shared helpers ------------------------------------------------------ */

/* Sum of the lanes of x, pairwise. */
inline float hsum16(float16 x)
{
    const float8 a = x.lo + x.hi;
    const float4 b = a.lo + a.hi;
    const float2 c = b.lo + b.hi;
    return c.x + c.y;
}

/* The MoE gate activation, for float or floatN g (a plain expression: it is
 * read more than once): silu(g) = g·σ(g), or with -DACT_GEGLU=1 the tanh
 * GELU 0.5·g·(1 + tanh(z)) = g·σ(2z), z = √(2/π)·(g + 0.044715·g³), which
 * has no cancellation where tanh(z) nears −1. */
#if defined(ACT_GEGLU) && ACT_GEGLU
#define GATE_ARG(g) (1.5957691216057308f * ((g) + 0.044715f * (g) * (g) * (g)))
#else
#define GATE_ARG(g) (g)
#endif
#define ACTIVATE(g) ((g) / (1.0f + exp(-GATE_ARG(g))))

/* h = act(g, u) of the MoE experts, for float (glu) and float16 (glu16).
 * With -DACT_CLAMPED=1 (and -DACT_ALPHA=, -DACT_LIMIT= as float literals)
 * GPT-OSS's clamped SwiGLU, min(g, limit)·σ(α·min(g, limit))·
 * (clamp(u, ±limit) + 1), clamped with comparisons so that a NaN stays a
 * NaN (fmin, fmax and clamp would return the limit); else act(g)·u. */
#if defined(ACT_CLAMPED) && ACT_CLAMPED
inline float glu(float g, float u)
{
    g = g > ACT_LIMIT ? ACT_LIMIT : g;
    u = u > ACT_LIMIT ? ACT_LIMIT : u < -ACT_LIMIT ? -ACT_LIMIT : u;
    return g / (1.0f + exp(-ACT_ALPHA * g)) * (u + 1.0f);
}
inline float16 glu16(float16 g, float16 u)
{
    g = select(g, (float16)ACT_LIMIT, g > ACT_LIMIT);
    u = select(u, (float16)ACT_LIMIT, u > ACT_LIMIT);
    u = select(u, (float16)(-ACT_LIMIT), u < -ACT_LIMIT);
    return g / (1.0f + exp(-ACT_ALPHA * g)) * (u + 1.0f);
}
#else
inline float glu(float g, float u) { return ACTIVATE(g) * u; }
inline float16 glu16(float16 g, float16 u) { return ACTIVATE(g) * u; }
#endif

/* MoE gate/up GEMM: the W1 row (and b1 entry) of gate (pair 0) or up
 * (pair 1) column c of n: rows 0..n−1 gate and n..2n−1 up, or with
 * -DW1_IL=1 (XATTN_MOE_W1_INTERLEAVED) gate 2c and up 2c + 1. */
inline long w1_row(int pair, long c, long n)
{
#if defined(W1_IL) && W1_IL
    (void)n;
    return 2 * c + pair;
#else
    return pair * n + c;
#endif
}

/* MoE GEMMs: rows [*r0, *r1) of virtual row tile v of bm rows, and its
 * expert; 0 when the tile has no rows. Each expert's rows start a new tile,
 * so tile v belongs to the last expert e with offsets[e] / bm + e ≤ v.
 * Offsets are clamped to [0, rows], so whatever expert_offsets holds, the
 * rows stay inside the tensors. */
inline int find_tile(__global const int *off, long off_st, int experts, long rows, long bm,
                     long v, long *r0, long *r1, int *expert)
{
    int lo = 0, hi = experts - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        long o = clamp((long)off[mid * off_st], 0L, rows);
        if (o / bm + mid <= v) lo = mid;
        else hi = mid - 1;
    }
    long start = clamp((long)off[lo * off_st], 0L, rows);
    long end = clamp((long)off[(lo + 1) * off_st], 0L, rows);
    long first = start / bm + lo;
    if (v < first) return 0;
    long row0 = start + (v - first) * bm;
    if (row0 >= end) return 0;
    *r0 = row0;
    *r1 = min(row0 + bm, end);
    *expert = lo;
    return 1;
}

/* Attention with ragged Q: the plan's work index (common/plan.h) of run
 * item r = ((g·tile_space + v)·kv_splits + s), or −1 when r names no tile.
 * Tile v belongs to the last sequence b with ⌊cu_q[b]·pack / block_q⌋ + b ≤
 * v (backends/opencl/attn_work.c has the numbering), and is its tile
 * v − that. cu_q is clamped to [0, total_q] and lengths to seqlen_q, so
 * whatever it holds, the item stays inside the plan's work. */
inline long ragged_work(long r, long tile_space, __global const int *cq, int batch, long total_q,
                        int seqlen_q, long pack, long block_q, int head_groups, int q_tiles,
                        int kv_splits)
{
    const long s = r % kv_splits, v = r / kv_splits % tile_space;
    const long g = r / kv_splits / tile_space;
    int lo = 0, hi = batch - 1;
    while (lo < hi) {
        const int mid = lo + (hi - lo + 1) / 2;
        if (clamp((long)cq[mid], 0L, total_q) * pack / block_q + mid <= v) lo = mid;
        else hi = mid - 1;
    }
    const long c0 = clamp((long)cq[lo], 0L, total_q);
    const long len = min(clamp((long)cq[lo + 1], c0, total_q) - c0, (long)seqlen_q);
    const long t = v - (c0 * pack / block_q + lo);
    if (t < 0 || t >= q_tiles || t * block_q >= len * pack) return -1;
    return (((long)lo * head_groups + g) * q_tiles + t) * kv_splits + s;
}
