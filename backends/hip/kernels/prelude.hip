/* Shared by every xattn HIP kernel source (put in front of each one when
 * the module is built). HIP C++17 as hiprtc compiles it, including no
 * header: hiprtc supplies the device builtins (threadIdx, blockIdx,
 * blockDim, __syncthreads, __shfl_xor, __shfl, __ballot, expf, logf,
 * tanhf, fmaxf, fabsf, ...). The 16-bit types are raw bits: f16 converts
 * through _Float16, bf16 by integer rounding; INFINITY and <stdint.h> are
 * not used (hiprtc defines neither).
 *
 * Waves and rows: a wavefront is WAVE lanes (__AMDGCN_WAVEFRONT_SIZE: 64
 * on GCN and CDNA, 32 on RDNA). Kernels that give a row of work to a group
 * of lanes use ROW_LANES = 32 lanes whatever the wave size: two rows per
 * wave64, one per wave32, the same code and tiles on both. Reductions and
 * broadcasts within a row are __shfl_xor / __shfl with width 32 (the lane
 * index is taken within the 32-lane segment), and row_ballot gives the
 * row's 32 bits of a wave-wide ballot. Lanes of a wave run in lockstep, so
 * a row needs no barrier, only row_sync() to order its LDS writes before
 * its own reads.
 *
 * Build options every source knows (xattn_options_dtype, hip_compile):
 *   -DXATTN_HIP=1           always
 *   -DIO=bf16 -DIO_BF16=1   the dtype of the operands under the prefix IO
 *                           (other prefixes the same way, e.g. W for weights)
 *
 * Kernels are `extern "C" __global__` (hipModuleGetFunction finds them by
 * name). Dynamic LDS is declared with XATTN_DYNAMIC_SMEM(name) (16-byte
 * aligned bytes). Architecture-specific builtins stay inside #if on the
 * target macros (__gfx90a__, __gfx908__, __gfx942__, __gfx1100__, ...), so
 * one source compiles for every target hiprtc is given. */

#define XATTN_DYNAMIC_SMEM(name) extern __shared__ __attribute__((aligned(16))) unsigned char name[]
#define XATTN_DEV __device__ __forceinline__

typedef long long i64;
typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;

#ifdef __AMDGCN_WAVEFRONT_SIZE
#define WAVE __AMDGCN_WAVEFRONT_SIZE
#else
#define WAVE 64
#endif
#define ROW_LANES 32

/* ---- floats ------------------------------------------------------------------ */

#define XATTN_INF __int_as_float(0x7f800000)
#define XATTN_NAN __int_as_float(0x7fc00000)
#define XATTN_LOG2E 1.4426950408889634f
#define XATTN_LN2 0.6931471805599453f

XATTN_DEV bool xisnan(float x) { return x != x; }
XATTN_DEV bool xisfinite(float x) { return fabsf(x) <= 3.402823466e38f; }

/* ---- 16-bit types: raw bits ----------------------------------------------------
 * f16 converts through _Float16 (round to nearest even, as IEEE); bf16 with
 * integer operations, round to nearest even, NaN kept quiet. */

typedef float elem_f32;
typedef u16 elem_f16;
typedef u16 elem_bf16;
typedef int elem_i32;
#define ELEM_(dt) elem_##dt
#define ELEM(dt) ELEM_(dt)

XATTN_DEV float f16_to_f32(u16 h) { return (float)__builtin_bit_cast(_Float16, h); }
XATTN_DEV u16 f32_to_f16(float f) { return __builtin_bit_cast(u16, (_Float16)f); }

XATTN_DEV float bf16_to_f32(u16 h) { return __uint_as_float((u32)h << 16); }

XATTN_DEV u16 f32_to_bf16(float f)
{
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (u16)(u >> 16);
}

/* Element i of p as float, and the reverse, per dtype. */
XATTN_DEV float load_f32(const float *p, i64 i) { return p[i]; }
XATTN_DEV float load_f16(const u16 *p, i64 i) { return f16_to_f32(p[i]); }
XATTN_DEV float load_bf16(const u16 *p, i64 i) { return bf16_to_f32(p[i]); }
XATTN_DEV void store_f32(float *p, i64 i, float x) { p[i] = x; }
XATTN_DEV void store_f16(u16 *p, i64 i, float x) { p[i] = f32_to_f16(x); }
XATTN_DEV void store_bf16(u16 *p, i64 i, float x) { p[i] = f32_to_bf16(x); }

#define LOAD_(dt, p, i) load_##dt(p, i)
#define LOAD(dt, p, i) LOAD_(dt, p, i)
#define STORE_(dt, p, i, x) store_##dt(p, i, x)
#define STORE(dt, p, i, x) STORE_(dt, p, i, x)

/* ---- rows of 32 lanes ---------------------------------------------------------- */

XATTN_DEV int row_lane() { return (int)(threadIdx.x % ROW_LANES); }

XATTN_DEV float row_sum(float x)
{
    for (int m = ROW_LANES / 2; m > 0; m >>= 1) x += __shfl_xor(x, m, ROW_LANES);
    return x;
}

XATTN_DEV float row_max(float x)
{
    for (int m = ROW_LANES / 2; m > 0; m >>= 1) x = fmaxf(x, __shfl_xor(x, m, ROW_LANES));
    return x;
}

/* The 32 bits of the row's lanes in a ballot of the wave. */
XATTN_DEV u32 row_ballot(bool p)
{
    const u64 all = (u64)__ballot(p);
    return (u32)(all >> (threadIdx.x % WAVE / ROW_LANES * ROW_LANES));
}

/* Order the row's writes (LDS or global) before its own lanes' reads:
 * lanes of a wave run together, so no barrier, but the fence makes the
 * compiler wait for the writes to complete (workgroup scope: vector loads
 * and stores of one wave may complete out of order on gfx10 and later). */
XATTN_DEV void row_sync()
{
    __builtin_amdgcn_fence(__ATOMIC_RELEASE, "workgroup");
    __builtin_amdgcn_wave_barrier();
    __builtin_amdgcn_fence(__ATOMIC_ACQUIRE, "workgroup");
}

/* ---- MoE activations (kernels/moe_gemm.hip) ----------------------------------
 * act(g) = silu(g) = g·σ(g), or with -DACT_GEGLU=1 the tanh GELU
 * 0.5·g·(1 + tanh(z)) = g·σ(2z), z = √(2/π)·(g + 0.044715·g³). With
 * -DACT_CLAMPED=1 (-DACT_ALPHA=, -DACT_LIMIT= float literals) GPT-OSS's
 * clamped SwiGLU min(g, limit)·σ(α·min(g, limit))·(clamp(u, ±limit) + 1),
 * clamped with comparisons so a NaN stays a NaN. */
#if defined(ACT_GEGLU) && ACT_GEGLU
#define GATE_ARG(g) (1.5957691216057308f * ((g) + 0.044715f * (g) * (g) * (g)))
#else
#define GATE_ARG(g) (g)
#endif

XATTN_DEV float glu(float g, float u)
{
#if defined(ACT_CLAMPED) && ACT_CLAMPED
    g = g > ACT_LIMIT ? ACT_LIMIT : g;
    u = u > ACT_LIMIT ? ACT_LIMIT : u < -ACT_LIMIT ? -ACT_LIMIT : u;
    return g / (1.0f + expf(-ACT_ALPHA * g)) * (u + 1.0f);
#else
    return g / (1.0f + expf(-GATE_ARG(g))) * u;
#endif
}
