/* The backend module loader (docs/environment.md, common/registry.h).
 *
 * Each mode runs as its own process, because the registry loads a module
 * once per process; XATTN_BACKEND_DIR points at the directory of that mode:
 *   good     a test module (fake_backend.c) built as libxattn-hip.so
 *   badabi   the same module claiming ABI version 7
 *   noentry  the same module without the xattn_backend_entry symbol
 *   missing  a directory with no libxattn-hip.so
 *   damaged  damaged copies of the good module (truncated, wrong machine,
 *            not ELF) and non-regular files (a FIFO, a directory) put in a
 *            temporary directory one after the other: each is refused with
 *            a reason before dlopen, which would fault (SIGBUS) on the
 *            truncated files and wait forever on the FIFO. */
#include "api_test.h"

#include <elf.h>
#include <limits.h>
#include <link.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "registry.h"

#define FAKE_DEVICE_NAME "xattn test fake device"
#define CTX_SENTINEL ((xattn_context *)(uintptr_t)0x5e5e5e50u)

static char module_path[4096];

static const xattn_backend_vtable *load_module(char *reason, size_t reason_size)
{
    memset(reason, 0, reason_size);
    return xattn_module_load(module_path, reason, reason_size);
}

static void check_reason_names(const char *reason, const char *word)
{
    if (!xt_mentions(reason, word)) fail_msg("reason \"%s\" does not name \"%s\"", reason, word);
}

/* XATTN_BACKEND=hip must fail with BACKEND_UNAVAILABLE naming word, and
 * leave *out alone; the same through xattn_context_create_with. */
static void expect_hip_unavailable(const char *word)
{
    xt_setenv("XATTN_BACKEND", "hip");
    xattn_context *ctx = CTX_SENTINEL;
    XT_EXPECT_ERROR(xattn_context_create(&ctx), XATTN_ERR_BACKEND_UNAVAILABLE, word);
    XT_ASSERT_ERROR_NAMES("hip", "libxattn-hip");
    assert_ptr_equal(ctx, CTX_SENTINEL);

    xattn_context_options opts = {.backend = XATTN_BACKEND_HIP};
    XT_EXPECT_ERROR(xattn_context_create_with(&opts, &ctx), XATTN_ERR_BACKEND_UNAVAILABLE, word);
    assert_ptr_equal(ctx, CTX_SENTINEL);
}

/* A module that cannot be used is zero devices and a reason, not an error. */
static void expect_probe_zero(const char *word)
{
    int32_t n = -1;
    char reason[512] = "";
    XT_ASSERT_STATUS(xattn_backend_probe(XATTN_BACKEND_HIP, &n, reason, sizeof reason),
                     XATTN_OK);
    assert_int_equal(n, 0);
    check_reason_names(reason, word);
}

/* auto goes past an unusable hip module to whatever else is available. */
static void expect_auto_skips_hip(void)
{
    xt_setenv("XATTN_BACKEND", "auto");
    xattn_context *ctx = xt_context();
    const char *name = xattn_context_backend_name(ctx);
    int is_hip = !strcmp(name, "hip");
    xattn_context_destroy(&ctx);
    assert_false(is_hip);
}

/* ---- good ------------------------------------------------------------ */

static void test_good_module_loads_with_current_abi(void **state)
{
    (void)state;
    char reason[512];
    const xattn_backend_vtable *vt = load_module(reason, sizeof reason);
    if (!vt) fail_msg("xattn_module_load(%s) failed: %s", module_path, reason);
    assert_int_equal(vt->abi_version, XATTN_BACKEND_ABI_VERSION);
    assert_string_equal(vt->name, "hip");
    assert_non_null(vt->probe);
    assert_int_equal(vt->probe(reason, sizeof reason), 1);
}

static void check_context_uses_module(xattn_context *ctx)
{
    assert_string_equal(xattn_context_backend_name(ctx), "hip");
    assert_string_equal(xattn_context_device_name(ctx), FAKE_DEVICE_NAME);
    xattn_device_caps caps;
    XT_ASSERT_STATUS(xattn_context_caps(ctx, &caps), XATTN_OK);
    assert_string_equal(caps.name, FAKE_DEVICE_NAME);
}

static void test_good_module_serves_context_from_env(void **state)
{
    (void)state;
    xt_setenv("XATTN_BACKEND", "hip");
    xt_setenv("XATTN_DEVICE", "0");
    xattn_context *ctx = xt_context();
    check_context_uses_module(ctx);
    xattn_context_destroy(&ctx);
    assert_null(ctx);
}

