/* A fake libamdhip64 for tests without an AMD GPU: the HIP runtime and
 * hiprtc entry points the HIP module resolves (the hip_api table of
 * backends/hip/hip.h), over host memory. hiprtc "compiles" a kernel source
 * with the host C++ compiler and tests/hip_emu/xemu_hip.h force-included,
 * for the architecture of --offload-arch (gfx908, gfx90a: wave64 with
 * MFMA; gfx1030: wave32); the "code object" is that shared object behind
 * a header naming the architecture, and hipModuleLoadData dlopens it
 * (refusing one built for another architecture, as the runtime does).
 * Launches run synchronously on the calling thread, one at a time.
 *
 * The device: one, an MI250X-like gfx90a GCD by default; XEMU_HIP_ARCH=
 * gfx908 (MI100-like) or gfx1030 (RX 6800-like) picks another. The runtime
 * reports HIP 5.2 (the hipDeviceProp_t layout of ROCm 5), hiprtc 99.x (x
 * a hash of the emulator's headers and the compiler, so modules cached by
 * one build of the emulator are not reused by another, nor by real
 * hiprtc). Launch limits as the runtime checks them: at most 1024 threads
 * a block and no more than the kernel's __launch_bounds__ (which
 * hipFuncGetAttribute reports), 64 KiB of LDS; extra launch parameters
 * are not supported. New allocations are filled with 0xff bytes, so output a
 * kernel failed to write shows as NaN. The compiler and the headers'
 * directory are configured at build time (XEMU_CXX, XEMU_HIP_INCLUDE);
 * the environment may override both. */
#ifndef __HIP_PLATFORM_AMD__
#define __HIP_PLATFORM_AMD__ 1
#endif
#include <hip/hip_runtime_api.h>
#include <hip/hiprtc.h>
#include <ctype.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

enum { LDS_BYTES = 64 << 10, MAX_THREADS = 1024 };

/* ---- the emulated device -------------------------------------------------- */

typedef struct arch_info {
    const char *name, *full, *product;
    int wave, cus, clock_khz, mem_khz, bus_bits, l2_bytes;
} arch_info;

static const arch_info archs[] = {
    {"gfx90a", "gfx90a:sramecc+:xnack-", "xemu CPU emulation of an AMD Instinct MI250X (gfx90a)",
     64, 110, 1700000, 1600000, 4096, 8 << 20},
    {"gfx908", "gfx908:sramecc+:xnack-", "xemu CPU emulation of an AMD Instinct MI100 (gfx908)",
     64, 120, 1502000, 1200000, 4096, 8 << 20},
    {"gfx1030", "gfx1030", "xemu CPU emulation of an AMD Radeon RX 6800 (gfx1030)",
     32, 60, 2105000, 2000000, 256, 4 << 20},
};

static const arch_info *arch_named(const char *name)
{
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (!strcmp(archs[i].name, name)) return &archs[i];
    return NULL;
}

static const arch_info *device_arch(void)
{
    const char *e = getenv("XEMU_HIP_ARCH");
    const arch_info *a = e ? arch_named(e) : NULL;
    return a ? a : &archs[0];
}

static pthread_mutex_t launch_lock = PTHREAD_MUTEX_INITIALIZER;
static int stream_token;

EXPORT hipError_t hipInit(unsigned int flags)
{
    return flags ? hipErrorInvalidValue : hipSuccess;
}
EXPORT hipError_t hipRuntimeGetVersion(int *v)
{
    *v = 50221153; /* HIP 5.2.21153: ROCm 5's hipDeviceProp_t */
    return hipSuccess;
}
EXPORT hipError_t hipGetDeviceCount(int *n)
{
    *n = 1;
    return hipSuccess;
}
EXPORT hipError_t hipSetDevice(int d) { return d == 0 ? hipSuccess : hipErrorInvalidDevice; }
EXPORT hipError_t hipGetDevice(int *d)
{
    *d = 0;
    return hipSuccess;
}

EXPORT hipError_t hipDeviceGetName(char *name, int len, hipDevice_t d)
{
    if (d != 0) return hipErrorInvalidDevice;
    if (!name || len <= 0) return hipErrorInvalidValue;
    snprintf(name, (size_t)len, "%s", device_arch()->product);
    return hipSuccess;
}

