/* Self-checks of the float64 MoE reference: small examples worked out by
 * hand from docs/moe.md and api/xattn_moe.h, and identities that hold by the
 * contract. They run before any backend, so a broken reference cannot pass
 * a broken backend. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "ref_moe.h"

const char *const hx_ref_moe_test_names[] = {
    "ref/moe/softmax_topk_by_hand",
    "ref/moe/topk_softmax_and_topk_sigmoid_by_hand",
    "ref/moe/sigmoid_grouped_by_hand",
    "ref/moe/ties_go_to_the_lower_index",
    "ref/moe/group_limits_equal_plain_topk",
    "ref/moe/dispatch_by_hand",
    "ref/moe/experts_by_hand",
    "ref/moe/combine_by_hand",
    "ref/moe/dispatch_then_combine_weights_each_token",
    "ref/moe/one_expert_is_a_dense_mlp",
    "ref/moe/nan_logits_rank_last_and_make_the_token_nan",
    "ref/moe/infinite_logits_follow_ieee",
    "ref/moe/weights_on_input_by_hand",
    "ref/moe/swiglu_clamped_by_hand",
    "ref/moe/interleaved_w1_and_biases_by_hand",
    NULL,
};

#define FAIL(...)                                                                          \
    do {                                                                                   \
        hx_result_fail(res, __VA_ARGS__);                                                  \
        return;                                                                            \
    } while (0)

static int near(double a, double b, double tol) { return fabs(a - b) <= tol * (1.0 + fabs(b)); }

static xattn_ref_moe layer(xattn_moe_route_mode route, int32_t E, int32_t k)
{
    xattn_ref_moe p;
    memset(&p, 0, sizeof p);
    p.hidden = 4;
    p.inter = 2;
    p.experts = E;
    p.top_k = k;
    p.route = route;
    p.scale = 1.0;
    p.align = 1;
    return p;
}

/* Route one token and compare ids exactly and weights to 1e-14. */
static int route_is(const xattn_ref_moe *p, const double *logits, const int32_t *want_ids,
                    const double *want_w, const char *what, hx_result *res)
{
    int32_t ids[16];
    double w[16];
    if (xattn_ref_moe_route(p, 1, logits, ids, w)) {
        hx_result_fail(res, "harness: out of host memory");
        return 0;
    }
    for (int32_t j = 0; j < p->top_k; j++) {
        if (ids[j] != want_ids[j]) {
            hx_result_fail(res, "%s: slot %d picks expert %d, want %d", what, j, ids[j],
                           want_ids[j]);
            return 0;
        }
        if (want_w && !near(w[j], want_w[j], 1e-14)) {
            hx_result_fail(res, "%s: weight of slot %d is %.17g, want %.17g", what, j, w[j],
                           want_w[j]);
            return 0;
        }
    }
    return 1;
}

/* Route one token; ids exact, every weight NaN. */
static int route_is_nan(const xattn_ref_moe *p, const double *logits, const int32_t *want_ids,
                        const char *what, hx_result *res)
{
    if (!route_is(p, logits, want_ids, NULL, what, res)) return 0;
    int32_t ids[16];
    double w[16];
    if (xattn_ref_moe_route(p, 1, logits, ids, w)) {
        hx_result_fail(res, "harness: out of host memory");
        return 0;
    }
    for (int32_t j = 0; j < p->top_k; j++)
        if (!isnan(w[j])) {
            hx_result_fail(res, "%s: weight of slot %d is %.17g, want NaN", what, j, w[j]);
            return 0;
        }
    return 1;
}

static void t_softmax_topk(hx_rng *r, hx_result *res)
{
    (void)r;
    /* p = softmax(1, 3, 2, 0): experts 1 and 2, weights e³/Σ and e²/Σ;
     * renormalised e³/(e³+e²) = σ(1) and σ(−1), then × 2.5. */
    const double logits[4] = {1, 3, 2, 0};
    const int32_t ids[2] = {1, 2};
    const double plain[2] = {0.6439142598879724, 0.23688281808991016};
    const double renorm[2] = {0.7310585786300048, 0.2689414213699951};
    const double scaled[2] = {1.8276464465750122, 0.6723535534249878};
    xattn_ref_moe p = layer(XATTN_MOE_ROUTE_SOFTMAX_TOPK, 4, 2);
    if (!route_is(&p, logits, ids, plain, "softmax_topk", res)) return;
    p.renormalize = 1;
    if (!route_is(&p, logits, ids, renorm, "softmax_topk renormalised", res)) return;
    p.scale = 2.5;
    route_is(&p, logits, ids, scaled, "softmax_topk renormalised, scale 2.5", res);
}

