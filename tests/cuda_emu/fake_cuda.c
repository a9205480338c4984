/* A fake CUDA driver for tests without a GPU: the entry points the CUDA
 * module resolves (backends/cuda/cu_loader.c), over host memory, with
 * "cubins" that are shared objects built by the fake NVRTC from the kernel
 * sources and xemu.h. Launches run synchronously on the calling thread
 * (one at a time); streams and contexts are tokens. It reports one device
 * of compute capability 8.0 (XEMU_CC=90 for 9.0) with an A100's limits.
 * New allocations are filled with 0xff bytes, so output a kernel failed to
 * write shows as NaN. See xemu.h for what the emulation models. */
#include <cuda.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

static pthread_mutex_t launch_lock = PTHREAD_MUTEX_INITIALIZER;
static int ctx_token, stream_token;

typedef int (*launch_fn)(const unsigned *dims, unsigned smem, void **params);

typedef struct fake_function {
    launch_fn launch;
    int max_dynamic_smem; /* CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES */
    struct fake_function *next;
} fake_function;

typedef struct fake_module {
    void *handle;
    fake_function *functions;
} fake_module;

static int cc(void)
{
    const char *e = getenv("XEMU_CC");
    return e && atoi(e) >= 70 ? atoi(e) : 80;
}

/* Shared memory a block may opt in to: an A100's 163 KiB, an H100's 227. */
static int smem_optin(void) { return cc() >= 90 ? 227 * 1024 : 163 * 1024; }

EXPORT CUresult cuInit(unsigned int flags) { (void)flags; return CUDA_SUCCESS; }
EXPORT CUresult cuDriverGetVersion(int *v) { *v = 13000; return CUDA_SUCCESS; }
EXPORT CUresult cuDeviceGetCount(int *n) { *n = 1; return CUDA_SUCCESS; }

