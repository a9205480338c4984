/* Self-checks of the float64 reference: identities that hold by the
 * contract, computed without trusting the reference twice the same way.
 * They run before any backend, so a broken reference cannot pass a broken
 * backend. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "ref.h"

const char *const hx_ref_test_names[] = {
    "ref/one_key_gives_v",
    "ref/equal_scores_give_mean_of_visible_v",
    "ref/causal_row_is_prefix_attention",
    "ref/split_kv_merge_equals_full",
    "ref/paged_equals_contiguous",
    "ref/gqa_equals_replicated_heads",
    "ref/sink_rescales_output_and_lse",
    "ref/softcap_limit_is_identity",
    "ref/alibi_analytic",
    "ref/no_visible_key_gives_zero_and_neg_inf",
    "ref/merge_identities",
    "ref/kv_append_skips_negative_slots",
    NULL,
};

enum { MAXN = 4096 };

/* Scratch big enough for every check here. */
typedef struct scratch {
    double q[MAXN], k[MAXN], v[MAXN], o[MAXN], o2[MAXN], o3[MAXN];
    double lse[256], lse2[256], lse3[256];
} scratch;

static void rnd(hx_rng *r, double *x, int n)
{
    for (int i = 0; i < n; i++) x[i] = hx_rng_normal(r);
}

static int near(double a, double b, double tol)
{
    if (isinf(a) || isinf(b)) return a == b;
    return fabs(a - b) <= tol * (1.0 + fabs(b));
}

static int all_near(const double *a, const double *b, int n, double tol, int *where)
{
    for (int i = 0; i < n; i++)
        if (!near(a[i], b[i], tol)) {
            *where = i;
            return 0;
        }
    return 1;
}

/* A problem of one sequence with contiguous K/V. */
static xattn_ref_attn one_seq(int32_t *cu_q, int32_t *sk, int32_t *cu_k, int32_t sq,
                              int32_t nk, int32_t hq, int32_t hkv, int32_t dqk, int32_t dv)
{
    xattn_ref_attn p;
    memset(&p, 0, sizeof p);
    cu_q[0] = 0, cu_q[1] = sq;
    sk[0] = nk;
    cu_k[0] = 0, cu_k[1] = nk;
    p.batch = 1;
    p.num_q_heads = hq, p.num_kv_heads = hkv;
    p.head_dim_qk = dqk, p.head_dim_v = dv;
    p.cu_seqlens_q = cu_q, p.seqlens_k = sk, p.cu_seqlens_k = cu_k;
    p.scale = 1.0 / sqrt(dqk);
    p.window_left = p.window_right = -1;
    return p;
}

#define FAIL(...)                                                                          \
    do {                                                                                   \
        hx_result_fail(res, __VA_ARGS__);                                                  \
        return;                                                                            \
    } while (0)

static void t_one_key(scratch *s, hx_rng *r, hx_result *res)
{
    int32_t cu_q[2], sk[1], cu_k[2];
    xattn_ref_attn p = one_seq(cu_q, sk, cu_k, 3, 1, 2, 1, 16, 24);
    p.softcap = 3.0;
    rnd(r, s->q, 3 * 2 * 16);
    rnd(r, s->k, 16);
    rnd(r, s->v, 24);
    xattn_ref_attention(&p, s->q, s->k, s->v, s->o, s->lse);
    for (int t = 0; t < 3; t++)
        for (int h = 0; h < 2; h++) {
            double dot = 0;
            for (int d = 0; d < 16; d++) dot += s->q[(t * 2 + h) * 16 + d] * s->k[d];
            double sc = 3.0 * tanh(dot * p.scale / 3.0);
            if (!near(s->lse[h * 3 + t], sc, 1e-14))
                FAIL("LSE[h %d, t %d] = %.17g, want the one score %.17g", h, t,
                     s->lse[h * 3 + t], sc);
            for (int d = 0; d < 24; d++)
                if (s->o[(t * 2 + h) * 24 + d] != s->v[d])
                    FAIL("O[t %d, h %d, d %d] = %.17g, want V %.17g", t, h, d,
                         s->o[(t * 2 + h) * 24 + d], s->v[d]);
        }
}

