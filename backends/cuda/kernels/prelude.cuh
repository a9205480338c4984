/* Shared by every xattn CUDA kernel source (put in front of each one when
 * the module is built). CUDA C++17 as NVRTC compiles it, with no toolkit
 * header: a machine with a driver and NVRTC alone runs the module, so the
 * 16-bit types are raw bits converted with PTX (f16) or integer operations
 * (bf16), and INFINITY, isnan and <stdint.h> are not used.
 *
 * Build options every source knows (xattn_options_dtype, cu_compile):
 *   -DXATTN_ARCH=90         compute capability × 10 of the target
 *   -DIO=bf16 -DIO_BF16=1   the dtype of the operands under the prefix IO
 *                           (other prefixes the same way, e.g. W for weights)
 *
 * Everything a kernel does beyond plain C++ arithmetic goes through the
 * builtins NVRTC provides (threadIdx, blockIdx, blockDim, gridDim,
 * __syncthreads, __syncwarp, __shfl_xor_sync, __shfl_sync, __shfl_down_sync,
 * __ballot_sync, atomicAdd, atomicMax on int, __int_as_float,
 * __float_as_int, __float_as_uint, __uint_as_float, expf, exp2f, logf,
 * log2f, tanhf, fmaxf, fminf, fabsf, sqrtf, min, max) or through the
 * wrappers below. Only the wrappers hold inline PTX. Under XATTN_CUDA_EMU
 * (tests/cuda_emu: the kernels compiled by a host C++ compiler and run on
 * the CPU, one fiber per thread) the emulator supplies the builtins and the
 * wrappers call its xemu_* functions, which implement the exact PTX
 * semantics written down here.
 *
 * Kernels are `extern "C" __global__` (cuModuleGetFunction finds them by
 * name) and every source ends with one XATTN_EXPORT(name) per kernel, which
 * is empty under NVRTC and registers the kernel with the emulator. Dynamic
 * shared memory is declared with XATTN_DYNAMIC_SMEM(name) (16-byte
 * aligned bytes). */

#ifndef XATTN_CUDA_EMU
#define XATTN_EXPORT(name)
#define XATTN_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

#define XATTN_DEV __device__ __forceinline__

typedef long long i64;
typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;

/* ---- floats ------------------------------------------------------------------ */

#define XATTN_INF __int_as_float(0x7f800000)
#define XATTN_NAN __int_as_float(0x7fc00000)
#define XATTN_LOG2E 1.4426950408889634f
#define XATTN_LN2 0.6931471805599453f

XATTN_DEV bool xisnan(float x) { return x != x; }
XATTN_DEV bool xisfinite(float x) { return fabsf(x) <= 3.402823466e38f; }

/* ---- 16-bit types: raw bits ----------------------------------------------------
 * f16 converts with cvt (round to nearest even, as IEEE and vstore_half_rte);
 * bf16 with integer operations, round to nearest even, NaN kept quiet. */

typedef float elem_f32;
typedef u16 elem_f16;
typedef u16 elem_bf16;
typedef int elem_i32;
#define ELEM_(dt) elem_##dt
#define ELEM(dt) ELEM_(dt)

XATTN_DEV float f16_to_f32(u16 h)
{
#ifdef XATTN_CUDA_EMU
    return xemu_f16_to_f32(h);
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#endif
}

XATTN_DEV u16 f32_to_f16(float f)
{
#ifdef XATTN_CUDA_EMU
    return xemu_f32_to_f16(f);
#else
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
#endif
}

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

/* Two floats as one 32-bit register of two 16-bit elements, lo in the low
 * half (the operand form of mma.sync). */
XATTN_DEV u32 pack2_f16(float lo, float hi)
{
    return (u32)f32_to_f16(lo) | ((u32)f32_to_f16(hi) << 16);
}
XATTN_DEV u32 pack2_bf16(float lo, float hi)
{
    return (u32)f32_to_bf16(lo) | ((u32)f32_to_bf16(hi) << 16);
}

#define LOAD_(dt, p, i) load_##dt(p, i)
#define LOAD(dt, p, i) LOAD_(dt, p, i)
#define STORE_(dt, p, i, x) store_##dt(p, i, x)
#define STORE(dt, p, i, x) STORE_(dt, p, i, x)
#define PACK2_(dt, lo, hi) pack2_##dt(lo, hi)
#define PACK2(dt, lo, hi) PACK2_(dt, lo, hi)

/* An operand at a byte offset from a base (kernels mostly get the address
 * already offset: cu_ptr on the host). */
#define AT(T, base, off) ((T *)((unsigned char *)(base) + (off)))

/* ---- warps ------------------------------------------------------------------ */

#define FULL_MASK 0xffffffffu

XATTN_DEV float warp_sum(float x)
{
    for (int m = 16; m > 0; m >>= 1) x += __shfl_xor_sync(FULL_MASK, x, m);
    return x;
}

