/* MoE on CUDA (kernels/moe.cu): route, dispatch (count, scan, scatter,
 * rows), the expert GEMMs (up with the activation fused, down) and
 * combine. General kernels without tensor cores; prepare compiles the
 * plan's three modules, run only launches.
 *
 * Dispatch cuts the tokens into chunks with one row of E counters each in
 * the plan's scratch region (GPU-style plans hold ceil(max_tokens /
 * threads) rows), so the chunk length follows from T and the region. */
#include <stdlib.h>
#include <string.h>

#include "cu.h"

enum {
    THREADS = 128,
    MIN_CHUNK = 32,     /* tokens per dispatch chunk, at least */
    MAX_GRID_Y = 65535,
};

enum { V_ROUTE, V_DISPATCH, V_GEMM, NUM_V };
enum { K_COUNT, K_SCAN, K_SCATTER, K_ROWS, K_COMBINE };
enum { K_UP, K_DOWN };

typedef struct moe_state {
    cu_kernel k[NUM_V][CU_MAX_KERNELS];
    int64_t max_chunks;
} moe_state;

xattn_status cu_moe_variants(const struct xattn_moe_plan *plan, const xattn_device_caps *caps,
                             cu_variant *out, int *n)
{
    const xattn_moe_desc *d = &plan->prob.desc;
    (void)caps;
    *n = 0;
    memset(out, 0, NUM_V * sizeof *out);
    cu_variant *r = &out[V_ROUTE], *x = &out[V_DISPATCH], *g = &out[V_GEMM];
    r->source = x->source = g->source = "moe";
    r->threads = x->threads = g->threads = THREADS;
    if (cu_options_dtype(r->options, sizeof r->options, "LG", d->logits_dtype) ||
        cu_options_add(r->options, sizeof r->options, " -DROUTE=%d -DRENORM=%d -DHAS_BIAS=%d",
                       (int)d->route, (d->flags & XATTN_MOE_RENORMALIZE) != 0,
                       (d->flags & XATTN_MOE_BIAS) != 0) ||
        cu_options_dtype(x->options, sizeof x->options, "IO", d->dtype) ||
        cu_options_add(x->options, sizeof x->options, " -DDISPATCH=1 -DON_INPUT=%d",
                       (d->flags & XATTN_MOE_WEIGHTS_ON_INPUT) != 0) ||
        cu_options_dtype(g->options, sizeof g->options, "IO", d->dtype) ||
        cu_options_dtype(g->options, sizeof g->options, "W", d->weight_dtype) ||
        cu_options_dtype(g->options, sizeof g->options, "B", d->bias_dtype) ||
        cu_options_add(g->options, sizeof g->options, " -DGEMM=1 -DHAS_B1=%d -DHAS_B2=%d -DW1_IL=%d",
                       (d->flags & XATTN_MOE_EXPERT_B1) != 0,
                       (d->flags & XATTN_MOE_EXPERT_B2) != 0,
                       (d->flags & XATTN_MOE_W1_INTERLEAVED) != 0))
        return xattn_error(XATTN_ERR_INTERNAL, "cuda: MoE options too long");
    if (d->activation == XATTN_MOE_GEGLU) {
        if (cu_options_add(g->options, sizeof g->options, " -DACT_GEGLU=1"))
            return xattn_error(XATTN_ERR_INTERNAL, "cuda: MoE options too long");
    } else if (d->activation == XATTN_MOE_SWIGLU_CLAMPED) {
        if (cu_options_add(g->options, sizeof g->options,
                           " -DACT_CLAMPED=1 -DACT_ALPHA=%#.9gf -DACT_LIMIT=%#.9gf",
                           (double)plan->prob.alpha, (double)plan->prob.limit))
            return xattn_error(XATTN_ERR_INTERNAL, "cuda: MoE options too long");
    }
    r->kernels[0] = "moe_route";
    x->kernels[K_COUNT] = "moe_count";
    x->kernels[K_SCAN] = "moe_scan";
    x->kernels[K_SCATTER] = "moe_scatter";
    x->kernels[K_ROWS] = "moe_rows";
    x->kernels[K_COMBINE] = "moe_combine";
    g->kernels[K_UP] = "moe_up";
    g->kernels[K_DOWN] = "moe_down";
    g->hot = 1;
    *n = NUM_V;
    return XATTN_OK;
}

