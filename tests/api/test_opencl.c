/* The OpenCL module's own contract (docs/environment.md): caps read from the
 * device, XATTN_OPENCL_STYLE, and the on-disk program cache in
 * XATTN_CACHE_DIR (created when missing, reused across contexts, a corrupt
 * file rebuilt, an unusable directory only costs the cache). A damaged
 * binary behind a right header, a truncated file, a FIFO or a symlink at
 * the cache path, another writer's temporary file and threads building one
 * program at once must neither crash, block nor leave a bad file: the file
 * is rebuilt and replaced. The file format itself is tested without a
 * device in test_disk_cache.c.
 *
 * Needs an OpenCL device (PoCL in CI). Without one the whole suite is
 * skipped (exit 77) with the reason, unless XATTN_REQUIRE_BACKEND names
 * opencl, which turns the skip into a failure. */
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api_test.h"

enum {
    N = 5,
    HEADS = 3,
    DIM = 16,
    /* A cache read that blocks fails the test after this long. */
    HANG_SECONDS = 20,
};

static void on_hang(int sig)
{
    (void)sig;
    static const char msg[] = "FAILED: plan creation blocked on the cache file (timeout)\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(1);
}

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
 * formula: proves a program was built (or loaded) and runs correctly.
 * NULL when it did, else what went wrong; no cmocka assertion, so that
 * threads can call it. */
static const char *merge_error(xattn_context *ctx)
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
    if (xattn_buffer_alloc(ctx, 3 * o_bytes + 3 * l_bytes, &b) != XATTN_OK) return "alloc";
    const char *err = NULL;
    const int64_t os[3] = {N, HEADS, DIM}, ls[2] = {HEADS, N};
    xattn_tensor ta = xattn_tensor_contiguous(b, 0, XATTN_F32, 3, os);
    xattn_tensor tb = xattn_tensor_contiguous(b, o_bytes, XATTN_F32, 3, os);
    xattn_tensor to = xattn_tensor_contiguous(b, 2 * o_bytes, XATTN_F32, 3, os);
    xattn_tensor tla = xattn_tensor_contiguous(b, 3 * o_bytes, XATTN_F32, 2, ls);
    xattn_tensor tlb = xattn_tensor_contiguous(b, 3 * o_bytes + l_bytes, XATTN_F32, 2, ls);
    xattn_tensor tl = xattn_tensor_contiguous(b, 3 * o_bytes + 2 * l_bytes, XATTN_F32, 2, ls);
    float o[N * HEADS * DIM], l[HEADS * N];
    if (xattn_buffer_write(b, 0, oa, o_bytes) != XATTN_OK ||
        xattn_buffer_write(b, o_bytes, ob, o_bytes) != XATTN_OK ||
        xattn_buffer_write(b, 3 * o_bytes, la, l_bytes) != XATTN_OK ||
        xattn_buffer_write(b, 3 * o_bytes + l_bytes, lb, l_bytes) != XATTN_OK)
        err = "write";
    else if (xattn_merge_states(ctx, &ta, &tla, &tb, &tlb, &to, &tl) != XATTN_OK)
        err = "xattn_merge_states";
    else if (xattn_buffer_read(b, 2 * o_bytes, o, o_bytes) != XATTN_OK ||
             xattn_buffer_read(b, 3 * o_bytes + 2 * l_bytes, l, l_bytes) != XATTN_OK)
        err = "read";
    for (int t = 0; t < N && !err; t++)
        for (int h = 0; h < HEADS && !err; h++) {
            double a = la[h * N + t], c = lb[h * N + t];
            double lse = log(exp(a) + exp(c));
            if (!(fabs(l[h * N + t] - lse) < 1e-5)) err = "LSE differs from the formula";
            for (int d = 0; d < DIM && !err; d++) {
                int i = (t * HEADS + h) * DIM + d;
                double want = (exp(a) * oa[i] + exp(c) * ob[i]) / exp(lse);
                if (!(fabs(o[i] - want) < 1e-5 * (1.0 + fabs(want)))) err = "O differs";
            }
        }
    xattn_buffer_free(&b);
    return err;
}

