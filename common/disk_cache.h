#pragma once
/* The on-disk cache of compiled kernels (XATTN_CACHE_DIR), shared by every
 * backend module that compiles at run time (OpenCL today; CUDA and HIP
 * follow the same rules by calling these functions).
 *
 * One file per entry, <dir>/<prefix>-<16 hex digits>.bin, holding
 *
 *   "xattn-cache <version> <kind>\n"     text, names the format and the kind
 *   u64 key length, the key              everything the payload depends on
 *   u64 payload length, the payload      e.g. a program binary
 *   u64 FNV-1a 64 of all the bytes above
 *
 * in the byte order of the machine that wrote it (a cache is per machine).
 * A file is used only if it is a regular file (opened non-blocking, a
 * symlink not followed), its size is exactly what its lengths say, the
 * kind and key match and the checksum verifies: a damaged file is never
 * handed to a driver. Files are written to a unique temporary name in the
 * same directory (mkstemp) and renamed over the old one, so a reader sees
 * a whole old file or a whole new one, and threads or processes writing
 * the same entry at once cannot mix their bytes. Failures only cost the
 * cache: nothing here returns an error to the caller of the library. */
#include <stddef.h>
#include <stdint.h>

#include "internal_api.h"

/* Bumped whenever the file layout changes; part of the magic line. */
#define XATTN_DISK_CACHE_VERSION 2

#define XATTN_FNV1A64_BASIS 0xcbf29ce484222325ull

/* 64-bit FNV-1a of n bytes, continuing from h (XATTN_FNV1A64_BASIS to
 * start). Thread-safety: safe. */
XATTN_INTERNAL uint64_t xattn_fnv1a64(uint64_t h, const void *p, size_t n);

/* Path of the cache file for (prefix, hash) into out: the directory from
 * XATTN_CACHE_DIR, else $XDG_CACHE_HOME/xattn, else $HOME/.cache/xattn,
 * created (with its parents) when missing. Returns 0, or -1 when there is
 * no usable directory (the caller then runs without a disk cache).
 * Thread-safety: safe. */
XATTN_INTERNAL int xattn_disk_cache_path(const char *prefix, uint64_t hash, char *out,
                                         size_t size);

/* The payload stored at path for (kind, key), malloc'd, with its length in
 * *size; NULL when there is none or the file does not pass every check
 * above (logged at info with the reason when the file exists but is
 * damaged, at debug otherwise), or when the payload is over max_bytes.
 * Thread-safety: safe. */
XATTN_INTERNAL void *xattn_disk_cache_load(const char *path, const char *kind, const char *key,
                                           size_t max_bytes, size_t *size);

/* Store payload for (kind, key) at path, replacing any file there (of any
 * type but a directory). Returns 0, or -1 (logged at debug) when it could
 * not be written. Thread-safety: safe, also against other processes. */
XATTN_INTERNAL int xattn_disk_cache_store(const char *path, const char *kind, const char *key,
                                          const void *payload, size_t size);
