/* Kernels: the embedded CUDA C++ sources specialised with a plan's -D
 * options, compiled by NVRTC for the device's exact architecture to a
 * cubin, loaded with cuModuleLoadData, and cached in memory (per device)
 * and on disk (XATTN_CACHE_DIR). Also kernel lookup and launches. */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cu.h"
#include "disk_cache.h"

/* From the generated cu_sources.c (kernels/, prelude.cuh in front). */
extern const cu_source xattn_cu_sources[];
extern const size_t xattn_cu_sources_count;

/* Cache files are <dir>/cuda-<hash of the key>.bin, of kind "cuda-cubin". */
#define CACHE_PREFIX "cuda"
#define CACHE_KIND "cuda-cubin"

enum {
    LOG_QUOTE = 600,          /* log characters quoted in an error message */
    MAX_CUBIN = 256 << 20,
    MAX_OPTIONS = 64,         /* -D options of one variant */
    STATIC_SMEM_LIMIT = 48 << 10, /* dynamic shared memory without opting in */
    MAX_GRID_YZ = 65535,      /* gridDim.y and gridDim.z */
};

struct cu_module_entry {
    cu_module_entry *next;
    uint64_t hash;
    char *key;
    CUmodule module;
};

const cu_source *cu_source_find(const char *name)
{
    for (size_t i = 0; i < xattn_cu_sources_count; i++)
        if (!strcmp(xattn_cu_sources[i].name, name)) return &xattn_cu_sources[i];
    return NULL;
}

const cu_source *cu_sources(size_t *count)
{
    *count = xattn_cu_sources_count;
    return xattn_cu_sources;
}

void cu_arch_name(int major, int minor, char *out, size_t size)
{
    /* The "a" targets unlock the architecture-specific instructions
     * (wgmma, TMA, setmaxnreg on 9.0); their cubins run only on that exact
     * compute capability, which is what a run-time compile targets anyway. */
    if ((major == 9 || major == 10) && minor == 0)
        snprintf(out, size, "sm_%d%da", major, minor);
    else
        snprintf(out, size, "sm_%d%d", major, minor);
}

/* ---- compiling -------------------------------------------------------------- */

/* The program log, malloc'd ("" when there is none); NULL without memory. */
static char *program_log(const nvrtc_api *rtc, nvrtcProgram prog)
{
    size_t len = 0;
    if (rtc->GetProgramLogSize(prog, &len) != NVRTC_SUCCESS) len = 0;
    char *log = malloc(len + 1);
    if (!log) return NULL;
    if (len && rtc->GetProgramLog(prog, log) != NVRTC_SUCCESS) len = 0;
    log[len] = '\0';
    return log;
}

xattn_status cu_compile(const nvrtc_api *rtc, const char *arch, const char *name,
                        const char *options, void **cubin, size_t *size, char **log_out)
{
    *cubin = NULL;
    *size = 0;
    if (log_out) *log_out = NULL;
    const cu_source *src = cu_source_find(name);
    if (!src) return xattn_error(XATTN_ERR_INTERNAL, "cuda: no kernel source %s.cu", name);
    int cc = 0;
    if (sscanf(arch, "sm_%d", &cc) != 1 || cc < 10)
        return xattn_error(XATTN_ERR_INTERNAL, "cuda: bad architecture '%s'", arch);

    /* Split the variant's options on spaces into NVRTC's argument list. */
    char *copy = strdup(options ? options : "");
    if (!copy) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "cuda: out of memory");
    char arch_opt[48], cc_opt[32];
    snprintf(arch_opt, sizeof arch_opt, "--gpu-architecture=%s", arch);
    snprintf(cc_opt, sizeof cc_opt, "-DXATTN_ARCH=%d", cc);
    const char *argv[MAX_OPTIONS + 5];
    int argc = 0;
    argv[argc++] = arch_opt;
    argv[argc++] = "-std=c++17";
    argv[argc++] = "-default-device";
    argv[argc++] = "-Xptxas=-v";
    argv[argc++] = cc_opt;
    for (char *save = NULL, *tok = strtok_r(copy, " ", &save); tok;
         tok = strtok_r(NULL, " ", &save)) {
        if (argc == (int)XATTN_ARRAY_SIZE(argv)) {
            free(copy);
            return xattn_error(XATTN_ERR_INTERNAL, "cuda: more than %d options for %s.cu",
                               MAX_OPTIONS, name);
        }
        argv[argc++] = tok;
    }

    char prog_name[64];
    snprintf(prog_name, sizeof prog_name, "%s.cu", name);
    nvrtcProgram prog = NULL;
    nvrtcResult r = rtc->CreateProgram(&prog, src->text, prog_name, 0, NULL, NULL);
    if (r != NVRTC_SUCCESS) {
        free(copy);
        return cu_nvrtc_fail(rtc, r, "nvrtcCreateProgram");
    }
    r = rtc->CompileProgram(prog, argc, argv);
    free(copy);
    char *log = program_log(rtc, prog);
    xattn_status st = XATTN_OK;
    if (r != NVRTC_SUCCESS) {
        if (log) xattn_log(XATTN_LOG_DEBUG, "cuda: NVRTC log of %s:\n%s", prog_name, log);
        st = xattn_error(r == NVRTC_ERROR_COMPILATION ? XATTN_ERR_COMPILE : XATTN_ERR_INTERNAL,
                         "cuda: compiling kernels/%s for %s with '%s' failed (%s): %.*s",
                         prog_name, arch, options ? options : "", rtc->GetErrorString(r),
                         LOG_QUOTE, log && *log ? log : "(no log)");
    } else {
        size_t n = 0;
        void *bin = NULL;
        if ((r = rtc->GetCUBINSize(prog, &n)) != NVRTC_SUCCESS)
            st = cu_nvrtc_fail(rtc, r, "nvrtcGetCUBINSize");
        else if (n == 0 || n > MAX_CUBIN)
            st = xattn_error(XATTN_ERR_COMPILE, "cuda: NVRTC gave a cubin of %zu bytes for %s",
                             n, prog_name);
        else if (!(bin = malloc(n)))
            st = xattn_error(XATTN_ERR_OUT_OF_MEMORY, "cuda: out of memory");
        else if ((r = rtc->GetCUBIN(prog, bin)) != NVRTC_SUCCESS)
            st = cu_nvrtc_fail(rtc, r, "nvrtcGetCUBIN");
        if (st == XATTN_OK) {
            *cubin = bin;
            *size = n;
        } else {
            free(bin);
        }
    }
    rtc->DestroyProgram(&prog);
    if (st == XATTN_OK && log_out) *log_out = log;
    else free(log);
    return st;
}