static void t_topk_softmax_sigmoid(hx_rng *r, hx_result *res)
{
    (void)r;
    /* GPT-OSS: softmax over the picked logits only, so the others do not
     * matter: (3, 2) → σ(1), σ(−1) whatever experts 0 and 3 hold. */
    const double logits[4] = {1, 3, 2, 0}, other[4] = {-7, 3, 2, 1.5};
    const int32_t ids[2] = {1, 2};
    const double w[2] = {0.7310585786300049, 0.2689414213699951};
    xattn_ref_moe p = layer(XATTN_MOE_ROUTE_TOPK_SOFTMAX, 4, 2);
    if (!route_is(&p, logits, ids, w, "topk_softmax", res)) return;
    if (!route_is(&p, other, ids, w, "topk_softmax, other unpicked logits", res)) return;
    /* Llama-4: top-1 by logit, weight σ(logit); the tie at 2 goes to 2. */
    const double l4[4] = {0.5, -1, 2, 2};
    const int32_t id4[1] = {2};
    const double w4[1] = {0.8807970779778823};
    p = layer(XATTN_MOE_ROUTE_TOPK_SIGMOID, 4, 1);
    route_is(&p, l4, id4, w4, "topk_sigmoid", res);
}

static void t_sigmoid_grouped(hx_rng *r, hx_result *res)
{
    (void)r;
    /* E 8 in 4 groups of 2, keep 2 groups, k 3, bias +0.2 on expert 6.
     * s = σ(l); b = s + bias; group scores (b0+b1, ...) =
     * (0.959, 1.4996, 1.4009, 1.4906): groups 1 and 3 stay (without the
     * bias group 2 would beat 3), so expert 0, the best of all, is out.
     * Among 2, 3, 6, 7 by b: 6 (0.822), 3 (0.769), 2 (0.731). Weights are s
     * (unbiased), renormalised, × 2.5. */
    const double logits[8] = {3, -5, 1, 1.2, 0.8, 0.9, 0.5, 0.7};
    const double bias[8] = {0, 0, 0, 0, 0, 0, 0.2, 0};
    const int32_t ids[3] = {6, 3, 2};
    const double w[3] = {0.733325645565603, 0.9054068350207153, 0.8612675194136815};
    xattn_ref_moe p = layer(XATTN_MOE_ROUTE_SIGMOID_GROUPED, 8, 3);
    p.bias = bias;
    p.n_group = 4;
    p.topk_group = 2;
    p.renormalize = 1;
    p.scale = 2.5;
    if (!route_is(&p, logits, ids, w, "sigmoid_grouped", res)) return;
    double g[4], score[8];
    xattn_ref_moe_select_scores(&p, logits, score);
    xattn_ref_moe_group_scores(&p, score, g);
    if (!near(g[1], 1.4995833621290224, 1e-14) || !near(g[3], 1.4906471033700208, 1e-14))
        FAIL("group scores %.17g, %.17g; want the sums of each group's two b", g[1], g[3]);
    /* Without the bias: groups 1 and 2, experts 3, 2, 5. */
    const int32_t unbiased[3] = {3, 2, 5};
    p.bias = NULL;
    route_is(&p, logits, unbiased, NULL, "sigmoid_grouped without bias", res);
}

static void t_ties(hx_rng *r, hx_result *res)
{
    (void)r;
    /* Equal scores order, and win, by the lower expert index, in every mode. */
    const double flat[6] = {0.25, 0.25, 0.25, 0.25, 0.25, 0.25};
    const int32_t first3[3] = {0, 1, 2};
    static const xattn_moe_route_mode modes[4] = {
        XATTN_MOE_ROUTE_SOFTMAX_TOPK, XATTN_MOE_ROUTE_TOPK_SOFTMAX,
        XATTN_MOE_ROUTE_SIGMOID_GROUPED, XATTN_MOE_ROUTE_TOPK_SIGMOID};
    for (int m = 0; m < 4; m++) {
        xattn_ref_moe p = layer(modes[m], 6, 3);
        if (modes[m] == XATTN_MOE_ROUTE_SIGMOID_GROUPED) p.n_group = 3, p.topk_group = 2;
        char what[48];
        snprintf(what, sizeof what, "all equal, mode %d", (int)modes[m]);
        if (!route_is(&p, flat, first3, NULL, what, res)) return;
    }
    /* A tie inside the pick orders by index; one at the boundary is won by
     * the lower index. */
    const double some[5] = {1, 2, 2, 0, 2};
    const int32_t pick[2] = {1, 2};
    xattn_ref_moe p = layer(XATTN_MOE_ROUTE_TOPK_SIGMOID, 5, 2);
    if (!route_is(&p, some, pick, NULL, "tie at 2 among experts 1, 2, 4", res)) return;
    /* Two groups with equal scores: group 0 stays. */
    const double groups[4] = {1, 0, 0, 1};
    const int32_t g0[2] = {0, 1};
    p = layer(XATTN_MOE_ROUTE_SIGMOID_GROUPED, 4, 2);
    p.n_group = 2, p.topk_group = 1;
    route_is(&p, groups, g0, NULL, "equal group scores", res);
}

