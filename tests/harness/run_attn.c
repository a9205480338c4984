/* Attention cases: generate a batch, lay it out in memory as the case says
 * (strided, packed, paged through a shuffled block table), run the backend
 * on NaN-poisoned outputs, compare with the float64 reference. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "ref.h"

enum { META_ALIGN = 64, SPARE_PAGES = 2, SPARE_COLUMNS = 1 };

/* Lengths of one batch. cu_k is the logical prefix sum (also when paged). */
typedef struct batch {
    int32_t b;
    int32_t sq[HX_MAX_BATCH], sk[HX_MAX_BATCH];
    int32_t cu_q[HX_MAX_BATCH + 1], cu_k[HX_MAX_BATCH + 1];
} batch;

/* Shape facts shared by every run of a plan. */
typedef struct geom {
    int uniform_q, uniform_k, paged;
    int32_t page_size, num_pages, max_pages;
} geom;

typedef struct inputs {
    double *q, *k, *v;     /* q [total_q, Hq, Dqk]; k, v by storage row */
    int64_t k_rows;        /* total_k, or num_pages·page_size when paged */
    int32_t *block_table;  /* [B, max_pages], paged */
    double *alibi, *sinks; /* [Hq] or NULL */
} inputs;

typedef struct operands {
    hx_buf q_buf, k_buf, v_buf, o_buf, lse_buf, meta_buf, ws_buf;
    hx_tensor q, k, v, o, lse, cu_q, cu_k, block_table, seqlens_k, alibi, sinks;
    int has_lse, has_ws;
} operands;

static int32_t ceil_div(int32_t a, int32_t b) { return (a + b - 1) / b; }

static void make_batch(const hx_attn_case *a, int reversed, batch *bt)
{
    memset(bt, 0, sizeof *bt);
    bt->b = a->batch;
    for (int32_t i = 0; i < a->batch; i++) {
        int32_t src = reversed ? a->batch - 1 - i : i;
        bt->sq[i] = a->q_layout == XATTN_Q_UNIFORM ? a->sq : a->sq_list[src];
        bt->sk[i] = a->kv_layout == XATTN_KV_UNIFORM ? a->sk : a->sk_list[src];
        bt->cu_q[i + 1] = bt->cu_q[i] + bt->sq[i];
        bt->cu_k[i + 1] = bt->cu_k[i] + bt->sk[i];
    }
}

static int32_t max_of(const int32_t *x, int32_t n)
{
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++)
        if (x[i] > m) m = x[i];
    return m;
}

static void make_geom(const hx_attn_case *a, const batch *bt, geom *g)
{
    memset(g, 0, sizeof *g);
    g->uniform_q = a->q_layout == XATTN_Q_UNIFORM;
    g->uniform_k = a->kv_layout == XATTN_KV_UNIFORM;
    g->paged = a->kv_layout == XATTN_KV_PAGED;
    if (!g->paged) return;
    g->page_size = a->page_size;
    int32_t used = 0;
    for (int32_t b = 0; b < bt->b; b++) used += ceil_div(bt->sk[b], a->page_size);
    g->num_pages = used + SPARE_PAGES;
    int32_t bound = max_of(bt->sk, bt->b) + a->bound_extra;
    g->max_pages = ceil_div(bound > 0 ? bound : 1, a->page_size) + SPARE_COLUMNS;
}

static xattn_attn_desc make_desc(const hx_attn_case *a, const batch *bt, const geom *g)
{
    xattn_attn_desc d;
    memset(&d, 0, sizeof d);
    d.dtype = a->dtype;
    d.batch = a->batch;
    d.num_q_heads = a->hq;
    d.num_kv_heads = a->hkv;
    d.head_dim_qk = a->dqk;
    d.head_dim_v = a->dv;
    d.q_layout = a->q_layout;
    d.kv_layout = a->kv_layout;
    d.seqlen_q = g->uniform_q ? a->sq : max_of(bt->sq, bt->b) + a->bound_extra;
    d.seqlen_k = g->uniform_k ? a->sk : max_of(bt->sk, bt->b) + a->bound_extra;
    if (g->paged) {
        d.page_size = g->page_size;
        d.num_pages = g->num_pages;
        d.max_pages_per_seq = g->max_pages;
    }
    d.flags = a->flags | (a->no_lse ? 0u : XATTN_ATTN_LSE);
    if (a->flags & XATTN_ATTN_WINDOW) {
        d.window_left = a->window_left;
        d.window_right = a->window_right;
    }
    d.scale = a->scale;
    d.softcap = a->softcap;
    return d;
}