XATTN_DEV float warp_max(float x)
{
    for (int m = 16; m > 0; m >>= 1) x = fmaxf(x, __shfl_xor_sync(FULL_MASK, x, m));
    return x;
}

/* ---- tensor cores and async copies (sm_80 and later) ------------------------
 *
 * mma_16816_{f16,bf16}(d, a, b): D[16×8] += A[16×16] · B[16×8], f32
 * accumulators, the PTX mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.
 * Lane l, with g = l / 4 and c = (l % 4) · 2, holds
 *   a[0] = A[g][c..c+1]     a[1] = A[g+8][c..c+1]
 *   a[2] = A[g][c+8..c+9]   a[3] = A[g+8][c+8..c+9]
 *   b[0] = B[c..c+1][g]     b[1] = B[c+8..c+9][g]      (k index first)
 *   d[0..1] = D[g][c..c+1]  d[2..3] = D[g+8][c..c+1]
 * each 32-bit register holding the lower-indexed element in its low half.
 *
 * ldmatrix_x4(r, p): lanes 8i..8i+7 give the addresses (shared memory) of
 * the 8 rows of 8×8 matrix i (16 bytes each); lane l receives in r[i] the
 * elements (l / 4, (l % 4)·2 .. +1) of matrix i. ldmatrix_x2 does matrices
 * 0 and 1 (lanes 0–15 give addresses; the others' are ignored but must be
 * valid). The _trans forms deliver the transposed matrix: r[i] holds
 * elements ((l % 4)·2, l / 4) and ((l % 4)·2 + 1, l / 4) of matrix i.
 *
 * cp_async16(dst, src): copy 16 bytes global → shared without the
 * registers (cp.async.cg); cp_async16_zfill(dst, src, ok) writes zeros
 * when ok is false (src is not read, but must be a valid address).
 * cp_async_commit() closes a group of copies; cp_async_wait<n>() waits
 * until at most n groups are pending. A __syncthreads() is still needed
 * before other threads read the data. */

XATTN_DEV void mma_16816_f16(float d[4], const u32 a[4], const u32 b[2])
{
#ifdef XATTN_CUDA_EMU
    xemu_mma_16816(d, a, b, 0);
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

XATTN_DEV void mma_16816_bf16(float d[4], const u32 a[4], const u32 b[2])
{
#ifdef XATTN_CUDA_EMU
    xemu_mma_16816(d, a, b, 1);
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

#define MMA_16816_(dt, d, a, b) mma_16816_##dt(d, a, b)
#define MMA_16816(dt, d, a, b) MMA_16816_(dt, d, a, b)

#ifndef XATTN_CUDA_EMU
XATTN_DEV u32 smem_addr(const void *p) { return (u32)__cvta_generic_to_shared(p); }
#endif

XATTN_DEV void ldmatrix_x4(u32 r[4], const void *p)
{
#ifdef XATTN_CUDA_EMU
    xemu_ldmatrix(r, p, 4, 0);
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
#endif
}

XATTN_DEV void ldmatrix_x4_trans(u32 r[4], const void *p)
{
#ifdef XATTN_CUDA_EMU
    xemu_ldmatrix(r, p, 4, 1);
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
#endif
}

XATTN_DEV void ldmatrix_x2(u32 r[2], const void *p)
{
#ifdef XATTN_CUDA_EMU
    xemu_ldmatrix(r, p, 2, 0);
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(smem_addr(p)));
#endif
}

XATTN_DEV void ldmatrix_x2_trans(u32 r[2], const void *p)
{
#ifdef XATTN_CUDA_EMU
    xemu_ldmatrix(r, p, 2, 1);
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(smem_addr(p)));
#endif
}

XATTN_DEV void cp_async16(void *dst, const void *src)
{
#ifdef XATTN_CUDA_EMU
    xemu_cp_async16(dst, src, 1);
#else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr(dst)), "l"(src));
#endif
}

XATTN_DEV void cp_async16_zfill(void *dst, const void *src, bool ok)
{
#ifdef XATTN_CUDA_EMU
    xemu_cp_async16(dst, src, ok);
#else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(dst)),
                 "l"(src), "r"(ok ? 16 : 0));
#endif
}

XATTN_DEV void cp_async_commit()
{
#ifdef XATTN_CUDA_EMU
    xemu_cp_async_commit();
#else
    asm volatile("cp.async.commit_group;");
#endif
}

template <int N> XATTN_DEV void cp_async_wait()
{
#ifdef XATTN_CUDA_EMU
    xemu_cp_async_wait(N);
#else
    asm volatile("cp.async.wait_group %0;" ::"n"(N));
#endif
}

/* ---- MoE activations (kernels/moe_gemm.cu) ----------------------------------
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
