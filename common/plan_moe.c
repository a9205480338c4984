/* The MoE planner: device caps + validated MoE problem in, plan parameters
 * out. Pure like the attention planner (common/plan.c): no I/O, no
 * allocation, no globals; a failure leaves its message with xattn_error().
 *
 * Style. The plan takes the device's kernel style from its caps, as the
 * attention plan does: CPU-style devices get their GEMM tiles, worker
 * threads and per-thread scratch from xattn_plan_moe_cpu_tiles()
 * (common/plan_moe_cpu.c), GPU-style devices get their tiles here. Segment
 * alignment, scratch and the workspace layout are decided here for both.
 *
 * GPU GEMM tiles. One group computes a block_m × block_n tile of one
 * expert's rows (block_n gate columns plus the matching up columns for the
 * gate/up GEMM, so the activation is applied in registers), walking K
 * block_k at a time through `stages` buffers in local memory:
 *
 *   A  [stages][block_m][block_k]          x (gate/up) or h (down)
 *   B  [stages][pairs · block_n][block_k]  W1 (pairs = 2) or W2 (pairs = 1)
 *
 * each region starting on a LOCAL_ALIGN boundary. Matrix units are used
 * when the weights have a matrix-unit dtype and the activations the same
 * dtype; f32 never uses them (IEEE fp32, no TF32). With matrix units the
 * down GEMM stages h, which the workspace holds in f32, rounded to the
 * weight dtype, as attention stages P. The warps form a warps_m × warps_n
 * grid, each owning a whole number of matrix tiles (and matching gate/up
 * columns); without matrix units every thread owns the same number of
 * outputs. The f32 accumulators must fit the register file.
 *
 * block_m is shared by both GEMMs and is the segment alignment when the
 * descriptor leaves it to the planner, so every tile holds rows of one
 * expert only. It follows the rows an expert gets at max_tokens, so small
 * batches do not pad every expert to a large tile. When the descriptor fixes
 * the alignment, block_m divides it where a candidate does; otherwise the
 * kernels clip a tile at its segment's end.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "text.h"
#include "plan_moe.h"

enum {
    WORKSPACE_ALIGN = XATTN_WORKSPACE_ALIGN,
    SCRATCH_ALIGN = 64,    /* per-thread slices and their arrays own whole cache lines */
    LOCAL_ALIGN = 16,      /* one 128-bit vector load */
    /* CPU segment alignment. The CPU GEMMs walk any number of rows with
     * register blocks and a tail, and a row's address does not depend on
     * where its segment starts, so padding would only add rows of zeros
     * that are multiplied by every weight: no padding. */
    CPU_ALIGN = 1,
    /* Route, dispatch and combine on GPUs run groups of this many threads
     * (one token per thread when counting experts). */
    GPU_ROUTE_THREADS = 256,
    GPU_MAX_BLOCK_M = 128,
    GPU_MIN_BLOCK_M = 16,  /* fewer rows re-read the weights too often */
    GPU_MAX_STAGES = 4,
    /* A K step of a weight row spans at least this many bytes: whole
     * 64-byte sectors per row, so B loads coalesce. */
    GPU_GOOD_K_BYTES = 64,
    /* NVIDIA gives a thread at most 255 registers, RDNA and CDNA a lane 256
     * VGPRs (AGPRs aside). */
    GPU_MAX_REGS_PER_LANE = 255,
    /* Registers a lane needs besides the accumulators: addresses, loop
     * state, A and B fragments in flight, the epilogue's activation. */
    GPU_REG_OVERHEAD = 48,
};

