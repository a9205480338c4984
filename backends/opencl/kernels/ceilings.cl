/* Ceiling kernels for `xattn bench` (ceilings.c): a device-memory copy for
 * bytes/s and an FMA loop for f32 FLOP/s. No plan constants; the host
 * picks two build options from the device:
 *   -DCOPY_UNROLL=16   16-byte vectors each work-item moves per launch
 *   -DCOPY_CONTIGUOUS=1  a CPU device: each work-item's vectors adjacent
 *   -DFMA_VEC=8        lanes of one FMA accumulator (1, 2, 4, 8 or 16): the
 *                      device's native float vector width, so a CPU device
 *                      (PoCL) runs its widest FMA and a GPU scalar FMAs */

/* Work-group g copies the contiguous tile [g·L·U, (g+1)·L·U) of float4s
 * (L work-items, U = COPY_UNROLL). On a GPU work-item i moves tile elements
 * i + k·L, so each of its U loads is coalesced over the group and all U are
 * in flight before the first store; with -DCOPY_CONTIGUOUS=1 (a CPU device,
 * where a work-group is a loop over its work-items) work-item i moves
 * elements i·U .. i·U + U - 1, so the loop streams through the tile in
 * order. */
__kernel void ceiling_copy(__global const float4 *restrict src, __global float4 *restrict dst)
{
#if defined(COPY_CONTIGUOUS) && COPY_CONTIGUOUS
    const size_t base = get_global_id(0) * COPY_UNROLL, step = 1;
#else
    const size_t step = get_local_size(0);
    const size_t base = get_group_id(0) * step * COPY_UNROLL + get_local_id(0);
#endif
    float4 v[COPY_UNROLL];
    for (int k = 0; k < COPY_UNROLL; k++) v[k] = src[base + (size_t)k * step];
    for (int k = 0; k < COPY_UNROLL; k++) dst[base + (size_t)k * step] = v[k];
}

#if FMA_VEC == 1
typedef float fma_vec;
#else
#define FMA_VEC_TYPE_(n) float##n
#define FMA_VEC_TYPE(n) FMA_VEC_TYPE_(n)
typedef FMA_VEC_TYPE(FMA_VEC) fma_vec;
#endif

/* Independent accumulators per work-item: enough to cover the FMA latency
 * on a CPU core's two FMA ports (8 was 40% slower on PoCL), few enough to
 * stay in registers. */
#define FMA_CHAINS 12

/* iters rounds of FMA_CHAINS fused multiply-adds of FMA_VEC lanes:
 * acc = fma(acc, x, y) with x and y from the host (|x| < 1 keeps acc finite
 * and normal, and the compiler cannot fold what it does not know). fma(),
 * not mad(): PoCL turns mad() into a multiply and an add (60% of the rate).
 * An FMA counts as 2 FLOPs. The sums are written so the loop cannot be
 * dropped. */
__kernel void ceiling_fma(__global fma_vec *out, int iters, float x, float y)
{
    const size_t gid = get_global_id(0);
    fma_vec acc[FMA_CHAINS];
    const float seed = (float)(gid & 1023u) * 1e-6f;
    for (int k = 0; k < FMA_CHAINS; k++) acc[k] = (fma_vec)(seed + (float)k * 1e-3f);
    for (int i = 0; i < iters; i++) {
#pragma unroll
        for (int k = 0; k < FMA_CHAINS; k++) acc[k] = fma(acc[k], (fma_vec)x, (fma_vec)y);
    }
    fma_vec s = acc[0];
    for (int k = 1; k < FMA_CHAINS; k++) s += acc[k];
    out[gid] = s;
}
