/* The float64 reference (see ref.h). One row of attention at a time, the
 * way docs/attention.md states it: scores, soft cap, ALiBi, mask, softmax with the
 * sink in the denominator, weighted sum of V. */
#include "ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int64_t xattn_ref_key_row(const xattn_ref_attn *p, int32_t b, int32_t j)
{
    if (!p->block_table) return (int64_t)p->cu_seqlens_k[b] + j;
    int32_t page = p->block_table[(int64_t)b * p->max_pages_per_seq + j / p->page_size];
    return (int64_t)page * p->page_size + j % p->page_size;
}

int xattn_ref_visible(const xattn_ref_attn *p, int64_t i, int64_t j, int64_t sq,
                      int64_t sk)
{
    int64_t diag = i + sk - sq; /* the key row i is aligned with */
    if (p->window_left >= 0 && j < diag - p->window_left) return 0;
    if (p->window_right >= 0 && j > diag + p->window_right) return 0;
    return 1;
}

static double dot(const double *a, const double *b, int32_t n)
{
    double s = 0.0;
    for (int32_t d = 0; d < n; d++) s += a[d] * b[d];
    return s;
}

/* Score of query row i against key j, before masking. */
static double score(const xattn_ref_attn *p, int32_t h, const double *q,
                    const double *k, int64_t i, int64_t j, int64_t sq, int64_t sk)
{
    double s = p->scale * dot(q, k, p->head_dim_qk);
    if (p->softcap > 0.0) s = p->softcap * tanh(s / p->softcap);
    if (p->alibi_slopes) s -= p->alibi_slopes[h] * fabs((double)(i + sk - sq - j));
    return s;
}

int xattn_ref_attention(const xattn_ref_attn *p, const double *q, const double *k,
                        const double *v, double *o, double *lse)
{
    const int32_t hq = p->num_q_heads, hkv = p->num_kv_heads;
    const int32_t dqk = p->head_dim_qk, dv = p->head_dim_v;
    const int32_t group = hq / hkv;
    const int64_t total_q = p->cu_seqlens_q[p->batch];

    int32_t max_sk = 1;
    for (int32_t b = 0; b < p->batch; b++)
        if (p->seqlens_k[b] > max_sk) max_sk = p->seqlens_k[b];
    double *s = malloc((size_t)max_sk * sizeof *s);
    int64_t *row = malloc((size_t)max_sk * sizeof *row);
    if (!s || !row) {
        free(row);
        free(s);
        return -1;
    }

    for (int32_t b = 0; b < p->batch; b++) {
        const int64_t q0 = p->cu_seqlens_q[b];
        const int64_t sq = p->cu_seqlens_q[b + 1] - q0;
        const int64_t sk = p->seqlens_k[b];
        for (int64_t j = 0; j < sk; j++) row[j] = xattn_ref_key_row(p, b, (int32_t)j);

        for (int64_t i = 0; i < sq; i++) {
            for (int32_t h = 0; h < hq; h++) {
                const int32_t kh = h / group;
                const double *qi = q + ((q0 + i) * hq + h) * dqk;
                double *oi = o + ((q0 + i) * hq + h) * dv;

                /* Scores of the visible keys and their maximum, NaN if any
                 * score is NaN (then everything below is NaN too). */
                double m = -INFINITY;
                for (int64_t j = 0; j < sk; j++) {
                    if (!xattn_ref_visible(p, i, j, sq, sk)) continue;
                    s[j] = score(p, h, qi, k + (row[j] * hkv + kh) * dqk, i, j, sq, sk);
                    if (isnan(s[j]) || s[j] > m) m = s[j];
                }
                for (int32_t d = 0; d < dv; d++) oi[d] = 0.0;
                /* No visible key, or only keys of score −inf (weight 0):
                 * O = 0, LSE = −inf, and no V row is used. */
                if (m == -INFINITY) {
                    if (lse) lse[h * total_q + q0 + i] = -INFINITY;
                    continue;
                }

                /* Softmax denominator; the sink joins it and nothing else. */
                if (p->sinks && p->sinks[h] > m) m = p->sinks[h];
                double denom = p->sinks ? exp(p->sinks[h] - m) : 0.0;
                for (int64_t j = 0; j < sk; j++)
                    if (xattn_ref_visible(p, i, j, sq, sk)) denom += exp(s[j] - m);

                for (int64_t j = 0; j < sk; j++) {
                    if (!xattn_ref_visible(p, i, j, sq, sk)) continue;
                    const double pj = exp(s[j] - m) / denom;
                    const double *vj = v + (row[j] * hkv + kh) * dv;
                    for (int32_t d = 0; d < dv; d++) oi[d] += pj * vj[d];
                }
                if (lse) lse[h * total_q + q0 + i] = m + log(denom);
            }
        }
    }
    free(row);
    free(s);
    return 0;
}

void xattn_ref_kv_append(int64_t n, int32_t num_kv_heads, int32_t head_dim_qk,
                         int32_t head_dim_v, const double *k_new,
                         const double *v_new, const int32_t *slots,
                         double *k_cache, double *v_cache)
{
    const int64_t krow = (int64_t)num_kv_heads * head_dim_qk;
    const int64_t vrow = (int64_t)num_kv_heads * head_dim_v;
    for (int64_t t = 0; t < n; t++) {
        if (slots[t] < 0) continue;
        memcpy(k_cache + slots[t] * krow, k_new + t * krow, (size_t)krow * sizeof *k_cache);
        memcpy(v_cache + slots[t] * vrow, v_new + t * vrow, (size_t)vrow * sizeof *v_cache);
    }
}

void xattn_ref_merge_states(int64_t n, int32_t heads, int32_t dim,
                            const double *o_a, const double *lse_a,
                            const double *o_b, const double *lse_b, double *o,
                            double *lse)
{
    for (int64_t t = 0; t < n; t++) {
        for (int32_t h = 0; h < heads; h++) {
            const double la = lse_a[h * n + t], lb = lse_b[h * n + t];
            const int64_t base = (t * heads + h) * dim;
            if (la == -INFINITY && lb == -INFINITY) {
                for (int32_t d = 0; d < dim; d++) o[base + d] = 0.0;
                lse[h * n + t] = -INFINITY;
                continue;
            }
            /* e^LSE relative to the larger one, so nothing overflows. */
            const double m = la > lb ? la : lb;
            const double wa = exp(la - m), wb = exp(lb - m);
            for (int32_t d = 0; d < dim; d++) {
                const double xa = la == -INFINITY ? 0.0 : wa * o_a[base + d];
                const double xb = lb == -INFINITY ? 0.0 : wb * o_b[base + d];
                o[base + d] = (xa + xb) / (wa + wb);
            }
            lse[h * n + t] = m + log(wa + wb);
        }
    }
}