/* ---- modules: memory and disk caches ---------------------------------------- */

static xattn_status load_module(xattn_device *dev, const char *name, const char *options,
                                uint64_t hash, const char *key, CUmodule *out)
{
    char path[PATH_MAX];
    int have_path = xattn_disk_cache_path(CACHE_PREFIX, hash, path, sizeof path) == 0;
    size_t n = 0;
    void *bin = have_path ? xattn_disk_cache_load(path, CACHE_KIND, key, MAX_CUBIN, &n) : NULL;
    if (bin) {
        CUresult r = dev->cu->ModuleLoadData(out, bin);
        free(bin);
        if (r == CUDA_SUCCESS) return XATTN_OK;
        xattn_log(XATTN_LOG_INFO, "cuda: cached cubin of %s.cu rejected by the driver (%d); "
                  "compiling", name, (int)r);
    }
    XATTN_TRY(cu_compile(dev->rtc, dev->arch, name, options, &bin, &n, NULL));
    CUresult r = dev->cu->ModuleLoadData(out, bin);
    if (r == CUDA_SUCCESS && have_path)
        (void)xattn_disk_cache_store(path, CACHE_KIND, key, bin, n);
    free(bin);
    if (r != CUDA_SUCCESS) return cu_fail(dev->cu, r, "cuModuleLoadData");
    return XATTN_OK;
}

xattn_status cu_module_get(xattn_device *dev, const char *name, const char *options,
                           CUmodule *out)
{
    const cu_source *src = cu_source_find(name);
    if (!src) return xattn_error(XATTN_ERR_INTERNAL, "cuda: no kernel source %s.cu", name);
    /* The key names everything the cubin depends on; the cache format's
     * version is in it, so formats side by side do not collide. */
    char key[CU_OPTIONS_SIZE + 256];
    int len = snprintf(key, sizeof key, "%s|%016llx|%s|%s|nvrtc %d.%d|driver %d|cache %d", name,
                       (unsigned long long)xattn_fnv1a64(XATTN_FNV1A64_BASIS, src->text,
                                                         strlen(src->text)),
                       options, dev->arch, dev->rtc->major, dev->rtc->minor,
                       dev->cu->driver_version, XATTN_DISK_CACHE_VERSION);
    if (len < 0 || (size_t)len >= sizeof key)
        return xattn_error(XATTN_ERR_INTERNAL, "cuda: options of %s.cu too long", name);
    uint64_t hash = xattn_fnv1a64(XATTN_FNV1A64_BASIS, key, (size_t)len);

    /* One lock over lookup and build: two plans wanting the same module
     * compile it once. */
    pthread_mutex_lock(&dev->lock);
    for (cu_module_entry *e = dev->modules; e; e = e->next)
        if (e->hash == hash && !strcmp(e->key, key)) {
            *out = e->module;
            pthread_mutex_unlock(&dev->lock);
            return XATTN_OK;
        }
    xattn_status st = XATTN_OK;
    cu_module_entry *e = calloc(1, sizeof *e);
    if (!e || !(e->key = strdup(key))) st = xattn_error(XATTN_ERR_OUT_OF_MEMORY, "cuda: out of memory");
    if (st == XATTN_OK) st = load_module(dev, name, options, hash, key, &e->module);
    if (st == XATTN_OK) {
        xattn_log(XATTN_LOG_DEBUG, "cuda: loaded %s.cu for %s with '%s'", name, dev->arch,
                  options);
        e->hash = hash;
        e->next = dev->modules;
        dev->modules = e;
        *out = e->module;
    } else if (e) {
        free(e->key);
        free(e);
    }
    pthread_mutex_unlock(&dev->lock);
    return st;
}

