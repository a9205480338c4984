#pragma once
/* The vendor-neutral planner: device caps + problem in, immutable plan out.
 * Pure: no I/O, no globals, no allocation beyond the plan it returns. */
#include "xattn_attn.h"
#include "internal_api.h"

/* The problem after validation, with defaults resolved. */
typedef struct xattn_attn_problem {
    xattn_attn_desc desc;   /* as given by the caller */
    float scale;            /* resolved: desc.scale or 1/sqrt(Dqk) */
    int32_t window_left;    /* resolved: −1 unbounded */
    int32_t window_right;   /* resolved: causal gives 0; −1 unbounded */
    int32_t group;          /* Hq / Hkv */
} xattn_attn_problem;

/* Validate a descriptor and resolve its defaults (front end, common/attn.c).
 * Errors: XATTN_ERR_INVALID_ARGUMENT naming the field, XATTN_ERR_UNSUPPORTED
 * for head dims outside the contract. */
XATTN_INTERNAL xattn_status xattn_attn_problem_init(const xattn_attn_desc *desc,
                                               xattn_attn_problem *out);

/* Planner output. Every size a kernel uses comes from here.
 *
 * Work items: num_work = B · head_groups · q_tiles · kv_splits, indexed
 * ((b · head_groups + g) · q_tiles + t) · kv_splits + s. Head group g holds
 * query heads g·gqa_pack .. g·gqa_pack + gqa_pack − 1 (all of one KV head
 * when gqa_pack == Hq/Hkv). Tile row r of tile t is query token
 * (t·block_q + r) / gqa_pack and head g·gqa_pack + (t·block_q + r) % gqa_pack.
 * Split s covers keys [s·kv_split_len, (s+1)·kv_split_len) of the sequence.
 *
 * Workspace layout (byte offsets, each region 256-byte aligned):
 *  - scratch_offset: CPU style only, threads × local_mem_bytes, one slice
 *    per worker thread.
 *  - partial_offset: when kv_splits > 1, partial O as f32
 *    [kv_splits][B·seqlen_q][Hq][dv_pad], then partial LSE as f32
 *    [kv_splits][B·seqlen_q][Hq]; the row index is the global query token
 *    (b·Sq + i uniform, cu_seqlens_q[b] + i ragged). partial_bytes covers both.
 */
typedef struct xattn_attn_plan_params {
    xattn_device_style style;
    int32_t block_q;         /* query rows per work item (GQA heads packed in) */
    int32_t block_k;         /* keys per inner step */
    int32_t gqa_pack;        /* query heads of one KV head packed per tile */
    int32_t dqk_pad;         /* Dqk rounded up to the vector width */
    int32_t dv_pad;          /* Dv rounded up to the vector width */
    int32_t threads;         /* threads per group (GPU) / worker threads (CPU) */
    int32_t stages;          /* K/V pipeline depth */
    int32_t kv_splits;       /* ≥ 1: KV range split across work items */
    int32_t kv_split_len;    /* keys per split, a multiple of block_k */
    int32_t q_tiles;         /* tiles per (sequence, head group): ceil(Sq·pack/block_q) */
    int32_t head_groups;     /* Hq / gqa_pack */
    int64_t num_work;        /* B · head_groups · q_tiles · kv_splits */
    size_t local_mem_bytes;  /* per group (GPU) / per-thread scratch (CPU) */
    int32_t q_in_registers;  /* GPU: Q read into registers, no Q region (plan.c) */
    size_t scratch_offset;   /* workspace: per-thread scratch (CPU) */
    size_t partial_offset;   /* workspace: split-KV partial O and LSE */
    size_t partial_bytes;
    size_t workspace_bytes;  /* total, each region 256-byte aligned */
} xattn_attn_plan_params;

/* Plan attention for a device. The problem must already be validated.
 * Errors: XATTN_ERR_UNSUPPORTED when no tile fits the device. */
XATTN_INTERNAL xattn_status xattn_plan_attention(const xattn_device_caps *caps,
                                            const xattn_attn_problem *prob,
                                            xattn_attn_plan_params *out);

/* Ragged Q: the work a run launches must follow its real lengths, not the
 * plan's seqlen_q bound, and cu_seqlens_q is device memory the host does not
 * read, so GPU kernels number a ragged run's query tiles themselves:
 * sequence b's from ⌊cu_q[b]·pack / block_q⌋ + b on, all of them below the
 * tile space returned here, ⌊total_q·pack / block_q⌋ + B (capped at the
 * plan's B·q_tiles + B; more rows than that only come with lengths the
 * kernels clamp anyway). 0 for uniform Q, where the plan's work items are
 * the launch. */
XATTN_INTERNAL int64_t xattn_attn_tile_space(const xattn_attn_problem *prob,
                                             const xattn_attn_plan_params *p, int64_t total_q);

/* Caps of a named preset ("h100", "h200", "a100", "mi300x", "mi250x", "rx7900xtx",
 * "pocl-cpu", "host"); "host" reads this machine's CPU. Returns 0 if unknown. */
XATTN_INTERNAL int xattn_preset_caps(const char *name, xattn_device_caps *out);

/* NULL-terminated list of preset names. */
XATTN_INTERNAL const char *const *xattn_preset_names(void);

/* Caps of this machine's CPU with num_threads workers (0 = all cores). */
XATTN_INTERNAL void xattn_host_cpu_caps(int32_t num_threads, xattn_device_caps *out);

/* Format params as text (snprintf semantics). */
XATTN_INTERNAL int xattn_plan_params_format(const xattn_attn_problem *prob,
                                       const xattn_attn_plan_params *p,
                                       char *buf, size_t size);

/* Tiles for CPU-style devices (common/plan_cpu.c). Fills block_q, block_k,
 * gqa_pack, dqk_pad, dv_pad, stages and local_mem_bytes (the per-thread
 * scratch the CPU kernels need); xattn_plan_attention does the rest. */
XATTN_INTERNAL xattn_status xattn_plan_cpu_tiles(const xattn_device_caps *caps,
                                            const xattn_attn_problem *prob,
                                            xattn_attn_plan_params *out);
