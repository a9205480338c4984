/* Attention, CPU style (PoCL): kernels/attn_cpu.cl runs one work-group of
 * one work-item per plan work item, and with kv_splits > 1 the split-KV
 * merge (attn_split.c) combines the partials.
 *
 * The plan's tiles are used as they are: block_q rows (GQA heads packed as
 * gqa_pack says) and block_k keys per step, padded in the kernel to whole
 * float16 vectors of rows and S_KEYS keys. The plan's per-thread scratch in
 * the workspace is not used: __local memory, private to each group on PoCL,
 * plays its part. */
#include <stdlib.h>

#include "ocl.h"

enum {
    VW = 16,          /* f32 lanes of the kernel's float16 vectors */
    PV_MAX_NV = 4,    /* vectors of Dv in the kernel's P·V register block */
    NARROW_PV_ACC = 16, /* narrow P·V: accumulators of all rows, half the registers */
    OPTIONS_SIZE = 512,
    FLAG_LSE = 1,     /* kernel argument `flags` */
    FLAG_SINKS = 2,
};

typedef struct attn_cpu_state {
    ocl_kernel kernel;
    ocl_split_merge merge; /* zeroed (released as nothing) without splits */
} attn_cpu_state;

static int32_t round_up(int32_t x, int32_t m) { return (x + m - 1) / m * m; }

/* Vectors of Dv per P·V block: the largest of 4, 3, 2, 1 dividing the row;
 * narrow blocks hold every row, so rows × vectors stays within
 * NARROW_PV_ACC accumulators. */
static int32_t pv_vectors(int32_t dv_pad, int narrow, int32_t rows)
{
    int32_t nvec = dv_pad / VW;
    for (int32_t nv = PV_MAX_NV; nv > 1; nv--)
        if (nvec % nv == 0 && (!narrow || rows * nv <= NARROW_PV_ACC)) return nv;
    return 1;
}

xattn_status ocl_attn_cpu_prepare(xattn_device *dev, const struct xattn_plan *plan, void **state)
{
    const xattn_attn_desc *d = &plan->prob.desc;
    const xattn_attn_plan_params *p = &plan->params;
    *state = NULL;
    if (p->dqk_pad % VW || p->dv_pad % VW)
        return xattn_error(XATTN_ERR_UNSUPPORTED,
                           "opencl: CPU-style attention needs head dims padded to %d lanes "
                           "(plan: %d, %d)", VW, (int)p->dqk_pad, (int)p->dv_pad);
    /* Narrow plans (rows ≤ half a vector, decode): d in lanes, K and V read
     * in place; wide plans: rows in lanes, K and V tiles copied as f32. */
    const int narrow = 2 * p->block_q <= VW;
    char opts[OPTIONS_SIZE] = "";
    int bad = xattn_options_dtype(opts, sizeof opts, "IO", d->dtype);
    bad |= xattn_options_add(opts, sizeof opts,
                           " -DDQK=%d -DDV=%d -DDQK_PAD=%d -DDV_PAD=%d -DBLOCK_Q=%d -DBLOCK_K=%d"
                           " -DBQ_PAD=%d -DBK_PAD=%d -DPACK=%d -DPV_NV=%d -DSOFTCAP=%d -DALIBI=%d"
                           " -DNARROW=%d -DSTAGES=%d",
                           (int)d->head_dim_qk, (int)d->head_dim_v, (int)p->dqk_pad,
                           (int)p->dv_pad, (int)p->block_q, (int)p->block_k,
                           (int)round_up(p->block_q, VW), (int)round_up(p->block_k, VW),
                           (int)p->gqa_pack, (int)pv_vectors(p->dv_pad, narrow, p->block_q),
                           d->softcap > 0 ? 1 : 0, (d->flags & XATTN_ATTN_ALIBI) ? 1 : 0, narrow,
                           narrow ? (int)p->stages : 1);
    if (bad) return xattn_error(XATTN_ERR_INTERNAL, "opencl: attention options overflow");

    attn_cpu_state *s = calloc(1, sizeof *s);
    if (!s) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "opencl: out of memory");
    cl_program prog;
    xattn_status st = ocl_program_get(dev, "attn_cpu", opts, &prog);
    if (st == XATTN_OK) st = ocl_kernel_create(dev, prog, "attn_cpu", &s->kernel);
    if (st == XATTN_OK && p->kv_splits > 1) st = ocl_split_merge_prepare(dev, plan, &s->merge);
    if (st != XATTN_OK) {
        ocl_attn_cpu_release(dev, s);
        return st;
    }
    *state = s;
    return XATTN_OK;
}

void ocl_attn_cpu_release(xattn_device *dev, void *state)
{
    attn_cpu_state *s = state;
    if (!s) return;
    ocl_split_merge_release(dev, &s->merge);
    ocl_kernel_release(dev, &s->kernel);
    free(s);
}