static int64_t ceil_div(int64_t x, int64_t m) { return (x + m - 1) / m; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static size_t align_size(size_t x, size_t a) { return (x + a - 1) / a * a; }

int64_t xattn_moe_rows_for(const xattn_moe_problem *prob, int32_t align, int64_t tokens)
{
    const xattn_moe_desc *d = &prob->desc;
    if (tokens < 0 || tokens > INT32_MAX || align < 1) return -1;
    /* T, k, E and align are all below 2^31: T·k + E·align stays below 2^63. */
    int64_t pairs = tokens * d->top_k;
    return pairs + min64(d->num_experts, pairs) * (align - 1);
}

/* ---- GPU tiles ------------------------------------------------------------ */

int xattn_moe_uses_matrix_units(const xattn_device_caps *caps, const xattn_moe_desc *d)
{
    if (!caps->matrix_m || !caps->matrix_n || !caps->matrix_k) return 0;
    if (d->dtype != d->weight_dtype) return 0;
    if (d->weight_dtype == XATTN_F16) return (caps->matrix_dtypes & XATTN_MATRIX_F16) != 0;
    if (d->weight_dtype == XATTN_BF16) return (caps->matrix_dtypes & XATTN_MATRIX_BF16) != 0;
    return 0;
}

/* ---- the FMA form of the GPU modules' expert GEMMs ----------------------------- */

/* Per-thread register block TM × TN of a bm × bn tile for `threads`
 * threads laid out TY × TX (TX = bn / TN, TY = bm / TM): the most square
 * one, so a k step loads the fewest operands per FMA. */
static int fma_block(int64_t bm, int64_t bn, int64_t threads, int64_t *tm, int64_t *tn)
{
    int found = 0;
    for (int64_t n = 1; n <= bn; n++) {
        if (bn % n || threads % (bn / n)) continue;
        const int64_t ty = threads / (bn / n);
        if (bm % ty) continue;
        const int64_t m = bm / ty;
        const int64_t big = m > n ? m : n, best = *tm > *tn ? *tm : *tn;
        if (!found || big < best) {
            *tm = m;
            *tn = n;
            found = 1;
        }
    }
    return found;
}

xattn_status xattn_moe_fma_options(const char *backend, const char *name,
                                   const xattn_moe_gemm_tiles *t, int pairs, int64_t k,
                                   const xattn_device_caps *caps, char *opts, size_t size,
                                   size_t *lds)
{
    int64_t tm = 0, tn = 0;
    if (!fma_block(t->block_m, t->block_n, t->threads, &tm, &tn))
        return xattn_error(XATTN_ERR_UNSUPPORTED, "%s: no thread layout for a %d x %d MoE "
                           "tile of %d threads", backend, (int)t->block_m, (int)t->block_n,
                           (int)t->threads);
    int64_t bk = t->block_k < k ? t->block_k : k;
    const int64_t floats_per_k = t->block_m + 1 + pairs * t->block_n + 1;
    while (bk > 1 && (size_t)(floats_per_k * bk) * sizeof(float) > caps->local_mem_bytes) bk /= 2;
    *lds = (size_t)(floats_per_k * bk) * sizeof(float);
    if (xattn_options_add(opts, size, " -D%s_BM=%d -D%s_BN=%d -D%s_BK=%lld -D%s_THREADS=%d"
                          " -D%s_TM=%lld -D%s_TN=%lld", name, (int)t->block_m, name,
                          (int)t->block_n, name, (long long)bk, name, (int)t->threads, name,
                          (long long)tm, name, (long long)tn))
        return xattn_error(XATTN_ERR_INTERNAL, "%s: MoE options too long", backend);
    return XATTN_OK;
}


/* One of the two GEMMs, as the tile search sees it. */
typedef struct gemm_shape {
    int mm;              /* matrix units in use */
    int pairs;           /* 2: each column is a gate/up pair; 1: plain */
    int64_t cols;        /* columns to cover: I gate columns (up) or H (down) */
    size_t a_esize;      /* bytes per staged A element */
    size_t b_esize;      /* bytes per staged B (weight) element */
} gemm_shape;

typedef struct gpu_tile {
    xattn_moe_gemm_tiles t;
    size_t local_mem;
    int fills;           /* enough tiles at max_tokens for every compute unit */
    int warp_rank;       /* position of the warp count in the preference order */
} gpu_tile;

static size_t gpu_local_mem(const gemm_shape *s, int64_t bm, int64_t bn, int64_t bk,
                            int64_t stages)
{
    size_t a = align_size((size_t)(bm * bk) * s->a_esize, LOCAL_ALIGN);
    size_t b = align_size((size_t)(s->pairs * bn * bk) * s->b_esize, LOCAL_ALIGN);
    return (size_t)stages * (a + b);
}

/* Does the tile fit the device? Fills t (all but fills and warp_rank). */
static int gpu_tile_fits(const xattn_device_caps *caps, const gemm_shape *s, int32_t bm,
                         int32_t bn, int32_t bk, int32_t stages, int32_t warps, gpu_tile *t)
{
    int64_t threads = (int64_t)warps * caps->simd_width;
    if (threads > caps->max_threads_per_group) return 0;
    if (s->mm) {
        int64_t warps_m = min64(warps, bm / (int64_t)caps->matrix_m);
        if (warps_m < 1 || warps % warps_m || (bm / warps_m) % caps->matrix_m) return 0;
        int64_t warps_n = warps / warps_m;
        if (bn % warps_n || (bn / warps_n) % caps->matrix_n || bk % caps->matrix_k) return 0;
    } else if (((int64_t)bm * bn) % threads) {
        return 0; /* threads would own different numbers of outputs */
    }
    int64_t regs = (int64_t)bm * bn * s->pairs / threads + GPU_REG_OVERHEAD;
    if (regs > GPU_MAX_REGS_PER_LANE) return 0;
    if (caps->registers_per_group && regs * threads > caps->registers_per_group) return 0;
    size_t lmem = gpu_local_mem(s, bm, bn, bk, stages);
    if (lmem > caps->local_mem_bytes) return 0;

    memset(t, 0, sizeof *t);
    t->t.block_m = bm;
    t->t.block_n = bn;
    t->t.block_k = bk;
    t->t.threads = (int32_t)threads;
    t->t.stages = stages;
    t->local_mem = lmem;
    return 1;
}

/* Preference: enough tiles to occupy every compute unit, then K steps of
 * at least GPU_GOOD_K_BYTES per weight row, then double buffering (a K step
 * loads while the previous one computes), then the wider tile (A is re-read
 * once per column tile), then more stages, then the warp count earliest in
 * the preference order. */
static int gpu_tile_better(const gemm_shape *s, const gpu_tile *a, const gpu_tile *b)
{
    if (a->fills != b->fills) return a->fills > b->fills;
    int64_t ka = min64((int64_t)a->t.block_k * (int64_t)s->b_esize, GPU_GOOD_K_BYTES);
    int64_t kb = min64((int64_t)b->t.block_k * (int64_t)s->b_esize, GPU_GOOD_K_BYTES);
    if (ka != kb) return ka > kb;
    int64_t da = min64(a->t.stages, 2), db = min64(b->t.stages, 2);
    if (da != db) return da > db;
    if (a->t.block_n != b->t.block_n) return a->t.block_n > b->t.block_n;
    if (a->t.stages != b->t.stages) return a->t.stages > b->t.stages;
    if (a->t.block_k != b->t.block_k) return a->t.block_k > b->t.block_k;
    return a->warp_rank < b->warp_rank;
}

/* Best tile of one GEMM for block_m rows, m_tiles row tiles expected at
 * max_tokens. Returns 0 when none fits. */
static int gpu_best_tile(const xattn_device_caps *caps, const gemm_shape *s, int32_t bm,
                         int64_t m_tiles, gpu_tile *best)
{
    static const int32_t block_ns[] = {256, 128, 64, 32, 16, 8};
    static const int32_t block_ks[] = {128, 64, 32, 16, 8};
    /* Fewest warps that hide latency first; more only when registers
     * demand it; fewer only when nothing else fits. */
    static const int32_t warp_counts[] = {4, 8, 16, 2, 1};
    int found = 0;
    for (size_t ni = 0; ni < XATTN_ARRAY_SIZE(block_ns); ni++) {
        int32_t bn = block_ns[ni];
        /* A narrower tile already covers every column. */
        if (ni + 1 < XATTN_ARRAY_SIZE(block_ns) && block_ns[ni + 1] >= s->cols) continue;
        for (size_t ki = 0; ki < XATTN_ARRAY_SIZE(block_ks); ki++) {
            for (int32_t stages = GPU_MAX_STAGES; stages >= 1; stages--) {
                for (size_t wi = 0; wi < XATTN_ARRAY_SIZE(warp_counts); wi++) {
                    gpu_tile t;
                    if (!gpu_tile_fits(caps, s, bm, bn, block_ks[ki], stages, warp_counts[wi],
                                       &t))
                        continue;
                    t.fills = m_tiles * ceil_div(s->cols, bn) >= (int64_t)caps->compute_units;
                    t.warp_rank = (int)wi;
                    if (!found || gpu_tile_better(s, &t, best)) *best = t;
                    found = 1;
                }
            }
        }
    }
    return found;
}

static xattn_status plan_gpu_tiles(const xattn_device_caps *caps, const xattn_moe_problem *prob,
                                   xattn_moe_plan_params *p)
{
    static const int32_t block_ms[] = {GPU_MAX_BLOCK_M, 64, 32, GPU_MIN_BLOCK_M};
    const xattn_moe_desc *d = &prob->desc;
    int mm = xattn_moe_uses_matrix_units(caps, d);
    size_t x_es = xattn_dtype_size(d->dtype), w_es = xattn_dtype_size(d->weight_dtype);
    const gemm_shape up = {mm, 2, d->inter, x_es, w_es};
    const gemm_shape down = {mm, 1, d->hidden, mm ? w_es : sizeof(float), w_es};

    /* Rows an active expert gets at max_tokens, if the router spreads them
     * evenly over min(E, T·k) experts. */
    int64_t pairs = (int64_t)d->max_tokens * d->top_k;
    int64_t active = min64(d->num_experts, pairs);
    int64_t expert_rows = ceil_div(pairs, active);
    int64_t want = max64(expert_rows, GPU_MIN_BLOCK_M);
    if (d->align) want = min64(want, max64(d->align, GPU_MIN_BLOCK_M));

    /* First the preferred block_m, largest first: up to `want`, and
     * dividing a fixed alignment where one does; then the rest, largest
     * first, for devices too small for those. */
    int any_divides = 0;
    for (size_t i = 0; i < XATTN_ARRAY_SIZE(block_ms); i++)
        if (d->align && d->align % block_ms[i] == 0) any_divides = 1;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < XATTN_ARRAY_SIZE(block_ms); i++) {
            int32_t bm = block_ms[i];
            int preferred = bm <= want && (!any_divides || d->align % bm == 0);
            if (preferred != (pass == 0) || (mm && bm % (int32_t)caps->matrix_m)) continue;
            int64_t m_tiles = active * ceil_div(expert_rows, bm);
            gpu_tile tu, td;
            if (!gpu_best_tile(caps, &up, bm, m_tiles, &tu) ||
                !gpu_best_tile(caps, &down, bm, m_tiles, &td))
                continue;
            p->up = tu.t;
            p->down = td.t;
            p->local_mem_bytes = tu.local_mem > td.local_mem ? tu.local_mem : td.local_mem;
            return XATTN_OK;
        }
    }
    return xattn_error(XATTN_ERR_UNSUPPORTED,
                       "planner: no MoE GEMM tile for H %d, I %d, %s weights fits %s "
                       "(%u bytes of local memory, %u threads per group)",
                       (int)d->hidden, (int)d->inter, xattn_dtype_name(d->weight_dtype),
                       caps->name, caps->local_mem_bytes, caps->max_threads_per_group);
}

