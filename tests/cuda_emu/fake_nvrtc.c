/* A fake NVRTC for tests without a GPU: "compiles" a kernel source by
 * running the host C++ compiler on it with xemu.h force-included, and
 * hands back the shared object as the "cubin" (an "XEMUSO" header, the
 * size, the bytes), which the fake driver loads. Only -D options reach the
 * compiler; architecture and ptxas options are accepted and ignored. The
 * compiler and xemu.h are configured at build time (XEMU_CXX,
 * XEMU_INCLUDE), and the environment may override both. */
#include <nvrtc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

typedef struct fake_program {
    char *src;
    char *log;
    unsigned char *bin;
    size_t bin_size;
} fake_program;

static char *read_file(const char *path, size_t *size);

/* Major 99 is never mistaken for a real NVRTC in the module's cache keys;
 * the minor is a hash of xemu.h, xemu_core.h and the compiler's path, so a changed
 * emulator does not reuse modules built with the old one. */
EXPORT nvrtcResult nvrtcVersion(int *major, int *minor)
{
    const char *cxx = getenv("XEMU_CXX") ? getenv("XEMU_CXX") : XEMU_CXX;
    const char *inc = getenv("XEMU_INCLUDE") ? getenv("XEMU_INCLUDE") : XEMU_INCLUDE;
    uint32_t h = 2166136261u;
    static const char *const headers[] = {"xemu.h", "xemu_core.h"};
    for (int f = 0; f < 2; f++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", inc, headers[f]);
        size_t n = 0;
        char *text = read_file(path, &n);
        for (size_t i = 0; text && i < n; i++) h = (h ^ (unsigned char)text[i]) * 16777619u;
        free(text);
    }
    for (const char *c = cxx; *c; c++) h = (h ^ (unsigned char)*c) * 16777619u;
    *major = 99;
    *minor = (int)(h % 1000000u);
    return NVRTC_SUCCESS;
}

EXPORT const char *nvrtcGetErrorString(nvrtcResult r)
{
    switch (r) {
    case NVRTC_SUCCESS: return "NVRTC_SUCCESS";
    case NVRTC_ERROR_OUT_OF_MEMORY: return "NVRTC_ERROR_OUT_OF_MEMORY";
    case NVRTC_ERROR_COMPILATION: return "NVRTC_ERROR_COMPILATION";
    case NVRTC_ERROR_INVALID_INPUT: return "NVRTC_ERROR_INVALID_INPUT";
    default: return "NVRTC_ERROR (xemu)";
    }
}

EXPORT nvrtcResult nvrtcCreateProgram(nvrtcProgram *prog, const char *src, const char *name,
                                      int nh, const char *const *h, const char *const *hn)
{
    (void)name;
    (void)h;
    (void)hn;
    if (nh) return NVRTC_ERROR_INVALID_INPUT;
    fake_program *p = calloc(1, sizeof *p);
    if (!p || !(p->src = strdup(src))) {
        free(p);
        return NVRTC_ERROR_OUT_OF_MEMORY;
    }
    *prog = (nvrtcProgram)p;
    return NVRTC_SUCCESS;
}

EXPORT nvrtcResult nvrtcDestroyProgram(nvrtcProgram *prog)
{
    fake_program *p = (fake_program *)*prog;
    if (p) {
        free(p->src);
        free(p->log);
        free(p->bin);
        free(p);
    }
    *prog = NULL;
    return NVRTC_SUCCESS;
}

static char *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 65536 > cap) {
            char *nb = realloc(buf, cap = n + 65536 + cap);
            if (!nb) break;
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    fclose(f);
    *size = n;
    return buf;
}

