/* xemu: the kernels of backends/cuda compiled as host C++ and run on the
 * CPU, for tests on machines without a GPU (tests/cuda_emu/README.md).
 * This header is force-included (-include) before a kernel source, with
 * -DXATTN_CUDA_EMU=1, by the fake NVRTC (fake_nvrtc.c); the fake driver
 * (fake_cuda.c) loads the result and calls the xemu_launch_<kernel> entry
 * points that XATTN_EXPORT defines. The fibers, barriers and launches are
 * in xemu_core.h, shared with the HIP mode (tests/hip_emu/xemu_hip.h);
 * this file is CUDA's device API on top of them, with 32-lane warps.
 *
 * What it models: the grid, run one block at a time, blocks in order; a
 * block's threads as fibers (ucontext) on one OS thread, switched only at
 * __syncthreads, __syncwarp and warp collectives, each of which is a
 * barrier of the block or the warp; warp shuffles, ballots, and the
 * mma.sync / ldmatrix fragment layouts of prelude.cuh, exchanged through a
 * per-warp area; atomics (trivially: one thread runs at a time); shared
 * memory (static __shared__ arrays are plain statics, shared by the block
 * that runs; dynamic shared memory one buffer per launch).
 *
 * What it does not model: timing, occupancy, registers and spills, the
 * memory model (every write is seen at once, so a missing __syncthreads or
 * __syncwarp between a write and another thread's read goes unnoticed
 * unless the schedule happens to expose it), async copies (cp.async is a
 * plain copy), bank conflicts, independent progress of blocks, and
 * floating point details (f32 math is the host's libm, not the GPU's
 * intrinsics; exp and friends round differently). A barrier that can never
 * complete (some threads exited or wait at another barrier) fails the
 * launch with a message on stderr rather than hanging. */
#pragma once
#include "xemu_core.h"

inline void __syncwarp(unsigned mask = 0xffffffffu)
{
    xemu::wait_at(xemu::AT_WARP, xemu::OP_SYNCWARP, mask);
}

/* Shuffles as PTX shfl.sync with c = ((32 - width) << 8) | 31: a source
 * outside the lane's width-wide segment gives the lane its own value. */
template <typename T> T __shfl_sync(unsigned mask, T v, int src, int width = 32)
{
    const int base = xemu::lane() & ~(width - 1);
    return xemu::shfl_any(mask, v, base + (src & (width - 1)));
}
template <typename T> T __shfl_xor_sync(unsigned mask, T v, int m, int width = 32)
{
    const int l = xemu::lane(), src = l ^ m;
    return xemu::shfl_any(mask, v, (src & ~(width - 1)) == (l & ~(width - 1)) ? src : l);
}
template <typename T> T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32)
{
    const int l = xemu::lane();
    return xemu::shfl_any(mask, v, (l & (width - 1)) + (int)d < width ? l + (int)d : l);
}
inline unsigned __ballot_sync(unsigned mask, int pred)
{
    uint32_t w = pred != 0;
    xemu::publish(&w, 1, xemu::OP_BALLOT, mask);
    unsigned out = 0;
    for (int l = 0; l < 32; l++)
        if ((mask >> l & 1) && xemu::warp_base() + l < xemu::nthreads && xemu::peer(l)[0])
            out |= 1u << l;
    xemu::done_reading(xemu::OP_BALLOT, mask);
    return out;
}



/* Element e (0 = low half) of a 32-bit fragment register as float. */
inline float xemu_half(uint32_t r, int e, int bf16)
{
    const unsigned short h = (unsigned short)(e ? r >> 16 : r & 0xffffu);
    return bf16 ? __uint_as_float((uint32_t)h << 16) : xemu_f16_to_f32(h);
}

/* mma.sync m16n8k16 with the fragment layout written in prelude.cuh. */
inline void xemu_mma_16816(float d[4], const uint32_t a[4], const uint32_t b[2], int bf16)
{
    uint32_t w[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
    xemu::publish(w, 6, xemu::OP_MMA, 0xffffffffu);
    float ma[16][16], mb[16][8];
    for (int l = 0; l < 32; l++) {
        const uint32_t *p = xemu::peer(l);
        const int g = l / 4, c = (l % 4) * 2;
        for (int e = 0; e < 2; e++) {
            ma[g][c + e] = xemu_half(p[0], e, bf16);
            ma[g + 8][c + e] = xemu_half(p[1], e, bf16);
            ma[g][c + 8 + e] = xemu_half(p[2], e, bf16);
            ma[g + 8][c + 8 + e] = xemu_half(p[3], e, bf16);
            mb[c + e][g] = xemu_half(p[4], e, bf16);
            mb[c + 8 + e][g] = xemu_half(p[5], e, bf16);
        }
    }
    xemu::done_reading(xemu::OP_MMA, 0xffffffffu);
    const int l = xemu::lane(), g = l / 4, c = (l % 4) * 2;
    for (int i = 0; i < 4; i++) {
        const int row = g + (i >= 2 ? 8 : 0), col = c + (i & 1);
        float s = d[i];
        for (int k = 0; k < 16; k++) s += ma[row][k] * mb[k][col];
        d[i] = s;
    }
}

/* ldmatrix .x1/.x2/.x4 (n matrices), optionally .trans, as prelude.cuh. */
inline void xemu_ldmatrix(uint32_t *r, const void *p, int n, int trans)
{
    uint32_t w[2];
    memcpy(w, &p, sizeof p);
    xemu::publish(w, 2, xemu::OP_LDMATRIX, 0xffffffffu);
    const int l = xemu::lane();
    for (int i = 0; i < n; i++) {
        unsigned short e[2];
        for (int j = 0; j < 2; j++) {
            int row, col;
            if (trans) { row = (l % 4) * 2 + j; col = l / 4; }
            else { row = l / 4; col = (l % 4) * 2 + j; }
            const unsigned short *base;
            memcpy(&base, xemu::peer(8 * i + row), sizeof base);
            e[j] = base[col];
        }
        r[i] = (uint32_t)e[0] | ((uint32_t)e[1] << 16);
    }
    xemu::done_reading(xemu::OP_LDMATRIX, 0xffffffffu);
}

inline void xemu_cp_async16(void *dst, const void *src, bool ok)
{
    const int t = xemu::cur;
    if (xemu::npending[t] == xemu::PENDING) { /* full: land the oldest */
        xemu::pending_copy &c = xemu::pending[t][0];
        memcpy(c.dst, c.bytes, 16);
        memmove(&xemu::pending[t][0], &xemu::pending[t][1],
                (xemu::PENDING - 1) * sizeof(xemu::pending_copy));
        xemu::npending[t]--;
    }
    xemu::pending_copy &c = xemu::pending[t][xemu::npending[t]++];
    c.dst = (unsigned char *)dst;
    if (ok) memcpy(c.bytes, src, 16);
    else memset(c.bytes, 0, 16);
    c.group = xemu::groups[t];
}

/* cp.async.commit_group: close the open group. */
inline void xemu_cp_async_commit() { xemu::groups[xemu::cur]++; }

/* cp.async.wait_group n: every committed group but the newest n lands. */
inline void xemu_cp_async_wait(int n)
{
    const unsigned g = xemu::groups[xemu::cur];
    if (g > (unsigned)n) xemu::land(xemu::cur, g - (unsigned)n);
}

#define XATTN_DYNAMIC_SMEM(name) unsigned char *name = xemu::dyn_smem
