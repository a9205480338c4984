/* The CUDA driver and NVRTC, loaded lazily with dlopen so that the module
 * (and the program that loads it) starts on machines without either:
 * probing then reports which one is missing and zero devices. The driver
 * entry points are resolved by their versioned names (cuMemAlloc_v2, ...):
 * cuda.h renames the calls with macros, which dlsym does not see. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cu.h"

#define DRIVER_LIBRARY "libcuda.so.1"
#define DRIVER_ENV "XATTN_CUDA_DRIVER_PATH"
#define NVRTC_ENV "XATTN_NVRTC_PATH"

/* NVRTC's sonames, newest first. */
static const char *const nvrtc_names[] = {"libnvrtc.so.13", "libnvrtc.so.12"};

typedef struct symbol {
    const char *name;
    size_t offset;
} symbol;

/* Resolve every symbol into the struct at base; returns the first missing
 * name, or NULL. */
static const char *resolve(void *lib, const symbol *syms, size_t n, void *base)
{
    for (size_t i = 0; i < n; i++) {
        void *f = dlsym(lib, syms[i].name);
        if (!f) return syms[i].name;
        memcpy((char *)base + syms[i].offset, &f, sizeof f); /* object → function pointer */
    }
    return NULL;
}

/* ---- the driver ------------------------------------------------------------- */

/* Written once under pthread_once, read-only afterwards. */
static cu_api driver;
static const cu_api *driver_ok;
static char driver_reason[512];
static pthread_once_t driver_once = PTHREAD_ONCE_INIT;

