/* Attention, CPU style: not written yet. */
#include "ocl.h"

xattn_status ocl_attn_cpu_prepare(xattn_device *dev, const struct xattn_plan *plan, void **state)
{
    (void)dev; (void)plan;
    *state = NULL;
    return xattn_error(XATTN_ERR_UNSUPPORTED, "opencl: CPU-style attention is not written yet");
}
void ocl_attn_cpu_release(xattn_device *dev, void *state) { (void)dev; (void)state; }
xattn_status ocl_attn_cpu_run(xattn_device *dev, const struct xattn_plan *plan, const void *state,
                              const xattn_attn_launch *l)
{
    (void)dev; (void)plan; (void)state; (void)l;
    return xattn_error(XATTN_ERR_INTERNAL, "opencl: CPU-style attention is not written yet");
}
