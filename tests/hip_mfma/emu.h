/* A minimal wave64 CPU emulator for the MFMA kernels of backends/hip
 * (attn_mfma.hip, moe_gemm_mfma.hip), so their index math runs somewhere
 * before an AMD GPU does. The test program includes this header, then the
 * kernel source compiled as host C++ (clang++: ext_vector_type, _Float16)
 * with -DXATTN_HIP_EMU=1.
 *
 * What it models: a workgroup's threads as fibers (ucontext) on one OS
 * thread, switched only at __syncthreads and wave operations; with SHUFFLE
 * set the fibers run in a new pseudo-random order every pass, so a missing
 * barrier shows. Wave operations (__shfl, __shfl_xor, __ballot and the MFMA
 * product xemu_mfma_16x16x16) put each lane's operand in a per-wave area
 * between two wave barriers. The MFMA layouts are the ones attn_mfma.hip
 * documents (AMD's matrix instruction calculator), with exact products
 * summed in double and rounded once.
 *
 * What it does not model: the hardware itself (the layouts are this
 * project's reading of AMD's documents, not a measurement), timing,
 * registers, LDS banks and size limits, the memory model, and the GPU's
 * exp2/log2/tanh (the host's libm). */
#pragma once
#include <functional>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ucontext.h>
struct emu_dim3 { unsigned x, y, z; };
namespace emu {
enum { MAXT = 1024, STACK = 512 << 10 };
struct fib { ucontext_t ctx; emu_dim3 tid; int done; };
static fib F[MAXT];
static char *stacks;
static int nthr, cur;
static ucontext_t sched;
static unsigned wave_count[16], wave_gen[16], blk_count, blk_gen;
static uint32_t exch[16][64][8];
static void yield() { swapcontext(&F[cur].ctx, &sched); }
static void block_barrier()
{
    unsigned g = blk_gen;
    if (++blk_count == (unsigned)nthr) { blk_count = 0; blk_gen++; return; }
    while (blk_gen == g) yield();
}
static void wave_barrier()
{
    int w = F[cur].tid.x / 64;
    unsigned g = wave_gen[w];
    if (++wave_count[w] == 64) { wave_count[w] = 0; wave_gen[w]++; return; }
    while (wave_gen[w] == g) yield();
}
static int lane() { return F[cur].tid.x % 64; }
static int wave() { return F[cur].tid.x / 64; }
} // namespace emu
static emu_dim3 blockIdx;
#define threadIdx (emu::F[emu::cur].tid)
#define __global__
#define __device__
#define __launch_bounds__(...)
#define __shared__
static void __syncthreads() { emu::block_barrier(); }
template <class T> static T emu_shfl(T v, int src)
{
    uint32_t x; memcpy(&x, &v, 4);
    emu::exch[emu::wave()][emu::lane()][0] = x;
    emu::wave_barrier();
    uint32_t y = emu::exch[emu::wave()][src & 63][0];
    emu::wave_barrier();
    T r; memcpy(&r, &y, 4);
    return r;
}
template <class T> static T __shfl_xor(T v, int m, int width = 64) { (void)width; return emu_shfl(v, emu::lane() ^ m); }
template <class T> static T __shfl(T v, int s, int width = 64) { (void)width; return emu_shfl(v, s); }
static unsigned long long __ballot(int p)
{
    emu::exch[emu::wave()][emu::lane()][1] = p != 0;
    emu::wave_barrier();
    unsigned long long r = 0;
    for (int l = 0; l < 64; l++) r |= (unsigned long long)emu::exch[emu::wave()][l][1] << l;
    emu::wave_barrier();
    return r;
}
static float emu_h(uint32_t h, int bf16)
{
    if (bf16) { uint32_t u = h << 16; float f; memcpy(&f, &u, 4); return f; }
    _Float16 x; uint16_t s = (uint16_t)h; memcpy(&x, &s, 2); return (float)x;
}
typedef float emu_f32x4 __attribute__((ext_vector_type(4)));
/* D[4g + r][l % 16] += Σ_k A[4g + r][k]·B[k][l % 16]; A[i][k] is element
 * k % 4 of lane i + 16·(k / 4), B[k][j] element k % 4 of lane j + 16·(k / 4). */