EXPORT hipError_t hipDeviceGetAttribute(int *v, hipDeviceAttribute_t a, int d)
{
    if (d != 0) return hipErrorInvalidDevice;
    const arch_info *x = device_arch();
    switch (a) {
    case hipDeviceAttributeMultiprocessorCount: *v = x->cus; break;
    case hipDeviceAttributeMaxSharedMemoryPerBlock: *v = LDS_BYTES; break;
    case hipDeviceAttributeMaxThreadsPerBlock: *v = MAX_THREADS; break;
    case hipDeviceAttributeWarpSize: *v = x->wave; break;
    case hipDeviceAttributeClockRate: *v = x->clock_khz; break;
    case hipDeviceAttributeMemoryClockRate: *v = x->mem_khz; break;
    case hipDeviceAttributeMemoryBusWidth: *v = x->bus_bits; break;
    case hipDeviceAttributeL2CacheSize: *v = x->l2_bytes; break;
    case hipDeviceAttributeMaxRegistersPerBlock: *v = 65536; break;
    case hipDeviceAttributeMaxThreadsPerMultiProcessor: *v = 2048; break;
    case hipDeviceAttributeMaxBlockDimX:
    case hipDeviceAttributeMaxBlockDimY:
    case hipDeviceAttributeMaxBlockDimZ: *v = MAX_THREADS; break;
    case hipDeviceAttributeMaxGridDimX:
    case hipDeviceAttributeMaxGridDimY:
    case hipDeviceAttributeMaxGridDimZ: *v = 2147483647; break;
    case hipDeviceAttributeComputeCapabilityMajor: *v = 9; break;
    case hipDeviceAttributeComputeCapabilityMinor: *v = 0; break;
    default: *v = 0; break;
    }
    return hipSuccess;
}

/* ROCm 5's hipDeviceProp_t (this header's), the layout the module reads
 * for a 5.x runtime. */
EXPORT hipError_t hipGetDeviceProperties(hipDeviceProp_t *p, int d)
{
    if (d != 0) return hipErrorInvalidDevice;
    if (!p) return hipErrorInvalidValue;
    const arch_info *x = device_arch();
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", x->product);
    snprintf(p->gcnArchName, sizeof p->gcnArchName, "%s", x->full);
    p->totalGlobalMem = (size_t)8 << 30;
    p->sharedMemPerBlock = LDS_BYTES;
    p->warpSize = x->wave;
    p->maxThreadsPerBlock = MAX_THREADS;
    p->maxThreadsDim[0] = p->maxThreadsDim[1] = p->maxThreadsDim[2] = MAX_THREADS;
    p->maxGridSize[0] = p->maxGridSize[1] = p->maxGridSize[2] = 2147483647;
    p->clockRate = x->clock_khz;
    p->memoryClockRate = x->mem_khz;
    p->memoryBusWidth = x->bus_bits;
    p->multiProcessorCount = x->cus;
    p->l2CacheSize = x->l2_bytes;
    p->maxSharedMemoryPerMultiProcessor = LDS_BYTES;
    p->major = 9;
    p->minor = 0;
    return hipSuccess;
}
_Static_assert(offsetof(hipDeviceProp_t, gcnArchName) == 396,
               "ROCm 5's hipDeviceProp_t has gcnArchName at byte 396 (backends/hip/hip.h)");

EXPORT hipError_t hipDeviceTotalMem(size_t *bytes, hipDevice_t d)
{
    if (d != 0) return hipErrorInvalidDevice;
    *bytes = (size_t)8 << 30;
    return hipSuccess;
}

EXPORT hipError_t hipStreamCreateWithFlags(hipStream_t *s, unsigned int flags)
{
    (void)flags;
    *s = (hipStream_t)&stream_token;
    return hipSuccess;
}
EXPORT hipError_t hipStreamDestroy(hipStream_t s)
{
    (void)s;
    return hipSuccess;
}
EXPORT hipError_t hipStreamSynchronize(hipStream_t s)
{
    (void)s;
    return hipSuccess;
}

