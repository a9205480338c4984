/* MoE on HIP: route, dispatch (count, scan, scatter, rows) and combine
 * (kernels/moe.hip), and the expert GEMMs grouped over the segments,
 * gate/up with the activation fused, then down: on CDNA matrix cores
 * (kernels/moe_gemm_mfma.hip, 16x16x16 MFMA) for f16/bf16 weights with
 * activations of the same dtype where the device's MFMA has the dtype,
 * else on FMA units in f32 (kernels/moe_gemm.hip, every dtype and
 * architecture). prepare compiles the plan's modules; run only launches.
 *
 * Dispatch cuts the tokens into chunks with one row of E counters each in
 * the plan's scratch region (GPU-style plans hold ceil(max_tokens /
 * threads) rows), so the chunk length follows from T and the region. */
#include <stdlib.h>
#include <string.h>

#include "hip.h"

enum {
    THREADS = 128,
    MIN_CHUNK = 32,     /* tokens per dispatch chunk, at least */
    MAX_GRID_Y = 65535,
    ROW_LANES = 32,     /* moe_route: a row of 32 lanes per token (kernels/prelude.hip) */
    VEC_BYTES = 16,     /* a 16-byte vector load */
    MFMA = 16,          /* v_mfma_f32_16x16x16{f16,bf16_1k}: M = N = K */
    WAVE64 = 64,
    MFMA_ESIZE = 2,     /* f16/bf16 operands, and h between the GEMMs */
};

enum { V_ROUTE, V_DISPATCH, V_UP, V_DOWN, NUM_V };
enum { K_COUNT, K_SCAN, K_SCATTER, K_ROWS, K_COMBINE };

typedef struct moe_state {
    hip_kernel k[NUM_V][HIP_MAX_KERNELS];
    int64_t max_chunks;
    int64_t up_bm, up_bn, down_bm, down_bn; /* the GEMM tiles, for the grids */
    int mfma;                               /* GEMMs on MFMA: h in the weight dtype */
} moe_state;

/* Do the expert GEMMs run on MFMA (kernels/moe_gemm_mfma.hip)? Where the
 * planner puts them on matrix units (the activations' dtype is the
 * weights', f16 or bf16, and the device's matrix units have it) and the
 * device is wave64 with 16x16x16 MFMA: hip_arch_matrix gives that to
 * gfx908 (f16), gfx90a and gfx94x only, the kernels' targets. */
static int gemm_mfma(const xattn_device_caps *caps, const xattn_moe_desc *d)
{
    return xattn_moe_uses_matrix_units(caps, d) && caps->simd_width == WAVE64 &&
           caps->matrix_m == MFMA && caps->matrix_n == MFMA && caps->matrix_k == MFMA;
}

/* Options and LDS of one GEMM on MFMA. The waves form a WARPS_M × WARPS_N
 * grid of whole 16 × 16 tiles; of the grids that fit, the one that reads
 * the fewest operands per MFMA (a wave of MT row tiles and NT column tiles
 * per pair reads MT + pairs·NT fragments for MT·pairs·NT products). K
 * steps of 16-multiples, halved while a smaller one still covers k in
 * whole steps and while the tile passes the device's LDS. Returns 0 when
 * the tile does not split (the FMA form runs it). */
