/* MoE on CUDA: route, dispatch (count, scan, scatter, rows) and combine
 * (kernels/moe.cu), and the expert GEMMs grouped over the segments
 * (kernels/moe_gemm.cu: gate/up with the activation fused, then down), on
 * tensor cores when the planner gave f16/bf16 weights matrix-unit tiles,
 * else on FMA units in f32. prepare compiles the plan's three modules; run
 * only launches.
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
    WARP = 32,
    /* mma.sync m16n8k16 (kernels/moe_gemm.cu) on 16-bit elements */
    MMA_M = 16, MMA_N = 8, MMA_K = 16, MMA_ESIZE = 2,
    VEC_BYTES = 16, /* a cp.async chunk */
};

enum { V_ROUTE, V_DISPATCH, V_UP, V_DOWN, NUM_V };
enum { K_COUNT, K_SCAN, K_SCATTER, K_ROWS, K_COMBINE };

typedef struct moe_state {
    cu_kernel k[NUM_V][CU_MAX_KERNELS];
    int64_t max_chunks;
    int64_t up_bm, up_bn, down_bm, down_bn; /* the GEMM tiles, for the grids */
} moe_state;

/* The K step for reduction k: the plan's, halved while a smaller power of
 * two still covers k in whole minimum steps (a short K then stages no
 * zeros), so the staged rows stay a power of two of 16-byte chunks. */
static int64_t gemm_bk(int64_t bk, int64_t k, int64_t min_bk)
{
    while (bk / 2 >= min_bk && bk / 2 >= (k + min_bk - 1) / min_bk * min_bk) bk /= 2;
    return bk;
}

/* Options and shared memory of one GEMM on tensor cores (kernels/moe_gemm.cu).
 * The warps form a WARPS_M × WARPS_N grid of whole fragments; the planner
 * checked that bm / 16 × bn / 8 splits over them with all warps along M
 * where they fit, and any grid of whole fragments is correct, so this picks
 * the one that loads the fewest fragments per mma: a warp with MT row
 * fragments and NT column fragments (per pair) issues MT + pairs·NT / 2
 * ldmatrix_x4 for MT·pairs·NT mma per k16 step. */
static xattn_status mma_options(const char *name, const xattn_moe_gemm_tiles *t, int pairs,
                                int64_t k, char *opts, size_t size, size_t *smem)
{
    const int64_t warps = t->threads / WARP, bm = t->block_m, bn = t->block_n;
    const int64_t bk = gemm_bk(t->block_k, k, MMA_K);
    int64_t warps_m = 0;
    double best = 0.0;
    for (int64_t wm = 1; wm <= warps; wm++) {
        if (warps % wm || bm % (wm * MMA_M) || bn % ((warps / wm) * MMA_N)) continue;
        const double mt = (double)(bm / wm / MMA_M), nt = (double)(pairs * (bn / (warps / wm) / MMA_N));
        const double cost = (mt + nt / 2.0) / (mt * nt);
        if (!warps_m || cost < best) {
            warps_m = wm;
            best = cost;
        }
    }
    if (warps < 1 || t->threads % WARP || !warps_m || bk % MMA_K || (bk & (bk - 1)))
        return xattn_error(XATTN_ERR_INTERNAL, "cuda: MoE tile %d x %d x %d of %d threads does "
                           "not split into m16n8k16 fragments", (int)bm, (int)bn,
                           (int)t->block_k, (int)t->threads);
    const size_t a = ((size_t)(bm * bk) * MMA_ESIZE + 15) / 16 * 16;
    const size_t b = ((size_t)(pairs * bn * bk) * MMA_ESIZE + 15) / 16 * 16;
    *smem = (size_t)t->stages * (a + b);
    if (xattn_options_add(opts, size, " -D%s_BM=%d -D%s_BN=%d -D%s_BK=%lld -D%s_THREADS=%d"
                       " -D%s_STAGES=%d -D%s_WARPS_M=%lld", name, (int)bm, name, (int)bn, name,
                       (long long)bk, name, (int)t->threads, name, (int)t->stages, name,
                       (long long)warps_m))
        return xattn_error(XATTN_ERR_INTERNAL, "cuda: MoE options too long");
    return XATTN_OK;
}

