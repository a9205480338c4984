/* Split-KV merge: not written yet. */
#include "ocl.h"

xattn_status ocl_split_merge_prepare(xattn_device *dev, const struct xattn_plan *plan,
                                     ocl_split_merge *out)
{
    (void)dev; (void)plan; (void)out;
    return xattn_error(XATTN_ERR_UNSUPPORTED, "opencl: split-KV merge is not written yet");
}
void ocl_split_merge_release(xattn_device *dev, ocl_split_merge *m) { (void)dev; (void)m; }
xattn_status ocl_split_merge_run(xattn_device *dev, const struct xattn_plan *plan,
                                 ocl_split_merge *m, const xattn_attn_launch *l)
{
    (void)dev; (void)plan; (void)m; (void)l;
    return xattn_error(XATTN_ERR_INTERNAL, "opencl: split-KV merge is not written yet");
}