static void t_group_limits(hx_rng *r, hx_result *res)
{
    /* One group, or groups of one expert all kept, is plain top-k of b. */
    enum { T = 20, E = 12, K = 4 };
    double logits[T * E], bias[E], w0[T * K], w1[T * K], w2[T * K];
    int32_t ids0[T * K], ids1[T * K], ids2[T * K];
    for (int i = 0; i < T * E; i++) logits[i] = 2.0 * hx_rng_normal(r);
    for (int e = 0; e < E; e++) bias[e] = 0.1 * hx_rng_normal(r);
    xattn_ref_moe p = layer(XATTN_MOE_ROUTE_SIGMOID_GROUPED, E, K);
    p.bias = bias;
    p.renormalize = 1;
    p.scale = 2.5;
    p.n_group = 1, p.topk_group = 1;
    int bad = xattn_ref_moe_route(&p, T, logits, ids0, w0);
    p.n_group = E, p.topk_group = E;
    bad |= xattn_ref_moe_route(&p, T, logits, ids1, w1);
    p.n_group = E, p.topk_group = K;
    bad |= xattn_ref_moe_route(&p, T, logits, ids2, w2);
    if (bad) FAIL("harness: out of host memory");
    for (int t = 0; t < T; t++) {
        double b[E], sum = 0;
        for (int e = 0; e < E; e++) b[e] = 1.0 / (1.0 + exp(-logits[t * E + e])) + bias[e];
        for (int j = 0; j < K; j++) {
            const int i = t * K + j;
            if (ids0[i] != ids1[i] || ids0[i] != ids2[i])
                FAIL("token %d slot %d: experts %d (1 group), %d (singletons, all kept), %d "
                     "(singletons, k kept) differ", t, j, ids0[i], ids1[i], ids2[i]);
            if (j > 0 && b[ids0[i - 1]] < b[ids0[i]]) FAIL("token %d: not ordered by b", t);
            sum += w0[i];
        }
        for (int e = 0; e < E; e++) {
            int chosen = 0;
            for (int j = 0; j < K; j++) chosen |= ids0[t * K + j] == e;
            if (!chosen && b[e] > b[ids0[t * K + K - 1]])
                FAIL("token %d: expert %d has a higher b than a chosen one", t, e);
        }
        if (!near(sum, 2.5, 1e-14))
            FAIL("token %d: renormalised weights sum to %.17g, not the scale", t, sum);
    }
}

static void t_dispatch(hx_rng *r, hx_result *res)
{
    (void)r;
    /* T 3, k 2, E 3, alignment 2. Expert 0 gets tokens 0, 1, 2 (4 rows
     * with padding), expert 1 nothing, expert 2 tokens 0 and 2; token 1's
     * second slot is dropped. R = T·k + min(E, T·k)·(2 − 1) = 9. */
    enum { T = 3, K = 2, E = 3, H = 2 };
    const int32_t ids[T * K] = {2, 0, 0, -1, 2, 0};
    const double x[T * H] = {1, 2, 3, 4, 5, 6};
    xattn_ref_moe p = layer(XATTN_MOE_ROUTE_SOFTMAX_TOPK, E, K);
    p.hidden = H;
    p.align = 2;
    const int64_t R = xattn_ref_moe_rows(&p, T);
    if (R != 9) FAIL("rows for T 3: %lld, want 9", (long long)R);
    int32_t offsets[E + 1], row_token[9], token_row[T * K];
    double x_perm[9 * H];
    xattn_ref_moe_dispatch(&p, T, ids, NULL, x, R, offsets, x_perm, row_token, token_row);
    const int32_t want_off[E + 1] = {0, 4, 4, 6};
    const int32_t want_rt[9] = {0, 1, 2, -1, 0, 2, -1, -1, -1};
    const int32_t want_tr[T * K] = {4, 0, 1, -1, 5, 2};
    const double want_x[6 * H] = {1, 2, 3, 4, 5, 6, 0, 0, 1, 2, 5, 6};
    if (memcmp(offsets, want_off, sizeof want_off)) FAIL("offsets differ from {0, 4, 4, 6}");
    if (memcmp(row_token, want_rt, sizeof want_rt)) FAIL("row_token differs");
    if (memcmp(token_row, want_tr, sizeof want_tr)) FAIL("token_row differs");
    for (int i = 0; i < 6 * H; i++)
        if (x_perm[i] != want_x[i]) FAIL("x_perm row %d differs", i / H);
    if (signbit(x_perm[3 * H])) FAIL("padding must be +0");
}