/* ---- CPU scratch ---------------------------------------------------------- */

static size_t scratch_array(int64_t elems) { return align_size((size_t)elems * 4, SCRATCH_ALIGN); }

/* Per-thread scratch of the CPU route and dispatch (backends/cpu/moe_ops.c
 * carves its slice the same way; combine needs none), arrays of 4-byte
 * elements each starting on a SCRATCH_ALIGN boundary:
 *  - route: a token's logits [E] f32; SIGMOID_GROUPED adds group scores
 *    [n_group] f32 and the kept groups' scores and indices [topk_group];
 *  - dispatch: expert counts [E] i32 of the thread's tokens, then where
 *    each segment's padding starts [E] i32. */
static size_t cpu_ops_scratch(const xattn_moe_desc *d)
{
    size_t route = scratch_array(d->num_experts);
    if (d->route == XATTN_MOE_ROUTE_SIGMOID_GROUPED)
        route += scratch_array(d->n_group) + 2 * scratch_array(d->topk_group);
    size_t dispatch = 2 * scratch_array(d->num_experts);
    return route > dispatch ? route : dispatch;
}

/* ---- plan ------------------------------------------------------------------ */

/* Consecutive workspace regions, each WORKSPACE_ALIGN-aligned; ok clears on
 * overflow. */