static int mfma_options(const char *name, const xattn_moe_gemm_tiles *t, int pairs, int64_t k,
                        const xattn_device_caps *caps, char *opts, size_t size, size_t *lds)
{
    const int64_t waves = t->threads / WAVE64, bm = t->block_m, bn = t->block_n;
    if (waves < 1 || t->threads % WAVE64 || t->block_k % MFMA || t->stages < 1) return 0;
    int64_t warps_m = 0;
    double best = 0.0;
    for (int64_t wm = 1; wm <= waves; wm++) {
        if (waves % wm || bm % (wm * MFMA) || bn % ((waves / wm) * MFMA)) continue;
        const double mt = (double)(bm / wm / MFMA), nt = (double)(pairs * (bn / (waves / wm) / MFMA));
        const double cost = (mt + nt) / (mt * nt);
        if (!warps_m || cost < best) {
            warps_m = wm;
            best = cost;
        }
    }
    if (!warps_m) return 0;
    const size_t bufs = t->stages > 1 ? 2 : 1;
    int64_t bk = t->block_k;
    while (bk / 2 >= MFMA && bk / 2 % MFMA == 0 &&
           (bk / 2 >= (k + MFMA - 1) / MFMA * MFMA ||
            bufs * (size_t)((bm + pairs * bn) * bk) * MFMA_ESIZE > caps->local_mem_bytes))
        bk /= 2;
    *lds = bufs * (size_t)((bm + pairs * bn) * bk) * MFMA_ESIZE;
    if (*lds > caps->local_mem_bytes) return 0;
    return !xattn_options_add(opts, size, " -D%s_BM=%d -D%s_BN=%d -D%s_BK=%lld -D%s_THREADS=%d"
                            " -D%s_STAGES=%d -D%s_WARPS_M=%lld", name, (int)bm, name, (int)bn,
                            name, (long long)bk, name, (int)t->threads, name, (int)t->stages,
                            name, (long long)warps_m);
}

xattn_status hip_moe_variants(const struct xattn_moe_plan *plan, const xattn_device_caps *caps,
                             hip_variant *out, int *n)
{
    const xattn_moe_desc *d = &plan->prob.desc;
    const xattn_moe_plan_params *p = &plan->params;
    *n = 0;
    memset(out, 0, NUM_V * sizeof *out);
    hip_variant *r = &out[V_ROUTE], *x = &out[V_DISPATCH], *u = &out[V_UP], *w = &out[V_DOWN];
    if (p->style != XATTN_DEVICE_STYLE_GPU)
        return xattn_error(XATTN_ERR_INTERNAL, "hip: a MoE plan for a CPU-style device");
    r->source = x->source = "moe";
    r->threads = x->threads = THREADS;
    if (xattn_options_dtype(r->options, sizeof r->options, "LG", d->logits_dtype) ||
        xattn_options_add(r->options, sizeof r->options, " -DROUTE=%d -DRENORM=%d -DHAS_BIAS=%d",
                       (int)d->route, (d->flags & XATTN_MOE_RENORMALIZE) != 0,
                       (d->flags & XATTN_MOE_BIAS) != 0) ||
        xattn_options_dtype(x->options, sizeof x->options, "IO", d->dtype) ||
        xattn_options_add(x->options, sizeof x->options, " -DDISPATCH=1 -DON_INPUT=%d",
                       (d->flags & XATTN_MOE_WEIGHTS_ON_INPUT) != 0))
        return xattn_error(XATTN_ERR_INTERNAL, "hip: MoE options too long");

    /* Both GEMMs come from one module: the same options, with each GEMM's
     * tile under its prefix. */
    char *g = u->options;
    const size_t gs = sizeof u->options;
    if (xattn_options_dtype(g, gs, "IO", d->dtype) || xattn_options_dtype(g, gs, "W", d->weight_dtype) ||
        xattn_options_dtype(g, gs, "B", d->bias_dtype) ||
        xattn_options_add(g, gs, " -DHAS_B1=%d -DHAS_B2=%d -DW1_IL=%d",
                        (d->flags & XATTN_MOE_EXPERT_B1) != 0,
                        (d->flags & XATTN_MOE_EXPERT_B2) != 0,
                        (d->flags & XATTN_MOE_W1_INTERLEAVED) != 0))
        return xattn_error(XATTN_ERR_INTERNAL, "hip: MoE options too long");
    if (d->activation == XATTN_MOE_GEGLU) {
        if (xattn_options_add(g, gs, " -DACT_GEGLU=1"))
            return xattn_error(XATTN_ERR_INTERNAL, "hip: MoE options too long");
    } else if (d->activation == XATTN_MOE_SWIGLU_CLAMPED) {
        /* Hexadecimal float literals carry α and the limit exactly. */
        if (xattn_options_add(g, gs, " -DACT_CLAMPED=1 -DACT_ALPHA=%af -DACT_LIMIT=%af",
                            (double)plan->prob.alpha, (double)plan->prob.limit))
            return xattn_error(XATTN_ERR_INTERNAL, "hip: MoE options too long");
    }
    /* Both forms take the same arguments and virtual row tiles. The MFMA
     * options go into a copy, so a tile that does not split leaves the
     * common options for the FMA form. */
    char mf[sizeof u->options];
    memcpy(mf, g, sizeof mf);
    if (gemm_mfma(caps, d) && mfma_options("UP", &p->up, 2, d->hidden, caps, mf, sizeof mf,
                                           &u->lds_bytes) &&
        mfma_options("DOWN", &p->down, 1, d->inter, caps, mf, sizeof mf, &w->lds_bytes)) {
        memcpy(g, mf, sizeof mf);
        u->source = w->source = "moe_gemm_mfma";
        u->kernels[0] = "moe_up_mfma";
        w->kernels[0] = "moe_down_mfma";
        u->mfma = w->mfma = 1;
    } else {
        XATTN_TRY(xattn_moe_fma_options("hip", "UP", &p->up, 2, d->hidden, caps, g, gs,
                                        &u->lds_bytes));
        XATTN_TRY(xattn_moe_fma_options("hip", "DOWN", &p->down, 1, d->inter, caps, g, gs,
                                        &w->lds_bytes));
        u->source = w->source = "moe_gemm";
        u->kernels[0] = "moe_up";
        w->kernels[0] = "moe_down";
    }
    memcpy(w->options, u->options, sizeof w->options);
    u->threads = p->up.threads;
    w->threads = p->down.threads;
    u->hot = w->hot = 1;

    r->kernels[0] = "moe_route";
    x->kernels[K_COUNT] = "moe_count";
    x->kernels[K_SCAN] = "moe_scan";
    x->kernels[K_SCATTER] = "moe_scatter";
    x->kernels[K_ROWS] = "moe_rows";
    x->kernels[K_COMBINE] = "moe_combine";
    *n = NUM_V;
    return XATTN_OK;
}