/* ---- inputs ------------------------------------------------------------- */

static void free_inputs(inputs *in)
{
    free(in->q);
    free(in->k);
    free(in->v);
    free(in->block_table);
    free(in->alibi);
    free(in->sinks);
    memset(in, 0, sizeof *in);
}

static void fill_normal(hx_rng *rng, xattn_dtype dt, double std, double *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) x[i] = hx_round(dt, std * hx_rng_normal(rng));
}

/* Cache slots no sequence owns: large finite values, so attending to one
 * by mistake shows, while a kernel that loads and masks them stays finite. */
static void fill_garbage(hx_rng *rng, xattn_dtype dt, double *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        double m = 100.0 + 900.0 * hx_rng_uniform(rng);
        x[i] = hx_round(dt, (hx_rng_next(rng) & 1) ? m : -m);
    }
}

/* Storage row of key j of sequence b in the K/V arrays. */
static int64_t key_row(const batch *bt, const geom *g, const inputs *in, int32_t b, int64_t j)
{
    if (!g->paged) return bt->cu_k[b] + j;
    return (int64_t)in->block_table[b * g->max_pages + j / g->page_size] * g->page_size +
           j % g->page_size;
}

/* Keys [*lo, *hi] some query row of a sequence may see (lo > hi: none). */
static void seen_keys(const hx_attn_case *a, int64_t sq, int64_t sk, int64_t *lo, int64_t *hi)
{
    int64_t wl = -1, wr = (a->flags & XATTN_ATTN_CAUSAL) ? 0 : -1;
    if (a->flags & XATTN_ATTN_WINDOW) wl = a->window_left, wr = a->window_right;
    *lo = wl < 0 ? 0 : sk - sq - wl;
    *hi = wr < 0 ? sk - 1 : sk - 1 + wr;
    if (*lo < 0) *lo = 0;
    if (*hi > sk - 1) *hi = sk - 1;
    if (sq == 0) *lo = *hi + 1;
}

/* The HX_NF_* values of the case, at the places harness.h gives, in the
 * first sequence with queries and keys. */
static void plant_nonfinite(const hx_attn_case *a, const batch *bt, const geom *g, inputs *in)
{
    const uint32_t nf = a->nonfinite;
    if (!nf) return;
    const int64_t kr = (int64_t)a->hkv * a->dqk, vr = (int64_t)a->hkv * a->dv;
    if (nf & HX_NF_UNREAD) {
        /* Everything first, then the rows some query may read again. */
        double *keep_k = malloc((size_t)(in->k_rows * kr + 1) * sizeof *keep_k);
        double *keep_v = malloc((size_t)(in->k_rows * vr + 1) * sizeof *keep_v);
        if (keep_k && keep_v) {
            memcpy(keep_k, in->k, (size_t)(in->k_rows * kr) * sizeof *keep_k);
            memcpy(keep_v, in->v, (size_t)(in->k_rows * vr) * sizeof *keep_v);
            for (int64_t i = 0; i < in->k_rows * kr; i++) in->k[i] = NAN;
            for (int64_t i = 0; i < in->k_rows * vr; i++) in->v[i] = NAN;
            for (int32_t b = 0; b < bt->b; b++) {
                int64_t lo, hi;
                seen_keys(a, bt->sq[b], bt->sk[b], &lo, &hi);
                for (int64_t j = lo; j <= hi; j++) {
                    const int64_t r = key_row(bt, g, in, b, j);
                    memcpy(in->k + r * kr, keep_k + r * kr, (size_t)kr * sizeof *keep_k);
                    memcpy(in->v + r * vr, keep_v + r * vr, (size_t)vr * sizeof *keep_v);
                }
            }
        }
        free(keep_k);
        free(keep_v);
    }
    int32_t b = 0;
    while (b + 1 < bt->b && !(bt->sq[b] > 0 && bt->sk[b] > 0)) b++;
    const int64_t sq = bt->sq[b], sk = bt->sk[b];
    if (sq > 0 && (nf & HX_NF_Q_NAN))
        in->q[((bt->cu_q[b] + sq / 2) * a->hq + a->hq - 1) * a->dqk + 1] = NAN;
    if (sk > 0 && (nf & HX_NF_K_NAN)) in->k[key_row(bt, g, in, b, sk / 2) * kr + 2] = NAN;
    if (sk > 0 && (nf & HX_NF_V_NAN)) in->v[key_row(bt, g, in, b, sk - 1) * vr + 5] = NAN;
    if (sk > 0 && (nf & HX_NF_K_INF)) in->k[key_row(bt, g, in, b, sk / 3) * kr] = INFINITY;
    if (nf & HX_NF_SINK_NAN) in->sinks[0] = NAN;
    if (nf & HX_NF_SINK_INF) in->sinks[a->hq - 1] = INFINITY;
    if (nf & HX_NF_SLOPE_NAN) in->alibi[0] = NAN;
    if (nf & HX_NF_SLOPE_INF) in->alibi[a->hq - 1] = INFINITY;
}