static emu_f32x4 xemu_mfma_16x16x16(unsigned long long a, unsigned long long b, emu_f32x4 acc, int bf16)
{
    int w = emu::wave(), l = emu::lane();
    memcpy(&emu::exch[w][l][2], &a, 8);
    memcpy(&emu::exch[w][l][4], &b, 8);
    emu::wave_barrier();
    int j = l % 16, g = l / 16;
    for (int r = 0; r < 4; r++) {
        double s = 0; /* exact products, one rounding at the end */
        for (int k = 0; k < 16; k++) {
            unsigned long long av, bv;
            memcpy(&av, &emu::exch[w][4 * g + r + 16 * (k / 4)][2], 8);
            memcpy(&bv, &emu::exch[w][j + 16 * (k / 4)][4], 8);
            s += (double)emu_h((av >> (16 * (k % 4))) & 0xffff, bf16) *
                 (double)emu_h((bv >> (16 * (k % 4))) & 0xffff, bf16);
        }
        acc[r] = (float)((double)acc[r] + s);
    }
    emu::wave_barrier();
    return acc;
}
/* Launch: blocks in order, each block's threads as fibers. */
static void (*emu_body)();
static void emu_tramp() { emu_body(); emu::F[emu::cur].done = 1; }
static bool emu_launch(unsigned grid, int threads, void (*body)(), unsigned grid_y = 1)
{
    using namespace emu;
    if (!stacks) stacks = (char *)malloc((size_t)MAXT * STACK);
    emu_body = body;
    for (unsigned by = 0; by < grid_y; by++)
    for (unsigned bx = 0; bx < grid; bx++) {
        blockIdx = {bx, by, 0};
        nthr = threads; blk_count = 0; memset(wave_count, 0, sizeof wave_count);
        for (int t = 0; t < threads; t++) {
            F[t].done = 0; F[t].tid = {(unsigned)t, 0, 0};
            getcontext(&F[t].ctx);
            F[t].ctx.uc_stack.ss_sp = stacks + (size_t)t * STACK;
            F[t].ctx.uc_stack.ss_size = STACK;
            F[t].ctx.uc_link = &sched;
            makecontext(&F[t].ctx, emu_tramp, 0);
        }
        for (;;) {
            int alive = 0;
            unsigned before = blk_gen; unsigned wg = 0; for (int w = 0; w < 16; w++) wg += wave_gen[w];
            int fin0 = 0; for (int t = 0; t < threads; t++) fin0 += F[t].done;
            static unsigned seed = 12345;
            int order[MAXT];
            for (int t = 0; t < threads; t++) order[t] = t;
            if (getenv("SHUFFLE"))
                for (int t = threads - 1; t > 0; t--) { seed = seed * 1103515245u + 12345u; int r = (int)((seed >> 8) % (unsigned)(t + 1)); int x = order[t]; order[t] = order[r]; order[r] = x; }
            for (int ti = 0; ti < threads; ti++) {
                int t = order[ti];
                if (F[t].done) continue;
                cur = t;
                swapcontext(&sched, &F[t].ctx);
                alive += !F[t].done;
            }
            if (!alive) break;
            unsigned wg2 = 0; for (int w = 0; w < 16; w++) wg2 += wave_gen[w];
            int fin1 = 0; for (int t = 0; t < threads; t++) fin1 += F[t].done;
            if (blk_gen == before && wg2 == wg && fin1 == fin0) {
                fprintf(stderr, "deadlock in block %u\n", bx);
                return false;
            }
        }
    }
    return true;
}
