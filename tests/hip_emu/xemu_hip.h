/* xemu, HIP mode: the kernels of backends/hip compiled as host C++ and run
 * on the CPU. Force-included (-include) before a kernel source by the fake
 * hiprtc (fake_hip.c), which also defines, per emulated architecture, what
 * hiprtc would: XEMU_WAVE and __AMDGCN_WAVEFRONT_SIZE (64 on gfx908 and
 * gfx90a, 32 on gfx1030), __gfx908__ / __gfx90a__ / __gfx1030__, and
 * XATTN_HIP=1. The fibers, barriers, the exchange area and the launch are
 * the CUDA mode's (tests/cuda_emu/xemu_core.h); this file adds HIP's
 * device API and the MFMA instructions.
 *
 * Modelled: waves of XEMU_WAVE lanes whose collectives (__shfl*,
 * __ballot, __any/__all, ds_bpermute, readfirstlane, wave_barrier, MFMA)
 * are rendezvous of every lane of the wave that has not exited (HIP has
 * no masks: a lane still running elsewhere, e.g. at a __syncthreads or a
 * different collective, is reported as divergence and fails the launch);
 * __shfl* index arithmetic as HIP 5.2's amd_warp_functions.h computes it
 * (an index past the lane's width-wide segment gives the lane its own
 * value, __shfl wraps within the wave); LDS (static __shared__ arrays,
 * dynamic LDS up to 64 KiB) filled with 0xff bytes at each block's start;
 * the launch limits of the fake runtime (fake_hip.c).
 *
 * Not modelled: lockstep execution itself (lanes run one after another
 * between collectives, so a wave that relies on lockstep without a
 * collective or __builtin_amdgcn_wave_barrier between a write and another
 * lane's read is not caught unless the order exposes it), the memory
 * model and fences (__builtin_amdgcn_fence is a no-op), timing, occupancy,
 * registers and spills, the ISA's arithmetic (f32 math is the host's;
 * MFMA sums in f32 in k order, which the hardware need not), and the
 * MFMA modifiers cbsz/abid/blgp (only 0 is accepted). */
#pragma once
#define XEMU_HIP 1
#ifndef XEMU_WAVE
#error "the fake hiprtc defines XEMU_WAVE (64 or 32) for the emulated architecture"
#endif
#include "../cuda_emu/xemu_core.h"

static constexpr int warpSize = XEMU_WAVE;

/* HIP_DYNAMIC_SHARED(type, name), and `extern __shared__ T name[]`
 * rewritten by the fake hiprtc into XEMU_EXTERN_SHARED_PTR(name). */
#define HIP_DYNAMIC_SHARED(type, var) type *var = reinterpret_cast<type *>(xemu::lds_area);
#define HIP_DYNAMIC_SHARED_ATTRIBUTE

inline unsigned __lane_id() { return (unsigned)xemu::lane(); }

/* ---- wave collectives ------------------------------------------------------
 * HIP's collectives name the whole wave (the lanes that run: the others
 * have exited). */

namespace xemu {
template <typename T> T hip_shfl(T v, int src)
{
    return shfl_any(ALL_LANES, v, src & (WARP - 1));
}
} // namespace xemu

/* __shfl(v, src, width): lane src of the caller's width-wide segment. */
template <typename T> T __shfl(T v, int src, int width = warpSize)
{
    const int self = xemu::lane();
    return xemu::hip_shfl(v, src + (self & ~(width - 1)));
}
/* __shfl_xor: self ^ m, or self when that lies past the segment's end. */
template <typename T> T __shfl_xor(T v, int m, int width = warpSize)
{
    const int self = xemu::lane();
    int src = self ^ m;
    if (src >= ((self + width) & ~(width - 1))) src = self;
    return xemu::hip_shfl(v, src);
}
/* __shfl_down: self + d, or self when that leaves the segment. */
template <typename T> T __shfl_down(T v, unsigned d, int width = warpSize)
{
    const int self = xemu::lane();
    const int src = (self & (width - 1)) + (int)d >= width ? self : self + (int)d;
    return xemu::hip_shfl(v, src);
}
/* __shfl_up: self - d, or self when that leaves the segment. */
template <typename T> T __shfl_up(T v, unsigned d, int width = warpSize)
{
    const int self = xemu::lane();
    const int src = self - (int)d < (self & ~(width - 1)) ? self : self - (int)d;
    return xemu::hip_shfl(v, src);
}

