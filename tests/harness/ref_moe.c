/* The float64 MoE reference (see ref_moe.h), one token and one row at a
 * time, in the words of docs/moe.md. */
#include "ref_moe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

/* Scores compare with NaN as −inf (api/xattn_moe.h). */
static double nan_low(double v) { return isnan(v) ? -INFINITY : v; }

/* ---- route ------------------------------------------------------------------ */

void xattn_ref_moe_select_scores(const xattn_ref_moe *p, const double *logits, double *score)
{
    const int32_t E = p->experts;
    switch (p->route) {
    case XATTN_MOE_ROUTE_SIGMOID_GROUPED:
        for (int32_t e = 0; e < E; e++)
            score[e] = nan_low(sigmoid(logits[e]) + (p->bias ? p->bias[e] : 0.0));
        break;
    case XATTN_MOE_ROUTE_SOFTMAX_TOPK: /* p = softmax(logits) keeps their order */
    case XATTN_MOE_ROUTE_TOPK_SOFTMAX:
    case XATTN_MOE_ROUTE_TOPK_SIGMOID:
        for (int32_t e = 0; e < E; e++) score[e] = nan_low(logits[e]);
        break;
    }
}

void xattn_ref_moe_group_scores(const xattn_ref_moe *p, const double *score,
                                double *group_score)
{
    const int32_t size = p->experts / p->n_group;
    for (int32_t g = 0; g < p->n_group; g++) {
        const double *s = score + (int64_t)g * size;
        if (size == 1) {
            group_score[g] = s[0];
            continue;
        }
        int32_t two[2];
        xattn_ref_moe_top(s, NULL, size, 2, two);
        group_score[g] = nan_low(s[two[0]] + s[two[1]]);
    }
}

static int already_chosen(const int32_t *best, int32_t m, int32_t i)
{
    for (int32_t j = 0; j < m; j++)
        if (best[j] == i) return 1;
    return 0;
}

void xattn_ref_moe_top(const double *score, const unsigned char *eligible, int32_t count,
                       int32_t n, int32_t *best)
{
    /* Repeated arg-max; the strict > keeps the lower index on equal scores. */
    for (int32_t m = 0; m < n; m++) {
        int32_t pick = -1;
        for (int32_t i = 0; i < count; i++) {
            if ((eligible && !eligible[i]) || already_chosen(best, m, i)) continue;
            if (pick < 0 || score[i] > score[pick]) pick = i;
        }
        best[m] = pick;
    }
}

void xattn_ref_moe_weights(const xattn_ref_moe *p, const double *logits, const int32_t *ids,
                           double *weights)
{
    const int32_t E = p->experts, k = p->top_k;
    switch (p->route) {
    case XATTN_MOE_ROUTE_SOFTMAX_TOPK: {
        double m = logits[0], z = 0.0;
        for (int32_t e = 1; e < E; e++)
            if (logits[e] > m) m = logits[e];
        for (int32_t e = 0; e < E; e++) z += exp(logits[e] - m);
        for (int32_t j = 0; j < k; j++) weights[j] = exp(logits[ids[j]] - m) / z;
        break;
    }
    case XATTN_MOE_ROUTE_TOPK_SOFTMAX: {
        double m = logits[ids[0]], z = 0.0;
        for (int32_t j = 1; j < k; j++)
            if (logits[ids[j]] > m) m = logits[ids[j]];
        for (int32_t j = 0; j < k; j++) z += exp(logits[ids[j]] - m);
        for (int32_t j = 0; j < k; j++) weights[j] = exp(logits[ids[j]] - m) / z;
        break;
    }
    case XATTN_MOE_ROUTE_SIGMOID_GROUPED: /* s, without the bias */
    case XATTN_MOE_ROUTE_TOPK_SIGMOID:
        for (int32_t j = 0; j < k; j++) weights[j] = sigmoid(logits[ids[j]]);
        break;
    }
    if (p->renormalize) {
        double sum = 0.0;
        for (int32_t j = 0; j < k; j++) sum += weights[j];
        for (int32_t j = 0; j < k; j++) weights[j] /= sum;
    }
    for (int32_t j = 0; j < k; j++) weights[j] *= p->scale;
    /* NaN in, NaN out, for the whole token. */
    int nan = 0;
    for (int32_t e = 0; e < E; e++) nan |= isnan(logits[e]) || (p->bias && isnan(p->bias[e]));
    if (nan)
        for (int32_t j = 0; j < k; j++) weights[j] = NAN;
}

int xattn_ref_moe_route(const xattn_ref_moe *p, int64_t tokens, const double *logits,
                        int32_t *ids, double *weights)
{
    const int32_t E = p->experts, k = p->top_k;
    const int grouped = p->route == XATTN_MOE_ROUTE_SIGMOID_GROUPED;
    double *score = malloc((size_t)E * sizeof *score);
    double *group_score = malloc((size_t)(grouped ? p->n_group : 1) * sizeof *group_score);
    int32_t *kept = malloc((size_t)(grouped ? p->topk_group : 1) * sizeof *kept);
    unsigned char *eligible = malloc((size_t)E);
    if (!score || !group_score || !kept || !eligible) {
        free(score);
        free(group_score);
        free(kept);
        free(eligible);
        return -1;
    }
    for (int64_t t = 0; t < tokens; t++) {
        const double *row = logits + t * E;
        xattn_ref_moe_select_scores(p, row, score);
        if (grouped) {
            /* Keep the topk_group best groups, then select among their
             * experts only. */
            const int32_t size = E / p->n_group;
            xattn_ref_moe_group_scores(p, score, group_score);
            xattn_ref_moe_top(group_score, NULL, p->n_group, p->topk_group, kept);
            memset(eligible, 0, (size_t)E);
            for (int32_t g = 0; g < p->topk_group; g++)
                memset(eligible + (int64_t)kept[g] * size, 1, (size_t)size);
        }
        xattn_ref_moe_top(score, grouped ? eligible : NULL, E, k, ids + t * k);
        xattn_ref_moe_weights(p, row, ids + t * k, weights + t * k);
    }
    free(score);
    free(group_score);
    free(kept);
    free(eligible);
    return 0;
}

