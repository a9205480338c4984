/* xattn — command-line tool: info, plan, check, bench. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "xattn.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: xattn <command> [options]\n"
            "\n"
            "commands:\n"
            "  info    backends (found or not, and why), devices and caps\n"
            "  plan    print the plan for a problem (--preset NAME for a device preset)\n"
            "  check   conformance harness: every primitive against the float64 reference\n"
            "  bench   achieved rate against measured FLOP/s and bytes/s ceilings\n"
            "\n"
            "'xattn <command> --help' lists a command's options.\n"
            "environment: XATTN_BACKEND=auto|cpu|opencl|cuda|hip, XATTN_DEVICE=N,\n"
            "             XATTN_LOG=error|warn|info|debug, XATTN_BACKEND_DIR=DIR,\n"
            "             XATTN_REQUIRE_BACKEND=NAME (check: a skip of NAME fails)\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("xattn %s\n", xattn_version());
        return 0;
    }
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } commands[] = {
        {"info", xattn_cmd_info},
        {"plan", xattn_cmd_plan},
        {"check", xattn_cmd_check},
        {"bench", xattn_cmd_bench},
    };
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(cmd, commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "xattn: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