/* One bit per lane of the wave that runs and whose predicate holds (lanes
 * past the block's end and exited lanes give 0). */
inline unsigned long long __ballot(int pred)
{
    uint32_t w = pred != 0;
    xemu::publish(&w, 1, xemu::OP_BALLOT, xemu::ALL_LANES);
    unsigned long long out = 0;
    for (int l = 0; l < xemu::WARP; l++) {
        const int t = xemu::warp_base() + l;
        if (t < xemu::nthreads && xemu::fibers[t].state != xemu::DONE && xemu::peer(l)[0])
            out |= 1ull << l;
    }
    xemu::done_reading(xemu::OP_BALLOT, xemu::ALL_LANES);
    return out;
}
inline unsigned long long __activemask()
{
    return __ballot(1);
}
inline int __any(int pred) { return __ballot(pred) != 0; }
inline int __all(int pred) { return __ballot(pred) == __ballot(1); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffsll(unsigned long long x) { return __builtin_ffsll((long long)x); }
inline int __ffs(unsigned x) { return __builtin_ffs((int)x); }
inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }

/* ds_bpermute(addr, v): lane (addr / 4) mod wave's v. */
inline int xemu_ds_bpermute(int addr, int v) { return xemu::hip_shfl(v, addr >> 2); }
/* readfirstlane: the lowest running lane's value. */
inline int xemu_readfirstlane(int v)
{
    uint32_t w = (uint32_t)v;
    xemu::publish(&w, 1, xemu::OP_SHFL, xemu::ALL_LANES);
    int out = v;
    for (int l = 0; l < xemu::WARP; l++) {
        const int t = xemu::warp_base() + l;
        if (t < xemu::nthreads && xemu::fibers[t].state != xemu::DONE) {
            out = (int)xemu::peer(l)[0];
            break;
        }
    }
    xemu::done_reading(xemu::OP_SHFL, xemu::ALL_LANES);
    return out;
}
#define __builtin_amdgcn_ds_bpermute(addr, v) xemu_ds_bpermute((addr), (v))
#define __builtin_amdgcn_readfirstlane(v) xemu_readfirstlane((v))
/* The wave's lanes meet (on hardware they run in lockstep; here this is
 * what orders one lane's LDS writes before another lane's reads). */
#define __builtin_amdgcn_wave_barrier() \
    xemu::wait_at(xemu::AT_WARP, xemu::OP_WAVE_BARRIER, xemu::ALL_LANES)
#define __builtin_amdgcn_s_barrier() __syncthreads()
/* Every write is seen at once here: fences order nothing more. */
#define __builtin_amdgcn_fence(order, scope) ((void)0)
#define __threadfence() ((void)0)
#define __threadfence_block() ((void)0)

/* ---- atomics: one thread runs at a time --------------------------------- */
template <typename T> T atomicSub(T *p, T v) { T old = *p; *p = old - v; return old; }
template <typename T> T atomicExch(T *p, T v) { T old = *p; *p = v; return old; }
template <typename T> T atomicMin(T *p, T v) { T old = *p; if (v < old) *p = v; return old; }
inline unsigned atomicMax(unsigned *p, unsigned v) { unsigned old = *p; if (v > old) *p = v; return old; }
template <typename T> T atomicOr(T *p, T v) { T old = *p; *p = old | v; return old; }
template <typename T> T atomicAnd(T *p, T v) { T old = *p; *p = old & v; return old; }
template <typename T> T atomicCAS(T *p, T cmp, T v) { T old = *p; if (old == cmp) *p = v; return old; }

