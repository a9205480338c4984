#pragma once
/* Per-thread scratch of the CPU MoE expert GEMMs (backends/cpu/moe_gemm.c).
 * The planner sizes it (xattn_plan_moe_cpu_tiles fills scratch_per_thread
 * from it) and the kernel carves its slice with it, so both always agree. */
#include <stddef.h>
#include <stdint.h>

#include "plan_moe.h"

/* Register blocks of every ISA's kernel: at most this many weight rows
 * (output columns) and f32 lanes per vector. */
#define XATTN_CPU_MOE_TILE_COLS 6
#define XATTN_CPU_MOE_MAX_LANES 16

/* block_m is a multiple of this, which every ISA's register block rows
 * divide, so only a segment's last tile has a row tail. */
#define XATTN_CPU_MOE_ROW_QUANTUM 4

/* Byte offsets of the regions inside one thread's slice, each 64-byte
 * aligned; an unused region is empty (size 0). Sizes in f32 elements:
 *   a        up.block_m · H   a row block of x converted to f32 (x not f32)
 *   panel    TILE_COLS · panel_ld
 *                             the weight rows of one register block and
 *                             K step, copied as f32
 *   partial  max(block_m) · TILE_COLS · MAX_LANES
 *                             unreduced register-block sums between K steps
 *                             (some GEMM has block_k < K)
 *   c        max(up.block_m · 2 · up.block_n, down.block_m · down.block_n)
 *                             one work item's outputs before its epilogue
 *   bias     max(2 · up.block_n, down.block_n)
 *                             the item's b1 (gate, then up) or b2 entries as
 *                             f32 (the layer has EXPERT_B1 or EXPERT_B2) */
typedef struct xattn_cpu_moe_scratch {
    size_t a, panel, partial, c, bias;
    int64_t panel_ld;  /* f32 between panel rows: max(block_k) plus a cache
                          line, so the rows do not share first-level cache sets */
    size_t total;
} xattn_cpu_moe_scratch;

/* Layout for the tiles (up, down) of params and the problem's sizes and
 * dtypes. Returns 0 when the sizes overflow. */
XATTN_INTERNAL int xattn_cpu_moe_scratch_layout(const xattn_moe_problem *prob,
                                                const xattn_moe_plan_params *params,
                                                xattn_cpu_moe_scratch *out);