static void t_experts(hx_rng *r, hx_result *res)
{
    (void)r;
    /* H 2, I 1, two experts, one row each. Expert 0: gate row (1, 0), up
     * row (1, 1), W2 (2, −1): x = (1, 2) gives g = 1, u = 3, h = act(1)·3.
     * Expert 1 is expert 0 with W2 negated. */
    const double x_perm[4] = {1, 2, 1, 2};
    const double w1[8] = {1, 0, 1, 1, 1, 0, 1, 1};
    const double w2[4] = {2, -1, -2, 1};
    const int32_t offsets[3] = {0, 1, 2};
    xattn_ref_moe p = layer(XATTN_MOE_ROUTE_SOFTMAX_TOPK, 2, 1);
    p.hidden = 2;
    p.inter = 1;
    double y[4];
    const double silu3 = 2.193175735890015;  /* silu(1)·3 = 3/(1 + e⁻¹) */
    const double gelu3 = 2.5235759718248305; /* gelu_tanh(1)·3 */
    if (xattn_ref_moe_experts(&p, offsets, x_perm, w1, w2, y)) FAIL("harness: out of memory");
    const double want_s[4] = {2 * silu3, -silu3, -2 * silu3, silu3};
    for (int i = 0; i < 4; i++)
        if (!near(y[i], want_s[i], 1e-14))
            FAIL("SwiGLU y[%d] = %.17g, want %.17g", i, y[i], want_s[i]);
    p.activation = XATTN_MOE_GEGLU;
    if (xattn_ref_moe_experts(&p, offsets, x_perm, w1, w2, y)) FAIL("harness: out of memory");
    const double want_g[4] = {2 * gelu3, -gelu3, -2 * gelu3, gelu3};
    for (int i = 0; i < 4; i++)
        if (!near(y[i], want_g[i], 1e-14))
            FAIL("GeGLU y[%d] = %.17g, want %.17g", i, y[i], want_g[i]);
    if (!near(xattn_ref_gelu_tanh(-0.5), -0.15428599017485606, 1e-14))
        FAIL("gelu_tanh(-0.5) = %.17g", xattn_ref_gelu_tanh(-0.5));
}

static void t_combine(hx_rng *r, hx_result *res)
{
    (void)r;
    /* Two tokens, k 2: token 0 reads rows 2 and 0, token 1 row 1 and a
     * dropped slot. */
    const int32_t token_row[4] = {2, 0, 1, -1};
    const double weights[4] = {0.5, 0.25, 2, 100};
    const double y[6] = {1, 2, 3, 4, 5, 6};
    xattn_ref_moe p = layer(XATTN_MOE_ROUTE_SOFTMAX_TOPK, 3, 2);
    p.hidden = 2;
    double out[4] = {9, 9, 9, 9};
    xattn_ref_moe_combine(&p, 2, token_row, weights, y, 0, out);
    const double want[4] = {0.5 * 5 + 0.25 * 1, 0.5 * 6 + 0.25 * 2, 2 * 3, 2 * 4};
    for (int i = 0; i < 4; i++)
        if (out[i] != want[i]) FAIL("out[%d] = %g, want %g", i, out[i], want[i]);
    double acc[4] = {1, -1, 10, 20};
    xattn_ref_moe_combine(&p, 2, token_row, weights, y, 1, acc);
    const double want_acc[4] = {want[0] + 1, want[1] - 1, want[2] + 10, want[3] + 20};
    for (int i = 0; i < 4; i++)
        if (acc[i] != want_acc[i])
            FAIL("accumulated out[%d] = %g, want %g", i, acc[i], want_acc[i]);
}

