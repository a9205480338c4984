#pragma once
/* The float64 reference of every MoE primitive (docs/moe.md, api/xattn_moe.h).
 *
 * Plain C written to be read against the contract, not to be fast. Inputs
 * are doubles holding exactly the values the backend saw (already rounded to
 * their dtypes); all arithmetic is double. Tensors are logical and
 * contiguous: [T, E] logits, [T, k] ids/weights/token_row, [T, H] x and out,
 * [R, H] x_perm and y, [E, 2I, H] W1, [E, H, I] W2, [E, 2I] b1, [E, H] b2. */
#include <stdint.h>

#include "xattn_moe.h"

/* One MoE layer, as the reference needs it. */
typedef struct xattn_ref_moe {
    int32_t hidden, experts, top_k, inter;   /* H, E, k, I */
    xattn_moe_route_mode route;
    int renormalize;                         /* weights scaled to sum 1 */
    const double *bias;                      /* SIGMOID_GROUPED: [E] or NULL */
    int32_t n_group, topk_group;             /* SIGMOID_GROUPED */
    double scale;                            /* routed_scaling_factor, resolved */
    int32_t align;                           /* segment alignment ≥ 1 */
    xattn_moe_activation activation;
    double alpha, limit;                     /* SWIGLU_CLAMPED, resolved */
    int w1_interleaved;                      /* W1 rows gate, up, gate, up, ... */
    const double *b1, *b2;                   /* expert biases or NULL */
} xattn_ref_moe;

/* ---- route, in the steps the contract names ------------------------------ */

/* The score each expert is selected by, for one token's logits [E]: the
 * logit (SOFTMAX_TOPK, which orders as p; TOPK_SOFTMAX, TOPK_SIGMOID) or
 * b = sigmoid(logit) + bias (SIGMOID_GROUPED); a NaN score is −inf. */
void xattn_ref_moe_select_scores(const xattn_ref_moe *p, const double *logits, double *score);

/* SIGMOID_GROUPED: each group's score [n_group] from the selection scores:
 * the sum of its best two (its one score when groups have one expert); a
 * NaN sum (+inf and −inf) is −inf. */
void xattn_ref_moe_group_scores(const xattn_ref_moe *p, const double *score,
                                double *group_score);

/* The n best of score[0..n) in order, highest first; equal scores order by
 * the lower index. Only entries with eligible[i] (NULL: all) take part;
 * best must hold n entries and at least n must be eligible. */
void xattn_ref_moe_top(const double *score, const unsigned char *eligible, int32_t count,
                       int32_t n, int32_t *best);

/* Weights [k] of a token's chosen experts ids [k] (any valid choice, not
 * only the reference's own): p, softmax over the chosen logits, sigmoid of
 * the logit or s = sigmoid(logit) per mode; renormalised when asked, times
 * the scale. All NaN when the token's logits or the bias hold a NaN. */
void xattn_ref_moe_weights(const xattn_ref_moe *p, const double *logits, const int32_t *ids,
                           double *weights);

/* Route T tokens: logits [T, E] → ids [T, k], weights [T, k]. Returns 0, or
 * −1 when out of memory. */
int xattn_ref_moe_route(const xattn_ref_moe *p, int64_t tokens, const double *logits,
                        int32_t *ids, double *weights);

/* ---- dispatch, experts, combine ------------------------------------------ */

/* Rows of the permuted tensors for T tokens: T·k + min(E, T·k)·(align − 1). */
int64_t xattn_ref_moe_rows(const xattn_ref_moe *p, int64_t tokens);

/* Dispatch: ids [T, k] (−1 dropped), x [T, H] → offsets [E+1], x_perm
 * [rows, H] (rows < offsets[E] written: tokens ascending per segment, zero
 * padding rows), row_token [rows] (every entry: −1 for padding and past
 * offsets[E]), token_row [T, k] (−1 for dropped). rows ≥ the rows T
 * tokens need. x and x_perm may both be NULL for the maps alone. weights
 * [T, k] (weights on the input) or NULL: row (t, j) is weights[t, j]·x[t],
 * exactly (the caller rounds it as the backend must). */
void xattn_ref_moe_dispatch(const xattn_ref_moe *p, int64_t tokens, const int32_t *ids,
                            const double *weights, const double *x, int64_t rows,
                            int32_t *offsets, double *x_perm, int32_t *row_token,
                            int32_t *token_row);

/* Experts: y_r = act(g, u) · W2_eᵀ + b2_e with g and u the gate and up
 * columns of x_r · W1_eᵀ + b1_e (rows as the layout has them), for every row
 * r < offsets[E] of expert e's segment. Returns 0, or −1 when out of
 * memory. */
int xattn_ref_moe_experts(const xattn_ref_moe *p, const int32_t *offsets, const double *x_perm,
                          const double *w1, const double *w2, double *y);

/* SiLU and GELU (tanh approximation) of the activation, and the whole of
 * h = act(g, u) for the layer's activation. */
double xattn_ref_silu(double g);
double xattn_ref_gelu_tanh(double g);
double xattn_ref_act(const xattn_ref_moe *p, double g, double u);

/* Combine: out[t] (+)= Σ_j weights[t, j] · y[token_row[t, j]] over
 * token_row[t, j] ≥ 0 (weights NULL: weight 1, the weights on the input);
 * out holds the previous values when accumulate. */
void xattn_ref_moe_combine(const xattn_ref_moe *p, int64_t tokens, const int32_t *token_row,
                           const double *weights, const double *y, int accumulate, double *out);
