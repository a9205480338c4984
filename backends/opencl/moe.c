/* MoE on OpenCL: route, dispatch and combine (kernels/moe.cl), and the
 * glue that hands the experts op to the GEMMs of moe_gemm.c.
 *
 * Programs. kernels/moe.cl is built twice per plan: route with the logits
 * dtype, route mode and flags; dispatch and combine with the activation
 * dtype, the style and whether the weights go on the input. Nothing else
 * specialises them, so plans of other shapes share both builds.
 *
 * Dispatch cuts the tokens into chunks with one row of E expert counters
 * each in the plan's scratch region (see kernels/moe.cl); the region holds
 * at least ceil(max_tokens / threads) rows on GPU-style plans and
 * 2·threads rows on CPU-style ones, and the chunk length follows from it.
 *
 * Launch shapes. CPU style (PoCL): the driver picks groups; route is one
 * work-item per token, counting and scattering one per chunk, row copies
 * one per row with vector moves, combine one per (token, span of the
 * row), and the scan a single work-item. GPU style: every kernel runs
 * groups of params.threads (within the kernel's limit): route a token per
 * work-item, counting and scattering a group per chunk with its experts
 * spread over the lanes, row copies and combine a row per group with the
 * lanes across it (coalesced), and the scan one group. */
#include <stdio.h>
#include <stdlib.h>

#include "ocl.h"

enum {
    /* A chunk of dispatch covers at least this many tokens: fewer would
     * make the scan walk more counters than the extra chunks save. CPU
     * style: a work-item per chunk; GPU style: a group per chunk. */
    CPU_MIN_CHUNK = 64,
    GPU_MIN_CHUNK = 32,
    /* GPU-style dispatch stages this many (token, slot) experts per
     * work-item of the group in local memory at a time (8 KiB for 256). */
    GPU_TILE_PER_THREAD = 8,
    /* CPU-style combine: elements of a row per work-item, a multiple of the
     * kernels' 16-lane vectors; 4 KiB of f32 accumulators stay in cache. */
    CPU_COMBINE_SPAN = 1024,
    OPTIONS_SIZE = 160,
    MESSAGE_SIZE = 256,
};

typedef struct moe_state {
    ocl_kernel route, count, scan, scatter, rows, combine;
    ocl_moe_gemm *gemm;           /* NULL when the GEMMs could not be prepared */
    xattn_status gemm_status;     /* then why, for the experts op */
    char gemm_message[MESSAGE_SIZE];
    int64_t max_chunks;           /* rows of E counters the scratch region holds */
    /* GPU style: group sizes (0: the driver's choice) and the dispatch
     * tile; the scan runs one group of scan_local (1 on CPU style). */
    size_t route_local, rows_local, combine_local, dispatch_local, scan_local;
    int64_t tile_len;
} moe_state;

static void release_state(xattn_device *dev, moe_state *s)
{
    ocl_kernel *kernels[] = {&s->route, &s->count, &s->scan, &s->scatter, &s->rows, &s->combine};
    for (size_t i = 0; i < XATTN_ARRAY_SIZE(kernels); i++) ocl_kernel_release(dev, kernels[i]);
    if (s->gemm) ocl_moe_gemm_release(dev, s->gemm);
    free(s);
}

/* GPU-style group size for kernel k: the plan's threads, within what the
 * kernel allows. */
static size_t group_size(const struct xattn_moe_plan *plan, const ocl_kernel *k)
{
    size_t n = (size_t)plan->params.threads;
    if (k->max_group_size && n > k->max_group_size) n = k->max_group_size;
    return n ? n : 1;
}

