/* Backend registry and module loader. The table below is the one list of
 * backends; GPU backends are modules loaded with dlopen on first use. */
#include "registry.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "module_notes.h"
#include "module_check.h"

#ifndef XATTN_MODULE_DIR
#  define XATTN_MODULE_DIR "/usr/local/lib/xattn"
#endif

enum { REASON_BYTES = 512 };

typedef struct registry_entry {
    xattn_backend_kind kind;
    const char *name;
    xattn_backend_entry_fn builtin; /* NULL: a module libxattn-<name>.so */
} registry_entry;

static const registry_entry registry[] = {
    {XATTN_BACKEND_CPU, "cpu", xattn_cpu_backend_entry},
    {XATTN_BACKEND_OPENCL, "opencl", NULL},
    {XATTN_BACKEND_CUDA, "cuda", NULL},
    {XATTN_BACKEND_HIP, "hip", NULL},
};

static const registry_entry *registry_find(xattn_backend_kind kind)
{
    for (size_t i = 0; i < XATTN_ARRAY_SIZE(registry); i++)
        if (registry[i].kind == kind) return &registry[i];
    return NULL;
}

const char *xattn_backend_kind_name(xattn_backend_kind kind)
{
    if (kind == XATTN_BACKEND_AUTO) return "auto";
    const registry_entry *e = registry_find(kind);
    return e ? e->name : NULL;
}

void xattn_backend_values(char *buf, size_t size)
{
    if (!size) return;
    size_t len = (size_t)snprintf(buf, size, "auto");
    for (size_t i = 0; i < XATTN_ARRAY_SIZE(registry) && len < size; i++)
        len += (size_t)snprintf(buf + len, size - len, "|%s", registry[i].name);
}

int xattn_backend_kind_parse(const char *name, xattn_backend_kind *kind)
{
    if (!name) return -1;
    if (!strcmp(name, "auto")) {
        *kind = XATTN_BACKEND_AUTO;
        return 0;
    }
    for (size_t i = 0; i < XATTN_ARRAY_SIZE(registry); i++)
        if (!strcmp(name, registry[i].name)) {
            *kind = registry[i].kind;
            return 0;
        }
    return -1;
}

const xattn_backend_vtable *xattn_module_load(const char *path, char *reason,
                                              size_t reason_size)
{
    struct stat st;
    if (!path || stat(path, &st) != 0) {
        snprintf(reason, reason_size, "module %s not found", path ? path : "(null)");
        return NULL;
    }
    if (xattn_module_file_check(path, reason, reason_size) != 0) return NULL;
    /* RTLD_LOCAL keeps one module's vendor symbols away from another's.
     * Modules are never unloaded: plans may hold code from them. */
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char *why = dlerror();
        snprintf(reason, reason_size, "module %s cannot be loaded: %s", path,
                 why ? why : "unknown dlopen error");
        return NULL;
    }
    void *sym = dlsym(handle, XATTN_BACKEND_ENTRY_SYMBOL);
    if (!sym) {
        snprintf(reason, reason_size, "module %s has no entry point %s", path,
                 XATTN_BACKEND_ENTRY_SYMBOL);
        dlclose(handle);
        return NULL;
    }
    xattn_backend_entry_fn entry;
    memcpy(&entry, &sym, sizeof entry); /* object → function pointer, POSIX-style */
    const xattn_backend_vtable *vt = entry();
    if (!vt) {
        snprintf(reason, reason_size, "module %s returned no backend table", path);
        dlclose(handle);
        return NULL;
    }
    if (vt->abi_version != XATTN_BACKEND_ABI_VERSION) {
        snprintf(reason, reason_size,
                 "module %s has backend ABI version %u, this libxattn needs %u "
                 "(rebuild the module with this libxattn)",
                 path, vt->abi_version, XATTN_BACKEND_ABI_VERSION);
        dlclose(handle);
        return NULL;
    }
    return vt;
}

/* Directory holding libxattn itself, for running from a build tree. */
static int self_dir(char *out, size_t size)
{
    Dl_info info;
    if (!dladdr((void *)xattn_module_load, &info) || !info.dli_fname) return -1;
    const char *slash = strrchr(info.dli_fname, '/');
    if (!slash) return -1;
    size_t n = (size_t)(slash - info.dli_fname);
    if (n + 1 > size) return -1;
    memcpy(out, info.dli_fname, n);
    out[n] = '\0';
    return 0;
}