EXPORT hipError_t hipMalloc(void **p, size_t bytes)
{
    if (!p) return hipErrorInvalidValue;
    void *m = malloc(bytes ? bytes : 1);
    if (!m) return hipErrorOutOfMemory;
    memset(m, 0xff, bytes);
    *p = m;
    return hipSuccess;
}
EXPORT hipError_t hipFree(void *p)
{
    free(p);
    return hipSuccess;
}
EXPORT hipError_t hipMemcpyHtoDAsync(hipDeviceptr_t dst, void *src, size_t n, hipStream_t s)
{
    (void)s;
    if (n) memcpy(dst, src, n);
    return hipSuccess;
}
EXPORT hipError_t hipMemcpyDtoHAsync(void *dst, hipDeviceptr_t src, size_t n, hipStream_t s)
{
    (void)s;
    if (n) memcpy(dst, src, n);
    return hipSuccess;
}
EXPORT hipError_t hipMemsetAsync(void *dst, int v, size_t n, hipStream_t s)
{
    (void)s;
    if (n) memset(dst, v, n);
    return hipSuccess;
}

/* ---- modules ---------------------------------------------------------------
 * A code object: "XEMUHIP\0", the byte count of the shared object (u64),
 * the architecture (16 bytes), then the shared object. */

enum { CODE_HEADER = 32 };

typedef int (*launch_fn)(const unsigned *dims, unsigned smem, void **params);

typedef struct fake_function {
    launch_fn launch;
    int max_threads; /* __launch_bounds__, else 1024 */
    struct fake_function *next;
} fake_function;

typedef struct fake_module {
    void *handle;
    fake_function *functions;
} fake_module;

EXPORT hipError_t hipModuleLoadData(hipModule_t *m, const void *image)
{
    const unsigned char *bytes = image;
    if (!m || !bytes || memcmp(bytes, "XEMUHIP", 8) != 0) return hipErrorInvalidImage;
    char arch[17];
    memcpy(arch, bytes + 16, 16);
    arch[16] = '\0';
    if (strcmp(arch, device_arch()->name) != 0) {
        fprintf(stderr, "xemu: a code object for %s loaded on a %s device\n", arch,
                device_arch()->name);
        return hipErrorNoBinaryForGpu;
    }
    uint64_t n;
    memcpy(&n, bytes + 8, sizeof n);
    char path[] = "/tmp/xemu-hip-module-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return hipErrorOutOfMemory;
    int ok = write(fd, bytes + CODE_HEADER, (size_t)n) == (ssize_t)n;
    close(fd);
    void *h = ok ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
    if (!h && ok) fprintf(stderr, "xemu: dlopen: %s\n", dlerror());
    unlink(path);
    if (!h) return hipErrorInvalidImage;
    fake_module *fm = calloc(1, sizeof *fm);
    if (!fm) {
        dlclose(h);
        return hipErrorOutOfMemory;
    }
    fm->handle = h;
    *m = (hipModule_t)fm;
    return hipSuccess;
}

EXPORT hipError_t hipModuleUnload(hipModule_t m)
{
    fake_module *fm = (fake_module *)m;
    if (!fm) return hipErrorInvalidResourceHandle;
    for (fake_function *f = fm->functions, *next; f; f = next) {
        next = f->next;
        free(f);
    }
    dlclose(fm->handle);
    free(fm);
    return hipSuccess;
}

EXPORT hipError_t hipModuleGetFunction(hipFunction_t *out, hipModule_t m, const char *name)
{
    fake_module *fm = (fake_module *)m;
    if (!fm || !name || !out) return hipErrorInvalidValue;
    char sym[256];
    snprintf(sym, sizeof sym, "xemu_launch_%s", name);
    void *p = dlsym(fm->handle, sym);
    if (!p) return hipErrorNotFound;
    fake_function *f = calloc(1, sizeof *f);
    if (!f) return hipErrorOutOfMemory;
    memcpy(&f->launch, &p, sizeof p);
    snprintf(sym, sizeof sym, "xemu_bounds_%s", name);
    const int *bounds = dlsym(fm->handle, sym);
    f->max_threads = bounds && *bounds > 0 && *bounds < MAX_THREADS ? *bounds : MAX_THREADS;
    f->next = fm->functions;
    fm->functions = f;
    *out = (hipFunction_t)f;
    return hipSuccess;
}