xattn_status hip_moe_prepare(xattn_device *dev, const struct xattn_moe_plan *plan, void **state)
{
    *state = NULL;
    const xattn_moe_plan_params *p = &plan->params;
    const int64_t counters = (int64_t)plan->prob.desc.num_experts * (int64_t)sizeof(int32_t);
    hip_variant v[HIP_MAX_VARIANTS];
    int n = 0;
    XATTN_TRY(hip_moe_variants(plan, &dev->caps, v, &n));
    moe_state *s = calloc(1, sizeof *s);
    if (!s) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "hip: out of memory");
    s->max_chunks = (int64_t)(p->scratch_bytes / (size_t)counters);
    s->up_bm = p->up.block_m;
    s->up_bn = p->up.block_n;
    s->down_bm = p->down.block_m;
    s->down_bn = p->down.block_n;
    s->mfma = v[V_UP].mfma;
    xattn_status st = s->max_chunks < 1
                          ? xattn_error(XATTN_ERR_INTERNAL,
                                        "hip: MoE scratch of %zu bytes holds no row of %lld "
                                        "expert counters", p->scratch_bytes,
                                        (long long)plan->prob.desc.num_experts)
                          : hip_variants_load(dev, v, n, s->k);
    if (st != XATTN_OK) {
        free(s);
        return st;
    }
    *state = s;
    return XATTN_OK;
}

void hip_moe_release(xattn_device *dev, void *state)
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
    void *lg = hip_ptr(l->logits), *bias = hip_ptr(l->bias), *ids = hip_ptr(l->topk_ids);
    void *w = hip_ptr(l->topk_weights);
    void *args[] = {&T, &E, &k, &n_group, &topk_group, &scale, &lg, &logits_st, &bias,
                    &ids, &ids_st, &w, &w_st};
    const int64_t warps = THREADS / ROW_LANES; /* one token each */
    if ((T + warps - 1) / warps > INT32_MAX)
        return xattn_error(XATTN_ERR_UNSUPPORTED, "hip: %lld tokens", (long long)T);
    return hip_launch(dev, &s->k[V_ROUTE][0], (unsigned)((T + warps - 1) / warps), 1, 1, args);
}

