/* Kernels of the xemu self-test (test_xemu.c): each checks one thing the
 * emulator provides against what prelude.cuh and the CUDA documentation
 * promise. Compiled through the fake NVRTC after prelude.cuh, like the
 * module's own sources. Every fragment is built from the layouts written in
 * prelude.cuh, independently of the emulator's code. */

/* D = A·B + C through one mma.sync: A 16×16 row-major, B 16×8 stored
 * [k][n], C and D 16×8 row-major, all f32 in global memory; the operands
 * rounded to f16 or bf16 here, lane by lane, in the documented layout. */
extern "C" __global__ void t_mma(const float *A, const float *B, const float *C, float *D,
                                 int bf16)
{
    const int l = threadIdx.x, g = l / 4, c = (l % 4) * 2;
    u32 a[4], b[2];
    float d[4];
    const int ar[4] = {g, g + 8, g, g + 8}, ac[4] = {c, c, c + 8, c + 8};
    for (int i = 0; i < 4; i++) {
        const float lo = A[ar[i] * 16 + ac[i]], hi = A[ar[i] * 16 + ac[i] + 1];
        a[i] = bf16 ? pack2_bf16(lo, hi) : pack2_f16(lo, hi);
    }
    for (int i = 0; i < 2; i++) {
        const int k = c + 8 * i;
        const float lo = B[k * 8 + g], hi = B[(k + 1) * 8 + g];
        b[i] = bf16 ? pack2_bf16(lo, hi) : pack2_f16(lo, hi);
    }
    for (int i = 0; i < 4; i++) d[i] = C[(g + (i >= 2 ? 8 : 0)) * 8 + c + (i & 1)];
    if (bf16)
        mma_16816_bf16(d, a, b);
    else
        mma_16816_f16(d, a, b);
    for (int i = 0; i < 4; i++) D[(g + (i >= 2 ? 8 : 0)) * 8 + c + (i & 1)] = d[i];
}
XATTN_EXPORT(t_mma)

/* ldmatrix in its four forms on a 16×16 matrix of 16-bit values in shared
 * memory with a row pitch of 24 elements. Matrix i of .x4 is the 8×8 tile
 * at rows (i % 2)·8, columns (i / 2)·8; lane l gives the address of row
 * l % 8 of matrix l / 8 (for .x2 lanes 16–31 give the tile's origin).
 * out[form][lane][i] = r[i], forms x4, x4.trans, x2, x2.trans. */
extern "C" __global__ void t_ldmatrix(const u16 *M, u32 *out)
{
    __shared__ __align__(16) u16 s[16 * 24];
    const int l = threadIdx.x;
    for (int i = l; i < 256; i += 32) s[i / 16 * 24 + i % 16] = M[i];
    __syncwarp();
    const int i = l / 8, r = l % 8;
    const u16 *row = &s[((i % 2) * 8 + r) * 24 + (i / 2) * 8];
    const u16 *row2 = l < 16 ? row : s;
    u32 v[4];
    ldmatrix_x4(v, row);
    for (int j = 0; j < 4; j++) out[(0 * 32 + l) * 4 + j] = v[j];
    ldmatrix_x4_trans(v, row);
    for (int j = 0; j < 4; j++) out[(1 * 32 + l) * 4 + j] = v[j];
    ldmatrix_x2(v, row2);
    for (int j = 0; j < 2; j++) out[(2 * 32 + l) * 4 + j] = v[j];
    ldmatrix_x2_trans(v, row2);
    for (int j = 0; j < 2; j++) out[(3 * 32 + l) * 4 + j] = v[j];
}
XATTN_EXPORT(t_ldmatrix)

/* The way kernels feed tensor cores: A (16×16) and B ([k][n], 16×8) staged
 * in shared memory as 16-bit values (cp.async for A), A's fragments by
 * ldmatrix_x4, B's by ldmatrix_x2_trans, then D = A·B. */