xattn_status cu_moe_variants(const struct xattn_moe_plan *plan, const xattn_device_caps *caps,
                             cu_variant *out, int *n)
{
    const xattn_moe_desc *d = &plan->prob.desc;
    const xattn_moe_plan_params *p = &plan->params;
    *n = 0;
    memset(out, 0, NUM_V * sizeof *out);
    cu_variant *r = &out[V_ROUTE], *x = &out[V_DISPATCH], *u = &out[V_UP], *w = &out[V_DOWN];
    if (p->style != XATTN_DEVICE_STYLE_GPU)
        return xattn_error(XATTN_ERR_INTERNAL, "cuda: a MoE plan for a CPU-style device");
    r->source = x->source = "moe";
    r->threads = x->threads = THREADS;
    if (xattn_options_dtype(r->options, sizeof r->options, "LG", d->logits_dtype) ||
        xattn_options_add(r->options, sizeof r->options, " -DROUTE=%d -DRENORM=%d -DHAS_BIAS=%d",
                       (int)d->route, (d->flags & XATTN_MOE_RENORMALIZE) != 0,
                       (d->flags & XATTN_MOE_BIAS) != 0) ||
        xattn_options_dtype(x->options, sizeof x->options, "IO", d->dtype) ||
        xattn_options_add(x->options, sizeof x->options, " -DDISPATCH=1 -DON_INPUT=%d",
                       (d->flags & XATTN_MOE_WEIGHTS_ON_INPUT) != 0))
        return xattn_error(XATTN_ERR_INTERNAL, "cuda: MoE options too long");

    /* Both GEMMs come from one module: the same options, with each GEMM's
     * tile under its prefix. */
    char *g = u->options;
    const size_t gs = sizeof u->options;
    const int mma = xattn_moe_uses_matrix_units(caps, d); /* the planner's rule */
    if (xattn_options_dtype(g, gs, "IO", d->dtype) || xattn_options_dtype(g, gs, "W", d->weight_dtype) ||
        xattn_options_dtype(g, gs, "B", d->bias_dtype) ||
        xattn_options_add(g, gs, " -DMMA=%d -DHAS_B1=%d -DHAS_B2=%d -DW1_IL=%d", mma,
                       (d->flags & XATTN_MOE_EXPERT_B1) != 0,
                       (d->flags & XATTN_MOE_EXPERT_B2) != 0,
                       (d->flags & XATTN_MOE_W1_INTERLEAVED) != 0))
        return xattn_error(XATTN_ERR_INTERNAL, "cuda: MoE options too long");
    if (d->activation == XATTN_MOE_GEGLU) {
        if (xattn_options_add(g, gs, " -DACT_GEGLU=1"))
            return xattn_error(XATTN_ERR_INTERNAL, "cuda: MoE options too long");
    } else if (d->activation == XATTN_MOE_SWIGLU_CLAMPED) {
        /* Hexadecimal float literals carry α and the limit exactly. */
        if (xattn_options_add(g, gs, " -DACT_CLAMPED=1 -DACT_ALPHA=%af -DACT_LIMIT=%af",
                           (double)plan->prob.alpha, (double)plan->prob.limit))
            return xattn_error(XATTN_ERR_INTERNAL, "cuda: MoE options too long");
    }
    if (mma) {
        XATTN_TRY(mma_options("UP", &p->up, 2, d->hidden, g, gs, &u->smem_bytes));
        XATTN_TRY(mma_options("DOWN", &p->down, 1, d->inter, g, gs, &w->smem_bytes));
    } else {
        XATTN_TRY(xattn_moe_fma_options("cuda", "UP", &p->up, 2, d->hidden, caps, g, gs,
                                        &u->smem_bytes));
        XATTN_TRY(xattn_moe_fma_options("cuda", "DOWN", &p->down, 1, d->inter, caps, g, gs,
                                        &w->smem_bytes));
    }
    memcpy(w->options, u->options, sizeof w->options);
    u->source = w->source = "moe_gemm";
    u->threads = p->up.threads;
    w->threads = p->down.threads;
    u->hot = w->hot = 1;

    r->kernels[0] = "moe_route";
    x->kernels[K_COUNT] = "moe_count";
    x->kernels[K_SCAN] = "moe_scan";
    x->kernels[K_SCATTER] = "moe_scatter";
    x->kernels[K_ROWS] = "moe_rows";
    x->kernels[K_COMBINE] = "moe_combine";
    u->kernels[0] = "moe_up";
    w->kernels[0] = "moe_down";
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
    s->up_bm = p->up.block_m;
    s->up_bn = p->up.block_n;
    s->down_bm = p->down.block_m;
    s->down_bn = p->down.block_n;
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
    const int64_t warps = THREADS / WARP; /* one token each */
    if ((T + warps - 1) / warps > INT32_MAX)
        return xattn_error(XATTN_ERR_UNSUPPORTED, "cuda: %lld tokens", (long long)T);
    return cu_launch(dev, &s->k[V_ROUTE][0], (unsigned)((T + warps - 1) / warps), 1, 1, args);
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

    if (chunks > INT32_MAX)
        return xattn_error(XATTN_ERR_UNSUPPORTED, "cuda: %lld MoE dispatch chunks",
                           (long long)chunks);
    void *count[] = {&T, &topk, &E, &chunk, &ids, &ids_st, &scratch};
    XATTN_TRY(cu_launch(dev, &k[K_COUNT], (unsigned)chunks, 1, 1, count));
    void *scan[] = {&E, &chunks, &align, &scratch, &offsets, &off_st};
    XATTN_TRY(cu_launch(dev, &k[K_SCAN], 1, 1, 1, scan));
    void *scatter[] = {&T, &topk, &E, &chunk, &R, &ids, &ids_st, &scratch, &rt, &rt_st, &tr,
                       &tr_st};
    XATTN_TRY(cu_launch(dev, &k[K_SCATTER], (unsigned)chunks, 1, 1, scatter));
    if (R > INT32_MAX) return xattn_error(XATTN_ERR_UNSUPPORTED, "cuda: %lld MoE rows", (long long)R);
    void *rows[] = {&R, &E, &H, &T, &chunks, &topk, &offsets, &off_st, &scratch, &rt, &rt_st,
                    &x, &x_st, &xp, &xp_st, &tr, &tr_st, &w, &w_st};
    return cu_launch(dev, &k[K_ROWS], (unsigned)R, 1, 1, rows);
}