typedef struct ws_layout {
    size_t end;
    int ok;
} ws_layout;

/* bytes = a·b·c; ok clears on overflow. */
static size_t product(ws_layout *w, int64_t a, int64_t b, int64_t c)
{
    size_t r;
    if (a < 0 || b < 0 || c < 0 || __builtin_mul_overflow((uint64_t)a, (uint64_t)b, &r) ||
        __builtin_mul_overflow(r, (uint64_t)c, &r)) {
        w->ok = 0;
        return 0;
    }
    return r;
}

/* Place a region of `bytes` at the end; returns its offset. */
static size_t place(ws_layout *w, size_t bytes)
{
    size_t at = w->end;
    if (bytes > SIZE_MAX - WORKSPACE_ALIGN) {
        w->ok = 0;
        return 0;
    }
    size_t size = align_size(bytes, WORKSPACE_ALIGN);
    if (w->end > SIZE_MAX - size) {
        w->ok = 0;
        return 0;
    }
    w->end += size;
    return at;
}

xattn_status xattn_plan_moe(const xattn_device_caps *caps, const xattn_moe_problem *prob,
                            xattn_moe_plan_params *out)
{
    if (!caps || !prob || !out)
        return xattn_error(XATTN_ERR_INVALID_ARGUMENT, "planner: NULL caps, problem or output");
    if (!caps->compute_units || !caps->simd_width)
        return xattn_error(XATTN_ERR_INTERNAL, "planner: caps of %s have no compute units or "
                           "SIMD width", caps->name);
    const xattn_moe_desc *d = &prob->desc;

    xattn_moe_plan_params p;
    memset(&p, 0, sizeof p);
    p.style = caps->style;
    if (p.style == XATTN_DEVICE_STYLE_CPU) {
        XATTN_TRY(xattn_plan_moe_cpu_tiles(caps, prob, &p));
        if (p.threads < 1)
            return xattn_error(XATTN_ERR_INTERNAL, "planner: CPU MoE tiles for %s have %d "
                               "threads", caps->name, (int)p.threads);
        size_t ops = cpu_ops_scratch(d);
        if (ops > p.scratch_per_thread) p.scratch_per_thread = ops;
        p.scratch_per_thread = align_size(p.scratch_per_thread, SCRATCH_ALIGN);
        p.align = d->align ? d->align : CPU_ALIGN;
    } else {
        XATTN_TRY(plan_gpu_tiles(caps, prob, &p));
        /* A whole number of warps where the group limit allows one. */
        int64_t group = min64(GPU_ROUTE_THREADS, caps->max_threads_per_group);
        if (group >= caps->simd_width) group = group / caps->simd_width * caps->simd_width;
        p.threads = (int32_t)group;
        p.align = d->align ? d->align : p.up.block_m;
    }
    const xattn_moe_gemm_tiles *tiles[] = {&p.up, &p.down};
    for (size_t i = 0; i < XATTN_ARRAY_SIZE(tiles); i++)
        if (tiles[i]->block_m < 1 || tiles[i]->block_n < 1 || tiles[i]->block_k < 1 ||
            tiles[i]->stages < 1)
            return xattn_error(XATTN_ERR_INTERNAL,
                               "planner: bad MoE tiles for %s (%d x %d x %d, %d stages)",
                               caps->name, (int)tiles[i]->block_m, (int)tiles[i]->block_n,
                               (int)tiles[i]->block_k, (int)tiles[i]->stages);
    p.max_rows = xattn_moe_rows_for(prob, p.align, d->max_tokens);
    /* expert_offsets, row_token and token_row are i32. */
    if (p.max_rows > INT32_MAX)
        return xattn_error(XATTN_ERR_INVALID_ARGUMENT,
                           "desc.max_tokens: %d tokens x top_k %d need %lld permuted rows "
                           "(alignment %d), more than the i32 row indices hold",
                           (int)d->max_tokens, (int)d->top_k, (long long)p.max_rows,
                           (int)p.align);

    /* Workspace, in the order plan_moe.h lists it. */
    ws_layout w = {0, 1};
    int64_t T = d->max_tokens, k = d->top_k, E = d->num_experts, H = d->hidden;
    int64_t R = p.max_rows;
    if (p.style == XATTN_DEVICE_STYLE_CPU) {
        p.scratch_bytes = product(&w, p.threads, (int64_t)p.scratch_per_thread, 1);
    } else {
        /* Each route group counts the experts of its tokens, [groups][E]
         * i32, and a scan turns the counts into row positions: a
         * deterministic dispatch without atomics. */
        p.scratch_bytes = product(&w, ceil_div(T, p.threads), E, sizeof(int32_t));
    }
    p.scratch_offset = place(&w, p.scratch_bytes);
    p.h_offset = place(&w, product(&w, R, d->inter, sizeof(float)));
    p.ids_offset = place(&w, product(&w, T, k, sizeof(int32_t)));
    p.weights_offset = place(&w, product(&w, T, k, sizeof(float)));
    p.offsets_offset = place(&w, product(&w, E + 1, 1, sizeof(int32_t)));
    p.row_token_offset = place(&w, product(&w, R, 1, sizeof(int32_t)));
    p.token_row_offset = place(&w, product(&w, T, k, sizeof(int32_t)));
    p.x_perm_offset = place(&w, product(&w, R, H, (int64_t)xattn_dtype_size(d->dtype)));
    p.y_offset = place(&w, product(&w, R, H, (int64_t)xattn_dtype_size(d->dtype)));
    if (!w.ok)
        return xattn_error(XATTN_ERR_INVALID_ARGUMENT,
                           "desc.max_tokens: %d tokens make the MoE workspace (%lld rows of "
                           "H %d and I %d) overflow the address space",
                           (int)d->max_tokens, (long long)p.max_rows, (int)d->hidden,
                           (int)d->inter);
    p.workspace_bytes = w.end;
    *out = p;
    return XATTN_OK;
}

