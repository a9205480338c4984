#pragma once
/* The CPU attention kernel: one source (attn_kernel.c) compiled once per
 * ISA, each build exporting one entry point; cpu_isa.c picks among them. */
#include "backend.h"
#include "cpu_pool.h"

/* Run a whole attention launch for a plan on the calling thread and the
 * pool's workers (plan->params.threads in all). Launch-only: the plan has
 * been checked by the backend's prepare. */
typedef void (*xattn_cpu_attn_fn)(const struct xattn_plan *plan, const xattn_attn_launch *l,
                                  xattn_cpu_pool *pool);

void xattn_cpu_attn_generic(const struct xattn_plan *plan, const xattn_attn_launch *l,
                            xattn_cpu_pool *pool);
void xattn_cpu_attn_avx2(const struct xattn_plan *plan, const xattn_attn_launch *l,
                         xattn_cpu_pool *pool);
void xattn_cpu_attn_avx512(const struct xattn_plan *plan, const xattn_attn_launch *l,
                           xattn_cpu_pool *pool);

/* The MoE expert GEMMs (moe_gemm.c, compiled once per ISA like the
 * attention kernel): gate/up GEMM + activation into the plan's h region of
 * the workspace, then the down GEMM into y, over the expert segments of
 * l->expert_offsets, on plan->params.threads threads of the pool. */
typedef void (*xattn_cpu_moe_experts_fn)(const struct xattn_moe_plan *plan,
                                         const xattn_moe_launch *l, xattn_cpu_pool *pool);

void xattn_cpu_moe_experts_generic(const struct xattn_moe_plan *plan, const xattn_moe_launch *l,
                                   xattn_cpu_pool *pool);
void xattn_cpu_moe_experts_avx2(const struct xattn_moe_plan *plan, const xattn_moe_launch *l,
                                xattn_cpu_pool *pool);
void xattn_cpu_moe_experts_avx512(const struct xattn_moe_plan *plan, const xattn_moe_launch *l,
                                  xattn_cpu_pool *pool);

typedef struct xattn_cpu_isa {
    const char *name;   /* "avx512", "avx2", "generic" */
    int32_t lanes;      /* f32 lanes; the plan's dqk_pad and dv_pad must be multiples */
    xattn_cpu_attn_fn attn;
    xattn_cpu_moe_experts_fn moe_experts;
} xattn_cpu_isa;

/* Kernel builds this CPU can run, best first; the last is always "generic".
 * Returns their number. */
int xattn_cpu_isa_list(const xattn_cpu_isa **out);

/* kv_append and merge_states (cpu_ops.c): memory-bound, portable C, the
 * pool's threads over tokens. */
void xattn_cpu_kv_append(const xattn_kv_append_launch *l, xattn_cpu_pool *pool);
void xattn_cpu_merge_states(const xattn_merge_launch *l, xattn_cpu_pool *pool);

/* MoE route, dispatch and combine (moe_ops.c): portable C, the pool's
 * threads over tokens (plan->params.threads of them). */
void xattn_cpu_moe_route(const struct xattn_moe_plan *plan, const xattn_moe_launch *l,
                         xattn_cpu_pool *pool);
void xattn_cpu_moe_dispatch(const struct xattn_moe_plan *plan, const xattn_moe_launch *l,
                            xattn_cpu_pool *pool);
void xattn_cpu_moe_combine(const struct xattn_moe_plan *plan, const xattn_moe_launch *l,
                           xattn_cpu_pool *pool);