static void test_good_module_serves_context_from_options(void **state)
{
    (void)state;
    xattn_context_options opts = {.backend = XATTN_BACKEND_HIP};
    xattn_context *ctx = NULL;
    XT_ASSERT_STATUS(xattn_context_create_with(&opts, &ctx), XATTN_OK);
    check_context_uses_module(ctx);
    xattn_context_destroy(&ctx);
}

static void test_good_module_device_index_beyond_probe_is_rejected(void **state)
{
    (void)state;
    xt_setenv("XATTN_BACKEND", "hip");
    xt_setenv("XATTN_DEVICE", "1"); /* the module has one device */
    xattn_context *ctx = CTX_SENTINEL;
    XT_EXPECT_ERROR(xattn_context_create(&ctx), XATTN_ERR_INVALID_ENV, "XATTN_DEVICE");
    assert_ptr_equal(ctx, CTX_SENTINEL);
}

static void test_good_module_probe_counts_its_devices(void **state)
{
    (void)state;
    int32_t n = -1;
    char reason[256];
    XT_ASSERT_STATUS(xattn_backend_probe(XATTN_BACKEND_HIP, &n, reason, sizeof reason),
                     XATTN_OK);
    assert_int_equal(n, 1);
}

static void test_auto_picks_gpu_module_before_cpu(void **state)
{
    (void)state;
    int32_t cuda = 0;
    char reason[256];
    XT_ASSERT_STATUS(xattn_backend_probe(XATTN_BACKEND_CUDA, &cuda, reason, sizeof reason),
                     XATTN_OK);
    xt_setenv("XATTN_BACKEND", "auto");
    xattn_context *ctx = xt_context();
    char name[32];
    snprintf(name, sizeof name, "%s", xattn_context_backend_name(ctx));
    xattn_context_destroy(&ctx);
    assert_string_equal(name, cuda > 0 ? "cuda" : "hip");
}

static void test_good_module_buffers_round_trip(void **state)
{
    (void)state;
    xt_setenv("XATTN_BACKEND", "hip");
    xattn_context *ctx = xt_context();
    enum { N = 777 };
    unsigned char src[N], dst[N];
    for (int i = 0; i < N; i++) src[i] = (unsigned char)(i ^ 0x5c);
    xattn_buffer *buf = NULL;
    XT_ASSERT_STATUS(xattn_buffer_alloc(ctx, N, &buf), XATTN_OK);
    assert_int_equal(xattn_buffer_size(buf), N);
    assert_non_null(xattn_buffer_native(buf));
    XT_ASSERT_STATUS(xattn_buffer_write(buf, 0, src, N), XATTN_OK);
    memset(dst, 0, sizeof dst);
    XT_ASSERT_STATUS(xattn_buffer_read(buf, 0, dst, N), XATTN_OK);
    assert_memory_equal(dst, src, N);
    /* The fake keeps buffers in host memory: its native handle is the data. */
    assert_memory_equal(xattn_buffer_native(buf), src, N);
    XT_ASSERT_STATUS(xattn_buffer_read(buf, 100, dst, 50), XATTN_OK);
    assert_memory_equal(dst, src + 100, 50);
    xattn_buffer_free(&buf);
    assert_null(buf);
    xattn_context_destroy(&ctx);
}

static void test_good_module_merge_states_is_unsupported_naming_backend(void **state)
{
    (void)state;
    xt_setenv("XATTN_BACKEND", "hip");
    xattn_context *ctx = xt_context();
    enum { N = 2, H = 2, DIM = 8 };
    const int64_t o_shape[3] = {N, H, DIM};
    const int64_t l_shape[2] = {H, N};
    xattn_buffer *bufs[6];
    xattn_tensor t[6];
    for (int i = 0; i < 6; i++) {
        int is_lse = i % 2;
        size_t bytes = (is_lse ? N * H : N * H * DIM) * sizeof(float);
        bufs[i] = xt_buffer(ctx, bytes, 0);
        t[i] = xattn_tensor_contiguous(bufs[i], 0, XATTN_F32, is_lse ? 2 : 3,
                                       is_lse ? l_shape : o_shape);
    }
    xattn_status st = xattn_merge_states(ctx, &t[0], &t[1], &t[2], &t[3], &t[4], &t[5]);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", xattn_last_error());
    for (int i = 0; i < 6; i++) xattn_buffer_free(&bufs[i]);
    xattn_context_destroy(&ctx);
    XT_ASSERT_STATUS(st, XATTN_ERR_UNSUPPORTED);
    if (!xt_mentions(msg, "hip")) fail_msg("message \"%s\" does not name hip", msg);
}

