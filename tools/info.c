/* xattn info: every backend (found or not, and why), its devices and their
 * caps, and the context XATTN_BACKEND / XATTN_DEVICE select. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "json.h"
#include "opts.h"
#include "xattn.h"

enum { REASON_BYTES = 512 };

static const xattn_backend_kind kinds[] = {
    XATTN_BACKEND_CPU, XATTN_BACKEND_OPENCL, XATTN_BACKEND_CUDA, XATTN_BACKEND_HIP,
};

typedef struct info_opts {
    int json;
} info_opts;

#define OPT_STRUCT info_opts
static const xattn_opt info_table[] = {
    OPT_FLAG("json", 0, json, 1, "print JSON on stdout instead of text"),
};
#undef OPT_STRUCT

static void info_help(FILE *f);
static const xattn_cmd info_cmd = {"xattn info", "[--json]", info_table,
                                   XATTN_OPTS_COUNT(info_table), info_help};

static void info_help(FILE *f)
{
    xattn_opts_print_synopsis(f, &info_cmd);
    fprintf(f,
            "\n"
            "For each backend (cpu, opencl, cuda, hip): found or not and why, the number\n"
            "of devices, and every device's name and caps; then the context that\n"
            "XATTN_BACKEND (auto|cpu|opencl|cuda|hip) and XATTN_DEVICE select.\n"
            "Exit status 1 when that selection fails, 2 on bad usage.\n\n");
    xattn_opts_print(f, &info_cmd);
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

void xattn_tool_json_caps(xattn_json *j, const xattn_device_caps *c)
{
    xattn_json_object_begin(j, "caps");
    xattn_json_string(j, "style", c->style == XATTN_DEVICE_STYLE_CPU ? "cpu" : "gpu");
    xattn_json_uint(j, "compute_units", c->compute_units);
    xattn_json_uint(j, "simd_width", c->simd_width);
    xattn_json_uint(j, "local_mem_bytes", c->local_mem_bytes);
    xattn_json_uint(j, "cache_bytes", c->cache_bytes);
    xattn_json_uint(j, "max_threads_per_group", c->max_threads_per_group);
    xattn_json_uint(j, "registers_per_group", c->registers_per_group);
    xattn_json_array_begin(j, "matrix_dtypes");
    if (c->matrix_dtypes & XATTN_MATRIX_F16) xattn_json_string(j, NULL, "f16");
    if (c->matrix_dtypes & XATTN_MATRIX_BF16) xattn_json_string(j, NULL, "bf16");
    if (c->matrix_dtypes & XATTN_MATRIX_TF32) xattn_json_string(j, NULL, "tf32");
    xattn_json_array_end(j);
    xattn_json_uint(j, "matrix_m", c->matrix_m);
    xattn_json_uint(j, "matrix_n", c->matrix_n);
    xattn_json_uint(j, "matrix_k", c->matrix_k);
    xattn_json_uint(j, "vector_bytes", c->vector_bytes);
    xattn_json_bool(j, "has_f16", c->has_f16 != 0);
    xattn_json_bool(j, "has_bf16", c->has_bf16 != 0);
    xattn_json_double(j, "peak_flops_f32", c->peak_flops_f32);
    xattn_json_double(j, "peak_flops_f16", c->peak_flops_f16);
    xattn_json_double(j, "peak_bytes_per_s", c->peak_bytes_per_s);
    xattn_json_object_end(j);
}

/* Open device index of kind and print it (j: as JSON); 0 on success. */
static int print_device(xattn_backend_kind kind, int32_t index, xattn_json *j)
{
    xattn_context_options opts;
    memset(&opts, 0, sizeof opts);
    opts.backend = kind;
    opts.device = index;
    xattn_context *ctx = NULL;
    xattn_status st = xattn_context_create_with(&opts, &ctx);
    char error[REASON_BYTES] = "";
    if (st != XATTN_OK) {
        snprintf(error, sizeof error, "cannot open: %s: %s", xattn_status_string(st),
                 xattn_last_error());
        if (j) {
            xattn_json_object_begin(j, NULL);
            xattn_json_int(j, "index", index);
            xattn_json_string(j, "error", error);
            xattn_json_object_end(j);
        } else {
            printf("    device %d: %s\n", (int)index, error);
        }
        return 1;
    }
    xattn_device_caps caps;
    st = xattn_context_caps(ctx, &caps);
    if (st != XATTN_OK)
        snprintf(error, sizeof error, "%s: %s", xattn_status_string(st), xattn_last_error());
    if (j) {
        xattn_json_object_begin(j, NULL);
        xattn_json_int(j, "index", index);
        xattn_json_string(j, "name", xattn_context_device_name(ctx));
        if (st == XATTN_OK) xattn_tool_json_caps(j, &caps);
        else xattn_json_string(j, "error", error);
        xattn_json_object_end(j);
    } else {
        printf("    device %d: %s\n", (int)index, xattn_context_device_name(ctx));
        if (st == XATTN_OK) print_caps(&caps);
        else printf("      caps: %s\n", error);
    }
    xattn_context_destroy(&ctx);
    return st != XATTN_OK;
}