static xattn_status run_dispatch(xattn_device *dev, const struct xattn_moe_plan *plan,
                                 const moe_state *s, const xattn_moe_launch *l)
{
    const xattn_moe_desc *d = &plan->prob.desc;
    const hip_kernel *k = s->k[V_DISPATCH];
    int64_t T = l->tokens, R = l->rows, H = d->hidden, align = plan->params.align;
    int32_t E = d->num_experts, topk = d->top_k;
    int64_t chunk = (T + s->max_chunks - 1) / s->max_chunks;
    if (chunk < MIN_CHUNK) chunk = MIN_CHUNK;
    int64_t chunks = (T + chunk - 1) / chunk;
    int64_t ids_st = l->ids_st, rt_st = l->row_token_st, tr_st = l->token_row_st;
    int64_t off_st = l->offsets_st, x_st = l->x_st, xp_st = l->x_perm_st, w_st = l->weights_st;
    xattn_ref sref = l->workspace;
    sref.offset += plan->params.scratch_offset;
    void *scratch = hip_ptr(sref), *ids = hip_ptr(l->topk_ids);
    void *offsets = hip_ptr(l->expert_offsets), *rt = hip_ptr(l->row_token);
    void *tr = hip_ptr(l->token_row), *x = hip_ptr(l->x), *xp = hip_ptr(l->x_perm);
    void *w = hip_ptr(l->topk_weights);

    if (chunks > INT32_MAX)
        return xattn_error(XATTN_ERR_UNSUPPORTED, "hip: %lld MoE dispatch chunks",
                           (long long)chunks);
    void *count[] = {&T, &topk, &E, &chunk, &ids, &ids_st, &scratch};
    XATTN_TRY(hip_launch(dev, &k[K_COUNT], (unsigned)chunks, 1, 1, count));
    void *scan[] = {&E, &chunks, &align, &scratch, &offsets, &off_st};
    XATTN_TRY(hip_launch(dev, &k[K_SCAN], 1, 1, 1, scan));
    void *scatter[] = {&T, &topk, &E, &chunk, &R, &ids, &ids_st, &scratch, &rt, &rt_st, &tr,
                       &tr_st};
    XATTN_TRY(hip_launch(dev, &k[K_SCATTER], (unsigned)chunks, 1, 1, scatter));
    if (R > INT32_MAX) return xattn_error(XATTN_ERR_UNSUPPORTED, "hip: %lld MoE rows", (long long)R);
    void *rows[] = {&R, &E, &H, &T, &chunks, &topk, &offsets, &off_st, &scratch, &rt, &rt_st,
                    &x, &x_st, &xp, &xp_st, &tr, &tr_st, &w, &w_st};
    return hip_launch(dev, &k[K_ROWS], (unsigned)R, 1, 1, rows);
}

/* Whole 16-byte chunks of a row can go by vector loads: the base and every row
 * (and expert) stride 16-byte aligned, and K a multiple of a chunk. */