static void test_good_module_attention_is_unsupported_naming_backend(void **state)
{
    (void)state;
    xt_setenv("XATTN_BACKEND", "hip");
    xattn_context *ctx = xt_context();
    xattn_attn_desc d;
    memset(&d, 0, sizeof d);
    d.dtype = XATTN_F32;
    d.batch = 1;
    d.num_q_heads = d.num_kv_heads = 1;
    d.head_dim_qk = d.head_dim_v = 8;
    d.seqlen_q = 2;
    d.seqlen_k = 3;
    xattn_plan *plan = NULL;
    xattn_status st = xattn_plan_create(ctx, &d, &plan);
    if (st != XATTN_OK) {
        xattn_context_destroy(&ctx);
        XT_ASSERT_STATUS(st, XATTN_OK);
    }
    const int64_t q_shape[4] = {1, 2, 1, 8};
    const int64_t k_shape[4] = {1, 3, 1, 8};
    xattn_buffer *bq = xt_buffer(ctx, 2 * 8 * sizeof(float), 0);
    xattn_buffer *bk = xt_buffer(ctx, 3 * 8 * sizeof(float), 0);
    xattn_buffer *bv = xt_buffer(ctx, 3 * 8 * sizeof(float), 0);
    xattn_buffer *bo = xt_buffer(ctx, 2 * 8 * sizeof(float), XT_SENTINEL_O);
    size_t ws_bytes = xattn_plan_workspace_size(plan);
    xattn_buffer *ws = ws_bytes ? xt_buffer(ctx, ws_bytes, 0) : NULL;
    xattn_attn_args a;
    memset(&a, 0, sizeof a);
    a.q = xattn_tensor_contiguous(bq, 0, XATTN_F32, 4, q_shape);
    a.k = xattn_tensor_contiguous(bk, 0, XATTN_F32, 4, k_shape);
    a.v = xattn_tensor_contiguous(bv, 0, XATTN_F32, 4, k_shape);
    a.o = xattn_tensor_contiguous(bo, 0, XATTN_F32, 4, q_shape);
    a.workspace = ws;
    st = xattn_attn_run(plan, &a);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", xattn_last_error());
    xattn_plan_destroy(&plan);
    xattn_buffer_free(&bq);
    xattn_buffer_free(&bk);
    xattn_buffer_free(&bv);
    xattn_buffer_free(&bo);
    xattn_buffer_free(&ws);
    xattn_context_destroy(&ctx);
    XT_ASSERT_STATUS(st, XATTN_ERR_UNSUPPORTED);
    if (!xt_mentions(msg, "hip")) fail_msg("message \"%s\" does not name hip", msg);
}

/* ---- badabi ---------------------------------------------------------- */

static void test_module_with_wrong_abi_version_is_rejected(void **state)
{
    (void)state;
    char reason[512];
    const xattn_backend_vtable *vt = load_module(reason, sizeof reason);
    assert_null(vt);
    check_reason_names(reason, "ABI");
    check_reason_names(reason, "7");
}

static void test_context_refuses_module_with_wrong_abi_version(void **state)
{
    (void)state;
    expect_hip_unavailable("ABI");
}

static void test_probe_reports_wrong_abi_as_zero_devices(void **state)
{
    (void)state;
    expect_probe_zero("ABI");
}

static void test_auto_skips_module_with_wrong_abi_version(void **state)
{
    (void)state;
    expect_auto_skips_hip();
}

/* ---- noentry --------------------------------------------------------- */

static void test_module_without_entry_point_is_rejected(void **state)
{
    (void)state;
    char reason[512];
    const xattn_backend_vtable *vt = load_module(reason, sizeof reason);
    assert_null(vt);
    check_reason_names(reason, XATTN_BACKEND_ENTRY_SYMBOL);
}

static void test_context_refuses_module_without_entry_point(void **state)
{
    (void)state;
    expect_hip_unavailable(XATTN_BACKEND_ENTRY_SYMBOL);
}

/* ---- missing --------------------------------------------------------- */

static void test_missing_module_file_is_not_found(void **state)
{
    (void)state;
    char reason[512];
    const xattn_backend_vtable *vt = load_module(reason, sizeof reason);
    assert_null(vt);
    check_reason_names(reason, "not found");
}

static void test_context_reports_missing_module_as_not_found(void **state)
{
    (void)state;
    expect_hip_unavailable("not found");
}