static void t_equal_scores(scratch *s, hx_rng *r, hx_result *res)
{
    const int32_t sq = 7, nk = 20, dv = 5, wl = 5, wr = 2;
    int32_t cu_q[2], sk[1], cu_k[2];
    xattn_ref_attn p = one_seq(cu_q, sk, cu_k, sq, nk, 1, 1, 8, dv);
    p.window_left = wl, p.window_right = wr;
    memset(s->q, 0, sizeof s->q);
    rnd(r, s->k, nk * 8);
    rnd(r, s->v, nk * dv);
    xattn_ref_attention(&p, s->q, s->k, s->v, s->o, s->lse);
    for (int i = 0; i < sq; i++) {
        /* docs/attention.md, literally: i + Sk − Sq − wl ≤ j ≤ i + Sk − Sq + wr. */
        int count = 0;
        double mean[8] = {0};
        for (int j = 0; j < nk; j++) {
            if (!(i + nk - sq - wl <= j && j <= i + nk - sq + wr)) continue;
            count++;
            for (int d = 0; d < dv; d++) mean[d] += s->v[j * dv + d];
        }
        if (!near(s->lse[i], log(count), 1e-14))
            FAIL("row %d: LSE %.17g, want log(%d visible keys)", i, s->lse[i], count);
        for (int d = 0; d < dv; d++)
            if (!near(s->o[i * dv + d], mean[d] / count, 1e-13))
                FAIL("row %d d %d: O %.17g, want the mean of visible V %.17g", i, d,
                     s->o[i * dv + d], mean[d] / count);
    }
}

static void t_causal_prefix(scratch *s, hx_rng *r, hx_result *res)
{
    const int32_t sq = 5, nk = 12, hq = 2, d = 8;
    const double slopes[2] = {0.5, 0.125};
    int32_t cu_q[2], sk[1], cu_k[2];
    xattn_ref_attn p = one_seq(cu_q, sk, cu_k, sq, nk, hq, 1, d, d);
    p.window_right = 0;
    p.softcap = 4.0;
    p.alibi_slopes = slopes;
    rnd(r, s->q, sq * hq * d);
    rnd(r, s->k, nk * d);
    rnd(r, s->v, nk * d);
    xattn_ref_attention(&p, s->q, s->k, s->v, s->o, s->lse);
    for (int i = 0; i < sq; i++) {
        /* Row i alone, full attention over keys 0 .. i + Sk − Sq. */
        int32_t cu_q1[2], sk1[1], cu_k1[2];
        xattn_ref_attn p1 = one_seq(cu_q1, sk1, cu_k1, 1, i + nk - sq + 1, hq, 1, d, d);
        p1.softcap = 4.0;
        p1.alibi_slopes = slopes;
        xattn_ref_attention(&p1, s->q + i * hq * d, s->k, s->v, s->o2, s->lse2);
        int w;
        if (!all_near(s->o + i * hq * d, s->o2, hq * d, 1e-14, &w))
            FAIL("causal row %d differs from attention over its %d-key prefix at %d", i,
                 i + nk - sq + 1, w);
        for (int h = 0; h < hq; h++)
            if (!near(s->lse[h * sq + i], s->lse2[h], 1e-14))
                FAIL("causal row %d head %d: LSE differs from its prefix's", i, h);
    }
}

static void t_split_merge(scratch *s, hx_rng *r, hx_result *res)
{
    const int32_t sq = 4, nk = 50, split = 20, hq = 2, d = 8;
    const double sinks[2] = {1.5, -0.5};
    int32_t cu_q[2], sk[1], cu_k[2];
    xattn_ref_attn p = one_seq(cu_q, sk, cu_k, sq, nk, hq, 1, d, d);
    p.sinks = sinks;
    rnd(r, s->q, sq * hq * d);
    rnd(r, s->k, nk * d);
    rnd(r, s->v, nk * d);
    xattn_ref_attention(&p, s->q, s->k, s->v, s->o, s->lse);
    /* First part carries the sink, the second does not. */
    int32_t cu_qa[2], ska[1], cu_ka[2], cu_qb[2], skb[1], cu_kb[2];
    xattn_ref_attn pa = one_seq(cu_qa, ska, cu_ka, sq, split, hq, 1, d, d);
    xattn_ref_attn pb = one_seq(cu_qb, skb, cu_kb, sq, nk - split, hq, 1, d, d);
    pa.sinks = sinks;
    xattn_ref_attention(&pa, s->q, s->k, s->v, s->o2, s->lse2);
    xattn_ref_attention(&pb, s->q, s->k + split * d, s->v + split * d, s->o3, s->lse3);
    double om[MAXN / 8], lm[64];
    xattn_ref_merge_states(sq, hq, d, s->o2, s->lse2, s->o3, s->lse3, om, lm);
    int w;
    if (!all_near(om, s->o, sq * hq * d, 1e-13, &w))
        FAIL("merged O differs from full attention at %d: %.17g vs %.17g", w, om[w], s->o[w]);
    if (!all_near(lm, s->lse, sq * hq, 1e-13, &w))
        FAIL("merged LSE differs from full attention at %d: %.17g vs %.17g", w, lm[w],
             s->lse[w]);
}