EXPORT CUresult cuDeviceGet(CUdevice *d, int i)
{
    if (i != 0) return CUDA_ERROR_INVALID_DEVICE;
    *d = 0;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetName(char *name, int len, CUdevice d)
{
    (void)d;
    snprintf(name, (size_t)len, "xemu CPU emulation of an sm_%d GPU", cc());
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetAttribute(int *v, CUdevice_attribute a, CUdevice d)
{
    (void)d;
    switch (a) {
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *v = cc() / 10; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *v = cc() % 10; break;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *v = 4; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: *v = smem_optin(); break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR:
        *v = smem_optin() + 1024;
        break;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: *v = 2048; break;
    case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR: *v = 65536; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X:
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: *v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: *v = 64; break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: *v = 2147483647; break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y:
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: *v = 65535; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: *v = 48 * 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *v = 32; break;
    case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK: *v = 65536; break;
    case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: *v = 4 << 20; break;
    case CU_DEVICE_ATTRIBUTE_CLOCK_RATE: *v = 1410000; break;
    case CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE: *v = 1215000; break;
    case CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH: *v = 5120; break;
    default: *v = 0; break;
    }
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice d)
{
    (void)d;
    *bytes = (size_t)8 << 30;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d)
{
    (void)d;
    *c = (CUcontext)&ctx_token;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) { (void)d; return CUDA_SUCCESS; }
EXPORT CUresult cuCtxPushCurrent_v2(CUcontext c) { (void)c; return CUDA_SUCCESS; }

EXPORT CUresult cuCtxPopCurrent_v2(CUcontext *c)
{
    if (c) *c = (CUcontext)&ctx_token;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamCreate(CUstream *s, unsigned int flags)
{
    (void)flags;
    *s = (CUstream)&stream_token;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuStreamDestroy_v2(CUstream s) { (void)s; return CUDA_SUCCESS; }
EXPORT CUresult cuStreamSynchronize(CUstream s) { (void)s; return CUDA_SUCCESS; }

EXPORT CUresult cuStreamGetCtx(CUstream s, CUcontext *c)
{
    (void)s;
    *c = (CUcontext)&ctx_token;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t bytes)
{
    void *m = malloc(bytes ? bytes : 1);
    if (!m) return CUDA_ERROR_OUT_OF_MEMORY;
    memset(m, 0xff, bytes);
    *p = (CUdeviceptr)(uintptr_t)m;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemFree_v2(CUdeviceptr p)
{
    free((void *)(uintptr_t)p);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, CUstream s)
{
    (void)s;
    memcpy((void *)(uintptr_t)dst, src, n);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, CUstream s)
{
    (void)s;
    memcpy(dst, (const void *)(uintptr_t)src, n);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemsetD8Async(CUdeviceptr p, unsigned char v, size_t n, CUstream s)
{
    (void)s;
    memset((void *)(uintptr_t)p, v, n);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuPointerGetAttribute(void *data, CUpointer_attribute a, CUdeviceptr p)
{
    (void)data;
    (void)a;
    (void)p;
    return CUDA_ERROR_NOT_SUPPORTED;
}

/* The "cubin" is a shared object: write it out, dlopen it, unlink it. */
EXPORT CUresult cuModuleLoadData(CUmodule *m, const void *image)
{
    const unsigned char *bytes = image;
    if (memcmp(bytes, "XEMUSO", 6) != 0) return CUDA_ERROR_INVALID_IMAGE;
    uint64_t n;
    memcpy(&n, bytes + 8, sizeof n);
    char path[] = "/tmp/xemu-module-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return CUDA_ERROR_OPERATING_SYSTEM;
    int ok = write(fd, bytes + 16, (size_t)n) == (ssize_t)n;
    close(fd);
    void *h = ok ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
    if (!h && ok) fprintf(stderr, "xemu: dlopen: %s\n", dlerror());
    unlink(path);
    if (!h) return CUDA_ERROR_INVALID_IMAGE;
    fake_module *fm = calloc(1, sizeof *fm);
    if (!fm) {
        dlclose(h);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    fm->handle = h;
    *m = (CUmodule)fm;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuModuleUnload(CUmodule m)
{
    fake_module *fm = (fake_module *)m;
    if (!fm) return CUDA_ERROR_INVALID_HANDLE;
    for (fake_function *f = fm->functions, *next; f; f = next) {
        next = f->next;
        free(f);
    }
    dlclose(fm->handle);
    free(fm);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuModuleGetFunction(CUfunction *out, CUmodule m, const char *name)
{
    fake_module *fm = (fake_module *)m;
    if (!fm || !name) return CUDA_ERROR_INVALID_HANDLE;
    char sym[256];
    snprintf(sym, sizeof sym, "xemu_launch_%s", name);
    void *p = dlsym(fm->handle, sym);
    if (!p) return CUDA_ERROR_NOT_FOUND;
    fake_function *f = calloc(1, sizeof *f);
    if (!f) return CUDA_ERROR_OUT_OF_MEMORY;
    memcpy(&f->launch, &p, sizeof p);
    f->max_dynamic_smem = 48 * 1024;
    f->next = fm->functions;
    fm->functions = f;
    *out = (CUfunction)f;
    return CUDA_SUCCESS;
}

/* Like the driver: dynamic shared memory past the default 48 KiB needs
 * CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, up to the opt-in limit.
 * Static shared memory is not measured (reported as 0). */
EXPORT CUresult cuFuncSetAttribute(CUfunction fn, CUfunction_attribute a, int v)
{
    fake_function *f = (fake_function *)fn;
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    if (a == CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) {
        if (v < 0 || v > smem_optin()) return CUDA_ERROR_INVALID_VALUE;
        f->max_dynamic_smem = v;
    }
    return CUDA_SUCCESS;
}

EXPORT CUresult cuFuncGetAttribute(int *v, CUfunction_attribute a, CUfunction fn)
{
    const fake_function *f = (const fake_function *)fn;
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    switch (a) {
    case CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *v = 1024; break;
    case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: *v = f->max_dynamic_smem; break;
    case CU_FUNC_ATTRIBUTE_NUM_REGS: *v = 32; break;
    case CU_FUNC_ATTRIBUTE_PTX_VERSION:
    case CU_FUNC_ATTRIBUTE_BINARY_VERSION: *v = cc(); break;
    default: *v = 0; break;
    }
    return CUDA_SUCCESS;
}

/* Limits checked as the driver does (CUDA_ERROR_INVALID_VALUE); the grid
 * then runs here, block after block, before the call returns. */
EXPORT CUresult cuLaunchKernel(CUfunction fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                               unsigned by, unsigned bz, unsigned smem, CUstream s, void **params,
                               void **extra)
{
    (void)s;
    fake_function *f = (fake_function *)fn;
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    if (extra) return CUDA_ERROR_INVALID_VALUE;
    if (!gx || !gy || !gz || gx > 2147483647u || gy > 65535 || gz > 65535)
        return CUDA_ERROR_INVALID_VALUE;
    if (!bx || !by || !bz || bx > 1024 || by > 1024 || bz > 64 ||
        (unsigned long long)bx * by * bz > 1024)
        return CUDA_ERROR_INVALID_VALUE;
    if (smem > (unsigned)f->max_dynamic_smem) return CUDA_ERROR_INVALID_VALUE;
    const unsigned dims[6] = {gx, gy, gz, bx, by, bz};
    pthread_mutex_lock(&launch_lock);
    int rc = f->launch(dims, smem, params);
    pthread_mutex_unlock(&launch_lock);
    return rc ? CUDA_ERROR_LAUNCH_FAILED : CUDA_SUCCESS;
}

EXPORT CUresult cuGetErrorName(CUresult r, const char **s)
{
    switch (r) {
    case CUDA_SUCCESS: *s = "CUDA_SUCCESS"; break;
    case CUDA_ERROR_INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; break;
    case CUDA_ERROR_OUT_OF_MEMORY: *s = "CUDA_ERROR_OUT_OF_MEMORY"; break;
    case CUDA_ERROR_INVALID_IMAGE: *s = "CUDA_ERROR_INVALID_IMAGE"; break;
    case CUDA_ERROR_NOT_FOUND: *s = "CUDA_ERROR_NOT_FOUND"; break;
    case CUDA_ERROR_LAUNCH_FAILED: *s = "CUDA_ERROR_LAUNCH_FAILED"; break;
    case CUDA_ERROR_INVALID_HANDLE: *s = "CUDA_ERROR_INVALID_HANDLE"; break;
    case CUDA_ERROR_INVALID_DEVICE: *s = "CUDA_ERROR_INVALID_DEVICE"; break;
    case CUDA_ERROR_NOT_SUPPORTED: *s = "CUDA_ERROR_NOT_SUPPORTED"; break;
    case CUDA_ERROR_OPERATING_SYSTEM: *s = "CUDA_ERROR_OPERATING_SYSTEM"; break;
    default: *s = "CUDA_ERROR (xemu)"; break;
    }
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGetErrorString(CUresult r, const char **s)
{
    (void)r;
    *s = "reported by the xemu fake driver";
    return CUDA_SUCCESS;
}

/* ---- events (the CUDA module's ceilings time with them) -------------------
 * Launches run synchronously, so an event records the host's monotonic
 * clock when it is recorded; synchronising on one has nothing to wait for. */

typedef struct fake_event {
    double seconds;
    int recorded;
} fake_event;

static double monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

EXPORT CUresult cuEventCreate(CUevent *e, unsigned int flags)
{
    (void)flags;
    fake_event *f = calloc(1, sizeof *f);
    if (!f) return CUDA_ERROR_OUT_OF_MEMORY;
    *e = (CUevent)f;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuEventDestroy_v2(CUevent e)
{
    free(e);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuEventRecord(CUevent e, CUstream s)
{
    (void)s;
    fake_event *f = (fake_event *)e;
    if (!f) return CUDA_ERROR_INVALID_VALUE;
    f->seconds = monotonic_seconds();
    f->recorded = 1;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuEventSynchronize(CUevent e) { return e ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE; }

/* The module resolves the first version, which every 12.x driver has;
 * cuda.h renames the call to cuEventElapsedTime_v2. */
#undef cuEventElapsedTime
EXPORT CUresult cuEventElapsedTime(float *ms, CUevent start, CUevent stop);
EXPORT CUresult cuEventElapsedTime(float *ms, CUevent start, CUevent stop)
{
    const fake_event *a = (const fake_event *)start, *b = (const fake_event *)stop;
    if (!ms || !a || !b) return CUDA_ERROR_INVALID_VALUE;
    if (!a->recorded || !b->recorded) return CUDA_ERROR_NOT_READY;
    *ms = (float)(1e3 * (b->seconds - a->seconds));
    return CUDA_SUCCESS;
}
