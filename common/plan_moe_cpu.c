/* MoE GEMM tiles for CPU-style devices: a few wide cores, each running whole
 * work items (expert, block_m rows, block_n columns) on its own scratch.
 *
 * The kernel (backends/cpu/moe_gemm.c) keeps the reduction dimension K in
 * vector lanes and a register block of rows × weight rows in registers, so
 * weights and activations are read in the layout the caller gives them.
 * Its loops, innermost first: register blocks of rows, then K steps of
 * block_k, then register blocks of columns. The tiles follow from the
 * caches:
 *  - block_k: one register block's weight rows for a K step (the panel)
 *    stay in the first-level cache while every row block of the item
 *    passes over them;
 *  - block_m: the item's activation rows (all of K) stay in the per-core
 *    L2, since every register block of columns reads them again, unless
 *    that leaves too few rows to use each weight often (MIN_BLOCK_M);
 *  - block_n: a few dozen columns, so that even one row per expert (decode)
 *    yields many items to share among the threads. */
#include "plan_moe_cpu.h"

#include "error.h"

enum {
    SCRATCH_ALIGN = 64, /* one cache line; also the widest vector */
    /* Without a known cache size, assume these per core. */
    DEFAULT_L1_BYTES = 32 * 1024,
    DEFAULT_L2_BYTES = 512 * 1024,
    /* K steps are whole cache lines of f32 for every vector width. */
    K_QUANTUM = 64,
    /* Each row block reads the expert's weights from memory again; with
     * fewer rows than this (large K) that traffic would cost more than
     * activation rows that miss L2 and come from L3. */
    MIN_BLOCK_M = 32,
    MAX_BLOCK_M = 256,
    /* Columns per item: multiples of 12, which every ISA's register block
     * columns (6, 4, 3) divide. 48 gate columns make 96 weight rows with their
     * up columns, as many as the down GEMM's 96. */
    UP_BLOCK_N = 48,
    DOWN_BLOCK_N = 96,
};

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

static int region(size_t *off, size_t *at, int64_t elems, int used)
{
    if (!used) elems = 0;
    if (elems < 0 || (uint64_t)elems > SIZE_MAX / 8 / sizeof(float)) return 0;
    size_t bytes = (size_t)elems * sizeof(float);
    bytes = (bytes + SCRATCH_ALIGN - 1) / SCRATCH_ALIGN * SCRATCH_ALIGN;
    if (*off > SIZE_MAX / 2 - bytes) return 0;
    *at = *off;
    *off += bytes;
    return 1;
}

int xattn_cpu_moe_scratch_layout(const xattn_moe_problem *prob,
                                 const xattn_moe_plan_params *p, xattn_cpu_moe_scratch *out)
{
    const xattn_moe_desc *d = &prob->desc;
    const xattn_moe_gemm_tiles *up = &p->up, *down = &p->down;
    /* Every factor is below 2^31, so each product of two fits. */
    const int64_t block_m = max64(up->block_m, down->block_m);
    const int64_t block_k = max64(up->block_k, down->block_k);
    const int64_t c = max64((int64_t)up->block_m * 2 * up->block_n,
                            (int64_t)down->block_m * down->block_n);
    const int k_steps = up->block_k < d->hidden || down->block_k < d->inter;
    out->panel_ld = block_k + SCRATCH_ALIGN / (int64_t)sizeof(float);
    size_t off = 0;
    int ok = region(&off, &out->a, (int64_t)up->block_m * d->hidden, d->dtype != XATTN_F32);
    ok = ok && region(&off, &out->panel, XATTN_CPU_MOE_TILE_COLS * out->panel_ld, 1);
    ok = ok && region(&off, &out->partial,
                      block_m * XATTN_CPU_MOE_TILE_COLS * XATTN_CPU_MOE_MAX_LANES, k_steps);
    ok = ok && region(&off, &out->c, c, 1);
    ok = ok && region(&off, &out->bias, max64(2 * (int64_t)up->block_n, down->block_n),
                      (d->flags & (XATTN_MOE_EXPERT_B1 | XATTN_MOE_EXPERT_B2)) != 0);
    out->total = off;
    return ok;
}

/* Tiles of one GEMM with reduction length k: the rows an expert can get at
 * most bound block_m. */
static xattn_moe_gemm_tiles gemm_tiles(const xattn_device_caps *caps, int64_t k, int64_t n,
                                       int64_t block_n, int64_t max_rows)
{
    const int64_t l1 = caps->cache_bytes ? caps->cache_bytes : DEFAULT_L1_BYTES;
    const int64_t l2 = caps->local_mem_bytes ? caps->local_mem_bytes : DEFAULT_L2_BYTES;
    xattn_moe_gemm_tiles t = {0};
    /* A quarter of L1 is left for the activation rows streaming past. */
    int64_t block_k = l1 * 3 / 4 / (XATTN_CPU_MOE_TILE_COLS * (int64_t)sizeof(float));
    block_k = max64(block_k / K_QUANTUM * K_QUANTUM, K_QUANTUM);
    t.block_k = (int32_t)min64(block_k, k);
    /* Half of L2 holds the rows; the other half the weights passing through. */
    int64_t block_m = l2 / 2 / (k * (int64_t)sizeof(float));
    block_m = block_m / XATTN_CPU_MOE_ROW_QUANTUM * XATTN_CPU_MOE_ROW_QUANTUM;
    block_m = min64(max64(block_m, MIN_BLOCK_M), MAX_BLOCK_M);
    t.block_m = (int32_t)min64(block_m, round_up(max_rows, XATTN_CPU_MOE_ROW_QUANTUM));
    t.block_n = (int32_t)min64(block_n, n);
    t.threads = 1; /* one worker runs a whole tile */
    t.stages = 1;  /* one panel in scratch; the next is only prefetched */
    return t;
}

xattn_status xattn_plan_moe_cpu_tiles(const xattn_device_caps *caps,
                                      const xattn_moe_problem *prob,
                                      xattn_moe_plan_params *out)
{
    const xattn_moe_desc *d = &prob->desc;
    /* A segment holds each token at most once, plus its padding. */
    const int64_t max_rows = (int64_t)d->max_tokens + (d->align > 1 ? d->align - 1 : 0);
    out->threads = caps->compute_units > INT32_MAX ? INT32_MAX : (int32_t)caps->compute_units;
    out->up = gemm_tiles(caps, d->hidden, d->inter, UP_BLOCK_N, max_rows);
    out->down = gemm_tiles(caps, d->inter, d->hidden, DOWN_BLOCK_N, max_rows);
    xattn_cpu_moe_scratch s;
    if (!xattn_cpu_moe_scratch_layout(prob, out, &s))
        return xattn_error(XATTN_ERR_INVALID_ARGUMENT,
                           "desc.hidden: MoE CPU scratch for H %d and I %d overflows",
                           (int)d->hidden, (int)d->inter);
    out->scratch_per_thread = s.total;
    return XATTN_OK;
}
