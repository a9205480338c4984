/* Attention (kernels/attn.hip, kernels/attn_split.hip): prepare compiles
 * the plan's variants; run only launches.
 *
 * The attention kernel is chosen from `kinds` below, in order: the first
 * whose variant function takes the plan runs it. attn_mfma
 * (kernels/attn_mfma.hip, FlashAttention-2 on 16x16x16 MFMA) takes f16 and
 * bf16 plans on CDNA devices whose matrix cores have the dtype (gfx908:
 * f16; gfx90a, gfx94x: both); attn_rows, the portable kernel (one row of
 * 32 lanes per query row and head, every dtype, head dim and feature,
 * wave64 and wave32 alike), takes everything else. With KV splits,
 * split_merge combines the partials in the workspace. */
#include <stdlib.h>
#include <string.h>

#include "hip.h"

enum {
    ROWS = 4,              /* query rows per block of attn_rows and split_merge */
    ROW_LANES = 32,        /* lanes per row (kernels/prelude.hip) */
    THREADS = ROWS * ROW_LANES,
    MAX_GRID_Y = 65535,
    MFMA = 16,             /* v_mfma_f32_16x16x16{f16,bf16_1k}: M = N = K */
    WAVE64 = 64,
    /* attn_mfma holds the next K/V tile in registers while it computes the
     * current one: BK · (DQK_PAD + DV_PAD) 16-bit elements over the
     * workgroup's lanes. Past this many VGPRs a lane, single-wave decode
     * tiles spilled on gfx90a/gfx908 (hip-compile: 25-200 VGPRs at 112-128
     * of staging with D 104-256); at 64 none did. */
    MFMA_STAGING_VGPRS = 64,
    /* A single-wave workgroup holds its whole O: 16 rows × DV_PAD over 64
     * lanes. From this many O registers a lane (D ≥ 256) it spilled even
     * at the smallest key step and with Q in LDS (tools/hip_inspect.sh);
     * such plans run attn_rows. Below it, Q stays in LDS (Q_REGS=0): with
     * Q in registers a D 224 single-wave tile spilled 5 VGPRs, without it
     * none. */
    MFMA_ONE_WAVE_MAX_O_VGPRS = 64,
};

/* The kernel's argument, field for field as attn_args in kernels/attn.hip
 * (same types, same order: the C and HIP C++ layouts agree on x86-64).
 * Passed by value. */
typedef struct attn_args {
    int32_t batch, seqlen_q, seqlen_k, hq, group, kv_splits, split_len;
    int32_t q_ragged, kv_layout, page_size, num_pages, max_pages;
    int64_t total_q, total_k;
    int32_t wl, wr;
    float scale, softcap;
    int32_t has_lse, has_alibi, has_sinks;
    void *q;
    int64_t q_sb, q_st, q_sh;
    void *k;
    int64_t k_sb, k_st, k_sh;
    void *v;
    int64_t v_sb, v_st, v_sh;
    void *o;
    int64_t o_sb, o_st, o_sh;
    void *lse;
    int64_t lse_sh, lse_st;
    void *cu_q, *cu_k, *block_table;
    int64_t bt_stride;
    void *seqlens_k;
    void *slopes, *sinks;
    void *part;
    int32_t pack, head_groups, q_tiles, aligned;
    int64_t tile_space;
    int64_t dv_pad;
} attn_args;

size_t hip_attn_args_bytes(void) { return sizeof(attn_args); }

/* One attention kernel: its variant for a plan (0 when it cannot run the
 * plan) and its launch (the grid of the attention kernel; the merge that
 * follows is common). */
typedef struct attn_kind {
    const char *name;
    int (*variant)(const struct xattn_plan *plan, const xattn_device_caps *caps, hip_variant *v);
    xattn_status (*launch)(xattn_device *dev, const struct xattn_plan *plan, const hip_kernel *k,
                           attn_args *a, const xattn_attn_launch *l);
} attn_kind;

/* ---- attn_rows: the portable kernel ------------------------------------------ */

static int rows_variant(const struct xattn_plan *plan, const xattn_device_caps *caps,
                        hip_variant *v)
{
    const xattn_attn_desc *d = &plan->prob.desc;
    (void)caps;
    v->source = "attn";
    if (xattn_options_dtype(v->options, sizeof v->options, "IO", d->dtype) ||
        xattn_options_add(v->options, sizeof v->options, " -DDQK=%d -DDV=%d -DROWS=%d",
                        (int)d->head_dim_qk, (int)d->head_dim_v, ROWS))
        return 0;
    v->kernels[0] = "attn_rows";
    v->threads = THREADS;
    v->hot = 1;
    v->mfma = 0;
    return 1;
}