static int gen_inputs(const hx_attn_case *a, const batch *bt, const geom *g, hx_rng *rng,
                      inputs *in)
{
    memset(in, 0, sizeof *in);
    const int64_t total_q = bt->cu_q[bt->b];
    in->k_rows = g->paged ? (int64_t)g->num_pages * g->page_size : bt->cu_k[bt->b];
    const int64_t nq = total_q * a->hq * a->dqk;
    const int64_t nk = in->k_rows * a->hkv * a->dqk, nv = in->k_rows * a->hkv * a->dv;
    in->q = malloc((size_t)(nq > 0 ? nq : 1) * sizeof(double));
    in->k = malloc((size_t)(nk > 0 ? nk : 1) * sizeof(double));
    in->v = malloc((size_t)(nv > 0 ? nv : 1) * sizeof(double));
    in->alibi = malloc((size_t)a->hq * sizeof(double));
    in->sinks = malloc((size_t)a->hq * sizeof(double));
    if (g->paged) in->block_table = malloc((size_t)bt->b * (size_t)g->max_pages * sizeof(int32_t));
    if (!in->q || !in->k || !in->v || !in->alibi || !in->sinks ||
        (g->paged && !in->block_table)) {
        free_inputs(in);
        return -1;
    }

    fill_normal(rng, a->dtype, a->qk_std, in->q, nq);
    if (!g->paged) {
        fill_normal(rng, a->dtype, a->qk_std, in->k, nk);
        fill_normal(rng, a->dtype, 1.0, in->v, nv);
    } else {
        fill_garbage(rng, a->dtype, in->k, nk);
        fill_garbage(rng, a->dtype, in->v, nv);
        /* Pages are handed out in a shuffled order; unused columns point at
         * arbitrary (valid) pages. */
        int32_t *perm = malloc((size_t)g->num_pages * sizeof *perm);
        if (!perm) {
            free_inputs(in);
            return -1;
        }
        for (int32_t p = 0; p < g->num_pages; p++) perm[p] = p;
        hx_rng_shuffle(rng, perm, g->num_pages);
        int32_t next = 0;
        for (int32_t b = 0; b < bt->b; b++) {
            int32_t used = ceil_div(bt->sk[b], g->page_size);
            for (int32_t c = 0; c < g->max_pages; c++)
                in->block_table[b * g->max_pages + c] =
                    c < used ? perm[next++] : (int32_t)hx_rng_below(rng, g->num_pages);
        }
        free(perm);
        const int64_t kr = (int64_t)a->hkv * a->dqk, vr = (int64_t)a->hkv * a->dv;
        for (int32_t b = 0; b < bt->b; b++) {
            for (int32_t j = 0; j < bt->sk[b]; j++) {
                int64_t row = (int64_t)in->block_table[b * g->max_pages + j / g->page_size] *
                                  g->page_size + j % g->page_size;
                fill_normal(rng, a->dtype, a->qk_std, in->k + row * kr, kr);
                fill_normal(rng, a->dtype, 1.0, in->v + row * vr, vr);
            }
        }
    }
    for (int32_t h = 0; h < a->hq; h++) {
        in->alibi[h] = (float)exp2(-8.0 * (h + 1) / a->hq);
        in->sinks[h] = (float)(1.0 + 1.5 * hx_rng_normal(rng));
    }
    plant_nonfinite(a, bt, g, in);
    return 0;
}

/* ---- layouts -------------------------------------------------------------- */

static size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

