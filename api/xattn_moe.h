/*
 * xattn — Mixture-of-Experts: route, dispatch, expert GEMMs, combine, and a
 * fused forward that runs all four (docs/moe.md has the semantics in full).
 *
 * Shapes: T tokens (0 ≤ T ≤ desc.max_tokens), hidden H, E experts, top-k,
 * expert FFN size I, R permuted rows with xattn_moe_rows(plan, T) ≤ R ≤
 * xattn_moe_rows(plan, max_tokens).
 *
 *   route     logits [T, E] (+ bias [E] f32)   → topk_ids [T, k] i32,
 *                                                topk_weights [T, k] f32
 *   dispatch  topk_ids, x [T, H]                → expert_offsets [E+1] i32,
 *             (+ topk_weights with               x_perm [R, H], row_token [R],
 *             WEIGHTS_ON_INPUT)                  token_row [T, k] i32
 *   experts   x_perm, expert_offsets, W1 [E, 2I, H], W2 [E, H, I]
 *             (+ b1 [E, 2I], b2 [E, H] with EXPERT_B1 / EXPERT_B2) → y [R, H]
 *   combine   y, token_row (+ topk_weights      → out [T, H]
 *             unless WEIGHTS_ON_INPUT)
 *   forward   logits (+ bias), x, W1, W2        → out (all four, intermediates
 *             (+ b1, b2)                          in the workspace)
 *
 * Route. Every mode picks k distinct experts per token and orders them by
 * their selection score, highest first; equal scores order (and win) by
 * the lower expert index, so results are deterministic. Weights are then
 * optionally renormalised to sum 1 (XATTN_MOE_RENORMALIZE) and multiplied by
 * routed_scaling_factor (0 means 1), in every mode.
 *   SOFTMAX_TOPK     p = softmax(logits); select by logit (the order of p);
 *                    weight p.
 *   TOPK_SOFTMAX     select by logit; weights = softmax over the k picked
 *                    logits (GPT-OSS).
 *   SIGMOID_GROUPED  s = sigmoid(logit), b = s + bias (bias 0 without
 *                    XATTN_MOE_BIAS). Experts form n_group equal groups of
 *                    E / n_group; a group's score is the sum of its top two
 *                    b (its one b when groups have one expert); the
 *                    topk_group best groups are kept (ties: lower group);
 *                    select by b among the kept experts; weight s
 *                    (DeepSeek-V3: E 256, k 8, n_group 8, topk_group 4,
 *                    bias, renormalise, scale 2.5).
 *   TOPK_SIGMOID     select by logit; weight sigmoid(logit) (Llama-4).
 *
 * Non-finite routing inputs (NaN in, NaN out, as in PyTorch). A selection
 * or group score that is NaN counts as −inf, so every token still gets k
 * distinct, valid expert ids, chosen deterministically (equal scores: the
 * lower index). A token whose E logits hold a NaN, or any token when the
 * XATTN_MOE_BIAS bias (every entry of which takes part in each token's
 * selection) holds one, gets all k of its weights NaN, so the NaN reaches
 * that token's output through combine (or, with WEIGHTS_ON_INPUT, through
 * its permuted rows); other tokens are unaffected. Infinite logits and
 * biases are ordinary values: they rank first (+inf) or last (−inf), and
 * the weights are what IEEE arithmetic makes of them (a softmax over a
 * +inf logit is NaN; a −inf logit weighs 0, or less than 1e−37). NaN or
 * infinity in x, W1, W2, b1 or b2 propagates through the GEMMs as IEEE
 * arithmetic has it.
 *
 * Dispatch. Expert e's segment is rows [expert_offsets[e],
 * expert_offsets[e+1]); it holds the (token, slot) pairs routed to e with
 * tokens in ascending order, and is padded with zero rows to a multiple of
 * the plan's alignment (xattn_moe_alignment). expert_offsets[0] = 0.
 * row_token[r] is the token of row r, −1 for padding and for rows past
 * expert_offsets[E] (every one of the R entries is written). token_row[t, j]
 * is the row of (t, j), −1 when topk_ids[t, j] is −1 (dropped: an expert
 * that lives on another device). x_perm rows past expert_offsets[E] are not
 * written. The row of (t, j) is x[t], or with XATTN_MOE_WEIGHTS_ON_INPUT
 * (Llama-4; vLLM's apply_router_weight_on_input) topk_weights[t, j] · x[t],
 * the product formed in fp32 and rounded to dtype once.
 *
 * Experts. For each row r of expert e's segment, with gate column c
 * (0 ≤ c < I) reading W1_e row gate(c) and up column c row up(c):
 *   gate(c) = c, up(c) = I + c           (rows 0..I−1 gate, I..2I−1 up)
 *   gate(c) = 2c, up(c) = 2c + 1         (XATTN_MOE_W1_INTERLEAVED, GPT-OSS)
 *   g = x_r · W1_e[gate(c)] + b1_e[gate(c)]   (b1 0 without EXPERT_B1;
 *   u = x_r · W1_e[up(c)] + b1_e[up(c)]       b1 follows W1's row order)
 *   h_c = act(g, u):
 *     SWIGLU          silu(g)·u
 *     GEGLU           gelu_tanh(g)·u
 *     SWIGLU_CLAMPED  g' = min(g, limit), u' = clamp(u, −limit, limit),
 *                     g'·sigmoid(α·g')·(u' + 1) (GPT-OSS: α 1.702, limit 7;
 *                     the clamps keep a NaN a NaN)
 *   y_r = h · W2_eᵀ + b2_e                 (b2 0 without EXPERT_B2)
 * with fp32 accumulation, biases added in fp32, y rounded to dtype once.
 * Every row of a segment is computed, padding rows too: they are zero in
 * x_perm, so their y is 0, or the expert's output for a zero row when the
 * layer has biases. Rows past expert_offsets[E] are not written.
 *
 * Combine. out[t] = Σ_j topk_weights[t, j] · y[token_row[t, j]] over j with
 * token_row[t, j] ≥ 0, or Σ_j y[token_row[t, j]] with
 * XATTN_MOE_WEIGHTS_ON_INPUT (the weights were applied by dispatch), added
 * to the existing out when args.accumulate is set (e.g. after a shared
 * expert), computed in fp32 and rounded once.
 *
 * T = 0 is a valid no-op for every call: nothing is read or written, not
 * even expert_offsets or row_token, so outputs of an earlier call stay as
 * they were (a caller with no tokens skips the later calls too).
 */