/* The kernel's __launch_bounds__ (else 1024) as its maximum block; static
 * LDS, registers and scratch are not measured: 0, 32 and 0. */
EXPORT hipError_t hipFuncGetAttribute(int *v, hipFunction_attribute a, hipFunction_t fn)
{
    if (!fn || !v) return hipErrorInvalidValue;
    const fake_function *f = (const fake_function *)fn;
    switch (a) {
    case HIP_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *v = f->max_threads; break;
    case HIP_FUNC_ATTRIBUTE_NUM_REGS: *v = 32; break;
    case HIP_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: *v = LDS_BYTES; break;
    default: *v = 0; break;
    }
    return hipSuccess;
}

EXPORT hipError_t hipModuleLaunchKernel(hipFunction_t fn, unsigned int gx, unsigned int gy,
                                        unsigned int gz, unsigned int bx, unsigned int by,
                                        unsigned int bz, unsigned int lds, hipStream_t s,
                                        void **params, void **extra)
{
    (void)s;
    fake_function *f = (fake_function *)fn;
    if (!f) return hipErrorInvalidResourceHandle;
    if (extra) return hipErrorNotSupported;
    if (!gx || !gy || !gz || !bx || !by || !bz) return hipErrorInvalidValue;
    /* The runtime's limits: a block of at most 1024 threads, a grid of at
     * most 2^32 - 1 threads along each dimension, 64 KiB of LDS. */
    if (bx > MAX_THREADS || by > MAX_THREADS || bz > MAX_THREADS ||
        (unsigned long long)bx * by * bz > MAX_THREADS)
        return hipErrorInvalidValue;
    /* A block over the kernel's __launch_bounds__: the code was compiled
     * for fewer threads (registers, LDS), so the launch is refused. */
    if ((unsigned long long)bx * by * bz > (unsigned)f->max_threads) return hipErrorInvalidValue;
    if ((unsigned long long)gx * bx > 0xffffffffull || (unsigned long long)gy * by > 0xffffffffull ||
        (unsigned long long)gz * bz > 0xffffffffull)
        return hipErrorInvalidValue;
    if (lds > LDS_BYTES) return hipErrorInvalidValue;
    const unsigned dims[6] = {gx, gy, gz, bx, by, bz};
    pthread_mutex_lock(&launch_lock);
    int rc = f->launch(dims, lds, params);
    pthread_mutex_unlock(&launch_lock);
    return rc ? hipErrorLaunchFailure : hipSuccess;
}

EXPORT const char *hipGetErrorName(hipError_t e)
{
    switch (e) {
    case hipSuccess: return "hipSuccess";
    case hipErrorInvalidValue: return "hipErrorInvalidValue";
    case hipErrorOutOfMemory: return "hipErrorOutOfMemory";
    case hipErrorInvalidDevice: return "hipErrorInvalidDevice";
    case hipErrorInvalidImage: return "hipErrorInvalidImage";
    case hipErrorNoBinaryForGpu: return "hipErrorNoBinaryForGpu";
    case hipErrorNotFound: return "hipErrorNotFound";
    case hipErrorInvalidResourceHandle: return "hipErrorInvalidResourceHandle";
    case hipErrorLaunchFailure: return "hipErrorLaunchFailure";
    case hipErrorNotSupported: return "hipErrorNotSupported";
    default: return "hipError (xemu)";
    }
}
EXPORT const char *hipGetErrorString(hipError_t e)
{
    (void)e;
    return "reported by the xemu fake HIP runtime";
}

/* ---- hiprtc ------------------------------------------------------------------ */

typedef struct fake_program {
    char *src;
    char *log;
    unsigned char *code;
    size_t code_size;
} fake_program;

static const char *cxx_path(void) { return getenv("XEMU_CXX") ? getenv("XEMU_CXX") : XEMU_CXX; }
static const char *include_dir(void)
{
    return getenv("XEMU_HIP_INCLUDE") ? getenv("XEMU_HIP_INCLUDE") : XEMU_HIP_INCLUDE;
}

static char *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            char *nb = realloc(buf, cap = n + 65536 + 1 + cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    fclose(f);
    buf[n] = '\0';
    *size = n;
    return buf;
}

/* Major 99: never mistaken for a real hiprtc in the module's cache keys;
 * the minor hashes the emulator's headers and the compiler's path. */
