/* Kernels of the HIP emulator's self-test (test_hip_emu.c runs them
 * through the fake hiprtc and runtime and checks the results). HIP C++ as
 * hiprtc takes it, including no header. */

typedef unsigned short u16;
typedef _Float16 half4 __attribute__((ext_vector_type(4)));
typedef short short4_ __attribute__((ext_vector_type(4)));
typedef float float4_ __attribute__((ext_vector_type(4)));
typedef float float16_ __attribute__((ext_vector_type(16)));

/* What the target says about itself: wave size two ways, the arch macro. */
extern "C" __global__ void k_info(int *out)
{
    const int t = (int)(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
    const int b = (int)(blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z));
    const int n = (int)(blockDim.x * blockDim.y * blockDim.z);
    out[8 + b * n + t] = (int)(threadIdx.x | threadIdx.y << 8 | threadIdx.z << 16 | blockIdx.x << 20 |
                               blockIdx.y << 24 | blockIdx.z << 28);
    if (t != 0 || b != 0) return;
    out[0] = warpSize;
    out[1] = __AMDGCN_WAVEFRONT_SIZE;
#if defined(__gfx90a__)
    out[2] = 0x90a;
#elif defined(__gfx908__)
    out[2] = 0x908;
#elif defined(__gfx1030__)
    out[2] = 0x1030;
#else
    out[2] = -1;
#endif
}

/* Collectives, eleven results a thread (width for the shuffles). */
extern "C" __global__ void __launch_bounds__(128) k_wave(int *out, int width)
{
    const int t = (int)threadIdx.x, v = 100 + t;
    int *o = out + 11 * t;
    o[0] = __shfl(v, (t * 5 + 3) % 64, width);
    o[1] = __shfl_xor(v, 5, width);
    o[2] = __shfl_xor(v, width / 2, width);
    o[3] = __shfl_down(v, 3, width);
    o[4] = __shfl_up(v, 2, width);
    const unsigned long long bal = __ballot(t % 3 == 0 || t == 63);
    o[5] = (int)(unsigned)bal;
    o[6] = (int)(unsigned)(bal >> 32);
    o[7] = __any(t == 5);
    o[8] = __all(t < 120);
    o[9] = __builtin_amdgcn_ds_bpermute(((t + 1) * 4), v);
    o[10] = __builtin_amdgcn_readfirstlane(v);
}

/* Dynamic LDS (extern __shared__), static LDS, __syncthreads ordering, and
 * the wave barrier ordering one lane's write before its neighbour's read. */
extern "C" __global__ void k_lds(float *out)
{
    extern __shared__ __attribute__((aligned(16))) unsigned char smem[];
    __shared__ float stat[256];
    float *dyn = (float *)smem;
    const int t = (int)threadIdx.x, n = (int)blockDim.x;
    dyn[t] = (float)(t * 2 + blockIdx.x);
    stat[t] = (float)t;
    __syncthreads();
    out[blockIdx.x * 3 * n + t] = dyn[n - 1 - t] + stat[(t + 1) % n];
    __syncthreads();
    const int lane = t % warpSize, base = t - lane;
    stat[t] = (float)(t * 3);
    __builtin_amdgcn_wave_barrier();
    out[blockIdx.x * 3 * n + n + t] = stat[base + (lane + 1) % warpSize];
    out[blockIdx.x * 3 * n + 2 * n + t] = (float)__popcll(__ballot(1));
}

/* A kernel that uses HIP_DYNAMIC_SHARED. */
extern "C" __global__ void k_dyn2(int *out)
{
    HIP_DYNAMIC_SHARED(int, buf)
    buf[threadIdx.x] = (int)threadIdx.x * 7;
    __syncthreads();
    out[threadIdx.x] = buf[blockDim.x - 1 - threadIdx.x];
}

extern "C" __global__ void k_atomics(int *out)
{
    atomicAdd(&out[0], 1);
    atomicMax(&out[1], (int)threadIdx.x);
    atomicMin(&out[2], (int)threadIdx.x);
    atomicOr(&out[3], 1 << (threadIdx.x % 31));
    atomicCAS(&out[4], 0, (int)threadIdx.x + 1);
}

