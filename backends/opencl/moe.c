/* MoE: not written yet. */
#include "ocl.h"

xattn_status ocl_moe_prepare(xattn_device *dev, const struct xattn_moe_plan *plan, void **state)
{
    (void)dev; (void)plan;
    *state = NULL;
    return xattn_error(XATTN_ERR_UNSUPPORTED, "opencl: MoE is not written yet");
}
void ocl_moe_release(xattn_device *dev, void *state) { (void)dev; (void)state; }
xattn_status ocl_moe_run(xattn_device *dev, const struct xattn_moe_plan *plan, const void *state,
                         xattn_moe_op op, const xattn_moe_launch *l)
{
    (void)dev; (void)plan; (void)state; (void)op; (void)l;
    return xattn_error(XATTN_ERR_INTERNAL, "opencl: MoE is not written yet");
}