EXPORT hiprtcResult hiprtcVersion(int *major, int *minor)
{
    static const char *const headers[] = {"xemu_hip.h", "../cuda_emu/xemu_core.h"};
    uint32_t h = 2166136261u;
    for (int f = 0; f < 2; f++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", include_dir(), headers[f]);
        size_t n = 0;
        char *text = read_file(path, &n);
        for (size_t i = 0; text && i < n; i++) h = (h ^ (unsigned char)text[i]) * 16777619u;
        free(text);
    }
    for (const char *c = cxx_path(); *c; c++) h = (h ^ (unsigned char)*c) * 16777619u;
    *major = 99;
    *minor = (int)(h % 1000000u);
    return HIPRTC_SUCCESS;
}

EXPORT const char *hiprtcGetErrorString(hiprtcResult r)
{
    switch (r) {
    case HIPRTC_SUCCESS: return "HIPRTC_SUCCESS";
    case HIPRTC_ERROR_OUT_OF_MEMORY: return "HIPRTC_ERROR_OUT_OF_MEMORY";
    case HIPRTC_ERROR_COMPILATION: return "HIPRTC_ERROR_COMPILATION";
    case HIPRTC_ERROR_INVALID_INPUT: return "HIPRTC_ERROR_INVALID_INPUT";
    case HIPRTC_ERROR_INVALID_OPTION: return "HIPRTC_ERROR_INVALID_OPTION";
    case HIPRTC_ERROR_INVALID_PROGRAM: return "HIPRTC_ERROR_INVALID_PROGRAM";
    default: return "HIPRTC_ERROR (xemu)";
    }
}

EXPORT hiprtcResult hiprtcCreateProgram(hiprtcProgram *prog, const char *src, const char *name,
                                        int nh, const char **h, const char **hn)
{
    (void)name;
    (void)h;
    (void)hn;
    if (!prog || !src) return HIPRTC_ERROR_INVALID_INPUT;
    if (nh) return HIPRTC_ERROR_INVALID_INPUT;
    fake_program *p = calloc(1, sizeof *p);
    if (!p || !(p->src = strdup(src))) {
        free(p);
        return HIPRTC_ERROR_OUT_OF_MEMORY;
    }
    *prog = (hiprtcProgram)p;
    return HIPRTC_SUCCESS;
}

EXPORT hiprtcResult hiprtcDestroyProgram(hiprtcProgram *prog)
{
    if (!prog) return HIPRTC_ERROR_INVALID_INPUT;
    fake_program *p = (fake_program *)*prog;
    if (p) {
        free(p->src);
        free(p->log);
        free(p->code);
        free(p);
    }
    *prog = NULL;
    return HIPRTC_SUCCESS;
}

/* ---- source rewriting: what g++ would not take as hiprtc does ------------- */

typedef struct text {
    char *s;
    size_t n, cap;
} text;

static int put(text *t, const char *s, size_t n)
{
    if (t->n + n + 1 > t->cap) {
        size_t cap = (t->n + n + 1) * 2;
        char *ns = realloc(t->s, cap);
        if (!ns) return -1;
        t->s = ns;
        t->cap = cap;
    }
    memcpy(t->s + t->n, s, n);
    t->n += n;
    t->s[t->n] = '\0';
    return 0;
}
static int puts_(text *t, const char *s) { return put(t, s, strlen(s)); }

static int is_ident(char c) { return isalnum((unsigned char)c) || c == '_'; }

/* `extern __shared__ <type> NAME[]` becomes
 * `<type> *NAME = reinterpret_cast<decltype(NAME)>(xemu::lds_area)`, and
 * `<type> NAME __attribute__((ext_vector_type(N)))` in a typedef or alias
 * becomes GCC's `vector_size(sizeof(<type>) * (N))`. */