/* Place every operand and allocate the buffers (poisoned host images). */
static int make_operands(xattn_context *ctx, const hx_attn_case *a, const batch *bt,
                         const geom *g, operands *op, hx_result *res)
{
    const xattn_dtype dt = a->dtype;
    const int64_t B = bt->b, total_q = bt->cu_q[bt->b], total_k = bt->cu_k[bt->b];
    size_t qb = 0, kb = 0, vb = 0, ob = 0;
    hx_buf *kbuf = &op->k_buf, *vbuf = &op->v_buf;

    if (a->mem == HX_MEM_PACKED && !g->paged) {
        const int64_t width = a->hq + 2 * a->hkv;
        kbuf = vbuf = &op->q_buf;
        qb = hx_packed_tensor(&op->q, &op->q_buf, dt, g->uniform_q, B, a->sq, total_q, a->hq,
                           a->dqk, width, 0);
        qb = max_sz(qb, hx_packed_tensor(&op->k, kbuf, dt, g->uniform_k, B, a->sk, total_k,
                                      a->hkv, a->dqk, width, a->hq));
        qb = max_sz(qb, hx_packed_tensor(&op->v, vbuf, dt, g->uniform_k, B, a->sk, total_k,
                                      a->hkv, a->dv, width, a->hq + a->hkv));
    } else {
        hx_mem qmem = a->mem == HX_MEM_PACKED ? HX_MEM_CONTIG : a->mem;
        qb = hx_seq_tensor(&op->q, &op->q_buf, qmem, dt, g->uniform_q, B, a->sq, total_q, a->hq,
                        a->dqk);
        if (g->paged) {
            if (a->mem == HX_MEM_PACKED) vbuf = kbuf;
            kb = hx_page_tensor(&op->k, kbuf, a->mem, dt, g->num_pages, g->page_size, a->hkv,
                             a->dqk, 0);
            vb = hx_page_tensor(&op->v, vbuf, a->mem, dt, g->num_pages, g->page_size, a->hkv,
                             a->dv, 1);
            if (vbuf == kbuf) kb = max_sz(kb, vb);
        } else {
            kb = hx_seq_tensor(&op->k, kbuf, a->mem, dt, g->uniform_k, B, a->sk, total_k, a->hkv,
                            a->dqk);
            vb = hx_seq_tensor(&op->v, vbuf, a->mem, dt, g->uniform_k, B, a->sk, total_k, a->hkv,
                            a->dv);
        }
    }
    hx_mem omem = a->mem == HX_MEM_PACKED ? HX_MEM_CONTIG : a->mem;
    ob = hx_seq_tensor(&op->o, &op->o_buf, omem, dt, g->uniform_q, B, a->sq, total_q, a->hq, a->dv);

    size_t lb = 0;
    op->has_lse = !a->no_lse;
    if (op->has_lse) {
        lb = hx_lse_tensor(&op->lse, &op->lse_buf, a->mem, a->hq, total_q);
    }

    /* Indices and per-head parameters share one metadata buffer. */
    size_t mb = 0;
    if (!g->uniform_q) {
        const int64_t shape[1] = {B + 1}, stride[1] = {1};
        mb = align_up(hx_tensor_init(&op->cu_q, &op->meta_buf, mb, XATTN_I32, 1, shape, stride),
                      META_ALIGN);
    }
    if (a->kv_layout == XATTN_KV_RAGGED) {
        const int64_t shape[1] = {B + 1}, stride[1] = {1};
        mb = align_up(hx_tensor_init(&op->cu_k, &op->meta_buf, mb, XATTN_I32, 1, shape, stride),
                      META_ALIGN);
    }
    if (g->paged) {
        const int64_t pad = a->mem == HX_MEM_PADDED ? 3 : 0;
        const int64_t shape[2] = {B, g->max_pages}, stride[2] = {g->max_pages + pad, 1};
        mb = align_up(hx_tensor_init(&op->block_table, &op->meta_buf, mb, XATTN_I32, 2, shape,
                                     stride),
                      META_ALIGN);
        const int64_t shape1[1] = {B}, stride1[1] = {1};
        mb = align_up(hx_tensor_init(&op->seqlens_k, &op->meta_buf, mb, XATTN_I32, 1, shape1,
                                     stride1),
                      META_ALIGN);
    }
    const int64_t hshape[1] = {a->hq}, hstride[1] = {1};
    if (a->flags & XATTN_ATTN_ALIBI)
        mb = align_up(hx_tensor_init(&op->alibi, &op->meta_buf, mb, XATTN_F32, 1, hshape,
                                     hstride),
                      META_ALIGN);
    if (a->flags & XATTN_ATTN_SINKS)
        mb = align_up(hx_tensor_init(&op->sinks, &op->meta_buf, mb, XATTN_F32, 1, hshape,
                                     hstride),
                      META_ALIGN);

    if (hx_buf_alloc(ctx, &op->q_buf, qb, res)) return 1;
    if (kbuf == &op->k_buf && hx_buf_alloc(ctx, &op->k_buf, kb, res)) return 1;
    if (vbuf == &op->v_buf && hx_buf_alloc(ctx, &op->v_buf, vb, res)) return 1;
    if (hx_buf_alloc(ctx, &op->o_buf, ob, res)) return 1;
    if (op->has_lse && hx_buf_alloc(ctx, &op->lse_buf, lb, res)) return 1;
    if (mb && hx_buf_alloc(ctx, &op->meta_buf, mb, res)) return 1;
    return 0;
}