/* MFMA: each lane passes its raw operand registers (4 16-bit values of A
 * and of B) and accumulator, and stores what the instruction returns. */
#if defined(__gfx90a__) || defined(__gfx908__)
extern "C" __global__ void k_mfma32_f16(const u16 *a, const u16 *b, const float *c, float *d)
{
    const int l = (int)threadIdx.x;
    half4 va, vb;
    float16_ vc;
    for (int e = 0; e < 4; e++) {
        va[e] = __builtin_bit_cast(_Float16, a[l * 4 + e]);
        vb[e] = __builtin_bit_cast(_Float16, b[l * 4 + e]);
    }
    for (int r = 0; r < 16; r++) vc[r] = c[l * 16 + r];
    vc = __builtin_amdgcn_mfma_f32_32x32x8f16(va, vb, vc, 0, 0, 0);
    for (int r = 0; r < 16; r++) d[l * 16 + r] = vc[r];
}
extern "C" __global__ void k_mfma16_f16(const u16 *a, const u16 *b, const float *c, float *d)
{
    const int l = (int)threadIdx.x;
    half4 va, vb;
    float4_ vc;
    for (int e = 0; e < 4; e++) {
        va[e] = __builtin_bit_cast(_Float16, a[l * 4 + e]);
        vb[e] = __builtin_bit_cast(_Float16, b[l * 4 + e]);
    }
    for (int r = 0; r < 4; r++) vc[r] = c[l * 4 + r];
    vc = __builtin_amdgcn_mfma_f32_16x16x16f16(va, vb, vc, 0, 0, 0);
    for (int r = 0; r < 4; r++) d[l * 4 + r] = vc[r];
}
/* An MFMA some lanes of the wave have left: must fail the launch. */
extern "C" __global__ void k_mfma_exited(float *d)
{
    if (threadIdx.x >= 32) return;
    half4 va = {}, vb = {};
    float4_ vc = {};
    vc = __builtin_amdgcn_mfma_f32_16x16x16f16(va, vb, vc, 0, 0, 0);
    d[threadIdx.x] = vc[0];
}
#endif
#if defined(__gfx90a__)
extern "C" __global__ void k_mfma32_bf16(const u16 *a, const u16 *b, const float *c, float *d)
{
    const int l = (int)threadIdx.x;
    short4_ va, vb;
    float16_ vc;
    for (int e = 0; e < 4; e++) {
        va[e] = (short)a[l * 4 + e];
        vb[e] = (short)b[l * 4 + e];
    }
    for (int r = 0; r < 16; r++) vc[r] = c[l * 16 + r];
    vc = __builtin_amdgcn_mfma_f32_32x32x8bf16_1k(va, vb, vc, 0, 0, 0);
    for (int r = 0; r < 16; r++) d[l * 16 + r] = vc[r];
}
extern "C" __global__ void k_mfma16_bf16(const u16 *a, const u16 *b, const float *c, float *d)
{
    const int l = (int)threadIdx.x;
    short4_ va, vb;
    float4_ vc;
    for (int e = 0; e < 4; e++) {
        va[e] = (short)a[l * 4 + e];
        vb[e] = (short)b[l * 4 + e];
    }
    for (int r = 0; r < 4; r++) vc[r] = c[l * 4 + r];
    vc = __builtin_amdgcn_mfma_f32_16x16x16bf16_1k(va, vb, vc, 0, 0, 0);
    for (int r = 0; r < 4; r++) d[l * 4 + r] = vc[r];
}
#endif

/* Broken kernels: each launch must fail, not hang. */
extern "C" __global__ void k_bad_barrier(int *out)
{
    if (threadIdx.x % 2) __syncthreads(); /* half the block never arrives */
    out[threadIdx.x] = 1;
}
extern "C" __global__ void k_bad_diverge(int *out)
{
    int v = (int)threadIdx.x;
    if (threadIdx.x % warpSize < 8) v = __shfl_xor(v, 1); /* the rest of the wave ballots */
    else v = (int)__ballot(v > 3);
    out[threadIdx.x] = v;
}
/* Exited lanes are inactive, not an error: a ballot of the lanes left. */
extern "C" __global__ void k_exited(int *out)
{
    if (threadIdx.x % 2) return;
    out[threadIdx.x] = (int)__popcll(__ballot(1));
}
