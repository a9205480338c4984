/* xattn info: every backend (found or not, and why), its devices and their
 * caps, and the context XATTN_BACKEND / XATTN_DEVICE select. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "xattn.h"

enum { REASON_BYTES = 512 };

static const xattn_backend_kind kinds[] = {
    XATTN_BACKEND_CPU, XATTN_BACKEND_OPENCL, XATTN_BACKEND_CUDA, XATTN_BACKEND_HIP,
};

static void info_usage(FILE *f)
{
    fprintf(f,
            "usage: xattn info\n"
            "\n"
            "For each backend (cpu, opencl, cuda, hip): found or not and why, the number\n"
            "of devices, and every device's name and caps; then the context that\n"
            "XATTN_BACKEND (auto|cpu|opencl|cuda|hip) and XATTN_DEVICE select.\n"
            "Exit status 1 when that selection fails.\n");
}

static void print_matrix_dtypes(uint32_t bits)
{
    if (!bits) {
        printf("none");
        return;
    }
    const char *sep = "";
    if (bits & XATTN_MATRIX_F16) printf("%sf16", sep), sep = " ";
    if (bits & XATTN_MATRIX_BF16) printf("%sbf16", sep), sep = " ";
    if (bits & XATTN_MATRIX_TF32) printf("%stf32", sep), sep = " ";
}

static void print_caps(const xattn_device_caps *c)
{
    const char *in = "      ";
    printf("%sstyle                  %s\n", in,
           c->style == XATTN_DEVICE_STYLE_CPU ? "cpu" : "gpu");
    printf("%scompute units          %u\n", in, c->compute_units);
    printf("%ssimd width             %u\n", in, c->simd_width);
    printf("%slocal memory           %u bytes%s\n", in, c->local_mem_bytes,
           c->style == XATTN_DEVICE_STYLE_CPU ? " (L2 per core)" : " per group");
    printf("%scache                  %u bytes%s\n", in, c->cache_bytes,
           c->style == XATTN_DEVICE_STYLE_CPU ? " (L1 per core)" : " (L2)");
    printf("%smax threads per group  %u\n", in, c->max_threads_per_group);
    printf("%sregisters per group    %u%s\n", in, c->registers_per_group,
           c->registers_per_group ? "" : " (unknown)");
    printf("%smatrix units           ", in);
    print_matrix_dtypes(c->matrix_dtypes);
    if (c->matrix_dtypes) printf(", %ux%ux%u", c->matrix_m, c->matrix_n, c->matrix_k);
    printf("\n");
    printf("%svector bytes           %u\n", in, c->vector_bytes);
    printf("%sf16 / bf16             %s / %s\n", in, c->has_f16 ? "yes" : "no",
           c->has_bf16 ? "yes" : "no");
    printf("%speak f32               %.1f GFLOP/s\n", in, c->peak_flops_f32 / 1e9);
    printf("%speak f16               %.1f GFLOP/s\n", in, c->peak_flops_f16 / 1e9);
    printf("%speak bandwidth         %.1f GB/s\n", in, c->peak_bytes_per_s / 1e9);
}

/* Open device index of kind and print it; 0 on success. */
static int print_device(xattn_backend_kind kind, int32_t index)
{
    xattn_context_options opts;
    memset(&opts, 0, sizeof opts);
    opts.backend = kind;
    opts.device = index;
    xattn_context *ctx = NULL;
    xattn_status st = xattn_context_create_with(&opts, &ctx);
    if (st != XATTN_OK) {
        printf("    device %d: cannot open: %s: %s\n", (int)index, xattn_status_string(st),
               xattn_last_error());
        return 1;
    }
    xattn_device_caps caps;
    st = xattn_context_caps(ctx, &caps);
    printf("    device %d: %s\n", (int)index, xattn_context_device_name(ctx));
    if (st == XATTN_OK) print_caps(&caps);
    else printf("      caps: %s: %s\n", xattn_status_string(st), xattn_last_error());
    xattn_context_destroy(&ctx);
    return st != XATTN_OK;
}

int xattn_cmd_info(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            info_usage(stdout);
            return 0;
        }
        fprintf(stderr, "xattn info: unknown option '%s' (see xattn info --help)\n", argv[i]);
        return 2;
    }

    /* A bad XATTN_* value is an error before anything else is reported. */
    xattn_context *selected = NULL;
    xattn_status sel = xattn_context_create(&selected);
    char sel_error[REASON_BYTES];
    snprintf(sel_error, sizeof sel_error, "%s", xattn_last_error());
    if (sel == XATTN_ERR_INVALID_ENV) {
        fprintf(stderr, "xattn info: %s: %s\n", xattn_status_string(sel), sel_error);
        return 1;
    }

    printf("xattn %s\n\nbackends:\n", xattn_version());
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        const char *name = xattn_backend_kind_name(kinds[i]);
        int32_t n = 0;
        char reason[REASON_BYTES] = "";
        xattn_status st = xattn_backend_probe(kinds[i], &n, reason, sizeof reason);
        if (st != XATTN_OK) {
            printf("  %-7s probe failed: %s: %s\n", name, xattn_status_string(st),
                   xattn_last_error());
            continue;
        }
        if (n <= 0) {
            printf("  %-7s not available: %s\n", name, reason[0] ? reason : "no device");
            continue;
        }
        printf("  %-7s %d device%s%s%s\n", name, (int)n, n == 1 ? "" : "s",
               reason[0] ? "; " : "", reason);
        for (int32_t d = 0; d < n; d++) print_device(kinds[i], d);
    }

    printf("\nselected (XATTN_BACKEND, XATTN_DEVICE): ");
    if (sel != XATTN_OK) {
        printf("none\n");
        fprintf(stderr, "xattn info: %s: %s\n", xattn_status_string(sel), sel_error);
        return 1;
    }
    printf("%s, %s\n", xattn_context_backend_name(selected),
           xattn_context_device_name(selected));
    xattn_context_destroy(&selected);
    return 0;
}
