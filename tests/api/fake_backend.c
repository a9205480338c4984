/* A test-only backend module for the loader and validation tests.
 *
 * Built as libxattn-hip.so so the registry loads it in place of the real HIP
 * module when XATTN_BACKEND_DIR points at its build directory. Buffers are
 * host memory (so the front end can check sequence lengths and block tables);
 * planning succeeds, and every primitive returns XATTN_ERR_UNSUPPORTED with a
 * message naming this backend. The caps are a GPU preset's (an MI300X, as
 * befits "hip"), so auto picks the module before the CPU and the real
 * planner plans GPU-style for it.
 *
 * FAKE_ABI_VERSION builds a module with a wrong ABI version; FAKE_ENTRY
 * renames the entry point to build a module the loader cannot use.
 *
 * It counts open devices, live buffers and plan states (fake_backend.h), so
 * the lifetime tests can check that a device closes only after the last
 * object made from it. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "fake_backend.h"

#ifndef FAKE_ABI_VERSION
#  define FAKE_ABI_VERSION XATTN_BACKEND_ABI_VERSION
#endif
#ifndef FAKE_ENTRY
#  define FAKE_ENTRY xattn_backend_entry
#endif

#define FAKE_NAME "hip"
#define FAKE_DEVICE_NAME "xattn test fake device"

enum { FAKE_ALIGN = 64 };

struct xattn_device {
    int32_t index;
};

/* Process-wide: a test runs one context at a time or checks totals. */
static atomic_int devices_open, buffers_live, states_live, closes_with_live;

XATTN_API void xattn_fake_backend_counts(xattn_fake_counts *out);

XATTN_API void xattn_fake_backend_counts(xattn_fake_counts *out)
{
    out->devices_open = atomic_load(&devices_open);
    out->buffers_live = atomic_load(&buffers_live);
    out->states_live = atomic_load(&states_live);
    out->closes_with_live = atomic_load(&closes_with_live);
}

static int32_t fake_probe(char *reason, size_t reason_size)
{
    if (reason_size) snprintf(reason, reason_size, "%s", "");
    return 1;
}

static xattn_status fake_device_open(int32_t index, const xattn_context_options *opts,
                                     xattn_device **out, xattn_device_caps *caps)
{
    if (opts && opts->native_queue)
        return xattn_error(XATTN_ERR_INVALID_ARGUMENT,
                           FAKE_NAME " (test module): native_queue must be NULL");
    xattn_device *dev = calloc(1, sizeof *dev);
    if (!dev) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, FAKE_NAME " (test module): out of memory");
    dev->index = index;
    if (!xattn_preset_caps("mi300x", caps)) {
        xattn_host_cpu_caps(1, caps);
        caps->style = XATTN_DEVICE_STYLE_GPU;
    }
    snprintf(caps->name, sizeof caps->name, "%s", FAKE_DEVICE_NAME);
    atomic_fetch_add(&devices_open, 1);
    *out = dev;
    return XATTN_OK;
}

static void fake_device_close(xattn_device *dev)
{
    if (atomic_load(&buffers_live) || atomic_load(&states_live))
        atomic_fetch_add(&closes_with_live, 1);
    atomic_fetch_sub(&devices_open, 1);
    free(dev);
}

static xattn_status fake_synchronize(xattn_device *dev)
{
    (void)dev;
    return XATTN_OK;
}

static xattn_status fake_buffer_alloc(xattn_device *dev, size_t bytes, void **native)
{
    (void)dev;
    size_t rounded = (bytes + FAKE_ALIGN - 1) / FAKE_ALIGN * FAKE_ALIGN;
    void *p = rounded >= bytes ? aligned_alloc(FAKE_ALIGN, rounded) : NULL;
    if (!p) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, FAKE_NAME " (test module): %zu bytes", bytes);
    atomic_fetch_add(&buffers_live, 1);
    *native = p;
    return XATTN_OK;
}

static void fake_buffer_free(xattn_device *dev, void *native)
{
    (void)dev;
    atomic_fetch_sub(&buffers_live, 1);
    free(native);
}

static xattn_status fake_buffer_write(xattn_device *dev, void *native, size_t offset,
                                      const void *src, size_t bytes)
{
    (void)dev;
    memcpy((char *)native + offset, src, bytes);
    return XATTN_OK;
}

static xattn_status fake_buffer_read(xattn_device *dev, const void *native,
                                     size_t offset, void *dst, size_t bytes)
{
    (void)dev;
    memcpy(dst, (const char *)native + offset, bytes);
    return XATTN_OK;
}

static void *fake_buffer_host_ptr(xattn_device *dev, void *native)
{
    (void)dev;
    return native;
}

/* The state is real memory so that LeakSanitizer reports a plan whose
 * destruction forgets attn_release. */
static xattn_status fake_attn_prepare(xattn_device *dev, const struct xattn_plan *plan,
                                      void **state)
{
    (void)dev;
    (void)plan;
    *state = malloc(16);
    if (!*state) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, FAKE_NAME " (test module): out of memory");
    atomic_fetch_add(&states_live, 1);
    return XATTN_OK;
}

static void fake_attn_release(xattn_device *dev, void *state)
{
    (void)dev;
    if (state) atomic_fetch_sub(&states_live, 1);
    free(state);
}

static xattn_status fake_attn_run(xattn_device *dev, const struct xattn_plan *plan,
                                  const void *state, const xattn_attn_launch *launch)
{
    (void)dev;
    (void)plan;
    (void)launch;
    if (!state)
        return xattn_error(XATTN_ERR_INTERNAL, FAKE_NAME " (test module): run without prepare");
    return xattn_error(XATTN_ERR_UNSUPPORTED,
                       FAKE_NAME " (test module): attention is not implemented by this backend");
}

static xattn_status fake_kv_append(xattn_device *dev, const xattn_kv_append_launch *l)
{
    (void)dev;
    (void)l;
    return xattn_error(XATTN_ERR_UNSUPPORTED,
                       FAKE_NAME " (test module): kv_append is not implemented by this backend");
}

static xattn_status fake_merge_states(xattn_device *dev, const xattn_merge_launch *l)
{
    (void)dev;
    (void)l;
    return xattn_error(XATTN_ERR_UNSUPPORTED,
                       FAKE_NAME " (test module): merge_states is not implemented by this backend");
}

static const xattn_backend_vtable fake_vtable = {
    .abi_version = FAKE_ABI_VERSION,
    .name = FAKE_NAME,
    .probe = fake_probe,
    .device_open = fake_device_open,
    .device_close = fake_device_close,
    .synchronize = fake_synchronize,
    .buffer_alloc = fake_buffer_alloc,
    .buffer_free = fake_buffer_free,
    .buffer_write = fake_buffer_write,
    .buffer_read = fake_buffer_read,
    .buffer_host_ptr = fake_buffer_host_ptr,
    .attn_prepare = fake_attn_prepare,
    .attn_release = fake_attn_release,
    .attn_run = fake_attn_run,
    .kv_append = fake_kv_append,
    .merge_states = fake_merge_states,
};

XATTN_API const xattn_backend_vtable *FAKE_ENTRY(void);

XATTN_API const xattn_backend_vtable *FAKE_ENTRY(void) { return &fake_vtable; }