static void t_roundtrip(hx_rng *r, hx_result *res)
{
    /* With experts that copy their input (y = x_perm), combine(dispatch(x))
     * is x times the sum of the token's kept weights, for any alignment. */
    enum { T = 9, K = 3, E = 5, H = 3, MAXR = T * K + E * 7 };
    int32_t ids[T * K], offsets[E + 1], row_token[MAXR], token_row[T * K];
    double x[T * H], x_perm[MAXR * H], w[T * K], out[T * H];
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < H; i++) x[t * H + i] = hx_rng_normal(r);
        for (int j = 0; j < K; j++) {
            ids[t * K + j] = (t + 2 * j) % E;
            w[t * K + j] = hx_rng_uniform(r);
        }
    }
    ids[4] = ids[K * 5] = ids[K * 5 + 1] = ids[K * 5 + 2] = -1;
    static const int32_t aligns[3] = {1, 4, 8};
    for (int a = 0; a < 3; a++) {
        xattn_ref_moe p = layer(XATTN_MOE_ROUTE_SOFTMAX_TOPK, E, K);
        p.hidden = H;
        p.align = aligns[a];
        const int64_t R = xattn_ref_moe_rows(&p, T);
        xattn_ref_moe_dispatch(&p, T, ids, NULL, x, R, offsets, x_perm, row_token, token_row);
        for (int e = 0; e < E; e++)
            if ((offsets[e + 1] - offsets[e]) % aligns[a])
                FAIL("align %d: segment %d is not a multiple", aligns[a], e);
        for (int64_t row = 0; row < R; row++)
            if (row_token[row] >= 0 && (row < offsets[0] || row >= offsets[E]))
                FAIL("align %d: row %lld has a token past offsets[E]", aligns[a], (long long)row);
        xattn_ref_moe_combine(&p, T, token_row, w, x_perm, 0, out);
        for (int t = 0; t < T; t++) {
            double kept = 0;
            for (int j = 0; j < K; j++)
                if (ids[t * K + j] >= 0) kept += w[t * K + j];
            for (int i = 0; i < H; i++)
                if (!near(out[t * H + i], kept * x[t * H + i], 1e-14))
                    FAIL("align %d, token %d: %.17g, want %.17g", aligns[a], t, out[t * H + i],
                         kept * x[t * H + i]);
        }
    }
}

static void t_one_expert(hx_rng *r, hx_result *res)
{
    /* E 1, k 1, renormalised: every token goes to expert 0 with weight 1,
     * so the layer is the expert's MLP applied to x, padding or not. */
    enum { T = 5, H = 4, I = 3 };
    double logits[T], x[T * H], w1[2 * I * H], w2[H * I], wts[T], y[16 * H], direct[T * H];
    double x_perm[16 * H], out[T * H];
    int32_t ids[T], offsets[2], row_token[16], token_row[T];
    for (int i = 0; i < T; i++) logits[i] = hx_rng_normal(r);
    for (int i = 0; i < T * H; i++) x[i] = hx_rng_normal(r);
    for (int i = 0; i < 2 * I * H; i++) w1[i] = hx_rng_normal(r);
    for (int i = 0; i < H * I; i++) w2[i] = hx_rng_normal(r);
    xattn_ref_moe p = layer(XATTN_MOE_ROUTE_SOFTMAX_TOPK, 1, 1);
    p.hidden = H, p.inter = I, p.renormalize = 1, p.align = 8;
    const int64_t R = xattn_ref_moe_rows(&p, T);
    if (R != 12) FAIL("rows: %lld, want 5 + 1·7", (long long)R);
    const int32_t whole[2] = {0, T};
    if (xattn_ref_moe_route(&p, T, logits, ids, wts) ||
        xattn_ref_moe_experts(&p, whole, x, w1, w2, direct))
        FAIL("harness: out of host memory");
    xattn_ref_moe_dispatch(&p, T, ids, NULL, x, R, offsets, x_perm, row_token, token_row);
    if (xattn_ref_moe_experts(&p, offsets, x_perm, w1, w2, y)) FAIL("harness: out of host memory");
    xattn_ref_moe_combine(&p, T, token_row, wts, y, 0, out);
    for (int t = 0; t < T; t++) {
        if (ids[t] != 0 || wts[t] != 1.0) FAIL("token %d: expert %d weight %g", t, ids[t], wts[t]);
        for (int i = 0; i < H; i++)
            if (out[t * H + i] != direct[t * H + i])
                FAIL("token %d: layer %.17g, MLP %.17g", t, out[t * H + i], direct[t * H + i]);
    }
    for (int64_t row = T; row < offsets[1]; row++)
        for (int i = 0; i < H; i++)
            if (y[row * H + i] != 0.0) FAIL("padding row %lld of y is not 0", (long long)row);
}