xattn_status ocl_attn_cpu_run(xattn_device *dev, const struct xattn_plan *plan, const void *state,
                              const xattn_attn_launch *l)
{
    const attn_cpu_state *s = state;
    const xattn_attn_problem *prob = &plan->prob;
    const xattn_attn_desc *d = &prob->desc;
    const xattn_attn_plan_params *p = &plan->params;
    if (p->num_work <= 0) return XATTN_OK;

    cl_ulong q_off = l->q.ref.offset, k_off = l->k.ref.offset, v_off = l->v.ref.offset;
    cl_ulong o_off = l->o.ref.offset, lse_off = l->lse.offset;
    cl_long q_sb = l->q.sb, q_st = l->q.st, q_sh = l->q.sh;
    cl_long k_sb = l->k.sb, k_st = l->k.st, k_sh = l->k.sh;
    cl_long v_sb = l->v.sb, v_st = l->v.st, v_sh = l->v.sh;
    cl_long o_sb = l->o.sb, o_st = l->o.st, o_sh = l->o.sh;
    cl_long lse_sh = l->lse_sh, lse_st = l->lse_st;
    cl_ulong cu_q_off = l->cu_seqlens_q.offset, cu_k_off = l->cu_seqlens_k.offset;
    cl_ulong bt_off = l->block_table.offset, sk_off = l->seqlens_k.offset;
    cl_long bt_stride = l->block_table_stride;
    cl_ulong slopes_off = l->alibi_slopes.offset, sinks_off = l->sinks.offset;
    cl_ulong part_off = l->workspace.offset + p->partial_offset;
    cl_long total_q = l->total_q, total_k = l->total_k;
    cl_long part_rows = (cl_long)d->batch * d->seqlen_q;
    cl_int seqlen_q = d->seqlen_q, seqlen_k = d->seqlen_k, hq = d->num_q_heads;
    cl_int group = prob->group, head_groups = p->head_groups, q_tiles = p->q_tiles;
    cl_int kv_splits = p->kv_splits, kv_split_len = p->kv_split_len;
    cl_int q_ragged = d->q_layout == XATTN_Q_RAGGED;
    cl_int kv_layout = d->kv_layout == XATTN_KV_PAGED ? 2 : d->kv_layout == XATTN_KV_RAGGED ? 1 : 0;
    cl_int page_size = d->page_size, num_pages = d->num_pages, max_pages = d->max_pages_per_seq;
    cl_int wl = prob->window_left, wr = prob->window_right;
    cl_float scale = prob->scale, softcap = d->softcap;
    cl_int flags = (l->lse.native ? FLAG_LSE : 0) | (l->sinks.native ? FLAG_SINKS : 0);
    cl_int batch = d->batch;
    cl_long tile_space = ocl_attn_tile_space(plan, l);
    const ocl_arg args[] = {
        OCL_ARG(l->q.ref.native), OCL_ARG(q_off), OCL_ARG(q_sb), OCL_ARG(q_st), OCL_ARG(q_sh),
        OCL_ARG(l->k.ref.native), OCL_ARG(k_off), OCL_ARG(k_sb), OCL_ARG(k_st), OCL_ARG(k_sh),
        OCL_ARG(l->v.ref.native), OCL_ARG(v_off), OCL_ARG(v_sb), OCL_ARG(v_st), OCL_ARG(v_sh),
        OCL_ARG(l->o.ref.native), OCL_ARG(o_off), OCL_ARG(o_sb), OCL_ARG(o_st), OCL_ARG(o_sh),
        OCL_ARG(l->lse.native), OCL_ARG(lse_off), OCL_ARG(lse_sh), OCL_ARG(lse_st),
        OCL_ARG(l->cu_seqlens_q.native), OCL_ARG(cu_q_off),
        OCL_ARG(l->cu_seqlens_k.native), OCL_ARG(cu_k_off),
        OCL_ARG(l->block_table.native), OCL_ARG(bt_off), OCL_ARG(bt_stride),
        OCL_ARG(l->seqlens_k.native), OCL_ARG(sk_off),
        OCL_ARG(l->alibi_slopes.native), OCL_ARG(slopes_off),
        OCL_ARG(l->sinks.native), OCL_ARG(sinks_off),
        OCL_ARG(l->workspace.native), OCL_ARG(part_off),
        OCL_ARG(total_q), OCL_ARG(total_k), OCL_ARG(part_rows), OCL_ARG(seqlen_q),
        OCL_ARG(seqlen_k), OCL_ARG(hq),
        OCL_ARG(group), OCL_ARG(head_groups), OCL_ARG(q_tiles), OCL_ARG(kv_splits),
        OCL_ARG(kv_split_len), OCL_ARG(q_ragged), OCL_ARG(kv_layout), OCL_ARG(page_size),
        OCL_ARG(num_pages), OCL_ARG(max_pages), OCL_ARG(wl), OCL_ARG(wr), OCL_ARG(scale),
        OCL_ARG(softcap), OCL_ARG(flags), OCL_ARG(batch), OCL_ARG(tile_space),
    };
    /* One work-item per group: PoCL then runs each item as one thread of
     * straight vector code with its own __local scratch. */
    size_t global[1] = {(size_t)ocl_attn_groups(plan, l)}, local[1] = {1};
    XATTN_TRY(ocl_launch(dev, (ocl_kernel *)&s->kernel, (int)XATTN_ARRAY_SIZE(args), args, 1,
                         global, local));
    if (p->kv_splits > 1)
        XATTN_TRY(ocl_split_merge_run(dev, plan, (ocl_split_merge *)&s->merge, l));
    return XATTN_OK;
}
