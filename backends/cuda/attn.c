/* Attention (kernels/attn.cu, kernels/attn_split.cu): prepare compiles the
 * plan's variants; run only launches.
 *
 * f16/bf16 plans made for matrix units (mma.sync m16n8k16, sm_80 and later)
 * run attn_mma (attn.cu with -DMMA=1), the FlashAttention-2 kernel, one
 * block per plan work item; everything else (f32, IEEE on FMA, and plans
 * the mma kernel cannot take) runs attn_rows, one warp per query row. With
 * KV splits, split_merge combines the partials in the workspace. */
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
    int32_t pack, head_groups, q_tiles, aligned;
    int64_t tile_space;
} attn_args;

typedef struct attn_state {
    int nvar;
    int mma;                        /* k[0][0] is attn_mma, else attn_rows */
    cu_kernel k[2][CU_MAX_KERNELS]; /* [0][0] the attention kernel, [1][0] split_merge */
} attn_state;

enum {
    MMA_M = 16, MMA_N = 8, MMA_K = 16, /* mma.sync m16n8k16 */
    MAX_REGS = 255,        /* per thread on sm_80 and sm_90 */
    /* attn_mma's registers, from ptxas on sm_80 and sm_90a, grow with
     * O + 2·S, where O and S are the accumulator floats per lane (S counts
     * twice: its exponentials, packed P and the K fragments in flight grow
     * with it): O + 2·S = 80 takes 198 registers (D 128 in 4 warps of Dv,
     * and D 16 in 4 row bands), while 144 spills at 255 in both. Chunks of
     * keys are halved until O + 2·S + 130 fits. */
    MMA_REG_BASE = 130,
};

/* The warp layout and register split attn_mma takes for a plan, or 0 when
 * it cannot run the plan (attn_rows does). */
typedef struct mma_shape {
    int warps_m, warps_n, kc, q_regs;
    size_t smem;
} mma_shape;

static int mma_shape_of(const struct xattn_plan *plan, const xattn_device_caps *caps,
                        mma_shape *m)
{
    const xattn_attn_plan_params *p = &plan->params;
    const xattn_attn_desc *d = &plan->prob.desc;
    memset(m, 0, sizeof *m);
    if (d->dtype != XATTN_F16 && d->dtype != XATTN_BF16) return 0;
    uint32_t want = d->dtype == XATTN_F16 ? XATTN_MATRIX_F16 : XATTN_MATRIX_BF16;
    if (!(caps->matrix_dtypes & want) || caps->matrix_m != MMA_M || caps->matrix_n != MMA_N ||
        caps->matrix_k != MMA_K || caps->simd_width != 32)
        return 0;
    int warps = p->threads / 32;
    if (warps < 1 || p->threads % 32 || p->block_q % MMA_M || p->block_k % MMA_K ||
        p->dqk_pad % MMA_K || p->dv_pad % MMA_K || p->stages < 1)
        return 0;
    if (p->q_in_registers) return 0; /* attn_mma stages Q in shared memory */
    /* The planner's grid: row bands first, the rest split Dv. */
    int bands = p->block_q / MMA_M;
    m->warps_m = warps < bands ? warps : bands;
    if (warps % m->warps_m || bands % m->warps_m) return 0;
    m->warps_n = warps / m->warps_m;
    if (p->dv_pad % (MMA_N * m->warps_n)) return 0;
    int mr = bands / m->warps_m;
    int dvw = p->dv_pad / m->warps_n;
    int cap = MAX_REGS;
    if (65536 / p->threads < cap) cap = 65536 / p->threads;
    cap -= MMA_REG_BASE;
    int o_regs = mr * dvw / 2;
    /* S is MR·KC/2 floats per lane: halve the chunk until O and S fit. */
    m->kc = p->block_k;
    while (m->kc > MMA_K && m->kc % (2 * MMA_K) == 0 && o_regs + mr * m->kc > cap) m->kc /= 2;
    int s_regs = mr * m->kc / 2;
    if (o_regs + 2 * s_regs > cap) return 0;
    /* Q stays in registers when that leaves room; else each chunk re-reads
     * it from shared memory (cheap next to the K/V reads). */
    m->q_regs = o_regs + 2 * s_regs + mr * p->dqk_pad / 4 <= cap;
    size_t esize = 2;
    m->smem = esize * ((size_t)p->block_q * (size_t)p->dqk_pad +
                       (size_t)p->stages * (size_t)p->block_k * (size_t)(p->dqk_pad + p->dv_pad));
    if (m->smem > caps->local_mem_bytes) return 0;
    return 1;
}

