/* Attention (kernels/attn.cu, kernels/attn_split.cu): one warp per query
 * row, head and KV split, the plan's splits merged by split_merge. prepare
 * compiles the plan's variants; run only launches.
 *
 * This is the general kernel every plan runs today, correct for every
 * feature but not the tensor-core FlashAttention-2 kernel the plan's tiles
 * describe (block_q × block_k tiles through shared memory on mma.sync):
 * that one is still to be written, and docs/perf.md says so. */
#include <stdlib.h>
#include <string.h>

#include "cu.h"

enum {
    WARPS = 4,             /* rows per block of attn_rows and split_merge */
    THREADS = WARPS * 32,
    MAX_GRID_Y = 65535,
};

/* The kernel's argument, field for field as attn_args in kernels/attn.cu
 * (same types, same order: the C and CUDA layouts agree on x86-64 and
 * aarch64). Passed by value. */
typedef struct attn_args {
    int32_t batch, seqlen_q, seqlen_k, hq, group, kv_splits, split_len;
    int32_t q_ragged, kv_layout, page_size, num_pages, max_pages;
    int64_t total_q, total_k;
    int32_t wl, wr;
    float scale, softcap;
    int32_t has_lse, has_alibi, has_sinks;
    CUdeviceptr q;
    int64_t q_sb, q_st, q_sh;
    CUdeviceptr k;
    int64_t k_sb, k_st, k_sh;
    CUdeviceptr v;
    int64_t v_sb, v_st, v_sh;
    CUdeviceptr o;
    int64_t o_sb, o_st, o_sh;
    CUdeviceptr lse;
    int64_t lse_sh, lse_st;
    CUdeviceptr cu_q, cu_k, block_table;
    int64_t bt_stride;
    CUdeviceptr seqlens_k;
    CUdeviceptr slopes, sinks;
    CUdeviceptr part;
} attn_args;

typedef struct attn_state {
    int nvar;
    cu_kernel k[2][CU_MAX_KERNELS]; /* [0][0] attn_rows, [1][0] split_merge */
} attn_state;

xattn_status cu_attn_variants(const struct xattn_plan *plan, const xattn_device_caps *caps,
                              cu_variant *out, int *n)
{
    const xattn_attn_plan_params *p = &plan->params;
    const xattn_attn_desc *d = &plan->prob.desc;
    (void)caps;
    *n = 0;
    if (p->kv_splits < 1 || p->kv_splits > MAX_GRID_Y)
        return xattn_error(XATTN_ERR_UNSUPPORTED, "cuda: attention plan with %d KV splits",
                           (int)p->kv_splits);
    memset(out, 0, 2 * sizeof *out);
    cu_variant *v = &out[0];
    v->source = "attn";
    if (cu_options_dtype(v->options, sizeof v->options, "IO", d->dtype) ||
        cu_options_add(v->options, sizeof v->options, " -DDQK=%d -DDV=%d -DDV_PAD=%d -DWARPS=%d",
                       (int)d->head_dim_qk, (int)d->head_dim_v, (int)p->dv_pad, WARPS))
        return xattn_error(XATTN_ERR_INTERNAL, "cuda: attention options too long");
    v->kernels[0] = "attn_rows";
    v->hot = 1;
    v->threads = THREADS;
    *n = 1;
    if (p->kv_splits > 1) {
        cu_variant *m = &out[1];
        m->source = "attn_split";
        if (cu_options_dtype(m->options, sizeof m->options, "IO", d->dtype) ||
            cu_options_add(m->options, sizeof m->options, " -DDV=%d -DDV_PAD=%d",
                           (int)d->head_dim_v, (int)p->dv_pad))
            return xattn_error(XATTN_ERR_INTERNAL, "cuda: merge options too long");
        m->kernels[0] = "split_merge";
        m->threads = THREADS;
        *n = 2;
    }
    return XATTN_OK;
}

xattn_status cu_attn_prepare(xattn_device *dev, const struct xattn_plan *plan, void **state)
{
    *state = NULL;
    cu_variant v[CU_MAX_VARIANTS];
    int n = 0;
    XATTN_TRY(cu_attn_variants(plan, &dev->caps, v, &n));
    attn_state *s = calloc(1, sizeof *s);
    if (!s) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "cuda: out of memory");
    xattn_status st = cu_variants_load(dev, v, n, s->k);
    if (st != XATTN_OK) {
        free(s);
        return st;
    }
    s->nvar = n;
    *state = s;
    return XATTN_OK;
}