static char *rewrite(const char *src)
{
    text out = {0};
    const char *p = src;
    static const char ext[] = "extern __shared__", vec[] = "__attribute__((ext_vector_type(";
    while (*p) {
        const char *e = strstr(p, ext), *v = strstr(p, vec);
        const char *next = e && (!v || e < v) ? e : v;
        if (!next) {
            if (puts_(&out, p)) goto fail;
            break;
        }
        if (next == e) {
            const char *br = strchr(e, '[');
            const char *semi = strpbrk(e, ";\n");
            if (!br || (semi && semi < br)) { /* not an array: leave it */
                if (put(&out, p, (size_t)(e - p) + sizeof ext - 1)) goto fail;
                p = e + sizeof ext - 1;
                continue;
            }
            const char *name_end = br;
            while (name_end > e && isspace((unsigned char)name_end[-1])) name_end--;
            const char *name = name_end;
            while (name > e && is_ident(name[-1])) name--;
            const char *close = strchr(br, ']');
            if (!close || name == name_end) goto fail;
            const char *type = e + sizeof ext - 1;
            if (put(&out, p, (size_t)(e - p)) || put(&out, type, (size_t)(name - type)) ||
                puts_(&out, "*") || put(&out, name, (size_t)(name_end - name)) ||
                puts_(&out, " = reinterpret_cast<decltype(") ||
                put(&out, name, (size_t)(name_end - name)) ||
                puts_(&out, ")>(xemu::lds_area)"))
                goto fail;
            p = close + 1;
        } else {
            /* The element type: after `typedef` or `=`, up to the name. */
            const char *stmt = v;
            while (stmt > src && stmt[-1] != ';' && stmt[-1] != '{' && stmt[-1] != '}') stmt--;
            const char *td = strstr(stmt, "typedef"), *eq = memchr(stmt, '=', (size_t)(v - stmt));
            const char *type = NULL, *type_end = v;
            if (eq && eq < v) {
                type = eq + 1;
            } else if (td && td < v) {
                type = td + 7;
                while (type_end > type && isspace((unsigned char)type_end[-1])) type_end--;
                while (type_end > type && is_ident(type_end[-1])) type_end--; /* the name */
            }
            const char *num = v + sizeof vec - 1, *num_end = strstr(num, ")))");
            if (!type || !num_end) goto fail;
            if (put(&out, p, (size_t)(v - p)) || puts_(&out, "__attribute__((vector_size(sizeof(") ||
                put(&out, type, (size_t)(type_end - type)) || puts_(&out, ") * (") ||
                put(&out, num, (size_t)(num_end - num)) || puts_(&out, "))))"))
                goto fail;
            p = num_end + 3;
        }
    }
    if (!out.s && puts_(&out, "")) goto fail;
    return out.s;
fail:
    free(out.s);
    return NULL;
}

/* The names of the `extern "C" __global__` functions of preprocessed text
 * in which __global__ was XEMU_GLOBAL_MARK and __launch_bounds__(n, ...)
 * XEMU_LB(n, ...): each becomes an XATTN_EXPORT(name) line appended to
 * out, and its bounds (when it has them) a constant xemu_bounds_<name>
 * that the fake runtime reads as the kernel's maximum threads per block. */
static int exports(const char *pre, text *out)
{
    static const char mark[] = "XEMU_GLOBAL_MARK";
    text seen = {0};
    if (puts_(&seen, " ")) return -1;
    for (const char *m = strstr(pre, mark); m; m = strstr(m + 1, mark)) {
        const char *q = m + sizeof mark - 1, *paren = NULL, *bounds = NULL, *bounds_end = NULL;
        for (;;) { /* skip __attribute__((...)) and XEMU_LB(...) to the parameters */
            paren = strchr(q, '(');
            if (!paren) break;
            const char *id_end = paren;
            while (id_end > q && isspace((unsigned char)id_end[-1])) id_end--;
            const char *id = id_end;
            while (id > q && is_ident(id[-1])) id--;
            const size_t id_len = (size_t)(id_end - id);
            const int attr = id_len == 13 && !strncmp(id, "__attribute__", 13);
            const int lb = id_len == 7 && !strncmp(id, "XEMU_LB", 7);
            if (!attr && !lb) break;
            int depth = 0;
            const char *c = paren, *comma = NULL;
            for (; *c; c++) {
                if (*c == '(') depth++;
                else if (*c == ',' && depth == 1 && !comma) comma = c;
                else if (*c == ')' && --depth == 0) break;
            }
            if (!*c) {
                paren = NULL;
                break;
            }
            if (lb) {
                bounds = paren + 1;
                bounds_end = comma ? comma : c;
            }
            q = c + 1;
        }
        if (!paren) continue;
        const char *end = paren;
        while (end > q && isspace((unsigned char)end[-1])) end--;
        const char *name = end;
        while (name > q && is_ident(name[-1])) name--;
        if (name == end) continue;
        /* extern "C" just before the mark. */
        const char *back = m;
        while (back > pre && isspace((unsigned char)back[-1])) back--;
        if (back - pre < 10 || strncmp(back - 10, "extern \"C\"", 10) != 0) continue;
        char key[300];
        snprintf(key, sizeof key, " %.*s ", (int)(end - name), name);
        if (strstr(seen.s, key)) continue;
        int bad = puts_(&seen, key + 1) || puts_(out, "\nXATTN_EXPORT(") ||
                  put(out, name, (size_t)(end - name)) || puts_(out, ")\n");
        if (!bad && bounds)
            bad = puts_(out, "extern \"C\" __attribute__((visibility(\"default\"))) const int "
                             "xemu_bounds_") ||
                  put(out, name, (size_t)(end - name)) || puts_(out, " = (int)(") ||
                  put(out, bounds, (size_t)(bounds_end - bounds)) || puts_(out, ");\n");
        if (bad) {
            free(seen.s);
            return -1;
        }
    }
    free(seen.s);
    return 0;
}