static xattn_status build_kernels(xattn_device *dev, const struct xattn_moe_plan *plan,
                                  moe_state *s)
{
    const xattn_moe_desc *d = &plan->prob.desc;
    const int cpu = plan->params.style == XATTN_DEVICE_STYLE_CPU;
    char opts[OPTIONS_SIZE] = "";
    cl_program prog;
    if (xattn_options_dtype(opts, sizeof opts, "LG", d->logits_dtype) ||
        xattn_options_add(opts, sizeof opts, " -DROUTE=%d -DRENORM=%d -DHAS_BIAS=%d",
                        (int)d->route, (d->flags & XATTN_MOE_RENORMALIZE) != 0,
                        (d->flags & XATTN_MOE_BIAS) != 0))
        return xattn_error(XATTN_ERR_INTERNAL, "opencl: MoE route options too long");
    XATTN_TRY(ocl_program_get(dev, "moe", opts, &prog));
    XATTN_TRY(ocl_kernel_create(dev, prog, "moe_route", &s->route));

    opts[0] = '\0';
    if (xattn_options_dtype(opts, sizeof opts, "IO", d->dtype) ||
        xattn_options_add(opts, sizeof opts, " -DCPU_STYLE=%d -DON_INPUT=%d", cpu,
                        (d->flags & XATTN_MOE_WEIGHTS_ON_INPUT) != 0))
        return xattn_error(XATTN_ERR_INTERNAL, "opencl: MoE dispatch options too long");
    XATTN_TRY(ocl_program_get(dev, "moe", opts, &prog));
    XATTN_TRY(ocl_kernel_create(dev, prog, "moe_count", &s->count));
    XATTN_TRY(ocl_kernel_create(dev, prog, "moe_scan", &s->scan));
    XATTN_TRY(ocl_kernel_create(dev, prog, "moe_scatter", &s->scatter));
    XATTN_TRY(ocl_kernel_create(dev, prog, "moe_rows", &s->rows));
    XATTN_TRY(ocl_kernel_create(dev, prog, "moe_combine", &s->combine));
    s->scan_local = 1;
    s->tile_len = 1;
    if (!cpu) {
        s->scan_local = group_size(plan, &s->scan);
        s->dispatch_local = group_size(plan, &s->count);
        const size_t scatter = group_size(plan, &s->scatter);
        if (scatter < s->dispatch_local) s->dispatch_local = scatter;
        s->tile_len = (int64_t)(GPU_TILE_PER_THREAD * s->dispatch_local);
        /* Half the local memory at most, so the driver keeps its own. */
        const int64_t fit = (int64_t)(dev->local_mem_bytes / 2 / sizeof(cl_int));
        if (fit >= 1 && s->tile_len > fit) s->tile_len = fit;
        s->route_local = group_size(plan, &s->route);
        s->rows_local = group_size(plan, &s->rows);
        s->combine_local = group_size(plan, &s->combine);
    }
    return XATTN_OK;
}

xattn_status ocl_moe_prepare(xattn_device *dev, const struct xattn_moe_plan *plan, void **state)
{
    *state = NULL;
    const xattn_moe_plan_params *p = &plan->params;
    const int64_t counters = (int64_t)plan->prob.desc.num_experts * (int64_t)sizeof(cl_int);
    moe_state *s = calloc(1, sizeof *s);
    if (!s) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "opencl: out of memory");
    s->max_chunks = (int64_t)(p->scratch_bytes / (size_t)counters);
    if (s->max_chunks < 1) {
        free(s);
        return xattn_error(XATTN_ERR_INTERNAL,
                           "opencl: MoE scratch of %zu bytes holds no row of %lld expert "
                           "counters (dispatch needs %lld bytes per token chunk)",
                           p->scratch_bytes, (long long)plan->prob.desc.num_experts,
                           (long long)counters);
    }
    xattn_status st = build_kernels(dev, plan, s);
    if (st == XATTN_OK) {
        /* Without the GEMMs route, dispatch and combine still work; the
         * experts op reports why. */
        st = ocl_moe_gemm_prepare(dev, plan, &s->gemm);
        if (st == XATTN_ERR_UNSUPPORTED) {
            s->gemm = NULL;
            s->gemm_status = st;
            snprintf(s->gemm_message, sizeof s->gemm_message, "%s", xattn_last_error());
            st = XATTN_OK;
        }
    }
    if (st != XATTN_OK) {
        release_state(dev, s);
        return st;
    }
    *state = s;
    return XATTN_OK;
}

void ocl_moe_release(xattn_device *dev, void *state)
{
    if (state) release_state(dev, state);
}

/* ---- the three ops -------------------------------------------------------- */

static size_t round_up(size_t x, size_t m) { return (x + m - 1) / m * m; }

