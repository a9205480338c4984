/* Kernels: the embedded HIP C++ sources specialised with a plan's -D
 * options, compiled by hiprtc for the device's own architecture to a code
 * object, loaded with hipModuleLoadData, and cached in memory (per device)
 * and on disk (XATTN_CACHE_DIR). Also the architecture rules, kernel
 * lookup and launches. */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "disk_cache.h"
#include "hip.h"

/* From the generated hip_sources.c (kernels/, prelude.hip in front). */
extern const hip_source xattn_hip_sources[];
extern const size_t xattn_hip_sources_count;

/* Cache files are <dir>/hip-<hash of the key>.bin, of kind "hip-code-object". */
#define CACHE_PREFIX "hip"
#define CACHE_KIND "hip-code-object"

enum {
    LOG_QUOTE = 600,          /* log characters quoted in an error message */
    MAX_CODE = 256 << 20,
    MAX_OPTIONS = 64,         /* -D options of one variant */
    MAX_GRID_YZ = 65535,      /* grid y and z, as the other modules */
};

struct hip_module_entry {
    hip_module_entry *next;
    uint64_t hash;
    char *key;
    hipModule_t module;
};

/* ---- architectures ---------------------------------------------------------- */

/* What hiprtc's code-object manager knows, per ROCm major version: handing
 * it anything else aborts the process (measured with ROCm 5.2: gfx940 and
 * gfx1100 abort; gfx900, gfx906, gfx908, gfx90a and the RDNA2 family
 * gfx1030-gfx1036 compile), so the list is explicit. ROCm 6 adds CDNA3
 * and RDNA3. */
static const char *const arch_rocm5[] = {"gfx900", "gfx906", "gfx908", "gfx90a", "gfx1030",
                                         "gfx1031", "gfx1032", "gfx1033", "gfx1034", "gfx1035",
                                         "gfx1036", NULL};
static const char *const arch_rocm6[] = {"gfx900", "gfx906", "gfx908", "gfx90a", "gfx940",
                                         "gfx941", "gfx942", "gfx1030", "gfx1031", "gfx1032",
                                         "gfx1033", "gfx1034", "gfx1035", "gfx1036", "gfx1100",
                                         "gfx1101", "gfx1102", NULL};

void hip_arch_base(const char *full, char *out, size_t size)
{
    snprintf(out, size, "%.*s", (int)strcspn(full, ":"), full);
}

int hip_arch_allowed(int rocm_major, const char *arch)
{
    const char *const *list = rocm_major >= 6 ? arch_rocm6 : rocm_major == 5 ? arch_rocm5 : NULL;
    for (; list && *list; list++)
        if (!strcmp(*list, arch)) return 1;
    return 0;
}

const char *hip_arch_list(int rocm_major)
{
    return rocm_major >= 6 ? "gfx900, gfx906, gfx908, gfx90a, gfx940, gfx941, gfx942, "
                             "gfx1030-gfx1036, gfx1100, gfx1101, gfx1102"
           : rocm_major == 5 ? "gfx900, gfx906, gfx908, gfx90a, gfx1030-gfx1036"
                             : "nothing (ROCm 5 or newer is needed)";
}

uint32_t hip_arch_matrix(const char *arch)
{
    if (!strcmp(arch, "gfx908")) return XATTN_MATRIX_F16; /* bf16_1k is gfx90a and later */
    if (!strcmp(arch, "gfx90a") || !strncmp(arch, "gfx94", 5) || !strncmp(arch, "gfx11", 5))
        return XATTN_MATRIX_F16 | XATTN_MATRIX_BF16;
    return 0;
}

/* ---- sources and options ---------------------------------------------------- */

const hip_source *hip_source_find(const char *name)
{
    for (size_t i = 0; i < xattn_hip_sources_count; i++)
        if (!strcmp(xattn_hip_sources[i].name, name)) return &xattn_hip_sources[i];
    return NULL;
}

const hip_source *hip_sources(size_t *count)
{
    *count = xattn_hip_sources_count;
    return xattn_hip_sources;
}

/* ---- compiling -------------------------------------------------------------- */

/* The program log, malloc'd ("" when there is none); NULL without memory. */
static char *program_log(const hip_api *hip, hiprtcProgram prog)
{
    size_t len = 0;
    if (hip->rtcGetProgramLogSize(prog, &len) != HIPRTC_SUCCESS) len = 0;
    char *log = malloc(len + 1);
    if (!log) return NULL;
    if (len && hip->rtcGetProgramLog(prog, log) != HIPRTC_SUCCESS) len = 0;
    log[len] = '\0';
    return log;
}