static xattn_status rows_launch(xattn_device *dev, const struct xattn_plan *plan,
                                const hip_kernel *k, attn_args *a, const xattn_attn_launch *l)
{
    const int64_t rows = l->total_q * plan->prob.desc.num_q_heads;
    const int64_t blocks = (rows + ROWS - 1) / ROWS;
    if (blocks > INT32_MAX)
        return xattn_error(XATTN_ERR_UNSUPPORTED, "hip: attention over %lld rows",
                           (long long)rows);
    void *args[] = {a};
    return hip_launch(dev, k, (unsigned)blocks, (unsigned)plan->params.kv_splits, 1, args);
}

/* ---- attn_mfma: FlashAttention-2 on CDNA matrix cores ------------------------ */

/* The wave layout of attn_mfma for a plan, or 0 when it cannot run it:
 * f16/bf16 on a wave64 device whose 16x16x16 MFMA has the dtype (the
 * kernel's targets: hip_arch_matrix gives wave64 matrix units to gfx908,
 * gfx90a and gfx94x only), tiles of whole 16-row bands and 16-key steps,
 * row bands spread over the waves first and Dv over the rest (as the
 * planner counts them). LDS holds Q, then one or two (K, Vᵀ) buffers, all
 * in 16-bit elements; a plan with Q in registers (the planner's choice
 * for head dims such as MLA's 576/512 in 64 KiB) has no Q region and
 * builds with Q_DIRECT. */
typedef struct mfma_shape {
    int warps_m, warps_n, q_direct;
    int q_lds; /* single wave: Q read from LDS at each use (Q_REGS=0) */
    int bk; /* the kernel's key step: the plan's block_k or a divisor of it */
    size_t lds;
} mfma_shape;

static int mfma_shape_of(const struct xattn_plan *plan, const xattn_device_caps *caps,
                         mfma_shape *m)
{
    const xattn_attn_plan_params *p = &plan->params;
    const xattn_attn_desc *d = &plan->prob.desc;
    memset(m, 0, sizeof *m);
    if (d->dtype != XATTN_F16 && d->dtype != XATTN_BF16) return 0;
    const uint32_t want = d->dtype == XATTN_F16 ? XATTN_MATRIX_F16 : XATTN_MATRIX_BF16;
    if (!(caps->matrix_dtypes & want) || caps->simd_width != WAVE64 || caps->matrix_m != MFMA ||
        caps->matrix_n != MFMA || caps->matrix_k != MFMA)
        return 0;
    const int waves = p->threads / WAVE64;
    if (waves < 1 || p->threads % WAVE64 || p->block_q % MFMA || p->block_k % MFMA ||
        p->dqk_pad % MFMA || p->dv_pad % MFMA || d->head_dim_qk % 8 || d->head_dim_v % 8 ||
        p->stages < 1)
        return 0;
    const int bands = p->block_q / MFMA;
    m->warps_m = waves < bands ? waves : bands;
    if (waves % m->warps_m || bands % m->warps_m) return 0;
    m->warps_n = waves / m->warps_m;
    if (p->dv_pad % (MFMA * m->warps_n)) return 0;
    if (waves == 1) {
        if ((int64_t)p->block_q * p->dv_pad / WAVE64 >= MFMA_ONE_WAVE_MAX_O_VGPRS) return 0;
        m->q_lds = !p->q_in_registers;
    }
    /* A smaller key step than the plan's is always correct (KV splits are
     * whole multiples of block_k, so of any power-of-two divisor of it):
     * halve it until the register staging fits. */
    const int64_t row = (int64_t)(p->dqk_pad + p->dv_pad) * 2; /* bytes of a K and a V row */
    m->bk = p->block_k;
    while (m->bk % (2 * MFMA) == 0 &&
           m->bk * row > (int64_t)MFMA_STAGING_VGPRS * 4 * p->threads)
        m->bk /= 2;
    const size_t bufs = p->stages > 1 ? 2 : 1;
    const size_t kv = bufs * (size_t)m->bk * (size_t)(p->dqk_pad + p->dv_pad);
    const size_t q = (size_t)p->block_q * (size_t)p->dqk_pad;
    m->q_direct = p->q_in_registers != 0;
    m->lds = 2 * (m->q_direct ? kv : q + kv);
    return m->lds <= caps->local_mem_bytes;
}

