/* The OpenCL module's own contract (DESIGN §1–2, issue 4): caps read from
 * the device, XATTN_OPENCL_STYLE, and the on-disk program cache in
 * XATTN_CACHE_DIR (created when missing, reused across contexts, a corrupt
 * file rebuilt, an unusable directory only costs the cache).
 *
 * Needs an OpenCL device (PoCL in CI). Without one the whole suite is
 * skipped (exit 77) with the reason, unless XATTN_REQUIRE_BACKEND names
 * opencl, which turns the skip into a failure. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api_test.h"

enum { N = 5, HEADS = 3, DIM = 16 };

static char cache_root[256];

static xattn_context *open_opencl(void)
{
    xattn_context_options o = {0};
    o.backend = XATTN_BACKEND_OPENCL;
    xattn_context *ctx = NULL;
    XT_ASSERT_STATUS(xattn_context_create_with(&o, &ctx), XATTN_OK);
    return ctx;
}

/* Run merge_states on small f32 data and check O and LSE against the
 * formula: proves a program was built (or loaded) and runs correctly. */
static void run_merge(xattn_context *ctx)
{
    float oa[N * HEADS * DIM], ob[N * HEADS * DIM], la[HEADS * N], lb[HEADS * N];
    for (int i = 0; i < N * HEADS * DIM; i++) {
        oa[i] = (float)(i % 7) - 3.0f;
        ob[i] = (float)(i % 5) * 0.5f;
    }
    for (int i = 0; i < HEADS * N; i++) {
        la[i] = 0.25f * (float)i;
        lb[i] = 1.0f - 0.125f * (float)i;
    }
    const size_t o_bytes = sizeof oa, l_bytes = sizeof la;
    xattn_buffer *b = NULL;
    XT_ASSERT_STATUS(xattn_buffer_alloc(ctx, 3 * o_bytes + 3 * l_bytes, &b), XATTN_OK);
    XT_ASSERT_STATUS(xattn_buffer_write(b, 0, oa, o_bytes), XATTN_OK);
    XT_ASSERT_STATUS(xattn_buffer_write(b, o_bytes, ob, o_bytes), XATTN_OK);
    XT_ASSERT_STATUS(xattn_buffer_write(b, 3 * o_bytes, la, l_bytes), XATTN_OK);
    XT_ASSERT_STATUS(xattn_buffer_write(b, 3 * o_bytes + l_bytes, lb, l_bytes), XATTN_OK);
    const int64_t os[3] = {N, HEADS, DIM}, ls[2] = {HEADS, N};
    xattn_tensor ta = xattn_tensor_contiguous(b, 0, XATTN_F32, 3, os);
    xattn_tensor tb = xattn_tensor_contiguous(b, o_bytes, XATTN_F32, 3, os);
    xattn_tensor to = xattn_tensor_contiguous(b, 2 * o_bytes, XATTN_F32, 3, os);
    xattn_tensor tla = xattn_tensor_contiguous(b, 3 * o_bytes, XATTN_F32, 2, ls);
    xattn_tensor tlb = xattn_tensor_contiguous(b, 3 * o_bytes + l_bytes, XATTN_F32, 2, ls);
    xattn_tensor tl = xattn_tensor_contiguous(b, 3 * o_bytes + 2 * l_bytes, XATTN_F32, 2, ls);
    XT_ASSERT_STATUS(xattn_merge_states(ctx, &ta, &tla, &tb, &tlb, &to, &tl), XATTN_OK);
    float o[N * HEADS * DIM], l[HEADS * N];
    XT_ASSERT_STATUS(xattn_buffer_read(b, 2 * o_bytes, o, o_bytes), XATTN_OK);
    XT_ASSERT_STATUS(xattn_buffer_read(b, 3 * o_bytes + 2 * l_bytes, l, l_bytes), XATTN_OK);
    for (int t = 0; t < N; t++)
        for (int h = 0; h < HEADS; h++) {
            double a = la[h * N + t], c = lb[h * N + t];
            double lse = log(exp(a) + exp(c));
            assert_true(fabs(l[h * N + t] - lse) < 1e-5);
            for (int d = 0; d < DIM; d++) {
                int i = (t * HEADS + h) * DIM + d;
                double want = (exp(a) * oa[i] + exp(c) * ob[i]) / exp(lse);
                assert_true(fabs(o[i] - want) < 1e-5 * (1.0 + fabs(want)));
            }
        }
    xattn_buffer_free(&b);
}

/* Path of the first opencl-*.bin in dir (or "" if none); the count. */
static int cache_files(const char *dir, char *first, size_t size)
{
    int n = 0;
    if (first) first[0] = '\0';
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "opencl-", 7) || len < 4 || strcmp(e->d_name + len - 4, ".bin"))
            continue;
        if (n++ == 0 && first) snprintf(first, size, "%s/%s", dir, e->d_name);
    }
    closedir(d);
    return n;
}

static int setup_cache(void **state)
{
    (void)state;
    snprintf(cache_root, sizeof cache_root, "/tmp/xattn-test-opencl-XXXXXX");
    if (!mkdtemp(cache_root)) return -1;
    return 0;
}

static int teardown_cache(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", cache_root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", cache_root);
    return xt_env_teardown(state);
}

