/* The xemu self-test: the fake NVRTC compiles selftest.cu (after
 * prelude.cuh, as the CUDA module does), the fake driver runs its kernels,
 * and this checks them against plain C: mma.sync f16/bf16 and ldmatrix
 * against the fragment layouts written in prelude.cuh, shuffles and
 * ballots against CUDA's definitions, __syncthreads ordering, atomics,
 * shared memory, and that broken kernels (a barrier some threads never
 * reach, a warp operation naming exited lanes, divergent warp operations)
 * fail their launch instead of hanging. The driver's launch limits too.
 *
 * Usage: test-xemu DRIVER.so NVRTC.so prelude.cuh selftest.cu
 * Prints one line per check; exit 0 when all pass, 1 otherwise. */
#include <cuda.h>
#include <dlfcn.h>
#include <math.h>
#include <nvrtc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct {
    CUresult (*Init)(unsigned);
    CUresult (*DeviceGet)(CUdevice *, int);
    CUresult (*DeviceGetAttribute)(int *, CUdevice_attribute, CUdevice);
    CUresult (*MemAlloc)(CUdeviceptr *, size_t);
    CUresult (*MemFree)(CUdeviceptr);
    CUresult (*MemcpyHtoDAsync)(CUdeviceptr, const void *, size_t, CUstream);
    CUresult (*MemcpyDtoHAsync)(void *, CUdeviceptr, size_t, CUstream);
    CUresult (*MemsetD8Async)(CUdeviceptr, unsigned char, size_t, CUstream);
    CUresult (*ModuleLoadData)(CUmodule *, const void *);
    CUresult (*ModuleUnload)(CUmodule);
    CUresult (*ModuleGetFunction)(CUfunction *, CUmodule, const char *);
    CUresult (*FuncSetAttribute)(CUfunction, CUfunction_attribute, int);
    CUresult (*LaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                             unsigned, unsigned, CUstream, void **, void **);
    nvrtcResult (*CreateProgram)(nvrtcProgram *, const char *, const char *, int,
                                 const char *const *, const char *const *);
    nvrtcResult (*CompileProgram)(nvrtcProgram, int, const char *const *);
    nvrtcResult (*GetProgramLogSize)(nvrtcProgram, size_t *);
    nvrtcResult (*GetProgramLog)(nvrtcProgram, char *);
    nvrtcResult (*GetCUBINSize)(nvrtcProgram, size_t *);
    nvrtcResult (*GetCUBIN)(nvrtcProgram, char *);
    nvrtcResult (*DestroyProgram)(nvrtcProgram *);
} api;

static int failures;

static void check(int ok, const char *what)
{
    printf("%s: %s\n", ok ? "ok  " : "FAIL", what);
    if (!ok) failures++;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    if (s) s[n] = '\0';
    fclose(f);
    return s;
}

static void *sym(void *lib, const char *name)
{
    void *p = dlsym(lib, name);
    if (!p) {
        fprintf(stderr, "test-xemu: %s missing\n", name);
        exit(1);
    }
    return p;
}
#define LOAD(lib, field, name) *(void **)&api.field = sym(lib, name)

/* Compile src with opts; the "cubin" bytes, or NULL with the log in *log. */
static char *compile(const char *src, int n, const char *const *opts, nvrtcResult *rc, char **log)
{
    nvrtcProgram p;
    *log = NULL;
    if ((*rc = api.CreateProgram(&p, src, "selftest.cu", 0, NULL, NULL)) != NVRTC_SUCCESS)
        return NULL;
    *rc = api.CompileProgram(p, n, opts);
    size_t ls = 0;
    api.GetProgramLogSize(p, &ls);
    *log = calloc(ls + 1, 1);
    if (*log) api.GetProgramLog(p, *log);
    char *bin = NULL;
    size_t bs = 0;
    if (*rc == NVRTC_SUCCESS && api.GetCUBINSize(p, &bs) == NVRTC_SUCCESS &&
        (bin = malloc(bs)) != NULL)
        api.GetCUBIN(p, bin);
    api.DestroyProgram(&p);
    return bin;
}

static CUmodule mod;

static CUfunction fn(const char *name)
{
    CUfunction f = NULL;
    if (api.ModuleGetFunction(&f, mod, name) != CUDA_SUCCESS) {
        fprintf(stderr, "test-xemu: no kernel %s\n", name);
        exit(1);
    }
    return f;
}

