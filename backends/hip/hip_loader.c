/* The HIP runtime (libamdhip64) and hiprtc, loaded lazily with dlopen so
 * that the module (and the program that loads it) starts on machines
 * without ROCm: probing then says what is missing and reports zero
 * devices. Loading and starting are separate steps: hiprtc compiles
 * without a GPU, so the CI compile test loads the library and never calls
 * hipInit. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hip.h"

#define RUNTIME_ENV "XATTN_HIP_RUNTIME_PATH"

/* The runtime's sonames, newest first; ROCm 6 moved hiprtc into its own
 * library beside the runtime. */
static const char *const runtime_names[] = {"libamdhip64.so.6", "libamdhip64.so.5"};
static const char *const hiprtc_names[] = {"libhiprtc.so.6"};

/* hipDeviceProp_t layouts: where gcnArchName is (hip.h). */
enum {
    PROPS_R0000_ARCH = 396, PROPS_R0000_BYTES = 792,    /* ROCm 5 */
    PROPS_R0600_ARCH = 1160, PROPS_R0600_BYTES = 1472,  /* ROCm 6 */
    ARCH_NAME_BYTES = 256,
    VERSION_MAJOR = 10000000, VERSION_MINOR = 100000,   /* HIP_VERSION's encoding */
};

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

#define SYM(f, name) {name, offsetof(hip_api, f)}
static const symbol runtime_syms[] = {
    SYM(Init, "hipInit"),
    SYM(RuntimeGetVersion, "hipRuntimeGetVersion"),
    SYM(GetDeviceCount, "hipGetDeviceCount"),
    SYM(SetDevice, "hipSetDevice"),
    SYM(GetDevice, "hipGetDevice"),
    SYM(DeviceGetName, "hipDeviceGetName"),
    SYM(DeviceGetAttribute, "hipDeviceGetAttribute"),
    SYM(DeviceTotalMem, "hipDeviceTotalMem"),
    SYM(StreamCreateWithFlags, "hipStreamCreateWithFlags"),
    SYM(StreamDestroy, "hipStreamDestroy"),
    SYM(StreamSynchronize, "hipStreamSynchronize"),
    SYM(Malloc, "hipMalloc"),
    SYM(Free, "hipFree"),
    SYM(MemcpyHtoDAsync, "hipMemcpyHtoDAsync"),
    SYM(MemcpyDtoHAsync, "hipMemcpyDtoHAsync"),
    SYM(MemsetAsync, "hipMemsetAsync"),
    SYM(ModuleLoadData, "hipModuleLoadData"),
    SYM(ModuleUnload, "hipModuleUnload"),
    SYM(ModuleGetFunction, "hipModuleGetFunction"),
    SYM(FuncGetAttribute, "hipFuncGetAttribute"),
    SYM(ModuleLaunchKernel, "hipModuleLaunchKernel"),
    SYM(GetErrorName, "hipGetErrorName"),
    SYM(GetErrorString, "hipGetErrorString"),
};
static const symbol hiprtc_syms[] = {
    SYM(rtcVersion, "hiprtcVersion"),
    SYM(rtcCreateProgram, "hiprtcCreateProgram"),
    SYM(rtcDestroyProgram, "hiprtcDestroyProgram"),
    SYM(rtcCompileProgram, "hiprtcCompileProgram"),
    SYM(rtcGetProgramLogSize, "hiprtcGetProgramLogSize"),
    SYM(rtcGetProgramLog, "hiprtcGetProgramLog"),
    SYM(rtcGetCodeSize, "hiprtcGetCodeSize"),
    SYM(rtcGetCode, "hiprtcGetCode"),
    SYM(rtcGetErrorString, "hiprtcGetErrorString"),
};
#undef SYM

/* Written once under pthread_once, read-only afterwards. */
static hip_api runtime;
static const hip_api *runtime_ok;
static char runtime_reason[768];
static pthread_once_t runtime_once = PTHREAD_ONCE_INIT;