/* Whole 16-byte chunks of a row can go by cp.async: the base and every row
 * (and expert) stride 16-byte aligned, and K a multiple of a chunk. */
static int vec_ok(CUdeviceptr base, int64_t k, size_t esize, int64_t st1, int64_t st2)
{
    const int64_t per = VEC_BYTES / (int64_t)esize;
    return base % VEC_BYTES == 0 && k % per == 0 && st1 % per == 0 && st2 % per == 0;
}

static int64_t ceil_div(int64_t x, int64_t m) { return (x + m - 1) / m; }

static xattn_status run_experts(xattn_device *dev, const struct xattn_moe_plan *plan,
                                const moe_state *s, const xattn_moe_launch *l)
{
    const xattn_moe_desc *d = &plan->prob.desc;
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
    const size_t xs = xattn_dtype_size(d->dtype), ws = xattn_dtype_size(d->weight_dtype);
    int32_t x_vec = vec_ok(x, H, xs, x_st, 0), w1_vec = vec_ok(w1, H, ws, w1_sn, w1_se);
    int32_t w2_vec = vec_ok(w2, I, ws, w2_sn, w2_se);
    /* h rows of I elements, in the weight dtype on tensor cores (moe_gemm.cu). */
    int32_t h_vec = vec_ok(h, I, ws, I, 0);
    /* Every segment fits R / block_m + E virtual row tiles (moe_gemm.cu). */
    const int64_t up_tiles = R / s->up_bm + E, down_tiles = R / s->down_bm + E;
    const int64_t up_cols = ceil_div(I, s->up_bn), down_cols = ceil_div(H, s->down_bn);
    if (up_tiles > INT32_MAX || down_tiles > INT32_MAX || up_cols > MAX_GRID_Y ||
        down_cols > MAX_GRID_Y)
        return xattn_error(XATTN_ERR_UNSUPPORTED, "cuda: MoE GEMM of %lld rows, I %lld, H %lld",
                           (long long)R, (long long)I, (long long)H);
    void *up[] = {&R, &E, &H, &I, &offsets, &off_st, &x, &x_st, &x_vec, &w1, &w1_se, &w1_sn,
                  &w1_vec, &b1, &b1_se, &h};
    XATTN_TRY(cu_launch(dev, &s->k[V_UP][0], (unsigned)up_tiles, (unsigned)up_cols, 1, up));
    void *down[] = {&R, &E, &I, &H, &offsets, &off_st, &h, &h_vec, &w2, &w2_se, &w2_sn, &w2_vec,
                    &b2, &b2_se, &y, &y_st};
    return cu_launch(dev, &s->k[V_DOWN][0], (unsigned)down_tiles, (unsigned)down_cols, 1, down);
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