/* Try dir/file: 1 and the result in *vt when the file exists (loaded or
 * rejected, with reason), 0 when it does not (dir appended to tried). */
static int try_dir(const char *dir, const char *file, const xattn_backend_vtable **vt,
                   char *tried, size_t tried_size, char *reason, size_t reason_size)
{
    char path[PATH_MAX];
    struct stat st;
    if (snprintf(path, sizeof path, "%s/%s", dir, file) < (int)sizeof path &&
        stat(path, &st) == 0) {
        *vt = xattn_module_load(path, reason, reason_size);
        return 1;
    }
    size_t len = strlen(tried);
    if (len < tried_size) snprintf(tried + len, tried_size - len, "%s%s", len ? ", " : "", dir);
    return 0;
}

const xattn_backend_vtable *xattn_backend_get(xattn_backend_kind kind, char *reason,
                                              size_t reason_size)
{
    const registry_entry *e = registry_find(kind);
    if (!e) {
        snprintf(reason, reason_size, "no backend with kind %d", (int)kind);
        return NULL;
    }
    if (e->builtin) return e->builtin();

    char file[64];
    snprintf(file, sizeof file, "libxattn-%s.so", e->name);
    char tried[1024] = "";
    const xattn_backend_vtable *vt = NULL;
    const char *env_dir = getenv("XATTN_BACKEND_DIR");
    if (env_dir && *env_dir) {
        /* An explicit directory is the only place looked at. */
        if (try_dir(env_dir, file, &vt, tried, sizeof tried, reason, reason_size)) return vt;
    } else {
        /* Beside the libxattn that is running first, so an install whose
         * prefix moved (or a build tree) never loads another copy's module:
         * <libdir>/xattn/ (installed), then backends/<name>/ (a build tree),
         * then the configured install directory. */
        char dir[PATH_MAX];
        if (self_dir(dir, sizeof dir) == 0) {
            size_t len = strlen(dir);
            if (snprintf(dir + len, sizeof dir - len, "/xattn") < (int)(sizeof dir - len) &&
                try_dir(dir, file, &vt, tried, sizeof tried, reason, reason_size))
                return vt;
            if (snprintf(dir + len, sizeof dir - len, "/backends/%s", e->name) <
                    (int)(sizeof dir - len) &&
                try_dir(dir, file, &vt, tried, sizeof tried, reason, reason_size))
                return vt;
        }
        if (try_dir(XATTN_MODULE_DIR, file, &vt, tried, sizeof tried, reason, reason_size))
            return vt;
    }
    /* A module this build never made is explained by why, not by where. */
    const char *note = xattn_module_note(e->name);
    snprintf(reason, reason_size, "%s%smodule %s not found in %s%s%s", note ? note : "",
             note ? " (" : "", file, tried, env_dir && *env_dir ? " (XATTN_BACKEND_DIR)" : "",
             note ? ")" : "");
    return NULL;
}

xattn_status xattn_backend_probe(xattn_backend_kind kind, int32_t *num_devices,
                                 char *reason, size_t reason_size)
{
    xattn_error_clear();
    if (!num_devices)
        return xattn_error(XATTN_ERR_INVALID_ARGUMENT, "num_devices: must not be NULL");
    if (!reason && reason_size)
        return xattn_error(XATTN_ERR_INVALID_ARGUMENT,
                           "reason: NULL with reason_size %zu", reason_size);
    if (!registry_find(kind))
        return xattn_error(XATTN_ERR_INVALID_ARGUMENT,
                           "kind: %d is not a concrete backend (cpu|opencl|cuda|hip)",
                           (int)kind);
    char local[REASON_BYTES];
    const xattn_backend_vtable *vt = xattn_backend_get(kind, local, sizeof local);
    int32_t n = 0;
    if (vt) {
        local[0] = '\0';
        n = vt->probe(local, sizeof local);
        if (n < 0) n = 0;
    }
    *num_devices = n;
    if (reason_size) snprintf(reason, reason_size, "%s", local);
    return XATTN_OK;
}