xattn_status cu_moe_prepare(xattn_device *dev, const struct xattn_moe_plan *plan, void **state)
{
    *state = NULL;
    const xattn_moe_plan_params *p = &plan->params;
    const int64_t counters = (int64_t)plan->prob.desc.num_experts * (int64_t)sizeof(int32_t);
    cu_variant v[CU_MAX_VARIANTS];
    int n = 0;
    XATTN_TRY(cu_moe_variants(plan, &dev->caps, v, &n));
    moe_state *s = calloc(1, sizeof *s);
    if (!s) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "cuda: out of memory");
    s->max_chunks = (int64_t)(p->scratch_bytes / (size_t)counters);
    xattn_status st = s->max_chunks < 1
                          ? xattn_error(XATTN_ERR_INTERNAL,
                                        "cuda: MoE scratch of %zu bytes holds no row of %lld "
                                        "expert counters", p->scratch_bytes,
                                        (long long)plan->prob.desc.num_experts)
                          : cu_variants_load(dev, v, n, s->k);
    if (st != XATTN_OK) {
        free(s);
        return st;
    }
    *state = s;
    return XATTN_OK;
}

void cu_moe_release(xattn_device *dev, void *state)
{
    (void)dev;
    free(state); /* the functions belong to modules the device unloads */
}

static unsigned blocks_for(int64_t n) { return (unsigned)((n + THREADS - 1) / THREADS); }

static xattn_status run_route(xattn_device *dev, const struct xattn_moe_plan *plan,
                              const moe_state *s, const xattn_moe_launch *l)
{
    const xattn_moe_desc *d = &plan->prob.desc;
    int64_t T = l->tokens, logits_st = l->logits_st, ids_st = l->ids_st, w_st = l->weights_st;
    int32_t E = d->num_experts, k = d->top_k, n_group = d->n_group, topk_group = d->topk_group;
    float scale = plan->prob.scale;
    CUdeviceptr lg = cu_ptr(l->logits), bias = cu_ptr(l->bias), ids = cu_ptr(l->topk_ids);
    CUdeviceptr w = cu_ptr(l->topk_weights);
    void *args[] = {&T, &E, &k, &n_group, &topk_group, &scale, &lg, &logits_st, &bias,
                    &ids, &ids_st, &w, &w_st};
    return cu_launch(dev, &s->k[V_ROUTE][0], blocks_for(T), 1, 1, args);
}

static xattn_status run_dispatch(xattn_device *dev, const struct xattn_moe_plan *plan,
                                 const moe_state *s, const xattn_moe_launch *l)
{
    const xattn_moe_desc *d = &plan->prob.desc;
    const cu_kernel *k = s->k[V_DISPATCH];
    int64_t T = l->tokens, R = l->rows, H = d->hidden, align = plan->params.align;
    int32_t E = d->num_experts, topk = d->top_k;
    int64_t chunk = (T + s->max_chunks - 1) / s->max_chunks;
    if (chunk < MIN_CHUNK) chunk = MIN_CHUNK;
    int64_t chunks = (T + chunk - 1) / chunk;
    int64_t ids_st = l->ids_st, rt_st = l->row_token_st, tr_st = l->token_row_st;
    int64_t off_st = l->offsets_st, x_st = l->x_st, xp_st = l->x_perm_st, w_st = l->weights_st;
    xattn_ref sref = l->workspace;
    sref.offset += plan->params.scratch_offset;
    CUdeviceptr scratch = cu_ptr(sref), ids = cu_ptr(l->topk_ids);
    CUdeviceptr offsets = cu_ptr(l->expert_offsets), rt = cu_ptr(l->row_token);
    CUdeviceptr tr = cu_ptr(l->token_row), x = cu_ptr(l->x), xp = cu_ptr(l->x_perm);
    CUdeviceptr w = cu_ptr(l->topk_weights);

    void *count[] = {&T, &topk, &E, &chunk, &ids, &ids_st, &scratch};
    XATTN_TRY(cu_launch(dev, &k[K_COUNT], blocks_for(chunks), 1, 1, count));
    void *scan[] = {&E, &chunks, &align, &scratch, &offsets, &off_st};
    XATTN_TRY(cu_launch(dev, &k[K_SCAN], 1, 1, 1, scan));
    void *scatter[] = {&T, &topk, &E, &chunk, &R, &ids, &ids_st, &scratch, &rt, &rt_st, &tr,
                       &tr_st};
    XATTN_TRY(cu_launch(dev, &k[K_SCATTER], blocks_for(chunks), 1, 1, scatter));
    if (R > INT32_MAX) return xattn_error(XATTN_ERR_UNSUPPORTED, "cuda: %lld MoE rows", (long long)R);
    void *rows[] = {&R, &E, &H, &T, &chunks, &topk, &offsets, &off_st, &scratch, &rt, &rt_st,
                    &x, &x_st, &xp, &xp_st, &tr, &tr_st, &w, &w_st};
    return cu_launch(dev, &k[K_ROWS], (unsigned)R, 1, 1, rows);
}

