/* Ceiling kernels for `xattn bench` (ceilings.c): a device-memory copy for
 * bytes/s, an f32 FMA loop and a bf16 mma.sync loop for FLOP/s. No plan
 * constants: one compile per architecture. */

/* 16 bytes moved as one vector load and one vector store (LDG.128 /
 * STG.128). */
struct __align__(16) vec16 {
    u32 x, y, z, w;
};

#define COPY_UNROLL 8

/* Block b copies the contiguous tile [b·T·U, (b+1)·T·U) of 16-byte vectors
 * (T threads, U = COPY_UNROLL): thread t moves tile elements t + k·T, so
 * each of its U loads is coalesced over the warp and all U are in flight
 * before the first store. The host sizes the arrays to whole tiles. */
extern "C" __global__ void ceiling_copy(const vec16 *__restrict__ src, vec16 *__restrict__ dst)
{
    const i64 base = (i64)blockIdx.x * blockDim.x * COPY_UNROLL + threadIdx.x;
    vec16 v[COPY_UNROLL];
#pragma unroll
    for (int k = 0; k < COPY_UNROLL; k++) v[k] = src[base + (i64)k * blockDim.x];
#pragma unroll
    for (int k = 0; k < COPY_UNROLL; k++) dst[base + (i64)k * blockDim.x] = v[k];
}

/* Independent accumulators per thread: with a full SM of threads the FMA
 * pipes need little instruction-level parallelism; 8 leaves no doubt. */
#define FMA_CHAINS 8

/* iters rounds of FMA_CHAINS multiply-adds per thread: acc = acc·x + y,
 * which NVRTC contracts into one FFMA (--fmad is on by default); x and y
 * come from the host so nothing folds, |x| < 1 keeps acc finite. One FMA
 * counts as 2 FLOPs. The sum is written so the loop cannot be dropped. */
extern "C" __global__ void ceiling_fma(float *__restrict__ out, int iters, float x, float y)
{
    const i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    float acc[FMA_CHAINS];
#pragma unroll
    for (int k = 0; k < FMA_CHAINS; k++) acc[k] = (float)(tid & 1023) * 1e-6f + (float)k * 1e-3f;
    for (int i = 0; i < iters; i++) {
#pragma unroll
        for (int k = 0; k < FMA_CHAINS; k++) acc[k] = acc[k] * x + y;
    }
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < FMA_CHAINS; k++) s += acc[k];
    out[tid] = s;
}

#if XATTN_ARCH >= 80
/* Independent m16n8k16 accumulators per warp, enough to cover the
 * tensor-core latency from one warp per SM sub-partition. */
#define MMA_CHAINS 8

/* iters rounds of MMA_CHAINS bf16 mma.sync m16n8k16 (f32 accumulators) per
 * warp on register-resident fragments: the matrix units' rate with no
 * memory traffic, the ceiling of the module's mma.sync kernels (Hopper's
 * wgmma runs faster). Fragments hold small nonzero values (zeros can run
 * cooler and faster than real data); each mma is 2·16·8·16 FLOPs. */
extern "C" __global__ void ceiling_mma_bf16(float *__restrict__ out, int iters)
{
    const int lane = threadIdx.x & 31;
    const i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    u32 a[4], b[2];
    for (int r = 0; r < 4; r++)
        a[r] = pack2_bf16(0.01f + 1e-4f * (float)(lane + r), 0.01f - 1e-4f * (float)lane);
    for (int r = 0; r < 2; r++)
        b[r] = pack2_bf16(0.02f - 1e-4f * (float)(lane + r), 0.01f + 1e-4f * (float)lane);
    float d[MMA_CHAINS][4];
#pragma unroll
    for (int k = 0; k < MMA_CHAINS; k++)
        for (int r = 0; r < 4; r++) d[k][r] = 0.0f;
    for (int i = 0; i < iters; i++) {
#pragma unroll
        for (int k = 0; k < MMA_CHAINS; k++) mma_16816_bf16(d[k], a, b);
    }
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < MMA_CHAINS; k++) s += d[k][0] + d[k][1] + d[k][2] + d[k][3];
    out[tid] = s;
}
#endif

XATTN_EXPORT(ceiling_copy)
XATTN_EXPORT(ceiling_fma)
#if XATTN_ARCH >= 80
XATTN_EXPORT(ceiling_mma_bf16)
#endif