/* ---- text ------------------------------------------------------------------ */

const char *xattn_moe_route_name(xattn_moe_route_mode mode)
{
    switch (mode) {
    case XATTN_MOE_ROUTE_SOFTMAX_TOPK: return "softmax_topk";
    case XATTN_MOE_ROUTE_TOPK_SOFTMAX: return "topk_softmax";
    case XATTN_MOE_ROUTE_SIGMOID_GROUPED: return "sigmoid_grouped";
    case XATTN_MOE_ROUTE_TOPK_SIGMOID: return "topk_sigmoid";
    }
    return "?";
}

const char *xattn_moe_activation_name(xattn_moe_activation a)
{
    switch (a) {
    case XATTN_MOE_SWIGLU: return "swiglu";
    case XATTN_MOE_GEGLU: return "geglu";
    case XATTN_MOE_SWIGLU_CLAMPED: return "swiglu_clamped";
    }
    return "?";
}

static void put_tiles(char *buf, size_t size, size_t *len, const char *name,
                      const xattn_moe_gemm_tiles *t, int gpu, int pairs)
{
    xattn_text_put(buf, size, len, "%-12s block_m %d x block_n %d x block_k %d", name, (int)t->block_m,
        (int)t->block_n, (int)t->block_k);
    if (pairs) xattn_text_put(buf, size, len, " (gate columns, + as many up)");
    if (gpu) xattn_text_put(buf, size, len, ", %d threads, %d stages", (int)t->threads, (int)t->stages);
    xattn_text_put(buf, size, len, "\n");
}

