#pragma once
/* The CPU attention kernel: one source (attn_kernel.c) compiled once per
 * ISA, each build exporting one entry point; cpu_isa.c picks among them. */
#include "backend.h"

/* Run a whole attention launch for a plan on the calling thread and its
 * OpenMP workers (plan->params.threads of them). Launch-only: the plan has
 * been checked by xattn_cpu_isa_pick. */
typedef void (*xattn_cpu_attn_fn)(const struct xattn_plan *plan, const xattn_attn_launch *l);

void xattn_cpu_attn_generic(const struct xattn_plan *plan, const xattn_attn_launch *l);
void xattn_cpu_attn_avx2(const struct xattn_plan *plan, const xattn_attn_launch *l);
void xattn_cpu_attn_avx512(const struct xattn_plan *plan, const xattn_attn_launch *l);

/* The MoE expert GEMMs (moe_gemm.c, compiled once per ISA like the
 * attention kernel): gate/up GEMM + activation into the plan's h region of
 * the workspace, then the down GEMM into y, over the expert segments of
 * l->expert_offsets, on plan->params.threads OpenMP workers. */
typedef void (*xattn_cpu_moe_experts_fn)(const struct xattn_moe_plan *plan,
                                         const xattn_moe_launch *l);

void xattn_cpu_moe_experts_generic(const struct xattn_moe_plan *plan, const xattn_moe_launch *l);
void xattn_cpu_moe_experts_avx2(const struct xattn_moe_plan *plan, const xattn_moe_launch *l);
void xattn_cpu_moe_experts_avx512(const struct xattn_moe_plan *plan, const xattn_moe_launch *l);

typedef struct xattn_cpu_isa {
    const char *name;   /* "avx512", "avx2", "generic" */
    int32_t lanes;      /* f32 lanes; the plan's dqk_pad and dv_pad must be multiples */
    xattn_cpu_attn_fn attn;
    xattn_cpu_moe_experts_fn moe_experts;
} xattn_cpu_isa;

/* Kernel builds this CPU can run, best first; the last is always "generic".
 * Returns their number. */
int xattn_cpu_isa_list(const xattn_cpu_isa **out);

/* kv_append and merge_states (cpu_ops.c): memory-bound, portable C,
 * OpenMP over tokens with num_threads workers. */
void xattn_cpu_kv_append(const xattn_kv_append_launch *l, int32_t num_threads);
void xattn_cpu_merge_states(const xattn_merge_launch *l, int32_t num_threads);

/* MoE route, dispatch and combine (moe_ops.c): portable C, OpenMP over
 * tokens with plan->params.threads workers. */
void xattn_cpu_moe_route(const struct xattn_moe_plan *plan, const xattn_moe_launch *l);
void xattn_cpu_moe_dispatch(const struct xattn_moe_plan *plan, const xattn_moe_launch *l);
void xattn_cpu_moe_combine(const struct xattn_moe_plan *plan, const xattn_moe_launch *l);