static CUdeviceptr dalloc(size_t bytes)
{
    CUdeviceptr p = 0;
    if (api.MemAlloc(&p, bytes) != CUDA_SUCCESS) exit(1);
    return p;
}
static CUdeviceptr dcopy(const void *src, size_t bytes)
{
    CUdeviceptr p = dalloc(bytes);
    api.MemcpyHtoDAsync(p, src, bytes, NULL);
    return p;
}
static void hcopy(void *dst, CUdeviceptr src, size_t bytes)
{
    api.MemcpyDtoHAsync(dst, src, bytes, NULL);
}

static CUresult launch(CUfunction f, unsigned gx, unsigned gy, unsigned bx, unsigned by,
                       unsigned smem, void **params)
{
    return api.LaunchKernel(f, gx, gy, 1, bx, by, 1, smem, NULL, params, NULL);
}

/* Values exact in f16 and bf16 (k/8, |k| ≤ 24: at most 5 significant bits), so
 * every product and sum below is exact in f32 and the comparison is ==. */
static float small_value(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return (float)((int)(*seed >> 16) % 49 - 24) / 8.0f;
}

static void test_mma(int bf16)
{
    float A[256], B[128], C[128], D[128], ref[128];
    unsigned seed = 7u + (unsigned)bf16;
    for (int i = 0; i < 256; i++) A[i] = small_value(&seed);
    for (int i = 0; i < 128; i++) B[i] = small_value(&seed), C[i] = small_value(&seed);
    for (int m = 0; m < 16; m++)
        for (int n = 0; n < 8; n++) {
            float s = C[m * 8 + n];
            for (int k = 0; k < 16; k++) s += A[m * 16 + k] * B[k * 8 + n];
            ref[m * 8 + n] = s;
        }
    CUdeviceptr a = dcopy(A, sizeof A), b = dcopy(B, sizeof B), c = dcopy(C, sizeof C),
                d = dalloc(sizeof D);
    void *params[] = {&a, &b, &c, &d, &bf16};
    CUresult r = launch(fn("t_mma"), 1, 1, 32, 1, 0, params);
    hcopy(D, d, sizeof D);
    int bad = 0;
    for (int i = 0; i < 128; i++) bad += D[i] != ref[i];
    check(r == CUDA_SUCCESS && !bad, bf16 ? "mma_16816_bf16: D = A·B + C, fragments as documented"
                                          : "mma_16816_f16: D = A·B + C, fragments as documented");
    /* The same product staged through shared memory, cp.async, ldmatrix. */
    for (int m = 0; m < 16; m++)
        for (int n = 0; n < 8; n++) {
            float s = 0;
            for (int k = 0; k < 16; k++) s += A[m * 16 + k] * B[k * 8 + n];
            ref[m * 8 + n] = s;
        }
    void *params2[] = {&a, &b, &d, &bf16};
    r = launch(fn("t_ldmatrix_mma"), 1, 1, 32, 1, 0, params2);
    hcopy(D, d, sizeof D);
    bad = 0;
    for (int i = 0; i < 128; i++) bad += D[i] != ref[i];
    check(r == CUDA_SUCCESS && !bad,
          bf16 ? "cp.async + ldmatrix_x4 (A) + ldmatrix_x2_trans (B) + mma bf16 = A·B"
               : "cp.async + ldmatrix_x4 (A) + ldmatrix_x2_trans (B) + mma f16 = A·B");
    api.MemFree(a), api.MemFree(b), api.MemFree(c), api.MemFree(d);
}

static void test_cp_async(void)
{
    uint32_t src[256], out[256];
    for (int i = 0; i < 256; i++) src[i] = 0x1000u + (uint32_t)i;
    memset(out, 0, sizeof out);
    CUdeviceptr s = dcopy(src, sizeof src), o = dcopy(out, sizeof out);
    void *params[] = {&s, &o};
    CUresult r = launch(fn("t_cp_async"), 1, 1, 32, 1, 0, params);
    hcopy(out, o, sizeof out);
    const uint32_t want[6] = {0, 0, 1, 3, 0, 1};
    int bad = 0;
    for (int l = 0; l < 32; l++)
        for (int j = 0; j < 6; j++) bad += out[l * 8 + j] != want[j];
    check(r == CUDA_SUCCESS && !bad,
          "cp.async lands at cp_async_wait<n> of its group (n = 2, 1, 0), zfill too");
    api.MemFree(s), api.MemFree(o);
}