/* ---- MFMA (CDNA: gfx908, gfx90a) -------------------------------------------
 * The per-lane layouts of the operands and the accumulator, for the four
 * instructions below, as the AMD Matrix Instruction Calculator
 * (github.com/ROCm/amd_matrix_instruction_calculator, --register-layout;
 * the CDNA2 ISA guide's "Matrix fused-multiply-add" chapter describes the
 * same) gives them for cbsz = abid = blgp = 0. i is the row of A and D, j
 * the column of B and D, k the inner index; a lane holds 4 16-bit values
 * of A (item 0..3 of its 64-bit operand, low half first) and 4 of B.
 *
 *   v_mfma_f32_32x32x8{f16,bf16_1k}: A 32x8, B 8x32, D 32x32 (16 floats)
 *     A[i][k]: lane i + 32 * (k / 4), item k % 4
 *     B[k][j]: lane j + 32 * (k / 4), item k % 4
 *     D[i][j]: lane j + 32 * (i / 4 % 2), register 4 * (i / 8) + i % 4
 *   v_mfma_f32_16x16x16{f16,bf16_1k}: A 16x16, B 16x16, D 16x16 (4 floats)
 *     A[i][k]: lane i + 16 * (k / 4), item k % 4
 *     B[k][j]: lane j + 16 * (k / 4), item k % 4
 *     D[i][j]: lane j + 16 * (i / 4), register i % 4
 *
 * The operand types are clang vector types (_Float16 or short x4, float
 * x4 or x16); the fake hiprtc turns ext_vector_type into GCC's
 * vector_size, and these take any 8-byte operand and the accumulator by
 * its bytes. Every lane of the wave must take part (an exited lane fails
 * the launch). The bf16_1k forms exist on gfx90a only, as in hiprtc (on
 * gfx908 hiprtc 5.2 aborts on them; here they are undeclared). */
#if XEMU_WAVE == 64 && (defined(__gfx908__) || defined(__gfx90a__))
namespace xemu {
inline float mfma_in(uint32_t word, int half, bool bf16)
{
    const unsigned short h = (unsigned short)(half ? word >> 16 : word & 0xffffu);
    if (bf16) {
        const uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    return xemu_f16_to_f32(h);
}

/* D = A B + C for an M x N x K instruction (32x32x8 or 16x16x16). */
template <int M, int N, int K, bool BF16, typename V, typename C>
C mfma(const V &a, const V &b, const C &c, int cbsz, int abid, int blgp)
{
    static_assert(sizeof(V) == 8, "an MFMA operand is 4 16-bit values");
    static_assert(sizeof(C) == 4 * (M * N / 64), "an MFMA accumulator is M*N/64 floats");
    if (cbsz || abid || blgp) {
        report("MFMA with cbsz/abid/blgp %d/%d/%d: only 0/0/0 is emulated", cbsz, abid, blgp);
        abort();
    }
    uint32_t w[4];
    memcpy(w, &a, 8);
    memcpy(w + 2, &b, 8);
    publish(w, 4, OP_MFMA, ALL_LANES);
    const int self = lane();
    float d[M * N / 64];
    memcpy(d, &c, sizeof d);
    /* The outputs of this lane: D[i][j] for its registers r. */
    for (int r = 0; r < M * N / 64; r++) {
        int i, j;
        if (M == 32) {
            i = 8 * (r / 4) + 4 * (self / 32) + r % 4;
            j = self % 32;
        } else {
            i = 4 * (self / 16) + r;
            j = self % 16;
        }
        float s = d[r];
        for (int k = 0; k < K; k++) {
            const uint32_t *pa = peer(i + M * (k / 4)), *pb = peer(j + N * (k / 4));
            const int item = k % 4;
            s += mfma_in(pa[item / 2], item % 2, BF16) * mfma_in(pb[2 + item / 2], item % 2, BF16);
        }
        d[r] = s;
    }
    done_reading(OP_MFMA, ALL_LANES);
    C out;
    memcpy(&out, d, sizeof d);
    return out;
}
} // namespace xemu
#define __builtin_amdgcn_mfma_f32_32x32x8f16(a, b, c, cbsz, abid, blgp) \
    xemu::mfma<32, 32, 8, false>((a), (b), (c), (cbsz), (abid), (blgp))
#define __builtin_amdgcn_mfma_f32_16x16x16f16(a, b, c, cbsz, abid, blgp) \
    xemu::mfma<16, 16, 16, false>((a), (b), (c), (cbsz), (abid), (blgp))
#if defined(__gfx90a__)
#define __builtin_amdgcn_mfma_f32_32x32x8bf16_1k(a, b, c, cbsz, abid, blgp) \
    xemu::mfma<32, 32, 8, true>((a), (b), (c), (cbsz), (abid), (blgp))
#define __builtin_amdgcn_mfma_f32_16x16x16bf16_1k(a, b, c, cbsz, abid, blgp) \
    xemu::mfma<16, 16, 16, true>((a), (b), (c), (cbsz), (abid), (blgp))
#endif
#endif

/* Kernels are found by name: the fake hiprtc appends XATTN_EXPORT(name)
 * for each `extern "C" __global__` function of the source. */