static void t_paged(scratch *s, hx_rng *r, hx_result *res)
{
    /* Two sequences, page size 3, pages handed out shuffled. */
    const int32_t hkv = 2, hq = 4, d = 8, ps = 3, maxp = 5, pages = 9;
    int32_t cu_q[3] = {0, 2, 5}, sk[2] = {7, 11}, cu_k[3] = {0, 7, 18};
    int32_t table[2 * 5];
    int32_t perm[9];
    for (int i = 0; i < pages; i++) perm[i] = i;
    hx_rng_shuffle(r, perm, pages);
    for (int i = 0; i < 2 * maxp; i++) table[i] = perm[i % pages];
    xattn_ref_attn p;
    memset(&p, 0, sizeof p);
    p.batch = 2, p.num_q_heads = hq, p.num_kv_heads = hkv, p.head_dim_qk = d,
    p.head_dim_v = d;
    p.cu_seqlens_q = cu_q, p.seqlens_k = sk, p.cu_seqlens_k = cu_k;
    p.scale = 0.3, p.window_left = 4, p.window_right = 0;
    rnd(r, s->q, 5 * hq * d);
    rnd(r, s->k, 18 * hkv * d);
    rnd(r, s->v, 18 * hkv * d);
    xattn_ref_attention(&p, s->q, s->k, s->v, s->o, s->lse);

    /* Same rows through the block table: table[b][j / ps] page, j % ps slot.
     * Sequence 0 uses columns 0..2, sequence 1 columns 5..8 of perm. */
    for (int b = 0; b < 2; b++)
        for (int j = 0; j < sk[b]; j++) {
            int page = table[b * maxp + j / ps];
            int row = page * ps + j % ps;
            memcpy(s->o2 + row * hkv * d, s->k + (cu_k[b] + j) * hkv * d,
                   (size_t)(hkv * d) * sizeof(double));
            memcpy(s->o3 + row * hkv * d, s->v + (cu_k[b] + j) * hkv * d,
                   (size_t)(hkv * d) * sizeof(double));
        }
    p.cu_seqlens_k = NULL;
    p.block_table = table, p.max_pages_per_seq = maxp, p.page_size = ps;
    double o[5 * 4 * 8], lse[4 * 5];
    xattn_ref_attention(&p, s->q, s->o2, s->o3, o, lse);
    if (memcmp(o, s->o, sizeof o) || memcmp(lse, s->lse, sizeof lse))
        FAIL("paged K/V give a different result than the same rows contiguous");
}

static void t_gqa(scratch *s, hx_rng *r, hx_result *res)
{
    const int32_t sq = 3, nk = 9, hq = 6, hkv = 2, d = 8;
    int32_t cu_q[2], sk[1], cu_k[2];
    xattn_ref_attn p = one_seq(cu_q, sk, cu_k, sq, nk, hq, hkv, d, d);
    rnd(r, s->q, sq * hq * d);
    rnd(r, s->k, nk * hkv * d);
    rnd(r, s->v, nk * hkv * d);
    xattn_ref_attention(&p, s->q, s->k, s->v, s->o, s->lse);
    /* Query head h reads KV head h / (Hq / Hkv): replicate and compare. */
    for (int j = 0; j < nk; j++)
        for (int h = 0; h < hq; h++) {
            memcpy(s->o2 + (j * hq + h) * d, s->k + (j * hkv + h / 3) * d, d * sizeof(double));
            memcpy(s->o3 + (j * hq + h) * d, s->v + (j * hkv + h / 3) * d, d * sizeof(double));
        }
    p.num_kv_heads = hq;
    double o[3 * 6 * 8], lse[6 * 3];
    xattn_ref_attention(&p, s->q, s->o2, s->o3, o, lse);
    if (memcmp(o, s->o, sizeof o) || memcmp(lse, s->lse, sizeof lse))
        FAIL("GQA differs from MHA with replicated KV heads");
}