extern "C" __global__ void t_ldmatrix_mma(const float *A, const float *B, float *D, int bf16)
{
    __shared__ __align__(16) u16 sa[16 * 16], sb[16 * 8], ga[16 * 16];
    const int l = threadIdx.x;
    for (int i = l; i < 256; i += 32) {
        ga[i] = bf16 ? f32_to_bf16(A[i]) : f32_to_f16(A[i]);
        if (i < 128) sb[i] = bf16 ? f32_to_bf16(B[i]) : f32_to_f16(B[i]);
    }
    __syncwarp();
    /* 32 chunks of 16 bytes: lane l copies chunk l. */
    cp_async16(&sa[l * 8], &ga[l * 8]);
    cp_async_commit();
    cp_async_wait<0>();
    __syncwarp();
    u32 a[4], b[2];
    ldmatrix_x4(a, &sa[((l / 8) % 2 * 8 + l % 8) * 16 + (l / 16) * 8]);
    ldmatrix_x2_trans(b, &sb[(l % 16) * 8]);
    float d[4] = {0, 0, 0, 0};
    if (bf16)
        mma_16816_bf16(d, a, b);
    else
        mma_16816_f16(d, a, b);
    const int g = l / 4, c = (l % 4) * 2;
    for (int i = 0; i < 4; i++) D[(g + (i >= 2 ? 8 : 0)) * 8 + c + (i & 1)] = d[i];
}
XATTN_EXPORT(t_ldmatrix_mma)

/* cp.async lands at the wait that covers its group: out[lane] gets, per
 * step, whether the two 16-byte chunks of the lane hold their data yet
 * (bit 0: group 0, bit 1: group 1; three zero-filled chunks as group 2):
 * after issuing (0), after wait<2> with groups 0 and 1 committed (1),
 * after wait<1> (1), after wait<0> (3), then group 2 (zfill) after wait<0>. */
extern "C" __global__ void t_cp_async(const u32 *src, u32 *out)
{
    __shared__ __align__(16) u32 s[32 * 8];
    const int l = threadIdx.x;
    u32 *mine = &s[l * 8];
    for (int i = 0; i < 8; i++) mine[i] = 0xdeadbeefu;
    cp_async16(mine, &src[l * 8]);
    cp_async_commit();
    cp_async16(mine + 4, &src[l * 8 + 4]);
    cp_async_commit();
    int step = 0;
#define LANDED() ((mine[0] == src[l * 8] ? 1 : 0) | (mine[4] == src[l * 8 + 4] ? 2 : 0))
    out[l * 8 + step++] = LANDED();
    cp_async_wait<2>();
    out[l * 8 + step++] = LANDED();
    cp_async_wait<1>();
    out[l * 8 + step++] = LANDED();
    cp_async_wait<0>();
    out[l * 8 + step++] = LANDED();
    cp_async16_zfill(mine, src, false);
    cp_async_commit();
    out[l * 8 + step++] = mine[0] == 0 ? 1 : 0;
    cp_async_wait<0>();
    out[l * 8 + step++] = mine[0] == 0 && mine[3] == 0 ? 1 : 0;
#undef LANDED
}
XATTN_EXPORT(t_cp_async)

/* Shuffles and ballots over blockDim.x threads (whole warps): per thread
 * eight results, see test_xemu.c for what each must be. */
extern "C" __global__ void t_shuffle(const float *in, float *out, unsigned *ballots, int *ints)
{
    const int t = threadIdx.x, l = t % 32;
    const float x = in[t];
    float *o = out + t * 8;
    o[0] = __shfl_xor_sync(FULL_MASK, x, 5);
    o[1] = __shfl_sync(FULL_MASK, x, 3);
    o[2] = __shfl_sync(FULL_MASK, x, 11, 8);
    o[3] = __shfl_down_sync(FULL_MASK, x, 4);
    o[4] = __shfl_down_sync(FULL_MASK, x, 2, 8);
    o[5] = __shfl_xor_sync(FULL_MASK, x, 1, 4);
    o[6] = warp_sum(x);
    o[7] = warp_max(x);
    ballots[t] = __ballot_sync(FULL_MASK, l % 3 == 0);
    ints[t] = __shfl_xor_sync(FULL_MASK, t * 1000, 7);
    /* A half warp on its own: lanes 16–31 sit this one out. */
    if (l < 16) ints[blockDim.x + t] = __shfl_xor_sync(0xffffu, t, 3, 16);
}
XATTN_EXPORT(t_shuffle)

