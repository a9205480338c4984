/* xattn — command-line tool: info, plan, check, bench. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "xattn.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *what;
} commands[] = {
    {"info", xattn_cmd_info, "backends (found or not, and why), devices and caps"},
    {"plan", xattn_cmd_plan, "the plan for an attention or MoE problem, on this device or a preset"},
    {"check", xattn_cmd_check, "conformance: every primitive against the float64 reference"},
    {"bench", xattn_cmd_bench, "achieved rates against measured FLOP/s and bytes/s ceilings"},
};

/* Every environment variable libxattn, its backend modules and this tool
 * read (a test checks the sources against this list). */
static const struct {
    const char *name, *values, *meaning;
} environment[] = {
    {"XATTN_BACKEND", "auto|cpu|opencl|cuda|hip",
     "the backend a context uses (default auto: the first of cuda, hip,\n"
     "opencl with a GPU device, else cpu). A named backend that is\n"
     "unavailable is an error that says why"},
    {"XATTN_DEVICE", "N", "device index within the backend (default 0)"},
    {"XATTN_LOG", "error|warn|info|debug", "log level (default warn); messages go to stderr"},
    {"XATTN_BACKEND_DIR", "DIR",
     "where backend modules libxattn-<name>.so are looked for; when set,\n"
     "only there (default: beside libxattn, then the install directory)"},
    {"XATTN_CPU_ISA", "auto|avx512|avx2|generic",
     "the cpu backend's kernel build (default auto: the widest this\n"
     "processor runs)"},
    {"XATTN_OPENCL_STYLE", "auto|cpu|gpu",
     "the kernel style the opencl backend plans for (default auto: by\n"
     "device type; gpu on a CPU device runs the GPU kernels on it)"},
    {"XATTN_CUDA_DRIVER_PATH", "FILE",
     "the CUDA driver the cuda backend loads instead of libcuda.so.1"},
    {"XATTN_NVRTC_PATH", "FILE",
     "the NVRTC the cuda backend compiles with instead of libnvrtc.so.13\n"
     "(then .12)"},
    {"XATTN_HIP_RUNTIME_PATH", "FILE",
     "the HIP runtime the hip backend loads instead of libamdhip64.so.6\n"
     "(then .so.5); hiprtc comes from it (ROCm 5) or from libhiprtc.so.6\n"
     "(ROCm 6)"},
    {"XATTN_CACHE_DIR", "DIR",
     "on-disk cache of run-time compiled kernels (default\n"
     "$XDG_CACHE_HOME/xattn, else $HOME/.cache/xattn)"},
    {"XDG_CACHE_HOME", "DIR", "the cache's parent when XATTN_CACHE_DIR is unset"},
    {"HOME", "DIR", "the cache is $HOME/.cache/xattn when neither of the above is set"},
    {"XATTN_REQUIRE_BACKEND", "NAME[,NAME]",
     "xattn check: a skipped backend NAME (no device) fails instead"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: xattn <command> [options]\n"
               "       xattn help [<command>]\n"
               "       xattn --version\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-7s %s\n", commands[i].name, commands[i].what);
    fprintf(f, "\n'xattn <command> --help' lists a command's options; every option takes its\n"
               "value as --opt VALUE or --opt=VALUE.\n\n"
               "environment (read by libxattn, its backend modules and this tool):\n");
    for (size_t i = 0; i < sizeof environment / sizeof environment[0]; i++) {
        fprintf(f, "  %s=%s\n", environment[i].name, environment[i].values);
        for (const char *p = environment[i].meaning; *p;) {
            size_t len = strcspn(p, "\n");
            fprintf(f, "      %.*s\n", (int)len, p);
            p += len + (p[len] == '\n');
        }
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    int help = !strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help");
    if (help && argc == 2) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version") && argc == 2) {
        printf("xattn %s\n", xattn_version());
        return 0;
    }
    if (help && argc > 3) {
        fprintf(stderr, "xattn: %s takes one command\n\n", cmd);
        usage(stderr);
        return 2;
    }
    /* "xattn help bench" is "xattn bench --help". */
    const char *name = help ? argv[2] : cmd;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(name, commands[i].name)) continue;
        if (!help) return commands[i].fn(argc - 1, argv + 1);
        static char help_flag[] = "--help";
        char *help_argv[] = {argv[2], help_flag, NULL};
        return commands[i].fn(2, help_argv);
    }
    fprintf(stderr, "xattn: unknown command '%s'\n\n", name);
    usage(stderr);
    return 2;
}