static void t_sink(scratch *s, hx_rng *r, hx_result *res)
{
    const int32_t sq = 4, nk = 6, d = 8;
    const double sink[1] = {0.7};
    int32_t cu_q[2], sk[1], cu_k[2];
    xattn_ref_attn p = one_seq(cu_q, sk, cu_k, sq, nk, 1, 1, d, d);
    p.window_right = 0;
    rnd(r, s->q, sq * d);
    rnd(r, s->k, nk * d);
    rnd(r, s->v, nk * d);
    xattn_ref_attention(&p, s->q, s->k, s->v, s->o, s->lse);
    p.sinks = sink;
    xattn_ref_attention(&p, s->q, s->k, s->v, s->o2, s->lse2);
    for (int i = 0; i < sq; i++) {
        /* p_j = e^s_j / (e^σ + Σ e^s): O shrinks by Σ/(Σ + e^σ). */
        double sum = exp(s->lse[i]), f = sum / (sum + exp(sink[0]));
        if (!near(s->lse2[i], log(sum + exp(sink[0])), 1e-14))
            FAIL("row %d: LSE with sink %.17g, want log(e^LSE + e^sink)", i, s->lse2[i]);
        for (int dd = 0; dd < d; dd++)
            if (!near(s->o2[i * d + dd], f * s->o[i * d + dd], 1e-13))
                FAIL("row %d: O with a sink is not O scaled by the sink's share", i);
    }
}

static void t_softcap(scratch *s, hx_rng *r, hx_result *res)
{
    int32_t cu_q[2], sk[1], cu_k[2];
    xattn_ref_attn p = one_seq(cu_q, sk, cu_k, 5, 13, 2, 2, 16, 16);
    rnd(r, s->q, 5 * 2 * 16);
    rnd(r, s->k, 13 * 2 * 16);
    rnd(r, s->v, 13 * 2 * 16);
    xattn_ref_attention(&p, s->q, s->k, s->v, s->o, s->lse);
    p.softcap = 1e7;
    xattn_ref_attention(&p, s->q, s->k, s->v, s->o2, s->lse2);
    int w;
    if (!all_near(s->o2, s->o, 5 * 2 * 16, 1e-10, &w) ||
        !all_near(s->lse2, s->lse, 5 * 2, 1e-10, &w))
        FAIL("a soft cap of 1e7 changes the result (at %d)", w);
    /* And a small cap bounds every score: LSE ≤ c + log(Sk). */
    p.softcap = 0.5;
    xattn_ref_attention(&p, s->q, s->k, s->v, s->o2, s->lse2);
    for (int i = 0; i < 10; i++)
        if (s->lse2[i] > 0.5 + log(13.0) + 1e-12)
            FAIL("soft cap 0.5: LSE %.17g exceeds c + log(Sk)", s->lse2[i]);
}