static void runtime_load(void)
{
    const char *env = getenv(RUNTIME_ENV);
    void *lib = NULL;
    const char *path = NULL;
    char tried[300] = "";
    if (env && *env) {
        path = env;
        lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        snprintf(tried, sizeof tried, "%s", path);
    } else {
        for (size_t i = 0; i < XATTN_ARRAY_SIZE(runtime_names) && !lib; i++) {
            path = runtime_names[i];
            lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
            size_t len = strlen(tried);
            snprintf(tried + len, sizeof tried - len, "%s%s", len ? ", " : "", path);
        }
    }
    if (!lib) {
        const char *why = dlerror();
        snprintf(runtime_reason, sizeof runtime_reason,
                 "runtime library missing: cannot load %s (%s); install ROCm's HIP runtime "
                 "(Debian: libamdhip64-5) or set %s to its path", tried,
                 why ? why : "dlopen failed", RUNTIME_ENV);
        return;
    }
    const char *missing = resolve(lib, runtime_syms, XATTN_ARRAY_SIZE(runtime_syms), &runtime);
    if (missing) {
        snprintf(runtime_reason, sizeof runtime_reason,
                 "runtime library %s lacks %s (ROCm 5 or newer is needed)", path, missing);
        dlclose(lib);
        return;
    }
    if (runtime.RuntimeGetVersion(&runtime.runtime_version) != hipSuccess)
        runtime.runtime_version = 0;
    runtime.major = runtime.runtime_version / VERSION_MAJOR;
    runtime.minor = runtime.runtime_version % VERSION_MAJOR / VERSION_MINOR;
    /* The properties entry of the runtime's own struct layout. */
    const char *props = runtime.major >= 6 ? "hipGetDevicePropertiesR0600" : "hipGetDeviceProperties";
    void *f = dlsym(lib, props);
    if (!f) {
        snprintf(runtime_reason, sizeof runtime_reason,
                 "runtime library %s (HIP %d.%d) lacks %s", path, runtime.major, runtime.minor,
                 props);
        dlclose(lib);
        return;
    }
    memcpy(&runtime.GetDeviceProperties, &f, sizeof f);
    /* hiprtc: in the runtime on ROCm 5, beside it on ROCm 6. */
    void *rtc_lib = lib;
    missing = resolve(rtc_lib, hiprtc_syms, XATTN_ARRAY_SIZE(hiprtc_syms), &runtime);
    for (size_t i = 0; missing && i < XATTN_ARRAY_SIZE(hiprtc_names); i++) {
        rtc_lib = dlopen(hiprtc_names[i], RTLD_NOW | RTLD_LOCAL);
        if (rtc_lib)
            missing = resolve(rtc_lib, hiprtc_syms, XATTN_ARRAY_SIZE(hiprtc_syms), &runtime);
    }
    if (missing) {
        snprintf(runtime_reason, sizeof runtime_reason,
                 "hiprtc missing: %s has no %s and %s cannot be loaded (Debian: libamdhip64-5, "
                 "libhiprtc-builtins5, rocm-device-libs, libamd-comgr2)", path, missing,
                 hiprtc_names[0]);
        dlclose(lib);
        return;
    }
    if (runtime.rtcVersion(&runtime.rtc_major, &runtime.rtc_minor) != HIPRTC_SUCCESS)
        runtime.rtc_major = runtime.rtc_minor = 0;
    snprintf(runtime.path, sizeof runtime.path, "%s", path);
    runtime_ok = &runtime; /* stays loaded: modules hold its code */
}

const hip_api *hip_load(char *reason, size_t reason_size)
{
    pthread_once(&runtime_once, runtime_load);
    if (!runtime_ok && reason_size) snprintf(reason, reason_size, "%s", runtime_reason);
    return runtime_ok;
}

/* ---- starting: hipInit ------------------------------------------------------- */