EXPORT nvrtcResult nvrtcCompileProgram(nvrtcProgram prog, int n, const char *const *opts)
{
    fake_program *p = (fake_program *)prog;
    const char *cxx = getenv("XEMU_CXX") ? getenv("XEMU_CXX") : XEMU_CXX;
    const char *inc = getenv("XEMU_INCLUDE") ? getenv("XEMU_INCLUDE") : XEMU_INCLUDE;
    char dir[] = "/tmp/xemu-nvrtc-XXXXXX";
    if (!mkdtemp(dir)) return NVRTC_ERROR_INTERNAL_ERROR;
    char src[64], so[64], logp[64];
    snprintf(src, sizeof src, "%s/k.cpp", dir);
    snprintf(so, sizeof so, "%s/k.so", dir);
    snprintf(logp, sizeof logp, "%s/log", dir);
    FILE *f = fopen(src, "w");
    if (!f) return NVRTC_ERROR_INTERNAL_ERROR;
    fputs(p->src, f);
    fclose(f);
    size_t cap = 4096;
    for (int i = 0; i < n; i++) cap += strlen(opts[i]) + 4;
    char *cmd = malloc(cap);
    if (!cmd) return NVRTC_ERROR_OUT_OF_MEMORY;
    int len = snprintf(cmd, cap, "%s -std=c++17 -O1 -g0 -shared -fPIC -w -include %s/xemu.h "
                       "-DXATTN_CUDA_EMU=1", cxx, inc);
    for (int i = 0; i < n; i++)
        if (!strncmp(opts[i], "-D", 2) && !strpbrk(opts[i], "'\"\\$`;&|<>() "))
            len += snprintf(cmd + len, cap - (size_t)len, " '%s'", opts[i]);
    snprintf(cmd + len, cap - (size_t)len, " -o %s %s > %s 2>&1", so, src, logp);
    int rc = system(cmd);
    free(cmd);
    size_t log_size = 0;
    char *raw = read_file(logp, &log_size);
    free(p->log);
    p->log = malloc(log_size + 1);
    if (p->log) {
        if (raw) memcpy(p->log, raw, log_size);
        p->log[log_size] = '\0';
    }
    free(raw);
    size_t bin_size = 0;
    char *bin = rc == 0 ? read_file(so, &bin_size) : NULL;
    unlink(src);
    unlink(so);
    unlink(logp);
    rmdir(dir);
    if (!bin) return NVRTC_ERROR_COMPILATION;
    free(p->bin);
    p->bin = malloc(bin_size + 16);
    if (!p->bin) {
        free(bin);
        return NVRTC_ERROR_OUT_OF_MEMORY;
    }
    memcpy(p->bin, "XEMUSO\0\0", 8);
    uint64_t n64 = bin_size;
    memcpy(p->bin + 8, &n64, 8);
    memcpy(p->bin + 16, bin, bin_size);
    p->bin_size = bin_size + 16;
    free(bin);
    return NVRTC_SUCCESS;
}

EXPORT nvrtcResult nvrtcGetProgramLogSize(nvrtcProgram prog, size_t *size)
{
    fake_program *p = (fake_program *)prog;
    *size = (p->log ? strlen(p->log) : 0) + 1;
    return NVRTC_SUCCESS;
}

EXPORT nvrtcResult nvrtcGetProgramLog(nvrtcProgram prog, char *log)
{
    fake_program *p = (fake_program *)prog;
    strcpy(log, p->log ? p->log : "");
    return NVRTC_SUCCESS;
}

EXPORT nvrtcResult nvrtcGetCUBINSize(nvrtcProgram prog, size_t *size)
{
    fake_program *p = (fake_program *)prog;
    if (!p->bin) return NVRTC_ERROR_INVALID_PROGRAM;
    *size = p->bin_size;
    return NVRTC_SUCCESS;
}

EXPORT nvrtcResult nvrtcGetCUBIN(nvrtcProgram prog, char *out)
{
    fake_program *p = (fake_program *)prog;
    if (!p->bin) return NVRTC_ERROR_INVALID_PROGRAM;
    memcpy(out, p->bin, p->bin_size);
    return NVRTC_SUCCESS;
}