static void test_ldmatrix(void)
{
    uint16_t M[256];
    for (int i = 0; i < 256; i++) M[i] = (uint16_t)(0x100 * (i / 16) + i % 16); /* row, col */
    uint32_t out[4 * 32 * 4];
    memset(out, 0, sizeof out);
    CUdeviceptr m = dcopy(M, sizeof M), o = dcopy(out, sizeof out);
    void *params[] = {&m, &o};
    CUresult r = launch(fn("t_ldmatrix"), 1, 1, 32, 1, 0, params);
    hcopy(out, o, sizeof out);
    const char *names[4] = {"ldmatrix_x4", "ldmatrix_x4_trans", "ldmatrix_x2",
                            "ldmatrix_x2_trans"};
    for (int form = 0; form < 4; form++) {
        const int trans = form & 1, n = form < 2 ? 4 : 2;
        int bad = r != CUDA_SUCCESS;
        for (int l = 0; l < 32; l++)
            for (int i = 0; i < n; i++) {
                /* Element (row, col) of matrix i: the tile at (i%2·8, i/2·8). */
                uint32_t e[2];
                for (int j = 0; j < 2; j++) {
                    const int row = trans ? (l % 4) * 2 + j : l / 4;
                    const int col = trans ? l / 4 : (l % 4) * 2 + j;
                    e[j] = M[((i % 2) * 8 + row) * 16 + (i / 2) * 8 + col];
                }
                bad += out[(form * 32 + l) * 4 + i] != (e[0] | e[1] << 16);
            }
        char what[96];
        snprintf(what, sizeof what, "%s: lane l gets the documented elements", names[form]);
        check(!bad, what);
    }
    api.MemFree(m), api.MemFree(o);
}

static void test_shuffle(void)
{
    enum { N = 64 };
    float in[N], out[N * 8];
    unsigned ballots[N];
    int ints[2 * N];
    for (int t = 0; t < N; t++) in[t] = (float)(t * t % 97) - 40.0f;
    CUdeviceptr i = dcopy(in, sizeof in), o = dalloc(sizeof out), b = dalloc(sizeof ballots),
                n = dalloc(sizeof ints);
    void *params[] = {&i, &o, &b, &n};
    CUresult r = launch(fn("t_shuffle"), 1, 1, N, 1, 0, params);
    hcopy(out, o, sizeof out);
    hcopy(ballots, b, sizeof ballots);
    hcopy(ints, n, sizeof ints);
    int bad[8] = {0}, bad_ballot = 0, bad_int = 0, bad_half = 0;
    for (int t = 0; t < N; t++) {
        const int w = t / 32 * 32, l = t % 32;
        float sum = 0, mx = -1e30f;
        for (int k = 0; k < 32; k++) {
            sum += in[w + k];
            mx = in[w + k] > mx ? in[w + k] : mx;
        }
        const float want[8] = {
            in[w + (l ^ 5)],
            in[w + 3],
            in[w + l / 8 * 8 + 3],                      /* 11 mod width 8 */
            l + 4 < 32 ? in[t + 4] : in[t],             /* down 4 */
            l % 8 + 2 < 8 ? in[t + 2] : in[t],          /* down 2 within 8 */
            in[w + (l ^ 1)],
            sum,
            mx,
        };
        for (int j = 0; j < 8; j++) bad[j] += j == 6 ? fabsf(out[t * 8 + j] - want[j]) > 1e-3f
                                                     : out[t * 8 + j] != want[j];
        bad_ballot += ballots[t] != 0x49249249u;
        bad_int += ints[t] != (w + (l ^ 7)) * 1000;
        if (l < 16) bad_half += ints[N + t] != w + (l ^ 3);
    }
    const char *names[8] = {"__shfl_xor_sync 5", "__shfl_sync lane 3", "__shfl_sync 11 width 8",
                            "__shfl_down_sync 4", "__shfl_down_sync 2 width 8",
                            "__shfl_xor_sync 1 width 4", "warp_sum", "warp_max"};
    for (int j = 0; j < 8; j++) check(r == CUDA_SUCCESS && !bad[j], names[j]);
    check(r == CUDA_SUCCESS && !bad_ballot, "__ballot_sync");
    check(r == CUDA_SUCCESS && !bad_int, "__shfl_xor_sync on int");
    check(r == CUDA_SUCCESS && !bad_half, "__shfl_xor_sync by half a warp (mask 0xffff)");
    api.MemFree(i), api.MemFree(o), api.MemFree(b), api.MemFree(n);
}

