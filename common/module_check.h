#pragma once
/* The checks a backend module file passes before dlopen: dlopen maps the
 * file's segments as its headers describe them, so a truncated module
 * faults (SIGBUS) inside the loader instead of failing, and a FIFO blocks
 * the open forever. */
#include <stddef.h>

/* 0 when path names a regular file holding an ELF shared object for this
 * build (class, byte order, machine) whose headers and loadable segments
 * all lie inside the file; -1 otherwise, with a sentence in reason
 * ("module P is not a regular file (a FIFO)", "module P is not a valid ELF
 * shared object: segment 2 (bytes 8192 to 9297) ends past the end of the
 * file, 8248 bytes (truncated?)"). Opens
 * the file non-blocking and never follows more than the path's symlinks.
 * The file can still change between this check and dlopen; the check is
 * against damaged files, not against an attacker who can write them.
 * Thread-safety: safe. */
int xattn_module_file_check(const char *path, char *reason, size_t reason_size);