#ifndef XATTN_MOE_H
#define XATTN_MOE_H

#include "xattn_attn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum xattn_moe_route_mode {
    XATTN_MOE_ROUTE_SOFTMAX_TOPK = 0,
    XATTN_MOE_ROUTE_TOPK_SOFTMAX = 1,
    XATTN_MOE_ROUTE_SIGMOID_GROUPED = 2,
    XATTN_MOE_ROUTE_TOPK_SIGMOID = 3
} xattn_moe_route_mode;

typedef enum xattn_moe_activation {
    XATTN_MOE_SWIGLU = 0,        /* silu(g)·u */
    XATTN_MOE_GEGLU = 1,         /* gelu(g)·u, GELU in its tanh approximation */
    XATTN_MOE_SWIGLU_CLAMPED = 2 /* GPT-OSS: g, u clamped to limit, then
                                    g·sigmoid(α·g)·(u + 1) */
} xattn_moe_activation;

/* xattn_moe_desc.flags */
#define XATTN_MOE_RENORMALIZE (1u << 0) /* route weights renormalised to sum 1 */
#define XATTN_MOE_BIAS (1u << 1)        /* SIGMOID_GROUPED: args.bias [E] f32 */
/* Dispatch scales each permuted row by its route weight and combine sums
 * the rows unweighted (Llama-4). */
#define XATTN_MOE_WEIGHTS_ON_INPUT (1u << 2)
/* W1 rows interleave gate and up: even rows gate, odd rows up (GPT-OSS). */
#define XATTN_MOE_W1_INTERLEAVED (1u << 3)
#define XATTN_MOE_EXPERT_B1 (1u << 4)   /* args.b1 [E, 2I] after the gate/up GEMM */
#define XATTN_MOE_EXPERT_B2 (1u << 5)   /* args.b2 [E, H] after the down GEMM */

