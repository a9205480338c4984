/* Attention, GPU style (kernels/attn_gpu.cl): one work-group of
 * params.threads work-items per plan work item, tiles in local memory.
 * prepare builds the kernel specialised to the plan's tiles and checks that
 * its local memory fits the plan; run only sets arguments and enqueues (and
 * the split-KV merge when the plan splits). */
#include <stdlib.h>

#include "ocl.h"

enum {
    CHUNK = 4,         /* elements per vector load: head dims pad to this */
    F32_BYTES = 4,
    OPTIONS_SIZE = 512,
};

typedef struct gpu_state {
    ocl_kernel kernel;
    ocl_split_merge merge; /* zeroed (released as nothing) without splits */
} gpu_state;

/* Work-items that share one row's softmax reductions: enough to keep the
 * group busy, at most one per warp because the planner sized the stats
 * region [2][warps][block_q], and never more than the keys. */
static int32_t softmax_parts(const xattn_device *dev, const xattn_attn_plan_params *p)
{
    int32_t simd = dev->caps.simd_width ? (int32_t)dev->caps.simd_width : 1;
    int32_t warps = p->threads / simd > 0 ? p->threads / simd : 1;
    int32_t parts = p->threads / p->block_q > 0 ? p->threads / p->block_q : 1;
    if (parts > warps) parts = warps;
    if (parts > p->block_k) parts = p->block_k;
    return parts;
}

/* Local memory the kernel declares, in the order of common/plan.c. */
static size_t kernel_local_bytes(const xattn_attn_plan_params *p, size_t esize, int32_t parts)
{
    size_t q = (size_t)p->block_q * (size_t)p->dqk_pad * esize;
    size_t kv = (size_t)p->stages * (size_t)p->block_k * (size_t)(p->dqk_pad + p->dv_pad) * esize;
    size_t pm = (size_t)p->block_q * (size_t)p->block_k * F32_BYTES;
    size_t stats = 2 * (size_t)parts * (size_t)p->block_q * F32_BYTES;
    return q + kv + pm + stats;
}

xattn_status ocl_attn_gpu_prepare(xattn_device *dev, const struct xattn_plan *plan, void **state)
{
    const xattn_attn_plan_params *p = &plan->params;
    const xattn_attn_desc *d = &plan->prob.desc;
    *state = NULL;
    if (p->style != XATTN_DEVICE_STYLE_GPU)
        return xattn_error(XATTN_ERR_INTERNAL, "opencl: GPU attention given a CPU-style plan");
    if (p->dqk_pad % CHUNK || p->dv_pad % CHUNK || p->threads < 1 || p->stages < 1)
        return xattn_error(XATTN_ERR_UNSUPPORTED,
                           "opencl: GPU attention needs head dims padded to %d (plan: %d, %d)",
                           CHUNK, (int)p->dqk_pad, (int)p->dv_pad);
    if ((size_t)p->threads > dev->max_group_size)
        return xattn_error(XATTN_ERR_UNSUPPORTED,
                           "opencl: GPU attention plan wants %d work-items per group, %s "
                           "allows %zu", (int)p->threads, dev->device_name, dev->max_group_size);
    int32_t parts = softmax_parts(dev, p);
    size_t lmem = kernel_local_bytes(p, xattn_dtype_size(d->dtype), parts);
    if (lmem > p->local_mem_bytes || (dev->local_mem_bytes && lmem > dev->local_mem_bytes))
        return xattn_error(XATTN_ERR_UNSUPPORTED,
                           "opencl: GPU attention tile needs %zu bytes of local memory, the plan "
                           "allows %zu", lmem, p->local_mem_bytes);

    char opts[OPTIONS_SIZE] = "";
    if (xattn_options_dtype(opts, sizeof opts, "IO", d->dtype) ||
        xattn_options_add(opts, sizeof opts,
                        " -DBLOCK_Q=%d -DBLOCK_K=%d -DTHREADS=%d -DSTAGES=%d -DDQK_PAD=%d "
                        "-DDV_PAD=%d -DPARTS=%d",
                        (int)p->block_q, (int)p->block_k, (int)p->threads, (int)p->stages,
                        (int)p->dqk_pad, (int)p->dv_pad, (int)parts))
        return xattn_error(XATTN_ERR_INTERNAL, "opencl: GPU attention options too long");

    gpu_state *s = calloc(1, sizeof *s);
    if (!s) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "opencl: out of memory");
    cl_program prog;
    xattn_status st = ocl_program_get(dev, "attn_gpu", opts, &prog);
    if (st == XATTN_OK) st = ocl_kernel_create(dev, prog, "attn_gpu", &s->kernel);
    if (st == XATTN_OK && s->kernel.max_group_size &&
        s->kernel.max_group_size < (size_t)p->threads)
        st = xattn_error(XATTN_ERR_UNSUPPORTED,
                         "opencl: GPU attention kernel allows %zu work-items per group on %s, "
                         "the plan wants %d", s->kernel.max_group_size, dev->device_name,
                         (int)p->threads);
    if (st == XATTN_OK && p->kv_splits > 1) st = ocl_split_merge_prepare(dev, plan, &s->merge);
    if (st != XATTN_OK) {
        ocl_attn_gpu_release(dev, s);
        return st;
    }
    *state = s;
    return XATTN_OK;
}