static void run_merge(xattn_context *ctx)
{
    const char *err = merge_error(ctx);
    if (err) fail_msg("merge_states on OpenCL: %s (%s)", err, xattn_last_error());
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
    signal(SIGALRM, on_hang);
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

/* A fresh cache directory under cache_root holding the one program
 * run_merge builds; its path in file. */
static void cache_with_one_file(const char *name, char *dir, size_t dir_size, char *file,
                                size_t file_size)
{
    snprintf(dir, dir_size, "%s/%s", cache_root, name);
    xt_setenv("XATTN_CACHE_DIR", dir);
    xattn_context *ctx = open_opencl();
    run_merge(ctx);
    xattn_context_destroy(&ctx);
    assert_int_equal(cache_files(dir, file, file_size), 1);
}

/* A new context runs merge_states (building or loading its program) within
 * HANG_SECONDS; then the cache file is a regular file again, and a
 * further context loads it without rewriting it. */
static void rebuilt_and_replaced(const char *dir, const char *file)
{
    alarm(HANG_SECONDS);
    xattn_context *ctx = open_opencl();
    run_merge(ctx);
    xattn_context_destroy(&ctx);
    alarm(0);
    struct stat before, after;
    assert_int_equal(lstat(file, &before), 0);
    assert_true(S_ISREG(before.st_mode));
    ctx = open_opencl();
    run_merge(ctx);
    xattn_context_destroy(&ctx);
    assert_int_equal(lstat(file, &after), 0);
    assert_int_equal(before.st_ino, after.st_ino);
    assert_int_equal(cache_files(dir, NULL, 0), 1);
}

static unsigned char *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    struct stat st;
    assert_int_equal(fstat(fileno(f), &st), 0);
    *size = (size_t)st.st_size;
    unsigned char *p = malloc(*size);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, *size, f), *size);
    fclose(f);
    return p;
}

static void write_file(const char *path, const unsigned char *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* The header (format, key, lengths) intact, the binary behind it random:
 * before checksums, PoCL crashed inside clCreateProgramWithBinary. */
static void damaged_binary_behind_a_right_header_is_rebuilt(void **state)
{
    (void)state;
    char dir[300], file[600];
    cache_with_one_file("damaged", dir, sizeof dir, file, sizeof file);
    size_t n = 0;
    unsigned char *bytes = read_file(file, &n);
    /* The key is at most a few hundred bytes; the binary is the rest. */
    assert_true(n > 4096);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = n / 4; i < n - 16; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes[i] = (unsigned char)x;
    }
    write_file(file, bytes, n);
    free(bytes);
    rebuilt_and_replaced(dir, file);
}

static void truncated_cache_file_is_rebuilt(void **state)
{
    (void)state;
    char dir[300], file[600];
    cache_with_one_file("truncated", dir, sizeof dir, file, sizeof file);
    size_t n = 0;
    unsigned char *bytes = read_file(file, &n);
    write_file(file, bytes, n / 2);
    free(bytes);
    rebuilt_and_replaced(dir, file);
}

/* Opening a FIFO for reading waits for a writer: the cache must not. */
static void fifo_at_the_cache_path_does_not_block(void **state)
{
    (void)state;
    char dir[300], file[600];
    cache_with_one_file("fifo", dir, sizeof dir, file, sizeof file);
    assert_int_equal(unlink(file), 0);
    assert_int_equal(mkfifo(file, 0600), 0);
    rebuilt_and_replaced(dir, file);
}

/* A symlink is not followed (the cache only writes regular files): it is
 * replaced, and what it points at is neither read nor written. */
static void symlink_at_the_cache_path_is_replaced_not_followed(void **state)
{
    (void)state;
    char dir[300], file[600], target[340];
    cache_with_one_file("symlink", dir, sizeof dir, file, sizeof file);
    snprintf(target, sizeof target, "%s/elsewhere", cache_root);
    assert_int_equal(rename(file, target), 0);
    assert_int_equal(symlink(target, file), 0);
    struct stat before, after;
    assert_int_equal(stat(target, &before), 0);
    rebuilt_and_replaced(dir, file);
    assert_int_equal(stat(target, &after), 0);
    assert_int_equal(before.st_ino, after.st_ino);
    assert_int_equal(before.st_size, after.st_size);
    assert_int_equal(before.st_mtime, after.st_mtime);
}

