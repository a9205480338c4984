#pragma once
/* The MoE half of the planner: device caps + MoE problem in, immutable plan
 * out. Pure: no I/O, no globals. */
#include "internal_api.h"
#include "xattn_moe.h"

/* The problem after validation, with defaults resolved. */
typedef struct xattn_moe_problem {
    xattn_moe_desc desc;   /* as given by the caller */
    float scale;           /* resolved routed_scaling_factor (0 → 1) */
    float alpha, limit;    /* SWIGLU_CLAMPED: resolved swiglu_alpha and
                              swiglu_limit (0 → the GPT-OSS values); 0 for
                              the other activations */
} xattn_moe_problem;

/* Validate a descriptor and resolve its defaults (front end, common/moe.c).
 * Errors: XATTN_ERR_INVALID_ARGUMENT naming the field. */
XATTN_INTERNAL xattn_status xattn_moe_problem_init(const xattn_moe_desc *desc,
                                                   xattn_moe_problem *out);

/* One grouped GEMM C[rows, N] = A[rows, K] · B_eᵀ with B_e [N, K] per
 * expert segment. The gate/up GEMM has N = 2I, K = H and its epilogue
 * applies the activation to gate column c and up column I + c, so a tile
 * always covers matching gate and up columns: block_n counts gate columns
 * (the tile computes 2·block_n outputs). The down GEMM has N = H, K = I. */
typedef struct xattn_moe_gemm_tiles {
    int32_t block_m;   /* rows of a tile */
    int32_t block_n;   /* output columns of a tile (gate/up: gate columns) */
    int32_t block_k;   /* reduction step */
    int32_t threads;   /* threads per group (GPU) / unused (CPU) */
    int32_t stages;    /* pipeline depth of the K loop (GPU); 1 on CPU */
} xattn_moe_gemm_tiles;

/* Planner output. Every size a MoE kernel uses comes from here.
 *
 * Workspace layout (byte offsets from the run's workspace offset, each
 * region XATTN_WORKSPACE_ALIGN-aligned):
 *  - scratch_offset, scratch_bytes: backend scratch every call may use
 *    (CPU: threads × scratch_per_thread, e.g. packed weight panels and
 *    per-thread expert counts).
 *  - h_offset: the activation h, f32 [max_rows, I], between the two GEMMs
 *    (a backend whose down GEMM stages h in the weight dtype for matrix
 *    units may keep it in that dtype there).
 *  - forward-only regions, used by xattn_moe_forward for its intermediates:
 *    ids_offset (i32 [T, k]), weights_offset (f32 [T, k]), offsets_offset
 *    (i32 [E+1]), row_token_offset (i32 [max_rows]), token_row_offset
 *    (i32 [T, k]), x_perm_offset ([max_rows, H] dtype), y_offset
 *    ([max_rows, H] dtype), all for T = max_tokens, contiguous.
 * workspace_bytes covers all of them; every call takes the same workspace. */
typedef struct xattn_moe_plan_params {
    xattn_device_style style;
    int32_t align;               /* segment alignment */
    int64_t max_rows;            /* xattn_moe_rows(max_tokens) */
    int32_t threads;             /* worker threads (CPU) / route group size (GPU) */
    xattn_moe_gemm_tiles up;     /* gate/up GEMM + activation */
    xattn_moe_gemm_tiles down;   /* down GEMM */
    size_t local_mem_bytes;      /* per group (GPU) */
    size_t scratch_per_thread;   /* CPU */
    size_t scratch_offset, scratch_bytes;
    size_t h_offset;
    size_t ids_offset, weights_offset, offsets_offset, row_token_offset, token_row_offset;
    size_t x_perm_offset, y_offset;
    size_t workspace_bytes;
} xattn_moe_plan_params;

/* Rows of the permuted tensors for T tokens (see xattn_moe_rows). */
XATTN_INTERNAL int64_t xattn_moe_rows_for(const xattn_moe_problem *prob, int32_t align,
                                          int64_t tokens);

/* Plan a MoE layer for a device. The problem must already be validated.
 * Errors: XATTN_ERR_UNSUPPORTED when no tile fits the device,
 * XATTN_ERR_INVALID_ARGUMENT when the workspace size overflows. */
/* Whether the GPU tiles of a plan for caps run on matrix units: the weights'
 * dtype is f16 or bf16 with matrix units for it, and the activations share
 * it. A backend's kernels follow the same rule, so the plan's tiles split
 * into whole fragments exactly when this holds. */
XATTN_INTERNAL int xattn_moe_uses_matrix_units(const xattn_device_caps *caps,
                                               const xattn_moe_desc *d);

/* Kernel options of one expert GEMM on FMA units, as the CUDA and HIP
 * modules' moe_gemm kernels take them under the macro prefix `name` ("UP",
 * "DOWN"): the plan's tile, the per-thread register block TM × TN (the
 * most square one for the threads, so a k step loads the fewest operands
 * per FMA) and a K step that shrinks until both operands, staged as f32
 * and padded by one element per k row, fit the device's local memory (any
 * K step is correct); *lds gets those bytes. `backend` prefixes the
 * messages. Appends to opts (size bytes). */
XATTN_INTERNAL xattn_status xattn_moe_fma_options(const char *backend, const char *name,
                                                  const xattn_moe_gemm_tiles *t, int pairs,
                                                  int64_t k, const xattn_device_caps *caps,
                                                  char *opts, size_t size, size_t *lds);

XATTN_INTERNAL xattn_status xattn_plan_moe(const xattn_device_caps *caps,
                                           const xattn_moe_problem *prob,
                                           xattn_moe_plan_params *out);

/* GEMM tiles and per-thread scratch for CPU-style devices
 * (common/plan_moe_cpu.c): fills up, down, threads and scratch_per_thread;
 * xattn_plan_moe does the rest. */
XATTN_INTERNAL xattn_status xattn_plan_moe_cpu_tiles(const xattn_device_caps *caps,
                                                     const xattn_moe_problem *prob,
                                                     xattn_moe_plan_params *out);

/* The names a plan's text gives a route mode ("sigmoid_grouped") and an
 * activation ("swiglu_clamped"); "?" for a value outside the enum. */
XATTN_INTERNAL const char *xattn_moe_route_name(xattn_moe_route_mode mode);
XATTN_INTERNAL const char *xattn_moe_activation_name(xattn_moe_activation a);

/* Format params as text (snprintf semantics). */
XATTN_INTERNAL int xattn_moe_params_format(const xattn_moe_problem *prob,
                                           const xattn_moe_plan_params *p, char *buf,
                                           size_t size);