static xattn_status run_route(xattn_device *dev, const struct xattn_moe_plan *plan,
                              moe_state *s, const xattn_moe_launch *l)
{
    const xattn_moe_desc *d = &plan->prob.desc;
    cl_long T = l->tokens, logits_st = l->logits_st, ids_st = l->ids_st, w_st = l->weights_st;
    cl_int E = d->num_experts, k = d->top_k, n_group = d->n_group, topk_group = d->topk_group;
    cl_float scale = plan->prob.scale;
    cl_ulong lg_off = l->logits.offset, b_off = l->bias.offset, ids_off = l->topk_ids.offset;
    cl_ulong w_off = l->topk_weights.offset;
    const ocl_arg args[] = {
        OCL_ARG(T), OCL_ARG(E), OCL_ARG(k), OCL_ARG(n_group), OCL_ARG(topk_group), OCL_ARG(scale),
        OCL_ARG(l->logits.native), OCL_ARG(lg_off), OCL_ARG(logits_st),
        OCL_ARG(l->bias.native), OCL_ARG(b_off),
        OCL_ARG(l->topk_ids.native), OCL_ARG(ids_off), OCL_ARG(ids_st),
        OCL_ARG(l->topk_weights.native), OCL_ARG(w_off), OCL_ARG(w_st),
    };
    size_t local = s->route_local;
    size_t global = local ? round_up((size_t)T, local) : (size_t)T;
    return ocl_launch(dev, &s->route, (int)XATTN_ARRAY_SIZE(args), args, 1,
                      &global, local ? &local : NULL);
}

static xattn_status run_dispatch(xattn_device *dev, const struct xattn_moe_plan *plan,
                                 moe_state *s, const xattn_moe_launch *l)
{
    const xattn_moe_desc *d = &plan->prob.desc;
    cl_long T = l->tokens, R = l->rows, H = d->hidden, align = plan->params.align;
    cl_int E = d->num_experts, k = d->top_k;
    /* Chunks of at least min_chunk tokens, no more than the scratch region
     * has counter rows for. */
    const cl_long min_chunk = s->dispatch_local ? GPU_MIN_CHUNK : CPU_MIN_CHUNK;
    cl_long chunk = (T + s->max_chunks - 1) / s->max_chunks;
    if (chunk < min_chunk) chunk = min_chunk;
    cl_long tile_len = s->tile_len;
    const ocl_arg tile = {(size_t)tile_len * sizeof(cl_int), NULL}; /* __local int[tile_len] */
    const size_t group = s->dispatch_local ? s->dispatch_local : 1;
    cl_long chunks = (T + chunk - 1) / chunk;
    const size_t chunk_global = (size_t)chunks * group;
    cl_long ids_st = l->ids_st, rt_st = l->row_token_st, tr_st = l->token_row_st;
    cl_long off_st = l->offsets_st, x_st = l->x_st, xp_st = l->x_perm_st;
    cl_ulong ids_off = l->topk_ids.offset, rt_off = l->row_token.offset;
    cl_ulong tr_off = l->token_row.offset, off_off = l->expert_offsets.offset;
    cl_ulong x_off = l->x.offset, xp_off = l->x_perm.offset;
    cl_ulong sc_off = l->workspace.offset + plan->params.scratch_offset;
    /* Weights on the input: present, and the rows kernel scales by them. */
    cl_ulong w_off = l->topk_weights.offset;
    cl_long w_st = l->weights_st;

    const ocl_arg count_args[] = {
        OCL_ARG(T), OCL_ARG(k), OCL_ARG(E), OCL_ARG(chunk),
        OCL_ARG(l->topk_ids.native), OCL_ARG(ids_off), OCL_ARG(ids_st),
        OCL_ARG(l->workspace.native), OCL_ARG(sc_off), OCL_ARG(tile_len), tile,
    };
    XATTN_TRY(ocl_launch(dev, &s->count, (int)XATTN_ARRAY_SIZE(count_args), count_args, 1,
                         &chunk_global, s->dispatch_local ? &group : NULL));

    const ocl_arg scan_args[] = {
        OCL_ARG(E), OCL_ARG(chunks), OCL_ARG(align),
        OCL_ARG(l->workspace.native), OCL_ARG(sc_off),
        OCL_ARG(l->expert_offsets.native), OCL_ARG(off_off), OCL_ARG(off_st),
        {s->scan_local * sizeof(cl_long), NULL}, /* __local long[group] */
    };
    XATTN_TRY(ocl_launch(dev, &s->scan, (int)XATTN_ARRAY_SIZE(scan_args), scan_args, 1,
                         &s->scan_local, &s->scan_local));

    const ocl_arg scatter_args[] = {
        OCL_ARG(T), OCL_ARG(k), OCL_ARG(E), OCL_ARG(chunk), OCL_ARG(R),
        OCL_ARG(l->topk_ids.native), OCL_ARG(ids_off), OCL_ARG(ids_st),
        OCL_ARG(l->workspace.native), OCL_ARG(sc_off),
        OCL_ARG(l->row_token.native), OCL_ARG(rt_off), OCL_ARG(rt_st),
        OCL_ARG(l->token_row.native), OCL_ARG(tr_off), OCL_ARG(tr_st), OCL_ARG(tile_len), tile,
    };
    XATTN_TRY(ocl_launch(dev, &s->scatter, (int)XATTN_ARRAY_SIZE(scatter_args), scatter_args,
                         1, &chunk_global, s->dispatch_local ? &group : NULL));

    const ocl_arg rows_args[] = {
        OCL_ARG(R), OCL_ARG(E), OCL_ARG(H), OCL_ARG(T), OCL_ARG(chunks), OCL_ARG(k),
        OCL_ARG(l->expert_offsets.native), OCL_ARG(off_off), OCL_ARG(off_st),
        OCL_ARG(l->workspace.native), OCL_ARG(sc_off),
        OCL_ARG(l->row_token.native), OCL_ARG(rt_off), OCL_ARG(rt_st),
        OCL_ARG(l->x.native), OCL_ARG(x_off), OCL_ARG(x_st),
        OCL_ARG(l->x_perm.native), OCL_ARG(xp_off), OCL_ARG(xp_st),
        OCL_ARG(l->token_row.native), OCL_ARG(tr_off), OCL_ARG(tr_st),
        OCL_ARG(l->topk_weights.native), OCL_ARG(w_off), OCL_ARG(w_st),
    };
    const size_t lanes = s->rows_local ? s->rows_local : 1;
    const size_t rows_global[2] = {lanes, (size_t)R};
    const size_t rows_local[2] = {lanes, 1};
    return ocl_launch(dev, &s->rows, (int)XATTN_ARRAY_SIZE(rows_args), rows_args,
                      2, rows_global, s->rows_local ? rows_local : NULL);
}