static void t_nan_route(hx_rng *r, hx_result *res)
{
    (void)r;
    /* A NaN logit ranks as −inf, and every weight of its token is NaN,
     * whether the NaN expert was picked or not. */
    const double nan = NAN;
    const double first[4] = {nan, 3, 2, 0}, two[4] = {1, nan, nan, 0};
    const double all[4] = {nan, nan, nan, nan};
    const int32_t ids12[2] = {1, 2}, ids03[2] = {0, 3}, ids01[2] = {0, 1}, ids32[2] = {3, 2};
    xattn_ref_moe p = layer(XATTN_MOE_ROUTE_TOPK_SOFTMAX, 4, 2);
    if (!route_is_nan(&p, first, ids12, "topk_softmax, NaN first", res)) return;
    p = layer(XATTN_MOE_ROUTE_SOFTMAX_TOPK, 4, 2);
    p.renormalize = 1;
    if (!route_is_nan(&p, two, ids03, "softmax_topk, two NaN", res)) return;
    if (!route_is_nan(&p, all, ids01, "softmax_topk, all NaN", res)) return;
    const double sig[4] = {-1, nan, 2, 5};
    p = layer(XATTN_MOE_ROUTE_TOPK_SIGMOID, 4, 2);
    if (!route_is_nan(&p, sig, ids32, "topk_sigmoid, NaN not picked", res)) return;

    /* A NaN bias entry: b = −inf for expert 6, so its group scores −inf;
     * groups 1 and 2 stay, experts 3, 2, 5 by b, and every token's weights
     * are NaN (the sigmoid_grouped example above otherwise). */
    const double logits[8] = {3, -5, 1, 1.2, 0.8, 0.9, 0.5, 0.7};
    const double bias[8] = {0, 0, 0, 0, 0, 0, nan, 0};
    const int32_t grouped[3] = {3, 2, 5};
    p = layer(XATTN_MOE_ROUTE_SIGMOID_GROUPED, 8, 3);
    p.bias = bias;
    p.n_group = 4;
    p.topk_group = 2;
    p.renormalize = 1;
    p.scale = 2.5;
    if (!route_is_nan(&p, logits, grouped, "sigmoid_grouped, NaN bias", res)) return;

    /* Other tokens are unaffected: token 1 as when routed alone. */
    const double batch[8] = {nan, 3, 2, 0, 1, 3, 2, 0};
    const double alone[2] = {0.7310585786300049, 0.2689414213699951};
    int32_t ids[4];
    double w[4];
    p = layer(XATTN_MOE_ROUTE_TOPK_SOFTMAX, 4, 2);
    if (xattn_ref_moe_route(&p, 2, batch, ids, w)) FAIL("harness: out of host memory");
    if (!isnan(w[0]) || !isnan(w[1])) FAIL("token 0 of the batch: weights not NaN");
    if (ids[2] != 1 || ids[3] != 2 || !near(w[2], alone[0], 1e-14) || !near(w[3], alone[1], 1e-14))
        FAIL("token 1 of the batch: experts %d, %d weights %.17g, %.17g; want 1, 2 and sigma(+-1)",
             ids[2], ids[3], w[2], w[3]);
}

static void t_infinite_route(hx_rng *r, hx_result *res)
{
    (void)r;
    /* +inf ranks first, −inf last; a softmax over +inf is NaN; sigmoid of
     * ±inf is 1 or 0. */
    const double inf = INFINITY;
    const double soft[4] = {1, inf, 0, 2}, sig[4] = {1, inf, 0, -inf};
    const int32_t ids13[2] = {1, 3}, ids10[2] = {1, 0};
    xattn_ref_moe p = layer(XATTN_MOE_ROUTE_SOFTMAX_TOPK, 4, 2);
    if (!route_is_nan(&p, soft, ids13, "softmax_topk, +inf", res)) return;
    p = layer(XATTN_MOE_ROUTE_TOPK_SOFTMAX, 4, 2);
    if (!route_is_nan(&p, soft, ids13, "topk_softmax, +inf", res)) return;
    const double w[2] = {1.0, 0.7310585786300049};
    p = layer(XATTN_MOE_ROUTE_TOPK_SIGMOID, 4, 2);
    if (!route_is(&p, sig, ids10, w, "topk_sigmoid, +inf and -inf", res)) return;
    const double low[4] = {-inf, -inf, 0.5, -inf};
    const int32_t ids20[2] = {2, 0};
    const double w20[2] = {0.6224593312018546, 0.0};
    route_is(&p, low, ids20, w20, "topk_sigmoid, -inf ties to the lower index", res);
}