static void driver_load(void)
{
    const char *env = getenv(DRIVER_ENV);
    const char *path = env && *env ? env : DRIVER_LIBRARY;
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *why = dlerror();
        snprintf(driver_reason, sizeof driver_reason,
                 "runtime library missing: cannot load %s (%s)", path, why ? why : "dlopen failed");
        return;
    }
    static const symbol syms[] = {
#define SYM(f, name) {name, offsetof(cu_api, f)}
        SYM(Init, "cuInit"),
        SYM(DriverGetVersion, "cuDriverGetVersion"),
        SYM(DeviceGetCount, "cuDeviceGetCount"),
        SYM(DeviceGet, "cuDeviceGet"),
        SYM(DeviceGetName, "cuDeviceGetName"),
        SYM(DeviceGetAttribute, "cuDeviceGetAttribute"),
        SYM(DeviceTotalMem, "cuDeviceTotalMem_v2"),
        SYM(DevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain"),
        SYM(DevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2"),
        SYM(CtxPushCurrent, "cuCtxPushCurrent_v2"),
        SYM(CtxPopCurrent, "cuCtxPopCurrent_v2"),
        SYM(StreamCreate, "cuStreamCreate"),
        SYM(StreamDestroy, "cuStreamDestroy_v2"),
        SYM(StreamSynchronize, "cuStreamSynchronize"),
        SYM(StreamGetCtx, "cuStreamGetCtx"),
        SYM(MemAlloc, "cuMemAlloc_v2"),
        SYM(MemFree, "cuMemFree_v2"),
        SYM(MemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2"),
        SYM(MemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2"),
        SYM(MemsetD8Async, "cuMemsetD8Async"),
        SYM(PointerGetAttribute, "cuPointerGetAttribute"),
        SYM(ModuleLoadData, "cuModuleLoadData"),
        SYM(ModuleUnload, "cuModuleUnload"),
        SYM(ModuleGetFunction, "cuModuleGetFunction"),
        SYM(FuncSetAttribute, "cuFuncSetAttribute"),
        SYM(FuncGetAttribute, "cuFuncGetAttribute"),
        SYM(LaunchKernel, "cuLaunchKernel"),
        SYM(GetErrorName, "cuGetErrorName"),
        SYM(GetErrorString, "cuGetErrorString"),
#undef SYM
    };
    const char *missing = resolve(lib, syms, XATTN_ARRAY_SIZE(syms), &driver);
    if (missing) {
        snprintf(driver_reason, sizeof driver_reason,
                 "runtime library %s lacks %s (a CUDA 12 or newer driver is needed)", path,
                 missing);
        dlclose(lib);
        return;
    }
    /* Optional entry points (the ceilings' events): all or none. */
    static const symbol optional[] = {
#define SYM(f, name) {name, offsetof(cu_api, f)}
        SYM(EventCreate, "cuEventCreate"),
        SYM(EventDestroy, "cuEventDestroy_v2"),
        SYM(EventRecord, "cuEventRecord"),
        SYM(EventSynchronize, "cuEventSynchronize"),
        SYM(EventElapsedTime, "cuEventElapsedTime"),
#undef SYM
    };
    if (resolve(lib, optional, XATTN_ARRAY_SIZE(optional), &driver)) {
        driver.EventCreate = NULL;
        driver.EventDestroy = NULL;
        driver.EventRecord = NULL;
        driver.EventSynchronize = NULL;
        driver.EventElapsedTime = NULL;
    }
    CUresult r = driver.Init(0);
    if (r != CUDA_SUCCESS) {
        /* A stub driver cannot name its own errors. */
        const char *name = NULL;
        if (driver.GetErrorName(r, &name) != CUDA_SUCCESS || !name)
            name = r == CUDA_ERROR_STUB_LIBRARY ? "CUDA_ERROR_STUB_LIBRARY"
                   : r == CUDA_ERROR_NO_DEVICE  ? "CUDA_ERROR_NO_DEVICE"
                                                : "CUDA error";
        const char *what = r == CUDA_ERROR_STUB_LIBRARY ? "stub driver, no GPU"
                           : r == CUDA_ERROR_NO_DEVICE  ? "no CUDA device"
                                                         : "the driver did not start";
        snprintf(driver_reason, sizeof driver_reason, "cuInit: %s (%d) from %s: %s", name,
                 (int)r, path, what);
        dlclose(lib);
        return;
    }
    if (driver.DriverGetVersion(&driver.driver_version) != CUDA_SUCCESS)
        driver.driver_version = 0;
    driver_ok = &driver; /* stays loaded: modules hold its code */
}

const cu_api *cu_load(char *reason, size_t reason_size)
{
    pthread_once(&driver_once, driver_load);
    if (!driver_ok && reason_size) snprintf(reason, reason_size, "%s", driver_reason);
    return driver_ok;
}

/* ---- NVRTC ------------------------------------------------------------------ */

static nvrtc_api nvrtc;
static const nvrtc_api *nvrtc_ok;
static char nvrtc_reason[512];
static pthread_once_t nvrtc_once = PTHREAD_ONCE_INIT;

static void nvrtc_load(void)
{
    const char *env = getenv(NVRTC_ENV);
    void *lib = NULL;
    const char *path = NULL;
    char tried[256] = "";
    if (env && *env) {
        path = env;
        lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        snprintf(tried, sizeof tried, "%s", path);
    } else {
        for (size_t i = 0; i < XATTN_ARRAY_SIZE(nvrtc_names) && !lib; i++) {
            path = nvrtc_names[i];
            lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
            size_t len = strlen(tried);
            snprintf(tried + len, sizeof tried - len, "%s%s", len ? ", " : "", path);
        }
    }
    if (!lib) {
        const char *why = dlerror();
        snprintf(nvrtc_reason, sizeof nvrtc_reason,
                 "NVRTC missing: cannot load %s (%s); set %s to its path", tried,
                 why ? why : "dlopen failed", NVRTC_ENV);
        return;
    }
    static const symbol syms[] = {
#define SYM(f) {"nvrtc" #f, offsetof(nvrtc_api, f)}
        SYM(Version), SYM(CreateProgram), SYM(DestroyProgram), SYM(CompileProgram),
        SYM(GetProgramLogSize), SYM(GetProgramLog), SYM(GetCUBINSize), SYM(GetCUBIN),
        SYM(GetErrorString),
#undef SYM
    };
    const char *missing = resolve(lib, syms, XATTN_ARRAY_SIZE(syms), &nvrtc);
    if (missing) {
        snprintf(nvrtc_reason, sizeof nvrtc_reason,
                 "NVRTC %s lacks %s (NVRTC 12 or newer is needed)", path, missing);
        dlclose(lib);
        return;
    }
    if (nvrtc.Version(&nvrtc.major, &nvrtc.minor) != NVRTC_SUCCESS) nvrtc.major = nvrtc.minor = 0;
    snprintf(nvrtc.path, sizeof nvrtc.path, "%s", path);
    nvrtc_ok = &nvrtc;
}

const nvrtc_api *cu_nvrtc_load(char *reason, size_t reason_size)
{
    pthread_once(&nvrtc_once, nvrtc_load);
    if (!nvrtc_ok && reason_size) snprintf(reason, reason_size, "%s", nvrtc_reason);
    return nvrtc_ok;
}

/* ---- errors at the boundary ------------------------------------------------- */

xattn_status cu_fail(const cu_api *cu, CUresult err, const char *what)
{
    const char *name = NULL, *text = NULL;
    if (cu && (cu->GetErrorName(err, &name) != CUDA_SUCCESS || !name)) name = NULL;
    if (cu && (cu->GetErrorString(err, &text) != CUDA_SUCCESS || !text)) text = NULL;
    xattn_status st = err == CUDA_ERROR_OUT_OF_MEMORY ? XATTN_ERR_OUT_OF_MEMORY : XATTN_ERR_DEVICE;
    return xattn_error(st, "cuda: %s failed: %s (%d)%s%s", what, name ? name : "CUDA error",
                       (int)err, text ? ": " : "", text ? text : "");
}

xattn_status cu_nvrtc_fail(const nvrtc_api *rtc, nvrtcResult err, const char *what)
{
    const char *name = rtc ? rtc->GetErrorString(err) : NULL;
    /* Anything else is NVRTC's report (cu.h): a missing builtins library
     * (NVRTC_ERROR_BUILTIN_OPERATION_FAILURE) is the installation's
     * problem, not a bug in xattn. */
    xattn_status st = err == NVRTC_ERROR_OUT_OF_MEMORY  ? XATTN_ERR_OUT_OF_MEMORY
                      : err == NVRTC_ERROR_COMPILATION ? XATTN_ERR_COMPILE
                                                       : XATTN_ERR_DEVICE;
    return xattn_error(st, "cuda: %s failed: %s (%d)", what, name ? name : "NVRTC error",
                       (int)err);
}
