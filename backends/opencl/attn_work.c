/* How many work-groups one attention run launches, for both kernel styles.
 *
 * With uniform Q, the plan's work items. With ragged Q the plan is sized for
 * the seqlen_q bound, but a run must cost what its real lengths cost (a
 * bound of 10^8 tokens over 10 real rows would otherwise launch 10^8 empty
 * groups). cu_seqlens_q is device memory the host does not read, so the
 * kernels number the tiles themselves (ragged_work in kernels/prelude.cl):
 * sequence b's tiles from ⌊cu_q[b]·pack / block_q⌋ + b on, all of them below
 * ⌊total_q·pack / block_q⌋ + B, which the host knows from Q's shape. */
#include "ocl.h"

int64_t ocl_attn_tile_space(const struct xattn_plan *plan, const xattn_attn_launch *l)
{
    return xattn_attn_tile_space(&plan->prob, &plan->params, l->total_q);
}

int64_t ocl_attn_groups(const struct xattn_plan *plan, const xattn_attn_launch *l)
{
    const xattn_attn_plan_params *p = &plan->params;
    const int64_t space = ocl_attn_tile_space(plan, l);
    if (!space) return p->num_work;
    return (int64_t)p->head_groups * space * p->kv_splits;
}