static void t_alibi(scratch *s, hx_rng *r, hx_result *res)
{
    (void)r;
    /* q = 0, so every q·k is 0 and only ALiBi shapes the weights:
     * s_ij = −m·|i + Sk − Sq − j|. Sq = 2, Sk = 3, no mask: row 0 is aligned
     * with key 1 (distances 1, 0, 1), row 1 with key 2 (2, 1, 0). A soft
     * cap comes first and leaves a zero score alone. V = identity rows. */
    const double m[1] = {0.75};
    int32_t cu_q[2], sk[1], cu_k[2];
    xattn_ref_attn p = one_seq(cu_q, sk, cu_k, 2, 3, 1, 1, 8, 3);
    p.alibi_slopes = m;
    p.softcap = 0.5;
    memset(s->q, 0, 2 * 8 * sizeof(double));
    memset(s->k, 0, 3 * 8 * sizeof(double));
    double v[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    xattn_ref_attention(&p, s->q, s->k, v, s->o, s->lse);
    const double dist[2][3] = {{1, 0, 1}, {2, 1, 0}};
    for (int i = 0; i < 2; i++) {
        double w[3], z = 0;
        for (int j = 0; j < 3; j++) z += w[j] = exp(-m[0] * dist[i][j]);
        for (int j = 0; j < 3; j++)
            if (!near(s->o[i * 3 + j], w[j] / z, 1e-15))
                FAIL("row %d: ALiBi weight of key %d is %.17g, want %.17g (softmax of "
                     "-m*|i + Sk - Sq - j|, soft cap before ALiBi)",
                     i, j, s->o[i * 3 + j], w[j] / z);
        if (!near(s->lse[i], log(z), 1e-15)) FAIL("row %d: ALiBi LSE %.17g", i, s->lse[i]);
    }
}

static void t_no_key(scratch *s, hx_rng *r, hx_result *res)
{
    /* Sq = 4, Sk = 1, causal: row i sees j ≤ i − 3, so rows 0..2 see nothing. */
    const double sink[2] = {2.0, 2.0};
    int32_t cu_q[2], sk[1], cu_k[2];
    xattn_ref_attn p = one_seq(cu_q, sk, cu_k, 4, 1, 2, 1, 8, 8);
    p.window_right = 0;
    p.sinks = sink;
    rnd(r, s->q, 4 * 2 * 8);
    rnd(r, s->k, 8);
    rnd(r, s->v, 8);
    xattn_ref_attention(&p, s->q, s->k, s->v, s->o, s->lse);
    for (int i = 0; i < 3; i++)
        for (int h = 0; h < 2; h++) {
            if (s->lse[h * 4 + i] != -INFINITY)
                FAIL("row %d sees no key but LSE is %g", i, s->lse[h * 4 + i]);
            for (int d = 0; d < 8; d++)
                if (s->o[(i * 2 + h) * 8 + d] != 0.0) FAIL("row %d sees no key but O ≠ 0", i);
        }
    if (!isfinite(s->lse[3]) || s->o[3 * 2 * 8] == 0.0) FAIL("row 3 sees key 0 but is empty");
}

static void t_merge(scratch *s, hx_rng *r, hx_result *res)
{
    const int32_t n = 4, h = 1, d = 3;
    double la[4] = {0.5, -INFINITY, -INFINITY, 300.0}, lb[4] = {-INFINITY, 1.0, -INFINITY, 300.0};
    rnd(r, s->o2, n * d);
    rnd(r, s->o3, n * d);
    double o[12], l[4], o_sw[12], l_sw[4];
    xattn_ref_merge_states(n, h, d, s->o2, la, s->o3, lb, o, l);
    xattn_ref_merge_states(n, h, d, s->o3, lb, s->o2, la, o_sw, l_sw);
    for (int k = 0; k < d; k++) {
        if (o[k] != s->o2[k] || o[d + k] != s->o3[d + k])
            FAIL("merging with an LSE of -inf must return the other state");
        if (o[2 * d + k] != 0.0) FAIL("merging two empty rows must give O = 0");
        if (!near(o[3 * d + k], 0.5 * (s->o2[3 * d + k] + s->o3[3 * d + k]), 1e-15))
            FAIL("equal large LSE must average O (got %g)", o[3 * d + k]);
    }
    if (l[0] != 0.5 || l[1] != 1.0 || l[2] != -INFINITY || !near(l[3], 300.0 + log(2.0), 1e-15))
        FAIL("merged LSE %g %g %g %g, want 0.5 1 -inf 300+log 2", l[0], l[1], l[2], l[3]);
    int w;
    if (!all_near(o, o_sw, n * d, 1e-15, &w) || !all_near(l, l_sw, n, 1e-15, &w))
        FAIL("merge_states is not symmetric");
}

static void t_kv_append(scratch *s, hx_rng *r, hx_result *res)
{
    /* Cache of 4 pages × 2 slots, 1 head, D 3. */
    const int32_t slots[4] = {5, -1, 0, 7};
    rnd(r, s->k, 8 * 3);
    rnd(r, s->v, 8 * 2);
    memcpy(s->o2, s->k, 8 * 3 * sizeof(double));
    memcpy(s->o3, s->v, 8 * 2 * sizeof(double));
    rnd(r, s->q, 4 * 3);
    rnd(r, s->o, 4 * 2);
    xattn_ref_kv_append(4, 1, 3, 2, s->q, s->o, slots, s->k, s->v);
    for (int slot = 0; slot < 8; slot++) {
        int t = -1;
        for (int i = 0; i < 4; i++)
            if (slots[i] == slot) t = i;
        for (int d = 0; d < 3; d++) {
            double want = t >= 0 ? s->q[t * 3 + d] : s->o2[slot * 3 + d];
            if (s->k[slot * 3 + d] != want) FAIL("K slot %d holds the wrong row", slot);
        }
        for (int d = 0; d < 2; d++) {
            double want = t >= 0 ? s->o[t * 2 + d] : s->o3[slot * 2 + d];
            if (s->v[slot * 2 + d] != want) FAIL("V slot %d holds the wrong row", slot);
        }
    }
}

void hx_run_ref_test(const hx_case *c, uint64_t seed, hx_result *res)
{
    static void (*const tests[])(scratch *, hx_rng *, hx_result *) = {
        t_one_key, t_equal_scores, t_causal_prefix, t_split_merge, t_paged, t_gqa,
        t_sink, t_softcap, t_alibi, t_no_key, t_merge, t_kv_append,
    };
    _Static_assert(sizeof tests / sizeof tests[0] ==
                       sizeof hx_ref_test_names / sizeof hx_ref_test_names[0] - 1,
                   "one name per reference self-check");
    scratch *s = calloc(1, sizeof *s);
    if (!s) {
        hx_result_fail(res, "harness: out of host memory");
        return;
    }
    hx_rng r;
    hx_rng_seed(&r, seed);
    double t0 = hx_now();
    tests[c->ref_test](s, &r, res);
    res->ref_seconds = hx_now() - t0;
    free(s);
}
