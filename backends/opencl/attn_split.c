/* Split-KV merge (kernels/attn_split.cl): combines the plan's partial O and
 * LSE in the workspace (layout in common/plan.h) into O and LSE. Shared by
 * the CPU-style and GPU-style attention kernels; one program per (dtype, Dv,
 * dv_pad), everything else is an argument. */
#include "ocl.h"

xattn_status ocl_split_merge_prepare(xattn_device *dev, const struct xattn_plan *plan,
                                     ocl_split_merge *out)
{
    const xattn_attn_desc *d = &plan->prob.desc;
    char opts[160] = "";
    int bad = xattn_options_dtype(opts, sizeof opts, "IO", d->dtype);
    bad |= xattn_options_add(opts, sizeof opts, " -DDV=%d -DDV_PAD=%d", (int)d->head_dim_v,
                           (int)plan->params.dv_pad);
    if (bad) return xattn_error(XATTN_ERR_INTERNAL, "opencl: split merge options overflow");
    cl_program prog;
    XATTN_TRY(ocl_program_get(dev, "attn_split", opts, &prog));
    return ocl_kernel_create(dev, prog, "split_merge", &out->kernel);
}

void ocl_split_merge_release(xattn_device *dev, ocl_split_merge *m)
{
    if (m) ocl_kernel_release(dev, &m->kernel);
}

xattn_status ocl_split_merge_run(xattn_device *dev, const struct xattn_plan *plan,
                                 ocl_split_merge *m, const xattn_attn_launch *l)
{
    const xattn_attn_desc *d = &plan->prob.desc;
    const xattn_attn_plan_params *p = &plan->params;
    if (l->total_q <= 0) return XATTN_OK;
    cl_long total_q = l->total_q, hq = d->num_q_heads, seqlen_q = d->seqlen_q;
    cl_int q_ragged = d->q_layout == XATTN_Q_RAGGED, splits = p->kv_splits;
    cl_long part_rows = (cl_long)d->batch * d->seqlen_q;
    cl_ulong part_off = l->workspace.offset + p->partial_offset;
    cl_ulong o_off = l->o.ref.offset, lse_off = l->lse.offset, sinks_off = l->sinks.offset;
    cl_long o_sb = l->o.sb, o_st = l->o.st, o_sh = l->o.sh;
    cl_long lse_sh = l->lse_sh, lse_st = l->lse_st;
    cl_int has_lse = l->lse.native != NULL, has_sinks = l->sinks.native != NULL;
    const ocl_arg args[] = {
        OCL_ARG(total_q), OCL_ARG(hq), OCL_ARG(seqlen_q), OCL_ARG(q_ragged), OCL_ARG(splits),
        OCL_ARG(part_rows),
        OCL_ARG(l->workspace.native), OCL_ARG(part_off),
        OCL_ARG(l->o.ref.native), OCL_ARG(o_off), OCL_ARG(o_sb), OCL_ARG(o_st), OCL_ARG(o_sh),
        OCL_ARG(l->lse.native), OCL_ARG(lse_off), OCL_ARG(lse_sh), OCL_ARG(lse_st),
        OCL_ARG(has_lse), OCL_ARG(l->sinks.native), OCL_ARG(sinks_off), OCL_ARG(has_sinks),
    };
    size_t global[2] = {(size_t)hq, (size_t)total_q};
    return ocl_launch(dev, &m->kernel, (int)XATTN_ARRAY_SIZE(args), args, 2, global, NULL);
}
