/* CUDA backend module (libxattn-cuda.so). Placeholder while the module is
 * being written: it probes no device and says so. */
#include <stdio.h>

#include "cu.h"

static int32_t cu_probe(char *reason, size_t reason_size)
{
    if (reason_size) snprintf(reason, reason_size, "the CUDA module is being written");
    return 0;
}

static const xattn_backend_vtable cu_vtable = {
    .abi_version = XATTN_BACKEND_ABI_VERSION,
    .name = "cuda",
    .probe = cu_probe,
};

XATTN_API const xattn_backend_vtable *xattn_backend_entry(void);
XATTN_API const xattn_backend_vtable *xattn_backend_entry(void) { return &cu_vtable; }