/* Another writer of the same entry in this process is half-way through its
 * temporary file. Temporary names were "<file>.<pid>.tmp", the same for
 * every thread: this writer then truncated the other's file and renamed it
 * away. Each writer must have a file of its own. */
static void another_writers_temporary_file_is_left_alone(void **state)
{
    (void)state;
    char dir[300], file[600], tmp[700];
    cache_with_one_file("tmpname", dir, sizeof dir, file, sizeof file);
    assert_int_equal(unlink(file), 0);
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", file, (long)getpid());
    static const unsigned char theirs[] = "another writer's bytes";
    write_file(tmp, theirs, sizeof theirs);

    xattn_context *ctx = open_opencl();
    run_merge(ctx);
    xattn_context_destroy(&ctx);
    size_t n = 0;
    unsigned char *bytes = read_file(tmp, &n);
    assert_int_equal(n, sizeof theirs);
    assert_memory_equal(bytes, theirs, n);
    free(bytes);
    assert_int_equal(unlink(tmp), 0);
    rebuilt_and_replaced(dir, file);
}

/* Threads of one process, each with its own context (so nothing in the
 * module serialises them), build the same program into an empty cache at
 * once. */
enum { RACE_THREADS = 4 };

static pthread_barrier_t race_start;

static void *race_one(void *arg)
{
    (void)arg;
    xattn_context_options o = {0};
    o.backend = XATTN_BACKEND_OPENCL;
    xattn_context *ctx = NULL;
    const char *err = "context";
    if (xattn_context_create_with(&o, &ctx) == XATTN_OK) {
        pthread_barrier_wait(&race_start);
        err = merge_error(ctx);
        xattn_context_destroy(&ctx);
    } else {
        pthread_barrier_wait(&race_start);
    }
    return (void *)err;
}

static void threads_building_one_program_at_once_leave_one_good_file(void **state)
{
    (void)state;
    char dir[300], file[600];
    snprintf(dir, sizeof dir, "%s/race", cache_root);
    xt_setenv("XATTN_CACHE_DIR", dir);
    for (int round = 0; round < 3; round++) {
        if (cache_files(dir, file, sizeof file)) assert_int_equal(unlink(file), 0);
        pthread_t t[RACE_THREADS];
        assert_int_equal(pthread_barrier_init(&race_start, NULL, RACE_THREADS), 0);
        for (int i = 0; i < RACE_THREADS; i++)
            assert_int_equal(pthread_create(&t[i], NULL, race_one, NULL), 0);
        for (int i = 0; i < RACE_THREADS; i++) {
            void *err = NULL;
            assert_int_equal(pthread_join(t[i], &err), 0);
            if (err) fail_msg("thread %d: %s", i, (const char *)err);
        }
        pthread_barrier_destroy(&race_start);
        /* one file, no temporary left behind, and it loads */
        DIR *d = opendir(dir);
        assert_non_null(d);
        int entries = 0;
        for (struct dirent *e; (e = readdir(d)) != NULL;) entries += e->d_name[0] != '.';
        closedir(d);
        assert_int_equal(entries, 1);
        assert_int_equal(cache_files(dir, file, sizeof file), 1);
        rebuilt_and_replaced(dir, file);
    }
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

int main(int argc, char **argv)
{
    if (argc > 1) cmocka_set_test_filter(argv[1]); /* e.g. "*cache*" */
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
        cmocka_unit_test_teardown(damaged_binary_behind_a_right_header_is_rebuilt,
                                  xt_env_teardown),
        cmocka_unit_test_teardown(truncated_cache_file_is_rebuilt, xt_env_teardown),
        cmocka_unit_test_teardown(fifo_at_the_cache_path_does_not_block, xt_env_teardown),
        cmocka_unit_test_teardown(symlink_at_the_cache_path_is_replaced_not_followed,
                                  xt_env_teardown),
        cmocka_unit_test_teardown(another_writers_temporary_file_is_left_alone,
                                  xt_env_teardown),
        cmocka_unit_test_teardown(threads_building_one_program_at_once_leave_one_good_file,
                                  xt_env_teardown),
        cmocka_unit_test_teardown(unusable_cache_dir_only_costs_the_cache, xt_env_teardown),
    };
    return cmocka_run_group_tests_name("opencl module", tests, setup_cache, teardown_cache);
}