static const hip_api *started;
static char start_reason[768];
static pthread_once_t start_once = PTHREAD_ONCE_INIT;

static const char *err_name(const hip_api *hip, hipError_t e)
{
    const char *name = hip->GetErrorName(e);
    return name ? name : "hipError";
}

static void runtime_start(void)
{
    const hip_api *hip = hip_load(start_reason, sizeof start_reason);
    if (!hip) return;
    hipError_t r = hip->Init(0);
    int n = 0;
    hipError_t rc = hip->GetDeviceCount(&n);
    if (r != hipSuccess || rc != hipSuccess || n <= 0) {
        /* Without a GPU ROCm 5.2 answers hipInit with hipErrorInvalidDevice
         * and the count with hipErrorNoDevice: both codes go in. */
        int none = r == hipErrorNoDevice || r == hipErrorInvalidDevice ||
                   rc == hipErrorNoDevice || n <= 0;
        snprintf(start_reason, sizeof start_reason,
                 "%s: %s (%d) from %s (HIP %d.%d.%d): %s (hipGetDeviceCount: %s (%d), %d devices)",
                 r != hipSuccess ? "hipInit" : "hipGetDeviceCount",
                 err_name(hip, r != hipSuccess ? r : rc), (int)(r != hipSuccess ? r : rc),
                 hip->path, hip->major, hip->minor, hip->runtime_version % VERSION_MINOR,
                 none ? "no AMD GPU" : "the runtime did not start", err_name(hip, rc), (int)rc,
                 n);
        return;
    }
    started = hip;
}

const hip_api *hip_start(char *reason, size_t reason_size)
{
    pthread_once(&start_once, runtime_start);
    if (!started && reason_size) snprintf(reason, reason_size, "%s", start_reason);
    return started;
}

int hip_device_arch_name(const hip_api *hip, int index, char *out, size_t size)
{
    /* 8-byte aligned scratch as large as either layout. */
    _Static_assert((int)HIP_PROPS_BYTES >= (int)PROPS_R0600_BYTES,
                  "properties buffer too small");
    uint64_t props[HIP_PROPS_BYTES / 8];
    memset(props, 0, sizeof props);
    if (hip->GetDeviceProperties(props, index) != hipSuccess) return -1;
    const size_t at = hip->major >= 6 ? PROPS_R0600_ARCH : PROPS_R0000_ARCH;
    const char *arch = (const char *)props + at;
    snprintf(out, size, "%.*s", (int)strnlen(arch, ARCH_NAME_BYTES), arch);
    return out[0] ? 0 : -1;
}

/* ---- errors at the boundary ------------------------------------------------- */

xattn_status hip_fail(const hip_api *hip, hipError_t err, const char *what)
{
    const char *name = hip ? hip->GetErrorName(err) : NULL;
    const char *text = hip ? hip->GetErrorString(err) : NULL;
    xattn_status st = err == hipErrorOutOfMemory ? XATTN_ERR_OUT_OF_MEMORY : XATTN_ERR_DEVICE;
    return xattn_error(st, "hip: %s failed: %s (%d)%s%s", what, name ? name : "hipError",
                       (int)err, text && (!name || strcmp(text, name)) ? ": " : "",
                       text && (!name || strcmp(text, name)) ? text : "");
}

xattn_status hip_rtc_fail(const hip_api *hip, hiprtcResult err, const char *what)
{
    const char *name = hip ? hip->rtcGetErrorString(err) : NULL;
    xattn_status st = err == HIPRTC_ERROR_OUT_OF_MEMORY  ? XATTN_ERR_OUT_OF_MEMORY
                      : err == HIPRTC_ERROR_COMPILATION ? XATTN_ERR_COMPILE
                                                        : XATTN_ERR_DEVICE;
    return xattn_error(st, "hip: %s failed: %s (%d)", what, name ? name : "hiprtc error",
                       (int)err);
}