static void free_operands(operands *op)
{
    hx_buf_free(&op->q_buf);
    hx_buf_free(&op->k_buf);
    hx_buf_free(&op->v_buf);
    hx_buf_free(&op->o_buf);
    hx_buf_free(&op->lse_buf);
    hx_buf_free(&op->meta_buf);
    hx_buf_free(&op->ws_buf);
}

/* Element (b, i, h, d) of a Q/O-like tensor; t is the global token. */
static void *seq_at(const hx_tensor *t, int uniform, int64_t b, int64_t i, int64_t tok,
                    int64_t h, int64_t d)
{
    if (uniform) {
        const int64_t idx[4] = {b, i, h, d};
        return hx_tensor_at(t, idx);
    }
    const int64_t idx[3] = {tok, h, d};
    return hx_tensor_at(t, idx);
}

static void scatter_inputs(const hx_attn_case *a, const batch *bt, const geom *g,
                           const inputs *in, operands *op)
{
    const xattn_dtype dt = a->dtype;
    for (int32_t b = 0; b < bt->b; b++)
        for (int64_t i = 0; i < bt->sq[b]; i++) {
            const int64_t t = bt->cu_q[b] + i;
            for (int32_t h = 0; h < a->hq; h++)
                for (int32_t d = 0; d < a->dqk; d++)
                    hx_store(seq_at(&op->q, g->uniform_q, b, i, t, h, d), dt,
                             in->q[(t * a->hq + h) * a->dqk + d]);
        }
    if (!g->paged) {
        for (int32_t b = 0; b < bt->b; b++)
            for (int64_t j = 0; j < bt->sk[b]; j++) {
                const int64_t r = bt->cu_k[b] + j;
                for (int32_t h = 0; h < a->hkv; h++) {
                    for (int32_t d = 0; d < a->dqk; d++)
                        hx_store(seq_at(&op->k, g->uniform_k, b, j, r, h, d), dt,
                                 in->k[(r * a->hkv + h) * a->dqk + d]);
                    for (int32_t d = 0; d < a->dv; d++)
                        hx_store(seq_at(&op->v, g->uniform_k, b, j, r, h, d), dt,
                                 in->v[(r * a->hkv + h) * a->dv + d]);
                }
            }
    } else {
        for (int64_t r = 0; r < in->k_rows; r++)
            for (int32_t h = 0; h < a->hkv; h++) {
                int64_t idx[4] = {r / g->page_size, r % g->page_size, h, 0};
                for (idx[3] = 0; idx[3] < a->dqk; idx[3]++)
                    hx_store(hx_tensor_at(&op->k, idx), dt,
                             in->k[(r * a->hkv + h) * a->dqk + idx[3]]);
                for (idx[3] = 0; idx[3] < a->dv; idx[3]++)
                    hx_store(hx_tensor_at(&op->v, idx), dt,
                             in->v[(r * a->hkv + h) * a->dv + idx[3]]);
            }
    }

    for (int32_t b = 0; b <= bt->b; b++) {
        int64_t idx[1] = {b};
        if (!g->uniform_q) hx_store(hx_tensor_at(&op->cu_q, idx), XATTN_I32, bt->cu_q[b]);
        if (a->kv_layout == XATTN_KV_RAGGED)
            hx_store(hx_tensor_at(&op->cu_k, idx), XATTN_I32, bt->cu_k[b]);
    }
    if (g->paged) {
        for (int32_t b = 0; b < bt->b; b++) {
            int64_t idx1[1] = {b};
            hx_store(hx_tensor_at(&op->seqlens_k, idx1), XATTN_I32, bt->sk[b]);
            for (int32_t c = 0; c < g->max_pages; c++) {
                int64_t idx[2] = {b, c};
                hx_store(hx_tensor_at(&op->block_table, idx), XATTN_I32,
                         in->block_table[b * g->max_pages + c]);
            }
        }
    }
    for (int32_t h = 0; h < a->hq; h++) {
        int64_t idx[1] = {h};
        if (a->flags & XATTN_ATTN_ALIBI)
            hx_store(hx_tensor_at(&op->alibi, idx), XATTN_F32, in->alibi[h]);
        if (a->flags & XATTN_ATTN_SINKS)
            hx_store(hx_tensor_at(&op->sinks, idx), XATTN_F32, in->sinks[h]);
    }
}