/* One backend: probed, and each of its devices opened. */
static void print_backend(xattn_backend_kind kind, xattn_json *j)
{
    const char *name = xattn_backend_kind_name(kind);
    int32_t n = 0;
    char reason[REASON_BYTES] = "", error[REASON_BYTES] = "";
    xattn_status st = xattn_backend_probe(kind, &n, reason, sizeof reason);
    if (st != XATTN_OK) {
        snprintf(error, sizeof error, "probe failed: %s: %s", xattn_status_string(st),
                 xattn_last_error());
        n = 0;
    }
    if (n < 0) n = 0;
    if (!j) {
        if (error[0])
            printf("  %-7s %s\n", name, error);
        else if (n == 0)
            printf("  %-7s not available: %s\n", name, reason[0] ? reason : "no device");
        else
            printf("  %-7s %d device%s%s%s\n", name, (int)n, n == 1 ? "" : "s",
                   reason[0] ? "; " : "", reason);
        for (int32_t d = 0; d < n; d++) print_device(kind, d, NULL);
        return;
    }
    xattn_json_object_begin(j, NULL);
    xattn_json_string(j, "name", name);
    xattn_json_bool(j, "available", n > 0);
    xattn_json_int(j, "num_devices", n);
    /* Why not available, or a note beside the devices; null when none. */
    xattn_json_string(j, "reason", error[0] ? error : reason[0] ? reason
                                                   : n == 0 ? "no device" : NULL);
    xattn_json_array_begin(j, "devices");
    for (int32_t d = 0; d < n; d++) print_device(kind, d, j);
    xattn_json_array_end(j);
    xattn_json_object_end(j);
}

int xattn_cmd_info(int argc, char **argv)
{
    info_opts o = {0};
    int r = xattn_opts_parse(&info_cmd, argc, argv, &o, NULL);
    if (r != XATTN_OPTS_RUN) return r == XATTN_OPTS_HELP ? 0 : 2;

    /* A bad XATTN_* value is an error before anything else is reported. */
    xattn_context *selected = NULL;
    xattn_status sel = xattn_context_create(&selected);
    char sel_error[REASON_BYTES];
    snprintf(sel_error, sizeof sel_error, "%s: %s", xattn_status_string(sel),
             xattn_last_error());
    if (sel == XATTN_ERR_INVALID_ENV) {
        fprintf(stderr, "xattn info: %s\n", sel_error);
        return 1;
    }

    xattn_json json, *j = o.json ? &json : NULL;
    if (j) {
        xattn_json_init(j, stdout);
        xattn_json_object_begin(j, NULL);
        xattn_json_string(j, "xattn_version", xattn_version());
        xattn_json_array_begin(j, "backends");
    } else {
        printf("xattn %s\n\nbackends:\n", xattn_version());
    }
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) print_backend(kinds[i], j);

    if (j) {
        xattn_json_array_end(j);
        /* The context XATTN_BACKEND and XATTN_DEVICE select. */
        if (sel == XATTN_OK) {
            xattn_json_object_begin(j, "selected");
            xattn_json_string(j, "backend", xattn_context_backend_name(selected));
            xattn_json_string(j, "device", xattn_context_device_name(selected));
            xattn_json_object_end(j);
        } else {
            xattn_json_null(j, "selected");
            xattn_json_string(j, "selected_error", sel_error);
        }
        xattn_json_object_end(j);
        xattn_json_finish(j);
    } else {
        printf("\nselected (XATTN_BACKEND, XATTN_DEVICE): ");
        if (sel == XATTN_OK)
            printf("%s, %s\n", xattn_context_backend_name(selected),
                   xattn_context_device_name(selected));
        else
            printf("none\n");
    }
    if (sel != XATTN_OK) {
        fprintf(stderr, "xattn info: %s\n", sel_error);
        return 1;
    }
    xattn_context_destroy(&selected);
    return 0;
}