/* SWIGLU_CLAMPED parameters when the descriptor leaves them 0 (GPT-OSS). */
#define XATTN_MOE_SWIGLU_ALPHA 1.702f
#define XATTN_MOE_SWIGLU_LIMIT 7.0f

/* Largest segment alignment a descriptor may ask for. */
#define XATTN_MOE_MAX_ALIGN 1024

/* The problem a MoE plan is made for. Zero-initialise, then fill. */
typedef struct xattn_moe_desc {
    int32_t max_tokens;         /* T bound, ≥ 1; a run takes any T ≤ it */
    int32_t hidden;             /* H ≥ 1 */
    int32_t num_experts;        /* E ≥ 1 (any value, not only powers of two) */
    int32_t top_k;              /* 1 ≤ k ≤ E */
    int32_t inter;              /* I ≥ 1, expert FFN size */
    xattn_dtype dtype;          /* x, x_perm, y, out: f32, f16 or bf16 */
    xattn_dtype weight_dtype;   /* W1, W2: f32, f16 or bf16 */
    xattn_dtype logits_dtype;   /* gate logits: f32, f16 or bf16 */
    xattn_moe_route_mode route;
    xattn_moe_activation activation;
    uint32_t flags;             /* XATTN_MOE_* */
    int32_t n_group;            /* SIGMOID_GROUPED: ≥ 1, divides E; else 0 */
    int32_t topk_group;         /* SIGMOID_GROUPED: 1..n_group; else 0 */
    float routed_scaling_factor;/* weights ×= this; 0 means 1 */
    int32_t align;              /* segment alignment 1..XATTN_MOE_MAX_ALIGN;
                                   0: the planner picks for the device */
    /* Added after the first release; 0 keeps the earlier behaviour. */
    float swiglu_alpha;         /* SWIGLU_CLAMPED: α, finite > 0; 0 means
                                   XATTN_MOE_SWIGLU_ALPHA. Else 0 */
    float swiglu_limit;         /* SWIGLU_CLAMPED: limit, finite > 0; 0 means
                                   XATTN_MOE_SWIGLU_LIMIT. Else 0 */
    xattn_dtype bias_dtype;     /* b1, b2: f32 (0), f16 or bf16; 0 (f32)
                                   without EXPERT_B1 and EXPERT_B2 */
} xattn_moe_desc;

/* Tensors of one MoE call. Each call reads and writes only the fields its
 * comment lists; a field the call does not use must be absent (buffer ==
 * NULL), so nothing is ignored silently. Row strides are free; the innermost
 * stride is 1. */
typedef struct xattn_moe_args {
    xattn_tensor logits;         /* [T, E] logits_dtype      route, forward */
    xattn_tensor bias;           /* [E] f32, with XATTN_MOE_BIAS  route, forward */
    xattn_tensor topk_ids;       /* [T, k] i32   out: route; in: dispatch */
    xattn_tensor topk_weights;   /* [T, k] f32   out: route; in: combine, or
                                    with WEIGHTS_ON_INPUT dispatch instead */
    xattn_tensor x;              /* [T, H] dtype          dispatch, forward */
    xattn_tensor expert_offsets; /* [E+1] i32    out: dispatch; in: experts */
    xattn_tensor x_perm;         /* [R, H] dtype out: dispatch; in: experts */
    xattn_tensor row_token;      /* [R] i32      out: dispatch */
    xattn_tensor token_row;      /* [T, k] i32   out: dispatch; in: combine */
    xattn_tensor w1;             /* [E, 2I, H] weight_dtype  experts, forward */
    xattn_tensor w2;             /* [E, H, I] weight_dtype   experts, forward */
    xattn_tensor y;              /* [R, H] dtype out: experts; in: combine */
    xattn_tensor out;            /* [T, H] dtype out: combine, forward */
    int32_t accumulate;          /* combine, forward: out += result */
    xattn_buffer *workspace;     /* every call: ≥ xattn_moe_workspace_size
                                    bytes (may be NULL when that is 0); runs
                                    in flight at once need disjoint ones */
    size_t workspace_offset;     /* bytes, a multiple of XATTN_WORKSPACE_ALIGN */
    /* Added after the first release (absent unless the flags ask). */
    xattn_tensor b1;             /* [E, 2I] bias_dtype, EXPERT_B1  experts, forward */
    xattn_tensor b2;             /* [E, H] bias_dtype, EXPERT_B2   experts, forward */
} xattn_moe_args;