static void test_context_reports_missing_module_dir_as_not_found(void **state)
{
    (void)state;
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/no-such-directory", getenv("XATTN_BACKEND_DIR"));
    xt_setenv("XATTN_BACKEND_DIR", dir);
    expect_hip_unavailable("not found");
}

static void test_probe_reports_missing_module_as_zero_devices(void **state)
{
    (void)state;
    expect_probe_zero("not found");
}

static void test_auto_skips_missing_module(void **state)
{
    (void)state;
    expect_auto_skips_hip();
}

/* ---- damaged -------------------------------------------------------- */

/* A call that blocks fails the test after this long instead of hanging it. */
enum { HANG_SECONDS = 10 };

static char good_module[PATH_MAX]; /* the good fake module, copied from */
static char damaged_dir[256];    /* the temporary XATTN_BACKEND_DIR */
static unsigned char *good_bytes;
static size_t good_size;

static void on_hang(int sig)
{
    (void)sig;
    static const char msg[] = "FAILED: loading a module blocked (timeout)\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(1);
}

static void remove_module(void)
{
    if (unlink(module_path) != 0) (void)rmdir(module_path);
}

static void write_module(const unsigned char *bytes, size_t n)
{
    remove_module();
    FILE *f = fopen(module_path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* The file at module_path is refused, with a reason naming word, by the
 * loader, an explicit context, probe and auto (which goes on to another
 * backend); none of them crashes or blocks. */
static void expect_refused(const char *word)
{
    alarm(HANG_SECONDS);
    char reason[512];
    const xattn_backend_vtable *vt = load_module(reason, sizeof reason);
    assert_null(vt);
    check_reason_names(reason, word);
    expect_hip_unavailable(word);
    expect_probe_zero(word);
    expect_auto_skips_hip();
    alarm(0);
}

static void test_truncated_module_is_refused_before_dlopen(void **state)
{
    (void)state;
    const ElfW(Ehdr) *eh = (const ElfW(Ehdr) *)good_bytes;
    const size_t cuts[] = {
        good_size / 2,                                 /* inside a segment */
        1000,
        good_size - 1,                                 /* the section headers */
        eh->e_phoff + eh->e_phentsize * 2 + 7,         /* inside the program headers */
    };
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        assert_true(cuts[i] < good_size);
        write_module(good_bytes, cuts[i]);
        expect_refused("truncated?");
    }
    write_module(good_bytes, sizeof *eh - 8); /* inside the ELF header */
    expect_refused("ELF header");
}

static void test_module_that_is_not_elf_is_refused(void **state)
{
    (void)state;
    static const unsigned char text[] = "#!/bin/sh\necho not a module\n";
    write_module(text, sizeof text - 1);
    expect_refused("ELF");
    write_module(text, 0);
    expect_refused("ELF");
}

static void test_module_for_another_machine_is_refused(void **state)
{
    (void)state;
    unsigned char *copy = malloc(good_size);
    assert_non_null(copy);
    ElfW(Ehdr) *eh = (ElfW(Ehdr) *)copy;

    memcpy(copy, good_bytes, good_size);
    eh->e_machine = eh->e_machine == EM_AARCH64 ? EM_X86_64 : EM_AARCH64;
    write_module(copy, good_size);
    expect_refused("machine");

    memcpy(copy, good_bytes, good_size);
    eh->e_ident[EI_CLASS] = eh->e_ident[EI_CLASS] == ELFCLASS64 ? ELFCLASS32 : ELFCLASS64;
    write_module(copy, good_size);
    expect_refused("bit");

    memcpy(copy, good_bytes, good_size);
    eh->e_type = ET_EXEC;
    write_module(copy, good_size);
    expect_refused("shared object");
    free(copy);
}

static void test_module_path_that_is_a_fifo_is_refused_without_blocking(void **state)
{
    (void)state;
    remove_module();
    assert_int_equal(mkfifo(module_path, 0600), 0);
    expect_refused("FIFO");
}

static void test_module_path_that_is_a_directory_is_refused(void **state)
{
    (void)state;
    remove_module();
    assert_int_equal(mkdir(module_path, 0700), 0);
    expect_refused("directory");
}

static void test_module_reached_through_a_symlink_loads(void **state)
{
    (void)state;
    remove_module();
    assert_int_equal(symlink(good_module, module_path), 0);
    char reason[512];
    const xattn_backend_vtable *vt = load_module(reason, sizeof reason);
    if (!vt) fail_msg("xattn_module_load(%s) failed: %s", module_path, reason);
    assert_string_equal(vt->name, "hip");
}

static int damaged_setup(void **state)
{
    (void)state;
    FILE *f = fopen(good_module, "rb");
    if (!f) return -1;
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || st.st_size < (off_t)sizeof(ElfW(Ehdr))) return -1;
    good_size = (size_t)st.st_size;
    good_bytes = malloc(good_size);
    int ok = good_bytes && fread(good_bytes, 1, good_size, f) == good_size;
    fclose(f);
    if (!ok) return -1;
    snprintf(damaged_dir, sizeof damaged_dir, "/tmp/xattn-test-loader-XXXXXX");
    if (!mkdtemp(damaged_dir)) return -1;
    snprintf(module_path, sizeof module_path, "%s/libxattn-hip.so", damaged_dir);
    signal(SIGALRM, on_hang);
    return setenv("XATTN_BACKEND_DIR", damaged_dir, 1);
}