static int vec_ok(const void *base, int64_t k, size_t esize, int64_t st1, int64_t st2)
{
    const int64_t per = VEC_BYTES / (int64_t)esize;
    return (uintptr_t)base % VEC_BYTES == 0 && k % per == 0 && st1 % per == 0 && st2 % per == 0;
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
    void *h = hip_ptr(href), *offsets = hip_ptr(l->expert_offsets), *x = hip_ptr(l->x_perm);
    void *w1 = hip_ptr(l->w1), *w2 = hip_ptr(l->w2), *b1 = hip_ptr(l->b1), *b2 = hip_ptr(l->b2);
    void *y = hip_ptr(l->y);
    const size_t xs = xattn_dtype_size(d->dtype), ws = xattn_dtype_size(d->weight_dtype);
    int32_t x_vec = vec_ok(x, H, xs, x_st, 0), w1_vec = vec_ok(w1, H, ws, w1_sn, w1_se);
    int32_t w2_vec = vec_ok(w2, I, ws, w2_sn, w2_se);
    /* h rows of I elements: f32, or the weight dtype on MFMA. */
    int32_t h_vec = vec_ok(h, I, s->mfma ? (size_t)MFMA_ESIZE : sizeof(float), I, 0);
    /* Every segment fits R / block_m + E virtual row tiles (moe_gemm.hip). */
    const int64_t up_tiles = R / s->up_bm + E, down_tiles = R / s->down_bm + E;
    const int64_t up_cols = ceil_div(I, s->up_bn), down_cols = ceil_div(H, s->down_bn);
    if (up_tiles > INT32_MAX || down_tiles > INT32_MAX || up_cols > MAX_GRID_Y ||
        down_cols > MAX_GRID_Y)
        return xattn_error(XATTN_ERR_UNSUPPORTED, "hip: MoE GEMM of %lld rows, I %lld, H %lld",
                           (long long)R, (long long)I, (long long)H);
    void *up[] = {&R, &E, &H, &I, &offsets, &off_st, &x, &x_st, &x_vec, &w1, &w1_se, &w1_sn,
                  &w1_vec, &b1, &b1_se, &h};
    XATTN_TRY(hip_launch(dev, &s->k[V_UP][0], (unsigned)up_tiles, (unsigned)up_cols, 1, up));
    void *down[] = {&R, &E, &I, &H, &offsets, &off_st, &h, &h_vec, &w2, &w2_se, &w2_sn, &w2_vec,
                    &b2, &b2_se, &y, &y_st};
    return hip_launch(dev, &s->k[V_DOWN][0], (unsigned)down_tiles, (unsigned)down_cols, 1, down);
}

static xattn_status run_combine(xattn_device *dev, const struct xattn_moe_plan *plan,
                                const moe_state *s, const xattn_moe_launch *l)
{
    const xattn_moe_desc *d = &plan->prob.desc;
    int64_t T = l->tokens, H = d->hidden, R = l->rows;
    int32_t k = d->top_k, accumulate = l->accumulate;
    int64_t y_st = l->y_st, w_st = l->weights_st, tr_st = l->token_row_st, out_st = l->out_st;
    void *y = hip_ptr(l->y), *w = hip_ptr(l->topk_weights), *tr = hip_ptr(l->token_row);
    void *out = hip_ptr(l->out);
    if (T > INT32_MAX) return xattn_error(XATTN_ERR_UNSUPPORTED, "hip: %lld tokens", (long long)T);
    void *args[] = {&T, &k, &H, &R, &accumulate, &y, &y_st, &w, &w_st, &tr, &tr_st, &out,
                    &out_st};
    return hip_launch(dev, &s->k[V_DISPATCH][K_COMBINE], (unsigned)T, 1, 1, args);
}

xattn_status hip_moe_run(xattn_device *dev, const struct xattn_moe_plan *plan, const void *state,
                        xattn_moe_op op, const xattn_moe_launch *l)
{
    const moe_state *s = state;
    if (!s) return xattn_error(XATTN_ERR_INTERNAL, "hip: MoE run without prepare");
    switch (op) {
    case XATTN_MOE_OP_ROUTE: return l->tokens > 0 ? run_route(dev, plan, s, l) : XATTN_OK;
    case XATTN_MOE_OP_DISPATCH: return l->tokens > 0 ? run_dispatch(dev, plan, s, l) : XATTN_OK;
    case XATTN_MOE_OP_EXPERTS: return l->rows > 0 ? run_experts(dev, plan, s, l) : XATTN_OK;
    case XATTN_MOE_OP_COMBINE: return l->tokens > 0 ? run_combine(dev, plan, s, l) : XATTN_OK;
    }
    return xattn_error(XATTN_ERR_INTERNAL, "hip: MoE op %d", (int)op);
}