static xattn_status compile_serial(const hip_api *hip, const char *arch, const char *name,
                                   const char *options, void **code, size_t *size,
                                   char **log_out)
{
    *code = NULL;
    *size = 0;
    if (log_out) *log_out = NULL;
    const hip_source *src = hip_source_find(name);
    if (!src) return xattn_error(XATTN_ERR_INTERNAL, "hip: no kernel source %s.hip", name);
    if (!hip_arch_allowed(hip->major, arch))
        return xattn_error(XATTN_ERR_UNSUPPORTED,
                           "hip: hiprtc of HIP %d.%d does not compile for %s (it compiles for "
                           "%s); gfx942 and gfx11xx need ROCm 6 or newer",
                           hip->major, hip->minor, arch, hip_arch_list(hip->major));

    /* Split the variant's options on spaces into hiprtc's argument list. */
    char *copy = strdup(options ? options : "");
    if (!copy) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "hip: out of memory");
    char arch_opt[64];
    snprintf(arch_opt, sizeof arch_opt, "--offload-arch=%s", arch);
    const char *argv[MAX_OPTIONS + 4];
    int argc = 0;
    argv[argc++] = arch_opt;
    argv[argc++] = "-O3";
    argv[argc++] = "-std=c++17";
    argv[argc++] = "-DXATTN_HIP=1";
    for (char *save = NULL, *tok = strtok_r(copy, " ", &save); tok;
         tok = strtok_r(NULL, " ", &save)) {
        if (argc == (int)XATTN_ARRAY_SIZE(argv)) {
            free(copy);
            return xattn_error(XATTN_ERR_INTERNAL, "hip: more than %d options for %s.hip",
                               MAX_OPTIONS, name);
        }
        argv[argc++] = tok;
    }

    char prog_name[64];
    snprintf(prog_name, sizeof prog_name, "%s.hip", name);
    hiprtcProgram prog = NULL;
    hiprtcResult r = hip->rtcCreateProgram(&prog, src->text, prog_name, 0, NULL, NULL);
    if (r != HIPRTC_SUCCESS) {
        free(copy);
        return hip_rtc_fail(hip, r, "hiprtcCreateProgram");
    }
    r = hip->rtcCompileProgram(prog, argc, argv);
    free(copy);
    char *log = program_log(hip, prog);
    xattn_status st = XATTN_OK;
    if (r != HIPRTC_SUCCESS) {
        if (log) xattn_log(XATTN_LOG_DEBUG, "hip: hiprtc log of %s:\n%s", prog_name, log);
        st = xattn_error(r == HIPRTC_ERROR_COMPILATION ? XATTN_ERR_COMPILE : XATTN_ERR_INTERNAL,
                         "hip: compiling kernels/%s for %s with '%s' failed (%s): %.*s",
                         prog_name, arch, options ? options : "", hip->rtcGetErrorString(r),
                         LOG_QUOTE, log && *log ? log : "(no log)");
    } else {
        size_t n = 0;
        void *bin = NULL;
        if ((r = hip->rtcGetCodeSize(prog, &n)) != HIPRTC_SUCCESS)
            st = hip_rtc_fail(hip, r, "hiprtcGetCodeSize");
        else if (n == 0 || n > MAX_CODE)
            st = xattn_error(XATTN_ERR_COMPILE, "hip: hiprtc gave a code object of %zu bytes "
                             "for %s", n, prog_name);
        else if (!(bin = malloc(n)))
            st = xattn_error(XATTN_ERR_OUT_OF_MEMORY, "hip: out of memory");
        else if ((r = hip->rtcGetCode(prog, bin)) != HIPRTC_SUCCESS)
            st = hip_rtc_fail(hip, r, "hiprtcGetCode");
        if (st == XATTN_OK) {
            *code = bin;
            *size = n;
        } else {
            free(bin);
        }
    }
    hip->rtcDestroyProgram(&prog);
    if (st == XATTN_OK && log_out) *log_out = log;
    else free(log);
    return st;
}

/* hiprtc compiles one program at a time per process anyway (a lock inside
 * it), and ROCm 5.2's is not safe to call from two threads at once: two
 * compiles on two threads of one process corrupted its heap (a double free
 * in tests/hip's compile test). One lock over every hiprtc call, for all
 * devices and contexts of the process. */