/* Run cmd (output to logp, appended); 0 on success. */
static int run(const char *cmd) { return system(cmd) == 0 ? 0 : -1; }

static void set_log(fake_program *p, const char *msg, const char *file)
{
    size_t n = 0;
    char *raw = file ? read_file(file, &n) : NULL;
    free(p->log);
    size_t m = strlen(msg);
    p->log = malloc(m + n + 1);
    if (p->log) {
        memcpy(p->log, msg, m);
        if (raw) memcpy(p->log + m, raw, n);
        p->log[m + n] = '\0';
    }
    free(raw);
}

EXPORT hiprtcResult hiprtcCompileProgram(hiprtcProgram prog, int n, const char **opts)
{
    fake_program *p = (fake_program *)prog;
    if (!p || (n && !opts)) return HIPRTC_ERROR_INVALID_INPUT;
    const arch_info *arch = NULL;
    for (int i = 0; i < n; i++) {
        const char *o = opts[i];
        if (!strncmp(o, "--offload-arch=", 15) || !strncmp(o, "--gpu-architecture=", 19)) {
            char base[32];
            snprintf(base, sizeof base, "%s", strchr(o, '=') + 1);
            base[strcspn(base, ":")] = '\0'; /* gfx90a:xnack- */
            arch = arch_named(base);
            if (!arch) {
                set_log(p, "xemu hiprtc: only gfx908, gfx90a and gfx1030 are emulated\n", NULL);
                return HIPRTC_ERROR_INVALID_OPTION;
            }
        }
    }
    if (!arch) arch = device_arch();
    char dir[] = "/tmp/xemu-hiprtc-XXXXXX";
    if (!mkdtemp(dir)) return HIPRTC_ERROR_INTERNAL_ERROR;
    char src[64], pre[64], so[64], logp[64];
    snprintf(src, sizeof src, "%s/k.cpp", dir);
    snprintf(pre, sizeof pre, "%s/k.ii", dir);
    snprintf(so, sizeof so, "%s/k.so", dir);
    snprintf(logp, sizeof logp, "%s/log", dir);
    hiprtcResult result = HIPRTC_ERROR_COMPILATION;
    char *cmd = NULL, *body = rewrite(p->src), *pre_text = NULL;
    text full = {0};
    if (!body) {
        set_log(p, "xemu hiprtc: cannot rewrite the source (extern __shared__ or "
                   "ext_vector_type it does not understand)\n", NULL);
        goto out;
    }
    size_t cap = 4096;
    for (int i = 0; i < n; i++) cap += strlen(opts[i]) + 4;
    cmd = malloc(cap);
    if (!cmd) {
        result = HIPRTC_ERROR_OUT_OF_MEMORY;
        goto out;
    }
    /* What hiprtc defines for the target, then the caller's -D options. */
    int len = snprintf(cmd, cap, "%s -std=c++17 -w -include %s/xemu_hip.h -DXEMU_WAVE=%d "
                       "-D__AMDGCN_WAVEFRONT_SIZE=%d -D__%s__=1 -D__HIPCC_RTC__=1 -D__HIP__=1 "
                       "-D__HIP_DEVICE_COMPILE__=1 -DXATTN_HIP=1", cxx_path(), include_dir(),
                       arch->wave, arch->wave, arch->name);
    for (int i = 0; i < n; i++)
        if (!strncmp(opts[i], "-D", 2) && !strpbrk(opts[i], "'\"\\$`;&|<>() "))
            len += snprintf(cmd + len, cap - (size_t)len, " '%s'", opts[i]);
    const int base_len = len;
    FILE *f = fopen(src, "w");
    if (!f) goto out;
    fputs(body, f);
    fclose(f);
    /* Pass 1: preprocess with __global__ marked, to find the kernels. */
    snprintf(cmd + base_len, cap - (size_t)base_len,
             " -D__global__=XEMU_GLOBAL_MARK '-D__launch_bounds__(...)=XEMU_LB(__VA_ARGS__)'"
             " -E -P -o %s %s > %s 2>&1", pre, src, logp);
    size_t pre_size = 0;
    if (run(cmd) != 0 || !(pre_text = read_file(pre, &pre_size))) {
        set_log(p, "", logp);
        goto out;
    }
    if (puts_(&full, body) || exports(pre_text, &full)) {
        result = HIPRTC_ERROR_OUT_OF_MEMORY;
        goto out;
    }
    f = fopen(src, "w");
    if (!f) goto out;
    fputs(full.s, f);
    fclose(f);
    /* Pass 2: the shared object. */
    snprintf(cmd + base_len, cap - (size_t)base_len,
             " -O1 -g0 -shared -fPIC -o %s %s > %s 2>&1", so, src, logp);
    int rc = run(cmd);
    set_log(p, "", logp);
    size_t so_size = 0;
    char *bin = rc == 0 ? read_file(so, &so_size) : NULL;
    if (!bin) goto out;
    free(p->code);
    p->code = malloc(so_size + CODE_HEADER);
    if (!p->code) {
        free(bin);
        result = HIPRTC_ERROR_OUT_OF_MEMORY;
        goto out;
    }
    memset(p->code, 0, CODE_HEADER);
    memcpy(p->code, "XEMUHIP", 8);
    uint64_t n64 = so_size;
    memcpy(p->code + 8, &n64, 8);
    memcpy(p->code + 16, arch->name, strlen(arch->name));
    memcpy(p->code + CODE_HEADER, bin, so_size);
    p->code_size = so_size + CODE_HEADER;
    free(bin);
    result = HIPRTC_SUCCESS;
out:
    free(cmd);
    free(body);
    free(pre_text);
    free(full.s);
    unlink(src);
    unlink(pre);
    unlink(so);
    unlink(logp);
    rmdir(dir);
    return result;
}

