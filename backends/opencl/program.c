/* Programs: the embedded kernel sources specialised with a plan's -D
 * options, compiled once per (source, options, device, driver) and cached
 * in memory (per device) and on disk (XATTN_CACHE_DIR). Also kernels and
 * launches. */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "disk_cache.h"
#include "ocl.h"

/* From the generated ocl_sources.c (kernels/, prelude in front). */
extern const ocl_source xattn_ocl_sources[];
extern const size_t xattn_ocl_sources_count;

/* Cache files are <dir>/opencl-<hash of the key>.bin, of kind "opencl-program". */
#define CACHE_PREFIX "opencl"
#define CACHE_KIND "opencl-program"

enum {
    /* Build-log characters quoted in an error message; the full log goes
     * to the debug log. */
    LOG_QUOTE = 600,
    MAX_BINARY = 256 << 20,
};

struct ocl_program_entry {
    ocl_program_entry *next;
    uint64_t hash;
    char *key;
    cl_program program;
};

const ocl_source *ocl_source_find(const char *name)
{
    for (size_t i = 0; i < xattn_ocl_sources_count; i++)
        if (!strcmp(xattn_ocl_sources[i].name, name)) return &xattn_ocl_sources[i];
    return NULL;
}

/* ---- disk cache ------------------------------------------------------------- */

/* The binary cached for key, or NULL (malloc'd; *size set). The file is
 * checked whole (common/disk_cache.h) before any byte reaches the driver:
 * a damaged binary can crash clCreateProgramWithBinary. */
static unsigned char *cache_load(uint64_t hash, const char *key, size_t *size)
{
    char path[PATH_MAX];
    if (xattn_disk_cache_path(CACHE_PREFIX, hash, path, sizeof path) != 0) return NULL;
    return xattn_disk_cache_load(path, CACHE_KIND, key, MAX_BINARY, size);
}

/* Write the program's binary for key; failures only cost the next start a
 * compile, so they are logged at debug and otherwise ignored. */
static void cache_store(xattn_device *dev, cl_program prog, uint64_t hash, const char *key)
{
    char path[PATH_MAX];
    if (xattn_disk_cache_path(CACHE_PREFIX, hash, path, sizeof path) != 0) return;
    size_t bin_len = 0;
    if (dev->cl->GetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof bin_len, &bin_len, NULL) !=
            CL_SUCCESS ||
        bin_len == 0 || bin_len > MAX_BINARY)
        return;
    unsigned char *bin = malloc(bin_len);
    if (!bin) return;
    if (dev->cl->GetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof bin, &bin, NULL) ==
        CL_SUCCESS)
        (void)xattn_disk_cache_store(path, CACHE_KIND, key, bin, bin_len);
    free(bin);
}

/* ---- building --------------------------------------------------------------- */

static xattn_status build_failed(xattn_device *dev, cl_program prog, cl_int err,
                                 const char *name, const char *options)
{
    size_t len = 0;
    char *log = NULL;
    if (dev->cl->GetProgramBuildInfo(prog, dev->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &len) ==
            CL_SUCCESS &&
        len > 0 && (log = malloc(len + 1)) != NULL) {
        if (dev->cl->GetProgramBuildInfo(prog, dev->device, CL_PROGRAM_BUILD_LOG, len, log,
                                         NULL) != CL_SUCCESS)
            len = 0;
        log[len] = '\0';
    }
    if (log) xattn_log(XATTN_LOG_DEBUG, "opencl: build log of %s.cl:\n%s", name, log);
    xattn_status st = xattn_error(XATTN_ERR_COMPILE,
                                  "opencl: building kernels/%s.cl with '%s' failed (%s): %.*s",
                                  name, options, ocl_status_name(err), LOG_QUOTE,
                                  log ? log : "(no build log)");
    free(log);
    return st;
}

static xattn_status build(xattn_device *dev, const ocl_source *src, const char *options,
                          uint64_t hash, const char *key, cl_program *out)
{
    const ocl_api *cl = dev->cl;
    cl_int err = CL_SUCCESS;
    size_t bin_len = 0;
    unsigned char *bin = cache_load(hash, key, &bin_len);
    if (bin) {
        const unsigned char *b = bin;
        cl_int bin_status = CL_SUCCESS;
        cl_program prog = cl->CreateProgramWithBinary(dev->context, 1, &dev->device, &bin_len,
                                                      &b, &bin_status, &err);
        free(bin);
        if (prog && bin_status == CL_SUCCESS &&
            cl->BuildProgram(prog, 1, &dev->device, options, NULL, NULL) == CL_SUCCESS) {
            *out = prog;
            return XATTN_OK;
        }
        if (prog) cl->ReleaseProgram(prog);
        xattn_log(XATTN_LOG_DEBUG, "opencl: cached binary of %s.cl rejected; compiling",
                  src->name);
    }
    const char *text = src->text;
    cl_program prog = cl->CreateProgramWithSource(dev->context, 1, &text, NULL, &err);
    if (!prog) return ocl_fail(err, "clCreateProgramWithSource");
    err = cl->BuildProgram(prog, 1, &dev->device, options, NULL, NULL);
    if (err != CL_SUCCESS) {
        xattn_status st = build_failed(dev, prog, err, src->name, options);
        cl->ReleaseProgram(prog);
        return st;
    }
    cache_store(dev, prog, hash, key);
    *out = prog;
    return XATTN_OK;
}

