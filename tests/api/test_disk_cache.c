/* The on-disk kernel cache every compiling backend uses (common/
 * disk_cache.h), on its own: what is stored loads back; a file that was
 * damaged in any one byte or cut at any length, or that is not a regular
 * file, never does (and never blocks); files are replaced whole. Runs
 * without any device. */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api_test.h"
#include "disk_cache.h"

enum {
    PAYLOAD = 3000,
    MAX_PAYLOAD = 1 << 20,
    /* A load that blocks fails the test after this long. */
    HANG_SECONDS = 10,
};

#define KIND "test-binary"
#define KEY "kernels/x.cl|-DX=1|device|driver 1.0"

static char root[256];
static unsigned char payload[PAYLOAD];

static void on_hang(int sig)
{
    (void)sig;
    static const char msg[] = "FAILED: a cache load blocked (timeout)\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(1);
}

static int setup(void **state)
{
    (void)state;
    snprintf(root, sizeof root, "/tmp/xattn-test-cache-XXXXXX");
    if (!mkdtemp(root)) return -1;
    for (int i = 0; i < PAYLOAD; i++) payload[i] = (unsigned char)(i * 131 + (i >> 8));
    signal(SIGALRM, on_hang);
    return 0;
}

static int teardown(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    return xt_env_teardown(state);
}

/* A cache directory of its own under root; the entry's path in path. */
static void entry_path(const char *name, char *path, size_t size)
{
    char dir[300];
    snprintf(dir, sizeof dir, "%s/%s/sub", root, name);
    xt_setenv("XATTN_CACHE_DIR", dir);
    assert_int_equal(xattn_disk_cache_path("test", 0x1234abcdull, path, size), 0);
    char want[400];
    snprintf(want, sizeof want, "%s/test-000000001234abcd.bin", dir);
    assert_string_equal(path, want);
}

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    struct stat st;
    assert_int_equal(fstat(fileno(f), &st), 0);
    *n = (size_t)st.st_size;
    unsigned char *p = malloc(*n + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, *n, f), *n);
    fclose(f);
    return p;
}