static int damaged_teardown(void **state)
{
    (void)state;
    remove_module();
    (void)rmdir(damaged_dir);
    free(good_bytes);
    return 0;
}

static int run_damaged(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_truncated_module_is_refused_before_dlopen,
                                  xt_env_teardown),
        cmocka_unit_test_teardown(test_module_that_is_not_elf_is_refused, xt_env_teardown),
        cmocka_unit_test_teardown(test_module_for_another_machine_is_refused, xt_env_teardown),
        cmocka_unit_test_teardown(test_module_path_that_is_a_fifo_is_refused_without_blocking,
                                  xt_env_teardown),
        cmocka_unit_test_teardown(test_module_path_that_is_a_directory_is_refused,
                                  xt_env_teardown),
        cmocka_unit_test_teardown(test_module_reached_through_a_symlink_loads, xt_env_teardown),
    };
    return cmocka_run_group_tests_name("loader: damaged module files", tests, damaged_setup,
                                       damaged_teardown);
}

#define T(f) cmocka_unit_test_teardown(f, xt_env_teardown)

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "damaged") && argc > 2) {
        /* absolute: the symlink test points at it from another directory */
        if (!realpath(argv[2], good_module)) {
            fprintf(stderr, "%s: no module %s\n", argv[0], argv[2]);
            return 1;
        }
        return run_damaged();
    }
    const char *dir = getenv("XATTN_BACKEND_DIR");
    if (!dir || !*dir) {
        fprintf(stderr, "%s: XATTN_BACKEND_DIR must name the module directory\n", argv[0]);
        return 1;
    }
    snprintf(module_path, sizeof module_path, "%s/libxattn-hip.so", dir);

    if (!strcmp(mode, "good")) {
        const struct CMUnitTest tests[] = {
            T(test_good_module_loads_with_current_abi),
            T(test_good_module_serves_context_from_env),
            T(test_good_module_serves_context_from_options),
            T(test_good_module_device_index_beyond_probe_is_rejected),
            T(test_good_module_probe_counts_its_devices),
            T(test_auto_picks_gpu_module_before_cpu),
            T(test_good_module_buffers_round_trip),
            T(test_good_module_merge_states_is_unsupported_naming_backend),
            T(test_good_module_attention_is_unsupported_naming_backend),
        };
        return cmocka_run_group_tests_name("loader: good module", tests, NULL, NULL);
    }
    if (!strcmp(mode, "badabi")) {
        const struct CMUnitTest tests[] = {
            T(test_module_with_wrong_abi_version_is_rejected),
            T(test_context_refuses_module_with_wrong_abi_version),
            T(test_probe_reports_wrong_abi_as_zero_devices),
            T(test_auto_skips_module_with_wrong_abi_version),
        };
        return cmocka_run_group_tests_name("loader: wrong ABI version", tests, NULL, NULL);
    }
    if (!strcmp(mode, "noentry")) {
        const struct CMUnitTest tests[] = {
            T(test_module_without_entry_point_is_rejected),
            T(test_context_refuses_module_without_entry_point),
        };
        return cmocka_run_group_tests_name("loader: no entry point", tests, NULL, NULL);
    }
    if (!strcmp(mode, "missing")) {
        const struct CMUnitTest tests[] = {
            T(test_missing_module_file_is_not_found),
            T(test_context_reports_missing_module_as_not_found),
            T(test_context_reports_missing_module_dir_as_not_found),
            T(test_probe_reports_missing_module_as_zero_devices),
            T(test_auto_skips_missing_module),
        };
        return cmocka_run_group_tests_name("loader: missing module", tests, NULL, NULL);
    }
    fprintf(stderr, "usage: %s good|badabi|noentry|missing | damaged GOOD_MODULE\n", argv[0]);
    return 1;
}