static void t_weights_on_input(hx_rng *r, hx_result *res)
{
    (void)r;
    /* T 2, k 2, E 3: dispatch scales each row by its weight, combine sums
     * unweighted, so with experts that copy their input the layer is the
     * same as with the weights on the output. */
    enum { T = 2, K = 2, E = 3, H = 2, R = T * K };
    const int32_t ids[T * K] = {0, 2, 2, 1};
    const double w[T * K] = {0.5, 2, 3, -1};
    const double x[T * H] = {1, 2, 3, 4};
    xattn_ref_moe p = layer(XATTN_MOE_ROUTE_TOPK_SIGMOID, E, K);
    p.hidden = H;
    int32_t offsets[E + 1], row_token[R], token_row[T * K];
    double x_perm[R * H], out[T * H];
    xattn_ref_moe_dispatch(&p, T, ids, w, x, R, offsets, x_perm, row_token, token_row);
    const double want_x[R * H] = {0.5, 1, -3, -4, 2, 4, 9, 12};
    for (int i = 0; i < R * H; i++)
        if (x_perm[i] != want_x[i]) FAIL("x_perm[%d] = %g, want %g", i, x_perm[i], want_x[i]);
    xattn_ref_moe_combine(&p, T, token_row, NULL, x_perm, 0, out);
    const double want_out[T * H] = {2.5, 5, 6, 8};
    for (int i = 0; i < T * H; i++)
        if (out[i] != want_out[i]) FAIL("out[%d] = %g, want %g", i, out[i], want_out[i]);

    /* Through a SwiGLU expert (experts_by_hand's expert 0) the two differ:
     * x (1, 2) with weight 2 gives g 2, u 6, h = silu(2)·6, y = (2h, −h);
     * the weight on the output gives 2·(2·silu(1)·3, −silu(1)·3). */
    enum { H2 = 2 };
    const double w1[4] = {1, 0, 1, 1}, w2[2] = {2, -1}, one_x[H2] = {1, 2};
    const int32_t one_id[1] = {0}, whole[2] = {0, 1};
    const double two[1] = {2};
    p = layer(XATTN_MOE_ROUTE_TOPK_SIGMOID, 1, 1);
    p.hidden = H2;
    p.inter = 1;
    int32_t off1[2], rt1[1], tr1[1];
    double xp[H2], y[H2];
    xattn_ref_moe_dispatch(&p, 1, one_id, two, one_x, 1, off1, xp, rt1, tr1);
    if (xattn_ref_moe_experts(&p, whole, xp, w1, w2, y)) FAIL("harness: out of host memory");
    xattn_ref_moe_combine(&p, 1, tr1, NULL, y, 0, out);
    const double on_input[H2] = {21.139129871469176, -10.569564935734588};
    for (int i = 0; i < H2; i++)
        if (!near(out[i], on_input[i], 1e-14))
            FAIL("weight on the input: out[%d] = %.17g, want %.17g", i, out[i], on_input[i]);
    xattn_ref_moe_dispatch(&p, 1, one_id, NULL, one_x, 1, off1, xp, rt1, tr1);
    if (xattn_ref_moe_experts(&p, whole, xp, w1, w2, y)) FAIL("harness: out of host memory");
    xattn_ref_moe_combine(&p, 1, tr1, two, y, 0, out);
    const double on_output[H2] = {8.77270294356006, -4.38635147178003};
    for (int i = 0; i < H2; i++)
        if (!near(out[i], on_output[i], 1e-14))
            FAIL("weight on the output: out[%d] = %.17g, want %.17g", i, out[i], on_output[i]);
}

static void t_swiglu_clamped(hx_rng *r, hx_result *res)
{
    (void)r;
    /* g' = min(g, limit), u' = clamp(u, ±limit), g'·sigmoid(α·g')·(u' + 1);
     * GPT-OSS's α 1.702 and limit 7, then α 1 and limit 0.5. */
    xattn_ref_moe p = layer(XATTN_MOE_ROUTE_TOPK_SOFTMAX, 1, 1);
    p.activation = XATTN_MOE_SWIGLU_CLAMPED;
    p.alpha = 1.702;
    p.limit = 7.0;
    const struct {
        double g, u, want;
    } at[] = {
        {1, 2, 2.537387297798464},      /* no clamp: 1·σ(1.702)·3 */
        {10, -9, -41.99971876981991},   /* both clamped: 7·σ(11.914)·(−6) */
        {-3, 8, -0.14457047766228776},  /* g below is not clamped, u is */
        {7, 7, 7 * 0.9999933040433311 * 8}, /* at the kinks */
    };
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        const double h = xattn_ref_act(&p, at[i].g, at[i].u);
        if (!near(h, at[i].want, 1e-13))
            FAIL("act(%g, %g) = %.17g, want %.17g", at[i].g, at[i].u, h, at[i].want);
    }
    if (!isnan(xattn_ref_act(&p, NAN, 1)) || !isnan(xattn_ref_act(&p, 1, NAN)))
        FAIL("the clamps turned a NaN into a number");
    p.alpha = 1.0;
    p.limit = 0.5;
    const double h = xattn_ref_act(&p, 2, -1);
    if (!near(h, 0.15561483280046365, 1e-14))
        FAIL("alpha 1, limit 0.5: act(2, -1) = %.17g, want 0.5·σ(0.5)·0.5", h);
}