void cu_attn_release(xattn_device *dev, void *state)
{
    (void)dev;
    free(state); /* the functions belong to modules the device unloads */
}

xattn_status cu_attn_run(xattn_device *dev, const struct xattn_plan *plan, const void *state,
                         const xattn_attn_launch *l)
{
    const attn_state *s = state;
    const xattn_attn_plan_params *p = &plan->params;
    const xattn_attn_problem *prob = &plan->prob;
    const xattn_attn_desc *d = &prob->desc;
    if (!s) return xattn_error(XATTN_ERR_INTERNAL, "cuda: attention run without prepare");

    attn_args a;
    memset(&a, 0, sizeof a);
    a.batch = d->batch;
    a.seqlen_q = d->seqlen_q;
    a.seqlen_k = d->seqlen_k;
    a.hq = d->num_q_heads;
    a.group = prob->group;
    a.kv_splits = p->kv_splits;
    a.split_len = p->kv_split_len;
    a.q_ragged = d->q_layout == XATTN_Q_RAGGED;
    a.kv_layout = (int32_t)d->kv_layout;
    a.page_size = d->kv_layout == XATTN_KV_PAGED ? d->page_size : 1;
    a.num_pages = d->num_pages;
    a.max_pages = d->max_pages_per_seq;
    a.total_q = l->total_q;
    a.total_k = l->total_k;
    a.wl = prob->window_left;
    a.wr = prob->window_right;
    a.scale = prob->scale;
    a.softcap = d->softcap;
    a.has_lse = l->lse.native != NULL;
    a.has_alibi = l->alibi_slopes.native != NULL;
    a.has_sinks = l->sinks.native != NULL;
    a.q = cu_ptr(l->q.ref);
    a.q_sb = l->q.sb, a.q_st = l->q.st, a.q_sh = l->q.sh;
    a.k = cu_ptr(l->k.ref);
    a.k_sb = l->k.sb, a.k_st = l->k.st, a.k_sh = l->k.sh;
    a.v = cu_ptr(l->v.ref);
    a.v_sb = l->v.sb, a.v_st = l->v.st, a.v_sh = l->v.sh;
    a.o = cu_ptr(l->o.ref);
    a.o_sb = l->o.sb, a.o_st = l->o.st, a.o_sh = l->o.sh;
    a.lse = cu_ptr(l->lse);
    a.lse_sh = l->lse_sh, a.lse_st = l->lse_st;
    a.cu_q = cu_ptr(l->cu_seqlens_q);
    a.cu_k = cu_ptr(l->cu_seqlens_k);
    a.block_table = cu_ptr(l->block_table);
    a.bt_stride = l->block_table_stride;
    a.seqlens_k = cu_ptr(l->seqlens_k);
    a.slopes = cu_ptr(l->alibi_slopes);
    a.sinks = cu_ptr(l->sinks);
    /* Without splits the kernel never touches the workspace. */
    if (p->kv_splits > 1) {
        xattn_ref part = l->workspace;
        part.offset += p->partial_offset;
        a.part = cu_ptr(part);
    }

    int64_t rows = l->total_q * d->num_q_heads;
    int64_t blocks = (rows + WARPS - 1) / WARPS;
    if (blocks > INT32_MAX)
        return xattn_error(XATTN_ERR_UNSUPPORTED, "cuda: attention over %lld rows",
                           (long long)rows);
    void *args[] = {&a};
    XATTN_TRY(cu_launch(dev, &s->k[0][0], (unsigned)blocks, (unsigned)p->kv_splits, 1, args));
    if (p->kv_splits == 1) return XATTN_OK;

    int64_t total_q = l->total_q, hq = d->num_q_heads, seqlen_q = d->seqlen_q;
    int32_t q_ragged = a.q_ragged, splits = p->kv_splits;
    int64_t part_rows = (int64_t)d->batch * d->seqlen_q;
    int64_t o_sb = l->o.sb, o_st = l->o.st, o_sh = l->o.sh;
    int64_t lse_sh = l->lse_sh, lse_st = l->lse_st;
    int32_t has_lse = a.has_lse, has_sinks = a.has_sinks;
    void *margs[] = {&total_q, &hq, &seqlen_q, &q_ragged, &splits, &part_rows, &a.part, &a.o,
                     &o_sb, &o_st, &o_sh, &a.lse, &lse_sh, &lse_st, &has_lse, &a.sinks,
                     &has_sinks};
    return cu_launch(dev, &s->k[1][0], (unsigned)blocks, 1, 1, margs);
}
