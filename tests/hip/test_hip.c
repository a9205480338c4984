/* The HIP module without an AMD GPU: what the probe says when the runtime
 * library is missing and, with the real runtime (ROCm 5.2 in CI), when
 * there is no device; that an explicit hip context fails with that reason;
 * and that an architecture hiprtc does not know is refused with a message
 * instead of being handed to hiprtc (which would abort the process). The
 * module loads its runtime once per process, so each probe runs in a child
 * with its own environment. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "hip.h"
#include "xattn.h"

/* In a child with XATTN_HIP_RUNTIME_PATH = runtime (NULL: unset): probe the
 * hip backend and open a context on it; the child writes
 * "<devices>|<reason>|<context status>|<message>" into out. */
static void probe_in_child(const char *runtime, char *out, size_t size)
{
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fd[0]);
        if (runtime) setenv("XATTN_HIP_RUNTIME_PATH", runtime, 1);
        else unsetenv("XATTN_HIP_RUNTIME_PATH");
        char reason[800] = "";
        int32_t n = -1;
        xattn_backend_probe(XATTN_BACKEND_HIP, &n, reason, sizeof reason);
        xattn_context_options o;
        memset(&o, 0, sizeof o);
        o.backend = XATTN_BACKEND_HIP;
        xattn_context *ctx = NULL;
        xattn_status st = xattn_context_create_with(&o, &ctx);
        char line[2000];
        int len = snprintf(line, sizeof line, "%d|%s|%d|%s", (int)n, reason, (int)st,
                           st == XATTN_OK ? "" : xattn_last_error());
        xattn_context_destroy(&ctx);
        if (len >= (int)sizeof line) len = (int)sizeof line - 1;
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

static void test_runtime_missing(void **state)
{
    (void)state;
    char out[2000];
    probe_in_child("/nonexistent/libamdhip64.so.6", out, sizeof out);
    printf("    %s\n", out);
    assert_true(!strncmp(out, "0|", 2));
    assert_non_null(strstr(out, "runtime library missing: cannot load /nonexistent/libamdhip64.so.6"));
    assert_non_null(strstr(out, "XATTN_HIP_RUNTIME_PATH"));
    /* The context fails with the same reason, as unavailable. */
    char want[32];
    snprintf(want, sizeof want, "|%d|", (int)XATTN_ERR_BACKEND_UNAVAILABLE);
    assert_non_null(strstr(out, want));
}

/* The runtime of this machine: no AMD GPU here, so zero devices and the
 * runtime's own error name and code. A machine with a GPU passes when the
 * probe finds it and the context opens. */
static void test_no_device(void **state)
{
    (void)state;
    char reason[800] = "";
    if (!hip_load(reason, sizeof reason)) {
        printf("    FAILED: the HIP runtime is needed for this test (Debian: libamdhip64-5 "
               "libhiprtc-builtins5 rocm-device-libs libamd-comgr2): %s\n", reason);
        fail();
    }
    char out[2000];
    probe_in_child(NULL, out, sizeof out);
    printf("    %s\n", out);
    if (strncmp(out, "0|", 2) != 0) {
        char want[32];
        snprintf(want, sizeof want, "|%d|", (int)XATTN_OK);
        assert_non_null(strstr(out, want)); /* a device: the context opened */
        return;
    }
    assert_true(strstr(out, "hipInit: ") || strstr(out, "hipGetDeviceCount: "));
    assert_non_null(strstr(out, "no AMD GPU"));
    assert_non_null(strstr(out, "hipError"));
    assert_non_null(strstr(out, " (10")); /* the code: 100 or 101 from ROCm 5.2 */
    char want[32];
    snprintf(want, sizeof want, "|%d|", (int)XATTN_ERR_BACKEND_UNAVAILABLE);
    assert_non_null(strstr(out, want));
    assert_non_null(strstr(out, "no device"));
}

/* hiprtc aborts the process for an architecture its code-object manager
 * does not know: hip_compile must refuse those itself. */
static void test_unknown_arch_refused(void **state)
{
    (void)state;
    char reason[800] = "";
    const hip_api *hip = hip_load(reason, sizeof reason);
    if (!hip) {
        printf("    FAILED: the HIP runtime is needed for this test: %s\n", reason);
        fail();
    }
    hip_variant v[HIP_MAX_VARIANTS];
    int n = 0;
    assert_int_equal(hip_ops_variants(XATTN_F16, v, &n), XATTN_OK);
    const char *refused = hip->major >= 6 ? "gfx1200" : "gfx942";
    void *code = NULL;
    size_t size = 0;
    xattn_status st = hip_compile(hip, refused, v[0].source, v[0].options, &code, &size, NULL);
    printf("    %s: %s\n", refused, xattn_last_error());
    assert_int_equal(st, XATTN_ERR_UNSUPPORTED);
    assert_null(code);
    assert_non_null(strstr(xattn_last_error(), refused));
    assert_non_null(strstr(xattn_last_error(), "ROCm 6"));
    /* The lists, and the base of a full gcnArchName. */
    assert_true(hip_arch_allowed(5, "gfx90a"));
    assert_true(hip_arch_allowed(5, "gfx1030"));
    assert_true(hip_arch_allowed(5, "gfx1032"));
    assert_false(hip_arch_allowed(5, "gfx803"));
    assert_false(hip_arch_allowed(5, "gfx942"));
    assert_false(hip_arch_allowed(5, "gfx1100"));
    assert_true(hip_arch_allowed(6, "gfx942"));
    assert_true(hip_arch_allowed(6, "gfx1100"));
    assert_false(hip_arch_allowed(4, "gfx90a"));
    char base[32];
    hip_arch_base("gfx90a:sramecc+:xnack-", base, sizeof base);
    assert_string_equal(base, "gfx90a");
    assert_int_equal(hip_arch_matrix("gfx908"), XATTN_MATRIX_F16);
    assert_int_equal(hip_arch_matrix("gfx90a"), XATTN_MATRIX_F16 | XATTN_MATRIX_BF16);
    assert_int_equal(hip_arch_matrix("gfx942"), XATTN_MATRIX_F16 | XATTN_MATRIX_BF16);
    assert_int_equal(hip_arch_matrix("gfx1030"), 0);
    /* An allowed one compiles. */
    st = hip_compile(hip, "gfx90a", v[0].source, v[0].options, &code, &size, NULL);
    if (st != XATTN_OK) printf("    %s\n", xattn_last_error());
    assert_int_equal(st, XATTN_OK);
    assert_true(size > 0);
    free(code);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runtime_missing),
        cmocka_unit_test(test_no_device),
        cmocka_unit_test(test_unknown_arch_refused),
    };
    return cmocka_run_group_tests_name("hip-module", tests, NULL, NULL);
}
