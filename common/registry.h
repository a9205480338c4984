#pragma once
/* Backend registry: one table of {kind, name, module or built-in entry}.
 * Modules are shared objects named libxattn-<name>.so, looked up in
 * XATTN_BACKEND_DIR, then the install directory, then beside libxattn. */
#include <stddef.h>

#include "backend.h"

/* Parse a backend name ("auto", "cpu", "opencl", "cuda", "hip").
 * Returns 0 and sets *kind, or -1 if unknown. */
XATTN_API int xattn_backend_kind_parse(const char *name, xattn_backend_kind *kind);

/* The vtable of a backend, loading its module on first use (thread-safe,
 * loaded once per process). NULL with a reason ("module libxattn-hip.so not
 * found in ...", "module ...: ABI version 7, expected 1", ...) on failure. */
XATTN_API const xattn_backend_vtable *xattn_backend_get(xattn_backend_kind kind,
                                                        char *reason,
                                                        size_t reason_size);

/* Load one module file and check its entry point and ABI version. Does not
 * cache. The handle is kept open (modules are never unloaded). Used by the
 * registry and by the loader tests. */
XATTN_API const xattn_backend_vtable *xattn_module_load(const char *path,
                                                        char *reason,
                                                        size_t reason_size);