static void put_region(char *buf, size_t size, size_t *len, const char *name, size_t offset,
                       size_t bytes, const char *what)
{
    xattn_text_put(buf, size, len, "\n  %-10s @%zu, ", name, offset);
    xattn_text_put_bytes(buf, size, len, bytes);
    xattn_text_put(buf, size, len, " %s", what);
}

int xattn_moe_params_format(const xattn_moe_problem *prob, const xattn_moe_plan_params *p,
                            char *buf, size_t size)
{
    if (!prob || !p) return -1;
    if (!buf) size = 0;
    if (size) buf[0] = '\0';
    const xattn_moe_desc *d = &prob->desc;
    int cpu = p->style == XATTN_DEVICE_STYLE_CPU;
    size_t n = 0;

    xattn_text_put(buf, size, &n, "problem      T<=%d H=%d I=%d E=%d k=%d, x %s, weights %s, logits %s\n",
        (int)d->max_tokens, (int)d->hidden, (int)d->inter, (int)d->num_experts, (int)d->top_k,
        xattn_dtype_name(d->dtype), xattn_dtype_name(d->weight_dtype),
        xattn_dtype_name(d->logits_dtype));
    xattn_text_put(buf, size, &n, "             route %s", xattn_moe_route_name(d->route));
    if (d->route == XATTN_MOE_ROUTE_SIGMOID_GROUPED)
        xattn_text_put(buf, size, &n, " (%d groups, keep %d)", (int)d->n_group, (int)d->topk_group);
    if (d->flags & XATTN_MOE_BIAS) xattn_text_put(buf, size, &n, ", bias");
    if (d->flags & XATTN_MOE_RENORMALIZE) xattn_text_put(buf, size, &n, ", renormalised");
    if (prob->scale != 1.0f) xattn_text_put(buf, size, &n, ", scale %g", (double)prob->scale);
    if (d->flags & XATTN_MOE_WEIGHTS_ON_INPUT)
        xattn_text_put(buf, size, &n, ", weights on the input");
    xattn_text_put(buf, size, &n, "\n             experts %s",
                   xattn_moe_activation_name(d->activation));
    if (d->activation == XATTN_MOE_SWIGLU_CLAMPED)
        xattn_text_put(buf, size, &n, " (alpha %g, limit %g)", (double)prob->alpha,
                       (double)prob->limit);
    if (d->flags & XATTN_MOE_W1_INTERLEAVED)
        xattn_text_put(buf, size, &n, ", W1 gate/up rows interleaved");
    if (d->flags & (XATTN_MOE_EXPERT_B1 | XATTN_MOE_EXPERT_B2))
        xattn_text_put(buf, size, &n, ", biases %s%s%s %s",
                       (d->flags & XATTN_MOE_EXPERT_B1) ? "b1" : "",
                       (d->flags & XATTN_MOE_EXPERT_B1) && (d->flags & XATTN_MOE_EXPERT_B2)
                           ? " and " : "",
                       (d->flags & XATTN_MOE_EXPERT_B2) ? "b2" : "",
                       xattn_dtype_name(d->bias_dtype));
    xattn_text_put(buf, size, &n, "\n");

    xattn_text_put(buf, size, &n, "style        %s\n", cpu ? "cpu (register blocks, no barriers)"
                                              : "gpu (local-memory tiles, barriers)");
    xattn_text_put(buf, size, &n, "align        %d rows per segment (%s)\n", (int)p->align,
        d->align ? "from the descriptor" : "planner's choice");
    xattn_text_put(buf, size, &n, "max rows     %lld = T*k + min(E, T*k)*(align-1) at T=%d\n",
        (long long)p->max_rows, (int)d->max_tokens);
    put_tiles(buf, size, &n, "gate/up", &p->up, !cpu, 1);
    put_tiles(buf, size, &n, "down", &p->down, !cpu, 0);
    xattn_text_put(buf, size, &n, "threads      %d %s\n", (int)p->threads,
        cpu ? "worker threads" : "per route/dispatch/combine group");
    if (cpu) {
        xattn_text_put(buf, size, &n, "scratch      ");
        xattn_text_put_bytes(buf, size, &n, p->scratch_per_thread);
        xattn_text_put(buf, size, &n, " per thread\n");
    } else {
        xattn_text_put(buf, size, &n, "local memory ");
        xattn_text_put_bytes(buf, size, &n, p->local_mem_bytes);
        xattn_text_put(buf, size, &n, " per group\n");
    }
    xattn_text_put(buf, size, &n, "workspace    ");
    xattn_text_put_bytes(buf, size, &n, p->workspace_bytes);
    put_region(buf, size, &n, "scratch", p->scratch_offset, p->scratch_bytes,
               cpu ? "(per-thread slices)" : "(per-group expert counts)");
    /* The plan's layout passed the overflow checks, so these products fit. */
    put_region(buf, size, &n, "h", p->h_offset,
               (size_t)p->max_rows * (size_t)d->inter * sizeof(float), "(f32 [rows, I])");
    xattn_text_put(buf, size, &n, "\n  forward    @%zu, ", p->ids_offset);
    xattn_text_put_bytes(buf, size, &n, p->workspace_bytes - p->ids_offset);
    xattn_text_put(buf, size, &n, " (ids, weights, offsets, maps, x_perm, y)\n");
    return n > INT_MAX ? INT_MAX : (int)n;
}