static void test_sync(void)
{
    enum { BX = 32, BY = 6, N = BX * BY, GX = 3, GY = 2, ROUNDS = 5 };
    static int out[GX * GY * N], want[N], s[N], v[N];
    CUdeviceptr o = dalloc(sizeof out);
    int rounds = ROUNDS;
    void *params[] = {&o, &rounds};
    CUresult r = launch(fn("t_sync"), GX, GY, BX, BY, 0, params);
    hcopy(out, o, sizeof out);
    for (int t = 0; t < N; t++) v[t] = t;
    for (int k = 0; k < ROUNDS; k++) {
        for (int t = 0; t < N; t++) s[t] = v[t] * 3 + k;
        for (int t = 0; t < N; t++) v[t] = s[(t * 7 + k + 1) % N];
    }
    for (int t = 0; t < N; t++) want[t] = v[t];
    int bad = 0;
    for (int blk = 0; blk < GX * GY; blk++)
        for (int t = 0; t < N; t++) bad += out[blk * N + t] != want[t];
    check(r == CUDA_SUCCESS && !bad, "__syncthreads orders writes and reads (2-D block, 2-D grid)");
    api.MemFree(o);
}

static void test_atomic(void)
{
    enum { BLOCKS = 3, THREADS = 96, N = BLOCKS * THREADS };
    int ci = 0, cm = -1, tickets[N];
    unsigned cu = 0;
    float cf = 0;
    CUdeviceptr pi = dcopy(&ci, 4), pu = dcopy(&cu, 4), pf = dcopy(&cf, 4), pm = dcopy(&cm, 4),
                pt = dalloc(sizeof tickets);
    void *params[] = {&pi, &pu, &pf, &pm, &pt};
    CUresult r = launch(fn("t_atomic"), BLOCKS, 1, THREADS, 1, 0, params);
    hcopy(&ci, pi, 4), hcopy(&cu, pu, 4), hcopy(&cf, pf, 4), hcopy(&cm, pm, 4);
    hcopy(tickets, pt, sizeof tickets);
    char seen[N] = {0};
    int bad = 0, mx = 0;
    for (int t = 0; t < N; t++) {
        if (tickets[t] < 0 || tickets[t] >= N || seen[tickets[t]]++) bad++;
        mx = t * 37 % 1001 > mx ? t * 37 % 1001 : mx;
    }
    check(r == CUDA_SUCCESS && ci == N && !bad, "atomicAdd int: each thread a distinct old value");
    check(r == CUDA_SUCCESS && cu == (unsigned)(N * (N - 1) / 2), "atomicAdd unsigned");
    check(r == CUDA_SUCCESS && cf == 0.5f * N, "atomicAdd float");
    check(r == CUDA_SUCCESS && cm == mx, "atomicMax int");
    api.MemFree(pi), api.MemFree(pu), api.MemFree(pf), api.MemFree(pm), api.MemFree(pt);
}