typedef struct xattn_moe_plan xattn_moe_plan;

/* Plan a MoE layer for the context's device: validates desc, picks the
 * segment alignment, GEMM tiles and workspace, and prepares the kernels.
 * Errors: XATTN_ERR_INVALID_ARGUMENT (a field breaks a rule: k > E, n_group
 * not dividing E, topk_group > n_group, k larger than the kept groups hold,
 * a parameter of an option that is off (swiglu_alpha or swiglu_limit
 * without SWIGLU_CLAMPED, bias_dtype without EXPERT_B1/B2, n_group without
 * SIGMOID_GROUPED), ...; the message names it), XATTN_ERR_UNSUPPORTED (a
 * dtype the device lacks), XATTN_ERR_OUT_OF_MEMORY, XATTN_ERR_COMPILE.
 * Thread-safety: safe. */
XATTN_API xattn_status xattn_moe_plan_create(xattn_context *ctx, const xattn_moe_desc *desc,
                                             xattn_moe_plan **out);

/* Workspace bytes every MoE call of the plan needs (0 for a NULL plan).
 * Errors: none. Thread-safety: safe. */
XATTN_API size_t xattn_moe_workspace_size(const xattn_moe_plan *plan);

/* Segment alignment the plan pads every expert's rows to (0 for NULL).
 * Errors: none. Thread-safety: safe. */
XATTN_API int32_t xattn_moe_alignment(const xattn_moe_plan *plan);

/* Permuted rows R that x_perm, row_token and y need for T tokens:
 * T·k + min(E, T·k)·(alignment − 1). −1 for a NULL plan or T outside
 * [0, max_tokens]. Errors: none. Thread-safety: safe. */
XATTN_API int64_t xattn_moe_rows(const xattn_moe_plan *plan, int64_t num_tokens);

/* Human-readable plan into buf (always NUL-terminated when size > 0);
 * *needed, if not NULL, receives the full length.
 * Errors: XATTN_ERR_INVALID_ARGUMENT. Thread-safety: safe. */
XATTN_API xattn_status xattn_moe_plan_describe(const xattn_moe_plan *plan, char *buf,
                                               size_t size, size_t *needed);

/* Destroy a plan and drop its reference to the context, which this may
 * close (see xattn_context_destroy). Accepts NULL. Thread-safety: not
 * concurrently with a run of the same plan. */
XATTN_API void xattn_moe_plan_destroy(xattn_moe_plan **plan);

/* The five calls. Launch-only (no allocation, no compilation; asynchronous
 * on GPU backends). Tensors are checked against the plan first; index
 * contents (topk_ids in [−1, E), expert_offsets, token_row in [−1, R)) are
 * checked when their memory is host-visible.
 * Errors: XATTN_ERR_INVALID_ARGUMENT (T > max_tokens, shapes, dtypes,
 * strides, overlaps, ids out of range, a field the call does not use, such
 * as b1 without EXPERT_B1 or topk_weights in combine with
 * WEIGHTS_ON_INPUT),
 * XATTN_ERR_WORKSPACE_TOO_SMALL, XATTN_ERR_DEVICE.
 * Thread-safety: a plan may run concurrently from several threads, each run
 * with its own workspace. */
XATTN_API xattn_status xattn_moe_route(const xattn_moe_plan *plan, const xattn_moe_args *args);
XATTN_API xattn_status xattn_moe_dispatch(const xattn_moe_plan *plan,
                                          const xattn_moe_args *args);
XATTN_API xattn_status xattn_moe_experts(const xattn_moe_plan *plan,
                                         const xattn_moe_args *args);
XATTN_API xattn_status xattn_moe_combine(const xattn_moe_plan *plan,
                                         const xattn_moe_args *args);
XATTN_API xattn_status xattn_moe_forward(const xattn_moe_plan *plan,
                                         const xattn_moe_args *args);

#ifdef __cplusplus
}
#endif

#endif /* XATTN_MOE_H */