static void caps_come_from_the_device(void **state)
{
    (void)state;
    xattn_context *ctx = open_opencl();
    xattn_device_caps c;
    XT_ASSERT_STATUS(xattn_context_caps(ctx, &c), XATTN_OK);
    assert_true(c.compute_units >= 1);
    assert_true(c.simd_width >= 1);
    assert_true(c.max_threads_per_group >= 1);
    assert_true(c.local_mem_bytes > 0);
    /* f16 by vload_half/vstore_half and bf16 by bit conversion: every device */
    assert_int_equal(c.has_f16, 1);
    assert_int_equal(c.has_bf16, 1);
    assert_int_equal(c.matrix_dtypes, 0);
    /* the name carries device, platform and driver version */
    assert_non_null(strstr(c.name, "driver"));
    assert_string_equal(xattn_context_backend_name(ctx), "opencl");
    xattn_context_destroy(&ctx);
}

static void style_env_rejects_unknown_values(void **state)
{
    (void)state;
    xt_setenv("XATTN_OPENCL_STYLE", "vector");
    xattn_context_options o = {0};
    o.backend = XATTN_BACKEND_OPENCL;
    xattn_context *ctx = NULL;
    XT_EXPECT_ERROR(xattn_context_create_with(&o, &ctx), XATTN_ERR_INVALID_ENV,
                    "XATTN_OPENCL_STYLE");
    assert_non_null(strstr(xattn_last_error(), "auto, cpu, gpu"));
    assert_null(ctx);
}

static void style_env_picks_the_kernel_style(void **state)
{
    (void)state;
    static const struct {
        const char *value;
        xattn_device_style style;
    } cases[] = {{"gpu", XATTN_DEVICE_STYLE_GPU}, {"cpu", XATTN_DEVICE_STYLE_CPU}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        xt_setenv("XATTN_OPENCL_STYLE", cases[i].value);
        xattn_context *ctx = open_opencl();
        xattn_device_caps c;
        XT_ASSERT_STATUS(xattn_context_caps(ctx, &c), XATTN_OK);
        assert_int_equal(c.style, cases[i].style);
        xattn_context_destroy(&ctx);
    }
}

static void programs_are_cached_on_disk_and_reused(void **state)
{
    (void)state;
    char dir[300], file[600];
    /* two levels that do not exist yet: the module creates them */
    snprintf(dir, sizeof dir, "%s/new/cache", cache_root);
    xt_setenv("XATTN_CACHE_DIR", dir);
    xattn_context *ctx = open_opencl();
    run_merge(ctx);
    xattn_context_destroy(&ctx);
    assert_int_equal(cache_files(dir, file, sizeof file), 1);
    struct stat before, after;
    assert_int_equal(stat(file, &before), 0);

    /* A new context loads the binary instead of compiling and rewriting it
     * (a rewrite is a rename onto the path: a new inode). */
    ctx = open_opencl();
    run_merge(ctx);
    xattn_context_destroy(&ctx);
    assert_int_equal(stat(file, &after), 0);
    assert_int_equal(before.st_ino, after.st_ino);
    assert_int_equal(cache_files(dir, NULL, 0), 1);
}

static void corrupt_cache_file_is_rebuilt(void **state)
{
    (void)state;
    char dir[300], file[600];
    snprintf(dir, sizeof dir, "%s/corrupt", cache_root);
    xt_setenv("XATTN_CACHE_DIR", dir);
    xattn_context *ctx = open_opencl();
    run_merge(ctx);
    xattn_context_destroy(&ctx);
    assert_int_equal(cache_files(dir, file, sizeof file), 1);

    static const char junk[] = "xattn-opencl-program-1\nnot a program binary at all";
    FILE *f = fopen(file, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(junk, 1, sizeof junk, f), sizeof junk);
    assert_int_equal(fclose(f), 0);

    ctx = open_opencl();
    run_merge(ctx);
    xattn_context_destroy(&ctx);
    struct stat st;
    assert_int_equal(stat(file, &st), 0);
    assert_true((size_t)st.st_size > sizeof junk); /* a real binary again */
}

static void unusable_cache_dir_only_costs_the_cache(void **state)
{
    (void)state;
    char dir[300];
    /* a regular file where the directory should be */
    snprintf(dir, sizeof dir, "%s/file", cache_root);
    FILE *f = fopen(dir, "wb");
    assert_non_null(f);
    assert_int_equal(fclose(f), 0);
    char sub[340];
    snprintf(sub, sizeof sub, "%s/cache", dir);
    xt_setenv("XATTN_CACHE_DIR", sub);
    xattn_context *ctx = open_opencl();
    run_merge(ctx);
    xattn_context_destroy(&ctx);
}

int main(void)
{
    int32_t n = 0;
    char reason[512] = "";
    if (xattn_backend_probe(XATTN_BACKEND_OPENCL, &n, reason, sizeof reason) != XATTN_OK ||
        n <= 0) {
        const char *req = getenv("XATTN_REQUIRE_BACKEND");
        int required = req && strstr(req, "opencl");
        fprintf(stderr, "%s: no OpenCL device: %s\n", required ? "FAILED" : "SKIPPED", reason);
        return required ? 1 : 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(caps_come_from_the_device, xt_env_teardown),
        cmocka_unit_test_teardown(style_env_rejects_unknown_values, xt_env_teardown),
        cmocka_unit_test_teardown(style_env_picks_the_kernel_style, xt_env_teardown),
        cmocka_unit_test_teardown(programs_are_cached_on_disk_and_reused, xt_env_teardown),
        cmocka_unit_test_teardown(corrupt_cache_file_is_rebuilt, xt_env_teardown),
        cmocka_unit_test_teardown(unusable_cache_dir_only_costs_the_cache, xt_env_teardown),
    };
    return cmocka_run_group_tests_name("opencl module", tests, setup_cache, teardown_cache);
}