static void t_interleaved_biases(hx_rng *r, hx_result *res)
{
    /* By hand: H 2, I 1, x (1, 2), gate row (1, 0), up row (1, 1), b1
     * (0.5, −1), W2 (2, −1), b2 (0.25, 0.75): g 1.5, u 2, h = silu(1.5)·2,
     * y = (2h + 0.25, −h + 0.75). A padding row (x = 0) gives the expert's
     * output for a zero row: g 0.5, u −1. */
    xattn_ref_moe p = layer(XATTN_MOE_ROUTE_SOFTMAX_TOPK, 1, 1);
    p.hidden = 2;
    p.inter = 1;
    const double x_perm[4] = {1, 2, 0, 0}, w1[4] = {1, 0, 1, 1}, w2[2] = {2, -1};
    const double b1[2] = {0.5, -1}, b2[2] = {0.25, 0.75};
    const int32_t offsets[2] = {0, 2};
    p.b1 = b1;
    p.b2 = b2;
    double y[4];
    if (xattn_ref_moe_experts(&p, offsets, x_perm, w1, w2, y)) FAIL("harness: out of memory");
    const double want[4] = {5.155446857161862, -1.702723428580931, -0.3724593312018546,
                            1.0612296656009272};
    for (int i = 0; i < 4; i++)
        if (!near(y[i], want[i], 1e-14)) FAIL("y[%d] = %.17g, want %.17g", i, y[i], want[i]);
    /* With I 1 the interleaved rows are the same rows: gate 0, up 1. */
    p.w1_interleaved = 1;
    double yi[4];
    if (xattn_ref_moe_experts(&p, offsets, x_perm, w1, w2, yi)) FAIL("harness: out of memory");
    for (int i = 0; i < 4; i++)
        if (yi[i] != y[i]) FAIL("I 1: interleaved y[%d] = %.17g, plain %.17g", i, yi[i], y[i]);

    /* Random layers: interleaving W1's and b1's rows (gate c → row 2c, up
     * c → row 2c + 1) with the flag set gives the plain layer's y exactly. */
    enum { H = 5, I = 3, E = 2, ROWS = 3 };
    double xr[ROWS * H], pw1[E * 2 * I * H], iw1[E * 2 * I * H], w2r[E * H * I];
    double pb1[E * 2 * I], ib1[E * 2 * I], b2r[E * H], yp[ROWS * H], yq[ROWS * H];
    for (int i = 0; i < ROWS * H; i++) xr[i] = hx_rng_normal(r);
    for (int i = 0; i < E * 2 * I * H; i++) pw1[i] = hx_rng_normal(r);
    for (int i = 0; i < E * H * I; i++) w2r[i] = hx_rng_normal(r);
    for (int i = 0; i < E * 2 * I; i++) pb1[i] = hx_rng_normal(r);
    for (int i = 0; i < E * H; i++) b2r[i] = hx_rng_normal(r);
    for (int e = 0; e < E; e++)
        for (int c = 0; c < I; c++)
            for (int half = 0; half < 2; half++) {
                const int plain = e * 2 * I + half * I + c, inter = e * 2 * I + 2 * c + half;
                ib1[inter] = pb1[plain];
                memcpy(iw1 + inter * H, pw1 + plain * H, H * sizeof(double));
            }
    const int32_t segs[E + 1] = {0, 2, 3};
    p = layer(XATTN_MOE_ROUTE_SOFTMAX_TOPK, E, 1);
    p.hidden = H;
    p.inter = I;
    p.activation = XATTN_MOE_SWIGLU_CLAMPED;
    p.alpha = 1.702;
    p.limit = 1.0; /* some g and u clamped */
    p.b1 = pb1;
    p.b2 = b2r;
    if (xattn_ref_moe_experts(&p, segs, xr, pw1, w2r, yp)) FAIL("harness: out of memory");
    p.w1_interleaved = 1;
    p.b1 = ib1;
    if (xattn_ref_moe_experts(&p, segs, xr, iw1, w2r, yq)) FAIL("harness: out of memory");
    for (int i = 0; i < ROWS * H; i++)
        if (yp[i] != yq[i]) FAIL("interleaved y[%d] = %.17g, plain %.17g", i, yq[i], yp[i]);
}

void hx_run_ref_moe_test(const hx_case *c, uint64_t seed, hx_result *res)
{
    static void (*const tests[])(hx_rng *, hx_result *) = {
        t_softmax_topk, t_topk_softmax_sigmoid, t_sigmoid_grouped, t_ties, t_group_limits,
        t_dispatch, t_experts, t_combine, t_roundtrip, t_one_expert, t_nan_route,
        t_infinite_route, t_weights_on_input, t_swiglu_clamped, t_interleaved_biases,
    };
    _Static_assert(sizeof tests / sizeof tests[0] ==
                       sizeof hx_ref_moe_test_names / sizeof hx_ref_moe_test_names[0] - 1,
                   "one name per MoE reference self-check");
    hx_rng r;
    hx_rng_seed(&r, seed);
    double t0 = hx_now();
    tests[c->ref_test](&r, res);
    res->ref_seconds = hx_now() - t0;
}