static xattn_status run_experts(xattn_device *dev, const struct xattn_moe_plan *plan,
                                const moe_state *s, const xattn_moe_launch *l)
{
    const xattn_moe_desc *d = &plan->prob.desc;
    const cu_kernel *k = s->k[V_GEMM];
    int64_t R = l->rows, H = d->hidden, I = d->inter;
    int32_t E = d->num_experts;
    int64_t off_st = l->offsets_st, x_st = l->x_perm_st, y_st = l->y_st;
    int64_t w1_se = l->w1_se, w1_sn = l->w1_sn, w2_se = l->w2_se, w2_sn = l->w2_sn;
    int64_t b1_se = l->b1_se, b2_se = l->b2_se;
    xattn_ref href = l->workspace;
    href.offset += plan->params.h_offset;
    CUdeviceptr h = cu_ptr(href), offsets = cu_ptr(l->expert_offsets), x = cu_ptr(l->x_perm);
    CUdeviceptr w1 = cu_ptr(l->w1), w2 = cu_ptr(l->w2), b1 = cu_ptr(l->b1), b2 = cu_ptr(l->b2);
    CUdeviceptr y = cu_ptr(l->y);
    if (R > INT32_MAX || blocks_for(I) > MAX_GRID_Y || blocks_for(H) > MAX_GRID_Y)
        return xattn_error(XATTN_ERR_UNSUPPORTED, "cuda: MoE GEMM of %lld rows, I %lld, H %lld",
                           (long long)R, (long long)I, (long long)H);
    void *up[] = {&R, &E, &H, &I, &offsets, &off_st, &x, &x_st, &w1, &w1_se, &w1_sn, &b1,
                  &b1_se, &h};
    XATTN_TRY(cu_launch(dev, &k[K_UP], (unsigned)R, blocks_for(I), 1, up));
    void *down[] = {&R, &E, &H, &I, &offsets, &off_st, &h, &w2, &w2_se, &w2_sn, &b2, &b2_se,
                    &y, &y_st};
    return cu_launch(dev, &k[K_DOWN], (unsigned)R, blocks_for(H), 1, down);
}

static xattn_status run_combine(xattn_device *dev, const struct xattn_moe_plan *plan,
                                const moe_state *s, const xattn_moe_launch *l)
{
    const xattn_moe_desc *d = &plan->prob.desc;
    int64_t T = l->tokens, H = d->hidden, R = l->rows;
    int32_t k = d->top_k, accumulate = l->accumulate;
    int64_t y_st = l->y_st, w_st = l->weights_st, tr_st = l->token_row_st, out_st = l->out_st;
    CUdeviceptr y = cu_ptr(l->y), w = cu_ptr(l->topk_weights), tr = cu_ptr(l->token_row);
    CUdeviceptr out = cu_ptr(l->out);
    if (T > INT32_MAX) return xattn_error(XATTN_ERR_UNSUPPORTED, "cuda: %lld tokens", (long long)T);
    void *args[] = {&T, &k, &H, &R, &accumulate, &y, &y_st, &w, &w_st, &tr, &tr_st, &out,
                    &out_st};
    return cu_launch(dev, &s->k[V_DISPATCH][K_COMBINE], (unsigned)T, 1, 1, args);
}

xattn_status cu_moe_run(xattn_device *dev, const struct xattn_moe_plan *plan, const void *state,
                        xattn_moe_op op, const xattn_moe_launch *l)
{
    const moe_state *s = state;
    if (!s) return xattn_error(XATTN_ERR_INTERNAL, "cuda: MoE run without prepare");
    switch (op) {
    case XATTN_MOE_OP_ROUTE: return l->tokens > 0 ? run_route(dev, plan, s, l) : XATTN_OK;
    case XATTN_MOE_OP_DISPATCH: return l->tokens > 0 ? run_dispatch(dev, plan, s, l) : XATTN_OK;
    case XATTN_MOE_OP_EXPERTS: return l->rows > 0 ? run_experts(dev, plan, s, l) : XATTN_OK;
    case XATTN_MOE_OP_COMBINE: return l->tokens > 0 ? run_combine(dev, plan, s, l) : XATTN_OK;
    }
    return xattn_error(XATTN_ERR_INTERNAL, "cuda: MoE op %d", (int)op);
}