xattn_status cu_attn_variants(const struct xattn_plan *plan, const xattn_device_caps *caps,
                              cu_variant *out, int *n)
{
    const xattn_attn_plan_params *p = &plan->params;
    const xattn_attn_desc *d = &plan->prob.desc;
    *n = 0;
    if (p->kv_splits < 1 || p->kv_splits > MAX_GRID_Y)
        return xattn_error(XATTN_ERR_UNSUPPORTED, "cuda: attention plan with %d KV splits",
                           (int)p->kv_splits);
    memset(out, 0, 2 * sizeof *out);
    cu_variant *v = &out[0];
    mma_shape ms;
    if (mma_shape_of(plan, caps, &ms)) {
        v->source = "attn";
        if (xattn_options_dtype(v->options, sizeof v->options, "IO", d->dtype) ||
            xattn_options_add(v->options, sizeof v->options,
                           " -DMMA=1 -DBQ=%d -DBK=%d -DKC=%d -DWARPS_M=%d -DWARPS_N=%d"
                           " -DSTAGES=%d -DDQK=%d -DDV=%d -DDQK_PAD=%d -DDV_PAD=%d -DQ_REGS=%d",
                           (int)p->block_q, (int)p->block_k, ms.kc, ms.warps_m, ms.warps_n,
                           (int)p->stages, (int)d->head_dim_qk, (int)d->head_dim_v,
                           (int)p->dqk_pad, (int)p->dv_pad, ms.q_regs))
            return xattn_error(XATTN_ERR_INTERNAL, "cuda: attention options too long");
        v->kernels[0] = "attn_mma";
        v->threads = ms.warps_m * ms.warps_n * 32;
        v->smem_bytes = ms.smem;
    } else {
        v->source = "attn";
        if (xattn_options_dtype(v->options, sizeof v->options, "IO", d->dtype) ||
            xattn_options_add(v->options, sizeof v->options,
                           " -DDQK=%d -DDV=%d -DDV_PAD=%d -DWARPS=%d", (int)d->head_dim_qk,
                           (int)d->head_dim_v, (int)p->dv_pad, WARPS))
            return xattn_error(XATTN_ERR_INTERNAL, "cuda: attention options too long");
        v->kernels[0] = "attn_rows";
        v->threads = THREADS;
    }
    v->hot = 1;
    *n = 1;
    if (p->kv_splits > 1) {
        cu_variant *m = &out[1];
        m->source = "attn_split";
        if (xattn_options_dtype(m->options, sizeof m->options, "IO", d->dtype) ||
            xattn_options_add(m->options, sizeof m->options, " -DDV=%d -DDV_PAD=%d",
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
    s->mma = !strcmp(v[0].kernels[0], "attn_mma");
    *state = s;
    return XATTN_OK;
}

void cu_attn_release(xattn_device *dev, void *state)
{
    (void)dev;
    free(state); /* the functions belong to modules the device unloads */
}

/* Are an operand's address and strides multiples of 16 bytes (cp.async)? */
static int aligned16(const xattn_attn_operand *t, int64_t esize)
{
    const uint64_t mask = 15;
    return !((cu_ptr(t->ref) | (uint64_t)(t->sb * esize) | (uint64_t)(t->st * esize) |
              (uint64_t)(t->sh * esize)) & mask);
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
    a.pack = p->gqa_pack;
    a.head_groups = p->head_groups;
    a.q_tiles = p->q_tiles;
    /* Without splits the kernel never touches the workspace. */
    if (p->kv_splits > 1) {
        xattn_ref part = l->workspace;
        part.offset += p->partial_offset;
        a.part = cu_ptr(part);
    }

    int64_t rows = l->total_q * d->num_q_heads;
    int64_t blocks = (rows + WARPS - 1) / WARPS;
    if (s->mma) {
        const int64_t esize = (int64_t)xattn_dtype_size(d->dtype);
        a.aligned = aligned16(&l->q, esize) && aligned16(&l->k, esize) && aligned16(&l->v, esize);
        a.tile_space = xattn_attn_tile_space(&plan->prob, p, l->total_q);
        blocks = a.tile_space ? (int64_t)p->head_groups * a.tile_space * p->kv_splits
                              : p->num_work;
        if (blocks > INT32_MAX)
            return xattn_error(XATTN_ERR_UNSUPPORTED, "cuda: attention over %lld work items",
                               (long long)blocks);
        void *args[] = {&a};
        XATTN_TRY(cu_launch(dev, &s->k[0][0], (unsigned)blocks, 1, 1, args));
        blocks = (rows + WARPS - 1) / WARPS; /* the merge's grid */
    } else {
        if (blocks > INT32_MAX)
            return xattn_error(XATTN_ERR_UNSUPPORTED, "cuda: attention over %lld rows",
                               (long long)rows);
        void *args[] = {&a};
        XATTN_TRY(cu_launch(dev, &s->k[0][0], (unsigned)blocks, (unsigned)p->kv_splits, 1, args));
    }
    if (p->kv_splits == 1) return XATTN_OK;
    if (blocks > INT32_MAX)
        return xattn_error(XATTN_ERR_UNSUPPORTED, "cuda: attention over %lld rows",
                           (long long)rows);

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
