/* The HIP emulator's self-test: the fake hiprtc compiles selftest.hip for
 * gfx90a, gfx908 and gfx1030, the fake runtime runs its kernels on a device
 * of that architecture, and this checks them against plain C: the wave
 * size and arch macros, thread and block indices, __shfl / __shfl_xor /
 * __shfl_down / __shfl_up against HIP 5.2's index arithmetic for every
 * width, 64-bit ballots, __any/__all, ds_bpermute, readfirstlane, LDS
 * (dynamic and static), the wave barrier's ordering, atomics, each MFMA
 * against a plain matrix product assembled lane by lane from the layout
 * written in xemu_hip.h (an independent transcription here), that broken
 * kernels (a barrier half the block skips, divergent collectives, an MFMA
 * with exited lanes) fail their launch instead of hanging, the launch
 * limits (1024 threads, __launch_bounds__, 64 KiB of LDS), and that a code object built for
 * another architecture, or a target hiprtc 5.2 does not know, is refused.
 *
 * Usage: test-hip-emu libfakehip.so selftest.hip
 * Prints one line per check and a summary; exit 0 when all pass. */
#ifndef __HIP_PLATFORM_AMD__
#define __HIP_PLATFORM_AMD__ 1
#endif
#include <hip/hip_runtime_api.h>
#include <hip/hiprtc.h>
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct {
    hipError_t (*Malloc)(void **, size_t);
    hipError_t (*Free)(void *);
    hipError_t (*MemcpyHtoDAsync)(hipDeviceptr_t, void *, size_t, hipStream_t);
    hipError_t (*MemcpyDtoHAsync)(void *, hipDeviceptr_t, size_t, hipStream_t);
    hipError_t (*MemsetAsync)(void *, int, size_t, hipStream_t);
    hipError_t (*DeviceGetAttribute)(int *, hipDeviceAttribute_t, int);
    hipError_t (*ModuleLoadData)(hipModule_t *, const void *);
    hipError_t (*ModuleUnload)(hipModule_t);
    hipError_t (*ModuleGetFunction)(hipFunction_t *, hipModule_t, const char *);
    hipError_t (*FuncGetAttribute)(int *, hipFunction_attribute, hipFunction_t);
    hipError_t (*ModuleLaunchKernel)(hipFunction_t, unsigned, unsigned, unsigned, unsigned,
                                     unsigned, unsigned, unsigned, hipStream_t, void **, void **);
    hiprtcResult (*CreateProgram)(hiprtcProgram *, const char *, const char *, int, const char **,
                                  const char **);
    hiprtcResult (*CompileProgram)(hiprtcProgram, int, const char **);
    hiprtcResult (*GetProgramLogSize)(hiprtcProgram, size_t *);
    hiprtcResult (*GetProgramLog)(hiprtcProgram, char *);
    hiprtcResult (*GetCodeSize)(hiprtcProgram, size_t *);
    hiprtcResult (*GetCode)(hiprtcProgram, char *);
    hiprtcResult (*DestroyProgram)(hiprtcProgram *);
} api;

static int checks, failures;
static const char *arch = "";

static void check(int ok, const char *what)
{
    checks++;
    printf("%s: %s: %s\n", ok ? "ok  " : "FAIL", arch, what);
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
        fprintf(stderr, "test-hip-emu: %s missing\n", name);
        exit(1);
    }
    return p;
}
#define LOAD(lib, field, name) *(void **)&api.field = sym(lib, name)

/* Compile src for --offload-arch=target; the code object or NULL. */
static char *compile(const char *src, const char *target, hiprtcResult *rc)
{
    hiprtcProgram p;
    char opt[64];
    snprintf(opt, sizeof opt, "--offload-arch=%s", target);
    const char *opts[] = {opt, "-O3", "-std=c++17", "-DXATTN_HIP=1"};
    if ((*rc = api.CreateProgram(&p, src, "selftest.hip", 0, NULL, NULL)) != HIPRTC_SUCCESS)
        return NULL;
    *rc = api.CompileProgram(p, 4, opts);
    char *code = NULL;
    size_t n = 0;
    if (*rc == HIPRTC_SUCCESS && api.GetCodeSize(p, &n) == HIPRTC_SUCCESS && (code = malloc(n)))
        api.GetCode(p, code);
    if (*rc != HIPRTC_SUCCESS) {
        size_t ls = 0;
        api.GetProgramLogSize(p, &ls);
        char *log = calloc(ls + 1, 1);
        if (log) api.GetProgramLog(p, log);
        fprintf(stderr, "test-hip-emu: compile for %s failed:\n%s\n", target, log ? log : "");
        free(log);
    }
    api.DestroyProgram(&p);
    return code;
}