static void spill(const char *path, const unsigned char *p, size_t n)
{
    (void)unlink(path);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void expect_none(const char *path, const char *key)
{
    alarm(HANG_SECONDS);
    size_t n = 12345;
    void *got = xattn_disk_cache_load(path, KIND, key, MAX_PAYLOAD, &n);
    alarm(0);
    if (got) fail_msg("%s loaded although it should not", path);
    assert_int_equal(n, 12345); /* untouched */
}

static void expect_payload(const char *path)
{
    size_t n = 0;
    unsigned char *got = xattn_disk_cache_load(path, KIND, KEY, MAX_PAYLOAD, &n);
    assert_non_null(got);
    assert_int_equal(n, PAYLOAD);
    assert_memory_equal(got, payload, PAYLOAD);
    free(got);
}

static void stored_payload_loads_back(void **state)
{
    (void)state;
    char path[600];
    entry_path("roundtrip", path, sizeof path);
    expect_none(path, KEY); /* nothing yet */
    assert_int_equal(xattn_disk_cache_store(path, KIND, KEY, payload, PAYLOAD), 0);
    expect_payload(path);
    /* another key with the same file name, another kind, a smaller limit */
    expect_none(path, KEY "2");
    size_t n = 0;
    assert_null(xattn_disk_cache_load(path, "other-kind", KEY, MAX_PAYLOAD, &n));
    assert_null(xattn_disk_cache_load(path, KIND, KEY, PAYLOAD - 1, &n));
    /* a store replaces the file with a new one (rename: a new inode) */
    struct stat a, b;
    assert_int_equal(stat(path, &a), 0);
    assert_int_equal(xattn_disk_cache_store(path, KIND, KEY, payload, PAYLOAD), 0);
    assert_int_equal(stat(path, &b), 0);
    assert_true(a.st_ino != b.st_ino);
    expect_payload(path);
}

static void every_damaged_byte_is_caught(void **state)
{
    (void)state;
    char path[600];
    entry_path("bytes", path, sizeof path);
    assert_int_equal(xattn_disk_cache_store(path, KIND, KEY, payload, PAYLOAD), 0);
    size_t n = 0;
    unsigned char *good = slurp(path, &n);
    assert_int_equal(n, PAYLOAD + strlen(KEY) + 24 + strlen("xattn-cache 2 " KIND "\n"));
    for (size_t i = 0; i < n; i++)
        for (unsigned bit = 1; bit < 256; bit <<= 3) {
            good[i] ^= (unsigned char)bit;
            spill(path, good, n);
            expect_none(path, KEY);
            good[i] ^= (unsigned char)bit;
        }
    spill(path, good, n);
    expect_payload(path);
    free(good);
}

static void every_cut_and_extension_is_caught(void **state)
{
    (void)state;
    char path[600];
    entry_path("cuts", path, sizeof path);
    assert_int_equal(xattn_disk_cache_store(path, KIND, KEY, payload, PAYLOAD), 0);
    size_t n = 0;
    unsigned char *good = slurp(path, &n);
    for (size_t len = 0; len < n; len++) {
        spill(path, good, len);
        expect_none(path, KEY);
    }
    unsigned char *longer = malloc(n + 8);
    assert_non_null(longer);
    memcpy(longer, good, n);
    memset(longer + n, 0, 8);
    spill(path, longer, n + 8);
    expect_none(path, KEY);
    free(longer);
    free(good);
}

static void non_regular_files_are_refused_without_blocking(void **state)
{
    (void)state;
    char path[600], target[700];
    entry_path("special", path, sizeof path);

    assert_int_equal(mkfifo(path, 0600), 0);
    expect_none(path, KEY);
    /* a store replaces the FIFO with a regular file */
    assert_int_equal(xattn_disk_cache_store(path, KIND, KEY, payload, PAYLOAD), 0);
    expect_payload(path);

    /* a symlink to a good entry is not followed, and is replaced by a store
     * without touching its target */
    snprintf(target, sizeof target, "%s.target", path);
    assert_int_equal(rename(path, target), 0);
    assert_int_equal(symlink(target, path), 0);
    expect_none(path, KEY);
    assert_int_equal(xattn_disk_cache_store(path, KIND, KEY, payload, PAYLOAD), 0);
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    expect_payload(path);
    expect_payload(target);

    /* a directory cannot be replaced: the store fails, nothing else */
    assert_int_equal(unlink(path), 0);
    assert_int_equal(mkdir(path, 0700), 0);
    expect_none(path, KEY);
    assert_int_equal(xattn_disk_cache_store(path, KIND, KEY, payload, PAYLOAD), -1);
    assert_int_equal(rmdir(path), 0);
}

/* Writers of one entry each write a file of their own: one in the middle of
 * its temporary file is not disturbed, and no temporary file is left. */
static void writers_do_not_share_temporary_files(void **state)
{
    (void)state;
    char path[600], other[700], dir[600];
    entry_path("writers", path, sizeof path);
    snprintf(other, sizeof other, "%s.%ld.tmp", path, (long)getpid());
    static const unsigned char theirs[] = "another writer's bytes";
    spill(other, theirs, sizeof theirs);
    assert_int_equal(xattn_disk_cache_store(path, KIND, KEY, payload, PAYLOAD), 0);
    size_t n = 0;
    unsigned char *p = slurp(other, &n);
    assert_int_equal(n, sizeof theirs);
    assert_memory_equal(p, theirs, n);
    free(p);
    assert_int_equal(unlink(other), 0);
    expect_payload(path);

    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = '\0';
    DIR *d = opendir(dir);
    assert_non_null(d);
    int entries = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) entries += e->d_name[0] != '.';
    closedir(d);
    assert_int_equal(entries, 1);
}

static void unusable_directory_gives_no_path(void **state)
{
    (void)state;
    char file[300], dir[340], path[600];
    snprintf(file, sizeof file, "%s/a-file", root);
    spill(file, payload, 1);
    snprintf(dir, sizeof dir, "%s/sub", file);
    xt_setenv("XATTN_CACHE_DIR", dir);
    assert_int_equal(xattn_disk_cache_path("test", 1, path, sizeof path), -1);
    xt_setenv("XATTN_CACHE_DIR", file); /* a file, not a directory */
    assert_int_equal(xattn_disk_cache_path("test", 1, path, sizeof path), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(stored_payload_loads_back, xt_env_teardown),
        cmocka_unit_test_teardown(every_damaged_byte_is_caught, xt_env_teardown),
        cmocka_unit_test_teardown(every_cut_and_extension_is_caught, xt_env_teardown),
        cmocka_unit_test_teardown(non_regular_files_are_refused_without_blocking,
                                  xt_env_teardown),
        cmocka_unit_test_teardown(writers_do_not_share_temporary_files, xt_env_teardown),
        cmocka_unit_test_teardown(unusable_directory_gives_no_path, xt_env_teardown),
    };
    return cmocka_run_group_tests_name("disk cache", tests, setup, teardown);
}