static pthread_mutex_t rtc_lock = PTHREAD_MUTEX_INITIALIZER;

xattn_status hip_compile(const hip_api *hip, const char *arch, const char *name,
                         const char *options, void **code, size_t *size, char **log_out)
{
    pthread_mutex_lock(&rtc_lock);
    xattn_status st = compile_serial(hip, arch, name, options, code, size, log_out);
    pthread_mutex_unlock(&rtc_lock);
    return st;
}

/* ---- modules: memory and disk caches ---------------------------------------- */

static xattn_status load_module(xattn_device *dev, const char *name, const char *options,
                                uint64_t hash, const char *key, hipModule_t *out)
{
    char path[PATH_MAX];
    int have_path = xattn_disk_cache_path(CACHE_PREFIX, hash, path, sizeof path) == 0;
    size_t n = 0;
    void *bin = have_path ? xattn_disk_cache_load(path, CACHE_KIND, key, MAX_CODE, &n) : NULL;
    if (bin) {
        hipError_t r = dev->hip->ModuleLoadData(out, bin);
        free(bin);
        if (r == hipSuccess) return XATTN_OK;
        xattn_log(XATTN_LOG_INFO, "hip: cached code object of %s.hip rejected by the runtime "
                  "(%d); compiling", name, (int)r);
    }
    XATTN_TRY(hip_compile(dev->hip, dev->arch, name, options, &bin, &n, NULL));
    hipError_t r = dev->hip->ModuleLoadData(out, bin);
    if (r == hipSuccess && have_path)
        (void)xattn_disk_cache_store(path, CACHE_KIND, key, bin, n);
    free(bin);
    if (r != hipSuccess) return hip_fail(dev->hip, r, "hipModuleLoadData");
    return XATTN_OK;
}