static hipModule_t mod;

static hipFunction_t fn(const char *name)
{
    hipFunction_t f = NULL;
    if (api.ModuleGetFunction(&f, mod, name) != hipSuccess) {
        fprintf(stderr, "test-hip-emu: no kernel %s\n", name);
        exit(1);
    }
    return f;
}

static void *dalloc(size_t bytes)
{
    void *p = NULL;
    if (api.Malloc(&p, bytes) != hipSuccess) exit(1);
    return p;
}
static void up(void *d, const void *h, size_t n) { api.MemcpyHtoDAsync(d, (void *)h, n, NULL); }
static void down(void *h, void *d, size_t n) { api.MemcpyDtoHAsync(h, d, n, NULL); }

static hipError_t launch(const char *name, unsigned gx, unsigned bx, unsigned by, unsigned lds,
                         void **args)
{
    return api.ModuleLaunchKernel(fn(name), gx, 1, 1, bx, by, 1, lds, NULL, args, NULL);
}

/* ---- plain C references ---------------------------------------------------- */

static uint32_t rng = 12345;
static float frand(void)
{
    rng = rng * 1664525u + 1013904223u;
    return (float)((int)(rng >> 9) % 2001 - 1000) / 500.0f;
}
static uint16_t to_f16(float f)
{
    _Float16 h = (_Float16)f;
    uint16_t u;
    memcpy(&u, &h, 2);
    return u;
}
static float from_f16(uint16_t u)
{
    _Float16 h;
    memcpy(&h, &u, 2);
    return (float)h;
}
static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16); /* exact for these values' few bits */
}
static float from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* One MFMA against A B + C assembled from the lanes' registers with the
 * documented layout (see xemu_hip.h). */
static void check_mfma(const char *kernel, int m, int bf16)
{
    const int k_dim = m == 32 ? 8 : 16, regs = m * m / 64;
    uint16_t a[64 * 4], b[64 * 4];
    float c[64 * 16], d[64 * 16];
    for (int i = 0; i < 64 * 4; i++) {
        float x = frand(), y = frand();
        a[i] = bf16 ? to_bf16(x) : to_f16(x);
        b[i] = bf16 ? to_bf16(y) : to_f16(y);
    }
    for (int i = 0; i < 64 * regs; i++) c[i] = frand();
    float A[32][16], B[16][32], C[32][32];
    for (int lane = 0; lane < 64; lane++)
        for (int item = 0; item < 4; item++) {
            /* A[i][k]: lane i + m * (k / 4), item k % 4; B[k][j] likewise. */
            const int i = lane % m, k = 4 * (lane / m) + item;
            const uint16_t va = a[lane * 4 + item], vb = b[lane * 4 + item];
            A[i][k] = bf16 ? from_bf16(va) : from_f16(va);
            B[k][i] = bf16 ? from_bf16(vb) : from_f16(vb);
        }
    for (int lane = 0; lane < 64; lane++)
        for (int r = 0; r < regs; r++) {
            int i, j;
            if (m == 32) { /* D[i][j]: lane j + 32 * (i / 4 % 2), register 4 * (i / 8) + i % 4 */
                i = 8 * (r / 4) + 4 * (lane / 32) + r % 4;
                j = lane % 32;
            } else { /* D[i][j]: lane j + 16 * (i / 4), register i % 4 */
                i = 4 * (lane / 16) + r;
                j = lane % 16;
            }
            C[i][j] = c[lane * regs + r];
        }
    void *da = dalloc(sizeof a), *db = dalloc(sizeof b), *dc = dalloc(sizeof c),
         *dd = dalloc(sizeof d);
    up(da, a, sizeof a);
    up(db, b, sizeof b);
    up(dc, c, sizeof c);
    void *args[] = {&da, &db, &dc, &dd};
    hipError_t e = launch(kernel, 1, 64, 1, 0, args);
    down(d, dd, sizeof d);
    double worst = 0;
    for (int lane = 0; lane < 64; lane++)
        for (int r = 0; r < regs; r++) {
            int i, j;
            if (m == 32) {
                i = 8 * (r / 4) + 4 * (lane / 32) + r % 4;
                j = lane % 32;
            } else {
                i = 4 * (lane / 16) + r;
                j = lane % 16;
            }
            double s = C[i][j];
            for (int k = 0; k < k_dim; k++) s += (double)A[i][k] * B[k][j];
            const double err = fabs(s - d[lane * regs + r]);
            if (err > worst || err != err) worst = err != err ? INFINITY : err;
        }
    char what[160];
    snprintf(what, sizeof what, "%s: D = A B + C by the documented lane layout (worst error %.2g)",
             kernel, worst);
    check(e == hipSuccess && worst < 1e-4, what);
    api.Free(da);
    api.Free(db);
    api.Free(dc);
    api.Free(dd);
}