static void test_smem(void)
{
    enum { N = 24 * 1024 }; /* 96 KiB of floats: past the 48 KiB default */
    static float out[N + 1];
    CUdeviceptr o = dalloc(sizeof out);
    int n = N;
    void *params[] = {&o, &n};
    CUfunction f = fn("t_dynamic");
    check(launch(f, 1, 1, 128, 1, N * 4, params) == CUDA_ERROR_INVALID_VALUE,
          "96 KiB of dynamic shared memory without the attribute: CUDA_ERROR_INVALID_VALUE");
    check(api.FuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 1 << 20) ==
              CUDA_ERROR_INVALID_VALUE,
          "an attribute past the opt-in limit: CUDA_ERROR_INVALID_VALUE");
    CUresult r = api.FuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, N * 4);
    if (r == CUDA_SUCCESS) r = launch(f, 1, 1, 128, 1, N * 4, params);
    hcopy(out, o, sizeof out);
    int bad = 0;
    for (int i = 0; i < N; i++) bad += out[i] != (float)(N - 1 - i);
    check(r == CUDA_SUCCESS && !bad && out[N] == 0.0f,
          "96 KiB of dynamic shared memory with the attribute, 16-byte aligned");
    api.MemFree(o);

    unsigned got[128];
    o = dalloc(sizeof got);
    void *params2[] = {&o};
    r = launch(fn("t_smem_garbage"), 2, 1, 64, 1, 0, params2);
    hcopy(got, o, sizeof got);
    bad = 0;
    for (int i = 0; i < 128; i++) bad += got[i] != (i < 64 ? 7u : 0xffffffffu);
    check(r == CUDA_SUCCESS && !bad, "static shared memory starts each block as 0xff bytes");
    api.MemFree(o);

    uint8_t poison[64];
    o = dalloc(sizeof poison);
    hcopy(poison, o, sizeof poison);
    bad = 0;
    for (int i = 0; i < 64; i++) bad += poison[i] != 0xff;
    api.MemsetD8Async(o, 3, 32, NULL);
    hcopy(poison, o, sizeof poison);
    for (int i = 0; i < 64; i++) bad += poison[i] != (i < 32 ? 3 : 0xff);
    check(!bad, "new allocations hold 0xff bytes; cuMemsetD8Async");
    api.MemFree(o);
}

static void test_limits(void)
{
    float dummy[64];
    CUdeviceptr o = dcopy(dummy, sizeof dummy);
    void *params[] = {&o};
    CUfunction f = fn("t_bad_diverge");
    check(launch(f, 1, 1, 1025, 1, 0, params) == CUDA_ERROR_INVALID_VALUE,
          "1025 threads per block: CUDA_ERROR_INVALID_VALUE");
    check(api.LaunchKernel(f, 1, 1, 1, 1, 1, 65, 0, NULL, params, NULL) ==
              CUDA_ERROR_INVALID_VALUE,
          "block z of 65: CUDA_ERROR_INVALID_VALUE");
    check(api.LaunchKernel(f, 1, 65536, 1, 32, 1, 1, 0, NULL, params, NULL) ==
              CUDA_ERROR_INVALID_VALUE,
          "grid y of 65536: CUDA_ERROR_INVALID_VALUE");
    check(launch(f, 0, 1, 32, 1, 0, params) == CUDA_ERROR_INVALID_VALUE,
          "an empty grid: CUDA_ERROR_INVALID_VALUE");
    CUfunction none = NULL;
    check(api.ModuleGetFunction(&none, mod, "no_such_kernel") == CUDA_ERROR_NOT_FOUND,
          "an unknown kernel: CUDA_ERROR_NOT_FOUND");
    api.MemFree(o);
}