void cu_modules_release(xattn_device *dev)
{
    cu_module_entry *e = dev->modules;
    while (e) {
        cu_module_entry *next = e->next;
        dev->cu->ModuleUnload(e->module);
        free(e->key);
        free(e);
        e = next;
    }
    dev->modules = NULL;
}

/* ---- kernels and launches --------------------------------------------------- */

xattn_status cu_kernel_get(xattn_device *dev, CUmodule m, const char *name, size_t smem,
                           unsigned threads, cu_kernel *out)
{
    const cu_api *cu = dev->cu;
    memset(out, 0, sizeof *out);
    CUfunction fn = NULL;
    CUresult r = cu->ModuleGetFunction(&fn, m, name);
    if (r == CUDA_ERROR_NOT_FOUND)
        return xattn_error(XATTN_ERR_INTERNAL, "cuda: no kernel %s in its module", name);
    if (r != CUDA_SUCCESS) return cu_fail(cu, r, "cuModuleGetFunction");
    int static_smem = 0, max_threads = 0;
    CU_TRY(cu, cu->FuncGetAttribute(&static_smem, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, fn));
    CU_TRY(cu, cu->FuncGetAttribute(&max_threads, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, fn));
    if (smem + (size_t)static_smem > (size_t)dev->smem_optin)
        return xattn_error(XATTN_ERR_UNSUPPORTED,
                           "cuda: kernel %s needs %zu bytes of shared memory, %s allows %d",
                           name, smem + (size_t)static_smem, dev->name, dev->smem_optin);
    if (threads == 0 || (int)threads > max_threads)
        return xattn_error(XATTN_ERR_UNSUPPORTED,
                           "cuda: kernel %s launched with %u threads per block, it allows %d "
                           "(registers) on %s", name, threads, max_threads, dev->name);
    /* Without opting in, dynamic shared memory is capped at 48 KiB less the
     * kernel's static shared memory, so the sum decides, not smem alone. */
    if (smem + (size_t)static_smem > STATIC_SMEM_LIMIT)
        CU_TRY(cu, cu->FuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                        (int)smem));
    out->fn = fn;
    out->smem = (unsigned)smem;
    out->threads = threads;
    return XATTN_OK;
}

xattn_status cu_variants_load(xattn_device *dev, const cu_variant *v, int n,
                              cu_kernel kernels[][CU_MAX_KERNELS])
{
    for (int i = 0; i < n; i++) {
        CUmodule m = NULL;
        XATTN_TRY(cu_module_get(dev, v[i].source, v[i].options, &m));
        for (int j = 0; j < CU_MAX_KERNELS; j++) {
            memset(&kernels[i][j], 0, sizeof kernels[i][j]);
            if (j < CU_MAX_KERNELS && v[i].kernels[j])
                XATTN_TRY(cu_kernel_get(dev, m, v[i].kernels[j], v[i].smem_bytes,
                                        (unsigned)v[i].threads, &kernels[i][j]));
            else
                break;
        }
    }
    return XATTN_OK;
}

xattn_status cu_launch(xattn_device *dev, const cu_kernel *k, unsigned gx, unsigned gy,
                       unsigned gz, void **args)
{
    if (gx == 0 || gy == 0 || gz == 0) return XATTN_OK; /* nothing to do */
    if (!k->fn) return xattn_error(XATTN_ERR_INTERNAL, "cuda: launch of a kernel not loaded");
    /* The driver's limits on y and z; x goes to 2^31 - 1. A caller past
     * them gets a message that names the grid instead of
     * CUDA_ERROR_INVALID_VALUE. */
    if (gx > INT32_MAX || gy > MAX_GRID_YZ || gz > MAX_GRID_YZ)
        return xattn_error(XATTN_ERR_UNSUPPORTED, "cuda: a grid of %u x %u x %u blocks is over "
                           "the device's limits (2^31 - 1 x 65535 x 65535)", gx, gy, gz);
    CUresult r = dev->cu->LaunchKernel(k->fn, gx, gy, gz, k->threads, 1, 1, k->smem, dev->stream,
                                       args, NULL);
    if (r != CUDA_SUCCESS) return cu_fail(dev->cu, r, "cuLaunchKernel");
    return XATTN_OK;
}