/* HIP 5.2's shuffles (amd_warp_functions.h) on a wave of w lanes. */
static int hip_shfl_src(int self, int src, int width, int w)
{
    return (src + (self & ~(width - 1))) & (w - 1);
}
static int hip_xor_src(int self, int m, int width)
{
    const int i = self ^ m;
    return i >= ((self + width) & ~(width - 1)) ? self : i;
}
static int hip_down_src(int self, int d, int width)
{
    return (self & (width - 1)) + d >= width ? self : self + d;
}
static int hip_up_src(int self, int d, int width)
{
    return self - d < (self & ~(width - 1)) ? self : self - d;
}

static void check_waves(int w)
{
    enum { N = 128 };
    int *d = dalloc(sizeof(int) * 11 * N);
    for (int width = w; width >= 8; width /= 2) {
        int out[11 * N];
        void *args[] = {&d, &width};
        hipError_t e = launch("k_wave", 1, N, 1, 0, args);
        down(out, d, sizeof out);
        int shfl = 1, bal = 1, anyall = 1, perm = 1, first = 1;
        for (int t = 0; t < N; t++) {
            const int *o = out + 11 * t, base = t - t % w, l = t % w;
            shfl &= o[0] == 100 + base + hip_shfl_src(l, (t * 5 + 3) % 64, width, w);
            shfl &= o[1] == 100 + base + hip_xor_src(l, 5, width);
            shfl &= o[2] == 100 + base + hip_xor_src(l, width / 2, width);
            shfl &= o[3] == 100 + base + hip_down_src(l, 3, width);
            shfl &= o[4] == 100 + base + hip_up_src(l, 2, width);
            unsigned long long want = 0;
            for (int k = 0; k < w; k++)
                if ((base + k) % 3 == 0 || base + k == 63) want |= 1ull << k;
            bal &= (unsigned)o[5] == (unsigned)want && (unsigned)o[6] == (unsigned)(want >> 32);
            anyall &= o[7] == (base <= 5 && 5 < base + w) && o[8] == (base + w <= 120);
            perm &= o[9] == 100 + base + (l + 1) % w;
            first &= o[10] == 100 + base;
        }
        char what[128];
        snprintf(what, sizeof what, "wave%d width %d: __shfl, __shfl_xor, __shfl_down, __shfl_up", w,
                 width);
        check(e == hipSuccess && shfl, what);
        snprintf(what, sizeof what, "wave%d width %d: 64-bit __ballot, __any, __all, ds_bpermute, "
                 "readfirstlane", w, width);
        check(e == hipSuccess && bal && anyall && perm && first, what);
    }
    api.Free(d);
}