xattn_status hip_module_get(xattn_device *dev, const char *name, const char *options,
                            hipModule_t *out)
{
    const hip_source *src = hip_source_find(name);
    if (!src) return xattn_error(XATTN_ERR_INTERNAL, "hip: no kernel source %s.hip", name);
    /* The key names everything the code object depends on: the full
     * gcnArchName (sramecc/xnack modes change the code), the runtime and
     * hiprtc versions, and the cache format's version. */
    char key[HIP_OPTIONS_SIZE + 512];
    int len = snprintf(key, sizeof key, "%s|%016llx|%s|%s|hip %d|hiprtc %d.%d|cache %d", name,
                       (unsigned long long)xattn_fnv1a64(XATTN_FNV1A64_BASIS, src->text,
                                                         strlen(src->text)),
                       options, dev->arch_full, dev->hip->runtime_version, dev->hip->rtc_major,
                       dev->hip->rtc_minor, XATTN_DISK_CACHE_VERSION);
    if (len < 0 || (size_t)len >= sizeof key)
        return xattn_error(XATTN_ERR_INTERNAL, "hip: options of %s.hip too long", name);
    uint64_t hash = xattn_fnv1a64(XATTN_FNV1A64_BASIS, key, (size_t)len);

    /* One lock over lookup and build: two plans wanting the same module
     * compile it once. */
    pthread_mutex_lock(&dev->lock);
    for (hip_module_entry *e = dev->modules; e; e = e->next)
        if (e->hash == hash && !strcmp(e->key, key)) {
            *out = e->module;
            pthread_mutex_unlock(&dev->lock);
            return XATTN_OK;
        }
    xattn_status st = XATTN_OK;
    hip_module_entry *e = calloc(1, sizeof *e);
    if (!e || !(e->key = strdup(key))) st = xattn_error(XATTN_ERR_OUT_OF_MEMORY, "hip: out of memory");
    if (st == XATTN_OK) st = load_module(dev, name, options, hash, key, &e->module);
    if (st == XATTN_OK) {
        xattn_log(XATTN_LOG_DEBUG, "hip: loaded %s.hip for %s with '%s'", name, dev->arch_full,
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

void hip_modules_release(xattn_device *dev)
{
    hip_module_entry *e = dev->modules;
    while (e) {
        hip_module_entry *next = e->next;
        dev->hip->ModuleUnload(e->module);
        free(e->key);
        free(e);
        e = next;
    }
    dev->modules = NULL;
}

/* ---- kernels and launches --------------------------------------------------- */

xattn_status hip_kernel_get(xattn_device *dev, hipModule_t m, const char *name, size_t lds,
                            unsigned threads, hip_kernel *out)
{
    const hip_api *hip = dev->hip;
    memset(out, 0, sizeof *out);
    hipFunction_t fn = NULL;
    hipError_t r = hip->ModuleGetFunction(&fn, m, name);
    if (r == hipErrorNotFound)
        return xattn_error(XATTN_ERR_INTERNAL, "hip: no kernel %s in its module", name);
    if (r != hipSuccess) return hip_fail(hip, r, "hipModuleGetFunction");
    int static_lds = 0, max_threads = 0, regs = 0, scratch = 0;
    HIP_TRY(hip, hip->FuncGetAttribute(&static_lds, HIP_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, fn));
    HIP_TRY(hip, hip->FuncGetAttribute(&max_threads, HIP_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, fn));
    /* Registers and scratch (private segment) only inform: tests/hip fails
     * a hot kernel that spills, here it still runs. */
    if (hip->FuncGetAttribute(&regs, HIP_FUNC_ATTRIBUTE_NUM_REGS, fn) != hipSuccess) regs = -1;
    if (hip->FuncGetAttribute(&scratch, HIP_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES, fn) != hipSuccess)
        scratch = -1;
    xattn_log(XATTN_LOG_DEBUG, "hip: kernel %s on %s: %d registers, %d bytes of scratch, %d + %zu "
              "bytes of LDS, %u threads (at most %d)", name, dev->arch_full, regs, scratch,
              static_lds, lds, threads, max_threads);
    if (scratch > 0)
        xattn_log(XATTN_LOG_INFO, "hip: kernel %s uses %d bytes of scratch per thread on %s "
                  "(register spills: slower)", name, scratch, dev->arch_full);
    if (lds + (size_t)static_lds > (size_t)dev->lds_bytes)
        return xattn_error(XATTN_ERR_UNSUPPORTED,
                           "hip: kernel %s needs %zu bytes of LDS, %s allows %d", name,
                           lds + (size_t)static_lds, dev->name, dev->lds_bytes);
    if (threads == 0 || (max_threads > 0 && (int)threads > max_threads))
        return xattn_error(XATTN_ERR_UNSUPPORTED,
                           "hip: kernel %s launched with %u threads per block, it allows %d on %s",
                           name, threads, max_threads, dev->name);
    out->fn = fn;
    out->lds = (unsigned)lds;
    out->threads = threads;
    return XATTN_OK;
}

xattn_status hip_variants_load(xattn_device *dev, const hip_variant *v, int n,
                               hip_kernel kernels[][HIP_MAX_KERNELS])
{
    for (int i = 0; i < n; i++) {
        hipModule_t m = NULL;
        XATTN_TRY(hip_module_get(dev, v[i].source, v[i].options, &m));
        for (int j = 0; j < HIP_MAX_KERNELS; j++) {
            memset(&kernels[i][j], 0, sizeof kernels[i][j]);
            if (!v[i].kernels[j]) break;
            XATTN_TRY(hip_kernel_get(dev, m, v[i].kernels[j], v[i].lds_bytes,
                                     (unsigned)v[i].threads, &kernels[i][j]));
        }
    }
    return XATTN_OK;
}

xattn_status hip_launch(xattn_device *dev, const hip_kernel *k, unsigned gx, unsigned gy,
                        unsigned gz, void **args)
{
    if (gx == 0 || gy == 0 || gz == 0) return XATTN_OK; /* nothing to do */
    if (!k->fn) return xattn_error(XATTN_ERR_INTERNAL, "hip: launch of a kernel not loaded");
    /* HIP counts the grid in threads, 2^32 - 1 of them per dimension. */
    if (gx > INT32_MAX || gy > MAX_GRID_YZ || gz > MAX_GRID_YZ ||
        (uint64_t)gx * k->threads > UINT32_MAX)
        return xattn_error(XATTN_ERR_UNSUPPORTED, "hip: a grid of %u x %u x %u blocks of %u "
                           "threads is over the device's limits", gx, gy, gz, k->threads);
    hipError_t r = dev->hip->ModuleLaunchKernel(k->fn, gx, gy, gz, k->threads, 1, 1, k->lds,
                                                dev->stream, args, NULL);
    if (r != hipSuccess) return hip_fail(dev->hip, r, "hipModuleLaunchKernel");
    return XATTN_OK;
}