/* ---- reference and comparison ---------------------------------------------- */

static int reference(const hx_attn_case *a, const xattn_attn_desc *desc, const batch *bt,
                     const geom *g, const inputs *in, double *o, double *lse)
{
    xattn_ref_attn p;
    memset(&p, 0, sizeof p);
    p.batch = bt->b;
    p.num_q_heads = a->hq;
    p.num_kv_heads = a->hkv;
    p.head_dim_qk = a->dqk;
    p.head_dim_v = a->dv;
    p.cu_seqlens_q = bt->cu_q;
    p.seqlens_k = bt->sk;
    if (g->paged) {
        p.block_table = in->block_table;
        p.max_pages_per_seq = g->max_pages;
        p.page_size = g->page_size;
    } else {
        p.cu_seqlens_k = bt->cu_k;
    }
    p.scale = desc->scale != 0.0f ? (double)desc->scale : (double)(float)(1.0 / sqrt(a->dqk));
    p.softcap = desc->softcap;
    p.window_left = -1;
    p.window_right = (desc->flags & XATTN_ATTN_CAUSAL) ? 0 : -1;
    if (desc->flags & XATTN_ATTN_WINDOW) {
        p.window_left = desc->window_left;
        p.window_right = desc->window_right;
    }
    p.alibi_slopes = (desc->flags & XATTN_ATTN_ALIBI) ? in->alibi : NULL;
    p.sinks = (desc->flags & XATTN_ATTN_SINKS) ? in->sinks : NULL;
    return xattn_ref_attention(&p, in->q, in->k, in->v, o, lse);
}

/* Sequence and row of global query token t. */
static void locate(const batch *bt, int64_t t, int32_t *b, int64_t *i)
{
    int32_t s = 0;
    while (s + 1 < bt->b && bt->cu_q[s + 1] <= t) s++;
    *b = s;
    *i = t - bt->cu_q[s];
}