static int mfma_variant(const struct xattn_plan *plan, const xattn_device_caps *caps,
                        hip_variant *v)
{
    const xattn_attn_plan_params *p = &plan->params;
    const xattn_attn_desc *d = &plan->prob.desc;
    mfma_shape m;
    if (!mfma_shape_of(plan, caps, &m)) return 0;
    v->source = "attn_mfma";
    if (xattn_options_dtype(v->options, sizeof v->options, "IO", d->dtype) ||
        xattn_options_add(v->options, sizeof v->options,
                        " -DBQ=%d -DBK=%d -DWARPS_M=%d -DWARPS_N=%d -DSTAGES=%d -DDQK=%d"
                        " -DDV=%d -DDQK_PAD=%d -DDV_PAD=%d%s%s",
                        (int)p->block_q, m.bk, m.warps_m, m.warps_n, (int)p->stages,
                        (int)d->head_dim_qk, (int)d->head_dim_v, (int)p->dqk_pad,
                        (int)p->dv_pad, m.q_direct ? " -DQ_DIRECT=1" : "",
                        m.q_lds ? " -DQ_REGS=0" : ""))
        return 0;
    v->kernels[0] = "attn_mfma";
    v->threads = m.warps_m * m.warps_n * WAVE64;
    v->lds_bytes = m.lds;
    v->hot = 1;
    v->mfma = 1;
    return 1;
}

/* Are an operand's address and strides multiples of 16 bytes (one 16-byte
 * load per 8 elements)? */
static int aligned16(const xattn_attn_operand *t, int64_t esize)
{
    const uintptr_t mask = 15;
    return !(((uintptr_t)hip_ptr(t->ref) | (uintptr_t)(t->sb * esize) |
              (uintptr_t)(t->st * esize) | (uintptr_t)(t->sh * esize)) & mask);
}

/* One workgroup per plan work item (sequence, head group, query tile, KV
 * split), or per ragged tile of xattn_attn_tile_space, as the kernel
 * numbers them. */
static xattn_status mfma_launch(xattn_device *dev, const struct xattn_plan *plan,
                                const hip_kernel *k, attn_args *a, const xattn_attn_launch *l)
{
    const xattn_attn_plan_params *p = &plan->params;
    const int64_t esize = (int64_t)xattn_dtype_size(plan->prob.desc.dtype);
    a->aligned = aligned16(&l->q, esize) && aligned16(&l->k, esize) && aligned16(&l->v, esize);
    a->tile_space = xattn_attn_tile_space(&plan->prob, p, l->total_q);
    const int64_t blocks = a->tile_space ? (int64_t)p->head_groups * a->tile_space * p->kv_splits
                                         : p->num_work;
    if (blocks > INT32_MAX)
        return xattn_error(XATTN_ERR_UNSUPPORTED, "hip: attention over %lld work items",
                           (long long)blocks);
    void *args[] = {a};
    return hip_launch(dev, k, (unsigned)blocks, 1, 1, args);
}

/* The attention kernels in order of preference: the first whose variant
 * function takes the plan runs it. */
static const attn_kind kinds[] = {
    {"attn_mfma", mfma_variant, mfma_launch},
    {"attn_rows", rows_variant, rows_launch},
};

typedef struct attn_state {
    int nvar;
    const attn_kind *kind;
    hip_kernel k[2][HIP_MAX_KERNELS]; /* [0][0] the attention kernel, [1][0] split_merge */
} attn_state;

static const attn_kind *pick(const struct xattn_plan *plan, const xattn_device_caps *caps,
                             hip_variant *v)
{
    for (size_t i = 0; i < XATTN_ARRAY_SIZE(kinds); i++) {
        memset(v, 0, sizeof *v);
        if (kinds[i].variant(plan, caps, v)) return &kinds[i];
    }
    return NULL;
}

xattn_status hip_attn_variants(const struct xattn_plan *plan, const xattn_device_caps *caps,
                               hip_variant *out, int *n)
{
    const xattn_attn_plan_params *p = &plan->params;
    const xattn_attn_desc *d = &plan->prob.desc;
    *n = 0;
    if (p->kv_splits < 1 || p->kv_splits > MAX_GRID_Y)
        return xattn_error(XATTN_ERR_UNSUPPORTED, "hip: attention plan with %d KV splits",
                           (int)p->kv_splits);
    memset(out, 0, 2 * sizeof *out);
    if (!pick(plan, caps, &out[0]))
        return xattn_error(XATTN_ERR_INTERNAL, "hip: no attention kernel for the plan "
                           "(options too long)");
    *n = 1;
    if (p->kv_splits > 1) {
        hip_variant *m = &out[1];
        m->source = "attn_split";
        if (xattn_options_dtype(m->options, sizeof m->options, "IO", d->dtype))
            return xattn_error(XATTN_ERR_INTERNAL, "hip: merge options too long");
        m->kernels[0] = "split_merge";
        m->threads = THREADS;
        *n = 2;
    }
    return XATTN_OK;
}

