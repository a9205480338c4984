/* MoE expert GEMMs: not written yet. */
#include "ocl.h"

xattn_status ocl_moe_gemm_prepare(xattn_device *dev, const struct xattn_moe_plan *plan,
                                  ocl_moe_gemm **out)
{
    (void)dev; (void)plan;
    *out = NULL;
    return xattn_error(XATTN_ERR_UNSUPPORTED, "opencl: MoE GEMMs are not written yet");
}
void ocl_moe_gemm_release(xattn_device *dev, ocl_moe_gemm *g) { (void)dev; (void)g; }
xattn_status ocl_moe_gemm_run(xattn_device *dev, const struct xattn_moe_plan *plan,
                              ocl_moe_gemm *g, const xattn_moe_launch *l)
{
    (void)dev; (void)plan; (void)g; (void)l;
    return xattn_error(XATTN_ERR_INTERNAL, "opencl: MoE GEMMs are not written yet");
}