static void test_broken(void)
{
    float buf[64];
    CUdeviceptr o = dcopy(buf, sizeof buf);
    void *po[] = {&o};
    int n = 16, zero = 0;
    void *pn[] = {&n}, *pz[] = {&zero};
    fprintf(stderr, "test-xemu: four broken kernels follow; xemu's messages about them are "
                    "expected\n");
    check(launch(fn("t_bad_exit"), 2, 1, 64, 1, 0, pn) == CUDA_ERROR_LAUNCH_FAILED,
          "threads exit before a __syncthreads others wait at: the launch fails");
    check(launch(fn("t_bad_diverge"), 1, 1, 32, 1, 0, po) == CUDA_ERROR_LAUNCH_FAILED,
          "a lane at __syncthreads while its warp shuffles: the launch fails");
    check(launch(fn("t_bad_shfl_exited"), 1, 1, 64, 1, 0, po) == CUDA_ERROR_LAUNCH_FAILED,
          "a full-mask shuffle after half the warp exited: the launch fails");
    check(launch(fn("t_bad_mixed"), 1, 1, 32, 1, 0, po) == CUDA_ERROR_LAUNCH_FAILED,
          "half a warp at a ballot, half at a shuffle: the launch fails");
    check(launch(fn("t_bad_exit"), 2, 1, 64, 1, 0, pz) == CUDA_SUCCESS,
          "the same kernel with every thread at the barrier runs after those failures");
    api.MemFree(o);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: test-xemu DRIVER.so NVRTC.so prelude.cuh selftest.cu\n");
        return 2;
    }
    void *drv = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL), *rtc = dlopen(argv[2], RTLD_NOW);
    if (!drv || !rtc) {
        fprintf(stderr, "test-xemu: %s\n", dlerror());
        return 1;
    }
    LOAD(drv, Init, "cuInit");
    LOAD(drv, DeviceGet, "cuDeviceGet");
    LOAD(drv, DeviceGetAttribute, "cuDeviceGetAttribute");
    LOAD(drv, MemAlloc, "cuMemAlloc_v2");
    LOAD(drv, MemFree, "cuMemFree_v2");
    LOAD(drv, MemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2");
    LOAD(drv, MemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2");
    LOAD(drv, MemsetD8Async, "cuMemsetD8Async");
    LOAD(drv, ModuleLoadData, "cuModuleLoadData");
    LOAD(drv, ModuleUnload, "cuModuleUnload");
    LOAD(drv, ModuleGetFunction, "cuModuleGetFunction");
    LOAD(drv, FuncSetAttribute, "cuFuncSetAttribute");
    LOAD(drv, LaunchKernel, "cuLaunchKernel");
    LOAD(rtc, CreateProgram, "nvrtcCreateProgram");
    LOAD(rtc, CompileProgram, "nvrtcCompileProgram");
    LOAD(rtc, GetProgramLogSize, "nvrtcGetProgramLogSize");
    LOAD(rtc, GetProgramLog, "nvrtcGetProgramLog");
    LOAD(rtc, GetCUBINSize, "nvrtcGetCUBINSize");
    LOAD(rtc, GetCUBIN, "nvrtcGetCUBIN");
    LOAD(rtc, DestroyProgram, "nvrtcDestroyProgram");

    char *prelude = slurp(argv[3]), *kernels = slurp(argv[4]);
    if (!prelude || !kernels) {
        fprintf(stderr, "test-xemu: cannot read %s or %s\n", argv[3], argv[4]);
        return 1;
    }
    size_t n = strlen(prelude) + strlen(kernels) + 2;
    char *src = malloc(n);
    snprintf(src, n, "%s\n%s", prelude, kernels);

    CUdevice dev;
    int optin = 0;
    check(api.Init(0) == CUDA_SUCCESS && api.DeviceGet(&dev, 0) == CUDA_SUCCESS &&
              api.DeviceGetAttribute(&optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                                     dev) == CUDA_SUCCESS && optin >= 100 * 1024,
          "the fake driver opens its device");

    /* A compile error is NVRTC_ERROR_COMPILATION with the compiler's log. */
    nvrtcResult rc;
    char *log = NULL;
    char *bin = compile("extern \"C\" __global__ void broken() { undeclared_name = 1; }", 0,
                        NULL, &rc, &log);
    check(!bin && rc == NVRTC_ERROR_COMPILATION && log && strstr(log, "undeclared_name"),
          "a compile error: NVRTC_ERROR_COMPILATION, the compiler's message in the log");
    free(log);

    const char *opts[] = {"--gpu-architecture=sm_80", "-DXATTN_ARCH=80", "-std=c++17",
                          "-default-device", "-Xptxas=-v", "-DXEMU_TEST_VALUE=42"};
    bin = compile(src, 6, opts, &rc, &log);
    if (!bin) {
        fprintf(stderr, "test-xemu: selftest.cu does not compile (%d):\n%s\n", (int)rc,
                log ? log : "");
        return 1;
    }
    free(log);
    check(api.ModuleLoadData(&mod, bin) == CUDA_SUCCESS, "cuModuleLoadData on the fake cubin");

    int def = 0;
    CUdeviceptr d = dcopy(&def, 4);
    void *pd[] = {&d};
    CUresult r = launch(fn("t_define"), 1, 1, 1, 1, 0, pd);
    hcopy(&def, d, 4);
    check(r == CUDA_SUCCESS && def == 4280, "-D options reach the kernel, the others are ignored");
    api.MemFree(d);

    test_mma(0);
    test_mma(1);
    test_ldmatrix();
    test_cp_async();
    test_shuffle();
    test_sync();
    test_atomic();
    test_smem();
    test_limits();
    test_broken();

    api.ModuleUnload(mod);
    free(bin);
    free(src);
    free(prelude);
    free(kernels);
    printf("%d failure(s)\n", failures);
    return failures ? 1 : 0;
}