/* ---- dispatch ------------------------------------------------------------------ */

int64_t xattn_ref_moe_rows(const xattn_ref_moe *p, int64_t tokens)
{
    const int64_t pairs = tokens * p->top_k;
    const int64_t segments = pairs < p->experts ? pairs : p->experts;
    return pairs + segments * (p->align - 1);
}

void xattn_ref_moe_dispatch(const xattn_ref_moe *p, int64_t tokens, const int32_t *ids,
                            const double *weights, const double *x, int64_t rows,
                            int32_t *offsets, double *x_perm, int32_t *row_token,
                            int32_t *token_row)
{
    const int32_t E = p->experts, k = p->top_k, H = p->hidden;
    for (int64_t r = 0; r < rows; r++) row_token[r] = -1;
    for (int64_t i = 0; i < tokens * k; i++) token_row[i] = -1;

    /* Expert by expert: its (token, slot) pairs in ascending token order,
     * then zero rows up to a multiple of the alignment. */
    offsets[0] = 0;
    for (int32_t e = 0; e < E; e++) {
        int64_t r = offsets[e];
        for (int64_t t = 0; t < tokens; t++)
            for (int32_t j = 0; j < k; j++) {
                if (ids[t * k + j] != e) continue;
                if (x)
                    for (int32_t d = 0; d < H; d++)
                        x_perm[r * H + d] = (weights ? weights[t * k + j] : 1.0) * x[t * H + d];
                row_token[r] = (int32_t)t;
                token_row[t * k + j] = (int32_t)r;
                r++;
            }
        while ((r - offsets[e]) % p->align) {
            if (x) memset(x_perm + r * H, 0, (size_t)H * sizeof *x_perm);
            r++;
        }
        offsets[e + 1] = (int32_t)r;
    }
}

/* ---- experts --------------------------------------------------------------------- */

double xattn_ref_silu(double g) { return g * sigmoid(g); }

double xattn_ref_act(const xattn_ref_moe *p, double g, double u)
{
    switch (p->activation) {
    case XATTN_MOE_GEGLU: return xattn_ref_gelu_tanh(g) * u;
    case XATTN_MOE_SWIGLU_CLAMPED:
        /* Comparisons, not fmin/fmax: a NaN stays a NaN. */
        g = g > p->limit ? p->limit : g;
        u = u > p->limit ? p->limit : u < -p->limit ? -p->limit : u;
        return g * sigmoid(p->alpha * g) * (u + 1.0);
    default: return xattn_ref_silu(g) * u;
    }
}

double xattn_ref_gelu_tanh(double g)
{
    const double pi = 3.14159265358979323846;
    const double c = sqrt(2.0 / pi);
    return 0.5 * g * (1.0 + tanh(c * (g + 0.044715 * g * g * g)));
}

int xattn_ref_moe_experts(const xattn_ref_moe *p, const int32_t *offsets, const double *x_perm,
                          const double *w1, const double *w2, double *y)
{
    const int64_t H = p->hidden, I = p->inter;
    double *h = malloc((size_t)I * sizeof *h);
    if (!h) return -1;
    for (int32_t e = 0; e < p->experts; e++) {
        const double *w1e = w1 + e * 2 * I * H, *w2e = w2 + e * H * I;
        const double *b1e = p->b1 ? p->b1 + e * 2 * I : NULL;
        const double *b2e = p->b2 ? p->b2 + e * H : NULL;
        for (int64_t r = offsets[e]; r < offsets[e + 1]; r++) {
            const double *xr = x_perm + r * H;
            /* h = act(gate, up): gate from W1 rows 0..I−1 and up from
             * I..2I−1, or gate from the even rows and up from the odd ones;
             * b1 in W1's row order. */
            for (int64_t c = 0; c < I; c++) {
                const int64_t gr = p->w1_interleaved ? 2 * c : c;
                const int64_t ur = p->w1_interleaved ? 2 * c + 1 : I + c;
                double g = b1e ? b1e[gr] : 0.0, u = b1e ? b1e[ur] : 0.0;
                for (int64_t d = 0; d < H; d++) {
                    g += xr[d] * w1e[gr * H + d];
                    u += xr[d] * w1e[ur * H + d];
                }
                h[c] = xattn_ref_act(p, g, u);
            }
            for (int64_t o = 0; o < H; o++) {
                double acc = b2e ? b2e[o] : 0.0;
                for (int64_t c = 0; c < I; c++) acc += h[c] * w2e[o * I + c];
                y[r * H + o] = acc;
            }
        }
    }
    free(h);
    return 0;
}

/* ---- combine --------------------------------------------------------------------- */

void xattn_ref_moe_combine(const xattn_ref_moe *p, int64_t tokens, const int32_t *token_row,
                           const double *weights, const double *y, int accumulate, double *out)
{
    const int32_t k = p->top_k, H = p->hidden;
    for (int64_t t = 0; t < tokens; t++) {
        double *o = out + t * H;
        if (!accumulate)
            for (int32_t d = 0; d < H; d++) o[d] = 0.0;
        for (int32_t j = 0; j < k; j++) {
            const int32_t r = token_row[t * k + j];
            if (r < 0) continue; /* dropped: contributes nothing */
            const double w = weights ? weights[t * k + j] : 1.0;
            for (int32_t d = 0; d < H; d++) o[d] += w * y[(int64_t)r * H + d];
        }
    }
}