xattn_status hip_attn_prepare(xattn_device *dev, const struct xattn_plan *plan, void **state)
{
    *state = NULL;
    hip_variant v[HIP_MAX_VARIANTS];
    int n = 0;
    XATTN_TRY(hip_attn_variants(plan, &dev->caps, v, &n));
    attn_state *s = calloc(1, sizeof *s);
    if (!s) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "hip: out of memory");
    hip_variant again;
    s->kind = pick(plan, &dev->caps, &again);
    xattn_status st = s->kind ? hip_variants_load(dev, v, n, s->k)
                              : xattn_error(XATTN_ERR_INTERNAL, "hip: no attention kernel");
    if (st != XATTN_OK) {
        free(s);
        return st;
    }
    s->nvar = n;
    *state = s;
    return XATTN_OK;
}

void hip_attn_release(xattn_device *dev, void *state)
{
    (void)dev;
    free(state); /* the functions belong to modules the device unloads */
}

xattn_status hip_attn_run(xattn_device *dev, const struct xattn_plan *plan, const void *state,
                          const xattn_attn_launch *l)
{
    const attn_state *s = state;
    const xattn_attn_plan_params *p = &plan->params;
    const xattn_attn_problem *prob = &plan->prob;
    const xattn_attn_desc *d = &prob->desc;
    if (!s) return xattn_error(XATTN_ERR_INTERNAL, "hip: attention run without prepare");

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
    a.q = hip_ptr(l->q.ref);
    a.q_sb = l->q.sb, a.q_st = l->q.st, a.q_sh = l->q.sh;
    a.k = hip_ptr(l->k.ref);
    a.k_sb = l->k.sb, a.k_st = l->k.st, a.k_sh = l->k.sh;
    a.v = hip_ptr(l->v.ref);
    a.v_sb = l->v.sb, a.v_st = l->v.st, a.v_sh = l->v.sh;
    a.o = hip_ptr(l->o.ref);
    a.o_sb = l->o.sb, a.o_st = l->o.st, a.o_sh = l->o.sh;
    a.lse = hip_ptr(l->lse);
    a.lse_sh = l->lse_sh, a.lse_st = l->lse_st;
    a.cu_q = hip_ptr(l->cu_seqlens_q);
    a.cu_k = hip_ptr(l->cu_seqlens_k);
    a.block_table = hip_ptr(l->block_table);
    a.bt_stride = l->block_table_stride;
    a.seqlens_k = hip_ptr(l->seqlens_k);
    a.slopes = hip_ptr(l->alibi_slopes);
    a.sinks = hip_ptr(l->sinks);
    a.pack = p->gqa_pack;
    a.head_groups = p->head_groups;
    a.q_tiles = p->q_tiles;
    a.dv_pad = p->dv_pad;
    /* Without splits the kernel never touches the workspace. */
    if (p->kv_splits > 1) {
        xattn_ref part = l->workspace;
        part.offset += p->partial_offset;
        a.part = hip_ptr(part);
    }
    XATTN_TRY(s->kind->launch(dev, plan, &s->k[0][0], &a, l));
    if (p->kv_splits == 1) return XATTN_OK;

    const int64_t rows = l->total_q * d->num_q_heads;
    const int64_t blocks = (rows + ROWS - 1) / ROWS;
    if (blocks > INT32_MAX)
        return xattn_error(XATTN_ERR_UNSUPPORTED, "hip: attention over %lld rows",
                           (long long)rows);
    int64_t total_q = l->total_q, hq = d->num_q_heads, seqlen_q = d->seqlen_q;
    int32_t q_ragged = a.q_ragged, splits = p->kv_splits;
    int64_t part_rows = (int64_t)d->batch * d->seqlen_q;
    int64_t o_sb = l->o.sb, o_st = l->o.st, o_sh = l->o.sh;
    int64_t lse_sh = l->lse_sh, lse_st = l->lse_st;
    int32_t has_lse = a.has_lse, has_sinks = a.has_sinks;
    int64_t dv = d->head_dim_v, dv_pad = p->dv_pad;
    void *margs[] = {&total_q, &hq, &seqlen_q, &q_ragged, &splits, &part_rows, &a.part, &a.o,
                     &o_sb, &o_st, &o_sh, &a.lse, &lse_sh, &lse_st, &has_lse, &a.sinks,
                     &has_sinks, &dv, &dv_pad};
    return hip_launch(dev, &s->k[1][0], (unsigned)blocks, 1, 1, margs);
}
