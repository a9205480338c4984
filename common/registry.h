#pragma once
/* Backend registry: one table of {kind, name, module or built-in entry}.
 * Modules are shared objects named libxattn-<name>.so, looked up only in
 * XATTN_BACKEND_DIR when it is set, else beside the running libxattn in
 * xattn/ (an install, wherever its prefix is now) and backends/<name>/ (a
 * build tree), then in the configured install directory. */
#include <stddef.h>

#include "backend.h"
#include "internal_api.h"

/* Parse a backend name ("auto", "cpu", "opencl", "cuda", "hip").
 * Returns 0 and sets *kind, or -1 if unknown. */
XATTN_INTERNAL int xattn_backend_kind_parse(const char *name, xattn_backend_kind *kind);

/* The vtable of a backend, loading its module when asked (dlopen keeps one
 * copy of each file per process; modules are never unloaded). Thread-safe.
 * NULL with a reason ("module libxattn-hip.so not found in ...", "module
 * ...: backend ABI version 7, this libxattn needs 1", ...) on failure. */
XATTN_INTERNAL const xattn_backend_vtable *xattn_backend_get(xattn_backend_kind kind,
                                                        char *reason,
                                                        size_t reason_size);

/* "auto|cpu|opencl|cuda|hip", from the registry table, into buf. */
XATTN_INTERNAL void xattn_backend_values(char *buf, size_t size);

/* Load one module file: check the file first (a regular file holding a
 * whole ELF shared object for this machine, module_check.h), then its entry
 * point and ABI version. Does not cache. An accepted module stays loaded; a rejected one is closed. Used by the
 * registry and by the loader tests. */
XATTN_INTERNAL const xattn_backend_vtable *xattn_module_load(const char *path,
                                                        char *reason,
                                                        size_t reason_size);
