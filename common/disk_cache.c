/* The on-disk kernel cache (disk_cache.h). */
#include "disk_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

enum {
    /* Longest key accepted: keys name sources, options and devices, a few
     * kilobytes at most. */
    MAX_KEY = 1 << 20,
    MAGIC_BYTES = 96,
    DIR_MODE = 0755,
};

uint64_t xattn_fnv1a64(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* The magic line for kind; its length, or 0 if it does not fit. */
static size_t magic_line(const char *kind, char *out)
{
    int n = snprintf(out, MAGIC_BYTES, "xattn-cache %d %s\n", XATTN_DISK_CACHE_VERSION, kind);
    return n > 0 && n < MAGIC_BYTES ? (size_t)n : 0;
}

/* mkdir -p; 0 when dir exists as a directory afterwards. */
static int make_dirs(char *dir)
{
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        int ok = mkdir(dir, DIR_MODE) == 0 || errno == EEXIST;
        *p = '/';
        if (!ok) return -1;
    }
    if (mkdir(dir, DIR_MODE) != 0 && errno != EEXIST) return -1;
    struct stat st;
    return stat(dir, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

int xattn_disk_cache_path(const char *prefix, uint64_t hash, char *out, size_t size)
{
    char dir[PATH_MAX];
    const char *base = getenv("XATTN_CACHE_DIR");
    int n;
    if (base && *base) {
        n = snprintf(dir, sizeof dir, "%s", base);
    } else if ((base = getenv("XDG_CACHE_HOME")) && *base) {
        n = snprintf(dir, sizeof dir, "%s/xattn", base);
    } else if ((base = getenv("HOME")) && *base) {
        n = snprintf(dir, sizeof dir, "%s/.cache/xattn", base);
    } else {
        return -1;
    }
    if (n < 0 || (size_t)n >= sizeof dir || make_dirs(dir) != 0) return -1;
    n = snprintf(out, size, "%s/%s-%016llx.bin", dir, prefix, (unsigned long long)hash);
    return n > 0 && (size_t)n < size ? 0 : -1;
}

/* ---- reading ---------------------------------------------------------------- */

static int read_all(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n) {
        ssize_t got = read(fd, p, n);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return -1;
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

/* Why a file's bytes do not hold (kind, key), or NULL, with the payload's
 * offset and length, when they do. *other is set when the file is whole
 * but belongs to another key (two keys with one hash). */
static const char *check_file(const unsigned char *buf, size_t n, const char *magic,
                              size_t magic_len, const char *key, size_t *offset, size_t *len,
                              int *other)
{
    const size_t key_len = strlen(key);
    *other = 0;
    if (n < magic_len + 8 + 8 + 8) return "shorter than a header";
    if (memcmp(buf, magic, magic_len) != 0) return "not a cache file of this kind and version";
    uint64_t stored_key_len, stored_len, stored_sum;
    memcpy(&stored_key_len, buf + magic_len, 8);
    memcpy(&stored_sum, buf + n - 8, 8);
    /* lengths first, so that no read below leaves the file */
    if (stored_key_len > n - magic_len - 24) return "its key runs past its end (damaged)";
    const size_t header = magic_len + 8 + (size_t)stored_key_len + 8; /* before the payload */
    memcpy(&stored_len, buf + header - 8, 8);
    if (stored_len != n - header - 8)
        return "its lengths do not add up to its size (truncated or damaged)";
    if (xattn_fnv1a64(XATTN_FNV1A64_BASIS, buf, n - 8) != stored_sum)
        return "checksum mismatch (damaged)";
    if (stored_key_len != key_len || memcmp(buf + magic_len + 8, key, key_len) != 0) {
        *other = 1;
        return "it holds another key";
    }
    *offset = header;
    *len = (size_t)stored_len;
    return NULL;
}

void *xattn_disk_cache_load(const char *path, const char *kind, const char *key,
                            size_t max_bytes, size_t *size)
{
    char magic[MAGIC_BYTES];
    const size_t magic_len = magic_line(kind, magic);
    const size_t key_len = strlen(key);
    if (!magic_len || key_len > MAX_KEY) return NULL;

    /* Non-blocking: a FIFO at the path must not wait for a writer. A
     * symlink is not followed: entries are only ever written as regular
     * files, so a link is not one of ours (it is replaced on store). */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        if (err == ENOENT)
            xattn_log(XATTN_LOG_DEBUG, "cache: no file %s", path);
        else
            xattn_log(XATTN_LOG_INFO, "cache: %s cannot be opened (%s); rebuilding it", path,
                      err == ELOOP ? "a symbolic link, not followed" : strerror(err));
        return NULL;
    }
    unsigned char *buf = NULL;
    const char *why = NULL;
    int other = 0;
    size_t offset = 0, len = 0;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        why = "cannot be examined";
    } else if (!S_ISREG(st.st_mode)) {
        why = "not a regular file";
    } else if ((uint64_t)st.st_size > (uint64_t)magic_len + 24 + key_len + max_bytes) {
        why = "larger than any entry of this kind";
    } else if (!(buf = malloc(st.st_size ? (size_t)st.st_size : 1))) {
        why = "no memory to read it";
    } else if (read_all(fd, buf, (size_t)st.st_size) != 0) {
        why = "shorter than its size (changed while read)";
    } else {
        why = check_file(buf, (size_t)st.st_size, magic, magic_len, key, &offset, &len, &other);
    }
    close(fd);
    if (why) {
        xattn_log(other ? XATTN_LOG_DEBUG : XATTN_LOG_INFO, "cache: %s %s; rebuilding it", path,
                  why);
        free(buf);
        return NULL;
    }
    memmove(buf, buf + offset, len);
    *size = len;
    return buf;
}

/* ---- writing ---------------------------------------------------------------- */

static int write_all(int fd, const void *p, size_t n, uint64_t *sum)
{
    *sum = xattn_fnv1a64(*sum, p, n);
    const char *s = p;
    while (n) {
        ssize_t put = write(fd, s, n);
        if (put < 0 && errno == EINTR) continue;
        if (put <= 0) return -1;
        s += put;
        n -= (size_t)put;
    }
    return 0;
}

int xattn_disk_cache_store(const char *path, const char *kind, const char *key,
                           const void *payload, size_t size)
{
    char magic[MAGIC_BYTES], tmp[PATH_MAX];
    const size_t magic_len = magic_line(kind, magic);
    const uint64_t key_len = strlen(key), len = size;
    int n = snprintf(tmp, sizeof tmp, "%s.XXXXXX", path);
    if (!magic_len || key_len > MAX_KEY || n < 0 || (size_t)n >= sizeof tmp) return -1;
    /* A unique name per writer: threads of one process, or processes, that
     * store the same entry at once each write their own file. */
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        xattn_log(XATTN_LOG_DEBUG, "cache: cannot create a file beside %s: %s", path,
                  strerror(errno));
        return -1;
    }
    uint64_t sum = XATTN_FNV1A64_BASIS, ignored = 0;
    int ok = write_all(fd, magic, magic_len, &sum) == 0 &&
             write_all(fd, &key_len, 8, &sum) == 0 && write_all(fd, key, key_len, &sum) == 0 &&
             write_all(fd, &len, 8, &sum) == 0 && write_all(fd, payload, size, &sum) == 0;
    const uint64_t total = sum;
    ok = ok && write_all(fd, &total, 8, &ignored) == 0;
    ok = close(fd) == 0 && ok;
    /* rename is atomic: a reader sees the old file or the whole new one */
    if (ok && rename(tmp, path) == 0) {
        xattn_log(XATTN_LOG_DEBUG, "cache: wrote %s", path);
        return 0;
    }
    xattn_log(XATTN_LOG_DEBUG, "cache: cannot write %s: %s", path, strerror(errno));
    (void)unlink(tmp);
    return -1;
}
