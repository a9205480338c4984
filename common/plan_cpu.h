#pragma once
/* Per-thread scratch of the CPU-style attention kernels. The planner sizes it
 * (xattn_plan_cpu_tiles fills local_mem_bytes from it) and the CPU backend
 * carves its slice with it, so both always agree. */
#include <stddef.h>
#include <stdint.h>

#include "plan.h"

/* Rows and keys of a tile are padded to this many f32 lanes: the widest CPU
 * vector (AVX-512), so every ISA's register blocks divide the padding. */
#define XATTN_CPU_TILE_QUANTUM 16

/* f32 slots the narrow kernel needs per key for its row addresses: K and V
 * of this tile and the next, 8 bytes each. */
#define XATTN_CPU_ADDRS_PER_KEY 8

/* Per-row f32 statistics and mask terms kept in scratch. */
enum {
    XATTN_CPU_ROW_M,      /* running maximum */
    XATTN_CPU_ROW_L,      /* running sum of exp */
    XATTN_CPU_ROW_ALPHA,  /* rescale of O for the current key tile */
    XATTN_CPU_ROW_LO,     /* first visible key, relative to the tile */
    XATTN_CPU_ROW_HI,     /* last visible key, relative to the tile */
    XATTN_CPU_ROW_DIAG,   /* i + Sk − Sq relative to the tile (ALiBi) */
    XATTN_CPU_ROW_SLOPE,  /* ALiBi slope of the row's head */
    XATTN_CPU_ROW_FIELDS
};

/* Narrow plans (decode) run the work items of every head group of one
 * (sequence, query tile, KV split), at most XATTN_CPU_LOCKSTEP_MAX of them,
 * in lockstep on one thread: key tile j of each head, then tile j + 1. One
 * head's K row is a slice of each token's row (512 of 4096 bytes for
 * Hkv = 8, D = 128, f32), and reading one slice per token leaves the
 * hardware prefetchers idle (about half the bandwidth of a contiguous read
 * on Zen 4); in lockstep the thread reads whole token rows within a short
 * window. Such plans have stages > 1: the kernel prefetches the K and V
 * rows `stages` key tiles ahead of the tile it computes. */
#define XATTN_CPU_LOCKSTEP_MAX 16

/* Work items one thread runs in lockstep under plan p (1 for wide plans);
 * needs p->stages and p->head_groups. */
int32_t xattn_cpu_lockstep_items(const xattn_attn_plan_params *p);

/* Byte offsets of the regions inside one thread's slice, each 64-byte
 * aligned. Sizes in f32 elements:
 *   q    dqk_pad · bq_pad     Q tile, scaled (transposed for the wide kernel)
 *   k    bk_pad · max(dqk_pad, XATTN_CPU_ADDRS_PER_KEY)
 *                             K tile converted to f32 (wide), or the K and V
 *                             row addresses of two tiles (narrow)
 *   v    bk_pad · dv_pad      V tile converted to f32
 *   s    bk_pad · bq_pad      scores, then probabilities, key-major
 *   o    bq_pad · dv_pad      O accumulator, row-major
 *   row  max(bk_pad, dqk_pad, dv_pad)   one converted row / score row
 *   stat XATTN_CPU_ROW_FIELDS · bq_pad  per-row statistics
 *   idx  2 · bq_pad int32     query token and head of each row */
typedef struct xattn_cpu_scratch {
    int32_t bq_pad, bk_pad;
    size_t q, k, v, s, o, row, stat, idx;
    size_t item_bytes;  /* one work item's regions; item i's start at i · item_bytes */
    int32_t items;      /* xattn_cpu_lockstep_items */
    size_t total;       /* items · item_bytes */
} xattn_cpu_scratch;

/* Layout for tiles (block_q, block_k, dqk_pad, dv_pad, stages, head_groups)
 * of params. Returns 0 when the sizes overflow. */
int xattn_cpu_scratch_layout(const xattn_attn_plan_params *params, xattn_cpu_scratch *out);