xattn_status ocl_program_get(xattn_device *dev, const char *name, const char *options,
                             cl_program *out)
{
    const ocl_source *src = ocl_source_find(name);
    if (!src) return xattn_error(XATTN_ERR_INTERNAL, "opencl: no kernel source %s.cl", name);
    /* The key names everything the binary depends on. */
    char src_hash[24];
    snprintf(src_hash, sizeof src_hash, "%016llx",
             (unsigned long long)xattn_fnv1a64(XATTN_FNV1A64_BASIS, src->text,
                                               strlen(src->text)));
    size_t key_size = strlen(name) + strlen(options) + strlen(dev->device_name) +
                      strlen(dev->device_version) + strlen(dev->driver_version) +
                      strlen(dev->platform_name) + sizeof src_hash + 32;
    char *key = malloc(key_size);
    if (!key) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "opencl: out of memory");
    /* The cache format's version is in the key, so a file of another format
     * has another name and versions side by side do not overwrite each
     * other's files. */
    snprintf(key, key_size, "%s|%s|%s|%s|%s|%s|%s|cache %d", name, src_hash, options,
             dev->platform_name, dev->device_name, dev->device_version, dev->driver_version,
             XATTN_DISK_CACHE_VERSION);
    uint64_t hash = xattn_fnv1a64(XATTN_FNV1A64_BASIS, key, strlen(key));

    /* One lock over lookup and build: two plans wanting the same program
     * build it once. */
    pthread_mutex_lock(&dev->lock);
    for (ocl_program_entry *e = dev->programs; e; e = e->next)
        if (e->hash == hash && !strcmp(e->key, key)) {
            *out = e->program;
            pthread_mutex_unlock(&dev->lock);
            free(key);
            return XATTN_OK;
        }
    xattn_status st = XATTN_OK;
    ocl_program_entry *e = calloc(1, sizeof *e);
    if (!e) st = xattn_error(XATTN_ERR_OUT_OF_MEMORY, "opencl: out of memory");
    if (st == XATTN_OK) st = build(dev, src, options, hash, key, &e->program);
    if (st == XATTN_OK) {
        xattn_log(XATTN_LOG_DEBUG, "opencl: built %s.cl with '%s'", name, options);
        e->hash = hash;
        e->key = key;
        e->next = dev->programs;
        dev->programs = e;
        *out = e->program;
        key = NULL;
    } else {
        free(e);
    }
    pthread_mutex_unlock(&dev->lock);
    free(key);
    return st;
}

void ocl_programs_release(xattn_device *dev)
{
    ocl_program_entry *e = dev->programs;
    while (e) {
        ocl_program_entry *next = e->next;
        dev->cl->ReleaseProgram(e->program);
        free(e->key);
        free(e);
        e = next;
    }
    dev->programs = NULL;
}

/* ---- kernels ---------------------------------------------------------------- */

xattn_status ocl_kernel_create(xattn_device *dev, cl_program program, const char *name,
                               ocl_kernel *out)
{
    memset(out, 0, sizeof *out);
    cl_int err = CL_SUCCESS;
    cl_kernel k = dev->cl->CreateKernel(program, name, &err);
    if (!k) {
        if (err == CL_INVALID_KERNEL_NAME)
            return xattn_error(XATTN_ERR_INTERNAL, "opencl: no kernel %s in its program", name);
        return ocl_fail(err, "clCreateKernel");
    }
    size_t wg = 0;
    if (dev->cl->GetKernelWorkGroupInfo(k, dev->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof wg, &wg,
                                        NULL) != CL_SUCCESS)
        wg = dev->max_group_size;
    out->kernel = k;
    out->max_group_size = wg;
    pthread_mutex_init(&out->lock, NULL);
    return XATTN_OK;
}

void ocl_kernel_release(xattn_device *dev, ocl_kernel *k)
{
    if (!k || !k->kernel) return;
    dev->cl->ReleaseKernel(k->kernel);
    pthread_mutex_destroy(&k->lock);
    memset(k, 0, sizeof *k);
}

xattn_status ocl_launch(xattn_device *dev, ocl_kernel *k, int nargs, const ocl_arg *args,
                        cl_uint dims, const size_t *global, const size_t *local)
{
    for (cl_uint i = 0; i < dims; i++)
        if (global[i] == 0) return XATTN_OK; /* nothing to do */
    const ocl_api *cl = dev->cl;
    cl_int err = CL_SUCCESS;
    const char *what = "clSetKernelArg";
    pthread_mutex_lock(&k->lock);
    for (int i = 0; i < nargs && err == CL_SUCCESS; i++)
        err = cl->SetKernelArg(k->kernel, (cl_uint)i, args[i].size, args[i].value);
    if (err == CL_SUCCESS) {
        what = "clEnqueueNDRangeKernel";
        err = cl->EnqueueNDRangeKernel(dev->queue, k->kernel, dims, NULL, global, local, 0, NULL,
                                       NULL);
    }
    pthread_mutex_unlock(&k->lock);
    if (err != CL_SUCCESS) return ocl_fail(err, what);
    return XATTN_OK;
}
