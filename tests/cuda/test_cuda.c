/* The CUDA module without a GPU: what the loader says when the driver or
 * NVRTC is missing or the driver is the toolkit's stub, and, on the xemu
 * emulated device (tests/cuda_emu), the caps it reads. The module loads its libraries once per process, so each case
 * runs in a child process with its own environment. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "xattn.h"

#define STUB_DRIVER "/usr/local/cuda/lib64/stubs/libcuda.so"

/* Probe the cuda backend in a child with the given driver and NVRTC paths
 * (NULL: unset); the child writes "<devices>|<reason>" into out. */
static void probe_in_child(const char *driver, const char *nvrtc, char *out, size_t size)
{
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fd[0]);
        if (driver) setenv("XATTN_CUDA_DRIVER_PATH", driver, 1);
        else unsetenv("XATTN_CUDA_DRIVER_PATH");
        if (nvrtc) setenv("XATTN_NVRTC_PATH", nvrtc, 1);
        else unsetenv("XATTN_NVRTC_PATH");
        char reason[512] = "";
        int32_t n = -1;
        xattn_backend_probe(XATTN_BACKEND_CUDA, &n, reason, sizeof reason);
        char line[600];
        int len = snprintf(line, sizeof line, "%d|%s", (int)n, reason);
        if (write(fd[1], line, (size_t)len) != len) _exit(2);
        _exit(0);
    }
    close(fd[1]);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < size && (r = read(fd[0], out + got, size - 1 - got)) > 0) got += (size_t)r;
    out[got] = '\0';
    close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_driver_missing(void **state)
{
    (void)state;
    char out[600];
    probe_in_child("/nonexistent/libcuda.so.1", NULL, out, sizeof out);
    printf("    %s\n", out);
    assert_true(!strncmp(out, "0|", 2));
    assert_non_null(strstr(out, "runtime library missing"));
}

static void test_stub_driver(void **state)
{
    (void)state;
    if (access(STUB_DRIVER, R_OK) != 0) {
        printf("    skipped: no toolkit stub driver at %s\n", STUB_DRIVER);
        skip();
    }
    char out[600];
    probe_in_child(STUB_DRIVER, NULL, out, sizeof out);
    printf("    %s\n", out);
    assert_true(!strncmp(out, "0|", 2));
    assert_non_null(strstr(out, "CUDA_ERROR_STUB_LIBRARY"));
    assert_non_null(strstr(out, "stub driver, no GPU"));
}

static void test_nvrtc_missing(void **state)
{
    (void)state;
    const char *driver = getenv("XEMU_DRIVER");
    if (!driver) {
        printf("    skipped: the xemu driver is not built (sanitizer builds)\n");
        skip();
    }
    char out[600];
    probe_in_child(driver, "/nonexistent/libnvrtc.so.13", out, sizeof out);
    printf("    %s\n", out);
    assert_true(!strncmp(out, "0|", 2));
    assert_non_null(strstr(out, "NVRTC missing"));
    assert_non_null(strstr(out, "XATTN_NVRTC_PATH"));
}

/* Both missing: the reason names both, so one install does not reveal the
 * next missing piece. */
static void test_both_missing(void **state)
{
    (void)state;
    char out[1100];
    probe_in_child("/nonexistent/libcuda.so.1", "/nonexistent/libnvrtc.so.13", out, sizeof out);
    printf("    %s\n", out);
    assert_true(!strncmp(out, "0|", 2));
    assert_non_null(strstr(out, "runtime library missing"));
    assert_non_null(strstr(out, "NVRTC missing"));
}

/* On the emulated device, in this process: caps, and a MoE plan compiles. */
static void test_emulated_device(void **state)
{
    (void)state;
    const char *driver = getenv("XEMU_DRIVER"), *nvrtc = getenv("XEMU_NVRTC");
    if (!driver || !nvrtc) {
        printf("    skipped: the xemu driver and NVRTC are not built (sanitizer builds)\n");
        skip();
    }
    setenv("XATTN_CUDA_DRIVER_PATH", driver, 1);
    setenv("XATTN_NVRTC_PATH", nvrtc, 1);
    xattn_context_options o;
    memset(&o, 0, sizeof o);
    o.backend = XATTN_BACKEND_CUDA;
    xattn_context *ctx = NULL;
    xattn_status st = xattn_context_create_with(&o, &ctx);
    if (st != XATTN_OK) fprintf(stderr, "%s\n", xattn_last_error());
    assert_int_equal(st, XATTN_OK);
    xattn_device_caps caps;
    assert_int_equal(xattn_context_caps(ctx, &caps), XATTN_OK);
    printf("    %s\n", caps.name);
    assert_non_null(strstr(caps.name, "sm_80"));
    assert_int_equal(caps.style, XATTN_DEVICE_STYLE_GPU);
    assert_int_equal(caps.simd_width, 32);
    assert_int_equal(caps.matrix_m, 16);
    assert_int_equal(caps.matrix_n, 8);
    assert_int_equal(caps.matrix_k, 16);
    assert_true(caps.matrix_dtypes & XATTN_MATRIX_BF16);
    assert_false(caps.matrix_dtypes & XATTN_MATRIX_TF32); /* f32 stays IEEE */
    assert_int_equal(caps.local_mem_bytes, 163 * 1024);
    /* A100's figures: 2 × 1215 MHz × 5120 bits / 8 = 1.56 TB/s. */
    assert_true(caps.peak_bytes_per_s > 1.5e12 && caps.peak_bytes_per_s < 1.6e12);

    xattn_moe_desc m;
    memset(&m, 0, sizeof m);
    m.dtype = XATTN_BF16;
    m.weight_dtype = XATTN_BF16;
    m.logits_dtype = XATTN_F32;
    m.hidden = 64;
    m.inter = 32;
    m.num_experts = 8;
    m.top_k = 2;
    m.max_tokens = 16;
    m.align = 1;
    xattn_moe_plan *plan = NULL;
    st = xattn_moe_plan_create(ctx, &m, &plan); /* compiles the MoE modules */
    if (st != XATTN_OK) fprintf(stderr, "%s\n", xattn_last_error());
    assert_int_equal(st, XATTN_OK);
    xattn_moe_plan_destroy(&plan);
    xattn_context_destroy(&ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_driver_missing),
        cmocka_unit_test(test_stub_driver),
        cmocka_unit_test(test_nvrtc_missing),
        cmocka_unit_test(test_both_missing),
        cmocka_unit_test(test_emulated_device),
    };
    return cmocka_run_group_tests_name("cuda-module", tests, NULL, NULL);
}