/* __syncthreads ordering over a 2-D block: rounds of each thread writing
 * its slot and then reading another thread's slot of the same round. */
extern "C" __global__ void t_sync(int *out, int rounds)
{
    __shared__ int s[1024];
    const int n = blockDim.x * blockDim.y, t = threadIdx.y * blockDim.x + threadIdx.x;
    int v = t;
    for (int r = 0; r < rounds; r++) {
        s[t] = v * 3 + r;
        __syncthreads();
        v = s[(t * 7 + r + 1) % n];
        __syncthreads();
    }
    out[(blockIdx.y * gridDim.x + blockIdx.x) * n + t] = v;
}
XATTN_EXPORT(t_sync)

/* Atomics from every thread of the grid on one counter of each kind. */
extern "C" __global__ void t_atomic(int *ci, unsigned *cu, float *cf, int *cm, int *tickets)
{
    const int gid = blockIdx.x * blockDim.x + threadIdx.x;
    tickets[gid] = atomicAdd(ci, 1);
    atomicAdd(cu, (unsigned)gid);
    atomicAdd(cf, 0.5f);
    atomicMax(cm, gid * 37 % 1001);
}
XATTN_EXPORT(t_atomic)

/* Dynamic shared memory: 16-byte aligned, the size the launch asked for. */
extern "C" __global__ void t_dynamic(float *out, int n)
{
    XATTN_DYNAMIC_SMEM(buf);
    float *f = (float *)buf;
    const int t = threadIdx.x;
    for (int i = t; i < n; i += blockDim.x) f[i] = (float)i;
    __syncthreads();
    for (int i = t; i < n; i += blockDim.x) out[i] = f[n - 1 - i];
    if (t == 0) out[n] = (float)((unsigned long long)buf % 16);
}
XATTN_EXPORT(t_dynamic)

/* Shared memory a block did not write reads as garbage (0xff bytes). */
extern "C" __global__ void t_smem_garbage(unsigned *out)
{
    __shared__ unsigned s[64];
    if (blockIdx.x == 0) s[threadIdx.x] = 7; /* block 1 must not see these */
    __syncthreads();
    out[blockIdx.x * 64 + threadIdx.x] = s[threadIdx.x];
}
XATTN_EXPORT(t_smem_garbage)

/* The -D options reach the compiler. */
extern "C" __global__ void t_define(int *out) { out[0] = XEMU_TEST_VALUE * 100 + XATTN_ARCH; }
XATTN_EXPORT(t_define)

/* Broken kernels: each must fail its launch (CUDA_ERROR_LAUNCH_FAILED). */

/* Threads below n exit before a __syncthreads the others wait at. */
extern "C" __global__ void t_bad_exit(int n)
{
    if ((int)threadIdx.x < n) return;
    __syncthreads();
}
XATTN_EXPORT(t_bad_exit)

/* Lane 0 waits at __syncthreads while its warp shuffles. */
extern "C" __global__ void t_bad_diverge(float *out)
{
    float x = (float)threadIdx.x;
    if (threadIdx.x == 0)
        __syncthreads();
    else
        x = __shfl_xor_sync(FULL_MASK, x, 1);
    out[threadIdx.x] = x;
}
XATTN_EXPORT(t_bad_diverge)

/* A full-mask shuffle after half the warp has exited. */
extern "C" __global__ void t_bad_shfl_exited(float *out)
{
    if (threadIdx.x % 32 >= 16) return;
    out[threadIdx.x] = __shfl_xor_sync(FULL_MASK, (float)threadIdx.x, 1);
}
XATTN_EXPORT(t_bad_shfl_exited)

/* Half a warp at a ballot, the other half at a shuffle. */
extern "C" __global__ void t_bad_mixed(unsigned *out)
{
    if (threadIdx.x < 16)
        out[threadIdx.x] = __ballot_sync(FULL_MASK, 1);
    else
        out[threadIdx.x] = __shfl_sync(FULL_MASK, threadIdx.x, 0);
}
XATTN_EXPORT(t_bad_mixed)