static void compare(const hx_attn_case *a, const batch *bt, const geom *g, operands *op,
                    const double *o_ref, const double *lse_ref, hx_result *res)
{
    const int64_t total_q = bt->cu_q[bt->b];
    const int64_t no = total_q * a->hq * a->dv, nl = total_q * a->hq;
    double *got = malloc((size_t)(no + nl + 1) * sizeof *got);
    unsigned char *mask = calloc(max_sz(op->o_buf.bytes, op->lse_buf.bytes), 1);
    if (!got || !mask) {
        free(got);
        free(mask);
        hx_result_fail(res, "harness: out of host memory");
        return;
    }
    /* An element still holding the poison was never written, even where
     * the reference expects NaN. */
    int64_t unwritten = -1;
    for (int32_t b = 0; b < bt->b; b++)
        for (int64_t i = 0; i < bt->sq[b]; i++) {
            const int64_t t = bt->cu_q[b] + i;
            for (int32_t h = 0; h < a->hq; h++)
                for (int32_t d = 0; d < a->dv; d++) {
                    const void *p = seq_at(&op->o, g->uniform_q, b, i, t, h, d);
                    const int64_t e = (t * a->hq + h) * a->dv + d;
                    got[e] = hx_load(p, a->dtype);
                    if (unwritten < 0 && hx_is_poison(p, a->dtype)) unwritten = e;
                }
        }
    if (unwritten >= 0) {
        int32_t b;
        int64_t i;
        locate(bt, unwritten / ((int64_t)a->hq * a->dv), &b, &i);
        hx_result_fail(res, "O[b %d, i %lld, h %lld, d %lld] was not written (still poison)", b,
                       (long long)i, (long long)((unwritten / a->dv) % a->hq),
                       (long long)(unwritten % a->dv));
    }
    hx_cmp c;
    hx_compare(got, o_ref, no, a->dv, a->dtype, &c);
    res->nmse = c.nmse;
    const double tol = hx_tol_nmse(a->dtype);
    if (c.first_nonfinite >= 0 || !(c.nmse <= tol)) {
        const int64_t e = c.first_nonfinite >= 0 ? c.first_nonfinite : c.worst;
        const int64_t t = e / ((int64_t)a->hq * a->dv);
        int32_t b;
        int64_t i;
        locate(bt, t, &b, &i);
        hx_result_fail(res,
                       "O %s (NMSE %.3g, limit %.0e); %s at O[b %d, i %lld, h %lld, d %lld]: "
                       "got %.9g, want %.9g",
                       c.first_nonfinite >= 0 ? "has NaN/Inf the reference lacks" : "too far",
                       c.nmse, tol, c.first_nonfinite >= 0 ? "first" : "worst", b, (long long)i,
                       (long long)((e / a->dv) % a->hq), (long long)(e % a->dv), got[e],
                       o_ref[e]);
    } else if (!(c.worst_row_nmse <= HX_ROW_FACTOR * tol)) {
        const int64_t t = c.worst_row / a->hq;
        int32_t b;
        int64_t i;
        locate(bt, t, &b, &i);
        hx_result_fail(res,
                       "O row [b %d, i %lld, h %lld] too far (row NMSE %.3g, limit %.0e, "
                       "tensor NMSE %.3g)",
                       b, (long long)i, (long long)(c.worst_row % a->hq), c.worst_row_nmse,
                       HX_ROW_FACTOR * tol, c.nmse);
    }
    hx_tensor_mark(&op->o, mask);
    int64_t stray = hx_buf_first_stray(&op->o_buf, mask);
    if (stray >= 0)
        hx_result_fail(res, "O: byte %lld of its buffer, outside the tensor, was written",
                       (long long)stray);

    if (op->has_lse) {
        double *lgot = got + no;
        for (int32_t h = 0; h < a->hq; h++)
            for (int64_t t = 0; t < total_q; t++) {
                int64_t idx[2] = {h, t};
                const void *p = hx_tensor_at(&op->lse, idx);
                lgot[h * total_q + t] = hx_load(p, XATTN_F32);
                if (hx_is_poison(p, XATTN_F32))
                    hx_result_fail(res, "LSE[h %d, token %lld] was not written (still poison)",
                                   h, (long long)t);
            }
        hx_lse_cmp l;
        hx_compare_lse(lgot, lse_ref, nl, &l);
        res->lse_err = l.max_abs;
        const double ltol = hx_tol_lse(a->dtype);
        if (l.first_mismatch >= 0 || !(l.max_abs <= ltol)) {
            const int64_t e = l.first_mismatch >= 0 ? l.first_mismatch : l.worst;
            int32_t b;
            int64_t i;
            locate(bt, e % (total_q > 0 ? total_q : 1), &b, &i);
            hx_result_fail(res,
                           "LSE %s (max abs err %.3g, limit %.0e) at LSE[h %lld, b %d, i %lld]: "
                           "got %.9g, want %.9g",
                           l.first_mismatch >= 0 ? "non-finite mismatch" : "too far", l.max_abs,
                           ltol, (long long)(e / (total_q > 0 ? total_q : 1)), b, (long long)i,
                           lgot[e], lse_ref[e]);
        }
        memset(mask, 0, op->lse_buf.bytes);
        hx_tensor_mark(&op->lse, mask);
        stray = hx_buf_first_stray(&op->lse_buf, mask);
        if (stray >= 0)
            hx_result_fail(res, "LSE: byte %lld of its buffer, outside the tensor, was written",
                           (long long)stray);
    }
    free(mask);
    free(got);
}

/* ---- one run ------------------------------------------------------------------ */