static void run_arch(const char *target, const char *src)
{
    arch = target;
    setenv("XEMU_HIP_ARCH", target, 1);
    hiprtcResult rc;
    char *code = compile(src, target, &rc);
    check(code != NULL, "selftest.hip compiles");
    if (!code) return;
    check(api.ModuleLoadData(&mod, code) == hipSuccess, "the code object loads");
    free(code);
    const int w = !strcmp(target, "gfx1030") ? 32 : 64;
    int attr = 0;
    api.DeviceGetAttribute(&attr, hipDeviceAttributeWarpSize, 0);
    check(attr == w, "hipDeviceAttributeWarpSize");

    /* Indices and the target's macros, on a 2-D block over a 3-block grid. */
    {
        enum { BX = 24, BY = 3, G = 3 };
        int out[8 + G * BX * BY];
        int *d = dalloc(sizeof out);
        void *args[] = {&d};
        hipError_t e = api.ModuleLaunchKernel(fn("k_info"), G, 1, 1, BX, BY, 1, 0, NULL, args, NULL);
        down(out, d, sizeof out);
        const int code_want = w == 32 ? 0x1030 : !strcmp(target, "gfx908") ? 0x908 : 0x90a;
        check(e == hipSuccess && out[0] == w && out[1] == w && out[2] == code_want,
              "warpSize, __AMDGCN_WAVEFRONT_SIZE and the __gfx*__ macro");
        int ids = 1;
        for (int b = 0; b < G; b++)
            for (int y = 0; y < BY; y++)
                for (int x = 0; x < BX; x++)
                    ids &= out[8 + b * BX * BY + y * BX + x] == (x | y << 8 | b << 20);
        check(e == hipSuccess && ids, "threadIdx, blockIdx, blockDim, gridDim");
        api.Free(d);
    }

    check_waves(w);

    /* LDS. */
    {
        enum { N = 256, G = 2 };
        float out[G * 3 * N];
        float *d = dalloc(sizeof out);
        void *args[] = {&d};
        hipError_t e = launch("k_lds", G, N, 1, N * 4, args);
        down(out, d, sizeof out);
        int lds = 1, order = 1, pop = 1;
        for (int b = 0; b < G; b++)
            for (int t = 0; t < N; t++) {
                const float *o = out + b * 3 * N;
                lds &= o[t] == (float)((N - 1 - t) * 2 + b) + (float)((t + 1) % N);
                order &= o[N + t] == (float)(3 * (t - t % w + (t % w + 1) % w));
                pop &= o[2 * N + t] == (float)w;
            }
        check(e == hipSuccess && lds, "dynamic (extern __shared__) and static LDS, __syncthreads");
        check(e == hipSuccess && order, "__builtin_amdgcn_wave_barrier orders a wave's LDS writes");
        check(e == hipSuccess && pop, "__ballot(1) of a full wave has warpSize bits");
        int o2[64], *d2 = dalloc(sizeof o2);
        void *a2[] = {&d2};
        e = launch("k_dyn2", 1, 64, 1, 64 * 4, a2);
        down(o2, d2, sizeof o2);
        int ok = e == hipSuccess;
        for (int t = 0; t < 64; t++) ok &= o2[t] == (63 - t) * 7;
        check(ok, "HIP_DYNAMIC_SHARED");
        int init[5] = {0, -1, 1000, 0, 0}, res[5];
        up(d2, init, sizeof init);
        e = launch("k_atomics", 1, 100, 1, 0, a2);
        down(res, d2, sizeof res);
        check(e == hipSuccess && res[0] == 100 && res[1] == 99 && res[2] == 0 &&
                  res[3] == 0x7fffffff && res[4] == 1,
              "atomicAdd, atomicMax, atomicMin, atomicOr, atomicCAS");
        api.Free(d);
        api.Free(d2);
    }

    /* MFMA on CDNA; bf16_1k on gfx90a only (hiprtc 5.2 aborts on it for
     * gfx908, so the kernels guard it and the module has none there). */
    if (w == 64) {
        check_mfma("k_mfma32_f16", 32, 0);
        check_mfma("k_mfma16_f16", 16, 0);
        hipFunction_t f;
        if (!strcmp(target, "gfx90a")) {
            check_mfma("k_mfma32_bf16", 32, 1);
            check_mfma("k_mfma16_bf16", 16, 1);
        } else {
            check(api.ModuleGetFunction(&f, mod, "k_mfma16_bf16") == hipErrorNotFound,
                  "no bf16_1k MFMA kernel on gfx908 (arch-guarded)");
        }
        float *d = dalloc(64 * sizeof(float));
        void *args[] = {&d};
        fprintf(stderr, "test-hip-emu: an MFMA failure is expected next\n");
        check(launch("k_mfma_exited", 1, 64, 1, 0, args) == hipErrorLaunchFailure,
              "an MFMA some lanes have exited fails its launch");
        api.Free(d);
    } else {
        hipFunction_t f;
        check(api.ModuleGetFunction(&f, mod, "k_mfma16_f16") == hipErrorNotFound,
              "no MFMA kernel on gfx1030 (arch-guarded)");
    }

    /* Broken kernels fail; exited lanes are inactive; limits. */
    {
        int out[1024], *d = dalloc(sizeof out);
        void *args[] = {&d};
        fprintf(stderr, "test-hip-emu: two launch failures are expected next\n");
        check(launch("k_bad_barrier", 1, 128, 1, 0, args) == hipErrorLaunchFailure,
              "a __syncthreads half the block skips fails the launch");
        check(launch("k_bad_diverge", 1, 128, 1, 0, args) == hipErrorLaunchFailure,
              "divergent collectives (shuffle against ballot) fail the launch");
        hipError_t e = launch("k_exited", 1, 128, 1, 0, args);
        down(out, d, 128 * sizeof(int));
        int ok = e == hipSuccess;
        for (int t = 0; t < 128; t += 2) ok &= out[t] == w / 2;
        check(ok, "lanes that exited are left out of a ballot");
        check(launch("k_exited", 1, 1025, 1, 0, args) == hipErrorInvalidValue &&
                  launch("k_exited", 1, 32, 33, 0, args) == hipErrorInvalidValue,
              "a block over 1024 threads is refused");
        int bound = 0, unbound = 0;
        api.FuncGetAttribute(&bound, HIP_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, fn("k_wave"));
        api.FuncGetAttribute(&unbound, HIP_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, fn("k_exited"));
        int width = w;
        void *wargs[] = {&d, &width};
        check(bound == 128 && unbound == 1024 &&
                  launch("k_wave", 1, 256, 1, 0, wargs) == hipErrorInvalidValue,
              "__launch_bounds__(128): reported, and a block of 256 is refused");
        check(launch("k_lds", 1, 64, 1, 65536, args) == hipSuccess &&
                  launch("k_lds", 1, 64, 1, 65537, args) == hipErrorInvalidValue,
              "64 KiB of dynamic LDS launches, a byte more is refused");
        api.Free(d);
    }
    api.ModuleUnload(mod);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: test-hip-emu libfakehip.so selftest.hip\n");
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    char *src = slurp(argv[2]);
    if (!lib || !src) {
        fprintf(stderr, "test-hip-emu: cannot load %s or read %s\n", argv[1], argv[2]);
        return 1;
    }
    LOAD(lib, Malloc, "hipMalloc");
    LOAD(lib, Free, "hipFree");
    LOAD(lib, MemcpyHtoDAsync, "hipMemcpyHtoDAsync");
    LOAD(lib, MemcpyDtoHAsync, "hipMemcpyDtoHAsync");
    LOAD(lib, MemsetAsync, "hipMemsetAsync");
    LOAD(lib, DeviceGetAttribute, "hipDeviceGetAttribute");
    LOAD(lib, ModuleLoadData, "hipModuleLoadData");
    LOAD(lib, ModuleUnload, "hipModuleUnload");
    LOAD(lib, ModuleGetFunction, "hipModuleGetFunction");
    LOAD(lib, FuncGetAttribute, "hipFuncGetAttribute");
    LOAD(lib, ModuleLaunchKernel, "hipModuleLaunchKernel");
    LOAD(lib, CreateProgram, "hiprtcCreateProgram");
    LOAD(lib, CompileProgram, "hiprtcCompileProgram");
    LOAD(lib, GetProgramLogSize, "hiprtcGetProgramLogSize");
    LOAD(lib, GetProgramLog, "hiprtcGetProgramLog");
    LOAD(lib, GetCodeSize, "hiprtcGetCodeSize");
    LOAD(lib, GetCode, "hiprtcGetCode");
    LOAD(lib, DestroyProgram, "hiprtcDestroyProgram");

    run_arch("gfx90a", src);
    run_arch("gfx908", src);
    run_arch("gfx1030", src);

    /* Code objects and targets the runtime / hiprtc would refuse. */
    arch = "any";
    hiprtcResult rc;
    setenv("XEMU_HIP_ARCH", "gfx90a", 1);
    char *code = compile(src, "gfx1030", &rc);
    hipModule_t m = NULL;
    check(code && api.ModuleLoadData(&m, code) == hipErrorNoBinaryForGpu,
          "a gfx1030 code object on a gfx90a device is refused");
    free(code);
    code = compile("extern \"C\" __global__ void k() {}", "gfx942", &rc);
    check(!code && rc == HIPRTC_ERROR_INVALID_OPTION, "a target hiprtc 5.2 cannot build is refused");
    free(code);
    code = compile("extern \"C\" __global__ void k() { undeclared(); }", "gfx90a", &rc);
    check(!code && rc == HIPRTC_ERROR_COMPILATION, "a kernel that does not compile is reported");
    free(code);

    printf("%d checks, %d failed\n", checks, failures);
    free(src);
    return failures ? 1 : 0;
}