EXPORT hiprtcResult hiprtcGetProgramLogSize(hiprtcProgram prog, size_t *size)
{
    fake_program *p = (fake_program *)prog;
    if (!p || !size) return HIPRTC_ERROR_INVALID_INPUT;
    *size = (p->log ? strlen(p->log) : 0) + 1;
    return HIPRTC_SUCCESS;
}

EXPORT hiprtcResult hiprtcGetProgramLog(hiprtcProgram prog, char *log)
{
    fake_program *p = (fake_program *)prog;
    if (!p || !log) return HIPRTC_ERROR_INVALID_INPUT;
    strcpy(log, p->log ? p->log : "");
    return HIPRTC_SUCCESS;
}

EXPORT hiprtcResult hiprtcGetCodeSize(hiprtcProgram prog, size_t *size)
{
    fake_program *p = (fake_program *)prog;
    if (!p || !p->code) return HIPRTC_ERROR_INVALID_PROGRAM;
    *size = p->code_size;
    return HIPRTC_SUCCESS;
}

EXPORT hiprtcResult hiprtcGetCode(hiprtcProgram prog, char *out)
{
    fake_program *p = (fake_program *)prog;
    if (!p || !p->code) return HIPRTC_ERROR_INVALID_PROGRAM;
    memcpy(out, p->code, p->code_size);
    return HIPRTC_SUCCESS;
}