static void attn_once(xattn_context *ctx, const xattn_plan *plan, const hx_attn_case *a,
                      const xattn_attn_desc *desc, const batch *bt, const geom *g,
                      uint64_t seed, hx_result *res)
{
    hx_rng rng;
    hx_rng_seed(&rng, seed);
    inputs in;
    if (gen_inputs(a, bt, g, &rng, &in)) {
        hx_result_fail(res, "harness: out of host memory");
        return;
    }
    operands op;
    memset(&op, 0, sizeof op);
    double *o_ref = NULL, *lse_ref = NULL;
    const int64_t total_q = bt->cu_q[bt->b];
    if (make_operands(ctx, a, bt, g, &op, res)) goto done;
    scatter_inputs(a, bt, g, &in, &op);

    /* Workspace: poisoned too, and at a non-zero offset in padded cases
     * (a plan that needs none gets none: GPU plans without KV splits). */
    const size_t ws = xattn_plan_workspace_size(plan);
    const size_t ws_off = a->mem == HX_MEM_PADDED && ws > 0 ? 256 : 0;
    if (ws + ws_off > 0) {
        if (hx_buf_alloc(ctx, &op.ws_buf, ws + ws_off, res)) goto done;
        op.has_ws = 1;
    }

    if (hx_buf_upload(&op.q_buf, res)) goto done;
    if (op.k_buf.dev && hx_buf_upload(&op.k_buf, res)) goto done;
    if (op.v_buf.dev && hx_buf_upload(&op.v_buf, res)) goto done;
    if (hx_buf_upload(&op.o_buf, res)) goto done;
    if (op.has_lse && hx_buf_upload(&op.lse_buf, res)) goto done;
    if (op.meta_buf.dev && hx_buf_upload(&op.meta_buf, res)) goto done;
    if (op.has_ws && hx_buf_upload(&op.ws_buf, res)) goto done;

    xattn_attn_args args;
    memset(&args, 0, sizeof args);
    args.q = hx_tensor_api(&op.q);
    args.k = hx_tensor_api(&op.k);
    args.v = hx_tensor_api(&op.v);
    args.o = hx_tensor_api(&op.o);
    if (op.has_lse) args.lse = hx_tensor_api(&op.lse);
    if (!g->uniform_q) args.cu_seqlens_q = hx_tensor_api(&op.cu_q);
    if (a->kv_layout == XATTN_KV_RAGGED) args.cu_seqlens_k = hx_tensor_api(&op.cu_k);
    if (g->paged) {
        args.block_table = hx_tensor_api(&op.block_table);
        args.seqlens_k = hx_tensor_api(&op.seqlens_k);
    }
    if (a->flags & XATTN_ATTN_ALIBI) args.alibi_slopes = hx_tensor_api(&op.alibi);
    if (a->flags & XATTN_ATTN_SINKS) args.sinks = hx_tensor_api(&op.sinks);
    if (op.has_ws) {
        args.workspace = op.ws_buf.dev;
        args.workspace_offset = ws_off;
    }

    double t0 = hx_now();
    xattn_status st = xattn_attn_run(plan, &args);
    if (hx_complete(ctx, st, "xattn_attn_run", t0, res)) goto done;
    if (hx_buf_download(&op.o_buf, res)) goto done;
    if (op.has_lse && hx_buf_download(&op.lse_buf, res)) goto done;

    t0 = hx_now();
    o_ref = malloc((size_t)(total_q * a->hq * a->dv + 1) * sizeof *o_ref);
    lse_ref = malloc((size_t)(total_q * a->hq + 1) * sizeof *lse_ref);
    if (!o_ref || !lse_ref || reference(a, desc, bt, g, &in, o_ref, lse_ref)) {
        hx_result_fail(res, "harness: out of host memory");
        goto done;
    }
    res->ref_seconds += hx_now() - t0;
    compare(a, bt, g, &op, o_ref, lse_ref, res);

    if (res->status != HX_FAIL) {
        hx_buf_check_unchanged(&op.q_buf, "Q", res);
        if (op.k_buf.dev) hx_buf_check_unchanged(&op.k_buf, "K", res);
        if (op.v_buf.dev) hx_buf_check_unchanged(&op.v_buf, "V", res);
        if (op.meta_buf.dev) hx_buf_check_unchanged(&op.meta_buf, "indices/slopes/sinks", res);
    }
done:
    free(o_ref);
    free(lse_ref);
    free_operands(&op);
    free_inputs(&in);
}

void hx_run_attn(xattn_context *ctx, const hx_case *c, uint64_t seed, int verbose,
                 hx_result *res)
{
    const hx_attn_case *a = &c->attn;
    batch bt[2];
    make_batch(a, 0, &bt[0]);
    make_batch(a, 1, &bt[1]);
    geom g;
    make_geom(a, &bt[0], &g);
    const xattn_attn_desc desc = make_desc(a, &bt[0], &g);

    double t0 = hx_now();
    xattn_plan *plan = NULL;
    xattn_status st = xattn_plan_create(ctx, &desc, &plan);
    res->seconds += hx_now() - t0;
    if (st != XATTN_OK) {
        hx_api_fail(res, "xattn_plan_create", st);
        return;
    }
    if (verbose) xattn_plan_describe(plan, res->message, sizeof res->message, NULL);

    const int runs = a->reuse ? 2 : 1;
    for (int r = 0; r < runs && res->status != HX_FAIL; r++) {
        attn_once(ctx, plan, a, &desc, &bt[r], &g, hx_mix(seed, (uint64_t)r), res);
        if (res->status == HX_FAIL && runs > 1) {
            char tmp[sizeof res->message];
            snprintf(tmp, sizeof tmp, "run %d of the same plan: %.990s", r + 1, res->message);
            memcpy(res->message, tmp, sizeof tmp);
        }
    }
    xattn_plan_destroy(&plan);
}