void ocl_attn_gpu_release(xattn_device *dev, void *state)
{
    gpu_state *s = state;
    if (!s) return;
    ocl_kernel_release(dev, &s->kernel);
    ocl_split_merge_release(dev, &s->merge);
    free(s);
}

xattn_status ocl_attn_gpu_run(xattn_device *dev, const struct xattn_plan *plan, const void *state,
                              const xattn_attn_launch *l)
{
    const gpu_state *s = state;
    const xattn_attn_plan_params *p = &plan->params;
    const xattn_attn_problem *prob = &plan->prob;
    const xattn_attn_desc *d = &prob->desc;
    if (!s) return xattn_error(XATTN_ERR_INTERNAL, "opencl: GPU attention run without prepare");

    cl_int batch = d->batch, seqlen_q = d->seqlen_q, seqlen_k = d->seqlen_k;
    cl_int hq = d->num_q_heads, group = prob->group, pack = p->gqa_pack;
    cl_int head_groups = p->head_groups, q_tiles = p->q_tiles, kv_splits = p->kv_splits;
    cl_int split_len = p->kv_split_len, dqk = d->head_dim_qk, dv = d->head_dim_v;
    cl_int q_ragged = d->q_layout == XATTN_Q_RAGGED, kv_layout = (cl_int)d->kv_layout;
    cl_int page_size = d->kv_layout == XATTN_KV_PAGED ? d->page_size : 1;
    cl_int num_pages = d->num_pages, max_pages = d->max_pages_per_seq;
    cl_long total_q = l->total_q, total_k = l->total_k;
    cl_int wl = prob->window_left, wr = prob->window_right;
    cl_float scale = prob->scale, softcap = d->softcap;
    cl_int has_lse = l->lse.native != NULL, has_alibi = l->alibi_slopes.native != NULL;
    cl_int has_sinks = l->sinks.native != NULL;
    cl_long tile_space = ocl_attn_tile_space(plan, l);

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
    /* Without splits the kernel never touches the workspace. */
    void *part = p->kv_splits > 1 ? l->workspace.native : NULL;

    const ocl_arg args[] = {
        OCL_ARG(batch), OCL_ARG(seqlen_q), OCL_ARG(seqlen_k), OCL_ARG(hq), OCL_ARG(group),
        OCL_ARG(pack), OCL_ARG(head_groups), OCL_ARG(q_tiles), OCL_ARG(kv_splits),
        OCL_ARG(split_len), OCL_ARG(dqk), OCL_ARG(dv), OCL_ARG(q_ragged), OCL_ARG(kv_layout),
        OCL_ARG(page_size), OCL_ARG(num_pages), OCL_ARG(max_pages), OCL_ARG(total_q),
        OCL_ARG(total_k),
        OCL_ARG(wl), OCL_ARG(wr), OCL_ARG(scale), OCL_ARG(softcap),
        OCL_ARG(has_lse), OCL_ARG(has_alibi), OCL_ARG(has_sinks), OCL_ARG(tile_space),
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
        OCL_ARG(part), OCL_ARG(part_off),
    };
    size_t local = (size_t)p->threads;
    size_t global = (size_t)ocl_attn_groups(plan, l) * local;
    XATTN_TRY(ocl_launch(dev, (ocl_kernel *)&s->kernel, (int)XATTN_ARRAY_SIZE(args), args, 1,
                         &global, &local));
    if (p->kv_splits > 1)
        return ocl_split_merge_run(dev, plan, (ocl_split_merge *)&s->merge, l);
    return XATTN_OK;
}