static xattn_status run_combine(xattn_device *dev, const struct xattn_moe_plan *plan,
                                moe_state *s, const xattn_moe_launch *l)
{
    const xattn_moe_desc *d = &plan->prob.desc;
    cl_long T = l->tokens, H = d->hidden, R = l->rows, span = CPU_COMBINE_SPAN;
    cl_int k = d->top_k, accumulate = l->accumulate != 0;
    cl_long y_st = l->y_st, w_st = l->weights_st, tr_st = l->token_row_st, out_st = l->out_st;
    cl_ulong y_off = l->y.offset, w_off = l->topk_weights.offset;
    cl_ulong tr_off = l->token_row.offset, out_off = l->out.offset;
    const ocl_arg args[] = {
        OCL_ARG(T), OCL_ARG(k), OCL_ARG(H), OCL_ARG(R), OCL_ARG(accumulate), OCL_ARG(span),
        OCL_ARG(l->y.native), OCL_ARG(y_off), OCL_ARG(y_st),
        OCL_ARG(l->topk_weights.native), OCL_ARG(w_off), OCL_ARG(w_st),
        OCL_ARG(l->token_row.native), OCL_ARG(tr_off), OCL_ARG(tr_st),
        OCL_ARG(l->out.native), OCL_ARG(out_off), OCL_ARG(out_st),
    };
    const size_t lanes = s->combine_local ? s->combine_local
                                          : (size_t)((H + CPU_COMBINE_SPAN - 1) / CPU_COMBINE_SPAN);
    const size_t global[2] = {lanes, (size_t)T};
    const size_t local[2] = {lanes, 1};
    return ocl_launch(dev, &s->combine, (int)XATTN_ARRAY_SIZE(args), args, 2,
                      global, s->combine_local ? local : NULL);
}

xattn_status ocl_moe_run(xattn_device *dev, const struct xattn_moe_plan *plan, const void *state,
                         xattn_moe_op op, const xattn_moe_launch *l)
{
    /* The kernels' locks change; nothing else does. */
    moe_state *s = (moe_state *)state;
    if (!s) return xattn_error(XATTN_ERR_INTERNAL, "opencl: MoE plan has no kernels");
    if (op == XATTN_MOE_OP_EXPERTS) {
        if (!s->gemm)
            return xattn_error(s->gemm_status, "opencl: MoE expert GEMMs unavailable: %s",
                               s->gemm_message);
        return ocl_moe_gemm_run(dev, plan, s->gemm, l);
    }
    if (l->tokens <= 0) return XATTN_OK; /* T = 0 reads and writes nothing */
    switch (op) {
    case XATTN_MOE_OP_ROUTE: return run_route(dev, plan, s, l);
    case XATTN_MOE_OP_DISPATCH: return run_dispatch(dev, plan, s, l);
    case XATTN_MOE_OP_COMBINE: return run_combine(dev, plan, s, l);
    default: return xattn_error(XATTN_ERR_INTERNAL, "opencl: unknown MoE op %d", (int)op);
    }
}
